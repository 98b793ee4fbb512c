//! The control socket: a Unix stream socket (mode 0600; peers whose uid is not the daemon's are
//! refused by `SO_PEERCRED`) speaking JSON lines. Each request is one JSON object on one line, each
//! answer one line:
//!
//! ```text
//! → {"cmd":"getrules","filter":"nic-5739119-eth33-vmware-sfw.1"}
//! ← {"ok":true,"text":"ruleset mainrs {\n ...","data":{...}}
//! → {"cmd":"addrset","op":"add","set":"105ee703-...","addrs":["172.15.0.2"]}
//! ← {"ok":true,"text":"generation 4\n","data":{"generation":4}}
//! ← {"ok":false,"error":"no filter 'x' (filters: a, b)"}
//! ```
//!
//! Views (`summarize`, `getfilters`, `getrules`, `getaddrsets`, `getflows`, `getfilterstat`,
//! `rulestats`, `gettimeout`, `trace`) answer with `data` (JSON) and `text` (shaped like the
//! `vsipioctl` output operators know); changes (`load`, `addrset`, `flows-flush`) answer with the new
//! engine generation. The protocol is described in `docs/control-protocol.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use engine::conntrack::ProtoState;
use engine::{Change, Engine, FilterCounters};
use rules::{AddrEntry, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::PortConfig;
use crate::dataplane::{now_ns, DpView, Job};
use crate::trace::{trace, TraceSpec};

/// One change inside an atomic `commit` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WireChange {
    /// Add members to every definition of a set.
    AddrsetAdd {
        /// Set id.
        set: String,
        /// Members (`10.0.0.1`, `10.0.0.0/24`, `aa:bb:cc:dd:ee:ff`).
        addrs: Vec<String>,
    },
    /// Remove members from every definition of a set.
    AddrsetDel {
        /// Set id.
        set: String,
        /// Members.
        addrs: Vec<String>,
    },
    /// Replace the whole policy with this policy file's text.
    Policy {
        /// A name for error messages (usually the file name).
        name: String,
        /// The policy text.
        text: String,
    },
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Several changes applied as one atomic commit (what `dfw netpol apply` sends).
    Commit {
        /// The changes, in order.
        changes: Vec<WireChange>,
    },
    /// Ports, their filters and failure policies (`summarize-dvfilter`).
    Summarize,
    /// Filter names and hashes.
    Getfilters,
    /// A filter's rule sets.
    Getrules {
        /// Filter name.
        filter: String,
    },
    /// A filter's address sets.
    Getaddrsets {
        /// Filter name.
        filter: String,
    },
    /// A filter's connection table.
    Getflows {
        /// Filter name.
        filter: String,
    },
    /// A filter's pass/drop counters.
    Getfilterstat {
        /// Filter name.
        filter: String,
    },
    /// A filter's per-rule counters.
    Rulestats {
        /// Filter name.
        filter: String,
    },
    /// A filter's connection timers.
    Gettimeout {
        /// Filter name.
        filter: String,
    },
    /// Replace one filter's rule sets and address sets with those of a policy text (atomic).
    Load {
        /// Filter name.
        filter: String,
        /// Name of the file the text came from (for error positions).
        name: String,
        /// The policy text.
        text: String,
    },
    /// Add or remove address-set members.
    Addrset {
        /// `add` or `del`.
        op: String,
        /// Set id.
        set: String,
        /// Addresses (`10.0.0.1`, `10.0.0.0/24`, `aa:bb:cc:dd:ee:ff`).
        addrs: Vec<String>,
    },
    /// Remove every connection of a filter.
    FlowsFlush {
        /// Filter name.
        filter: String,
    },
    /// Traceflow against the policy in force.
    Trace(TraceSpec),
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Human-readable answer.
    #[serde(default)]
    pub text: String,
    /// Structured answer.
    #[serde(default)]
    pub data: Value,
    /// What went wrong (every error, one per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn ok(text: String, data: Value) -> Response {
        Response { ok: true, text, data, error: None }
    }
    fn err(e: impl Into<String>) -> Response {
        Response { ok: false, text: String::new(), data: Value::Null, error: Some(e.into()) }
    }
}

/// Longest request line accepted (a policy file travels inside `load`).
pub const MAX_REQUEST: usize = 16 << 20;

/// What the control thread works with.
pub struct Control {
    /// The engine: the policy in force and commits.
    pub engine: Engine,
    /// The ports as configured.
    pub ports: Vec<PortConfig>,
    /// Jobs for the dataplane.
    pub jobs: Sender<Job>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("ports", &self.ports).finish()
    }
}

