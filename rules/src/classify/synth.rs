//! Synthetic workloads for tests and benchmarks: ClassBench-style rule sets grown from a real one,
//! NSX-shaped policies over large address sets, and header traces drawn inside rules.
//!
//! Everything is deterministic in its seed (a SplitMix64 generator, no dependency), so a benchmark
//! names its input by parameters instead of shipping files.
//!
//! - [`classbench_like`] grows a ClassBench filter set to any size by resampling its rules: each new
//!   rule copies a random seed rule's prefix lengths, port ranges and protocol, and re-draws the low
//!   address bits under the seed's prefix (up to 8 bits), so the nesting of the seed set is kept.
//! - [`nsx`] makes a policy shaped like a large NSX vNIC filter: thousands of rules, most of them
//!   `from addrset A to addrset B port ...`, some on `any`, `ip` prefixes and `not`, over thousands of
//!   address sets whose sizes follow a power law, each workload address sitting in a few sets, a few
//!   sets holding subnets; a default rule last.
//! - [`classbench_trace`] and [`nsx_keys`] draw headers inside random rules (as ClassBench's
//!   `trace_generator` and the anchors' `gen_trace.py` do), so most headers match something specific.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::classbench::TraceHeader;
use crate::eval::L3Key;
use crate::model::*;

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
        }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.below((hi - lo) as usize + 1) as u32
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// An index drawn from a power law over `0..n`: index `i` has weight `1 / (i + 1)^0.8`.
    pub fn zipf(&mut self, n: usize) -> usize {
        // Inverse transform of the continuous density on [1, n+1).
        let a = 0.2f64;
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let top = ((n + 1) as f64).powf(a);
        let x = (1.0 + u * (top - 1.0)).powf(1.0 / a);
        (x as usize).saturating_sub(1).min(n.saturating_sub(1))
    }

    /// Shuffles `v` in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

fn v4_in(rng: &mut Rng, net: IpNet) -> u32 {
    let IpAddr::V4(a) = net.addr else { return rng.next_u64() as u32 };
    let mask = if net.len == 0 { 0 } else { u32::MAX << (32 - u32::from(net.len.min(32))) };
    (u32::from(a) & mask) | (rng.next_u64() as u32 & !mask)
}

fn addr_in(rng: &mut Rng, net: IpNet) -> IpAddr {
    match net.addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v4_in(rng, net))),
        IpAddr::V6(a) => {
            let mask = if net.len == 0 { 0 } else { u128::MAX << (128 - u32::from(net.len.min(128))) };
            let r = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            IpAddr::V6(Ipv6Addr::from((u128::from(a) & mask) | (r & !mask)))
        }
    }
}

fn port_in(rng: &mut Rng, p: &Ports) -> u16 {
    match p {
        Ports::Any => rng.below(65536) as u16,
        Ports::Range(lo, hi) if lo <= hi => rng.range(u32::from(*lo), u32::from(*hi)) as u16,
        Ports::Set(items) if !items.is_empty() => {
            let (lo, hi) = items[rng.below(items.len())];
            if lo <= hi {
                rng.range(u32::from(lo), u32::from(hi)) as u16
            } else {
                lo
            }
        }
        _ => rng.below(65536) as u16,
    }
}

/// `per` headers inside each L3 rule of a ClassBench-shaped set (IPv4 `ip` prefixes or `any`,
/// port ranges), shuffled: what `gen_trace.py RULES PER SEED` makes.
pub fn classbench_trace(set: &RuleSet, per: usize, seed: u64) -> Vec<TraceHeader> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(set.rules.len() * per);
    for rule in &set.rules {
        let RuleBody::Ip(m) = &rule.body else { continue };
        for _ in 0..per {
            let mut ip = |e: &Endpoint| match e {
                Endpoint::Ip { net, negated: false } => v4_in(&mut rng, *net),
                _ => rng.next_u64() as u32,
            };
            let (src, dst) = (ip(&m.src), ip(&m.dst));
            let (sport, dport) = (port_in(&mut rng, &m.sport), port_in(&mut rng, &m.dport));
            let proto = match m.proto {
                Protocol::Number(p) => p,
                Protocol::Any => [6, 17, 1, 47, 50][rng.below(5)],
            };
            out.push(TraceHeader { src: src.into(), dst: dst.into(), sport, dport, proto });
        }
    }
    rng.shuffle(&mut out);
    out
}

