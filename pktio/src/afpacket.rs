//! AF_PACKET: a TPACKET_V3 receive ring shared by workers through PACKET_FANOUT, and a batched transmit
//! path (`sendmmsg`).
//!
//! # Receive ring
//!
//! [`AfPacketRx::open`] maps a ring of `block_count` blocks of `block_size` bytes (packet(7),
//! Documentation/networking/packet_mmap.rst). The kernel fills a block with as many frames as fit,
//! then hands the whole block to user space (`TP_STATUS_USER` in the block header) when it is full or
//! `block_timeout_ms` after its first frame. dfw walks the block's frames in place and hands them out
//! as [`Frame`]s borrowing the ring; a block goes back to the kernel (`TP_STATUS_KERNEL`) at the start of
//! the *next* [`FrameSource::recv_batch`], when the borrow checker has proved no frame of it is alive.
//! This is libpcap's scheme, with the "don't touch the frame after the next call" rule enforced by the
//! compiler instead of the documentation.
//!
//! ```text
//!   kernel fills ──► block N: TP_STATUS_USER ──► recv_batch walks it ──► next recv_batch: TP_STATUS_KERNEL
//!        ▲                                                                          │
//!        └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Several workers share one interface by opening one ring each with the same [`Fanout`] group: the
//! kernel then spreads frames over the group's sockets, by flow hash for [`FanoutMode::Hash`], so both
//! directions of a connection land at the same worker. [`RingConfig::ignore_outgoing`] sets
//! PACKET_IGNORE_OUTGOING, so frames the host (or dfw itself) sends through the interface are not read
//! back as if they had arrived.
//!
//! The kernel takes the outer VLAN tag out of a frame before AF_PACKET sees it (`skb_vlan_untag`, or
//! NIC VLAN stripping) and reports it in the frame header (`tp_vlan_tci`, `TP_STATUS_VLAN_VALID`);
//! dfw returns it as [`Frame::vlan`] and [`Frame::parse`] puts it back in the summary.
//!
//! # Transmit
//!
//! [`AfPacketTx`] sends a batch with one `sendmmsg(2)` per 64 frames, each frame as an `iovec` list that
//! re-inserts a metadata VLAN tag without copying the frame. With [`TxConfig::vnet_hdr`] each frame is
//! preceded by a virtio-net header (PACKET_VNET_HDR), so GSO super-frames and partial checksums read from
//! a tap go out as the kernel segments and checksums them.
//!
//! All sockets live in the network namespace of the thread that opens them; open them inside
//! [`crate::netns::NetNs::run`] to reach an interface in another namespace.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::io::{Batch, Frame, FrameSink, FrameSource, IoError, VlanTag, VnetHdr};
use crate::link::LinkType;
use crate::sys::{self, k};

/// How the kernel spreads frames over the sockets of a fanout group (`PACKET_FANOUT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutMode {
    /// By flow hash (`PACKET_FANOUT_HASH`): a connection's frames, both ways, go to one socket.
    Hash,
    /// Round robin (`PACKET_FANOUT_LB`).
    LoadBalance,
    /// By the CPU that received the frame (`PACKET_FANOUT_CPU`).
    Cpu,
    /// Fill one socket, then the next (`PACKET_FANOUT_ROLLOVER`).
    Rollover,
    /// At random (`PACKET_FANOUT_RND`).
    Random,
    /// By the NIC receive queue (`PACKET_FANOUT_QM`).
    QueueMapping,
}

impl FanoutMode {
    fn value(self) -> u32 {
        match self {
            FanoutMode::Hash => 0,
            FanoutMode::LoadBalance => 1,
            FanoutMode::Cpu => 2,
            FanoutMode::Rollover => 3,
            FanoutMode::Random => 4,
            FanoutMode::QueueMapping => 5,
        }
    }
}

