//! The seed article's story end to end: `access-nginx` compiled from manifests, the client pod relabelled
//! `app=foo` then `app=bar`, each relabel a diff of address-set members only, committed to the engine as
//! one transaction, and an actual connection flipping from denied to allowed and back. Addresses are
//! those of the live tests' namespaces (10.200.2.0/24), for the daemon half of this test (issue 7).

mod common;

use engine::{Change, Engine, FrameOutcome, FrameRef, NullSink};
use pktio::build::{tcp_v4, Host, TcpSeg};
use pktio::packet::tcpflags::{ACK, SYN};
use pktio::{parse_frame, LinkType};
use rules::{AddrEntry, IpNet};

const CLUSTER: &str = "k8scluster";

fn manifests(busybox_app: &str) -> String {
    let pod = |name: &str, app: &str, ip: &str, node: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {app}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: nginx:1.15.7-alpine\n    ports: [{{containerPort: 80}}]\nstatus:\n  podIP: {ip}\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default}}\n{}{}{}---\nkind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata:\n  name: access-nginx\nspec:\n  podSelector:\n    matchLabels:\n      app: nginx\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: foo\n",
        pod("busybox-68f48b9c57-bt5fg", busybox_app, "10.200.2.1", "node02"),
        pod("nginx-deployment-797d64cb5f-lrhc6", "nginx", "10.200.2.2", "node02"),
        pod("nginx-deployment-797d64cb5f-6m4xl", "nginx", "10.200.2.3", "node01"),
    )
}

fn host(ip: &str) -> Host {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    Host { mac: netpol::pod_mac(ip.into()).0, ip }
}

struct Wire {
    engine: Engine,
    frame: u64,
}

impl Wire {
    /// Sends one TCP segment `(sport, dport, seq, ack, flags)`.
    fn send(
        &mut self,
        from: &Host,
        to: &Host,
        (sport, dport, seq, ack, flags): (u16, u16, u32, u32, u8),
    ) -> FrameOutcome {
        self.frame += 1;
        let seg = TcpSeg { sport, dport, seq, ack, flags, window: 65535, mss: None, payload: b"" };
        let bytes = tcp_v4(from, to, 1, &seg);
        let pkt = parse_frame(LinkType::Ethernet, &bytes, bytes.len() as u32).unwrap();
        let f = FrameRef {
            number: self.frame,
            link: LinkType::Ethernet,
            bytes: &bytes,
            now_ns: self.frame * 1_000_000,
        };
        self.engine.process(&pkt, f, &mut NullSink)
    }
}

fn ip(s: &str) -> AddrEntry {
    AddrEntry::Ip(IpNet::host(s.parse().unwrap()))
}

#[test]
fn seed_names_rules_and_sets() {
    let policy = netpol::compile(&common::cluster(&manifests("busybox")), CLUSTER).unwrap();
    // The compiled text reads back to the same model (what `dfw replay` / `dfw ctl load` read).
    let reread = rules::parse_policy(&policy.to_string()).unwrap();
    assert!(reread == policy, "text round trip:\n{policy}");
    let names: Vec<&str> = policy.filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nic-node02-default-busybox-68f48b9c57-bt5fg",
            "nic-node01-default-nginx-deployment-797d64cb5f-6m4xl",
            "nic-node02-default-nginx-deployment-797d64cb5f-lrhc6"
        ]
    );
    let set = |id: &str| policy.addrsets.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no set {id}"));
    assert_eq!(set("tgt-k8scluster-default-access-nginx").entries, [ip("10.200.2.2"), ip("10.200.2.3")]);
    assert!(set("src-k8scluster-default-access-nginx-all").entries.is_empty());
    // The seed's rules, in the seed's order, on every pod of the namespace.
    for f in &policy.filters {
        let rs = &f.rulesets[0];
        let text: Vec<String> = rs.rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(text[0].contains("in protocol any from addrset src-k8scluster-default-access-nginx-all to addrset tgt-k8scluster-default-access-nginx accept tag 'ir-k8scluster-default-access-nginx-all'"), "{}", text[0]);
        assert!(text[1].contains("in protocol any from any to addrset tgt-k8scluster-default-access-nginx drop tag 'ir-k8scluster-default-access-nginx'"), "{}", text[1]);
        assert!(text[2].starts_with("rule 2 at 3 inout protocol any from any to any accept"), "{}", text[2]);
    }
    assert_eq!(
        policy.rulesets[0].to_string().lines().nth(1).map(str::trim),
        Some("rule 1 at 1 inout ethertype any stateless from any to any accept;")
    );
}

