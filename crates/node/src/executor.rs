//! The executor: the one thread that owns the ledger and the log, and the syncer thread
//! behind it. This is the node's IO shell around the pure ledger.
//!
//! Pipeline (group commit):
//! 1. The executor takes every request waiting (up to [`GROUP_MAX`]), and for each one
//!    that changes state: picks the batch timestamp from the wall clock (never below
//!    the last one), executes it on the ledger, and encodes its log record. Queries
//!    execute on the current state.
//! 2. It hands the group's records and replies to the syncer, and goes on to the next
//!    group at once: batch N+1 executes while batch N is being written and fsynced.
//! 3. The syncer writes the records (copying a megabyte into the page cache costs the
//!    executor's thread nothing this way), fsyncs (one fdatasync covers every record of
//!    the group, and of any group queued behind it), and only then sends the replies.
//!    A full segment, and a checkpoint, wait until the syncer has written everything
//!    before them ([`Executor::drain`]).
//!
//! Every reply, queries included, leaves only after the fsync that covers everything
//! executed before it, so no client ever observes an effect that a crash could undo.
//! The syncer queue is bounded ([`SYNC_QUEUE_MAX`]): when the disk is slow the executor
//! waits instead of piling up unacknowledged work.
//!
//! A failed fsync is fatal: the page cache can no longer be trusted to reach the disk
//! (as PostgreSQL learned), so every waiting request gets an error, the node stops, and
//! a restart recovers from what is on disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use settle_ledger::{Ledger, Read, Reply, Write, RECORD_SIZE};
use tokio::sync::{mpsc, oneshot};

use crate::storage::checkpoint;
use crate::storage::wal::{Operation, SyncHandle, Wal};
use crate::NodeError;

/// Most requests executed as one group (one fsync).
pub const GROUP_MAX: usize = 64;
/// Most groups waiting for the syncer.
pub const SYNC_QUEUE_MAX: usize = 2;

/// What a client asked for: a write (logged) or a read.
pub enum Command {
    Write(Write),
    Read(Read),
    /// Transactions across shards, all coordinated by the shard the request names
    /// (cluster nodes only): answered, once every outcome is durable, with their
    /// transfers' results one after the other (`Reply::TransferResults`).
    Txns(Vec<settle_commit::Txn>),
    /// A snapshot read's part at the shard the request names (cluster nodes only): the
    /// accounts as of timestamp `at`, answered with `Reply::Snapshot`.
    ReadAt {
        at: u64,
        ids: Vec<u128>,
    },
}

pub struct Request {
    pub command: Command,
    /// The shard it is for (cluster nodes; `None`: the lowest-numbered shard, and the
    /// only one of a standalone node).
    pub shard: Option<u64>,
    pub reply: oneshot::Sender<Result<Reply, NodeError>>,
}

/// Settings the executor needs.
pub struct ExecutorConfig {
    pub data_dir: PathBuf,
    /// The data directory's lock: held for as long as the executor runs, so that no
    /// other node can open the directory while this one may still write to it (even if
    /// its `Node` handle was dropped without a shutdown).
    #[expect(dead_code, reason = "held, never read: dropping it releases the lock")]
    pub lock: std::fs::File,
    pub fsync: bool,
    /// Write a checkpoint once the log has grown this much since the last one.
    pub checkpoint_bytes: u64,
}

/// Shared with the rest of the node.
pub struct ExecutorState {
    /// Earliest pending-transfer deadline (ns), `u64::MAX` if none: the pulse timer reads it.
    pub next_expiry: AtomicU64,
    /// Set when an fsync or a log write failed: the node must stop.
    pub failed: AtomicBool,
    /// Notified when the node can no longer serve: a write or fsync failed, or the
    /// executor stopped on its own (an error, or a panic such as a failed write of the
    /// transfers file). Whoever runs the node waits on it and shuts the node down.
    pub stopped: Arc<tokio::sync::Notify>,
}

