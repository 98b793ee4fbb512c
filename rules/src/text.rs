//! Reading the vsipioctl-style text of rule sets and address sets.
//!
//! The grammar is the one of `getrules` / `getaddrsets` output (see `docs/rule-format.md`). The parser is a
//! plain recursive descent over [`crate::lex`] tokens. It does not stop at the first mistake: a broken rule
//! or entry is reported, skipped up to its `;` / `,` (or the block's `}`), and reading goes on, so one run
//! reports every problem. Problems that leave the meaning clear (an empty port range, a port on ICMP) are
//! reported without skipping the rule. Comments are attached to the item that follows them so that
//! printing loses none.

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

/// Where the parts of one rule are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleSpans {
    /// The rule's id.
    pub id: Span,
    /// The rule's position (`at N`).
    pub position: Span,
    /// The `ethertype` / `protocol` keyword.
    pub kind: Span,
}

/// Where things of one address set are written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetSpans {
    /// The set id after `addrset`.
    pub id: Span,
    /// Each entry's address, parallel to `entries`.
    pub entries: Vec<Span>,
}

/// Token cursor with helpers for the grammar.
#[derive(Debug)]
pub struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
    eof: Span,
    /// Address-set references seen so far, in text order.
    pub refs: Vec<SetRef>,
    /// Where each rule of the last rule set read is written (parallel to its `rules`).
    pub rule_spans: Vec<RuleSpans>,
    /// Problems found so far.
    pub diags: Vec<Diagnostic>,
    pending: Vec<String>,
}

const RULE_KEYWORDS_AFTER_DIR: &[&str] = &["protocol", "ethertype", "inet", "inet6"];
const ACTIONS: &[&str] = &["accept", "drop", "reject", "punt"];

type PResult<T> = Result<T, Diagnostic>;

impl<'a> Parser<'a> {
    /// A parser over `src`. An unterminated quote is reported and the text after it ignored.
    pub fn new(src: &'a str) -> Parser<'a> {
        let line = src.split('\n').count().max(1) as u32;
        let last = src.rsplit('\n').next().unwrap_or("");
        let eof = Span { line, col: last.chars().count() as u32 + 1, start: src.len(), end: src.len() };
        let mut diags = Vec::new();
        let toks = match crate::lex::tokenize(src) {
            Ok(t) => t,
            Err((t, d)) => {
                diags.push(d);
                t
            }
        };
        Parser { toks, pos: 0, eof, refs: Vec::new(), rule_spans: Vec::new(), diags, pending: Vec::new() }
    }

    /// The end of the text, for "unexpected end of file".
    pub fn eof_span(&self) -> Span {
        self.eof
    }

    /// The next token that is not a comment; comments passed over are kept for the next item.
    pub fn peek(&mut self) -> Option<Token<'a>> {
        while let Some(Token { tok: Tok::Comment(c), .. }) = self.toks.get(self.pos).copied() {
            self.pending.push(c.to_string());
            self.pos += 1;
        }
        self.toks.get(self.pos).copied()
    }

    /// The comments read since the last item took them.
    pub fn take_comments(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
    }

    /// Consumes the next non-comment token.
    pub fn bump(&mut self) {
        if self.peek().is_some() {
            self.pos += 1;
        }
    }

