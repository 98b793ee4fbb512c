//! Every shared ClassBench file imports, prints and re-parses to the same rules, and the linear
//! first-match scan agrees with every `*.firstmatch` answer file.

use std::path::PathBuf;

use rules::classbench::{parse_firstmatch, parse_rules, parse_trace};
use rules::{parse_policy, CompiledRuleSet};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/classbench").join(name)
}

const SETS: &[(&str, usize)] = &[
    ("cutsplit_acl_1k", 1016),
    ("cutsplit_fw_1k", 856),
    ("cutsplit_ipc_1k", 1007),
    ("cutsplit_acl_10k", 9826),
    ("cutsplit_fw_10k", 9388),
    ("cutsplit_ipc_10k", 9569),
];

#[test]
fn every_classbench_file_imports_and_round_trips_through_text() {
    for (name, count) in SETS {
        let text = std::fs::read_to_string(data(name)).unwrap();
        let set = parse_rules(&text, "mainrs").unwrap();
        assert_eq!(set.rules.len(), *count, "{name}");
        let printed = set.to_string();
        let policy = parse_policy(&printed).unwrap_or_else(|d| panic!("{name}: {}", d.one_line(name)));
        assert_eq!(policy.rulesets, vec![set], "{name}");
    }
}

#[test]
fn linear_scan_agrees_with_every_firstmatch_file() {
    for name in ["cutsplit_acl_1k", "cutsplit_fw_1k", "cutsplit_ipc_1k", "cutsplit_fw_10k"] {
        let set = parse_rules(&std::fs::read_to_string(data(name)).unwrap(), "mainrs").unwrap();
        let trace = parse_trace(&std::fs::read_to_string(data(&format!("{name}_trace"))).unwrap()).unwrap();
        let answers =
            parse_firstmatch(&std::fs::read_to_string(data(&format!("{name}_trace.firstmatch"))).unwrap())
                .unwrap();
        assert_eq!(trace.len(), answers.len(), "{name}");
        let compiled = CompiledRuleSet::compile(&set, &[]).unwrap();
        // The 10k trace is large for a linear scan in a debug build: check a stride of it.
        let step = if trace.len() > 20_000 { 7 } else { 1 };
        for (i, (h, want)) in trace.iter().zip(&answers).enumerate().step_by(step) {
            let got = compiled.first_match_l3(&h.key()).map(|r| compiled.rule(r).id as usize);
            assert_eq!(got, *want, "{name} header {i}");
        }
    }
}

#[test]
fn malformed_classbench_lines_are_reported_with_their_line() {
    let e = parse_rules("@1.2.3.4/32\t5.6.7.8/32\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\n@1.2.3.4/40\t5.6.7.8/32\t0 : 1\t0 : 1\t0x06/0xFF\n", "x")
        .unwrap_err();
    assert_eq!(e.span.line, 2);
    assert!(e.message.contains("bad prefix length"), "{e}");
    let e = parse_trace("1 2 3 4 6 0 0\n1 2 70000 4 6 0 0\n").unwrap_err();
    assert_eq!((e.span.line, e.message.as_str()), (2, "bad ClassBench trace line: port out of range"));
}
