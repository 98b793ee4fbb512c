//! The per-filter connection table (first slice).
//!
//! Keys are direction-independent: the two endpoints are stored in a fixed order so that a reply finds
//! the entry its request created. Each entry remembers which side opened the connection, a coarse
//! protocol state and when it expires; expiry is driven by the packet clock (capture timestamps in
//! replay) and checked lazily on lookup, so there is no periodic sweep. The table is bounded: when
//! full, inserting fails and the caller drops the packet with reason `state-limit`.
//!
//! TCP tracking here follows the handshake and teardown only (SYN → SYN-ACK → ACK, FIN/FIN, RST);
//! sequence-window tracking in the manner of pf is a later, stricter layer.

use std::net::IpAddr;

use ahash::AHashMap;
use pktio::packet::{tcpflags, L4};
use pktio::Packet;

/// Connection timers in seconds (NSX DFW defaults, pf's timer names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the first packet (SYN sent).
    pub tcp_first: u64,
    /// TCP after SYN-ACK, before the handshake completes.
    pub tcp_opening: u64,
    /// TCP established.
    pub tcp_established: u64,
    /// TCP after the first FIN.
    pub tcp_closing: u64,
    /// TCP after both FINs.
    pub tcp_fin_wait: u64,
    /// TCP after RST.
    pub tcp_closed: u64,
    /// UDP / other after the first packet.
    pub udp_first: u64,
    /// UDP / other when only the initiator has sent.
    pub udp_single: u64,
    /// UDP / other when both sides have sent.
    pub udp_multiple: u64,
    /// ICMP after the first packet.
    pub icmp_first: u64,
    /// ICMP after a reply.
    pub icmp_error_reply: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_first: 120,
            tcp_opening: 30,
            tcp_established: 43200,
            tcp_closing: 120,
            tcp_fin_wait: 45,
            tcp_closed: 20,
            udp_first: 60,
            udp_single: 30,
            udp_multiple: 60,
            icmp_first: 20,
            icmp_error_reply: 10,
        }
    }
}

/// Direction-independent connection key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    proto: u8,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
}

impl ConnKey {
    /// The key of a flow between two endpoints, whichever way the packet goes.
    pub fn new(proto: u8, x: (IpAddr, u16), y: (IpAddr, u16)) -> ConnKey {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        ConnKey { proto, a, b }
    }

    /// The key of the connection `pkt` belongs to, with `pkt`'s source endpoint. `None` for non-IP
    /// frames. ICMP echo uses the identifier in place of both ports; other ICMP messages and protocols
    /// without ports use 0.
    pub fn of(pkt: &Packet) -> Option<(ConnKey, (IpAddr, u16))> {
        let ip = pkt.ip?;
        let (sp, dp) = match pkt.l4 {
            L4::Icmp(i) => i.echo_id.map_or((0, 0), |id| (id, id)),
            _ => pkt.ports().unwrap_or((0, 0)),
        };
        Some((ConnKey::new(ip.proto, (ip.src, sp), (ip.dst, dp)), (ip.src, sp)))
    }
}

/// Coarse protocol state of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP: SYN seen from the initiator.
    SynSent,
    /// TCP: SYN-ACK seen from the responder.
    SynReceived,
    /// TCP: handshake done, or picked up mid-stream.
    Established,
    /// TCP: one side sent FIN.
    Closing,
    /// TCP: both sides sent FIN.
    FinWait,
    /// TCP: RST seen.
    Closed,
    /// Non-TCP: only the initiator has sent.
    Single,
    /// Non-TCP: both sides have sent.
    Multiple,
}

/// One tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// The endpoint that sent the first packet.
    pub initiator: (IpAddr, u16),
    /// Protocol state.
    pub phase: Phase,
    /// Packet-clock time (ns) after which the entry is dead.
    pub expires_ns: u64,
    /// The rule that created the connection.
    pub rule: u32,
    /// Packets seen from the initiator (0) and responder (1).
    pub packets: [u64; 2],
    /// Bytes seen from the initiator (0) and responder (1).
    pub bytes: [u64; 2],
    /// FIN seen from the initiator (0) / responder (1).
    fin: [bool; 2],
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table holds its maximum number of connections.
    Full,
}

/// A bounded connection table.
#[derive(Debug, Clone)]
pub struct ConnTable {
    map: AHashMap<ConnKey, Conn>,
    limit: usize,
    /// Timers in force.
    pub timeouts: Timeouts,
}

