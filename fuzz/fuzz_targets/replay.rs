//! Any sequence of frames through a stateful policy: replay never panics, and one worker with the
//! fast paths, one without them, and two workers walking the capture in chunks of three frames give
//! the same decisions, log lines, replies, counters and connection counts, and so does the live
//! dataplane's way of deciding a frame at a time (`Engine::process`).
//!
//! The input is a list of records `[mode, a, b, len, bytes...]`. `mode` picks the time step (bits
//! 0–1: a microsecond, a millisecond, a second or ten minutes, so every timer runs out somewhere) and
//! how the frame is made (bits 2–4):
//! - raw: an Ethernet header between two of the hosts, then the fuzzer's bytes (ethertype onwards);
//! - IPv4: a valid IPv4 header of protocol `a`, then the fuzzer's bytes as the transport part;
//! - TCP: a checksummed segment of one of four conversations of the first vNIC, flags `a`, sequence
//!   and acknowledgement numbers near (or, by `b`, far from) what each end sent so far, the bytes as
//!   payload;
//! - UDP, ICMP echo, IPv4 fragment, IPv6 TCP: built from `a`, `b` and the bytes.
//!
//! `a` and `b` also choose the hosts, so frames cross one vNIC, the other, or both.
//!
//! The first byte, when the input has an odd length, places a policy switch before a frame: to a
//! policy that drops what the first allowed (UDP, web) and logs differently, so revalidation tears
//! connections down on one vNIC and keeps them on the other.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use engine::filter::{FrameRef, Sink};
use engine::log::LogRecord;
use engine::replay::{replay_chunked, Event, Switch, SwitchPoint};
use engine::Engine;
use libfuzzer_sys::fuzz_target;
use pktio::build::{icmp_echo_v4, ipv4_fragment, raw_v4, tcp_v4, tcp_v6, udp_v4, Host, Host6, TcpSeg};
use pktio::capture::{PcapWriter, TsResolution};
use pktio::{Capture, LinkType};

const POLICY: &str = "\
ruleset mainrs {
  rule 1 at 1 out protocol tcp from any to any port 80 accept with log;
  rule 2 at 2 inout protocol tcp strict from any to any port 22 accept;
  rule 3 at 3 inout protocol udp from any to any port 53 reject with log;
  rule 4 at 4 inout protocol udp from any to any accept;
  rule 5 at 5 inout protocol icmp from any to any accept;
  rule 6 at 6 inout protocol ipv6-icmp from any to any accept;
  rule 7 at 7 in protocol tcp from any to any port 25 reject;
  rule 8 at 8 inout protocol 47 from any to any punt;
  rule 9 at 9 inout protocol any from any to any drop with log;
}
ruleset mainrs_L2 {
  rule 1 at 1 inout ethertype 0x86dd stateless from any to any drop;
  rule 2 at 2 inout ethertype any stateless from any to any accept;
}
filter a {
  vnic mac 02:00:00:00:00:01;
  maxConnections 6;
  timeout tcp.established 40;
  timeout tcp.opening 5;
  timeout udp.first 3;
}
filter b {
  vnic ip 10.0.0.2;
  policyChange keep;
}
";

fn policy() -> &'static rules::Policy {
    static P: OnceLock<rules::Policy> = OnceLock::new();
    P.get_or_init(|| rules::parse_policy(POLICY).expect("the fuzz policy parses"))
}

/// The policy switched to: web no longer allowed nor logged, UDP dropped, SSH logged.
fn switched() -> &'static rules::Policy {
    static P: OnceLock<rules::Policy> = OnceLock::new();
    P.get_or_init(|| {
        let mut text = POLICY.to_string();
        for (from, to) in [
            ("port 80 accept with log", "port 80 drop"),
            ("protocol udp from any to any accept", "protocol udp from any to any drop"),
            ("port 22 accept", "port 22 accept with log"),
        ] {
            // Each change must land, or the switch would change nothing.
            assert_eq!(text.matches(from).count(), 1, "the fuzz policy has '{from}' once");
            text = text.replace(from, to);
        }
        rules::parse_policy(&text).expect("the switched fuzz policy parses")
    })
}

/// The hosts: the two vNICs (first two) and two outside servers.
fn host(i: u8) -> Host {
    let i = i % 4;
    Host { mac: [2, 0, 0, 0, if i < 2 { 0 } else { 9 }, i + 1], ip: Ipv4Addr::new(10, 0, 0, i + 1) }
}

fn host6(i: u8) -> Host6 {
    let h = host(i);
    Host6 { mac: h.mac, ip: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i % 4) + 1) }
}

