//! ClassBench filter sets and header traces (Taylor & Turner's format), for tests and benchmarks.
//!
//! A filter file becomes one ordered L3 rule set: line `i` (0-based) is rule id `i` at position `i + 1`,
//! direction `inout`, family `inet`, action `accept`. A /0 prefix, the port range 0-65535 and a protocol
//! mask of 0 mean "any". The trailing flags field is ignored, as the data's manifest says.
//!
//! ```text
//! @67.81.126.218/32 <TAB> 112.154.225.224/32 <TAB> 0 : 65535 <TAB> 37 : 37 <TAB> 0x11/0xFF <TAB> 0x0000/0x0000
//! ```

use std::net::{IpAddr, Ipv4Addr};

use crate::diag::{Diagnostic, Span};
use crate::eval::L3Key;
use crate::model::*;

/// One header of a trace file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHeader {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Protocol.
    pub proto: u8,
}

impl TraceHeader {
    /// The header as a classifier key (direction `in`; ClassBench rules are `inout`).
    pub fn key(&self) -> L3Key {
        L3Key {
            dir: Direction::In,
            src: IpAddr::V4(self.src),
            dst: IpAddr::V4(self.dst),
            proto: self.proto,
            ports: Some((self.sport, self.dport)),
            icmp: None,
        }
    }
}

fn line_span(text: &str, line_no: usize, line: &str) -> Span {
    let start = line.as_ptr() as usize - text.as_ptr() as usize;
    Span { line: line_no as u32 + 1, col: 1, start, end: start + line.len() }
}

/// Reads a ClassBench filter file into a rule set named `name`.
pub fn parse_rules(text: &str, name: &str) -> Result<RuleSet, Diagnostic> {
    let mut set = RuleSet::new(name);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let span = line_span(text, n, line);
        let bad = |what: &str| {
            Diagnostic::new(span, format!("bad ClassBench rule: {what}"))
                .with_hint("expected @SRC/len DST/len SPlo : SPhi DPlo : DPhi 0xPP/0xMM ...")
        };
        let body = line.trim().strip_prefix('@').ok_or_else(|| bad("missing '@'"))?;
        let fields: Vec<&str> = body.split('\t').map(str::trim).filter(|f| !f.is_empty()).collect();
        if fields.len() < 5 {
            return Err(bad("fewer than five fields"));
        }
        let prefix = |f: &str| -> Result<Endpoint, Diagnostic> {
            let (a, l) = f.split_once('/').ok_or_else(|| bad("prefix without /len"))?;
            let addr: Ipv4Addr = a.parse().map_err(|_| bad("bad IPv4 address"))?;
            let len: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(|| bad("bad prefix length"))?;
            Ok(if len == 0 {
                Endpoint::Any
            } else {
                Endpoint::Ip { net: IpNet { addr: IpAddr::V4(addr), len }, negated: false }
            })
        };
        let ports = |f: &str| -> Result<Ports, Diagnostic> {
            let (lo, hi) = f.split_once(':').ok_or_else(|| bad("port range without ':'"))?;
            let lo: u16 = lo.trim().parse().map_err(|_| bad("bad port"))?;
            let hi: u16 = hi.trim().parse().map_err(|_| bad("bad port"))?;
            if lo > hi {
                return Err(bad("port range lo > hi"));
            }
            Ok(if (lo, hi) == (0, 65535) { Ports::Any } else { Ports::Range(lo, hi) })
        };
        let (p, mask) = fields[4].split_once('/').ok_or_else(|| bad("protocol without mask"))?;
        let hex = |s: &str| u8::from_str_radix(s.trim_start_matches("0x").trim_start_matches("0X"), 16);
        let (p, mask) =
            (hex(p).map_err(|_| bad("bad protocol"))?, hex(mask).map_err(|_| bad("bad protocol mask"))?);
        let proto = match mask {
            0 => Protocol::Any,
            0xff => Protocol::Number(p),
            _ => return Err(bad("protocol mask must be 0x00 or 0xFF")),
        };
        let m = IpMatch {
            family: Family::Inet,
            proto,
            strict: false,
            src: prefix(fields[0])?,
            sport: ports(fields[2])?,
            dst: prefix(fields[1])?,
            dport: ports(fields[3])?,
            icmp: IcmpMatch::Any,
        };
        let index = set.rules.len() as u32;
        set.rules.push(Rule::ip(index, index + 1, RuleDir::InOut, m, Action::Accept));
    }
    Ok(set)
}

/// Reads a ClassBench header trace.
pub fn parse_trace(text: &str) -> Result<Vec<TraceHeader>, Diagnostic> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| {
            Diagnostic::new(line_span(text, n, line), format!("bad ClassBench trace line: {what}"))
                .with_hint("expected src_ip dst_ip sport dport proto ... as decimal numbers")
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            return Err(bad("fewer than five fields"));
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad("not a number"));
        let (src, dst, sp, dp, pr) = (num(f[0])?, num(f[1])?, num(f[2])?, num(f[3])?, num(f[4])?);
        out.push(TraceHeader {
            src: Ipv4Addr::from(u32::try_from(src).map_err(|_| bad("address out of range"))?),
            dst: Ipv4Addr::from(u32::try_from(dst).map_err(|_| bad("address out of range"))?),
            sport: u16::try_from(sp).map_err(|_| bad("port out of range"))?,
            dport: u16::try_from(dp).map_err(|_| bad("port out of range"))?,
            proto: u8::try_from(pr).map_err(|_| bad("protocol out of range"))?,
        });
    }
    Ok(out)
}

/// Reads a `*.firstmatch` answer file: one rule index per line, `-1` for no match.
pub fn parse_firstmatch(text: &str) -> Result<Vec<Option<usize>>, Diagnostic> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| match l.trim().parse::<i64>() {
            Ok(-1) => Ok(None),
            Ok(i) if i >= 0 => Ok(Some(i as usize)),
            _ => Err(Diagnostic::new(line_span(text, n, l), format!("bad first-match line '{}'", l.trim()))),
        })
        .collect()
}
