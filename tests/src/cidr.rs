//! A minimal IPv4 CIDR type.
//!
//! The topology is described by data (so it can be re-pointed at other
//! address plans); this type lets that data say "10.244.1.0/24" and derive
//! host addresses from it instead of hard-coding them in the logic.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

/// An IPv4 network (`addr` is kept as given; [`Ipv4Cidr::network`] masks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// Builds a CIDR; panics on a prefix length over 32 (a programming error).
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Cidr {
        assert!(prefix_len <= 32);
        Ipv4Cidr { addr, prefix_len }
    }

    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The `n`-th address of the network (`host(1)` of 10.244.1.0/24 is 10.244.1.1).
    /// Fails if `n` does not fit in the host part.
    pub fn host(&self, n: u32) -> Result<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix_len as u32);
        if u64::from(n) >= size {
            bail!("host number {n} does not fit in {self}");
        }
        Ok(Ipv4Addr::from(u32::from(self.network()) + n))
    }

    /// `ip/prefix_len`, i.e. an interface address inside this network.
    pub fn with_addr(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.prefix_len)
    }
}

impl fmt::Display for Ipv4Cidr {
    /// Prints the network form (`10.244.1.0/24`), which is what routes and
    /// command-line flags want.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|e| anyhow!("invalid IPv4 address in {s:?}: {e}"))?;
        let prefix_len: u8 = len.parse().map_err(|e| anyhow!("invalid prefix length in {s:?}: {e}"))?;
        if prefix_len > 32 {
            bail!("invalid prefix length in {s:?}");
        }
        Ok(Ipv4Cidr { addr, prefix_len })
    }
}

/// Parses a CIDR literal; panics on error. For defaults written in code.
pub fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap_or_else(|e| panic!("bad CIDR literal {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_derive() {
        let c = cidr("10.244.1.7/24");
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert_eq!(c.host(1).unwrap(), Ipv4Addr::new(10, 244, 1, 1));
        assert!(c.host(256).is_err());
        assert!(c.contains(Ipv4Addr::new(10, 244, 1, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(cidr("0.0.0.0/0").contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(c.with_addr(Ipv4Addr::new(10, 244, 1, 1)), "10.244.1.1/24");
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert_eq!(cidr("1.2.3.4").prefix_len, 32);
    }
}
