//! The seed article's `getrules` / `getaddrsets` output and the public NSX examples parse verbatim, print
//! back canonically, and mistakes are reported at the right line and column.

use rules::*;

const SEED_RULES: &str = "ruleset mainrs {
  # generation number: 0
  # realization time : 2018-12-17T09:22:20
  rule 6266 at 1 in protocol any from addrset 105ee703-a9f2-4a5c-bf48-e56338b44a97 to addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 accept;
  rule 6269 at 2 in protocol any from any to addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 drop;
  rule 6270 at 3 out protocol any from addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 to any accept;
  rule 2 at 4 inout protocol any from any to any accept;
}

ruleset mainrs_L2 {
  # generation number: 0
  # realization time : 2018-12-17T09:22:20
  rule 1 at 1 inout ethertype any stateless from any to any accept;
}
";

const SEED_SETS: &str = "addrset 105ee703-a9f2-4a5c-bf48-e56338b44a97 {
# generation number: 0
# realization time : 2018-12-17T09:30:34
ip 172.15.0.2,
}

addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 {
# generation number: 0
# realization time : 2018-12-17T09:22:19
ip 172.15.0.4,
ip 172.15.0.5,
}
";

fn seed_policy() -> String {
    format!("filter nic-5739119-eth33-vmware-sfw.1 {{\n vnic mac 00:50:56:00:00:04 ip 172.15.0.4;\n{SEED_RULES}\n{SEED_SETS}}}\n")
}

#[test]
fn seed_text_parses_verbatim_and_prints_back_identically() {
    let policy = parse_policy(&seed_policy()).expect("seed text parses");
    let f = &policy.filters[0];
    assert_eq!(f.name, "nic-5739119-eth33-vmware-sfw.1");
    assert_eq!(f.failure, FailurePolicy::FailClosed);
    assert_eq!(f.rulesets.len(), 2);
    let main = &f.rulesets[0];
    assert_eq!(main.generation, Some(0));
    assert_eq!(main.realized.as_deref(), Some("2018-12-17T09:22:20"));
    assert_eq!(
        main.rules.iter().map(|r| (r.id, r.position)).collect::<Vec<_>>(),
        [(6266, 1), (6269, 2), (6270, 3), (2, 4)]
    );
    assert_eq!(main.rules[1].action, Action::Drop);
    assert_eq!(main.rules[2].dir, RuleDir::Out);
    assert!(f.rulesets[1].rules[0].stateless);
    let printed: String = f.rulesets.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n");
    assert_eq!(printed, SEED_RULES);
    let sets: String = f.addrsets.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("\n");
    assert_eq!(sets, SEED_SETS);
}

#[test]
fn public_nsx_rule_forms_round_trip() {
    let text = "ruleset mainrs {
  rule 5134 at 1 inout protocol any from addrset d8e7adac-1 to addrset d8e7adac-1 accept with log tag 'ipv6-app-allow';
  rule 5132 at 4 inout inet protocol tcp strict from any to addrset 9b14a216-1 port 22 accept;
  rule 1037 at 10 inout protocol icmp icmptype 8 from any to any accept with log;
  rule 7 at 11 in inet6 protocol udp stateless from not ip 2001:db8::/32 port {53,5353,6000-6010} to ip 10.0.0.1 port 1024-2048 reject;
  rule 8 at 12 out protocol ipv6-icmp typecode 1:4 from not addrset d8e7adac-1 to any punt;
  # internal # rule 9 at 13 inout protocol 89 from any to any drop;
}
";
    let policy = parse_policy(&format!(
        "addrset d8e7adac-1 {{ ip 10.1.0.0/16, ip fe80::1, }}\naddrset 9b14a216-1 {{ }}\nfilter f {{ vnic ip 10.0.0.1;\n{text}}}"
    ))
    .unwrap();
    let rs = &policy.filters[0].rulesets[0];
    assert_eq!(rs.to_string(), text);
    let RuleBody::Ip(m) = &rs.rules[3].body else { panic!("ip rule expected") };
    assert_eq!(m.sport, Ports::Set(vec![(53, 53), (5353, 5353), (6000, 6010)]));
    assert_eq!(m.dport, Ports::Range(1024, 2048));
    assert!(rs.rules[5].internal);
    // Printing the whole policy and reading it again gives the same model.
    assert_eq!(parse_policy(&policy.to_string()).unwrap(), policy);
}

#[test]
fn first_match_follows_positions_and_sets() {
    let policy = parse_policy(&seed_policy()).unwrap();
    let f = &policy.filters[0];
    let sets = policy.addrsets_for(f);
    let main = CompiledRuleSet::compile(&f.rulesets[0], &sets).unwrap();
    let key = |dir, src: &str, dst: &str| L3Key {
        dir,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: 6,
        ports: Some((40000, 80)),
        icmp: None,
    };
    let id = |k: L3Key| main.first_match_l3(&k).map(|i| main.rule(i).id);
    assert_eq!(id(key(Direction::In, "172.15.0.2", "172.15.0.4")), Some(6266));
    assert_eq!(id(key(Direction::In, "172.15.0.3", "172.15.0.4")), Some(6269));
    assert_eq!(id(key(Direction::Out, "172.15.0.4", "172.15.0.3")), Some(6270));
    assert_eq!(id(key(Direction::In, "172.15.0.3", "172.15.0.9")), Some(2));
}

#[test]
fn flow_counts_option_parses_prints_and_round_trips() {
    let with = |extra: &str| format!("filter f {{\n  vnic ip 10.0.0.1;\n{extra}}}\n");
    let counts = |extra: &str| parse_policy(&with(extra)).unwrap().filters[0].flow_counts;
    // Default off, like Linux conntrack's accounting.
    assert!(!counts(""));
    assert!(!FilterSpec::new("f", Vnic::default()).flow_counts);
    assert!(counts("  flowCounts on;\n"));
    assert!(!counts("  flowCounts off;\n"));
    // Repeated, the last one holds (as for policyChange).
    assert!(!counts("  flowCounts on;\n  flowCounts off;\n"));
    assert!(counts("  flowCounts off;\n  flowCounts on;\n"));
    // Printed only when on, after policyChange, and read back the same.
    let on = parse_policy(&with("  flowCounts on;\n  policyChange keep;\n")).unwrap();
    let text = on.to_string();
    assert_eq!(
        text,
        "filter f {\n  vnic ip 10.0.0.1;\n  failurePolicy failClosed;\n  policyChange keep;\n  flowCounts on;\n}\n"
    );
    assert_eq!(parse_policy(&text).unwrap(), on);
    let off = parse_policy(&with("  flowCounts off;\n")).unwrap();
    assert!(!off.to_string().contains("flowCounts"));
    assert_eq!(parse_policy(&off.to_string()).unwrap(), off);
}
