//! Capture files: reading pcap and pcapng through a memory map, writing pcap.
//!
//! [`Capture::open`] maps the file and checks its header; [`Capture::frames`] then yields each frame as
//! a [`CaptureFrame`] borrowing the mapped bytes, without copying. Both formats are read in either byte
//! order; pcap in microsecond and nanosecond resolution; pcapng with several sections, per-interface link
//! types, `if_tsresol` and `if_tsoffset`, enhanced, simple and (obsolete) packet blocks, skipping blocks
//! it does not know. Errors name the file and, where it helps, the byte offset:
//!
//! ```text
//! seed.pcap: truncated capture: record at byte 1234 needs 74 bytes, 20 remain
//! ```
//!
//! ```no_run
//! use pktio::{parse_frame, Capture};
//!
//! let cap = Capture::open("trace.pcap".as_ref())?;
//! for frame in cap.frames() {
//!     let frame = frame?;
//!     match parse_frame(frame.link, frame.data, frame.wire_len) {
//!         Ok(pkt) => println!("{:?}", pkt.ip),
//!         Err(e) => println!("drop ({}): {e}", e.reason()),
//!     }
//! }
//! # Ok::<(), pktio::CaptureError>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use crate::link::LinkType;

/// pcap global header length.
const PCAP_HEADER_LEN: usize = 24;
/// pcap record header length.
const PCAP_RECORD_LEN: usize = 16;
/// Smallest pcapng section header block: 28 bytes with no options.
const PCAPNG_SHB_MIN: usize = 28;
/// How far past the record being read the pcap reader asks the CPU to start loading the file: one page,
/// some fifty small records. Whoever parses a frame touches its bytes first; without the hint every
/// frame of a file streamed from the page cache waits for memory there. (Measured on the 2,000,000-frame
/// gen_pcap file: 1 KiB ahead took read+parse from 84 to 71 ms, 4 KiB to ~52 ms; 2, 8 and 16 KiB did
/// worse than 4.)
const PREFETCH_AHEAD: usize = 4096;

/// Hints the CPU to load the cache line at `p`.
#[inline]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, even past the end of the map, and reads
    // nothing into the program.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// pcap magic numbers as the first four bytes of the file read them (pcap-savefile(5)).
mod magic {
    pub const PCAP_US_LE: [u8; 4] = [0xd4, 0xc3, 0xb2, 0xa1];
    pub const PCAP_US_BE: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];
    pub const PCAP_NS_LE: [u8; 4] = [0x4d, 0x3c, 0xb2, 0xa1];
    pub const PCAP_NS_BE: [u8; 4] = [0xa1, 0xb2, 0x3c, 0x4d];
    /// pcapng section header block type; a palindrome, so it reads the same in either byte order.
    pub const PCAPNG_SHB: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
    pub const PCAPNG_BOM_BE: [u8; 4] = [0x1a, 0x2b, 0x3c, 0x4d];
    pub const PCAPNG_BOM_LE: [u8; 4] = [0x4d, 0x3c, 0x2b, 0x1a];
}

/// pcapng block types (draft-ietf-opsawg-pcapng).
mod block {
    pub const IDB: u32 = 1;
    pub const OPB: u32 = 2;
    pub const SPB: u32 = 3;
    pub const EPB: u32 = 6;
    pub const SHB: u32 = 0x0a0d_0d0a;
}

/// The file format of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic pcap.
    Pcap {
        /// Nanosecond timestamps (magic a1b23c4d) rather than microseconds (a1b2c3d4).
        nanos: bool,
        /// Written big-endian.
        big_endian: bool,
    },
    /// pcapng; byte order and link types are per section and interface.
    Pcapng,
}

