//! `engine` owns deciding packets and holding state: per-vNIC filters (L2 rules, connection table, L3
//! rules), the small topology that says which filters a frame crosses (out of the sender's vNIC, in to
//! the receiver's), counters per filter, rule and reason, atomic policy changes, workers, and the
//! capture [`replay`] driver.
//!
//! The policy in force is an immutable [`Snapshot`] behind an `ArcSwap`: a change (a new policy file,
//! address-set members added or removed, across any number of filters) builds the next snapshot aside
//! and swaps it in whole, so every frame is decided wholly by one version. Mutable state (connections,
//! fragments, counters) belongs to a [`Worker`]; each worker owns the connections whose symmetric flow
//! hash maps to it, so the per-frame path takes no lock.
//!
//! It builds on `rules` (what a policy says) and `pktio` (frames in and out) and is driven by the `dfw`
//! command.

pub mod config;
pub mod conntrack;
pub mod counters;
pub mod filter;
pub mod flow;
pub mod frag;
pub mod log;
pub mod replay;
pub mod table;
pub mod tcp;
pub mod verdict;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pktio::packet::ipproto;
use pktio::{Packet, L4};
use rules::{AddrEntry, Direction, Policy};

pub use config::{FilterConfig, Snapshot, Timeouts};
pub use counters::{FilterCounters, RuleCounters};
pub use filter::{FilterState, FrameRef, NullSink, Shared, Sink};
pub use verdict::{ConnState, Decision, Reason, RuleRef, Verdict};

/// A policy that cannot be put in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A rule refers to an address set the filter cannot see.
    #[error("filter '{filter}': {source}")]
    UndefinedSet {
        /// Filter name.
        filter: String,
        /// The unresolved reference.
        source: rules::UndefinedSet,
    },
    /// More than one L3 or L2 rule set applies to a filter.
    #[error("filter '{filter}' has two {kind} rule sets ('{first}' and '{second}'); a filter enforces one of each")]
    TwoRuleSets {
        /// Filter name.
        filter: String,
        /// `L3` or `L2`.
        kind: &'static str,
        /// First set name.
        first: String,
        /// Second set name.
        second: String,
    },
    /// Two filters claim the same vNIC address.
    #[error("filters '{first}' and '{second}' both claim vNIC address {address}")]
    VnicClash {
        /// The filter that claimed it first.
        first: String,
        /// The other.
        second: String,
        /// The address.
        address: String,
    },
    /// An address-set change names a set no filter has.
    #[error("no address set '{0}' in the policy")]
    UnknownSet(String),
    /// An address-set change puts a MAC in an IP set or an IP in a MAC set.
    #[error("address set '{set}' holds {holds} addresses; cannot add {entry}")]
    SetKind {
        /// The set.
        set: String,
        /// `IP` or `MAC`.
        holds: &'static str,
        /// The rejected entry.
        entry: String,
    },
}

/// One part of an atomic policy change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replace the whole policy.
    Policy(Policy),
    /// Add members to every definition of an address set (shared or per filter).
    AddrSetAdd {
        /// Set id.
        set: String,
        /// Members to add (already present ones are ignored).
        entries: Vec<AddrEntry>,
    },
    /// Remove members from every definition of an address set.
    AddrSetDel {
        /// Set id.
        set: String,
        /// Members to remove (absent ones are ignored).
        entries: Vec<AddrEntry>,
    },
}

/// What happened to one frame as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    /// It crossed no filter (neither end is a vNIC of the policy).
    Unfiltered,
    /// Every filter it crossed passed it.
    Passed,
    /// Some filter it crossed did not pass it.
    Dropped,
    /// A fragment held until its first fragment decides it (reported later through the sink).
    Held,
}

impl FrameOutcome {
    /// The outcome of a frame that the only filter on its path decided as `d`.
    #[inline(always)]
    fn of(d: &Decision) -> FrameOutcome {
        if d.verdict.is_drop() {
            FrameOutcome::Dropped
        } else {
            FrameOutcome::Passed
        }
    }
}

/// Where a frame goes and which connection it belongs to, worked out once per frame (and used both to
/// prefetch its connection entry and to decide it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Route {
    /// The filter of the sending vNIC.
    pub sender: Option<usize>,
    /// The filter of the receiving vNIC (unicast destinations).
    pub receiver: Option<usize>,
    /// The destination is broadcast or multicast: every other vNIC receives it.
    pub group: bool,
    /// Flow key, whether the source is the key's `lo` side, and the key's hash.
    pub key: Option<(flow::FlowKey, bool, u64)>,
    /// Where the connection's entry probably is (found while prefetching).
    hint: Option<usize>,
}

impl Route {
    /// The route of `pkt` under `snap`.
    #[inline]
    pub fn of(snap: &Snapshot, pkt: &Packet) -> Route {
        let mac = |m: [u8; 6]| (m != [0; 6]).then_some(m);
        let ip = pkt.ip.as_ref();
        let sender = snap.vnic(mac(pkt.src_mac.0), || ip.map(|ip| ip.src));
        let group = pkt.dst_mac.0[0] & 1 == 1;
        let receiver = if group {
            None
        } else {
            snap.vnic(mac(pkt.dst_mac.0), || ip.map(|ip| ip.dst)).filter(|i| Some(*i) != sender)
        };
        let key = if sender.is_some() || receiver.is_some() || group {
            flow::FlowKey::of_hashed(pkt)
        } else {
            None
        };
        Route { sender, receiver, group, key, hint: None }
    }

