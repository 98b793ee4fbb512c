//! Stateful tracking of one TCP connection: sequence windows, handshake, teardown and resets.
//!
//! A [`TcpState`] follows one connection from both ends. It is pure (no clock, no I/O), allocation
//! free and `Copy`; the connection table owns one per TCP entry, calls [`TcpState::track`] for every
//! segment and turns the [`TcpOutcome`] into a verdict. The table keeps the timers: it asks
//! [`TcpState::timer`] which one applies after each accepted segment.
//!
//! # Windows
//!
//! The window check is the one of Guido van Rooij's "Real Stateful TCP Packet Filtering in IP
//! Filter" as OpenBSD pf runs it (`pf_tcp_track_full`) and Open vSwitch ports it
//! (`lib/conntrack-tcp.c`). Each end keeps
//!
//! - `seqlo`: the sequence number after the highest one it has sent (SYN and FIN count one each),
//! - `seqhi`: the highest sequence number the other end's ACKs and windows let it reach,
//! - `max_win`: the largest window it advertised (unscaled),
//! - `max_ack`: the highest acknowledgement it sent (Linux's `td_maxack`).
//!
//! A segment fits when its last octet is at most `seqhi`, its first is no more than the receiver's
//! largest window behind `seqlo` (retransmissions and keep-alives pass), and its acknowledgement is
//! within about one maximal window of what the other end has sent. Segments without payload carry no
//! sequence information worth checking (pf "eases" them). Window scaling applies only when both the
//! SYN and the SYN-ACK carried the option; windows in SYN segments are never scaled (RFC 7323 §2.2).
//!
//! A connection picked up mid-stream (first segment not a SYN) has missed the handshake, so the
//! window scale is unknown: as OVS does, both ends are then assumed to scale by the maximum, 14, and
//! an end's first segment initialises its window. Segments of an end whose peer has not spoken yet,
//! or after both ends closed, are checked loosely (one maximal window either side), as pf does.
//!
//! # Resets and SYNs on a live connection (RFC 5961, the way Linux conntrack does it)
//!
//! While both ends are established and no FIN was seen, an RST closes the connection only when its
//! sequence number is exactly the next one the receiver expects — the highest ACK the receiver has
//! sent, or, if it has acknowledged nothing, the sender's `seqlo`. Any other RST is invalid and
//! changes nothing (a blind attacker must hit one number, not a window). After a FIN, or during the
//! handshake, any RST inside the receive window closes.
//!
//! A SYN on a synchronised connection is let through and remembered, so the endpoint can answer it
//! with a challenge ACK (RFC 5961 §4). The ACK passes like any segment; an RST from the SYN's sender
//! carrying the challenge ACK's number closes the entry, and the retransmitted SYN then gets
//! [`TcpOutcome::Reopen`]. If instead the other end answers the SYN with a SYN-ACK acknowledging it
//! (it had lost the old connection), the tracker re-synchronises on the new handshake.
//!
//! # Per-end states
//!
//! Each end has a state named after the TCP state machine (pf's names), moved by the segments the
//! tracker accepts. A normal connection, with the states after each segment:
//!
//! ```text
//!   initiator                             responder
//!   SYN_SENT      ── SYN ──────────▶      CLOSED
//!   ESTABLISHED   ◀────────── SYN-ACK ──  SYN_RCVD
//!   ESTABLISHED   ── ACK ──────────▶      ESTABLISHED
//!   FIN_WAIT_1    ── FIN ──────────▶      ESTABLISHED
//!   FIN_WAIT_2    ◀────────────── ACK ──  CLOSE_WAIT
//!   FIN_WAIT_2    ◀────────────── FIN ──  LAST_ACK
//!   TIME_WAIT     ── ACK ──────────▶      TIME_WAIT
//! ```
//!
//! All transitions, for the end named in the first column:
//!
//! ```text
//!   CLOSED                 sends SYN                               → SYN_SENT
//!   CLOSED                 sends SYN-ACK                           → SYN_RCVD
//!   CLOSED                 sends anything else (mid-stream pickup) → ESTABLISHED
//!   SYN_SENT               sends SYN-ACK (simultaneous open)       → SYN_RCVD
//!   SYN_SENT, SYN_RCVD     the other end ACKs                      → ESTABLISHED
//!   up to ESTABLISHED      sends FIN                               → FIN_WAIT_1
//!   up to ESTABLISHED      ACKs the other end's FIN                → CLOSE_WAIT
//!   CLOSE_WAIT             sends FIN                               → LAST_ACK
//!   FIN_WAIT_1             its FIN is ACKed                        → FIN_WAIT_2
//!   FIN_WAIT_1             ACKs the other end's FIN                → CLOSING
//!   FIN_WAIT_2             ACKs the other end's FIN                → TIME_WAIT
//!   CLOSING, LAST_ACK      its FIN is ACKed                        → TIME_WAIT
//!   any                    an RST is accepted (both ends)          → TIME_WAIT
//! ```
//!
//! An accepted RST puts both ends in TIME_WAIT, as pf does. A pure SYN when both ends are at least
//! FIN_WAIT_2 (both FINs acknowledged), or after an RST, is [`TcpOutcome::Reopen`]: the tuple is
//! being reused (TIME_WAIT assassination is the endpoint's business, not the firewall's).

use std::fmt;

use pktio::{tcpflags, TcpInfo};

/// Largest window scale shift (RFC 7323 §2.3).
const MAX_WSCALE: u8 = 14;

