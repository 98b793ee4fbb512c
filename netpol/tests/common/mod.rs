//! The upstream network-policy e2e model (namespaces x, y, z; pods a, b, c in each; every pod serving
//! ports 80 and 81 over TCP, UDP and SCTP under the names `serve-<port>-<proto>`), a lab that compiles
//! manifests with `netpol` and decides first packets with the real engine, and truth tables.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use engine::{Engine, FrameOutcome, FrameRef, NullSink};
use pktio::build::{checksum, tcp_v4, udp_v4, Host, TcpSeg};
use pktio::packet::tcpflags::SYN;
use pktio::{parse_frame, LinkType};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_NAMES: [&str; 3] = ["a", "b", "c"];

/// The protocol of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P {
    Tcp,
    Udp,
    Sctp,
}

/// All nine pods, `ns/pod`.
pub fn pods() -> Vec<String> {
    NAMESPACES.iter().flat_map(|n| POD_NAMES.iter().map(move |p| format!("{n}/{p}"))).collect()
}

/// Pod `ns/pod`'s address: 10.<ns>.0.<pod>.
pub fn ip_of(pod: &str) -> Ipv4Addr {
    let (ns, p) = pod.split_once('/').unwrap();
    let n = NAMESPACES.iter().position(|x| *x == ns).unwrap() as u8 + 1;
    let i = POD_NAMES.iter().position(|x| *x == p).unwrap() as u8 + 1;
    Ipv4Addr::new(10, n, 0, i)
}

/// The namespaces and pods of the model; `ns_labels` adds labels to a namespace.
pub fn world(ns_labels: &[(&str, &str, &str)], pod_labels: &[(&str, &str, &str)]) -> String {
    let mut y = String::new();
    for ns in NAMESPACES {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    ns: {ns}\n"
        );
        for (_, k, v) in ns_labels.iter().filter(|(n, _, _)| *n == ns) {
            let _ = writeln!(y, "    {k}: {v}");
        }
    }
    for pod in pods() {
        let (ns, p) = pod.split_once('/').unwrap();
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {p}\n  namespace: {ns}\n  labels:\n    pod: {p}\n"
        );
        for (_, k, v) in pod_labels.iter().filter(|(q, _, _)| *q == pod) {
            let _ = writeln!(y, "    {k}: {v}");
        }
        let _ = write!(y, "spec:\n  nodeName: node-{ns}\n  containers:\n");
        for port in [80, 81] {
            for proto in ["TCP", "UDP", "SCTP"] {
                let lower = proto.to_lowercase();
                let _ = write!(
                    y,
                    "  - name: cont-{port}-{lower}\n    image: agnhost\n    ports:\n    - name: serve-{port}-{lower}\n      containerPort: {port}\n      protocol: {proto}\n"
                );
            }
        }
        let _ = write!(y, "status:\n  phase: Running\n  podIP: {}\n", ip_of(&pod));
    }
    y
}

/// A NetworkPolicy manifest; `spec` is the YAML of its spec, indented by two spaces.
pub fn np(ns: &str, name: &str, spec: &str) -> String {
    format!("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}")
}

pub fn cluster(manifests: &str) -> netpol::Cluster {
    let mut c = netpol::Cluster::new();
    c.load_str("case.yaml", manifests).unwrap_or_else(|e| panic!("{e}"));
    c
}

/// An engine enforcing a compiled cluster, probed with first packets.
pub struct Lab {
    pub engine: Engine,
    pub policy: rules::Policy,
    frame: u64,
    sport: u16,
}

pub fn host(pod: &str) -> Host {
    let ip = ip_of(pod);
    Host { mac: netpol::pod_mac(ip.into()).0, ip }
}

