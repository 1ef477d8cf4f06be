//! Round-trip times, as medians: ping (ICMP echo) and 1-byte TCP
//! request/response on one open connection (`tcp-rr`).
//!
//! Why these settings: on this VM an idle CPU takes tens of microseconds to
//! wake up, more than the path itself costs. Pings 10 ms apart would time
//! mostly that; 0.2 ms apart the CPU stays awake. A TCP request/response
//! needs the server thread to wake: with client and server pinned to the
//! same CPU, the round trip is the work of the path; with them on two
//! CPUs, it also pays two cross-CPU wake-ups (the second row).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use egress_tests::{
    clients,
    load::{self, TCP_RR_PORT},
};

use super::{EgressPath, Family, Metric, Sample, Settings, Testbed};

/// Interval between pings.
const PING_INTERVAL: Duration = Duration::from_micros(200);
/// Longest request/response run: a couple of seconds give a stable median.
const TCP_RR_MAX_SECS: f64 = 2.0;
/// The CPU the `tcp-rr` server is pinned to.
pub const TCP_RR_SERVER_CPU: usize = 0;
/// The client's CPU for the across-CPUs run.
const TCP_RR_OTHER_CPU: usize = 1;

pub const PING_RTT: Metric = Metric::lower("ping_rtt_us", "ping RTT, median (0.2 ms apart)", "µs");
pub const TCP_RR_SAME_CPU: Metric =
    Metric::lower("tcp_rr_same_cpu_us", "TCP 1-byte request/response, median, one CPU", "µs");
pub const TCP_RR_ACROSS_CPUS: Metric =
    Metric::lower("tcp_rr_across_cpus_us", "TCP 1-byte request/response, median, two CPUs", "µs");
pub const PING_RTT_V6: Metric =
    Metric::lower("v6_ping_rtt_us", "IPv6: ping RTT, median (0.2 ms apart)", "µs");
pub const TCP_RR_SAME_CPU_V6: Metric =
    Metric::lower("v6_tcp_rr_same_cpu_us", "IPv6: TCP 1-byte request/response, median, one CPU", "µs");
pub const TCP_RR_ACROSS_CPUS_V6: Metric =
    Metric::lower("v6_tcp_rr_across_cpus_us", "IPv6: TCP 1-byte request/response, median, two CPUs", "µs");

pub fn measure_ping(
    testbed: &Testbed,
    path: EgressPath,
    settings: &Settings,
    family: Family,
) -> Result<Vec<Sample>> {
    let server = testbed.server_ip(family);
    let result = clients::ping_rtt(testbed.worker(path), server, settings.pings, PING_INTERVAL)?;
    if result.received < result.transmitted {
        eprintln!("    {}: {} of {} pings answered", path.name(), result.received, result.transmitted);
    }
    Ok(vec![Sample::new(family.pick(&PING_RTT, &PING_RTT_V6), result.median_us)])
}

pub fn measure_tcp_rr(
    testbed: &Testbed,
    path: EgressPath,
    settings: &Settings,
    family: Family,
) -> Result<Vec<Sample>> {
    let target = SocketAddr::new(testbed.server_ip(family), TCP_RR_PORT);
    let secs = settings.secs.min(TCP_RR_MAX_SECS);
    let worker = testbed.worker(path);
    let same = load::tcp_rr(worker, target, secs, Some(TCP_RR_SERVER_CPU))?;
    let mut samples = vec![Sample::new(family.pick(&TCP_RR_SAME_CPU, &TCP_RR_SAME_CPU_V6), same.median_us)];
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) > TCP_RR_OTHER_CPU {
        let across = load::tcp_rr(worker, target, secs, Some(TCP_RR_OTHER_CPU))?;
        samples.push(Sample::new(family.pick(&TCP_RR_ACROSS_CPUS, &TCP_RR_ACROSS_CPUS_V6), across.median_us));
    }
    Ok(samples)
}
