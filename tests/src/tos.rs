//! UDP with an explicit TOS byte (DSCP and ECN) on what is sent, and the
//! TOS of what is received, for tests of ECN marks crossing the tunnel.
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

pub const ECN_ECT0: u8 = 0b10;
pub const ECN_CE: u8 = 0b11;

/// A UDP socket made inside `ns`, bound to `bind`, that sends with `tos` and
/// reports the TOS of every datagram it receives.
pub struct TosSocket {
    socket: UdpSocket,
}

impl TosSocket {
    pub fn bind(ns: &Netns, bind: SocketAddrV4, tos: u8) -> Result<TosSocket> {
        let socket = ns.run(move || Ok(UdpSocket::bind(bind)?))?;
        let set = |option: libc::c_int, value: libc::c_int| {
            // SAFETY: an int option on a socket we own.
            let ret = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if ret != 0 {
                return Err(std::io::Error::last_os_error()).context("setsockopt");
            }
            Ok(())
        };
        set(libc::IP_TOS, tos as libc::c_int)?;
        set(libc::IP_RECVTOS, 1)?;
        Ok(TosSocket { socket })
    }

    pub fn send_to(&self, payload: &[u8], to: SocketAddrV4) -> Result<()> {
        self.socket.send_to(payload, to).with_context(|| format!("sending to {to}"))?;
        Ok(())
    }

    /// The next datagram within `timeout`: its payload, sender and TOS.
    pub fn recv(&self, timeout: Duration) -> Result<(Vec<u8>, SocketAddrV4, u8)> {
        self.socket.set_read_timeout(Some(timeout))?;
        let mut payload = vec![0u8; 2048];
        let mut control = [0u8; 64];
        let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
        // SAFETY: a msghdr over buffers that outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("no datagram");
        }
        payload.truncate(n as usize);
        let mut tos = None;
        // SAFETY: walking the control messages recvmsg filled in.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_TOS {
                    tos = Some(*libc::CMSG_DATA(cmsg));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        let Some(tos) = tos else { bail!("no IP_TOS control message") };
        let sender =
            SocketAddrV4::new(u32::from_be(from.sin_addr.s_addr).into(), u16::from_be(from.sin_port));
        Ok((payload, sender, tos))
    }
}
