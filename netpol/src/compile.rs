//! NetworkPolicy → per-vNIC DFW filters over address sets, the way the NSX container plug-in realizes
//! it in the seed article, with Kubernetes' semantics.
//!
//! # Shape of the output
//!
//! Every networked pod gets one filter (`nic-<node>-<namespace>-<pod>`) guarding its vNIC. The filter's
//! L3 rule set holds the rules of *every* policy of the pod's namespace, not only those that select it
//! today: which pods a policy selects is expressed by its target address set (`tgt-…`), so relabelling a
//! pod or a namespace changes set members and never a rule (the seed's point). Per namespace, in order:
//!
//! 1. allow rules of every policy, ingress (`in … to addrset tgt-… accept`, tag `ir-…-<rule>[-<proto>]`)
//!    and egress (`out from addrset tgt-… … accept`, tag `er-…`);
//! 2. one isolation drop per policy and direction it covers (`ir-<prefix>`: `in from any to addrset tgt-…
//!    drop`; `er-<prefix>`: `out from addrset tgt-… to any drop`);
//! 3. `rule 2 … inout protocol any from any to any accept`: directions no policy isolates stay open.
//!
//! All allows precede all drops, so for a pod selected by several policies the first match is an allow
//! whenever *any* of them allows: the union Kubernetes specifies. `ipBlock.except` is compiled into the
//! peer set as the prefixes of `cidr` minus the exceptions (no drop rule), so one policy's exception
//! can never cut what another policy allows.
//!
//! Named ports resolve per destination pod: on ingress the destination is the filter's own pod, so its
//! rules carry that pod's numbers (which depend on its containers, not on labels); on egress each port
//! number the name has anywhere in the cluster gets its own destination set holding the peer pods whose
//! container port of that name has that number.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use rules::{
    Action, AddrEntry, AddrSet, Endpoint, FilterSpec, IpMatch, IpNet, Mac, Policy, Ports, Protocol, Rule,
    RuleDir, RuleSet, Vnic,
};

use crate::diff::Diff;
use crate::error::{CompileError, UpdateError};
use crate::k8s::{Cluster, Labels, NetworkPolicy, Peer, Pod, PolicyRule, PortRef, Proto, Selector};

/// Id of the final allow rule of every filter (the seed's `rule 2 at N`).
pub const DEFAULT_RULE_ID: u32 = 2;
/// Id of the L2 rule accepting every ethertype.
pub const L2_RULE_ID: u32 = 1;
/// Name of the shared L2 rule set.
pub const L2_RULESET: &str = "mainrs_L2";
/// Name of each filter's L3 rule set.
pub const L3_RULESET: &str = "mainrs";

/// The vNIC MAC dfw gives a pod: `0a:58:` and the last four bytes of its first address (the
/// convention OVN-Kubernetes uses; locally administered, unicast).
pub fn pod_mac(ip: IpAddr) -> Mac {
    let tail = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    Mac([0x0a, 0x58, tail[0], tail[1], tail[2], tail[3]])
}

/// Who a set's pod members are.
#[derive(Debug, Clone)]
enum Term {
    /// Pods of one namespace matching a selector (`podSelector` alone, or a policy's target).
    InNs { ns: String, pods: Selector },
    /// Pods of the namespaces a selector matches, optionally narrowed by a pod selector.
    Ns { ns: Selector, pods: Option<Selector> },
}

/// What decides the members of one address set.
#[derive(Debug, Clone, Default)]
struct SetDef {
    terms: Vec<Term>,
    /// `ipBlock` prefixes (cidr minus except). Members of the set, except for a named-port set, where
    /// they only say which pods are peers.
    blocks: Vec<IpNet>,
    /// Every pod is a peer (`to` empty, named port).
    all_pods: bool,
    /// Only pods whose container port `name`/`proto` is `number`.
    named: Option<(String, Proto, u16)>,
}

impl SetDef {
    fn has_ns_terms(&self) -> bool {
        self.all_pods || self.named.is_some() || self.terms.iter().any(|t| matches!(t, Term::Ns { .. }))
    }

