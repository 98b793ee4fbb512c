//! Address-set scenarios for the classifier: the seed article's relabelling (a member add grants
//! access, a remove takes it away, no rule rebuilt), atomic versions and snapshots, prefix members,
//! errors, and an NSX-shaped policy against the linear scan.

use std::net::IpAddr;

use rules::classify::synth::{self, NsxParams};
use rules::classify::{set_changes, UnknownSet};
use rules::*;

const ARTICLE: &str = r#"
ruleset mainrs {
  rule 6266 at 1 in protocol any from addrset 105ee703-a9f2-4a5c-bf48-e56338b44a97 to addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 accept;
  rule 6269 at 2 in protocol any from any to addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 drop;
  rule 6270 at 3 out protocol any from addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 to any accept;
  rule 2 at 4 inout protocol any from any to any accept;
}
addrset 9a0c2b94-3a78-42af-9d38-a2432cc89a00 {
ip 172.15.0.4,
ip 172.15.0.5,
}
addrset 105ee703-a9f2-4a5c-bf48-e56338b44a97 {
}
"#;
const SRC: &str = "105ee703-a9f2-4a5c-bf48-e56338b44a97";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(dir: Direction, src: &str, dst: &str, dport: u16) -> L3Key {
    L3Key { dir, src: ip(src), dst: ip(dst), proto: 6, ports: Some((40000, dport)), icmp: None }
}

fn article() -> (Policy, Classifier) {
    let p = parse_policy(ARTICLE).unwrap();
    let sets: Vec<&AddrSet> = p.addrsets.iter().collect();
    let c = Classifier::build(&p.rulesets[0], &sets).unwrap();
    (p, c)
}

#[test]
fn relabelled_pod_gains_then_loses_access_without_a_rebuild() {
    let (_, c) = article();
    let wget = tcp(Direction::In, "172.15.0.2", "172.15.0.4", 80);
    // The source set is empty: busybox → nginx hits the drop rule (index 1 = rule 6269).
    assert_eq!(c.first_match(&wget), Some(1));
    assert_eq!(c.generation(), 0);
    // `app=foo`: busybox joins the source set, and the accept rule decides at once.
    let g = c.add_member(SRC, IpNet::host(ip("172.15.0.2"))).unwrap();
    assert_eq!((g, c.generation()), (1, 1));
    assert_eq!(c.first_match(&wget), Some(0));
    // Another pod is unaffected.
    assert_eq!(c.first_match(&tcp(Direction::In, "172.15.0.3", "172.15.0.4", 80)), Some(1));
    // `app=bar`: it leaves, and new connections are dropped again.
    c.remove_member(SRC, IpNet::host(ip("172.15.0.2"))).unwrap();
    assert_eq!(c.first_match(&wget), Some(1));
    // nginx answering goes out through rule 6270; anything else falls to the default rule.
    assert_eq!(c.first_match(&tcp(Direction::Out, "172.15.0.4", "172.15.0.2", 40000)), Some(2));
    assert_eq!(c.first_match(&tcp(Direction::Out, "172.15.0.9", "172.15.0.2", 80)), Some(3));
}

#[test]
fn a_snapshot_keeps_its_version_while_new_versions_are_published() {
    let (_, c) = article();
    let wget = tcp(Direction::In, "172.15.0.2", "172.15.0.5", 80);
    let before = c.snapshot();
    c.add_member(SRC, IpNet::host(ip("172.15.0.2"))).unwrap();
    let after = c.snapshot();
    assert_eq!((before.generation(), after.generation()), (0, 1));
    assert_eq!(before.first_match(&wget), Some(1));
    assert_eq!(after.first_match(&wget), Some(0));
    assert_eq!(c.first_match(&wget), Some(0));
}

