//! `settle bench`: the workload of record.
//!
//! 10,000 accounts, then 10,000,000 transfers of amount 1 between distinct accounts
//! drawn uniformly (or zipfian) at random, in batches of 8189, from one client over the
//! packed fast path, against a durable (fsync) node. Without `--addresses` the node is
//! a child process (`settle start` on a temporary directory and a free loopback port),
//! so that its peak memory can be read from `/proc/<pid>/status` (`VmHWM`); it is
//! stopped and its directory removed afterwards, also on error or Ctrl-C. With
//! `--replicas 3` (or 5) it is a local cluster instead: that many child processes
//! (`settle start --config --node`), fsync on, one shard replicated on all; the client
//! finds the leader, and `rss` is the largest peak among them.
//!
//! One batch is in flight at a time; the next one is generated while it is. Each
//! batch's latency runs from send to reply. The report's five lines of record:
//!
//! ```text
//! load accepted = N tx/s
//! batch latency p50 = N ms
//! batch latency p99 = N ms
//! batch latency p100 = N ms
//! rss = N bytes
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use settle_client::ClientOptions;
use settle_ledger::{Account, CreateTransferResult, Transfer, BATCH_EVENTS_MAX};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Error, Session, ShutdownSignals};
use crate::workload::{AccountSampler, Rng, Zipf};

/// How long the child node may take to print `listening on`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the child node may take to stop after SIGTERM before it is killed (it
/// writes a checkpoint of everything the run created).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(600);
/// Failed transfers printed one by one (all are counted).
const FAILURES_SHOWN: usize = 10;

const LEDGER: u32 = 1;
const CODE: u16 = 1;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Accounts to create (ids 1..=N).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..))]
    pub account_count: u64,
    /// Transfers to send (ids 1..=N), each of amount 1.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub transfer_count: u64,
    /// Transfers per request.
    #[arg(
        long,
        default_value_t = BATCH_EVENTS_MAX as u64,
        value_parser = clap::value_parser!(u64).range(1..=BATCH_EVENTS_MAX as u64)
    )]
    pub transfer_batch_size: u64,
    /// How the two accounts of a transfer are drawn.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub account_distribution: Distribution,
    /// Exponent of the zipfian distribution (0.99 as in YCSB; 0 is uniform).
    #[arg(long, default_value_t = 0.99)]
    pub zipfian_exponent: f64,
    /// Seed of the RNG: the same seed sends the same transfers.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Batches the client keeps in flight. 1 (the default) is TigerBeetle's benchmark
    /// client; more lets the node execute one batch while the previous is fsynced.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub in_flight: u64,
    /// Bench an already running node instead of starting one (its memory is then
    /// not measured). Comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "A[,B]")]
    pub addresses: Option<Vec<String>>,
    /// Without --addresses: start a local cluster of this many replicas (1: one
    /// standalone node).
    #[arg(
        long,
        default_value_t = 1,
        conflicts_with = "addresses",
        value_parser = clap::value_parser!(u64).range(1..=7)
    )]
    pub replicas: u64,
    /// Without --addresses: the local cluster places the accounts on this many shards
    /// (each replicated on every node). With more than one, the bench first runs the
    /// workload with every transfer inside one shard, then again with
    /// --cross-shard-percent of them across two shards, and compares the two rates
    /// (after an unmeasured warm-up of a tenth of the transfers).
    #[arg(
        long,
        default_value_t = 1,
        conflicts_with = "addresses",
        value_parser = clap::value_parser!(u64).range(1..=64)
    )]
    pub shards: u64,
    /// With --shards: the share of transfers whose two accounts live on different shards.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub cross_shard_percent: u64,
    /// With --shards: run the two phases in this many alternating rounds (single-shard,
    /// cross-shard, single-shard, ...), each of --transfer-count / ROUNDS transfers, and
    /// compare the two rates over all rounds. On a machine whose speed drifts (a shared
    /// VM) the rounds see the same drift, where one phase after the other does not.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rounds: u64,
    /// With --shards: the atomic-commit protocol of the local cluster (2pc or 3pc).
    #[arg(long, default_value = "2pc", value_parser = super::parse_protocol)]
    pub protocol: settle_sim::xshard::Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

