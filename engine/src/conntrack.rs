//! Connection entries: what a filter remembers about one accepted connection.
//!
//! The entry lives in the filter's [`crate::table::FlowTable`] under a direction-independent
//! [`FlowKey`]; `initiator_lo` tells which side opened it. TCP uses the window-tracking state machine
//! of [`crate::tcp`]; UDP and other protocols follow pf's first / single / multiple timers; ICMP echo
//! is tracked by identifier. The expiry time (packet-clock seconds) lives in the table's slot beside the
//! entry, which is 44 bytes, so the slot is one 64-byte line (see [`Conn`]).

use pktio::packet::{tcpflags, TcpInfo, L4};
use pktio::Packet;

use crate::config::Timeouts;

use crate::tcp::{Side, TcpOutcome, TcpState, TcpTimer};
use crate::verdict::Reason;

/// Protocol part of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoState {
    /// TCP with sequence tracking.
    Tcp(TcpState),
    /// UDP and other IP protocols; `replied` once the responder has sent.
    Datagram {
        /// The responder has sent at least one packet.
        replied: bool,
        /// The initiator has sent more than one packet.
        repeated: bool,
    },
    /// ICMP (echo by identifier).
    Icmp {
        /// The responder has answered.
        replied: bool,
    },
}

impl ProtoState {
    /// The state a connection starts in whose first packet carries `l4`.
    pub fn first(l4: &L4) -> ProtoState {
        match l4 {
            L4::Tcp(tcp) => ProtoState::Tcp(TcpState::new(tcp)),
            L4::Icmp(_) => ProtoState::Icmp { replied: false },
            _ => ProtoState::Datagram { replied: false, repeated: false },
        }
    }
}

/// One tracked connection, in 44 bytes: with its 16-byte key and its expiry second, the table's slot
/// is one 64-byte cache line (see [`crate::table`]), so a packet of a known connection reads one line
/// of the table besides its index line.
///
/// The connection's own small fields (which side opened it, the policy generation it was last
/// checked against, its flags and, for protocols other than TCP, its state) live in the TCP tracker's
/// spare bytes ([`TcpState`]'s `host`), where padding would otherwise be. Per-connection packet and
/// byte counts are not here: the filter keeps them beside the table for the connections it counts
/// ([`Conn::counted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// The TCP tracker (zeroes for other protocols), whose `host` bytes hold the generation (the
    /// first two) and the [`bits`] (the third).
    tcp: TcpState,
    /// Id of the rule that allowed the connection.
    pub rule: u32,
}

/// The flag bits of a [`Conn`].
mod bits {
    /// The `lo` endpoint of the key opened the connection.
    pub const INITIATOR_LO: u8 = 0x01;
    /// The allowing rule has `with log`: a TERM line is due when the connection ends.
    pub const LOGGED: u8 = 0x02;
    /// The filter keeps the connection's packet and byte counts.
    pub const COUNTED: u8 = 0x04;
    /// What protocol state the connection has: TCP (0), [`DATAGRAM`] or [`ICMP`].
    pub const KIND: u8 = 0x18;
    /// UDP and other IP protocols.
    pub const DATAGRAM: u8 = 0x08;
    /// ICMP echo.
    pub const ICMP: u8 = 0x10;
    /// Datagram or ICMP: the responder has sent.
    pub const REPLIED: u8 = 0x20;
    /// Datagram: the initiator has sent more than one packet.
    pub const REPEATED: u8 = 0x40;

    /// `bit` when `on`, else none.
    #[inline(always)]
    pub fn of(on: bool, bit: u8) -> u8 {
        if on {
            bit
        } else {
            0
        }
    }
}

/// What tracking one packet did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// Fits; state advanced.
    Ok,
    /// Does not fit the connection (TCP window, RST rules, SYN-ACK mismatch).
    Invalid(&'static str),
    /// A SYN that starts a new connection on this tuple: remove the entry, classify afresh.
    Reopen,
}

/// The 16 bits of a filter policy generation a connection keeps (see [`Conn::generation`]).
#[inline(always)]
pub fn generation_bits(generation: u64) -> u16 {
    generation as u16
}

