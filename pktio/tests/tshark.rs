//! pktio against the reference decoders: every shared capture's flow tuples agree with what tshark
//! reports for them, and the pcap files `PcapWriter` writes are read back by tcpdump and tshark.
//!
//! tshark runs with IP reassembly off (`ip.defragment:FALSE`, `ipv6.defragment:FALSE`) because dfw,
//! like pf without scrub, decides each fragment by itself: with reassembly on, tshark would move a
//! datagram's ports to its last fragment. Where tshark and pktio legitimately describe a frame
//! differently, a rule in `compare` says so and why.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pktio::{ethertype, parse_frame, Capture, LinkType, Packet, PcapWriter, TsResolution, L4};

use common::{captures, testdata};

/// Fails the test when `tool` is missing under CI (which installs it), skips with a notice otherwise.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{tool} is not installed; .ci/run installs it");
        eprintln!("notice: {tool} not installed, test skipped");
    }
    found
}

/// The fields asked of tshark, in column order.
const FIELDS: &[&str] = &[
    "frame.number",
    "frame.protocols",
    "ieee8021ad.id",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.hopopts.nxt",
    "ipv6.routing.nxt",
    "ipv6.fraghdr.nxt",
    "ipv6.dstopts.nxt",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
    "sctp.srcport",
    "sctp.dstport",
];

