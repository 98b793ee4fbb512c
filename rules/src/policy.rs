//! Policy files: one text file describing one or more vNIC filters (see `docs/policy-format.md`).
//!
//! ```text
//! addrset 9a0c2b94-... { ip 172.15.0.4, ip 172.15.0.5, }     # shared by every filter
//! ruleset mainrs { rule 2 at 1 inout protocol any from any to any accept; }
//!
//! filter nic-5739119-eth33-vmware-sfw.1 {
//!   vnic mac 00:50:56:00:00:04 ip 172.15.0.4;
//!   failurePolicy failClosed;
//!   ruleset mainrs_L2 { ... }                                 # the filter's own sets replace shared ones
//! }
//! ```
//!
//! Rule sets and address sets at top level are shared: a filter uses them unless it defines its own set of
//! the same name. The text inside `ruleset` / `addrset` blocks is exactly what `vsipioctl getrules` and
//! `getaddrsets` print, so it can be pasted in verbatim. Raw `getrules` / `getaddrsets` output alone (no
//! `filter` block) is a valid policy file too.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::diag::{Diagnostic, Diagnostics, Span};
use crate::lex::Tok;
use crate::model::*;
use crate::print::write_comments;
use crate::text::{parse_ipnet, parse_mac, unexpected, unknown_keyword, Parser, RuleSpans, SetRef, SetSpans};

/// What a filter does when it cannot decide (nothing loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum FailurePolicy {
    /// Drop (NSX's default, `failClosed`).
    #[default]
    FailClosed,
    /// Pass (`failOpen`).
    FailOpen,
}

impl FailurePolicy {
    /// `failClosed` / `failOpen`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "failClosed",
            FailurePolicy::FailOpen => "failOpen",
        }
    }
}

/// What happens to established connections when a filter's policy changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum PolicyChange {
    /// Re-check each connection against the new policy on its next packet; cut it if no longer allowed
    /// (VPP's policy epoch behaviour). The default.
    #[default]
    Revalidate,
    /// Keep established connections as they are (Linux conntrack behaviour).
    Keep,
}

impl PolicyChange {
    /// `revalidate` / `keep`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyChange::Revalidate => "revalidate",
            PolicyChange::Keep => "keep",
        }
    }
}

/// Connection timers a filter may set (`timeout <name> <seconds>;`), pf's names.
pub const TIMER_NAMES: &[&str] = &[
    "tcp.first",
    "tcp.opening",
    "tcp.established",
    "tcp.closing",
    "tcp.finwait",
    "tcp.closed",
    "udp.first",
    "udp.single",
    "udp.multiple",
    "icmp.first",
    "icmp.error",
];

/// The vNIC a filter guards: how dfw tells frames going in to the VM from frames coming out of it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Vnic {
    /// The vNIC's MAC address.
    pub mac: Option<Mac>,
    /// The vNIC's IP addresses.
    pub ips: Vec<IpAddr>,
}

/// One filter as the policy file states it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterSpec {
    /// Filter name, e.g. `nic-5739119-eth33-vmware-sfw.1`.
    pub name: String,
    /// The guarded vNIC.
    pub vnic: Vnic,
    /// Failure policy.
    pub failure: FailurePolicy,
    /// Timer overrides (`timeout tcp.established 3600;`), names from [`TIMER_NAMES`], in file order.
    pub timeouts: Vec<(String, u32)>,
    /// `maxConnections N;`: the most connections this filter tracks.
    pub max_connections: Option<u32>,
    /// `icmpErrorRate N;`: the most ICMP / ICMPv6 errors this filter's `reject` rules send per
    /// second (0: none).
    pub icmp_error_rate: Option<u32>,
    /// `policyChange revalidate|keep;`.
    pub policy_change: PolicyChange,
    /// `flowCounts on|off;`: keep per-connection packet and byte counts (default off).
    pub flow_counts: bool,
    /// The filter's own rule sets.
    pub rulesets: Vec<RuleSet>,
    /// The filter's own address sets.
    pub addrsets: Vec<AddrSet>,
    /// Comment lines before `filter`.
    pub comments: Vec<String>,
    /// Comment lines inside the block that precede no rule set or address set (printed after `{`).
    pub inner_comments: Vec<String>,
}