/// A ClassBench-style set of `n` rules grown from `seed_set` (see the module doc; `seed` draws the
/// address bits). Rule `i` has id
/// `i` and position `i + 1`, like [`crate::classbench::parse_rules`] output.
pub fn classbench_like(seed_set: &RuleSet, n: usize, seed: u64) -> RuleSet {
    let mut rng = Rng::new(seed);
    let base: Vec<&IpMatch> = seed_set
        .rules
        .iter()
        .filter_map(|r| if let RuleBody::Ip(m) = &r.body { Some(m) } else { None })
        .collect();
    let mut set = RuleSet::new(seed_set.name.clone());
    if base.is_empty() {
        return set;
    }
    for i in 0..n {
        // Seed rule `i * len / n`: the seed's order (specific rules first, wildcards last) is kept.
        let mut m = base[i * base.len() / n.max(1)].clone();
        for e in [&mut m.src, &mut m.dst] {
            if let Endpoint::Ip { net, .. } = e {
                let keep = net.len.saturating_sub(8);
                let fresh = v4_in(&mut rng, IpNet { addr: net.addr, len: keep });
                let mask = if net.len == 0 { 0 } else { u32::MAX << (32 - u32::from(net.len.min(32))) };
                net.addr = IpAddr::V4(Ipv4Addr::from(fresh & mask));
            }
        }
        set.rules.push(Rule::ip(i as u32, i as u32 + 1, RuleDir::InOut, m, Action::Accept));
    }
    set
}

/// `set` in ClassBench filter format, or the id of the first rule that format cannot express
/// (anything but IPv4 prefixes or `any`, one port range per side, a protocol or `any`).
pub fn write_classbench(set: &RuleSet) -> Result<String, u32> {
    let mut out = String::new();
    for rule in &set.rules {
        let RuleBody::Ip(m) = &rule.body else { return Err(rule.id) };
        let ip = |e: &Endpoint| match e {
            Endpoint::Any => Some((Ipv4Addr::UNSPECIFIED, 0)),
            Endpoint::Ip { net: IpNet { addr: IpAddr::V4(a), len }, negated: false } => Some((*a, *len)),
            _ => None,
        };
        let ports = |p: &Ports| match p {
            Ports::Any => Some((0, 65535)),
            Ports::Range(lo, hi) => Some((*lo, *hi)),
            Ports::Set(_) => None,
        };
        let (Some((sa, sl)), Some((da, dl)), Some((spl, sph)), Some((dpl, dph)), IcmpMatch::Any) =
            (ip(&m.src), ip(&m.dst), ports(&m.sport), ports(&m.dport), m.icmp)
        else {
            return Err(rule.id);
        };
        let (p, mask) = match m.proto {
            Protocol::Any => (0, 0),
            Protocol::Number(p) => (p, 0xff),
        };
        let _ = writeln!(
            out,
            "@{sa}/{sl}\t{da}/{dl}\t{spl} : {sph}\t{dpl} : {dph}\t0x{p:02X}/0x{mask:02X}\t0x0000/0x0000"
        );
    }
    Ok(out)
}

/// `headers` as a ClassBench trace (`src dst sport dport proto 0 0`, decimal).
pub fn write_trace(headers: &[TraceHeader]) -> String {
    let mut out = String::with_capacity(headers.len() * 40);
    for h in headers {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t0\t0",
            u32::from(h.src),
            u32::from(h.dst),
            h.sport,
            h.dport,
            h.proto
        );
    }
    out
}

