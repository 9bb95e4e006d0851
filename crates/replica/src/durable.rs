//! What a replica writes to disk, and how a restarted replica reads it back.
//!
//! A replica's durable state is a sequence of [`Record`]s appended to a log, which the
//! groups (shards) of one node share: each record names its group. A record is framed as
//! `len: u32 LE | len_check: u32 LE | group: u64 LE | kind: u8 | payload | checksum: 16
//! bytes`:
//! `len_check` guards the length on its own (a damaged length would otherwise make the
//! rest of the log look like one torn record), and the checksum is BLAKE3 of group,
//! kind and payload, truncated to 128 bits. [`decode_all`] reads records back. A damaged record
//! followed by no valid record is the write a crash tore (records are only appended, so
//! nothing valid can follow a torn one) and is cut; a damaged record with a valid one
//! anywhere after it is corruption, and the replica refuses to start: it must not vote
//! or ack with a log it cannot trust. (Damage to the very last record looks exactly like
//! a torn write; the checksum cannot tell them apart.)
//!
//! [`recover`] folds the records into the in-memory [`LogStore`] a replica restarts
//! from. Touches nothing but bytes in memory: the shell owns the files.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};

use crate::log_store::LogStore;

/// One durable change to a replica's state.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    HardState(HardState),
    /// Entries to append, replacing any at or after the first one's index.
    Entries(Vec<Entry>),
    /// A snapshot that replaces the whole log: received from the leader, or the base of
    /// a log rewritten from memory.
    InstalledSnapshot(Snapshot),
    /// A snapshot of this replica's own applied state; entries before `keep_from` are
    /// no longer needed.
    Checkpoint {
        snapshot: Snapshot,
        keep_from: u64,
    },
    /// A Paxos Commit acceptor's state for one transaction (`settle_commit::codec`),
    /// kept beside the group's log: it is this replica's own, not replicated by Raft.
    /// The latest record of a transaction wins.
    Acceptor(Vec<u8>),
}

/// Bytes that cannot be a replica's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptLog {
    #[error("record at byte {offset} is damaged ({reason}) and {behind} bytes follow it: the log is corrupt, not torn")]
    Middle { offset: usize, reason: &'static str, behind: usize },
}

const CHECKSUM_SIZE: usize = 16;
const HEADER_SIZE: usize = 8;
const FRAME_OVERHEAD: usize = HEADER_SIZE + 8 + 1 + CHECKSUM_SIZE;
/// No record is larger: a length above it is damage, not a record.
pub const RECORD_BYTES_MAX: usize = 1 << 30;

const KIND_HARD_STATE: u8 = 1;
const KIND_ENTRIES: u8 = 2;
const KIND_INSTALLED_SNAPSHOT: u8 = 3;
const KIND_CHECKPOINT: u8 = 4;
const KIND_ACCEPTOR: u8 = 5;

/// Appends `record` of `group`, framed and checksummed, to `out`.
pub fn encode(group: u64, record: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_SIZE]);
    put_u64(out, group);
    let kind = match record {
        Record::HardState(hs) => {
            out.push(KIND_HARD_STATE);
            put_hard_state(out, hs);
            KIND_HARD_STATE
        }
        Record::Entries(entries) => {
            out.push(KIND_ENTRIES);
            put_u64(out, entries.len() as u64);
            for entry in entries {
                put_entry(out, entry);
            }
            KIND_ENTRIES
        }
        Record::InstalledSnapshot(snapshot) => {
            out.push(KIND_INSTALLED_SNAPSHOT);
            put_snapshot(out, snapshot);
            KIND_INSTALLED_SNAPSHOT
        }
        Record::Checkpoint { snapshot, keep_from } => {
            out.push(KIND_CHECKPOINT);
            put_u64(out, *keep_from);
            put_snapshot(out, snapshot);
            KIND_CHECKPOINT
        }
        Record::Acceptor(bytes) => {
            out.push(KIND_ACCEPTOR);
            put_bytes(out, bytes);
            KIND_ACCEPTOR
        }
    };
    debug_assert_eq!(out[start + HEADER_SIZE + 8], kind);
    let checksum = blake3::hash(&out[start + HEADER_SIZE..]);
    out.extend_from_slice(&checksum.as_bytes()[..CHECKSUM_SIZE]);
    let len = out.len() - start;
    assert!(len <= RECORD_BYTES_MAX, "record of {len} bytes");
    let len = len as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER_SIZE].copy_from_slice(&length_check(len).to_le_bytes());
}

