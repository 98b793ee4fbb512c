//! Address-set membership: for one address, every set that holds it, in a bounded number of probes;
//! versions that share all but the touched shard, so one member change costs microseconds.
//!
//! Members are keyed by `(family, prefix length, network)`: an exact address is a full-length prefix.
//! One table maps each key to the sorted ids of the sets holding it. A lookup probes the address itself
//! and then one key per prefix length that some member uses (at most 32 more for IPv4, 128 for IPv6),
//! so the cost is bounded by the number of distinct prefix lengths, not by the number of members.
//!
//! The table is split into 64 × 64 shards behind `Arc`s (shard chosen by a multiplicative hash of the
//! key). A new version clones the 64 top pointers, one middle block and the touched shards
//! (`Arc::make_mut`), and shares the rest with the version readers may still hold.

use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashMap;

use crate::model::IpNet;

/// A normalized member: host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct MemberKey {
    net: u128,
    len: u8,
    v6: bool,
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

    fn route(&self) -> (usize, usize) {
        let x = (self.net as u64) ^ ((self.net >> 64) as u64).rotate_left(17) ^ u64::from(self.len) << 56;
        let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ((h >> 58) as usize, ((h >> 52) & 63) as usize)
    }
}

const FANOUT: usize = 64;

#[derive(Debug, Clone, Default)]
struct Shard {
    /// Key → `[start, end)` of its sorted set ids in `pool`.
    map: AHashMap<MemberKey, (u32, u32)>,
    pool: Vec<u32>,
    /// Pool slots no key refers to any more.
    garbage: usize,
}

impl Shard {
    fn ids(&self, k: &MemberKey) -> &[u32] {
        match self.map.get(k) {
            Some(&(s, e)) => &self.pool[s as usize..e as usize],
            None => &[],
        }
    }

    /// Replaces the ids of `k` (`ids` sorted, deduplicated; empty removes the key).
    fn set(&mut self, k: MemberKey, ids: &[u32]) {
        if let Some((s, e)) = self.map.remove(&k) {
            self.garbage += (e - s) as usize;
        }
        if !ids.is_empty() {
            let s = self.pool.len() as u32;
            self.pool.extend_from_slice(ids);
            self.map.insert(k, (s, self.pool.len() as u32));
        }
        if self.garbage > 32 && self.garbage * 2 > self.pool.len() {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let mut pool = Vec::with_capacity(self.pool.len() - self.garbage);
        for r in self.map.values_mut() {
            let s = pool.len() as u32;
            pool.extend_from_slice(&self.pool[r.0 as usize..r.1 as usize]);
            *r = (s, pool.len() as u32);
        }
        self.pool = pool;
        self.garbage = 0;
    }

    fn memory_bytes(&self) -> usize {
        self.map.capacity() * (size_of::<(MemberKey, (u32, u32))>() + 1)
            + self.pool.capacity() * size_of::<u32>()
            + size_of::<Shard>()
    }
}

#[derive(Debug, Clone)]
struct Mid {
    shards: Vec<Arc<Shard>>,
}

/// One immutable version of every set's members.
#[derive(Debug, Clone)]
pub(super) struct SetTable {
    /// Bumped by every published change.
    pub generation: u64,
    mids: Vec<Arc<Mid>>,
    /// Members per prefix length, `[family][len]`.
    counts: [Vec<u32>; 2],
    /// Prefix lengths shorter than a host that some member uses, per family, longest first.
    lens: [Vec<u8>; 2],
}

/// The sets holding one address: a borrowed slice for the exact address, plus the ids found through
/// prefixes, inline unless there are unusually many.
#[derive(Debug)]
pub(super) struct Members<'a> {
    exact: &'a [u32],
    inline: [u32; 16],
    n: usize,
    spill: Vec<u32>,
}

