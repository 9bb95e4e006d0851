//! The engine: the one thread that drives every replica this node holds (the
//! production shell around `settle_replica::Replica`), and the syncer thread behind it.
//!
//! Loop: take the inputs waiting (client requests, peer messages, sync completions; up
//! to [`INPUT_BATCH_MAX`]), tick every replica when a tick is due (one timer for all
//! groups), then poll every replica (those with entries to apply at the same time: the
//! `apply` pool) and carry out its output, in shard order: messages go to the
//! transport, grouped per destination node; records of all groups are appended to the
//! shared log in one write; replies go to clients. When the syncer is idle and there is
//! something to make durable, it gets one job: one fsync covering every group's
//! records, after which each replica is told its ready is persisted (only then do its
//! votes and append acks leave). Execution of the next batch overlaps the fsync.
//!
//! Touches: the replicas, the shared log, the syncer thread, the transport's queues.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::PoisonError;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use settle_ledger::{Reply, BATCH_EVENTS_MAX};
use settle_replica::{encode_message, Message, MessageType, Record, Refusal, Replica, Token};
use tokio::sync::oneshot;

use super::apply::ApplyPool;
use super::config::ClusterConfig;
use super::log::GroupLog;
use super::snapshots;
use super::transport::Outbound;
use super::TIMELINE;
use crate::executor::{Command, Request};
use crate::NodeError;

/// Inputs taken per loop iteration before the replicas are polled.
pub const INPUT_BATCH_MAX: usize = 256;
/// Inputs waiting for the engine; beyond, client requests are refused `Busy` and peer
/// messages dropped (Raft resends).
pub const INBOX_MAX: usize = 8192;
/// Client requests in flight inside the engine.
pub const WAITING_MAX: usize = 4096;
/// The Raft tick: heartbeats every 2 ticks, elections after 10 to 20 without a leader.
pub const TICK: Duration = Duration::from_millis(20);
/// Every this many ticks (1 s), each leader here reports its replicas for the shard map.
const MAP_TICKS: u64 = 50;
/// A cross-shard transaction not answered within this long is answered "outcome
/// unknown" (its coordinator may have lost leadership); the client's retry is safe.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(10);
/// A log rewrite puts its file in place once what came in during its last round is at
/// most this large (the engine thread writes and fsyncs it)...
const REWRITE_SWAP_BYTES: usize = 8 << 20;
/// ...or after this many rounds on its thread (the log may grow faster than a busy disk
/// takes it).
const REWRITE_ROUNDS_MAX: u32 = 4;

/// One transaction's results, one per transfer.
type TxnResults = Vec<settle_ledger::CreateTransferResult>;

pub enum Input {
    Request(Request),
    /// What each replica on this node knows of its shard.
    Status {
        reply: oneshot::Sender<settle_proto::pb::StatusReply>,
    },
    /// Add or remove `node` as a replica of `shard`; answered with the new voters.
    ChangeReplicas {
        shard: u64,
        node: u64,
        remove: bool,
        reply: oneshot::Sender<Result<Vec<u64>, NodeError>>,
    },
    Peer {
        shard: u64,
        message: Message,
    },
    /// A cross-shard protocol message for `shard`'s leader (or, with `acceptor`, for that
    /// Paxos Commit acceptor of `shard` on this node), from `from_shard`.
    Commit {
        shard: u64,
        from_shard: u64,
        message: settle_commit::Message,
        acceptor: Option<u8>,
    },
    SnapshotStatus {
        shard: u64,
        to: u64,
        delivered: bool,
    },
    /// A sync job done: its readies are durable (its buffer is for reuse).
    Synced(Result<SyncJob, std::io::Error>),
    /// A log rewrite's file is written and durable (the file and its length): the base,
    /// or one more round of what followed it; or why not.
    LogRewritten(std::io::Result<(File, u64)>),
    /// A checkpoint's file is written, or why not. (The data stays in the file: the
    /// replica's snapshot loader reads it back.)
    CheckpointWritten {
        shard: u64,
        index: u64,
        outcome: Result<(), String>,
    },
    Stop,
}

/// Counters the engine keeps for operators and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub log_rewrites: std::sync::atomic::AtomicU64,
    pub syncs: std::sync::atomic::AtomicU64,
}

pub struct EngineConfig {
    pub node_id: u64,
    pub data_dir: std::path::PathBuf,
    pub cluster: ClusterConfig,
    pub fsync: bool,
    pub seed: u64,
    pub tuning: super::Tuning,
    pub stats: std::sync::Arc<Stats>,
    /// Who leads each shard held here, for the router.
    pub leaders: super::router::Leaders,
    /// The cluster's shard map as this node's replica of the metadata shard holds it
    /// (if it holds one), for the router.
    pub shard_map: super::router::SharedMap,
}

