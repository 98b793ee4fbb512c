//! Every shared test capture opens, iterates and parses; spot checks against what the captures are
//! known to hold (see shared/testdata/pcaps/MANIFEST.md).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use pktio::{ethertype, ipproto, parse_frame, Capture, CaptureFormat, LinkType, Packet, ParseError, L4};

use common::{captures, testdata};

/// Parses every frame of `rel` (relative to the test data dir).
fn parse_all(rel: &str) -> Vec<Result<Packet, ParseError>> {
    let cap = Capture::open(&testdata().join(rel)).unwrap();
    cap.frames().map(|f| f.unwrap()).map(|f| parse_frame(f.link, f.data, f.wire_len)).collect()
}

fn packets(rel: &str) -> Vec<Packet> {
    parse_all(rel)
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("{rel} frame {}: {e}", i + 1)))
        .collect()
}

/// Captures that are malformed on purpose, with the parse error reasons their frames give.
const MALFORMED: &[(&str, &str)] = &[("pcaps/tcpdump/ip6_frag_asan.pcap", "short")];

#[test]
fn every_shared_capture_opens_iterates_and_parses() {
    let root = testdata();
    let files: Vec<PathBuf> =
        ["pcaps", "conntrack/ovs"].iter().flat_map(|d| captures(&root.join(d))).collect();
    assert!(files.len() >= 40, "found only {} captures under {}", files.len(), root.display());
    let mut frames_total = 0;
    for path in &files {
        let rel = path.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
        let cap = Capture::open(path).unwrap_or_else(|e| panic!("{e}"));
        let malformed = MALFORMED.iter().find(|(f, _)| *f == rel).map(|(_, reason)| *reason);
        let mut n = 0;
        for frame in cap.frames() {
            let frame = frame.unwrap_or_else(|e| panic!("{e}"));
            n += 1;
            let parsed = parse_frame(frame.link, frame.data, frame.wire_len);
            match (malformed, parsed) {
                (None, Ok(_)) => {}
                (None, Err(e)) => panic!("{rel} frame {n}: {e} ({})", e.reason()),
                (Some(reason), Err(e)) => assert_eq!(e.reason(), reason, "{rel} frame {n}: {e}"),
                (Some(_), Ok(p)) => panic!("{rel} frame {n} is malformed on purpose but parsed: {p:?}"),
            }
        }
        assert!(n > 0, "{rel} has no frames");
        frames_total += n;
    }
    assert!(frames_total > 400, "{frames_total} frames");
}

#[test]
fn zeek_five_pings_are_ten_echo_frames_with_one_id() {
    let pkts = packets("pcaps/zeek/icmp_5-pings.pcap");
    assert_eq!(pkts.len(), 10);
    let mut ids = BTreeMap::new();
    for (i, p) in pkts.iter().enumerate() {
        let L4::Icmp(icmp) = p.l4 else { panic!("frame {} is not ICMP: {:?}", i + 1, p.l4) };
        let expect_type = if i % 2 == 0 { 8 } else { 0 };
        assert_eq!((icmp.icmp_type, icmp.code), (expect_type, 0), "frame {}", i + 1);
        *ids.entry(icmp.echo_id.expect("echo id")).or_insert(0) += 1;
    }
    assert_eq!(ids.len(), 1, "echo ids {ids:?}");
}

#[test]
fn zeek_q_in_q_frames_carry_two_tags() {
    let pkts = packets("pcaps/zeek/q-in-q.pcap");
    assert_eq!(pkts.len(), 5);
    for p in &pkts {
        assert_eq!((p.vlan_count, p.vlans), (2, [13, 10]));
    }
    assert_eq!(pkts[4].ethertype, ethertype::ARP);
    assert!(pkts[..4].iter().all(|p| p.ip.map(|ip| ip.proto) == Some(ipproto::UDP)));
}

#[test]
fn tcpdump_sll_nanosecond_handshake() {
    let cap = Capture::open(&testdata().join("pcaps/tcpdump/tcp-handshake-nano.pcap")).unwrap();
    assert_eq!(cap.format(), CaptureFormat::Pcap { nanos: true, big_endian: false });
    let frames: Vec<_> = cap.frames().map(|f| f.unwrap()).collect();
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.link == LinkType::LinuxSll));
    // tcpdump's expected output: 17:16:09.924505488 (UTC) for the first frame.
    assert_eq!(frames[0].ts_nanos % 1_000_000_000, 924_505_488);
    assert_eq!((frames[0].ts_nanos / 1_000_000_000) % 86400, 17 * 3600 + 16 * 60 + 9);
    let flags: Vec<u8> = frames
        .iter()
        .map(|f| match parse_frame(f.link, f.data, f.wire_len).unwrap().l4 {
            L4::Tcp(t) => t.flags,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(flags, [0x02, 0x12, 0x10]);
}

#[test]
fn zeek_ipv4_fragments() {
    let pkts = packets("pcaps/zeek/ipv4_fragmented-1.pcap");
    let frags: Vec<_> = pkts.iter().map(|p| p.ip.unwrap().frag.unwrap()).collect();
    assert_eq!(
        frags.iter().map(|f| (f.offset, f.more)).collect::<Vec<_>>(),
        [(0, true), (48, false), (0, true)]
    );
    assert!(frags.iter().all(|f| f.id == frags[0].id));
    assert!(matches!(pkts[0].l4, L4::Udp { .. }));
    assert_eq!(pkts[1].l4, L4::None);
}

#[test]
fn zeek_ipv6_fragmented_dns_has_fragment_headers() {
    let pkts = packets("pcaps/zeek/ipv6-fragmented-dns.pcap");
    assert_eq!(pkts.len(), 8);
    let fragmented: Vec<_> = pkts.iter().filter_map(|p| p.ip.unwrap().frag).collect();
    assert!(!fragmented.is_empty());
    assert!(pkts.iter().all(|p| p.ip.unwrap().proto == ipproto::UDP));
}

#[test]
fn ip6_frag_asan_is_an_error_not_a_panic() {
    let results = parse_all("pcaps/tcpdump/ip6_frag_asan.pcap");
    assert_eq!(results.len(), 1);
    let err = results[0].unwrap_err();
    assert_eq!(err.reason(), "short", "{err}");
}

#[test]
fn icmp_related_quotes_match_their_flows() {
    let pkts = packets("pcaps/zeek/icmp_icmp-destunreach-udp.pcap");
    let L4::Icmp(icmp) = pkts[0].l4 else { panic!() };
    let q = icmp.quoted.unwrap();
    let ip = pkts[0].ip.unwrap();
    // The error goes back to the quoted datagram's sender.
    assert_eq!((q.src, q.dst), (ip.dst, ip.src));
}

#[test]
fn sctp_flows_have_ports() {
    let pkts = packets("pcaps/zeek/communityid_sctp.pcap");
    assert!(pkts.iter().all(|p| matches!(p.l4, L4::Sctp { .. })));
}
