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
    ip::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    maps::{NatDestination, NatDestination6},
};

const NS_PER_S: u64 = 1_000_000_000;

/// [`NatEntry::flags`]: the remote has answered this flow at least once.
/// Until then the binding is "unreplied": short-lived (a TCP one lives by
/// the SYN timeout whatever its flags, like Linux's unassured conntrack
/// entries) and the first to go when the table is full.
pub const FLOW_SEEN_REPLY: u8 = 0x01;
/// [`NatEntry6::flags`]: the client's tunnel is VXLAN over IPv6 (an
/// IPv6-only cluster). Its outer address is then the pod's own IPv6
/// address, `client_ip` (the gateway requires the two to be equal), where
/// replies are tunnelled to; `client_outer_ip_be` is 0.
pub const FLOW_OUTER_IPV6: u8 = 0x02;

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

/// A binding of either address family: the fields both [`NatEntry`] and
/// [`NatEntry6`] hold, and the rules decided on them alone (timeouts,
/// expiry, what may make room, a binding's identity), so the two families'
/// conntrack cannot drift apart. The datapath's conntrack is written once
/// over this trait.
pub trait Binding: Copy {
    /// An address of the family, as the datapath holds it.
    type Address: Copy + PartialEq;
    /// A flow as seen in one direction (a conntrack key).
    type Tuple: Copy + PartialEq;
    /// What NAT ports are allocated per ([`NatDestination`]).
    type Destination: Copy;
    /// The family's echo protocol (ICMP, ICMPv6), keyed by its identifier
    /// on the client's side alone.
    const ECHO_PROTOCOL: u8;

    /// The tuple the client sends with.
    fn original_tuple(&self) -> Self::Tuple;
    /// The tuple the remote's replies carry, given the gateway's address.
    fn reply_tuple(&self, gateway: Self::Address) -> Self::Tuple;
    /// The destination whose NAT ports this binding takes one of.
    fn nat_destination(&self) -> Self::Destination;
    /// Whether `other` is the other half of this same binding (same flow,
    /// same NAT port, made at the same moment). A half whose partner was
    /// removed can find its tuple taken by a newer binding, possibly with
    /// the same NAT port; it must never act on that one.
    fn same_binding(&self, other: &Self) -> bool;

    fn protocol(&self) -> u8;
    /// A [`FlowState`].
    fn state(&self) -> u8;
    /// [`FLOW_SEEN_REPLY`].
    fn flags(&self) -> u8;
    fn last_seen_ns(&self) -> u64;
    fn client_id(&self) -> u32;
    fn client_port_be(&self) -> u16;
    fn remote_port_be(&self) -> u16;
    fn nat_port_be(&self) -> u16;
    /// [`crate::gro::UploadRoute`], as stored.
    fn upload_route(&self) -> u8;
    fn set_nat_port_be(&mut self, nat_port_be: u16);
    fn set_created_ns(&mut self, created_ns: u64);
    /// Stores a packet's activity: the new state and flags, and when.
    fn set_activity(&mut self, state: u8, flags: u8, now_ns: u64);
    fn set_upload_route(&mut self, route: u8);

    /// The NAT port of the entry at `this` (a map slot another CPU may
    /// rewrite at any moment) in one volatile load, which keeps its place
    /// among the caller's other volatile loads.
    ///
    /// # Safety
    /// `this` points to memory holding a `Self`.
    unsafe fn nat_port_be_volatile(this: *const Self) -> u16;
    /// The original tuple of the entry at `this`, each field read by a
    /// volatile load, so after any volatile load before it.
    ///
    /// # Safety
    /// `this` points to memory holding a `Self`.
    unsafe fn original_tuple_volatile(this: *const Self) -> Self::Tuple;

    /// The remote's port as the reply tuple and the NAT destination key
    /// it: 0 for echo, whose replies carry the identifier on our side only.
    #[inline(always)]
    fn keyed_remote_port_be(&self) -> u16 {
        if self.protocol() == Self::ECHO_PROTOCOL {
            0
        } else {
            self.remote_port_be()
        }
    }

    /// Whether the remote has answered this flow.
    #[inline(always)]
    fn seen_reply(&self) -> bool {
        self.flags() & FLOW_SEEN_REPLY != 0
    }

