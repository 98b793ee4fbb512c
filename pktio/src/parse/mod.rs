//! Frame parsing: from the bytes of one captured frame to a [`Packet`] summary.
//!
//! [`parse_frame`] walks link layer → VLAN tags → IPv4/IPv6 (with IPv6 extension headers) → transport,
//! using the checked views in [`wire`]. It allocates nothing and never panics on input: every read goes
//! through a view whose `new_checked` has verified the length.
//!
//! Two lengths bound every header. The *captured* bytes (`data`) may stop early when the capture used a
//! snaplen; that is not an error as long as the headers dfw decides on are present (a TCP frame captured
//! with snaplen 68 still parses, its options read as far as they were captured). The *declared* lengths
//! (IP total length, IPv6 payload length) say where the datagram ends; a header past that end is
//! malformed. Errors carry a short pf-like reason code ([`ParseError::reason`]) so the engine can count
//! drops by reason.
//!
//! ```
//! use pktio::{parse_frame, LinkType, L4};
//!
//! // A raw IPv4/UDP datagram: 10.0.0.1:53 -> 10.0.0.2:4242, no payload.
//! let frame = [
//!     0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
//!     0, 53, 0x10, 0x92, 0, 8, 0, 0,
//! ];
//! let pkt = parse_frame(LinkType::Raw, &frame, frame.len() as u32).unwrap();
//! assert_eq!(pkt.l4, L4::Udp { sport: 53, dport: 4242 });
//! ```

pub mod wire;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub use crate::link::LinkType;
use crate::packet::{
    ethertype, ipproto, FragInfo, IcmpInfo, IpInfo, MacAddr, Packet, QuotedHeader, TcpInfo, TcpOptions, L4,
};
use wire::{
    check_len, EthernetHeader, IcmpHeader, Ipv4Header, Ipv6ExtHeader, Ipv6FragHeader, Ipv6Header, SctpHeader,
    Sll2Header, SllHeader, TcpHeader, UdpHeader, VlanTag,
};

/// The pre-standard QinQ outer tag some switches still emit.
const ETHERTYPE_QINQ_9100: u16 = 0x9100;

/// IPv6 extension header numbers (RFC 8200 section 4, RFC 4302).
mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AH: u8 = 51;
    pub const DEST_OPTS: u8 = 60;
}

/// The header a [`ParseError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet II header.
    Ethernet,
    /// 802.1Q / 802.1ad tag.
    Vlan,
    /// Linux cooked capture v1 header.
    Sll,
    /// Linux cooked capture v2 header.
    Sll2,
    /// Raw IP of unknown version (first byte of a raw-IP frame).
    Ip,
    /// IPv4 header.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// IPv6 hop-by-hop, routing, destination-options or AH header.
    Ipv6Ext,
    /// IPv6 fragment header.
    Ipv6Frag,
    /// TCP header.
    Tcp,
    /// UDP header.
    Udp,
    /// ICMP header.
    Icmp,
    /// ICMPv6 header.
    Icmpv6,
    /// SCTP common header.
    Sctp,
}