/// What is wrong with a pcapng block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockDefect {
    /// The byte-order magic of a section header is neither 1a2b3c4d nor its reverse.
    ByteOrderMagic(u32),
    /// The section's major version is not 1.
    Version(u16, u16),
    /// The block total length is not a multiple of 4 or below the 12-byte minimum.
    Length(u32),
    /// The trailing copy of the block length differs from the leading one.
    TrailerMismatch {
        /// Leading length.
        head: u32,
        /// Trailing length.
        tail: u32,
    },
    /// The block body is shorter than its fixed fields.
    BodyTooShort {
        /// Block type.
        block_type: u32,
        /// Body length.
        len: usize,
    },
    /// A packet's captured length runs past the end of its block.
    CaptureLenPastBlock {
        /// Captured length as stated.
        caplen: u32,
        /// Bytes available in the block.
        room: usize,
    },
    /// A packet names an interface no description block introduced in this section.
    UnknownInterface(u32),
    /// An option runs past the end of its block.
    OptionPastBlock {
        /// Option code.
        code: u16,
    },
    /// `if_tsresol` asks for a resolution finer than dfw can represent.
    TimestampResolution(u8),
}

impl fmt::Display for BlockDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlockDefect::ByteOrderMagic(m) => write!(f, "byte-order magic 0x{m:08x} is not 0x1a2b3c4d"),
            BlockDefect::Version(major, minor) => write!(f, "unsupported pcapng version {major}.{minor}"),
            BlockDefect::Length(len) => write!(f, "block length {len} is not a multiple of 4 of at least 12"),
            BlockDefect::TrailerMismatch { head, tail } => {
                write!(f, "block length {head} does not match the trailing length {tail}")
            }
            BlockDefect::BodyTooShort { block_type, len } => {
                write!(f, "block type {block_type} has a {len}-byte body, too short for its fields")
            }
            BlockDefect::CaptureLenPastBlock { caplen, room } => {
                write!(f, "captured length {caplen} runs past the {room} bytes of the block")
            }
            BlockDefect::UnknownInterface(id) => write!(f, "packet names undeclared interface {id}"),
            BlockDefect::OptionPastBlock { code } => {
                write!(f, "option {code} runs past the end of the block")
            }
            BlockDefect::TimestampResolution(v) => write!(f, "if_tsresol 0x{v:02x} is finer than 1e-19 s"),
        }
    }
}

/// Renders " (name)" for a link type number dfw knows by name.
struct LinkName(u32);

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::link::link_type_name(self.0) {
            Some(name) => write!(f, " ({name})"),
            None => Ok(()),
        }
    }
}

/// An error reading a capture file. Every variant names the file; `Display` is one line starting with it.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened, inspected or mapped.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is empty.
    #[error("{}: empty file, not a pcap or pcapng capture", path.display())]
    Empty {
        /// File.
        path: PathBuf,
    },
    /// The file is shorter than the header its magic announces.
    #[error("{}: file is {len} bytes, too short for a {format} header ({need} bytes)", path.display())]
    TooShort {
        /// File.
        path: PathBuf,
        /// File length.
        len: u64,
        /// Header length needed.
        need: u64,
        /// "pcap" or "pcapng".
        format: &'static str,
    },
    /// The file starts with neither a pcap nor a pcapng magic number.
    #[error("{}: not a pcap or pcapng file (magic 0x{magic:08x})", path.display())]
    NotACapture {
        /// File.
        path: PathBuf,
        /// The first four bytes, read big-endian.
        magic: u32,
    },
    /// The capture's link type is one dfw cannot parse.
    #[error(
        "{}: unsupported link type {link}{}; dfw reads Ethernet, Linux SLL/SLL2 and raw IP",
        path.display(),
        LinkName(*link)
    )]
    UnsupportedLinkType {
        /// File.
        path: PathBuf,
        /// `LINKTYPE_*` number.
        link: u32,
        /// Byte offset of the header or interface description block naming it.
        offset: u64,
    },
    /// A record or block runs past the end of the file.
    #[error(
        "{}: truncated capture: {what} at byte {offset} needs {need} bytes, {remain} remain",
        path.display()
    )]
    Truncated {
        /// File.
        path: PathBuf,
        /// "record" (pcap) or "block" (pcapng).
        what: &'static str,
        /// Byte offset where the record or block starts.
        offset: u64,
        /// Bytes it needs from there.
        need: u64,
        /// Bytes the file has from there.
        remain: u64,
    },
    /// A pcapng block is malformed.
    #[error("{}: bad pcapng block at byte {offset}: {defect}", path.display())]
    BadBlock {
        /// File.
        path: PathBuf,
        /// Byte offset where the block starts.
        offset: u64,
        /// What is wrong.
        defect: BlockDefect,
    },
}

