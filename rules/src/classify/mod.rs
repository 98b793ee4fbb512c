//! The fast first-match classifier: the answer of [`CompiledRuleSet::first_match_l3`] for every key,
//! from a structure built once per rule set, with address-set members that change without a rebuild.
//!
//! # Algorithm
//!
//! A rule is split into what a *tree* can test and what needs a *check*. The tree part is a box over
//! five numbers: source and destination address (IPv4, or the top 32 bits of IPv6), source and
//! destination port (65536 standing for "no ports") and protocol. Everything else (address-set
//! membership, `not`, port sets, ICMP type/code, IPv6 prefixes longer than /32) marks the rule as
//! needing a check: the linear scan's own predicate with what the box and the view already decide
//! left out, run only on the few rules that reach a leaf and pass the box test. So the structure
//! may be conservative anywhere and is still exact.
//!
//! 1. **Views.** Rules are placed once per (direction, family): a key only ever visits the view of its
//!    own direction and family, so `in`/`out`/`inout`, `inet`/`inet6` and the family an `ip` endpoint
//!    implies cost nothing per lookup. Identical views (all-`inout` sets) are shared.
//! 2. **Address sets are hash keys, not ranges.** A rule whose destination (else source) is a
//!    positive address set goes into a small tree *owned by that set*. A lookup first asks the
//!    membership table which sets hold the key's addresses (one hash probe for the exact address, one
//!    binary search over the prefix members' elementary intervals) and visits only those sets' trees.
//!    Rules over sets never smear over the address dimensions of a shared tree, and membership lives
//!    apart from the rules. Sets are numbered in the order of the first rule naming them and id lists
//!    are sorted, so a key stops at the first of its sets whose rules all rank after its answer so
//!    far (on the NSX-shaped policy a key's answer from the shared trees usually prunes them all).
//!    A set's tree also knows its best rank per protocol class (TCP, UDP, other), and a key walks it
//!    only when the best rank for its own protocol beats its answer: half the walks are saved.
//!    And each id list found in the member table carries a summary, per direction, side and
//!    protocol class, of the best rank among its sets' trees, so a key skips a whole list with one
//!    compare when none of its sets can improve on the answer (most lists, most keys). A walk down
//!    a set's tree stops at a node before a child whose subtree ranks after the answer (per-child
//!    best ranks kept beside the nodes): about half the walks stop there rather than load a leaf.
//!    The summary also has a 64-bit mask of the list's ids, so the check of a negated set (which
//!    decides most NSX lookups in the shared trees) rarely reads the lists; and a check that is
//!    only such a membership test is coded in the entry's check index and decided inline.
//! 3. **Decision trees for the rest**: HyperSplit-like trees with 16-way nodes (one field, up to 15
//!    thresholds at the 16-quantiles of the rules' cut points, two cache lines per node) and leaves
//!    of at most 8 rules in priority order. An exact rule that covers a node's whole region hides every later
//!    rule there, which keeps wildcard-heavy firewall sets small. When one tree would still replicate
//!    rules too much, the rules are split as CutSplit does (specific destination / specific source /
//!    neither) and each part gets its own tree. Every tree knows its best rank and is skipped when it
//!    cannot beat the answer found so far.
//! 4. **Batches.** [`Classifier::first_match_batch`] sorts up to 64 keys by the view they visit, then
//!    walks all the keys of one view down a tree in lockstep, so their cache misses overlap (rte_acl
//!    does the same with SIMD over its batch; 64 keys in lockstep beat 32 by 1-9% on the ClassBench
//!    sets, and 32 beat 16 by 1-7%). Up to 32 MiB of trees the walks advance in passes, one level
//!    per pass, until every key is at its leaf; only the keys a tree may still improve on take
//!    part (a view's later trees rank after its first, and on ipc_10k they are pruned for about
//!    half the keys), gathered into arrays of their own. Beyond 32 MiB, each key prefetches its
//!    next node or leaf as soon as it is known.
//!    Views with address sets walk their trees one key at a time: per-set trees are small, most are
//!    pruned by rank, and lockstep walks there cost more instructions than they save. But the rest
//!    goes in stages over the whole group, so that cache misses overlap: every key's hash probes
//!    start (each address's shard found once and kept), then every key's members are found (and
//!    its id lists start loading), then the keys walk the view's shared trees in lockstep, and only
//!    then does each key visit its sets' trees. A wider lockstep window (64 keys rather than 16) and
//!    SoA four-entry vector leaf scans were tried: the first paid (above), the second did not
//!    (ipc_10k +5%, but acl_10k -9%, NSX -9%: a four-entry block costs three cache lines even for
//!    the one- and two-entry leaves that dominate there).
//!
//! Layout: a node is a cache line of 16 thresholds (compared as four 128-bit vectors, or as one
//! 512-bit vector in batches without address sets on CPUs with AVX-512, then one population count)
//! and one of 16 child references. Sixteen ways rather than eight take about half a level
//! fewer on the 1k and 10k ClassBench sets (fewer dependent loads) for more memory (acl_1k 1.2 →
//! 2.2 MiB, the 100,000-rule set 66 → 86 MiB). The node's dimension rides in the low bits of the
//! reference to it (the node's byte offset), and a leaf reference carries the leaf's entry range
//! itself, so a walk touches only nodes and then the leaf's entries. Thresholds, keys and entry
//! corners are stored with the top bit flipped, so signed vector compares order them as unsigned
//! numbers. Prefix members are found by a search within one of 4,096 buckets spread over the span
//! the prefixes cover.
//!
//! Why this mix: decision trees give the shortest lookups on ClassBench-like sets (a few predictable
//! compares per level, far fewer memory touches than tuple-space probes, and no full-rebuild-only
//! state machine like rte_acl's), but they replicate rules along wildcard fields and cannot index
//! address sets with hundreds of thousands of members. Hashing the sets removes both problems for
//! NSX-shaped policies and lets members change by publishing a new membership table (copy-on-write
//! shards) behind an [`ArcSwap`] while the rule trees stay untouched: readers never lock, and a lookup
//! sees either the old or the new members, never a mix.
//!
//! ```
//! use rules::{classify::Classifier, AddrSet, Direction, IpNet, L3Key};
//! let policy = rules::parse_policy(r#"
//!     ruleset mainrs {
//!       rule 1 at 1 in protocol tcp from addrset src to any port 80 accept;
//!       rule 2 at 2 inout protocol any from any to any drop;
//!     }
//!     addrset src { ip 10.0.0.1, }
//! "#).unwrap();
//! let sets: Vec<&AddrSet> = policy.addrsets.iter().collect();
//! let c = Classifier::build(&policy.rulesets[0], &sets).unwrap();
//! let key = |src: &str| L3Key {
//!     dir: Direction::In, src: src.parse().unwrap(), dst: "10.0.0.9".parse().unwrap(),
//!     proto: 6, ports: Some((4000, 80)), icmp: None,
//! };
//! assert_eq!(c.first_match(&key("10.0.0.2")), Some(1));
//! c.add_member("src", IpNet::host("10.0.0.2".parse().unwrap())).unwrap();
//! assert_eq!(c.first_match(&key("10.0.0.2")), Some(0));
//! ```

mod sets;
pub mod synth;
mod tree;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ahash::{AHashMap, AHashSet};
use arc_swap::ArcSwap;

#[cfg(doc)]
use crate::eval::CompiledRuleSet;
use crate::eval::{family_ok, icmp_ok, ports_ok, L3Key, UndefinedSet};
use crate::model::*;
use sets::{Change, MemberKey, Members, Probe, RankSum, SetSums, SetTable, SUM_LEN, SUM_NONE};
use tree::{Arena, Entry, Key, Params, Tree, BATCH, DOMAIN_HI, NONE};

