//! The soak, short: 40 s of mixed traffic (short connections, a long
//! stream, new UDP flows every 100 ms). The long version is `cargo xtask
//! soak` (ten minutes).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn mixed_traffic_leaves_no_flows_behind_and_the_agent_does_not_grow() {
    if let Err(e) = egress_tests::require_root() {
        panic!("{e:#}");
    }
    let report = egress_tests::soak::run(options(), Duration::from_secs(40), Duration::from_secs(4)).unwrap();
    eprintln!("{}", report.describe());
    assert!(report.connections > 1000, "short connections went through");
    assert_eq!(report.connection_errors, 0, "no short connection failed");
    assert!(report.stream_bytes > 100_000_000, "the long stream moved data");
    assert!(report.udp_flows > 100);
    assert_eq!(report.udp_errors, 0, "every UDP flow was answered");
    assert!(report.samples.iter().any(|s| s.2 > 1000), "thousands of flows were live at once");
    assert_eq!(report.bindings_after_drain, 0, "every flow expired once the traffic stopped");
    assert!(report.drops.is_empty(), "no drops: {:?}", report.drops);
    let (first, last) = report.rss_first_and_last_kib();
    assert!(last <= first + 8 * 1024, "agent RSS grew from {first} KiB to {last} KiB");
}