/// Binds the control socket at `path` with mode 0600 (owner only). A stale socket file is replaced; a
/// socket another daemon still answers on is an error.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another dfw daemon answers on this control socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    // SAFETY: umask only changes the process's file-creation mask; it is restored right after bind, so
    // the socket file is never visible with wider permissions than 0600.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(l)
}

/// The uid of the process at the other end of `s` (`SO_PEERCRED`).
pub fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` holds its size; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Most control connections open at once; one more is told so and closed.
pub const MAX_SESSIONS: usize = 16;

/// A session's request, with where its answer goes.
type Asked = (Request, Sender<Response>);

/// Serves `listener` until `stop` turns true. Every connection has a thread of its own that reads its
/// requests and writes the answers, so a client that connects and says nothing holds up no other;
/// the requests themselves are answered here, one at a time, in the order they arrive (a change is
/// never interleaved with another).
pub fn serve(listener: UnixListener, mut ctl: Control, stop: Arc<AtomicBool>) {
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::error!(error = %e, "control socket: cannot set non-blocking; control disabled");
        return;
    }
    // SAFETY: geteuid cannot fail and has no preconditions.
    let me = unsafe { libc::geteuid() };
    let (asks, asked) = crossbeam_channel::unbounded::<Asked>();
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                match peer_uid(&s) {
                    Ok(uid) if uid == me => {}
                    Ok(uid) => {
                        tracing::warn!(uid, "control: refused a connection from another user");
                        let _ = reply(
                            &s,
                            &Response::err(format!("permission denied: uid {uid} is not the daemon's")),
                        );
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control: cannot read peer credentials; refused");
                        continue;
                    }
                }
                if open.load(Ordering::Relaxed) >= MAX_SESSIONS {
                    tracing::warn!("control: {MAX_SESSIONS} connections open; refused another");
                    let _ = reply(
                        &s,
                        &Response::err(format!(
                            "{MAX_SESSIONS} control connections are open; try again later"
                        )),
                    );
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (asks, done) = (asks.clone(), Arc::clone(&open));
                let started = std::thread::Builder::new().name("dfw-ctl-session".into()).spawn(move || {
                    session(s, |req| {
                        let (tx, rx) = crossbeam_channel::bounded(1);
                        asks.send((req, tx)).ok()?;
                        rx.recv().ok()
                    });
                    done.fetch_sub(1, Ordering::Relaxed);
                });
                if let Err(e) = started {
                    open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "control: cannot start a session thread");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Answer what sessions ask while waiting for the next connection.
                if let Ok((req, back)) = asked.recv_timeout(Duration::from_millis(20)) {
                    let _ = back.send(ctl.handle(req));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "control: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        while let Ok((req, back)) = asked.try_recv() {
            let _ = back.send(ctl.handle(req));
        }
    }
}

/// Reads requests on one connection and writes what `answer` gives for each, until the peer closes
/// it, is idle for 30 s, or `answer` gives nothing (the control thread has stopped).
fn session(s: UnixStream, mut answer: impl FnMut(Request) -> Option<Response>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(&s).take(MAX_REQUEST as u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() >= MAX_REQUEST && line.last() != Some(&b'\n') {
            // The rest of the line would be read as more requests, each answered with a
            // confusing error: say what happened once, and end the session.
            let e = format!("request longer than the {} MiB limit; nothing was done", MAX_REQUEST >> 20);
            let _ = reply(&s, &Response::err(e));
            return;
        }
        let resp = match serde_json::from_slice::<Request>(&line) {
            Ok(req) => match answer(req) {
                Some(r) => r,
                None => return,
            },
            Err(e) => Response::err(format!("bad request: {e}")),
        };
        if reply(&s, &resp).is_err() {
            return;
        }
        reader.set_limit(MAX_REQUEST as u64);
    }
}

fn reply(mut s: &UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)
}

impl Control {
    /// Answers one request.
    pub fn handle(&mut self, req: Request) -> Response {
        tracing::debug!(?req, "control request");
        let r = match req {
            Request::Summarize => self.summarize(),
            Request::Getfilters => Ok(self.getfilters()),
            Request::Getrules { filter } => self.getrules(&filter),
            Request::Getaddrsets { filter } => self.getaddrsets(&filter),
            Request::Getflows { filter } => self.getflows(&filter),
            Request::Getfilterstat { filter } => self.getfilterstat(&filter),
            Request::Rulestats { filter } => self.rulestats(&filter),
            Request::Gettimeout { filter } => self.gettimeout(&filter),
            Request::Load { filter, name, text } => self.load(&filter, &name, &text),
            Request::Addrset { op, set, addrs } => self.addrset(&op, &set, &addrs),
            Request::Commit { changes } => self.commit(&changes),
            Request::FlowsFlush { filter } => self.flush(&filter),
            Request::Trace(spec) => match trace(self.engine.policy(), &spec) {
                Ok(t) => Ok(Response::ok(t.text(), serde_json::to_value(&t).unwrap_or(Value::Null))),
                Err(e) => Err(e.to_string()),
            },
        };
        r.unwrap_or_else(Response::err)
    }

    /// Runs `f` on the dataplane thread between batches and returns its result.
    fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut DpView<'_>) -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move |v| {
            let _ = tx.send(f(v));
        });
        self.jobs.send(job).map_err(|_| "the dataplane has stopped".to_string())?;
        rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "the dataplane did not answer".to_string())
    }

    /// The index and slot of filter `name` in the snapshot in force.
    fn filter(&self, name: &str) -> Result<(usize, usize), String> {
        let snap = self.engine.snapshot();
        match snap.filter(name) {
            Some((i, f)) => Ok((i, f.slot)),
            None => {
                let names: Vec<&str> = snap.filters.iter().map(|f| f.name.as_str()).collect();
                Err(format!("no filter '{name}' (filters: {})", names.join(", ")))
            }
        }
    }

    fn summarize(&self) -> Result<Response, String> {
        let learned = self.ask(|v| v.switch.entries()).unwrap_or_default();
        let snap = self.engine.snapshot();
        let conns = self
            .ask(|v| v.snap.filters.iter().map(|f| v.worker.connections(f.slot)).collect::<Vec<usize>>())?;
        let mut text = String::new();
        let mut ports = Vec::new();
        for (pi, p) in self.ports.iter().enumerate() {
            // The filters guarding this port: their vNIC MAC is the port's, or was learned on it.
            let mut filters = Vec::new();
            for (fi, f) in snap.filters.iter().enumerate() {
                let Some(mac) = f.vnic.mac else { continue };
                let here = p.mac == Some(mac.0) || learned.iter().any(|(m, port)| *m == mac.0 && *port == pi);
                if here {
                    filters.push(json!({
                        "name": f.name,
                        "agentName": "dfw",
                        "state": "IOChain Attached",
                        "failurePolicy": f.failure.as_str(),
                        "generation": f.generation,
                        "connections": conns.get(fi).copied().unwrap_or(0),
                    }));
                }
            }
            let _ = writeln!(
                text,
                "port {} ({} {}{}{})",
                p.name,
                p.kind.as_str(),
                p.iface,
                p.netns.as_ref().map(|n| format!(" in netns {n}")).unwrap_or_default(),
                p.mac.map(|m| format!(", mac {}", fmt_mac(m))).unwrap_or_default()
            );
            if filters.is_empty() {
                let _ = writeln!(text, "  (no vNIC filter seen on this port yet)");
            }
            for f in &filters {
                let _ = writeln!(
                    text,
                    "  name: {}\n   agentName: dfw\n   state: IOChain Attached\n   failurePolicy: {}\n   generation: {}  connections: {}",
                    f["name"].as_str().unwrap_or(""),
                    f["failurePolicy"].as_str().unwrap_or(""),
                    f["generation"],
                    f["connections"]
                );
            }
            ports.push(json!({
                "name": p.name, "kind": p.kind.as_str(), "iface": p.iface, "netns": p.netns,
                "mac": p.mac.map(fmt_mac), "filters": filters,
            }));
        }
        let unattached: Vec<&str> = snap
            .filters
            .iter()
            .filter(|f| {
                !ports.iter().any(|p| {
                    p["filters"].as_array().is_some_and(|a| a.iter().any(|x| x["name"] == f.name.as_str()))
                })
            })
            .map(|f| f.name.as_str())
            .collect();
        if !unattached.is_empty() {
            let _ = writeln!(text, "filters not (yet) on a port: {}", unattached.join(", "));
        }
        let _ = writeln!(text, "generation {}", snap.generation);
        Ok(Response::ok(
            text,
            json!({"generation": snap.generation, "ports": ports, "unattached": unattached}),
        ))
    }

    fn getfilters(&self) -> Response {
        let snap = self.engine.snapshot();
        let mut text = String::new();
        let mut list = Vec::new();
        for f in &snap.filters {
            let vnic = vnic_text(&f.vnic);
            let _ = writeln!(
                text,
                "Filter Name              : {}\nFilter Hash              : {:08x}\nvNIC                     : {}\nFailure Policy           : {}\nGeneration               : {}\n",
                f.name, f.hash, vnic, f.failure.as_str(), f.generation
            );
            list.push(json!({"name": f.name, "hash": format!("{:08x}", f.hash), "vnic": vnic,
                "failurePolicy": f.failure.as_str(), "generation": f.generation}));
        }
        Response::ok(text, json!({"filters": list}))
    }

    fn spec(&self, filter: &str) -> Result<&rules::FilterSpec, String> {
        self.filter(filter)?;
        self.engine
            .policy()
            .filters
            .iter()
            .find(|f| f.name == filter)
            .ok_or_else(|| format!("no filter '{filter}'"))
    }

    fn getrules(&self, filter: &str) -> Result<Response, String> {
        let spec = self.spec(filter)?;
        let snap = self.engine.snapshot();
        let Some((_, cfg)) = snap.filter(filter) else { return Err(format!("no filter '{filter}'")) };
        let realized = rfc3339(cfg.realized_ns);
        let mut text = String::new();
        let mut sets = Vec::new();
        for rs in self.engine.policy().rulesets_for(spec) {
            let mut rs = rs.clone();
            rs.comments.clear();
            rs.generation = Some(cfg.generation);
            rs.realized = Some(realized.clone());
            let _ = writeln!(text, "{rs}");
            sets.push(json!({
                "name": rs.name, "generation": cfg.generation, "realized": realized,
                "rules": rs.rules.iter().map(|r| json!({"id": r.id, "position": r.position, "text": r.to_string().trim()})).collect::<Vec<_>>(),
            }));
        }
        Ok(Response::ok(text, json!({"filter": filter, "rulesets": sets})))
    }

    fn getaddrsets(&self, filter: &str) -> Result<Response, String> {
        let spec = self.spec(filter)?;
        let mut text = String::new();
        let mut sets = Vec::new();
        for a in self.engine.policy().addrsets_for(spec) {
            let mut a = a.clone();
            a.comments.clear();
            let _ = writeln!(text, "{a}");
            sets.push(json!({
                "id": a.id, "generation": a.generation.unwrap_or(0),
                "entries": a.entries.iter().map(entry_text).collect::<Vec<_>>(),
            }));
        }
        Ok(Response::ok(text, json!({"filter": filter, "addrsets": sets})))
    }

    fn getflows(&self, filter: &str) -> Result<Response, String> {
        let (_, slot) = self.filter(filter)?;
        let flows = self.ask(move |v| {
            let now_s = (v.now_ns / 1_000_000_000) as u32;
            let Some(state) = v.worker.state(slot) else { return Vec::new() };
            let mut out = Vec::new();
            for (e, expires) in state.conns.iter() {
                if expires <= now_s {
                    continue;
                }
                let c = &e.value;
                let (init, resp) = if c.initiator_lo() { (e.key.lo, e.key.hi) } else { (e.key.hi, e.key.lo) };
                // Counts only where the filter keeps them (`flowCounts on`, or a logged rule).
                let counts = state.flow_counts(e.slot, c);
                let (proto, states) = match c.proto() {
                    ProtoState::Tcp(t) => {
                        let p = t.peers();
                        ("tcp".to_string(), Some([p[0].as_str().to_string(), p[1].as_str().to_string()]))
                    }
                    ProtoState::Icmp { .. } => ("icmp".to_string(), None),
                    ProtoState::Datagram { .. } => (
                        if e.key.proto == 17 { "udp".to_string() } else { format!("proto-{}", e.key.proto) },
                        None,
                    ),
                };
                let ports = matches!(e.key.proto, 6 | 17 | 132);
                let ep = |x: engine::flow::Endpoint| {
                    if ports {
                        format!("{}:{}", x.ip(), x.port)
                    } else {
                        x.ip().to_string()
                    }
                };
                out.push(json!({
                    "proto": proto,
                    "src": ep(init),
                    "dst": ep(resp),
                    "states": states,
                    "timeout": expires - now_s,
                    "packets": counts.map(|n| n.packets),
                    "bytes": counts.map(|n| n.bytes),
                    "rule": c.rule,
                }));
            }
            out
        })?;
        let mut text = format!("{} connection(s) in filter {filter}\n", flows.len());
        for f in &flows {
            let states = match f["states"].as_array() {
                Some(s) => format!("{}:{}", s[0].as_str().unwrap_or(""), s[1].as_str().unwrap_or("")),
                None => "-".to_string(),
            };
            let counts = if f["packets"].is_null() {
                String::new()
            } else {
                format!(
                    " pkts {}/{} bytes {}/{}",
                    f["packets"][0], f["packets"][1], f["bytes"][0], f["bytes"][1]
                )
            };
            let _ = writeln!(
                text,
                "{} {} -> {} {} expires {}s{counts} rule {}",
                f["proto"].as_str().unwrap_or(""),
                f["src"].as_str().unwrap_or(""),
                f["dst"].as_str().unwrap_or(""),
                states,
                f["timeout"],
                f["rule"]
            );
        }
        Ok(Response::ok(text, json!({"filter": filter, "flows": flows})))
    }

    fn counters(&self, slot: usize) -> Result<FilterCounters, String> {
        self.ask(move |v| {
            let mut c = FilterCounters::default();
            if let Some(s) = v.worker.state(slot) {
                c.merge(&s.counters);
            }
            c
        })
    }

    fn getfilterstat(&self, filter: &str) -> Result<Response, String> {
        let (_, slot) = self.filter(filter)?;
        let c = self.counters(slot)?;
        let mut text = format!("filter {filter}\n");
        let mut fams = serde_json::Map::new();
        for (fi, fam) in engine::counters::FAMILIES.iter().enumerate() {
            let mut dirs = serde_json::Map::new();
            for (di, dir) in ["in", "out"].iter().enumerate() {
                let v = c.verdicts[fi][di];
                let _ = writeln!(
                    text,
                    "  {fam:<6} {dir:<3}  pass {:>10}  drop {:>10}  reject {:>8}  punt {:>8}",
                    v[0], v[1], v[2], v[3]
                );
                dirs.insert(
                    dir.to_string(),
                    json!({"pass": v[0], "drop": v[1], "reject": v[2], "punt": v[3]}),
                );
            }
            fams.insert(fam.to_string(), Value::Object(dirs));
        }
        let reasons = c.reason_map(true);
        let r: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(text, "  drop reasons: {}", if r.is_empty() { "none".into() } else { r.join(", ") });
        let _ = writeln!(
            text,
            "  torn down {}  expired {}  rejects sent {}  rejects over the ICMP error rate {}",
            c.torn_down, c.expired, c.rejects_sent, c.rejects_limited
        );
        Ok(Response::ok(
            text,
            json!({"filter": filter, "families": fams, "drop_reasons": reasons, "torn_down": c.torn_down,
                "expired": c.expired, "rejects_sent": c.rejects_sent, "rejects_limited": c.rejects_limited}),
        ))
    }

    fn rulestats(&self, filter: &str) -> Result<Response, String> {
        let (_, slot) = self.filter(filter)?;
        let c = self.counters(slot)?;
        let snap = self.engine.snapshot();
        let cfg = snap.filter(filter).map(|(_, f)| std::sync::Arc::clone(f));
        let mut text =
            format!("{:<22} {:>12} {:>14} {:>10} {:>10}\n", "RuleId", "Packets", "Bytes", "Sessions", "Hits");
        let mut rows = Vec::new();
        for ((l2, id), r) in c.rule_list() {
            let set = cfg
                .as_ref()
                .and_then(|f| f.ruleset_name(l2).map(str::to_string))
                .unwrap_or_else(|| if l2 { "L2".into() } else { "L3".into() });
            let _ = writeln!(
                text,
                "{:<22} {:>12} {:>14} {:>10} {:>10}",
                format!("{set}/{id}"),
                r.packets,
                r.bytes,
                r.sessions,
                r.hits
            );
            rows.push(json!({"ruleset": set, "id": id, "packets": r.packets, "bytes": r.bytes, "sessions": r.sessions, "hits": r.hits}));
        }
        Ok(Response::ok(text, json!({"filter": filter, "rules": rows})))
    }

    fn gettimeout(&self, filter: &str) -> Result<Response, String> {
        self.filter(filter)?;
        let snap = self.engine.snapshot();
        let Some((_, cfg)) = snap.filter(filter) else { return Err(format!("no filter '{filter}'")) };
        let mut text = format!("timeouts of filter {filter} (seconds)\n");
        let mut map = BTreeMap::new();
        for (name, secs) in cfg.timeouts.list() {
            let _ = writeln!(text, "  {name:<16} {secs}");
            map.insert(name, secs);
        }
        Ok(Response::ok(text, json!({"filter": filter, "timeouts": map})))
    }

    fn committed(&mut self, changes: &[Change]) -> Result<Response, String> {
        let generation = self.engine.commit(changes, now_ns()).map_err(|e| e.to_string())?;
        tracing::info!(generation, "policy change committed");
        Ok(Response::ok(format!("generation {generation}\n"), json!({"generation": generation})))
    }

    fn load(&mut self, filter: &str, name: &str, text: &str) -> Result<Response, String> {
        self.filter(filter)?;
        let policy = new_policy_for(self.engine.policy(), filter, name, text)?;
        self.committed(&[Change::Policy(policy)])
    }

    fn commit(&mut self, wire: &[WireChange]) -> Result<Response, String> {
        let mut changes = Vec::with_capacity(wire.len());
        let mut errors = Vec::new();
        for w in wire {
            match w {
                WireChange::AddrsetAdd { set, addrs } | WireChange::AddrsetDel { set, addrs } => {
                    let mut entries = Vec::new();
                    for a in addrs {
                        match parse_entry(a) {
                            Some(e) => entries.push(e),
                            None => errors.push(format!("set {set}: '{a}' is not an address, prefix or MAC")),
                        }
                    }
                    let set = set.clone();
                    changes.push(if matches!(w, WireChange::AddrsetAdd { .. }) {
                        Change::AddrSetAdd { set, entries }
                    } else {
                        Change::AddrSetDel { set, entries }
                    });
                }
                WireChange::Policy { name, text } => match rules::parse_policy(text) {
                    Ok(p) => changes.push(Change::Policy(p)),
                    Err(d) => errors.extend(d.errors().map(|e| e.one_line(name))),
                },
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        if changes.is_empty() {
            return Err("commit with no change".into());
        }
        self.committed(&changes)
    }

    fn addrset(&mut self, op: &str, set: &str, addrs: &[String]) -> Result<Response, String> {
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        for a in addrs {
            match parse_entry(a) {
                Some(e) => entries.push(e),
                None => bad.push(format!("'{a}' is not an address, prefix or MAC")),
            }
        }
        if !bad.is_empty() {
            return Err(bad.join("\n"));
        }
        if entries.is_empty() {
            return Err("no address given".into());
        }
        let change = match op {
            "add" => Change::AddrSetAdd { set: set.to_string(), entries },
            "del" => Change::AddrSetDel { set: set.to_string(), entries },
            other => return Err(format!("unknown addrset operation '{other}' (add or del)")),
        };
        self.committed(&[change])
    }

    fn flush(&mut self, filter: &str) -> Result<Response, String> {
        let (index, _) = self.filter(filter)?;
        let n = self.ask(move |v| {
            let mut sink = SinkFn(&mut *v.sink);
            v.worker.flush_filter(v.snap, index, v.now_ns, &mut sink)
        })?;
        let generation = self.engine.generation();
        Ok(Response::ok(
            format!("{n} connection(s) flushed; generation {generation}\n"),
            json!({"flushed": n, "generation": generation}),
        ))
    }
}

/// Adapts a log callback to an engine sink.
struct SinkFn<'a>(&'a mut dyn FnMut(engine::log::LogRecord));
impl engine::Sink for SinkFn<'_> {
    fn log(&mut self, rec: engine::log::LogRecord) {
        (self.0)(rec);
    }
}

/// The policy that results from loading `text` (named `name`) into filter `filter` of `current`: the
/// filter's own rule sets and address sets become those of the text (its `filter <filter>` block if it
/// has one, else its top-level sets). Every error of the text is reported, one per line.
pub fn new_policy_for(current: &Policy, filter: &str, name: &str, text: &str) -> Result<Policy, String> {
    let checked = rules::check_policy(text);
    if checked.diagnostics.has_errors() {
        let lines: Vec<String> = checked.diagnostics.errors().map(|d| d.one_line(name)).collect();
        return Err(lines.join("\n"));
    }
    let loaded = checked.policy;
    let (rulesets, addrsets) = if loaded.filters.is_empty() {
        (loaded.rulesets, loaded.addrsets)
    } else {
        match loaded.filters.into_iter().find(|f| f.name == filter) {
            Some(mut f) => {
                // Shared sets of the file are visible to its filter block too.
                let mut rs = std::mem::take(&mut f.rulesets);
                let shared: Vec<_> =
                    loaded.rulesets.into_iter().filter(|s| !rs.iter().any(|o| o.name == s.name)).collect();
                rs.extend(shared);
                let mut sets = std::mem::take(&mut f.addrsets);
                let shared: Vec<_> =
                    loaded.addrsets.into_iter().filter(|s| !sets.iter().any(|o| o.id == s.id)).collect();
                sets.extend(shared);
                (rs, sets)
            }
            None => return Err(format!("{name}: has filter blocks but none named '{filter}'")),
        }
    };
    if rulesets.is_empty() && addrsets.is_empty() {
        return Err(format!("{name}: holds no rule set or address set"));
    }
    let mut policy = current.clone();
    let Some(spec) = policy.filters.iter_mut().find(|f| f.name == filter) else {
        return Err(format!("no filter '{filter}'"));
    };
    spec.rulesets = rulesets;
    spec.addrsets = addrsets;
    // Load-time checks (undefined sets, two L3 sets, ...) before anything is committed.
    Engine::new(&policy).map_err(|e| format!("{name}: {e}"))?;
    Ok(policy)
}

/// Parses an address-set member: `10.0.0.1`, `10.0.0.0/24`, `2001:db8::/32` or `aa:bb:cc:dd:ee:ff`.
pub fn parse_entry(s: &str) -> Option<AddrEntry> {
    if let Ok(m) = s.parse::<rules::Mac>() {
        return Some(AddrEntry::Mac(m));
    }
    rules::text::parse_ipnet(s, rules::Span::default()).ok().map(AddrEntry::Ip)
}

fn entry_text(e: &AddrEntry) -> String {
    match e {
        AddrEntry::Ip(n) => format!("ip {n}"),
        AddrEntry::Mac(m) => format!("mac {m}"),
    }
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn vnic_text(v: &rules::Vnic) -> String {
    let mut parts = Vec::new();
    if let Some(m) = v.mac {
        parts.push(format!("mac {m}"));
    }
    parts.extend(v.ips.iter().map(|i| format!("ip {i}")));
    parts.join(" ")
}

fn rfc3339(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(ns / 1_000_000_000);
    humantime::format_rfc3339_seconds(t).to_string().trim_end_matches('Z').to_string()
}

/// Sends one request to the daemon at `path` and reads the answer.
pub fn request(path: &Path, req: &Request) -> std::io::Result<Response> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    (&s).write_all(&line)?;
    let mut answer = Vec::new();
    BufReader::new(&s).read_until(b'\n', &mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the daemon closed the connection",
        ));
    }
    serde_json::from_slice(&answer).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../../examples/seed-lab/v1-policy.dfw");
    const NGINX: &str = "nic-5739119-eth33-vmware-sfw.1";

    #[test]
    fn requests_round_trip_as_json_lines() {
        let r: Request = serde_json::from_str(r#"{"cmd":"getflows","filter":"f"}"#).unwrap();
        assert_eq!(r, Request::Getflows { filter: "f".into() });
        let r: Request = serde_json::from_str(r#"{"cmd":"flows-flush","filter":"f"}"#).unwrap();
        assert_eq!(r, Request::FlowsFlush { filter: "f".into() });
        let r: Request = serde_json::from_str(
            r#"{"cmd":"trace","src":"10.0.0.1","dst":"10.0.0.2","proto":"tcp","dport":80}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::Trace(_)));
        for bad in [r#"{"cmd":"nope"}"#, r#"{"cmd":"getrules"}"#, "not json"] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_broken_file_reports_every_error_and_changes_nothing() {
        let p = rules::parse_policy(SEED).unwrap();
        let broken = "ruleset mainrs {\n  rule 1 at 1 in protocol tcp from any to any acept;\n  rule 2 at 2 in protocol tpc from any to any accept;\n}\n";
        let e = new_policy_for(&p, NGINX, "b.dfw", broken).unwrap_err();
        assert_eq!(e.lines().count(), 2, "{e}");
        assert!(e.starts_with("b.dfw:2:"), "{e}");
        let undefined = "ruleset mainrs { rule 1 at 1 in protocol tcp from addrset nope to any accept; }";
        assert!(new_policy_for(&p, NGINX, "u.dfw", undefined).is_err());
        assert!(new_policy_for(&p, "no-such", "u.dfw", "ruleset mainrs { }").is_err());
    }

    #[test]
    fn a_good_file_replaces_only_that_filters_sets() {
        let p = rules::parse_policy(SEED).unwrap();
        let good = "ruleset mainrs { rule 9 at 1 inout protocol any from any to any drop; }";
        let n = new_policy_for(&p, NGINX, "g.dfw", good).unwrap();
        let spec = n.filters.iter().find(|f| f.name == NGINX).unwrap();
        assert_eq!(n.rulesets_for(spec).iter().find(|r| r.name == "mainrs").unwrap().rules[0].id, 9);
        let other = n.filters.iter().find(|f| f.name != NGINX).unwrap();
        assert_eq!(n.rulesets_for(other).iter().find(|r| r.name == "mainrs").unwrap().rules.len(), 4);
    }

    /// A control thread's state for the seed policy, with nothing on the dataplane side (a request
    /// that needs it is answered with an error).
    fn seed_control() -> Control {
        let engine = Engine::new(&rules::parse_policy(SEED).unwrap()).unwrap();
        let (jobs, _) = crossbeam_channel::unbounded();
        Control { engine, ports: Vec::new(), jobs }
    }

    /// A control session on one end of a socket pair.
    fn session_pair() -> (UnixStream, std::thread::JoinHandle<()>) {
        let (client, server) = UnixStream::pair().unwrap();
        let mut ctl = seed_control();
        (client, std::thread::spawn(move || session(server, |req| Some(ctl.handle(req)))))
    }

    fn answer(s: &UnixStream) -> Response {
        let mut line = Vec::new();
        BufReader::new(s).read_until(b'\n', &mut line).unwrap();
        serde_json::from_slice(&line).unwrap()
    }

    #[test]
    fn an_over_long_request_gets_one_clear_error_and_the_session_ends() {
        let (client, session) = session_pair();
        // A bad request keeps the session: the next one is answered.
        (&client).write_all(b"not json\n").unwrap();
        assert!(answer(&client).error.unwrap().starts_with("bad request"));
        (&client).write_all(b"{\"cmd\":\"getfilters\"}\n").unwrap();
        assert!(answer(&client).ok);
        // A request past the limit: one error naming the limit, then the daemon hangs up (a writer
        // thread, since the daemon stops reading at the limit).
        let writer = {
            let c = client.try_clone().unwrap();
            std::thread::spawn(move || {
                let big = vec![b' '; MAX_REQUEST + 4096];
                let _ = (&c).write_all(&big);
            })
        };
        let r = answer(&client);
        assert!(!r.ok);
        assert!(r.error.as_deref().unwrap().contains("16 MiB limit"), "{r:?}");
        session.join().unwrap();
        // Nothing after the error: the end of the stream, or a reset (the daemon closed with the rest of
        // the request unread).
        let mut rest = Vec::new();
        match (&client).read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert!(rest.is_empty(), "{} bytes after the error", rest.len());
        let _ = client.shutdown(std::net::Shutdown::Both);
        writer.join().unwrap();
    }

    /// The control thread serving a socket in a fresh directory ([`seed_control`]).
    struct Served {
        dir: std::path::PathBuf,
        path: std::path::PathBuf,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Served {
        fn start(tag: &str) -> Served {
            let dir = std::env::temp_dir().join(format!("dfw-ctl-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let path = dir.join("control.sock");
            let listener = bind(&path).unwrap();
            let ctl = seed_control();
            let stop = Arc::new(AtomicBool::new(false));
            let st = Arc::clone(&stop);
            let thread = Some(std::thread::spawn(move || serve(listener, ctl, st)));
            Served { dir, path, stop, thread }
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn filters_of(r: &Response) -> usize {
        r.data["filters"].as_array().map_or(0, Vec::len)
    }

    #[test]
    fn a_silent_client_holds_up_no_other() {
        let served = Served::start("silent");
        let idle = UnixStream::connect(&served.path).unwrap();
        // Wait until the idle connection has been accepted (a session of its own is running).
        std::thread::sleep(Duration::from_millis(200));
        let t = std::time::Instant::now();
        let r = request(&served.path, &Request::Getfilters).unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(filters_of(&r), 3, "{r:?}");
        // Before, the second client waited for the first one's 30 s idle timeout.
        assert!(t.elapsed() < Duration::from_secs(10), "answered after {:?}", t.elapsed());
        // The silent one is still served once it speaks, on the same connection.
        (&idle).write_all(b"{\"cmd\":\"getfilters\"}\n").unwrap();
        assert_eq!(filters_of(&answer(&idle)), 3);
        (&idle).write_all(b"{\"cmd\":\"getrules\",\"filter\":\"nope\"}\n").unwrap();
        assert!(answer(&idle).error.unwrap().contains("no filter"));
    }

    #[test]
    fn connections_past_the_limit_are_told_and_closed() {
        let served = Served::start("limit");
        let held: Vec<UnixStream> =
            (0..MAX_SESSIONS).map(|_| UnixStream::connect(&served.path).unwrap()).collect();
        // Each held connection answers, so each has its session.
        for c in &held {
            (&*c).write_all(b"{\"cmd\":\"getfilters\"}\n").unwrap();
            assert!(answer(c).ok);
        }
        let r = request(&served.path, &Request::Getfilters).unwrap();
        assert!(!r.ok);
        assert!(r.error.as_deref().unwrap().contains("16 control connections are open"), "{r:?}");
        // One closes: its place is free again (once its session has seen the end).
        drop(held.into_iter().next());
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let r = loop {
            let r = request(&served.path, &Request::Getfilters).unwrap();
            if r.ok || std::time::Instant::now() > until {
                break r;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(r.ok, "{r:?}");
    }

    #[test]
    fn addresses_and_macs_parse() {
        assert!(matches!(parse_entry("10.0.0.1"), Some(AddrEntry::Ip(_))));
        assert!(matches!(parse_entry("10.0.0.0/8"), Some(AddrEntry::Ip(_))));
        assert!(matches!(parse_entry("2001:db8::/32"), Some(AddrEntry::Ip(_))));
        assert!(matches!(parse_entry("00:50:56:aa:bb:cc"), Some(AddrEntry::Mac(_))));
        assert_eq!(parse_entry("nope"), None);
        assert_eq!(parse_entry("10.0.0.1/99"), None);
    }
}