/// A PACKET_FANOUT group to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Group id; sockets of one network namespace with the same id share the interface's frames.
    pub group: u16,
    /// How frames are spread.
    pub mode: FanoutMode,
    /// Reassemble IP fragments before hashing (`PACKET_FANOUT_FLAG_DEFRAG`), so every fragment of a
    /// datagram goes where its first fragment went.
    pub defrag: bool,
    /// Spill to another socket when this one's ring is full (`PACKET_FANOUT_FLAG_ROLLOVER`).
    pub rollover: bool,
}

impl Fanout {
    /// A flow-hash group with defragmentation: what dfw's workers use.
    pub fn hash(group: u16) -> Fanout {
        Fanout { group, mode: FanoutMode::Hash, defrag: true, rollover: false }
    }

    fn sockopt(self) -> u32 {
        const FLAG_ROLLOVER: u32 = 0x1000;
        const FLAG_DEFRAG: u32 = 0x8000;
        let mut kind = self.mode.value();
        if self.defrag {
            kind |= FLAG_DEFRAG;
        }
        if self.rollover {
            kind |= FLAG_ROLLOVER;
        }
        u32::from(self.group) | (kind << 16)
    }
}

/// Receive ring settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block: a multiple of the page size. Frames never straddle blocks, so this also bounds
    /// the longest frame the ring can hold (less a 48-byte header).
    pub block_size: u32,
    /// Blocks in the ring.
    pub block_count: u32,
    /// Nominal frame slot size the kernel checks the ring geometry with (TPACKET_V3 packs frames
    /// tightly regardless): a multiple of 16 dividing `block_size`.
    pub frame_size: u32,
    /// Milliseconds after which the kernel hands over a block that is not full.
    pub block_timeout_ms: u32,
    /// How long [`FrameSource::recv_batch`] waits for a block before returning `Ok(0)`; `None` waits
    /// forever.
    pub poll_timeout: Option<Duration>,
    /// Join this fanout group.
    pub fanout: Option<Fanout>,
    /// Do not receive frames sent out of the interface (PACKET_IGNORE_OUTGOING, Linux 4.20).
    pub ignore_outgoing: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 1 << 20,
            block_count: 16,
            frame_size: 2048,
            block_timeout_ms: 4,
            poll_timeout: Some(Duration::from_millis(100)),
            fanout: None,
            ignore_outgoing: true,
        }
    }
}

/// `struct tpacket_req3` (linux/if_packet.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

/// `struct tpacket_stats_v3`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct TpacketStatsV3 {
    packets: u32,
    drops: u32,
    freeze_q_cnt: u32,
}

/// Byte offsets inside the ring's headers (linux/if_packet.h, TPACKET_V3).
mod off {
    /// `tpacket_block_desc.hdr.bh1.block_status`.
    pub const BLOCK_STATUS: usize = 8;
    /// `.num_pkts`.
    pub const BLOCK_NUM_PKTS: usize = 12;
    /// `.offset_to_first_pkt`.
    pub const BLOCK_FIRST: usize = 16;
    /// `tpacket3_hdr.tp_next_offset`.
    pub const NEXT: usize = 0;
    /// `.tp_sec`.
    pub const SEC: usize = 4;
    /// `.tp_nsec`.
    pub const NSEC: usize = 8;
    /// `.tp_snaplen`.
    pub const SNAPLEN: usize = 12;
    /// `.tp_len`.
    pub const LEN: usize = 16;
    /// `.tp_status`.
    pub const STATUS: usize = 20;
    /// `.tp_mac` (u16).
    pub const MAC: usize = 24;
    /// `.hv1.tp_vlan_tci` (u32).
    pub const VLAN_TCI: usize = 32;
    /// `.hv1.tp_vlan_tpid` (u16).
    pub const VLAN_TPID: usize = 36;
    /// Size of `tpacket3_hdr`.
    pub const HDR_LEN: usize = 48;
}

/// Receive counters of a ring since the last call to [`AfPacketRx::stats`] (the kernel resets them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// Frames the socket was offered (delivered plus dropped).
    pub packets: u32,
    /// Frames dropped because the ring was full.
    pub drops: u32,
    /// Times the ring was frozen for lack of a free block.
    pub freeze_count: u32,
}

