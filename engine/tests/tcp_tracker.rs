//! Scenarios for the TCP connection tracker (`engine::tcp`): each one builds the segments of a
//! connection as `TcpInfo`s, runs them through a `TcpState` and asserts every outcome and the per-end
//! states, timers and end causes along the way. The last three replay Open vSwitch's conntrack
//! vectors (shared/testdata/conntrack/ovs) and check the outcomes upstream expects.

use std::path::Path;

use engine::tcp::{flags_error, EndCause, InvalidReason, PeerState, Side, TcpOutcome, TcpState, TcpTimer};
use pktio::{parse_frame, tcpflags, Capture, TcpInfo, TcpOptions, L4};
use proptest::prelude::*;

use InvalidReason::*;
use PeerState::*;
use Side::{Initiator as I, Responder as R};
use TcpOutcome::{Accept, Invalid, Reopen};

const SYN: u8 = tcpflags::SYN;
const ACK: u8 = tcpflags::ACK;
const FIN: u8 = tcpflags::FIN;
const RST: u8 = tcpflags::RST;
const PSH: u8 = tcpflags::PSH;
const SYNACK: u8 = SYN | ACK;
const FINACK: u8 = FIN | ACK;
const DATA: u8 = PSH | ACK;

/// Window used by default: 29200, Linux's initial window, as in the OVS vectors.
const WIN: u16 = 29200;

/// Initial sequence numbers of the initiator and the responder in most scenarios.
const ISN_I: u32 = 1000;
const ISN_R: u32 = 5000;

/// A segment with `len` payload bytes and the default window.
fn seg(flags: u8, seq: u32, ack: u32, len: u16) -> TcpInfo {
    TcpInfo {
        sport: 40000,
        dport: 80,
        seq,
        ack,
        flags,
        window: WIN,
        payload_len: len,
        options: TcpOptions::default(),
    }
}

fn win(mut t: TcpInfo, window: u16) -> TcpInfo {
    t.window = window;
    t
}

fn wscale(mut t: TcpInfo, shift: u8) -> TcpInfo {
    t.options.wscale = Some(shift);
    t
}

/// Tracks `t` from `side`, asserts the outcome, and that anything but `Accept` changed nothing.
#[track_caller]
fn step(st: &mut TcpState, side: Side, t: TcpInfo, want: TcpOutcome) {
    let before = *st;
    let got = st.track(side, &t);
    assert_eq!(
        got, want,
        "{side:?} flags {:#04x} seq {} ack {} len {}",
        t.flags, t.seq, t.ack, t.payload_len
    );
    if want != Accept {
        assert_eq!(*st, before, "a {want:?} segment changed the state");
    }
}

/// Asserts per-end states, timer and end cause.
#[track_caller]
fn check(st: &TcpState, peers: [PeerState; 2], timer: TcpTimer, end: Option<EndCause>) {
    assert_eq!(st.peers(), peers, "peers");
    assert_eq!(st.timer(), timer, "timer");
    assert_eq!(st.end_cause(), end, "end cause");
}

