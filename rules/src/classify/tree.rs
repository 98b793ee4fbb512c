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

/// The child of a node with thresholds `thr` that value `v` goes to.
fn child_of(thr: &[u32], v: u32) -> usize {
    thr.iter().filter(|&&t| v > t).count()
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
        // Leaf 0 is the shared empty leaf.
        if self.leaves.is_empty() {
            self.leaves.push([0, 0]);
        }
        let reg = Region { lo: [0; DIMS], hi: DOMAIN_HI };
        let all: Vec<u32> = (0..rules.len() as u32).collect();
        let mut scratch = Vec::new();
        let root = self.node(rules, all, reg, 0, p, &mut scratch);
        Tree { root, min_rank }
    }

    fn leaf(&mut self, rules: &[Entry], idx: &[u32]) -> u32 {
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

    fn node(
        &mut self,
        rules: &[Entry],
        mut idx: Vec<u32>,
        reg: Region,
        depth: u32,
        p: Params,
        cuts: &mut Vec<u32>,
    ) -> u32 {
        // An exact rule covering the whole region decides every key that reaches here.
        if let Some(at) = idx.iter().position(|&i| {
            let r = &rules[i as usize];
            r.check == NONE && r.covers(&reg)
        }) {
            idx.truncate(at + 1);
        }
        let n = idx.len();
        if n <= p.binth || depth >= MAX_DEPTH || self.entries.len() >= p.max_entries {
            return self.leaf(rules, &idx);
        }
        // (score: larger child, then total), dim, thresholds
        let mut best: Option<((usize, usize), usize, Vec<u32>)> = None;
        for d in 0..DIMS {
            cuts.clear();
            for &i in &idx {
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
            cuts.sort_unstable();
            // Thresholds at the 16-quantiles of the cut points (dense regions get more of them).
            let mut thr: Vec<u32> = (1..FANOUT).map(|q| cuts[q * cuts.len() / FANOUT]).collect();
            thr.dedup();
            let mut sizes = [0usize; FANOUT];
            for &i in &idx {
                let e = &rules[i as usize];
                let (a, b) = (child_of(&thr, e.lo[d]), child_of(&thr, e.hi(d)));
                for s in &mut sizes[a..=b] {
                    *s += 1;
                }
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
        let Some((_, d, thr)) = best else {
            return self.leaf(rules, &idx);
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
        let mut refs = [self.empty_leaf(); FANOUT];
        for (j, k) in kids.into_iter().enumerate() {
            let mut r = reg;
            if j > 0 {
                r.lo[d] = thr[j - 1] + 1;
            }
            if j < thr.len() {
                r.hi[d] = thr[j];
            }
            refs[j] =
                if k.is_empty() { self.empty_leaf() } else { self.node(rules, k, r, depth + 1, p, cuts) };
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
            let want = child_of(&thr, v);
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
}
