//! One test per kind of diagnostic: the exact message, and the line:column of the offending text.

use rules::{check_policy, parse_policy, Severity};

/// `line:col` of the first occurrence of `needle` (after `skip` earlier occurrences).
fn at_nth(text: &str, needle: &str, skip: usize) -> String {
    let off = text.match_indices(needle).nth(skip).unwrap_or_else(|| panic!("{needle} not in text")).0;
    let line = text[..off].matches('\n').count() + 1;
    let col = text[..off].rsplit('\n').next().unwrap().chars().count() + 1;
    format!("{line}:{col}")
}

fn at(text: &str, needle: &str) -> String {
    at_nth(text, needle, 0)
}

/// All diagnostics, one line each.
fn diags(text: &str) -> Vec<String> {
    check_policy(text).diagnostics.0.iter().map(|d| d.one_line("p.dfw")).collect()
}

/// The single diagnostic of `text`.
fn only(text: &str) -> String {
    let d = diags(text);
    assert_eq!(d.len(), 1, "{d:#?}");
    d.into_iter().next().unwrap()
}

/// A filter around one L3 rule set holding `rules`, plus `extra` top-level text.
fn l3(rules: &str, extra: &str) -> String {
    format!("{extra}filter f {{\n  vnic ip 10.0.0.1;\n  ruleset mainrs {{\n{rules}\n  }}\n}}\n")
}

#[test]
fn unknown_action_suggests_the_closest() {
    let t = l3("    rule 1 at 1 in protocol tcp from any to any acept;", "");
    assert_eq!(
        only(&t),
        format!("p.dfw:{}: error: unexpected 'acept', expected 'accept', 'drop', 'reject' or 'punt' (did you mean 'accept'?)", at(&t, "acept"))
    );
}

#[test]
fn unknown_top_level_keyword() {
    let t = "filtr f {\n  vnic ip 10.0.0.1;\n}\n";
    assert_eq!(only(t), "p.dfw:1:1: error: unexpected 'filtr', expected 'filter', 'ruleset' or 'addrset' (did you mean 'filter'?)");
}

#[test]
fn unsupported_protocol_name() {
    let t = l3("    rule 1 at 1 in protocol tcpp from any to any drop;", "");
    assert_eq!(
        only(&t),
        format!("p.dfw:{}: error: unsupported protocol 'tcpp' (did you mean 'tcp'?)", at(&t, "tcpp"))
    );
    let t = l3("    rule 1 at 1 in protocol ospf from any to any drop;", "");
    assert_eq!(
        only(&t),
        format!(
            "p.dfw:{}: error: unsupported protocol 'ospf' (use any, tcp, udp, icmp, ipv6-icmp, sctp, gre, igmp or a number 0-255)",
            at(&t, "ospf")
        )
    );
}

#[test]
fn duplicate_position_and_rule_id() {
    let t = l3(
        "    rule 1 at 1 in protocol any from any to any drop;\n    rule 2 at 1 in protocol any from any to any drop;\n    rule 1 at 3 in protocol any from any to any drop;",
        "",
    );
    assert_eq!(
        diags(&t),
        vec![
            format!(
                "p.dfw:{}: error: rules 1 and 2 share position 1 in rule set 'mainrs' (rule 1 is at line 4; positions order evaluation and must differ)",
                at_nth(&t, "1 in", 1)
            ),
            format!("p.dfw:{}: error: rule id 1 appears twice in rule set 'mainrs' (first used at line 4)", at(&t, "1 at 3")),
        ]
    );
}

#[test]
fn undefined_address_set() {
    let t = l3("    rule 1 at 1 in protocol any from addrset nope to any drop;", "");
    assert_eq!(
        only(&t),
        format!(
            "p.dfw:{}: error: address set 'nope' is not defined for filter 'f' (define it with addrset <id> {{ ... }} in the filter or at top level)",
            at(&t, "nope")
        )
    );
}

