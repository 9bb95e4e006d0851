//! A node of a replicated cluster: it holds one replica of each shard the cluster
//! configuration assigns it, replicates through Raft with the other nodes, and serves
//! clients. A node that does not lead a shard refuses requests for it with
//! `UNAVAILABLE` and the leader's address in the `settle-leader` metadata key, which
//! `settle-client` follows.
//!
//! Layout: `config` (the TOML file), `log` (the shared log file), `engine` (the thread
//! driving the replicas, and its syncer), `apply` (the threads that apply shards at
//! once), `transport` (Raft messages over gRPC),
//! `admin` (membership changes over gRPC).
//!
//! Lifecycle. `ClusterNode::start` takes the data directory's lock, reads the shared log
//! back (torn tail cut, corruption refused), rebuilds each replica from its records,
//! starts the engine, and serves the client and peer services on the node's address.
//! `ClusterNode::shutdown` stops serving, stops the engine (waiting clients are told),
//! and lets the syncer finish.

/// The target of the events that lay out where a request's time goes, off unless
/// asked for (`RUST_LOG=settle::timeline=trace`): the engine's wakeups, its syncs and
/// the syncer's write and fsync, each replica's poll (and on which thread), requests
/// of transactions in and answered, the router's requests in, sent to the engine and
/// out. Each line has the subscriber's timestamp (microseconds): ordered, they are
/// the timeline of a batch. (Each event is one check of a cached flag when off.)
pub(crate) const TIMELINE: &str = "settle::timeline";

mod admin;
mod apply;
pub mod config;
pub mod engine;
mod log;
pub mod router;
mod snapshots;
mod transport;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;

use settle_proto::pb::admin_server::AdminServer;
use settle_proto::pb::peer_server::PeerServer;
use settle_replica::{durable, ConfState, Record, Replica};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::executor::Request;
use crate::{lock, NodeError};
pub use config::{ClusterConfig, ConfigError};
pub use engine::Stats;
use engine::{offer, Engine, EngineConfig, Input};

/// How to run one node of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub cluster: ClusterConfig,
    pub node_id: u64,
    pub data_dir: PathBuf,
    /// fsync before acknowledging. Only experiments turn this off.
    pub fsync: bool,
    /// How the replicas checkpoint and when the shared log is rewritten.
    pub tuning: Tuning,
}

/// Knobs with production defaults; tests turn them down to exercise the rare paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// A replica snapshots its ledger and compacts its log every this many entries (a
    /// snapshot is the whole state: protocol rounds make many small entries)...
    pub checkpoint_entries: u64,
    /// ...or once its entries take this many bytes (a quarter of it is kept behind).
    pub checkpoint_bytes: u64,
    /// The shared log is rewritten from memory once this large (and twice what the
    /// rewrite would write).
    pub log_rewrite_bytes: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { checkpoint_entries: 4096, checkpoint_bytes: 256 << 20, log_rewrite_bytes: 1 << 30 }
    }
}

/// A replica's settings on this node: its ledger keeps transfer records in
/// `shard-<id>.records.<generation>` files in the data directory.
///
/// (Builds whose checkpoints held every record named them `shard-<id>.transfers.<n>`
/// and removed them all at start: the new name keeps a downgrade from destroying what
/// a newer checkpoint refers to; the older build then refuses the checkpoint's format.)
pub(crate) fn replica_config(
    node_id: u64,
    shard: u64,
    data_dir: &std::path::Path,
    seed: u64,
    tuning: Tuning,
    replicas: usize,
) -> settle_replica::Config {
    let mut config = settle_replica::Config::new(node_id, seed);
    config.checkpoint_entries = tuning.checkpoint_entries;
    // A follower slowed down (a busy machine) should not need the whole state: keep a
    // quarter of the checkpoint interval behind each checkpoint.
    config.keep_entries = (tuning.checkpoint_entries / 4).max(1);
    config.checkpoint_bytes = tuning.checkpoint_bytes;
    config.keep_bytes = tuning.checkpoint_bytes / 4;
    let transfers_file = data_dir.join(format!("shard-{shard}.records"));
    config.transfers_file = Some(transfers_file.clone());
    config.shard = u32::try_from(shard).expect("the config keeps shard ids below 2^32");
    config.commit = settle_commit::Config::new(acceptors_of(replicas));
    let dir = data_dir.to_path_buf();
    config.snapshot_loader =
        Some(settle_replica::SnapshotLoader(std::sync::Arc::new(move |index| {
            // For a follower: a checkpoint that refers to this node's transfers file
            // gets the records it refers to copied in.
            let data = snapshots::read(&dir, shard, index)?;
            let file_of = |generation| settle_replica::generation_path(&transfers_file, generation);
            settle_ledger::store::expand_snapshot(data, file_of).map_err(std::io::Error::other)
        })));
    config
}

/// Paxos Commit acceptors of a shard with `replicas` replicas: one per replica, an odd
/// number (2F+1), so an even group leaves its last replica without one.
pub(crate) fn acceptors_of(replicas: usize) -> u8 {
    let odd = if replicas % 2 == 1 { replicas } else { replicas.saturating_sub(1).max(1) };
    u8::try_from(odd).expect("at most 7 replicas")
}

