//! The rule model: what a vsipioctl rule set and address set *say*, independent of any text.

use std::fmt;
use std::net::IpAddr;

/// Which way a rule applies, seen from the VM behind the filter: `in` to the VM, `out` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleDir {
    /// Frames going in to the VM.
    In,
    /// Frames coming out of the VM.
    Out,
    /// Both directions.
    InOut,
}

impl RuleDir {
    /// True when a rule with this direction applies to a frame travelling `dir`.
    pub fn covers(self, dir: Direction) -> bool {
        matches!(
            (self, dir),
            (RuleDir::InOut, _) | (RuleDir::In, Direction::In) | (RuleDir::Out, Direction::Out)
        )
    }
}

/// The direction of one frame through one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// In to the VM.
    In,
    /// Out of the VM.
    Out,
}

impl Direction {
    /// `"in"` or `"out"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Address family restriction of an L3 rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// No restriction (the keyword is absent).
    Any,
    /// `inet`: IPv4 only.
    Inet,
    /// `inet6`: IPv6 only.
    Inet6,
}

/// An IP protocol selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `protocol any`.
    Any,
    /// A protocol number (printed by name when it has one).
    Number(u8),
}

/// Protocol names dfw reads and prints, with their numbers.
pub const PROTOCOL_NAMES: &[(&str, u8)] =
    &[("icmp", 1), ("igmp", 2), ("tcp", 6), ("udp", 17), ("gre", 47), ("ipv6-icmp", 58), ("sctp", 132)];

impl Protocol {
    /// The protocol's name, if it has one dfw knows.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Protocol::Any => Some("any"),
            Protocol::Number(n) => PROTOCOL_NAMES.iter().find(|(_, v)| *v == n).map(|(s, _)| *s),
        }
    }

    /// True for protocols whose headers carry ports (TCP, UDP, SCTP).
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Number(6 | 17 | 132))
    }

    /// True when a rule for this protocol may name ports: TCP, UDP, SCTP, or `any` (which then matches
    /// only packets that carry ports).
    pub fn may_have_ports(self) -> bool {
        self == Protocol::Any || self.has_ports()
    }

    /// True for ICMP and ICMPv6.
    pub fn is_icmp(self) -> bool {
        matches!(self, Protocol::Number(1 | 58))
    }
}

/// An IPv4 or IPv6 prefix (`addr/len`); a plain address is a prefix of full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The address as written (host bits may be set; see [`IpNet::has_host_bits`]).
    pub addr: IpAddr,
    /// Prefix length (0..=32 or 0..=128).
    pub len: u8,
}

impl IpNet {
    /// A prefix; `None` when `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<IpNet> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(IpNet { addr, len })
    }

    /// A single address as a full-length prefix.
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet { addr, len: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// True when the prefix is a single address.
    pub fn is_host(&self) -> bool {
        self.len == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// True when bits beyond the prefix length are set (e.g. `10.0.0.1/24`).
    pub fn has_host_bits(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => u32::from(a) & !mask32(self.len) != 0,
            IpAddr::V6(a) => u128::from(a) & !mask128(self.len) != 0,
        }
    }

    /// The prefix with host bits cleared (`10.0.0.1/24` → `10.0.0.0/24`).
    pub fn network(&self) -> IpNet {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(self.len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(self.len)).into()),
        };
        IpNet { addr, len: self.len }
    }

    /// Whether `ip` lies inside the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) ^ u32::from(a)) & mask32(self.len) == 0,
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n) ^ u128::from(a)) & mask128(self.len) == 0,
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

/// A MAC address in an L2 address set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl std::str::FromStr for Mac {
    type Err = crate::diag::Diagnostic;

    /// `aa:bb:cc:dd:ee:ff` (or with `-`), as in address sets.
    fn from_str(s: &str) -> Result<Mac, Self::Err> {
        crate::text::parse_mac(s, crate::diag::Span::default())
    }
}

/// The source or destination of an L3 rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `any`.
    Any,
    /// `[not] addrset <id>`.
    AddrSet {
        /// The set's id.
        id: String,
        /// `not addrset`.
        negated: bool,
    },
    /// `[not] ip <addr[/len]>`.
    Ip {
        /// The prefix.
        net: IpNet,
        /// `not ip`.
        negated: bool,
    },
}

/// A port selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ports {
    /// No `port` clause.
    Any,
    /// `port <lo>-<hi>` (a single port is `lo == hi`).
    Range(u16, u16),
    /// `port {a,b,...}`: each element a port or a range.
    Set(Vec<(u16, u16)>),
}

impl Ports {
    /// Whether `port` is selected.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Range(lo, hi) => (*lo..=*hi).contains(&port),
            Ports::Set(items) => items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port)),
        }
    }
}

/// An ICMP selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IcmpMatch {
    /// No ICMP clause.
    Any,
    /// `icmptype <t>`.
    Type(u8),
    /// `typecode <t>:<c>`.
    TypeCode(u8, u8),
}

/// What a rule does with the frames it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Pass (and, unless `stateless`, create a connection entry).
    Accept,
    /// Drop silently.
    Drop,
    /// Drop and answer with a TCP RST or ICMP unreachable.
    Reject,
    /// Hand to a service (punt queue).
    Punt,
}

impl Action {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Drop => "drop",
            Action::Reject => "reject",
            Action::Punt => "punt",
        }
    }
}

