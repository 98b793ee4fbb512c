//! Manifests the loader must refuse with a reason, never a panic: arbitrary text, and valid manifests
//! cut, spliced and sprinkled with YAML punctuation.

use netpol::Cluster;
use proptest::prelude::*;

/// A valid manifest stream (namespaces, pods with named ports, the usual policy shapes).
fn manifest() -> String {
    netpol::synth::cluster_yaml(2, 3, 6)
}

/// Loads `text` and, when it loads, compiles it: either way without panicking; a refusal names where.
fn load(text: &str) -> Result<(), String> {
    let mut c = Cluster::new();
    match c.load_str("fuzz.yaml", text) {
        Ok(()) => {
            let _ = netpol::compile(&c, "c");
            Ok(())
        }
        Err(e) => {
            let msg = e.to_string();
            if msg.trim().is_empty() {
                return Err("a refusal without a message".into());
            }
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_text_is_refused_or_loaded(text in "\\PC{0,400}") {
        prop_assert_eq!(load(&text), Ok(()));
    }

    #[test]
    fn damaged_manifests_are_refused_or_loaded(
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), 0..40usize, "[-:{}\\[\\],&*!|>'\"#%@` \\n\\t0-9a-z]{0,6}"), 1..6),
    ) {
        let mut text = manifest();
        for (at, len, insert) in &cuts {
            // Cut `len` bytes at a random char boundary and put `insert` there.
            let mut i = at.index(text.len().max(1));
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let mut j = (i + len).min(text.len());
            while !text.is_char_boundary(j) {
                j -= 1;
            }
            text.replace_range(i..j, insert);
        }
        prop_assert_eq!(load(&text), Ok(()));
    }
}
