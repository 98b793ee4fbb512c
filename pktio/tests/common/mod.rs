//! What pktio's integration tests share: where the shared test data is, and its capture files.

#![allow(dead_code)] // each test binary uses a part of it

use std::path::{Path, PathBuf};

/// `../shared/testdata` seen from the crate.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata")
}

/// All `.pcap`/`.pcapng` files under `dir`, sorted.
pub fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap_or_else(|e| panic!("{}: {e}", d.display())).path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