/// How far an acknowledgement may stray from what the other end sent: one maximal unscaled window
/// plus pf's 1500-byte fudge factor.
const MAX_ACK_WINDOW: u32 = 0xffff + 1500;

/// `a < b` in sequence space (RFC 1982 serial arithmetic over 32 bits).
fn seq_lt(a: u32, b: u32) -> bool {
    seq_diff(a, b) < 0
}

/// `a <= b` in sequence space.
fn seq_leq(a: u32, b: u32) -> bool {
    seq_diff(a, b) <= 0
}

/// `a > b` in sequence space.
fn seq_gt(a: u32, b: u32) -> bool {
    seq_diff(a, b) > 0
}

/// `a >= b` in sequence space.
fn seq_geq(a: u32, b: u32) -> bool {
    seq_diff(a, b) >= 0
}

/// `a - b` as a signed distance in sequence space.
fn seq_diff(a: u32, b: u32) -> i32 {
    // Reinterpreting the wrapped difference as two's complement is the point of serial arithmetic.
    a.wrapping_sub(b) as i32
}

/// Which side sent a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end that sent the connection's first segment.
    Initiator,
    /// The other end.
    Responder,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Initiator => Side::Responder,
            Side::Responder => Side::Initiator,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Initiator => 0,
            Side::Responder => 1,
        }
    }
}

/// Per-direction TCP state names (pf's, from `tcp_fsm.h`), for `getflows` display. The order is
/// meaningful: later states are further into the teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerState {
    /// Nothing seen from this end.
    Closed,
    /// Listening (not produced by the tracker; kept for pf's numbering and display).
    Listen,
    /// Sent a SYN not yet acknowledged.
    SynSent,
    /// Sent a SYN-ACK not yet acknowledged.
    SynReceived,
    /// Handshake complete (or picked up mid-stream).
    Established,
    /// Acknowledged the other end's FIN, has not sent its own.
    CloseWait,
    /// Sent a FIN not yet acknowledged.
    FinWait1,
    /// Sent a FIN and acknowledged the other's FIN, its own FIN not yet acknowledged.
    Closing,
    /// Sent its FIN after acknowledging the other's; waiting for the last ACK.
    LastAck,
    /// Its FIN is acknowledged; the other end has not finished.
    FinWait2,
    /// Both FINs acknowledged, or the connection was reset.
    TimeWait,
}

impl PeerState {
    /// pf's display name (`ESTABLISHED`, `FIN_WAIT_2`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Closed => "CLOSED",
            PeerState::Listen => "LISTEN",
            PeerState::SynSent => "SYN_SENT",
            PeerState::SynReceived => "SYN_RCVD",
            PeerState::Established => "ESTABLISHED",
            PeerState::CloseWait => "CLOSE_WAIT",
            PeerState::FinWait1 => "FIN_WAIT_1",
            PeerState::Closing => "CLOSING",
            PeerState::LastAck => "LAST_ACK",
            PeerState::FinWait2 => "FIN_WAIT_2",
            PeerState::TimeWait => "TIME_WAIT",
        }
    }

    /// True once this end has sent its FIN.
    fn fin_sent(self) -> bool {
        self >= PeerState::FinWait1
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which NSX (pf) timer applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpTimer {
    /// Only one end has spoken (a SYN, or a picked-up segment, awaiting an answer).
    First,
    /// Handshake in progress.
    Opening,
    /// Both ends established.
    Established,
    /// One end has sent a FIN.
    Closing,
    /// Both ends have sent their FIN.
    FinWait,
    /// Both FINs acknowledged, or reset.
    Closed,
}

impl TcpTimer {
    /// pf's timeout name (`tcp.first`, `tcp.opening`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TcpTimer::First => "tcp.first",
            TcpTimer::Opening => "tcp.opening",
            TcpTimer::Established => "tcp.established",
            TcpTimer::Closing => "tcp.closing",
            TcpTimer::FinWait => "tcp.finwait",
            TcpTimer::Closed => "tcp.closed",
        }
    }
}

/// Why a segment does not fit its connection. All of them are logged as `state-mismatch`; the code
/// says which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// An impossible flag combination (SYN with RST or FIN; no ACK on a segment other than SYN/RST;
    /// FIN, PSH or URG without ACK).
    BadFlags,
    /// Data or FIN outside the sequence window.
    SeqWindow,
    /// Acknowledgement too far from what the other end sent.
    AckWindow,
    /// RST inside the window but not at the exact expected sequence number (RFC 5961 §3).
    RstInexact,
    /// RST outside the window.
    RstWindow,
    /// RST answering a SYN that does not acknowledge it (RFC 793, SYN-SENT).
    RstAck,
    /// SYN-ACK whose acknowledgement does not match the SYN.
    SynAckAck,
}

impl InvalidReason {
    /// Short code for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::BadFlags => "bad-flags",
            InvalidReason::SeqWindow => "seq-window",
            InvalidReason::AckWindow => "ack-window",
            InvalidReason::RstInexact => "rst-inexact",
            InvalidReason::RstWindow => "rst-window",
            InvalidReason::RstAck => "rst-ack",
            InvalidReason::SynAckAck => "synack-ack",
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOutcome {
    /// Fits the connection: pass, state updated.
    Accept,
    /// Does not fit: drop as `state-mismatch`; the state is unchanged.
    Invalid(InvalidReason),
    /// A SYN that starts a new connection on this tuple (both ends closed, or after an RST): the
    /// caller removes the entry and treats the SYN as a new connection. The state is unchanged.
    Reopen,
}

/// Why/how the connection ended (for the TERM log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// An accepted RST.
    Rst,
    /// Both FINs sent and acknowledged.
    Fin,
}

