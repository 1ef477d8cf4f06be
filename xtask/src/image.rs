//! `cargo xtask image [--tag T]`: the container image, built offline. The
//! static agent (`toolchain::build_static_agent`), stripped, is the whole
//! build context; deploy/Containerfile puts it `FROM scratch` with the OCI
//! labels. Built with docker or podman, whichever is here; podman is
//! installed from Debian's packages when neither is.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    engine::{self, Engine},
    run::{output, status, workspace_root},
    toolchain,
};

/// The tag `image` builds by default, and the one deploy/overlays/kind runs.
pub const DEFAULT_TAG: &str = "egress-gateway:dev";

/// The size the issue set for the image; a bigger one fails the build.
const SIZE_LIMIT: u64 = 25 * 1000 * 1000;

pub fn run(tag: &str) -> Result<()> {
    let engine = engine::detect_or_install()?;
    let size = build(engine, tag)?;
    println!("xtask: built {tag} with {} ({:.1} MB, one file)", engine.program(), size as f64 / 1e6);
    Ok(())
}

/// `cargo xtask build-static [--out PATH]`: the static agent, copied to
/// PATH when given (the Dockerfile's builder stage uses this).
pub fn build_static(out: Option<&Path>) -> Result<()> {
    let binary = toolchain::build_static_agent()?;
    match out {
        Some(out) => {
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            stripped_copy(&binary, out)?;
            println!("xtask: static agent at {}", out.display());
        }
        None => println!("xtask: static agent at {}", binary.display()),
    }
    Ok(())
}

/// Builds the image and returns its size in bytes.
pub fn build(engine: Engine, tag: &str) -> Result<u64> {
    let binary = toolchain::build_static_agent()?;
    let context = workspace_root().join("target/image-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context)?;
    stripped_copy(&binary, &context.join("egress-agent"))?;

    let root = workspace_root();
    let revision = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let source = git(&["remote", "get-url", "origin"]).unwrap_or_else(|| "unknown".into());
    let version = env!("CARGO_PKG_VERSION");
    let mut cmd = Command::new(engine.program());
    cmd.arg("build")
        .arg("--file")
        .arg(root.join("deploy/Containerfile"))
        .args(["--tag", tag])
        .args(["--build-arg", &format!("VERSION={version}")])
        .args(["--build-arg", &format!("REVISION={revision}")])
        .args(["--build-arg", &format!("SOURCE={source}")])
        // FROM scratch: nothing to pull, nothing to reach.
        .args(["--network", "none"]);
    if engine == Engine::Podman {
        cmd.arg("--pull=never");
    }
    status(cmd.arg(&context))
        .with_context(|| format!("building the image {tag} with {}", engine.program()))?;

    let size: u64 =
        output(Command::new(engine.program()).args(["image", "inspect", "--format", "{{.Size}}", tag]))?
            .trim()
            .parse()
            .context("reading the image's size")?;
    if size > SIZE_LIMIT {
        bail!("the image {tag} is {size} bytes, over the {SIZE_LIMIT}-byte budget: what grew?");
    }
    Ok(size)
}

/// Copies the binary without its symbol tables (a third of its size).
fn stripped_copy(binary: &Path, to: &Path) -> Result<()> {
    status(Command::new("strip").arg("--strip-all").arg("-o").arg(to).arg(binary))
        .with_context(|| format!("stripping {} (binutils' strip)", binary.display()))
}

/// One line of git's answer, None outside a git checkout.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(workspace_root()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
