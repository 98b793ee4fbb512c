//! The Kubernetes objects dfw reads, and reading them from manifests.
//!
//! Only what NetworkPolicy semantics need is kept: namespaces with their labels; pods with namespace,
//! labels, node, addresses and named container ports; `networking.k8s.io/v1` NetworkPolicies in full.
//! Reading is strict in the way `kubectl apply --validate=strict` is: an unknown field in any part dfw
//! interprets is an error naming the object and the field's path, and a kind dfw does not implement is
//! reported (never silently dropped). Parts of a Pod dfw does not interpret (volumes, probes, ...) are
//! accepted by name without looking inside.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use rules::IpNet;

use crate::error::{LoadError, LoadErrors, Location};
use crate::yaml::{self, Mark, Node, Value};

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries with its own name (set by the API server since Kubernetes 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// An L4 protocol a NetworkPolicy port or a container port names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// `TCP` (the default).
    Tcp,
    /// `UDP`.
    Udp,
    /// `SCTP`.
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// Lower-case name (`tcp`), as dfw rules print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

/// A namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels, always including [`NAMESPACE_NAME_LABEL`].
    pub labels: Labels,
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// `name`, if given.
    pub name: Option<String>,
    /// `containerPort`.
    pub port: u16,
    /// `protocol`.
    pub protocol: Proto,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// `spec.nodeName`.
    pub node: Option<String>,
    /// `status.podIP` and `status.podIPs`, deduplicated, in order.
    pub ips: Vec<IpAddr>,
    /// Ports of `spec.containers`.
    pub ports: Vec<ContainerPort>,
    /// `spec.hostNetwork: true`: the pod uses the node's network and has no vNIC of its own.
    pub host_network: bool,
    /// `status.phase` is `Succeeded` or `Failed`: the pod no longer runs and NetworkPolicy ignores it.
    pub terminated: bool,
    /// The vNIC MAC from the annotation [`VNIC_MAC_ANNOTATION`], when the pod's real MAC is known.
    pub mac: Option<rules::Mac>,
}

/// Annotation giving a pod's vNIC MAC (otherwise dfw derives one from its address).
pub const VNIC_MAC_ANNOTATION: &str = "dfw.io/vnic-mac";

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// True when NetworkPolicy applies to the pod: it runs, has an address and its own network.
    pub fn is_networked(&self) -> bool {
        !self.host_network && !self.terminated && !self.ips.is_empty()
    }

    /// The number of the container port called `name` for `proto`.
    pub fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports.iter().find(|p| p.protocol == proto && p.name.as_deref() == Some(name)).map(|p| p.port)
    }
}

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `In`.
    In,
    /// `NotIn`.
    NotIn,
    /// `Exists`.
    Exists,
    /// `DoesNotExist`.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// `key`.
    pub key: String,
    /// `operator`.
    pub op: Op,
    /// `values`.
    pub values: Vec<String>,
}

/// A label selector; the empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Selector {
    /// `matchLabels`.
    pub labels: Labels,
    /// `matchExpressions`.
    pub exprs: Vec<Requirement>,
}

impl Selector {
    /// Whether `labels` satisfy every term (Kubernetes `LabelSelectorAsSelector` semantics).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|r| {
                let v = labels.get(&r.key);
                match r.op {
                    Op::In => v.is_some_and(|v| r.values.contains(v)),
                    Op::NotIn => !v.is_some_and(|v| r.values.contains(v)),
                    Op::Exists => v.is_some(),
                    Op::DoesNotExist => v.is_none(),
                }
            })
    }

    /// True for `{}`.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.exprs.is_empty()
    }
}

/// One entry of `from` / `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`. `pods: None` means every pod of the selected
    /// namespaces; `namespaces: None` means the policy's own namespace.
    Pods {
        /// `podSelector`.
        pods: Option<Selector>,
        /// `namespaceSelector`.
        namespaces: Option<Selector>,
    },
    /// `ipBlock`.
    IpBlock {
        /// `cidr` (host bits cleared).
        cidr: IpNet,
        /// `except` (host bits cleared).
        except: Vec<IpNet>,
    },
}

/// `port` of a NetworkPolicy port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// A number.
    Number(u16),
    /// A container port name, resolved per destination pod.
    Name(String),
}

/// One entry of `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPort {
    /// `protocol` (TCP when omitted).
    pub protocol: Proto,
    /// `port`; `None`: every port of the protocol.
    pub port: Option<PortRef>,
    /// `endPort`: with a numeric `port`, the range `port..=endPort`.
    pub end_port: Option<u16>,
}

