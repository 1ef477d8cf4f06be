//! Whole-machine CPU time from `/proc/stat`.
//!
//! Everything the benchmark runs (clients, servers, the nodes' and the
//! gateways' packet processing in softirq) shares this one machine, so the
//! busy time of all CPUs is the cost of moving the traffic end to end.

use anyhow::{anyhow, Context, Result};

/// Busy CPU time of all CPUs so far: user + nice + system + irq + softirq
/// (idle, iowait and steal excluded), in seconds.
pub fn busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("/proc/stat has no `cpu` line"))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    let busy_ticks: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    Ok(busy_ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The share of the whole machine (0..=1) busy over `window` while the
/// benchmark itself is idle: other work that would distort the numbers.
pub fn background_load(window: std::time::Duration) -> Result<f64> {
    let before = busy_seconds()?;
    std::thread::sleep(window);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    Ok(((busy_seconds()? - before) / window.as_secs_f64() / cores).max(0.0))
}
