//! The first-match classifier: lookups per second on the shared ClassBench sets, on a generated
//! 100,000-rule ClassBench-style set and on an NSX-shaped policy (17,000 rules, 5,000 address sets,
//! 250,000 members); build times; address-set member add/remove latency.
//!
//! `cargo bench -p dfw-benches --bench classify` (filter e.g. `-- classify/lookup/cutsplit_fw_10k`).
//! The side-by-side comparison with DPDK rte_acl is `dfw bench classify` (see BENCHMARKS.md).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rules::classbench::{parse_rules, parse_trace};
use rules::classify::synth::{self, NsxParams};
use rules::{Classifier, IpNet, L3Key, RuleSet};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/classbench").join(name)
}

fn rules_of(name: &str) -> RuleSet {
    let text = std::fs::read_to_string(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    parse_rules(&text, "mainrs").unwrap()
}

/// The shipped trace, or 10 headers per rule drawn like `gen_trace.py` for the sets without one.
fn keys_of(name: &str, set: &RuleSet) -> Vec<L3Key> {
    match std::fs::read_to_string(data(&format!("{name}_trace"))) {
        Ok(text) => parse_trace(&text).unwrap().iter().map(|h| h.key()).collect(),
        Err(_) => synth::classbench_trace(set, 10, 1).iter().map(|h| h.key()).collect(),
    }
}

fn lookups(c: &mut Criterion, group: &str, classifier: &Classifier, keys: &[L3Key]) {
    let mut g = c.benchmark_group(format!("classify/lookup/{group}"));
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("single", |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for k in keys {
                sum = sum.wrapping_add(classifier.first_match(black_box(k)).unwrap_or(1));
            }
            sum
        })
    });
    let mut out = vec![None; 64];
    g.bench_function("batch64", |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for chunk in keys.chunks(64) {
                classifier.first_match_batch(black_box(chunk), &mut out);
                sum = sum.wrapping_add(out[0].unwrap_or(1));
            }
            sum
        })
    });
    g.finish();
}

fn classbench(c: &mut Criterion) {
    for name in [
        "cutsplit_acl_1k",
        "cutsplit_fw_1k",
        "cutsplit_ipc_1k",
        "cutsplit_acl_10k",
        "cutsplit_fw_10k",
        "cutsplit_ipc_10k",
    ] {
        let set = rules_of(name);
        let keys = keys_of(name, &set);
        let classifier = Classifier::build(&set, &[]).unwrap();
        lookups(c, name, &classifier, &keys);
    }
    let mut g = c.benchmark_group("classify/build");
    g.sample_size(10);
    let fw = rules_of("cutsplit_fw_10k");
    g.bench_function("cutsplit_fw_10k", |b| b.iter(|| Classifier::build(black_box(&fw), &[]).unwrap()));
    g.finish();
}

fn large(c: &mut Criterion) {
    // 100,000 rules grown from acl_10k, one header inside each (as `gen_trace.py RULES 1 1`).
    let set = synth::classbench_like(&rules_of("cutsplit_acl_10k"), 100_000, 1);
    let keys: Vec<L3Key> = synth::classbench_trace(&set, 1, 1).iter().map(|h| h.key()).collect();
    let mut g = c.benchmark_group("classify/build");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("classbench_100k", |b| b.iter(|| Classifier::build(black_box(&set), &[]).unwrap()));
    g.finish();
    let classifier = Classifier::build(&set, &[]).unwrap();
    lookups(c, "classbench_100k", &classifier, &keys);
}

fn nsx(c: &mut Criterion) {
    let policy = synth::nsx(&NsxParams::LARGE);
    let refs = policy.set_refs();
    let mut g = c.benchmark_group("classify/build");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("nsx_17k_rules_250k_members", |b| {
        b.iter(|| Classifier::build(black_box(&policy.ruleset), &refs).unwrap())
    });
    g.finish();
    let classifier = Classifier::build(&policy.ruleset, &refs).unwrap();
    let keys = synth::nsx_keys(&policy, 200_000, 2);
    lookups(c, "nsx_17k_rules_250k_members", &classifier, &keys);

    let mut g = c.benchmark_group("classify/update/nsx_17k_rules_250k_members");
    let mut rng = synth::Rng::new(3);
    let mut i = 0u32;
    g.bench_function("add_member", |b| {
        b.iter_batched(
            || {
                i = i.wrapping_add(1);
                let set = policy.sets[rng.below(policy.sets.len())].id.clone();
                let net = IpNet::host(Ipv4Addr::from(0xac10_0000 | (i & 0xffff)).into());
                classifier.remove_member(&set, net).unwrap();
                (set, net)
            },
            |(set, net)| {
                classifier.add_member(&set, net).unwrap();
                (set, net)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("remove_member", |b| {
        b.iter_batched(
            || {
                i = i.wrapping_add(1);
                let set = policy.sets[rng.below(policy.sets.len())].id.clone();
                let net = IpNet::host(Ipv4Addr::from(0xac10_0000 | (i & 0xffff)).into());
                classifier.add_member(&set, net).unwrap();
                (set, net)
            },
            |(set, net)| classifier.remove_member(&set, net).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, classbench, large, nsx);
criterion_main!(benches);