impl Layer {
    /// Short lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "vlan",
            Layer::Sll => "sll",
            Layer::Sll2 => "sll2",
            Layer::Ip => "ip",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Ext => "ipv6 extension",
            Layer::Ipv6Frag => "ipv6 fragment",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Icmp => "icmp",
            Layer::Icmpv6 => "icmpv6",
            Layer::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a frame could not be summarised. [`ParseError::reason`] gives the pf-like reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The captured bytes end before a header the frame says is there.
    #[error("{layer} header needs {need} bytes, only {have} captured")]
    Short {
        /// Header that is cut.
        layer: Layer,
        /// Bytes the header needs from its start.
        need: usize,
        /// Bytes captured from its start.
        have: usize,
    },
    /// The IP length fields claim more bytes than the frame had on the wire.
    #[error("{layer} datagram of {len} bytes is longer than the {room} bytes the frame carries")]
    DatagramPastFrame {
        /// IPv4 or IPv6.
        layer: Layer,
        /// Datagram length the IP header states.
        len: usize,
        /// Bytes the frame had on the wire from the IP header on.
        room: usize,
    },
    /// A header length field is below the header's minimum (IPv4 IHL < 5, TCP data offset < 5).
    #[error("{layer} header length {len} is below the minimum of {min} bytes")]
    HeaderTooSmall {
        /// Header.
        layer: Layer,
        /// Header length in bytes, as stated.
        len: usize,
        /// Minimum header length in bytes.
        min: usize,
    },
    /// A header extends past the end of the datagram as the IP length fields state it.
    #[error("{layer} header of {len} bytes extends past the end of the datagram ({room} bytes left)")]
    HeaderPastEnd {
        /// Header.
        layer: Layer,
        /// Header length in bytes.
        len: usize,
        /// Bytes left in the datagram from the header's start.
        room: usize,
    },
    /// A fragment's offset plus its length passes the 65535-byte limit of an IP datagram.
    #[error("{layer} fragment at offset {offset} carrying {len} bytes ends past byte 65535")]
    FragmentOverflow {
        /// IPv4 or IPv6 fragment header.
        layer: Layer,
        /// Fragment offset in bytes.
        offset: u16,
        /// Fragment data length in bytes.
        len: usize,
    },
    /// A TCP option has a length below 2 or extends beyond the TCP header.
    #[error(
        "tcp option {kind} at option byte {at} has length {len}, which does not fit the {room} bytes left"
    )]
    BadTcpOption {
        /// Option kind.
        kind: u8,
        /// Option length as stated (0 when the length byte is past the header).
        len: u8,
        /// Offset of the option within the options area.
        at: usize,
        /// Option bytes left in the header from the option's start.
        room: usize,
    },
    /// The IP version nibble does not match the ethertype or link type.
    #[error("{layer} header has version {found}")]
    BadVersion {
        /// The IP header the link layer announced ([`Layer::Ip`] for raw IP of either version).
        layer: Layer,
        /// Version nibble found.
        found: u8,
    },
    /// A length field is smaller than the header it covers (IPv4 total length < IHL, UDP length < 8).
    #[error("{layer} length {len} is smaller than its {header_len}-byte header")]
    BadLength {
        /// Header.
        layer: Layer,
        /// Length as stated.
        len: usize,
        /// Header length.
        header_len: usize,
    },
    /// A transport length field claims more than the datagram holds (UDP length > IP payload).
    #[error("{layer} length {len} is longer than the {room} bytes the datagram holds")]
    LengthPastEnd {
        /// Header.
        layer: Layer,
        /// Length as stated.
        len: usize,
        /// Bytes the datagram holds from the header's start.
        room: usize,
    },
    /// dfw cannot parse this link type.
    #[error("unsupported link type {link}")]
    UnsupportedLink {
        /// The link type.
        link: LinkType,
    },
}

impl ParseError {
    /// Short pf-like reason code, for drop counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Short { .. } | ParseError::DatagramPastFrame { .. } => "short",
            ParseError::HeaderTooSmall { .. } | ParseError::HeaderPastEnd { .. } => "bad-header-length",
            ParseError::FragmentOverflow { .. } | ParseError::BadTcpOption { .. } => "bad-offset",
            ParseError::BadVersion { .. } => "bad-version",
            ParseError::BadLength { .. } | ParseError::LengthPastEnd { .. } => "bad-length",
            ParseError::UnsupportedLink { .. } => "unsupported-link",
        }
    }
}

/// Parses one frame of link type `link`. `data` is the captured bytes, `wire_len` the frame's length on
/// the wire (equal to `data.len()` for live traffic; larger for a capture cut by its snaplen).
///
/// A thin wrapper over [`parse_into`], for callers that want the summary by value.
#[inline]
pub fn parse_frame(link: LinkType, data: &[u8], wire_len: u32) -> Result<Packet, ParseError> {
    let mut pkt = Packet::default();
    parse_into(link, data, wire_len, &mut pkt)?;
    Ok(pkt)
}

/// Parses one frame into `out`, which a caller can keep and reuse across frames (a batch slot, say):
/// the same checks and the same summary as [`parse_frame`], written in place instead of being moved
/// through the stack. On `Ok`, every field of `out` is overwritten; on `Err`, `out` holds a partly
/// written summary that means nothing and must not be used.
///
/// ```
/// use pktio::parse::parse_into;
/// use pktio::{LinkType, Packet, L4};
///
/// let frame = [
///     0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
///     0, 53, 0x10, 0x92, 0, 8, 0, 0,
/// ];
/// let mut pkt = Packet::default();
/// parse_into(LinkType::Raw, &frame, frame.len() as u32, &mut pkt).unwrap();
/// assert_eq!(pkt.l4, L4::Udp { sport: 53, dport: 4242 });
/// ```
#[inline]
pub fn parse_into(link: LinkType, data: &[u8], wire_len: u32, out: &mut Packet) -> Result<(), ParseError> {
    if link == LinkType::Ethernet && parse_plain_tcp(data, wire_len, out) {
        return Ok(());
    }
    parse_any(link, data, wire_len, out)
}

/// Length of the headers [`PlainTcp::read`] reads: Ethernet II, IPv4 without options, TCP without options.
const PLAIN_TCP_LEN: usize = EthernetHeader::LEN + Ipv4Header::LEN + TcpHeader::LEN;