/// The block being walked.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    block: usize,
    left: u32,
    off: usize,
}

/// A TPACKET_V3 receive ring on one interface.
#[derive(Debug)]
pub struct AfPacketRx {
    iface: String,
    fd: OwnedFd,
    ring: NonNull<u8>,
    ring_len: usize,
    block_size: usize,
    block_count: usize,
    link: LinkType,
    /// The next block to take from the kernel.
    next_block: usize,
    /// The block being walked, when a batch filled up in the middle of one.
    cur: Option<Cursor>,
    /// Blocks whose frames were all handed out; they go back to the kernel at the next receive.
    walked: Vec<usize>,
    poll_timeout: Option<Duration>,
}

// SAFETY: the ring mapping is owned by this value alone (nothing else holds its address), and the
// kernel side synchronises through the block status words, so moving the value to another thread is
// fine. It is not `Sync`: `recv_batch` needs `&mut self`.
unsafe impl Send for AfPacketRx {}

impl AfPacketRx {
    /// Opens a receive ring on `iface` in the calling thread's network namespace.
    pub fn open(iface: &str, cfg: &RingConfig) -> Result<AfPacketRx, IoError> {
        let req = ring_geometry(iface, cfg)?;
        let ifindex = sys::ifindex(iface)?;
        let link = link_of(iface)?;
        let err = |op| move |source| IoError::Interface { iface: iface.to_owned(), op, source };
        // Protocol 0: the socket receives nothing until `bind` below names the interface, so no frame
        // from another interface slips in while the ring is set up.
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(err("open AF_PACKET socket"))?;
        sys::setsockopt(&fd, k::SOL_PACKET, k::PACKET_VERSION, &k::TPACKET_V3)
            .map_err(err("select TPACKET_V3"))?;
        if cfg.ignore_outgoing {
            sys::setsockopt(&fd, k::SOL_PACKET, k::PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)
                .map_err(err("set PACKET_IGNORE_OUTGOING"))?;
        }
        sys::setsockopt(&fd, k::SOL_PACKET, k::PACKET_RX_RING, &req).map_err(err("set up PACKET_RX_RING"))?;
        let ring_len = req.block_size as usize * req.block_nr as usize;
        // SAFETY: mapping a fresh region (address hint null) of the ring's exact length from the packet
        // socket, as packet_mmap.rst prescribes; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(sys::os_err(iface, "map the receive ring"));
        }
        let Some(ring) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(sys::os_err(iface, "map the receive ring"));
        };
        let rx = AfPacketRx {
            iface: iface.to_owned(),
            fd,
            ring,
            ring_len,
            block_size: req.block_size as usize,
            block_count: req.block_nr as usize,
            link,
            next_block: 0,
            cur: None,
            walked: Vec::with_capacity(req.block_nr as usize),
            poll_timeout: cfg.poll_timeout,
        };
        bind(&rx.fd, iface, ifindex, k::ETH_P_ALL)?;
        if let Some(fanout) = cfg.fanout {
            sys::setsockopt(&rx.fd, k::SOL_PACKET, k::PACKET_FANOUT, &fanout.sockopt())
                .map_err(err("join PACKET_FANOUT group"))?;
        }
        Ok(rx)
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The link type frames arrive with.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// Reads (and resets) the kernel's counters for this socket.
    pub fn stats(&mut self) -> Result<RingStats, IoError> {
        let s: TpacketStatsV3 =
            sys::getsockopt(&self.fd, k::SOL_PACKET, k::PACKET_STATISTICS).map_err(|source| {
                IoError::Interface { iface: self.iface.clone(), op: "read PACKET_STATISTICS", source }
            })?;
        Ok(RingStats { packets: s.packets, drops: s.drops, freeze_count: s.freeze_q_cnt })
    }

    /// Address of byte `at` of block `block`. Callers keep `block < block_count` and `at < block_size`.
    fn at(&self, block: usize, at: usize) -> *mut u8 {
        debug_assert!(block < self.block_count && at < self.block_size);
        // SAFETY: block * block_size + at < ring_len, so the result stays inside the mapping.
        unsafe { self.ring.as_ptr().add(block * self.block_size + at) }
    }

    /// The status word of a block, which the kernel and dfw hand the block over with.
    fn block_status(&self, block: usize) -> &AtomicU32 {
        // SAFETY: the status word is 4-byte aligned (blocks are page aligned, the word is at offset 8),
        // lies inside the mapping, which outlives `&self`, and is only ever accessed atomically by dfw;
        // the kernel writes it after an smp_wmb and reads it after an smp_rmb.
        unsafe { AtomicU32::from_ptr(self.at(block, off::BLOCK_STATUS).cast::<u32>()) }
    }

    /// Reads a native-endian u32 at `at` in `block`; `at + 4 <= block_size` is the caller's promise.
    fn read_u32(&self, block: usize, at: usize) -> u32 {
        // SAFETY: in bounds by the caller's check; the block belongs to user space (TP_STATUS_USER
        // was observed with Acquire ordering), so the kernel no longer writes it.
        unsafe { self.at(block, at).cast::<u32>().read_unaligned() }
    }

    fn read_u16(&self, block: usize, at: usize) -> u16 {
        // SAFETY: as for `read_u32`.
        unsafe { self.at(block, at).cast::<u16>().read_unaligned() }
    }

    fn corrupt(&self, block: usize, what: &'static str) -> IoError {
        IoError::RingCorrupt { iface: self.iface.clone(), block, what }
    }

    /// Hands the blocks walked by the previous receive back to the kernel.
    fn release_walked(&mut self) {
        for i in 0..self.walked.len() {
            let block = self.walked[i];
            self.block_status(block).store(k::TP_STATUS_KERNEL, Ordering::Release);
        }
        self.walked.clear();
    }

    /// Takes the next block if the kernel has handed it over.
    fn take_block(&mut self) -> Result<Option<Cursor>, IoError> {
        let block = self.next_block;
        if self.block_status(block).load(Ordering::Acquire) & k::TP_STATUS_USER == 0 {
            return Ok(None);
        }
        let left = self.read_u32(block, off::BLOCK_NUM_PKTS);
        let first = self.read_u32(block, off::BLOCK_FIRST) as usize;
        if left > 0 && first.saturating_add(off::HDR_LEN) > self.block_size {
            return Err(self.corrupt(block, "first frame offset past the block"));
        }
        self.next_block = (block + 1) % self.block_count;
        Ok(Some(Cursor { block, left, off: first }))
    }
}

