//! A bounded flow table: a slab of entries and a SwissTable index of slab positions.
//!
//! Entries live in one `Vec` (the slab) and the hash index stores only their 4-byte positions, so a
//! million connections cost the entry size plus about 10 bytes of index each, and a lookup touches the
//! index and one slab entry. Freed positions are reused. The table never holds more than its limit: an
//! insert into a full table fails with [`TableFull`] and the caller drops the packet (`state-limit`).
//!
//! Expired entries are reclaimed two ways, neither of which stops the world: the caller checks expiry on
//! every lookup, and [`FlowTable::sweep`] examines a few slab positions per call, advancing a cursor, so
//! a table that is not looked up still empties over time.

use hashbrown::HashTable;

use crate::flow::FlowKey;

/// A value that knows when it expires (packet-clock seconds).
pub trait Expiry {
    /// True when the entry is dead at `now_s`.
    fn expired(&self, now_s: u32) -> bool;
}

/// The table holds its maximum number of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// One stored entry.
#[derive(Debug, Clone)]
pub struct Entry<V> {
    /// The flow.
    pub key: FlowKey,
    /// Its state.
    pub value: V,
}

/// A bounded flow table (see the module doc).
#[derive(Debug, Clone)]
pub struct FlowTable<V> {
    index: HashTable<u32>,
    slots: Vec<Option<Entry<V>>>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
    cursor: usize,
    hasher: ahash::RandomState,
}

impl<V: Expiry> FlowTable<V> {
    /// An empty table that will hold at most `limit` entries.
    pub fn new(limit: usize) -> FlowTable<V> {
        FlowTable {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit,
            cursor: 0,
            hasher: ahash::RandomState::with_seeds(0x5eed, 0xdf3, 0x1a2b, 0x77),
        }
    }

    fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
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

    /// The entry for `key`, if present (expired or not: the caller decides).
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Entry<V>> {
        let hash = self.hash(key);
        let slots = &self.slots;
        let pos = *self.index.find(hash, |&i| slots[i as usize].as_ref().is_some_and(|e| e.key == *key))?;
        self.slots[pos as usize].as_mut()
    }

    /// Inserts `key`, which must not be present. Fails when the table is full.
    pub fn insert(&mut self, key: FlowKey, value: V) -> Result<&mut Entry<V>, TableFull> {
        if self.len >= self.limit {
            return Err(TableFull);
        }
        let pos = match self.free.pop() {
            Some(p) => p as usize,
            None => {
                if self.slots.len() == self.slots.capacity() {
                    // Grow by doubling, but never past the limit: a full table costs what its limit says.
                    let want = (self.slots.capacity() * 2).max(64).min(self.limit.max(1));
                    self.slots.reserve_exact(want.saturating_sub(self.slots.len()));
                }
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let hash = self.hash(&key);
        let (hasher, slots) = (&self.hasher, &self.slots);
        self.index.insert_unique(hash, pos as u32, |&i| {
            slots[i as usize].as_ref().map_or(0, |e| hasher.hash_one(e.key))
        });
        self.len += 1;
        Ok(self.slots[pos].insert(Entry { key, value }))
    }

    /// Removes and returns the entry for `key`.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Entry<V>> {
        let hash = self.hash(key);
        let slots = &self.slots;
        let found = self
            .index
            .find_entry(hash, |&i| slots[i as usize].as_ref().is_some_and(|e| e.key == *key))
            .ok()?;
        let (pos, _) = found.remove();
        self.take(pos as usize)
    }

    fn take(&mut self, pos: usize) -> Option<Entry<V>> {
        let e = self.slots[pos].take()?;
        self.free.push(pos as u32);
        self.len -= 1;
        Some(e)
    }

    /// Examines up to `budget` slab positions from the sweep cursor and removes the expired entries,
    /// handing each to `expired`. Returns how many were removed.
    pub fn sweep(&mut self, now_s: u32, budget: usize, mut expired: impl FnMut(Entry<V>)) -> usize {
        let mut removed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            if self.cursor >= self.slots.len() {
                self.cursor = 0;
            }
            let pos = self.cursor;
            self.cursor += 1;
            let dead = self.slots[pos].as_ref().is_some_and(|e| e.value.expired(now_s));
            if dead {
                let key = self.slots[pos].as_ref().map(|e| e.key);
                if let Some(key) = key {
                    if let Some(e) = self.remove(&key) {
                        expired(e);
                        removed += 1;
                    }
                }
            }
        }
        removed
    }

    /// Removes every entry, handing each to `f`.
    pub fn drain(&mut self, mut f: impl FnMut(Entry<V>)) {
        for pos in 0..self.slots.len() {
            if let Some(e) = self.take(pos) {
                f(e);
            }
        }
        self.index.clear();
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<V>> {
        self.slots.iter().flatten()
    }

    /// Bytes held by the slab and the index (not counting allocator overhead).
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Entry<V>>>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.free.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::flow::Endpoint;

    #[derive(Debug, Clone, PartialEq)]
    struct V(u32);
    impl Expiry for V {
        fn expired(&self, now_s: u32) -> bool {
            self.0 <= now_s
        }
    }

    fn key(n: u16) -> FlowKey {
        let a = Endpoint::new(std::net::IpAddr::from([10, 0, 0, (n % 7) as u8]), n);
        let b = Endpoint::new(std::net::IpAddr::from([10, 0, 1, 1]), 80);
        FlowKey::new(6, a, b).0
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
        Get(u16),
        Sweep(u32, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..200u16, 0..100u32).prop_map(|(k, v)| Op::Insert(k, v)),
            (0..200u16).prop_map(Op::Remove),
            (0..200u16).prop_map(Op::Get),
            (0..100u32, 0..40u8).prop_map(|(t, b)| Op::Sweep(t, b)),
        ]
    }

    proptest! {
        /// The table behaves as a HashMap with a size limit.
        #[test]
        fn agrees_with_a_hashmap(ops in prop::collection::vec(op(), 1..400), limit in 1..120usize) {
            let mut t = FlowTable::new(limit);
            let mut reference: HashMap<FlowKey, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let k = key(k);
                        if reference.contains_key(&k) {
                            continue;
                        }
                        let r = t.insert(k, V(v));
                        if reference.len() >= limit {
                            prop_assert_eq!(r.err(), Some(TableFull));
                        } else {
                            prop_assert!(r.is_ok());
                            reference.insert(k, v);
                        }
                    }
                    Op::Remove(k) => {
                        let k = key(k);
                        prop_assert_eq!(t.remove(&k).map(|e| e.value.0), reference.remove(&k));
                    }
                    Op::Get(k) => {
                        let k = key(k);
                        prop_assert_eq!(t.get_mut(&k).map(|e| e.value.0), reference.get(&k).copied());
                    }
                    Op::Sweep(now, budget) => {
                        let mut gone = Vec::new();
                        t.sweep(now, budget as usize, |e| gone.push((e.key, e.value.0)));
                        for (k, v) in gone {
                            prop_assert!(v <= now);
                            prop_assert_eq!(reference.remove(&k), Some(v));
                        }
                    }
                }
                prop_assert_eq!(t.len(), reference.len());
            }
            // A sweep over the whole slab removes exactly the expired entries.
            let n = t.slots.len();
            t.sweep(50, n, |_| {});
            reference.retain(|_, v| *v > 50);
            prop_assert_eq!(t.len(), reference.len());
            let mut left: Vec<u32> = t.iter().map(|e| e.value.0).collect();
            let mut want: Vec<u32> = reference.values().copied().collect();
            left.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(left, want);
        }
    }
}
