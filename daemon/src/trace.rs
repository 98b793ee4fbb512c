//! Traceflow: what happens to the first packet of a connection, filter by filter.
//!
//! Like NSX Traceflow, a synthetic first packet (a TCP SYN, a UDP datagram, an ICMP or ICMPv6 echo
//! request, or a bare IPv4 / IPv6 packet of another protocol) is built from the tuple and decided by a fresh engine holding
//! the policy: out of the sender's filter when the source is a vNIC, then in to the receiver's when the
//! destination is one. Each hop names the rule that decided (id, position, rule set, text). The live
//! daemon traces against the policy in force; connection state is not consulted (a first packet never
//! matches one), and nothing is sent anywhere.

use std::net::{IpAddr, SocketAddr};

use engine::{Decision, Engine, FilterConfig, FrameRef, Sink, Verdict};
use pktio::build::{self, Host, Host6, TcpSeg};
use pktio::{ipproto, tcpflags, LinkType};
use rules::Policy;
use serde::{Deserialize, Serialize};

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpec {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp` (ICMPv6 for an IPv6 tuple), `ipv6-icmp`, another protocol name of the
    /// rules language, or a protocol number.
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
    #[error("unknown protocol '{0}' (tcp, udp, icmp, ipv6-icmp, sctp, gre, igmp or a number 0-255)")]
    Protocol(String),
    /// Source and destination are of different IP versions.
    #[error("source {src} and destination {dst} are not of the same IP version")]
    MixedFamily {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
    /// ICMPv6 named for an IPv4 tuple.
    #[error("protocol '{0}' is ICMPv6, which an IPv4 packet does not carry (use icmp)")]
    Icmpv6OverIpv4(String),
    /// An IPv6 extension-header number where an upper-layer protocol is expected.
    #[error(
        "next header {0} is an IPv6 extension header, not an upper-layer protocol: trace the protocol it carries"
    )]
    Ipv6Extension(u8),
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

/// Other spellings of ICMPv6 the rules language accepts beside its canonical `ipv6-icmp` (its own
/// alias list is private to the parser).
const ICMPV6_ALIASES: &[&str] = &["icmp6", "icmpv6", "ipv6icmp"];

/// Parses a protocol name (as the rules language spells it, case-insensitive) or number.
pub fn parse_proto(p: &str) -> Result<u8, TraceError> {
    let w = p.to_ascii_lowercase();
    if let Some((_, n)) = rules::PROTOCOL_NAMES.iter().find(|(name, _)| *name == w) {
        return Ok(*n);
    }
    if ICMPV6_ALIASES.contains(&w.as_str()) {
        return Ok(ipproto::ICMPV6);
    }
    w.parse::<u8>().map_err(|_| TraceError::Protocol(p.to_string()))
}

/// The protocol number `spec.proto` means for a tuple of this IP version: the name `icmp` is ICMPv6 for
/// IPv6, a name of ICMPv6 is an error for IPv4, and a number is taken as it is.
fn proto_for(spec: &TraceSpec, v6: bool) -> Result<u8, TraceError> {
    let n = parse_proto(&spec.proto)?;
    let named = spec.proto.parse::<u8>().is_err();
    match (n, v6) {
        (ipproto::ICMP, true) if named => Ok(ipproto::ICMPV6),
        (ipproto::ICMPV6, false) if named => Err(TraceError::Icmpv6OverIpv4(spec.proto.clone())),
        // The extension headers the parser walks (RFC 8200 §4): a bare one carries no upper layer.
        (0 | 43 | 44 | 51 | 60, true) => Err(TraceError::Ipv6Extension(n)),
        _ => Ok(n),
    }
}

/// The first packet of the connection and its description.
fn first_packet(policy: &Policy, spec: &TraceSpec, proto: u8) -> Result<(Vec<u8>, String), TraceError> {
    let smac = mac_of(policy, spec.src, 0xfe);
    let dmac = mac_of(policy, spec.dst, 0xff);
    let sport = spec.sport.unwrap_or(49152);
    let dport = spec.dport.unwrap_or(if proto == ipproto::TCP { 80 } else { 53 });
    let (s, d) = (SocketAddr::new(spec.src, sport), SocketAddr::new(spec.dst, dport));
    let syn = TcpSeg {
        sport,
        dport,
        seq: 1,
        ack: 0,
        flags: tcpflags::SYN,
        window: 64240,
        mss: Some(1460),
        payload: &[],
    };
    Ok(match (spec.src, spec.dst) {
        (IpAddr::V4(sip), IpAddr::V4(dip)) => {
            let (src, dst) = (Host { mac: smac, ip: sip }, Host { mac: dmac, ip: dip });
            match proto {
                ipproto::TCP => (build::tcp_v4(&src, &dst, 1, &syn), format!("tcp {s} -> {d} SYN")),
                ipproto::UDP => {
                    (build::udp_v4(&src, &dst, 1, sport, dport, &[0; 8]), format!("udp {s} -> {d}"))
                }
                ipproto::ICMP => (
                    build::icmp_echo_v4(&src, &dst, 1, false, 1, 1),
                    format!("icmp {sip} -> {dip} echo-request"),
                ),
                p => (build::raw_v4(&src, &dst, 1, p, &[0; 8]), format!("proto {p} {sip} -> {dip}")),
            }
        }
        (IpAddr::V6(sip), IpAddr::V6(dip)) => {
            let (src, dst) = (Host6 { mac: smac, ip: sip }, Host6 { mac: dmac, ip: dip });
            match proto {
                ipproto::TCP => (build::tcp_v6(&src, &dst, &syn), format!("tcp {s} -> {d} SYN")),
                ipproto::UDP => (build::udp_v6(&src, &dst, sport, dport, &[0; 8]), format!("udp {s} -> {d}")),
                ipproto::ICMPV6 => (
                    build::icmpv6_echo(&src, &dst, false, 1, 1),
                    format!("ipv6-icmp {sip} -> {dip} echo-request"),
                ),
                p => (build::raw_v6(&src, &dst, p, &[0; 8]), format!("proto {p} {sip} -> {dip}")),
            }
        }
        (src, dst) => return Err(TraceError::MixedFamily { src, dst }),
    })
}

/// Traces `spec` through the filters of `policy`.
pub fn trace(policy: &Policy, spec: &TraceSpec) -> Result<Trace, TraceError> {
    if spec.src.is_ipv6() != spec.dst.is_ipv6() {
        return Err(TraceError::MixedFamily { src: spec.src, dst: spec.dst });
    }
    let proto = proto_for(spec, spec.src.is_ipv6())?;
    let has_ports = matches!(proto, ipproto::TCP | ipproto::UDP);
    if !has_ports && (spec.sport.is_some() || spec.dport.is_some()) {
        return Err(TraceError::Ports);
    }
    let (frame, packet) = first_packet(policy, spec, proto)?;
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
        assert!(matches!(
            trace(&p, &spec("10.0.0.1", "::2", "tcp", None)),
            Err(TraceError::MixedFamily { .. })
        ));
        let t = trace(&p, &spec("10.0.0.9", "10.0.0.8", "47", None)).unwrap();
        assert!(t.hops.is_empty() && t.verdict == "pass");
    }

    /// Two IPv6 vNICs (the client also has an IPv4 address), IPv6 address sets, `inet6` rules, and an
    /// `inet` rule that only IPv4 meets.
    const V6: &str = "
addrset web6 { ip 2001:db8:1::10, ip 2001:db8:1::11, }
addrset clients6 { ip 2001:db8:2::/64, }
ruleset mainrs {
  rule 100 at 1 in inet6 protocol tcp from addrset clients6 to addrset web6 port 443 accept;
  rule 101 at 2 in inet6 protocol ipv6-icmp icmptype 128 from any to addrset web6 accept;
  rule 102 at 3 in inet6 protocol udp from any to addrset web6 port 53 reject;
  rule 103 at 4 out inet6 protocol any from any to any accept;
  rule 104 at 5 out inet protocol any from any to any drop;
  rule 2 at 6 inout protocol any from any to any drop;
}
filter web { vnic mac 02:00:00:00:00:10 ip 2001:db8:1::10; }
filter client { vnic mac 02:00:00:00:00:20 ip 2001:db8:2::5 ip 10.0.0.5; }
";

    /// (filter, dir, verdict, rule id) of each hop.
    fn hops(t: &Trace) -> Vec<(&str, &str, &str, Option<u32>)> {
        t.hops
            .iter()
            .map(|h| (h.filter.as_str(), h.dir.as_str(), h.verdict.as_str(), h.rule.as_ref().map(|r| r.id)))
            .collect()
    }

    #[test]
    fn ipv6_tcp_syn_passes_by_the_inet6_rule_and_its_address_sets() {
        let p = rules::parse_policy(V6).unwrap();
        let t = trace(&p, &spec("2001:db8:2::5", "2001:db8:1::10", "tcp", Some(443))).unwrap();
        assert_eq!(t.packet, "tcp [2001:db8:2::5]:49152 -> [2001:db8:1::10]:443 SYN");
        assert_eq!(hops(&t), [("client", "out", "pass", Some(103)), ("web", "in", "pass", Some(100))]);
        assert_eq!(t.verdict, "pass");
        let r = t.hops[1].rule.as_ref().unwrap();
        assert_eq!((r.position, r.ruleset.as_str()), (1, "mainrs"));
        assert!(r.text.contains("in inet6 protocol tcp from addrset clients6"), "{}", r.text);
        // Another port, or a source outside clients6 (and no vNIC: no out hop), falls to rule 2.
        let t = trace(&p, &spec("2001:db8:2::5", "2001:db8:1::10", "tcp", Some(80))).unwrap();
        assert_eq!(hops(&t), [("client", "out", "pass", Some(103)), ("web", "in", "drop", Some(2))]);
        assert_eq!(t.verdict, "drop");
        let t = trace(&p, &spec("2001:db8:3::1", "2001:db8:1::10", "tcp", Some(443))).unwrap();
        assert_eq!(hops(&t), [("web", "in", "drop", Some(2))]);
        assert!(t.text().ends_with("verdict: drop\n"), "{}", t.text());
    }

    #[test]
    fn icmp_means_icmpv6_echo_for_an_ipv6_tuple_in_every_spelling() {
        let p = rules::parse_policy(V6).unwrap();
        for proto in ["icmp", "ICMP", "ipv6-icmp", "icmpv6", "icmp6", "ipv6icmp", "58"] {
            let t = trace(&p, &spec("2001:db8:3::1", "2001:db8:1::10", proto, None)).unwrap();
            assert_eq!(t.packet, "ipv6-icmp 2001:db8:3::1 -> 2001:db8:1::10 echo-request", "{proto}");
            assert_eq!(hops(&t), [("web", "in", "pass", Some(101))], "{proto}");
        }
        // Protocol number 1 is taken as written: ICMP (for IPv4) inside IPv6 is no echo request here.
        let t = trace(&p, &spec("2001:db8:3::1", "2001:db8:1::10", "1", None)).unwrap();
        assert_eq!((t.packet.as_str(), hops(&t)[0].3), ("proto 1 2001:db8:3::1 -> 2001:db8:1::10", Some(2)));
    }

    #[test]
    fn ipv6_udp_is_rejected_and_a_bare_packet_falls_through() {
        let p = rules::parse_policy(V6).unwrap();
        let t = trace(&p, &spec("2001:db8:2::5", "2001:db8:1::10", "udp", None)).unwrap();
        assert_eq!(t.packet, "udp [2001:db8:2::5]:49152 -> [2001:db8:1::10]:53");
        assert_eq!(hops(&t), [("client", "out", "pass", Some(103)), ("web", "in", "reject", Some(102))]);
        assert_eq!(t.verdict, "reject");
        let t = trace(&p, &spec("2001:db8:2::5", "2001:db8:1::10", "gre", None)).unwrap();
        assert_eq!(t.packet, "proto 47 2001:db8:2::5 -> 2001:db8:1::10");
        assert_eq!(hops(&t), [("client", "out", "pass", Some(103)), ("web", "in", "drop", Some(2))]);
    }

    #[test]
    fn the_same_vnic_over_ipv4_meets_the_inet_rule_not_the_inet6_one() {
        let p = rules::parse_policy(V6).unwrap();
        let t = trace(&p, &spec("10.0.0.5", "10.0.0.9", "tcp", Some(443))).unwrap();
        assert_eq!(hops(&t), [("client", "out", "drop", Some(104))]);
        let t = trace(&p, &spec("2001:db8:2::5", "2001:db8:9::9", "tcp", Some(443))).unwrap();
        assert_eq!(hops(&t), [("client", "out", "pass", Some(103))]);
    }

    #[test]
    fn an_l2_set_decides_ipv6_by_its_ethertype() {
        let l2 = |ethertype: &str| {
            let text = format!(
                "{V6}ruleset mainrs_L2 {{ rule 1 at 1 inout ethertype {ethertype} from any to any accept; }}"
            );
            rules::parse_policy(&text).unwrap()
        };
        // Only IPv4 admitted at L2: the IPv6 SYN leaves the client by no rule.
        let t = trace(&l2("ipv4"), &spec("2001:db8:2::5", "2001:db8:1::10", "tcp", Some(443))).unwrap();
        assert_eq!(hops(&t), [("client", "out", "drop", None)]);
        assert_eq!(t.hops[0].reason, "no-match");
        // IPv6 admitted at L2: the L3 rules decide as before.
        let t = trace(&l2("ipv6"), &spec("2001:db8:2::5", "2001:db8:1::10", "tcp", Some(443))).unwrap();
        assert_eq!(hops(&t), [("client", "out", "pass", Some(103)), ("web", "in", "pass", Some(100))]);
    }

    #[test]
    fn bad_ipv6_tuples_get_a_clear_error() {
        let p = rules::parse_policy(V6).unwrap();
        let err = |s, d, proto, dport| trace(&p, &spec(s, d, proto, dport)).unwrap_err().to_string();
        assert_eq!(
            err("10.0.0.5", "2001:db8:1::10", "tcp", None),
            "source 10.0.0.5 and destination 2001:db8:1::10 are not of the same IP version"
        );
        assert!(err("2001:db8:1::10", "10.0.0.5", "udp", None).contains("not of the same IP version"));
        assert!(err("10.0.0.5", "10.0.0.9", "ipv6-icmp", None).contains("ICMPv6, which an IPv4 packet"));
        assert!(err("10.0.0.5", "10.0.0.9", "icmpv6", None).contains("(use icmp)"));
        for ext in ["0", "43", "44", "51", "60"] {
            assert!(err("2001:db8:2::5", "2001:db8:1::10", ext, None).contains("extension header"), "{ext}");
        }
        assert_eq!(err("2001:db8:2::5", "2001:db8:1::10", "icmp", Some(7)), TraceError::Ports.to_string());
        assert!(err("2001:db8:2::5", "2001:db8:1::10", "icmp7", None).starts_with("unknown protocol 'icmp7'"));
    }
}