struct SyncJob {
    /// The segment to write to and sync: the only one that can hold records not yet
    /// durable (the log syncs a full segment itself before starting the next).
    segment: SyncHandle,
    /// Encoded log records, in order, to write first.
    records: Vec<u8>,
    replies: Vec<(oneshot::Sender<Result<Reply, NodeError>>, Reply)>,
    /// Told, after this job, whether every write and sync so far succeeded.
    done: Option<std_mpsc::SyncSender<bool>>,
}

struct Executor {
    ledger: Ledger,
    wal: Wal,
    segment: SyncHandle,
    config: ExecutorConfig,
    state: Arc<ExecutorState>,
    log_bytes_since_checkpoint: u64,
    /// The checkpoint being written in the background, if any (at most one).
    checkpointing: Option<thread::JoinHandle<Result<(), NodeError>>>,
    /// Scratch for encoding request bodies.
    body: Vec<u8>,
    /// The current group's log records, encoded, not yet handed to the syncer.
    records: Vec<u8>,
    /// Where groups go; set while `run` runs.
    sync: Option<std_mpsc::SyncSender<SyncJob>>,
    /// Record buffers the syncer is done with, to reuse (a fresh megabyte each group
    /// would be mapped and faulted in anew).
    recycled: std_mpsc::Receiver<Vec<u8>>,
    recycle: std_mpsc::Sender<Vec<u8>>,
}

/// The running executor: where to send requests, what it shares, its thread.
pub struct Spawned {
    pub requests: mpsc::Sender<Request>,
    pub state: Arc<ExecutorState>,
    pub thread: thread::JoinHandle<Result<(), NodeError>>,
}

