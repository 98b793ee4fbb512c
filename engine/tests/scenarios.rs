//! Scenarios through the whole engine: frames built here, decided by real filters, verdicts, states
//! and counters asserted.

use std::net::Ipv4Addr;

use engine::filter::{FrameRef, Sink};
use engine::log::LogRecord;
use engine::{Change, ConnState, Decision, Engine, FilterConfig, FrameOutcome, Reason, Verdict};
use pktio::build::{icmp_echo_v4, icmpv6_echo, tcp_v4, udp_v4, Host, Host6, TcpSeg};
use pktio::packet::tcpflags::{ACK, FIN, RST, SYN};
use pktio::{parse_frame, LinkType};
use rules::{parse_policy, AddrEntry, IpNet};

const A: Host = Host { mac: [2, 0, 0, 0, 0, 1], ip: Ipv4Addr::new(10, 0, 0, 1) };
const B: Host = Host { mac: [2, 0, 0, 0, 0, 2], ip: Ipv4Addr::new(10, 0, 0, 2) };
const C: Host = Host { mac: [2, 0, 0, 0, 0, 3], ip: Ipv4Addr::new(10, 0, 0, 3) };

#[derive(Default)]
struct Record {
    decisions: Vec<Decision>,
    logs: Vec<String>,
    replies: Vec<Vec<u8>>,
    done: Vec<(u64, FrameOutcome)>,
    forwarded: Vec<(u64, usize)>,
}

impl Sink for Record {
    fn decision(&mut self, d: &Decision, _f: &FilterConfig) {
        self.decisions.push(*d);
    }
    fn log(&mut self, rec: LogRecord) {
        self.logs.push(rec.to_string());
    }
    fn reply(&mut self, _frame: u64, bytes: Vec<u8>) {
        self.replies.push(bytes);
    }
    fn frame_done(&mut self, frame: u64, outcome: FrameOutcome) {
        self.done.push((frame, outcome));
    }
    fn forward_held(&mut self, frame: u64, _link: LinkType, bytes: &[u8]) {
        self.forwarded.push((frame, bytes.len()));
    }
}

struct Lab {
    engine: Engine,
    rec: Record,
    frame: u64,
}

/// `filter b` guards B; the rule-set body is given. `extra` goes inside the filter block.
fn lab(rules: &str, extra: &str) -> Lab {
    let text = format!(
        "addrset clients {{ ip 10.0.0.1, }}\nfilter b {{\n  vnic mac 02:00:00:00:00:02 ip 10.0.0.2;\n{extra}\n  ruleset mainrs {{\n{rules}\n  }}\n}}\n"
    );
    let policy = parse_policy(&text).unwrap_or_else(|d| panic!("{}", d.one_line("lab")));
    Lab { engine: Engine::new(&policy).unwrap(), rec: Record::default(), frame: 0 }
}

const ALLOW_IN_FROM_CLIENTS: &str = "    rule 10 at 1 in protocol any from addrset clients to any accept;\n    rule 20 at 2 out protocol any from any to any accept;";

impl Lab {
    /// Sends one frame at time `t` seconds; returns the last decision about it.
    fn send(&mut self, bytes: &[u8], t: f64) -> Decision {
        self.frame += 1;
        let pkt = parse_frame(LinkType::Ethernet, bytes, bytes.len() as u32).unwrap();
        let before = self.rec.decisions.len();
        let now_ns = (1_000_000.0 + t) as u64 * 1_000_000_000 + ((t.fract()) * 1e9) as u64;
        let f = FrameRef { number: self.frame, link: LinkType::Ethernet, bytes, now_ns };
        self.engine.process(&pkt, f, &mut self.rec);
        *self.rec.decisions[before..]
            .iter()
            .rev()
            .find(|d| d.frame == self.frame)
            .expect("a decision for the frame")
    }

    fn counters(&self) -> engine::FilterCounters {
        self.engine.counters("b").cloned().unwrap_or_default()
    }
}

fn seg(from: &Host, to: &Host, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    tcp_v4(from, to, 1, &TcpSeg { sport, dport, seq, ack, flags, window: 65535, mss: None, payload: b"" })
}

fn data(from: &Host, to: &Host, sport: u16, dport: u16, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    tcp_v4(from, to, 1, &TcpSeg { sport, dport, seq, ack, flags: ACK, window: 65535, mss: None, payload })
}

/// A, B handshake on A:port → B:80; returns the next sequence numbers (a, b).
fn handshake(l: &mut Lab, port: u16, t: f64) -> (u32, u32) {
    assert_eq!(l.send(&seg(&A, &B, port, 80, 100, 0, SYN), t).state, ConnState::New);
    assert_eq!(l.send(&seg(&B, &A, 80, port, 500, 101, SYN | ACK), t).state, ConnState::Established);
    assert_eq!(l.send(&seg(&A, &B, port, 80, 101, 501, ACK), t).state, ConnState::Established);
    (101, 501)
}

#[test]
fn fail_closed_and_fail_open_with_nothing_loaded() {
    for (policy, verdict, reason) in [
        ("", Verdict::Drop, Reason::FailClosed),
        ("failurePolicy failOpen;", Verdict::Pass, Reason::FailOpen),
    ] {
        let text = format!("filter b {{ vnic ip 10.0.0.2; {policy} }}");
        let mut l = Lab {
            engine: Engine::new(&parse_policy(&text).unwrap()).unwrap(),
            rec: Record::default(),
            frame: 0,
        };
        let d = l.send(&seg(&A, &B, 1000, 80, 1, 0, SYN), 0.0);
        assert_eq!((d.verdict, d.reason), (verdict, reason));
    }
}

#[test]
fn revalidation_cuts_a_connection_whose_address_leaves_the_set() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    let (a, b) = handshake(&mut l, 40000, 0.0);
    // The client leaves the allowed set: no rule changed, only the set.
    let gen = l
        .engine
        .commit(
            &[Change::AddrSetDel {
                set: "clients".into(),
                entries: vec![AddrEntry::Ip(IpNet::host("10.0.0.1".parse().unwrap()))],
            }],
            0,
        )
        .unwrap();
    assert_eq!(gen, 2);
    let d = l.send(&data(&A, &B, 40000, 80, a, b, b"GET /"), 1.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Drop, ConnState::Established, Reason::Revalidate));
    assert_eq!(l.counters().torn_down, 1);
    // The entry is gone: a retry is a new connection and the rules now drop it.
    let d = l.send(&data(&A, &B, 40000, 80, a, b, b"GET /"), 2.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Drop, ConnState::New, Reason::NoMatch));
    // Back in the set: a new connection is allowed again.
    l.engine
        .commit(
            &[Change::AddrSetAdd {
                set: "clients".into(),
                entries: vec![AddrEntry::Ip(IpNet::host("10.0.0.1".parse().unwrap()))],
            }],
            0,
        )
        .unwrap();
    handshake(&mut l, 40001, 3.0);
}

