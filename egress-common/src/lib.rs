//! Plain data shared by the TC program (`egress-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of padding surprises so
//! the same bytes mean the same thing on both sides of a BPF map. Byte order
//! is part of each field's name: `_be` fields hold network byte order exactly
//! as they appear on the wire, everything else is host order.
#![no_std]

pub mod allowance;
pub mod checksum;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod fragments;
pub mod gro;
pub mod ip;
pub mod maps;
pub mod ports;

#[cfg(feature = "user")]
mod pod_impls;
