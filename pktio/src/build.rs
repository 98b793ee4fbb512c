//! Building well-formed frames (with correct checksums) for generated captures and tests.

use std::net::Ipv4Addr;

use crate::packet::{ethertype, ipproto};

/// One side of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// MAC address.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ip: Ipv4Addr,
}

/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    // Pad to the 60-byte Ethernet minimum (without FCS), as a NIC would.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// RFC 1071 one's-complement sum folded to 16 bits, complemented.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// A TCP segment's header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSeg<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (see [`crate::packet::tcpflags`]).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// MSS option, sent on SYNs.
    pub mss: Option<u16>,
    /// Payload.
    pub payload: &'a [u8],
}

/// An Ethernet/IPv4/TCP frame from `src` to `dst`.
pub fn tcp_v4(src: &Host, dst: &Host, ip_id: u16, seg: &TcpSeg<'_>) -> Vec<u8> {
    let opt_len = if seg.mss.is_some() { 4 } else { 0 };
    let mut t = Vec::with_capacity(20 + opt_len + seg.payload.len());
    t.extend_from_slice(&seg.sport.to_be_bytes());
    t.extend_from_slice(&seg.dport.to_be_bytes());
    t.extend_from_slice(&seg.seq.to_be_bytes());
    t.extend_from_slice(&seg.ack.to_be_bytes());
    t.push(((20 + opt_len) as u8 / 4) << 4);
    t.push(seg.flags);
    t.extend_from_slice(&seg.window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    if let Some(mss) = seg.mss {
        t.extend_from_slice(&[2, 4]);
        t.extend_from_slice(&mss.to_be_bytes());
    }
    t.extend_from_slice(seg.payload);
    let c = checksum(&[&pseudo(src.ip, dst.ip, ipproto::TCP, t.len()), &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ethernet(dst.mac, src.mac, ethertype::IPV4, &ipv4(src.ip, dst.ip, ipproto::TCP, ip_id, &t))
}

/// An Ethernet/IPv4/UDP frame.
pub fn udp_v4(src: &Host, dst: &Host, ip_id: u16, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = checksum(&[&pseudo(src.ip, dst.ip, ipproto::UDP, u.len()), &u]);
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    ethernet(dst.mac, src.mac, ethertype::IPV4, &ipv4(src.ip, dst.ip, ipproto::UDP, ip_id, &u))
}

/// An Ethernet/IPv4 ICMP echo request (`reply == false`) or reply.
pub fn icmp_echo_v4(src: &Host, dst: &Host, ip_id: u16, reply: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![if reply { 0 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"dfw-ping-payload");
    let c = checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(dst.mac, src.mac, ethertype::IPV4, &ipv4(src.ip, dst.ip, ipproto::ICMP, ip_id, &m))
}

/// An ARP request from `src` asking for `target` (broadcast), or, with `reply_to`, the reply to it.
pub fn arp(src: &Host, target: Ipv4Addr, reply_to: Option<&Host>) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, if reply_to.is_some() { 2 } else { 1 }];
    a.extend_from_slice(&src.mac);
    a.extend_from_slice(&src.ip.octets());
    match reply_to {
        Some(r) => {
            a.extend_from_slice(&r.mac);
            a.extend_from_slice(&r.ip.octets());
        }
        None => {
            a.extend_from_slice(&[0; 6]);
            a.extend_from_slice(&target.octets());
        }
    }
    let dst = reply_to.map_or(BROADCAST, |r| r.mac);
    ethernet(dst, src.mac, ethertype::ARP, &a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let a = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
        let b = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 0, 0, 2) };
        let seg = TcpSeg {
            sport: 1234,
            dport: 80,
            seq: 1,
            ack: 0,
            flags: 2,
            window: 1000,
            mss: Some(1460),
            payload: b"hi",
        };
        let f = tcp_v4(&a, &b, 7, &seg);
        // The IPv4 header and the TCP segment (with pseudo-header) each sum to zero when correct.
        assert_eq!(checksum(&[&f[14..34]]), 0);
        let tcp = &f[34..34 + 26];
        assert_eq!(checksum(&[&pseudo(a.ip, b.ip, 6, tcp.len()), tcp]), 0);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 20 + 26);
        let r = icmp_echo_v4(&a, &b, 1, false, 9, 1);
        assert_eq!(checksum(&[&r[34..34 + 24]]), 0);
    }
}
