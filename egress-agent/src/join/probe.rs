//! The worker's probe of its gateway replica: an ICMP echo request to the
//! tunnel's next hop (169.254.42.1), sent through the tunnel device. The
//! replica's datapath answers it itself, back through this pod's tunnel,
//! and only for a pod it lists: an answer proves the whole path the pod's
//! traffic takes (the outer route, the replica's program, its client list
//! and the way back), not merely that a process is up.
//!
//! Anyone who can reach the pod's VXLAN port can put a packet into its
//! tunnel device, an echo reply from 169.254.42.1 included. So that a
//! hostile pod cannot keep a dead replica looking alive (and its victims on
//! it), every probe carries a secret drawn at start and a reply counts only
//! if it echoes that secret back.
use std::{
    io,
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Context, Result};
use egress_common::{
    checksum::internet_checksum,
    config::{PROBE_DRAINING_CODE, TUNNEL_GATEWAY_IP},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// `ICMP_FILTER` (linux/icmp.h): a raw ICMP socket's bitmask of types to
/// drop before they are queued.
const ICMP_FILTER: libc::c_int = 1;
/// Bytes of the echo payload: the secret.
const SECRET_LEN: usize = 16;
const ECHO_HEADER_LEN: usize = 8;

/// One genuine answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub sequence: u16,
    /// The replica is terminating: it forwards what it holds, but new
    /// connections belong elsewhere.
    pub draining: bool,
}

/// A raw ICMP socket bound to the tunnel device (needs CAP_NET_RAW).
pub struct Prober {
    socket: OwnedFd,
    identifier: u16,
    secret: [u8; SECRET_LEN],
    next_sequence: u16,
}

impl Prober {
    /// Opens the socket on `device`: probes leave only through the tunnel,
    /// and only replies that came out of it are read.
    pub fn open(device: &str) -> Result<Prober> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EPERM) {
                bail!("cannot open the probe's ICMP socket: add the NET_RAW capability to this container (the --replicas probe needs it): {err}");
            }
            return Err(err).context("opening the probe's ICMP socket");
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        setsockopt(&socket, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, device.as_bytes())
            .with_context(|| format!("binding the probe socket to {device}"))?;
        let only_echo_replies: u32 = !(1 << ICMP_ECHO_REPLY);
        setsockopt(&socket, libc::SOL_RAW, ICMP_FILTER, &only_echo_replies.to_ne_bytes())
            .context("filtering the probe socket to echo replies")?;
        let mut secret = [0u8; SECRET_LEN];
        fill_random(&mut secret)?;
        Ok(Prober { socket, identifier: std::process::id() as u16, secret, next_sequence: 0 })
    }

    /// The sequence number the next probe will carry.
    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    /// Sends the next probe; returns its sequence number.
    pub fn send(&mut self) -> Result<u16> {
        let sequence = self.next_sequence;
        self.next_sequence = sequence.wrapping_add(1);
        let message = echo(ICMP_ECHO_REQUEST, self.identifier, sequence, &self.secret);
        let to = sockaddr(Ipv4Addr::from(TUNNEL_GATEWAY_IP));
        // SAFETY: the buffer and address outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending a probe through the tunnel");
        }
        Ok(sequence)
    }

    /// The genuine answers queued since the last call (never blocks).
    pub fn answers(&mut self) -> Vec<Answer> {
        let mut answers = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: recv(2) into a buffer we own, of its own length.
            let n = unsafe {
                libc::recv(self.socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            if n <= 0 {
                return answers;
            }
            if let Some(answer) = self.genuine_answer(&buf[..n as usize]) {
                answers.push(answer);
            }
        }
    }

    /// A raw socket reads the IP header too: the answer must come from the
    /// next hop, be an echo reply to our identifier, verify, and carry the
    /// secret. Its code says whether the replica is draining.
    fn genuine_answer(&self, packet: &[u8]) -> Option<Answer> {
        let header_len = usize::from(packet.first()? & 0x0f) * 4;
        if packet.len() < 20 || packet[12..16] != TUNNEL_GATEWAY_IP {
            return None;
        }
        let icmp = packet.get(header_len..)?;
        let draining = icmp.get(1) == Some(&PROBE_DRAINING_CODE);
        if icmp.len() != ECHO_HEADER_LEN + SECRET_LEN
            || icmp[0] != ICMP_ECHO_REPLY
            || !(icmp[1] == 0 || draining)
        {
            return None;
        }
        let verifies = egress_common::checksum::ones_complement_sum(icmp, 0) == 0xffff;
        let ours = u16::from_be_bytes([icmp[4], icmp[5]]) == self.identifier;
        let sequence = u16::from_be_bytes([icmp[6], icmp[7]]);
        (verifies && ours && icmp[ECHO_HEADER_LEN..] == self.secret).then_some(Answer { sequence, draining })
    }
}

