//! `dfw bench replay`: replay throughput for each worker count beside tcpdump's stateless read and
//! filter of the same capture, timed in rounds. Each round times every worker count and tcpdump once,
//! back to back (in alternating order), and the ratios are taken within the round, so a machine whose
//! speed drifts from one minute to the next still gives fair ratios; medians are reported. With
//! `--pin`, each round's one-worker replays and tcpdump run on the same CPU (the rounds take the
//! process's CPUs in turn): on a host whose CPUs run at different speeds from one moment to the next,
//! the two sides of a ratio then met the same CPU.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use engine::replay::replay;
use engine::Engine;
use serde_json::json;

/// `dfw bench replay`.
#[derive(Args)]
pub struct BenchReplayArgs {
    /// Policy file.
    #[arg(long)]
    policy: PathBuf,
    /// Worker counts to time in every round (comma-separated); ratios between worker counts are taken
    /// against the first.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Rounds.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// The tcpdump filter of the stateless anchor (`tcpdump -r CAPTURE -w /dev/null FILTER`).
    #[arg(long, default_value = "tcp dst port 80 and net 10.1.0.0/16")]
    tcpdump_filter: String,
    /// Do not run tcpdump.
    #[arg(long)]
    no_tcpdump: bool,
    /// Run each round's one-worker replays and tcpdump on one CPU, the same for both (round `r` on
    /// the `r`-th of the CPUs this process may use, in turn); other worker counts use them all.
    #[arg(long)]
    pin: bool,
    /// The capture file.
    capture: PathBuf,
}

/// What one timed replay gave.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    frames: u64,
    passed: u64,
    dropped: u64,
    secs: f64,
}

