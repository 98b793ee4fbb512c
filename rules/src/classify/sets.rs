//! Address-set membership: for one address, every set that holds it, in two bounded steps; versions
//! that share all but what a change touches, so one member change costs microseconds.
//!
//! - **Exact addresses** (the bulk of NSX sets: VM and pod IPs) live in one hash table from address to
//!   the sorted ids of the sets holding it: one probe per lookup. The table is cut into 64 × 64 shards
//!   (chosen by a multiplicative hash of the address), each a small open-addressing array of 8-byte
//!   slots (address, where its ids are) followed by the id lists in the same allocation, so the table
//!   of a 250,000-member policy takes about 2 MiB and stays in the core's cache.
//!   A new version copies the 64 top handles and one block of 64 shard handles and rebuilds the one
//!   touched shard (a few dozen addresses); everything else is shared with the versions readers hold.
//! - **Prefixes** (subnets in sets) are few. They are flattened into elementary intervals, each
//!   holding the ids of every set with a prefix covering it, and found by one binary search. A prefix
//!   change rebuilds this small index (O(P log P) for P prefixes of the family); host changes never
//!   touch it.

use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashMap;

use crate::model::IpNet;

/// A normalized member: host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct MemberKey {
    v6: bool,
    len: u8,
    net: u128,
}

impl MemberKey {
    /// The key of a member entry.
    pub fn of(net: IpNet) -> MemberKey {
        let n = net.network();
        match n.addr {
            IpAddr::V4(a) => MemberKey { net: u128::from(u32::from(a)), len: n.len, v6: false },
            IpAddr::V6(a) => MemberKey { net: u128::from(a), len: n.len, v6: true },
        }
    }

    fn is_host(&self) -> bool {
        self.len == if self.v6 { 128 } else { 32 }
    }

    fn exact(&self) -> Addr {
        Addr { net: self.net, v6: self.v6 }
    }

    /// First and last address covered, in the family's own width.
    fn bounds(&self) -> (u128, u128) {
        let host = if self.v6 { 128 } else { 32 };
        let span = if self.len == 0 {
            if self.v6 {
                u128::MAX
            } else {
                u128::from(u32::MAX)
            }
        } else {
            (1u128 << (host - u32::from(self.len))).wrapping_sub(1)
        };
        (self.net, self.net | span)
    }
}

/// An exact address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Addr {
    net: u128,
    v6: bool,
}

impl Addr {
    fn hash(&self) -> u64 {
        let x = (self.net as u64) ^ ((self.net >> 64) as u64).rotate_left(17) ^ u64::from(self.v6);
        x.wrapping_mul(HASH_MUL)
    }

    /// Which shard: the top 12 bits of the hash.
    fn route(&self) -> (usize, usize) {
        let h = self.hash();
        ((h >> 58) as usize, ((h >> 52) & 63) as usize)
    }

    /// Home slot in a shard of `cap` slots (a power of two): hash bits below the routing bits.
    fn slot(&self, cap: usize) -> usize {
        (self.hash() >> 20) as usize & (cap - 1)
    }
}

const FANOUT: usize = 64;
/// Multiplier of the address hash.
const HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;
/// Address bits (from the top of the family's width) that pick an interval bucket.
const BUCKET_BITS: u32 = 12;
/// One shard's addresses and their set ids, before the shard is built.
type ShardEntries = Vec<(Addr, Vec<u32>)>;
/// A slot's value: bit 31 marks IPv6; bits 24..31 the number of ids (or [`LEN_POOL`]); bits 0..24 where
/// the ids (after the full address, for IPv6) start in the shard's data. 0 marks an empty slot.
const V6: u32 = 1 << 31;
const LEN_SHIFT: u32 = 24;
const LEN_MASK: u32 = 0x7f;
/// Length field meaning "the count is the first word at `start`" (127 or more ids).
const LEN_POOL: u32 = LEN_MASK;
const START_MASK: u32 = (1 << LEN_SHIFT) - 1;

/// Entries of a [`RankSum`]: per direction (in, out), side (destination, source) and protocol class
/// (TCP, UDP, other), at `dir * 6 + side * 3 + class`.
pub(super) const SUM_LEN: usize = 12;
/// Per (direction, side, protocol class), a lower bound on the best rank of the rules in the trees
/// of a list's sets that a key of that direction and class may walk when the address is on that
/// side (`u16::MAX` when none, or saturated). A key skips a whole list when its entry does not beat
/// the key's answer so far.
pub(super) type RankSum = [u16; SUM_LEN];
/// The [`RankSum`] of an empty list.
pub(super) const SUM_NONE: RankSum = [u16::MAX; SUM_LEN];

