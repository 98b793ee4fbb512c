//! Binary decision trees over five numeric header fields (HyperSplit-style), stored in one arena.
//!
//! Every rule placed in a tree is a box `lo[d] <= key[d] <= hi[d]` over [`DIMS`] dimensions (source
//! and destination address, source and destination port, protocol). A box is either *exact* (the box
//! test alone decides the rule) or carries a [`Entry::check`] index: then the box is a conservative
//! hull and the caller's check decides. Inner nodes compare one dimension with up to 15
//! thresholds; leaves hold at most a few entries in priority order, scanned until the first match.
//!
//! Build (per node): for each dimension take the rules' cut points inside the node's region, split
//! at their 16-quantiles, and keep the dimension whose largest child is smallest (then the least
//! replication). A rule that covers the whole region exactly hides every later rule there, so the
//! rule list is cut after it: this is what keeps wildcard-heavy firewall sets from exploding.
//!
//! A large tree's build spreads the subtrees of its root over the machine's threads, each in an
//! arena of its own, appended in order afterwards: the arena is the same as a sequential build's
//! (unless the entry budget runs out, when which subtrees stop splitting depends on timing; every
//! answer is still exact).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Number of dimensions: source address, destination address, source port, destination port, protocol.
pub(super) const DIMS: usize = 5;
/// A box corner: one value per dimension.
pub(super) type Point = [u32; DIMS];
/// A lookup key: the [`DIMS`] values with [`BIAS`] applied, padded to eight so that a node's
/// dimension indexes it with a mask. Made by [`key`].
pub(super) type Key = [u32; 8];
/// Keys, node thresholds and the lower corners of leaf entries are stored with the top bit flipped:
/// then signed vector compares order them as unsigned numbers, with no flip per compare. Box tests
/// are unaffected: `(k ^ BIAS) - (lo ^ BIAS) == k - lo` (wrapping).
const BIAS: u32 = 1 << 31;

/// The lookup key of a point.
#[inline(always)]
pub(super) fn key(p: Point) -> Key {
    [p[0] ^ BIAS, p[1] ^ BIAS, p[2] ^ BIAS, p[3] ^ BIAS, p[4] ^ BIAS, BIAS, BIAS, BIAS]
}

/// Most keys [`Arena::lookup_batch`] walks in lockstep: a whole batch group of one view.
pub(super) const BATCH: usize = 64;
/// "No rule", "no check", "no tree": ranks and indices never reach it.
pub(super) const NONE: u32 = u32::MAX;
/// Marks a child reference as a leaf. A leaf reference is `LEAF | len << 27 | start` (its entries
/// are `entries[start..start + len]`, read without touching the leaf table) when `len < 15` and
/// `start < 2^27`; otherwise `LEAF | 15 << 27 | leaf index` into the leaf table.
const LEAF: u32 = 1 << 31;
/// Shift of a leaf reference's inline length.
const LEN_SHIFT: u32 = 27;
/// Inline length meaning "look the leaf up in the table".
const LEN_TABLE: u32 = 15;
/// Mask of a leaf reference's start (or leaf index).
const START_MASK: u32 = (1 << LEN_SHIFT) - 1;
/// Depth past which a node becomes a leaf whatever its size.
const MAX_DEPTH: u32 = 48;

/// The upper end of each dimension's domain. Ports run to 65536: a key without ports carries 65536,
/// which no `port` clause contains and `any` does.
pub(super) const DOMAIN_HI: Point = [u32::MAX, u32::MAX, 65536, 65536, 255];

/// One rule as placed in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    /// Lower corner of the box.
    pub lo: Point,
    /// `hi - lo` per dimension: `key - lo <= span` (wrapping) is the box test, one compare per field.
    pub span: Point,
    /// Evaluation rank (0 = first rule by position).
    pub rank: u32,
    /// Index of the full check to run after the box test, or [`NONE`] when the box is exact.
    pub check: u32,
}

impl Entry {
    /// A box entry from corners.
    pub fn new(lo: Point, hi: Point, rank: u32, check: u32) -> Entry {
        let mut span = [0; DIMS];
        for d in 0..DIMS {
            span[d] = hi[d].wrapping_sub(lo[d]);
        }
        Entry { lo, span, rank, check }
    }

    fn hi(&self, d: usize) -> u32 {
        self.lo[d].wrapping_add(self.span[d])
    }

    #[inline(always)]
    fn contains(&self, k: &Key) -> bool {
        // Non-short-circuit `&`: five independent compares, no branches until the end.
        (k[0].wrapping_sub(self.lo[0]) <= self.span[0])
            & (k[1].wrapping_sub(self.lo[1]) <= self.span[1])
            & (k[2].wrapping_sub(self.lo[2]) <= self.span[2])
            & (k[3].wrapping_sub(self.lo[3]) <= self.span[3])
            & (k[4].wrapping_sub(self.lo[4]) <= self.span[4])
    }

    fn covers(&self, reg: &Region) -> bool {
        (0..DIMS).all(|d| self.lo[d] <= reg.lo[d] && self.hi(d) >= reg.hi[d])
    }
}

/// Thresholds per node: a node has up to `FANOUT` children.
const THRESHOLDS: usize = 15;
const FANOUT: usize = THRESHOLDS + 1;

