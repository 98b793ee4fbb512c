//! One batch-oriented interface over every place frames come from or go to.
//!
//! The engine's loop is `recv_batch → parse → decide → send_batch`, and it should not care whether the
//! frames came from a capture file ([`CaptureSource`]), an AF_PACKET ring
//! ([`crate::afpacket::AfPacketRx`]), a tap device ([`crate::tap::Tap`]) or pnet's datalink channel (the
//! `pnet` feature). [`FrameSource`] and [`FrameSink`] are that interface; [`Frame`] is one frame with the
//! metadata a live source knows beyond the bytes (a VLAN tag the NIC or the kernel stripped, virtio
//! offload information).
//!
//! # Lifetimes: frames borrow the source until the next receive
//!
//! [`FrameSource::recv_batch`] takes `&'a mut self` and fills a `Batch<'a>`: the frames point straight
//! into the source's memory (the mapped capture file, the AF_PACKET ring blocks, the tap's read buffer),
//! with no copy. The borrow checker then guarantees what the ring needs: the source cannot be asked for
//! the next batch while a frame of the previous one is still alive, so the ring blocks handed out last
//! time can be returned to the kernel at the start of the next call. To reuse a batch's allocation
//! across calls, let it go with [`Batch::recycle`], which empties it and frees it from the borrow:
//!
//! ```
//! use pktio::io::{Batch, CaptureSource, FrameSource};
//! use pktio::{Capture, LinkType, PcapWriter};
//!
//! # let frame = [0x45, 0, 0, 20, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
//! # let mut w = PcapWriter::new(Vec::new(), LinkType::Raw, 65535).unwrap();
//! # for _ in 0..5 { w.write_frame(0, &frame, 20).unwrap(); }
//! let cap = Capture::from_bytes(w.into_inner(), "mem.pcap")?;
//! let mut src = CaptureSource::new(&cap);
//! let mut spare: Batch<'static> = Batch::with_capacity(2);
//! let mut total = 0;
//! loop {
//!     let mut batch = spare; // a Batch<'static> is a Batch<'a> for any 'a
//!     let n = src.recv_batch(&mut batch)?;
//!     for f in batch.frames() {
//!         let _pkt = f.parse();
//!     }
//!     total += n;
//!     spare = batch.recycle(); // ends the borrow of `src`, keeps the allocation
//!     if n == 0 && src.is_finished() {
//!         break;
//!     }
//! }
//! assert_eq!(total, 5);
//! # Ok::<(), pktio::io::IoError>(())
//! ```
//!
//! # Sinks
//!
//! [`FrameSink::send_batch`] follows [`std::io::Write::write`]: it returns how many frames from the front
//! of the slice went out, which may be fewer than all of them when the device pushes back; an error is
//! reported only when the first frame it tried could not be sent, so frames sent before a failure are
//! never unaccounted for. A sink re-inserts a [`Frame::vlan`] tag that a source stripped, so forwarding
//! a frame keeps its tag.

use std::io;
use std::path::{Path, PathBuf};

use crate::capture::{Capture, CaptureError, CaptureFrame, Frames, PcapWriter};
use crate::link::LinkType;
use crate::packet::Packet;
use crate::parse::{parse_into, ParseError};

/// An 802.1Q/802.1ad tag that arrived as metadata (the kernel or the NIC took it out of the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Tag protocol identifier: 0x8100 (802.1Q) or 0x88a8 (802.1ad).
    pub tpid: u16,
    /// Tag control information: priority (3 bits), drop eligible (1 bit), VLAN id (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// The 12-bit VLAN id.
    pub fn vid(self) -> u16 {
        self.tci & 0x0fff
    }

    /// The four tag bytes as they sit in a frame after the source MAC.
    pub fn to_bytes(self) -> [u8; 4] {
        let [a, b] = self.tpid.to_be_bytes();
        let [c, d] = self.tci.to_be_bytes();
        [a, b, c, d]
    }
}

