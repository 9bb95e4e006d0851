//! A shard's protocol roles, as one pure state machine: the participant (Gray &
//! Lamport's resource manager) for every transaction that touches this shard, and the
//! coordinator (2PC, 3PC) or leader (Paxos Commit) for every transaction whose first
//! debit account lives here. In production it runs at the shard's Raft leader; a new
//! leader builds a fresh core over the replicated `ShardState` and finishes what the
//! old one started.
//!
//! Inputs: `submit` / `submit_local` (a client's request), `receive` (a protocol
//! message), `persisted` (an entry this core asked to persist is durable in the group, in
//! order), `tick` (time passes). Output: `take_commands`. The core reads no clock: every
//! input carries `now_ms`.
//!
//! Messages between this shard's own roles (its participant and its coordinator) go
//! through the shell like any other, so that the counts compare with Gray & Lamport's
//! table, whose coordinator is not co-located.

use std::collections::{BTreeMap, BTreeSet};

use settle_ledger::{CreateTransferResult as R, Side, Transfer, TransferFlags};

use crate::message::{
    Accepted, Address, Ballot, Body, ClientRef, Command, Entry, Message, Record, ThreePhaseState,
};
use crate::read::Reads;
use crate::shard_map::ShardMap;
use crate::state::{Applied, CoordinatorRecord, ParticipantRecord, ShardState};
use crate::txn::{decide, Commit, Outcome, Protocol, ShardId, Txn, TxnId, Vote};

/// Timing and sizing of the protocols. Every wait has a limit.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Acceptors per coordinator shard (Paxos Commit): 2F+1, one per replica.
    pub acceptors: u8,
    /// Resend what is unanswered this often.
    pub resend_ms: u64,
    /// A coordinator waits this long for votes before it aborts (2PC, 3PC) or starts a
    /// recovery ballot (Paxos Commit).
    pub vote_timeout_ms: u64,
    /// An in-doubt participant asks its coordinator this often.
    pub inquire_ms: u64,
    /// 3PC: a participant that hears nothing from its coordinator this long runs the
    /// termination protocol; the coordinator commits after waiting this long for
    /// PreCommit acknowledgements.
    pub termination_ms: u64,
    /// Most transactions a coordinator works on at once; more are refused with
    /// `Overloaded` until some finish.
    pub in_flight_max: usize,
    /// Decided outcomes a Paxos Commit leader remembers for late questions (older ones
    /// are learned again from the acceptors).
    pub outcomes_max: usize,
    /// Propose `Record::Pulse` when a pending transfer's deadline passes (shells with a
    /// pulse of their own, like the replica, leave this off).
    pub pulses: bool,
    /// A snapshot read waits at most this long for transactions in doubt.
    pub read_wait_ms: u64,
    /// 2PC: the coordinator is the last agent (Gray & Reuter): it asks the other
    /// participants to prepare, and once they all voted it prepares its own sides,
    /// decides and carries the decision out on them in one write
    /// (`Record::DecideLast`). One write and a decision message fewer than the
    /// classic form, and its sides' work in one pass; the same two forced writes on a
    /// client's path (the others' prepares, then the coordinator's). Off, 2PC runs in
    /// Gray & Lamport's form, which the lab measures against their table. A
    /// coordinator that resumes a transaction (a new leader) runs the classic form.
    pub last_agent: bool,
    /// How far a commit's agreed timestamp may lie ahead of this shard's clock (the
    /// shards' clocks differ by their skew): a commit further ahead is ignored, as no
    /// honest coordinator sends it, so that a broken peer cannot push the clock on.
    pub clock_skew_max_ms: u64,
}

impl Config {
    pub fn new(acceptors: u8) -> Config {
        assert!(acceptors % 2 == 1, "2F+1 acceptors");
        Config {
            acceptors,
            resend_ms: 250,
            vote_timeout_ms: 3_000,
            inquire_ms: 500,
            termination_ms: 2_500,
            in_flight_max: 32_768,
            outcomes_max: 100_000,
            pulses: false,
            read_wait_ms: 10_000,
            last_agent: true,
            clock_skew_max_ms: 60_000,
        }
    }

    /// F: the acceptor faults Paxos Commit tolerates.
    pub fn faults_tolerated(&self) -> u8 {
        self.acceptors / 2
    }
}

/// Why a submitted transaction was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This shard is not the transaction's coordinator.
    NotCoordinator,
    /// Too many transactions in flight; retry later.
    Overloaded,
}

/// Where a coordination stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Collecting votes (2PC, 3PC) or phase 2b messages (Paxos Commit).
    Voting,
    /// 3PC: PreCommit written or being written; collecting acknowledgements.
    PreCommitting,
    /// The decision is being written (2PC, 3PC).
    Deciding,
    /// Paxos Commit: a recovery ballot's phase 1.
    Recovering,
}

/// A transaction this shard coordinates (volatile: a new leader rebuilds it).
#[derive(Debug)]
struct Coordination {
    txn: Txn,
    phase: Phase,
    started_ms: u64,
    resent_ms: u64,
    /// 2PC, 3PC: votes by participant.
    votes: BTreeMap<ShardId, Vote>,
    /// 3PC: PreCommit acknowledgements.
    acks: BTreeSet<ShardId>,
    /// 3PC: what PreCommit carries (set once every vote was yes).
    commit: Option<Commit>,
    /// Paxos Commit: what each acceptor accepted, per instance.
    accepted: BTreeMap<ShardId, BTreeMap<u8, Accepted>>,
    ballot: Ballot,
    promises: BTreeMap<u8, Vec<Accepted>>,
    /// 2PC: this shard is the last agent (see `Config::last_agent`): its own vote is
    /// not awaited, it is given in the decision's write.
    last_agent: bool,
}

impl Coordination {
    fn new(txn: Txn, phase: Phase, now_ms: u64) -> Coordination {
        Coordination {
            txn,
            phase,
            started_ms: now_ms,
            resent_ms: now_ms,
            votes: BTreeMap::new(),
            acks: BTreeSet::new(),
            commit: None,
            accepted: BTreeMap::new(),
            ballot: 0,
            promises: BTreeMap::new(),
            last_agent: false,
        }
    }
}

/// A participant's timers for a transaction it prepared and has not resolved.
#[derive(Clone, Copy, Debug)]
struct Doubt {
    since_ms: u64,
    asked_ms: u64,
    /// 3PC: when the coordinator was last heard about this transaction.
    heard_ms: u64,
    /// 3PC's termination protocol applies.
    three_phase: bool,
}

impl Doubt {
    fn new(now_ms: u64, protocol: Protocol) -> Doubt {
        Doubt {
            since_ms: now_ms,
            asked_ms: now_ms,
            heard_ms: now_ms,
            three_phase: protocol == Protocol::ThreePhase,
        }
    }
}

/// 3PC: a participant's answer to the termination protocol: its state, its outcome
/// once it has one, the commit it was precommitted with.
type PeerState = (ThreePhaseState, Option<Outcome>, Option<Commit>);

/// 3PC: a termination this shard runs as backup coordinator.
#[derive(Debug)]
struct Termination {
    started_ms: u64,
    asked_ms: u64,
    states: BTreeMap<ShardId, PeerState>,
}

