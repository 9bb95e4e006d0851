//! Durable storage: the write-ahead log (`wal`) and checkpoints (`checkpoint`), and
//! recovery from both. No thread or socket lives here; `executor.rs` drives it.

pub mod checkpoint;
pub mod wal;

use std::path::Path;

use settle_ledger::{Account, Ledger, MemStore, Transfer};

use crate::NodeError;
use wal::{Operation, Record, Wal};

/// The data directory's log, relative to it.
pub const WAL_DIR: &str = "wal";
/// The transfer records, relative to the data directory, so that only indexes stay in
/// memory. A checkpoint refers to the records already in it (a start adopts them after
/// verifying each chunk); the rest comes back from the log.
pub const TRANSFERS_FILE: &str = "transfers.0";
/// The transfers file of builds whose checkpoints held every record. A new name for
/// the one checkpoints refer to keeps a downgrade harmless: an older build empties
/// this one at its start (then refuses the newer checkpoint), not the one referred to.
/// Removed once a start succeeds.
const LEGACY_TRANSFERS_FILE: &str = "transfers.dat";

/// What recovery rebuilt.
pub struct Recovered {
    pub ledger: Ledger,
    pub wal: Wal,
    /// The checkpoint's op (0 without one) and how many records were replayed after it.
    pub checkpoint_op: u64,
    pub replayed: usize,
    pub truncated_bytes: u64,
}

/// Loads the checkpoint, replays the log after it, truncates a torn tail. Refuses
/// (changing nothing on disk but the torn tail) on corruption it cannot safely repair.
pub fn recover(data_dir: &Path) -> Result<Recovered, NodeError> {
    let transfers = data_dir.join(TRANSFERS_FILE);
    let created = !transfers.exists();
    let recovered = rebuild(data_dir, &transfers);
    if recovered.is_err() && created {
        // Refused: the file this start made goes too (a checkpoint may refer to the
        // one that is missing; it is the operator's to bring back).
        let _ = std::fs::remove_file(&transfers);
    }
    let (ledger, recovered, checkpoint_op) = recovered?;
    let legacy = data_dir.join(LEGACY_TRANSFERS_FILE);
    if legacy.exists() {
        if let Err(error) = std::fs::remove_file(&legacy) {
            tracing::warn!(path = %legacy.display(), %error, "cannot remove an old transfers file");
        }
    }
    Ok(Recovered {
        ledger,
        wal: recovered.wal,
        checkpoint_op,
        replayed: recovered.records.len(),
        truncated_bytes: recovered.truncated_bytes,
    })
}

/// The ledger of the checkpoint and the log after it, the log, and the checkpoint's op.
fn rebuild(data_dir: &Path, transfers: &Path) -> Result<(Ledger, wal::Recovered, u64), NodeError> {
    let io_error = |source| NodeError::DataDir { path: transfers.to_path_buf(), source };
    let store = || MemStore::with_transfer_file(transfers).map_err(io_error);
    // A checkpoint may refer to the file: it is opened as it is (a checkpoint's chunks
    // are adopted once verified; other records are written over what it held).
    let existing = match transfers.exists() {
        true => MemStore::with_existing_transfer_file(transfers).map_err(io_error)?,
        false => store()?,
    };
    let (checkpoint_op, mut ledger) = match checkpoint::load(data_dir, existing)? {
        Some((op, ledger)) => (op, ledger),
        None => (0, Ledger::new(store()?)),
    };
    let recovered = wal::recover(&data_dir.join(WAL_DIR), checkpoint_op)?;
    for record in &recovered.records {
        replay(&mut ledger, record)?;
    }
    Ok((ledger, recovered, checkpoint_op))
}

/// Re-executes one logged batch exactly as it first ran.
fn replay(ledger: &mut Ledger, record: &Record) -> Result<(), NodeError> {
    let outcome = match record.operation {
        Operation::CreateAccounts => {
            let mut accounts = Vec::with_capacity(record.count);
            record.events(|event| accounts.push(Account::from_bytes(event)));
            ledger.create_accounts(record.timestamp, &accounts).map(drop)
        }
        Operation::CreateTransfers => {
            let mut transfers = Vec::with_capacity(record.count);
            record.events(|event| transfers.push(Transfer::from_bytes(event)));
            ledger.create_transfers(record.timestamp, &transfers).map(drop)
        }
        Operation::Pulse => ledger.expire_pending_transfers(record.timestamp).map(drop),
    };
    outcome.map_err(|error| NodeError::Replay { op: record.op, reason: error.to_string() })
}