    /// The one filter a unicast route crosses, and in which direction; `None` for a broadcast or
    /// multicast route and for one through two filters or none.
    #[inline]
    pub fn single(&self) -> Option<(usize, Direction)> {
        if self.group {
            return None;
        }
        one_filter(self.sender, self.receiver)
    }

    /// What the lean lane reads of a frame's bytes ([`Lean::read`], the one step it takes instead of
    /// [`pktio::PlainTcp::read`] and [`Route::of_plain`]): the route and the segment (without its
    /// options, which the tracker does not read). For tests, which hold it to those two.
    #[doc(hidden)]
    pub fn of_bytes(snap: &Snapshot, data: &[u8], wire_len: u32) -> Option<(Route, pktio::TcpInfo)> {
        Lean::read(snap, data, wire_len).map(|l| (l.route(), l.tcp()))
    }

    /// The route [`Route::of`] gives a plain TCP frame, worked out from its fields, when it is the
    /// common kind: unicast, through exactly one filter, under a snapshot whose few vNICs are all
    /// known by MAC. `None` otherwise (the frame then takes the general path).
    #[inline]
    pub fn of_plain(snap: &Snapshot, p: &pktio::PlainTcp) -> Option<Route> {
        Lean::of(snap, p).map(|l| l.route())
    }
}

/// True when `now_ns` is not in the second that starts at `second_ns` (always when `second_ns` is
/// `u64::MAX`, no second yet, but for a time within the first second of the epoch, when nothing can
/// have expired).
#[inline(always)]
pub(crate) fn in_other_second(now_ns: u64, second_ns: u64) -> bool {
    now_ns.wrapping_sub(second_ns) >= filter::NS
}

/// The filter and direction of a unicast frame from the `sender` filter's vNIC to the `receiver`'s,
/// when exactly one of them is a filter's.
#[inline]
fn one_filter(sender: Option<usize>, receiver: Option<usize>) -> Option<(usize, Direction)> {
    match (sender, receiver) {
        (Some(i), None) => Some((i, Direction::Out)),
        (None, Some(i)) => Some((i, Direction::In)),
        _ => None,
    }
}

/// The frames of a batch decided between two requests for the next batch's connection entries (as
/// many of its frames as that): see [`Worker::express_run`] and the replay's batches. Requesting a
/// whole batch's entries at once asks for more lines than the core can have in flight, and the
/// requests then wait for each other; a few at a time between decisions overlap with the work.
pub(crate) const ENTRY_SEGMENT: usize = 8;

/// A plain TCP frame ([`pktio::PlainTcp`]) on the lean lane: what deciding it takes, worked out when
/// it was read, in one small record (its route is the [`Route::of_plain`] one: exactly one filter).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lean {
    /// The segment's sequence and acknowledgement numbers.
    pub seq: u32,
    pub ack: u32,
    /// Its raw window and payload length.
    pub window: u16,
    pub payload_len: u16,
    /// Its flag byte.
    pub flags: u8,
    /// The connection key (direction-independent), packed as the table holds it.
    pub key: table::PackedKey,
    /// The key's hash.
    pub hash: u64,
    /// Length on the wire.
    pub wire_len: u32,
    /// The one filter the frame crosses.
    pub filter: u32,
    /// Where the connection's entry probably is ([`Lean::NO_HINT`]: not known).
    pub hint: u32,
    /// The source is the key's `lo` side.
    pub from_lo: bool,
    /// `Out` of the sender's vNIC or `In` to the receiver's.
    pub dir: Direction,
}

impl Lean {
    pub(crate) const NO_HINT: u32 = u32::MAX;

    /// The lean record of `p` when [`Route::of_plain`] would route it.
    #[inline]
    pub fn of(snap: &Snapshot, p: &pktio::PlainTcp) -> Option<Lean> {
        let (filter, dir) = mac_route(snap, (config::mac_word(p.dst_mac), config::mac_word(p.src_mac)))?;
        let (src, dst) = ((u32::from(p.src), p.tcp.sport), (u32::from(p.dst), p.tcp.dport));
        let (key, from_lo) = table::PackedKey::v4(pktio::ipproto::TCP, src, dst);
        let hash = key.hash();
        Some(Lean {
            seq: p.tcp.seq,
            ack: p.tcp.ack,
            window: p.tcp.window,
            payload_len: p.tcp.payload_len,
            flags: p.tcp.flags,
            key,
            hash,
            wire_len: p.wire_len,
            filter: u32::try_from(filter).ok()?,
            hint: Lean::NO_HINT,
            from_lo,
            dir,
        })
    }

    /// [`pktio::PlainTcp::read`] and [`Lean::of`] in one step, reading only what the lean lane keeps:
    /// the same frames get the same record (`lean_routes_agree_with_the_general_path` and
    /// `the_lean_lanes_reading_agrees_with_the_plain_tcp_reader` in `engine/tests/concurrency.rs` hold the
    /// two together, through [`Route::of_bytes`]).
    #[inline(always)]
    pub fn read(snap: &Snapshot, data: &[u8], wire_len: u32) -> Option<Lean> {
        Lean::read_with(snap, data, wire_len, &mut MacRoutes::default())
    }

