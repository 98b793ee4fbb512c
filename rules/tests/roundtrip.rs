//! Property tests of the text format: printing any policy and reading it back gives the same model,
//! and no input — random or a mutated real file — panics the parser.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use proptest::sample::select;
use rules::*;

fn word() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.-]{0,10}"
}

fn comment() -> impl Strategy<Value = String> {
    // No ':' (that could read as `generation number:`), and not starting with "internal".
    "[a-zA-Z0-9 ,.()=-]{0,16}"
        .prop_map(|s| s.trim().to_string())
        .prop_filter("internal marker", |s| !s.starts_with("internal"))
}

fn comments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(comment(), 0..2)
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    (ip(), any::<u8>()).prop_map(|(addr, l)| {
        let max = if addr.is_ipv4() { 33 } else { 129 };
        IpNet::new(addr, l % max).unwrap().network()
    })
}

fn ports() -> impl Strategy<Value = Ports> {
    let range = (any::<u16>(), any::<u16>()).prop_map(|(a, b)| (a.min(b), a.max(b)));
    prop_oneof![
        2 => Just(Ports::Any),
        1 => range.clone().prop_map(|(a, b)| Ports::Range(a, b)),
        1 => prop::collection::vec(range, 1..4).prop_map(Ports::Set),
    ]
}

fn endpoint(sets: Vec<String>) -> impl Strategy<Value = Endpoint> {
    let set = if sets.is_empty() {
        Just(Endpoint::Any).boxed()
    } else {
        (select(sets), any::<bool>()).prop_map(|(id, negated)| Endpoint::AddrSet { id, negated }).boxed()
    };
    prop_oneof![
        Just(Endpoint::Any),
        set,
        (net(), any::<bool>()).prop_map(|(net, negated)| Endpoint::Ip { net, negated })
    ]
}

fn mac_endpoint(sets: Vec<String>) -> BoxedStrategy<MacEndpoint> {
    if sets.is_empty() {
        return Just(MacEndpoint::Any).boxed();
    }
    prop_oneof![
        Just(MacEndpoint::Any),
        (select(sets), any::<bool>()).prop_map(|(id, negated)| MacEndpoint::AddrSet { id, negated })
    ]
    .boxed()
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Any),
        select(vec![1u8, 6, 17, 58, 132, 47, 2]).prop_map(Protocol::Number),
        any::<u8>().prop_map(Protocol::Number)
    ]
}

fn ip_match(sets: Vec<String>) -> impl Strategy<Value = IpMatch> {
    (
        select(vec![Family::Any, Family::Inet, Family::Inet6]),
        protocol(),
        any::<bool>(),
        endpoint(sets.clone()),
        endpoint(sets),
        ports(),
        ports(),
        (any::<u8>(), any::<u8>(), 0..3u8),
    )
        .prop_map(|(family, proto, strict, src, dst, sport, dport, (t, c, k))| {
            let (sport, dport) =
                if proto.may_have_ports() { (sport, dport) } else { (Ports::Any, Ports::Any) };
            let icmp = match (proto.is_icmp(), k) {
                (true, 1) => IcmpMatch::Type(t),
                (true, 2) => IcmpMatch::TypeCode(t, c),
                _ => IcmpMatch::Any,
            };
            IpMatch { family, proto, strict, src, sport, dst, dport, icmp }
        })
}

fn ether_match(sets: Vec<String>) -> impl Strategy<Value = EtherMatch> {
    (prop::option::of(any::<u16>()), mac_endpoint(sets.clone()), mac_endpoint(sets))
        .prop_map(|(ethertype, src, dst)| EtherMatch { ethertype, src, dst })
}

fn tail() -> impl Strategy<Value = (bool, Action, bool, Option<String>, bool, Vec<String>)> {
    (
        any::<bool>(),
        select(vec![Action::Accept, Action::Drop, Action::Reject, Action::Punt]),
        any::<bool>(),
        prop::option::of("[a-zA-Z0-9 _-]{0,12}"),
        any::<bool>(),
        comments(),
    )
}