#[test]
fn revalidation_keeps_connections_the_new_policy_still_allows_and_keep_mode_keeps_all() {
    // The allow rule disappears (the whole policy is replaced).
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    let (a, b) = handshake(&mut l, 40000, 0.0);
    let other = lab("    rule 11 at 1 in protocol tcp from any to any port 80 accept;\n    rule 20 at 2 out protocol any from any to any accept;", "");
    l.engine.load(other.engine.policy(), 0).unwrap();
    let d = l.send(&data(&A, &B, 40000, 80, a, b, b"x"), 1.0);
    // Still allowed by rule 11: kept, now attributed to rule 11.
    assert_eq!((d.verdict, d.state, d.rule.map(|r| r.id)), (Verdict::Pass, ConnState::Established, Some(11)));

    let mut keep = lab(ALLOW_IN_FROM_CLIENTS, "  policyChange keep;");
    let (a, b) = handshake(&mut keep, 40000, 0.0);
    let deny = lab("    rule 30 at 1 in protocol any from any to any drop;", "  policyChange keep;");
    keep.engine.load(deny.engine.policy(), 0).unwrap();
    let d = keep.send(&data(&A, &B, 40000, 80, a, b, b"x"), 1.0);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Established));
    // ...but new connections follow the new rules.
    assert_eq!(keep.send(&seg(&A, &B, 40001, 80, 7, 0, SYN), 2.0).verdict, Verdict::Drop);
}

#[test]
fn strict_rules_refuse_mid_stream_pickup_loose_ones_accept_it() {
    let mut l = lab("    rule 1 at 1 in protocol tcp strict from any to any port 22 accept;\n    rule 2 at 2 in protocol tcp from any to any port 80 accept;", "");
    let d = l.send(&seg(&A, &B, 5000, 22, 1, 1, ACK), 0.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Drop, ConnState::Invalid, Reason::StateMismatch));
    let d = l.send(&seg(&A, &B, 5000, 80, 1, 1, ACK), 0.0);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::New));
    assert_eq!(l.send(&seg(&B, &A, 80, 5000, 1, 1, ACK), 0.0).state, ConnState::Established);
}

/// A stateless rule decides each frame by itself: state `none`, and no connection; a stateful rule's
/// first frame is `new` and opens one.
#[test]
fn stateless_rules_pass_frames_alone_stateful_ones_open_connections() {
    let mut l = lab("    rule 1 at 1 in protocol tcp stateless from any to any port 22 accept;\n    rule 2 at 2 in protocol tcp from any to any port 80 accept;", "");
    let d = l.send(&seg(&A, &B, 5000, 22, 1, 0, SYN), 0.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Pass, ConnState::None, Reason::Match));
    assert_eq!(l.engine.worker_ref().connections(0), 0);
    let d = l.send(&seg(&A, &B, 5001, 80, 1, 0, SYN), 0.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Pass, ConnState::New, Reason::Match));
    assert_eq!(l.engine.worker_ref().connections(0), 1);
}

#[test]
fn timers_expire_connections_on_the_packet_clock() {
    let mut l = lab(
        ALLOW_IN_FROM_CLIENTS,
        "  timeout udp.first 5;\n  timeout udp.multiple 8;\n  timeout tcp.first 3;\n  timeout icmp.first 2;",
    );
    // UDP: first 5 s; a reply within it is established.
    let q = udp_v4(&A, &B, 1, 3333, 53, b"q");
    let r = udp_v4(&B, &A, 1, 53, 3333, b"r");
    assert_eq!(l.send(&q, 0.0).state, ConnState::New);
    assert_eq!(l.send(&r, 4.0).state, ConnState::Established);
    // Both sides spoke: udp.multiple (8 s) from the last packet.
    assert_eq!(l.send(&r, 11.5).state, ConnState::Established);
    let d = l.send(&r, 20.0);
    assert_eq!(
        (d.verdict, d.state),
        (Verdict::Pass, ConnState::New),
        "expired: B's packet out is a new flow, allowed by rule 20"
    );
    // TCP: a SYN unanswered for longer than tcp.first (3 s) is forgotten.
    l.send(&seg(&A, &B, 6000, 80, 1, 0, SYN), 30.0);
    let d = l.send(&seg(&B, &A, 80, 6000, 9, 2, SYN | ACK), 34.0);
    assert_eq!(d.state, ConnState::New);
    // ICMP echo: icmp.first (2 s).
    assert_eq!(l.send(&icmp_echo_v4(&A, &B, 1, false, 77, 1), 40.0).state, ConnState::New);
    assert_eq!(l.send(&icmp_echo_v4(&B, &A, 1, true, 77, 1), 41.0).state, ConnState::Established);
    assert!(l.counters().expired >= 2);
}

/// The clock moves without a frame (what the live dataplane does while idle): an expired connection is
/// reclaimed then, at the first move into a second after its expiry, with its TERM line; a logged
/// connection still alive is not.
#[test]
fn the_clock_reclaims_expired_connections_without_a_frame() {
    let mut l = lab(
        "    rule 10 at 1 in protocol any from addrset clients to any accept with log;",
        "  timeout udp.first 5;\n  timeout tcp.first 60;",
    );
    l.send(&udp_v4(&A, &B, 1, 3333, 53, b"q"), 0.0);
    l.send(&seg(&A, &B, 6000, 80, 1, 0, SYN), 0.0);
    let at = |t: u64| (1_000_000 + t) * 1_000_000_000;
    let snap = l.engine.snapshot();
    let terms = |l: &Lab| l.rec.logs.iter().filter(|line| line.contains(" TERM ")).count();
    // Still within udp.first: nothing goes.
    assert!(!l.engine.worker().tick(&snap, at(4), &mut l.rec));
    assert_eq!((l.counters().expired, terms(&l)), (0, 0));
    // Past it: the UDP flow goes, with its TERM line; the SYN's flow (60 s) stays.
    assert!(l.engine.worker().tick(&snap, at(6), &mut l.rec));
    assert_eq!((l.counters().expired, terms(&l)), (1, 1), "{:?}", l.rec.logs);
    assert!(
        l.rec.logs.iter().any(|line| line.contains(" TERM ") && line.contains("UDP")),
        "{:?}",
        l.rec.logs
    );
    assert_eq!(l.engine.worker_ref().connections(0), 1);
    // Within the same second again: the clock does not look twice.
    assert!(!l.engine.worker().tick(&snap, at(6) + 500_000_000, &mut l.rec));
}

