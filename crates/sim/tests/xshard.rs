//! The cross-shard simulator's gates: 2PC and Paxos Commit keep every guarantee over
//! 200 seeds under the whole fault mix; 3PC breaks atomicity under partitions and keeps
//! it without them; fault-free message and forced-write counts equal Gray & Lamport's;
//! snapshot reads taken during the runs conserve money, and the checker of that catches
//! reads taken without a common timestamp.

use settle_commit::paper_cost;
use settle_sim::xshard::{self, check::Checker, Bugs, Options, Protocol};

const SEEDS: u64 = 200;

fn clean_over_seeds(protocol: Protocol) {
    let (mut decided, mut snapshots, mut amid_doubt, mut batched) = (0, 0, 0, 0);
    for seed in 1..=SEEDS {
        let report = xshard::run(Options::new(seed, protocol));
        assert!(report.passed(), "seed {seed} ({}): {report}", protocol.name());
        assert_eq!(report.measured.in_doubt, 0, "seed {seed}: {report}");
        decided += report.measured.decided();
        snapshots += report.measured.snapshots_checked;
        amid_doubt += report.measured.snapshots_amid_doubt;
        batched += report.measured.batched_units;
    }
    // Many units went in transactions of several, as the router batches them.
    assert!(batched > 5 * SEEDS, "only {batched} units in batches");
    // The workload reached the protocol: thousands of cross-shard transactions.
    assert!(decided > 25 * SEEDS, "only {decided} transactions decided");
    // Snapshot reads were checked during the runs, many while transactions were in doubt.
    assert!(snapshots > 2 * SEEDS && amid_doubt > SEEDS, "{snapshots} snapshots, {amid_doubt}");
}

#[test]
fn two_phase_commit_keeps_every_guarantee_over_200_seeds() {
    clean_over_seeds(Protocol::TwoPhase);
}

#[test]
fn paxos_commit_keeps_every_guarantee_over_200_seeds() {
    clean_over_seeds(Protocol::PaxosCommit);
}

#[test]
fn three_phase_commit_breaks_atomicity_under_partitions_only() {
    let broken: Vec<u64> = (1..=SEEDS)
        .filter(|&seed| xshard::run(Options::new(seed, Protocol::ThreePhase)).atomicity_violated())
        .collect();
    assert!(!broken.is_empty(), "3pc kept atomicity under partitions over {SEEDS} seeds");
    println!("3pc atomicity violations under partitions: seeds {broken:?}");
    for seed in 1..=SEEDS {
        let options = Options { partitions: false, ..Options::new(seed, Protocol::ThreePhase) };
        let report = xshard::run(options);
        assert!(
            !report.violations.iter().any(|v| v.checker == Checker::Atomicity),
            "seed {seed} without partitions: {report}"
        );
    }
}

#[test]
fn fault_free_costs_equal_gray_and_lamport() {
    for protocol in [Protocol::TwoPhase, Protocol::PaxosCommit] {
        for n in [2usize, 3] {
            for replicas in [1u8, 3, 5] {
                let options = Options {
                    fault_free: true,
                    participants: Some(n),
                    replicas,
                    fault_ms: 2_000,
                    last_agent: false,
                    ..Options::new(7, protocol)
                };
                let report = xshard::run(options);
                assert!(report.passed(), "{report}");
                let m = &report.measured;
                let txns = m.txn_sizes.len() as u64;
                assert!(txns > 20, "{txns} transactions");
                assert_eq!(m.decided(), txns, "every transaction decided");
                let (messages, writes) =
                    paper_cost(protocol, n as u64, u64::from(replicas / 2)).expect("a formula");
                let what = format!("{} with N = {n}, R = {replicas}", protocol.name());
                assert_eq!(m.normal_path_messages(), messages * txns, "messages, {what}");
                assert_eq!(m.recovery_messages(), 0, "recovery messages, {what}");
                // After the outcome, each 2PC participant acknowledges once, so that the
                // coordinator can forget its decision.
                let acks = if protocol == Protocol::TwoPhase { n as u64 * txns } else { 0 };
                assert_eq!(m.acknowledgements(), acks, "acknowledgements, {what}");
                assert_eq!(
                    m.forced_commit_path + m.acceptor_writes,
                    writes * txns,
                    "forced writes, {what}"
                );
                // 2PC's coordinator asks the other participants while the initiating
                // one prepares: one message delay fewer than Gray & Lamport's 4, except
                // for a transaction whose own prepare waits for one in doubt there (a
                // post of its pending transfer), which keeps their order.
                let depths = &m.decision_depths;
                let expected = |d: &u32| match protocol {
                    Protocol::TwoPhase => *d == 3 || *d == 4,
                    _ => *d == 5,
                };
                assert!(depths.iter().all(expected), "message delays, {what}: {depths:?}");
                if protocol == Protocol::TwoPhase {
                    let fewer = depths.iter().filter(|&&d| d == 3).count();
                    assert!(fewer * 10 >= depths.len() * 9, "message delays, {what}: {depths:?}");
                }
            }
        }
    }
}