    /// The next token, consumed unless it is `}` (a `}` is left to the enclosing block).
    fn next(&mut self, expected: &str) -> PResult<Token<'a>> {
        match self.peek() {
            Some(t) => {
                if t.tok != Tok::Close {
                    self.pos += 1;
                }
                Ok(t)
            }
            None => Err(Diagnostic::new(self.eof, format!("unexpected end of file, expected {expected}"))),
        }
    }

    /// The next word.
    pub fn word(&mut self, expected: &str) -> PResult<(&'a str, Span)> {
        let t = self.next(expected)?;
        match t.tok {
            Tok::Word(w) => Ok((w, t.span)),
            other => Err(unexpected(t.span, other, expected)),
        }
    }

    /// Consumes the keyword `kw` or fails with a did-you-mean hint.
    pub fn keyword(&mut self, kw: &str) -> PResult<Span> {
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
    pub fn punct(&mut self, want: Tok<'static>, expected: &str) -> PResult<Span> {
        let t = self.next(expected)?;
        if t.tok == want {
            if want == Tok::Close {
                self.pos += 1;
            }
            Ok(t.span)
        } else {
            Err(unexpected(t.span, t.tok, expected))
        }
    }

    /// Records a problem and goes on.
    pub fn report(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Skips the rest of a broken statement: up to and including `;`, or up to (not including) the `}`
    /// that closes the enclosing block. Braces inside the statement (`port {..}`) are balanced.
    pub fn recover_statement(&mut self) {
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match t.tok {
                Tok::Semi => {
                    self.pos += 1;
                    return;
                }
                Tok::Open => depth += 1,
                Tok::Close if depth == 0 => return,
                Tok::Close => depth -= 1,
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// Skips a broken block-level item: to the end of its `;`, or past a whole `{ ... }` block.
    pub fn recover_item(&mut self) {
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match t.tok {
                Tok::Semi if depth == 0 => {
                    self.pos += 1;
                    return;
                }
                Tok::Open => depth += 1,
                Tok::Close if depth == 0 => return,
                Tok::Close => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos += 1;
                        return;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// Reads `# generation number:` / `# realization time :` comments at the current position; other
    /// comments are kept for the next item.
    fn block_meta(&mut self, generation: &mut Option<u64>, realized: &mut Option<String>) {
        while let Some(Token { tok: Tok::Comment(c), .. }) = self.toks.get(self.pos).copied() {
            self.pos += 1;
            if let Some((key, value)) = c.split_once(':') {
                let value = value.trim();
                match key.trim() {
                    "generation number" => {
                        if let Ok(g) = value.parse() {
                            *generation = Some(g);
                            continue;
                        }
                    }
                    "realization time" => {
                        *realized = Some(value.to_string());
                        continue;
                    }
                    _ => {}
                }
            }
            self.pending.push(c.to_string());
        }
    }

    /// After `ruleset`: `<name> { rule...; }`. Broken rules are reported and skipped.
    pub fn ruleset(&mut self, comments: Vec<String>) -> PResult<RuleSet> {
        let (name, _) = self.word("a rule set name")?;
        self.punct(Tok::Open, "'{'")?;
        let mut set = RuleSet::new(name);
        set.comments = comments;
        self.rule_spans.clear();
        loop {
            self.block_meta(&mut set.generation, &mut set.realized);
            let Some(t) = self.peek() else {
                self.report(
                    Diagnostic::new(self.eof, format!("rule set '{name}' is not closed"))
                        .with_hint("add '}'"),
                );
                set.trailing = self.take_comments();
                return Ok(set);
            };
            self.pos += 1;
            let internal = match t.tok {
                Tok::Close => {
                    set.trailing = self.take_comments();
                    return Ok(set);
                }
                Tok::Internal => match self.keyword("rule") {
                    Ok(_) => true,
                    Err(d) => {
                        self.report(d);
                        self.recover_statement();
                        continue;
                    }
                },
                Tok::Word("rule") => false,
                Tok::Word(w) => {
                    self.report(unknown_keyword(t.span, w, &["rule", "}"]));
                    self.recover_statement();
                    continue;
                }
                other => {
                    self.report(unexpected(t.span, other, "'rule' or '}'"));
                    self.recover_statement();
                    continue;
                }
            };
            let comments = self.take_comments();
            match self.rule(internal) {
                Ok((mut rule, spans)) => {
                    rule.comments = comments;
                    set.rules.push(rule);
                    self.rule_spans.push(spans);
                }
                Err(d) => {
                    self.report(d);
                    self.recover_statement();
                }
            }
        }
    }

    /// After `rule`: the rest of one rule up to and including `;`.
    pub fn rule(&mut self, internal: bool) -> PResult<(Rule, RuleSpans)> {
        let (id, id_span) = self.number::<u32>("a rule id")?;
        self.keyword("at")?;
        let (position, pos_span) = self.number::<u32>("a position")?;
        let (d, dspan) = self.word("a direction")?;
        let dir = match d {
            "in" => RuleDir::In,
            "out" => RuleDir::Out,
            "inout" => RuleDir::InOut,
            _ => return Err(unknown_keyword(dspan, d, &["in", "out", "inout"])),
        };
        let (kw, kspan) = self.word("'protocol' or 'ethertype'")?;
        let spans = RuleSpans { id: id_span, position: pos_span, kind: kspan };
        let mut rule = Rule::ip(id, position, dir, IpMatch::any(), Action::Accept);
        rule.internal = internal;
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
                rule.body = RuleBody::Ip(IpMatch { family, proto, strict, src, sport, dst, dport, icmp });
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
                Tok::Semi => return Ok((rule, spans)),
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

    fn flags(&mut self, stateless: &mut bool, mut strict: Option<&mut bool>) -> PResult<()> {
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

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> PResult<(T, Span)> {
        let (w, span) = self.word(what)?;
        match w.parse() {
            Ok(n) => Ok((n, span)),
            Err(_) => Err(Diagnostic::new(span, format!("expected {what}, found '{w}'"))),
        }
    }

    fn ethertype(&mut self) -> PResult<Option<u16>> {
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

    fn protocol(&mut self) -> PResult<Protocol> {
        let (w, span) = self.word("a protocol")?;
        if w == "any" {
            return Ok(Protocol::Any);
        }
        if let Some((_, n)) = PROTOCOL_NAMES.iter().find(|(name, _)| *name == w) {
            return Ok(Protocol::Number(*n));
        }
        if let Some((_, n)) = PROTOCOL_ALIASES.iter().find(|(name, _)| *name == w) {
            return Ok(Protocol::Number(*n));
        }
        if let Ok(n) = w.parse::<u8>() {
            return Ok(Protocol::Number(n));
        }
        let names: Vec<&str> = std::iter::once("any").chain(PROTOCOL_NAMES.iter().map(|(n, _)| *n)).collect();
        let d = Diagnostic::new(span, format!("unsupported protocol '{w}'"));
        Err(match did_you_mean(w, &names) {
            Some(s) => d.with_hint(format!("did you mean '{s}'?")),
            None => d.with_hint("use any, tcp, udp, icmp, ipv6-icmp, sctp, gre, igmp or a number 0-255"),
        })
    }

    fn icmp(&mut self, proto: Protocol) -> PResult<IcmpMatch> {
        let Some(Token { tok: Tok::Word(kw @ ("icmptype" | "typecode")), span }) = self.peek() else {
            return Ok(IcmpMatch::Any);
        };
        self.pos += 1;
        let m = if kw == "icmptype" {
            IcmpMatch::Type(self.number::<u8>("an ICMP type 0-255")?.0)
        } else {
            let (w, wspan) = self.word("type:code")?;
            let parsed = w.split_once(':').and_then(|(t, c)| Some((t.parse().ok()?, c.parse().ok()?)));
            let (t, c) = parsed.ok_or_else(|| {
                Diagnostic::new(wspan, format!("bad ICMP type:code '{w}'"))
                    .with_hint("write it like 3:4 (each 0-255)")
            })?;
            IcmpMatch::TypeCode(t, c)
        };
        if !proto.is_icmp() {
            self.report(
                Diagnostic::new(span, format!("'{kw}' on a rule whose protocol is {proto}, not ICMP"))
                    .with_hint("use protocol icmp or ipv6-icmp"),
            );
        }
        Ok(m)
    }

    fn endpoint(&mut self) -> PResult<Endpoint> {
        let negated = self.eat("not");
        let (w, span) = self.word("any, addrset <id> or ip <address>")?;
        match w {
            "any" if !negated => Ok(Endpoint::Any),
            "addrset" => {
                let (id, ispan) = self.word("an address set id")?;
                self.refs.push(SetRef { id: id.to_string(), span: ispan, l2: false });
                Ok(Endpoint::AddrSet { id: id.to_string(), negated })
            }
            "ip" => {
                let (a, aspan) = self.word("an IP address or prefix")?;
                let net = parse_ipnet(a, aspan)?;
                self.check_host_bits(net, aspan);
                Ok(Endpoint::Ip { net, negated })
            }
            _ => Err(unknown_keyword(
                span,
                w,
                if negated { &["addrset", "ip"] } else { &["any", "addrset", "ip", "not"] },
            )),
        }
    }

    /// A prefix with host bits set is a warning: it matches the whole prefix, which is usually meant,
    /// but `10.0.0.1/24` may also be a typo for a host.
    fn check_host_bits(&mut self, net: IpNet, span: Span) {
        if net.has_host_bits() {
            let base = net.network();
            self.report(
                Diagnostic::warning(
                    span,
                    format!("{}/{} has host bits set; it matches {base}", net.addr, net.len),
                )
                .with_hint(format!("write {base}, or {} for the single address", net.addr)),
            );
        }
    }

    fn mac_endpoint(&mut self) -> PResult<MacEndpoint> {
        let negated = self.eat("not");
        let (w, span) = self.word("any or addrset <id>")?;
        match w {
            "any" if !negated => Ok(MacEndpoint::Any),
            "addrset" => {
                let (id, ispan) = self.word("an address set id")?;
                self.refs.push(SetRef { id: id.to_string(), span: ispan, l2: true });
                Ok(MacEndpoint::AddrSet { id: id.to_string(), negated })
            }
            _ => Err(unknown_keyword(span, w, &["any", "addrset", "not"])),
        }
    }

    fn ports(&mut self, proto: Protocol) -> PResult<Ports> {
        let Some(Token { tok: Tok::Word("port"), span }) = self.peek() else {
            return Ok(Ports::Any);
        };
        self.pos += 1;
        if !proto.may_have_ports() {
            self.report(
                Diagnostic::new(span, format!("ports on a rule whose protocol ({proto}) has no ports"))
                    .with_hint("ports apply to tcp, udp and sctp"),
            );
        }
        if matches!(self.peek(), Some(Token { tok: Tok::Open, .. })) {
            self.pos += 1;
            let mut items = Vec::new();
            loop {
                let (w, wspan) = self.word("a port or range")?;
                items.push(self.port_range(w, wspan)?);
                let t = self.next("',' or '}'")?;
                match t.tok {
                    Tok::Comma => {}
                    Tok::Close => {
                        self.pos += 1;
                        return Ok(Ports::Set(items));
                    }
                    other => return Err(unexpected(t.span, other, "',' or '}'")),
                }
            }
        }
        let (w, wspan) = self.word("a port or range")?;
        let (lo, hi) = self.port_range(w, wspan)?;
        Ok(Ports::Range(lo, hi))
    }

    fn port_range(&mut self, w: &str, span: Span) -> PResult<(u16, u16)> {
        let bad = || {
            Diagnostic::new(span, format!("bad port '{w}'")).with_hint("ports are 0-65535; a range is lo-hi")
        };
        let (lo, hi): (u16, u16) = match w.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let p = w.parse().map_err(|_| bad())?;
                (p, p)
            }
        };
        if lo > hi {
            self.report(
                Diagnostic::new(span, format!("port range {lo}-{hi} is empty: {lo} > {hi}"))
                    .with_hint(format!("write {hi}-{lo}")),
            );
        }
        Ok((lo, hi))
    }

    /// After `addrset`: `<id> { ip A, mac M, ... }`. Broken entries are reported and skipped.
    pub fn addrset(&mut self, comments: Vec<String>) -> PResult<(AddrSet, SetSpans)> {
        let (id, id_span) = self.word("an address set id")?;
        self.punct(Tok::Open, "'{'")?;
        let mut set = AddrSet::new(id, Vec::new());
        set.comments = comments;
        let mut spans = SetSpans { id: id_span, entries: Vec::new() };
        loop {
            self.block_meta(&mut set.generation, &mut set.realized);
            let at = set.entries.len();
            let Some(t) = self.peek() else {
                self.report(
                    Diagnostic::new(self.eof, format!("address set '{id}' is not closed"))
                        .with_hint("add '}'"),
                );
                return Ok((set, spans));
            };
            for c in self.take_comments() {
                set.entry_comments.push((at, c));
            }
            self.pos += 1;
            let entry = match t.tok {
                Tok::Close => return Ok((set, spans)),
                Tok::Comma => continue,
                Tok::Word("ip") => self.word("an IP address or prefix").and_then(|(a, s)| {
                    let net = parse_ipnet(a, s)?;
                    self.check_host_bits(net, s);
                    Ok((AddrEntry::Ip(net), s))
                }),
                Tok::Word("mac") => {
                    self.word("a MAC address").and_then(|(a, s)| Ok((AddrEntry::Mac(parse_mac(a, s)?), s)))
                }
                Tok::Word(w) => Err(unknown_keyword(t.span, w, &["ip", "mac", "}"])),
                other => Err(unexpected(t.span, other, "'ip', 'mac' or '}'")),
            };
            match entry {
                Ok((e, s)) => {
                    set.entries.push(e);
                    spans.entries.push(s);
                }
                Err(d) => {
                    self.report(d);
                    // Skip to the next entry.
                    while let Some(t) = self.peek() {
                        if matches!(t.tok, Tok::Comma | Tok::Close) {
                            break;
                        }
                        self.pos += 1;
                    }
                }
            }
        }
    }
}

/// Other names accepted for protocols (printed by their canonical name).
const PROTOCOL_ALIASES: &[(&str, u8)] = &[("icmp6", 58), ("icmpv6", 58), ("ipv6icmp", 58)];

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
    let mut parts = w.split([':', '-']);
    let ok = mac.iter_mut().all(|b| {
        parts.next().is_some_and(|p| {
            !p.is_empty() && p.len() <= 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok()
        })
    }) && parts.next().is_none();
    if !ok {
        return Err(Diagnostic::new(span, format!("bad MAC address '{w}'"))
            .with_hint("write it like 00:50:56:aa:bb:cc"));
    }
    Ok(Mac(mac))
}

/// "unexpected word" with a did-you-mean hint.
pub fn unknown_keyword(span: Span, w: &str, expected: &[&str]) -> Diagnostic {
    let d = Diagnostic::new(span, format!("unexpected '{w}', expected {}", list(expected)));
    match did_you_mean(w, expected) {
        Some(s) if s != w => d.with_hint(format!("did you mean '{s}'?")),
        _ => d,
    }
}

/// "unexpected token".
pub fn unexpected(span: Span, tok: Tok<'_>, expected: &str) -> Diagnostic {
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
