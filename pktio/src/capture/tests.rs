//! Capture reading and writing: hand-built pcap and pcapng files in both byte orders, each error variant
//! from a file broken in one place.

use super::*;

const FRAME_A: &[u8] = &[0xaa; 60];
const FRAME_B: &[u8] = &[0xbb; 42];

/// 2023-11-14T22:13:20.123456789Z.
const TS: u64 = 1_700_000_000_123_456_789;

fn frames(cap: &Capture) -> Vec<CaptureFrame<'_>> {
    cap.frames().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Builds a classic pcap file by hand.
fn pcap(magic: u32, be: bool, link: u32, records: &[(u32, u32, &[u8], u32)]) -> Vec<u8> {
    let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut out = Vec::new();
    out.extend(w32(magic));
    out.extend(w16(2));
    out.extend(w16(4));
    out.extend([0; 8]);
    out.extend(w32(65535));
    out.extend(w32(link));
    for &(sec, frac, data, wire_len) in records {
        out.extend(w32(sec));
        out.extend(w32(frac));
        out.extend(w32(data.len() as u32));
        out.extend(w32(wire_len));
        out.extend(data);
    }
    out
}

#[test]
fn pcap_in_all_four_magics() {
    for (magic, be, nanos) in [
        (0xa1b2_c3d4, false, false),
        (0xa1b2_c3d4, true, false),
        (0xa1b2_3c4d, false, true),
        (0xa1b2_3c4d, true, true),
    ] {
        let frac = if nanos { 123_456_789 } else { 123_456 };
        let bytes =
            pcap(magic, be, 1, &[(1_700_000_000, frac, FRAME_A, 60), (1_700_000_001, 0, FRAME_B, 1514)]);
        let cap = Capture::from_bytes(bytes, "t.pcap").unwrap();
        assert_eq!(cap.format(), CaptureFormat::Pcap { nanos, big_endian: be });
        assert_eq!(cap.pcap_link(), Some(LinkType::Ethernet));
        let f = frames(&cap);
        let expect_ts = if nanos { TS } else { TS - 789 };
        assert_eq!(
            f,
            [
                CaptureFrame {
                    data: FRAME_A,
                    wire_len: 60,
                    ts_nanos: expect_ts,
                    link: LinkType::Ethernet,
                    interface: 0
                },
                // Captured 42 of 1514 bytes: not an error.
                CaptureFrame {
                    data: FRAME_B,
                    wire_len: 1514,
                    ts_nanos: 1_700_000_001_000_000_000,
                    link: LinkType::Ethernet,
                    interface: 0
                },
            ]
        );
    }
}

#[test]
fn pcap_writer_round_trip() {
    let mut w = PcapWriter::new(Vec::new(), LinkType::LinuxSll, 50).unwrap();
    w.write_frame(TS, FRAME_A, 60).unwrap();
    w.write_frame(TS + 1_000, FRAME_B, 10).unwrap();
    let bytes = w.into_inner();
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    let cap = Capture::from_bytes(bytes, "w.pcap").unwrap();
    assert_eq!(cap.format(), CaptureFormat::Pcap { nanos: false, big_endian: false });
    let f = frames(&cap);
    assert_eq!(f.len(), 2);
    // Cut to the snaplen of 50; microsecond resolution drops the last three digits.
    assert_eq!(
        (f[0].data, f[0].wire_len, f[0].ts_nanos, f[0].link),
        (&FRAME_A[..50], 60, TS - 789, LinkType::LinuxSll)
    );
    // A wire length below the data length is raised to it.
    assert_eq!((f[1].data, f[1].wire_len, f[1].ts_nanos), (FRAME_B, 42, TS + 1_000 - 789));

    let mut w = PcapWriter::with_resolution(Vec::new(), LinkType::Raw, 65535, TsResolution::Nanos).unwrap();
    w.write_frame(TS, FRAME_B, 42).unwrap();
    let cap = Capture::from_bytes(w.into_inner(), "n.pcap").unwrap();
    assert_eq!(cap.format(), CaptureFormat::Pcap { nanos: true, big_endian: false });
    assert_eq!(frames(&cap)[0].ts_nanos, TS);
    assert_eq!(frames(&cap)[0].link, LinkType::Raw);

    assert!(PcapWriter::new(Vec::new(), LinkType::Ethernet, 0).is_err());
    let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet, 100).unwrap();
    assert!(w.write_frame(u64::MAX, FRAME_A, 60).is_err());
}

