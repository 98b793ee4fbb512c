//! Replaying a capture file through the engine, with optional policy switches at given frames or times,
//! on one thread or on several workers.
//!
//! With N > 1 workers each worker decides the frames whose connection it owns (the symmetric hash of
//! the address pair, so both directions, ICMP errors and fragments of a flow meet the same worker).
//! The workers share the reading of the mapped capture, a chunk of 4,096 frames at a time: chunks are
//! claimed in order by whichever worker needs one first (up to N chunks past the one it decides
//! next, and no worker more than a few chunks ahead of the slowest: `Turns`), so a worker on a faster
//! CPU walks more of the capture and the slower one only decides. The walker of a chunk reads every
//! frame of it, tells its owner, and sends each other worker its part there (references into the
//! map: no frame is copied), laid out as the worker's batches hold frames, so the worker copies it in
//! runs. A plain TCP frame through one filter goes already read for the lean lane (its `Lean`
//! record), so its owner does not read the frame's bytes, which sit in the walker's cache, a second
//! time. A walker starts its chunk where the walker of the chunk before said that one ended
//! (`ChunkEnds`, pcap files), or reads only the records' lengths up to it (pcapng, or a walker that
//! has not said yet). (Earlier designs: every worker reading every frame cost each about 25 more
//! instructions per capture frame, and was no faster by the clock in the thirteenth session; one
//! worker reading for all was slower by the clock, the other core then reading every frame from the
//! reader's cache; workers walking every Nth chunk in turn were held to the slower CPU's pace. See
//! BENCHMARKS.md.)
//! Policy versions are built before the workers start, so a switch takes effect at exactly the same
//! frame whatever N is. Workers send per-frame events back in batches over a crossbeam channel; the
//! calling thread puts them in frame order. Results do not depend on N (except which frames are
//! refused when a connection limit is reached).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use pktio::capture::{Capture, CaptureError, CaptureFrame, Frames};
use pktio::{LinkType, Packet, ParseError};
use rules::Policy;

use crate::config::{FilterConfig, Snapshot};
use crate::conntrack::Conn;
use crate::counters::FilterCounters;
use crate::filter::{FrameRef, Share, Sink};
use crate::flow::{peek_route_hash, route_hash};
use crate::log::LogRecord;
use crate::table::FlowTable;
use crate::verdict::{Decision, Reason};
use crate::ENTRY_SEGMENT;
use crate::{table, Engine, FrameOutcome, Lean, LoadError, Route, Worker};

/// When a policy switch happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchPoint {
    /// Before the frame with this 1-based number.
    Frame(u64),
    /// Before the first frame whose timestamp is at or after this time (ns since the UNIX epoch).
    Time(u64),
}

/// A policy to put in force part-way through a replay.
#[derive(Debug, Clone)]
pub struct Switch {
    /// When.
    pub at: SwitchPoint,
    /// The new policy.
    pub policy: Policy,
    /// A label for reports (usually the file name).
    pub label: String,
}

/// Something that happened during a replay, in capture order.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A filter decided a frame.
    Decision {
        /// The decision (`decision.frame` is the 1-based frame number).
        decision: &'a Decision,
        /// The deciding filter.
        filter: &'a FilterConfig,
    },
    /// A frame could not be parsed and was dropped.
    Malformed {
        /// 1-based frame number.
        frame: u64,
        /// The parser's reason.
        reason: Reason,
    },
    /// A policy switch took effect before `frame`.
    Switched {
        /// 1-based number of the first frame under the new policy.
        frame: u64,
        /// The engine's new generation.
        generation: u64,
        /// The switch's label.
        label: &'a str,
    },
    /// A packet-log or TERM line.
    Log(&'a LogRecord),
    /// A reply a `reject` rule generated for `frame`.
    Reply {
        /// The frame that was rejected.
        frame: u64,
        /// The reply frame.
        bytes: &'a [u8],
    },
}

/// Totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Frames read.
    pub frames: u64,
    /// Frames every crossed filter passed.
    pub passed: u64,
    /// Frames some crossed filter did not pass.
    pub dropped: u64,
    /// Frames that crossed no filter.
    pub unfiltered: u64,
    /// Frames dropped because they could not be parsed, by reason.
    pub malformed: BTreeMap<&'static str, u64>,
    /// Policy switches applied.
    pub switches: u64,
    /// Workers used.
    pub workers: usize,
    /// Counters per filter slot, added up over workers.
    pub counters: Vec<FilterCounters>,
    /// Connections tracked at the end, per filter slot.
    pub connections: Vec<usize>,
    /// With several workers: a frame by which a table held in parts (a connection limit, the fragment
    /// table) had filled, so that the parts may have decided otherwise than one whole table: the
    /// replay ran again on one worker, and everything not delivered before it stopped is what one
    /// worker decided (the summary is all the second run's). `None` otherwise.
    pub one_worker_from: Option<u64>,
}

impl ReplaySummary {
    fn outcome(&mut self, o: FrameOutcome) {
        match o {
            FrameOutcome::Passed => self.passed += 1,
            FrameOutcome::Dropped => self.dropped += 1,
            FrameOutcome::Unfiltered => self.unfiltered += 1,
            FrameOutcome::Held => {}
        }
    }
}

/// A replay that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture file is unreadable or damaged.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A switched-in policy could not be loaded.
    #[error("policy switch '{label}': {source}")]
    Load {
        /// The switch's label.
        label: String,
        /// Why.
        source: LoadError,
    },
}

/// What a replay reports for one frame (collected only when the caller wants events).
#[derive(Debug, Default)]
struct FrameEvents {
    decisions: Vec<(Decision, Arc<FilterConfig>)>,
    logs: Vec<LogRecord>,
    replies: Vec<(u64, Vec<u8>)>,
    done: Vec<(u64, FrameOutcome)>,
}

/// A sink that records everything for one frame.
struct Collect {
    snap: Arc<Snapshot>,
    events: FrameEvents,
    keep: bool,
}

impl Collect {
    #[inline(never)]
    fn keep_decision(&mut self, d: &Decision, filter: &FilterConfig) {
        let cfg = self.snap.filters.get(d.filter).filter(|f| f.slot == filter.slot).cloned();
        if let Some(cfg) = cfg {
            self.events.decisions.push((*d, cfg));
        }
    }
}

impl Sink for Collect {
    #[inline(always)]
    fn decision(&mut self, d: &Decision, filter: &FilterConfig) {
        if self.keep {
            self.keep_decision(d, filter);
        }
    }
    #[inline(always)]
    fn wants_decisions(&self) -> bool {
        self.keep
    }
    fn log(&mut self, rec: LogRecord) {
        if self.keep {
            self.events.logs.push(rec);
        }
    }
    fn reply(&mut self, frame: u64, bytes: Vec<u8>) {
        if self.keep {
            self.events.replies.push((frame, bytes));
        }
    }
    fn frame_done(&mut self, frame: u64, outcome: FrameOutcome) {
        self.events.done.push((frame, outcome));
    }
}

impl FrameEvents {
    /// Puts what packet clocks reclaimed at one point (from one worker or several: at a frame, or at
    /// the replay's end) in one order whatever the number of workers: fragment drops by filter and
    /// frame, TERM lines by filter and flow.
    fn reclaimed_order(&mut self) {
        self.decisions.sort_by_key(|(d, _)| (d.filter, d.frame));
        self.logs.sort_by_key(|l| match l {
            LogRecord::Term { filter_hash, flow, .. } | LogRecord::Packet { filter_hash, flow, .. } => {
                (*filter_hash, *flow)
            }
        });
    }

    fn append(&mut self, mut other: FrameEvents) {
        self.decisions.append(&mut other.decisions);
        self.logs.append(&mut other.logs);
        self.replies.append(&mut other.replies);
        self.done.append(&mut other.done);
    }
}

