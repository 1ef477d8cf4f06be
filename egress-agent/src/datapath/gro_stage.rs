//! The GRO stage's veth pair inside the gateway pod (`egress_common::gro`):
//! translated upload segments go into `TX`, the kernel's GRO merges them on
//! `RX`, and the `egress_gro_stage` classifier on `RX` sends the merged
//! packets out of the attached interface. Nothing outside the pod changes.
//!
//! The same pair, the other way, cuts replies that are too big to be
//! encapsulated whole (a GRO aggregate of more than 65,485 bytes): the main
//! program sends them into `RX`, which has no TSO, so the kernel segments
//! them as they leave it; `TX` has no GRO, so they arrive one by one, and
//! the `egress_resegmented` classifier on `TX` translates and encapsulates
//! each. A reply too big for the tunnel with DF clear takes the same way
//! (`RX` computes its checksum) before it is sent as two fragments.
use anyhow::{bail, Context, Result};

use crate::netlink::{link, Netlink};

/// The sending end: no TSO, or veth would skip GRO for what it sends. For
/// resegmented replies, the receiving end: no GRO, and the
/// `egress_resegmented` classifier.
pub const TX: &str = "egressgro-tx";
/// The receiving end: GRO on, and the `egress_gro_stage` classifier. For
/// replies to resegment, the sending end: no TSO.
pub const RX: &str = "egressgro-rx";

/// The pair, deleted again on drop.
pub struct GroStage {
    pub tx_ifindex: u32,
    pub rx_ifindex: u32,
}

impl GroStage {
    /// Creates the pair, with `mtu` on both ends so every packet eth0 can
    /// carry fits. A pair left by a killed agent is kept and set up again:
    /// a program that agent left attached may still be sending into it.
    pub fn create(mtu: u32) -> Result<GroStage> {
        let netlink = Netlink::route()?;
        if link::index(RX).is_none() || link::index(TX).is_none() {
            remove_leftover();
            link::add_veth(&netlink, TX, RX, mtu).context("the GRO stage (or run with --no-gro-stage)")?;
        }
        let (Some(tx_ifindex), Some(rx_ifindex)) = (link::index(TX), link::index(RX)) else {
            bail!("the GRO stage's veth pair {TX}/{RX} vanished as it was set up");
        };
        let stage = GroStage { tx_ifindex, rx_ifindex };
        for end in [tx_ifindex, rx_ifindex] {
            link::set(&netlink, end, Some(mtu), false)?;
            // No IPv6 link-local address: the pod's stack has no reason to
            // send anything into the pair.
            link::set_no_ipv6_address(&netlink, end)?;
        }
        // Neither end segments in hardware: what either sends is cut into
        // segments as it leaves (uploads are single segments anyway).
        set_offload(TX, ETHTOOL_STSO, false)?;
        set_offload(RX, ETHTOOL_STSO, false)?;
        // Nor does `RX` leave checksums to hardware: a reply sent through it
        // to be cut into fragments has its UDP checksum computed over the
        // whole datagram as it leaves (`tunnel::split` in egress-ebpf).
        set_offload(RX, ETHTOOL_STXCSUM, false)?;
        for end in [tx_ifindex, rx_ifindex] {
            link::set(&netlink, end, None, true)?;
        }
        // veth turns on its NAPI (and so GRO) only while both ends are up.
        // GRO on the stage's end only: on `TX` it would merge the segments
        // of a resegmented reply back into the aggregate.
        set_offload(RX, ETHTOOL_SGRO, true)?;
        set_offload(TX, ETHTOOL_SGRO, false)?;
        Ok(stage)
    }
}

/// The (sending, receiving) ends of a pair a previous agent left, which
/// the program it left running may be sending into.
pub fn existing() -> Option<(u32, u32)> {
    Some((link::index(TX)?, link::index(RX)?))
}

/// Deletes a pair a killed agent left behind, if any (with the stage off,
/// once the new program no longer sends into it). Says whether there was one.
pub fn remove_leftover() -> bool {
    let Some(tx) = link::index(TX) else { return false };
    if let Err(e) = Netlink::route().and_then(|netlink| link::delete(&netlink, tx)) {
        tracing::warn!("removing a leftover GRO stage: {e:#}");
    }
    true
}

impl GroStage {
    /// Leaves the pair for the program the state keeper keeps attached,
    /// which sends into it.
    pub fn leave_in_place(self) {
        std::mem::forget(self);
    }
}

impl Drop for GroStage {
    fn drop(&mut self) {
        if let Err(e) = Netlink::route().and_then(|netlink| link::delete(&netlink, self.tx_ifindex)) {
            tracing::warn!("removing the GRO stage: {e:#}");
        }
    }
}

// linux/ethtool.h and linux/sockios.h: the single-feature ioctls, which every
// kernel we support still takes.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGRO: u32 = 0x2c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _union_rest: [u8; 16],
}

/// `ethtool -K DEV tso|gro on|off`.
fn set_offload(dev: &str, cmd: u32, on: bool) -> Result<()> {
    let mut value = EthtoolValue { cmd, data: on as u32 };
    let mut req = IfreqData { name: [0; libc::IFNAMSIZ], data: &mut value, _union_rest: [0; 16] };
    for (dst, src) in req.name.iter_mut().zip(dev.as_bytes().iter().take(libc::IFNAMSIZ - 1)) {
        *dst = *src as libc::c_char;
    }
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("opening a socket for ethtool");
    }
    let ret = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req) };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if ret != 0 {
        bail!("setting an offload (ethtool command {cmd:#x}) on {dev}: {err}");
    }
    Ok(())
}
