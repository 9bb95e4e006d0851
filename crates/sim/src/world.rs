//! The simulated world: one shard's replicas, their disks, the network between them,
//! the clients, simulated time and the faults, all in one thread and all drawn from
//! one seeded generator. This is the simulator's shell around `settle_replica::Replica`,
//! the same core the production node drives.
//!
//! Time advances from event to event (a priority queue ordered by time, then by the
//! order events were scheduled), so a run takes as long as its work, not its
//! simulated seconds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use settle_ledger::{Reply, Write};
use settle_replica::{
    durable, Applied, ConfState, Config as ReplicaConfig, Message, MessageType, Output, Refusal,
    Replica,
};

use crate::check::{Checker, Violations};
use crate::workload::{Ack, Client, Op, Outstanding};
use crate::{Exercised, Faults, Options};

const MS: u64 = 1_000_000;
/// The simulated shard's group id.
const SHARD: u64 = 1;
const TICK_NS: u64 = 10 * MS;
/// A client gives up on an attempt after this long and tries another replica.
const CLIENT_TIMEOUT_NS: u64 = 400 * MS;
/// Most attempts for one request; beyond, the cluster is not serving.
const ATTEMPTS_MAX: u64 = 2_000;
/// Acknowledged requests each client needs after the faults heal.
const ACKS_AFTER_HEAL: u64 = 3;
/// Simulated time the clients may take to get them.
const HEAL_DEADLINE_NS: u64 = 30_000 * MS;
/// Quiet time at the end for followers to catch up before the state is compared: at
/// least the minimum, then until every live replica applied the same entries (a leader
/// may still propose a pulse), at most the maximum.
const QUIESCE_MIN_NS: u64 = 1_000 * MS;
const QUIESCE_MAX_NS: u64 = 10_000 * MS;
/// Most events in one run: a bound on a run gone wrong.
const EVENTS_MAX: u64 = 5_000_000;

enum Event {
    Deliver { to: usize, message: Message },
    Tick { replica: usize, incarnation: u64 },
    SyncDone { replica: usize, incarnation: u64, len: usize, number: Option<u64> },
    Request { replica: usize, client: usize, attempt: u64, op: Op },
    Reply { client: usize, attempt: u64, reply: Result<Reply, Refusal> },
    ClientTimeout { client: usize, attempt: u64 },
    ClientNext { client: usize },
    Restart { replica: usize },
    NextFault,
    HealPartition { cut: Vec<(usize, usize)> },
    Heal,
}

struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A replica's disk: `bytes[..durable]` survives a crash; the rest may not.
#[derive(Default)]
struct Disk {
    bytes: Vec<u8>,
    durable: usize,
}

struct Host {
    replica: Option<Replica>,
    /// Bumped at every crash, so that events for a dead incarnation are dropped.
    incarnation: u64,
    disk: Disk,
    clock_offset_ns: i64,
    syncing: bool,
    /// Highest ready number written to the disk and not yet reported persisted.
    unreported: Option<u64>,
    /// Why this replica will never start again (its disk is corrupt).
    lost: Option<String>,
    /// Until when (simulated ns) this replica's disk is slow: fsyncs take far longer,
    /// so more is written and not yet durable when a crash comes.
    slow_disk_until: u64,
}

pub struct World {
    options: Options,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    hosts: Vec<Host>,
    clients: Vec<Client>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(usize, usize)>,
    loss: f64,
    duplication: f64,
    healed: bool,
    /// Every entry any replica applied, by index: the first applier's, which every
    /// other replica must match.
    pub log: BTreeMap<u64, Applied>,
    pub acks: Vec<Ack>,
    pub faults: Faults,
    pub exercised: Exercised,
    pub violations: Violations,
    bit_rot_done: bool,
    /// (term, replica) of the last leader seen, to count elections.
    last_leader: Option<(u64, usize)>,
}

