//! What the engine enforces, compiled from a policy: one [`FilterConfig`] per filter, gathered into an
//! immutable [`Snapshot`] that is swapped whole (arc-swap) when anything changes. A frame is decided
//! wholly by one snapshot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashMap;
use rules::{AddrSet, CompiledRuleSet, FailurePolicy, FilterSpec, Policy, PolicyChange, Vnic};

use crate::LoadError;

/// Connection timers in seconds (NSX DFW defaults, pf's timer names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the first packet (SYN sent).
    pub tcp_first: u32,
    /// TCP while the handshake completes.
    pub tcp_opening: u32,
    /// TCP established.
    pub tcp_established: u32,
    /// TCP after the first FIN.
    pub tcp_closing: u32,
    /// TCP after both FINs.
    pub tcp_finwait: u32,
    /// TCP after RST / both sides closed.
    pub tcp_closed: u32,
    /// UDP / other after the first packet.
    pub udp_first: u32,
    /// UDP / other when only the initiator has sent more.
    pub udp_single: u32,
    /// UDP / other when both sides have sent.
    pub udp_multiple: u32,
    /// ICMP after the first packet.
    pub icmp_first: u32,
    /// ICMP after a reply.
    pub icmp_error: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_first: 120,
            tcp_opening: 30,
            tcp_established: 43200,
            tcp_closing: 120,
            tcp_finwait: 45,
            tcp_closed: 20,
            udp_first: 60,
            udp_single: 30,
            udp_multiple: 60,
            icmp_first: 20,
            icmp_error: 10,
        }
    }
}

impl Timeouts {
    /// The NSX defaults with a filter's `timeout name seconds;` overrides applied.
    pub fn with_overrides(overrides: &[(String, u32)]) -> Timeouts {
        let mut t = Timeouts::default();
        for (name, secs) in overrides {
            if let Some(slot) = t.slot(name) {
                *slot = *secs;
            }
        }
        t
    }

    fn slot(&mut self, name: &str) -> Option<&mut u32> {
        Some(match name {
            "tcp.first" => &mut self.tcp_first,
            "tcp.opening" => &mut self.tcp_opening,
            "tcp.established" => &mut self.tcp_established,
            "tcp.closing" => &mut self.tcp_closing,
            "tcp.finwait" => &mut self.tcp_finwait,
            "tcp.closed" => &mut self.tcp_closed,
            "udp.first" => &mut self.udp_first,
            "udp.single" => &mut self.udp_single,
            "udp.multiple" => &mut self.udp_multiple,
            "icmp.first" => &mut self.icmp_first,
            "icmp.error" => &mut self.icmp_error,
            _ => return None,
        })
    }

    /// `(name, seconds)` for every timer, in `gettimeout` order.
    pub fn list(&self) -> [(&'static str, u32); 11] {
        [
            ("tcp.first", self.tcp_first),
            ("tcp.opening", self.tcp_opening),
            ("tcp.established", self.tcp_established),
            ("tcp.closing", self.tcp_closing),
            ("tcp.finwait", self.tcp_finwait),
            ("tcp.closed", self.tcp_closed),
            ("udp.first", self.udp_first),
            ("udp.single", self.udp_single),
            ("udp.multiple", self.udp_multiple),
            ("icmp.first", self.icmp_first),
            ("icmp.error", self.icmp_error),
        ]
    }
}

/// L3 rule sets with more rules than this get the decision-tree classifier; smaller ones are scanned
/// (membership is hashed either way). Building a classifier costs far more than a short scan saves,
/// and a policy compiled from NetworkPolicy has thousands of filters of a few dozen rules each.
pub const FAST_CLASSIFIER_RULES: usize = 64;

/// Default most connections one filter tracks.
pub const DEFAULT_FILTER_CONNECTIONS: usize = 1 << 20;

/// ICMP / ICMPv6 errors a filter's `reject` rules send per second unless `icmpErrorRate` says
/// otherwise: Linux's default for the errors a host sends (`net.ipv4.icmp_msgs_per_sec`).
pub const DEFAULT_ICMP_ERROR_RATE: u32 = 1000;

/// One filter, compiled.
#[derive(Debug)]
pub struct FilterConfig {
    /// Filter name.
    pub name: String,
    /// Stable number of the filter across policy versions (index of its per-worker state).
    pub slot: usize,
    /// The guarded vNIC.
    pub vnic: Vnic,
    /// What happens when nothing is loaded.
    pub failure: FailurePolicy,
    /// Timers.
    pub timeouts: Timeouts,
    /// Most connections tracked.
    pub max_connections: usize,
    /// Most ICMP / ICMPv6 errors `reject` rules send per second (bursts of a twentieth of it).
    pub icmp_error_rate: u32,
    /// Re-check established connections after a policy change?
    pub policy_change: PolicyChange,
    /// Keep per-connection packet and byte counts (`flowCounts on;`)? Connections of logged rules
    /// are counted either way.
    pub flow_counts: bool,
    /// L2 rule set.
    pub l2: Option<CompiledRuleSet>,
    /// L3 rule set.
    pub l3: Option<CompiledRuleSet>,
    /// The fast classifier over `l3`, for rule sets large enough to need one (answers exactly as the
    /// linear scan of `l3`, which small sets keep using).
    pub l3_fast: Option<rules::classify::Snapshot>,
    /// Generation of this filter's policy: advances whenever its rules or sets change.
    pub generation: u64,
    /// When this generation took effect (ns since the UNIX epoch; packet clock in replay).
    pub realized_ns: u64,
    /// Short hash of the name, as in NSX packet logs.
    pub hash: u32,
}

impl FilterConfig {
    /// The first L3 rule matching `key`, as an index into the L3 rule set's rules.
    #[inline]
    pub fn first_match_l3(&self, key: &rules::L3Key) -> Option<usize> {
        match (&self.l3_fast, &self.l3) {
            (Some(fast), _) => fast.first_match(key),
            (None, Some(l3)) => l3.first_match_l3(key),
            (None, None) => None,
        }
    }