    fn selects(&self, pod: &Pod, ns_labels: &BTreeMap<String, Labels>) -> bool {
        let empty = Labels::new();
        let peer = self.all_pods
            || self.terms.iter().any(|t| match t {
                Term::InNs { ns, pods } => pod.namespace == *ns && pods.matches(&pod.labels),
                Term::Ns { ns, pods } => {
                    ns.matches(ns_labels.get(&pod.namespace).unwrap_or(&empty))
                        && pods.as_ref().is_none_or(|s| s.matches(&pod.labels))
                }
            })
            || (self.named.is_some() && self.blocks.iter().any(|b| pod.ips.iter().any(|ip| b.contains(*ip))));
        peer && self.named.as_ref().is_none_or(|(n, proto, num)| pod.named_port(n, *proto) == Some(*num))
    }

    /// Entries that do not come from pods.
    fn static_entries(&self) -> &[IpNet] {
        if self.named.is_some() {
            &[]
        } else {
            &self.blocks
        }
    }
}

#[derive(Debug, Clone)]
struct SetState {
    def: SetDef,
    comment: String,
    members: BTreeSet<usize>,
}

/// Ports of one template rule.
#[derive(Debug, Clone)]
enum TPorts {
    Any,
    Fixed(Vec<(u16, u16)>),
    /// Fixed ranges plus container port names resolved on the filter's own pod (ingress).
    Named {
        fixed: Vec<(u16, u16)>,
        names: Vec<String>,
        proto: Proto,
    },
}

#[derive(Debug, Clone)]
struct TRule {
    id: u32,
    tag: String,
    dir: RuleDir,
    proto: Protocol,
    src: Endpoint,
    dst: Endpoint,
    ports: TPorts,
    action: Action,
}

/// A compiled cluster: the filters and the address sets, with what each set means, so that label
/// changes can be turned into set-member changes without recompiling.
#[derive(Debug, Clone)]
pub struct Compiled {
    pods: Vec<Pod>,
    pod_index: HashMap<(String, String), usize>,
    ns_pods: BTreeMap<String, Vec<usize>>,
    ns_labels: BTreeMap<String, Labels>,
    sets: BTreeMap<String, SetState>,
    filters: Vec<FilterSpec>,
}

fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Prefixes covering `net` minus every prefix of `except`.
pub fn subtract(net: IpNet, except: &[IpNet]) -> Vec<IpNet> {
    let net = net.network();
    let overlapping: Vec<IpNet> =
        except.iter().map(IpNet::network).filter(|e| net.contains(e.addr) || e.contains(net.addr)).collect();
    if overlapping.is_empty() {
        return vec![net];
    }
    if overlapping.iter().any(|e| e.len <= net.len) {
        return Vec::new();
    }
    let max = if net.addr.is_ipv4() { 32 } else { 128 };
    if net.len >= max {
        return Vec::new();
    }
    let len = net.len + 1;
    let upper = match net.addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) | (1u32 << (32 - u32::from(len)))).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) | (1u128 << (128 - u32::from(len)))).into()),
    };
    let mut out = subtract(IpNet { addr: net.addr, len }, &overlapping);
    out.extend(subtract(IpNet { addr: upper, len }, &overlapping));
    out
}

/// Ports of one rule grouped by protocol.
#[derive(Debug, Default)]
struct PortGroup {
    all: bool,
    fixed: Vec<(u16, u16)>,
    names: Vec<String>,
}

fn group_ports(rule: &PolicyRule) -> BTreeMap<Proto, PortGroup> {
    let mut groups: BTreeMap<Proto, PortGroup> = BTreeMap::new();
    for p in &rule.ports {
        let g = groups.entry(p.protocol).or_default();
        match &p.port {
            None => g.all = true,
            Some(PortRef::Number(n)) => g.fixed.push((*n, p.end_port.unwrap_or(*n))),
            Some(PortRef::Name(s)) => {
                if !g.names.contains(s) {
                    g.names.push(s.clone());
                }
            }
        }
    }
    for g in groups.values_mut() {
        g.fixed.sort_unstable();
        g.fixed.dedup();
    }
    groups
}

