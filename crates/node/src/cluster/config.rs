//! The cluster's shape, from a TOML file: its nodes (id, address) and its shards (id,
//! the nodes holding a replica). Every node of a cluster reads the same file.
//!
//! ```toml
//! [[nodes]]
//! id = 1
//! address = "127.0.0.1:3000"
//!
//! [[shards]]
//! id = 1
//! replicas = [1, 2, 3]
//! ```
//!
//! A node's id is also its Raft id in every shard it holds a replica of.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

/// Most replicas of one shard (Raft groups larger than this only slow commits down).
pub const REPLICAS_MAX: usize = 7;

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub nodes: Vec<NodeEntry>,
    pub shards: Vec<ShardEntry>,
    /// The atomic-commit protocol for transfers across shards: "2pc" (the default) or
    /// "3pc" (which also needs `allow_3pc`). A request may choose another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// 3PC is unsafe under network partitions: it runs only when this is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_3pc: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: u64,
    /// Where clients and the other nodes reach this node.
    pub address: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    pub id: u64,
    /// Node ids holding a replica: 1, 3 or 5 of them in practice (any 1..=7 accepted).
    pub replicas: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cluster config {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cluster config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("cluster config {path}: {message}")]
    Invalid { path: String, message: String },
}

impl ClusterConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        let config: ClusterConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: shown.clone(), message: e.to_string() })?;
        config.validate().map_err(|message| ConfigError::Invalid { path: shown, message })?;
        Ok(config)
    }

    /// The problem with this configuration, if any.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("no [[nodes]]".into());
        }
        if self.shards.len() > settle_commit::shard_map::SHARDS_MAX {
            return Err(format!(
                "{} [[shards]]: at most {} are supported",
                self.shards.len(),
                settle_commit::shard_map::SHARDS_MAX
            ));
        }
        if self.shards.is_empty() {
            return Err("no [[shards]]".into());
        }
        let mut ids = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for node in &self.nodes {
            if node.id == 0 {
                return Err("node id 0 is reserved".into());
            }
            if !ids.insert(node.id) {
                return Err(format!("node id {} appears twice", node.id));
            }
            if !addresses.insert(node.address) {
                return Err(format!("address {} appears twice", node.address));
            }
        }
        let mut shard_ids = BTreeSet::new();
        for shard in &self.shards {
            if shard.id == 0 {
                return Err("shard id 0 is reserved".into());
            }
            if shard.id > u64::from(u32::MAX) {
                return Err(format!("shard id {} is above {}", shard.id, u32::MAX));
            }
            if !shard_ids.insert(shard.id) {
                return Err(format!("shard id {} appears twice", shard.id));
            }
            if shard.replicas.is_empty() || shard.replicas.len() > REPLICAS_MAX {
                return Err(format!(
                    "shard {} has {} replicas; 1 to {REPLICAS_MAX} are allowed",
                    shard.id,
                    shard.replicas.len()
                ));
            }
            let distinct: BTreeSet<_> = shard.replicas.iter().collect();
            if distinct.len() != shard.replicas.len() {
                return Err(format!("shard {} lists a node twice", shard.id));
            }
            if let Some(unknown) = shard.replicas.iter().find(|id| !ids.contains(id)) {
                return Err(format!(
                    "shard {} names node {unknown}, which is not in [[nodes]]",
                    shard.id
                ));
            }
        }
        self.protocol()?;
        Ok(())
    }

    /// The cluster's default atomic-commit protocol.
    pub fn protocol(&self) -> Result<settle_commit::Protocol, String> {
        let name = self.protocol.as_deref().unwrap_or("2pc");
        settle_commit::Protocol::from_name(name)
            .ok_or_else(|| format!("unknown protocol {name:?}: expected 2pc, 3pc or paxos-commit"))
    }

    pub fn node(&self, id: u64) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The shard client requests go to until placement across shards exists: the one
    /// with the lowest id.
    pub fn default_shard(&self) -> u64 {
        self.shards.iter().map(|s| s.id).min().expect("validated: at least one shard")
    }

    /// A cluster of `addresses.len()` nodes (ids 1, 2, ...) and `shards` shards (ids 1,
    /// 2, ...), each replicated on all of them.
    /// The shard map a cluster starts with (version 1): the shards and their replicas as
    /// this file names them. The map in the metadata shard's group supersedes it once
    /// written (`settle_commit::shard_map`).
    pub fn shard_map(&self) -> settle_commit::ShardMap {
        let shards = self
            .shards
            .iter()
            .map(|s| settle_commit::ShardReplicas { shard: s.id, replicas: s.replicas.clone() })
            .collect();
        settle_commit::ShardMap::new(1, shards).expect("a validated config makes a map")
    }

    /// The shard whose group holds the cluster's shard map: the lowest id.
    pub fn metadata_shard(&self) -> u64 {
        self.shards.iter().map(|s| s.id).min().expect("a validated config has shards")
    }

    pub fn sharded(addresses: &[SocketAddr], shards: u64) -> ClusterConfig {
        let mut config = ClusterConfig::single_shard(addresses);
        let replicas = config.shards[0].replicas.clone();
        config.shards =
            (1..=shards).map(|id| ShardEntry { id, replicas: replicas.clone() }).collect();
        config
    }

    /// A cluster of `addresses.len()` nodes (ids 1, 2, ...) and one shard replicated
    /// on all of them.
    pub fn single_shard(addresses: &[SocketAddr]) -> ClusterConfig {
        let nodes: Vec<NodeEntry> = addresses
            .iter()
            .enumerate()
            .map(|(i, &address)| NodeEntry { id: i as u64 + 1, address })
            .collect();
        let replicas = nodes.iter().map(|n| n.id).collect();
        ClusterConfig {
            nodes,
            shards: vec![ShardEntry { id: 1, replicas }],
            protocol: None,
            allow_3pc: None,
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClusterConfig, String> {
        let config: ClusterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_three_node_cluster_parses_and_round_trips() {
        let addresses: Vec<SocketAddr> =
            (0..3).map(|i| format!("127.0.0.1:{}", 3000 + i).parse().unwrap()).collect();
        let config = ClusterConfig::single_shard(&addresses);
        assert_eq!(parse(&config.to_toml()), Ok(config.clone()));
        assert_eq!(config.default_shard(), 1);
        assert_eq!(config.node(2).unwrap().address, addresses[1]);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let node = "[[nodes]]\nid = 1\naddress = \"127.0.0.1:1\"\n";
        let cases = [
            ("", "missing field `nodes`"),
            (node, "missing field `shards`"),
            (&format!("{node}[[shards]]\nid = 1\nreplicas = [2]\n"), "names node 2"),
            (&format!("{node}[[shards]]\nid = 1\nreplicas = []\n"), "has 0 replicas"),
            (&format!("{node}{node}[[shards]]\nid = 1\nreplicas = [1]\n"), "appears twice"),
            (&format!("{node}[[shards]]\nid = 1\nreplicas = [1]\ncolour = 2\n"), "unknown field"),
            ("[[nodes]]\nid = 1\naddress = \"nowhere\"\n", "invalid socket address"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
