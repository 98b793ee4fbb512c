//! The incremental compiler against the plain one: after any sequence of pod and namespace relabels,
//! the diff `Compiled::relabel_*` returns is exactly `diff(compile(before), compile(after))`, it holds
//! set-member changes only, and the incrementally maintained policy equals a fresh compile.

mod common;

use netpol::{Cluster, Compiled, Labels};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn relabels_match_recompiling_from_scratch() {
    let mut cluster = Cluster::new();
    cluster.load_str("synth", &netpol::synth::cluster_yaml(4, 12, 6)).unwrap();
    let mut compiled = Compiled::new(&cluster, "c").unwrap();
    let mut current = netpol::compile(&cluster, "c").unwrap();
    assert!(compiled.policy() == current);
    // A deterministic walk over relabels that move pods in and out of targets and peers.
    let mut nonempty = 0;
    for step in 0..40usize {
        let d = if step % 4 == 3 {
            let ns = format!("ns{}", step % 4);
            let env = ["prod", "staging", "dev"][step % 3];
            let l = labels(&[("team", &format!("team{}", step % 7)), ("env", env)]);
            let mut expected = l.clone();
            expected.insert(netpol::k8s::NAMESPACE_NAME_LABEL.into(), ns.clone());
            cluster.namespaces.get_mut(&ns).unwrap().labels = expected;
            compiled.relabel_namespace(&ns, l).unwrap()
        } else {
            let (ns, pod) = (format!("ns{}", step % 4), format!("pod{}", (step * 5) % 12));
            let l =
                labels(&[("app", &format!("app{}", step % 10)), ("tier", ["web", "db", "cache"][step % 3])]);
            cluster.pods.get_mut(&(ns.clone(), pod.clone())).unwrap().labels = l.clone();
            compiled.relabel_pod(&ns, &pod, l).unwrap()
        };
        let next = netpol::compile(&cluster, "c").unwrap();
        let reference = netpol::diff(&current, &next);
        assert_eq!(d, reference, "step {step}");
        assert!(d.is_members_only(), "step {step}: {d}");
        assert!(compiled.policy() == next, "step {step}: incremental state drifted");
        nonempty += usize::from(!d.is_empty());
        current = next;
    }
    assert!(nonempty > 10, "the walk should change memberships ({nonempty})");
}

/// One relabel of [`random_relabels_match_recompiling_from_scratch`]: pod `pod` of namespace `ns`,
/// or the namespace itself, gets labels drawn from the values the synthetic policies select on (or
/// values none selects, or no labels at all).
#[derive(Debug, Clone)]
struct Relabel {
    ns: usize,
    pod: Option<usize>,
    labels: Vec<(usize, usize)>,
}

fn relabel() -> impl proptest::strategy::Strategy<Value = Relabel> {
    use proptest::prelude::*;
    (0..4usize, proptest::option::of(0..12usize), proptest::collection::vec((0..4usize, 0..12usize), 0..3))
        .prop_map(|(ns, pod, labels)| Relabel { ns, pod, labels })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// [`relabels_match_recompiling_from_scratch`] on random sequences of pod and namespace relabels.
    #[test]
    fn random_relabels_match_recompiling_from_scratch(steps in proptest::collection::vec(relabel(), 1..25)) {
        let mut cluster = Cluster::new();
        cluster.load_str("synth", &netpol::synth::cluster_yaml(4, 12, 6)).unwrap();
        let mut compiled = Compiled::new(&cluster, "c").unwrap();
        let mut current = netpol::compile(&cluster, "c").unwrap();
        for (i, step) in steps.iter().enumerate() {
            let pod_keys = ["app", "tier", "role", "app"];
            let ns_keys = ["team", "env", "zone", "team"];
            let values = |keys: [&str; 4], pick: &[(usize, usize)]| -> Labels {
                pick.iter()
                    .map(|&(k, v)| {
                        let value = match keys[k] {
                            "app" => format!("app{v}"),
                            "tier" => ["web", "db", "cache", "none"][v % 4].to_string(),
                            "team" => format!("team{v}"),
                            "env" => ["prod", "staging", "dev", "qa"][v % 4].to_string(),
                            other => format!("{other}{v}"),
                        };
                        (keys[k].to_string(), value)
                    })
                    .collect()
            };
            let ns = format!("ns{}", step.ns);
            let d = match step.pod {
                Some(p) => {
                    let pod = format!("pod{p}");
                    let l = values(pod_keys, &step.labels);
                    cluster.pods.get_mut(&(ns.clone(), pod.clone())).unwrap().labels = l.clone();
                    compiled.relabel_pod(&ns, &pod, l).unwrap()
                }
                None => {
                    let l = values(ns_keys, &step.labels);
                    let mut expected = l.clone();
                    expected.insert(netpol::k8s::NAMESPACE_NAME_LABEL.into(), ns.clone());
                    cluster.namespaces.get_mut(&ns).unwrap().labels = expected;
                    compiled.relabel_namespace(&ns, l).unwrap()
                }
            };
            let next = netpol::compile(&cluster, "c").unwrap();
            proptest::prop_assert_eq!(&d, &netpol::diff(&current, &next), "step {}", i);
            proptest::prop_assert!(d.is_members_only(), "step {}: {}", i, d);
            proptest::prop_assert!(compiled.policy() == next, "step {}: incremental state drifted", i);
            current = next;
        }
    }
}
