//! The node's replicated-state log: one append-only file that every shard's replica on
//! this node writes its records to (`settle_replica::durable` framing, each record
//! naming its shard), so that one fsync covers a batch across all groups.
//!
//! The file only grows until [`GroupLog::rewrite`] replaces it, atomically (temporary
//! file, fsync, rename, fsync of the directory), with what the replicas hold in memory:
//! their latest snapshot, their entries and their hard state.
//!
//! Touches: `raft.log` and `raft.log.tmp` in the data directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use settle_replica::{durable, Record};

use crate::NodeError;

const FILE_NAME: &str = "raft.log";

pub struct GroupLog {
    file: File,
    path: PathBuf,
    len: u64,
}

/// What the log held at start.
pub struct Recovered {
    pub log: GroupLog,
    pub records: Vec<(u64, Record)>,
    pub truncated_bytes: u64,
}

impl GroupLog {
    /// Opens (or creates) the log in `dir` and reads every record back. A torn tail is
    /// cut; any other damage refuses the start.
    pub fn open(dir: &Path) -> Result<Recovered, NodeError> {
        let path = dir.join(FILE_NAME);
        let io_error = |source| NodeError::DataDir { path: path.clone(), source };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_error)?;
        let bytes = fs::read(&path).map_err(io_error)?;
        let (records, valid) = durable::decode_all(&bytes, true).map_err(|corrupt| {
            NodeError::CorruptLog { path: path.clone(), reason: corrupt.to_string() }
        })?;
        let truncated_bytes = (bytes.len() - valid) as u64;
        if truncated_bytes > 0 {
            tracing::warn!(path = %path.display(), truncated_bytes, "cut a torn tail off the log");
            file.set_len(valid as u64).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
        }
        file.flush().map_err(io_error)?;
        let log = GroupLog { file, path, len: valid as u64 };
        Ok(Recovered { log, records, truncated_bytes })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends encoded records (to the OS: durable only after a sync).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Counts `bytes` the syncer thread wrote through its handle.
    pub fn appended(&mut self, bytes: u64) {
        self.len += bytes;
    }

    /// A handle the syncer thread can write and fsync.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Replaces the log with `records`, atomically and durably. Records are written one
    /// at a time (a snapshot can be large; the log is not built in memory first).
    pub fn rewrite(&mut self, records: impl Iterator<Item = (u64, Record)>) -> io::Result<()> {
        let tmp = self.path.with_extension("log.tmp");
        let mut file = io::BufWriter::new(File::create(&tmp)?);
        let mut bytes = Vec::new();
        let mut len = 0;
        for (group, record) in records {
            bytes.clear();
            durable::encode(group, &record, &mut bytes);
            file.write_all(&bytes)?;
            len += bytes.len() as u64;
        }
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        let dir = self.path.parent().expect("the log lives in a directory");
        File::open(dir)?.sync_all()?;
        self.file = OpenOptions::new().read(true).append(true).open(&self.path)?;
        self.len = len;
        Ok(())
    }
}