#[test]
fn mac_set_in_l3_rule_and_ip_set_in_l2_rule() {
    let t = l3(
        "    rule 1 at 1 in protocol any from addrset m to any drop;",
        "addrset m { mac 00:11:22:33:44:55, }\n",
    );
    assert_eq!(
        only(&t),
        format!("p.dfw:{}: error: address set 'm' holds MAC addresses but is used in an L3 rule (L3 (protocol) rules match IP sets)", at(&t, "m to"))
    );
    let t = "addrset v4 { ip 10.0.0.1, }\nfilter f {\n  vnic ip 10.0.0.1;\n  ruleset mainrs_L2 {\n    rule 1 at 1 in ethertype any from addrset v4 to any drop;\n  }\n}\n";
    assert_eq!(
        only(t),
        format!("p.dfw:{}: error: address set 'v4' holds IP addresses but is used in an L2 rule (L2 (ethertype) rules match MAC sets)", at(t, "v4 to"))
    );
}

#[test]
fn empty_port_range() {
    let t = l3("    rule 1 at 1 in protocol tcp from any to any port 90-80 drop;", "");
    assert_eq!(
        only(&t),
        format!("p.dfw:{}: error: port range 90-80 is empty: 90 > 80 (write 80-90)", at(&t, "90-80"))
    );
}

#[test]
fn ports_on_a_protocol_without_ports() {
    let t = l3("    rule 1 at 1 in protocol icmp from any to any port 80 drop;", "");
    assert_eq!(
        only(&t),
        format!("p.dfw:{}: error: ports on a rule whose protocol (icmp) has no ports (ports apply to tcp, udp and sctp)", at(&t, "port"))
    );
}

#[test]
fn icmp_type_on_a_non_icmp_rule() {
    let t = l3("    rule 1 at 1 in protocol udp icmptype 8 from any to any drop;", "");
    assert_eq!(
        only(&t),
        format!("p.dfw:{}: error: 'icmptype' on a rule whose protocol is udp, not ICMP (use protocol icmp or ipv6-icmp)", at(&t, "icmptype"))
    );
}

#[test]
fn host_bits_in_a_prefix_are_a_warning() {
    let t = l3("    rule 1 at 1 in protocol any from ip 10.1.2.3/16 to any drop;", "");
    assert_eq!(
        only(&t),
        format!("p.dfw:{}: warning: 10.1.2.3/16 has host bits set; it matches 10.1.0.0/16 (write 10.1.0.0/16, or 10.1.2.3 for the single address)", at(&t, "10.1.2.3/16"))
    );
    // A warning does not stop the policy from loading.
    assert!(parse_policy(&t).is_ok());
    assert_eq!(check_policy(&t).diagnostics.0[0].severity, Severity::Warning);
}

#[test]
fn wrong_rule_kind_for_the_set() {
    let t = l3("    rule 1 at 1 in ethertype any from any to any drop;", "");
    assert_eq!(
        only(&t),
        format!(
            "p.dfw:{}: error: rule 1 in rule set 'mainrs' is a ethertype rule (rule sets named *_L2 hold ethertype rules, others protocol rules: use protocol)",
            at(&t, "ethertype")
        )
    );
}

#[test]
fn unclosed_blocks_and_quotes() {
    let t = "filter f {\n  vnic ip 10.0.0.1;\n  ruleset mainrs {\n    rule 1 at 1 in protocol tcp from any to any accept;\n";
    assert_eq!(
        diags(t),
        vec![
            "p.dfw:5:1: error: rule set 'mainrs' is not closed (add '}')".to_string(),
            "p.dfw:5:1: error: filter 'f' is not closed (add '}')".to_string()
        ]
    );
    let t = l3("    rule 1 at 1 in protocol tcp from any to any accept tag 'web;", "");
    let d = diags(&t);
    assert_eq!(
        d[0],
        format!(
            "p.dfw:{}: error: unterminated quoted string (close it with ' on the same line)",
            at(&t, "'web")
        )
    );
}

#[test]
fn bad_addresses() {
    let t = "addrset a {\nip 10.0.0.300,\nmac 00:11:22:33:44,\nip 10.0.0.0/33,\n}\n";
    assert_eq!(
        diags(t),
        vec![
            "p.dfw:2:4: error: bad IP address or prefix '10.0.0.300' (write an IPv4 or IPv6 address, optionally with /length)".to_string(),
            "p.dfw:3:5: error: bad MAC address '00:11:22:33:44' (write it like 00:50:56:aa:bb:cc)".to_string(),
            "p.dfw:4:4: error: prefix length /33 is too long for 10.0.0.0 (IPv4 prefixes are /0 to /32)".to_string(),
        ]
    );
}