impl FilterSpec {
    /// A filter with no rule sets, address sets or comments.
    pub fn new(name: impl Into<String>, vnic: Vnic) -> FilterSpec {
        FilterSpec {
            name: name.into(),
            vnic,
            failure: FailurePolicy::default(),
            timeouts: Vec::new(),
            max_connections: None,
            icmp_error_rate: None,
            policy_change: PolicyChange::default(),
            flow_counts: false,
            rulesets: Vec::new(),
            addrsets: Vec::new(),
            comments: Vec::new(),
            inner_comments: Vec::new(),
        }
    }
}

/// A whole policy file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Policy {
    /// Filters in file order.
    pub filters: Vec<FilterSpec>,
    /// Rule sets shared by all filters.
    pub rulesets: Vec<RuleSet>,
    /// Address sets shared by all filters.
    pub addrsets: Vec<AddrSet>,
    /// Comment lines at the end of the file.
    pub trailing: Vec<String>,
}

impl Policy {
    /// The rule sets in force for `filter`: its own, then shared ones it does not override.
    pub fn rulesets_for<'a>(&'a self, filter: &'a FilterSpec) -> Vec<&'a RuleSet> {
        merged(&filter.rulesets, &self.rulesets, |r| &r.name)
    }

    /// The address sets visible to `filter`: its own, then shared ones it does not override.
    pub fn addrsets_for<'a>(&'a self, filter: &'a FilterSpec) -> Vec<&'a AddrSet> {
        merged(&filter.addrsets, &self.addrsets, |a| &a.id)
    }
}

fn merged<'a, T>(own: &'a [T], shared: &'a [T], key: impl Fn(&T) -> &String) -> Vec<&'a T> {
    let mut out: Vec<&T> = own.iter().collect();
    out.extend(shared.iter().filter(|s| !own.iter().any(|o| key(o) == key(s))));
    out
}

/// A policy read as far as possible, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// What could be read (items with errors left out).
    pub policy: Policy,
    /// Errors and warnings, sorted by position.
    pub diagnostics: Diagnostics,
}

/// Reads a policy file. On any error, every diagnostic (errors and warnings) is returned.
pub fn parse_policy(src: &str) -> Result<Policy, Diagnostics> {
    let checked = check_policy(src);
    if checked.diagnostics.has_errors() {
        Err(checked.diagnostics)
    } else {
        Ok(checked.policy)
    }
}

/// Where the parts of one rule set were written, for validation after the whole file is read.
struct RuleSetSite {
    name_span: Span,
    rules: Vec<RuleSpans>,
    refs: std::ops::Range<usize>,
}

/// Reads a policy file, reporting every problem.
pub fn check_policy(src: &str) -> Checked {
    let mut p = Parser::new(src);
    let mut policy = Policy::default();
    let mut sites = Sites::default();
    while let Some(t) = p.peek() {
        let comments = p.take_comments();
        p.bump();
        let result = match t.tok {
            Tok::Word("filter") => filter_block(&mut p, comments, &mut sites).map(|f| policy.filters.push(f)),
            Tok::Word("ruleset") => {
                let first = p.refs.len();
                p.ruleset(comments).map(|set| {
                    sites.shared_rulesets.push(RuleSetSite {
                        name_span: t.span,
                        rules: p.rule_spans.clone(),
                        refs: first..p.refs.len(),
                    });
                    policy.rulesets.push(set);
                })
            }
            Tok::Word("addrset") => p.addrset(comments).map(|(set, spans)| {
                sites.shared_addrsets.push((t.span, spans));
                policy.addrsets.push(set);
            }),
            Tok::Word(w) => Err(unknown_keyword(t.span, w, &["filter", "ruleset", "addrset"])),
            other => Err(unexpected(t.span, other, "'filter', 'ruleset' or 'addrset'")),
        };
        if let Err(d) = result {
            p.report(d);
            p.recover_item();
            // A stray '}' at top level would stop recovery forever: step over it.
            if matches!(p.peek(), Some(t) if t.tok == Tok::Close) {
                p.bump();
            }
        }
    }
    policy.trailing = p.take_comments();
    validate(&policy, &sites, &mut p);
    let mut diags = std::mem::take(&mut p.diags);
    diags.sort_by_key(|d| (d.span.start, d.severity));
    diags.dedup();
    Checked { policy, diagnostics: Diagnostics(diags) }
}