/// One shard's protocol core. See the module docs.
pub struct ShardCore {
    config: Config,
    state: ShardState,
    incarnation: u32,
    now_ms: u64,
    /// Nanosecond timestamps handed to entries; never decrease.
    last_timestamp: u64,
    commands: Vec<Command>,
    coordinating: BTreeMap<TxnId, Coordination>,
    /// Paxos Commit outcomes this leader learned (oldest first evicted).
    outcomes: BTreeMap<TxnId, Outcome>,
    outcome_order: std::collections::VecDeque<TxnId>,
    waiting: BTreeMap<TxnId, Vec<ClientRef>>,
    doubts: BTreeMap<TxnId, Doubt>,
    terminations: BTreeMap<TxnId, Termination>,
    /// Entries handed to the shell and not yet back, by transaction and kind, so that a
    /// resent message does not write twice.
    persisting: BTreeSet<(TxnId, u8)>,
    /// Message delays so far, per transaction.
    depth: BTreeMap<TxnId, u32>,
    /// Highest recovery round seen (Paxos Commit), so new ballots are higher.
    round: u64,
    /// 2PC: participants that carried out each decided transaction.
    acks: BTreeMap<TxnId, BTreeSet<ShardId>>,
    /// 2PC decisions every participant carried out, to forget in one write.
    forget: Vec<TxnId>,
    /// When unacknowledged 2PC decisions were last sent again.
    reminded_ms: u64,
    /// A `Record::Pulse` is on its way (one at a time).
    pulsing: bool,
    /// When each 2PC decision not yet forgotten was written (or found, after a
    /// restart): reminders go only to decisions older than `inquire_ms`.
    decided_at: BTreeMap<TxnId, u64>,
    /// Snapshot reads in flight (see `read.rs`).
    reads: Reads,
    /// Transactions whose prepare waits for a pending transfer in doubt here, by that
    /// transfer's id (see `waits_for`); at most `DEFERRED_MAX` in all.
    deferred: BTreeMap<u128, Vec<Txn>>,
    deferred_count: usize,
    /// When the shard map version in flight was proposed (the metadata shard's leader).
    map_proposed_ms: Option<u64>,
}

/// Most prepares waiting for a pending transfer in doubt; beyond, a prepare goes ahead
/// (and its post or void fails with `pending_transfer_not_found`, as the client retries).
const DEFERRED_MAX: usize = 4096;

const PERSIST_PREPARE: u8 = 0;
const PERSIST_PRECOMMIT: u8 = 1;
const PERSIST_COORDINATOR: u8 = 2;
const PERSIST_RESOLVE: u8 = 3;
/// How long a proposed shard map version may take to come back before it is proposed
/// again (see `ShardCore::propose_map`).
const MAP_PROPOSAL_MS: u64 = 5_000;

/// The shard a message came from (an acceptor speaks for its shard too).
fn from_shard_of(from: Address) -> ShardId {
    match from {
        Address::Shard(shard) | Address::Acceptor { shard, .. } => shard,
    }
}

impl ShardCore {
    /// A core over `state` (what the group holds). `incarnation` must differ for every
    /// core ever built for this shard (a term and node id in production), because it
    /// makes Paxos ballots unique.
    pub fn new(config: Config, state: ShardState, incarnation: u32, now_ms: u64) -> ShardCore {
        let mut core = ShardCore {
            config,
            last_timestamp: state.ledger.commit_timestamp(),
            state,
            incarnation,
            now_ms,
            commands: Vec::new(),
            coordinating: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            outcome_order: Default::default(),
            waiting: BTreeMap::new(),
            doubts: BTreeMap::new(),
            terminations: BTreeMap::new(),
            persisting: BTreeSet::new(),
            depth: BTreeMap::new(),
            round: 0,
            acks: BTreeMap::new(),
            forget: Vec::new(),
            reminded_ms: now_ms,
            pulsing: false,
            decided_at: BTreeMap::new(),
            reads: Reads::default(),
            deferred: BTreeMap::new(),
            deferred_count: 0,
            map_proposed_ms: None,
        };
        // 2PC decisions not yet forgotten: tell the participants again; those that
        // carried them out acknowledge, and the decision can go.
        let decided: Vec<(Txn, Outcome)> = core
            .state
            .coordinated
            .values()
            .filter_map(|record| match record {
                CoordinatorRecord::Decided { txn, outcome }
                    if txn.protocol == Protocol::TwoPhase =>
                {
                    Some((txn.clone(), outcome.clone()))
                }
                _ => None,
            })
            .collect();
        for (txn, outcome) in decided {
            core.decided_at.insert(txn.id(), now_ms);
            core.broadcast(&txn, |_| Body::Decision { txn: txn.clone(), outcome: outcome.clone() });
        }
        // Whatever is in doubt stays in doubt: ask about it soon.
        let doubts: Vec<(TxnId, Protocol)> =
            core.state.in_doubt().map(|record| (record.txn.id(), record.txn.protocol)).collect();
        for (id, protocol) in doubts {
            core.doubts.insert(id, Doubt::new(now_ms, protocol));
        }
        // A 3PC coordinator that wrote PreCommit finishes the round it started.
        let precommitted: Vec<(Txn, Commit)> = core
            .state
            .coordinated
            .values()
            .filter_map(|record| match record {
                CoordinatorRecord::PreCommitted { txn, commit } => {
                    Some((txn.clone(), commit.clone()))
                }
                CoordinatorRecord::Decided { .. } => None,
            })
            .collect();
        for (txn, commit) in precommitted {
            let mut coordination = Coordination::new(txn.clone(), Phase::PreCommitting, now_ms);
            coordination.commit = Some(commit.clone());
            core.coordinating.insert(txn.id(), coordination);
            core.broadcast(&txn, |_| Body::PreCommit { txn: txn.clone(), commit: commit.clone() });
        }
        core
    }

    pub fn shard(&self) -> ShardId {
        self.state.shard
    }

    pub fn state(&self) -> &ShardState {
        &self.state
    }

    /// Gives the state back (a crash: the volatile part is dropped).
    pub fn into_state(self) -> ShardState {
        self.state
    }

    /// The ledger, for the writes that bypass the protocols (a single-shard batch in a
    /// replicated log): every replica applies them in log order like protocol entries.
    pub fn ledger_mut(&mut self) -> &mut settle_ledger::Ledger {
        &mut self.state.ledger
    }

    /// Drops the volatile part and starts over from the replicated state: what a new
    /// leader does (`incarnation`: unique per leadership, e.g. the Raft term).
    pub fn reset(&mut self, incarnation: u32, now_ms: u64) {
        let shard = self.shard();
        let empty = ShardState::new(shard, settle_ledger::Ledger::new(Default::default()));
        let state = std::mem::replace(&mut self.state, empty);
        let interrupted = self.reads.interrupt();
        *self = ShardCore::new(self.config, state, incarnation, now_ms);
        self.answer_reads(interrupted);
    }

    /// Replaces the replicated state (a snapshot was installed) and starts over.
    pub fn install(&mut self, state: ShardState, incarnation: u32, now_ms: u64) {
        let interrupted = self.reads.interrupt();
        *self = ShardCore::new(self.config, state, incarnation, now_ms);
        self.answer_reads(interrupted);
    }

    /// A client reads `accounts` as of timestamp `at` (this shard's part of a snapshot
    /// read across shards, see `read.rs`). The answer comes as `Command::ReadReply`.
    pub fn read(&mut self, now_ms: u64, client: ClientRef, at: u64, accounts: Vec<u128>) {
        self.now_ms = self.now_ms.max(now_ms);
        match self.reads.begin(client, at, accounts, self.now_ms) {
            Ok(()) => {
                let incarnation = self.incarnation;
                let entry = self.entry(Record::ReadPoint { client, at, incarnation });
                self.commands.push(Command::Persist(entry));
            }
            Err(error) => self.answer_reads(vec![(client, Err(error))]),
        }
    }

    /// Snapshot reads in flight.
    pub fn reading(&self) -> usize {
        self.reads.len()
    }

    fn answer_reads(&mut self, answers: Vec<crate::read::Answer>) {
        for (client, read) in answers {
            self.commands.push(Command::ReadReply { client, read });
        }
    }

    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Transactions this coordinator is working on.
    pub fn coordinating(&self) -> usize {
        self.coordinating.len()
    }

    fn entry(&mut self, record: Record) -> Entry {
        let timestamp = (self.now_ms * 1_000_000).max(self.last_timestamp + 1_000);
        self.last_timestamp = timestamp;
        Entry { timestamp, record }
    }

    fn persist(&mut self, txn: TxnId, kind: u8, record: Record) {
        if self.persisting.insert((txn, kind)) {
            let entry = self.entry(record);
            self.commands.push(Command::Persist(entry));
        }
    }

