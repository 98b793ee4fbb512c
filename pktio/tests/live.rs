//! Live interfaces inside network namespaces the tests create: an AF_PACKET ring and transmit path on a
//! veth pair, a tap moved into a namespace, and two taps with virtio-net headers bridged by dfw carrying
//! a TCP transfer with TSO super-frames and partial checksums.
//!
//! Every address used lives in 10.200.0.0/16 inside the namespaces made here; nothing leaves them.
//! The tests need root (namespaces, AF_PACKET, /dev/net/tun). Without it they print a notice and pass,
//! except under `CI=true`, where they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use pktio::build::{udp_v4, Host};
use pktio::{
    ethertype, AfPacketRx, AfPacketTx, Batch, Fanout, Frame, FrameSink, FrameSource, IoError, LinkType,
    Offloads, RingConfig, ScratchNetns, Tap, TapConfig, TxConfig, VlanTag, VnetHdr, L4,
};

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if !root {
        assert!(!ci, "live interface tests need root under CI");
        eprintln!("notice: not root, live interface test skipped");
    }
    root
}

/// A namespace with IPv6 off, so no router solicitations or MLD reports mix with the test's frames.
fn quiet_ns(prefix: &str) -> ScratchNetns {
    let ns = ScratchNetns::new(prefix).unwrap();
    ns.run(|| {
        for knob in ["default", "all"] {
            std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1").unwrap();
        }
    })
    .unwrap();
    ns
}

const A: Host = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 200, 0, 1) };
const B: Host = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 200, 0, 2) };

/// Receives from `rx` until `want` frames matching `keep` came or `deadline` passed.
fn collect(
    rx: &mut AfPacketRx,
    want: usize,
    deadline: Instant,
    keep: impl Fn(&Frame<'_>) -> bool,
) -> Vec<Frame<'static>> {
    // Frames are copied out (leaked per test: a few KiB) so the ring can move on.
    let mut out = Vec::new();
    let mut spare: Batch<'static> = Batch::with_capacity(32);
    while out.len() < want && Instant::now() < deadline {
        let mut batch = spare;
        rx.recv_batch(&mut batch).unwrap();
        for f in batch.frames().iter().filter(|f| keep(f)) {
            let data: &'static [u8] = Box::leak(f.data.to_vec().into_boxed_slice());
            out.push(Frame { data, ..*f });
        }
        spare = batch.recycle();
    }
    out
}

fn ours(f: &Frame<'_>) -> bool {
    f.data.get(6..12) == Some(&A.mac[..])
}

