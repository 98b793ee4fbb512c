//! Synthetic clusters for benchmarks: namespaces of pods with varied labels and named ports, and a mix of
//! the NetworkPolicy shapes seen in practice (default deny, label allows, namespace+pod peers, ipBlock
//! with except, port ranges, named ports, egress), as one YAML stream.

use std::fmt::Write as _;

/// A cluster of `namespaces` × `pods` pods and `namespaces` × `policies` policies, as manifests.
pub fn cluster_yaml(namespaces: usize, pods: usize, policies: usize) -> String {
    let mut y = String::with_capacity(namespaces * pods * 400);
    for n in 0..namespaces {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns{n}\n  labels: {{team: team{}, env: {}}}\n",
            n % 7,
            ["prod", "staging", "dev"][n % 3]
        );
        for p in 0..pods {
            let http = if p % 2 == 0 { 80 } else { 8080 };
            let _ = write!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod{p}\n  namespace: ns{n}\n  labels: {{app: app{}, tier: {}}}\n\
                 spec:\n  nodeName: node{}\n  containers:\n  - name: main\n    image: app\n    ports:\n    - {{name: http, containerPort: {http}}}\n    - {{name: dns, containerPort: 53, protocol: UDP}}\n\
                 status:\n  podIP: 10.{}.{}.{}\n",
                p % 10,
                ["web", "db", "cache"][p % 3],
                p % 16,
                n >> 8,
                n & 255,
                p + 1
            );
        }
        for k in 0..policies {
            let _ = write!(y, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: pol{k}\n  namespace: ns{n}\nspec:\n");
            let spec = match k % 6 {
                0 => "  podSelector: {}\n  policyTypes: [Ingress]\n".to_string(),
                1 => format!(
                    "  podSelector: {{matchLabels: {{app: app{}}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: app{}}}}}}}]\n    ports: [{{port: http}}, {{port: 443}}]\n",
                    k % 10,
                    (k + 1) % 10
                ),
                2 => format!(
                    "  podSelector: {{matchLabels: {{tier: web}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: team{}}}}}\n      podSelector: {{matchExpressions: [{{key: tier, operator: In, values: [web, cache]}}]}}\n    ports: [{{port: 8000, endPort: 8100}}]\n",
                    k % 7
                ),
                3 => "  podSelector: {matchLabels: {tier: db}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - podSelector: {matchLabels: {tier: cache}}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.0/24]}\n    ports: [{port: 53, protocol: UDP}, {port: 5432}]\n".to_string(),
                4 => "  podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [app0, app1]}]}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}}]\n    ports: [{port: http}]\n".to_string(),
                _ => format!(
                    "  podSelector: {{matchExpressions: [{{key: app, operator: Exists}}]}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{env: prod}}}}}}]\n  - from: [{{ipBlock: {{cidr: 192.168.{}.0/24}}}}]\n    ports: [{{port: 22}}]\n",
                    k % 256
                ),
            };
            y.push_str(&spec);
        }
    }
    y
}