/// An inner node: the key's value in the node's dimension goes to child `#{t in thr : value > t}`
/// (`thr` sorted and stored with [`BIAS`], unused slots and the last `u32::MAX`, so all lanes
/// compare at once). Two cache lines, thresholds then children: a 16-way step costs little more
/// than a binary one. The dimension is carried by the reference to the node (see
/// [`NODE_OFFSET`]), so the node itself has room for full vectors.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Node {
    thr: [u32; FANOUT],
    /// Node or leaf references.
    kids: [u32; FANOUT],
}

/// A reference to an inner node is its byte offset in the node array (a multiple of 128) plus its
/// dimension in the low bits; bit 31 ([`LEAF`]) is clear. A step thus needs no multiply or shift.
const NODE_OFFSET: u32 = !LEAF & !(size_of::<Node>() as u32 - 1);
/// Mask of an inner node reference's dimension.
const DIM_MASK: u32 = 7;

/// A tree: its root reference in the arena and the best rank it holds (for pruning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tree {
    root: u32,
    /// The smallest rank in the tree; [`NONE`] for an empty tree.
    pub min_rank: u32,
}

impl Tree {
    /// A tree with no rules.
    pub const EMPTY: Tree = Tree { root: NONE, min_rank: NONE };

    /// The same tree, pruned as if its best rank were `min_rank` (which must be no larger than the
    /// best rank of any entry a key of the caller's can match).
    #[inline(always)]
    pub fn pruned_at(self, min_rank: u32) -> Tree {
        Tree { root: self.root, min_rank }
    }
}

#[derive(Debug, Clone, Copy)]
struct Region {
    lo: Point,
    hi: Point,
}

/// Build parameters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    /// A node with at most this many rules becomes a leaf.
    pub binth: usize,
    /// Once the arena holds this many entries, every further node becomes a leaf (bounds memory).
    pub max_entries: usize,
}

/// Rules from which a tree's build spreads the subtrees of its root over threads (below it, thread
/// start-up costs more than it saves).
const PARALLEL_RULES: usize = 16_384;

/// How many entries a build has placed, against [`Params::max_entries`]: shared by the threads of a
/// parallel build, so it stops splitting at the same total as a sequential one.
struct Budget {
    placed: AtomicUsize,
    max: usize,
}

impl Budget {
    fn spent(&self) -> bool {
        self.placed.load(Ordering::Relaxed) >= self.max
    }
}

/// `#{t in thr : v > t}` for a node's sorted thresholds and a key value (both with [`BIAS`]): four
/// vector compares and a population count, or with `Z` (AVX-512) one compare of all sixteen.
///
/// `Z` is true only in code compiled into functions that enable AVX-512 F, which run only on CPUs
/// that have it (see `Isa` in the parent module).
#[inline(always)]
fn child_index<const Z: bool>(thr: &[u32; FANOUT], v: u32) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        if Z {
            // SAFETY: per the contract above, the CPU has AVX-512 F.
            return unsafe { child_index_avx512(thr, v) };
        }
        const _: () = assert!(FANOUT == 16);
        // SAFETY: SSE2 is part of x86_64; the four unaligned loads read the sixteen `u32` of `thr`.
        let m = unsafe {
            let x = _mm_set1_epi32(v as i32);
            let p = thr.as_ptr().cast::<__m128i>();
            let c = |i: usize| _mm_cmpgt_epi32(x, _mm_loadu_si128(p.add(i)));
            let lo = _mm_packs_epi32(c(0), c(1));
            let hi = _mm_packs_epi32(c(2), c(3));
            // One mask bit per lane.
            _mm_movemask_epi8(_mm_packs_epi16(lo, hi))
        };
        (m as u32).count_ones() as usize
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        thr.iter().filter(|&&t| v as i32 > t as i32).count()
    }
}

/// [`child_index`] as one 512-bit compare: the sixteen thresholds are exactly one vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,popcnt")]
#[inline]
unsafe fn child_index_avx512(thr: &[u32; FANOUT], v: u32) -> usize {
    use std::arch::x86_64::*;
    // SAFETY: the load reads the sixteen `u32` of `thr` (64 bytes); the caller vouches for AVX-512 F.
    let t = unsafe { _mm512_loadu_si512(thr.as_ptr().cast()) };
    let m = _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(v as i32), t);
    m.count_ones() as usize
}

/// The child of a node with thresholds `thr` (sorted, distinct) that value `v` goes to.
fn child_of(thr: &[u32], v: u32) -> usize {
    thr.partition_point(|&t| t < v)
}

/// Reorders `v` so that each index in `at` (ascending, each at least `base`; index `i` of `at` names
/// `v[i - base]`) holds the value a full sort would put there. A split needs only its fifteen
/// quantiles, not the whole order: selecting them costs about four passes over `v`, sorting it
/// `log2 v.len()`.
fn select_at(v: &mut [u32], at: &[usize], base: usize) {
    if at.is_empty() {
        return;
    }
    if v.len() <= 64 {
        v.sort_unstable();
        return;
    }
    let mid = at.len() / 2;
    let k = at[mid] - base;
    let (lo, _, hi) = v.select_nth_unstable(k);
    // `at` is sorted: the indices before `mid` are at most `k`, those after at least `k`, and `k`
    // itself is in place.
    let left = &at[..mid];
    select_at(lo, &left[..left.partition_point(|&i| i - base < k)], base);
    let right = &at[mid + 1..];
    select_at(hi, &right[right.partition_point(|&i| i - base <= k)..], base + k + 1);
}