/// Size of an NSX-shaped policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsxParams {
    /// Rules (the last one is the default `inout protocol any from any to any drop`).
    pub rules: usize,
    /// Address sets.
    pub sets: usize,
    /// Members over all sets (a workload address sits in about three sets).
    pub members: usize,
    /// Generator seed.
    pub seed: u64,
}

impl NsxParams {
    /// The acceptance size: 17,000 rules, 5,000 sets, 250,000 members.
    pub const LARGE: NsxParams = NsxParams { rules: 17_000, sets: 5_000, members: 250_000, seed: 1 };
}

/// An NSX-shaped rule set and the address sets it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsxPolicy {
    /// The L3 rule set (`mainrs`).
    pub ruleset: RuleSet,
    /// Its address sets.
    pub sets: Vec<AddrSet>,
}

impl NsxPolicy {
    /// The policy as vsipioctl text (`ruleset mainrs {...}` then every `addrset`).
    pub fn text(&self) -> String {
        let mut s = self.ruleset.to_string();
        for a in &self.sets {
            s.push_str(&a.to_string());
        }
        s
    }

    /// References to the sets, as [`crate::Classifier::build`] takes them.
    pub fn set_refs(&self) -> Vec<&AddrSet> {
        self.sets.iter().collect()
    }
}

const COMMON_PORTS: &[u16] = &[
    22, 53, 80, 123, 389, 443, 636, 1433, 2379, 3306, 5432, 5671, 6379, 6443, 8080, 8443, 9090, 9200, 10250,
    27017,
];

/// The `i`-th workload address of the pool: IPv4 in 10.0.0.0/8 (bits scattered, so neighbours in the
/// pool are not neighbours on the wire), every 20th one IPv6 in fd00:10::/64.
fn workload(i: usize) -> IpAddr {
    if i % 20 == 19 {
        IpAddr::V6(Ipv6Addr::from(
            0xfd00_0010_0000_0000_0000_0000_0000_0000u128 | (i as u128).wrapping_mul(0x9E37_79B9),
        ))
    } else {
        let x = ((i as u32).wrapping_mul(0x0051_9A5B) & 0x00ff_ffff) | 0x0a00_0000;
        IpAddr::V4(Ipv4Addr::from(x))
    }
}

