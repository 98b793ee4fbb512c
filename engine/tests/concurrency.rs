//! Policy swaps under load, and replay results that do not depend on the number of workers.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::filter::{FrameRef, Sink};
use engine::replay::{replay, Event};
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
    let swapper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) && swaps < 200_000 {
                let p = if swaps.is_multiple_of(2) { &v2 } else { &v1 };
                engine.load(p, 0).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let a = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
    let b = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 0, 0, 2) };
    let frame = udp_v4(&a, &b, 1, 1000, 2000, b"x");
    let pkt = parse_frame(LinkType::Ethernet, &frame, frame.len() as u32).unwrap();
    let (mut old, mut new) = (0, 0);
    for n in 0..20_000u64 {
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
        text.push_str(&format!("filter vnic-{i} {{ vnic ip {ip}; }}\n"));
    }
    parse_policy(&text).unwrap()
}

/// Records every event as text, in the order replay reports them.
fn transcript(path: &Path, workers: usize) -> (Vec<String>, engine::replay::ReplaySummary, Engine) {
    let mut engine = Engine::new(&policy_for(path)).unwrap();
    let cap = Capture::open(path).unwrap();
    let mut lines = Vec::new();
    let summary = replay(&cap, &mut engine, &[], workers, true, |ev| match ev {
        Event::Decision { decision: d, filter } => lines.push(format!(
            "{} {} {} {} {} {}",
            d.frame,
            filter.name,
            d.dir.as_str(),
            d.verdict.as_str(),
            d.state.as_str(),
            d.reason.as_str()
        )),
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
                if let engine::conntrack::ProtoState::Tcp(t) = entry.value.proto {
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
