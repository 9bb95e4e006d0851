//! # settle-sim
//!
//! settle's deterministic simulator. One shard's replicas (the production core,
//! `settle_replica::Replica`: raft-rs and the ledger), their disks, the network and the
//! clients run in one thread on simulated time. Every random choice (message loss,
//! delay, duplication, partitions, crashes and torn writes, clock jumps, bit rot, the
//! workload, raft-rs's election timeouts) comes from one seed, so a seed replays
//! exactly. After the faults heal, the checkers (`check`) hold the run to every
//! guarantee.
//!
//! Layout, top-down:
//! - this file: [`Options`], [`run`] one seed, [`Report`];
//! - [`world`]: the simulated world and its faults (the simulator's IO shell);
//! - [`workload`]: the clients and what they ask;
//! - [`check`]: the checkers.
//! - [`xshard`]: the cross-shard simulator: several shards, the commit protocols between
//!   them (`settle-commit`), their own checkers and the lab's measurements.

pub mod check;
pub mod workload;
pub mod world;
pub mod xshard;

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

pub use check::{Checker, Violation};

/// What to simulate.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub seed: u64,
    /// The group's first members.
    pub replicas: usize,
    /// Hosts that start without a replica, for membership changes to add.
    pub spares: usize,
    pub clients: usize,
    /// How long faults are injected (simulated ms); then they heal.
    pub fault_ms: u64,
    /// Whether partitions are part of the fault mix.
    pub partitions: bool,
    /// Deliberate bugs, to show that the checkers catch them.
    pub bugs: Bugs,
}

impl Options {
    pub fn new(seed: u64) -> Options {
        Options {
            seed,
            replicas: 3,
            spares: 1,
            clients: 3,
            fault_ms: 8_000,
            partitions: true,
            bugs: Bugs::default(),
        }
    }
}

/// Guarantees broken on purpose, for the tests that show the checkers have teeth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Tell raft-rs entries are durable before the fsync.
    pub ack_before_fsync: bool,
    /// Every replica believes it is a group of one, so it commits alone.
    pub commit_without_quorum: bool,
    /// Read the log back without verifying checksums.
    pub skip_checksum: bool,
}

/// Faults injected in a run, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub messages_lost: u64,
    pub messages_duplicated: u64,
    pub messages_delayed: u64,
    pub partitions_symmetric: u64,
    pub partitions_asymmetric: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub torn_writes: u64,
    pub clock_jumps: u64,
    /// Periods in which one replica's fsyncs were slow (20-300 ms).
    pub slow_disks: u64,
    pub bit_rot: u64,
    /// Membership changes proposed (add a spare host, or remove a member).
    pub membership_changes: u64,
    /// Restarts refused because the log was corrupt (expected after bit rot).
    pub refused_starts: u64,
}

impl Faults {
    pub fn add(&mut self, other: &Faults) {
        self.messages_lost += other.messages_lost;
        self.messages_duplicated += other.messages_duplicated;
        self.messages_delayed += other.messages_delayed;
        self.partitions_symmetric += other.partitions_symmetric;
        self.partitions_asymmetric += other.partitions_asymmetric;
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.torn_writes += other.torn_writes;
        self.clock_jumps += other.clock_jumps;
        self.slow_disks += other.slow_disks;
        self.bit_rot += other.bit_rot;
        self.membership_changes += other.membership_changes;
        self.refused_starts += other.refused_starts;
    }

    /// (name, count) for printing.
    pub fn by_kind(&self) -> [(&'static str, u64); 13] {
        [
            ("messages lost", self.messages_lost),
            ("messages duplicated", self.messages_duplicated),
            ("messages delayed", self.messages_delayed),
            ("symmetric partitions", self.partitions_symmetric),
            ("asymmetric partitions", self.partitions_asymmetric),
            ("crashes", self.crashes),
            ("restarts", self.restarts),
            ("torn writes", self.torn_writes),
            ("clock jumps", self.clock_jumps),
            ("slow disk periods", self.slow_disks),
            ("bit rot", self.bit_rot),
            ("membership changes proposed", self.membership_changes),
            ("refused starts (corrupt log)", self.refused_starts),
        ]
    }
}

/// Protocol paths a run went through: evidence that the faults reached them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exercised {
    /// Leaders seen taking office (a new term or a new replica leading).
    pub leaders_elected: u64,
    /// Checkpoints taken (ledger snapshot + log compaction).
    pub checkpoints: u64,
    /// Snapshots a follower installed because the leader had compacted past it.
    pub snapshots_installed: u64,
    /// Membership changes completed (joint configuration entered and left).
    pub membership_changes: u64,
}

impl Exercised {
    pub fn add(&mut self, other: &Exercised) {
        self.leaders_elected += other.leaders_elected;
        self.checkpoints += other.checkpoints;
        self.snapshots_installed += other.snapshots_installed;
        self.membership_changes += other.membership_changes;
    }
}

/// What one seed did and found.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    /// Client requests that got a result.
    pub acknowledged: u64,
    /// Entries in the committed log.
    pub committed: u64,
    pub faults: Faults,
    pub exercised: Exercised,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "ok" } else { "VIOLATION" };
        write!(
            f,
            "seed {}: {verdict}, {} acknowledged, {} entries committed",
            self.seed, self.acknowledged, self.committed
        )?;
        for violation in &self.violations {
            write!(f, "\n  {violation}")?;
        }
        Ok(())
    }
}

/// Simulates one seed. A panic inside the simulated cluster is a violation too (it is
/// reported with the seed, not propagated).
pub fn run(options: Options) -> Report {
    let outcome = simulate(|| {
        let mut world = world::World::new(options);
        world.run();
        check::at_end(&mut world);
        world
    });
    match outcome {
        Ok(world) => Report {
            seed: options.seed,
            acknowledged: world.acks.len() as u64,
            committed: world.log.len() as u64,
            faults: world.faults,
            exercised: world.exercised,
            violations: world.violations.found,
        },
        Err(message) => Report {
            seed: options.seed,
            acknowledged: 0,
            committed: 0,
            faults: Faults::default(),
            exercised: Exercised::default(),
            violations: vec![Violation {
                checker: Checker::NoHalts,
                detail: format!("the simulation panicked: {message}"),
            }],
        },
    }
}

/// Runs a simulation; a panic inside it comes back as its text, for the report (a
/// simulated cluster that panics is a finding, not a crash of the simulator).
pub(crate) fn simulate<W>(body: impl FnOnce() -> W) -> Result<W, String> {
    panic::catch_unwind(AssertUnwindSafe(body)).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}
