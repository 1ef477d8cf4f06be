//! Neighbours: the tunnel's permanent entries, one a family, and the hold
//! that lets the tunnel be switched without a packet caught half-way.
use std::net::IpAddr;

use anyhow::{Context, Result};

use super::{attribute, Netlink, CHANGE, CREATE_OR_REPLACE};

const RTM_NEWNEIGH: u16 = 28;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_INCOMPLETE: u16 = 0x01;
const NUD_PERMANENT: u16 = 0x80;

/// `address` is at `mac` on link `device`, for good: no resolution, no
/// expiry. An IPv6 next hop needs IPv6 on the link (not `disable_ipv6`).
/// Packets held by `hold` leave now, in order.
pub fn replace_permanent(netlink: &Netlink, device: u32, address: IpAddr, mac: [u8; 6]) -> Result<()> {
    netlink
        .request(RTM_NEWNEIGH, CREATE_OR_REPLACE, &ndmsg(device, address, NUD_PERMANENT, Some(mac)))
        .with_context(|| format!("setting the tunnel's neighbour {address}"))
}

/// Holds what the pod sends to `address` on `device` until
/// `replace_permanent`: the entry becomes unresolved with no timer
/// running, so the kernel queues its packets (up to the table's
/// `unres_qlen_bytes`, oldest dropped first) and sends none of them, nor
/// any solicitation. A connection opened meanwhile is in SYN_SENT with its
/// SYN still here, where nothing has seen it yet.
pub fn hold(netlink: &Netlink, device: u32, address: IpAddr) -> Result<()> {
    netlink
        .request(
            RTM_NEWNEIGH,
            CHANGE | libc::NLM_F_REPLACE as u16,
            &ndmsg(device, address, NUD_INCOMPLETE, None),
        )
        .with_context(|| format!("holding the packets to the tunnel's neighbour {address}"))
}

/// `struct ndmsg` (family, padding, ifindex, state, flags, type), then the
/// address and, when given, the link-layer address.
fn ndmsg(device: u32, address: IpAddr, state: u16, mac: Option<[u8; 6]>) -> Vec<u8> {
    let (family, octets) = match address {
        IpAddr::V4(v4) => (libc::AF_INET, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, v6.octets().to_vec()),
    };
    let mut request = vec![family as u8, 0, 0, 0];
    request.extend_from_slice(&(device as i32).to_ne_bytes());
    request.extend_from_slice(&state.to_ne_bytes());
    request.extend_from_slice(&[0, 0]);
    request.extend_from_slice(&attribute(NDA_DST, &octets));
    if let Some(mac) = mac {
        request.extend_from_slice(&attribute(NDA_LLADDR, &mac));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::link;
    use std::{
        net::{Ipv4Addr, UdpSocket},
        process::Command,
        time::{Duration, Instant},
    };

    const PEER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    /// In a network namespace of its own (this thread's: it goes with the
    /// thread), a datagram to a held neighbour does not leave the link
    /// until the entry is permanent again, and then it does.
    #[test]
    fn a_held_neighbour_keeps_packets_until_released() {
        std::thread::spawn(|| {
            // SAFETY: unshare(2) of this thread's network namespace only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare (needs root)");
            for args in [
                "link add nh0 type veth peer name nh1",
                "addr add 10.9.0.1/24 dev nh0",
                "link set nh0 up",
                "link set nh1 up",
            ] {
                let status = Command::new("ip").args(args.split(' ')).status().unwrap();
                assert!(status.success(), "ip {args}");
            }
            let netlink = Netlink::route().unwrap();
            let sender = link::index("nh0").unwrap();
            let receiver = link::get(&netlink, "nh1").unwrap().unwrap();
            replace_permanent(&netlink, sender, PEER.into(), receiver.mac.unwrap()).unwrap();
            let tap = Tap::on(receiver.index);
            let udp = UdpSocket::bind("10.9.0.1:0").unwrap();
            let wait = Duration::from_millis(300);

            udp.send_to(b"before the hold", (PEER, 9)).unwrap();
            assert!(tap.sees(b"before the hold", wait), "a permanent entry sends at once");

            hold(&netlink, sender, PEER.into()).unwrap();
            udp.send_to(b"while held", (PEER, 9)).unwrap();
            assert!(!tap.sees(b"while held", wait), "a held entry sent its packet");

            replace_permanent(&netlink, sender, PEER.into(), receiver.mac.unwrap()).unwrap();
            assert!(tap.sees(b"while held", wait), "the held packet did not leave on release");
        })
        .join()
        .unwrap();
    }

    /// An AF_PACKET socket on one link: what arrives there.
    struct Tap(std::os::fd::OwnedFd);

    impl Tap {
        fn on(index: u32) -> Tap {
            use std::os::fd::FromRawFd;
            let protocol = (libc::ETH_P_IP as u16).to_be();
            // SAFETY: socket(2); checked before it is owned.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, protocol.into()) };
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: a zeroed sockaddr_ll is valid; the fields set are its own.
            let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            address.sll_family = libc::AF_PACKET as u16;
            address.sll_protocol = protocol;
            address.sll_ifindex = index as i32;
            // SAFETY: bind(2) with a sockaddr_ll we own and its size.
            let bound = unsafe {
                libc::bind(
                    fd,
                    (&address as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(bound, 0, "binding the tap: {}", std::io::Error::last_os_error());
            // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
            Tap(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
        }

        /// Whether a packet holding `marker` arrives within `wait`.
        fn sees(&self, marker: &[u8], wait: Duration) -> bool {
            use std::os::fd::AsRawFd;
            let deadline = Instant::now() + wait;
            let mut buf = [0u8; 2048];
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                let mut poll = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: poll(2) on one pollfd we own.
                if unsafe { libc::poll(&mut poll, 1, left.as_millis().max(1) as i32) } <= 0 {
                    continue;
                }
                // SAFETY: recv(2) into a buffer we own, of its own length.
                let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 && buf[..n as usize].windows(marker.len()).any(|w| w == marker) {
                    return true;
                }
            }
            false
        }
    }
}