/// Keys sorted by view at a time in a batch lookup.
const GROUP: usize = 64;
/// Leaf size of the decision trees.
const BINTH: usize = 8;
/// Entries beyond which tree nodes stop splitting (48 bytes each: 192 MiB).
const MAX_ENTRIES: usize = 4 << 20;

/// A member change named a set the classifier was not built with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address set '{set}' is not one the classifier was built with")]
pub struct UnknownSet {
    /// The set id.
    pub set: String,
}

/// One address-set member change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange<'a> {
    /// `ip <net>` joins set `.0`.
    Add(&'a str, IpNet),
    /// `ip <net>` leaves set `.0`.
    Remove(&'a str, IpNet),
}

/// The changes that turn `old`'s IP members into `new`'s (for set `new.id`; MAC entries are ignored).
/// Members are compared after clearing host bits, so `10.0.0.1/24` and `10.0.0.0/24` are the same.
pub fn set_changes<'a>(old: &AddrSet, new: &'a AddrSet) -> Vec<MemberChange<'a>> {
    let nets = |s: &AddrSet| -> AHashSet<IpNet> {
        s.entries
            .iter()
            .filter_map(|e| if let AddrEntry::Ip(n) = e { Some(n.network()) } else { None })
            .collect()
    };
    let (o, n) = (nets(old), nets(new));
    let mut out: Vec<MemberChange<'a>> =
        o.difference(&n).map(|&net| MemberChange::Remove(new.id.as_str(), net)).collect();
    out.extend(n.difference(&o).map(|&net| MemberChange::Add(new.id.as_str(), net)));
    out
}

/// A compiled rule set whose address-set members can change while it is in use.
///
/// Lookups take no lock and allocate nothing (unless one address falls inside more than 16 prefix
/// members); member changes are serialized among writers and published atomically.
pub struct Classifier {
    index: Arc<RuleIndex>,
    sets: ArcSwap<SetTable>,
    writer: Mutex<()>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("rules", &self.index.order.len())
            .field("sets", &self.index.set_ids.len())
            .field("generation", &self.generation())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

/// A consistent pair (rules, address-set members) to run many lookups against without touching the
/// shared pointer each time; it keeps its version alive.
#[derive(Debug, Clone)]
pub struct Snapshot {
    index: Arc<RuleIndex>,
    sets: Arc<SetTable>,
}

impl Snapshot {
    /// Whether both versions share one rule structure (one built it, the other came from it by member
    /// changes).
    pub fn same_rules(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.index, &other.index)
    }

    /// This version with `changes` applied in order, as [`Classifier::apply`] would publish it: a new
    /// member table, the rule structure shared. (How the engine takes a member change without building
    /// anew: its filters hold snapshots.)
    pub fn with_changes(&self, changes: &[MemberChange<'_>]) -> Result<Snapshot, UnknownSet> {
        let resolved = self.index.resolve(changes)?;
        Ok(Snapshot { index: Arc::clone(&self.index), sets: Arc::new(self.sets.apply(&resolved)) })
    }

    /// Same as [`Classifier::first_match`], against this version.
    #[inline]
    pub fn first_match(&self, key: &L3Key) -> Option<usize> {
        self.index.first_match(key, Some(&self.sets))
    }

    /// Same as [`Classifier::first_match_batch`], against this version.
    pub fn first_match_batch(&self, keys: &[L3Key], out: &mut [Option<usize>]) {
        self.index.first_match_batch(keys, Some(&self.sets), out);
    }

    /// The address-set generation this snapshot sees (0 at build, +1 per published change).
    pub fn generation(&self) -> u64 {
        self.sets.generation
    }
}

/// Size figures of a built classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// L3 rules.
    pub rules: usize,
    /// Distinct (direction, family) views built.
    pub views: usize,
    /// Non-empty trees.
    pub trees: usize,
    /// Leaf entries over all trees (a rule replicated into several leaves counts once per leaf).
    pub entries: usize,
    /// Address sets referenced by the rules.
    pub sets: usize,
    /// Tree leaves.
    pub leaves: usize,
    /// The most entries in one leaf.
    pub max_leaf: usize,
}

impl Classifier {
    /// Compiles the L3 rules of `set`, resolving address sets among `addrsets` (the first set with a
    /// given id wins, as in [`CompiledRuleSet::compile`]). L2 rules are ignored.
    pub fn build(set: &RuleSet, addrsets: &[&AddrSet]) -> Result<Classifier, UndefinedSet> {
        let (index, table) = RuleIndex::build(set, addrsets)?;
        Ok(Classifier { index: Arc::new(index), sets: ArcSwap::from_pointee(table), writer: Mutex::new(()) })
    }

    /// The first rule (by position) matching `key`, as an index into the rule set's `rules`: exactly
    /// [`CompiledRuleSet::first_match_l3`] over the current members.
    #[inline]
    pub fn first_match(&self, key: &L3Key) -> Option<usize> {
        if self.index.uses_sets {
            self.index.first_match(key, Some(&self.sets.load()))
        } else {
            self.index.first_match(key, None)
        }
    }

    /// `out[i] = self.first_match(&keys[i])` for `i < min(keys.len(), out.len())`. Same answers, higher
    /// throughput: up to 64 keys of the same direction and family walk the decision trees in lockstep,
    /// so one key's memory latency overlaps the others' (what rte_acl's batch classify does with SIMD).
    pub fn first_match_batch(&self, keys: &[L3Key], out: &mut [Option<usize>]) {
        if self.index.uses_sets {
            self.index.first_match_batch(keys, Some(&self.sets.load()), out);
        } else {
            self.index.first_match_batch(keys, None, out);
        }
    }

    /// The current version, for a batch of lookups.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { index: Arc::clone(&self.index), sets: self.sets.load_full() }
    }

    /// Applies `changes` in order and publishes the result as one new version; returns its generation.
    /// Nothing is published when a change names a set the classifier was not built with. Changes to
    /// sets no rule refers to are accepted and have no effect.
    pub fn apply(&self, changes: &[MemberChange<'_>]) -> Result<u64, UnknownSet> {
        let resolved = self.index.resolve(changes)?;
        // Writers take turns so that none loses another's change; readers never take this lock.
        let _turn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.sets.load().apply(&resolved);
        let generation = next.generation;
        self.sets.store(Arc::new(next));
        Ok(generation)
    }

    /// Adds `net` to set `set` (see [`Classifier::apply`]).
    pub fn add_member(&self, set: &str, net: IpNet) -> Result<u64, UnknownSet> {
        self.apply(&[MemberChange::Add(set, net)])
    }

    /// Removes `net` from set `set` (see [`Classifier::apply`]).
    pub fn remove_member(&self, set: &str, net: IpNet) -> Result<u64, UnknownSet> {
        self.apply(&[MemberChange::Remove(set, net)])
    }

    /// The current address-set generation (0 at build, +1 per published change).
    pub fn generation(&self) -> u64 {
        self.sets.load().generation
    }

    /// Heap bytes of the rule structure plus the current member table.
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_bytes() + self.sets.load().memory_bytes()
    }

    /// Size figures.
    pub fn stats(&self) -> Stats {
        let i = &self.index;
        let trees = i
            .view_data
            .iter()
            .flat_map(|v| v.rest.iter().chain(v.by_dst.iter().chain(&v.by_src).map(|t| &t.tree)))
            .filter(|t| t.min_rank != NONE)
            .count();
        Stats {
            rules: i.order.len(),
            views: i.view_data.len(),
            trees,
            entries: i.arena.entries(),
            sets: i.set_ids.len(),
            leaves: i.arena.leaf_sizes().0,
            max_leaf: i.arena.leaf_sizes().1,
        }
    }
}