impl CaptureError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            CaptureError::Io { path, .. }
            | CaptureError::Empty { path }
            | CaptureError::TooShort { path, .. }
            | CaptureError::NotACapture { path, .. }
            | CaptureError::UnsupportedLinkType { path, .. }
            | CaptureError::Truncated { path, .. }
            | CaptureError::BadBlock { path, .. } => path,
        }
    }

    /// Byte offset in the file the error is about, when there is one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            CaptureError::UnsupportedLinkType { offset, .. }
            | CaptureError::Truncated { offset, .. }
            | CaptureError::BadBlock { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

/// The bytes of a capture: a read-only map of the file, or a buffer handed in.
#[derive(Debug)]
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An open capture file. Owns the mapped bytes; frames borrow from it.
///
/// The file is memory-mapped, so it must not be truncated or rewritten while the `Capture` is alive:
/// dfw reads finished captures. (Appending is harmless; the map covers the length seen at `open`.)
#[derive(Debug)]
pub struct Capture {
    path: PathBuf,
    bytes: Bytes,
    format: CaptureFormat,
    /// Link type of a pcap file (pcapng keeps one per interface).
    pcap_link: LinkType,
}

/// One frame of a capture, borrowing the capture's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureFrame<'a> {
    /// Captured bytes (possibly fewer than `wire_len`).
    pub data: &'a [u8],
    /// Length of the frame on the wire.
    pub wire_len: u32,
    /// Timestamp in nanoseconds since the UNIX epoch (0 for pcapng simple packet blocks, which carry none).
    pub ts_nanos: u64,
    /// Link type of the frame.
    pub link: LinkType,
    /// pcapng interface id within its section (0 for pcap).
    pub interface: u32,
}

impl Capture {
    /// Opens and maps `path`, checking its header (and, for pcap, its link type).
    pub fn open(path: &Path) -> Result<Capture, CaptureError> {
        let io_err = |source| CaptureError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        // Mapping an empty file fails on some systems; report it as what it is.
        if len == 0 {
            return Err(CaptureError::Empty { path: path.to_path_buf() });
        }
        // SAFETY: the map is read-only, so this process never writes through it. Another process
        // truncating or rewriting the file while it is mapped would change bytes under the `&[u8]` we
        // hand out (or raise SIGBUS); dfw reads finished capture files, not ones being written, and
        // `Capture`'s doc states that contract. Every read of the bytes is bounds-checked against the
        // map's length.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        Capture::new(path.to_path_buf(), Bytes::Mapped(map))
    }

    /// Reads a capture from bytes in memory; `name` stands for the file name in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<Capture, CaptureError> {
        Capture::new(PathBuf::from(name), Bytes::Owned(bytes))
    }

    fn new(path: PathBuf, bytes: Bytes) -> Result<Capture, CaptureError> {
        let data = bytes.as_slice();
        let len = data.len() as u64;
        if data.is_empty() {
            return Err(CaptureError::Empty { path });
        }
        let Some(&head) = data.first_chunk::<4>() else {
            return Err(CaptureError::TooShort { path, len, need: PCAP_HEADER_LEN as u64, format: "pcap" });
        };
        let (nanos, big_endian) = match head {
            magic::PCAP_US_LE => (false, false),
            magic::PCAP_US_BE => (false, true),
            magic::PCAP_NS_LE => (true, false),
            magic::PCAP_NS_BE => (true, true),
            magic::PCAPNG_SHB => {
                if data.len() < PCAPNG_SHB_MIN {
                    return Err(CaptureError::TooShort {
                        path,
                        len,
                        need: PCAPNG_SHB_MIN as u64,
                        format: "pcapng",
                    });
                }
                // The section header itself is validated by the frame iterator, which reads every SHB.
                return Ok(Capture {
                    path,
                    bytes,
                    format: CaptureFormat::Pcapng,
                    pcap_link: LinkType::Ethernet,
                });
            }
            other => return Err(CaptureError::NotACapture { path, magic: u32::from_be_bytes(other) }),
        };
        if data.len() < PCAP_HEADER_LEN {
            return Err(CaptureError::TooShort { path, len, need: PCAP_HEADER_LEN as u64, format: "pcap" });
        }
        // The low 16 bits name the link type; the upper bits carry FCS information (pcap-savefile(5)).
        let dlt = read_u32(data, 20, big_endian).unwrap_or_default() & 0xffff;
        let link = LinkType::from_dlt(dlt);
        if !link.is_supported() {
            return Err(CaptureError::UnsupportedLinkType { path, link: dlt, offset: 20 });
        }
        Ok(Capture { path, bytes, format: CaptureFormat::Pcap { nanos, big_endian }, pcap_link: link })
    }

    /// The file's format.
    pub fn format(&self) -> CaptureFormat {
        self.format
    }

    /// The file name errors use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The link type of a pcap file; `None` for pcapng, where each interface has its own.
    pub fn pcap_link(&self) -> Option<LinkType> {
        matches!(self.format, CaptureFormat::Pcap { .. }).then_some(self.pcap_link)
    }

    /// Iterates over the frames. The iterator ends after yielding the first error.
    pub fn frames(&self) -> Frames<'_> {
        let state = match self.format {
            CaptureFormat::Pcap { nanos, big_endian } => {
                State::Pcap { link: self.pcap_link, nanos, be: big_endian }
            }
            CaptureFormat::Pcapng => State::Pcapng { section: None },
        };
        let offset = match self.format {
            CaptureFormat::Pcap { .. } => PCAP_HEADER_LEN,
            CaptureFormat::Pcapng => 0,
        };
        Frames { path: &self.path, data: self.bytes.as_slice(), offset, done: false, state }
    }
}

