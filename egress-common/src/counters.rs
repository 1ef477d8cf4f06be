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
                (self as u32) >= DROP_BASE
            }
        }
    };
}

const DROP_BASE: u32 = 16;

counters! {
    /// A client packet decapsulated, translated and sent out.
    ForwardedToRemote = 0 => "forwarded_to_remote",
    /// A reply translated, encapsulated and sent to its client.
    ForwardedToClient = 1 => "forwarded_to_client",
    /// A new NAT binding created.
    FlowCreated = 2 => "flow_created",
    /// A binding half re-created after the LRU evicted it.
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
    /// IP fragment (no ports to translate).
    DropFragment = 21 => "drop_fragment",
    /// IPv4 options present (not translated).
    DropIpOptions = 22 => "drop_ip_options",
    /// Inner frame is not IPv4 TCP/UDP/ICMP echo.
    DropUnsupportedProtocol = 23 => "drop_unsupported_protocol",
    /// No free NAT port for this destination after bounded retries.
    DropNatPortsExhausted = 24 => "drop_nat_ports_exhausted",
    /// Packet to a NAT port without a live binding (unsolicited inbound).
    DropNoMapping = 25 => "drop_no_mapping",
    /// Conntrack insert failed (table full of entries the LRU would not evict).
    DropConntrackInsert = 26 => "drop_conntrack_insert",
    /// A kernel helper failed while rewriting (adjust_room, store, csum).
    DropRewriteFailed = 27 => "drop_rewrite_failed",
    /// The redirect back out of the interface failed.
    DropRedirectFailed = 28 => "drop_redirect_failed",
    /// The program has no configuration yet.
    DropNotConfigured = 29 => "drop_not_configured",
    /// TTL would reach zero when forwarded.
    DropTtlExceeded = 30 => "drop_ttl_exceeded",
    /// A reply that would exceed the interface MTU once encapsulated (not a
    /// GSO packet, which is segmented to fit).
    DropTooBigForTunnel = 31 => "drop_too_big_for_tunnel",
}

/// Size of the counters array: room for growth without a layout change.
pub const COUNTER_SLOTS: u32 = 64;