#[test]
fn a_full_table_refuses_new_connections_with_state_limit() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "  maxConnections 2;");
    assert_eq!(l.send(&seg(&A, &B, 1, 80, 1, 0, SYN), 0.0).verdict, Verdict::Pass);
    assert_eq!(l.send(&seg(&A, &B, 2, 80, 1, 0, SYN), 0.0).verdict, Verdict::Pass);
    let d = l.send(&seg(&A, &B, 3, 80, 1, 0, SYN), 0.0);
    assert_eq!((d.verdict, d.reason), (Verdict::Drop, Reason::StateLimit));
    assert_eq!(l.counters().drop_reasons[Reason::StateLimit.index()], 1);
    // Existing connections still work.
    assert_eq!(l.send(&seg(&B, &A, 80, 1, 9, 2, SYN | ACK), 0.0).state, ConnState::Established);
}

#[test]
fn reject_answers_with_a_reset_and_logged_rules_write_pkt_and_term_lines() {
    let mut l = lab(
        "    rule 5 at 1 in protocol tcp from any to any port 23 reject;\n    rule 6 at 2 in protocol tcp from any to any port 80 accept with log;\n    rule 20 at 3 out protocol any from any to any accept;",
        "",
    );
    let d = l.send(&seg(&A, &B, 7000, 23, 10, 0, SYN), 0.0);
    assert_eq!((d.verdict, d.rule.map(|r| r.id)), (Verdict::Reject, Some(5)));
    assert_eq!(l.rec.replies.len(), 1);
    let r = parse_frame(LinkType::Ethernet, &l.rec.replies[0], l.rec.replies[0].len() as u32).unwrap();
    let pktio::L4::Tcp(t) = r.l4 else { panic!("RST expected") };
    assert_eq!((t.flags, t.ack, r.dst_mac.0), (RST | ACK, 11, A.mac));
    assert_eq!(l.counters().rejects_sent, 1);

    let (a, b) = handshake(&mut l, 7001, 1.0);
    l.send(&seg(&A, &B, 7001, 80, a, b, FIN | ACK), 2.0);
    l.send(&seg(&B, &A, 80, 7001, b, a + 1, FIN | ACK), 2.0);
    l.send(&seg(&A, &B, 7001, 80, a + 1, b + 1, ACK), 2.0);
    assert_eq!(l.rec.logs.len(), 2, "{:#?}", l.rec.logs);
    assert!(
        l.rec.logs[0].ends_with("INET match PASS mainrs/6 IN 40 TCP 10.0.0.1/7001->10.0.0.2/80 S"),
        "{}",
        l.rec.logs[0]
    );
    assert!(
        l.rec.logs[1].contains("INET TERM mainrs/6 TCP FIN 10.0.0.1/7001->10.0.0.2/80 4/2 240/120"),
        "{}",
        l.rec.logs[1]
    );
}

/// An IPv4 fragment of a UDP datagram id `id` from A to B: `offset` in bytes, `payload` its data.
/// Rejected UDP to B, and rejected telnet.
const REJECTS: &str = "    rule 5 at 1 in protocol udp from any to any reject;\n    rule 6 at 2 in protocol tcp from any to any port 23 reject;";

#[test]
fn reject_sends_icmp_errors_at_most_at_the_filter_rate_and_resets_always() {
    // The default: 1,000 a second in bursts of 50.
    let mut l = lab(REJECTS, "");
    for i in 0..80 {
        assert_eq!(l.send(&udp_v4(&A, &B, 1, 4000 + i, 53, b"q"), 1.0).verdict, Verdict::Reject);
    }
    assert_eq!((l.rec.replies.len(), l.counters().rejects_sent, l.counters().rejects_limited), (50, 50, 30));
    // Resets are not limited.
    for i in 0..20 {
        assert_eq!(l.send(&seg(&A, &B, 7000 + i, 23, 10, 0, SYN), 1.0).verdict, Verdict::Reject);
    }
    assert_eq!(l.rec.replies.len(), 70);
    // A millisecond and a half later: one error's worth of credit.
    for i in 0..3 {
        l.send(&udp_v4(&A, &B, 1, 5000 + i, 53, b"q"), 1.0015);
    }
    assert_eq!((l.counters().rejects_sent, l.counters().rejects_limited), (71, 32));
    // A second on, the bucket is full again, and holds no more than the burst.
    for i in 0..60 {
        l.send(&udp_v4(&A, &B, 1, 6000 + i, 53, b"q"), 3.0);
    }
    assert_eq!((l.counters().rejects_sent, l.counters().rejects_limited), (121, 42));
    // Every answer is an ICMP unreachable back to A, or a reset.
    let icmp = l.rec.replies.iter().filter(|r| {
        let p = parse_frame(LinkType::Ethernet, r, r.len() as u32).unwrap();
        matches!(p.l4, pktio::L4::Icmp(_)) && p.dst_mac.0 == A.mac
    });
    assert_eq!(icmp.count(), 101);
}

#[test]
fn the_icmp_error_rate_is_set_per_filter_and_zero_sends_none() {
    let mut l = lab(REJECTS, "  icmpErrorRate 100;");
    for i in 0..10 {
        l.send(&udp_v4(&A, &B, 1, 4000 + i, 53, b"q"), 1.0);
    }
    // Bursts of a twentieth: 5.
    assert_eq!((l.counters().rejects_sent, l.counters().rejects_limited), (5, 5));
    // 11 ms is one error at 100 a second (and a tenth of the next).
    l.send(&udp_v4(&A, &B, 1, 5000, 53, b"q"), 1.011);
    l.send(&udp_v4(&A, &B, 1, 5001, 53, b"q"), 1.011);
    assert_eq!((l.counters().rejects_sent, l.counters().rejects_limited), (6, 6));

    let mut none = lab(REJECTS, "  icmpErrorRate 0;");
    for i in 0..10 {
        assert_eq!(
            none.send(&udp_v4(&A, &B, 1, 4000 + i, 53, b"q"), 1.0 + f64::from(i)).verdict,
            Verdict::Reject
        );
    }
    none.send(&seg(&A, &B, 7000, 23, 10, 0, SYN), 20.0);
    assert_eq!((none.counters().rejects_sent, none.counters().rejects_limited), (1, 10), "only the reset");
}

