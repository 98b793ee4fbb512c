//! First-match evaluation of a rule set against a packet's header fields.
//!
//! [`CompiledRuleSet`] resolves address-set references once, at load time, into hashed membership
//! indexes, sorts rules by position and then answers "which rule decides this packet" with a linear
//! scan. The scan is the reference semantics; the fast classifier (a later addition) must agree with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashSet;

use crate::model::*;

/// Membership index of one address set: exact addresses hashed, prefixes listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetIndex {
    v4: AHashSet<u32>,
    v6: AHashSet<u128>,
    prefixes: Vec<IpNet>,
    macs: AHashSet<[u8; 6]>,
}

impl SetIndex {
    /// Builds the index of `set`.
    pub fn new(set: &AddrSet) -> SetIndex {
        let mut idx = SetIndex::default();
        for e in &set.entries {
            match *e {
                AddrEntry::Ip(net) if net.is_host() => match net.addr {
                    IpAddr::V4(a) => {
                        idx.v4.insert(a.into());
                    }
                    IpAddr::V6(a) => {
                        idx.v6.insert(a.into());
                    }
                },
                AddrEntry::Ip(net) => idx.prefixes.push(net),
                AddrEntry::Mac(m) => {
                    idx.macs.insert(m.0);
                }
            }
        }
        idx
    }

    /// Whether `ip` is a member.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        let exact = match ip {
            IpAddr::V4(a) => self.v4.contains(&u32::from(a)),
            IpAddr::V6(a) => self.v6.contains(&u128::from(a)),
        };
        exact || self.prefixes.iter().any(|p| p.contains(ip))
    }

    /// Whether `mac` is a member.
    pub fn contains_mac(&self, mac: [u8; 6]) -> bool {
        self.macs.contains(&mac)
    }
}

/// The header fields an L3/L4 rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L3Key {
    /// Direction through the filter.
    pub dir: Direction,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub proto: u8,
    /// Source and destination ports, for TCP/UDP/SCTP first fragments.
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code, for ICMP/ICMPv6.
    pub icmp: Option<(u8, u8)>,
}

/// The header fields an L2 rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Key {
    /// Direction through the filter.
    pub dir: Direction,
    /// Ethertype after VLAN tags.
    pub ethertype: u16,
    /// Source MAC.
    pub src: [u8; 6],
    /// Destination MAC.
    pub dst: [u8; 6],
}

/// An address-set reference that names no set the filter can see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule} of rule set '{ruleset}' refers to undefined address set '{set}'")]
pub struct UndefinedSet {
    /// Rule set name.
    pub ruleset: String,
    /// Rule id.
    pub rule: u32,
    /// The missing set id.
    pub set: String,
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Any,
    Set { idx: usize, negated: bool },
    Net { net: IpNet, negated: bool },
}

/// A rule set ready for evaluation: rules sorted by position, set references resolved.
#[derive(Debug, Clone)]
pub struct CompiledRuleSet {
    /// The rule set as written.
    pub source: RuleSet,
    /// Indices into `source.rules`, in evaluation (position) order.
    order: Vec<usize>,
    /// Resolved (src, dst) per rule, parallel to `source.rules`.
    sides: Vec<(Side, Side)>,
    sets: Vec<Arc<SetIndex>>,
    /// The id of each of `sets`.
    set_ids: Vec<String>,
}

/// Membership indexes already built, keyed by the address of the [`AddrSet`] they index: filters that
/// share a set share one index. Valid while the sets it was filled from are alive and unchanged (one
/// policy load).
#[derive(Debug, Default)]
pub struct SetCache {
    built: HashMap<usize, Arc<SetIndex>>,
}

impl SetCache {
    /// Takes `index` as the index of `set` (which it must index exactly: say, one built for an equal
    /// set of the policy before).
    pub fn reuse(&mut self, set: &AddrSet, index: Arc<SetIndex>) {
        debug_assert!(*index == SetIndex::new(set));
        self.built.insert(set as *const AddrSet as usize, index);
    }

    fn index(&mut self, set: &AddrSet) -> Arc<SetIndex> {
        let key = set as *const AddrSet as usize;
        Arc::clone(self.built.entry(key).or_insert_with(|| Arc::new(SetIndex::new(set))))
    }
}

