//! [`Replica`]: one replica of a shard as a pure state machine. Inputs are method calls
//! (`tick`, `step`, `propose`, `read`, `persisted`, `report_snapshot`); everything the
//! replica wants done comes out of [`Replica::poll`] as an [`Output`]: messages to send,
//! records to write, the ready number to report once they are durable, replies.
//!
//! Inside, raft-rs's `RawNode` decides the order of writes, and the ledger executes them
//! as they commit. raft-rs is driven with asynchronous persistence: its entries enter
//! the in-memory [`LogStore`] at once (so they can be replicated), and raft-rs is told
//! they are durable (`on_persist_ready`) only when the shell says its fsync covered
//! them. Messages that promise durability (votes, append acks) are held until then.
//!
//! Determinism: no clock (the shell passes its reading in), no randomness but raft-rs's
//! election timeout, which is overwritten from a seeded generator whenever raft-rs
//! redraws it (on every change of term or role).
//!
//! Touches: raft-rs, the ledger, the in-memory log. No IO.

use std::collections::{BTreeMap, VecDeque};

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, StateRole};
use raft_proto::ConfChangeI;
use settle_commit::message::ClientRef;
use settle_commit::read::{ReadError, SnapshotPart};
use settle_commit::{codec, Address, ShardCore, ShardMap, ShardState, Txn};
use settle_ledger::{CreateTransferResult, Ledger, MemStore, Read, Reply, Write, BATCH_EVENTS_MAX};

use crate::durable::Record;
use crate::log_store::LogStore;

/// Identifies a request to the shell that submitted it.
pub type Token = u64;

/// Settings of one replica.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's id in its group (not 0).
    pub id: u64,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// A checkpoint (snapshot of the ledger, log compaction) every this many entries.
    pub checkpoint_entries: u64,
    /// Entries kept behind a checkpoint, so that a follower just behind needs no snapshot.
    pub keep_entries: u64,
    /// A checkpoint also once the entries held take this many bytes: an entry can carry
    /// a whole batch, so a count alone does not bound memory.
    pub checkpoint_bytes: u64,
    /// At most this many bytes of entries are kept behind a checkpoint.
    pub keep_bytes: u64,
    /// Most writes proposed and not yet answered; beyond, requests are refused `Busy`.
    pub proposals_max: usize,
    /// Most reads waiting for their read index.
    pub reads_max: usize,
    /// A request not answered after this many ticks is answered `Unknown`.
    pub request_timeout_ticks: u64,
    /// A snapshot sent to a follower and not reported delivered or installed within
    /// this many ticks is taken as lost, and sent again (a lost snapshot message would
    /// otherwise stall that follower for good).
    pub snapshot_timeout_ticks: u64,
    /// Seeds the election timeouts.
    pub seed: u64,
    /// Keep the ledger's transfer records in files named after this path (a new
    /// generation, `<path>.<n>`, each time a snapshot is installed) instead of in
    /// memory. Only a tail, an index and a checksum per chunk stay in memory; a
    /// checkpoint refers to the records in the file instead of copying them, and a
    /// start adopts them.
    pub transfers_file: Option<std::path::PathBuf>,
    /// Where the shell keeps snapshot data, if it does: then it is not kept in memory.
    pub snapshot_loader: Option<crate::log_store::SnapshotLoader>,
    /// The shard this replica belongs to (cross-shard transactions name shards).
    pub shard: u32,
    /// The cross-shard commit protocols' timing and limits.
    pub commit: settle_commit::Config,
}

impl Config {
    pub fn new(id: u64, seed: u64) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            checkpoint_entries: 1024,
            keep_entries: 64,
            checkpoint_bytes: 256 << 20,
            keep_bytes: 64 << 20,
            proposals_max: 1024,
            reads_max: 1024,
            request_timeout_ticks: 50,
            snapshot_timeout_ticks: 500,
            seed,
            transfers_file: None,
            snapshot_loader: None,
            shard: 0,
            commit: settle_commit::Config::new(1),
        }
    }
}

/// Why a request got no result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the leader; `leader` is the one this replica knows of. Nothing was done.
    NotLeader { leader: Option<u64> },
    /// Too many requests in flight. Nothing was done.
    Busy,
    /// The outcome is unknown (leadership changed, the group is unreachable, or the
    /// request timed out): a write may or may not be applied. Retrying is safe, because
    /// ids are idempotent.
    Unknown,
}

/// A write this replica applied, for checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    /// The timestamp the ledger executed it at (0 for entries that are not writes).
    pub timestamp: u64,
    pub write: Option<Write>,
    pub reply: Option<Reply>,
}

/// What the shell must do after an input, in this order: send `messages` (any order,
/// now), append `writes` to the disk in order, and once an fsync covers them, call
/// [`Replica::persisted`] with `persist_number` (if any). `replies` go to clients.
#[derive(Default, Debug)]
pub struct Output {
    pub messages: Vec<Message>,
    pub writes: Vec<Record>,
    pub persist_number: Option<u64>,
    pub replies: Vec<(Token, Result<Reply, Refusal>)>,
    /// Answers to membership changes: the voters once the change is applied.
    pub membership: Vec<(Token, Result<Vec<u64>, Refusal>)>,
    /// Filled only when `Replica::record_applied` is on (the simulator's checkers).
    pub applied: Vec<Applied>,
    /// Cross-shard protocol messages to send (this replica leads its shard).
    pub commit_messages: Vec<(Address, settle_commit::Message)>,
    /// Answers to cross-shard transactions submitted here: the client's results.
    pub commit_replies: Vec<(ClientRef, Vec<CreateTransferResult>)>,
    /// Answers to snapshot reads submitted here: this shard's part, or why not.
    pub read_replies: Vec<(ClientRef, Result<SnapshotPart, ReadError>)>,
    /// Protocol entries that contradicted the state and changed nothing (the shell logs
    /// them; the simulator counts them as violations).
    pub commit_refused: Vec<String>,
    /// A checkpoint to write: the shell writes `source` (on any thread, durably), then
    /// hands the bytes back with [`Replica::checkpoint_written`].
    pub checkpoint: Option<CheckpointJob>,
}