#[test]
fn veth_ring_fans_out_by_flow_recovers_vlan_tags_and_ignores_outgoing() {
    if !privileged() {
        return;
    }
    let ns = quiet_ns("veth");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]).unwrap();
    ns.ip(&["link", "set", "va", "up"]).unwrap();
    ns.ip(&["link", "set", "vb", "up"]).unwrap();
    let cfg = RingConfig {
        block_size: 1 << 16,
        block_count: 8,
        block_timeout_ms: 2,
        poll_timeout: Some(Duration::from_millis(10)),
        fanout: Some(Fanout::hash(0x0dfe)),
        ..RingConfig::default()
    };
    let (mut rx1, mut rx2, mut own, mut own_all, mut tx) = ns
        .run(|| {
            let rx1 = AfPacketRx::open("vb", &cfg).unwrap();
            let rx2 = AfPacketRx::open("vb", &cfg).unwrap();
            // A ring on the sending side: with PACKET_IGNORE_OUTGOING it must not see what is sent.
            let own = AfPacketRx::open("va", &RingConfig { fanout: None, ..cfg }).unwrap();
            // ... and one without it, which does (so the check above is not vacuous).
            let all = RingConfig { fanout: None, ignore_outgoing: false, ..cfg };
            let own_all = AfPacketRx::open("va", &all).unwrap();
            let tx = AfPacketTx::open("va", &TxConfig::default()).unwrap();
            (rx1, rx2, own, own_all, tx)
        })
        .unwrap();
    assert_eq!(rx1.link(), LinkType::Ethernet);

    // 64 flows x 4 frames, then one frame tagged in its bytes and one tagged by metadata only.
    const FLOWS: u16 = 64;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for round in 0..4u16 {
        for flow in 0..FLOWS {
            frames.push(udp_v4(&A, &B, round, 10_000 + flow, 9, b"fanout"));
        }
    }
    let mut inline_tag = udp_v4(&A, &B, 99, 20_000, 9, b"inline tag");
    inline_tag.splice(12..12, [0x81, 0x00, 0x20, 42]); // priority 1, VLAN 42
    let meta_tag = udp_v4(&A, &B, 98, 20_001, 9, b"metadata tag");
    let mut batch: Vec<Frame<'_>> = frames.iter().map(|f| Frame::new(LinkType::Ethernet, f)).collect();
    batch.push(Frame::new(LinkType::Ethernet, &inline_tag));
    batch.push(Frame {
        vlan: Some(VlanTag { tpid: 0x8100, tci: 7 }),
        ..Frame::new(LinkType::Ethernet, &meta_tag)
    });
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent < batch.len() && Instant::now() < deadline {
        sent += tx.send_batch(&batch[sent..]).unwrap();
    }
    assert_eq!(sent, batch.len());

    let want = batch.len();
    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got1.len() + got2.len() < want && Instant::now() < deadline {
        let soon = Instant::now() + Duration::from_millis(20);
        got1.extend(collect(&mut rx1, want, soon, ours));
        let soon = Instant::now() + Duration::from_millis(20);
        got2.extend(collect(&mut rx2, want, soon, ours));
    }
    assert_eq!(got1.len() + got2.len(), want, "frames received by the fanout group");

    // Flow hash: each flow's frames all went to one socket, and both sockets got some flows.
    let mut home: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    for (sock, got) in [(1, &got1), (2, &got2)] {
        for f in got.iter() {
            let p = f.parse().unwrap();
            let (sport, _) = p.ports().unwrap();
            home.entry(sport).or_default().insert(sock);
        }
    }
    assert!(home.values().all(|s| s.len() == 1), "a flow was split across sockets: {home:?}");
    let on_1 = home.values().filter(|s| s.contains(&1)).count();
    assert!(on_1 > 0 && on_1 < home.len(), "hash fanout put all {} flows on one socket", home.len());

    // VLAN tags: the kernel took them out of the bytes; the ring header gives them back.
    let all: Vec<&Frame<'_>> = got1.iter().chain(&got2).collect();
    for (sport, vid, pcp_tci) in [(20_000u16, 42u16, 0x202au16), (20_001, 7, 7)] {
        let f = all.iter().find(|f| f.parse().unwrap().ports() == Some((sport, 9))).expect("tagged frame");
        assert_eq!(f.vlan, Some(VlanTag { tpid: 0x8100, tci: pcp_tci }), "sport {sport}");
        assert_eq!(u16::from_be_bytes([f.data[12], f.data[13]]), ethertype::IPV4, "tag left in the bytes");
        let p = f.parse().unwrap();
        assert_eq!((p.vlan_count, p.vlans[0]), (1, vid));
        assert!(matches!(p.l4, L4::Udp { dport: 9, .. }));
    }

    // PACKET_IGNORE_OUTGOING: the ring on the sending interface saw none of it.
    let echoed = collect(&mut own, 1, Instant::now() + Duration::from_millis(50), ours);
    assert!(echoed.is_empty(), "{} outgoing frames read back on va", echoed.len());
    let outgoing = collect(&mut own_all, want, Instant::now() + Duration::from_secs(2), ours);
    assert_eq!(outgoing.len(), want, "a ring without PACKET_IGNORE_OUTGOING sees the frames sent");
    let stats = rx1.stats().unwrap();
    assert_eq!(stats.drops, 0);
}

