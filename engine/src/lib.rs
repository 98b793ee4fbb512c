//! `engine` owns deciding packets and holding state: per-vNIC [`Filter`]s (L2 rules, connection table,
//! L3 rules), the small topology that says which filters a frame crosses (out of the sender's vNIC, in
//! to the receiver's), counters per filter, rule and reason, and the capture [`replay`] driver.
//!
//! It builds on `rules` (what a policy says) and `pktio` (frames in and out) and is driven by the `dfw`
//! command.

pub mod conntrack;
pub mod counters;
pub mod filter;
pub mod replay;
pub mod verdict;

use std::net::IpAddr;
use std::sync::Arc;

use pktio::Packet;
use rules::{CompiledRuleSet, Direction, Policy};

pub use counters::{FilterCounters, RuleCounters};
pub use filter::{Filter, FilterPolicy};
pub use verdict::{ConnState, Decision, Reason, RuleRef, Verdict};

/// A policy that cannot be put in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A rule refers to an address set the filter cannot see.
    #[error("filter '{filter}': {source}")]
    UndefinedSet {
        /// Filter name.
        filter: String,
        /// The unresolved reference.
        source: rules::UndefinedSet,
    },
    /// More than one L3 or L2 rule set applies to a filter.
    #[error("filter '{filter}' has two {kind} rule sets ('{first}' and '{second}'); a filter enforces one of each")]
    TwoRuleSets {
        /// Filter name.
        filter: String,
        /// `L3` or `L2`.
        kind: &'static str,
        /// First set name.
        first: String,
        /// Second set name.
        second: String,
    },
}

/// What happened to one frame as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// It crossed no filter (neither end is a vNIC of the policy).
    Unfiltered,
    /// Every filter it crossed passed it.
    Passed,
    /// Some filter it crossed did not pass it.
    Dropped,
}

/// The set of filters of one host and the switch between them.
#[derive(Debug, Default)]
pub struct Engine {
    filters: Vec<Filter>,
    counters: Vec<FilterCounters>,
    generation: u64,
}

impl Engine {
    /// An engine enforcing `policy`.
    pub fn new(policy: &Policy) -> Result<Engine, LoadError> {
        let mut e = Engine::default();
        e.load(policy)?;
        Ok(e)
    }

    /// Puts `policy` in force. Filters keep their connection tables and counters across loads when their
    /// name stays; filters the policy no longer names are removed. Existing connections are kept (no
    /// revalidation yet). Nothing changes when the policy has an error.
    pub fn load(&mut self, policy: &Policy) -> Result<(), LoadError> {
        let generation = self.generation + 1;
        let mut compiled = Vec::with_capacity(policy.filters.len());
        for spec in &policy.filters {
            let sets = policy.addrsets_for(spec);
            let mut fp = FilterPolicy { generation, ..FilterPolicy::default() };
            for rs in policy.rulesets_for(spec) {
                let c = CompiledRuleSet::compile(rs, &sets)
                    .map_err(|source| LoadError::UndefinedSet { filter: spec.name.clone(), source })?;
                let (slot, kind) = if rs.is_l2() { (&mut fp.l2, "L2") } else { (&mut fp.l3, "L3") };
                if let Some(prev) = slot {
                    return Err(LoadError::TwoRuleSets {
                        filter: spec.name.clone(),
                        kind,
                        first: prev.name().to_string(),
                        second: rs.name.clone(),
                    });
                }
                *slot = Some(c);
            }
            compiled.push((spec, fp));
        }
        let mut old: Vec<(Filter, FilterCounters)> =
            self.filters.drain(..).zip(self.counters.drain(..)).collect();
        for (spec, fp) in compiled {
            match old.iter().position(|(f, _)| f.name == spec.name) {
                Some(i) => {
                    let (mut f, c) = old.swap_remove(i);
                    f.vnic = spec.vnic.clone();
                    f.failure = spec.failure;
                    f.policy = Arc::new(fp);
                    self.filters.push(f);
                    self.counters.push(c);
                }
                None => {
                    self.filters.push(Filter::new(spec.name.clone(), spec.vnic.clone(), spec.failure, fp));
                    self.counters.push(FilterCounters::default());
                }
            }
        }
        self.generation = generation;
        Ok(())
    }

    /// The policy generation in force (1 after the first load).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The filters, in policy order; `Decision::filter` indexes this.
    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// Counters of each filter, parallel to [`Engine::filters`].
    pub fn counters(&self) -> &[FilterCounters] {
        &self.counters
    }

    /// Decides one frame: out of the sender's filter, then in to each receiver's filter (every other
    /// vNIC for a broadcast or multicast destination). `emit` sees each filter's decision.
    pub fn process(&mut self, pkt: &Packet, now_ns: u64, mut emit: impl FnMut(&Decision)) -> FrameOutcome {
        let mac = |m: [u8; 6]| (m != [0; 6]).then_some(m);
        let (src_ip, dst_ip): (Option<IpAddr>, Option<IpAddr>) = match pkt.ip {
            Some(ip) => (Some(ip.src), Some(ip.dst)),
            None => (None, None),
        };
        let mut crossed = false;
        let sender = self.filters.iter().position(|f| f.owns(mac(pkt.src_mac.0), src_ip));
        if let Some(i) = sender {
            crossed = true;
            let d = self.filters[i].decide(i, pkt, Direction::Out, now_ns);
            self.counters[i].count(&d, pkt);
            emit(&d);
            if d.verdict.is_drop() {
                return FrameOutcome::Dropped;
            }
        }
        let group = pkt.dst_mac.0[0] & 1 == 1;
        let mut dropped = false;
        for i in 0..self.filters.len() {
            let receives = if group {
                Some(i) != sender
            } else {
                Some(i) != sender && self.filters[i].owns(mac(pkt.dst_mac.0), dst_ip)
            };
            if !receives {
                continue;
            }
            crossed = true;
            let d = self.filters[i].decide(i, pkt, Direction::In, now_ns);
            self.counters[i].count(&d, pkt);
            emit(&d);
            dropped |= d.verdict.is_drop();
        }
        match (crossed, dropped) {
            (false, _) => FrameOutcome::Unfiltered,
            (true, false) => FrameOutcome::Passed,
            (true, true) => FrameOutcome::Dropped,
        }
    }
}
