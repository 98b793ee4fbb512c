//! `netpol` plays the NSX container plug-in's part: it turns Kubernetes manifests (Namespaces, Pods,
//! `networking.k8s.io/v1` NetworkPolicies) into a dfw policy file — one filter per pod vNIC and the
//! address sets its rules use — with Kubernetes' NetworkPolicy semantics, and it turns a relabel into the
//! address-set member changes that put it in force (no rule changes, as in the seed article).
//!
//! It builds on `rules` (the policy model it emits) and knows nothing of the engine: applying a
//! [`Diff`] to a running dataplane is the caller's (`dfw netpol apply`).
//!
//! ```
//! let mut cluster = netpol::Cluster::new();
//! cluster.load_str("lab.yaml", r#"
//! apiVersion: v1
//! kind: Pod
//! metadata: {name: nginx, namespace: default, labels: {app: nginx}}
//! spec: {nodeName: node02}
//! status: {podIP: 172.15.0.4}
//! ---
//! apiVersion: networking.k8s.io/v1
//! kind: NetworkPolicy
//! metadata: {name: access-nginx, namespace: default}
//! spec:
//!   podSelector: {matchLabels: {app: nginx}}
//!   ingress: [{from: [{podSelector: {matchLabels: {app: foo}}}]}]
//! "#).unwrap();
//! let policy = netpol::compile(&cluster, "k8scluster").unwrap();
//! assert_eq!(policy.filters[0].name, "nic-node02-default-nginx");
//! assert!(policy.addrsets.iter().any(|s| s.id == "tgt-k8scluster-default-access-nginx"));
//! assert!(policy.addrsets.iter().any(|s| s.id == "src-k8scluster-default-access-nginx-all"));
//! ```
//!
//! See `docs/netpol.md` for the naming scheme and the deliberate gaps.

pub mod compile;
pub mod diff;
pub mod error;
pub mod k8s;
pub mod synth;
pub mod yaml;

pub use compile::{compile, pod_mac, Compiled};
pub use diff::{diff, Diff, SetDelta};
pub use error::{CompileError, LoadError, LoadErrors, Location, UpdateError};
pub use k8s::{Cluster, Labels, Namespace, NetworkPolicy, Pod};
