//! A bounded flow table: a slab of entries and an open-addressing index of slab positions.
//!
//! Entries live in one `Vec` (the slab); the index is an array of 8-byte buckets, each holding 32 bits
//! of the key's hash and the entry's slab position, probed linearly. It doubles while it is at most
//! half full (a miss, which every new connection is, probes about 2.5 buckets at half load and 8.5 at
//! three quarters), but never beyond what the limit needs at seven-eighths load, so a full table's
//! index costs about 9 bytes per entry. A lookup reads one index cache line and the entry's slab line,
//! and both can be prefetched ahead of time ([`FlowTable::prefetch`],
//! [`FlowTable::prefetch_entry`]) so a batch of frames overlaps its cache misses, as VPP does. Removal
//! shifts later buckets back (no tombstones). A million IPv4 connections cost the slot size plus about
//! 21 bytes each (index, the expiry schedule below and its per-slot second): 81.6 MiB, measured by the
//! `conntrack` bench.
//!
//! The slab keeps an IPv4 flow's key in place in 16 bytes (two addresses, two ports, the protocol)
//! rather than the 38 of a [`FlowKey`], which holds IPv6-sized addresses; an IPv6 flow's key lives in a
//! side arena and its slot holds the arena index. A slot also holds the entry's expiry second, so an
//! IPv4 connection's slot (16 + 44 + 4 bytes) is exactly one 64-byte line; the second of the entry's
//! live schedule item, read only with the schedule, lives in a dense array beside the slab. (Slots
//! were 96 bytes over two lines while a connection held its packet and byte counts; those now live
//! beside the table, with the filter, for the connections it counts.)
//!
//! The table never holds more than its limit: an insert into a full table fails with [`TableFull`]
//! and the caller drops the packet (`state-limit`). Expired entries are reclaimed by the packet clock
//! without scanning: a min-heap of (second, slot) schedules every entry, and [`FlowTable::reclaim`] pops
//! what is due. Timers move on with every packet, but the heap is not touched then: a popped entry
//! whose expiry has moved is pushed again at its new second (so an entry costs one heap operation per
//! timeout period, not per packet), and a per-slot record of the scheduled second tells stale heap
//! items (of entries removed or replaced since) from live ones. So what expires at which packet-clock
//! second does not depend on where entries sit in the slab, nor on which worker holds them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::flow::{Endpoint, FlowKey};

/// The table holds its maximum number of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// One stored entry, as the table hands it out (removed, swept, drained or listed).
#[derive(Debug, Clone)]
pub struct Entry<V> {
    /// The flow.
    pub key: FlowKey,
    /// Its state.
    pub value: V,
    /// The slab slot it has (or had, until it was removed): the index of any data the caller keeps
    /// beside the table for it.
    pub slot: usize,
}

/// A flow key as the slab holds it, 16 bytes: an IPv4 flow's endpoints and protocol in place; for an
/// IPv6 flow (a *wide* key) the index of its full key in the table's arena. Only the table makes wide
/// ones; [`PackedKey::v4`] and [`PackedKey::of`] make IPv4 ones.
///
/// An IPv4 endpoint is one 48-bit word, the address above the port, so the words order as the
/// endpoints do: packing a flow is a minimum and a maximum, comparing keys is two compares, and the
/// table's hash folds the two words as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedKey {
    /// The `lo` endpoint's word (for a wide key: the arena index).
    lo: u64,
    /// The `hi` endpoint's word, the protocol in bits 48..56, and [`PackedKey::WIDE`] for a wide key.
    hi: u64,
}

/// The first twelve bytes of an IPv4-mapped address (`::ffff:a.b.c.d`).
const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

impl PackedKey {
    /// A key for places not filled yet.
    pub(crate) const PLACEHOLDER: PackedKey = PackedKey { lo: 0, hi: 0 };

    /// The bit of a wide key's `hi` word (never set in an IPv4 key's, whose top byte is 0).
    const WIDE: u64 = 1 << 63;

    /// The key of an IPv4 flow between endpoints `a` and `b` (address as a number, port), and whether
    /// `a` is its `lo` side: the same key and side [`FlowKey::new`] gives for the two endpoints.
    #[inline]
    pub fn v4(proto: u8, a: (u32, u16), b: (u32, u16)) -> (PackedKey, bool) {
        // The endpoints ordered by a minimum and a maximum, without a branch: which side is `lo` is as
        // good as random from one frame to the next (half of a connection's frames go each way), and
        // a branch on it would be mispredicted every other frame.
        let (wa, wb) = (word(a), word(b));
        let key = PackedKey { lo: wa.min(wb), hi: wa.max(wb) | u64::from(proto) << 48 };
        (key, wa <= wb)
    }

    fn wide(index: u32, proto: u8) -> PackedKey {
        PackedKey { lo: u64::from(index), hi: u64::from(proto) << 48 | PackedKey::WIDE }
    }

    fn is_wide(&self) -> bool {
        self.hi & PackedKey::WIDE != 0
    }

    /// The arena index of a wide key.
    fn arena_index(&self) -> usize {
        self.lo as usize
    }

    /// `key` packed, when both its addresses are IPv4.
    #[inline]
    pub fn of(key: &FlowKey) -> Option<PackedKey> {
        let (lo, hi) = (&key.lo.addr, &key.hi.addr);
        if lo[..12] != V4_MAPPED || hi[..12] != V4_MAPPED {
            return None;
        }
        let addr = |a: &[u8; 16]| u32::from_be_bytes([a[12], a[13], a[14], a[15]]);
        let (lo, hi) = (word((addr(lo), key.lo.port)), word((addr(hi), key.hi.port)));
        Some(PackedKey { lo, hi: hi | u64::from(key.proto) << 48 })
    }

