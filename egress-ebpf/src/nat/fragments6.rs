//! `egress_frag6_out` and `egress_frag6_in`: IPv6 fragments, each way. A UDP sender whose
//! datagram is longer than the path MTU (after a Packet Too Big, above
//! all: IPv6 routers never fragment) sends it in fragments, and only the
//! first carries the ports. As for IPv4 (`fragments`), the first
//! fragment is translated with its flow, which is remembered under what
//! all the datagram's fragments share (`FragmentKey6`); the later ones
//! follow it. Nothing is held or reassembled.
//!
//! ```text
//! client: [tunnel][IPv6 pod → remote][frag: id, offset, M][L4 (first only) ...]
//!      →  [eth][IPv6 gateway → remote, hop limit - 1][frag][L4, NAT port (first only) ...]
//! remote: [eth][IPv6 remote → gateway][frag][L4, NAT port (first only) ...]
//!      →  [tunnel][IPv6 remote → pod, hop limit - 1][frag][L4 (first only) ...]
//! ```
//!
//! Only a fragment header right after the fixed one is translated (what
//! senders make). A client's fragments have passed every check a packet
//! of the client's passes in `egress_gateway6`; a remote's come from
//! `egress_remote6` when the fragment header is its first. First
//! fragments, both ways, come out of the client's allowance, shared with
//! IPv4 (`egress_common::fragments::FIRST_FRAGMENTS`): one pod's spray
//! cannot push the others' datagrams out of the map. A remote's fragment
//! that does not fit the tunnel is answered with Packet Too Big, as any
//! reply (`too_big6`); its sender fragments smaller from then on.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple6, NatEntry6},
    counters::Counter,
    fragments::{FragmentFlow6, FragmentKey6, FRAGMENT_TIMEOUT_NS, IPV6_FRAGMENT_MORE},
    ip::{is_ipv6_extension_header, IPV6_FRAGMENT_HLEN, IPV6_FRAGMENT_OFFSET_MASK},
    maps::{IPV6_TOO_BIG_CLIENT_CB, IPV6_TOO_BIG_OVERHEAD_CB, IPV6_TOO_BIG_PROGRAM_SLOT},
};

use crate::{
    conntrack::{self, Half},
    headers::{
        load_l4, Ipv6Header, L4Ports, ETH_HLEN, ICMPV6_ECHO_REQUEST, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP, IPV6_HLEN, UDP_CSUM_OFF,
    },
    maps::{
        account, count, take_first_fragment, wire_segments, Direction, FragmentScratch6, FRAGMENT6_SCRATCH,
        FRAGMENTS6,
    },
    nat::{
        rev_nat::live_reply,
        rewrite::{nat_v6_rewrite_headers_at, rewrite_ipv6_hop, End, L4At},
        snat::live_original,
        snat6::snat_v6_new_mapping,
        to_client::tunnel_to_client6,
    },
    tunnel::{
        encap::fits_tunnel_of,
        outer::{Outer, Sender},
    },
    verdict::Verdict,
};

/// An IPv6 fragment header's fields.
struct Fragment {
    /// The header after it: the transport header, in a first fragment.
    next_header: u8,
    /// Where this fragment's data goes in the datagram, in 8-byte units.
    offset: u16,
    more: bool,
    id_be: u32,
}

impl Fragment {
    #[inline(always)]
    fn load(ctx: &TcContext, off: usize) -> Result<Fragment, Counter> {
        let b: [u8; IPV6_FRAGMENT_HLEN] = ctx.load(off).map_err(|_| Counter::DropMalformed)?;
        let bits = u16::from_be_bytes([b[2], b[3]]);
        Ok(Fragment {
            next_header: b[0],
            offset: (bits & IPV6_FRAGMENT_OFFSET_MASK) >> 3,
            more: bits & IPV6_FRAGMENT_MORE != 0,
            id_be: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        })
    }

    #[inline(always)]
    fn is_first(&self) -> bool {
        self.offset == 0
    }

