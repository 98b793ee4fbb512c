//! Extra outputs of `dfw replay`: `--write-passed` / `--write-dropped` pcaps (a frame is dropped when
//! any filter on its path did not pass it, or it could not be parsed; every other frame, unfiltered
//! ones included, passed) and a progress bar shown when a replay takes more than two seconds.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use engine::replay::Event;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pktio::{Capture, LinkType, PcapWriter};

/// Which frames some filter did not pass, by 1-based frame number.
#[derive(Default)]
pub struct Fates {
    dropped: Vec<u64>,
}

impl Fates {
    fn mark(&mut self, frame: u64) {
        let (w, b) = ((frame / 64) as usize, frame % 64);
        if self.dropped.len() <= w {
            self.dropped.resize(w + 1, 0);
        }
        self.dropped[w] |= 1 << b;
    }

    /// True when frame `n` was dropped.
    pub fn is_dropped(&self, frame: u64) -> bool {
        self.dropped.get((frame / 64) as usize).is_some_and(|w| w & (1 << (frame % 64)) != 0)
    }

    /// Notes one replay event.
    pub fn event(&mut self, ev: &Event<'_>) {
        match ev {
            Event::Decision { decision, .. } if decision.verdict.is_drop() => self.mark(decision.frame),
            Event::Malformed { frame, .. } => self.mark(*frame),
            _ => {}
        }
    }
}

fn writer(path: Option<&Path>, link: LinkType) -> Result<Option<PcapWriter<BufWriter<File>>>> {
    let Some(p) = path else { return Ok(None) };
    let f = File::create(p).with_context(|| format!("{}: cannot create", p.display()))?;
    Ok(Some(
        PcapWriter::new(BufWriter::new(f), link, 262_144)
            .with_context(|| format!("{}: write failed", p.display()))?,
    ))
}

/// Writes the capture's frames into the passed and dropped pcaps. Frames of another link type than
/// the first frame's (pcapng with mixed interfaces) are left out; their count is returned.
pub fn write(cap: &Capture, fates: &Fates, passed: Option<&Path>, dropped: Option<&Path>) -> Result<u64> {
    let link = cap.frames().next().and_then(|f| f.ok()).map_or(LinkType::Ethernet, |f| f.link);
    let mut pw = writer(passed, link)?;
    let mut dw = writer(dropped, link)?;
    let mut skipped = 0;
    for (i, f) in cap.frames().enumerate() {
        let f = f?;
        if f.link != link {
            skipped += 1;
            continue;
        }
        let (w, path) = if fates.is_dropped(i as u64 + 1) { (&mut dw, dropped) } else { (&mut pw, passed) };
        if let (Some(w), Some(p)) = (w, path) {
            w.write_frame(f.ts_nanos, f.data, f.wire_len)
                .with_context(|| format!("{}: write failed", p.display()))?;
        }
    }
    for (w, p) in [(pw, passed), (dw, dropped)] {
        if let (Some(mut w), Some(p)) = (w, p) {
            w.flush().with_context(|| format!("{}: write failed", p.display()))?;
        }
    }
    Ok(skipped)
}

/// A progress bar on stderr that appears only once the replay has run for two seconds: frames decided
/// out of the total when `counted` (events flow), an elapsed-time spinner otherwise.
pub fn progress(cap: &Capture, counted: bool) -> ProgressBar {
    let bar = if counted {
        let total = cap.frames().count() as u64;
        let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(s) = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} frames ({per_sec}, eta {eta})",
        ) {
            b.set_style(s.progress_chars("=> "));
        }
        b
    } else {
        let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(s) = ProgressStyle::with_template("{spinner} {elapsed_precise} replaying {msg}") {
            b.set_style(s);
        }
        b.set_message(cap.path().display().to_string());
        b
    };
    let shown = bar.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        if !shown.is_finished() {
            shown.set_draw_target(ProgressDrawTarget::stderr());
            shown.enable_steady_tick(Duration::from_millis(200));
        }
    });
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_mark_frames() {
        let mut f = Fates::default();
        f.mark(1);
        f.mark(130);
        assert!(f.is_dropped(1) && f.is_dropped(130));
        assert!(!f.is_dropped(2) && !f.is_dropped(10_000));
    }
}