const NS: u64 = 1_000_000_000;

impl ConnTable {
    /// An empty table holding at most `limit` connections.
    pub fn new(limit: usize, timeouts: Timeouts) -> ConnTable {
        ConnTable { map: AHashMap::new(), limit, timeouts }
    }

    /// Number of entries (live or not yet noticed as expired).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&ConnKey, &Conn)> {
        self.map.iter()
    }

    /// The live entry for `key` at time `now_ns`; an expired entry is removed and `None` returned.
    pub fn lookup(&mut self, key: &ConnKey, now_ns: u64) -> Option<&mut Conn> {
        if self.map.get(key).is_some_and(|c| c.expires_ns <= now_ns) {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }

    /// Removes the entry for `key`.
    pub fn remove(&mut self, key: &ConnKey) {
        self.map.remove(key);
    }

    /// Starts tracking the connection whose first packet is `pkt`.
    pub fn insert(
        &mut self,
        key: ConnKey,
        from: (IpAddr, u16),
        pkt: &Packet,
        rule: u32,
        now_ns: u64,
    ) -> Result<(), InsertError> {
        if self.map.len() >= self.limit {
            return Err(InsertError::Full);
        }
        let t = &self.timeouts;
        let (phase, secs) = match pkt.l4 {
            L4::Tcp(tcp) if tcp.flags & (tcpflags::SYN | tcpflags::ACK) == tcpflags::SYN => {
                (Phase::SynSent, t.tcp_first)
            }
            // Loose pickup of a connection already under way.
            L4::Tcp(_) => (Phase::Established, t.tcp_established),
            L4::Icmp(_) => (Phase::Single, t.icmp_first),
            _ => (Phase::Single, t.udp_first),
        };
        let conn = Conn {
            initiator: from,
            phase,
            expires_ns: now_ns.saturating_add(secs * NS),
            rule,
            packets: [1, 0],
            bytes: [u64::from(pkt.wire_len), 0],
            fin: [false; 2],
        };
        self.map.insert(key, conn);
        Ok(())
    }
}

impl Conn {
    /// Advances the connection with a packet from `from` at `now_ns`.
    pub fn update(&mut self, from: (IpAddr, u16), pkt: &Packet, now_ns: u64, t: &Timeouts) {
        let side = usize::from(from != self.initiator);
        self.packets[side] += 1;
        self.bytes[side] += u64::from(pkt.wire_len);
        let secs = match pkt.l4 {
            L4::Tcp(tcp) => {
                let f = tcp.flags;
                if f & tcpflags::RST != 0 {
                    self.phase = Phase::Closed;
                } else if f & tcpflags::FIN != 0 {
                    self.fin[side] = true;
                    self.phase = if self.fin == [true, true] { Phase::FinWait } else { Phase::Closing };
                } else if f & (tcpflags::SYN | tcpflags::ACK) == (tcpflags::SYN | tcpflags::ACK) && side == 1
                {
                    if self.phase == Phase::SynSent {
                        self.phase = Phase::SynReceived;
                    }
                } else if f & tcpflags::ACK != 0 && side == 0 && self.phase == Phase::SynReceived {
                    self.phase = Phase::Established;
                }
                match self.phase {
                    Phase::SynSent => t.tcp_first,
                    Phase::SynReceived => t.tcp_opening,
                    Phase::Closing => t.tcp_closing,
                    Phase::FinWait => t.tcp_fin_wait,
                    Phase::Closed => t.tcp_closed,
                    _ => t.tcp_established,
                }
            }
            L4::Icmp(_) => {
                if side == 1 {
                    self.phase = Phase::Multiple;
                }
                if self.phase == Phase::Multiple {
                    t.icmp_error_reply
                } else {
                    t.icmp_first
                }
            }
            _ => {
                if side == 1 {
                    self.phase = Phase::Multiple;
                }
                if self.phase == Phase::Multiple {
                    t.udp_multiple
                } else {
                    t.udp_single
                }
            }
        };
        self.expires_ns = now_ns.saturating_add(secs * NS);
    }

    /// True when a new SYN should replace this entry (the old connection was reset or is closing).
    pub fn is_reusable_by_syn(&self) -> bool {
        matches!(self.phase, Phase::Closed | Phase::FinWait)
    }
}
