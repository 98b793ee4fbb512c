//! Frame-parsing tests: real frames from the shared test captures with every field asserted, then one
//! test per error reason built by corrupting one field of a valid frame.

use std::net::IpAddr;

use super::*;
use crate::packet::{tcpflags, MacAddr};

/// Decodes a hex string, ignoring whitespace.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    let v = hex(&s.replace(':', ""));
    MacAddr(v.try_into().unwrap())
}

/// zeek tcp_syn-synack.pcap frame 1: Ethernet/IPv4/TCP SYN, 141.142.228.5:59856 -> 192.150.187.43:80,
/// options MSS 1460, NOP, WS 4, NOP, NOP, TS 0x164add20/0, SACK-permitted, EOL.
pub(crate) const SYN: &str = "
    0010db88d2ef c8bcc896d2a0 0800
    4500 0040 df8e 4000 4006 6dd3 8d8ee405 c096bb2b
    e9d0 0050 fe21323a 00000000 b002 ffff 3bc0 0000
    020405b4 01 030304 01 01 080a 164add20 00000000 0402 0000";

/// suricata-verify bug-814 frame 1: VLAN 1111, IPv6/TCP SYN fe80::20c:29ff:fef3:cf38:58307 -> ...:80.
pub(crate) const VLAN_V6_SYN: &str = "
    525400123502 080027bf4f8a 8100 0457 86dd
    6000 0000 0014 06 40 fe80000000000000020c29fffef3cf38 fe80000000000000020c29fffaf2ab42
    e3c3 0050 e851498b 00000000 5002 2000 b077 0000";

/// zeek icmp_icmp-destunreach-udp frame 1: ICMP port unreachable quoting a DNS reply 192.168.1.1:53 ->
/// 192.168.1.102:59207.
pub(crate) const ICMP_UNREACH: &str = "
    0019e3e75d23000bdb6358a60800450000b0281e000080018e77c0a80166c0a80101030303bb00000000450000a3371100
    004011bf81c0a80101c0a801660035e747008f76d298a4818000010001000400000673656375726503656434036e657400
    00010001c00c000100010000012c0004d05e140ec013000200010000012c000f05646e7330320665786f647573c017c013
    000200010000012c000805646e733031c042c013000200010000012c000805646e733034c042c013000200c9146f2d";

/// zeek ipv6-fragmented-dns frame 6, cut to its first 70 of 1494 bytes: IPv6 with a fragment header
/// (first fragment, id 2) then UDP 53 -> 51851.
pub(crate) const V6_FRAG_FIRST: &str = "
    c42c033b6caa d8306248c5b5 86dd
    6000 0000 05a0 2c 35 2607f740000b00000000000000000f93 200104701f11081fd1385f5506d41fe2
    11 00 0001 00000002
    0035 ca8b 0ca6 688f";

/// tcpdump 802.1ad_QinQ frame 1: S-tag 200, C-tag 2001, ARP who-has 172.21.79.100.
pub(crate) const QINQ_ARP: &str = "
    ffffffffffff 0020d25afb3f 88a8 00c8 8100 07d1 0806
    0001 0800 06 04 0001 0020d25afb3f ac154f61 000000000000 ac154f64
    0000000000000000000000000000";

/// zeek q-in-q frame 1: two 802.1Q tags (13, 10), IPv4/UDP 172.19.51.37:47808 -> 172.19.51.63:47808.
pub(crate) const QINQ_UDP: &str = "
    ffffffffffff00c0e4012ced 8100 000d 8100 000a 0800
    4500 002e 4796 0000 4011 749e ac133325 ac13333f
    bac0 bac0 001a b9da 810b00120120ffff00ff10080a1b591a1b59";

fn parse_hex(link: LinkType, s: &str) -> Result<Packet, ParseError> {
    let b = hex(s);
    parse_frame(link, &b, b.len() as u32)
}

fn tcp(p: &Packet) -> TcpInfo {
    match p.l4 {
        L4::Tcp(t) => t,
        other => panic!("not TCP: {other:?}"),
    }
}