/// One ingress or egress rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    /// `from` / `to`; empty: every source / destination.
    pub peers: Vec<Peer>,
    /// `ports`; empty: every port and protocol.
    pub ports: Vec<PolicyPort>,
}

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.podSelector`.
    pub pod_selector: Selector,
    /// `spec.ingress`.
    pub ingress: Vec<PolicyRule>,
    /// `spec.egress`.
    pub egress: Vec<PolicyRule>,
    /// The policy isolates its pods for ingress (`policyTypes` contains Ingress, or is omitted).
    pub isolates_ingress: bool,
    /// The policy isolates its pods for egress (`policyTypes` contains Egress, or is omitted and there
    /// are egress rules).
    pub isolates_egress: bool,
}

impl NetworkPolicy {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Everything read from a set of manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// Namespaces by name (also those only named by a pod or policy).
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods by (namespace, name).
    pub pods: BTreeMap<(String, String), Pod>,
    /// NetworkPolicies by (namespace, name).
    pub policies: BTreeMap<(String, String), NetworkPolicy>,
    /// Kinds the caller chose to skip (see [`Cluster::skip_kind`]), with how many objects were skipped.
    pub skipped: BTreeMap<String, usize>,
    skip: BTreeSet<String>,
    declared: BTreeSet<String>,
    seen: BTreeMap<(String, String, String), Location>,
}

/// Pod spec fields dfw accepts without interpreting them.
const POD_SPEC_FIELDS: &[&str] = &[
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
    "topologySpreadConstraints",
    "setHostnameAsFQDN",
    "os",
    "hostUsers",
    "schedulingGates",
    "resourceClaims",
    "resources",
];

const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
];

const POD_STATUS_FIELDS: &[&str] = &[
    "phase",
    "conditions",
    "message",
    "reason",
    "nominatedNodeName",
    "hostIP",
    "hostIPs",
    "podIP",
    "podIPs",
    "startTime",
    "initContainerStatuses",
    "containerStatuses",
    "qosClass",
    "ephemeralContainerStatuses",
    "resize",
    "resourceClaimStatuses",
    "observedGeneration",
];

const METADATA_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

/// Policy kinds of other APIs: reported as not implemented, with what they are.
const OTHER_POLICY_KINDS: &[&str] = &[
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "ClusterNetworkPolicy",
    "GlobalNetworkPolicy",
    "CiliumNetworkPolicy",
    "CiliumClusterwideNetworkPolicy",
    "MultiNetworkPolicy",
];

const WORKLOAD_KINDS: &[&str] =
    &["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController"];

/// Reading context: which file and object a problem belongs to.
struct Cx<'a> {
    file: &'a str,
    object: String,
}

impl Cx<'_> {
    fn at(&self, mark: Mark) -> Location {
        Location { file: self.file.to_string(), line: mark.line, col: mark.col }
    }

    fn field(&self, mark: Mark, path: &str, message: impl Into<String>) -> Box<LoadError> {
        Box::new(LoadError::Field {
            at: self.at(mark),
            object: self.object.clone(),
            path: path.to_string(),
            message: message.into(),
        })
    }
}

/// Errors are boxed inside the reader: they are rare and large.
type R<T> = Result<T, Box<LoadError>>;

/// A mapping being read: its pairs and its path.
struct Map<'n> {
    pairs: &'n [(Node, Node)],
    path: String,
}

const EMPTY: &[(Node, Node)] = &[];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn map<'n>(cx: &Cx<'_>, node: &'n Node, path: &str) -> R<Map<'n>> {
    match &node.value {
        Value::Map(pairs) => Ok(Map { pairs, path: path.to_string() }),
        Value::Null => Ok(Map { pairs: EMPTY, path: path.to_string() }),
        _ => Err(cx.field(node.mark, path, format!("expected a mapping, found {}", node.type_name()))),
    }
}

impl<'n> Map<'n> {
    /// Every key is a string, appears once and is one of `allowed`.
    fn check(&self, cx: &Cx<'_>, allowed: &[&str]) -> R<()> {
        let mut seen = BTreeSet::new();
        for (k, _) in self.pairs {
            let Some(key) = k.as_str() else {
                return Err(cx.field(
                    k.mark,
                    &self.path,
                    format!("keys must be strings, found {}", k.type_name()),
                ));
            };
            if !allowed.contains(&key) {
                let hint =
                    close_match(key, allowed).map(|m| format!(" (did you mean '{m}'?)")).unwrap_or_default();
                return Err(cx.field(k.mark, &join(&self.path, key), format!("unknown field '{key}'{hint}")));
            }
            if !seen.insert(key) {
                return Err(cx.field(k.mark, &join(&self.path, key), format!("field '{key}' appears twice")));
            }
        }
        Ok(())
    }

    /// The value of `key`, unless absent or null.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.pairs
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
            .filter(|v| v.value != Value::Null)
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// The allowed name closest to `word` (edit distance ≤ 2), for "did you mean".
fn close_match<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.to_lowercase().chars().collect();
        let b: Vec<char> = b.to_lowercase().chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.iter().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, cb) in b.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    }
    allowed.iter().map(|a| (dist(word, a), *a)).filter(|(d, _)| *d <= 2).min().map(|(_, a)| a)
}

fn seq<'n>(cx: &Cx<'_>, node: &'n Node, path: &str) -> R<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        Value::Null => Ok(&[]),
        _ => Err(cx.field(node.mark, path, format!("expected a list, found {}", node.type_name()))),
    }
}

fn string(cx: &Cx<'_>, node: &Node, path: &str) -> R<String> {
    node.as_str()
        .map(str::to_string)
        .ok_or_else(|| cx.field(node.mark, path, format!("expected a string, found {}", node.type_name())))
}

fn int(cx: &Cx<'_>, node: &Node, path: &str) -> R<i64> {
    match &node.value {
        Value::Scalar { text, plain: true } => text
            .parse::<i64>()
            .map_err(|_| cx.field(node.mark, path, format!("expected an integer, found '{text}'"))),
        _ => Err(cx.field(node.mark, path, format!("expected an integer, found {}", node.type_name()))),
    }
}

fn boolean(cx: &Cx<'_>, node: &Node, path: &str) -> R<bool> {
    match &node.value {
        Value::Scalar { text, plain: true } if text == "true" => Ok(true),
        Value::Scalar { text, plain: true } if text == "false" => Ok(false),
        _ => Err(cx.field(node.mark, path, "expected true or false")),
    }
}

fn port_number(cx: &Cx<'_>, node: &Node, path: &str) -> R<u16> {
    let n = int(cx, node, path)?;
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| cx.field(node.mark, path, format!("port {n} is not in 1-65535")))
}

fn protocol(cx: &Cx<'_>, node: Option<&Node>, path: &str) -> R<Proto> {
    let Some(node) = node else { return Ok(Proto::Tcp) };
    let s = string(cx, node, path)?;
    Proto::parse(&s).ok_or_else(|| {
        cx.field(node.mark, path, format!("unsupported protocol '{s}' (expected TCP, UDP or SCTP)"))
    })
}

/// A DNS subdomain name as Kubernetes requires of object and node names: 1 to 253 lowercase letters,
/// digits, `-` and `.`.
fn is_dns_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn labels(cx: &Cx<'_>, node: Option<&Node>, path: &str) -> R<Labels> {
    let mut out = Labels::new();
    let Some(node) = node else { return Ok(out) };
    let m = map(cx, node, path)?;
    for (k, v) in m.pairs {
        let key = string(cx, k, path)?;
        let p = join(path, &key);
        let value = match &v.value {
            Value::Null => String::new(),
            _ => string(cx, v, &p)?,
        };
        if out.insert(key.clone(), value).is_some() {
            return Err(cx.field(k.mark, &p, format!("label '{key}' appears twice")));
        }
    }
    Ok(out)
}

fn selector(cx: &Cx<'_>, node: &Node, path: &str) -> R<Selector> {
    let m = map(cx, node, path)?;
    m.check(cx, &["matchLabels", "matchExpressions"])?;
    let mut sel =
        Selector { labels: labels(cx, m.get("matchLabels"), &m.path("matchLabels"))?, exprs: Vec::new() };
    if let Some(exprs) = m.get("matchExpressions") {
        let base = m.path("matchExpressions");
        for (i, e) in seq(cx, exprs, &base)?.iter().enumerate() {
            let p = format!("{base}[{i}]");
            let em = map(cx, e, &p)?;
            em.check(cx, &["key", "operator", "values"])?;
            let key = match em.get("key") {
                Some(k) => string(cx, k, &em.path("key"))?,
                None => return Err(cx.field(e.mark, &em.path("key"), "required")),
            };
            let Some(opn) = em.get("operator") else {
                return Err(cx.field(e.mark, &em.path("operator"), "required"));
            };
            let ops = string(cx, opn, &em.path("operator"))?;
            let op = match ops.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    let hint = close_match(other, &["In", "NotIn", "Exists", "DoesNotExist"])
                        .map(|m| format!("; did you mean '{m}'?"))
                        .unwrap_or_default();
                    return Err(cx.field(
                        opn.mark,
                        &em.path("operator"),
                        format!(
                            "invalid operator '{other}' (expected In, NotIn, Exists or DoesNotExist{hint})"
                        ),
                    ));
                }
            };
            let mut values = Vec::new();
            if let Some(vs) = em.get("values") {
                for (j, v) in seq(cx, vs, &em.path("values"))?.iter().enumerate() {
                    values.push(string(cx, v, &format!("{}[{j}]", em.path("values")))?);
                }
            }
            match op {
                Op::In | Op::NotIn if values.is_empty() => {
                    return Err(cx.field(
                        e.mark,
                        &em.path("values"),
                        format!("operator {ops} needs at least one value"),
                    ))
                }
                Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                    return Err(cx.field(
                        e.mark,
                        &em.path("values"),
                        format!("operator {ops} takes no values"),
                    ))
                }
                _ => {}
            }
            sel.exprs.push(Requirement { key, op, values });
        }
    }
    Ok(sel)
}

fn cidr(cx: &Cx<'_>, node: &Node, path: &str) -> R<IpNet> {
    let s = string(cx, node, path)?;
    let bad = || cx.field(node.mark, path, format!("'{s}' is not a CIDR (expected ADDRESS/LENGTH)"));
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    Ok(IpNet::new(addr, len).ok_or_else(bad)?.network())
}

fn peer(cx: &Cx<'_>, node: &Node, path: &str) -> R<Peer> {
    let m = map(cx, node, path)?;
    m.check(cx, &["podSelector", "namespaceSelector", "ipBlock"])?;
    let pods = m.get("podSelector").map(|n| selector(cx, n, &m.path("podSelector"))).transpose()?;
    let namespaces =
        m.get("namespaceSelector").map(|n| selector(cx, n, &m.path("namespaceSelector"))).transpose()?;
    if let Some(b) = m.get("ipBlock") {
        if pods.is_some() || namespaces.is_some() {
            return Err(cx.field(
                node.mark,
                path,
                "ipBlock cannot be combined with podSelector or namespaceSelector",
            ));
        }
        let bp = m.path("ipBlock");
        let bm = map(cx, b, &bp)?;
        bm.check(cx, &["cidr", "except"])?;
        let Some(c) = bm.get("cidr") else { return Err(cx.field(b.mark, &bm.path("cidr"), "required")) };
        let block = cidr(cx, c, &bm.path("cidr"))?;
        let mut except = Vec::new();
        if let Some(ex) = bm.get("except") {
            for (i, e) in seq(cx, ex, &bm.path("except"))?.iter().enumerate() {
                let p = format!("{}[{i}]", bm.path("except"));
                let net = cidr(cx, e, &p)?;
                if !(block.contains(net.addr) && net.len > block.len) {
                    return Err(cx.field(
                        e.mark,
                        &p,
                        format!("{net} is not a strict subset of cidr {block}"),
                    ));
                }
                except.push(net);
            }
        }
        return Ok(Peer::IpBlock { cidr: block, except });
    }
    if pods.is_none() && namespaces.is_none() {
        return Err(cx.field(node.mark, path, "a peer needs podSelector, namespaceSelector or ipBlock"));
    }
    Ok(Peer::Pods { pods, namespaces })
}

/// A valid IANA service name: at most 15 characters of a-z, 0-9 and '-', at least one letter, no
/// leading, trailing or double '-'.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn policy_port(cx: &Cx<'_>, node: &Node, path: &str) -> R<PolicyPort> {
    let m = map(cx, node, path)?;
    m.check(cx, &["protocol", "port", "endPort"])?;
    let protocol = protocol(cx, m.get("protocol"), &m.path("protocol"))?;
    let port = match m.get("port") {
        None => None,
        Some(n @ Node { value: Value::Scalar { plain: true, text }, .. }) if text.parse::<i64>().is_ok() => {
            Some(PortRef::Number(port_number(cx, n, &m.path("port"))?))
        }
        Some(n) => {
            let s = string(cx, n, &m.path("port"))?;
            if !is_port_name(&s) {
                return Err(cx.field(
                    n.mark,
                    &m.path("port"),
                    format!("'{s}' is neither a port number nor a valid port name"),
                ));
            }
            Some(PortRef::Name(s))
        }
    };
    let end_port = match m.get("endPort") {
        None => None,
        Some(n) => {
            let end = port_number(cx, n, &m.path("endPort"))?;
            match port {
                Some(PortRef::Number(p)) if end >= p => Some(end),
                Some(PortRef::Number(p)) => {
                    return Err(cx.field(
                        n.mark,
                        &m.path("endPort"),
                        format!("endPort {end} is below port {p}"),
                    ))
                }
                _ => {
                    return Err(cx.field(n.mark, &m.path("endPort"), "endPort needs a numeric port"));
                }
            }
        }
    };
    Ok(PolicyPort { protocol, port, end_port })
}

fn policy_rule(cx: &Cx<'_>, node: &Node, path: &str, peers_key: &str) -> R<PolicyRule> {
    let m = map(cx, node, path)?;
    m.check(cx, &[peers_key, "ports"])?;
    let mut rule = PolicyRule::default();
    if let Some(ps) = m.get(peers_key) {
        for (i, p) in seq(cx, ps, &m.path(peers_key))?.iter().enumerate() {
            rule.peers.push(peer(cx, p, &format!("{}[{i}]", m.path(peers_key)))?);
        }
    }
    if let Some(ps) = m.get("ports") {
        for (i, p) in seq(cx, ps, &m.path("ports"))?.iter().enumerate() {
            rule.ports.push(policy_port(cx, p, &format!("{}[{i}]", m.path("ports")))?);
        }
    }
    Ok(rule)
}

fn network_policy(cx: &Cx<'_>, top: &Map<'_>, namespace: &str, name: &str) -> R<NetworkPolicy> {
    let Some(spec_node) = top.get("spec") else {
        return Err(cx.field(Mark::default(), "spec", "required"));
    };
    let spec = map(cx, spec_node, "spec")?;
    spec.check(cx, &["podSelector", "ingress", "egress", "policyTypes"])?;
    let pod_selector = match spec.get("podSelector") {
        Some(n) => selector(cx, n, "spec.podSelector")?,
        // `podSelector: {}` reads as an empty mapping; a missing field is an error in the API.
        None if spec.pairs.iter().any(|(k, _)| k.as_str() == Some("podSelector")) => Selector::default(),
        None => {
            return Err(cx.field(spec_node.mark, "spec.podSelector", "required (use {} to select every pod)"))
        }
    };
    let mut ingress = Vec::new();
    if let Some(rs) = spec.get("ingress") {
        for (i, r) in seq(cx, rs, "spec.ingress")?.iter().enumerate() {
            ingress.push(policy_rule(cx, r, &format!("spec.ingress[{i}]"), "from")?);
        }
    }
    let mut egress = Vec::new();
    if let Some(rs) = spec.get("egress") {
        for (i, r) in seq(cx, rs, "spec.egress")?.iter().enumerate() {
            egress.push(policy_rule(cx, r, &format!("spec.egress[{i}]"), "to")?);
        }
    }
    let mut types = BTreeSet::new();
    if let Some(ts) = spec.get("policyTypes") {
        for (i, t) in seq(cx, ts, "spec.policyTypes")?.iter().enumerate() {
            let p = format!("spec.policyTypes[{i}]");
            let s = string(cx, t, &p)?;
            if s != "Ingress" && s != "Egress" {
                return Err(cx.field(
                    t.mark,
                    &p,
                    format!("invalid policy type '{s}' (expected Ingress or Egress)"),
                ));
            }
            types.insert(s);
        }
    }
    // Defaults (networking/v1 SetDefaults_NetworkPolicy): with no policyTypes, Ingress always and
    // Egress when there are egress rules.
    let (isolates_ingress, isolates_egress) = if types.is_empty() {
        (true, !egress.is_empty())
    } else {
        (types.contains("Ingress"), types.contains("Egress"))
    };
    Ok(NetworkPolicy {
        namespace: namespace.to_string(),
        name: name.to_string(),
        pod_selector,
        ingress,
        egress,
        isolates_ingress,
        isolates_egress,
    })
}

/// A string-to-string map (annotations); see [`labels`].
fn string_map(cx: &Cx<'_>, node: Option<&Node>, path: &str) -> R<Labels> {
    labels(cx, node, path)
}

fn pod(cx: &Cx<'_>, top: &Map<'_>, namespace: &str, name: &str, labels: Labels) -> R<Pod> {
    let mut pod = Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels,
        node: None,
        ips: Vec::new(),
        ports: Vec::new(),
        host_network: false,
        terminated: false,
        mac: None,
    };
    if let Some(meta) = top.get("metadata") {
        let annotations =
            string_map(cx, map(cx, meta, "metadata")?.get("annotations"), "metadata.annotations")?;
        if let Some(m) = annotations.get(VNIC_MAC_ANNOTATION) {
            let path = format!("metadata.annotations.{VNIC_MAC_ANNOTATION}");
            pod.mac = Some(m.parse::<rules::Mac>().map_err(|_| {
                cx.field(meta.mark, &path, format!("'{m}' is not a MAC address (aa:bb:cc:dd:ee:ff)"))
            })?);
        }
    }
    if let Some(s) = top.get("spec") {
        let spec = map(cx, s, "spec")?;
        spec.check(cx, POD_SPEC_FIELDS)?;
        if let Some(n) = spec.get("nodeName") {
            let node = string(cx, n, "spec.nodeName")?;
            // The node's name becomes part of the pod's filter name (`nic-NODE-NS-POD`).
            if !is_dns_name(&node) {
                return Err(cx.field(
                    n.mark,
                    "spec.nodeName",
                    format!("'{node}' is not a valid Kubernetes name"),
                ));
            }
            pod.node = Some(node);
        }
        pod.host_network =
            spec.get("hostNetwork").map(|n| boolean(cx, n, "spec.hostNetwork")).transpose()?.unwrap_or(false);
        if let Some(cs) = spec.get("containers") {
            for (i, c) in seq(cx, cs, "spec.containers")?.iter().enumerate() {
                let cp = format!("spec.containers[{i}]");
                let cm = map(cx, c, &cp)?;
                cm.check(cx, CONTAINER_FIELDS)?;
                let Some(ports) = cm.get("ports") else { continue };
                for (j, p) in seq(cx, ports, &cm.path("ports"))?.iter().enumerate() {
                    let pp = format!("{cp}.ports[{j}]");
                    let pm = map(cx, p, &pp)?;
                    pm.check(cx, &["name", "containerPort", "protocol", "hostPort", "hostIP"])?;
                    let Some(num) = pm.get("containerPort") else {
                        return Err(cx.field(p.mark, &pm.path("containerPort"), "required"));
                    };
                    let port = port_number(cx, num, &pm.path("containerPort"))?;
                    let protocol = protocol(cx, pm.get("protocol"), &pm.path("protocol"))?;
                    let name = pm.get("name").map(|n| string(cx, n, &pm.path("name"))).transpose()?;
                    if let (Some(n), Some(node)) = (&name, pm.get("name")) {
                        if !is_port_name(n) {
                            return Err(cx.field(
                                node.mark,
                                &pm.path("name"),
                                format!("'{n}' is not a valid port name"),
                            ));
                        }
                    }
                    pod.ports.push(ContainerPort { name, port, protocol });
                }
            }
        }
    }
    if let Some(s) = top.get("status") {
        let status = map(cx, s, "status")?;
        status.check(cx, POD_STATUS_FIELDS)?;
        if let Some(p) = status.get("phase") {
            let phase = string(cx, p, "status.phase")?;
            pod.terminated = phase == "Succeeded" || phase == "Failed";
        }
        let mut add = |node: &Node, path: &str| -> R<()> {
            let s = string(cx, node, path)?;
            let ip: IpAddr =
                s.parse().map_err(|_| cx.field(node.mark, path, format!("'{s}' is not an IP address")))?;
            if !pod.ips.contains(&ip) {
                pod.ips.push(ip);
            }
            Ok(())
        };
        if let Some(ip) = status.get("podIP") {
            add(ip, "status.podIP")?;
        }
        if let Some(ips) = status.get("podIPs") {
            for (i, item) in seq(cx, ips, "status.podIPs")?.iter().enumerate() {
                let p = format!("status.podIPs[{i}]");
                let m = map(cx, item, &p)?;
                m.check(cx, &["ip"])?;
                if let Some(ip) = m.get("ip") {
                    add(ip, &format!("{p}.ip"))?;
                }
            }
        }
    }
    Ok(pod)
}

fn check_metadata(cx: &Cx<'_>, meta: &Map<'_>) -> R<()> {
    meta.check(cx, METADATA_FIELDS)
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Skip objects of `kind` instead of reporting them as not implemented; they are counted in
    /// [`Cluster::skipped`].
    pub fn skip_kind(&mut self, kind: &str) {
        self.skip.insert(kind.to_string());
    }

    /// Reads every object of one YAML stream (multi-document, `List` kinds accepted). `file` names the
    /// text in errors. Objects without errors are kept; all errors are returned.
    pub fn load_str(&mut self, file: &str, text: &str) -> Result<(), LoadErrors> {
        let docs = yaml::parse_stream(text).map_err(|e| {
            LoadErrors(vec![LoadError::Yaml {
                at: Location { file: file.to_string(), line: e.mark.line, col: e.mark.col },
                message: e.message,
            }])
        })?;
        let mut errors = Vec::new();
        for doc in &docs {
            self.object(file, doc, &mut errors, 0);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// Reads a file, or every `.yaml`, `.yml` and `.json` file under a directory (sorted, recursive).
    pub fn load_path(&mut self, path: &std::path::Path) -> Result<(), LoadErrors> {
        let io = |e: std::io::Error| {
            LoadErrors(vec![LoadError::Io { file: path.display().to_string(), message: e.to_string() }])
        };
        if path.is_dir() {
            let mut entries: Vec<_> =
                std::fs::read_dir(path).map_err(io)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            let mut errors = Vec::new();
            for p in entries {
                let manifest = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if p.is_dir() || manifest {
                    if let Err(e) = self.load_path(&p) {
                        errors.extend(e.0);
                    }
                }
            }
            return if errors.is_empty() { Ok(()) } else { Err(LoadErrors(errors)) };
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        self.load_str(&path.display().to_string(), &text)
    }

    fn object(&mut self, file: &str, node: &Node, errors: &mut Vec<LoadError>, depth: usize) {
        let mut cx = Cx { file, object: "object".to_string() };
        let top = match map(&cx, node, "") {
            Ok(m) => m,
            Err(_) => {
                errors.push(LoadError::Field {
                    at: cx.at(node.mark),
                    object: "document".into(),
                    path: "(top)".into(),
                    message: format!("expected a Kubernetes object (a mapping), found {}", node.type_name()),
                });
                return;
            }
        };
        let text = |key: &str| top.get(key).and_then(|n| n.as_str()).map(str::to_string);
        let kind = text("kind").unwrap_or_default();
        let api_version = text("apiVersion").unwrap_or_default();
        let meta = top.get("metadata");
        let meta_text = |key: &str| -> Option<String> {
            let Value::Map(pairs) = &meta?.value else { return None };
            pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
        };
        let name = meta_text("name");
        // Pods and NetworkPolicies default to namespace `default`; other kinds (cluster-scoped policy
        // kinds among them) show a namespace only when they name one.
        let namespaced = matches!(kind.as_str(), "Pod" | "NetworkPolicy")
            || (kind != "Namespace" && meta_text("namespace").is_some());
        let namespace = meta_text("namespace").unwrap_or_else(|| "default".to_string());
        let shown = name.clone().unwrap_or_else(|| "<unnamed>".into());
        cx.object = match (kind.as_str(), namespaced) {
            ("", _) => format!("object {shown}"),
            (k, true) => format!("{k} {namespace}/{shown}"),
            (k, false) => format!("{k} {shown}"),
        };
        let result = (|| -> R<()> {
            if kind.is_empty() {
                return Err(cx.field(node.mark, "kind", "required"));
            }
            if kind == "List" || (kind.ends_with("List") && kind.len() > 4) {
                top.check(&cx, &["apiVersion", "kind", "metadata", "items"])?;
                if depth > 0 {
                    return Err(cx.field(node.mark, "kind", "a list inside a list"));
                }
                if let Some(items) = top.get("items") {
                    for item in seq(&cx, items, "items")? {
                        self.object(file, item, errors, depth + 1);
                    }
                }
                return Ok(());
            }
            if self.skip.contains(&kind) {
                *self.skipped.entry(kind.clone()).or_default() += 1;
                return Ok(());
            }
            let want = match kind.as_str() {
                "Namespace" | "Pod" => "v1",
                "NetworkPolicy" => "networking.k8s.io/v1",
                _ => "",
            };
            if want.is_empty() || api_version != want {
                let hint = if kind == "NetworkPolicy" {
                    format!("; dfw reads networking.k8s.io/v1 NetworkPolicy, not {api_version}")
                } else if OTHER_POLICY_KINDS.contains(&kind.as_str()) {
                    "; its rules would not be enforced (skip it explicitly to compile without it)".to_string()
                } else if WORKLOAD_KINDS.contains(&kind.as_str()) {
                    "; dfw needs the Pod objects, with status.podIP (kubectl get pods -A -o yaml)".to_string()
                } else if want.is_empty() {
                    String::new()
                } else {
                    format!("; expected apiVersion {want}")
                };
                return Err(Box::new(LoadError::Unsupported {
                    at: cx.at(node.mark),
                    object: cx.object.clone(),
                    kind: kind.clone(),
                    api_version: api_version.clone(),
                    hint,
                }));
            }
            top.check(&cx, &["apiVersion", "kind", "metadata", "spec", "status"])?;
            let Some(meta) = meta else { return Err(cx.field(node.mark, "metadata", "required")) };
            let mm = map(&cx, meta, "metadata")?;
            check_metadata(&cx, &mm)?;
            let Some(name) = name.clone() else {
                return Err(cx.field(meta.mark, "metadata.name", "required"));
            };
            for (key, value) in [("name", Some(&name)), ("namespace", Some(&namespace))] {
                let Some(v) = value else { continue };
                if key == "namespace" && !namespaced {
                    continue;
                }
                if !is_dns_name(v) {
                    return Err(cx.field(
                        meta.mark,
                        &format!("metadata.{key}"),
                        format!("'{v}' is not a valid Kubernetes name"),
                    ));
                }
            }
            let labels = labels(&cx, mm.get("labels"), "metadata.labels")?;
            let (ns_key, key) =
                if namespaced { (namespace.clone(), name.clone()) } else { (String::new(), name.clone()) };
            let at = cx.at(node.mark);
            if let Some(prev) = self.seen.insert((kind.clone(), ns_key, key), at.clone()) {
                return Err(Box::new(LoadError::Conflict {
                    at,
                    object: cx.object.clone(),
                    message: format!("defined twice (first at {prev})"),
                }));
            }
            match kind.as_str() {
                "Namespace" => {
                    if let Some(s) = top.get("spec") {
                        map(&cx, s, "spec")?.check(&cx, &["finalizers"])?;
                    }
                    if let Some(s) = top.get("status") {
                        map(&cx, s, "status")?.check(&cx, &["phase", "conditions"])?;
                    }
                    let mut labels = labels;
                    labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
                    self.declared.insert(name.clone());
                    self.namespaces.insert(name.clone(), Namespace { name, labels });
                }
                "Pod" => {
                    let p = pod(&cx, &top, &namespace, &name, labels)?;
                    self.implicit_namespace(&namespace);
                    self.pods.insert((namespace, name), p);
                }
                _ => {
                    if let Some(s) = top.get("status") {
                        map(&cx, s, "status")?.check(&cx, &["conditions"])?;
                    }
                    let p = network_policy(&cx, &top, &namespace, &name)?;
                    self.implicit_namespace(&namespace);
                    self.policies.insert((namespace, name), p);
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            errors.push(*e);
        }
    }

    /// A namespace only named by a pod or policy exists with just its name label.
    fn implicit_namespace(&mut self, name: &str) {
        if !self.namespaces.contains_key(name) {
            let labels = Labels::from([(NAMESPACE_NAME_LABEL.to_string(), name.to_string())]);
            self.namespaces.insert(name.to_string(), Namespace { name: name.to_string(), labels });
        }
    }

    /// Pods that share an address (the second one of each pair), as errors: one address is one vNIC.
    pub fn address_conflicts(&self) -> Vec<String> {
        let mut owner: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut out = Vec::new();
        for p in self.pods.values().filter(|p| p.is_networked()) {
            for ip in &p.ips {
                if let Some(prev) = owner.insert(*ip, p.key()) {
                    out.push(format!("pods {prev} and {} both have address {ip}", p.key()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Cluster, LoadErrors> {
        let mut c = Cluster::new();
        c.load_str("t.yaml", text).map(|_| c)
    }

    fn one_error(text: &str) -> String {
        let e = load(text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        e.0[0].to_string()
    }

    const POLICY_HEAD: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: x\nspec:\n";

    #[test]
    fn reads_objects_lists_and_defaults() {
        let c = load(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: x, labels: {team: a}}\n\
             - apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: x, labels: {pod: a}}\n  spec:\n    nodeName: n1\n    containers:\n    - name: c\n      image: i\n      ports:\n      - {name: serve-80-tcp, containerPort: 80}\n      - {name: serve-80-udp, containerPort: 80, protocol: UDP}\n  status: {phase: Running, podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}\n\
             ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  egress:\n  - {}\n",
        )
        .unwrap();
        let ns = &c.namespaces["x"];
        assert_eq!(ns.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str), Some("x"));
        let pod = &c.pods[&("x".to_string(), "a".to_string())];
        assert_eq!(pod.ips.len(), 2);
        assert_eq!(pod.named_port("serve-80-udp", Proto::Udp), Some(80));
        assert_eq!(pod.named_port("serve-80-udp", Proto::Tcp), None);
        let p = &c.policies[&("x".to_string(), "p".to_string())];
        assert!(
            p.isolates_ingress && p.isolates_egress,
            "defaults: Ingress always, Egress with egress rules"
        );
    }

    #[test]
    fn a_node_name_must_be_a_kubernetes_name() {
        // It becomes part of the pod's filter name; the fuzzer found a quote that made the printed
        // policy unreadable.
        let pod = |node: &str| {
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x}}\nspec: {{nodeName: \"{node}\"}}\nstatus: {{podIP: 10.0.0.1}}\n")
        };
        for bad in ["nod'e2", "Node1", "", "a b", "n;1"] {
            let e = one_error(&pod(bad));
            assert!(e.contains("spec.nodeName") && e.contains("not a valid Kubernetes name"), "{bad:?}: {e}");
        }
        assert!(load(&pod("node-2.example")).is_ok());
    }

    #[test]
    fn egress_default_needs_egress_rules() {
        let c = load(&format!("{POLICY_HEAD}  podSelector: {{}}\n  egress: []\n")).unwrap();
        let p = c.policies.values().next().unwrap();
        assert!(p.isolates_ingress && !p.isolates_egress);
        let c =
            load(&format!("{POLICY_HEAD}  podSelector: {{}}\n  policyTypes: [Egress]\n  ingress: [{{}}]\n"))
                .unwrap();
        let p = c.policies.values().next().unwrap();
        assert!(!p.isolates_ingress && p.isolates_egress);
    }

    #[test]
    fn invalid_operator_names_object_and_path() {
        let e = one_error(&format!(
            "{POLICY_HEAD}  podSelector: {{}}\n  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - {{key: pod, operator: Inn, values: [a]}}\n"
        ));
        assert!(e.starts_with("t.yaml:12:32:"), "{e}");
        assert!(
            e.contains("NetworkPolicy x/p: spec.ingress[0].from[0].podSelector.matchExpressions[0].operator"),
            "{e}"
        );
        assert!(e.contains("did you mean 'In'"), "{e}");
    }

    #[test]
    fn unknown_field_and_kinds() {
        let e = one_error(&format!("{POLICY_HEAD}  podSelector: {{}}\n  ingres: []\n"));
        assert!(
            e.contains("NetworkPolicy x/p: spec.ingres: unknown field 'ingres' (did you mean 'ingress'?)"),
            "{e}"
        );
        let e = one_error("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\n");
        assert!(e.contains("AdminNetworkPolicy anp: kind AdminNetworkPolicy"), "{e}");
        assert!(e.contains("not implemented"), "{e}");
        let e = one_error("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n");
        assert!(e.contains("status.podIP"), "{e}");
        let e = one_error("apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: d}\n");
        assert!(e.contains("not extensions/v1beta1"), "{e}");
        let mut c = Cluster::new();
        c.skip_kind("Deployment");
        c.load_str("t", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap();
        assert_eq!(c.skipped.get("Deployment"), Some(&1));
    }

    #[test]
    fn every_field_error_is_reported_with_its_path() {
        for (body, path) in [
            ("  podSelector: {}\n  policyTypes: [Ingres]\n", "spec.policyTypes[0]"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: 80, protocol: ICMP}]}]\n", "spec.ingress[0].ports[0].protocol"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: 0}]}]\n", "spec.ingress[0].ports[0].port"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: 'Not_A_Name'}]}]\n", "spec.ingress[0].ports[0].port"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 90}]}]\n", "spec.ingress[0].ports[0].endPort"),
            ("  podSelector: {}\n  ingress: [{ports: [{port: 91, endPort: 90}]}]\n", "spec.ingress[0].ports[0].endPort"),
            ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]\n", "spec.egress[0].to[0].ipBlock.except[0]"),
            ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0/8}}]}]\n", "spec.egress[0].to[0].ipBlock.cidr"),
            ("  podSelector: {}\n  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n", "spec.egress[0].to[0]"),
            ("  podSelector: {}\n  egress: [{to: [{}]}]\n", "spec.egress[0].to[0]"),
            ("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}\n", "spec.podSelector.matchExpressions[0].values"),
            ("  podSelector: {matchExpressions: [{key: a, operator: In}]}\n", "spec.podSelector.matchExpressions[0].values"),
            ("  podSelector: {matchLabels: [a]}\n", "spec.podSelector.matchLabels"),
            ("  ingress: []\n", "spec.podSelector"),
        ] {
            let e = one_error(&format!("{POLICY_HEAD}{body}"));
            assert!(e.contains(&format!("NetworkPolicy x/p: {path}:")), "{body}: {e}");
        }
    }

    #[test]
    fn malformed_yaml_and_duplicates() {
        let e = one_error("kind: Pod\n  metadata: x\n bad");
        assert!(e.starts_with("t.yaml:") && e.contains("malformed YAML"), "{e}");
        let e = one_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n");
        assert!(e.contains("Namespace x: defined twice (first at t.yaml:1:1)"), "{e}");
        let e = one_error(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, imagee: x}]}\n",
        );
        assert!(e.contains("Pod default/a: spec.containers[0].imagee: unknown field"), "{e}");
        let e = one_error("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nstatus: {podIP: 10.0.0.300}\n");
        assert!(e.contains("Pod default/a: status.podIP: '10.0.0.300' is not an IP address"), "{e}");
        let e = one_error("- 1\n- 2\n");
        assert!(e.contains("expected a Kubernetes object"), "{e}");
    }

    #[test]
    fn selectors_follow_kubernetes() {
        let l = Labels::from([("pod".to_string(), "a".to_string())]);
        let req = |op, values: &[&str]| Selector {
            labels: Labels::new(),
            exprs: vec![Requirement {
                key: "pod".into(),
                op,
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
        };
        let other = |op, values: &[&str]| Selector {
            labels: Labels::new(),
            exprs: vec![Requirement {
                key: "x".into(),
                op,
                values: values.iter().map(|s| s.to_string()).collect(),
            }],
        };
        assert!(req(Op::In, &["a", "b"]).matches(&l));
        assert!(!req(Op::In, &["b"]).matches(&l));
        assert!(!req(Op::NotIn, &["a"]).matches(&l));
        assert!(other(Op::NotIn, &["a"]).matches(&l), "NotIn matches a missing key");
        assert!(req(Op::Exists, &[]).matches(&l) && !other(Op::Exists, &[]).matches(&l));
        assert!(!req(Op::DoesNotExist, &[]).matches(&l) && other(Op::DoesNotExist, &[]).matches(&l));
        assert!(Selector::default().matches(&l));
    }
}