impl Conn {
    /// A connection whose first packet (from the `lo` side when `from_lo`) gave it the protocol
    /// state `proto` ([`ProtoState::first`]), admitted by rule `rule` of policy generation
    /// `generation`, logged (`logged`) and counted (`counted`) or not; and the second it expires.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn open(
        proto: ProtoState,
        from_lo: bool,
        rule: u32,
        generation: u64,
        logged: bool,
        counted: bool,
        now_s: u32,
        t: &Timeouts,
    ) -> (Conn, u32) {
        let (tcp, kind) = match proto {
            ProtoState::Tcp(tcp) => (tcp, 0),
            ProtoState::Datagram { replied, repeated } => (
                TcpState::EMPTY,
                bits::DATAGRAM | bits::of(replied, bits::REPLIED) | bits::of(repeated, bits::REPEATED),
            ),
            ProtoState::Icmp { replied } => (TcpState::EMPTY, bits::ICMP | bits::of(replied, bits::REPLIED)),
        };
        let mut c = Conn { tcp, rule };
        c.tcp.host[2] = kind
            | bits::of(from_lo, bits::INITIATOR_LO)
            | bits::of(logged, bits::LOGGED)
            | bits::of(counted, bits::COUNTED);
        c.set_generation(generation_bits(generation));
        let expires = now_s.saturating_add(c.timeout(t));
        (c, expires)
    }

    #[inline(always)]
    fn bits(&self) -> u8 {
        self.tcp.host[2]
    }

    /// Sets (`on`) or clears flag `bit`.
    #[inline(always)]
    fn set_bit(&mut self, bit: u8, on: bool) {
        self.tcp.host[2] = self.bits() & !bit | bits::of(on, bit);
    }

    /// True when the `lo` endpoint of the key opened the connection.
    #[inline(always)]
    pub fn initiator_lo(&self) -> bool {
        self.bits() & bits::INITIATOR_LO != 0
    }

    /// True when the allowing rule has `with log`: a TERM line is due when the connection ends.
    #[inline(always)]
    pub fn logged(&self) -> bool {
        self.bits() & bits::LOGGED != 0
    }

    /// Marks (or unmarks) the connection as logged.
    pub fn set_logged(&mut self, logged: bool) {
        self.set_bit(bits::LOGGED, logged);
    }

    /// True when the filter keeps this connection's packet and byte counts (it did when the
    /// connection opened, or its rule logs).
    #[inline(always)]
    pub fn counted(&self) -> bool {
        self.bits() & bits::COUNTED != 0
    }

    /// Marks the connection as counted (its counts start afresh: the caller's part).
    pub fn set_counted(&mut self) {
        self.set_bit(bits::COUNTED, true);
    }

    /// The low 16 bits ([`generation_bits`]) of the generation of the filter policy the connection
    /// was last checked against. The filter keeps them unambiguous: no connection falls 2^16
    /// generations behind without being marked stale (`FilterState::advance_generation`).
    #[inline(always)]
    pub fn generation(&self) -> u16 {
        u16::from_le_bytes([self.tcp.host[0], self.tcp.host[1]])
    }

    /// Records that the connection was checked against policy generation `generation` (its low 16
    /// bits).
    #[inline]
    pub fn set_generation(&mut self, generation: u16) {
        let [g0, g1] = generation.to_le_bytes();
        self.tcp.host[0] = g0;
        self.tcp.host[1] = g1;
    }

    /// The protocol state.
    pub fn proto(&self) -> ProtoState {
        let b = self.bits();
        match b & bits::KIND {
            bits::DATAGRAM => {
                ProtoState::Datagram { replied: b & bits::REPLIED != 0, repeated: b & bits::REPEATED != 0 }
            }
            bits::ICMP => ProtoState::Icmp { replied: b & bits::REPLIED != 0 },
            _ => {
                let mut tcp = self.tcp;
                tcp.host = [0; 3];
                ProtoState::Tcp(tcp)
            }
        }
    }

    /// The TCP tracker of a TCP connection.
    #[inline(always)]
    fn tcp_mut(&mut self) -> Option<&mut TcpState> {
        if self.bits() & bits::KIND == 0 {
            Some(&mut self.tcp)
        } else {
            None
        }
    }

    /// Which side sent a packet from the `lo` endpoint (`from_lo`) or the `hi` one.
    #[inline(always)]
    pub fn side(&self, from_lo: bool) -> Side {
        if from_lo == self.initiator_lo() {
            Side::Initiator
        } else {
            Side::Responder
        }
    }

    /// For an ICMP error quoting a packet of this connection sent from the `lo` endpoint (`from_lo`) or
    /// the `hi` one, with the quoted TCP sequence number `seq`: `Ok` when the error may pass as related;
    /// otherwise the reason to drop it. A TCP quote must hold its sequence number, and that number must
    /// lie where the sender could have sent it ([`TcpState::quote_fits`], as pf checks); other protocols
    /// have nothing to check.
    pub fn quote_check(&self, from_lo: bool, seq: Option<u32>) -> Result<(), Reason> {
        match (self.proto(), seq) {
            (ProtoState::Tcp(state), Some(seq)) if state.quote_fits(self.side(from_lo), seq) => Ok(()),
            (ProtoState::Tcp(_), Some(_)) => Err(Reason::StateMismatch),
            (ProtoState::Tcp(_), None) => Err(Reason::Short),
            _ => Ok(()),
        }
    }

    /// Tracks one packet of the connection; on success `expires` moves to the new timer's end.
    #[inline(always)]
    pub fn track(
        &mut self,
        l4: &L4,
        from_lo: bool,
        now_s: u32,
        t: &Timeouts,
        expires: &mut crate::table::Expiry<'_>,
    ) -> Tracked {
        if let L4::Tcp(tcp) = l4 {
            if self.track_ack(tcp, from_lo, now_s, t, expires) {
                return Tracked::Ok;
            }
        }
        let side = self.side(from_lo);
        let result = match (self.tcp_mut(), l4) {
            (Some(state), L4::Tcp(tcp)) => match state.track_full(side, tcp) {
                TcpOutcome::Accept => Tracked::Ok,
                TcpOutcome::Invalid(why) => return Tracked::Invalid(why.as_str()),
                TcpOutcome::Reopen => return Tracked::Reopen,
            },
            // A non-TCP packet on a TCP key cannot happen (the protocol is part of the key).
            (Some(_), _) => Tracked::Ok,
            (None, _) => {
                let datagram = self.bits() & bits::KIND == bits::DATAGRAM;
                match side {
                    Side::Responder => self.set_bit(bits::REPLIED, true),
                    Side::Initiator if datagram => self.set_bit(bits::REPEATED, true),
                    Side::Initiator => {}
                }
                Tracked::Ok
            }
        };
        expires.set(now_s.saturating_add(self.timeout(t)));
        result
    }

    /// [`Conn::track`]'s common case, done in place: a TCP segment [`TcpState::track_established`]
    /// accepts (a plain ACK between two established ends, inside the windows). False, having changed
    /// nothing, for every other segment and connection.
    #[inline(always)]
    pub fn track_ack(
        &mut self,
        tcp: &TcpInfo,
        from_lo: bool,
        now_s: u32,
        t: &Timeouts,
        expires: &mut crate::table::Expiry<'_>,
    ) -> bool {
        let side = self.side(from_lo);
        let Some(state) = self.tcp_mut() else { return false };
        if !state.track_established(side, tcp) {
            return false;
        }
        // Both ends stay established, so the timer is the established one.
        expires.set(now_s.saturating_add(t.tcp_established));
        true
    }

    /// The timer that applies in the current state.
    pub fn timeout(&self, t: &Timeouts) -> u32 {
        let b = self.bits();
        let replied = b & bits::REPLIED != 0;
        match b & bits::KIND {
            bits::DATAGRAM if replied => t.udp_multiple,
            bits::DATAGRAM if b & bits::REPEATED != 0 => t.udp_single,
            bits::DATAGRAM => t.udp_first,
            bits::ICMP if replied => t.icmp_error,
            bits::ICMP => t.icmp_first,
            _ => match self.tcp.timer() {
                TcpTimer::First => t.tcp_first,
                TcpTimer::Opening => t.tcp_opening,
                TcpTimer::Established => t.tcp_established,
                TcpTimer::Closing => t.tcp_closing,
                TcpTimer::FinWait => t.tcp_finwait,
                TcpTimer::Closed => t.tcp_closed,
            },
        }
    }

    /// True for a TCP connection that ended (RST or both FINs): a logged one gets its TERM line.
    pub fn tcp_ended(&self) -> Option<crate::tcp::EndCause> {
        if self.bits() & bits::KIND == 0 {
            self.tcp.end_cause()
        } else {
            None
        }
    }
}