fn ports_of(ranges: &[(u16, u16)]) -> Ports {
    match ranges {
        [] => Ports::Any,
        [(lo, hi)] => Ports::Range(*lo, *hi),
        _ => Ports::Set(ranges.to_vec()),
    }
}

fn peer_def(policy: &NetworkPolicy, peers: &[Peer]) -> SetDef {
    let mut def = SetDef::default();
    for p in peers {
        match p {
            Peer::Pods { pods, namespaces: None } => def
                .terms
                .push(Term::InNs { ns: policy.namespace.clone(), pods: pods.clone().unwrap_or_default() }),
            Peer::Pods { pods, namespaces: Some(ns) } => {
                def.terms.push(Term::Ns { ns: ns.clone(), pods: pods.clone() })
            }
            Peer::IpBlock { cidr, except } => def.blocks.extend(subtract(*cidr, except)),
        }
    }
    def
}

/// Builds the sets and rule templates; keeps set ids unique.
struct Builder<'a> {
    cluster_name: &'a str,
    sets: BTreeMap<String, SetState>,
    set_owner: HashMap<String, String>,
    /// Port numbers each (name, protocol) has on some networked pod.
    named_numbers: BTreeMap<(String, Proto), BTreeSet<u16>>,
}

impl Builder<'_> {
    /// Registers a set; `owner` identifies what it means, so that two meanings never share an id.
    fn set(&mut self, id: String, owner: String, def: SetDef, comment: String) -> String {
        let id = match self.set_owner.get(&id) {
            Some(o) if *o != owner => format!("{id}-{:08x}", fnv(&owner)),
            _ => id,
        };
        self.set_owner.insert(id.clone(), owner);
        self.sets.entry(id.clone()).or_insert(SetState { def, comment, members: BTreeSet::new() });
        id
    }

    fn policy_rules(
        &mut self,
        pol: &NetworkPolicy,
        prefix: &str,
        out: &mut Vec<TRule>,
        drops: &mut Vec<TRule>,
    ) {
        let key = pol.key();
        let tgt = self.set(
            format!("tgt-{prefix}"),
            format!("{key} target"),
            SetDef {
                terms: vec![Term::InNs { ns: pol.namespace.clone(), pods: pol.pod_selector.clone() }],
                ..SetDef::default()
            },
            format!("{} {key}: pods the policy selects", self.cluster_name),
        );
        let tgt_ep = Endpoint::AddrSet { id: tgt, negated: false };
        let rule = |tag: String, dir, proto, src: Endpoint, dst: Endpoint, ports, action| TRule {
            id: 0,
            tag,
            dir,
            proto,
            src,
            dst,
            ports,
            action,
        };
        if pol.isolates_ingress {
            let n = pol.ingress.len();
            for (i, r) in pol.ingress.iter().enumerate() {
                let rname = if n == 1 { "all".to_string() } else { i.to_string() };
                let src = if r.peers.is_empty() {
                    Endpoint::Any
                } else {
                    let id = self.set(
                        format!("src-{prefix}-{rname}"),
                        format!("{key} ingress {i}"),
                        peer_def(pol, &r.peers),
                        format!("{} {key}: sources of ingress rule {i}", self.cluster_name),
                    );
                    Endpoint::AddrSet { id, negated: false }
                };
                let tag = format!("ir-{prefix}-{rname}");
                if r.ports.is_empty() {
                    out.push(rule(
                        tag,
                        RuleDir::In,
                        Protocol::Any,
                        src,
                        tgt_ep.clone(),
                        TPorts::Any,
                        Action::Accept,
                    ));
                    continue;
                }
                for (proto, g) in group_ports(r) {
                    let ports = if g.all {
                        TPorts::Any
                    } else if g.names.is_empty() {
                        TPorts::Fixed(g.fixed)
                    } else {
                        TPorts::Named { fixed: g.fixed, names: g.names, proto }
                    };
                    out.push(rule(
                        format!("{tag}-{}", proto.as_str()),
                        RuleDir::In,
                        Protocol::Number(proto.number()),
                        src.clone(),
                        tgt_ep.clone(),
                        ports,
                        Action::Accept,
                    ));
                }
            }
            drops.push(rule(
                format!("ir-{prefix}"),
                RuleDir::In,
                Protocol::Any,
                Endpoint::Any,
                tgt_ep.clone(),
                TPorts::Any,
                Action::Drop,
            ));
        }
        if pol.isolates_egress {
            let n = pol.egress.len();
            for (i, r) in pol.egress.iter().enumerate() {
                let rname = if n == 1 { "all".to_string() } else { i.to_string() };
                let tag = format!("er-{prefix}-{rname}");
                let mut dst_set: Option<Endpoint> = None;
                let mut dst = |b: &mut Self| -> Endpoint {
                    if r.peers.is_empty() {
                        return Endpoint::Any;
                    }
                    dst_set
                        .get_or_insert_with(|| {
                            let id = b.set(
                                format!("dst-{prefix}-{rname}"),
                                format!("{key} egress {i}"),
                                peer_def(pol, &r.peers),
                                format!("{} {key}: destinations of egress rule {i}", b.cluster_name),
                            );
                            Endpoint::AddrSet { id, negated: false }
                        })
                        .clone()
                };
                if r.ports.is_empty() {
                    let d = dst(self);
                    out.push(rule(
                        tag,
                        RuleDir::Out,
                        Protocol::Any,
                        tgt_ep.clone(),
                        d,
                        TPorts::Any,
                        Action::Accept,
                    ));
                    continue;
                }
                for (proto, g) in group_ports(r) {
                    let p = Protocol::Number(proto.number());
                    let ptag = format!("{tag}-{}", proto.as_str());
                    if g.all || !g.fixed.is_empty() {
                        let ports = if g.all { TPorts::Any } else { TPorts::Fixed(g.fixed.clone()) };
                        let d = dst(self);
                        out.push(rule(
                            ptag.clone(),
                            RuleDir::Out,
                            p,
                            tgt_ep.clone(),
                            d,
                            ports,
                            Action::Accept,
                        ));
                    }
                    if g.all {
                        continue;
                    }
                    for name in &g.names {
                        let numbers =
                            self.named_numbers.get(&(name.clone(), proto)).cloned().unwrap_or_default();
                        for num in numbers {
                            let mut def = peer_def(pol, &r.peers);
                            def.all_pods = r.peers.is_empty();
                            def.named = Some((name.clone(), proto, num));
                            let id = self.set(
                                format!("dst-{prefix}-{rname}-{name}-{num}"),
                                format!("{key} egress {i} {name}/{} {num}", proto.as_str()),
                                def,
                                format!(
                                    "{} {key}: destinations of egress rule {i} whose port {name}/{} is {num}",
                                    self.cluster_name,
                                    proto.as_str()
                                ),
                            );
                            out.push(rule(
                                format!("{ptag}-{name}-{num}"),
                                RuleDir::Out,
                                p,
                                tgt_ep.clone(),
                                Endpoint::AddrSet { id, negated: false },
                                TPorts::Fixed(vec![(num, num)]),
                                Action::Accept,
                            ));
                        }
                    }
                }
            }
            drops.push(rule(
                format!("er-{prefix}"),
                RuleDir::Out,
                Protocol::Any,
                tgt_ep.clone(),
                Endpoint::Any,
                TPorts::Any,
                Action::Drop,
            ));
        }
    }
}