fn uuid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// An NSX-shaped policy of the given size (see the module doc).
pub fn nsx(p: &NsxParams) -> NsxPolicy {
    let mut rng = Rng::new(p.seed);
    let nsets = p.sets.max(1);
    let pool = (p.members / 3).max(16);
    // Set sizes: weight 1 / (j+1)^0.8, scaled to the member total, at least one each.
    let w: Vec<f64> = (0..nsets).map(|j| 1.0 / ((j + 1) as f64).powf(0.8)).collect();
    let total: f64 = w.iter().sum();
    let mut sizes: Vec<usize> =
        w.iter().map(|wj| ((p.members as f64 * wj / total) as usize).max(1)).collect();
    // Rounding down lost a few: give them to the largest sets, so the total is `members` exactly.
    let short = p.members.saturating_sub(sizes.iter().sum());
    for k in 0..short {
        sizes[k % nsets] += 1;
    }
    let mut sets = Vec::with_capacity(nsets);
    for (j, &size) in sizes.iter().enumerate() {
        let mut entries: Vec<AddrEntry> = Vec::with_capacity(size);
        // One set in fifty is (partly) subnets: segments, office ranges, an IPv6 /64.
        let subnets = if j % 50 == 7 { size.min(1 + rng.below(6)) } else { 0 };
        for _ in 0..subnets {
            // Mostly segments; "all of 10/8" only in a handful of sets.
            let len = if rng.chance(0.01) { 8 } else { [16u8, 20, 24, 24, 26, 28][rng.below(6)] };
            let net = if rng.chance(0.15) {
                let site = IpNet { addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0)), len: 32 };
                IpNet { addr: addr_in(&mut rng, site), len: 64 }.network()
            } else {
                IpNet {
                    addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff))),
                    len,
                }
                .network()
            };
            entries.push(AddrEntry::Ip(net));
        }
        for _ in subnets..size {
            entries.push(AddrEntry::Ip(IpNet::host(workload(rng.below(pool)))));
        }
        sets.push(AddrSet::new(uuid(&mut rng), entries));
    }
    // Popular sets (low index) are both big and often referenced; shuffle which set ids appear where in
    // the text so the file does not list them by size.
    let mut rs = RuleSet::new("mainrs");
    let n = p.rules.max(1);
    let pick_set = |rng: &mut Rng| rng.zipf(nsets);
    for i in 0..n - 1 {
        let dir = match rng.below(100) {
            0..=44 => RuleDir::In,
            45..=59 => RuleDir::Out,
            _ => RuleDir::InOut,
        };
        let proto = match rng.below(100) {
            0..=59 => Protocol::Number(6),
            60..=79 => Protocol::Number(17),
            80..=91 => Protocol::Any,
            92..=96 => Protocol::Number(1),
            97 => Protocol::Number(58),
            _ => Protocol::Number(47),
        };
        let family = match rng.below(100) {
            0..=89 => Family::Any,
            90..=96 => Family::Inet,
            _ => Family::Inet6,
        };
        let v6 = family == Family::Inet6;
        let endpoint = |rng: &mut Rng, set_share: usize| -> Endpoint {
            let r = rng.below(100);
            if r < set_share {
                Endpoint::AddrSet { id: sets[pick_set(rng)].id.clone(), negated: false }
            } else if r < set_share + 4 {
                Endpoint::AddrSet { id: sets[pick_set(rng)].id.clone(), negated: true }
            } else if r < set_share + 15 {
                let (net, negated) = if v6 {
                    let a = workload(rng.below(pool / 20) * 20 + 19);
                    (IpNet { addr: a, len: [64u8, 128][rng.below(2)] }.network(), false)
                } else {
                    let a = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff)));
                    (IpNet { addr: a, len: [16u8, 24, 24, 32][rng.below(4)] }.network(), rng.chance(0.25))
                };
                Endpoint::Ip { net, negated }
            } else {
                Endpoint::Any
            }
        };
        let src = endpoint(&mut rng, 55);
        let dst = endpoint(&mut rng, 70);
        let port_one = |rng: &mut Rng| {
            if rng.chance(0.7) {
                COMMON_PORTS[rng.zipf(COMMON_PORTS.len())]
            } else {
                rng.range(1024, 65535) as u16
            }
        };
        let (sport, dport, icmp) = if proto.may_have_ports() {
            let dport = match rng.below(100) {
                0..=49 => {
                    let p = port_one(&mut rng);
                    Ports::Range(p, p)
                }
                50..=69 => {
                    let mut v: Vec<(u16, u16)> = (0..2 + rng.below(4))
                        .map(|_| {
                            let p = port_one(&mut rng);
                            (p, p)
                        })
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    if v.len() == 1 {
                        Ports::Range(v[0].0, v[0].1)
                    } else {
                        Ports::Set(v)
                    }
                }
                70..=79 => {
                    let lo = rng.range(1024, 60000) as u16;
                    Ports::Range(lo, lo.saturating_add(rng.below(2000) as u16))
                }
                _ => Ports::Any,
            };
            let sport = if rng.chance(0.03) { Ports::Range(1024, 65535) } else { Ports::Any };
            (sport, dport, IcmpMatch::Any)
        } else if proto.is_icmp() {
            let icmp = match rng.below(3) {
                0 => IcmpMatch::Type(8),
                1 => IcmpMatch::TypeCode(3, 4),
                _ => IcmpMatch::Any,
            };
            (Ports::Any, Ports::Any, icmp)
        } else {
            (Ports::Any, Ports::Any, IcmpMatch::Any)
        };
        let m = IpMatch { family, proto, strict: false, src, sport, dst, dport, icmp };
        let action = match rng.below(10) {
            0..=6 => Action::Accept,
            7 | 8 => Action::Drop,
            _ => Action::Reject,
        };
        rs.rules.push(Rule::ip(1000 + i as u32, i as u32 + 1, dir, m, action));
    }
    rs.rules.push(Rule::ip(2, n as u32, RuleDir::InOut, IpMatch::any(), Action::Drop));
    rng.shuffle(&mut sets);
    NsxPolicy { ruleset: rs, sets }
}