/// Starts the executor and syncer threads. The executor stops when every sender of the
/// returned channel is dropped, after the last group is durable and answered.
pub fn spawn(ledger: Ledger, wal: Wal, config: ExecutorConfig) -> Result<Spawned, NodeError> {
    let (sender, receiver) = mpsc::channel(GROUP_MAX);
    let state = Arc::new(ExecutorState {
        next_expiry: AtomicU64::new(ledger.next_expiry().unwrap_or(u64::MAX)),
        failed: AtomicBool::new(false),
        stopped: Arc::new(tokio::sync::Notify::new()),
    });
    let segment = wal.sync_handle()?;
    let (recycle, recycled) = std_mpsc::channel();
    let executor = Executor {
        ledger,
        wal,
        segment,
        config,
        state: state.clone(),
        log_bytes_since_checkpoint: 0,
        checkpointing: None,
        body: Vec::new(),
        records: Vec::new(),
        sync: None,
        recycled,
        recycle,
    };
    let thread = thread::Builder::new()
        .name("settle-executor".into())
        .spawn(move || {
            let _notice = crate::ExitNotice(executor.state.stopped.clone());
            executor.run(receiver)
        })
        .map_err(NodeError::Thread)?;
    Ok(Spawned { requests: sender, state, thread })
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Executor {
    fn run(mut self, mut receiver: mpsc::Receiver<Request>) -> Result<(), NodeError> {
        let (sync_sender, sync_receiver) = std_mpsc::sync_channel::<SyncJob>(SYNC_QUEUE_MAX);
        let fsync = self.config.fsync;
        let state = self.state.clone();
        let recycle = self.recycle.clone();
        let syncer = thread::Builder::new()
            .name("settle-syncer".into())
            .spawn(move || syncer(sync_receiver, fsync, &state, &recycle))
            .map_err(NodeError::Thread)?;
        self.sync = Some(sync_sender);

        let mut outcome = Ok(());
        while let Some(first) = receiver.blocking_recv() {
            if self.state.failed.load(Ordering::SeqCst) {
                let _ = first.reply.send(Err(NodeError::Stopped));
                break;
            }
            let mut replies = Vec::with_capacity(GROUP_MAX);
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match self.execute(request.command) {
                    Ok(reply) => replies.push((request.reply, reply)),
                    // The ledger refused the batch before anything was logged: only this
                    // request fails (unreachable today: the server bounds batch sizes
                    // and timestamps never go backwards).
                    Err(NodeError::Batch(error)) => {
                        let _ = request.reply.send(Err(NodeError::Batch(error)));
                    }
                    Err(error) => {
                        // A log write failed: nothing after it can be made durable.
                        self.state.failed.store(true, Ordering::SeqCst);
                        let _ = request.reply.send(Err(NodeError::Stopped));
                        outcome = Err(error);
                        break;
                    }
                }
                if replies.len() < GROUP_MAX {
                    next = receiver.try_recv().ok();
                }
            }
            let records = self.take_records();
            let job = SyncJob { segment: self.segment.clone(), records, replies, done: None };
            self.state
                .next_expiry
                .store(self.ledger.next_expiry().unwrap_or(u64::MAX), Ordering::SeqCst);
            if self.send(job).is_err() || outcome.is_err() {
                break;
            }
            if self.log_bytes_since_checkpoint >= self.config.checkpoint_bytes {
                if let Err(error) = self.start_checkpoint() {
                    self.state.failed.store(true, Ordering::SeqCst);
                    outcome = Err(error);
                    break;
                }
            }
        }
        // Refuse whatever is still queued, then let the syncer finish the last group.
        receiver.close();
        // A clean stop leaves a checkpoint, so the next start replays nothing. Not after
        // a failed fsync: then only what is on disk may be trusted, and a restart
        // recovers from it. A failed background checkpoint is reported either way.
        outcome = outcome.and(self.finish_checkpoint());
        let trusted = !self.state.failed.load(Ordering::SeqCst);
        if outcome.is_ok() && trusted && self.log_bytes_since_checkpoint > 0 {
            outcome = self.start_checkpoint().and_then(|()| self.finish_checkpoint());
        }
        while let Ok(request) = receiver.try_recv() {
            let _ = request.reply.send(Err(NodeError::Stopped));
        }
        self.sync = None;
        let synced = syncer.join().map_err(|_| NodeError::ThreadPanicked("syncer"))?;
        outcome.and(synced)
    }

    /// Executes one command; state-changing ones are appended to the log.
    fn execute(&mut self, command: Command) -> Result<Reply, NodeError> {
        let write = match command {
            Command::Read(read) => return Ok(self.ledger.query(&read)),
            Command::Write(write) => write,
            Command::Txns(_) | Command::ReadAt { .. } => {
                return Err(NodeError::Config(
                    "a standalone node has one shard: nothing crosses shards".into(),
                ))
            }
        };
        let commit_timestamp = self.ledger.commit_timestamp();
        let (reply, timestamp) = self.ledger.execute_write(now_ns(), &write)?;
        if timestamp == commit_timestamp {
            // A pulse with nothing due: nothing changed, nothing to log.
            debug_assert!(matches!(reply, Reply::Pulsed { expired: 0 }));
            return Ok(reply);
        }
        self.body.clear();
        let operation = match &write {
            Write::CreateAccounts(accounts) => {
                accounts.iter().for_each(|a| self.body.extend_from_slice(&a.to_bytes()));
                Operation::CreateAccounts
            }
            Write::CreateTransfers(transfers) => {
                self.body.reserve(transfers.len() * RECORD_SIZE);
                transfers.iter().for_each(|t| self.body.extend_from_slice(&t.to_bytes()));
                Operation::CreateTransfers
            }
            Write::Pulse => Operation::Pulse,
        };
        self.log(operation, timestamp)?;
        Ok(reply)
    }

    fn log(&mut self, operation: Operation, timestamp: u64) -> Result<(), NodeError> {
        let mut start = self.records.len();
        while self.wal.encode_next(operation, timestamp, &self.body, &mut self.records).is_none() {
            // The segment is full: once everything before is written, the log syncs it
            // and starts the next.
            self.drain()?;
            self.segment = self.wal.next_segment()?;
            start = self.records.len();
        }
        self.log_bytes_since_checkpoint += (self.records.len() - start) as u64;
        Ok(())
    }

    /// The current group's records, leaving a recycled buffer in their place.
    fn take_records(&mut self) -> Vec<u8> {
        let mut spare = self.recycled.try_recv().unwrap_or_default();
        spare.clear();
        std::mem::replace(&mut self.records, spare)
    }

    fn send(&self, job: SyncJob) -> Result<(), NodeError> {
        let sync = self.sync.as_ref().expect("the syncer runs while the executor does");
        sync.send(job).map_err(|_| NodeError::Stopped)
    }

    /// Hands the records encoded so far to the syncer and waits until everything handed
    /// to it is written (and synced): before a full segment is closed, and before a
    /// checkpoint takes the state.
    fn drain(&mut self) -> Result<(), NodeError> {
        let (done, written) = std_mpsc::sync_channel(1);
        let records = self.take_records();
        let segment = self.segment.clone();
        self.send(SyncJob { segment, records, replies: Vec::new(), done: Some(done) })?;
        match written.recv() {
            Ok(true) => Ok(()),
            _ => Err(NodeError::Stopped),
        }
    }

    /// Starts a checkpoint of the current state: makes the log durable through the
    /// current op, captures the state (cheap: small tables are copied, transfer records
    /// on disk are not), starts a new log segment, and writes the checkpoint on a
    /// background thread, which then deletes the log segments it covers. The executor
    /// goes on serving meanwhile. If the previous checkpoint is still being written,
    /// this one waits for a later group.
    fn start_checkpoint(&mut self) -> Result<(), NodeError> {
        if self.checkpointing.as_ref().is_some_and(|writer| !writer.is_finished()) {
            return Ok(());
        }
        self.finish_checkpoint()?;
        let op = self.wal.next_op() - 1;
        // Durable through `op`: everything handed to the syncer is written and synced
        // (the syncer syncs every job it writes, this one included).
        self.drain()?;
        let mut source = self
            .ledger
            .snapshot_source()
            .map_err(|source| NodeError::DataDir { path: self.config.data_dir.clone(), source })?;
        // The records already in the transfers file are not written again: the
        // checkpoint refers to them, so its cost follows what changed.
        source.refer_to_transfers_file(0);
        self.segment = self.wal.rotate()?;
        self.log_bytes_since_checkpoint = 0;
        let dir = self.config.data_dir.clone();
        let writer = thread::Builder::new()
            .name("settle-checkpoint".into())
            .spawn(move || {
                checkpoint::write(&dir, op, &source)?;
                let removed = crate::storage::wal::remove_segments_through(
                    &dir.join(crate::storage::WAL_DIR),
                    op,
                )?;
                tracing::info!(op, removed_segments = removed, "checkpoint written");
                Ok(())
            })
            .map_err(NodeError::Thread)?;
        self.checkpointing = Some(writer);
        Ok(())
    }

    /// Waits for the background checkpoint, if any, and returns how it went.
    fn finish_checkpoint(&mut self) -> Result<(), NodeError> {
        match self.checkpointing.take() {
            None => Ok(()),
            Some(writer) => writer.join().map_err(|_| NodeError::ThreadPanicked("checkpoint"))?,
        }
    }
}

