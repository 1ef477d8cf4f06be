//! Packet-scenario harness: the real program, loaded the way the agent
//! loads it, run on crafted packets with BPF_PROG_TEST_RUN. Packets are
//! built with etherparse; results are checked with our own full checksum
//! code, independent of the kernel's incremental helpers.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::{datapath::loader::Datapath, netdev::Cidrs};
use egress_common::{
    checksum::{internet_checksum, l4_checksum_ok, l4_checksum_ok_v6},
    config::*,
    conntrack::{NatEntry, NatEntry6},
    fragments::{FragmentFlow, FragmentKey},
};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep};

pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
pub const OTHER_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 6);
/// A second listed client.
pub const SECOND_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 7);
pub const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// The gateway pod's IPv6, and the listed client's (a dual-stack pod).
pub const GATEWAY_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0x2, 0, 0, 0, 1);
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0x1, 0, 0, 0, 5);
/// The second client's IPv6.
pub const SECOND_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0x1, 0, 0, 0, 7);
pub const REMOTE_IP6: Ipv6Addr = Ipv6Addr::new(0x2606, 0x4700, 0, 0, 0, 0, 0, 0x1111);
pub const EXCLUDED_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(192, 0, 2, 0), 24);
/// An IPv6 range the harness excludes, as `--exclude-cidr` does.
pub const EXCLUDED_CIDR6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0), 108);
pub const VNI: u32 = 42;
pub const VXLAN_PORT: u16 = 4789;
pub const NODE_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 0xfe];
pub const GATEWAY_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 0x05];

pub const TC_ACT_UNSPEC: u32 = u32::MAX; // -1
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub fn config(nat_ports: (u16, u16)) -> GatewayConfig {
    GatewayConfig {
        layout_version: CONFIG_LAYOUT_VERSION,
        gateway_ip_be: u32::from(GATEWAY_IP).to_be(),
        netns_inode: 0,
        ifindex: 1,
        vni: VNI,
        vxlan_port_be: VXLAN_PORT.to_be(),
        nat_port_min: nat_ports.0,
        nat_port_max: nat_ports.1,
        draining: 0,
        port_retries: DEFAULT_PORT_RETRIES,
        tcp_syn_timeout_s: DEFAULT_TCP_SYN_TIMEOUT_S,
        tcp_established_timeout_s: DEFAULT_TCP_ESTABLISHED_TIMEOUT_S,
        tcp_closing_timeout_s: DEFAULT_TCP_CLOSING_TIMEOUT_S,
        udp_timeout_s: DEFAULT_UDP_TIMEOUT_S,
        icmp_timeout_s: DEFAULT_ICMP_TIMEOUT_S,
        mtu: 1500,
        gro_ifindex: 0,
        tcp_time_wait_timeout_s: DEFAULT_TCP_TIME_WAIT_TIMEOUT_S,
        // The harness's table holds 4096 flows: no share unless a test sets one.
        max_flows_per_client: 4096,
        resegment_ifindex: 0,
        gateway_ip6: GATEWAY_IP6.octets(),
    }
}

pub struct Harness {
    pub datapath: Datapath,
}

pub struct Outcome {
    pub action: u32,
    pub packet: Vec<u8>,
}

impl Harness {
    /// A fresh program (fresh maps) with CLIENT_IP allowed and
    /// EXCLUDED_CIDR excluded. Fails loudly when not root.
    pub fn new(nat_ports: (u16, u16)) -> Harness {
        Harness::with_table(nat_ports, 4096)
    }

    /// [`Harness::new`] with room for `flows` bindings (and the per-client
    /// share as large).
    pub fn with_table(nat_ports: (u16, u16), flows: u32) -> Harness {
        let cfg = GatewayConfig { max_flows_per_client: flows, ..config(nat_ports) };
        Harness::with_config(&cfg, flows)
    }

