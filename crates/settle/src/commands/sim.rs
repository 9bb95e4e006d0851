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
}

pub fn run(args: Args) -> ExitCode {
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
