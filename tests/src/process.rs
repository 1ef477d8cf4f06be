//! Background processes inside a namespace (servers, the agent) with their
//! output captured to a log file.
//!
//! Why a log file rather than pipes: a pipe nobody reads fills up and blocks
//! the process, and a file can still be printed after the process died. On a
//! test failure (the thread is panicking) the log is printed to stderr, so a
//! failing test shows what the server or agent said.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::{describe, Netns};
use crate::util::TempDir;

/// A process started in a namespace, stopped on drop (SIGTERM, then SIGKILL
/// after a grace period).
#[derive(Debug)]
pub struct Daemon {
    label: String,
    child: Option<Child>,
    log_path: PathBuf,
    _dir: TempDir,
    grace: Duration,
}

impl Daemon {
    /// Starts `args` inside `ns`, stdout and stderr both appended to one log
    /// file. `label` names the process in messages.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(ns: &Netns, label: &str, args: &[S]) -> Result<Daemon> {
        let dir = TempDir::new(label)?;
        let log_path = dir.path().join(format!("{label}.log"));
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = ns.command(args);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("starting {label}: {}", describe(&cmd)))?;
        Ok(Daemon {
            label: label.to_string(),
            child: Some(child),
            log_path,
            _dir: dir,
            grace: Duration::from_secs(5),
        })
    }

    /// The process id (of the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the log file holding stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits until a line of the log satisfies `matches`. Fails early (with
    /// the log) if the process exits first, or after `timeout`.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().lines().any(&matches) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!("{} exited ({status}) before {what}; its output:\n{}", self.label, self.log());
            }
            if Instant::now() >= deadline {
                bail!("{} did not report {what} within {timeout:?}; its output:\n{}", self.label, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the exit status if the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => bail!("{} was already stopped", self.label),
        }
    }

    /// Sends SIGTERM, waits up to the grace period (5 s), then SIGKILLs.
    /// Returns the exit status. Idempotent.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} was already stopped", self.label);
        };
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM for {:?}; killing it", self.label, self.grace);
        let _ = child.kill();
        Ok(child.wait()?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- output of {} ({}) -----\n{}----- end of {} -----",
                self.label,
                self.log_path.display(),
                self.log(),
                self.label
            );
        }
    }
}
