//! Times loading a policy file and one address-set member change on it (`cargo run --release -p dfw-engine
//! --example commit_cost -- POLICY.dfw`).
use std::time::Instant;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: commit_cost POLICY.dfw");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let t = Instant::now();
    let policy = rules::parse_policy(&text).unwrap_or_else(|d| panic!("{}", d.one_line(&path)));
    let parse = t.elapsed();
    let t = Instant::now();
    let mut engine = engine::Engine::new(&policy).expect("loads");
    let load = t.elapsed();
    let set = policy.addrsets.first().map(|s| s.id.clone()).expect("a shared address set");
    let entry = rules::AddrEntry::Ip(rules::IpNet::host("198.18.0.1".parse().expect("address")));
    let t = Instant::now();
    engine
        .commit(&[engine::Change::AddrSetAdd { set: set.clone(), entries: vec![entry] }], 0)
        .expect("commit");
    let commit = t.elapsed();
    println!(
        "{{\"filters\":{},\"parse_ms\":{:.1},\"load_ms\":{:.1},\"addrset_commit_ms\":{:.2},\"set\":\"{set}\"}}",
        policy.filters.len(),
        parse.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        commit.as_secs_f64() * 1e3
    );
}