/// What a finished workload measured.
struct Report {
    transfers: u64,
    batches: u64,
    elapsed: Duration,
    /// Batch latencies in microseconds.
    latencies: Histogram<u64>,
    failures: BTreeMap<CreateTransferResult, u64>,
    failure_examples: Vec<(u128, CreateTransferResult)>,
}

impl Report {
    fn new() -> Report {
        Report {
            transfers: 0,
            batches: 0,
            elapsed: Duration::ZERO,
            latencies: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("the histogram bounds are valid"),
            failures: BTreeMap::new(),
            failure_examples: Vec::new(),
        }
    }

    /// Adds another run of the same phase (a round).
    fn add(&mut self, other: Report) {
        self.transfers += other.transfers;
        self.batches += other.batches;
        self.elapsed += other.elapsed;
        self.latencies.add(&other.latencies).expect("histograms of the same bounds");
        for (result, count) in other.failures {
            *self.failures.entry(result).or_default() += count;
        }
        let room = FAILURES_SHOWN.saturating_sub(self.failure_examples.len());
        self.failure_examples.extend(other.failure_examples.into_iter().take(room));
    }
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    if !(args.zipfian_exponent.is_finite() && args.zipfian_exponent >= 0.0) {
        return Err(Error::Other("--zipfian-exponent must be a number >= 0".into()));
    }
    if args.rounds > 1 && args.shards < 2 {
        return Err(Error::Other("--rounds alternates the phases of --shards 2 or more".into()));
    }
    if args.rounds > args.transfer_count {
        return Err(Error::Other("--rounds must not exceed --transfer-count".into()));
    }
    if args.shards > 1 && args.account_distribution != Distribution::Uniform {
        return Err(Error::Other("--shards runs the uniform distribution only".into()));
    }
    let mut signals = ShutdownSignals::install()?;
    let node = match &args.addresses {
        Some(_) => None,
        None => Some(tokio::select! {
            node = ChildNodes::spawn(args.replicas as usize, args.shards, args.protocol) => node?,
            signal = signals.recv() => return Err(Error::Other(format!("interrupted by {signal}"))),
        }),
    };
    let addresses = match (&args.addresses, &node) {
        (Some(addresses), _) => addresses.clone(),
        (None, Some(node)) => node.nodes.iter().map(|n| n.address.to_string()).collect(),
        (None, None) => unreachable!("a child node is started when no address is given"),
    };
    println!(
        "bench: {} accounts ({}), {} transfers in batches of {}, {} in flight, seed {}",
        args.account_count,
        match args.account_distribution {
            Distribution::Uniform => "uniform".to_string(),
            Distribution::Zipfian => format!("zipfian, exponent {}", args.zipfian_exponent),
        },
        args.transfer_count,
        args.transfer_batch_size,
        args.in_flight,
        args.seed
    );
    match &node {
        Some(node) => {
            for child in &node.nodes {
                println!("node: child process {} at {} (fsync on)", child.pid, child.address);
            }
            println!("data in {}", node.dir.path().display());
        }
        None => println!("node: external, at {}", addresses.join(",")),
    }

