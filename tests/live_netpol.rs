//! A pod relabel on a live daemon (issue 8): Kubernetes manifests compiled with `dfw netpol compile` run
//! under `dfw run` between two network namespaces (the client pod "busybox", the server pod "nginx"),
//! the seed's `access-nginx` policy (nginx pods take ingress from `app=foo` only). Relabelling busybox
//! `app=foo` and back `app=bar` with `dfw netpol apply` is a change of address-set members only, and
//! pushed over the control socket it flips a real TCP connection: refused, allowed, refused again with the
//! open one cut. Needs root; with `CI=true` a machine where it cannot set up fails the test instead of
//! skipping it. Everything it creates (two namespaces, two taps inside them, a temporary folder, the
//! daemon) is removed by Drop guards, and all traffic stays inside the namespaces (10.250.8.0/24, apart
//! from `tests/live.rs`'s 10.250.0.0/24).

mod common;

use std::path::Path;
use std::process::Command;

use common::{can_run, connect, echo_server, echoes, json, Daemon, TempDir, DFW};
use pktio::ScratchNetns;
use serde_json::json;

const CLUSTER: &str = "k8scluster";
const CLIENT: &str = "10.250.8.1";
const SERVER: &str = "10.250.8.2";
const CLIENT_MAC: &str = "02:fa:00:00:08:01";
const SERVER_MAC: &str = "02:fa:00:00:08:02";
/// The seed article's policy, verbatim.
const ACCESS_NGINX: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../netpol/testdata/seed-lab/access-nginx.yaml");
/// What `access-nginx` compiles to (docs/netpol.md): its source set and the allow rule's tag.
const SRC_SET: &str = "src-k8scluster-default-access-nginx-all";
const ALLOW_TAG: &str = "ir-k8scluster-default-access-nginx-all";
const SERVER_FILTER: &str = "nic-node01-default-nginx";

/// Namespace `default` and the two pods, busybox labelled `app=<app>`; the vNIC MACs are the taps'.
fn pods(busybox_app: &str) -> String {
    let pod = |name: &str, app: &str, mac: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  \
             annotations: {{dfw.io/vnic-mac: '{mac}'}}\n  labels: {{app: {app}}}\nspec:\n  nodeName: node01\n  \
             containers:\n  - {{name: {name}, image: {name}}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: default}}\n{}{}",
        pod("busybox", busybox_app, CLIENT_MAC, CLIENT),
        pod("nginx", "nginx", SERVER_MAC, SERVER)
    )
}

/// `dfw netpol ARGS` in `dir`; panics with its stderr when it fails.
fn netpol(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(DFW).arg("netpol").args(args).current_dir(dir).output().expect("run dfw netpol");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "dfw netpol {args:?}: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Relabels busybox `app=<app>` in the manifests and applies the change to the daemon: first without
/// `--socket` (the change list, which must be members only: `<op>` of busybox's address on the allow rule's
/// source set), then with it, as one commit. Returns the new policy file.
fn relabel(dir: &Path, sock: &Path, from: &str, app: &str, op: &str) -> String {
    let manifests = format!("pods-{app}.yaml");
    std::fs::write(dir.join(&manifests), pods(app)).expect("write manifests");
    let input = ["--cluster", CLUSTER, "-f", &manifests, "-f", ACCESS_NGINX, "--from", from];
    let printed: serde_json::Value =
        serde_json::from_str(&netpol(dir, &[&["apply"][..], &input].concat())).expect("apply prints JSON");
    assert_eq!(printed["members_only"], true, "{printed:#}");
    assert_eq!(printed["commit"], json!([{ op: {"set": SRC_SET, "entries": [format!("ip {CLIENT}")]} }]));
    assert_eq!(
        printed["summary"],
        json!({"member_changes": 1, "sets_added": [], "sets_removed": [], "filters_added": [],
               "filters_removed": [], "filters_changed": [], "rulesets_changed": []})
    );

    let g = json(sock, &["summarize"])["generation"].as_u64().expect("generation");
    let out = format!("policy-{app}.dfw");
    let sock_arg = sock.to_str().expect("socket path");
    let text = netpol(dir, &[&["apply"][..], &input, &["--socket", sock_arg, "-o", &out]].concat());
    // One atomic commit: the generation moves by one.
    assert_eq!(text.trim(), format!("generation {}", g + 1));
    out
}

/// A connection from `ns` to the server that must time out (the SYN dropped, not answered by a RST).
fn times_out(ns: &ScratchNetns) -> bool {
    match connect(ns, SERVER) {
        Ok(_) => false,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            true
        }
    }
}