    /// A fresh program configured with `cfg`, its table holding `flows`.
    pub fn with_config(cfg: &GatewayConfig, flows: u32) -> Harness {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "packet-scenario tests load eBPF programs: run them as root (cargo xtask test)"
        );
        pin_to_one_cpu();
        let excluded = Cidrs { v4: vec![EXCLUDED_CIDR], v6: vec![EXCLUDED_CIDR6] };
        let mut datapath =
            Datapath::load(cfg, flows, &excluded, None, &mut Default::default()).expect("load program");
        datapath.maps.add_client(CLIENT_IP, 1).unwrap();
        datapath.maps.add_client(SECOND_CLIENT_IP, 2).unwrap();
        datapath.maps.add_client6(CLIENT_IP6, 1).unwrap();
        datapath.maps.add_client6(SECOND_CLIENT_IP6, 2).unwrap();
        Harness { datapath }
    }

    pub fn default() -> Harness {
        Harness::new((20_000, 20_099))
    }

    pub fn run(&mut self, packet: &[u8]) -> Outcome {
        self.try_run(packet).expect("BPF_PROG_TEST_RUN")
    }

    /// [`Harness::run`], with the kernel's refusal as an error.
    pub fn try_run(&mut self, packet: &[u8]) -> Result<Outcome, aya::programs::ProgramError> {
        let mut out = vec![0u8; packet.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(packet);
        opts.data_out = Some(&mut out);
        let result = self.datapath.program().unwrap().test_run(opts)?;
        out.truncate(result.data_size_out as usize);
        Ok(Outcome { action: result.return_value, packet: out })
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.datapath.maps.counter_totals().unwrap().into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// The destinations that ran out of NAT ports and the flows each cost,
    /// as the agent's warning and metric name them.
    pub fn exhausted(&self) -> Vec<(String, u64)> {
        use egress_agent::observe::exhaustion;
        let totals = exhaustion::totals(&self.datapath.maps).unwrap();
        totals.iter().map(|(destination, dropped)| (exhaustion::describe(destination), *dropped)).collect()
    }

    pub fn flows(&self) -> Vec<NatEntry> {
        egress_agent::datapath::conntrack::flows(&self.datapath.maps).unwrap()
    }

    /// The IPv6 bindings (their original halves).
    pub fn flows6(&self) -> Vec<NatEntry6> {
        egress_agent::datapath::conntrack::flows(&self.datapath.maps).unwrap()
    }

    pub fn reply_entries6(&self) -> usize {
        self.datapath.maps.ct6_reply.keys().count()
    }

    pub fn reply_entries(&self) -> usize {
        self.datapath.maps.ct_reply.keys().count()
    }

    /// Makes every binding (both halves) look last seen `secs` ago. The
    /// clock counts from boot: in a VM that booted moments ago, first waits
    /// until `secs` have passed since boot.
    pub fn age_all(&mut self, secs: u64) {
        let then = boot_clock_ago(secs);
        for map in [&mut self.datapath.maps.ct_original, &mut self.datapath.maps.ct_reply] {
            let entries: Vec<_> = map.iter().filter_map(|r| r.ok()).collect();
            for (key, mut entry) in entries {
                entry.last_seen_ns = then;
                map.insert(key, entry, 0).unwrap();
            }
        }
        for map in [&mut self.datapath.maps.ct6_original, &mut self.datapath.maps.ct6_reply] {
            let entries: Vec<_> = map.iter().filter_map(|r| r.ok()).collect();
            for (key, mut entry) in entries {
                entry.last_seen_ns = then;
                map.insert(key, entry, 0).unwrap();
            }
        }
    }

    /// One of the program's maps by name, for the ones the agent's
    /// `DatapathMaps` does not hold (FRAGMENTS).
    pub fn program_map(&mut self, name: &str) -> aya::maps::Map {
        let program = self.datapath.program().unwrap().info().unwrap();
        for id in program.map_ids().unwrap().expect("the kernel lists a program's maps") {
            let map = aya::maps::MapData::from_id(id).unwrap();
            if map.info().unwrap().name_as_str() == Some(name) {
                return aya::maps::Map::from_map_data(map).unwrap();
            }
        }
        panic!("the program has no map {name}");
    }

    /// The datagrams whose first fragment passed, and the flow each was
    /// translated with.
    pub fn fragments(&mut self) -> aya::maps::HashMap<aya::maps::MapData, FragmentKey, FragmentFlow> {
        self.program_map(egress_common::maps::FRAGMENTS).try_into().unwrap()
    }

    /// Makes every remembered first fragment look passed `secs` ago (see
    /// [`Harness::age_all`] about the clock).
    pub fn age_fragments(&mut self, secs: u64) {
        let then = boot_clock_ago(secs);
        let mut fragments = self.fragments();
        let datagrams: Vec<_> = fragments.iter().filter_map(|r| r.ok()).collect();
        for (key, mut flow) in datagrams {
            flow.first_seen_ns = then;
            fragments.insert(key, flow, 0).unwrap();
        }
    }
}

/// The datapath's clock (`bpf_ktime_get_ns`: monotonic, from boot) `secs`
/// ago. In a VM that booted moments ago, first waits until `secs` have
/// passed since boot.
fn boot_clock_ago(secs: u64) -> u64 {
    wait_for_uptime(secs);
    egress_agent::netdev::monotonic_ns() - secs * 1_000_000_000
}

/// Sleeps until the machine has been up longer than `secs`, so that a
/// time `secs` ago exists on the boot clock. Only a freshly booted machine
/// (the qemu kernel step) waits; a test whose state must stay fresh while
/// it ages flows calls this first, before that state is made.
pub fn wait_for_uptime(secs: u64) {
    let wanted = std::time::Duration::from_secs(secs);
    let uptime = std::time::Duration::from_nanos(egress_agent::netdev::monotonic_ns());
    if uptime <= wanted {
        std::thread::sleep(wanted - uptime + std::time::Duration::from_millis(100));
    }
}

/// Runs this test thread (and so BPF_PROG_TEST_RUN, which runs the
/// program on the calling CPU) on CPU 0 only: per-CPU state, like each
/// CPU's ring of recent bindings, then behaves as it does for the packets
/// of one flow, which one CPU handles.
fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Inner L4 of a test flow.
#[derive(Clone, Copy)]
pub enum L4 {
    Tcp { src: u16, dst: u16, syn: bool, ack: bool, fin: bool, rst: bool },
    Udp { src: u16, dst: u16 },
    EchoRequest { id: u16 },
    EchoReply { id: u16 },
}

pub fn tcp_syn(src: u16, dst: u16) -> L4 {
    L4::Tcp { src, dst, syn: true, ack: false, fin: false, rst: false }
}

pub fn tcp_ack(src: u16, dst: u16) -> L4 {
    L4::Tcp { src, dst, syn: false, ack: true, fin: false, rst: false }
}

pub fn tcp_fin(src: u16, dst: u16) -> L4 {
    L4::Tcp { src, dst, syn: false, ack: true, fin: true, rst: false }
}

/// An Ethernet + IPv4 + L4 frame.
pub fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    l4: L4,
    payload: &[u8],
) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(src.octets(), dst.octets(), ttl);
    write_l4(ip, false, l4, payload)
}