impl CompiledRuleSet {
    /// Compiles `set`, resolving address sets among `addrsets`.
    pub fn compile(set: &RuleSet, addrsets: &[&AddrSet]) -> Result<CompiledRuleSet, UndefinedSet> {
        CompiledRuleSet::compile_cached(set, addrsets, &mut SetCache::default())
    }

    /// [`CompiledRuleSet::compile`], taking membership indexes from (and adding them to) `cache`.
    pub fn compile_cached(
        set: &RuleSet,
        addrsets: &[&AddrSet],
        cache: &mut SetCache,
    ) -> Result<CompiledRuleSet, UndefinedSet> {
        let mut sets = Vec::new();
        // Sets used so far, by id (their places in `sets` and `ids`).
        let mut set_ids: ahash::AHashMap<&str, usize> = ahash::AHashMap::new();
        let mut ids = Vec::new();
        let finder = SetFinder::new(addrsets, 2 * set.rules.len());
        let mut resolve = |id: &str, negated: bool, rule: &Rule| -> Result<Side, UndefinedSet> {
            if let Some(&idx) = set_ids.get(id) {
                return Ok(Side::Set { idx, negated });
            }
            let found = finder.find(id).ok_or_else(|| UndefinedSet {
                ruleset: set.name.clone(),
                rule: rule.id,
                set: id.to_string(),
            })?;
            sets.push(cache.index(found));
            set_ids.insert(&found.id, sets.len() - 1);
            ids.push(found.id.clone());
            Ok(Side::Set { idx: sets.len() - 1, negated })
        };
        let mut sides = Vec::with_capacity(set.rules.len());
        for rule in &set.rules {
            let pair = match &rule.body {
                RuleBody::Ip(m) => {
                    let mut side = |e: &Endpoint| match e {
                        Endpoint::Any => Ok(Side::Any),
                        Endpoint::AddrSet { id, negated } => resolve(id, *negated, rule),
                        Endpoint::Ip { net, negated } => Ok(Side::Net { net: *net, negated: *negated }),
                    };
                    (side(&m.src)?, side(&m.dst)?)
                }
                RuleBody::Ether(m) => {
                    let mut side = |e: &MacEndpoint| match e {
                        MacEndpoint::Any => Ok(Side::Any),
                        MacEndpoint::AddrSet { id, negated } => resolve(id, *negated, rule),
                    };
                    (side(&m.src)?, side(&m.dst)?)
                }
            };
            sides.push(pair);
        }
        let mut order: Vec<usize> = (0..set.rules.len()).collect();
        order.sort_by_key(|&i| set.rules[i].position);
        Ok(CompiledRuleSet { source: set.clone(), order, sides, sets, set_ids: ids })
    }

    /// True when both decide every packet alike for the same reasons: same rules (comments and
    /// metadata aside) over the same set contents.
    pub fn same_as(&self, other: &CompiledRuleSet) -> bool {
        self.source.name == other.source.name
            && self.source.rules.len() == other.source.rules.len()
            && self.source.rules.iter().zip(&other.source.rules).all(|(a, b)| {
                (a.id, a.position, a.dir, &a.body, a.stateless, a.action, a.log)
                    == (b.id, b.position, b.dir, &b.body, b.stateless, b.action, b.log)
            })
            && self.sets == other.sets
    }

    /// The membership index of each address set the rules use, by set id.
    pub fn set_indexes(&self) -> impl Iterator<Item = (&str, &Arc<SetIndex>)> {
        self.set_ids.iter().map(String::as_str).zip(&self.sets)
    }

    /// The rule set's name.
    pub fn name(&self) -> &str {
        &self.source.name
    }

