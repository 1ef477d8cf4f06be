//! The container engine on this machine: docker when its daemon answers,
//! else podman (which needs no daemon). `image` builds with it; `kind-test`
//! needs docker itself, because kind loads images from docker.
use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use egress_tests::tools::which;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    pub fn program(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        }
    }
}

/// What `docker` can do here.
pub enum Docker {
    /// No docker client on PATH.
    Missing,
    /// The client is there but no daemon answers; the reason, in one line.
    NoDaemon(String),
    Ready,
}

/// How long `docker info` may take before the daemon counts as not answering.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);

pub fn docker() -> Docker {
    if which("docker").is_none() {
        return Docker::Missing;
    }
    let mut cmd = Command::new("docker");
    cmd.args(["info", "--format", "{{.ServerVersion}}"]);
    match output_within(&mut cmd, DAEMON_TIMEOUT) {
        Some(out) if out.status.success() => Docker::Ready,
        Some(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no error text");
            Docker::NoDaemon(last.trim().to_string())
        }
        None => {
            Docker::NoDaemon(format!("`docker info` did not answer within {}s", DAEMON_TIMEOUT.as_secs()))
        }
    }
}

/// docker if its daemon answers, else podman; otherwise one line saying
/// what is missing.
pub fn detect() -> Result<Engine> {
    let docker = docker();
    if let Docker::Ready = docker {
        return Ok(Engine::Docker);
    }
    if which("podman").is_some() {
        return Ok(Engine::Podman);
    }
    match docker {
        Docker::NoDaemon(reason) => {
            bail!(
                "docker is installed but its daemon does not answer ({reason}), and podman is not installed"
            )
        }
        _ => bail!("neither docker nor podman is installed: install one of them to build the image"),
    }
}

/// The engine to build with, installing Debian's podman when there is
/// none (as the tests install their tools).
pub fn detect_or_install() -> Result<Engine> {
    if let Ok(engine) = detect() {
        return Ok(engine);
    }
    ensure_podman()?;
    Ok(Engine::Podman)
}

/// Podman, installed from Debian's packages when missing.
pub fn ensure_podman() -> Result<()> {
    egress_tests::tools::ensure_tools(egress_tests::tools::PODMAN)
}

/// Runs `cmd` with captured output; None if it is still running after
/// `timeout` (it is then killed).
fn output_within(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