/// One side of a rule as the full check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    Any,
    Set { id: u32, negated: bool },
    Net { net: IpNet, negated: bool },
}

impl Side {
    #[inline]
    fn matches(self, ip: IpAddr, m: &Members<'_>) -> bool {
        match self {
            Side::Any => true,
            Side::Set { id, negated } => m.contains(id) != negated,
            // As in eval: an address written in a rule implies its family.
            Side::Net { net, negated } => net.addr.is_ipv4() == ip.is_ipv4() && (net.contains(ip) != negated),
        }
    }

    /// The side's hull on its address dimension in a view of family `v6`, and whether it is exact.
    fn hull(self, v6: bool) -> (u32, u32, bool) {
        match self {
            Side::Net { net, negated: false } => match net.network().addr {
                IpAddr::V4(a) => {
                    let (a, m) = (u32::from(a), mask32(net.len));
                    (a, a | !m, true)
                }
                IpAddr::V6(a) => {
                    debug_assert!(v6);
                    let top = (u128::from(a) >> 96) as u32;
                    let m = mask32(net.len.min(32));
                    (top, top | !m, net.len <= 32)
                }
            },
            Side::Any => (0, u32::MAX, true),
            _ => (0, u32::MAX, false),
        }
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// A rule's full predicate (the linear scan's, with set membership from the member table).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Check {
    dir: RuleDir,
    family: Family,
    proto: Protocol,
    src: Side,
    dst: Side,
    sport: Ports,
    dport: Ports,
    icmp: IcmpMatch,
}

impl Check {
    #[inline]
    fn matches(&self, key: &L3Key, ms: &Members<'_>, md: &Members<'_>) -> bool {
        self.dir.covers(key.dir)
            && family_ok(self.family, key.src)
            && (self.proto == Protocol::Any || self.proto == Protocol::Number(key.proto))
            && self.matches_rest(key, ms, md)
    }

    /// [`Check::matches`] of a check made for a tree entry: its direction, family and protocol are
    /// always open (the view and the box decide them), so only the rest is tested.
    #[inline]
    fn matches_open(&self, key: &L3Key, ms: &Members<'_>, md: &Members<'_>) -> bool {
        debug_assert!(
            self.dir == RuleDir::InOut && self.family == Family::Any && self.proto == Protocol::Any
        );
        self.matches_rest(key, ms, md)
    }

    /// The part of [`Check::matches`] past direction, family and protocol.
    #[inline]
    fn matches_rest(&self, key: &L3Key, ms: &Members<'_>, md: &Members<'_>) -> bool {
        self.src.matches(key.src, ms)
            && self.dst.matches(key.dst, md)
            && ports_ok(&self.sport, key.ports.map(|p| p.0))
            && ports_ok(&self.dport, key.ports.map(|p| p.1))
            && icmp_ok(self.icmp, key.icmp)
    }

    fn uses_sets(&self) -> bool {
        matches!(self.src, Side::Set { .. }) || matches!(self.dst, Side::Set { .. })
    }
}

fn ports_hull(p: &Ports) -> (u32, u32, bool) {
    match p {
        Ports::Any => (0, DOMAIN_HI[2], true),
        Ports::Range(lo, hi) if lo <= hi => (u32::from(*lo), u32::from(*hi), true),
        // An inverted range selects nothing: any box will do, the check rejects.
        Ports::Range(..) => (0, 0, false),
        Ports::Set(items) => {
            let valid = || items.iter().filter(|r| r.0 <= r.1);
            match (valid().map(|r| r.0).min(), valid().map(|r| r.1).max()) {
                (Some(lo), Some(hi)) => (u32::from(lo), u32::from(hi), items.len() == 1),
                _ => (0, 0, false),
            }
        }
    }
}

/// Where a rule sits in a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Place {
    Rest,
    Dst(u32),
    Src(u32),
}

/// Rules of one (direction, family): shared trees, then per-set trees.
#[derive(Debug, Clone, Default)]
struct View {
    rest: Vec<Tree>,
    /// Indexed by set id: the tree of rules whose destination is that set (an empty tree if none).
    by_dst: Vec<SetTree>,
    /// Same for sources (rules whose destination is not a positive set).
    by_src: Vec<SetTree>,
    /// Some rule in the view is indexed by, or checks, set membership.
    sets: bool,
}

/// A set's tree in a view, with the best rank of its rules per [`proto_class`] of the key: on the
/// NSX-shaped policy a key's answer from the shared trees prunes the trees of about half the sets its
/// addresses are in by their best rank, and another half of the rest by the best rank for the key's
/// protocol (a scratch probe over 100,000 keys: set-tree walks 0.92 → 0.50 per key). The walks it
/// saves were the costly part of the set stage (branches that hang on cache misses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SetTree {
    tree: Tree,
    /// Best rank per protocol class (TCP, UDP, any other); [`NONE`] when no rule of the class.
    class_min: [u32; 3],
}

impl SetTree {
    /// `tree`, built from `rules`.
    fn new(tree: Tree, rules: &[Entry]) -> SetTree {
        let mut class_min = [NONE; 3];
        for e in rules {
            // The protocol box (its corner not yet flipped: see `Arena::leaf`); a key outside it
            // matches no rule of the entry.
            let (lo, hi) = (e.lo[4], e.lo[4].wrapping_add(e.span[4]));
            let has = |p: u32| lo <= p && p <= hi;
            let covers = [has(6), has(17), !(lo == hi && (lo == 6 || lo == 17))];
            for (m, c) in class_min.iter_mut().zip(covers) {
                if c {
                    *m = (*m).min(e.rank);
                }
            }
        }
        debug_assert_eq!(class_min.iter().copied().min(), Some(tree.min_rank));
        SetTree { tree, class_min }
    }

    /// The tree as keys of protocol class `class` see it (pruned by that class's best rank).
    #[inline(always)]
    fn for_class(&self, class: usize) -> Tree {
        self.tree.pruned_at(self.class_min[class.min(2)])
    }
}

/// The protocol class of a key: 0 for TCP, 1 for UDP, 2 for any other protocol.
#[inline(always)]
fn proto_class(proto: u8) -> usize {
    usize::from(proto != 6) + usize::from(proto != 6 && proto != 17)
}

/// Placements of one view before its trees are built (compared to share identical views).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    rest: Vec<Entry>,
    by_dst: Vec<Vec<Entry>>,
    by_src: Vec<Vec<Entry>>,
    sets: bool,
}

/// The immutable rule part of a classifier.
#[derive(Debug)]
struct RuleIndex {
    arena: Arena,
    /// `[in v4, in v6, out v4, out v6]` → index into `view_data`.
    views: [usize; 4],
    view_data: Vec<View>,
    /// Checks referenced by tree entries: each the linear scan's predicate reduced to the parts its
    /// entries' boxes and views leave open.
    checks: Vec<Check>,
    /// Full checks by rank (for keys whose source and destination families differ).
    all: Vec<Check>,
    /// Rank → index into the rule set's `rules`.
    order: Vec<u32>,
    set_ids: AHashMap<String, u32>,
    /// `sets_before[r]`: how many sets are named by some rule ranked before `r` (the sets numbered
    /// below that count; see [`number_sets_by_first_use`]). One entry per rank and one past the last.
    sets_before: Vec<u32>,
    /// Sets given at build that no rule refers to.
    unused: AHashSet<String>,
    uses_sets: bool,
    /// Which build of the lookups runs on this CPU.
    isa: Isa,
}

