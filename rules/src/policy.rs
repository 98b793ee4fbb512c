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
//! `getaddrsets` print, so it can be pasted in verbatim.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::diag::{Diagnostic, Span};
use crate::lex::Tok;
use crate::model::*;
use crate::text::{parse_ipnet, parse_mac, unknown_keyword, Parser};

/// What a filter does when it cannot decide (nothing loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// The vNIC a filter guards: how dfw tells frames going in to the VM from frames coming out of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vnic {
    /// The vNIC's MAC address.
    pub mac: Option<Mac>,
    /// The vNIC's IP addresses.
    pub ips: Vec<IpAddr>,
}

/// One filter as the policy file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// Filter name, e.g. `nic-5739119-eth33-vmware-sfw.1`.
    pub name: String,
    /// The guarded vNIC.
    pub vnic: Vnic,
    /// Failure policy.
    pub failure: FailurePolicy,
    /// The filter's own rule sets.
    pub rulesets: Vec<RuleSet>,
    /// The filter's own address sets.
    pub addrsets: Vec<AddrSet>,
}

/// A whole policy file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Filters in file order.
    pub filters: Vec<FilterSpec>,
    /// Rule sets shared by all filters.
    pub rulesets: Vec<RuleSet>,
    /// Address sets shared by all filters.
    pub addrsets: Vec<AddrSet>,
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

/// Reads a policy file. The first problem found is returned with its line and column.
pub fn parse_policy(src: &str) -> Result<Policy, Diagnostic> {
    let mut p = Parser::new(src)?;
    let mut policy = Policy::default();
    // Where each filter's block starts and ends, by token reference ranges, for scoping set references.
    let mut filter_refs: Vec<(usize, usize)> = Vec::new();
    let mut shared_refs = Vec::new();
    let mut names: HashMap<String, Span> = HashMap::new();
    let mut shared_seen = Seen::default();
    while let Some(t) = p.peek() {
        p.bump();
        match t.tok {
            Tok::Word("filter") => {
                let (name, span) = p.word("a filter name")?;
                if let Some(prev) = names.insert(name.to_string(), span) {
                    return Err(Diagnostic::new(span, format!("filter '{name}' is defined twice"))
                        .with_hint(format!("first defined at line {}", prev.line)));
                }
                let first_ref = p.refs.len();
                let spec = filter_block(&mut p, name)?;
                filter_refs.push((first_ref, p.refs.len()));
                policy.filters.push(spec);
            }
            Tok::Word("ruleset") => {
                let first_ref = p.refs.len();
                let set = p.ruleset()?;
                shared_seen.ruleset(&set, t.span, &p.rule_spans)?;
                shared_refs.push((first_ref, p.refs.len()));
                policy.rulesets.push(set);
            }
            Tok::Word("addrset") => {
                let set = p.addrset()?;
                shared_seen.addrset(&set, t.span)?;
                policy.addrsets.push(set);
            }
            Tok::Word(w) => return Err(unknown_keyword(t.span, w, &["filter", "ruleset", "addrset"])),
            _ => {
                return Err(Diagnostic::new(
                    t.span,
                    "unexpected punctuation, expected 'filter', 'ruleset' or 'addrset'",
                ))
            }
        }
    }
    // Every reference must resolve in the scope where it is used: a filter's own rules see its own and the
    // shared sets; shared rule sets are checked against every filter that uses them (and the shared sets
    // when there is no filter).
    for (spec, (a, b)) in policy.filters.iter().zip(&filter_refs) {
        check_refs(&p.refs[*a..*b], &policy.addrsets_for(spec), &spec.name)?;
    }
    for (set, (a, b)) in policy.rulesets.iter().zip(&shared_refs) {
        let users: Vec<&FilterSpec> = policy
            .filters
            .iter()
            .filter(|f| !f.rulesets.iter().any(|r| r.name == set.name))
            .collect();
        if users.is_empty() {
            let shared: Vec<&AddrSet> = policy.addrsets.iter().collect();
            check_refs(&p.refs[*a..*b], &shared, "the shared rule sets")?;
        }
        for f in users {
            check_refs(&p.refs[*a..*b], &policy.addrsets_for(f), &f.name)?;
        }
    }
    Ok(policy)
}

