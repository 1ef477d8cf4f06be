//! 64-byte UDP datagrams per second delivered: one sender thread in the
//! worker floods as fast as it can, the receiver in the outside namespace
//! counts what arrives.

use std::net::SocketAddr;

use anyhow::Result;
use egress_tests::load::{self, UDP_RATE_PORT};

use super::{EgressPath, Family, Metric, Sample, Settings, Testbed};

/// UDP payload bytes per datagram.
pub const PAYLOAD_BYTES: usize = 64;

pub const UDP_DELIVERED: Metric = Metric::higher("udp_delivered_pps", "UDP 64 B, delivered", "kpps");
pub const UDP_SENT: Metric = Metric::higher("udp_sent_pps", "UDP 64 B, offered by the sender", "kpps");
pub const UDP_LOSS: Metric = Metric::lower("udp_loss", "UDP 64 B, lost on the way", "%");
pub const UDP_DELIVERED_V6: Metric =
    Metric::higher("v6_udp_delivered_pps", "IPv6: UDP 64 B, delivered", "kpps");
pub const UDP_SENT_V6: Metric =
    Metric::higher("v6_udp_sent_pps", "IPv6: UDP 64 B, offered by the sender", "kpps");
pub const UDP_LOSS_V6: Metric = Metric::lower("v6_udp_loss", "IPv6: UDP 64 B, lost on the way", "%");

pub fn measure(
    testbed: &Testbed,
    path: EgressPath,
    settings: &Settings,
    family: Family,
) -> Result<Vec<Sample>> {
    let target = SocketAddr::new(testbed.server_ip(family), UDP_RATE_PORT);
    let result =
        load::udp_rate(testbed.worker(path), testbed.outside(), target, PAYLOAD_BYTES, settings.secs)?;
    Ok(vec![
        Sample::new(family.pick(&UDP_DELIVERED, &UDP_DELIVERED_V6), result.delivered_per_second / 1e3),
        Sample::new(family.pick(&UDP_SENT, &UDP_SENT_V6), result.sent_per_second / 1e3),
        Sample::new(family.pick(&UDP_LOSS, &UDP_LOSS_V6), result.loss() * 100.0),
    ])
}
