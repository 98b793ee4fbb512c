//! What the live tests share: the root check, Drop guards for the temporary folder and the daemon,
//! `dfw ctl`, and TCP probes between namespaces (an echo server on port 8080).

#![allow(dead_code)] // each test binary uses a part of it

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use pktio::ScratchNetns;

pub const DFW: &str = env!("CARGO_BIN_EXE_dfw");

/// Returns false (skip) when the test cannot run here; panics instead under CI.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tun = Path::new("/dev/net/tun").exists();
    if root && tun {
        return true;
    }
    let why = format!("live test needs root and /dev/net/tun (root: {root}, tun: {tun})");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// A temporary folder (mode 0755), removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = TempDir(std::env::temp_dir().join(name));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    }
}
impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch folder for one test, unique to this process, removed when dropped.
pub fn scratch(name: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("dfw-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TempDir::new(&dir.display().to_string())
}

/// Runs the `dfw` binary.
pub fn dfw(args: &[&str]) -> Output {
    Command::new(DFW).args(args).output().expect("run dfw")
}

/// The daemon; SIGTERM then SIGKILL when dropped.
#[derive(Debug)]
pub struct Daemon(pub Child);
impl Daemon {
    /// Starts `dfw run --config DIR/dfw.toml` (stderr to `DIR/dfw.log`) and waits for its control socket.
    pub fn start(dir: &Path, sock: &Path) -> Daemon {
        let log = std::fs::File::create(dir.join("dfw.log")).expect("log file");
        let child = Command::new(DFW)
            .args(["run", "--config"])
            .arg(dir.join("dfw.toml"))
            .stderr(log)
            .spawn()
            .expect("start dfw run");
        let mut daemon = Daemon(child);
        let start = Instant::now();
        while !sock.exists() {
            if let Ok(Some(st)) = daemon.0.try_wait() {
                panic!(
                    "dfw run exited ({st}):\n{}",
                    std::fs::read_to_string(dir.join("dfw.log")).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < Duration::from_secs(15), "no control socket after 15 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on the pid of a child we started and have not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if self.stop().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

pub fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(DFW).arg("ctl").arg("--socket").arg(sock).args(args).output().expect("run dfw ctl")
}

pub fn ctl_ok(sock: &Path, args: &[&str]) -> String {
    let out = ctl(sock, args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "dfw ctl {args:?}: {}{text}", String::from_utf8_lossy(&out.stderr));
    text
}

pub fn json(sock: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ctl_ok(sock, &all)).expect("json answer")
}

/// An echo server on `ip:8080` inside `ns`, on a background thread.
pub fn echo_server(ns: &ScratchNetns, ip: &str) {
    let addr: SocketAddr = format!("{ip}:8080").parse().expect("address");
    let listener = ns.run(move || TcpListener::bind(addr)).expect("enter namespace").expect("listen");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A TCP connection from inside `ns` to `to:8080`; an error when it is not established in 1.5 s.
pub fn connect(ns: &ScratchNetns, to: &str) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = format!("{to}:8080").parse().expect("address");
    ns.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(1500))).expect("enter namespace")
}

/// Sends `msg` and expects it echoed within a second.
pub fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(1000)));
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).is_ok() && buf == msg
}
