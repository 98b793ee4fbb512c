//! Any text as Kubernetes manifests: the loader refuses with a located, non-empty reason or loads;
//! what loads compiles or is refused with a reason; what compiles prints as policy text that parses
//! back to the same model. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut cluster = netpol::Cluster::new();
    if let Err(e) = cluster.load_str("fuzz.yaml", text) {
        assert!(!e.to_string().trim().is_empty(), "a refusal without a message");
        return;
    }
    match netpol::compile(&cluster, "fuzz") {
        Ok(policy) => {
            let printed = policy.to_string();
            assert_eq!(rules::parse_policy(&printed).ok(), Some(policy), "printed policy reads back");
        }
        Err(e) => assert!(!e.to_string().trim().is_empty(), "a compile refusal without a message"),
    }
});