#[test]
fn relabel_is_a_member_diff_that_flips_a_live_connection() {
    let mut compiled = netpol::Compiled::new(&common::cluster(&manifests("busybox")), CLUSTER).unwrap();
    let v1 = compiled.policy();
    let mut wire = Wire { engine: Engine::new(&v1).unwrap(), frame: 0 };
    let (busybox, nginx) = (host("10.200.2.1"), host("10.200.2.2"));
    assert_eq!(wire.send(&busybox, &nginx, (40000, 80, 100, 0, SYN)), FrameOutcome::Dropped);

    // kubectl label pod busybox-... --overwrite app=foo
    let foo = netpol::Labels::from([("app".to_string(), "foo".to_string())]);
    let d = compiled.relabel_pod("default", "busybox-68f48b9c57-bt5fg", foo).unwrap();
    assert!(d.is_members_only(), "{d}");
    assert_eq!(d.to_string(), "addrset src-k8scluster-default-access-nginx-all +ip 10.200.2.1\n");
    let v2 = netpol::compile(&common::cluster(&manifests("foo")), CLUSTER).unwrap();
    assert_eq!(netpol::diff(&v1, &v2), d, "the incremental diff is the recompile's diff");
    let changes = common::to_changes(&d, &v2);
    assert_eq!(
        changes,
        [Change::AddrSetAdd {
            set: "src-k8scluster-default-access-nginx-all".into(),
            entries: vec![ip("10.200.2.1")]
        }]
    );
    wire.engine.commit(&changes, 0).unwrap();
    assert!(netpol::diff(wire.engine.policy(), &v2).is_empty(), "the engine now holds the recompiled policy");
    assert_eq!(wire.send(&busybox, &nginx, (40001, 80, 100, 0, SYN)), FrameOutcome::Passed);
    assert_eq!(wire.send(&nginx, &busybox, (80, 40001, 500, 101, SYN | ACK)), FrameOutcome::Passed);
    assert_eq!(wire.send(&busybox, &nginx, (40001, 80, 101, 501, ACK)), FrameOutcome::Passed);
    let slot =
        wire.engine.snapshot().filter("nic-node02-default-nginx-deployment-797d64cb5f-lrhc6").unwrap().1.slot;
    assert_eq!(wire.engine.worker_ref().connections(slot), 1);

    // kubectl label pod busybox-... --overwrite app=bar: the set empties and the connection is cut.
    let bar = netpol::Labels::from([("app".to_string(), "bar".to_string())]);
    let d = compiled.relabel_pod("default", "busybox-68f48b9c57-bt5fg", bar).unwrap();
    assert_eq!(d.to_string(), "addrset src-k8scluster-default-access-nginx-all -ip 10.200.2.1\n");
    let v3 = netpol::compile(&common::cluster(&manifests("bar")), CLUSTER).unwrap();
    wire.engine.commit(&common::to_changes(&d, &v3), 0).unwrap();
    assert!(netpol::diff(wire.engine.policy(), &v3).is_empty());
    assert_eq!(wire.send(&busybox, &nginx, (40001, 80, 101, 501, ACK)), FrameOutcome::Dropped);
    assert_eq!(wire.send(&busybox, &nginx, (40002, 80, 100, 0, SYN)), FrameOutcome::Dropped);
}

/// The seed lab's capture (`examples/seed-lab/seed-lab.pcap`) replayed through policies compiled from
/// the lab's manifests (pods annotated with the capture's vNIC MACs): the 09:25 and 09:36 SYNs are
/// dropped by the isolation rule, the 09:31 connection is accepted by the allow rule — the article's
/// outcome, with rules and sets named as NCP names them.
#[test]
fn seed_capture_replays_through_compiled_policies() {
    use engine::replay::{replay, Event, Switch, SwitchPoint};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
    let policy = read("seed-lab/access-nginx.yaml");
    let v1 =
        netpol::compile(&common::cluster(&format!("{}---\n{policy}", read("seed-lab/pods.yaml"))), CLUSTER)
            .unwrap();
    let foo = read("relabelled-pods.yaml");
    let v2 = netpol::compile(&common::cluster(&format!("{foo}---\n{policy}")), CLUSTER).unwrap();
    let v3 = netpol::compile(
        &common::cluster(&format!("{}---\n{policy}", foo.replace("app: foo", "app: bar"))),
        CLUSTER,
    )
    .unwrap();
    assert!(netpol::diff(&v1, &v2).is_members_only() && netpol::diff(&v2, &v3).is_members_only());
    let at = |t: &str| SwitchPoint::Time(humantime_ns(t));
    let switches = [
        Switch { at: at("2018-12-17T09:30:34"), policy: v2, label: "app=foo".into() },
        Switch { at: at("2018-12-17T09:35:00"), policy: v3, label: "app=bar".into() },
    ];
    let cap = pktio::capture::Capture::open(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/seed-lab/seed-lab.pcap"
    )))
    .unwrap();
    let mut engine = Engine::new(&v1).unwrap();
    let mut nginx_rules = Vec::new();
    let summary = replay(&cap, &mut engine, &switches, 1, true, |ev| {
        if let Event::Decision { decision, filter } = ev {
            if filter.name == "nic-node02-default-nginx-deployment-797d64cb5f-lrhc6"
                && decision.state == engine::ConnState::New
            {
                nginx_rules.push((decision.frame, decision.verdict.is_drop(), decision.rule.map(|r| r.id)));
            }
        }
    })
    .unwrap();
    assert_eq!((summary.frames, summary.passed, summary.dropped, summary.unfiltered), (14, 10, 4, 0));
    let v1 =
        netpol::compile(&common::cluster(&format!("{}---\n{policy}", read("seed-lab/pods.yaml"))), CLUSTER)
            .unwrap();
    let id = |tag: &str| {
        v1.filters[0].rulesets[0].rules.iter().find(|r| r.tag.as_deref() == Some(tag)).unwrap().id
    };
    let (allow, drop) =
        (id("ir-k8scluster-default-access-nginx-all"), id("ir-k8scluster-default-access-nginx"));
    let new: Vec<(bool, Option<u32>)> = nginx_rules.iter().map(|(_, d, r)| (*d, *r)).collect();
    assert_eq!(
        new,
        [
            (true, Some(drop)),
            (true, Some(drop)),
            (false, Some(allow)),
            (true, Some(drop)),
            (true, Some(drop))
        ]
    );
}

/// Nanoseconds since the epoch of a UTC time written `YYYY-MM-DDTHH:MM:SS`.
fn humantime_ns(t: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    secs as u64 * 1_000_000_000
}
