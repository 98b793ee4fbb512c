//! Shared helpers for the criterion benchmarks in `benches/benches/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The capture of `../shared/anchors/gen_pcap.py` with `frames` 64-byte TCP frames over `flows`
/// connections, generated once per machine under `$DFW_BENCH_DIR` (default `/tmp/dfw-bench`).
pub fn gen_capture(frames: usize, flows: usize) -> PathBuf {
    let dir =
        std::env::var_os("DFW_BENCH_DIR").map_or_else(|| PathBuf::from("/tmp/dfw-bench"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("create the bench directory");
    let path = dir.join(format!("gen_pcap_{frames}_{flows}.pcap"));
    if !path.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/anchors/gen_pcap.py");
        let tmp = path.with_extension("partial");
        let st = Command::new("python3")
            .arg(&script)
            .arg(&tmp)
            .args([frames.to_string(), flows.to_string()])
            .status()
            .expect("run gen_pcap.py");
        assert!(st.success(), "gen_pcap.py failed");
        std::fs::rename(&tmp, &path).expect("move the capture in place");
    }
    path
}

/// A policy of `rules` rules for the gen_pcap capture: one filter whose vNIC MAC (02:00:00:00:00:01)
/// is the source of every frame, `rules - 1` rules for other networks that the traffic must be checked
/// against, and a last rule that admits it.
pub fn gen_policy_text(rules: usize) -> String {
    let mut s = String::from("filter bench {\n  vnic mac 02:00:00:00:00:01;\n  ruleset mainrs {\n");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..rules.saturating_sub(1) {
        let (a, b, c, d) = (next() % 256, next() % 256, next() % 16, next() % 256);
        let port = [22, 25, 53, 110, 143, 3306, 5432, 6379, 8443, 9000][(next() % 10) as usize];
        s.push_str(&format!(
            "    rule {} at {} inout protocol tcp from ip 192.{a}.{b}.0/24 to ip 172.{}.{d}.0/24 port {port} accept;\n",
            1000 + i,
            i + 1,
            16 + c
        ));
    }
    s.push_str(&format!(
        "    rule 9 at {} out protocol tcp from ip 10.0.0.0/8 to ip 10.1.0.0/16 accept;\n",
        rules.max(1)
    ));
    s.push_str("  }\n}\n");
    s
}