/// The ledger's state at `index`, captured cheaply, to be written by the shell.
pub struct CheckpointJob {
    pub index: u64,
    pub source: settle_ledger::store::SnapshotSource,
}

impl std::fmt::Debug for CheckpointJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointJob").field("index", &self.index).finish_non_exhaustive()
    }
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.writes.is_empty()
            && self.persist_number.is_none()
            && self.replies.is_empty()
            && self.membership.is_empty()
            && self.applied.is_empty()
            && self.checkpoint.is_none()
            && self.commit_messages.is_empty()
            && self.commit_replies.is_empty()
            && self.commit_refused.is_empty()
            && self.read_replies.is_empty()
    }
}

/// A replica stopped itself: its state can no longer be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Halt {
    #[error("committed entry {index} is not a valid write: {reason}")]
    BadEntry { index: u64, reason: String },
    #[error("snapshot at index {index} does not load: {reason}")]
    BadSnapshot { index: u64, reason: String },
    #[error("cannot create the transfers file {path}: {reason}")]
    Storage { path: String, reason: String },
}

struct Proposal {
    term: u64,
    /// `None` for writes the replica proposes itself (pulses).
    token: Option<Token>,
    deadline_tick: u64,
}

struct PendingRead {
    token: Token,
    read: Read,
    deadline_tick: u64,
    /// Set once raft-rs confirmed the read index: answer when applied reaches it.
    index: Option<u64>,
}

/// Most Raft entries of protocol records a leader keeps as it proposed them (see
/// `Replica::proposed`).
const PROPOSED_MAX: usize = 1024;

pub struct Replica {
    config: Config,
    raw: RawNode<LogStore>,
    /// The replicated state (ledger + cross-shard protocol records) and, at the leader,
    /// the protocols' volatile side. Followers apply through it too and drop what it
    /// asks for.
    core: ShardCore,
    /// Protocol entries the core asked to write, proposed once the current ready is
    /// advanced (raft-rs takes no proposal in between).
    commit_proposals: Vec<settle_commit::Entry>,
    /// The protocol entries this leader proposed, by Raft index, with the term it
    /// proposed them in: applying the entry at that index and term takes them as they
    /// are instead of decoding its bytes again (Raft's log matching: the same index
    /// and term hold the same entry). Decoding a transaction's thousand transfers for
    /// each record that carries it was 18% of the cross-shard bench's engine thread.
    /// Emptied with the leadership; entries stay at most until their index applies,
    /// `PROPOSED_MAX` Raft entries at most.
    proposed: BTreeMap<u64, (u64, Vec<settle_commit::Entry>)>,
    applied: u64,
    /// Election-timeout generator (splitmix64 state).
    rng: u64,
    /// Followers the leader is sending a snapshot to, since which tick.
    snapshots_sent: BTreeMap<u64, u64>,
    /// Generation of the transfers file in use (see `Config::transfers_file`).
    generation: u64,
    /// (term, role) when the election timeout was last set.
    seen: (u64, StateRole),
    ticks: u64,
    clock_ns: u64,
    proposals: BTreeMap<u64, Proposal>,
    /// Membership changes proposed here, by index: (term, token, deadline tick).
    changes: BTreeMap<u64, (u64, Token, u64)>,
    /// A change applied in its joint form, answered once the joint configuration is
    /// left: (token, deadline tick).
    leaving: Option<(Token, u64)>,
    reads: BTreeMap<u64, PendingRead>,
    next_read_id: u64,
    /// Ready numbers handed to the shell, with the messages to send once durable.
    awaiting_persist: VecDeque<(u64, Vec<Message>)>,
    /// The ready number of a snapshot installed but not yet durable: raft-rs may not be
    /// told it is applied before then.
    snapshot_unpersisted: Option<u64>,
    /// Committed entries not yet applied: a ready that also has entries to write leaves
    /// its committed ones for the next `poll`, so that the shell starts the write (and
    /// its fsync) first and the ledger executes while the disk works. Under load (more
    /// than one request in flight) a follower's appends bring new entries together with
    /// the commit of earlier ones; executing those first delayed the new entries' fsync,
    /// and so their acknowledgement, by a whole batch's execution.
    deferred: Vec<Entry>,
    /// The metadata of the checkpoint the shell is writing, if any (one at a time).
    checkpointing: Option<raft::eraftpb::SnapshotMetadata>,
    out: Output,
    record_applied: bool,
    halted: Option<Halt>,
}