    /// The name of the rule set a rule reference points into.
    pub fn ruleset_name(&self, l2: bool) -> Option<&str> {
        if l2 { self.l2.as_ref() } else { self.l3.as_ref() }.map(|r| r.name())
    }

    /// Whether two configs enforce the same thing (rules, sets, vNIC, options).
    fn same_policy(&self, other: &FilterConfig) -> bool {
        let sets = |a: &Option<CompiledRuleSet>, b: &Option<CompiledRuleSet>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        };
        self.vnic == other.vnic
            && self.failure == other.failure
            && self.timeouts == other.timeouts
            && self.max_connections == other.max_connections
            && self.icmp_error_rate == other.icmp_error_rate
            && self.policy_change == other.policy_change
            && self.flow_counts == other.flow_counts
            && sets(&self.l2, &other.l2)
            && sets(&self.l3, &other.l3)
    }
}

/// FNV-1a of a filter name: the 8-hex-digit "filter hash" of NSX logs and `getfilters`.
pub fn filter_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Everything the engine enforces at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Engine-wide generation: advances on every commit.
    pub generation: u64,
    /// Filters in policy order.
    pub filters: Vec<Arc<FilterConfig>>,
    by_mac: AHashMap<[u8; 6], usize>,
    by_ip: AHashMap<IpAddr, usize>,
    /// The MACs of `by_mac` as words, for a linear scan when there are few (faster than hashing);
    /// `None` when there are more than [`SMALL`].
    small_macs: Option<Vec<(u64, usize)>>,
    /// Few vNICs, all known by MAC: a MAC alone settles every frame's vNIC ([`Snapshot::vnic_small`]).
    mac_only: bool,
}

/// Up to this many vNIC MACs are found by a linear scan.
const SMALL: usize = 16;

#[inline]
pub(crate) fn mac_word(m: [u8; 6]) -> u64 {
    let [a, b, c, d, e, f] = m;
    u64::from(u32::from_le_bytes([a, b, c, d])) | u64::from(u16::from_le_bytes([e, f])) << 32
}

impl Snapshot {
    /// The filter guarding the vNIC with this MAC (when the frame has one) or else this IP, which is
    /// asked for only when the MAC does not settle it.
    #[inline]
    pub fn vnic(&self, mac: Option<[u8; 6]>, ip: impl FnOnce() -> Option<IpAddr>) -> Option<usize> {
        if let Some(found) = mac.and_then(|m| self.vnic_small(m)) {
            return found;
        }
        self.vnic_any(mac, ip())
    }

    /// The usual case in line: when there are a few vNICs, all known by MAC, the vNIC with MAC `m`
    /// (`Some(None)`: none); `None` when the general lookup is needed.
    #[inline]
    pub fn vnic_small(&self, m: [u8; 6]) -> Option<Option<usize>> {
        if self.mac_only {
            self.scan_small(m)
        } else {
            None
        }
    }