fn deliver(ev: &FrameEvents, on_event: &mut impl FnMut(Event<'_>)) {
    for (d, cfg) in &ev.decisions {
        on_event(Event::Decision { decision: d, filter: cfg });
    }
    for l in &ev.logs {
        on_event(Event::Log(l));
    }
    for (frame, bytes) in &ev.replies {
        on_event(Event::Reply { frame: *frame, bytes });
    }
}

/// Replays `capture` through `engine` on `workers` threads (1 = the calling thread), applying
/// `switches` (in the order given) as their points are reached. `on_event` sees every decision, log
/// line, reply and switch in frame order; pass `want_events = false` when only the summary matters.
pub fn replay(
    capture: &Capture,
    engine: &mut Engine,
    switches: &[Switch],
    workers: usize,
    want_events: bool,
    on_event: impl FnMut(Event<'_>),
) -> Result<ReplaySummary, ReplayError> {
    replay_chunked(capture, engine, switches, workers, want_events, CHUNK, on_event)
}

/// [`replay`], with several workers taking turns at walking the capture in chunks of `chunk` frames
/// (1 to 2^20) rather than the usual 4,096 (tests use small chunks, to meet every edge between chunks
/// often).
#[doc(hidden)]
pub fn replay_chunked(
    capture: &Capture,
    engine: &mut Engine,
    switches: &[Switch],
    workers: usize,
    want_events: bool,
    chunk: u64,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<ReplaySummary, ReplayError> {
    let (workers, chunk) = (workers.max(1), chunk.clamp(1, 1 << 20));
    let mut summary = ReplaySummary { workers, ..ReplaySummary::default() };
    // Without `want_events` nothing is delivered, on any number of workers.
    let mut on_event = |ev: Event<'_>| {
        if want_events {
            on_event(ev);
        }
    };
    if workers == 1 {
        replay_inline(capture, engine, switches, want_events, &mut summary, &mut on_event)?;
    } else {
        let how = Parallel { n: workers, chunk };
        replay_parallel(capture, engine, switches, how, want_events, &mut summary, &mut on_event)?;
    }
    Ok(summary)
}

/// Applies the switches due before frame `number` (timestamp `ts`).
fn due_switches(
    engine: &mut Engine,
    switches: &[Switch],
    next: &mut usize,
    number: u64,
    ts: u64,
    summary: &mut ReplaySummary,
    on_event: &mut impl FnMut(Event<'_>),
) -> Result<bool, ReplayError> {
    let mut any = false;
    while let Some(sw) = switches.get(*next) {
        let due = match sw.at {
            SwitchPoint::Frame(f) => number >= f,
            SwitchPoint::Time(t) => ts >= t,
        };
        if !due {
            break;
        }
        let generation = engine
            .load(&sw.policy, ts)
            .map_err(|source| ReplayError::Load { label: sw.label.clone(), source })?;
        summary.switches += 1;
        on_event(Event::Switched { frame: number, generation, label: &sw.label });
        *next += 1;
        any = true;
    }
    Ok(any)
}

fn malformed(summary: &mut ReplaySummary, number: u64, e: &ParseError, on_event: &mut impl FnMut(Event<'_>)) {
    let reason = count_malformed(summary, e);
    on_event(Event::Malformed { frame: number, reason });
}

/// Counts a frame that did not parse, by reason; the reason.
fn count_malformed(counts: &mut ReplaySummary, e: &ParseError) -> Reason {
    let reason = Reason::of_parse_error(e);
    *counts.malformed.entry(reason.as_str()).or_default() += 1;
    reason
}

fn finish_counters(summary: &mut ReplaySummary, workers: &[&Worker]) {
    let mut counters = Vec::new();
    for w in workers {
        w.merge_counters(&mut counters);
    }
    summary.connections =
        (0..counters.len()).map(|slot| workers.iter().map(|w| w.connections(slot)).sum()).collect();
    summary.counters = counters;
}

fn replay_inline(
    capture: &Capture,
    engine: &mut Engine,
    switches: &[Switch],
    want_events: bool,
    summary: &mut ReplaySummary,
    on_event: &mut impl FnMut(Event<'_>),
) -> Result<(), ReplayError> {
    let mut next_switch = 0;
    let fresh = engine.new_worker();
    let mut worker = std::mem::replace(engine.worker(), fresh);
    let mut last_ts = 0;
    let mut collect = Collect { snap: engine.snapshot(), events: FrameEvents::default(), keep: want_events };
    let mut pipe = Pipeline::new();
    let result = (|| {
        let mut frames = capture.frames();
        let pcap = frames.pcap_reader();
        for number in 1.. {
            let Some(frame) = frames.next_from(pcap) else { break };
            let frame = frame?;
            last_ts = frame.ts_nanos;
            let due = switches.get(next_switch).is_some_and(|sw| match sw.at {
                SwitchPoint::Frame(f) => number >= f,
                SwitchPoint::Time(t) => frame.ts_nanos >= t,
            });
            if due {
                pipe.drain(|b, next| {
                    run_batch(&mut worker, b, next, &mut collect, summary, want_events, on_event)
                });
                due_switches(engine, switches, &mut next_switch, number, frame.ts_nanos, summary, on_event)?;
                collect.snap = engine.snapshot();
            }
            summary.frames += 1;
            let f = as_ref(number, &frame);
            pipe.filling.push(&mut worker, &collect.snap, f, frame.wire_len);
            pipe.advance(|b, next| {
                run_batch(&mut worker, b, next, &mut collect, summary, want_events, on_event)
            });
        }
        Ok::<(), ReplayError>(())
    })();
    pipe.drain(|b, next| run_batch(&mut worker, b, next, &mut collect, summary, want_events, on_event));
    let snap = Arc::clone(&collect.snap);
    worker.finish(&snap, last_ts, &mut collect);
    for (_, o) in collect.events.done.drain(..) {
        summary.outcome(o);
    }
    if want_events {
        collect.events.reclaimed_order();
        deliver(&collect.events, on_event);
    }
    finish_counters(summary, &[&worker]);
    *engine.worker() = worker;
    result
}

/// Frames decided together so their connection-table cache misses overlap.
const BATCH_INLINE: usize = 32;
// A batch's lean frames are marked in one 64-bit word.
const _: () = assert!(BATCH_INLINE <= 64 && ENTRY_SEGMENT < 64);

/// Frames parsed in place into reused summary slots and routed as they arrive (starting the load of
/// each one's connection-index line), then decided together so their cache misses overlap.
struct InlineBatch<'a> {
    /// The batch's frames: the first `len` (fixed size, so a frame is written straight into its place).
    frames: Box<[FrameRef<'a>; BATCH_INLINE]>,
    len: usize,
    /// Per frame not on the lean lane: how it was read (a lean frame's slot is left as it was).
    slots: Box<[Read; BATCH_INLINE]>,
    /// Lean frames' records, by position in the batch.
    leans: Box<[Lean; BATCH_INLINE]>,
    /// Bit `i` set: frame `i` is on the lean lane, its record in `leans` (so a run of them is found in
    /// one step, and a lean frame does not write its slot: slots are large, a line or two each).
    lean_mask: u64,
    /// Bit `i` set: the connection entry of frame `i` has been requested ([`InlineBatch::request`]).
    asked: u64,
    /// Parsed frames' summaries, by position in the batch (reused).
    pkts: Vec<Packet>,
    /// The index of the last lean frame's filter's table, as it stood when this batch began to fill
    /// (no frame is decided while a batch fills, so it stays where it is).
    index: Option<(u32, table::IndexView)>,
    /// The route of the last pair of MACs read.
    routes: crate::MacRoutes,
}

/// How a frame of a batch not on the lean lane was read (a lean frame, a plain TCP frame through
/// one filter, has its record in the batch's `leans` and its bit in `lean_mask` instead).
enum Read {
    /// Parsed into the batch's `pkts` at the same position, and routed.
    Parsed(Route),
    /// It did not parse.
    Malformed(ParseError),
    /// A frame another worker decides: this worker only moves its packet clock to the frame's time.
    Tick,
}

impl<'a> InlineBatch<'a> {
    fn new() -> InlineBatch<'a> {
        InlineBatch {
            frames: Box::new(
                [FrameRef { number: 0, link: LinkType::Ethernet, bytes: &[], now_ns: 0 }; BATCH_INLINE],
            ),
            len: 0,
            // Placeholders: a batch reads only the places its frames have filled.
            slots: Box::new(std::array::from_fn(|_| Read::Parsed(Route::default()))),
            leans: Box::new([Lean::PLACEHOLDER; BATCH_INLINE]),
            lean_mask: 0,
            asked: 0,
            pkts: vec![Packet::default(); BATCH_INLINE],
            index: None,
            routes: crate::MacRoutes::default(),
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The batch's frames.
    fn frames(&self) -> &[FrameRef<'a>] {
        &self.frames[..self.len]
    }

    /// Puts `f` in the next place (the batch is never pushed past full); its position.
    #[inline(always)]
    fn put(&mut self, f: FrameRef<'a>) -> usize {
        let i = self.len;
        self.frames[i] = f;
        self.len = i + 1;
        i
    }

    /// Parses and routes one frame into the next slot. A plain TCP frame through one filter takes the
    /// lean lane: routed from its fields, without a [`Packet`].
    #[inline]
    fn push(&mut self, worker: &mut Worker, snap: &Snapshot, f: FrameRef<'a>, wire_len: u32) {
        let i = self.put(f);
        if f.link == LinkType::Ethernet && worker.fast_paths() {
            if let Some(lean) = Lean::read_with(snap, f.bytes, wire_len, &mut self.routes) {
                self.take_lean(worker, snap, i, lean);
                return;
            }
        }
        self.parse_at(i, worker, snap, wire_len);
    }

    /// Takes frame `f` on the lean lane, read as `lean` ([`Lean::read_with`] under `snap`), into the next
    /// slot, requesting its connection-index line.
    #[inline(always)]
    fn push_lean(&mut self, worker: &Worker, snap: &Snapshot, f: FrameRef<'a>, lean: Lean) {
        let i = self.put(f);
        self.take_lean(worker, snap, i, lean);
    }

    /// Frame `i` (put in place) is on the lean lane, read as `lean`: its record, and its index line
    /// requested.
    #[inline(always)]
    fn take_lean(&mut self, worker: &Worker, snap: &Snapshot, i: usize, lean: Lean) {
        self.request_index(worker, snap, lean.filter, lean.hash);
        self.leans[i] = lean;
        self.lean_mask |= 1 << i;
    }

    /// Starts loading the index line of `hash` in the table of filter `filter` (the last filter's
    /// index is kept: most frames of a batch cross the same one).
    #[inline(always)]
    fn request_index(&mut self, worker: &Worker, snap: &Snapshot, filter: u32, hash: u64) {
        let index = match self.index {
            Some((f, index)) if f == filter => Some(index),
            _ => {
                let index = worker.conns_of(snap, filter as usize).map(|c| c.index_view());
                self.index = index.map(|v| (filter, v));
                index
            }
        };
        if let Some(index) = index {
            index.prefetch(hash);
        }
    }

    /// Takes `frames` into the next places: those whose bit is set in `lean_bits` (the first frame's
    /// in bit 0) on the lean lane, read as `leans` has them (by the same position), their index lines
    /// requested. The others' places are filled afterwards ([`InlineBatch::parse_at`],
    /// [`InlineBatch::tick_at`]). The position of the first.
    #[inline]
    fn extend(
        &mut self,
        worker: &Worker,
        snap: &Snapshot,
        frames: &[FrameRef<'a>],
        leans: &[Lean],
        lean_bits: u64,
    ) -> usize {
        let at = self.len;
        let end = at + frames.len();
        self.frames[at..end].copy_from_slice(frames);
        self.leans[at..end].copy_from_slice(leans);
        self.len = end;
        self.lean_mask |= lean_bits << at;
        let mut bits = lean_bits << at;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let (filter, hash) = (self.leans[i].filter, self.leans[i].hash);
            self.request_index(worker, snap, filter, hash);
        }
        at
    }

    /// Parses and routes the frame at place `i` (put there, not on the lean lane; `wire_len` bytes on
    /// the wire).
    fn parse_at(&mut self, i: usize, worker: &Worker, snap: &Snapshot, wire_len: u32) {
        let f = self.frames[i];
        let slot = &mut self.pkts[i];
        self.slots[i] = match pktio::parse_into(f.link, f.bytes, wire_len, slot) {
            Ok(()) => {
                let route = Route::of(snap, slot);
                worker.prefetch_index(snap, &route);
                Read::Parsed(route)
            }
            Err(e) => Read::Malformed(e),
        };
    }

    /// The frame at place `i` (put there) only moves the packet clock.
    fn tick_at(&mut self, i: usize) {
        self.slots[i] = Read::Tick;
    }

    /// Starts loading the connection entries of the batch's frames in `mask` (one bit per frame) not
    /// requested yet (their index lines were requested as the frames came in).
    fn request(&mut self, worker: &Worker, snap: &Snapshot, mask: u64) {
        let filled = if self.len == 64 { u64::MAX } else { (1 << self.len) - 1 };
        let todo = mask & filled & !self.asked;
        if todo == 0 {
            return;
        }
        self.asked |= todo;
        // The lean frames, found from their bits: the table of the last one's filter is kept (most
        // frames of a batch cross the same one).
        let mut last = None;
        let mut leans = todo & self.lean_mask;
        while leans != 0 {
            let lean = &mut self.leans[leans.trailing_zeros() as usize];
            leans &= leans - 1;
            let conns = match last {
                Some((f, conns)) if f == lean.filter => conns,
                _ => {
                    let conns = worker.conns_of(snap, lean.filter as usize);
                    last = Some((lean.filter, conns));
                    conns
                }
            };
            if let Some(conns) = conns {
                lean.prefetch_entry(conns);
            }
        }
        let mut others = todo & !self.lean_mask;
        while others != 0 {
            let slot = &mut self.slots[others.trailing_zeros() as usize];
            others &= others - 1;
            if let Read::Parsed(route) = slot {
                worker.prefetch_entry(snap, route);
            }
        }
    }

    /// [`InlineBatch::request`] for the lean frames in `mask` through filter `filter`, whose table is
    /// `conns` (the others wait for a later request).
    #[inline(always)]
    fn request_with(&mut self, mask: u64, filter: u32, conns: &FlowTable<Conn>) {
        let mut todo = mask & self.lean_mask & !self.asked;
        while todo != 0 {
            let i = todo.trailing_zeros() as usize;
            todo &= todo - 1;
            let lean = &mut self.leans[i];
            if lean.filter == filter {
                lean.prefetch_entry(conns);
                self.asked |= 1 << i;
            }
        }
    }

    /// Decides frame `i`, on the lean lane or from its parsed slot; the parse error when it did not
    /// parse.
    #[inline(always)]
    fn decide(
        &self,
        i: usize,
        worker: &mut Worker,
        snap: &Snapshot,
        sink: &mut impl Sink,
    ) -> Result<Option<FrameOutcome>, &ParseError> {
        let f = self.frames[i];
        if self.lean_mask >> i & 1 == 1 {
            return Ok(Some(worker.process_lean(snap, &self.leans[i], f, sink)));
        }
        match &self.slots[i] {
            Read::Parsed(route) => Ok(Some(worker.process_routed(snap, &self.pkts[i], route, f, sink))),
            Read::Malformed(e) => Err(e),
            Read::Tick => Ok(None),
        }
    }

    /// Frame `i`'s turn in deciding the batch: requests the entries of `next` (the batch after this
    /// one) for frame `i`'s segment, then decides the run of lean frames from frame `i` on that
    /// [`Worker::express_run`] takes, requesting `next`'s entries for each segment the run enters.
    /// With `after`, each decided frame (every one passed) goes to it; without, the caller only
    /// counts them (none released a held fragment). How many it decided (0 when frame `i` is not one).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run_from<S: Sink>(
        &self,
        i: usize,
        next: &mut Option<&mut InlineBatch<'_>>,
        worker: &mut Worker,
        snap: &Snapshot,
        sink: &mut S,
        after: Option<impl FnMut(&mut S, u64)>,
    ) -> usize {
        if let Some(next) = next.as_deref_mut() {
            next.request(worker, snap, segment(i));
        }
        let between = |k: usize, filter, conns: &FlowTable<Conn>| {
            if let Some(next) = next.as_deref_mut() {
                next.request_with(segment(k), filter, conns);
            }
        };
        // The run is among the lean frames from `i` on.
        let end = (i + (self.lean_mask >> i).trailing_ones() as usize).min(self.len);
        let (leans, frames) = (&self.leans[i..end], &self.frames[i..end]);
        match after {
            Some(after) => worker.express_run(snap, leans, frames, i, sink, after, between),
            None => worker.express_run(snap, leans, frames, i, sink, |_, _| {}, between),
        }
    }

    /// Adds a tick at frame `f` (a frame another worker decides) to the next slot.
    fn push_tick(&mut self, f: FrameRef<'a>) {
        let i = self.put(f);
        self.tick_at(i);
    }

    fn clear(&mut self) {
        self.len = 0;
        self.lean_mask = 0;
        self.asked = 0;
        // Deciding may have moved the tables' indexes.
        self.index = None;
    }
}

/// Two batches in a pipeline: while `filling` takes frames (each parsed, routed and its index line
/// requested), the one filled before it waits. Once `filling` is full, the waiting batch is decided,
/// and the full one's connection entries are requested a few frames at a time as it goes
/// ([`ENTRY_SEGMENT`]): its index lines have had a whole batch's time to arrive, and its entries have
/// a whole batch's time too before it is decided in turn.
struct Pipeline<'a> {
    filling: InlineBatch<'a>,
    ready: InlineBatch<'a>,
}

impl<'a> Pipeline<'a> {
    fn new() -> Pipeline<'a> {
        Pipeline { filling: InlineBatch::new(), ready: InlineBatch::new() }
    }

    /// Once `filling` is full: `decide` the waiting batch (requesting the full one's entries on the
    /// way), and the full one takes its place.
    #[inline]
    fn advance(&mut self, decide: impl FnOnce(&mut InlineBatch<'a>, Option<&mut InlineBatch<'a>>)) {
        if self.filling.len() == BATCH_INLINE {
            decide(&mut self.ready, Some(&mut self.filling));
            std::mem::swap(&mut self.filling, &mut self.ready);
        }
    }

    /// Decides every frame held, in frame order (before a policy switch, and at the end).
    fn drain(&mut self, mut decide: impl FnMut(&mut InlineBatch<'a>, Option<&mut InlineBatch<'a>>)) {
        decide(&mut self.ready, Some(&mut self.filling));
        decide(&mut self.filling, None);
    }
}

/// Decides a batch of parsed frames in order (its connection entries requested first, unless they
/// were while the batch before it was decided), requesting the entries of `next`, the batch after it,
/// a segment at a time on the way. Kept out of line: one body, called from several places, with the
/// per-frame path inlined into it.
#[inline(never)]
fn run_batch(
    worker: &mut Worker,
    batch: &mut InlineBatch<'_>,
    mut next: Option<&mut InlineBatch<'_>>,
    collect: &mut Collect,
    summary: &mut ReplaySummary,
    want_events: bool,
    on_event: &mut impl FnMut(Event<'_>),
) {
    let snap = Arc::clone(&collect.snap);
    batch.request(worker, &snap, u64::MAX);
    let mut i = 0;
    while i < batch.len() {
        // A run of the commonest frames, decided with the filter's state looked up once (the next
        // batch's entries requested on the way). Without events they are only counted, together.
        let after = |c: &mut Collect, _| decided(summary, c, FrameOutcome::Passed, want_events, on_event);
        let n = batch.run_from(i, &mut next, worker, &snap, collect, want_events.then_some(after));
        if !want_events {
            debug_assert!(collect.events.done.is_empty());
            summary.passed += n as u64;
        }
        i += n;
        if i == batch.len() {
            break;
        }
        if worker.tick(&snap, batch.frames[i].now_ns, collect) {
            // What the packet clock reclaimed comes before the frame's own events.
            for (_, o) in collect.events.done.drain(..) {
                summary.outcome(o);
            }
            if want_events {
                collect.events.reclaimed_order();
                deliver(&collect.events, on_event);
            }
            collect.events = FrameEvents::default();
        }
        match batch.decide(i, worker, &snap, collect) {
            Ok(None) => {}
            Ok(Some(outcome)) => decided(summary, collect, outcome, want_events, on_event),
            Err(e) => malformed(summary, batch.frames[i].number, e, on_event),
        }
        i += 1;
    }
    if let Some(next) = next {
        next.request(worker, &snap, u64::MAX);
    }
    batch.clear();
}

/// The bits of the [`ENTRY_SEGMENT`] frames of a batch that frame `i` is among.
#[inline(always)]
fn segment(i: usize) -> u64 {
    ((1 << ENTRY_SEGMENT) - 1) << (i / ENTRY_SEGMENT * ENTRY_SEGMENT)
}

/// Accounts a frame [`run_batch`] decided: its outcome, those of the held fragments it released, and
/// with `want_events` its events.
#[inline(always)]
fn decided(
    summary: &mut ReplaySummary,
    collect: &mut Collect,
    outcome: FrameOutcome,
    want_events: bool,
    on_event: &mut impl FnMut(Event<'_>),
) {
    summary.outcome(outcome);
    if !collect.events.done.is_empty() {
        for (_, o) in collect.events.done.drain(..) {
            summary.outcome(o);
        }
    }
    if want_events {
        deliver(&collect.events, on_event);
        collect.events = FrameEvents::default();
    }
}

/// What a worker reports for a batch: per frame, its outcome and events.
struct Done {
    frames: Vec<(u64, FrameOutcome, FrameEvents)>,
    malformed: Vec<(u64, Reason)>,
    /// What this worker's packet clock reclaimed before a frame (which may be another worker's).
    ticks: Vec<(u64, FrameEvents)>,
    /// The sending worker, and the last frame for which it has sent everything (`u64::MAX`: it is done).
    worker: usize,
    upto: u64,
    /// The first frame at which one of the worker's parts of a bounded table may have decided
    /// otherwise than the whole table (`u64::MAX`: none so far; [`crate::filter::Shared::bounded_at`]).
    bounded: u64,
}

impl Done {
    fn new(worker: usize) -> Done {
        Done {
            frames: Vec::new(),
            malformed: Vec::new(),
            ticks: Vec::new(),
            worker,
            upto: 0,
            bounded: u64::MAX,
        }
    }
}

/// How a parallel replay shares the capture out: `n` workers walking chunks of `chunk` frames in turn.
#[derive(Debug, Clone, Copy)]
struct Parallel {
    n: usize,
    chunk: u64,
}

/// A policy version of a parallel replay: in force from frame `from` on.
struct Version {
    from: u64,
    snap: Arc<Snapshot>,
}

/// Parallel replay: every worker walks the mapped capture itself ([`walk`]) and decides only the frames
/// whose flow hash is its own. The policy versions are built up front (a first pass over the record
/// headers finds the frame where each switch is due), so every worker switches at the same frame.
/// Per-frame events go to the calling thread in batches over a crossbeam channel and are put back in
/// frame order.
#[allow(clippy::too_many_arguments)]
fn replay_parallel(
    capture: &Capture,
    engine: &mut Engine,
    switches: &[Switch],
    how: Parallel,
    want_events: bool,
    summary: &mut ReplaySummary,
    on_event: &mut impl FnMut(Event<'_>),
) -> Result<(), ReplayError> {
    // Pass 1: where each switch takes effect, and where the capture ends (or breaks).
    let mut versions = vec![Version { from: 1, snap: engine.snapshot() }];
    let mut switched = Vec::new();
    let mut next_switch = 0;
    let mut read_error = None;
    let mut frames = 0u64;
    // Without switches there is nothing to find out first: the workers' own walks find the end.
    let frames_known = !switches.is_empty();
    if !frames_known {
        frames = u64::MAX;
    }
    for (i, frame) in capture.frames().enumerate().take_while(|_| frames_known) {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        let number = i as u64 + 1;
        frames = number;
        let before = switched.len();
        due_switches(engine, switches, &mut next_switch, number, frame.ts_nanos, summary, &mut |ev| {
            if let Event::Switched { frame, generation, label } = ev {
                switched.push((frame, generation, label.to_string()));
            }
        })?;
        if switched.len() > before {
            versions.push(Version { from: number, snap: engine.snapshot() });
        }
    }
    if frames_known {
        summary.frames = frames;
    }
    let pass = Pass { versions: &versions, switched: &switched, frames, frames_known };
    let before = summary.clone();
    let (bounded, error) = run_lanes(capture, engine, &pass, how, want_events, 0, summary, on_event);
    let error = match bounded {
        // Each worker held its part of every bounded table (connection limits, the fragment table),
        // and from frame `f` on one of them refused something, or came near to, where the whole
        // table might not have: everything before `f` is as one worker decides it, the rest may not
        // be. Run again on one worker, which holds every table whole, and give what it decides from
        // the first frame not delivered yet on (at `f` at the latest). Results then never depend on
        // the number of workers.
        Some(Bounded { at, delivered_through }) => {
            *summary = ReplaySummary { one_worker_from: Some(at), ..before };
            let one = Parallel { n: 1, chunk: how.chunk };
            run_lanes(capture, engine, &pass, one, want_events, delivered_through + 1, summary, on_event).1
        }
        None => error,
    };
    match read_error.or(error) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// What the first pass over the capture found: the policy versions, the switches (frame, generation,
/// label), and the number of frames when it had to count them.
struct Pass<'v> {
    versions: &'v [Version],
    switched: &'v [(u64, u64, String)],
    frames: u64,
    frames_known: bool,
}

/// Where a parallel run stopped being exact: the first frame at which a worker's part of a bounded
/// table may have decided otherwise than the whole table ([`Done::bounded`]), and the last frame whose
/// events went out (every earlier one went out too; all are before `at`).
struct Bounded {
    at: u64,
    delivered_through: u64,
}

/// Runs the workers of a parallel replay over the whole capture, delivering (in frame order) the
/// events of frames from `deliver_from` on and counting every frame into `summary`. Returns where
/// the result stopped being exact (never with one worker; `summary` is then incomplete), and the
/// read error that ended the capture.
#[allow(clippy::too_many_arguments)]
fn run_lanes(
    capture: &Capture,
    engine: &Engine,
    pass: &Pass<'_>,
    Parallel { n, chunk }: Parallel,
    want_events: bool,
    deliver_from: u64,
    summary: &mut ReplaySummary,
    on_event: &mut impl FnMut(Event<'_>),
) -> (Option<Bounded>, Option<CaptureError>) {
    let mut reorder = Reorder::new(n, deliver_from);
    for (frame, generation, label) in pass.switched {
        reorder.switch(*frame, *generation, label.clone());
    }
    let (versions, frames) = (pass.versions, pass.frames);
    let (done_tx, done_rx): (Sender<Done>, Receiver<Done>) = unbounded();
    // Each worker holds its part of every filter's connection limit and of the engine's, so no
    // filter (nor the engine) holds more than its limit in all, and what each admits does not depend
    // on the others' pace.
    let workers: Vec<(Worker, Sender<Done>)> =
        (0..n).map(|index| (engine.part_worker(Share { index, of: n }), done_tx.clone())).collect();
    drop(done_tx);
    // The parts of walked chunks, to each worker from every other: `to[walker][w]` sends into
    // `from[w]`. (A worker holds no sender of its own, so its channel closes once every other
    // worker has stopped.)
    let (txs, from): (Vec<Sender<Walked<'_>>>, Vec<Receiver<Walked<'_>>>) =
        (0..n).map(|_| unbounded()).unzip();
    let to: Vec<Vec<Option<Sender<Walked<'_>>>>> =
        (0..n).map(|walker| (0..n).map(|w| (w != walker).then(|| txs[w].clone())).collect()).collect();
    drop(txs);
    let turns = Turns::new(n);
    let turns = &turns;
    // With one worker every table is whole: nothing it decides can differ.
    let parts = n > 1;
    let mut bounded = u64::MAX;
    let ends = Arc::new(ChunkEnds::new());
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let finished = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(n);
        for (me, ((w, tx), (to, from))) in workers.into_iter().zip(to.into_iter().zip(from)).enumerate() {
            // The lane's batches are allocated on the worker's own thread, so no line of them sits
            // beside another worker's (they are written for every frame).
            let ends = Arc::clone(&ends);
            handles.push(scope.spawn(move || {
                let walker = Walker::new(capture, me, Parallel { n, chunk }, versions, frames, to, ends);
                walk(Lane::new(w, me, versions, want_events, tx), walker, from, turns, stop)
            }));
        }
        for done in done_rx.iter() {
            if parts {
                bounded = bounded.min(done.bounded);
                reorder.hold_from = bounded;
            }
            for (number, reason) in done.malformed {
                reorder.malformed(number, reason);
            }
            if want_events {
                for (number, events) in done.ticks {
                    reorder.reclaimed(number, events);
                }
                for (number, outcome, events) in done.frames {
                    reorder.frame(number, outcome, events);
                }
                reorder.progress(done.worker, done.upto);
                reorder.drain(summary, want_events, on_event, false);
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<_>>()
    });
    if parts {
        bounded = finished.iter().filter_map(|f| f.0.first_bounded()).fold(bounded, u64::min);
        if bounded != u64::MAX {
            return (Some(Bounded { at: bounded, delivered_through: reorder.delivered_through }), None);
        }
    }
    reorder.flush(summary, want_events, on_event);
    let mut ws = Vec::with_capacity(n);
    // What the workers' ends report, together and in the order one worker would give it.
    let mut end = FrameEvents::default();
    let mut read_error = None;
    for (w, counts, tail, seen, error) in finished {
        if !pass.frames_known {
            summary.frames = summary.frames.max(seen);
        }
        if read_error.is_none() {
            read_error = error;
        }
        summary.passed += counts.passed;
        summary.dropped += counts.dropped;
        summary.unfiltered += counts.unfiltered;
        for (k, v) in counts.malformed {
            *summary.malformed.entry(k).or_default() += v;
        }
        end.append(tail);
        ws.push(w);
    }
    if want_events {
        end.reclaimed_order();
        deliver(&end, on_event);
    }
    let refs: Vec<&Worker> = ws.iter().collect();
    finish_counters(summary, &refs);
    (None, read_error)
}

/// What a worker thread ends with: its worker, outcome counts, the events of its finish, the last
/// frame number it saw, and the read error that ended the capture (worker 0's).
type Finished = (Worker, ReplaySummary, FrameEvents, u64, Option<CaptureError>);

/// One worker's side of a parallel replay: its frames go through a [`Pipeline`] under the policy
/// version in force at each frame.
struct Lane<'v, 'a> {
    w: Worker,
    versions: &'v [Version],
    v: usize,
    /// The first frame of the next version (`u64::MAX`: none).
    next_switch: u64,
    collect: Collect,
    pipe: Pipeline<'a>,
    counts: ReplaySummary,
    out: Done,
    want_events: bool,
    done_tx: Sender<Done>,
    /// The start of the packet-clock second of the last frame taken (owned, or a tick; `u64::MAX`:
    /// none yet).
    second_ns: u64,
}

impl<'v, 'a> Lane<'v, 'a> {
    fn new(
        w: Worker,
        me: usize,
        versions: &'v [Version],
        want_events: bool,
        done_tx: Sender<Done>,
    ) -> Lane<'v, 'a> {
        Lane {
            w,
            versions,
            v: 0,
            next_switch: versions.get(1).map_or(u64::MAX, |next| next.from),
            collect: Collect {
                snap: Arc::clone(&versions[0].snap),
                events: FrameEvents::default(),
                keep: want_events,
            },
            pipe: Pipeline::new(),
            counts: ReplaySummary::default(),
            out: Done::new(me),
            want_events,
            done_tx,
            second_ns: u64::MAX,
        }
    }

    /// Before taking frame `number`: decides what is held under the old version if a switch is due.
    #[inline(always)]
    fn switch_before(&mut self, number: u64) {
        if number >= self.next_switch {
            self.switch(number);
        }
    }

    /// Decides what is held under the version in force, then moves to the last version due by frame
    /// `number` (several switches may fall between two frames of this worker).
    #[cold]
    fn switch(&mut self, number: u64) {
        let Lane { w, versions, v, collect, pipe, counts, out, want_events, .. } = self;
        let due = versions.iter().rposition(|ver| ver.from <= number).unwrap_or(*v);
        if due > *v {
            let snap = &versions[*v].snap;
            pipe.drain(|b, next| flush(w, b, next, snap, collect, counts, out, *want_events));
            *v = due;
            collect.snap = Arc::clone(&versions[due].snap);
        }
        self.next_switch = versions.get(*v + 1).map_or(u64::MAX, |next| next.from);
    }

    /// Takes frame `f` (`wire_len` bytes on the wire): parses and routes it into the next slot.
    #[inline(always)]
    fn push(&mut self, f: FrameRef<'a>, wire_len: u32) {
        let Lane { w, versions, v, pipe, .. } = self;
        pipe.filling.push(w, &versions[*v].snap, f, wire_len);
        self.after_push(f);
    }

    /// After frame `f` went into the filling batch: decides the batch before it once that one is full,
    /// moves the lane's second, and sends what is gathered when there is enough.
    #[inline(always)]
    fn after_push(&mut self, f: FrameRef<'a>) {
        let Lane { w, versions, v, collect, pipe, counts, out, want_events, .. } = self;
        let snap = &versions[*v].snap;
        pipe.advance(|b, next| flush(w, b, next, snap, collect, counts, out, *want_events));
        if crate::in_other_second(f.now_ns, self.second_ns) {
            self.second_ns = f.now_ns - f.now_ns % crate::filter::NS;
        }
        if self.want_events && self.out.frames.len() >= 256 {
            self.send();
        }
    }

    /// Takes the frames of a walked chunk, in order. Without a policy switch among them, they go into
    /// the batches in whole runs, as the walker laid them out; otherwise one by one.
    fn take(&mut self, chunk: &Chunk<'a>) {
        let Some(last) = chunk.frames.last() else { return };
        if last.number >= self.next_switch {
            return self.take_each(chunk);
        }
        // (A tick in the second the worker's clock stands at moves nothing: `Worker::tick`.)
        let mut k = 0;
        let mut others = chunk.others.iter().peekable();
        let n = chunk.frames.len();
        while k < n {
            let Lane { w, versions, v, collect, pipe, counts, out, want_events, .. } = self;
            let snap = &versions[*v].snap;
            let batch = &mut pipe.filling;
            let take = (BATCH_INLINE - batch.len()).min(n - k);
            let (frames, leans) = (&chunk.frames[k..k + take], &chunk.leans[k..k + take]);
            let at = batch.extend(w, snap, frames, leans, chunk.lean_bits(k, take));
            while let Some(&&(i, other)) = others.peek() {
                let i = i as usize;
                if i >= k + take {
                    break;
                }
                match other {
                    Other::Own { wire_len } => batch.parse_at(at + i - k, w, snap, wire_len),
                    Other::Tick => batch.tick_at(at + i - k),
                }
                others.next();
            }
            k += take;
            pipe.advance(|b, next| flush(w, b, next, snap, collect, counts, out, *want_events));
            if self.want_events && self.out.frames.len() >= 256 {
                self.send();
            }
        }
        if crate::in_other_second(last.now_ns, self.second_ns) {
            self.second_ns = last.now_ns - last.now_ns % crate::filter::NS;
        }
    }

    /// [`Lane::take`] one frame at a time, each under the version in force at it.
    fn take_each(&mut self, chunk: &Chunk<'a>) {
        let mut others = chunk.others.iter().peekable();
        for (i, (&f, lean)) in chunk.frames.iter().zip(&chunk.leans).enumerate() {
            match others.next_if(|&&(at, _)| at as usize == i) {
                None => {
                    self.switch_before(f.number);
                    self.push_lean(f, lean);
                }
                Some(&(_, Other::Own { wire_len })) => {
                    self.switch_before(f.number);
                    self.push(f, wire_len);
                }
                Some(&(_, Other::Tick)) => self.tick(f),
            }
        }
    }

    /// Takes frame `f`, read for the lean lane as `lean` under the version in force at it.
    #[inline(always)]
    fn push_lean(&mut self, f: FrameRef<'a>, lean: &Lean) {
        let Lane { w, versions, v, pipe, .. } = self;
        pipe.filling.push_lean(w, &versions[*v].snap, f, *lean);
        self.after_push(f);
    }

    /// Frame `f` is another worker's: when it starts another second, this worker's packet clock
    /// still moves to its time ([`Worker::tick`]), in frame order (through the pipeline).
    #[inline(always)]
    fn tick(&mut self, f: FrameRef<'a>) {
        if crate::in_other_second(f.now_ns, self.second_ns) {
            self.push_tick(f);
        }
    }

    #[inline(never)]
    fn push_tick(&mut self, f: FrameRef<'a>) {
        self.switch_before(f.number);
        let Lane { w, versions, v, collect, pipe, counts, out, want_events, .. } = self;
        let snap = &versions[*v].snap;
        pipe.filling.push_tick(f);
        pipe.advance(|b, next| flush(w, b, next, snap, collect, counts, out, *want_events));
        self.second_ns = f.now_ns - f.now_ns % crate::filter::NS;
    }

    /// Every frame up to `number` taken: with events wanted, decides what is held and tells the
    /// calling thread it has everything of this worker's up to there.
    fn walked(&mut self, number: u64) {
        if self.want_events {
            let Lane { w, versions, v, collect, pipe, counts, out, want_events, .. } = self;
            let snap = &versions[*v].snap;
            pipe.drain(|b, next| flush(w, b, next, snap, collect, counts, out, *want_events));
            self.out.upto = number;
            self.send();
        }
    }

    /// Sends what is gathered (and how far it goes) to the calling thread.
    fn send(&mut self) {
        let me = self.out.worker;
        self.out.bounded = self.w.first_bounded().unwrap_or(u64::MAX);
        let full = std::mem::replace(&mut self.out, Done::new(me));
        self.out.upto = full.upto;
        let _ = self.done_tx.send(full);
    }

    fn malformed(&mut self, number: u64, e: &ParseError) {
        report_malformed(&mut self.counts, &mut self.out, number, e);
    }

    /// Decides what is still held and ends the worker's connections at `last_ts`. A worker `stopped`
    /// before the end of the capture reports only how far it got (its run is thrown away).
    fn finish(mut self, seen: u64, last_ts: u64, error: Option<CaptureError>, stopped: bool) -> Finished {
        let Lane { w, versions, v, collect, pipe, counts, out, want_events, .. } = &mut self;
        let snap = &versions[*v].snap;
        pipe.drain(|b, next| flush(w, b, next, snap, collect, counts, out, *want_events));
        let snap = Arc::clone(&collect.snap);
        w.finish(&snap, last_ts, collect);
        for (_, o) in collect.events.done.drain(..) {
            counts.outcome(o);
        }
        let tail = std::mem::take(&mut collect.events);
        if !stopped {
            self.out.upto = u64::MAX;
        }
        self.out.bounded = self.w.first_bounded().unwrap_or(u64::MAX);
        if self.want_events || !self.out.malformed.is_empty() {
            let _ = self.done_tx.send(self.out);
        }
        (self.w, self.counts, tail, seen, error)
    }
}

/// Frames per chunk of a parallel replay. Workers share the reading of the capture by chunks: the
/// walker of a chunk reads each of its frames, tells its owner, and hands every worker its part; each
/// worker then decides its frames of every chunk, in order. (With events wanted, a worker also reports
/// how far it has got after every chunk, so the calling thread can put events in order without
/// holding many.)
const CHUNK: u64 = 4096;

/// What the walker of a chunk hands one worker: its frames of the chunk, and the frames that may start
/// a second, in frame order, laid out as the worker's batches hold them so it copies them in whole
/// runs ([`Lane::take`]).
struct Chunk<'a> {
    /// The frames, as a worker takes them.
    frames: Vec<FrameRef<'a>>,
    /// By the same position: the record of each frame on the lean lane (a placeholder for the rest).
    /// The walker read those frames already ([`Lean::read_with`], under the policy version in force
    /// at each), so the worker does not read their bytes, which sit in the walker's cache, again.
    leans: Vec<Lean>,
    /// Bit `i % 64` of word `i / 64`: frame `i` is on the lean lane.
    lean_bits: Vec<u64>,
    /// The others, by position, in order.
    others: Vec<(u32, Other)>,
    /// The number and timestamp of the chunk's last frame, if it has any.
    last: Option<(u64, u64)>,
    /// The capture ends in this chunk: at its end, at a damaged record, or at the frame limit.
    end: bool,
}

/// A worker's part of walked chunk number `.0`.
type Walked<'a> = (u64, Chunk<'a>);

/// What a worker is to do with a frame of a walked chunk that is not on the lean lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Other {
    /// Decide it, parsing it first (`wire_len` bytes on the wire).
    Own { wire_len: u32 },
    /// Only move the worker's packet clock to its time: the frame is another worker's (or did not
    /// parse) and starts a second for this worker.
    Tick,
}

impl<'a> Chunk<'a> {
    fn with_capacity(frames: usize) -> Chunk<'a> {
        Chunk {
            frames: Vec::with_capacity(frames),
            leans: Vec::with_capacity(frames),
            lean_bits: vec![0; frames.div_ceil(64)],
            others: Vec::new(),
            last: None,
            end: false,
        }
    }

    fn push_lean(&mut self, f: FrameRef<'a>, lean: Lean) {
        let i = self.frames.len();
        self.frames.push(f);
        self.leans.push(lean);
        self.lean_bits[i / 64] |= 1 << (i % 64);
    }

    fn push_other(&mut self, f: FrameRef<'a>, other: Other) {
        let i = self.frames.len();
        self.frames.push(f);
        self.leans.push(Lean::PLACEHOLDER);
        self.others.push((i as u32, other));
    }

    /// The lean bits of frames `at..at + n` (`n` at most 63), frame `at` in bit 0.
    fn lean_bits(&self, at: usize, n: usize) -> u64 {
        let (word, shift) = (at / 64, at % 64);
        let mut bits = self.lean_bits[word] >> shift;
        if shift + n > 64 {
            bits |= self.lean_bits[word + 1] << (64 - shift);
        }
        bits & ((1 << n) - 1)
    }
}

/// Where each walked chunk ended, for the workers that skip it: a ring of 64 words, chunk `c` at
/// `c % 64`, each the byte offset where the next chunk starts (or [`ChunkEnds::ENDED`]: the capture
/// ends in the chunk) below 48 bits and `c / 64` above, to tell it from the ring's other chunks.
/// (The workers are never more than a few chunks apart.) One word each, so a reader never sees half
/// of one chunk's end and half of another's.
struct ChunkEnds {
    ring: Vec<AtomicU64>,
}

impl ChunkEnds {
    const LEN: u64 = 64;
    const OFFSET: u64 = (1 << 48) - 1;
    const ENDED: u64 = ChunkEnds::OFFSET;

    fn new() -> ChunkEnds {
        // Tag 0 with an offset of 0 would claim chunk 0 ended at the file's start: start them all at
        // a tag no chunk has yet.
        ChunkEnds { ring: (0..ChunkEnds::LEN).map(|_| AtomicU64::new(u64::MAX)).collect() }
    }

    /// Chunk `c` ended where the next one starts, at `next` (`None`: the capture ends in it).
    fn publish(&self, c: u64, next: Option<usize>) {
        let offset = match next {
            Some(o) if (o as u64) < ChunkEnds::ENDED => o as u64,
            // An offset past 48 bits is not published: the other workers read their way past.
            Some(_) => return,
            None => ChunkEnds::ENDED,
        };
        let tag = (c / ChunkEnds::LEN) & 0xffff;
        self.ring[(c % ChunkEnds::LEN) as usize].store(tag << 48 | offset, Ordering::Relaxed);
    }

    /// Where chunk `c` ended, if its walker has said so yet: `Some(None)` when the capture ends in it.
    fn get(&self, c: u64) -> Option<Option<usize>> {
        let word = self.ring[(c % ChunkEnds::LEN) as usize].load(Ordering::Relaxed);
        if word >> 48 != (c / ChunkEnds::LEN) & 0xffff || word == u64::MAX {
            return None;
        }
        let offset = word & ChunkEnds::OFFSET;
        Some((offset != ChunkEnds::ENDED).then_some(offset as usize))
    }
}

/// A worker's reader of the capture: it walks the chunks the worker claims ([`Turns`]) and passes over
/// the others: straight to where their walker said the next chunk starts (a pcap file), or reading
/// only each record's length.
struct Walker<'a> {
    reader: Frames<'a>,
    /// Where every worker's walked chunks ended.
    ends: Arc<ChunkEnds>,
    /// The chunk the reader stands at the start of.
    at: u64,
    me: usize,
    n: usize,
    /// Frames per chunk.
    chunk: u64,
    /// No frame after this one is replayed (the capture's end found beforehand, or `u64::MAX`).
    limit: u64,
    /// Where each other worker's parts go, with their chunk (`None` at this worker's own place).
    to: Vec<Option<Sender<Walked<'a>>>>,
    scratch: Packet,
    /// The policy version in force at the frame walked last, and the first frame of the next one.
    version: usize,
    next_version: u64,
    /// The route of the last pair of MACs read for the lean lane.
    routes: crate::MacRoutes,
    /// The read error that ended the capture, when this worker's chunk met it.
    error: Option<CaptureError>,
}

impl<'a> Walker<'a> {
    fn new(
        capture: &'a Capture,
        me: usize,
        Parallel { n, chunk }: Parallel,
        versions: &[Version],
        limit: u64,
        to: Vec<Option<Sender<Walked<'a>>>>,
        ends: Arc<ChunkEnds>,
    ) -> Walker<'a> {
        let reader = capture.frames();
        Walker {
            reader,
            ends,
            at: 0,
            me,
            n,
            chunk,
            limit,
            to,
            scratch: Packet::default(),
            version: 0,
            next_version: versions.get(1).map_or(u64::MAX, |v| v.from),
            routes: crate::MacRoutes::default(),
            error: None,
        }
    }

    /// Walks chunk `k` (claimed by this worker), sends every other worker its part and returns this
    /// worker's. `None` when the capture ends before chunk `k` (whoever walks the chunk it ends in
    /// says so).
    fn walk_chunk(&mut self, k: u64, lane: &mut Lane<'_, 'a>) -> Option<Chunk<'a>> {
        if k > self.at {
            // Chunk `k` starts where `k - 1` ended, once its walker has said where; else a chunk's
            // records on from where `k - 2` ended (said by now, unless a third worker still walks it),
            // or from where this reader stands.
            let placed = match self.ends.get(k - 1) {
                Some(None) => return None,
                Some(Some(offset)) => self.reader.seek(offset),
                None => false,
            };
            if !placed {
                let from = match (k >= self.at + 2).then(|| self.ends.get(k - 2)).flatten() {
                    Some(None) => return None,
                    Some(Some(offset)) if self.reader.seek(offset) => k - 1,
                    _ => self.at,
                };
                let skip = (k - from) * self.chunk;
                if self.reader.skip_frames(skip) < skip {
                    return None;
                }
            }
        }
        let parts = self.walk(k, lane);
        self.at = k + 1;
        let end = parts.first().is_some_and(|p| p.end);
        self.ends.publish(k, (!end).then(|| self.reader.position()));
        let mut mine = None;
        for (part, to) in parts.into_iter().zip(&self.to) {
            match to {
                // A worker gone has stopped for good (at the capture's end, or it panicked).
                Some(to) => {
                    let _ = to.send((k, part));
                }
                None => mine = Some(part),
            }
        }
        mine
    }

    /// Reads chunk `c` (the reader stands at its start): each frame goes to its owner, found from the
    /// IP header alone where [`peek_route_hash`] can, else by parsing (ICMP errors route by the
    /// addresses they quote; ARP and other links by their own). A frame that does not parse is
    /// reported here, by its chunk's walker. Every frame that may start a second goes to every other
    /// worker too, to move its packet clock (the first of the chunk, and each in another second than
    /// the frame before: the workers' clocks stand at the previous frame's second, as each took that
    /// frame or its tick).
    fn walk(&mut self, c: u64, lane: &mut Lane<'_, 'a>) -> Vec<Chunk<'a>> {
        let n = self.n;
        // A frame is in each part once at most: room for a whole chunk never grows.
        let mut parts: Vec<Chunk<'a>> = (0..n).map(|_| Chunk::with_capacity(self.chunk as usize)).collect();
        let (mut last, mut end, mut second) = (None, false, u64::MAX);
        let first = c * self.chunk + 1;
        let pcap = self.reader.pcap_reader();
        let versions = lane.versions;
        let lean_lane = lane.w.fast_paths();
        for number in first..first + self.chunk {
            if number > self.limit {
                end = true;
                break;
            }
            let frame = match self.reader.next_from(pcap) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    self.error = Some(e);
                    end = true;
                    break;
                }
                None => {
                    end = true;
                    break;
                }
            };
            last = Some((number, frame.ts_nanos));
            // A plain TCP frame through one filter is read for the lean lane here, once, under the
            // version in force at it (as its worker would read it).
            let lean = if lean_lane && frame.link == LinkType::Ethernet {
                while number >= self.next_version {
                    self.version += 1;
                    self.next_version = versions.get(self.version + 1).map_or(u64::MAX, |v| v.from);
                }
                let snap = &versions[self.version].snap;
                Lean::read_with(snap, frame.data, frame.wire_len, &mut self.routes)
            } else {
                None
            };
            let owner = match &lean {
                Some(lean) => Some(owner(lean.route_hash(), n)),
                None => match peek_route_hash(frame.link, frame.data) {
                    Some(h) => Some(owner(h, n)),
                    None => {
                        match pktio::parse_into(frame.link, frame.data, frame.wire_len, &mut self.scratch) {
                            Ok(()) => Some(owner(route_hash(&self.scratch), n)),
                            Err(e) => {
                                lane.malformed(number, &e);
                                None
                            }
                        }
                    }
                },
            };
            let f = as_ref(number, &frame);
            if let Some(o) = owner {
                match lean {
                    Some(lean) => parts[o].push_lean(f, lean),
                    None => parts[o].push_other(f, Other::Own { wire_len: frame.wire_len }),
                }
            }
            if crate::in_other_second(frame.ts_nanos, second) {
                second = frame.ts_nanos - frame.ts_nanos % crate::filter::NS;
                for (w, part) in parts.iter_mut().enumerate() {
                    // It moves the packet clock only of the workers whose last frame (of this chunk)
                    // was in another second; the others' is there already. (Where a worker's clock
                    // stands at its first frame of the chunk only the worker knows: that one is
                    // always given.)
                    let stands = part.frames.last().is_some_and(|l| {
                        !crate::in_other_second(frame.ts_nanos, l.now_ns - l.now_ns % crate::filter::NS)
                    });
                    if Some(w) != owner && !stands {
                        part.push_other(f, Other::Tick);
                    }
                }
            }
        }
        for part in &mut parts {
            part.last = last;
            part.end = end;
        }
        parts
    }
}