    /// [`Lean::read`], remembering in `routes` the route of the last pair of MACs (most frames in a row
    /// go between the same two).
    #[inline(always)]
    pub(crate) fn read_with(
        snap: &Snapshot,
        data: &[u8],
        wire_len: u32,
        routes: &mut MacRoutes,
    ) -> Option<Lean> {
        const ETH: usize = 14;
        let h = data.first_chunk::<54>()?;
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        // Ethernet II carrying IPv4 with a 20-byte header; not a fragment (MF clear, offset 0); TCP.
        if word(12) >> 8 != 0x00_08_00_45 || word(20) & 0x3fff_00ff != ipproto::TCP.into() {
            return None;
        }
        let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
        let hl = usize::from(h[46] >> 4) * 4;
        // The bytes the frame had on the wire after the link header (as `parse_any` counts them).
        let room = (wire_len as usize).max(data.len()) - ETH;
        if total < 20 + hl || total > room {
            return None;
        }
        match hl {
            20 => {}
            // `NOP NOP TS`, captured in full.
            32 if data.get(54..66).is_some_and(|o| o[..4] == [1, 1, 8, 10]) => {}
            _ => return None,
        }
        // As `config::mac_word` has them.
        let mac = |at: usize| {
            u64::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3], h[at + 4], h[at + 5], 0, 0])
        };
        let pair = (mac(0), mac(6));
        let (filter, dir) = match routes.last {
            Some((generation, p, route)) if p == pair && generation == snap.generation => route,
            _ => {
                let route = mac_route(snap, pair);
                routes.last = Some((snap.generation, pair, route));
                route
            }
        }?;
        let port = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
        let (src, dst) = ((word(26), port(34)), (word(30), port(36)));
        let (key, from_lo) = table::PackedKey::v4(ipproto::TCP, src, dst);
        Some(Lean {
            seq: word(38),
            ack: word(42),
            window: port(48),
            // `total` is at most 65535.
            payload_len: (total - 20 - hl) as u16,
            flags: h[47],
            key,
            hash: key.hash(),
            wire_len,
            filter: u32::try_from(filter).ok()?,
            hint: Lean::NO_HINT,
            from_lo,
            dir,
        })
    }

    /// The segment as the tracker reads it. Its options are left out: the tracker reads only the
    /// window-scale option, which a plain segment never carries (its only option is a timestamp).
    #[inline(always)]
    pub fn tcp(&self) -> pktio::TcpInfo {
        let (lo, hi) = self.key.ports();
        let (sport, dport) = if self.from_lo { (lo, hi) } else { (hi, lo) };
        pktio::TcpInfo {
            sport,
            dport,
            seq: self.seq,
            ack: self.ack,
            flags: self.flags,
            window: self.window,
            payload_len: self.payload_len,
            options: pktio::TcpOptions::default(),
        }
    }

    /// The frame's [`flow::route_hash`] (which worker owns it), from its key's addresses.
    #[inline(always)]
    pub(crate) fn route_hash(&self) -> u64 {
        let (lo, hi) = self.key.addresses();
        flow::route_hash_v4(lo, hi)
    }

    /// Where the connection's entry probably is.
    #[inline(always)]
    pub fn hint(&self) -> Option<usize> {
        (self.hint != Lean::NO_HINT).then_some(self.hint as usize)
    }

    /// [`Worker::prefetch_entry`] for a frame on the lean lane, with its filter's table `conns`.
    #[inline(always)]
    pub(crate) fn prefetch_entry(&mut self, conns: &table::FlowTable<conntrack::Conn>) {
        // Slab positions are below `u32::MAX` (the index keeps each plus one in 32 bits).
        self.hint = conns.prefetch_entry(self.hash).map_or(Lean::NO_HINT, |pos| pos as u32);
    }

    /// A record for places not filled yet (never read).
    pub(crate) const PLACEHOLDER: Lean = Lean {
        seq: 0,
        ack: 0,
        window: 0,
        payload_len: 0,
        flags: 0,
        key: table::PackedKey::PLACEHOLDER,
        hash: 0,
        wire_len: 0,
        filter: 0,
        hint: Lean::NO_HINT,
        from_lo: false,
        dir: Direction::Out,
    };

    /// The same frame's [`Route`].
    pub fn route(&self) -> Route {
        let i = self.filter as usize;
        let (sender, receiver) = if self.dir == Direction::Out { (Some(i), None) } else { (None, Some(i)) };
        Route {
            sender,
            receiver,
            group: false,
            key: Some((self.key.unpack(), self.from_lo, self.hash)),
            hint: None,
        }
    }
}

/// The route of the last pair of MACs [`Lean::read_with`] read, with the generation of the snapshot
/// it was worked out under.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MacRoutes {
    last: Option<MacRoute>,
}

/// A snapshot's generation, a pair of MACs (destination, source) and their route under it.
type MacRoute = (u64, (u64, u64), Option<(usize, Direction)>);

/// The one filter and direction of a unicast frame to MAC `dst` from `src` (as `config::mac_word` has
/// them) under `snap`, when its few vNICs are all known by MAC; `None` otherwise.
#[inline]
fn mac_route(snap: &Snapshot, (dst, src): (u64, u64)) -> Option<(usize, Direction)> {
    let macs = snap.few_macs()?;
    if dst & 1 == 1 {
        return None;
    }
    // An all-zero MAC names no vNIC.
    let vnic = |w: u64| if w == 0 { None } else { macs.iter().find(|(x, _)| *x == w).map(|&(_, i)| i) };
    let sender = vnic(src);
    let receiver = vnic(dst).filter(|i| Some(*i) != sender);
    one_filter(sender, receiver)
}

