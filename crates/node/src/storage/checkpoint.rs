//! Checkpoints: the ledger's whole state as of one op, so that restart replays only
//! the log after it.
//!
//! File `checkpoint` in the data directory: a 32-byte header (magic `SCKP`, version u32,
//! op u64, BLAKE3 of those 16 bytes truncated to 16) followed by the ledger snapshot,
//! which carries its own checksum (`MemStore::write_snapshot`) and refers to the
//! records already in the transfers file instead of copying them (the snapshot's format
//! 4; the file is fsynced before). Written to
//! `checkpoint.tmp`, fsynced, renamed over `checkpoint`, directory fsynced: a crash at
//! any point leaves either the old or the new checkpoint, whole.
//!
//! Invariant kept by the node: every log record up to the checkpoint's op is durable
//! before the checkpoint is written, so the log always reaches at least as far.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use settle_ledger::store::{SnapshotError, SnapshotSource};
use settle_ledger::{Ledger, MemStore};

use super::wal::sync_dir;

const FILE: &str = "checkpoint";
const TMP_FILE: &str = "checkpoint.tmp";
const MAGIC: &[u8; 4] = b"SCKP";
const VERSION: u32 = 1;
const HEADER_SIZE: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checkpoint {path} is corrupt: {reason}. Refusing to start: restore the data directory from a replica or backup")]
    Corrupt { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

fn header(op: u64) -> [u8; HEADER_SIZE as usize] {
    let mut header = [0u8; HEADER_SIZE as usize];
    header[0..4].copy_from_slice(MAGIC);
    header[4..8].copy_from_slice(&VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&op.to_le_bytes());
    let hash = blake3::hash(&header[0..16]);
    header[16..32].copy_from_slice(&hash.as_bytes()[..16]);
    header
}

/// Writes a checkpoint of the state `source` captured as of `op`, atomically and
/// durably. Runs on any thread.
pub fn write(dir: &Path, op: u64, source: &SnapshotSource) -> Result<(), CheckpointError> {
    let tmp = dir.join(TMP_FILE);
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header(op)).map_err(io_error(&tmp))?;
    source.write(&mut out).map_err(io_error(&tmp))?;
    let file = out.into_inner().map_err(|e| io_error(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io_error(&tmp))?;
    let path = dir.join(FILE);
    fs::rename(&tmp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
        .map_err(|e| CheckpointError::Io { path: dir.to_path_buf(), source: io::Error::other(e) })
}

/// The latest checkpoint, if any: its op and the ledger it holds, read into `store`
/// (empty).
pub fn load(dir: &Path, store: MemStore) -> Result<Option<(u64, Ledger)>, CheckpointError> {
    let path = dir.join(FILE);
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.clone(), reason };
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path)(error)),
    };
    let len = file.metadata().map_err(io_error(&path))?.len();
    let mut bytes = [0u8; HEADER_SIZE as usize];
    if len < HEADER_SIZE || file.read_exact(&mut bytes).is_err() {
        return Err(corrupt("shorter than its header".into()));
    }
    let op = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if bytes != header(op) {
        return Err(corrupt("bad header".into()));
    }
    let open = || -> io::Result<BufReader<File>> {
        let mut file = File::open(&path)?;
        file.seek(SeekFrom::Start(HEADER_SIZE))?;
        Ok(BufReader::with_capacity(1 << 20, file))
    };
    match Ledger::read_snapshot(store, len - HEADER_SIZE, open) {
        Ok(ledger) => Ok(Some((op, ledger))),
        Err(SnapshotError::Io(source)) => Err(io_error(&path)(source)),
        Err(error) => Err(corrupt(error.to_string())),
    }
}
