//! The VXLAN tunnel between worker pods and the gateway: `decap` validates
//! and strips what workers send, `encap` wraps replies back to them, and
//! `split` sends a reply too big for the tunnel as two fragments.
pub mod decap;
pub mod encap;
pub mod split;