fn fragment(id: u16, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    pktio::build::ipv4_fragment(&A, &B, 17, id, offset, more, payload)
}

/// The first fragment: UDP header (8 bytes, port `dport`) plus 16 bytes of data.
fn first_fragment(id: u16, dport: u16) -> Vec<u8> {
    let mut udp = vec![0x30, 0x39];
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&[0, 40, 0, 0]);
    udp.extend_from_slice(&[0xaa; 16]);
    fragment(id, 0, true, &udp)
}

#[test]
fn fragments_follow_their_first_fragment_in_any_order() {
    let mut l = lab("    rule 1 at 1 in protocol udp from any to any port 53 accept;\n    rule 2 at 2 in protocol udp from any to any port 99 drop;", "");
    // In order: first fragment accepted, the rest follow.
    assert_eq!(l.send(&first_fragment(1, 53), 0.0).verdict, Verdict::Pass);
    let d = l.send(&fragment(1, 24, false, &[0xbb; 16]), 0.0);
    assert_eq!((d.verdict, d.rule.map(|r| r.id)), (Verdict::Pass, Some(1)));
    // Out of order: the tail is held until the first fragment comes, then decided like it.
    let tail = fragment(2, 24, false, &[0xbb; 16]);
    let pkt = parse_frame(LinkType::Ethernet, &tail, tail.len() as u32).unwrap();
    l.frame += 1;
    let held_frame = l.frame;
    let out = l.engine.process(
        &pkt,
        FrameRef {
            number: held_frame,
            link: LinkType::Ethernet,
            bytes: &tail,
            now_ns: 1_000_000_000_000_000,
        },
        &mut l.rec,
    );
    assert_eq!(out, FrameOutcome::Held);
    assert_eq!(l.send(&first_fragment(2, 99), 0.5).verdict, Verdict::Drop);
    let late = l.rec.decisions.iter().find(|d| d.frame == held_frame).expect("held fragment decided");
    assert_eq!((late.verdict, late.rule.map(|r| r.id)), (Verdict::Drop, Some(2)));
    assert!(l.rec.done.contains(&(held_frame, FrameOutcome::Dropped)));
    assert!(l.rec.forwarded.is_empty(), "a dropped fragment is not sent on");
    // A tail held before an accepted first fragment is sent on when the first passes.
    let tail = fragment(5, 24, false, &[0xee; 16]);
    let pkt = parse_frame(LinkType::Ethernet, &tail, tail.len() as u32).unwrap();
    l.frame += 1;
    let held_ok = l.frame;
    let f =
        FrameRef { number: held_ok, link: LinkType::Ethernet, bytes: &tail, now_ns: 1_000_000_000_000_000 };
    assert_eq!(l.engine.process(&pkt, f, &mut l.rec), FrameOutcome::Held);
    assert_eq!(l.send(&first_fragment(5, 53), 0.5).verdict, Verdict::Pass);
    assert_eq!(l.rec.forwarded, vec![(held_ok, tail.len())]);
    assert!(l.rec.done.contains(&(held_ok, FrameOutcome::Passed)));
    // Overlapping data is refused.
    assert_eq!(l.send(&first_fragment(3, 53), 1.0).verdict, Verdict::Pass);
    let d = l.send(&fragment(3, 16, false, &[0xcc; 16]), 1.0);
    assert_eq!((d.verdict, d.reason), (Verdict::Drop, Reason::Fragment));
    // A tail whose first fragment never comes is dropped for reason `fragment` when it times out.
    let orphan = fragment(4, 24, false, &[0xdd; 8]);
    let pkt = parse_frame(LinkType::Ethernet, &orphan, orphan.len() as u32).unwrap();
    l.frame += 1;
    let orphan_frame = l.frame;
    l.engine.process(
        &pkt,
        FrameRef {
            number: orphan_frame,
            link: LinkType::Ethernet,
            bytes: &orphan,
            now_ns: 1_000_002_000_000_000,
        },
        &mut l.rec,
    );
    l.send(&udp_v4(&A, &B, 1, 1, 53, b"later"), 100.0);
    let d = l.rec.decisions.iter().find(|d| d.frame == orphan_frame).expect("orphan decided");
    assert_eq!((d.verdict, d.reason), (Verdict::Drop, Reason::Fragment));
}

#[test]
fn icmp_errors_pass_as_related_only_for_tracked_flows() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    l.send(&udp_v4(&A, &B, 1, 4444, 5555, b"hello"), 0.0);
    // B's port-unreachable about that datagram, built by the reject path of pktio.
    let q = udp_v4(&A, &B, 1, 4444, 5555, b"hello");
    let qp = parse_frame(LinkType::Ethernet, &q, q.len() as u32).unwrap();
    let err = pktio::build::reject_reply(LinkType::Ethernet, &q, &qp).unwrap();
    let d = l.send(&err, 0.1);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Related));
    // The same kind of error about a flow nobody opened is not related: the out rule decides it anew.
    let other = udp_v4(&A, &B, 1, 4445, 5556, b"x");
    let op = parse_frame(LinkType::Ethernet, &other, other.len() as u32).unwrap();
    let err = pktio::build::reject_reply(LinkType::Ethernet, &other, &op).unwrap();
    assert_eq!(l.send(&err, 0.2).state, ConnState::New);
}

/// An ICMP "fragmentation needed" from `from` to `to` quoting the IP header of `quoted` (an Ethernet
/// frame) and the first `keep` bytes of what follows it.
fn frag_needed_about(from: &Host, to: &Host, quoted: &[u8], keep: usize) -> Vec<u8> {
    let mut m = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    m.extend_from_slice(&quoted[14..14 + 20 + keep]);
    let c = pktio::build::checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    pktio::build::raw_v4(from, to, 7, 1, &m)
}