/// The syncer: write, fsync, then answer. Stops when the executor hangs up.
fn syncer(
    jobs: std_mpsc::Receiver<SyncJob>,
    fsync: bool,
    state: &ExecutorState,
    recycle: &std_mpsc::Sender<Vec<u8>>,
) -> Result<(), NodeError> {
    let mut outcome = Ok(());
    for job in jobs {
        let written = match outcome.is_ok() && !job.records.is_empty() {
            true => job.segment.write(&job.records).map_err(NodeError::from),
            false => Ok(()),
        };
        let synced = if fsync && outcome.is_ok() && written.is_ok() {
            job.segment.sync().map_err(NodeError::from)
        } else {
            written
        };
        if let Err(error) = synced {
            tracing::error!(%error, "writing or syncing the log failed: stopping the node");
            state.failed.store(true, Ordering::SeqCst);
            state.stopped.notify_one();
            outcome = Err(error);
        }
        for (reply, value) in job.replies {
            let answer = if outcome.is_ok() { Ok(value) } else { Err(NodeError::Stopped) };
            // The client may have gone away; its request is durable regardless.
            let _ = reply.send(answer);
        }
        if let Some(done) = job.done {
            let _ = done.send(outcome.is_ok());
        }
        // The executor may be gone (stopping): then the buffer is simply dropped.
        let _ = recycle.send(job.records);
    }
    outcome
}