impl Members<'_> {
    /// Nothing.
    pub const NONE: Members<'static> = Members { exact: &[], inline: [0; 16], n: 0, spill: Vec::new() };

    /// Whether set `id` holds the address.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        self.exact.contains(&id) || self.inline[..self.n].contains(&id) || self.spill.contains(&id)
    }

    /// Every set id holding the address (an id may repeat).
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.exact.iter().chain(&self.inline[..self.n]).chain(&self.spill).copied()
    }

    fn push(&mut self, ids: &[u32]) {
        for &id in ids {
            if self.n < self.inline.len() {
                self.inline[self.n] = id;
                self.n += 1;
            } else {
                self.spill.push(id);
            }
        }
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
    /// A table holding `members` (`(set id, member)` pairs, any order, duplicates allowed).
    pub fn new(mut members: Vec<(MemberKey, u32)>) -> SetTable {
        members.sort_unstable_by_key(|&(k, id)| (k.v6, k.len, k.net, id));
        members.dedup();
        let mut t = SetTable::empty();
        let mut shards: Vec<Vec<Shard>> = (0..FANOUT).map(|_| vec![Shard::default(); FANOUT]).collect();
        let mut i = 0;
        while i < members.len() {
            let k = members[i].0;
            let mut j = i;
            while j < members.len() && members[j].0 == k {
                j += 1;
            }
            let (a, b) = k.route();
            let sh = &mut shards[a][b];
            let s = sh.pool.len() as u32;
            sh.pool.extend(members[i..j].iter().map(|m| m.1));
            sh.map.insert(k, (s, sh.pool.len() as u32));
            t.counts[usize::from(k.v6)][usize::from(k.len)] += 1;
            i = j;
        }
        t.mids = shards
            .into_iter()
            .map(|v| Arc::new(Mid { shards: v.into_iter().map(Arc::new).collect() }))
            .collect();
        t.refresh_lens();
        t
    }

    fn empty() -> SetTable {
        SetTable {
            generation: 0,
            mids: Vec::new(),
            counts: [vec![0; 33], vec![0; 129]],
            lens: [Vec::new(), Vec::new()],
        }
    }

    fn refresh_lens(&mut self) {
        for f in 0..2 {
            let host = self.counts[f].len() - 1;
            self.lens[f] = (0..host).rev().filter(|&l| self.counts[f][l] > 0).map(|l| l as u8).collect();
        }
    }

    fn ids(&self, k: &MemberKey) -> &[u32] {
        let (a, b) = k.route();
        self.mids[a].shards[b].ids(k)
    }

    /// The sets holding `ip`.
    #[inline]
    pub fn members(&self, ip: IpAddr) -> Members<'_> {
        let (net, v6, host) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), false, 32u8),
            IpAddr::V6(a) => (u128::from(a), true, 128u8),
        };
        let mut m = Members { exact: self.ids(&MemberKey { net, len: host, v6 }), ..Members::NONE };
        for &len in &self.lens[usize::from(v6)] {
            let mask = if len == 0 { 0 } else { u128::MAX << (u32::from(host) - u32::from(len)) };
            let ids = self.ids(&MemberKey { net: net & mask, len, v6 });
            if !ids.is_empty() {
                m.push(ids);
            }
        }
        m
    }

    /// The next version: this one with `changes` applied in order. Adding a present member or removing
    /// an absent one changes nothing.
    pub fn apply(&self, changes: &[Change]) -> SetTable {
        let mut t = self.clone();
        t.generation += 1;
        let mut lens_changed = false;
        let mut ids = Vec::new();
        for c in changes {
            let (a, b) = c.key.route();
            let cur = t.mids[a].shards[b].ids(&c.key);
            let pos = cur.binary_search(&c.set);
            if pos.is_ok() == c.add {
                continue;
            }
            ids.clear();
            ids.extend_from_slice(cur);
            let was_empty = ids.is_empty();
            match pos {
                Ok(p) => {
                    ids.remove(p);
                }
                Err(p) => ids.insert(p, c.set),
            }
            let count = &mut t.counts[usize::from(c.key.v6)][usize::from(c.key.len)];
            if was_empty {
                *count += 1;
                lens_changed |= *count == 1;
            } else if ids.is_empty() {
                *count -= 1;
                lens_changed |= *count == 0;
            }
            let mid = Arc::make_mut(&mut t.mids[a]);
            Arc::make_mut(&mut mid.shards[b]).set(c.key, &ids);
        }
        if lens_changed {
            t.refresh_lens();
        }
        t
    }

    /// Heap bytes held by this version (shared shards counted in full).
    pub fn memory_bytes(&self) -> usize {
        self.mids
            .iter()
            .map(|m| m.shards.iter().map(|s| s.memory_bytes()).sum::<usize>() + FANOUT * size_of::<usize>())
            .sum::<usize>()
            + 162 * size_of::<u32>()
    }
}
