//! Raft messages between nodes, over gRPC (`settle.v1.Peer`).
//!
//! Outbound: the engine queues each message for its destination node ([`Outbound`]);
//! once per engine loop the queued messages leave as one batch per node, to a task per
//! peer that sends them in order over one HTTP/2 connection, merging batches that piled
//! up while the previous one was in flight. Queues are bounded: when a peer cannot keep
//! up, messages are dropped, which Raft tolerates (it resends). Snapshot messages report
//! back whether they were delivered.
//!
//! Inbound: [`PeerService`] decodes each message and offers it to the engine.
//!
//! Touches: sockets to the other nodes, the engine's inbox.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use settle_proto::pb;
use settle_replica::decode_message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::engine::{offer, Input};

/// Batches waiting per peer before new ones are dropped.
const PEER_QUEUE_MAX: usize = 64;
/// Largest message between nodes: snapshots travel whole, and protobuf messages stop
/// at 2 GiB. (Sending snapshots in chunks would lift this limit on a shard's state.)
pub const PEER_MESSAGE_BYTES_MAX: usize = (2 << 30) - 1;
/// Merge waiting batches up to about this many bytes per RPC.
const MERGE_BYTES_MAX: usize = 32 << 20;

#[derive(Default)]
struct Batch {
    messages: Vec<pb::PeerMessage>,
    bytes: usize,
    /// (shard, to) of the snapshot messages inside.
    snapshots: Vec<(u64, u64)>,
}

impl Batch {
    fn merge(&mut self, other: Batch) {
        self.messages.extend(other.messages);
        self.bytes += other.bytes;
        self.snapshots.extend(other.snapshots);
    }
}

/// The engine's side: per-peer queues.
pub struct Outbound {
    peers: BTreeMap<u64, mpsc::Sender<Batch>>,
    pending: BTreeMap<u64, Batch>,
}

impl Outbound {
    /// Starts one sending task per peer (every node of `peers` but `self_id`).
    pub fn start(
        self_id: u64,
        peers: impl Iterator<Item = (u64, SocketAddr)>,
        inbox: SyncSender<Input>,
    ) -> Outbound {
        let mut senders = BTreeMap::new();
        for (id, address) in peers.filter(|(id, _)| *id != self_id) {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_MAX);
            tokio::spawn(send_to_peer(self_id, address, receiver, inbox.clone()));
            senders.insert(id, sender);
        }
        Outbound { peers: senders, pending: BTreeMap::new() }
    }

    /// Queues `raft` (an encoded message of `shard`) for node `to`. False when `to` is
    /// not a known peer.
    pub fn queue(&mut self, to: u64, shard: u64, raft: Vec<u8>, snapshot: bool) -> bool {
        if !self.peers.contains_key(&to) {
            return false;
        }
        let batch = self.pending.entry(to).or_default();
        batch.bytes += raft.len();
        if snapshot {
            batch.snapshots.push((shard, to));
        }
        let (commit, from_shard, acceptor) = (Vec::new(), 0, 0);
        batch.messages.push(pb::PeerMessage { shard, raft, commit, from_shard, acceptor });
        true
    }

    /// Queues a cross-shard protocol message (encoded) from `from_shard` to `shard`'s
    /// replica on node `to` (`acceptor` 0), or to acceptor `acceptor - 1` of `shard`
    /// there. False when `to` is not a known peer.
    pub fn queue_commit(
        &mut self,
        to: u64,
        shard: u64,
        from_shard: u64,
        commit: Vec<u8>,
        acceptor: u32,
    ) -> bool {
        if !self.peers.contains_key(&to) {
            return false;
        }
        let batch = self.pending.entry(to).or_default();
        batch.bytes += commit.len();
        batch.messages.push(pb::PeerMessage {
            shard,
            raft: Vec::new(),
            commit,
            from_shard,
            acceptor,
        });
        true
    }

    /// Hands the queued batches to the peer tasks. Returns the (shard, to) of snapshot
    /// messages dropped because a peer's queue was full.
    pub fn flush(&mut self) -> Vec<(u64, u64)> {
        let mut dropped = Vec::new();
        for (to, batch) in std::mem::take(&mut self.pending) {
            let sender = &self.peers[&to];
            if let Err(error) = sender.try_send(batch) {
                let batch = match error {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                };
                dropped.extend(batch.snapshots);
            }
        }
        dropped
    }
}

async fn send_to_peer(
    self_id: u64,
    address: SocketAddr,
    mut batches: mpsc::Receiver<Batch>,
    inbox: SyncSender<Input>,
) {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("a socket address is a valid URI")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(16 << 20);
    let mut client = pb::peer_client::PeerClient::new(endpoint.connect_lazy())
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let mut failing = false;
    while let Some(mut batch) = batches.recv().await {
        while batch.bytes < MERGE_BYTES_MAX {
            match batches.try_recv() {
                Ok(more) => batch.merge(more),
                Err(_) => break,
            }
        }
        let request = pb::PeerMessages { from_node: self_id, messages: batch.messages };
        let delivered = match client.deliver(request).await {
            Ok(_) => true,
            Err(status) => {
                if !failing {
                    tracing::debug!(%address, %status, "cannot reach peer");
                }
                false
            }
        };
        failing = !delivered;
        for (shard, to) in batch.snapshots {
            offer(&inbox, Input::SnapshotStatus { shard, to, delivered });
        }
    }
}

/// The receiving side of `settle.v1.Peer`.
pub struct PeerService {
    pub node_id: u64,
    pub inbox: SyncSender<Input>,
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn deliver(
        &self,
        request: Request<pb::PeerMessages>,
    ) -> Result<Response<pb::PeerAck>, Status> {
        let batch = request.into_inner();
        for message in batch.messages {
            if !message.commit.is_empty() {
                let commit =
                    settle_commit::codec::decode_message(&message.commit).map_err(|e| {
                        Status::invalid_argument(format!("undecodable commit message: {e}"))
                    })?;
                let (shard, from_shard) = (message.shard, message.from_shard);
                let acceptor =
                    match message.acceptor {
                        0 => None,
                        i => Some(u8::try_from(i - 1).map_err(|_| {
                            Status::invalid_argument(format!("no acceptor {}", i - 1))
                        })?),
                    };
                offer(&self.inbox, Input::Commit { shard, from_shard, message: commit, acceptor });
                continue;
            }
            let raft = decode_message(&message.raft)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            if raft.to != self.node_id {
                return Err(Status::invalid_argument(format!(
                    "message for node {} sent to node {}",
                    raft.to, self.node_id
                )));
            }
            offer(&self.inbox, Input::Peer { shard: message.shard, message: raft });
        }
        Ok(Response::new(pb::PeerAck {}))
    }
}
