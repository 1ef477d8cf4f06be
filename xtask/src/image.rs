//! `cargo xtask image [--tag T]`: the container image from deploy/Dockerfile
//! (builder: nightly + rust-src + bpf-linker via `cargo xtask build`;
//! runtime: debian-slim, iproute2 and the one egress-agent binary), built
//! with docker or podman, whichever is here.
use std::process::Command;

use anyhow::{Context, Result};

use crate::{
    engine::{self, Engine},
    run::{status, workspace_root},
};

/// The tag `image` builds by default, and the one deploy/overlays/kind runs.
pub const DEFAULT_TAG: &str = "egress-gateway:dev";

pub fn run(tag: &str) -> Result<()> {
    let engine = engine::detect()?;
    build(engine, tag)?;
    println!("xtask: built {tag} with {}", engine.program());
    Ok(())
}

pub fn build(engine: Engine, tag: &str) -> Result<()> {
    let root = workspace_root();
    status(
        Command::new(engine.program())
            .arg("build")
            .arg("--file")
            .arg(root.join("deploy/Dockerfile"))
            .args(["--tag", tag])
            .arg(&root)
            // The Dockerfile's cache mounts need BuildKit (docker's default
            // since 23.0; podman's builder has them anyway).
            .env("DOCKER_BUILDKIT", "1"),
    )
    .with_context(|| format!("building the image {tag} with {}", engine.program()))
}