#[test]
fn ethernet_ipv4_tcp_syn_with_options() {
    let p = parse_hex(LinkType::Ethernet, SYN).unwrap();
    assert_eq!(p.dst_mac, mac("00:10:db:88:d2:ef"));
    assert_eq!(p.src_mac, mac("c8:bc:c8:96:d2:a0"));
    assert_eq!((p.vlans, p.vlan_count), ([0, 0], 0));
    assert_eq!(p.ethertype, ethertype::IPV4);
    assert_eq!(p.wire_len, 78);
    assert_eq!(
        p.ip,
        Some(IpInfo {
            src: addr("141.142.228.5"),
            dst: addr("192.150.187.43"),
            proto: ipproto::TCP,
            ttl: 64,
            total_len: 64,
            frag: None,
            source_routed: false,
        })
    );
    assert_eq!(
        tcp(&p),
        TcpInfo {
            sport: 59856,
            dport: 80,
            seq: 0xfe21_323a,
            ack: 0,
            flags: tcpflags::SYN,
            window: 0xffff,
            payload_len: 0,
            options: TcpOptions {
                mss: Some(1460),
                wscale: Some(4),
                sack_permitted: true,
                timestamp: Some((0x164a_dd20, 0)),
            },
        }
    );
    assert_eq!(p.ports(), Some((59856, 80)));
}

#[test]
fn snaplen_68_keeps_headers_and_the_options_captured() {
    let full = hex(SYN);
    let p = parse_frame(LinkType::Ethernet, &full[..68], 78).unwrap();
    let t = tcp(&p);
    assert_eq!((t.sport, t.dport, t.seq, t.flags, t.payload_len), (59856, 80, 0xfe21_323a, tcpflags::SYN, 0));
    // MSS, WS and the NOPs were captured; the timestamp option is cut.
    assert_eq!(
        t.options,
        TcpOptions { mss: Some(1460), wscale: Some(4), sack_permitted: false, timestamp: None }
    );
    assert_eq!(p.wire_len, 78);
}

#[test]
fn vlan_tagged_ipv6_tcp() {
    let p = parse_hex(LinkType::Ethernet, VLAN_V6_SYN).unwrap();
    assert_eq!(p.dst_mac, mac("52:54:00:12:35:02"));
    assert_eq!(p.src_mac, mac("08:00:27:bf:4f:8a"));
    assert_eq!((p.vlans, p.vlan_count), ([1111, 0], 1));
    assert_eq!(p.ethertype, ethertype::IPV6);
    assert_eq!(
        p.ip,
        Some(IpInfo {
            src: addr("fe80::20c:29ff:fef3:cf38"),
            dst: addr("fe80::20c:29ff:faf2:ab42"),
            proto: ipproto::TCP,
            ttl: 64,
            total_len: 60,
            frag: None,
            source_routed: false,
        })
    );
    assert_eq!(
        tcp(&p),
        TcpInfo {
            sport: 58307,
            dport: 80,
            seq: 0xe851_498b,
            ack: 0,
            flags: tcpflags::SYN,
            window: 8192,
            payload_len: 0,
            options: TcpOptions::default(),
        }
    );
}

#[test]
fn icmp_port_unreachable_quotes_udp() {
    let p = parse_hex(LinkType::Ethernet, ICMP_UNREACH).unwrap();
    assert_eq!(p.dst_mac, mac("00:19:e3:e7:5d:23"));
    assert_eq!(p.src_mac, mac("00:0b:db:63:58:a6"));
    assert_eq!(
        p.ip,
        Some(IpInfo {
            src: addr("192.168.1.102"),
            dst: addr("192.168.1.1"),
            proto: ipproto::ICMP,
            ttl: 128,
            total_len: 176,
            frag: None,
            source_routed: false,
        })
    );
    assert_eq!(
        p.l4,
        L4::Icmp(IcmpInfo {
            icmp_type: 3,
            code: 3,
            echo_id: None,
            quoted: Some(QuotedHeader {
                src: addr("192.168.1.1"),
                dst: addr("192.168.1.102"),
                proto: ipproto::UDP,
                sport: 53,
                dport: 59207,
                seq: None,
            }),
        })
    );
    assert_eq!(p.ports(), None);
}

#[test]
fn icmp_quote_cut_short_is_tolerated() {
    let b = hex(ICMP_UNREACH);
    // Outer headers (14 + 20 + 8) and the quoted IPv4 header, but only 2 bytes of the quoted UDP header.
    let cut = &b[..14 + 20 + 8 + 20 + 2];
    let p = parse_frame(LinkType::Ethernet, cut, b.len() as u32).unwrap();
    assert_eq!(p.l4, L4::Icmp(IcmpInfo { icmp_type: 3, code: 3, echo_id: None, quoted: None }));
}

