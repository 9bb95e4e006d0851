//! `settle start`: run one node in this process until SIGINT or SIGTERM: a standalone
//! node (`--listen`), or node N of a replicated cluster (`--config cluster.toml --node
//! N`, listening on the address the file gives node N).
//!
//! Once the node serves, the line `listening on ADDR` goes to stdout (and nothing else
//! does), so scripts, tests and `settle bench` can wait for it. On a signal the node
//! drains, syncs and stops, and the process exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use settle_node::cluster::{ClusterConfig, ClusterNode, ClusterOptions, Tuning};
use settle_node::{Config, Node};

use super::{Error, ShutdownSignals};
use crate::parse;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of the node's data (created if missing; recovered if not empty).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to serve on; port 0 picks a free port (see the `listening on` line).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000", conflicts_with = "config")]
    pub listen: SocketAddr,
    /// Cluster configuration (TOML: nodes and shards); run as one node of that cluster.
    #[arg(long, value_name = "FILE", requires = "node")]
    pub config: Option<PathBuf>,
    /// This node's id in the cluster configuration.
    #[arg(long, value_name = "N", requires = "config")]
    pub node: Option<u64>,
    /// Do not fsync the write-ahead log. Acknowledged payments can be LOST on a crash:
    /// for experiments only.
    #[arg(long)]
    pub no_fsync: bool,
    /// Write a checkpoint each time the write-ahead log grows by this many bytes
    /// (default: the node's, 1 GiB). Smaller means faster recovery, more writing.
    #[arg(long, value_name = "BYTES", value_parser = parse::u64_value)]
    pub checkpoint_bytes: Option<u64>,
    /// In a cluster: each replica checkpoints (snapshot file + log compaction) every this
    /// many Raft entries (default 4096), or sooner once they take 256 MiB. Smaller means
    /// less memory and faster catch-up, more writing.
    #[arg(long, value_name = "N", requires = "config", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_entries: Option<u64>,
    /// Stop (as on SIGTERM) when the parent process dies; `settle bench` sets this on
    /// the node it starts, so that no node outlives the benchmark.
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    if args.exit_with_parent {
        use rustix::process::{getppid, set_parent_process_death_signal, Signal};
        set_parent_process_death_signal(Some(Signal::TERM))
            .map_err(|e| Error::io("cannot ask to be stopped with the parent process")(e.into()))?;
        // The parent may have died before the request took effect.
        if getppid().is_none_or(|pid| pid.as_raw_nonzero().get() == 1) {
            return Err(Error::Other("the parent process is gone".into()));
        }
    }
    if args.no_fsync {
        warn_no_fsync();
    }
    if let (Some(path), Some(node_id)) = (&args.config, args.node) {
        if args.checkpoint_bytes.is_some() {
            return Err(Error::Other(
                "--checkpoint-bytes applies to a standalone node only".into(),
            ));
        }
        let cluster = ClusterConfig::load(path).map_err(|e| Error::Other(e.to_string()))?;
        let options = ClusterOptions {
            cluster,
            node_id,
            data_dir: args.data_dir,
            fsync: !args.no_fsync,
            tuning: Tuning {
                checkpoint_entries: args
                    .checkpoint_entries
                    .unwrap_or(Tuning::default().checkpoint_entries),
                ..Tuning::default()
            },
        };
        return serve_cluster(vec![options], |addresses| {
            println!("listening on {}", addresses[0]);
        })
        .await;
    }
    let mut config = Config {
        data_dir: args.data_dir,
        listen: args.listen,
        fsync: !args.no_fsync,
        ..Default::default()
    };
    if let Some(bytes) = args.checkpoint_bytes {
        config.checkpoint_bytes = bytes;
    }
    serve(config, |address| println!("listening on {address}")).await
}

/// Starts a node, calls `ready` with its address, and serves until SIGINT/SIGTERM.
/// Shared by `start` and `dev`.
pub async fn serve(config: Config, ready: impl FnOnce(SocketAddr)) -> Result<ExitCode, Error> {
    let mut signals = ShutdownSignals::install()?;
    let node = Node::start(config).await?;
    ready(node.local_addr());
    let stop_notice = node.stop_notice();
    let signal = tokio::select! {
        signal = signals.recv() => Some(signal),
        () = stop_notice.notified() => None,
    };
    let Some(signal) = signal else {
        tracing::error!("the node cannot go on (see above): stopping");
        node.shutdown().await?;
        return Err(Error::Other("the node stopped on its own after a failure".into()));
    };
    tracing::info!("{signal}: shutting down (a second signal does not hurry it)");
    node.shutdown().await?;
    tracing::info!("node stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Starts cluster nodes in this process (one for `start`, several for `dev
/// --replicas`), calls `ready` with their addresses, and serves until SIGINT/SIGTERM.
pub async fn serve_cluster(
    nodes: Vec<ClusterOptions>,
    ready: impl FnOnce(&[SocketAddr]),
) -> Result<ExitCode, Error> {
    let mut signals = ShutdownSignals::install()?;
    let mut started = Vec::new();
    for options in nodes {
        match ClusterNode::start(options).await {
            Ok(node) => started.push(node),
            Err(error) => {
                for node in started {
                    let _ = node.shutdown().await;
                }
                return Err(error.into());
            }
        }
    }
    let addresses: Vec<SocketAddr> = started.iter().map(|n| n.local_addr()).collect();
    ready(&addresses);
    let mut ended = tokio::task::JoinSet::new();
    for node in &started {
        let notice = node.stop_notice();
        ended.spawn(async move { notice.notified().await });
    }
    let signal = tokio::select! {
        signal = signals.recv() => signal,
        _ = ended.join_next() => {
            tracing::error!("a node cannot go on (see above): stopping");
            let mut outcome = Ok(());
            for node in started {
                outcome = outcome.and(node.shutdown().await);
            }
            outcome?;
            return Err(Error::Other("a node stopped on its own after a failure".into()));
        }
    };
    tracing::info!("{signal}: shutting down (a second signal does not hurry it)");
    let mut outcome = Ok(());
    for node in started {
        outcome = outcome.and(node.shutdown().await);
    }
    outcome?;
    tracing::info!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

pub fn warn_no_fsync() {
    let banner = "WARNING: --no-fsync: the write-ahead log is not synced. A reply no longer \
                  means the payment is on disk: a crash or power loss can LOSE \
                  acknowledged payments. Use this for experiments only, never for real \
                  money.";
    tracing::warn!("{banner}");
    eprintln!("\n{banner}\n");
}
