//! Named ports resolve per destination pod: two servers call port `http` 80 and 8080; an ingress policy
//! on the servers and an egress policy on the client both allow `http`, and each server is reachable on
//! its own number only.

mod common;

use common::{ip_of, np, Lab, P};

fn pod(ns: &str, name: &str, http: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{pod: {name}}}}}\nspec:\n  containers:\n  - name: c\n    image: i\n    ports: [{{name: http, containerPort: {http}}}]\nstatus: {{podIP: {}}}\n",
        ip_of(&format!("{ns}/{name}"))
    )
}

#[test]
fn each_destination_pod_resolves_the_name_to_its_own_number() {
    for (ingress, egress) in [(true, false), (false, true), (true, true)] {
        let mut m = format!("{}{}{}", pod("x", "a", 80), pod("x", "b", 8080), pod("y", "a", 80));
        if ingress {
            m += &np("x", "servers", "  podSelector: {}\n  ingress:\n  - ports: [{port: http}]\n");
        }
        if egress {
            m += &np("y", "client", "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}}]\n    ports: [{port: http}]\n");
        }
        let mut l = Lab::new(&m);
        let case = format!("ingress {ingress}, egress {egress}");
        assert!(l.allowed("y/a", "x/a", 80, P::Tcp), "{case}");
        assert!(!l.allowed("y/a", "x/a", 8080, P::Tcp), "{case}");
        assert!(l.allowed("y/a", "x/b", 8080, P::Tcp), "{case}");
        assert!(!l.allowed("y/a", "x/b", 80, P::Tcp), "{case}");
        assert!(!l.allowed("y/a", "x/b", 8080, P::Udp), "{case}: http is a TCP port");
    }
}
