//! Making the CLIENTS and CLIENTS6 maps equal to a snapshot, and forgetting
//! the flows of clients that left (their IPs may soon belong to another
//! pod). A client listed by its IPv4 address is in CLIENTS, and its IPv6
//! address (if any) in CLIENTS6 under the same id; one listed by its IPv6
//! address (a pod without IPv4) is in CLIENTS6 alone.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use anyhow::{bail, Result};
use egress_common::maps::CLIENT_ID_MAX;

use crate::{
    datapath::{conntrack, maps::DatapathMaps},
    pods::{ClientIdentity, ClientSnapshot},
};

/// A client as written to CLIENTS (or CLIENTS6 alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Index of its traffic counters in CLIENT_TRAFFIC.
    pub id: u32,
    pub identity: ClientIdentity,
    /// Taken over from a previous agent's map, identity unknown until the
    /// first snapshot names the pod that holds the address now.
    pub carried_over: bool,
    /// Its IPv6 address as written to CLIENTS6 beside its IPv4 one (the
    /// identity's, once known). None for a client listed by its IPv6
    /// address.
    pub ipv6: Option<Ipv6Addr>,
}

/// The clients written to CLIENTS and CLIENTS6, by tunnel address. It
/// starts empty, like the freshly loaded maps it mirrors, or from the maps
/// a previous agent filled.
#[derive(Default)]
pub struct ClientTable {
    clients: BTreeMap<IpAddr, Client>,
    /// Ids given back by clients that left, reused before new ones.
    free_ids: Vec<u32>,
    next_id: u32,
}

impl ClientTable {
    pub fn clients(&self) -> &BTreeMap<IpAddr, Client> {
        &self.clients
    }

    /// The table of a CLIENTS map carried over from a previous agent: the
    /// same ids, so flows and traffic counters go on. `known` are the
    /// identities that agent recorded: with one, an address the first
    /// snapshot gives to another pod loses its flows as usual; without one
    /// (a client added just before the previous agent died), the first
    /// snapshot's identity is taken as it is.
    ///
    /// An IPv6 address in CLIENTS6 is a client listed by it
    /// (`CLIENT_TUNNEL_IPV6`, an id no IPv4 client has), or the second
    /// address of an IPv4 client. Anything else (an address whose client
    /// was being removed when the previous agent stopped, a second one of
    /// one id) is removed, with its flows.
    pub fn carried_over(
        maps: &mut DatapathMaps,
        known: &BTreeMap<IpAddr, ClientIdentity>,
    ) -> Result<ClientTable> {
        let mut ids: BTreeMap<IpAddr, u32> =
            maps.client_ids()?.into_iter().map(|(ip, id)| (IpAddr::V4(ip), id)).collect();
        let by_ipv4: BTreeSet<u32> = ids.values().copied().collect();
        let listed_by_ipv6 = maps.ipv6_listed_clients()?;
        // Each id's one IPv6 address, whichever role it has.
        let mut ipv6_of: BTreeMap<u32, Ipv6Addr> = BTreeMap::new();
        for (ipv6, id) in maps.client6_ids()? {
            let role_fits = listed_by_ipv6.contains(&ipv6) != by_ipv4.contains(&id);
            if !role_fits || ipv6_of.contains_key(&id) {
                maps.remove_client6(ipv6)?;
                let flows = conntrack::forget_client_ipv6(maps, ipv6)?;
                tracing::info!(client = %ipv6, flows, "stale client IPv6 address removed");
                continue;
            }
            ipv6_of.insert(id, ipv6);
            if !by_ipv4.contains(&id) {
                ids.insert(IpAddr::V6(ipv6), id);
            }
        }
        let next_id = ids.values().copied().max().unwrap_or(0);
        let taken: BTreeSet<u32> = ids.values().copied().collect();
        let free_ids = (1..=next_id).filter(|id| !taken.contains(id)).collect();
        let clients = ids
            .into_iter()
            .map(|(ip, id)| {
                let ipv6 = if ip.is_ipv4() { ipv6_of.get(&id).copied() } else { None };
                let client = match known.get(&ip) {
                    Some(identity) => Client { id, identity: identity.clone(), carried_over: false, ipv6 },
                    None => Client { id, identity: ClientIdentity::default(), carried_over: true, ipv6 },
                };
                (ip, client)
            })
            .collect();
        Ok(ClientTable { clients, free_ids, next_id })
    }

