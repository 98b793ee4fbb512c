//! What `dfw replay` prints: per-decision JSON lines and the summary (text or JSON).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use engine::replay::{Event, ReplaySummary};
use engine::{Engine, FilterCounters};
use serde::Serialize;

/// An output file named on the command line (`-` is stdout), with its name for error messages.
type Output = Option<(BufWriter<Box<dyn Write>>, String)>;

/// Opens `path` for writing (`-` is stdout); `None` writes nothing. `what` names it in errors.
fn open_output(path: Option<&Path>, what: &str) -> Result<Output> {
    Ok(match path {
        None => None,
        Some(p) if p == Path::new("-") => {
            Some((BufWriter::new(Box::new(io::stdout()) as Box<dyn Write>), "-".into()))
        }
        Some(p) => {
            let f = File::create(p).with_context(|| format!("{}: cannot create {what}", p.display()))?;
            Some((BufWriter::new(Box::new(f) as Box<dyn Write>), p.display().to_string()))
        }
    })
}

fn flush_output(out: &mut Output) -> Result<()> {
    if let Some((w, name)) = out {
        w.flush().with_context(|| format!("{name}: write failed"))?;
    }
    Ok(())
}

/// Where `--verdicts` lines go.
pub struct VerdictSink {
    out: Output,
}

#[derive(Serialize)]
struct VerdictLine<'a> {
    frame: u64,
    filter: Option<&'a str>,
    dir: Option<&'a str>,
    verdict: &'a str,
    state: &'a str,
    reason: &'a str,
    rule: Option<u32>,
    ruleset: Option<&'a str>,
}

impl VerdictSink {
    /// Opens `path` (`-` is stdout); `None` writes nothing.
    pub fn open(path: Option<&Path>) -> Result<VerdictSink> {
        Ok(VerdictSink { out: open_output(path, "verdicts file")? })
    }

    /// Writes the line for one event (decisions and malformed frames; other events write nothing).
    pub fn event(&mut self, ev: &Event<'_>) -> Result<()> {
        let Some((w, name)) = &mut self.out else { return Ok(()) };
        let line = match *ev {
            Event::Decision { decision: d, filter } => VerdictLine {
                frame: d.frame,
                filter: Some(&filter.name),
                dir: Some(d.dir.as_str()),
                verdict: d.verdict.as_str(),
                state: d.state.as_str(),
                reason: d.reason.as_str(),
                rule: d.rule.map(|r| r.id),
                ruleset: d.rule.and_then(|r| filter.ruleset_name(r.l2)),
            },
            Event::Malformed { frame, reason } => VerdictLine {
                frame,
                filter: None,
                dir: None,
                verdict: "drop",
                state: "none",
                reason: reason.as_str(),
                rule: None,
                ruleset: None,
            },
            _ => return Ok(()),
        };
        serde_json::to_writer(&mut *w, &line).with_context(|| format!("{name}: write failed"))?;
        w.write_all(b"\n").with_context(|| format!("{name}: write failed"))
    }

    /// Flushes.
    pub fn finish(&mut self) -> Result<()> {
        flush_output(&mut self.out)
    }
}

#[derive(Serialize)]
struct DirCounts {
    pass: u64,
    drop: u64,
    reject: u64,
    punt: u64,
}

#[derive(Serialize)]
struct RuleReport {
    ruleset: String,
    id: u32,
    packets: u64,
    bytes: u64,
    sessions: u64,
    hits: u64,
}

#[derive(Serialize)]
struct FilterReport {
    name: String,
    passed: u64,
    dropped: u64,
    #[serde(rename = "in")]
    dir_in: DirCounts,
    out: DirCounts,
    reasons: BTreeMap<&'static str, u64>,
    rules: Vec<RuleReport>,
    connections: usize,
    torn_down: u64,
    rejects_sent: u64,
    rejects_limited: u64,
}

/// The replay summary.
#[derive(Serialize)]
pub struct Report {
    capture: String,
    frames: u64,
    passed: u64,
    dropped: u64,
    unfiltered: u64,
    malformed: BTreeMap<&'static str, u64>,
    generation: u64,
    switches: u64,
    workers: usize,
    /// With several workers: the frame from which a table held in parts filled, so the replay ran
    /// again on one worker (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    one_worker_from: Option<u64>,
    drop_reasons: BTreeMap<&'static str, u64>,
    filters: Vec<FilterReport>,
}