#[test]
fn truncated_record_names_file_and_offset() {
    let mut bytes = pcap(0xa1b2_c3d4, false, 1, &[(1, 0, FRAME_B, 42), (2, 0, FRAME_A, 60)]);
    bytes.truncate(bytes.len() - 40);
    let cap = Capture::from_bytes(bytes, "seed.pcap").unwrap();
    let mut it = cap.frames();
    assert!(it.next().unwrap().is_ok());
    let err = it.next().unwrap().unwrap_err();
    let offset = 24 + 16 + 42;
    assert!(
        matches!(err, CaptureError::Truncated { offset: o, need: 76, remain: 36, .. } if o == offset as u64),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("seed.pcap: truncated capture: record at byte {offset} needs 76 bytes, 36 remain")
    );
    assert_eq!(err.path(), Path::new("seed.pcap"));
    // The iterator stops after the first error.
    assert!(it.next().is_none());

    // A record header cut short.
    let mut bytes = pcap(0xa1b2_c3d4, false, 1, &[(1, 0, FRAME_B, 42)]);
    bytes.extend([0; 5]);
    let cap = Capture::from_bytes(bytes, "h.pcap").unwrap();
    let err = cap.frames().nth(1).unwrap().unwrap_err();
    assert!(matches!(err, CaptureError::Truncated { need: 16, remain: 5, .. }), "{err:?}");
}

