//! Connection tracking entries, shared by both halves of a NAT binding.
//!
//! A binding is stored twice, like Cilium's `otuple`/`rtuple`: once under the
//! tuple the client sends (`CT_ORIGINAL`) and once under the tuple the
//! remote's replies carry (`CT_REPLY`). Both halves hold the same
//! [`NatEntry`], so either one is enough to re-create the other when the LRU
//! has evicted it.

use crate::config::GatewayConfig;

const NS_PER_S: u64 = 1_000_000_000;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// A flow as seen in one direction. For ICMP echo the identifier takes the
/// place of the port on the client's side (`src_port_be` in the original
/// tuple, `dst_port_be` in the reply tuple) and the other port is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowTuple {
    pub src_ip_be: u32,
    pub dst_ip_be: u32,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub protocol: u8,
    /// Padding as two scalars, not `[u8; 3]`: zeroing a 3-byte array compiles
    /// to a memset loop whose variable stack offset the verifier refuses
    /// without CAP_PERFMON (Spectre v1 hardening). One step towards loading
    /// without PERFMON, which 6.18 already allows.
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FlowTuple {
    #[inline(always)]
    pub fn new(
        src_ip_be: u32,
        dst_ip_be: u32,
        src_port_be: u16,
        dst_port_be: u16,
        protocol: u8,
    ) -> FlowTuple {
        FlowTuple { src_ip_be, dst_ip_be, src_port_be, dst_port_be, protocol, _pad0: 0, _pad1: 0 }
    }
}

/// TCP progress, which picks the idle timeout. UDP and ICMP use `Open`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// TCP: only the client's SYN seen so far.
    SynSent = 0,
    /// TCP: the remote answered; UDP/ICMP: any flow.
    Open = 1,
    /// TCP: FINs from both sides with the client's first, or an RST. The
    /// client holds TIME_WAIT on its own tuple; the remote holds nothing.
    Closing = 2,
    /// TCP: the client sent FIN; the remote may still be sending.
    HalfClosedByClient = 3,
    /// TCP: the remote sent FIN; the client may still be sending.
    HalfClosedByRemote = 4,
    /// TCP: FINs from both sides with the remote's first (an HTTP server
    /// closing with `Connection: close`). The remote holds TIME_WAIT on the
    /// NAT port's tuple, so the port stays bound to this flow for
    /// `tcp_time_wait_timeout_s`: handed to another client meanwhile, that
    /// client's SYN carries unrelated TCP timestamps and the remote refuses
    /// it (PAWS), which costs the client a retransmitted SYN.
    TimeWait = 5,
}

impl FlowState {
    pub fn from_u8(v: u8) -> FlowState {
        match v {
            0 => FlowState::SynSent,
            2 => FlowState::Closing,
            3 => FlowState::HalfClosedByClient,
            4 => FlowState::HalfClosedByRemote,
            5 => FlowState::TimeWait,
            _ => FlowState::Open,
        }
    }
}

/// Everything the datapath needs to translate a packet of the flow in either
/// direction, and everything `status` shows about it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatEntry {
    /// The labeled pod's address inside the tunnel (also its pod IP).
    pub client_ip_be: u32,
    /// The worker's address the VXLAN packets came from; replies are
    /// encapsulated back to it.
    pub client_outer_ip_be: u32,
    pub remote_ip_be: u32,
    pub client_port_be: u16,
    pub remote_port_be: u16,
    pub nat_port_be: u16,
    pub protocol: u8,
    /// A [`FlowState`].
    pub state: u8,
    /// The worker's tunnel device MAC (inner source of its frames).
    pub client_mac: [u8; 6],
    /// The MAC the worker addressed its frames to (inner destination).
    pub tunnel_gateway_mac: [u8; 6],
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last refresh.
    pub last_seen_ns: u64,
    /// The client's [`crate::maps::ClientInfo::client_id`]: replies are
    /// accounted to it without another map lookup.
    pub client_id: u32,
    /// How the client's packets of this flow leave the gateway: an
    /// [`UploadRoute`], kept per flow so its packets are never reordered.
    pub upload_route: u8,
    pub _pad0: u8,
    pub _pad1: u16,
}