/// The common case: an untagged Ethernet II frame carrying an IPv4 datagram without options that is not
/// a fragment, carrying a TCP segment without options or with only a timestamp (`NOP NOP TS`, the
/// layout every established Linux or BSD segment has). Its fields are read at fixed offsets in one step,
/// without building a [`Packet`] (the engine's lean lane decides tracked frames from these alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainTcp {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub total_len: u16,
    /// The segment (its options: at most a timestamp).
    pub tcp: TcpInfo,
    /// Length of the frame on the wire.
    pub wire_len: u32,
}

impl PlainTcp {
    /// The frame's fields when it is a plain TCP frame (see [`PlainTcp`]); `None` for every other frame
    /// and for every frame [`parse_into`] would refuse (the caller then parses it the general way, which
    /// finds the error).
    ///
    /// Why this agrees with the general parser: with IHL 5 and data offset 5 the headers sit at fixed
    /// offsets inside the first [`PLAIN_TCP_LEN`] captured bytes, so no header is cut; `20 + tcp header
    /// <= total <= room` is what the IPv4 length checks and the TCP "header past the datagram" check
    /// reduce to; MF clear and offset 0 mean no fragment; and no options means
    /// [`TcpOptions::default`]. With data offset 8, the twelve option bytes, captured in full, are
    /// exactly `1 1 8 10` and a timestamp's eight bytes: well-formed, and nothing but the timestamp.
    /// `tests::plain_tcp_*` hold it to that.
    #[inline]
    pub fn read(data: &[u8], wire_len: u32) -> Option<PlainTcp> {
        const L3: usize = EthernetHeader::LEN;
        const L4_AT: usize = L3 + Ipv4Header::LEN;
        let h = data.first_chunk::<PLAIN_TCP_LEN>()?;
        let (Ok(eth), Ok(ip), Ok(tcp)) = (
            EthernetHeader::new_checked(h),
            Ipv4Header::new_checked(&h[L3..]),
            TcpHeader::new_checked(&h[L4_AT..]),
        ) else {
            return None;
        };
        let total = usize::from(ip.total_len());
        // As in `parse_any`: the bytes the frame had on the wire after the link header.
        let room = (wire_len as usize).max(data.len()) - L3;
        let hl = tcp.header_len();
        let plain = eth.ethertype() == ethertype::IPV4
            && ip.version() == 4
            && ip.header_len() == Ipv4Header::LEN
            && ip.protocol() == ipproto::TCP
            && !ip.more_frags()
            && ip.frag_offset() == 0
            && total >= Ipv4Header::LEN + hl
            && total <= room;
        if !plain {
            return None;
        }
        let options = match hl {
            TcpHeader::LEN => TcpOptions::default(),
            TS_ONLY_LEN => {
                let o = data.get(PLAIN_TCP_LEN..PLAIN_TCP_LEN + 12)?;
                if o[..4] != [1, 1, 8, 10] {
                    return None;
                }
                let word = |at: usize| u32::from_be_bytes([o[at], o[at + 1], o[at + 2], o[at + 3]]);
                TcpOptions { timestamp: Some((word(4), word(8))), ..TcpOptions::default() }
            }
            _ => return None,
        };
        Some(PlainTcp {
            dst_mac: eth.dst().0,
            src_mac: eth.src().0,
            src: ip.src(),
            dst: ip.dst(),
            ttl: ip.ttl(),
            total_len: ip.total_len(),
            // `total` is at most 65535.
            tcp: tcp_info(&tcp, (total - Ipv4Header::LEN - hl) as u16, options),
            wire_len,
        })
    }

    /// The frame's [`Packet`], exactly what [`parse_into`] gives.
    #[inline]
    pub fn packet(&self) -> Packet {
        Packet {
            dst_mac: MacAddr(self.dst_mac),
            src_mac: MacAddr(self.src_mac),
            vlans: [0; 2],
            vlan_count: 0,
            ethertype: ethertype::IPV4,
            ip: Some(IpInfo {
                src: IpAddr::V4(self.src),
                dst: IpAddr::V4(self.dst),
                proto: ipproto::TCP,
                ttl: self.ttl,
                total_len: self.total_len,
                frag: None,
                source_routed: false,
            }),
            l4: L4::Tcp(self.tcp),
            wire_len: self.wire_len,
        }
    }
}

/// TCP header length with `NOP NOP TS` options.
const TS_ONLY_LEN: usize = TcpHeader::LEN + 12;

/// [`parse_into`]'s plain-TCP case: true with `out` filled when the frame is a [`PlainTcp`].
#[inline]
fn parse_plain_tcp(data: &[u8], wire_len: u32, out: &mut Packet) -> bool {
    match PlainTcp::read(data, wire_len) {
        Some(p) => {
            *out = p.packet();
            true
        }
        None => false,
    }
}

