//! IPv4 fragments through the gateway, both ways, and replies too big for
//! the tunnel.
//!
//! Only a datagram's first fragment carries its ports: the gateway
//! translates it like any packet and remembers its flow under what all
//! fragments of the datagram share (source, destination, protocol, ID).
//! Later fragments are translated with that flow (addresses, TTL and the
//! IP checksum; their bytes untouched). The scenarios show an honest
//! sender's datagram crossing intact (put back together, its L4 checksum
//! verifies with the translated addresses), and that nothing else joins
//! it: later fragments without their first, with another ID, from another
//! client or remote, under a spoofed source, or too late are dropped when
//! a client sends them and left to the pod's stack when they come from the
//! wire, never translated.
//!
//! A reply too big for the tunnel is answered with fragmentation needed
//! when DF is set (within each client's ICMP allowance) and, here, dropped
//! when DF is clear; a tunnel packet fragmented on the way is dropped.
mod common;

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use common::*;
use egress_common::{
    checksum::{internet_checksum, l4_checksum_ok},
    config::{DEFAULT_UDP_TIMEOUT_S, TUNNEL_GATEWAY_MAC, TUNNEL_OVERHEAD},
    fragments::{
        FragmentKey, FIRST_FRAGMENTS, FRAGMENTS_MAX, FRAGMENT_TIMEOUT_NS, IP_DF, IP_MF, IP_OFFSET_MASK,
    },
};

/// A second server out there.
const OTHER_REMOTE_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 8);
/// The identification of the datagrams under test.
const DATAGRAM_ID: u16 = 0x5a17;
const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// What RFC 1812 lets an ICMP error be, and what the gateway's are.
const ICMP_ERROR_LEN: usize = 576;
const DNS_QUERY: L4 = L4::Udp { src: 5353, dst: 53 };

/// `ip` (an IPv4 packet) in an Ethernet frame.
fn with_ethernet(src_mac: [u8; 6], dst_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    [&dst_mac[..], &src_mac[..], &[0x08, 0x00], ip].concat()
}

/// Sets an IPv4 packet's identification and flags/offset word (host
/// order), its total length to the packet's, then its header checksum.
/// The L4 checksum does not cover these fields.
fn set_fragment_fields(ip: &mut [u8], id: u16, flags_and_offset: u16) {
    let total_len = ip.len() as u16;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&flags_and_offset.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let header_csum = internet_checksum(&ip[..IPV4_HLEN]);
    ip[10..12].copy_from_slice(&header_csum.to_be_bytes());
}

/// An IPv4 datagram and how its sender's stack cuts it.
#[derive(Clone, Copy)]
struct Datagram {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    ttl: u8,
    l4: L4,
    /// Bytes after the L4 header.
    payload_len: usize,
    /// IP payload bytes per fragment (a multiple of 8, as offsets count
    /// 8-byte units).
    fragment_len: usize,
}

impl Datagram {
    /// From CLIENT_IP to REMOTE_IP, cut as the worker's stack cuts it:
    /// every fragment fits its egress0, whose MTU is the tunnel's.
    fn from_client(l4: L4, payload_len: usize) -> Datagram {
        let fragment_len = (tunnel_mtu() - IPV4_HLEN) / 8 * 8;
        Datagram { src: CLIENT_IP, dst: REMOTE_IP, id: DATAGRAM_ID, ttl: 64, l4, payload_len, fragment_len }
    }

    /// From REMOTE_IP to the gateway, cut as the remote's stack cuts it
    /// once it has learnt the tunnel's MTU (from the gateway's
    /// fragmentation needed): every fragment fits the tunnel.
    fn from_remote(l4: L4, payload_len: usize) -> Datagram {
        Datagram { src: REMOTE_IP, dst: GATEWAY_IP, ttl: 50, ..Datagram::from_client(l4, payload_len) }
    }

    fn payload(&self) -> Vec<u8> {
        distinct_bytes(self.payload_len)
    }

    /// Its fragments, as IPv4 packets: the IP payload (the L4 message) cut
    /// every `fragment_len` bytes, each part under the datagram's header
    /// with its own offset, MF on all but the last, DF clear.
    fn fragments(&self) -> Vec<Vec<u8>> {
        let whole = frame(NODE_MAC, GATEWAY_MAC, self.src, self.dst, self.ttl, self.l4, &self.payload());
        let (header, l4_message) = whole[ETH_HLEN..].split_at(IPV4_HLEN);
        let parts: Vec<&[u8]> = l4_message.chunks(self.fragment_len).collect();
        let last = parts.len() - 1;
        parts
            .iter()
            .enumerate()
            .map(|(index, part)| {
                let offset_units = (index * self.fragment_len / 8) as u16;
                let more = if index < last { IP_MF } else { 0 };
                let mut fragment = [header, part].concat();
                set_fragment_fields(&mut fragment, self.id, more | offset_units);
                fragment
            })
            .collect()
    }

