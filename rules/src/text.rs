//! Reading the vsipioctl-style text of rule sets and address sets.
//!
//! The grammar is the one of `getrules` / `getaddrsets` output (see `docs/rule-format.md`). The parser is a
//! plain recursive descent over [`crate::lex`] tokens; every error names the token it stopped at.

use std::net::IpAddr;

use crate::diag::{did_you_mean, Diagnostic, Span};
use crate::lex::{Tok, Token};
use crate::model::*;

/// A reference from a rule to an address set, kept for validation after the whole file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRef {
    /// The referenced set id.
    pub id: String,
    /// Where the id is written.
    pub span: Span,
    /// True when the reference is from an L2 (ethertype) rule, which needs `mac` entries.
    pub l2: bool,
}

/// Token cursor with helpers for the grammar.
#[derive(Debug)]
pub struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
    eof: Span,
    /// Address-set references seen so far, in text order.
    pub refs: Vec<SetRef>,
    /// Where each rule of the last rule set read starts (parallel to its `rules`).
    pub rule_spans: Vec<Span>,
}

const RULE_KEYWORDS_AFTER_DIR: &[&str] = &["protocol", "ethertype", "inet", "inet6"];
const ACTIONS: &[&str] = &["accept", "drop", "reject", "punt"];

impl<'a> Parser<'a> {
    /// A parser over `src`.
    pub fn new(src: &'a str) -> Result<Parser<'a>, Diagnostic> {
        let toks = crate::lex::tokenize(src)?;
        let line = src.lines().count().max(1) as u32;
        let last = src.lines().last().unwrap_or("");
        let eof = Span {
            line,
            col: last.chars().count() as u32 + 1,
            start: src.len(),
            end: src.len(),
        };
        Ok(Parser {
            toks,
            pos: 0,
            eof,
            refs: Vec::new(),
            rule_spans: Vec::new(),
        })
    }

    /// The next token, comments included.
    pub fn peek_raw(&self) -> Option<Token<'a>> {
        self.toks.get(self.pos).copied()
    }

