//! `dfw lab up|down`: the seed article's lab, live. Three network namespaces stand in for the pods
//! (busybox `172.15.0.2`, nginx `172.15.0.4` and `172.15.0.5`); each is attached to a `dfw run` daemon
//! through a tap carrying the vNIC MAC of the seed policy, so the namespaces have no link but dfw. The
//! seed's v1 policy is loaded (nobody labelled `app=foo`), and the nginx namespaces run a tiny HTTP
//! server on port 80. See `docs/lab.md`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;

/// `dfw lab` subcommands.
#[derive(Subcommand)]
pub enum LabCommand {
    /// Create the namespaces, start the daemon and the servers.
    Up {
        /// Where the lab keeps its config, sockets, logs and pid files.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Stop everything `up` started and delete the namespaces.
    Down {
        /// The lab's folder.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// A tiny HTTP server (what the nginx namespaces run).
    #[command(hide = true)]
    Serve {
        /// Port.
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
}

const DEFAULT_DIR: &str = "/run/dfw-lab";
const POLICY: &str = include_str!("../../examples/seed-lab/v1-policy.dfw");

/// (namespace, port name, tap, MAC, address, runs a server)
const PODS: [(&str, &str, &str, &str, &str, bool); 3] = [
    ("dfw-lab-busybox", "busybox", "dfwlab-bb", "00:50:56:00:00:02", "172.15.0.2/24", false),
    ("dfw-lab-nginx1", "nginx1", "dfwlab-ng1", "00:50:56:00:00:04", "172.15.0.4/24", true),
    ("dfw-lab-nginx2", "nginx2", "dfwlab-ng2", "00:50:56:00:00:05", "172.15.0.5/24", true),
];

/// Runs a lab subcommand.
pub fn lab(cmd: &LabCommand) -> Result<ExitCode> {
    match cmd {
        LabCommand::Up { dir } => up(dir),
        LabCommand::Down { dir } => down(dir),
        LabCommand::Serve { port } => serve(*port),
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run ip(8)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn spawn_logged(dir: &Path, name: &str, cmd: &mut Command) -> Result<()> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(())
}

fn up(dir: &Path) -> Result<ExitCode> {
    if dir.join("dfw.pid").exists() {
        bail!("{}: a lab is already up (run `dfw lab down` first)", dir.display());
    }
    std::fs::create_dir_all(dir)?;
    let exe = std::env::current_exe().context("cannot find the dfw binary")?;
    std::fs::write(dir.join("policy.dfw"), POLICY)?;
    let mut cfg = format!("policy = \"policy.dfw\"\ncontrol = \"{}\"\n", dir.join("control.sock").display());
    for (ns, name, tap, mac, addr, _) in PODS {
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        cfg.push_str(&format!(
            "\n[[port]]\nname = \"{name}\"\ntap = \"{tap}\"\nnetns = \"{ns}\"\nmac = \"{mac}\"\naddresses = [\"{addr}\"]\n"
        ));
    }
    std::fs::write(dir.join("dfw.toml"), &cfg)?;
    let mut run = Command::new(&exe);
    run.arg("run").arg("--config").arg(dir.join("dfw.toml"));
    spawn_logged(dir, "dfw", &mut run)?;
    let sock = dir.join("control.sock");
    let start = Instant::now();
    while !sock.exists() {
        if start.elapsed() > Duration::from_secs(10) {
            let log = std::fs::read_to_string(dir.join("dfw.log")).unwrap_or_default();
            let _ = down(dir);
            bail!("the daemon did not start:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (ns, name, _, _, _, server) in PODS {
        if server {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&exe).args(["lab", "serve", "--port", "80"]);
            spawn_logged(dir, &format!("http-{name}"), &mut c)?;
        }
    }
    println!(
        "lab up in {dir}: namespaces dfw-lab-busybox (172.15.0.2), dfw-lab-nginx1 (172.15.0.4), dfw-lab-nginx2 (172.15.0.5)\n\
         try:\n  ip netns exec dfw-lab-busybox wget -qO- -T 2 http://172.15.0.4/      # dropped by rule 6269\n  \
         dfw ctl --socket {sock} addrset add 105ee703-a9f2-4a5c-bf48-e56338b44a97 172.15.0.2   # kubectl label app=foo\n  \
         ip netns exec dfw-lab-busybox wget -qO- -T 2 http://172.15.0.4/      # accepted by rule 6266\n  \
         dfw ctl --socket {sock} getflows -f nic-5739119-eth33-vmware-sfw.1\n  \
         dfw lab down",
        dir = dir.display(),
        sock = sock.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn kill_pidfile(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    let Ok(pid) = text.trim().parse::<libc::pid_t>() else { return };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a pid we started and recorded; a stale pid only yields ESRCH.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..100 {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(path);
}

fn down(dir: &Path) -> Result<ExitCode> {
    for (_, name, _, _, _, server) in PODS {
        if server {
            kill_pidfile(&dir.join(format!("http-{name}.pid")));
        }
    }
    kill_pidfile(&dir.join("dfw.pid"));
    let mut errors = Vec::new();
    for (ns, ..) in PODS {
        if Path::new("/run/netns").join(ns).exists() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                errors.push(e.to_string());
            }
        }
    }
    if dir.exists() && dir.join("dfw.toml").exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
    if !errors.is_empty() {
        return Err(anyhow!(errors.join("\n")));
    }
    println!("lab down");
    Ok(ExitCode::SUCCESS)
}

fn serve(port: u16) -> Result<ExitCode> {
    let l = TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("cannot listen on port {port}"))?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let body = "<html><body><h1>Welcome to nginx!</h1> (dfw lab)</body></html>\n";
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nServer: dfw-lab\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
