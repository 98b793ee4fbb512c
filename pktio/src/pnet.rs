//! pnet's datalink channel as a [`FrameSource`] and [`FrameSink`]: the simple, portable fallback that
//! the AF_PACKET ring is measured against (`benches/benches/pktio.rs`). On Linux it is an AF_PACKET
//! socket read one frame per `poll` + `recvfrom`, with no ring, no VLAN metadata and no
//! PACKET_IGNORE_OUTGOING. Built with the `pnet` feature.

use std::io;
use std::time::Duration;

use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender};

use crate::io::{Batch, Frame, FrameSink, FrameSource, IoError};
use crate::link::LinkType;
use crate::sys;

/// A pnet datalink channel on one Ethernet interface.
pub struct PnetChannel {
    iface: String,
    tx: Box<dyn DataLinkSender>,
    rx: Box<dyn DataLinkReceiver>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for PnetChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PnetChannel").field("iface", &self.iface).finish_non_exhaustive()
    }
}

impl PnetChannel {
    /// Opens a channel on `iface` (in the calling thread's namespace); `recv_batch` waits up to
    /// `timeout` for a frame.
    pub fn open(iface: &str, timeout: Option<Duration>) -> Result<PnetChannel, IoError> {
        let pnet_err = |source| IoError::Pnet { iface: iface.to_owned(), source };
        let dev = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == iface)
            .ok_or_else(|| IoError::NoSuchInterface { iface: iface.to_owned() })?;
        let cfg = pnet_datalink::Config {
            read_timeout: timeout,
            read_buffer_size: 65_536,
            write_buffer_size: 65_536,
            promiscuous: false,
            ..pnet_datalink::Config::default()
        };
        match pnet_datalink::channel(&dev, cfg).map_err(pnet_err)? {
            Channel::Ethernet(tx, rx) => {
                Ok(PnetChannel { iface: iface.to_owned(), tx, rx, scratch: Vec::new() })
            }
            _ => Err(pnet_err(io::Error::other("not an Ethernet channel"))),
        }
    }
}

impl FrameSource for PnetChannel {
    /// pnet hands out one frame at a time from its own buffer, so a batch holds one frame.
    fn recv_batch<'a>(&'a mut self, batch: &mut Batch<'a>) -> Result<usize, IoError> {
        batch.clear();
        match self.rx.next() {
            Ok(data) => {
                let frame = Frame { ts_nanos: sys::now_nanos(), ..Frame::new(LinkType::Ethernet, data) };
                let _ = batch.push(frame);
                Ok(1)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
            Err(source) => Err(IoError::Pnet { iface: self.iface.clone(), source }),
        }
    }
}

impl FrameSink for PnetChannel {
    fn send_batch(&mut self, frames: &[Frame<'_>]) -> Result<usize, IoError> {
        for (i, f) in frames.iter().enumerate() {
            let mut tag = [0u8; 4];
            let (head, tag, tail) = f.wire_parts(&mut tag);
            let bytes: &[u8] = if tag.is_empty() {
                head
            } else {
                self.scratch.clear();
                self.scratch.extend_from_slice(head);
                self.scratch.extend_from_slice(tag);
                self.scratch.extend_from_slice(tail);
                &self.scratch
            };
            let res = self.tx.send_to(bytes, None).unwrap_or_else(|| Err(io::Error::other("no send result")));
            if let Err(source) = res {
                return if i == 0 { Err(IoError::Pnet { iface: self.iface.clone(), source }) } else { Ok(i) };
            }
        }
        Ok(frames.len())
    }
}
