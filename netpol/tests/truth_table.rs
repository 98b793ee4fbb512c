//! Truth tables transcribed from the upstream Kubernetes network-policy e2e tests
//! (`test/e2e/network/netpol/network_policy.go`): the same policies over the same model — namespaces x,
//! y, z; pods a, b, c; ports 80 and 81 — decided here by compiling the manifests with `netpol` and
//! passing a first packet out of the source pod's filter and in to the destination's with the real
//! engine. Expectations are upstream's, written for the full nine-pod model; loopback is ignored as
//! upstream does. Test names follow upstream's `It(...)` descriptions.

mod common;

use common::{check, np, to_changes, world, Lab, Reach, P};

fn lab(policies: &[String]) -> Lab {
    Lab::new(&format!("{}{}", world(&[], &[]), policies.concat()))
}

const NS_NAME: &str = "kubernetes.io/metadata.name";

#[test]
fn should_support_a_default_deny_ingress_policy_tcp_udp_sctp() {
    // policyTypes omitted on purpose: Ingress is the default.
    let mut l = lab(&[np("x", "deny-ingress", "  podSelector: {}\n")]);
    let want = Reach::all(true).set("*/*", "x/*", false);
    for proto in [P::Tcp, P::Udp, P::Sctp] {
        check(&mut l, "default-deny-ingress", 80, proto, &want);
    }
}

