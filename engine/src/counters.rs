//! Counters per filter: decisions by address family, direction and verdict; by reason; per rule.
//! Each worker keeps its own and they are added up when read, so counting takes no lock.

use std::collections::BTreeMap;

use ahash::AHashMap;
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

impl RuleCounters {
    fn add(&mut self, o: &RuleCounters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.sessions += o.sessions;
        self.hits += o.hits;
    }
}

/// Address family index: IPv4, IPv6, not IP.
pub const FAMILIES: [&str; 3] = ["inet", "inet6", "other"];

/// Counters of one filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterCounters {
    /// `[family][direction][verdict]`: family per [`FAMILIES`]; direction 0 = in, 1 = out; verdict 0 pass,
    /// 1 drop, 2 reject, 3 punt.
    pub verdicts: [[[u64; 4]; 2]; 3],
    /// Decisions per reason, indexed by [`Reason::index`].
    pub reasons: [u64; Reason::ALL.len()],
    /// Decisions that did not pass, per reason.
    pub drop_reasons: [u64; Reason::ALL.len()],
    /// Per rule, keyed by (L2 set?, rule id).
    pub rules: AHashMap<(bool, u32), RuleCounters>,
    /// The rule counted last and its counters, written back to `rules` when another rule comes: most
    /// frames in a row belong to the same rule, so this saves a hash lookup per frame.
    last: Option<((bool, u32), RuleCounters)>,
    /// Connections torn down because a new policy no longer allows them.
    pub torn_down: u64,
    /// Connections removed because their timer ran out.
    pub expired: u64,
    /// Reject replies (TCP RST / ICMP unreachable) generated.
    pub rejects_sent: u64,
    /// ICMP / ICMPv6 errors a `reject` rule did not send: over the filter's `icmpErrorRate`.
    pub rejects_limited: u64,
}

impl FilterCounters {
    /// Accounts one decision about `pkt`.
    pub fn count(&mut self, d: &Decision, pkt: &Packet) {
        let family = match pkt.ip.as_ref() {
            Some(ip) if ip.src.is_ipv4() => 0,
            Some(_) => 1,
            None => 2,
        };
        self.count_raw(d, family, u64::from(pkt.wire_len));
    }

    /// [`FilterCounters::count_raw`] for a frame passed by the connection table (state established,
    /// reason `state`) on the connection `rule` admitted.
    #[inline(always)]
    pub fn count_tracked(&mut self, dir: Direction, family: usize, rule: u32, len: u64) {
        self.verdicts[family][usize::from(dir == Direction::Out)][0] += 1;
        self.reasons[Reason::State.index()] += 1;
        let r = self.rule_mut((false, rule));
        r.packets += 1;
        r.bytes += len;
    }

    /// Adds what a run of frames passed by the connection table counted ([`TrackedRun`]).
    pub(crate) fn add_run(&mut self, run: &TrackedRun) {
        for (dir, &n) in run.by_dir.iter().enumerate() {
            self.verdicts[0][dir][0] += n;
            self.reasons[Reason::State.index()] += n;
        }
        if run.packets != 0 {
            let r = self.rule_mut((false, run.rule));
            r.packets += run.packets;
            r.bytes += run.bytes;
        }
    }

    /// Accounts one decision about a frame of `family` index and `len` bytes.
    pub fn count_raw(&mut self, d: &Decision, family: usize, len: u64) {
        let dir = usize::from(d.dir == Direction::Out);
        let v = match d.verdict {
            Verdict::Pass => 0,
            Verdict::Drop => 1,
            Verdict::Reject => 2,
            Verdict::Punt => 3,
        };
        self.verdicts[family][dir][v] += 1;
        self.reasons[d.reason.index()] += 1;
        if d.verdict.is_drop() {
            self.drop_reasons[d.reason.index()] += 1;
        }
        if let Some(RuleRef { l2, id }) = d.rule {
            let r = self.rule_mut((l2, id));
            r.packets += 1;
            r.bytes += len;
            if d.reason == Reason::Match {
                r.hits += 1;
                if d.state == ConnState::New && d.verdict == Verdict::Pass {
                    r.sessions += 1;
                }
            }
        }
    }

