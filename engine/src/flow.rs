//! Direction-independent flow keys and the symmetric hash that routes both directions of a connection
//! (and the ICMP errors and fragments that belong to it) to the same worker.

use std::net::IpAddr;

use pktio::packet::L4;
use pktio::Packet;

/// One endpoint of a flow: address (IPv4 mapped into 16 bytes) and port. Endpoints order by address
/// (as a big-endian number, which is the bytes' lexicographic order) and then port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address bytes; IPv4 as `::ffff:a.b.c.d`.
    pub addr: [u8; 16],
    /// Port, ICMP echo identifier, or 0.
    pub port: u16,
}

impl Endpoint {
    /// An endpoint.
    #[inline]
    pub fn new(ip: IpAddr, port: u16) -> Endpoint {
        Endpoint { addr: mapped(ip).to_be_bytes(), port }
    }

    /// The address and port as one number whose order is the endpoints' order.
    #[inline]
    fn rank(&self) -> (u128, u16) {
        (u128::from_be_bytes(self.addr), self.port)
    }

    /// The address back as an `IpAddr`.
    pub fn ip(&self) -> IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

impl PartialOrd for Endpoint {
    fn partial_cmp(&self, other: &Endpoint) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Endpoint {
    #[inline]
    fn cmp(&self, other: &Endpoint) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// An address as the number of its 16-byte form (IPv4 as `::ffff:a.b.c.d`).
#[inline]
fn mapped(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => 0xffff_u128 << 32 | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// An endpoint as (address number, port), ordered as [`Endpoint`]s are.
type Numbered = (u128, u16);

/// A connection's key, the same for both directions: the endpoints in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The smaller endpoint.
    pub lo: Endpoint,
    /// The larger endpoint.
    pub hi: Endpoint,
    /// IP protocol.
    pub proto: u8,
}

impl FlowKey {
    /// A fast 64-bit hash of the key for the flow table (see [`hash_parts`]).
    #[inline]
    pub fn hash64(&self) -> u64 {
        let (lo, hi) = (self.lo.rank(), self.hi.rank());
        hash_parts(lo.0, hi.0, lo.1, hi.1, self.proto)
    }

    /// [`FlowKey::of`] with the key's [`FlowKey::hash64`], worked out together.
    #[inline]
    pub fn of_hashed(pkt: &Packet) -> Option<(FlowKey, bool, u64)> {
        let (lo, hi, from_lo, proto) = Self::ordered(pkt)?;
        let hash = hash_parts(lo.0, hi.0, lo.1, hi.1, proto);
        let ep = |(addr, port): (u128, u16)| Endpoint { addr: addr.to_be_bytes(), port };
        Some((FlowKey { lo: ep(lo), hi: ep(hi), proto }, from_lo, hash))
    }

    /// The endpoints of `pkt` as (address number, port), smaller first, whether the source is the
    /// smaller, and the protocol. ICMP echo request/reply use the identifier as both ports; other ICMP
    /// and portless protocols use 0.
    #[inline]
    fn ordered(pkt: &Packet) -> Option<(Numbered, Numbered, bool, u8)> {
        let ip = pkt.ip.as_ref()?;
        let (sp, dp) = match pkt.l4 {
            L4::Tcp(t) => (t.sport, t.dport),
            L4::Udp { sport, dport } | L4::Sctp { sport, dport } => (sport, dport),
            L4::Icmp(i) => i.echo_id.map_or((0, 0), |id| (id, id)),
            _ => (0, 0),
        };
        let (a, b) = ((mapped(ip.src), sp), (mapped(ip.dst), dp));
        Some(if a <= b { (a, b, true, ip.proto) } else { (b, a, false, ip.proto) })
    }

    /// The key of a flow between `a` and `b`, and whether `a` is the `lo` side.
    #[inline]
    pub fn new(proto: u8, a: Endpoint, b: Endpoint) -> (FlowKey, bool) {
        if a <= b {
            (FlowKey { lo: a, hi: b, proto }, true)
        } else {
            (FlowKey { lo: b, hi: a, proto }, false)
        }
    }

    /// The key of `pkt` and whether its source is the `lo` side; `None` for non-IP frames. ICMP echo
    /// request/reply use the identifier as both ports; other ICMP and portless protocols use 0.
    #[inline]
    pub fn of(pkt: &Packet) -> Option<(FlowKey, bool)> {
        let (lo, hi, from_lo, proto) = Self::ordered(pkt)?;
        let ep = |(addr, port): (u128, u16)| Endpoint { addr: addr.to_be_bytes(), port };
        Some((FlowKey { lo: ep(lo), hi: ep(hi), proto }, from_lo))
    }

    /// The key of the connection an ICMP error quotes, and whether the quoted datagram's source (the
    /// connection side that sent it) is the `lo` side.
    pub fn quoted(pkt: &Packet) -> Option<(FlowKey, bool)> {
        let L4::Icmp(icmp) = pkt.l4 else { return None };
        let q = icmp.quoted?;
        Some(FlowKey::new(q.proto, Endpoint::new(q.src, q.sport), Endpoint::new(q.dst, q.dport)))
    }
}

/// The flow-table hash of a key given as numbers: the key read as five words, each folded in with a
/// 64×64→128-bit multiply (the mixing step of wyhash / foldhash). Keys come from the network, so the
/// seed is fixed per process but not guessable from outside: it mixes in the address of a static,
/// which ASLR randomises.
#[inline]
fn hash_parts(lo: u128, hi: u128, lo_port: u16, hi_port: u16, proto: u8) -> u64 {
    // Two IPv4 endpoints (the common case): above their low 32 bits both addresses are the mapped
    // prefix, so the two low words and the tail carry the whole key, in two folds instead of five.
    const V4_MAPPED: u128 = 0xffff_u128 << 32;
    const HIGH_96: u128 = !0xffff_ffff_u128;
    if lo & HIGH_96 == V4_MAPPED && hi & HIGH_96 == V4_MAPPED {
        let word = |addr: u128, port: u16| u64::from(addr as u32) << 16 | u64::from(port);
        return hash_v4(word(lo, lo_port), word(hi, hi_port) | u64::from(proto) << 48);
    }
    let mut h = seed();
    for x in [(lo >> 64) as u64, lo as u64, (hi >> 64) as u64, hi as u64, tail(lo_port, hi_port, proto)] {
        h = fold(h ^ x, FOLD);
    }
    h
}

/// [`hash_parts`] of a key between two IPv4 endpoints, from its two words as a packed key holds them
/// (`lo`: the `lo` address above its port; `hi`: the same for `hi`, with the protocol in bits 48..56).
#[inline]
pub(crate) fn hash_v4(lo: u64, hi: u64) -> u64 {
    fold(fold(seed() ^ lo, FOLD) ^ hi, FOLD)
}

/// The multiplier of every fold.
const FOLD: u64 = 0x5851_F42D_4C95_7F2D;

/// The ports and protocol as the last word hashed.
#[inline]
fn tail(lo_port: u16, hi_port: u16, proto: u8) -> u64 {
    u64::from(lo_port) | u64::from(hi_port) << 16 | u64::from(proto) << 32
}

/// The hash seed: fixed per process, not guessable from outside (the address of a static, which ASLR
/// randomises).
#[inline]
fn seed() -> u64 {
    static SEED_ANCHOR: u8 = 0;
    (&SEED_ANCHOR as *const u8 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x243F_6A88_85A3_08D3
}

/// The folded multiply: the high and low halves of the 128-bit product, xored.
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A hash of the unordered address pair of a frame: equal for both directions, for every port, for
/// fragments and for ICMP errors about the flow (which are hashed by the addresses they quote). Used
/// to give each worker its share of connections.
pub fn route_hash(pkt: &Packet) -> u64 {
    let quoted = match pkt.l4 {
        L4::Icmp(i) => i.quoted,
        _ => None,
    };
    let (a, b) = match (quoted, pkt.ip.as_ref()) {
        (Some(q), _) => (q.src, q.dst),
        (None, Some(ip)) => (ip.src, ip.dst),
        // Non-IP frames (ARP): route by MAC pair.
        (None, None) => return pair_hash(mac_word(pkt.src_mac.0), mac_word(pkt.dst_mac.0)),
    };
    pair_hash(addr_word(a), addr_word(b))
}

/// [`route_hash`] read from the raw frame without parsing it, for the frames where that is certain to
/// give the same value: Ethernet frames carrying IPv4 or IPv6 with TCP, UDP or SCTP right after the IP
/// header (never ICMP errors, which route by the addresses they quote). `None` for anything else; the
/// caller then parses the frame and uses [`route_hash`].
#[inline]
pub fn peek_route_hash(link: pktio::LinkType, data: &[u8]) -> Option<u64> {
    use pktio::packet::ipproto;
    // The usual frame, untagged Ethernet II with IPv4, without making `IpAddr`s: the same hash.
    if let (pktio::LinkType::Ethernet, Some((src, dst, proto))) = (link, pktio::peek_plain_v4(data)) {
        return matches!(proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP)
            .then(|| pair_hash(u64::from(src), u64::from(dst)));
    }
    let (src, dst, proto) = pktio::peek_addresses(link, data)?;
    matches!(proto, ipproto::TCP | ipproto::UDP | ipproto::SCTP)
        .then(|| pair_hash(addr_word(src), addr_word(dst)))
}

/// [`route_hash`] of an IPv4 frame between addresses `a` and `b` (as numbers, in either order).
#[inline]
pub(crate) fn route_hash_v4(a: u32, b: u32) -> u64 {
    pair_hash(u64::from(a), u64::from(b))
}

fn mac_word(m: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
}

fn addr_word(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64).rotate_left(17)
        }
    }
}

/// Symmetric mix of two words (order-independent: their exclusive or and their sum), multiplied so the
/// high bits, which pick the worker, depend on every bit of both.
#[inline]
fn pair_hash(a: u64, b: u64) -> u64 {
    let h = ((a ^ b).rotate_left(32) ^ a.wrapping_add(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip_and_keys_are_direction_independent() {
        let a = Endpoint::new("10.0.0.1".parse().unwrap(), 1234);
        let b = Endpoint::new("2001:db8::1".parse().unwrap(), 80);
        assert_eq!(a.ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(b.ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
        let (k1, a_lo) = FlowKey::new(6, a, b);
        let (k2, b_lo) = FlowKey::new(6, b, a);
        assert_eq!(k1, k2);
        assert_ne!(a_lo, b_lo);
    }

    proptest::proptest! {
        /// The endpoints order as their bytes do, and the key worked out with its hash agrees with the
        /// key and hash worked out apart.
        #[test]
        fn keys_order_and_hash_consistently(a in proptest::prelude::any::<[u8; 16]>(), b in proptest::prelude::any::<[u8; 16]>(),
                                            pa in proptest::prelude::any::<u16>(), pb in proptest::prelude::any::<u16>(), v4 in proptest::prelude::any::<bool>()) {
            let ip = |x: [u8; 16]| if v4 { IpAddr::from([x[0], x[1], x[2], x[3]]) } else { IpAddr::from(x) };
            let (ea, eb) = (Endpoint::new(ip(a), pa), Endpoint::new(ip(b), pb));
            proptest::prop_assert_eq!(ea.cmp(&eb), (ea.addr, ea.port).cmp(&(eb.addr, eb.port)));
            let pkt = Packet {
                ip: Some(pktio::IpInfo { src: ip(a), dst: ip(b), proto: 17, ttl: 64, total_len: 28, frag: None, source_routed: false }),
                l4: L4::Udp { sport: pa, dport: pb },
                ..Packet::default()
            };
            let (k, lo, h) = FlowKey::of_hashed(&pkt).unwrap();
            proptest::prop_assert_eq!(Some((k, lo)), FlowKey::of(&pkt));
            proptest::prop_assert_eq!(h, k.hash64());
            proptest::prop_assert_eq!(k, FlowKey::new(17, ea, eb).0);
        }
    }

    #[test]
    fn pair_hash_is_symmetric() {
        for (a, b) in [(1u64, 2u64), (0xdead_beef, 7), (u64::MAX, 0)] {
            assert_eq!(pair_hash(a, b), pair_hash(b, a));
        }
        assert_ne!(pair_hash(1, 2), pair_hash(1, 3));
    }
}