    /// The `lo` and `hi` addresses of an IPv4 key.
    #[inline]
    pub fn addresses(&self) -> (u32, u32) {
        ((self.lo >> 16) as u32, (self.hi >> 16) as u32)
    }

    /// The `lo` and `hi` ports of an IPv4 key.
    #[inline]
    pub fn ports(&self) -> (u16, u16) {
        (self.lo as u16, self.hi as u16)
    }

    /// The full key of an IPv4 one.
    pub fn unpack(&self) -> FlowKey {
        debug_assert!(!self.is_wide());
        let ep = |a: u32, port: u16| {
            let mut addr = [0; 16];
            addr[..12].copy_from_slice(&V4_MAPPED);
            addr[12..].copy_from_slice(&a.to_be_bytes());
            Endpoint { addr, port }
        };
        let ((lo, hi), (lo_port, hi_port)) = (self.addresses(), self.ports());
        FlowKey { lo: ep(lo, lo_port), hi: ep(hi, hi_port), proto: (self.hi >> 48) as u8 }
    }

    /// The table's hash of an IPv4 key: [`FlowTable::hash`] of its full key.
    #[inline]
    pub fn hash(&self) -> u64 {
        crate::flow::hash_v4(self.lo, self.hi)
    }
}

/// An IPv4 endpoint (address as a number, port) as one word: the address above the port.
#[inline(always)]
fn word((addr, port): (u32, u16)) -> u64 {
    u64::from(addr) << 16 | u64::from(port)
}

/// A key to look up: packed already (an IPv4 flow), or a full key.
#[derive(Debug, Clone, Copy)]
pub enum Probe<'k> {
    /// An IPv4 flow's packed key.
    Packed(PackedKey),
    /// A full key (packed on the way when it is an IPv4 flow's).
    Full(&'k FlowKey),
}

impl<'k> Probe<'k> {
    /// The same key, packed when it is an IPv4 flow's (`Full` only for an IPv6 flow's then).
    #[inline]
    fn resolve(self) -> Probe<'k> {
        match self {
            Probe::Full(k) => PackedKey::of(k).map_or(self, Probe::Packed),
            packed => packed,
        }
    }
}

/// A live entry's expiry second (and its slab slot) as the table hands it out ([`FlowTable::get_mut`]):
/// setting it keeps the expiry schedule right. A later second needs nothing (the entry's heap item finds it when it comes
/// due); an earlier one is scheduled at once, so a timer cut short (a FIN, an RST) is reclaimed on time.
#[derive(Debug)]
pub struct Expiry<'t> {
    at: &'t mut u32,
    scheduled: &'t mut u32,
    due: &'t mut BinaryHeap<Reverse<(u32, u32)>>,
    pos: u32,
}

impl Expiry<'_> {
    /// The packet-clock second the entry expires at.
    #[inline(always)]
    pub fn get(&self) -> u32 {
        *self.at
    }

    /// The entry's slab slot (see [`Entry::slot`]).
    #[inline(always)]
    pub fn slot(&self) -> usize {
        self.pos as usize
    }

    /// Moves the entry's expiry to second `at` (at least 1: 0 marks a free slot).
    #[inline(always)]
    pub fn set(&mut self, at: u32) {
        let at = at.max(1);
        // The scheduled second never passes the expiry, so only an earlier expiry can need a new
        // heap item: a later one (nearly every packet) does not even look at the schedule.
        let earlier = at < *self.at;
        *self.at = at;
        if earlier && at < *self.scheduled {
            *self.scheduled = at;
            self.due.push(Reverse((at, self.pos)));
        }
    }
}

/// A slab slot: the packed key, the value and the packet-clock second the entry expires at. Slots are
/// 64-byte aligned: a connection's (16 + 44 + 4 bytes) is exactly one cache line, and a lookup
/// touches that line and its index line, nothing else. (The second of the entry's live item on the
/// expiry schedule, read only when the schedule is, lives in a dense array beside the slab.)
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Slot<V> {
    key: PackedKey,
    value: V,
    expires: u32,
}

/// A bounded flow table (see the module doc).
#[derive(Debug, Clone)]
pub struct FlowTable<V> {
    /// `0` = empty, else `tag << 32 | (position + 1)`.
    buckets: Buckets,
    slots: Vec<Option<Slot<V>>>,
    /// By slot: the second of the entry's live item on the expiry schedule (0: none).
    scheduled: Vec<u32>,
    /// The keys of IPv6 flows, by the index their wide [`PackedKey`] holds, and the free indexes.
    wide: Vec<FlowKey>,
    wide_free: Vec<u32>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
    /// Expiry schedule: (second, slot), earliest first; items whose second is not the slot's
    /// `scheduled` one (or whose slot is free) are stale.
    due: BinaryHeap<Reverse<(u32, u32)>>,
}

/// The home bucket of `hash` in an index of `len` buckets (multiply-shift of the hash's high half).
#[inline(always)]
fn home(hash: u64, len: usize) -> usize {
    (((hash >> 32) * len as u64) >> 32) as usize
}

fn tag(hash: u64) -> u64 {
    (hash >> 32) << 32
}

impl<V> FlowTable<V> {
    /// An empty table that will hold at most `limit` entries.
    pub fn new(limit: usize) -> FlowTable<V> {
        FlowTable {
            buckets: Buckets::zeroed(0),
            slots: Vec::new(),
            scheduled: Vec::new(),
            wide: Vec::new(),
            wide_free: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit,
            due: BinaryHeap::new(),
        }
    }

