//! `settle lab`: the protocol lab. One workload and one fault schedule (one seed) run
//! under each atomic-commit protocol in the cross-shard simulator; a table per protocol
//! shows what each costs and where each breaks, set against Gray & Lamport's table.
//!
//! Counts are between protocol roles (participant, coordinator, acceptor). Each forced
//! write of a shard is one Raft round in its group; the Raft traffic beside the protocol
//! counts is derived from that (R−1 appends and R−1 acknowledgements, R fsyncs per
//! write), because this simulator runs a shard's group as one process.

use std::process::ExitCode;

use settle_sim::xshard::{self, check::Measured, check::KINDS, Protocol, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The seed: one workload and one fault schedule for every protocol.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run this many seeds (from --seed) per protocol and add their figures up.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub seeds: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub shards: u32,
    /// Replicas per shard (R = 2F+1). With 1, a crashed coordinator stays down until it
    /// restarts: classic 2PC blocks meanwhile.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=7))]
    pub replicas: u8,
    /// Simulated milliseconds of workload (under faults unless --fault-free).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub fault_ms: u64,
    /// Leave partitions out of the fault mix.
    #[arg(long)]
    pub no_partitions: bool,
    /// No faults at all: the protocols' own costs.
    #[arg(long)]
    pub fault_free: bool,
    /// Client threads of the workload.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub clients: u64,
}

