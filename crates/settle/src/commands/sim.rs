//! `settle sim`: the deterministic simulator (crate `settle-sim`) from the command line.
//!
//! `--seed S` replays one seed exactly and prints what it found; `--seeds N` runs seeds
//! `first..first+N` and prints a summary: seeds run, operations acknowledged, faults by
//! kind, and each checker's verdict. Exits 1 on any violation, naming the failing seeds.

use std::process::ExitCode;

use settle_sim::{Checker, Exercised, Faults, Options, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Replay exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run this many seeds, starting at --first-seed.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed of a --seeds run.
    #[arg(long, default_value_t = 1)]
    pub first_seed: u64,
    /// Replicas in the shard.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=7))]
    pub replicas: u64,
    /// Leave partitions out of the fault mix.
    #[arg(long)]
    pub no_partitions: bool,
    /// Simulated milliseconds of faults before they heal.
    #[arg(long, default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub fault_ms: u64,
    /// Shards. Above 1, the cross-shard simulator runs: transfers and linked chains
    /// across shards under --protocol, with the commit cores of `settle-commit`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub shards: u32,
    /// The atomic-commit protocol across shards: 2pc, 3pc or paxos-commit. 3pc is unsafe
    /// under partitions; choosing it is the explicit opt-in.
    #[arg(long, default_value = "2pc", value_parser = super::parse_protocol)]
    pub protocol: settle_sim::xshard::Protocol,
}

pub fn run(args: Args) -> ExitCode {
    if args.shards > 1 {
        return cross_shard(&args);
    }
    let options = |seed| Options {
        replicas: args.replicas as usize,
        partitions: !args.no_partitions,
        fault_ms: args.fault_ms,
        ..Options::new(seed)
    };
    if let Some(seed) = args.seed {
        let report = settle_sim::run(options(seed));
        println!("{report}");
        print_faults(&report.faults);
        print_exercised(&report.exercised);
        return exit_code(report.passed());
    }
    let mut acknowledged = 0;
    let mut committed = 0;
    let mut faults = Faults::default();
    let mut exercised = Exercised::default();
    let mut failed: Vec<Report> = Vec::new();
    let last = args.first_seed.saturating_add(args.seeds);
    for seed in args.first_seed..last {
        let report = settle_sim::run(options(seed));
        acknowledged += report.acknowledged;
        committed += report.committed;
        faults.add(&report.faults);
        exercised.add(&report.exercised);
        if !report.passed() {
            eprintln!("{report}");
            failed.push(report);
        }
    }
    println!("seeds run = {}", args.seeds);
    println!("operations acknowledged = {acknowledged}");
    println!("entries committed = {committed}");
    print_faults(&faults);
    print_exercised(&exercised);
    println!("checkers:");
    for checker in Checker::ALL {
        let failures = failed.iter().filter(|r| r.violations.iter().any(|v| v.checker == checker));
        let seeds: Vec<String> = failures.map(|r| r.seed.to_string()).collect();
        if seeds.is_empty() {
            println!("  {:<22} ok", checker.name());
        } else {
            println!("  {:<22} VIOLATED (seeds {})", checker.name(), seeds.join(", "));
        }
    }
    if let Some(first) = failed.first() {
        println!("failing seed: {} (replay: settle sim --seed {})", first.seed, first.seed);
    }
    exit_code(failed.is_empty())
}

fn print_faults(faults: &Faults) {
    println!("faults injected:");
    for (kind, count) in faults.by_kind() {
        println!("  {kind:<30} {count}");
    }
}

fn print_exercised(exercised: &Exercised) {
    println!("exercised:");
    println!("  {:<30} {}", "leaders elected", exercised.leaders_elected);
    println!("  {:<30} {}", "checkpoints", exercised.checkpoints);
    println!("  {:<30} {}", "snapshots installed", exercised.snapshots_installed);
    println!("  {:<30} {}", "membership changes", exercised.membership_changes);
}

fn exit_code(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `settle sim --shards S --protocol P`: the cross-shard simulator.
fn cross_shard(args: &Args) -> ExitCode {
    use settle_sim::xshard::{self, check::Checker as X};
    if args.replicas.is_multiple_of(2) {
        eprintln!("error: --replicas must be odd with --shards (2F+1 acceptors per shard)");
        return ExitCode::from(2);
    }
    if args.protocol == xshard::Protocol::ThreePhase {
        eprintln!("warning: 3pc is unsafe under network partitions; it runs because you chose it");
    }
    let options = |seed| xshard::Options {
        shards: args.shards,
        replicas: args.replicas as u8,
        partitions: !args.no_partitions,
        fault_ms: args.fault_ms,
        ..xshard::Options::new(seed, args.protocol)
    };
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect(),
    };
    let mut faults = xshard::Faults::default();
    let (mut committed, mut aborted, mut in_doubt) = (0, 0, 0);
    let (mut snapshots, mut snapshots_amid_doubt) = (0, 0);
    let mut failed = Vec::new();
    for &seed in &seeds {
        let report = xshard::run(options(seed));
        if args.seed.is_some() || !report.passed() {
            eprintln!("{report}");
        }
        faults.add(&report.faults);
        committed += report.measured.committed;
        aborted += report.measured.aborted;
        in_doubt += report.measured.in_doubt;
        snapshots += report.measured.snapshots_checked;
        snapshots_amid_doubt += report.measured.snapshots_amid_doubt;
        if !report.passed() {
            failed.push(report);
        }
    }
    println!("protocol = {}", args.protocol.name());
    println!("shards = {}, replicas = {}", args.shards, args.replicas);
    println!("seeds run = {}", seeds.len());
    println!(
        "cross-shard transactions: {committed} committed, {aborted} aborted, {in_doubt} in doubt"
    );
    println!(
        "snapshot reads checked during the run: {snapshots} ({snapshots_amid_doubt} started \
         while a transaction was in doubt)"
    );
    println!("faults injected:");
    for (kind, count) in faults.by_kind() {
        println!("  {kind:<30} {count}");
    }
    println!("checkers:");
    for checker in X::ALL {
        let seeds: Vec<String> = failed
            .iter()
            .filter(|r| r.violations.iter().any(|v| v.checker == checker))
            .map(|r| r.seed.to_string())
            .collect();
        if seeds.is_empty() {
            println!("  {:<38} ok", checker.name());
        } else {
            println!("  {:<38} VIOLATED (seeds {})", checker.name(), seeds.join(", "));
        }
    }
    if let Some(first) = failed.first() {
        let (shards, protocol) = (args.shards, args.protocol.name());
        println!(
            "failing seed: {} (replay: settle sim --shards {shards} --protocol {protocol} --seed {})",
            first.seed, first.seed
        );
    }
    exit_code(failed.is_empty())
}
