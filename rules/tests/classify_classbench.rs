//! The classifier gives the first-match answer of every shared ClassBench trace (`*.firstmatch`), and
//! agrees with the linear scan on headers drawn inside the rules of the sets that ship without a trace.

use std::path::PathBuf;

use rules::classbench::{parse_firstmatch, parse_rules, parse_trace};
use rules::classify::synth;
use rules::{Classifier, CompiledRuleSet, Direction};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/classbench").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn classifier_matches_every_firstmatch_file() {
    for name in ["cutsplit_acl_1k", "cutsplit_fw_1k", "cutsplit_ipc_1k", "cutsplit_fw_10k"] {
        let set = parse_rules(&read(name), "mainrs").unwrap();
        let trace = parse_trace(&read(&format!("{name}_trace"))).unwrap();
        let answers = parse_firstmatch(&read(&format!("{name}_trace.firstmatch"))).unwrap();
        assert_eq!(trace.len(), answers.len(), "{name}");
        let c = Classifier::build(&set, &[]).unwrap();
        let mut checked = 0;
        for (i, (h, want)) in trace.iter().zip(&answers).enumerate() {
            let mut key = h.key();
            assert_eq!(c.first_match(&key), *want, "{name} header {i} {h:?}");
            // The rules are `inout`: the other direction decides the same.
            key.dir = Direction::Out;
            assert_eq!(c.first_match(&key), *want, "{name} header {i} out");
            checked += 1;
        }
        assert_eq!(checked, answers.len());
        assert!(answers.iter().all(Option::is_some), "{name}: every shipped header matches some rule");
    }
}

#[test]
fn classifier_agrees_with_linear_scan_on_the_10k_sets_without_traces() {
    for name in ["cutsplit_acl_10k", "cutsplit_ipc_10k"] {
        let set = parse_rules(&read(name), "mainrs").unwrap();
        let c = Classifier::build(&set, &[]).unwrap();
        let linear = CompiledRuleSet::compile(&set, &[]).unwrap();
        // One header inside every 5th rule's box (the linear scan is slow in a debug build).
        let trace = synth::classbench_trace(&set, 1, 7);
        let mut hits = 0;
        for (i, h) in trace.iter().enumerate().step_by(5) {
            let want = linear.first_match_l3(&h.key());
            assert_eq!(c.first_match(&h.key()), want, "{name} header {i} {h:?}");
            hits += usize::from(want.is_some());
        }
        assert!(hits > 1000, "{name}: headers drawn inside rules must match ({hits})");
    }
}
