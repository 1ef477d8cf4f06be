//! NAT port exhaustion, said once per destination and sweep: which
//! destination ran out, how many new flows it cost, and what to change.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Result;
use egress_common::{
    config::GatewayConfig,
    maps::{NatDestination, NatDestination6},
};

use crate::datapath::{conntrack::protocol_name, maps::DatapathMaps};

/// A destination, of either family, whose NAT ports are allocated apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Destination {
    pub ip: IpAddr,
    /// 0 for echo.
    pub port: u16,
    pub protocol: u8,
}

impl From<&NatDestination> for Destination {
    fn from(d: &NatDestination) -> Destination {
        let ip = Ipv4Addr::from(u32::from_be(d.remote_ip_be)).into();
        Destination { ip, port: u16::from_be(d.remote_port_be), protocol: d.protocol }
    }
}

impl From<&NatDestination6> for Destination {
    fn from(d: &NatDestination6) -> Destination {
        let ip = Ipv6Addr::from(d.remote_ip).into();
        Destination { ip, port: u16::from_be(d.remote_port_be), protocol: d.protocol }
    }
}

/// New flows dropped for want of a NAT port, by destination, both
/// families (the destinations the datapath's LRUs still remember).
pub fn totals(maps: &DatapathMaps) -> Result<BTreeMap<Destination, u64>> {
    let ipv4 = maps.nat_exhausted()?.into_iter().map(|(d, dropped)| (Destination::from(&d), dropped));
    let ipv6 = maps.nat_exhausted6()?.into_iter().map(|(d, dropped)| (Destination::from(&d), dropped));
    Ok(ipv4.chain(ipv6).collect())
}

/// `203.0.113.7:443/tcp` (`203.0.113.7/icmp` for echo), `[2001:db8::7]:443/tcp`.
pub fn describe(destination: &Destination) -> String {
    let protocol = protocol_name(destination.protocol);
    match (destination.port, destination.ip) {
        (0, ip) => format!("{ip}/{protocol}"),
        (port, ip) => format!("{}/{protocol}", std::net::SocketAddr::new(ip, port)),
    }
}

/// The datapath's per-destination drop counts as last reported.
#[derive(Default)]
pub struct ExhaustionLog {
    reported: BTreeMap<Destination, u64>,
}

impl ExhaustionLog {
    /// One line for each destination whose count rose since the last call.
    pub fn new_lines(&mut self, totals: &BTreeMap<Destination, u64>, cfg: &GatewayConfig) -> Vec<String> {
        let ports = (cfg.nat_port_max - cfg.nat_port_min) as u32 + 1;
        let mut lines = Vec::new();
        for (destination, total) in totals {
            let before = self.reported.get(destination).copied().unwrap_or(0);
            // A count below the last one is a destination the LRU forgot and
            // met again: all of it is new.
            let dropped = if *total >= before { total - before } else { *total };
            if dropped > 0 {
                lines.push(format!(
                    "NAT ports exhausted towards {}: {dropped} new {} dropped since the last sweep (all {ports} ports of --nat-ports {}-{} are bound to it); widen --nat-ports, shorten the idle timeouts, or spread the clients over more gateways",
                    describe(destination),
                    if dropped == 1 { "flow" } else { "flows" },
                    cfg.nat_port_min,
                    cfg.nat_port_max,
                ));
            }
        }
        self.reported = totals.clone();
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(port: u16, protocol: u8) -> Destination {
        let ip = Ipv4Addr::new(203, 0, 113, 7);
        Destination::from(&NatDestination {
            remote_ip_be: u32::from(ip).to_be(),
            remote_port_be: port.to_be(),
            protocol,
            _pad: 0,
        })
    }

    #[test]
    fn an_ipv6_destination_is_written_with_its_port_apart() {
        let d = NatDestination6 {
            remote_ip: "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets(),
            remote_port_be: 443u16.to_be(),
            protocol: 6,
            _pad: 0,
        };
        assert_eq!(describe(&Destination::from(&d)), "[2001:db8::7]:443/tcp");
        let echo = NatDestination6 { remote_port_be: 0, protocol: 58, ..d };
        assert_eq!(describe(&Destination::from(&echo)), "2001:db8::7/icmpv6");
    }

    #[test]
    fn one_line_per_destination_that_lost_flows_since_the_last_sweep() {
        let cfg =
            GatewayConfig { nat_port_min: 10_240, nat_port_max: 10_241, ..unsafe { core::mem::zeroed() } };
        let (https, ping) = (destination(443, 6), destination(0, 1));
        let mut log = ExhaustionLog::default();
        let lines = log.new_lines(&BTreeMap::from([(https, 3), (ping, 1)]), &cfg);
        assert_eq!(lines.len(), 2);
        let line = |prefix: &str| lines.iter().find(|l| l.starts_with(prefix)).cloned();
        let tcp = line("NAT ports exhausted towards 203.0.113.7:443/tcp: 3 new flows dropped").unwrap();
        assert!(tcp.contains("all 2 ports of --nat-ports 10240-10241"), "{tcp}");
        assert!(
            line("NAT ports exhausted towards 203.0.113.7/icmp: 1 new flow dropped").is_some(),
            "{lines:?}"
        );
        // Nothing new: silence. More drops: only the difference.
        assert!(log.new_lines(&BTreeMap::from([(https, 3), (ping, 1)]), &cfg).is_empty());
        let lines = log.new_lines(&BTreeMap::from([(https, 10), (ping, 1)]), &cfg);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains(": 7 new flows"), "{}", lines[0]);
        // Forgotten by the LRU and back with a fresh count.
        let lines = log.new_lines(&BTreeMap::from([(https, 2)]), &cfg);
        assert!(lines[0].contains(": 2 new flows"), "{}", lines[0]);
    }
}
