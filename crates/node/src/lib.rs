//! # settle-node
//!
//! One durable settle node: the ledger served over gRPC, every change on disk before
//! it is acknowledged.
//!
//! Layout, top-down:
//! - this file: [`Config`], [`Node`] (start, address, shutdown) and [`NodeError`];
//! - `server.rs`: the gRPC service — converts and checks requests, refuses bad input;
//! - `executor.rs`: the thread that owns the ledger and the log, and its syncer thread
//!   (group commit: execute the next batch while the previous one is fsynced; reply
//!   only after the fsync that covers a request);
//! - `storage/`: the write-ahead log, checkpoints and recovery.
//!
//! Lifecycle. `Node::start` takes the data directory's lock, recovers (checkpoint +
//! log replay, torn tail truncated, corruption refused), starts the executor, binds the
//! listener and serves. `Node::shutdown` is the designed way down: stop accepting, let
//! in-flight requests finish, let the executor drain and the syncer make the last
//! group durable and answer it, write a checkpoint, release the lock.

pub mod cluster;
mod executor;
mod server;
pub mod storage;

use std::fs::{self, File};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use settle_proto::pb::ledger_server::LedgerServer;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use executor::{Command, ExecutorConfig, ExecutorState, Request};
use settle_ledger::{Reply, Write};
use storage::checkpoint::CheckpointError;
use storage::wal::WalError;

/// Largest gRPC message the node accepts: a full batch in its most verbose encoding.
pub(crate) const MESSAGE_BYTES_MAX: usize = 16 << 20;
/// HTTP/2 flow-control window per stream and per connection: several full batches.
pub(crate) const HTTP2_WINDOW_BYTES: u32 = 16 << 20;
/// How often the node checks whether a pending transfer's deadline has passed.
const PULSE_INTERVAL: Duration = Duration::from_millis(100);

/// Notifies its `Notify` when dropped: held by a thread the node cannot go on without,
/// it tells the node that the thread ended, however it ended (dropped during a panic's
/// unwinding too).
pub(crate) struct ExitNotice(pub(crate) Arc<tokio::sync::Notify>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// fsync before acknowledging. Only experiments turn this off.
    pub fsync: bool,
    /// Write a checkpoint each time the log grows by this much.
    pub checkpoint_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("settle-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            fsync: true,
            checkpoint_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the ledger refused a batch: {0}")]
    Batch(#[from] settle_ledger::BatchError),
    #[error("log record {op} cannot be replayed: {reason}")]
    Replay { op: u64, reason: String },
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("data directory {path} is in use by another settle node")]
    Locked { path: PathBuf },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    #[error("the {0} thread panicked")]
    ThreadPanicked(&'static str),
    #[error("gRPC server failed: {0}")]
    Server(String),
    #[error("the node is stopping or has stopped")]
    Stopped,
    #[error("{0}")]
    Config(String),
    #[error("log {path} is corrupt: {reason}")]
    CorruptLog { path: PathBuf, reason: String },
    #[error("this node does not lead the shard{}", leader.as_ref().map(|l| format!("; the leader is at {l}")).unwrap_or_else(|| "; no leader is known yet".into()))]
    NotLeader { leader: Option<String> },
    #[error("the node is busy; retry")]
    Busy,
    #[error(
        "the outcome is unknown (leadership changed or the request timed out); retrying is safe"
    )]
    OutcomeUnknown,
    #[error("this node holds no replica of shard {shard}")]
    NoReplica { shard: u64 },
    #[error("the node stopped: {0}")]
    Failed(String),
    #[error("snapshot read: {0}")]
    Snapshot(settle_commit::read::ReadError),
}

/// A running node.
pub struct Node {
    local_addr: SocketAddr,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    pulse: JoinHandle<()>,
    executor: std::thread::JoinHandle<Result<(), NodeError>>,
    state: Arc<ExecutorState>,
}

/// What recovery found, for the operator's log.
#[derive(Clone, Copy, Debug)]
pub struct RecoveryReport {
    pub checkpoint_op: u64,
    pub replayed: usize,
    pub truncated_bytes: u64,
}

/// The gRPC server settings every node uses. A full batch is about 1 MiB: HTTP/2's
/// default 64 KiB windows would make it crawl through window-update round trips.
pub(crate) fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(HTTP2_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_WINDOW_BYTES)
}