    /// Its fragments as a worker sends them: each in a tunnel packet from
    /// `outer_src`.
    fn tunnelled_from(&self, outer_src: Ipv4Addr) -> Vec<Vec<u8>> {
        let in_tunnel =
            |ip: &Vec<u8>| tunnel(outer_src, VNI, &with_ethernet(CLIENT_MAC, TUNNEL_GATEWAY_MAC, ip));
        self.fragments().iter().map(in_tunnel).collect()
    }

    /// Its fragments as its sender's own worker sends them.
    fn tunnelled(&self) -> Vec<Vec<u8>> {
        self.tunnelled_from(self.src)
    }

    /// Its fragments as the node delivers them to the gateway pod.
    fn on_the_wire(&self) -> Vec<Vec<u8>> {
        self.fragments().iter().map(|ip| with_ethernet(NODE_MAC, GATEWAY_MAC, ip)).collect()
    }
}

/// Checks what a translation must leave alone in fragment `index`: the
/// datagram's ID and protocol, the fragment's place in it, and a later
/// fragment's bytes.
fn assert_same_fragment(index: usize, translated: &Ipv4Fields, sent: &Ipv4Fields) {
    assert_eq!(
        (translated.id, translated.frag_off, translated.protocol),
        (sent.id, sent.frag_off, sent.protocol),
        "fragment {index}: ID, flags, offset and protocol kept"
    );
    if sent.frag_off & IP_OFFSET_MASK != 0 {
        assert!(translated.payload == sent.payload, "later fragment {index}: its bytes untouched");
    }
}

/// Runs a client's datagram through the gateway, fragment by fragment,
/// and returns each as it left for the remote: tunnel stripped, from the
/// gateway's address, one hop older.
fn send_to_remote(h: &mut Harness, datagram: &Datagram) -> Vec<Ipv4Fields> {
    let fragments = datagram.fragments();
    let mut left = Vec::new();
    for (index, (packet, fragment)) in datagram.tunnelled().iter().zip(&fragments).enumerate() {
        let out = h.run(packet);
        assert_eq!(out.action, TC_ACT_REDIRECT, "fragment {index} sent out");
        assert_eq!(
            out.packet.len(),
            packet.len() - TUNNEL_OVERHEAD,
            "fragment {index}: only the tunnel went"
        );
        let translated = ipv4_fields_at(&out.packet, ETH_HLEN);
        let sent = ipv4_fields_at(fragment, 0);
        assert_eq!(
            (translated.src, translated.dst, translated.ttl),
            (GATEWAY_IP, sent.dst, sent.ttl - 1),
            "fragment {index}: from the gateway's address"
        );
        assert_same_fragment(index, &translated, &sent);
        left.push(translated);
    }
    left
}

/// Runs a remote's datagram through the gateway, fragment by fragment,
/// and returns each as the client gets it: to the client's address, one
/// hop older, tunnelled to its worker.
fn send_to_client(h: &mut Harness, datagram: &Datagram) -> Vec<Ipv4Fields> {
    let fragments = datagram.fragments();
    let mut delivered = Vec::new();
    for (index, (packet, fragment)) in datagram.on_the_wire().iter().zip(&fragments).enumerate() {
        let out = h.run(packet);
        assert_eq!(out.action, TC_ACT_REDIRECT, "fragment {index} sent to the client");
        assert_eq!(
            out.packet.len(),
            packet.len() + TUNNEL_OVERHEAD,
            "fragment {index}: only the tunnel came"
        );
        let outer = ipv4_at(&out.packet, ETH_HLEN);
        assert_eq!((outer.src, outer.dst, outer.protocol), (GATEWAY_IP, CLIENT_IP, 17), "fragment {index}");
        assert_eq!(ports(&outer.l4), (VXLAN_PORT, VXLAN_PORT), "fragment {index}: in the tunnel");
        let inner_eth = &out.packet[ETH_HLEN + TUNNEL_OVERHEAD - ETH_HLEN..][..ETH_HLEN];
        assert_eq!(&inner_eth[..6], &CLIENT_MAC, "fragment {index}: to the client's tunnel device");
        let translated = ipv4_fields_at(&out.packet, ETH_HLEN + TUNNEL_OVERHEAD);
        let sent = ipv4_fields_at(fragment, 0);
        assert_eq!(
            (translated.src, translated.dst, translated.ttl),
            (sent.src, CLIENT_IP, sent.ttl - 1),
            "fragment {index}: to the client's address"
        );
        assert_same_fragment(index, &translated, &sent);
        delivered.push(translated);
    }
    delivered
}