/// The builds of the lookups, chosen once per classifier by CPU feature detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// Baseline x86-64 (SSE2), or another architecture.
    Base,
    /// AVX2, POPCNT, BMI1 and BMI2.
    Avx2,
    /// Those and AVX-512 F and BW: batches without address sets step through a node with one
    /// 512-bit compare of its sixteen thresholds. Everything else runs the AVX2 build: with address
    /// sets (NSX) the AVX-512 build measured slower (AVX2 faster in 6 of 6 alternated pairs, medians
    /// 5.11 vs 4.62 M lookups/s), and single lookups are not what it was measured on.
    Avx512,
}

impl Isa {
    /// The best build this CPU runs.
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("popcnt")
                && is_x86_feature_detected!("bmi1")
                && is_x86_feature_detected!("bmi2");
            if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                Isa::Avx512
            } else if avx2 {
                Isa::Avx2
            } else {
                Isa::Base
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Base
    }
}

impl RuleIndex {
    /// `changes` in terms of set numbers: an error for a set the index was not built with, nothing for
    /// a set no rule refers to.
    fn resolve(&self, changes: &[MemberChange<'_>]) -> Result<Vec<Change>, UnknownSet> {
        let mut resolved = Vec::with_capacity(changes.len());
        for c in changes {
            let (id, net, add) = match *c {
                MemberChange::Add(id, net) => (id, net, true),
                MemberChange::Remove(id, net) => (id, net, false),
            };
            match self.set_ids.get(id) {
                Some(&set) => resolved.push(Change { set, key: MemberKey::of(net), add }),
                None if self.unused.contains(id) => {}
                None => return Err(UnknownSet { set: id.to_string() }),
            }
        }
        Ok(resolved)
    }

    fn build(set: &RuleSet, addrsets: &[&AddrSet]) -> Result<(RuleIndex, SetTable), UndefinedSet> {
        let by_id = crate::eval::sets_by_id(addrsets);
        // Resolve set references in text order (src, then dst), as CompiledRuleSet::compile does, so
        // the same reference is reported as undefined.
        let mut set_ids: AHashMap<String, u32> = AHashMap::new();
        let mut members: Vec<(MemberKey, u32)> = Vec::new();
        let mut sides: Vec<Option<(Side, Side)>> = Vec::with_capacity(set.rules.len());
        for rule in &set.rules {
            let RuleBody::Ip(m) = &rule.body else {
                sides.push(None);
                continue;
            };
            let mut side = |e: &Endpoint| -> Result<Side, UndefinedSet> {
                Ok(match e {
                    Endpoint::Any => Side::Any,
                    Endpoint::Ip { net, negated } => Side::Net { net: *net, negated: *negated },
                    Endpoint::AddrSet { id, negated } => {
                        let next = set_ids.len() as u32;
                        let sid = match set_ids.get(id.as_str()) {
                            Some(&s) => s,
                            None => {
                                let a = by_id.get(id.as_str()).ok_or_else(|| UndefinedSet {
                                    ruleset: set.name.clone(),
                                    rule: rule.id,
                                    set: id.clone(),
                                })?;
                                for e in &a.entries {
                                    if let AddrEntry::Ip(net) = e {
                                        members.push((MemberKey::of(*net), next));
                                    }
                                }
                                set_ids.insert(id.clone(), next);
                                next
                            }
                        };
                        Side::Set { id: sid, negated: *negated }
                    }
                })
            };
            let s = side(&m.src)?;
            let d = side(&m.dst)?;
            sides.push(Some((s, d)));
        }
        let unused = by_id.keys().filter(|k| !set_ids.contains_key(**k)).map(|k| k.to_string()).collect();

        let mut order: Vec<usize> = (0..set.rules.len()).filter(|&i| sides[i].is_some()).collect();
        order.sort_by_key(|&i| set.rules[i].position);
        let sets_before = number_sets_by_first_use(&order, &mut sides, &mut set_ids, &mut members);
        let full = |i: usize| -> Option<Check> {
            let (RuleBody::Ip(m), Some((src, dst))) = (&set.rules[i].body, sides[i]) else { return None };
            Some(Check {
                dir: set.rules[i].dir,
                family: m.family,
                proto: m.proto,
                src,
                dst,
                sport: m.sport.clone(),
                dport: m.dport.clone(),
                icmp: m.icmp,
            })
        };
        let all: Vec<Check> = order.iter().filter_map(|&i| full(i)).collect();

        let nsets = set_ids.len();
        let mut checks: Vec<Check> = Vec::new();
        let mut interned: AHashMap<Check, u32> = AHashMap::new();
        let mut plans: Vec<Plan> = Vec::new();
        let mut views = [0usize; 4];
        for (vi, (dir, v6)) in
            [(Direction::In, false), (Direction::In, true), (Direction::Out, false), (Direction::Out, true)]
                .into_iter()
                .enumerate()
        {
            let mut plan = Plan {
                rest: Vec::new(),
                by_dst: vec![Vec::new(); nsets],
                by_src: vec![Vec::new(); nsets],
                sets: false,
            };
            for (rank, c) in all.iter().enumerate() {
                if !c.dir.covers(dir)
                    || !matches!(
                        (c.family, v6),
                        (Family::Any, _) | (Family::Inet, false) | (Family::Inet6, true)
                    )
                {
                    continue;
                }
                let wrong_family = |s: Side| matches!(s, Side::Net { net, .. } if net.addr.is_ipv6() != v6);
                if wrong_family(c.src) || wrong_family(c.dst) {
                    continue;
                }
                let place = match (c.src, c.dst) {
                    (Side::Set { id: s, negated: false }, Side::Set { id: d, negated: false }) => {
                        if plan.by_src[s as usize].len() < plan.by_dst[d as usize].len() {
                            Place::Src(s)
                        } else {
                            Place::Dst(d)
                        }
                    }
                    (_, Side::Set { id: d, negated: false }) => Place::Dst(d),
                    (Side::Set { id: s, negated: false }, _) => Place::Src(s),
                    _ => Place::Rest,
                };
                let mut chk = c.clone();
                match place {
                    Place::Dst(_) => chk.dst = Side::Any,
                    Place::Src(_) => chk.src = Side::Any,
                    Place::Rest => {}
                }
                plan.sets |= chk.uses_sets() || place != Place::Rest;
                let (slo, shi, sx) = chk.src.hull(v6);
                let (dlo, dhi, dx) = chk.dst.hull(v6);
                let (splo, sphi, spx) = ports_hull(&chk.sport);
                let (dplo, dphi, dpx) = ports_hull(&chk.dport);
                let (plo, phi) = match chk.proto {
                    Protocol::Any => (0, 255),
                    Protocol::Number(p) => (u32::from(p), u32::from(p)),
                };
                let exact = sx && dx && spx && dpx && chk.icmp == IcmpMatch::Any;
                let check = if exact {
                    NONE
                } else if let Some(code) = lone_set_check(&chk, sx, dx, spx, dpx) {
                    code
                } else {
                    // Only what the box leaves open: the view fixes direction and family, the box
                    // decides protocol and every exact field (a check runs only after the box test).
                    let open = Check {
                        dir: RuleDir::InOut,
                        family: Family::Any,
                        proto: Protocol::Any,
                        src: if sx { Side::Any } else { chk.src },
                        dst: if dx { Side::Any } else { chk.dst },
                        sport: if spx { Ports::Any } else { chk.sport.clone() },
                        dport: if dpx { Ports::Any } else { chk.dport.clone() },
                        icmp: chk.icmp,
                    };
                    *interned.entry(open).or_insert_with_key(|k| {
                        checks.push(k.clone());
                        checks.len() as u32 - 1
                    })
                };
                let e =
                    Entry::new([slo, dlo, splo, dplo, plo], [shi, dhi, sphi, dphi, phi], rank as u32, check);
                match place {
                    Place::Rest => plan.rest.push(e),
                    Place::Dst(d) => plan.by_dst[d as usize].push(e),
                    Place::Src(s) => plan.by_src[s as usize].push(e),
                }
            }
            views[vi] = match plans.iter().position(|p| *p == plan) {
                Some(i) => i,
                None => {
                    plans.push(plan);
                    plans.len() - 1
                }
            };
        }

        let params = Params { binth: BINTH, max_entries: MAX_ENTRIES };
        let mut arena = Arena::default();
        let mut view_data = Vec::with_capacity(plans.len());
        for p in &plans {
            let rest = build_shared(&mut arena, &p.rest, params);
            let mut tree = |rules: &[Entry]| SetTree::new(arena.build(rules, params), rules);
            let by_dst = if p.by_dst.iter().any(|v| !v.is_empty()) {
                p.by_dst.iter().map(|v| tree(v)).collect()
            } else {
                Vec::new()
            };
            let by_src = if p.by_src.iter().any(|v| !v.is_empty()) {
                p.by_src.iter().map(|v| tree(v)).collect()
            } else {
                Vec::new()
            };
            view_data.push(View { rest, by_dst, by_src, sets: p.sets });
        }
        if view_data.iter().all(|v| v.by_dst.is_empty() && v.by_src.is_empty()) {
            arena.forget_child_min();
        }
        arena.shrink();
        let sums = set_sums(nsets, &views, &view_data);
        let uses_sets = view_data.iter().any(|v| v.sets) || all.iter().any(Check::uses_sets);
        let index = RuleIndex {
            arena,
            views,
            view_data,
            checks,
            all,
            order: order.iter().map(|&i| i as u32).collect(),
            set_ids,
            sets_before,
            unused,
            uses_sets,
            isa: Isa::detect(),
        };
        Ok((index, SetTable::new(members, sums)))
    }

    #[inline]
    fn first_match(&self, key: &L3Key, sets: Option<&SetTable>) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if self.isa != Isa::Base {
            // SAFETY: `isa` is `Avx2` or `Avx512` only when the CPU running this process has AVX2,
            // POPCNT, BMI1 and BMI2 (see `Isa::detect`; tests only ever lower it), which is all
            // `first_match_avx2` requires. (Single lookups have no AVX-512 build: see `Isa`.)
            return unsafe { self.first_match_avx2(key, sets) };
        }
        self.first_match_base(key, sets)
    }