/// Wraps a sink to catch fragments released during a frame, so they can continue their path.
struct Tap<'s, S> {
    inner: &'s mut S,
    released: Vec<(frag::Held, Decision)>,
}

impl<S: Sink> Sink for Tap<'_, S> {
    fn decision(&mut self, d: &Decision, filter: &FilterConfig) {
        self.inner.decision(d, filter);
    }
    fn wants_decisions(&self) -> bool {
        self.inner.wants_decisions()
    }
    fn log(&mut self, rec: log::LogRecord) {
        self.inner.log(rec);
    }
    fn reply(&mut self, frame: u64, bytes: Vec<u8>) {
        self.inner.reply(frame, bytes);
    }
    fn released(&mut self, held: frag::Held, d: &Decision) {
        self.released.push((held, *d));
    }
    fn frame_done(&mut self, frame: u64, outcome: FrameOutcome) {
        self.inner.frame_done(frame, outcome);
    }
    fn forward_held(&mut self, frame: u64, link: pktio::LinkType, bytes: &[u8]) {
        self.inner.forward_held(frame, link, bytes);
    }
}

/// Most connections across all filters unless configured otherwise.
pub const DEFAULT_TOTAL_CONNECTIONS: usize = 4 << 20;

/// The filters of one host: the policy in force and the control side of changing it.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    snapshot: Arc<ArcSwap<Snapshot>>,
    slots: HashMap<String, usize>,
    shared: Arc<Shared>,
    worker: Worker,
}

impl Engine {
    /// An engine enforcing `policy`, realized at time 0.
    pub fn new(policy: &Policy) -> Result<Engine, LoadError> {
        Engine::with_limit(policy, DEFAULT_TOTAL_CONNECTIONS)
    }

    /// An engine tracking at most `max_total` connections across all filters.
    pub fn with_limit(policy: &Policy, max_total: usize) -> Result<Engine, LoadError> {
        let mut slots = HashMap::new();
        let snap = Snapshot::build(policy, None, &Snapshot::default(), &mut slots, 0)?;
        let shared = Arc::new(Shared::new(filter::Share::WHOLE, max_total, true));
        Ok(Engine {
            policy: policy.clone(),
            snapshot: Arc::new(ArcSwap::from_pointee(snap)),
            slots,
            worker: Worker::new(Arc::clone(&shared)),
            shared,
        })
    }

    /// Puts `policy` in force (see [`Engine::commit`]).
    pub fn load(&mut self, policy: &Policy, now_ns: u64) -> Result<u64, LoadError> {
        self.commit(&[Change::Policy(policy.clone())], now_ns)
    }

    /// Applies `changes` as one transaction: the next snapshot is built aside from all of them and swapped
    /// in whole; on any error nothing changes. Filters keep their connections across changes (matched by
    /// name); filters whose rules or sets changed get a new generation, and their established
    /// connections are re-checked lazily on their next packet (`policyChange revalidate`, the default).
    /// Returns the new engine generation.
    pub fn commit(&mut self, changes: &[Change], now_ns: u64) -> Result<u64, LoadError> {
        let mut policy = self.policy.clone();
        for c in changes {
            apply(&mut policy, c)?;
        }
        let prev = self.snapshot.load_full();
        let mut slots = self.slots.clone();
        let snap = Snapshot::build(&policy, Some(&self.policy), &prev, &mut slots, now_ns)?;
        let generation = snap.generation;
        self.snapshot.store(Arc::new(snap));
        self.policy = policy;
        self.slots = slots;
        Ok(generation)
    }

    /// The policy in force, as a model.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The shared handle workers on other threads load snapshots from.
    pub fn snapshot_handle(&self) -> Arc<ArcSwap<Snapshot>> {
        Arc::clone(&self.snapshot)
    }

    /// The engine generation in force (1 after the first load).
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }

    /// A new worker sharing this engine's connection accounting.
    pub fn new_worker(&self) -> Worker {
        Worker::new(Arc::clone(&self.shared))
    }

    /// A worker that is one of `share.of` replaying together: it holds its part of every filter's
    /// connection limit and of the engine-wide one ([`filter::Share`]), counted on its own, so what
    /// it admits depends only on its own frames (not on how far the others have got) and its
    /// connections, which end with it, never count against this engine's own worker.
    pub fn part_worker(&self, share: filter::Share) -> Worker {
        let fast_paths = self.shared.fast_paths.load(std::sync::atomic::Ordering::Relaxed);
        Worker::new(Arc::new(Shared::new(share, share.limit(self.shared.max_total), fast_paths)))
    }

    /// Switches the in-place fast paths for frames of tracked connections on (the default) or off, for
    /// this engine's workers. Decisions, counters and connection state are the same either way; off,
    /// every frame takes the full path, which is how tests check that.
    pub fn set_fast_paths(&self, on: bool) {
        self.shared.fast_paths.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The engine's own worker, read-only (its tables and counters).
    pub fn worker_ref(&self) -> &Worker {
        &self.worker
    }

    /// The engine's own worker (used by [`Engine::process`]).
    pub fn worker(&mut self) -> &mut Worker {
        &mut self.worker
    }

    /// Decides one frame on the engine's own worker under the snapshot in force.
    pub fn process(&mut self, pkt: &Packet, frame: FrameRef<'_>, sink: &mut impl Sink) -> FrameOutcome {
        let snap = self.snapshot.load_full();
        self.worker.process(&snap, pkt, frame, sink)
    }

    /// Counters of the filter named `name` on the engine's own worker.
    pub fn counters(&self, name: &str) -> Option<&FilterCounters> {
        let slot = *self.slots.get(name)?;
        self.worker.states.get(slot).map(|s| &s.counters)
    }
}

