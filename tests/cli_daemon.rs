//! The `dfw` commands of issue 7 that need no privileges: `trace`, `replay --write-passed/--write-dropped`,
//! and `run`'s configuration errors.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{scratch, DFW};

fn seed(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-lab").join(file)
}

#[test]
fn trace_names_the_deciding_rule_and_the_verdict() {
    let out = Command::new(DFW)
        .args(["trace", "--policy"])
        .arg(seed("v1-policy.dfw"))
        .args(["--src", "172.15.0.2", "--dst", "172.15.0.4", "--proto", "tcp", "--dport", "80", "--json"])
        .output()
        .expect("run dfw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["verdict"], "drop");
    assert_eq!(v["hops"][0]["dir"], "out");
    assert_eq!(v["hops"][1]["filter"], "nic-5739119-eth33-vmware-sfw.1");
    assert_eq!(v["hops"][1]["rule"]["id"], 6269);
    assert_eq!(v["hops"][1]["rule"]["position"], 2);
    let out = Command::new(DFW)
        .args(["trace", "--policy"])
        .arg(seed("v2-policy.dfw"))
        .args(["--src", "172.15.0.2", "--dst", "172.15.0.4", "--proto", "tcp"])
        .output()
        .expect("run dfw");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mainrs/6266 at 1") && text.ends_with("verdict: pass\n"), "{text}");
}

/// IPv6 vNICs, IPv6 address sets and `inet6` rules (the client also has an IPv4 address).
const V6_POLICY: &str = "
addrset web6 { ip 2001:db8:1::10, ip 2001:db8:1::11, }
addrset clients6 { ip 2001:db8:2::/64, }
ruleset mainrs {
  rule 100 at 1 in inet6 protocol tcp from addrset clients6 to addrset web6 port 443 accept;
  rule 101 at 2 in inet6 protocol ipv6-icmp icmptype 128 from any to addrset web6 accept;
  rule 103 at 4 out inet6 protocol any from any to any accept;
  rule 104 at 5 out inet protocol any from any to any drop;
  rule 2 at 6 inout protocol any from any to any drop;
}
filter web { vnic mac 02:00:00:00:00:10 ip 2001:db8:1::10; }
filter client { vnic mac 02:00:00:00:00:20 ip 2001:db8:2::5 ip 10.0.0.5; }
";

fn trace_v6(policy: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(DFW).args(["trace", "--policy"]).arg(policy).args(args).output().expect("run dfw")
}

#[test]
fn trace_follows_ipv6_tuples_through_inet6_rules() {
    let dir = scratch("trace-v6");
    let policy = dir.join("v6.dfw");
    std::fs::write(&policy, V6_POLICY).expect("write policy");
    let tuple = ["--src", "2001:db8:2::5", "--dst", "2001:db8:1::10"];

    // Pass: out of the client by the inet6 rule 103, in to web by rule 100 (both address sets).
    let out = trace_v6(&policy, &[&tuple[..], &["--proto", "tcp", "--dport", "443", "--json"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["packet"], "tcp [2001:db8:2::5]:49152 -> [2001:db8:1::10]:443 SYN");
    assert_eq!((&v["hops"][0]["filter"], &v["hops"][0]["dir"]), (&"client".into(), &"out".into()));
    assert_eq!(v["hops"][0]["rule"]["id"], 103);
    assert_eq!((&v["hops"][1]["filter"], &v["hops"][1]["rule"]["id"]), (&"web".into(), &100.into()));
    assert_eq!(v["verdict"], "pass");

    // Drop: another port falls to rule 2 in web's filter.
    let out = trace_v6(&policy, &[&tuple[..], &["--proto", "tcp", "--dport", "80", "--json"]].concat());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((&v["hops"][1]["verdict"], &v["hops"][1]["rule"]["id"]), (&"drop".into(), &2.into()));
    assert_eq!(v["verdict"], "drop");

    // `icmp` on IPv6 addresses is an ICMPv6 echo request, admitted by rule 101.
    let out = trace_v6(&policy, &[&tuple[..], &["--proto", "icmp"]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("trace ipv6-icmp 2001:db8:2::5 -> 2001:db8:1::10 echo-request\n"), "{text}");
    assert!(text.contains("mainrs/101 at 2") && text.ends_with("verdict: pass\n"), "{text}");

    // A v4 source with a v6 destination is refused with a clear message, and so is ICMPv6 over IPv4.
    let out = trace_v6(&policy, &["--src", "10.0.0.5", "--dst", "2001:db8:1::10", "--proto", "tcp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        err.contains("source 10.0.0.5 and destination 2001:db8:1::10 are not of the same IP version"),
        "{err}"
    );
    let out = trace_v6(&policy, &["--src", "10.0.0.5", "--dst", "10.0.0.9", "--proto", "ipv6-icmp"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ICMPv6"), "{out:?}");
}

#[test]
fn replay_writes_passed_and_dropped_frames_to_pcaps() {
    let dir = scratch("replay");
    let (passed, dropped) = (dir.join("passed.pcap"), dir.join("dropped.pcap"));
    let out = Command::new(DFW)
        .args(["replay", "--policy"])
        .arg(seed("v1-policy.dfw"))
        .arg("--switch")
        .arg(format!("2018-12-17T09:30:34Z={}", seed("v2-policy.dfw").display()))
        .arg("--switch")
        .arg(format!("2018-12-17T09:35:00Z={}", seed("v3-policy.dfw").display()))
        .arg("--write-passed")
        .arg(&passed)
        .arg("--write-dropped")
        .arg(&dropped)
        .arg(seed("seed-lab.pcap"))
        .output()
        .expect("run dfw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let count = |p: &PathBuf| pktio::Capture::open(p).expect("open pcap").frames().count();
    // The 09:25 and 09:36 SYNs and their retries are dropped; the rest of the 14 frames passed.
    assert_eq!(count(&dropped), 4);
    assert_eq!(count(&passed), 10);
    let cap = pktio::Capture::open(&dropped).expect("open");
    for f in cap.frames() {
        let f = f.expect("frame");
        let pkt = pktio::parse_frame(f.link, f.data, f.wire_len).expect("parse");
        assert_eq!(pkt.ports().map(|p| p.1), Some(80), "only SYNs to nginx are dropped");
    }
}

#[test]
fn run_reports_a_config_error_with_key_and_line() {
    let dir = scratch("bad-config");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "policy = \"p.dfw\"\n\n[[port]]\nname = \"a\"\ntap = \"t0\"\nvnet = true\n")
        .expect("write");
    let out = Command::new(DFW).args(["run", "--config"]).arg(&cfg).output().expect("run dfw");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml:6:") && err.contains("vnet"), "{err}");
}
