//! `dfw run`: the live daemon (see `docs/daemon.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use daemon::DaemonConfig;

/// Arguments of `dfw run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Daemon configuration (TOML; see docs/daemon.md).
    #[arg(long)]
    config: PathBuf,
    /// Serve Prometheus metrics on ADDR (`HOST:PORT`, or a bare PORT for 127.0.0.1:PORT); overrides the file.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Control socket path; overrides the file.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Log filter when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Runs the daemon until SIGINT / SIGTERM.
pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let mut cfg = DaemonConfig::load(&args.config)?;
    if let Some(m) = &args.metrics {
        cfg.metrics = Some(if m.parse::<u16>().is_ok() { format!("127.0.0.1:{m}") } else { m.clone() });
    }
    if let Some(c) = &args.control {
        cfg.control = c.clone();
    }
    daemon::install_signal_handlers();
    daemon::run(&cfg, Arc::new(AtomicBool::new(false)))?;
    Ok(ExitCode::SUCCESS)
}