/// [`peek_addresses`] for the usual frame, untagged Ethernet II carrying IPv4: the addresses (as
/// numbers) and the protocol field, read at fixed offsets; `None` for every other frame (which
/// `peek_addresses` may still read).
#[inline]
pub fn peek_plain_v4(data: &[u8]) -> Option<(u32, u32, u8)> {
    let h = data.first_chunk::<34>()?;
    if h[12..14] != ethertype::IPV4.to_be_bytes() || h[14] >> 4 != 4 {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    Some((word(26), word(30), h[23]))
}

/// The IP addresses and protocol field of an Ethernet frame (any stack of VLAN tags) carrying IPv4 or
/// IPv6, read straight from the IP header without checking anything else: enough to tell which worker
/// owns a frame without parsing it. `None` for other link types and ethertypes, a wrong IP version, or
/// too few captured bytes. For IPv6 the protocol is the first next-header field (an extension header's
/// number when there is one). [`parse_into`] may still refuse a frame this reads.
#[inline]
pub fn peek_addresses(link: LinkType, data: &[u8]) -> Option<(IpAddr, IpAddr, u8)> {
    if link != LinkType::Ethernet {
        return None;
    }
    // The usual frame in one step: untagged Ethernet II carrying IPv4, fields at fixed offsets.
    if let Some((src, dst, proto)) = peek_plain_v4(data) {
        return Some((IpAddr::V4(src.into()), IpAddr::V4(dst.into()), proto));
    }
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
    while matches!(ethertype, ethertype::VLAN | ethertype::QINQ | ETHERTYPE_QINQ_9100) {
        at += 4;
        ethertype = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
    }
    let ip = data.get(at + 2..)?;
    match ethertype {
        ethertype::IPV4 => {
            let h = ip.first_chunk::<20>()?;
            if h[0] >> 4 != 4 {
                return None;
            }
            let src = [h[12], h[13], h[14], h[15]];
            let dst = [h[16], h[17], h[18], h[19]];
            Some((IpAddr::from(src), IpAddr::from(dst), h[9]))
        }
        ethertype::IPV6 => {
            let h = ip.first_chunk::<40>()?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let src: [u8; 16] = h[8..24].try_into().ok()?;
            let dst: [u8; 16] = h[24..40].try_into().ok()?;
            Some((IpAddr::from(src), IpAddr::from(dst), h[6]))
        }
        _ => None,
    }
}

/// Parses any frame, every link type and layer, into `out`: the general path behind [`parse_into`]
/// (out of line, so the plain-TCP case inlines into the caller's loop).
#[inline(never)]
fn parse_any(link: LinkType, data: &[u8], wire_len: u32, out: &mut Packet) -> Result<(), ParseError> {
    *out = Packet { wire_len, ..Packet::default() };
    let pkt = out;
    let (ethertype, l3) = match link {
        LinkType::Ethernet => {
            let eth = EthernetHeader::new_checked(data)?;
            pkt.dst_mac = eth.dst();
            pkt.src_mac = eth.src();
            skip_vlans(pkt, eth.ethertype(), eth.payload())?
        }
        LinkType::LinuxSll => {
            let sll = SllHeader::new_checked(data)?;
            pkt.src_mac = sll.src_mac().unwrap_or_default();
            skip_vlans(pkt, sll.protocol(), sll.payload())?
        }
        LinkType::LinuxSll2 => {
            let sll = Sll2Header::new_checked(data)?;
            pkt.src_mac = sll.src_mac().unwrap_or_default();
            skip_vlans(pkt, sll.protocol(), sll.payload())?
        }
        LinkType::Raw => match data.first().map(|b| b >> 4) {
            Some(4) => (ethertype::IPV4, data),
            Some(6) => (ethertype::IPV6, data),
            Some(found) => return Err(ParseError::BadVersion { layer: Layer::Ip, found }),
            None => return Err(ParseError::Short { layer: Layer::Ip, need: 1, have: 0 }),
        },
        LinkType::Ipv4 => (ethertype::IPV4, data),
        LinkType::Ipv6 => (ethertype::IPV6, data),
        LinkType::Other(_) => return Err(ParseError::UnsupportedLink { link }),
    };
    pkt.ethertype = ethertype;
    // What the IP length fields are checked against: the bytes the frame had on the wire after the
    // link header. A capture may hold fewer (snaplen) but never legitimately more.
    let link_hdr_len = data.len() - l3.len();
    let room = (wire_len as usize).max(data.len()) - link_hdr_len;
    match ethertype {
        ethertype::IPV4 => parse_ipv4(pkt, l3, room)?,
        ethertype::IPV6 => parse_ipv6(pkt, l3, room)?,
        _ => {}
    }
    Ok(())
}

/// Records and skips any stack of 802.1Q/802.1ad tags; returns the inner ethertype and what follows.
#[inline]
fn skip_vlans<'a>(
    pkt: &mut Packet,
    mut ethertype: u16,
    mut rest: &'a [u8],
) -> Result<(u16, &'a [u8]), ParseError> {
    while matches!(ethertype, ethertype::VLAN | ethertype::QINQ | ETHERTYPE_QINQ_9100) {
        let tag = VlanTag::new_checked(rest)?;
        if let Some(slot) = pkt.vlans.get_mut(usize::from(pkt.vlan_count)) {
            *slot = tag.vid();
        }
        pkt.vlan_count = pkt.vlan_count.saturating_add(1);
        ethertype = tag.ethertype();
        rest = tag.payload();
    }
    Ok((ethertype, rest))
}