fn apply(policy: &mut Policy, change: &Change) -> Result<(), LoadError> {
    let (set, entries, add) = match change {
        Change::Policy(p) => {
            *policy = p.clone();
            return Ok(());
        }
        Change::AddrSetAdd { set, entries } => (set, entries, true),
        Change::AddrSetDel { set, entries } => (set, entries, false),
    };
    let mut found = false;
    let all = policy.addrsets.iter_mut().chain(policy.filters.iter_mut().flat_map(|f| f.addrsets.iter_mut()));
    for s in all.filter(|s| s.id == *set) {
        found = true;
        let macs = s.entries.iter().any(|e| matches!(e, AddrEntry::Mac(_)));
        let ips = s.entries.iter().any(|e| matches!(e, AddrEntry::Ip(_)));
        for e in entries {
            if add {
                let wrong = match e {
                    AddrEntry::Ip(_) => macs.then_some("MAC"),
                    AddrEntry::Mac(_) => ips.then_some("IP"),
                };
                if let Some(holds) = wrong {
                    let entry = match e {
                        AddrEntry::Ip(n) => n.to_string(),
                        AddrEntry::Mac(m) => m.to_string(),
                    };
                    return Err(LoadError::SetKind { set: set.clone(), holds, entry });
                }
                if !s.entries.contains(e) {
                    s.entries.push(*e);
                }
            } else {
                s.entries.retain(|x| x != e);
            }
        }
        s.generation = Some(s.generation.map_or(1, |g| g + 1));
    }
    if found {
        Ok(())
    } else {
        Err(LoadError::UnknownSet(set.clone()))
    }
}

/// Mutable state of one thread of the dataplane: its share of every filter's connections, fragments
/// and counters, indexed by the filters' stable slots.
#[derive(Debug)]
pub struct Worker {
    states: Vec<FilterState>,
    shared: Arc<Shared>,
    seen_generation: u64,
    /// The start of the packet-clock second this worker's clock is in (`u64::MAX`: none yet).
    clock_ns: u64,
}

impl Worker {
    /// The first frame at which one of this worker's parts of a bounded table may have decided
    /// otherwise than the whole table ([`Shared::bounded_at`]).
    pub(crate) fn first_bounded(&self) -> Option<u64> {
        self.shared.first_bounded()
    }

    fn new(shared: Arc<Shared>) -> Worker {
        Worker { states: Vec::new(), shared, seen_generation: 0, clock_ns: u64::MAX }
    }

