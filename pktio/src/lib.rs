//! pktio: dfw's bytes in and out.
//!
//! This crate owns everything between raw bytes and the engine's view of a packet: parsing a frame into
//! a compact [`Packet`] summary ([`parse`]), and reading and writing capture files ([`capture`]: pcap and
//! pcapng through a memory map, pcap writing) and live interfaces ([`afpacket`]: a TPACKET_V3 ring with
//! fanout and a batched transmit path; [`tap`]: tap devices with virtio-net offloads; [`netns`]: network
//! namespaces). [`io`] puts all of them behind one batch interface, [`FrameSource`] and [`FrameSink`], so
//! the engine treats a capture file, an interface and a tap alike. It knows nothing of rules or of the
//! engine.
//!
//! ```
//! use pktio::{parse_frame, Capture, PcapWriter, LinkType, L4};
//!
//! // Write one raw IPv4/UDP frame to an in-memory pcap, read it back, parse it.
//! let frame = [
//!     0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
//!     0, 53, 0x10, 0x92, 0, 8, 0, 0,
//! ];
//! let mut w = PcapWriter::new(Vec::new(), LinkType::Raw, 65535).unwrap();
//! w.write_frame(1_700_000_000_000_000_000, &frame, frame.len() as u32).unwrap();
//! let cap = Capture::from_bytes(w.into_inner(), "mem.pcap").unwrap();
//! let f = cap.frames().next().unwrap().unwrap();
//! let pkt = parse_frame(f.link, f.data, f.wire_len).unwrap();
//! assert_eq!(pkt.ports(), Some((53, 4242)));
//! assert!(matches!(pkt.l4, L4::Udp { .. }));
//! ```

pub mod afpacket;
pub mod build;
pub mod capture;
pub mod io;
pub mod link;
pub mod netns;
pub mod packet;
pub mod parse;
#[cfg(feature = "pnet")]
pub mod pnet;
mod sys;
pub mod tap;

pub use afpacket::{AfPacketRx, AfPacketTx, Fanout, FanoutMode, RingConfig, RingStats, TxConfig};
pub use io::{Batch, CaptureSource, Frame, FrameSink, FrameSource, IoError, PcapSink, VlanTag, VnetHdr};
pub use netns::{NetNs, ScratchNetns};
pub use sys::link_up;
pub use tap::{Offloads, Tap, TapConfig};

pub use capture::{
    BlockDefect, Capture, CaptureError, CaptureFormat, CaptureFrame, Frames, PcapReader, PcapWriter,
    TsResolution,
};
pub use link::LinkType;
pub use packet::{
    ethertype, ipproto, tcpflags, FragInfo, IcmpInfo, IpInfo, MacAddr, Packet, QuotedHeader, TcpInfo,
    TcpOptions, L4,
};
pub use parse::{parse_frame, parse_into, peek_addresses, peek_plain_v4, Layer, ParseError, PlainTcp};