/// An Ethernet + IPv6 + L4 frame (echo is ICMPv6's).
pub fn frame6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    l4: L4,
    payload: &[u8],
) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(src_mac, dst_mac).ipv6(src.octets(), dst.octets(), hop_limit);
    write_l4(ip, true, l4, payload)
}

fn write_l4(ip: PacketBuilderStep<IpHeaders>, ipv6: bool, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match l4 {
        L4::Tcp { src, dst, syn, ack, fin, rst } => {
            let mut b = ip.tcp(src, dst, 1000, 64_000);
            if syn {
                b = b.syn();
            }
            if ack {
                b = b.ack(5000);
            }
            if fin {
                b = b.fin();
            }
            if rst {
                b = b.rst();
            }
            b.write(&mut out, payload).unwrap();
        }
        L4::Udp { src, dst } => ip.udp(src, dst).write(&mut out, payload).unwrap(),
        L4::EchoRequest { id } if ipv6 => ip.icmpv6_echo_request(id, 1).write(&mut out, payload).unwrap(),
        L4::EchoReply { id } if ipv6 => ip.icmpv6_echo_reply(id, 1).write(&mut out, payload).unwrap(),
        L4::EchoRequest { id } => ip.icmpv4_echo_request(id, 1).write(&mut out, payload).unwrap(),
        L4::EchoReply { id } => ip.icmpv4_echo_reply(id, 1).write(&mut out, payload).unwrap(),
    }
    out
}

