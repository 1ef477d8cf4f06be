//! Datapath counters: every verdict the program reaches is one of these, so
//! every dropped packet has a reason an operator can read.

macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, )*) => {
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $( $(#[$doc])* $variant = $value, )*
        }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// The name `status` and the metrics use.
            pub const fn name(self) -> &'static str {
                match self { $( Counter::$variant => $name, )* }
            }

            /// Whether this counter counts dropped packets.
            pub const fn is_drop(self) -> bool {
                let slot = self as u32;
                slot >= DROP_BASE && slot < MORE_EVENTS_BASE
            }
        }
    };
}

/// Slots 0..16 count what happened to packets that went on, 16..48 why
/// packets were dropped, 48..64 more of the former (the first range ran
/// out; slots keep their numbers, which adopted maps already hold).
const DROP_BASE: u32 = 16;
const MORE_EVENTS_BASE: u32 = 48;

counters! {
    /// A client packet decapsulated, translated and sent out.
    ForwardedToRemote = 0 => "forwarded_to_remote",
    /// A reply translated, encapsulated and sent to its client (a reply sent
    /// in two fragments counts twice: two packets went).
    ForwardedToClient = 1 => "forwarded_to_client",
    /// A new NAT binding created.
    FlowCreated = 2 => "flow_created",
    /// A binding half re-created from the other (the sweep removes them one
    /// after the other).
    FlowHalfRestored = 3 => "flow_half_restored",
    /// Expired binding found by the datapath and replaced.
    FlowExpiredInDatapath = 4 => "flow_expired_in_datapath",
    /// Not for us (not the tunnel, not a NAT port): left to the pod's stack.
    PassedToStack = 5 => "passed_to_stack",
    /// A binding whose other half had been taken by a newer one: the flow
    /// got a new NAT port (never two flows on one).
    FlowRebound = 6 => "flow_rebound",
    /// A translated client packet sent into the GRO stage (`egress_common::gro`).
    GroStageIn = 7 => "gro_stage_in",
    /// A packet out of the GRO stage, sent out of eth0: with `gro_stage_in`
    /// it shows how many segments GRO merged into one.
    GroStageOut = 8 => "gro_stage_out",
    /// An ICMP error about a client's flow (unreachable, fragmentation
    /// needed, time exceeded) translated and sent to the client; also
    /// counted in `forwarded_to_client`.
    IcmpErrorToClient = 9 => "icmp_error_to_client",
    /// A binding that had never seen a reply, had ended (a closed TCP flow)
    /// or had expired, removed to make room for a new flow: in a full
    /// table, or among the client's own at its share.
    FlowEarlyDropped = 10 => "flow_early_dropped",
    /// A reply sent through the resegmentation pair: a GRO aggregate too
    /// big to be encapsulated as one packet, to be cut into segments (each
    /// then translated on its own), or a single packet too big for the
    /// tunnel, to have its checksum computed before it is answered (DF) or
    /// split in two.
    ReplyResegmented = 11 => "reply_resegmented",
    /// A client's packet expired at the gateway and was not answered with
    /// time exceeded: the client's answer rate (6 at once, then 1 a
    /// second, as Linux's icmp_ratelimit) was used up.
    IcmpAnswerRateLimited = 12 => "icmp_answer_rate_limited",
    /// A client's ICMP error (port unreachable: its socket closed) about a
    /// reply of its flow, translated and sent to the remote; also counted
    /// in `forwarded_to_remote`.
    IcmpErrorToRemote = 13 => "icmp_error_to_remote",
    /// A reply too big for the tunnel with DF set, answered to the remote
    /// with ICMP fragmentation needed (the tunnel's MTU) from the gateway's
    /// address; the reply itself is counted in `drop_too_big_for_tunnel`.
    IcmpFragNeededToRemote = 14 => "icmp_frag_needed_to_remote",
    /// A reply too big for the tunnel with DF clear, sent to its client as
    /// two IPv4 fragments that fit.
    ReplyFragmented = 15 => "reply_fragmented",

    /// Tunnel packet whose outer source is not an allowed client.
    DropUnknownClient = 16 => "drop_unknown_client",
    /// Tunnel packet with another VNI or without the VNI flag.
    DropBadVni = 17 => "drop_bad_vni",
    /// Destination in an excluded CIDR.
    DropExcludedDestination = 18 => "drop_excluded_destination",
    /// Inner source address is not the client's own address.
    DropSpoofedInnerSource = 19 => "drop_spoofed_inner_source",
    /// Header truncated or inconsistent.
    DropMalformed = 20 => "drop_malformed",
    /// A tunnel packet whose outer header is fragmented (workers never
    /// send one: their tunnel MTU fits eth0's), not reassembled.
    DropFragment = 21 => "drop_fragment",
    /// IPv4 options present (not translated).
    DropIpOptions = 22 => "drop_ip_options",
    /// Inner frame is not IPv4 TCP/UDP/ICMP echo.
    DropUnsupportedProtocol = 23 => "drop_unsupported_protocol",
    /// No free NAT port for this destination after bounded retries.
    DropNatPortsExhausted = 24 => "drop_nat_ports_exhausted",
    /// Packet to a NAT port without a live binding (unsolicited inbound).
    DropNoMapping = 25 => "drop_no_mapping",
    /// A new flow found the conntrack table full of live flows that have
    /// seen replies (none unreplied, ended or expired among those sampled
    /// to make room).
    DropConntrackFull = 26 => "drop_conntrack_full",
    /// A kernel helper failed while rewriting (adjust_room, store, csum).
    DropRewriteFailed = 27 => "drop_rewrite_failed",
    /// The redirect back out of the interface failed.
    DropRedirectFailed = 28 => "drop_redirect_failed",
    /// The program has no configuration yet (or an empty IPv6 program
    /// slot to hand a packet on to).
    DropNotConfigured = 29 => "drop_not_configured",
    /// TTL (IPv6: hop limit) would reach zero when forwarded (a client's
    /// packet is answered with time exceeded unless it is an ICMP error
    /// itself, (IPv4) too big to quote whole, or the client's answer rate
    /// is used up).
    DropTtlExceeded = 30 => "drop_ttl_exceeded",
    /// A reply that would exceed the interface MTU once encapsulated (not a
    /// GSO packet, which is segmented to fit); answered to the remote with
    /// fragmentation needed (IPv4, DF set) or Packet Too Big (IPv6).
    DropTooBigForTunnel = 31 => "drop_too_big_for_tunnel",
    /// A client's TCP RST for a flow the gateway does not know: it cannot
    /// open a connection, so it makes no binding (and holds no NAT port).
    DropRstWithoutFlow = 32 => "drop_rst_without_flow",
    /// A client's packet to an address never to be NATed (0/8, 127/8,
    /// 224/4, 240/4, the gateway's own), whatever --exclude-cidr says.
    DropMartianDestination = 33 => "drop_martian_destination",
    /// A client's new flow while it held its share of the table
    /// (`--max-flows-per-client`), none of its own sampled flows able to
    /// make room.
    DropClientFlowLimit = 34 => "drop_client_flow_limit",
    /// A client's tunnel packet that the network marked congested (CE on
    /// the outer header) while its inner packet is not ECN-capable: it
    /// cannot pass the mark on, so it drops the packet (RFC 6040).
    DropCeOnNotEct = 35 => "drop_ce_on_not_ect",
    /// A client's IP fragment without ports whose first fragment the
    /// gateway has not translated (lost, reordered behind it, or older than
    /// the fragment timeout): nothing says which flow it belongs to.
    DropFragmentUnmatched = 36 => "drop_fragment_unmatched",
    /// A first fragment (either way) of a client that has used up its
    /// allowance of entries in the shared fragment map (1,024 at once, then
    /// 16,384 a second): one pod cannot push everyone's datagrams out.
    DropFragmentOverBudget = 37 => "drop_fragment_over_budget",
    /// A client's IPv6 packet with an extension header (hop-by-hop,
    /// routing, fragment, destination options) before its transport
    /// header: not translated.
    DropIpv6ExtHeader = 38 => "drop_ipv6_ext_header",
    /// A client's ICMPv6 error of a type RFC 4443 does not define, or a
    /// Packet Too Big (a pod never needs to send one about its replies,
    /// and it would lower the path MTU every tenant shares): dropped here,
    /// never sent with another address.
    DropIpv6NotTranslated = 39 => "drop_ipv6_not_translated",
    /// A client's IPv6 packet while the gateway pod has no global IPv6
    /// address to translate it to (an IPv4-only gateway).
    DropIpv6Disabled = 40 => "drop_ipv6_disabled",

    /// An IP fragment without ports (not the first of its datagram)
    /// translated like the first, which the fragment map remembered.
    FragmentTranslated = 48 => "fragment_translated",
    /// A client's echo request to the tunnel's gateway address
    /// (169.254.42.1) answered by the program through the client's tunnel:
    /// the worker's proof that its path to this gateway works.
    ProbeAnswered = 49 => "probe_answered",
    /// An IPv6 reply too big for the tunnel, answered to the remote with
    /// ICMPv6 Packet Too Big (the tunnel's MTU) from the gateway's IPv6
    /// address; the reply itself is counted in `drop_too_big_for_tunnel`.
    IcmpTooBigToRemote = 50 => "icmp_too_big_to_remote",
}

/// Size of the counters array: room for growth without a layout change.
pub const COUNTER_SLOTS: u32 = 64;