    fn send(&mut self, to: Address, txn: TxnId, body: Body) {
        let depth = self.depth.get(&txn).copied().unwrap_or(0) + 1;
        self.commands.push(Command::Send { to, message: Message { txn, depth, body } });
    }

    fn broadcast(&mut self, txn: &Txn, body: impl Fn(ShardId) -> Body) {
        for shard in txn.participants() {
            self.send(Address::Shard(shard), txn.id(), body(shard));
        }
    }

    /// Asks every participant of `txn` but `except` (one that prepared, or prepares,
    /// already) to prepare.
    fn ask_to_prepare(&mut self, txn: &Txn, except: ShardId) {
        for shard in txn.participants() {
            if shard != except {
                self.send(Address::Shard(shard), txn.id(), Body::Prepare { txn: txn.clone() });
            }
        }
    }

    fn heard(&mut self, message: &Message) {
        let depth = self.depth.entry(message.txn).or_insert(0);
        *depth = (*depth).max(message.depth);
        if let Some(doubt) = self.doubts.get_mut(&message.txn) {
            doubt.heard_ms = self.now_ms;
        }
    }

    fn reply(&mut self, txn: &Txn, outcome: &Outcome) {
        let id = txn.id();
        for client in self.waiting.remove(&id).unwrap_or_default() {
            let results = outcome.results(txn);
            self.commands.push(Command::Reply { client, txn: id, results });
        }
    }

    /// The fast path: a batch whose accounts all live on this shard, in one write.
    pub fn submit_local(&mut self, now_ms: u64, client: ClientRef, transfers: Vec<Transfer>) {
        self.now_ms = self.now_ms.max(now_ms);
        let entry = self.entry(Record::Local { client, transfers });
        self.commands.push(Command::Persist(entry));
    }

    /// A client asks to commit `txn` (a retry of the same transaction is welcome).
    pub fn submit(&mut self, now_ms: u64, client: ClientRef, txn: Txn) -> Result<(), Refusal> {
        self.now_ms = self.now_ms.max(now_ms);
        if txn.coordinator() != self.shard() {
            return Err(Refusal::NotCoordinator);
        }
        let id = txn.id();
        if let Some(CoordinatorRecord::Decided { txn: decided, outcome }) =
            self.state.coordinated.get(&id)
        {
            let results = resubmitted(outcome, decided);
            self.commands.push(Command::Reply { client, txn: id, results });
            return Ok(());
        }
        if let Some(outcome) = self.outcomes.get(&id).cloned() {
            let results = resubmitted(&outcome, &txn);
            self.commands.push(Command::Reply { client, txn: id, results });
            return Ok(());
        }
        if !self.coordinating.contains_key(&id) && !self.state.participants.contains_key(&id) {
            // Decided, carried out and forgotten: answer from the ledger's reservations.
            if let Some(results) = self.state.resolved_results(&txn) {
                self.commands.push(Command::Reply { client, txn: id, results });
                return Ok(());
            }
        }
        if !self.coordinating.contains_key(&id)
            && self.coordinating.len() >= self.config.in_flight_max
        {
            return Err(Refusal::Overloaded);
        }
        self.waiting.entry(id).or_default().push(client);
        if self.coordinating.contains_key(&id) {
            return Ok(());
        }
        self.depth.entry(id).or_insert(0);
        match txn.protocol {
            Protocol::PaxosCommit => {
                // The initiating participant tells the leader, and prepares.
                self.send(Address::Shard(self.shard()), id, Body::BeginCommit { txn: txn.clone() });
                self.prepare_here(txn);
            }
            Protocol::TwoPhase | Protocol::ThreePhase => match self.state.participants.get(&id) {
                // Prepared before a crash: the vote goes to the coordinator again.
                Some(record) => {
                    let vote = record.vote.clone();
                    self.send(Address::Shard(self.shard()), id, Body::Prepared { txn, vote });
                }
                // This participant's prepare waits for a transaction in doubt here (the
                // post or void of its pending transfer): the others are asked once it
                // voted, so that they do not hold reservations, and the vote timeout
                // does not run, meanwhile (Gray & Lamport's order).
                None if self.waits_for(&txn).is_some() => self.prepare_here(txn),
                None if txn.protocol == Protocol::TwoPhase && self.config.last_agent => {
                    // The last agent: the others are asked; this shard prepares with
                    // the decision, once they voted.
                    let mut coordination =
                        Coordination::new(txn.clone(), Phase::Voting, self.now_ms);
                    coordination.last_agent = true;
                    self.coordinating.insert(id, coordination);
                    self.ask_to_prepare(&txn, self.shard());
                    self.try_decide(id);
                }
                None => {
                    // The coordinator asks the other participants while this one
                    // prepares. (Gray & Lamport's initiating participant prepares
                    // first and then tells the coordinator, which only then asks the
                    // others: the same messages and forced writes, one message delay
                    // and one forced write's latency more.)
                    let coordination = Coordination::new(txn.clone(), Phase::Voting, self.now_ms);
                    self.coordinating.insert(id, coordination);
                    self.ask_to_prepare(&txn, self.shard());
                    self.prepare_here(txn);
                }
            },
        }
        Ok(())
    }

    fn prepare_here(&mut self, txn: Txn) {
        let id = txn.id();
        if self.coordinating.get(&id).is_some_and(|c| c.last_agent && c.txn != txn) {
            // The last agent works on another transaction of this id (a client grouped
            // the same transfers otherwise): its write decides what this shard's sides
            // of the id hold, and this one is not prepared beside it (it would be
            // decided with the other's outcome).
            return;
        }
        if self.state.participants.contains_key(&id) {
            // Asked again: the first answer went astray somewhere, so a Paxos Commit
            // vote now goes to every acceptor.
            if let Some(doubt) = self.doubts.get_mut(&id) {
                doubt.asked_ms = doubt.asked_ms.max(doubt.since_ms + 1);
            }
            self.vote(id);
        } else if let Some(pending_id) =
            self.waits_for(&txn).filter(|_| self.deferred_count < DEFERRED_MAX)
        {
            let waiting = self.deferred.entry(pending_id).or_default();
            // Asked again while waiting (a resend): it waits once.
            if !waiting.iter().any(|other| other.id() == id) {
                self.deferred_count += 1;
                waiting.push(txn);
            }
        } else {
            self.persist(id, PERSIST_PREPARE, Record::Prepare { txn });
        }
    }

    /// The pending transfer a post or void of `txn` names, if that transfer is still in
    /// doubt at this shard (its own transaction prepared here, not yet resolved): the
    /// post was sent once the pending transfer's decision was durable, and this shard
    /// has not heard it yet. Preparing now would refuse the post with
    /// `pending_transfer_not_found`; waiting for the outcome finds it. Not for a pending
    /// transfer of `txn` itself: that one is only decided with it. (Two transactions
    /// that each post the other's pending transfer wait for each other until a vote
    /// timeout aborts one.)
    fn waits_for(&self, txn: &Txn) -> Option<u128> {
        use settle_ledger::store::{ReservationState, Store};
        let store = self.state.ledger.store();
        let post_or_void =
            TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
        txn.sides_of(self.shard()).into_iter().find_map(|(index, _)| {
            let t = &txn.transfers[index];
            let pending_id = t.pending_id;
            let in_doubt = t.flags.intersects(post_or_void)
                && store.transfer(pending_id).is_none()
                && [Side::Debit, Side::Credit].into_iter().any(|side| {
                    store
                        .reservation(pending_id, side)
                        .is_some_and(|r| r.state == ReservationState::Prepared)
                })
                && !txn.transfers.iter().any(|other| other.id == pending_id);
            in_doubt.then_some(pending_id)
        })
    }

