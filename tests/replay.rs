//! End-to-end: `dfw replay` on the seed lab and on broken inputs, through the real binary.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{dfw, scratch};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn lab(file: &str) -> String {
    repo().join("examples/seed-lab").join(file).display().to_string()
}

fn verdict_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Client port of each TCP frame of the capture, by 1-based frame number (read with pktio, not dfw).
fn client_ports(capture: &str) -> BTreeMap<u64, u16> {
    let cap = pktio::Capture::open(Path::new(capture)).unwrap();
    let mut out = BTreeMap::new();
    for (i, f) in cap.frames().enumerate() {
        let f = f.unwrap();
        let pkt = pktio::parse_frame(f.link, f.data, f.wire_len).unwrap();
        if let Some((s, d)) = pkt.ports() {
            out.insert(i as u64 + 1, if d == 80 { s } else { d });
        }
    }
    out
}

const NGINX: &str = "nic-5739119-eth33-vmware-sfw.1";
const BUSYBOX: &str = "nic-5739119-eth35-vmware-sfw.1";

#[test]
fn committed_seed_capture_is_what_the_generator_makes() {
    let dir = scratch("gen");
    let out = dir.join("seed-lab.pcap");
    let o = dfw(&["gen", "seed-lab", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(lab("seed-lab.pcap")).unwrap());
}

#[test]
fn seed_lab_dropped_then_accepted_then_dropped_again() {
    let dir = scratch("phases");
    let verdicts = dir.join("verdicts.jsonl");
    let o = dfw(&[
        "replay",
        "--policy",
        &lab("v1-policy.dfw"),
        "--switch",
        &format!("2018-12-17T09:30:34Z={}", lab("v2-policy.dfw")),
        "--switch",
        &format!("2018-12-17T09:35:00Z={}", lab("v3-policy.dfw")),
        "--verdicts",
        verdicts.to_str().unwrap(),
        "--json",
        &lab("seed-lab.pcap"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines = verdict_lines(&verdicts);
    let ports = client_ports(&lab("seed-lab.pcap"));

    // Per connection (client port), what nginx's filter decided on frames going in to nginx.
    let mut nginx_in: BTreeMap<u16, Vec<(String, String, Value)>> = BTreeMap::new();
    for l in &lines {
        let frame = l["frame"].as_u64().unwrap();
        if l["filter"] == NGINX && l["dir"] == "in" {
            if let Some(port) = ports.get(&frame) {
                nginx_in.entry(*port).or_default().push((
                    l["verdict"].as_str().unwrap().into(),
                    l["state"].as_str().unwrap().into(),
                    l["rule"].clone(),
                ));
            }
        }
        // busybox's own filter lets everything out: rule 2 (inout any→any accept) or its connection.
        if l["filter"] == BUSYBOX {
            assert_eq!(l["verdict"], "pass", "{l}");
        }
    }
    let drop6269 = ("drop".to_string(), "new".to_string(), Value::from(6269));
    // Phase 1: source set empty → both SYNs dropped by rule 6269.
    assert_eq!(nginx_in[&40001], vec![drop6269.clone(), drop6269.clone()]);
    // Phase 2: busybox in the source set → the SYN is accepted by 6266, the rest rides the connection.
    let phase2 = &nginx_in[&40002];
    assert_eq!(phase2[0], ("pass".into(), "new".into(), Value::from(6266)));
    assert_eq!(phase2.len(), 5);
    assert!(
        phase2[1..].iter().all(|d| *d == ("pass".into(), "established".into(), Value::from(6266))),
        "{phase2:?}"
    );
    // Replies of the accepted connection pass both filters as established.
    let replies: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            ports.get(&l["frame"].as_u64().unwrap()) == Some(&40002)
                && l["filter"] == NGINX
                && l["dir"] == "out"
        })
        .collect();
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|l| l["verdict"] == "pass" && l["state"] == "established"));
    // Phase 3: busybox relabelled → dropped again.
    assert_eq!(nginx_in[&40003], vec![drop6269.clone(), drop6269]);

    // The ARP exchange is decided by the stateless L2 rule.
    let arp: Vec<&Value> = lines.iter().filter(|l| l["frame"] == 1).collect();
    assert_eq!(arp.len(), 3, "broadcast ARP crosses busybox out and both nginx filters in");
    assert!(arp.iter().all(|l| l["rule"] == 1 && l["ruleset"] == "mainrs_L2" && l["state"] == "none"));

    // The JSON summary agrees.
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["frames"], 14);
    assert_eq!(s["dropped"], 4);
    assert_eq!(s["passed"], 10);
    assert_eq!(s["switches"], 2);
    assert_eq!(s["drop_reasons"]["match"], 4);
    let nginx = s["filters"].as_array().unwrap().iter().find(|f| f["name"] == NGINX).unwrap();
    let rule = |id: u64| nginx["rules"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(rule(6269)["hits"], 4);
    assert_eq!(rule(6266)["sessions"], 1);
    assert_eq!(nginx["in"]["drop"], 4);
}