/// Removes `shard`'s transfers files but those of the generations `keep` names: at
/// start, all but the one its replica uses (which its checkpoint may refer to); at run
/// time, those before the generation the log's latest snapshot record needs. Files an
/// older build left (`shard-<id>.transfers.<n>`, never referred to) go too. Failing to
/// delete only wastes space, so it is logged, not fatal.
pub(crate) fn remove_transfer_files(
    data_dir: &std::path::Path,
    shard: u64,
    keep: impl Fn(u64) -> bool,
) {
    let (prefix, legacy) = (format!("shard-{shard}.records."), format!("shard-{shard}.transfers."));
    let Ok(entries) = std::fs::read_dir(data_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let remove = match name.strip_prefix(&prefix) {
            Some(generation) => !generation.parse().is_ok_and(&keep),
            None => name.starts_with(&legacy),
        };
        if remove {
            if let Err(error) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = name, %error, "cannot remove an old transfers file");
            }
        }
    }
}

/// A running cluster node.
pub struct ClusterNode {
    local_addr: SocketAddr,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    forwarder: JoinHandle<()>,
    inbox: SyncSender<Input>,
    engine: std::thread::JoinHandle<Result<(), NodeError>>,
    /// Notified when the engine's thread ends.
    engine_ended: std::sync::Arc<tokio::sync::Notify>,
    stats: std::sync::Arc<Stats>,
}

impl ClusterNode {
    pub async fn start(options: ClusterOptions) -> Result<ClusterNode, NodeError> {
        let cluster = options.cluster.clone();
        cluster.validate().map_err(NodeError::Config)?;
        let node_id = options.node_id;
        let me = cluster
            .node(node_id)
            .ok_or_else(|| {
                NodeError::Config(format!("node {node_id} is not in the cluster config"))
            })?
            .clone();
        let lock = lock(&options.data_dir)?;
        let dir = options.data_dir.clone();
        let recovered = tokio::task::spawn_blocking(move || log::GroupLog::open(&dir))
            .await
            .map_err(|_| NodeError::ThreadPanicked("recovery"))??;
        let records = recovered.records;
        let (dir, tuning) = (options.data_dir.clone(), options.tuning);
        let cluster_copy = cluster.clone();
        let (replicas, acceptors) = tokio::task::spawn_blocking(move || {
            build_replicas(&cluster_copy, node_id, &dir, tuning, records)
        })
        .await
        .map_err(|_| NodeError::ThreadPanicked("recovery"))??;
        tracing::info!(
            node = node_id,
            shards = ?replicas.keys().collect::<Vec<_>>(),
            truncated_bytes = recovered.truncated_bytes,
            "recovered"
        );
        if !options.fsync {
            tracing::warn!("fsync is OFF: acknowledged requests can be lost on a crash");
        }

        let (listener, local_addr) = crate::bind(me.address).await?;

        let (inbox_sender, inbox) = std::sync::mpsc::sync_channel(engine::INBOX_MAX);
        let stats = std::sync::Arc::new(Stats::default());
        let leaders = router::Leaders::default();
        let shard_map = router::SharedMap::default();
        let peers = cluster.nodes.iter().map(|n| (n.id, n.address));
        let outbound = transport::Outbound::start(node_id, peers, inbox_sender.clone());
        let engine_config = EngineConfig {
            node_id,
            data_dir: options.data_dir.clone(),
            cluster,
            fsync: options.fsync,
            seed: seed(node_id),
            tuning: options.tuning,
            stats: stats.clone(),
            leaders: leaders.clone(),
            shard_map: shard_map.clone(),
        };
        let engine = Engine::new(
            engine_config,
            replicas,
            recovered.log,
            (inbox_sender.clone(), inbox),
            outbound,
            acceptors,
        )?;
        let engine_ended = std::sync::Arc::new(tokio::sync::Notify::new());
        let ended = crate::ExitNotice(engine_ended.clone());
        let engine = std::thread::Builder::new()
            .name("settle-engine".into())
            .spawn(move || {
                // Tells the node when the engine stops (a failed write, fsync or
                // replica), however it stops.
                let _ended = ended;
                // Held for as long as the engine may write.
                let _lock = lock;
                engine.run()
            })
            .map_err(NodeError::Thread)?;

        let (requests, mut received) = mpsc::channel::<Request>(engine::INPUT_BATCH_MAX);
        let to_engine = inbox_sender.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(request) = received.recv().await {
                offer(&to_engine, Input::Request(request));
            }
        });
        let admin = AdminServer::new(admin::AdminService { inbox: inbox_sender.clone() });
        let peer = PeerServer::new(transport::PeerService { node_id, inbox: inbox_sender.clone() })
            .max_decoding_message_size(transport::PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(transport::PEER_MESSAGE_BYTES_MAX);
        let (stop_server, stopped) = oneshot::channel::<()>();
        let gateway =
            router::Router::new(node_id, requests, options.cluster.clone(), leaders, shard_map);
        let router = crate::grpc_server()
            .add_service(crate::ledger_server(gateway))
            .add_service(peer)
            .add_service(admin);
        let server = tokio::spawn(crate::serve(router, listener, stopped));
        tracing::info!(node = node_id, %local_addr, "serving");
        Ok(ClusterNode {
            local_addr,
            stop_server,
            server,
            forwarder,
            inbox: inbox_sender,
            engine,
            engine_ended,
            stats,
        })
    }

    /// Notified when this node can no longer serve on its own account (its engine
    /// stopped after a failed write, fsync or replica): then call
    /// [`ClusterNode::shutdown`], which returns the error.
    pub fn stop_notice(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.engine_ended.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops serving, then stops the engine. Returns the first error the node met.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop_server.send(());
        let served = self.server.await;
        self.forwarder.abort();
        let _ = self.forwarder.await;
        let inbox = self.inbox;
        let engine = self.engine;
        let outcome = tokio::task::spawn_blocking(move || {
            // Blocking send: Stop must get through even when the inbox is full.
            let _ = inbox.send(Input::Stop);
            engine.join()
        })
        .await
        .map_err(|_| NodeError::ThreadPanicked("shutdown"))?
        .map_err(|_| NodeError::ThreadPanicked("engine"))?;
        outcome?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(NodeError::Server(error.to_string())),
            Err(_) => Err(NodeError::ThreadPanicked("server")),
        }
    }
}

