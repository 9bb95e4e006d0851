//! The cross-shard simulator: S shards, their commit-protocol cores (`settle-commit`,
//! the production cores), Paxos Commit's acceptors, a network, disks and clients, in
//! one thread on simulated time, every random choice from one seed.
//!
//! Level of abstraction: a shard here is its Raft group seen from the commit protocol:
//! one leader process whose forced writes (`Command::Persist`) become durable after a
//! replication delay, and which "crashes" as a leader change does: its volatile protocol
//! state is lost, writes in flight survive as a prefix (those a majority had), and a new
//! leader takes over after an election (or, with `--replicas 1`, after the process
//! restarts). Raft itself is simulated, fault by fault, by the single-shard simulator
//! (`crate::world`); this one puts the protocols between shards under faults.
//!
//! Layout: this file ([`Options`], [`run`], [`Report`]); [`world`] (the world, its
//! faults and its clients); [`check`] (the checkers and the lab's measurements).

pub mod check;
pub mod world;

use std::fmt;

pub use settle_commit::Protocol;

/// What to simulate.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub seed: u64,
    pub shards: u32,
    /// Replicas per shard: R = 2F+1 Paxos Commit acceptors per coordinator shard; with
    /// R = 1 a crashed shard stays down until its process restarts.
    pub replicas: u8,
    pub protocol: Protocol,
    pub clients: usize,
    /// Simulated ms of workload under faults; then faults heal and the run drains.
    pub fault_ms: u64,
    /// Whether partitions are part of the fault mix.
    pub partitions: bool,
    /// No faults at all (the lab's fault-free column, the message-count test).
    pub fault_free: bool,
    /// Only cross-shard transactions with exactly this many participants (the
    /// message-count test); `None`: the full mix, fast path included.
    pub participants: Option<usize>,
    /// Most units (transfers or chains) the workload puts in one transaction, as the
    /// router batches them; 1: every transaction is one unit (the lab's per-transaction
    /// costs). Ignored with `participants`.
    pub units_max: usize,
    /// 2PC's coordinator is the last agent (`settle_commit::Config::last_agent`, as in
    /// production). `Options::new` turns it on for odd seeds, so that a run of seeds
    /// covers both forms; the lab turns it off (Gray & Lamport's table counts the
    /// classic form).
    pub last_agent: bool,
    /// A guarantee broken on purpose, to show that the checkers catch it.
    pub bugs: Bugs,
}

/// Guarantees the shell breaks on purpose (the commit cores stay as in production).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// A coordinator's decisions are not durable: a crashed coordinator shard comes
    /// back without them (as if the decision were not forced before acting on it).
    pub decisions_not_forced: bool,
    /// The snapshot reader reads each shard's accounts as they stand, without read
    /// points at one timestamp (what a read across shards is without the clock).
    pub plain_reads: bool,
}

impl Options {
    pub fn new(seed: u64, protocol: Protocol) -> Options {
        Options {
            seed,
            shards: 3,
            replicas: 3,
            protocol,
            clients: 4,
            fault_ms: 10_000,
            partitions: true,
            fault_free: false,
            participants: None,
            units_max: 4,
            last_agent: seed % 2 == 1,
            bugs: Bugs::default(),
        }
    }
}

/// Faults injected, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub messages_delayed: u64,
    pub partitions: u64,
    pub shard_crashes: u64,
    pub acceptor_crashes: u64,
    pub writes_lost: u64,
}

impl Faults {
    pub fn add(&mut self, other: &Faults) {
        self.messages_lost += other.messages_lost;
        self.messages_duplicated += other.messages_duplicated;
        self.messages_delayed += other.messages_delayed;
        self.partitions += other.partitions;
        self.shard_crashes += other.shard_crashes;
        self.acceptor_crashes += other.acceptor_crashes;
        self.writes_lost += other.writes_lost;
    }

    pub fn by_kind(&self) -> [(&'static str, u64); 7] {
        [
            ("messages lost", self.messages_lost),
            ("messages duplicated", self.messages_duplicated),
            ("messages delayed", self.messages_delayed),
            ("partitions", self.partitions),
            ("shard leader crashes", self.shard_crashes),
            ("acceptor crashes", self.acceptor_crashes),
            ("writes lost in a crash", self.writes_lost),
        ]
    }
}

/// What one seed did and found.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub protocol: Protocol,
    /// 2PC ran with the last agent.
    pub last_agent: bool,
    pub faults: Faults,
    pub measured: check::Measured,
    pub violations: Vec<check::Violation>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether an atomicity violation (some side committed, another aborted) was found.
    pub fn atomicity_violated(&self) -> bool {
        self.violations.iter().any(|v| v.checker == check::Checker::Atomicity)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "ok" } else { "VIOLATION" };
        let m = &self.measured;
        let last_agent = if self.last_agent { ", last agent" } else { "" };
        write!(
            f,
            "seed {} ({}{last_agent}): {verdict}, {} committed, {} aborted, {} in doubt, {} fast-path batches, {} pending expired",
            self.seed,
            self.protocol.name(),
            m.committed,
            m.aborted,
            m.in_doubt,
            m.local_batches,
            m.expired
        )?;
        for violation in &self.violations {
            write!(f, "\n  {violation}")?;
        }
        Ok(())
    }
}

/// Whether `options` runs 2PC with the last agent.
fn last_agent(options: &Options) -> bool {
    options.last_agent && options.protocol == Protocol::TwoPhase
}

/// Simulates one seed. A panic inside is reported as a violation with the seed.
pub fn run(options: Options) -> Report {
    let outcome = crate::simulate(|| {
        let mut world = world::World::new(options);
        world.run();
        check::at_end(&mut world);
        world
    });
    match outcome {
        Ok(world) => Report {
            seed: options.seed,
            protocol: options.protocol,
            last_agent: last_agent(&options),
            faults: world.faults,
            measured: world.measured(),
            violations: world.violations,
        },
        Err(message) => Report {
            seed: options.seed,
            protocol: options.protocol,
            last_agent: last_agent(&options),
            faults: Faults::default(),
            measured: check::Measured::default(),
            violations: vec![check::Violation {
                checker: check::Checker::NoPanic,
                detail: format!("the simulation panicked: {message}"),
            }],
        },
    }
}