    /// [`RuleIndex::first_match_impl`] for CPUs without AVX2, out of line so that callers which
    /// inline [`RuleIndex::first_match`] (`Classifier::first_match`, `Snapshot::first_match`) stay
    /// small.
    #[inline(never)]
    fn first_match_base(&self, key: &L3Key, sets: Option<&SetTable>) -> Option<usize> {
        self.first_match_impl::<false>(key, sets)
    }

    /// [`RuleIndex::first_match_impl`] compiled for AVX2 (node compares, POPCNT).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt,bmi1,bmi2")]
    unsafe fn first_match_avx2(&self, key: &L3Key, sets: Option<&SetTable>) -> Option<usize> {
        self.first_match_impl::<false>(key, sets)
    }

    #[inline(always)]
    fn first_match_impl<const Z: bool>(&self, key: &L3Key, sets: Option<&SetTable>) -> Option<usize> {
        let v6 = key.src.is_ipv6();
        let rank = if v6 != key.dst.is_ipv6() {
            self.first_mixed(key, sets)
        } else {
            self.first_rank::<Z>(key, v6, sets)
        };
        (rank != NONE).then(|| self.order[rank as usize] as usize)
    }

    #[inline(always)]
    fn first_rank<const Z: bool>(&self, key: &L3Key, v6: bool, sets: Option<&SetTable>) -> u32 {
        let view = &self.view_data[self.views[usize::from(key.dir == Direction::Out) * 2 + usize::from(v6)]];
        let (ms, md) = match sets {
            Some(t) if view.sets => {
                // Both hash probes in flight before either is read, each address's shard found once
                // (`members` of the source searched its prefixes before its probe started).
                let (ps, pd) = (t.start_probe(key.src), t.start_probe(key.dst));
                (t.members_at(key.src, ps), t.members_at(key.dst, pd))
            }
            _ => (Members::NONE, Members::NONE),
        };
        self.rank_in_view::<Z>(view, key, &ms, &md)
    }

    /// The best rank of `key` in `view`, given the sets holding its source (`ms`) and destination.
    #[inline(always)]
    fn rank_in_view<const Z: bool>(
        &self,
        view: &View,
        key: &L3Key,
        ms: &Members<'_>,
        md: &Members<'_>,
    ) -> u32 {
        let k = point(key);
        let mut check = |c: u32| self.check(c, key, ms, md);
        let mut best = NONE;
        for &t in &view.rest {
            best = self.arena.lookup::<Z, false>(t, &k, best, &mut check);
        }
        self.rank_in_sets::<Z>(view, key, &k, ms, md, best)
    }

    /// [`RuleIndex::rank_in_view`] past the shared trees, whose answer is `best`: the trees of the
    /// sets holding the key's addresses.
    #[inline(always)]
    fn rank_in_sets<const Z: bool>(
        &self,
        view: &View,
        key: &L3Key,
        k: &Key,
        ms: &Members<'_>,
        md: &Members<'_>,
        mut best: u32,
    ) -> u32 {
        let mut check = |c: u32| self.check(c, key, ms, md);
        let class = proto_class(key.proto);
        // Where the key's direction and class sit in the lists' summaries (see `RankSum`): a list
        // whose summary does not beat `best` holds no set whose tree the key would walk.
        let o = usize::from(key.dir == Direction::Out) * (SUM_LEN / 2) + class;
        // A helper per id list, called once per list: a loop over an array of the lists cost about
        // 1% more of an NSX lookup's instructions (a loop over the two sides, 4% more), and a closure
        // (not inlined) 11% more.
        let (dst, src) = (&view.by_dst[..], &view.by_src[..]);
        if u32::from(md.exact_sum.ranks[o]) < best {
            self.rank_in_listed::<Z>(dst, md.exact, class, k, &mut best, &mut check);
        }
        if u32::from(md.prefix_sum.ranks[o]) < best {
            self.rank_in_listed::<Z>(dst, md.prefix, class, k, &mut best, &mut check);
        }
        if u32::from(ms.exact_sum.ranks[o + 3]) < best {
            self.rank_in_listed::<Z>(src, ms.exact, class, k, &mut best, &mut check);
        }
        if u32::from(ms.prefix_sum.ranks[o + 3]) < best {
            self.rank_in_listed::<Z>(src, ms.prefix, class, k, &mut best, &mut check);
        }
        best
    }

