//! The command-line tools the harness drives, installed from Debian's
//! packages when missing.
//!
//! A fresh machine (or CI) has none of them; installing them here keeps
//! `cargo test` self-contained instead of relying on a manual setup step.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// A command the harness needs and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub command: &'static str,
    pub package: &'static str,
}

/// Everything the tests and the demo run.
pub const TOOLS: &[Tool] = &[
    Tool { command: "ip", package: "iproute2" },
    Tool { command: "iptables", package: "iptables" },
    Tool { command: "ip6tables", package: "iptables" },
    Tool { command: "curl", package: "curl" },
    Tool { command: "iperf3", package: "iperf3" },
    Tool { command: "ping", package: "iputils-ping" },
    Tool { command: "nc", package: "netcat-openbsd" },
    Tool { command: "ethtool", package: "ethtool" },
    Tool { command: "traceroute", package: "traceroute" },
    Tool { command: "tracepath", package: "iputils-tracepath" },
    Tool { command: "conntrack", package: "conntrack" },
    Tool { command: "dig", package: "dnsutils" },
    Tool { command: "dnsmasq", package: "dnsmasq-base" },
];

/// Podman, for the container test and `cargo xtask image`: with runc
/// (crun, Debian's default, refuses hybrid cgroup layouts) and catatonit
/// (the pause process of `podman kube play`).
pub const PODMAN: &[Tool] = &[
    Tool { command: "podman", package: "podman" },
    Tool { command: "runc", package: "runc" },
    Tool { command: "catatonit", package: "catatonit" },
];

/// Finds `command` on `PATH` (plus the sbin directories, which a non-login
/// root shell may lack).
pub fn which(command: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(command))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// `nc` must be the OpenBSD variant: the tests use its `-u -w` semantics,
/// which netcat-traditional does not share.
fn nc_is_openbsd() -> bool {
    Command::new("nc")
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text).contains("OpenBSD")
        })
        .unwrap_or(false)
}

/// The packages whose commands are missing.
pub fn missing_packages() -> Vec<&'static str> {
    missing_of(TOOLS)
}

fn missing_of(tools: &[Tool]) -> Vec<&'static str> {
    tools
        .iter()
        .filter(|t| match t.command {
            "nc" => which("nc").is_none() || !nc_is_openbsd(),
            cmd => which(cmd).is_none(),
        })
        .map(|t| t.package)
        .collect()
}

/// Makes sure every tool in [`TOOLS`] is present, installing the missing
/// Debian packages with apt-get (non-interactively, `apt-get update` first).
/// Fails with one clear line if that is impossible (not root, no apt-get,
/// the install failed).
///
/// Safe to call from every test: once everything is present it only checks
/// `PATH`. Concurrent callers (parallel test binaries) are serialized with a
/// file lock so two apt-gets never race for dpkg's lock.
pub fn ensure_packages() -> Result<()> {
    ensure_tools(TOOLS)
}

/// [`ensure_packages`] for other tools: the container engine, the musl
/// compiler, which only some steps need.
pub fn ensure_tools(tools: &[Tool]) -> Result<()> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    if missing_of(tools).is_empty() {
        return Ok(());
    }
    let _file_lock = lock_file("/tmp/egress-tests-apt.lock")?;
    let missing = missing_of(tools);
    if missing.is_empty() {
        return Ok(());
    }
    install(&missing).with_context(|| {
        format!("tools are missing and could not be installed (apt-get install {})", missing.join(" "))
    })?;
    let still = missing_of(tools);
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

fn install(packages: &[&str]) -> Result<()> {
    crate::util::require_root()?;
    if which("apt-get").is_none() {
        bail!("apt-get not found (not a Debian-like system)");
    }
    if packages.contains(&"iperf3") {
        // iperf3's package asks whether to start a daemon; answer it upfront.
        let mut child = Command::new("debconf-set-selections")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running debconf-set-selections")?;
        use std::io::Write;
        child.stdin.take().expect("piped stdin").write_all(b"iperf3 iperf3/start_daemon boolean false\n")?;
        child.wait()?;
    }
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"];
    args.extend_from_slice(packages);
    apt(&args)
}

fn apt(args: &[&str]) -> Result<()> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running apt-get")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("apt-get {} failed ({}): {}", args.join(" "), out.status, last.trim());
    }
    Ok(())
}

/// An exclusive `flock` held until the returned file is dropped.
pub(crate) fn lock_file(path: &str) -> Result<std::fs::File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    // SAFETY: flock on a valid fd; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("flock {path}: {}", std::io::Error::last_os_error());
    }
    Ok(file)
}