/// pf's check of the TCP segment an ICMP error quotes (RFC 5927 §4.1): related only when the quoted
/// sequence number is one its sender could have sent lately; otherwise dropped, whatever the rules say.
#[test]
fn a_tcp_error_is_related_only_when_it_quotes_a_sequence_number_in_the_window() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    let (a, b) = handshake(&mut l, 4000, 0.0);
    let sent = data(&A, &B, 4000, 80, a, b, b"0123456789");
    assert_eq!(l.send(&sent, 0.1).state, ConnState::Established);
    // The error about A's segment travels back to A (out of B's vNIC, which the out rule would pass).
    let d = l.send(&frag_needed_about(&B, &A, &sent, 8), 0.2);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Pass, ConnState::Related, Reason::State));
    // A blind attacker knows the addresses and ports but not the sequence numbers.
    for seq in [a.wrapping_add(1_000_000_000), a.wrapping_sub(200_000), a.wrapping_add(70_000)] {
        let forged = data(&A, &B, 4000, 80, seq, b, b"0123456789");
        let d = l.send(&frag_needed_about(&B, &A, &forged, 8), 0.3);
        assert_eq!(
            (d.verdict, d.state, d.reason),
            (Verdict::Drop, ConnState::Invalid, Reason::StateMismatch),
            "{seq}"
        );
    }
    // A quote cut before the sequence number cannot be checked: dropped as pf does, reason `short`.
    let d = l.send(&frag_needed_about(&B, &A, &sent, 4), 0.4);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Drop, ConnState::Invalid, Reason::Short));
    // The other way: an error toward B about B's own segment, quoting B's next sequence number.
    let reply = data(&B, &A, 80, 4000, b, a + 10, b"");
    let d = l.send(&frag_needed_about(&A, &B, &reply, 8), 0.5);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Related));
    // None of the dropped errors changed the connection.
    assert_eq!(l.send(&data(&A, &B, 4000, 80, a + 10, b, b"more"), 0.6).state, ConnState::Established);
}

/// Only an echo request opens an echo conversation (as in Linux and OVS conntrack): a reply that
/// answers nothing tracked is decided by the rules and opens none, so requests of its identifier from
/// outside are not let in as its conversation.
#[test]
fn an_unsolicited_echo_reply_opens_no_conversation() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    // B answers a request nobody saw; the out rule passes it.
    let d = l.send(&icmp_echo_v4(&B, &C, 1, true, 77, 1), 0.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Pass, ConnState::New, Reason::Match));
    // C (not a client) sends requests of that identifier in: no conversation carries them.
    let d = l.send(&icmp_echo_v4(&C, &B, 1, false, 77, 2), 0.1);
    assert_eq!((d.verdict, d.reason), (Verdict::Drop, Reason::NoMatch));
    // The same for ICMPv6 (type 129 out, then 128 in).
    let b6 = Host6 { mac: B.mac, ip: "2001:db8::2".parse().unwrap() };
    let c6 = Host6 { mac: C.mac, ip: "2001:db8::3".parse().unwrap() };
    assert_eq!(l.send(&icmpv6_echo(&b6, &c6, true, 78, 1), 0.2).state, ConnState::New);
    assert_eq!(l.send(&icmpv6_echo(&c6, &b6, false, 78, 2), 0.3).reason, Reason::NoMatch);
    // A request B sends does open one: C's reply comes back in on it.
    assert_eq!(l.send(&icmp_echo_v4(&B, &C, 1, false, 79, 1), 0.4).state, ConnState::New);
    let d = l.send(&icmp_echo_v4(&C, &B, 1, true, 79, 1), 0.5);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Established));
}

/// After a policy change, an error relates to a connection only while the new policy would still
/// admit it (`revalidate`); under `keep` the old connection goes on relating errors.
#[test]
fn an_error_about_a_connection_the_new_policy_refuses_is_not_related() {
    let remove_client = Change::AddrSetDel {
        set: "clients".into(),
        entries: vec![AddrEntry::Ip(IpNet::host("10.0.0.1".parse().unwrap()))],
    };
    let datagram = udp_v4(&A, &B, 1, 4444, 5555, b"hello");
    let dp = parse_frame(LinkType::Ethernet, &datagram, datagram.len() as u32).unwrap();
    let unreachable = pktio::build::reject_reply(LinkType::Ethernet, &datagram, &dp).unwrap();
    for (extra, related_after) in [("", false), ("  policyChange keep;", true)] {
        let mut l = lab(ALLOW_IN_FROM_CLIENTS, extra);
        l.send(&datagram, 0.0);
        assert_eq!(l.send(&unreachable, 0.1).state, ConnState::Related, "{extra}");
        l.engine.commit(std::slice::from_ref(&remove_client), 0).unwrap();
        let d = l.send(&unreachable, 0.2);
        assert_eq!(d.state == ConnState::Related, related_after, "{extra}: {d:?}");
        if !related_after {
            // The out rule decides it as a new packet.
            assert_eq!((d.verdict, d.state, d.reason), (Verdict::Pass, ConnState::New, Reason::Match));
        }
    }
    // A change that still admits the connection leaves its errors related.
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    l.send(&datagram, 0.0);
    let add_other = Change::AddrSetAdd {
        set: "clients".into(),
        entries: vec![AddrEntry::Ip(IpNet::host("10.0.0.9".parse().unwrap()))],
    };
    l.engine.commit(&[add_other], 0).unwrap();
    assert_eq!(l.send(&unreachable, 0.2).state, ConnState::Related);
}

/// `frame` (Ethernet, IPv4 without options) with IPv4 `options` (a multiple of four bytes) added.
fn with_ip_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(options);
    f.extend_from_slice(&frame[34..]);
    let hl = 20 + options.len();
    f[14] = 0x40 | (hl / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + options.len() as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = pktio::build::checksum(&[&f[14..14 + hl]]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// A source-routed datagram is dropped (pf's `ip-option`) whatever the rules and connections say:
/// even on a tracked connection, whose fast path must not carry it.
#[test]
fn source_routed_datagrams_are_dropped_even_on_a_tracked_connection() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    let (a, b) = handshake(&mut l, 4000, 0.0);
    let lsrr = [1, 131, 7, 4, 10, 0, 0, 9]; // NOP, LSRR via 10.0.0.9
    let routed = with_ip_options(&data(&A, &B, 4000, 80, a, b, b"x"), &lsrr);
    let d = l.send(&routed, 0.1);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Drop, ConnState::None, Reason::IpOption));
    // A record-route option is no source route: the segment rides its connection.
    let recorded = with_ip_options(&data(&A, &B, 4000, 80, a, b, b"x"), &[7, 7, 4, 0, 0, 0, 0, 0]);
    assert_eq!(l.send(&recorded, 0.2).state, ConnState::Established);
    // A new datagram the rules allow, strict source route.
    let d = l.send(&with_ip_options(&udp_v4(&A, &B, 1, 53, 53, b"q"), &[137, 7, 4, 10, 0, 0, 9, 0]), 0.3);
    assert_eq!((d.verdict, d.reason), (Verdict::Drop, Reason::IpOption));
    assert_eq!(l.counters().drop_reasons[Reason::IpOption.index()], 2);
}

