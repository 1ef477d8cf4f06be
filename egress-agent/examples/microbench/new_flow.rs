//! The new-flow path: conntrack miss, NAT port allocation, two NOEXIST
//! inserts, then the same rewrite as an established packet.
//!
//! A packet creates its flow only once, so `repeat` cannot time it: every
//! flow here is a distinct packet (another client port or destination) run
//! once, and the durations of those single runs are summarized.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Result};
use egress_agent::datapath::loader::Datapath;
use egress_common::{
    config::{DEFAULT_NAT_PORT_MAX, DEFAULT_NAT_PORT_MIN},
    conntrack::Binding,
    maps::CT_MAX_DEFAULT,
    ports::range_len,
};

use crate::{
    common::{CLIENT_IP, GATEWAY_IP, REMOTE_IP, TC_ACT_REDIRECT, TC_ACT_SHOT},
    datapath::{self, counter},
    flows::Flow,
    random::XorShift,
    report::Report,
    timing::{run, run_each, Calibration, Stats},
};

/// New flows spread over many destinations, into empty maps.
pub fn measure(
    report: &mut Report,
    calibration: &Calibration,
    flows: u32,
    object: Option<&Path>,
) -> Result<()> {
    let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
    let packets: Vec<Vec<u8>> = (0..flows).map(|i| Flow::spread(i).syn()).collect();
    let mut durations =
        run_each(&mut dp, packets.iter().map(Vec::as_slice), TC_ACT_REDIRECT, "a new flow's SYN")?;
    let created = counter(&dp, "flow_created")?;
    if created != flows as u64 {
        bail!("{flows} SYNs created {created} flows");
    }
    let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
    let label = format!("new flow (TCP SYN; {}k distinct flows into empty maps)", flows / 1000);
    report.add(format!("{label}: median"), stats.median, "ns/packet");
    report.add(format!("{label}: mean"), stats.mean, "ns/packet");
    report.add(format!("{label}: p99"), stats.p99, "ns/packet");
    Ok(())
}

/// New flows to one destination whose NAT ports are already partly taken,
/// at random places: the client's own port is tried first (port
/// preservation), then up to `--port-retries` (96) random ports, each
/// looked up before it is claimed; a flow that finds none is dropped as
/// exhausted. The probes come from ports of Linux's default ephemeral range
/// (what worker pods use), so their own port is taken as often as any.
/// Each probe flow is removed again after it is measured, so the occupancy
/// stays where it was set.
pub fn measure_crowded(
    report: &mut Report,
    calibration: &Calibration,
    occupancies_percent: &[u32],
    probes: u32,
    object: Option<&Path>,
) -> Result<()> {
    let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
    let ports = range_len(DEFAULT_NAT_PORT_MIN, DEFAULT_NAT_PORT_MAX);
    let mut filler = Filler::new(&mut dp)?;
    let mut random = XorShift(0x2545_f491_4f6c_dd1d);
    for &percent in occupancies_percent {
        let target = ports * percent / 100;
        while filler.bound < target {
            filler.bind_one(&mut dp)?;
        }
        let mut durations = Vec::with_capacity(probes as usize);
        let mut exhausted = 0u32;
        for _ in 0..probes {
            let client_port = PROBE_PORTS.0 + random.below((PROBE_PORTS.1 - PROBE_PORTS.0 + 1) as u32) as u16;
            let flow = Flow::to_one_destination(CLIENT_IP, client_port, REMOTE_IP);
            let result = run(&mut dp, &flow.syn(), 1)?;
            durations.push(result.duration_ns);
            match result.action {
                TC_ACT_REDIRECT => remove_flow(&mut dp, &flow)?,
                TC_ACT_SHOT => exhausted += 1,
                other => bail!("a probe SYN returned {}", other as i32),
            }
        }
        let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
        let label = format!("new flow to one destination with {percent}% of its {ports} NAT ports taken");
        report.add(format!("{label}: mean"), stats.mean, "ns/packet");
        report.add(format!("{label}: dropped as exhausted"), 100.0 * exhausted as f64 / probes as f64, "%");
    }
    Ok(())
}

/// Linux's default ephemeral ports, where a worker pod's flows come from.
const PROBE_PORTS: (u16, u16) = (32_768, 60_999);

/// Takes one destination's NAT ports at random places: flows from ports
/// outside the NAT range (so none keeps its own), spread over as many extra
/// clients as that needs.
struct Filler {
    outside_ports: Vec<u16>,
    clients: Vec<Ipv4Addr>,
    next: usize,
    bound: u32,
}

impl Filler {
    fn new(dp: &mut Datapath) -> Result<Filler> {
        let outside_ports: Vec<u16> = (1024..=u16::MAX)
            .filter(|p| !(DEFAULT_NAT_PORT_MIN..=DEFAULT_NAT_PORT_MAX).contains(p))
            .collect();
        let needed = range_len(DEFAULT_NAT_PORT_MIN, DEFAULT_NAT_PORT_MAX) as usize;
        let clients: Vec<Ipv4Addr> =
            (0..needed.div_ceil(outside_ports.len()) as u8).map(|i| Ipv4Addr::new(10, 1, 9, 1 + i)).collect();
        for (i, client) in clients.iter().enumerate() {
            dp.maps.add_client(*client, 10 + i as u32)?;
        }
        Ok(Filler { outside_ports, clients, next: 0, bound: 0 })
    }

    fn bind_one(&mut self, dp: &mut Datapath) -> Result<()> {
        let (client, port) = (self.next / self.outside_ports.len(), self.next % self.outside_ports.len());
        let Some(&client_ip) = self.clients.get(client) else { bail!("the filler ran out of flows") };
        self.next += 1;
        let syn = Flow::to_one_destination(client_ip, self.outside_ports[port], REMOTE_IP).syn();
        if run(dp, &syn, 1)?.action == TC_ACT_REDIRECT {
            self.bound += 1;
        }
        Ok(())
    }
}

/// Removes both conntrack halves of `flow`, as the sweep would.
fn remove_flow(dp: &mut Datapath, flow: &Flow) -> Result<()> {
    let original = flow.original_tuple();
    let entry = dp.maps.ct_original.get(&original, 0)?;
    dp.maps.ct_original.remove(&original)?;
    dp.maps.ct_reply.remove(&entry.reply_tuple(u32::from(GATEWAY_IP).to_be()))?;
    Ok(())
}