#[test]
fn unsupported_link_type_is_rejected_at_open() {
    let err = Capture::from_bytes(pcap(0xa1b2_c3d4, false, 105, &[]), "x.pcap").unwrap_err();
    assert!(matches!(err, CaptureError::UnsupportedLinkType { link: 105, offset: 20, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "x.pcap: unsupported link type 105 (IEEE 802.11); dfw reads Ethernet, Linux SLL/SLL2 and raw IP"
    );
}

#[test]
fn not_a_capture_empty_and_short_files() {
    let err = Capture::from_bytes(b"PK\x03\x04 not a capture at all".to_vec(), "x.bin").unwrap_err();
    assert!(matches!(err, CaptureError::NotACapture { magic: 0x504b_0304, .. }));
    assert_eq!(err.to_string(), "x.bin: not a pcap or pcapng file (magic 0x504b0304)");

    let err = Capture::from_bytes(Vec::new(), "e.pcap").unwrap_err();
    assert!(matches!(err, CaptureError::Empty { .. }));
    assert_eq!(err.to_string(), "e.pcap: empty file, not a pcap or pcapng capture");

    let err = Capture::from_bytes(vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0], "s.pcap").unwrap_err();
    assert!(matches!(err, CaptureError::TooShort { len: 8, need: 24, .. }));
    assert_eq!(err.to_string(), "s.pcap: file is 8 bytes, too short for a pcap header (24 bytes)");

    let err = Capture::from_bytes(vec![0xd4, 0xc3], "t.pcap").unwrap_err();
    assert!(matches!(err, CaptureError::TooShort { len: 2, .. }));

    let err = Capture::from_bytes(vec![0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0], "n.pcapng").unwrap_err();
    assert!(matches!(err, CaptureError::TooShort { need: 28, .. }));
}

#[test]
fn open_maps_a_real_file_and_names_missing_ones() {
    let dir = std::env::temp_dir().join(format!("dfw-pktio-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one.pcap");
    std::fs::write(&path, pcap(0xa1b2_c3d4, false, 1, &[(1, 0, FRAME_A, 60)])).unwrap();
    let cap = Capture::open(&path).unwrap();
    assert_eq!(frames(&cap)[0].data, FRAME_A);
    assert_eq!(cap.path(), path);

    let empty = dir.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(Capture::open(&empty), Err(CaptureError::Empty { .. })));

    let missing = dir.join("missing.pcap");
    let err = Capture::open(&missing).unwrap_err();
    assert!(matches!(err, CaptureError::Io { .. }));
    assert!(err.to_string().starts_with(&format!("{}: cannot read: ", missing.display())), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Builds pcapng files block by block in either byte order.
struct Ng {
    be: bool,
    out: Vec<u8>,
}

impl Ng {
    fn new(be: bool) -> Ng {
        let mut ng = Ng { be, out: Vec::new() };
        ng.shb();
        ng
    }
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn block(&mut self, btype: u32, body: &[u8]) {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        let (t, l) = (self.u32(btype), self.u32(total));
        self.out.extend(t);
        self.out.extend(l);
        self.out.extend(body);
        self.out.resize(self.out.len() + padded - body.len(), 0);
        self.out.extend(l);
    }
    fn shb(&mut self) {
        let mut body = Vec::new();
        body.extend(self.u32(0x1a2b_3c4d));
        body.extend(self.u16(1));
        body.extend(self.u16(0));
        body.extend([0xff; 8]);
        self.block(0x0a0d_0d0a, &body);
    }
    fn section(&mut self, be: bool) {
        self.be = be;
        self.shb();
    }
    fn idb(&mut self, link: u16, options: &[(u16, &[u8])]) {
        self.idb_snaplen(link, 65535, options);
    }
    fn idb_snaplen(&mut self, link: u16, snaplen: u32, options: &[(u16, &[u8])]) {
        let mut body = Vec::new();
        body.extend(self.u16(link));
        body.extend([0, 0]);
        body.extend(self.u32(snaplen));
        for &(code, value) in options {
            body.extend(self.u16(code));
            body.extend(self.u16(value.len() as u16));
            body.extend(value);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        if !options.is_empty() {
            body.extend([0; 4]);
        }
        self.block(1, &body);
    }
    fn epb(&mut self, iface: u32, ts: u64, data: &[u8], wire_len: u32) {
        let mut body = Vec::new();
        body.extend(self.u32(iface));
        body.extend(self.u32((ts >> 32) as u32));
        body.extend(self.u32(ts as u32));
        body.extend(self.u32(data.len() as u32));
        body.extend(self.u32(wire_len));
        body.extend(data);
        self.block(6, &body);
    }
    fn spb(&mut self, wire_len: u32, data: &[u8]) {
        let mut body = Vec::new();
        body.extend(self.u32(wire_len));
        body.extend(data);
        self.block(3, &body);
    }
}

#[test]
fn pcapng_shb_idb_epb_spb_in_both_byte_orders() {
    for be in [false, true] {
        let mut ng = Ng::new(be);
        // Snaplen 42: the simple packet block below holds 42 bytes of a 1514-byte frame.
        ng.idb_snaplen(1, 42, &[]);
        ng.block(0x0000_0bad, &[1, 2, 3]); // unknown block: skipped
        ng.epb(0, TS / 1000, FRAME_A, 60);
        ng.spb(1514, FRAME_B);
        ng.spb(3, &[1, 2, 3]);
        let cap = Capture::from_bytes(ng.out, "t.pcapng").unwrap();
        assert_eq!(cap.format(), CaptureFormat::Pcapng);
        assert_eq!(cap.pcap_link(), None);
        let f = frames(&cap);
        assert_eq!(
            f,
            [
                CaptureFrame {
                    data: FRAME_A,
                    wire_len: 60,
                    ts_nanos: TS - 789,
                    link: LinkType::Ethernet,
                    interface: 0
                },
                CaptureFrame {
                    data: FRAME_B,
                    wire_len: 1514,
                    ts_nanos: 0,
                    link: LinkType::Ethernet,
                    interface: 0
                },
                CaptureFrame {
                    data: &[1, 2, 3],
                    wire_len: 3,
                    ts_nanos: 0,
                    link: LinkType::Ethernet,
                    interface: 0
                },
            ],
            "big endian: {be}"
        );
    }
}

#[test]
fn pcapng_tsresol_tsoffset_and_interfaces() {
    let mut ng = Ng::new(false);
    ng.idb(1, &[(9, &[9])]); // nanoseconds
    ng.idb(113, &[(9, &[0x80 | 10]), (14, &10u64.to_le_bytes())]); // 1/1024 s, +10 s
    ng.epb(0, TS, FRAME_A, 60);
    ng.epb(1, 2048 + 512, FRAME_B, 42);
    let cap = Capture::from_bytes(ng.out, "r.pcapng").unwrap();
    let f = frames(&cap);
    assert_eq!((f[0].ts_nanos, f[0].link, f[0].interface), (TS, LinkType::Ethernet, 0));
    assert_eq!((f[1].ts_nanos, f[1].link, f[1].interface), (12_500_000_000, LinkType::LinuxSll, 1));
}

#[test]
fn pcapng_several_sections_reset_interfaces_and_byte_order() {
    let mut ng = Ng::new(true);
    ng.idb(1, &[]);
    ng.epb(0, 1, FRAME_A, 60);
    ng.section(false);
    ng.idb(101, &[]);
    ng.epb(0, 2, FRAME_B, 42);
    let cap = Capture::from_bytes(ng.out, "s.pcapng").unwrap();
    let f = frames(&cap);
    assert_eq!((f[0].link, f[0].ts_nanos, f[0].data), (LinkType::Ethernet, 1000, FRAME_A));
    assert_eq!((f[1].link, f[1].ts_nanos, f[1].data), (LinkType::Raw, 2000, FRAME_B));

    // Interfaces of an earlier section are gone after a new SHB.
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.section(false);
    ng.epb(0, 1, FRAME_A, 60);
    let err = Capture::from_bytes(ng.out, "u.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(
        matches!(err, CaptureError::BadBlock { defect: BlockDefect::UnknownInterface(0), .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "u.pcapng: bad pcapng block at byte 76: packet names undeclared interface 0");
}

#[test]
fn pcapng_errors() {
    // Unsupported link type in an IDB.
    let mut ng = Ng::new(false);
    ng.idb(105, &[]);
    let cap = Capture::from_bytes(ng.out, "w.pcapng").unwrap();
    let err = cap.frames().next().unwrap().unwrap_err();
    assert!(matches!(err, CaptureError::UnsupportedLinkType { link: 105, offset: 28, .. }), "{err:?}");

    // A block running past the end of the file.
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.epb(0, 1, FRAME_A, 60);
    ng.out.truncate(ng.out.len() - 10);
    let err = Capture::from_bytes(ng.out, "t.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(
        matches!(err, CaptureError::Truncated { what: "block", offset: 48, need: 92, remain: 82, .. }),
        "{err:?}"
    );

    // Trailer length that disagrees with the header.
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    let n = ng.out.len();
    ng.out[n - 4] = 0x99;
    let err = Capture::from_bytes(ng.out, "m.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(matches!(err, CaptureError::BadBlock { defect: BlockDefect::TrailerMismatch { .. }, .. }));

    // A captured length past the end of the block.
    let mut ng = Ng::new(true);
    ng.idb(1, &[]);
    ng.epb(0, 1, FRAME_A, 60);
    let caplen_at = 28 + 20 + 8 + 12;
    ng.out[caplen_at..caplen_at + 4].copy_from_slice(&100u32.to_be_bytes());
    let err = Capture::from_bytes(ng.out, "c.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            CaptureError::BadBlock { defect: BlockDefect::CaptureLenPastBlock { caplen: 100, room: 60 }, .. }
        ),
        "{err:?}"
    );

    // A bad byte-order magic and an unsupported version.
    let mut ng = Ng::new(false);
    ng.out[8] = 0;
    let err = Capture::from_bytes(ng.out, "b.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(matches!(err, CaptureError::BadBlock { defect: BlockDefect::ByteOrderMagic(_), offset: 0, .. }));
    let mut ng = Ng::new(false);
    ng.out[12] = 2;
    let err = Capture::from_bytes(ng.out, "v.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(matches!(err, CaptureError::BadBlock { defect: BlockDefect::Version(2, 0), .. }));

    // A block length that is not a multiple of 4.
    let mut ng = Ng::new(false);
    ng.out[4] = 29;
    let err = Capture::from_bytes(ng.out, "l.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(matches!(err, CaptureError::BadBlock { defect: BlockDefect::Length(29), .. }));

    // An if_tsresol no u64 can hold.
    let mut ng = Ng::new(false);
    ng.idb(1, &[(9, &[20])]);
    let err = Capture::from_bytes(ng.out, "r.pcapng").unwrap().frames().next().unwrap().unwrap_err();
    assert!(matches!(err, CaptureError::BadBlock { defect: BlockDefect::TimestampResolution(20), .. }));
}

#[test]
fn skip_passes_the_frames_next_would_give() {
    let records: Vec<(u32, u32, &[u8], u32)> =
        (0..7).map(|i| (i, 0, if i % 2 == 0 { FRAME_A } else { FRAME_B }, 60)).collect();
    for be in [false, true] {
        let cap = Capture::from_bytes(pcap(0xa1b2_c3d4, be, 1, &records), "s.pcap").unwrap();
        let all = frames(&cap);
        for first in 0..=8u64 {
            let mut it = cap.frames();
            assert_eq!(it.skip_frames(first), first.min(7));
            let rest: Vec<_> = it.map(Result::unwrap).collect();
            assert_eq!(rest, all[first.min(7) as usize..], "skip {first}, big-endian {be}");
        }
    }

    // A damaged record stops the skip before it and is still reported by `next`.
    let mut bytes = pcap(0xa1b2_c3d4, false, 1, &records[..3]);
    bytes.truncate(bytes.len() - 10);
    let cap = Capture::from_bytes(bytes, "d.pcap").unwrap();
    let mut it = cap.frames();
    assert_eq!(it.skip_frames(5), 2);
    assert!(matches!(it.next(), Some(Err(CaptureError::Truncated { .. }))));
    assert!(it.next().is_none());

    // pcapng goes frame by frame, blocks that are not frames included.
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.epb(0, 1, FRAME_A, 60);
    ng.block(0x0000_0bad, &[1, 2, 3]);
    ng.epb(0, 2, FRAME_B, 42);
    ng.epb(0, 3, FRAME_A, 60);
    let cap = Capture::from_bytes(ng.out, "s.pcapng").unwrap();
    let mut it = cap.frames();
    assert_eq!(it.skip_frames(2), 2);
    assert_eq!(it.next().unwrap().unwrap().ts_nanos, 3000);
    assert_eq!(it.skip_frames(1), 0);
}

#[test]
fn a_pcap_reader_seeks_to_where_another_reader_stood() {
    let records: Vec<(u32, u32, &[u8], u32)> =
        (0..7).map(|i| (i, 0, if i % 2 == 0 { FRAME_A } else { FRAME_B }, 60)).collect();
    let cap = Capture::from_bytes(pcap(0xa1b2_c3d4, false, 1, &records), "s.pcap").unwrap();
    let all = frames(&cap);
    for first in 0..=7usize {
        // One reader walks `first` frames; another jumps to where it stands and reads the rest.
        let mut walker = cap.frames();
        assert_eq!(walker.skip_frames(first as u64), first as u64);
        let mut other = cap.frames();
        assert!(other.seek(walker.position()));
        let rest: Vec<_> = other.map(Result::unwrap).collect();
        assert_eq!(rest, all[first..], "after {first} frames");
    }
    // Not past the end of the file.
    let mut it = cap.frames();
    let end = {
        let mut w = cap.frames();
        w.skip_frames(7);
        w.position()
    };
    assert!(!it.seek(end + 1));
    assert_eq!(it.next().unwrap().unwrap(), all[0]);
    // A pcapng reader does not seek (its blocks carry state the reader must see).
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.epb(0, 1, FRAME_A, 60);
    ng.epb(0, 2, FRAME_B, 42);
    let cap = Capture::from_bytes(ng.out, "s.pcapng").unwrap();
    let mut it = cap.frames();
    let at = it.position();
    assert!(!it.seek(at));
    assert_eq!(it.next().unwrap().unwrap().ts_nanos, 1000);
}

/// Reads every item the way a fast loop does ([`Frames::next_from`]): a whole pcap record through
/// `next_record`, anything else (the end, damage, pcapng) through `next`.
fn read_fast(cap: &Capture) -> Vec<Result<CaptureFrame<'_>, String>> {
    let mut it = cap.frames();
    let pcap = it.pcap_reader();
    std::iter::from_fn(|| it.next_from(pcap)).map(|item| item.map_err(|e| e.to_string())).collect()
}

#[test]
fn next_from_gives_what_next_gives() {
    let records: Vec<(u32, u32, &[u8], u32)> =
        (0..7).map(|i| (i, 1000 * i, if i % 2 == 0 { FRAME_A } else { FRAME_B }, 60)).collect();
    for (magic, be) in [(0xa1b2_c3d4, false), (0xa1b2_c3d4, true), (0xa1b2_3c4d, false), (0xa1b2_3c4d, true)]
    {
        let whole = pcap(magic, be, 1, &records);
        // Whole, cut inside a record's header, cut inside a record's data.
        for cut in [0, 10, 30] {
            let cap = Capture::from_bytes(whole[..whole.len() - cut].to_vec(), "r.pcap").unwrap();
            let slow: Vec<_> = cap.frames().map(|item| item.map_err(|e| e.to_string())).collect();
            assert_eq!(read_fast(&cap), slow, "magic {magic:x}, big-endian {be}, cut {cut}");
            assert_eq!(slow.iter().filter(|f| f.is_err()).count(), usize::from(cut > 0));
        }
    }
    // pcapng has no pcap reader: every frame comes through `next`.
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.epb(0, 1, FRAME_A, 60);
    ng.epb(0, 2, FRAME_B, 42);
    let cap = Capture::from_bytes(ng.out, "r.pcapng").unwrap();
    assert!(cap.frames().pcap_reader().is_none());
    assert_eq!(read_fast(&cap).len(), 2);
}