/// Flag bits of [`Peer::bits`]; the high nibble holds the window scale shift.
mod bits {
    /// The end has sent a segment.
    pub const SEEN: u8 = 0x01;
    /// The end has sent a SYN.
    pub const SYN: u8 = 0x02;
    /// `max_ack` holds an acknowledgement this end sent.
    pub const ACKED: u8 = 0x04;
    /// The end's SYN carried the window scale option (and the option still applies).
    pub const WSCALE: u8 = 0x08;
    /// Position of the shift count.
    pub const SHIFT_POS: u32 = 4;
}

/// What the tracker knows of one end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    /// Sequence number after the highest one sent.
    seqlo: u32,
    /// Highest sequence number the other end lets this end reach (its ACK plus its window).
    seqhi: u32,
    /// Highest acknowledgement sent (valid with [`bits::ACKED`]).
    max_ack: u32,
    /// Largest window advertised, before scaling (a SYN's window is divided by the own scale).
    max_win: u16,
    state: PeerState,
    /// [`bits`] flags and the window scale shift.
    bits: u8,
}

impl Peer {
    /// An end not heard from yet. `max_win` 1 is pf's placeholder until the first segment.
    const UNSEEN: Peer =
        Peer { seqlo: 0, seqhi: 0, max_ack: 0, max_win: 1, state: PeerState::Closed, bits: 0 };

    fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    fn seen(&self) -> bool {
        self.has(bits::SEEN)
    }

    /// Window scale shift this end announced (meaningful with [`bits::WSCALE`]).
    fn shift(&self) -> u32 {
        u32::from(self.bits >> bits::SHIFT_POS)
    }

    fn set_wscale(&mut self, shift: u8) {
        self.bits = (self.bits & 0x0f) | bits::WSCALE | (shift.min(MAX_WSCALE) << bits::SHIFT_POS);
    }

    /// Drops a window scale that will never apply, converting `max_win` back to bytes (pf's fixup
    /// when the SYN-ACK carries no scale option).
    fn drop_wscale(&mut self) {
        if self.has(bits::WSCALE) {
            self.max_win = (u32::from(self.max_win) << self.shift()).min(0xffff) as u16;
            self.bits &= 0x0f & !bits::WSCALE;
        }
    }

    /// The SYN this end sent is still waiting for its acknowledgement.
    fn syn_unacked(&self) -> bool {
        self.has(bits::SYN) && matches!(self.state, PeerState::SynSent | PeerState::SynReceived)
    }
}

/// A SYN seen on a synchronised connection and what followed it (RFC 5961 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    /// That side sent a SYN; `pending_seq` is its sequence number plus one.
    Syn(Side),
    /// The other side answered that side's SYN with an ACK; `pending_seq` is the ACK's number.
    Challenge(Side),
}

impl Pending {
    /// The code [`TcpState::flags`] keeps at [`conn::PENDING_POS`].
    fn code(self) -> u8 {
        match self {
            Pending::None => 0,
            Pending::Syn(Side::Initiator) => 1,
            Pending::Syn(Side::Responder) => 2,
            Pending::Challenge(Side::Initiator) => 3,
            Pending::Challenge(Side::Responder) => 4,
        }
    }

    fn of(code: u8) -> Pending {
        match code {
            1 => Pending::Syn(Side::Initiator),
            2 => Pending::Syn(Side::Responder),
            3 => Pending::Challenge(Side::Initiator),
            4 => Pending::Challenge(Side::Responder),
            _ => Pending::None,
        }
    }
}

/// Connection-wide flag bits of [`TcpState::flags`].
mod conn {
    /// Closed by an accepted RST.
    pub const RESET: u8 = 0x01;
    /// Window scale unknown (picked up mid-stream): both ends scale by the maximum.
    pub const LOOSE_SCALE: u8 = 0x02;
    /// Position of the [`super::Pending`] code (three bits; 0: none).
    pub const PENDING_POS: u32 = 2;
    /// The bits of the pending code.
    pub const PENDING: u8 = 0x07 << PENDING_POS;
}

/// TCP tracking state of one connection; see the [module documentation](self).
///
/// 37 bytes of state and three the tracker never reads or changes ([`TcpState::host`]), where padding
/// would otherwise be: a connection keeps its own fields there, so that its whole entry, key and
/// timers included, fits one 64-byte cache line (see `conntrack::Conn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpState {
    /// Initiator, responder.
    peers: [Peer; 2],
    pending_seq: u32,
    /// [`conn`] flags and the pending code.
    flags: u8,
    /// The holder's bytes: the tracker copies them along with its state and nothing else.
    pub(crate) host: [u8; 3],
}

/// The checks' view of one segment.
#[derive(Debug, Clone, Copy)]
struct Seg {
    seq: u32,
    /// `seq` plus payload, SYN and FIN.
    end: u32,
    ack: u32,
    win: u16,
    syn: bool,
    ack_flag: bool,
    fin: bool,
    rst: bool,
}

impl Seg {
    fn of(t: &TcpInfo) -> Seg {
        let has = |f| t.flags & f != 0;
        let (syn, fin) = (has(tcpflags::SYN), has(tcpflags::FIN));
        let len = u32::from(t.payload_len) + u32::from(syn) + u32::from(fin);
        Seg {
            seq: t.seq,
            end: t.seq.wrapping_add(len),
            ack: t.ack,
            win: t.window,
            syn,
            ack_flag: has(tcpflags::ACK),
            fin,
            rst: has(tcpflags::RST),
        }
    }
}