/// `n` keys, each drawn inside a random rule of `policy` (direction, family, addresses from the rule's
/// sets or prefixes, ports and ICMP type from its clauses).
pub fn nsx_keys(policy: &NsxPolicy, n: usize, seed: u64) -> Vec<L3Key> {
    let mut rng = Rng::new(seed);
    let by_id: ahash::AHashMap<&str, &AddrSet> = policy.sets.iter().map(|s| (s.id.as_str(), s)).collect();
    let rules: Vec<(&Rule, &IpMatch)> = policy
        .ruleset
        .rules
        .iter()
        .filter_map(|r| if let RuleBody::Ip(m) = &r.body { Some((r, m)) } else { None })
        .collect();
    let mut out = Vec::with_capacity(n);
    if rules.is_empty() {
        return out;
    }
    let pool = policy.sets.iter().map(|s| s.entries.len()).sum::<usize>() / 3;
    while out.len() < n {
        let (rule, m) = rules[rng.below(rules.len())];
        let ip_family = |e: &Endpoint| match e {
            Endpoint::Ip { net, .. } => Some(net.addr.is_ipv6()),
            _ => None,
        };
        let v6 = match (m.family, ip_family(&m.src).or(ip_family(&m.dst))) {
            (Family::Inet6, _) | (_, Some(true)) => true,
            (Family::Inet, _) | (_, Some(false)) => false,
            _ => rng.chance(0.05),
        };
        let any_addr = |rng: &mut Rng| loop {
            let a = workload(rng.below(pool.max(20)));
            if a.is_ipv6() == v6 {
                return a;
            }
        };
        let pick = |rng: &mut Rng, e: &Endpoint| -> IpAddr {
            match e {
                Endpoint::AddrSet { id, negated: false } => {
                    let cands: Vec<IpNet> = by_id
                        .get(id.as_str())
                        .map(|s| {
                            s.entries
                                .iter()
                                .filter_map(|e| match e {
                                    AddrEntry::Ip(n) if n.addr.is_ipv6() == v6 => Some(*n),
                                    _ => None,
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if cands.is_empty() {
                        any_addr(rng)
                    } else {
                        let net = cands[rng.below(cands.len())];
                        addr_in(rng, net)
                    }
                }
                Endpoint::Ip { net, negated: false } => addr_in(rng, *net),
                _ => any_addr(rng),
            }
        };
        let src = pick(&mut rng, &m.src);
        let dst = pick(&mut rng, &m.dst);
        let proto = match m.proto {
            Protocol::Number(p) => p,
            Protocol::Any => [6, 17, 6, 17, 1][rng.below(5)],
        };
        let proto = if v6 && proto == 1 { 58 } else { proto };
        let ports = Protocol::Number(proto)
            .has_ports()
            .then(|| (port_in(&mut rng, &m.sport), port_in(&mut rng, &m.dport)));
        let icmp = Protocol::Number(proto).is_icmp().then_some(match m.icmp {
            IcmpMatch::Type(t) => (t, 0),
            IcmpMatch::TypeCode(t, c) => (t, c),
            IcmpMatch::Any => (8, 0),
        });
        let dir = match rule.dir {
            RuleDir::In => Direction::In,
            RuleDir::Out => Direction::Out,
            RuleDir::InOut if rng.chance(0.5) => Direction::In,
            RuleDir::InOut => Direction::Out,
        };
        out.push(L3Key { dir, src, dst, proto, ports, icmp });
    }
    out
}
