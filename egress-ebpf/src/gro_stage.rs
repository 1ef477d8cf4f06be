//! The GRO stage's receiving end (`egress_common::gro`). Everything that
//! arrives here was translated by `egress_gateway` and re-aggregated by the
//! veth's GRO; it only has to leave through the attached interface.
use aya_ebpf::programs::TcContext;
use egress_common::counters::Counter;

use crate::{headers::ETH_P_IP, maps, verdict::Verdict};

#[inline(always)]
pub fn forward(ctx: &TcContext) -> Verdict {
    let Some(cfg) = maps::config() else {
        return Verdict::Drop(Counter::DropNotConfigured);
    };
    // The pod's stack has no address on the pair and sends nothing into
    // it; anything that is not IPv4 did not come from us.
    match ctx.load::<[u8; 2]>(12) {
        Ok(b) if u16::from_be_bytes(b) == ETH_P_IP => {
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::GroStageOut }
        }
        _ => Verdict::Drop(Counter::DropUnsupportedProtocol),
    }
}