/// The id of the rule tagged `tag` in a compiled policy file (ids are derived from tags).
fn rule_id(policy: &str, tag: &str) -> u64 {
    let line = policy.lines().find(|l| l.contains(&format!("tag '{tag}'"))).expect("tagged rule");
    line.split_whitespace().nth(1).and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("rule id: {line}"))
}

#[test]
fn relabel_applied_with_netpol_flips_a_live_connection() {
    if !can_run() {
        return;
    }
    let pid = std::process::id();
    let client = ScratchNetns::new("npl-c").expect("create client namespace");
    let server = ScratchNetns::new("npl-s").expect("create server namespace");
    let dir = TempDir::new(&format!("dfw-live-netpol-{pid}"));
    let sock = dir.0.join("control.sock");

    // kubectl get pods,networkpolicies -o yaml | dfw netpol compile: busybox is app=busybox, so nginx is
    // isolated from it.
    std::fs::write(dir.0.join("pods-busybox.yaml"), pods("busybox")).expect("write manifests");
    netpol(
        &dir.0,
        &["compile", "--cluster", CLUSTER, "-f", "pods-busybox.yaml", "-f", ACCESS_NGINX, "-o", "v1.dfw"],
    );
    let v1 = std::fs::read_to_string(dir.0.join("v1.dfw")).expect("compiled policy");
    assert!(v1.contains(&format!("filter {SERVER_FILTER} ")), "{v1}");

    let (ctap, stap) = (format!("dfnc{}", pid % 1_000_000), format!("dfns{}", pid % 1_000_000));
    let config = format!(
        "policy = \"v1.dfw\"\ncontrol = \"{}\"\n\n\
         [[port]]\nname = \"busybox\"\ntap = \"{ctap}\"\nnetns = \"{}\"\nmac = \"{CLIENT_MAC}\"\naddresses = [\"{CLIENT}/24\"]\n\n\
         [[port]]\nname = \"nginx\"\ntap = \"{stap}\"\nnetns = \"{}\"\nmac = \"{SERVER_MAC}\"\naddresses = [\"{SERVER}/24\"]\n",
        sock.display(),
        client.name(),
        server.name()
    );
    std::fs::write(dir.0.join("dfw.toml"), config).expect("write config");
    let mut daemon = Daemon::start(&dir.0, &sock);
    echo_server(&server, SERVER);

    // 1. busybox is not app=foo: the SYN is dropped by access-nginx's isolation rule, the connect times out.
    assert!(times_out(&client), "connection allowed before the relabel");

    // 2. kubectl label pod busybox --overwrite app=foo: busybox's address joins the source set.
    let v2 = relabel(&dir.0, &sock, "v1.dfw", "foo", "addrset_add");
    let mut est = connect(&client, SERVER).expect("connection refused after relabel app=foo");
    assert!(echoes(&mut est, b"hello through access-nginx"), "no echo on an allowed connection");
    let allow = rule_id(&std::fs::read_to_string(dir.0.join(&v2)).expect("compiled policy"), ALLOW_TAG);
    let flows = json(&sock, &["getflows", "-f", SERVER_FILTER]);
    // (The pods' IPv6 neighbour discovery passes the default rule too: pick the TCP flow.)
    let f = flows["flows"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["dst"] == format!("{SERVER}:8080")))
        .unwrap_or_else(|| panic!("no flow to {SERVER}:8080: {flows}"));
    assert_eq!(f["src"].as_str().map(|s| s.starts_with(&format!("{CLIENT}:"))), Some(true), "{flows}");
    assert_eq!(f["states"][0], "ESTABLISHED", "{flows}");
    assert_eq!(f["rule"], allow, "not accepted by access-nginx's allow rule: {flows}");

    // 3. kubectl label pod busybox --overwrite app=bar: the address leaves the set; new connections fail and
    // the established one is cut (revalidation).
    relabel(&dir.0, &sock, &v2, "bar", "addrset_del");
    assert!(times_out(&client), "new connection allowed after relabel app=bar");
    assert!(!echoes(&mut est, b"cut?"), "established connection survived relabel app=bar");
    let stat = json(&sock, &["getfilterstat", "-f", SERVER_FILTER]);
    assert!(stat["torn_down"].as_u64() >= Some(1), "{stat}");
    assert!(stat["drop_reasons"]["revalidate"].as_u64() >= Some(1), "{stat}");

    let st = daemon.stop().expect("dfw run did not stop on SIGTERM");
    assert!(st.success(), "{st}");
}
