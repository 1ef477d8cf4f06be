//! Debian packages the demo and the tests drive (real clients, real tools).
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::run::status;

/// (command that must exist, Debian package providing it)
const NEEDED: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("curl", "curl"),
    ("iperf3", "iperf3"),
    ("ping", "iputils-ping"),
    ("nc", "netcat-openbsd"),
    ("ethtool", "ethtool"),
    ("tcpdump", "tcpdump"),
];

fn have(command: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = NEEDED.iter().filter(|(c, _)| !have(c)).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::run::is_root() {
        bail!("missing Debian packages {missing:?}: run as root or install them with apt-get");
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    // iperf3's package asks whether to start a daemon; answer no up front.
    let _ = Command::new("sh")
        .args(["-c", "echo 'iperf3 iperf3/start_daemon boolean false' | debconf-set-selections"])
        .status();
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install failed")?;
    Ok(())
}