#[derive(Default)]
struct Sites {
    shared_rulesets: Vec<RuleSetSite>,
    shared_addrsets: Vec<(Span, SetSpans)>,
    filters: Vec<FilterSite>,
}

struct FilterSite {
    name_span: Span,
    rulesets: Vec<RuleSetSite>,
    addrsets: Vec<(Span, SetSpans)>,
}

/// Checks that need the whole file: duplicates, set references, rule kinds.
fn validate(policy: &Policy, sites: &Sites, p: &mut Parser<'_>) {
    let mut diags = Vec::new();
    let refs: Vec<SetRef> = p.refs.clone();
    let mut names: HashMap<&str, Span> = HashMap::new();
    for (f, site) in policy.filters.iter().zip(&sites.filters) {
        if let Some(prev) = names.insert(&f.name, site.name_span) {
            diags.push(
                Diagnostic::new(site.name_span, format!("filter '{}' is defined twice", f.name))
                    .with_hint(format!("first defined at line {}", prev.line)),
            );
        }
    }
    check_unique_sets(
        &policy.rulesets,
        &sites.shared_rulesets,
        &policy.addrsets,
        &sites.shared_addrsets,
        &mut diags,
    );
    for (set, site) in policy.rulesets.iter().zip(&sites.shared_rulesets) {
        check_rules(set, site, &mut diags);
        // A shared rule set is checked against the sets of every filter that uses it.
        let users: Vec<&FilterSpec> =
            policy.filters.iter().filter(|f| !f.rulesets.iter().any(|r| r.name == set.name)).collect();
        if users.is_empty() {
            let shared: Vec<&AddrSet> = policy.addrsets.iter().collect();
            check_refs(&refs[site.refs.clone()], &shared, None, &mut diags);
        }
        for f in users {
            check_refs(&refs[site.refs.clone()], &policy.addrsets_for(f), Some(&f.name), &mut diags);
        }
    }
    for (f, site) in policy.filters.iter().zip(&sites.filters) {
        check_unique_sets(&f.rulesets, &site.rulesets, &f.addrsets, &site.addrsets, &mut diags);
        let sets = policy.addrsets_for(f);
        for (set, rs) in f.rulesets.iter().zip(&site.rulesets) {
            check_rules(set, rs, &mut diags);
            check_refs(&refs[rs.refs.clone()], &sets, Some(&f.name), &mut diags);
        }
        let applied = policy.rulesets_for(f);
        for l2 in [false, true] {
            let kind: Vec<&&RuleSet> = applied.iter().filter(|r| r.is_l2() == l2).collect();
            if kind.len() > 1 {
                diags.push(
                    Diagnostic::new(
                        site.name_span,
                        format!(
                            "filter '{}' gets two {} rule sets ('{}' and '{}')",
                            f.name,
                            if l2 { "L2" } else { "L3" },
                            kind[0].name,
                            kind[1].name
                        ),
                    )
                    .with_hint("a filter enforces one L3 set and one L2 set (named *_L2)"),
                );
            }
        }
    }
    for d in diags {
        p.report(d);
    }
}

fn check_unique_sets(
    rulesets: &[RuleSet],
    rs_sites: &[RuleSetSite],
    addrsets: &[AddrSet],
    as_sites: &[(Span, SetSpans)],
    diags: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (r, site) in rulesets.iter().zip(rs_sites) {
        if let Some(prev) = seen.insert(&r.name, site.name_span) {
            diags.push(
                Diagnostic::new(site.name_span, format!("rule set '{}' is defined twice", r.name))
                    .with_hint(format!("first defined at line {}", prev.line)),
            );
        }
    }
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for (a, (span, _)) in addrsets.iter().zip(as_sites) {
        if let Some(prev) = seen.insert(&a.id, *span) {
            diags.push(
                Diagnostic::new(*span, format!("address set '{}' is defined twice", a.id))
                    .with_hint(format!("first defined at line {}", prev.line)),
            );
        }
    }
}

