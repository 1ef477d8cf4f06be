//! The benchmark's flows and their packets, built with the packet-scenario
//! harness (`tests/common`), so the bytes are those the tests check.
use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use egress_common::{config::TUNNEL_GATEWAY_MAC, conntrack::FlowTuple, ip::IPPROTO_TCP};

use crate::common::{self, CLIENT_IP, CLIENT_MAC, GATEWAY_MAC, L4, NODE_MAC, VNI};

/// TCP payload of the established-path packets (bytes). The program's work
/// does not depend on it: the checksums are updated incrementally and the
/// tunnel is added or removed in front of the payload.
pub const PAYLOAD: &[u8] = &[0x5a; 100];

/// Remote addresses the spread flows go to: 198.18.0.0/15 (benchmarking
/// range, RFC 2544), one of `SPREAD_REMOTES` per flow in turn.
const SPREAD_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
pub const SPREAD_REMOTES: u32 = 4096;
const FIRST_CLIENT_PORT: u16 = 1024;
pub const REMOTE_PORT: u16 = 443;

/// One TCP flow of a listed client (`CLIENT_IP` unless said otherwise).
#[derive(Clone, Copy)]
pub struct Flow {
    pub client_ip: Ipv4Addr,
    pub client_port: u16,
    pub remote_ip: Ipv4Addr,
    pub remote_port: u16,
}

impl Flow {
    /// The `index`-th of a set of flows spread over `SPREAD_REMOTES`
    /// destinations, so that a million flows hold about 250 NAT ports per
    /// destination (~1% of the range): the cost measured is the tables',
    /// not port collisions (those are measured on their own).
    pub fn spread(index: u32) -> Flow {
        let remote = u32::from(SPREAD_BASE) + index % SPREAD_REMOTES;
        let client_port = FIRST_CLIENT_PORT as u32 + index / SPREAD_REMOTES;
        assert!(client_port <= u16::MAX as u32, "too many spread flows");
        Flow {
            client_ip: CLIENT_IP,
            client_port: client_port as u16,
            remote_ip: Ipv4Addr::from(remote),
            remote_port: REMOTE_PORT,
        }
    }

    /// The flow from `client_ip`:`client_port` to `remote`:443.
    pub fn to_one_destination(client_ip: Ipv4Addr, client_port: u16, remote: Ipv4Addr) -> Flow {
        Flow { client_ip, client_port, remote_ip: remote, remote_port: REMOTE_PORT }
    }

    /// The client's SYN, tunnelled as its worker sends it: opens the flow.
    pub fn syn(&self) -> Vec<u8> {
        self.client_packet(common::tcp_syn(self.client_port, self.remote_port), b"")
    }

    /// A data segment of the open flow, client -> remote, tunnelled.
    pub fn data_to_remote(&self) -> Vec<u8> {
        self.client_packet(common::tcp_ack(self.client_port, self.remote_port), PAYLOAD)
    }

    /// The remote's SYN-ACK to `nat_port` (opens the flow in conntrack).
    pub fn syn_ack(&self, nat_port: u16) -> Vec<u8> {
        let l4 =
            L4::Tcp { src: self.remote_port, dst: nat_port, syn: true, ack: true, fin: false, rst: false };
        self.remote_packet(l4, b"")
    }

    /// A data segment of the open flow, remote -> gateway's `nat_port`.
    pub fn data_to_client(&self, nat_port: u16) -> Vec<u8> {
        self.remote_packet(common::tcp_ack(self.remote_port, nat_port), PAYLOAD)
    }

    /// The conntrack key of the client's direction.
    pub fn original_tuple(&self) -> FlowTuple {
        FlowTuple::new(
            u32::from(self.client_ip).to_be(),
            u32::from(self.remote_ip).to_be(),
            self.client_port.to_be(),
            self.remote_port.to_be(),
            IPPROTO_TCP,
        )
    }

    fn client_packet(&self, l4: L4, payload: &[u8]) -> Vec<u8> {
        let inner =
            common::frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, self.client_ip, self.remote_ip, 64, l4, payload);
        common::tunnel(self.client_ip, VNI, &inner)
    }

    fn remote_packet(&self, l4: L4, payload: &[u8]) -> Vec<u8> {
        common::frame(NODE_MAC, GATEWAY_MAC, self.remote_ip, common::GATEWAY_IP, 50, l4, payload)
    }
}

/// The NAT port of a client packet the program forwarded (its tunnel is
/// gone: Ethernet, IPv4 without options, then the TCP source port).
pub fn nat_port_of(forwarded: &[u8]) -> Result<u16> {
    const PORT_OFF: usize = 14 + 20;
    if forwarded.len() < PORT_OFF + 2 {
        bail!("forwarded packet too short ({} bytes)", forwarded.len());
    }
    Ok(u16::from_be_bytes([forwarded[PORT_OFF], forwarded[PORT_OFF + 1]]))
}

/// A frame that is not IPv4 (an IPv6 ethertype with zero bytes): the
/// program reads the config and the ethertype and passes it on untouched.
pub fn untouched_frame() -> Vec<u8> {
    let mut frame = vec![0u8; 64];
    frame[0..6].copy_from_slice(&GATEWAY_MAC);
    frame[6..12].copy_from_slice(&NODE_MAC);
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    frame
}