/// One worker of a parallel replay: walks the chunks of the capture no worker has claimed yet, ahead of
/// deciding (so the others rarely wait for them), and decides its frames of every chunk in order, of
/// the chunks it walked and of those the other workers send.
fn walk<'a>(
    mut lane: Lane<'_, 'a>,
    mut walker: Walker<'a>,
    from: Receiver<Walked<'a>>,
    turns: &Turns,
    stop: &AtomicBool,
) -> Finished {
    let (me, n) = (walker.me, walker.n);
    // However this worker's loop ends, the others no longer wait for it to catch up.
    let _done = turns.done_on_drop(me);
    let (mut seen, mut last_ts) = (0, 0);
    // Parts of chunks walked ahead of deciding them, by chunk: this worker's own walks', and those
    // the others sent.
    let mut held: BTreeMap<u64, Chunk<'a>> = BTreeMap::new();
    let mut past_end = false;
    for c in 0.. {
        turns.wait_for_others(c);
        // Whoever gets there first walks the next chunk no one has claimed, up to `n` chunks past the
        // one it decides next: a worker that decides faster walks more of the capture.
        while !past_end {
            let Some(k) = turns.claim(c + n as u64) else { break };
            match walker.walk_chunk(k, &mut lane) {
                Some(mine) => {
                    held.insert(k, mine);
                }
                // The capture ends before chunk `k`: the chunk it ends in says so.
                None => past_end = true,
            }
        }
        let chunk = loop {
            if let Some(chunk) = held.remove(&c) {
                break Some(chunk);
            }
            match from.recv_timeout(Turns::CHECK) {
                Ok((k, chunk)) => {
                    held.insert(k, chunk);
                }
                // A worker panicked: the chunk may never come (with three or more workers the
                // channel stays open). Joining it reports the panic.
                Err(RecvTimeoutError::Timeout) if turns.failed() => break None,
                Err(RecvTimeoutError::Timeout) => {}
                // Every other worker has stopped (at the capture's end, or it panicked).
                Err(RecvTimeoutError::Disconnected) => break None,
            }
        };
        let Some(chunk) = chunk else { break };
        lane.take(&chunk);
        if let Some((number, ts)) = chunk.last {
            (seen, last_ts) = (number, ts);
        }
        if chunk.end {
            break;
        }
        lane.walked((c + 1) * walker.chunk);
        turns.decided(me, c + 1);
        // Once a part of a bounded table may have decided otherwise than the whole table, the rest
        // of this run is thrown away (the replay runs again on one worker): every worker stops at
        // its next chunk (a worker waiting for a chunk of one that stopped sees its channel close).
        if n > 1 && lane.w.first_bounded().is_some() {
            stop.store(true, Ordering::Relaxed);
        }
        if stop.load(Ordering::Relaxed) {
            return lane.finish(seen, last_ts, walker.error, true);
        }
    }
    lane.finish(seen, last_ts, walker.error, false)
}