/// The dimension and thresholds to split the rules `idx` at in region `reg` (`None` when no
/// dimension separates any of them): for each dimension, the 16-quantiles of the rules' cut points
/// inside the region; the dimension whose largest child is smallest wins, then the least
/// replication, then the lowest dimension. `cuts` is scratch space.
fn split(rules: &[Entry], idx: &[u32], reg: &Region, cuts: &mut Vec<u32>) -> Option<(usize, Vec<u32>)> {
    let n = idx.len();
    // (score: larger child, then total), dim, thresholds
    let mut best: Option<((usize, usize), usize, Vec<u32>)> = None;
    for d in 0..DIMS {
        cuts.clear();
        for &i in idx {
            let r = &rules[i as usize];
            if r.lo[d] > reg.lo[d] {
                cuts.push(r.lo[d] - 1);
            }
            if r.hi(d) < reg.hi[d] {
                cuts.push(r.hi(d));
            }
        }
        if cuts.is_empty() {
            continue;
        }
        // Thresholds at the 16-quantiles of the cut points (dense regions get more of them).
        let len = cuts.len();
        let at: [usize; THRESHOLDS] = std::array::from_fn(|q| (q + 1) * len / FANOUT);
        select_at(cuts, &at, 0);
        let mut thr: Vec<u32> = at.iter().map(|&i| cuts[i]).collect();
        thr.dedup();
        // Rules per child: each rule spans children `a..=b`, counted as +1 at `a` and -1 past `b`.
        let mut edges = [0isize; FANOUT + 1];
        for &i in idx {
            let e = &rules[i as usize];
            edges[child_of(&thr, e.lo[d])] += 1;
            edges[child_of(&thr, e.hi(d)) + 1] -= 1;
        }
        let mut sizes = [0usize; FANOUT];
        let mut open = 0isize;
        for (s, &e) in sizes.iter_mut().zip(&edges) {
            open += e;
            *s = open as usize;
        }
        let sizes = &sizes[..=thr.len()];
        let max = sizes.iter().copied().max().unwrap_or(0);
        if sizes.iter().all(|&s| s == n) {
            continue;
        }
        let score = (max, sizes.iter().sum::<usize>());
        if best.as_ref().is_none_or(|(s, _, _)| score < *s) {
            best = Some((score, d, thr));
        }
    }
    best.map(|(_, d, thr)| (d, thr))
}

/// Where an arena appended by [`Arena::append`] lands in the one it joins.
struct Bases {
    /// Byte offset of its first node.
    node: u32,
    /// Index of its first entry.
    entry: u32,
    /// Added to its leaf indices (its leaf 0, the empty leaf, is not appended).
    leaf: u32,
}

/// Reference `c` of an appended arena (`first_leaf`: its leaf table past the empty leaf) as a
/// reference into the arena it joins: node offsets, entry starts and leaf indices move by `base`;
/// a leaf whose start no longer fits inline goes through the leaf table, as [`Arena::leaf`] would
/// have made it.
fn relocate(c: u32, base: &Bases, first_leaf: &[[u32; 2]]) -> u32 {
    if c & LEAF == 0 {
        return c + base.node;
    }
    let len = (c >> LEN_SHIFT) & LEN_TABLE;
    if len == 0 {
        // The shared empty leaf.
        return c;
    }
    if len == LEN_TABLE {
        return LEAF | LEN_TABLE << LEN_SHIFT | ((c & START_MASK) + base.leaf);
    }
    let start = (c & START_MASK) + base.entry;
    if start <= START_MASK {
        LEAF | len << LEN_SHIFT | start
    } else {
        // Leaves are numbered in the order of their entries, and none is empty.
        let at = first_leaf.partition_point(|&[s, _]| s < c & START_MASK) as u32 + 1;
        LEAF | LEN_TABLE << LEN_SHIFT | (at + base.leaf)
    }
}

/// A mutex's value, also after a thread panicked holding it (the value is then discarded whole by
/// the caller's own panic).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Nodes, leaves and entries of every tree of a classifier.
#[derive(Debug, Clone, Default)]
pub(super) struct Arena {
    nodes: Vec<Node>,
    /// Per node (same index as `nodes`), per child: the best rank in the child's subtree, saturated
    /// to `u16::MAX` (so a lower bound). Only a pruning [`Arena::lookup`] reads it, and it is kept only
    /// when some tree is walked that way (see [`Arena::forget_child_min`]).
    child_min: Vec<[u16; FANOUT]>,
    /// `[start, end)` into `entries`.
    leaves: Vec<[u32; 2]>,
    entries: Vec<Entry>,
    /// Batch walks prefetch what they visit next (set once every tree is built, by size).
    prefetch: bool,
}

/// Arena size past which batch walks prefetch and skip keys already at their leaf. Below it the
/// branch-free lockstep walk was faster on the machine measured (2 MiB L2): acl_10k (7.8 MiB) 19 → 26
/// M/s, fw_1k (5.7 MiB) 23 → 34 M/s; on the 100,000-rule set (66 MiB) both were about equal.
const PREFETCH_BYTES: usize = 32 << 20;