impl World {
    pub fn new(options: Options) -> World {
        let mut rng = StdRng::seed_from_u64(options.seed);
        let voters: Vec<u64> = (1..=options.replicas as u64).collect();
        let hosts = options.replicas + options.spares;
        let loss = rng.gen_range(0.0..0.08);
        let duplication = rng.gen_range(0.0..0.04);
        let mut world = World {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            hosts: Vec::new(),
            clients: (0..options.clients).map(|i| Client::new(i, hosts)).collect(),
            cut: BTreeSet::new(),
            loss,
            duplication,
            healed: false,
            log: BTreeMap::new(),
            acks: Vec::new(),
            faults: Faults::default(),
            exercised: Exercised::default(),
            violations: Violations::default(),
            bit_rot_done: false,
            last_leader: None,
            options,
        };
        for index in 0..hosts {
            // Spare hosts hold no replica until the group adds them (they then join on
            // the first message, as a production node does).
            let replica = (index < world.options.replicas).then(|| {
                let conf = world.initial_conf(index, &voters);
                world.new_replica(index, settle_replica::LogStore::new(conf))
            });
            world.hosts.push(Host {
                replica: replica.map(|r| r.expect("a new replica starts")),
                incarnation: 0,
                disk: Disk::default(),
                clock_offset_ns: 0,
                syncing: false,
                unreported: None,
                lost: None,
                slow_disk_until: 0,
            });
            if index < world.options.replicas {
                let first_tick = world.rng.gen_range(1..=TICK_NS);
                world.schedule(first_tick, Event::Tick { replica: index, incarnation: 0 });
            }
        }
        for client in 0..world.options.clients {
            // Client 0 creates the accounts first; the others start a little later.
            world.schedule(1 + client as u64 * 200 * MS, Event::ClientNext { client });
        }
        world.schedule(500 * MS, Event::NextFault);
        world.schedule(world.options.fault_ms * MS, Event::Heal);
        world
    }

