//! Zero-copy, read-only views of the headers dfw parses, in the style of smoltcp's `wire` module.
//!
//! Each view wraps a byte slice that starts at its header. `new_checked` verifies that the fixed part of
//! the header is present and fails with [`ParseError::Short`] otherwise; **once `new_checked` has
//! succeeded, no accessor panics**, because each one reads only within the fixed part. Fields that say
//! how long the header really is (IHL, data offset, extension-header length) are returned as they are;
//! judging them is the parser's job, so these views can also look at broken headers. Field offsets live
//! in one private `field` module per header.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Layer, ParseError};
use crate::packet::MacAddr;

/// Reads a big-endian u16 at `at`. Callers guarantee `at + 2 <= b.len()` (checked by `new_checked`).
#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at`. Callers guarantee `at + 4 <= b.len()` (checked by `new_checked`).
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Fails with [`ParseError::Short`] unless `buf` holds at least `need` bytes.
#[inline]
pub(crate) fn check_len(layer: Layer, buf: &[u8], need: usize) -> Result<(), ParseError> {
    if buf.len() < need {
        return Err(ParseError::Short { layer, need, have: buf.len() });
    }
    Ok(())
}

macro_rules! view {
    ($(#[$doc:meta])* $name:ident, $layer:expr, $len:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'a> {
            buf: &'a [u8],
        }

        impl<'a> $name<'a> {
            /// Length of the fixed part of the header.
            pub const LEN: usize = $len;

            /// Wraps `buf`, which starts at this header, after checking that the fixed part is present.
            #[inline]
            pub fn new_checked(buf: &'a [u8]) -> Result<Self, ParseError> {
                check_len($layer, buf, Self::LEN)?;
                Ok(Self { buf })
            }

            /// The bytes from the start of this header to the end of the captured data.
            #[inline]
            pub fn bytes(&self) -> &'a [u8] {
                self.buf
            }
        }
    };
}

#[inline]
fn mac(b: &[u8], at: usize) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    MacAddr(m)
}

mod eth {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

view!(
    /// Ethernet II header: destination MAC, source MAC, ethertype (or 802.3 length).
    EthernetHeader,
    Layer::Ethernet,
    14
);

impl<'a> EthernetHeader<'a> {
    /// Destination MAC.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        mac(self.buf, eth::DST)
    }
    /// Source MAC.
    #[inline]
    pub fn src(&self) -> MacAddr {
        mac(self.buf, eth::SRC)
    }
    /// Ethertype; values below 0x0600 are 802.3 lengths and are kept as they are.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf, eth::ETHERTYPE)
    }
    /// What follows the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[Self::LEN..]
    }
}

mod vlan {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
}

view!(
    /// An 802.1Q/802.1ad tag as it follows the ethertype that announced it: TCI, then the next ethertype.
    VlanTag,
    Layer::Vlan,
    4
);

impl<'a> VlanTag<'a> {
    /// VLAN identifier (low 12 bits of the TCI).
    #[inline]
    pub fn vid(&self) -> u16 {
        be16(self.buf, vlan::TCI) & 0x0fff
    }
    /// Priority code point.
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.buf[vlan::TCI] >> 5) & 0x7
    }
    /// Ethertype of what follows the tag.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf, vlan::ETHERTYPE)
    }
    /// What follows the tag.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[Self::LEN..]
    }
}

mod sll {
    pub const PKTTYPE: usize = 0;
    pub const HATYPE: usize = 2;
    pub const HALEN: usize = 4;
    pub const ADDR: usize = 6;
    pub const PROTOCOL: usize = 14;
}

view!(
    /// Linux cooked capture v1 pseudo header (`LINKTYPE_LINUX_SLL`).
    SllHeader,
    Layer::Sll,
    16
);

impl<'a> SllHeader<'a> {
    /// Packet type (0 to us, 1 broadcast, 2 multicast, 3 to someone else, 4 sent by us).
    #[inline]
    pub fn packet_type(&self) -> u16 {
        be16(self.buf, sll::PKTTYPE)
    }
    /// ARPHRD_ type of the device.
    #[inline]
    pub fn hatype(&self) -> u16 {
        be16(self.buf, sll::HATYPE)
    }
    /// Link-layer source address, when it is a 6-byte MAC.
    #[inline]
    pub fn src_mac(&self) -> Option<MacAddr> {
        (be16(self.buf, sll::HALEN) == 6).then(|| mac(self.buf, sll::ADDR))
    }
    /// Protocol: an ethertype for Ethernet-like devices.
    #[inline]
    pub fn protocol(&self) -> u16 {
        be16(self.buf, sll::PROTOCOL)
    }
    /// What follows the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[Self::LEN..]
    }
}

