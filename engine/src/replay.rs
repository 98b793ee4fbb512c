//! Replaying a capture file through the engine, with optional policy switches at given frames or times.

use std::collections::BTreeMap;

use pktio::capture::{Capture, CaptureError};
use pktio::parse::parse_frame;
use rules::Policy;

use crate::{Decision, Engine, FrameOutcome, LoadError};

/// Names that go with a filter index in reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterLabel {
    /// Filter name.
    pub name: String,
    /// Name of its L3 rule set, if loaded.
    pub l3: Option<String>,
    /// Name of its L2 rule set, if loaded.
    pub l2: Option<String>,
}

impl FilterLabel {
    /// Labels of every filter of `engine`, by index.
    pub fn of(engine: &Engine) -> Vec<FilterLabel> {
        engine
            .filters()
            .iter()
            .map(|f| FilterLabel {
                name: f.name.clone(),
                l3: f.policy.l3.as_ref().map(|r| r.name().to_string()),
                l2: f.policy.l2.as_ref().map(|r| r.name().to_string()),
            })
            .collect()
    }

    /// The name of the rule set a decision's rule belongs to.
    pub fn ruleset(&self, l2: bool) -> Option<&str> {
        if l2 {
            self.l2.as_deref()
        } else {
            self.l3.as_deref()
        }
    }
}

/// When a policy switch happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchPoint {
    /// Before the frame with this 1-based number.
    Frame(u64),
    /// Before the first frame whose timestamp is at or after this time (ns since the UNIX epoch).
    Time(u64),
}

/// A policy to put in force part-way through a replay.
#[derive(Debug, Clone)]
pub struct Switch {
    /// When.
    pub at: SwitchPoint,
    /// The new policy.
    pub policy: Policy,
    /// A label for reports (usually the file name).
    pub label: String,
}

/// Something that happened during a replay, in capture order.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A filter decided a frame.
    Decision {
        /// 1-based frame number.
        frame: u64,
        /// The decision.
        decision: &'a Decision,
        /// Names of the deciding filter.
        filter: &'a FilterLabel,
    },
    /// A frame could not be parsed and was dropped.
    Malformed {
        /// 1-based frame number.
        frame: u64,
        /// The parser's reason code.
        reason: &'static str,
    },
    /// A policy switch took effect before `frame`.
    Switched {
        /// 1-based number of the first frame under the new policy.
        frame: u64,
        /// The engine's new generation.
        generation: u64,
        /// The switch's label.
        label: &'a str,
    },
}

/// Frame totals of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Frames read.
    pub frames: u64,
    /// Frames every crossed filter passed.
    pub passed: u64,
    /// Frames some crossed filter did not pass.
    pub dropped: u64,
    /// Frames that crossed no filter.
    pub unfiltered: u64,
    /// Frames dropped because they could not be parsed, by reason.
    pub malformed: BTreeMap<&'static str, u64>,
    /// Policy switches applied.
    pub switches: u64,
}

/// A replay that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture file is unreadable or damaged.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A switched-in policy could not be loaded.
    #[error("policy switch '{label}': {source}")]
    Load {
        /// The switch's label.
        label: String,
        /// Why.
        source: LoadError,
    },
}

/// Replays `capture` through `engine`, applying `switches` (sorted by the caller in the order they
/// should happen) as their points are reached. `on_event` sees every decision and switch.
pub fn replay(
    capture: &Capture,
    engine: &mut Engine,
    switches: &[Switch],
    mut on_event: impl FnMut(Event<'_>),
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let mut labels = FilterLabel::of(engine);
    let mut next_switch = 0;
    for (n, frame) in capture.frames().enumerate() {
        let frame = frame?;
        let number = n as u64 + 1;
        while let Some(sw) = switches.get(next_switch) {
            let due = match sw.at {
                SwitchPoint::Frame(f) => number >= f,
                SwitchPoint::Time(t) => frame.ts_nanos >= t,
            };
            if !due {
                break;
            }
            engine
                .load(&sw.policy)
                .map_err(|source| ReplayError::Load { label: sw.label.clone(), source })?;
            summary.switches += 1;
            labels = FilterLabel::of(engine);
            on_event(Event::Switched { frame: number, generation: engine.generation(), label: &sw.label });
            next_switch += 1;
        }
        summary.frames += 1;
        let pkt = match parse_frame(frame.link, frame.data, frame.wire_len) {
            Ok(p) => p,
            Err(e) => {
                *summary.malformed.entry(e.reason()).or_default() += 1;
                on_event(Event::Malformed { frame: number, reason: e.reason() });
                continue;
            }
        };
        let outcome = engine.process(&pkt, frame.ts_nanos, |d| {
            on_event(Event::Decision { frame: number, decision: d, filter: &labels[d.filter] })
        });
        match outcome {
            FrameOutcome::Passed => summary.passed += 1,
            FrameOutcome::Dropped => summary.dropped += 1,
            FrameOutcome::Unfiltered => summary.unfiltered += 1,
        }
    }
    Ok(summary)
}
