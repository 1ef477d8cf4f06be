//! The GRO stage: re-aggregating uploads before they leave the gateway.
//!
//! A cross-node upload reaches the gateway pod as MTU-sized tunnel packets
//! (the gateway node's bridge segments the tunnel's GSO packets), and every
//! one of them would cross the node, its NAT and the receiver on its own.
//! So a TCP flow that sends full-sized segments is translated and then sent
//! through a veth pair inside the gateway pod whose receiving end runs GRO;
//! a second classifier on that end sends the re-aggregated packets out of
//! eth0. No device outside the pod is touched.
//!
//! The choice is made per flow and changes at most twice, from `Undecided`
//! to `GroStage` and from either to `Direct`: packets of one flow taking two
//! ways could overtake each other, and only leaving the stage can do that.

/// Inner packets at least this long (a full segment at any usual MTU)
/// move a flow into the GRO stage. Small packets gain nothing from GRO and
/// would only pay the extra hop (request/response traffic stays direct).
pub const GRO_STAGE_MIN_PACKET: u16 = 1_024;

/// [`crate::conntrack::NatEntry::upload_route`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadRoute {
    /// Straight out of eth0, until the flow sends a full-sized segment.
    Undecided = 0,
    /// Through the GRO stage.
    GroStage = 1,
    /// Straight out for good: the flow's packets arrive as GSO packets
    /// already (same node, no bridge segmenting them), or the stage is off.
    Direct = 2,
}

impl UploadRoute {
    #[inline(always)]
    pub fn from_u8(v: u8) -> UploadRoute {
        match v {
            1 => UploadRoute::GroStage,
            2 => UploadRoute::Direct,
            _ => UploadRoute::Undecided,
        }
    }

    /// The flow's route after a client packet of `ip_total_len` bytes
    /// (`is_gso`: a GSO packet), and whether this packet takes the stage.
    #[inline(always)]
    pub fn next(self, is_gso: bool, ip_total_len: u16) -> (UploadRoute, bool) {
        match self {
            // A GSO packet cannot enter the stage: its sending end has no
            // TSO (or veth would skip GRO) and would segment it in software.
            _ if is_gso => (UploadRoute::Direct, false),
            UploadRoute::Undecided if ip_total_len >= GRO_STAGE_MIN_PACKET => (UploadRoute::GroStage, true),
            UploadRoute::Undecided => (UploadRoute::Undecided, false),
            UploadRoute::GroStage => (UploadRoute::GroStage, true),
            UploadRoute::Direct => (UploadRoute::Direct, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{UploadRoute::*, *};

    #[test]
    fn a_flow_enters_the_stage_with_its_first_full_segment_and_stays() {
        assert_eq!(Undecided.next(false, 60), (Undecided, false));
        assert_eq!(Undecided.next(false, GRO_STAGE_MIN_PACKET - 1), (Undecided, false));
        assert_eq!(Undecided.next(false, 1500), (GroStage, true));
        // Once in, small packets follow the big ones (no overtaking).
        assert_eq!(GroStage.next(false, 52), (GroStage, true));
    }

    #[test]
    fn gso_packets_go_direct_for_good() {
        assert_eq!(Undecided.next(true, 1500), (Direct, false));
        assert_eq!(GroStage.next(true, 1500), (Direct, false));
        assert_eq!(Direct.next(false, 1500), (Direct, false));
        for v in 0..=3u8 {
            assert!(matches!(UploadRoute::from_u8(v), Undecided | GroStage | Direct));
        }
    }
}
