//! aya's `Pod` marker for the map types, userspace only.
use crate::{
    config::GatewayConfig,
    conntrack::{FlowTuple, FlowTuple6, NatEntry, NatEntry6},
    fragments::{FragmentFlow, FragmentKey},
    maps::{ClientInfo, ClientRefusals, ClientTraffic, NatDestination, NatDestination6},
};

// SAFETY: all are #[repr(C)], Copy, contain only integers and byte arrays,
// and every bit pattern is valid for them.
unsafe impl aya::Pod for GatewayConfig {}
unsafe impl aya::Pod for FlowTuple {}
unsafe impl aya::Pod for NatEntry {}
unsafe impl aya::Pod for FlowTuple6 {}
unsafe impl aya::Pod for NatEntry6 {}
unsafe impl aya::Pod for NatDestination6 {}
unsafe impl aya::Pod for ClientInfo {}
unsafe impl aya::Pod for ClientTraffic {}
unsafe impl aya::Pod for NatDestination {}
unsafe impl aya::Pod for ClientRefusals {}
unsafe impl aya::Pod for FragmentKey {}
unsafe impl aya::Pod for FragmentFlow {}
