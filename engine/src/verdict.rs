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
    /// A frame the loaded rule sets do not cover (a non-IP frame with no L2 rule set) passed.
    Unfiltered,
    /// pf `state-mismatch`: outside the TCP window, an inexact RST, a bad SYN-ACK, or a non-SYN first
    /// packet under `strict`.
    StateMismatch,
    /// pf `state-limit`: the connection table is full.
    StateLimit,
    /// pf `fragment`: a fragment whose first fragment never decided it, or an overlapping fragment.
    Fragment,
    /// A connection a changed policy no longer allows was torn down (policy revalidation).
    Revalidate,
    /// pf `ip-option`: a source-routed datagram (IPv4 LSRR / SSRR option, IPv6 type 0 routing header).
    IpOption,
    /// pf `short`: the frame ends before a header it announces.
    Short,
    /// pf `bad-offset`: a fragment offset or option runs past what the header allows.
    BadOffset,
    /// A header length field below the minimum or past the frame.
    BadHeaderLength,
    /// The IP version does not match the ethertype.
    BadVersion,
    /// An IP or UDP length field that does not fit.
    BadLength,
    /// Any other parse failure.
    Malformed,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 17] = [
        Reason::Match,
        Reason::State,
        Reason::NoMatch,
        Reason::FailClosed,
        Reason::FailOpen,
        Reason::Unfiltered,
        Reason::StateMismatch,
        Reason::StateLimit,
        Reason::Fragment,
        Reason::Revalidate,
        Reason::IpOption,
        Reason::Short,
        Reason::BadOffset,
        Reason::BadHeaderLength,
        Reason::BadVersion,
        Reason::BadLength,
        Reason::Malformed,
    ];

    /// The code written in verdicts, logs and summaries.
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
            Reason::Fragment => "fragment",
            Reason::Revalidate => "revalidate",
            Reason::IpOption => "ip-option",
            Reason::Short => "short",
            Reason::BadOffset => "bad-offset",
            Reason::BadHeaderLength => "bad-header-length",
            Reason::BadVersion => "bad-version",
            Reason::BadLength => "bad-length",
            Reason::Malformed => "malformed",
        }
    }

    /// The reason for a frame the parser rejected.
    pub fn of_parse_error(e: &pktio::ParseError) -> Reason {
        match e.reason() {
            "short" => Reason::Short,
            "bad-offset" => Reason::BadOffset,
            "bad-header-length" => Reason::BadHeaderLength,
            "bad-version" => Reason::BadVersion,
            "bad-length" => Reason::BadLength,
            _ => Reason::Malformed,
        }
    }

    /// Position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        // Variants are declared in `ALL` order, so the discriminant is the position.
        self as usize
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
    /// The caller's number for the frame (replay: 1-based position in the capture).
    pub frame: u64,
    /// Index of the filter in the snapshot that decided.
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
    /// The policy generation of the filter that decided.
    pub generation: u64,
}