/// Who walks which chunk of a parallel replay: chunks are claimed in order, by whichever worker needs
/// one first; and how far each worker has decided, so none runs more than [`Turns::LEAD`] chunks
/// ahead of the slowest (the parts it walks for the others would pile up).
struct Turns {
    /// The next chunk to claim.
    claimed: AtomicU64,
    /// Per worker, the chunks it has decided (`u64::MAX` once it has stopped).
    decided: Vec<AtomicU64>,
    /// A worker panicked.
    failed: AtomicBool,
}

impl Turns {
    /// Chunks a worker may decide ahead of the slowest (below [`ChunkEnds::LEN`], so every chunk
    /// end a walker looks for is still in the ring).
    const LEAD: u64 = 8;

    /// How often a worker waiting for a chunk checks whether another one panicked.
    const CHECK: std::time::Duration = std::time::Duration::from_millis(50);

    fn new(n: usize) -> Turns {
        Turns {
            claimed: AtomicU64::new(0),
            decided: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failed: AtomicBool::new(false),
        }
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Claims the next chunk if it is not past `upto`.
    fn claim(&self, upto: u64) -> Option<u64> {
        let mut k = self.claimed.load(Ordering::Relaxed);
        while k <= upto {
            match self.claimed.compare_exchange_weak(k, k + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(k),
                Err(now) => k = now,
            }
        }
        None
    }

    /// Worker `me` has decided chunks `0..upto`.
    fn decided(&self, me: usize, upto: u64) {
        self.decided[me].store(upto, Ordering::Release);
    }

    /// Waits until no worker is more than [`Turns::LEAD`] chunks behind chunk `c`.
    fn wait_for_others(&self, c: u64) {
        let backoff = crossbeam_utils::Backoff::new();
        while self.decided.iter().any(|d| d.load(Ordering::Acquire).saturating_add(Turns::LEAD) < c) {
            backoff.snooze();
        }
    }

    /// Marks worker `me` stopped when the returned guard drops; and, when it drops because the worker
    /// panics, the replay failed.
    fn done_on_drop(&self, me: usize) -> impl Drop + '_ {
        struct Done<'t>(&'t Turns, usize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.failed.store(true, Ordering::Release);
                }
                self.0.decided(self.1, u64::MAX);
            }
        }
        Done(self, me)
    }
}