/// A connection's packet and byte counts, initiator's (0) and responder's (1), as the filter keeps
/// them beside its table for the connections it counts. Packets saturate at `u32::MAX`; bytes are
/// 64-bit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    /// Packets from the initiator (0) and the responder (1).
    pub packets: [u32; 2],
    /// Bytes from the initiator (0) and the responder (1).
    pub bytes: [u64; 2],
}

impl FlowCounts {
    /// The counts of a connection's first packet, `len` bytes from the initiator.
    pub fn first(len: u32) -> FlowCounts {
        FlowCounts { packets: [1, 0], bytes: [u64::from(len), 0] }
    }

    /// Counts a packet of `len` bytes from `side`.
    #[inline(always)]
    pub fn add(&mut self, side: Side, len: u32) {
        let i = usize::from(side == Side::Responder);
        self.packets[i] = self.packets[i].saturating_add(1);
        self.bytes[i] = self.bytes[i].saturating_add(u64::from(len));
    }
}

/// True for a TCP packet that could open a connection under `strict` (SYN without ACK).
pub fn is_syn(pkt: &Packet) -> bool {
    matches!(pkt.l4, L4::Tcp(t) if syn_flags(t.flags))
}

/// TCP `flags` that could open a connection under `strict` (SYN without ACK or RST).
#[inline]
pub fn syn_flags(flags: u8) -> bool {
    flags & (tcpflags::SYN | tcpflags::ACK | tcpflags::RST) == tcpflags::SYN
}