#[test]
fn should_support_a_default_deny_all_policy() {
    let mut l = lab(&[np("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n")]);
    let want = Reach::all(true).set("*/*", "x/*", false).set("x/*", "*/*", false);
    check(&mut l, "default-deny-all", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_podselector() {
    let mut l = lab(&[np(
        "x",
        "x-a-allows-x-b",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
    )]);
    let want = Reach::all(true).set("*/*", "x/a", false).set("x/b", "x/a", true);
    check(&mut l, "pod selector", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_to_allow_ingress_traffic_for_a_target() {
    let mut l = lab(&[
        np("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
        np(
            "x",
            "allow-all-to-a",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {}\n      namespaceSelector: {}\n",
        ),
    ]);
    let want = Reach::all(true).set("*/*", "x/*", false).set("*/*", "x/a", true);
    check(&mut l, "allow ingress for a target", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces() {
    let mut l = lab(&[np(
        "x",
        "allow-from-another-ns",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {}}\n",
    )]);
    check(&mut l, "all namespaces", 80, P::Tcp, &Reach::all(true));
}

#[test]
fn should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespaceselector() {
    // The older upstream model labels namespaces `ns: <name>`; the model here carries both labels.
    let mut l = lab(&[np(
        "x",
        "allow-client-a-via-ns-selector",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
    )]);
    let want = Reach::all(true).set("x/*", "x/a", false).set("z/*", "x/a", false);
    check(&mut l, "namespace selector", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_based_on_podselector_with_matchexpressions() {
    let mut l = lab(&[np(
        "x",
        "x-a-allows-x-b",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector:\n        matchExpressions:\n        - {key: pod, operator: In, values: [b]}\n",
    )]);
    let want = Reach::all(true).set("*/*", "x/a", false).set("x/b", "x/a", true);
    check(&mut l, "pod selector expressions", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_based_on_namespaceselector_with_matchexpressions() {
    let mut l = lab(&[np(
        "x",
        "allow-ns-y-match-selector",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n        - {{key: {NS_NAME}, operator: In, values: [y]}}\n"),
    )]);
    let want = Reach::all(true).set("x/*", "x/a", false).set("z/*", "x/a", false);
    check(&mut l, "namespace selector expressions", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_based_on_podselector_or_namespaceselector() {
    let mut l = lab(&[np(
        "x",
        "allow-ns-y-match-selector",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{{key: {NS_NAME}, operator: NotIn, values: [x]}}]\n    - podSelector: {{matchLabels: {{pod: b}}}}\n"),
    )]);
    let want = Reach::all(true).set("x/c", "x/a", false);
    check(&mut l, "pod OR namespace selector", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_based_on_podselector_and_namespaceselector() {
    let mut l = lab(&[np(
        "x",
        "allow-ns-y-podselector-and-nsselector",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{{key: {NS_NAME}, operator: NotIn, values: [x]}}]\n      podSelector: {{matchLabels: {{pod: b}}}}\n"),
    )]);
    let want = Reach::all(true).set("*/*", "x/a", false).set("y/b", "x/a", true).set("z/b", "x/a", true);
    check(&mut l, "pod AND namespace selector", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_based_on_multiple_podselectors_and_namespaceselectors() {
    let mut l = lab(&[np(
        "x",
        "allow-ns-y-z-pod-b-c",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{{key: {NS_NAME}, operator: NotIn, values: [x]}}]\n      podSelector:\n        matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]\n"),
    )]);
    let want = Reach::all(true).set("x/*", "x/a", false).set("y/a", "x/a", false).set("z/a", "x/a", false);
    check(&mut l, "multiple selectors", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_tcp_udp_sctp() {
    let mut l = lab(&[np(
        "x",
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}\n      podSelector: {{matchLabels: {{pod: a}}}}\n"),
    )]);
    let want = Reach::all(true).set("*/*", "x/a", false).set("y/a", "x/a", true);
    for proto in [P::Tcp, P::Udp, P::Sctp] {
        check(&mut l, "pod in a different namespace", 80, proto, &want);
    }
}

fn allow_81_from_y(proto: &str, name: &str) -> String {
    np(
        "x",
        name,
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}\n    ports:\n    - {{port: 81, protocol: {proto}}}\n"),
    )
}

#[test]
fn should_enforce_policy_based_on_ports_tcp_udp_sctp() {
    for (proto, p) in [("TCP", P::Tcp), ("UDP", P::Udp), ("SCTP", P::Sctp)] {
        let mut l = lab(&[allow_81_from_y(proto, "allow-ingress-on-port-81-ns-x")]);
        let want = Reach::all(true).set("x/*", "x/a", false).set("z/*", "x/a", false);
        check(&mut l, "ports", 81, p, &want);
        // The other port and the other protocols are closed to everyone.
        check(&mut l, "ports (80)", 80, p, &Reach::all(true).set("*/*", "x/a", false));
    }
}

#[test]
fn should_enforce_multiple_stacked_policies_with_overlapping_podselectors() {
    let allow = Reach::all(true).set("x/*", "x/a", false).set("z/*", "x/a", false);
    let deny = Reach::all(true).set("*/*", "x/a", false);
    let first = allow_81_from_y("TCP", "allow-client-a-via-ns-selector");
    let mut l = lab(std::slice::from_ref(&first));
    check(&mut l, "stacked, one policy", 81, P::Tcp, &allow);
    check(&mut l, "stacked, one policy", 80, P::Tcp, &deny);
    let second = np(
        "x",
        "allow-client-a-via-ns-selector-80",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}\n    ports: [{{port: 80, protocol: TCP}}]\n"),
    );
    let mut l = lab(&[first, second]);
    check(&mut l, "stacked, two policies", 80, P::Tcp, &allow);
    check(&mut l, "stacked, two policies", 81, P::Tcp, &allow);
}

#[test]
fn should_support_allow_all_policy() {
    let mut l = lab(&[np("x", "allow-all", "  podSelector: {}\n  ingress:\n  - {}\n")]);
    check(&mut l, "allow-all", 80, P::Tcp, &Reach::all(true));
    check(&mut l, "allow-all", 81, P::Tcp, &Reach::all(true));
}

#[test]
fn should_allow_ingress_access_on_one_named_port() {
    let mut l =
        lab(&[np("x", "allow-all", "  podSelector: {}\n  ingress:\n  - ports: [{port: serve-81-tcp}]\n")]);
    check(&mut l, "named port", 81, P::Tcp, &Reach::all(true));
    check(&mut l, "named port", 80, P::Tcp, &Reach::all(true).set("*/*", "x/*", false));
    // The name is for TCP: UDP 81 is not allowed by it.
    check(&mut l, "named port", 81, P::Udp, &Reach::all(true).set("*/*", "x/*", false));
}

#[test]
fn should_allow_ingress_access_from_namespace_on_one_named_port() {
    let mut l = lab(&[np(
        "x",
        "allow-client-a-via-ns-selector-80",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}\n    ports: [{{port: serve-80-tcp, protocol: TCP}}]\n"),
    )]);
    check(
        &mut l,
        "named port from namespace",
        80,
        P::Tcp,
        &Reach::all(true).set("x/*", "x/a", false).set("z/*", "x/a", false),
    );
    check(&mut l, "named port from namespace", 81, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));
}

#[test]
fn should_allow_egress_access_on_one_named_port() {
    let mut l = lab(&[np(
        "x",
        "allow-egress",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: serve-80-tcp}]\n",
    )]);
    check(&mut l, "egress named port", 80, P::Tcp, &Reach::all(true));
    check(&mut l, "egress named port", 81, P::Tcp, &Reach::all(true).set("x/*", "*/*", false));
}

#[test]
fn should_enforce_updated_policy() {
    let allow = np("x", "allow-all-mutate-to-deny-all", "  podSelector: {}\n  ingress:\n  - {}\n");
    let deny = np("x", "allow-all-mutate-to-deny-all", "  podSelector: {}\n  ingress: []\n");
    let before = netpol::compile(&common::cluster(&format!("{}{allow}", world(&[], &[]))), "k8s").unwrap();
    let after = netpol::compile(&common::cluster(&format!("{}{deny}", world(&[], &[]))), "k8s").unwrap();
    let mut l = Lab::with_policy(before.clone());
    check(&mut l, "updated policy (before)", 81, P::Tcp, &Reach::all(true));
    // A policy change is a rule change: the diff says so and the whole policy goes in.
    let d = netpol::diff(&before, &after);
    assert!(!d.is_members_only() && !d.filters_changed.is_empty(), "{d}");
    l.engine.commit(&to_changes(&d, &after), 0).unwrap();
    check(&mut l, "updated policy (after)", 81, P::Tcp, &Reach::all(true).set("*/*", "x/*", false));
}

#[test]
fn should_allow_ingress_access_from_updated_namespace() {
    let policy = np(
        "x",
        "allow-client-a-via-ns-selector",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns2: updated}}\n",
    );
    let base = common::cluster(&format!("{}{policy}", world(&[], &[])));
    let mut compiled = netpol::Compiled::new(&base, "k8s").unwrap();
    let before = compiled.policy();
    let mut l = Lab::with_policy(before.clone());
    check(&mut l, "updated namespace (before)", 80, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));

    let labels = netpol::Labels::from([
        ("ns".to_string(), "y".to_string()),
        ("ns2".to_string(), "updated".to_string()),
    ]);
    let d = compiled.relabel_namespace("y", labels).unwrap();
    // Only the source set changed, by the three pods of y; the same as recompiling the relabelled world.
    assert!(d.is_members_only() && d.member_changes() == 3, "{d}");
    let relabelled = common::cluster(&format!("{}{policy}", world(&[("y", "ns2", "updated")], &[])));
    let after = netpol::compile(&relabelled, "k8s").unwrap();
    assert_eq!(netpol::diff(&before, &after), d);
    assert_eq!(compiled.policy(), after);
    l.engine.commit(&to_changes(&d, &after), 0).unwrap();
    check(
        &mut l,
        "updated namespace (after)",
        80,
        P::Tcp,
        &Reach::all(true).set("*/*", "x/a", false).set("y/*", "x/a", true),
    );
}

#[test]
fn should_allow_ingress_access_from_updated_pod() {
    let policy = np(
        "x",
        "allow-client-a-via-pod-selector",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b, pod2: updated}}\n",
    );
    let mut compiled =
        netpol::Compiled::new(&common::cluster(&format!("{}{policy}", world(&[], &[]))), "k8s").unwrap();
    let mut l = Lab::with_policy(compiled.policy());
    check(&mut l, "updated pod (before)", 80, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));
    let labels = netpol::Labels::from([
        ("pod".to_string(), "b".to_string()),
        ("pod2".to_string(), "updated".to_string()),
    ]);
    let d = compiled.relabel_pod("x", "b", labels).unwrap();
    assert!(d.is_members_only() && d.member_changes() == 1, "{d}");
    l.engine.commit(&to_changes(&d, &compiled.policy()), 0).unwrap();
    check(
        &mut l,
        "updated pod (after)",
        80,
        P::Tcp,
        &Reach::all(true).set("*/*", "x/a", false).set("x/b", "x/a", true),
    );
}

#[test]
fn should_deny_ingress_from_pods_on_other_namespaces() {
    let mut l = lab(&[np(
        "x",
        "deny-empty-policy",
        "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {}}\n",
    )]);
    check(
        &mut l,
        "other namespaces",
        80,
        P::Tcp,
        &Reach::all(true).set("y/*", "x/*", false).set("z/*", "x/*", false),
    );
}

#[test]
fn should_deny_ingress_access_to_updated_pod() {
    let policy = np(
        "x",
        "deny-ingress-via-label-selector",
        "  podSelector: {matchLabels: {target: isolated}}\n  policyTypes: [Ingress]\n",
    );
    let mut compiled =
        netpol::Compiled::new(&common::cluster(&format!("{}{policy}", world(&[], &[]))), "k8s").unwrap();
    let mut l = Lab::with_policy(compiled.policy());
    check(&mut l, "isolate updated pod (before)", 80, P::Tcp, &Reach::all(true));
    let labels = netpol::Labels::from([
        ("pod".to_string(), "a".to_string()),
        ("target".to_string(), "isolated".to_string()),
    ]);
    let d = compiled.relabel_pod("x", "a", labels).unwrap();
    // The pod joins the policy's target set: isolation is a set change too.
    assert!(d.is_members_only() && d.members.keys().all(|k| k.starts_with("tgt-")), "{d}");
    l.engine.commit(&to_changes(&d, &compiled.policy()), 0).unwrap();
    check(&mut l, "isolate updated pod (after)", 80, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));
}