/// 2PC with the last agent (production's form) costs, fault-free, the classic form's
/// less what it leaves out: the initiating participant's message to its co-located
/// coordinator, the decision to itself and its acknowledgement (3N-3 messages, N-1
/// acknowledgements), and its own prepare's write (N forced writes: the others'
/// prepares and the decision that carries its sides out).
#[test]
fn fault_free_last_agent_saves_a_write_and_two_messages() {
    for n in [2usize, 3] {
        for replicas in [1u8, 3] {
            let options = Options {
                fault_free: true,
                participants: Some(n),
                replicas,
                fault_ms: 2_000,
                last_agent: true,
                ..Options::new(7, Protocol::TwoPhase)
            };
            let report = xshard::run(options);
            assert!(report.passed(), "{report}");
            let m = &report.measured;
            let txns = m.txn_sizes.len() as u64;
            assert!(txns > 20, "{txns} transactions");
            assert_eq!(m.decided(), txns, "every transaction decided");
            let (n, what) = (n as u64, format!("N = {n}, R = {replicas}"));
            let (messages, writes) = paper_cost(Protocol::TwoPhase, n, 0).expect("a formula");
            assert_eq!(m.normal_path_messages(), (messages - 2) * txns, "messages, {what}");
            assert_eq!(m.recovery_messages(), 0, "recovery messages, {what}");
            assert_eq!(m.acknowledgements(), (n - 1) * txns, "acknowledgements, {what}");
            assert_eq!(m.forced_commit_path, (writes - 1) * txns, "forced writes, {what}");
            // Prepare, vote, decision; a transaction whose coordinator's prepare waits
            // for one in doubt there runs the classic form (one delay more).
            let depths = &m.decision_depths;
            assert!(depths.iter().all(|d| *d == 3 || *d == 4), "delays, {what}: {depths:?}");
        }
    }
}

#[test]
fn the_checkers_catch_a_coordinator_that_does_not_force_its_decision() {
    let bugs = Bugs { decisions_not_forced: true, ..Bugs::default() };
    let caught = (1..=100).find(|&seed| {
        let report = xshard::run(Options { bugs, ..Options::new(seed, Protocol::TwoPhase) });
        !report.passed()
    });
    let seed = caught.expect("an unforced 2PC decision went unnoticed over 100 seeds");
    println!("unforced decisions caught at seed {seed}");
}

#[test]
fn the_snapshot_checker_catches_reads_without_a_common_timestamp() {
    let bugs = Bugs { plain_reads: true, ..Bugs::default() };
    let caught = (1..=50).find(|&seed| {
        let report = xshard::run(Options { bugs, ..Options::new(seed, Protocol::TwoPhase) });
        report.violations.iter().any(|v| v.checker == Checker::SnapshotConservation)
    });
    let seed = caught.expect("plain reads across shards went unnoticed over 50 seeds");
    println!("reads without a common timestamp caught at seed {seed}");
}