/// The L4 message of a datagram put back together from its fragments,
/// checking that they join up: each starts where the one before ended,
/// all have one ID, only the last lacks MF.
fn reassemble(fragments: &[Ipv4Fields]) -> Vec<u8> {
    let mut message = Vec::new();
    for (index, fragment) in fragments.iter().enumerate() {
        let offset = (fragment.frag_off & IP_OFFSET_MASK) as usize * 8;
        assert_eq!(offset, message.len(), "fragment {index} starts where the one before ended");
        assert_eq!(fragment.frag_off & IP_MF != 0, index + 1 < fragments.len(), "fragment {index}: MF");
        assert_eq!(fragment.id, fragments[0].id, "fragment {index}: one datagram");
        message.extend_from_slice(&fragment.payload);
    }
    message
}

#[test]
fn a_client_s_fragmented_datagram_leaves_whole_from_the_gateway_s_address_and_port() {
    let mut h = Harness::default();
    let datagram = Datagram::from_client(DNS_QUERY, 3000);
    let left = send_to_remote(&mut h, &datagram);
    assert_eq!(left.len(), 3, "a first, a middle and a last fragment");

    let message = reassemble(&left);
    assert!(
        l4_checksum_ok(GATEWAY_IP.octets(), REMOTE_IP.octets(), 17, &message),
        "the UDP checksum, changed in the first fragment only, verifies over the whole datagram"
    );
    let flow = &h.flows()[0];
    assert_eq!(ports(&message), (u16::from_be(flow.nat_port_be), 53), "from the flow's NAT port");
    assert!(message[UDP_HLEN..] == datagram.payload(), "the payload arrives as sent");
    assert_eq!(h.flows().len(), 1, "one binding for the whole datagram");
    assert_eq!((h.counter("fragment_translated"), h.counter("forwarded_to_remote")), (2, 3));
    assert_eq!(h.counter("drop_fragment_unmatched"), 0);
}

#[test]
fn a_client_s_later_fragments_without_their_first_are_dropped() {
    let mut h = Harness::default();
    let datagram = Datagram::from_client(DNS_QUERY, 2000);
    let [first, last]: [Vec<u8>; 2] = datagram.tunnelled().try_into().unwrap();
    // Reordered, the last before its first: nothing says which flow it
    // belongs to, and the gateway holds nothing back.
    assert_eq!(h.run(&last).action, TC_ACT_SHOT, "a later fragment before its first");
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT);
    // A spray of later fragments, each differing from the datagram whose
    // first passed in one thing its key holds.
    let strangers = [
        ("another ID", Datagram { id: DATAGRAM_ID.wrapping_add(1), ..datagram }),
        ("another destination", Datagram { dst: OTHER_REMOTE_IP, ..datagram }),
        ("another protocol", Datagram { l4: L4::EchoRequest { id: 5353 }, ..datagram }),
    ];
    for (what, stranger) in strangers {
        let out = h.run(&stranger.tunnelled()[1]);
        assert_eq!(out.action, TC_ACT_SHOT, "a later fragment with {what} was sent on");
    }
    assert_eq!(h.counter("drop_fragment_unmatched"), 4);
    assert_eq!(h.counter("fragment_translated"), 0);
    assert_eq!(h.flows().len(), 1, "no binding made by a later fragment");
    // The datagram's own last fragment, sent again, still goes.
    assert_eq!(h.run(&last).action, TC_ACT_REDIRECT);
    assert_eq!(h.counter("fragment_translated"), 1);
}

