//! What changed between two compiled policies, in the terms a running dataplane applies: address-set
//! members added and removed, or a structural change (rules, filters, sets appearing or going) that
//! needs the whole new policy.
//!
//! A pod or namespace relabel yields members only — the seed article's behaviour — and maps to
//! `engine::Change::AddrSetAdd` / `AddrSetDel`; anything else maps to `engine::Change::Policy` with the
//! new policy. Either way the changes go in as one transaction.

use std::collections::BTreeMap;
use std::fmt;

use rules::{AddrEntry, AddrSet, FilterSpec, Policy, RuleSet};

/// Members added to and removed from one address set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetDelta {
    /// New members.
    pub added: Vec<AddrEntry>,
    /// Members that left.
    pub removed: Vec<AddrEntry>,
}

/// The difference between an old and a new compiled policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diff {
    /// Member changes of address sets present in both, by set id.
    pub members: BTreeMap<String, SetDelta>,
    /// Address sets only the new policy has.
    pub sets_added: Vec<String>,
    /// Address sets only the old policy has.
    pub sets_removed: Vec<String>,
    /// Filters only the new policy has.
    pub filters_added: Vec<String>,
    /// Filters only the old policy has.
    pub filters_removed: Vec<String>,
    /// Filters in both whose vNIC, rules or settings differ.
    pub filters_changed: Vec<String>,
    /// Shared rule sets that differ, appear or go.
    pub rulesets_changed: Vec<String>,
}

impl Diff {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.is_members_only()
    }

    /// Only address-set members changed (no rule, filter or set came or went): the change can be
    /// applied as member additions and removals.
    pub fn is_members_only(&self) -> bool {
        self.sets_added.is_empty()
            && self.sets_removed.is_empty()
            && self.filters_added.is_empty()
            && self.filters_removed.is_empty()
            && self.filters_changed.is_empty()
            && self.rulesets_changed.is_empty()
    }

    /// Orders each set's added and removed members by address, so that equal changes compare equal.
    pub fn normalize(&mut self) {
        fn key(e: &AddrEntry) -> (u8, Option<std::net::IpAddr>, u8, [u8; 6]) {
            match e {
                AddrEntry::Ip(n) => (0, Some(n.addr), n.len, [0; 6]),
                AddrEntry::Mac(m) => (1, None, 0, m.0),
            }
        }
        for d in self.members.values_mut() {
            d.added.sort_by_key(key);
            d.removed.sort_by_key(key);
        }
    }

    /// Number of member additions plus removals.
    pub fn member_changes(&self) -> usize {
        self.members.values().map(|d| d.added.len() + d.removed.len()).sum()
    }
}

fn entry_text(e: &AddrEntry) -> String {
    match e {
        AddrEntry::Ip(n) => format!("ip {n}"),
        AddrEntry::Mac(m) => format!("mac {m}"),
    }
}

impl fmt::Display for Diff {
    /// One line per change: `addrset ID +ip A -ip B`, `filter NAME changed`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, d) in &self.members {
            write!(f, "addrset {id}")?;
            for e in &d.added {
                write!(f, " +{}", entry_text(e))?;
            }
            for e in &d.removed {
                write!(f, " -{}", entry_text(e))?;
            }
            writeln!(f)?;
        }
        let lists: [(&str, &Vec<String>); 6] = [
            ("addrset {} added", &self.sets_added),
            ("addrset {} removed", &self.sets_removed),
            ("filter {} added", &self.filters_added),
            ("filter {} removed", &self.filters_removed),
            ("filter {} rules changed", &self.filters_changed),
            ("ruleset {} changed", &self.rulesets_changed),
        ];
        for (pattern, names) in lists {
            for n in names {
                writeln!(f, "{}", pattern.replace("{}", n))?;
            }
        }
        Ok(())
    }
}

/// A rule set without comments and realization metadata, for comparison.
fn bare(r: &RuleSet) -> RuleSet {
    let mut r = r.clone();
    r.comments.clear();
    r.trailing.clear();
    r.generation = None;
    r.realized = None;
    for rule in &mut r.rules {
        rule.comments.clear();
    }
    r
}

fn bare_set(a: &AddrSet) -> Vec<AddrEntry> {
    a.entries.clone()
}

fn same_filter(a: &FilterSpec, b: &FilterSpec) -> bool {
    a.vnic == b.vnic
        && a.failure == b.failure
        && a.timeouts == b.timeouts
        && a.max_connections == b.max_connections
        && a.icmp_error_rate == b.icmp_error_rate
        && a.policy_change == b.policy_change
        && a.flow_counts == b.flow_counts
        && a.rulesets.len() == b.rulesets.len()
        && a.rulesets.iter().zip(&b.rulesets).all(|(x, y)| bare(x) == bare(y))
        && a.addrsets.len() == b.addrsets.len()
        && a.addrsets.iter().zip(&b.addrsets).all(|(x, y)| x.id == y.id && bare_set(x) == bare_set(y))
}

/// The change from `old` to `new` (top-level address sets compared by members; filters and shared rule
/// sets compared ignoring comments).
pub fn diff(old: &Policy, new: &Policy) -> Diff {
    let mut d = Diff::default();
    let old_sets: BTreeMap<&str, &AddrSet> = old.addrsets.iter().map(|s| (s.id.as_str(), s)).collect();
    let new_sets: BTreeMap<&str, &AddrSet> = new.addrsets.iter().map(|s| (s.id.as_str(), s)).collect();
    for (id, n) in &new_sets {
        match old_sets.get(id) {
            None => d.sets_added.push(id.to_string()),
            Some(o) => {
                let added: Vec<AddrEntry> =
                    n.entries.iter().filter(|e| !o.entries.contains(e)).copied().collect();
                let removed: Vec<AddrEntry> =
                    o.entries.iter().filter(|e| !n.entries.contains(e)).copied().collect();
                if !added.is_empty() || !removed.is_empty() {
                    d.members.insert(id.to_string(), SetDelta { added, removed });
                }
            }
        }
    }
    d.sets_removed =
        old_sets.keys().filter(|id| !new_sets.contains_key(*id)).map(|s| s.to_string()).collect();

    let old_f: BTreeMap<&str, &FilterSpec> = old.filters.iter().map(|f| (f.name.as_str(), f)).collect();
    let new_f: BTreeMap<&str, &FilterSpec> = new.filters.iter().map(|f| (f.name.as_str(), f)).collect();
    for (name, n) in &new_f {
        match old_f.get(name) {
            None => d.filters_added.push(name.to_string()),
            Some(o) if !same_filter(o, n) => d.filters_changed.push(name.to_string()),
            Some(_) => {}
        }
    }
    d.normalize();
    d.filters_removed = old_f.keys().filter(|n| !new_f.contains_key(*n)).map(|s| s.to_string()).collect();

    let old_r: BTreeMap<&str, RuleSet> = old.rulesets.iter().map(|r| (r.name.as_str(), bare(r))).collect();
    let new_r: BTreeMap<&str, RuleSet> = new.rulesets.iter().map(|r| (r.name.as_str(), bare(r))).collect();
    for name in old_r.keys().chain(new_r.keys()) {
        if old_r.get(name) != new_r.get(name) && !d.rulesets_changed.iter().any(|n| n == name) {
            d.rulesets_changed.push(name.to_string());
        }
    }
    d
}