#[test]
fn frame_number_switches_give_the_same_verdicts_as_time_switches() {
    let dir = scratch("framesw");
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let run = |sw1: &str, sw2: &str, out: &Path| {
        let o = dfw(&[
            "replay",
            "--policy",
            &lab("v1-policy.dfw"),
            "--switch",
            &format!("{sw1}={}", lab("v2-policy.dfw")),
            "--switch",
            &format!("{sw2}={}", lab("v3-policy.dfw")),
            "--verdicts",
            out.to_str().unwrap(),
            &lab("seed-lab.pcap"),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run("2018-12-17T09:30:34Z", "2018-12-17T09:35:00Z", &a);
    run("5", "13", &b);
    assert_eq!(std::fs::read_to_string(&a).unwrap(), std::fs::read_to_string(&b).unwrap());
}

/// Runs dfw expecting failure; returns its stderr, checked to be one line without a panic.
fn one_line_error(args: &[&str]) -> String {
    let o = dfw(args);
    assert!(!o.status.success(), "expected failure for {args:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    err
}

#[test]
fn truncated_capture_is_a_one_line_error_naming_the_file() {
    let dir = scratch("trunc");
    let cut = dir.join("cut.pcap");
    let full = std::fs::read(lab("seed-lab.pcap")).unwrap();
    std::fs::write(&cut, &full[..full.len() - 10]).unwrap();
    let err = one_line_error(&["replay", "--policy", &lab("v1-policy.dfw"), cut.to_str().unwrap()]);
    assert!(err.contains("cut.pcap") && err.contains("truncated"), "{err}");
    // Parallel workers report the same damage.
    let err = one_line_error(&[
        "replay",
        "--workers",
        "2",
        "--policy",
        &lab("v1-policy.dfw"),
        cut.to_str().unwrap(),
    ]);
    assert!(err.contains("cut.pcap") && err.contains("truncated"), "{err}");
}

#[test]
fn unsupported_link_type_is_a_one_line_error_naming_the_file() {
    let dir = scratch("link");
    let wifi = dir.join("wifi.pcap");
    let mut bytes = std::fs::read(lab("seed-lab.pcap")).unwrap();
    bytes[20..24].copy_from_slice(&105u32.to_le_bytes()); // LINKTYPE_IEEE802_11
    std::fs::write(&wifi, &bytes).unwrap();
    let err = one_line_error(&["replay", "--policy", &lab("v1-policy.dfw"), wifi.to_str().unwrap()]);
    assert!(err.contains("wifi.pcap") && err.contains("link type 105"), "{err}");
}

#[test]
fn policy_typo_is_a_one_line_error_with_line_and_column() {
    let dir = scratch("typo");
    let bad = dir.join("typo.dfw");
    let text =
        std::fs::read_to_string(lab("v1-policy.dfw")).unwrap().replacen("to any accept;", "to any acept;", 1);
    std::fs::write(&bad, &text).unwrap();
    let (line, col) =
        text.lines().enumerate().find_map(|(i, l)| l.find("acept").map(|c| (i + 1, c + 1))).unwrap();
    let err = one_line_error(&["replay", "--policy", bad.to_str().unwrap(), &lab("seed-lab.pcap")]);
    assert!(err.contains(&format!("typo.dfw:{line}:{col}: error: unexpected 'acept'")), "{err}");
    assert!(err.contains("did you mean 'accept'?"), "{err}");
    // `dfw check` reports the same problem and exits 1.
    let o = dfw(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("typo.dfw:{line}:{col}:")));
}

#[test]
fn missing_files_are_one_line_errors() {
    let err = one_line_error(&["replay", "--policy", "/nonexistent/p.dfw", &lab("seed-lab.pcap")]);
    assert!(err.contains("/nonexistent/p.dfw"), "{err}");
    let err = one_line_error(&["replay", "--policy", &lab("v1-policy.dfw"), "/nonexistent/c.pcap"]);
    assert!(err.contains("/nonexistent/c.pcap"), "{err}");
}

/// `dfw bench replay`: every worker count and tcpdump timed in each round, the same results on each,
/// and ratios taken within rounds.
#[test]
fn bench_replay_times_worker_counts_beside_tcpdump_round_by_round() {
    let (policy, capture) = (lab("v1-policy.dfw"), lab("seed-lab.pcap"));
    let o =
        dfw(&["bench", "replay", "--policy", &policy, "--rounds", "3", "--tcpdump-filter", "tcp", &capture]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let plain = dfw(&["replay", "--policy", &policy, "--json", &capture]);
    let plain: Value = serde_json::from_slice(&plain.stdout).unwrap();
    for k in ["frames", "passed", "dropped"] {
        assert_eq!(v[k], plain[k], "{k}");
    }
    assert_eq!(v["rounds"], 3);
    let fps = |x: &Value| -> Vec<f64> {
        x["frames_per_sec"].as_array().unwrap().iter().map(|f| f.as_f64().unwrap()).collect()
    };
    let ratios = |x: &Value| -> Vec<f64> {
        x["ratios"].as_array().unwrap().iter().map(|f| f.as_f64().unwrap()).collect()
    };
    // Rates are printed whole and ratios to three decimals.
    let close = |a: f64, b: f64| (a - b).abs() <= 0.001 + 0.01 * b;
    let dfw_runs: Vec<Vec<f64>> = v["dfw"].as_array().unwrap().iter().map(fps).collect();
    assert_eq!(v["dfw"][0]["workers"], 1);
    assert_eq!(v["dfw"][1]["workers"], 2);
    let tcpdump = fps(&v["tcpdump"]);
    for runs in dfw_runs.iter().chain([&tcpdump]) {
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|f| *f > 0.0), "{runs:?}");
    }
    // Each round's ratio is that round's rates divided, and the median is one of them.
    for (i, entry) in v["dfw_vs_tcpdump"].as_array().unwrap().iter().enumerate() {
        let r = ratios(entry);
        for ((ratio, d), t) in r.iter().zip(&dfw_runs[i]).zip(&tcpdump) {
            assert!(close(*ratio, d / t), "{entry}");
        }
        assert!(r.contains(&entry["ratio_median"].as_f64().unwrap()), "{entry}");
    }
    let two = &v["workers_vs_first"][0];
    assert_eq!((two["workers"].as_u64(), two["against_workers"].as_u64()), (Some(2), Some(1)));
    for ((ratio, two_w), one_w) in ratios(two).iter().zip(&dfw_runs[1]).zip(&dfw_runs[0]) {
        assert!(close(*ratio, two_w / one_w), "{two}");
    }
}

#[test]
fn bench_replay_pins_each_rounds_one_worker_replays_and_tcpdump_to_one_cpu_in_turn() {
    let (policy, capture) = (lab("v1-policy.dfw"), lab("seed-lab.pcap"));
    let o = dfw(&[
        "bench",
        "replay",
        "--policy",
        &policy,
        "--rounds",
        "4",
        "--tcpdump-filter",
        "tcp",
        "--pin",
        &capture,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let pinned = v["pinned"].as_array().expect("a pinned CPU per round");
    assert_eq!(pinned.len(), 4);
    let cpus: Vec<u64> = pinned.iter().map(|p| p["cpu"].as_u64().unwrap()).collect();
    for p in pinned {
        // The one-worker replay ran where it was put.
        assert_eq!(p["one_worker_ran_on"], p["cpu"], "{p}");
    }
    // The rounds take the CPUs in turn.
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(cpus[0], cpus[n.min(4) % 4], "{cpus:?}");
    if n >= 2 {
        assert_ne!(cpus[0], cpus[1], "{cpus:?}");
    }
    // Without `--pin` there is nothing of the sort.
    let o = dfw(&["bench", "replay", "--policy", &policy, "--rounds", "1", "--no-tcpdump", &capture]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["pinned"].is_null(), "{v}");
}

#[test]
fn bench_replay_refuses_bad_arguments_with_a_reason() {
    let (policy, capture) = (lab("v1-policy.dfw"), lab("seed-lab.pcap"));
    for (args, says) in [
        (vec!["--workers", "0"], "at least 1"),
        (vec!["--rounds", "0"], "at least 1"),
        (vec!["--tcpdump-filter", "tcp ((("], "tcpdump failed"),
    ] {
        let mut all = vec!["bench", "replay", "--policy", &policy];
        all.extend(args.iter().copied());
        all.push(&capture);
        let o = dfw(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
    let o = dfw(&["bench", "replay", "--policy", &policy, "--no-tcpdump", "/nonexistent.pcap"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nonexistent"));
    // A capture of no frame gives no rate.
    let dir = scratch("bench-empty");
    let empty = dir.join("empty.pcap");
    let header = pktio::capture::PcapWriter::new(Vec::new(), pktio::LinkType::Ethernet, 65_535).unwrap();
    std::fs::write(&empty, header.into_inner()).unwrap();
    let o = dfw(&["bench", "replay", "--policy", &policy, "--no-tcpdump", empty.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no frame"), "{err}");
}

/// A replay whose connection table fills gives the same verdicts on several workers as on one: the
/// workers' parts of the limit fill first, and the replay runs again on one worker from there (the
/// summary says from which frame).
#[test]
fn a_full_connection_table_gives_the_same_verdicts_on_any_number_of_workers() {
    use pktio::build::{udp_v4, Host};
    use pktio::capture::{PcapWriter, TsResolution};
    let dir = scratch("full-table");
    let policy = dir.join("limit.dfw");
    std::fs::write(
        &policy,
        "filter vm {\n  vnic mac 02:00:00:00:00:01;\n  maxConnections 5;\n  ruleset mainrs {\n    rule 1 at 1 out protocol udp from any to any accept;\n  }\n}\n",
    )
    .unwrap();
    let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: std::net::Ipv4Addr::new(10, 0, 0, 1) };
    let mut w =
        PcapWriter::with_resolution(Vec::new(), pktio::LinkType::Ethernet, 65_535, TsResolution::Nanos)
            .unwrap();
    for i in 0..40u8 {
        let far = Host { mac: [2, 0, 0, 0, 9, 9], ip: std::net::Ipv4Addr::new(192, 168, 7, i + 1) };
        let frame = udp_v4(&vm, &far, u16::from(i), 4000, 53, b"q");
        w.write_frame(1_700_000_000_000_000_000 + u64::from(i) * 1_000, &frame, frame.len() as u32).unwrap();
    }
    let capture = dir.join("flows.pcap");
    std::fs::write(&capture, w.into_inner()).unwrap();
    let run = |workers: &str| {
        let verdicts = dir.join(format!("verdicts-{workers}.jsonl"));
        let out = dfw(&[
            "replay",
            "--policy",
            policy.to_str().unwrap(),
            "--workers",
            workers,
            "--verdicts",
            verdicts.to_str().unwrap(),
            capture.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (verdict_lines(&verdicts), String::from_utf8(out.stdout).unwrap())
    };
    let (one, text1) = run("1");
    let limited = one.iter().filter(|v| v["reason"] == "state-limit").count();
    assert_eq!((one.len(), limited), (40, 35), "{one:?}");
    assert!(!text1.contains("ran again on one worker"), "{text1}");
    for workers in ["2", "3"] {
        let (many, text) = run(workers);
        assert_eq!(many, one, "{workers} workers");
        assert!(text.contains("ran again on one worker"), "{workers} workers: {text}");
    }
}
