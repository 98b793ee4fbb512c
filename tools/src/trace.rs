//! `dfw trace`: traceflow of a first packet through the filters of a policy file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use daemon::trace::TraceSpec;

/// The tuple to trace (shared by `dfw trace` and `dfw ctl trace`).
#[derive(clap::Args, Clone)]
pub struct TupleArgs {
    /// Source address (IPv4 or IPv6).
    #[arg(long)]
    pub src: IpAddr,
    /// Destination address, of the same IP version as the source.
    #[arg(long)]
    pub dst: IpAddr,
    /// Protocol: tcp, udp, icmp (ICMPv6 for IPv6 addresses), ipv6-icmp, another name of the rules
    /// language, or a number.
    #[arg(long)]
    pub proto: String,
    /// Source port (tcp/udp; default 49152).
    #[arg(long)]
    pub sport: Option<u16>,
    /// Destination port (tcp/udp; default 80 for tcp, 53 for udp).
    #[arg(long)]
    pub dport: Option<u16>,
}

impl TupleArgs {
    /// The trace request.
    pub fn spec(&self) -> TraceSpec {
        TraceSpec {
            src: self.src,
            dst: self.dst,
            proto: self.proto.clone(),
            sport: self.sport,
            dport: self.dport,
        }
    }
}

/// Arguments of `dfw trace`.
#[derive(clap::Args)]
pub struct TraceArgs {
    /// Policy file.
    #[arg(long)]
    policy: PathBuf,
    #[command(flatten)]
    tuple: TupleArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Prints the trace; exit 0 whatever the verdict.
pub fn trace(args: &TraceArgs) -> Result<ExitCode> {
    let policy = crate::load_policy(&args.policy)?;
    let t = daemon::trace::trace(&policy, &args.tuple.spec()).map_err(|e| anyhow!("{e}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&t)?);
    } else {
        print!("{}", t.text());
    }
    Ok(ExitCode::SUCCESS)
}