#[test]
fn ipv6_fragment_header_first_fragment() {
    let b = hex(V6_FRAG_FIRST);
    let p = parse_frame(LinkType::Ethernet, &b, 1494).unwrap();
    assert_eq!(p.dst_mac, mac("c4:2c:03:3b:6c:aa"));
    assert_eq!(p.src_mac, mac("d8:30:62:48:c5:b5"));
    assert_eq!(p.ethertype, ethertype::IPV6);
    assert_eq!(
        p.ip,
        Some(IpInfo {
            src: addr("2607:f740:b::f93"),
            dst: addr("2001:470:1f11:81f:d138:5f55:6d4:1fe2"),
            proto: ipproto::UDP,
            ttl: 53,
            total_len: 1480,
            frag: Some(FragInfo { offset: 0, more: true, id: 2, len: 1432 }),
            source_routed: false,
        })
    );
    assert_eq!(p.l4, L4::Udp { sport: 53, dport: 51851 });
}

/// An atomic fragment (offset 0, no more fragments) is a whole datagram (RFC 8200 §4.5, RFC 6946): no
/// fragment info, so no filter matches it with other fragments of its identification.
#[test]
fn ipv6_atomic_fragment_is_a_whole_datagram() {
    let atomic = |frag: &str| {
        let mut b =
            hex("6000 0000 0010 2c 40 20010db8000000000000000000000001 20010db8000000000000000000000002");
        b.extend(hex(frag)); // fragment header, next UDP
        b.extend(hex("0035 0400 0008 0000"));
        parse_frame(LinkType::Ipv6, &b, b.len() as u32).unwrap()
    };
    let p = atomic("11 00 0000 0000abcd");
    let ip = p.ip.unwrap();
    assert_eq!((ip.proto, ip.frag, ip.total_len), (ipproto::UDP, None, 56));
    assert_eq!(p.l4, L4::Udp { sport: 53, dport: 1024 });
    // With M set it is a first fragment.
    let ip = atomic("11 00 0001 0000abcd").ip.unwrap();
    assert_eq!(ip.frag, Some(FragInfo { offset: 0, more: true, id: 0xabcd, len: 8 }));
}

#[test]
fn ipv6_non_first_fragment_has_no_transport() {
    let mut b = hex(V6_FRAG_FIRST);
    // Offset 1448 (0x5a8), more fragments clear.
    b[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&0x05a8u16.to_be_bytes());
    let p = parse_frame(LinkType::Ethernet, &b, 1494).unwrap();
    let ip = p.ip.unwrap();
    assert_eq!(ip.frag, Some(FragInfo { offset: 1448, more: false, id: 2, len: 1432 }));
    assert_eq!(ip.proto, ipproto::UDP);
    assert_eq!(p.l4, L4::None);
}

#[test]
fn ipv6_extension_chain_hbh_routing_dstopts_ah() {
    // Raw IPv6: hop-by-hop (8) -> routing (16) -> destination options (8) -> AH (16) -> TCP (20).
    let mut b = hex("6000 0000 0044 00 40 20010db8000000000000000000000001 20010db8000000000000000000000002");
    b.extend(hex("2b 00 0104 00000000")); // HBH, next routing: PadN
    b.extend(hex("3c 01 0000 00000000 0000000000000000")); // routing, len 1 (16 bytes), next dstopts
    b.extend(hex("33 00 0104 00000000")); // dstopts, next AH
    b.extend(hex("06 02 0000 00000001 00000001 00000000")); // AH, len 2 ((2+2)*4 = 16), next TCP
    b.extend(hex("04d2 0016 00000001 00000002 5010 1000 0000 0000")); // TCP ACK 1234 -> 22
    let p = parse_frame(LinkType::Ipv6, &b, b.len() as u32).unwrap();
    let ip = p.ip.unwrap();
    assert_eq!((ip.proto, ip.total_len, ip.frag, ip.source_routed), (ipproto::TCP, 108, None, true));
    let t = tcp(&p);
    assert_eq!((t.sport, t.dport, t.seq, t.ack, t.flags, t.payload_len), (1234, 22, 1, 2, tcpflags::ACK, 0));
}

