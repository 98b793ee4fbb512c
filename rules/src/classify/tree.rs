//! Binary decision trees over five numeric header fields (HyperSplit-style), stored in one arena.
//!
//! Every rule placed in a tree is a box `lo[d] <= key[d] <= hi[d]` over [`DIMS`] dimensions (source
//! and destination address, source and destination port, protocol). A box is either *exact* (the box
//! test alone decides the rule) or carries a [`Entry::check`] index: then the box is a conservative
//! hull and the caller's full check decides. Inner nodes compare one dimension with one threshold;
//! leaves hold at most a few entries in priority order, scanned until the first match.
//!
//! Build (per node): for each dimension take the rules' cut points inside the node's region, split
//! at their median, and keep the dimension whose larger child is smallest (then the least
//! replication). A rule that covers the whole region exactly hides every later rule there, so the
//! rule list is cut after it: this is what keeps wildcard-heavy firewall sets from exploding.

/// Number of dimensions: source address, destination address, source port, destination port, protocol.
pub(super) const DIMS: usize = 5;
/// A key: one value per dimension.
pub(super) type Point = [u32; DIMS];
/// "No rule", "no check", "no tree": ranks and indices never reach it.
pub(super) const NONE: u32 = u32::MAX;
/// Marks a child reference as a leaf index.
const LEAF: u32 = 1 << 31;
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
    fn contains(&self, k: &Point) -> bool {
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

#[derive(Debug, Clone, Copy)]
struct Node {
    dim: u32,
    thr: u32,
    /// `[<= thr, > thr]`: a node index, or `LEAF | leaf index`.
    kids: [u32; 2],
}

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

/// Nodes, leaves and entries of every tree of a classifier.
#[derive(Debug, Clone, Default)]
pub(super) struct Arena {
    nodes: Vec<Node>,
    /// `[start, end)` into `entries`.
    leaves: Vec<[u32; 2]>,
    entries: Vec<Entry>,
}

impl Arena {
    /// Builds a tree over `rules` (sorted by rank) and returns it.
    pub fn build(&mut self, rules: &[Entry], p: Params) -> Tree {
        let Some(min_rank) = rules.iter().map(|r| r.rank).min() else {
            return Tree::EMPTY;
        };
        debug_assert!(rules.windows(2).all(|w| w[0].rank < w[1].rank));
        let reg = Region { lo: [0; DIMS], hi: DOMAIN_HI };
        let all: Vec<u32> = (0..rules.len() as u32).collect();
        let mut scratch = Vec::new();
        let root = self.node(rules, all, reg, 0, p, &mut scratch);
        Tree { root, min_rank }
    }

    fn leaf(&mut self, rules: &[Entry], idx: &[u32]) -> u32 {
        let start = self.entries.len() as u32;
        self.entries.extend(idx.iter().map(|&i| rules[i as usize]));
        self.leaves.push([start, self.entries.len() as u32]);
        LEAF | (self.leaves.len() as u32 - 1)
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
        // (score: larger child, then total, dim, thr)
        let mut best: Option<((usize, usize), usize, u32)> = None;
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
            let mid = cuts.len() / 2;
            let thr = *cuts.select_nth_unstable(mid).1;
            let (mut l, mut r) = (0, 0);
            for &i in &idx {
                let e = &rules[i as usize];
                l += usize::from(e.lo[d] <= thr);
                r += usize::from(e.hi(d) > thr);
            }
            if l == n && r == n {
                continue;
            }
            let score = (l.max(r), l + r);
            if best.is_none_or(|(s, _, _)| score < s) {
                best = Some((score, d, thr));
            }
        }
        let Some((_, d, thr)) = best else {
            return self.leaf(rules, &idx);
        };
        let left: Vec<u32> = idx.iter().copied().filter(|&i| rules[i as usize].lo[d] <= thr).collect();
        let right: Vec<u32> = idx.iter().copied().filter(|&i| rules[i as usize].hi(d) > thr).collect();
        drop(idx);
        let at = self.nodes.len();
        self.nodes.push(Node { dim: d as u32, thr, kids: [NONE; 2] });
        let mut lreg = reg;
        lreg.hi[d] = thr;
        let mut rreg = reg;
        rreg.lo[d] = thr + 1;
        let l = self.node(rules, left, lreg, depth + 1, p, cuts);
        let r = self.node(rules, right, rreg, depth + 1, p, cuts);
        self.nodes[at].kids = [l, r];
        at as u32
    }

    /// The smallest rank below `best` in `tree` whose box contains `k` and whose check (if any)
    /// passes; `best` when there is none.
    #[inline]
    pub fn lookup(&self, tree: Tree, k: &Point, best: u32, check: &mut impl FnMut(u32) -> bool) -> u32 {
        if tree.min_rank >= best {
            return best;
        }
        let mut c = tree.root;
        while c & LEAF == 0 {
            let n = &self.nodes[c as usize];
            c = n.kids[usize::from(k[n.dim as usize] > n.thr)];
        }
        let [s, e] = self.leaves[(c & !LEAF) as usize];
        for en in &self.entries[s as usize..e as usize] {
            if en.rank >= best {
                break;
            }
            if en.contains(k) && (en.check == NONE || check(en.check)) {
                return en.rank;
            }
        }
        best
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * size_of::<Node>()
            + self.leaves.capacity() * size_of::<[u32; 2]>()
            + self.entries.capacity() * size_of::<Entry>()
    }

    /// Entries held (a rule placed in several leaves counts once per leaf).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Releases spare capacity once every tree is built.
    pub fn shrink(&mut self) {
        self.nodes.shrink_to_fit();
        self.leaves.shrink_to_fit();
        self.entries.shrink_to_fit();
    }
}