/// Gives every template rule an id derived from its tag (stable across recompiles), unique in the set.
fn assign_ids(rules: &mut [TRule]) {
    let mut used = HashSet::from([DEFAULT_RULE_ID, L2_RULE_ID]);
    for r in rules {
        let mut id = 1000 + fnv(&r.tag) % 0x7fff_0000;
        while !used.insert(id) {
            id = id.wrapping_add(1).max(1000);
        }
        r.id = id;
    }
}

/// Appends `-<hash>` to every name that two different keys would share.
fn disambiguate(keys: Vec<(String, String)>) -> HashMap<String, String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, name) in &keys {
        *count.entry(name).or_default() += 1;
    }
    let clash: HashSet<String> =
        count.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k.to_string()).collect();
    keys.into_iter()
        .map(|(key, name)| {
            let name = if clash.contains(&name) { format!("{name}-{:08x}", fnv(&key)) } else { name };
            (key, name)
        })
        .collect()
}

fn instantiate(t: &TRule, pod: &Pod) -> Option<IpMatch> {
    let dport = match &t.ports {
        TPorts::Any => Ports::Any,
        TPorts::Fixed(r) => ports_of(r),
        TPorts::Named { fixed, names, proto } => {
            let mut r = fixed.clone();
            r.extend(names.iter().filter_map(|n| pod.named_port(n, *proto)).map(|p| (p, p)));
            r.sort_unstable();
            r.dedup();
            if r.is_empty() {
                // The name resolves to nothing on this pod: the rule allows nothing here.
                return None;
            }
            ports_of(&r)
        }
    };
    Some(IpMatch { proto: t.proto, src: t.src.clone(), dst: t.dst.clone(), dport, ..IpMatch::any() })
}

