//! One vNIC filter: L2 rules, then the connection table, then L3 rules on a miss.
//!
//! ```text
//!  frame ──► L2 rule set ──drop──► Drop (match)
//!               │ accept / no L2 set
//!               ▼
//!           IP frame? ──no──► Pass (L2 decision, state none)
//!               │ yes
//!               ▼
//!       connection table ──hit──► Pass (state established / related)
//!               │ miss
//!               ▼
//!        L3 rule set ──► accept: insert connection (unless stateless) ──► Pass (state new)
//!                    └─► drop / reject / punt / no match
//! ```
//!
//! A filter with no rule set loaded decides by its failure policy (NSX's `failClosed` by default).

use std::net::IpAddr;
use std::sync::Arc;

use pktio::packet::{tcpflags, L4};
use pktio::Packet;
use rules::{Action, CompiledRuleSet, Direction, FailurePolicy, L2Key, L3Key, Rule, RuleBody, Vnic};

use crate::conntrack::{ConnKey, ConnTable, Timeouts};
use crate::verdict::{ConnState, Decision, Reason, RuleRef, Verdict};

/// The rule sets a filter enforces, compiled; replaced whole on a policy change.
#[derive(Debug, Clone, Default)]
pub struct FilterPolicy {
    /// The L3/L4 rule set (`mainrs`).
    pub l3: Option<CompiledRuleSet>,
    /// The L2 rule set (`mainrs_L2`).
    pub l2: Option<CompiledRuleSet>,
    /// Generation of this policy version (advances on every load).
    pub generation: u64,
}

/// Maximum connections a filter tracks unless configured otherwise.
pub const DEFAULT_CONN_LIMIT: usize = 1 << 20;

/// A per-vNIC filter with its connection table.
#[derive(Debug)]
pub struct Filter {
    /// Filter name.
    pub name: String,
    /// The guarded vNIC.
    pub vnic: Vnic,
    /// What happens when nothing is loaded.
    pub failure: FailurePolicy,
    /// Rule sets in force.
    pub policy: Arc<FilterPolicy>,
    /// Tracked connections.
    pub conns: ConnTable,
}

impl Filter {
    /// A filter with the given policy and an empty connection table.
    pub fn new(name: String, vnic: Vnic, failure: FailurePolicy, policy: FilterPolicy) -> Filter {
        Filter {
            name,
            vnic,
            failure,
            policy: Arc::new(policy),
            conns: ConnTable::new(DEFAULT_CONN_LIMIT, Timeouts::default()),
        }
    }

    /// True when `mac`/`ip` identify this filter's vNIC. A MAC is compared when both sides have one;
    /// otherwise the IP decides.
    pub fn owns(&self, mac: Option<[u8; 6]>, ip: Option<IpAddr>) -> bool {
        match (self.vnic.mac, mac) {
            (Some(m), Some(f)) => m.0 == f,
            _ => ip.is_some_and(|ip| self.vnic.ips.contains(&ip)),
        }
    }

