//! The VXLAN tunnel between worker pods and the gateway: `decap` validates
//! and strips what workers send, `encap` wraps replies back to them.
pub mod decap;
pub mod encap;
