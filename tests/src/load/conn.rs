//! New TCP connections per second (`conn-rate`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Result};

use super::{load_binary, number, result_line};
use crate::netns::Netns;
use crate::process::Daemon;

/// The first port `conn-rate serve` listens on in the benchmark.
pub const CONN_RATE_PORT: u16 = 8080;
/// How many consecutive ports it listens on, from [`CONN_RATE_PORT`]. A NAT
/// keeps each closed connection's port per destination for a while
/// (Linux's conntrack: TIME_WAIT, 120 s); spread over this many
/// destinations, a 10 s run at 15k connections/s uses under 10k NAT ports
/// per destination, well inside a 22k-port range.
pub const CONN_RATE_PORTS: u16 = 16;

/// What one `conn-rate run` measured.
#[derive(Clone, Debug)]
pub struct ConnRate {
    /// Requests answered completely (connect, request, response, close).
    pub connections: u64,
    /// Failed attempts (connect or read timeout, reset, bad response).
    pub errors: u64,
    pub secs: f64,
    pub per_second: f64,
    /// The first error's message, empty if none.
    pub first_error: String,
}

/// Starts `conn-rate serve` in `ns` on `ports` ports from `first` and waits
/// until it listens.
pub fn start_conn_server(ns: &Netns, first: impl Into<SocketAddr>, ports: u16) -> Result<Daemon> {
    let binary = load_binary("conn-rate")?.display().to_string();
    let (first, ports) = (first.into().to_string(), ports.to_string());
    let mut d = Daemon::spawn(
        ns,
        "conn-rate-server",
        &[binary.as_str(), "serve", "--bind", &first, "--ports", &ports],
    )?;
    d.wait_for_line("listening", Duration::from_secs(10), |l| l.contains("conn-rate ready"))?;
    Ok(d)
}

/// `conn-rate run` from `ns` against `ports` ports from `first`, with
/// `workers` concurrent clients for `secs` seconds, at `rate` connections
/// per second in total if given, else as fast as they go.
pub fn conn_rate(
    ns: &Netns,
    first: impl Into<SocketAddr>,
    ports: u16,
    workers: usize,
    secs: f64,
    rate: Option<f64>,
) -> Result<ConnRate> {
    let binary = load_binary("conn-rate")?.display().to_string();
    let out = ns.output(&[
        binary.as_str(),
        "run",
        "--connect",
        &first.into().to_string(),
        "--ports",
        &ports.to_string(),
        "--workers",
        &workers.to_string(),
        "--secs",
        &secs.to_string(),
        "--rate",
        &rate.unwrap_or(0.0).to_string(),
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("conn-rate run failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let v = result_line(&stdout, "conn-rate run")?;
    Ok(ConnRate {
        connections: number(&v, "connections")? as u64,
        errors: number(&v, "errors")? as u64,
        secs: number(&v, "secs")?,
        per_second: number(&v, "per_second")?,
        first_error: v["first_error"].as_str().unwrap_or_default().to_string(),
    })
}
