//! Ports: where the daemon's frames come in and go out. A port is a tap dfw creates (the backend of a
//! VM's vNIC, possibly moved into the VM's namespace) or an existing interface read and written with
//! AF_PACKET (a veth, an uplink).

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use pktio::{
    AfPacketRx, AfPacketTx, Batch, Frame, FrameSink, FrameSource, IoError, NetNs, Offloads, RingConfig, Tap,
    TapConfig, TxConfig,
};
use serde::Serialize;

use crate::config::{PortConfig, PortKind};

/// Frame and byte counts of one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PortStats {
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Received frames that could not be parsed (dropped).
    pub rx_malformed: u64,
    /// Received frames a filter did not pass.
    pub rx_dropped: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames not sent because the device pushed back.
    pub tx_busy: u64,
    /// Frames not sent because of an error.
    pub tx_errors: u64,
}

/// The device behind a port.
#[derive(Debug)]
pub enum PortIo {
    /// A tap.
    Tap(Tap),
    /// An AF_PACKET receive ring and transmit socket.
    AfPacket {
        /// Receive ring.
        rx: AfPacketRx,
        /// Transmit socket.
        tx: AfPacketTx,
    },
}

/// An open port.
#[derive(Debug)]
pub struct Port {
    /// The configuration it was opened from.
    pub config: PortConfig,
    /// The device.
    pub io: PortIo,
    /// Counters.
    pub stats: PortStats,
}

fn ip(netns: Option<&str>, args: &[&str]) -> Result<(), IoError> {
    let mut all: Vec<&str> = Vec::with_capacity(args.len() + 2);
    if let Some(ns) = netns {
        all.extend(["-n", ns]);
    }
    all.extend_from_slice(args);
    pktio::netns::ip(&all)
}

impl Port {
    /// Opens (creating a tap when asked) and configures the port.
    pub fn open(cfg: &PortConfig) -> Result<Port, IoError> {
        let ns = cfg.netns.as_deref().map(NetNs::open).transpose()?;
        let io = match cfg.kind {
            PortKind::Tap => {
                let tc = TapConfig {
                    vnet_hdr: cfg.vnet_hdr,
                    offloads: if cfg.vnet_hdr { Offloads::tcp() } else { Offloads::default() },
                    // The dataplane waits on every port at once with poll(2); reads never wait.
                    poll_timeout: Some(Duration::ZERO),
                    rx_buffer: 1 << 21,
                };
                let tap = Tap::open(&cfg.iface, &tc)?;
                if let Some(ns) = &ns {
                    tap.move_to(ns)?;
                }
                PortIo::Tap(tap)
            }
            PortKind::AfPacket => {
                let rc = RingConfig { poll_timeout: Some(Duration::ZERO), ..RingConfig::default() };
                let tc = TxConfig { qdisc_bypass: false, vnet_hdr: true };
                let open = || -> Result<(AfPacketRx, AfPacketTx), IoError> {
                    Ok((AfPacketRx::open(&cfg.iface, &rc)?, AfPacketTx::open(&cfg.iface, &tc)?))
                };
                let (rx, tx) = match &ns {
                    Some(ns) => ns.run(open)??,
                    None => open()?,
                };
                PortIo::AfPacket { rx, tx }
            }
        };
        let netns = cfg.netns.as_deref();
        if let Some(mac) = cfg.mac {
            let m = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            ip(netns, &["link", "set", "dev", &cfg.iface, "address", &m])?;
        }
        if let Some(mtu) = cfg.mtu {
            ip(netns, &["link", "set", "dev", &cfg.iface, "mtu", &mtu.to_string()])?;
        }
        for a in &cfg.addresses {
            ip(netns, &["addr", "add", a, "dev", &cfg.iface])?;
        }
        ip(netns, &["link", "set", "dev", &cfg.iface, "up"])?;
        Ok(Port { config: cfg.clone(), io, stats: PortStats::default() })
    }

    /// The descriptor that turns readable when frames wait.
    pub fn raw_fd(&self) -> RawFd {
        match &self.io {
            PortIo::Tap(t) => t.as_raw_fd(),
            PortIo::AfPacket { rx, .. } => rx.as_raw_fd(),
        }
    }

    /// Sends one frame, counting the outcome.
    pub fn send(&mut self, f: &Frame<'_>) {
        let frames = std::slice::from_ref(f);
        let r = match &mut self.io {
            PortIo::Tap(t) => t.send_batch(frames),
            PortIo::AfPacket { tx, .. } => tx.send_batch(frames),
        };
        match r {
            Ok(1) => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += f.data.len() as u64;
            }
            Ok(_) => self.stats.tx_busy += 1,
            Err(e) => {
                self.stats.tx_errors += 1;
                tracing::debug!(port = %self.config.name, error = %e, "send failed");
            }
        }
    }
}

/// Receives a batch from `io` (frames borrow the device until the batch is recycled).
pub fn recv<'a>(io: &'a mut PortIo, batch: &mut Batch<'a>) -> Result<usize, IoError> {
    match io {
        PortIo::Tap(t) => t.recv_batch(batch),
        PortIo::AfPacket { rx, .. } => rx.recv_batch(batch),
    }
}
