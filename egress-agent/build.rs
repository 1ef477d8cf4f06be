//! Embeds the eBPF object built by `cargo xtask build-ebpf`, so the agent is
//! one self-contained binary.
use std::{env, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../egress-ebpf/target/bpfel-unknown-none/release/egress-ebpf");
    let object = env::var_os("EGRESS_EBPF_OBJECT").map(PathBuf::from).unwrap_or(default);
    println!("cargo:rerun-if-env-changed=EGRESS_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.exists() {
        panic!(
            "eBPF object {} not found: run `cargo xtask build-ebpf` first (or set EGRESS_EBPF_OBJECT)",
            object.display()
        );
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("egress-ebpf.o");
    std::fs::copy(&object, &out).expect("copy eBPF object into OUT_DIR");
}