    /// Whether a full table (or its client's full share) may take this
    /// binding's entry for a new flow: a flow the remote never answered, a
    /// TCP flow that has ended (both FINs, or an RST: `Closing` and
    /// `TimeWait` only hold a closed connection's port), or one past its
    /// timeout. A live flow that has seen replies keeps its NAT port until
    /// it ends.
    #[inline(always)]
    fn is_evictable(&self, cfg: &GatewayConfig, now_ns: u64) -> bool {
        let ended = self.protocol() == IPPROTO_TCP
            && (self.state() == FlowState::Closing as u8 || self.state() == FlowState::TimeWait as u8);
        !self.seen_reply() || ended || self.is_expired(cfg, now_ns)
    }

    /// How long the flow may stay idle, by protocol and TCP state (ICMP
    /// and ICMPv6 echo alike by the ICMP timeout).
    #[inline(always)]
    fn idle_timeout_ns(&self, cfg: &GatewayConfig) -> u64 {
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
        let seconds = match self.protocol() {
            // Unreplied, a TCP binding is a connection attempt at most,
            // whatever the client sent (a FIN or an ACK picks nothing up).
            IPPROTO_TCP if !self.seen_reply() => syn,
            IPPROTO_TCP => match FlowState::from_u8(self.state()) {
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
    fn is_expired(&self, cfg: &GatewayConfig, now_ns: u64) -> bool {
        let last_seen_ns = self.last_seen_ns();
        now_ns > last_seen_ns && now_ns - last_seen_ns > self.idle_timeout_ns(cfg)
    }
}

/// The [`Binding`] accessors of the fields both entries name alike: a
/// getter for each field listed, and the setters.
macro_rules! shared_binding_fields {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(
            #[inline(always)]
            fn $field(&self) -> $ty {
                self.$field
            }
        )*
        #[inline(always)]
        unsafe fn nat_port_be_volatile(this: *const Self) -> u16 {
            unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*this).nat_port_be)) }
        }
        #[inline(always)]
        fn set_nat_port_be(&mut self, nat_port_be: u16) {
            self.nat_port_be = nat_port_be;
        }
        #[inline(always)]
        fn set_created_ns(&mut self, created_ns: u64) {
            self.created_ns = created_ns;
        }
        #[inline(always)]
        fn set_activity(&mut self, state: u8, flags: u8, now_ns: u64) {
            self.state = state;
            self.flags = flags;
            self.last_seen_ns = now_ns;
        }
        #[inline(always)]
        fn set_upload_route(&mut self, route: u8) {
            self.upload_route = route;
        }
    };
}

impl Binding for NatEntry {
    /// Network order.
    type Address = u32;
    type Tuple = FlowTuple;
    type Destination = NatDestination;
    const ECHO_PROTOCOL: u8 = IPPROTO_ICMP;

    #[inline(always)]
    fn original_tuple(&self) -> FlowTuple {
        FlowTuple::new(
            self.client_ip_be,
            self.remote_ip_be,
            self.client_port_be,
            self.remote_port_be,
            self.protocol,
        )
    }

    #[inline(always)]
    unsafe fn original_tuple_volatile(this: *const NatEntry) -> FlowTuple {
        use core::ptr::{addr_of, read_volatile};
        unsafe {
            FlowTuple::new(
                read_volatile(addr_of!((*this).client_ip_be)),
                read_volatile(addr_of!((*this).remote_ip_be)),
                read_volatile(addr_of!((*this).client_port_be)),
                read_volatile(addr_of!((*this).remote_port_be)),
                read_volatile(addr_of!((*this).protocol)),
            )
        }
    }

    #[inline(always)]
    fn reply_tuple(&self, gateway_ip_be: u32) -> FlowTuple {
        FlowTuple::new(
            self.remote_ip_be,
            gateway_ip_be,
            self.keyed_remote_port_be(),
            self.nat_port_be,
            self.protocol,
        )
    }

    #[inline(always)]
    fn nat_destination(&self) -> NatDestination {
        let remote_port_be = self.keyed_remote_port_be();
        NatDestination { remote_ip_be: self.remote_ip_be, remote_port_be, protocol: self.protocol, _pad: 0 }
    }

    #[inline(always)]
    fn same_binding(&self, other: &NatEntry) -> bool {
        self.client_ip_be == other.client_ip_be
            && self.remote_ip_be == other.remote_ip_be
            && self.client_port_be == other.client_port_be
            && self.remote_port_be == other.remote_port_be
            && self.nat_port_be == other.nat_port_be
            && self.protocol == other.protocol
            && self.created_ns == other.created_ns
    }

