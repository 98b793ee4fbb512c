//! Replay throughput: frames parsed and decided per second through the seed-lab policy.
//!
//! `cargo bench -p dfw-benches --bench replay`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pktio::build::{tcp_v4, Host, TcpSeg};
use pktio::packet::tcpflags::{ACK, SYN};
use pktio::{parse_frame, LinkType};

const POLICY: &str = include_str!("../../examples/seed-lab/v2-policy.dfw");

/// `flows` TCP connections from busybox to nginx: SYN, SYN-ACK, then data both ways, `per_flow` frames each.
fn frames(flows: u16, per_flow: u32) -> Vec<Vec<u8>> {
    let client = Host { mac: [0, 0x50, 0x56, 0, 0, 2], ip: Ipv4Addr::new(172, 15, 0, 2) };
    let server = Host { mac: [0, 0x50, 0x56, 0, 0, 4], ip: Ipv4Addr::new(172, 15, 0, 4) };
    let mut out = Vec::new();
    for f in 0..flows {
        let port = 10000 + f;
        for n in 0..per_flow {
            let (src, dst, sp, dp, flags) = match n {
                0 => (&client, &server, port, 80, SYN),
                1 => (&server, &client, 80, port, SYN | ACK),
                n if n % 2 == 0 => (&client, &server, port, 80, ACK),
                _ => (&server, &client, 80, port, ACK),
            };
            let seg = TcpSeg {
                sport: sp,
                dport: dp,
                seq: n,
                ack: n,
                flags,
                window: 65535,
                mss: None,
                payload: &[],
            };
            out.push(tcp_v4(src, dst, n as u16, &seg));
        }
    }
    out
}

fn replay(c: &mut Criterion) {
    let policy = rules::parse_policy(POLICY).unwrap();
    let frames = frames(1000, 20);
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("parse", |b| {
        b.iter(|| {
            for f in &frames {
                black_box(parse_frame(LinkType::Ethernet, f, f.len() as u32).unwrap());
            }
        })
    });
    g.bench_function("parse+decide seed-lab (2 filters per frame)", |b| {
        b.iter_batched(
            || engine::Engine::new(&policy).unwrap(),
            |mut e| {
                for (i, f) in frames.iter().enumerate() {
                    let pkt = parse_frame(LinkType::Ethernet, f, f.len() as u32).unwrap();
                    let f = engine::FrameRef {
                        number: i as u64,
                        link: LinkType::Ethernet,
                        bytes: f,
                        now_ns: i as u64 * 1000,
                    };
                    black_box(e.process(&pkt, f, &mut engine::NullSink));
                }
                e
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