/// Source routes (pf's `ip-option` drops): an IPv6 type 0 routing header, IPv4 LSRR / SSRR options.
#[test]
fn source_routes_are_flagged() {
    let v6 = |routing: &str| {
        let mut b =
            hex("6000 0000 0020 2b 40 20010db8000000000000000000000001 20010db8000000000000000000000002");
        b.extend(hex(routing)); // 24 bytes (one address), next UDP
        b.extend(hex("0035 0035 0008 0000"));
        parse_frame(LinkType::Ipv6, &b, b.len() as u32).unwrap().ip.unwrap()
    };
    let rh0 = v6("11 02 00 01 00000000 20010db8000000000000000000000009");
    assert!(rh0.source_routed);
    assert_eq!((rh0.proto, rh0.total_len), (ipproto::UDP, 72));
    // Type 2 (Mobile IPv6) and type 4 (segment routing) are not deprecated.
    assert!(!v6("11 02 02 01 00000000 20010db8000000000000000000000009").source_routed);
    assert!(!v6("11 02 04 00 00000000 20010db8000000000000000000000009").source_routed);
    // The chain of the test above holds a type 0 routing header too.
    let v4 = |options: &str| {
        let mut b = hex("4600 0020 0000 4000 4011 0000 0a000001 0a000002");
        b.extend(hex(options));
        b.extend(hex("0035 0035 0008 0000"));
        let ip = parse_frame(LinkType::Ipv4, &b, b.len() as u32).unwrap().ip.unwrap();
        assert_eq!((ip.proto, ip.total_len), (ipproto::UDP, 32));
        ip.source_routed
    };
    assert!(v4("01 83 03 04"), "NOP, LSRR");
    assert!(v4("89 03 04 00"), "SSRR");
    assert!(v4("07 03 04 83"), "record route, then LSRR");
    assert!(!v4("01 01 01 00"), "NOPs, end of list");
    assert!(!v4("00 83 03 04"), "after the end of the list");
    assert!(!v4("07 03 04 00"), "record route");
    assert!(!v4("44 09 83 00"), "an option longer than the header ends the walk");
    assert!(!v4("44 01 83 00"), "an option length below 2 ends the walk");
}

#[test]
fn arp_behind_8021ad_and_8021q() {
    let p = parse_hex(LinkType::Ethernet, QINQ_ARP).unwrap();
    assert_eq!(p.dst_mac, MacAddr([0xff; 6]));
    assert_eq!(p.src_mac, mac("00:20:d2:5a:fb:3f"));
    assert_eq!((p.vlans, p.vlan_count), ([200, 2001], 2));
    assert_eq!(p.ethertype, ethertype::ARP);
    assert_eq!(p.ip, None);
    assert_eq!(p.l4, L4::None);
}

#[test]
fn double_8021q_udp() {
    let p = parse_hex(LinkType::Ethernet, QINQ_UDP).unwrap();
    assert_eq!((p.vlans, p.vlan_count), ([13, 10], 2));
    let ip = p.ip.unwrap();
    assert_eq!((ip.src, ip.dst, ip.ttl, ip.total_len), (addr("172.19.51.37"), addr("172.19.51.63"), 64, 46));
    assert_eq!(p.l4, L4::Udp { sport: 47808, dport: 47808 });
}

#[test]
fn third_vlan_tag_is_skipped_but_counted() {
    let mut b = hex(QINQ_UDP);
    // Insert a third tag (VID 7) after the second.
    b.splice(20..20, hex("8100 0007"));
    let p = parse_frame(LinkType::Ethernet, &b, b.len() as u32).unwrap();
    assert_eq!((p.vlans, p.vlan_count), ([13, 10], 3));
    assert_eq!(p.l4, L4::Udp { sport: 47808, dport: 47808 });
}