    if args.shards > 1 {
        println!(
            "shards: {} (accounts placed by settle_commit::placement), {}% of transfers across shards, {}{}",
            args.shards,
            args.cross_shard_percent,
            args.protocol.name(),
            match args.rounds {
                1 => String::new(),
                rounds => format!(", phases alternating in {rounds} rounds"),
            }
        );
    }
    let outcome = tokio::select! {
        outcome = workload(&args, &addresses) => outcome,
        signal = signals.recv() => Err(Error::Other(format!("interrupted by {signal}"))),
    };
    // Read the peak before stopping: the process and its /proc entry go away.
    let rss = node.as_ref().map(ChildNodes::peak_rss);
    let node_cpu = node.as_ref().and_then(ChildNodes::cpu_seconds);
    let client_cpu = cpu_seconds("/proc/self/stat");
    let stopped = match node {
        Some(node) => {
            eprintln!("stopping the node(s) (SIGTERM: they drain and sync)...");
            let stopping = Instant::now();
            let stopped = node.stop().await;
            if stopped.is_ok() {
                println!("node stopped cleanly in {:.3} s", stopping.elapsed().as_secs_f64());
            }
            stopped
        }
        None => Ok(()),
    };
    let (report, single_shard) = outcome?;
    stopped?;

    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    let ms = |micros: u64| (micros + 500) / 1000;
    println!("transfers = {} in {} batches, {:.3} s", report.transfers, report.batches, seconds);
    let rate = report.transfers as f64 / seconds;
    if let Some(single) = &single_shard {
        let single_rate = single.transfers as f64 / single.elapsed.as_secs_f64().max(1e-9);
        println!(
            "single-shard phase: {} transfers, load accepted = {} tx/s",
            single.transfers,
            single_rate.round() as u64
        );
        println!(
            "cross-shard phase ({}% across shards): {} transfers",
            args.cross_shard_percent, report.transfers
        );
        println!("cross-shard / single-shard rate = {:.3}", rate / single_rate.max(1e-9));
    }
    println!("load accepted = {} tx/s", rate.round() as u64);
    println!("batch latency p50 = {} ms", ms(report.latencies.value_at_quantile(0.50)));
    println!("batch latency p99 = {} ms", ms(report.latencies.value_at_quantile(0.99)));
    println!("batch latency p100 = {} ms", ms(report.latencies.max()));
    match rss {
        Some(Some(bytes)) => println!("rss = {bytes} bytes"),
        Some(None) => {
            println!("rss = 0 bytes");
            println!("note: could not read the node's peak memory (VmHWM) from /proc");
        }
        None => {
            println!("rss = 0 bytes");
            println!("note: rss is unknown for an external server (--addresses)");
        }
    }

    let cpu = |seconds: Option<f64>| seconds.map_or("unknown".into(), |s| format!("{s:.2} s"));
    println!("cpu (user + system): bench client {}, node {}", cpu(client_cpu), cpu(node_cpu));

    let failed: u64 = report.failures.values().sum();
    if failed == 0 {
        println!("failures = 0 (every transfer ok)");
        return Ok(ExitCode::SUCCESS);
    }
    println!("failures = {failed}");
    for (result, count) in &report.failures {
        println!("  {result}: {count}");
    }
    for (id, result) in &report.failure_examples {
        println!("  transfer {id}: {result}");
    }
    Ok(ExitCode::FAILURE)
}

/// Creates the accounts, then sends the transfers and measures them. With shards, a
/// single-shard phase first (its report second), then the cross-shard one.
async fn workload(args: &Args, addresses: &[String]) -> Result<(Report, Option<Report>), Error> {
    // Generous per-attempt timeout: a retried batch would come back as `exists` and
    // count as failures, so retries should only happen when something is really wrong.
    let options = ClientOptions { request_timeout: Duration::from_secs(60), ..Default::default() };
    let session = Session::connect(addresses, options).await?;
    create_accounts(&session, args.account_count).await?;
    if args.shards > 1 {
        // A warm-up first (every shard has elected its leader and the node has its
        // memory), so that neither measured phase pays for starting up.
        let warm_up = Args { transfer_count: (args.transfer_count / 10).max(1), ..args.clone() };
        run_phase(&warm_up, &session, 0, 1).await?;
        let mut first_id = warm_up.transfer_count as u128 + 1;
        let (mut single, mut cross) = (Report::new(), Report::new());
        for round in 0..args.rounds {
            // The rounds split the transfers as evenly as they go.
            let count = args.transfer_count * (round + 1) / args.rounds
                - args.transfer_count * round / args.rounds;
            let phase = Args { transfer_count: count, ..args.clone() };
            single.add(run_phase(&phase, &session, 0, first_id).await?);
            first_id += count as u128;
            cross.add(run_phase(&phase, &session, args.cross_shard_percent, first_id).await?);
            first_id += count as u128;
        }
        return Ok((cross, Some(single)));
    }
    Ok((run_phase(args, &session, 0, 1).await?, None))
}