pub fn bench(args: &BenchReplayArgs) -> Result<ExitCode> {
    if args.workers.is_empty() || args.workers.contains(&0) {
        bail!("--workers: give one or more worker counts, each at least 1");
    }
    if args.rounds == 0 {
        bail!("--rounds: at least 1");
    }
    let policy = crate::load_policy(&args.policy)?;
    let cap = pktio::capture::Capture::open(&args.capture)?;
    let time_dfw = |workers: usize| -> Result<Run> {
        let mut e = Engine::new(&policy).with_context(|| format!("{}", args.policy.display()))?;
        let t = Instant::now();
        let s = replay(&cap, &mut e, &[], workers, false, |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        Ok(Run { frames: s.frames, passed: s.passed, dropped: s.dropped, secs })
    };
    let time_tcpdump = |cpu: Option<usize>| -> Result<f64> {
        let mut cmd = Command::new("tcpdump");
        if let Some(cpu) = cpu {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec the closure only fills a CPU set on the stack and makes
            // one system call, both async-signal-safe.
            unsafe {
                cmd.pre_exec(move || pin_to(cpu));
            }
        }
        let t = Instant::now();
        let out = cmd
            .arg("-r")
            .arg(&args.capture)
            .args(["-w", "/dev/null", &args.tcpdump_filter])
            .stdout(Stdio::null())
            .output()
            .context("cannot run tcpdump (install it, or pass --no-tcpdump)")?;
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            bail!(
                "tcpdump failed ({}) on {} with filter {:?}: {}",
                out.status,
                args.capture.display(),
                args.tcpdump_filter,
                why.trim()
            );
        }
        Ok(secs)
    };

    let cpus =
        if args.pin { allowed_cpus().context("--pin: cannot read this process's CPUs")? } else { Vec::new() };
    // Per worker count (in the order given): the runs of every round; and tcpdump's times.
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); args.workers.len()];
    let mut tcpdump = Vec::new();
    // With `--pin`: per round, the CPU of its one-worker replays and tcpdump, and the one the last
    // one-worker replay of the round found itself on.
    let mut pinned: Vec<(usize, Option<usize>)> = Vec::new();
    for round in 0..args.rounds {
        let cpu = (!cpus.is_empty()).then(|| cpus[round % cpus.len()]);
        let mut ran_on = None;
        // Alternate the order, so neither side always runs first after a pause.
        let mut order: Vec<Option<usize>> = (0..args.workers.len()).map(Some).collect();
        if !args.no_tcpdump {
            order.push(None);
        }
        if round % 2 == 1 {
            order.reverse();
        }
        for slot in order {
            match slot {
                Some(i) => {
                    let one = args.workers[i] == 1;
                    if let (true, Some(cpu)) = (one, cpu) {
                        pin_to(cpu).with_context(|| format!("--pin: cannot move to CPU {cpu}"))?;
                    }
                    let run = time_dfw(args.workers[i]);
                    if let (true, Some(_)) = (one, cpu) {
                        // SAFETY: `sched_getcpu` takes no argument and only reads.
                        ran_on = usize::try_from(unsafe { libc::sched_getcpu() }).ok();
                        set_cpus(&cpus).context("--pin: cannot move back to every CPU")?;
                    }
                    runs[i].push(run?);
                }
                None => tcpdump.push(time_tcpdump(cpu)?),
            }
        }
        if let Some(cpu) = cpu {
            pinned.push((cpu, ran_on));
        }
    }
    // Results do not depend on the worker count, nor on the round.
    let first = runs[0][0];
    if first.frames == 0 {
        bail!("{}: the capture holds no frame: nothing to time", args.capture.display());
    }
    for (i, rs) in runs.iter().enumerate() {
        for r in rs {
            if (r.frames, r.passed, r.dropped) != (first.frames, first.passed, first.dropped) {
                bail!(
                    "{} worker(s) gave {} frames, {} passed, {} dropped; {} worker(s) gave {}, {}, {}",
                    args.workers[i],
                    r.frames,
                    r.passed,
                    r.dropped,
                    args.workers[0],
                    first.frames,
                    first.passed,
                    first.dropped
                );
            }
        }
    }
    let frames = first.frames as f64;
    let fps = |secs: f64| frames / secs;
    let dfw: Vec<_> = args
        .workers
        .iter()
        .zip(&runs)
        .map(|(w, rs)| {
            let all: Vec<f64> = rs.iter().map(|r| fps(r.secs)).collect();
            json!({ "workers": w, "frames_per_sec_median": median(&all).round(), "frames_per_sec": rounded(&all) })
        })
        .collect();
    // Ratios within each round: against tcpdump, and against the first worker count.
    let ratios =
        |of: &[Run], to: &[f64]| -> Vec<f64> { of.iter().zip(to).map(|(r, t)| t / r.secs).collect() };
    let tcpdump_json = (!args.no_tcpdump).then(|| {
        let all: Vec<f64> = tcpdump.iter().map(|s| fps(*s)).collect();
        json!({ "frames_per_sec_median": median(&all).round(), "frames_per_sec": rounded(&all) })
    });
    let vs_tcpdump: Vec<_> = if args.no_tcpdump {
        Vec::new()
    } else {
        args.workers
            .iter()
            .zip(&runs)
            .map(|(w, rs)| {
                let r = ratios(rs, &tcpdump);
                json!({ "workers": w, "ratio_median": round3(median(&r)), "ratios": rounded3(&r) })
            })
            .collect()
    };
    let base: Vec<f64> = runs[0].iter().map(|r| r.secs).collect();
    let vs_first: Vec<_> = args
        .workers
        .iter()
        .zip(&runs)
        .skip(1)
        .map(|(w, rs)| {
            let r = ratios(rs, &base);
            json!({ "workers": w, "against_workers": args.workers[0], "ratio_median": round3(median(&r)), "ratios": rounded3(&r) })
        })
        .collect();
    let report = json!({
        "capture": args.capture.display().to_string(),
        "frames": first.frames,
        "passed": first.passed,
        "dropped": first.dropped,
        "rounds": args.rounds,
        "dfw": dfw,
        "tcpdump": tcpdump_json,
        "tcpdump_filter": (!args.no_tcpdump).then_some(&args.tcpdump_filter),
        "dfw_vs_tcpdump": vs_tcpdump,
        "workers_vs_first": vs_first,
        "pinned": args.pin.then(|| {
            pinned.iter().map(|(cpu, ran_on)| json!({ "cpu": cpu, "one_worker_ran_on": ran_on })).collect::<Vec<_>>()
        }),
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// The CPUs this process may run on.
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `sched_getaffinity` writes at most the set's size into it.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `CPU_ISSET` reads the set within its bounds (`CPU_SETSIZE`).
    let cpus: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect();
    if cpus.is_empty() {
        return Err(std::io::Error::other("no CPU in the affinity mask"));
    }
    Ok(cpus)
}

/// Moves the calling thread onto `cpus` (the threads it starts later inherit them).
fn set_cpus(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed `cpu_set_t` is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `CPU_SET` writes within the set for indexes below `CPU_SETSIZE`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `sched_setaffinity` reads the set, of the size given.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread (or process, between fork and exec) onto CPU `cpu` alone. Allocates
/// nothing.
fn pin_to(cpu: usize) -> std::io::Result<()> {
    set_cpus(std::slice::from_ref(&cpu))
}

/// The median (the upper one of an even count).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn rounded(xs: &[f64]) -> Vec<f64> {
    xs.iter().map(|x| x.round()).collect()
}

fn rounded3(xs: &[f64]) -> Vec<f64> {
    xs.iter().map(|x| round3(*x)).collect()
}