/// The virtio-net header a tap with `IFF_VNET_HDR` puts before each frame (virtio spec 5.1.6,
/// `struct virtio_net_hdr` in linux/virtio_net.h): how the frame is offloaded.
///
/// A guest (or the kernel, for a tap) hands over TCP segments up to 64 KiB long with `gso_type` set and
/// the checksum left for the device to fill (`flags & NEEDS_CSUM`); whoever passes the frame on must pass
/// the header with it, or the next hop sees an oversized frame with a wrong checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VnetHdr {
    /// [`VnetHdr::NEEDS_CSUM`], [`VnetHdr::DATA_VALID`].
    pub flags: u8,
    /// [`VnetHdr::GSO_NONE`], [`VnetHdr::GSO_TCPV4`], [`VnetHdr::GSO_UDP`], [`VnetHdr::GSO_TCPV6`],
    /// [`VnetHdr::GSO_UDP_L4`], possibly or-ed with [`VnetHdr::GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (for `NEEDS_CSUM`).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Length of the header on the wire (without the `num_buffers` field of the mergeable variant).
    pub const LEN: usize = 10;
    /// The checksum is partial: the device must finish it.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was verified.
    pub const DATA_VALID: u8 = 2;
    /// Not a GSO frame.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4 segmentation.
    pub const GSO_TCPV4: u8 = 1;
    /// UDP fragmentation offload.
    pub const GSO_UDP: u8 = 3;
    /// TCP over IPv6 segmentation.
    pub const GSO_TCPV6: u8 = 4;
    /// UDP segmentation (USO).
    pub const GSO_UDP_L4: u8 = 5;
    /// Flag: the TCP segments carry ECN CWR.
    pub const GSO_ECN: u8 = 0x80;

    /// Reads a header in the byte order of the host (virtio 0.9 legacy headers on a tap are native
    /// endian unless `TUNSETVNETLE`/`TUNSETVNETBE` say otherwise; dfw leaves them native).
    pub fn from_bytes(b: [u8; Self::LEN]) -> VnetHdr {
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// The header's bytes, host byte order (see [`VnetHdr::from_bytes`]).
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// True when the frame is a GSO super-frame (to be cut into segments on its way out).
    pub fn is_gso(self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// True when the header asks for nothing: no GSO and no partial checksum.
    pub fn is_plain(self) -> bool {
        !self.is_gso() && self.flags & Self::NEEDS_CSUM == 0
    }
}

/// One frame from a [`FrameSource`], borrowing the source's memory (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's bytes as captured, from the link-layer header on (without a stripped VLAN tag).
    pub data: &'a [u8],
    /// The frame's length on the wire (without a stripped VLAN tag); at least `data.len()` for live
    /// sources, possibly more for a capture cut by its snaplen.
    pub wire_len: u32,
    /// Receive time in nanoseconds since the UNIX epoch.
    pub ts_nanos: u64,
    /// What the first byte of `data` is.
    pub link: LinkType,
    /// An outer VLAN tag that was taken out of the frame and handed over as metadata (AF_PACKET ring
    /// header, `TP_STATUS_VLAN_VALID`).
    pub vlan: Option<VlanTag>,
    /// Offload information from a virtio-net header (taps with `IFF_VNET_HDR`).
    pub offload: Option<VnetHdr>,
}