#[test]
fn member_changes_are_idempotent_and_all_or_nothing() {
    let (_, c) = article();
    let wget = tcp(Direction::In, "172.15.0.2", "172.15.0.4", 80);
    let host = IpNet::host(ip("172.15.0.2"));
    c.add_member(SRC, host).unwrap();
    c.add_member(SRC, host).unwrap();
    c.remove_member(SRC, host).unwrap();
    assert_eq!(c.first_match(&wget), Some(1), "a member added twice leaves on one remove");
    c.remove_member(SRC, host).unwrap();
    assert_eq!(c.first_match(&wget), Some(1));
    // A batch naming an unknown set publishes nothing, not even its valid part.
    let g = c.generation();
    let err = c.apply(&[MemberChange::Add(SRC, host), MemberChange::Add("nope", host)]).unwrap_err();
    assert_eq!(err, UnknownSet { set: "nope".into() });
    assert_eq!(c.generation(), g);
    assert_eq!(c.first_match(&wget), Some(1));
}

#[test]
fn prefix_members_cover_their_addresses_and_nest() {
    let (_, c) = article();
    let from = |src: &str| tcp(Direction::In, src, "172.15.0.4", 80);
    c.add_member(SRC, IpNet::new(ip("10.1.0.0"), 16).unwrap()).unwrap();
    c.add_member(SRC, IpNet::new(ip("10.1.2.77"), 24).unwrap()).unwrap(); // host bits ignored
    assert_eq!(c.first_match(&from("10.1.200.1")), Some(0));
    assert_eq!(c.first_match(&from("10.1.2.1")), Some(0));
    assert_eq!(c.first_match(&from("10.2.0.1")), Some(1));
    c.remove_member(SRC, IpNet::new(ip("10.1.0.0"), 16).unwrap()).unwrap();
    assert_eq!(c.first_match(&from("10.1.200.1")), Some(1), "the /16 is gone");
    assert_eq!(c.first_match(&from("10.1.2.1")), Some(0), "the nested /24 stays");
    assert_eq!(c.first_match(&from("10.1.3.1")), Some(1));
    // IPv6 members and a /0 (every IPv6 address, no IPv4 one).
    c.add_member(SRC, IpNet::new(ip("::"), 0).unwrap()).unwrap();
    assert_eq!(c.first_match(&tcp(Direction::In, "fd00::1", "172.15.0.4", 80)), Some(0), "families may mix");
    let v6 = L3Key { src: ip("fd00::1"), dst: ip("fd00::2"), ..from("10.2.0.1") };
    assert_eq!(c.first_match(&v6), Some(3), "fd00::2 is in no target set");
    assert_eq!(c.first_match(&from("10.2.0.1")), Some(1));
}

#[test]
fn set_changes_turns_one_version_of_a_set_into_the_next() {
    let (p, c) = article();
    let old = p.addrsets.iter().find(|s| s.id == SRC).unwrap().clone();
    let mut new = old.clone();
    new.entries = vec![
        AddrEntry::Ip(IpNet::host(ip("172.15.0.2"))),
        AddrEntry::Ip(IpNet::new(ip("10.0.0.9"), 8).unwrap()),
    ];
    let changes = set_changes(&old, &new);
    assert_eq!(changes.len(), 2);
    c.apply(&changes).unwrap();
    assert_eq!(c.first_match(&tcp(Direction::In, "172.15.0.2", "172.15.0.4", 80)), Some(0));
    assert_eq!(c.first_match(&tcp(Direction::In, "10.200.0.1", "172.15.0.4", 80)), Some(0));
    let back = set_changes(&new, &old);
    assert!(back.iter().all(|ch| matches!(ch, MemberChange::Remove(..))), "{back:?}");
    c.apply(&back).unwrap();
    assert_eq!(c.first_match(&tcp(Direction::In, "10.200.0.1", "172.15.0.4", 80)), Some(1));
}

#[test]
fn an_undefined_set_is_reported_like_the_linear_scan_does() {
    let p = parse_policy(ARTICLE).unwrap();
    let only_target: Vec<&AddrSet> = p.addrsets.iter().filter(|s| s.id != SRC).collect();
    let want = CompiledRuleSet::compile(&p.rulesets[0], &only_target).unwrap_err();
    let got = Classifier::build(&p.rulesets[0], &only_target).unwrap_err();
    assert_eq!(got, want);
    assert_eq!(got.rule, 6266);
}

