//! What a fragment without ports costs: a UDP datagram's later fragment
//! in each direction, translated through the fragment map with the flow
//! its first fragment opened (one map lookup, one conntrack lookup, the
//! address and the IP checksum; no L4 header). Compare with the
//! established rows, which do the same work through the ports.
use std::path::Path;

use anyhow::Result;
use egress_common::{checksum::internet_checksum, fragments::IP_MF, maps::CT_MAX_DEFAULT};

use crate::{
    common::{from_client, from_remote, L4, TC_ACT_REDIRECT},
    datapath,
    established::time_forwarded,
    flows::nat_port_of,
    report::Report,
    timing::{run_expecting, Calibration, Program},
};
const CLIENT_PORT: u16 = 43_210;
const REMOTE_PORT: u16 = 53;
/// The inner IPv4 header of a tunnelled client frame: outer Ethernet, IPv4,
/// UDP and VXLAN, then the inner Ethernet header.
const TUNNELLED_IP_OFF: usize = 14 + 20 + 8 + 8 + 14;
const IP_OFF: usize = 14;
/// 1,400 bytes: the size of a full fragment's payload (a multiple of 8).
const PAYLOAD: [u8; 1_400] = [0x42; 1_400];

pub fn measure(
    report: &mut Report,
    calibration: &Calibration,
    runs: usize,
    object: Option<&Path>,
) -> Result<()> {
    let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
    let udp = L4::Udp { src: CLIENT_PORT, dst: REMOTE_PORT };
    let first = as_fragment(from_client(udp, &PAYLOAD), TUNNELLED_IP_OFF, 7, IP_MF);
    let opened = run_expecting(&mut dp, &first, TC_ACT_REDIRECT, "the client's first fragment")?;
    let nat_port = nat_port_of(&opened.packet)?;
    let later_to_remote = as_fragment(from_client(udp, &PAYLOAD), TUNNELLED_IP_OFF, 7, 176);

    let reply = L4::Udp { src: REMOTE_PORT, dst: nat_port };
    let reply_first = as_fragment(from_remote(reply, &PAYLOAD), IP_OFF, 9, IP_MF);
    run_expecting(&mut dp, &reply_first, TC_ACT_REDIRECT, "the remote's first fragment")?;
    let later_to_client = as_fragment(from_remote(reply, &PAYLOAD), IP_OFF, 9, 176);

    for (label, packet) in [
        ("client→remote (decap, fragment map hit, SNAT of the address)", &later_to_remote),
        ("remote→client (fragment map hit, reverse NAT of the address, encap)", &later_to_client),
    ] {
        let what = format!("later fragment {label}");
        time_forwarded(report, calibration, &mut dp, Program::Gateway, &what, packet, runs)?;
    }
    Ok(())
}

/// `packet` with the IPv4 header at `ip_off` made a fragment of datagram
/// `id` (`frag_off`: flags and offset), its checksum recomputed. What
/// follows the header is left as it is: for a later fragment it is only
/// data, which the datapath never reads.
fn as_fragment(mut packet: Vec<u8>, ip_off: usize, id: u16, frag_off: u16) -> Vec<u8> {
    let ip = &mut packet[ip_off..ip_off + 20];
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&frag_off.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    packet
}