/// The flag combinations no TCP sends, as pf's normaliser and OVS reject them: `None` when `flags` is
/// plausible, `Some(InvalidReason::BadFlags)` otherwise. [`TcpState::track`] applies it; a caller
/// may apply it to a connection's first segment before [`TcpState::new`].
pub fn flags_error(flags: u8) -> Option<InvalidReason> {
    let has = |f| flags & f != 0;
    let syn_with_rst_or_fin = has(tcpflags::SYN) && (has(tcpflags::RST) || has(tcpflags::FIN));
    let neither_syn_ack_nor_rst = !has(tcpflags::SYN) && !has(tcpflags::ACK) && !has(tcpflags::RST);
    let needs_ack = !has(tcpflags::ACK) && (has(tcpflags::FIN) || has(tcpflags::PSH) || has(tcpflags::URG));
    (syn_with_rst_or_fin || neither_syn_ack_nor_rst || needs_ack).then_some(InvalidReason::BadFlags)
}

/// A plain ACK (PSH allowed, no other flag): the only segment [`TcpState::track_established`] takes, so
/// a caller can pass over any other without looking its connection up.
#[inline(always)]
pub fn plain_ack(flags: u8) -> bool {
    flags & !tcpflags::PSH == tcpflags::ACK
}

impl TcpState {
    /// A tracker that has seen nothing: the place of one in a connection of another protocol.
    pub(crate) const EMPTY: TcpState =
        TcpState { peers: [Peer::UNSEEN; 2], pending_seq: 0, flags: 0, host: [0; 3] };

    /// State for a connection whose first segment (from the initiator) is `seg`. A SYN starts a
    /// normal handshake; anything else is a loose mid-stream pickup (the caller enforces `strict`
    /// before calling, and may reject impossible flags with [`flags_error`]).
    pub fn new(seg: &TcpInfo) -> TcpState {
        let s = Seg::of(seg);
        // A pure SYN will show both scale options. A SYN-ACK shows the responder's; if it has none,
        // scaling is off for both (RFC 7323 §1.3), otherwise the initiator's shift is unknown.
        let loose = if s.syn && !s.ack_flag { false } else { !s.syn || seg.options.wscale.is_some() };
        let mut st = TcpState { flags: if loose { conn::LOOSE_SCALE } else { 0 }, ..TcpState::EMPTY };
        st.first_segment(Side::Initiator, &s, seg);
        if s.rst {
            st.close_by_rst();
        } else {
            st.accept(Side::Initiator, &s, 0);
        }
        st
    }

    /// Tracks one segment sent by `side`. On anything but [`TcpOutcome::Accept`] the state is left
    /// exactly as it was.
    #[inline]
    pub fn track(&mut self, side: Side, seg: &TcpInfo) -> TcpOutcome {
        if self.track_established(side, seg) {
            return TcpOutcome::Accept;
        }
        self.track_full(side, seg)
    }

    /// The common case, done in place: a plain ACK (PSH allowed) between two established ends with no
    /// SYN pending and no RST accepted before, inside the windows. Returns false, having changed nothing, for anything else, which
    /// [`TcpState::track_full`] then decides. Where it accepts, it makes exactly the changes the full
    /// tracker makes (a property test holds the two together).
    /// Both ends are still established afterwards (and no RST was ever accepted), so the timer that
    /// applies is [`TcpTimer::Established`].
    #[inline(always)]
    pub fn track_established(&mut self, x: Side, seg: &TcpInfo) -> bool {
        if !plain_ack(seg.flags) || self.flags & (conn::PENDING | conn::RESET) != 0 {
            return false;
        }
        let (xi, yi) = (x.index(), x.other().index());
        let (p, q) = (&self.peers[xi], &self.peers[yi]);
        let established = |e: &Peer| e.state == PeerState::Established && e.seen();
        if !(established(p) && established(q)) {
            return false;
        }
        let (sws, dws) = self.scale_shifts(p, q);
        let end = seg.seq.wrapping_add(u32::from(seg.payload_len));
        let (seq, eased_end) = if seg.payload_len == 0 { (p.seqlo, p.seqlo) } else { (seg.seq, end) };
        let ackskew = i64::from(seq_diff(q.seqlo, seg.ack));
        let back = (u32::from(q.max_win) << dws).max(1);
        let seq_ok = seq_geq(p.seqhi, eased_end) && seq_geq(seq, p.seqlo.wrapping_sub(back));
        let ack_ok = ackskew >= -i64::from(MAX_ACK_WINDOW) && ackskew <= i64::from(MAX_ACK_WINDOW) << sws;
        if !(seq_ok && ack_ok) {
            return false;
        }
        // Changed in place, field by field (the ends are read above, before any change).
        let hi = seg.ack.wrapping_add((u32::from(seg.window) << sws).max(1));
        let q = &mut self.peers[yi];
        if seq_geq(hi, q.seqhi) {
            q.seqhi = hi;
        }
        let p = &mut self.peers[xi];
        if seg.window > p.max_win {
            p.max_win = seg.window;
        }
        if seq_gt(end, p.seqlo) {
            p.seqlo = end;
        }
        if !p.has(bits::ACKED) || seq_lt(p.max_ack, seg.ack) {
            p.max_ack = seg.ack;
            p.bits |= bits::ACKED;
        }
        true
    }