    /// The hash the table uses for `key`.
    pub fn hash(key: &FlowKey) -> u64 {
        key.hash64()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The maximum number of entries.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Changes the limit; entries above a lowered limit stay until they expire.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The home bucket of `hash`: Lemire's multiply-shift range reduction of its high 32 bits, so any
    /// bucket count up to 2^32 works with one 64-bit multiply. Those bits are also the tag a bucket
    /// keeps, so a bucket's home is known without its entry: growing the index and shifting buckets
    /// back on removal never touch the slab.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        home(hash, self.buckets.len())
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }

    /// Asks the CPU to start loading the index line for `hash`.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if !self.buckets.is_empty() {
            prefetch(&self.buckets[self.home(hash)]);
        }
    }

    /// Where the index is, for asking for its lines ([`IndexView::prefetch`]) without going through
    /// the table for each.
    #[inline]
    pub fn index_view(&self) -> IndexView {
        IndexView { at: self.buckets.as_ptr(), len: self.buckets.len() }
    }

    /// Asks the CPU to start loading the entry for `key` (whose index line should be loaded already).
    /// Returns where the entry probably is, a hint for [`FlowTable::get_mut_hinted`].
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) -> Option<usize> {
        let found = self.find_tag(hash);
        if let Some(pos) = found {
            // Slots are 64-byte aligned, so a slot is whole lines (a connection's is one): ask for
            // each. (The loop is unrolled away for a one-line slot.)
            let p = self.slots.as_ptr().wrapping_add(pos) as *const u8;
            let size = std::mem::size_of::<Option<Slot<V>>>();
            let mut at = 0;
            while at < size {
                prefetch_ptr(p.wrapping_add(at));
                at += 64;
            }
        }
        found
    }

    /// The slab position of the first index entry whose tag matches `hash` (good enough to prefetch).
    fn find_tag(&self, hash: u64) -> Option<usize> {
        self.probe(hash, |_| true).map(|(_, pos)| pos)
    }

    /// The slab position of the key `resolved` ([`Probe::resolve`]) whose hash is `hash`.
    #[inline]
    fn find(&self, resolved: Probe<'_>, hash: u64) -> Option<usize> {
        match resolved {
            Probe::Packed(key) => self.find_packed(key, hash),
            Probe::Full(_) => self.probe(hash, |pos| self.holds(pos, resolved)).map(|(_, pos)| pos),
        }
    }

    /// [`FlowTable::find`] for a packed key: the probe loop with the key compare in it (most lookups
    /// that miss the hint are a connection's first frames, one or two of them for each connection).
    /// Out of line: the hinted lookups it backs are the hot path. (Written out rather than as
    /// [`FlowTable::probe`] with a closure: the same instructions, but the build laid the replay's
    /// loops out so that two workers ran 7–10 % slower, 14–16 alternated rounds, thirteenth session.)
    #[inline(never)]
    fn find_packed(&self, key: PackedKey, hash: u64) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let t = tag(hash);
        let mut i = self.home(hash);
        loop {
            let b = self.buckets[i];
            if b == 0 {
                return None;
            }
            if b & 0xffff_ffff_0000_0000 == t {
                let pos = (b & 0xffff_ffff) as usize - 1;
                if matches!(self.slots.get(pos), Some(Some(slot)) if slot.key == key) {
                    return Some(pos);
                }
            }
            i = self.next(i);
        }
    }

    /// Walks the probe run of `hash` and returns the first bucket with a matching tag whose slab
    /// position `accept` takes, with that position.
    #[inline]
    fn probe(&self, hash: u64, accept: impl Fn(usize) -> bool) -> Option<(usize, usize)> {
        if self.buckets.is_empty() {
            return None;
        }
        let t = tag(hash);
        let mut i = self.home(hash);
        loop {
            let b = self.buckets[i];
            if b == 0 {
                return None;
            }
            if b & 0xffff_ffff_0000_0000 == t {
                let pos = (b & 0xffff_ffff) as usize - 1;
                if accept(pos) {
                    return Some((i, pos));
                }
            }
            i = self.next(i);
        }
    }

    /// True when slot `pos` holds the key `resolved` ([`Probe::resolve`]).
    #[inline]
    fn holds(&self, pos: usize, resolved: Probe<'_>) -> bool {
        match self.slots.get(pos) {
            Some(Some(slot)) => slot_holds(slot.key, &self.wide, resolved),
            _ => false,
        }
    }

    /// The full key of a stored one.
    fn unpack(&self, p: PackedKey) -> FlowKey {
        if p.is_wide() {
            self.wide[p.arena_index()]
        } else {
            p.unpack()
        }
    }

    /// [`FlowTable::get_mut_hashed`], trying slab position `hint` first (as returned by
    /// [`FlowTable::prefetch_entry`]; the entry may have moved or gone since, which the key check
    /// catches).
    #[inline(always)]
    pub fn get_mut_hinted(
        &mut self,
        key: Probe<'_>,
        hash: u64,
        hint: Option<usize>,
    ) -> Option<(&mut V, Expiry<'_>)> {
        let resolved = key.resolve();
        // The hinted slot when it holds the key (the usual case), taken on its own path so the
        // compiler sees the slot it checked is the one it hands out.
        if let Some(p) = hint.filter(|&p| self.holds(p, resolved)) {
            let FlowTable { slots, scheduled, due, .. } = self;
            let Slot { value, expires, .. } = slots.get_mut(p)?.as_mut()?;
            let scheduled = scheduled.get_mut(p)?;
            return Some((value, Expiry { at: expires, scheduled, due, pos: p as u32 }));
        }
        let pos = self.find(resolved, hash)?;
        let FlowTable { slots, scheduled, due, .. } = self;
        let Slot { value, expires, .. } = slots.get_mut(pos)?.as_mut()?;
        let scheduled = scheduled.get_mut(pos)?;
        Some((value, Expiry { at: expires, scheduled, due, pos: pos as u32 }))
    }

    /// The value for `key` and its expiry second, if present (expired or not: the caller decides).
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<(&mut V, Expiry<'_>)> {
        self.get_mut_hashed(key, Self::hash(key))
    }

    /// [`FlowTable::get_mut`] with the key's hash ([`FlowTable::hash`]) already computed.
    #[inline]
    pub fn get_mut_hashed(&mut self, key: &FlowKey, hash: u64) -> Option<(&mut V, Expiry<'_>)> {
        self.get_mut_hinted(Probe::Full(key), hash, None)
    }

    /// Inserts `key`, which must not be present, expiring at `expires_s`; the slab slot it went to
    /// ([`Entry::slot`]). Fails when the table is full.
    pub fn insert(&mut self, key: FlowKey, value: V, expires_s: u32) -> Result<usize, TableFull> {
        let hash = Self::hash(&key);
        self.insert_hashed(key, hash, value, expires_s)
    }

    /// [`FlowTable::insert`] with the key's hash ([`FlowTable::hash`]) already computed.
    pub fn insert_hashed(
        &mut self,
        key: FlowKey,
        hash: u64,
        value: V,
        expires_s: u32,
    ) -> Result<usize, TableFull> {
        debug_assert_eq!(hash, Self::hash(&key));
        if self.len >= self.limit {
            return Err(TableFull);
        }
        if (self.len + 1) * 2 > self.buckets.len() && self.buckets.len() < self.max_buckets() {
            self.grow_index();
        }
        let pos = match self.free.pop() {
            Some(p) => p as usize,
            None => {
                if self.slots.len() == self.slots.capacity() {
                    self.grow_slab();
                }
                self.slots.push(None);
                self.scheduled.push(0);
                self.slots.len() - 1
            }
        };
        self.place(hash, pos);
        self.len += 1;
        // Entries expire no earlier than second 1 (a scheduled second of 0 means none).
        let expires_s = expires_s.max(1);
        let packed = PackedKey::of(&key).unwrap_or_else(|| self.put_wide(key));
        self.slots[pos] = Some(Slot { key: packed, value, expires: expires_s });
        self.schedule(pos, expires_s);
        Ok(pos)
    }

    /// Makes room for more slots: doubling while the slab is small, then at once room for the whole
    /// limit ([`RESERVE_FROM`]), never past the limit. The schedule's heap doubles with the slab and
    /// grows on its own once the slab has its room (reserving it whole too left 7.6 MiB more resident
    /// at 1,000,000 connections in the `conntrack` bench, 122.4 against 114.8 MiB, with 96-byte slots).
    #[cold]
    fn grow_slab(&mut self) {
        let cap = self.slots.capacity();
        let limit = self.limit.max(1);
        let doubled = (cap * 2).max(64).min(limit);
        let mut due = std::mem::take(&mut self.due).into_vec();
        // Where the address space cannot be had (a limit far beyond the machine), keep doubling.
        if cap < RESERVE_FROM || !regrow(&mut self.slots, limit) {
            regrow(&mut self.slots, doubled);
        }
        regrow(&mut due, doubled);
        let room = self.slots.capacity();
        regrow(&mut self.scheduled, room);
        self.due = BinaryHeap::from(due);
    }

    /// Stores an IPv6 flow's key in the arena; its wide packed key.
    fn put_wide(&mut self, key: FlowKey) -> PackedKey {
        let w = match self.wide_free.pop() {
            Some(w) => {
                self.wide[w as usize] = key;
                w
            }
            None => {
                self.wide.push(key);
                // Never more keys than slab positions, which are u32.
                (self.wide.len() - 1) as u32
            }
        };
        PackedKey::wide(w, key.proto)
    }

    fn place(&mut self, hash: u64, pos: usize) {
        self.place_bucket(tag(hash) | (pos as u64 + 1));
    }

    /// Puts a bucket (tag and position) at the first free place of its probe run.
    fn place_bucket(&mut self, b: u64) {
        let mut i = self.home(b);
        while self.buckets[i] != 0 {
            i = self.next(i);
        }
        self.buckets[i] = b;
    }

    /// The index size that holds `limit` entries at seven-eighths load.
    fn max_buckets(&self) -> usize {
        (self.limit.saturating_mul(8) / 7).max(16) + 1
    }

    fn grow_index(&mut self) {
        let cap = (self.buckets.len() * 2).max(16).min(self.max_buckets());
        let old = std::mem::replace(&mut self.buckets, Buckets::zeroed(cap));
        for &b in old.iter().filter(|&&b| b != 0) {
            self.place_bucket(b);
        }
    }

    /// Removes and returns the entry for `key`.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Entry<V>> {
        let resolved = Probe::Full(key).resolve();
        let (i, pos) = self.probe(Self::hash(key), |pos| self.holds(pos, resolved))?;
        // Backward-shift deletion: pull later members of the probe run into the hole.
        let mut hole = i;
        let mut j = self.next(i);
        loop {
            let b = self.buckets[j];
            if b == 0 {
                break;
            }
            let home = self.home(b);
            // Move `b` into the hole unless its home lies cyclically in (hole, j].
            let in_range = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !in_range {
                self.buckets[hole] = b;
                hole = j;
            }
            j = self.next(j);
        }
        self.buckets[hole] = 0;
        self.take(pos)
    }

    fn take(&mut self, pos: usize) -> Option<Entry<V>> {
        let slot = self.slots[pos].take()?;
        self.free.push(pos as u32);
        self.len -= 1;
        let key = self.unpack(slot.key);
        if slot.key.is_wide() {
            // Wide keys hold an arena index, which fits a u32 as slab positions do.
            self.wide_free.push(slot.key.arena_index() as u32);
        }
        Some(Entry { key, value: slot.value, slot: pos })
    }

    /// Puts slot `pos` (a full one) on the schedule at second `at`, its only live heap item from now on.
    fn schedule(&mut self, pos: usize, at: u32) {
        // (A free slot's second is never read: its heap items are stale whatever it says.)
        self.scheduled[pos] = at;
        self.due.push(Reverse((at, pos as u32)));
        // Stale items (of entries removed or rescheduled since) leave the heap when their second
        // comes; should removals outpace that, rebuild it from the live ones, so it stays within a
        // few times the table's size.
        if self.due.len() > 2 * self.len + 1024 {
            let live = self.slots.iter().zip(&self.scheduled).enumerate();
            let live =
                live.filter_map(|(pos, (s, &at))| s.as_ref().and((at != 0).then_some((at, pos as u32))));
            self.due = live.map(Reverse).collect();
        }
    }

    /// The earliest second some entry may expire at (`u32::MAX`: none); nothing expires before it.
    #[inline]
    pub fn next_due(&self) -> u32 {
        self.due.peek().map_or(u32::MAX, |Reverse((at, _))| *at)
    }

    /// Removes every entry expired at `now_s` (its expiry second is at most `now_s`) and returns them
    /// in key order, whatever their places in the slab; reschedules entries whose timer moved on.
    pub fn reclaim(&mut self, now_s: u32) -> Vec<Entry<V>> {
        let mut gone = Vec::new();
        while let Some(&Reverse((at, pos))) = self.due.peek() {
            if at > now_s {
                break;
            }
            self.due.pop();
            let pos = pos as usize;
            let Some(slot) = self.slots[pos].as_ref().filter(|_| self.scheduled[pos] == at) else {
                continue;
            };
            let exp = slot.expires;
            if exp <= now_s {
                let key = self.unpack(slot.key);
                if let Some(e) = self.remove(&key) {
                    gone.push(e);
                }
            } else {
                self.schedule(pos, exp);
            }
        }
        gone.sort_by_key(|e| e.key);
        gone
    }

    /// Removes every entry, handing each to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(Entry<V>)) {
        for pos in 0..self.slots.len() {
            if let Some(e) = self.take(pos) {
                f(e);
            }
        }
        self.buckets.iter_mut().for_each(|b| *b = 0);
        self.due.clear();
    }

    /// Calls `f` on every entry's value, in place.
    pub fn for_each_value_mut(&mut self, mut f: impl FnMut(&mut V)) {
        for slot in self.slots.iter_mut().flatten() {
            f(&mut slot.value);
        }
    }

    /// Every entry (key and value) with its expiry second.
    pub fn iter(&self) -> impl Iterator<Item = (Entry<&V>, u32)> {
        self.slots.iter().enumerate().filter_map(|(pos, s)| {
            s.as_ref().map(|s| (Entry { key: self.unpack(s.key), value: &s.value, slot: pos }, s.expires))
        })
    }

    /// Bytes held by the slab, the IPv6 key arena, the index and the expiry schedule (not counting
    /// allocator overhead).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Slot<V>>>()
            + self.wide.capacity() * std::mem::size_of::<FlowKey>()
            + self.wide_free.capacity() * 4
            + self.buckets.len() * 8
            + self.free.capacity() * 4
            + self.scheduled.capacity() * 4
            + self.due.capacity() * 8
    }
}