/// An ICMP error's own header (its addresses, identifier 0) is the key of an echo conversation of
/// identifier 0 between the same hosts; it must not ride that conversation (the `replay` fuzz target
/// found one that did, and only on one worker: errors go to the worker of the flow they quote).
#[test]
fn an_icmp_error_never_rides_an_echo_conversation_of_the_same_hosts() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    assert_eq!(l.send(&icmp_echo_v4(&A, &B, 1, false, 0, 1), 0.0).state, ConnState::New);
    // A port unreachable from A to B about a datagram nobody tracked (B to A, never sent).
    let q = udp_v4(&B, &A, 1, 53, 4444, b"?");
    let qp = parse_frame(LinkType::Ethernet, &q, q.len() as u32).unwrap();
    let err = pktio::build::reject_reply(LinkType::Ethernet, &q, &qp).unwrap();
    let d = l.send(&err, 0.1);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Pass, ConnState::New, Reason::Match));
    // The echo conversation itself goes on.
    assert_eq!(l.send(&icmp_echo_v4(&B, &A, 1, true, 0, 1), 0.2).state, ConnState::Established);
}

#[test]
fn frames_between_two_local_vnics_cross_both_filters() {
    let text = "filter a { vnic mac 02:00:00:00:00:01 ip 10.0.0.1; ruleset mainrs { rule 1 at 1 out protocol any from any to any accept; } }\nfilter c { vnic mac 02:00:00:00:00:03 ip 10.0.0.3; ruleset mainrs { rule 2 at 1 in protocol tcp from any to any port 443 accept; } }";
    let mut l =
        Lab { engine: Engine::new(&parse_policy(text).unwrap()).unwrap(), rec: Record::default(), frame: 0 };
    l.send(&seg(&A, &C, 9000, 443, 1, 0, SYN), 0.0);
    let ds: Vec<(usize, rules::Direction, Verdict)> =
        l.rec.decisions.iter().map(|d| (d.filter, d.dir, d.verdict)).collect();
    assert_eq!(ds, vec![(0, rules::Direction::Out, Verdict::Pass), (1, rules::Direction::In, Verdict::Pass)]);
    l.send(&seg(&A, &C, 9000, 22, 1, 0, SYN), 0.0);
    assert_eq!(
        l.rec.decisions.last().map(|d| (d.filter, d.verdict, d.reason)),
        Some((1, Verdict::Drop, Reason::NoMatch))
    );
}

#[test]
fn large_rule_sets_use_the_fast_classifier_with_the_same_answers() {
    let mut rules = String::new();
    for i in 0..90u32 {
        let action = if i % 3 == 0 { "drop" } else { "accept" };
        rules.push_str(&format!(
            "    rule {} at {} in protocol tcp from ip 10.{}.0.0/16 to any port {}-{} {action};\n",
            100 + i,
            i + 1,
            i % 8,
            1000 + i * 10,
            1000 + i * 10 + 15
        ));
    }
    rules.push_str("    rule 99 at 100 in protocol any from addrset clients to any accept;\n");
    let l = lab(&rules, "");
    let snap = l.engine.snapshot();
    let cfg = &snap.filters[0];
    assert!(cfg.l3_fast.is_some(), "a 91-rule set gets the classifier");
    let linear = cfg.l3.as_ref().unwrap();
    let mut x = 12345u64;
    for _ in 0..20_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let key = rules::L3Key {
            dir: if x >> 63 == 0 { rules::Direction::In } else { rules::Direction::Out },
            src: std::net::IpAddr::V4(Ipv4Addr::new(
                10,
                ((x >> 8) % 9) as u8,
                (x >> 16) as u8,
                1 + (x >> 24) as u8 % 3,
            )),
            dst: B.ip.into(),
            proto: [6, 17, 1][((x >> 32) % 3) as usize],
            ports: Some(((x >> 40) as u16, 990 + ((x >> 48) % 640) as u16)),
            icmp: None,
        };
        assert_eq!(cfg.first_match_l3(&key), linear.first_match_l3(&key), "{key:?}");
    }
}