/// An interface as a pcapng IDB describes it.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second (`if_tsresol`; 10^6 by default).
    units_per_sec: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: i64,
    /// Snapshot length (0: unlimited); bounds simple packet blocks.
    snaplen: u32,
}

impl Interface {
    fn ts_nanos(&self, ts: u64) -> u64 {
        let ns = u128::from(ts) * 1_000_000_000 / u128::from(self.units_per_sec.max(1));
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        let offset = self.offset_secs.saturating_mul(1_000_000_000);
        ns.saturating_add_signed(offset)
    }
}

#[derive(Debug)]
struct Section {
    be: bool,
    interfaces: Vec<Interface>,
}

#[derive(Debug)]
enum State {
    Pcap { link: LinkType, nanos: bool, be: bool },
    Pcapng { section: Option<Section> },
}

/// What one pcapng block turned out to be.
#[derive(Debug)]
enum Block<'a> {
    /// A packet block.
    Packet(CaptureFrame<'a>),
    /// A section header, interface description or a block dfw skips.
    Other,
    /// No block: the file ends here.
    EndOfFile,
}

/// Iterator over the frames of a [`Capture`]; see [`Capture::frames`].
#[derive(Debug)]
pub struct Frames<'a> {
    path: &'a Path,
    data: &'a [u8],
    offset: usize,
    done: bool,
    state: State,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<CaptureFrame<'a>, CaptureError>;

    // A whole pcap record is read inline, in the caller's loop; everything else (pcapng, the end of the
    // file, a damaged record) goes through `next_any`, out of line.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if let State::Pcap { link, nanos, be } = self.state {
            if !self.done {
                if let Some(frame) = self.pcap_record(link, nanos, be) {
                    return Some(Ok(frame));
                }
            }
        }
        self.next_any()
    }
}

/// How to read the records of a pcap file quickly ([`Frames::next_from`]): its link type, timestamp
/// unit and byte order, worked out once rather than per record.
#[derive(Debug, Clone, Copy)]
pub struct PcapReader {
    link: LinkType,
    nanos: bool,
    be: bool,
}

impl<'a> Frames<'a> {
    /// For a pcap file, what [`Frames::next_from`] needs to read its records; `None` for pcapng.
    pub fn pcap_reader(&self) -> Option<PcapReader> {
        match self.state {
            State::Pcap { link, nanos, be } => Some(PcapReader { link, nanos, be }),
            State::Pcapng { .. } => None,
        }
    }