impl Report {
    /// Gathers the report from a finished replay.
    pub fn new(capture: &str, s: &ReplaySummary, engine: &Engine) -> Report {
        let mut drop_reasons: BTreeMap<&'static str, u64> = s.malformed.clone();
        let snap = engine.snapshot();
        let empty = FilterCounters::default();
        let filters = snap
            .filters
            .iter()
            .map(|f| {
                let c = s.counters.get(f.slot).unwrap_or(&empty);
                let dir = |d: usize| DirCounts {
                    pass: c.verdicts.iter().map(|fam| fam[d][0]).sum(),
                    drop: c.verdicts.iter().map(|fam| fam[d][1]).sum(),
                    reject: c.verdicts.iter().map(|fam| fam[d][2]).sum(),
                    punt: c.verdicts.iter().map(|fam| fam[d][3]).sum(),
                };
                for (reason, n) in c.reason_map(true) {
                    *drop_reasons.entry(reason).or_default() += n;
                }
                FilterReport {
                    name: f.name.clone(),
                    passed: c.passed(),
                    dropped: c.dropped(),
                    dir_in: dir(0),
                    out: dir(1),
                    reasons: c.reason_map(false),
                    rules: c
                        .rule_list()
                        .into_iter()
                        .map(|((l2, id), r)| RuleReport {
                            ruleset: f.ruleset_name(l2).unwrap_or(if l2 { "L2" } else { "L3" }).to_string(),
                            id,
                            packets: r.packets,
                            bytes: r.bytes,
                            sessions: r.sessions,
                            hits: r.hits,
                        })
                        .collect(),
                    connections: s.connections.get(f.slot).copied().unwrap_or(0),
                    torn_down: c.torn_down,
                    rejects_sent: c.rejects_sent,
                    rejects_limited: c.rejects_limited,
                }
            })
            .collect();
        Report {
            capture: capture.to_string(),
            frames: s.frames,
            passed: s.passed,
            dropped: s.dropped,
            unfiltered: s.unfiltered,
            malformed: s.malformed.clone(),
            generation: engine.generation(),
            switches: s.switches,
            workers: s.workers,
            one_worker_from: s.one_worker_from,
            drop_reasons,
            filters,
        }
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let malformed: u64 = self.malformed.values().sum();
        let _ = writeln!(
            o,
            "{}: {} frames: {} passed, {} dropped, {} unfiltered, {} malformed; {} policy switch(es), generation {}",
            self.capture, self.frames, self.passed, self.dropped, self.unfiltered, malformed, self.switches, self.generation
        );
        for f in &self.filters {
            let _ = writeln!(
                o,
                "\nfilter {}: {} passed, {} dropped (in: {} pass / {} drop, out: {} pass / {} drop), {} connections",
                f.name,
                f.passed,
                f.dropped,
                f.dir_in.pass,
                f.dir_in.drop + f.dir_in.reject + f.dir_in.punt,
                f.out.pass,
                f.out.drop + f.out.reject + f.out.punt,
                f.connections
            );
            let _ = writeln!(
                o,
                "  {:<12} {:>8} {:>10} {:>9} {:>8}",
                "rule", "packets", "bytes", "sessions", "hits"
            );
            for r in &f.rules {
                let name = format!("{}/{}", r.ruleset, r.id);
                let _ = writeln!(
                    o,
                    "  {:<12} {:>8} {:>10} {:>9} {:>8}",
                    name, r.packets, r.bytes, r.sessions, r.hits
                );
            }
            let reasons: Vec<String> = f.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(o, "  reasons: {}", reasons.join(", "));
        }
        if !self.drop_reasons.is_empty() {
            let reasons: Vec<String> = self.drop_reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(o, "\ndrop reasons: {}", reasons.join(", "));
        }
        if let Some(frame) = self.one_worker_from {
            let _ = writeln!(
                o,
                "note: the {} workers each hold their part of every connection limit and fragment table; by frame \
                 {frame} a part had filled, so the replay ran again on one worker, whose results these are",
                self.workers
            );
        }
        o
    }
}

/// Where `--log` lines go.
pub struct LogSink {
    out: Output,
}

impl LogSink {
    /// Opens `path` (`-` is stdout); `None` writes nothing.
    pub fn open(path: Option<&Path>) -> Result<LogSink> {
        Ok(LogSink { out: open_output(path, "log file")? })
    }

    /// Writes a log line for log events.
    pub fn event(&mut self, ev: &Event<'_>) -> Result<()> {
        let (Some((w, name)), Event::Log(rec)) = (&mut self.out, ev) else { return Ok(()) };
        writeln!(w, "{rec}").with_context(|| format!("{name}: write failed"))
    }

    /// Flushes.
    pub fn finish(&mut self) -> Result<()> {
        flush_output(&mut self.out)
    }
}