    /// Whether later fragments follow (an atomic fragment, RFC 6946, is a
    /// whole datagram: nothing to remember).
    #[inline(always)]
    fn has_later(&self) -> bool {
        self.offset == 0 && self.more
    }
}

/// `egress_frag6_out`: a client's fragment, in its tunnel.
#[inline(always)]
pub fn from_client<O: Outer>(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    match client_fragment::<O>(ctx, cfg) {
        Ok(()) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToRemote },
        Err(reason) => Verdict::Drop(reason),
    }
}

/// A client's fragment: the first bound and translated as any packet of
/// its flow, a later one translated as its first was.
#[inline(always)]
fn client_fragment<O: Outer>(ctx: &TcContext, cfg: &GatewayConfig) -> Result<(), Counter> {
    let sender = O::sender(ctx, cfg)?;
    let ip = Ipv6Header::load_whole(ctx, O::INNER_IP_OFF).ok_or(Counter::DropMalformed)?;
    // Checked before the tail call; again, as the hop is taken here.
    if ip.hop_limit <= 1 {
        return Err(Counter::DropTtlExceeded);
    }
    let fragment = Fragment::load(ctx, O::INNER_IP_OFF + IPV6_HLEN)?;
    let now = conntrack::now_ns();
    if fragment.is_first() {
        first_from_client::<O>(ctx, cfg, &sender, &ip, &fragment, now)?;
    } else {
        let flow = later_flow(&ip, fragment.id_be, fragment.next_header, now)
            .ok_or(Counter::DropFragmentUnmatched)?;
        let entry = live_binding(cfg, flow, Half::Original, now).ok_or(Counter::DropFragmentUnmatched)?;
        if entry.client_id != sender.client_id {
            return Err(Counter::DropFragmentUnmatched);
        }
        rewrite_ipv6_hop(ctx, O::INNER_IP_OFF, &ip, End::Source, &cfg.gateway_ip6)?;
        count(Counter::FragmentTranslated);
    }
    O::strip(ctx)?;
    account(sender.client_id, Direction::ToRemote, 1, (ctx.len() - ETH_HLEN as u32) as u64);
    Ok(())
}

/// A client's first fragment: what `egress_gateway6` does with a whole
/// packet, its transport header after the fragment header.
#[inline(always)]
fn first_from_client<O: Outer>(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    sender: &Sender,
    ip: &Ipv6Header,
    fragment: &Fragment,
    now: u64,
) -> Result<(), Counter> {
    // Whatever an earlier datagram under this key left goes first: this
    // one's later fragments never follow that one's flow, remembered or not.
    forget(ip, fragment.id_be, fragment.next_header);
    let l4 = L4At { off: O::INNER_IP_OFF + IPV6_HLEN + IPV6_FRAGMENT_HLEN, protocol: fragment.next_header };
    let ports = transport_ports(ctx, &l4)?;
    if fragment.has_later() && !take_first_fragment(sender.client_id, now) {
        return Err(Counter::DropFragmentOverBudget);
    }
    let tuple = FlowTuple6::new(ip.src, ip.dst, ports.src_port_be, ports.dst_port_be, l4.protocol);
    let nat_port_be = match live_original::<NatEntry6>(cfg, &tuple, l4.protocol, ports.flags_or_type, now) {
        Some((_, entry)) => entry.nat_port_be,
        None => snat_v6_new_mapping::<O>(ctx, cfg, sender, ip, l4.protocol, &ports, now)?,
    };
    nat_v6_rewrite_headers_at(
        ctx,
        O::INNER_IP_OFF,
        ip,
        &l4,
        End::Source,
        &cfg.gateway_ip6,
        ports.src_port_be,
        nat_port_be,
    )?;
    if fragment.has_later() {
        // 0: any binding of this client's (the tuple is its own).
        remember(ip, fragment.id_be, &tuple, sender.client_id, 0, now);
    }
    Ok(())
}