#[test]
fn should_deny_egress_from_pods_based_on_podselector() {
    let mut l = lab(&[np(
        "x",
        "deny-egress-pod-a",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n",
    )]);
    check(&mut l, "deny egress pod", 80, P::Tcp, &Reach::all(true).set("x/a", "*/*", false));
}

#[test]
fn should_deny_egress_from_all_pods_in_a_namespace() {
    let mut l = lab(&[np("x", "deny-egress-ns-x", "  podSelector: {}\n  policyTypes: [Egress]\n")]);
    check(&mut l, "deny egress namespace", 80, P::Tcp, &Reach::all(true).set("x/*", "*/*", false));
}

#[test]
fn should_work_with_ingress_egress_specified_together() {
    let mut l = lab(&[np(
        "x",
        "allow-client-a-via-pod-selector",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress, Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n  egress:\n  - ports: [{port: 80}]\n",
    )]);
    check(
        &mut l,
        "ingress+egress",
        80,
        P::Tcp,
        &Reach::all(true).set("*/*", "x/a", false).set("x/b", "x/a", true),
    );
    let want81 = Reach::all(true).set("*/*", "x/a", false).set("x/a", "*/*", false).set("x/b", "x/a", true);
    check(&mut l, "ingress+egress", 81, P::Tcp, &want81);
}

