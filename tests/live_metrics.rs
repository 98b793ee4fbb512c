//! The daemon's Prometheus endpoint, live: `dfw run` with `metrics` set, between two network namespaces
//! attached only through taps dfw creates; UDP datagrams counted one by one and `dfw ctl` changes, then
//! `/metrics` scraped over plain HTTP and its numbers checked against what was sent. Needs root; with
//! `CI=true` a machine where it cannot set up fails the test instead of skipping it. Everything it
//! creates (two namespaces, two taps inside them, a temporary folder, the daemon) is removed by Drop
//! guards, and all traffic stays inside the namespaces (10.251.0.0/24) and on loopback.
//!
//! The kernels in the namespaces send traffic of their own when a link comes up (IPv6 router
//! solicitations, neighbour discovery, MLD reports, ARP); the L2 rule set drops the IPv6 part. So the
//! exact checks are on IPv4 (`family="inet"`) counters, taken as differences between two scrapes, which
//! only the datagrams sent here move.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{can_run, ctl_ok, json, Daemon, TempDir};
use pktio::ScratchNetns;

const CLIENT: &str = "10.251.0.1";
const SERVER: &str = "10.251.0.2";
/// Admitted to the server by rule 20.
const OPEN: u16 = 7001;
/// Dropped by rule 2 until the server's rules are reloaded.
const SHUT: u16 = 7002;

fn policy() -> String {
    format!(
        r#"
addrset servers {{ ip {SERVER}, }}

ruleset mainrs {{
  rule 20 at 1 in protocol udp from any to addrset servers port {OPEN} accept;
  rule 21 at 2 out protocol any from any to any accept;
  rule 2 at 3 inout protocol any from any to any drop;
}}

ruleset mainrs_L2 {{
  rule 1 at 1 inout ethertype arp stateless from any to any accept;
  rule 3 at 2 inout ethertype ipv4 from any to any accept;
}}

filter client {{ vnic mac 02:fb:00:00:00:01 ip {CLIENT}; }}
filter server {{ vnic mac 02:fb:00:00:00:02 ip {SERVER}; }}
"#
    )
}

/// One scrape: the samples by series (`name{labels}`), after checking the exposition's shape.
#[derive(Debug)]
struct Scrape(BTreeMap<String, u64>);

impl Scrape {
    /// A series' value; a series that is absent has not counted anything yet (the daemon leaves out
    /// verdict series that are zero).
    fn get(&self, series: &str) -> u64 {
        self.0.get(series).copied().unwrap_or(0)
    }

    fn has(&self, series: &str) -> bool {
        self.0.contains_key(series)
    }

    /// How far a series moved since `before` (negative if it went back).
    fn since(&self, before: &Scrape, series: &str) -> i128 {
        i128::from(self.get(series)) - i128::from(before.get(series))
    }
}

fn frames(filter: &str, dir: &str, verdict: &str) -> String {
    format!(
        "dfw_filter_frames_total{{filter=\"{filter}\",family=\"inet\",dir=\"{dir}\",verdict=\"{verdict}\"}}"
    )
}

/// `GET path` (with `extra` header lines) over a plain TCP connection; the status line, the headers and
/// the body. Retries the connection for a while: the listener is bound just after the control socket
/// the start waits for.
fn http_get(addr: SocketAddr, path: &str, extra: &str) -> (String, BTreeMap<String, String>, String) {
    let start = Instant::now();
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(5), "metrics listener {addr}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n{extra}\r\n")
        .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read answer");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers: {raw:?}"));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Scrapes `/metrics` and checks what any Prometheus scraper relies on: a 200 with the text format's
/// content type and an exact length; every sample's metric announced by `# HELP` and `# TYPE` before it;
/// no series twice; every value an integer.
fn scrape(addr: SocketAddr) -> Scrape {
    let (status, headers, body) = http_get(addr, "/metrics", "");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(headers.get("content-type").map(String::as_str), Some("text/plain; version=0.0.4"));
    assert_eq!(headers.get("content-length"), Some(&body.len().to_string()), "{body}");
    let (mut helped, mut typed) = (Vec::new(), Vec::new());
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap_or_default().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(!typed.contains(&name.to_string()), "{name} typed twice");
            typed.push(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
            let name = series.split('{').next().unwrap_or_default();
            assert!(typed.last().is_some_and(|t| t == name), "{name} sampled outside its # TYPE block");
            assert!(helped.iter().any(|h| h == name), "{name} has no # HELP");
            let v = value.parse::<u64>().unwrap_or_else(|_| panic!("non-integer value in {line:?}"));
            assert!(samples.insert(series.to_string(), v).is_none(), "{series} twice");
        }
    }
    Scrape(samples)
}