/// `inner_frame` in VXLAN from `outer_src`:4789 to the gateway, as a worker
/// sends it (outer UDP checksum zero).
pub fn tunnel(outer_src: Ipv4Addr, vni: u32, inner_frame: &[u8]) -> Vec<u8> {
    let mut vxlan_and_frame = vec![0x08, 0, 0, 0];
    vxlan_and_frame.extend_from_slice(&(vni << 8).to_be_bytes());
    vxlan_and_frame.extend_from_slice(inner_frame);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(NODE_MAC, GATEWAY_MAC)
        .ipv4(outer_src.octets(), GATEWAY_IP.octets(), 63)
        .udp(VXLAN_PORT, VXLAN_PORT)
        .write(&mut out, &vxlan_and_frame)
        .unwrap();
    out[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    out
}

/// A client packet as the worker sends it.
pub fn from_client(l4: L4, payload: &[u8]) -> Vec<u8> {
    from_client_at(CLIENT_IP, l4, payload)
}

/// A packet from the listed client `client`.
pub fn from_client_at(client: Ipv4Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let inner = frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, client, REMOTE_IP, 64, l4, payload);
    tunnel(client, VNI, &inner)
}

/// An IPv6 packet of the listed client's, to the remote, as its worker
/// tunnels it.
pub fn from_client6(l4: L4, payload: &[u8]) -> Vec<u8> {
    from_client6_at(CLIENT_IP, CLIENT_IP6, l4, payload)
}

/// An IPv6 packet sent as `source` through the tunnel of the listed
/// client `client` (whether `source` is that client's is the test).
pub fn from_client6_at(client: Ipv4Addr, source: Ipv6Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let inner = frame6(CLIENT_MAC, TUNNEL_GATEWAY_MAC, source, REMOTE_IP6, 64, l4, payload);
    tunnel(client, VNI, &inner)
}

/// An IPv6 packet from the remote to the gateway's IPv6 address.
pub fn from_remote6(l4: L4, payload: &[u8]) -> Vec<u8> {
    frame6(NODE_MAC, GATEWAY_MAC, REMOTE_IP6, GATEWAY_IP6, 50, l4, payload)
}

/// A packet from the remote to the gateway.
pub fn from_remote(l4: L4, payload: &[u8]) -> Vec<u8> {
    frame(NODE_MAC, GATEWAY_MAC, REMOTE_IP, GATEWAY_IP, 50, l4, payload)
}

/// Fields of an IPv4 packet at `off`, with its checksums verified by our
/// own code.
pub struct Ipv4View {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    pub l4: Vec<u8>,
}

pub fn ipv4_at(packet: &[u8], off: usize) -> Ipv4View {
    let Ipv4Fields { src, dst, ttl, protocol, payload: l4, .. } = ipv4_fields_at(packet, off);
    match protocol {
        6 => assert!(l4_checksum_ok(src.octets(), dst.octets(), 6, &l4), "TCP checksum verifies"),
        17 if l4[6..8] != [0, 0] => {
            assert!(l4_checksum_ok(src.octets(), dst.octets(), 17, &l4), "UDP checksum verifies")
        }
        1 => assert_eq!(internet_checksum(&l4), 0, "ICMP checksum verifies"),
        _ => {}
    }
    View(src, dst, ttl, protocol, l4).into()
}