/// The Paxos Commit acceptors a node holds, by shard.
type Acceptors = BTreeMap<u64, settle_commit::AcceptorCore>;

/// One replica per shard that lists this node, each rebuilt from its records.
fn build_replicas(
    cluster: &ClusterConfig,
    node_id: u64,
    data_dir: &std::path::Path,
    tuning: Tuning,
    records: Vec<(u64, Record)>,
) -> Result<(BTreeMap<u64, Replica>, Acceptors), NodeError> {
    let mut by_shard: BTreeMap<u64, Vec<Record>> = BTreeMap::new();
    // Acceptor records, per shard, oldest first: the latest of a transaction wins.
    let mut acceptor_states: BTreeMap<u64, BTreeMap<u128, settle_commit::AcceptorTxn>> =
        BTreeMap::new();
    for (shard, record) in records {
        if let Record::Acceptor(bytes) = &record {
            let state = settle_commit::codec::decode_acceptor(bytes).map_err(|e| {
                NodeError::Config(format!("shard {shard}: an acceptor record does not decode: {e}"))
            })?;
            acceptor_states.entry(shard).or_default().insert(state.txn.id(), state);
            continue;
        }
        by_shard.entry(shard).or_default().push(record);
    }
    let mut acceptors = BTreeMap::new();
    for shard in &cluster.shards {
        let Some(index) = shard.replicas.iter().position(|&n| n == node_id) else { continue };
        if index >= usize::from(acceptors_of(shard.replicas.len())) {
            continue;
        }
        let durable = acceptor_states.remove(&shard.id).unwrap_or_default();
        acceptors.insert(shard.id, settle_commit::AcceptorCore::new(index as u8, durable));
    }
    let mut replicas = BTreeMap::new();
    // The file's replica lists are each shard's first configuration; later changes
    // live in the shard's log. So a shard is held here if the file gives it to this
    // node, or if the log has records of it (this node was added later).
    let held =
        |s: &&config::ShardEntry| s.replicas.contains(&node_id) || by_shard.contains_key(&s.id);
    let held: Vec<&config::ShardEntry> = cluster.shards.iter().filter(held).collect();
    for shard in held {
        let conf = ConfState { voters: shard.replicas.clone(), ..Default::default() };
        let mut log = durable::recover(conf, by_shard.remove(&shard.id).unwrap_or_default());
        // The log names the latest snapshot; its data is in its own file.
        let index = log.latest_snapshot().get_metadata().index;
        if index > 0 && log.latest_snapshot().data.is_empty() {
            let data = snapshots::read(data_dir, shard.id, index).map_err(|source| {
                NodeError::DataDir { path: snapshots::path(data_dir, shard.id, index), source }
            })?;
            log.attach_snapshot_data(data);
        }
        snapshots::remove_others(data_dir, shard.id, index, false);
        let seed = seed(node_id) ^ shard.id;
        let config =
            replica_config(node_id, shard.id, data_dir, seed, tuning, shard.replicas.len());
        let replica = Replica::new(config, log)
            .map_err(|halt| NodeError::Config(format!("shard {}: {halt}", shard.id)))?;
        let generation = replica.transfers_generation();
        remove_transfer_files(data_dir, shard.id, |g| g == generation);
        replicas.insert(shard.id, replica);
    }
    if let Some(shard) = by_shard.keys().next() {
        return Err(NodeError::Config(format!(
            "the log holds shard {shard}, which the cluster config does not give node {node_id}"
        )));
    }
    Ok((replicas, acceptors))
}

/// Election timeouts need only differ between nodes and runs; the simulator is where
/// they are seeded for replay.
fn seed(node_id: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    now ^ node_id.rotate_left(32)
}