/// What a lookup needs to know of an id list before reading it: which ids it may hold, and the
/// best ranks its sets' trees may give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(super) struct ListSum {
    /// Bit `id % 64` (word `id / 32 % 2`, bit `id % 32`) set for every id in the list: a set whose
    /// bit is clear does not hold the address, whatever the list says (the negated-set checks of
    /// the shared trees mostly end there).
    pub mask: [u32; 2],
    /// See [`RankSum`].
    pub ranks: RankSum,
}

impl ListSum {
    /// The summary of an empty list.
    pub const NONE: ListSum = ListSum { mask: [0; 2], ranks: SUM_NONE };
    /// A summary that skips nothing.
    const ANY: ListSum = ListSum { mask: [u32::MAX; 2], ranks: [0; SUM_LEN] };

    /// Whether the list may hold `id`.
    #[inline(always)]
    pub fn may_hold(&self, id: u32) -> bool {
        self.mask[(id as usize >> 5) & 1] >> (id & 31) & 1 != 0
    }
}

/// Words of a [`ListSum`] stored in a shard's data.
const SUM_WORDS: usize = size_of::<ListSum>() / size_of::<u32>();

/// The per-set summaries the lists' summaries are made of, per family (`[v4, v6]`), indexed by set id.
#[derive(Debug, Clone, Default)]
pub(super) struct SetSums {
    by_family: [Vec<RankSum>; 2],
}

impl SetSums {
    /// From the summaries of each set's own trees, per family.
    pub fn new(by_family: [Vec<RankSum>; 2]) -> SetSums {
        SetSums { by_family }
    }

    /// The summary of the id list `ids` of an address of family `v6`.
    fn of(&self, v6: bool, ids: &[u32]) -> ListSum {
        let per_set = &self.by_family[usize::from(v6)];
        let mut out = ListSum::NONE;
        for &id in ids {
            out.mask[(id as usize >> 5) & 1] |= 1 << (id & 31);
            // A set the rules do not know (none: ids come from the build) would prune nothing.
            let s = per_set.get(id as usize).unwrap_or(&[0; SUM_LEN]);
            for (o, &x) in out.ranks.iter_mut().zip(s) {
                *o = (*o).min(x);
            }
        }
        out
    }

    fn memory_bytes(&self) -> usize {
        self.by_family.iter().map(|v| v.capacity() * size_of::<RankSum>()).sum()
    }
}

/// The summary stored at the start of an entry's data.
#[inline(always)]
fn sum_at(data: &[u32], at: usize) -> &ListSum {
    let Some(words) = data.get(at..at + SUM_WORDS) else { return &ListSum::ANY };
    // SAFETY: `words` is `size_of::<ListSum>()` bytes, 4-aligned, which is `ListSum`'s alignment
    // (`repr(C)` of `u32` and `u16` arrays); every bit pattern is a valid `ListSum`.
    unsafe { &*words.as_ptr().cast::<ListSum>() }
}

/// A summary as the words stored in a shard's data (the same bytes).
fn sum_words(sum: &ListSum) -> [u32; SUM_WORDS] {
    let r = &sum.ranks;
    std::array::from_fn(|i| {
        if i < 2 {
            sum.mask[i]
        } else {
            u32::from_ne_bytes(ne_pair(r[2 * (i - 2)], r[2 * (i - 2) + 1]))
        }
    })
}

fn ne_pair(a: u16, b: u16) -> [u8; 4] {
    let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
    [a[0], a[1], b[0], b[1]]
}

/// An immutable open-addressing table (linear probing, at most half full), rebuilt on change.
///
/// Compact, so that the whole member table of a large policy stays in the core's cache: slot `i` is
/// two words of `data`, `data[2i]` (the IPv4 address, or 32 bits of an IPv6 address's hash) and
/// `data[2i + 1]` (the value, see [`V6`]); the id lists (and full IPv6 addresses) follow the slots in
/// the same allocation. A probe costs one slot line and one id line.
#[derive(Debug, Clone, Default)]
struct Shard {
    /// Slots, then id lists; empty for a shard without addresses.
    data: Option<Arc<[u32]>>,
    /// Slots minus one (a power of two minus one).
    mask: u32,
}

/// The 32-bit slot key of an address.
#[inline(always)]
fn key32(a: &Addr) -> u32 {
    if a.v6 {
        (a.hash() >> 32) as u32
    } else {
        a.net as u32
    }
}

