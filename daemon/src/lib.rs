//! `daemon` owns running dfw live: ports (taps dfw creates, AF_PACKET on existing interfaces), the small
//! learning switch between them, the dataplane thread that applies each port's vNIC filter in both
//! directions, the control socket `dfw ctl` talks to, Prometheus metrics, and traceflow.
//!
//! ```text
//!   VM ns ── tap ──┐                                   ┌── tap ── VM ns
//!                  ▼                                   │
//!            [ dataplane: parse → engine (out of the sender's filter, in to the receiver's) → switch ]
//!                  ▲            ▲ snapshot (arc-swap)          ▲ jobs between batches
//!     dfw ctl ── control socket ─ Engine::commit ──────────────┘── metrics (/metrics)
//! ```
//!
//! It builds on `engine` (deciding and state), `pktio` (ports) and `rules` (policy text), and is
//! driven by `dfw run` / `dfw ctl` / `dfw trace`.

pub mod config;
pub mod control;
pub mod dataplane;
pub mod metrics;
pub mod port;
pub mod switch;
pub mod trace;

use std::fs::OpenOptions;
use std::io::BufWriter;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use config::{ConfigError, DaemonConfig, PortConfig, PortKind};

/// Why the daemon could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The policy file could not be read or has errors (every error, one per line).
    #[error("{0}")]
    Policy(String),
    /// A port could not be opened or configured.
    #[error("port '{port}': {source}")]
    Port {
        /// Port name.
        port: String,
        /// The I/O error.
        source: pktio::IoError,
    },
    /// The control socket could not be bound.
    #[error("control socket {path}: {source}")]
    Control {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The metrics listener could not be bound.
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        /// Address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The packet-log file could not be opened.
    #[error("packet log {path}: {source}")]
    PacketLog {
        /// Path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Set by SIGINT / SIGTERM.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    SIGNALLED.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM ask [`run`] to stop cleanly.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only stores
        // to an atomic, which is async-signal-safe; sigaction reads the struct we pass.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Reads the policy file at `path`; every error is reported as `file:line:col: message`.
pub fn load_policy(path: &std::path::Path) -> Result<rules::Policy, DaemonError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DaemonError::Policy(format!("{}: cannot read policy: {e}", path.display())))?;
    rules::parse_policy(&text).map_err(|d| {
        let name = path.display().to_string();
        DaemonError::Policy(d.errors().map(|e| e.one_line(&name)).collect::<Vec<_>>().join("\n"))
    })
}

/// Runs the daemon of `cfg` until `stop` turns true or a signal handled by
/// [`install_signal_handlers`] arrives; then stops every thread, closes the ports (taps dfw created
/// disappear) and removes the control socket.
pub fn run(cfg: &DaemonConfig, stop: Arc<AtomicBool>) -> Result<(), DaemonError> {
    let policy = load_policy(&cfg.policy)?;
    let engine = engine::Engine::new(&policy)
        .map_err(|e| DaemonError::Policy(format!("{}: {e}", cfg.policy.display())))?;
    let log = match &cfg.packet_log {
        None => None,
        Some(p) => Some(BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| DaemonError::PacketLog { path: p.clone(), source })?,
        )),
    };
    let mut ports = Vec::with_capacity(cfg.ports.len());
    for pc in &cfg.ports {
        let p = port::Port::open(pc).map_err(|source| DaemonError::Port { port: pc.name.clone(), source })?;
        tracing::info!(port = %pc.name, kind = pc.kind.as_str(), iface = %pc.iface, netns = ?pc.netns, "port open");
        ports.push(p);
    }
    // Metrics first: a failure there must not leave a control socket behind.
    let metrics = match &cfg.metrics {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr.as_str())
                .map_err(|source| DaemonError::Metrics { addr: addr.clone(), source })?,
        ),
    };
    let listener = control::bind(&cfg.control)
        .map_err(|source| DaemonError::Control { path: cfg.control.clone(), source })?;
    let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
    let snapshot = engine.snapshot_handle();
    let worker = engine.new_worker();
    let dp = dataplane::Dataplane::new(ports, worker, Arc::clone(&snapshot), jobs_rx, Arc::clone(&stop), log);
    let dp_thread = std::thread::Builder::new().name("dfw-dataplane".into()).spawn(move || dp.run());
    let ctl = control::Control { engine, ports: cfg.ports.clone(), jobs: jobs_tx.clone() };
    let ctl_stop = Arc::clone(&stop);
    let ctl_thread = std::thread::Builder::new()
        .name("dfw-control".into())
        .spawn(move || control::serve(listener, ctl, ctl_stop));
    let m_thread = metrics.map(|l| {
        let (jobs, snap, st) = (jobs_tx.clone(), Arc::clone(&snapshot), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("dfw-metrics".into())
            .spawn(move || metrics::serve(l, jobs, snap, st))
    });
    tracing::info!(control = %cfg.control.display(), metrics = ?cfg.metrics, generation = snapshot.load().generation, "dfw running");
    while !stop.load(Ordering::Relaxed) {
        if SIGNALLED.load(Ordering::Relaxed) {
            tracing::info!("signal received; stopping");
            stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in [dp_thread.ok(), ctl_thread.ok(), m_thread.and_then(|t| t.ok())].into_iter().flatten() {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(&cfg.control);
    tracing::info!("dfw stopped");
    Ok(())
}