/// Frame `number` of the capture as a worker takes it.
#[inline(always)]
fn as_ref<'a>(number: u64, frame: &CaptureFrame<'a>) -> FrameRef<'a> {
    FrameRef { number, link: frame.link, bytes: frame.data, now_ns: frame.ts_nanos }
}

/// The worker (of `n`) that owns frames whose route hash is `h`: a multiply and shift rather than a
/// division, since every worker works this out for every frame.
#[inline]
fn owner(h: u64, n: usize) -> usize {
    ((u128::from(h) * n as u128) >> 64) as usize
}

/// Decides a worker's batch in order as [`run_batch`] does (requesting `next`'s entries on the way),
/// counting outcomes or keeping events.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn flush(
    w: &mut Worker,
    batch: &mut InlineBatch<'_>,
    mut next: Option<&mut InlineBatch<'_>>,
    snap: &Snapshot,
    collect: &mut Collect,
    counts: &mut ReplaySummary,
    out: &mut Done,
    want_events: bool,
) {
    batch.request(w, snap, u64::MAX);
    let mut i = 0;
    while i < batch.len() {
        // A run of the commonest frames, as in `run_batch`.
        let after =
            |c: &mut Collect, number| report(counts, out, c, number, FrameOutcome::Passed, want_events);
        let n = batch.run_from(i, &mut next, w, snap, collect, want_events.then_some(after));
        if !want_events {
            debug_assert!(collect.events.done.is_empty());
            counts.passed += n as u64;
        }
        i += n;
        if i == batch.len() {
            break;
        }
        let number = batch.frames[i].number;
        let at = i;
        i += 1;
        if w.tick(snap, batch.frames[at].now_ns, collect) {
            let reclaimed = std::mem::take(&mut collect.events);
            if want_events {
                out.ticks.push((number, reclaimed));
            } else {
                for (_, o) in reclaimed.done {
                    counts.outcome(o);
                }
            }
        }
        let outcome = match batch.decide(at, w, snap, collect) {
            Ok(Some(outcome)) => outcome,
            Ok(None) => continue,
            Err(e) => {
                report_malformed(counts, out, number, e);
                continue;
            }
        };
        report(counts, out, collect, number, outcome, want_events);
    }
    if let Some(next) = next {
        next.request(w, snap, u64::MAX);
    }
    if let Some(last) = batch.frames().last() {
        out.upto = out.upto.max(last.number);
    }
    batch.clear();
}

