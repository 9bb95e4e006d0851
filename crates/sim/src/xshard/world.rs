//! The simulated world for cross-shard runs: shards (their `ShardCore`), acceptors, disks,
//! the network, clients and the fault schedule. It is the IO shell of the commit cores.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use settle_commit::acceptor::AcceptorTxn;
use settle_commit::codec;
use settle_commit::placement::shard_of;
use settle_commit::read::{ReadError, SnapshotPart};
use settle_commit::{
    AcceptorCommand, AcceptorCore, AcceptorEntry, Address, Applied, Body, Command, Config, Entry,
    Message, Protocol, Record, ShardCore, ShardState, Txn, TxnId,
};
use settle_ledger::{
    Account, AccountFlags, CreateTransferResult as R, Ledger, Transfer, TransferFlags,
};

use super::check::{Checker, Violation};
use super::{Faults, Options};

/// Core ticks.
const TICK_MS: u64 = 10;
/// A client resubmits an unanswered request after this long.
const CLIENT_TIMEOUT_MS: u64 = 2_000;
/// Most a shard's clock runs ahead of simulated time (`Shard::skew_ms`).
const CLOCK_SKEW_MAX_MS: u64 = 50;
/// Most single-shard requests waiting to race a chain (`World::alone`).
const ALONE_MAX: usize = 64;
/// After the faults heal, the run drains for at most this long.
pub const DRAIN_MS: u64 = 60_000;
const ACCOUNTS_PER_SHARD: usize = 6;
/// The snapshot reader starts a read across every shard this often...
const READ_EVERY_MS: u64 = 300;
/// ...at a timestamp this far ahead of its clock (the read points' trip to the shards)...
const READ_LEAD_NS: u64 = 5_000_000;
/// ...tries a read whose timestamp a shard's clock had passed this many times, and
/// gives up on one unanswered this long (its shard crashed, or stays in doubt).
const READ_ATTEMPTS_MAX: u32 = 4;
const READ_GIVE_UP_MS: u64 = 2_000;
const LEDGER: u32 = 1;

#[derive(Debug)]
enum Event {
    Deliver { to: Address, from: Address, message: Message },
    ShardSync { shard: u32, incarnation: u32 },
    AcceptorSync { shard: u32, index: u8, incarnation: u32 },
    ShardRestart { shard: u32 },
    AcceptorRestart { shard: u32, index: u8 },
    Tick,
    ClientWake { client: usize, seq: u64 },
    Fault,
    HealPartition { id: u64 },
    Heal,
    CheckLimits,
    Read,
    Quiesce,
}

/// A snapshot read across every shard, in flight.
struct Reading {
    id: u64,
    at: u64,
    attempt: u32,
    started_ms: u64,
    /// Some cross-shard transaction was in doubt when it started.
    amid_doubt: bool,
    parts: BTreeMap<u32, Vec<Account>>,
}

/// A shard: its leader's core while up, its replicated state while down.
struct Shard {
    core: Option<ShardCore>,
    down_state: Option<ShardState>,
    incarnation: u32,
    queue: VecDeque<Entry>,
    syncing: usize,
    /// How far this shard's clock runs ahead of simulated time: shards' clocks
    /// differ, and the hybrid-logical-clock timestamps (a commit's agreed timestamp, a
    /// snapshot read's) must order transactions across them all the same.
    skew_ms: u64,
}

struct Acceptor {
    core: Option<AcceptorCore>,
    down_state: Option<BTreeMap<TxnId, AcceptorTxn>>,
    incarnation: u32,
    queue: VecDeque<AcceptorEntry>,
    syncing: usize,
}

/// What a client is doing.
#[derive(Clone, Debug)]
pub enum Op {
    Txn(Txn),
    Local { shard: u32, transfers: Vec<Transfer> },
}

struct Client {
    op: Option<Op>,
    seq: u64,
    /// The first attempt's seq of the current request: replies to older requests are
    /// stale.
    op_seq: u64,
    started_ms: u64,
}

/// An acknowledged client request.
#[derive(Clone, Debug)]
pub struct Ack {
    pub op: Op,
    pub results: Vec<R>,
    pub latency_ms: u64,
}

