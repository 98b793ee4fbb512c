//! `dfw`: the command line of the dfw distributed-firewall dataplane. Argument parsing and output only;
//! the work happens in the `engine`, `rules` and `pktio` crates.

mod bench_replay;
mod classify;
mod ctl;
mod gen;
mod lab;
mod netpol;
mod output;
mod replay_out;
mod run;
mod trace;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use engine::replay::{Switch, SwitchPoint};

#[derive(Parser)]
#[command(
    name = "dfw",
    version,
    about = "Userspace per-vNIC distributed firewall: replay captures through NSX-style filters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a capture (pcap or pcapng) through the filters of a policy file and summarize the verdicts.
    Replay {
        /// Policy file (see docs/policy-format.md).
        #[arg(long)]
        policy: PathBuf,
        /// Put another policy in force part-way: AT=FILE, where AT is a 1-based frame number or an
        /// RFC 3339 time (e.g. 2018-12-17T09:30:34Z) compared with the capture's timestamps. Repeatable.
        #[arg(long = "switch", value_name = "AT=FILE")]
        switches: Vec<String>,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
        /// Write one JSON object per filter decision to FILE (`-` for stdout).
        #[arg(long, value_name = "FILE")]
        verdicts: Option<PathBuf>,
        /// Write packet-log lines (dfwpktlogs format) for rules `with log` to FILE (`-` for stdout).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// Worker threads (results do not depend on it: once a table fills, the replay runs again on one worker).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Write the frames every filter on their path passed (and unfiltered ones) to this pcap.
        #[arg(long, value_name = "PCAP")]
        write_passed: Option<PathBuf>,
        /// Write the frames some filter did not pass (and malformed ones) to this pcap.
        #[arg(long, value_name = "PCAP")]
        write_dropped: Option<PathBuf>,
        /// The capture file.
        capture: PathBuf,
    },
    /// Check policy files: print every error and warning with its position; exit 1 on any error.
    Check {
        /// Policy files (raw `getrules` / `getaddrsets` output is a policy file too).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Rewrite policy files in canonical form (comments kept).
    Fmt {
        /// Do not write; exit 1 when a file is not in canonical form.
        #[arg(long)]
        check: bool,
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Generate example data.
    #[command(subcommand)]
    Gen(GenCommand),
    /// Print the 0-based index of the first matching rule for each header of a trace (-1: none).
    Classify(classify::ClassifyArgs),
    /// Measure a component; print one JSON object.
    #[command(subcommand)]
    Bench(classify::BenchCommand),
    /// Run the live daemon: taps / AF_PACKET ports, a learning switch, vNIC filters, control socket.
    Run(run::RunArgs),
    /// Inspect and change a running daemon (vsipioctl-style views; policy and address-set changes).
    Ctl(ctl::CtlArgs),
    /// Traceflow: the filters and rules a connection's first packet meets, and the verdict.
    Trace(trace::TraceArgs),
    /// The seed article's lab, live in network namespaces.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Kubernetes NetworkPolicy → per-vNIC filters and address sets (the container plug-in's role).
    #[command(subcommand)]
    Netpol(self::netpol::NetpolCommand),
}

#[derive(Subcommand)]
enum GenCommand {
    /// The seed article's lab as a capture: busybox → nginx dropped, accepted, dropped again.
    SeedLab {
        /// Output pcap file.
        out: PathBuf,
    },
    /// Synthetic rule sets for the classifier benchmarks.
    #[command(subcommand)]
    Rules(classify::GenRules),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            policy,
            switches,
            json,
            verdicts,
            log,
            workers,
            write_passed,
            write_dropped,
            capture,
        } => {
            let pcaps = (write_passed.as_deref(), write_dropped.as_deref());
            replay(&policy, &switches, json, verdicts.as_deref(), log.as_deref(), workers, pcaps, &capture)
        }
        Command::Check { files } => check(&files),
        Command::Fmt { check, files } => fmt(&files, check),
        Command::Gen(GenCommand::SeedLab { out }) => gen::seed_lab(&out),
        Command::Gen(GenCommand::Rules(cmd)) => classify::gen_rules(cmd),
        Command::Classify(args) => classify::classify(&args),
        Command::Bench(cmd) => classify::bench(cmd),
        Command::Run(args) => run::run(&args),
        Command::Ctl(args) => ctl::ctl(&args),
        Command::Trace(args) => trace::trace(&args),
        Command::Lab(cmd) => lab::lab(&cmd),
        Command::Netpol(cmd) => self::netpol::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dfw: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// Reads and parses a policy file; errors read `FILE:LINE:COL: error: message (hint)`, one per line.
fn load_policy(path: &Path) -> Result<rules::Policy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read policy", path.display()))?;
    rules::parse_policy(&text).map_err(|d| {
        let errors = rules::Diagnostics(d.errors().cloned().collect());
        anyhow!(errors.one_line(&path.display().to_string()))
    })
}

