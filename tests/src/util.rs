//! Small helpers shared by the other modules: privilege check, workspace
//! paths, a self-deleting temporary directory and polling with a deadline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Fails with one clear line unless the process runs as root.
///
/// Tests call this first so that a non-root run fails loudly instead of
/// silently passing or failing deep inside `ip netns add`.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("these tests need root (network namespaces, BPF, iptables); running as uid {euid}");
    }
    Ok(())
}

/// The cargo workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate has a parent directory").to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// A process-wide counter, used to make names unique within one process.
pub fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A temporary directory removed on drop, unless the thread is panicking:
/// then it is kept (and its path printed) so the logs in it can be read.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/egress-tests-<pid>-<n>-<label>`.
    pub fn new(label: &str) -> Result<TempDir> {
        let path =
            std::env::temp_dir().join(format!("egress-tests-{}-{}-{}", std::process::id(), next_id(), label));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating temporary directory {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes every [`TempDir`] of this process (for the Ctrl-C cleanup, where
/// no destructor runs).
pub fn remove_temp_dirs_of_this_process() {
    let prefix = format!("egress-tests-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Calls `check` every `interval` until it returns `Ok(Some(v))` or `timeout`
/// passes. Returns the last error (or a timeout error naming `what`).
///
/// Used wherever the system converges asynchronously (the agent re-reading
/// its pods file, a server starting) so tests wait exactly as long as needed.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = check();
        match last {
            Ok(Some(v)) => return Ok(v),
            Ok(None) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {what}")
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("timed out after {timeout:?} waiting for {what}")))
            }
            _ => std::thread::sleep(interval),
        }
    }
}