pub struct Engine {
    config: EngineConfig,
    replicas: BTreeMap<u64, Replica>,
    log: GroupLog,
    inbox: Receiver<Input>,
    /// The engine's own sender, handed to the syncer.
    inbox_sender: SyncSender<Input>,
    outbound: Outbound,
    /// The syncer's jobs: records to write, then the readies a sync of them covers.
    syncer: Option<SyncSender<SyncJob>>,
    syncer_thread: Option<thread::JoinHandle<()>>,
    syncing: bool,
    /// Ready numbers written and not yet covered by a sync, per shard.
    unsynced: BTreeMap<u64, u64>,
    /// Snapshot records (shard, index, transfers file generation) written to the log
    /// and not yet synced / in the sync running: once durable, older snapshot files of
    /// the shard can go, and its files of earlier generations (`snapshots_durable`).
    checkpoints_unsynced: Vec<(u64, u64, u64)>,
    checkpoints_syncing: Vec<(u64, u64, u64)>,
    waiting: HashMap<Token, oneshot::Sender<Result<Reply, NodeError>>>,
    /// Requests of cross-shard transactions waiting for their outcomes, oldest first,
    /// with their deadline (answered "unknown" after it).
    txn_deadlines: std::collections::VecDeque<(Instant, Token)>,
    /// Each transaction in flight: its request's token, and where its results go.
    txn_parts: HashMap<Token, (Token, usize)>,
    /// Each request of transactions: the results so far (one slot per transaction), and
    /// how many slots are still empty.
    txn_requests: HashMap<Token, (Vec<Option<TxnResults>>, usize)>,
    /// Protocol messages between two shards this node leads: delivered in the next
    /// round of the flush loop, without the network.
    local_commit: Vec<(u64, u64, settle_commit::Message)>,
    /// Paxos Commit acceptors on this node: one per shard whose replica it is (index:
    /// its place in the shard's replica list).
    acceptors: BTreeMap<u64, settle_commit::AcceptorCore>,
    /// Acceptor writes appended and not yet covered by a sync / in the sync running.
    acceptor_unsynced: Vec<(u64, settle_commit::AcceptorEntry)>,
    acceptor_syncing: Vec<(u64, settle_commit::AcceptorEntry)>,
    /// Messages for this node's acceptors, delivered in the flush loop.
    local_acceptor: Vec<(u64, settle_commit::Message)>,
    changes: HashMap<Token, oneshot::Sender<Result<Vec<u64>, NodeError>>>,
    next_token: Token,
    write_buffer: Vec<u8>,
    /// The buffer the syncer handed back, for the next group of records.
    spare: Vec<u8>,
    /// The thread writing a log rewrite's file, the file once written (and its length),
    /// and the rounds it took so far (see `maybe_rewrite_log`).
    rewrite_thread: Option<thread::JoinHandle<()>>,
    rewritten: Option<(File, u64)>,
    rewrite_rounds: u32,
    /// The rewritten log's handle, for the syncer's next job.
    syncer_file: Option<File>,
    /// Threads besides this one that apply entries at once (the machine's cores but
    /// one).
    apply: ApplyPool,
    failed: Option<String>,
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Engine {
    pub fn new(
        config: EngineConfig,
        replicas: BTreeMap<u64, Replica>,
        log: GroupLog,
        inbox: (SyncSender<Input>, Receiver<Input>),
        outbound: Outbound,
        acceptors: BTreeMap<u64, settle_commit::AcceptorCore>,
    ) -> Result<Engine, NodeError> {
        let (inbox_sender, inbox) = inbox;
        let (jobs, job_receiver) = mpsc::sync_channel::<SyncJob>(1);
        let handle = log
            .sync_handle()
            .map_err(|source| NodeError::DataDir { path: log.path().to_path_buf(), source })?;
        let apply_threads = thread::available_parallelism().map_or(0, |n| n.get() - 1);
        let apply = ApplyPool::start(apply_threads).map_err(NodeError::Thread)?;
        let results = inbox_sender.clone();
        let syncer_thread = thread::Builder::new()
            .name("settle-syncer".into())
            .spawn(move || syncer(handle, job_receiver, results))
            .map_err(NodeError::Thread)?;
        Ok(Engine {
            config,
            replicas,
            log,
            inbox,
            inbox_sender,
            outbound,
            syncer: Some(jobs),
            syncer_thread: Some(syncer_thread),
            syncing: false,
            unsynced: BTreeMap::new(),
            checkpoints_unsynced: Vec::new(),
            checkpoints_syncing: Vec::new(),
            waiting: HashMap::new(),
            txn_deadlines: std::collections::VecDeque::new(),
            txn_parts: HashMap::new(),
            txn_requests: HashMap::new(),
            local_commit: Vec::new(),
            acceptors,
            acceptor_unsynced: Vec::new(),
            acceptor_syncing: Vec::new(),
            local_acceptor: Vec::new(),
            changes: HashMap::new(),
            next_token: 1,
            write_buffer: Vec::new(),
            spare: Vec::new(),
            rewrite_thread: None,
            rewritten: None,
            rewrite_rounds: 0,
            syncer_file: None,
            apply,
            failed: None,
        })
    }

    /// Runs until `Input::Stop` or a failed write/fsync. Returns the failure, if any.
    pub fn run(mut self) -> Result<(), NodeError> {
        let mut next_tick = Instant::now() + TICK;
        let mut ticks: u64 = 0;
        let mut stopping = false;
        while !stopping && self.failed.is_none() {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(timeout) {
                Ok(Input::Stop) => stopping = true,
                Ok(input) => {
                    tracing::trace!(target: TIMELINE, "engine woke");
                    self.handle(input)
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            for _ in 0..INPUT_BATCH_MAX {
                match self.inbox.try_recv() {
                    Ok(Input::Stop) => stopping = true,
                    Ok(input) => self.handle(input),
                    Err(_) => break,
                }
            }
            self.expire_txns();
            if Instant::now() >= next_tick {
                let now = now_ns();
                self.replicas.values_mut().for_each(|r| r.tick(now));
                ticks += 1;
                if ticks.is_multiple_of(MAP_TICKS) {
                    self.maintain_shard_map();
                }
                // After a stall, tick once and move on rather than fire a burst.
                next_tick = (next_tick + TICK).max(Instant::now());
            }
            self.flush();
        }
        self.stop()
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Request(request) => self.submit(request),
            Input::Status { reply } => {
                let shards = self
                    .replicas
                    .iter()
                    .map(|(&shard, replica)| settle_proto::pb::ShardStatus {
                        shard,
                        role: replica.role().to_string(),
                        term: replica.term(),
                        leader: replica.leader().unwrap_or(0),
                        applied: replica.applied(),
                        voters: replica.voters(),
                    })
                    .collect();
                let _ =
                    reply.send(settle_proto::pb::StatusReply { node: self.config.node_id, shards });
            }
            Input::ChangeReplicas { shard, node, remove, reply } => {
                let Some(replica) = self.replicas.get_mut(&shard) else {
                    let _ = reply.send(Err(NodeError::NoReplica { shard }));
                    return;
                };
                if !remove && self.config.cluster.node(node).is_none() {
                    let message = format!("node {node} is not in the cluster config's [[nodes]]");
                    let _ = reply.send(Err(NodeError::Config(message)));
                    return;
                }
                let token = self.next_token;
                self.next_token += 1;
                self.changes.insert(token, reply);
                replica.change_membership(token, node, remove);
            }
            Input::Peer { shard, message } => {
                if !self.replicas.contains_key(&shard) {
                    self.join(shard, &message);
                }
                if let Some(replica) = self.replicas.get_mut(&shard) {
                    replica.step(message);
                }
            }
            Input::Commit { shard, message, acceptor: Some(index), .. } => {
                if let Some(core) = self.acceptors.get_mut(&shard) {
                    if core.index == index {
                        core.receive(message);
                    }
                }
            }
            Input::Commit { shard, from_shard, message, acceptor: None } => {
                if let Some(replica) = self.replicas.get_mut(&shard) {
                    let from = settle_commit::Address::Shard(from_shard as u32);
                    replica.receive_commit(from, message);
                }
            }
            Input::SnapshotStatus { shard, to, delivered } => {
                if let Some(replica) = self.replicas.get_mut(&shard) {
                    replica.report_snapshot(to, delivered);
                }
            }
            Input::Synced(Ok(SyncJob { numbers, mut records, .. })) => {
                tracing::trace!(target: TIMELINE, "synced");
                self.syncing = false;
                // Reused for the next group of records (a fresh buffer would be faulted
                // in anew).
                records.clear();
                self.spare = records;
                self.config.stats.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                for (shard, number) in numbers {
                    if let Some(replica) = self.replicas.get_mut(&shard) {
                        replica.persisted(number);
                    }
                }
                self.snapshots_durable();
                self.acceptors_persisted();
            }
            Input::LogRewritten(Ok(base)) => self.rewritten = Some(base),
            Input::LogRewritten(Err(error)) => {
                self.failed =
                    Some(format!("rewrite of {} failed: {error}", self.log.path().display()));
            }
            Input::CheckpointWritten { shard, index, outcome } => match outcome {
                Ok(()) => {
                    if let Some(replica) = self.replicas.get_mut(&shard) {
                        // The data stays in the file; the replica's loader reads it back.
                        replica.checkpoint_written(index, Vec::new());
                    }
                }
                Err(error) => self.failed = Some(format!("checkpoint of shard {shard}: {error}")),
            },
            Input::Synced(Err(error)) => {
                // The page cache can no longer be trusted to reach the disk: stop, and
                // let a restart recover from what is on it.
                self.failed =
                    Some(format!("fsync of {} failed: {error}", self.log.path().display()));
            }
            Input::Stop => unreachable!("handled by the loop"),
        }
    }

    fn submit(&mut self, request: Request) {
        let Request { command, shard, reply } = request;
        let shard = shard.unwrap_or_else(|| self.config.cluster.default_shard());
        let Some(replica) = self.replicas.get_mut(&shard) else {
            let _ = reply.send(Err(NodeError::NoReplica { shard }));
            return;
        };
        if self.waiting.len() >= WAITING_MAX {
            let _ = reply.send(Err(NodeError::Busy));
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, reply);
        match command {
            Command::Write(write) => {
                assert!(write.event_count() <= BATCH_EVENTS_MAX, "the server checks batch sizes");
                replica.propose(token, &write, now_ns());
            }
            Command::Read(read) => replica.read(token, read),
            Command::ReadAt { at, ids } => {
                if let Err(refusal) = replica.read_at(token, at, ids) {
                    let reply = self.waiting.remove(&token).expect("inserted above");
                    let _ = reply.send(Err(self.refusal(refusal)));
                }
            }
            Command::Txns(txns) => {
                tracing::trace!(target: TIMELINE, shard, txns = txns.len(), "transactions in");
                self.txn_requests.insert(token, (vec![None; txns.len()], txns.len()));
                for (slot, txn) in txns.into_iter().enumerate() {
                    let part = self.next_token;
                    self.next_token += 1;
                    let replica = self.replicas.get_mut(&shard).expect("checked above");
                    if let Err(refusal) = replica.submit_txn(part, txn) {
                        // Those already taken go on; the retry of the request finds them.
                        self.txn_requests.remove(&token);
                        let reply = self.waiting.remove(&token).expect("inserted above");
                        let _ = reply.send(Err(self.refusal(refusal)));
                        return;
                    }
                    self.txn_parts.insert(part, (token, slot));
                }
                self.txn_deadlines.push_back((Instant::now() + TXN_TIMEOUT, token));
                self.answer_txns(token);
            }
        }
    }

    /// Answers a request of transactions once every one has its results.
    fn answer_txns(&mut self, token: Token) {
        let Some((_, remaining)) = self.txn_requests.get(&token) else { return };
        if *remaining > 0 {
            return;
        }
        tracing::trace!(target: TIMELINE, "transactions answered");
        let (slots, _) = self.txn_requests.remove(&token).expect("checked");
        let results = slots.into_iter().flatten().flatten().collect();
        if let Some(reply) = self.waiting.remove(&token) {
            let _ = reply.send(Ok(Reply::TransferResults(results)));
        }
    }

    /// Answers the transactions whose deadline passed (their coordinator lost its
    /// leadership, or a participant is unreachable): the outcome is unknown to this
    /// node; the protocol still finishes them, and a retry gets their result.
    fn expire_txns(&mut self) {
        let now = Instant::now();
        while self.txn_deadlines.front().is_some_and(|(deadline, _)| *deadline <= now) {
            let (_, token) = self.txn_deadlines.pop_front().expect("checked");
            if self.txn_requests.remove(&token).is_none() {
                continue; // answered already
            }
            self.txn_parts.retain(|_, (request, _)| *request != token);
            if let Some(reply) = self.waiting.remove(&token) {
                let _ = reply.send(Err(NodeError::OutcomeUnknown));
            }
        }
    }

    /// Protocol messages for `to`: to its leader (this node's replica, without the
    /// network, when it leads), or to every node holding a replica of `to` when the
    /// leader is unknown here (only a leader acts on them).
    fn send_commit(
        &mut self,
        from_shard: u64,
        to: settle_commit::Address,
        message: settle_commit::Message,
    ) {
        let to = match to {
            settle_commit::Address::Shard(to) => to,
            settle_commit::Address::Acceptor { shard, index } => {
                let shard = u64::from(shard);
                let Some(entry) = self.config.cluster.shards.iter().find(|s| s.id == shard) else {
                    return;
                };
                let Some(&node) = entry.replicas.get(usize::from(index)) else { return };
                if node == self.config.node_id {
                    self.local_acceptor.push((shard, message));
                } else {
                    let bytes = settle_commit::codec::encode_message(&message);
                    self.outbound.queue_commit(
                        node,
                        shard,
                        from_shard,
                        bytes,
                        u32::from(index) + 1,
                    );
                }
                return;
            }
        };
        let to = u64::from(to);
        let leader = self.replicas.get(&to).and_then(|replica| replica.leader());
        if leader == Some(self.config.node_id) {
            self.local_commit.push((to, from_shard, message));
            return;
        }
        let bytes = settle_commit::codec::encode_message(&message);
        if let Some(leader) = leader {
            self.outbound.queue_commit(leader, to, from_shard, bytes, 0);
            return;
        }
        // No replica here, or no leader known: every node holding `to` hears it (only
        // its leader acts): those the config names, and those the shard map names now
        // (replicas move).
        let mut nodes: Vec<u64> = self
            .config
            .cluster
            .shards
            .iter()
            .filter(|s| s.id == to)
            .flat_map(|s| s.replicas.iter().copied())
            .collect();
        if let Some(map) =
            self.config.shard_map.read().unwrap_or_else(PoisonError::into_inner).as_ref()
        {
            nodes.extend(map.replicas(to).unwrap_or_default());
        }
        nodes.sort_unstable();
        nodes.dedup();
        for node in nodes {
            if node != self.config.node_id {
                self.outbound.queue_commit(node, to, from_shard, bytes.clone(), 0);
            }
        }
    }

    /// Carries out what every replica's inputs produced, until none has more to say.
    fn flush(&mut self) {
        // (A failure stops the engine after this round's outputs are carried out.)
        while self.failed.is_none() {
            let mut quiet = true;
            if let Some((shard, halt)) =
                self.replicas.iter().find_map(|(&shard, r)| Some((shard, r.halted()?)))
            {
                self.failed = Some(format!("shard {shard} halted: {halt}"));
                return;
            }
            for (shard, output) in self.apply.poll_all(&mut self.replicas) {
                if output.is_empty() {
                    continue;
                }
                quiet = false;
                for message in output.messages {
                    self.send(shard, message);
                }
                if let Some(job) = output.checkpoint {
                    self.write_checkpoint(shard, job);
                }
                for record in &output.writes {
                    self.encode(shard, record);
                }
                if let Some(number) = output.persist_number {
                    self.unsynced.insert(shard, number);
                }
                for (token, answer) in output.replies {
                    if let Some(reply) = self.waiting.remove(&token) {
                        let _ = reply.send(answer.map_err(|refusal| self.refusal(refusal)));
                    }
                }
                for (to, message) in output.commit_messages {
                    self.send_commit(shard, to, message);
                }
                for (part, results) in output.commit_replies {
                    let Some((token, slot)) = self.txn_parts.remove(&part) else { continue };
                    if let Some((slots, remaining)) = self.txn_requests.get_mut(&token) {
                        if slots[slot].replace(results).is_none() {
                            *remaining -= 1;
                        }
                    }
                    self.answer_txns(token);
                }
                for (token, read) in output.read_replies {
                    if let Some(reply) = self.waiting.remove(&token) {
                        let answer = read
                            .map(|part| Reply::Snapshot {
                                timestamp: part.at,
                                accounts: part.accounts,
                            })
                            .map_err(NodeError::Snapshot);
                        let _ = reply.send(answer);
                    }
                }
                for refused in output.commit_refused {
                    tracing::warn!(shard, "cross-shard entry refused: {refused}");
                }
                for (token, answer) in output.membership {
                    if let Some(reply) = self.changes.remove(&token) {
                        let _ = reply.send(answer.map_err(|refusal| self.refusal(refusal)));
                    }
                }
            }
            quiet &= !self.drive_acceptors();
            // Protocol messages between this node's shards make more records at once (a
            // participant's prepare beside its coordinator's own): when no replica has
            // entries to apply, whose work the sync would overlap, they join this sync
            // instead of waiting for the next. (A quiet round always starts it.)
            let records_follow =
                !self.local_commit.is_empty() && !self.replicas.values().any(Replica::has_work);
            if !records_follow {
                self.start_sync();
            }
            for (shard, from_shard, message) in std::mem::take(&mut self.local_commit) {
                quiet = false;
                if let Some(replica) = self.replicas.get_mut(&shard) {
                    let from = settle_commit::Address::Shard(from_shard as u32);
                    replica.receive_commit(from, message);
                }
            }
            if quiet {
                break;
            }
        }
        for (shard, to) in self.outbound.flush() {
            if let Some(replica) = self.replicas.get_mut(&shard) {
                replica.report_snapshot(to, false);
            }
        }
        self.maybe_rewrite_log();
        self.publish_leaders();
        self.publish_shard_map();
    }

    /// Delivers the acceptors' messages and carries out what they ask: sends, and writes
    /// to the shared log (answered once a sync covers them). Whether anything happened.
    fn drive_acceptors(&mut self) -> bool {
        let mut busy = false;
        for (shard, message) in std::mem::take(&mut self.local_acceptor) {
            busy = true;
            if let Some(core) = self.acceptors.get_mut(&shard) {
                core.receive(message);
            }
        }
        let shards: Vec<u64> = self.acceptors.keys().copied().collect();
        for shard in shards {
            let commands = self.acceptors.get_mut(&shard).expect("listed").take_commands();
            for command in commands {
                busy = true;
                match command {
                    settle_commit::AcceptorCommand::Send { to, message } => {
                        self.send_commit(shard, to, message)
                    }
                    settle_commit::AcceptorCommand::Persist(entry) => {
                        let bytes = settle_commit::codec::encode_acceptor(&entry.state);
                        settle_replica::durable::encode(
                            shard,
                            &Record::Acceptor(bytes),
                            &mut self.write_buffer,
                        );
                        self.acceptor_unsynced.push((shard, entry));
                    }
                }
            }
        }
        busy
    }

    /// Every leader here tells the metadata shard who holds its replicas, and the
    /// metadata shard's leader writes the first map (see `Replica::maintain_shard_map`).
    fn maintain_shard_map(&mut self) {
        let metadata_shard = self.config.cluster.metadata_shard() as u32;
        let initial = self.config.cluster.shard_map();
        for replica in self.replicas.values_mut() {
            replica.maintain_shard_map(metadata_shard, &initial);
        }
    }

    /// Hands the router the shard map this node's replica of the metadata shard holds,
    /// when it is newer than the one the router has.
    fn publish_shard_map(&mut self) {
        let metadata_shard = self.config.cluster.metadata_shard();
        // Only a member's replica: one removed from the group stops applying, and its
        // map would stay behind for good.
        let node_id = self.config.node_id;
        let Some(held) = self
            .replicas
            .get(&metadata_shard)
            .filter(|replica| replica.holds(node_id))
            .and_then(|r| r.shard_state().shard_map.as_ref())
        else {
            return;
        };
        let current = self
            .config
            .shard_map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| m.version);
        if current.is_none_or(|version| held.version > version) {
            *self.config.shard_map.write().unwrap_or_else(PoisonError::into_inner) =
                Some(held.clone());
        }
    }

    /// Tells the router who leads each shard held here (only when that changed).
    fn publish_leaders(&mut self) {
        // A replica removed from its group stays here but holds the shard no more: the
        // router forwards that shard's requests like any other it does not hold. (One
        // that has not heard its configuration yet, a new one, counts as held.)
        let node_id = self.config.node_id;
        let now: BTreeMap<u64, Option<u64>> = self
            .replicas
            .iter()
            .filter(|(_, replica)| replica.holds(node_id))
            .map(|(&shard, replica)| (shard, replica.leader()))
            .collect();
        let mut leaders =
            self.config.leaders.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *leaders != now {
            *leaders = now;
        }
    }

    /// A message for a shard this node holds no replica of, from a node of the
    /// cluster: this node was added to the shard. It starts an empty replica, which the
    /// leader brings up to date (with a snapshot once the log is compacted).
    fn join(&mut self, shard: u64, message: &Message) {
        let Some(entry) = self.config.cluster.shards.iter().find(|s| s.id == shard) else {
            return;
        };
        if self.config.cluster.node(message.from).is_none() {
            return;
        }
        // The log starts from the shard's first configuration, as on every replica;
        // the membership changes in it (or the snapshot the leader sends) bring it up
        // to date.
        let first =
            settle_replica::ConfState { voters: entry.replicas.clone(), ..Default::default() };
        let log = settle_replica::LogStore::new(first);
        let seed = self.config.seed ^ shard;
        let (node_id, dir, tuning) =
            (self.config.node_id, &self.config.data_dir, self.config.tuning);
        let config = super::replica_config(node_id, shard, dir, seed, tuning, entry.replicas.len());
        match Replica::new(config, log) {
            Ok(replica) => {
                tracing::info!(shard, "joining the shard as a new replica");
                self.replicas.insert(shard, replica);
            }
            Err(halt) => self.failed = Some(format!("shard {shard}: {halt}")),
        }
    }

    fn send(&mut self, shard: u64, message: Message) {
        let to = message.to;
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        if snapshot {
            let index = message.get_snapshot().get_metadata().index;
            tracing::info!(shard, to, index, "sending a snapshot to a follower that fell behind");
        }
        if !self.outbound.queue(to, shard, encode_message(&message), snapshot) && snapshot {
            if let Some(replica) = self.replicas.get_mut(&shard) {
                replica.report_snapshot(to, false);
            }
        }
    }

    /// Appends `record` to the write buffer; a snapshot's data goes to its own file.
    fn encode(&mut self, shard: u64, record: &Record) {
        let Some(stripped) = snapshots::without_data(record) else {
            settle_replica::durable::encode(shard, record, &mut self.write_buffer);
            return;
        };
        match record {
            Record::InstalledSnapshot(snapshot) => {
                // Rare (a follower far behind): written here, before its record.
                let index = snapshot.get_metadata().index;
                if let Err(error) =
                    snapshots::write(&self.config.data_dir, shard, index, &snapshot.data)
                {
                    self.failed =
                        Some(format!("cannot write the snapshot of shard {shard}: {error}"));
                    return;
                }
                let generation = self.transfers_generation(shard);
                self.checkpoints_unsynced.push((shard, index, generation));
            }
            Record::Checkpoint { snapshot, .. } => {
                // The checkpoint refers to the file of the generation in use (an install
                // since it was captured would have made the replica drop it).
                let generation = self.transfers_generation(shard);
                self.checkpoints_unsynced.push((shard, snapshot.get_metadata().index, generation));
            }
            _ => unreachable!("only snapshots are stripped"),
        }
        settle_replica::durable::encode(shard, &stripped, &mut self.write_buffer);
    }

    fn transfers_generation(&self, shard: u64) -> u64 {
        self.replicas.get(&shard).map_or(0, Replica::transfers_generation)
    }

    /// Writes a checkpoint's snapshot file on a thread of its own; the engine goes on
    /// and hears back through `Input::CheckpointWritten`.
    fn write_checkpoint(&mut self, shard: u64, job: settle_replica::CheckpointJob) {
        let dir = self.config.data_dir.clone();
        let inbox = self.inbox_sender.clone();
        let spawned = thread::Builder::new().name("settle-checkpoint".into()).spawn(move || {
            let started = Instant::now();
            // Straight to the file: the replica reads it back when a follower needs it.
            let written =
                snapshots::write_with(&dir, shard, job.index, |out| job.source.write(out));
            if let Ok(bytes) = &written {
                let ms = started.elapsed().as_millis();
                tracing::info!(shard, index = job.index, bytes, ms, "checkpoint written");
            }
            let outcome = written.map(|_| ()).map_err(|e| e.to_string());
            // Blocking is fine: the engine drains its inbox continuously.
            let _ = inbox.send(Input::CheckpointWritten { shard, index: job.index, outcome });
        });
        if let Err(error) = spawned {
            self.failed = Some(format!("cannot start a checkpoint thread: {error}"));
        }
    }

    /// Writes the records encoded so far to the OS from this thread (not durable);
    /// whether that worked (if not, the engine has failed).
    fn write_out(&mut self) -> bool {
        if let Err(error) = self.log.append(&self.write_buffer) {
            self.failed = Some(format!("write to {} failed: {error}", self.log.path().display()));
            return false;
        }
        self.write_buffer.clear();
        true
    }

    /// Hands the records encoded so far to the syncer, which writes them, fsyncs, and
    /// reports the readies they cover durable (the copy into the page cache does not
    /// hold up this thread). One sync at a time; records wait for the next.
    fn start_sync(&mut self) {
        let nothing = self.unsynced.is_empty()
            && self.acceptor_unsynced.is_empty()
            && self.write_buffer.is_empty();
        if self.syncing || nothing {
            return;
        }
        self.checkpoints_syncing.append(&mut self.checkpoints_unsynced);
        self.acceptor_syncing.append(&mut self.acceptor_unsynced);
        let numbers: Vec<(u64, u64)> = std::mem::take(&mut self.unsynced).into_iter().collect();
        if !self.config.fsync {
            // Experiments only: "durable" when written to the OS.
            if !self.write_out() {
                return;
            }
            for (shard, number) in numbers {
                if let Some(replica) = self.replicas.get_mut(&shard) {
                    replica.persisted(number);
                }
            }
            self.acceptors_persisted();
            self.snapshots_durable();
            return;
        }
        self.syncing = true;
        let records = std::mem::replace(&mut self.write_buffer, std::mem::take(&mut self.spare));
        tracing::trace!(target: TIMELINE, bytes = records.len(), "sync handed over");
        self.log.appended(&records);
        let syncer = self.syncer.as_ref().expect("the syncer runs until stop");
        let file = self.syncer_file.take();
        syncer.send(SyncJob { records, numbers, file }).expect("the syncer runs until stop");
    }

    /// The snapshot records the last sync covered are durable: the log names them from
    /// now on, so older snapshot files can go, and the transfers files of generations
    /// before the one each needs (a checkpoint refers to its generation's file; an
    /// installed snapshot starts a generation).
    fn snapshots_durable(&mut self) {
        for (shard, index, generation) in std::mem::take(&mut self.checkpoints_syncing) {
            snapshots::remove_others(&self.config.data_dir, shard, index, true);
            super::remove_transfer_files(&self.config.data_dir, shard, |g| g >= generation);
        }
    }

    /// The acceptor writes the last sync covered are durable: the acceptors answer.
    fn acceptors_persisted(&mut self) {
        for (shard, entry) in std::mem::take(&mut self.acceptor_syncing) {
            if let Some(core) = self.acceptors.get_mut(&shard) {
                core.persisted(entry);
            }
        }
    }

    /// Once the log is large, replace it with what the replicas hold (snapshot, entries,
    /// hard state), written on a thread of its own, followed by what came in meanwhile.
    /// The base is taken between syncs, so that it holds exactly what the log held. The
    /// swap can come at any time: what a sync in flight writes to the old file was
    /// handed over before, so it is in the new one too, and the syncer takes the new
    /// file with its next job.
    fn maybe_rewrite_log(&mut self) {
        if let Some((file, len)) = self.rewritten.take() {
            // While much came in during the last round, write it on the thread too:
            // what the swap writes here holds up every shard on this node.
            if self.log.since_base_len() > REWRITE_SWAP_BYTES
                && self.rewrite_rounds < REWRITE_ROUNDS_MAX
            {
                self.rewrite_rounds += 1;
                let bytes = self.log.take_since_base();
                self.spawn_rewrite(move || super::log::write_more(file, len, &bytes));
            } else {
                self.finish_rewrite(file, len);
            }
            return;
        }
        let acceptor_writes =
            !self.acceptor_unsynced.is_empty() || !self.acceptor_syncing.is_empty();
        if self.syncing
            || !self.unsynced.is_empty()
            || !self.write_buffer.is_empty()
            || acceptor_writes
        {
            return;
        }
        // A rewrite pays off only once checkpoints compacted the replicas' logs: the log
        // must be large, and at least twice what the rewrite would write (the entries;
        // snapshots live in their own files).
        if self.log.rewriting() || self.log.len() < self.config.tuning.log_rewrite_bytes {
            return;
        }
        let retained: u64 = self.replicas.values().map(|r| r.log().entry_bytes()).sum();
        if self.log.len() < 2 * retained {
            return;
        }
        let mut records = Vec::new();
        for (&shard, replica) in &self.replicas {
            // The latest snapshot as the base of the log, then the entries after it
            // (those kept before it for lagging followers are dropped: a follower that
            // far behind gets the snapshot after a restart), then the hard state.
            let log = replica.log();
            let snapshot = log.latest_snapshot().clone();
            let index = snapshot.get_metadata().index;
            let after: Vec<_> =
                log.held_entries().iter().filter(|e| e.index > index).cloned().collect();
            // Its data stays in its file (which exists: every snapshot a replica holds
            // was written to one before its record).
            let base = Record::InstalledSnapshot(snapshot);
            records.push((shard, snapshots::without_data(&base).expect("a snapshot record")));
            records.push((shard, Record::Entries(after)));
            records.push((shard, Record::HardState(log.hard_state().clone())));
        }
        // The acceptors' state is this node's own: it goes into the new log as well.
        for (&shard, core) in &self.acceptors {
            for state in core.durable().values() {
                let bytes = settle_commit::codec::encode_acceptor(state);
                records.push((shard, Record::Acceptor(bytes)));
            }
        }
        self.log.begin_rewrite();
        self.rewrite_rounds = 0;
        let path = self.log.path().to_path_buf();
        self.spawn_rewrite(move || super::log::write_base(&path, records));
    }

    /// Runs one step of a log rewrite on its thread, which reports the outcome.
    fn spawn_rewrite(
        &mut self,
        step: impl FnOnce() -> std::io::Result<(File, u64)> + Send + 'static,
    ) {
        self.join_rewrite_thread();
        let inbox = self.inbox_sender.clone();
        let spawned = thread::Builder::new().name("settle-log-rewrite".into()).spawn(move || {
            // A report always goes out, so that the rewrite never stays begun (and its
            // copy of what is appended never grows) for want of one.
            let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
                .unwrap_or_else(|_| Err(std::io::Error::other("the rewrite's thread panicked")));
            // Blocking is fine: the engine drains its inbox continuously (and closes it
            // before waiting for this thread at stop).
            let _ = inbox.send(Input::LogRewritten(written));
        });
        match spawned {
            Ok(thread) => self.rewrite_thread = Some(thread),
            Err(error) => self.failed = Some(format!("cannot start a log rewrite: {error}")),
        }
    }

    /// Reaps the rewrite's last thread, which already reported (it sends its result
    /// last).
    fn join_rewrite_thread(&mut self) {
        if let Some(thread) = self.rewrite_thread.take() {
            let _ = thread.join();
        }
    }

    /// Puts the rewritten log in place: the base, then what was appended since.
    fn finish_rewrite(&mut self, file: File, base_len: u64) {
        self.join_rewrite_thread();
        let before = self.log.len();
        if let Err(error) = self.log.finish_rewrite(file, base_len) {
            self.failed = Some(format!("rewrite of {} failed: {error}", self.log.path().display()));
            return;
        }
        tracing::info!(before, after = self.log.len(), "log rewritten");
        self.config.stats.log_rewrites.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The syncer's handle points at the old file: its next job brings the new one.
        match self.log.sync_handle() {
            Ok(handle) => self.syncer_file = Some(handle),
            Err(error) => self.failed = Some(format!("cannot reopen the log: {error}")),
        }
    }

    fn refusal(&self, refusal: Refusal) -> NodeError {
        match refusal {
            Refusal::NotLeader { leader } => NodeError::NotLeader {
                leader: leader
                    .and_then(|id| self.config.cluster.node(id))
                    .map(|node| node.address.to_string()),
            },
            Refusal::Busy => NodeError::Busy,
            Refusal::Unknown => NodeError::OutcomeUnknown,
        }
    }

    /// The way down: waiting clients are told, the syncer finishes its last job.
    fn stop(mut self) -> Result<(), NodeError> {
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        for (_, reply) in self.changes.drain() {
            let _ = reply.send(Err(NodeError::Stopped));
        }
        // The inbox closes first, so that no thread's report (the syncer's, a log
        // rewrite's) can wait on a full one while this one waits for that thread.
        drop(std::mem::replace(&mut self.inbox, mpsc::sync_channel(0).1));
        self.syncer = None;
        if let Some(thread) = self.syncer_thread.take() {
            thread.join().map_err(|_| NodeError::ThreadPanicked("syncer"))?;
        }
        // A rewrite not put in place leaves the log as it is (its temporary file is
        // overwritten by the next one).
        if let Some(thread) = self.rewrite_thread.take() {
            thread.join().map_err(|_| NodeError::ThreadPanicked("log rewrite"))?;
        }
        // Records no sync took yet: to the OS, as without fsync (nothing waits on them).
        if self.failed.is_none() {
            self.write_out();
        }
        match self.failed {
            None => Ok(()),
            Some(reason) => {
                tracing::error!(%reason, "the engine stopped");
                Err(NodeError::Failed(reason))
            }
        }
    }
}

/// What the syncer does next: write `records` at the end of the log, fsync, and report
/// `numbers` (per shard, the last ready the sync covers) durable.
pub struct SyncJob {
    records: Vec<u8>,
    numbers: Vec<(u64, u64)>,
    /// The log was rewritten: write to this file from now on.
    file: Option<File>,
}

/// Write, fsync, then report which readies are durable (and hand the buffer back).
/// Stops when the engine hangs up.
fn syncer(file: File, jobs: Receiver<SyncJob>, results: SyncSender<Input>) {
    let mut file = file;
    while let Ok(SyncJob { records, numbers, file: new }) = jobs.recv() {
        if let Some(new) = new {
            file = new;
        }
        let outcome = std::io::Write::write_all(&mut &file, &records)
            .and_then(|()| {
                tracing::trace!(target: TIMELINE, bytes = records.len(), "log written");
                file.sync_data()
            })
            .map(|()| SyncJob { records, numbers, file: None });
        tracing::trace!(target: TIMELINE, "log synced");
        let failed = outcome.is_err();
        // Blocking is fine: the engine drains its inbox continuously, and never waits
        // on the syncer while holding a job back.
        if results.send(Input::Synced(outcome)).is_err() || failed {
            return;
        }
    }
}

/// Hands an input to the engine without blocking an async task: a full inbox refuses
/// client requests (`Busy`, the client retries) and drops peer messages (Raft resends).
pub fn offer(inbox: &SyncSender<Input>, input: Input) {
    match inbox.try_send(input) {
        Ok(()) => {}
        Err(TrySendError::Full(Input::Request(request))) => {
            let _ = request.reply.send(Err(NodeError::Busy));
        }
        Err(TrySendError::Disconnected(Input::Request(request))) => {
            let _ = request.reply.send(Err(NodeError::Stopped));
        }
        Err(_) => {}
    }
}