mod sll2 {
    pub const PROTOCOL: usize = 0;
    pub const IFINDEX: usize = 4;
    pub const HATYPE: usize = 8;
    pub const PKTTYPE: usize = 10;
    pub const HALEN: usize = 11;
    pub const ADDR: usize = 12;
}

view!(
    /// Linux cooked capture v2 pseudo header (`LINKTYPE_LINUX_SLL2`).
    Sll2Header,
    Layer::Sll2,
    20
);

impl<'a> Sll2Header<'a> {
    /// Protocol: an ethertype for Ethernet-like devices.
    #[inline]
    pub fn protocol(&self) -> u16 {
        be16(self.buf, sll2::PROTOCOL)
    }
    /// Interface index.
    #[inline]
    pub fn ifindex(&self) -> u32 {
        be32(self.buf, sll2::IFINDEX)
    }
    /// ARPHRD_ type of the device.
    #[inline]
    pub fn hatype(&self) -> u16 {
        be16(self.buf, sll2::HATYPE)
    }
    /// Packet type (see [`SllHeader::packet_type`]).
    #[inline]
    pub fn packet_type(&self) -> u8 {
        self.buf[sll2::PKTTYPE]
    }
    /// Link-layer source address, when it is a 6-byte MAC.
    #[inline]
    pub fn src_mac(&self) -> Option<MacAddr> {
        (self.buf[sll2::HALEN] == 6).then(|| mac(self.buf, sll2::ADDR))
    }
    /// What follows the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[Self::LEN..]
    }
}

mod ipv4 {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

view!(
    /// IPv4 header (RFC 791), fixed 20-byte part.
    Ipv4Header,
    Layer::Ipv4,
    20
);

impl<'a> Ipv4Header<'a> {
    /// Version nibble.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf[ipv4::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL * 4), as the header states it.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf[ipv4::VER_IHL] & 0x0f) * 4
    }
    /// Total length of the datagram.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buf, ipv4::TOTAL_LEN)
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf, ipv4::IDENT)
    }
    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buf, ipv4::FLAGS_FRAG) & 0x4000 != 0
    }
    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buf, ipv4::FLAGS_FRAG) & 0x2000 != 0
    }
    /// Fragment offset in bytes (at most 8191 * 8 = 65528).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf, ipv4::FLAGS_FRAG) & 0x1fff) * 8
    }
    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf[ipv4::TTL]
    }
    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf[ipv4::PROTOCOL]
    }
    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf, ipv4::SRC))
    }
    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf, ipv4::DST))
    }
}

mod ipv6 {
    pub const VER: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

view!(
    /// IPv6 fixed header (RFC 8200).
    Ipv6Header,
    Layer::Ipv6,
    40
);

#[inline]
fn ipv6_addr(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

impl<'a> Ipv6Header<'a> {
    /// Version nibble.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf[ipv6::VER] >> 4
    }
    /// Payload length (everything after the fixed header, extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buf, ipv6::PAYLOAD_LEN)
    }
    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf[ipv6::NEXT_HEADER]
    }
    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf[ipv6::HOP_LIMIT]
    }
    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        ipv6_addr(self.buf, ipv6::SRC)
    }
    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        ipv6_addr(self.buf, ipv6::DST)
    }
}

view!(
    /// The two leading bytes every IPv6 extension header except the fragment header shares: next header
    /// and a length field whose unit depends on the header (see [`Ipv6ExtHeader::header_len`]).
    Ipv6ExtHeader,
    Layer::Ipv6Ext,
    2
);

impl<'a> Ipv6ExtHeader<'a> {
    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf[0]
    }
    /// Length of the header in bytes: `(len + 2) * 4` for AH (RFC 4302), `(len + 1) * 8` otherwise
    /// (RFC 8200 section 4.3).
    #[inline]
    pub fn header_len(&self, is_ah: bool) -> usize {
        let n = usize::from(self.buf[1]);
        if is_ah {
            (n + 2) * 4
        } else {
            (n + 1) * 8
        }
    }
}