impl Arena {
    /// Builds a tree over `rules` (sorted by rank) and returns it.
    pub fn build(&mut self, rules: &[Entry], p: Params) -> Tree {
        let Some(min_rank) = rules.iter().map(|r| r.rank).min() else {
            return Tree::EMPTY;
        };
        debug_assert!(rules.windows(2).all(|w| w[0].rank < w[1].rank));
        let threads = if rules.len() >= PARALLEL_RULES {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        self.build_on(rules, p, threads, min_rank)
    }

    /// [`Arena::build`] with the subtrees of the root spread over `threads` threads. Each subtree is
    /// built in an arena of its own and appended in child order, so the arena ends up exactly as a
    /// sequential build leaves it.
    fn build_on(&mut self, rules: &[Entry], p: Params, threads: usize, min_rank: u32) -> Tree {
        // Leaf 0 is the shared empty leaf.
        if self.leaves.is_empty() {
            self.leaves.push([0, 0]);
        }
        let reg = Region { lo: [0; DIMS], hi: DOMAIN_HI };
        let all: Vec<u32> = (0..rules.len() as u32).collect();
        let mut scratch = Vec::new();
        let budget = Budget { placed: AtomicUsize::new(self.entries.len()), max: p.max_entries };
        let root = self.node(rules, all, reg, 0, p, &mut scratch, &budget, threads);
        Tree { root, min_rank }
    }

    /// An arena for one subtree of a parallel build: only the shared empty leaf.
    fn part() -> Arena {
        Arena { leaves: vec![[0, 0]], ..Arena::default() }
    }

    /// Appends `other` (built by [`Arena::part`] and `node`) and returns `root`, a reference into
    /// it, as a reference into `self`. Node offsets, entry starts and leaf indices move by what
    /// `self` held; a leaf whose start no longer fits inline goes through the leaf table, as
    /// [`Arena::leaf`] would have made it.
    fn append(&mut self, other: Arena, root: u32) -> u32 {
        // `other`'s leaf 0 is its empty leaf, not appended.
        let first_leaf = &other.leaves[1..];
        let base = Bases {
            node: (self.nodes.len() * size_of::<Node>()) as u32,
            entry: self.entries.len() as u32,
            leaf: self.leaves.len() as u32 - 1,
        };
        assert!(
            self.nodes.len() + other.nodes.len() <= (NODE_OFFSET as usize + 1) / size_of::<Node>(),
            "too many tree nodes"
        );
        assert!(self.leaves.len() + first_leaf.len() <= START_MASK as usize, "too many leaves");
        let moved = |c| relocate(c, &base, first_leaf);
        self.nodes.extend(other.nodes.iter().map(|n| Node { thr: n.thr, kids: n.kids.map(moved) }));
        self.child_min.extend_from_slice(&other.child_min);
        self.leaves.extend(first_leaf.iter().map(|&[s, e]| [s + base.entry, e + base.entry]));
        self.entries.extend_from_slice(&other.entries);
        moved(root)
    }

    fn leaf(&mut self, rules: &[Entry], idx: &[u32], budget: &Budget) -> u32 {
        budget.placed.fetch_add(idx.len(), Ordering::Relaxed);
        let start = self.entries.len() as u32;
        self.entries.extend(idx.iter().map(|&i| {
            let mut e = rules[i as usize];
            e.lo = e.lo.map(|x| x ^ BIAS);
            e
        }));
        self.leaves.push([start, self.entries.len() as u32]);
        let len = idx.len() as u32;
        if len < LEN_TABLE && start <= START_MASK {
            LEAF | len << LEN_SHIFT | start
        } else {
            let at = self.leaves.len() as u32 - 1;
            assert!(at <= START_MASK, "too many leaves");
            LEAF | LEN_TABLE << LEN_SHIFT | at
        }
    }

    /// The entries of leaf reference `c`.
    #[inline(always)]
    fn leaf_entries(&self, c: u32) -> &[Entry] {
        let len = (c >> LEN_SHIFT) & LEN_TABLE;
        let (s, e) = if len == LEN_TABLE {
            let [s, e] = self.leaves[(c & START_MASK) as usize];
            (s as usize, e as usize)
        } else {
            let s = (c & START_MASK) as usize;
            (s, s + len as usize)
        };
        debug_assert!(s <= e && e <= self.entries.len());
        // SAFETY: leaf references are made only by `leaf` (and `empty_leaf`, the empty range at 0),
        // from the range of entries it had just pushed, and the leaf table holds the same ranges;
        // entries are only removed by `rollback`, which invalidates every tree built since (as in
        // `node_at`). So `s <= e <= entries.len()`.
        unsafe { self.entries.get_unchecked(s..e) }
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        rules: &[Entry],
        mut idx: Vec<u32>,
        reg: Region,
        depth: u32,
        p: Params,
        cuts: &mut Vec<u32>,
        budget: &Budget,
        threads: usize,
    ) -> u32 {
        // An exact rule covering the whole region decides every key that reaches here.
        if let Some(at) = idx.iter().position(|&i| {
            let r = &rules[i as usize];
            r.check == NONE && r.covers(&reg)
        }) {
            idx.truncate(at + 1);
        }
        let n = idx.len();
        if n <= p.binth || depth >= MAX_DEPTH || budget.spent() {
            return self.leaf(rules, &idx, budget);
        }
        let Some((d, thr)) = split(rules, &idx, &reg, cuts) else {
            return self.leaf(rules, &idx, budget);
        };
        let mut kids: Vec<Vec<u32>> = vec![Vec::new(); thr.len() + 1];
        for &i in &idx {
            let e = &rules[i as usize];
            for k in &mut kids[child_of(&thr, e.lo[d])..=child_of(&thr, e.hi(d))] {
                k.push(i);
            }
        }
        drop(idx);
        let at = self.nodes.len();
        assert!(at < (NODE_OFFSET as usize + 1) / size_of::<Node>(), "too many tree nodes");
        let mut t = [u32::MAX ^ BIAS; FANOUT];
        for (t, &x) in t.iter_mut().zip(&thr) {
            *t = x ^ BIAS;
        }
        debug_assert!(
            t.windows(2).all(|w| w[0] as i32 <= w[1] as i32),
            "thresholds must be sorted (see child_index)"
        );
        self.nodes.push(Node { thr: t, kids: [NONE; FANOUT] });
        // `idx` is in rank order, so a child's first rule is its best.
        self.child_min.push(std::array::from_fn(|j| {
            kids.get(j)
                .and_then(|k| k.first())
                .map_or(u16::MAX, |&i| rules[i as usize].rank.min(u32::from(u16::MAX)) as u16)
        }));
        let region = |j: usize| {
            let mut r = reg;
            if j > 0 {
                r.lo[d] = thr[j - 1] + 1;
            }
            if j < thr.len() {
                r.hi[d] = thr[j];
            }
            r
        };
        let mut refs = [self.empty_leaf(); FANOUT];
        if threads > 1 {
            // Each child in an arena of its own, the largest first, on `threads` threads; then
            // appended in child order.
            let mut order: Vec<usize> = (0..kids.len()).filter(|&j| !kids[j].is_empty()).collect();
            order.sort_by_key(|&j| std::cmp::Reverse(kids[j].len()));
            let next = AtomicUsize::new(0);
            let kids: Vec<std::sync::Mutex<Vec<u32>>> = kids.into_iter().map(std::sync::Mutex::new).collect();
            let built: Vec<std::sync::Mutex<Option<(Arena, u32)>>> =
                (0..kids.len()).map(|_| std::sync::Mutex::new(None)).collect();
            let work = || {
                let mut cuts = Vec::new();
                while let Some(&j) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let k = std::mem::take(&mut *lock(&kids[j]));
                    let mut part = Arena::part();
                    let root = part.node(rules, k, region(j), depth + 1, p, &mut cuts, budget, 1);
                    *lock(&built[j]) = Some((part, root));
                }
            };
            std::thread::scope(|scope| {
                // This thread works too; should a thread fail to start, the others do its share.
                for _ in 1..threads.min(order.len()) {
                    let _ = std::thread::Builder::new().name("dfw-build".into()).spawn_scoped(scope, work);
                }
                work();
            });
            for (j, b) in built.into_iter().enumerate() {
                let b = b.into_inner().unwrap_or_else(|e| e.into_inner());
                if let Some((part, root)) = b {
                    refs[j] = self.append(part, root);
                }
            }
        } else {
            for (j, k) in kids.into_iter().enumerate() {
                if !k.is_empty() {
                    refs[j] = self.node(rules, k, region(j), depth + 1, p, cuts, budget, 1);
                }
            }
        }
        self.nodes[at].kids = refs;
        (at * size_of::<Node>()) as u32 | d as u32
    }