fn parse_switch(spec: &str) -> Result<Switch> {
    let (at, file) = spec.split_once('=').ok_or_else(|| {
        anyhow!("--switch '{spec}': expected AT=FILE (AT a frame number or an RFC 3339 time)")
    })?;
    let at = match at.parse::<u64>() {
        Ok(0) => return Err(anyhow!("--switch '{spec}': frames are numbered from 1")),
        Ok(n) => SwitchPoint::Frame(n),
        Err(_) => {
            let t = humantime::parse_rfc3339_weak(at).map_err(|e| {
                anyhow!("--switch '{spec}': '{at}' is neither a frame number nor an RFC 3339 time ({e})")
            })?;
            let ns = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| anyhow!("--switch '{spec}': time before 1970"))?;
            SwitchPoint::Time(u64::try_from(ns.as_nanos()).unwrap_or(u64::MAX))
        }
    };
    let path = Path::new(file);
    Ok(Switch { at, policy: load_policy(path)?, label: path.display().to_string() })
}

#[allow(clippy::too_many_arguments)]
fn replay(
    policy: &Path,
    switches: &[String],
    json: bool,
    verdicts: Option<&Path>,
    log: Option<&Path>,
    workers: usize,
    pcaps: (Option<&Path>, Option<&Path>),
    capture: &Path,
) -> Result<ExitCode> {
    if workers == 0 {
        return Err(anyhow!("--workers must be at least 1"));
    }
    let initial = load_policy(policy)?;
    let switches = switches.iter().map(|s| parse_switch(s)).collect::<Result<Vec<_>>>()?;
    let mut engine = engine::Engine::new(&initial).map_err(|e| anyhow!("{}: {e}", policy.display()))?;
    let cap = pktio::capture::Capture::open(capture)?;
    let mut sink = output::VerdictSink::open(verdicts)?;
    let mut logs = output::LogSink::open(log)?;
    let want = verdicts.is_some() || log.is_some() || pcaps.0.is_some() || pcaps.1.is_some();
    let mut write_err = None;
    let mut fates = replay_out::Fates::default();
    let bar = replay_out::progress(&cap, want);
    let summary = engine::replay::replay(&cap, &mut engine, &switches, workers, want, |ev| {
        fates.event(&ev);
        if let engine::replay::Event::Decision { decision, .. } = ev {
            bar.set_position(decision.frame);
        }
        if write_err.is_none() {
            if let Err(e) = sink.event(&ev).and_then(|_| logs.event(&ev)) {
                write_err = Some(e);
            }
        }
    });
    if let Some(e) = write_err {
        return Err(e);
    }
    bar.finish_and_clear();
    let summary = summary?;
    sink.finish()?;
    logs.finish()?;
    if pcaps.0.is_some() || pcaps.1.is_some() {
        let skipped = replay_out::write(&cap, &fates, pcaps.0, pcaps.1)?;
        if skipped > 0 {
            eprintln!("dfw: {skipped} frame(s) of another link type than the first frame's were not written");
        }
    }
    let report = output::Report::new(&capture.display().to_string(), &summary, &engine);
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// Prints every diagnostic of `path` compiler-style; true when there are errors. A policy without
/// syntax errors is also loaded into an engine, which checks what only loading can.
fn report(path: &Path, text: &str) -> (Option<rules::Policy>, bool) {
    let name = path.display().to_string();
    let checked = rules::check_policy(text);
    for d in &checked.diagnostics.0 {
        eprint!("{}", d.render(&name, text));
    }
    if checked.diagnostics.has_errors() {
        return (None, true);
    }
    if let Err(e) = engine::Engine::new(&checked.policy) {
        eprintln!("{name}: error: {e}");
        return (None, true);
    }
    (Some(checked.policy), false)
}

fn check(files: &[PathBuf]) -> Result<ExitCode> {
    let mut bad = false;
    for f in files {
        let text = read(f)?;
        let (policy, errors) = report(f, &text);
        bad |= errors;
        if let Some(p) = policy {
            let rules: usize = p
                .rulesets
                .iter()
                .chain(p.filters.iter().flat_map(|f| &f.rulesets))
                .map(|r| r.rules.len())
                .sum();
            println!("{}: ok ({} filters, {rules} rules)", f.display(), p.filters.len());
        }
    }
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn fmt(files: &[PathBuf], check_only: bool) -> Result<ExitCode> {
    let mut bad = false;
    for f in files {
        let text = read(f)?;
        let (policy, errors) = report(f, &text);
        let Some(policy) = policy else {
            bad |= errors;
            continue;
        };
        let canonical = policy.to_string();
        if canonical == text {
            continue;
        }
        if check_only {
            println!("{}: not in canonical form", f.display());
            bad = true;
        } else {
            std::fs::write(f, canonical).with_context(|| format!("{}: cannot write", f.display()))?;
            println!("{}: formatted", f.display());
        }
    }
    Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// An error and its causes, joined with ": ", leaving out a cause whose text the message already
/// carries (library errors often print their source themselves).
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let repeated = anyhow::Error::new(io).context("metrics listener 127.0.0.1:1: Address already in use");
        assert_eq!(error_chain(&repeated), "metrics listener 127.0.0.1:1: Address already in use");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let plain = anyhow::Error::new(io).context("reading p.dfw");
        assert_eq!(error_chain(&plain), "reading p.dfw: No such file or directory");
    }
}
