//! The `dfw` commands of issue 7 that need no privileges: `trace`, `replay --write-passed/--write-dropped`,
//! and `run`'s configuration errors.

use std::path::PathBuf;
use std::process::Command;

const DFW: &str = env!("CARGO_BIN_EXE_dfw");

fn seed(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-lab").join(file)
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfw-cli-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d.join(name)
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

#[test]
fn replay_writes_passed_and_dropped_frames_to_pcaps() {
    let (passed, dropped) = (scratch("passed.pcap"), scratch("dropped.pcap"));
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
    let _ = std::fs::remove_dir_all(passed.parent().expect("dir"));
}

#[test]
fn run_reports_a_config_error_with_key_and_line() {
    let cfg = scratch("bad.toml");
    std::fs::write(&cfg, "policy = \"p.dfw\"\n\n[[port]]\nname = \"a\"\ntap = \"t0\"\nvnet = true\n")
        .expect("write");
    let out = Command::new(DFW).args(["run", "--config"]).arg(&cfg).output().expect("run dfw");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml:6:") && err.contains("vnet"), "{err}");
}