/// Rule ids and positions are unique within a set; L2 sets hold ethertype rules and L3 sets protocol rules.
fn check_rules(set: &RuleSet, site: &RuleSetSite, diags: &mut Vec<Diagnostic>) {
    let mut ids: HashMap<u32, Span> = HashMap::new();
    let mut positions: HashMap<u32, (u32, Span)> = HashMap::new();
    for (r, spans) in set.rules.iter().zip(&site.rules) {
        if let Some(prev) = ids.insert(r.id, spans.id) {
            diags.push(
                Diagnostic::new(
                    spans.id,
                    format!("rule id {} appears twice in rule set '{}'", r.id, set.name),
                )
                .with_hint(format!("first used at line {}", prev.line)),
            );
        }
        if let Some((other, prev)) = positions.insert(r.position, (r.id, spans.position)) {
            diags.push(
                Diagnostic::new(
                    spans.position,
                    format!(
                        "rules {other} and {} share position {} in rule set '{}'",
                        r.id, r.position, set.name
                    ),
                )
                .with_hint(format!(
                    "rule {other} is at line {}; positions order evaluation and must differ",
                    prev.line
                )),
            );
        }
        let l2_rule = matches!(r.body, RuleBody::Ether(_));
        if l2_rule != set.is_l2() {
            let (what, want) =
                if set.is_l2() { ("protocol", "ethertype") } else { ("ethertype", "protocol") };
            diags.push(
                Diagnostic::new(
                    spans.kind,
                    format!("rule {} in rule set '{}' is a {what} rule", r.id, set.name),
                )
                .with_hint(format!(
                    "rule sets named *_L2 hold ethertype rules, others protocol rules: use {want}"
                )),
            );
        }
    }
}

fn check_refs(refs: &[SetRef], sets: &[&AddrSet], filter: Option<&str>, diags: &mut Vec<Diagnostic>) {
    let finder = crate::eval::SetFinder::new(sets, refs.len());
    for r in refs {
        let Some(set) = finder.find(&r.id) else {
            let scope = filter.map_or("the shared rule sets".to_string(), |f| format!("filter '{f}'"));
            diags.push(
                Diagnostic::new(r.span, format!("address set '{}' is not defined for {scope}", r.id))
                    .with_hint("define it with addrset <id> { ... } in the filter or at top level"),
            );
            continue;
        };
        let has_mac = set.entries.iter().any(|e| matches!(e, AddrEntry::Mac(_)));
        let has_ip = set.entries.iter().any(|e| matches!(e, AddrEntry::Ip(_)));
        if r.l2 && has_ip {
            diags.push(
                Diagnostic::new(
                    r.span,
                    format!("address set '{}' holds IP addresses but is used in an L2 rule", r.id),
                )
                .with_hint("L2 (ethertype) rules match MAC sets"),
            );
        }
        if !r.l2 && has_mac {
            diags.push(
                Diagnostic::new(
                    r.span,
                    format!("address set '{}' holds MAC addresses but is used in an L3 rule", r.id),
                )
                .with_hint("L3 (protocol) rules match IP sets"),
            );
        }
    }
}

