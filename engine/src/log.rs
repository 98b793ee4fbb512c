//! Packet log records for rules `with log`, in the `dfwpktlogs.log` line format of NSX hosts:
//!
//! ```text
//! 2018-07-03T19:44:09.749Z b6507827 INET match PASS mainrs/1024 IN 52 TCP 192.168.4.3/49627->192.168.4.4/49153 S
//! 2018-07-03T19:44:12.101Z b6507827 INET TERM mainrs/1024 IN TCP FIN 192.168.4.3/49627->192.168.4.4/49153 6/5 412/1320
//! ```
//!
//! Fields: time, filter hash, address family, reason, action, ruleset/rule, direction, IP length,
//! protocol, source/port->destination/port, TCP flags (pf's letters FSRPAUEW). A `TERM` line follows
//! when a logged connection ends, with the cause (`RST`, `FIN`, `TIMEOUT`, `REVALIDATE`, `FLUSH`) and
//! packets and bytes initiator→responder / responder→initiator.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use pktio::packet::{ipproto, L4};
use pktio::Packet;
use rules::Direction;

use crate::verdict::{Reason, Verdict};

/// Why a logged connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermCause {
    /// TCP reset.
    Rst,
    /// TCP FIN handshake.
    Fin,
    /// Timer ran out.
    Timeout,
    /// Torn down by a policy change.
    Revalidate,
    /// Removed by an operator (`flows flush`) or at shutdown.
    Flush,
}

impl TermCause {
    /// The word in the TERM line.
    pub fn as_str(self) -> &'static str {
        match self {
            TermCause::Rst => "RST",
            TermCause::Fin => "FIN",
            TermCause::Timeout => "TIMEOUT",
            TermCause::Revalidate => "REVALIDATE",
            TermCause::Flush => "FLUSH",
        }
    }
}

/// The flow fields of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogFlow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Ports (TCP/UDP/SCTP) or none.
    pub ports: Option<(u16, u16)>,
    /// IP protocol.
    pub proto: u8,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogRecord {
    /// A logged rule matched a packet.
    Packet {
        /// Packet-clock time, ns since the UNIX epoch.
        ts_ns: u64,
        /// Filter hash.
        filter_hash: u32,
        /// Reason.
        reason: Reason,
        /// Action.
        verdict: Verdict,
        /// Rule set name.
        ruleset: String,
        /// Rule id.
        rule: u32,
        /// Direction.
        dir: Direction,
        /// IP length.
        len: u16,
        /// Flow.
        flow: LogFlow,
        /// TCP flags, if TCP.
        tcp_flags: Option<u8>,
    },
    /// A logged connection ended.
    Term {
        /// Packet-clock time, ns since the UNIX epoch.
        ts_ns: u64,
        /// Filter hash.
        filter_hash: u32,
        /// Rule set name.
        ruleset: String,
        /// Rule id.
        rule: u32,
        /// The flow as the initiator opened it.
        flow: LogFlow,
        /// Why it ended.
        cause: TermCause,
        /// Packets initiator→responder, responder→initiator.
        packets: [u32; 2],
        /// Bytes initiator→responder, responder→initiator.
        bytes: [u64; 2],
    },
}

impl LogFlow {
    /// The flow of a packet (IP packets only).
    pub fn of(pkt: &Packet) -> Option<LogFlow> {
        let ip = pkt.ip?;
        Some(LogFlow { src: ip.src, dst: ip.dst, ports: pkt.ports(), proto: ip.proto })
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "INET"
    } else {
        "INET6"
    }
}

fn proto_name(p: u8) -> String {
    match p {
        ipproto::TCP => "TCP".into(),
        ipproto::UDP => "UDP".into(),
        ipproto::ICMP => "ICMP".into(),
        ipproto::ICMPV6 => "ICMPV6".into(),
        ipproto::SCTP => "SCTP".into(),
        ipproto::GRE => "GRE".into(),
        ipproto::IGMP => "IGMP".into(),
        n => format!("PROTO_{n}"),
    }
}

/// pf's TCP flag letters, in pf's order.
pub fn tcp_flag_letters(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (0x01, 'F'),
        (0x02, 'S'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
    ];
    LETTERS.iter().filter(|(b, _)| flags & b != 0).map(|(_, c)| *c).collect()
}

fn time(ts_ns: u64) -> impl fmt::Display {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ts_ns))
}

impl fmt::Display for LogFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ports {
            Some((sp, dp)) => write!(f, "{}/{}->{}/{}", self.src, sp, self.dst, dp),
            None => write!(f, "{}->{}", self.src, self.dst),
        }
    }
}

impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogRecord::Packet {
                ts_ns,
                filter_hash,
                reason,
                verdict,
                ruleset,
                rule,
                dir,
                len,
                flow,
                tcp_flags,
            } => {
                let mut line = format!(
                    "{} {:08x} {} {} {} {}/{} {} {} {} {}",
                    time(*ts_ns),
                    filter_hash,
                    family(flow.src),
                    reason.as_str(),
                    verdict.as_str().to_ascii_uppercase(),
                    ruleset,
                    rule,
                    dir.as_str().to_ascii_uppercase(),
                    len,
                    proto_name(flow.proto),
                    flow
                );
                if let Some(fl) = tcp_flags {
                    let _ = write!(line, " {}", tcp_flag_letters(*fl));
                }
                f.write_str(&line)
            }
            LogRecord::Term { ts_ns, filter_hash, ruleset, rule, flow, cause, packets, bytes } => write!(
                f,
                "{} {:08x} {} TERM {}/{} {} {} {} {}/{} {}/{}",
                time(*ts_ns),
                filter_hash,
                family(flow.src),
                ruleset,
                rule,
                proto_name(flow.proto),
                cause.as_str(),
                flow,
                packets[0],
                packets[1],
                bytes[0],
                bytes[1]
            ),
        }
    }
}

/// The TCP flags of a packet, if it is TCP.
pub fn tcp_flags(pkt: &Packet) -> Option<u8> {
    match pkt.l4 {
        L4::Tcp(t) => Some(t.flags),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_nsx_dfwpktlogs() {
        let flow = LogFlow {
            src: "192.168.4.3".parse().unwrap(),
            dst: "192.168.4.4".parse().unwrap(),
            ports: Some((49627, 49153)),
            proto: 6,
        };
        let ts = 1_530_647_049_749_000_000;
        let p = LogRecord::Packet {
            ts_ns: ts,
            filter_hash: 0xb650_7827,
            reason: Reason::Match,
            verdict: Verdict::Pass,
            ruleset: "mainrs".into(),
            rule: 1024,
            dir: Direction::In,
            len: 52,
            flow,
            tcp_flags: Some(0x02 | 0x40 | 0x80),
        };
        assert_eq!(
            p.to_string(),
            "2018-07-03T19:44:09.749Z b6507827 INET match PASS mainrs/1024 IN 52 TCP 192.168.4.3/49627->192.168.4.4/49153 SEW"
        );
        let t = LogRecord::Term {
            ts_ns: ts,
            filter_hash: 0xb650_7827,
            ruleset: "mainrs".into(),
            rule: 1024,
            flow,
            cause: TermCause::Fin,
            packets: [6, 5],
            bytes: [412, 1320],
        };
        assert_eq!(
            t.to_string(),
            "2018-07-03T19:44:09.749Z b6507827 INET TERM mainrs/1024 TCP FIN 192.168.4.3/49627->192.168.4.4/49153 6/5 412/1320"
        );
    }
}