impl FrameSource for AfPacketRx {
    fn recv_batch<'a>(&'a mut self, batch: &mut Batch<'a>) -> Result<usize, IoError> {
        batch.clear();
        // No frame of the blocks walked last time is alive: the previous batch borrowed `self` mutably.
        self.release_walked();
        let mut waited = false;
        while !batch.is_full() {
            let mut cur = match self.cur.take() {
                Some(c) => c,
                None => match self.take_block()? {
                    Some(c) => c,
                    None if !batch.is_empty() || waited => break,
                    None => {
                        waited = true;
                        sys::poll(self.fd.as_raw_fd(), false, self.poll_timeout).map_err(|source| {
                            IoError::Interface { iface: self.iface.clone(), op: "poll", source }
                        })?;
                        continue;
                    }
                },
            };
            while cur.left > 0 && !batch.is_full() {
                let (b, o) = (cur.block, cur.off);
                if o % 4 != 0 || o.saturating_add(off::HDR_LEN) > self.block_size {
                    return Err(self.corrupt(b, "frame header past the block"));
                }
                let snaplen = self.read_u32(b, o + off::SNAPLEN) as usize;
                let mac = usize::from(self.read_u16(b, o + off::MAC));
                let start = o + mac;
                if start >= self.block_size || start.saturating_add(snaplen) > self.block_size {
                    return Err(self.corrupt(b, "frame data past the block"));
                }
                let status = self.read_u32(b, o + off::STATUS);
                let vlan = (status & k::TP_STATUS_VLAN_VALID != 0).then(|| {
                    let tpid = if status & k::TP_STATUS_VLAN_TPID_VALID != 0 {
                        self.read_u16(b, o + off::VLAN_TPID)
                    } else {
                        0x8100
                    };
                    VlanTag { tpid, tci: self.read_u32(b, o + off::VLAN_TCI) as u16 }
                });
                let ts = u64::from(self.read_u32(b, o + off::SEC)) * 1_000_000_000
                    + u64::from(self.read_u32(b, o + off::NSEC));
                // SAFETY: `start..start + snaplen` lies inside block `b` (checked above), which user space
                // owns until `release_walked` runs at the start of the next receive; that call needs
                // `&mut self`, so it cannot happen while this `&'a` slice (tied to `&'a mut self`) lives.
                let data: &'a [u8] = unsafe { std::slice::from_raw_parts(self.at(b, start), snaplen) };
                let frame = Frame {
                    data,
                    wire_len: self.read_u32(b, o + off::LEN),
                    ts_nanos: ts,
                    link: self.link,
                    vlan,
                    offload: None,
                };
                let _ = batch.push(frame);
                cur.left -= 1;
                if cur.left > 0 {
                    let next = self.read_u32(b, o + off::NEXT) as usize;
                    if next == 0 {
                        return Err(self.corrupt(b, "zero offset to the next frame"));
                    }
                    cur.off = o + next;
                }
            }
            if cur.left == 0 {
                self.walked.push(cur.block);
            } else {
                self.cur = Some(cur);
            }
        }
        Ok(batch.len())
    }
}

