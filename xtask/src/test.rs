//! `cargo xtask test`: what CI runs. Unit tests, BPF_PROG_TEST_RUN packet
//! scenarios and namespace integration tests all run against the real
//! kernel, so this needs root; it installs the packages it needs. It builds
//! the container image with podman (installed when missing) for the
//! container test, which runs it as the rendered manifests say. A full
//! run (no filter) then repeats the packet scenarios on Linux 6.1, runs a
//! one-round smoke of `cargo xtask bench`, and runs
//! the kind end-to-end test where docker and kind exist (saying plainly
//! that it skipped it elsewhere).
use std::process::Command;

use anyhow::{bail, Result};

use crate::{
    bench,
    engine::{self, Engine},
    image, kernels, kind,
    run::{is_root, status, workspace_root},
    toolchain,
};

pub fn run(filter: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the tests load eBPF programs and create network namespaces: run `cargo xtask test` as root");
    }
    egress_tests::tools::ensure_packages()?;
    toolchain::build_all()?;
    let agent = toolchain::agent_binary();
    // The image the container test runs (tests/tests/container.rs), built
    // with podman, which that test drives.
    engine::ensure_podman()?;
    image::build(Engine::Podman, image::DEFAULT_TAG)?;
    status(
        Command::new("cargo")
            .args(["test", "--release", "--locked", "--workspace", "--no-fail-fast"])
            .arg("--")
            .arg("--test-threads=1")
            .args(filter)
            .current_dir(workspace_root())
            .env("EGRESS_AGENT_BIN", &agent)
            .env("EGRESS_IMAGE", format!("localhost/{}", image::DEFAULT_TAG))
            .env("EGRESS_EBPF_OBJECT", toolchain::ebpf_object_path()),
    )?;
    if filter.is_empty() {
        kernels::run(&agent)?;
        // The benchmark's smoke: one short round of every measurement, so a
        // change that breaks `cargo xtask bench` shows here. It asserts no
        // timing; it fails only when a measurement cannot be taken.
        bench::run(&bench::Options {
            rounds: None,
            secs: None,
            paths: ["direct", "linux", "ebpf"].map(String::from).to_vec(),
            json: None,
            smoke: true,
        })?;
        kind::run(&kind::Options { skip_if_missing: true, keep: false })?;
    }
    Ok(())
}

/// `cargo xtask kernels`: the Linux 6.1 step alone.
pub fn kernels_only() -> Result<()> {
    if !is_root() {
        bail!("the kernel step boots a VM and loads eBPF programs: run `cargo xtask kernels` as root");
    }
    egress_tests::tools::ensure_packages()?;
    toolchain::build_all()?;
    kernels::run(&toolchain::agent_binary())
}