/// A filter with the fast classifier takes address-set member changes in place (its rule structure is
/// kept, the member table changed), and answers as a filter built afresh from the new policy and as
/// the linear scan do.
#[test]
fn member_changes_reach_the_fast_classifier_without_a_rebuild() {
    let mut rules = String::new();
    for i in 0..80u32 {
        let (side, action) = if i % 2 == 0 {
            ("from addrset web to any", "accept")
        } else {
            ("from any to addrset db", "drop")
        };
        rules.push_str(&format!(
            "    rule {} at {} in protocol tcp {side} port {} {action};\n",
            100 + i,
            i + 1,
            1000 + i
        ));
    }
    rules.push_str("    rule 99 at 90 in protocol any from not addrset web to any drop;\n");
    let sets = |web: &[u8], db: &[u8]| {
        let list = |xs: &[u8]| xs.iter().map(|x| format!("ip 10.1.0.{x}, ")).collect::<String>();
        format!("addrset web {{ {} }}\naddrset db {{ {} }}\n", list(web), list(db))
    };
    let policy = |web: &[u8], db: &[u8]| {
        let text = format!(
            "{}filter b {{\n  vnic mac 02:00:00:00:00:02 ip 10.0.0.2;\n  ruleset mainrs {{\n{rules}  }}\n}}\n",
            sets(web, db)
        );
        parse_policy(&text).unwrap_or_else(|d| panic!("{}", d.one_line("lab")))
    };
    let mut engine = Engine::new(&policy(&[1, 2, 3], &[7, 8])).unwrap();
    let mut x = 99u64;
    let mut step = |web: &[u8], db: &[u8], engine: &mut Engine| {
        let before = engine.snapshot();
        let old_sets = engine.policy().addrsets.clone();
        let p = policy(web, db);
        engine.load(&p, 0).unwrap();
        let snap = engine.snapshot();
        let (old, cfg) =
            (before.filters[0].l3_fast.as_ref().unwrap(), snap.filters[0].l3_fast.as_ref().unwrap());
        assert!(old.same_rules(cfg), "the rule structure was built anew");
        // The membership index of a set that did not change is the one before, not a new one.
        let indexes = |s: &engine::config::Snapshot| {
            s.filters[0]
                .l3
                .as_ref()
                .unwrap()
                .set_indexes()
                .map(|(id, i)| (id.to_string(), i.clone()))
                .collect::<Vec<_>>()
        };
        for ((id, was), (_, now)) in indexes(&before).iter().zip(&indexes(&snap)) {
            let unchanged = old_sets.iter().find(|s| s.id == *id) == p.addrsets.iter().find(|s| s.id == *id);
            assert_eq!(std::sync::Arc::ptr_eq(was, now), unchanged, "set {id}");
        }
        let fresh = Engine::new(&p).unwrap().snapshot();
        let fresh = &fresh.filters[0];
        for _ in 0..4_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let host = |v: u64| std::net::IpAddr::V4(Ipv4Addr::new(10, 1, 0, (v % 12) as u8));
            let key = rules::L3Key {
                dir: rules::Direction::In,
                src: host(x >> 8),
                dst: host(x >> 20),
                proto: 6,
                ports: Some((40000, 995 + ((x >> 40) % 90) as u16)),
                icmp: None,
            };
            let want = fresh.l3.as_ref().unwrap().first_match_l3(&key);
            assert_eq!(snap.filters[0].first_match_l3(&key), want, "{key:?} web {web:?} db {db:?}");
            assert_eq!(fresh.first_match_l3(&key), want, "{key:?}");
        }
    };
    step(&[1, 2, 3, 4], &[7, 8], &mut engine);
    step(&[2, 4], &[7, 8, 9, 10], &mut engine);
    step(&[], &[], &mut engine);
    step(&[1, 5, 6, 11], &[3], &mut engine);
}

#[test]
fn an_address_set_change_recompiles_only_the_filters_that_use_the_set() {
    let text = "addrset used { ip 10.0.0.1, }\naddrset other { ip 10.9.9.9, }\n\
        filter a { vnic ip 10.0.0.5; ruleset mainrs { rule 1 at 1 in protocol any from addrset used to any accept; } }\n\
        filter b { vnic ip 10.0.0.6; ruleset mainrs { rule 1 at 1 in protocol any from addrset other to any accept; } }";
    let mut e = Engine::new(&parse_policy(text).unwrap()).unwrap();
    let before = e.snapshot();
    e.commit(
        &[Change::AddrSetAdd {
            set: "used".into(),
            entries: vec![AddrEntry::Ip(IpNet::host("10.0.0.2".parse().unwrap()))],
        }],
        0,
    )
    .unwrap();
    let after = e.snapshot();
    assert!(!std::sync::Arc::ptr_eq(&before.filters[0], &after.filters[0]), "a uses the set: recompiled");
    assert!(after.filters[0].generation > before.filters[0].generation);
    assert!(std::sync::Arc::ptr_eq(&before.filters[1], &after.filters[1]), "b does not: reused as is");
    assert_eq!(after.filters[1].generation, before.filters[1].generation);
    // And the change is in force for a.
    let key = rules::L3Key {
        dir: rules::Direction::In,
        src: "10.0.0.2".parse().unwrap(),
        dst: "10.0.0.5".parse().unwrap(),
        proto: 6,
        ports: Some((1, 2)),
        icmp: None,
    };
    assert_eq!(after.filters[0].first_match_l3(&key), Some(0));
}

#[test]
fn rst_rules_and_the_challenge_ack_path_with_real_frames() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    let (a, b) = handshake(&mut l, 41000, 0.0);
    // In window but not exactly the next expected sequence number: refused, the connection stays.
    let d = l.send(&seg(&A, &B, 41000, 80, a + 100, 0, RST), 1.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Drop, ConnState::Invalid, Reason::StateMismatch));
    // Far out of the window: refused too.
    let d = l.send(&seg(&A, &B, 41000, 80, a.wrapping_add(0x4000_0000), 0, RST), 1.0);
    assert_eq!((d.verdict, d.reason), (Verdict::Drop, Reason::StateMismatch));
    assert_eq!(l.send(&data(&A, &B, 41000, 80, a, b, b"still up"), 1.5).state, ConnState::Established);
    let a = a + 8;
    // A SYN on the established connection passes, so the server can answer with a challenge ACK.
    let d = l.send(&seg(&A, &B, 41000, 80, 7777, 0, SYN), 2.0);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Established));
    let d = l.send(&seg(&B, &A, 80, 41000, b, a, ACK), 2.0);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Established));
    // The client resets at exactly the challenge ACK's number: the entry closes ...
    let d = l.send(&seg(&A, &B, 41000, 80, a, 0, RST), 2.1);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Established));
    // ... and its retransmitted SYN starts a new connection, decided by the rules again.
    let d = l.send(&seg(&A, &B, 41000, 80, 7777, 0, SYN), 3.0);
    assert_eq!((d.verdict, d.state, d.reason), (Verdict::Pass, ConnState::New, Reason::Match));
}

#[test]
fn stale_synack_is_invalid_and_the_right_one_passes() {
    let mut l = lab(ALLOW_IN_FROM_CLIENTS, "");
    assert_eq!(l.send(&seg(&A, &B, 42000, 80, 1000, 0, SYN), 0.0).state, ConnState::New);
    let d = l.send(&seg(&B, &A, 80, 42000, 5000, 999_999, SYN | ACK), 0.1);
    assert_eq!((d.verdict, d.state), (Verdict::Drop, ConnState::Invalid));
    let d = l.send(&seg(&B, &A, 80, 42000, 5000, 1001, SYN | ACK), 0.2);
    assert_eq!((d.verdict, d.state), (Verdict::Pass, ConnState::Established));
}

