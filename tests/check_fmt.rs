//! End-to-end: `dfw check` and `dfw fmt` on real files.

mod common;

use std::path::Path;

use common::{dfw, scratch};

fn example(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed-lab").join(file).display().to_string()
}

#[test]
fn check_passes_clean_files_and_reports_every_error_with_an_underline() {
    let o = dfw(&["check", &example("v1-policy.dfw"), &example("v2-policy.dfw")]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("v1-policy.dfw: ok (3 filters, 5 rules)"));

    let dir = scratch("check");
    let bad = dir.join("bad.dfw");
    std::fs::write(
        &bad,
        "ruleset mainrs {\n  rule 1 at 1 in protocol tcp from any to addrset nope port 80 accept;\n  rule 2 at 1 in protocol icmp from ip 10.0.0.1/8 to any port 9 drop;\n  rule 3 at 3 in protocol tcp from any to any acept;\n}\n",
    )
    .unwrap();
    let o = dfw(&["check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8(o.stderr).unwrap();
    let headers: Vec<&str> = err.lines().filter(|l| l.contains("bad.dfw:")).collect();
    assert_eq!(
        headers.iter().map(|l| l.rsplit("bad.dfw:").next().unwrap()).collect::<Vec<_>>(),
        vec![
            "2:51: error: address set 'nope' is not defined for the shared rule sets",
            "3:13: error: rules 1 and 2 share position 1 in rule set 'mainrs'",
            "3:40: warning: 10.0.0.1/8 has host bits set; it matches 10.0.0.0/8",
            "3:58: error: ports on a rule whose protocol (icmp) has no ports",
            "4:47: error: unexpected 'acept', expected 'accept', 'drop', 'reject' or 'punt'",
        ],
        "{err}"
    );
    assert!(err.contains("^^^^^ did you mean 'accept'?"), "{err}");
}

#[test]
fn fmt_rewrites_to_canonical_form_and_check_mode_detects_it() {
    let dir = scratch("fmt");
    let f = dir.join("p.dfw");
    let messy = "# the target set\naddrset t {ip 172.15.0.4,ip 172.15.0.5}\nruleset mainrs {   rule 1 at 1 in protocol 6 from any to addrset t port {80,443} accept;\n # default\n rule 2 at 2 inout protocol any from any to any drop;}\n";
    std::fs::write(&f, messy).unwrap();
    let path = f.to_str().unwrap();

    let o = dfw(&["fmt", "--check", path]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), messy, "--check must not write");

    let o = dfw(&["fmt", path]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let canonical = std::fs::read_to_string(&f).unwrap();
    assert_eq!(
        canonical,
        "# the target set\naddrset t {\nip 172.15.0.4,\nip 172.15.0.5,\n}\n\nruleset mainrs {\n  rule 1 at 1 in protocol tcp from any to addrset t port {80,443} accept;\n  # default\n  rule 2 at 2 inout protocol any from any to any drop;\n}\n"
    );
    assert_eq!(dfw(&["fmt", "--check", path]).status.code(), Some(0));

    // A file with errors is reported and left alone.
    std::fs::write(&f, "ruleset x { rule 1 at 1 in protocol tcp from any to any acept; }\n").unwrap();
    let o = dfw(&["fmt", path]);
    assert_eq!(o.status.code(), Some(1));
    assert!(std::fs::read_to_string(&f).unwrap().contains("acept"));
}
