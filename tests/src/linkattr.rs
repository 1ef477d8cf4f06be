//! Link attributes that Debian 12's iproute2 (6.1) cannot set yet, set over
//! rtnetlink directly: the IPv4 GSO limit (BIG TCP for IPv4, Linux 6.3+),
//! which lets a test sender build TCP super-packets above 64 KiB.
use anyhow::{bail, Context, Result};

use crate::netns::Netns;

/// linux/if_link.h: `IFLA_GSO_IPV4_MAX_SIZE`.
const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;

/// Sets `ifname`'s IPv4 GSO limit (bytes) inside `ns`.
pub fn set_gso_ipv4_max_size(ns: &Netns, ifname: &str, bytes: u32) -> Result<()> {
    let name = std::ffi::CString::new(ifname)?;
    ns.run(move || {
        // SAFETY: if_nametoindex reads a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {name:?}");
        }
        let mut msg = Vec::with_capacity(40);
        msg.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
        msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // pid
                                                    // struct ifinfomsg: family, pad, type, index, flags, change.
        msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        msg.extend_from_slice(&(index as i32).to_ne_bytes());
        msg.extend_from_slice(&[0u8; 8]);
        // struct rtattr + u32.
        msg.extend_from_slice(&8u16.to_ne_bytes());
        msg.extend_from_slice(&IFLA_GSO_IPV4_MAX_SIZE.to_ne_bytes());
        msg.extend_from_slice(&bytes.to_ne_bytes());
        // SAFETY: plain socket calls on a descriptor closed below; the
        // buffers outlive them.
        let fd = unsafe {
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("netlink socket");
        }
        let result = (|| {
            if unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) } < 0 {
                return Err(std::io::Error::last_os_error()).context("sending RTM_NEWLINK");
            }
            let mut reply = [0u8; 256];
            let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
            if n < 20 {
                bail!("no netlink acknowledgement");
            }
            let kind = u16::from_ne_bytes([reply[4], reply[5]]);
            let error = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
            if kind != NLMSG_ERROR || error != 0 {
                bail!(
                    "setting gso_ipv4_max_size {bytes} on {name:?}: {}",
                    std::io::Error::from_raw_os_error(-error)
                );
            }
            Ok(())
        })();
        unsafe { libc::close(fd) };
        result
    })
}
