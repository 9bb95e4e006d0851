//! `settle start`: run one node in this process until SIGINT or SIGTERM.
//!
//! Once the node serves, the line `listening on ADDR` goes to stdout (and nothing else
//! does), so scripts, tests and `settle bench` can wait for it. On a signal the node
//! drains, syncs and stops, and the process exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use settle_node::{Config, Node};

use super::{Error, ShutdownSignals};
use crate::parse;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of the node's data (created if missing; recovered if not empty).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to serve on; port 0 picks a free port (see the `listening on` line).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// Do not fsync the write-ahead log. Acknowledged payments can be LOST on a crash:
    /// for experiments only.
    #[arg(long)]
    pub no_fsync: bool,
    /// Write a checkpoint each time the write-ahead log grows by this many bytes
    /// (default: the node's, 1 GiB). Smaller means faster recovery, more writing.
    #[arg(long, value_name = "BYTES", value_parser = parse::u64_value)]
    pub checkpoint_bytes: Option<u64>,
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
    let signal = signals.recv().await;
    tracing::info!("{signal}: shutting down (a second signal does not hurry it)");
    node.shutdown().await?;
    tracing::info!("node stopped cleanly");
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
