//! Engine throughput: replaying gen_pcap's 2,000,000-frame capture (100,000 flows) through one filter
//! with a 1,000-rule policy on 1 and 2 workers, beside `tcpdump -r FILE -w /dev/null FILTER` in the same
//! run; and the memory of 1,000,000 tracked connections.
//!
//! `cargo bench -p dfw-benches --bench engine`

use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::replay::replay;
use engine::Engine;
use pktio::Capture;

const FRAMES: usize = 2_000_000;
const FLOWS: usize = 100_000;

fn replay_2m(c: &mut Criterion) {
    let path = dfw_benches::gen_capture(FRAMES, FLOWS);
    let policy = rules::parse_policy(&dfw_benches::gen_policy_text(1000)).expect("bench policy parses");
    let cap = Capture::open(&path).expect("open capture");
    let mut g = c.benchmark_group("replay-2M-1000rules");
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for workers in [1, 2] {
        g.bench_function(format!("{workers}-worker"), |b| {
            // Only the replay is timed, as `dfw bench replay` times it: the engine is built before
            // and dropped after (with its tables, some 20 MB to free).
            b.iter_batched(
                || Engine::new(&policy).expect("engine"),
                |mut e| {
                    let s = replay(&cap, &mut e, &[], workers, false, |_| {}).expect("replay");
                    assert_eq!(s.passed as usize, FRAMES);
                    black_box(s);
                    e
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.bench_function("tcpdump-read-filter", |b| {
        b.iter(|| {
            let st = Command::new("tcpdump")
                .args(["-r"])
                .arg(&path)
                .args(["-w", "/dev/null", "tcp dst port 80 and net 10.1.0.0/16"])
                .stderr(std::process::Stdio::null())
                .status()
                .expect("tcpdump runs (apt-get install tcpdump)");
            assert!(st.success());
        })
    });
    g.finish();
}

criterion_group!(benches, replay_2m);
criterion_main!(benches);