    fn empty_leaf(&self) -> u32 {
        debug_assert_eq!(self.leaves.first(), Some(&[0, 0]));
        LEAF
    }

    /// The smallest rank below `best` in `tree` whose box contains `k` and whose check (if any)
    /// passes; `best` when there is none. With `PRUNE` the walk also stops before a child whose
    /// subtree holds no rank below `best` (from `child_min`): for the small per-address-set trees,
    /// where a walk that cannot improve on the answer would otherwise load a leaf only to find its
    /// first entry ranked after it.
    #[inline(always)]
    pub fn lookup<const Z: bool, const PRUNE: bool>(
        &self,
        tree: Tree,
        k: &Key,
        best: u32,
        check: &mut impl FnMut(u32) -> bool,
    ) -> u32 {
        if tree.min_rank >= best {
            return best;
        }
        let mut c = tree.root;
        while c & LEAF == 0 {
            let (n, i) = self.child_slot::<Z>(c, k);
            if PRUNE {
                let below =
                    self.child_min.get((c & NODE_OFFSET) as usize / size_of::<Node>()).map_or(0, |m| m[i]);
                if u32::from(below) >= best {
                    return best;
                }
            }
            c = n.kids[i];
        }
        self.scan(c, k, best, check)
    }

    /// Drops what only a pruning [`Arena::lookup`] reads, once every tree is built and none is walked
    /// that way (after this, it prunes by the trees' best ranks only).
    pub fn forget_child_min(&mut self) {
        self.child_min = Vec::new();
    }

    /// One step down from inner node `c`.
    #[inline(always)]
    fn step<const Z: bool>(&self, c: u32, k: &Key) -> u32 {
        let (n, i) = self.child_slot::<Z>(c, k);
        n.kids[i]
    }

    /// Inner node `c` and the child `k` goes down to.
    #[inline(always)]
    fn child_slot<const Z: bool>(&self, c: u32, k: &Key) -> (&Node, usize) {
        let n = self.node_at(c);
        (n, child_index::<Z>(&n.thr, k[(c & DIM_MASK) as usize]) & (FANOUT - 1))
    }

    /// The node inner reference `c` points to.
    #[inline(always)]
    fn node_at(&self, c: u32) -> &Node {
        let off = (c & NODE_OFFSET) as usize;
        debug_assert!(off < self.nodes.len() * size_of::<Node>());
        // SAFETY: inner references are made only by `node`, as the offset of a node it pushed; nodes
        // are only removed by `rollback`, which invalidates every tree (and so every reference)
        // built since. Tree roots and node children are such references, so `off` is the offset of
        // a node in `nodes`.
        unsafe { &*self.nodes.as_ptr().cast::<u8>().add(off).cast::<Node>() }
    }