/// The match part of an L3/L4 rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IpMatch {
    /// `inet` / `inet6` / absent.
    pub family: Family,
    /// The protocol.
    pub proto: Protocol,
    /// `strict`: a TCP connection may only start with a SYN.
    pub strict: bool,
    /// Source.
    pub src: Endpoint,
    /// Source ports.
    pub sport: Ports,
    /// Destination.
    pub dst: Endpoint,
    /// Destination ports.
    pub dport: Ports,
    /// ICMP type/code.
    pub icmp: IcmpMatch,
}

/// The source or destination of an L2 rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MacEndpoint {
    /// `any`.
    Any,
    /// `[not] addrset <id>` of `mac` entries.
    AddrSet {
        /// The set's id.
        id: String,
        /// `not addrset`.
        negated: bool,
    },
}

/// The match part of an L2 (ethertype) rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EtherMatch {
    /// `ethertype any` is `None`.
    pub ethertype: Option<u16>,
    /// Source MACs.
    pub src: MacEndpoint,
    /// Destination MACs.
    pub dst: MacEndpoint,
}

/// What a rule matches on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleBody {
    /// `protocol ...` rules (L3/L4).
    Ip(IpMatch),
    /// `ethertype ...` rules (L2).
    Ether(EtherMatch),
}

/// One rule of a rule set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Rule id, stable across position changes.
    pub id: u32,
    /// Position (`at N`): evaluation order, first match wins.
    pub position: u32,
    /// Direction.
    pub dir: RuleDir,
    /// Match.
    pub body: RuleBody,
    /// `stateless`: evaluated per packet, creates no connection state.
    pub stateless: bool,
    /// Action.
    pub action: Action,
    /// `with log`.
    pub log: bool,
    /// `tag '...'`.
    pub tag: Option<String>,
    /// Printed with the `# internal #` prefix (rules the system adds).
    pub internal: bool,
    /// Comment lines written just before the rule (text after `#`), kept so `dfw fmt` loses nothing.
    pub comments: Vec<String>,
}

impl Rule {
    /// An L3 rule with no flags, log, tag or comments.
    pub fn ip(id: u32, position: u32, dir: RuleDir, m: IpMatch, action: Action) -> Rule {
        Rule {
            id,
            position,
            dir,
            body: RuleBody::Ip(m),
            stateless: false,
            action,
            log: false,
            tag: None,
            internal: false,
            comments: Vec::new(),
        }
    }
}

impl IpMatch {
    /// Matches everything: `protocol any from any to any`.
    pub fn any() -> IpMatch {
        IpMatch {
            family: Family::Any,
            proto: Protocol::Any,
            strict: false,
            src: Endpoint::Any,
            sport: Ports::Any,
            dst: Endpoint::Any,
            dport: Ports::Any,
            icmp: IcmpMatch::Any,
        }
    }
}

/// A named, ordered rule set (`ruleset mainrs {...}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleSet {
    /// Name, e.g. `mainrs` or `mainrs_L2`.
    pub name: String,
    /// `# generation number: N`.
    pub generation: Option<u64>,
    /// `# realization time : ...` as written.
    pub realized: Option<String>,
    /// Rules in text order; evaluation orders them by `position`.
    pub rules: Vec<Rule>,
    /// Comment lines before the `ruleset` keyword.
    pub comments: Vec<String>,
    /// Comment lines after the last rule, before `}`.
    pub trailing: Vec<String>,
}

impl RuleSet {
    /// An empty rule set without metadata or comments.
    pub fn new(name: impl Into<String>) -> RuleSet {
        RuleSet {
            name: name.into(),
            generation: None,
            realized: None,
            rules: Vec::new(),
            comments: Vec::new(),
            trailing: Vec::new(),
        }
    }

    /// True for the L2 rule set of a filter (its name ends in `_L2`).
    pub fn is_l2(&self) -> bool {
        self.name.ends_with("_L2")
    }
}

/// One entry of an address set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrEntry {
    /// `ip <addr[/len]>`.
    Ip(IpNet),
    /// `mac <aa:bb:cc:dd:ee:ff>`.
    Mac(Mac),
}

/// An address set (`addrset <id> {...}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddrSet {
    /// Set id (NSX uses UUIDs).
    pub id: String,
    /// `# generation number: N`.
    pub generation: Option<u64>,
    /// `# realization time : ...` as written.
    pub realized: Option<String>,
    /// Entries in text order.
    pub entries: Vec<AddrEntry>,
    /// Comment lines before the `addrset` keyword.
    pub comments: Vec<String>,
    /// Comment lines inside the block: `(i, text)` stands before entry `i` (`i == entries.len()`: before `}`).
    pub entry_comments: Vec<(usize, String)>,
}

impl AddrSet {
    /// An address set with `entries` and no metadata or comments.
    pub fn new(id: impl Into<String>, entries: Vec<AddrEntry>) -> AddrSet {
        AddrSet {
            id: id.into(),
            generation: None,
            realized: None,
            entries,
            comments: Vec::new(),
            entry_comments: Vec::new(),
        }
    }

    /// Whether `ip` is a member (exact address or inside a prefix).
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| matches!(e, AddrEntry::Ip(n) if n.contains(ip)))
    }

    /// Whether `mac` is a member.
    pub fn contains_mac(&self, mac: Mac) -> bool {
        self.entries.iter().any(|e| matches!(e, AddrEntry::Mac(m) if *m == mac))
    }
}