/// Accounts frame `number`, which [`flush`] decided: with `want_events`, its outcome and events go to
/// the calling thread; otherwise its outcome and those of the held fragments it released are counted.
#[inline(always)]
fn report(
    counts: &mut ReplaySummary,
    out: &mut Done,
    collect: &mut Collect,
    number: u64,
    outcome: FrameOutcome,
    want_events: bool,
) {
    if want_events {
        out.frames.push((number, outcome, std::mem::take(&mut collect.events)));
    } else {
        counts.outcome(outcome);
        if !collect.events.done.is_empty() {
            for (_, o) in collect.events.done.drain(..) {
                counts.outcome(o);
            }
        }
    }
}

/// Counts a frame that did not parse and reports it for the calling thread.
fn report_malformed(counts: &mut ReplaySummary, out: &mut Done, number: u64, e: &ParseError) {
    let reason = count_malformed(counts, e);
    out.malformed.push((number, reason));
}

/// Puts worker results back in frame order. Each frame has three places, in this order: the switches
/// before it, what packet clocks reclaimed at it (from any worker), and the frame itself (its owner's
/// decisions, or worker 0's report that it did not parse). An entry goes out once every worker has
/// reported everything up to its frame.
struct Reorder {
    /// Per worker, the last frame up to which it has reported everything.
    upto: Vec<u64>,
    /// Pending entries keyed `frame * 3 + place`.
    waiting: BTreeMap<u64, Slot>,
    /// Entries of earlier frames are counted but not delivered (another run delivered them).
    deliver_from: u64,
    /// Entries of this frame and later ones stay pending (they may differ from one worker's).
    hold_from: u64,
    /// Every entry of this frame and earlier ones has gone out.
    delivered_through: u64,
}