    /// [`RuleIndex::rank_in_sets`] over one sorted id list: the trees of its sets that may beat
    /// `best` lower it; `class` is the key's [`proto_class`].
    #[inline(always)]
    fn rank_in_listed<const Z: bool>(
        &self,
        trees: &[SetTree],
        ids: &[u32],
        class: usize,
        k: &Key,
        best: &mut u32,
        check: &mut impl FnMut(u32) -> bool,
    ) {
        // Sets are numbered by the first rule naming them and id lists are sorted, so the sets that
        // may still hold a better rule are a prefix of the list.
        let mut limit = self.sets_before(*best);
        for &id in ids {
            if id >= limit {
                break;
            }
            if let Some(t) = trees.get(id as usize) {
                let b = self.arena.lookup::<Z, true>(t.for_class(class), k, *best, check);
                if b != *best {
                    *best = b;
                    limit = self.sets_before(b);
                }
            }
        }
    }

    /// Check `c` of a tree entry (see [`Entry::check`]) for `key`, whose source is in the sets `ms`
    /// and destination in `md`: a lone set-membership test inline, anything else by its [`Check`].
    #[inline(always)]
    fn check(&self, c: u32, key: &L3Key, ms: &Members<'_>, md: &Members<'_>) -> bool {
        if c & SET_CHECK != 0 {
            let m = if c & SET_CHECK_DST != 0 { md } else { ms };
            return m.contains(c & SET_CHECK_ID) != (c & SET_CHECK_NEG != 0);
        }
        self.checks[c as usize].matches_open(key, ms, md)
    }

    /// The number of sets named by some rule ranked before `rank`: no set numbered at or past it has
    /// a rule that beats `rank`.
    #[inline(always)]
    fn sets_before(&self, rank: u32) -> u32 {
        self.sets_before.get(rank as usize).copied().unwrap_or(u32::MAX)
    }

    /// `out[i] = first_match(keys[i])` for a batch: keys of one view walk its shared trees in lockstep.
    fn first_match_batch(&self, keys: &[L3Key], sets: Option<&SetTable>, out: &mut [Option<usize>]) {
        #[cfg(target_arch = "x86_64")]
        match self.isa {
            // SAFETY: as in `first_match`: the features were detected on this CPU.
            Isa::Avx512 if sets.is_none() => return unsafe { self.batch_plain_avx512(keys, out) },
            // SAFETY: as in `first_match`.
            Isa::Avx512 | Isa::Avx2 => return unsafe { self.first_match_batch_avx2(keys, sets, out) },
            Isa::Base => {}
        }
        self.first_match_batch_impl(keys, sets, out)
    }

    /// [`RuleIndex::first_match_batch_impl`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt,bmi1,bmi2")]
    unsafe fn first_match_batch_avx2(
        &self,
        keys: &[L3Key],
        sets: Option<&SetTable>,
        out: &mut [Option<usize>],
    ) {
        if sets.is_none() {
            return self.batch_plain_avx2(keys, out);
        }
        self.first_match_batch_impl(keys, sets, out)
    }

    /// [`RuleIndex::first_match_batch_impl`] without address sets, compiled for AVX2 as a function of
    /// its own, so that changes to the set path do not move the code of the plain one: with both in
    /// one function, the set-path changes of the fifth session made the 1k ClassBench batches 5-6%
    /// slower at fewer instructions (fw_1k slower than before in 9 of 10 alternated pairs; in 3 and 6
    /// of 10 in two rounds once split).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt,bmi1,bmi2")]
    #[inline(never)]
    fn batch_plain_avx2(&self, keys: &[L3Key], out: &mut [Option<usize>]) {
        self.batch_groups::<false>(keys, None, out, None)
    }

    /// [`RuleIndex::batch_plain_avx2`] compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx2,popcnt,bmi1,bmi2")]
    #[inline(never)]
    fn batch_plain_avx512(&self, keys: &[L3Key], out: &mut [Option<usize>]) {
        self.batch_groups::<true>(keys, None, out, None)
    }

    /// The batch lookup with baseline node steps (AVX2 ones when inlined into an AVX2 build; the
    /// AVX-512 steps serve only [`RuleIndex::batch_plain_avx512`]).
    #[inline(always)]
    fn first_match_batch_impl(&self, keys: &[L3Key], sets: Option<&SetTable>, out: &mut [Option<usize>]) {
        // Made once per call, and only when there are sets: filling these arrays for every view
        // group cost about 3% of an NSX lookup.
        if sets.is_some() {
            let mut scratch = Scratch::new();
            self.batch_groups::<false>(keys, sets, out, Some(&mut scratch));
        } else {
            self.batch_groups::<false>(keys, None, out, None);
        }
    }

