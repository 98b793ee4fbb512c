//! Tap devices: a virtual Ethernet port whose other side is a file descriptor, the way a hypervisor
//! attaches a VM's vNIC.
//!
//! [`Tap::open`] creates the tap, or attaches to an existing one of the same name and flags
//! (`TUNSETIFF` on `/dev/net/tun`, Documentation/networking/tuntap.rst). With [`TapConfig::vnet_hdr`]
//! every frame crossing the descriptor carries a virtio-net header ([`VnetHdr`]), which is what lets a
//! guest hand over 64 KiB TCP super-frames (TSO/GSO) and leave checksums to the host: dfw reads the
//! header into [`Frame::offload`] and writes it back out with the frame, so offloaded traffic passes
//! through unharmed. [`TapConfig::offloads`] tells the kernel which offloads dfw accepts
//! (`TUNSETOFFLOAD`); without them the kernel segments and checksums before the frame reaches dfw.
//!
//! A tap lives in the namespace of the thread that created it; [`Tap::move_to`] moves it elsewhere
//! and the descriptor keeps working.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::io::{Batch, Frame, FrameSink, FrameSource, IoError, VnetHdr};
use crate::link::LinkType;
use crate::netns::{self, NetNs};
use crate::sys::{self, k};

/// Offloads dfw accepts from the kernel on a tap with a virtio-net header (`TUN_F_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Partial checksums (`TUN_F_CSUM`); every other offload needs it.
    pub csum: bool,
    /// TCP/IPv4 segmentation (`TUN_F_TSO4`).
    pub tso4: bool,
    /// TCP/IPv6 segmentation (`TUN_F_TSO6`).
    pub tso6: bool,
    /// TSO with ECN (`TUN_F_TSO_ECN`).
    pub tso_ecn: bool,
    /// UDP segmentation, IPv4 and IPv6 (`TUN_F_USO4 | TUN_F_USO6`, Linux 6.2).
    pub uso: bool,
}

impl Offloads {
    /// Checksum and TCP segmentation offloads: what a virtio-net guest uses.
    pub fn tcp() -> Offloads {
        Offloads { csum: true, tso4: true, tso6: true, tso_ecn: true, uso: false }
    }

    fn bits(self) -> libc::c_uint {
        let mut b = 0;
        for (on, bit) in [
            (self.csum, k::TUN_F_CSUM),
            (self.tso4, k::TUN_F_TSO4),
            (self.tso6, k::TUN_F_TSO6),
            (self.tso_ecn, k::TUN_F_TSO_ECN),
            (self.uso, k::TUN_F_USO4 | k::TUN_F_USO6),
        ] {
            if on {
                b |= bit;
            }
        }
        b
    }
}

/// How to open a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapConfig {
    /// Carry a virtio-net header with every frame (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// Offloads to accept (only with `vnet_hdr`).
    pub offloads: Offloads,
    /// How long [`FrameSource::recv_batch`] waits for a frame; `None` waits forever.
    pub poll_timeout: Option<Duration>,
    /// Bytes of receive buffer; a batch ends when less than one largest frame is left.
    pub rx_buffer: usize,
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            vnet_hdr: false,
            offloads: Offloads::default(),
            poll_timeout: Some(Duration::from_millis(100)),
            rx_buffer: 1 << 20,
        }
    }
}

/// The largest frame a tap hands over: a 64 KiB GSO super-frame plus its Ethernet and VLAN headers and
/// the virtio-net header.
const MAX_FRAME: usize = 65_536 + 14 + 4 + VnetHdr::LEN;

/// An open tap device. It is a [`FrameSource`] (frames the kernel sends out of the tap, i.e. what a VM
/// would receive) and a [`FrameSink`] (frames put into the tap arrive at the kernel as if from the VM).
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
    vnet_hdr: bool,
    poll_timeout: Option<Duration>,
    /// Receive buffer the batch's frames borrow (each read lands at the next free offset).
    buf: Vec<u8>,
}

impl Tap {
    /// Creates the tap `name`, or attaches to an existing tap of that name opened with the same flags,
    /// in the calling thread's network namespace. Needs `CAP_NET_ADMIN`.
    pub fn open(name: &str, cfg: &TapConfig) -> Result<Tap, IoError> {
        let cname = sys::ifname(name)?;
        let err = |op| move |source| IoError::Interface { iface: name.to_owned(), op, source };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(err("open /dev/net/tun"))?;
        let fd = OwnedFd::from(file);
        let mut ifr = sys::ifreq(&cname);
        let mut flags = k::IFF_TAP | k::IFF_NO_PI;
        if cfg.vnet_hdr {
            flags |= k::IFF_VNET_HDR;
        }
        ifr.ifr_ifru.ifru_flags = flags;
        // SAFETY: TUNSETIFF reads and writes the `ifreq` we pass, which lives across the call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), k::TUNSETIFF as _, &mut ifr as *mut libc::ifreq) } < 0 {
            return Err(sys::os_err(name, "create or attach tap (TUNSETIFF)"));
        }
        if cfg.vnet_hdr {
            let len = VnetHdr::LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid for the call.
            if unsafe { libc::ioctl(fd.as_raw_fd(), k::TUNSETVNETHDRSZ as _, &len as *const libc::c_int) } < 0
            {
                return Err(sys::os_err(name, "set the virtio-net header size (TUNSETVNETHDRSZ)"));
            }
        }
        let bits = if cfg.vnet_hdr { cfg.offloads.bits() } else { 0 };
        // SAFETY: TUNSETOFFLOAD takes its flags as the integer argument itself.
        if unsafe { libc::ioctl(fd.as_raw_fd(), k::TUNSETOFFLOAD as _, bits as libc::c_ulong) } < 0 {
            return Err(sys::os_err(name, "set offloads (TUNSETOFFLOAD)"));
        }
        // The kernel may have picked the name (a pattern like "tap%d"); read it back.
        let actual: Vec<u8> = ifr.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        let name = String::from_utf8(actual).unwrap_or_else(|_| name.to_owned());
        Ok(Tap {
            fd,
            name,
            vnet_hdr: cfg.vnet_hdr,
            poll_timeout: cfg.poll_timeout,
            buf: vec![0; cfg.rx_buffer.max(MAX_FRAME)],
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when frames carry a virtio-net header.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Sets the interface up, in the calling thread's namespace (which must be the tap's).
    pub fn set_up(&self) -> Result<(), IoError> {
        sys::link_up(&self.name)
    }

    /// Moves the tap into `ns` (see [`netns::move_link`]); call it from the tap's current namespace.
    pub fn move_to(&self, ns: &NetNs) -> Result<(), IoError> {
        netns::move_link(&self.name, ns)
    }

    /// One read into `buf[at..]`: `Ok(None)` when no frame is waiting.
    fn read_one(&mut self, at: usize) -> Result<Option<usize>, IoError> {
        let room = self.buf.len() - at;
        // SAFETY: `buf[at..]` is `room` writable bytes; read(2) writes at most that many.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), self.buf.as_mut_ptr().add(at).cast(), room) };
        if n < 0 {
            let e = sys::errno();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(IoError::Interface { iface: self.name.clone(), op: "read", source: e }),
            };
        }
        Ok(Some(n as usize))
    }
}

