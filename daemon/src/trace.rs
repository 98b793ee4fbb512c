//! Traceflow: what happens to the first packet of a connection, filter by filter.
//!
//! Like NSX Traceflow, a synthetic first packet (a TCP SYN, a UDP datagram, an ICMP echo request, or a
//! bare IP packet of another protocol) is built from the tuple and decided by a fresh engine holding
//! the policy: out of the sender's filter when the source is a vNIC, then in to the receiver's when the
//! destination is one. Each hop names the rule that decided (id, position, rule set, text). The live
//! daemon traces against the policy in force; connection state is not consulted (a first packet never
//! matches one), and nothing is sent anywhere.

use std::net::{IpAddr, Ipv4Addr};

use engine::{Decision, Engine, FilterConfig, FrameRef, Sink, Verdict};
use pktio::build::{self, Host, TcpSeg};
use pktio::{tcpflags, LinkType};
use rules::Policy;
use serde::{Deserialize, Serialize};

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpec {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp` or a protocol number.
    pub proto: String,
    /// Source port (TCP/UDP; default 49152).
    #[serde(default)]
    pub sport: Option<u16>,
    /// Destination port (TCP/UDP; default 80 for TCP, 53 for UDP).
    #[serde(default)]
    pub dport: Option<u16>,
}

/// The rule that decided at one hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceRule {
    /// Rule id.
    pub id: u32,
    /// Position (`at N`).
    pub position: u32,
    /// Rule set name.
    pub ruleset: String,
    /// The rule as `getrules` prints it.
    pub text: String,
}

/// One filter the packet crosses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// Filter name.
    pub filter: String,
    /// `out` (leaving the sender's vNIC) or `in` (entering the receiver's).
    pub dir: String,
    /// `pass`, `drop`, `reject` or `punt`.
    pub verdict: String,
    /// Why (`match`, `no-match`, `fail-closed`, ...).
    pub reason: String,
    /// The deciding rule, when one decided.
    pub rule: Option<TraceRule>,
}

/// The whole trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// The traced tuple, as text.
    pub packet: String,
    /// Filters crossed, in order.
    pub hops: Vec<Hop>,
    /// `pass`, `drop` or `reject`: what happens to the packet.
    pub verdict: String,
}

/// A trace that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The protocol is neither a known name nor a number.
    #[error("unknown protocol '{0}' (tcp, udp, icmp or a number 0-255)")]
    Protocol(String),
    /// IPv6 tuples are not built yet.
    #[error("only IPv4 tuples can be traced for now")]
    Ipv6,
    /// Ports on a protocol without ports.
    #[error("--sport/--dport apply to tcp and udp only")]
    Ports,
    /// The policy could not be loaded.
    #[error("policy cannot be loaded: {0}")]
    Load(#[from] engine::LoadError),
}

#[derive(Default)]
struct Record {
    hops: Vec<(Decision, String)>,
}

impl Sink for Record {
    fn decision(&mut self, d: &Decision, filter: &FilterConfig) {
        self.hops.push((*d, filter.name.clone()));
    }
}

/// The MAC of the vNIC holding `ip`, or a stand-in for an address outside the policy.
fn mac_of(policy: &Policy, ip: IpAddr, stand_in: u8) -> [u8; 6] {
    policy
        .filters
        .iter()
        .find(|f| f.vnic.ips.contains(&ip))
        .and_then(|f| f.vnic.mac)
        .map_or([0x02, 0, 0, 0, 0, stand_in], |m| m.0)
}

fn ipv4(ip: IpAddr) -> Result<Ipv4Addr, TraceError> {
    match ip {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(_) => Err(TraceError::Ipv6),
    }
}

/// A bare IPv4 packet of protocol `proto` with 8 zero bytes of payload, in an Ethernet frame.
fn raw_v4(src: &Host, dst: &Host, proto: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst.mac);
    f.extend_from_slice(&src.mac);
    f.extend_from_slice(&pktio::ethertype::IPV4.to_be_bytes());
    let mut h = vec![0x45, 0, 0, 28, 0, 1, 0, 0, 64, proto, 0, 0];
    h.extend_from_slice(&src.ip.octets());
    h.extend_from_slice(&dst.ip.octets());
    let c = build::checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&h);
    f.extend_from_slice(&[0; 8]);
    f.resize(f.len().max(60), 0);
    f
}

/// Parses a protocol name or number.
pub fn parse_proto(p: &str) -> Result<u8, TraceError> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        other => other.parse::<u8>().map_err(|_| TraceError::Protocol(p.to_string())),
    }
}

/// Traces `spec` through the filters of `policy`.
pub fn trace(policy: &Policy, spec: &TraceSpec) -> Result<Trace, TraceError> {
    let proto = parse_proto(&spec.proto)?;
    let has_ports = matches!(proto, 6 | 17);
    if !has_ports && (spec.sport.is_some() || spec.dport.is_some()) {
        return Err(TraceError::Ports);
    }
    let src = Host { mac: mac_of(policy, spec.src, 0xfe), ip: ipv4(spec.src)? };
    let dst = Host { mac: mac_of(policy, spec.dst, 0xff), ip: ipv4(spec.dst)? };
    let sport = spec.sport.unwrap_or(49152);
    let dport = spec.dport.unwrap_or(if proto == 6 { 80 } else { 53 });
    let (frame, packet) = match proto {
        6 => {
            let seg = TcpSeg {
                sport,
                dport,
                seq: 1,
                ack: 0,
                flags: tcpflags::SYN,
                window: 64240,
                mss: Some(1460),
                payload: &[],
            };
            (build::tcp_v4(&src, &dst, 1, &seg), format!("tcp {}:{sport} -> {}:{dport} SYN", src.ip, dst.ip))
        }
        17 => (
            build::udp_v4(&src, &dst, 1, sport, dport, &[0; 8]),
            format!("udp {}:{sport} -> {}:{dport}", src.ip, dst.ip),
        ),
        1 => (
            build::icmp_echo_v4(&src, &dst, 1, false, 1, 1),
            format!("icmp {} -> {} echo-request", src.ip, dst.ip),
        ),
        p => (raw_v4(&src, &dst, p), format!("proto {p} {} -> {}", src.ip, dst.ip)),
    };
    let mut engine = Engine::new(policy)?;
    // Malformed is impossible for frames built here; an error would only mean no filter is crossed.
    let Ok(pkt) = pktio::parse_frame(LinkType::Ethernet, &frame, frame.len() as u32) else {
        return Ok(Trace { packet, hops: Vec::new(), verdict: "pass".into() });
    };
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut rec = Record::default();
    engine.process(&pkt, FrameRef { number: 1, link: LinkType::Ethernet, bytes: &frame, now_ns }, &mut rec);
    let hops: Vec<Hop> = rec.hops.iter().map(|(d, name)| hop(policy, d, name)).collect();
    let verdict = if rec.hops.iter().any(|(d, _)| d.verdict == Verdict::Reject) {
        "reject"
    } else if rec.hops.iter().any(|(d, _)| d.verdict.is_drop()) {
        "drop"
    } else {
        "pass"
    };
    Ok(Trace { packet, hops, verdict: verdict.into() })
}

fn hop(policy: &Policy, d: &Decision, name: &str) -> Hop {
    let rule = d.rule.and_then(|r| {
        let spec = policy.filters.iter().find(|f| f.name == name)?;
        let set = policy.rulesets_for(spec).into_iter().find(|s| s.is_l2() == r.l2)?;
        let rule = set.rules.iter().find(|x| x.id == r.id)?;
        Some(TraceRule {
            id: rule.id,
            position: rule.position,
            ruleset: set.name.clone(),
            text: rule.to_string(),
        })
    });
    Hop {
        filter: name.to_string(),
        dir: d.dir.as_str().to_string(),
        verdict: d.verdict.as_str().to_string(),
        reason: d.reason.as_str().to_string(),
        rule,
    }
}

impl Trace {
    /// The trace as text, one hop a line.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut o = format!("trace {}\n", self.packet);
        if self.hops.is_empty() {
            o.push_str("  crosses no filter (neither address is a vNIC of the policy)\n");
        }
        for (i, h) in self.hops.iter().enumerate() {
            let _ = write!(o, "  {}. {} {:<3} {:<6} {}", i + 1, h.filter, h.dir, h.verdict, h.reason);
            match &h.rule {
                Some(r) => {
                    let _ =
                        writeln!(o, " by {}/{} at {}\n       {}", r.ruleset, r.id, r.position, r.text.trim());
                }
                None => o.push('\n'),
            }
        }
        let _ = writeln!(o, "verdict: {}", self.verdict);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../examples/seed-lab/v1-policy.dfw");

    fn spec(src: &str, dst: &str, proto: &str, dport: Option<u16>) -> TraceSpec {
        TraceSpec {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: proto.into(),
            sport: None,
            dport,
        }
    }

    #[test]
    fn seed_busybox_to_nginx_is_dropped_by_6269_in_the_nginx_filter() {
        let p = rules::parse_policy(SEED).unwrap();
        let t = trace(&p, &spec("172.15.0.2", "172.15.0.4", "tcp", Some(80))).unwrap();
        assert_eq!(t.verdict, "drop");
        assert_eq!(t.hops.len(), 2, "{t:?}");
        assert_eq!(
            (t.hops[0].filter.as_str(), t.hops[0].dir.as_str()),
            ("nic-5739119-eth35-vmware-sfw.1", "out")
        );
        assert_eq!(t.hops[0].verdict, "pass");
        let r = t.hops[1].rule.as_ref().unwrap();
        assert_eq!((t.hops[1].dir.as_str(), r.id, r.position, r.ruleset.as_str()), ("in", 6269, 2, "mainrs"));
        assert!(r.text.starts_with("rule 6269 at 2 in protocol any"), "{}", r.text);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["verdict"], "drop");
    }

    #[test]
    fn after_the_label_change_rule_6266_accepts() {
        let p = rules::parse_policy(include_str!("../../examples/seed-lab/v2-policy.dfw")).unwrap();
        let t = trace(&p, &spec("172.15.0.2", "172.15.0.4", "tcp", Some(80))).unwrap();
        assert_eq!(t.verdict, "pass");
        assert_eq!(t.hops[1].rule.as_ref().map(|r| r.id), Some(6266));
        assert!(t.text().contains("verdict: pass"));
    }

    #[test]
    fn reject_and_unknown_protocols() {
        let p = rules::parse_policy(
            "filter a { vnic ip 10.0.0.1; ruleset mainrs { rule 5 at 1 out protocol udp from any to any port 53 reject; } }",
        )
        .unwrap();
        let t = trace(&p, &spec("10.0.0.1", "10.0.0.2", "udp", None)).unwrap();
        assert_eq!(t.verdict, "reject");
        assert_eq!(t.hops.len(), 1);
        assert!(trace(&p, &spec("10.0.0.1", "10.0.0.2", "bogus", None)).is_err());
        assert!(trace(&p, &spec("10.0.0.1", "10.0.0.2", "icmp", Some(1))).is_err());
        assert!(trace(&p, &spec("::1", "::2", "tcp", None)).is_err());
        let t = trace(&p, &spec("10.0.0.9", "10.0.0.8", "47", None)).unwrap();
        assert!(t.hops.is_empty() && t.verdict == "pass");
    }
}