    /// The counters of a rule: the last one counted is kept at hand, since consecutive frames mostly
    /// count the same rule.
    #[inline]
    fn rule_mut(&mut self, key: (bool, u32)) -> &mut RuleCounters {
        if self.last.is_none_or(|(k, _)| k != key) {
            self.switch_rule(key);
        }
        &mut self.last.get_or_insert((key, RuleCounters::default())).1
    }

    #[cold]
    fn switch_rule(&mut self, key: (bool, u32)) {
        if let Some((k, r)) = self.last.take() {
            self.rules.insert(k, r);
        }
        self.last = Some((key, self.rules.get(&key).copied().unwrap_or_default()));
    }

    /// Writes the cached last rule back, so `rules` is complete.
    pub fn settle(&mut self) {
        if let Some((k, r)) = self.last.take() {
            self.rules.insert(k, r);
        }
    }

    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &FilterCounters) {
        let mut o = o.clone();
        o.settle();
        self.settle();
        for f in 0..3 {
            for d in 0..2 {
                for v in 0..4 {
                    self.verdicts[f][d][v] += o.verdicts[f][d][v];
                }
            }
        }
        for i in 0..Reason::ALL.len() {
            self.reasons[i] += o.reasons[i];
            self.drop_reasons[i] += o.drop_reasons[i];
        }
        for (k, r) in &o.rules {
            self.rules.entry(*k).or_default().add(r);
        }
        let _ = &o;
        self.torn_down += o.torn_down;
        self.expired += o.expired;
        self.rejects_sent += o.rejects_sent;
        self.rejects_limited += o.rejects_limited;
    }

    /// Frames passed.
    pub fn passed(&self) -> u64 {
        self.verdicts.iter().flatten().map(|v| v[0]).sum()
    }

    /// Frames not passed (drop, reject, punt).
    pub fn dropped(&self) -> u64 {
        self.verdicts.iter().flatten().map(|v| v[1] + v[2] + v[3]).sum()
    }

    /// Non-zero reason counts by name.
    pub fn reason_map(&self, drops_only: bool) -> BTreeMap<&'static str, u64> {
        let src = if drops_only { &self.drop_reasons } else { &self.reasons };
        Reason::ALL.iter().zip(src).filter(|(_, n)| **n > 0).map(|(r, n)| (r.as_str(), *n)).collect()
    }

    /// Per-rule counters sorted by (L2?, id).
    pub fn rule_list(&self) -> Vec<((bool, u32), RuleCounters)> {
        let mut all = self.rules.clone();
        if let Some((k, r)) = self.last {
            all.insert(k, r);
        }
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

/// What [`FilterCounters::count_tracked`] would count for a run of IPv4 frames passed by the connection
/// table, gathered as the run goes and added once at its end ([`FilterCounters::add_run`]), so a frame
/// costs a few additions in registers instead of updates in the counters.
#[derive(Debug, Default)]
pub(crate) struct TrackedRun {
    /// Frames by direction (0 = in, 1 = out).
    by_dir: [u64; 2],
    /// The rule of the frames gathered in `packets` and `bytes` (other rules' are in the counters).
    rule: u32,
    packets: u64,
    bytes: u64,
}

impl TrackedRun {
    /// [`FilterCounters::count_tracked`] for an IPv4 frame of `len` bytes on the connection `rule`
    /// admitted; `counters` takes what was gathered for another rule.
    #[inline(always)]
    pub(crate) fn add(&mut self, counters: &mut FilterCounters, dir: Direction, rule: u32, len: u64) {
        self.by_dir[usize::from(dir == Direction::Out)] += 1;
        if rule != self.rule && self.packets != 0 {
            self.switch_rule(counters);
        }
        self.rule = rule;
        self.packets += 1;
        self.bytes += len;
    }

    #[cold]
    fn switch_rule(&mut self, counters: &mut FilterCounters) {
        let r = counters.rule_mut((false, self.rule));
        r.packets += self.packets;
        r.bytes += self.bytes;
        (self.packets, self.bytes) = (0, 0);
    }
}