fn filter_block(
    p: &mut Parser<'_>,
    comments: Vec<String>,
    sites: &mut Sites,
) -> Result<FilterSpec, Diagnostic> {
    let (name, name_span) = p.word("a filter name")?;
    p.punct(Tok::Open, "'{'")?;
    let mut spec = FilterSpec::new(name, Vnic::default());
    spec.comments = comments;
    let mut site = FilterSite { name_span, rulesets: Vec::new(), addrsets: Vec::new() };
    let mut vnic_seen = false;
    loop {
        let Some(t) = p.peek() else {
            p.report(
                Diagnostic::new(p.eof_span(), format!("filter '{name}' is not closed")).with_hint("add '}'"),
            );
            break;
        };
        let comments = p.take_comments();
        p.bump();
        let result = match t.tok {
            Tok::Close => {
                spec.inner_comments.extend(comments);
                break;
            }
            Tok::Word("vnic") => {
                spec.inner_comments.extend(comments);
                if vnic_seen {
                    Err(Diagnostic::new(t.span, format!("filter '{name}' has two vnic lines"))
                        .with_hint("list every address on one line: vnic mac M ip A ip B;"))
                } else {
                    vnic_seen = true;
                    vnic_line(p, t.span).map(|v| spec.vnic = v)
                }
            }
            Tok::Word("failurePolicy") => {
                spec.inner_comments.extend(comments);
                failure_line(p).map(|f| spec.failure = f)
            }
            Tok::Word("timeout") => {
                spec.inner_comments.extend(comments);
                timeout_line(p).and_then(|(name, secs, span)| {
                    if spec.timeouts.iter().any(|(n, _)| *n == name) {
                        return Err(Diagnostic::new(span, format!("timeout '{name}' is set twice")));
                    }
                    spec.timeouts.push((name, secs));
                    Ok(())
                })
            }
            Tok::Word("maxConnections") => {
                spec.inner_comments.extend(comments);
                number_line(p, "a connection count").map(|n| spec.max_connections = Some(n))
            }
            Tok::Word("icmpErrorRate") => {
                spec.inner_comments.extend(comments);
                number_line(p, "errors per second").map(|n| spec.icmp_error_rate = Some(n))
            }
            Tok::Word("policyChange") => {
                spec.inner_comments.extend(comments);
                policy_change_line(p).map(|c| spec.policy_change = c)
            }
            Tok::Word("flowCounts") => {
                spec.inner_comments.extend(comments);
                on_off_line(p).map(|on| spec.flow_counts = on)
            }
            Tok::Word("ruleset") => {
                let first = p.refs.len();
                p.ruleset(comments).map(|set| {
                    site.rulesets.push(RuleSetSite {
                        name_span: t.span,
                        rules: p.rule_spans.clone(),
                        refs: first..p.refs.len(),
                    });
                    spec.rulesets.push(set);
                })
            }
            Tok::Word("addrset") => p.addrset(comments).map(|(set, spans)| {
                site.addrsets.push((t.span, spans));
                spec.addrsets.push(set);
            }),
            Tok::Word(w) => Err(unknown_keyword(t.span, w, FILTER_ITEMS)),
            other => Err(unexpected(t.span, other, "a filter item or '}'")),
        };
        if let Err(d) = result {
            p.report(d);
            p.recover_item();
        }
    }
    if !vnic_seen {
        p.report(
            Diagnostic::new(name_span, format!("filter '{name}' has no vnic line"))
                .with_hint("say which vNIC it guards: vnic mac 00:50:56:aa:bb:cc ip 10.0.0.5;"),
        );
    }
    sites.filters.push(site);
    Ok(spec)
}

const FILTER_ITEMS: &[&str] = &[
    "vnic",
    "failurePolicy",
    "timeout",
    "maxConnections",
    "icmpErrorRate",
    "policyChange",
    "flowCounts",
    "ruleset",
    "addrset",
    "}",
];

fn timeout_line(p: &mut Parser<'_>) -> Result<(String, u32, Span), Diagnostic> {
    let (name, span) = p.word("a timer name")?;
    if !TIMER_NAMES.contains(&name) {
        return Err(unknown_keyword(span, name, TIMER_NAMES));
    }
    let secs = number_line(p, "seconds")?;
    Ok((name.to_string(), secs, span))
}

fn number_line(p: &mut Parser<'_>, what: &str) -> Result<u32, Diagnostic> {
    let (w, span) = p.word(what)?;
    let n = w.parse::<u32>().map_err(|_| {
        Diagnostic::new(span, format!("expected {what}, found '{w}'"))
            .with_hint("a whole number 0-4294967295")
    })?;
    p.punct(Tok::Semi, "';'")?;
    Ok(n)
}

fn policy_change_line(p: &mut Parser<'_>) -> Result<PolicyChange, Diagnostic> {
    let (w, span) = p.word("revalidate or keep")?;
    let c = match w {
        "revalidate" => PolicyChange::Revalidate,
        "keep" => PolicyChange::Keep,
        _ => return Err(unknown_keyword(span, w, &["revalidate", "keep"])),
    };
    p.punct(Tok::Semi, "';'")?;
    Ok(c)
}