    /// The first entry of leaf `c` that matches, if its rank is below `best`.
    #[inline(always)]
    fn scan(&self, c: u32, k: &Key, best: u32, check: &mut impl FnMut(u32) -> bool) -> u32 {
        for en in self.leaf_entries(c) {
            if en.rank >= best {
                break;
            }
            if en.contains(k) && (en.check == NONE || check(en.check)) {
                return en.rank;
            }
        }
        best
    }

    /// [`Arena::lookup`] for up to [`BATCH`] keys at once: the walks down the tree advance in
    /// lockstep, so the memory latency of one key's next node overlaps the others'. `check` gets the
    /// key's position in `ks` and the check index. `all_live` says that every key's `best` is
    /// [`NONE`] (the view's first tree), so only an empty tree prunes them.
    #[inline(always)]
    pub fn lookup_batch<const Z: bool>(
        &self,
        tree: Tree,
        ks: &[Key],
        best: &mut [u32],
        all_live: bool,
        check: &mut impl FnMut(usize, u32) -> bool,
    ) {
        let n = ks.len().min(best.len()).min(BATCH);
        if self.prefetch || self.nodes.is_empty() {
            if best[..n].iter().all(|&b| tree.min_rank >= b) {
                return;
            }
            let mut cur = [LEAF; BATCH];
            for j in 0..n {
                if tree.min_rank < best[j] {
                    cur[j] = tree.root;
                }
            }
            self.walk_prefetching::<Z>(&mut cur, ks, n);
            for j in 0..n {
                best[j] = self.scan(cur[j], &ks[j], best[j], &mut |c| check(j, c));
            }
            return;
        }
        // Only the keys this tree may still improve on walk it, gathered into arrays of their own
        // (the list is made without branches). Later trees of a view rank after the first, so on
        // ipc_10k about half the keys are pruned from the second and third trees; when they took
        // part in the lockstep walk, each level's pass still visited them, and the batch took as
        // many levels as its deepest live key (ipc_10k: 9.6 passes per key for 5.4 real steps;
        // gathering: 41.9 → 41.3 M instructions, 1.14-1.60× the lookups per second in alternated
        // pairs, the host's phase deciding where). A view's first tree prunes no key (`all_live`):
        // its keys walk in place, with no gather.
        if all_live {
            // Every key's best is NONE, so the tree prunes them all exactly when it is empty (an
            // empty tree's root is NONE, no reference to walk: the `classify` fuzz target found a
            // view whose first tree was empty).
            if tree.min_rank != NONE {
                self.walk_and_scan::<Z>(tree, ks, best, &mut |j, c| check(j, c));
            }
            return;
        }
        let mut live = [0u8; BATCH];
        let mut nlive = 0;
        for (j, &b) in best[..n].iter().enumerate() {
            live[nlive] = j as u8;
            nlive += usize::from(tree.min_rank < b);
        }
        if nlive == 0 {
            return;
        }
        // The live keys and their ranks, gathered so that the walk is the same code as above.
        let mut live_keys = [[0u32; 8]; BATCH];
        let mut live_best = [NONE; BATCH];
        for (i, &j) in live[..nlive].iter().enumerate() {
            live_keys[i] = ks[usize::from(j)];
            live_best[i] = best[usize::from(j)];
        }
        self.walk_and_scan::<Z>(tree, &live_keys[..nlive], &mut live_best[..nlive], &mut |i, c| {
            check(usize::from(live[i & (BATCH - 1)]), c)
        });
        for (i, &j) in live[..nlive].iter().enumerate() {
            best[usize::from(j)] = live_best[i];
        }
    }

    /// [`Arena::lookup_batch`] for keys that all enter the tree, in the cache-resident case.
    #[inline(always)]
    fn walk_and_scan<const Z: bool>(
        &self,
        tree: Tree,
        ks: &[Key],
        best: &mut [u32],
        check: &mut impl FnMut(usize, u32) -> bool,
    ) {
        let n = ks.len().min(best.len()).min(BATCH);
        let mut cur = [LEAF; BATCH];
        cur[..n].fill(tree.root);
        self.walk_lockstep::<Z>(&mut cur, ks, n);
        for j in 0..n {
            best[j] = self.scan(cur[j], &ks[j], best[j], &mut |c| check(j, c));
        }
    }

    /// The cache-resident walk of [`Arena::lookup_batch`]: the first `n` walks in `cur` (walk `i`
    /// for key `ks[i]`) advance a level per pass until all are at their leaf. The step is written
    /// without a branch (a walk at its leaf would step through node 0, reference 0, and keep its
    /// leaf), but the compiler skips the step with a branch instead; forcing a conditional move
    /// (`select_unpredictable`) measured slower: ipc_10k 0.94×, ipc_1k 0.87×, acl_1k 0.94×
    /// (per-pair medians of 6 alternated pairs).
    #[inline(always)]
    fn walk_lockstep<const Z: bool>(&self, cur: &mut [u32; BATCH], ks: &[Key], n: usize) {
        loop {
            let mut inner = 0;
            for i in 0..n.min(BATCH) {
                let c = cur[i];
                // All ones when `c` is an inner node, else zero.
                let m = ((c as i32) >> 31) as u32 ^ u32::MAX;
                let next = self.step::<Z>(c & m, &ks[i]);
                let c = (next & m) | (c & !m);
                cur[i] = c;
                inner |= !c & LEAF;
            }
            if inner == 0 {
                break;
            }
        }
    }

