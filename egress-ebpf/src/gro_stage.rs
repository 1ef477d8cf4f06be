//! The GRO stage's receiving end (`egress_common::gro`). Everything that
//! arrives here was translated by `egress_gateway` (or `egress_gateway6`)
//! and re-aggregated by the veth's GRO; it only has to leave through the
//! attached interface.
use aya_ebpf::programs::TcContext;
use egress_common::counters::Counter;

use crate::{
    headers::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPV6_SRC_OFF},
    maps,
    verdict::Verdict,
};

#[inline(always)]
pub fn forward(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    // The pod's stack has no address on the pair and sends no IPv4 into
    // it; IPv6 it might (MLD from the unspecified address), so an IPv6
    // packet must be one we translated: from the gateway's IPv6 address.
    match ctx.load::<[u8; 2]>(12).map(u16::from_be_bytes) {
        Ok(ETH_P_IP) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::GroStageOut },
        Ok(ETH_P_IPV6) => match ctx.load::<[u8; 16]>(ETH_HLEN + IPV6_SRC_OFF) {
            Ok(src) if cfg.has_ipv6() && src == cfg.gateway_ip6 => {
                Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::GroStageOut }
            }
            _ => Verdict::Drop(Counter::DropUnsupportedProtocol),
        },
        _ => Verdict::Drop(Counter::DropUnsupportedProtocol),
    }
}
