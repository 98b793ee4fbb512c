//! `netpol` at cluster scale: 5,000 pods and 500 policies (50 namespaces × 100 pods × 10 policies,
//! `netpol::synth`) read, compiled and printed; one pod relabel and one namespace relabel turned into
//! their address-set diffs.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-netpol cargo bench -p dfw-netpol --bench netpol
//! ```

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use netpol::{Cluster, Compiled, Labels};

fn load(yaml: &str) -> Cluster {
    let mut c = Cluster::new();
    c.load_str("synth.yaml", yaml).expect("synthetic cluster loads");
    c
}

fn bench(c: &mut Criterion) {
    let yaml = netpol::synth::cluster_yaml(50, 100, 10);
    let cluster = load(&yaml);
    assert_eq!((cluster.pods.len(), cluster.policies.len()), (5000, 500));

    let mut g = c.benchmark_group("netpol");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("read+compile+print 5000 pods 500 policies", |b| {
        b.iter(|| {
            let cluster = load(&yaml);
            let text = Compiled::new(&cluster, "bench").unwrap().policy().to_string();
            std::hint::black_box(text.len())
        })
    });
    g.bench_function("compile 5000 pods 500 policies", |b| {
        b.iter(|| std::hint::black_box(Compiled::new(&cluster, "bench").unwrap().set_count()))
    });
    g.finish();

    let mut compiled = Compiled::new(&cluster, "bench").unwrap();
    let mut g = c.benchmark_group("netpol relabel");
    let mut flip = false;
    g.bench_function("pod relabel diff", |b| {
        b.iter(|| {
            flip = !flip;
            let app = if flip { "app1" } else { "app2" };
            let labels =
                Labels::from([("app".to_string(), app.to_string()), ("tier".to_string(), "web".to_string())]);
            let d = compiled.relabel_pod("ns3", "pod0", labels).unwrap();
            assert!(d.is_members_only() && !d.is_empty());
            std::hint::black_box(d.member_changes())
        })
    });
    g.bench_function("namespace relabel diff", |b| {
        b.iter(|| {
            flip = !flip;
            let env = if flip { "prod" } else { "dev" };
            let labels = Labels::from([
                ("team".to_string(), "team1".to_string()),
                ("env".to_string(), env.to_string()),
            ]);
            let d = compiled.relabel_namespace("ns4", labels).unwrap();
            assert!(d.is_members_only() && !d.is_empty());
            std::hint::black_box(d.member_changes())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
