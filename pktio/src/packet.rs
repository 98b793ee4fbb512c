//! The compact, allocation-free summary of one parsed frame.
//!
//! [`crate::parse::parse_frame`] returns a [`Packet`] from frame bytes ([`crate::parse::parse_into`]
//! fills one in place); everything the engine decides on
//! (addresses, ports, TCP flags and sequence numbers, ICMP type/code, fragment info) is here, copied out of
//! the frame so the summary owns no borrow and costs no allocation.

use std::net::IpAddr;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Well-known ethertypes; others are kept as numbers.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88a8;
}

/// IP protocol numbers used by dfw.
pub mod ipproto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// IGMP.
    pub const IGMP: u8 = 2;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits as they sit in the 13th byte of the TCP header (plus ECE/CWR).
pub mod tcpflags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// IPv4/IPv6 fragment information. `offset` is in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragInfo {
    /// Fragment offset in bytes (0 for the first fragment).
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
    /// IPv4 identification or IPv6 fragment-header identification.
    pub id: u32,
    /// Bytes of fragment data this fragment carries (from the IP length fields), so that overlaps can
    /// be detected: it covers `offset .. offset + len` of the original datagram's payload.
    pub len: u16,
}

impl FragInfo {
    /// True when this is a first fragment (offset 0) of a fragmented datagram.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// The IP layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Length of the IP datagram from the IP header on, as the header states it.
    pub total_len: u16,
    /// Set when the datagram is a fragment (IPv4 MF or offset != 0; IPv6 fragment header present).
    pub frag: Option<FragInfo>,
    /// The datagram names its own route: an IPv4 loose or strict source-route option (LSRR, SSRR) or an
    /// IPv6 type 0 routing header (deprecated by RFC 5095). Its destination field then is not where it
    /// is going, so filters drop it (pf's default, reason `ip-option`).
    pub source_routed: bool,
}

/// TCP options dfw tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpOptions {
    /// Maximum segment size.
    pub mss: Option<u16>,
    /// Window-scale shift count.
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_permitted: bool,
    /// Timestamps (value, echo reply).
    pub timestamp: Option<(u32, u32)>,
}

/// Transport-layer header summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flag byte (see [`tcpflags`]).
    pub flags: u8,
    /// Raw (unscaled) window.
    pub window: u16,
    /// Payload length in bytes (from the IP length, not the capture length).
    pub payload_len: u16,
    /// Parsed options.
    pub options: TcpOptions,
}

/// The header of the datagram an ICMP/ICMPv6 error quotes, as far as it was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedHeader {
    /// Source address of the quoted datagram (the original sender).
    pub src: IpAddr,
    /// Destination of the quoted datagram.
    pub dst: IpAddr,
    /// Protocol of the quoted datagram.
    pub proto: u8,
    /// Ports of the quoted datagram (TCP/UDP/SCTP), or ICMP echo identifier in both fields.
    pub sport: u16,
    /// See `sport`.
    pub dport: u16,
    /// The quoted TCP segment's sequence number, when the quote holds it (RFC 792 promises the first
    /// eight bytes of the transport header, which hold it); `None` for other protocols.
    pub seq: Option<u32>,
}

/// ICMP / ICMPv6 summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpInfo {
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: u8,
    /// Echo identifier (echo request/reply only).
    pub echo_id: Option<u16>,
    /// Quoted header of an error message (destination unreachable, time exceeded, packet too big, ...).
    pub quoted: Option<QuotedHeader>,
}

/// The transport layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L4 {
    /// No transport header (non-IP frame, or a non-first fragment).
    #[default]
    None,
    /// TCP.
    Tcp(TcpInfo),
    /// UDP (sport, dport).
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// SCTP (sport, dport).
    Sctp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP or ICMPv6.
    Icmp(IcmpInfo),
    /// Any other protocol: nothing parsed beyond the number in [`IpInfo::proto`].
    Other,
}

/// Summary of one frame.
///
/// The default is an empty summary (no MACs, tags, IP or transport layer; `wire_len` 0): the slot a
/// caller hands to [`crate::parse::parse_into`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Packet {
    /// Destination MAC (all zero when the link type carries none).
    pub dst_mac: MacAddr,
    /// Source MAC (all zero when the link type carries none).
    pub src_mac: MacAddr,
    /// VLAN IDs, outermost first; `vlan_count` says how many are valid.
    pub vlans: [u16; 2],
    /// Number of valid entries in `vlans` (tags beyond two are skipped but counted here, saturating).
    pub vlan_count: u8,
    /// Ethertype of the payload after VLAN tags.
    pub ethertype: u16,
    /// IP layer, when the frame carries IPv4 or IPv6.
    pub ip: Option<IpInfo>,
    /// Transport layer.
    pub l4: L4,
    /// Length of the frame on the wire (original length, not the captured length).
    pub wire_len: u32,
}

impl Packet {
    /// Source and destination ports for TCP/UDP/SCTP, `None` otherwise.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp(t) => Some((t.sport, t.dport)),
            L4::Udp { sport, dport } | L4::Sctp { sport, dport } => Some((sport, dport)),
            _ => None,
        }
    }
}
