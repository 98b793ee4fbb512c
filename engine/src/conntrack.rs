//! Connection entries: what a filter remembers about one accepted connection.
//!
//! The entry lives in the filter's [`crate::table::FlowTable`] under a direction-independent
//! [`FlowKey`]; `initiator_lo` tells which side opened it. TCP uses the window-tracking state machine
//! of [`crate::tcp`]; UDP and other protocols follow pf's first / single / multiple timers; ICMP echo
//! is tracked by identifier. The expiry time (packet-clock seconds) lives in the table's slot beside the
//! entry, which stays at 72 bytes: a million connections take 107.9 MiB with the table's index and
//! expiry schedule.

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

/// One tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// True when the `lo` endpoint of the key opened the connection.
    pub initiator_lo: bool,
    /// Protocol state.
    pub proto: ProtoState,
    /// Id of the rule that allowed the connection.
    pub rule: u32,
    /// Generation of the filter policy the connection was last checked against.
    pub generation: u32,
    /// Packets from the initiator (0) and the responder (1).
    pub packets: [u32; 2],
    /// Bytes from the initiator (0) and the responder (1): low 32 bits here, high 16 bits in
    /// `bytes_hi` (48-bit counts, 256 TiB per direction), so the state packs into 72 bytes without
    /// 8-byte fields. Read them with [`Conn::bytes`].
    bytes_lo: [u32; 2],
    bytes_hi: [u16; 2],
    /// The allowing rule has `with log`: a TERM line is due when the connection ends.
    pub logged: bool,
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

impl Conn {
    /// A connection whose first packet (`wire_len` bytes, from the `lo` side when `from_lo`) gave it
    /// the protocol state `proto` ([`ProtoState::first`]), admitted by rule `rule` of policy
    /// generation `generation`; and the second it expires.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn open(
        proto: ProtoState,
        wire_len: u32,
        from_lo: bool,
        rule: u32,
        generation: u64,
        logged: bool,
        now_s: u32,
        t: &Timeouts,
    ) -> (Conn, u32) {
        let c = Conn {
            initiator_lo: from_lo,
            proto,
            rule,
            generation: generation as u32,
            packets: [1, 0],
            bytes_lo: [wire_len, 0],
            bytes_hi: [0, 0],
            logged,
        };
        let expires = now_s.saturating_add(c.timeout(t));
        (c, expires)
    }

    /// Which side sent a packet from the `lo` endpoint (`from_lo`) or the `hi` one.
    pub fn side(&self, from_lo: bool) -> Side {
        if from_lo == self.initiator_lo {
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
        match (&self.proto, seq) {
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
        wire_len: u32,
        from_lo: bool,
        now_s: u32,
        t: &Timeouts,
        expires: &mut crate::table::Expiry<'_>,
    ) -> Tracked {
        if let L4::Tcp(tcp) = l4 {
            if self.track_ack(tcp, wire_len, from_lo, now_s, t, expires) {
                return Tracked::Ok;
            }
        }
        let side = self.side(from_lo);
        let result = match (&mut self.proto, l4) {
            (ProtoState::Tcp(state), L4::Tcp(tcp)) => match state.track_full(side, tcp) {
                TcpOutcome::Accept => Tracked::Ok,
                TcpOutcome::Invalid(why) => return Tracked::Invalid(why.as_str()),
                TcpOutcome::Reopen => return Tracked::Reopen,
            },
            (ProtoState::Datagram { replied, repeated }, _) => {
                match side {
                    Side::Responder => *replied = true,
                    Side::Initiator => *repeated = true,
                }
                Tracked::Ok
            }
            (ProtoState::Icmp { replied }, _) => {
                if side == Side::Responder {
                    *replied = true;
                }
                Tracked::Ok
            }
            // A non-TCP packet on a TCP key cannot happen (the protocol is part of the key).
            (ProtoState::Tcp(_), _) => Tracked::Ok,
        };
        self.count(side, wire_len);
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
        wire_len: u32,
        from_lo: bool,
        now_s: u32,
        t: &Timeouts,
        expires: &mut crate::table::Expiry<'_>,
    ) -> bool {
        let side = self.side(from_lo);
        let ProtoState::Tcp(state) = &mut self.proto else { return false };
        if !state.track_established(side, tcp) {
            return false;
        }
        // Both ends stay established, so the timer is the established one.
        self.count(side, wire_len);
        expires.set(now_s.saturating_add(t.tcp_established));
        true
    }

    /// Counts a packet of `len` bytes from `side`.
    #[inline]
    fn count(&mut self, side: Side, len: u32) {
        let i = usize::from(side == Side::Responder);
        self.packets[i] = self.packets[i].saturating_add(1);
        match self.bytes_lo[i].checked_add(len) {
            Some(lo) => self.bytes_lo[i] = lo,
            None => self.add_bytes(i, u64::from(len)),
        }
    }

    /// Bytes sent by the initiator (0) and the responder (1).
    pub fn bytes(&self) -> [u64; 2] {
        [0, 1].map(|i| u64::from(self.bytes_hi[i]) << 32 | u64::from(self.bytes_lo[i]))
    }

    #[cold]
    fn add_bytes(&mut self, i: usize, n: u64) {
        let v = (self.bytes()[i] + n).min((1 << 48) - 1);
        self.bytes_lo[i] = v as u32;
        self.bytes_hi[i] = (v >> 32) as u16;
    }

    /// The timer that applies in the current state.
    pub fn timeout(&self, t: &Timeouts) -> u32 {
        match self.proto {
            ProtoState::Tcp(s) => match s.timer() {
                TcpTimer::First => t.tcp_first,
                TcpTimer::Opening => t.tcp_opening,
                TcpTimer::Established => t.tcp_established,
                TcpTimer::Closing => t.tcp_closing,
                TcpTimer::FinWait => t.tcp_finwait,
                TcpTimer::Closed => t.tcp_closed,
            },
            ProtoState::Datagram { replied: true, .. } => t.udp_multiple,
            ProtoState::Datagram { repeated: true, .. } => t.udp_single,
            ProtoState::Datagram { .. } => t.udp_first,
            ProtoState::Icmp { replied: true } => t.icmp_error,
            ProtoState::Icmp { replied: false } => t.icmp_first,
        }
    }

    /// True for a TCP connection that ended (RST or both FINs): a logged one gets its TERM line.
    pub fn tcp_ended(&self) -> Option<crate::tcp::EndCause> {
        match self.proto {
            ProtoState::Tcp(s) => s.end_cause(),
            _ => None,
        }
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