    pub fn apply(&mut self, maps: &mut DatapathMaps, desired: &ClientSnapshot) -> Result<()> {
        // Gone, or the address now belongs to another pod: either way the
        // old holder's flows must not carry over to whoever has it now. (A
        // changed IPv6 address alone is the same pod's: below.)
        let gone: Vec<IpAddr> = self
            .clients
            .iter()
            .filter(|(ip, client)| match desired.get(ip) {
                None => true,
                Some(identity) => !client.carried_over && !identity.same_holder(&client.identity),
            })
            .map(|(ip, _)| *ip)
            .collect();
        for ip in gone {
            // Off the list first (no new flows), then its flows, and only
            // then out of our table: if removing a flow fails, the client
            // stays here, and the next attempt removes what is left instead
            // of leaving it to forward to the address's next owner.
            let flows = match ip {
                IpAddr::V4(ipv4) => {
                    // Its IPv6 address first: a stop in between leaves an
                    // IPv4 client without it, never an address of no one's.
                    if let Some(ipv6) = self.clients[&ip].ipv6 {
                        maps.remove_client6(ipv6)?;
                    }
                    maps.remove_client(ipv4)?;
                    conntrack::forget_client(maps, ipv4)?
                }
                IpAddr::V6(ipv6) => {
                    maps.remove_client6(ipv6)?;
                    conntrack::forget_client_ipv6(maps, ipv6)?
                }
            };
            let client = self.clients.remove(&ip).expect("listed above");
            self.free_ids.push(client.id);
            tracing::info!(client = %ip, identity = %client.identity, flows, "client removed");
        }
        // A client whose IPv6 address in CLIENTS6 is no longer its pod's
        // (carried over from a previous agent, given to a newer pod, or
        // edited in a pods file): off with its IPv6 flows, its IPv4 ones
        // untouched, and first, before any client is given that address.
        for (ip, client) in self.clients.iter_mut() {
            let Some(old) = client.ipv6 else { continue };
            if desired.get(ip).is_some_and(|identity| identity.ipv6 != Some(old)) {
                maps.remove_client6(old)?;
                let flows = conntrack::forget_client_ipv6(maps, old)?;
                client.ipv6 = None;
                tracing::info!(client = %ip, ipv6 = %old, flows, "client IPv6 address not the pod's, removed");
            }
        }
        for (ip, identity) in desired {
            if let Some(client) = self.clients.get_mut(ip) {
                if client.ipv6 != identity.ipv6 {
                    if let Some(ipv6) = identity.ipv6 {
                        maps.add_client6(ipv6, client.id)?;
                        client.ipv6 = Some(ipv6);
                    }
                }
                if client.carried_over {
                    client.carried_over = false;
                    tracing::info!(client = %ip, identity = %identity, "client carried over");
                }
                // The handover's record follows the IPv6 address.
                client.identity = identity.clone();
                continue;
            }
            let id = self.allocate_id()?;
            let added = match ip {
                IpAddr::V4(ipv4) => maps.add_client(*ipv4, id),
                IpAddr::V6(ipv6) => maps.add_ipv6_client(*ipv6, id),
            };
            if let Err(err) = added {
                self.free_ids.push(id);
                return Err(err);
            }
            self.clients
                .insert(*ip, Client { id, identity: identity.clone(), carried_over: false, ipv6: None });
            // After its IPv4: the IPv6 address is checked against the
            // client id of the tunnel it comes in. Recorded only once
            // written: a failure is retried by the next apply, as above.
            if let Some(ipv6) = identity.ipv6 {
                maps.add_client6(ipv6, id)?;
                self.clients.get_mut(ip).expect("inserted above").ipv6 = Some(ipv6);
            }
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