    /// Whether the fast paths for tracked frames are on ([`Engine::set_fast_paths`]).
    #[inline]
    pub fn fast_paths(&self) -> bool {
        self.shared.fast_paths.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This worker's state of the filter in `slot`.
    pub fn state(&self, slot: usize) -> Option<&FilterState> {
        self.states.get(slot)
    }

    /// Brings per-filter state in line with a newer snapshot: room for new filters, and the state of
    /// filters that left the policy flushed.
    #[inline]
    fn sync(&mut self, snap: &Snapshot) {
        if snap.generation != self.seen_generation {
            self.resync(snap);
        }
    }

    #[cold]
    fn resync(&mut self, snap: &Snapshot) {
        self.seen_generation = snap.generation;
        let max_slot = snap.filters.iter().map(|f| f.slot + 1).max().unwrap_or(0);
        while self.states.len() < max_slot {
            self.states.push(FilterState::new(config::DEFAULT_FILTER_CONNECTIONS, self.shared.share));
        }
        for slot in 0..self.states.len() {
            if !snap.filters.iter().any(|f| f.slot == slot) && !self.states[slot].conns.is_empty() {
                // The filter is gone: its connections end. Without its config there is nothing to log.
                let empty = FilterState::new(config::DEFAULT_FILTER_CONNECTIONS, self.shared.share);
                let mut old = std::mem::replace(&mut self.states[slot], empty);
                old.conns.drain(|_| {
                    self.shared.total.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                });
                self.states[slot].counters = old.counters;
            }
        }
        // Each filter's connections keep 16 bits of the generation they were checked against.
        for cfg in snap.filters.iter() {
            self.states[cfg.slot].advance_generation(cfg.generation);
        }
    }

    /// Decides one frame under `snap`: out of the sender's filter, then in to the receiver's (every
    /// other vNIC for a broadcast or multicast destination). Fragments held along the way and released
    /// by this frame continue their path here and are reported through [`Sink::frame_done`].
    pub fn process(
        &mut self,
        snap: &Snapshot,
        pkt: &Packet,
        frame: FrameRef<'_>,
        sink: &mut impl Sink,
    ) -> FrameOutcome {
        let _ = self.tick(snap, frame.now_ns, sink);
        let route = Route::of(snap, pkt);
        self.process_routed(snap, pkt, &route, frame, sink)
    }

    /// Moves this worker's packet clock to `now_ns`. When that enters another second, every filter
    /// reclaims what has expired by then ([`filter::FilterState::tick`]), in filter order: timers count
    /// whole seconds, so reclaiming happens at the first frame of each second (a frame of the
    /// connection itself finds it expired earlier, on lookup). [`Worker::process`] does it before each
    /// frame; a replay before every frame of the capture (a worker of several also at frames it does
    /// not own that start a second), so what expires is reclaimed at the same frame whatever the
    /// number of workers. True when something was reclaimed (and reported to `sink`).
    #[inline]
    pub fn tick(&mut self, snap: &Snapshot, now_ns: u64, sink: &mut impl Sink) -> bool {
        if !in_other_second(now_ns, self.clock_ns) {
            return false;
        }
        self.clock_ns = now_ns - now_ns % filter::NS;
        let now_s = filter::secs(now_ns);
        let due = self.states.iter().any(|s| s.due(now_s));
        if due {
            self.tick_due(snap, now_ns, sink);
        }
        due
    }

    #[cold]
    #[inline(never)]
    fn tick_due(&mut self, snap: &Snapshot, now_ns: u64, sink: &mut impl Sink) {
        let mut tap = Tap { inner: sink, released: Vec::new() };
        for (i, cfg) in snap.filters.iter().enumerate() {
            if let Some(state) = self.states.get_mut(cfg.slot) {
                state.tick(cfg, i, &self.shared, now_ns, &mut tap);
            }
        }
        // Held fragments dropped here are done.
        for (h, _) in tap.released {
            tap.inner.frame_done(h.frame, FrameOutcome::Dropped);
        }
    }

    /// [`Worker::process`] with the frame's [`Route`] already worked out (by [`Route::of`]).
    #[inline(always)]
    pub fn process_routed(
        &mut self,
        snap: &Snapshot,
        pkt: &Packet,
        route: &Route,
        frame: FrameRef<'_>,
        sink: &mut impl Sink,
    ) -> FrameOutcome {
        self.sync(snap);
        if let Some(outcome) =
            filter::Seen::of(pkt).and_then(|seen| self.try_fast(snap, seen, route, frame, sink))
        {
            return outcome;
        }
        self.process_full(snap, pkt, route, frame, sink)
    }

    /// [`Worker::process_routed`] for a plain TCP frame on the lean lane ([`Lean`]): decided in place
    /// from its record when the fast path applies; otherwise its [`Packet`] is built and it takes the
    /// full path.
    #[inline(always)]
    pub(crate) fn process_lean(
        &mut self,
        snap: &Snapshot,
        lean: &Lean,
        frame: FrameRef<'_>,
        sink: &mut impl Sink,
    ) -> FrameOutcome {
        self.sync(snap);
        if self.fast_paths() {
            // (The batch has tried this frame's commonest step already, in a run: `express_run`.)
            let i = lean.filter as usize;
            let l4 = L4::Tcp(lean.tcp());
            let seen = filter::Seen { l4: &l4, wire_len: lean.wire_len, family: 0 };
            let keyed = (table::Probe::Packed(lean.key), lean.from_lo, lean.hash);
            let missed = match self.fast_one(snap, i, lean.dir, seen, keyed, lean.hint(), frame, sink) {
                Ok(outcome) => return outcome,
                Err(missed) => missed,
            };
            // A frame of no tracked connection: the rules, in place.
            let cfg = &snap.filters[i];
            let state = &mut self.states[cfg.slot];
            if let Some(d) = state.decide_new(cfg, i, &self.shared, lean, missed, frame, sink) {
                return FrameOutcome::of(&d);
            }
        }
        self.plain_full(snap, lean.wire_len, &lean.route(), frame, sink)
    }

    /// Decides, in order, the leading frames of `leans` (lean records) with their `frames` that the
    /// fast path's commonest step takes ([`filter::FilterState::decide_ack`]: a plain ACK on an
    /// established connection, through the same filter as the first, in the second the worker's
    /// clock stands at), calling `after` once each is decided (each passed); how many it decided. The
    /// filter's state is looked up once for the whole run rather than once per frame, and its counts
    /// are added at the run's end. Exactly what [`Worker::tick`] and [`Worker::process_lean`] do frame
    /// by frame for these frames: no tick is due within the clock's second, and the snapshot is the
    /// same throughout. `base` is the first frame's place in its batch; before deciding the frame at
    /// each multiple of [`ENTRY_SEGMENT`], `between` gets that place, the filter and its table (to
    /// request the next batch's entries a few at a time; it changes nothing here).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn express_run<S: Sink>(
        &mut self,
        snap: &Snapshot,
        leans: &[Lean],
        frames: &[FrameRef<'_>],
        base: usize,
        sink: &mut S,
        mut after: impl FnMut(&mut S, u64),
        mut between: impl FnMut(usize, u32, &table::FlowTable<conntrack::Conn>),
    ) -> usize {
        let (Some(first), Some(first_frame)) = (leans.first(), frames.first()) else { return 0 };
        // Only a plain ACK can start a run (`decide_ack` takes nothing else): a connection's first
        // frames are passed over before any set-up.
        if !tcp::plain_ack(first.flags) {
            return 0;
        }
        self.sync(snap);
        if !self.fast_paths() {
            return 0;
        }
        let f = first.filter;
        let cfg = &snap.filters[f as usize];
        if !filter::keeps_tracked(cfg) {
            return 0;
        }
        let clock = self.clock_ns;
        let Some(state) = self.states.get_mut(cfg.slot) else { return 0 };
        // Every frame of a run is in the second the clock stands at, and none is in the last second
        // of the clock's range: then each one's packet-clock second is the first frame's. (The clock
        // is at a second's start, `clock` to `clock + NS` then does not wrap and the seconds agree; or
        // it is `u64::MAX`, no second yet, and each frame is within the first second of the epoch.)
        let now_s = filter::secs(first_frame.now_ns);
        let mut run = counters::TrackedRun::default();
        let mut n = 0;
        for (lean, frame) in leans.iter().zip(frames) {
            if lean.filter != f
                || in_other_second(frame.now_ns, clock)
                || frame.now_ns > u64::MAX - filter::NS
            {
                break;
            }
            if (base + n).is_multiple_of(ENTRY_SEGMENT) {
                between(base + n, f, &state.conns);
            }
            if !state.decide_ack(cfg, f as usize, lean, (frame.number, now_s), &mut run, sink) {
                break;
            }
            after(sink, frame.number);
            n += 1;
        }
        if n != 0 {
            state.counters.add_run(&run);
        }
        n
    }

    /// A plain TCP frame the fast path did not decide: parsed again (its bytes are still in cache),
    /// then the full path.
    #[inline(never)]
    fn plain_full(
        &mut self,
        snap: &Snapshot,
        wire_len: u32,
        route: &Route,
        frame: FrameRef<'_>,
        sink: &mut impl Sink,
    ) -> FrameOutcome {
        match pktio::parse_frame(frame.link, frame.bytes, wire_len) {
            Ok(pkt) => self.process_full(snap, &pkt, route, frame, sink),
            Err(_) => {
                // Not reached: the same bytes were read as a plain TCP frame when it was routed.
                debug_assert!(false, "frame {} no longer parses", frame.number);
                FrameOutcome::Dropped
            }
        }
    }

    /// Most frames cross one filter on a tracked connection: decided in place, without the
    /// bookkeeping for multi-filter paths and released fragments. `None`, having changed nothing,
    /// when the fast path does not apply.
    #[inline(always)]
    fn try_fast(
        &mut self,
        snap: &Snapshot,
        seen: filter::Seen<'_>,
        route: &Route,
        frame: FrameRef<'_>,
        sink: &mut impl Sink,
    ) -> Option<FrameOutcome> {
        if !self.fast_paths() {
            return None;
        }
        let (i, dir) = route.single()?;
        let (key, from_lo, hash) = route.key.as_ref()?;
        // The hint is the entry's place in this filter's table (the route's only filter).
        self.fast_one(snap, i, dir, seen, (table::Probe::Full(key), *from_lo, *hash), route.hint, frame, sink)
            .ok()
    }

    /// The fast path through filter `i` alone ([`FilterState::decide_fast`]), as a frame outcome.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fast_one(
        &mut self,
        snap: &Snapshot,
        i: usize,
        dir: Direction,
        seen: filter::Seen<'_>,
        keyed: (table::Probe<'_>, bool, u64),
        hint: Option<usize>,
        frame: FrameRef<'_>,
        sink: &mut impl Sink,
    ) -> Result<FrameOutcome, filter::Missed> {
        let cfg = &snap.filters[i];
        let d = self.states[cfg.slot].decide_fast(cfg, i, seen, keyed, hint, dir, frame, sink)?;
        Ok(FrameOutcome::of(&d))
    }

    /// Every frame the fast path did not decide: each filter on its path in full, then the held
    /// fragments this frame released.
    #[inline(never)]
    fn process_full(
        &mut self,
        snap: &Snapshot,
        pkt: &Packet,
        route: &Route,
        frame: FrameRef<'_>,
        sink: &mut impl Sink,
    ) -> FrameOutcome {
        let mut tap = Tap { inner: sink, released: Vec::new() };
        // Through one filter, the caller has just tried that filter's fast path ([`Worker::try_fast`],
        // or the lean lane's same step), which changed nothing: no need to try it again.
        let tried = self.fast_paths() && route.single().is_some() && route.key.is_some();
        let outcome = self.path(snap, pkt, route, frame, true, !tried, &mut tap);
        // Held fragments released by this frame: those passed by their sender's filter go on to the
        // receiver's; the rest are done.
        while let Some((h, d)) = tap.released.pop() {
            let next = if d.dir == Direction::Out && !d.verdict.is_drop() {
                match pktio::parse_frame(h.link, &h.bytes, h.wire_len) {
                    Ok(p) => {
                        let f =
                            FrameRef { number: h.frame, link: h.link, bytes: &h.bytes, now_ns: frame.now_ns };
                        let r = Route::of(snap, &p);
                        self.path(snap, &p, &r, f, false, true, &mut tap)
                    }
                    Err(_) => FrameOutcome::Dropped,
                }
            } else if d.verdict.is_drop() {
                FrameOutcome::Dropped
            } else {
                FrameOutcome::Passed
            };
            if next != FrameOutcome::Held {
                if matches!(next, FrameOutcome::Passed | FrameOutcome::Unfiltered) {
                    tap.inner.forward_held(h.frame, h.link, &h.bytes);
                }
                tap.inner.frame_done(h.frame, next);
            }
        }
        outcome
    }

    /// Starts loading the index line of `route`'s connection, as soon as the frame is routed; the
    /// entry follows once the line has had time to arrive ([`Worker::prefetch_entry`]). Together
    /// they let a batch's cache misses overlap instead of each stalling its frame.
    /// (No [`Worker::sync`] first: a filter this worker has no state for yet has nothing to load.)
    #[inline]
    pub fn prefetch_index(&self, snap: &Snapshot, route: &Route) {
        if let (Some(i), Some((_, _, hash))) = (route.sender.or(route.receiver), &route.key) {
            if let Some(conns) = self.conns_of(snap, i) {
                conns.prefetch(*hash);
            }
        }
    }

    /// Starts loading the entry of one route's connection, whose index line was requested earlier
    /// ([`Worker::prefetch_index`]), and remembers where it is.
    #[inline]
    pub(crate) fn prefetch_entry(&self, snap: &Snapshot, r: &mut Route) {
        if let (Some(i), Some((_, _, hash))) = (r.sender.or(r.receiver), &r.key) {
            if let Some(conns) = self.conns_of(snap, i) {
                r.hint = conns.prefetch_entry(*hash);
            }
        }
    }

    /// This worker's connection table for filter `i` of `snap`, if it has one yet.
    #[inline]
    pub(crate) fn conns_of(&self, snap: &Snapshot, i: usize) -> Option<&table::FlowTable<conntrack::Conn>> {
        self.states.get(snap.filters[i].slot).map(|s| &s.conns)
    }

    #[allow(clippy::too_many_arguments)]
    fn path<S: Sink>(
        &mut self,
        snap: &Snapshot,
        pkt: &Packet,
        route: &Route,
        frame: FrameRef<'_>,
        out_stage: bool,
        try_fast: bool,
        sink: &mut S,
    ) -> FrameOutcome {
        let mut crossed = !out_stage;
        let mut held = false;
        let sender = route.sender;
        let key = route.key.as_ref();
        if let (Some(i), true) = (sender, out_stage) {
            crossed = true;
            let cfg = &snap.filters[i];
            let state = &mut self.states[cfg.slot];
            match state.decide(cfg, i, &self.shared, pkt, key, Direction::Out, frame, try_fast, sink) {
                None => return FrameOutcome::Held,
                Some(d) if d.verdict.is_drop() => return FrameOutcome::Dropped,
                Some(_) => {}
            }
        }
        let mut dropped = false;
        let mut receive = |i: usize| {
            crossed = true;
            let cfg = &snap.filters[i];
            let state = &mut self.states[cfg.slot];
            match state.decide(cfg, i, &self.shared, pkt, key, Direction::In, frame, try_fast, sink) {
                None => held = true,
                Some(d) => dropped |= d.verdict.is_drop(),
            }
        };
        if route.group {
            (0..snap.filters.len()).filter(|i| Some(*i) != sender).for_each(&mut receive);
        } else if let Some(i) = route.receiver {
            receive(i);
        }
        match (crossed, dropped, held) {
            (false, _, _) => FrameOutcome::Unfiltered,
            (_, true, _) => FrameOutcome::Dropped,
            (_, _, true) => FrameOutcome::Held,
            _ => FrameOutcome::Passed,
        }
    }

    /// Ends a replay at packet-clock time `now_ns`: every connection whose timer has run out by then is
    /// reclaimed (counted `expired`, TERM lines for logged ones), as the clock would have at a frame of
    /// that time, and every held fragment whose first fragment never came is dropped (`fragment`).
    pub fn finish(&mut self, snap: &Snapshot, now_ns: u64, sink: &mut impl Sink) {
        let mut tap = Tap { inner: sink, released: Vec::new() };
        for (i, cfg) in snap.filters.iter().enumerate() {
            if let Some(state) = self.states.get_mut(cfg.slot) {
                state.tick(cfg, i, &self.shared, now_ns, &mut tap);
                for h in state.frags.drain() {
                    state.drop_held(cfg, i, h, now_ns, &mut tap);
                }
            }
        }
        for (h, _) in tap.released {
            tap.inner.frame_done(h.frame, FrameOutcome::Dropped);
        }
    }

    /// Adds this worker's counters into `into`, by slot.
    pub fn merge_counters(&self, into: &mut Vec<FilterCounters>) {
        if into.len() < self.states.len() {
            into.resize_with(self.states.len(), FilterCounters::default);
        }
        for (slot, s) in self.states.iter().enumerate() {
            into[slot].merge(&s.counters);
        }
    }

    /// Removes every connection and held fragment this worker has for filter `index` of `snap`
    /// (TERM lines for logged connections; `vsipioctl`'s flow flush); returns how many connections went.
    pub fn flush_filter(
        &mut self,
        snap: &Snapshot,
        index: usize,
        now_ns: u64,
        sink: &mut impl Sink,
    ) -> usize {
        self.sync(snap);
        let Some(cfg) = snap.filters.get(index) else { return 0 };
        let Some(state) = self.states.get_mut(cfg.slot) else { return 0 };
        let n = state.conns.len();
        state.flush(cfg, index, &self.shared, now_ns, sink);
        n
    }

    /// Connections this worker tracks for the filter in `slot`.
    pub fn connections(&self, slot: usize) -> usize {
        self.states.get(slot).map_or(0, |s| s.conns.len())
    }
}