impl Shard {
    /// A shard holding `entries`; each address's data starts with the [`ListSum`] of its ids.
    fn from_entries<I: AsRef<[u32]>>(entries: &[(Addr, I)], sums: &SetSums) -> Shard {
        if entries.is_empty() {
            return Shard::default();
        }
        let cap = (entries.len() * 2).next_power_of_two().max(4);
        let mut data = vec![0u32; 2 * cap];
        for (a, ids) in entries {
            let ids = ids.as_ref();
            let mut i = a.slot(cap);
            while data[2 * i + 1] != 0 {
                i = (i + 1) & (cap - 1);
            }
            let start = data.len() as u32;
            data.extend_from_slice(&sum_words(&sums.of(a.v6, ids)));
            if a.v6 {
                data.extend_from_slice(&[
                    (a.net >> 96) as u32,
                    (a.net >> 64) as u32,
                    (a.net >> 32) as u32,
                    a.net as u32,
                ]);
            }
            let len = if ids.len() < LEN_POOL as usize {
                ids.len() as u32
            } else {
                data.push(ids.len() as u32);
                LEN_POOL
            };
            data.extend_from_slice(ids);
            assert!(start <= START_MASK, "address shard too large");
            data[2 * i] = key32(a);
            data[2 * i + 1] = if a.v6 { V6 } else { 0 } | len << LEN_SHIFT | start;
        }
        Shard { data: Some(data.into()), mask: cap as u32 - 1 }
    }

    /// The address, ids and their summary a slot value `v` refers to.
    fn decode(data: &[u32], key: u32, v: u32) -> (Addr, &[u32], &ListSum) {
        let v6 = v & V6 != 0;
        let mut at = (v & START_MASK) as usize;
        let sum = sum_at(data, at);
        at += SUM_WORDS;
        let net = if v6 {
            let w = data.get(at..at + 4).unwrap_or(&[0; 4]);
            at += 4;
            u128::from(w[0]) << 96 | u128::from(w[1]) << 64 | u128::from(w[2]) << 32 | u128::from(w[3])
        } else {
            u128::from(key)
        };
        let mut len = ((v >> LEN_SHIFT) & LEN_MASK) as usize;
        if len == LEN_POOL as usize {
            len = data.get(at).copied().unwrap_or(0) as usize;
            at += 1;
        }
        (Addr { net, v6 }, data.get(at..at + len).unwrap_or(&[]), sum)
    }

    fn entries(&self) -> Vec<(Addr, &[u32])> {
        let Some(data) = self.data.as_deref() else { return Vec::new() };
        let slots = self.mask as usize + 1;
        (0..slots)
            .filter(|&i| data[2 * i + 1] != 0)
            .map(|i| {
                let (a, ids, _) = Shard::decode(data, data[2 * i], data[2 * i + 1]);
                (a, ids)
            })
            .collect()
    }

    /// The ids of `a`, and their summary.
    #[inline]
    fn ids(&self, a: &Addr) -> (&[u32], &ListSum) {
        const NO: (&[u32], &ListSum) = (&[], &ListSum::NONE);
        let Some(data) = self.data.as_deref() else { return NO };
        let mask = self.mask as usize;
        let key = key32(a);
        let mut i = a.slot(mask + 1);
        // Never full: an empty slot ends every probe sequence.
        for _ in 0..=mask {
            let (Some(&k), Some(&v)) = (data.get(2 * i), data.get(2 * i + 1)) else { return NO };
            if v == 0 {
                return NO;
            }
            if k == key && (v & V6 != 0) == a.v6 {
                let (full, ids, sum) = Shard::decode(data, k, v);
                if full == *a {
                    return (ids, sum);
                }
            }
            i = (i + 1) & mask;
        }
        NO
    }

    /// Starts loading the slot a probe for `a` reads first.
    #[inline]
    fn prefetch(&self, a: &Addr) {
        if let Some(data) = self.data.as_deref() {
            if let Some(w) = data.get(2 * a.slot(self.mask as usize + 1)) {
                super::tree::prefetch(w);
            }
        }
    }

    /// A copy with the ids of `a` replaced (`ids` sorted; empty removes `a`).
    fn with(&self, a: Addr, ids: &[u32], sums: &SetSums) -> Shard {
        let mut entries = self.entries();
        entries.retain(|(k, _)| *k != a);
        if !ids.is_empty() {
            entries.push((a, ids));
        }
        Shard::from_entries(&entries, sums)
    }

    fn memory_bytes(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.len() * size_of::<u32>()) + size_of::<Shard>()
    }
}

