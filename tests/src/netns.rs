//! One named network namespace (`ip netns`), commands run inside it, and
//! cleanup that also works after a panic or a Ctrl-C.
//!
//! Names are made unique per process ([`unique_prefix`]) so test binaries
//! that run in parallel never collide. Interfaces are always created directly
//! inside their namespaces (`ip -n A link add … peer … netns B`), so their
//! names only need to be unique within one namespace, never on the host, and
//! the host's own network is never touched.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The namespace name prefix every namespace of this process starts with.
pub fn run_prefix() -> String {
    format!("egt{}", std::process::id())
}

/// A fresh prefix for one cluster: `egt<pid>c<n>`. Unique across parallel
/// test binaries (pid) and across clusters of one binary (counter).
pub fn unique_prefix() -> String {
    format!("{}c{}", run_prefix(), crate::util::next_id())
}

/// A network namespace that is deleted (after killing whatever still runs in
/// it) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name` with `lo` up. Fails if it already exists.
    pub fn create(name: &str) -> Result<Netns> {
        run_checked(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` for `ip netns exec NAME args...`, for callers that want to
    /// set up stdio themselves.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace and returns its output; fails with
    /// the command line and its stderr if it does not exit 0.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        run_checked(&mut self.command(args)).with_context(|| format!("in netns {}", self.name))
    }

    /// Every TcpExt counter of this namespace's TCP stack (/proc/net/netstat).
    pub fn tcp_ext_counters(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        self.proc_counters("/proc/net/netstat", "TcpExt:")
    }

    /// Every Tcp counter of this namespace's TCP stack (/proc/net/snmp):
    /// `OutSegs`, `RetransSegs`, ...
    pub fn tcp_counters(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        self.proc_counters("/proc/net/snmp", "Tcp:")
    }

    /// The counters of `prefix` in a /proc/net file that holds a line of
    /// names and then a line of values per prefix.
    fn proc_counters(&self, path: &str, prefix: &str) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = self.exec(&["cat", path])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines().filter(|l| l.starts_with(prefix));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            anyhow::bail!("no {prefix} lines in {path} of {}", self.name());
        };
        Ok(names
            .split_whitespace()
            .skip(1)
            .zip(values.split_whitespace().skip(1))
            .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
            .collect())
    }

    /// Like [`Netns::exec`] but returns the output whatever the exit status
    /// (for commands expected to fail, e.g. a curl that must time out).
    pub fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null()).output().with_context(|| format!("running {}", describe(&cmd)))
    }

    /// Runs a `sh -c` script inside the namespace; fails like [`Netns::exec`].
    pub fn sh(&self, script: &str) -> Result<Output> {
        self.exec(&["sh", "-c", script])
    }

    /// Runs `ip -n NAME args...` (no `ip netns exec`, so cheaper).
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        run_checked(&mut cmd)
    }

    /// Starts `args` inside the namespace in the background (stdin closed,
    /// stdout/stderr inherited). See [`crate::process::Daemon`] for a process
    /// with a captured log and cleanup.
    pub fn spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Child> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null());
        cmd.spawn().with_context(|| format!("starting {}", describe(&cmd)))
    }

    /// Sets sysctls inside the namespace (keys in dotted form,
    /// e.g. `net.ipv4.ip_forward`), all in one process.
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        let mut script = String::from("set -e\n");
        for (key, value) in settings {
            script.push_str(&format!("echo '{value}' > /proc/sys/{}\n", key.replace('.', "/")));
        }
        self.sh(&script).map(|_| ())
    }

    /// Runs `f` on a new thread that has joined this namespace (`setns`), and
    /// returns its result. Sockets created inside `f` live in the namespace,
    /// which lets tests use plain Rust clients with exact timeouts.
    pub fn run<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> Result<R> + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on a valid fd; it only affects this new
                    // thread, which ends when `f` returns.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        bail!("setns({path}): {}", std::io::Error::last_os_error());
                    }
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Pids of all processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        netns_pids(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_and_delete(&self.name, Duration::from_millis(0));
    }
}

/// Kills every process in namespace `name` (SIGTERM, then SIGKILL after
/// `grace`) and deletes it. Deleting the namespace deletes its interfaces
/// (and so the peers of its veths).
fn kill_and_delete(name: &str, grace: Duration) {
    let pids = netns_pids(name);
    if !pids.is_empty() {
        let first = if grace.is_zero() { libc::SIGKILL } else { libc::SIGTERM };
        signal_all(&pids, first);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !netns_pids(name).is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_all(&netns_pids(name), libc::SIGKILL);
    }
    let out = Command::new("ip").args(["netns", "del", name]).stdin(Stdio::null()).output();
    if let Ok(out) = out {
        if !out.status.success() {
            eprintln!("warning: ip netns del {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    // The files `ip netns exec` mounts over /etc in this namespace (a
    // test's own resolv.conf), if a test gave it any.
    let _ = std::fs::remove_dir_all(etc_dir(name));
}

/// `/etc/netns/NAME`: what `ip netns exec NAME` bind-mounts over /etc
/// (each file in it over its namesake), e.g. a resolv.conf of its own.
pub fn etc_dir(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from("/etc/netns").join(name)
}

fn signal_all(pids: &[i32], sig: i32) {
    for &pid in pids {
        // SAFETY: plain kill(2); an already-exited pid just yields ESRCH.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn netns_pids(name: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
        })
        .unwrap_or_default()
}

/// Names of all namespaces known to `ip netns`.
pub fn list() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether namespace `name` belongs to `prefix`. Cluster namespaces are
/// named `<prefix>-<role>`, and per-process prefixes are
/// `<run_prefix>c<n>` ([`unique_prefix`]), so this matches
/// `<prefix>-…` and `<prefix>c<digits>-…`: a cluster prefix selects that
/// cluster (`egt1c1` does not match `egt1c10-…`), and [`run_prefix`]
/// selects every cluster of this process.
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    if rest.starts_with('-') {
        return true;
    }
    rest.strip_prefix('c').is_some_and(|r| {
        let digits = r.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && r[digits..].starts_with('-')
    })
}

/// Deletes every namespace matching `prefix` (see [`has_prefix`]) after
/// asking the processes inside to stop (SIGTERM, SIGKILL after 3 s).
/// Returns how many namespaces were deleted. Safe to call when nothing
/// matches. `cleanup_prefix(&run_prefix())` removes all clusters of this
/// process.
pub fn cleanup_prefix(prefix: &str) -> usize {
    delete_matching(|n| has_prefix(n, prefix))
}

fn delete_matching(matches: impl Fn(&str) -> bool) -> usize {
    let names: Vec<String> = list().into_iter().filter(|n| matches(n)).collect();
    for name in &names {
        kill_and_delete(name, Duration::from_secs(3));
    }
    names.len()
}

/// Deletes namespaces left behind by test processes that no longer exist
/// (`egt<pid>…` with a dead pid), e.g. after a `kill -9` of a test binary.
pub fn cleanup_stale() -> usize {
    let mut removed = 0;
    for name in list() {
        if is_stale(&name) {
            kill_and_delete(&name, Duration::from_millis(0));
            removed += 1;
        }
    }
    removed
}

/// Whether `name` (a namespace, a container, a folder) was made under a
/// [`unique_prefix`] of a test process that no longer exists.
pub fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("egt") else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if !rest[digits.len()..].starts_with('c') {
        return false; // not a unique_prefix() name
    }
    let Ok(pid) = digits.parse::<u32>() else {
        return false;
    };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

static CLEANUP_PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SIGNAL_PIPE_WR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE_WR.load(std::sync::atomic::Ordering::Relaxed);
    let byte = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd is a pipe we own.
    unsafe {
        libc::write(fd, &byte as *const u8 as *const libc::c_void, 1);
    }
}

/// Makes SIGINT and SIGTERM delete every namespace matching `prefix` (see
/// [`has_prefix`]; [`run_prefix`] covers all clusters of this process)
/// (and stop the processes inside), and remove this process's temporary
/// directories, before the process exits with the usual 128+signal status. Meant for long-running users such as `cargo xtask
/// demo`; tests rely on `Drop` instead. May be called several times with
/// different prefixes.
///
/// The signal handler only writes a byte to a pipe; a helper thread does the
/// cleanup, so nothing unsafe runs in signal context.
pub fn install_signal_cleanup(prefix: &str) -> Result<()> {
    CLEANUP_PREFIXES.lock().unwrap().push(prefix.to_string());
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| result = install_signal_handlers());
    result
}

fn install_signal_handlers() -> Result<()> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    SIGNAL_PIPE_WR.store(fds[1], std::sync::atomic::Ordering::Relaxed);
    let read_fd = fds[0];
    std::thread::Builder::new()
        .name("netns-cleanup".into())
        .spawn(move || {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a valid buffer.
            let n = unsafe { libc::read(read_fd, &mut byte as *mut u8 as *mut libc::c_void, 1) };
            let sig = if n == 1 { byte as i32 } else { libc::SIGTERM };
            eprintln!("signal {sig}: cleaning up network namespaces");
            for prefix in CLEANUP_PREFIXES.lock().unwrap().iter() {
                cleanup_prefix(prefix);
            }
            // The processes are gone; so can be their logs and pods files.
            crate::util::remove_temp_dirs_of_this_process();
            // Die from the same signal so the parent sees the usual status.
            // SAFETY: resetting a handler to default and re-raising.
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
                libc::_exit(128 + sig);
            }
        })
        .context("starting the cleanup thread")?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                bail!("sigaction({sig}): {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Runs `cmd` with stdin closed; fails with the command line, exit status
/// and stderr unless it exits 0.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<Output> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {}", describe(cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", describe(cmd), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A command line as a shell-like string, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains(char::is_whitespace) || s.is_empty() {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matching() {
        assert!(has_prefix("egt1c1-w1", "egt1c1"));
        assert!(!has_prefix("egt1c10-w1", "egt1c1"));
        assert!(!has_prefix("egt1c1", "egt1c1"));
        assert!(has_prefix("egt1c10-w1", "egt1"));
        assert!(!has_prefix("egt12c0-w1", "egt1"));
        assert!(has_prefix("egdemo-w1", "egdemo"));
        assert!(unique_prefix().starts_with(&format!("{}c", run_prefix())));
    }

    #[test]
    fn describe_quotes_spaces() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hi"]);
        assert_eq!(describe(&cmd), "sh -c 'echo hi'");
    }
}