/// An ICMP echo message with its checksum.
fn echo(kind: u8, identifier: u16, sequence: u16, payload: &[u8]) -> Vec<u8> {
    let mut message = vec![kind, 0, 0, 0];
    message.extend_from_slice(&identifier.to_be_bytes());
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(payload);
    let checksum = internet_checksum(&message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    message
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    }
}

fn setsockopt(socket: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: setsockopt(2) reads `value.len()` bytes of a live slice.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fill_random(buf: &mut [u8]) -> Result<()> {
    // SAFETY: getrandom(2) writes at most `buf.len()` bytes into it.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(io::Error::last_os_error()).context("drawing the probe secret (getrandom)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_packet(identifier: u16, sequence: u16, secret: &[u8], from: [u8; 4]) -> Vec<u8> {
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        packet.extend_from_slice(&from);
        packet.extend_from_slice(&[10, 0, 0, 2]);
        packet.extend(echo(ICMP_ECHO_REPLY, identifier, sequence, secret));
        packet
    }

    /// The same answer with another ICMP code, its checksum made right.
    fn with_code(mut packet: Vec<u8>, code: u8) -> Vec<u8> {
        packet[21] = code;
        packet[22..24].fill(0);
        let checksum = internet_checksum(&packet[20..]);
        packet[22..24].copy_from_slice(&checksum.to_be_bytes());
        packet
    }

    fn prober() -> Prober {
        // Any descriptor will do: only the checks are exercised.
        let socket = std::fs::File::open("/dev/null").unwrap().into();
        Prober { socket, identifier: 7, secret: [9; SECRET_LEN], next_sequence: 0 }
    }

    #[test]
    fn an_echoed_secret_from_the_next_hop_is_an_answer() {
        let p = prober();
        let answer = reply_packet(7, 41, &[9; SECRET_LEN], TUNNEL_GATEWAY_IP);
        assert_eq!(p.genuine_answer(&answer), Some(Answer { sequence: 41, draining: false }));
        let draining = with_code(answer, PROBE_DRAINING_CODE);
        assert_eq!(p.genuine_answer(&draining), Some(Answer { sequence: 41, draining: true }));
    }

    #[test]
    fn a_forged_or_stray_reply_is_not() {
        let p = prober();
        let wrong_secret = reply_packet(7, 1, &[8; SECRET_LEN], TUNNEL_GATEWAY_IP);
        let other_identifier = reply_packet(8, 1, &[9; SECRET_LEN], TUNNEL_GATEWAY_IP);
        let other_source = reply_packet(7, 1, &[9; SECRET_LEN], [10, 0, 0, 9]);
        let mut bad_checksum = reply_packet(7, 1, &[9; SECRET_LEN], TUNNEL_GATEWAY_IP);
        bad_checksum[22] ^= 1;
        let other_code = with_code(reply_packet(7, 1, &[9; SECRET_LEN], TUNNEL_GATEWAY_IP), 3);
        for packet in [wrong_secret, other_identifier, other_source, bad_checksum, other_code] {
            assert_eq!(p.genuine_answer(&packet), None);
        }
    }
}