/// The prefixes of one family flattened into elementary intervals.
#[derive(Debug, Clone, Default)]
struct Intervals {
    /// `buckets[b]`: how many `starts` lie below `base + (b << shift)` (the last entry: all of them),
    /// so a lookup searches only the few starts of its address's bucket. The buckets split the span
    /// from the first non-zero start to the last one, wherever the prefixes are (all of them may sit
    /// inside one /8).
    buckets: Vec<u32>,
    base: u128,
    shift: u32,
    /// Interval `i` runs from `starts[i]` to `starts[i + 1] - 1`; `starts[0] == 0` when non-empty.
    starts: Vec<u128>,
    /// Per interval, `[start, end)` of its set ids in `pool`.
    lists: Vec<(u32, u32)>,
    /// Per interval, the [`ListSum`] of its ids.
    sums: Vec<ListSum>,
    pool: Vec<u32>,
    /// The IPv4 search ([`Intervals::ids_v4`]), in 32-bit numbers and with no bounds checks.
    v4: V4Search,
}

/// The bucket index of [`Intervals`] for IPv4 addresses: `buckets[b]` is how many `starts` lie below
/// `base + (b << shift)`, and `buckets[BUCKETS]` all of them. Valid by construction, whatever the
/// prefixes (none at all included): `starts[0] == 0`, every bucket entry is at most `starts.len()`,
/// and every interval below `starts.len()` has its ids in `Intervals::lists`.
#[derive(Debug, Clone)]
struct V4Search {
    base: u32,
    shift: u32,
    buckets: Box<[u32; BUCKETS + 1]>,
    /// The `starts` below 2^32 (a start past 2^32 - 1, where a prefix reaching the last address
    /// ends, is above every IPv4 address, so the search never needs it); `[0]` without prefixes.
    starts: Vec<u32>,
}

impl Default for V4Search {
    fn default() -> Self {
        V4Search::new(&[0])
    }
}

/// Interval buckets per family.
const BUCKETS: usize = 1 << BUCKET_BITS;

impl V4Search {
    /// The index of `starts` (sorted, `starts[0] == 0`).
    fn new(starts: &[u32]) -> V4Search {
        assert_eq!(starts.first(), Some(&0), "intervals start at address 0");
        let base = starts.get(1).copied().unwrap_or(0);
        let span = starts.last().map_or(0, |&l| l - base);
        let shift = (32 - span.leading_zeros()).saturating_sub(BUCKET_BITS);
        let mut buckets = Box::new([0u32; BUCKETS + 1]);
        let mut i = 0;
        for (b, slot) in buckets.iter_mut().enumerate().take(BUCKETS) {
            let edge = u64::from(base) + ((b as u64) << shift);
            while starts.get(i).is_some_and(|&s| u64::from(s) < edge) {
                i += 1;
            }
            *slot = i as u32;
        }
        buckets[BUCKETS] = starts.len() as u32;
        V4Search { base, shift, buckets, starts: starts.to_vec() }
    }

    /// The elementary interval holding `a`: `#{s in starts : s <= a} - 1`.
    #[inline(always)]
    fn interval(&self, a: u32) -> usize {
        if a < self.base {
            // Below the first non-zero start (or no start but 0): interval 0.
            return 0;
        }
        // Past the last bucket's edge: the last bucket, which ends at the end of `starts`.
        let b = (((a - self.base) >> self.shift) as usize).min(BUCKETS - 1);
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        // SAFETY: bucket entries are non-decreasing and at most `starts.len()` (see `new`).
        let within = unsafe { self.starts.get_unchecked(lo..hi) };
        // Starts below the bucket's edge are all <= a (so at least `starts[0]` counts when `lo` is
        // 0), those past its end all > a.
        lo + within.partition_point(|&s| s <= a) - 1
    }
}

impl Intervals {
    /// From `(prefix, sorted ids)` pairs of family `v6`.
    fn new(prefixes: Vec<(MemberKey, &[u32])>, v6: bool, sums: &SetSums) -> Intervals {
        let mut out = Intervals::flat(prefixes);
        if out.starts.is_empty() {
            // No prefix: the IPv4 search finds interval 0, holding no ids.
            out.lists.push((0, 0));
            out.sums.push(ListSum::NONE);
            return out;
        }
        out.sums = out.lists.iter().map(|&(s, e)| sums.of(v6, &out.pool[s as usize..e as usize])).collect();
        out.base = out.starts.get(1).copied().unwrap_or(0);
        let span = out.starts.last().map_or(0, |&l| l - out.base);
        out.shift = (128 - span.leading_zeros()).saturating_sub(BUCKET_BITS);
        let mut buckets = Vec::with_capacity((1 << BUCKET_BITS) + 1);
        let mut i = 0;
        for b in 0..1u128 << BUCKET_BITS {
            let edge = out.base.saturating_add(b << out.shift);
            while out.starts.get(i).is_some_and(|&s| s < edge) {
                i += 1;
            }
            buckets.push(i as u32);
        }
        buckets.push(out.starts.len() as u32);
        out.buckets = buckets;
        let starts32: Vec<u32> = out.starts.iter().map_while(|&s| u32::try_from(s).ok()).collect();
        out.v4 = V4Search::new(&starts32);
        out
    }

