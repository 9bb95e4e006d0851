//! The Raft log as this replica knows it, in memory: raft-rs's [`Storage`].
//!
//! It may run ahead of the disk: entries are appended here when raft-rs hands them out,
//! and told durable to raft-rs only after the shell's fsync (`Replica::persisted`). It
//! holds the latest snapshot in full (metadata and ledger bytes) so that a lagging
//! follower can be sent it, and the entries after the snapshot's index (or a little
//! before it, so that a follower just behind needs no snapshot).
//!
//! Touches nothing but itself.

use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

/// Reads back the data of the snapshot at an index, which the shell stored (a file).
#[derive(Clone)]
pub struct SnapshotLoader(pub Arc<dyn Fn(u64) -> std::io::Result<Vec<u8>> + Send + Sync>);

impl std::fmt::Debug for SnapshotLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotLoader")
    }
}

#[derive(Clone, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot: its index is the newest state this replica can hand out.
    snapshot: Snapshot,
    /// Entries `first_index()..=last_index()`, contiguous. `entries[0].index - 1` is the
    /// compaction point, whose term is `compacted_term`.
    entries: Vec<Entry>,
    /// About how many bytes `entries` take (kept as they change: asked for often).
    held_bytes: u64,
    compacted_index: u64,
    compacted_term: u64,
    /// Set when raft-rs asked for a snapshot this log cannot give (older than asked, or
    /// made before the peer it is for joined: raft-rs refuses a snapshot whose
    /// configuration does not name it). The replica then checkpoints at once.
    snapshot_wanted: std::cell::Cell<bool>,
    /// When set, the latest snapshot's data is not kept in memory once the shell has
    /// stored it: it is read back when a follower needs it (rarely; it can be large).
    loader: Option<SnapshotLoader>,
}

impl LogStore {
    /// An empty log for a new group whose first configuration is `conf_state`.
    pub fn new(conf_state: ConfState) -> Self {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().set_conf_state(conf_state.clone());
        LogStore { conf_state, snapshot, ..Default::default() }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Keep snapshot data out of memory from now on, reading it back with `loader`.
    pub fn set_loader(&mut self, loader: SnapshotLoader) {
        self.loader = Some(loader);
        self.drop_snapshot_data();
    }

    /// Drops the latest snapshot's data from memory if it can be read back.
    pub fn drop_snapshot_data(&mut self) {
        if self.loader.is_some() {
            self.snapshot.data = Default::default();
        }
    }

    /// Gives the latest snapshot its data, which the shell stored apart from the log.
    pub fn attach_snapshot_data(&mut self, data: Vec<u8>) {
        assert!(self.snapshot.data.is_empty(), "the snapshot has its data");
        self.snapshot.data = data.into();
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// The entries held, `first()..=last()`.
    pub fn held_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// About how many bytes the entries held take.
    pub fn entry_bytes(&self) -> u64 {
        debug_assert_eq!(self.held_bytes, self.entries.iter().map(size_of_entry).sum::<u64>());
        self.held_bytes
    }

    /// The first index from which the entries up to `index` take at most `bytes` (the
    /// entries a checkpoint at `index` keeps for followers just behind, by size).
    pub fn first_within(&self, index: u64, bytes: u64) -> u64 {
        let mut total = 0;
        let mut first = index + 1;
        for entry in self.entries.iter().rev().skip_while(|e| e.index > index) {
            total += size_of_entry(entry);
            if total > bytes {
                break;
            }
            first = entry.index;
        }
        first
    }

    /// Whether raft-rs asked for a snapshot newer than the latest (and clears the ask).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    pub fn first(&self) -> u64 {
        self.compacted_index + 1
    }

    pub fn last(&self) -> u64 {
        self.entries.last().map_or(self.compacted_index, |entry| entry.index)
    }

    /// Appends `entries`, replacing any of ours at or after the first one's index (a
    /// new leader's log wins over what was never committed).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(first.index > self.compacted_index, "append below the compaction point");
        assert!(
            first.index <= self.last() + 1,
            "gap in the log: {} after {}",
            first.index,
            self.last()
        );
        let keep = (first.index - self.first()) as usize;
        let replaced: u64 =
            self.entries[keep.min(self.entries.len())..].iter().map(size_of_entry).sum();
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        self.held_bytes =
            self.held_bytes - replaced + entries.iter().map(size_of_entry).sum::<u64>();
        debug_assert!(self.entries.windows(2).all(|w| w[1].index == w[0].index + 1));
    }