    /// Whether `seq`, the sequence number of a segment from `x` that an ICMP error quotes, is one that
    /// end could have sent lately: not past the highest its peer allows, and at most the peer's largest
    /// window behind the highest it sent. pf's check of the TCP segment an ICMP error quotes, which keeps
    /// a blind attacker who knows only the addresses and ports from passing errors that would reset or
    /// slow the connection (RFC 5927 §4.1, "TCP sequence number checking"). Changes nothing.
    pub fn quote_fits(&self, x: Side, seq: u32) -> bool {
        let (p, q) = (self.peer(x), self.peer(x.other()));
        if !p.seen() {
            // That end never sent anything this tracker saw.
            return false;
        }
        let (_, dws) = self.scale_shifts(p, q);
        let back = (u32::from(q.max_win) << dws).max(1);
        seq_geq(p.seqhi, seq) && seq_geq(seq, p.seqlo.wrapping_sub(back))
    }

    /// [`TcpState::track`] without the in-place fast path: every rule, on a working copy.
    pub fn track_full(&mut self, side: Side, seg: &TcpInfo) -> TcpOutcome {
        if let Some(reason) = flags_error(seg.flags) {
            return TcpOutcome::Invalid(reason);
        }
        // Work on a copy: every check may fail after tentative changes (a first segment initialises
        // its end), and an invalid segment must change nothing.
        let mut next = *self;
        let outcome = next.step(side, seg);
        if outcome == TcpOutcome::Accept {
            *self = next;
        }
        outcome
    }

    /// The timer that applies now (pf's choice, with this tracker's finer FIN states).
    pub fn timer(&self) -> TcpTimer {
        let [a, b] = self.peers();
        if self.has(conn::RESET) || (a == PeerState::TimeWait && b == PeerState::TimeWait) {
            TcpTimer::Closed
        } else if a.fin_sent() && b.fin_sent() {
            TcpTimer::FinWait
        } else if (a == PeerState::Closed) != (b == PeerState::Closed) {
            TcpTimer::First
        } else if a < PeerState::Established || b < PeerState::Established {
            TcpTimer::Opening
        } else if a >= PeerState::CloseWait || b >= PeerState::CloseWait {
            TcpTimer::Closing
        } else {
            TcpTimer::Established
        }
    }

    /// Per-end states, `[initiator, responder]`.
    pub fn peers(&self) -> [PeerState; 2] {
        [self.peers[0].state, self.peers[1].state]
    }

    /// How the connection ended, once it has.
    pub fn end_cause(&self) -> Option<EndCause> {
        let [a, b] = self.peers();
        if self.has(conn::RESET) {
            Some(EndCause::Rst)
        } else if a == PeerState::TimeWait && b == PeerState::TimeWait {
            Some(EndCause::Fin)
        } else {
            None
        }
    }

