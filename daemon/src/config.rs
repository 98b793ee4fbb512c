//! The daemon's configuration file (TOML): which policy to enforce, where the control socket and the
//! metrics listener are, and the ports frames come in and go out of.
//!
//! ```toml
//! policy = "lab.dfw"                  # relative to this file
//! control = "/run/dfw/control.sock"   # Unix socket, mode 0600
//! metrics = "127.0.0.1:9469"          # optional Prometheus listener (loopback unless you say otherwise)
//! packet_log = "/var/log/dfwpktlogs.log"  # optional: dfwpktlogs lines for rules `with log`
//!
//! [[port]]
//! name = "busybox"
//! tap = "dfw-bb0"                     # a tap dfw creates: the backend of a VM's vNIC
//! netns = "lab-busybox"               # optional: move the tap into this namespace (the "VM")
//! mac = "00:50:56:00:00:02"           # optional: set on the tap (the vNIC MAC of the policy)
//! addresses = ["172.15.0.2/24"]       # optional: added to the tap
//!
//! [[port]]
//! name = "uplink"
//! afpacket = "veth-up"                # an existing interface, read and written with AF_PACKET
//! ```
//!
//! Every error names the file, the line and column, and the key: `dfw.toml:7:1: port[1] 'web': ...`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {key}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// The key at fault (`port[1].tap`, `policy`, or `toml` for syntax errors).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Policy file (resolved against the config file's folder).
    pub policy: PathBuf,
    /// Control socket path.
    pub control: PathBuf,
    /// Metrics listener address, if any.
    pub metrics: Option<String>,
    /// Packet-log file, if any.
    pub packet_log: Option<PathBuf>,
    /// Ports in file order.
    pub ports: Vec<PortConfig>,
}

/// Where a port's frames come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// A tap dfw creates (or attaches to) with this name.
    Tap,
    /// An existing interface read with an AF_PACKET ring.
    AfPacket,
}

impl PortKind {
    /// `tap` / `afpacket`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PortKind::Tap => "tap",
            PortKind::AfPacket => "afpacket",
        }
    }
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Name used in views and metrics.
    pub name: String,
    /// Tap or AF_PACKET.
    pub kind: PortKind,
    /// Interface name.
    pub iface: String,
    /// Namespace the tap is moved to / the interface lives in.
    pub netns: Option<String>,
    /// MAC to set on the interface.
    pub mac: Option<[u8; 6]>,
    /// Addresses (with prefix length) to add to the interface.
    pub addresses: Vec<String>,
    /// Taps: carry virtio-net headers, so GSO super-frames and partial checksums pass whole.
    pub vnet_hdr: bool,
    /// MTU to set on the interface.
    pub mtu: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    policy: toml::Spanned<String>,
    #[serde(default)]
    control: Option<String>,
    #[serde(default)]
    metrics: Option<String>,
    #[serde(default)]
    packet_log: Option<String>,
    #[serde(default, rename = "port")]
    ports: Vec<toml::Spanned<RawPort>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    #[serde(default)]
    tap: Option<String>,
    #[serde(default)]
    afpacket: Option<String>,
    #[serde(default)]
    netns: Option<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default = "yes")]
    vnet_hdr: bool,
    #[serde(default)]
    mtu: Option<u32>,
}

fn yes() -> bool {
    true
}

/// The control socket when the file names none.
pub const DEFAULT_CONTROL: &str = "/run/dfw/control.sock";

/// 1-based line and column of byte `offset` in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = src.get(..offset.min(src.len())).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty() && s.len() <= 15 && !s.contains(['/', ' ', '\0', ':'])
}