/// One pass of the workload: `transfer_count` transfers from id `first_id`, with
/// `cross_percent` of them across shards (when the cluster has several).
async fn run_phase(
    args: &Args,
    session: &Session,
    cross_percent: u64,
    first_id: u128,
) -> Result<Report, Error> {
    let sampler = match args.account_distribution {
        Distribution::Uniform => AccountSampler::Uniform { count: args.account_count },
        Distribution::Zipfian => AccountSampler::Zipfian(Zipf::new(
            usize::try_from(args.account_count)
                .map_err(|_| Error::Other("--account-count is too large".into()))?,
            args.zipfian_exponent,
        )),
    };
    let mut generator = Generator {
        rng: Rng::new(args.seed),
        sampler,
        next_id: first_id,
        remaining: args.transfer_count,
        batch_size: args.transfer_batch_size as usize,
        shards: (args.shards > 1)
            .then(|| Placement::new(args.account_count, args.shards, cross_percent)),
    };

    let progress = ProgressBar::with_draw_target(
        Some(args.transfer_count),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} transfers, {per_sec}, eta {eta}",
        )
        .expect("the progress template is valid")
        .progress_chars("=> "),
    );

    let mut report = Report::new();

    // Up to `in_flight` requests outstanding; answers are taken in sending order.
    let in_flight_max = args.in_flight as usize;
    let mut in_flight = std::collections::VecDeque::with_capacity(in_flight_max);
    let mut spares: Vec<Vec<Transfer>> = Vec::new();
    let start = Instant::now();
    loop {
        // Fill the pipeline (the next batch is generated while the others are in flight).
        while in_flight.len() < in_flight_max {
            let mut batch =
                spares.pop().unwrap_or_else(|| Vec::with_capacity(generator.batch_size));
            generator.fill(&mut batch);
            if batch.is_empty() {
                break;
            }
            let client = session.client().clone();
            in_flight.push_back(tokio::spawn(async move {
                let sent_at = Instant::now();
                let results = client.create_transfers_packed(&batch).await;
                (batch, results, sent_at.elapsed())
            }));
        }
        let Some(oldest) = in_flight.pop_front() else {
            break;
        };
        let (sent, results, latency) =
            oldest.await.map_err(|e| Error::Other(format!("the request task failed: {e}")))?;
        let results = results.map_err(|source| session.request_error(source))?;
        if results.len() != sent.len() {
            return Err(Error::Other(format!(
                "the node sent {} results for {} transfers",
                results.len(),
                sent.len()
            )));
        }
        report.latencies.saturating_record((latency.as_micros() as u64).max(1));
        for (transfer, &result) in sent.iter().zip(&results) {
            if result != CreateTransferResult::Ok {
                *report.failures.entry(result).or_default() += 1;
                if report.failure_examples.len() < FAILURES_SHOWN {
                    report.failure_examples.push((transfer.id, result));
                }
            }
        }
        report.transfers += sent.len() as u64;
        report.batches += 1;
        progress.inc(sent.len() as u64);
        spares.push(sent);
    }
    report.elapsed = start.elapsed();
    progress.finish_and_clear();
    Ok(report)
}

/// Creates accounts `1..=count` (ledger 1, code 1, no flags); `exists` is fine, so that
/// a bench can run again against the same external node.
async fn create_accounts(session: &Session, count: u64) -> Result<(), Error> {
    let mut id = 1u64;
    while id <= count {
        let end = (id + BATCH_EVENTS_MAX as u64 - 1).min(count);
        let accounts: Vec<Account> = (id..=end)
            .map(|i| Account {
                id: u128::from(i),
                ledger: LEDGER,
                code: CODE,
                ..Default::default()
            })
            .collect();
        let results = session.call(session.client().create_accounts_packed(&accounts)).await?;
        if results.len() != accounts.len() {
            return Err(Error::Other(format!(
                "the node sent {} results for {} accounts",
                results.len(),
                accounts.len()
            )));
        }
        if let Some((account, result)) =
            accounts.iter().zip(&results).find(|(_, result)| !result.is_success())
        {
            return Err(Error::Other(format!("creating account {}: {result}", account.id)));
        }
        id = end + 1;
    }
    Ok(())
}