#[test]
fn ipv4_fragments() {
    // zeek ipv4_fragmented-syn: the first fragment carries 24 bytes of a 40-byte SYN header.
    let first = hex("1e0b8b14f6f998eecbbd07fe0800 4500002c 00012000 40068eba c0a80164 0a000005
         30390050 000003e8 00000000 a0022000 c5730000 020405b4");
    let p = parse_frame(LinkType::Ethernet, &first, first.len() as u32).unwrap();
    let ip = p.ip.unwrap();
    assert_eq!(ip.frag, Some(FragInfo { offset: 0, more: true, id: 1, len: 24 }));
    let t = tcp(&p);
    assert_eq!((t.sport, t.dport, t.seq, t.flags), (12345, 80, 1000, tcpflags::SYN));
    assert_eq!(t.options.mss, Some(1460));
    let second = hex("1e0b8b14f6f998eecbbd07fe0800 45000024 00010003 4006aebf c0a80164 0a000005
         0402080a 00bc614e 00000000 01030307");
    let p = parse_frame(LinkType::Ethernet, &second, second.len() as u32).unwrap();
    assert_eq!(p.ip.unwrap().frag, Some(FragInfo { offset: 24, more: false, id: 1, len: 16 }));
    assert_eq!(p.l4, L4::None);
}

#[test]
fn tiny_first_fragment_gives_no_transport() {
    // First fragment carrying only 8 bytes of TCP header.
    let b = hex("4500001c 00012000 40060000 c0a80164 0a000005 30390050 000003e8");
    let p = parse_frame(LinkType::Raw, &b, b.len() as u32).unwrap();
    assert_eq!(p.ip.unwrap().frag, Some(FragInfo { offset: 0, more: true, id: 1, len: 8 }));
    assert_eq!(p.l4, L4::None);
}

#[test]
fn linux_sll_and_sll2() {
    // tcpdump tcp-handshake-nano frame 1 (SLL, outgoing, no address) with the TCP options cut.
    let sll = hex("0004 0200 0000 0000000000000000 0800
         4500003c 29a94000 4006db5f 839bd745 8974515e b6400050 2f842acb 00000000 a0026a40 50c40000
         020405500402080a436a036200000000");
    let p = parse_frame(LinkType::LinuxSll, &sll, 76).unwrap();
    assert_eq!((p.src_mac, p.dst_mac), (MacAddr::default(), MacAddr::default()));
    let ip = p.ip.unwrap();
    assert_eq!((ip.src, ip.dst), (addr("131.155.215.69"), addr("137.116.81.94")));
    let t = tcp(&p);
    assert_eq!((t.sport, t.dport, t.flags, t.options.mss), (46656, 80, tcpflags::SYN, Some(1360)));
    assert!(t.options.sack_permitted);

    // SLL2 with a MAC address around the same IPv4 header.
    let mut sll2 = hex("0800 0000 00000002 0001 00 06 c8bcc896d2a0 0000");
    sll2.extend(&sll[16..]);
    let p = parse_frame(LinkType::LinuxSll2, &sll2, 80).unwrap();
    assert_eq!(p.src_mac, mac("c8:bc:c8:96:d2:a0"));
    assert_eq!(p.ethertype, ethertype::IPV4);
    assert_eq!(tcp(&p).sport, 46656);
}

#[test]
fn raw_ip_versions() {
    let b = hex(SYN);
    let p = parse_frame(LinkType::Raw, &b[14..], 64).unwrap();
    assert_eq!(tcp(&p).dport, 80);
    assert_eq!(p.ethertype, ethertype::IPV4);
    assert_eq!(p.src_mac, MacAddr::default());
    let v6 = hex(VLAN_V6_SYN);
    let p = parse_frame(LinkType::Raw, &v6[18..], 60).unwrap();
    assert_eq!(p.ethertype, ethertype::IPV6);
    assert_eq!(
        parse_frame(LinkType::Ipv4, &v6[18..], 60).unwrap_err(),
        ParseError::BadVersion { layer: Layer::Ipv4, found: 6 }
    );
    let err = parse_frame(LinkType::Raw, &[0x55; 40], 40).unwrap_err();
    assert_eq!((err, err.reason()), (ParseError::BadVersion { layer: Layer::Ip, found: 5 }, "bad-version"));
}

#[test]
fn icmp_echo_and_icmpv6_echo() {
    let echo = hex("4500001c 00000000 40010000 0a000001 0a000002 0800 f7fe 1234 0001");
    let p = parse_frame(LinkType::Raw, &echo, 28).unwrap();
    assert_eq!(p.l4, L4::Icmp(IcmpInfo { icmp_type: 8, code: 0, echo_id: Some(0x1234), quoted: None }));
    let mut echo6 =
        hex("6000 0000 0008 3a 40 20010db8000000000000000000000001 20010db8000000000000000000000002");
    echo6.extend(hex("8100 0000 beef 0001"));
    let p = parse_frame(LinkType::Raw, &echo6, 48).unwrap();
    assert_eq!(p.l4, L4::Icmp(IcmpInfo { icmp_type: 129, code: 0, echo_id: Some(0xbeef), quoted: None }));
}

#[test]
fn icmpv6_packet_too_big_quotes_udp() {
    // zeek icmp_icmp6-toobig.
    let b = hex(
        "ffffffffffff00000000000086dd60000000003c3a40fe80000000000000000000000000deadfe800000000000000000
         00000000beef0200ecba0000050060000000000c1140fe80000000000000000000000000beeffe800000000000000000
         00000000dead753032c8000c0c8e58585858",
    );
    let p = parse_frame(LinkType::Ethernet, &b, b.len() as u32).unwrap();
    assert_eq!(
        p.l4,
        L4::Icmp(IcmpInfo {
            icmp_type: 2,
            code: 0,
            echo_id: None,
            quoted: Some(QuotedHeader {
                src: addr("fe80::beef"),
                dst: addr("fe80::dead"),
                proto: ipproto::UDP,
                sport: 30000,
                dport: 13000,
                seq: None,
            }),
        })
    );
}

#[test]
fn sctp_gre_and_other() {
    let sctp = hex("45000020 00004000 40840000 c0a8aa08 c0a8aa38 0007 0007 00000000 3761a746");
    assert_eq!(parse_frame(LinkType::Raw, &sctp, 32).unwrap().l4, L4::Sctp { sport: 7, dport: 7 });
    let gre = hex("45000018 00004000 402f0000 0a000001 0a000002 00000800");
    let p = parse_frame(LinkType::Raw, &gre, 24).unwrap();
    assert_eq!((p.ip.unwrap().proto, p.l4), (ipproto::GRE, L4::Other));
}

#[test]
fn ethernet_padding_is_not_payload() {
    // The SYN-ACK-sized ACK of zeek http-vlan-0 without the tag, padded to 60 bytes by the sender.
    let mut b = hex("0010db88d2efc8bcc896d2a00800 45000028 cc9f4000 400680ce 8d8ee405 c096bb2b
         e9d00050 fe21323b a5afce3f 5010202b 00000000");
    b.resize(60, 0);
    let t = tcp(&parse_frame(LinkType::Ethernet, &b, 60).unwrap());
    assert_eq!((t.flags, t.payload_len), (tcpflags::ACK, 0));
}

// One test per error reason: a valid frame with one field corrupted.

fn syn_with(f: impl FnOnce(&mut Vec<u8>)) -> Result<Packet, ParseError> {
    let mut b = hex(SYN);
    f(&mut b);
    parse_frame(LinkType::Ethernet, &b, b.len() as u32)
}

#[test]
fn reason_short_tcp_header_cut() {
    // A capture cut inside the TCP header (wire length 78).
    let err = parse_frame(LinkType::Ethernet, &hex(SYN)[..14 + 20 + 10], 78).unwrap_err();
    assert_eq!(err, ParseError::Short { layer: Layer::Tcp, need: 20, have: 10 });
    assert_eq!(err.reason(), "short");
}

#[test]
fn reason_short_ethernet() {
    let err = parse_frame(LinkType::Ethernet, &hex(SYN)[..13], 78).unwrap_err();
    assert_eq!(
        (err, err.reason()),
        (ParseError::Short { layer: Layer::Ethernet, need: 14, have: 13 }, "short")
    );
}

#[test]
fn reason_short_ip_length_past_frame() {
    let err = syn_with(|b| b[16..18].copy_from_slice(&300u16.to_be_bytes())).unwrap_err();
    assert_eq!(err, ParseError::DatagramPastFrame { layer: Layer::Ipv4, len: 300, room: 64 });
    assert_eq!(err.reason(), "short");
}

#[test]
fn reason_bad_header_length_ihl() {
    let err = syn_with(|b| b[14] = 0x44).unwrap_err();
    assert_eq!(err, ParseError::HeaderTooSmall { layer: Layer::Ipv4, len: 16, min: 20 });
    assert_eq!(err.reason(), "bad-header-length");
}

#[test]
fn reason_bad_header_length_tcp_data_offset() {
    let err = syn_with(|b| b[46] = 0x40).unwrap_err();
    assert_eq!(err, ParseError::HeaderTooSmall { layer: Layer::Tcp, len: 16, min: 20 });
    assert_eq!(err.reason(), "bad-header-length");
}

#[test]
fn reason_bad_header_length_tcp_past_datagram() {
    let err = syn_with(|b| b[46] = 0xf0).unwrap_err();
    assert_eq!(err, ParseError::HeaderPastEnd { layer: Layer::Tcp, len: 60, room: 44 });
    assert_eq!(err.reason(), "bad-header-length");
}

#[test]
fn reason_bad_header_length_ipv6_ext_past_datagram() {
    let mut b = hex(V6_FRAG_FIRST);
    b[18..20].copy_from_slice(&4u16.to_be_bytes()); // payload length 4 < fragment header
    let err = parse_frame(LinkType::Ethernet, &b, 1494).unwrap_err();
    assert_eq!(err, ParseError::HeaderPastEnd { layer: Layer::Ipv6Frag, len: 8, room: 4 });
    assert_eq!(err.reason(), "bad-header-length");
}

#[test]
fn reason_bad_offset_ipv4_fragment_overflow() {
    let err = syn_with(|b| b[20..22].copy_from_slice(&0x3fffu16.to_be_bytes())).unwrap_err();
    assert_eq!(err, ParseError::FragmentOverflow { layer: Layer::Ipv4, offset: 65528, len: 44 });
    assert_eq!(err.reason(), "bad-offset");
}

#[test]
fn reason_bad_offset_ipv6_fragment_overflow() {
    let mut b = hex(V6_FRAG_FIRST);
    b[56..58].copy_from_slice(&0xfff8u16.to_be_bytes());
    let err = parse_frame(LinkType::Ethernet, &b, 1494).unwrap_err();
    assert_eq!(err, ParseError::FragmentOverflow { layer: Layer::Ipv6Frag, offset: 65528, len: 1432 });
    assert_eq!(err.reason(), "bad-offset");
}

#[test]
fn reason_bad_offset_tcp_option_past_header() {
    // MSS option length 0x30 runs past the 24 option bytes.
    let err = syn_with(|b| b[55] = 0x30).unwrap_err();
    assert_eq!(err, ParseError::BadTcpOption { kind: 2, len: 0x30, at: 0, room: 24 });
    assert_eq!(err.reason(), "bad-offset");
}

#[test]
fn reason_bad_offset_tcp_option_length_below_two() {
    let err = syn_with(|b| b[55] = 1).unwrap_err();
    assert_eq!(err, ParseError::BadTcpOption { kind: 2, len: 1, at: 0, room: 24 });
    assert_eq!(err.reason(), "bad-offset");
}

#[test]
fn reason_bad_version() {
    let err = syn_with(|b| b[14] = 0x65).unwrap_err();
    assert_eq!(err, ParseError::BadVersion { layer: Layer::Ipv4, found: 6 });
    assert_eq!(err.reason(), "bad-version");
    let mut v6 = hex(VLAN_V6_SYN);
    v6[18] = 0x40;
    let err = parse_frame(LinkType::Ethernet, &v6, 78).unwrap_err();
    assert_eq!((err, err.reason()), (ParseError::BadVersion { layer: Layer::Ipv6, found: 4 }, "bad-version"));
}

#[test]
fn reason_bad_length_ip_total_below_header() {
    let err = syn_with(|b| b[16..18].copy_from_slice(&16u16.to_be_bytes())).unwrap_err();
    assert_eq!(err, ParseError::BadLength { layer: Layer::Ipv4, len: 16, header_len: 20 });
    assert_eq!(err.reason(), "bad-length");
}

#[test]
fn reason_bad_length_udp() {
    let mut b = hex(QINQ_UDP);
    b[46..48].copy_from_slice(&200u16.to_be_bytes());
    let err = parse_frame(LinkType::Ethernet, &b, b.len() as u32).unwrap_err();
    assert_eq!(err, ParseError::LengthPastEnd { layer: Layer::Udp, len: 200, room: 26 });
    assert_eq!(err.reason(), "bad-length");
    b[46..48].copy_from_slice(&4u16.to_be_bytes());
    let err = parse_frame(LinkType::Ethernet, &b, b.len() as u32).unwrap_err();
    assert_eq!(
        (err, err.reason()),
        (ParseError::BadLength { layer: Layer::Udp, len: 4, header_len: 8 }, "bad-length")
    );
}

#[test]
fn reason_unsupported_link() {
    let err = parse_frame(LinkType::Other(105), &hex(SYN), 78).unwrap_err();
    assert_eq!(err, ParseError::UnsupportedLink { link: LinkType::Other(105) });
    assert_eq!(err.reason(), "unsupported-link");
    assert_eq!(err.to_string(), "unsupported link type 105 (IEEE 802.11)");
}

#[test]
fn error_messages_read_as_one_line() {
    let err = parse_frame(LinkType::Ethernet, &hex(SYN)[..30], 78).unwrap_err();
    assert_eq!(err.to_string(), "ipv4 header needs 20 bytes, only 16 captured");
}

// `parse_into`'s fast path for plain Ethernet/IPv4/TCP against the general path it stands in for.

/// A 64-byte frame as `shared/anchors/gen_pcap.py` writes them: Ethernet II, IPv4 without options
/// (10.1.2.3 -> 10.1.2.4, DF), TCP 12345 -> 80 without options (ACK), 10 bytes of payload.
const PLAIN_TCP: &str = "
    020000000002 020000000001 0800
    4500 0032 0001 4000 4006 0000 0a010203 0a010204
    3039 0050 00000001 00000002 5010 ffff 0000 0000
    00000000000000000000";

/// [`PLAIN_TCP`] with a timestamp option (`NOP NOP TS 100 200`), as established Linux segments carry.
const PLAIN_TCP_TS: &str = "
    020000000002 020000000001 0800
    4500 003e 0001 4000 4006 0000 0a010203 0a010204
    3039 0050 00000001 00000002 8010 ffff 0000 0000
    0101080a 00000064 000000c8
    00000000000000000000";

/// The fast path's summary of `b`, after checking that it takes the frame and agrees with the general
/// path.
fn fast_path_as_general(b: &[u8], wire_len: u32) -> Packet {
    let mut fast = Packet::default();
    assert!(parse_plain_tcp(b, wire_len, &mut fast));
    let mut general = Packet::default();
    parse_any(LinkType::Ethernet, b, wire_len, &mut general).unwrap();
    assert_eq!(fast, general);
    fast
}

#[test]
fn plain_tcp_with_a_timestamp_takes_the_fast_path() {
    let b = hex(PLAIN_TCP_TS);
    let mut fast = fast_path_as_general(&b, 76);
    let t = tcp(&fast);
    assert_eq!((t.payload_len, t.options.timestamp, t.options.wscale), (10, Some((100, 200)), None));
    // Any other option layout, or a timestamp cut by the snaplen, leaves the fast path.
    let mut other = b.clone();
    other[54..58].copy_from_slice(&[1, 3, 3, 7]);
    assert!(!parse_plain_tcp(&other, 76, &mut fast));
    assert!(!parse_plain_tcp(&b[..60], 76, &mut fast));
}

#[test]
fn plain_tcp_takes_the_fast_path_and_reads_every_field() {
    let b = hex(PLAIN_TCP);
    let mut fast = fast_path_as_general(&b, 64);
    let ip = fast.ip.unwrap();
    assert_eq!(
        (ip.src, ip.dst, ip.proto, ip.ttl, ip.total_len, ip.frag),
        (addr("10.1.2.3"), addr("10.1.2.4"), 6, 64, 50, None)
    );
    let t = tcp(&fast);
    assert_eq!((t.sport, t.dport, t.seq, t.ack, t.flags, t.window), (12345, 80, 1, 2, tcpflags::ACK, 0xffff));
    assert_eq!((t.payload_len, t.options), (10, TcpOptions::default()));
    assert_eq!(
        (fast.dst_mac, fast.src_mac, fast.wire_len),
        (mac("02:00:00:00:00:02"), mac("02:00:00:00:00:01"), 64)
    );
    // Options, VLAN tags, IPv4 options and fragments all leave the fast path.
    for s in [SYN, VLAN_V6_SYN, QINQ_UDP, ICMP_UNREACH] {
        assert!(!parse_plain_tcp(&hex(s), 1500, &mut fast));
    }
}

#[test]
fn parse_into_overwrites_a_reused_slot() {
    let frames =
        [PLAIN_TCP, VLAN_V6_SYN, SYN, QINQ_ARP, PLAIN_TCP, V6_FRAG_FIRST, ICMP_UNREACH, QINQ_UDP, PLAIN_TCP];
    let mut slot = Packet::default();
    for s in frames {
        let b = hex(s);
        // V6_FRAG_FIRST is the first 70 bytes of a 1494-byte frame.
        let wire_len = if s == V6_FRAG_FIRST { 1494 } else { b.len() as u32 };
        parse_into(LinkType::Ethernet, &b, wire_len, &mut slot).unwrap();
        assert_eq!(slot, parse_frame(LinkType::Ethernet, &b, wire_len).unwrap(), "{s}");
    }
}

proptest::proptest! {
    /// Whatever the fast path accepts, the general path accepts with the same summary; whatever it
    /// declines, `parse_into` answers as the general path does. The mutations aim at the fields the fast
    /// path decides on (ethertype, version/IHL, total length, flags/offset, protocol, data offset), plus
    /// a random byte, the captured length and the wire length.
    #[test]
    fn plain_tcp_agrees_with_the_general_path(
        ts in proptest::prelude::any::<bool>(),
        edits in proptest::collection::vec(
            (proptest::sample::select(vec![12usize, 13, 14, 16, 17, 20, 21, 23, 46, 54, 55, 56, 57, 65]), proptest::prelude::any::<u8>()),
            0..3,
        ),
        flip in proptest::option::of((0usize..76, proptest::prelude::any::<u8>())),
        len in 0usize..=76,
        wire_len in 0u32..=128,
    ) {
        let mut b = hex(if ts { PLAIN_TCP_TS } else { PLAIN_TCP });
        for (at, v) in edits.into_iter().chain(flip) {
            if let Some(byte) = b.get_mut(at) {
                *byte = v;
            }
        }
        b.truncate(len);
        let mut fast = Packet::default();
        let mut general = Packet::default();
        let took_fast = parse_plain_tcp(&b, wire_len, &mut fast);
        let want = parse_any(LinkType::Ethernet, &b, wire_len, &mut general);
        if took_fast {
            proptest::prop_assert_eq!(want, Ok(()));
            proptest::prop_assert_eq!(fast, general);
        }
        let mut slot = Packet::default();
        let got = parse_into(LinkType::Ethernet, &b, wire_len, &mut slot);
        proptest::prop_assert_eq!(got, want);
        if got.is_ok() {
            proptest::prop_assert_eq!(slot, general);
        }
    }
}