impl DaemonConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            col: 0,
            key: "file".into(),
            message: format!("cannot read: {e}"),
        })?;
        let mut cfg = DaemonConfig::parse(&text, &path.display().to_string())?;
        if cfg.policy.is_relative() {
            if let Some(dir) = path.parent() {
                cfg.policy = dir.join(&cfg.policy);
            }
        }
        if let Some(log) = &cfg.packet_log {
            if log.is_relative() {
                if let Some(dir) = path.parent() {
                    cfg.packet_log = Some(dir.join(log));
                }
            }
        }
        Ok(cfg)
    }

    /// Parses configuration text; `file` names it in errors. Relative paths are left as written.
    pub fn parse(text: &str, file: &str) -> Result<DaemonConfig, ConfigError> {
        let err = |offset: usize, key: &str, message: String| {
            let (line, col) = line_col(text, offset);
            ConfigError { file: file.to_string(), line, col, key: key.to_string(), message }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            err(offset, "toml", e.message().trim().to_string())
        })?;
        if raw.policy.get_ref().is_empty() {
            return Err(err(raw.policy.span().start, "policy", "must name a policy file".into()));
        }
        let mut ports = Vec::with_capacity(raw.ports.len());
        for (i, sp) in raw.ports.iter().enumerate() {
            let at = sp.span().start;
            let p = sp.get_ref();
            let key = |k: &str| format!("port[{i}] '{}'.{k}", p.name);
            if p.name.is_empty() {
                return Err(err(at, &format!("port[{i}].name"), "must not be empty".into()));
            }
            if ports.iter().any(|q: &PortConfig| q.name == p.name) {
                return Err(err(at, &key("name"), "another port has this name".into()));
            }
            let (kind, iface) =
                match (&p.tap, &p.afpacket) {
                    (Some(t), None) => (PortKind::Tap, t.clone()),
                    (None, Some(a)) => (PortKind::AfPacket, a.clone()),
                    _ => return Err(err(
                        at,
                        &format!("port[{i}] '{}'", p.name),
                        "set exactly one of 'tap' (a tap dfw creates) or 'afpacket' (an existing interface)"
                            .into(),
                    )),
                };
            let ikey = key(kind.as_str());
            if !valid_ifname(&iface) {
                return Err(err(
                    at,
                    &ikey,
                    format!("'{iface}' is not an interface name (1 to 15 bytes, no '/', ':' or space)"),
                ));
            }
            if ports.iter().any(|q: &PortConfig| q.iface == iface && q.netns == p.netns) {
                return Err(err(at, &ikey, format!("interface '{iface}' is used by another port")));
            }
            let mac = match &p.mac {
                None => None,
                Some(m) => match m.parse::<rules::Mac>() {
                    Ok(mac) => Some(mac.0),
                    Err(_) => {
                        return Err(err(at, &key("mac"), format!("'{m}' is not a MAC (aa:bb:cc:dd:ee:ff)")))
                    }
                },
            };
            for a in &p.addresses {
                let ok = a
                    .split_once('/')
                    .is_some_and(|(ip, len)| ip.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok());
                if !ok {
                    return Err(err(at, &key("addresses"), format!("'{a}' is not ADDRESS/PREFIXLEN")));
                }
            }
            if let Some(ns) = &p.netns {
                if ns.is_empty() || ns.contains('/') {
                    return Err(err(at, &key("netns"), format!("'{ns}' is not a namespace name")));
                }
            }
            ports.push(PortConfig {
                name: p.name.clone(),
                kind,
                iface,
                netns: p.netns.clone(),
                mac,
                addresses: p.addresses.clone(),
                vnet_hdr: p.vnet_hdr,
                mtu: p.mtu,
            });
        }
        if ports.is_empty() {
            return Err(err(text.len(), "port", "no [[port]] defined: dfw needs at least one".into()));
        }
        Ok(DaemonConfig {
            policy: PathBuf::from(raw.policy.get_ref()),
            control: PathBuf::from(raw.control.unwrap_or_else(|| DEFAULT_CONTROL.to_string())),
            metrics: raw.metrics,
            packet_log: raw.packet_log.map(PathBuf::from),
            ports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
policy = "lab.dfw"
control = "/tmp/x.sock"

[[port]]
name = "busybox"
tap = "dfw-bb0"
netns = "lab-bb"
mac = "00:50:56:00:00:02"
addresses = ["172.15.0.2/24"]

[[port]]
name = "uplink"
afpacket = "veth0"
"#;

    #[test]
    fn a_good_file_reads_every_field() {
        let c = DaemonConfig::parse(GOOD, "d.toml").unwrap();
        assert_eq!(c.policy, PathBuf::from("lab.dfw"));
        assert_eq!(c.control, PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].kind, PortKind::Tap);
        assert_eq!(c.ports[0].mac, Some([0, 0x50, 0x56, 0, 0, 2]));
        assert!(c.ports[0].vnet_hdr);
        assert_eq!(c.ports[1].kind, PortKind::AfPacket);
        assert_eq!(c.ports[1].iface, "veth0");
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let bad = GOOD.replace("netns = \"lab-bb\"", "netnz = \"lab-bb\"");
        let e = DaemonConfig::parse(&bad, "d.toml").unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(e.message.contains("netnz"), "{e}");
        assert!(e.to_string().starts_with("d.toml:8:"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key_and_the_port_line() {
        let bad = GOOD.replace("afpacket = \"veth0\"", "afpacket = \"veth0\"\ntap = \"t\"");
        let e = DaemonConfig::parse(&bad, "d.toml").unwrap_err();
        assert_eq!(e.line, 12, "{e}");
        assert!(e.key.contains("uplink"), "{e}");
        let bad = GOOD.replace("00:50:56:00:00:02", "00:50:56:00:00");
        let e = DaemonConfig::parse(&bad, "d.toml").unwrap_err();
        assert_eq!(e.key, "port[0] 'busybox'.mac");
        let bad = GOOD.replace("172.15.0.2/24", "172.15.0.2");
        assert_eq!(DaemonConfig::parse(&bad, "d.toml").unwrap_err().key, "port[0] 'busybox'.addresses");
        let bad = GOOD.replace("dfw-bb0", "a-name-much-too-long");
        assert_eq!(DaemonConfig::parse(&bad, "d.toml").unwrap_err().key, "port[0] 'busybox'.tap");
    }

    #[test]
    fn syntax_errors_and_missing_keys_do_not_panic() {
        for text in
            ["", "policy = ", "[[port]]\nname = 1", "policy = \"p\"", "\u{0}", "policy = \"p\"\n[[port]]\n"]
        {
            assert!(DaemonConfig::parse(text, "d.toml").is_err(), "{text:?}");
        }
    }
}