impl AsRawFd for AfPacketRx {
    /// The ring's socket, for callers that wait on several ports with one `poll(2)` (readable when a
    /// block is ready).
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for AfPacketRx {
    fn drop(&mut self) {
        // SAFETY: `ring`/`ring_len` are exactly what mmap returned; no frame borrows the ring any more
        // (they borrow `self`, which is being dropped). The socket closes after this, with the fields.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_len);
        }
    }
}

/// Checks a ring configuration and turns it into the kernel's request.
fn ring_geometry(iface: &str, cfg: &RingConfig) -> Result<TpacketReq3, IoError> {
    let bad = |reason: String| IoError::Config { iface: iface.to_owned(), reason };
    // SAFETY: sysconf takes an integer and returns one.
    let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    if cfg.block_size == 0 || cfg.block_size % page != 0 {
        return Err(bad(format!("block size {} is not a multiple of the {page}-byte page", cfg.block_size)));
    }
    if cfg.block_count == 0 {
        return Err(bad("the ring needs at least one block".to_owned()));
    }
    if cfg.frame_size < 64 || cfg.frame_size % 16 != 0 || cfg.block_size % cfg.frame_size != 0 {
        return Err(bad(format!(
            "frame size {} must be a multiple of 16, at least 64, dividing the block size {}",
            cfg.frame_size, cfg.block_size
        )));
    }
    let total = u64::from(cfg.block_size) * u64::from(cfg.block_count);
    if total > 1 << 32 {
        return Err(bad(format!("ring of {total} bytes is larger than 4 GiB")));
    }
    Ok(TpacketReq3 {
        block_size: cfg.block_size,
        block_nr: cfg.block_count,
        frame_size: cfg.frame_size,
        frame_nr: (total / u64::from(cfg.frame_size)) as u32,
        retire_blk_tov: cfg.block_timeout_ms,
        sizeof_priv: 0,
        // TP_FT_REQ_FILL_RXHASH: the flow hash in each header, for workers that want it.
        feature_req_word: 1,
    })
}

