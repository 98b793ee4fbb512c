//! What a filter decided about one frame, and why.

use rules::Direction;

/// The outcome for one frame at one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Passed on.
    Pass,
    /// Dropped silently.
    Drop,
    /// Dropped; the rule asks for a TCP RST / ICMP unreachable back to the sender.
    Reject,
    /// Handed to a service queue (rule action `punt`).
    Punt,
}

impl Verdict {
    /// `pass`, `drop`, `reject`, `punt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
            Verdict::Punt => "punt",
        }
    }

    /// True unless the frame continues on its way.
    pub fn is_drop(self) -> bool {
        !matches!(self, Verdict::Pass)
    }
}

/// Connection state of the frame as the filter saw it (conntrack's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// First packet of a connection (decided by rules).
    New,
    /// Part of a tracked connection.
    Established,
    /// An ICMP error about a tracked connection.
    Related,
    /// Does not fit the tracked state (e.g. non-SYN first packet under `strict`).
    Invalid,
    /// Not tracked: a stateless rule, an L2-only decision, or no decision by rules.
    None,
}

impl ConnState {
    /// `new`, `established`, `related`, `invalid`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::New => "new",
            ConnState::Established => "established",
            ConnState::Related => "related",
            ConnState::Invalid => "invalid",
            ConnState::None => "none",
        }
    }
}

/// Why a filter decided as it did. Drop reasons use pf's codes where pf has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A rule decided.
    Match,
    /// A tracked connection (or the one an ICMP error quotes) decided.
    State,
    /// Rules are loaded but none matched: dfw denies by default.
    NoMatch,
    /// Nothing is loaded and the filter is failClosed.
    FailClosed,
    /// Nothing is loaded and the filter is failOpen.
    FailOpen,
    /// A frame the loaded rule sets do not cover (non-IP frame with no L2 rule set, or an IP frame with
    /// only an L2 rule set) passed on the L2 decision / by default.
    Unfiltered,
    /// pf `state-mismatch`: non-SYN first packet under `strict`.
    StateMismatch,
    /// pf `state-limit`: the connection table is full.
    StateLimit,
    /// The frame could not be parsed; the string is the parser's reason (`short`, `bad-offset`, ...).
    Malformed(&'static str),
}

impl Reason {
    /// The code written in verdicts and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Match => "match",
            Reason::State => "state",
            Reason::NoMatch => "no-match",
            Reason::FailClosed => "fail-closed",
            Reason::FailOpen => "fail-open",
            Reason::Unfiltered => "unfiltered",
            Reason::StateMismatch => "state-mismatch",
            Reason::StateLimit => "state-limit",
            Reason::Malformed(r) => r,
        }
    }
}

/// The rule that decided (or that created the connection which decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// True for the L2 (`*_L2`) rule set.
    pub l2: bool,
    /// Rule id.
    pub id: u32,
}

/// One filter's decision on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the filter in the engine's filter list.
    pub filter: usize,
    /// Direction of the frame through this filter.
    pub dir: Direction,
    /// Outcome.
    pub verdict: Verdict,
    /// Connection state.
    pub state: ConnState,
    /// Why.
    pub reason: Reason,
    /// The deciding rule, if any.
    pub rule: Option<RuleRef>,
}