#[test]
fn another_client_cannot_slip_fragments_into_a_client_s_datagram() {
    let mut h = Harness::default();
    let datagram = Datagram::from_client(DNS_QUERY, 2000);
    let [first, last]: [Vec<u8>; 2] = datagram.tunnelled().try_into().unwrap();
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT);

    // The second client (listed too) sends a later fragment with the same
    // ID, destination and protocol: the key holds the source, its own, so
    // it belongs to no datagram the gateway knows.
    let its_own = Datagram { src: SECOND_CLIENT_IP, ..datagram }.tunnelled().remove(1);
    assert_eq!(h.run(&its_own).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_fragment_unmatched"), 1);
    // Claiming the first client's address in its own tunnel: spoofed.
    let spoofed = datagram.tunnelled_from(SECOND_CLIENT_IP).remove(1);
    assert_eq!(h.run(&spoofed).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_spoofed_inner_source"), 1);
    // An unlabeled pod may not use the tunnel at all.
    let unlisted = datagram.tunnelled_from(OTHER_POD_IP).remove(1);
    assert_eq!(h.run(&unlisted).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_unknown_client"), 1);
    assert_eq!(h.counter("fragment_translated"), 0);

    // The first client's datagram is unharmed.
    let out = h.run(&last);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let left = ipv4_fields_at(&out.packet, ETH_HLEN);
    assert!(left.payload == datagram.fragments()[1][IPV4_HLEN..], "its last fragment's bytes");
    assert_eq!(h.counter("fragment_translated"), 1);
}

/// How many first fragments one client's allowance may have let through
/// in `elapsed` (its burst, its rate, and one a racing CPU may add).
fn first_fragments_allowed_in(elapsed: Duration) -> u64 {
    FIRST_FRAGMENTS.burst + (elapsed.as_nanos() as u64).div_ceil(FIRST_FRAGMENTS.interval_ns) + 1
}

/// Sends `count` first fragments of `client`'s datagrams (IDs from
/// `first_id` up) and returns how many the gateway sent on.
fn spray_first_fragments(h: &mut Harness, client: Ipv4Addr, first_id: u16, count: u32) -> u64 {
    let mut sent_on = 0;
    for i in 0..count {
        let datagram = Datagram {
            src: client,
            id: first_id.wrapping_add(i as u16),
            ..Datagram::from_client(DNS_QUERY, 2000)
        };
        let out = h.run(&datagram.tunnelled()[0]);
        match out.action {
            TC_ACT_REDIRECT => sent_on += 1,
            TC_ACT_SHOT => {}
            other => panic!("first fragment {i}: action {other}"),
        }
    }
    sent_on
}

#[test]
fn a_client_spraying_first_fragments_cannot_push_out_another_client_s_datagram() {
    let mut h = Harness::default();
    let datagram = Datagram::from_client(DNS_QUERY, 2000);
    let [first, last]: [Vec<u8>; 2] = datagram.tunnelled().try_into().unwrap();
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT);

    // The second client sends more first fragments than the whole map
    // holds, of datagrams it never finishes.
    let sprayed = FRAGMENTS_MAX + FRAGMENTS_MAX / 4;
    let started = Instant::now();
    let sent_on = spray_first_fragments(&mut h, SECOND_CLIENT_IP, 0, sprayed);
    let allowed = first_fragments_allowed_in(started.elapsed());
    eprintln!("{sent_on} of {sprayed} sprayed first fragments went on (allowance: {allowed})");
    assert!(sent_on <= allowed, "{sent_on} went on, more than the allowance of {allowed}");
    assert_eq!(h.counter("drop_fragment_over_budget"), sprayed as u64 - sent_on);

    // The first client's datagram is whole; its own allowance is its own.
    // Unless this machine is so slow (an emulated kernel) that the spray
    // itself took over a second: a datagram whose later fragments come a
    // second after its first may be forgotten, by design.
    if allowed < FRAGMENTS_MAX as u64 {
        assert!(h.fragments().keys().count() < FRAGMENTS_MAX as usize, "the map never filled");
        assert_eq!(h.run(&last).action, TC_ACT_REDIRECT, "its last fragment was pushed out");
        assert_eq!(h.counter("fragment_translated"), 1);
    } else {
        eprintln!("the spray was slower than the allowance here: only its bounds are checked");
    }
    let next = Datagram { id: DATAGRAM_ID + 1, ..datagram };
    assert_eq!(send_to_remote(&mut h, &next).len(), 2, "its next datagram goes too");

    // The sprayer's allowance comes back with time.
    thread::sleep(Duration::from_millis(100));
    assert_eq!(spray_first_fragments(&mut h, SECOND_CLIENT_IP, sprayed as u16, 1), 1);
}

#[test]
fn the_first_fragments_of_a_client_s_replies_come_out_of_its_allowance_too() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    let reply = Datagram::from_remote(L4::Udp { src: 53, dst: nat_port }, 3000);
    assert_eq!(send_to_client(&mut h, &reply).len(), 3, "within the allowance, a reply goes whole");

    // A remote the client controls answers with first fragments only, as
    // fast as it can: they take entries in the same shared map.
    let replies = 4 * FIRST_FRAGMENTS.burst as u32;
    let started = Instant::now();
    let mut sent_on = 0;
    for i in 0..replies {
        let first = Datagram { id: i as u16, ..reply }.on_the_wire().remove(0);
        match h.run(&first).action {
            TC_ACT_REDIRECT => sent_on += 1,
            TC_ACT_SHOT => {}
            other => panic!("reply first fragment {i}: action {other}"),
        }
    }
    let allowed = first_fragments_allowed_in(started.elapsed());
    assert!(sent_on < allowed, "{sent_on} of {replies} went on, more than the allowance of {allowed}");
    assert_eq!(h.counter("drop_fragment_over_budget"), replies as u64 - sent_on);
    // The client's own first fragments share that allowance, its replies'
    // later fragments do not spend it.
    let later = Datagram { id: 0, ..reply }.on_the_wire().remove(1);
    let before = h.counter("drop_fragment_over_budget");
    h.run(&later);
    assert_eq!(h.counter("drop_fragment_over_budget"), before);
}

