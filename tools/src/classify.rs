//! `dfw classify`, `dfw bench classify` and `dfw gen rules`: the first-match classifier on ClassBench
//! files and on generated NSX-shaped policies.

use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use rules::classbench::{parse_rules, parse_trace};
use rules::classify::synth::{self, NsxParams};
use rules::{Classifier, CompiledRuleSet, IpNet, L3Key};

/// `dfw classify`.
#[derive(Args)]
pub struct ClassifyArgs {
    /// ClassBench filter file and header trace.
    #[arg(long, num_args = 2, value_names = ["RULES", "TRACE"], required = true)]
    classbench: Vec<PathBuf>,
}

/// `dfw bench ...`.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Build the classifier and time single-thread lookups; print one JSON object.
    Classify(BenchClassifyArgs),
    /// Time `dfw replay` of a capture on each worker count beside tcpdump's read and filter of the same
    /// file, round by round; print one JSON object with the medians and the per-round ratios.
    Replay(crate::bench_replay::BenchReplayArgs),
}

/// `dfw bench classify`.
#[derive(Args)]
pub struct BenchClassifyArgs {
    /// ClassBench filter file and header trace.
    #[arg(long, num_args = 2, value_names = ["RULES", "TRACE"], conflicts_with = "nsx")]
    classbench: Vec<PathBuf>,
    /// Instead: a generated NSX-shaped policy (see `dfw gen rules nsx`), with headers drawn inside its
    /// rules, and member add/remove latency.
    #[arg(long)]
    nsx: bool,
    #[command(flatten)]
    size: NsxArgs,
    /// Headers to draw for `--nsx`.
    #[arg(long, default_value_t = 1_000_000)]
    headers: usize,
    /// Passes over the headers for the lookup timing.
    #[arg(long, default_value_t = 20)]
    repeat: usize,
    /// Compare every Nth header with the linear scan (`--classbench`; the scan is slow on big sets).
    #[arg(long, default_value_t = 1, value_name = "N")]
    check_every: usize,
}

/// Size of a generated NSX-shaped policy.
#[derive(Args)]
pub struct NsxArgs {
    /// Rules.
    #[arg(long, default_value_t = NsxParams::LARGE.rules)]
    rules: usize,
    /// Address sets.
    #[arg(long, default_value_t = NsxParams::LARGE.sets)]
    sets: usize,
    /// Members over all sets.
    #[arg(long, default_value_t = NsxParams::LARGE.members)]
    members: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl NsxArgs {
    fn params(&self) -> NsxParams {
        NsxParams { rules: self.rules, sets: self.sets, members: self.members, seed: self.seed }
    }
}

/// `dfw gen rules ...`.
#[derive(Subcommand)]
pub enum GenRules {
    /// A ClassBench filter file of COUNT rules grown from a real one (prefix nesting, port ranges and
    /// protocols resampled).
    Classbench {
        /// The ClassBench file to grow from.
        #[arg(long)]
        from: PathBuf,
        /// Rules to write.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file.
        out: PathBuf,
    },
    /// An NSX-shaped policy file: one rule set `mainrs` over many address sets.
    Nsx {
        #[command(flatten)]
        size: NsxArgs,
        /// Output file.
        out: PathBuf,
    },
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))
}

fn load_classbench(paths: &[PathBuf]) -> Result<(rules::RuleSet, Vec<L3Key>)> {
    let [rules_path, trace_path] = paths else { bail!("--classbench takes RULES TRACE") };
    let name = rules_path.display().to_string();
    let set = parse_rules(&read(rules_path)?, "mainrs").map_err(|d| anyhow!(d.one_line(&name)))?;
    let tname = trace_path.display().to_string();
    let trace = parse_trace(&read(trace_path)?).map_err(|d| anyhow!(d.one_line(&tname)))?;
    Ok((set, trace.iter().map(|h| h.key()).collect()))
}

