//! Connection tracking entries, shared by both halves of a NAT binding.
//!
//! A binding is stored twice, like Cilium's `otuple`/`rtuple`: once under the
//! tuple the client sends (`CT_ORIGINAL`) and once under the tuple the
//! remote's replies carry (`CT_REPLY`). Both halves hold the same
//! [`NatEntry`], so either one is enough to re-create the other if it went
//! missing (the agent's sweep removes the two halves one after the other).
//! Neither map evicts on its own: what leaves the table, and when, is
//! decided by these rules (docs/conntrack.md).

use crate::{
    config::GatewayConfig,
    ip::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
};

const NS_PER_S: u64 = 1_000_000_000;

/// [`NatEntry::flags`]: the remote has answered this flow at least once.
/// Until then the binding is "unreplied": short-lived (a TCP one lives by
/// the SYN timeout whatever its flags, like Linux's unassured conntrack
/// entries) and the first to go when the table is full.
pub const FLOW_SEEN_REPLY: u8 = 0x01;

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
    /// TCP: the client's packets only (a SYN, or whatever first packet that
    /// is not an RST); the remote has not answered yet.
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

    /// Whether a TCP flow in this state still carries a connection: not yet
    /// closed from both sides (what a draining gateway waits for).
    pub fn carries_connection(self) -> bool {
        !matches!(self, FlowState::Closing | FlowState::TimeWait)
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
    /// [`FLOW_SEEN_REPLY`].
    pub flags: u8,
    pub _pad0: u16,
    /// `bpf_ktime_get_ns()` when the binding was made. With the tuple and
    /// the NAT port it names this binding among all the bindings a tuple
    /// ever has: a half, or a copy read a moment ago, is acted on only if
    /// it is still the same binding (see [`NatEntry::same_binding`]).
    pub created_ns: u64,
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
    /// same NAT port, made at the same moment). A half whose partner was
    /// removed can find its tuple taken by a newer binding, possibly with
    /// the same NAT port; it must never act on that one.
    #[inline(always)]
    pub fn same_binding(&self, other: &NatEntry) -> bool {
        self.client_ip_be == other.client_ip_be
            && self.remote_ip_be == other.remote_ip_be
            && self.client_port_be == other.client_port_be
            && self.remote_port_be == other.remote_port_be
            && self.nat_port_be == other.nat_port_be
            && self.protocol == other.protocol
            && self.created_ns == other.created_ns
    }

    /// Whether the remote has answered this flow.
    #[inline(always)]
    pub fn seen_reply(&self) -> bool {
        self.flags & FLOW_SEEN_REPLY != 0
    }

    /// Whether a full table (or its client's full share) may take this
    /// binding's entry for a new flow: a flow the remote never answered, a
    /// TCP flow that has ended (both FINs, or an RST: `Closing` and
    /// `TimeWait` only hold a closed connection's port), or one past its
    /// timeout. A live flow that has seen replies keeps its NAT port until
    /// it ends.
    #[inline(always)]
    pub fn is_evictable(&self, cfg: &GatewayConfig, now_ns: u64) -> bool {
        let ended = self.protocol == IPPROTO_TCP
            && (self.state == FlowState::Closing as u8 || self.state == FlowState::TimeWait as u8);
        !self.seen_reply() || ended || self.is_expired(cfg, now_ns)
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
            // Unreplied, a TCP binding is a connection attempt at most,
            // whatever the client sent (a FIN or an ACK picks nothing up).
            IPPROTO_TCP if !self.seen_reply() => syn,
            IPPROTO_TCP => match FlowState::from_u8(self.state) {
                FlowState::SynSent => syn,
                // A half-closed flow can go on streaming one way for as long
                // as an open one.
                FlowState::Open | FlowState::HalfClosedByClient | FlowState::HalfClosedByRemote => {
                    established
                }
                FlowState::Closing => closing,
                FlowState::TimeWait => time_wait,
            },
            IPPROTO_UDP => udp,
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
        let remote_port_be = if self.protocol == IPPROTO_ICMP { 0 } else { self.remote_port_be };
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
        let remote_port_be = if self.protocol == IPPROTO_ICMP { 0 } else { self.remote_port_be };
        FlowTuple::new(self.remote_ip_be, gateway_ip_be, remote_port_be, self.nat_port_be, self.protocol)
    }
}

const _: () = assert!(core::mem::size_of::<FlowTuple>() == 16);
const _: () = assert!(core::mem::size_of::<NatEntry>() == 56);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        GatewayConfig {
            tcp_syn_timeout_s: 60,
            tcp_established_timeout_s: 7_440,
            tcp_closing_timeout_s: 30,
            tcp_time_wait_timeout_s: 120,
            udp_timeout_s: 60,
            icmp_timeout_s: 30,
            ..unsafe { core::mem::zeroed() }
        }
    }

    fn tcp(state: FlowState, flags: u8) -> NatEntry {
        NatEntry { protocol: IPPROTO_TCP, state: state as u8, flags, ..Default::default() }
    }

    #[test]
    fn an_unreplied_tcp_binding_lives_by_the_syn_timeout_whatever_its_state() {
        let cfg = config();
        for state in [FlowState::SynSent, FlowState::Open, FlowState::HalfClosedByClient, FlowState::TimeWait]
        {
            assert_eq!(tcp(state, 0).idle_timeout_ns(&cfg), 60 * NS_PER_S, "{state:?}");
        }
        assert_eq!(tcp(FlowState::Open, FLOW_SEEN_REPLY).idle_timeout_ns(&cfg), 7_440 * NS_PER_S);
        assert_eq!(tcp(FlowState::TimeWait, FLOW_SEEN_REPLY).idle_timeout_ns(&cfg), 120 * NS_PER_S);
    }

    #[test]
    fn only_unreplied_ended_or_expired_bindings_are_evictable() {
        let cfg = config();
        let now = 10_000 * NS_PER_S;
        let mut live = tcp(FlowState::Open, FLOW_SEEN_REPLY);
        live.last_seen_ns = now - NS_PER_S;
        assert!(!live.is_evictable(&cfg, now));
        let mut unreplied = live;
        unreplied.flags = 0;
        assert!(unreplied.is_evictable(&cfg, now));
        let mut idle = live;
        idle.last_seen_ns = now - 7_441 * NS_PER_S;
        assert!(idle.is_evictable(&cfg, now));
        let mut udp = NatEntry { protocol: IPPROTO_UDP, flags: FLOW_SEEN_REPLY, ..Default::default() };
        udp.last_seen_ns = now - 59 * NS_PER_S;
        assert!(!udp.is_evictable(&cfg, now));
        let mut closed = live;
        closed.state = FlowState::TimeWait as u8;
        assert!(closed.is_evictable(&cfg, now), "an ended connection only holds a port");
        let mut half_closed = live;
        half_closed.state = FlowState::HalfClosedByRemote as u8;
        assert!(!half_closed.is_evictable(&cfg, now), "a half-closed flow may still carry data");
    }

    #[test]
    fn a_binding_is_the_same_only_with_the_same_creation() {
        let a = tcp(FlowState::Open, 0);
        let mut b = a;
        b.last_seen_ns = 99;
        b.state = FlowState::Closing as u8;
        assert!(a.same_binding(&b), "state and activity do not change a binding's identity");
        b.created_ns = 1;
        assert!(!a.same_binding(&b), "a newer binding of the same tuple and port is another binding");
    }
}
