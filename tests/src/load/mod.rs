//! The benchmark's load generators: small std-only binaries of this crate
//! (`src/bin/conn-rate.rs`, `udp-rate.rs`, `tcp-rr.rs`) run inside the
//! namespaces, and the functions that start them and parse their one JSON
//! line of results.
//!
//! Why own binaries: curl and nc start a process per connection, and
//! iperf3's UDP mode paces and reports per interval; these measure exactly
//! one thing each (connections per second, datagrams delivered, one
//! request/response round trip) and are built in release mode with the
//! agent, so `cargo xtask bench` needs nothing else.

pub mod conn;
pub mod flags;
pub mod rr;
pub mod udp;

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

pub use conn::{conn_rate, start_conn_server, ConnRate, CONN_RATE_PORT, CONN_RATE_PORTS};
pub use rr::{start_rr_server, tcp_rr, RequestResponse, TCP_RR_PORT};
pub use udp::{udp_rate, UdpRate, UDP_RATE_PORT};

/// A load generator binary of this crate: `$EGRESS_LOAD_BIN_DIR/<name>` if
/// that is set, else `<target>/release/<name>` or `<target>/debug/<name>`.
pub fn load_binary(name: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("EGRESS_LOAD_BIN_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join(name));
    }
    let target = crate::util::target_dir();
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{name} not found under {}: run `cargo build --release -p egress-tests` or set EGRESS_LOAD_BIN_DIR",
                target.display()
            )
        })
}

/// The last line of `text` that is a JSON object (the binaries print their
/// result as one line; anything else is diagnostics).
fn result_line(text: &str, what: &str) -> Result<Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| anyhow!("{what} printed no result line; its output:\n{text}"))?;
    serde_json::from_str(line).with_context(|| format!("{what} printed invalid JSON: {line}"))
}

/// Field `key` of a result as f64.
fn number(v: &Value, key: &str) -> Result<f64> {
    v.get(key).and_then(Value::as_f64).ok_or_else(|| anyhow!("result lacks number {key:?}: {v}"))
}
