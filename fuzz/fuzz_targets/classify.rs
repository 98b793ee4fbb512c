//! Rules, address sets and headers built from the input: the decision-tree classifier answers every
//! header as the linear first-match scan does, one at a time and in batches, before and after member
//! changes (which it applies without a rebuild).
//!
//! Addresses come from a small universe (`10.0.A.B`, `fd00::A:B` with A < 4) so rules, members and
//! headers overlap; prefixes take lengths near the universe's edges.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use rules::classify::Snapshot;
use rules::{
    AddrEntry, AddrSet, Classifier, CompiledRuleSet, Direction, Endpoint, Family, IcmpMatch, IpMatch, IpNet,
    L3Key, MemberChange, Ports, Protocol, Rule, RuleDir, RuleSet,
};

/// The input as a stream of bytes (zeros once it runs out).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn addr(&mut self, v6: bool) -> IpAddr {
        let (a, b) = (self.u8() & 3, self.u8());
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, u16::from(a), u16::from(b)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, a, b))
        }
    }

    fn net(&mut self) -> IpNet {
        let sel = self.u8();
        let v6 = sel & 1 != 0;
        let len = if v6 {
            [0, 64, 110, 112, 120, 126, 127, 128][usize::from(sel >> 1 & 7)]
        } else {
            [0, 8, 16, 22, 24, 28, 31, 32][usize::from(sel >> 1 & 7)]
        };
        IpNet::new(self.addr(v6), len).expect("lengths fit their family")
    }

    fn port(&mut self) -> u16 {
        // Mostly near the well-known edges, sometimes anywhere.
        let p = self.u16();
        if p & 0x8000 != 0 {
            p
        } else {
            [0, 1, 22, 53, 79, 80, 81, 443, 1023, 1024, 65534, 65535][usize::from(p % 12)]
        }
    }

    fn ports(&mut self) -> Ports {
        match self.u8() % 4 {
            0 | 1 => Ports::Any,
            2 => {
                let (a, b) = (self.port(), self.port());
                Ports::Range(a.min(b), a.max(b))
            }
            _ => {
                let n = self.u8() % 3 + 1;
                Ports::Set(
                    (0..n)
                        .map(|_| {
                            let (a, b) = (self.port(), self.port());
                            (a.min(b), a.max(b))
                        })
                        .collect(),
                )
            }
        }
    }

    fn endpoint(&mut self, sets: usize) -> Endpoint {
        let sel = self.u8();
        match sel % 4 {
            0 | 1 => Endpoint::Any,
            2 if sets > 0 => {
                Endpoint::AddrSet { id: format!("s{}", usize::from(sel >> 3) % sets), negated: sel & 4 != 0 }
            }
            _ => Endpoint::Ip { net: self.net(), negated: sel & 4 != 0 },
        }
    }

    fn proto(&mut self) -> u8 {
        let p = self.u8();
        [6, 17, 1, 58, 132, 47, 6, 17][usize::from(p & 7)]
    }
}

fn rule(b: &mut Bytes<'_>, i: u32, sets: usize) -> Rule {
    let sel = b.u8();
    let dir = [RuleDir::In, RuleDir::Out, RuleDir::InOut, RuleDir::InOut][usize::from(sel & 3)];
    let family = [Family::Any, Family::Any, Family::Inet, Family::Inet6][usize::from(sel >> 2 & 3)];
    let proto = if sel & 0x30 == 0 { Protocol::Any } else { Protocol::Number(b.proto()) };
    let ported = matches!(proto, Protocol::Number(6 | 17 | 132));
    let icmp = match (proto, b.u8() % 4) {
        (Protocol::Number(1 | 58), 1) => IcmpMatch::Type(b.u8() % 4 * 4),
        (Protocol::Number(1 | 58), 2) => IcmpMatch::TypeCode(b.u8() % 4 * 4, b.u8() % 3),
        _ => IcmpMatch::Any,
    };
    let m = IpMatch {
        family,
        proto,
        strict: false,
        src: b.endpoint(sets),
        sport: if ported { b.ports() } else { Ports::Any },
        dst: b.endpoint(sets),
        dport: if ported { b.ports() } else { Ports::Any },
        icmp,
    };
    Rule::ip(i, i + 1, dir, m, rules::Action::Accept)
}