/// The capture the records describe.
fn capture(data: &[u8]) -> Capture {
    let mut w = PcapWriter::with_resolution(Vec::new(), LinkType::Ethernet, 65_535, TsResolution::Nanos)
        .expect("a pcap header");
    // Per TCP conversation of the first vNIC: the next sequence number of the vNIC and of the server.
    let mut next = [(1_000u32, 900_000u32), (4_000_000_000, 7), (u32::MAX - 500, 123_456), (0, 0)];
    let mut now = 1_700_000_000_000_000_000u64;
    let mut rest = data;
    let mut n = 0u16;
    while let [mode, a, b, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        n = n.wrapping_add(1);
        now += [1_000, 1_000_000, 1_000_000_000, 600_000_000_000][usize::from(mode & 3)];
        let (src, dst) = (host(*a >> 4), host(*a >> 6 ^ 1));
        let frame = match mode >> 2 & 7 {
            0 => {
                let mut f = Vec::with_capacity(12 + bytes.len());
                f.extend_from_slice(&dst.mac);
                f.extend_from_slice(&src.mac);
                f.extend_from_slice(bytes);
                f
            }
            1 => raw_v4(&src, &dst, n, *a, bytes),
            2 | 3 => {
                let flow = usize::from(*b & 3);
                let server = host(2 + (*b >> 2 & 1));
                let from_server = *b & 0x10 != 0;
                let (mine, theirs) =
                    if from_server { (next[flow].1, next[flow].0) } else { (next[flow].0, next[flow].1) };
                // Mostly on the expected numbers; sometimes a little off, sometimes anywhere.
                let off = |x: u8| match x >> 6 {
                    0 | 1 => 0u32,
                    2 => u32::from(x & 0x3f).wrapping_sub(32),
                    _ => u32::from(x) << 24,
                };
                let seg = TcpSeg {
                    sport: if from_server { [80, 22, 25, 443][flow] } else { 40_000 + flow as u16 },
                    dport: if from_server { 40_000 + flow as u16 } else { [80, 22, 25, 443][flow] },
                    seq: mine.wrapping_add(off(*b)),
                    ack: theirs.wrapping_add(off(b.rotate_left(2))),
                    flags: *a,
                    window: if *b & 0x20 != 0 { 0 } else { 65_535 },
                    mss: None,
                    payload: bytes,
                };
                let vm = host(0);
                let f =
                    if from_server { tcp_v4(&server, &vm, n, &seg) } else { tcp_v4(&vm, &server, n, &seg) };
                if off(*b) == 0 {
                    let sent = mine.wrapping_add(bytes.len() as u32 + u32::from(*a & 0x03 != 0));
                    if from_server {
                        next[flow].1 = sent;
                    } else {
                        next[flow].0 = sent;
                    }
                }
                f
            }
            4 => udp_v4(&src, &dst, n, 1000 + u16::from(*b & 3), [53, 99][usize::from(*b >> 7)], bytes),
            5 => icmp_echo_v4(&src, &dst, n, *b & 1 != 0, u16::from(*b >> 1), n),
            6 => ipv4_fragment(
                &src,
                &dst,
                [17, 6, 1, 47][usize::from(*b & 3)],
                u16::from(*b >> 4),
                u16::from(*b >> 2 & 3) * 8,
                *b & 0x80 != 0,
                bytes,
            ),
            _ => {
                let seg = TcpSeg {
                    sport: 40_000,
                    dport: 80,
                    seq: 1,
                    ack: 1,
                    flags: *b,
                    window: 512,
                    mss: None,
                    payload: bytes,
                };
                tcp_v6(&host6(*a >> 4), &host6(*a >> 6 ^ 1), &seg)
            }
        };
        let wire = frame.len() as u32 + u32::from(mode >> 5);
        w.write_frame(now, &frame, wire).expect("writes into memory");
    }
    let bytes = w.into_inner();
    // To look at a failing input with `dfw replay`: the capture and the policy as files.
    if let Some(dir) = std::env::var_os("DFW_FUZZ_DUMP") {
        let dir = std::path::Path::new(&dir);
        let _ = std::fs::write(dir.join("fuzz.pcap"), &bytes);
        let _ = std::fs::write(dir.join("fuzz.dfw"), POLICY);
        let _ = std::fs::write(dir.join("fuzz-switched.dfw"), switched().to_string());
    }
    Capture::from_bytes(bytes, "fuzz.pcap").expect("a pcap the writer made reads back")
}

/// Everything a replay reports, as text: decisions, switches, log lines, replies (TERM lines apart:
/// several workers deliver them at the same frames, but may order the TERM lines of one frame
/// differently from decisions), and the totals.
type Transcript = (Vec<String>, Vec<String>, Result<engine::replay::ReplaySummary, String>);

/// One decision as text: frame, filter, direction, verdict, state, reason and rule.
fn decision_line(d: &engine::Decision, filter: &engine::FilterConfig) -> String {
    let (dir, verdict, state, reason) =
        (d.dir.as_str(), d.verdict.as_str(), d.state.as_str(), d.reason.as_str());
    format!("{} {} {dir} {verdict} {state} {reason} {:?}", d.frame, filter.name, d.rule)
}