    /// `txn` was carried out here: the prepares waiting for its pending transfers go.
    fn release_deferred(&mut self, txn: &Txn) {
        if self.deferred.is_empty() {
            return;
        }
        for transfer in txn.transfers.iter() {
            for waiting in self.deferred.remove(&transfer.id).unwrap_or_default() {
                self.deferred_count -= 1;
                self.prepare_here(waiting);
            }
        }
    }

    /// This participant's vote goes where its protocol sends it.
    fn vote(&mut self, id: TxnId) {
        let Some(record) = self.state.participants.get(&id) else { return };
        let (txn, vote) = (record.txn.clone(), record.vote.clone());
        let coordinator = Address::Shard(txn.coordinator());
        match txn.protocol {
            Protocol::TwoPhase | Protocol::ThreePhase => {
                if txn.coordinator() == self.shard() {
                    // The initiating participant: its prepare began with the client's
                    // request, whatever this core's coordinator role heard since.
                    let message = Message { txn: id, depth: 1, body: Body::Prepared { txn, vote } };
                    self.commands.push(Command::Send { to: coordinator, message });
                } else {
                    self.send(coordinator, id, Body::Vote { vote });
                }
            }
            Protocol::PaxosCommit => {
                // Ballot 0 is this participant's own; F+1 acceptors suffice when all
                // answer (Gray & Lamport's count); a resend goes to all 2F+1.
                let first =
                    self.doubts.get(&id).is_none_or(|doubt| doubt.asked_ms <= doubt.since_ms);
                let count =
                    if first { self.config.faults_tolerated() + 1 } else { self.config.acceptors };
                let accepted = Accepted { instance: self.shard(), ballot: 0, vote };
                for index in 0..count {
                    let to = Address::Acceptor { shard: txn.coordinator(), index };
                    let body = Body::Phase2a { txn: txn.clone(), accepted: accepted.clone() };
                    self.send(to, id, body);
                }
            }
        }
    }

    /// An entry this core handed out is durable in the group.
    pub fn persisted(&mut self, now_ms: u64, entry: &Entry) -> Applied {
        self.now_ms = self.now_ms.max(now_ms);
        // A resolution that names its transaction is that resolution here (what
        // follows needs the transaction), or nothing when carried out already.
        let named;
        let entry = match &entry.record {
            Record::ResolvePrepared { txn: id, digest, outcome } => {
                let Some(txn) = self.state.named(*id, *digest) else {
                    self.persisting.remove(&(*id, PERSIST_RESOLVE));
                    return self.state.apply(entry);
                };
                let record = Record::Resolve { txn, outcome: outcome.clone() };
                named = Entry { timestamp: entry.timestamp, record };
                &named
            }
            _ => entry,
        };
        let applied = self.state.apply(entry);
        let kind = match &entry.record {
            Record::Forget { txns } => {
                self.forgotten(txns);
                None
            }
            Record::Local { .. } | Record::ReadPoint { .. } => None,
            Record::ShardMap(_) => {
                self.map_proposed_ms = None;
                None
            }
            Record::Pulse => {
                self.pulsing = false;
                None
            }
            Record::Prepare { txn } => Some((txn.id(), PERSIST_PREPARE)),
            Record::PreCommit { txn, .. } => Some((*txn, PERSIST_PRECOMMIT)),
            Record::CoordinatorPreCommit { txn, .. } | Record::Decide { txn, .. } => {
                Some((txn.id(), PERSIST_COORDINATOR))
            }
            Record::DecidePrepared { txn, .. } => Some((*txn, PERSIST_COORDINATOR)),
            Record::DecideLast { txn, .. } => {
                self.release_deferred(txn);
                Some((txn.id(), PERSIST_COORDINATOR))
            }
            Record::Resolve { txn, .. } => {
                self.release_deferred(txn);
                Some((txn.id(), PERSIST_RESOLVE))
            }
            Record::ResolvePrepared { .. } => unreachable!("made a resolution above"),
        };
        if let Some(key) = kind {
            self.persisting.remove(&key);
        }
        match &applied {
            Applied::Local { client, results } => {
                let (client, results) = (*client, results.clone());
                let txn = match &entry.record {
                    Record::Local { transfers, .. } => transfers.first().map_or(0, |t| t.id),
                    _ => 0,
                };
                self.commands.push(Command::Reply { client, txn, results });
            }
            Applied::Participant(id) => {
                self.participant_changed(*id, &entry.record);
                // A resolution of a transaction in doubt carries its outcome out here
                // (`ShardState::resolve`); reads waiting for it take the outcome.
                if let Record::Resolve { txn, outcome } = &entry.record {
                    let answers = self.reads.resolved(txn, outcome, &self.state);
                    self.answer_reads(answers);
                }
            }
            Applied::Coordinator(id) => self.coordinator_changed(*id, false),
            Applied::DecidedHere(id) => self.coordinator_changed(*id, true),
            Applied::ReadPoint { client, incarnation, result } => {
                // Only this leader's own points: another leader's tokens are not ours.
                if *incarnation == self.incarnation {
                    let answers = self.reads.point(*client, *result, &self.state);
                    self.answer_reads(answers);
                }
            }
            Applied::Refused(_) | Applied::Maintenance => {}
        }
        applied
    }

    fn participant_changed(&mut self, id: TxnId, record: &Record) {
        let Some(participant) = self.state.participants.get(&id) else {
            // Carried out and forgotten (`ShardState::resolve`).
            self.doubts.remove(&id);
            self.terminations.remove(&id);
            if !self.coordinating.contains_key(&id) {
                self.depth.remove(&id);
            }
            if let Record::Resolve { txn, .. } = record {
                self.acknowledge(txn);
            }
            return;
        };
        if participant.outcome.is_some() {
            self.doubts.remove(&id);
            self.terminations.remove(&id);
            if !self.coordinating.contains_key(&id) {
                self.depth.remove(&id);
            }
            return;
        }
        match record {
            Record::Prepare { .. } => {
                let doubt = Doubt::new(self.now_ms, participant.txn.protocol);
                self.doubts.entry(id).or_insert(doubt);
                self.vote(id);
            }
            Record::PreCommit { .. } => {
                let coordinator = Address::Shard(participant.txn.coordinator());
                self.send(coordinator, id, Body::PreCommitAck { aborted: false });
            }
            _ => {}
        }
    }

    /// 2PC: tells the coordinator this shard carried `txn`'s outcome out.
    fn acknowledge(&mut self, txn: &Txn) {
        if txn.protocol == Protocol::TwoPhase {
            self.send(Address::Shard(txn.coordinator()), txn.id(), Body::Resolved);
        }
    }

    /// 2PC coordinator: `from` carried `id` out; once all have, the decision can go.
    fn resolved(&mut self, id: TxnId, from: ShardId) {
        let Some(CoordinatorRecord::Decided { txn, .. }) = self.state.coordinated.get(&id) else {
            return;
        };
        let participants = txn.participants();
        let acks = self.acks.entry(id).or_default();
        acks.insert(from);
        if participants.iter().all(|shard| acks.contains(shard)) {
            self.acks.remove(&id);
            self.decided_at.remove(&id);
            self.forget.push(id);
            if self.forget.len() >= crate::codec::FORGET_MAX {
                self.flush_forget();
            }
        }
    }

    /// 2PC decisions dropped from the state: what this core kept about them goes too.
    /// (Every replica's core counts its own acknowledgement of the last agent's
    /// decisions, and only the leader hears the others', so a follower's entries go
    /// here; a duplicate acknowledgement after the last one, too.)
    fn forgotten(&mut self, txns: &[TxnId]) {
        for id in txns {
            self.acks.remove(id);
            self.decided_at.remove(id);
            if !self.coordinating.contains_key(id) && !self.state.participants.contains_key(id) {
                self.depth.remove(id);
            }
        }
    }

    fn flush_forget(&mut self) {
        if self.forget.is_empty() {
            return;
        }
        let txns = std::mem::take(&mut self.forget);
        let entry = self.entry(Record::Forget { txns });
        self.commands.push(Command::Persist(entry));
    }