fn key(b: &mut Bytes<'_>) -> L3Key {
    let sel = b.u8();
    let v6 = sel & 1 != 0;
    let proto = b.proto();
    L3Key {
        dir: if sel & 2 != 0 { Direction::In } else { Direction::Out },
        src: b.addr(v6),
        dst: b.addr(v6),
        proto,
        ports: matches!(proto, 6 | 17 | 132).then(|| (b.port(), b.port())),
        icmp: matches!(proto, 1 | 58).then(|| (b.u8() % 4 * 4, b.u8() % 3)),
    }
}

/// Every key's answer from the classifier, single and batched, and from `snap` (a snapshot carried
/// along by `Snapshot::with_changes`), equals the linear scan's.
fn agree(c: &Classifier, snap: &Snapshot, set: &RuleSet, sets: &[AddrSet], keys: &[L3Key], when: &str) {
    let refs: Vec<&AddrSet> = sets.iter().collect();
    let linear = CompiledRuleSet::compile(set, &refs).expect("every set a rule names exists");
    let want: Vec<Option<usize>> = keys.iter().map(|k| linear.first_match_l3(k)).collect();
    for (k, w) in keys.iter().zip(&want) {
        assert_eq!(c.first_match(k), *w, "{when}: single lookup of {k:?}");
        assert_eq!(snap.first_match(k), *w, "{when}: snapshot's lookup of {k:?}");
    }
    let mut out = vec![None; keys.len()];
    c.first_match_batch(keys, &mut out);
    assert_eq!(out, want, "{when}: batch");
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let nsets = usize::from(b.u8() % 4);
    let mut sets: Vec<AddrSet> = (0..nsets)
        .map(|i| {
            let n = b.u8() % 6;
            AddrSet::new(format!("s{i}"), (0..n).map(|_| AddrEntry::Ip(b.net())).collect())
        })
        .collect();
    let nrules = u32::from(b.u8() % 40) + 1;
    let mut set = RuleSet::new("mainrs");
    set.rules = (0..nrules).map(|i| rule(&mut b, i, nsets)).collect();
    let mut keys: Vec<L3Key> = Vec::new();
    while !b.is_empty() && keys.len() < 200 {
        keys.push(key(&mut b));
    }
    let refs: Vec<&AddrSet> = sets.iter().collect();
    // To turn a failing input into a test: the rules, sets and headers as text.
    if std::env::var_os("DFW_FUZZ_DUMP").is_some() {
        eprintln!("{set}");
        for s in &sets {
            eprintln!("{s}");
        }
        for k in &keys {
            eprintln!("{k:?}");
        }
    }
    let c = Classifier::build(&set, &refs).expect("every set a rule names exists");
    let mut snap = c.snapshot();
    agree(&c, &snap, &set, &sets, &keys, "built");
    if nsets == 0 {
        return;
    }
    // Member changes drawn from the keys' own addresses and their neighbourhoods, applied in place.
    for (i, k) in keys.iter().enumerate().take(8) {
        let s = i % nsets;
        let addr = if i % 2 == 0 { k.src } else { k.dst };
        let len = if addr.is_ipv4() { [32, 24, 31][i % 3] } else { [128, 120, 127][i % 3] };
        let net = IpNet::new(addr, len).expect("lengths fit their family").network();
        let id = format!("s{s}");
        let present = sets[s].entries.iter().any(|e| matches!(e, AddrEntry::Ip(n) if n.network() == net));
        if present {
            sets[s].entries.retain(|e| !matches!(e, AddrEntry::Ip(n) if n.network() == net));
            c.apply(&[MemberChange::Remove(&id, net)]).expect("the set exists");
            snap = snap.with_changes(&[MemberChange::Remove(&id, net)]).expect("the set exists");
        } else {
            sets[s].entries.push(AddrEntry::Ip(net));
            c.apply(&[MemberChange::Add(&id, net)]).expect("the set exists");
            snap = snap.with_changes(&[MemberChange::Add(&id, net)]).expect("the set exists");
        }
        agree(&c, &snap, &set, &sets, &keys, &format!("after change {i}"));
    }
});