    /// The first rule (by position) matching an IP packet, as an index into `source.rules`.
    pub fn first_match_l3(&self, key: &L3Key) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let rule = &self.source.rules[i];
            let RuleBody::Ip(m) = &rule.body else { return false };
            let (src, dst) = self.sides[i];
            rule.dir.covers(key.dir)
                && family_ok(m.family, key.src)
                && (m.proto == Protocol::Any || m.proto == Protocol::Number(key.proto))
                && self.ip_side(src, key.src)
                && self.ip_side(dst, key.dst)
                && ports_ok(&m.sport, key.ports.map(|p| p.0))
                && ports_ok(&m.dport, key.ports.map(|p| p.1))
                && icmp_ok(m.icmp, key.icmp)
        })
    }

    /// The first rule (by position) matching a frame at L2, as an index into `source.rules`.
    pub fn first_match_l2(&self, key: &L2Key) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let rule = &self.source.rules[i];
            let RuleBody::Ether(m) = &rule.body else {
                return false;
            };
            let (src, dst) = self.sides[i];
            rule.dir.covers(key.dir)
                && m.ethertype.is_none_or(|t| t == key.ethertype)
                && self.mac_side(src, key.src)
                && self.mac_side(dst, key.dst)
        })
    }

    /// The rule at `index` of `source.rules`.
    pub fn rule(&self, index: usize) -> &Rule {
        &self.source.rules[index]
    }

    fn ip_side(&self, side: Side, ip: IpAddr) -> bool {
        match side {
            Side::Any => true,
            Side::Set { idx, negated } => self.sets[idx].contains_ip(ip) != negated,
            // An address written in a rule implies its family (as in pf): `not ip 10.0.0.0/8` does not
            // match IPv6 packets.
            Side::Net { net, negated } => net.addr.is_ipv4() == ip.is_ipv4() && (net.contains(ip) != negated),
        }
    }

    fn mac_side(&self, side: Side, mac: [u8; 6]) -> bool {
        match side {
            Side::Any => true,
            Side::Set { idx, negated } => self.sets[idx].contains_mac(mac) != negated,
            Side::Net { .. } => false,
        }
    }
}

pub(crate) fn family_ok(f: Family, ip: IpAddr) -> bool {
    match f {
        Family::Any => true,
        Family::Inet => ip.is_ipv4(),
        Family::Inet6 => ip.is_ipv6(),
    }
}

pub(crate) fn ports_ok(rule: &Ports, port: Option<u16>) -> bool {
    match (rule, port) {
        (Ports::Any, _) => true,
        (_, None) => false,
        (r, Some(p)) => r.contains(p),
    }
}

pub(crate) fn icmp_ok(rule: IcmpMatch, icmp: Option<(u8, u8)>) -> bool {
    match (rule, icmp) {
        (IcmpMatch::Any, _) => true,
        (IcmpMatch::Type(t), Some((pt, _))) => t == pt,
        (IcmpMatch::TypeCode(t, c), Some((pt, pc))) => t == pt && c == pc,
        _ => false,
    }
}

/// Address sets by id, the first of each id: the one rules see (a filter's own sets come before the
/// shared ones in [`crate::Policy::addrsets_for`]).
pub fn sets_by_id<'a>(sets: &[&'a AddrSet]) -> ahash::AHashMap<&'a str, &'a AddrSet> {
    let mut m = ahash::AHashMap::with_capacity(sets.len());
    for s in sets {
        m.entry(s.id.as_str()).or_insert(*s);
    }
    m
}

/// Finds address sets by id among a list (the first of an id, as [`sets_by_id`]) for a known number
/// of lookups: hashed when lookups × sets is large (an NSX rule set refers to thousands of sets tens
/// of thousands of times), else a scan per lookup (hashing every set for each of thousands of small
/// filters cost more than it saved).
pub(crate) struct SetFinder<'s, 'a> {
    sets: &'s [&'a AddrSet],
    by_id: Option<ahash::AHashMap<&'a str, &'a AddrSet>>,
}

impl<'s, 'a> SetFinder<'s, 'a> {
    pub(crate) fn new(sets: &'s [&'a AddrSet], lookups: usize) -> SetFinder<'s, 'a> {
        let by_id = (lookups.saturating_mul(sets.len()) > 1 << 16).then(|| sets_by_id(sets));
        SetFinder { sets, by_id }
    }

    pub(crate) fn find(&self, id: &str) -> Option<&'a AddrSet> {
        match &self.by_id {
            Some(m) => m.get(id).copied(),
            None => self.sets.iter().copied().find(|s| s.id == id),
        }
    }
}