    /// `carried_out`: the decision was carried out on this shard's sides with it (the
    /// last agent), so it goes to the others only.
    fn coordinator_changed(&mut self, id: TxnId, carried_out: bool) {
        match self.state.coordinated.get(&id).cloned() {
            Some(CoordinatorRecord::Decided { txn, outcome }) => {
                if txn.protocol == Protocol::TwoPhase {
                    self.decided_at.entry(id).or_insert(self.now_ms);
                }
                self.coordinating.remove(&id);
                self.reply(&txn, &outcome);
                let me = self.shard();
                for shard in txn.participants() {
                    if !(carried_out && shard == me) {
                        let body = Body::Decision { txn: txn.clone(), outcome: outcome.clone() };
                        self.send(Address::Shard(shard), id, body);
                    }
                }
                if carried_out {
                    self.resolved(id, me);
                }
            }
            Some(CoordinatorRecord::PreCommitted { txn, commit }) => {
                if let Some(coordination) = self.coordinating.get_mut(&id) {
                    // The record wins (also one an earlier leader wrote while this one
                    // was resuming the transaction): commit what it precommitted.
                    coordination.commit = Some(commit.clone());
                    coordination.phase = Phase::PreCommitting;
                    coordination.resent_ms = self.now_ms;
                    coordination.started_ms = self.now_ms;
                }
                self.broadcast(&txn, |_| Body::PreCommit {
                    txn: txn.clone(),
                    commit: commit.clone(),
                });
            }
            None => {
                // A named decision that found its transaction decided, carried out
                // and forgotten here already: answer as a resubmission would be. (When
                // the ledger cannot say, the shell answers "outcome unknown" after its
                // timeout, and a retry finds the outcome.)
                if self.coordinating.get(&id).is_some_and(|c| c.phase == Phase::Deciding) {
                    let coordination = self.coordinating.remove(&id).expect("checked");
                    let clients = self.waiting.remove(&id).unwrap_or_default();
                    if let Some(results) = self.state.resolved_results(&coordination.txn) {
                        for client in clients {
                            let results = results.clone();
                            self.commands.push(Command::Reply { client, txn: id, results });
                        }
                    }
                }
            }
        }
    }

    // ---- the shard map (the metadata shard) ----

    /// Writes `map` as the cluster's shard map, unless this shard holds that version or
    /// a newer one (the metadata shard's leader writes the first from the config).
    pub fn publish_shard_map(&mut self, map: ShardMap) {
        if self.state.shard_map.as_ref().is_none_or(|held| map.version > held.version) {
            self.propose_map(map);
        }
    }

    /// One map version in flight at a time; one proposed and not back within
    /// `MAP_PROPOSAL_MS` (Raft dropped it: a leader transfer was under way) is proposed
    /// again. A duplicate is harmless: a version is applied once.
    fn propose_map(&mut self, map: ShardMap) {
        if self.map_proposed_ms.is_some_and(|at| self.now_ms < at + MAP_PROPOSAL_MS) {
            return;
        }
        self.map_proposed_ms = Some(self.now_ms);
        let entry = self.entry(Record::ShardMap(map));
        self.commands.push(Command::Persist(entry));
    }

    /// Tells the metadata shard which nodes hold this shard's replicas now: it writes a
    /// new map version if they differ from its map. (Sent now and then by the leader,
    /// so that a change of replicas reaches the map even when the node that made it
    /// crashed before telling.)
    pub fn report_replicas(&mut self, metadata_shard: ShardId, replicas: Vec<u64>) {
        let body = Body::Replicas { shard: u64::from(self.shard()), replicas };
        if metadata_shard == self.shard() {
            self.replicas_reported(body);
        } else {
            self.send(Address::Shard(metadata_shard), 0, body);
        }
    }

    fn replicas_reported(&mut self, body: Body) {
        let Body::Replicas { shard, replicas } = body else { return };
        let next =
            self.state.shard_map.as_ref().and_then(|map| map.with_replicas(shard, &replicas));
        if let Some(next) = next {
            self.propose_map(next);
        }
    }