    /// True when the window scale was not seen in a handshake and both ends are assumed to use the
    /// maximum (mid-stream pickup).
    pub fn loose_scale(&self) -> bool {
        self.has(conn::LOOSE_SCALE)
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn pending(&self) -> Pending {
        Pending::of((self.flags & conn::PENDING) >> conn::PENDING_POS)
    }

    fn set_pending(&mut self, p: Pending) {
        self.flags = self.flags & !conn::PENDING | p.code() << conn::PENDING_POS;
    }

    fn peer(&self, side: Side) -> &Peer {
        &self.peers[side.index()]
    }

    fn peer_mut(&mut self, side: Side) -> &mut Peer {
        &mut self.peers[side.index()]
    }

    /// [`TcpState::track`] on the working copy.
    fn step(&mut self, x: Side, seg: &TcpInfo) -> TcpOutcome {
        let s = Seg::of(seg);
        if s.syn {
            let early = if s.ack_flag { self.syn_ack(x, &s, seg) } else { self.pure_syn(x, &s) };
            if let Some(outcome) = early {
                return outcome;
            }
        }
        let first = !self.peer(x).seen();
        if first {
            self.first_segment(x, &s, seg);
        }
        if s.rst {
            return self.rst(x, &s, first);
        }
        let (sws, dws) = self.shifts(x, &s);
        let (p, q) = (*self.peer(x), *self.peer(x.other()));

        // Segments without payload, SYN or FIN carry no sequence information to check.
        let (seq, end) = if s.seq == s.end { (p.seqlo, p.seqlo) } else { (s.seq, s.end) };
        // Without an ACK, or towards an end not heard from, there is no acknowledgement to check.
        let ack = if s.ack_flag && q.seen() { s.ack } else { q.seqlo };
        let ackskew = i64::from(seq_diff(q.seqlo, ack));
        let back = (u32::from(q.max_win) << dws).max(1);
        let seq_ok = seq_geq(p.seqhi, end) && seq_geq(seq, p.seqlo.wrapping_sub(back));
        let ack_ok = ackskew >= -i64::from(MAX_ACK_WINDOW) && ackskew <= i64::from(MAX_ACK_WINDOW) << sws;
        if !(seq_ok && ack_ok) {
            // pf's loose branch: an end whose peer is silent (pickup, shotgunned SYNs) or a
            // connection that has finished closing may stray up to a maximal window either way.
            let loose = !q.seen() || p.state >= PeerState::FinWait2 || q.state >= PeerState::FinWait2;
            let near = seq_geq(p.seqhi.wrapping_add(MAX_ACK_WINDOW), end)
                && seq_geq(seq, p.seqlo.wrapping_sub(MAX_ACK_WINDOW));
            if !(loose && near) {
                let reason = if seq_ok { InvalidReason::AckWindow } else { InvalidReason::SeqWindow };
                return TcpOutcome::Invalid(reason);
            }
        }
        self.accept(x, &s, sws);
        TcpOutcome::Accept
    }

    /// A SYN without ACK. `Some` decides it; `None` sends it through the window check.
    fn pure_syn(&mut self, x: Side, s: &Seg) -> Option<TcpOutcome> {
        let (p, q) = (*self.peer(x), *self.peer(x.other()));
        if self.has(conn::RESET) || (p.state >= PeerState::FinWait2 && q.state >= PeerState::FinWait2) {
            return Some(TcpOutcome::Reopen);
        }
        if !p.seen() {
            // Simultaneous open (or a SYN from the silent end of a pickup): its first segment.
            return None;
        }
        // The same SYN again ends where the first one did.
        let retransmit = p.has(bits::SYN) && s.end == p.seqlo;
        if !q.seen() {
            // Nobody answered yet: a retransmission passes; a new ISN means the initiator gave up on
            // the first attempt and starts over (Linux re-initialises here too).
            return if retransmit { None } else { Some(TcpOutcome::Reopen) };
        }
        if retransmit {
            return None;
        }
        // Both ends have spoken: pass the SYN untouched so the endpoint can answer with a challenge
        // ACK (RFC 5961 §4), and remember it (Linux's "ignored SYN").
        self.set_pending(Pending::Syn(x));
        self.pending_seq = s.seq.wrapping_add(1);
        Some(TcpOutcome::Accept)
    }

    /// A SYN-ACK. `Some` decides it; `None` sends it through the window check.
    fn syn_ack(&mut self, x: Side, s: &Seg, seg: &TcpInfo) -> Option<TcpOutcome> {
        let y = x.other();
        if self.pending() == Pending::Syn(y) && s.ack == self.pending_seq && self.peer(x).seen() {
            // The other end had lost the connection and accepts the SYN we let through: start over
            // from that SYN, whose window and scale we did not keep (so scale loosely if any).
            self.resync(y, seg);
            return None;
        }
        let q = self.peer(y);
        if q.syn_unacked() && s.ack != q.seqlo {
            return Some(TcpOutcome::Invalid(InvalidReason::SynAckAck));
        }
        None
    }

    /// Restarts tracking at a handshake whose SYN came from `y` (ISN `pending_seq - 1`) and whose
    /// SYN-ACK (`seg`, from the other side) is being processed.
    fn resync(&mut self, y: Side, seg: &TcpInfo) {
        let syn_end = self.pending_seq;
        let mut fresh = Peer::UNSEEN;
        fresh.seqlo = syn_end;
        fresh.seqhi = syn_end;
        fresh.state = PeerState::SynSent;
        fresh.bits = bits::SEEN | bits::SYN;
        self.peers = [Peer::UNSEEN; 2];
        *self.peer_mut(y) = fresh;
        // (The pending code is cleared with the flags.)
        self.flags = if seg.options.wscale.is_some() { conn::LOOSE_SCALE } else { 0 };
    }

    /// Initialises end `x` from its first segment.
    fn first_segment(&mut self, x: Side, s: &Seg, seg: &TcpInfo) {
        let y = x.other();
        let mut p = Peer::UNSEEN;
        p.bits = bits::SEEN;
        let win = s.win.max(1);
        p.max_win = win;
        let q = self.peer_mut(y);
        if s.syn {
            p.bits |= bits::SYN;
            match seg.options.wscale {
                // A SYN-ACK's option counts only if the SYN offered scaling (RFC 7323 §1.3).
                Some(ws) if !q.has(bits::SYN) || q.has(bits::WSCALE) => {
                    p.set_wscale(ws);
                    // Keep the window in units of the scale it will be read with later.
                    let shift = p.shift();
                    p.max_win = ((u32::from(win) + (1 << shift) - 1) >> shift) as u16;
                }
                _ => q.drop_wscale(),
            }
        } else {
            // No SYN from this end: the other's scale option can never apply.
            q.drop_wscale();
        }
        let dws = if s.syn { 0 } else { self.shifts(x, s).1 };
        let q = self.peer(y);
        p.seqlo = s.seq;
        p.seqhi = s.end.wrapping_add((u32::from(q.max_win) << dws).max(1));
        *self.peer_mut(x) = p;
    }

    /// Window scale shifts `(sender, receiver)` for a segment from `x`.
    fn shifts(&self, x: Side, s: &Seg) -> (u32, u32) {
        if s.syn {
            (0, 0)
        } else {
            self.scale_shifts(self.peer(x), self.peer(x.other()))
        }
    }

    /// Window scale shifts `(sender, receiver)` between ends `p` (sending) and `q`, for a segment
    /// without SYN: the largest when scaling was picked up loosely, the ends' own when both offered
    /// it, none otherwise.
    #[inline(always)]
    fn scale_shifts(&self, p: &Peer, q: &Peer) -> (u32, u32) {
        if self.has(conn::LOOSE_SCALE) {
            (MAX_WSCALE.into(), MAX_WSCALE.into())
        } else if p.has(bits::WSCALE) && q.has(bits::WSCALE) {
            (p.shift(), q.shift())
        } else {
            (0, 0)
        }
    }

    /// An RST from `x`; `first` when it is the first segment from that end.
    fn rst(&mut self, x: Side, s: &Seg, first: bool) -> TcpOutcome {
        let (p, q) = (*self.peer(x), *self.peer(x.other()));
        if first && q.syn_unacked() {
            // Refusing a SYN: the RST must acknowledge it (RFC 793, SYN-SENT).
            if s.ack_flag && s.ack == q.seqlo {
                self.close_by_rst();
                return TcpOutcome::Accept;
            }
            return TcpOutcome::Invalid(InvalidReason::RstAck);
        }
        // The number the receiver expects next (Linux: the receiver's td_maxack).
        let expected = if q.has(bits::ACKED) { q.max_ack } else { p.seqlo };
        let answers_challenge = self.pending() == Pending::Challenge(x) && s.seq == self.pending_seq;
        let in_window = seq_geq(s.seq, expected) && seq_leq(s.seq, p.seqhi);
        let fin_seen = p.state >= PeerState::CloseWait || q.state >= PeerState::CloseWait;
        // RFC 5961 §3 exactness applies while synchronised (including a connection picked up) and
        // no FIN was seen; during the handshake and the close, the window is enough.
        let exact_only = q.state == PeerState::Established
            && (p.state == PeerState::Established || first)
            && !fin_seen
            && !self.has(conn::RESET);
        if s.seq == expected || answers_challenge || (in_window && !exact_only) {
            self.close_by_rst();
            TcpOutcome::Accept
        } else if in_window {
            TcpOutcome::Invalid(InvalidReason::RstInexact)
        } else {
            TcpOutcome::Invalid(InvalidReason::RstWindow)
        }
    }

    fn close_by_rst(&mut self) {
        for p in &mut self.peers {
            p.state = PeerState::TimeWait;
        }
        self.flags |= conn::RESET;
        self.set_pending(Pending::None);
    }

    /// Applies an accepted segment from `x`: windows, then states.
    fn accept(&mut self, x: Side, s: &Seg, sws: u32) {
        let y = x.other();
        let q_seen = self.peer(y).seen();
        let p = self.peer_mut(x);
        // A SYN's window is unscaled and was stored divided by the scale at the first SYN.
        if !s.syn && s.win > p.max_win {
            p.max_win = s.win;
        }
        if seq_gt(s.end, p.seqlo) {
            p.seqlo = s.end;
        }
        if s.ack_flag {
            if !p.has(bits::ACKED) || seq_lt(p.max_ack, s.ack) {
                p.max_ack = s.ack;
                p.bits |= bits::ACKED;
            }
            if q_seen {
                // Slide the window of what the other end may send.
                let win = (u32::from(s.win) << sws).max(1);
                let q = self.peer_mut(y);
                let hi = s.ack.wrapping_add(win);
                if seq_geq(hi, q.seqhi) {
                    q.seqhi = hi;
                }
            }
            if self.pending() == Pending::Syn(y) && !s.syn {
                // Most likely the challenge ACK for that SYN.
                self.set_pending(Pending::Challenge(y));
                self.pending_seq = s.ack;
            }
        }
        self.advance_states(x, s);
    }

    /// Per-end state transitions for an accepted, non-RST segment from `x` (see the diagram).
    fn advance_states(&mut self, x: Side, s: &Seg) {
        use PeerState::*;
        let y = x.other();
        if s.ack_flag {
            let q = *self.peer(y);
            if matches!(q.state, SynSent | SynReceived) {
                self.peer_mut(y).state = Established;
            } else if matches!(q.state, FinWait1 | Closing | LastAck) && seq_geq(s.ack, q.seqlo) {
                // The other end's FIN is acknowledged: it moves on, and this end has received it.
                self.peer_mut(y).state = if q.state == FinWait1 { FinWait2 } else { TimeWait };
                let p = self.peer_mut(x);
                p.state = match p.state {
                    FinWait1 => Closing,
                    FinWait2 => TimeWait,
                    st if st < CloseWait => CloseWait,
                    st => st,
                };
            }
        }
        let p = self.peer_mut(x);
        if s.syn {
            p.state = match (p.state, s.ack_flag) {
                (Closed | Listen, false) => SynSent,
                (Closed | Listen | SynSent, true) => SynReceived,
                (st, _) => st,
            };
        } else if p.state == Closed {
            // First segment of an end whose handshake was not seen.
            p.state = Established;
        }
        if s.fin {
            p.state = match p.state {
                CloseWait => LastAck,
                st if st < CloseWait => FinWait1,
                st => st,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod fast_path {
        use proptest::prelude::*;

        use super::*;

        /// One step of a conversation: who sends, flags, and where seq/ack fall relative to what the
        /// tracker expects (most near the expected numbers, some anywhere).
        #[derive(Debug, Clone)]
        struct Step {
            responder: bool,
            flags: u8,
            seq: (bool, u32),
            ack: (bool, u32),
            window: u16,
            payload_len: u16,
            wscale: Option<u8>,
        }

        fn step() -> impl Strategy<Value = Step> {
            let flags = prop_oneof![
                24 => Just(tcpflags::ACK),
                18 => Just(tcpflags::ACK | tcpflags::PSH),
                1 => Just(tcpflags::SYN),
                1 => Just(tcpflags::SYN | tcpflags::ACK),
                1 => Just(tcpflags::FIN | tcpflags::ACK),
                1 => Just(tcpflags::RST),
                1 => Just(tcpflags::RST | tcpflags::ACK),
                1 => any::<u8>(),
            ];
            // Exactly the expected number (500 is the centre), near it, or anywhere.
            let off = prop_oneof![
                4 => (Just(true), Just(500u32)),
                4 => (Just(true), 0u32..2000),
                1 => (Just(false), any::<u32>())
            ];
            (any::<bool>(), flags, off.clone(), off, any::<u16>(), 0u16..1500, prop::option::of(0u8..16))
                .prop_map(|(responder, flags, seq, ack, window, payload_len, wscale)| Step {
                    responder,
                    flags,
                    seq,
                    ack,
                    window,
                    payload_len,
                    wscale,
                })
        }

        /// The segment of `st` for the current state: offsets count from the sender's next sequence
        /// number and from the other end's.
        fn segment(st: &TcpState, s: &Step) -> (Side, TcpInfo) {
            let side = if s.responder { Side::Responder } else { Side::Initiator };
            let (p, q) = (st.peer(side), st.peer(side.other()));
            let at = |(near, v): (bool, u32), base: u32| {
                if near {
                    base.wrapping_add(v).wrapping_sub(500)
                } else {
                    v
                }
            };
            let seg = TcpInfo {
                sport: 1,
                dport: 2,
                seq: at(s.seq, p.seqlo),
                ack: at(s.ack, q.seqlo),
                flags: s.flags,
                window: s.window,
                payload_len: s.payload_len,
                options: pktio::TcpOptions { wscale: s.wscale, ..Default::default() },
            };
            (side, seg)
        }

        /// Runs a conversation through both trackers; returns how many segments the fast path took.
        fn converse(first: &Step, rest: &[Step]) -> Result<usize, TestCaseError> {
            let (_, open) =
                segment(&TcpState::new(&TcpInfo { flags: tcpflags::SYN, ..segment_zero() }), first);
            let mut fast = TcpState::new(&open);
            let mut full = fast;
            let mut taken = 0;
            for s in rest {
                let (side, seg) = segment(&full, s);
                let mut probe = fast;
                if probe.track_established(side, &seg) {
                    taken += 1;
                    prop_assert_eq!(probe.timer(), TcpTimer::Established);
                }
                prop_assert_eq!(fast.track(side, &seg), full.track_full(side, &seg));
                prop_assert_eq!(fast, full);
            }
            Ok(taken)
        }

        fn segment_zero() -> TcpInfo {
            TcpInfo {
                sport: 1,
                dport: 2,
                seq: 0,
                ack: 0,
                flags: 0,
                window: 0,
                payload_len: 0,
                options: pktio::TcpOptions::default(),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            /// Along random conversations, the fast path never disagrees with the full tracker: same
            /// outcome, same state afterwards.
            #[test]
            fn fast_path_agrees_with_full_tracker(first in step(), rest in prop::collection::vec(step(), 1..60)) {
                converse(&first, &rest)?;
            }
        }

        /// The property above means something only if its conversations often reach the fast path.
        #[test]
        fn random_conversations_reach_the_fast_path() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let strategy = (step(), prop::collection::vec(step(), 20..60));
            let (mut taken, mut total) = (0, 0);
            for _ in 0..500 {
                let (first, rest) = strategy.new_tree(&mut runner).unwrap().current();
                taken += converse(&first, &rest).unwrap();
                total += rest.len();
            }
            eprintln!("fast path taken on {taken} of {total} segments");
            assert!(taken * 5 > total, "fast path taken on {taken} of {total} segments");
        }

        /// The property above only means something if conversations reach the fast path often.
        #[test]
        fn handshake_then_data_takes_the_fast_path() {
            let seg = |flags, seq, ack, payload_len| TcpInfo {
                sport: 1,
                dport: 2,
                seq,
                ack,
                flags,
                window: 1000,
                payload_len,
                options: pktio::TcpOptions::default(),
            };
            let mut st = TcpState::new(&seg(tcpflags::SYN, 100, 0, 0));
            assert_eq!(
                st.track(Side::Responder, &seg(tcpflags::SYN | tcpflags::ACK, 500, 101, 0)),
                TcpOutcome::Accept
            );
            let mut probe = st;
            assert!(!probe.track_established(Side::Initiator, &seg(tcpflags::ACK, 101, 501, 0)));
            assert_eq!(st.track(Side::Initiator, &seg(tcpflags::ACK, 101, 501, 0)), TcpOutcome::Accept);
            let mut copy = st;
            assert!(st.track_established(Side::Initiator, &seg(tcpflags::ACK | tcpflags::PSH, 101, 501, 10)));
            assert_eq!(
                copy.track_full(Side::Initiator, &seg(tcpflags::ACK | tcpflags::PSH, 101, 501, 10)),
                TcpOutcome::Accept
            );
            assert_eq!(st, copy);
            // Out of window: left to the full tracker, state untouched.
            let before = st;
            assert!(!st.track_established(Side::Initiator, &seg(tcpflags::ACK, 900_000, 501, 10)));
            assert_eq!(st, before);
        }
    }

    #[test]
    fn sequence_helpers_wrap() {
        assert!(seq_lt(u32::MAX, 0));
        assert!(seq_gt(0, u32::MAX));
        assert!(seq_leq(5, 5) && seq_geq(5, 5));
        assert!(seq_lt(0x7fff_fff0, 0x8000_0010));
        assert_eq!(seq_diff(3, u32::MAX - 1), 5);
    }

    #[test]
    fn state_is_compact() {
        assert!(std::mem::size_of::<TcpState>() <= 40);
    }

    #[test]
    fn impossible_flags() {
        use tcpflags::*;
        for ok in [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, ACK | URG] {
            assert_eq!(flags_error(ok), None, "{ok:#x}");
        }
        for bad in [0, SYN | RST, SYN | FIN, FIN, PSH, URG, FIN | PSH | URG, RST | FIN] {
            assert_eq!(flags_error(bad), Some(InvalidReason::BadFlags), "{bad:#x}");
        }
    }
}
