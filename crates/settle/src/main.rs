//! # settle — the binary
//!
//! One executable for everything a user runs: the node, a client CLI and the benchmark.
//!
//! ```text
//! settle start --data-dir D --listen ADDR     run a node until SIGINT/SIGTERM
//! settle dev                                   a node with first-run defaults
//! settle account create|lookup|transfers|balances ...
//! settle transfer create|post|void|lookup ...
//! settle bench                                 the workload of record
//! settle sim [--shards S --protocol P]         the deterministic simulator
//! settle lab                                   2PC, 3PC and Paxos Commit side by side
//! ```
//!
//! Layout (in the style of mini-redis: this file only parses and dispatches):
//! - `main.rs`: the clap command tree, logging set-up, and the mapping from a
//!   command's outcome to the process exit code (0 success, 1 failure, 2 bad usage,
//!   which clap produces itself).
//! - `commands/`: one module per command group. `start.rs` and `dev.rs` run a node in
//!   this process; `account.rs` and `transfer.rs` are thin clients over
//!   `settle-client`; `bench.rs` drives the workload of record against a node it starts
//!   as a child process (or one given with `--addresses`). `sim.rs` and `lab.rs` run the
//!   simulators (no async runtime: one thread, simulated time). `commands/mod.rs` holds what
//!   the client commands share: `--addresses`/`--json`, connecting, and the error type.
//! - `parse.rs`: value parsers for clap (ids in decimal or 0x-hex, flag names).
//! - `output.rs`: how records and results are printed, as aligned tables or as JSON.
//! - `workload.rs`: the bench's seeded xorshift RNG and its zipfian sampler.
//!
//! Everything a command prints for people goes to stdout; logs and progress go to
//! stderr, so `--json` output and the `listening on ADDR` line stay machine-readable.

mod commands;
mod output;
mod parse;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::{account, bench, dev, lab, shard, sim, start, status, transfer};

/// Batches are a megabyte each, and every request allocates a few such buffers: glibc
/// malloc would map and unmap each one, paying page faults and zeroing every time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// settle: a distributed payment ledger.
#[derive(Parser, Debug)]
#[command(name = "settle", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node until SIGINT or SIGTERM.
    Start(start::Args),
    /// Run a node with first-run defaults (./settle-dev-data, 127.0.0.1:3000).
    Dev(dev::Args),
    /// Create and inspect accounts.
    #[command(subcommand)]
    Account(account::Command),
    /// Create, post, void and look up transfers.
    #[command(subcommand)]
    Transfer(transfer::Command),
    /// Show what each node knows of its shards: role, term, leader, applied, voters.
    Status(status::Args),
    /// Add or remove a replica of a shard (a replicated cluster's membership).
    #[command(subcommand)]
    Shard(shard::Command),
    /// Run the workload of record and print throughput, latency and memory.
    Bench(bench::Args),
    /// Run the deterministic simulator: one seed exactly, or many with a summary.
    Sim(sim::Args),
    /// Compare 2PC, 3PC and Paxos Commit on one workload and one fault schedule.
    Lab(lab::Args),
}

fn main() -> ExitCode {
    // No transparent huge pages for this process. Where the kernel gives them to every
    // mapping (THP `enabled=always`, as on this machine and many distributions), the
    // first touch of fresh memory in a 2 MiB-aligned region has it zero all 2 MiB, on
    // the touching thread: the node's short-lived buffers (a Raft entry's encoding,
    // hundreds of KiB, mapped afresh by the allocator) paid that again and again, 8%
    // of the engine thread in the cross-shard bench. Alternating runs: `settle bench`
    // 1.53-1.69M -> 1.80-1.83M transfers/s, batch p99 10-11 -> 7-8 ms, rss -17%. If
    // the kernel refuses, nothing else changes.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    // Nodes log at info by default; client commands only say something when it matters.
    let default_level = match cli.command {
        Command::Start(_) | Command::Dev(_) => "info",
        _ => "warn",
    };
    init_logging(default_level);
    // The simulator is one thread on simulated time: no runtime.
    let cli = match cli.command {
        Command::Sim(args) => return sim::run(args),
        Command::Lab(args) => return lab::run(args),
        _ => cli,
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Start(args) => start::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Account(command) => account::run(command).await,
            Command::Transfer(command) => transfer::run(command).await,
            Command::Shard(command) => shard::run(command).await,
            Command::Status(args) => status::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Sim(_) | Command::Lab(_) => unreachable!("run above"),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out causes its message already
/// includes (e.g. "transport error: Connection refused (os error 111)").
fn describe(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = error.source();
    }
    message
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
fn init_logging(default_level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