impl NatEntry {
    /// The tuple the client sends with.
    #[inline(always)]
    pub fn original_tuple(&self) -> FlowTuple {
        FlowTuple::new(
            self.client_ip_be,
            self.remote_ip_be,
            self.client_port_be,
            self.remote_port_be,
            self.protocol,
        )
    }

    /// Whether `other` is the other half of this same binding (same flow,
    /// same NAT port). A half whose partner was evicted can find its tuple
    /// taken by a newer binding; it must never act on that one.
    #[inline(always)]
    pub fn same_binding(&self, other: &NatEntry) -> bool {
        self.client_ip_be == other.client_ip_be
            && self.remote_ip_be == other.remote_ip_be
            && self.client_port_be == other.client_port_be
            && self.remote_port_be == other.remote_port_be
            && self.nat_port_be == other.nat_port_be
            && self.protocol == other.protocol
    }

    /// How long the flow may stay idle, by protocol and TCP state.
    #[inline(always)]
    pub fn idle_timeout_ns(&self, cfg: &GatewayConfig) -> u64 {
        // Every timeout is loaded first and then one is picked by value.
        // Left to itself the compiler picks a field *address* by branch and
        // loads once; the verifier refuses such path-dependent pointer
        // arithmetic on a map value without CAP_PERFMON.
        let load = |field: &u32| unsafe { core::ptr::read_volatile(field) };
        let syn = load(&cfg.tcp_syn_timeout_s);
        let established = load(&cfg.tcp_established_timeout_s);
        let closing = load(&cfg.tcp_closing_timeout_s);
        let time_wait = load(&cfg.tcp_time_wait_timeout_s);
        let udp = load(&cfg.udp_timeout_s);
        let icmp = load(&cfg.icmp_timeout_s);
        let seconds = match self.protocol {
            PROTO_TCP => match FlowState::from_u8(self.state) {
                FlowState::SynSent => syn,
                // A half-closed flow can go on streaming one way for as long
                // as an open one.
                FlowState::Open | FlowState::HalfClosedByClient | FlowState::HalfClosedByRemote => {
                    established
                }
                FlowState::Closing => closing,
                FlowState::TimeWait => time_wait,
            },
            PROTO_UDP => udp,
            _ => icmp,
        };
        seconds as u64 * NS_PER_S
    }

    /// Whether the flow has been idle past its timeout at `now_ns`
    /// (CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads).
    #[inline(always)]
    pub fn is_expired(&self, cfg: &GatewayConfig, now_ns: u64) -> bool {
        now_ns > self.last_seen_ns && now_ns - self.last_seen_ns > self.idle_timeout_ns(cfg)
    }

    /// The destination whose NAT ports this binding takes one of.
    #[inline(always)]
    pub fn nat_destination(&self) -> crate::maps::NatDestination {
        let remote_port_be = if self.protocol == PROTO_ICMP { 0 } else { self.remote_port_be };
        crate::maps::NatDestination {
            remote_ip_be: self.remote_ip_be,
            remote_port_be,
            protocol: self.protocol,
            _pad: 0,
        }
    }

    /// The tuple the remote's replies carry, given the gateway's address.
    #[inline(always)]
    pub fn reply_tuple(&self, gateway_ip_be: u32) -> FlowTuple {
        let remote_port_be = if self.protocol == PROTO_ICMP { 0 } else { self.remote_port_be };
        FlowTuple::new(self.remote_ip_be, gateway_ip_be, remote_port_be, self.nat_port_be, self.protocol)
    }
}

const _: () = assert!(core::mem::size_of::<FlowTuple>() == 16);
const _: () = assert!(core::mem::size_of::<NatEntry>() == 48);
