//! Links: look one up, create the worker's VXLAN device and the gateway's
//! veth pair, set MTU and up, move a VXLAN remote, delete.
use std::{
    ffi::CString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result};

use super::{attribute, attributes, c_string, nested, string_value, u32_value, Netlink, CHANGE, CREATE_NEW};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const VETH_INFO_PEER: u16 = 1;

const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_GROUP: u16 = 2;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT_RANGE: u16 = 10;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_GROUP6: u16 = 16;
const IFLA_VXLAN_LOCAL6: u16 = 17;
const IFLA_VXLAN_UDP_CSUM: u16 = 18;
const IFLA_VXLAN_UDP_ZERO_CSUM6_TX: u16 = 19;
const IFLA_VXLAN_UDP_ZERO_CSUM6_RX: u16 = 20;

const IFINFOMSG_LEN: usize = 16;

/// What the agent reads back of a link.
#[derive(Debug, Default)]
pub struct Link {
    pub index: u32,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    /// IFLA_INFO_KIND: "vxlan", "veth", ...; None for a plain device.
    pub kind: Option<String>,
    /// Set for a VXLAN device.
    pub vxlan: Option<Vxlan>,
}

/// A VXLAN device's settings, as read back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Vxlan {
    pub vni: u32,
    pub port: u16,
    pub remote: Option<IpAddr>,
}

/// The worker's tunnel device, as `join` creates it.
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    pub vni: u32,
    /// The outer header's addresses, both of one family: IPv6 in an
    /// IPv6-only cluster.
    pub remote: IpAddr,
    pub local: IpAddr,
    /// The device the outer packets leave by (eth0).
    pub underlay: u32,
    /// Destination port, and the one source port.
    pub port: u16,
}