fn on_off_line(p: &mut Parser<'_>) -> Result<bool, Diagnostic> {
    let (w, span) = p.word("on or off")?;
    let on = match w {
        "on" => true,
        "off" => false,
        _ => return Err(unknown_keyword(span, w, &["on", "off"])),
    };
    p.punct(Tok::Semi, "';'")?;
    Ok(on)
}

fn failure_line(p: &mut Parser<'_>) -> Result<FailurePolicy, Diagnostic> {
    let (w, span) = p.word("failClosed or failOpen")?;
    let f = match w {
        "failClosed" => FailurePolicy::FailClosed,
        "failOpen" => FailurePolicy::FailOpen,
        _ => return Err(unknown_keyword(span, w, &["failClosed", "failOpen"])),
    };
    p.punct(Tok::Semi, "';'")?;
    Ok(f)
}

fn vnic_line(p: &mut Parser<'_>, start: Span) -> Result<Vnic, Diagnostic> {
    let mut vnic = Vnic::default();
    loop {
        let Some(t) = p.peek() else {
            return Err(Diagnostic::new(p.eof_span(), "unexpected end of file, expected ';'"));
        };
        match t.tok {
            Tok::Semi => {
                p.bump();
                break;
            }
            Tok::Word("mac") => {
                p.bump();
                let (w, span) = p.word("a MAC address")?;
                vnic.mac = Some(parse_mac(w, span)?);
            }
            Tok::Word("ip") => {
                p.bump();
                let (w, span) = p.word("an IP address")?;
                let net = parse_ipnet(w, span)?;
                if !net.is_host() {
                    return Err(Diagnostic::new(span, format!("vnic address '{w}' is a prefix"))
                        .with_hint("a vNIC has single addresses"));
                }
                vnic.ips.push(net.addr);
            }
            Tok::Word(w) => {
                p.bump();
                return Err(unknown_keyword(t.span, w, &["mac", "ip", ";"]));
            }
            other => return Err(unexpected(t.span, other, "'mac', 'ip' or ';'")),
        }
    }
    if vnic.mac.is_none() && vnic.ips.is_empty() {
        return Err(Diagnostic::new(start, "vnic line names no address").with_hint("vnic mac M ip A;"));
    }
    Ok(vnic)
}

impl std::fmt::Display for Policy {
    /// Canonical text of the whole policy: shared address sets, shared rule sets, then filters, separated
    /// by blank lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut std::fmt::Formatter<'_>| {
            if !std::mem::take(&mut first) {
                writeln!(f)?;
            }
            Ok::<(), std::fmt::Error>(())
        };
        for a in &self.addrsets {
            sep(f)?;
            write!(f, "{a}")?;
        }
        for r in &self.rulesets {
            sep(f)?;
            write!(f, "{r}")?;
        }
        for spec in &self.filters {
            sep(f)?;
            write_comments(f, "", &spec.comments)?;
            writeln!(f, "filter {} {{", spec.name)?;
            write_comments(f, "  ", &spec.inner_comments)?;
            f.write_str("  vnic")?;
            if let Some(m) = spec.vnic.mac {
                write!(f, " mac {m}")?;
            }
            for ip in &spec.vnic.ips {
                write!(f, " ip {ip}")?;
            }
            writeln!(f, ";")?;
            writeln!(f, "  failurePolicy {};", spec.failure.as_str())?;
            for (name, secs) in &spec.timeouts {
                writeln!(f, "  timeout {name} {secs};")?;
            }
            if let Some(n) = spec.max_connections {
                writeln!(f, "  maxConnections {n};")?;
            }
            if let Some(n) = spec.icmp_error_rate {
                writeln!(f, "  icmpErrorRate {n};")?;
            }
            if spec.policy_change != PolicyChange::default() {
                writeln!(f, "  policyChange {};", spec.policy_change.as_str())?;
            }
            if spec.flow_counts {
                writeln!(f, "  flowCounts on;")?;
            }
            for r in &spec.rulesets {
                writeln!(f)?;
                write!(f, "{r}")?;
            }
            for a in &spec.addrsets {
                writeln!(f)?;
                write!(f, "{a}")?;
            }
            writeln!(f, "}}")?;
        }
        if !self.trailing.is_empty() {
            sep(f)?;
            write_comments(f, "", &self.trailing)?;
        }
        Ok(())
    }
}