/// True when a slot whose key is `key` holds the key `resolved` ([`Probe::resolve`]); `wide`: the
/// table's arena of IPv6 keys.
#[inline(always)]
fn slot_holds(key: PackedKey, wide: &[FlowKey], resolved: Probe<'_>) -> bool {
    match resolved {
        Probe::Packed(p) => key == p,
        Probe::Full(full) => key.is_wide() && wide.get(key.arena_index()) == Some(full),
    }
}

/// The slab size (in slots) from which a growing table reserves room for its whole limit at once
/// instead of doubling again. The room is address space: the kernel backs a page with memory only when
/// a slot on it is first written, and slots fill from the start, so the memory in use follows the
/// connections as before. What it saves is the rest of the doublings: each allocated a fresh slab,
/// had its pages zeroed as they were first touched and copied every slot over (at 100,000 connections,
/// about 25 MiB zeroed and 12 MiB copied for a 10 MiB slab, a good part of the time new connections
/// took). Small tables (most filters of a large policy) never reach it.
const RESERVE_FROM: usize = 16 << 10;

/// Gives `v` room for `want` items in a fresh allocation advised for huge pages before anything is
/// copied into it. (`reserve` lets the allocator move the old pages with `mremap`, which keeps them 4 KiB
/// pages: replaying 100,000 connections, 2-4 MiB of the table's ~16 MiB ended on huge pages, against
/// 8-12 MiB this way.) False, leaving `v` as it was, where the allocator cannot give the room.
fn regrow<T>(v: &mut Vec<T>, want: usize) -> bool {
    if want <= v.capacity() {
        return true;
    }
    let mut fresh = Vec::new();
    if fresh.try_reserve_exact(want).is_err() {
        return false;
    }
    advise_huge_pages(&fresh);
    fresh.append(v);
    *v = fresh;
    true
}