impl Replica {
    /// A replica over `log` (a new group's empty log, or one recovered from disk). Its
    /// ledger is the latest snapshot's, and raft-rs replays the committed entries after.
    pub fn new(config: Config, log: LogStore) -> Result<Replica, Halt> {
        let snapshot = log.latest_snapshot().clone();
        let index = snapshot.get_metadata().index;
        let (store, generation) = store_for(&config, index, &snapshot.data)?;
        let state = if index == 0 {
            ShardState::new(config.shard, Ledger::new(store))
        } else {
            load(config.shard, store, &snapshot)?
        };
        let core = ShardCore::new(config.commit, state, 0, 0);
        let mut log = log;
        if let Some(loader) = &config.snapshot_loader {
            log.set_loader(loader.clone());
        }
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: index,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_size_per_msg: 4 << 20,
            ..Default::default()
        };
        raft_config.validate().expect("valid raft settings");
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, log, &logger).expect("a log raft-rs accepts");
        let mut replica = Replica {
            rng: config.seed ^ (config.id << 32),
            generation,
            snapshots_sent: BTreeMap::new(),
            config,
            seen: (raw.raft.term, raw.raft.state),
            raw,
            core,
            commit_proposals: Vec::new(),
            proposed: BTreeMap::new(),
            applied: index,
            ticks: 0,
            clock_ns: 0,
            proposals: BTreeMap::new(),
            changes: BTreeMap::new(),
            leaving: None,
            reads: BTreeMap::new(),
            next_read_id: 1,
            awaiting_persist: VecDeque::new(),
            snapshot_unpersisted: None,
            deferred: Vec::new(),
            checkpointing: None,
            out: Output::default(),
            record_applied: false,
            halted: None,
        };
        replica.draw_election_timeout();
        Ok(replica)
    }

    /// Report every applied entry in `Output::applied` (for checkers).
    pub fn record_applied(&mut self, on: bool) {
        self.record_applied = on;
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// "leader", "follower", "candidate" or "pre-candidate".
    pub fn role(&self) -> &'static str {
        match self.raw.raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&id| id != raft::INVALID_ID)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The generation of the transfers file in use (`Config::transfers_file`): the
    /// shell may remove the other generations' files once this replica's latest
    /// snapshot record is durable.
    pub fn transfers_generation(&self) -> u64 {
        self.generation
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The in-memory log (what a rewrite of the durable log starts from).
    pub fn log(&self) -> &LogStore {
        self.raw.store()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.core.state().ledger
    }

    /// The replicated state: the ledger and the cross-shard protocol records.
    pub fn shard_state(&self) -> &ShardState {
        self.core.state()
    }

    fn now_ms(&self) -> u64 {
        self.clock_ns / 1_000_000
    }

    /// A cross-shard transaction this shard coordinates (its first debit account lives
    /// here). The answer comes in `Output::commit_replies` with `client`.
    pub fn submit_txn(&mut self, client: ClientRef, txn: Txn) -> Result<(), Refusal> {
        self.admit_write()?;
        let now = self.now_ms();
        match self.core.submit(now, client, txn) {
            Ok(()) => {}
            Err(settle_commit::Refusal::Overloaded) => return Err(Refusal::Busy),
            // The router sent it to the wrong shard: nothing was done.
            Err(settle_commit::Refusal::NotCoordinator) => return Err(Refusal::Unknown),
        }
        self.drain_core();
        Ok(())
    }

    /// This shard's part of a snapshot read of `accounts` at timestamp `at` (see
    /// `settle_commit::read`). The answer comes in `Output::read_replies` with `client`.
    pub fn read_at(
        &mut self,
        client: ClientRef,
        at: u64,
        accounts: Vec<u128>,
    ) -> Result<(), Refusal> {
        self.admit_write()?;
        let now = self.now_ms();
        self.core.read(now, client, at, accounts);
        self.drain_core();
        Ok(())
    }

    /// The leader's part in keeping the cluster's shard map (`settle_commit::shard_map`):
    /// the metadata shard's leader writes `initial` if its group holds no map yet, and
    /// every leader tells the metadata shard which nodes hold this shard's replicas. A
    /// follower does nothing. The shell calls it now and then.
    pub fn maintain_shard_map(&mut self, metadata_shard: u32, initial: &ShardMap) {
        if self.halted.is_some() || !self.is_leader() {
            return;
        }
        if metadata_shard == self.config.shard && self.core.state().shard_map.is_none() {
            self.core.publish_shard_map(initial.clone());
        }
        let voters = self.voters();
        self.core.report_replicas(metadata_shard, voters);
        self.drain_core();
    }

    /// A cross-shard protocol message for this shard. Only a leader acts on it; the
    /// sender resends what goes unanswered.
    pub fn receive_commit(&mut self, from: Address, message: settle_commit::Message) {
        if self.halted.is_some() || !self.is_leader() {
            return;
        }
        let now = self.now_ms();
        self.core.receive(now, from, message);
        self.drain_core();
    }

    /// What the core asked for: at the leader, messages and replies go out and entries
    /// are proposed; elsewhere they are dropped (a follower's core only applies), except
    /// the answers to reads a former leader was serving (interrupted: the client retries).
    fn drain_core(&mut self) {
        let commands = self.core.take_commands();
        let leader = self.is_leader();
        for command in commands {
            if let settle_commit::Command::ReadReply { client, read } = command {
                self.out.read_replies.push((client, read));
                continue;
            }
            if !leader {
                continue;
            }
            match command {
                settle_commit::Command::Send { to, message } => {
                    self.out.commit_messages.push((to, message))
                }
                settle_commit::Command::Reply { client, results, .. } => {
                    self.out.commit_replies.push((client, results))
                }
                settle_commit::Command::Persist(entry) => self.commit_proposals.push(entry),
                settle_commit::Command::ReadReply { .. } => unreachable!("answered above"),
            }
        }
    }

    /// Proposes what the core asked to write, many entries per Raft entry (bounded so
    /// that one stays well under a message's size).
    fn propose_commit_entries(&mut self) {
        const ENTRIES_PER_PROPOSAL: usize = 4096;
        let mut entries = std::mem::take(&mut self.commit_proposals);
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(ENTRIES_PER_PROPOSAL));
            let data = codec::encode_entries(&entries);
            // Refused only when leadership moved on; the next leader starts over from
            // the replicated records.
            if self.is_leader() && self.raw.propose(vec![], data).is_ok() {
                // A leader that cannot commit (cut off from its group) stops keeping
                // them; they decode when they apply.
                if self.proposed.len() < PROPOSED_MAX {
                    let index = self.raw.raft.raft_log.last_index();
                    self.proposed.insert(index, (self.raw.raft.term, entries));
                }
            }
            entries = rest;
        }
    }

    pub fn halted(&self) -> Option<&Halt> {
        self.halted.as_ref()
    }

    /// Whether the next `poll` has committed entries to apply (the work a shell may
    /// spread over threads: replicas are independent).
    pub fn has_work(&self) -> bool {
        self.halted.is_none()
            && (!self.deferred.is_empty() || self.raw.raft.raft_log.has_next_entries())
    }

    /// Advances logical time by one tick; `now_ns` is the shell's clock (it may jump).
    pub fn tick(&mut self, now_ns: u64) {
        if self.halted.is_some() {
            return;
        }
        self.ticks += 1;
        self.clock_ns = now_ns;
        // While an installed snapshot is not yet durable, raft-rs's applied index lags
        // the compacted log, and a campaign would read entries that are gone: raft-rs
        // is not ticked (as TiKV does while it applies a snapshot).
        if self.snapshot_unpersisted.is_none() {
            self.raw.tick();
        }
        self.set_election_timeout();
        self.expire_requests();
        self.expire_snapshots();
        if self.is_leader() {
            let now = self.now_ms();
            self.core.tick(now);
            self.drain_core();
        }
        self.maybe_pulse();
    }

    /// Takes a snapshot transfer that neither arrived nor failed in time as failed.
    fn expire_snapshots(&mut self) {
        if !self.is_leader() {
            self.snapshots_sent.clear();
            return;
        }
        let in_snapshot: Vec<u64> = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(_, progress)| progress.state == raft::ProgressState::Snapshot)
            .map(|(&id, _)| id)
            .collect();
        self.snapshots_sent.retain(|id, _| in_snapshot.contains(id));
        for id in in_snapshot {
            let since = *self.snapshots_sent.entry(id).or_insert(self.ticks);
            if self.ticks - since >= self.config.snapshot_timeout_ticks {
                self.snapshots_sent.remove(&id);
                self.raw.report_snapshot(id, raft::SnapshotStatus::Failure);
            }
        }
    }

    /// A message from another replica of this group.
    pub fn step(&mut self, message: Message) {
        if self.halted.is_some() {
            return;
        }
        // For the same reason as in `tick`: no campaign while a snapshot is not durable.
        if self.snapshot_unpersisted.is_some()
            && message.get_msg_type() == MessageType::MsgTimeoutNow
        {
            return;
        }
        // Errors are messages raft-rs chose to ignore (stale term, unknown peer).
        let _ = self.raw.step(message);
        self.set_election_timeout();
    }

    /// Proposes a write; its reply comes out of `poll` once it is applied here.
    pub fn propose(&mut self, token: Token, write: &Write, now_ns: u64) {
        assert!(write.event_count() <= BATCH_EVENTS_MAX, "the shell validates batch sizes");
        self.clock_ns = now_ns;
        if let Err(refusal) = self.admit_write() {
            self.out.replies.push((token, Err(refusal)));
            return;
        }
        if let Err(refusal) = self.propose_write(Some(token), write) {
            self.out.replies.push((token, Err(refusal)));
        }
    }

    /// A linearizable read (ReadIndex): answered once this replica has applied
    /// everything committed when the leader confirmed its leadership.
    pub fn read(&mut self, token: Token, read: Read) {
        let refusal = if self.halted.is_some() {
            Some(Refusal::Unknown)
        } else if self.leader().is_none() {
            Some(Refusal::NotLeader { leader: None })
        } else if self.reads.len() >= self.config.reads_max {
            Some(Refusal::Busy)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.out.replies.push((token, Err(refusal)));
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        let deadline_tick = self.ticks + self.config.request_timeout_ticks;
        self.reads.insert(id, PendingRead { token, read, deadline_tick, index: None });
        self.raw.read_index(id.to_le_bytes().to_vec());
    }

    /// The shell's fsync covered every record of the outputs up to ready `number`.
    pub fn persisted(&mut self, number: u64) {
        if self.halted.is_some() {
            return;
        }
        while let Some((n, _)) = self.awaiting_persist.front() {
            if *n > number {
                break;
            }
            let (_, messages) = self.awaiting_persist.pop_front().expect("front");
            self.out.messages.extend(messages);
        }
        self.raw.on_persist_ready(number);
        if self.snapshot_unpersisted.is_some_and(|n| n <= number) {
            self.snapshot_unpersisted = None;
            self.raw.advance_apply_to(self.applied);
        }
    }

    /// Whether a snapshot sent to `to` arrived.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        use raft::SnapshotStatus;
        let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
        self.raw.report_snapshot(to, status);
    }

    /// Adds (`remove` false) or removes node `node` as a voter, through joint
    /// consensus: raft-rs enters the joint configuration, then leaves it on its own once
    /// that is applied. Answered in `Output::membership` with the new voters once the
    /// joint configuration is left here.
    /// One change at a time: a second while one is in progress is refused `Busy`.
    pub fn change_membership(&mut self, token: Token, node: u64, remove: bool) {
        use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType};
        let refusal = match self.admit_write() {
            Err(refusal) => Some(refusal),
            Ok(()) if !self.changes.is_empty() || self.leaving.is_some() => Some(Refusal::Busy),
            Ok(()) => None,
        };
        if let Some(refusal) = refusal {
            self.out.membership.push((token, Err(refusal)));
            return;
        }
        if remove && node == self.config.id {
            // raft-rs cannot lead a group it is no longer in: hand leadership to another
            // member first; the retry (the answer says no leader is known) reaches it.
            let others = self.voters().into_iter().filter(|&id| id != node);
            if let Some(successor) = others.max_by_key(|&id| self.match_index(id)) {
                self.raw.transfer_leader(successor);
            }
            self.out.membership.push((token, Err(Refusal::NotLeader { leader: None })));
            return;
        }
        let mut single = ConfChangeSingle { node_id: node, ..Default::default() };
        single.set_change_type(if remove {
            ConfChangeType::RemoveNode
        } else {
            ConfChangeType::AddNode
        });
        let mut change = ConfChangeV2::default();
        change.set_transition(ConfChangeTransition::Implicit);
        change.set_changes(vec![single].into());
        let last_before = self.raw.raft.raft_log.last_index();
        if self.raw.propose_conf_change(vec![], change).is_err() {
            // raft-rs refuses while a previous change is still being applied.
            self.out.membership.push((token, Err(Refusal::Busy)));
            return;
        }
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, last_before + 1, "one proposal, one entry");
        let deadline_tick = self.ticks + self.config.request_timeout_ticks;
        self.changes.insert(index, (self.raw.raft.term, token, deadline_tick));
    }

    /// How far `id`'s log is known to match the leader's (0 when unknown).
    fn match_index(&self, id: u64) -> u64 {
        self.raw.raft.prs().get(id).map_or(0, |progress| progress.matched)
    }

    /// Whether node `id` holds this shard: a voter of the current configuration (either
    /// half while joint), or any node while this replica has heard no configuration
    /// yet (a new replica catching up). Allocates nothing (the engine asks often).
    pub fn holds(&self, id: u64) -> bool {
        let conf = self.raw.store().conf_state();
        (conf.voters.is_empty() && conf.voters_outgoing.is_empty())
            || conf.voters.contains(&id)
            || conf.voters_outgoing.contains(&id)
    }

    /// The voters of the current configuration (both halves while joint).
    pub fn voters(&self) -> Vec<u64> {
        let conf = self.raw.store().conf_state();
        let mut voters: Vec<u64> =
            conf.voters.iter().chain(&conf.voters_outgoing).copied().collect();
        voters.sort_unstable();
        voters.dedup();
        voters
    }

    /// Everything the inputs since the last call produced.
    ///
    /// Committed entries that came with entries to write are applied by the next call
    /// (see `deferred`): a shell polls again whenever the output was not empty.
    pub fn poll(&mut self) -> Output {
        // The previous poll's writes are with the disk by now.
        self.apply_deferred();
        loop {
            while self.halted.is_none() && self.raw.has_ready() {
                self.handle_ready();
            }
            if self.out.writes.is_empty() && !self.deferred.is_empty() {
                // Nothing to hand to the disk first: apply now (which may make a ready).
                self.apply_deferred();
                continue;
            }
            if self.commit_proposals.is_empty() || self.halted.is_some() {
                break;
            }
            self.propose_commit_entries();
        }
        self.answer_reads();
        self.maybe_checkpoint();
        std::mem::take(&mut self.out)
    }

    fn admit_write(&self) -> Result<(), Refusal> {
        if self.halted.is_some() {
            return Err(Refusal::Unknown);
        }
        if !self.is_leader() {
            return Err(Refusal::NotLeader { leader: self.leader() });
        }
        if self.proposals.len() >= self.config.proposals_max {
            return Err(Refusal::Busy);
        }
        Ok(())
    }

    fn propose_write(&mut self, token: Option<Token>, write: &Write) -> Result<(), Refusal> {
        let mut data = Vec::new();
        write.encode(self.clock_ns, &mut data);
        let last_before = self.raw.raft.raft_log.last_index();
        self.raw.propose(vec![], data).map_err(|_| Refusal::NotLeader { leader: self.leader() })?;
        let index = self.raw.raft.raft_log.last_index();
        assert_eq!(index, last_before + 1, "one proposal, one entry");
        let deadline_tick = self.ticks + self.config.request_timeout_ticks;
        self.proposals.insert(index, Proposal { term: self.raw.raft.term, token, deadline_tick });
        Ok(())
    }

    /// Applies the deferred committed entries and tells raft-rs (not between `ready()`
    /// and `advance_append_async`, nor while an installed snapshot is not yet durable).
    fn apply_deferred(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.deferred);
        self.apply(entries);
        if self.snapshot_unpersisted.is_none() && self.halted.is_none() {
            self.raw.advance_apply_to(self.applied);
        }
    }

    fn handle_ready(&mut self) {
        let mut ready = self.raw.ready();
        self.out.messages.extend(ready.take_messages());
        self.deferred.extend(ready.take_committed_entries());
        if !ready.snapshot().is_empty() {
            // Committed entries a ready carries are older than any snapshot in it:
            // they are applied before it is installed.
            let committed = std::mem::take(&mut self.deferred);
            self.apply(committed);
            let snapshot = ready.snapshot().clone();
            if let Err(halt) = self.install(&snapshot) {
                self.halt(halt);
                return;
            }
            self.snapshot_unpersisted = Some(ready.number());
            self.out.writes.push(Record::InstalledSnapshot(snapshot));
        }
        if !ready.entries().is_empty() {
            self.raw.mut_store().append(ready.entries());
            self.out.writes.push(Record::Entries(ready.take_entries()));
        }
        if let Some(hs) = ready.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
            self.out.writes.push(Record::HardState(hs.clone()));
        }
        for state in ready.take_read_states() {
            let id = u64::from_le_bytes(state.request_ctx.as_slice().try_into().unwrap_or([0; 8]));
            if let Some(read) = self.reads.get_mut(&id) {
                read.index = Some(state.index);
            }
        }
        let number = ready.number();
        self.awaiting_persist.push_back((number, ready.take_persisted_messages()));
        self.out.persist_number = Some(number);
        self.raw.advance_append_async(ready);
        // Only now: telling raft-rs what was applied may append an entry (leaving a
        // joint configuration), which must not happen between `ready()` and
        // `advance_append_async`. Not while an installed snapshot is not yet durable.
        if self.snapshot_unpersisted.is_none() {
            self.raw.advance_apply_to(self.applied);
        }
        self.set_election_timeout();
    }

    fn install(&mut self, snapshot: &Snapshot) -> Result<(), Halt> {
        let index = snapshot.get_metadata().index;
        self.generation += 1;
        let store = new_store(&self.config, self.generation)?;
        let state = load(self.config.shard, store, snapshot)?;
        let (term, now) = (self.raw.raft.term as u32, self.now_ms());
        self.core.install(state, term, now);
        self.proposed = self.proposed.split_off(&(index + 1));
        // The old generation's file stays until this snapshot's record is durable: the
        // checkpoint the log names until then may refer to it. The shell removes it
        // (`Replica::transfers_generation`).
        self.raw.mut_store().install_snapshot(snapshot.clone());
        // The record going out carries the data; the shell stores it before anything
        // could ask for it back.
        self.raw.mut_store().drop_snapshot_data();
        self.applied = index;
        // Whatever waited on entries the snapshot covers cannot be matched any more.
        if let Some((token, _)) = self.leaving.take() {
            self.out.membership.push((token, Err(Refusal::Unknown)));
        }
        let covered: Vec<u64> = self.changes.range(..=index).map(|(&i, _)| i).collect();
        for index in covered {
            let (_, token, _) = self.changes.remove(&index).expect("listed");
            self.out.membership.push((token, Err(Refusal::Unknown)));
        }
        let covered: Vec<u64> = self.proposals.range(..=index).map(|(&i, _)| i).collect();
        for index in covered {
            let proposal = self.proposals.remove(&index).expect("listed");
            if let Some(token) = proposal.token {
                self.out.replies.push((token, Err(Refusal::Unknown)));
            }
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            if self.halted.is_some() {
                return;
            }
            assert_eq!(entry.index, self.applied + 1, "entries apply once, in order");
            let outcome = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => Ok(None),
                EntryType::EntryNormal
                    if entry.data[0] == codec::ENTRY_TAG || entry.data[0] == codec::ENTRIES_TAG =>
                {
                    self.apply_commit_entry(&entry).map(|()| None)
                }
                EntryType::EntryNormal => self.apply_write(&entry).map(Some),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry).map(|()| None)
                }
            };
            let (write, reply, timestamp) = match outcome {
                Ok(Some((write, reply, timestamp))) => (Some(write), Some(reply), timestamp),
                Ok(None) => (None, None, 0),
                Err(halt) => return self.halt(halt),
            };
            self.applied = entry.index;
            if let Some(proposal) = self.proposals.remove(&entry.index) {
                if let Some(token) = proposal.token {
                    let answer = match (&reply, proposal.term == entry.term) {
                        (Some(reply), true) => Ok(reply.clone()),
                        // Another leader's entry took this index: ours was never applied,
                        // but the client cannot tell that from a lost reply.
                        _ => Err(Refusal::Unknown),
                    };
                    self.out.replies.push((token, answer));
                }
            }
            if self.record_applied {
                let (index, term) = (entry.index, entry.term);
                self.out.applied.push(Applied { index, term, timestamp, write, reply });
            }
        }
    }

    fn apply_write(&mut self, entry: &Entry) -> Result<(Write, Reply, u64), Halt> {
        let bad = |reason: String| Halt::BadEntry { index: entry.index, reason };
        let (write, clock_ns) = Write::decode(&entry.data).map_err(|e| bad(e.to_string()))?;
        let (reply, timestamp) = self
            .core
            .ledger_mut()
            .execute_write(clock_ns, &write)
            .map_err(|e| bad(e.to_string()))?;
        Ok((write, reply, timestamp))
    }

    /// A cross-shard protocol entry: every replica applies it; the leader's core acts.
    fn apply_commit_entry(&mut self, entry: &Entry) -> Result<(), Halt> {
        let bad = |reason: String| Halt::BadEntry { index: entry.index, reason };
        let decode = || {
            if entry.data[0] == codec::ENTRIES_TAG {
                codec::decode_entries(&entry.data)
            } else {
                codec::decode_entry(&entry.data).map(|one| vec![one])
            }
            .map_err(|e| bad(e.to_string()))
        };
        let decoded = match self.proposed.remove(&entry.index) {
            Some((term, proposed)) if term == entry.term => {
                debug_assert_eq!(decode().ok().as_ref(), Some(&proposed), "what was proposed");
                proposed
            }
            _ => decode()?,
        };
        let now = self.now_ms();
        for one in &decoded {
            if let settle_commit::Applied::Refused(why) = self.core.persisted(now, one) {
                // The state did not change (the same at every replica); a leader that
                // wrote this entry contradicted itself. Nothing to undo; say so.
                self.out.commit_refused.push(format!("entry {}: {why}", entry.index));
            }
        }
        self.drain_core();
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), Halt> {
        let bad = |reason: String| Halt::BadEntry { index: entry.index, reason };
        let change: ConfChangeV2 = if entry.get_entry_type() == EntryType::EntryConfChange {
            let mut change = ConfChange::default();
            change.merge_from_bytes(&entry.data).map_err(|e| bad(e.to_string()))?;
            change.into_v2()
        } else {
            let mut change = ConfChangeV2::default();
            change.merge_from_bytes(&entry.data).map_err(|e| bad(e.to_string()))?;
            change
        };
        let conf_state = self.raw.apply_conf_change(&change).map_err(|e| bad(e.to_string()))?;
        self.raw.mut_store().set_conf_state(conf_state);
        if self.is_leader() && !self.voters().contains(&self.config.id) {
            // This leader was removed (a change proposed before it led). raft-rs leaves
            // stepping down to the application; leading a group it is not in would
            // break it. The remaining members elect a leader among themselves.
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
        let joint = !self.raw.store().conf_state().voters_outgoing.is_empty();
        if let Some((term, token, deadline)) = self.changes.remove(&entry.index) {
            if term != entry.term {
                self.out.membership.push((token, Err(Refusal::Unknown)));
            } else if joint {
                self.leaving = Some((token, deadline));
            } else {
                self.out.membership.push((token, Ok(self.voters())));
            }
        }
        if !joint {
            if let Some((token, _)) = self.leaving.take() {
                self.out.membership.push((token, Ok(self.voters())));
            }
        }
        Ok(())
    }

    fn answer_reads(&mut self) {
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, read)| read.index.is_some_and(|index| index <= self.applied))
            .map(|(&id, _)| id)
            .collect();
        for id in ready {
            let read = self.reads.remove(&id).expect("listed");
            self.out.replies.push((read.token, Ok(self.core.state().ledger.query(&read.read))));
        }
    }

    fn expire_requests(&mut self) {
        let now = self.ticks;
        let expired: Vec<u64> = self
            .proposals
            .iter()
            .filter(|(_, p)| p.deadline_tick <= now)
            .map(|(&i, _)| i)
            .collect();
        for index in expired {
            if let Some(token) = self.proposals.remove(&index).and_then(|p| p.token) {
                self.out.replies.push((token, Err(Refusal::Unknown)));
            }
        }
        if self.leaving.is_some_and(|(_, deadline)| deadline <= now) {
            let (token, _) = self.leaving.take().expect("checked");
            self.out.membership.push((token, Err(Refusal::Unknown)));
        }
        let expired: Vec<u64> =
            self.changes.iter().filter(|(_, c)| c.2 <= now).map(|(&i, _)| i).collect();
        for index in expired {
            let (_, token, _) = self.changes.remove(&index).expect("listed");
            self.out.membership.push((token, Err(Refusal::Unknown)));
        }
        let expired: Vec<u64> =
            self.reads.iter().filter(|(_, r)| r.deadline_tick <= now).map(|(&id, _)| id).collect();
        for id in expired {
            let read = self.reads.remove(&id).expect("listed");
            self.out.replies.push((read.token, Err(Refusal::Unknown)));
        }
    }

    /// The leader proposes a pulse when a pending transfer's deadline has passed on its
    /// clock (one at a time).
    fn maybe_pulse(&mut self) {
        let due = self.ledger().next_expiry().is_some_and(|deadline| deadline <= self.clock_ns);
        let in_flight = self.proposals.values().any(|p| p.token.is_none());
        if due && !in_flight && self.admit_write().is_ok() {
            // A refusal here only means leadership moved on; the next leader pulses.
            let _ = self.propose_write(None, &Write::Pulse);
        }
    }

    fn maybe_checkpoint(&mut self) {
        let store = self.raw.store();
        let last = store.latest_snapshot().get_metadata().index;
        // raft-rs may need one the latest cannot serve (see `LogStore::snapshot`).
        let wanted = store.take_snapshot_wanted() && self.applied > last;
        let due = wanted
            || self.applied >= last + self.config.checkpoint_entries
            || (self.applied > last && store.entry_bytes() >= self.config.checkpoint_bytes);
        if self.halted.is_some() || self.checkpointing.is_some() || !due {
            return;
        }
        // Capturing is cheap next to writing: the shell writes, possibly in the
        // background, while this replica goes on.
        let mut source = self.ledger().snapshot_source().expect("an in-memory ledger captures");
        source.set_extension(self.core.state().snapshot_records());
        if self.config.transfers_file.is_some() {
            // The records already in the file are not written again: the checkpoint
            // refers to them (and a start adopts them), so its cost follows what changed.
            source.refer_to_transfers_file(self.generation);
        }
        let mut meta = raft::eraftpb::SnapshotMetadata {
            index: self.applied,
            term: raft::Storage::term(store, self.applied).expect("applied entries are in the log"),
            ..Default::default()
        };
        meta.set_conf_state(store.conf_state().clone());
        self.checkpointing = Some(meta);
        self.out.checkpoint = Some(CheckpointJob { index: self.applied, source });
    }

    /// The shell wrote the checkpoint at `index` durably; `data` is its bytes, or empty
    /// when the shell keeps them (`Config::snapshot_loader` then reads them back). The
    /// log is compacted behind it and the checkpoint record is output (the shell may
    /// store the data apart from the log, as long as recovery finds it again).
    pub fn checkpoint_written(&mut self, index: u64, data: Vec<u8>) {
        let Some(meta) = self.checkpointing.take() else { return };
        assert!(!data.is_empty() || self.config.snapshot_loader.is_some(), "snapshot data");
        assert_eq!(meta.index, index, "the checkpoint handed out");
        if self.halted.is_some() || index <= self.raw.store().latest_snapshot().get_metadata().index
        {
            return; // a snapshot installed meanwhile is newer
        }
        let mut snapshot = Snapshot { data: data.into(), ..Default::default() };
        snapshot.set_metadata(meta);
        let keep_from = (index + 1)
            .saturating_sub(self.config.keep_entries)
            .max(1)
            .max(self.raw.store().first_within(index, self.config.keep_bytes));
        self.raw.mut_store().checkpoint(snapshot.clone(), keep_from);
        // The shell stored the data before handing it back.
        self.raw.mut_store().drop_snapshot_data();
        self.out.writes.push(Record::Checkpoint { snapshot, keep_from });
    }

    fn halt(&mut self, halt: Halt) {
        // Fail-stop: answer nothing more. Waiting clients time out and go elsewhere.
        self.halted = Some(halt);
    }

    /// raft-rs redraws its election timeout from the thread's RNG whenever it changes
    /// term or role; replace each draw with one from the seeded generator.
    fn set_election_timeout(&mut self) {
        let now = (self.raw.raft.term, self.raw.raft.state);
        if now != self.seen {
            let was_leader = self.seen.1 == StateRole::Leader;
            self.seen = now;
            self.draw_election_timeout();
            if was_leader || now.1 == StateRole::Leader {
                // A new leader finishes what the last one started, from the replicated
                // records alone; a former leader forgets what it was doing.
                self.commit_proposals.clear();
                self.proposed.clear();
                let clock = self.now_ms();
                self.core.reset(now.0 as u32, clock);
                self.drain_core();
            }
        }
    }

    fn draw_election_timeout(&mut self) {
        let span = self.config.election_ticks as u64;
        let timeout = self.config.election_ticks + (splitmix64(&mut self.rng) % span) as usize;
        self.raw.raft.set_randomized_election_timeout(timeout);
    }
}