    /// Decides `pkt` travelling `dir` through this filter at packet-clock time `now_ns`.
    pub fn decide(&mut self, index: usize, pkt: &Packet, dir: Direction, now_ns: u64) -> Decision {
        let decided =
            |verdict, state, reason, rule| Decision { filter: index, dir, verdict, state, reason, rule };
        let policy = Arc::clone(&self.policy);
        if policy.l2.is_none() && policy.l3.is_none() {
            return match self.failure {
                FailurePolicy::FailClosed => {
                    decided(Verdict::Drop, ConnState::None, Reason::FailClosed, None)
                }
                FailurePolicy::FailOpen => decided(Verdict::Pass, ConnState::None, Reason::FailOpen, None),
            };
        }
        // L2: ethertype / MAC rules see every frame.
        let mut l2_rule = None;
        if let Some(l2) = &policy.l2 {
            let key = L2Key { dir, ethertype: pkt.ethertype, src: pkt.src_mac.0, dst: pkt.dst_mac.0 };
            match l2.first_match_l2(&key) {
                None => return decided(Verdict::Drop, ConnState::None, Reason::NoMatch, None),
                Some(i) => {
                    let rule = l2.rule(i);
                    let r = Some(RuleRef { l2: true, id: rule.id });
                    if rule.action != Action::Accept {
                        return decided(action_verdict(rule.action), ConnState::None, Reason::Match, r);
                    }
                    l2_rule = r;
                }
            }
        }
        let (Some(l3), Some(ip), Some((key, from))) = (&policy.l3, pkt.ip, ConnKey::of(pkt)) else {
            // Nothing at L3 can decide this frame: the L2 rule that accepted it decides, if any.
            let reason = if l2_rule.is_some() { Reason::Match } else { Reason::Unfiltered };
            return decided(Verdict::Pass, ConnState::None, reason, l2_rule);
        };
        let timeouts = self.conns.timeouts;
        let syn = matches!(pkt.l4, L4::Tcp(t) if t.flags & (tcpflags::SYN | tcpflags::ACK) == tcpflags::SYN);
        if let Some(conn) = self.conns.lookup(&key, now_ns) {
            if !(syn && conn.is_reusable_by_syn()) {
                conn.update(from, pkt, now_ns, &timeouts);
                let rule = Some(RuleRef { l2: false, id: conn.rule });
                return decided(Verdict::Pass, ConnState::Established, Reason::State, rule);
            }
            // A fresh SYN on a reset / finished connection starts a new one (port reuse).
            self.conns.remove(&key);
        }
        if let Some(related) = self.related(pkt, now_ns) {
            return decided(
                Verdict::Pass,
                ConnState::Related,
                Reason::State,
                Some(RuleRef { l2: false, id: related }),
            );
        }
        let l3key = L3Key {
            dir,
            src: ip.src,
            dst: ip.dst,
            proto: ip.proto,
            ports: pkt.ports(),
            icmp: match pkt.l4 {
                L4::Icmp(i) => Some((i.icmp_type, i.code)),
                _ => None,
            },
        };
        let Some(i) = l3.first_match_l3(&l3key) else {
            return decided(Verdict::Drop, ConnState::New, Reason::NoMatch, None);
        };
        let rule: &Rule = l3.rule(i);
        let r = Some(RuleRef { l2: false, id: rule.id });
        if rule.action != Action::Accept {
            return decided(action_verdict(rule.action), ConnState::New, Reason::Match, r);
        }
        if rule.stateless {
            return decided(Verdict::Pass, ConnState::None, Reason::Match, r);
        }
        let strict = matches!(&rule.body, RuleBody::Ip(m) if m.strict);
        if strict && matches!(pkt.l4, L4::Tcp(_)) && !syn {
            return decided(Verdict::Drop, ConnState::Invalid, Reason::StateMismatch, r);
        }
        match self.conns.insert(key, from, pkt, rule.id, now_ns) {
            Ok(()) => decided(Verdict::Pass, ConnState::New, Reason::Match, r),
            Err(_) => decided(Verdict::Drop, ConnState::New, Reason::StateLimit, r),
        }
    }

    /// For an ICMP error quoting a tracked connection: the rule id of that connection.
    fn related(&mut self, pkt: &Packet, now_ns: u64) -> Option<u32> {
        let L4::Icmp(icmp) = pkt.l4 else { return None };
        let q = icmp.quoted?;
        let key = ConnKey::new(q.proto, (q.src, q.sport), (q.dst, q.dport));
        self.conns.lookup(&key, now_ns).map(|c| c.rule)
    }
}

fn action_verdict(action: Action) -> Verdict {
    match action {
        Action::Accept => Verdict::Pass,
        Action::Drop => Verdict::Drop,
        Action::Reject => Verdict::Reject,
        Action::Punt => Verdict::Punt,
    }
}