fn length_check(len: u32) -> u32 {
    let hash = blake3::hash(&len.to_le_bytes());
    u32::from_le_bytes(hash.as_bytes()[..4].try_into().expect("4 bytes"))
}

/// Every record in `bytes` with its group, and how many bytes they fill (the rest is a
/// torn tail to cut). `verify` is only ever false in the simulator's deliberately broken
/// builds.
pub fn decode_all(bytes: &[u8], verify: bool) -> Result<(Vec<(u64, Record)>, usize), CorruptLog> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match decode_one(&bytes[offset..], verify) {
            Ok((record, len)) => {
                records.push(record);
                offset += len;
            }
            Err(reason) => {
                let valid_after = (offset + 1..bytes.len())
                    .any(|later| decode_one(&bytes[later..], verify).is_ok());
                if !valid_after {
                    return Ok((records, offset));
                }
                let behind = bytes.len() - offset;
                return Err(CorruptLog::Middle { offset, reason, behind });
            }
        }
    }
    Ok((records, offset))
}

/// One record at the start of `bytes` and its length, or what is wrong with it.
fn decode_one(bytes: &[u8], verify: bool) -> Result<((u64, Record), usize), &'static str> {
    let Some(header) = bytes.get(..HEADER_SIZE) else {
        return Err("shorter than a header");
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let check = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if verify && check != length_check(len) {
        return Err("length fails its check");
    }
    let len = len as usize;
    if !(FRAME_OVERHEAD..=RECORD_BYTES_MAX).contains(&len) {
        return Err("impossible length");
    }
    if len > bytes.len() {
        return Err("shorter than its length");
    }
    let body = &bytes[HEADER_SIZE..len - CHECKSUM_SIZE];
    let checksum = &bytes[len - CHECKSUM_SIZE..len];
    if verify && blake3::hash(body).as_bytes()[..CHECKSUM_SIZE] != *checksum {
        return Err("checksum mismatch");
    }
    let group = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let mut reader = Reader { bytes: &body[9..] };
    let record = match body[8] {
        KIND_HARD_STATE => reader.hard_state().map(Record::HardState),
        KIND_ENTRIES => reader.u64().and_then(|count| {
            let count = usize::try_from(count).ok().filter(|&c| c <= reader.bytes.len())?;
            (0..count).map(|_| reader.entry()).collect::<Option<Vec<_>>>().map(Record::Entries)
        }),
        KIND_INSTALLED_SNAPSHOT => reader.snapshot().map(Record::InstalledSnapshot),
        KIND_CHECKPOINT => reader.u64().and_then(|keep_from| {
            reader.snapshot().map(|snapshot| Record::Checkpoint { snapshot, keep_from })
        }),
        KIND_ACCEPTOR => reader.bytes().map(Record::Acceptor),
        _ => None,
    };
    match record {
        Some(record) if reader.bytes.is_empty() => Ok(((group, record), len)),
        _ => Err("malformed payload"),
    }
}

/// The log a replica restarts from: `records` applied in order to the log of a group
/// whose first configuration was `initial`.
pub fn recover(initial: ConfState, records: impl IntoIterator<Item = Record>) -> LogStore {
    let mut log = LogStore::new(initial);
    for record in records {
        match record {
            Record::HardState(hs) => log.set_hard_state(hs),
            Record::Entries(entries) => {
                // Entries at or below the compaction point were covered by a checkpoint
                // written after them; skip what is already covered.
                let first_new = entries.partition_point(|e| e.index < log.first());
                log.append(&entries[first_new..]);
            }
            Record::InstalledSnapshot(snapshot) => log.install_snapshot(snapshot),
            Record::Checkpoint { snapshot, keep_from } => {
                let conf_state = snapshot.get_metadata().get_conf_state().clone();
                log.checkpoint(snapshot, keep_from);
                log.set_conf_state(conf_state);
            }
            // Not the log's: the shell rebuilds its acceptor from these.
            Record::Acceptor(_) => {}
        }
    }
    log
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    put_u64(out, ids.len() as u64);
    ids.iter().for_each(|&id| put_u64(out, id));
}

fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    put_u64(out, hs.term);
    put_u64(out, hs.vote);
    put_u64(out, hs.commit);
}

fn put_entry(out: &mut Vec<u8>, entry: &Entry) {
    put_u64(out, entry.get_entry_type() as u64);
    put_u64(out, entry.term);
    put_u64(out, entry.index);
    put_bytes(out, &entry.data);
    put_bytes(out, &entry.context);
}

fn put_snapshot(out: &mut Vec<u8>, snapshot: &Snapshot) {
    let meta = snapshot.get_metadata();
    put_u64(out, meta.index);
    put_u64(out, meta.term);
    let conf = meta.get_conf_state();
    put_ids(out, &conf.voters);
    put_ids(out, &conf.learners);
    put_ids(out, &conf.voters_outgoing);
    put_ids(out, &conf.learners_next);
    out.push(u8::from(conf.auto_leave));
    put_bytes(out, &snapshot.data);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.u64()?).ok()?;
        self.take(len).map(<[u8]>::to_vec)
    }

    fn ids(&mut self) -> Option<Vec<u64>> {
        let count = usize::try_from(self.u64()?).ok().filter(|&c| c <= self.bytes.len() / 8)?;
        (0..count).map(|_| self.u64()).collect()
    }

    fn hard_state(&mut self) -> Option<HardState> {
        Some(HardState {
            term: self.u64()?,
            vote: self.u64()?,
            commit: self.u64()?,
            ..Default::default()
        })
    }

    fn entry(&mut self) -> Option<Entry> {
        let entry_type = match self.u64()? {
            0 => EntryType::EntryNormal,
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            _ => return None,
        };
        let mut entry = Entry { term: self.u64()?, index: self.u64()?, ..Default::default() };
        entry.set_entry_type(entry_type);
        entry.data = self.bytes()?.into();
        entry.context = self.bytes()?.into();
        Some(entry)
    }

    fn snapshot(&mut self) -> Option<Snapshot> {
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = self.u64()?;
        meta.term = self.u64()?;
        let conf = meta.mut_conf_state();
        conf.voters = self.ids()?;
        conf.learners = self.ids()?;
        conf.voters_outgoing = self.ids()?;
        conf.learners_next = self.ids()?;
        conf.auto_leave = match self.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        snapshot.data = self.bytes()?.into();
        Some(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut entry = Entry { term: 2, index: 1, ..Default::default() };
        entry.data = b"write".to_vec().into();
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 1;
        snapshot.mut_metadata().term = 2;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot.data = b"ledger".to_vec().into();
        vec![
            Record::HardState(HardState { term: 2, vote: 1, commit: 1, ..Default::default() }),
            Record::Entries(vec![entry]),
            Record::Checkpoint { snapshot: snapshot.clone(), keep_from: 1 },
            Record::InstalledSnapshot(snapshot),
        ]
    }

    fn encoded(records: &[Record]) -> Vec<u8> {
        let mut bytes = Vec::new();
        records.iter().for_each(|r| encode(7, r, &mut bytes));
        bytes
    }

    #[test]
    fn records_round_trip() {
        let records = sample();
        let bytes = encoded(&records);
        let grouped = records.into_iter().map(|r| (7, r)).collect();
        assert_eq!(decode_all(&bytes, true), Ok((grouped, bytes.len())));
    }

    #[test]
    fn a_torn_last_record_is_cut_at_every_length() {
        let records = sample();
        let whole = encoded(&records[..3]);
        let bytes = encoded(&records);
        let grouped: Vec<_> = records[..3].iter().map(|r| (7, r.clone())).collect();
        for cut in whole.len()..bytes.len() {
            assert_eq!(decode_all(&bytes[..cut], true), Ok((grouped.clone(), whole.len())));
        }
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_refused_and_at_the_end_is_cut() {
        let records = sample();
        let bytes = encoded(&records);
        let first_len = encoded(&records[..1]).len();
        for position in 0..first_len {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            assert!(decode_all(&damaged, true).is_err(), "flip at {position} accepted");
        }
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(decode_all(&damaged, true).map(|(r, _)| r.len()), Ok(3));
    }
}