    /// [`RuleIndex::first_match_batch_impl`] with its scratch arrays.
    #[inline(always)]
    fn batch_groups<'s, const Z: bool>(
        &self,
        keys: &[L3Key],
        sets: Option<&'s SetTable>,
        out: &mut [Option<usize>],
        mut scratch: Option<&mut Scratch<'s>>,
    ) {
        let n = keys.len().min(out.len());
        let view_of = |k: &L3Key| usize::from(k.dir == Direction::Out) * 2 + usize::from(k.src.is_ipv6());
        for base in (0..n).step_by(GROUP) {
            let end = (base + GROUP).min(n);
            let (keys, out) = (&keys[base..end], &mut out[base..end]);
            // Sort the keys by the view they visit (traffic mixes directions and families), so that
            // each group walks one view's trees in lockstep.
            let mut group = [[0u8; GROUP]; 4];
            let mut len = [0usize; 4];
            for (i, k) in keys.iter().enumerate() {
                if k.src.is_ipv6() != k.dst.is_ipv6() {
                    out[i] = self.first_match_impl::<Z>(k, sets);
                    continue;
                }
                let v = self.views[view_of(k)];
                group[v][len[v]] = i as u8;
                len[v] += 1;
            }
            for (v, g) in group.iter().enumerate() {
                for idx in g[..len[v]].chunks(BATCH) {
                    self.batch_view::<Z>(v, keys, idx, sets, out, scratch.as_deref_mut());
                }
            }
        }
    }

    /// Lookups of `keys[i]` for the (at most [`BATCH`]) `i` in `idx`, all keys of view `vi` with
    /// addresses of one family, into `out[i]`.
    #[inline(always)]
    fn batch_view<'s, const Z: bool>(
        &self,
        vi: usize,
        keys: &[L3Key],
        idx: &[u8],
        sets: Option<&'s SetTable>,
        out: &mut [Option<usize>],
        scratch: Option<&mut Scratch<'s>>,
    ) {
        let Some(view) = self.view_data.get(vi) else { return };
        let n = idx.len().min(BATCH);
        if view.sets {
            // Per-set trees are small and most are pruned by rank: one key at a time costs fewer
            // instructions than lockstep walks here. But the member table and the trees outgrow
            // the core's cache, so the hash probes of every key start first, then every key's
            // members are found, then each key visits its trees.
            let (Some(t), Some(scratch)) = (sets, scratch) else {
                for &i in idx {
                    out[usize::from(i)] = self.first_match_impl::<Z>(&keys[usize::from(i)], sets);
                }
                return;
            };
            let Scratch { probes, members, pts, best } = scratch;
            best[..n].fill(NONE);
            for (p, &i) in probes.iter_mut().zip(idx) {
                let k = &keys[usize::from(i)];
                *p = (t.start_probe(k.src), t.start_probe(k.dst));
            }
            for ((m, p), &i) in members.iter_mut().zip(probes.iter()).zip(idx) {
                let k = &keys[usize::from(i)];
                *m = (t.members_at(k.src, p.0), t.members_at(k.dst, p.1));
                // The id lists sit apart from the hash slots: start loading them now, for the checks
                // in the shared trees and the set stage.
                // An address's list summary comes first, then its ids (they may share a line).
                for (sum, ids) in [(m.0.exact_sum, m.0.exact), (m.1.exact_sum, m.1.exact)] {
                    tree::prefetch(sum);
                    if let Some(id) = ids.last() {
                        tree::prefetch(id);
                    }
                }
            }
            // The shared trees in lockstep, then each key's set trees.
            self.shared_batch::<Z>(view, keys, idx, members, pts, best);
            for (j, &i) in idx.iter().enumerate().take(BATCH) {
                let (ms, md) = &members[j];
                let r = self.rank_in_sets::<Z>(view, &keys[usize::from(i)], &pts[j], ms, md, best[j]);
                out[usize::from(i)] = (r != NONE).then(|| self.order[r as usize] as usize);
            }
            return;
        }
        let key = |j: usize| &keys[usize::from(idx[j])];
        let mut pts = [[0u32; 8]; BATCH];
        for (j, p) in pts[..n].iter_mut().enumerate() {
            *p = point(key(j));
        }
        let mut best = [NONE; BATCH];
        // No rule of this view refers to a set: checks need no members.
        let mut check =
            |j: usize, c: u32| self.checks[c as usize].matches_open(key(j), &Members::NONE, &Members::NONE);
        for (i, &t) in view.rest.iter().enumerate() {
            self.arena.lookup_batch::<Z>(t, &pts[..n], &mut best[..n], i == 0, &mut check);
        }
        for j in 0..n {
            let b = best[j];
            out[usize::from(idx[j])] = (b != NONE).then(|| self.order[b as usize] as usize);
        }
    }

    /// Into `pts[j]` and `best[j]`, the key and the best rank of `keys[idx[j]]` (at most [`BATCH`])
    /// over the shared trees of `view`, walked in lockstep (`best` starts at [`NONE`] for each `j`);
    /// `members[j]` holds the sets of key `idx[j]`'s addresses. Written in place: returning the
    /// arrays cost a copy per batch.
    #[inline(always)]
    fn shared_batch<const Z: bool>(
        &self,
        view: &View,
        keys: &[L3Key],
        idx: &[u8],
        members: &[(Members<'_>, Members<'_>); BATCH],
        pts: &mut [Key; BATCH],
        best: &mut [u32; BATCH],
    ) {
        let n = idx.len().min(BATCH);
        let key = |j: usize| &keys[usize::from(idx[j])];
        for (j, p) in pts[..n].iter_mut().enumerate() {
            *p = point(key(j));
        }
        let mut check = |j: usize, c: u32| {
            let (ms, md) = &members[j & (BATCH - 1)];
            self.check(c, key(j), ms, md)
        };
        for (i, &t) in view.rest.iter().enumerate() {
            self.arena.lookup_batch::<Z>(t, &pts[..n], &mut best[..n], i == 0, &mut check);
        }
    }

    /// A key whose source and destination families differ (no real packet): plain scan.
    #[cold]
    fn first_mixed(&self, key: &L3Key, sets: Option<&SetTable>) -> u32 {
        let (ms, md) = match sets {
            Some(t) => (t.members(key.src), t.members(key.dst)),
            None => (Members::NONE, Members::NONE),
        };
        self.all.iter().position(|c| c.matches(key, &ms, &md)).map_or(NONE, |r| r as u32)
    }

    fn memory_bytes(&self) -> usize {
        let check_bytes = |c: &Check| {
            size_of::<Check>()
                + [&c.sport, &c.dport]
                    .iter()
                    .map(|p| if let Ports::Set(v) = p { v.capacity() * 4 } else { 0 })
                    .sum::<usize>()
        };
        self.arena.memory_bytes()
            + self
                .view_data
                .iter()
                .map(|v| {
                    v.rest.len() * size_of::<Tree>()
                        + (v.by_dst.len() + v.by_src.len()) * size_of::<SetTree>()
                })
                .sum::<usize>()
            + self.checks.iter().chain(&self.all).map(check_bytes).sum::<usize>()
            + self.order.capacity() * 4
            + self.sets_before.capacity() * 4
            + self
                .set_ids
                .iter()
                .chain(self.unused.iter().map(|s| (s, &0)))
                .map(|(s, _)| s.capacity() + 40)
                .sum::<usize>()
    }
}

/// The per-key arrays of a batch lookup's view groups: where each key's member probes start, the sets
/// holding its addresses, its tree key and its best rank so far.
struct Scratch<'s> {
    probes: [(Probe<'s>, Probe<'s>); BATCH],
    members: [(Members<'s>, Members<'s>); BATCH],
    pts: [Key; BATCH],
    best: [u32; BATCH],
}

impl Scratch<'_> {
    #[inline(always)]
    fn new() -> Self {
        Scratch {
            probes: [(Probe::NONE, Probe::NONE); BATCH],
            members: [(Members::NONE, Members::NONE); BATCH],
            pts: [[0; 8]; BATCH],
            best: [NONE; BATCH],
        }
    }
}

/// Per family (`[v4, v6]`) and set id, the [`RankSum`] of the set's own trees: per direction, side
/// and protocol class, the best rank of the set's tree in the view a key of that family and
/// direction visits (saturated to `u16`, which keeps it a lower bound).
fn set_sums(nsets: usize, views: &[usize; 4], view_data: &[View]) -> SetSums {
    let by_family = std::array::from_fn(|f| {
        (0..nsets)
            .map(|id| {
                let mut s: RankSum = SUM_NONE;
                for dir in 0..2 {
                    let view = &view_data[views[dir * 2 + f]];
                    for (side, trees) in [&view.by_dst, &view.by_src].into_iter().enumerate() {
                        if let Some(t) = trees.get(id) {
                            for (c, &m) in t.class_min.iter().enumerate() {
                                s[dir * 6 + side * 3 + c] = m.min(u32::from(u16::MAX)) as u16;
                            }
                        }
                    }
                }
                s
            })
            .collect()
    });
    SetSums::new(by_family)
}

/// Renumbers the address sets in the order of the first rule (by rank) naming each, in `sides`,
/// `set_ids` and `members`, and returns `sets_before` (see [`RuleIndex::sets_before`]). A set's trees
/// hold only rules naming it, so none ranks before that first rule; with sorted id lists, a lookup
/// stops at the first set whose first rule cannot beat the answer it has.
fn number_sets_by_first_use(
    order: &[usize],
    sides: &mut [Option<(Side, Side)>],
    set_ids: &mut AHashMap<String, u32>,
    members: &mut [(MemberKey, u32)],
) -> Vec<u32> {
    let n = set_ids.len();
    let mut first = vec![u32::MAX; n];
    for (rank, &i) in order.iter().enumerate() {
        for side in sides[i].iter().flat_map(|&(s, d)| [s, d]) {
            if let Side::Set { id, .. } = side {
                first[id as usize] = first[id as usize].min(rank as u32);
            }
        }
    }
    let mut by_first: Vec<u32> = (0..n as u32).collect();
    by_first.sort_by_key(|&id| (first[id as usize], id));
    let mut renumber = vec![0u32; n];
    for (new, &old) in by_first.iter().enumerate() {
        renumber[old as usize] = new as u32;
    }
    let re = |side: &mut Side| {
        if let Side::Set { id, .. } = side {
            *id = renumber[*id as usize];
        }
    };
    for (s, d) in sides.iter_mut().flatten() {
        re(s);
        re(d);
    }
    for id in set_ids.values_mut() {
        *id = renumber[*id as usize];
    }
    for m in members.iter_mut() {
        m.1 = renumber[m.1 as usize];
    }
    let mut sets_before = Vec::with_capacity(order.len() + 1);
    let mut below = 0;
    for rank in 0..=order.len() as u32 {
        while below < n && first[by_first[below] as usize] < rank {
            below += 1;
        }
        sets_before.push(below as u32);
    }
    sets_before
}

