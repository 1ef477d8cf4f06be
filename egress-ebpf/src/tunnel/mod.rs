//! The VXLAN tunnel between worker pods and the gateway: `decap` validates
//! and strips what workers send, `encap` wraps replies back to them, and
//! `split` sends a reply too big for the tunnel as two fragments. `outer`
//! tells the two outer families of a client's IPv6 apart.
pub mod decap;
pub mod encap;
pub mod outer;
pub mod split;