/// Produces the transfers of the workload, batch by batch.
struct Generator {
    rng: Rng,
    sampler: AccountSampler,
    next_id: u128,
    remaining: u64,
    batch_size: usize,
    /// With shards: how pairs are drawn instead of `sampler`.
    shards: Option<Placement>,
}

/// Accounts by shard, for drawing pairs inside one shard or across two.
struct Placement {
    by_shard: Vec<Vec<u64>>,
    cross_percent: u64,
}

impl Placement {
    fn new(accounts: u64, shards: u64, cross_percent: u64) -> Placement {
        let mut by_shard = vec![Vec::new(); shards as usize];
        for id in 1..=accounts {
            let shard = settle_commit::placement::shard_of(u128::from(id), shards as u32);
            by_shard[shard as usize].push(id);
        }
        Placement { by_shard, cross_percent }
    }

    /// A (debit, credit) pair of account ids: on two shards with `cross_percent`
    /// probability, else on one.
    fn pair(&self, rng: &mut Rng) -> (u64, u64) {
        let shards = self.by_shard.len() as u64;
        let pick = |rng: &mut Rng, shard: u64| {
            let ids = &self.by_shard[shard as usize];
            ids[rng.below(ids.len() as u64) as usize]
        };
        let first = rng.below(shards);
        let debit = pick(rng, first);
        let second = if rng.below(100) < self.cross_percent {
            (first + 1 + rng.below(shards - 1)) % shards
        } else {
            first
        };
        loop {
            let credit = pick(rng, second);
            if credit != debit {
                return (debit, credit);
            }
        }
    }
}

impl Generator {
    /// Replaces `batch` with the next batch (empty when all were generated).
    fn fill(&mut self, batch: &mut Vec<Transfer>) {
        batch.clear();
        let n = (self.batch_size as u64).min(self.remaining);
        for _ in 0..n {
            let (debit, credit) = match &self.shards {
                Some(placement) => placement.pair(&mut self.rng),
                None => {
                    let (debit, credit) = self.sampler.pair(&mut self.rng);
                    (debit + 1, credit + 1)
                }
            };
            batch.push(Transfer {
                id: self.next_id,
                debit_account_id: u128::from(debit),
                credit_account_id: u128::from(credit),
                amount: 1,
                ledger: LEDGER,
                code: CODE,
                ..Default::default()
            });
            self.next_id += 1;
        }
        self.remaining -= n;
    }
}

/// The node(s) the bench started as child processes, in one temporary directory
/// (removed when dropped).
struct ChildNodes {
    nodes: Vec<ChildNode>,
    dir: tempfile::TempDir,
}