/// Reads from `tap` until a frame matching `keep` arrives (or two seconds pass).
fn read_until(tap: &mut Tap, keep: impl Fn(&Frame<'_>) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut spare: Batch<'static> = Batch::default();
    while Instant::now() < deadline {
        let mut batch = spare;
        tap.recv_batch(&mut batch).unwrap();
        if let Some(f) = batch.frames().iter().find(|f| keep(f)) {
            return Some(f.data.to_vec());
        }
        spare = batch.recycle();
    }
    None
}

#[test]
fn tap_created_here_and_moved_into_a_namespace_carries_frames_both_ways() {
    if !privileged() {
        return;
    }
    let ns = quiet_ns("tap");
    let name = format!("dfwt{}", std::process::id() % 100_000);
    let cfg = TapConfig { poll_timeout: Some(Duration::from_millis(20)), ..TapConfig::default() };
    let mut tap = Tap::open(&name, &cfg).unwrap();
    assert_eq!(tap.name(), name);
    tap.move_to(ns.ns()).unwrap();
    ns.ip(&["link", "set", &name, "address", "02:00:00:00:01:01", "up"]).unwrap();
    ns.ip(&["addr", "add", "10.200.1.1/24", "dev", &name]).unwrap();

    // The namespace's stack sends a datagram to 10.200.1.2: an ARP request comes out of the tap.
    let sock = ns
        .run(|| {
            let s = UdpSocket::bind("10.200.1.1:0").unwrap();
            s.send_to(b"to the vm", "10.200.1.2:9").unwrap();
            s
        })
        .unwrap();
    let arp = read_until(&mut tap, |f| f.parse().is_ok_and(|p| p.ethertype == ethertype::ARP))
        .expect("ARP request");
    assert_eq!(&arp[28..32], &[10, 200, 1, 1], "sender address");
    assert_eq!(&arp[38..42], &[10, 200, 1, 2], "target address");

    // Frames written into the tap arrive at the namespace's stack: a datagram to the socket above.
    let port = sock.local_addr().unwrap().port();
    let vm = Host { mac: [2, 0, 0, 0, 1, 2], ip: Ipv4Addr::new(10, 200, 1, 2) };
    let host = Host { mac: [2, 0, 0, 0, 1, 1], ip: Ipv4Addr::new(10, 200, 1, 1) };
    let datagram = udp_v4(&vm, &host, 1, 9, port, b"from the vm");
    assert_eq!(tap.send_batch(&[Frame::new(LinkType::Ethernet, &datagram)]).unwrap(), 1);
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"from the vm"[..], SocketAddr::from(([10, 200, 1, 2], 9))));

    // A tap without a virtio-net header cannot carry a GSO super-frame: a typed error, nothing sent.
    let gso = VnetHdr { gso_type: VnetHdr::GSO_TCPV4, gso_size: 1448, ..VnetHdr::default() };
    let frame = Frame { offload: Some(gso), ..Frame::new(LinkType::Ethernet, &datagram) };
    let err = tap.send_batch(&[frame]).unwrap_err();
    assert!(matches!(err, IoError::OffloadUnsupported { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("{name}: frame needs offload")), "{err}");
}

