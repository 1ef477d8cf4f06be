//! New TCP connections per second: short HTTP requests with
//! `Connection: close` from `conn-rate run` against `conn-rate serve` in
//! the outside namespace, spread over several server ports so the NATs'
//! port ranges are not what limits the rate (see `load::CONN_RATE_PORTS`).

use std::net::SocketAddrV4;

use anyhow::Result;
use egress_tests::load::{self, CONN_RATE_PORT, CONN_RATE_PORTS};

use super::{EgressPath, Metric, Sample, Settings, Testbed};

/// Concurrent clients: enough to keep both CPUs busy (each waits a round
/// trip per connect and per response); the direct path peaks between 8
/// and 16 here.
pub const WORKERS: usize = 16;

pub const CONN_PER_S: Metric = Metric::higher("conn_per_s", "new TCP connections (HTTP, close)", "conn/s");
pub const CONN_ERRORS: Metric = Metric::lower("conn_errors", "failed connections in that run", "count");

pub fn measure(testbed: &Testbed, path: EgressPath, settings: &Settings) -> Result<Vec<Sample>> {
    let target = SocketAddrV4::new(testbed.server_ip(), CONN_RATE_PORT);
    let result =
        load::conn_rate(testbed.worker(path), target, CONN_RATE_PORTS, WORKERS, settings.secs, None)?;
    if result.errors > 0 {
        eprintln!("    {}: {} failed connections, first: {}", path.name(), result.errors, result.first_error);
    }
    Ok(vec![Sample::new(&CONN_PER_S, result.per_second), Sample::new(&CONN_ERRORS, result.errors as f64)])
}