    /// The intervals without the bucket index.
    fn flat(mut prefixes: Vec<(MemberKey, &[u32])>) -> Intervals {
        let mut out = Intervals::default();
        if prefixes.is_empty() {
            return out;
        }
        // Prefixes are laminar (nested or disjoint). Sorted by start, then longest span first, a stack
        // holds the prefixes covering the sweep position.
        prefixes.sort_by_key(|(k, _)| (k.bounds().0, k.len));
        let mut stack: Vec<(u128, &[u32])> = Vec::new(); // (last address, ids)
        let mut cur = Vec::new();
        let emit = |out: &mut Intervals, at: u128, stack: &[(u128, &[u32])], cur: &mut Vec<u32>| {
            cur.clear();
            for (_, ids) in stack {
                cur.extend_from_slice(ids);
            }
            cur.sort_unstable();
            cur.dedup();
            if out.starts.last() == Some(&at) {
                out.starts.pop();
                out.lists.pop();
            }
            let s = out.pool.len() as u32;
            out.pool.extend_from_slice(cur);
            out.starts.push(at);
            out.lists.push((s, out.pool.len() as u32));
        };
        emit(&mut out, 0, &stack, &mut cur);
        let mut i = 0;
        loop {
            // Next event: the next prefix start, or the end of the innermost open prefix.
            let next_start = prefixes.get(i).map(|(k, _)| k.bounds().0);
            let next_end = stack.last().map(|&(last, _)| last);
            match (next_start, next_end) {
                (Some(s), Some(e)) if s > e => {
                    stack.pop();
                    if let Some(at) = e.checked_add(1) {
                        emit(&mut out, at, &stack, &mut cur);
                    }
                }
                (Some(s), _) => {
                    while i < prefixes.len() && prefixes[i].0.bounds().0 == s {
                        stack.push((prefixes[i].0.bounds().1, prefixes[i].1));
                        i += 1;
                    }
                    // Same start: longer spans were pushed first, so the innermost is on top.
                    stack.sort_by_key(|e| std::cmp::Reverse(e.0));
                    emit(&mut out, s, &stack, &mut cur);
                }
                (None, Some(e)) => {
                    stack.pop();
                    if let Some(at) = e.checked_add(1) {
                        emit(&mut out, at, &stack, &mut cur);
                    }
                }
                (None, None) => break,
            }
        }
        out
    }

    /// The ids of the prefixes holding `a`, and their summary.
    #[inline(always)]
    fn ids(&self, a: u128) -> (&[u32], &ListSum) {
        // Starts below `a`'s bucket are all <= a; starts past it are all > a.
        if a < self.base {
            // Below the first non-zero start: interval 0.
            return self.interval(0);
        }
        // Past the last bucket: the last one (whose end is the end of `starts`).
        let b = ((a - self.base) >> self.shift).min((1 << BUCKET_BITS) - 1) as usize;
        let (lo, hi) = self.bucket(b, self.starts.len());
        let i = lo + self.starts.get(lo..hi).unwrap_or(&[]).partition_point(|&s| s <= a);
        i.checked_sub(1).map_or((&[], &ListSum::NONE), |n| self.interval(n))
    }

    /// [`Intervals::ids`] of an IPv4 address, in 32-bit arithmetic (for the IPv4 index; with no
    /// prefixes, nothing).
    #[inline(always)]
    fn ids_v4(&self, a: u32) -> (&[u32], &ListSum) {
        let i = self.v4.interval(a);
        let (Some(&(s, e)), Some(sum)) = (self.lists.get(i), self.sums.get(i)) else {
            return (&[], &ListSum::NONE);
        };
        debug_assert!(s <= e && e as usize <= self.pool.len());
        // SAFETY: `flat` cut every list from `pool` (`s <= e <= pool.len()`), and neither changes after.
        (unsafe { self.pool.get_unchecked(s as usize..e as usize) }, sum)
    }