#[test]
fn filter_level_mistakes() {
    let t = "filter f {\n  failurePolicy failclosed;\n}\nfilter f {\n  vnic ip 10.0.0.2;\n}\n";
    assert_eq!(
        diags(t),
        vec![
            "p.dfw:1:8: error: filter 'f' has no vnic line (say which vNIC it guards: vnic mac 00:50:56:aa:bb:cc ip 10.0.0.5;)".to_string(),
            "p.dfw:2:17: error: unexpected 'failclosed', expected 'failClosed' or 'failOpen' (did you mean 'failClosed'?)".to_string(),
            "p.dfw:4:8: error: filter 'f' is defined twice (first defined at line 1)".to_string(),
        ]
    );
    let t = "addrset a { }\naddrset a { }\n";
    assert_eq!(only(t), "p.dfw:2:1: error: address set 'a' is defined twice (first defined at line 1)");
}

#[test]
fn every_problem_is_reported_and_good_rules_survive() {
    let t = l3(
        "    rule 1 at 1 in protocol tcp from any to any acept;\n    rule 2 at 2 in protocol tcp from any to any port 80 accept;\n    rule 3 at 3 in protocl udp from any to any drop;\n    rule 4 at 4 inout protocol any from any to any drop;",
        "",
    );
    let checked = check_policy(&t);
    let lines: Vec<String> = checked.diagnostics.0.iter().map(|d| d.one_line("p.dfw")).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with(&format!("p.dfw:{}: error: unexpected 'acept'", at(&t, "acept"))));
    assert!(lines[1].starts_with(&format!("p.dfw:{}: error: unexpected 'protocl'", at(&t, "protocl"))));
    assert!(lines[1].ends_with("(did you mean 'protocol'?)"));
    let ids: Vec<u32> = checked.policy.filters[0].rulesets[0].rules.iter().map(|r| r.id).collect();
    assert_eq!(ids, [2, 4]);
}

#[test]
fn render_underlines_the_offending_text() {
    let t = l3("    rule 1 at 1 in protocol tcp from any to any acept;", "");
    let d = &check_policy(&t).diagnostics.0[0];
    let shown = d.render("p.dfw", &t);
    assert_eq!(
        shown,
        "p.dfw:4:49: error: unexpected 'acept', expected 'accept', 'drop', 'reject' or 'punt'\n  |\n4 |     rule 1 at 1 in protocol tcp from any to any acept;\n  |                                                 ^^^^^ did you mean 'accept'?\n"
    );
}

#[test]
fn flow_counts_takes_on_or_off() {
    let t = "filter f {\n  vnic ip 10.0.0.1;\n  flowCounts yes;\n}\n";
    assert_eq!(only(t), format!("p.dfw:{}: error: unexpected 'yes', expected 'on' or 'off'", at(t, "yes")));
    let t = "filter f {\n  vnic ip 10.0.0.1;\n  flowCounts of;\n}\n";
    assert_eq!(
        only(t),
        format!(
            "p.dfw:{}: error: unexpected 'of', expected 'on' or 'off' (did you mean 'on'?)",
            at(t, "of;")
        )
    );
    let t = "filter f {\n  vnic ip 10.0.0.1;\n  flowCounts;\n}\n";
    assert_eq!(only(t), format!("p.dfw:{}: error: unexpected ';', expected on or off", at(t, ";\n}")));
    let t = "filter f {\n  vnic ip 10.0.0.1;\n  flowCount on;\n}\n";
    assert!(only(t).starts_with(&format!("p.dfw:{}: error: unexpected 'flowCount'", at(t, "flowCount"))));
    assert!(only(t).ends_with("(did you mean 'flowCounts'?)"), "{}", only(t));
    // A bad value fails the whole parse.
    assert!(parse_policy("filter f {\n  vnic ip 10.0.0.1;\n  flowCounts maybe;\n}\n").is_err());
}