    /// The MACs of the vNICs (as [`mac_word`]s) and their filters, when they are few and every vNIC is
    /// known by MAC alone (so [`Snapshot::vnic_small`] answers for every MAC).
    #[inline]
    pub(crate) fn few_macs(&self) -> Option<&[(u64, usize)]> {
        if self.mac_only {
            self.small_macs.as_deref()
        } else {
            None
        }
    }

    /// The vNIC with MAC `m` by a linear scan (`Some(None)`: none), when there are few MACs.
    #[inline]
    fn scan_small(&self, m: [u8; 6]) -> Option<Option<usize>> {
        let w = mac_word(m);
        self.small_macs.as_ref().map(|macs| macs.iter().find(|(x, _)| *x == w).map(|&(_, i)| i))
    }

    fn vnic_any(&self, mac: Option<[u8; 6]>, ip: Option<IpAddr>) -> Option<usize> {
        if let Some(m) = mac {
            let found = match self.scan_small(m) {
                Some(found) => found,
                None => self.by_mac.get(&m).copied(),
            };
            if found.is_some() {
                return found;
            }
        }
        if self.by_ip.is_empty() {
            return None;
        }
        // A vNIC without a MAC is matched by IP; so is any frame without MACs (raw IP, SLL).
        let i = *self.by_ip.get(&ip?)?;
        match (mac, self.filters[i].vnic.mac) {
            (Some(_), Some(_)) => None,
            _ => Some(i),
        }
    }

    /// The filter named `name`.
    pub fn filter(&self, name: &str) -> Option<(usize, &Arc<FilterConfig>)> {
        self.filters.iter().enumerate().find(|(_, f)| f.name == name)
    }

    /// Compiles `policy` into the snapshot that follows `prev`. Filters whose policy did not change keep
    /// their config (and generation); changed ones get `prev.generation + 1`. `slots` maps filter names
    /// to stable slot numbers and grows as new filters appear.
    ///
    /// With `prev_policy` (the model `prev` was built from), filters whose own text and whose shared
    /// rule sets and address sets did not change are reused without compiling, so an address-set change
    /// in a policy of thousands of filters costs only the filters that use the set.
    pub fn build(
        policy: &Policy,
        prev_policy: Option<&Policy>,
        prev: &Snapshot,
        slots: &mut HashMap<String, usize>,
        now_ns: u64,
    ) -> Result<Snapshot, LoadError> {
        let generation = prev.generation + 1;
        let mut filters = Vec::with_capacity(policy.filters.len());
        let mut by_mac = AHashMap::new();
        let mut by_ip = AHashMap::new();
        let by_name: HashMap<&str, &Arc<FilterConfig>> =
            prev.filters.iter().map(|f| (f.name.as_str(), f)).collect();
        let changes = prev_policy.map(|old| Changes::between(old, policy));
        let mut cache = rules::SetCache::default();
        for spec in &policy.filters {
            let next_slot = slots.len();
            let slot = *slots.entry(spec.name.clone()).or_insert(next_slot);
            let old = by_name.get(spec.name.as_str()).copied();
            if let (Some(old), Some(ch)) = (old, &changes) {
                if ch.unchanged(spec, policy) {
                    filters.push(Arc::clone(old));
                    index_vnic(&spec.vnic, filters.len() - 1, &mut by_mac, &mut by_ip, &spec.name, &filters)?;
                    continue;
                }
            }
            // A filter with a fast classifier takes member changes in place.
            let prev = match (old, prev_policy, &changes) {
                (Some(old), Some(old_policy), Some(ch)) if old.l3_fast.is_some() => ch
                    .old_specs
                    .get(spec.name.as_str())
                    .map(|s| Prev { cfg: old, sets: rules::sets_by_id(&old_policy.addrsets_for(s)) }),
                _ => None,
            };
            let mut cfg = compile_filter(policy, spec, slot, generation, now_ns, &mut cache, prev)?;
            if let Some(old) = old {
                if old.same_policy(&cfg) {
                    filters.push(Arc::clone(old));
                    index_vnic(&spec.vnic, filters.len() - 1, &mut by_mac, &mut by_ip, &spec.name, &filters)?;
                    continue;
                }
                cfg.generation = generation.max(old.generation + 1);
            }
            filters.push(Arc::new(cfg));
            index_vnic(&spec.vnic, filters.len() - 1, &mut by_mac, &mut by_ip, &spec.name, &filters)?;
        }
        let small_macs =
            (by_mac.len() <= SMALL).then(|| by_mac.iter().map(|(m, i)| (mac_word(*m), *i)).collect());
        let mac_only = by_mac.len() <= SMALL && by_ip.is_empty();
        Ok(Snapshot { generation, filters, by_mac, by_ip, small_macs, mac_only })
    }
}