    /// The range of `starts` (of which the first `len` are searched) that bucket `b` covers.
    #[inline(always)]
    fn bucket(&self, b: usize, len: usize) -> (usize, usize) {
        match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, (hi as usize).min(len)),
            _ => (0, len),
        }
    }

    /// The set ids of elementary interval `n` and their summary (none past the last).
    #[inline(always)]
    fn interval(&self, n: usize) -> (&[u32], &ListSum) {
        match (self.lists.get(n), self.sums.get(n)) {
            (Some(&(s, e)), Some(sum)) => (self.pool.get(s as usize..e as usize).unwrap_or(&[]), sum),
            _ => (&[], &ListSum::NONE),
        }
    }

    fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * 4
            + self.starts.capacity() * 16
            + self.v4.starts.capacity() * 4
            + size_of::<[u32; BUCKETS + 1]>()
            + self.lists.capacity() * 8
            + self.sums.capacity() * size_of::<ListSum>()
            + self.pool.capacity() * 4
    }
}

/// Every prefix member, and the interval index built from them.
#[derive(Debug, Clone, Default)]
struct Prefixes {
    /// Prefix → sorted set ids.
    nets: AHashMap<MemberKey, Vec<u32>>,
    /// `[v4, v6]`.
    index: [Intervals; 2],
}

impl Prefixes {
    fn reindex(&mut self, v6: bool, sums: &SetSums) {
        let of_family =
            self.nets.iter().filter(|(k, _)| k.v6 == v6).map(|(k, v)| (*k, v.as_slice())).collect();
        self.index[usize::from(v6)] = Intervals::new(of_family, v6, sums);
    }
}

/// One immutable version of every set's members.
#[derive(Debug, Clone)]
pub(super) struct SetTable {
    /// Bumped by every published change.
    pub generation: u64,
    /// `mids[x][y]`: the shard of the addresses [`Addr::route`] sends to `(x, y)`. Fixed-size arrays,
    /// so the routing bits index them without bounds checks.
    mids: Box<[Mid; FANOUT]>,
    prefixes: Arc<Prefixes>,
    /// What the id lists' summaries are made of (fixed by the rules).
    sums: Arc<SetSums>,
}

/// One block of shard handles, shared between versions until a change touches one of its shards.
type Mid = Arc<[Shard; FANOUT]>;

/// Where the member probe of an IPv4 address starts (its shard), from [`SetTable::start_probe`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe<'a>(Option<&'a Shard>);

impl Probe<'_> {
    /// No probe started.
    pub const NONE: Probe<'static> = Probe(None);
}

/// The sets holding one address: ids found by its exact address, and by prefixes, with the
/// summaries of both lists.
#[derive(Debug, Clone, Copy)]
pub(super) struct Members<'a> {
    /// Ids found by the exact address.
    pub exact: &'a [u32],
    /// Ids found by prefixes (may repeat `exact` ones).
    pub prefix: &'a [u32],
    /// The summary of `exact`.
    pub exact_sum: &'a ListSum,
    /// The summary of `prefix`.
    pub prefix_sum: &'a ListSum,
}

impl Members<'_> {
    /// Nothing.
    pub const NONE: Members<'static> =
        Members { exact: &[], prefix: &[], exact_sum: &ListSum::NONE, prefix_sum: &ListSum::NONE };

    /// Whether set `id` holds the address.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        if !self.exact_sum.may_hold(id) && !self.prefix_sum.may_hold(id) {
            return false;
        }
        // Both lists are sorted and short: stop at the first id not below `id`.
        let has = |ids: &[u32]| ids.iter().find(|&&x| x >= id) == Some(&id);
        has(self.exact) || has(self.prefix)
    }
}

/// One member change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Change {
    pub set: u32,
    pub key: MemberKey,
    pub add: bool,
}

impl SetTable {
    /// A table holding `members` (`(member, set id)` pairs, any order, duplicates allowed), whose
    /// id lists are summarized from `sums`.
    pub fn new(mut members: Vec<(MemberKey, u32)>, sums: SetSums) -> SetTable {
        members.sort_unstable();
        members.dedup();
        let mut shards: Vec<Vec<ShardEntries>> = (0..FANOUT).map(|_| vec![Vec::new(); FANOUT]).collect();
        let mut prefixes = Prefixes::default();
        for group in members.chunk_by(|a, b| a.0 == b.0) {
            let k = group[0].0;
            if k.is_host() {
                let a = k.exact();
                let (x, y) = a.route();
                shards[x][y].push((a, group.iter().map(|m| m.1).collect()));
            } else {
                prefixes.nets.insert(k, group.iter().map(|m| m.1).collect());
            }
        }
        prefixes.reindex(false, &sums);
        prefixes.reindex(true, &sums);
        let mids = Box::new(std::array::from_fn(|x| {
            Arc::new(std::array::from_fn(|y| Shard::from_entries(&shards[x][y], &sums)))
        }));
        SetTable { generation: 0, mids, prefixes: Arc::new(prefixes), sums: Arc::new(sums) }
    }

