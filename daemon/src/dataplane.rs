//! The frame path: one thread waits on every port with `poll(2)`, and for each received batch
//!
//! ```text
//!  port RX batch ─► parse ─► Worker::process (out of the sender's filter, in to the receiver's)
//!        │                        │ passed / unfiltered            │ dropped: counted, gone
//!        │                        ▼                                ▼
//!        │                  switch: learn source, forward to the learned port or flood ─► port TX
//!        └─ reject replies (RST / ICMP unreachable) go back out the port the frame came in on
//! ```
//!
//! This first version runs one dataplane thread owning one [`engine::Worker`], so every connection's
//! both directions meet the same state. The policy comes from the engine's snapshot handle, loaded once
//! per batch (a commit on the control thread takes effect at the next batch). Views that need the
//! worker's connections or counters are answered between batches: the control thread sends a [`Job`]
//! over a channel and the dataplane runs it, so the per-frame path takes no lock.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use engine::log::LogRecord;
use engine::{Decision, FilterConfig, FrameOutcome, FrameRef, Sink, Snapshot, Worker};
use pktio::{Batch, Frame, LinkType};

use crate::port::{recv, Port, PortStats};
use crate::switch::{Forward, Switch};

/// What a [`Job`] sees: the dataplane's state between two batches.
pub struct DpView<'a> {
    /// The worker holding every connection and counter.
    pub worker: &'a mut Worker,
    /// The snapshot in force.
    pub snap: &'a Snapshot,
    /// Per-port counters, in configuration order.
    pub ports: Vec<(String, PortStats)>,
    /// The MAC table.
    pub switch: &'a Switch,
    /// Now, ns since the UNIX epoch.
    pub now_ns: u64,
    /// Sink for by-products of the job (TERM lines of flushed connections).
    pub sink: &'a mut dyn FnMut(LogRecord),
}

impl std::fmt::Debug for DpView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpView").field("ports", &self.ports).field("now_ns", &self.now_ns).finish()
    }
}

/// Work the control thread asks the dataplane to do between batches.
pub type Job = Box<dyn FnOnce(&mut DpView<'_>) + Send>;

/// The dataplane thread's state.
pub struct Dataplane {
    ports: Vec<Port>,
    worker: Worker,
    snapshot: Arc<ArcSwap<Snapshot>>,
    switch: Switch,
    jobs: Receiver<Job>,
    stop: Arc<AtomicBool>,
    log: Option<BufWriter<File>>,
    frames: u64,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("ports", &self.ports.len()).field("frames", &self.frames).finish()
    }
}

/// Collects a frame's by-products.
struct DpSink<'a> {
    replies: &'a mut Vec<Vec<u8>>,
    /// Fragments that were held for their first fragment and have now passed every filter.
    released: &'a mut Vec<(LinkType, Vec<u8>)>,
    log: &'a mut Option<BufWriter<File>>,
}

impl Sink for DpSink<'_> {
    fn decision(&mut self, _d: &Decision, _filter: &FilterConfig) {}
    fn log(&mut self, rec: LogRecord) {
        write_log(self.log, &rec);
    }
    fn reply(&mut self, _frame: u64, bytes: Vec<u8>) {
        self.replies.push(bytes);
    }
    fn frame_done(&mut self, _frame: u64, _outcome: FrameOutcome) {}
    fn forward_held(&mut self, _frame: u64, link: LinkType, bytes: &[u8]) {
        self.released.push((link, bytes.to_vec()));
    }
}

fn write_log(log: &mut Option<BufWriter<File>>, rec: &LogRecord) {
    if let Some(w) = log {
        if let Err(e) = writeln!(w, "{rec}") {
            tracing::warn!(error = %e, "packet log write failed; packet logging stops");
            *log = None;
        }
    }
}

/// Ns since the UNIX epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The port `j` when `rx` (index `i`) was split out of the list as `before ++ [rx] ++ after`.
fn other<'p>(before: &'p mut [Port], after: &'p mut [Port], i: usize, j: usize) -> Option<&'p mut Port> {
    if j < i {
        before.get_mut(j)
    } else {
        after.get_mut(j.checked_sub(i + 1)?)
    }
}

impl Dataplane {
    /// A dataplane over `ports`, deciding with `worker` under the snapshots of `snapshot`.
    pub fn new(
        ports: Vec<Port>,
        worker: Worker,
        snapshot: Arc<ArcSwap<Snapshot>>,
        jobs: Receiver<Job>,
        stop: Arc<AtomicBool>,
        log: Option<BufWriter<File>>,
    ) -> Dataplane {
        Dataplane { ports, worker, snapshot, switch: Switch::default(), jobs, stop, log, frames: 0 }
    }

