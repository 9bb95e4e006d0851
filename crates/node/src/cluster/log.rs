//! The node's replicated-state log: one append-only file that every shard's replica on
//! this node writes its records to (`settle_replica::durable` framing, each record
//! naming its shard), so that one fsync covers a batch across all groups.
//!
//! The file only grows until a rewrite replaces it, atomically (temporary file, fsync,
//! rename, fsync of the directory), with what the replicas hold in memory: their latest
//! snapshot, their entries and their hard state (the *base*). The base is taken between
//! syncs and written on a thread of its own ([`write_base`]) while the log goes on;
//! what is appended meanwhile is kept and follows it, in rounds on that thread
//! ([`write_more`]) while it is large, then the rest by [`GroupLog::finish_rewrite`]
//! before the new file takes the old one's place: the engine thread writes only the
//! last few MB, not the hundreds of MB of entries.
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
    /// While a rewrite's base is being written: the bytes appended to this log since
    /// the base was taken.
    since_base: Option<Vec<u8>>,
}

/// Where a rewrite's base is written, beside the log.
fn rewrite_path(log: &Path) -> PathBuf {
    log.with_extension("log.tmp")
}

/// Writes a rewrite's base, `records`, to the temporary file beside the log at `log`
/// and makes it durable; the file and its length. Records are written one at a time (a
/// base can be large; it is not built in memory first). Runs on its own thread.
pub fn write_base(log: &Path, records: Vec<(u64, Record)>) -> io::Result<(File, u64)> {
    let mut file = io::BufWriter::new(File::create(rewrite_path(log))?);
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
    Ok((file, len))
}