pub struct World {
    pub options: Options,
    /// Network and disk timing.
    rng: StdRng,
    /// The fault schedule: its own stream, so every protocol meets the same faults at
    /// the same times for one seed.
    fault_rng: StdRng,
    /// What the clients ask: its own stream too.
    workload_rng: StdRng,
    pub now_ms: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    shards: Vec<Shard>,
    acceptors: Vec<Vec<Acceptor>>,
    clients: Vec<Client>,
    pub accounts: Vec<(u128, u32)>,
    /// Committed pending transfers a client may post or void.
    pendings: Vec<Transfer>,
    /// Single-shard requests that race a chain across shards (at most `ALONE_MAX`): a
    /// member of the chain sent again on its own (a client's retry grouped otherwise),
    /// or a post or void of a pending transfer the chain posts or voids.
    alone: Vec<(u32, Transfer)>,
    next_id: u128,
    /// Cut links (from group, to group) by partition id.
    partitions: BTreeMap<u64, Vec<(u32, u32)>>,
    partition_seq: u64,
    healed: bool,
    quiet: bool,
    pub faults: Faults,
    pub violations: Vec<Violation>,
    pub acks: Vec<Ack>,
    // Measurements (see `check::Measured`).
    pub messages: [u64; settle_commit::Kind::COUNT],
    pub forced_commit_path: u64,
    pub forced_resolution: u64,
    pub acceptor_writes: u64,
    pub local_batches: u64,
    /// Participants of every cross-shard transaction the clients asked for.
    pub txn_participants: BTreeMap<TxnId, usize>,
    /// Every cross-shard transaction the clients asked for (the checkers read each
    /// side's fate from the ledgers: participants forget what they carried out).
    pub submitted: BTreeMap<TxnId, Txn>,
    pub decision_depth: BTreeMap<TxnId, u32>,
    doubt_since: BTreeMap<(u32, TxnId), u64>,
    pub longest_in_doubt_ms: u64,
    pub workload_end_ms: u64,
    reading: Option<Reading>,
    read_seq: u64,
    /// Snapshot reads whose every part came back, and were checked.
    pub snapshots_checked: u64,
    /// ...of which were started while a cross-shard transaction was in doubt somewhere.
    pub snapshots_amid_doubt: u64,
    pub snapshot_latencies_ms: Vec<u64>,
    /// The latest checked snapshot: its timestamp and each account's posted balances.
    pub last_snapshot: Option<(u64, BTreeMap<u128, [u128; 2]>)>,
}

