//! New flows the datapath refused, said once per client and sweep: which
//! client, why (its share of the table, or a table full of live flows),
//! where the last one was going, and what to change.
use std::{collections::BTreeMap, net::IpAddr};

use egress_common::{config::GatewayConfig, maps::ClientRefusals};

use super::{exhaustion::describe, metrics::ClientSample};

/// The refusal counts as last reported, by client address and id (an id
/// given to another pod starts again from zero).
#[derive(Default)]
pub struct RefusalLog {
    reported: BTreeMap<(IpAddr, u32), ClientRefusals>,
}

impl RefusalLog {
    /// One line for each client and reason whose count rose since the
    /// last call.
    pub fn new_lines(&mut self, clients: &[ClientSample], cfg: &GatewayConfig) -> Vec<String> {
        let mut lines = Vec::new();
        let mut reported = BTreeMap::new();
        for client in clients {
            let key = (client.ip, client.id);
            let before = self.reported.get(&key).copied().unwrap_or_default();
            let now = client.refusals;
            let who = if client.identity.name.is_empty() {
                format!("client {}", client.ip)
            } else {
                format!("client {} ({})", client.ip, client.identity.name)
            };
            let towards = describe(&(&now.last_destination).into());
            let over_share = now.over_share.saturating_sub(before.over_share);
            if over_share > 0 {
                lines.push(format!(
                    "{who} holds its share of the flow table ({} flows, --max-flows-per-client): {over_share} of its new flows refused since the last sweep, the last towards {towards}; other clients are not affected. Raise --max-flows-per-client if this pod needs more",
                    cfg.max_flows_per_client,
                ));
            }
            let table_full = now.table_full.saturating_sub(before.table_full);
            if table_full > 0 {
                lines.push(format!(
                    "the flow table is full of answered flows: {table_full} new {} of {who} refused since the last sweep, the last towards {towards}; raise --conntrack-size or lower --max-flows-per-client ({})",
                    flows(table_full),
                    cfg.max_flows_per_client,
                ));
            }
            reported.insert(key, now);
        }
        self.reported = reported;
        lines
    }
}

fn flows(n: u64) -> &'static str {
    if n == 1 {
        "flow"
    } else {
        "flows"
    }
}

#[cfg(test)]
mod tests {
    use egress_common::maps::{ClientTraffic, NatDestination};

    use super::*;
    use crate::pods::ClientIdentity;

    fn sample(over_share: u64, table_full: u64) -> ClientSample {
        ClientSample {
            ip: std::net::Ipv4Addr::new(10, 244, 1, 11).into(),
            id: 3,
            identity: ClientIdentity { name: "team-a/crawler".into(), uid: "u1".into(), ipv6: None },
            traffic: ClientTraffic::default(),
            flows: 0,
            refusals: ClientRefusals {
                over_share,
                table_full,
                last_destination: NatDestination {
                    remote_ip_be: u32::from(std::net::Ipv4Addr::new(203, 0, 113, 7)).to_be(),
                    remote_port_be: 443u16.to_be(),
                    protocol: 6,
                    _pad: 0,
                },
            },
        }
    }

    #[test]
    fn one_line_per_client_and_reason_whose_refusals_rose() {
        let cfg = GatewayConfig { max_flows_per_client: 100, ..unsafe { core::mem::zeroed() } };
        let mut log = RefusalLog::default();
        assert!(log.new_lines(&[sample(0, 0)], &cfg).is_empty());
        let lines = log.new_lines(&[sample(5, 0)], &cfg);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "client 10.244.1.11 (team-a/crawler) holds its share of the flow table (100 flows"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("5 of its new flows refused"), "{}", lines[0]);
        assert!(lines[0].contains("towards 203.0.113.7:443/tcp"), "{}", lines[0]);
        assert!(log.new_lines(&[sample(5, 0)], &cfg).is_empty(), "nothing new: silence");
        let lines = log.new_lines(&[sample(6, 2)], &cfg);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("1 of its new flows refused"), "{}", lines[0]);
        assert!(
            lines[1].starts_with("the flow table is full of answered flows: 2 new flows of client"),
            "{}",
            lines[1]
        );
    }
}
