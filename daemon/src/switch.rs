//! The small learning switch between ports: a frame whose destination MAC was seen as a source on a
//! port goes to that port; broadcast, multicast and unknown unicast go to every other port (flooding,
//! as an 802.1D bridge does). Only frames the filters passed teach the table, so a spoofed source
//! that a filter drops cannot steal a vNIC's traffic. The table is bounded and entries age out.

use std::collections::HashMap;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// To this port only.
    Port(usize),
    /// To every port but the one it came in on.
    Flood,
    /// Nowhere: the destination sits behind the port the frame came in on.
    Filter,
}

/// Most MAC addresses remembered.
pub const MAX_MACS: usize = 4096;
/// Seconds a learned address is trusted without being seen again (802.1D's default ageing time).
pub const AGEING_S: u64 = 300;

/// The MAC table.
#[derive(Debug, Default)]
pub struct Switch {
    table: HashMap<[u8; 6], (usize, u64)>,
    /// Addresses not learned because the table was full.
    pub table_full: u64,
}

impl Switch {
    /// Notes that `mac` was seen as a source on `port` at `now_s`.
    pub fn learn(&mut self, mac: [u8; 6], port: usize, now_s: u64) {
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return; // group addresses are never sources
        }
        if let Some(e) = self.table.get_mut(&mac) {
            *e = (port, now_s);
            return;
        }
        if self.table.len() >= MAX_MACS {
            self.table.retain(|_, (_, seen)| now_s.saturating_sub(*seen) < AGEING_S);
            if self.table.len() >= MAX_MACS {
                self.table_full += 1;
                return;
            }
        }
        self.table.insert(mac, (port, now_s));
    }

    /// Where a frame to `dst` that came in on `from` goes.
    pub fn forward(&self, dst: [u8; 6], from: usize, now_s: u64) -> Forward {
        if dst[0] & 1 == 1 {
            return Forward::Flood;
        }
        match self.table.get(&dst) {
            Some(&(port, seen)) if now_s.saturating_sub(seen) < AGEING_S => {
                if port == from {
                    Forward::Filter
                } else {
                    Forward::Port(port)
                }
            }
            _ => Forward::Flood,
        }
    }

    /// Learned addresses and their ports.
    pub fn entries(&self) -> Vec<([u8; 6], usize)> {
        let mut v: Vec<_> = self.table.iter().map(|(m, (p, _))| (*m, *p)).collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn unknown_floods_learned_goes_to_its_port_and_ages_out() {
        let mut s = Switch::default();
        assert_eq!(s.forward(B, 0, 10), Forward::Flood);
        s.learn(B, 1, 10);
        assert_eq!(s.forward(B, 0, 10), Forward::Port(1));
        assert_eq!(s.forward(B, 1, 10), Forward::Filter);
        assert_eq!(s.forward([0xff; 6], 0, 10), Forward::Flood);
        assert_eq!(s.forward(B, 0, 10 + AGEING_S), Forward::Flood);
        s.learn(B, 2, 20);
        assert_eq!(s.forward(B, 0, 20), Forward::Port(2), "a moved address follows");
        s.learn([0xff; 6], 0, 20);
        assert_eq!(s.entries(), vec![(B, 2)]);
        let _ = A;
    }

    #[test]
    fn the_table_is_bounded() {
        let mut s = Switch::default();
        for i in 0..(MAX_MACS as u32 + 10) {
            let b = i.to_be_bytes();
            s.learn([2, 0, b[0], b[1], b[2], b[3]], 0, 1);
        }
        assert_eq!(s.entries().len(), MAX_MACS);
        assert_eq!(s.table_full, 10);
    }
}