#[test]
fn a_later_fragment_past_the_fragment_timeout_is_dropped() {
    let mut h = Harness::default();
    let datagram = Datagram::from_client(DNS_QUERY, 2000);
    let [first, last]: [Vec<u8>; 2] = datagram.tunnelled().try_into().unwrap();
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT);
    let remembered: Vec<FragmentKey> = h.fragments().keys().map(Result::unwrap).collect();
    let key =
        FragmentKey::new(u32::from(CLIENT_IP).to_be(), u32::from(REMOTE_IP).to_be(), DATAGRAM_ID.to_be(), 17);
    assert_eq!(
        remembered,
        [key],
        "the datagram is remembered under its source, destination, ID and protocol"
    );

    // Longer after its first than Linux's ipfrag_time: a receiver has
    // discarded the datagram by now.
    h.age_fragments(FRAGMENT_TIMEOUT_NS / 1_000_000_000 + 1);
    assert_eq!(h.run(&last).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_fragment_unmatched"), 1);
    assert_eq!(h.fragments().keys().count(), 0, "the datagram is forgotten");
}

#[test]
fn a_later_fragment_of_a_flow_that_has_expired_is_dropped() {
    // Aging the flow must not wait out the datagram's 5 s.
    wait_for_uptime(DEFAULT_UDP_TIMEOUT_S as u64 + 1);
    let mut h = Harness::default();
    let datagram = Datagram::from_client(DNS_QUERY, 2000);
    let [first, last]: [Vec<u8>; 2] = datagram.tunnelled().try_into().unwrap();
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT);
    // The datagram is fresh, its flow is not: its NAT port may be
    // another flow's by now.
    h.age_all(DEFAULT_UDP_TIMEOUT_S as u64 + 1);
    assert_eq!(h.run(&last).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_fragment_unmatched"), 1);
    assert_eq!(h.counter("flow_expired_in_datapath"), 1);
    assert!(h.flows().is_empty());
}

#[test]
fn an_expiring_later_fragment_draws_no_time_exceeded() {
    let mut h = Harness::default();
    // A traceroute probe in two small fragments: both short enough to be
    // quoted whole, so only which fragment it is decides the answer.
    let probe = Datagram {
        ttl: 1,
        fragment_len: 64,
        ..Datagram::from_client(L4::Udp { src: 40_000, dst: 33_434 }, 100)
    };
    let [first, later]: [Vec<u8>; 2] = probe.tunnelled().try_into().unwrap();
    let out = h.run(&first);
    assert_eq!(out.action, TC_ACT_REDIRECT, "the first fragment is answered");
    let answer = ipv4_at(&out.packet, ETH_HLEN + TUNNEL_OVERHEAD);
    assert_eq!((answer.src, answer.dst, answer.protocol, answer.l4[0]), (GATEWAY_IP, CLIENT_IP, 1, 11));
    assert_eq!(h.counter("icmp_error_to_client"), 1);

    // RFC 1812 4.3.2.7: never about a later fragment (one datagram, one
    // answer).
    assert_eq!(h.run(&later).action, TC_ACT_SHOT, "a later fragment is only dropped");
    assert_eq!(h.counter("icmp_error_to_client"), 1);
    assert_eq!(h.counter("drop_ttl_exceeded"), 2);
    assert_eq!(h.counter("icmp_answer_rate_limited"), 0, "not for want of allowance");
    assert_eq!(h.counter("fragment_translated"), 0);
}

