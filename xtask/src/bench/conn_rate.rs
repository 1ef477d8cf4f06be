//! New TCP connections per second: short HTTP requests with
//! `Connection: close` (the server closes first) from `conn-rate run`
//! against `conn-rate serve` in the outside namespace.
//!
//! - `conn_per_s`: as fast as they go, spread over several server ports so
//!   the NATs' port ranges are not what limits the rate (see
//!   `load::CONN_RATE_PORTS`).
//! - `one_destination_rate`: like RFC 9693's connection establishment
//!   rate, towards one server address and port, where a NAT's ports per
//!   destination and its handling of reused tuples count: an offered rate
//!   rising until the first failure (`ramp`).

use std::net::SocketAddr;

use anyhow::Result;
use egress_tests::load::{self, CONN_RATE_PORT, CONN_RATE_PORTS};

use super::{EgressPath, Family, Metric, Sample, Settings, Testbed};

/// Concurrent clients: enough to keep both CPUs busy (each waits a round
/// trip per connect and per response); the direct path peaks between 8
/// and 16 here.
pub const WORKERS: usize = 16;

pub const CONN_PER_S: Metric = Metric::higher("conn_per_s", "new TCP connections (HTTP, close)", "conn/s");
pub const CONN_ERRORS: Metric = Metric::lower("conn_errors", "failed connections in that run", "count");
pub const ONE_DESTINATION_RATE: Metric = Metric::higher(
    "one_destination_rate",
    "new connections to one server address:port, highest rate without a failure",
    "conn/s",
);
pub const CONN_PER_S_V6: Metric =
    Metric::higher("v6_conn_per_s", "IPv6: new TCP connections (HTTP, close)", "conn/s");
pub const CONN_ERRORS_V6: Metric =
    Metric::lower("v6_conn_errors", "IPv6: failed connections in that run", "count");
pub const ONE_DESTINATION_RATE_V6: Metric = Metric::higher(
    "v6_one_destination_rate",
    "IPv6: new connections to one server address:port, highest rate without a failure",
    "conn/s",
);

/// The first offered rate of the ramp, and the highest it tries: above
/// what the direct path reaches here (about 10k/s), so the ramp always
/// ends in a failure.
const RAMP_FIRST: f64 = 1_000.0;
const RAMP_LAST: f64 = 128_000.0;
/// Halvings of the interval between the last rate that passed and the
/// first that failed, after the doubling.
const RAMP_BISECTIONS: u32 = 3;
/// A step fails if any connection fails, or if fewer than this share of the
/// offered connections were made (the path could not keep the pace).
const RAMP_KEPT_PACE: f64 = 0.9;

pub fn measure(
    testbed: &Testbed,
    path: EgressPath,
    settings: &Settings,
    family: Family,
) -> Result<Vec<Sample>> {
    let target = SocketAddr::new(testbed.server_ip(family), CONN_RATE_PORT);
    let result =
        load::conn_rate(testbed.worker(path), target, CONN_RATE_PORTS, WORKERS, settings.secs, None)?;
    if result.errors > 0 {
        eprintln!("    {}: {} failed connections, first: {}", path.name(), result.errors, result.first_error);
    }
    Ok(vec![
        Sample::new(family.pick(&CONN_PER_S, &CONN_PER_S_V6), result.per_second),
        Sample::new(family.pick(&CONN_ERRORS, &CONN_ERRORS_V6), result.errors as f64),
    ])
}

/// The ramp: offered rates doubling from [`RAMP_FIRST`] until a step fails,
/// then bisected between the last that passed and the first that failed.
/// Each step is one `conn-rate run` at that rate against the first server
/// port only. The value is the highest rate that passed (0 if the first
/// failed). The steps follow one another, so the state a NAT keeps after
/// each connection (time-wait) builds up as it would under that load.
pub fn measure_one_destination(
    testbed: &Testbed,
    path: EgressPath,
    settings: &Settings,
    family: Family,
) -> Result<Vec<Sample>> {
    let target = SocketAddr::new(testbed.server_ip(family), CONN_RATE_PORT);
    let step_secs = (settings.secs / 5.0).clamp(0.3, 2.0);
    let passes = |rate: f64| -> Result<bool> {
        let r = load::conn_rate(testbed.worker(path), target, 1, WORKERS, step_secs, Some(rate))?;
        let kept_pace = r.connections as f64 >= RAMP_KEPT_PACE * rate * r.secs;
        if r.errors > 0 {
            eprintln!("    {}: at {rate:.0}/s, {} failed, first: {}", path.name(), r.errors, r.first_error);
        }
        Ok(r.errors == 0 && kept_pace)
    };
    let (mut passed, mut failed) = (0.0, None);
    let mut rate = RAMP_FIRST;
    while rate <= RAMP_LAST {
        if !passes(rate)? {
            failed = Some(rate);
            break;
        }
        passed = rate;
        rate *= 2.0;
    }
    if let Some(mut failed) = failed {
        for _ in 0..RAMP_BISECTIONS {
            let middle = (passed + failed) / 2.0;
            if passes(middle)? {
                passed = middle;
            } else {
                failed = middle;
            }
        }
    }
    Ok(vec![Sample::new(family.pick(&ONE_DESTINATION_RATE, &ONE_DESTINATION_RATE_V6), passed)])
}
