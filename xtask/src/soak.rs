//! `cargo xtask soak`: ten minutes (by default) of mixed traffic through the
//! gateway on the namespace cluster (egress_tests::soak), then the verdict:
//! every flow expired once the traffic stopped, no connection failed, the
//! agent's memory stayed flat. Exits non-zero when one of those fails.
use std::time::Duration;

use anyhow::{bail, Result};
use egress_tests::{netns, scenario::GatewayOptions, soak};

use crate::{
    run::{is_root, workspace_root},
    toolchain,
};

/// How much the agent's RSS may grow between the first and the last third
/// of the run before the soak calls it a leak.
const RSS_GROWTH_LIMIT_KIB: u64 = 8 * 1024;

pub fn run(minutes: f64) -> Result<()> {
    if !is_root() {
        bail!(
            "the soak creates network namespaces and loads an eBPF program: run `cargo xtask soak` as root"
        );
    }
    if !(0.5..=600.0).contains(&minutes) {
        bail!("--minutes must be between 0.5 and 600");
    }
    egress_tests::tools::ensure_packages()?;
    toolchain::build_all()?;
    let prefix = netns::run_prefix();
    netns::install_signal_cleanup(&prefix)?;
    let options = GatewayOptions {
        agent_binary: Some(toolchain::agent_binary()),
        echo_server: Some(workspace_root().join("target/release/echo-server")),
        ..GatewayOptions::default()
    };
    println!(
        "==> soak: {minutes} min of short connections (w1), one long stream (w3) and new UDP flows (w1)"
    );
    let report = soak::run(options, Duration::from_secs_f64(minutes * 60.0), Duration::from_secs(10));
    netns::cleanup_prefix(&prefix);
    let report = report?;
    println!("{:>8} {:>12} {:>12}", "second", "agent MiB", "NAT bindings");
    for (secs, rss_kib, bindings) in &report.samples {
        println!("{secs:>8.0} {:>12.1} {bindings:>12}", *rss_kib as f64 / 1024.0);
    }
    println!("{}", report.describe());
    let (first, last) = report.rss_first_and_last_kib();
    let mut failures = Vec::new();
    if report.bindings_after_drain != 0 {
        failures.push(format!("{} flows were left after the timeouts", report.bindings_after_drain));
    }
    if report.connection_errors != 0 || report.udp_errors != 0 {
        failures.push(format!(
            "{} short connections and {} UDP flows failed",
            report.connection_errors, report.udp_errors
        ));
    }
    if last > first + RSS_GROWTH_LIMIT_KIB {
        failures.push(format!("the agent's RSS grew from {first} KiB to {last} KiB"));
    }
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    println!("soak passed");
    Ok(())
}