/// The client-facing service, handing requests to `requests`.
pub(crate) fn ledger_service(requests: mpsc::Sender<Request>) -> LedgerServer<server::Service> {
    LedgerServer::new(server::Service { requests })
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// A client-facing service with the message limits every node uses.
pub(crate) fn ledger_server<S: settle_proto::pb::ledger_server::Ledger>(
    service: S,
) -> LedgerServer<S> {
    LedgerServer::new(service)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// Serves `router` on `listener` until `stopped` fires (or its sender is dropped).
pub(crate) async fn serve(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    stopped: oneshot::Receiver<()>,
) -> Result<(), tonic::transport::Error> {
    // Replies are small: without TCP_NODELAY, Nagle's algorithm holds them back until
    // the client's delayed ACK (about 40 ms on Linux), for every request.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        })
        .await
}

/// Binds the node's listener; returns it with the address it got (port 0 picks one).
pub(crate) async fn bind(
    address: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), NodeError> {
    let listen_error = |source| NodeError::Listen { addr: address, source };
    let listener = tokio::net::TcpListener::bind(address).await.map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    Ok((listener, local_addr))
}

pub(crate) fn lock(data_dir: &Path) -> Result<File, NodeError> {
    let dir_error = |source| NodeError::DataDir { path: data_dir.to_path_buf(), source };
    fs::create_dir_all(data_dir).map_err(dir_error)?;
    let path = data_dir.join("LOCK");
    let file = File::create(&path).map_err(dir_error)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            Err(NodeError::Locked { path: data_dir.to_path_buf() })
        }
        Err(fs::TryLockError::Error(source)) => Err(dir_error(source)),
    }
}

impl Node {
    /// Recovers `config.data_dir` (created if missing) and starts serving.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let lock = lock(&config.data_dir)?;
        let data_dir = config.data_dir.clone();
        let recovered = tokio::task::spawn_blocking(move || storage::recover(&data_dir))
            .await
            .map_err(|_| NodeError::ThreadPanicked("recovery"))??;
        let report = RecoveryReport {
            checkpoint_op: recovered.checkpoint_op,
            replayed: recovered.replayed,
            truncated_bytes: recovered.truncated_bytes,
        };
        tracing::info!(?report, data_dir = %config.data_dir.display(), "recovered");
        if !config.fsync {
            tracing::warn!("fsync is OFF: acknowledged requests can be lost on a crash");
        }

        let (listener, local_addr) = bind(config.listen).await?;

        let executor::Spawned { requests, state, thread: executor } = executor::spawn(
            recovered.ledger,
            recovered.wal,
            ExecutorConfig {
                data_dir: config.data_dir.clone(),
                lock,
                fsync: config.fsync,
                checkpoint_bytes: config.checkpoint_bytes,
            },
        )?;
        let pulse = tokio::spawn(pulse(requests.clone(), state.clone()));
        let (stop_server, stopped) = oneshot::channel::<()>();
        let router = grpc_server().add_service(ledger_service(requests));
        let server = tokio::spawn(serve(router, listener, stopped));
        tracing::info!(%local_addr, "serving");
        Ok(Node { local_addr, stop_server, server, pulse, executor, state })
    }

    /// Notified when the node can no longer serve on its own account (a log write or
    /// fsync failed, or its executor stopped): then call [`Node::shutdown`], which
    /// returns the error. Requests meanwhile are refused, and nothing acknowledged is
    /// lost: a restart recovers from the disk. (As [`cluster::ClusterNode::stop_notice`].)
    pub fn stop_notice(&self) -> Arc<tokio::sync::Notify> {
        self.state.stopped.clone()
    }

    /// The address the node listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the node: no new requests, in-flight ones finish durably, then the
    /// executor and syncer stop. Returns the first error the node met, if any.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop_server.send(());
        let served = self.server.await;
        // The pulse task holds a request sender; the executor stops once every sender
        // (the service's and this one) is gone.
        self.pulse.abort();
        let _ = self.pulse.await;
        let executor = self.executor;
        let executed = tokio::task::spawn_blocking(move || executor.join())
            .await
            .map_err(|_| NodeError::ThreadPanicked("shutdown"))?
            .map_err(|_| NodeError::ThreadPanicked("executor"))?;
        executed?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(NodeError::Server(error.to_string())),
            Err(_) => Err(NodeError::ThreadPanicked("server")),
        }
    }
}

/// Asks the executor to expire pending transfers once the earliest deadline passed.
async fn pulse(requests: mpsc::Sender<Request>, state: Arc<ExecutorState>) {
    let mut ticks = tokio::time::interval(PULSE_INTERVAL);
    loop {
        ticks.tick().await;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        if state.next_expiry.load(Ordering::SeqCst) > now {
            continue;
        }
        let (reply, answer) = oneshot::channel();
        if requests
            .send(Request { command: Command::Write(Write::Pulse), shard: None, reply })
            .await
            .is_err()
        {
            return;
        }
        if let Ok(Ok(Reply::Pulsed { expired })) = answer.await {
            if expired > 0 {
                tracing::debug!(expired, "pending transfers expired");
            }
        }
    }
}
