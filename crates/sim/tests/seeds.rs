//! The simulator over many seeds, and proof that its checkers have teeth: each
//! deliberately broken guarantee is caught within a bounded number of seeds.
//!
//! `SETTLE_SIM_SEEDS` overrides how many seeds the main test runs (default 200, as CI
//! requires); every failure names its seed, replayable with `settle sim --seed S`.

use settle_sim::{Bugs, Checker, Options, Report};

fn seeds() -> u64 {
    std::env::var("SETTLE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

#[test]
fn every_guarantee_holds_over_the_seeds() {
    let mut failed = Vec::new();
    let mut acknowledged = 0;
    let mut exercised = settle_sim::Exercised::default();
    for seed in 1..=seeds() {
        let report = settle_sim::run(Options::new(seed));
        acknowledged += report.acknowledged;
        exercised.add(&report.exercised);
        if !report.passed() {
            failed.push(report.to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "violations (replay with `settle sim --seed S`):\n{}",
        failed.join("\n")
    );
    // The workload did work: a run that acknowledges nothing checks nothing.
    assert!(acknowledged > 100 * seeds(), "only {acknowledged} requests acknowledged");
    // The faults reached the rare paths: failovers, compaction, catch-up by snapshot.
    assert!(exercised.leaders_elected > 2 * seeds(), "{exercised:?}");
    assert!(exercised.checkpoints > seeds(), "{exercised:?}");
    assert!(exercised.snapshots_installed > seeds() / 10, "{exercised:?}");
    assert!(exercised.membership_changes > seeds() / 2, "{exercised:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let [a, b] = [settle_sim::run(Options::new(7)), settle_sim::run(Options::new(7))];
    assert_eq!((a.acknowledged, a.committed, a.faults), (b.acknowledged, b.committed, b.faults));
    let c = settle_sim::run(Options::new(8));
    assert_ne!((a.acknowledged, a.faults), (c.acknowledged, c.faults), "seeds must matter");
}

/// The first seed among `1..=limit` at which `bugs` makes `checker` (or, for a panic
/// inside the cluster, any checker) report a violation.
fn first_caught(bugs: Bugs, limit: u64, checkers: &[Checker]) -> Option<Report> {
    (1..=limit)
        .map(|seed| settle_sim::run(Options { bugs, ..Options::new(seed) }))
        .find(|r| r.violations.iter().any(|v| checkers.contains(&v.checker)))
}

#[test]
fn acknowledging_before_fsync_is_caught() {
    let bugs = Bugs { ack_before_fsync: true, ..Bugs::default() };
    let caught = first_caught(bugs, 100, &Checker::ALL);
    let report = caught.expect("acking before fsync went unnoticed for 100 seeds");
    println!("caught at {report}");
}

#[test]
fn committing_without_a_quorum_is_caught() {
    let bugs = Bugs { commit_without_quorum: true, ..Bugs::default() };
    let checkers = [Checker::StateMachineSafety, Checker::Convergence, Checker::Acknowledged];
    let report = first_caught(bugs, 10, &checkers).expect("split brain went unnoticed");
    println!("caught at {report}");
}

#[test]
fn skipping_the_checksum_is_caught() {
    let bugs = Bugs { skip_checksum: true, ..Bugs::default() };
    let caught = first_caught(bugs, 200, &Checker::ALL);
    let report = caught.expect("reading unverified logs went unnoticed for 200 seeds");
    println!("caught at {report}");
}