/// Appends `bytes` (appended to the log since the base was taken) to a rewrite's file of
/// `len` bytes, durably; the file and its new length. Runs on the rewrite's thread.
pub fn write_more(mut file: File, len: u64, bytes: &[u8]) -> io::Result<(File, u64)> {
    file.write_all(bytes)?;
    file.sync_data()?;
    Ok((file, len + bytes.len() as u64))
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
        // A rewrite that crashed before its rename (the rename is what puts it in
        // place): its file is nothing, and would sit there until the next rewrite.
        let rewrite = rewrite_path(&path);
        match fs::remove_file(&rewrite) {
            Ok(()) => {
                tracing::info!(path = %rewrite.display(), "removed an unfinished log rewrite")
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NodeError::DataDir { path: rewrite, source }),
        }
        let log = GroupLog { file, path, len: valid as u64, since_base: None };
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
        self.appended(bytes);
        Ok(())
    }

    /// Counts records the syncer thread writes through its handle (and keeps them for
    /// the new file while a rewrite's base is being written).
    pub fn appended(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if let Some(since_base) = &mut self.since_base {
            since_base.extend_from_slice(bytes);
        }
    }

    /// A rewrite's base was taken (between syncs: everything appended so far is in it):
    /// what is appended from now on is kept for [`GroupLog::finish_rewrite`].
    pub fn begin_rewrite(&mut self) {
        assert!(self.since_base.is_none(), "one rewrite at a time");
        self.since_base = Some(Vec::new());
    }

    /// Whether a rewrite was begun and not finished.
    pub fn rewriting(&self) -> bool {
        self.since_base.is_some()
    }

    /// The bytes appended since a rewrite's base was taken and not yet taken for it.
    pub fn since_base_len(&self) -> usize {
        self.since_base.as_ref().map_or(0, Vec::len)
    }

    /// Takes the bytes appended since the base (or the last take) for [`write_more`];
    /// what is appended from now on is kept as before.
    pub fn take_since_base(&mut self) -> Vec<u8> {
        std::mem::take(self.since_base.as_mut().expect("a rewrite begun"))
    }

    /// Replaces the log with the rewrite's `file` (the base and what [`write_more`] added,
    /// `base_len` bytes, durable) followed by the rest of what was appended since the
    /// base was taken, atomically and durably. A sync in flight may still write to the
    /// old file (what it writes was counted by [`GroupLog::appended`], so it is in the
    /// new one too); the next must go to the new one ([`GroupLog::sync_handle`]).
    pub fn finish_rewrite(&mut self, file: File, base_len: u64) -> io::Result<()> {
        let since_base = self.since_base.take().expect("a rewrite begun");
        let mut file = file;
        file.write_all(&since_base)?;
        file.sync_all()?;
        fs::rename(rewrite_path(&self.path), &self.path)?;
        let dir = self.path.parent().expect("the log lives in a directory");
        File::open(dir)?.sync_all()?;
        self.file = OpenOptions::new().read(true).append(true).open(&self.path)?;
        self.len = base_len + since_base.len() as u64;
        Ok(())
    }

    /// A handle the syncer thread can write and fsync.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(byte: u8) -> (u64, Record) {
        (u64::from(byte % 2) + 1, Record::Acceptor(vec![byte; 100]))
    }

    fn encoded(records: &[(u64, Record)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (group, record) in records {
            durable::encode(*group, record, &mut bytes);
        }
        bytes
    }

    fn acceptor_bytes(records: &[(u64, Record)]) -> Vec<(u64, Vec<u8>)> {
        records
            .iter()
            .map(|(group, record)| match record {
                Record::Acceptor(bytes) => (*group, bytes.clone()),
                other => panic!("unexpected record {other:?}"),
            })
            .collect()
    }

    /// The new log is the base, then what was appended while it was being written (in
    /// a round on the rewrite's thread and at the swap), then what comes after; the old
    /// records the base replaces are gone.
    #[test]
    fn a_rewrite_keeps_what_was_appended_while_its_base_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = GroupLog::open(dir.path()).unwrap().log;
        log.append(&encoded(&[record(1), record(2), record(3)])).unwrap();
        log.begin_rewrite();
        assert!(log.rewriting());
        let base = vec![record(10)];
        let during = [record(4), record(5), record(7)];
        // One as the syncer writes (through its handle), one as the engine does.
        let synced = encoded(&during[..1]);
        log.sync_handle().unwrap().write_all(&synced).unwrap();
        log.appended(&synced);
        log.append(&encoded(&during[1..2])).unwrap();
        let (file, len) = write_base(log.path(), base.clone()).unwrap();
        // A round on the rewrite's thread takes what came so far; the swap the rest.
        assert_eq!(log.since_base_len(), encoded(&during[..2]).len());
        let bytes = log.take_since_base();
        log.append(&encoded(&during[2..])).unwrap();
        let (file, len) = write_more(file, len, &bytes).unwrap();
        log.finish_rewrite(file, len).unwrap();
        assert!(!log.rewriting());
        log.append(&encoded(&[record(6)])).unwrap();

        let expected = [base, during.to_vec(), vec![record(6)]].concat();
        let len = log.len();
        let recovered = GroupLog::open(dir.path()).unwrap();
        assert_eq!(acceptor_bytes(&recovered.records), acceptor_bytes(&expected));
        assert_eq!(recovered.log.len(), len);
        assert!(!rewrite_path(&dir.path().join(FILE_NAME)).exists());
    }

    /// A rewrite's file left by a crash before its rename goes at the next start; the
    /// log is what it was.
    #[test]
    fn an_unfinished_rewrite_is_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = GroupLog::open(dir.path()).unwrap().log;
        log.append(&encoded(&[record(1), record(2)])).unwrap();
        log.begin_rewrite();
        write_base(log.path(), vec![record(9)]).unwrap();
        let leftover = rewrite_path(log.path());
        assert!(leftover.exists());
        drop(log); // The crash: no swap.

        let recovered = GroupLog::open(dir.path()).unwrap();
        assert!(!leftover.exists(), "the unfinished rewrite is gone");
        let expected = [record(1), record(2)];
        assert_eq!(acceptor_bytes(&recovered.records), acceptor_bytes(&expected));
    }
}