impl Compiled {
    /// Compiles `cluster` for the cluster called `name` (used in set and rule names).
    pub fn new(cluster: &Cluster, name: &str) -> Result<Compiled, CompileError> {
        if !valid_cluster_name(name) {
            return Err(CompileError::ClusterName(name.to_string()));
        }
        if let Some(c) = cluster.address_conflicts().into_iter().next() {
            return Err(CompileError::AddressClash(c));
        }
        let pods: Vec<Pod> = cluster.pods.values().filter(|p| p.is_networked()).cloned().collect();
        let pod_index =
            pods.iter().enumerate().map(|(i, p)| ((p.namespace.clone(), p.name.clone()), i)).collect();
        let mut ns_pods: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, p) in pods.iter().enumerate() {
            ns_pods.entry(p.namespace.clone()).or_default().push(i);
        }
        let ns_labels: BTreeMap<String, Labels> =
            cluster.namespaces.iter().map(|(k, ns)| (k.clone(), ns.labels.clone())).collect();

        let mut named_numbers: BTreeMap<(String, Proto), BTreeSet<u16>> = BTreeMap::new();
        for p in &pods {
            for cp in &p.ports {
                if let Some(n) = &cp.name {
                    named_numbers.entry((n.clone(), cp.protocol)).or_default().insert(cp.port);
                }
            }
        }
        let prefixes = disambiguate(
            cluster
                .policies
                .values()
                .map(|p| (p.key(), format!("{name}-{}-{}", p.namespace, p.name)))
                .collect(),
        );
        let mut b =
            Builder { cluster_name: name, sets: BTreeMap::new(), set_owner: HashMap::new(), named_numbers };
        let mut templates: BTreeMap<String, Vec<TRule>> = BTreeMap::new();
        let mut by_ns: BTreeMap<&str, Vec<&NetworkPolicy>> = BTreeMap::new();
        for p in cluster.policies.values() {
            by_ns.entry(&p.namespace).or_default().push(p);
        }
        for (ns, pols) in by_ns {
            let (mut allows, mut drops) = (Vec::new(), Vec::new());
            for pol in pols {
                let prefix = &prefixes[&pol.key()];
                b.policy_rules(pol, prefix, &mut allows, &mut drops);
            }
            allows.extend(drops);
            assign_ids(&mut allows);
            templates.insert(ns.to_string(), allows);
        }

        // Members.
        let mut sets = b.sets;
        for state in sets.values_mut() {
            let candidates: Box<dyn Iterator<Item = usize>> =
                if state.def.has_ns_terms() || !state.def.blocks.is_empty() {
                    Box::new(0..pods.len())
                } else {
                    let mut v: Vec<usize> = state
                        .def
                        .terms
                        .iter()
                        .filter_map(|t| match t {
                            Term::InNs { ns, .. } => ns_pods.get(ns),
                            Term::Ns { .. } => None,
                        })
                        .flatten()
                        .copied()
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    Box::new(v.into_iter())
                };
            state.members = candidates.filter(|&i| state.def.selects(&pods[i], &ns_labels)).collect();
        }