    /// A protocol message arrived from `from`.
    pub fn receive(&mut self, now_ms: u64, from: Address, message: Message) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Body::Replicas { shard, .. } = message.body {
            // Only a shard speaks for its own replicas.
            if u64::from(from_shard_of(from)) == shard {
                self.replicas_reported(message.body);
            }
            return;
        }
        self.heard(&message);
        let id = message.txn;
        let from_shard = match from {
            Address::Shard(shard) => shard,
            Address::Acceptor { shard, .. } => shard,
        };
        match message.body {
            Body::Prepared { txn, vote } => {
                if txn.id() == id && txn.coordinator() == self.shard() {
                    self.coordinator_vote(txn, from_shard, vote);
                }
            }
            Body::BeginCommit { txn } => {
                if txn.id() == id && txn.coordinator() == self.shard() {
                    self.begin_commit(txn);
                }
            }
            Body::Prepare { txn } => {
                if txn.id() == id && !txn.sides_of(self.shard()).is_empty() {
                    self.prepare_here(txn);
                }
            }
            Body::Vote { vote } => {
                if let Some(txn) = self.coordinating.get(&id).map(|c| c.txn.clone()) {
                    self.coordinator_vote(txn, from_shard, vote);
                } else {
                    self.answer_decided(id, from);
                }
            }
            Body::PreCommit { txn, commit } => self.precommit(txn, commit),
            Body::PreCommitAck { aborted } => self.precommit_ack(id, from_shard, aborted),
            Body::Decision { txn, outcome } => self.decision(txn, outcome),
            Body::Inquire { txn } => self.inquire(txn, from),
            Body::Resolved => self.resolved(id, from_shard),
            Body::StateRequest { txn } => self.state_request(txn, from),
            Body::StateReply { state, outcome, commit } => {
                if let Some(termination) = self.terminations.get_mut(&id) {
                    termination.states.insert(from_shard, (state, outcome, commit));
                }
                self.try_terminate(id);
            }
            Body::Phase2b { from: acceptor, accepted } => self.phase2b(id, acceptor, accepted),
            Body::Phase1b { from: acceptor, ballot, accepted, rejected } => {
                self.phase1b(id, acceptor, ballot, accepted, rejected)
            }
            // Acceptor messages are not for a shard; a stray one changes nothing.
            Body::Phase2a { .. } | Body::Phase1a { .. } => {}
            Body::Replicas { .. } => unreachable!("taken above"),
        }
    }

    fn answer_decided(&mut self, id: TxnId, to: Address) {
        let decided = match self.state.coordinated.get(&id) {
            Some(CoordinatorRecord::Decided { txn, outcome }) => {
                Some((txn.clone(), outcome.clone()))
            }
            _ => None,
        };
        if let Some((txn, outcome)) = decided {
            self.send(to, id, Body::Decision { txn, outcome });
        }
    }

    // ---- 2PC and 3PC coordinator ----

    fn coordinator_vote(&mut self, txn: Txn, from: ShardId, vote: Vote) {
        let id = txn.id();
        if self.state.coordinated.contains_key(&id) {
            // Decided: answer from the record. (3PC precommitted: `new` resumed it.)
            self.answer_decided(id, Address::Shard(from));
            return;
        }
        let now = self.now_ms;
        // The last agent's clock moves to the latest prepare it is told of (its sides
        // prepare after the others'): a vote further ahead than the clocks' skew allows
        // is not from an honest participant, and is not taken (the vote timeout aborts).
        let clock = self.state.ledger.commit_timestamp().max(now * 1_000_000);
        let ahead_max = clock.saturating_add(self.config.clock_skew_max_ms * 1_000_000);
        let first = !self.coordinating.contains_key(&id);
        let coordination = self
            .coordinating
            .entry(id)
            .or_insert_with(|| Coordination::new(txn.clone(), Phase::Voting, now));
        if coordination.phase != Phase::Voting || coordination.txn != txn {
            // Decided already, or a vote for another transaction of this id.
            return;
        }
        if coordination.last_agent && crate::txn::latest_prepare([&vote]) > ahead_max {
            return;
        }
        coordination.votes.insert(from, vote);
        if first {
            self.ask_to_prepare(&txn, from);
        }
        self.try_decide(id);
    }

    fn try_decide(&mut self, id: TxnId) {
        let me = self.shard();
        let Some(coordination) = self.coordinating.get_mut(&id) else { return };
        let participants = coordination.txn.participants();
        // The last agent waits for every vote but its own, which its decision gives.
        let last_agent = coordination.last_agent && !coordination.votes.contains_key(&me);
        if coordination.phase != Phase::Voting
            || !participants
                .iter()
                .all(|shard| (last_agent && *shard == me) || coordination.votes.contains_key(shard))
        {
            return;
        }
        if last_agent {
            coordination.phase = Phase::Deciding;
            let txn = coordination.txn.clone();
            let votes = coordination.votes.iter().map(|(s, v)| (*s, v.clone())).collect();
            self.persist(id, PERSIST_COORDINATOR, Record::DecideLast { txn, votes });
            return;
        }
        let outcome = decide(&coordination.txn, &coordination.votes);
        let txn = coordination.txn.clone();
        match (&outcome, txn.protocol) {
            (Outcome::Commit(commit), Protocol::ThreePhase) => {
                coordination.phase = Phase::PreCommitting;
                coordination.commit = Some(commit.clone());
                let record = Record::CoordinatorPreCommit { txn, commit: commit.clone() };
                self.persist(id, PERSIST_COORDINATOR, record);
            }
            _ => {
                coordination.phase = Phase::Deciding;
                self.persist_decide(txn, outcome);
            }
        }
    }

    fn give_up(&mut self, id: TxnId) {
        let Some(coordination) = self.coordinating.get_mut(&id) else { return };
        coordination.phase = Phase::Deciding;
        let txn = coordination.txn.clone();
        let outcome = Outcome::gave_up(&txn);
        self.persist_decide(txn, outcome);
    }

    fn precommit_ack(&mut self, id: TxnId, from: ShardId, aborted: bool) {
        let Some(coordination) = self.coordinating.get_mut(&id) else { return };
        if coordination.phase != Phase::PreCommitting
            || !matches!(
                self.state.coordinated.get(&id),
                Some(CoordinatorRecord::PreCommitted { .. })
            )
        {
            return;
        }
        if aborted {
            // A participant's termination aborted: commit is no longer possible.
            self.give_up(id);
            return;
        }
        coordination.acks.insert(from);
        if coordination.txn.participants().iter().all(|shard| coordination.acks.contains(shard)) {
            self.commit_precommitted(id);
        }
    }

    fn commit_precommitted(&mut self, id: TxnId) {
        let Some(coordination) = self.coordinating.get_mut(&id) else { return };
        coordination.phase = Phase::Deciding;
        let txn = coordination.txn.clone();
        let commit = coordination.commit.clone().expect("precommitted with a commit");
        let outcome = Outcome::Commit(commit);
        self.persist_decide(txn, outcome);
    }

    fn inquire(&mut self, txn: Txn, from: Address) {
        let id = txn.id();
        if txn.coordinator() != self.shard() {
            return;
        }
        if let Some(outcome) = self.outcomes.get(&id).cloned() {
            self.send(from, id, Body::Decision { txn, outcome });
            return;
        }
        match self.state.coordinated.get(&id) {
            Some(CoordinatorRecord::Decided { .. }) => return self.answer_decided(id, from),
            Some(CoordinatorRecord::PreCommitted { .. }) => return,
            None => {}
        }
        if self.coordinating.contains_key(&id) {
            return;
        }
        if txn.protocol == Protocol::TwoPhase && self.state.resolved_here(&txn).is_some() {
            // A 2PC decision is forgotten only once every participant carried it out:
            // this question is stale. (Paxos Commit keeps no decision: its leader
            // learns the outcome again from the acceptors.)
            return;
        }
        // The coordinator that started this is gone (a crash or a new leader): finish
        // what it started.
        self.resume(txn);
    }

    fn resume(&mut self, txn: Txn) {
        let id = txn.id();
        match txn.protocol {
            Protocol::TwoPhase | Protocol::ThreePhase => {
                let now = self.now_ms;
                let mut coordination = Coordination::new(txn.clone(), Phase::Voting, now);
                if let Some(record) = self.state.participants.get(&id) {
                    coordination.votes.insert(self.shard(), record.vote.clone());
                } else {
                    self.persist(id, PERSIST_PREPARE, Record::Prepare { txn: txn.clone() });
                }
                self.coordinating.insert(id, coordination);
                self.ask_to_prepare(&txn, self.shard());
                self.try_decide(id);
            }
            Protocol::PaxosCommit => {
                let mut coordination = Coordination::new(txn, Phase::Voting, self.now_ms);
                coordination.started_ms = 0; // Recover at once.
                self.coordinating.insert(id, coordination);
                self.start_recovery(id);
            }
        }
    }

    // ---- participant ----

    fn precommit(&mut self, txn: Txn, commit: Commit) {
        let id = txn.id();
        let Some(record) = self.state.participants.get(&id) else { return };
        if !self.plausible(record, &commit) {
            return;
        }
        let coordinator = Address::Shard(txn.coordinator());
        match record.three_phase_state() {
            ThreePhaseState::Uncertain => {
                self.persist(id, PERSIST_PRECOMMIT, Record::PreCommit { txn: id, commit })
            }
            ThreePhaseState::PreCommitted | ThreePhaseState::Committed => {
                self.send(coordinator, id, Body::PreCommitAck { aborted: false })
            }
            ThreePhaseState::Aborted => {
                self.send(coordinator, id, Body::PreCommitAck { aborted: true })
            }
            // Nothing prepared here (every side refused): a commit that commits none of
            // them is still acknowledged, or the coordinator would wait it out.
            ThreePhaseState::Unprepared if record.vote.allows(&txn, self.shard(), &commit) => {
                self.persist(id, PERSIST_PRECOMMIT, Record::PreCommit { txn: id, commit })
            }
            ThreePhaseState::Unprepared => {}
        }
    }

    fn decision(&mut self, txn: Txn, outcome: Outcome) {
        let id = txn.id();
        if txn.sides_of(self.shard()).is_empty()
            || matches!(&outcome, Outcome::Commit(commit) if !commit.fits(&txn))
        {
            return;
        }
        if !self.state.participants.contains_key(&id) && self.state.resolved_here(&txn).is_some() {
            // Carried out already (and forgotten): say so again.
            self.acknowledge(&txn);
            return;
        }
        if let Some(record) = self.state.participants.get(&id) {
            if record.outcome.is_some() {
                return;
            }
            if let Outcome::Commit(commit) = &outcome {
                // Contradicts this shard's vote, or implausible: not from an honest
                // coordinator.
                if !record.vote.allows(&txn, self.shard(), commit)
                    || !self.plausible(record, commit)
                {
                    return;
                }
            }
        } else if let Outcome::Commit(commit) = &outcome {
            // A commit of a side here needs this shard's vote; one that commits nothing
            // here is carried out (its sides released, a late prepare refused).
            let shard = self.shard();
            if txn.sides_of(shard).iter().any(|&(index, _)| commit.commits(&txn, index)) {
                return;
            }
        }
        self.persist_resolve(txn, outcome);
    }

    /// A decision, naming the transaction when this shard's participant record holds it.
    fn persist_decide(&mut self, txn: Txn, outcome: Outcome) {
        let id = txn.id();
        let record = match self.held_digest(&txn) {
            Some(digest) => Record::DecidePrepared { txn: id, digest, outcome },
            None => Record::Decide { txn, outcome },
        };
        self.persist(id, PERSIST_COORDINATOR, record);
    }

    /// A resolution, naming the transaction when this shard's record holds it.
    fn persist_resolve(&mut self, txn: Txn, outcome: Outcome) {
        let id = txn.id();
        let record = match self.held_digest(&txn) {
            Some(digest) => Record::ResolvePrepared { txn: id, digest, outcome },
            None => Record::Resolve { txn, outcome },
        };
        self.persist(id, PERSIST_RESOLVE, record);
    }

    /// `txn`'s digest, when this shard's participant record holds it (a record may then
    /// name it instead of carrying it: `ShardState::named`).
    fn held_digest(&self, txn: &Txn) -> Option<u128> {
        let record = self.state.participants.get(&txn.id())?;
        (record.txn == *txn).then(|| txn.digest())
    }

    /// Whether an honest coordinator could have sent `commit` for `record`: one amount
    /// per transfer, every side it commits here prepared, and an agreed timestamp at or
    /// after the prepares of those sides and not beyond the clocks' plausible skew (a
    /// commit moves this shard's clock to it). (The sides of units that abort need not
    /// be in the agreed timestamp: a Paxos Commit instance chosen "aborted" leaves this
    /// shard's vote out of it.)
    fn plausible(&self, record: &ParticipantRecord, commit: &Commit) -> bool {
        let own = match &record.vote {
            Vote::Sides(entries) => entries
                .iter()
                .filter(|entry| commit.commits(&record.txn, entry.transfer as usize))
                .map(|entry| entry.at)
                .max()
                .unwrap_or(0),
            Vote::Aborted => 0,
        };
        let clock = self.state.ledger.commit_timestamp().max(self.now_ms * 1_000_000);
        let ahead_max = clock.saturating_add(self.config.clock_skew_max_ms * 1_000_000);
        commit.fits(&record.txn)
            && record.vote.allows(&record.txn, self.shard(), commit)
            && commit.at >= own
            && commit.at <= ahead_max
    }

    fn state_request(&mut self, txn: Txn, from: Address) {
        let id = txn.id();
        let (state, outcome, commit) = match self.state.participants.get(&id) {
            Some(record) => {
                (record.three_phase_state(), record.outcome.clone(), record.precommitted.clone())
            }
            None => (ThreePhaseState::Unprepared, None, None),
        };
        self.send(from, id, Body::StateReply { state, outcome, commit });
    }

    fn try_terminate(&mut self, id: TxnId) {
        let Some(termination) = self.terminations.get(&id) else { return };
        let Some(record) = self.state.participants.get(&id) else { return };
        if record.outcome.is_some() {
            self.terminations.remove(&id);
            return;
        }
        let txn = record.txn.clone();
        let others: Vec<ShardId> =
            txn.participants().into_iter().filter(|&s| s != self.shard()).collect();
        let everyone = others.iter().all(|shard| termination.states.contains_key(shard));
        let deadline = termination.started_ms + self.config.termination_ms / 2;
        if !everyone && self.now_ms < deadline {
            return;
        }
        // Skeen's rule, from the states this backup could collect: an outcome anywhere
        // wins; any precommitted participant (this one included) means commit;
        // otherwise abort.
        // (A commit no honest participant could hold is not taken.)
        let plausible = |commit: &Commit| self.plausible(record, commit);
        let mut outcome = termination.states.values().find_map(|(_, outcome, _)| match outcome {
            Some(Outcome::Commit(commit)) if !plausible(commit) => None,
            other => other.clone(),
        });
        if outcome.is_none() {
            let mut reported =
                termination.states.values().filter_map(|(_, _, commit)| commit.as_ref());
            let commit = record
                .precommitted
                .clone()
                .or_else(|| reported.find(|commit| plausible(commit)).cloned());
            outcome = Some(match commit {
                Some(commit) => Outcome::Commit(commit),
                None => Outcome::gave_up(&txn),
            });
        }
        let outcome = outcome.expect("chosen above");
        self.terminations.remove(&id);
        self.persist_resolve(txn.clone(), outcome.clone());
        for shard in others {
            let body = Body::Decision { txn: txn.clone(), outcome: outcome.clone() };
            self.send(Address::Shard(shard), id, body);
        }
    }

    // ---- Paxos Commit leader ----

    fn begin_commit(&mut self, txn: Txn) {
        let id = txn.id();
        if let Some(outcome) = self.outcomes.get(&id).cloned() {
            self.reply(&txn, &outcome);
            return;
        }
        if self.coordinating.contains_key(&id) {
            return;
        }
        self.coordinating.insert(id, Coordination::new(txn.clone(), Phase::Voting, self.now_ms));
        self.ask_to_prepare(&txn, self.shard());
    }

    fn quorum(&self) -> usize {
        self.config.faults_tolerated() as usize + 1
    }

    fn phase2b(&mut self, id: TxnId, acceptor: u8, accepted: Vec<Accepted>) {
        if acceptor >= self.config.acceptors {
            return;
        }
        // Not coordinating (decided already, or unknown here): nothing to learn.
        let Some(coordination) = self.coordinating.get_mut(&id) else { return };
        for value in accepted {
            let slot = coordination.accepted.entry(value.instance).or_default();
            if slot.get(&acceptor).is_none_or(|old| old.ballot <= value.ballot) {
                slot.insert(acceptor, value);
            }
        }
        self.try_learn(id);
    }

    /// The vote chosen for each instance, if every instance has one: F+1 acceptors
    /// accepted the same ballot.
    fn chosen(&self, coordination: &Coordination) -> Option<BTreeMap<ShardId, Vote>> {
        let votes = self.chosen_instances(coordination);
        (votes.len() == coordination.txn.participants().len()).then_some(votes)
    }

    /// The instances whose vote is chosen so far.
    fn chosen_instances(&self, coordination: &Coordination) -> BTreeMap<ShardId, Vote> {
        let mut votes = BTreeMap::new();
        for shard in coordination.txn.participants() {
            let Some(slot) = coordination.accepted.get(&shard) else { continue };
            let mut by_ballot: BTreeMap<Ballot, (usize, &Vote)> = BTreeMap::new();
            for value in slot.values() {
                let count = by_ballot.entry(value.ballot).or_insert((0, &value.vote));
                count.0 += 1;
            }
            if let Some((_, vote)) = by_ballot.values().find(|(count, _)| *count >= self.quorum()) {
                votes.insert(shard, (*vote).clone());
            }
        }
        votes
    }

    fn try_learn(&mut self, id: TxnId) {
        let Some(coordination) = self.coordinating.get(&id) else { return };
        let Some(votes) = self.chosen(coordination) else { return };
        let txn = coordination.txn.clone();
        let outcome = decide(&txn, &votes);
        self.coordinating.remove(&id);
        self.remember(id, outcome.clone());
        self.reply(&txn, &outcome);
        self.broadcast(&txn, |_| Body::Decision { txn: txn.clone(), outcome: outcome.clone() });
    }

    fn remember(&mut self, id: TxnId, outcome: Outcome) {
        if self.outcomes.insert(id, outcome).is_none() {
            self.outcome_order.push_back(id);
        }
        while self.outcome_order.len() > self.config.outcomes_max {
            if let Some(old) = self.outcome_order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }

    fn start_recovery(&mut self, id: TxnId) {
        self.round += 1;
        let ballot = (self.round << 32) | u64::from(self.incarnation);
        let Some(coordination) = self.coordinating.get_mut(&id) else { return };
        coordination.phase = Phase::Recovering;
        coordination.ballot = ballot;
        coordination.promises.clear();
        coordination.resent_ms = self.now_ms;
        let txn = coordination.txn.clone();
        for index in 0..self.config.acceptors {
            let to = Address::Acceptor { shard: self.shard(), index };
            self.send(to, id, Body::Phase1a { txn: txn.clone(), ballot });
        }
    }

    fn phase1b(
        &mut self,
        id: TxnId,
        acceptor: u8,
        ballot: Ballot,
        accepted: Vec<Accepted>,
        rejected: Option<Ballot>,
    ) {
        if acceptor >= self.config.acceptors {
            return;
        }
        if let Some(higher) = rejected {
            self.round = self.round.max(higher >> 32);
            return; // The next resend uses a higher ballot.
        }
        let quorum = self.quorum();
        let Some(coordination) = self.coordinating.get_mut(&id) else { return };
        if coordination.phase != Phase::Recovering || coordination.ballot != ballot {
            return;
        }
        coordination.promises.insert(acceptor, accepted);
        if coordination.promises.len() < quorum {
            return;
        }
        // Phase 2a: for each instance, the value of the highest ballot any promiser
        // accepted, or "aborted" when none did.
        let txn = coordination.txn.clone();
        let mut proposals = Vec::new();
        for shard in txn.participants() {
            let highest = coordination
                .promises
                .values()
                .flatten()
                .filter(|value| value.instance == shard)
                .max_by_key(|value| value.ballot);
            let vote = highest.map_or(Vote::Aborted, |value| value.vote.clone());
            proposals.push(Accepted { instance: shard, ballot, vote });
        }
        coordination.phase = Phase::Voting;
        coordination.accepted.clear();
        for index in 0..self.config.acceptors {
            for proposal in &proposals {
                let to = Address::Acceptor { shard: self.shard(), index };
                let body = Body::Phase2a { txn: txn.clone(), accepted: proposal.clone() };
                self.send(to, id, body);
            }
        }
    }

    // ---- time ----

    /// Time passes: resend what is unanswered, give up what waited too long.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let late = self.reads.expire(now, self.config.read_wait_ms);
        self.answer_reads(late);
        let resend = self.config.resend_ms;
        let ids: Vec<TxnId> = self.coordinating.keys().copied().collect();
        for id in ids {
            let Some(coordination) = self.coordinating.get(&id) else { continue };
            if now < coordination.resent_ms + resend {
                continue;
            }
            let (txn, phase, started) =
                (coordination.txn.clone(), coordination.phase, coordination.started_ms);
            let chosen = self.chosen_instances(coordination);
            let me = self.shard();
            let missing: Vec<ShardId> = match phase {
                Phase::Voting => txn
                    .participants()
                    .into_iter()
                    .filter(|s| !coordination.votes.contains_key(s) && !chosen.contains_key(s))
                    .filter(|s| !(coordination.last_agent && *s == me))
                    .collect(),
                Phase::PreCommitting => txn
                    .participants()
                    .into_iter()
                    .filter(|s| !coordination.acks.contains(s))
                    .collect(),
                Phase::Deciding | Phase::Recovering => Vec::new(),
            };
            if let Some(coordination) = self.coordinating.get_mut(&id) {
                coordination.resent_ms = now;
            }
            let waited = now.saturating_sub(started);
            match (txn.protocol, phase) {
                (protocol, Phase::Voting | Phase::Recovering) => {
                    let paxos = protocol == Protocol::PaxosCommit;
                    if waited < self.config.vote_timeout_ms {
                        for shard in missing {
                            let body = Body::Prepare { txn: txn.clone() };
                            self.send(Address::Shard(shard), id, body);
                        }
                    } else if paxos {
                        // Phase 1 again (a higher ballot) until a quorum promises.
                        self.start_recovery(id);
                    } else {
                        self.give_up(id);
                    }
                }
                (_, Phase::PreCommitting) => {
                    let written = matches!(
                        self.state.coordinated.get(&id),
                        Some(CoordinatorRecord::PreCommitted { .. })
                    );
                    if !written {
                        continue;
                    }
                    if waited >= self.config.termination_ms {
                        // Skeen: every participant voted yes, so commit.
                        self.commit_precommitted(id);
                    } else {
                        let Some(commit) = self.coordinating[&id].commit.clone() else {
                            continue;
                        };
                        for shard in missing {
                            let body = Body::PreCommit { txn: txn.clone(), commit: commit.clone() };
                            self.send(Address::Shard(shard), id, body);
                        }
                    }
                }
                (_, Phase::Deciding) => {}
            }
        }
        self.tick_doubts();
        self.remind();
        self.flush_forget();
        let due = self.state.ledger.next_expiry().is_some_and(|at| at <= self.now_ms * 1_000_000);
        if self.config.pulses && due && !self.pulsing {
            self.pulsing = true;
            let entry = self.entry(Record::Pulse);
            self.commands.push(Command::Persist(entry));
        }
    }

    /// 2PC: decisions some participant has not acknowledged go to it again (the
    /// acknowledgement, or the decision, may have been lost), so that every decision
    /// is forgotten in the end.
    fn remind(&mut self) {
        if self.now_ms < self.reminded_ms + self.config.inquire_ms {
            return;
        }
        self.reminded_ms = self.now_ms;
        let due: Vec<(Txn, Outcome, Vec<ShardId>)> = self
            .state
            .coordinated
            .iter()
            .filter_map(|(id, record)| match record {
                CoordinatorRecord::Decided { txn, outcome }
                    if txn.protocol == Protocol::TwoPhase
                        && self
                            .decided_at
                            .get(id)
                            .is_some_and(|&at| self.now_ms >= at + self.config.inquire_ms) =>
                {
                    let acked = self.acks.get(id);
                    let missing: Vec<ShardId> = txn
                        .participants()
                        .into_iter()
                        .filter(|s| !acked.is_some_and(|a| a.contains(s)))
                        .collect();
                    Some((txn.clone(), outcome.clone(), missing))
                }
                _ => None,
            })
            .collect();
        for (txn, outcome, missing) in due {
            for shard in missing {
                let body = Body::Decision { txn: txn.clone(), outcome: outcome.clone() };
                self.send(Address::Shard(shard), txn.id(), body);
            }
        }
    }

    fn tick_doubts(&mut self) {
        let now = self.now_ms;
        let (inquire, termination) = (self.config.inquire_ms, self.config.termination_ms);
        // Only what is due: most doubts are young (their outcome is on its way).
        let ids: Vec<TxnId> = self
            .doubts
            .iter()
            .filter(|(_, d)| {
                now >= d.asked_ms + inquire || (d.three_phase && now >= d.heard_ms + termination)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let Some(record) = self.state.participants.get(&id).cloned() else {
                self.doubts.remove(&id);
                continue;
            };
            if record.outcome.is_some() {
                self.doubts.remove(&id);
                continue;
            }
            let doubt = self.doubts[&id];
            if record.txn.protocol == Protocol::ThreePhase
                && now >= doubt.heard_ms + self.config.termination_ms
            {
                self.tick_termination(id, &record);
                continue;
            }
            if now < doubt.asked_ms + self.config.inquire_ms {
                continue;
            }
            if let Some(doubt) = self.doubts.get_mut(&id) {
                doubt.asked_ms = now;
            }
            let coordinator = Address::Shard(record.txn.coordinator());
            if record.txn.protocol == Protocol::PaxosCommit {
                self.vote(id);
            }
            self.send(coordinator, id, Body::Inquire { txn: record.txn.clone() });
        }
    }

    fn tick_termination(&mut self, id: TxnId, record: &ParticipantRecord) {
        let now = self.now_ms;
        let me = self.shard();
        let termination = self.terminations.entry(id).or_insert(Termination {
            started_ms: now,
            asked_ms: 0,
            states: BTreeMap::new(),
        });
        if now >= termination.asked_ms + self.config.resend_ms {
            termination.asked_ms = now;
            let missing: Vec<ShardId> = record
                .txn
                .participants()
                .into_iter()
                .filter(|&s| s != me && !termination.states.contains_key(&s))
                .collect();
            for shard in missing {
                self.send(
                    Address::Shard(shard),
                    id,
                    Body::StateRequest { txn: record.txn.clone() },
                );
            }
        }
        self.try_terminate(id);
    }
}

/// What a transaction submitted again after its decision answers: `exists` for each
/// transfer of a committed unit (as a single shard answers a resubmitted id), the same
/// results for an aborted one.
fn resubmitted(outcome: &Outcome, txn: &Txn) -> Vec<R> {
    let mut results = outcome.results(txn);
    for result in &mut results {
        if *result == R::Ok {
            *result = R::Exists;
        }
    }
    results
}