    /// The next frame when it is a whole pcap record, read as [`Iterator::next`] would; `None` at the
    /// end of the file, before a damaged record and after an error (where `next` reports them).
    #[inline(always)]
    fn next_record(&mut self, r: PcapReader) -> Option<CaptureFrame<'a>> {
        if self.done {
            return None;
        }
        self.pcap_record(r.link, r.nanos, r.be)
    }

    /// The next item exactly as [`Iterator::next`] gives it, a whole pcap record read through `pcap`
    /// ([`Frames::pcap_reader`], worked out once by the caller) without `next`'s check of the format.
    #[inline(always)]
    pub fn next_from(&mut self, pcap: Option<PcapReader>) -> Option<Result<CaptureFrame<'a>, CaptureError>> {
        match pcap.and_then(|r| self.next_record(r)) {
            Some(frame) => Some(Ok(frame)),
            None => self.next(),
        }
    }

    /// Where the next record starts, in bytes from the start of the file.
    pub fn position(&self) -> usize {
        self.offset
    }

    /// Moves a pcap file's reader to `offset`, where a record starts: a [`Frames::position`] a reader
    /// of the same capture stood at (so another reader's walk can be skipped without reading it).
    /// False, having moved nothing, for a pcapng file (whose blocks carry state a reader must see)
    /// and for an offset past the end of the file.
    pub fn seek(&mut self, offset: usize) -> bool {
        if !matches!(self.state, State::Pcap { .. }) || offset > self.data.len() {
            return false;
        }
        self.offset = offset;
        true
    }

    /// Moves past up to `count` frames without handing them out, as `count` calls of `next` would,
    /// and returns how many it passed: fewer at the end of the capture or where it is damaged (a
    /// damaged pcap record is left for `next` to report; pcapng damage ends the iteration unreported).
    /// A pcap record costs only a read of its length, which lets several readers of one capture share
    /// it out by runs of frames.
    pub fn skip_frames(&mut self, count: u64) -> u64 {
        let mut passed = 0;
        if let State::Pcap { be, .. } = self.state {
            while passed < count && !self.done {
                let Some(rest) = self.data.get(self.offset..) else { break };
                // Each record's place depends on the one before: without the hint every line of the
                // file would be waited for in turn.
                prefetch(rest.as_ptr().wrapping_add(PREFETCH_AHEAD));
                let Some(caplen) = read_u32(rest, 8, be) else { break };
                let need = PCAP_RECORD_LEN.saturating_add(caplen as usize);
                if rest.len() < need {
                    break;
                }
                self.offset += need;
                passed += 1;
            }
            return passed;
        }
        while passed < count && matches!(self.next(), Some(Ok(_))) {
            passed += 1;
        }
        passed
    }

    /// The next frame of any format, or the error that ends the iteration.
    fn next_any(&mut self) -> Option<Result<CaptureFrame<'a>, CaptureError>> {
        if self.done {
            return None;
        }
        let item = match self.state {
            State::Pcap { link, nanos, be } => self.next_pcap(link, nanos, be),
            State::Pcapng { .. } => self.next_pcapng(),
        };
        match item {
            Some(Ok(frame)) => Some(Ok(frame)),
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e))
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

