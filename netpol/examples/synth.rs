//! Prints a synthetic cluster's manifests (`netpol::synth`): `synth NAMESPACES PODS POLICIES`, per
//! namespace. `synth 50 100 10` is the benchmark's 5,000 pods and 500 policies.

fn main() {
    let arg =
        |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    print!("{}", netpol::synth::cluster_yaml(arg(1, 50), arg(2, 100), arg(3, 10)));
}
