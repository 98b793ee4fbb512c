//! Prometheus metrics: a tiny HTTP/1.0 responder on a TCP listener (loopback unless configured
//! otherwise) answering every request with the text exposition format. Values come from the dataplane
//! between batches, like the control views.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use engine::{FilterCounters, Snapshot};

use crate::dataplane::Job;
use crate::port::PortStats;

/// Everything one scrape shows.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Engine generation.
    pub generation: u64,
    /// Per port.
    pub ports: Vec<(String, PortStats)>,
    /// Per filter: name, counters, connections.
    pub filters: Vec<(String, FilterCounters, usize)>,
}

/// Collects a scrape from the dataplane (waits up to 2 s).
pub fn collect(jobs: &Sender<Job>) -> Option<Scrape> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let job: Job = Box::new(move |v| {
        let filters = v
            .snap
            .filters
            .iter()
            .map(|f| {
                let mut c = FilterCounters::default();
                if let Some(s) = v.worker.state(f.slot) {
                    c.merge(&s.counters);
                }
                (f.name.clone(), c, v.worker.connections(f.slot))
            })
            .collect();
        let _ = tx.send(Scrape { generation: v.snap.generation, ports: v.ports.clone(), filters });
    });
    jobs.send(job).ok()?;
    rx.recv_timeout(Duration::from_secs(2)).ok()
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The text exposition of a scrape.
pub fn render(s: &Scrape) -> String {
    let mut o = String::new();
    let _ =
        writeln!(o, "# HELP dfw_generation Engine policy generation in force.\n# TYPE dfw_generation gauge");
    let _ = writeln!(o, "dfw_generation {}", s.generation);
    type PortField = fn(&PortStats) -> u64;
    let port_metrics: [(&str, &str, PortField); 8] = [
        ("dfw_port_rx_frames_total", "Frames received on the port.", |p| p.rx_frames),
        ("dfw_port_rx_bytes_total", "Bytes received on the port.", |p| p.rx_bytes),
        ("dfw_port_rx_malformed_total", "Received frames that could not be parsed.", |p| p.rx_malformed),
        ("dfw_port_rx_dropped_total", "Received frames a filter did not pass.", |p| p.rx_dropped),
        ("dfw_port_tx_frames_total", "Frames sent on the port.", |p| p.tx_frames),
        ("dfw_port_tx_bytes_total", "Bytes sent on the port.", |p| p.tx_bytes),
        ("dfw_port_tx_busy_total", "Frames not sent because the device pushed back.", |p| p.tx_busy),
        ("dfw_port_tx_errors_total", "Frames not sent because of an error.", |p| p.tx_errors),
    ];
    for (name, help, get) in port_metrics {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (port, st) in &s.ports {
            let _ = writeln!(o, "{name}{{port=\"{}\"}} {}", esc(port), get(st));
        }
    }
    let _ = writeln!(o, "# HELP dfw_filter_frames_total Filter decisions by family, direction and verdict.\n# TYPE dfw_filter_frames_total counter");
    for (name, c, _) in &s.filters {
        for (fi, fam) in engine::counters::FAMILIES.iter().enumerate() {
            for (di, dir) in ["in", "out"].iter().enumerate() {
                for (vi, verdict) in ["pass", "drop", "reject", "punt"].iter().enumerate() {
                    let n = c.verdicts[fi][di][vi];
                    if n > 0 {
                        let _ = writeln!(
                            o,
                            "dfw_filter_frames_total{{filter=\"{}\",family=\"{fam}\",dir=\"{dir}\",verdict=\"{verdict}\"}} {n}",
                            esc(name)
                        );
                    }
                }
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP dfw_filter_drops_total Frames not passed, by reason.\n# TYPE dfw_filter_drops_total counter"
    );
    for (name, c, _) in &s.filters {
        for (reason, n) in c.reason_map(true) {
            let _ = writeln!(o, "dfw_filter_drops_total{{filter=\"{}\",reason=\"{reason}\"}} {n}", esc(name));
        }
    }
    let _ = writeln!(
        o,
        "# HELP dfw_filter_connections Connections tracked.\n# TYPE dfw_filter_connections gauge"
    );
    for (name, _, n) in &s.filters {
        let _ = writeln!(o, "dfw_filter_connections{{filter=\"{}\"}} {n}", esc(name));
    }
    let _ = writeln!(o, "# HELP dfw_filter_torn_down_total Connections cut by a policy change.\n# TYPE dfw_filter_torn_down_total counter");
    for (name, c, _) in &s.filters {
        let _ = writeln!(o, "dfw_filter_torn_down_total{{filter=\"{}\"}} {}", esc(name), c.torn_down);
    }
    o
}

/// The most request bytes read before answering: far above any scraper's request.
const MAX_HEAD: usize = 64 * 1024;
/// How long one client may take to send its request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the request head, up to the empty line that ends it (RFC 9112 §2.1; a bare LF ends lines too,
/// §2.2), at most [`MAX_HEAD`] bytes and [`HEAD_TIMEOUT`]. The request itself does not matter (every
/// path gets the metrics), but it must be read whole: closing a socket with unread bytes makes the
/// kernel reset the connection, and the client then loses the answer. Returns the bytes read.
fn read_head(s: &mut TcpStream) -> usize {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while head.len() < MAX_HEAD {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Look for the end where this read could have completed it.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        let tail = &head[from..];
        if tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n") {
            break;
        }
    }
    head.len()
}

/// Serves `/metrics` (any path, in fact) on `listener` until `stop` turns true.
pub fn serve(
    listener: TcpListener,
    jobs: Sender<Job>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    stop: Arc<AtomicBool>,
) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = read_head(&mut s);
                let body = match collect(&jobs) {
                    Some(scrape) => render(&scrape),
                    None => format!("dfw_generation {}\n", snapshot.load().generation),
                };
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_ports_and_filters() {
        let mut c = FilterCounters::default();
        c.verdicts[0][0][1] = 3;
        c.drop_reasons[engine::Reason::NoMatch.index()] = 3;
        let s = Scrape {
            generation: 7,
            ports: vec![("web\"1".into(), PortStats { rx_frames: 5, ..PortStats::default() })],
            filters: vec![("f".into(), c, 2)],
        };
        let t = render(&s);
        assert!(t.contains("dfw_generation 7"));
        assert!(t.contains("dfw_port_rx_frames_total{port=\"web\\\"1\"} 5"));
        assert!(
            t.contains("dfw_filter_frames_total{filter=\"f\",family=\"inet\",dir=\"in\",verdict=\"drop\"} 3")
        );
        assert!(t.contains("dfw_filter_drops_total{filter=\"f\",reason=\"no-match\"} 3"));
        assert!(t.contains("dfw_filter_connections{filter=\"f\"} 2"));
    }

    /// Sends `parts` from another thread, pausing between them, then closes; returns what `read_head`
    /// read.
    fn head_of(parts: Vec<Vec<u8>>) -> usize {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            for p in parts {
                c.write_all(&p).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (mut s, _) = l.accept().unwrap();
        let n = read_head(&mut s);
        client.join().unwrap();
        n
    }

    #[test]
    fn the_whole_request_head_is_read_across_reads() {
        // A 6 KiB cookie: more than one read, and the end split across two writes.
        let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r", "c".repeat(6000));
        assert_eq!(head_of(vec![big.as_bytes().to_vec(), b"\n".to_vec()]), big.len() + 1);
        let bare = b"GET / HTTP/1.0\nHost: x\n\n".to_vec();
        assert_eq!(head_of(vec![bare.clone()]), bare.len());
        // A client that goes away mid-request: whatever came.
        assert_eq!(head_of(vec![b"GET / HT".to_vec()]), 8);
    }
}