    /// The lockstep walks of [`Arena::lookup_batch`] that skip keys already at their leaf and, on large
    /// trees, prefetch each key's next node or leaf.
    #[inline(always)]
    fn walk_prefetching<const Z: bool>(&self, cur: &mut [u32; BATCH], ks: &[Key], n: usize) {
        loop {
            let mut inner = false;
            for j in 0..n {
                if cur[j] & LEAF == 0 {
                    let c = self.step::<Z>(cur[j], &ks[j]);
                    // The scans run once every walk is done: start loading the leaf (or node) now.
                    if self.prefetch {
                        self.prefetch_ref(c);
                    }
                    cur[j] = c;
                    inner = true;
                }
            }
            if !inner {
                break;
            }
        }
    }

    /// Starts loading what reference `c` points to: a node's two lines, or a leaf's first entries.
    #[inline(always)]
    fn prefetch_ref(&self, c: u32) {
        if c & LEAF != 0 {
            let es = self.leaf_entries(c);
            if let Some(e) = es.first() {
                prefetch(e);
            }
            if let Some(e) = es.get(2) {
                prefetch(e);
            }
        } else {
            // Both lines: the step reads the thresholds, then the child reference in the second.
            let n = self.node_at(c);
            prefetch(&n.thr);
            prefetch(&n.kids);
        }
    }

    /// Sizes to roll back to.
    pub fn mark(&self) -> [usize; 3] {
        [self.nodes.len(), self.leaves.len(), self.entries.len()]
    }

    /// Forgets everything built since `mark` (trees built since are invalid).
    pub fn rollback(&mut self, mark: [usize; 3]) {
        self.nodes.truncate(mark[0]);
        self.child_min.truncate(mark[0]);
        self.leaves.truncate(mark[1]);
        self.entries.truncate(mark[2]);
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * size_of::<Node>()
            + self.child_min.capacity() * size_of::<[u16; FANOUT]>()
            + self.leaves.capacity() * size_of::<[u32; 2]>()
            + self.entries.capacity() * size_of::<Entry>()
    }

    /// Entries held (a rule placed in several leaves counts once per leaf).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Leaves, and the most entries in one leaf.
    pub fn leaf_sizes(&self) -> (usize, usize) {
        (self.leaves.len(), self.leaves.iter().map(|[s, e]| (e - s) as usize).max().unwrap_or(0))
    }

    /// Releases spare capacity once every tree is built.
    pub fn shrink(&mut self) {
        self.nodes.shrink_to_fit();
        self.child_min.shrink_to_fit();
        self.leaves.shrink_to_fit();
        self.entries.shrink_to_fit();
        self.prefetch = self.memory_bytes() > PREFETCH_BYTES;
    }
}

