//! Fragments: a non-first fragment carries no ports, so it follows the verdict of its datagram's first
//! fragment.
//!
//! Per filter, a small table keyed by (source, destination, protocol, IP id) remembers each fragmented
//! datagram: the verdict its first fragment got and the byte ranges seen so far. A fragment that arrives
//! before its first fragment is held (a copy, within a per-filter budget) and decided when the first
//! arrives. Undecidable fragments are dropped with reason `fragment`:
//!
//! - a fragment overlapping data already seen, other than an exact duplicate (RFC 5722 for IPv6; for
//!   IPv4 this is the classic overlap attack that rewrites a header that was filtered);
//! - a first fragment too short to carry the transport header, and a non-first fragment at an offset
//!   inside the TCP header (RFC 1858 "tiny fragment" attacks);
//! - held fragments whose first fragment never comes (30 s, Linux's and pf's fragment timeout), or
//!   that do not fit in the budget.
//!
//! Memory is bounded: at most [`MAX_DATAGRAMS`] datagrams, [`MAX_RANGES`] ranges each and
//! [`MAX_HELD_BYTES`] bytes of held frames per filter.

use ahash::AHashMap;
use pktio::packet::{ipproto, FragInfo};

use crate::flow::Endpoint;
use crate::verdict::{ConnState, Reason, RuleRef, Verdict};

/// Most datagrams tracked per filter.
pub const MAX_DATAGRAMS: usize = 1024;
/// Most fragment ranges remembered per datagram.
pub const MAX_RANGES: usize = 64;
/// Most bytes of early fragments held per filter.
pub const MAX_HELD_BYTES: usize = 1 << 20;
/// Seconds a datagram's state is kept after its last fragment.
pub const FRAG_TIMEOUT_S: u32 = 30;

/// Identity of a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramKey {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
}

impl DatagramKey {
    /// The key of a fragment.
    pub fn new(src: std::net::IpAddr, dst: std::net::IpAddr, proto: u8, id: u32) -> DatagramKey {
        DatagramKey { src: Endpoint::new(src, 0).addr, dst: Endpoint::new(dst, 0).addr, id, proto }
    }
}

/// The decision a datagram's first fragment got, applied to the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragVerdict {
    /// Outcome.
    pub verdict: Verdict,
    /// Connection state of the first fragment.
    pub state: ConnState,
    /// Reason.
    pub reason: Reason,
    /// Deciding rule.
    pub rule: Option<RuleRef>,
}

impl FragVerdict {
    /// A drop for reason `fragment`.
    pub const UNDECIDABLE: FragVerdict = FragVerdict {
        verdict: Verdict::Drop,
        state: ConnState::Invalid,
        reason: Reason::Fragment,
        rule: None,
    };
}

/// A fragment held until its first fragment decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The caller's frame number.
    pub frame: u64,
    /// The frame bytes.
    pub bytes: Vec<u8>,
    /// Its length on the wire.
    pub wire_len: u32,
    /// Its direction through the filter.
    pub dir: rules::Direction,
    /// True for IPv6.
    pub v6: bool,
    /// Link type of `bytes`.
    pub link: pktio::LinkType,
}

#[derive(Debug, Default)]
struct Datagram {
    verdict: Option<FragVerdict>,
    ranges: Vec<(u32, u32)>,
    held: Vec<Held>,
    expires_s: u32,
}

/// What to do with a non-first fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Later {
    /// Decided like this (the first fragment's verdict, or `fragment`).
    Decided(FragVerdict),
    /// Held until the first fragment arrives.
    Held,
}

/// The longest frame a fragment can come in without a bound being noted: an IP packet's largest
/// (65,535 bytes) and room for link headers. See [`FragTable::take_bounded`].
const LONGEST: usize = 65_535 + 64;

/// The per-filter fragment table.
#[derive(Debug)]
pub struct FragTable {
    map: AHashMap<DatagramKey, Datagram>,
    held_bytes: usize,
    /// No datagram expires before this second (a lower bound: a scan refreshes it).
    next_expiry: u32,
    /// Most datagrams and held bytes: [`MAX_DATAGRAMS`] and [`MAX_HELD_BYTES`], or a replay worker's
    /// part of them ([`FragTable::with_bounds`]).
    max_datagrams: usize,
    max_held_bytes: usize,
    /// A bound refused something, or held bytes came near theirs ([`FragTable::take_bounded`]).
    bounded: bool,
}

impl FragTable {
    /// Number of datagrams tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no datagram is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of held fragments.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// An empty table holding at most `datagrams` datagrams and `held_bytes` bytes of early fragments:
    /// [`MAX_DATAGRAMS`] and [`MAX_HELD_BYTES`], or a replay worker's part of them.
    pub fn with_bounds(datagrams: usize, held_bytes: usize) -> FragTable {
        FragTable {
            map: AHashMap::default(),
            held_bytes: 0,
            next_expiry: 0,
            max_datagrams: datagrams,
            max_held_bytes: held_bytes,
            bounded: false,
        }
    }

    /// True (once) when, since the last call, a bound refused a fragment, or the held bytes came within
    /// [`LONGEST`] bytes of theirs, or a fragment longer than that came to be held. Workers holding
    /// parts of the bounds see only their own part: while no worker notes this, none is near its
    /// part, so the sum of the parts cannot have refused anything either (a datagram more, or
    /// `LONGEST` bytes more, still fit), and every worker decided as the whole table would.
    pub fn take_bounded(&mut self) -> bool {
        std::mem::take(&mut self.bounded)
    }