/// What changed between two policy models, for reusing compiled filters.
struct Changes<'a> {
    old_specs: HashMap<&'a str, &'a FilterSpec>,
    /// Shared address sets added, removed or changed.
    sets: std::collections::HashSet<&'a str>,
    /// Shared rule sets added, removed or changed.
    rulesets: std::collections::HashSet<&'a str>,
}

impl<'a> Changes<'a> {
    fn between(old: &'a Policy, new: &'a Policy) -> Changes<'a> {
        fn diff<'a, T: PartialEq>(
            old: &'a [T],
            new: &'a [T],
            key: impl Fn(&'a T) -> &'a str,
        ) -> std::collections::HashSet<&'a str> {
            let o: HashMap<&str, &T> = old.iter().map(|x| (key(x), x)).collect();
            let n: HashMap<&str, &T> = new.iter().map(|x| (key(x), x)).collect();
            let mut out: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for (k, v) in &o {
                if n.get(k) != Some(v) {
                    out.insert(k);
                }
            }
            for k in n.keys() {
                if !o.contains_key(k) {
                    out.insert(k);
                }
            }
            out
        }
        Changes {
            old_specs: old.filters.iter().map(|f| (f.name.as_str(), f)).collect(),
            sets: diff(&old.addrsets, &new.addrsets, |a| a.id.as_str()),
            rulesets: diff(&old.rulesets, &new.rulesets, |r| r.name.as_str()),
        }
    }

    /// True when `spec` (in `policy`) compiles to exactly what it compiled to before.
    fn unchanged(&self, spec: &FilterSpec, policy: &Policy) -> bool {
        let Some(old) = self.old_specs.get(spec.name.as_str()) else { return false };
        let same_own = old.vnic == spec.vnic
            && old.failure == spec.failure
            && old.timeouts == spec.timeouts
            && old.max_connections == spec.max_connections
            && old.icmp_error_rate == spec.icmp_error_rate
            && old.policy_change == spec.policy_change
            && old.flow_counts == spec.flow_counts
            && old.rulesets == spec.rulesets
            && old.addrsets == spec.addrsets;
        if !same_own {
            return false;
        }
        for rs in policy.rulesets_for(spec) {
            let own = spec.rulesets.iter().any(|r| r.name == rs.name);
            if !own && self.rulesets.contains(rs.name.as_str()) {
                return false;
            }
            for rule in &rs.rules {
                let refs: [Option<&str>; 2] = match &rule.body {
                    rules::RuleBody::Ip(m) => [set_ref(&m.src), set_ref(&m.dst)],
                    rules::RuleBody::Ether(m) => [mac_set_ref(&m.src), mac_set_ref(&m.dst)],
                };
                for id in refs.into_iter().flatten() {
                    let own_set = spec.addrsets.iter().any(|a| a.id == id);
                    if !own_set && self.sets.contains(id) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

fn set_ref(e: &rules::Endpoint) -> Option<&str> {
    match e {
        rules::Endpoint::AddrSet { id, .. } => Some(id),
        _ => None,
    }
}

fn mac_set_ref(e: &rules::MacEndpoint) -> Option<&str> {
    match e {
        rules::MacEndpoint::AddrSet { id, .. } => Some(id),
        _ => None,
    }
}

fn index_vnic(
    vnic: &Vnic,
    i: usize,
    by_mac: &mut AHashMap<[u8; 6], usize>,
    by_ip: &mut AHashMap<IpAddr, usize>,
    name: &str,
    filters: &[Arc<FilterConfig>],
) -> Result<(), LoadError> {
    let clash = |other: usize, what: String| LoadError::VnicClash {
        first: filters[other].name.clone(),
        second: name.to_string(),
        address: what,
    };
    if let Some(m) = vnic.mac {
        if let Some(prev) = by_mac.insert(m.0, i) {
            return Err(clash(prev, m.to_string()));
        }
    }
    for ip in &vnic.ips {
        if let Some(prev) = by_ip.insert(*ip, i) {
            return Err(clash(prev, ip.to_string()));
        }
    }
    Ok(())
}

/// What a filter compiled to in the version before (with the address sets it saw then), so that a
/// change of address-set members only applies them to its fast classifier instead of building it anew.
struct Prev<'a> {
    cfg: &'a FilterConfig,
    /// The address sets the filter's rules saw then, by id ([`rules::sets_by_id`]).
    sets: SetsById<'a>,
}

/// A filter's address sets by id, as its rules see them.
type SetsById<'a> = AHashMap<&'a str, &'a AddrSet>;

impl Prev<'_> {
    /// Hands `cache` the membership indexes of the previous version for the sets in `now` that did
    /// not change, so that compiling the rule sets again builds only the changed sets' indexes.
    fn reuse_indexes(&self, now: &SetsById<'_>, cache: &mut rules::SetCache) {
        for compiled in self.cfg.l2.iter().chain(&self.cfg.l3) {
            for (id, index) in compiled.set_indexes() {
                if let (Some(o), Some(n)) = (self.sets.get(id), now.get(id)) {
                    if o == n {
                        cache.reuse(n, Arc::clone(index));
                    }
                }
            }
        }
    }

    /// The fast classifier for rule set `rs` over the sets `now`, made from the one before by applying
    /// the member changes, when `rs` is the rule set it was built from and the sets are the same ones
    /// (only their members differ); `None` otherwise.
    fn members_changed(&self, rs: &rules::RuleSet, now: &SetsById<'_>) -> Option<rules::classify::Snapshot> {
        let (old_l3, old_fast) = (self.cfg.l3.as_ref()?, self.cfg.l3_fast.as_ref()?);
        if old_l3.source != *rs || self.sets.len() != now.len() {
            return None;
        }
        let mut changes = Vec::new();
        for (id, n) in now {
            let o = self.sets.get(id)?;
            if o != n {
                changes.extend(rules::classify::set_changes(o, n));
            }
        }
        old_fast.with_changes(&changes).ok()
    }
}

fn compile_filter(
    policy: &Policy,
    spec: &FilterSpec,
    slot: usize,
    generation: u64,
    now_ns: u64,
    cache: &mut rules::SetCache,
    prev: Option<Prev<'_>>,
) -> Result<FilterConfig, LoadError> {
    let sets = policy.addrsets_for(spec);
    let mut cfg = FilterConfig {
        name: spec.name.clone(),
        slot,
        vnic: spec.vnic.clone(),
        failure: spec.failure,
        timeouts: Timeouts::with_overrides(&spec.timeouts),
        max_connections: spec.max_connections.map_or(DEFAULT_FILTER_CONNECTIONS, |n| n as usize),
        icmp_error_rate: spec.icmp_error_rate.unwrap_or(DEFAULT_ICMP_ERROR_RATE),
        policy_change: spec.policy_change,
        flow_counts: spec.flow_counts,
        l2: None,
        l3: None,
        l3_fast: None,
        generation,
        realized_ns: now_ns,
        hash: filter_hash(&spec.name),
    };
    // With a version before: the sets as the rules see them now, to compare with those then.
    let now = prev.as_ref().map(|p| (p, rules::sets_by_id(&sets)));
    if let Some((p, now)) = &now {
        p.reuse_indexes(now, cache);
    }
    for rs in policy.rulesets_for(spec) {
        let c = CompiledRuleSet::compile_cached(rs, &sets, cache)
            .map_err(|source| LoadError::UndefinedSet { filter: spec.name.clone(), source })?;
        let (slot, kind) = if rs.is_l2() { (&mut cfg.l2, "L2") } else { (&mut cfg.l3, "L3") };
        if let Some(prev) = slot {
            return Err(LoadError::TwoRuleSets {
                filter: spec.name.clone(),
                kind,
                first: prev.name().to_string(),
                second: rs.name.clone(),
            });
        }
        *slot = Some(c);
        if !rs.is_l2() && rs.rules.len() > FAST_CLASSIFIER_RULES {
            cfg.l3_fast = Some(match now.as_ref().and_then(|(p, now)| p.members_changed(rs, now)) {
                Some(fast) => fast,
                None => rules::classify::Classifier::build(rs, &sets)
                    .map_err(|source| LoadError::UndefinedSet { filter: spec.name.clone(), source })?
                    .snapshot(),
            });
        }
    }
    Ok(cfg)
}