#[test]
fn l2_rules_are_ignored_and_an_empty_set_matches_nothing() {
    let p = parse_policy(
        "ruleset mainrs_L2 { rule 1 at 1 inout ethertype any stateless from any to any accept; }",
    )
    .unwrap();
    let c = Classifier::build(&p.rulesets[0], &[]).unwrap();
    assert_eq!(c.first_match(&tcp(Direction::In, "1.2.3.4", "5.6.7.8", 80)), None);
    assert_eq!(c.stats().rules, 0);
}

#[test]
fn nsx_shaped_policy_agrees_with_the_linear_scan_through_member_changes() {
    let p = synth::nsx(&NsxParams { rules: 1500, sets: 400, members: 12_000, seed: 5 });
    assert!(p.sets.iter().any(|s| s.entries.iter().any(|e| matches!(e, AddrEntry::Ip(n) if !n.is_host()))));
    let refs = p.set_refs();
    let c = Classifier::build(&p.ruleset, &refs).unwrap();
    let keys = synth::nsx_keys(&p, 1500, 6);
    let linear = CompiledRuleSet::compile(&p.ruleset, &refs).unwrap();
    let default = p.ruleset.rules.len() - 1;
    let mut specific = 0;
    for k in &keys {
        let want = linear.first_match_l3(k);
        assert_eq!(c.first_match(k), want, "{k:?}");
        specific += usize::from(want != Some(default));
    }
    assert!(specific * 2 > keys.len(), "headers drawn inside rules mostly hit them ({specific})");
    assert_batch_agrees(&c, &keys, &linear);

    // Move every key's source into (or out of) a set, then compare again against edited sets.
    let mut sets = p.sets.clone();
    let mut changes = Vec::new();
    for (i, k) in keys.iter().enumerate().take(300) {
        let s = i % sets.len();
        let n = IpNet::host(k.src);
        if i % 3 == 0 {
            sets[s].entries.retain(|e| *e != AddrEntry::Ip(n));
            changes.push((s, n, false));
        } else {
            if !sets[s].entries.contains(&AddrEntry::Ip(n)) {
                sets[s].entries.push(AddrEntry::Ip(n));
            }
            changes.push((s, n, true));
        }
    }
    let mc: Vec<MemberChange<'_>> =
        changes
            .iter()
            .map(|&(s, n, add)| {
                if add {
                    MemberChange::Add(&p.sets[s].id, n)
                } else {
                    MemberChange::Remove(&p.sets[s].id, n)
                }
            })
            .collect();
    c.apply(&mc).unwrap();
    let refs: Vec<&AddrSet> = sets.iter().collect();
    let linear = CompiledRuleSet::compile(&p.ruleset, &refs).unwrap();
    for k in &keys {
        assert_eq!(c.first_match(k), linear.first_match_l3(k), "{k:?}");
    }
    assert_batch_agrees(&c, &keys, &linear);
}

/// `first_match_batch` over `keys` as drawn and grouped by direction and family (so that whole
/// batches take the lockstep path with membership probes) gives the linear scan's answers.
fn assert_batch_agrees(c: &Classifier, keys: &[L3Key], linear: &CompiledRuleSet) {
    let mut grouped = keys.to_vec();
    grouped.sort_by_key(|k| (k.dir == Direction::Out, k.src.is_ipv6(), k.dst.is_ipv6()));
    for ks in [keys, &grouped[..]] {
        let mut out = vec![None; ks.len()];
        c.first_match_batch(ks, &mut out);
        let snap = c.snapshot();
        let mut out2 = vec![None; ks.len()];
        snap.first_match_batch(ks, &mut out2);
        for ((k, b), b2) in ks.iter().zip(&out).zip(&out2) {
            let want = linear.first_match_l3(k);
            assert_eq!(*b, want, "batch: {k:?}");
            assert_eq!(*b2, want, "snapshot batch: {k:?}");
        }
    }
}
