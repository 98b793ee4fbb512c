//! Counters per filter: decisions by verdict and direction, by reason, and per rule.

use std::collections::BTreeMap;

use pktio::Packet;
use rules::Direction;

use crate::verdict::{ConnState, Decision, Reason, RuleRef, Verdict};

/// Per-rule counters (vsipioctl's rule statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Frames attributed to the rule: decided by it, or by a connection it created.
    pub packets: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Connections the rule created.
    pub sessions: u64,
    /// Frames the rule decided by evaluation (not by state).
    pub hits: u64,
}

/// Counters of one filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterCounters {
    /// `[direction][verdict]`: direction 0 = in, 1 = out; verdict 0 pass, 1 drop, 2 reject, 3 punt.
    pub verdicts: [[u64; 4]; 2],
    /// Decisions per reason.
    pub reasons: BTreeMap<&'static str, u64>,
    /// Decisions that did not pass, per reason.
    pub drop_reasons: BTreeMap<&'static str, u64>,
    /// Per rule, keyed by (L2 set?, rule id).
    pub rules: BTreeMap<(bool, u32), RuleCounters>,
}

impl FilterCounters {
    /// Accounts one decision.
    pub fn count(&mut self, d: &Decision, pkt: &Packet) {
        let dir = usize::from(d.dir == Direction::Out);
        let v = match d.verdict {
            Verdict::Pass => 0,
            Verdict::Drop => 1,
            Verdict::Reject => 2,
            Verdict::Punt => 3,
        };
        self.verdicts[dir][v] += 1;
        *self.reasons.entry(d.reason.as_str()).or_default() += 1;
        if d.verdict.is_drop() {
            *self.drop_reasons.entry(d.reason.as_str()).or_default() += 1;
        }
        if let Some(RuleRef { l2, id }) = d.rule {
            let r = self.rules.entry((l2, id)).or_default();
            r.packets += 1;
            r.bytes += u64::from(pkt.wire_len);
            if d.reason == Reason::Match {
                r.hits += 1;
                if d.state == ConnState::New && d.verdict == Verdict::Pass {
                    r.sessions += 1;
                }
            }
        }
    }

    /// Frames passed (both directions).
    pub fn passed(&self) -> u64 {
        self.verdicts[0][0] + self.verdicts[1][0]
    }

    /// Frames not passed (drop, reject, punt; both directions).
    pub fn dropped(&self) -> u64 {
        self.verdicts.iter().map(|d| d[1] + d[2] + d[3]).sum()
    }
}
