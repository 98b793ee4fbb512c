//! Policy swaps under load, and replay results that do not depend on the number of workers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::filter::{FrameRef, Sink};
use engine::log::LogRecord;
use engine::replay::{replay, replay_chunked, Event};
use engine::{Decision, Engine, FilterConfig};
use pktio::build::{udp_v4, Host};
use pktio::{parse_frame, Capture, LinkType};
use rules::parse_policy;

fn policy(x_rule: u32, y_rule: u32) -> rules::Policy {
    parse_policy(&format!(
        "filter x {{ vnic mac 02:00:00:00:00:01; ruleset mainrs {{ rule {x_rule} at 1 out protocol any stateless from any to any accept; }} }}\n\
         filter y {{ vnic mac 02:00:00:00:00:02; ruleset mainrs {{ rule {y_rule} at 1 in protocol any stateless from any to any accept; }} }}"
    ))
    .unwrap()
}

#[derive(Default)]
struct Rules(Vec<u32>);
impl Sink for Rules {
    fn decision(&mut self, d: &Decision, _f: &FilterConfig) {
        self.0.push(d.rule.map_or(0, |r| r.id));
    }
}

#[test]
fn every_frame_is_decided_wholly_by_one_policy_version_while_another_thread_swaps() {
    let (v1, v2) = (policy(11, 21), policy(12, 22));
    let mut engine = Engine::new(&v1).unwrap();
    let handle = engine.snapshot_handle();
    let mut worker = engine.new_worker();
    let stop = Arc::new(AtomicBool::new(false));
    let swapped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let swapper = {
        let (stop, swapped) = (Arc::clone(&stop), Arc::clone(&swapped));
        std::thread::spawn(move || {
            // Swaps until the worker is done (bounded in time), so it cannot run out of swaps
            // before a worker that started late has seen both versions.
            let mut swaps = 0u64;
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                let p = if swaps.is_multiple_of(2) { &v2 } else { &v1 };
                engine.load(p, 0).unwrap();
                swaps += 1;
                swapped.store(swaps, Ordering::Relaxed);
            }
            swaps
        })
    };
    let a = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let b = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 0, 0, 2) };
    let frame = udp_v4(&a, &b, 1, 1000, 2000, b"x");
    let pkt = parse_frame(LinkType::Ethernet, &frame, frame.len() as u32).unwrap();
    let (mut old, mut new) = (0, 0);
    // At least 20,000 frames, and on until both versions were seen and the swapper has swapped more
    // than ten times while frames were decided (it may start late on a busy machine, and a worker
    // that decides 20,000 frames in a few milliseconds could otherwise finish first), within a time
    // bound.
    let mut n = 0u64;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let more = |old: u64, new: u64| old == 0 || new == 0 || swapped.load(Ordering::Relaxed) <= 10;
    while n < 20_000 || (more(old, new) && std::time::Instant::now() < until) {
        n += 1;
        // The worker loads the snapshot once per frame, as the live dataplane does.
        let snap = handle.load_full();
        let mut rules = Rules::default();
        worker.process(
            &snap,
            &pkt,
            FrameRef { number: n, link: LinkType::Ethernet, bytes: &frame, now_ns: n },
            &mut rules,
        );
        match rules.0.as_slice() {
            [11, 21] => old += 1,
            [12, 22] => new += 1,
            other => panic!("frame {n} decided by a mix of versions: rules {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 10, "the swapper ran ({swaps} swaps)");
    assert!(old > 0 && new > 0, "both versions were seen: {old} / {new}");
}

fn pcaps() -> Vec<PathBuf> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata"));
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A policy with one filter per IP address the capture uses: out of any vNIC anything goes, in to a
/// vNIC only TCP to ports below 1024, UDP and ICMP echo are accepted as new connections, so replies
/// ride the connection table and the rest is dropped.
fn policy_for(path: &Path) -> rules::Policy {
    let cap = Capture::open(path).unwrap();
    let mut ips = std::collections::BTreeSet::new();
    for f in cap.frames() {
        let Ok(f) = f else { break };
        if let Ok(p) = parse_frame(f.link, f.data, f.wire_len) {
            if let Some(ip) = p.ip {
                ips.insert(ip.src);
                ips.insert(ip.dst);
            }
        }
    }
    let mut text = String::from(
        "ruleset mainrs {\n rule 1 at 1 out protocol any from any to any accept;\n rule 2 at 2 in protocol tcp from any to any port 0-1023 accept;\n rule 3 at 3 in protocol udp from any to any accept;\n rule 4 at 4 in protocol icmp icmptype 8 from any to any accept;\n rule 5 at 5 in protocol ipv6-icmp icmptype 128 from any to any accept;\n}\n",
    );
    for (i, ip) in ips.iter().enumerate() {
        // Every other filter keeps per-connection counts, which the tables' dumps then compare.
        let counts = if i % 2 == 0 { " flowCounts on;" } else { "" };
        text.push_str(&format!("filter vnic-{i} {{ vnic ip {ip};{counts} }}\n"));
    }
    parse_policy(&text).unwrap()
}

/// One decision as text: frame, filter, direction, verdict, state, reason and rule.
fn decision_line(d: &Decision, f: &FilterConfig) -> String {
    let (dir, verdict, state, reason) =
        (d.dir.as_str(), d.verdict.as_str(), d.state.as_str(), d.reason.as_str());
    format!("{} {} {dir} {verdict} {state} {reason} {:?}", d.frame, f.name, d.rule)
}

/// Records every event as text, in the order replay reports them.
fn transcript(path: &Path, workers: usize) -> (Vec<String>, engine::replay::ReplaySummary, Engine) {
    transcript_with(path, workers, true)
}

/// [`transcript`], with the engine's fast paths for tracked frames on or off.
fn transcript_with(
    path: &Path,
    workers: usize,
    fast: bool,
) -> (Vec<String>, engine::replay::ReplaySummary, Engine) {
    let mut engine = Engine::new(&policy_for(path)).unwrap();
    engine.set_fast_paths(fast);
    let cap = Capture::open(path).unwrap();
    let mut lines = Vec::new();
    let summary = replay(&cap, &mut engine, &[], workers, true, |ev| match ev {
        Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
        Event::Malformed { frame, reason } => lines.push(format!("{frame} malformed {}", reason.as_str())),
        _ => {}
    })
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (lines, summary, engine)
}

#[test]
fn every_shared_capture_replays_and_workers_do_not_change_results() {
    let files = pcaps();
    assert!(files.len() > 30, "found {} captures", files.len());
    let mut decided = 0;
    for f in &files {
        let (one, s1, _) = transcript(f, 1);
        let (three, s3, _) = transcript(f, 3);
        decided += one.len();
        assert_eq!(one, three, "{}", f.display());
        assert_eq!(
            (s1.frames, s1.passed, s1.dropped, s1.unfiltered),
            (s3.frames, s3.passed, s3.dropped, s3.unfiltered)
        );
        assert_eq!(s1.counters, s3.counters, "{}", f.display());
        assert_eq!(
            s1.frames,
            s1.passed + s1.dropped + s1.unfiltered + s1.malformed.values().sum::<u64>(),
            "{}",
            f.display()
        );
    }
    assert!(decided > 1000, "filters decided {decided} times");
}

/// The TCP states of every connection left in the engine's tables, as (initiator, responder) names.
fn tcp_states(engine: &Engine) -> Vec<(String, String)> {
    let snap = engine.snapshot();
    let mut out = Vec::new();
    for f in &snap.filters {
        if let Some(state) = engine.worker_ref().state(f.slot) {
            for (entry, _) in state.conns.iter() {
                if let engine::conntrack::ProtoState::Tcp(t) = entry.value.proto() {
                    let [a, b] = t.peers();
                    out.push((a.as_str().to_string(), b.as_str().to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn tcp_sessions_end_in_sensible_states() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/pcaps"));
    // A lone SYN: the initiator is in SYN_SENT on both filters it crossed.
    let (_, _, e) = transcript(&dir.join("suricata-verify/bug-6733-syn-packet-flow-output/input.pcap"), 1);
    let states = tcp_states(&e);
    assert!(!states.is_empty() && states.iter().all(|(a, _)| a == "SYN_SENT"), "{states:?}");
    // A full session with FIN/FIN: both ends closing or closed.
    let (_, _, e) = transcript(&dir.join("zeek/tcp_handshake-reorder.pcap"), 1);
    let states = tcp_states(&e);
    assert!(!states.is_empty(), "connection tracked");
    for (a, b) in &states {
        for s in [a, b] {
            assert!(
                ["FIN_WAIT_2", "TIME_WAIT", "CLOSING", "LAST_ACK", "CLOSE_WAIT", "FIN_WAIT_1"]
                    .contains(&s.as_str()),
                "{states:?}"
            );
        }
    }
    // DNS over TCP with handshake and teardown: no connection left established.
    let (_, _, e) = transcript(&dir.join("tcpdump/dns_tcp.pcap"), 1);
    assert!(
        tcp_states(&e).iter().all(|(a, b)| a != "ESTABLISHED" || b != "ESTABLISHED"),
        "{:?}",
        tcp_states(&e)
    );
}

/// Every connection entry as text: key, TCP state, counts and expiry, sorted.
fn table_dump(engine: &Engine) -> Vec<String> {
    let snap = engine.snapshot();
    let mut out = Vec::new();
    for f in &snap.filters {
        if let Some(state) = engine.worker_ref().state(f.slot) {
            for (entry, expires) in state.conns.iter() {
                let c = &entry.value;
                out.push(format!(
                    "{} {:?} {:?} {} {} {:?} {expires}",
                    f.name,
                    entry.key,
                    c.proto(),
                    c.rule,
                    c.generation(),
                    state.flow_counts(entry.slot, c),
                ));
            }
        }
    }
    out.sort();
    out
}

/// The in-place fast paths for frames of tracked connections decide exactly as the full path does:
/// same per-frame decisions, counters and connection tables, on every shared capture.
#[test]
fn fast_paths_decide_as_the_full_path_does() {
    let mut established = 0;
    for f in &pcaps() {
        let (fast, s_fast, e_fast) = transcript_with(f, 1, true);
        let (full, s_full, e_full) = transcript_with(f, 1, false);
        assert_eq!(fast, full, "{}", f.display());
        assert_eq!(s_fast.counters, s_full.counters, "{}", f.display());
        assert_eq!(table_dump(&e_fast), table_dump(&e_full), "{}", f.display());
        // With no L2 rules and no logging, every established frame that is not a fragment took the
        // fast path when it was on.
        established += fast.iter().filter(|l| l.contains(" pass established state ")).count();
    }
    assert!(established > 500, "only {established} frames rode the connection table");
}

/// Workers tell their frames from the IP header alone where that gives what the parsed frame gives.
#[test]
fn peeked_route_hash_agrees_with_the_parsed_frame() {
    let (mut peeked, mut total) = (0, 0);
    for path in &pcaps() {
        let cap = Capture::open(path).unwrap();
        for f in cap.frames() {
            let Ok(f) = f else { break };
            total += 1;
            let Some(h) = engine::flow::peek_route_hash(f.link, f.data) else { continue };
            if let Ok(p) = parse_frame(f.link, f.data, f.wire_len) {
                peeked += 1;
                assert_eq!(h, engine::flow::route_hash(&p), "{}", path.display());
            }
        }
    }
    assert!(peeked * 2 > total, "peeked {peeked} of {total} frames");
}

/// A frame's bytes and length on the wire.
type Captured = (Vec<u8>, u32);

/// The lean lane routes a plain TCP frame from its fields exactly as the general path routes its
/// parsed [`pktio::Packet`], under the captures' own policies and under policies whose vNICs are the
/// frame's sender, its receiver, or both (then it declines: two filters).
#[test]
fn lean_routes_agree_with_the_general_path() {
    let (mut lean, mut plain) = (0, 0);
    // The shared captures, and the busy synthetic traffic (whose segments carry no options).
    let busy: Vec<Captured> = busy_traffic().into_iter().map(|(_, b)| (b.clone(), b.len() as u32)).collect();
    let mut sources: Vec<(String, rules::Policy, Vec<Captured>)> = vec![("busy".into(), busy_policy(), busy)];
    for path in &pcaps() {
        let cap = Capture::open(path).unwrap();
        let frames = cap.frames().map_while(Result::ok).map(|f| (f.data.to_vec(), f.wire_len)).collect();
        sources.push((path.display().to_string(), policy_for(path), frames));
    }
    for (path, policy, frames) in &sources {
        let mut snaps = vec![Engine::new(policy).unwrap().snapshot()];
        for (data, wire_len) in frames {
            let f = pktio::CaptureFrame {
                data,
                wire_len: *wire_len,
                ts_nanos: 0,
                link: LinkType::Ethernet,
                interface: 0,
            };
            // The lean lane's own reading of the bytes agrees with the plain-TCP reader and routing,
            // on every frame (plain or not) and every snapshot.
            let plain_tcp = pktio::PlainTcp::read(f.data, f.wire_len);
            for snap in &snaps {
                let expected = plain_tcp.and_then(|p| {
                    let tcp = pktio::TcpInfo { options: pktio::TcpOptions::default(), ..p.tcp };
                    engine::Route::of_plain(snap, &p).map(|r| (r, tcp))
                });
                assert_eq!(engine::Route::of_bytes(snap, f.data, f.wire_len), expected, "{path}");
            }
            let Some(p) = plain_tcp else { continue };
            plain += 1;
            assert_eq!(Ok(p.packet()), parse_frame(f.link, f.data, f.wire_len), "{path}");
            if snaps.len() == 1 {
                let mac = |m: [u8; 6]| pktio::MacAddr(m).to_string();
                let vnics = |macs: &[[u8; 6]]| {
                    let filters: String = macs
                        .iter()
                        .enumerate()
                        .map(|(i, m)| format!("filter f{i} {{ vnic mac {}; }}\n", mac(*m)))
                        .collect();
                    Engine::new(&parse_policy(&filters).unwrap()).unwrap().snapshot()
                };
                for macs in [vec![p.src_mac], vec![p.dst_mac], vec![p.src_mac, p.dst_mac]] {
                    if macs.iter().all(|m| *m != [0; 6]) && (macs.len() == 1 || macs[0] != macs[1]) {
                        snaps.push(vnics(&macs));
                    }
                }
            }
            for snap in &snaps {
                if let Some(r) = engine::Route::of_plain(snap, &p) {
                    lean += 1;
                    assert_eq!(r, engine::Route::of(snap, &p.packet()), "{path}");
                }
            }
        }
    }
    eprintln!("{lean} lean routes of {plain} plain TCP frames");
    assert!(plain > 1000 && lean > 1000, "{lean} lean routes of {plain} plain TCP frames");
}

/// Records every decision as text.
#[derive(Default)]
struct Transcript(Vec<String>);
impl Sink for Transcript {
    fn decision(&mut self, d: &Decision, f: &FilterConfig) {
        self.0.push(decision_line(d, f));
    }
}

/// The policy [`busy_traffic`] runs against: short timers, web out, everything else dropped.
fn busy_policy() -> rules::Policy {
    parse_policy(
        "filter vm { vnic mac 02:00:00:00:00:01; timeout tcp.established 40; timeout tcp.opening 5; flowCounts on;\n\
           ruleset mainrs { rule 1 at 1 out protocol tcp from any to any port 80 accept;\n\
                            rule 2 at 2 inout protocol any from any to any drop; } }",
    )
    .unwrap()
}

/// 60,400 timestamped frames: 400 TCP conversations of a vNIC (see
/// [`fast_paths_agree_with_the_full_path_on_busy_synthetic_traffic`]).
fn busy_traffic() -> Vec<(u64, Vec<u8>)> {
    use pktio::build::{tcp_v4, TcpSeg};
    use pktio::packet::tcpflags::{ACK, FIN, PSH, RST, SYN};
    let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    // Per flow: next sequence numbers of client and server, and how far along it is.
    let flows = 400;
    let mut state: Vec<(u32, u32, u32)> =
        (0..flows).map(|i| (1000 + i * 7919, 50_000 + i * 104_729, 0)).collect();
    let mut frames = Vec::new();
    let mut now = 1_700_000_000_000_000_000u64;
    for n in 0..60_000u64 {
        let i = rand(u64::from(flows)) as usize;
        let (c, s, step) = state[i];
        let server = Host {
            mac: [2, 0, 0, 0, 9, 9],
            ip: Ipv4Addr::new(192, 168, (i / 200) as u8, (i % 200) as u8 + 1),
        };
        let sport = 20_000 + i as u16;
        let payload = [0u8; 1400];
        let len = rand(1400) as usize;
        let seg = |seq, ack, flags, payload: &[u8]| {
            let s = TcpSeg { sport, dport: 80, seq, ack, flags, window: 65_535, mss: None, payload };
            tcp_v4(&vm, &server, n as u16, &s)
        };
        let rseg = |seq, ack, flags, payload: &[u8]| {
            let s = TcpSeg { sport: 80, dport: sport, seq, ack, flags, window: 65_535, mss: None, payload };
            tcp_v4(&server, &vm, n as u16, &s)
        };
        let (frame, next) = match step {
            0 => (seg(c, 0, SYN, &[]), (c + 1, s, 1)),
            1 => (rseg(s, c, SYN | ACK, &[]), (c, s + 1, 2)),
            2 => (seg(c, s, ACK, &[]), (c, s, 3)),
            _ => match rand(100) {
                0..=44 => (seg(c, s, ACK | PSH, &payload[..len]), (c + len as u32, s, 3)),
                45..=89 => (rseg(s, c, ACK, &payload[..len]), (c, s + len as u32, 3)),
                90..=92 => (seg(c.wrapping_add(3_000_000), s, ACK, &payload[..len]), (c, s, 3)),
                93 => (rseg(s + 100, c, RST, &[]), (c, s, 3)),
                94 => (seg(c + 5, 0, SYN, &[]), (c, s, 3)),
                95..=97 => (seg(c, s, FIN | ACK, &[]), (c + 1, s, 3)),
                _ => (rseg(s, c, RST, &[]), (c, s, 0)),
            },
        };
        state[i] = next;
        if rand(2000) == 0 {
            now += 30_000_000_000;
        }
        now += 1_000_000;
        frames.push((now, frame));
    }
    // Then time passes beyond the closing timers while one established connection keeps talking:
    // the packet clock moving with its frames reclaims the others.
    let i = (0..flows as usize).find(|&i| state[i].2 == 3).expect("an established flow");
    let (c, s, _) = state[i];
    let server =
        Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(192, 168, (i / 200) as u8, (i % 200) as u8 + 1) };
    now += 35_000_000_000;
    for n in 0..400u64 {
        let seg = TcpSeg {
            sport: 20_000 + i as u16,
            dport: 80,
            seq: c,
            ack: s,
            flags: ACK,
            window: 65_535,
            mss: None,
            payload: &[],
        };
        now += 1_000_000;
        frames.push((now, tcp_v4(&vm, &server, n as u16, &seg)));
    }
    frames
}

/// Many interleaved TCP conversations between a vNIC and outside hosts, with the odd stray segment
/// (out of window, inexact RST, SYN on an established connection), FINs, and time passing so short
/// timers expire: decided by one engine with the fast paths and one without, frame by frame.
#[test]
fn fast_paths_agree_with_the_full_path_on_busy_synthetic_traffic() {
    let policy = busy_policy();
    let frames = busy_traffic();
    let run = |fast: bool| {
        let mut e = Engine::new(&policy).unwrap();
        e.set_fast_paths(fast);
        let mut t = Transcript::default();
        for (n, (ts, bytes)) in frames.iter().enumerate() {
            let pkt = parse_frame(LinkType::Ethernet, bytes, bytes.len() as u32).unwrap();
            let f = FrameRef { number: n as u64 + 1, link: LinkType::Ethernet, bytes, now_ns: *ts };
            e.process(&pkt, f, &mut t);
        }
        let counters = e.counters("vm").cloned();
        (t.0, counters, table_dump(&e))
    };
    let (fast, full) = (run(true), run(false));
    assert_eq!(fast.0.len(), full.0.len());
    for (a, b) in fast.0.iter().zip(&full.0) {
        assert_eq!(a, b);
    }
    assert_eq!(fast.1, full.1, "counters");
    assert_eq!(fast.2, full.2, "connection tables");
    let established = fast.0.iter().filter(|l| l.contains(" pass established state ")).count();
    let invalid = fast.0.iter().filter(|l| l.contains(" drop invalid state-mismatch ")).count();
    eprintln!("{established} established, {invalid} invalid");
    assert!(established > 20_000 && invalid > 500, "{established} established, {invalid} invalid");
}

/// The busy traffic as a capture, with damaged frames, ARP, ICMP and UDP mixed in, replayed on 1, 2
/// and 3 workers and on one worker without fast paths, with two policy switches part-way (one at a
/// frame, one at a time; the first one's policy cuts the web connections on revalidation): every run
/// reports the same events in the same order and the same totals and counters, and so does every
/// replay without events.
#[test]
fn workers_agree_on_busy_traffic_with_switches_and_damage() {
    use engine::replay::{Switch, SwitchPoint};
    use pktio::build::{arp, icmp_echo_v4};
    use pktio::capture::{PcapWriter, TsResolution};
    let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let far = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(172, 16, 0, 9) };
    let mut frames = busy_traffic();
    for (n, (_, bytes)) in frames.iter_mut().enumerate() {
        let id = n as u16;
        match n % 1000 {
            // Cut short inside the TCP header: malformed.
            7 => bytes.truncate(14 + 20 + 9),
            // Frames the reader must parse to find their owner (no ports in the IP header's view).
            11 => *bytes = icmp_echo_v4(&vm, &far, id, false, id, 1),
            13 => *bytes = arp(&vm, far.ip, None),
            17 => *bytes = udp_v4(&vm, &far, id, 5353, 53, b"q"),
            _ => {}
        }
    }
    // A last frame long after the rest: one worker sees it, and every worker ends its connections at
    // its time.
    let end = frames.last().unwrap().0 + 100_000_000_000;
    frames.push((end, udp_v4(&vm, &far, 1, 5353, 53, b"late")));
    let mut w =
        PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
    for (ts, bytes) in &frames {
        let wire = if bytes.len() == 14 + 20 + 9 { 60 } else { bytes.len() as u32 };
        w.write_frame(*ts, bytes, wire).unwrap();
    }
    let cap = Capture::from_bytes(w.into_inner(), "busy.pcap").unwrap();
    let no_web = parse_policy(
        "filter vm { vnic mac 02:00:00:00:00:01; timeout tcp.established 40; timeout tcp.opening 5; flowCounts on;\n\
           ruleset mainrs { rule 2 at 2 inout protocol any from any to any drop; } }",
    )
    .unwrap();
    // Three switches on consecutive frames: some worker sees none of those frames and must still end
    // up under the last of them.
    let switches = [
        Switch { at: SwitchPoint::Frame(20_000), policy: no_web.clone(), label: "no-web".into() },
        Switch { at: SwitchPoint::Frame(30_000), policy: busy_policy(), label: "web-again".into() },
        Switch { at: SwitchPoint::Frame(30_001), policy: no_web.clone(), label: "no-web-again".into() },
        Switch { at: SwitchPoint::Frame(30_002), policy: no_web, label: "no-web-still".into() },
        Switch { at: SwitchPoint::Time(frames[35_000].0), policy: busy_policy(), label: "web".into() },
    ];
    let run = |workers: usize, events: bool| {
        let mut engine = Engine::new(&busy_policy()).unwrap();
        // Worker count 0 here: one worker without the fast paths (nor the lean lane), the reference.
        engine.set_fast_paths(workers > 0);
        let workers = workers.max(1);
        let mut lines = Vec::new();
        let s = replay(&cap, &mut engine, &switches, workers, events, |ev| match ev {
            Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
            Event::Malformed { frame, reason } => {
                lines.push(format!("{frame} malformed {}", reason.as_str()))
            }
            Event::Switched { frame, generation, label } => {
                lines.push(format!("{frame} switch {generation} {label}"))
            }
            _ => {}
        })
        .unwrap();
        let totals = (s.frames, s.passed, s.dropped, s.unfiltered, s.malformed.clone(), s.counters.clone());
        (lines, totals, s.connections.clone())
    };
    let one = run(1, true);
    assert_eq!(one.1 .0, frames.len() as u64);
    assert_eq!(one.1 .4.values().sum::<u64>(), 61, "malformed frames: {:?}", one.1 .4);
    let cut = one.0.iter().filter(|l| l.contains("revalidat")).count();
    assert!(one.0.iter().any(|l| l.contains("switch 2 no-web")) && one.0.iter().any(|l| l.ends_with(" web")));
    for workers in [0, 2, 3] {
        let many = run(workers, true);
        assert_eq!(many.0.len(), one.0.len(), "{workers} workers");
        for (a, b) in one.0.iter().zip(&many.0) {
            assert_eq!(a, b, "{workers} workers");
        }
        assert_eq!(many.1, one.1, "{workers} workers");
        assert_eq!(many.2, one.2, "{workers} workers");
        let quiet = run(workers, false);
        assert_eq!(quiet.0, Vec::<String>::new(), "{workers} workers without events");
        assert_eq!(quiet.1, one.1, "{workers} workers without events");
    }
    eprintln!("{} events, {cut} revalidation lines", one.0.len());
    assert!(cut > 0, "the no-web switch cut no connection");
}

/// One random TCP segment of [`fast_paths_agree_with_the_full_path_on_random_segments`]: which of three
/// conversations, which way, what flags, how far its sequence and acknowledgement numbers stray from
/// what the conversation expects, its window and payload, and how much time passes before it.
#[derive(Debug, Clone)]
struct Step {
    flow: usize,
    from_server: bool,
    flags: u8,
    seq_off: i64,
    ack_off: i64,
    window: u16,
    len: usize,
    wait: u64,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use pktio::packet::tcpflags::{ACK, FIN, PSH, RST, SYN};
    use proptest::prelude::*;
    let flags = prop_oneof![
        4 => Just(ACK),
        4 => Just(ACK | PSH),
        1 => Just(SYN),
        1 => Just(SYN | ACK),
        1 => Just(FIN | ACK),
        1 => Just(RST),
        1 => Just(RST | ACK),
        1 => any::<u8>(),
    ];
    // Mostly on the expected number, sometimes a little off, sometimes far off (out of any window).
    let off = prop_oneof![6 => Just(0i64), 2 => -2000i64..2000, 1 => any::<u32>().prop_map(i64::from)];
    let wait = prop_oneof![8 => 0u64..2_000_000, 1 => 1_000_000_000u64..60_000_000_000];
    (
        0..3usize,
        any::<bool>(),
        flags,
        off.clone(),
        off,
        prop_oneof![Just(65_535u16), any::<u16>()],
        0..300usize,
        wait,
    )
        .prop_map(|(flow, from_server, flags, seq_off, ack_off, window, len, wait)| Step {
            flow,
            from_server,
            flags,
            seq_off,
            ack_off,
            window,
            len,
            wait,
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Random segments on three conversations of a vNIC (handshakes, data, stray and out-of-window
    /// numbers, odd flag sets, RSTs, FINs, zero windows, idle gaps past the short timers), as a
    /// capture, with up to three policy switches at random frames (web allowed or not, connections
    /// revalidated or kept, some allowing rules logged): one worker with the fast paths and the lean
    /// lane, one without them, and two workers (walking the capture in chunks of a random few frames)
    /// give the same decisions frame by frame, the same counters and the same connection tables.
    #[test]
    fn fast_paths_agree_with_the_full_path_on_random_segments(
        steps in proptest::collection::vec(step(), 1..120),
        switches in proptest::collection::vec((1..130u64, proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY), 0..4),
        chunk in 1..12u64,
    ) {
        use engine::replay::{Switch, SwitchPoint};
        use pktio::build::{tcp_v4, TcpSeg};
        use pktio::capture::{PcapWriter, TsResolution};
        let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
        let mut w = PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
        // Per conversation, the next sequence number each side would send.
        let mut next = [(1_000u32, 900_000u32), (4_000_000_000, 7), (u32::MAX - 500, 123_456)];
        let mut now = 1_700_000_000_000_000_000u64;
        let payload = [0u8; 300];
        for (n, s) in steps.iter().enumerate() {
            let server = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(192, 168, 0, s.flow as u8 + 1) };
            let (client_next, server_next) = next[s.flow];
            let (mine, theirs) = if s.from_server { (server_next, client_next) } else { (client_next, server_next) };
            let seg = TcpSeg {
                sport: if s.from_server { 80 } else { 40_000 + s.flow as u16 },
                dport: if s.from_server { 40_000 + s.flow as u16 } else { 80 },
                seq: mine.wrapping_add(s.seq_off as u32),
                ack: theirs.wrapping_add(s.ack_off as u32),
                flags: s.flags,
                window: s.window,
                mss: None,
                payload: &payload[..s.len],
            };
            let frame = if s.from_server { tcp_v4(&server, &vm, n as u16, &seg) } else { tcp_v4(&vm, &server, n as u16, &seg) };
            // The sender moves on by what it sent (SYN and FIN count one), as a real endpoint would.
            let used = s.len as u32 + u32::from(s.flags & 0x03 != 0);
            let sent = mine.wrapping_add(s.seq_off as u32).wrapping_add(used);
            if s.seq_off == 0 {
                if s.from_server { next[s.flow].1 = sent } else { next[s.flow].0 = sent }
            }
            now += s.wait;
            w.write_frame(now, &frame, frame.len() as u32).unwrap();
        }
        let cap = Capture::from_bytes(w.into_inner(), "random.pcap").unwrap();
        let mut at: Vec<_> = switches.clone();
        at.sort_by_key(|s| s.0);
        let switches: Vec<Switch> = at
            .into_iter()
            .map(|(frame, web, keep, log)| {
                let change = if keep { "policyChange keep;" } else { "" };
                let web = if web { format!("rule 1 at 1 out protocol tcp from any to any port 80 accept{};", if log { " with log" } else { "" }) } else { String::new() };
                let text = format!(
                    "filter vm {{ vnic mac 02:00:00:00:00:01; timeout tcp.established 40; timeout tcp.opening 5; flowCounts on; {change}\n\
                       ruleset mainrs {{ {web} rule 2 at 2 inout protocol any from any to any drop; }} }}"
                );
                Switch { at: SwitchPoint::Frame(frame), policy: parse_policy(&text).unwrap(), label: format!("{frame}") }
            })
            .collect();
        let run = |workers: usize, fast: bool| {
            let mut engine = Engine::new(&busy_policy()).unwrap();
            engine.set_fast_paths(fast);
            let (mut lines, mut terms) = (Vec::new(), Vec::new());
            let s = replay_chunked(&cap, &mut engine, &switches, workers, true, chunk, |ev| match ev {
                Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
                Event::Switched { frame, generation, .. } => lines.push(format!("{frame} switch {generation}")),
                Event::Log(l @ LogRecord::Term { .. }) => terms.push(l.clone()),
                Event::Log(l) => lines.push(format!("{l:?}")),
                _ => {}
            })
            .unwrap();
            // (Connections of several workers stay with them: only one worker's end up in the engine.)
            let table = if workers == 1 { table_dump(&engine) } else { Vec::new() };
            (lines, terms, s.counters, s.connections, table)
        };
        let full = run(1, false);
        proptest::prop_assert!(full.0.len() >= steps.len());
        proptest::prop_assert_eq!(&run(1, true), &full);
        // Every worker's packet clock moves with every frame, so even what it reclaims (held
        // fragments dropped, TERM lines of connections timed out) comes at the same frames.
        let two = run(2, true);
        proptest::prop_assert_eq!((&two.0, &two.1, &two.2, &two.3), (&full.0, &full.1, &full.2, &full.3));
    }
}

/// What a generated policy does with one kind of TCP flow (see
/// [`the_rules_decide_new_connections_in_place_as_the_full_path_does`]).
#[derive(Debug, Clone)]
struct RuleKnobs {
    action: &'static str,
    stateless: bool,
    strict: bool,
    log: bool,
}

fn rule_knobs() -> impl proptest::strategy::Strategy<Value = RuleKnobs> {
    use proptest::prelude::*;
    (
        prop_oneof![4 => Just("accept"), 1 => Just("drop"), 1 => Just("punt"), 1 => Just("reject")],
        prop_oneof![4 => Just(false), 1 => Just(true)],
        any::<bool>(),
        prop_oneof![4 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(action, stateless, strict, log)| RuleKnobs { action, stateless, strict, log })
}

/// A frame of [`the_rules_decide_new_connections_in_place_as_the_full_path_does`]: flow (0–7), from the
/// server or not, TCP flags (mostly SYN), and the wait before it (a microsecond, 2 ms, or 6 s).
fn new_frame() -> impl proptest::strategy::Strategy<Value = (usize, bool, u8, u64)> {
    use pktio::packet::tcpflags::{ACK, FIN, PSH, RST, SYN};
    use proptest::prelude::*;
    let flags = prop_oneof![
        6 => Just(SYN),
        2 => Just(SYN | ACK),
        3 => Just(ACK),
        1 => Just(ACK | PSH),
        1 => Just(FIN | ACK),
        1 => Just(RST),
        1 => any::<u8>(),
    ];
    (0..8usize, any::<bool>(), flags, prop_oneof![3 => Just(0u64), 3 => Just(1), 1 => Just(2)])
}

/// The last rule of a generated policy: none, a drop, or an accept of all TCP.
fn last_rule() -> impl proptest::strategy::Strategy<Value = &'static str> {
    use proptest::prelude::*;
    prop_oneof![
        Just(""),
        Just("rule 3 at 3 inout protocol any from any to any drop;"),
        Just("rule 3 at 3 inout protocol tcp from any to any accept;"),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// The first frames of connections (and frames of none) under random policies: rules that accept
    /// (stateful, stateless, strict), drop, punt or reject, with or without log lines, no rule at all
    /// for a port, small connection limits, an L2 rule set (passing every frame, or dropping what comes
    /// in) or none, and a switch to another such
    /// policy part-way. Deciding them in place (the fast paths) gives the same decisions, log lines,
    /// counters and connections as the full path, on one worker and on two (where a connection
    /// limit that fills makes the replay run again on one worker from the same frame).
    #[test]
    fn the_rules_decide_new_connections_in_place_as_the_full_path_does(
        frames in proptest::collection::vec(new_frame(), 1..80),
        web in rule_knobs(),
        tls in rule_knobs(),
        last in last_rule(),
        max in proptest::option::of(1..4u32),
        l2 in 0..3usize,
        switch in proptest::option::of((1..80u64, rule_knobs())),
    ) {
        use engine::replay::{Switch, SwitchPoint};
        use pktio::build::{tcp_v4, TcpSeg};
        use pktio::capture::{PcapWriter, TsResolution};
        let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
        let mut w = PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
        let mut now = 1_700_000_000_000_000_000u64;
        for (n, &(flow, from_server, flags, wait)) in frames.iter().enumerate() {
            // Flows to port 80 and 443 of two servers, from four client ports.
            let server = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(192, 168, 0, 1 + (flow % 2) as u8) };
            let (client_port, server_port) = (40_000 + (flow / 2) as u16, if flow % 4 < 2 { 80 } else { 443 });
            let seg = |sport, dport, seq, ack| TcpSeg { sport, dport, seq, ack, flags, window: 65_535, mss: None, payload: b"" };
            let frame = if from_server {
                tcp_v4(&server, &vm, n as u16, &seg(server_port, client_port, 5_000, 1_001))
            } else {
                tcp_v4(&vm, &server, n as u16, &seg(client_port, server_port, 1_000, 0))
            };
            // Idle gaps past the opening timer (5 s) now and then.
            now += [1_000, 2_000_000, 6_000_000_000][wait as usize];
            w.write_frame(now, &frame, frame.len() as u32).unwrap();
        }
        let cap = Capture::from_bytes(w.into_inner(), "new.pcap").unwrap();
        let text = |web: &RuleKnobs| {
            let rule = |id: u32, port: u16, k: &RuleKnobs| {
                format!(
                    "rule {id} at {id} out protocol tcp {}{}from any to any port {port} {}{};",
                    if k.stateless { "stateless " } else { "" },
                    if k.strict { "strict " } else { "" },
                    k.action,
                    if k.log { " with log" } else { "" },
                )
            };
            let max = max.map_or(String::new(), |m| format!("maxConnections {m};"));
            let l2 = [
                "",
                "ruleset mainrs_L2 { rule 1 at 1 inout ethertype any stateless from any to any accept; }",
                "ruleset mainrs_L2 { rule 1 at 1 in ethertype 0x0800 stateless from any to any drop;\n\
                   rule 2 at 2 inout ethertype any stateless from any to any accept; }",
            ][l2];
            format!(
                "filter vm {{ vnic mac 02:00:00:00:00:01; timeout tcp.opening 5; {max}\n\
                   ruleset mainrs {{ {} {} {last} }} {l2} }}",
                rule(1, 80, web),
                rule(2, 443, &tls),
            )
        };
        let policy = parse_policy(&text(&web)).unwrap();
        let switches: Vec<Switch> = switch
            .iter()
            .map(|(frame, k)| Switch { at: SwitchPoint::Frame(*frame), policy: parse_policy(&text(k)).unwrap(), label: format!("{frame}") })
            .collect();
        let run = |workers: usize, fast: bool| {
            let mut engine = Engine::new(&policy).unwrap();
            engine.set_fast_paths(fast);
            let mut lines = Vec::new();
            let s = replay_chunked(&cap, &mut engine, &switches, workers, true, 4, |ev| match ev {
                Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
                Event::Switched { frame, generation, .. } => lines.push(format!("{frame} switch {generation}")),
                Event::Log(l) => lines.push(format!("{l:?}")),
                Event::Reply { frame, bytes } => lines.push(format!("{frame} reply {bytes:?}")),
                Event::Malformed { frame, reason } => lines.push(format!("{frame} malformed {reason:?}")),
            })
            .unwrap();
            let table = if workers == 1 { table_dump(&engine) } else { Vec::new() };
            (lines, s.counters, s.connections, s.passed, s.dropped, table)
        };
        let full = run(1, false);
        proptest::prop_assert!(full.0.iter().filter(|l| !l.contains("switch")).count() >= frames.len());
        proptest::prop_assert_eq!(&run(1, true), &full);
        // Where a worker's part of a connection limit refuses what the whole limit would not, the
        // replay must notice and run again on one worker (which frame it notices first depends on the
        // threads' pace): everything comes out as one worker decides it.
        let two = run(2, true);
        proptest::prop_assert_eq!((&two.0, &two.1, &two.2, two.3, two.4), (&full.0, &full.1, &full.2, full.3, full.4));
    }
}

/// One frame of [`workers_agree_on_random_mixed_frames`].
#[derive(Debug, Clone)]
enum Mixed {
    /// A TCP segment as in [`step`].
    Tcp(Step),
    /// A UDP datagram between the vNIC and server `server` (0–2), either way, to port 53 or 99.
    Udp { server: u8, back: bool, port53: bool },
    /// A fragment of UDP datagram `id` from the vNIC to server `server`: the first (with the UDP header)
    /// or a later one at `offset` (8-byte units), the last one or not.
    Fragment { server: u8, id: u8, first: bool, offset: u8, more: bool },
    /// An ICMP error from server `server` quoting the `back`-most recent frame the vNIC sent it.
    IcmpError { server: u8 },
    /// An ICMP echo request or reply.
    Echo { server: u8, reply: bool },
    /// A frame cut short inside its IP header.
    Damaged,
    /// A TCP segment between the vNIC and the second local vNIC (through both filters), either way.
    Local { back: bool, syn: bool, port: u16 },
    /// A TCP segment over IPv6 between the vNIC and a server, either way.
    Tcp6 { back: bool, flags: u8, seq_off: i64 },
}

fn mixed() -> impl proptest::strategy::Strategy<Value = Mixed> {
    use proptest::prelude::*;
    prop_oneof![
        6 => step().prop_map(Mixed::Tcp),
        2 => (0..3u8, any::<bool>(), any::<bool>()).prop_map(|(server, back, port53)| Mixed::Udp { server, back, port53 }),
        3 => (0..3u8, 0..4u8, any::<bool>(), 0..6u8, any::<bool>())
            .prop_map(|(server, id, first, offset, more)| Mixed::Fragment { server, id, first, offset, more }),
        1 => (0..3u8).prop_map(|server| Mixed::IcmpError { server }),
        1 => (0..3u8, any::<bool>()).prop_map(|(server, reply)| Mixed::Echo { server, reply }),
        1 => Just(Mixed::Damaged),
        2 => (any::<bool>(), any::<bool>(), prop_oneof![Just(80u16), Just(443), Just(22)])
            .prop_map(|(back, syn, port)| Mixed::Local { back, syn, port }),
        2 => (any::<bool>(), prop_oneof![Just(0x02u8), Just(0x12), Just(0x10), Just(0x18), Just(0x11), Just(0x04)], prop_oneof![3 => Just(0i64), 1 => -5000i64..5000])
            .prop_map(|(back, flags, seq_off)| Mixed::Tcp6 { back, flags, seq_off }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]

    /// TCP segments mixed with UDP, fragments (in and out of order, overlapping, never completed),
    /// ICMP errors quoting earlier frames, echoes and damaged frames, with time jumps: one worker
    /// with and without the fast paths, two and three workers (walking the capture in chunks of a
    /// random few frames) report the same decisions, damaged frames, held and released fragments,
    /// counters and connections; a file cut short ends every one of them with the same error.
    #[test]
    fn workers_agree_on_random_mixed_frames(
        frames in proptest::collection::vec(mixed(), 1..150),
        switches in proptest::collection::vec((1..160u64, 0..4u8), 0..3),
        chunk in 1..12u64,
        cut in proptest::option::weighted(0.2, 1..80usize),
    ) {
        use engine::replay::{Switch, SwitchPoint};
        use pktio::build::{icmp_echo_v4, reject_reply, tcp_v4, udp_v4, TcpSeg};
        use pktio::capture::{PcapWriter, TsResolution};
        let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
        let server = |i: u8| Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(192, 168, 0, i + 1) };
        let peer = Host { mac: [2, 0, 0, 0, 0, 3], ip: Ipv4Addr::new(10, 0, 0, 3) };
        let vm6 = pktio::build::Host6 { mac: [2, 0, 0, 0, 0, 1], ip: "2001:db8::1".parse().unwrap() };
        let server6 = pktio::build::Host6 { mac: [2, 0, 0, 0, 9, 9], ip: "2001:db8:1::9".parse().unwrap() };
        let mut w = PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
        let mut now = 1_700_000_000_000_000_000u64;
        // The last frame the vNIC sent each server (what an ICMP error from it quotes).
        let mut last_sent: [Option<Vec<u8>>; 3] = [None, None, None];
        for (n, m) in frames.iter().enumerate() {
            let id = n as u16;
            let (frame, wire) = match m {
                Mixed::Tcp(s) => {
                    let srv = server(s.flow as u8);
                    let seg = TcpSeg {
                        sport: if s.from_server { 80 } else { 40_000 + s.flow as u16 },
                        dport: if s.from_server { 40_000 + s.flow as u16 } else { 80 },
                        seq: 1_000u32.wrapping_add(s.seq_off as u32),
                        ack: 900_000u32.wrapping_add(s.ack_off as u32),
                        flags: s.flags,
                        window: s.window,
                        mss: None,
                        payload: &[0u8; 300][..s.len],
                    };
                    now += s.wait;
                    if s.from_server { (tcp_v4(&srv, &vm, id, &seg), None) } else { (tcp_v4(&vm, &srv, id, &seg), None) }
                }
                Mixed::Udp { server: i, back, port53 } => {
                    let port = if *port53 { 53 } else { 99 };
                    if *back { (udp_v4(&server(*i), &vm, id, port, 5353, b"answer"), None) } else { (udp_v4(&vm, &server(*i), id, 5353, port, b"query"), None) }
                }
                Mixed::Fragment { server: i, id: dgram, first, offset, more } => {
                    let srv = server(*i);
                    let payload: Vec<u8> = if *first {
                        let mut udp = vec![0x14, 0xe9, 0, 53, 0, 40, 0, 0];
                        udp.extend_from_slice(&[0xaa; 16]);
                        udp
                    } else {
                        vec![0xbb; 16]
                    };
                    let offset = if *first { 0 } else { u16::from(*offset) * 8 };
                    let more = *first || *more;
                    (pktio::build::ipv4_fragment(&vm, &srv, 17, u16::from(*dgram), offset, more, &payload), None)
                }
                Mixed::IcmpError { server: i } => match &last_sent[usize::from(*i)] {
                    Some(q) => {
                        let qp = parse_frame(LinkType::Ethernet, q, q.len() as u32).unwrap();
                        match reject_reply(LinkType::Ethernet, q, &qp) {
                            Some(err) => (err, None),
                            None => (icmp_echo_v4(&server(*i), &vm, id, false, 7, id), None),
                        }
                    }
                    None => (icmp_echo_v4(&server(*i), &vm, id, false, 7, id), None),
                },
                Mixed::Echo { server: i, reply } => (icmp_echo_v4(&vm, &server(*i), id, *reply, 9, id), None),
                Mixed::Damaged => {
                    let mut f = udp_v4(&vm, &server(0), id, 1, 2, b"x");
                    f.truncate(14 + 12);
                    (f, Some(60))
                }
                Mixed::Local { back, syn, port } => {
                    let (a, b) = if *back { (&peer, &vm) } else { (&vm, &peer) };
                    let (sport, dport) = if *back { (*port, 50_000) } else { (50_000, *port) };
                    let flags = if *syn { 0x02 } else { 0x18 };
                    let seg = TcpSeg { sport, dport, seq: 77, ack: 88, flags, window: 1000, mss: None, payload: b"local" };
                    (tcp_v4(a, b, id, &seg), None)
                }
                Mixed::Tcp6 { back, flags, seq_off } => {
                    let (a, b) = if *back { (&server6, &vm6) } else { (&vm6, &server6) };
                    let (sport, dport) = if *back { (80, 41_000) } else { (41_000, 80) };
                    let seq = if *back { 5_000u32 } else { 10u32 }.wrapping_add(*seq_off as u32);
                    let seg = TcpSeg { sport, dport, seq, ack: 0, flags: *flags, window: 500, mss: None, payload: &[] };
                    (pktio::build::tcp_v6(a, b, &seg), None)
                }
            };
            if let Ok(p) = parse_frame(LinkType::Ethernet, &frame, frame.len() as u32) {
                if p.src_mac.0 == vm.mac {
                    if let Some(ip) = p.ip {
                        let i = match ip.dst { std::net::IpAddr::V4(a) => a.octets()[3], _ => 0 };
                        if (1..=3).contains(&i) && p.ports().is_some() {
                            last_sent[usize::from(i - 1)] = Some(frame.clone());
                        }
                    }
                }
            }
            now += 1_000_000;
            w.write_frame(now, &frame, wire.unwrap_or(frame.len() as u32)).unwrap();
        }
        let mut bytes = w.into_inner();
        // Sometimes the file is cut short: frames before the damage are decided alike, and every
        // worker count reports the damage.
        if let Some(cut) = cut {
            bytes.truncate(bytes.len().saturating_sub(cut).max(24));
        }
        let cap = Capture::from_bytes(bytes, "mixed.pcap").unwrap();
        // Variant 0 is the policy the replay starts with; the others drop one allowing rule each, or
        // keep connections across the change.
        let variant = |v: u8| {
            let (web, dns, tls) = (v != 1, v != 2, v != 3);
            let rule = |on: bool, text: &str| if on { text.to_string() } else { String::new() };
            let text = format!(
                "filter vm {{ vnic mac 02:00:00:00:00:01; timeout tcp.established 40; timeout tcp.opening 5; flowCounts on; {}\n\
                   ruleset mainrs {{ {}\n\
                                    {}\n\
                                    rule 4 at 3 out protocol icmp from any to any accept;\n\
                                    rule 5 at 4 out protocol udp from any to any port 99 reject;\n\
                                    rule 6 at 5 inout protocol tcp from any to any port 443 accept with log;\n\
                                    rule 2 at 6 inout protocol any from any to any drop; }} }}\n\
                 filter peer {{ vnic mac 02:00:00:00:00:03; timeout tcp.established 40;\n\
                   ruleset mainrs {{ {}\n\
                                    rule 8 at 2 in protocol tcp from any to any port 80 reject;\n\
                                    rule 9 at 3 inout protocol any from any to any accept; }} }}",
                // Variant 3 also ends closed TCP connections and UDP at once (timers of 0 s).
                match v {
                    2 => "policyChange keep;",
                    3 => "timeout tcp.closed 0; timeout udp.first 0;",
                    _ => "",
                },
                rule(web, "rule 1 at 1 out protocol tcp from any to any port 80 accept;"),
                rule(dns, "rule 3 at 2 out protocol udp from any to any port 53 accept with log;"),
                rule(tls, "rule 7 at 1 in protocol tcp from any to any port 443 accept;"),
            );
            parse_policy(&text).unwrap()
        };
        let policy = variant(0);
        let mut at = switches.clone();
        at.sort_by_key(|s| s.0);
        let switches: Vec<Switch> = at
            .into_iter()
            .map(|(frame, v)| Switch { at: SwitchPoint::Frame(frame), policy: variant(v), label: format!("v{v}") })
            .collect();
        let run = |workers: usize, fast: bool| {
            let mut engine = Engine::new(&policy).unwrap();
            engine.set_fast_paths(fast);
            let mut lines = Vec::new();
            let s = replay_chunked(&cap, &mut engine, &switches, workers, true, chunk, |ev| match ev {
                Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
                Event::Malformed { frame, reason } => lines.push(format!("{frame} malformed {}", reason.as_str())),
                Event::Switched { frame, generation, label } => lines.push(format!("{frame} switch {generation} {label}")),
                Event::Reply { frame, bytes } => lines.push(format!("{frame} reply {bytes:?}")),
                Event::Log(l @ LogRecord::Packet { .. }) => lines.push(format!("0 {l:?}")),
                _ => {}
            })
            .map(|s| (s.passed, s.dropped, s.malformed, s.counters, s.connections))
            .map_err(|e| e.to_string());
            (lines, s)
        };
        let one = run(1, false);
        proptest::prop_assert_eq!(&run(1, true), &one);
        proptest::prop_assert_eq!(&run(2, true), &one);
        proptest::prop_assert_eq!(&run(3, true), &one);
    }
}

/// One filter admitting outgoing UDP, with `maxConnections limit` when given.
fn udp_policy(limit: Option<usize>) -> rules::Policy {
    let limit = limit.map(|n| format!(" maxConnections {n};")).unwrap_or_default();
    parse_policy(&format!(
        "filter vm {{ vnic mac 02:00:00:00:00:01;{limit}\n\
           ruleset mainrs {{ rule 1 at 1 out protocol udp from any to any accept; }} }}"
    ))
    .unwrap()
}

/// `flows` UDP flows from the filter's vNIC to as many servers (so they spread over the workers), one
/// datagram each per round, the rounds a millisecond apart: nothing expires.
fn udp_flows(flows: u8, rounds: u64) -> Capture {
    use pktio::capture::{PcapWriter, TsResolution};
    let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let mut w =
        PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
    for round in 0..rounds {
        for i in 0..flows {
            let far = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(192, 168, 1, i + 1) };
            let frame = udp_v4(&vm, &far, u16::from(i), 5000, 53, b"q");
            let ts = 1_700_000_000_000_000_000 + round * 1_000_000 + u64::from(i);
            w.write_frame(ts, &frame, frame.len() as u32).unwrap();
        }
    }
    Capture::from_bytes(w.into_inner(), "flows.pcap").unwrap()
}

/// Replays `cap` through a fresh engine (`make`) on `workers` workers, chunks of 5 frames; every
/// decision and malformed frame as text, and the summary.
fn limited_run(
    cap: &Capture,
    make: &dyn Fn() -> Engine,
    workers: usize,
) -> (Vec<String>, engine::replay::ReplaySummary) {
    let mut engine = make();
    let mut lines = Vec::new();
    let s = replay_chunked(cap, &mut engine, &[], workers, true, 5, |ev| match ev {
        Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
        Event::Malformed { frame, reason } => lines.push(format!("{frame} malformed {}", reason.as_str())),
        _ => {}
    })
    .unwrap();
    (lines, s)
}

/// Totals of a summary that must not depend on the worker count.
fn totals(s: &engine::replay::ReplaySummary) -> impl PartialEq + std::fmt::Debug {
    (
        s.frames,
        s.passed,
        s.dropped,
        s.unfiltered,
        s.malformed.clone(),
        s.counters.clone(),
        s.connections.clone(),
    )
}

/// A filter's `maxConnections`, and the engine-wide limit, bound its connections however many workers
/// replay, and which connections meet `state-limit` does not depend on the number of workers: each
/// worker holds its part of every limit, and once a part refuses a connection the replay runs again
/// on one worker from there (`ReplaySummary::one_worker_from`).
#[test]
fn a_filters_connection_limit_holds_across_workers() {
    let cap = udp_flows(60, 1);
    // The filter's own limit, then the engine-wide one (the filter unlimited).
    let (policy, unlimited) = (udp_policy(Some(7)), udp_policy(None));
    for engine_wide in [false, true] {
        let make = || {
            if engine_wide {
                Engine::with_limit(&unlimited, 7).unwrap()
            } else {
                Engine::new(&policy).unwrap()
            }
        };
        let which = if engine_wide { "engine-wide limit" } else { "filter's limit" };
        let (one, s1) = limited_run(&cap, &make, 1);
        let passed = one.iter().filter(|l| l.contains(" match ")).count();
        let limited = one.iter().filter(|l| l.contains(" state-limit ")).count();
        assert_eq!((passed, limited), (7, 53), "one worker admits exactly the {which}: {one:?}");
        assert_eq!(s1.connections[0], 7, "{which}: every admitted connection is tracked");
        assert_eq!(s1.one_worker_from, None);
        for workers in 2..=4 {
            let (many, s) = limited_run(&cap, &make, workers);
            assert_eq!(many, one, "{workers} workers, {which}");
            assert_eq!(totals(&s), totals(&s1), "{workers} workers, {which}");
            // Without events, the totals alone.
            let quiet = replay_chunked(&cap, &mut make(), &[], workers, false, 5, |_| {}).unwrap();
            assert_eq!(totals(&quiet), totals(&s1), "{workers} workers, {which}, without events");
            assert_eq!(quiet.one_worker_from.is_some(), s.one_worker_from.is_some());
            assert!(s.one_worker_from.is_some(), "{workers} workers, {which}: no second run");
        }
    }
}

/// Where the parallel run stops, and how much of it went out before, depends on the threads' pace;
/// what the replay reports must not. Many runs, chunks of 1 to 7 frames, 2 to 4 workers.
#[test]
fn a_full_table_gives_the_same_events_whatever_the_threads_pace() {
    let policy = udp_policy(Some(9));
    // 30 flows, each with a second datagram later (tracked or still refused).
    let cap = udp_flows(30, 2);
    let run = |workers: usize, chunk: u64| {
        let mut engine = Engine::new(&policy).unwrap();
        let mut lines = Vec::new();
        let s = replay_chunked(&cap, &mut engine, &[], workers, true, chunk, |ev| {
            if let Event::Decision { decision: d, filter } = ev {
                lines.push(decision_line(d, filter));
            }
        })
        .unwrap();
        (lines, totals(&s))
    };
    let one = run(1, 4096);
    for i in 0..150u64 {
        let (workers, chunk) = (2 + (i % 3) as usize, 1 + (i / 3) % 7);
        assert_eq!(run(workers, chunk), one, "{workers} workers, chunks of {chunk}, run {i}");
    }
}

/// With room to spare in every part, several workers decide everything themselves: no second run.
#[test]
fn a_replay_whose_tables_never_fill_runs_once_on_every_worker_count() {
    let policy = udp_policy(Some(400));
    let cap = udp_flows(60, 1);
    let make = || Engine::new(&policy).unwrap();
    let (one, s1) = limited_run(&cap, &make, 1);
    for workers in 2..=4 {
        let (many, s) = limited_run(&cap, &make, workers);
        assert_eq!((many, totals(&s)), (one.clone(), totals(&s1)), "{workers} workers");
        assert_eq!(s.one_worker_from, None, "{workers} workers: 60 connections fit every part of 400");
    }
}

/// A filter's ICMP error rate holds however many workers replay, and which rejected datagrams are
/// answered does not depend on the number of workers: each worker holds its part of the rate and the
/// burst, and once a part refuses an error the replay runs again on one worker from there.
#[test]
fn the_icmp_error_rate_holds_across_workers() {
    let policy = parse_policy(
        "filter vm { vnic mac 02:00:00:00:00:01; icmpErrorRate 100;\n\
           ruleset mainrs { rule 1 at 1 out protocol udp from any to any reject; } }",
    )
    .unwrap();
    // 60 flows, three rounds a millisecond apart: 180 rejected datagrams within 3 ms, against a
    // burst of 5 and 100 errors a second.
    let cap = udp_flows(60, 3);
    let run = |workers: usize| {
        let mut engine = Engine::new(&policy).unwrap();
        let mut answered = Vec::new();
        let s = replay_chunked(&cap, &mut engine, &[], workers, true, 5, |ev| {
            if let Event::Reply { frame, .. } = ev {
                answered.push(frame);
            }
        })
        .unwrap();
        (answered, totals(&s), s.one_worker_from)
    };
    let (one, totals_one, from) = run(1);
    assert_eq!(one, [1, 2, 3, 4, 5], "the burst, then nothing within 3 ms");
    let c = &totals_one_counters(&cap, &policy);
    assert_eq!((c.rejects_sent, c.rejects_limited), (5, 175));
    assert_eq!(from, None);
    for workers in 2..=4 {
        let (many, t, from) = run(workers);
        assert_eq!((&many, &t), (&one, &totals_one), "{workers} workers");
        assert!(from.is_some(), "{workers} workers: a part of a burst of 5 must have refused");
    }
}

/// The filter's counters after one worker replays `cap` through `policy`.
fn totals_one_counters(cap: &Capture, policy: &rules::Policy) -> engine::FilterCounters {
    let mut engine = Engine::new(policy).unwrap();
    let s = replay_chunked(cap, &mut engine, &[], 1, false, 4096, |_| {}).unwrap();
    s.counters.into_iter().next().expect("one filter")
}

/// The fragment table's bounds (datagrams, held bytes) are held in parts too, and what meets them does
/// not depend on the number of workers.
#[test]
fn fragment_table_bounds_do_not_depend_on_the_worker_count() {
    use pktio::build::ipv4_fragment;
    use pktio::capture::{PcapWriter, TsResolution};
    use pktio::packet::ipproto;
    let policy = udp_policy(None);
    let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let far = |i: u32| Host {
        mac: [2, 0, 0, 0, 9, 9],
        ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 0, 0)) + i),
    };
    let udp = |len: usize| {
        let mut h = vec![0x13, 0x88, 0, 53];
        h.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h
    };
    let t0 = 1_700_000_000_000_000_000u64;
    for (datagrams, payload) in [(1_100u32, 16usize), (40, 40_000)] {
        let mut w =
            PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
        let mut t = t0;
        // Every datagram's second fragment first (held until the first comes, within the bounds),
        // then every first fragment.
        for i in 0..datagrams {
            let frame = ipv4_fragment(&vm, &far(i), ipproto::UDP, i as u16, 8, false, &vec![7; payload]);
            w.write_frame(t, &frame, frame.len() as u32).unwrap();
            t += 1_000;
        }
        for i in 0..datagrams {
            let frame = ipv4_fragment(&vm, &far(i), ipproto::UDP, i as u16, 0, true, &udp(payload));
            w.write_frame(t, &frame, frame.len() as u32).unwrap();
            t += 1_000;
        }
        let cap = Capture::from_bytes(w.into_inner(), "frags.pcap").unwrap();
        let make = || Engine::new(&policy).unwrap();
        let (one, s1) = limited_run(&cap, &make, 1);
        let undecidable = one.iter().filter(|l| l.contains(" fragment ")).count();
        assert!(undecidable > 0, "{datagrams} datagrams of {payload} bytes: no bound met");
        for workers in 2..=4 {
            let (many, s) = limited_run(&cap, &make, workers);
            assert_eq!(many, one, "{workers} workers, {datagrams} datagrams of {payload} bytes");
            assert_eq!(
                totals(&s),
                totals(&s1),
                "{workers} workers, {datagrams} datagrams of {payload} bytes"
            );
            assert!(s.one_worker_from.is_some(), "{workers} workers: no second run");
        }
    }
}

/// The workers' parts of a limit add up to the limit, and differ by at most one.
#[test]
fn the_parts_of_a_connection_limit_add_up_to_it() {
    use engine::filter::Share;
    for limit in [0usize, 1, 2, 5, 7, 1 << 20, 1_000_003] {
        for of in 1..=9 {
            let parts: Vec<usize> = (0..of).map(|index| Share { index, of }.limit(limit)).collect();
            assert_eq!(parts.iter().sum::<usize>(), limit, "{limit} over {of}: {parts:?}");
            assert!(
                parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1,
                "{limit} over {of}: {parts:?}"
            );
        }
    }
    assert_eq!(Share::WHOLE.limit(12345), 12345);
}

/// A logged connection falls idle while another keeps sending plain ACKs, ten a second, past the
/// logged one's timer: its TERM line comes out before the first frame of the second in which it
/// expired, as the packet clock reclaims it there, whether the ACKs are decided one by one (no fast
/// paths) or in runs (the fast path holds a filter's state for a run of them, and must stop each run
/// where the clock enters another second). On one and two workers, with and without the fast paths.
#[test]
fn runs_of_tracked_frames_stop_where_the_packet_clock_enters_another_second() {
    use pktio::build::{tcp_v4, TcpSeg};
    use pktio::capture::{PcapWriter, TsResolution};
    use pktio::packet::tcpflags::{ACK, SYN};
    let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let far = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(172, 16, 0, 9) };
    let policy = parse_policy(
        "filter vm { vnic mac 02:00:00:00:00:01; timeout tcp.established 3;\n\
           ruleset mainrs { rule 1 at 1 out protocol tcp from any to any port 22 accept with log;\n\
                            rule 2 at 2 out protocol tcp from any to any port 80 accept;\n\
                            rule 3 at 3 inout protocol any from any to any drop; } }",
    )
    .unwrap();
    let mut frames = Vec::new();
    let t0 = 1_700_000_000_250_000_000u64;
    // Two handshakes at t0: port 22 (logged) and port 80.
    for (i, port) in [22u16, 80].into_iter().enumerate() {
        let sport = 40_000 + i as u16;
        let seg = |(sport, dport), seq, ack, flags| TcpSeg {
            sport,
            dport,
            seq,
            ack,
            flags,
            window: 65_535,
            mss: None,
            payload: &[],
        };
        let (out, back) = ((sport, port), (port, sport));
        frames.push((t0, tcp_v4(&vm, &far, 1, &seg(out, 100, 0, SYN))));
        frames.push((t0, tcp_v4(&far, &vm, 1, &seg(back, 900, 101, SYN | ACK))));
        frames.push((t0, tcp_v4(&vm, &far, 2, &seg(out, 101, 901, ACK))));
    }
    // Then only the port-80 connection, ten plain ACKs a second for eight seconds.
    for n in 0..80u64 {
        let seg = TcpSeg {
            sport: 40_001,
            dport: 80,
            seq: 101,
            ack: 901,
            flags: ACK,
            window: 65_535,
            mss: None,
            payload: &[],
        };
        frames.push((t0 + (n + 1) * 100_000_000, tcp_v4(&vm, &far, n as u16, &seg)));
    }
    let mut w =
        PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
    for (ts, bytes) in &frames {
        w.write_frame(*ts, bytes, bytes.len() as u32).unwrap();
    }
    let cap = Capture::from_bytes(w.into_inner(), "runs.pcap").unwrap();
    let run = |workers: usize, fast: bool| {
        let mut engine = Engine::new(&policy).unwrap();
        engine.set_fast_paths(fast);
        let mut lines = Vec::new();
        let s = replay_chunked(&cap, &mut engine, &[], workers, true, 7, |ev| match ev {
            Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
            Event::Log(rec) if rec.to_string().contains("TERM") => lines.push("TERM".to_string()),
            _ => {}
        })
        .unwrap();
        (lines, s.counters.clone())
    };
    let reference = run(1, false);
    // The TERM line comes just before the first frame at or after t0 + 3 s whole seconds later.
    let term = reference.0.iter().position(|l| l == "TERM").expect("the logged connection ends");
    assert!(term + 1 < reference.0.len(), "the TERM line came only at the end: {:?}", reference.0);
    for (workers, fast) in [(1, true), (2, true), (2, false)] {
        let other = run(workers, fast);
        assert_eq!(other.0, reference.0, "{workers} workers, fast paths {fast}");
        assert_eq!(other.1, reference.1, "{workers} workers, fast paths {fast}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// The lean lane's reading of a frame ([`engine::Route::of_bytes`]) agrees with the plain-TCP
    /// reader and its routing on TCP frames with their header bytes damaged at random (ethertype,
    /// version and header length, fragment bits, protocol, lengths, data offset, options, MACs), cut
    /// short, or claiming another length on the wire, under snapshots whose vNIC is the sender, the
    /// receiver, both, or an IP-only one.
    #[test]
    fn the_lean_lanes_reading_agrees_with_the_plain_tcp_reader(
        flags in proptest::prelude::any::<u8>(),
        ts in proptest::prelude::any::<bool>(),
        payload in 0..40usize,
        damage in proptest::collection::vec((0..70usize, proptest::prelude::any::<u8>()), 0..3),
        cut in proptest::option::of(0..80usize),
        wire in proptest::option::of(0..200u32),
        zero_mac in proptest::option::of(proptest::prelude::any::<bool>()),
    ) {
        use pktio::build::{tcp_v4, TcpSeg};
        let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
        let far = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(172, 16, 0, 9) };
        let body = [7u8; 40];
        let seg = TcpSeg { sport: 40_000, dport: 80, seq: 5, ack: 9, flags, window: 512, mss: None, payload: &body[..payload] };
        let mut bytes = tcp_v4(&vm, &far, 1, &seg);
        if ts {
            // Make room for `NOP NOP TS` (data offset 8) and fix the IP length.
            let mut with = bytes[..54].to_vec();
            with.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
            with.extend_from_slice(&bytes[54..]);
            with[46] = 0x80;
            let total = u16::from_be_bytes([with[16], with[17]]) + 12;
            with[16..18].copy_from_slice(&total.to_be_bytes());
            bytes = with;
        }
        for (at, b) in damage {
            if at < bytes.len() {
                bytes[at] = b;
            }
        }
        // An all-zero MAC names no vNIC, not even one configured with it.
        if let Some(src) = zero_mac {
            let at = if src { 6 } else { 0 };
            bytes[at..at + 6].fill(0);
        }
        if let Some(n) = cut {
            bytes.truncate(n);
        }
        let wire_len = wire.unwrap_or(bytes.len() as u32);
        let snap = |text: &str| Engine::new(&parse_policy(text).unwrap()).unwrap().snapshot();
        let snaps = [
            snap("filter a { vnic mac 02:00:00:00:00:01; }"),
            snap("filter b { vnic mac 02:00:00:00:09:09; }"),
            snap("filter a { vnic mac 02:00:00:00:00:01; }\nfilter b { vnic mac 02:00:00:00:09:09; }"),
            snap("filter a { vnic mac 02:00:00:00:00:01; }\nfilter c { vnic ip 10.9.9.9; }"),
            snap("filter a { vnic mac 02:00:00:00:00:01; }\nfilter z { vnic mac 00:00:00:00:00:00; }"),
            snap("filter b { vnic mac 02:00:00:00:09:09; }\nfilter z { vnic mac 00:00:00:00:00:00; }"),
        ];
        for snap in &snaps {
            let expected = pktio::PlainTcp::read(&bytes, wire_len).and_then(|p| {
                let tcp = pktio::TcpInfo { options: pktio::TcpOptions::default(), ..p.tcp };
                engine::Route::of_plain(snap, &p).map(|r| (r, tcp))
            });
            proptest::prop_assert_eq!(engine::Route::of_bytes(snap, &bytes, wire_len), expected);
        }
    }
}

/// A policy switch that gives a vNIC's MAC to another filter (and another filter to the other vNIC)
/// in the middle of a conversation: frames after the switch are decided by the filter the new policy
/// names, with and without the fast paths, on one and two workers, though the lean lane remembers the
/// route of the MAC pair it read last.
#[test]
fn a_switch_that_moves_a_vnic_to_another_filter_routes_the_next_frames_anew() {
    use engine::replay::{Switch, SwitchPoint};
    use pktio::build::{tcp_v4, TcpSeg};
    use pktio::capture::{PcapWriter, TsResolution};
    use pktio::packet::tcpflags::{ACK, SYN};
    let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let far = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::new(172, 16, 0, 9) };
    // Two filters, the vNIC's first or second.
    let text = |vm_first: bool| {
        let filter = |name: &str, mac: u8, rule: u8| {
            format!(
                "filter {name} {{ vnic mac 02:00:00:00:00:0{mac};\n\
                   ruleset r{rule} {{ rule {rule} at 1 inout protocol tcp from any to any port 80 accept; }} }}\n"
            )
        };
        let (vm, other) = (filter("vm", 1, 1), filter("other", 2, 2));
        let text = if vm_first { vm + &other } else { other + &vm };
        parse_policy(&text).unwrap()
    };
    let seg = |seq, ack, flags, out: bool| {
        let (sport, dport) = if out { (40_000, 80) } else { (80, 40_000) };
        TcpSeg { sport, dport, seq, ack, flags, window: 65_535, mss: None, payload: &[] }
    };
    let t0 = 1_700_000_000_000_000_000u64;
    let mut frames = vec![
        tcp_v4(&vm, &far, 1, &seg(100, 0, SYN, true)),
        tcp_v4(&far, &vm, 1, &seg(900, 101, SYN | ACK, false)),
    ];
    for n in 0..200u16 {
        frames.push(tcp_v4(&vm, &far, n, &seg(101, 901, ACK, true)));
    }
    let mut w =
        PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos).unwrap();
    for (n, bytes) in frames.iter().enumerate() {
        w.write_frame(t0 + n as u64 * 1000, bytes, bytes.len() as u32).unwrap();
    }
    let cap = Capture::from_bytes(w.into_inner(), "moved.pcap").unwrap();
    // The same two filters in the other order: the vNIC's filter is now the second one.
    let switches = [Switch { at: SwitchPoint::Frame(77), policy: text(false), label: "moved".into() }];
    let run = |workers: usize, fast: bool| {
        let mut engine = Engine::new(&text(true)).unwrap();
        engine.set_fast_paths(fast);
        let mut lines = Vec::new();
        replay_chunked(&cap, &mut engine, &switches, workers, true, 5, |ev| {
            if let Event::Decision { decision: d, filter } = ev {
                lines.push(decision_line(d, filter));
            }
        })
        .unwrap();
        lines
    };
    let reference = run(1, false);
    // Decided by filter `vm` throughout (by its rule 1), first as the first filter, then as the second.
    assert!(reference.iter().all(|l| l.contains(" vm ")), "{reference:?}");
    assert_eq!(reference.len(), frames.len());
    for (workers, fast) in [(1, true), (2, true)] {
        assert_eq!(run(workers, fast), reference, "{workers} workers, fast paths {fast}");
    }
}