/// Checks that a `len`-byte header fits in the `room` bytes the datagram has left and in the captured
/// bytes `buf`, in that order: a header past the datagram's end is malformed, one past the capture's end
/// is only cut short.
#[inline]
fn fits(layer: Layer, buf: &[u8], room: usize, len: usize) -> Result<(), ParseError> {
    if len > room {
        return Err(ParseError::HeaderPastEnd { layer, len, room });
    }
    check_len(layer, buf, len)
}

/// Fails unless a fragment at `offset` carrying `len` bytes ends within the 65535-byte datagram limit.
#[inline]
fn check_fragment(layer: Layer, offset: u16, len: usize) -> Result<(), ParseError> {
    if usize::from(offset) + len > usize::from(u16::MAX) {
        return Err(ParseError::FragmentOverflow { layer, offset, len });
    }
    Ok(())
}

#[inline]
fn parse_ipv4(pkt: &mut Packet, buf: &[u8], room: usize) -> Result<(), ParseError> {
    let ip = Ipv4Header::new_checked(buf)?;
    if ip.version() != 4 {
        return Err(ParseError::BadVersion { layer: Layer::Ipv4, found: ip.version() });
    }
    let hl = ip.header_len();
    if hl < Ipv4Header::LEN {
        return Err(ParseError::HeaderTooSmall { layer: Layer::Ipv4, len: hl, min: Ipv4Header::LEN });
    }
    let total = usize::from(ip.total_len());
    if total < hl {
        return Err(ParseError::BadLength { layer: Layer::Ipv4, len: total, header_len: hl });
    }
    check_len(Layer::Ipv4, buf, hl)?;
    if total > room {
        return Err(ParseError::DatagramPastFrame { layer: Layer::Ipv4, len: total, room });
    }
    let offset = ip.frag_offset();
    let frag = if ip.more_frags() || offset != 0 {
        check_fragment(Layer::Ipv4, offset, total - hl)?;
        Some(FragInfo { offset, more: ip.more_frags(), id: u32::from(ip.ident()), len: (total - hl) as u16 })
    } else {
        None
    };
    pkt.ip = Some(IpInfo {
        src: IpAddr::V4(ip.src()),
        dst: IpAddr::V4(ip.dst()),
        proto: ip.protocol(),
        ttl: ip.ttl(),
        total_len: ip.total_len(),
        frag,
        source_routed: hl > Ipv4Header::LEN && has_source_route(&buf[Ipv4Header::LEN..hl]),
    });
    if offset != 0 {
        // A non-first fragment carries the middle of a datagram, not a transport header.
        return Ok(());
    }
    // The datagram ends where its header says; Ethernet pads short frames past that.
    let payload = buf.get(hl..total.min(buf.len())).unwrap_or_default();
    parse_l4(&mut pkt.l4, false, ip.protocol(), payload, total - hl, frag.is_some())
}

fn parse_ipv6(pkt: &mut Packet, buf: &[u8], room: usize) -> Result<(), ParseError> {
    let ip = Ipv6Header::new_checked(buf)?;
    if ip.version() != 6 {
        return Err(ParseError::BadVersion { layer: Layer::Ipv6, found: ip.version() });
    }
    // Jumbograms (payload length 0 with a hop-by-hop jumbo option, RFC 2675) are not supported: their
    // headers then lie past the stated end of the datagram.
    let payload_len = usize::from(ip.payload_len());
    let total = Ipv6Header::LEN + payload_len;
    if total > room {
        return Err(ParseError::DatagramPastFrame { layer: Layer::Ipv6, len: total, room });
    }
    let payload = buf.get(Ipv6Header::LEN..total.min(buf.len())).unwrap_or_default();
    let chain = walk_ipv6_ext(ip.next_header(), payload, payload_len)?;
    pkt.ip = Some(IpInfo {
        src: IpAddr::V6(ip.src()),
        dst: IpAddr::V6(ip.dst()),
        proto: chain.proto,
        ttl: ip.hop_limit(),
        total_len: u16::try_from(total).unwrap_or(u16::MAX),
        frag: chain.frag,
        source_routed: chain.routing0,
    });
    if chain.frag.is_some_and(|f| !f.is_first()) {
        return Ok(());
    }
    let upper = payload.get(chain.len..).unwrap_or_default();
    parse_l4(&mut pkt.l4, true, chain.proto, upper, payload_len - chain.len, chain.frag.is_some())
}