/// `egress_frag6_in`: a remote's fragment. The first one of a reply is
/// translated as the reply would be, a later one as its first was; any
/// other (a datagram to the pod itself) is the pod's.
#[inline(always)]
pub fn from_remote(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    let Some(ip) = Ipv6Header::load_whole(ctx, ETH_HLEN) else { return Verdict::NOT_OURS };
    let Ok(fragment) = Fragment::load(ctx, ETH_HLEN + IPV6_HLEN) else { return Verdict::NOT_OURS };
    let sent = if fragment.is_first() {
        first_from_remote(ctx, cfg, &ip, &fragment)
    } else {
        later_from_remote(ctx, cfg, &ip, &fragment)
    };
    match sent {
        Ok(Some((client_id, overhead))) => {
            // Too big for the tunnel: answered with Packet Too Big by the
            // program that has the stack for it, as for a whole reply.
            // SAFETY: the context's socket buffer, valid for the program's run.
            unsafe {
                (*ctx.skb.skb).cb[IPV6_TOO_BIG_CLIENT_CB] = client_id;
                (*ctx.skb.skb).cb[IPV6_TOO_BIG_OVERHEAD_CB] = overhead;
            }
            Verdict::ToIpv6Program { slot: IPV6_TOO_BIG_PROGRAM_SLOT }
        }
        Ok(None) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient },
        Err(Some(reason)) => Verdict::Drop(reason),
        Err(None) => Verdict::NOT_OURS,
    }
}

/// What became of a remote's fragment: sent to the client (`Ok(None)`),
/// too big for the tunnel of client `id`'s flow (`Ok(Some((id,
/// tunnel overhead)))`), dropped (`Err(Some)`), or the pod's own
/// (`Err(None)`).
type RemoteFragment = Result<Option<(u32, u32)>, Option<Counter>>;

/// A remote's first fragment: to a NAT port, a reply of a live binding.
/// Its transport header follows the fragment header (`egress_remote6`
/// sends on no other first fragment).
#[inline(always)]
fn first_from_remote(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv6Header,
    fragment: &Fragment,
) -> RemoteFragment {
    // Whatever an earlier datagram under this key left goes first, before
    // anything can return: this one's later fragments must never follow
    // another flow's entry (one a spoofing sender planted included) when
    // this one is not remembered (too big for the tunnel, over the
    // allowance, the pod's own).
    forget(ip, fragment.id_be, fragment.next_header);
    let l4 = L4At { off: ETH_HLEN + IPV6_HLEN + IPV6_FRAGMENT_HLEN, protocol: fragment.next_header };
    let ports = reply_ports(ctx, cfg, &l4).ok_or(None)?;
    let tuple = FlowTuple6::new(ip.src, ip.dst, ports.src_port_be, ports.dst_port_be, l4.protocol);
    let now = conntrack::now_ns();
    let Some((binding, entry)) = conntrack::ct_lookup::<NatEntry6>(cfg, Half::Reply, &tuple, now) else {
        // Echo replies may be the gateway pod's own pings (rev_nat6).
        return Err((l4.protocol != IPPROTO_ICMPV6).then_some(Counter::DropNoMapping));
    };
    // As for a whole reply (rev_nat6): the hop limit first, then the size.
    if ip.hop_limit <= 1 {
        return Err(Some(Counter::DropTtlExceeded));
    }
    if !fits_tunnel_of(ctx, cfg, entry.tunnel_overhead()) {
        return Ok(Some((entry.client_id, entry.tunnel_overhead() as u32)));
    }
    // Before it refreshes anything, as in IPv4.
    if fragment.has_later() && !take_first_fragment(entry.client_id, now) {
        return Err(Some(Counter::DropFragmentOverBudget));
    }
    live_reply(cfg, &tuple, l4.protocol, ports.flags_or_type, &binding, &entry, now).map_err(Some)?;
    // Before the rewrite (the tuple does not fit the stack beside it): a
    // rewrite that then fails leaves an entry its later fragments find,
    // and drop, as that flow's.
    if fragment.has_later() {
        remember(ip, fragment.id_be, &tuple, entry.client_id, entry.created_ns, now);
    }
    nat_v6_rewrite_headers_at(
        ctx,
        ETH_HLEN,
        ip,
        &l4,
        End::Destination,
        &entry.client_ip,
        ports.dst_port_be,
        entry.client_port_be,
    )
    .map_err(Some)?;
    deliver(ctx, cfg, &entry).map_err(Some)
}