fn run(cap: &Capture, switches: &[Switch], workers: usize, fast: bool) -> Transcript {
    let mut engine = Engine::new(policy()).expect("the fuzz policy loads");
    engine.set_fast_paths(fast);
    let (mut lines, mut terms) = (Vec::new(), Vec::new());
    let summary = replay_chunked(cap, &mut engine, switches, workers, true, 3, |ev| match ev {
        Event::Decision { decision: d, filter } => lines.push(decision_line(d, filter)),
        Event::Log(l @ LogRecord::Term { .. }) => terms.push(format!("{l:?}")),
        other => lines.push(format!("{other:?}")),
    });
    // How many workers ran, and whether they ran again on one, are all a summary may differ in.
    let summary = summary
        .map(|s| engine::replay::ReplaySummary { workers: 0, one_worker_from: None, ..s })
        .map_err(|e| e.to_string());
    (lines, terms, summary)
}

/// The frame-at-a-time path's events, gathered per step (a clock move, a frame) and handed on in the
/// order a replay reports them: decisions, then log lines, then replies; what a clock move reclaimed
/// sorted as a replay sorts it (by filter and frame, log lines by filter and flow), since the live
/// dataplane promises no order among those.
#[derive(Default)]
struct Live {
    decisions: Vec<((usize, u64), String)>,
    logs: Vec<LogRecord>,
    replies: Vec<String>,
    lines: Vec<String>,
    terms: Vec<String>,
}

impl Live {
    fn step(&mut self, reclaimed: bool) {
        if reclaimed {
            self.decisions.sort_by_key(|(k, _)| *k);
            self.logs.sort_by_key(|l| match l {
                LogRecord::Term { filter_hash, flow, .. } | LogRecord::Packet { filter_hash, flow, .. } => {
                    (*filter_hash, *flow)
                }
            });
        }
        self.lines.extend(self.decisions.drain(..).map(|(_, l)| l));
        for rec in self.logs.drain(..) {
            match rec {
                LogRecord::Term { .. } => self.terms.push(format!("{rec:?}")),
                other => self.lines.push(format!("{:?}", Event::Log(&other))),
            }
        }
        self.lines.append(&mut self.replies);
    }
}

impl Sink for Live {
    fn decision(&mut self, d: &engine::Decision, filter: &engine::FilterConfig) {
        let line = decision_line(d, filter);
        self.decisions.push(((d.filter, d.frame), line));
    }
    fn log(&mut self, rec: LogRecord) {
        self.logs.push(rec);
    }
    fn reply(&mut self, frame: u64, bytes: Vec<u8>) {
        self.replies.push(format!("{:?}", Event::Reply { frame, bytes: &bytes }));
    }
}

/// The live dataplane's way: each frame parsed and handed to `Engine::process`, switches loaded before
/// their frame, the packet clock moved before every frame (parsed or not), and what has expired by the
/// last frame reclaimed at the end, as a replay does.
fn live(cap: &Capture, switches: &[Switch]) -> (Vec<String>, Vec<String>) {
    let mut engine = Engine::new(policy()).expect("the fuzz policy loads");
    let mut out = Live::default();
    let mut last_ts = 0;
    for (n, frame) in cap.frames().enumerate() {
        let Ok(frame) = frame else { break };
        let number = n as u64 + 1;
        last_ts = frame.ts_nanos;
        for sw in switches.iter().filter(|sw| matches!(sw.at, SwitchPoint::Frame(f) if f == number)) {
            let generation = engine.load(&sw.policy, frame.ts_nanos).expect("the switched policy loads");
            out.lines.push(format!("{:?}", Event::Switched { frame: number, generation, label: &sw.label }));
        }
        let snap = engine.snapshot();
        engine.worker().tick(&snap, frame.ts_nanos, &mut out);
        out.step(true);
        match pktio::parse_frame(frame.link, frame.data, frame.wire_len) {
            Ok(pkt) => {
                let f = FrameRef { number, link: frame.link, bytes: frame.data, now_ns: frame.ts_nanos };
                engine.process(&pkt, f, &mut out);
                out.step(false);
            }
            Err(e) => {
                let reason = engine::Reason::of_parse_error(&e);
                out.lines.push(format!("{:?}", Event::Malformed { frame: number, reason }));
            }
        }
    }
    let snap = engine.snapshot();
    engine.worker().finish(&snap, last_ts, &mut out);
    out.step(true);
    (out.lines, out.terms)
}

fuzz_target!(|data: &[u8]| {
    let (switches, records) = match data.split_first() {
        Some((&at, rest)) if data.len() % 2 == 1 => (
            vec![Switch {
                at: SwitchPoint::Frame(u64::from(at) % 16 + 1),
                policy: switched().clone(),
                label: "switched".into(),
            }],
            rest,
        ),
        _ => (Vec::new(), data),
    };
    let cap = capture(records);
    let full = run(&cap, &switches, 1, false);
    assert_eq!(run(&cap, &switches, 1, true), full, "the fast paths agree with the full path");
    let (lines, terms) = live(&cap, &switches);
    assert_eq!((&lines, &terms), (&full.0, &full.1), "frame at a time agrees with the replay");
    // Even when a table fills (a worker's part of a limit refusing, the replay runs again on one
    // worker from there; docs/engine.md).
    assert_eq!(run(&cap, &switches, 2, true), full, "two workers agree with one");
});
