//! Link-layer types: what the first byte of a captured frame is.
//!
//! Capture files name the link type with a `LINKTYPE_*` number (the tcpdump.org registry); libpcap's
//! `DLT_*` numbers agree with them except for raw IP, where `DLT_RAW` is 12 on most systems and 14 on
//! OpenBSD while files carry `LINKTYPE_RAW` = 101. [`LinkType::from_dlt`] accepts all three.

use std::fmt;

/// The link layer a frame starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II / 802.3 (`LINKTYPE_ETHERNET`, 1).
    Ethernet,
    /// Linux "cooked" capture v1 (`LINKTYPE_LINUX_SLL`, 113): 16-byte pseudo header.
    LinuxSll,
    /// Linux "cooked" capture v2 (`LINKTYPE_LINUX_SLL2`, 276): 20-byte pseudo header.
    LinuxSll2,
    /// Raw IP, version taken from the first nibble (`LINKTYPE_RAW`, 101; `DLT_RAW` 12 and 14).
    Raw,
    /// Raw IPv4 only (`LINKTYPE_IPV4`, 228).
    Ipv4,
    /// Raw IPv6 only (`LINKTYPE_IPV6`, 229).
    Ipv6,
    /// Any other link type, kept by number; dfw cannot parse it.
    Other(u32),
}

impl LinkType {
    /// Maps a `LINKTYPE_*`/`DLT_*` number to a link type; unknown numbers become [`LinkType::Other`].
    pub fn from_dlt(dlt: u32) -> LinkType {
        match dlt {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            12 | 14 | 101 => LinkType::Raw,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            n => LinkType::Other(n),
        }
    }

    /// The `LINKTYPE_*` number written to capture files.
    pub fn dlt(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::Raw => 101,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::Other(n) => n,
        }
    }

    /// True when [`crate::parse::parse_frame`] can parse frames of this link type.
    pub fn is_supported(self) -> bool {
        !matches!(self, LinkType::Other(_))
    }
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkType::Ethernet => f.write_str("Ethernet"),
            LinkType::LinuxSll => f.write_str("Linux SLL"),
            LinkType::LinuxSll2 => f.write_str("Linux SLL2"),
            LinkType::Raw => f.write_str("raw IP"),
            LinkType::Ipv4 => f.write_str("raw IPv4"),
            LinkType::Ipv6 => f.write_str("raw IPv6"),
            LinkType::Other(n) => match link_type_name(*n) {
                Some(name) => write!(f, "{n} ({name})"),
                None => write!(f, "{n}"),
            },
        }
    }
}

/// Names of link types users are likely to hand dfw by mistake, for error messages.
pub(crate) fn link_type_name(dlt: u32) -> Option<&'static str> {
    Some(match dlt {
        0 => "BSD loopback",
        6 => "IEEE 802.5 Token Ring",
        9 => "PPP",
        10 => "FDDI",
        50 => "PPP in HDLC framing",
        104 => "Cisco HDLC",
        105 => "IEEE 802.11",
        108 => "OpenBSD loopback",
        117 => "OpenBSD pflog",
        119 => "IEEE 802.11 Prism",
        127 => "IEEE 802.11 radiotap",
        163 => "IEEE 802.11 AVS",
        187 => "Bluetooth HCI H4",
        189 => "Linux USB",
        192 => "PPI",
        195 => "IEEE 802.15.4",
        197 => "Endace ERF",
        201 => "Bluetooth HCI H4 with pseudo-header",
        220 => "Linux USB mmapped",
        239 => "Linux netlink NFLOG",
        253 => "Linux netlink",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlt_round_trip() {
        for lt in [
            LinkType::Ethernet,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::Raw,
            LinkType::Ipv4,
            LinkType::Ipv6,
            LinkType::Other(105),
        ] {
            assert_eq!(LinkType::from_dlt(lt.dlt()), lt);
        }
        assert_eq!(LinkType::from_dlt(12), LinkType::Raw);
        assert_eq!(LinkType::from_dlt(14), LinkType::Raw);
        assert_eq!(LinkType::Other(105).to_string(), "105 (IEEE 802.11)");
        assert_eq!(LinkType::Other(4242).to_string(), "4242");
    }
}