/// Hints the CPU to start loading the cache line holding `p`.
#[inline(always)]
pub(super) fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults and reads nothing into the program.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::synth::Rng;

    /// Values around the edges the sign-bit flip moves (0, 2^31 - 1, 2^31, u32::MAX), or anything.
    fn value(rng: &mut Rng) -> u32 {
        const EDGES: [u32; 6] = [0, 1, (1 << 31) - 1, 1 << 31, u32::MAX - 1, u32::MAX];
        if rng.chance(0.4) {
            EDGES[rng.below(EDGES.len())]
        } else {
            (rng.below(1 << 16) as u32) << 16 | rng.below(1 << 16) as u32
        }
    }

    #[test]
    fn vector_child_index_counts_thresholds_below_the_value() {
        let mut rng = Rng::new(11);
        for _ in 0..20_000 {
            let used = rng.below(THRESHOLDS + 1);
            let mut thr: Vec<u32> = (0..used).map(|_| value(&mut rng)).collect();
            thr.sort_unstable();
            thr.dedup();
            // As `Arena::node` stores them: flipped, unused slots `u32::MAX`.
            let mut stored = [u32::MAX ^ BIAS; FANOUT];
            for (s, &t) in stored.iter_mut().zip(&thr) {
                *s = t ^ BIAS;
            }
            let v = value(&mut rng);
            let want = thr.iter().filter(|&&t| v > t).count();
            assert_eq!(child_of(&thr, v), want, "binary search: {thr:?} value {v}");
            assert_eq!(child_index::<false>(&stored, v ^ BIAS), want, "thresholds {thr:?} value {v}");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("popcnt") {
                assert_eq!(child_index::<true>(&stored, v ^ BIAS), want, "AVX-512: {thr:?} value {v}");
            }
        }
    }

    #[test]
    fn box_test_is_the_same_on_flipped_keys_and_corners() {
        let mut rng = Rng::new(12);
        for _ in 0..20_000 {
            let (mut lo, mut hi, mut p) = ([0; DIMS], [0; DIMS], [0; DIMS]);
            for d in 0..DIMS {
                let (a, b) = (value(&mut rng), value(&mut rng));
                (lo[d], hi[d]) = (a.min(b), a.max(b));
                p[d] = if rng.chance(0.5) { value(&mut rng) } else { lo[d] + (hi[d] - lo[d]) / 2 };
            }
            let want = (0..DIMS).all(|d| lo[d] <= p[d] && p[d] <= hi[d]);
            let mut e = Entry::new(lo, hi, 0, NONE);
            e.lo = e.lo.map(|x| x ^ BIAS);
            assert_eq!(e.contains(&key(p)), want, "box {lo:?}..{hi:?} point {p:?}");
        }
    }

    #[test]
    fn selected_quantiles_are_where_a_sort_puts_them() {
        let mut rng = Rng::new(13);
        for round in 0..2_000 {
            let len = 1 + rng.below(if round % 4 == 0 { 5_000 } else { 300 });
            // Few distinct values now and then: ties around the chosen places.
            let spread = if rng.chance(0.3) { 4 } else { 1 << 30 };
            let mut v: Vec<u32> = (0..len).map(|_| rng.below(spread) as u32).collect();
            let mut sorted = v.clone();
            sorted.sort_unstable();
            let at: [usize; THRESHOLDS] = std::array::from_fn(|q| (q + 1) * len / FANOUT);
            select_at(&mut v, &at, 0);
            for &i in &at {
                if i < len {
                    assert_eq!(v[i], sorted[i], "len {len} index {i}");
                }
            }
            v.sort_unstable();
            assert_eq!(v, sorted, "selection lost or made up values");
        }
    }

    /// Random boxes: prefixes and ranges with wildcards, some with checks, in rank order.
    fn random_rules(rng: &mut Rng, n: usize) -> Vec<Entry> {
        (0..n)
            .map(|rank| {
                let (mut lo, mut hi) = ([0; DIMS], DOMAIN_HI);
                for d in 0..DIMS {
                    if rng.chance(0.15) {
                        continue;
                    }
                    if d < 2 {
                        let len = 16 + rng.below(17) as u32;
                        let mask = if len == 32 { u32::MAX } else { !(u32::MAX >> len) };
                        lo[d] = value(rng) & mask;
                        hi[d] = lo[d] | !mask;
                    } else {
                        // A port or a short range; a protocol.
                        lo[d] = rng.below(DOMAIN_HI[d] as usize + 1) as u32;
                        let range = if rng.chance(0.5) { 1 } else { 2_000 };
                        let width = rng.below(range) as u32;
                        hi[d] = (lo[d] + width).min(DOMAIN_HI[d]);
                    }
                }
                Entry::new(lo, hi, rank as u32, if rng.chance(0.2) { 0 } else { NONE })
            })
            .collect()
    }

    fn same_arena(a: &Arena, b: &Arena) -> bool {
        a.nodes.len() == b.nodes.len()
            && a.nodes.iter().zip(&b.nodes).all(|(x, y)| x.thr == y.thr && x.kids == y.kids)
            && a.child_min == b.child_min
            && a.leaves == b.leaves
            && a.entries == b.entries
    }

    #[test]
    fn a_parallel_build_leaves_the_arena_of_a_sequential_one() {
        let mut rng = Rng::new(14);
        let p = Params { binth: 8, max_entries: 4 << 20 };
        for (round, n) in [1_200, 300, 2_500, 1].into_iter().enumerate() {
            let rules = random_rules(&mut rng, n);
            // Into an arena that already holds a tree, so every offset moves.
            let before = random_rules(&mut rng, 400);
            let (mut seq, mut par) = (Arena::default(), Arena::default());
            let t0 = seq.build_on(&before, p, 1, 0);
            assert_eq!(par.build_on(&before, p, 1, 0), t0);
            let ts = seq.build_on(&rules, p, 1, 0);
            let tp = par.build_on(&rules, p, 2 + round % 2, 0);
            assert_eq!(ts, tp, "{n} rules");
            assert!(same_arena(&seq, &par), "{n} rules: the arenas differ");
            assert!(seq.nodes.len() > 1 || n == 1, "{n} rules built no tree to speak of");
            // Well inside the entry budget (past it, which subtrees stop splitting depends on timing).
            assert!(seq.entries.len() < p.max_entries / 4, "{n} rules: {} entries", seq.entries.len());
            // And the parallel arena answers as a linear scan does.
            for _ in 0..2_000 {
                let k: Point = std::array::from_fn(|d| rng.below(DOMAIN_HI[d] as usize + 1) as u32);
                let want = rules.iter().find(|r| (0..DIMS).all(|d| r.lo[d] <= k[d] && k[d] <= r.hi(d)));
                let mut checks = |_| true;
                let got = par.lookup::<false, false>(tp, &key(k), NONE, &mut checks);
                assert_eq!(got, want.map_or(NONE, |r| r.rank), "key {k:?}");
            }
        }
    }

    #[test]
    fn a_leaf_moved_past_the_inline_range_goes_through_the_table() {
        // Appended leaves: [0, 3) and [3, 5), at table indices 1 and 2 of their arena.
        let first_leaf = [[0, 3], [3, 5]];
        let inline = |start: u32, len: u32| LEAF | len << LEN_SHIFT | start;
        let near = Bases { node: 256, entry: START_MASK - 2, leaf: 40 };
        assert_eq!(relocate(inline(0, 3), &near, &first_leaf), inline(START_MASK - 2, 3));
        assert_eq!(relocate(inline(3, 2), &near, &first_leaf), LEAF | LEN_TABLE << LEN_SHIFT | 42);
        assert_eq!(
            relocate(LEAF | LEN_TABLE << LEN_SHIFT | 2, &near, &first_leaf),
            LEAF | LEN_TABLE << LEN_SHIFT | 42
        );
        assert_eq!(relocate(LEAF, &near, &first_leaf), LEAF, "the shared empty leaf stays");
        assert_eq!(relocate(128 | 3, &near, &first_leaf), 384 | 3, "node offset and dimension");
    }
}