#[test]
fn a_reply_s_fragmented_datagram_reaches_the_client_through_its_tunnel() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    let reply = Datagram::from_remote(L4::Udp { src: 53, dst: nat_port }, 3000);
    let delivered = send_to_client(&mut h, &reply);
    assert_eq!(delivered.len(), 3);

    let message = reassemble(&delivered);
    assert!(
        l4_checksum_ok(REMOTE_IP.octets(), CLIENT_IP.octets(), 17, &message),
        "the UDP checksum verifies over the whole datagram, to the client's address"
    );
    assert_eq!(ports(&message), (53, 5353), "to the client's own port");
    assert!(message[UDP_HLEN..] == reply.payload(), "the payload arrives as sent");
    assert_eq!((h.counter("fragment_translated"), h.counter("forwarded_to_client")), (2, 3));
}

#[test]
fn a_big_ping_and_its_big_reply_cross_the_gateway_in_fragments() {
    let mut h = Harness::default();
    let request = Datagram::from_client(L4::EchoRequest { id: 777 }, 3000);
    let message = reassemble(&send_to_remote(&mut h, &request));
    assert_eq!(internet_checksum(&message), 0, "the request's ICMP checksum verifies");
    assert_eq!(message[0], 8);
    let nat_id = icmp_id(&message);
    assert!(message[8..] == request.payload());

    let reply = Datagram::from_remote(L4::EchoReply { id: nat_id }, 3000);
    let message = reassemble(&send_to_client(&mut h, &reply));
    assert_eq!(internet_checksum(&message), 0, "the reply's ICMP checksum verifies");
    assert_eq!((message[0], icmp_id(&message)), (0, 777), "an echo reply with the client's identifier");
    assert!(message[8..] == reply.payload());
    assert_eq!(h.counter("fragment_translated"), 4);
}

#[test]
fn later_fragments_from_the_wire_that_match_no_reply_go_to_the_pod_s_stack() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    let reply = Datagram::from_remote(L4::Udp { src: 53, dst: nat_port }, 2000);
    let [first, last]: [Vec<u8>; 2] = reply.on_the_wire().try_into().unwrap();
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT);

    // Later fragments of datagrams nothing of ours began are the pod's
    // own (its stack reassembles them) or strays (its stack discards
    // them): never a client's.
    let strangers = [
        ("another ID", Datagram { id: DATAGRAM_ID.wrapping_add(1), ..reply }),
        ("another protocol", Datagram { l4: L4::EchoReply { id: nat_port }, ..reply }),
    ];
    for (what, stranger) in strangers {
        let sent = stranger.on_the_wire().remove(1);
        let out = h.run(&sent);
        assert_eq!(out.action, TC_ACT_UNSPEC, "a later fragment with {what}");
        assert!(out.packet == sent, "a later fragment with {what} was changed");
    }
    // Another remote's datagram with the same ID: its first fragment to
    // the NAT port is unsolicited, like any packet from it there, and its
    // later one is no reply's.
    let intruder: [Vec<u8>; 2] = Datagram { src: OTHER_REMOTE_IP, ..reply }.on_the_wire().try_into().unwrap();
    assert_eq!(h.run(&intruder[0]).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
    assert_eq!(h.run(&intruder[1]).action, TC_ACT_UNSPEC);

    assert_eq!(h.counter("passed_to_stack"), 3);
    assert_eq!(h.counter("fragment_translated"), 0);
    // The reply's own last fragment still reaches the client.
    assert_eq!(h.run(&last).action, TC_ACT_REDIRECT);
    assert_eq!((h.counter("fragment_translated"), h.counter("forwarded_to_client")), (1, 2));
}

/// A reply to `nat_port` whose IPv4 packet is `ip_len` bytes long, with
/// DF set (as a UDP socket doing path MTU discovery sends it).
fn reply_of_len(nat_port: u16, ip_len: usize) -> Vec<u8> {
    let payload = distinct_bytes(ip_len - IPV4_HLEN - UDP_HLEN);
    let reply = from_remote(L4::Udp { src: 53, dst: nat_port }, &payload);
    let frag_off = u16::from_be_bytes([reply[ETH_HLEN + 6], reply[ETH_HLEN + 7]]);
    assert_eq!(frag_off, IP_DF, "a whole datagram, DF set");
    reply
}

