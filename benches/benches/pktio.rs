//! pktio throughput, each beside its anchor in the same run (see BENCHMARKS.md, section "pktio").
//!
//! - `parse/64B-tcp`: `parse_frame` over the 64-byte TCP frames of `shared/anchors/gen_pcap.py`;
//!   `parse/64B-tcp-into`: the same through `parse_into`, into one reused summary.
//! - `read-parse-filter/2M`: open the 2,000,000-frame gen_pcap capture, read, parse and apply
//!   `tcp dst port 80 and net 10.1.0.0/16`, beside `tcpdump -r FILE -w /dev/null FILTER` on the same file.
//! - `afpacket-rx/veth`: frames/s received on one end of a veth pair (in a namespace the bench makes)
//!   while a generator thread blasts 64-byte frames into the other end: the TPACKET_V3 ring against
//!   pnet's datalink channel. Needs root; skipped with a notice otherwise.
//!
//! `cargo bench -p dfw-benches --bench pktio` (set `DFW_BENCH_DIR` to keep the generated capture
//! elsewhere than /tmp/dfw-bench).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pktio::build::{udp_v4, Host};
use pktio::pnet::PnetChannel;
use pktio::{
    parse_frame, parse_into, AfPacketRx, AfPacketTx, Batch, Capture, CaptureSource, Frame, FrameSink,
    FrameSource, LinkType, Packet, RingConfig, ScratchNetns, TxConfig, L4,
};

const FRAMES: usize = 2_000_000;
const FLOWS: usize = 100_000;
const FILTER: &str = "tcp dst port 80 and net 10.1.0.0/16";

fn gen_capture() -> PathBuf {
    dfw_benches::gen_capture(FRAMES, FLOWS)
}

/// `tcp dst port 80 and net 10.1.0.0/16`, as BPF means it.
fn matches_filter(p: &Packet) -> bool {
    let Some(ip) = p.ip else { return false };
    let in_net = |a: IpAddr| matches!(a, IpAddr::V4(v) if v.octets()[..2] == [10, 1]);
    matches!(p.l4, L4::Tcp(t) if t.dport == 80) && (in_net(ip.src) || in_net(ip.dst))
}

fn parse(c: &mut Criterion) {
    let cap = Capture::open(&gen_capture()).unwrap();
    let frames: Vec<&[u8]> = cap.frames().take(65_536).map(|f| f.unwrap().data).collect();
    assert!(frames.iter().all(|f| f.len() == 64));
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("64B-tcp", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for f in &frames {
                ok += u32::from(parse_frame(LinkType::Ethernet, black_box(f), 64).is_ok());
            }
            ok
        })
    });
    g.bench_function("64B-tcp-into", |b| {
        let mut pkt = Packet::default();
        b.iter(|| {
            let mut ok = 0u32;
            for f in &frames {
                ok += u32::from(parse_into(LinkType::Ethernet, black_box(f), 64, &mut pkt).is_ok());
                black_box(&pkt);
            }
            ok
        })
    });
    g.finish();
}

fn read_parse_filter(c: &mut Criterion) {
    let path = gen_capture();
    let mut g = c.benchmark_group("read-parse-filter");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(FRAMES as u64));
    let expect = {
        let cap = Capture::open(&path).unwrap();
        cap.frames()
            .filter(|f| {
                matches_filter(&parse_frame(f.as_ref().unwrap().link, f.as_ref().unwrap().data, 64).unwrap())
            })
            .count()
    };
    g.bench_function("2M/pktio-frames", |b| {
        b.iter(|| {
            let cap = Capture::open(&path).unwrap();
            let mut hits = 0usize;
            for f in cap.frames() {
                let f = f.unwrap();
                hits +=
                    usize::from(parse_frame(f.link, f.data, f.wire_len).is_ok_and(|p| matches_filter(&p)));
            }
            assert_eq!(hits, expect);
            hits
        })
    });
    g.bench_function("2M/pktio-batches", |b| {
        b.iter(|| {
            let cap = Capture::open(&path).unwrap();
            let mut src = CaptureSource::new(&cap);
            let mut spare: Batch<'static> = Batch::default();
            let mut hits = 0usize;
            loop {
                let mut batch = spare;
                let n = src.recv_batch(&mut batch).unwrap();
                hits += batch.frames().iter().filter(|f| f.parse().is_ok_and(|p| matches_filter(&p))).count();
                spare = batch.recycle();
                if n == 0 {
                    break;
                }
            }
            assert_eq!(hits, expect);
            hits
        })
    });
    g.bench_function("2M/tcpdump-anchor", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let st = Command::new("tcpdump")
                    .arg("-r")
                    .arg(&path)
                    .args(["-w", "/dev/null", FILTER])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            start.elapsed()
        })
    });
    g.finish();
}

