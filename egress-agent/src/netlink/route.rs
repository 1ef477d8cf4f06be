//! Routes in the main table: replace one, delete one, list a family's.
use std::net::IpAddr;

use anyhow::{Context, Result};

use super::{attribute, attributes, u32_value, Netlink, CHANGE, CREATE_OR_REPLACE};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;

const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;
const RTN_UNREACHABLE: u8 = 7;
const RTNH_F_ONLINK: u32 = 4;

const RTMSG_LEN: usize = 12;

/// A route: to `destination/prefix_len`, via `gateway` out of `device`, or
/// unreachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    pub device: Option<u32>,
    /// The gateway is on the link even if no address of the device covers
    /// it (CNIs such as Calico give pods a /32).
    pub onlink: bool,
    /// The source address for packets this route sends.
    pub source: Option<IpAddr>,
    pub unreachable: bool,
    /// Of two routes to the same destination the lower metric wins; None is
    /// the kernel's default (IPv4 0, IPv6 1024).
    pub metric: Option<u32>,
}

impl Route {
    /// To `destination/prefix_len` via `gateway` on `device`.
    pub fn via(destination: IpAddr, prefix_len: u8, gateway: IpAddr, device: u32) -> Route {
        Route {
            destination,
            prefix_len,
            gateway: Some(gateway),
            device: Some(device),
            onlink: false,
            source: None,
            unreachable: false,
            metric: None,
        }
    }

    /// `destination/prefix_len` is unreachable: sending fails at once.
    pub fn unreachable(destination: IpAddr, prefix_len: u8) -> Route {
        Route {
            destination,
            prefix_len,
            gateway: None,
            device: None,
            onlink: false,
            source: None,
            unreachable: true,
            metric: None,
        }
    }

    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    pub fn with_source(mut self, source: IpAddr) -> Route {
        self.source = Some(source);
        self
    }

    pub fn with_metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unreachable {
            write!(f, "unreachable ")?;
        }
        write!(f, "{}/{}", self.destination, self.prefix_len)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        if let Some(device) = self.device {
            write!(f, " dev {}", super::link::name(device))?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        Ok(())
    }
}

/// Adds the route, or replaces the one to the same destination.
pub fn replace(netlink: &Netlink, route: &Route) -> Result<()> {
    netlink
        .request(RTM_NEWROUTE, CREATE_OR_REPLACE, &encode(route, false))
        .with_context(|| format!("setting the route {route}"))
}

/// Deletes the route; Ok(false) if there was none.
pub fn delete(netlink: &Netlink, route: &Route) -> Result<bool> {
    match netlink.request(RTM_DELROUTE, CHANGE, &encode(route, true)) {
        Ok(()) => Ok(true),
        Err(refused) if refused.errno == libc::ESRCH || refused.errno == libc::ENOENT => Ok(false),
        Err(refused) => Err(refused).with_context(|| format!("deleting the route {route}")),
    }
}

/// Every route of the main table in `family`'s (IPv4 or IPv6) table.
pub fn list(netlink: &Netlink, ipv6: bool) -> Result<Vec<Route>> {
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    let request = [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let answers = netlink.dump(RTM_GETROUTE, &request, RTM_NEWROUTE).context("listing the routes")?;
    Ok(answers.iter().filter_map(|payload| parse(payload)).collect())
}

/// `struct rtmsg` and its attributes. A deletion names the route by its
/// destination, type, device and metric alone (scope "nowhere" matches
/// any; without a metric, an IPv6 deletion takes the first route to the
/// destination, whatever its metric).
fn encode(route: &Route, deleting: bool) -> Vec<u8> {
    let family = if route.destination.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET } as u8;
    let kind = if route.unreachable { RTN_UNREACHABLE } else { RTN_UNICAST };
    let (protocol, scope) = if deleting { (0, RT_SCOPE_NOWHERE) } else { (RTPROT_BOOT, RT_SCOPE_UNIVERSE) };
    let flags = if route.onlink { RTNH_F_ONLINK } else { 0 };
    let mut msg = vec![family, route.prefix_len, 0, 0, RT_TABLE_MAIN, protocol, scope, kind];
    msg.extend_from_slice(&flags.to_ne_bytes());
    if route.prefix_len > 0 {
        msg.extend_from_slice(&attribute(RTA_DST, &octets(route.destination)));
    }
    if let Some(gateway) = route.gateway {
        msg.extend_from_slice(&attribute(RTA_GATEWAY, &octets(gateway)));
    }
    if let Some(device) = route.device {
        msg.extend_from_slice(&attribute(RTA_OIF, &device.to_ne_bytes()));
    }
    if let Some(source) = route.source {
        msg.extend_from_slice(&attribute(RTA_PREFSRC, &octets(source)));
    }
    if let Some(metric) = route.metric {
        msg.extend_from_slice(&attribute(RTA_PRIORITY, &metric.to_ne_bytes()));
    }
    msg
}

/// A dumped route, if it is in the main table.
fn parse(payload: &[u8]) -> Option<Route> {
    let header = payload.get(..RTMSG_LEN)?;
    let ipv6 = header[0] == libc::AF_INET6 as u8;
    let mut table = header[4] as u32;
    let mut route = Route {
        destination: if ipv6 { IpAddr::from([0u8; 16]) } else { IpAddr::from([0u8; 4]) },
        prefix_len: header[1],
        gateway: None,
        device: None,
        onlink: u32_value(&header[8..12]).is_some_and(|f| f & RTNH_F_ONLINK != 0),
        source: None,
        unreachable: header[7] == RTN_UNREACHABLE,
        metric: None,
    };
    for (kind, value) in attributes(&payload[RTMSG_LEN..]) {
        match kind {
            RTA_DST => route.destination = address(value)?,
            RTA_GATEWAY => route.gateway = address(value),
            RTA_PREFSRC => route.source = address(value),
            RTA_OIF => route.device = u32_value(value),
            RTA_PRIORITY => route.metric = u32_value(value),
            RTA_TABLE => table = u32_value(value).unwrap_or(table),
            _ => {}
        }
    }
    (table == RT_TABLE_MAIN as u32).then_some(route)
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn address(value: &[u8]) -> Option<IpAddr> {
    match value.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_route_reads_back_as_written() {
        let route = Route::via("10.96.0.0".parse().unwrap(), 12, "169.254.1.1".parse().unwrap(), 3)
            .onlink()
            .with_source(IpAddr::V4(Ipv4Addr::new(10, 244, 1, 5)));
        assert_eq!(parse(&encode(&route, false)), Some(route));
        let default = Route::via("0.0.0.0".parse().unwrap(), 0, "169.254.1.1".parse().unwrap(), 3);
        assert_eq!(parse(&encode(&default, false)), Some(default));
        let half = Route::unreachable("8000::".parse().unwrap(), 1);
        assert_eq!(parse(&encode(&half, false)), Some(half));
        let floor = Route::unreachable("::".parse().unwrap(), 1).with_metric(4096);
        assert_eq!(parse(&encode(&floor, false)), Some(floor));
        let tunnel = Route::via("8000::".parse().unwrap(), 1, "fe80::42:1".parse().unwrap(), 9)
            .with_source("fd00:10:244:1::11".parse().unwrap());
        assert_eq!(parse(&encode(&tunnel, false)), Some(tunnel));
    }

    #[test]
    fn routes_of_other_tables_are_left_out() {
        let mut local = encode(&Route::unreachable("::".parse().unwrap(), 1), false);
        local[4] = 255;
        assert_eq!(parse(&local), None);
    }
}