fn read_u16(b: &[u8], at: usize, be: bool) -> Option<u16> {
    let b: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if be { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
}

fn read_u32(b: &[u8], at: usize, be: bool) -> Option<u32> {
    let b: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if be { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
}

fn read_u64(b: &[u8], at: usize, be: bool) -> Option<u64> {
    let b: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(if be { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
}

impl<'a> Frames<'a> {
    fn truncated(&self, what: &'static str, need: usize) -> CaptureError {
        CaptureError::Truncated {
            path: self.path.to_path_buf(),
            what,
            offset: self.offset as u64,
            need: need as u64,
            remain: (self.data.len() - self.offset) as u64,
        }
    }

    fn bad_block(&self, offset: usize, defect: BlockDefect) -> CaptureError {
        CaptureError::BadBlock { path: self.path.to_path_buf(), offset: offset as u64, defect }
    }

    /// Reads the pcap record at `offset` when the file holds all of it; `None` at the end of the file or
    /// before a truncated record, which [`Frames::next_pcap`] then reports.
    #[inline]
    fn pcap_record(&mut self, link: LinkType, nanos: bool, be: bool) -> Option<CaptureFrame<'a>> {
        let rest = self.data.get(self.offset..)?;
        prefetch(rest.as_ptr().wrapping_add(PREFETCH_AHEAD));
        let (hdr, body) = rest.split_first_chunk::<PCAP_RECORD_LEN>()?;
        // The four fields read as little-endian, then swapped together for a big-endian file: one
        // branch per record rather than one per field.
        let word = |at: usize| u32::from_le_bytes([hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]]);
        let mut f = [word(0), word(4), word(8), word(12)];
        if be {
            f = f.map(u32::swap_bytes);
        }
        let [ts_sec, ts_frac, caplen, wire_len] = f;
        let caplen = caplen as usize;
        let data = body.get(..caplen)?;
        self.offset += PCAP_RECORD_LEN + caplen;
        let frac_ns = if nanos { u64::from(ts_frac) } else { u64::from(ts_frac) * 1000 };
        let ts_nanos = u64::from(ts_sec) * 1_000_000_000 + frac_ns;
        Some(CaptureFrame { data, wire_len, ts_nanos, link, interface: 0 })
    }

    fn next_pcap(
        &mut self,
        link: LinkType,
        nanos: bool,
        be: bool,
    ) -> Option<Result<CaptureFrame<'a>, CaptureError>> {
        let rest = self.data.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let (Some(ts_sec), Some(ts_frac), Some(caplen), Some(wire_len)) =
            (read_u32(rest, 0, be), read_u32(rest, 4, be), read_u32(rest, 8, be), read_u32(rest, 12, be))
        else {
            return Some(Err(self.truncated("record", PCAP_RECORD_LEN)));
        };
        let need = PCAP_RECORD_LEN.saturating_add(caplen as usize);
        let Some(data) = rest.get(PCAP_RECORD_LEN..need) else {
            return Some(Err(self.truncated("record", need)));
        };
        self.offset += need;
        let frac_ns = if nanos { u64::from(ts_frac) } else { u64::from(ts_frac) * 1000 };
        let ts_nanos = u64::from(ts_sec) * 1_000_000_000 + frac_ns;
        Some(Ok(CaptureFrame { data, wire_len, ts_nanos, link, interface: 0 }))
    }

    fn next_pcapng(&mut self) -> Option<Result<CaptureFrame<'a>, CaptureError>> {
        loop {
            match self.next_pcapng_block() {
                Ok(Block::Packet(frame)) => return Some(Ok(frame)),
                Ok(Block::Other) => continue,
                Ok(Block::EndOfFile) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Reads one pcapng block.
    fn next_pcapng_block(&mut self) -> Result<Block<'a>, CaptureError> {
        let start = self.offset;
        let rest = self.data.get(start..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(Block::EndOfFile);
        }
        if rest.len() < 12 {
            return Err(self.truncated("block", 12));
        }
        let is_shb = rest.get(..4) == Some(&magic::PCAPNG_SHB[..]);
        let be = if is_shb {
            match rest.get(8..12) {
                Some(m) if m == magic::PCAPNG_BOM_BE => true,
                Some(m) if m == magic::PCAPNG_BOM_LE => false,
                _ => {
                    let m = read_u32(rest, 8, true).unwrap_or_default();
                    return Err(self.bad_block(start, BlockDefect::ByteOrderMagic(m)));
                }
            }
        } else {
            match &self.state {
                State::Pcapng { section: Some(s) } => s.be,
                // `Capture::new` saw an SHB magic at byte 0, so a section is always open here.
                _ => false,
            }
        };
        let btype = read_u32(rest, 0, be).unwrap_or_default();
        let total = read_u32(rest, 4, be).unwrap_or_default();
        if total < 12 || total & 3 != 0 {
            return Err(self.bad_block(start, BlockDefect::Length(total)));
        }
        let Some(blk) = rest.get(..total as usize) else {
            return Err(self.truncated("block", total as usize));
        };
        let tail = read_u32(blk, blk.len() - 4, be).unwrap_or_default();
        if tail != total {
            return Err(self.bad_block(start, BlockDefect::TrailerMismatch { head: total, tail }));
        }
        let body = blk.get(8..blk.len() - 4).unwrap_or_default();
        self.offset += blk.len();
        let too_short = |need: usize| {
            (body.len() < need).then_some(BlockDefect::BodyTooShort { block_type: btype, len: body.len() })
        };
        match btype {
            block::SHB => {
                if let Some(d) = too_short(16) {
                    return Err(self.bad_block(start, d));
                }
                let major = read_u16(body, 4, be).unwrap_or_default();
                let minor = read_u16(body, 6, be).unwrap_or_default();
                if major != 1 {
                    return Err(self.bad_block(start, BlockDefect::Version(major, minor)));
                }
                self.state = State::Pcapng { section: Some(Section { be, interfaces: Vec::new() }) };
                Ok(Block::Other)
            }
            block::IDB => {
                if let Some(d) = too_short(8) {
                    return Err(self.bad_block(start, d));
                }
                let dlt = u32::from(read_u16(body, 0, be).unwrap_or_default());
                let link = LinkType::from_dlt(dlt);
                if !link.is_supported() {
                    return Err(CaptureError::UnsupportedLinkType {
                        path: self.path.to_path_buf(),
                        link: dlt,
                        offset: start as u64,
                    });
                }
                let snaplen = read_u32(body, 4, be).unwrap_or_default();
                let mut iface = Interface { link, units_per_sec: 1_000_000, offset_secs: 0, snaplen };
                read_idb_options(body.get(8..).unwrap_or_default(), be, &mut iface)
                    .map_err(|d| self.bad_block(start, d))?;
                if let State::Pcapng { section: Some(s) } = &mut self.state {
                    s.interfaces.push(iface);
                }
                Ok(Block::Other)
            }
            block::EPB | block::OPB => {
                if let Some(d) = too_short(20) {
                    return Err(self.bad_block(start, d));
                }
                // EPB: interface id (32 bits); obsolete packet block: interface id, drops (16 bits each).
                let id = if btype == block::EPB {
                    read_u32(body, 0, be).unwrap_or_default()
                } else {
                    u32::from(read_u16(body, 0, be).unwrap_or_default())
                };
                let ts_hi = read_u32(body, 4, be).unwrap_or_default();
                let ts_lo = read_u32(body, 8, be).unwrap_or_default();
                let caplen = read_u32(body, 12, be).unwrap_or_default();
                let wire_len = read_u32(body, 16, be).unwrap_or_default();
                let Some(data) = body.get(20..).and_then(|d| d.get(..caplen as usize)) else {
                    let room = body.len() - 20;
                    return Err(self.bad_block(start, BlockDefect::CaptureLenPastBlock { caplen, room }));
                };
                let iface = self.interface(start, id)?;
                let ts = (u64::from(ts_hi) << 32) | u64::from(ts_lo);
                let frame = CaptureFrame {
                    data,
                    wire_len,
                    ts_nanos: iface.ts_nanos(ts),
                    link: iface.link,
                    interface: id,
                };
                Ok(Block::Packet(frame))
            }
            block::SPB => {
                if let Some(d) = too_short(4) {
                    return Err(self.bad_block(start, d));
                }
                // A simple packet block's captured length is implied: the original length, cut to the
                // interface's snaplen; the block pads the data to 32 bits.
                let wire_len = read_u32(body, 0, be).unwrap_or_default();
                let iface = self.interface(start, 0)?;
                let caplen = match iface.snaplen {
                    0 => wire_len,
                    snap => wire_len.min(snap),
                };
                let Some(data) = body.get(4..).and_then(|d| d.get(..caplen as usize)) else {
                    let room = body.len() - 4;
                    return Err(self.bad_block(start, BlockDefect::CaptureLenPastBlock { caplen, room }));
                };
                Ok(Block::Packet(CaptureFrame {
                    data,
                    wire_len,
                    ts_nanos: 0,
                    link: iface.link,
                    interface: 0,
                }))
            }
            _ => Ok(Block::Other),
        }
    }

    fn interface(&self, start: usize, id: u32) -> Result<Interface, CaptureError> {
        let found = match &self.state {
            State::Pcapng { section: Some(s) } => s.interfaces.get(id as usize).copied(),
            _ => None,
        };
        found.ok_or_else(|| self.bad_block(start, BlockDefect::UnknownInterface(id)))
    }
}

/// Reads the IDB options dfw uses: `if_tsresol` (9) and `if_tsoffset` (14).
fn read_idb_options(mut opts: &[u8], be: bool, iface: &mut Interface) -> Result<(), BlockDefect> {
    const OPT_END: u16 = 0;
    const IF_TSRESOL: u16 = 9;
    const IF_TSOFFSET: u16 = 14;
    while opts.len() >= 4 {
        let code = read_u16(opts, 0, be).unwrap_or_default();
        let len = usize::from(read_u16(opts, 2, be).unwrap_or_default());
        if code == OPT_END {
            break;
        }
        let padded = (len + 3) & !3;
        let Some(value) = opts.get(4..4 + len) else {
            return Err(BlockDefect::OptionPastBlock { code });
        };
        match (code, value) {
            (IF_TSRESOL, &[v]) => {
                // High bit set: a power of two; clear: a power of ten.
                let units = if v & 0x80 != 0 {
                    2u64.checked_pow(u32::from(v & 0x7f))
                } else {
                    10u64.checked_pow(u32::from(v))
                };
                iface.units_per_sec = units.ok_or(BlockDefect::TimestampResolution(v))?;
            }
            (IF_TSOFFSET, v) if v.len() == 8 => {
                iface.offset_secs = read_u64(v, 0, be).unwrap_or_default() as i64;
            }
            _ => {}
        }
        opts = opts.get(4 + padded..).unwrap_or_default();
    }
    Ok(())
}

/// Timestamp resolution of a pcap file written by [`PcapWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsResolution {
    /// Microseconds (magic a1b2c3d4), what every reader understands.
    Micros,
    /// Nanoseconds (magic a1b23c4d).
    Nanos,
}

/// Writes a little-endian pcap file.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    w: W,
    snaplen: u32,
    resolution: TsResolution,
}