        // Filters.
        let filter_names = disambiguate(
            pods.iter()
                .map(|p| {
                    let node = p.node.as_deref().unwrap_or("unscheduled");
                    (p.key(), format!("nic-{node}-{}-{}", p.namespace, p.name))
                })
                .collect(),
        );
        let mut macs: HashMap<Mac, String> = HashMap::new();
        let mut filters = Vec::with_capacity(pods.len());
        let empty = Vec::new();
        for p in &pods {
            let mac = p.mac.unwrap_or_else(|| pod_mac(p.ips[0]));
            if let Some(prev) = macs.insert(mac, p.key()) {
                return Err(CompileError::MacClash { first: prev, second: p.key(), mac: mac.to_string() });
            }
            let mut spec =
                FilterSpec::new(filter_names[&p.key()].clone(), Vnic { mac: Some(mac), ips: p.ips.clone() });
            spec.comments =
                vec![format!("pod {} on node {}", p.key(), p.node.as_deref().unwrap_or("(unscheduled)"))];
            let mut rs = RuleSet::new(L3_RULESET);
            let template = templates.get(&p.namespace).unwrap_or(&empty);
            for t in template {
                let Some(m) = instantiate(t, p) else { continue };
                let mut r = Rule::ip(t.id, rs.rules.len() as u32 + 1, t.dir, m, t.action);
                r.tag = Some(t.tag.clone());
                rs.rules.push(r);
            }
            let mut last = Rule::ip(
                DEFAULT_RULE_ID,
                rs.rules.len() as u32 + 1,
                RuleDir::InOut,
                IpMatch::any(),
                Action::Accept,
            );
            last.tag = Some("default-allow".into());
            rs.rules.push(last);
            spec.rulesets.push(rs);
            filters.push(spec);
        }
        Ok(Compiled { pods, pod_index, ns_pods, ns_labels, sets, filters })
    }

    /// The policy file: shared address sets, the shared L2 rule set, one filter per pod vNIC.
    pub fn policy(&self) -> Policy {
        let mut l2 = RuleSet::new(L2_RULESET);
        let mut r = Rule {
            body: rules::RuleBody::Ether(rules::EtherMatch {
                ethertype: None,
                src: rules::MacEndpoint::Any,
                dst: rules::MacEndpoint::Any,
            }),
            ..Rule::ip(L2_RULE_ID, 1, RuleDir::InOut, IpMatch::any(), Action::Accept)
        };
        r.stateless = true;
        l2.rules.push(r);
        let addrsets = self
            .sets
            .iter()
            .map(|(id, s)| {
                let mut set = AddrSet::new(id.clone(), self.entries(s));
                set.comments = vec![s.comment.clone()];
                set
            })
            .collect();
        Policy { filters: self.filters.clone(), rulesets: vec![l2], addrsets, trailing: Vec::new() }
    }

    fn entries(&self, s: &SetState) -> Vec<AddrEntry> {
        let mut nets: Vec<IpNet> = s.def.static_entries().to_vec();
        for &i in &s.members {
            nets.extend(self.pods[i].ips.iter().map(|ip| IpNet::host(*ip)));
        }
        nets.sort_by_key(|n| (n.addr, n.len));
        nets.dedup();
        nets.into_iter().map(AddrEntry::Ip).collect()
    }

    /// Number of filters (one per networked pod).
    pub fn filter_count(&self) -> usize {
        self.filters.len()
    }

    /// Number of address sets.
    pub fn set_count(&self) -> usize {
        self.sets.len()
    }

    /// Relabels a pod and returns the change: set members only, since rules never depend on labels.
    pub fn relabel_pod(&mut self, namespace: &str, name: &str, labels: Labels) -> Result<Diff, UpdateError> {
        let i = *self
            .pod_index
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| UpdateError::NoPod(format!("{namespace}/{name}")))?;
        self.pods[i].labels = labels;
        let mut diff = Diff::default();
        let ids: Vec<String> = self.sets.keys().cloned().collect();
        for id in ids {
            self.reevaluate(&id, &[i], &mut diff);
        }
        diff.normalize();
        Ok(diff)
    }

    /// Relabels a namespace (its name label is kept, as the API server does) and returns the set-member
    /// changes.
    pub fn relabel_namespace(&mut self, namespace: &str, mut labels: Labels) -> Result<Diff, UpdateError> {
        let slot = self
            .ns_labels
            .get_mut(namespace)
            .ok_or_else(|| UpdateError::NoNamespace(namespace.to_string()))?;
        labels.insert(crate::k8s::NAMESPACE_NAME_LABEL.into(), namespace.to_string());
        *slot = labels;
        let pods = self.ns_pods.get(namespace).cloned().unwrap_or_default();
        let mut diff = Diff::default();
        let ids: Vec<String> =
            self.sets.iter().filter(|(_, s)| s.def.has_ns_terms()).map(|(k, _)| k.clone()).collect();
        for id in ids {
            self.reevaluate(&id, &pods, &mut diff);
        }
        diff.normalize();
        Ok(diff)
    }

    fn reevaluate(&mut self, id: &str, pods: &[usize], diff: &mut Diff) {
        let Some(state) = self.sets.get_mut(id) else { return };
        for &i in pods {
            let pod = &self.pods[i];
            let now = state.def.selects(pod, &self.ns_labels);
            let was = state.members.contains(&i);
            if now == was {
                continue;
            }
            if now {
                state.members.insert(i);
            } else {
                state.members.remove(&i);
            }
            let statics = state.def.static_entries();
            let entries =
                pod.ips.iter().map(|ip| IpNet::host(*ip)).filter(|n| !statics.contains(n)).map(AddrEntry::Ip);
            let delta = diff.members.entry(id.to_string()).or_default();
            for e in entries {
                if now {
                    delta.added.push(e);
                } else {
                    delta.removed.push(e);
                }
            }
            if delta.added.is_empty() && delta.removed.is_empty() {
                diff.members.remove(id);
            }
        }
    }
}

