//! `dfw gen seed-lab`: the seed article's scenario as a capture.
//!
//! Three pods on one host: busybox (172.15.0.2) and the two nginx pods (172.15.0.4, 172.15.0.5). The
//! timeline follows the article (2018-12-17, UTC):
//!
//! - 09:25: busybox resolves nginx-lrhc6 by ARP, then `wget` opens TCP to 172.15.0.4:80 and retries once:
//!   the source address set is empty, so nginx's filter drops both SYNs (rule 6269).
//! - 09:30:34 the pod is labelled `app=foo` and its IP joins the source set (policy v2).
//! - 09:31: the same request succeeds: handshake, `HEAD /`, `200 OK`, FIN/FIN (rule 6266, then state).
//! - 09:35 the pod is labelled `app=bar` and leaves the set (policy v3).
//! - 09:36: a new connection is dropped again.

use std::fs::File;
use std::io::BufWriter;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use pktio::build::{arp, tcp_v4, Host, TcpSeg};
use pktio::capture::PcapWriter;
use pktio::packet::tcpflags::{ACK, FIN, PSH, SYN};
use pktio::LinkType;

const BUSYBOX: Host = Host { mac: [0x00, 0x50, 0x56, 0x00, 0x00, 0x02], ip: Ipv4Addr::new(172, 15, 0, 2) };
const NGINX: Host = Host { mac: [0x00, 0x50, 0x56, 0x00, 0x00, 0x04], ip: Ipv4Addr::new(172, 15, 0, 4) };

/// 2018-12-17T00:00:00Z in seconds since the UNIX epoch.
const DAY: u64 = 1_545_004_800;

fn at(h: u64, m: u64, s: u64, ms: u64) -> u64 {
    ((DAY + h * 3600 + m * 60 + s) * 1000 + ms) * 1_000_000
}

struct Capture {
    frames: Vec<(u64, Vec<u8>)>,
    ip_id: u16,
}

impl Capture {
    fn tcp(
        &mut self,
        ts: u64,
        client_to_server: bool,
        sport: u16,
        (seq, ack): (u32, u32),
        flags: u8,
        payload: &[u8],
    ) {
        self.ip_id = self.ip_id.wrapping_add(1);
        let (src, dst, sp, dp) =
            if client_to_server { (&BUSYBOX, &NGINX, sport, 80) } else { (&NGINX, &BUSYBOX, 80, sport) };
        let mss = (flags & SYN != 0).then_some(1460);
        let seg = TcpSeg { sport: sp, dport: dp, seq, ack, flags, window: 29200, mss, payload };
        self.frames.push((ts, tcp_v4(src, dst, self.ip_id, &seg)));
    }

    /// A `wget` whose SYN is never answered: the SYN and one retransmission 1 s later.
    fn refused(&mut self, ts: u64, sport: u16) {
        self.tcp(ts, true, sport, (1000, 0), SYN, b"");
        self.tcp(ts + 1_000_000_000, true, sport, (1000, 0), SYN, b"");
    }
}

/// Builds the capture in memory: (timestamp ns, frame) in order.
pub fn seed_lab_frames() -> Vec<(u64, Vec<u8>)> {
    let mut c = Capture { frames: Vec::new(), ip_id: 0 };
    // Phase 1: not in the source set.
    c.frames.push((at(9, 25, 0, 0), arp(&BUSYBOX, NGINX.ip, None)));
    c.frames.push((at(9, 25, 0, 1), arp(&NGINX, BUSYBOX.ip, Some(&BUSYBOX))));
    c.refused(at(9, 25, 0, 2), 40001);
    // Phase 2: app=foo, allowed.
    let (t, p) = (at(9, 31, 0, 0), 40002);
    let request = b"HEAD / HTTP/1.1\r\nHost: nginx\r\nUser-Agent: Wget\r\nConnection: close\r\n\r\n";
    let response =
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.15.7\r\nContent-Length: 612\r\nConnection: close\r\n\r\n";
    let (cs, ss) = (2000u32, 9000u32);
    let ms = 1_000_000;
    c.tcp(t, true, p, (cs, 0), SYN, b"");
    c.tcp(t + ms, false, p, (ss, cs + 1), SYN | ACK, b"");
    c.tcp(t + 2 * ms, true, p, (cs + 1, ss + 1), ACK, b"");
    c.tcp(t + 3 * ms, true, p, (cs + 1, ss + 1), PSH | ACK, request);
    let cs2 = cs + 1 + request.len() as u32;
    c.tcp(t + 4 * ms, false, p, (ss + 1, cs2), PSH | ACK, response);
    let ss2 = ss + 1 + response.len() as u32;
    c.tcp(t + 5 * ms, true, p, (cs2, ss2), FIN | ACK, b"");
    c.tcp(t + 6 * ms, false, p, (ss2, cs2 + 1), FIN | ACK, b"");
    c.tcp(t + 7 * ms, true, p, (cs2 + 1, ss2 + 1), ACK, b"");
    // Phase 3: app=bar, denied again.
    c.refused(at(9, 36, 0, 0), 40003);
    c.frames
}

/// Writes the seed-lab capture to `out`.
pub fn seed_lab(out: &Path) -> Result<ExitCode> {
    let file = File::create(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut w = PcapWriter::new(BufWriter::new(file), LinkType::Ethernet, 65535)
        .with_context(|| format!("{}: write failed", out.display()))?;
    let frames = seed_lab_frames();
    for (ts, f) in &frames {
        w.write_frame(*ts, f, f.len() as u32).with_context(|| format!("{}: write failed", out.display()))?;
    }
    std::io::Write::flush(&mut w.into_inner()).with_context(|| format!("{}: write failed", out.display()))?;
    eprintln!("wrote {} frames to {}", frames.len(), out.display());
    Ok(ExitCode::SUCCESS)
}