    shared_binding_fields!(
        protocol: u8,
        state: u8,
        flags: u8,
        last_seen_ns: u64,
        client_id: u32,
        client_port_be: u16,
        remote_port_be: u16,
        nat_port_be: u16,
        upload_route: u8,
    );
}

/// [`FlowTuple`] for IPv6. ICMPv6 echo is tracked like ICMP echo: the
/// identifier in place of the client's port. 8-byte aligned (its layout
/// is the same): the datapath then moves its addresses as 8-byte words,
/// where at 2-byte alignment it moved them byte by byte, each byte
/// through a stack slot of its own.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowTuple6 {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub protocol: u8,
    /// Two scalars, as in [`FlowTuple`].
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FlowTuple6 {
    #[inline(always)]
    pub fn new(
        src_ip: [u8; 16],
        dst_ip: [u8; 16],
        src_port_be: u16,
        dst_port_be: u16,
        protocol: u8,
    ) -> FlowTuple6 {
        FlowTuple6 { src_ip, dst_ip, src_port_be, dst_port_be, protocol, _pad0: 0, _pad1: 0 }
    }
}

/// [`NatEntry`] for an IPv6 flow. The tunnel stays IPv4 in a dual-stack
/// cluster, so the worker's outer address is still an IPv4 one; the client
/// is the same client (its id) under either family.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NatEntry6 {
    /// The labeled pod's IPv6 address inside the tunnel.
    pub client_ip: [u8; 16],
    pub remote_ip: [u8; 16],
    /// The worker's address the VXLAN packets came from, when its tunnel
    /// is over IPv4 (0 with [`FLOW_OUTER_IPV6`]).
    pub client_outer_ip_be: u32,
    pub client_port_be: u16,
    pub remote_port_be: u16,
    pub nat_port_be: u16,
    pub protocol: u8,
    /// A [`FlowState`].
    pub state: u8,
    pub client_mac: [u8; 6],
    pub tunnel_gateway_mac: [u8; 6],
    pub last_seen_ns: u64,
    pub client_id: u32,
    /// An [`UploadRoute`].
    pub upload_route: u8,
    /// [`FLOW_SEEN_REPLY`], [`FLOW_OUTER_IPV6`].
    pub flags: u8,
    pub _pad0: u16,
    /// See [`NatEntry::created_ns`].
    pub created_ns: u64,
}

impl NatEntry6 {
    /// What the tunnel to this binding's client adds in front of a reply
    /// (`config::TUNNEL_OVERHEAD`, or `TUNNEL_OVERHEAD6` over IPv6).
    #[inline(always)]
    pub fn tunnel_overhead(&self) -> usize {
        if self.flags & FLOW_OUTER_IPV6 != 0 {
            crate::config::TUNNEL_OVERHEAD6
        } else {
            crate::config::TUNNEL_OVERHEAD
        }
    }
}

impl Binding for NatEntry6 {
    type Address = [u8; 16];
    type Tuple = FlowTuple6;
    type Destination = NatDestination6;
    const ECHO_PROTOCOL: u8 = IPPROTO_ICMPV6;

    #[inline(always)]
    fn original_tuple(&self) -> FlowTuple6 {
        FlowTuple6::new(
            self.client_ip,
            self.remote_ip,
            self.client_port_be,
            self.remote_port_be,
            self.protocol,
        )
    }