impl ChildNodes {
    /// One standalone node, or a cluster of `replicas` nodes holding `shards` shards
    /// (each on every node) that commit across shards with `protocol`.
    async fn spawn(
        replicas: usize,
        shards: u64,
        protocol: settle_sim::xshard::Protocol,
    ) -> Result<ChildNodes, Error> {
        let dir = tempfile::Builder::new()
            .prefix("settle-bench-")
            .tempdir()
            .map_err(Error::io("cannot create a temporary directory for the node"))?;
        if replicas == 1 && shards == 1 {
            let args = vec!["--data-dir".into(), dir.path().join("data").into_os_string()];
            let args = [args, vec!["--listen".into(), "127.0.0.1:0".into()]].concat();
            let node = ChildNode::spawn(dir.path(), "node", args).await?;
            return Ok(ChildNodes { nodes: vec![node], dir });
        }
        let listeners: Vec<std::net::TcpListener> = (0..replicas)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(Error::io("cannot find free loopback ports"))?;
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<_, _>>()
            .map_err(Error::io("cannot find free loopback ports"))?;
        drop(listeners);
        let mut cluster = settle_node::cluster::ClusterConfig::sharded(&addresses, shards);
        cluster.protocol = Some(protocol.name().to_string());
        cluster.allow_3pc = Some(protocol == settle_sim::xshard::Protocol::ThreePhase);
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, cluster.to_toml())
            .map_err(Error::io(format!("cannot write {}", config.display())))?;
        let mut nodes: Vec<ChildNode> = Vec::new();
        for node in &cluster.nodes {
            let args = vec![
                "--config".into(),
                config.clone().into_os_string(),
                "--node".into(),
                node.id.to_string().into(),
                "--data-dir".into(),
                dir.path().join(format!("node-{}", node.id)).into_os_string(),
            ];
            match ChildNode::spawn(dir.path(), &format!("node-{}", node.id), args).await {
                Ok(child) => nodes.push(child),
                Err(error) => {
                    for child in nodes {
                        let _ = child.stop().await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(ChildNodes { nodes, dir })
    }

    /// The largest peak resident memory among the nodes, if every one can be read.
    fn peak_rss(&self) -> Option<u64> {
        self.nodes.iter().map(ChildNode::peak_rss).collect::<Option<Vec<_>>>()?.into_iter().max()
    }

    /// CPU time of all the nodes together.
    fn cpu_seconds(&self) -> Option<f64> {
        self.nodes.iter().map(|n| cpu_seconds(&format!("/proc/{}/stat", n.pid))).sum()
    }

    /// Stops every node (SIGTERM, then kill if it hangs) and removes the directory.
    async fn stop(self) -> Result<(), Error> {
        let mut outcome = Ok(());
        for node in self.nodes {
            outcome = outcome.and(node.stop().await);
        }
        outcome?;
        let path = self.dir.path().to_path_buf();
        self.dir.close().map_err(Error::io(format!("cannot remove {}", path.display())))
    }
}

/// A node started by the bench as a child process (`settle start`).
struct ChildNode {
    child: tokio::process::Child,
    pid: u32,
    address: SocketAddr,
    log_path: PathBuf,
}

impl ChildNode {
    async fn spawn(
        dir: &Path,
        name: &str,
        args: Vec<std::ffi::OsString>,
    ) -> Result<ChildNode, Error> {
        let exe = std::env::current_exe()
            .map_err(Error::io("cannot find the settle executable to start a node"))?;
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(Error::io(format!("cannot create {}", log_path.display())))?;
        let mut child = tokio::process::Command::new(&exe)
            .arg("start")
            .args(args)
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            // A last resort if this process unwinds without stopping the node.
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("cannot start {}", exe.display())))?;
        let pid = child.id().ok_or_else(|| Error::Other("the node exited at once".into()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(address) = line.strip_prefix("listening on ") {
                    return Ok(Some(address.trim().to_string()));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let address = match ready {
            Ok(Ok(Some(address))) => address.parse::<SocketAddr>().map_err(|e| {
                Error::Other(format!("the node announced a bad address {address:?}: {e}"))
            })?,
            Ok(Ok(None)) => {
                let status = child.wait().await.map_err(Error::io("waiting for the node"))?;
                return Err(Error::Other(format!(
                    "the node exited ({status}) before listening{}",
                    log_tail(&log_path)
                )));
            }
            Ok(Err(e)) => return Err(Error::io("reading the node's output")(e)),
            Err(_) => {
                return Err(Error::Other(format!(
                    "the node did not listen within {} s{}",
                    STARTUP_TIMEOUT.as_secs(),
                    log_tail(&log_path)
                )))
            }
        };
        // Keep reading so that the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ChildNode { child, pid, address, log_path })
    }

    /// The node's peak resident memory in bytes (`VmHWM`), if it can be read.
    fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_vm_hwm(&status)
    }

    /// Stops the node with SIGTERM (it drains and syncs), killing it if it hangs.
    async fn stop(mut self) -> Result<(), Error> {
        use rustix::process::{kill_process, Pid, Signal};
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            // It may already be gone (a terminal's Ctrl-C reaches it too): no matter.
            let _ = kill_process(pid, Signal::TERM);
        }
        let status = match tokio::time::timeout(SHUTDOWN_TIMEOUT, self.child.wait()).await {
            Ok(status) => status.map_err(Error::io("waiting for the node to stop"))?,
            Err(_) => {
                let _ = self.child.kill().await;
                return Err(Error::Other(format!(
                    "the node did not stop within {} s of SIGTERM and was killed{}",
                    SHUTDOWN_TIMEOUT.as_secs(),
                    log_tail(&self.log_path)
                )));
            }
        };
        if !status.success() {
            return Err(Error::Other(format!(
                "the node exited with {status}{}",
                log_tail(&self.log_path)
            )));
        }
        Ok(())
    }
}

/// `VmHWM` from the text of `/proc/<pid>/status`, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// User + system CPU time of a process so far, from its `/proc/<pid>/stat`.
fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    parse_cpu_seconds(&stat)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/<pid>/stat` line, in clock ticks of
/// 1/100 s (Linux's USER_HZ). The command name (field 2) may hold spaces, so fields
/// are counted after its closing parenthesis.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The end of the node's log, to explain a failure.
fn log_tail(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("; the node's log ends with:\n{}", tail.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_add_up_to_one_report() {
        let round = |transfers: u64, latency_us: u64, failed: u64| {
            let mut report = Report::new();
            report.transfers = transfers;
            report.batches = 1;
            report.elapsed = Duration::from_millis(transfers);
            report.latencies.record(latency_us).unwrap();
            for id in 0..failed {
                report.failure_examples.push((u128::from(id), CreateTransferResult::Exists));
            }
            if failed > 0 {
                report.failures.insert(CreateTransferResult::Exists, failed);
            }
            report
        };
        let mut total = round(100, 1_000, 0);
        total.add(round(300, 9_000, 7));
        total.add(round(200, 2_000, 6));
        assert_eq!((total.transfers, total.batches), (600, 3));
        assert_eq!(total.elapsed, Duration::from_millis(600));
        assert_eq!(total.latencies.len(), 3);
        assert!(total.latencies.max() >= 9_000);
        assert_eq!(total.failures[&CreateTransferResult::Exists], 13);
        assert_eq!(total.failure_examples.len(), FAILURES_SHOWN, "examples stay capped");
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tsettle\nVmPeak:\t  200 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(12345 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_vm_hwm(&own).unwrap() > 0);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert!(cpu_seconds("/proc/self/stat").is_some());
    }

    #[test]
    fn generator_makes_exact_batches_of_distinct_accounts() {
        let mut generator = Generator {
            rng: Rng::new(1),
            sampler: AccountSampler::Uniform { count: 5 },
            next_id: 1,
            remaining: 25,
            batch_size: 10,
            shards: None,
        };
        let mut batch = Vec::new();
        let mut sizes = Vec::new();
        let mut ids = Vec::new();
        loop {
            generator.fill(&mut batch);
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            for t in &batch {
                assert_ne!(t.debit_account_id, t.credit_account_id);
                assert!((1..=5).contains(&t.debit_account_id));
                assert!((1..=5).contains(&t.credit_account_id));
                assert_eq!(t.amount, 1);
                ids.push(t.id);
            }
        }
        assert_eq!(sizes, [10, 10, 5]);
        assert_eq!(ids, (1..=25).collect::<Vec<u128>>());
    }
}

#[cfg(test)]
mod placement_tests {
    use super::*;

    #[test]
    fn pairs_cross_shards_at_the_asked_rate() {
        let count = |percent: u64| {
            let placement = Placement::new(1000, 3, percent);
            let mut rng = Rng::new(7);
            let shard = |id: u64| settle_commit::placement::shard_of(u128::from(id), 3);
            (0..10_000)
                .filter(|_| {
                    let (debit, credit) = placement.pair(&mut rng);
                    assert_ne!(debit, credit);
                    shard(debit) != shard(credit)
                })
                .count()
        };
        assert_eq!(count(0), 0);
        assert_eq!(count(100), 10_000);
        assert!((4_500..=5_500).contains(&count(50)), "{}", count(50));
    }
}
