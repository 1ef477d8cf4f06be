//! TCP throughput with iperf3 (1 and 4 streams, upload and download), and
//! the whole machine's CPU seconds per GB moved during the 1-stream runs.

use anyhow::Result;
use egress_tests::clients::{self, Iperf3Options};

use super::{cpu, EgressPath, Family, Metric, Sample, Settings, Testbed};

pub const TCP_1_UP: Metric = Metric::higher("tcp_1_up", "TCP 1 stream, upload", "Gbit/s");
pub const TCP_4_UP: Metric = Metric::higher("tcp_4_up", "TCP 4 streams, upload", "Gbit/s");
pub const TCP_1_DOWN: Metric = Metric::higher("tcp_1_down", "TCP 1 stream, download", "Gbit/s");
pub const TCP_4_DOWN: Metric = Metric::higher("tcp_4_down", "TCP 4 streams, download", "Gbit/s");
pub const CPU_1_UP: Metric = Metric::lower("cpu_per_gb_1_up", "CPU per GB, TCP 1 stream upload", "s/GB");
pub const CPU_1_DOWN: Metric =
    Metric::lower("cpu_per_gb_1_down", "CPU per GB, TCP 1 stream download", "s/GB");
pub const TCP_1_UP_V6: Metric = Metric::higher("v6_tcp_1_up", "IPv6: TCP 1 stream, upload", "Gbit/s");
pub const TCP_4_UP_V6: Metric = Metric::higher("v6_tcp_4_up", "IPv6: TCP 4 streams, upload", "Gbit/s");
pub const TCP_1_DOWN_V6: Metric = Metric::higher("v6_tcp_1_down", "IPv6: TCP 1 stream, download", "Gbit/s");
pub const TCP_4_DOWN_V6: Metric = Metric::higher("v6_tcp_4_down", "IPv6: TCP 4 streams, download", "Gbit/s");
pub const CPU_1_UP_V6: Metric =
    Metric::lower("v6_cpu_per_gb_1_up", "IPv6: CPU per GB, TCP 1 stream upload", "s/GB");
pub const CPU_1_DOWN_V6: Metric =
    Metric::lower("v6_cpu_per_gb_1_down", "IPv6: CPU per GB, TCP 1 stream download", "s/GB");

/// One iperf3 run: `streams` parallel streams, upload (worker → outside)
/// or download (`-R`).
pub fn measure(
    testbed: &Testbed,
    path: EgressPath,
    settings: &Settings,
    family: Family,
    streams: u32,
    download: bool,
) -> Result<Vec<Sample>> {
    let options = Iperf3Options { secs: settings.secs, streams, reverse: download };
    let busy_before = cpu::busy_seconds()?;
    let result = clients::iperf3_to(testbed.worker(path), testbed.server_ip(family), &options)?;
    let busy_secs = cpu::busy_seconds()? - busy_before;
    let gbps = result.bits_per_second / 1e9;
    let gigabytes = result.bytes_received as f64 / 1e9;
    let rate = match (streams, download) {
        (1, false) => family.pick(&TCP_1_UP, &TCP_1_UP_V6),
        (1, true) => family.pick(&TCP_1_DOWN, &TCP_1_DOWN_V6),
        (_, false) => family.pick(&TCP_4_UP, &TCP_4_UP_V6),
        (_, true) => family.pick(&TCP_4_DOWN, &TCP_4_DOWN_V6),
    };
    let mut samples = vec![Sample::new(rate, gbps)];
    if streams == 1 && gigabytes > 0.0 {
        let cpu = match download {
            false => family.pick(&CPU_1_UP, &CPU_1_UP_V6),
            true => family.pick(&CPU_1_DOWN, &CPU_1_DOWN_V6),
        };
        samples.push(Sample::new(cpu, busy_secs / gigabytes));
    }
    Ok(samples)
}
