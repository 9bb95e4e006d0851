//! Ledger snapshots of the replicas, each in its own file beside the shared log
//! (`snapshots/<shard>-<index>.snap`), so that the log carries only their metadata: a
//! checkpoint costs one sequential file write in the background, not a copy of the
//! whole state through the log.
//!
//! A file is written to a temporary name, fsynced, renamed and the directory fsynced:
//! it exists whole or not at all. Its content is the ledger's checksummed snapshot
//! format, verified when loaded. Files older than a replica's latest durable
//! checkpoint are deleted; at start, every file but the one the log names is.
//!
//! Touches: the `snapshots` directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use settle_replica::Record;

pub const DIR: &str = "snapshots";

pub fn path(data_dir: &Path, shard: u64, index: u64) -> PathBuf {
    data_dir.join(DIR).join(format!("{shard}-{index}.snap"))
}

/// Writes `data` as the snapshot of `shard` at `index`, durably.
pub fn write(data_dir: &Path, shard: u64, index: u64, data: &[u8]) -> io::Result<u64> {
    write_with(data_dir, shard, index, |out| out.write_all(data))
}

/// Writes the snapshot of `shard` at `index` with `fill`, streaming (a snapshot can be
/// larger than memory should hold twice), durably. Returns its size.
pub fn write_with(
    data_dir: &Path,
    shard: u64,
    index: u64,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<u64> {
    let dir = data_dir.join(DIR);
    fs::create_dir_all(&dir)?;
    let path = path(data_dir, shard, index);
    let tmp = path.with_extension("snap.tmp");
    let mut out = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    fill(&mut out)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    let len = file.metadata()?.len();
    fs::rename(&tmp, &path)?;
    File::open(&dir)?.sync_all()?;
    Ok(len)
}

pub fn read(data_dir: &Path, shard: u64, index: u64) -> io::Result<Vec<u8>> {
    fs::read(path(data_dir, shard, index))
}

/// Deletes the snapshot files of `shard` other than `keep` (all older ones when
/// `only_older`). Failing to delete only wastes space, so it is logged, not fatal.
pub fn remove_others(data_dir: &Path, shard: u64, keep: u64, only_older: bool) {
    let Ok(entries) = fs::read_dir(data_dir.join(DIR)) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((file_shard, rest)) = name.split_once('-') else { continue };
        let index = rest.strip_suffix(".snap").or_else(|| rest.strip_suffix(".snap.tmp"));
        let (Ok(file_shard), Some(Ok(index))) =
            (file_shard.parse::<u64>(), index.map(str::parse::<u64>))
        else {
            continue;
        };
        if file_shard == shard && index != keep && (!only_older || index < keep) {
            if let Err(error) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), %error, "cannot remove an old snapshot");
            }
        }
    }
}

/// The record as the shared log stores it: a snapshot's data lives in its own file.
pub fn without_data(record: &Record) -> Option<Record> {
    let strip = |snapshot: &settle_replica::Snapshot| {
        let mut stripped = snapshot.clone();
        stripped.data = Default::default();
        stripped
    };
    match record {
        Record::Checkpoint { snapshot, keep_from } => {
            Some(Record::Checkpoint { snapshot: strip(snapshot), keep_from: *keep_from })
        }
        Record::InstalledSnapshot(snapshot) => Some(Record::InstalledSnapshot(strip(snapshot))),
        _ => None,
    }
}