    /// Runs to the end: faults, then healing, then quiet; and checks what it can only
    /// check at the end.
    pub fn run(&mut self) {
        let mut events = 0u64;
        let mut heal_deadline = None;
        while let Some(Reverse(scheduled)) = self.queue.pop() {
            events += 1;
            if events > EVENTS_MAX {
                self.violations.add(Checker::Liveness, format!("more than {EVENTS_MAX} events"));
                return;
            }
            self.now = scheduled.at;
            self.handle(scheduled.event);
            if self.healed {
                let deadline = *heal_deadline.get_or_insert(self.now + HEAL_DEADLINE_NS);
                if self.clients.iter().all(|c| c.acks_after_heal >= ACKS_AFTER_HEAL) {
                    break;
                }
                if self.now > deadline {
                    let waiting =
                        self.clients.iter().filter(|c| c.acks_after_heal < ACKS_AFTER_HEAL);
                    let detail = format!(
                        "{} client(s) still unserved {} ms after the faults healed ({})",
                        waiting.count(),
                        HEAL_DEADLINE_NS / MS,
                        self.describe()
                    );
                    self.violations.add(Checker::Liveness, detail);
                    return;
                }
            }
        }
        self.quiesce();
    }

    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.hosts.iter().filter_map(|h| h.replica.as_ref())
    }

    /// No more clients: only ticks, messages and syncs, so that every live replica
    /// catches up with the last commit.
    fn quiesce(&mut self) {
        let (start, end) = (self.now, self.now + QUIESCE_MAX_NS);
        self.clients.iter_mut().for_each(|c| c.outstanding = None);
        while let Some(Reverse(scheduled)) = self.queue.pop() {
            if scheduled.at > end {
                break;
            }
            if scheduled.at > start + QUIESCE_MIN_NS && self.converged() {
                break;
            }
            self.now = scheduled.at;
            match scheduled.event {
                Event::ClientNext { .. } | Event::ClientTimeout { .. } | Event::Reply { .. } => {}
                event => self.handle(event),
            }
        }
    }

    /// Each replica's role, term, applied index, or why it is down: for violation reports.
    pub fn describe(&self) -> String {
        let hosts =
            self.hosts.iter().enumerate().map(|(i, host)| match (&host.replica, &host.lost) {
                (_, Some(lost)) => format!("replica {}: lost ({lost})", i + 1),
                (None, None) => format!("replica {}: down", i + 1),
                (Some(r), None) => format!(
                    "replica {}: {} term {} applied {} leader {:?}",
                    i + 1,
                    if r.is_leader() { "leader" } else { "follower" },
                    r.term(),
                    r.applied(),
                    r.leader()
                ),
            });
        hosts.collect::<Vec<_>>().join("; ")
    }

    fn converged(&self) -> bool {
        let members = self.members();
        let mut applied =
            self.replicas().filter(|r| members.contains(&r.id())).map(|r| r.applied());
        let first = applied.next();
        applied.all(|a| Some(a) == first)
    }

    /// A spare host receives its first message: the group added it. It starts an empty
    /// replica from the group's first configuration, which the log brings up to date.
    fn join(&mut self, index: usize) {
        let voters: Vec<u64> = (1..=self.options.replicas as u64).collect();
        let conf = self.initial_conf(index, &voters);
        if let Ok(replica) = self.new_replica(index, settle_replica::LogStore::new(conf)) {
            self.hosts[index].replica = Some(replica);
            self.hosts[index].incarnation = 1;
            self.schedule(TICK_NS, Event::Tick { replica: index, incarnation: 1 });
        }
    }

    /// The members of the group now: the voters as the most advanced replica knows them.
    pub fn members(&self) -> Vec<u64> {
        self.replicas().max_by_key(|r| r.applied()).map(|r| r.voters()).unwrap_or_default()
    }

    fn initial_conf(&self, index: usize, voters: &[u64]) -> ConfState {
        let voters = if self.options.bugs.commit_without_quorum {
            // The bug under test: each replica believes it is a group of one.
            vec![index as u64 + 1]
        } else {
            voters.to_vec()
        };
        ConfState { voters, ..Default::default() }
    }

    fn new_replica(
        &mut self,
        index: usize,
        log: settle_replica::LogStore,
    ) -> Result<Replica, settle_replica::Halt> {
        let mut config = ReplicaConfig::new(index as u64 + 1, self.rng.gen());
        // Small numbers, so that checkpoints, compaction and snapshot installs happen.
        config.checkpoint_entries = 48;
        config.keep_entries = 8;
        config.request_timeout_ticks = 40;
        config.snapshot_timeout_ticks = 100;
        let mut replica = Replica::new(config, log)?;
        replica.record_applied(true);
        Ok(replica)
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled { at: self.now + delay, seq: self.seq, event }));
    }

    fn clock(&self, replica: usize) -> u64 {
        self.now.saturating_add_signed(self.hosts[replica].clock_offset_ns)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { replica, incarnation } => {
                if self.hosts[replica].incarnation != incarnation {
                    return;
                }
                if let Some(r) = self.hosts[replica].replica.as_ref() {
                    if r.is_leader() && self.last_leader != Some((r.term(), replica)) {
                        self.last_leader = Some((r.term(), replica));
                        self.exercised.leaders_elected += 1;
                    }
                }
                let clock = self.clock(replica);
                if let Some(r) = self.hosts[replica].replica.as_mut() {
                    r.tick(clock);
                    self.drain(replica);
                    self.schedule(TICK_NS, Event::Tick { replica, incarnation });
                }
            }
            Event::Deliver { to, message } => {
                let host = &self.hosts[to];
                let never_started = host.disk.bytes.is_empty() && host.lost.is_none();
                if host.replica.is_none() && never_started && host.incarnation == 0 {
                    self.join(to);
                }
                let (from, snapshot) =
                    (message.from, message.get_msg_type() == MessageType::MsgSnapshot);
                if let Some(r) = self.hosts[to].replica.as_mut() {
                    r.step(message);
                    self.drain(to);
                }
                if snapshot {
                    // The transfer fails when nobody is there to take it.
                    let delivered = self.hosts[to].replica.is_some();
                    self.report_snapshot(from, to as u64 + 1, delivered);
                }
            }
            Event::SyncDone { replica, incarnation, len, number } => {
                self.sync_done(replica, incarnation, len, number);
            }
            Event::Request { replica, client, attempt, op } => {
                let clock = self.clock(replica);
                let token = ((client as u64) << 32) | attempt;
                let Some(r) = self.hosts[replica].replica.as_mut() else { return };
                match op {
                    Op::Write(write) => r.propose(token, &write, clock),
                    Op::Read(read) => r.read(token, read),
                }
                self.drain(replica);
            }
            Event::Reply { client, attempt, reply } => self.client_reply(client, attempt, reply),
            Event::ClientTimeout { client, attempt } => {
                let current = self.clients[client].outstanding.as_ref().map(|o| o.attempt);
                if current == Some(attempt) {
                    self.retry(client, true);
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::Restart { replica } => self.restart(replica),
            Event::NextFault => {
                if !self.healed {
                    self.inject_fault();
                    let gap = self.rng.gen_range(100 * MS..=800 * MS);
                    self.schedule(gap, Event::NextFault);
                }
            }
            Event::HealPartition { cut } => {
                cut.iter().for_each(|link| {
                    self.cut.remove(link);
                });
            }
            Event::Heal => self.heal(),
        }
    }

    /// Carries out everything a replica's last inputs produced.
    fn drain(&mut self, index: usize) {
        loop {
            let Some(replica) = self.hosts[index].replica.as_mut() else { return };
            let output = replica.poll();
            if output.is_empty() {
                return;
            }
            self.carry_out(index, output);
        }
    }

    fn carry_out(&mut self, index: usize, output: Output) {
        // One shard: no cross-shard traffic (`xshard` simulates that).
        let Output {
            messages,
            writes,
            persist_number,
            replies,
            applied,
            checkpoint,
            membership,
            commit_messages: _,
            commit_replies: _,
            commit_refused: _,
            read_replies: _,
        } = output;
        self.exercised.membership_changes +=
            membership.iter().filter(|(_, m)| m.is_ok()).count() as u64;
        if let Some(job) = checkpoint {
            // Written at once, in memory: the record carries the data to the disk.
            let mut data = Vec::new();
            job.source.write(&mut data).expect("writing to memory cannot fail");
            if let Some(replica) = self.hosts[index].replica.as_mut() {
                replica.checkpoint_written(job.index, data);
            }
        }
        for applied in applied {
            self.check_applied(index, applied);
        }
        for message in messages {
            self.send(index, message);
        }
        for record in &writes {
            match record {
                settle_replica::Record::Checkpoint { .. } => self.exercised.checkpoints += 1,
                settle_replica::Record::InstalledSnapshot(_) => {
                    self.exercised.snapshots_installed += 1;
                }
                _ => {}
            }
        }
        let host = &mut self.hosts[index];
        for record in &writes {
            durable::encode(SHARD, record, &mut host.disk.bytes);
        }
        if let Some(number) = persist_number {
            host.unreported = Some(number);
            if self.options.bugs.ack_before_fsync {
                // The bug under test: tell raft-rs "durable" before any fsync.
                host.unreported = None;
                if let Some(replica) = host.replica.as_mut() {
                    replica.persisted(number);
                }
            }
        }
        self.start_sync(index);
        for (token, reply) in replies {
            let (client, attempt) = ((token >> 32) as usize, token & u64::from(u32::MAX));
            self.send_to_client(client, attempt, reply);
        }
    }

    fn start_sync(&mut self, index: usize) {
        let host = &mut self.hosts[index];
        let dirty = host.disk.bytes.len() > host.disk.durable || host.unreported.is_some();
        if host.syncing || !dirty || host.replica.is_none() {
            return;
        }
        host.syncing = true;
        let (len, number) = (host.disk.bytes.len(), host.unreported.take());
        let (incarnation, slow) = (host.incarnation, self.now < host.slow_disk_until);
        let latency = if slow {
            self.rng.gen_range(20 * MS..=300 * MS)
        } else {
            self.rng.gen_range(MS / 10..=3 * MS)
        };
        self.schedule(latency, Event::SyncDone { replica: index, incarnation, len, number });
    }

    fn sync_done(&mut self, index: usize, incarnation: u64, len: usize, number: Option<u64>) {
        let host = &mut self.hosts[index];
        if host.incarnation != incarnation {
            return;
        }
        host.syncing = false;
        host.disk.durable = host.disk.durable.max(len);
        if let (Some(number), Some(replica)) = (number, host.replica.as_mut()) {
            replica.persisted(number);
        }
        self.drain(index);
        self.start_sync(index);
    }

    fn check_applied(&mut self, index: usize, applied: Applied) {
        match self.log.get(&applied.index) {
            None => {
                self.log.insert(applied.index, applied);
            }
            Some(first) if *first == applied => {}
            Some(first) => {
                let detail = format!(
                    "replica {} applied {:?} at index {} where another applied {:?}",
                    index + 1,
                    summary(&applied),
                    applied.index,
                    summary(first)
                );
                self.violations.add(Checker::StateMachineSafety, detail);
            }
        }
    }

    fn send(&mut self, from: usize, message: Message) {
        let to = message.to as usize - 1;
        let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        if self.cut.contains(&(from, to)) || self.rng.gen_bool(self.loss) {
            self.faults.messages_lost += 1;
            if snapshot {
                self.report_snapshot(from as u64 + 1, message.to, false);
            }
            return;
        }
        if !snapshot && self.rng.gen_bool(self.duplication) {
            self.faults.messages_duplicated += 1;
            let delay = self.delay();
            self.schedule(delay, Event::Deliver { to, message: message.clone() });
        }
        let delay = self.delay();
        self.schedule(delay, Event::Deliver { to, message });
    }

    /// Network delay: usually under 2 ms, sometimes far longer (which also reorders).
    fn delay(&mut self) -> u64 {
        if !self.healed && self.rng.gen_bool(0.05) {
            self.faults.messages_delayed += 1;
            return self.rng.gen_range(10 * MS..=400 * MS);
        }
        self.rng.gen_range(MS / 10..=2 * MS)
    }

    fn report_snapshot(&mut self, leader: u64, to: u64, delivered: bool) {
        let leader = leader as usize - 1;
        if let Some(r) = self.hosts[leader].replica.as_mut() {
            r.report_snapshot(to, delivered);
            self.drain(leader);
        }
    }

    fn send_to_client(&mut self, client: usize, attempt: u64, reply: Result<Reply, Refusal>) {
        if self.rng.gen_bool(self.loss) {
            self.faults.messages_lost += 1;
            return;
        }
        let delay = self.delay();
        self.schedule(delay, Event::Reply { client, attempt, reply });
    }

    fn client_next(&mut self, client: usize) {
        let c = &mut self.clients[client];
        if c.outstanding.is_some() {
            return;
        }
        let op = c.next_op(&mut self.rng);
        c.outstanding = Some(Outstanding { op, attempt: 0, attempts: 0, first_sent_ns: self.now });
        self.retry(client, false);
    }

    /// (Re)sends the outstanding request; `elsewhere` moves to the next replica first.
    fn retry(&mut self, client: usize, elsewhere: bool) {
        let replicas = self.hosts.len();
        let c = &mut self.clients[client];
        let Some(outstanding) = c.outstanding.as_mut() else { return };
        if elsewhere {
            // Remembered so that a stale hint cannot send the client straight back.
            c.failed = Some(c.leader_guess);
            c.leader_guess = (c.leader_guess + 1) % replicas;
        }
        outstanding.attempts += 1;
        if outstanding.attempts > ATTEMPTS_MAX {
            let detail = format!("client {client}: no result after {ATTEMPTS_MAX} attempts");
            self.violations.add(Checker::Liveness, detail);
            c.outstanding = None;
            return;
        }
        self.seq += 1;
        outstanding.attempt = self.seq & u64::from(u32::MAX);
        let (attempt, op, replica) = (outstanding.attempt, outstanding.op.clone(), c.leader_guess);
        if self.rng.gen_bool(self.loss) {
            self.faults.messages_lost += 1;
        } else {
            let delay = self.delay();
            self.schedule(delay, Event::Request { replica, client, attempt, op });
        }
        self.schedule(CLIENT_TIMEOUT_NS, Event::ClientTimeout { client, attempt });
    }

    fn client_reply(&mut self, client: usize, attempt: u64, reply: Result<Reply, Refusal>) {
        let replicas = self.hosts.len();
        let c = &mut self.clients[client];
        if c.outstanding.as_ref().map(|o| o.attempt) != Some(attempt) {
            return; // an answer to an attempt already given up on
        }
        match reply {
            Ok(reply) => {
                let outstanding = c.outstanding.take().expect("checked");
                c.learn(&outstanding.op, &reply);
                c.acks += 1;
                if self.healed {
                    c.acks_after_heal += 1;
                }
                let (op, sent_ns) = (outstanding.op, outstanding.first_sent_ns);
                self.acks.push(Ack { client, op, reply, sent_ns, acked_ns: self.now });
                let think = self.rng.gen_range(0..=5 * MS);
                self.schedule(think, Event::ClientNext { client });
            }
            Err(Refusal::NotLeader { leader: Some(leader) }) => {
                let hinted = (leader as usize - 1) % replicas;
                // A replica removed from the group, or cut off, may name a leader that
                // just failed this client: go round the others instead.
                if c.failed == Some(hinted) {
                    self.retry(client, true);
                } else {
                    c.leader_guess = hinted;
                    self.retry(client, false);
                }
            }
            Err(Refusal::NotLeader { leader: None } | Refusal::Unknown | Refusal::Busy) => {
                self.retry(client, true);
            }
        }
    }

    fn inject_fault(&mut self) {
        let replicas = self.hosts.len();
        let kinds = if self.options.partitions { 7 } else { 5 };
        match self.rng.gen_range(0..kinds) {
            4 => self.change_membership(),
            0 | 1 => {
                let victim = self.rng.gen_range(0..replicas);
                if self.hosts[victim].replica.is_some() {
                    self.crash(victim);
                    let downtime = self.rng.gen_range(50 * MS..=2_000 * MS);
                    self.schedule(downtime, Event::Restart { replica: victim });
                }
            }
            2 if self.rng.gen_bool(0.5) => {
                let victim = self.rng.gen_range(0..replicas);
                let duration = self.rng.gen_range(500 * MS..=3_000 * MS);
                self.hosts[victim].slow_disk_until = self.now + duration;
                self.faults.slow_disks += 1;
            }
            2 => {
                let victim = self.rng.gen_range(0..replicas);
                let jump = self.rng.gen_range(-5_000 * MS as i64..=60_000 * MS as i64);
                self.hosts[victim].clock_offset_ns += jump;
                self.faults.clock_jumps += 1;
            }
            3 => {
                // Bit rot in a crashed replica's durable log, at most once per run (a
                // replica whose log is corrupt never starts again; two would leave a
                // three-replica group without a majority).
                let down: Vec<usize> =
                    (0..replicas).filter(|&i| self.hosts[i].replica.is_none()).collect();
                if self.bit_rot_done || down.is_empty() || !self.rng.gen_bool(0.3) {
                    return;
                }
                let victim = down[self.rng.gen_range(0..down.len())];
                let disk = &mut self.hosts[victim].disk;
                if disk.durable == 0 {
                    return;
                }
                let position = self.rng.gen_range(0..disk.durable);
                disk.bytes[position] ^= 1 << self.rng.gen_range(0..8);
                self.bit_rot_done = true;
                self.faults.bit_rot += 1;
            }
            5 => {
                let mut sides: Vec<bool> = (0..replicas).map(|_| self.rng.gen_bool(0.5)).collect();
                if sides.iter().all(|&s| s) || sides.iter().all(|&s| !s) {
                    sides[self.rng.gen_range(0..replicas)] ^= true;
                }
                let mut cut = Vec::new();
                for a in 0..replicas {
                    for b in 0..replicas {
                        if sides[a] != sides[b] {
                            cut.push((a, b));
                        }
                    }
                }
                self.partition(cut);
                self.faults.partitions_symmetric += 1;
            }
            _ => {
                let a = self.rng.gen_range(0..replicas);
                let b = (a + self.rng.gen_range(1..replicas)) % replicas;
                self.partition(vec![(a, b)]);
                self.faults.partitions_asymmetric += 1;
            }
        }
    }

    /// Asks the leader, if there is one, to add a host that is not a member or to remove
    /// one that is, keeping between `replicas` and every host as members.
    fn change_membership(&mut self) {
        let hosts = self.hosts.len();
        let Some(leader) =
            (0..hosts).find(|&i| self.hosts[i].replica.as_ref().is_some_and(Replica::is_leader))
        else {
            return;
        };
        let members = self.hosts[leader].replica.as_ref().expect("found").voters();
        let outsiders: Vec<u64> = (1..=hosts as u64).filter(|id| !members.contains(id)).collect();
        let (node, remove) = if !outsiders.is_empty() && members.len() <= self.options.replicas {
            (outsiders[self.rng.gen_range(0..outsiders.len())], false)
        } else if members.len() > self.options.replicas {
            (members[self.rng.gen_range(0..members.len())], true)
        } else {
            return;
        };
        self.faults.membership_changes += 1;
        // The answer (in `Output::membership`) only counts toward coverage.
        let replica = self.hosts[leader].replica.as_mut().expect("found");
        replica.change_membership(u64::MAX, node, remove);
        self.drain(leader);
    }

    fn partition(&mut self, cut: Vec<(usize, usize)>) {
        cut.iter().for_each(|&link| {
            self.cut.insert(link);
        });
        let duration = self.rng.gen_range(100 * MS..=3_000 * MS);
        self.schedule(duration, Event::HealPartition { cut });
    }

    /// The process dies: what was not fsynced may be lost, and the last write may be
    /// torn (a prefix of it reached the disk, the rest garbage).
    fn crash(&mut self, index: usize) {
        self.faults.crashes += 1;
        let host = &mut self.hosts[index];
        host.replica = None;
        host.incarnation += 1;
        host.syncing = false;
        host.unreported = None;
        let unsynced = host.disk.bytes.len() - host.disk.durable;
        let kept = if unsynced > 0 && self.rng.gen_bool(0.5) {
            self.faults.torn_writes += 1;
            self.rng.gen_range(0..=unsynced)
        } else {
            0
        };
        host.disk.bytes.truncate(host.disk.durable + kept);
        if kept > 0 && self.rng.gen_bool(0.5) {
            let garbage = self.rng.gen_range(1..=kept.min(64));
            let end = host.disk.bytes.len();
            for byte in &mut host.disk.bytes[end - garbage..] {
                *byte = self.rng.gen();
            }
        }
        host.disk.durable = host.disk.bytes.len();
    }

    fn restart(&mut self, index: usize) {
        if self.hosts[index].replica.is_some() || self.hosts[index].lost.is_some() {
            return;
        }
        let verify = !self.options.bugs.skip_checksum;
        let decoded = durable::decode_all(&self.hosts[index].disk.bytes, verify);
        let (records, len) = match decoded {
            Ok(decoded) => decoded,
            Err(corrupt) => {
                self.hosts[index].lost = Some(corrupt.to_string());
                self.faults.refused_starts += 1;
                return;
            }
        };
        // The torn tail is cut for good, as the production log does.
        self.hosts[index].disk.bytes.truncate(len);
        self.hosts[index].disk.durable = len;
        if records.is_empty() && self.hosts[index].incarnation == 0 {
            return; // a spare that was never added: nothing to start
        }
        let voters: Vec<u64> = (1..=self.options.replicas as u64).collect();
        if let Some((group, _)) = records.iter().find(|(group, _)| *group != SHARD) {
            // As the production node does with a shard it does not know: refuse.
            self.hosts[index].lost = Some(format!("the log holds records of shard {group}"));
            self.faults.refused_starts += 1;
            return;
        }
        let records = records.into_iter().map(|(_, record)| record);
        let log = durable::recover(self.initial_conf(index, &voters), records);
        match self.new_replica(index, log) {
            Ok(replica) => {
                let host = &mut self.hosts[index];
                host.replica = Some(replica);
                let incarnation = host.incarnation;
                self.schedule(TICK_NS, Event::Tick { replica: index, incarnation });
                self.faults.restarts += 1;
            }
            Err(halt) => {
                self.hosts[index].lost = Some(halt.to_string());
                self.faults.refused_starts += 1;
            }
        }
    }

    /// The end of the faults: partitions and losses stop, every replica comes back.
    fn heal(&mut self) {
        self.healed = true;
        self.cut.clear();
        self.loss = 0.0;
        self.duplication = 0.0;
        for index in 0..self.hosts.len() {
            self.restart(index);
        }
    }
}

fn summary(applied: &Applied) -> String {
    let write = match &applied.write {
        None => "no write".to_string(),
        Some(Write::CreateAccounts(a)) => format!("create_accounts x{}", a.len()),
        Some(Write::CreateTransfers(t)) => {
            format!("create_transfers x{} (first id {:#x})", t.len(), t.first().map_or(0, |t| t.id))
        }
        Some(Write::Pulse) => "pulse".to_string(),
    };
    format!("term {} ts {} {write}", applied.term, applied.timestamp)
}
