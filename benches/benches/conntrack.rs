//! Connection tracking at scale: the memory of 1,000,000 tracked TCP connections in one filter, and the
//! rate of new connections (classify + insert) under a 10,000-rule policy.
//!
//! `cargo bench -p dfw-benches --bench conntrack`
//!
//! Prints one JSON object per measurement (medians of `RUNS` runs). Each run is a fresh process (this
//! program again, with `DFW_BENCH_CHILD` set), so the resident memory a run adds does not depend on what
//! earlier runs left in the allocator's heap: in one process, the second and third runs met the pages
//! the first one freed, and their growth swung by over 20 MiB with the heap's layout.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use engine::{Engine, FrameRef, NullSink};
use pktio::build::{tcp_v4, Host, TcpSeg};
use pktio::packet::tcpflags::SYN;
use pktio::{parse_frame, LinkType, Packet};

const CONNS: u32 = 1_000_000;
const RUNS: usize = 3;

fn vm_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// SYNs of `n` distinct connections from 10.x clients to 10.1.x servers, as parsed packets.
fn syns(n: u32) -> Vec<Packet> {
    let a = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let b = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 1, 0, 1) };
    let seg =
        TcpSeg { sport: 1, dport: 80, seq: 1, ack: 0, flags: SYN, window: 65535, mss: None, payload: b"" };
    let f = tcp_v4(&a, &b, 1, &seg);
    let template = parse_frame(LinkType::Ethernet, &f, f.len() as u32).expect("template parses");
    (0..n)
        .map(|i| {
            let mut p = template;
            let mut ip = p.ip.expect("ip");
            ip.src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 8)));
            p.ip = Some(ip);
            if let pktio::L4::Tcp(mut t) = p.l4 {
                t.sport = 1024 + (i & 0xff) as u16;
                p.l4 = pktio::L4::Tcp(t);
            }
            p
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(rules: usize, pkts: &[Packet]) -> (f64, usize, u64) {
    let text = dfw_benches::gen_policy_text(rules).replace(
        "  vnic mac 02:00:00:00:00:01;",
        &format!("  vnic mac 02:00:00:00:00:01;\n  maxConnections {};", CONNS + 1),
    );
    let policy = rules::parse_policy(&text).expect("policy");
    let mut e = Engine::new(&policy).expect("engine");
    let rss0 = vm_rss_kb();
    let t = Instant::now();
    for (i, p) in pkts.iter().enumerate() {
        let f = FrameRef { number: i as u64, link: LinkType::Ethernet, bytes: &[], now_ns: 1_000_000_000 };
        e.process(p, f, &mut NullSink);
    }
    let secs = t.elapsed().as_secs_f64();
    let rss = vm_rss_kb().saturating_sub(rss0);
    let slot = 0;
    let state = e.worker_ref().state(slot).expect("filter state");
    assert_eq!(state.conns.len(), pkts.len(), "every SYN became a connection");
    (pkts.len() as f64 / secs, state.conns.memory_bytes(), rss)
}

/// Set in a child: the policy size of its one run.
const CHILD: &str = "DFW_BENCH_CHILD";

/// One run in a fresh process: its rate, table bytes and resident growth (KiB).
fn run_child(rules: usize) -> (f64, usize, u64) {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .arg("--bench")
        .env(CHILD, rules.to_string())
        .output()
        .expect("run the child");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut words = text.split_whitespace().map(|w| w.parse::<f64>().expect("child's figures"));
    let mut next = || words.next().expect("three figures");
    (next(), next() as usize, next() as u64)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    if let Some(rules) = std::env::var(CHILD).ok().and_then(|r| r.parse().ok()) {
        let (rate, mem, rss) = run(rules, &syns(CONNS));
        println!("{rate} {mem} {rss}");
        return;
    }
    // DFW_BENCH_RULES=1,1000 picks the policy sizes (default 1, 1000, 10000).
    let sizes: Vec<usize> = std::env::var("DFW_BENCH_RULES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 1000, 10_000]);
    for rules in sizes {
        let mut rates = Vec::new();
        let mut mem = 0;
        let mut rss = 0;
        for _ in 0..RUNS {
            let (r, m, s) = run_child(rules);
            rates.push(r);
            mem = m;
            rss = rss.max(s);
        }
        println!(
            "{{\"bench\":\"new-connections\",\"rules\":{rules},\"connections\":{CONNS},\"new_per_sec_median\":{:.0},\"table_bytes\":{mem},\"table_mib\":{:.1},\"rss_growth_mib\":{:.1}}}",
            median(rates),
            mem as f64 / (1 << 20) as f64,
            rss as f64 / 1024.0
        );
    }
}