#[test]
fn a_persistent_tap_made_by_ip_tuntap_is_attached_not_created() {
    if !privileged() {
        return;
    }
    let ns = quiet_ns("attach");
    ns.ip(&["tuntap", "add", "dev", "dfwp0", "mode", "tap"]).unwrap();
    let tap = ns.run(|| Tap::open("dfwp0", &TapConfig::default())).unwrap().unwrap();
    assert_eq!(tap.name(), "dfwp0");
    // Attached, the device now has a reader: its carrier (LOWER_UP) comes up once it is up.
    ns.ip(&["link", "set", "dfwp0", "up"]).unwrap();
    let out =
        std::process::Command::new("ip").args(["-n", ns.name(), "link", "show", "dfwp0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("LOWER_UP"), "{text}");
    drop(tap);
    // Persistent: the device outlives the descriptor.
    ns.ip(&["link", "show", "dfwp0"]).unwrap();
}

/// What the bridge saw pass.
#[derive(Debug, Default)]
struct Seen {
    frames: usize,
    gso: usize,
    partial_csum: usize,
    longest: usize,
}

/// One bridge step: a batch from `from` goes to `to`, as dfw's dataplane will forward it.
fn pass(from: &mut Tap, to: &mut Tap, spare: Batch<'static>, seen: &mut Seen) -> Batch<'static> {
    let mut batch = spare;
    from.recv_batch(&mut batch).unwrap();
    for f in batch.frames() {
        let hdr = f.offload.unwrap_or_default();
        seen.frames += 1;
        seen.gso += usize::from(hdr.is_gso());
        seen.partial_csum += usize::from(hdr.flags & VnetHdr::NEEDS_CSUM != 0);
        seen.longest = seen.longest.max(f.data.len());
    }
    let mut sent = 0;
    while sent < batch.len() {
        sent += to.send_batch(&batch.frames()[sent..]).unwrap();
    }
    batch.recycle()
}

#[test]
fn taps_with_vnet_headers_bridged_by_dfw_pass_tso_and_checksum_offload_through() {
    if !privileged() {
        return;
    }
    let (ns_a, ns_b) = (quiet_ns("vnet-a"), quiet_ns("vnet-b"));
    let cfg = TapConfig {
        vnet_hdr: true,
        offloads: Offloads::tcp(),
        poll_timeout: Some(Duration::from_millis(1)),
        ..TapConfig::default()
    };
    // Each VM-side stack sits in its own namespace behind a tap; dfw holds both descriptors.
    let mut tap_a = ns_a.run(|| Tap::open("dfwa", &cfg)).unwrap().unwrap();
    let mut tap_b = ns_b.run(|| Tap::open("dfwb", &cfg)).unwrap().unwrap();
    assert!(tap_a.has_vnet_hdr());
    for (ns, dev, mac, addr) in [
        (&ns_a, "dfwa", "02:00:00:00:02:01", "10.200.2.1/24"),
        (&ns_b, "dfwb", "02:00:00:00:02:02", "10.200.2.2/24"),
    ] {
        ns.ip(&["link", "set", dev, "address", mac, "up"]).unwrap();
        ns.ip(&["addr", "add", addr, "dev", dev]).unwrap();
    }

    const BYTES: usize = 4 << 20;
    let listener = ns_b.run(|| TcpListener::bind("10.200.2.2:5001").unwrap()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (seen, received) = std::thread::scope(|s| {
        let bridge = s.spawn(|| {
            let mut seen = Seen::default();
            let mut spare: Batch<'static> = Batch::with_capacity(64);
            let deadline = Instant::now() + Duration::from_secs(15);
            while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                spare = pass(&mut tap_a, &mut tap_b, spare, &mut seen);
                spare = pass(&mut tap_b, &mut tap_a, spare, &mut seen);
            }
            seen
        });
        let server = s.spawn(|| {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let (mut total, mut sum) = (0usize, 0u64);
            loop {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n;
                sum = buf[..n].iter().fold(sum, |acc, &b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
            }
            (total, sum)
        });
        let payload: Vec<u8> = (0..BYTES).map(|i| (i * 7 % 251) as u8).collect();
        ns_a.run(|| {
            let mut c =
                TcpStream::connect_timeout(&"10.200.2.2:5001".parse().unwrap(), Duration::from_secs(5))
                    .unwrap();
            c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(&payload).unwrap();
        })
        .unwrap();
        let received = server.join().unwrap();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let want = payload.iter().fold(0u64, |acc, &b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
        assert_eq!(received, (BYTES, want), "bytes and checksum of the transfer");
        (bridge.join().unwrap(), received)
    });
    assert_eq!(received.0, BYTES);
    // The sender's stack handed over super-frames with partial checksums, and they arrived intact.
    assert!(seen.gso > 0, "no GSO super-frame crossed the bridge: {seen:?}");
    assert!(seen.partial_csum > 0, "no partial checksum crossed the bridge: {seen:?}");
    assert!(seen.longest > 1514, "longest frame {} fits an MTU: {seen:?}", seen.longest);
}
