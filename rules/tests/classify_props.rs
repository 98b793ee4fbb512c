//! Property: on random rule sets (prefixes of both families, port ranges and sets, ICMP, address sets,
//! `not`, `any`, every direction and family, tied positions) and random keys, the classifier answers
//! exactly what the linear scan answers, one key at a time and in batches, before and after random
//! address-set member changes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use rules::classify::synth::Rng;
use rules::classify::MemberChange;
use rules::*;

const SETS: usize = 4;

fn v4(x: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(if x & 1 == 0 { 0x0a00_0000 | (x & 0x3f) } else { 0xc0a8_0100 | (x & 0x3f) }))
}

fn v6(x: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0xfd00_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(x & 0x3f) | u128::from(x & 1) << 70,
    ))
}

/// An address of the small universe both rules and keys draw from (so that they meet).
fn addr(rng: &mut Rng, six: bool) -> IpAddr {
    let x = rng.below(128) as u32;
    if six {
        v6(x)
    } else {
        v4(x)
    }
}

fn net(rng: &mut Rng, six: bool) -> IpNet {
    let a = addr(rng, six);
    let len = if six {
        [0u8, 60, 64, 72, 122, 126, 128, 128][rng.below(8)]
    } else {
        [0u8, 8, 24, 26, 28, 30, 32, 32][rng.below(8)]
    };
    // Host bits are kept on purpose: `10.0.0.5/24` must behave as `10.0.0.0/24`.
    IpNet::new(a, len).unwrap()
}

fn ports(rng: &mut Rng) -> Ports {
    let p = |rng: &mut Rng| rng.below(12) as u16 * 1000;
    match rng.below(6) {
        0..=2 => Ports::Any,
        3 => {
            let a = p(rng);
            Ports::Range(a, a)
        }
        4 => {
            let (a, b) = (p(rng), p(rng));
            Ports::Range(a.min(b), a.max(b))
        }
        _ => Ports::Set(
            (0..1 + rng.below(3))
                .map(|_| {
                    let (a, b) = (p(rng), p(rng));
                    (a.min(b), a.max(b))
                })
                .collect(),
        ),
    }
}

fn endpoint(rng: &mut Rng, six: bool) -> Endpoint {
    match rng.below(8) {
        0 | 1 => Endpoint::Any,
        2 | 3 => Endpoint::AddrSet { id: format!("s{}", rng.below(SETS)), negated: false },
        4 => Endpoint::AddrSet { id: format!("s{}", rng.below(SETS)), negated: true },
        5 | 6 => Endpoint::Ip { net: net(rng, six), negated: false },
        _ => Endpoint::Ip { net: net(rng, six), negated: true },
    }
}

fn rule(rng: &mut Rng, i: u32, positions: u32) -> Rule {
    let dir = [RuleDir::In, RuleDir::Out, RuleDir::InOut][rng.below(3)];
    let family = [Family::Any, Family::Any, Family::Inet, Family::Inet6][rng.below(4)];
    // Endpoints mostly agree with the family; sometimes not (such rules never match).
    let six = match family {
        Family::Inet6 => !rng.chance(0.1),
        Family::Inet => rng.chance(0.1),
        Family::Any => rng.chance(0.4),
    };
    let proto = [
        Protocol::Any,
        Protocol::Any,
        Protocol::Number(6),
        Protocol::Number(17),
        Protocol::Number(1),
        Protocol::Number(58),
    ][rng.below(6)];
    let (sport, dport) =
        if proto.may_have_ports() { (ports(rng), ports(rng)) } else { (Ports::Any, Ports::Any) };
    let icmp = match (proto.is_icmp() || proto == Protocol::Any, rng.below(3)) {
        (true, 0) => IcmpMatch::Type(rng.below(3) as u8),
        (true, 1) => IcmpMatch::TypeCode(rng.below(3) as u8, rng.below(2) as u8),
        _ => IcmpMatch::Any,
    };
    let m = IpMatch {
        family,
        proto,
        strict: false,
        src: endpoint(rng, six),
        sport,
        dst: endpoint(rng, six),
        dport,
        icmp,
    };
    // Positions collide on purpose: ties keep text order, as in the linear scan.
    Rule::ip(100 + i, 1 + rng.below(positions as usize) as u32, dir, m, Action::Accept)
}

fn addrset(rng: &mut Rng, k: usize) -> AddrSet {
    let entries = (0..rng.below(7))
        .map(|_| {
            let six = rng.chance(0.3);
            if rng.chance(0.7) {
                AddrEntry::Ip(IpNet::host(addr(rng, six)))
            } else {
                AddrEntry::Ip(net(rng, six))
            }
        })
        .collect();
    AddrSet::new(format!("s{k}"), entries)
}