fn ruleset(
    name: String,
    l2: bool,
    ip_sets: Vec<String>,
    mac_sets: Vec<String>,
) -> impl Strategy<Value = RuleSet> {
    let body = if l2 {
        ether_match(mac_sets).prop_map(RuleBody::Ether).boxed()
    } else {
        ip_match(ip_sets).prop_map(RuleBody::Ip).boxed()
    };
    let rules = prop::collection::vec((body, tail()), 0..5);
    (
        rules,
        prop::option::of(any::<u64>()),
        prop::option::of("[0-9T:-]{1,19}"),
        comments(),
        comments(),
        any::<u32>(),
    )
        .prop_map(move |(rules, generation, realized, comments, trailing, base)| {
            let rules = rules
                .into_iter()
                .enumerate()
                .map(|(i, (body, (stateless, action, log, tag, internal, comments)))| Rule {
                    // Ids and positions are unique within a set by construction.
                    id: base.wrapping_add(i as u32 * 7919),
                    position: i as u32 + 1,
                    dir: [RuleDir::In, RuleDir::Out, RuleDir::InOut][i % 3],
                    body,
                    stateless,
                    action,
                    log,
                    tag,
                    internal,
                    comments,
                })
                .collect();
            RuleSet { name: name.clone(), generation, realized, rules, comments, trailing }
        })
}