#[test]
fn should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic(
) {
    let from_xa = format!("  - from:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: x}}}}\n      podSelector: {{matchLabels: {{pod: a}}}}\n");
    let mut l = lab(&[
        np(
            "x",
            "allow-to-ns-y-pod-a",
            &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}\n      podSelector: {{matchLabels: {{pod: a}}}}\n"),
        ),
        np("y", "allow-from-xa-on-ya-match-selector", &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n{from_xa}")),
        np("y", "allow-from-xa-on-yb-match-selector", &format!("  podSelector: {{matchLabels: {{pod: b}}}}\n  ingress:\n{from_xa}")),
    ]);
    let want = Reach::all(true)
        .set("x/a", "*/*", false)
        .set("*/*", "y/a", false)
        .set("x/a", "y/a", true)
        .set("*/*", "y/b", false);
    check(&mut l, "client-side egress deny", 80, P::Tcp, &want);
}

#[test]
fn should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace() {
    let mut l = lab(&[np(
        "x",
        "allow-to-ns-y-pod-a",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}\n      podSelector: {{matchLabels: {{pod: a}}}}\n"),
    )]);
    check(
        &mut l,
        "egress to y/a",
        80,
        P::Tcp,
        &Reach::all(true).set("x/a", "*/*", false).set("x/a", "y/a", true),
    );
}

#[test]
fn should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol() {
    let mut l = lab(&[np(
        "x",
        "allow-ingress-by-proto",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{protocol: TCP}]\n",
    )]);
    check(&mut l, "protocol only", 80, P::Tcp, &Reach::all(true));
    check(&mut l, "protocol only", 80, P::Udp, &Reach::all(true).set("*/*", "x/a", false));
}

