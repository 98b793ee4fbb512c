//! Network namespaces: running code inside one, and moving an interface into one.
//!
//! A socket, a tap or an interface lookup belongs to the network namespace of the *thread* that makes
//! it, and keeps it for life. [`NetNs::run`] runs a closure on a short-lived thread that has joined the
//! namespace (`setns(2)` changes only the calling thread), so the caller's own threads never change
//! namespace: open an [`crate::afpacket::AfPacketRx`] inside `run`, return it, and read it from any
//! thread.
//!
//! [`move_link`] moves an interface (a tap dfw made, say) into a namespace over rtnetlink, as
//! `ip link set dev NAME netns NS` does. [`ScratchNetns`] makes a throwaway named namespace for tests and
//! benchmarks with `ip netns add`, and deletes it when dropped.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::io::IoError;
use crate::sys;

/// A network namespace, held open by a descriptor of its `nsfs` file.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    name: String,
}

impl NetNs {
    /// Opens the namespace `ip netns` knows as `name` (`/run/netns/NAME`).
    pub fn open(name: &str) -> Result<NetNs, IoError> {
        if name.is_empty() || name.contains('/') {
            return Err(IoError::Netns {
                netns: name.to_owned(),
                op: "open",
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a namespace name"),
            });
        }
        let mut ns = NetNs::from_path(&Path::new("/run/netns").join(name))?;
        ns.name = name.to_owned();
        Ok(ns)
    }

    /// Opens a namespace file (`/proc/PID/ns/net`, a bind mount of one, ...).
    pub fn from_path(path: &Path) -> Result<NetNs, IoError> {
        let file = File::open(path).map_err(|source| IoError::Netns {
            netns: path.display().to_string(),
            op: "open",
            source,
        })?;
        Ok(NetNs { file, name: path.display().to_string() })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs, IoError> {
        NetNs::from_path(Path::new("/proc/thread-self/ns/net"))
    }

    /// The name errors use.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread inside this namespace and returns what it returns. Needs
    /// `CAP_SYS_ADMIN`.
    pub fn run<T, F>(&self, f: F) -> Result<T, IoError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.file.as_raw_fd();
        let joined = std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: setns takes a descriptor we hold open for the scope's duration and a flag; it
                // changes the namespace of this new thread only.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } < 0 {
                    return Err(sys::errno());
                }
                Ok(f())
            })
            .join()
        });
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(IoError::Netns { netns: self.name.clone(), op: "enter (setns)", source }),
            // The closure panicked: pass the panic on rather than turn a bug into an error value.
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

/// Moves the interface `iface` of the calling thread's namespace into `ns` (RTM_NEWLINK with
/// IFLA_NET_NS_FD). Open sockets and tap descriptors keep working; the interface comes down.
pub fn move_link(iface: &str, ns: &NetNs) -> Result<(), IoError> {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFLA_NET_NS_FD: u16 = 28;
    let index = sys::ifindex(iface)?;
    let err = |source| IoError::Netns { netns: ns.name.clone(), op: "move interface (rtnetlink)", source };
    // nlmsghdr (16) + ifinfomsg (16) + rtattr header (4) + u32 fd (4).
    let mut msg = [0u8; 40];
    msg[0..4].copy_from_slice(&40u32.to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    msg[16] = libc::AF_UNSPEC as u8; // ifi_family
    msg[20..24].copy_from_slice(&(index as i32).to_ne_bytes()); // ifi_index
    msg[32..34].copy_from_slice(&8u16.to_ne_bytes()); // rta_len
    msg[34..36].copy_from_slice(&IFLA_NET_NS_FD.to_ne_bytes());
    msg[36..40].copy_from_slice(&(ns.file.as_raw_fd() as u32).to_ne_bytes());
    let sock: OwnedFd = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE).map_err(err)?;
    // SAFETY: `msg` is a complete netlink message of the length passed; the kernel reads it. A zeroed
    // destination means the kernel (pid 0), the default for an unconnected netlink socket.
    let rc = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if rc < 0 {
        return Err(err(sys::errno()));
    }
    let mut reply = [0u8; 1024];
    // SAFETY: `reply` is writable for its whole length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(err(sys::errno()));
    }
    // The answer is an NLMSG_ERROR message whose first field is 0 (an ack) or a negative errno.
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if n < 20 || ty != NLMSG_ERROR {
        return Err(err(io::Error::other(format!("unexpected netlink reply type {ty}"))));
    }
    if code != 0 {
        return Err(err(io::Error::from_raw_os_error(-code)));
    }
    Ok(())
}

/// Runs `ip ARGS`, turning a failure into an error that quotes the command and its stderr.
pub fn ip(args: &[&str]) -> Result<(), IoError> {
    let out = Command::new("ip").args(args).output().map_err(|source| IoError::Netns {
        netns: args.join(" "),
        op: "run ip(8)",
        source,
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(IoError::Netns {
            netns: args.join(" "),
            op: "ip(8) failed",
            source: io::Error::other(msg),
        });
    }
    Ok(())
}

/// A throwaway named network namespace (`ip netns add`), deleted when dropped, for tests and
/// benchmarks. Names carry the process id and a counter, so concurrent tests never share one.
#[derive(Debug)]
pub struct ScratchNetns {
    ns: NetNs,
    name: String,
}

impl ScratchNetns {
    /// Makes `dfw-PREFIX-PID-N` and opens it. Needs root.
    pub fn new(prefix: &str) -> Result<ScratchNetns, IoError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("dfw-{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        // From here on the guard deletes the namespace, even if opening it fails.
        let guard = DeleteOnDrop(name.clone());
        let ns = NetNs::open(&name)?;
        std::mem::forget(guard);
        let scratch = ScratchNetns { ns, name };
        // Loopback up: some tests talk to themselves.
        scratch.ip(&["link", "set", "lo", "up"])?;
        Ok(scratch)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), IoError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` inside the namespace (see [`NetNs::run`]).
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, IoError> {
        self.ns.run(f)
    }

    /// Where the namespace is mounted.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = DeleteOnDrop(self.name.clone());
    }
}

/// Deletes a named namespace when dropped.
struct DeleteOnDrop(String);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        // Best effort: a namespace that cannot be deleted only leaks a mount point.
        let _ = ip(&["netns", "del", &self.0]);
    }
}