/// One frame as tshark decodes it: field name → every occurrence, outermost first.
#[derive(Debug)]
struct TsharkFrame(BTreeMap<&'static str, Vec<String>>);

impl TsharkFrame {
    fn all(&self, field: &str) -> &[String] {
        self.0.get(field).map_or(&[], |v| v.as_slice())
    }

    fn nth<T: std::str::FromStr>(&self, field: &str, n: usize) -> Option<T> {
        self.all(field).get(n).map(|s| s.parse().unwrap_or_else(|_| panic!("{field}: cannot parse {s:?}")))
    }

    fn first<T: std::str::FromStr>(&self, field: &str) -> Option<T> {
        self.nth(field, 0)
    }

    fn protocols(&self) -> Vec<&str> {
        self.all("frame.protocols").first().map_or(Vec::new(), |p| p.split(':').collect())
    }

    /// The upper-layer protocol of the outer IPv6 header: follow the next-header chain through the
    /// extension headers tshark decoded.
    fn ipv6_upper(&self) -> Option<u8> {
        let mut nh: u8 = self.first("ipv6.nxt")?;
        for _ in 0..8 {
            let field = match nh {
                0 => "ipv6.hopopts.nxt",
                43 => "ipv6.routing.nxt",
                44 => "ipv6.fraghdr.nxt",
                60 => "ipv6.dstopts.nxt",
                _ => return Some(nh),
            };
            nh = self.first(field)?;
        }
        Some(nh)
    }

    /// The first transport ports tshark found, with the protocol they belong to.
    fn ports(&self) -> Option<(&'static str, u16, u16)> {
        ["tcp", "udp", "sctp"].into_iter().find_map(|p| {
            let (s, d) = match p {
                "tcp" => ("tcp.srcport", "tcp.dstport"),
                "udp" => ("udp.srcport", "udp.dstport"),
                _ => ("sctp.srcport", "sctp.dstport"),
            };
            Some((p, self.first(s)?, self.first(d)?))
        })
    }
}

/// Runs tshark over `path`.
fn tshark(path: &Path) -> Vec<TsharkFrame> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path);
    cmd.args(["-n", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"]);
    cmd.args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-E", "separator=/t"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    // tshark exits 2 when the last frame is cut short, which is a malformed capture's business.
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), FIELDS.len(), "{}: tshark line {line:?}", path.display());
            TsharkFrame(
                FIELDS
                    .iter()
                    .zip(cols)
                    .map(|(f, c)| {
                        let vals =
                            if c.is_empty() { Vec::new() } else { c.split(',').map(str::to_owned).collect() };
                        (*f, vals)
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Captures that are malformed on purpose: pktio reports an error for their frames, tshark a
/// "malformed" expert note; there is no tuple to compare.
const MALFORMED: &[&str] = &["tcpdump/ip6_frag_asan.pcap"];

/// Compares one frame; returns a description of the first disagreement.
fn compare(p: &Packet, t: &TsharkFrame) -> Result<(), String> {
    let protos = t.protocols();
    // Rule 1, MPLS: tshark decodes through label stacks (and pseudowires) to the IP packet inside;
    // pktio stops at the MPLS ethertype, because a vNIC firewall never sees labelled traffic and dfw
    // treats it as non-IP. The frame must then be MPLS to pktio too, with nothing above it.
    if protos.contains(&"mpls") {
        return match (p.ethertype, p.ip) {
            (0x8847 | 0x8848, None) => Ok(()),
            _ => Err(format!("MPLS frame parsed as ethertype {:#06x} with IP {:?}", p.ethertype, p.ip)),
        };
    }

    // VLAN ids, outermost first: 802.1ad service tags, then 802.1Q tags.
    let mut vlans: Vec<u16> = t.all("ieee8021ad.id").iter().map(|v| v.parse().unwrap()).collect();
    vlans.extend(t.all("vlan.id").iter().map(|v| v.parse::<u16>().unwrap()));
    let ours = &p.vlans[..usize::from(p.vlan_count).min(2)];
    if vlans != ours {
        return Err(format!("vlans: tshark {vlans:?}, pktio {ours:?}"));
    }

    // Addresses and protocol of the outermost IP header.
    let theirs = match (t.first::<IpAddr>("ip.src"), t.first::<IpAddr>("ipv6.src")) {
        (Some(src), _) => Some((src, t.first::<IpAddr>("ip.dst"), t.first::<u8>("ip.proto"))),
        (None, Some(src)) => Some((src, t.first::<IpAddr>("ipv6.dst"), t.ipv6_upper())),
        (None, None) => None,
    };
    let ip = match (theirs, p.ip) {
        (None, None) => return Ok(()),
        (Some((src, dst, proto)), Some(ip)) => {
            if (Some(src), dst, proto) != (Some(ip.src), Some(ip.dst), Some(ip.proto)) {
                return Err(format!(
                    "ip: tshark {src} > {dst:?} proto {proto:?}, pktio {} > {} proto {}",
                    ip.src, ip.dst, ip.proto
                ));
            }
            ip
        }
        (t, p) => return Err(format!("ip: tshark {t:?}, pktio {p:?}")),
    };

    let their_ports = t.ports();
    match p.l4 {
        L4::Tcp(_) | L4::Udp { .. } | L4::Sctp { .. } => {
            let name = match p.l4 {
                L4::Tcp(_) => "tcp",
                L4::Udp { .. } => "udp",
                _ => "sctp",
            };
            let (s, d) = p.ports().unwrap_or_default();
            if their_ports != Some((name, s, d)) {
                return Err(format!("ports: tshark {their_ports:?}, pktio {name} {s} > {d}"));
            }
        }
        // Rule 2, ICMP errors: tshark decodes the datagram the error quotes as a second IP layer, so its
        // first transport ports and its second addresses are the quoted ones; pktio keeps them in
        // `IcmpInfo::quoted`.
        L4::Icmp(icmp) => match (icmp.quoted, their_ports) {
            (Some(q), Some((_, s, d))) => {
                let v6 = ip.src.is_ipv6();
                let (src_f, dst_f) = if v6 { ("ipv6.src", "ipv6.dst") } else { ("ip.src", "ip.dst") };
                let quoted = (t.nth::<IpAddr>(src_f, 1), t.nth::<IpAddr>(dst_f, 1), s, d);
                if quoted != (Some(q.src), Some(q.dst), q.sport, q.dport) {
                    return Err(format!("icmp quote: tshark {quoted:?}, pktio {q:?}"));
                }
            }
            (_, None) => {}
            (None, Some(tp)) => return Err(format!("icmp: tshark quotes ports {tp:?}, pktio has no quote")),
        },
        // Rule 3, fragments: a non-first fragment (or a first fragment too short for the transport
        // header) has no ports for pktio; tshark, with reassembly off, shows it as data.
        L4::None => {
            if let Some(tp) = their_ports {
                return Err(format!("tshark has ports {tp:?} where pktio has no transport header"));
            }
        }
        L4::Other => {
            if let Some(tp) = their_ports {
                return Err(format!("tshark has ports {tp:?} in protocol {} pktio does not parse", ip.proto));
            }
        }
    }
    Ok(())
}

#[test]
fn flow_tuples_agree_with_tshark_for_every_shared_capture() {
    if !have("tshark") {
        return;
    }
    let root = testdata().join("pcaps");
    let files = captures(&root);
    assert!(files.len() >= 36, "found only {} captures", files.len());
    // tshark takes ~0.3 s to start: run two at a time (CI has two cores).
    let decoded: Vec<(PathBuf, Vec<TsharkFrame>)> = files
        .chunks(2)
        .flat_map(|pair| {
            std::thread::scope(|s| {
                let handles: Vec<_> = pair.iter().map(|f| s.spawn(move || (f.clone(), tshark(f)))).collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut compared = 0;
    let mut failures = Vec::new();
    for (path, theirs) in &decoded {
        let rel = path.strip_prefix(&root).unwrap().to_str().unwrap();
        let cap = Capture::open(path).unwrap();
        let ours: Vec<_> = cap.frames().map(|f| f.unwrap()).collect();
        assert_eq!(ours.len(), theirs.len(), "{rel}: frame counts differ");
        for (i, (f, t)) in ours.iter().zip(theirs).enumerate() {
            match parse_frame(f.link, f.data, f.wire_len) {
                Ok(p) => match compare(&p, t) {
                    Ok(()) => compared += 1,
                    Err(e) => failures.push(format!("{rel} frame {}: {e}", i + 1)),
                },
                Err(e) if MALFORMED.contains(&rel) => {
                    assert!(t.protocols().len() > 1, "{rel}: tshark decoded nothing: {e}");
                }
                Err(e) => failures.push(format!("{rel} frame {}: pktio error {e}", i + 1)),
            }
        }
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    assert!(compared > 400, "compared only {compared} frames");
}

/// Frames of every kind the writer may be handed: TCP, UDP, ICMP, ARP, a VLAN-tagged frame.
fn sample_frames() -> Vec<Vec<u8>> {
    use pktio::build::{arp, icmp_echo_v4, tcp_v4, udp_v4, Host, TcpSeg};
    use std::net::Ipv4Addr;
    let a = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 200, 0, 1) };
    let b = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 200, 0, 2) };
    let syn = TcpSeg {
        sport: 40000,
        dport: 80,
        seq: 1,
        ack: 0,
        flags: 2,
        window: 64240,
        mss: Some(1460),
        payload: &[],
    };
    // UDP to the discard port (9): tshark has no payload dissector to call the bytes malformed.
    let mut tagged = udp_v4(&a, &b, 9, 40001, 9, b"hello");
    tagged.splice(12..12, [0x81, 0x00, 0x00, 42]);
    vec![
        tcp_v4(&a, &b, 1, &syn),
        udp_v4(&a, &b, 2, 33000, 9, b"query"),
        icmp_echo_v4(&a, &b, 3, false, 77, 1),
        arp(&a, b.ip, None),
        tagged,
        udp_v4(&a, &b, 4, 33001, 9, &[0xab; 1000]),
    ]
}

/// Writes the sample frames at 1.5 s + i ms (+ 123 ns in nanosecond files), the last one cut by a
/// 200-byte snaplen.
fn write_sample(path: &Path, res: TsResolution) -> Vec<Vec<u8>> {
    let frames = sample_frames();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = PcapWriter::with_resolution(file, LinkType::Ethernet, 200, res).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = 1_700_000_001_500_000_000 + i as u64 * 1_000_000 + 123;
        w.write_frame(ts, f, f.len() as u32).unwrap();
    }
    w.flush().unwrap();
    frames
}

/// A directory of one test's own, removed with everything in it when dropped (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dfw-pktio-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tcpdump_reads_back_what_pcap_writer_writes() {
    if !have("tcpdump") {
        return;
    }
    for (res, prec, frac) in
        [(TsResolution::Micros, "micro", "500000"), (TsResolution::Nanos, "nano", "500000123")]
    {
        let dir = Scratch::new("tcpdump");
        let path = dir.file(&format!("written-{prec}.pcap"));
        let frames = write_sample(&path, res);
        let out = Command::new("tcpdump")
            .args(["-nn", "-e", "-tt", "--time-stamp-precision", prec, "-r"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "tcpdump: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), frames.len(), "{text}");
        assert!(lines[0].starts_with(&format!("1700000001.{frac} ")), "{}", lines[0]);
        let expect = [
            "10.200.0.1.40000 > 10.200.0.2.80: Flags [S]",
            "10.200.0.1.33000 > 10.200.0.2.9: UDP, length 5",
            "10.200.0.1 > 10.200.0.2: ICMP echo request, id 77, seq 1",
            "Request who-has 10.200.0.2 tell 10.200.0.1",
            "vlan 42",
            "10.200.0.1.33001 > 10.200.0.2.9: UDP, length 1000",
        ];
        for (line, want) in lines.iter().zip(expect) {
            assert!(line.contains(want), "{prec}: {line:?} lacks {want:?}");
        }
        // The snaplen cut shows as the captured length in the link-level header line.
        assert!(lines[5].contains("length 1042"), "{}", lines[5]);
    }
}

#[test]
fn tshark_reads_back_what_pcap_writer_writes() {
    if !have("tshark") {
        return;
    }
    let dir = Scratch::new("tshark");
    let path = dir.file("written-tshark.pcap");
    let frames = write_sample(&path, TsResolution::Nanos);
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&path)
        .args(["-n", "-T", "fields", "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.time_epoch"])
        .args(["-e", "frame.protocols", "-e", "vlan.id", "-e", "_ws.expert.severity"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), frames.len(), "{text}");
    let protos =
        ["eth:ethertype:ip:tcp", "eth:ethertype:ip:udp", "eth:ethertype:ip:icmp", "eth:ethertype:arp"];
    for (i, (row, f)) in rows.iter().zip(&frames).enumerate() {
        assert_eq!(row[0], f.len().to_string(), "frame {i} length");
        assert_eq!(row[1], f.len().min(200).to_string(), "frame {i} captured length");
        assert_eq!(row[2], format!("1700000001.50{i}000123"), "frame {i} time");
        if let Some(p) = protos.get(i) {
            assert!(row[3].starts_with(p), "frame {i}: {}", row[3]);
        }
        // No malformed-packet or checksum complaints (expert severity "error").
        assert!(!row[5].contains("error") && !row[5].contains("8388608"), "frame {i}: expert {}", row[5]);
    }
    assert_eq!(rows[4][4], "42");
    // And pktio reads its own output the same way.
    let cap = Capture::open(&path).unwrap();
    for (f, want) in cap.frames().zip(&frames) {
        let f = f.unwrap();
        assert_eq!((f.wire_len as usize, f.data), (want.len(), &want[..want.len().min(200)]));
        let p = parse_frame(f.link, f.data, f.wire_len).unwrap();
        assert!(p.ethertype == ethertype::IPV4 || p.ethertype == ethertype::ARP);
    }
}