/// The link type AF_PACKET frames of `iface` start with.
fn link_of(iface: &str) -> Result<LinkType, IoError> {
    match sys::hw_type(iface)? {
        k::ARPHRD_ETHER | k::ARPHRD_LOOPBACK => Ok(LinkType::Ethernet),
        k::ARPHRD_NONE => Ok(LinkType::Raw),
        other => Err(IoError::Config {
            iface: iface.to_owned(),
            reason: format!("hardware type {other} is neither Ethernet nor raw IP"),
        }),
    }
}

/// Binds a packet socket to one interface and protocol.
fn bind(fd: &OwnedFd, iface: &str, ifindex: u32, proto: u16) -> Result<(), IoError> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll and we pass its exact size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(sys::os_err(iface, "bind AF_PACKET socket"));
    }
    Ok(())
}

/// Transmit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxConfig {
    /// Skip the interface's queueing discipline (PACKET_QDISC_BYPASS): faster, no traffic shaping, and
    /// a full device queue drops instead of queueing.
    pub qdisc_bypass: bool,
    /// Precede each frame with a virtio-net header (PACKET_VNET_HDR), so frames with
    /// [`Frame::offload`] (GSO, partial checksums) are segmented and checksummed by the kernel.
    pub vnet_hdr: bool,
}

/// Frames per `sendmmsg` call.
const TX_CHUNK: usize = 64;

/// A batched AF_PACKET transmit path on one interface.
#[derive(Debug)]
pub struct AfPacketTx {
    iface: String,
    fd: OwnedFd,
    link: LinkType,
    vnet_hdr: bool,
    /// Per-message scratch: VLAN tag bytes and virtio-net headers the iovecs point into.
    tags: Vec<[u8; 4]>,
    vnets: Vec<[u8; VnetHdr::LEN]>,
}