    /// Runs until `stop` turns true.
    pub fn run(mut self) {
        let mut pfds: Vec<libc::pollfd> = self
            .ports
            .iter()
            .map(|p| libc::pollfd { fd: p.raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let mut spare: Batch<'static> = Batch::with_capacity(64);
        while !self.stop.load(Ordering::Relaxed) {
            self.run_jobs();
            // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structures that lives across the call.
            let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 20) };
            if rc <= 0 {
                // Timeout or EINTR: no frame moves the clock, so move it here, and an idle dataplane
                // still reclaims expired connections (and writes their TERM lines).
                self.idle_tick();
                continue;
            }
            let snap = self.snapshot.load_full();
            for (i, pfd) in pfds.iter_mut().enumerate() {
                if pfd.revents & libc::POLLIN != 0 {
                    spare = self.receive(i, &snap, spare);
                } else if pfd.revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0 {
                    let port = &self.ports[i].config.name;
                    tracing::error!(port = %port, revents = pfd.revents, "port failed; no longer polled");
                    pfd.fd = -1;
                }
            }
            if let Some(w) = &mut self.log {
                let _ = w.flush();
            }
        }
        if let Some(w) = &mut self.log {
            let _ = w.flush();
        }
        tracing::info!(frames = self.frames, "dataplane stopped");
    }

    fn idle_tick(&mut self) {
        let snap = self.snapshot.load_full();
        let (mut replies, mut released) = (Vec::new(), Vec::new());
        let mut sink = DpSink { replies: &mut replies, released: &mut released, log: &mut self.log };
        let _ = self.worker.tick(&snap, now_ns(), &mut sink);
    }

    fn run_jobs(&mut self) {
        while let Ok(job) = self.jobs.try_recv() {
            let snap = self.snapshot.load_full();
            let ports = self.ports.iter().map(|p| (p.config.name.clone(), p.stats)).collect();
            let log = &mut self.log;
            let mut sink = |rec: LogRecord| write_log(log, &rec);
            let mut view = DpView {
                worker: &mut self.worker,
                snap: &snap,
                ports,
                switch: &self.switch,
                now_ns: now_ns(),
                sink: &mut sink,
            };
            job(&mut view);
        }
    }

    /// Receives and handles one batch from port `i`; gives the batch's allocation back.
    fn receive(&mut self, i: usize, snap: &Snapshot, spare: Batch<'static>) -> Batch<'static> {
        let Dataplane { ports, worker, switch, log, frames, .. } = self;
        let (before, rest) = ports.split_at_mut(i);
        let Some((rx, after)) = rest.split_first_mut() else { return spare };
        let mut replies: Vec<Vec<u8>> = Vec::new();
        let mut released: Vec<(LinkType, Vec<u8>)> = Vec::new();
        let mut batch = spare;
        match recv(&mut rx.io, &mut batch) {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(port = %rx.config.name, error = %e, "receive failed");
                return batch.recycle();
            }
        }
        for f in batch.frames() {
            rx.stats.rx_frames += 1;
            rx.stats.rx_bytes += f.data.len() as u64;
            let Ok(pkt) = f.parse() else {
                rx.stats.rx_malformed += 1;
                continue;
            };
            *frames += 1;
            let fr = FrameRef { number: *frames, link: f.link, bytes: f.data, now_ns: f.ts_nanos };
            let mut sink = DpSink { replies: &mut replies, released: &mut released, log };
            match worker.process(snap, &pkt, fr, &mut sink) {
                FrameOutcome::Passed | FrameOutcome::Unfiltered => {}
                // A fragment held for its first fragment is sent on when it is released (below).
                FrameOutcome::Dropped | FrameOutcome::Held => {
                    rx.stats.rx_dropped += 1;
                    continue;
                }
            }
            let now_s = f.ts_nanos / 1_000_000_000;
            switch.learn(pkt.src_mac.0, i, now_s);
            match switch.forward(pkt.dst_mac.0, i, now_s) {
                Forward::Port(j) => {
                    if let Some(p) = other(before, after, i, j) {
                        p.send(f);
                    }
                }
                Forward::Flood => {
                    for p in before.iter_mut().chain(after.iter_mut()) {
                        p.send(f);
                    }
                }
                Forward::Filter => {}
            }
        }
        let spare = batch.recycle();
        for r in &replies {
            rx.send(&Frame::new(LinkType::Ethernet, r));
        }
        // Released fragments: switched like any passed frame (they came in on this port).
        for (link, bytes) in &released {
            let f = Frame::new(*link, bytes);
            let Ok(pkt) = f.parse() else { continue };
            let now_s = now_ns() / 1_000_000_000;
            switch.learn(pkt.src_mac.0, i, now_s);
            match switch.forward(pkt.dst_mac.0, i, now_s) {
                Forward::Port(j) => {
                    if let Some(p) = other(before, after, i, j) {
                        p.send(&f);
                    }
                }
                Forward::Flood => {
                    for p in before.iter_mut().chain(after.iter_mut()) {
                        p.send(&f);
                    }
                }
                Forward::Filter => {}
            }
        }
        spare
    }
}
