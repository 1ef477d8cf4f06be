//! Hand-made packets for hostile-tenant tests: what a labeled pod with a raw
//! socket can send that its stack never would (lone RSTs, FINs, ACKs; IP
//! fragments of datagrams that never complete).
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
    ipv4_packet(*src.ip(), *dst.ip(), 6, 0, IP_DF, &tcp)
}

/// IPv4 `frag_off` bits.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

/// An IPv4 packet (no options, TTL 64) around `payload`, checksum included.
pub fn ipv4_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    id: u16,
    frag_off: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    [&ip[..], payload].concat()
}

/// The first fragment of a UDP datagram that claims to be longer than it
/// will ever be (its other fragments are never sent): the UDP header and 8
/// bytes, more fragments to follow.
pub fn udp_first_fragment(src: SocketAddrV4, dst: SocketAddrV4, id: u16) -> Vec<u8> {
    let mut udp = [0u8; 16];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&3000u16.to_be_bytes());
    ipv4_packet(*src.ip(), *dst.ip(), 17, id, IP_MF, &udp)
}

/// A later fragment (8-byte units `offset`, the last) of UDP datagram `id`
/// whose first fragment was never sent: 16 bytes of nothing.
pub fn udp_later_fragment(src: Ipv4Addr, dst: Ipv4Addr, id: u16, offset: u16) -> Vec<u8> {
    ipv4_packet(src, dst, 17, id, offset & 0x1fff, &[0x5a; 16])
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
    let packets = src_ports
        .map(|port| tcp_segment(SocketAddrV4::new(src, port), dst, flags, 0x1000_0000 + port as u32));
    send_raw(ns, *dst.ip(), packets.collect())
}

/// Sends each of `packets` (whole IPv4 packets) towards `dst` through a raw
/// socket inside `ns`, so the pod's routes, its tunnel included, carry
/// them. Returns how many were sent.
pub fn send_raw(ns: &Netns, dst: Ipv4Addr, packets: Vec<Vec<u8>>) -> Result<usize> {
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
            sin_addr: libc::in_addr { s_addr: u32::from(dst).to_be() },
            sin_zero: [0; 8],
        };
        let mut sent = 0;
        let mut failure = None;
        for packet in packets {
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
            Some(e) => bail!("sending crafted packets: {e}"),
            None => Ok(sent),
        }
    })
}