/// A remote's later fragment: of a datagram whose first fragment was a
/// reply's, or the pod's own.
#[inline(always)]
fn later_from_remote(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv6Header,
    fragment: &Fragment,
) -> RemoteFragment {
    let now = conntrack::now_ns();
    let flow = later_flow(ip, fragment.id_be, fragment.next_header, now).ok_or(None)?;
    let entry = live_binding(cfg, flow, Half::Reply, now).ok_or(Some(Counter::DropFragmentUnmatched))?;
    if ip.hop_limit <= 1 {
        return Err(Some(Counter::DropTtlExceeded));
    }
    if !fits_tunnel_of(ctx, cfg, entry.tunnel_overhead()) {
        return Ok(Some((entry.client_id, entry.tunnel_overhead() as u32)));
    }
    rewrite_ipv6_hop(ctx, ETH_HLEN, ip, End::Destination, &entry.client_ip).map_err(Some)?;
    count(Counter::FragmentTranslated);
    deliver(ctx, cfg, &entry).map_err(Some)
}

/// Tunnels a translated fragment to `entry`'s client.
#[inline(always)]
fn deliver(ctx: &TcContext, cfg: &GatewayConfig, entry: &NatEntry6) -> Result<Option<(u32, u32)>, Counter> {
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    let segments = wire_segments(ctx);
    tunnel_to_client6(ctx, cfg, entry, segments, bytes)?;
    Ok(None)
}

/// A client's first fragment's ports: TCP, UDP (with the checksum IPv6
/// makes mandatory) or an ICMPv6 echo request; more extension headers
/// after the fragment header are not looked through, any other protocol
/// or ICMPv6 message is not translated (as for a whole packet).
#[inline(always)]
fn transport_ports(ctx: &TcContext, l4: &L4At) -> Result<L4Ports, Counter> {
    if is_ipv6_extension_header(l4.protocol) {
        return Err(Counter::DropIpv6ExtHeader);
    }
    if !matches!(l4.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6) {
        return Err(Counter::DropUnsupportedProtocol);
    }
    if l4.protocol == IPPROTO_UDP {
        let checksum: u16 = ctx.load(l4.off + UDP_CSUM_OFF).map_err(|_| Counter::DropMalformed)?;
        if checksum == 0 {
            return Err(Counter::DropMalformed);
        }
    }
    let ports = load_l4(ctx, l4.off, l4.protocol).map_err(|_| Counter::DropMalformed)?;
    match ports {
        Some(ports) if l4.protocol != IPPROTO_ICMPV6 || ports.flags_or_type == ICMPV6_ECHO_REQUEST => {
            Ok(ports)
        }
        _ => Err(Counter::DropUnsupportedProtocol),
    }
}

/// A remote's first fragment's ports, if it is to a NAT port (else the
/// pod's, or not a transport header of ours).
#[inline(always)]
fn reply_ports(ctx: &TcContext, cfg: &GatewayConfig, l4: &L4At) -> Option<L4Ports> {
    if !matches!(l4.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6) {
        return None;
    }
    let ports = load_l4(ctx, l4.off, l4.protocol).ok()??;
    cfg.is_nat_port(u16::from_be(ports.dst_port_be)).then_some(ports)
}

/// This CPU's scratch entry for a fragment's key and flow.
#[inline(always)]
fn scratch() -> Option<&'static mut FragmentScratch6> {
    // SAFETY: a per-CPU value nothing else on this CPU uses meanwhile.
    FRAGMENT6_SCRATCH.get_ptr_mut(0).map(|ptr| unsafe { &mut *ptr })
}

