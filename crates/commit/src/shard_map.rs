//! The shard map: which shards the accounts are placed on, and which nodes hold each
//! shard's replicas. The cluster's replicated metadata (the coordination-service role):
//! it lives in the *metadata shard*'s group (the lowest shard id), written by
//! `Record::ShardMap` entries and kept in that shard's snapshots, so every replica of
//! that shard holds the same map at the same log position.
//!
//! Placement is [`crate::placement::shard_of`] over the shard ids in ascending order;
//! the replica sets change with membership changes. Each version is one more than the
//! one it replaces; a replica applies a map only when its version is higher than the
//! one it holds, so a late or repeated entry changes nothing.
//!
//! Pure: no IO.

use crate::placement::shard_of;

/// Most shards a map holds (far above any cluster this code runs), and most replicas
/// per shard: bounds on what a decoded map may claim.
pub const SHARDS_MAX: usize = 1 << 12;
pub const REPLICAS_MAX: usize = 16;

/// One shard and the nodes holding its replicas (Raft voters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardReplicas {
    pub shard: u64,
    /// Node ids, ascending.
    pub replicas: Vec<u64>,
}

/// The cluster's shard map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    /// 1 for the map a cluster starts with, one more for each change.
    pub version: u64,
    /// By shard id, ascending; placement indexes into this.
    pub shards: Vec<ShardReplicas>,
}

impl ShardMap {
    /// A map of `shards` (any order; replica lists sorted here); `None` when it is
    /// empty, too large, names a shard twice, or has a shard without replicas.
    pub fn new(version: u64, mut shards: Vec<ShardReplicas>) -> Option<ShardMap> {
        shards.sort_unstable_by_key(|entry| entry.shard);
        for entry in &mut shards {
            entry.replicas.sort_unstable();
            entry.replicas.dedup();
        }
        let valid = !shards.is_empty()
            && shards.len() <= SHARDS_MAX
            && shards.windows(2).all(|pair| pair[0].shard < pair[1].shard)
            && shards.iter().all(|e| !e.replicas.is_empty() && e.replicas.len() <= REPLICAS_MAX);
        valid.then_some(ShardMap { version, shards })
    }

    /// The shard that holds account `id`.
    pub fn shard_of(&self, id: u128) -> u64 {
        self.shards[shard_of(id, self.shards.len() as u32) as usize].shard
    }

    /// The nodes holding `shard`'s replicas, if the map has it.
    pub fn replicas(&self, shard: u64) -> Option<&[u64]> {
        let found = self.shards.binary_search_by_key(&shard, |entry| entry.shard).ok()?;
        Some(&self.shards[found].replicas)
    }

    /// The next version, with `shard`'s replicas replaced; `None` when the map has no
    /// such shard, the replicas are empty or too many, or nothing would change.
    pub fn with_replicas(&self, shard: u64, replicas: &[u64]) -> Option<ShardMap> {
        let mut replicas = replicas.to_vec();
        replicas.sort_unstable();
        replicas.dedup();
        if replicas.is_empty() || replicas.len() > REPLICAS_MAX {
            return None;
        }
        let found = self.shards.binary_search_by_key(&shard, |entry| entry.shard).ok()?;
        if self.shards[found].replicas == replicas {
            return None;
        }
        let mut next = self.clone();
        next.version += 1;
        next.shards[found].replicas = replicas;
        Some(next)
    }

    /// The metadata shard: the one whose group holds the map.
    pub fn metadata_shard(&self) -> u64 {
        self.shards[0].shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        let shard = |shard, replicas: &[u64]| ShardReplicas { shard, replicas: replicas.to_vec() };
        ShardMap::new(1, vec![shard(7, &[3, 1, 2]), shard(4, &[1])]).expect("a map")
    }

    #[test]
    fn shards_sort_and_place_as_the_rule_says() {
        let map = map();
        assert_eq!(map.metadata_shard(), 4);
        assert_eq!(map.replicas(7), Some(&[1, 2, 3][..]));
        for id in 1..100u128 {
            assert_eq!(map.shard_of(id), [4, 7][shard_of(id, 2) as usize]);
        }
        assert!(ShardMap::new(1, vec![]).is_none());
        let twice = vec![map.shards[0].clone(), map.shards[0].clone()];
        assert!(ShardMap::new(1, twice).is_none());
    }

    #[test]
    fn a_change_of_replicas_is_the_next_version() {
        let map = map();
        let next = map.with_replicas(7, &[2, 3, 4]).expect("changed");
        assert_eq!((next.version, next.replicas(7)), (2, Some(&[2, 3, 4][..])));
        assert_eq!(next.replicas(4), map.replicas(4));
        assert!(map.with_replicas(7, &[3, 2, 1]).is_none(), "nothing changes");
        assert!(map.with_replicas(9, &[1]).is_none(), "no such shard");
        assert!(map.with_replicas(7, &[]).is_none());
    }
}