fn addrset(id: String, macs: bool) -> impl Strategy<Value = AddrSet> {
    let entry = if macs {
        any::<[u8; 6]>().prop_map(|m| AddrEntry::Mac(Mac(m))).boxed()
    } else {
        net().prop_map(AddrEntry::Ip).boxed()
    };
    (
        prop::collection::vec(entry, 0..5),
        prop::option::of(any::<u64>()),
        comments(),
        prop::collection::vec((0..6usize, comment()), 0..3),
    )
        .prop_map(move |(entries, generation, comments, mut notes)| {
            notes.iter_mut().for_each(|(i, _)| *i = (*i).min(entries.len()));
            notes.sort_by_key(|(i, _)| *i);
            AddrSet { id: id.clone(), generation, realized: None, entries, comments, entry_comments: notes }
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    (0..3usize, 0..3usize, 0..3usize).prop_flat_map(|(n_ip, n_mac, n_filters)| {
        let ip_ids: Vec<String> = (0..n_ip).map(|i| format!("ipset-{i}")).collect();
        let mac_ids: Vec<String> = (0..n_mac).map(|i| format!("macset-{i}")).collect();
        let ip_sets: Vec<_> = ip_ids.iter().map(|id| addrset(id.clone(), false)).collect();
        let mac_sets: Vec<_> = mac_ids.iter().map(|id| addrset(id.clone(), true)).collect();
        let l3 = prop::option::of(ruleset("mainrs".into(), false, ip_ids.clone(), mac_ids.clone()));
        let l2 = prop::option::of(ruleset("mainrs_L2".into(), true, ip_ids.clone(), mac_ids.clone()));
        let filters: Vec<_> = (0..n_filters).map(|i| filter(i, ip_ids.clone(), mac_ids.clone())).collect();
        (ip_sets, mac_sets, l3, l2, filters, comments()).prop_map(
            |(ip_sets, mac_sets, l3, l2, filters, trailing)| Policy {
                filters,
                rulesets: l3.into_iter().chain(l2).collect(),
                addrsets: ip_sets.into_iter().chain(mac_sets).collect(),
                trailing,
            },
        )
    })
}

fn filter(i: usize, ip_ids: Vec<String>, mac_ids: Vec<String>) -> impl Strategy<Value = FilterSpec> {
    let own_ip = format!("f{i}-ips");
    let ips: Vec<String> = ip_ids.into_iter().chain([own_ip.clone()]).collect();
    let macs = mac_ids;
    (
        word(),
        prop::option::of(any::<[u8; 6]>()),
        prop::collection::vec(ip(), 1..3),
        any::<bool>(),
        prop::option::of(ruleset("mainrs".into(), false, ips.clone(), macs.clone())),
        prop::option::of(ruleset("mainrs_L2".into(), true, ips, macs)),
        addrset(own_ip, false),
        comments(),
        comments(),
        any::<bool>(),
    )
        .prop_map(move |(name, mac, vnic_ips, open, l3, l2, own, comments, inner, counts)| FilterSpec {
            name: format!("nic-{i}-{name}"),
            vnic: Vnic { mac: mac.map(Mac), ips: vnic_ips },
            failure: if open { FailurePolicy::FailOpen } else { FailurePolicy::FailClosed },
            timeouts: if open {
                vec![("tcp.established".into(), 3600), ("udp.first".into(), 5)]
            } else {
                vec![]
            },
            max_connections: open.then_some(1000),
            icmp_error_rate: (!comments.is_empty()).then_some(if open { 0 } else { 250 }),
            policy_change: if open { PolicyChange::Keep } else { PolicyChange::Revalidate },
            flow_counts: counts,
            rulesets: l3.into_iter().chain(l2).collect(),
            addrsets: vec![own],
            comments,
            inner_comments: inner,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_gives_the_same_policy(p in policy()) {
        let text = p.to_string();
        let back = parse_policy(&text).map_err(|d| TestCaseError::fail(format!("{}\n---\n{text}", d.one_line("gen"))))?;
        prop_assert_eq!(&back, &p, "text:\n{}", text);
        // And the printed text is a fixed point.
        prop_assert_eq!(back.to_string(), text);
    }

    #[test]
    fn random_text_never_panics(s in "\\PC{0,300}") {
        let _ = check_policy(&s);
    }

    #[test]
    fn mutated_seed_text_never_panics_and_stays_consistent(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..4u8, "[ -~{};,'#\n]{0,3}"), 1..6)
    ) {
        let mut text: Vec<char> = SEED.chars().collect();
        for (at, kind, insert) in edits {
            let i = at.index(text.len() + 1);
            match kind {
                0 => { text.splice(i..i, insert.chars()); }
                1 if i < text.len() => { text.remove(i); }
                2 if i < text.len() => { text.splice(i..(i + 3).min(text.len()), insert.chars()); }
                _ => { text.truncate(i); }
            }
        }
        let text: String = text.into_iter().collect();
        let checked = check_policy(&text);
        for d in &checked.diagnostics.0 {
            // Every diagnostic points inside the text and renders.
            prop_assert!(d.span.end <= text.len());
            let _ = d.render("m.dfw", &text);
        }
        if !checked.diagnostics.has_errors() {
            // Whatever was accepted prints canonically and reads back to the same model.
            let printed = checked.policy.to_string();
            prop_assert_eq!(parse_policy(&printed).map_err(|d| TestCaseError::fail(d.one_line("p")))?, checked.policy);
        }
    }
}

const SEED: &str = include_str!("../../examples/seed-lab/v1-policy.dfw");

#[test]
fn fmt_keeps_comments_in_place() {
    let text = "# shared target set\naddrset t {\n# generation number: 3\n# the nginx pods\nip 172.15.0.4,\n# second pod\nip 172.15.0.5,\n# end\n}\n\n# policy\nruleset mainrs {\n  # generation number: 0\n  # allow foo\n  rule 1 at 1 in protocol any from any to addrset t accept;\n  # tail\n}\n";
    let p = parse_policy(text).unwrap();
    assert_eq!(p.to_string(), text);
    assert_eq!(
        p.addrsets[0].entry_comments,
        vec![(0, "the nginx pods".to_string()), (1, "second pod".into()), (2, "end".into())]
    );
}

#[test]
fn the_generator_covers_the_grammar() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut text = String::new();
    for _ in 0..200 {
        text.push_str(&policy().new_tree(&mut runner).unwrap().current().to_string());
    }
    for needle in [
        "not addrset",
        "not ip",
        "port {",
        "typecode",
        "icmptype",
        "inet6",
        "stateless",
        "strict",
        "with log",
        "tag '",
        "# internal #",
        "ethertype 0x",
        "mac ",
        "filter nic-",
        "failurePolicy failOpen",
        "punt;",
    ] {
        assert!(text.contains(needle), "generated policies never contain {needle:?}");
    }
}