/// The link `name`'s index; None if there is none in this namespace.
pub fn index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: if_nametoindex(3) reads a NUL-terminated string we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of link `index`, or `#index` if it has none (any more).
pub fn name(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname(3) writes at most IF_NAMESIZE bytes, NUL
    // included, into a buffer of that size that we own.
    let found = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if found.is_null() {
        return format!("#{index}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// Looks `name` up; None if there is no such link.
pub fn get(netlink: &Netlink, name: &str) -> Result<Option<Link>> {
    let Some(index) = index(name) else { return Ok(None) };
    netlink
        .send(RTM_GETLINK, libc::NLM_F_REQUEST as u16, &ifinfomsg(index, 0, 0))
        .with_context(|| format!("asking for the link {name}"))?;
    let mut buf = vec![0u8; 32 * 1024];
    for message in netlink.receive(&mut buf).with_context(|| format!("reading the link {name}"))? {
        if message.kind == RTM_NEWLINK {
            return Ok(Some(parse(message.payload)));
        }
        if message.kind == super::NLMSG_ERROR {
            match super::refusal(&message) {
                // Gone between the two calls.
                Some(r) if r.errno == libc::ENODEV => return Ok(None),
                Some(r) => return Err(r).with_context(|| format!("reading the link {name}")),
                None => {}
            }
        }
    }
    anyhow::bail!("no answer for the link {name}")
}

fn parse(payload: &[u8]) -> Link {
    let mut link = Link { index: payload.get(4..8).and_then(u32_value).unwrap_or(0), ..Link::default() };
    for (kind, value) in attributes(payload.get(IFINFOMSG_LEN..).unwrap_or_default()) {
        match kind {
            IFLA_MTU => link.mtu = u32_value(value).unwrap_or(0),
            IFLA_ADDRESS => link.mac = value.try_into().ok(),
            IFLA_LINKINFO => {
                for (info, value) in attributes(value) {
                    match info {
                        IFLA_INFO_KIND => link.kind = Some(c_string(value)),
                        IFLA_INFO_DATA => link.vxlan = Some(parse_vxlan(value)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if link.kind.as_deref() != Some("vxlan") {
        link.vxlan = None;
    }
    link
}

fn parse_vxlan(data: &[u8]) -> Vxlan {
    let mut vxlan = Vxlan::default();
    for (kind, value) in attributes(data) {
        match kind {
            IFLA_VXLAN_ID => vxlan.vni = u32_value(value).unwrap_or(0),
            IFLA_VXLAN_PORT => vxlan.port = value.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])),
            IFLA_VXLAN_GROUP => {
                vxlan.remote = <[u8; 4]>::try_from(value).ok().map(|b| Ipv4Addr::from(b).into())
            }
            IFLA_VXLAN_GROUP6 => {
                vxlan.remote = <[u8; 16]>::try_from(value).ok().map(|b| Ipv6Addr::from(b).into())
            }
            _ => {}
        }
    }
    vxlan
}

/// Creates the VXLAN device: one fixed source port, no outer UDP checksum,
/// no learning (see `join` for why). With an IPv6 outer header, zero
/// checksums are sent and accepted (RFC 6935 allows them for tunnels; the
/// kernel drops zero-checksum UDP over IPv6 otherwise).
pub fn add_vxlan(netlink: &Netlink, spec: &VxlanSpec) -> Result<()> {
    let port = spec.port.to_be_bytes();
    let port_end = (spec.port.wrapping_add(1)).to_be_bytes();
    let mut data = vec![attribute(IFLA_VXLAN_ID, &spec.vni.to_ne_bytes())];
    data.extend(outer_addresses(spec.remote, spec.local)?);
    data.extend([
        attribute(IFLA_VXLAN_LINK, &spec.underlay.to_ne_bytes()),
        attribute(IFLA_VXLAN_PORT, &port),
        attribute(IFLA_VXLAN_PORT_RANGE, &[port, port_end].concat()),
        attribute(IFLA_VXLAN_LEARNING, &[0]),
    ]);
    let request = [
        ifinfomsg(0, 0, 0),
        attribute(IFLA_IFNAME, &string_value(spec.name)),
        attribute(IFLA_ADDRESS, &spec.mac),
        nested(IFLA_LINKINFO, &[attribute(IFLA_INFO_KIND, b"vxlan\0"), nested(IFLA_INFO_DATA, &data)]),
    ]
    .concat();
    netlink.request(RTM_NEWLINK, CREATE_NEW, &request).with_context(|| {
        format!("creating the VXLAN device {} (VNI {}) to {}", spec.name, spec.vni, spec.remote)
    })
}

/// The outer addresses of a VXLAN device, and its zero-checksum settings.
fn outer_addresses(remote: IpAddr, local: IpAddr) -> Result<Vec<Vec<u8>>> {
    Ok(match (remote, local) {
        (IpAddr::V4(remote), IpAddr::V4(local)) => vec![
            attribute(IFLA_VXLAN_GROUP, &remote.octets()),
            attribute(IFLA_VXLAN_LOCAL, &local.octets()),
            attribute(IFLA_VXLAN_UDP_CSUM, &[0]),
        ],
        (IpAddr::V6(remote), IpAddr::V6(local)) => vec![
            attribute(IFLA_VXLAN_GROUP6, &remote.octets()),
            attribute(IFLA_VXLAN_LOCAL6, &local.octets()),
            attribute(IFLA_VXLAN_UDP_ZERO_CSUM6_TX, &[1]),
            attribute(IFLA_VXLAN_UDP_ZERO_CSUM6_RX, &[1]),
        ],
        _ => anyhow::bail!(
            "the tunnel to {remote} cannot start at {local}: the two are of different IP families"
        ),
    })
}

/// Creates the veth pair `name` and `peer`, both with `mtu`.
pub fn add_veth(netlink: &Netlink, name: &str, peer: &str, mtu: u32) -> Result<()> {
    let peer_info = [
        ifinfomsg(0, 0, 0),
        attribute(IFLA_IFNAME, &string_value(peer)),
        attribute(IFLA_MTU, &mtu.to_ne_bytes()),
    ]
    .concat();
    let request = [
        ifinfomsg(0, 0, 0),
        attribute(IFLA_IFNAME, &string_value(name)),
        attribute(IFLA_MTU, &mtu.to_ne_bytes()),
        nested(
            IFLA_LINKINFO,
            &[
                attribute(IFLA_INFO_KIND, b"veth\0"),
                nested(IFLA_INFO_DATA, &[attribute(VETH_INFO_PEER, &peer_info)]),
            ],
        ),
    ]
    .concat();
    netlink
        .request(RTM_NEWLINK, CREATE_NEW, &request)
        .with_context(|| format!("creating the veth pair {name} and {peer}"))
}

/// Sets the link's MTU, when given, and brings it up, when asked.
pub fn set(netlink: &Netlink, index: u32, mtu: Option<u32>, up: bool) -> Result<()> {
    let (flags, change) = if up { (libc::IFF_UP as u32, libc::IFF_UP as u32) } else { (0, 0) };
    let mut request = ifinfomsg(index, flags, change);
    if let Some(mtu) = mtu {
        request.extend_from_slice(&attribute(IFLA_MTU, &mtu.to_ne_bytes()));
    }
    netlink.request(RTM_NEWLINK, CHANGE, &request).with_context(|| match mtu {
        Some(mtu) => format!("setting the MTU of {} to {mtu}", name(index)),
        None => format!("bringing {} up", name(index)),
    })
}

/// No IPv6 link-local address on the link (`addrgenmode none`).
pub fn set_no_ipv6_address(netlink: &Netlink, index: u32) -> Result<()> {
    let mode =
        nested(libc::AF_INET6 as u16, &[attribute(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE])]);
    let request = [ifinfomsg(index, 0, 0), nested(IFLA_AF_SPEC, &[mode])].concat();
    netlink
        .request(RTM_NEWLINK, CHANGE, &request)
        .with_context(|| format!("turning off IPv6 address generation on {}", name(index)))
}

/// Points the VXLAN device at `remote` in place: one RTM_NEWLINK on the
/// existing link with only its remote in it. Routes and neighbour stay.
pub fn set_vxlan_remote(netlink: &Netlink, index: u32, remote: IpAddr) -> Result<()> {
    netlink
        .request(RTM_NEWLINK, CHANGE, &vxlan_remote_request(index, remote))
        .with_context(|| format!("pointing the tunnel device at {remote}"))
}

/// `struct ifinfomsg` for link `index`, then IFLA_LINKINFO { KIND "vxlan",
/// DATA { GROUP (or GROUP6) remote } }.
fn vxlan_remote_request(index: u32, remote: IpAddr) -> Vec<u8> {
    let group = match remote {
        IpAddr::V4(v4) => attribute(IFLA_VXLAN_GROUP, &v4.octets()),
        IpAddr::V6(v6) => attribute(IFLA_VXLAN_GROUP6, &v6.octets()),
    };
    let data = nested(IFLA_INFO_DATA, &[group]);
    let info = nested(IFLA_LINKINFO, &[attribute(IFLA_INFO_KIND, b"vxlan\0"), data]);
    [ifinfomsg(index, 0, 0), info].concat()
}

/// Deletes the link (a veth pair goes with either end).
pub fn delete(netlink: &Netlink, index: u32) -> Result<()> {
    netlink
        .request(RTM_DELLINK, CHANGE, &ifinfomsg(index, 0, 0))
        .with_context(|| format!("deleting {}", name(index)))
}

/// `struct ifinfomsg`: any family, link `index`, `flags` where `change`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut msg = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    msg.extend_from_slice(&(index as i32).to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&change.to_ne_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_request_nests_kind_and_group() {
        let request = vxlan_remote_request(7, Ipv4Addr::new(10, 244, 2, 20).into());
        assert_eq!(request.len(), 16 + 4 + 12 + 12);
        assert_eq!(&request[4..8], &7i32.to_ne_bytes());
        // IFLA_LINKINFO, nested, spanning the rest.
        assert_eq!(u16::from_ne_bytes([request[16], request[17]]) as usize, request.len() - 16);
        assert_eq!(&request[24..29], b"vxlan");
        assert_eq!(&request[40..44], &[10, 244, 2, 20]);
    }

    #[test]
    fn an_ipv6_outer_has_group6_local6_and_zero_checksums() {
        let remote: Ipv6Addr = "fd00:10:96::10".parse().unwrap();
        let local: Ipv6Addr = "fd00:10:244:1::11".parse().unwrap();
        let attrs = outer_addresses(remote.into(), local.into()).unwrap();
        let kinds: Vec<u16> = attrs.iter().map(|a| u16::from_ne_bytes([a[2], a[3]])).collect();
        assert_eq!(
            kinds,
            [
                IFLA_VXLAN_GROUP6,
                IFLA_VXLAN_LOCAL6,
                IFLA_VXLAN_UDP_ZERO_CSUM6_TX,
                IFLA_VXLAN_UDP_ZERO_CSUM6_RX
            ]
        );
        assert_eq!(&attrs[0][4..], &remote.octets());
        assert!(outer_addresses(remote.into(), Ipv4Addr::new(10, 0, 0, 1).into()).is_err());
        let request = vxlan_remote_request(7, remote.into());
        assert_eq!(&request[38..40], &IFLA_VXLAN_GROUP6.to_ne_bytes());
        assert_eq!(&request[40..56], &remote.octets());
    }

    #[test]
    fn a_vxlan_link_reads_back() {
        let data = [
            attribute(IFLA_VXLAN_ID, &42u32.to_ne_bytes()),
            attribute(IFLA_VXLAN_GROUP, &[10, 96, 0, 10]),
            attribute(IFLA_VXLAN_PORT, &4789u16.to_be_bytes()),
        ];
        let payload = [
            ifinfomsg(9, 0, 0),
            attribute(IFLA_MTU, &1400u32.to_ne_bytes()),
            attribute(IFLA_ADDRESS, &[6, 0x65, 10, 244, 1, 5]),
            nested(IFLA_LINKINFO, &[attribute(IFLA_INFO_KIND, b"vxlan\0"), nested(IFLA_INFO_DATA, &data)]),
        ]
        .concat();
        let link = parse(&payload);
        assert_eq!((link.index, link.mtu, link.kind.as_deref()), (9, 1400, Some("vxlan")));
        assert_eq!(link.mac, Some([6, 0x65, 10, 244, 1, 5]));
        assert_eq!(
            link.vxlan,
            Some(Vxlan { vni: 42, port: 4789, remote: Some(Ipv4Addr::new(10, 96, 0, 10).into()) })
        );
        let vip6: Ipv6Addr = "fd00:10:96::10".parse().unwrap();
        let data6 =
            [attribute(IFLA_VXLAN_ID, &42u32.to_ne_bytes()), attribute(IFLA_VXLAN_GROUP6, &vip6.octets())];
        let payload6 = [
            ifinfomsg(9, 0, 0),
            nested(IFLA_LINKINFO, &[attribute(IFLA_INFO_KIND, b"vxlan\0"), nested(IFLA_INFO_DATA, &data6)]),
        ]
        .concat();
        assert_eq!(parse(&payload6).vxlan.and_then(|v| v.remote), Some(vip6.into()), "an IPv6 remote");
    }
}