/// The outcome of walking an IPv6 extension-header chain.
#[derive(Debug, Clone, Copy)]
struct Ipv6Chain {
    /// Upper-layer protocol (for a non-first fragment: the fragment header's next header).
    proto: u8,
    /// Bytes of extension headers walked.
    len: usize,
    /// Fragment header contents, if one was present.
    frag: Option<FragInfo>,
    /// A type 0 routing header was walked.
    routing0: bool,
}

/// Walks the extension headers starting with `next_header` over `buf` (the captured payload after the
/// fixed header), where the payload is `room` bytes as the IPv6 header states it. Each header advances at
/// least 8 bytes, so the walk ends.
fn walk_ipv6_ext(next_header: u8, buf: &[u8], room: usize) -> Result<Ipv6Chain, ParseError> {
    let mut nh = next_header;
    let mut off = 0usize;
    let mut frag = None;
    let mut routing0 = false;
    loop {
        let rest = buf.get(off..).unwrap_or_default();
        let left = room - off;
        match nh {
            ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS | ext::AH => {
                fits(Layer::Ipv6Ext, rest, left, Ipv6ExtHeader::LEN)?;
                let h = Ipv6ExtHeader::new_checked(rest)?;
                let len = h.header_len(nh == ext::AH);
                fits(Layer::Ipv6Ext, rest, left, len)?;
                // The routing type is the header's third byte (RFC 8200 §4.4).
                routing0 |= nh == ext::ROUTING && rest.get(2) == Some(&0);
                nh = h.next_header();
                off += len;
            }
            ext::FRAGMENT => {
                fits(Layer::Ipv6Frag, rest, left, Ipv6FragHeader::LEN)?;
                let f = Ipv6FragHeader::new_checked(rest)?;
                off += Ipv6FragHeader::LEN;
                check_fragment(Layer::Ipv6Frag, f.offset(), room - off)?;
                if f.offset() == 0 && !f.more() {
                    // An atomic fragment is a whole datagram: processed as one, never matched with
                    // other fragments of its identification (RFC 8200 §4.5, RFC 6946).
                    nh = f.next_header();
                    continue;
                }
                frag = Some(FragInfo {
                    offset: f.offset(),
                    more: f.more(),
                    id: f.ident(),
                    len: (room - off) as u16,
                });
                nh = f.next_header();
                if f.offset() != 0 {
                    // What follows is the middle of the fragmentable part, not a header.
                    break;
                }
            }
            _ => break,
        }
    }
    Ok(Ipv6Chain { proto: nh, len: off, frag, routing0 })
}

/// Whether IPv4 `options` (the header past its fixed 20 bytes) hold a loose or strict source route
/// (types 131 and 137, RFC 791). The walk stops at the end-of-list option or at an option whose length
/// does not fit; a receiver refuses such a header anyway.
fn has_source_route(options: &[u8]) -> bool {
    const END: u8 = 0;
    const NOP: u8 = 1;
    const LSRR: u8 = 131;
    const SSRR: u8 = 137;
    let mut rest = options;
    while let Some(&kind) = rest.first() {
        match kind {
            END => return false,
            NOP => rest = &rest[1..],
            LSRR | SSRR => return true,
            _ => match rest.get(1).map(|&l| usize::from(l)) {
                Some(len) if len >= 2 && len <= rest.len() => rest = &rest[len..],
                _ => return false,
            },
        }
    }
    false
}

