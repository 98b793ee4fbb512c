//! The Open vSwitch conntrack vectors: per-frame new / established / related / invalid outcomes, read
//! from `expected.yaml`, through a filter guarding the side that may open connections ("p1 may create,
//! p2 only looks up").

use std::path::PathBuf;

use engine::replay::{replay, Event};
use engine::{ConnState, Engine, Verdict};
use pktio::Capture;
use rules::parse_policy;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/conntrack/ovs"))
}

/// The `per_packet` list of one test in expected.yaml (a small reader for this file's layout).
fn expected(test: &str) -> Vec<String> {
    let yaml = std::fs::read_to_string(dir().join("expected.yaml")).unwrap();
    let mut lines = yaml.lines().skip_while(|l| l.trim_end() != format!("  {test}:"));
    lines.next().unwrap_or_else(|| panic!("{test} not in expected.yaml"));
    let mut out = Vec::new();
    let mut in_list = false;
    for l in lines {
        if l.starts_with("  ") && !l.starts_with("   ") {
            break; // next test
        }
        let t = l.trim();
        if t == "per_packet:" {
            in_list = true;
        } else if in_list {
            match t.strip_prefix("- ") {
                Some(v) => out.push(v.to_string()),
                None => break,
            }
        }
    }
    out
}

/// (verdict, state) per frame from the filter guarding `p1`.
fn run(pcap: &str, p1: &str) -> Vec<(Verdict, ConnState)> {
    let policy = parse_policy(&format!(
        "filter p1 {{\n  vnic {p1};\n  ruleset mainrs {{\n    rule 1 at 1 out protocol any from any to any accept;\n  }}\n}}\n"
    ))
    .unwrap();
    let mut engine = Engine::new(&policy).unwrap();
    let cap = Capture::open(&dir().join(pcap)).unwrap();
    let mut got = Vec::new();
    replay(&cap, &mut engine, &[], 1, true, |ev| {
        if let Event::Decision { decision, .. } = ev {
            assert_eq!(decision.frame as usize, got.len() + 1, "one decision per frame, in order");
            got.push((decision.verdict, decision.state));
        }
    })
    .unwrap();
    got
}

fn check(test: &str, pcap: &str, p1: &str) {
    let want = expected(test);
    let got = run(pcap, p1);
    assert_eq!(got.len(), want.len(), "{test}: frames");
    for (i, (w, (verdict, state))) in want.iter().zip(&got).enumerate() {
        let ok = match w.as_str() {
            "new" => *verdict == Verdict::Pass && *state == ConnState::New,
            "est" | "est_reply" => *verdict == Verdict::Pass && *state == ConnState::Established,
            "related_reply" => *verdict == Verdict::Pass && *state == ConnState::Related,
            "INVALID" => *verdict == Verdict::Drop && *state == ConnState::Invalid,
            // p2 may not create: dropped, and certainly not related or established.
            "INVALID_or_new_not_related" => {
                *verdict == Verdict::Drop && matches!(state, ConnState::New | ConnState::Invalid)
            }
            other => panic!("{test}: unknown expectation {other}"),
        };
        assert!(ok, "{test} frame {}: expected {w}, got {verdict:?} {state:?}", i + 1);
    }
}

#[test]
fn tcp_port_reuse_opens_a_second_connection_after_time_wait() {
    check("tcp-port-reuse", "tcp-port-reuse.pcap", "mac 50:54:00:00:00:09");
}

#[test]
fn tcp_seq_check_flags_exactly_the_out_of_window_segment() {
    check("tcp-seq-check", "tcp-seq-check.pcap", "mac 50:54:00:00:00:09");
}

#[test]
fn tcp_pick_up_mid_stream_has_no_invalid_segment() {
    let got = run("tcp-pick-up.pcap", "mac 50:54:00:00:00:0a");
    assert_eq!(got.len(), 11);
    assert_eq!(got[0], (Verdict::Pass, ConnState::New));
    assert!(got[1..].iter().all(|d| *d == (Verdict::Pass, ConnState::Established)), "{got:?}");
}

#[test]
fn icmp_error_is_related_only_to_a_real_flow() {
    check("icmp-related", "icmp-related.pcap", "ip 172.16.0.1 ip 172.16.0.3");
}