    /// Whether a first fragment can be decided at all: it must carry the whole transport header that
    /// rules look at.
    pub fn first_is_decidable(proto: u8, has_l4: bool) -> bool {
        has_l4
            || !matches!(proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP | ipproto::ICMP | ipproto::ICMPV6)
    }

    /// Records the verdict of a datagram's first fragment and returns the fragments held for it.
    pub fn first(
        &mut self,
        key: DatagramKey,
        frag: &FragInfo,
        verdict: FragVerdict,
        now_s: u32,
    ) -> Vec<Held> {
        let Some(d) = self.entry(key, now_s) else { return Vec::new() };
        let range = (0, u32::from(frag.len));
        let verdict = if overlaps(&d.ranges, range) { FragVerdict::UNDECIDABLE } else { verdict };
        push_range(&mut d.ranges, range);
        if d.verdict.is_none() {
            d.verdict = Some(verdict);
        }
        let held = std::mem::take(&mut d.held);
        self.held_bytes -= held.iter().map(|h| h.bytes.len()).sum::<usize>();
        held
    }

    /// Decides (or holds) a non-first fragment.
    #[allow(clippy::too_many_arguments)]
    pub fn later(
        &mut self,
        key: DatagramKey,
        frag: &FragInfo,
        frame: u64,
        bytes: &[u8],
        wire_len: u32,
        dir: rules::Direction,
        link: pktio::LinkType,
        now_s: u32,
    ) -> Later {
        let start = u32::from(frag.offset);
        let range = (start, start + u32::from(frag.len));
        // A fragment that starts inside the TCP header could rewrite flags or ports the rules saw.
        if key.proto == ipproto::TCP && start < 20 {
            self.poison(key, now_s);
            return Later::Decided(FragVerdict::UNDECIDABLE);
        }
        let (held_bytes, max_held) = (self.held_bytes, self.max_held_bytes);
        let Some(d) = self.entry(key, now_s) else { return Later::Decided(FragVerdict::UNDECIDABLE) };
        if overlaps(&d.ranges, range) {
            d.verdict = Some(FragVerdict::UNDECIDABLE);
            return Later::Decided(FragVerdict::UNDECIDABLE);
        }
        push_range(&mut d.ranges, range);
        if let Some(v) = d.verdict {
            return Later::Decided(v);
        }
        let near = bytes.len() > LONGEST || held_bytes + bytes.len() + LONGEST > max_held;
        if held_bytes + bytes.len() > max_held || d.held.len() >= MAX_RANGES {
            self.bounded |= near;
            return Later::Decided(FragVerdict::UNDECIDABLE);
        }
        let v6 = key.src[..12] != [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        d.held.push(Held { frame, bytes: bytes.to_vec(), wire_len, dir, v6, link });
        self.held_bytes += bytes.len();
        self.bounded |= near;
        Later::Held
    }

    fn poison(&mut self, key: DatagramKey, now_s: u32) {
        if let Some(d) = self.entry(key, now_s) {
            d.verdict = Some(FragVerdict::UNDECIDABLE);
        }
    }

    fn entry(&mut self, key: DatagramKey, now_s: u32) -> Option<&mut Datagram> {
        if !self.map.contains_key(&key) && self.map.len() >= self.max_datagrams {
            self.bounded = true;
            return None;
        }
        let expires = now_s.saturating_add(FRAG_TIMEOUT_S);
        if self.map.is_empty() {
            self.next_expiry = expires;
        }
        let d = self.map.entry(key).or_default();
        d.expires_s = expires;
        Some(d)
    }

    /// Removes datagrams idle past their timeout; held fragments of those are returned (to be dropped
    /// with reason `fragment`). Cheap when nothing is due: the table is small and bounded.
    #[inline]
    pub fn expire(&mut self, now_s: u32) -> Vec<Held> {
        if !self.due(now_s) {
            return Vec::new();
        }
        self.expire_due(now_s)
    }

    /// True when some held datagram is overdue at `now_s` ([`FragTable::expire`] has work).
    #[inline(always)]
    pub fn due(&self, now_s: u32) -> bool {
        now_s >= self.next_expiry && !self.map.is_empty()
    }

    #[cold]
    fn expire_due(&mut self, now_s: u32) -> Vec<Held> {
        let mut out = Vec::new();
        if now_s < self.next_expiry || self.map.is_empty() {
            return out;
        }
        self.map.retain(|_, d| {
            if d.expires_s > now_s {
                return true;
            }
            out.append(&mut d.held);
            false
        });
        self.held_bytes -= out.iter().map(|h| h.bytes.len()).sum::<usize>();
        // In frame order, not the map's (which differs from run to run).
        out.sort_by_key(|h| h.frame);
        self.next_expiry = self.map.values().map(|d| d.expires_s).min().unwrap_or(u32::MAX);
        out
    }

    /// Drops every datagram, returning all held fragments (end of a replay).
    pub fn drain(&mut self) -> Vec<Held> {
        self.expire(u32::MAX)
    }
}

/// True when `r` overlaps a known range other than an exact duplicate of it.
fn overlaps(ranges: &[(u32, u32)], r: (u32, u32)) -> bool {
    ranges.iter().any(|&(a, b)| (a, b) != r && a < r.1 && r.0 < b)
}

fn push_range(ranges: &mut Vec<(u32, u32)>, r: (u32, u32)) {
    if ranges.len() < MAX_RANGES && !ranges.contains(&r) {
        ranges.push(r);
    }
}
