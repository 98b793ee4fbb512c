//! Property tests: no input makes `parse_frame` or the capture reader panic.
//!
//! Random bytes mostly fail at the first header, so the second half mutates real frames from the shared
//! test captures (flipped bytes, cut lengths, lying wire lengths), which reaches the deeper layers.

use std::path::Path;
use std::sync::OnceLock;

use pktio::{parse_frame, Capture, LinkType};
use proptest::prelude::*;

const LINKS: [LinkType; 7] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Other(105),
];

/// Captures whose frames seed the mutations: every protocol and link type the parser knows.
const SEEDS: &[&str] = &[
    "pcaps/zeek/tcp_syn-synack.pcap",
    "pcaps/zeek/q-in-q.pcap",
    "pcaps/zeek/icmp_icmp-destunreach-udp.pcap",
    "pcaps/zeek/icmp_icmp6-toobig.pcap",
    "pcaps/zeek/ipv6-fragmented-dns.pcap",
    "pcaps/zeek/ipv4_fragmented-syn.pcap",
    "pcaps/zeek/communityid_sctp.pcap",
    "pcaps/zeek/communityid_icmp6.pcap",
    "pcaps/tcpdump/802.1ad_QinQ.pcap",
    "pcaps/tcpdump/tcp-handshake-nano.pcap",
    "pcaps/suricata-verify/bug-814/input.pcap",
];

fn testdata(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata").join(rel)
}

/// (link type, frame bytes) of every frame in the seed captures.
fn seed_frames() -> &'static [(LinkType, Vec<u8>)] {
    static FRAMES: OnceLock<Vec<(LinkType, Vec<u8>)>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        let mut out = Vec::new();
        for rel in SEEDS {
            let cap = Capture::open(&testdata(rel)).unwrap();
            for f in cap.frames() {
                let f = f.unwrap();
                out.push((f.link, f.data.to_vec()));
            }
        }
        out
    })
}

/// The bytes of the seed capture files themselves, for mutating capture headers and records.
fn seed_files() -> &'static [Vec<u8>] {
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| SEEDS.iter().take(4).map(|rel| std::fs::read(testdata(rel)).unwrap()).collect())
}

fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, b) in flips {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[at % n] = b;
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

/// Iterates a capture to the end; the iterator must stop after its first error.
fn drain(bytes: Vec<u8>) {
    if let Ok(cap) = Capture::from_bytes(bytes, "fuzz.pcap") {
        let mut it = cap.frames();
        for f in it.by_ref() {
            match f {
                Ok(f) => {
                    let _ = parse_frame(f.link, f.data, f.wire_len);
                }
                Err(e) => {
                    assert!(e.to_string().starts_with("fuzz.pcap: "), "{e}");
                    break;
                }
            }
        }
        assert!(it.next().is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(
        link in 0..LINKS.len(),
        data in proptest::collection::vec(any::<u8>(), 0..200),
        wire in any::<u32>(),
    ) {
        let _ = parse_frame(LINKS[link], &data, wire);
    }

    #[test]
    fn mutated_real_frames_never_panic(
        idx in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<usize>()),
        wire_delta in -100i64..2000,
    ) {
        let frames = seed_frames();
        let (link, frame) = &frames[idx.index(frames.len())];
        let data = mutate(frame.clone(), &flips, cut);
        let wire = u32::try_from((data.len() as i64 + wire_delta).max(0)).unwrap_or(u32::MAX);
        if let Ok(pkt) = parse_frame(*link, &data, wire) {
            prop_assert_eq!(pkt.wire_len, wire);
        }
    }

    #[test]
    fn random_capture_bytes_never_panic(
        magic in 0usize..6,
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let magics: [&[u8]; 6] = [
            &[0xd4, 0xc3, 0xb2, 0xa1],
            &[0xa1, 0xb2, 0xc3, 0xd4],
            &[0x4d, 0x3c, 0xb2, 0xa1],
            &[0xa1, 0xb2, 0x3c, 0x4d],
            &[0x0a, 0x0d, 0x0d, 0x0a],
            &[],
        ];
        let mut bytes = magics[magic].to_vec();
        bytes.extend(rest);
        drain(bytes);
    }

    #[test]
    fn mutated_capture_files_never_panic(
        idx in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let files = seed_files();
        drain(mutate(files[idx.index(files.len())].clone(), &flips, cut));
    }
}

#[test]
fn mutated_pcapng_never_panics() {
    // A small pcapng (SHB, IDB, EPB) with every single byte set to a few values in turn.
    let mut ng = Vec::new();
    let block = |out: &mut Vec<u8>, t: u32, body: &[u8]| {
        let total = (12 + body.len()) as u32;
        out.extend(t.to_le_bytes());
        out.extend(total.to_le_bytes());
        out.extend(body);
        out.extend(total.to_le_bytes());
    };
    block(
        &mut ng,
        0x0a0d_0d0a,
        &[0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    );
    block(&mut ng, 1, &[1, 0, 0, 0, 0xff, 0xff, 0, 0, 9, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0]);
    let mut epb = vec![0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0];
    epb.extend([0x45, 0, 0, 8, 0, 0, 0, 0]);
    block(&mut ng, 6, &epb);
    assert_eq!(Capture::from_bytes(ng.clone(), "ok.pcapng").unwrap().frames().count(), 1);
    for at in 0..ng.len() {
        for v in [0u8, 1, 0x7f, 0x80, 0xff] {
            let mut m = ng.clone();
            m[at] = v;
            drain(m);
        }
    }
}