/// Parses the transport header into `out`, which holds `L4::None` on entry. `buf` is the captured part
/// of the transport bytes, `room` their length as the IP header states it. In a first fragment (`fragmented`) the transport header may continue in
/// the next fragment: a fixed header that does not fit gives `L4::None` (the engine sees `frag` and
/// decides; tiny first fragments are an evasion pattern, RFC 1858) and a TCP header longer than the
/// fragment is read as far as the fragment goes.
///
/// The summary is written in place rather than returned: a `Result<L4, _>` moved through the stack
/// into the `Packet` cost more than the parsing itself on 64-byte frames.
#[inline]
fn parse_l4(
    out: &mut L4,
    v6: bool,
    proto: u8,
    buf: &[u8],
    room: usize,
    fragmented: bool,
) -> Result<(), ParseError> {
    match proto {
        ipproto::TCP => parse_tcp(out, buf, room, fragmented),
        ipproto::UDP => {
            if fragmented && room < UdpHeader::LEN {
                return Ok(());
            }
            fits(Layer::Udp, buf, room, UdpHeader::LEN)?;
            let udp = UdpHeader::new_checked(buf)?;
            if !fragmented {
                // pf rejects a UDP length below the header or beyond the datagram (pf.c, pf_setup_pdesc).
                let len = usize::from(udp.length());
                if len < UdpHeader::LEN {
                    return Err(ParseError::BadLength { layer: Layer::Udp, len, header_len: UdpHeader::LEN });
                }
                if len > room {
                    return Err(ParseError::LengthPastEnd { layer: Layer::Udp, len, room });
                }
            }
            *out = L4::Udp { sport: udp.sport(), dport: udp.dport() };
            Ok(())
        }
        ipproto::ICMP if !v6 => parse_icmp(out, Layer::Icmp, buf, room, fragmented),
        ipproto::ICMPV6 if v6 => parse_icmp(out, Layer::Icmpv6, buf, room, fragmented),
        ipproto::SCTP => {
            if fragmented && room < SctpHeader::LEN {
                return Ok(());
            }
            fits(Layer::Sctp, buf, room, SctpHeader::LEN)?;
            let sctp = SctpHeader::new_checked(buf)?;
            *out = L4::Sctp { sport: sctp.sport(), dport: sctp.dport() };
            Ok(())
        }
        _ => {
            *out = L4::Other;
            Ok(())
        }
    }
}

#[inline]
fn parse_tcp(out: &mut L4, buf: &[u8], room: usize, fragmented: bool) -> Result<(), ParseError> {
    if fragmented && room < TcpHeader::LEN {
        return Ok(());
    }
    fits(Layer::Tcp, buf, room, TcpHeader::LEN)?;
    let tcp = TcpHeader::new_checked(buf)?;
    let hl = tcp.header_len();
    if hl < TcpHeader::LEN {
        return Err(ParseError::HeaderTooSmall { layer: Layer::Tcp, len: hl, min: TcpHeader::LEN });
    }
    if hl > room && !fragmented {
        return Err(ParseError::HeaderPastEnd { layer: Layer::Tcp, len: hl, room });
    }
    // In a first fragment, `room` is what this fragment holds, so `payload_len` counts only its bytes.
    // Options as far as they were captured; `buf` already ends where the datagram (or fragment) ends.
    let captured = buf.get(TcpHeader::LEN..hl.min(buf.len())).unwrap_or_default();
    // Most segments carry no options; skipping the call keeps the summary out of memory on that path.
    let options = if hl == TcpHeader::LEN {
        TcpOptions::default()
    } else {
        parse_tcp_options(captured, hl - TcpHeader::LEN)?
    };
    let payload_len = u16::try_from(room.saturating_sub(hl)).unwrap_or(u16::MAX);
    *out = L4::Tcp(tcp_info(&tcp, payload_len, options));
    Ok(())
}

/// The summary of a TCP header.
#[inline]
fn tcp_info(tcp: &TcpHeader<'_>, payload_len: u16, options: TcpOptions) -> TcpInfo {
    TcpInfo {
        sport: tcp.sport(),
        dport: tcp.dport(),
        seq: tcp.seq(),
        ack: tcp.ack(),
        flags: tcp.flags(),
        window: tcp.window(),
        payload_len,
        options,
    }
}

/// TCP option kinds dfw reads (RFC 9293, RFC 2018, RFC 7323).
mod tcpopt {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WSCALE: u8 = 3;
    pub const SACK_PERMITTED: u8 = 4;
    pub const TIMESTAMP: u8 = 8;
}

