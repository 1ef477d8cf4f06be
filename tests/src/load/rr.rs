//! TCP request/response latency (`tcp-rr`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Result};

use super::{load_binary, number, result_line};
use crate::netns::Netns;
use crate::process::Daemon;

/// The port `tcp-rr serve` listens on in the benchmark.
pub const TCP_RR_PORT: u16 = 8200;

/// Round trips of 1-byte messages on one connection, in microseconds.
#[derive(Clone, Debug)]
pub struct RequestResponse {
    pub count: u64,
    pub median_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

/// Starts `tcp-rr serve` on `bind` in `ns`, pinned to `cpu` if given, and
/// waits until it listens.
pub fn start_rr_server(ns: &Netns, bind: impl Into<SocketAddr>, cpu: Option<usize>) -> Result<Daemon> {
    let binary = load_binary("tcp-rr")?.display().to_string();
    let mut args = vec![binary, "serve".into(), "--bind".into(), bind.into().to_string()];
    if let Some(cpu) = cpu {
        args.extend(["--cpu".into(), cpu.to_string()]);
    }
    let mut d = Daemon::spawn(ns, "tcp-rr-server", &args)?;
    d.wait_for_line("listening", Duration::from_secs(10), |l| l.contains("tcp-rr ready"))?;
    Ok(d)
}

/// `tcp-rr run` from `ns` against `target` for `secs` seconds, pinned to
/// `cpu` if given.
pub fn tcp_rr(
    ns: &Netns,
    target: impl Into<SocketAddr>,
    secs: f64,
    cpu: Option<usize>,
) -> Result<RequestResponse> {
    let binary = load_binary("tcp-rr")?.display().to_string();
    let mut args = vec![
        binary,
        "run".into(),
        "--connect".into(),
        target.into().to_string(),
        "--secs".into(),
        secs.to_string(),
    ];
    if let Some(cpu) = cpu {
        args.extend(["--cpu".into(), cpu.to_string()]);
    }
    let out = ns.output(&args)?;
    if !out.status.success() {
        bail!("tcp-rr run failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let v = result_line(&String::from_utf8_lossy(&out.stdout), "tcp-rr run")?;
    Ok(RequestResponse {
        count: number(&v, "count")? as u64,
        median_us: number(&v, "median_us")?,
        p90_us: number(&v, "p90_us")?,
        p99_us: number(&v, "p99_us")?,
        mean_us: number(&v, "mean_us")?,
    })
}