    #[inline]
    fn exact_ids(&self, a: &Addr) -> (&[u32], &ListSum) {
        let (x, y) = a.route();
        self.mids[x][y].ids(a)
    }

    /// The sets holding `ip`.
    /// Starts loading the hash slot [`SetTable::members`] will probe first for `ip`.
    #[inline]
    pub fn prefetch(&self, ip: IpAddr) {
        let a = addr_of(ip);
        let (x, y) = a.route();
        self.mids[x][y].prefetch(&a);
    }

    /// [`SetTable::prefetch`] that also returns where the probe of an IPv4 `ip` starts, so that
    /// [`SetTable::members_at`] need not find its shard again.
    #[inline(always)]
    pub fn start_probe(&self, ip: IpAddr) -> Probe<'_> {
        let IpAddr::V4(v4) = ip else {
            self.prefetch(ip);
            return Probe(None);
        };
        let a = u32::from(v4);
        let shard = self.shard_v4(a);
        if let Shard { data: Some(data), mask } = shard {
            // `Addr::slot` of an IPv4 address.
            let h = u64::from(a).wrapping_mul(HASH_MUL);
            if let Some(w) = data.get(2 * ((h >> 20) as usize & *mask as usize)) {
                super::tree::prefetch(w);
            }
        }
        Probe(Some(shard))
    }

    /// [`SetTable::members`] of `ip`, whose probe [`SetTable::start_probe`] started.
    #[inline(always)]
    pub fn members_at<'s>(&'s self, ip: IpAddr, probe: Probe<'s>) -> Members<'s> {
        match ip {
            IpAddr::V4(v4) => self.members_v4_in(u32::from(v4), probe.0),
            IpAddr::V6(_) => self.members(ip),
        }
    }

    #[inline(always)]
    pub fn members(&self, ip: IpAddr) -> Members<'_> {
        if let IpAddr::V4(v4) = ip {
            return self.members_v4(u32::from(v4));
        }
        let a = addr_of(ip);
        let index = &self.prefixes.index[usize::from(a.v6)];
        let (prefix, prefix_sum) =
            if index.starts.is_empty() { (&[][..], &ListSum::NONE) } else { index.ids(a.net) };
        let (exact, exact_sum) = self.exact_ids(&a);
        Members { exact, prefix, exact_sum, prefix_sum }
    }

    /// [`SetTable::members`] of an IPv4 address: one hash, 32-bit compares.
    #[inline(always)]
    fn members_v4(&self, a: u32) -> Members<'_> {
        self.members_v4_in(a, Some(self.shard_v4(a)))
    }

    /// The shard holding IPv4 address `a`.
    #[inline(always)]
    fn shard_v4(&self, a: u32) -> &Shard {
        // `Addr::route` of an IPv4 address.
        let h = u64::from(a).wrapping_mul(HASH_MUL);
        &self.mids[(h >> 58) as usize][((h >> 52) & 63) as usize]
    }

    /// [`SetTable::members_v4`] given `a`'s shard.
    #[inline(always)]
    fn members_v4_in<'s>(&'s self, a: u32, shard: Option<&'s Shard>) -> Members<'s> {
        let (prefix, prefix_sum) = self.prefixes.index[0].ids_v4(a);
        // `Addr::hash` of an IPv4 address.
        let h = u64::from(a).wrapping_mul(HASH_MUL);
        let (exact, exact_sum) = match shard {
            Some(Shard { data: Some(data), mask }) => {
                let mask = *mask as usize;
                debug_assert!(data.len() >= 2 * (mask + 1));
                let mut i = (h >> 20) as usize & mask;
                // Never full: an empty slot ends every probe sequence.
                loop {
                    // SAFETY: `i <= mask`, and a shard's data starts with its `mask + 1` two-word slots
                    // (`Shard::from_entries`).
                    let (k, v) = unsafe { (*data.get_unchecked(2 * i), *data.get_unchecked(2 * i + 1)) };
                    if v == 0 {
                        break (&[][..], &ListSum::NONE);
                    }
                    if k == a && v & V6 == 0 {
                        let at = (v & START_MASK) as usize;
                        let len = (v >> LEN_SHIFT) as usize;
                        if len == LEN_POOL as usize {
                            let (_, ids, sum) = Shard::decode(data, k, v);
                            break (ids, sum);
                        }
                        debug_assert!(at + SUM_WORDS + len <= data.len());
                        // SAFETY: `from_entries` wrote the summary and then the `len` ids at `at`
                        // when it set the slot; the summary's words are a `ListSum` (see `sum_at`).
                        break unsafe {
                            (
                                data.get_unchecked(at + SUM_WORDS..at + SUM_WORDS + len),
                                &*data.as_ptr().add(at).cast::<ListSum>(),
                            )
                        };
                    }
                    i = (i + 1) & mask;
                }
            }
            _ => (&[][..], &ListSum::NONE),
        };
        Members { exact, prefix, exact_sum, prefix_sum }
    }

    /// The next version: this one with `changes` applied in order. Adding a present member or removing
    /// an absent one changes nothing.
    pub fn apply(&self, changes: &[Change]) -> SetTable {
        let mut t = self.clone();
        t.generation += 1;
        let mut reindex = [false; 2];
        let mut ids = Vec::new();
        for c in changes {
            if !c.key.is_host() {
                let p = Arc::make_mut(&mut t.prefixes);
                let list = p.nets.entry(c.key).or_default();
                match (list.binary_search(&c.set), c.add) {
                    (Err(i), true) => list.insert(i, c.set),
                    (Ok(i), false) => {
                        list.remove(i);
                    }
                    _ => continue,
                }
                if list.is_empty() {
                    p.nets.remove(&c.key);
                }
                reindex[usize::from(c.key.v6)] = true;
                continue;
            }
            let a = c.key.exact();
            let (cur, _) = t.exact_ids(&a);
            let pos = cur.binary_search(&c.set);
            if pos.is_ok() == c.add {
                continue;
            }
            ids.clear();
            ids.extend_from_slice(cur);
            match pos {
                Ok(p) => {
                    ids.remove(p);
                }
                Err(p) => ids.insert(p, c.set),
            }
            let (x, y) = a.route();
            // Copies the 64 shard handles when the block is shared.
            let mid = Arc::make_mut(&mut t.mids[x]);
            mid[y] = mid[y].with(a, &ids, &t.sums);
        }
        for (v6, &again) in reindex.iter().enumerate() {
            if again {
                Arc::make_mut(&mut t.prefixes).reindex(v6 == 1, &t.sums);
            }
        }
        t
    }

    /// Heap bytes held by this version (shared parts counted in full).
    pub fn memory_bytes(&self) -> usize {
        let p = &self.prefixes;
        self.mids
            .iter()
            .map(|m| m.iter().map(|s| s.memory_bytes()).sum::<usize>() + FANOUT * size_of::<usize>())
            .sum::<usize>()
            + p.index.iter().map(Intervals::memory_bytes).sum::<usize>()
            + p.nets.capacity() * (size_of::<(MemberKey, Vec<u32>)>() + 1)
            + p.nets.values().map(|v| v.capacity() * 4).sum::<usize>()
            + self.sums.memory_bytes()
    }
}

