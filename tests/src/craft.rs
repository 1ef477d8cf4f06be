//! Hand-made packets for hostile-tenant tests: what a labeled pod with a raw
//! socket can send that its TCP stack never would (lone RSTs, FINs, ACKs).
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

use anyhow::{bail, Result};
use egress_common::checksum::{internet_checksum, ones_complement_sum, pseudo_header_sum};

use crate::netns::Netns;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An IPv4 packet holding a bare TCP segment (no options, no payload) with
/// `flags`, checksums included.
pub fn tcp_segment(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, seq: u32) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64_000u16.to_be_bytes());
    let pseudo = pseudo_header_sum(src.ip().octets(), dst.ip().octets(), 6, tcp.len() as u16);
    let sum = !ones_complement_sum(&tcp, pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    [&ip[..], &tcp[..]].concat()
}

/// Sends one bare TCP segment with `flags` from `src:port` to `dst` for
/// every port in `src_ports`, through a raw socket inside `ns` (so the
/// pod's routes, its tunnel included, carry them).
pub fn spray_tcp(
    ns: &Netns,
    src: Ipv4Addr,
    src_ports: Range<u16>,
    dst: SocketAddrV4,
    flags: u8,
) -> Result<usize> {
    ns.run(move || {
        // SAFETY: plain socket calls; the descriptor is closed below.
        let fd =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
        if fd < 0 {
            bail!("raw socket: {}", std::io::Error::last_os_error());
        }
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(*dst.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let mut sent = 0;
        let mut failure = None;
        for port in src_ports {
            let packet = tcp_segment(SocketAddrV4::new(src, port), dst, flags, 0x1000_0000 + port as u32);
            // SAFETY: the buffer and the address outlive the call.
            let n = unsafe {
                libc::sendto(
                    fd,
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&to as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            if n < 0 {
                failure = Some(std::io::Error::last_os_error());
                break;
            }
            sent += 1;
        }
        unsafe { libc::close(fd) };
        match failure {
            Some(e) => bail!("sending crafted TCP segments: {e}"),
            None => Ok(sent),
        }
    })
}