    /// The next token that is not a comment.
    pub fn peek(&mut self) -> Option<Token<'a>> {
        while let Some(Token {
            tok: Tok::Comment(_), ..
        }) = self.peek_raw()
        {
            self.pos += 1;
        }
        self.peek_raw()
    }

    /// Consumes and returns the next non-comment token.
    pub fn next(&mut self, expected: &str) -> Result<Token<'a>, Diagnostic> {
        match self.peek() {
            Some(t) => {
                self.pos += 1;
                Ok(t)
            }
            None => Err(Diagnostic::new(
                self.eof,
                format!("unexpected end of file, expected {expected}"),
            )),
        }
    }

    /// Advances past one raw token (used after `peek_raw`).
    pub fn bump(&mut self) {
        self.pos += 1;
    }

    /// The next word.
    pub fn word(&mut self, expected: &str) -> Result<(&'a str, Span), Diagnostic> {
        let t = self.next(expected)?;
        match t.tok {
            Tok::Word(w) => Ok((w, t.span)),
            other => Err(unexpected(t.span, other, expected)),
        }
    }

    /// Consumes the keyword `kw` (case-sensitive) or fails with a did-you-mean hint.
    pub fn keyword(&mut self, kw: &str) -> Result<Span, Diagnostic> {
        let (w, span) = self.word(&format!("'{kw}'"))?;
        if w == kw {
            Ok(span)
        } else {
            Err(unknown_keyword(span, w, &[kw]))
        }
    }

    /// True (and consumed) when the next word is `kw`.
    pub fn eat(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Token { tok: Tok::Word(w), .. }) if w == kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes a punctuation token.
    pub fn punct(&mut self, want: Tok<'static>, expected: &str) -> Result<Span, Diagnostic> {
        let t = self.next(expected)?;
        if t.tok == want {
            Ok(t.span)
        } else {
            Err(unexpected(t.span, t.tok, expected))
        }
    }

    /// Reads the `# generation number:` / `# realization time :` comments at the current position.
    fn block_meta(&mut self, generation: &mut Option<u64>, realized: &mut Option<String>) {
        while let Some(Token {
            tok: Tok::Comment(c), ..
        }) = self.peek_raw()
        {
            if let Some((key, value)) = c.split_once(':') {
                let value = value.trim();
                match key.trim() {
                    "generation number" => *generation = value.parse().ok().or(*generation),
                    "realization time" => *realized = Some(value.to_string()),
                    _ => {}
                }
            }
            self.pos += 1;
        }
    }

    /// After `ruleset`: `<name> { rule...; }`.
    pub fn ruleset(&mut self) -> Result<RuleSet, Diagnostic> {
        let (name, _) = self.word("a rule set name")?;
        self.punct(Tok::Open, "'{'")?;
        let mut set = RuleSet {
            name: name.to_string(),
            generation: None,
            realized: None,
            rules: Vec::new(),
        };
        self.rule_spans.clear();
        loop {
            self.block_meta(&mut set.generation, &mut set.realized);
            let Some(t) = self.peek_raw() else {
                return Err(Diagnostic::new(
                    self.eof,
                    format!("rule set '{name}' is not closed"),
                ))
                .map_err(|d| d.with_hint("add '}'"));
            };
            self.pos += 1;
            match t.tok {
                Tok::Close => return Ok(set),
                Tok::Internal => {
                    let span = self.keyword("rule")?;
                    self.rule_spans.push(span);
                    set.rules.push(self.rule(true)?);
                }
                Tok::Word("rule") => {
                    self.rule_spans.push(t.span);
                    set.rules.push(self.rule(false)?);
                }
                Tok::Word(w) => return Err(unknown_keyword(t.span, w, &["rule", "}"])),
                other => return Err(unexpected(t.span, other, "'rule' or '}'")),
            }
        }
    }

    /// After `rule`: the rest of one rule up to and including `;`.
    pub fn rule(&mut self, internal: bool) -> Result<Rule, Diagnostic> {
        let id = self.number::<u32>("a rule id")?.0;
        self.keyword("at")?;
        let position = self.number::<u32>("a position")?.0;
        let (d, dspan) = self.word("a direction")?;
        let dir = match d {
            "in" => RuleDir::In,
            "out" => RuleDir::Out,
            "inout" => RuleDir::InOut,
            _ => return Err(unknown_keyword(dspan, d, &["in", "out", "inout"])),
        };
        let (kw, kspan) = self.word("'protocol' or 'ethertype'")?;
        let mut rule = Rule {
            id,
            position,
            dir,
            body: RuleBody::Ether(EtherMatch {
                ethertype: None,
                src: MacEndpoint::Any,
                dst: MacEndpoint::Any,
            }),
            stateless: false,
            action: Action::Accept,
            log: false,
            tag: None,
            internal,
        };
        match kw {
            "ethertype" => {
                let ethertype = self.ethertype()?;
                self.flags(&mut rule.stateless, None)?;
                self.keyword("from")?;
                let src = self.mac_endpoint()?;
                self.keyword("to")?;
                let dst = self.mac_endpoint()?;
                rule.body = RuleBody::Ether(EtherMatch { ethertype, src, dst });
            }
            "inet" | "inet6" | "protocol" => {
                let family = match kw {
                    "inet" => Family::Inet,
                    "inet6" => Family::Inet6,
                    _ => Family::Any,
                };
                if family != Family::Any {
                    self.keyword("protocol")?;
                }
                let proto = self.protocol()?;
                let mut strict = false;
                self.flags(&mut rule.stateless, Some(&mut strict))?;
                let mut icmp = self.icmp(proto)?;
                self.keyword("from")?;
                let src = self.endpoint()?;
                let sport = self.ports(proto)?;
                self.keyword("to")?;
                let dst = self.endpoint()?;
                let dport = self.ports(proto)?;
                if icmp == IcmpMatch::Any {
                    icmp = self.icmp(proto)?;
                }
                rule.body = RuleBody::Ip(IpMatch {
                    family,
                    proto,
                    strict,
                    src,
                    sport,
                    dst,
                    dport,
                    icmp,
                });
            }
            _ => return Err(unknown_keyword(kspan, kw, RULE_KEYWORDS_AFTER_DIR)),
        }
        let (a, aspan) = self.word("an action")?;
        rule.action = match a {
            "accept" => Action::Accept,
            "drop" => Action::Drop,
            "reject" => Action::Reject,
            "punt" => Action::Punt,
            _ => return Err(unknown_keyword(aspan, a, ACTIONS)),
        };
        loop {
            let t = self.next("';'")?;
            match t.tok {
                Tok::Semi => return Ok(rule),
                Tok::Word("with") => {
                    self.keyword("log")?;
                    rule.log = true;
                }
                Tok::Word("tag") => {
                    let q = self.next("a quoted tag")?;
                    match q.tok {
                        Tok::Quoted(s) => rule.tag = Some(s.to_string()),
                        other => return Err(unexpected(q.span, other, "a quoted tag like 'web'")),
                    }
                }
                Tok::Word(w) => return Err(unknown_keyword(t.span, w, &["with", "tag", ";"])),
                other => return Err(unexpected(t.span, other, "';'")),
            }
        }
    }

    fn flags(&mut self, stateless: &mut bool, mut strict: Option<&mut bool>) -> Result<(), Diagnostic> {
        loop {
            if self.eat("stateless") {
                *stateless = true;
            } else if strict.is_some() && self.eat("strict") {
                if let Some(s) = strict.as_deref_mut() {
                    *s = true;
                }
            } else {
                return Ok(());
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<(T, Span), Diagnostic> {
        let (w, span) = self.word(what)?;
        match w.parse() {
            Ok(n) => Ok((n, span)),
            Err(_) => Err(Diagnostic::new(span, format!("expected {what}, found '{w}'"))),
        }
    }

    fn ethertype(&mut self) -> Result<Option<u16>, Diagnostic> {
        let (w, span) = self.word("an ethertype")?;
        let v = match w {
            "any" => return Ok(None),
            "ipv4" => Some(0x0800),
            "arp" => Some(0x0806),
            "ipv6" => Some(0x86dd),
            _ => match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
                Some(hex) => u16::from_str_radix(hex, 16).ok(),
                None => w.parse().ok(),
            },
        };
        v.map(Some).ok_or_else(|| {
            Diagnostic::new(span, format!("bad ethertype '{w}'"))
                .with_hint("write any, ipv4, arp, ipv6 or a number like 0x0800")
        })
    }

    fn protocol(&mut self) -> Result<Protocol, Diagnostic> {
        let (w, span) = self.word("a protocol")?;
        if w == "any" {
            return Ok(Protocol::Any);
        }
        if let Some((_, n)) = PROTOCOL_NAMES.iter().find(|(name, _)| *name == w) {
            return Ok(Protocol::Number(*n));
        }
        if w == "icmp6" || w == "icmpv6" {
            return Ok(Protocol::Number(58));
        }
        if let Ok(n) = w.parse::<u8>() {
            return Ok(Protocol::Number(n));
        }
        let names: Vec<&str> = std::iter::once("any")
            .chain(PROTOCOL_NAMES.iter().map(|(n, _)| *n))
            .collect();
        let d = Diagnostic::new(span, format!("unsupported protocol '{w}'"));
        Err(match did_you_mean(w, &names) {
            Some(s) => d.with_hint(format!("did you mean '{s}'?")),
            None => {
                d.with_hint("use a name (any, tcp, udp, icmp, ipv6-icmp, sctp, gre, igmp) or a number 0-255")
            }
        })
    }

    fn icmp(&mut self, proto: Protocol) -> Result<IcmpMatch, Diagnostic> {
        let Some(Token {
            tok: Tok::Word(kw @ ("icmptype" | "typecode")),
            span,
        }) = self.peek()
        else {
            return Ok(IcmpMatch::Any);
        };
        self.pos += 1;
        if !proto.is_icmp() {
            return Err(
                Diagnostic::new(span, format!("'{kw}' on a rule whose protocol is not ICMP"))
                    .with_hint("use protocol icmp or ipv6-icmp"),
            );
        }
        if kw == "icmptype" {
            return Ok(IcmpMatch::Type(self.number::<u8>("an ICMP type 0-255")?.0));
        }
        let (w, wspan) = self.word("type:code")?;
        let parsed = w
            .split_once(':')
            .and_then(|(t, c)| Some((t.parse().ok()?, c.parse().ok()?)));
        parsed.map(|(t, c)| IcmpMatch::TypeCode(t, c)).ok_or_else(|| {
            Diagnostic::new(wspan, format!("bad ICMP type:code '{w}'")).with_hint("write it like 3:4")
        })
    }

    fn endpoint(&mut self) -> Result<Endpoint, Diagnostic> {
        let negated = self.eat("not");
        let (w, span) = self.word("any, addrset <id> or ip <address>")?;
        match w {
            "any" if !negated => Ok(Endpoint::Any),
            "addrset" => {
                let (id, ispan) = self.word("an address set id")?;
                self.refs.push(SetRef {
                    id: id.to_string(),
                    span: ispan,
                    l2: false,
                });
                Ok(Endpoint::AddrSet {
                    id: id.to_string(),
                    negated,
                })
            }
            "ip" => {
                let (a, aspan) = self.word("an IP address or prefix")?;
                Ok(Endpoint::Ip {
                    net: parse_ipnet(a, aspan)?,
                    negated,
                })
            }
            _ => Err(unknown_keyword(
                span,
                w,
                if negated {
                    &["addrset", "ip"]
                } else {
                    &["any", "addrset", "ip", "not"]
                },
            )),
        }
    }

    fn mac_endpoint(&mut self) -> Result<MacEndpoint, Diagnostic> {
        let negated = self.eat("not");
        let (w, span) = self.word("any or addrset <id>")?;
        match w {
            "any" if !negated => Ok(MacEndpoint::Any),
            "addrset" => {
                let (id, ispan) = self.word("an address set id")?;
                self.refs.push(SetRef {
                    id: id.to_string(),
                    span: ispan,
                    l2: true,
                });
                Ok(MacEndpoint::AddrSet {
                    id: id.to_string(),
                    negated,
                })
            }
            _ => Err(unknown_keyword(span, w, &["any", "addrset", "not"])),
        }
    }

    fn ports(&mut self, proto: Protocol) -> Result<Ports, Diagnostic> {
        let Some(Token {
            tok: Tok::Word("port"),
            span,
        }) = self.peek()
        else {
            return Ok(Ports::Any);
        };
        self.pos += 1;
        if !proto.has_ports() {
            return Err(
                Diagnostic::new(span, "ports on a rule whose protocol has no ports")
                    .with_hint("ports apply to tcp, udp and sctp"),
            );
        }
        if matches!(self.peek(), Some(Token { tok: Tok::Open, .. })) {
            self.pos += 1;
            let mut items = Vec::new();
            loop {
                let (w, wspan) = self.word("a port or range")?;
                items.push(parse_port_range(w, wspan)?);
                let t = self.next("',' or '}'")?;
                match t.tok {
                    Tok::Comma => {}
                    Tok::Close => return Ok(Ports::Set(items)),
                    other => return Err(unexpected(t.span, other, "',' or '}'")),
                }
            }
        }
        let (w, wspan) = self.word("a port or range")?;
        let (lo, hi) = parse_port_range(w, wspan)?;
        Ok(Ports::Range(lo, hi))
    }

    /// After `addrset`: `<id> { ip A, mac M, ... }`.
    pub fn addrset(&mut self) -> Result<AddrSet, Diagnostic> {
        let (id, _) = self.word("an address set id")?;
        self.punct(Tok::Open, "'{'")?;
        let mut set = AddrSet {
            id: id.to_string(),
            generation: None,
            realized: None,
            entries: Vec::new(),
        };
        loop {
            self.block_meta(&mut set.generation, &mut set.realized);
            let t = self.next("'ip', 'mac' or '}'")?;
            match t.tok {
                Tok::Close => return Ok(set),
                Tok::Comma => {}
                Tok::Word("ip") => {
                    let (a, aspan) = self.word("an IP address or prefix")?;
                    set.entries.push(AddrEntry::Ip(parse_ipnet(a, aspan)?));
                }
                Tok::Word("mac") => {
                    let (a, aspan) = self.word("a MAC address")?;
                    set.entries.push(AddrEntry::Mac(parse_mac(a, aspan)?));
                }
                Tok::Word(w) => return Err(unknown_keyword(t.span, w, &["ip", "mac", "}"])),
                other => return Err(unexpected(t.span, other, "'ip', 'mac' or '}'")),
            }
        }
    }
}

/// `a.b.c.d`, `a.b.c.d/len`, IPv6 likewise.
pub fn parse_ipnet(w: &str, span: Span) -> Result<IpNet, Diagnostic> {
    let bad = || {
        Diagnostic::new(span, format!("bad IP address or prefix '{w}'"))
            .with_hint("write an IPv4 or IPv6 address, optionally with /length")
    };
    let (addr, len) = match w.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (w, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    match len {
        None => Ok(IpNet::host(addr)),
        Some(l) => {
            let l: u8 = l.parse().map_err(|_| bad())?;
            IpNet::new(addr, l).ok_or_else(|| {
                Diagnostic::new(span, format!("prefix length /{l} is too long for {addr}")).with_hint(
                    if addr.is_ipv4() {
                        "IPv4 prefixes are /0 to /32"
                    } else {
                        "IPv6 prefixes are /0 to /128"
                    },
                )
            })
        }
    }
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(w: &str, span: Span) -> Result<Mac, Diagnostic> {
    let mut mac = [0u8; 6];
    let mut n = 0;
    for part in w.split([':', '-']) {
        if n == 6 || part.is_empty() || part.len() > 2 {
            n = 7;
            break;
        }
        match u8::from_str_radix(part, 16) {
            Ok(b) => mac[n] = b,
            Err(_) => {
                n = 7;
                break;
            }
        }
        n += 1;
    }
    if n != 6 {
        return Err(Diagnostic::new(span, format!("bad MAC address '{w}'"))
            .with_hint("write it like 00:50:56:aa:bb:cc"));
    }
    Ok(Mac(mac))
}

fn parse_port_range(w: &str, span: Span) -> Result<(u16, u16), Diagnostic> {
    let bad =
        || Diagnostic::new(span, format!("bad port '{w}'")).with_hint("ports are 0-65535; a range is lo-hi");
    let (lo, hi) = match w.split_once('-') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let p = w.parse().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(
            Diagnostic::new(span, format!("port range {lo}-{hi} is empty: {lo} > {hi}"))
                .with_hint(format!("write {hi}-{lo}")),
        );
    }
    Ok((lo, hi))
}

/// "unknown keyword" with a did-you-mean hint.
pub fn unknown_keyword(span: Span, w: &str, expected: &[&str]) -> Diagnostic {
    let d = Diagnostic::new(span, format!("unexpected '{w}', expected {}", list(expected)));
    match did_you_mean(w, expected) {
        Some(s) if s != w => d.with_hint(format!("did you mean '{s}'?")),
        _ => d,
    }
}

fn unexpected(span: Span, tok: Tok<'_>, expected: &str) -> Diagnostic {
    let found = match tok {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Open => "'{'".into(),
        Tok::Close => "'}'".into(),
        Tok::Semi => "';'".into(),
        Tok::Comma => "','".into(),
        Tok::Quoted(q) => format!("'{q}' (quoted)"),
        Tok::Comment(_) => "a comment".into(),
        Tok::Internal => "'# internal #'".into(),
    };
    Diagnostic::new(span, format!("unexpected {found}, expected {expected}"))
}

fn list(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}