#[inline]
fn addr_of(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => Addr { net: u128::from(u32::from(a)), v6: false },
        IpAddr::V6(a) => Addr { net: u128::from(a), v6: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn univ(x: u32, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(std::net::Ipv6Addr::from(
                0xfd00u128 << 112 | u128::from(x & 0x3f) | u128::from(x & 1) << 70,
            ))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(if x & 1 == 0 {
                0x0a00_0000 | (x & 0x3f)
            } else {
                0xc0a8_0100 | (x & 0x3f)
            }))
        }
    }

    #[test]
    fn members_match_naive() {
        let mut rng = crate::classify::synth::Rng::new(7);
        for round in 0..200 {
            let mut members = Vec::new();
            let n = 1 + rng.below(40);
            for _ in 0..n {
                let v6 = rng.chance(0.5);
                let len = if rng.chance(0.6) {
                    if v6 {
                        128
                    } else {
                        32
                    }
                } else if v6 {
                    [0u8, 60, 64, 72, 122, 126, 128][rng.below(7)]
                } else {
                    [0u8, 8, 24, 26, 28, 30, 32][rng.below(7)]
                };
                let addr = univ(rng.below(128) as u32, v6);
                members.push((MemberKey::of(IpNet { addr, len }), rng.below(5) as u32));
            }
            let t = SetTable::new(members.clone(), SetSums::default());
            for x in 0..128u32 {
                for v6 in [false, true] {
                    let ip = univ(x, v6);
                    let m = t.members(ip);
                    for id in 0..5 {
                        let want = members.iter().any(|(k, s)| {
                            *s == id && k.v6 == v6 && {
                                let a = addr_of(ip).net;
                                let (lo, hi) = k.bounds();
                                lo <= a && a <= hi
                            }
                        });
                        assert_eq!(m.contains(id), want, "round {round} ip {ip} id {id} members {members:?}");
                    }
                }
            }
        }
    }
}