/// Asks the kernel to back the not-yet-touched part of `v`'s allocation with 2 MiB pages where whole
/// ones fit (Linux transparent huge pages in `madvise` mode, the usual default). A large table's
/// entries are looked up at random, so with 4 KiB pages nearly every lookup also misses the TLB; with
/// huge pages a table of a million connections needs about sixty TLB entries instead of thirty thousand,
/// and growing it takes a few page faults instead of thousands. Only a hint: where the kernel declines,
/// nothing changes.
fn advise_huge_pages<T>(v: &Vec<T>) {
    let (start, bytes) = (v.as_ptr() as usize, v.capacity() * std::mem::size_of::<T>());
    const HUGE: usize = 2 << 20;
    if bytes < 2 * HUGE {
        return;
    }
    let (from, to) = ((start + HUGE - 1) & !(HUGE - 1), (start + bytes) & !(HUGE - 1));
    #[cfg(target_os = "linux")]
    if to > from {
        // SAFETY: [from, to) lies inside the allocation, which this process owns, and is page
        // aligned; MADV_HUGEPAGE changes how the kernel backs the pages, never their contents.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (from, to);
}

/// The index's buckets: `len` zeroed `u64`s in an allocation of their own, aligned to 2 MiB once they
/// take that much, so that the kernel can back every byte of them with huge pages. A `Vec`'s
/// allocation of 2 MiB or so starts anywhere, and then no aligned 2 MiB range fits inside it: the index
/// of 100,000 connections (2 MiB) was all on 4 KiB pages, one TLB entry per 512 buckets, though every
/// frame reads a random bucket.
struct Buckets {
    at: std::ptr::NonNull<u64>,
    len: usize,
}

// SAFETY: `Buckets` owns its allocation alone (no other pointer to it exists), like a `Vec<u64>`.
unsafe impl Send for Buckets {}
// SAFETY: shared access only reads, through `&[u64]`.
unsafe impl Sync for Buckets {}

impl Buckets {
    const HUGE: usize = 2 << 20;

    /// The allocation of `len` buckets (`None`: none, for no buckets).
    fn layout(len: usize) -> Option<std::alloc::Layout> {
        let bytes = len.checked_mul(8).filter(|&b| b != 0)?;
        let align = if bytes >= Buckets::HUGE { Buckets::HUGE } else { 64 };
        std::alloc::Layout::from_size_align(bytes, align).ok()
    }

    fn zeroed(len: usize) -> Buckets {
        if len == 0 {
            return Buckets { at: std::ptr::NonNull::dangling(), len: 0 };
        }
        // (As `vec![0; len]` does, an index larger than the address space is a panic.)
        let layout = Buckets::layout(len).expect("an index that fits the address space");
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        let Some(at) = std::ptr::NonNull::new(p as *mut u64) else { std::alloc::handle_alloc_error(layout) };
        #[cfg(target_os = "linux")]
        if layout.align() == Buckets::HUGE {
            // SAFETY: the range is the allocation just made, which this process owns, and starts on
            // a page; MADV_HUGEPAGE changes how the kernel backs the pages, never their contents.
            unsafe {
                libc::madvise(p as *mut libc::c_void, layout.size(), libc::MADV_HUGEPAGE);
            }
        }
        // SAFETY: `p` is valid for `len` u64 writes (the allocation's size), aligned for u64; zeroing
        // after the advice lets the first touch fault in huge pages.
        unsafe { std::ptr::write_bytes(at.as_ptr(), 0, len) };
        Buckets { at, len }
    }
}

impl std::ops::Deref for Buckets {
    type Target = [u64];
    #[inline(always)]
    fn deref(&self) -> &[u64] {
        // SAFETY: `at` holds `len` initialised u64s (dangling and 0 for none) owned by `self`.
        unsafe { std::slice::from_raw_parts(self.at.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Buckets {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [u64] {
        // SAFETY: as for `deref`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.at.as_ptr(), self.len) }
    }
}

impl Drop for Buckets {
    fn drop(&mut self) {
        if let Some(layout) = Buckets::layout(self.len) {
            // SAFETY: `at` was allocated with exactly this layout (the same `len`) and not freed.
            unsafe { std::alloc::dealloc(self.at.as_ptr() as *mut u8, layout) };
        }
    }
}

impl Clone for Buckets {
    fn clone(&self) -> Buckets {
        let mut b = Buckets::zeroed(self.len);
        b.copy_from_slice(self);
        b
    }
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buckets({} at {:p})", self.len, self.at)
    }
}

/// Where a table's index was when [`FlowTable::index_view`] was asked: enough to ask for the line of a
/// hash's home bucket ([`FlowTable::prefetch`] does the same through the table). Only a hint: once the
/// index has grown the lines asked for are no longer the index's, which costs a useless load and
/// nothing else.
#[derive(Debug, Clone, Copy)]
pub struct IndexView {
    at: *const u64,
    len: usize,
}

impl IndexView {
    /// Asks for the index line of `hash`'s home bucket (nothing for an empty index).
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        if self.len != 0 {
            prefetch_ptr(self.at.wrapping_add(home(hash, self.len)) as *const u8);
        }
    }
}

/// Hints the CPU to load the cache line holding address `p` (which need not be valid).
#[inline]
fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, even for an invalid address, and reads
    // nothing into the program.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hints the CPU to load the cache line holding `r`.
#[inline]
fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults and reads nothing into the program. The
    // pointer comes from a valid reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch(r as *const T as *const i8, std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::flow::Endpoint;

    #[test]
    fn an_index_of_2_mib_or_more_is_aligned_for_huge_pages() {
        for (len, align) in [(16, 64), (1 << 17, 64), (1 << 18, 2 << 20), (3 << 18, 2 << 20)] {
            let mut b = Buckets::zeroed(len);
            assert_eq!((b.len(), b.as_ptr() as usize % align), (len, 0), "{len} buckets");
            assert!(b.iter().all(|&x| x == 0));
            b[len - 1] = 7;
            let c = b.clone();
            assert_eq!((&c[..], c.as_ptr() as usize % align), (&b[..], 0));
        }
        assert!(Buckets::zeroed(0).is_empty());
    }

    #[test]
    fn a_connection_slot_is_exactly_one_cache_line() {
        // 64 bytes, 64-byte aligned: every slot of the slab is one whole line.
        type S = Option<Slot<crate::conntrack::Conn>>;
        assert_eq!((std::mem::size_of::<S>(), std::mem::align_of::<S>()), (64, 64));
        let slab: Vec<S> = (0..8).map(|_| None).collect();
        for s in &slab {
            assert_eq!(s as *const S as usize % 64, 0, "slot at {:p} is not on a line's start", s);
        }
    }

    /// Distinct IPv4 keys for distinct `n`.
    fn v4_key(n: u32) -> FlowKey {
        let ep = |a: u32, port: u16| Endpoint::new(std::net::Ipv4Addr::from(a).into(), port);
        FlowKey::new(6, ep(0x0a00_0000 | n >> 16, n as u16), ep(0x0a01_0001, 80)).0
    }

    /// Fills a table of `limit` with `n` entries (expiring at their number), removes every third and
    /// checks what is left, then refills to `n`: what the slab's growth (doubling, then the jump to the
    /// whole limit, or doubling on where the room cannot be had) must never change.
    fn fill_past_the_reserve(limit: usize, n: u32) -> FlowTable<u32> {
        let mut t = FlowTable::new(limit);
        for i in 0..n {
            t.insert(v4_key(i), i, i + 10).expect("room");
        }
        for i in (0..n).step_by(3) {
            assert_eq!(t.remove(&v4_key(i)).map(|e| e.value), Some(i));
        }
        for i in 0..n {
            let want = (i % 3 != 0).then_some((i, i + 10));
            assert_eq!(t.get_mut(&v4_key(i)).map(|(v, exp)| (*v, exp.get())), want, "key {i}");
        }
        for i in (0..n).step_by(3) {
            t.insert(v4_key(i), i, i + 10).expect("room");
        }
        assert_eq!(t.len(), n as usize);
        // Every entry expires when due, once.
        assert_eq!(t.reclaim(n / 2 + 9).len(), n as usize / 2);
        assert_eq!(t.len(), n as usize - n as usize / 2);
        t
    }

    #[test]
    fn a_growing_slab_reserves_its_whole_limit_once_past_the_reserve_size() {
        let n = RESERVE_FROM as u32 * 2 + 5;
        let t = fill_past_the_reserve(1 << 20, n);
        // Past the reserve size the slab took room for the whole limit at once.
        assert_eq!(t.slots.capacity(), 1 << 20);
        // Below it, the slab doubles as before.
        let small = fill_past_the_reserve(1 << 20, RESERVE_FROM as u32 / 2 + 1);
        assert_eq!(small.slots.capacity(), RESERVE_FROM);
    }

    #[test]
    fn a_limit_beyond_the_address_space_keeps_the_slab_doubling() {
        // No allocator can give room for this many slots: the slab grows by doubling instead.
        let t = fill_past_the_reserve(usize::MAX / 2, RESERVE_FROM as u32 * 2 + 5);
        assert_eq!(t.slots.capacity(), RESERVE_FROM * 4);
        assert_eq!(t.limit(), usize::MAX / 2);
    }

    /// The IPv4 address of an endpoint of a key, as a number.
    fn full_addr(e: &Endpoint) -> u32 {
        u32::from_be_bytes([e.addr[12], e.addr[13], e.addr[14], e.addr[15]])
    }

    /// Endpoints drawn from a few addresses and ports, so equal addresses, equal ports and equal
    /// endpoints all come up often.
    fn v4_endpoint() -> impl Strategy<Value = (u32, u16)> {
        let addr = prop_oneof![Just(0u32), Just(u32::MAX), Just(0x0a00_0001), 0..4u32, any::<u32>()];
        let port = prop_oneof![Just(0u16), Just(u16::MAX), 0..4u16, any::<u16>()];
        (addr, port)
    }

    proptest! {
        /// The branch-free packing gives exactly the key and side that ordering the full endpoints
        /// does ([`FlowKey::new`], then [`PackedKey::of`]).
        #[test]
        fn packing_an_ipv4_flow_orders_its_endpoints_as_flow_keys_do(
            a in v4_endpoint(), b in v4_endpoint(), proto in any::<u8>()
        ) {
            let ep = |(addr, port): (u32, u16)| Endpoint::new(std::net::Ipv4Addr::from(addr).into(), port);
            let (full, a_lo) = FlowKey::new(proto, ep(a), ep(b));
            let (packed, packed_a_lo) = PackedKey::v4(proto, a, b);
            prop_assert_eq!(Some(packed), PackedKey::of(&full));
            prop_assert_eq!(packed_a_lo, a_lo);
            prop_assert_eq!(packed.unpack(), full);
            prop_assert_eq!(packed.hash(), full.hash64());
            prop_assert_eq!((packed.addresses(), packed.ports()), ((full_addr(&full.lo), full_addr(&full.hi)), (full.lo.port, full.hi.port)));
        }
    }

    /// Distinct keys for distinct `n`: IPv4 flows, and every third one IPv6 (held in the side arena),
    /// so both slot kinds come and go together.
    fn key(n: u16) -> FlowKey {
        let (a, b) = if n.is_multiple_of(3) {
            let a = std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n % 7]);
            (Endpoint::new(a, n), Endpoint::new("2001:db8::1:1".parse().unwrap(), 80))
        } else {
            let a = std::net::IpAddr::from([10, 0, 0, (n % 7) as u8]);
            (Endpoint::new(a, n), Endpoint::new(std::net::IpAddr::from([10, 0, 1, 1]), 80))
        };
        FlowKey::new(6, a, b).0
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Get(u16),
        Reclaim(u32),
        /// Moves the entry's expiry (and the value, which the reference keeps as the expiry).
        Retime(u16, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..300u16, 1..100u32).prop_map(|(k, v)| Op::Insert(k, v)),
            (0..300u16).prop_map(Op::Remove),
            (0..300u16).prop_map(Op::Get),
            (0..100u32).prop_map(Op::Reclaim),
            (0..300u16, 1..100u32).prop_map(|(k, at)| Op::Retime(k, at)),
        ]
    }

    proptest! {
        /// A packed IPv4 key is the full key's: the same `lo` side, the same hash, and it unpacks to the
        /// full key; keys with an IPv6 address do not pack.
        #[test]
        fn packed_keys_agree_with_full_keys(a: (u32, u16), b: (u32, u16), proto: u8, v6: u128) {
            let ep = |(addr, port): (u32, u16)| Endpoint::new(std::net::Ipv4Addr::from(addr).into(), port);
            let (full, a_lo) = FlowKey::new(proto, ep(a), ep(b));
            let (packed, packed_a_lo) = PackedKey::v4(proto, a, b);
            prop_assert_eq!(packed_a_lo, a_lo);
            prop_assert_eq!(PackedKey::of(&full), Some(packed));
            prop_assert_eq!(packed.hash(), FlowTable::<()>::hash(&full));
            prop_assert_eq!(packed.unpack(), full);
            let wide = Endpoint::new(std::net::Ipv6Addr::from(v6).into(), a.1);
            let (mixed, _) = FlowKey::new(proto, wide, ep(b));
            prop_assert_eq!(PackedKey::of(&mixed).is_some(), std::net::Ipv6Addr::from(v6).to_ipv4_mapped().is_some());
        }

        /// The table behaves as a HashMap with a size limit and expiry: reclaiming at a second removes
        /// exactly the entries expired by then, also after their expiry moved later or earlier.
        #[test]
        fn agrees_with_a_hashmap(ops in prop::collection::vec(op(), 1..500), limit in 1..200usize) {
            let mut t: FlowTable<u32> = FlowTable::new(limit);
            let mut reference: HashMap<FlowKey, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let k = key(k);
                        if reference.contains_key(&k) {
                            continue;
                        }
                        let r = t.insert(k, v, v);
                        if reference.len() >= limit {
                            prop_assert_eq!(r.err(), Some(TableFull));
                        } else {
                            prop_assert!(r.is_ok());
                            reference.insert(k, v);
                        }
                    }
                    Op::Remove(k) => {
                        let k = key(k);
                        prop_assert_eq!(t.remove(&k).map(|e| e.value), reference.remove(&k));
                    }
                    Op::Get(k) => {
                        let k = key(k);
                        prop_assert_eq!(t.get_mut(&k).map(|(v, exp)| (*v, exp.get())), reference.get(&k).map(|v| (*v, *v)));
                    }
                    Op::Reclaim(now) => {
                        // Exactly the entries expired by `now`, in key order.
                        let gone: Vec<(FlowKey, u32)> = t.reclaim(now).into_iter().map(|e| (e.key, e.value)).collect();
                        let mut want: Vec<(FlowKey, u32)> = reference.iter().filter(|(_, v)| **v <= now).map(|(k, v)| (*k, *v)).collect();
                        want.sort();
                        prop_assert_eq!(&gone, &want);
                        reference.retain(|_, v| *v > now);
                    }
                    Op::Retime(k, at) => {
                        let k = key(k);
                        if let Some((v, mut exp)) = t.get_mut(&k) {
                            *v = at;
                            exp.set(at);
                            reference.insert(k, at);
                        }
                    }
                }
                prop_assert_eq!(t.len(), reference.len());
            }
            // A late reclaim removes exactly the expired entries.
            let _ = t.reclaim(50);
            reference.retain(|_, v| *v > 50);
            prop_assert_eq!(t.len(), reference.len());
            for (k, v) in &reference {
                prop_assert_eq!(t.get_mut(k).map(|(value, _)| *value), Some(*v));
            }
            // Listing gives every key back whole (IPv4 ones unpacked, IPv6 ones from the arena).
            let mut left: Vec<(FlowKey, u32)> = t.iter().map(|(e, _)| (e.key, *e.value)).collect();
            let mut want: Vec<(FlowKey, u32)> = reference.iter().map(|(k, v)| (*k, *v)).collect();
            left.sort_unstable_by_key(|(k, v)| (k.lo, k.hi, *v));
            want.sort_unstable_by_key(|(k, v)| (k.lo, k.hi, *v));
            prop_assert_eq!(left, want);
        }
    }
}
