//! A bare netlink socket: one request, its answers. The sidecar needs two
//! things from the kernel that must be quick, so it does them in-process
//! rather than through `ip`: listing and aborting the pod's connections
//! (NETLINK_SOCK_DIAG, see `connections`) and moving the tunnel's remote
//! (NETLINK_ROUTE, here) in the moment after it found the pod idle.
use std::{
    ffi::CString,
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
const NLMSG_HEADER_LEN: usize = 16;
const NLA_HEADER_LEN: usize = 4;
const NLA_F_NESTED: u16 = 1 << 15;

const RTM_NEWLINK: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_GROUP: u16 = 2;

pub struct Netlink {
    socket: OwnedFd,
}

impl Netlink {
    pub fn open(protocol: libc::c_int) -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        Ok(Netlink { socket: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Sends one message of `kind` with `payload` (to the kernel).
    pub fn send(&self, kind: u16, flags: u16, payload: &[u8]) -> io::Result<()> {
        let mut message = Vec::with_capacity(NLMSG_HEADER_LEN + payload.len());
        message.extend_from_slice(&((NLMSG_HEADER_LEN + payload.len()) as u32).to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(&flags.to_ne_bytes());
        message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        message.extend_from_slice(&0u32.to_ne_bytes()); // the kernel
        message.extend_from_slice(payload);
        // SAFETY: send(2) of a buffer we own, of its own length.
        let sent = unsafe { libc::send(self.socket.as_raw_fd(), message.as_ptr().cast(), message.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram of answers.
    pub fn receive(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv(2) into a buffer we own, of its own length.
        let n = unsafe { libc::recv(self.socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Waits for the acknowledgement of a request sent with NLM_F_ACK.
    pub fn acknowledged(&self) -> io::Result<()> {
        let mut buf = [0u8; 1024];
        let n = self.receive(&mut buf)?;
        for (kind, payload) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR {
                return match error_code(payload) {
                    0 => Ok(()),
                    code => Err(io::Error::from_raw_os_error(-code)),
                };
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "no netlink acknowledgement"))
    }
}

/// The (type, payload) of each netlink message in a datagram.
pub fn messages(mut datagram: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if datagram.len() < NLMSG_HEADER_LEN {
            return None;
        }
        let len = u32::from_ne_bytes(datagram[..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap());
        if len < NLMSG_HEADER_LEN || len > datagram.len() {
            return None;
        }
        let payload = &datagram[NLMSG_HEADER_LEN..len];
        datagram = &datagram[((len + 3) & !3).min(datagram.len())..];
        Some((kind, payload))
    })
}

/// The (negative errno) code of an NLMSG_ERROR payload; 0 is success.
pub fn error_code(payload: &[u8]) -> i32 {
    payload.get(..4).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()))
}

/// Points the VXLAN device `device` at `remote` in place: one RTM_NEWLINK
/// on the existing link with only its remote (IFLA_VXLAN_GROUP) in it.
pub fn set_vxlan_remote(device: &str, remote: Ipv4Addr) -> Result<()> {
    let name = CString::new(device).context("device name")?;
    // SAFETY: if_nametoindex(3) reads a NUL-terminated string we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("no device {device}"));
    }
    let request = vxlan_remote_request(index, remote);
    let netlink = Netlink::open(libc::NETLINK_ROUTE).context("opening a route netlink socket")?;
    netlink
        .send(RTM_NEWLINK, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, &request)
        .and_then(|()| netlink.acknowledged())
        .with_context(|| format!("pointing {device} at {remote}"))
}

/// `struct ifinfomsg` for link `index`, then IFLA_LINKINFO { KIND "vxlan",
/// DATA { GROUP remote } }.
fn vxlan_remote_request(index: u32, remote: Ipv4Addr) -> Vec<u8> {
    let mut ifinfo = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    ifinfo.extend_from_slice(&(index as i32).to_ne_bytes());
    ifinfo.extend_from_slice(&0u32.to_ne_bytes()); // flags
    ifinfo.extend_from_slice(&0u32.to_ne_bytes()); // change
    let data = attribute(IFLA_INFO_DATA | NLA_F_NESTED, &attribute(IFLA_VXLAN_GROUP, &remote.octets()));
    let info = [attribute(IFLA_INFO_KIND, b"vxlan\0"), data].concat();
    [ifinfo, attribute(IFLA_LINKINFO | NLA_F_NESTED, &info)].concat()
}

/// One netlink attribute, padded to four bytes.
fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLA_HEADER_LEN + value.len() + 3);
    out.extend_from_slice(&((NLA_HEADER_LEN + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize((out.len() + 3) & !3, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_request_nests_kind_and_group() {
        let request = vxlan_remote_request(7, Ipv4Addr::new(10, 244, 2, 20));
        assert_eq!(request.len(), 16 + 4 + 12 + 12);
        assert_eq!(&request[4..8], &7i32.to_ne_bytes());
        // IFLA_LINKINFO, nested, spanning the rest.
        assert_eq!(u16::from_ne_bytes([request[16], request[17]]) as usize, request.len() - 16);
        assert_eq!(&request[24..29], b"vxlan");
        assert_eq!(&request[40..44], &[10, 244, 2, 20]);
    }
}
