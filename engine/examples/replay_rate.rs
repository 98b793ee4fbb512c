//! Times `engine::replay::replay` alone (policy parsed and capture mapped beforehand):
//! `cargo run --release -p dfw-engine --example replay_rate -- POLICY CAPTURE [WORKERS] [ROUNDS]`.
//! Prints each round and the median in frames per second; a quick check while working on the hot path
//! (the criterion bench `cargo bench -p dfw-benches --bench engine` is the reference). With
//! `REPLAY_RATE_SMAPS` set it also prints, after each round, the resident memory and how much of it
//! is on transparent huge pages.

use std::io::Write;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [policy, capture, rest @ ..] = args.as_slice() else {
        return Err("usage: replay_rate POLICY CAPTURE [WORKERS] [ROUNDS]".into());
    };
    let workers: usize = rest.first().map_or(Ok(1), |s| s.parse())?;
    let rounds: usize = rest.get(1).map_or(Ok(5), |s| s.parse())?;
    let policy = rules::parse_policy(&std::fs::read_to_string(policy)?)
        .map_err(|d| format!("{policy}: {} problem(s)", d.0.len()))?;
    let cap = pktio::Capture::open(capture.as_ref())?;
    let mut rates = Vec::new();
    for round in 0..rounds {
        let mut e = engine::Engine::new(&policy)?;
        let t = Instant::now();
        let s = engine::replay::replay(&cap, &mut e, &[], workers, false, |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        let rate = s.frames as f64 / secs;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "round {round}: {} frames ({} passed, {} dropped) in {:.1} ms: {:.2} M frames/s",
            s.frames,
            s.passed,
            s.dropped,
            secs * 1e3,
            rate / 1e6
        )?;
        if std::env::var_os("REPLAY_RATE_SMAPS").is_some() {
            // How much of the memory (the engine's tables still alive) sits on huge pages.
            let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
            let lines: Vec<&str> =
                smaps.lines().filter(|l| l.starts_with("Rss:") || l.starts_with("AnonHuge")).collect();
            writeln!(out, "  {}", lines.join(", ").split_whitespace().collect::<Vec<_>>().join(" "))?;
        }
        rates.push(rate);
    }
    if rates.is_empty() {
        return Err("ROUNDS must be at least 1".into());
    }
    rates.sort_by(f64::total_cmp);
    // (A closed stdout, e.g. `| head`, ends the program with an error rather than a panic.)
    writeln!(
        std::io::stdout(),
        "median {:.2} M frames/s ({workers} worker(s))",
        rates[rates.len() / 2] / 1e6
    )?;
    Ok(())
}