/// Remembers the flow of a first fragment's datagram (`ip`'s addresses,
/// its fragment `id_be`, `tuple`'s protocol); `binding_created_ns` 0: any
/// binding of `client_id`'s. A full LRU forgets its oldest datagram; a
/// failed insert only loses this one's later fragments, which are then
/// counted.
#[inline(always)]
fn remember(
    ip: &Ipv6Header,
    id_be: u32,
    tuple: &FlowTuple6,
    client_id: u32,
    binding_created_ns: u64,
    now: u64,
) {
    let Some(scratch) = scratch() else { return };
    scratch.key = FragmentKey6::new(ip.src, ip.dst, id_be, tuple.protocol);
    scratch.flow =
        FragmentFlow6 { tuple: *tuple, client_id, _pad0: 0, binding_created_ns, first_seen_ns: now };
    let _ = FRAGMENTS6.insert(&scratch.key, &scratch.flow, 0);
}

/// Forgets what was remembered under a first fragment's key.
#[inline(always)]
fn forget(ip: &Ipv6Header, id_be: u32, protocol: u8) {
    let Some(scratch) = scratch() else { return };
    scratch.key = FragmentKey6::new(ip.src, ip.dst, id_be, protocol);
    let _ = FRAGMENTS6.remove(&scratch.key);
}

/// The flow remembered for a later fragment's datagram, in its map slot;
/// None when its first fragment has not passed here, or passed longer ago
/// than the fragment timeout. Not copied out (a 64-byte copy between map
/// values is a `memmove` call, a call frame to the verifier, and the stack
/// has no room): a concurrent update of the slot may mix two flows'
/// fields, and `live_binding` then finds no binding whose client is the
/// one read.
#[inline(always)]
fn later_flow(ip: &Ipv6Header, id_be: u32, protocol: u8, now: u64) -> Option<&'static FragmentFlow6> {
    let scratch = scratch()?;
    scratch.key = FragmentKey6::new(ip.src, ip.dst, id_be, protocol);
    // SAFETY: a map value, valid for the program's run (see above).
    let flow = unsafe { FRAGMENTS6.get(&scratch.key)? };
    // An LRU slot may be recycled for another key meanwhile: the flow must
    // be between this fragment's own addresses (its original tuple's for
    // a client's, its reply tuple's for a remote's).
    if !same_addresses(&flow.tuple, &scratch.key) {
        return None;
    }
    if now.saturating_sub(flow.first_seen_ns) > FRAGMENT_TIMEOUT_NS {
        let _ = FRAGMENTS6.remove(&scratch.key);
        return None;
    }
    Some(flow)
}

/// Whether `tuple` is between `key`'s addresses, compared 8 bytes at a
/// time in place: both are in map values, 8-byte aligned (`FlowTuple6`
/// and the scratch entry are), and copies of four addresses would not
/// fit the stack.
#[inline(always)]
fn same_addresses(tuple: &FlowTuple6, key: &FragmentKey6) -> bool {
    let words = |address: &[u8; 16]| {
        let at = address.as_ptr() as *const u64;
        // SAFETY: 16 bytes, 8-byte aligned (see above).
        unsafe { (core::ptr::read_volatile(at), core::ptr::read_volatile(at.add(1))) }
    };
    words(&tuple.src_ip) == words(&key.src_ip) && words(&tuple.dst_ip) == words(&key.dst_ip)
}

/// The live binding of `flow`, in `half`; None when the flow has ended
/// since its first fragment (its port may now be another client's).
#[inline(always)]
fn live_binding(cfg: &GatewayConfig, flow: &FragmentFlow6, half: Half, now: u64) -> Option<NatEntry6> {
    let (_, entry) = conntrack::ct_lookup::<NatEntry6>(cfg, half, &flow.tuple, now)?;
    let same_binding = entry.client_id == flow.client_id
        && (flow.binding_created_ns == 0 || entry.created_ns == flow.binding_created_ns);
    same_binding.then_some(entry)
}