#[test]
fn should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence() {
    let only80 = np("x", "allow-ingress-port-80", "  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]\n");
    let mut l = lab(std::slice::from_ref(&only80));
    check(&mut l, "ingress port 80 only", 81, P::Tcp, &Reach::all(true).set("*/*", "x/*", false));
    let mut l = lab(&[only80, np("x", "allow-ingress", "  podSelector: {}\n  ingress:\n  - {}\n")]);
    check(&mut l, "ingress allow-all wins", 81, P::Tcp, &Reach::all(true));
}

#[test]
fn should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence() {
    let only80 = np(
        "x",
        "allow-egress-port-80",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: 80}]\n",
    );
    let mut l = lab(std::slice::from_ref(&only80));
    check(&mut l, "egress port 80 only", 81, P::Tcp, &Reach::all(true).set("x/*", "*/*", false));
    // policyTypes omitted: Egress comes from the egress rules.
    let mut l = lab(&[
        only80,
        np("x", "allow-egress", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - {}\n"),
    ]);
    check(&mut l, "egress allow-all wins", 81, P::Tcp, &Reach::all(true));
}

#[test]
fn should_stop_enforcing_policies_after_they_are_deleted() {
    let with = netpol::compile(
        &common::cluster(&format!(
            "{}{}",
            world(&[], &[]),
            np("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n")
        )),
        "k8s",
    )
    .unwrap();
    let without = netpol::compile(&common::cluster(&world(&[], &[])), "k8s").unwrap();
    let mut l = Lab::with_policy(with.clone());
    check(
        &mut l,
        "deny-all",
        80,
        P::Tcp,
        &Reach::all(true).set("x/*", "*/*", false).set("*/*", "x/*", false),
    );
    let d = netpol::diff(&with, &without);
    assert!(d.sets_removed.iter().any(|s| s == "tgt-k8s-x-deny-all"), "{d}");
    l.engine.commit(&to_changes(&d, &without), 0).unwrap();
    check(&mut l, "deleted", 80, P::Tcp, &Reach::all(true));
}

#[test]
fn should_allow_egress_access_to_server_in_cidr_block() {
    let mut l = lab(&[np(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: {}/32}}\n", common::ip_of("y/b")),
    )]);
    check(
        &mut l,
        "egress to CIDR",
        80,
        P::Tcp,
        &Reach::all(true).set("x/a", "*/*", false).set("x/a", "y/b", true),
    );
}

/// upstream's makeLargeCIDRForIP: the /4 that holds the address.
fn large_cidr(pod: &str) -> String {
    let ip = u32::from(common::ip_of(pod)) & 0xf000_0000;
    format!("{}/4", std::net::Ipv4Addr::from(ip))
}

fn except_policy(name: &str) -> String {
    np(
        "x",
        name,
        &format!(
            "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock:\n        cidr: {}\n        except: [{}/32]\n",
            large_cidr("x/b"),
            common::ip_of("x/b")
        ),
    )
}

#[test]
fn should_enforce_except_clause_while_egress_access_to_server_in_cidr_block() {
    let mut l = lab(&[except_policy("allow-client-a-via-cidr-egress-rule")]);
    check(&mut l, "except", 80, P::Tcp, &Reach::all(true).set("x/a", "x/b", false));
}

#[test]
fn should_ensure_an_ip_overlapping_both_ipblock_cidr_and_ipblock_except_is_allowed() {
    let mut l = lab(&[except_policy("allow-client-a-via-cidr-egress-rule")]);
    check(&mut l, "overlap (except)", 80, P::Tcp, &Reach::all(true).set("x/a", "x/b", false));
    // Upstream then *updates* the same policy to allow only x/b's address.
    let updated = np(
        "x",
        "allow-client-a-via-cidr-egress-rule",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: {}/32}}\n", common::ip_of("x/b")),
    );
    let mut l = lab(&[updated]);
    check(
        &mut l,
        "overlap (updated)",
        80,
        P::Tcp,
        &Reach::all(true).set("x/a", "*/*", false).set("x/a", "x/b", true),
    );
}

