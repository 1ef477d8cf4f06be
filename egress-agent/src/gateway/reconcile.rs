//! Making the CLIENTS map equal to a snapshot, and forgetting the flows of
//! clients that left (their IP may soon belong to another pod).
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{bail, Result};
use egress_common::maps::CLIENT_ID_MAX;

use crate::{
    datapath::{conntrack, maps::DatapathMaps},
    pods::{ClientIdentity, ClientSnapshot},
};

/// A client as written to CLIENTS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Index of its traffic counters in CLIENT_TRAFFIC.
    pub id: u32,
    pub identity: ClientIdentity,
}

/// The clients written to CLIENTS. It starts empty, like the freshly loaded
/// map it mirrors.
#[derive(Default)]
pub struct ClientTable {
    clients: BTreeMap<Ipv4Addr, Client>,
    /// Ids given back by clients that left, reused before new ones.
    free_ids: Vec<u32>,
    next_id: u32,
}

impl ClientTable {
    pub fn clients(&self) -> &BTreeMap<Ipv4Addr, Client> {
        &self.clients
    }

    pub fn apply(&mut self, maps: &mut DatapathMaps, desired: &ClientSnapshot) -> Result<()> {
        // Gone, or the address now belongs to another pod: either way the
        // old holder's flows must not carry over to whoever has it now.
        let gone: Vec<Ipv4Addr> = self
            .clients
            .iter()
            .filter(|(ip, client)| desired.get(ip) != Some(&client.identity))
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            maps.remove_client(ip)?;
            let client = self.clients.remove(&ip).expect("listed above");
            self.free_ids.push(client.id);
            let flows = conntrack::forget_client(maps, ip)?;
            tracing::info!(client = %ip, identity = %client.identity, flows, "client removed");
        }
        for (ip, identity) in desired {
            if self.clients.contains_key(ip) {
                continue;
            }
            let id = self.allocate_id()?;
            if let Err(err) = maps.add_client(*ip, id) {
                self.free_ids.push(id);
                return Err(err);
            }
            self.clients.insert(*ip, Client { id, identity: identity.clone() });
            tracing::info!(client = %ip, identity = %identity, "client added");
        }
        Ok(())
    }

    fn allocate_id(&mut self) -> Result<u32> {
        if let Some(id) = self.free_ids.pop() {
            return Ok(id);
        }
        if self.next_id >= CLIENT_ID_MAX {
            bail!("more than {CLIENT_ID_MAX} clients: narrow the pod selector");
        }
        self.next_id += 1;
        Ok(self.next_id)
    }
}