#[test]
fn a_reply_too_big_for_the_tunnel_with_df_is_answered_with_fragmentation_needed() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    assert_eq!(
        h.run(&reply_of_len(nat_port, tunnel_mtu())).action,
        TC_ACT_REDIRECT,
        "a reply that just fits"
    );
    assert_eq!(h.counter("forwarded_to_client"), 1);

    // One byte more, and a reply the size of eth0's MTU, as the remote
    // sends before it knows.
    for (answered, ip_len) in [tunnel_mtu() + 1, 1500].into_iter().enumerate() {
        let too_big = reply_of_len(nat_port, ip_len);
        let out = h.run(&too_big);
        assert_eq!(out.action, TC_ACT_REDIRECT, "a {ip_len}-byte reply is answered");
        assert_eq!(out.packet.len(), ETH_HLEN + ICMP_ERROR_LEN);
        let answer = ipv4_at(&out.packet, ETH_HLEN); // the ICMP checksum over all 556 bytes included
        assert_eq!((answer.src, answer.dst, answer.protocol, answer.ttl), (GATEWAY_IP, REMOTE_IP, 1, 64));
        assert_eq!(ipv4_fields_at(&out.packet, ETH_HLEN).tos, 0xc0, "internetwork control, as Linux's");
        let icmp = &answer.l4;
        assert_eq!((icmp[0], icmp[1], &icmp[4..6]), (3, 4, &[0u8, 0][..]), "fragmentation needed");
        assert_eq!(
            u16::from_be_bytes([icmp[6], icmp[7]]) as usize,
            tunnel_mtu(),
            "next-hop MTU: the tunnel's"
        );
        // The remote must recognise its own packet: the quote is the reply
        // as it arrived (to the gateway's address and NAT port).
        let quote = &icmp[8..];
        assert_eq!(quote.len(), ICMP_ERROR_LEN - IPV4_HLEN - 8);
        assert!(quote == &too_big[ETH_HLEN..ETH_HLEN + quote.len()], "a {ip_len}-byte reply's quote differs");
        assert_eq!(ports(&quote[IPV4_HLEN..]), (53, nat_port));
        assert_eq!(h.counter("icmp_frag_needed_to_remote"), answered as u64 + 1);
        assert_eq!(h.counter("drop_too_big_for_tunnel"), answered as u64 + 1);
    }
    assert_eq!(h.counter("forwarded_to_client"), 1, "nothing too big reached the client");
}

#[test]
fn fragmentation_needed_answers_are_limited_per_client() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    let out = h.run(&from_client_at(SECOND_CLIENT_IP, DNS_QUERY, b"query"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let second_client_nat_port = ports(&ipv4_at(&out.packet, ETH_HLEN).l4).0;

    // A remote (or a tenant steering one) sends big DF replies in a burst:
    // 6 answers at once, as Linux's icmp_ratelimit allows, then none.
    let too_big = reply_of_len(nat_port, 1500);
    for answer in 1..=6 {
        assert_eq!(h.run(&too_big).action, TC_ACT_REDIRECT, "answer {answer}");
    }
    assert_eq!(h.run(&too_big).action, TC_ACT_SHOT, "a 7th answer at once");
    assert_eq!(h.counter("icmp_frag_needed_to_remote"), 6);
    assert_eq!(h.counter("icmp_answer_rate_limited"), 1);
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 7);

    // The other client's allowance is its own.
    let to_second_client = reply_of_len(second_client_nat_port, 1500);
    assert_eq!(h.run(&to_second_client).action, TC_ACT_REDIRECT, "the second client's remote is answered");

    // A second later, one more.
    thread::sleep(Duration::from_millis(1_100));
    assert_eq!(h.run(&too_big).action, TC_ACT_REDIRECT, "answered a second later");
    assert_eq!(h.run(&too_big).action, TC_ACT_SHOT, "a second answer a second later");
    assert_eq!(h.counter("icmp_frag_needed_to_remote"), 8);
    assert_eq!(h.counter("icmp_answer_rate_limited"), 2);
}

#[test]
fn a_reply_too_big_for_the_tunnel_without_df_is_dropped_without_a_resegmentation_pair() {
    // Such a reply is sent to its client in two fragments: the
    // resegmentation veth pair computes its UDP checksum whole, then
    // `egress_resegmented` cuts it (tunnel::split). BPF_PROG_TEST_RUN runs
    // one program on one packet, with no pair, and the harness configures
    // none (resegment_ifindex 0, as the agent without its GRO stage): the
    // reply is dropped and counted. tests/tests/big_datagrams.rs sends real
    // ones through the pair.
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    let mut reply = reply_of_len(nat_port, 1500);
    set_fragment_fields(&mut reply[ETH_HLEN..], DATAGRAM_ID, 0);
    assert_eq!(h.run(&reply).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 1);

    // Likewise the first fragment of a datagram the remote cut for eth0's
    // MTU rather than the tunnel's (no fragment carries DF). Its datagram is
    // then not remembered: the later fragment is the pod's stack's, which
    // discards it, rather than sent to a client that could never
    // reassemble it.
    let cut_for_eth0 = Datagram {
        fragment_len: 1500 - IPV4_HLEN,
        ..Datagram::from_remote(L4::Udp { src: 53, dst: nat_port }, 2 * (1500 - IPV4_HLEN) - UDP_HLEN)
    };
    let fragments = cut_for_eth0.on_the_wire();
    assert!(fragments.iter().all(|fragment| fragment.len() == ETH_HLEN + 1500));
    assert_eq!(h.run(&fragments[0]).action, TC_ACT_SHOT, "the first fragment");
    assert_eq!(h.run(&fragments[1]).action, TC_ACT_UNSPEC, "the later fragment");
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 2);
    assert_eq!(h.counter("icmp_frag_needed_to_remote"), 0, "no answer without DF");
    assert_eq!((h.counter("reply_fragmented"), h.counter("forwarded_to_client")), (0, 0));
}

