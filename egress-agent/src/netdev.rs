//! Facts about network interfaces and the current network namespace.
use std::{
    ffi::CStr,
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt,
};

use anyhow::{bail, Context, Result};

use crate::netlink::{link, Netlink};

/// An interface the agent works on.
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    /// None in an IPv6-only pod.
    pub ipv4: Option<Ipv4Addr>,
    /// Its first global IPv6 address, if it has one (a dual-stack pod).
    pub ipv6: Option<Ipv6Addr>,
    pub mtu: u32,
}

impl Interface {
    /// Its IPv4 address, for what needs one: `what` says who, in the line
    /// that says it is missing.
    pub fn require_ipv4(&self, what: &str) -> Result<Ipv4Addr> {
        self.ipv4.with_context(|| {
            format!("interface {} has no IPv4 address, which {what} needs: give it one or pick another --interface", self.name)
        })
    }

    /// Looks up `name`, failing with a line that says what is missing.
    /// The index and MTU come over netlink, not /sys/class/net: sysfs shows
    /// the namespace it was mounted in, which need not be this process's.
    pub fn lookup(name: &str) -> Result<Interface> {
        let netlink = Netlink::route()?;
        let link = link::get(&netlink, name)?.with_context(|| {
            format!("interface {name} not found in this network namespace: check --interface")
        })?;
        let addresses = addresses(name)?;
        if addresses.ipv4.is_none() && addresses.ipv6.is_none() {
            bail!("interface {name} has neither an IPv4 nor a global IPv6 address: give it one or pick another --interface");
        }
        Ok(Interface {
            name: name.to_string(),
            ifindex: link.index,
            ipv4: addresses.ipv4,
            ipv6: addresses.ipv6,
            mtu: link.mtu,
        })
    }
}

/// The index of interface `name`, or a line naming the flag to check.
pub fn ifindex(name: &str) -> Result<u32> {
    link::index(name)
        .with_context(|| format!("interface {name} not found in this network namespace: check --interface"))
}

/// The first address of each family an interface has.
struct Addresses {
    ipv4: Option<Ipv4Addr>,
    /// Global only: a link-local address cannot be the source of traffic
    /// that leaves the link.
    ipv6: Option<Ipv6Addr>,
}

fn addresses(name: &str) -> Result<Addresses> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut found = Addresses { ipv4: None, ipv6: None };
    let mut cur = addrs;
    while !cur.is_null() {
        let ifa = unsafe { &*cur };
        let ifa_name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if ifa_name == name && !ifa.ifa_addr.is_null() {
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET && found.ipv4.is_none() {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                found.ipv4 = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            } else if family == libc::AF_INET6 && found.ipv6.is_none() {
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let address = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if is_global_unicast(&address) {
                    found.ipv6 = Some(address);
                }
            }
        }
        cur = ifa.ifa_next;
    }
    unsafe { libc::freeifaddrs(addrs) };
    Ok(found)
}

/// Not ::, ::1, link-local (fe80::/10) or multicast: an address a pod can
/// be reached at from outside its link (unique local ones included).
pub fn is_global_unicast(address: &Ipv6Addr) -> bool {
    !(address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.segments()[0] & 0xffc0 == 0xfe80)
}

/// Identity of this process's network namespace.
pub fn netns_inode() -> Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net").context("reading /proc/self/ns/net")?.ino())
}

/// This namespace's ephemeral port range (net.ipv4.ip_local_port_range).
pub fn ephemeral_port_range() -> Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => bail!("unexpected contents of {path}: {text:?}"),
    }
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Parses `a.b.c.d/len` (a bare address means /32).
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l),
        None => (text, "32"),
    };
    let addr: Ipv4Addr =
        addr.parse().with_context(|| format!("invalid CIDR {text:?}: expected IPv4 like 10.0.0.0/8"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .with_context(|| format!("invalid CIDR {text:?}: prefix length must be 0-32"))?;
    Ok((addr, len))
}

/// An IPv6 CIDR such as `fd00:10:244::/56` (a bare address is a /128).
pub fn parse_ipv6_cidr(text: &str) -> Result<(Ipv6Addr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, l),
        None => (text, "128"),
    };
    let addr: Ipv6Addr = addr
        .parse()
        .with_context(|| format!("invalid CIDR {text:?}: expected IPv6 like fd00:10:244::/56"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 128)
        .with_context(|| format!("invalid CIDR {text:?}: prefix length must be 0-128"))?;
    Ok((addr, len))
}

/// CIDRs of both families, as a repeatable flag gives them (`--cluster-cidr`,
/// `--exclude-cidr`): an IPv6 one has a colon.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cidrs {
    pub v4: Vec<(Ipv4Addr, u8)>,
    pub v6: Vec<(Ipv6Addr, u8)>,
}

impl Cidrs {
    pub fn parse<'a>(texts: impl IntoIterator<Item = &'a String>) -> Result<Cidrs> {
        let (v6, v4): (Vec<&String>, Vec<&String>) = texts.into_iter().partition(|c| c.contains(':'));
        Ok(Cidrs {
            v4: v4.into_iter().map(|c| parse_cidr(c)).collect::<Result<_>>()?,
            v6: v6.into_iter().map(|c| parse_ipv6_cidr(c)).collect::<Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_of_both_families_are_told_apart() {
        let texts = ["10.244.0.0/16", "fd00:10:244::/56", "10.96.0.0/12"].map(String::from);
        let cidrs = Cidrs::parse(&texts).unwrap();
        assert_eq!(cidrs.v4, [("10.244.0.0".parse().unwrap(), 16), ("10.96.0.0".parse().unwrap(), 12)]);
        assert_eq!(cidrs.v6, [("fd00:10:244::".parse().unwrap(), 56)]);
        let err = Cidrs::parse(&["fd00::/129".to_string()]).unwrap_err().to_string();
        assert!(err.contains("0-128"), "{err}");
    }

    #[test]
    fn only_a_global_ipv6_address_is_a_source() {
        for global in ["2001:db8::1", "fd00:10:244::5", "64:ff9b::1"] {
            assert!(is_global_unicast(&global.parse().unwrap()), "{global}");
        }
        for local in ["::", "::1", "fe80::1", "febf::1", "ff02::1"] {
            assert!(!is_global_unicast(&local.parse().unwrap()), "{local}");
        }
    }

    #[test]
    fn ipv6_cidrs() {
        assert_eq!(parse_ipv6_cidr("fd00:10:244::/56").unwrap(), ("fd00:10:244::".parse().unwrap(), 56));
        assert_eq!(parse_ipv6_cidr("fd00::1").unwrap().1, 128);
        assert!(parse_ipv6_cidr("fd00::/129").is_err());
        assert!(parse_ipv6_cidr("10.0.0.0/8").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap(), ("10.0.0.0".parse().unwrap(), 8));
        assert_eq!(parse_cidr("1.2.3.4").unwrap().1, 32);
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("fd00::/8").is_err());
    }
}