fn key(rng: &mut Rng) -> L3Key {
    let six = rng.chance(0.35);
    // Now and then a key whose addresses are of different families (no real packet has one).
    let dst_six = if rng.chance(0.03) { !six } else { six };
    let proto = [6u8, 17, 1, 58, 47][rng.below(5)];
    let ports = match (Protocol::Number(proto).has_ports(), rng.chance(0.05)) {
        (true, false) | (false, true) => Some((rng.below(12) as u16 * 1000, rng.below(12) as u16 * 1000)),
        _ => None,
    };
    let icmp = match (Protocol::Number(proto).is_icmp(), rng.chance(0.05)) {
        (true, false) | (false, true) => Some((rng.below(3) as u8, rng.below(2) as u8)),
        _ => None,
    };
    L3Key {
        dir: if rng.chance(0.5) { Direction::In } else { Direction::Out },
        src: addr(rng, six),
        dst: addr(rng, dst_six),
        proto,
        ports,
        icmp,
    }
}

fn compare(c: &Classifier, set: &RuleSet, sets: &[AddrSet], keys: &[L3Key], seed: u64, stage: &str) {
    let refs: Vec<&AddrSet> = sets.iter().collect();
    let linear = CompiledRuleSet::compile(set, &refs).unwrap();
    let mut batch = vec![None; keys.len()];
    c.first_match_batch(keys, &mut batch);
    for (k, b) in keys.iter().zip(&batch) {
        let want = linear.first_match_l3(k);
        assert_eq!(c.first_match(k), want, "seed {seed} {stage}: {k:?}\nrules:\n{set}");
        assert_eq!(*b, want, "seed {seed} {stage} (batch): {k:?}");
    }
    // Grouped by direction and family, whole batches take the lockstep path (with membership).
    let mut grouped = keys.to_vec();
    grouped.sort_by_key(|k| (k.dir == Direction::Out, k.src.is_ipv6(), k.dst.is_ipv6()));
    let mut batch = vec![None; grouped.len()];
    c.first_match_batch(&grouped, &mut batch);
    for (k, b) in grouped.iter().zip(&batch) {
        assert_eq!(*b, linear.first_match_l3(k), "seed {seed} {stage} (grouped batch): {k:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn classifier_agrees_with_linear_scan(seed in any::<u64>(), n in 1usize..90) {
        let mut rng = Rng::new(seed);
        let positions = 1 + rng.below(2 * n) as u32;
        let mut set = RuleSet::new("mainrs");
        set.rules = (0..n as u32).map(|i| rule(&mut rng, i, positions)).collect();
        let mut sets: Vec<AddrSet> = (0..SETS).map(|k| addrset(&mut rng, k)).collect();
        let refs: Vec<&AddrSet> = sets.iter().collect();
        let c = Classifier::build(&set, &refs).unwrap();
        let keys: Vec<L3Key> = (0..300).map(|_| key(&mut rng)).collect();
        compare(&c, &set, &sets, &keys, seed, "built");

        // Member changes: the classifier's published version against a linear scan over edited sets.
        for round in 0..3 {
            let mut changes = Vec::new();
            for _ in 0..1 + rng.below(6) {
                let k = rng.below(SETS);
                let six = rng.chance(0.3);
                let n = if rng.chance(0.6) { IpNet::host(addr(&mut rng, six)) } else { net(&mut rng, six) };
                let entry = AddrEntry::Ip(n);
                let s = &mut sets[k];
                let present = s.entries.iter().any(|e| matches!(e, AddrEntry::Ip(x) if x.network() == n.network()));
                if present && rng.chance(0.6) {
                    s.entries.retain(|e| !matches!(e, AddrEntry::Ip(x) if x.network() == n.network()));
                    changes.push((k, n, false));
                } else {
                    if !present {
                        s.entries.push(entry);
                    }
                    changes.push((k, n, true));
                }
            }
            let before = c.generation();
            let ids: Vec<String> = (0..SETS).map(|k| format!("s{k}")).collect();
            let mc: Vec<MemberChange<'_>> = changes
                .iter()
                .map(|&(k, n, add)| if add { MemberChange::Add(&ids[k], n) } else { MemberChange::Remove(&ids[k], n) })
                .collect();
            prop_assert_eq!(c.apply(&mc).unwrap(), before + 1);
            compare(&c, &set, &sets, &keys, seed, &format!("after change round {round}"));
        }
    }
}