enum Slot {
    Frame(FrameOutcome, FrameEvents),
    Malformed(Reason),
    /// The switches before a frame (several may fall due at the same frame), generation and label.
    Switches(Vec<(u64, String)>),
    /// What the workers' packet clocks reclaimed at a frame.
    Reclaimed(FrameEvents),
}

impl Reorder {
    fn new(workers: usize, deliver_from: u64) -> Reorder {
        Reorder {
            upto: vec![0; workers],
            waiting: BTreeMap::new(),
            deliver_from,
            hold_from: u64::MAX,
            delivered_through: 0,
        }
    }

    fn switch(&mut self, frame: u64, generation: u64, label: String) {
        if let Slot::Switches(all) =
            self.waiting.entry(frame * 3).or_insert_with(|| Slot::Switches(Vec::new()))
        {
            all.push((generation, label));
        }
    }

    fn reclaimed(&mut self, frame: u64, events: FrameEvents) {
        let entry =
            self.waiting.entry(frame * 3 + 1).or_insert_with(|| Slot::Reclaimed(FrameEvents::default()));
        if let Slot::Reclaimed(all) = entry {
            all.append(events);
        }
    }

    fn malformed(&mut self, frame: u64, reason: Reason) {
        self.waiting.insert(frame * 3 + 2, Slot::Malformed(reason));
    }

