//! Address-set membership: for one address, every set that holds it, in two bounded steps; versions
//! that share all but what a change touches, so one member change costs microseconds.
//!
//! - **Exact addresses** (the bulk of NSX sets: VM and pod IPs) live in one hash table from address to
//!   the sorted ids of the sets holding it: one probe per lookup. The table is cut into 64 × 64 shards
//!   (chosen by a multiplicative hash of the address), each a small open-addressing array of one-line
//!   slots holding the address and up to 11 set ids inline, so a probe usually costs one cache miss.
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
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
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
/// Address bits (from the top of the family's width) that pick an interval bucket.
const BUCKET_BITS: u32 = 12;
/// One shard's addresses and their set ids, before the shard is built.
type ShardEntries = Vec<(Addr, Vec<u32>)>;
/// Set ids stored in a slot itself; longer lists go to the shard's pool.
const INLINE: usize = 11;

/// One cache line: an address and (usually) the ids of the sets holding it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C, align(64))]
struct Slot {
    addr: u128,
    /// 0: empty. Else bit 31: IPv6; bits 0..31: number of ids.
    meta: u32,
    /// The ids when at most [`INLINE`]; else `[start, end)` in the pool.
    ids: [u32; INLINE],
}

const V6: u32 = 1 << 31;

/// An immutable open-addressing table (linear probing, at most half full), rebuilt on change.
#[derive(Debug, Clone, Default)]
struct Shard {
    slots: Arc<[Slot]>,
    /// Id lists longer than [`INLINE`]; `None` (no reference count to touch) in most shards.
    pool: Option<Arc<[u32]>>,
}

impl Shard {
    fn from_entries<I: AsRef<[u32]>>(entries: &[(Addr, I)]) -> Shard {
        if entries.is_empty() {
            return Shard::default();
        }
        let cap = (entries.len() * 2).next_power_of_two().max(4);
        let mut slots = vec![Slot::default(); cap];
        let mut pool = Vec::new();
        for (a, ids) in entries {
            let ids = ids.as_ref();
            let mut i = a.slot(cap);
            while slots[i].meta != 0 {
                i = (i + 1) & (cap - 1);
            }
            let mut slot =
                Slot { addr: a.net, meta: ids.len() as u32 | if a.v6 { V6 } else { 0 }, ids: [0; INLINE] };
            if ids.len() <= INLINE {
                slot.ids[..ids.len()].copy_from_slice(ids);
            } else {
                slot.ids[0] = pool.len() as u32;
                pool.extend_from_slice(ids);
                slot.ids[1] = pool.len() as u32;
            }
            slots[i] = slot;
        }
        Shard { slots: slots.into(), pool: (!pool.is_empty()).then(|| pool.into()) }
    }

    fn ids_of<'a>(&'a self, s: &'a Slot) -> &'a [u32] {
        let n = (s.meta & !V6) as usize;
        if n <= INLINE {
            &s.ids[..n]
        } else {
            self.pool.as_deref().and_then(|p| p.get(s.ids[0] as usize..s.ids[1] as usize)).unwrap_or(&[])
        }
    }

    fn entries(&self) -> Vec<(Addr, &[u32])> {
        self.slots
            .iter()
            .filter(|s| s.meta != 0)
            .map(|s| (Addr { net: s.addr, v6: s.meta & V6 != 0 }, self.ids_of(s)))
            .collect()
    }

    #[inline]
    fn ids(&self, a: &Addr) -> &[u32] {
        let cap = self.slots.len();
        if cap == 0 {
            return &[];
        }
        let tag = if a.v6 { V6 } else { 0 };
        let mut i = a.slot(cap);
        // At most half full: an empty slot ends every probe sequence.
        for _ in 0..cap {
            let s = &self.slots[i];
            if s.meta == 0 {
                return &[];
            }
            if s.addr == a.net && s.meta & V6 == tag {
                return self.ids_of(s);
            }
            i = (i + 1) & (cap - 1);
        }
        &[]
    }

    /// A copy with the ids of `a` replaced (`ids` sorted; empty removes `a`).
    fn with(&self, a: Addr, ids: &[u32]) -> Shard {
        let mut entries = self.entries();
        entries.retain(|(k, _)| *k != a);
        if !ids.is_empty() {
            entries.push((a, ids));
        }
        Shard::from_entries(&entries)
    }

    fn memory_bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>()
            + self.pool.as_ref().map_or(0, |p| p.len() * size_of::<u32>())
            + size_of::<Shard>()
    }
}

/// The prefixes of one family flattened into elementary intervals.
#[derive(Debug, Clone, Default)]
struct Intervals {
    /// `buckets[b]`: how many `starts` lie below `b << shift` (the last entry: all of them), so a
    /// lookup binary-searches only the starts that share its address's top [`BUCKET_BITS`] bits.
    buckets: Vec<u32>,
    shift: u32,
    /// Interval `i` runs from `starts[i]` to `starts[i + 1] - 1`; `starts[0] == 0` when non-empty.
    starts: Vec<u128>,
    /// Per interval, `[start, end)` of its set ids in `pool`.
    lists: Vec<(u32, u32)>,
    pool: Vec<u32>,
}