/// Compiles `cluster` into a policy file model (see [`Compiled`]).
pub fn compile(cluster: &Cluster, name: &str) -> Result<Policy, CompileError> {
    Compiled::new(cluster, name).map(|c| c.policy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        let (a, l) = s.split_once('/').unwrap();
        IpNet::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    #[test]
    fn cidr_minus_except_is_exact() {
        let parts = subtract(net("10.0.0.0/16"), &[net("10.0.1.0/24"), net("10.0.200.7/32")]);
        for probe in [
            "10.0.0.1",
            "10.0.1.0",
            "10.0.1.255",
            "10.0.2.0",
            "10.0.200.7",
            "10.0.200.6",
            "10.0.255.255",
            "10.1.0.0",
        ] {
            let ip: IpAddr = probe.parse().unwrap();
            let inside = net("10.0.0.0/16").contains(ip)
                && !net("10.0.1.0/24").contains(ip)
                && ip != "10.0.200.7".parse::<IpAddr>().unwrap();
            assert_eq!(parts.iter().any(|p| p.contains(ip)), inside, "{probe}");
        }
        assert!(parts.len() <= 8 + 24, "{}", parts.len());
        assert!(subtract(net("10.0.0.0/24"), &[net("10.0.0.0/16")]).is_empty());
        assert_eq!(subtract(net("fd00::/64"), &[net("fd00::1/128")]).len(), 64);
    }

    #[test]
    fn macs_are_local_unicast() {
        let m = pod_mac("10.1.2.3".parse().unwrap());
        assert_eq!(m.to_string(), "0a:58:0a:01:02:03");
        assert_eq!(m.0[0] & 1, 0);
        assert_eq!(m.0[0] & 2, 2);
    }
}