/// An ICMP message of type `ty` (code 0) from `src` to `dst` with a query's identifier and sequence
/// fields (any ICMP type: the parser reads only what it knows of the type).
fn icmp_v4(src: &Host, dst: &Host, ty: u8, ident: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&[0; 12]);
    let c = pktio::build::checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    pktio::build::raw_v4(src, dst, 7, pktio::packet::ipproto::ICMP, &m)
}

/// An echo conversation opens no hole for other ICMP between the same hosts: a timestamp request, a
/// router advertisement or an unknown type is decided by the rules, whatever the echo identifier.
#[test]
fn an_echo_conversation_carries_no_other_icmp_message() {
    let rules = "    rule 1 at 1 inout protocol icmp icmptype 8 from any to any accept;\n    rule 2 at 2 inout protocol any from any to any drop;";
    for ident in [0u16, 13, 256] {
        let mut l = lab(rules, "");
        assert_eq!(l.send(&icmp_echo_v4(&A, &B, 1, false, ident, 1), 0.0).state, ConnState::New);
        for (t, ty) in [13u8, 9, 42, 0].into_iter().enumerate() {
            let id = if ty == 0 { ident.wrapping_add(1) } else { ident };
            let d = l.send(&icmp_v4(&A, &B, ty, id, 1), 0.1 + t as f64 * 0.1);
            assert_eq!(
                (d.verdict, d.reason),
                (Verdict::Drop, Reason::Match),
                "ICMP type {ty} (identifier {id}) after an echo of identifier {ident}"
            );
        }
        // The echo conversation itself goes on.
        assert_eq!(l.send(&icmp_echo_v4(&B, &A, 2, true, ident, 1), 1.0).state, ConnState::Established);
    }
    // ICMPv6 likewise: neighbour solicitation (135) and an unknown type after an echo of identifier 0.
    let rules6 = "    rule 1 at 1 inout protocol ipv6-icmp icmptype 128 from any to any accept;\n    rule 2 at 2 inout protocol any from any to any drop;";
    let mut l = lab(rules6, "");
    let (a6, b6) = (
        pktio::build::Host6 { mac: A.mac, ip: "2001:db8::1".parse().unwrap() },
        pktio::build::Host6 { mac: B.mac, ip: "2001:db8::2".parse().unwrap() },
    );
    assert_eq!(l.send(&pktio::build::icmpv6_echo(&a6, &b6, false, 0, 1), 0.0).state, ConnState::New);
    for ty in [135u8, 200] {
        let mut m = vec![ty, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0; 16]);
        let d = l.send(&pktio::build::raw_v6(&a6, &b6, pktio::packet::ipproto::ICMPV6, &m), 0.5);
        assert_eq!((d.verdict, d.reason), (Verdict::Drop, Reason::Match), "ICMPv6 type {ty}");
    }
    assert_eq!(l.send(&pktio::build::icmpv6_echo(&b6, &a6, true, 0, 1), 1.0).state, ConnState::Established);
}

impl Lab {
    /// The packet and byte counts filter `b` keeps for each of its connections, by the initiator's
    /// port (`None`: not counted).
    fn flow_counts(&self) -> Vec<(u16, Option<engine::conntrack::FlowCounts>)> {
        let snap = self.engine.snapshot();
        let slot = snap.filters.iter().find(|f| f.name == "b").expect("filter b").slot;
        let state = self.engine.worker_ref().state(slot).expect("state of b");
        let mut out: Vec<_> = state
            .conns
            .iter()
            .map(|(e, _)| {
                let init = if e.value.initiator_lo() { e.key.lo } else { e.key.hi };
                (init.port, state.flow_counts(e.slot, e.value))
            })
            .collect();
        out.sort_by_key(|(port, _)| *port);
        out
    }
}

#[test]
fn per_connection_counts_are_kept_with_flow_counts_on_and_for_logged_rules_always() {
    let counts = |packets, bytes| Some(engine::conntrack::FlowCounts { packets, bytes });
    // Off (the default): no counts, per-rule counters still there.
    let mut off = lab(ALLOW_IN_FROM_CLIENTS, "");
    let (a, b) = handshake(&mut off, 40000, 0.0);
    off.send(&data(&A, &B, 40000, 80, a, b, b"hello"), 0.5);
    assert_eq!(off.flow_counts(), vec![(40000, None)]);
    let rules = off.counters().rule_list();
    assert!(rules.iter().any(|((_, id), r)| *id == 10 && r.packets == 4), "{rules:?}");

    // On: every tracked packet counted, by side, the refused ones not (each frame here is 60 bytes,
    // padded to Ethernet's minimum).
    let mut on = lab(ALLOW_IN_FROM_CLIENTS, "  flowCounts on;");
    let (a, b) = handshake(&mut on, 40000, 0.0);
    on.send(&data(&A, &B, 40000, 80, a, b, b"hello"), 0.5);
    on.send(&data(&B, &A, 80, 40000, b, a + 5, b"hi"), 0.6);
    // Far outside the window: invalid, not counted.
    let d = on.send(&data(&A, &B, 40000, 80, a + 3_000_000, b + 2, b"x"), 0.7);
    assert_eq!(d.state, ConnState::Invalid);
    assert_eq!(on.flow_counts(), vec![(40000, counts([3, 2], [180, 120]))]);

    // Switched on later: connections opened before stay uncounted; new ones are counted.
    let mut later = lab(ALLOW_IN_FROM_CLIENTS, "");
    handshake(&mut later, 40000, 0.0);
    let counting = lab(ALLOW_IN_FROM_CLIENTS, "  flowCounts on;");
    later.engine.load(counting.engine.policy(), 0).unwrap();
    handshake(&mut later, 40001, 1.0);
    assert_eq!(later.flow_counts(), vec![(40000, None), (40001, counts([2, 1], [120, 60]))]);

    // A logged rule's connections are counted with the option off, and their TERM line says so.
    let mut logged = lab(
        "    rule 6 at 1 in protocol tcp from any to any port 80 accept with log;\n    rule 20 at 2 out protocol any from any to any accept;",
        "",
    );
    let (a, b) = handshake(&mut logged, 7001, 0.0);
    assert_eq!(logged.flow_counts(), vec![(7001, counts([2, 1], [120, 60]))]);
    logged.send(&seg(&A, &B, 7001, 80, a, b, RST), 1.0);
    let term = logged.rec.logs.iter().find(|l| l.contains(" TERM ")).expect("a TERM line");
    assert!(term.contains(" 3/1 180/60"), "{term}");
}