/// A connection after SYN, SYN-ACK, ACK with the given ISNs.
fn handshake(isn_i: u32, isn_r: u32) -> TcpState {
    let mut st = TcpState::new(&seg(SYN, isn_i, 0, 0));
    step(&mut st, R, seg(SYNACK, isn_r, isn_i.wrapping_add(1), 0), Accept);
    step(&mut st, I, seg(ACK, isn_i.wrapping_add(1), isn_r.wrapping_add(1), 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    st
}

/// `handshake`, then the initiator sends 100 bytes and the responder acknowledges them: the
/// initiator's next sequence number is 1101, the responder's 5001.
fn established_after_request() -> TcpState {
    let mut st = handshake(ISN_I, ISN_R);
    step(&mut st, I, seg(DATA, 1001, 5001, 100), Accept);
    step(&mut st, R, seg(ACK, 5001, 1101, 0), Accept);
    st
}

#[test]
fn full_connection_walks_every_timer() {
    let mut st = TcpState::new(&seg(SYN, ISN_I, 0, 0));
    check(&st, [SynSent, Closed], TcpTimer::First, None);
    assert!(!st.loose_scale());

    step(&mut st, R, seg(SYNACK, ISN_R, 1001, 0), Accept);
    check(&st, [Established, SynReceived], TcpTimer::Opening, None);

    step(&mut st, I, seg(ACK, 1001, 5001, 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);

    step(&mut st, I, seg(DATA, 1001, 5001, 100), Accept);
    step(&mut st, R, seg(ACK, 5001, 1101, 0), Accept);
    step(&mut st, R, seg(DATA, 5001, 1101, 200), Accept);
    step(&mut st, I, seg(ACK, 1101, 5201, 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);

    // The initiator closes first.
    step(&mut st, I, seg(FINACK, 1101, 5201, 0), Accept);
    check(&st, [FinWait1, Established], TcpTimer::Closing, None);

    step(&mut st, R, seg(ACK, 5201, 1102, 0), Accept);
    check(&st, [FinWait2, CloseWait], TcpTimer::Closing, None);

    step(&mut st, R, seg(FINACK, 5201, 1102, 0), Accept);
    check(&st, [FinWait2, LastAck], TcpTimer::FinWait, None);

    step(&mut st, I, seg(ACK, 1102, 5202, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Fin));

    // A late retransmission of the last ACK still fits.
    step(&mut st, I, seg(ACK, 1102, 5202, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Fin));

    // TIME_WAIT reuse: a new SYN on the tuple, from either end, is a new connection.
    step(&mut st, I, seg(SYN, 900_000, 0, 0), Reopen);
    step(&mut st, R, seg(SYN, 700_000, 0, 0), Reopen);
}

#[test]
fn simultaneous_close() {
    let mut st = established_after_request();
    step(&mut st, I, seg(FINACK, 1101, 5001, 0), Accept);
    // The responder's FIN crosses the initiator's: it does not acknowledge it.
    step(&mut st, R, seg(FINACK, 5001, 1101, 0), Accept);
    check(&st, [FinWait1, FinWait1], TcpTimer::FinWait, None);
    step(&mut st, I, seg(ACK, 1102, 5002, 0), Accept);
    check(&st, [Closing, FinWait2], TcpTimer::FinWait, None);
    step(&mut st, R, seg(ACK, 5002, 1102, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Fin));
}

#[test]
fn rst_at_exact_sequence_closes_established() {
    let mut st = established_after_request();
    // The responder acknowledged up to 1101: only that number resets.
    step(&mut st, I, seg(RST, 1101, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
    // After the reset a SYN starts a new connection.
    step(&mut st, I, seg(SYN, 77, 0, 0), Reopen);
}

#[test]
fn rst_from_responder_uses_initiators_highest_ack() {
    let mut st = established_after_request();
    // The initiator's highest ACK is 5001 (from its request).
    step(&mut st, R, seg(RST | ACK, 5002, 1101, 0), Invalid(RstInexact));
    step(&mut st, R, seg(RST | ACK, 5001, 1101, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
}

#[test]
fn rst_inexact_or_out_of_window_is_invalid_while_established() {
    let mut st = established_after_request();
    // Inside the window [1101, 1101 + 29200] but not exact: RFC 5961 blind-reset protection.
    step(&mut st, I, seg(RST, 1111, 0, 0), Invalid(RstInexact));
    step(&mut st, I, seg(RST, 1101 + 29_000, 0, 0), Invalid(RstInexact));
    // Outside: far ahead, or behind what the responder already acknowledged.
    step(&mut st, I, seg(RST, 1101 + 100_000, 0, 0), Invalid(RstWindow));
    step(&mut st, I, seg(RST, 1100, 0, 0), Invalid(RstWindow));
    step(&mut st, I, seg(RST, 1101u32.wrapping_sub(0x8000_0000), 0, 0), Invalid(RstWindow));
    check(&st, [Established, Established], TcpTimer::Established, None);
    // The connection carries on, and the exact reset still works.
    step(&mut st, I, seg(DATA, 1101, 5001, 10), Accept);
    step(&mut st, R, seg(ACK, 5001, 1111, 0), Accept);
    step(&mut st, I, seg(RST, 1111, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
}

#[test]
fn rst_in_window_closes_after_a_fin() {
    let mut st = established_after_request();
    step(&mut st, I, seg(FINACK, 1101, 5001, 0), Accept);
    check(&st, [FinWait1, Established], TcpTimer::Closing, None);
    // The responder's window is [5001, 5001 + 29200]: an inexact RST inside it now closes.
    step(&mut st, R, seg(RST, 5001 + 40_000, 0, 0), Invalid(RstWindow));
    step(&mut st, R, seg(RST, 5000, 0, 0), Invalid(RstWindow));
    step(&mut st, R, seg(RST, 5011, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
}

#[test]
fn rst_in_window_closes_after_the_other_ends_fin() {
    let mut st = established_after_request();
    step(&mut st, R, seg(FINACK, 5001, 1101, 0), Accept);
    step(&mut st, I, seg(ACK, 1101, 5002, 0), Accept);
    check(&st, [CloseWait, FinWait2], TcpTimer::Closing, None);
    step(&mut st, I, seg(RST, 1105, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
}

#[test]
fn rst_during_handshake() {
    // The initiator has acknowledged nothing yet: the responder's expected number is its own seqlo.
    let mut st = TcpState::new(&seg(SYN, ISN_I, 0, 0));
    step(&mut st, R, seg(SYNACK, ISN_R, 1001, 0), Accept);
    step(&mut st, R, seg(RST, 5001 + 100_000, 0, 0), Invalid(RstWindow));
    step(&mut st, R, seg(RST, 5001, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
}

#[test]
fn rst_refusing_a_syn_must_acknowledge_it() {
    let mut st = TcpState::new(&seg(SYN, ISN_I, 0, 0));
    step(&mut st, R, seg(RST, 0, 0, 0), Invalid(RstAck));
    step(&mut st, R, seg(RST | ACK, 0, 1000, 0), Invalid(RstAck));
    step(&mut st, R, seg(RST | ACK, 0, 1001, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
    // The client tries again.
    step(&mut st, I, seg(SYN, ISN_I, 0, 0), Reopen);
}

#[test]
fn syn_on_established_challenge_ack_rst_then_reopen() {
    let mut st = established_after_request();
    // The initiator rebooted and reuses the port with a new ISN. The SYN passes, unchanged state.
    let new_isn = 3_000_000_000;
    step(&mut st, I, seg(SYN, new_isn, 0, 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    // The responder answers with a challenge ACK for its view of the old connection.
    step(&mut st, R, seg(ACK, 5001, 1101, 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    // The initiator has no such connection and resets it with the ACK's number; a guess is refused.
    step(&mut st, I, seg(RST, 1102, 0, 0), Invalid(RstInexact));
    step(&mut st, I, seg(RST, 1101, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
    // Its retransmitted SYN starts the new connection.
    step(&mut st, I, seg(SYN, new_isn, 0, 0), Reopen);
}

#[test]
fn syn_acked_by_an_end_that_lost_the_connection_resynchronises() {
    let mut st = established_after_request();
    let new_isn = 3_000_000_000;
    step(&mut st, I, seg(SYN, new_isn, 0, 0), Accept);
    // A SYN-ACK for something else is still a bad SYN-ACK...
    step(&mut st, R, seg(SYNACK, 900_000, new_isn + 5, 0), Invalid(SeqWindow));
    // ...but the responder had rebooted and accepts the new SYN: track the new handshake.
    step(&mut st, R, seg(SYNACK, 900_000, new_isn + 1, 0), Accept);
    check(&st, [Established, SynReceived], TcpTimer::Opening, None);
    step(&mut st, I, seg(ACK, new_isn + 1, 900_001, 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    step(&mut st, I, seg(DATA, new_isn + 1, 900_001, 1000), Accept);
    step(&mut st, R, seg(DATA, 900_001, new_isn + 1001, 1000), Accept);
    // The old connection's numbers are gone.
    step(&mut st, I, seg(DATA, 1101, 5001, 100), Invalid(SeqWindow));
}

#[test]
fn bad_synack_is_invalid_then_the_correct_one_passes() {
    let mut st = TcpState::new(&seg(SYN, ISN_I, 0, 0));
    let before = st;
    // A stale SYN-ACK (previous connection's ISN) and one acknowledging the ISN itself.
    step(&mut st, R, seg(SYNACK, 123_456, 771, 0), Invalid(SynAckAck));
    step(&mut st, R, seg(SYNACK, ISN_R, 1000, 0), Invalid(SynAckAck));
    assert_eq!(st, before);
    check(&st, [SynSent, Closed], TcpTimer::First, None);
    step(&mut st, R, seg(SYNACK, ISN_R, 1001, 0), Accept);
    check(&st, [Established, SynReceived], TcpTimer::Opening, None);
    // Its retransmission passes.
    step(&mut st, R, seg(SYNACK, ISN_R, 1001, 0), Accept);
    step(&mut st, I, seg(ACK, 1001, 5001, 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
}

#[test]
fn retransmitted_syn_passes_and_a_new_isn_reopens() {
    let mut st = TcpState::new(&seg(SYN, ISN_I, 0, 0));
    step(&mut st, I, seg(SYN, ISN_I, 0, 0), Accept);
    check(&st, [SynSent, Closed], TcpTimer::First, None);
    // Nobody answered; a SYN with another ISN is a fresh attempt.
    step(&mut st, I, seg(SYN, ISN_I + 50_000, 0, 0), Reopen);
    // Once answered, the original SYN may still be retransmitted (the SYN-ACK was lost).
    step(&mut st, R, seg(SYNACK, ISN_R, 1001, 0), Accept);
    step(&mut st, I, seg(SYN, ISN_I, 0, 0), Accept);
    check(&st, [Established, SynReceived], TcpTimer::Opening, None);
}

#[test]
fn simultaneous_open() {
    let mut st = TcpState::new(&seg(SYN, ISN_I, 0, 0));
    step(&mut st, R, seg(SYN, ISN_R, 0, 0), Accept);
    check(&st, [SynSent, SynSent], TcpTimer::Opening, None);
    // A SYN-ACK that does not acknowledge the other SYN is refused in this state too.
    step(&mut st, I, seg(SYNACK, ISN_I, 5005, 0), Invalid(SynAckAck));
    step(&mut st, I, seg(SYNACK, ISN_I, 5001, 0), Accept);
    check(&st, [SynReceived, Established], TcpTimer::Opening, None);
    step(&mut st, R, seg(SYNACK, ISN_R, 1001, 0), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    step(&mut st, I, seg(DATA, 1001, 5001, 500), Accept);
    step(&mut st, R, seg(DATA, 5001, 1501, 500), Accept);
}

#[test]
fn retransmission_of_acknowledged_data_passes() {
    let mut st = handshake(ISN_I, ISN_R);
    step(&mut st, I, seg(DATA, 1001, 5001, 500), Accept);
    step(&mut st, R, seg(ACK, 5001, 1501, 0), Accept);
    let after = st;
    // The whole segment again, and a partial overlap, after the ACK.
    step(&mut st, I, seg(DATA, 1001, 5001, 500), Accept);
    assert_eq!(st, after, "a retransmission moves nothing");
    step(&mut st, I, seg(DATA, 1401, 5001, 200), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    // Old duplicate ACKs from the responder too.
    step(&mut st, R, seg(ACK, 5001, 1001, 0), Accept);
}

#[test]
fn keepalives_pass() {
    let mut st = established_after_request();
    // seq = seqlo - 1 with no data (Linux) or one garbage byte (BSD).
    step(&mut st, I, seg(ACK, 1100, 5001, 0), Accept);
    step(&mut st, I, seg(ACK, 1100, 5001, 1), Accept);
    step(&mut st, R, seg(ACK, 5000, 1101, 0), Accept);
    step(&mut st, R, seg(ACK, 5000, 1101, 1), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    // The exact reset is unchanged by them.
    step(&mut st, I, seg(RST, 1101, 0, 0), Accept);
}

#[test]
fn data_far_out_of_window_is_invalid_and_changes_nothing() {
    let mut st = established_after_request();
    step(&mut st, I, seg(DATA, 1101 + 10_000_000, 5001, 100), Invalid(SeqWindow));
    step(&mut st, I, seg(DATA, 1101 + 29_200 - 50, 5001, 100), Invalid(SeqWindow));
    step(&mut st, I, seg(DATA, 1101u32.wrapping_sub(1_000_000), 5001, 100), Invalid(SeqWindow));
    step(&mut st, R, seg(DATA, 5001u32.wrapping_add(0x9000_0000), 1101, 8), Invalid(SeqWindow));
    // Acknowledging data that was never sent (beyond the slack of a maximal window).
    step(&mut st, I, seg(ACK, 1101, 5001 + 1_000_000, 0), Invalid(AckWindow));
    step(&mut st, I, seg(DATA, 1101, 5001 + 1_000_000, 10), Invalid(AckWindow));
    check(&st, [Established, Established], TcpTimer::Established, None);
    // The edge of the window still fits.
    step(&mut st, I, seg(DATA, 1101, 5001, 29_200), Accept);
}

#[test]
fn window_scaling_from_the_handshake() {
    // Both ends offer scale 7: windows after the handshake count in units of 128 bytes.
    let mut st = TcpState::new(&wscale(win(seg(SYN, ISN_I, 0, 0), 65535), 7));
    step(&mut st, R, wscale(win(seg(SYNACK, ISN_R, 1001, 0), 65535), 7), Accept);
    // The initiator advertises 1024 << 7 = 131072 bytes.
    step(&mut st, I, win(seg(ACK, 1001, 5001, 0), 1024), Accept);
    // Six 20000-byte segments, each far larger than the raw window field, end at 125001.
    for i in 0..6u32 {
        step(&mut st, R, win(seg(DATA, 5001 + i * 20_000, 1001, 20_000), 1024), Accept);
    }
    // The next one would end at 145001, beyond 5001 + 131072.
    step(&mut st, R, win(seg(DATA, 125_001, 1001, 20_000), 1024), Invalid(SeqWindow));
    // Once the initiator acknowledges, the window slides and it fits.
    step(&mut st, I, win(seg(ACK, 1001, 125_001, 0), 1024), Accept);
    step(&mut st, R, win(seg(DATA, 125_001, 1001, 20_000), 1024), Accept);
    // The other direction is scaled as well.
    step(&mut st, I, win(seg(DATA, 1001, 145_001, 30_000), 1024), Accept);
}

#[test]
fn window_scaling_needs_both_ends() {
    // The SYN offers scale 7 but the SYN-ACK does not: windows are plain byte counts.
    let mut st = TcpState::new(&wscale(win(seg(SYN, ISN_I, 0, 0), 65535), 7));
    step(&mut st, R, win(seg(SYNACK, ISN_R, 1001, 0), 65535), Accept);
    step(&mut st, I, win(seg(ACK, 1001, 5001, 0), 1024), Accept);
    // The responder may fill the SYN's 65535 bytes (windows never shrink in the tracker)...
    step(&mut st, R, win(seg(DATA, 5001, 1001, 60_000), 1024), Accept);
    // ...but 1024 is not 1024 << 7: nothing beyond 5001 + 65535.
    step(&mut st, R, win(seg(DATA, 65_001, 1001, 6000), 1024), Invalid(SeqWindow));
    step(&mut st, I, win(seg(ACK, 1001, 65_001, 0), 1024), Accept);
    step(&mut st, R, win(seg(DATA, 65_001, 1001, 6000), 1024), Invalid(SeqWindow));
    step(&mut st, R, win(seg(DATA, 65_001, 1001, 1024), 1024), Accept);
    // The initiator may send the SYN-ACK's unscaled 65535 bytes.
    step(&mut st, I, win(seg(DATA, 1001, 66_025, 60_000), 1024), Accept);
}

#[test]
fn loose_pickup_learns_both_directions() {
    // First segment is an ACK with a small window field (scale negotiated in an unseen handshake).
    let mut st = TcpState::new(&win(seg(ACK, 7000, 3000, 0), 10));
    assert!(st.loose_scale());
    check(&st, [Established, Closed], TcpTimer::First, None);
    step(&mut st, I, win(seg(DATA, 7000, 3000, 1), 10), Accept);
    step(&mut st, R, win(seg(ACK, 3000, 7001, 0), 10), Accept);
    check(&st, [Established, Established], TcpTimer::Established, None);
    // Segments far larger than the raw window of 10 pass.
    step(&mut st, I, win(seg(DATA, 7001, 3000, 1400), 10), Accept);
    step(&mut st, R, win(seg(DATA, 3000, 8401, 1400), 10), Accept);
    // ... but not anything at all.
    step(&mut st, I, win(seg(DATA, 7001 + 50_000_000, 4400, 100), 10), Invalid(SeqWindow));
    // RFC 5961 applies to a picked-up connection too: the responder expects 8401.
    step(&mut st, I, seg(RST, 8402, 0, 0), Invalid(RstInexact));
    step(&mut st, I, seg(RST, 8401, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
}

#[test]
fn pickup_rst_from_the_silent_end_must_be_exact() {
    let mut st = TcpState::new(&seg(ACK, 7000, 3000, 0));
    step(&mut st, R, seg(RST, 3100, 0, 0), Invalid(RstInexact));
    step(&mut st, R, seg(RST, 3000, 0, 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Rst));
}

#[test]
fn sequence_numbers_wrap_around() {
    let (isn_i, isn_r) = (u32::MAX - 10, u32::MAX - 1);
    let mut st = handshake(isn_i, isn_r);
    let (mut i_next, mut r_next) = (isn_i.wrapping_add(1), isn_r.wrapping_add(1));
    assert_eq!(r_next, u32::MAX);
    // Each side sends across zero.
    step(&mut st, I, seg(DATA, i_next, r_next, 100), Accept);
    i_next = i_next.wrapping_add(100);
    assert!(i_next < 100);
    step(&mut st, R, seg(DATA, r_next, i_next, 300), Accept);
    r_next = r_next.wrapping_add(300);
    step(&mut st, I, seg(ACK, i_next, r_next, 0), Accept);
    // Retransmission from before zero, a keep-alive, and an out-of-window segment.
    step(&mut st, I, seg(DATA, isn_i.wrapping_add(1), r_next, 100), Accept);
    step(&mut st, R, seg(ACK, r_next.wrapping_sub(1), i_next, 0), Accept);
    step(&mut st, I, seg(DATA, i_next.wrapping_add(40_000), r_next, 100), Invalid(SeqWindow));
    step(&mut st, I, seg(RST, i_next.wrapping_add(1), 0, 0), Invalid(RstInexact));
    // Close across the wrap.
    step(&mut st, I, seg(FINACK, i_next, r_next, 0), Accept);
    step(&mut st, R, seg(FINACK, r_next, i_next.wrapping_add(1), 0), Accept);
    step(&mut st, I, seg(ACK, i_next.wrapping_add(1), r_next.wrapping_add(1), 0), Accept);
    check(&st, [TimeWait, TimeWait], TcpTimer::Closed, Some(EndCause::Fin));
}

#[test]
fn impossible_flags_are_invalid() {
    let mut st = established_after_request();
    step(&mut st, I, seg(FIN, 1101, 0, 0), Invalid(BadFlags));
    step(&mut st, I, seg(SYN | RST, 1101, 0, 0), Invalid(BadFlags));
    step(&mut st, I, seg(SYN | FIN, 1101, 0, 0), Invalid(BadFlags));
    step(&mut st, I, seg(0, 1101, 0, 0), Invalid(BadFlags));
    step(&mut st, I, seg(PSH, 1101, 0, 10), Invalid(BadFlags));
    assert_eq!(flags_error(SYN), None);
    assert_eq!(flags_error(SYN | RST), Some(BadFlags));
    assert_eq!(BadFlags.as_str(), "bad-flags");
    assert_eq!(RstInexact.to_string(), "rst-inexact");
}

#[test]
fn state_fits_in_forty_bytes() {
    assert!(std::mem::size_of::<TcpState>() <= 40, "{}", std::mem::size_of::<TcpState>());
}

fn any_segment() -> impl Strategy<Value = (bool, TcpInfo)> {
    let flags = prop_oneof![
        Just(SYN),
        Just(SYNACK),
        Just(ACK),
        Just(DATA),
        Just(FINACK),
        Just(RST),
        Just(RST | ACK),
        any::<u8>()
    ];
    // Sequence numbers near the scenario's ISNs (so some segments fit) or anywhere.
    let num = prop_oneof![990u32..1200, 4990u32..5200, any::<u32>()];
    (any::<bool>(), flags, num.clone(), num, any::<u16>(), 0u16..2000, proptest::option::of(0u8..20))
        .prop_map(|(responder, flags, seq, ack, window, payload_len, ws)| {
            let options = TcpOptions { wscale: ws, ..TcpOptions::default() };
            let t = TcpInfo { sport: 1, dport: 2, seq, ack, flags, window, payload_len, options };
            (responder, t)
        })
}

proptest! {
    /// No input panics, rejected segments change nothing, and only a SYN reopens.
    #[test]
    fn arbitrary_segments_never_panic(first in any_segment(), rest in proptest::collection::vec(any_segment(), 0..40)) {
        let mut st = TcpState::new(&first.1);
        for (responder, t) in rest {
            let before = st;
            let side = if responder { R } else { I };
            match st.track(side, &t) {
                Accept => {}
                Reopen => {
                    prop_assert_eq!(t.flags & (SYN | ACK), SYN);
                    prop_assert_eq!(st, before);
                    st = TcpState::new(&t);
                }
                Invalid(_) => prop_assert_eq!(st, before),
            }
            let _ = (st.timer(), st.peers(), st.end_cause());
        }
    }
}

// ---- Open vSwitch vectors ----------------------------------------------------------------------

/// What happened to one packet of a vector, in the words of expected.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    New,
    Est,
    EstReply,
    Invalid(InvalidReason),
}

/// Replays `name`.pcap: the first packet's source is the initiator; a new `TcpState` is created on
/// the first packet and on `Reopen` (whose SYN's source becomes the initiator). `after` sees the
/// state after each packet (1-based number).
fn replay(name: &str, mut after: impl FnMut(usize, &TcpState)) -> Vec<Seen> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/conntrack/ovs"));
    let cap = Capture::open(&dir.join(format!("{name}.pcap"))).expect("open capture");
    let mut conn: Option<(TcpState, (std::net::IpAddr, u16))> = None;
    let mut seen = Vec::new();
    for (i, frame) in cap.frames().enumerate() {
        let frame = frame.expect("frame");
        let pkt = parse_frame(frame.link, frame.data, frame.wire_len).expect("parse");
        let (ip, L4::Tcp(tcp)) = (pkt.ip.expect("IP"), pkt.l4) else { panic!("packet {} is not TCP", i + 1) };
        let src = (ip.src, tcp.sport);
        let outcome = match &mut conn {
            None => None,
            Some((st, initiator)) => {
                let side = if src == *initiator { I } else { R };
                Some((side, st.track(side, &tcp)))
            }
        };
        let s = match outcome {
            None | Some((_, Reopen)) => {
                conn = Some((TcpState::new(&tcp), src));
                Seen::New
            }
            Some((I, Accept)) => Seen::Est,
            Some((R, Accept)) => Seen::EstReply,
            Some((_, Invalid(r))) => Seen::Invalid(r),
        };
        seen.push(s);
        after(i + 1, &conn.as_ref().expect("a connection").0);
    }
    seen
}

#[test]
fn ovs_tcp_port_reuse() {
    use Seen::{Est as E, EstReply as Rp, New as N};
    let mut closed_after_9 = None;
    let seen = replay("tcp-port-reuse", |n, st| {
        if n == 9 {
            closed_after_9 = Some((st.peers(), st.end_cause(), st.timer()));
        }
    });
    // expected.yaml: per_packet; packet 10 is a SYN reusing the tuple after both FINs.
    assert_eq!(seen, [N, Rp, E, Rp, E, Rp, E, E, Rp, N, Rp, E, Rp, E, Rp, E, E, Rp]);
    assert_eq!(seen.iter().filter(|s| **s == N).count(), 2);
    assert_eq!(closed_after_9, Some(([TimeWait, TimeWait], Some(EndCause::Fin), TcpTimer::Closed)));
}

#[test]
fn ovs_tcp_pick_up() {
    let mut after_3 = None;
    let seen = replay("tcp-pick-up", |n, st| {
        if n == 3 {
            after_3 = Some(st.peers());
        }
    });
    assert_eq!(seen.len(), 11);
    assert_eq!(seen[0], Seen::New);
    let invalid: Vec<_> = seen.iter().filter(|s| matches!(s, Seen::Invalid(_))).collect();
    assert!(invalid.is_empty(), "expected_invalid_packets: 0, got {seen:?}");
    // expected_state_after_pkt_3: ESTABLISHED
    assert_eq!(after_3, Some([Established, Established]));
}

#[test]
fn ovs_tcp_seq_check() {
    use Seen::{Est as E, EstReply as Rp, New as N};
    let mut last = None;
    let seen = replay("tcp-seq-check", |_, st| last = Some(st.end_cause()));
    // Packet 4 (seq 0, ack 0, 8 bytes) is out of window; everything else fits.
    assert_eq!(seen, [N, Rp, E, Seen::Invalid(SeqWindow), E, Rp, E, E, Rp]);
    assert_eq!(last, Some(Some(EndCause::Fin)));
}
