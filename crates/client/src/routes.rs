//! Routing by the cluster's shard map: the client sends each part of a write batch to
//! a node that holds the part's home shard (its leader, once a reply named it), so the
//! node it reaches runs the part instead of forwarding it.
//!
//! The map comes from `GetShardMap` (a standalone node has none: everything goes to
//! the node in use, as before). It is only advice: a node that does not hold the
//! shard any more (the map moved it) forwards the part by its own map, and every write
//! reply names the map version that node knows (`settle-map-version`); a newer one
//! than the client's makes it fetch the map again. Placement itself (which shard holds
//! an account) does not change with versions: only where the replicas are.

use std::collections::HashMap;

use settle_commit::ShardMap;
use settle_ledger::Transfer;
use settle_proto::pb;

/// The metadata key of the map version a node knows, on its write replies.
pub(crate) const MAP_VERSION_KEY: &str = "settle-map-version";

/// What the client knows of where shards live.
#[derive(Clone, Debug)]
pub(crate) struct Routes {
    pub map: ShardMap,
    /// Each node's client address.
    addresses: HashMap<u64, String>,
    /// Each shard's leader, as replies named it (an address).
    leaders: HashMap<u64, String>,
}

impl Routes {
    /// The routes of a `GetShardMap` reply; `None` when it is not a valid map.
    pub fn from_reply(reply: &pb::ShardMapReply) -> Option<Routes> {
        let shards = reply
            .shards
            .iter()
            .map(|s| settle_commit::ShardReplicas { shard: s.shard, replicas: s.replicas.clone() })
            .collect();
        let map = ShardMap::new(reply.version, shards)?;
        let addresses = reply.nodes.iter().map(|n| (n.id, n.address.clone())).collect();
        Some(Routes { map, addresses, leaders: HashMap::new() })
    }

    /// Where to send a part whose home is `shard`: its leader if a reply named it, else
    /// the first of its replicas whose address the map gives.
    pub fn address_of(&self, shard: u64) -> Option<&str> {
        if let Some(leader) = self.leaders.get(&shard) {
            return Some(leader);
        }
        let replicas = self.map.replicas(shard)?;
        replicas.iter().find_map(|node| self.addresses.get(node)).map(String::as_str)
    }

    /// A reply to a part whose home is `shard` named `leader` (the node it was
    /// forwarded to): send that shard's parts there.
    pub fn learn_leader(&mut self, shard: u64, leader: &str) {
        self.leaders.insert(shard, leader.to_string());
    }

    /// The leader learnt for `shard` did not answer: go by the map again.
    pub fn forget_leader(&mut self, shard: u64) {
        self.leaders.remove(&shard);
    }

    /// `transfers` split by home shard (a unit's home: its first transfer's debit
    /// account's shard, as the nodes route it), each part in request order; a linked
    /// chain is never split.
    pub fn split(&self, transfers: &[Transfer]) -> Vec<(u64, Vec<usize>)> {
        let mut parts: Vec<(u64, Vec<usize>)> = Vec::new();
        for unit in settle_commit::units_of(transfers) {
            let home = self.map.shard_of(transfers[unit.start].debit_account_id);
            match parts.iter_mut().find(|(shard, _)| *shard == home) {
                Some((_, events)) => events.extend(unit),
                None => parts.push((home, unit.collect())),
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_ledger::TransferFlags;

    fn routes() -> Routes {
        let shard = |shard, replicas: Vec<u64>| pb::ShardReplicas { shard, replicas };
        let node = |id: u64| pb::NodeAddress { id, address: format!("127.0.0.1:{}", 3000 + id) };
        let reply = pb::ShardMapReply {
            version: 2,
            shards: vec![shard(1, vec![1, 2]), shard(2, vec![2, 3])],
            nodes: vec![node(1), node(2), node(3)],
        };
        Routes::from_reply(&reply).expect("a valid map")
    }

    #[test]
    fn parts_go_to_their_home_and_chains_stay_whole() {
        let routes = routes();
        let on = |shard: u64| (1..1000u128).find(|&id| routes.map.shard_of(id) == shard).unwrap();
        let (a, b) = (on(1), on(2));
        let t = |debit, linked| Transfer {
            debit_account_id: debit,
            flags: if linked { TransferFlags::LINKED } else { TransferFlags::empty() },
            ..Default::default()
        };
        // a, b, chain [b (linked), a], a
        let transfers = [t(a, false), t(b, false), t(b, true), t(a, false), t(a, false)];
        assert_eq!(routes.split(&transfers), vec![(1, vec![0, 4]), (2, vec![1, 2, 3])]);
    }

    #[test]
    fn a_named_leader_wins_over_the_first_replica() {
        let mut routes = routes();
        assert_eq!(routes.address_of(2), Some("127.0.0.1:3002"));
        routes.learn_leader(2, "127.0.0.1:3003");
        assert_eq!(routes.address_of(2), Some("127.0.0.1:3003"));
        assert_eq!(routes.address_of(9), None);
        let bad = pb::ShardMapReply { version: 1, shards: vec![], nodes: vec![] };
        assert!(Routes::from_reply(&bad).is_none());
    }
}