impl<W: Write> PcapWriter<W> {
    /// Writes a microsecond pcap header for `link`. Frames longer than `snaplen` are cut to it.
    pub fn new(w: W, link: LinkType, snaplen: u32) -> io::Result<Self> {
        Self::with_resolution(w, link, snaplen, TsResolution::Micros)
    }

    /// Writes a pcap header with the given timestamp resolution.
    pub fn with_resolution(
        mut w: W,
        link: LinkType,
        snaplen: u32,
        resolution: TsResolution,
    ) -> io::Result<Self> {
        if snaplen == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "pcap snaplen must be at least 1"));
        }
        let magic: u32 = match resolution {
            TsResolution::Micros => 0xa1b2_c3d4,
            TsResolution::Nanos => 0xa1b2_3c4d,
        };
        let mut hdr = [0u8; PCAP_HEADER_LEN];
        hdr[0..4].copy_from_slice(&magic.to_le_bytes());
        hdr[4..6].copy_from_slice(&2u16.to_le_bytes());
        hdr[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        hdr[16..20].copy_from_slice(&snaplen.to_le_bytes());
        hdr[20..24].copy_from_slice(&link.dlt().to_le_bytes());
        w.write_all(&hdr)?;
        Ok(PcapWriter { w, snaplen, resolution })
    }

    /// Writes one frame. `wire_len` below `data.len()` is raised to it.
    pub fn write_frame(&mut self, ts_nanos: u64, data: &[u8], wire_len: u32) -> io::Result<()> {
        let secs = u32::try_from(ts_nanos / 1_000_000_000).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "timestamp past 2106 does not fit a pcap record")
        })?;
        let sub_ns = (ts_nanos % 1_000_000_000) as u32;
        let frac = match self.resolution {
            TsResolution::Micros => sub_ns / 1000,
            TsResolution::Nanos => sub_ns,
        };
        let data_len = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))?;
        let caplen = data_len.min(self.snaplen);
        let mut rec = [0u8; PCAP_RECORD_LEN];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&frac.to_le_bytes());
        rec[8..12].copy_from_slice(&caplen.to_le_bytes());
        rec[12..16].copy_from_slice(&wire_len.max(data_len).to_le_bytes());
        self.w.write_all(&rec)?;
        self.w.write_all(&data[..caplen as usize])
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    /// Returns the underlying writer (not flushed: call [`PcapWriter::flush`] first if it buffers).
    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests;