impl AfPacketTx {
    /// Opens a transmit socket on `iface` in the calling thread's network namespace. It receives
    /// nothing.
    pub fn open(iface: &str, cfg: &TxConfig) -> Result<AfPacketTx, IoError> {
        let ifindex = sys::ifindex(iface)?;
        let link = link_of(iface)?;
        let err = |op| move |source| IoError::Interface { iface: iface.to_owned(), op, source };
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(err("open AF_PACKET socket"))?;
        if cfg.qdisc_bypass {
            sys::setsockopt(&fd, k::SOL_PACKET, k::PACKET_QDISC_BYPASS, &1 as &libc::c_int)
                .map_err(err("set PACKET_QDISC_BYPASS"))?;
        }
        if cfg.vnet_hdr {
            sys::setsockopt(&fd, k::SOL_PACKET, k::PACKET_VNET_HDR, &1 as &libc::c_int)
                .map_err(err("set PACKET_VNET_HDR"))?;
        }
        // Protocol 0 registers no receive hook: a transmit socket never queues frames it will not read.
        bind(&fd, iface, ifindex, 0)?;
        Ok(AfPacketTx {
            iface: iface.to_owned(),
            fd,
            link,
            vnet_hdr: cfg.vnet_hdr,
            tags: vec![[0; 4]; TX_CHUNK],
            vnets: vec![[0; VnetHdr::LEN]; TX_CHUNK],
        })
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Checks that the sink can send `f` as it is.
    fn check(&self, f: &Frame<'_>) -> Result<(), IoError> {
        if f.link != self.link {
            return Err(IoError::LinkMismatch {
                iface: self.iface.clone(),
                expected: self.link,
                found: f.link,
            });
        }
        match f.offload {
            Some(hdr) if !self.vnet_hdr && !hdr.is_plain() => {
                Err(IoError::OffloadUnsupported { iface: self.iface.clone(), hdr })
            }
            _ => Ok(()),
        }
    }

    /// Sends up to `TX_CHUNK` frames that all passed `check`; returns how many went out.
    fn send_chunk(&mut self, frames: &[Frame<'_>]) -> Result<usize, IoError> {
        let n = frames.len().min(TX_CHUNK);
        let mut iovs = [[libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 4]; TX_CHUNK];
        // SAFETY: mmsghdr is plain data (pointers and integers); all-zero is a valid value.
        let mut msgs: [libc::mmsghdr; TX_CHUNK] = unsafe { std::mem::zeroed() };
        for (i, f) in frames.iter().take(n).enumerate() {
            self.vnets[i] = f.offload.unwrap_or_default().to_bytes();
            let (head, tag, tail) = f.wire_parts(&mut self.tags[i]);
            let mut parts = 0;
            if self.vnet_hdr {
                iovs[i][parts] = sys::iovec(&self.vnets[i]);
                parts += 1;
            }
            for piece in [head, tag, tail] {
                if !piece.is_empty() {
                    iovs[i][parts] = sys::iovec(piece);
                    parts += 1;
                }
            }
            msgs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = parts;
        }
        // SAFETY: `msgs[..n]` point at `iovs[i][..parts]`, which point at the frames' bytes and the
        // scratch arrays in `self`; all outlive the call, and the kernel only reads them. No address
        // is given: the socket is bound to the interface.
        let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        if rc < 0 {
            let source = sys::errno();
            return match source.raw_os_error() {
                // The device queue is full (or the socket would block): nothing went out this time.
                Some(libc::ENOBUFS | libc::EAGAIN) => Ok(0),
                Some(libc::EMSGSIZE) => Err(IoError::FrameTooLong {
                    iface: self.iface.clone(),
                    len: frames.first().map_or(0, |f| f.data.len()),
                    max: sys::mtu(&self.iface).map_or(0, |m| m as usize + 14),
                }),
                _ => Err(IoError::Interface { iface: self.iface.clone(), op: "send (sendmmsg)", source }),
            };
        }
        Ok(rc as usize)
    }
}

impl FrameSink for AfPacketTx {
    fn send_batch(&mut self, frames: &[Frame<'_>]) -> Result<usize, IoError> {
        // Send the longest prefix that passes the checks; a frame failing them is reported by itself.
        let ok = frames.iter().position(|f| self.check(f).is_err()).unwrap_or(frames.len());
        if ok == 0 {
            if let Some(f) = frames.first() {
                self.check(f)?;
            }
            return Ok(0);
        }
        let mut sent = 0;
        while sent < ok {
            match self.send_chunk(&frames[sent..ok]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_sockopt_packs_group_mode_and_flags() {
        assert_eq!(Fanout::hash(7).sockopt(), 7 | (0x8000 << 16));
        let lb = Fanout { group: 0x1234, mode: FanoutMode::LoadBalance, defrag: false, rollover: true };
        assert_eq!(lb.sockopt(), 0x1234 | (0x1001 << 16));
    }

    #[test]
    fn ring_geometry_rejects_what_the_kernel_would() {
        let ok = ring_geometry("x", &RingConfig::default()).unwrap();
        assert_eq!(ok.frame_nr, 16 * 512);
        let cfg = RingConfig { block_size: 1000, ..RingConfig::default() };
        let e = ring_geometry("veth0", &cfg).unwrap_err().to_string();
        assert!(e.starts_with("veth0: invalid configuration: block size 1000"), "{e}");
        let cfg = RingConfig { frame_size: 100, ..RingConfig::default() };
        assert!(ring_geometry("x", &cfg).is_err());
        let cfg = RingConfig { block_count: 0, ..RingConfig::default() };
        assert!(ring_geometry("x", &cfg).is_err());
    }

    #[test]
    fn opening_a_missing_interface_names_it() {
        let e = AfPacketRx::open("dfw-nonexist0", &RingConfig::default()).unwrap_err();
        assert_eq!(e.to_string(), "dfw-nonexist0: no such interface in this network namespace");
        let e = AfPacketTx::open("bad/name", &TxConfig::default()).unwrap_err();
        assert!(matches!(e, IoError::BadInterfaceName { .. }), "{e}");
    }
}