#[test]
fn a_tunnel_packet_fragmented_on_the_way_is_dropped() {
    let mut h = Harness::default();
    // Workers' tunnel packets fit eth0: one cut on the way is not a
    // worker's, and the gateway reassembles nothing.
    let mut first_part = from_client(DNS_QUERY, b"query");
    set_fragment_fields(&mut first_part[ETH_HLEN..], DATAGRAM_ID, IP_MF);
    assert_eq!(h.run(&first_part).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_fragment"), 1);
    // A later part holds no UDP header to say it is the tunnel's, and no
    // datagram of ours began it: the pod's stack gets it and, its first
    // part dropped, never reassembles it.
    let mut later_part = from_client(DNS_QUERY, b"query");
    set_fragment_fields(&mut later_part[ETH_HLEN..], DATAGRAM_ID, 185);
    assert_eq!(h.run(&later_part).action, TC_ACT_UNSPEC);

    assert_eq!((h.counter("forwarded_to_remote"), h.counter("fragment_translated")), (0, 0));
    assert!(h.flows().is_empty(), "no binding from a tunnel fragment");
}

/// A remote's IP IDs towards the gateway are shared by every client's
/// flows and the gateway pod's own traffic, so an ID comes round again.
/// A later datagram with the same ID whose first fragment is not a
/// client's (here: for the pod's own port) must not have its later
/// fragments follow the earlier datagram's flow to that client.
#[test]
fn a_later_datagram_with_the_same_id_never_follows_an_earlier_one_s_flow() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    let reply = Datagram::from_remote(L4::Udp { src: 53, dst: nat_port }, 2000);
    let [first, last]: [Vec<u8>; 2] = reply.on_the_wire().try_into().unwrap();
    assert_eq!(h.run(&first).action, TC_ACT_REDIRECT);
    assert_eq!(h.run(&last).action, TC_ACT_REDIRECT);

    // Same remote, same ID, to the pod's own ephemeral port.
    let own: [Vec<u8>; 2] =
        Datagram { l4: L4::Udp { src: 53, dst: 40_000 }, ..reply }.on_the_wire().try_into().unwrap();
    for (index, fragment) in own.iter().enumerate() {
        let out = h.run(fragment);
        assert_eq!(out.action, TC_ACT_UNSPEC, "the pod's own fragment {index}");
        assert!(out.packet == *fragment, "the pod's own fragment {index} was changed");
    }
    assert_eq!(h.counter("fragment_translated"), 1, "only the client's own later fragment");
    assert_eq!(h.counter("forwarded_to_client"), 2);
}

/// DF on a later fragment is not what a sender makes, and an answer about
/// it would quote no ports: it is dropped, never answered.
#[test]
fn a_too_big_later_fragment_with_df_is_dropped_unanswered() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, DNS_QUERY, b"query");
    let reply = Datagram::from_remote(L4::Udp { src: 53, dst: nat_port }, 4000);
    // The first fragment fits the tunnel and is translated.
    assert_eq!(h.run(&reply.on_the_wire()[0]).action, TC_ACT_REDIRECT);
    // A later fragment of the same datagram, cut for eth0 (too big for the
    // tunnel), with DF set.
    let mut later = Datagram { fragment_len: 1480, ..reply }.on_the_wire().remove(1);
    assert_eq!(later.len(), ETH_HLEN + 1500);
    let flags_and_offset = u16::from_be_bytes([later[ETH_HLEN + 6], later[ETH_HLEN + 7]]);
    set_fragment_fields(&mut later[ETH_HLEN..], DATAGRAM_ID, flags_and_offset | 0x4000);
    assert_eq!(h.run(&later).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 1);
    assert_eq!(h.counter("icmp_frag_needed_to_remote"), 0, "never answered");
}