    fn frame(&mut self, number: u64, outcome: FrameOutcome, events: FrameEvents) {
        self.waiting.insert(number * 3 + 2, Slot::Frame(outcome, events));
    }

    /// Worker `worker` has reported everything up to frame `upto`.
    fn progress(&mut self, worker: usize, upto: u64) {
        if let Some(u) = self.upto.get_mut(worker) {
            *u = (*u).max(upto);
        }
    }

    fn flush(&mut self, summary: &mut ReplaySummary, want: bool, on_event: &mut impl FnMut(Event<'_>)) {
        self.drain(summary, want, on_event, true);
    }

    fn drain(
        &mut self,
        summary: &mut ReplaySummary,
        want: bool,
        on_event: &mut impl FnMut(Event<'_>),
        all: bool,
    ) {
        let ready_upto = if all { u64::MAX } else { self.upto.iter().copied().min().unwrap_or(0) };
        // Every worker has reported every frame up to `ready_upto`: all of their entries are here.
        self.delivered_through = self.delivered_through.max(ready_upto.min(self.hold_from.saturating_sub(1)));
        while let Some(entry) = self.waiting.first_entry() {
            let frame = *entry.key() / 3;
            if frame > ready_upto || frame >= self.hold_from {
                break;
            }
            let want = want && frame >= self.deliver_from;
            match entry.remove() {
                Slot::Switches(all) => {
                    if want {
                        for (generation, label) in all {
                            on_event(Event::Switched { frame, generation, label: &label });
                        }
                    }
                }
                Slot::Malformed(reason) => {
                    if want {
                        on_event(Event::Malformed { frame, reason });
                    }
                }
                Slot::Reclaimed(mut events) => {
                    for (_, o) in &events.done {
                        summary.outcome(*o);
                    }
                    if want {
                        events.reclaimed_order();
                        deliver(&events, on_event);
                    }
                }
                Slot::Frame(outcome, events) => {
                    summary.outcome(outcome);
                    for (_, o) in &events.done {
                        summary.outcome(*o);
                    }
                    if want {
                        deliver(&events, on_event);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::{ChunkEnds, Turns};
    use crate::flow::{peek_route_hash, route_hash};
    use crate::{Engine, Lean};

    proptest! {
        /// A walker that reads a frame for the lean lane gives it to the worker the frame's address
        /// pair names, as it gives that connection's other frames (parsed, or peeked at) and the ICMP
        /// errors that quote it.
        #[test]
        fn a_frame_read_for_the_lean_lane_goes_to_the_worker_its_addresses_name(
            a in any::<u32>(), b in any::<u32>(), sport in any::<u16>(), dport in any::<u16>(),
            out in any::<bool>(), flags in any::<u8>(),
        ) {
            use pktio::build::{tcp_v4, Host, TcpSeg};
            let policy = rules::parse_policy(
                "filter vm { vnic mac 02:00:00:00:00:01; ruleset r { rule 1 at 1 inout protocol any from any to any accept; } }",
            )
            .unwrap();
            let snap = Engine::new(&policy).unwrap().snapshot();
            let vm = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::from(a) };
            let far = Host { mac: [2, 0, 0, 0, 9, 9], ip: Ipv4Addr::from(b) };
            let seg = TcpSeg { sport, dport, seq: 1, ack: 2, flags, window: 512, mss: None, payload: &[] };
            let bytes = if out { tcp_v4(&vm, &far, 1, &seg) } else { tcp_v4(&far, &vm, 1, &seg) };
            let lean = Lean::read(&snap, &bytes, bytes.len() as u32);
            prop_assert!(lean.is_some());
            let parsed = pktio::parse_frame(pktio::LinkType::Ethernet, &bytes, bytes.len() as u32).unwrap();
            let hash = lean.unwrap().route_hash();
            prop_assert_eq!(hash, route_hash(&parsed));
            prop_assert_eq!(Some(hash), peek_route_hash(pktio::LinkType::Ethernet, &bytes));
        }
    }

    #[test]
    fn chunks_are_claimed_once_each_in_order_and_never_past_the_limit() {
        let turns = Turns::new(2);
        assert_eq!(turns.claim(1), Some(0));
        assert_eq!(turns.claim(1), Some(1));
        assert_eq!(turns.claim(1), None);
        // Claimed from several threads at once: every chunk once.
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| std::iter::from_fn(|| turns.claim(1001)).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        all.sort_unstable();
        assert_eq!(all, (2..=1001).collect::<Vec<_>>());
    }

    #[test]
    fn a_worker_waits_for_the_slowest_only_beyond_the_lead_and_never_for_one_that_stopped() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let turns = Turns::new(2);
        // Within the lead of a worker that has decided nothing: no wait.
        turns.wait_for_others(Turns::LEAD);
        // Past it: worker 0 waits until worker 1 has decided enough.
        turns.decided(0, Turns::LEAD + 3);
        let released = AtomicBool::new(false);
        std::thread::scope(|s| {
            let fast = s.spawn(|| {
                turns.wait_for_others(Turns::LEAD + 3);
                released.load(Ordering::SeqCst)
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            turns.decided(1, 2);
            std::thread::sleep(std::time::Duration::from_millis(50));
            released.store(true, Ordering::SeqCst);
            turns.decided(1, 3);
            assert!(fast.join().unwrap(), "the fast worker went on before the slow one had decided enough");
        });
        // A worker that stopped (its guard dropped) holds no one back, and has not failed.
        {
            let _guard = turns.done_on_drop(1);
        }
        turns.decided(0, 1_000_000);
        turns.wait_for_others(1_000_000);
        assert!(!turns.failed());
    }

    #[test]
    fn a_worker_that_panics_marks_the_replay_failed_and_holds_no_one_back() {
        let turns = Turns::new(2);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let _guard = turns.done_on_drop(1);
                panic!("a worker's bug");
            });
            assert!(h.join().is_err());
        });
        assert!(turns.failed());
        turns.decided(0, 1_000_000);
        turns.wait_for_others(1_000_000);
    }

    #[test]
    fn chunk_ends_are_told_apart_by_chunk_and_never_claimed_before_they_are_published() {
        let ends = ChunkEnds::new();
        // Nothing published yet: not even chunk 0 (whose tag is 0).
        for c in [0, 1, 63, 64, 1000] {
            assert_eq!(ends.get(c), None, "chunk {c}");
        }
        ends.publish(0, Some(4096));
        ends.publish(1, None);
        assert_eq!(ends.get(0), Some(Some(4096)));
        assert_eq!(ends.get(1), Some(None));
        // The same place in the ring for chunk 64 is not chunk 0's.
        assert_eq!(ends.get(64), None);
        ends.publish(64, Some(0));
        assert_eq!(ends.get(64), Some(Some(0)));
        assert_eq!(ends.get(0), None);
        // An offset that does not fit is not published: the others read their way past.
        ends.publish(2, Some(1 << 48));
        assert_eq!(ends.get(2), None);
    }
}