fn check_refs(refs: &[crate::text::SetRef], sets: &[&AddrSet], scope: &str) -> Result<(), Diagnostic> {
    for r in refs {
        let Some(set) = sets.iter().find(|s| s.id == r.id) else {
            return Err(Diagnostic::new(
                r.span,
                format!("address set '{}' is not defined for {scope}", r.id),
            )
            .with_hint("define it with addrset <id> { ... } in the filter or at top level"));
        };
        let has_mac = set.entries.iter().any(|e| matches!(e, AddrEntry::Mac(_)));
        let has_ip = set.entries.iter().any(|e| matches!(e, AddrEntry::Ip(_)));
        if r.l2 && has_ip {
            return Err(Diagnostic::new(
                r.span,
                format!(
                    "address set '{}' holds IP addresses but is used in an L2 rule",
                    r.id
                ),
            )
            .with_hint("L2 (ethertype) rules match MAC sets"));
        }
        if !r.l2 && has_mac {
            return Err(Diagnostic::new(
                r.span,
                format!(
                    "address set '{}' holds MAC addresses but is used in an L3 rule",
                    r.id
                ),
            )
            .with_hint("L3 (protocol) rules match IP sets"));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Seen {
    rulesets: HashMap<String, u32>,
    addrsets: HashMap<String, u32>,
}

impl Seen {
    fn ruleset(&mut self, set: &RuleSet, span: Span, rule_spans: &[Span]) -> Result<(), Diagnostic> {
        if let Some(line) = self.rulesets.insert(set.name.clone(), span.line) {
            return Err(
                Diagnostic::new(span, format!("rule set '{}' is defined twice", set.name))
                    .with_hint(format!("first defined at line {line}")),
            );
        }
        check_ruleset(set, rule_spans)
    }

    fn addrset(&mut self, set: &AddrSet, span: Span) -> Result<(), Diagnostic> {
        match self.addrsets.insert(set.id.clone(), span.line) {
            Some(line) => Err(
                Diagnostic::new(span, format!("address set '{}' is defined twice", set.id))
                    .with_hint(format!("first defined at line {line}")),
            ),
            None => Ok(()),
        }
    }
}

/// Rule ids and positions are unique within a set; L2 sets hold ethertype rules and L3 sets protocol rules.
fn check_ruleset(set: &RuleSet, spans: &[Span]) -> Result<(), Diagnostic> {
    let mut ids = HashMap::new();
    let mut positions = HashMap::new();
    for (r, &span) in set.rules.iter().zip(spans) {
        if ids.insert(r.id, r.position).is_some() {
            return Err(Diagnostic::new(
                span,
                format!("rule id {} appears twice in rule set '{}'", r.id, set.name),
            ));
        }
        if let Some(other) = positions.insert(r.position, r.id) {
            return Err(Diagnostic::new(
                span,
                format!(
                    "rules {other} and {} share position {} in rule set '{}'",
                    r.id, r.position, set.name
                ),
            ));
        }
        let l2_rule = matches!(r.body, RuleBody::Ether(_));
        if l2_rule != set.is_l2() {
            let (what, want) = if set.is_l2() {
                ("protocol", "ethertype")
            } else {
                ("ethertype", "protocol")
            };
            return Err(Diagnostic::new(
                span,
                format!("rule {} in rule set '{}' is a {what} rule", r.id, set.name),
            )
            .with_hint(format!(
                "rule sets named *_L2 hold ethertype rules; others hold protocol rules (use {want})"
            )));
        }
    }
    Ok(())
}

fn filter_block(p: &mut Parser<'_>, name: &str) -> Result<FilterSpec, Diagnostic> {
    p.punct(Tok::Open, "'{'")?;
    let mut spec = FilterSpec {
        name: name.to_string(),
        vnic: Vnic::default(),
        failure: FailurePolicy::default(),
        rulesets: Vec::new(),
        addrsets: Vec::new(),
    };
    let mut seen = Seen::default();
    let mut vnic_seen = false;
    loop {
        let t = p.next("'vnic', 'failurePolicy', 'ruleset', 'addrset' or '}'")?;
        match t.tok {
            Tok::Close => break,
            Tok::Word("vnic") => {
                if vnic_seen {
                    return Err(
                        Diagnostic::new(t.span, format!("filter '{name}' has two vnic lines"))
                            .with_hint("list every address on one line: vnic mac M ip A ip B;"),
                    );
                }
                vnic_seen = true;
                spec.vnic = vnic_line(p)?;
            }
            Tok::Word("failurePolicy") => {
                let (w, span) = p.word("failClosed or failOpen")?;
                spec.failure = match w {
                    "failClosed" => FailurePolicy::FailClosed,
                    "failOpen" => FailurePolicy::FailOpen,
                    _ => return Err(unknown_keyword(span, w, &["failClosed", "failOpen"])),
                };
                p.punct(Tok::Semi, "';'")?;
            }
            Tok::Word("ruleset") => {
                let set = p.ruleset()?;
                seen.ruleset(&set, t.span, &p.rule_spans)?;
                spec.rulesets.push(set);
            }
            Tok::Word("addrset") => {
                let set = p.addrset()?;
                seen.addrset(&set, t.span)?;
                spec.addrsets.push(set);
            }
            Tok::Word(w) => {
                return Err(unknown_keyword(
                    t.span,
                    w,
                    &["vnic", "failurePolicy", "ruleset", "addrset", "}"],
                ))
            }
            _ => return Err(Diagnostic::new(t.span, "unexpected punctuation in filter block")),
        }
    }
    if !vnic_seen {
        return Err(
            Diagnostic::new(p_span_hint(p), format!("filter '{name}' has no vnic line"))
                .with_hint("say which vNIC it guards: vnic mac 00:50:56:aa:bb:cc ip 10.0.0.5;"),
        );
    }
    Ok(spec)
}

fn p_span_hint(p: &mut Parser<'_>) -> Span {
    p.peek().map(|t| t.span).unwrap_or_default()
}

fn vnic_line(p: &mut Parser<'_>) -> Result<Vnic, Diagnostic> {
    let mut vnic = Vnic::default();
    loop {
        let t = p.next("'mac', 'ip' or ';'")?;
        match t.tok {
            Tok::Semi => break,
            Tok::Word("mac") => {
                let (w, span) = p.word("a MAC address")?;
                vnic.mac = Some(parse_mac(w, span)?);
            }
            Tok::Word("ip") => {
                let (w, span) = p.word("an IP address")?;
                let net = parse_ipnet(w, span)?;
                if !net.is_host() {
                    return Err(Diagnostic::new(span, format!("vnic address '{w}' is a prefix"))
                        .with_hint("a vNIC has single addresses"));
                }
                vnic.ips.push(net.addr);
            }
            Tok::Word(w) => return Err(unknown_keyword(t.span, w, &["mac", "ip", ";"])),
            _ => return Err(Diagnostic::new(t.span, "unexpected punctuation in vnic line")),
        }
    }
    if vnic.mac.is_none() && vnic.ips.is_empty() {
        return Err(
            Diagnostic::new(p_span_hint(p), "vnic line names no address").with_hint("vnic mac M ip A;")
        );
    }
    Ok(vnic)
}

impl std::fmt::Display for Policy {
    /// Canonical text of the whole policy (shared sets first, then filters).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for a in &self.addrsets {
            writeln!(f, "{a}")?;
        }
        for r in &self.rulesets {
            writeln!(f, "{r}")?;
        }
        for spec in &self.filters {
            writeln!(f, "filter {} {{", spec.name)?;
            f.write_str("vnic")?;
            if let Some(m) = spec.vnic.mac {
                write!(f, " mac {m}")?;
            }
            for ip in &spec.vnic.ips {
                write!(f, " ip {ip}")?;
            }
            writeln!(f, ";")?;
            writeln!(f, "failurePolicy {};", spec.failure.as_str())?;
            for r in &spec.rulesets {
                writeln!(f, "{r}")?;
            }
            for a in &spec.addrsets {
                writeln!(f, "{a}")?;
            }
            writeln!(f, "}}")?;
        }
        Ok(())
    }
}