impl Intervals {
    /// From `(prefix, sorted ids)` pairs of one family.
    fn new(prefixes: Vec<(MemberKey, &[u32])>, v6: bool) -> Intervals {
        let mut out = Intervals::flat(prefixes);
        if out.starts.is_empty() {
            return out;
        }
        out.shift = if v6 { 128 - BUCKET_BITS } else { 32 - BUCKET_BITS };
        let mut buckets = Vec::with_capacity((1 << BUCKET_BITS) + 1);
        let mut i = 0;
        for b in 0..1u128 << BUCKET_BITS {
            while out.starts.get(i).is_some_and(|&s| s < b << out.shift) {
                i += 1;
            }
            buckets.push(i as u32);
        }
        buckets.push(out.starts.len() as u32);
        out.buckets = buckets;
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

    #[inline]
    fn ids(&self, a: u128) -> &[u32] {
        // Starts below `a`'s bucket are all <= a; starts past it are all > a.
        let b = (a >> self.shift) as usize;
        let (lo, hi) = match (self.buckets.get(b), self.buckets.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.starts.len()),
        };
        let i = lo + self.starts.get(lo..hi).unwrap_or(&[]).partition_point(|&s| s <= a);
        match i.checked_sub(1).and_then(|i| self.lists.get(i)) {
            Some(&(s, e)) => self.pool.get(s as usize..e as usize).unwrap_or(&[]),
            None => &[],
        }
    }

    fn memory_bytes(&self) -> usize {
        self.buckets.capacity() * 4
            + self.starts.capacity() * 16
            + self.lists.capacity() * 8
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
    fn reindex(&mut self, v6: bool) {
        let of_family =
            self.nets.iter().filter(|(k, _)| k.v6 == v6).map(|(k, v)| (*k, v.as_slice())).collect();
        self.index[usize::from(v6)] = Intervals::new(of_family, v6);
    }
}

/// One immutable version of every set's members.
#[derive(Debug, Clone)]
pub(super) struct SetTable {
    /// Bumped by every published change.
    pub generation: u64,
    mids: Vec<Arc<[Shard]>>,
    prefixes: Arc<Prefixes>,
}

/// The sets holding one address: ids found by its exact address, and by prefixes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Members<'a> {
    exact: &'a [u32],
    prefix: &'a [u32],
}

impl Members<'_> {
    /// Nothing.
    pub const NONE: Members<'static> = Members { exact: &[], prefix: &[] };

    /// Whether set `id` holds the address.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        self.exact.contains(&id) || self.prefix.contains(&id)
    }

    /// Every set id holding the address (an id may repeat).
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.exact.iter().chain(self.prefix).copied()
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
    /// A table holding `members` (`(member, set id)` pairs, any order, duplicates allowed).
    pub fn new(mut members: Vec<(MemberKey, u32)>) -> SetTable {
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
        prefixes.reindex(false);
        prefixes.reindex(true);
        let mids = shards.into_iter().map(|v| v.iter().map(|e| Shard::from_entries(e)).collect()).collect();
        SetTable { generation: 0, mids, prefixes: Arc::new(prefixes) }
    }

    #[inline]
    fn exact_ids(&self, a: &Addr) -> &[u32] {
        let (x, y) = a.route();
        match self.mids.get(x).and_then(|m| m.get(y)) {
            Some(s) => s.ids(a),
            None => &[],
        }
    }

    /// The sets holding `ip`.
    /// Starts loading the hash slot [`SetTable::members`] will probe first for `ip`.
    #[inline]
    pub fn prefetch(&self, ip: IpAddr) {
        let a = addr_of(ip);
        let (x, y) = a.route();
        if let Some(s) = self.mids.get(x).and_then(|m| m.get(y)) {
            if !s.slots.is_empty() {
                super::tree::prefetch(&s.slots[a.slot(s.slots.len())]);
            }
        }
    }

    #[inline]
    pub fn members(&self, ip: IpAddr) -> Members<'_> {
        let a = addr_of(ip);
        let index = &self.prefixes.index[usize::from(a.v6)];
        let prefix = if index.starts.is_empty() { &[][..] } else { index.ids(a.net) };
        Members { exact: self.exact_ids(&a), prefix }
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
            let cur = t.exact_ids(&a);
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
            if let Some(mid) = t.mids.get_mut(x) {
                // `Arc<[T]>` has no `make_mut`: copy the 64 shard handles when shared.
                if Arc::get_mut(mid).is_none() {
                    *mid = mid.iter().cloned().collect();
                }
                if let Some(shard) = Arc::get_mut(mid).and_then(|m| m.get_mut(y)) {
                    *shard = shard.with(a, &ids);
                }
            }
        }
        for (v6, &again) in reindex.iter().enumerate() {
            if again {
                Arc::make_mut(&mut t.prefixes).reindex(v6 == 1);
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
    }
}

#[inline]
fn addr_of(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => Addr { net: u128::from(u32::from(a)), v6: false },
        IpAddr::V6(a) => Addr { net: u128::from(a), v6: true },
    }
}