/// Reads TCP options from `opts`, the captured part of an options area the header says is `declared`
/// bytes long. An option whose length is below 2 or runs past `declared` is malformed; one that runs past
/// the captured bytes ends the walk quietly. A known option with an unexpected length is ignored, as
/// Linux's `tcp_parse_options` does, and unknown options are skipped.
#[inline]
pub fn parse_tcp_options(opts: &[u8], declared: usize) -> Result<TcpOptions, ParseError> {
    let mut out = TcpOptions::default();
    let mut at = 0usize;
    while let Some(&kind) = opts.get(at) {
        match kind {
            tcpopt::END => break,
            tcpopt::NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let room = declared.saturating_sub(at);
        let Some(&len) = opts.get(at + 1) else {
            if opts.len() >= declared {
                // The header ends between the kind and the length byte.
                return Err(ParseError::BadTcpOption { kind, len: 0, at, room });
            }
            break;
        };
        let end = at + usize::from(len);
        if len < 2 || end > declared {
            return Err(ParseError::BadTcpOption { kind, len, at, room });
        }
        let Some(value) = opts.get(at + 2..end) else {
            break;
        };
        match (kind, value) {
            (tcpopt::MSS, &[a, b]) => out.mss = Some(u16::from_be_bytes([a, b])),
            (tcpopt::WSCALE, &[shift]) => out.wscale = Some(shift),
            (tcpopt::SACK_PERMITTED, &[]) => out.sack_permitted = true,
            (tcpopt::TIMESTAMP, &[a, b, c, d, e, f, g, h]) => {
                out.timestamp = Some((u32::from_be_bytes([a, b, c, d]), u32::from_be_bytes([e, f, g, h])));
            }
            _ => {}
        }
        at = end;
    }
    Ok(out)
}

fn parse_icmp(
    out: &mut L4,
    layer: Layer,
    buf: &[u8],
    room: usize,
    fragmented: bool,
) -> Result<(), ParseError> {
    if fragmented && room < IcmpHeader::LEN {
        return Ok(());
    }
    fits(layer, buf, room, IcmpHeader::LEN)?;
    let icmp = IcmpHeader::new_checked(buf)?;
    let v6 = layer == Layer::Icmpv6;
    let ty = icmp.icmp_type();
    let echo_id = is_echo(v6, ty).then(|| icmp.echo_id());
    let quoted = if is_error(v6, ty) { parse_quote(v6, icmp.payload()) } else { None };
    *out = L4::Icmp(IcmpInfo { icmp_type: ty, code: icmp.code(), echo_id, quoted });
    Ok(())
}

/// Echo request/reply: ICMP 8/0 (RFC 792), ICMPv6 128/129 (RFC 4443).
fn is_echo(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 128 | 129)
    } else {
        matches!(ty, 0 | 8)
    }
}

/// Error messages that quote the offending datagram: ICMP unreachable, source quench, redirect, time
/// exceeded, parameter problem (RFC 792); ICMPv6 unreachable, too big, time exceeded, parameter problem
/// (RFC 4443).
fn is_error(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 1..=4)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

/// Parses the datagram an ICMP error quotes. Quotes are often cut (RFC 792 promises only the IP header
/// and 8 bytes; routers may quote less), so anything missing or malformed gives `None`, not an error.
fn parse_quote(v6: bool, buf: &[u8]) -> Option<QuotedHeader> {
    if v6 {
        let ip = Ipv6Header::new_checked(buf).ok().filter(|ip| ip.version() == 6)?;
        let rest = buf.get(Ipv6Header::LEN..)?;
        // Bounded by what was quoted, not by the quoted payload length, which describes the original.
        let chain = walk_ipv6_ext(ip.next_header(), rest, rest.len()).ok()?;
        let non_first = chain.frag.is_some_and(|f| !f.is_first());
        let transport = rest.get(chain.len..)?;
        let (sport, dport) = quoted_ports(true, chain.proto, transport, non_first)?;
        Some(QuotedHeader {
            src: IpAddr::V6(ip.src()),
            dst: IpAddr::V6(ip.dst()),
            proto: chain.proto,
            sport,
            dport,
            seq: quoted_seq(chain.proto, transport, non_first),
        })
    } else {
        let ip = Ipv4Header::new_checked(buf).ok().filter(|ip| ip.version() == 4)?;
        if ip.header_len() < Ipv4Header::LEN {
            return None;
        }
        let transport = buf.get(ip.header_len()..)?;
        let non_first = ip.frag_offset() != 0;
        let (sport, dport) = quoted_ports(false, ip.protocol(), transport, non_first)?;
        Some(QuotedHeader {
            src: IpAddr::V4(ip.src()),
            dst: IpAddr::V4(ip.dst()),
            proto: ip.protocol(),
            sport,
            dport,
            seq: quoted_seq(ip.protocol(), transport, non_first),
        })
    }
}

/// The sequence number of a quoted TCP header, when the quote reaches it.
fn quoted_seq(proto: u8, t: &[u8], non_first: bool) -> Option<u32> {
    if proto != ipproto::TCP || non_first {
        return None;
    }
    let b = t.get(4..8)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Ports of a quoted transport header (echo identifier twice for a quoted echo), `(0, 0)` when the
/// protocol has none, `None` when the quote ends before them.
fn quoted_ports(v6: bool, proto: u8, t: &[u8], non_first: bool) -> Option<(u16, u16)> {
    let be16 = |at: usize| t.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if non_first {
        return Some((0, 0));
    }
    match proto {
        ipproto::TCP | ipproto::UDP | ipproto::SCTP => Some((be16(0)?, be16(2)?)),
        ipproto::ICMP | ipproto::ICMPV6 if (proto == ipproto::ICMPV6) == v6 => {
            if is_echo(v6, *t.first()?) {
                let id = be16(4)?;
                Some((id, id))
            } else {
                Some((0, 0))
            }
        }
        _ => Some((0, 0)),
    }
}

#[cfg(test)]
mod tests;