/// The file of generation `generation` of the transfers file `base`.
pub fn generation_path(base: &std::path::Path, generation: u64) -> std::path::PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{generation}"));
    name.into()
}

/// The store a replica's latest snapshot is read into at its start, and the generation of
/// its transfers file: the file a checkpoint refers to, taken as it is; otherwise a new
/// store of generation 0.
fn store_for(config: &Config, index: u64, snapshot: &[u8]) -> Result<(MemStore, u64), Halt> {
    let Some(base) = &config.transfers_file else { return Ok((MemStore::default(), 0)) };
    let tag = match index {
        0 => None,
        _ => settle_ledger::store::transfers_file_tag(snapshot)
            .map_err(|e| Halt::BadSnapshot { index, reason: e.to_string() })?,
    };
    let Some(generation) = tag else { return Ok((new_store(config, 0)?, 0)) };
    let path = generation_path(base, generation);
    let store = MemStore::with_existing_transfer_file(&path)
        .map_err(|e| Halt::Storage { path: path.display().to_string(), reason: e.to_string() })?;
    Ok((store, generation))
}

/// An empty store as `config` asks for it.
fn new_store(config: &Config, generation: u64) -> Result<MemStore, Halt> {
    let Some(base) = &config.transfers_file else { return Ok(MemStore::default()) };
    let path = generation_path(base, generation);
    MemStore::with_transfer_file(&path)
        .map_err(|e| Halt::Storage { path: path.display().to_string(), reason: e.to_string() })
}

/// The replicated state a snapshot holds: the ledger, and the protocol records in its
/// extension.
fn load(shard: u32, store: MemStore, snapshot: &Snapshot) -> Result<ShardState, Halt> {
    let data = &snapshot.data;
    let index = snapshot.get_metadata().index;
    let (ledger, records) =
        Ledger::read_snapshot_with_extension(store, data.len() as u64, || Ok(&data[..]))
            .map_err(|e| Halt::BadSnapshot { index, reason: e.to_string() })?;
    ShardState::from_snapshot(shard, ledger, &records)
        .map_err(|e| Halt::BadSnapshot { index, reason: format!("protocol records: {e}") })
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
