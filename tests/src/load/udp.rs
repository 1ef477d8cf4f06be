//! Small UDP datagrams per second, counted at the receiver (`udp-rate`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{load_binary, number, result_line};
use crate::netns::Netns;
use crate::process::Daemon;

/// The port `udp-rate recv` listens on in the benchmark.
pub const UDP_RATE_PORT: u16 = 9000;

/// One flood: what the sender sent and what reached the receiver.
#[derive(Clone, Debug)]
pub struct UdpRate {
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    /// Datagrams sent per second (what the sender managed).
    pub sent_per_second: f64,
    /// Datagrams received per second, between the first and the last one.
    pub delivered_per_second: f64,
}

impl UdpRate {
    /// The share of sent datagrams that never arrived (0..=1).
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - (self.received as f64 / self.sent as f64).min(1.0)
    }
}

/// Floods `target` from `sender` with `payload_bytes`-byte datagrams for
/// `secs` seconds; a receiver started in `receiver` (bound to `target`)
/// counts what arrives.
pub fn udp_rate(
    sender: &Netns,
    receiver: &Netns,
    target: impl Into<SocketAddr>,
    payload_bytes: usize,
    secs: f64,
) -> Result<UdpRate> {
    let target = target.into();
    let binary = load_binary("udp-rate")?.display().to_string();
    let mut recv = Daemon::spawn(
        receiver,
        "udp-rate-recv",
        &[binary.as_str(), "recv", "--bind", &target.to_string(), "--wait-secs", "10"],
    )?;
    recv.wait_for_line("listening", Duration::from_secs(10), |l| l.contains("udp-rate ready"))?;
    let out = sender.output(&[
        binary.as_str(),
        "send",
        "--connect",
        &target.to_string(),
        "--size",
        &payload_bytes.to_string(),
        "--secs",
        &secs.to_string(),
    ])?;
    if !out.status.success() {
        bail!("udp-rate send failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let sent = result_line(&String::from_utf8_lossy(&out.stdout), "udp-rate send")?;
    // The receiver ends by itself once the datagrams stop.
    let deadline = Instant::now() + Duration::from_secs(15);
    while recv.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            bail!("udp-rate recv did not finish; its output:\n{}", recv.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let received = result_line(&recv.log(), "udp-rate recv")?;
    Ok(UdpRate {
        sent: number(&sent, "sent")? as u64,
        send_errors: number(&sent, "send_errors")? as u64,
        received: number(&received, "received")? as u64,
        sent_per_second: number(&sent, "per_second")?,
        delivered_per_second: number(&received, "per_second")?,
    })
}