impl<'a> Frame<'a> {
    /// A frame with no metadata beyond its bytes, as a sink's caller builds to send: `wire_len` is the
    /// data length and the timestamp 0.
    pub fn new(link: LinkType, data: &'a [u8]) -> Frame<'a> {
        Frame {
            data,
            wire_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            ts_nanos: 0,
            link,
            vlan: None,
            offload: None,
        }
    }

    /// Parses the frame, putting a VLAN tag that arrived as metadata back in front of any tags the
    /// bytes still carry, so the summary says what was on the wire.
    #[inline]
    pub fn parse(&self) -> Result<Packet, ParseError> {
        let mut pkt = Packet::default();
        self.parse_into(&mut pkt)?;
        Ok(pkt)
    }

    /// [`Frame::parse`] into a summary the caller keeps, as [`parse_into`] does: on `Ok` every field of
    /// `out` is overwritten, on `Err` `out` must not be used.
    #[inline]
    pub fn parse_into(&self, out: &mut Packet) -> Result<(), ParseError> {
        parse_into(self.link, self.data, self.wire_len, out)?;
        if let Some(tag) = self.vlan {
            out.vlans = [tag.vid(), out.vlans[0]];
            out.vlan_count = out.vlan_count.saturating_add(1);
        }
        Ok(())
    }

    /// The pieces the frame is sent as, with a metadata VLAN tag re-inserted after the MAC addresses:
    /// `(head, tag, tail)` where `head ++ tag ++ tail` is the frame to put on the wire. Without a tag (or
    /// for a link type without MAC addresses) `tag` is empty and `tail` is empty.
    pub(crate) fn wire_parts<'t>(&self, tag_buf: &'t mut [u8; 4]) -> (&'a [u8], &'t [u8], &'a [u8]) {
        match self.vlan {
            Some(tag) if self.link == LinkType::Ethernet && self.data.len() >= 12 => {
                *tag_buf = tag.to_bytes();
                let (head, tail) = self.data.split_at(12);
                (head, &tag_buf[..], tail)
            }
            _ => (self.data, &[], &[]),
        }
    }
}

impl<'a> From<CaptureFrame<'a>> for Frame<'a> {
    fn from(f: CaptureFrame<'a>) -> Frame<'a> {
        Frame {
            data: f.data,
            wire_len: f.wire_len,
            ts_nanos: f.ts_nanos,
            link: f.link,
            vlan: None,
            offload: None,
        }
    }
}

/// A bounded batch of frames borrowed from one source for `'a`.
#[derive(Debug)]
pub struct Batch<'a> {
    frames: Vec<Frame<'a>>,
    capacity: usize,
}

impl Default for Batch<'_> {
    fn default() -> Self {
        Batch::with_capacity(Batch::DEFAULT_CAPACITY)
    }
}

impl<'a> Batch<'a> {
    /// The batch size dfw uses when nobody says otherwise.
    pub const DEFAULT_CAPACITY: usize = 64;

    /// An empty batch holding at most `capacity` frames (at least 1).
    pub fn with_capacity(capacity: usize) -> Batch<'a> {
        let capacity = capacity.max(1);
        Batch { frames: Vec::with_capacity(capacity), capacity }
    }

    /// Most frames the batch holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// True when the batch holds `capacity` frames.
    pub fn is_full(&self) -> bool {
        self.frames.len() >= self.capacity
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.capacity - self.frames.len()
    }

    /// The frames, in arrival order.
    pub fn frames(&self) -> &[Frame<'a>] {
        &self.frames
    }

    /// Adds a frame; gives it back when the batch is full.
    pub fn push(&mut self, frame: Frame<'a>) -> Result<(), Frame<'a>> {
        if self.is_full() {
            return Err(frame);
        }
        self.frames.push(frame);
        Ok(())
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// Empties the batch and releases its borrow, keeping the allocation for the next receive.
    pub fn recycle<'b>(mut self) -> Batch<'b> {
        self.frames.clear();
        // An empty Vec<Frame<'a>> becomes an empty Vec<Frame<'b>>: the element types have the same size
        // and alignment, so the standard library's in-place collection keeps the buffer.
        let frames = self.frames.into_iter().map(|_| unreachable_frame()).collect();
        Batch { frames, capacity: self.capacity }
    }
}

/// Never called: `recycle` maps an empty iterator. Kept out of line so no panic path is emitted inline.
#[cold]
fn unreachable_frame<'b>() -> Frame<'b> {
    Frame::new(LinkType::Ethernet, &[])
}

impl<'b, 'a> IntoIterator for &'b Batch<'a> {
    type Item = &'b Frame<'a>;
    type IntoIter = std::slice::Iter<'b, Frame<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.frames.iter()
    }
}

