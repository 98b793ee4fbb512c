//! `dfw ctl`: talk to a running daemon over its control socket (see `docs/control-protocol.md`).
//! Views print the daemon's text (shaped like `vsipioctl`) or, with `--json`, its data.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use daemon::control::{request, Request};

/// The socket when neither `--socket` nor `DFW_SOCKET` names one.
const DEFAULT_SOCKET: &str = daemon::config::DEFAULT_CONTROL;

/// Arguments of `dfw ctl`.
#[derive(clap::Args)]
pub struct CtlArgs {
    /// Control socket of the daemon.
    #[arg(long, env = "DFW_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    socket: PathBuf,
    /// Print the answer's data as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCommand,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Ports and their vNIC filters (name, state, failurePolicy), like summarize-dvfilter.
    Summarize,
    /// Filter names, hashes and vNICs.
    Getfilters,
    /// A filter's rule sets.
    Getrules(FilterArg),
    /// A filter's address sets.
    Getaddrsets(FilterArg),
    /// A filter's connection table: tuple, TCP states, timeout left, packets/bytes per direction, rule.
    Getflows(FilterArg),
    /// A filter's pass/drop counters per family and direction.
    Getfilterstat(FilterArg),
    /// A filter's per-rule counters (RuleId Packets Bytes Sessions Hits).
    Rulestats(FilterArg),
    /// A filter's connection timers.
    Gettimeout(FilterArg),
    /// Replace a filter's rule sets and address sets with a file's (atomic: a file with errors changes nothing).
    Load {
        #[command(flatten)]
        f: FilterArg,
        /// Policy file (raw getrules / getaddrsets output, or a policy file with a block for the filter).
        file: PathBuf,
    },
    /// Add or remove address-set members.
    Addrset {
        /// add or del.
        #[arg(value_parser = ["add", "del"])]
        op: String,
        /// Set id.
        set: String,
        /// Addresses, prefixes or MACs.
        #[arg(required = true)]
        addrs: Vec<String>,
    },
    /// Connection-table operations.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Traceflow against the policy in force.
    Trace(crate::trace::TupleArgs),
}

#[derive(Subcommand)]
enum FlowsCommand {
    /// Remove every connection of a filter.
    Flush(FilterArg),
}

#[derive(clap::Args)]
struct FilterArg {
    /// Filter name.
    #[arg(short = 'f', long = "filter")]
    filter: String,
}

/// Sends the request and prints the answer; exit 1 when the daemon reports an error.
pub fn ctl(args: &CtlArgs) -> Result<ExitCode> {
    let f = |a: &FilterArg| a.filter.clone();
    let req = match &args.cmd {
        CtlCommand::Summarize => Request::Summarize,
        CtlCommand::Getfilters => Request::Getfilters,
        CtlCommand::Getrules(a) => Request::Getrules { filter: f(a) },
        CtlCommand::Getaddrsets(a) => Request::Getaddrsets { filter: f(a) },
        CtlCommand::Getflows(a) => Request::Getflows { filter: f(a) },
        CtlCommand::Getfilterstat(a) => Request::Getfilterstat { filter: f(a) },
        CtlCommand::Rulestats(a) => Request::Rulestats { filter: f(a) },
        CtlCommand::Gettimeout(a) => Request::Gettimeout { filter: f(a) },
        CtlCommand::Load { f: a, file } => Request::Load {
            filter: f(a),
            name: file.display().to_string(),
            text: std::fs::read_to_string(file)
                .with_context(|| format!("{}: cannot read", file.display()))?,
        },
        CtlCommand::Addrset { op, set, addrs } => {
            Request::Addrset { op: op.clone(), set: set.clone(), addrs: addrs.clone() }
        }
        CtlCommand::Flows(FlowsCommand::Flush(a)) => Request::FlowsFlush { filter: f(a) },
        CtlCommand::Trace(t) => Request::Trace(t.spec()),
    };
    let resp = request(&args.socket, &req)
        .with_context(|| format!("{}: cannot talk to the daemon", args.socket.display()))?;
    if !resp.ok {
        let e = resp.error.unwrap_or_default();
        if args.json {
            println!("{}", serde_json::json!({"ok": false, "error": e}));
        } else {
            for line in e.lines() {
                eprintln!("dfw ctl: {line}");
            }
        }
        return Ok(ExitCode::from(1));
    }
    if args.json {
        println!("{}", serde_json::to_string(&resp.data)?);
    } else {
        print!("{}", resp.text);
    }
    Ok(ExitCode::SUCCESS)
}