pub fn run(args: Args) -> ExitCode {
    if args.replicas.is_multiple_of(2) {
        eprintln!("error: --replicas must be odd (2F+1)");
        return ExitCode::from(2);
    }
    println!(
        "settle lab: {} shards, {} replicas each (F = {}), seeds {}..{}, {} ms of workload, {}",
        args.shards,
        args.replicas,
        args.replicas / 2,
        args.seed,
        args.seed + args.seeds - 1,
        args.fault_ms,
        if args.fault_free {
            "no faults"
        } else if args.no_partitions {
            "faults without partitions"
        } else {
            "every fault including partitions"
        }
    );
    println!("(3pc is unsafe under partitions and runs here only because the lab compares it)");
    let mut clean = true;
    for protocol in Protocol::ALL {
        let reports: Vec<Report> = (args.seed..args.seed + args.seeds)
            .map(|seed| {
                xshard::run(xshard::Options {
                    shards: args.shards,
                    replicas: args.replicas,
                    partitions: !args.no_partitions,
                    fault_free: args.fault_free,
                    fault_ms: args.fault_ms,
                    clients: args.clients as usize,
                    // The table is per transaction, set against the paper's: one unit each,
                    // and 2PC in its classic form (no last agent), as the paper counts it.
                    units_max: 1,
                    last_agent: false,
                    ..xshard::Options::new(seed, protocol)
                })
            })
            .collect();
        clean &= protocol == Protocol::ThreePhase || reports.iter().all(Report::passed);
        print_table(protocol, &args, &reports);
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn sum(reports: &[Report]) -> Measured {
    let mut total = Measured::default();
    for report in reports {
        let m = &report.measured;
        total.committed += m.committed;
        total.aborted += m.aborted;
        total.in_doubt += m.in_doubt;
        total.local_batches += m.local_batches;
        total.workload_ms += m.workload_ms;
        total.latencies_ms.extend(&m.latencies_ms);
        for (a, b) in total.messages.iter_mut().zip(m.messages) {
            *a += b;
        }
        total.forced_commit_path += m.forced_commit_path;
        total.forced_resolution += m.forced_resolution;
        total.acceptor_writes += m.acceptor_writes;
        total.decision_depths.extend(&m.decision_depths);
        total.longest_in_doubt_ms = total.longest_in_doubt_ms.max(m.longest_in_doubt_ms);
        total.replicas = m.replicas;
        total.txn_sizes.extend(&m.txn_sizes);
        total.snapshots_checked += m.snapshots_checked;
        total.snapshot_latencies_ms.extend(&m.snapshot_latencies_ms);
    }
    total.snapshot_latencies_ms.sort_unstable();
    total.latencies_ms.sort_unstable();
    total.decision_depths.sort_unstable();
    total
}

fn print_table(protocol: Protocol, args: &Args, reports: &[Report]) {
    let m = sum(reports);
    let txns = m.txn_sizes.len().max(1) as f64;
    let replicas = u64::from(args.replicas);
    let shard_writes = m.forced_commit_path + m.forced_resolution;
    let row = |name: &str, value: String| println!("  {name:<28} {value}");
    println!();
    println!("== {} ==", protocol.name());
    row(
        "transactions",
        format!("{} committed, {} aborted, {} still in doubt", m.committed, m.aborted, m.in_doubt),
    );
    row(
        "throughput",
        format!(
            "{:.1} committed cross-shard transactions per simulated second",
            m.committed as f64 * 1000.0 / m.workload_ms.max(1) as f64
        ),
    );
    row(
        "cross-shard latency",
        format!(
            "p50 {} ms, p99 {} ms (client, retries included)",
            m.latency_ms(0.5),
            m.latency_ms(0.99)
        ),
    );
    let normal = m.normal_path_messages() as f64 / txns;
    let recovery = m.recovery_messages() as f64 / txns;
    let acks = m.acknowledgements() as f64 / txns;
    let paper = m.paper_cost(protocol);
    let paper_messages = paper.map_or("no formula".into(), |(msgs, _)| format!("paper {msgs:.2}"));
    row(
        "messages / txn",
        format!(
            "{normal:.2} commit path ({paper_messages}) + {recovery:.2} recovery + {acks:.2} \
             acknowledgements (so decisions can be forgotten)"
        ),
    );
    let by_kind: Vec<String> = KINDS
        .iter()
        .filter(|kind| m.messages[kind.index()] > 0)
        .map(|kind| format!("{kind:?} {}", m.messages[kind.index()]))
        .collect();
    row("messages by kind", by_kind.join(", "));
    let depth = |q: f64| {
        if m.decision_depths.is_empty() {
            0
        } else {
            m.decision_depths[((m.decision_depths.len() - 1) as f64 * q).round() as usize]
        }
    };
    row(
        "message delays to decision",
        format!(
            "median {}, max {} (paper: 2pc 4, paxos-commit 5; settle's 2pc \
             asks the other participants while the first prepares: 3)",
            depth(0.5),
            depth(1.0)
        ),
    );
    let forced = (m.forced_commit_path + m.acceptor_writes) as f64 / txns;
    let paper_writes =
        paper.map_or("no formula".into(), |(_, writes)| format!("paper {writes:.2}"));
    row(
        "forced writes / txn",
        format!(
            "{forced:.2} commit path ({paper_writes}) + {:.2} resolution",
            m.forced_resolution as f64 / txns
        ),
    );
    row(
        "raft beside them (derived)",
        format!(
            "{:.2} messages, {:.2} fsyncs per txn ({} group writes; fast path: {} batches)",
            (shard_writes * 2 * (replicas - 1)) as f64 / txns,
            (shard_writes * replicas) as f64 / txns,
            shard_writes,
            m.local_batches
        ),
    );
    row("longest in doubt", format!("{} ms", m.longest_in_doubt_ms));
    row(
        "snapshot reads",
        format!(
            "{} across every shard, p50 {} ms, p99 {} ms (a read waits for what is in doubt \
             at its timestamp)",
            m.snapshots_checked,
            m.snapshot_latency_ms(0.5),
            m.snapshot_latency_ms(0.99)
        ),
    );
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            let checkers: std::collections::BTreeSet<&str> =
                r.violations.iter().map(|v| v.checker.name()).collect();
            let checkers: Vec<&str> = checkers.into_iter().collect();
            format!("seed {} ({})", r.seed, checkers.join(", "))
        })
        .collect();
    row("invariant violations", if failed.is_empty() { "none".into() } else { failed.join("; ") });
}