/// Scrapes until `done` holds (the dataplane counts frames as it reads them), or 5 s have passed.
fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        let s = scrape(addr);
        if done(&s) || start.elapsed() > Duration::from_secs(5) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Datagrams that reach `sock` within 300 ms of the last one.
fn drain(sock: &UdpSocket) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut buf = [0u8; 64];
    let mut n = 0;
    while sock.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

#[test]
fn metrics_count_frames_and_follow_ctl_changes() {
    if !can_run() {
        return;
    }
    let pid = std::process::id();
    let client = ScratchNetns::new("met-c").expect("create client namespace");
    let server = ScratchNetns::new("met-s").expect("create server namespace");
    let dir = TempDir::new(&format!("dfw-live-metrics-{pid}"));
    std::fs::write(dir.0.join("policy.dfw"), policy()).expect("write policy");
    let sock = dir.0.join("control.sock");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("address");
    let (ctap, stap) = (format!("dfmc{}", pid % 1_000_000), format!("dfms{}", pid % 1_000_000));
    let config = format!(
        "policy = \"policy.dfw\"\ncontrol = \"{}\"\nmetrics = \"{metrics}\"\n\n\
         [[port]]\nname = \"client\"\ntap = \"{ctap}\"\nnetns = \"{}\"\nmac = \"02:fb:00:00:00:01\"\naddresses = [\"{CLIENT}/24\"]\n\n\
         [[port]]\nname = \"server\"\ntap = \"{stap}\"\nnetns = \"{}\"\nmac = \"02:fb:00:00:00:02\"\naddresses = [\"{SERVER}/24\"]\n",
        sock.display(),
        client.name(),
        server.name()
    );
    std::fs::write(dir.0.join("dfw.toml"), config).expect("write config");
    let mut daemon = Daemon::start(&dir.0, &sock);

    // Any path answers with the exposition; at start, both ports and both filters are there.
    let (status, _, body) = http_get(metrics, "/", "");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(body.contains("dfw_filter_connections{filter=\"server\"}"), "{body}");
    // A request larger than one read (a browser with cookies) still gets the whole answer.
    let cookie = format!("Cookie: {}\r\n", "c".repeat(6000));
    let (status, headers, big) = http_get(metrics, "/metrics", &cookie);
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert_eq!(headers.get("content-length"), Some(&big.len().to_string()));
    let s = scrape(metrics);
    for port in ["client", "server"] {
        assert!(s.has(&format!("dfw_port_rx_frames_total{{port=\"{port}\"}}")), "{s:?}");
        assert!(s.has(&format!("dfw_port_tx_errors_total{{port=\"{port}\"}}")), "{s:?}");
    }
    assert_eq!(s.get("dfw_filter_connections{filter=\"server\"}"), 0);

    // Sockets: the client's, and the server's on both ports (a datagram to SHUT reaching the server
    // would show the drop did not happen).
    let tx =
        client.run(|| UdpSocket::bind(format!("{CLIENT}:40000"))).expect("enter namespace").expect("bind");
    let open =
        server.run(|| UdpSocket::bind(format!("{SERVER}:{OPEN}"))).expect("enter namespace").expect("bind");
    let shut =
        server.run(|| UdpSocket::bind(format!("{SERVER}:{SHUT}"))).expect("enter namespace").expect("bind");
    let send = |port: u16, n: usize| {
        for i in 0..n {
            tx.send_to(format!("datagram {i}").as_bytes(), format!("{SERVER}:{port}")).expect("send");
        }
    };

    // Warm-up: the first datagram waits for ARP (through the L2 rule set); once it has been dropped at
    // the server, the neighbour is known and every later datagram is one frame.
    send(SHUT, 1);
    let s0 = scrape_until(metrics, |s| s.get(&frames("server", "in", "drop")) >= 1);
    assert_eq!(s0.get(&frames("server", "in", "drop")), 1, "{s0:?}");
    assert_eq!(drain(&shut), 0, "a datagram to the shut port reached the server");
    let s0 = scrape(metrics);

    // 1. Five datagrams to the shut port: out of the client by rule 21, dropped in to the server by
    //    rule 2 (reason "match"); the client's port saw them arrive and counted them dropped.
    send(SHUT, 5);
    let s1 = scrape_until(metrics, |s| s.since(&s0, &frames("server", "in", "drop")) >= 5);
    let delta = |name: &str| s1.since(&s0, name);
    assert_eq!(delta(&frames("server", "in", "drop")), 5, "{s1:?}");
    assert_eq!(delta(&frames("server", "in", "pass")), 0);
    assert_eq!(delta(&frames("client", "out", "pass")), 5);
    assert_eq!(delta("dfw_filter_drops_total{filter=\"server\",reason=\"match\"}"), 5);
    assert!(delta("dfw_port_rx_frames_total{port=\"client\"}") >= 5, "{s1:?}");
    assert!(delta("dfw_port_rx_dropped_total{port=\"client\"}") >= 5, "{s1:?}");
    // Ethernet, IPv4 and UDP headers and the 10-byte payload (taps hand frames over without padding).
    assert!(delta("dfw_port_rx_bytes_total{port=\"client\"}") >= 5 * (14 + 20 + 8 + 10), "{s1:?}");
    assert_eq!(drain(&shut), 0, "a datagram to the shut port reached the server");

    // 2. Three datagrams to the open port: admitted by rule 20 (one connection), all received; the
    //    server's port sent them.
    send(OPEN, 3);
    let s2 = scrape_until(metrics, |s| s.since(&s1, &frames("server", "in", "pass")) >= 3);
    let delta = |name: &str| s2.since(&s1, name);
    assert_eq!(delta(&frames("server", "in", "pass")), 3, "{s2:?}");
    assert_eq!(delta(&frames("server", "in", "drop")), 0);
    assert_eq!(delta(&frames("client", "out", "pass")), 3);
    assert_eq!(s2.get("dfw_filter_connections{filter=\"server\"}"), 1, "{s2:?}");
    assert!(delta("dfw_port_tx_frames_total{port=\"server\"}") >= 3, "{s2:?}");
    assert_eq!(drain(&open), 3);
    // The control socket's view agrees with the scrape.
    let stat = json(&sock, &["getfilterstat", "-f", "server"]);
    assert_eq!(
        stat["families"]["inet"]["in"]["pass"].as_u64(),
        Some(s2.get(&frames("server", "in", "pass")))
    );
    assert_eq!(
        stat["families"]["inet"]["in"]["drop"].as_u64(),
        Some(s2.get(&frames("server", "in", "drop")))
    );

    // 3. The generation follows `dfw ctl`: an address-set change, then a reload of the server's rules
    //    that opens SHUT too.
    let g0 = json(&sock, &["summarize"])["generation"].as_u64().expect("generation");
    assert_eq!(s2.get("dfw_generation"), g0);
    assert_eq!(
        ctl_ok(&sock, &["addrset", "add", "servers", "10.251.0.3"]).trim(),
        format!("generation {}", g0 + 1)
    );
    assert_eq!(scrape(metrics).get("dfw_generation"), g0 + 1);
    let reload = dir.0.join("server-rules.dfw");
    std::fs::write(
        &reload,
        format!(
            "addrset servers {{ ip {SERVER}, }}\nruleset mainrs {{\n  rule 20 at 1 in protocol udp from any to addrset servers port {{{OPEN},{SHUT}}} accept;\n  \
             rule 21 at 2 out protocol any from any to any accept;\n  rule 2 at 3 inout protocol any from any to any drop;\n}}\n"
        ),
    )
    .expect("write rules");
    ctl_ok(&sock, &["load", "-f", "server", reload.to_str().expect("path")]);
    let s3 = scrape(metrics);
    assert_eq!(s3.get("dfw_generation"), g0 + 2);
    assert_eq!(json(&sock, &["summarize"])["generation"].as_u64(), Some(g0 + 2));

    // 4. Under the new rules the same datagrams pass, and the counters go on from where they were.
    send(SHUT, 2);
    let s4 = scrape_until(metrics, |s| s.since(&s3, &frames("server", "in", "pass")) >= 2);
    assert!(s3.since(&s2, &frames("server", "in", "pass")) >= 0, "counters went back on reload: {s3:?}");
    assert_eq!(s4.since(&s3, &frames("server", "in", "pass")), 2, "{s4:?}");
    assert_eq!(s4.since(&s3, &frames("server", "in", "drop")), 0);
    assert_eq!(drain(&shut), 2);

    // 5. A scraper that connects and says nothing does not stop the next one for long.
    let idle = TcpStream::connect(metrics).expect("connect");
    let start = Instant::now();
    let _ = scrape(metrics);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "a silent client held the endpoint {:?}",
        start.elapsed()
    );
    drop(idle);

    let st = daemon.stop().expect("dfw run did not stop on SIGTERM");
    assert!(st.success(), "{st}");
    assert!(
        TcpStream::connect_timeout(&metrics, Duration::from_millis(500)).is_err(),
        "metrics still served"
    );
}