/// Keeps one end of a veth pair busy with 64-byte UDP frames over 1024 flows until dropped.
struct Generator {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Generator {
    fn start(mut tx: AfPacketTx) -> Generator {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let a = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 200, 0, 1) };
            let b = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 200, 0, 2) };
            let frames: Vec<Vec<u8>> =
                (0..1024u16).map(|i| udp_v4(&a, &b, i, 10_000 + i, 9, &[0; 18])).collect();
            let views: Vec<Frame<'_>> = frames.iter().map(|f| Frame::new(LinkType::Ethernet, f)).collect();
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) {
                for chunk in views.chunks(64) {
                    sent += tx.send_batch(chunk).unwrap_or(0) as u64;
                }
            }
            sent
        });
        Generator { stop, thread: Some(thread) }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Receives `n` frames from `src`; returns the time it took.
fn receive<S: FrameSource>(src: &mut S, n: u64) -> Duration {
    let mut spare: Batch<'static> = Batch::with_capacity(256);
    let start = Instant::now();
    let mut got = 0u64;
    while got < n {
        let mut batch = spare;
        got += src.recv_batch(&mut batch).unwrap() as u64;
        black_box(batch.frames().first());
        spare = batch.recycle();
    }
    start.elapsed()
}

fn afpacket_rx(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("notice: afpacket-rx needs root (network namespaces); skipped");
        return;
    }
    let ns = ScratchNetns::new("bench").unwrap();
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]).unwrap();
    ns.ip(&["link", "set", "va", "up"]).unwrap();
    ns.ip(&["link", "set", "vb", "up"]).unwrap();
    let per_iter = 10_000u64;
    let mut g = c.benchmark_group("afpacket-rx");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(per_iter));

    let ring_cfg = RingConfig { block_size: 1 << 20, block_count: 64, ..RingConfig::default() };
    let (mut ring, tx) = ns
        .run(|| {
            let ring = AfPacketRx::open("vb", &ring_cfg).unwrap();
            let tx = AfPacketTx::open("va", &TxConfig { qdisc_bypass: true, vnet_hdr: false }).unwrap();
            (ring, tx)
        })
        .unwrap();
    {
        let _gen = Generator::start(tx);
        g.bench_function(BenchmarkId::new("veth-64B", "tpacket-v3-ring"), |b| {
            b.iter_custom(|iters| receive(&mut ring, iters * per_iter))
        });
        let stats = ring.stats().unwrap();
        eprintln!("ring: {} offered, {} dropped (ring full)", stats.packets, stats.drops);
    }
    drop(ring);

    let (mut pnet, tx) = ns
        .run(|| {
            let pnet = PnetChannel::open("vb", Some(Duration::from_millis(100))).unwrap();
            let tx = AfPacketTx::open("va", &TxConfig { qdisc_bypass: true, vnet_hdr: false }).unwrap();
            (pnet, tx)
        })
        .unwrap();
    {
        let _gen = Generator::start(tx);
        g.bench_function(BenchmarkId::new("veth-64B", "pnet-datalink"), |b| {
            b.iter_custom(|iters| receive(&mut pnet, iters * per_iter))
        });
    }
    g.finish();
}

criterion_group!(benches, parse, read_parse_filter, afpacket_rx);
criterion_main!(benches);