/// An Ethernet/IPv4/SCTP frame carrying an INIT chunk.
pub fn sctp_init(src: &Host, dst: &Host, sport: u16, dport: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // verification tag 0 (INIT), checksum not checked
    s.extend_from_slice(&[1, 0, 0, 20, 0, 0, 0, 1, 0, 1, 0, 0, 0, 10, 0, 10, 0, 0, 0, 1]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 132, 0, 0];
    ip[2..4].copy_from_slice(&((20 + s.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.ip.octets());
    ip.extend_from_slice(&dst.ip.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&s);
    let mut f = Vec::new();
    f.extend_from_slice(&dst.mac);
    f.extend_from_slice(&src.mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f.resize(f.len().max(60), 0);
    f
}

impl Lab {
    /// Compiles `manifests` for cluster `k8s` and loads the result (through its text, as `dfw replay`
    /// would read the file).
    pub fn new(manifests: &str) -> Lab {
        let policy = netpol::compile(&cluster(manifests), "k8s").unwrap();
        Lab::with_policy(policy)
    }

    pub fn with_policy(policy: rules::Policy) -> Lab {
        let text = policy.to_string();
        let reread =
            rules::parse_policy(&text).unwrap_or_else(|d| panic!("{}\n{text}", d.one_line("compiled")));
        let engine = Engine::new(&reread).unwrap();
        Lab { engine, policy: reread, frame: 0, sport: 30000 }
    }

    /// Whether a first packet from `from` to `to` on `port`/`proto` crosses both filters.
    pub fn allowed(&mut self, from: &str, to: &str, port: u16, proto: P) -> bool {
        self.sport += 1;
        self.frame += 1;
        let (s, d) = (host(from), host(to));
        let bytes = match proto {
            P::Tcp => tcp_v4(
                &s,
                &d,
                1,
                &TcpSeg {
                    sport: self.sport,
                    dport: port,
                    seq: 1,
                    ack: 0,
                    flags: SYN,
                    window: 65535,
                    mss: None,
                    payload: b"",
                },
            ),
            P::Udp => udp_v4(&s, &d, 1, self.sport, port, b"probe"),
            P::Sctp => sctp_init(&s, &d, self.sport, port),
        };
        let pkt = parse_frame(LinkType::Ethernet, &bytes, bytes.len() as u32).unwrap();
        let f = FrameRef {
            number: self.frame,
            link: LinkType::Ethernet,
            bytes: &bytes,
            now_ns: self.frame * 1_000_000,
        };
        match self.engine.process(&pkt, f, &mut NullSink) {
            FrameOutcome::Passed => true,
            FrameOutcome::Dropped => false,
            other => panic!("{from} -> {to}: unexpected outcome {other:?}"),
        }
    }
}

fn matches(pattern: &str, pod: &str) -> bool {
    let (pn, pp) = pattern.split_once('/').unwrap();
    let (n, p) = pod.split_once('/').unwrap();
    (pn == "*" || pn == n) && (pp == "*" || pp == p)
}

/// Expected reachability between every ordered pair of pods (upstream's `Reachability`).
#[derive(Clone)]
pub struct Reach(BTreeMap<(String, String), bool>);

impl Reach {
    pub fn all(v: bool) -> Reach {
        let mut m = BTreeMap::new();
        for a in pods() {
            for b in pods() {
                m.insert((a.clone(), b), v);
            }
        }
        Reach(m)
    }

    /// Sets every pair whose source matches `from` and destination matches `to` (`ns/pod`, `*` for any
    /// part): upstream's `Expect`, `ExpectPeer`, `ExpectAllIngress` (`*/*` → pod) and `ExpectAllEgress`.
    pub fn set(mut self, from: &str, to: &str, v: bool) -> Reach {
        for ((a, b), e) in self.0.iter_mut() {
            if matches(from, a) && matches(to, b) {
                *e = v;
            }
        }
        self
    }
}

/// Probes every pair but loopback (which upstream ignores) and fails with both tables on a mismatch.
pub fn check(lab: &mut Lab, case: &str, port: u16, proto: P, want: &Reach) {
    let mut wrong = Vec::new();
    let mut table = format!("{case} ({proto:?} {port}): expected/actual, row = source\n      ");
    for b in pods() {
        let _ = write!(table, "{b:>5}");
    }
    table.push('\n');
    for a in pods() {
        let _ = write!(table, "{a:>6} ");
        for b in pods() {
            if a == b {
                table.push_str("    - ");
                continue;
            }
            let got = lab.allowed(&a, &b, port, proto);
            let exp = want.0[&(a.clone(), b.clone())];
            let _ = write!(
                table,
                "  {}{}{}",
                if exp { 'y' } else { '.' },
                if got { 'y' } else { '.' },
                if exp == got { ' ' } else { '!' }
            );
            if got != exp {
                wrong.push(format!("{a} -> {b}"));
            }
        }
        table.push('\n');
    }
    assert!(wrong.is_empty(), "{table}mismatches: {wrong:?}");
}

/// The engine changes that put `diff` in force: member changes when that is all it is, else the whole
/// new policy — one transaction either way (what `dfw netpol apply` sends).
pub fn to_changes(diff: &netpol::Diff, new: &rules::Policy) -> Vec<engine::Change> {
    if !diff.is_members_only() {
        return vec![engine::Change::Policy(new.clone())];
    }
    let mut out = Vec::new();
    for (set, d) in &diff.members {
        if !d.removed.is_empty() {
            out.push(engine::Change::AddrSetDel { set: set.clone(), entries: d.removed.clone() });
        }
        if !d.added.is_empty() {
            out.push(engine::Change::AddrSetAdd { set: set.clone(), entries: d.added.clone() });
        }
    }
    out
}