/// `dfw classify --classbench RULES TRACE`: the 0-based index of the first matching rule per header, or -1.
pub fn classify(args: &ClassifyArgs) -> Result<ExitCode> {
    let (set, keys) = load_classbench(&args.classbench)?;
    let c = Classifier::build(&set, &[])?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for k in &keys {
        match c.first_match(k) {
            Some(i) => writeln!(out, "{i}")?,
            None => writeln!(out, "-1")?,
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Lookups per second of `c` over `keys`, `repeat` passes, one thread, one key at a time, against a
/// snapshot of the current version ([`Classifier::snapshot`]): as the engine classifies (a filter's
/// configuration holds a snapshot, made anew with every change), with no guard on the member table
/// per key. (The answers of [`Classifier::first_match`] itself are checked against the linear scan.)
fn lookups_per_sec(c: &Classifier, keys: &[L3Key], repeat: usize) -> f64 {
    let t = Instant::now();
    let snap = c.snapshot();
    let mut sum = 0usize;
    for _ in 0..repeat.max(1) {
        for k in keys {
            sum = sum.wrapping_add(snap.first_match(black_box(k)).unwrap_or(usize::MAX));
        }
    }
    black_box(sum);
    (keys.len() * repeat.max(1)) as f64 / t.elapsed().as_secs_f64()
}

/// Same over [`Classifier::first_match_batch`] in batches of 64 (what the rte_acl anchor times).
fn batch_lookups_per_sec(c: &Classifier, keys: &[L3Key], repeat: usize) -> f64 {
    let mut out = vec![None; 64];
    let t = Instant::now();
    let mut sum = 0usize;
    for _ in 0..repeat.max(1) {
        for chunk in keys.chunks(64) {
            c.first_match_batch(black_box(chunk), &mut out);
            sum = sum.wrapping_add(out[0].unwrap_or(usize::MAX));
        }
    }
    black_box(sum);
    (keys.len() * repeat.max(1)) as f64 / t.elapsed().as_secs_f64()
}

/// Headers on which `c` (one at a time, or batched) and the linear scan disagree, and the scan's
/// lookups per second.
fn mismatches(c: &Classifier, linear: &CompiledRuleSet, keys: &[L3Key]) -> (usize, f64) {
    let mut batch = vec![None; keys.len()];
    c.first_match_batch(keys, &mut batch);
    let t = Instant::now();
    let want: Vec<Option<usize>> = keys.iter().map(|k| linear.first_match_l3(k)).collect();
    let rate = keys.len() as f64 / t.elapsed().as_secs_f64();
    let bad =
        keys.iter().zip(&want).zip(&batch).filter(|((k, w), b)| c.first_match(k) != **w || *b != *w).count();
    (bad, rate)
}

/// `dfw bench classify`.
pub fn bench(cmd: BenchCommand) -> Result<ExitCode> {
    let args = match cmd {
        BenchCommand::Classify(args) => args,
        BenchCommand::Replay(args) => return crate::bench_replay::bench(&args),
    };
    let mut report = if args.nsx {
        bench_nsx(&args)?
    } else if !args.classbench.is_empty() {
        let (set, keys) = load_classbench(&args.classbench)?;
        let t = Instant::now();
        let c = Classifier::build(&set, &[])?;
        let build_ms = t.elapsed().as_secs_f64() * 1e3;
        let lps = lookups_per_sec(&c, &keys, args.repeat);
        let batch = batch_lookups_per_sec(&c, &keys, args.repeat);
        let linear = CompiledRuleSet::compile(&set, &[])?;
        let sample: Vec<L3Key> = keys.iter().step_by(args.check_every.max(1)).copied().collect();
        let (bad, linear_lps) = mismatches(&c, &linear, &sample);
        let st = c.stats();
        serde_json::json!({
            "rules": set.rules.len(), "headers": keys.len(), "build_ms": round(build_ms),
            "memory_bytes": c.memory_bytes(), "lookups_per_sec": lps.round(), "lookups_per_sec_batch": batch.round(), "mismatches": bad,
            "repeat": args.repeat, "linear_lookups_per_sec": linear_lps.round(),
            "checked_headers": sample.len(), "trees": st.trees, "entries": st.entries,
        })
    } else {
        bail!("give --classbench RULES TRACE or --nsx");
    };
    report["file"] = serde_json::Value::from(
        args.classbench.first().map(|p| p.display().to_string()).unwrap_or_else(|| "nsx".into()),
    );
    println!("{report}");
    let bad = report["mismatches"].as_u64().unwrap_or(1);
    Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn bench_nsx(args: &BenchClassifyArgs) -> Result<serde_json::Value> {
    let p = args.size.params();
    let policy = synth::nsx(&p);
    let refs = policy.set_refs();
    let t = Instant::now();
    let c = Classifier::build(&policy.ruleset, &refs)?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let keys = synth::nsx_keys(&policy, args.headers, p.seed + 1);
    let lps = lookups_per_sec(&c, &keys, args.repeat);
    let batch = batch_lookups_per_sec(&c, &keys, args.repeat);
    // The linear scan is slow on 17,000 rules: check a stride of at most 20,000 headers.
    let linear = CompiledRuleSet::compile(&policy.ruleset, &refs)?;
    let step = (keys.len() / 20_000).max(1);
    let sample: Vec<L3Key> = keys.iter().step_by(step).copied().collect();
    let (bad, linear_lps) = mismatches(&c, &linear, &sample);
    // Member add then remove, each published as its own version; 2,000 of each.
    let mut rng = synth::Rng::new(p.seed + 2);
    let mut times = Vec::with_capacity(4000);
    for i in 0..2000u32 {
        let set = policy.sets[rng.below(policy.sets.len())].id.as_str();
        let net = IpNet::host(std::net::Ipv4Addr::from(0xac10_0000 | i).into());
        let t = Instant::now();
        c.add_member(set, net)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        c.remove_member(set, net)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let st = c.stats();
    Ok(serde_json::json!({
        "rules": policy.ruleset.rules.len(), "sets": policy.sets.len(),
        "members": policy.sets.iter().map(|s| s.entries.len()).sum::<usize>(),
        "headers": keys.len(), "build_ms": round(build_ms), "memory_bytes": c.memory_bytes(),
        "lookups_per_sec": lps.round(), "lookups_per_sec_batch": batch.round(), "mismatches": bad, "checked_headers": sample.len(),
        "repeat": args.repeat, "linear_lookups_per_sec": linear_lps.round(),
        "update_median_us": round(times[times.len() / 2]), "update_p99_us": round(times[times.len() * 99 / 100]),
        "trees": st.trees, "entries": st.entries,
    }))
}

/// `dfw gen rules ...`.
pub fn gen_rules(cmd: GenRules) -> Result<ExitCode> {
    let (text, out) = match cmd {
        GenRules::Classbench { from, count, seed, out } => {
            let name = from.display().to_string();
            let base = parse_rules(&read(&from)?, "mainrs").map_err(|d| anyhow!(d.one_line(&name)))?;
            let set = synth::classbench_like(&base, count, seed);
            let text = synth::write_classbench(&set)
                .map_err(|id| anyhow!("rule {id} cannot be written in ClassBench format"))?;
            (text, out)
        }
        GenRules::Nsx { size, out } => (synth::nsx(&size.params()).text(), out),
    };
    std::fs::write(&out, text).with_context(|| format!("{}: cannot write", out.display()))?;
    Ok(ExitCode::SUCCESS)
}