    /// Installs a snapshot received from the leader: the state it holds replaces the
    /// whole log.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.entries.clear();
        self.held_bytes = 0;
        self.compacted_index = meta.index;
        self.compacted_term = meta.term;
        self.conf_state = meta.get_conf_state().clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.snapshot = snapshot;
    }

    /// Records a snapshot of this replica's own applied state, and drops the entries
    /// before `keep_from` (at most through the snapshot's index).
    pub fn checkpoint(&mut self, snapshot: Snapshot, keep_from: u64) {
        let index = snapshot.get_metadata().index;
        assert!(index >= self.snapshot.get_metadata().index, "snapshots only move forward");
        assert!(index <= self.last(), "a checkpoint of entries this log holds");
        self.snapshot = snapshot;
        self.compact(keep_from.min(index + 1));
    }

    /// Drops the entries before `index`.
    fn compact(&mut self, index: u64) {
        if index <= self.first() {
            return;
        }
        let drop = (index - self.first()) as usize;
        let last_dropped = &self.entries[drop - 1];
        self.compacted_index = last_dropped.index;
        self.compacted_term = last_dropped.term;
        let dropped: u64 = self.entries[..drop].iter().map(size_of_entry).sum();
        self.held_bytes -= dropped;
        self.entries.drain(..drop);
    }

    fn entry(&self, index: u64) -> Option<&Entry> {
        index.checked_sub(self.first()).and_then(|offset| self.entries.get(offset as usize))
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last() + 1, "entries beyond the log: {high} > {}", self.last() + 1);
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        let mut out = Vec::new();
        for index in low..high {
            let entry = self.entry(index).expect("within the log");
            size += (entry.data.len() + entry.context.len() + 24) as u64;
            // Always at least one entry, as the trait requires.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.compacted_index {
            return Ok(self.compacted_term);
        }
        if index < self.compacted_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry(index)
            .map(|entry| entry.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = self.snapshot.get_metadata();
        let conf = meta.get_conf_state();
        let names_peer = [&conf.voters, &conf.learners, &conf.voters_outgoing, &conf.learners_next]
            .iter()
            .any(|ids| ids.contains(&to));
        if meta.index < request_index || !names_peer {
            // Not yet: a checkpoint is taken now, and raft-rs asks again.
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut snapshot = self.snapshot.clone();
        if snapshot.data.is_empty() && meta.index > 0 {
            let Some(loader) = &self.loader else {
                panic!("the snapshot at {} has no data and no way to read it", meta.index)
            };
            match (loader.0)(meta.index) {
                Ok(data) => snapshot.data = data.into(),
                // Reported by the shell's own checks on its files; raft-rs asks again.
                Err(_) => {
                    return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
                }
            }
        }
        Ok(snapshot)
    }
}

/// What an entry takes, about: its payload and a fixed overhead.
fn size_of_entry(entry: &Entry) -> u64 {
    (entry.data.len() + entry.context.len() + 32) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    #[test]
    fn append_replaces_the_suffix_and_compaction_keeps_terms() {
        let mut log = LogStore::new(ConfState::default());
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        log.append(&[entry(3, 2), entry(4, 2)]);
        assert_eq!(log.term(3).unwrap(), 2);
        assert_eq!(log.last(), 4);
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 3;
        snapshot.mut_metadata().term = 2;
        log.checkpoint(snapshot, 3);
        assert_eq!(log.first(), 3);
        assert_eq!(log.term(2).unwrap(), 1, "the compaction point keeps its term");
        assert!(matches!(log.term(1), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(log.entries(2, 4, None, GetEntriesContext::empty(false)).is_err());
        assert_eq!(log.entries(3, 5, None, GetEntriesContext::empty(false)).unwrap().len(), 2);
        assert!(log.snapshot(4, 2).is_err(), "a snapshot older than asked is not given");
    }
}