/// A tree entry's check with this bit (and not [`NONE`]) is a lone set-membership test, coded in the
/// check index itself (see [`lone_set_check`]): no [`Check`] to load and call. On the NSX-shaped
/// policy most checks are such (a rule `to not addrset X` otherwise exact decides most lookups).
const SET_CHECK: u32 = 1 << 31;
/// The set is the destination's (else the source's).
const SET_CHECK_DST: u32 = 1 << 30;
/// The test is "not in the set".
const SET_CHECK_NEG: u32 = 1 << 29;
/// Mask of the set id (ids up to this one, exclusive, so that no code is [`NONE`]).
const SET_CHECK_ID: u32 = SET_CHECK_NEG - 1;

/// The inline check code of `chk` (the rule's check past what its view decides) when all it leaves
/// open beyond the box is one side's membership in a set: the box is exact on the other side
/// (`sx` / `dx`), both ports (`spx`, `dpx`) and ICMP.
fn lone_set_check(chk: &Check, sx: bool, dx: bool, spx: bool, dpx: bool) -> Option<u32> {
    if !(spx && dpx && chk.icmp == IcmpMatch::Any) {
        return None;
    }
    let (side, id, negated) = match (chk.src, chk.dst) {
        (Side::Set { id, negated }, _) if dx => (0, id, negated),
        (_, Side::Set { id, negated }) if sx => (SET_CHECK_DST, id, negated),
        _ => return None,
    };
    (id < SET_CHECK_ID).then_some(SET_CHECK | side | if negated { SET_CHECK_NEG } else { 0 } | id)
}

/// Address-dimension spans up to this wide (a /16) make a field "small" for partitioning.
const SMALL_SPAN: u32 = (1 << 16) - 1;
/// A shared tree may hold this many entries per rule (plus [`SLACK`]) before its rules are partitioned.
const REPLICATION: usize = 16;
const SLACK: usize = 256 << 10;

/// The trees for the rules that no address set indexes. One tree when its replication stays modest;
/// otherwise CutSplit's idea: split the rules by which address field is small (destination, else
/// source, else neither) and build a tree per part, so that no tree splits rules along a field where
/// they are wildcards. One tree costs one walk per lookup; three cost three, but stay small.
fn build_shared(arena: &mut Arena, rules: &[Entry], params: Params) -> Vec<Tree> {
    let budget = REPLICATION * rules.len() + SLACK;
    let mark = arena.mark();
    let limit = Params { max_entries: (mark[2] + budget).min(params.max_entries), ..params };
    let whole = arena.build(rules, limit);
    if arena.mark()[2] - mark[2] <= budget {
        return vec![whole];
    }
    arena.rollback(mark);
    let mut parts: Vec<Vec<Entry>> = vec![Vec::new(); 3];
    for e in rules {
        let class = if e.span[1] <= SMALL_SPAN {
            0
        } else if e.span[0] <= SMALL_SPAN {
            1
        } else {
            2
        };
        parts[class].push(*e);
    }
    let mut trees: Vec<Tree> =
        parts.iter().map(|p| arena.build(p, params)).filter(|t| t.min_rank != NONE).collect();
    trees.sort_by_key(|t| t.min_rank);
    trees
}

/// The tree key of `key`.
#[inline]
fn point(key: &L3Key) -> Key {
    let a = |ip: IpAddr| match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => (u128::from(a) >> 96) as u32,
    };
    let (sp, dp) = key.ports.map_or((DOMAIN_HI[2], DOMAIN_HI[3]), |(s, d)| (u32::from(s), u32::from(d)));
    tree::key([a(key.src), a(key.dst), sp, dp, u32::from(key.proto)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classbench::{parse_rules, parse_trace};
    use crate::eval::CompiledRuleSet;

    /// The builds of the lookups this CPU can run: the detected one and every one below it.
    fn runnable() -> Vec<Isa> {
        [Isa::Base, Isa::Avx2, Isa::Avx512].into_iter().filter(|&i| i as u8 <= Isa::detect() as u8).collect()
    }

    /// Every build of the lookups this CPU runs answers as the linear scan does, one key at a time and
    /// in batches (the integration tests only run the build detected on the test machine).
    fn every_build_agrees(set: &RuleSet, addrsets: &[&AddrSet], keys: &[L3Key]) {
        let linear = CompiledRuleSet::compile(set, addrsets).unwrap();
        let want: Vec<Option<usize>> = keys.iter().map(|k| linear.first_match_l3(k)).collect();
        for isa in runnable() {
            let mut c = Classifier::build(set, addrsets).unwrap();
            Arc::get_mut(&mut c.index).unwrap().isa = isa;
            for (k, w) in keys.iter().zip(&want) {
                assert_eq!(c.first_match(k), *w, "{isa:?} {k:?}");
            }
            let mut out = vec![None; keys.len()];
            c.first_match_batch(keys, &mut out);
            assert_eq!(out, want, "{isa:?} batch");
        }
    }

    #[test]
    fn every_build_agrees_on_an_nsx_shaped_policy() {
        let p = synth::nsx(&synth::NsxParams { rules: 800, sets: 200, members: 6_000, seed: 9 });
        let keys = synth::nsx_keys(&p, 3_000, 10);
        every_build_agrees(&p.ruleset, &p.set_refs(), &keys);
    }

    /// The `classify` fuzz target found it: the inbound IPv4 view holds only a set rule, so its shared
    /// tree is empty, and the batch walk of a view's first tree read the empty tree's root.
    #[test]
    fn every_build_agrees_when_a_views_first_tree_is_empty() {
        let mut text = String::from(
            "ruleset mainrs {\n  rule 0 at 1 in protocol any from not addrset s0 to not ip fd00::3:bd accept;\n",
        );
        for i in 1..13 {
            text.push_str(&format!(
                "  rule {i} at {} out inet6 protocol gre from any to any accept;\n",
                i + 1
            ));
        }
        text.push_str("}\naddrset s0 {\n}\n");
        let p = crate::parse_policy(&text).unwrap();
        let key = |dir, src: &str, dst: &str, proto| L3Key {
            dir,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            ports: None,
            icmp: (proto == 1).then_some((4, 2)),
        };
        let keys = [
            key(Direction::In, "10.0.1.232", "10.0.1.66", 1),
            key(Direction::Out, "fd00::1:bd", "fd00::1:bd", 47),
            key(Direction::In, "fd00::1:bd", "fd00::2:1", 6),
        ];
        every_build_agrees(&p.rulesets[0], &p.addrsets.iter().collect::<Vec<_>>(), &keys);
    }

    #[test]
    fn every_build_agrees_on_classbench_sets() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/classbench");
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_else(|e| panic!("{n}: {e}"));
        // ipc_10k has the three CutSplit trees; fw_1k is wildcard-heavy.
        for name in ["cutsplit_ipc_1k", "cutsplit_fw_1k", "cutsplit_ipc_10k"] {
            let set = parse_rules(&read(name), "mainrs").unwrap();
            let trace = match std::fs::read_to_string(dir.join(format!("{name}_trace"))) {
                Ok(t) => parse_trace(&t).unwrap(),
                Err(_) => synth::classbench_trace(&set, 1, 3),
            };
            let keys: Vec<L3Key> = trace.iter().take(20_000).map(|h| h.key()).collect();
            every_build_agrees(&set, &[], &keys);
        }
    }
}