impl World {
    pub fn new(options: Options) -> World {
        assert!(options.shards >= 1 && options.replicas % 2 == 1);
        let rng = StdRng::seed_from_u64(options.seed ^ 0x5eed_c0de);
        let mut skews = StdRng::seed_from_u64(options.seed ^ 0xc10c_5ce7);
        let config = Config {
            pulses: true,
            last_agent: options.last_agent,
            ..Config::new(options.replicas)
        };
        // Accounts: the first ids that land on each shard, every third one limited
        // (debits must not exceed credits) and every sixth the other way, so that
        // reservations meet balance limits at both sides.
        let mut accounts = Vec::new();
        let mut per_shard = vec![Vec::new(); options.shards as usize];
        let mut id = 1u128;
        while per_shard.iter().any(|ids: &Vec<Account>| ids.len() < ACCOUNTS_PER_SHARD) {
            let shard = shard_of(id, options.shards);
            let list = &mut per_shard[shard as usize];
            if list.len() < ACCOUNTS_PER_SHARD {
                let flags = match list.len() % 6 {
                    2 | 5 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    // A credit side refuses too: the coordinator (which holds the
                    // debit side) then learns a no from another shard.
                    3 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                    _ => AccountFlags::empty(),
                };
                list.push(Account { id, ledger: LEDGER, code: 1, flags, ..zero_account() });
                accounts.push((id, shard));
            }
            id += 1;
        }
        let shards = per_shard
            .into_iter()
            .enumerate()
            .map(|(shard, list)| {
                let mut ledger = Ledger::new(Default::default());
                let results = ledger.create_accounts(1_000, &list).expect("account batch");
                assert!(results.iter().all(|r| r.is_success()), "{results:?}");
                let state = ShardState::new(shard as u32, ledger);
                let skew_ms = skews.gen_range(0..=CLOCK_SKEW_MAX_MS);
                Shard {
                    core: Some(ShardCore::new(config, state, 1, skew_ms)),
                    down_state: None,
                    incarnation: 1,
                    queue: VecDeque::new(),
                    syncing: 0,
                    skew_ms,
                }
            })
            .collect();
        let acceptors = (0..options.shards)
            .map(|_| {
                (0..options.replicas)
                    .map(|index| Acceptor {
                        core: Some(AcceptorCore::new(index, BTreeMap::new())),
                        down_state: None,
                        incarnation: 1,
                        queue: VecDeque::new(),
                        syncing: 0,
                    })
                    .collect()
            })
            .collect();
        let clients = (0..options.clients)
            .map(|_| Client { op: None, seq: 0, op_seq: 0, started_ms: 0 })
            .collect();
        let fault_rng = StdRng::seed_from_u64(options.seed ^ 0xfa17_5eed);
        let workload_rng = StdRng::seed_from_u64(options.seed ^ 0x0b5e_55ed);
        let mut world = World {
            options,
            rng,
            fault_rng,
            workload_rng,
            now_ms: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            shards,
            acceptors,
            clients,
            accounts,
            pendings: Vec::new(),
            alone: Vec::new(),
            next_id: 1_000_000,
            partitions: BTreeMap::new(),
            partition_seq: 0,
            healed: options.fault_free,
            quiet: false,
            faults: Faults::default(),
            violations: Vec::new(),
            acks: Vec::new(),
            messages: [0; settle_commit::Kind::COUNT],
            forced_commit_path: 0,
            forced_resolution: 0,
            acceptor_writes: 0,
            local_batches: 0,
            txn_participants: BTreeMap::new(),
            submitted: BTreeMap::new(),
            decision_depth: BTreeMap::new(),
            doubt_since: BTreeMap::new(),
            longest_in_doubt_ms: 0,
            workload_end_ms: options.fault_ms,
            reading: None,
            read_seq: 0,
            snapshots_checked: 0,
            snapshots_amid_doubt: 0,
            snapshot_latencies_ms: Vec::new(),
            last_snapshot: None,
        };
        world.schedule(TICK_MS, Event::Tick);
        world.schedule(250, Event::CheckLimits);
        world.schedule(READ_EVERY_MS, Event::Read);
        if !options.fault_free {
            world.schedule(100, Event::Fault);
        }
        world.schedule(options.fault_ms, Event::Heal);
        for client in 0..options.clients {
            let start = world.workload_rng.gen_range(0..20);
            world.schedule(start, Event::ClientWake { client, seq: 0 });
        }
        world
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + delay_ms, self.seq)));
        self.events.insert(self.seq, event);
    }

    pub fn run(&mut self) {
        let end = self.options.fault_ms + DRAIN_MS;
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            if at > end || self.quiet {
                break;
            }
            self.now_ms = at;
            let event = self.events.remove(&seq).expect("scheduled");
            self.handle(event);
        }
    }

    /// States of every shard (up or down).
    pub fn states(&self) -> impl Iterator<Item = &ShardState> {
        self.shards.iter().map(|shard| match &shard.core {
            Some(core) => core.state(),
            None => shard.down_state.as_ref().expect("a down shard keeps its state"),
        })
    }

    pub fn clients_busy(&self) -> bool {
        self.clients.iter().any(|client| client.op.is_some())
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, message } => self.deliver(to, from, message),
            Event::ShardSync { shard, incarnation } => self.shard_synced(shard, incarnation),
            Event::AcceptorSync { shard, index, incarnation } => {
                self.acceptor_synced(shard, index, incarnation)
            }
            Event::ShardRestart { shard } => self.restart_shard(shard),
            Event::AcceptorRestart { shard, index } => self.restart_acceptor(shard, index),
            Event::Tick => {
                for shard in 0..self.shards.len() {
                    let now_ms = self.clock_ms(shard as u32);
                    if let Some(core) = self.shards[shard].core.as_mut() {
                        core.tick(now_ms);
                    }
                    self.drain_shard(shard as u32);
                }
                self.schedule(TICK_MS, Event::Tick);
            }
            Event::ClientWake { client, seq } => self.client_wake(client, seq),
            Event::Fault => self.inject_fault(),
            Event::HealPartition { id } => {
                self.partitions.remove(&id);
            }
            Event::Heal => {
                self.healed = true;
                self.partitions.clear();
                self.schedule(500, Event::Quiesce);
            }
            Event::CheckLimits => {
                super::check::limits(self);
                self.schedule(250, Event::CheckLimits);
            }
            Event::Read => {
                // A read whose shard crashed or lost leadership gets no answer: give up.
                let stale = self
                    .reading
                    .as_ref()
                    .is_some_and(|r| self.now_ms - r.started_ms > READ_GIVE_UP_MS);
                if self.reading.is_none() || stale {
                    self.start_read(0, 0);
                }
                self.schedule(READ_EVERY_MS, Event::Read);
            }
            Event::Quiesce => {
                if self.quiescent() {
                    self.quiet = true;
                } else {
                    self.schedule(500, Event::Quiesce);
                }
            }
        }
    }

    fn quiescent(&self) -> bool {
        !self.clients_busy()
            && self.shards.iter().all(|s| {
                s.core.as_ref().is_some_and(|c| c.coordinating() == 0) && s.queue.is_empty()
            })
            && self.acceptors.iter().flatten().all(|a| a.core.is_some() && a.queue.is_empty())
            && self.states().all(|state| state.in_doubt().next().is_none())
            // Pending transfers that time out have expired at both of their shards.
            && self.states().all(|state| state.ledger.next_expiry().is_none())
            && (self.options.protocol != Protocol::TwoPhase
                || self.states().all(|state| state.coordinated.is_empty()))
    }

    // ---- network ----

    fn group(address: Address, shards: u32) -> u32 {
        match address {
            Address::Shard(shard) => shard,
            // Acceptor i of shard s lives on a replica placed with shard (s + i).
            Address::Acceptor { shard, index } => (shard + u32::from(index)) % shards,
        }
    }

    fn cut(&self, from: Address, to: Address) -> bool {
        let (a, b) = (Self::group(from, self.options.shards), Self::group(to, self.options.shards));
        self.partitions.values().flatten().any(|&(x, y)| x == a && y == b)
    }

    fn send(&mut self, from: Address, to: Address, message: Message) {
        self.messages[message.body.kind().index()] += 1;
        // Every message crosses the wire encoding, as in production.
        let bytes = codec::encode_message(&message);
        let message = codec::decode_message(&bytes).expect("a message decodes");
        if let Body::Decision { txn, .. } = &message.body {
            if from == Address::Shard(txn.coordinator()) {
                self.decision_depth.entry(message.txn).or_insert(message.depth);
            }
        }
        if from == to {
            // Between two roles of one process: no network in between.
            self.schedule(0, Event::Deliver { to, from, message });
            return;
        }
        let faulty = !self.healed;
        if faulty && self.cut(from, to) {
            self.faults.messages_lost += 1;
            return;
        }
        if faulty && self.rng.gen_bool(0.03) {
            self.faults.messages_lost += 1;
            return;
        }
        let mut delay = self.rng.gen_range(1..=5);
        if faulty && self.rng.gen_bool(0.03) {
            self.faults.messages_delayed += 1;
            delay += self.rng.gen_range(50..=600);
        }
        if faulty && self.rng.gen_bool(0.02) {
            self.faults.messages_duplicated += 1;
            let again = delay + self.rng.gen_range(0..=100);
            self.schedule(again, Event::Deliver { to, from, message: message.clone() });
        }
        self.schedule(delay, Event::Deliver { to, from, message });
    }

    fn deliver(&mut self, to: Address, from: Address, message: Message) {
        match to {
            Address::Shard(shard) => {
                let now_ms = self.clock_ms(shard);
                let Some(core) = self.shards[shard as usize].core.as_mut() else { return };
                core.receive(now_ms, from, message);
                self.drain_shard(shard);
            }
            Address::Acceptor { shard, index } => {
                let Some(core) = self.acceptors[shard as usize][index as usize].core.as_mut()
                else {
                    return;
                };
                core.receive(message);
                self.drain_acceptor(shard, index);
            }
        }
    }

    // ---- disks ----

    /// How long a forced write takes: a Raft round (append, replicate, fsync at a
    /// majority), or one fsync with one replica.
    fn write_ms(&mut self) -> u64 {
        if self.options.replicas == 1 {
            self.rng.gen_range(2..=6)
        } else {
            self.rng.gen_range(4..=12)
        }
    }

    /// Shard `shard`'s clock: simulated time plus its skew.
    fn clock_ms(&self, shard: u32) -> u64 {
        self.now_ms + self.shards[shard as usize].skew_ms
    }

    fn drain_shard(&mut self, shard: u32) {
        let Some(core) = self.shards[shard as usize].core.as_mut() else { return };
        let commands = core.take_commands();
        for command in commands {
            match command {
                Command::Send { to, message } => self.send(Address::Shard(shard), to, message),
                Command::Persist(entry) => {
                    // Every entry goes through the log encoding, as in production.
                    let entry = codec::decode_entry(&codec::encode_entry(&entry))
                        .expect("an entry decodes");
                    if entry.record.commit_path() {
                        self.forced_commit_path += 1;
                    } else if matches!(
                        entry.record,
                        Record::Resolve { .. } | Record::ResolvePrepared { .. }
                    ) {
                        self.forced_resolution += 1;
                    } else if matches!(entry.record, Record::Local { .. }) {
                        self.local_batches += 1;
                    }
                    self.shards[shard as usize].queue.push_back(entry);
                    self.start_shard_sync(shard);
                }
                Command::Reply { client, txn: _, results } => self.client_reply(client, results),
                Command::ReadReply { client, read } => self.read_reply(shard, client, read),
            }
        }
    }

    fn start_shard_sync(&mut self, shard: u32) {
        let s = &self.shards[shard as usize];
        if s.syncing > 0 || s.queue.is_empty() {
            return;
        }
        let (count, incarnation) = (s.queue.len(), s.incarnation);
        self.shards[shard as usize].syncing = count;
        let delay = self.write_ms();
        self.schedule(delay, Event::ShardSync { shard, incarnation });
    }

    fn shard_synced(&mut self, shard: u32, incarnation: u32) {
        let s = &mut self.shards[shard as usize];
        if s.incarnation != incarnation || s.core.is_none() {
            return;
        }
        let count = std::mem::take(&mut s.syncing);
        let entries: Vec<Entry> = s.queue.drain(..count).collect();
        for entry in entries {
            self.note_applied(shard, &entry);
            let now_ms = self.clock_ms(shard);
            let core = self.shards[shard as usize].core.as_mut().expect("up");
            let applied = core.persisted(now_ms, &entry);
            if let Applied::Refused(why) = applied {
                self.violations.push(Violation {
                    checker: Checker::Protocol,
                    detail: format!("shard {shard}: {why}"),
                });
            }
            self.drain_shard(shard);
        }
        self.start_shard_sync(shard);
    }

    /// In-doubt bookkeeping for the lab.
    fn note_applied(&mut self, shard: u32, entry: &Entry) {
        let resolved = match &entry.record {
            Record::Prepare { txn } => {
                self.doubt_since.entry((shard, txn.id())).or_insert(self.now_ms);
                return;
            }
            Record::Resolve { txn, .. } => txn.id(),
            Record::ResolvePrepared { txn, .. } => *txn,
            _ => return,
        };
        if let Some(since) = self.doubt_since.remove(&(shard, resolved)) {
            self.longest_in_doubt_ms = self.longest_in_doubt_ms.max(self.now_ms - since);
        }
    }

    fn drain_acceptor(&mut self, shard: u32, index: u8) {
        let Some(core) = self.acceptors[shard as usize][index as usize].core.as_mut() else {
            return;
        };
        let commands = core.take_commands();
        let from = Address::Acceptor { shard, index };
        for command in commands {
            match command {
                AcceptorCommand::Send { to, message } => self.send(from, to, message),
                AcceptorCommand::Persist(entry) => {
                    self.acceptor_writes += 1;
                    let acceptor = &mut self.acceptors[shard as usize][index as usize];
                    acceptor.queue.push_back(entry);
                    if acceptor.syncing == 0 {
                        acceptor.syncing = acceptor.queue.len();
                        let incarnation = acceptor.incarnation;
                        let delay = self.rng.gen_range(2..=6);
                        self.schedule(delay, Event::AcceptorSync { shard, index, incarnation });
                    }
                }
            }
        }
    }

    fn acceptor_synced(&mut self, shard: u32, index: u8, incarnation: u32) {
        let acceptor = &mut self.acceptors[shard as usize][index as usize];
        if acceptor.incarnation != incarnation || acceptor.core.is_none() {
            return;
        }
        let count = std::mem::take(&mut acceptor.syncing);
        let entries: Vec<AcceptorEntry> = acceptor.queue.drain(..count).collect();
        for entry in entries {
            let core = self.acceptors[shard as usize][index as usize].core.as_mut().expect("up");
            core.persisted(entry);
        }
        self.drain_acceptor(shard, index);
        let acceptor = &mut self.acceptors[shard as usize][index as usize];
        if !acceptor.queue.is_empty() {
            acceptor.syncing = acceptor.queue.len();
            let incarnation = acceptor.incarnation;
            let delay = self.rng.gen_range(2..=6);
            self.schedule(delay, Event::AcceptorSync { shard, index, incarnation });
        }
    }

    // ---- the snapshot reader ----

    /// Reads every account at one timestamp across all shards (attempt `attempt`, at a
    /// timestamp past `floor_ns`); `check::snapshot` checks what comes back.
    fn start_read(&mut self, attempt: u32, floor_ns: u64) {
        self.reading = None;
        if self.shards.iter().any(|shard| shard.core.is_none()) {
            return; // A shard is down: try again at the next round.
        }
        self.read_seq += 1;
        let id = self.read_seq;
        let at = (self.now_ms * 1_000_000).max(floor_ns) + READ_LEAD_NS;
        let amid_doubt = self.states().any(|state| state.in_doubt().next().is_some());
        if self.options.bugs.plain_reads {
            // No read points: each shard's accounts as they stand right now.
            let parts: BTreeMap<u32, Vec<Account>> = self
                .states()
                .map(|state| (state.shard, self.accounts_of(state.shard, state)))
                .collect();
            self.snapshots_checked += 1;
            self.snapshots_amid_doubt += u64::from(amid_doubt);
            super::check::snapshot(self, at, &parts);
            return;
        }
        let started_ms = self.now_ms;
        let reading = Reading { id, at, attempt, started_ms, amid_doubt, parts: BTreeMap::new() };
        self.reading = Some(reading);
        for shard in 0..self.options.shards {
            let ids: Vec<u128> =
                self.accounts.iter().filter(|(_, s)| *s == shard).map(|(id, _)| *id).collect();
            let now_ms = self.clock_ms(shard);
            let core = self.shards[shard as usize].core.as_mut().expect("checked above");
            core.read(now_ms, id, at, ids);
            self.drain_shard(shard);
        }
    }

    fn accounts_of(&self, shard: u32, state: &ShardState) -> Vec<Account> {
        let store = state.ledger.store();
        let ids = self.accounts.iter().filter(|(_, s)| *s == shard);
        ids.map(|(id, _)| settle_ledger::Store::account(store, *id).expect("created")).collect()
    }

    fn read_reply(&mut self, shard: u32, client: u64, read: Result<SnapshotPart, ReadError>) {
        let Some(reading) = self.reading.as_mut().filter(|r| r.id == client) else {
            return; // An answer to a read given up.
        };
        match read {
            Ok(part) => {
                assert_eq!(part.at, reading.at, "a part answers its read's timestamp");
                reading.parts.insert(shard, part.accounts);
                if reading.parts.len() == self.options.shards as usize {
                    let reading = self.reading.take().expect("in flight");
                    self.snapshots_checked += 1;
                    self.snapshots_amid_doubt += u64::from(reading.amid_doubt);
                    self.snapshot_latencies_ms.push(self.now_ms - reading.started_ms);
                    super::check::snapshot(self, reading.at, &reading.parts);
                }
            }
            Err(ReadError::TooOld { clock }) if reading.attempt + 1 < READ_ATTEMPTS_MAX => {
                let attempt = reading.attempt + 1;
                self.start_read(attempt, clock);
            }
            Err(_) => self.reading = None,
        }
    }

    // ---- faults ----

    fn inject_fault(&mut self) {
        if self.healed {
            return;
        }
        let next = self.fault_rng.gen_range(100..=400);
        self.schedule(next, Event::Fault);
        let roll: f64 = self.fault_rng.gen();
        let shards = self.options.shards;
        if roll < 0.12 && self.options.partitions && shards >= 2 {
            self.partition();
        } else if roll < 0.27 {
            let shard = self.fault_rng.gen_range(0..shards);
            self.crash_shard(shard);
        } else if roll < 0.37 {
            let shard = self.fault_rng.gen_range(0..shards);
            let index = self.fault_rng.gen_range(0..self.options.replicas);
            self.crash_acceptor(shard, index);
        }
    }

    fn partition(&mut self) {
        let shards = self.options.shards;
        let mut side: Vec<bool> = (0..shards).map(|_| self.fault_rng.gen_bool(0.5)).collect();
        if side.iter().all(|&s| s) || side.iter().all(|&s| !s) {
            let flip = self.fault_rng.gen_range(0..shards) as usize;
            side[flip] = !side[flip];
        }
        let one_way = self.fault_rng.gen_bool(0.3);
        let mut cut = Vec::new();
        for a in 0..shards {
            for b in 0..shards {
                if side[a as usize] && !side[b as usize] {
                    cut.push((a, b));
                    if !one_way {
                        cut.push((b, a));
                    }
                }
            }
        }
        self.partition_seq += 1;
        let id = self.partition_seq;
        self.partitions.insert(id, cut);
        self.faults.partitions += 1;
        let lasts = self.fault_rng.gen_range(500..=6_000);
        self.schedule(lasts, Event::HealPartition { id });
    }

    fn crash_shard(&mut self, shard: u32) {
        let s = &mut self.shards[shard as usize];
        let Some(core) = s.core.take() else { return };
        self.faults.shard_crashes += 1;
        let mut state = core.into_state();
        // Writes in flight: those a majority had survive the leader change, in order.
        let survive = self.fault_rng.gen_range(0..=s.queue.len());
        let entries: Vec<Entry> = s.queue.drain(..).collect();
        self.faults.writes_lost += (entries.len() - survive) as u64;
        s.syncing = 0;
        for entry in &entries[..survive] {
            if let Applied::Refused(why) = state.apply(entry) {
                self.violations.push(Violation {
                    checker: Checker::Protocol,
                    detail: format!("shard {shard}: {why}"),
                });
            }
        }
        if self.options.bugs.decisions_not_forced {
            state.coordinated.clear();
        }
        let entries_survived: Vec<Entry> = entries[..survive].to_vec();
        self.shards[shard as usize].down_state = Some(state);
        for entry in &entries_survived {
            self.note_applied(shard, entry);
        }
        let downtime = if self.options.replicas == 1 {
            self.fault_rng.gen_range(1_000..=5_000)
        } else {
            self.fault_rng.gen_range(150..=1_000)
        };
        self.schedule(downtime, Event::ShardRestart { shard });
    }

    fn restart_shard(&mut self, shard: u32) {
        let config = Config {
            pulses: true,
            last_agent: self.options.last_agent,
            ..Config::new(self.options.replicas)
        };
        let now_ms = self.clock_ms(shard);
        let s = &mut self.shards[shard as usize];
        let Some(state) = s.down_state.take() else { return };
        s.incarnation += 1;
        s.core = Some(ShardCore::new(config, state, s.incarnation, now_ms));
        self.drain_shard(shard);
    }

    fn crash_acceptor(&mut self, shard: u32, index: u8) {
        let acceptor = &mut self.acceptors[shard as usize][index as usize];
        let Some(core) = acceptor.core.take() else { return };
        self.faults.acceptor_crashes += 1;
        let mut durable = core.durable().clone();
        let survive = self.fault_rng.gen_range(0..=acceptor.queue.len());
        let entries: Vec<AcceptorEntry> = acceptor.queue.drain(..).collect();
        self.faults.writes_lost += (entries.len() - survive) as u64;
        acceptor.syncing = 0;
        for entry in entries.into_iter().take(survive) {
            durable.insert(entry.state.txn.id(), entry.state);
        }
        acceptor.down_state = Some(durable);
        let downtime = self.fault_rng.gen_range(200..=3_000);
        self.schedule(downtime, Event::AcceptorRestart { shard, index });
    }

    fn restart_acceptor(&mut self, shard: u32, index: u8) {
        let acceptor = &mut self.acceptors[shard as usize][index as usize];
        let Some(durable) = acceptor.down_state.take() else { return };
        acceptor.incarnation += 1;
        acceptor.core = Some(AcceptorCore::new(index, durable));
    }

    // ---- clients ----

    fn client_wake(&mut self, client: usize, seq: u64) {
        if self.clients[client].seq != seq {
            return;
        }
        if self.clients[client].op.is_none() {
            if self.now_ms >= self.workload_end_ms {
                return;
            }
            let op = self.next_op();
            if let Op::Txn(txn) = &op {
                self.txn_participants.insert(txn.id(), txn.participants().len());
                self.submitted.insert(txn.id(), txn.clone());
            }
            let c = &mut self.clients[client];
            c.op = Some(op);
            c.started_ms = self.now_ms;
            c.op_seq = c.seq + 1;
        }
        // (Re)submit, and come back if no answer arrives in time.
        let c = &mut self.clients[client];
        c.seq += 1;
        let seq = c.seq;
        let reference = ((client as u64) << 32) | seq;
        let op = c.op.clone().expect("set above");
        self.schedule(CLIENT_TIMEOUT_MS, Event::ClientWake { client, seq });
        match op {
            Op::Txn(txn) => {
                let shard = txn.coordinator();
                let now_ms = self.clock_ms(shard);
                if let Some(core) = self.shards[shard as usize].core.as_mut() {
                    // Refusals (overload) are answered by the timeout: the client retries.
                    let _ = core.submit(now_ms, reference, txn);
                    self.drain_shard(shard);
                }
            }
            Op::Local { shard, transfers } => {
                let now_ms = self.clock_ms(shard);
                if let Some(core) = self.shards[shard as usize].core.as_mut() {
                    core.submit_local(now_ms, reference, transfers);
                    self.drain_shard(shard);
                }
            }
        }
    }

    fn client_reply(&mut self, reference: u64, results: Vec<R>) {
        let client = (reference >> 32) as usize;
        let seq = reference & 0xffff_ffff;
        let Some(c) = self.clients.get_mut(client) else { return };
        // Any attempt of the current request answers it (they all carry the same ids).
        if seq < c.op_seq {
            return;
        }
        let Some(op) = c.op.take() else { return };
        let latency_ms = self.now_ms - c.started_ms;
        let transfers = match &op {
            Op::Txn(txn) => txn.transfers.to_vec(),
            Op::Local { transfers, .. } => transfers.clone(),
        };
        for (transfer, result) in transfers.iter().zip(&results) {
            if *result == R::Ok && transfer.flags.contains(TransferFlags::PENDING) {
                self.pendings.push(*transfer);
            }
        }
        self.acks.push(Ack { op, results, latency_ms });
        c.seq += 1;
        let seq = c.seq;
        let think = self.workload_rng.gen_range(0..=20);
        self.schedule(think, Event::ClientWake { client, seq });
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    fn account(&mut self) -> (u128, u32) {
        self.accounts[self.workload_rng.gen_range(0..self.accounts.len())]
    }

    fn two_accounts(&mut self) -> ((u128, u32), (u128, u32)) {
        let a = self.account();
        loop {
            let b = self.account();
            if b.0 != a.0 {
                return (a, b);
            }
        }
    }

    fn transfer(
        &mut self,
        debit: u128,
        credit: u128,
        amount: u128,
        flags: TransferFlags,
    ) -> Transfer {
        Transfer {
            id: self.id(),
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            ledger: LEDGER,
            code: 1,
            flags,
            ..zero_transfer()
        }
    }

    /// The next request: single transfers, pending ones, post/void of those, and linked
    /// chains across three shards. Those whose accounts share one shard take the fast
    /// path.
    fn next_op(&mut self) -> Op {
        // Bounded: with three or more shards, a chain meets any participant count up
        // to three within a few tries.
        for _ in 0..1_000 {
            let op = self.any_op();
            match (op, self.options.participants) {
                (Op::Txn(txn), None) => return Op::Txn(self.batch(txn)),
                (op, None) => return op,
                (Op::Txn(txn), Some(n)) if txn.participants().len() == n => return Op::Txn(txn),
                _ => {}
            }
        }
        panic!("no transaction with {:?} participants in 1000 tries", self.options.participants);
    }

    /// Sometimes more units after `first`, in one transaction, as the router batches a
    /// request's units: those of the same coordinator, up to `units_max`. (Ops drawn
    /// but not taken are dropped: their ids are never used.)
    fn batch(&mut self, first: Txn) -> Txn {
        if self.options.units_max <= 1 || !self.workload_rng.gen_bool(0.3) {
            return first;
        }
        let wanted = self.workload_rng.gen_range(2..=self.options.units_max);
        let mut units = vec![first];
        for _ in 0..4 * wanted {
            if units.len() == wanted {
                break;
            }
            if let Op::Txn(txn) = self.any_op() {
                if txn.coordinator() == units[0].coordinator() {
                    units.push(txn);
                }
            }
        }
        let units = units.iter().map(|unit| (&unit.transfers[..], &unit.placement[..]));
        Txn::of_units(self.options.protocol, units).expect("fresh ids, one home")
    }

    /// A post (60%, of part of the amount) or void of `pending`, under a fresh id.
    fn post_or_void(&mut self, pending: &Transfer) -> Transfer {
        let post = self.workload_rng.gen_bool(0.6);
        let (flags, amount) = if post {
            (TransferFlags::POST_PENDING_TRANSFER, self.workload_rng.gen_range(1..=pending.amount))
        } else {
            (TransferFlags::VOID_PENDING_TRANSFER, pending.amount)
        };
        let mut t =
            self.transfer(pending.debit_account_id, pending.credit_account_id, amount, flags);
        t.pending_id = pending.id;
        t
    }

    /// Queues `transfer` to be sent on its own to `shard`, racing the chain it was
    /// drawn with (dropped when `ALONE_MAX` wait already).
    fn race_alone(&mut self, shard: u32, transfer: Transfer) {
        if self.alone.len() < ALONE_MAX {
            self.alone.push((shard, transfer));
        }
    }

    fn any_op(&mut self) -> Op {
        if !self.alone.is_empty() && self.workload_rng.gen_bool(0.3) {
            let (shard, transfer) =
                self.alone.swap_remove(self.workload_rng.gen_range(0..self.alone.len()));
            return Op::Local { shard, transfers: vec![transfer] };
        }
        let roll: f64 = self.workload_rng.gen();
        let amount = self.workload_rng.gen_range(1..=20);
        let transfers = if roll < 0.4 {
            let ((a, _), (b, _)) = self.two_accounts();
            let flags = if self.workload_rng.gen_bool(0.1) {
                TransferFlags::BALANCING_DEBIT
            } else {
                TransferFlags::empty()
            };
            vec![self.transfer(a, b, amount, flags)]
        } else if roll < 0.55 {
            let ((a, _), (b, _)) = self.two_accounts();
            let mut pending = self.transfer(a, b, amount, TransferFlags::PENDING);
            // Half of them time out (1-2 s): expiry races their post or void.
            if self.workload_rng.gen_bool(0.5) {
                pending.timeout = self.workload_rng.gen_range(1..=2);
            }
            vec![pending]
        } else if roll < 0.75 && !self.pendings.is_empty() {
            let pending =
                self.pendings.swap_remove(self.workload_rng.gen_range(0..self.pendings.len()));
            vec![self.post_or_void(&pending)]
        } else {
            // A chain a → b → c (→ a), on three different shards when there are three.
            let mut chain_accounts = vec![self.account()];
            while chain_accounts.len() < 3 {
                let next = self.account();
                let shards_used: Vec<u32> = chain_accounts.iter().map(|x| x.1).collect();
                let fresh_shard = !shards_used.contains(&next.1)
                    || shards_used.len() >= self.options.shards as usize;
                if fresh_shard && chain_accounts.iter().all(|x| x.0 != next.0) {
                    chain_accounts.push(next);
                }
            }
            let length = self.workload_rng.gen_range(2..=3);
            let mut chain = Vec::new();
            for i in 0..length {
                let (from, to) = (chain_accounts[i].0, chain_accounts[(i + 1) % 3].0);
                let linked =
                    if i + 1 < length { TransferFlags::LINKED } else { TransferFlags::empty() };
                let amount = self.workload_rng.gen_range(1..=20);
                chain.push(self.transfer(from, to, amount, linked));
            }
            // Sometimes a transfer inside one shard ends the chain (both of its sides on
            // that shard), half of them pending with a timeout.
            if self.workload_rng.gen_bool(0.3) {
                let home = chain_accounts[0];
                let neighbours: Vec<u128> = self
                    .accounts
                    .iter()
                    .filter(|(id, shard)| *shard == home.1 && *id != home.0)
                    .map(|(id, _)| *id)
                    .collect();
                let to = neighbours[self.workload_rng.gen_range(0..neighbours.len())];
                let pending = self.workload_rng.gen_bool(0.5);
                let flags = if pending { TransferFlags::PENDING } else { TransferFlags::empty() };
                let amount = self.workload_rng.gen_range(1..=20);
                let mut local = self.transfer(home.0, to, amount, flags);
                local.timeout = u32::from(pending);
                extend_chain(&mut chain, local);
                if self.workload_rng.gen_bool(0.5) {
                    self.race_alone(home.1, local);
                }
            }
            // Sometimes the chain ends by posting or voiding a pending transfer whose
            // two accounts share a shard, and a single-shard post or void of it races
            // the chain (which holds it while prepared).
            let shards = self.options.shards;
            let local_pendings: Vec<usize> = (0..self.pendings.len())
                .filter(|&i| {
                    let p = &self.pendings[i];
                    shard_of(p.debit_account_id, shards) == shard_of(p.credit_account_id, shards)
                })
                .collect();
            if !local_pendings.is_empty() && self.workload_rng.gen_bool(0.2) {
                let pick = local_pendings[self.workload_rng.gen_range(0..local_pendings.len())];
                let pending = self.pendings.swap_remove(pick);
                let held = self.post_or_void(&pending);
                extend_chain(&mut chain, held);
                let racing = self.post_or_void(&pending);
                self.race_alone(shard_of(pending.debit_account_id, shards), racing);
            }
            chain
        };
        let shards = self.options.shards;
        let placement: Vec<[u32; 2]> = transfers
            .iter()
            .map(|t| [shard_of(t.debit_account_id, shards), shard_of(t.credit_account_id, shards)])
            .collect();
        let first = placement[0][0];
        if placement.iter().flatten().all(|&s| s == first) {
            Op::Local { shard: first, transfers }
        } else {
            Op::Txn(Txn::new(self.options.protocol, transfers, placement).expect("a short chain"))
        }
    }
}

/// Appends `transfer` to `chain` as its new last member.
fn extend_chain(chain: &mut Vec<Transfer>, transfer: Transfer) {
    if let Some(last) = chain.last_mut() {
        last.flags |= TransferFlags::LINKED;
    }
    chain.push(transfer);
}

fn zero_account() -> Account {
    Account {
        id: 0,
        debits_pending: 0,
        debits_posted: 0,
        credits_pending: 0,
        credits_posted: 0,
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        reserved: 0,
        ledger: 0,
        code: 0,
        flags: AccountFlags::empty(),
        timestamp: 0,
    }
}

fn zero_transfer() -> Transfer {
    Transfer {
        id: 0,
        debit_account_id: 0,
        credit_account_id: 0,
        amount: 0,
        pending_id: 0,
        user_data_128: 0,
        user_data_64: 0,
        user_data_32: 0,
        timeout: 0,
        ledger: 0,
        code: 0,
        flags: TransferFlags::empty(),
        timestamp: 0,
    }
}