/// Where frames come from.
pub trait FrameSource {
    /// Clears `batch` and fills it with up to `batch.capacity()` frames borrowed from `self` (see the
    /// module doc for why the borrow lasts as long as the batch). Live sources wait up to their
    /// configured timeout for the first frame and return `Ok(0)` when none came; a finished capture
    /// returns `Ok(0)` and [`FrameSource::is_finished`] turns true.
    fn recv_batch<'a>(&'a mut self, batch: &mut Batch<'a>) -> Result<usize, IoError>;

    /// True when no frame will ever come again (end of a capture file). Live sources never finish.
    fn is_finished(&self) -> bool {
        false
    }
}

/// Where frames go.
pub trait FrameSink {
    /// Sends frames from the front of `frames`; returns how many went out (see the module doc).
    fn send_batch(&mut self, frames: &[Frame<'_>]) -> Result<usize, IoError>;

    /// Pushes out anything buffered.
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

/// An error receiving or sending frames. Each variant names the interface, namespace or file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A system call on an interface failed.
    #[error("{iface}: {op}: {source}")]
    Interface {
        /// Interface name.
        iface: String,
        /// What dfw was doing ("open AF_PACKET socket", "set PACKET_FANOUT", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No interface of that name exists in the namespace the call ran in.
    #[error("{iface}: no such interface in this network namespace")]
    NoSuchInterface {
        /// Interface name.
        iface: String,
    },
    /// An interface name is empty, too long (15 bytes at most) or holds a NUL.
    #[error("{iface:?}: not a valid interface name (1 to 15 bytes, no NUL or '/')")]
    BadInterfaceName {
        /// The name given.
        iface: String,
    },
    /// A configuration value the kernel would refuse.
    #[error("{iface}: invalid configuration: {reason}")]
    Config {
        /// Interface name.
        iface: String,
        /// What is wrong.
        reason: String,
    },
    /// The kernel's ring header points outside its block: the ring is not in the state dfw set up.
    #[error("{iface}: ring block {block} is inconsistent: {what}")]
    RingCorrupt {
        /// Interface name.
        iface: String,
        /// Block index.
        block: usize,
        /// What was out of place.
        what: &'static str,
    },
    /// A frame is longer than the interface or sink can take.
    #[error("{iface}: frame of {len} bytes is longer than the {max} bytes it can send")]
    FrameTooLong {
        /// Interface or file.
        iface: String,
        /// Frame length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A frame carries offload work (GSO, partial checksum) the sink cannot pass on.
    #[error("{iface}: frame needs offload ({hdr:?}) but the sink has no virtio-net header to carry it")]
    OffloadUnsupported {
        /// Interface.
        iface: String,
        /// The frame's offload header.
        hdr: VnetHdr,
    },
    /// A frame's link type does not match what the sink sends.
    #[error("{iface}: cannot send a {found} frame on a {expected} sink")]
    LinkMismatch {
        /// Interface or file.
        iface: String,
        /// Link type of the sink.
        expected: LinkType,
        /// Link type of the frame.
        found: LinkType,
    },
    /// A network namespace operation failed.
    #[error("network namespace {netns}: {op}: {source}")]
    Netns {
        /// Namespace name or path.
        netns: String,
        /// What dfw was doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading a capture file failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Writing a capture file failed.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// File.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// pnet's datalink channel failed.
    #[error("{iface}: pnet datalink: {source}")]
    Pnet {
        /// Interface.
        iface: String,
        /// The error pnet gave.
        #[source]
        source: io::Error,
    },
}

/// A capture file as a [`FrameSource`]: frames borrow the [`Capture`]'s mapped bytes.
#[derive(Debug)]
pub struct CaptureSource<'c> {
    frames: Frames<'c>,
    finished: bool,
}

impl<'c> CaptureSource<'c> {
    /// Reads `cap` from its first frame.
    pub fn new(cap: &'c Capture) -> CaptureSource<'c> {
        CaptureSource { frames: cap.frames(), finished: false }
    }
}

impl<'c> FrameSource for CaptureSource<'c> {
    fn recv_batch<'a>(&'a mut self, batch: &mut Batch<'a>) -> Result<usize, IoError> {
        batch.clear();
        while !batch.is_full() {
            match self.frames.next() {
                Some(Ok(f)) => {
                    // `'c: 'a` because `self: 'a` holds a `Frames<'c>`.
                    let _ = batch.push(f.into());
                }
                Some(Err(e)) => {
                    self.finished = true;
                    if batch.is_empty() {
                        return Err(e.into());
                    }
                    // Hand out what came before the damage; the next call ends the stream.
                    break;
                }
                None => {
                    self.finished = true;
                    break;
                }
            }
        }
        Ok(batch.len())
    }

    fn is_finished(&self) -> bool {
        self.finished
    }
}

/// A pcap file being written, as a [`FrameSink`]. Metadata VLAN tags are written back into the frames;
/// offload headers are dropped (a capture records the frame as handed over).
#[derive(Debug)]
pub struct PcapSink<W: io::Write> {
    writer: PcapWriter<W>,
    path: PathBuf,
    link: LinkType,
    scratch: Vec<u8>,
}

impl PcapSink<io::BufWriter<std::fs::File>> {
    /// Creates (or truncates) `path` and writes a microsecond pcap header for `link`.
    pub fn create(path: &Path, link: LinkType, snaplen: u32) -> Result<Self, IoError> {
        let err = |source| IoError::Write { path: path.to_path_buf(), source };
        let file = std::fs::File::create(path).map_err(err)?;
        PcapSink::new(io::BufWriter::new(file), path, link, snaplen)
    }
}

impl<W: io::Write> PcapSink<W> {
    /// Writes a pcap header to `w`; `path` names it in errors.
    pub fn new(w: W, path: &Path, link: LinkType, snaplen: u32) -> Result<Self, IoError> {
        let writer = PcapWriter::new(w, link, snaplen)
            .map_err(|source| IoError::Write { path: path.to_path_buf(), source })?;
        Ok(PcapSink { writer, path: path.to_path_buf(), link, scratch: Vec::new() })
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> Result<W, IoError> {
        self.writer.flush().map_err(|source| IoError::Write { path: self.path.clone(), source })?;
        Ok(self.writer.into_inner())
    }
}

impl<W: io::Write> FrameSink for PcapSink<W> {
    fn send_batch(&mut self, frames: &[Frame<'_>]) -> Result<usize, IoError> {
        for (i, f) in frames.iter().enumerate() {
            let res = if f.link != self.link {
                Err(IoError::LinkMismatch {
                    iface: self.path.display().to_string(),
                    expected: self.link,
                    found: f.link,
                })
            } else {
                let mut tag = [0u8; 4];
                let (head, tag, tail) = f.wire_parts(&mut tag);
                let wire_len = f.wire_len.saturating_add(tag.len() as u32);
                let res = if tag.is_empty() {
                    self.writer.write_frame(f.ts_nanos, head, wire_len)
                } else {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(head);
                    self.scratch.extend_from_slice(tag);
                    self.scratch.extend_from_slice(tail);
                    self.writer.write_frame(f.ts_nanos, &self.scratch, wire_len)
                };
                res.map_err(|source| IoError::Write { path: self.path.clone(), source })
            };
            if let Err(e) = res {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(frames.len())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.writer.flush().map_err(|source| IoError::Write { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_frame;

    fn raw_frames(n: usize) -> Capture {
        let frame = [0x45, 0, 0, 20, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let mut w = PcapWriter::new(Vec::new(), LinkType::Raw, 65535).unwrap();
        for i in 0..n {
            w.write_frame(i as u64 * 1000, &frame, 20).unwrap();
        }
        Capture::from_bytes(w.into_inner(), "mem.pcap").unwrap()
    }

    #[test]
    fn capture_source_batches_then_finishes() {
        let cap = raw_frames(5);
        let mut src = CaptureSource::new(&cap);
        let mut spare: Batch<'static> = Batch::with_capacity(2);
        let mut sizes = Vec::new();
        loop {
            let mut batch = spare;
            let n = src.recv_batch(&mut batch).unwrap();
            assert_eq!(n, batch.len());
            sizes.push(n);
            spare = batch.recycle();
            if src.is_finished() {
                break;
            }
        }
        assert_eq!(sizes, [2, 2, 1]);
        assert_eq!(spare.capacity(), 2);
    }

    #[test]
    fn truncated_capture_yields_frames_then_the_error() {
        let cap = raw_frames(3);
        // Rebuild the capture with its last record cut short.
        let full = {
            let mut w = PcapWriter::new(Vec::new(), LinkType::Raw, 65535).unwrap();
            for f in cap.frames() {
                let f = f.unwrap();
                w.write_frame(f.ts_nanos, f.data, f.wire_len).unwrap();
            }
            w.into_inner()
        };
        let cut = Capture::from_bytes(full[..full.len() - 5].to_vec(), "cut.pcap").unwrap();
        let mut src = CaptureSource::new(&cut);
        let mut batch = Batch::with_capacity(8);
        assert_eq!(src.recv_batch(&mut batch).unwrap(), 2);
        let mut batch = batch.recycle();
        assert!(src.is_finished());
        // The stream ended at the damage; the frames before it were delivered.
        assert_eq!(src.recv_batch(&mut batch).unwrap(), 0);
        let mut src = CaptureSource::new(&cut);
        let mut one = Batch::with_capacity(2);
        assert_eq!(src.recv_batch(&mut one).unwrap(), 2);
        let mut one = one.recycle();
        let err = src.recv_batch(&mut one).unwrap_err();
        assert!(err.to_string().starts_with("cut.pcap: truncated capture"), "{err}");
    }

    #[test]
    fn metadata_vlan_is_outermost_when_parsed_and_written_back() {
        // 802.1Q-tagged inner frame (VLAN 20) whose outer tag (VLAN 7) came as ring metadata.
        let mut data = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 20, 0x08, 0x00];
        // IPv4 with protocol 253 (RFC 3692 experimentation): no transport header to parse.
        data.extend_from_slice(&[0x45, 0, 0, 20, 0, 1, 0, 0, 64, 253, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let f = Frame {
            vlan: Some(VlanTag { tpid: 0x88a8, tci: 0x2007 }),
            ..Frame::new(LinkType::Ethernet, &data)
        };
        let pkt = f.parse().unwrap();
        assert_eq!((pkt.vlan_count, pkt.vlans), (2, [7, 20]));

        let mut sink = PcapSink::new(Vec::new(), Path::new("out.pcap"), LinkType::Ethernet, 65535).unwrap();
        assert_eq!(sink.send_batch(&[f]).unwrap(), 1);
        let cap = Capture::from_bytes(sink.into_inner().unwrap(), "out.pcap").unwrap();
        let back = cap.frames().next().unwrap().unwrap();
        assert_eq!(back.wire_len as usize, data.len() + 4);
        assert_eq!(&back.data[12..16], &[0x88, 0xa8, 0x20, 0x07]);
        let pkt = parse_frame(back.link, back.data, back.wire_len).unwrap();
        assert_eq!((pkt.vlan_count, pkt.vlans), (2, [7, 20]));
    }

    #[test]
    fn pcap_sink_refuses_a_foreign_link_type_after_sending_the_rest() {
        let eth = [0u8; 60];
        let raw = [0x45, 0, 0, 20, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let frames = [Frame::new(LinkType::Ethernet, &eth), Frame::new(LinkType::Raw, &raw)];
        let mut sink = PcapSink::new(Vec::new(), Path::new("x.pcap"), LinkType::Ethernet, 65535).unwrap();
        assert_eq!(sink.send_batch(&frames).unwrap(), 1);
        let err = sink.send_batch(&frames[1..]).unwrap_err();
        assert_eq!(err.to_string(), "x.pcap: cannot send a raw IP frame on a Ethernet sink");
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::from_bytes(h.to_bytes()), h);
        assert!(h.is_gso() && !h.is_plain());
        assert!(VnetHdr::default().is_plain());
    }
}