/// Header fields of an IPv4 packet at `off` (host order), with its length
/// and header checksum verified as [`ipv4_at`] verifies them; the payload
/// is not: a fragment's is part of a datagram whose L4 checksum only the
/// whole datagram can verify.
pub struct Ipv4Fields {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub id: u16,
    /// Flags (DF, MF) and fragment offset in 8-byte units.
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub payload: Vec<u8>,
}

pub fn ipv4_fields_at(packet: &[u8], off: usize) -> Ipv4Fields {
    let ip = &packet[off..];
    assert_eq!(ip[0], 0x45, "IPv4 without options");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(total, ip.len(), "IP total length matches the packet");
    assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum verifies");
    Ipv4Fields {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        tos: ip[1],
        id: u16::from_be_bytes([ip[4], ip[5]]),
        frag_off: u16::from_be_bytes([ip[6], ip[7]]),
        ttl: ip[8],
        protocol: ip[9],
        payload: ip[20..total].to_vec(),
    }
}

struct View(Ipv4Addr, Ipv4Addr, u8, u8, Vec<u8>);
impl From<View> for Ipv4View {
    fn from(v: View) -> Self {
        Ipv4View { src: v.0, dst: v.1, ttl: v.2, protocol: v.3, l4: v.4 }
    }
}

/// Fields of an IPv6 packet at `off` (no extension headers), with its
/// payload length and L4 checksum verified by our own code.
pub struct Ipv6View {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub traffic_class: u8,
    pub hop_limit: u8,
    pub next_header: u8,
    pub l4: Vec<u8>,
}

pub fn ipv6_at(packet: &[u8], off: usize) -> Ipv6View {
    let ip = &packet[off..];
    assert_eq!(ip[0] >> 4, 6, "IPv6");
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    assert_eq!(40 + payload_len, ip.len(), "IPv6 payload length matches the packet");
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
    let (next_header, l4) = (ip[6], ip[40..].to_vec());
    if matches!(next_header, 6 | 17 | 58) {
        assert!(
            l4_checksum_ok_v6(src.octets(), dst.octets(), next_header, &l4),
            "the L4 checksum (next header {next_header}) verifies"
        );
    }
    if next_header == 17 {
        assert_ne!(&l4[6..8], &[0, 0], "an IPv6 UDP checksum is never zero");
    }
    Ipv6View {
        src,
        dst,
        traffic_class: (u16::from_be_bytes([ip[0], ip[1]]) >> 4) as u8,
        hop_limit: ip[7],
        next_header,
        l4,
    }
}

pub fn ports(l4: &[u8]) -> (u16, u16) {
    (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
}

pub fn icmp_id(l4: &[u8]) -> u16 {
    u16::from_be_bytes([l4[4], l4[5]])
}

/// Sends `l4` with `payload` from CLIENT_IP, expects it forwarded, and
/// returns the NAT port (or echo identifier) the flow got.
#[allow(dead_code)] // not every scenario file opens flows
pub fn open_flow(h: &mut Harness, l4: L4, payload: &[u8]) -> u16 {
    let out = h.run(&from_client(l4, payload));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let ip = ipv4_at(&out.packet, 14);
    if ip.protocol == 1 {
        icmp_id(&ip.l4)
    } else {
        ports(&ip.l4).0
    }
}

/// The tunnel's MTU (the worker's egress0): eth0's, as the harness
/// configures it, less the encapsulation.
pub fn tunnel_mtu() -> usize {
    config((0, 0)).mtu as usize - egress_common::config::TUNNEL_OVERHEAD
}

/// `len` bytes whose pattern does not repeat within 251 bytes (a prime):
/// a byte moved, lost or rewritten shows.
pub fn distinct_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
