//! Making the CLIENTS map equal to a snapshot, and forgetting the flows of
//! clients that left (their IP may soon belong to another pod).
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::Result;

use crate::{
    datapath::{conntrack, maps::DatapathMaps},
    pods::ClientSnapshot,
};

/// The clients written to CLIENTS, with their ids. It starts empty, like the
/// freshly loaded map it mirrors.
#[derive(Default)]
pub struct ClientTable {
    next_id: u32,
    ids: BTreeMap<Ipv4Addr, u32>,
}

impl ClientTable {
    pub fn apply(&mut self, maps: &mut DatapathMaps, desired: &ClientSnapshot) -> Result<()> {
        let gone: Vec<Ipv4Addr> = self.ids.keys().filter(|ip| !desired.contains_key(ip)).copied().collect();
        for ip in gone {
            maps.remove_client(ip)?;
            self.ids.remove(&ip);
            let flows = conntrack::forget_client(maps, ip)?;
            tracing::info!(client = %ip, flows, "client removed");
        }
        for (ip, name) in desired {
            if self.ids.contains_key(ip) {
                continue;
            }
            self.next_id += 1;
            maps.add_client(*ip, self.next_id)?;
            self.ids.insert(*ip, self.next_id);
            tracing::info!(client = %ip, name = %name, "client added");
        }
        Ok(())
    }
}
