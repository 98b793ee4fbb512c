//! `dfw netpol`: Kubernetes manifests → a dfw policy file, and the change that moves a running dataplane
//! from one compiled policy to the next (see `docs/netpol.md`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use daemon::control::{Request, WireChange};
use engine::Change;
use rules::AddrEntry;

#[derive(Subcommand)]
pub enum NetpolCommand {
    /// Compile Namespaces, Pods and NetworkPolicies into a policy file: one filter per pod vNIC and the
    /// address sets its rules use.
    Compile {
        #[command(flatten)]
        input: Input,
        /// Output policy file (`-` for stdout).
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: PathBuf,
    },
    /// Compile, compare with the policy in force and put the difference in force as one transaction:
    /// address-set member changes for a relabel, the whole policy otherwise.
    Apply {
        #[command(flatten)]
        input: Input,
        /// The compiled policy currently in force (the previous `compile` / `apply` output).
        #[arg(long = "from", value_name = "POLICY")]
        from: PathBuf,
        /// Also write the new compiled policy here.
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: Option<PathBuf>,
        /// The daemon's control socket: apply the change there as one atomic commit. Without
        /// it the change is printed as JSON.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print the difference between two compiled policy files (set members, rules, filters).
    Diff {
        /// The policy in force.
        old: PathBuf,
        /// The new policy.
        new: PathBuf,
        /// Print the change list as JSON (what `apply` sends).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct Input {
    /// Cluster name, used in set and rule names (`tgt-<cluster>-<namespace>-<policy>`).
    #[arg(long)]
    cluster: String,
    /// Manifest files or directories (`.yaml`, `.yml`, `.json`; multi-document files and Lists).
    #[arg(short = 'f', long = "filename", value_name = "FILE_OR_DIR", required = true)]
    files: Vec<PathBuf>,
    /// Skip objects of this kind instead of failing on them (each skip is reported). Repeatable.
    #[arg(long = "skip-kind", value_name = "KIND")]
    skip: Vec<String>,
}

pub fn run(cmd: NetpolCommand) -> Result<ExitCode> {
    match cmd {
        NetpolCommand::Compile { input, out } => {
            let Some(compiled) = compile(&input)? else { return Ok(ExitCode::from(1)) };
            let policy = compiled.policy();
            write(&out, &policy.to_string())?;
            eprintln!(
                "{}: {} filters, {} address sets",
                out.display(),
                compiled.filter_count(),
                compiled.set_count()
            );
            Ok(ExitCode::SUCCESS)
        }
        NetpolCommand::Apply { input, from, out, socket } => {
            let old = crate::load_policy(&from)?;
            let Some(compiled) = compile(&input)? else { return Ok(ExitCode::from(1)) };
            let new = compiled.policy();
            let diff = ::netpol::diff(&old, &new);
            let changes = changes(&diff, &new);
            if let Some(out) = &out {
                write(out, &new.to_string())?;
            }
            if let Some(sock) = socket {
                // One atomic commit on the running daemon: member changes for a relabel, else the whole policy.
                let wire: Vec<WireChange> = changes
                    .iter()
                    .map(|c| match c {
                        Change::AddrSetAdd { set, entries } => WireChange::AddrsetAdd {
                            set: set.clone(),
                            addrs: entries.iter().map(entry_word).collect(),
                        },
                        Change::AddrSetDel { set, entries } => WireChange::AddrsetDel {
                            set: set.clone(),
                            addrs: entries.iter().map(entry_word).collect(),
                        },
                        Change::Policy(p) => {
                            WireChange::Policy { name: "netpol".into(), text: p.to_string() }
                        }
                    })
                    .collect();
                if wire.is_empty() {
                    println!("no change");
                    return Ok(ExitCode::SUCCESS);
                }
                let resp = daemon::control::request(&sock, &Request::Commit { changes: wire })
                    .with_context(|| format!("{}: cannot talk to the daemon", sock.display()))?;
                if !resp.ok {
                    for line in resp.error.unwrap_or_default().lines() {
                        eprintln!("dfw netpol apply: {line}");
                    }
                    return Ok(ExitCode::from(1));
                }
                print!("{}", resp.text);
                return Ok(ExitCode::SUCCESS);
            }
            emit(&format!("{}\n", serde_json::to_string_pretty(&message(&diff, &changes, out.as_deref()))?))?;
            Ok(ExitCode::SUCCESS)
        }
        NetpolCommand::Diff { old, new, json } => {
            let (old, new_policy) = (crate::load_policy(&old)?, crate::load_policy(&new)?);
            let diff = ::netpol::diff(&old, &new_policy);
            if json {
                let changes = changes(&diff, &new_policy);
                emit(&format!("{}\n", serde_json::to_string_pretty(&message(&diff, &changes, Some(&new)))?))?;
            } else {
                emit(&diff.to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads the manifests and compiles them; load errors are printed and give `None`.
fn compile(input: &Input) -> Result<Option<::netpol::Compiled>> {
    let mut cluster = ::netpol::Cluster::new();
    for k in &input.skip {
        cluster.skip_kind(k);
    }
    let mut failed = false;
    for f in &input.files {
        if let Err(errors) = cluster.load_path(f) {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            failed = true;
        }
    }
    for (kind, n) in &cluster.skipped {
        eprintln!("note: skipped {n} object(s) of kind {kind} (--skip-kind)");
    }
    if failed {
        return Ok(None);
    }
    ::netpol::Compiled::new(&cluster, &input.cluster).map(Some).map_err(|e| anyhow!("{e}"))
}

fn write(out: &Path, text: &str) -> Result<()> {
    if out == Path::new("-") {
        return emit(text);
    }
    std::fs::write(out, text).with_context(|| format!("{}: cannot write", out.display()))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

/// The engine changes that put `diff` in force as one transaction.
pub fn changes(diff: &::netpol::Diff, new: &rules::Policy) -> Vec<Change> {
    if !diff.is_members_only() {
        return vec![Change::Policy(new.clone())];
    }
    let mut out = Vec::new();
    for (set, d) in &diff.members {
        if !d.removed.is_empty() {
            out.push(Change::AddrSetDel { set: set.clone(), entries: d.removed.clone() });
        }
        if !d.added.is_empty() {
            out.push(Change::AddrSetAdd { set: set.clone(), entries: d.added.clone() });
        }
    }
    out
}

fn entry(e: &AddrEntry) -> String {
    match e {
        AddrEntry::Ip(n) => format!("ip {n}"),
        AddrEntry::Mac(m) => format!("mac {m}"),
    }
}

/// The control message `apply` would send: one `commit` of every change (docs/netpol.md).
fn entry_word(e: &AddrEntry) -> String {
    match e {
        AddrEntry::Ip(n) => n.to_string(),
        AddrEntry::Mac(m) => m.to_string(),
    }
}

fn message(diff: &::netpol::Diff, changes: &[Change], policy_file: Option<&Path>) -> serde_json::Value {
    let list: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| match c {
            Change::AddrSetAdd { set, entries } => {
                serde_json::json!({"addrset_add": {"set": set, "entries": entries.iter().map(entry).collect::<Vec<_>>()}})
            }
            Change::AddrSetDel { set, entries } => {
                serde_json::json!({"addrset_del": {"set": set, "entries": entries.iter().map(entry).collect::<Vec<_>>()}})
            }
            Change::Policy(p) => serde_json::json!({"policy": {
                "file": policy_file.map(|f| f.display().to_string()),
                "filters": p.filters.len(),
                "addrsets": p.addrsets.len(),
            }}),
        })
        .collect();
    serde_json::json!({
        "commit": list,
        "members_only": diff.is_members_only(),
        "summary": {
            "member_changes": diff.member_changes(),
            "sets_added": diff.sets_added,
            "sets_removed": diff.sets_removed,
            "filters_added": diff.filters_added,
            "filters_removed": diff.filters_removed,
            "filters_changed": diff.filters_changed,
            "rulesets_changed": diff.rulesets_changed,
        },
    })
}
