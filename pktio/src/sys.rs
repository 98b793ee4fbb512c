//! Thin, checked wrappers over the Linux calls the live sources make. Every `unsafe` in the live I/O
//! paths that is not about ring memory lives here, next to the reason it is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::io::IoError;

/// Constants from linux/if_packet.h, linux/if_ether.h and linux/if_tun.h that dfw uses, spelled out so
/// they do not depend on which of them a given libc release exports.
pub(crate) mod k {
    pub const SOL_PACKET: libc::c_int = 263;
    pub const PACKET_RX_RING: libc::c_int = 5;
    pub const PACKET_STATISTICS: libc::c_int = 6;
    pub const PACKET_VERSION: libc::c_int = 10;
    pub const PACKET_VNET_HDR: libc::c_int = 15;
    pub const PACKET_FANOUT: libc::c_int = 18;
    pub const PACKET_QDISC_BYPASS: libc::c_int = 20;
    pub const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
    pub const TPACKET_V3: libc::c_int = 2;
    pub const ETH_P_ALL: u16 = 0x0003;
    pub const TP_STATUS_USER: u32 = 1;
    pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
    pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
    pub const TP_STATUS_KERNEL: u32 = 0;
    pub const ARPHRD_ETHER: u16 = 1;
    pub const ARPHRD_LOOPBACK: u16 = 772;
    pub const ARPHRD_NONE: u16 = 0xfffe;
    pub const IFF_TAP: libc::c_short = 0x0002;
    pub const IFF_NO_PI: libc::c_short = 0x1000;
    pub const IFF_VNET_HDR: libc::c_short = 0x4000;
    /// `_IOW('T', 202, int)`.
    pub const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    /// `_IOW('T', 208, unsigned int)`.
    pub const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
    /// `_IOW('T', 216, int)`.
    pub const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
    pub const TUN_F_CSUM: libc::c_uint = 0x01;
    pub const TUN_F_TSO4: libc::c_uint = 0x02;
    pub const TUN_F_TSO6: libc::c_uint = 0x04;
    pub const TUN_F_TSO_ECN: libc::c_uint = 0x08;
    pub const TUN_F_USO4: libc::c_uint = 0x20;
    pub const TUN_F_USO6: libc::c_uint = 0x40;
}

/// The last OS error.
pub(crate) fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// Builds an [`IoError::Interface`] for `op` on `iface` from the last OS error.
pub(crate) fn os_err(iface: &str, op: &'static str) -> IoError {
    IoError::Interface { iface: iface.to_owned(), op, source: errno() }
}

/// Checks an interface name the way the kernel's `dev_valid_name` does, and returns it NUL-terminated.
pub(crate) fn ifname(iface: &str) -> Result<CString, IoError> {
    let bad = || IoError::BadInterfaceName { iface: iface.to_owned() };
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ || iface == "." || iface == ".." {
        return Err(bad());
    }
    if iface.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace()) {
        return Err(bad());
    }
    CString::new(iface).map_err(|_| bad())
}

/// An `ifreq` with the name filled in.
pub(crate) fn ifreq(name: &CString) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers and sockaddrs); all-zero
    // bytes are a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req
}

/// Opens a socket, close-on-exec.
pub(crate) fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes integers only and returns a new descriptor or -1.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just returned by socket(2), so it is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setsockopt(2) with a plain-data value.
pub(crate) fn setsockopt<T: Copy>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live `T` of `size_of::<T>()` bytes for the duration of the call; the
    // kernel copies it and checks the length against what the option expects.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(errno());
    }
    Ok(())
}

/// getsockopt(2) into a plain-data value.
pub(crate) fn getsockopt<T: Copy + Default>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<T> {
    let mut val = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is a live, writable `T` and `len` its size; the kernel writes at most `len` bytes.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&mut val as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(errno());
    }
    Ok(val)
}

/// The index of `iface` in the calling thread's network namespace.
pub(crate) fn ifindex(iface: &str) -> Result<u32, IoError> {
    let name = ifname(iface)?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(IoError::NoSuchInterface { iface: iface.to_owned() });
    }
    Ok(idx)
}

/// An ioctl taking an `ifreq`, on a throwaway datagram socket of the calling thread's namespace.
fn ifreq_ioctl(
    iface: &str,
    op: &'static str,
    req: libc::c_ulong,
    ifr: &mut libc::ifreq,
) -> Result<(), IoError> {
    let sock = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(|source| IoError::Interface {
        iface: iface.to_owned(),
        op,
        source,
    })?;
    // SAFETY: `ifr` is a valid, writable `ifreq` for the whole call, which is what the SIOC*IF* requests
    // read and write.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) };
    if rc < 0 {
        let source = errno();
        if source.raw_os_error() == Some(libc::ENODEV) {
            return Err(IoError::NoSuchInterface { iface: iface.to_owned() });
        }
        return Err(IoError::Interface { iface: iface.to_owned(), op, source });
    }
    Ok(())
}

/// The ARP hardware type of `iface` (`ARPHRD_*`).
pub(crate) fn hw_type(iface: &str) -> Result<u16, IoError> {
    let mut ifr = ifreq(&ifname(iface)?);
    ifreq_ioctl(iface, "read hardware type (SIOCGIFHWADDR)", libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_family })
}

/// The MTU of `iface`.
pub(crate) fn mtu(iface: &str) -> Result<u32, IoError> {
    let mut ifr = ifreq(&ifname(iface)?);
    ifreq_ioctl(iface, "read MTU (SIOCGIFMTU)", libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member of the union.
    Ok(u32::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).unwrap_or(0))
}

/// Sets `IFF_UP` on `iface` in the calling thread's network namespace.
pub fn link_up(iface: &str) -> Result<(), IoError> {
    let mut ifr = ifreq(&ifname(iface)?);
    ifreq_ioctl(iface, "read flags (SIOCGIFFLAGS)", libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member; writing it back with one more bit is what
    // SIOCSIFFLAGS reads.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ifreq_ioctl(iface, "set IFF_UP (SIOCSIFFLAGS)", libc::SIOCSIFFLAGS, &mut ifr)
}

/// Waits until `fd` is readable (or writable, with `out`) or `timeout` passes; true when ready.
/// `None` waits forever. EINTR counts as "not ready".
pub(crate) fn poll(fd: RawFd, out: bool, timeout: Option<Duration>) -> io::Result<bool> {
    let events = if out { libc::POLLOUT } else { libc::POLLIN };
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    let ms = match timeout {
        None => -1,
        Some(t) => libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX),
    };
    // SAFETY: `pfd` is one valid pollfd and we pass a count of 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = errno();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    if rc > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(io::Error::other(format!("poll reported revents 0x{:x}", pfd.revents)));
    }
    Ok(rc > 0)
}

/// Nanoseconds since the UNIX epoch, now.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An `iovec` over a byte slice the kernel only reads.
pub(crate) fn iovec(b: &[u8]) -> libc::iovec {
    libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() }
}