#[test]
fn should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently() {
    let egress = np(
        "x",
        "allow-egress-for-target",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - {}\n",
    );
    let mut l = lab(std::slice::from_ref(&egress));
    check(&mut l, "egress allowed", 80, P::Tcp, &Reach::all(true));
    let mut l = lab(&[
        egress,
        np(
            "x",
            "deny-ingress-via-label-selector",
            "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress]\n",
        ),
    ]);
    check(&mut l, "ingress denied, egress allowed", 80, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));
}

#[test]
fn should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp() {
    let mut l = lab(&[
        np("x", "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
        np(
            "x",
            "allow-only-sctp-ingress-on-port-81",
            "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 81, protocol: SCTP}]\n",
        ),
    ]);
    check(&mut l, "SCTP is not TCP", 81, P::Tcp, &Reach::all(true).set("*/*", "x/*", false));
    check(
        &mut l,
        "SCTP itself",
        81,
        P::Sctp,
        &Reach::all(true).set("*/*", "x/*", false).set("*/*", "x/a", true),
    );
}

#[test]
fn should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp() {
    let mut l = lab(&[np(
        "x",
        "allow-only-sctp-ingress-on-port-80",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80, protocol: SCTP}]\n",
    )]);
    check(&mut l, "SCTP policy isolates", 81, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));
}

#[test]
fn should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp() {
    let mut l = lab(&[np(
        "x",
        "allow-only-udp-ingress-on-port-81",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 81, protocol: UDP}]\n",
    )]);
    check(&mut l, "UDP only", 81, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));
    check(&mut l, "UDP only", 81, P::Udp, &Reach::all(true));
}

#[test]
fn should_enforce_policy_to_allow_traffic_based_on_namespaceselector_with_matchlabels_using_default_ns_label()
{
    // The model's manifests do not write kubernetes.io/metadata.name: the loader adds it, as the API
    // server does.
    let mut l = lab(&[np(
        "x",
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}\n"),
    )]);
    check(
        &mut l,
        "default ns label",
        80,
        P::Tcp,
        &Reach::all(true).set("x/*", "x/a", false).set("z/*", "x/a", false),
    );
}

#[test]
fn should_enforce_policy_based_on_namespaceselector_with_matchexpressions_using_default_ns_label() {
    let mut l = lab(&[np(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector:\n        matchExpressions: [{{key: {NS_NAME}, operator: NotIn, values: [y]}}]\n"),
    )]);
    check(&mut l, "egress NotIn default ns label", 80, P::Tcp, &Reach::all(true).set("x/a", "y/*", false));
}

// Beyond upstream: the cases the rule layout has to get right.

#[test]
fn an_except_in_one_policy_does_not_cut_what_another_policy_allows() {
    // Policy 1 allows x/a everything in the /4 but x/b; policy 2 allows x/b on port 81 only. Union:
    // x/a reaches x/b on 81 and not on 80; every other destination on both.
    let allow_b_81 = np(
        "x",
        "allow-b-81",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{{ipBlock: {{cidr: {}/32}}}}]\n    ports: [{{port: 81}}]\n", common::ip_of("x/b")),
    );
    for order in [["a-except", "z-allow"], ["z-except", "a-allow"]] {
        let mut l = lab(&[except_policy(order[0]), allow_b_81.replace("allow-b-81", order[1])]);
        check(&mut l, "except + allow (80)", 80, P::Tcp, &Reach::all(true).set("x/a", "x/b", false));
        check(&mut l, "except + allow (81)", 81, P::Tcp, &Reach::all(true));
    }
}

#[test]
fn end_port_allows_a_range() {
    let mut l = lab(&[np(
        "x",
        "range",
        &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{{NS_NAME}: y}}}}}}]\n    ports: [{{port: 80, endPort: 81, protocol: UDP}}]\n"),
    )]);
    let want = Reach::all(true).set("*/*", "x/a", false).set("y/*", "x/a", true);
    check(&mut l, "endPort", 80, P::Udp, &want);
    check(&mut l, "endPort", 81, P::Udp, &want);
    check(&mut l, "endPort", 82, P::Udp, &Reach::all(true).set("*/*", "x/a", false));
    check(&mut l, "endPort", 80, P::Tcp, &Reach::all(true).set("*/*", "x/a", false));
}