    #[inline(always)]
    unsafe fn original_tuple_volatile(this: *const NatEntry6) -> FlowTuple6 {
        use core::ptr::{addr_of, read_volatile};
        // An address in two 8-byte loads (offsets 0 and 16 of an 8-byte
        // aligned entry), not the sixteen one-byte loads a volatile read of
        // a byte array is.
        let address = |field: *const [u8; 16]| {
            let words = unsafe { read_volatile(field as *const [u64; 2]) };
            unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) }
        };
        unsafe {
            FlowTuple6::new(
                address(addr_of!((*this).client_ip)),
                address(addr_of!((*this).remote_ip)),
                read_volatile(addr_of!((*this).client_port_be)),
                read_volatile(addr_of!((*this).remote_port_be)),
                read_volatile(addr_of!((*this).protocol)),
            )
        }
    }

    #[inline(always)]
    fn reply_tuple(&self, gateway_ip6: [u8; 16]) -> FlowTuple6 {
        FlowTuple6::new(
            self.remote_ip,
            gateway_ip6,
            self.keyed_remote_port_be(),
            self.nat_port_be,
            self.protocol,
        )
    }

    #[inline(always)]
    fn nat_destination(&self) -> NatDestination6 {
        let remote_port_be = self.keyed_remote_port_be();
        NatDestination6 { remote_ip: self.remote_ip, remote_port_be, protocol: self.protocol, _pad: 0 }
    }

    #[inline(always)]
    fn same_binding(&self, other: &NatEntry6) -> bool {
        self.client_ip == other.client_ip
            && self.remote_ip == other.remote_ip
            && self.client_port_be == other.client_port_be
            && self.remote_port_be == other.remote_port_be
            && self.nat_port_be == other.nat_port_be
            && self.protocol == other.protocol
            && self.created_ns == other.created_ns
    }

    shared_binding_fields!(
        protocol: u8,
        state: u8,
        flags: u8,
        last_seen_ns: u64,
        client_id: u32,
        client_port_be: u16,
        remote_port_be: u16,
        nat_port_be: u16,
        upload_route: u8,
    );
}

const _: () = assert!(core::mem::size_of::<FlowTuple>() == 16);
const _: () = assert!(core::mem::size_of::<NatEntry>() == 56);
const _: () = assert!(core::mem::size_of::<FlowTuple6>() == 40 && core::mem::align_of::<FlowTuple6>() == 8);
const _: () = assert!(core::mem::size_of::<NatEntry6>() == 80);

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

    #[test]
    fn both_families_follow_the_same_rules() {
        let cfg = config();
        let now = 10_000 * NS_PER_S;
        for (protocol, protocol6) in
            [(IPPROTO_TCP, IPPROTO_TCP), (IPPROTO_UDP, IPPROTO_UDP), (IPPROTO_ICMP, IPPROTO_ICMPV6)]
        {
            for state in [FlowState::SynSent, FlowState::Open, FlowState::Closing, FlowState::TimeWait] {
                for (flags, idle_s) in [(0, 10), (FLOW_SEEN_REPLY, 10), (FLOW_SEEN_REPLY, 100)] {
                    let last_seen_ns = now - idle_s * NS_PER_S;
                    let v4 =
                        NatEntry { protocol, state: state as u8, flags, last_seen_ns, ..Default::default() };
                    let v6 = NatEntry6 {
                        protocol: protocol6,
                        state: state as u8,
                        flags,
                        last_seen_ns,
                        ..Default::default()
                    };
                    let what = (protocol, state, flags, idle_s);
                    assert_eq!(v4.idle_timeout_ns(&cfg), v6.idle_timeout_ns(&cfg), "{what:?}");
                    assert_eq!(v4.is_expired(&cfg, now), v6.is_expired(&cfg, now), "{what:?}");
                    assert_eq!(v4.is_evictable(&cfg, now), v6.is_evictable(&cfg, now), "{what:?}");
                }
            }
        }
    }

    #[test]
    fn an_ipv6_echo_binding_is_keyed_by_its_identifier_alone() {
        let (client, remote, gateway) = ([0xfd; 16], [0x26; 16], [0x20; 16]);
        let echo = NatEntry6 {
            client_ip: client,
            remote_ip: remote,
            client_port_be: 7u16.to_be(),
            remote_port_be: 9u16.to_be(),
            nat_port_be: 40_000u16.to_be(),
            protocol: IPPROTO_ICMPV6,
            ..Default::default()
        };
        assert_eq!(echo.original_tuple(), FlowTuple6::new(client, remote, 7u16.to_be(), 9u16.to_be(), 58));
        assert_eq!(echo.reply_tuple(gateway), FlowTuple6::new(remote, gateway, 0, 40_000u16.to_be(), 58));
        assert_eq!(echo.nat_destination().remote_port_be, 0);
        let udp = NatEntry6 { protocol: IPPROTO_UDP, ..echo };
        assert_eq!(udp.reply_tuple(gateway).src_port_be, 9u16.to_be());
        let mut newer = udp;
        newer.created_ns = 1;
        assert!(!udp.same_binding(&newer));
        assert!(!udp.same_binding(&echo));
    }
}