mod frag6 {
    pub const NEXT_HEADER: usize = 0;
    pub const OFFSET_FLAGS: usize = 2;
    pub const IDENT: usize = 4;
}

view!(
    /// IPv6 fragment header (RFC 8200 section 4.5).
    Ipv6FragHeader,
    Layer::Ipv6Frag,
    8
);

impl<'a> Ipv6FragHeader<'a> {
    /// Next header (of the fragmentable part).
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf[frag6::NEXT_HEADER]
    }
    /// Fragment offset in bytes.
    #[inline]
    pub fn offset(&self) -> u16 {
        be16(self.buf, frag6::OFFSET_FLAGS) & 0xfff8
    }
    /// More-fragments flag.
    #[inline]
    pub fn more(&self) -> bool {
        be16(self.buf, frag6::OFFSET_FLAGS) & 1 != 0
    }
    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        be32(self.buf, frag6::IDENT)
    }
}

mod tcp {
    pub const SPORT: usize = 0;
    pub const DPORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DOFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
}

view!(
    /// TCP header (RFC 9293), fixed 20-byte part.
    TcpHeader,
    Layer::Tcp,
    20
);

impl<'a> TcpHeader<'a> {
    /// Source port.
    #[inline]
    pub fn sport(&self) -> u16 {
        be16(self.buf, tcp::SPORT)
    }
    /// Destination port.
    #[inline]
    pub fn dport(&self) -> u16 {
        be16(self.buf, tcp::DPORT)
    }
    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.buf, tcp::SEQ)
    }
    /// Acknowledgement number.
    #[inline]
    pub fn ack(&self) -> u32 {
        be32(self.buf, tcp::ACK)
    }
    /// Header length in bytes (data offset * 4), as the header states it.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf[tcp::DOFF] >> 4) * 4
    }
    /// Flag byte (CWR ECE URG ACK PSH RST SYN FIN).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf[tcp::FLAGS]
    }
    /// Window (unscaled).
    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.buf, tcp::WINDOW)
    }
}

view!(
    /// UDP header (RFC 768).
    UdpHeader,
    Layer::Udp,
    8
);

impl<'a> UdpHeader<'a> {
    /// Source port.
    #[inline]
    pub fn sport(&self) -> u16 {
        be16(self.buf, 0)
    }
    /// Destination port.
    #[inline]
    pub fn dport(&self) -> u16 {
        be16(self.buf, 2)
    }
    /// Length of header and data.
    #[inline]
    pub fn length(&self) -> u16 {
        be16(self.buf, 4)
    }
}

view!(
    /// ICMP or ICMPv6 header: type, code, checksum and the 4-byte rest-of-header.
    IcmpHeader,
    Layer::Icmp,
    8
);

impl<'a> IcmpHeader<'a> {
    /// Type.
    #[inline]
    pub fn icmp_type(&self) -> u8 {
        self.buf[0]
    }
    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf[1]
    }
    /// Echo identifier (meaningful for echo request/reply only).
    #[inline]
    pub fn echo_id(&self) -> u16 {
        be16(self.buf, 4)
    }
    /// What follows the 8-byte header: the quoted datagram of an error message.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[Self::LEN..]
    }
}

view!(
    /// SCTP common header (RFC 9260).
    SctpHeader,
    Layer::Sctp,
    12
);

impl<'a> SctpHeader<'a> {
    /// Source port.
    #[inline]
    pub fn sport(&self) -> u16 {
        be16(self.buf, 0)
    }
    /// Destination port.
    #[inline]
    pub fn dport(&self) -> u16 {
        be16(self.buf, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[inline]
    fn views_refuse_short_buffers() {
        assert_eq!(
            TcpHeader::new_checked(&[0; 19]).unwrap_err(),
            ParseError::Short { layer: Layer::Tcp, need: 20, have: 19 }
        );
        assert!(Ipv6Header::new_checked(&[0; 39]).is_err());
        assert!(VlanTag::new_checked(&[0; 4]).is_ok());
    }

    #[test]
    #[inline]
    fn ipv6_ext_lengths() {
        let h = Ipv6ExtHeader::new_checked(&[6, 1]).unwrap();
        assert_eq!(h.header_len(false), 16);
        assert_eq!(h.header_len(true), 12);
    }
}