impl AsRawFd for Tap {
    /// The tap's descriptor, for callers that wait on several ports with one `poll(2)`.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl FrameSource for Tap {
    fn recv_batch<'a>(&'a mut self, batch: &mut Batch<'a>) -> Result<usize, IoError> {
        batch.clear();
        // Read every frame first, recording (offset, length), then borrow: the buffer is written only
        // before any frame of this batch refers to it.
        let mut spans = [(0usize, 0usize); 256];
        let want = batch.capacity().min(spans.len());
        let (mut count, mut at, mut waited) = (0, 0, false);
        while count < want && self.buf.len() - at >= MAX_FRAME {
            match self.read_one(at)? {
                Some(n) => {
                    spans[count] = (at, n);
                    count += 1;
                    at += n;
                }
                None if count > 0 || waited => break,
                None => {
                    waited = true;
                    sys::poll(self.fd.as_raw_fd(), false, self.poll_timeout).map_err(|source| {
                        IoError::Interface { iface: self.name.clone(), op: "poll", source }
                    })?;
                }
            }
        }
        let ts = sys::now_nanos();
        let buf: &'a [u8] = &self.buf;
        for &(start, len) in &spans[..count] {
            let Some(mut data) = buf.get(start..start + len) else { continue };
            let mut offload = None;
            if self.vnet_hdr {
                let Some((hdr, rest)) = data.split_first_chunk::<{ VnetHdr::LEN }>() else {
                    continue; // shorter than its header: nothing a tap produces, skip it
                };
                offload = Some(VnetHdr::from_bytes(*hdr));
                data = rest;
            }
            let frame = Frame { offload, ..Frame::new(LinkType::Ethernet, data) };
            let _ = batch.push(Frame { ts_nanos: ts, ..frame });
        }
        Ok(batch.len())
    }
}

impl FrameSink for Tap {
    fn send_batch(&mut self, frames: &[Frame<'_>]) -> Result<usize, IoError> {
        for (i, f) in frames.iter().enumerate() {
            match self.send_one(f) {
                Ok(true) => {}
                Ok(false) => return Ok(i),
                Err(e) if i == 0 => return Err(e),
                Err(_) => return Ok(i),
            }
        }
        Ok(frames.len())
    }
}

impl Tap {
    /// Writes one frame; `Ok(false)` when the tap pushes back.
    fn send_one(&mut self, f: &Frame<'_>) -> Result<bool, IoError> {
        if f.link != LinkType::Ethernet {
            return Err(IoError::LinkMismatch {
                iface: self.name.clone(),
                expected: LinkType::Ethernet,
                found: f.link,
            });
        }
        let hdr = f.offload.unwrap_or_default();
        if !self.vnet_hdr && !hdr.is_plain() {
            return Err(IoError::OffloadUnsupported { iface: self.name.clone(), hdr });
        }
        let vnet = hdr.to_bytes();
        let mut tag = [0u8; 4];
        let (head, tag, tail) = f.wire_parts(&mut tag);
        let mut iov = [sys::iovec(&vnet), sys::iovec(head), sys::iovec(tag), sys::iovec(tail)];
        let skip = usize::from(!self.vnet_hdr);
        let iov = &mut iov[skip..];
        // SAFETY: every iovec points at bytes that live across the call; the kernel only reads them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
        if n < 0 {
            let e = sys::errno();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS) => Ok(false),
                Some(libc::EINVAL) if f.data.len() > MAX_FRAME => {
                    Err(IoError::FrameTooLong { iface: self.name.clone(), len: f.data.len(), max: MAX_FRAME })
                }
                _ => Err(IoError::Interface { iface: self.name.clone(), op: "write", source: e }),
            };
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_bits_follow_tun_f() {
        assert_eq!(Offloads::default().bits(), 0);
        assert_eq!(Offloads::tcp().bits(), 0x0f);
        assert_eq!(Offloads { csum: true, uso: true, ..Offloads::default() }.bits(), 0x61);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for bad in ["", "a-name-longer-than-15", "a/b", "a b"] {
            let e = Tap::open(bad, &TapConfig::default()).unwrap_err();
            assert!(matches!(e, IoError::BadInterfaceName { .. }), "{bad:?}: {e}");
        }
    }
}
