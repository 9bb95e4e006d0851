//! The write-ahead log: every request batch that changes state, in execution order.
//!
//! The log is a directory of segment files named by the op number of their first
//! record (`00000000000000000001.wal`); a new segment starts past
//! [`SEGMENT_BYTES_MAX`]. A record is a 48-byte header and a body: the events, each
//! compact (`settle_ledger::compact`: zero bytes left out, so a typical transfer takes a
//! fraction of its 128 bytes of log, hashing, page cache and fsync), then zeros up to
//! a multiple of 16 bytes (so every record starts at a multiple of 16):
//!
//! | bytes  | field                                                      |
//! |--------|------------------------------------------------------------|
//! | 0..4   | magic `SWAL`                                               |
//! | 4..6   | format version (2)                                         |
//! | 6      | operation (1 create_accounts, 2 create_transfers, 3 pulse) |
//! | 7      | reserved (0)                                               |
//! | 8..12  | body length in bytes (a multiple of 16)                    |
//! | 12..16 | event count                                                |
//! | 16..24 | op: sequence number, the previous record's + 1             |
//! | 24..32 | timestamp handed to the ledger for this batch              |
//! | 32..48 | checksum: BLAKE3 of header (this field zeroed) and body, first 16 bytes |
//!
//! Version 1 records (bodies of whole 128-byte events, bytes 12..16 zero) are still
//! read, so a log written by an earlier build replays.
//!
//! Replaying the records through the ledger, in order, with their timestamps, rebuilds
//! the state exactly (the ledger is deterministic), so results need not be logged.
//!
//! Only the newest segment can hold records that are not durable: a full segment is
//! synced before the next one is created.
//!
//! Recovery ([`recover`]) first deletes, unread, the segments whose every record the
//! checkpoint covers, then reads the rest. A record that fails its checks at the very
//! end of the log is a torn write (the process died mid-write, before the fsync that
//! would have acknowledged it): the tail is truncated. A bad record followed by any
//! valid record, or a bad record in a segment that is not the last, is corruption of
//! data that may have been acknowledged: recovery refuses with an error naming the file
//! and offset, and changes nothing.
//!
//! Known limit: a last record damaged on disk *after* its fsync (bit rot) looks exactly
//! like a torn write and is cut, losing that one acknowledged batch. Telling the two
//! apart needs redundant headers or a durable "synced through op" marker.
//!
//! Known limit: "followed by any valid record" searches the bytes after the bad record,
//! and those include client-chosen event fields, so a client could plant a
//! well-formed record there; if a crash then tore that very batch, the start would be
//! refused instead of the tail cut (availability, never wrong data). A checksum keyed
//! per log would close this.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use settle_ledger::compact::{self, COMPACT_SIZE_MAX};
use settle_ledger::RECORD_SIZE;

pub const HEADER_SIZE: usize = 48;
const MAGIC: &[u8; 4] = b"SWAL";
const VERSION: u16 = 2;
/// A segment is closed once it grows past this size.
pub const SEGMENT_BYTES_MAX: u64 = 256 << 20;
/// Largest body a record may have: one full batch of events that do not shrink at all.
pub const BODY_BYTES_MAX: usize = (settle_ledger::BATCH_EVENTS_MAX * COMPACT_SIZE_MAX + 15) & !15;
/// Every record starts at a multiple of this (it lets recovery look for a valid record
/// after a bad one without trying every byte).
const ALIGN: usize = 16;

/// What a record asks the ledger to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    CreateAccounts = 1,
    CreateTransfers = 2,
    /// Expire pending transfers at the record's timestamp (no events).
    Pulse = 3,
}

impl Operation {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Operation::CreateAccounts),
            2 => Some(Operation::CreateTransfers),
            3 => Some(Operation::Pulse),
            _ => None,
        }
    }
}

/// One logged batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub op: u64,
    pub timestamp: u64,
    pub operation: Operation,
    /// How many events `body` holds.
    pub count: usize,
    /// The events, compact, concatenated (no padding); checked to decode when read.
    pub body: Vec<u8>,
}

impl Record {
    /// Each event, in its 128-byte encoding, in order.
    pub fn events(&self, visit: impl FnMut(&[u8; RECORD_SIZE])) {
        compact::decode_all(&self.body, self.count, visit)
            .expect("a record's body was checked to decode when it was read");
    }
}

/// Why the log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log I/O error at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "write-ahead log is corrupt at {path} offset {offset}: {reason}; the log goes on after \
         it (later records or segments), so acknowledged data may be damaged. Refusing to \
         start: restore the data directory from a replica or backup"
    )]
    CorruptMiddle { path: PathBuf, offset: u64, reason: &'static str },
    #[error("write-ahead log has a gap: expected op {expected}, found op {found} in {path}")]
    Gap { path: PathBuf, expected: u64, found: u64 },
    #[error("unexpected file in the write-ahead log directory: {path}")]
    StrayFile { path: PathBuf },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_path_buf(), source }
}

/// Encodes a record (header, then `events`, whole 128-byte events, compact) onto `out`.
pub fn encode(operation: Operation, op: u64, timestamp: u64, events: &[u8], out: &mut Vec<u8>) {
    let count = events.len() / RECORD_SIZE;
    assert!(events.len().is_multiple_of(RECORD_SIZE));
    assert!(count <= settle_ledger::BATCH_EVENTS_MAX);
    assert!(operation != Operation::Pulse || events.is_empty());
    let start = out.len();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(operation as u8);
    out.push(0);
    out.extend_from_slice(&[0; 4]); // the body length, once known
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    compact::encode_all(events, out);
    out.resize(start + HEADER_SIZE + (out.len() - start - HEADER_SIZE).next_multiple_of(ALIGN), 0);
    let body_len = out.len() - start - HEADER_SIZE;
    assert!(body_len <= BODY_BYTES_MAX);
    out[start + 8..start + 12].copy_from_slice(&(body_len as u32).to_le_bytes());
    let (header, body) = out[start..].split_at(HEADER_SIZE);
    let checksum = checksum(header, body);
    out[start + 32..start + HEADER_SIZE].copy_from_slice(&checksum);
}

/// BLAKE3 over the header (checksum field as zeros) and the body, truncated to 128 bits.
fn checksum(header: &[u8], body: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&header[..32]);
    hasher.update(&[0; 16]);
    hasher.update(body);
    hasher.finalize().as_bytes()[..16].try_into().expect("16 bytes")
}

/// A header that passed its own checks; the body is still to be verified.
struct Header {
    version: u16,
    operation: Operation,
    body_len: usize,
    count: usize,
    op: u64,
    timestamp: u64,
    checksum: [u8; 16],
}

fn parse_header(bytes: &[u8; HEADER_SIZE]) -> Result<Header, &'static str> {
    if &bytes[0..4] != MAGIC {
        return Err("bad magic");
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let operation = Operation::from_byte(bytes[6]).ok_or("unknown operation")?;
    let body_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4")) as usize;
    let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4")) as usize;
    if bytes[7] != 0 {
        return Err("reserved bytes set");
    }
    let count = match version {
        VERSION if body_len.is_multiple_of(ALIGN) && body_len <= BODY_BYTES_MAX => count,
        1 if count == 0 && body_len.is_multiple_of(RECORD_SIZE) => body_len / RECORD_SIZE,
        VERSION | 1 => return Err("bad body length"),
        _ => return Err("unknown version"),
    };
    if count > settle_ledger::BATCH_EVENTS_MAX {
        return Err("too many events");
    }
    if operation == Operation::Pulse && body_len != 0 {
        return Err("pulse with a body");
    }
    Ok(Header {
        version,
        operation,
        body_len,
        count,
        op: u64::from_le_bytes(bytes[16..24].try_into().expect("8")),
        timestamp: u64::from_le_bytes(bytes[24..32].try_into().expect("8")),
        checksum: bytes[32..48].try_into().expect("16"),
    })
}

/// Reads the record at the reader's position: `Ok(None)` at a clean end of file,
/// `Err(reason)` for anything that is not a whole, valid record.
fn read_record(reader: &mut impl Read) -> Result<Option<Record>, &'static str> {
    let mut header = [0u8; HEADER_SIZE];
    match read_full(reader, &mut header) {
        0 => return Ok(None),
        HEADER_SIZE => {}
        _ => return Err("truncated header"),
    }
    let parsed = parse_header(&header)?;
    let mut body = vec![0u8; parsed.body_len];
    if read_full(reader, &mut body) != parsed.body_len {
        return Err("truncated body");
    }
    if checksum(&header, &body) != parsed.checksum {
        return Err("checksum mismatch");
    }
    if parsed.version == 1 {
        // Whole 128-byte events: make them compact, so every record reads the same way.
        let mut events = Vec::with_capacity(body.len() / 2);
        compact::encode_all(&body, &mut events);
        body = events;
    } else {
        // The events, then zero padding to the alignment, nothing else.
        let mut at = 0;
        for _ in 0..parsed.count {
            at += compact::decode(&body[at..]).map_err(|_| "events that do not decode")?.1;
        }
        if body.len() - at >= ALIGN || body[at..].iter().any(|&b| b != 0) {
            return Err("bytes after the events");
        }
        body.truncate(at);
    }
    Ok(Some(Record {
        op: parsed.op,
        timestamp: parsed.timestamp,
        operation: parsed.operation,
        count: parsed.count,
        body,
    }))
}

/// Reads until `buffer` is full or the input ends; returns how much was read. I/O
/// errors count as the end: recovery then treats what follows as unreadable.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

/// Whether a valid record starts anywhere in `bytes` (at a multiple of 16, the
/// alignment of every record boundary, since headers and events are multiples of 16).
fn valid_record_follows(bytes: &[u8]) -> bool {
    (0..bytes.len()).step_by(16).any(|at| {
        let mut reader = &bytes[at..];
        matches!(read_record(&mut reader), Ok(Some(_)))
    })
}

fn segment_name(first_op: u64) -> String {
    format!("{first_op:020}.wal")
}

/// The log's segments, by first op, ascending.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match name.strip_suffix(".wal").and_then(|stem| stem.parse::<u64>().ok()) {
            Some(first_op) if name.len() == 24 => segments.push((first_op, path)),
            _ => return Err(WalError::StrayFile { path }),
        }
    }
    segments.sort();
    Ok(segments)
}

/// What recovery found: the records after `after_op`, and the log ready to append.
pub struct Recovered {
    pub records: Vec<Record>,
    pub wal: Wal,
    /// Bytes cut from the end of the log (a torn write).
    pub truncated_bytes: u64,
}

/// Reads the log in `dir`, keeping records with op > `after_op` (the checkpoint's), and
/// opens it for appending. See the module docs for torn tails versus corruption.
pub fn recover(dir: &Path, after_op: u64) -> Result<Recovered, WalError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    // Segments whose every record is covered by the checkpoint are not needed: they are
    // deleted unread, so that damage to them, or a gap between them and the rest, cannot
    // stop a start. (A checkpoint normally deletes them itself; a crash can prevent it.)
    if remove_segments_through(dir, after_op)? > 0 {
        tracing::info!(after_op, "removed log segments covered by the checkpoint");
    }
    let segments = segments(dir)?;
    let mut records = Vec::new();
    let mut last_op = after_op;
    let mut expected: Option<u64> = None;
    let mut truncated_bytes = 0;
    // The last segment: its path, its valid length, and the op its next record would get.
    let mut tail: Option<(PathBuf, u64, u64)> = None;
    for (index, (first_op, path)) in segments.iter().enumerate() {
        let is_last = index + 1 == segments.len();
        let bytes = fs::read(path).map_err(io_error(path))?;
        let mut reader = &bytes[..];
        let mut valid_len = 0u64;
        let mut op_in_segment = *first_op;
        loop {
            match read_record(&mut reader) {
                Ok(None) => break,
                Ok(Some(record)) => {
                    if record.op != op_in_segment {
                        return Err(WalError::Gap {
                            path: path.clone(),
                            expected: op_in_segment,
                            found: record.op,
                        });
                    }
                    if let Some(expected) = expected {
                        if record.op != expected {
                            return Err(WalError::Gap {
                                path: path.clone(),
                                expected,
                                found: record.op,
                            });
                        }
                    }
                    expected = Some(record.op + 1);
                    op_in_segment += 1;
                    valid_len = (bytes.len() - reader.len()) as u64;
                    if record.op > after_op {
                        last_op = record.op;
                        records.push(record);
                    }
                }
                Err(reason) => {
                    let rest = &bytes[valid_len as usize..];
                    if !is_last || valid_record_follows(&rest[16.min(rest.len())..]) {
                        return Err(WalError::CorruptMiddle {
                            path: path.clone(),
                            offset: valid_len,
                            reason,
                        });
                    }
                    truncated_bytes = rest.len() as u64;
                    break;
                }
            }
        }
        if is_last {
            tail = Some((path.clone(), valid_len, op_in_segment));
        }
    }
    // Records before the checkpoint may be gone (their segments deleted); records after
    // it must continue it without a gap.
    if let Some(first) = records.first() {
        if first.op != after_op + 1 {
            let path = segments.first().map(|(_, p)| p.clone()).unwrap_or_default();
            return Err(WalError::Gap { path, expected: after_op + 1, found: first.op });
        }
    }
    // Cut a torn tail whatever happens next: a segment left with garbage at its end and
    // followed by a new one would be refused as corrupt on the next start.
    if let (Some((path, valid_len, _)), true) = (&tail, truncated_bytes > 0) {
        let file = OpenOptions::new().write(true).open(path).map_err(io_error(path))?;
        file.set_len(*valid_len).map_err(io_error(path))?;
        file.sync_all().map_err(io_error(path))?;
    }
    let wal = match tail {
        // The last segment continues exactly where the state is (by its own name and
        // records, not by the log as a whole): append to it.
        Some((path, valid_len, segment_next_op)) if segment_next_op == last_op + 1 => {
            let file = OpenOptions::new().write(true).open(&path).map_err(io_error(&path))?;
            Wal::open_segment(dir, path, file, valid_len, last_op + 1)?
        }
        // An empty last segment named for another op (a crash between creating it and
        // writing to it): replace it by one named for the next op.
        Some((path, 0, _)) => {
            fs::remove_file(&path).map_err(io_error(&path))?;
            Wal::create_segment(dir, last_op + 1)?
        }
        // The checkpoint reaches past the log's end (only after a lost tail: the log is
        // durable through the checkpoint before it is written): continue in a new
        // segment, so that ops stay contiguous within every segment.
        _ => Wal::create_segment(dir, last_op + 1)?,
    };
    Ok(Recovered { records, wal, truncated_bytes })
}

/// The log, open for appending. Records are encoded here ([`Wal::encode_next`]) and
/// written and made durable through [`SyncHandle`], which the node runs on its syncer
/// thread (or written here at once with [`Wal::append`]).
pub struct Wal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len: u64,
    next_op: u64,
}

/// A handle that makes everything written to one segment so far durable.
#[derive(Clone)]
pub struct SyncHandle {
    path: PathBuf,
    file: std::sync::Arc<File>,
}

impl SyncHandle {
    /// The segment this handle syncs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fdatasync: returns once every byte written to this segment before the call is on
    /// stable storage.
    pub fn sync(&self) -> Result<(), WalError> {
        self.file.sync_data().map_err(io_error(&self.path))
    }

    /// Writes records encoded by [`Wal::encode_next`] at the end of this segment (the
    /// writer of a log whose records are encoded on another thread: one thread writes,
    /// in encoding order).
    pub fn write(&self, records: &[u8]) -> Result<(), WalError> {
        (&*self.file).write_all(records).map_err(io_error(&self.path))
    }
}

impl Wal {
    fn open_segment(
        dir: &Path,
        path: PathBuf,
        mut file: File,
        len: u64,
        next_op: u64,
    ) -> Result<Wal, WalError> {
        file.seek(SeekFrom::Start(len)).map_err(io_error(&path))?;
        Ok(Wal { dir: dir.to_path_buf(), path, file, len, next_op })
    }

    fn create_segment(dir: &Path, first_op: u64) -> Result<Wal, WalError> {
        let path = dir.join(segment_name(first_op));
        let file =
            OpenOptions::new().create_new(true).write(true).open(&path).map_err(io_error(&path))?;
        sync_dir(dir)?;
        Wal::open_segment(dir, path, file, 0, first_op)
    }

    /// The op number the next record gets.
    pub fn next_op(&self) -> u64 {
        self.next_op
    }

    /// Appends a record from this thread (written to the OS, not yet durable) and
    /// returns its op: [`Wal::encode_next`] and a write, starting the next segment when
    /// this one is full. (The node's executor encodes here and has its syncer write.)
    pub fn append(
        &mut self,
        operation: Operation,
        timestamp: u64,
        body: &[u8],
    ) -> Result<u64, WalError> {
        let mut record = Vec::with_capacity(HEADER_SIZE + body.len());
        let op = match self.encode_next(operation, timestamp, body, &mut record) {
            Some(op) => op,
            None => {
                self.next_segment()?;
                self.encode_next(operation, timestamp, body, &mut record).expect("a new segment")
            }
        };
        self.file.write_all(&record).map_err(io_error(&self.path))?;
        Ok(op)
    }

    /// Encodes the next record onto `out`, for [`SyncHandle::write`] on the current
    /// segment, and returns its op; `None` when the segment is full. Then the caller has
    /// every record encoded so far written, calls [`Wal::next_segment`], and encodes
    /// again.
    pub fn encode_next(
        &mut self,
        operation: Operation,
        timestamp: u64,
        body: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<u64> {
        if self.len >= SEGMENT_BYTES_MAX {
            return None;
        }
        let op = self.next_op;
        let start = out.len();
        encode(operation, op, timestamp, body, out);
        self.len += (out.len() - start) as u64;
        self.next_op += 1;
        Some(op)
    }

    /// Once a full segment's records are all written: makes it durable (a torn record in
    /// a segment that is not the last would read as corruption in the middle), then
    /// starts the next one. Returns its sync handle.
    pub fn next_segment(&mut self) -> Result<SyncHandle, WalError> {
        self.file.sync_data().map_err(io_error(&self.path))?;
        *self = Wal::create_segment(&self.dir, self.next_op)?;
        self.sync_handle()
    }

    /// Starts a new segment at the next op (after a checkpoint, so that older segments
    /// can be deleted whole). Returns the new segment's sync handle.
    pub fn rotate(&mut self) -> Result<SyncHandle, WalError> {
        if self.len > 0 {
            *self = Wal::create_segment(&self.dir, self.next_op)?;
        }
        self.sync_handle()
    }

    /// A handle to sync the current segment from another thread.
    pub fn sync_handle(&self) -> Result<SyncHandle, WalError> {
        let file = self.file.try_clone().map_err(io_error(&self.path))?;
        Ok(SyncHandle { path: self.path.clone(), file: std::sync::Arc::new(file) })
    }
}

/// Deletes every segment of the log in `dir` whose records all have op <= `op` (covered
/// by a durable checkpoint). Safe while the log is being appended to: the newest segment
/// is never deleted, and appends only go to ops above `op`.
pub fn remove_segments_through(dir: &Path, op: u64) -> Result<usize, WalError> {
    let segments = segments(dir)?;
    let mut removed = 0;
    for window in segments.windows(2) {
        let ((_, path), (next_first_op, _)) = (&window[0], &window[1]);
        if *next_first_op <= op + 1 {
            fs::remove_file(path).map_err(io_error(path))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// fsync a directory, so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(events: usize, seed: u8) -> Vec<u8> {
        (0..events * RECORD_SIZE).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// A log with `count` records of 1..=3 events each; returns the segment's path.
    fn write_log(dir: &Path, count: u64) -> PathBuf {
        let mut wal = recover(dir, 0).unwrap().wal;
        for op in 1..=count {
            let logged = wal
                .append(Operation::CreateTransfers, op * 10, &body(op as usize % 3 + 1, op as u8))
                .unwrap();
            assert_eq!(logged, op);
        }
        wal.sync_handle().unwrap().sync().unwrap();
        dir.join(segment_name(1))
    }

    /// Where each record of a segment's bytes starts.
    fn record_starts(bytes: &[u8]) -> Vec<usize> {
        let mut reader = bytes;
        let mut starts = Vec::new();
        while !reader.is_empty() {
            starts.push(bytes.len() - reader.len());
            read_record(&mut reader).unwrap().unwrap();
        }
        starts
    }

    /// A record as a version 1 build wrote it: whole 128-byte events.
    fn encode_v1(operation: Operation, op: u64, timestamp: u64, events: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&[operation as u8, 0]);
        out.extend_from_slice(&(events.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&op.to_le_bytes());
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(events);
        let checksum = checksum(&out[..HEADER_SIZE], &out[HEADER_SIZE..]);
        out[32..HEADER_SIZE].copy_from_slice(&checksum);
        out
    }

    #[test]
    fn events_are_compact_and_a_version_1_log_still_replays() {
        // A transfer-like event: a few small fields, the rest zero.
        let mut event = [0u8; RECORD_SIZE];
        event[0] = 42;
        event[16] = 7;
        event[48] = 1;
        let events = event.repeat(100);
        let mut compact = Vec::new();
        encode(Operation::CreateTransfers, 1, 10, &events, &mut compact);
        assert!(compact.len() < events.len() / 4, "{} bytes", compact.len());
        assert!(compact.len().is_multiple_of(ALIGN));

        let dir = tempfile::tempdir().unwrap();
        let mut old = encode_v1(Operation::CreateTransfers, 1, 10, &events);
        old.extend(encode_v1(Operation::Pulse, 2, 20, &[]));
        fs::write(dir.path().join(segment_name(1)), &old).unwrap();
        let mut recovered = recover(dir.path(), 0).unwrap();
        assert_eq!(recovered.records.len(), 2);
        let mut back = Vec::new();
        recovered.records[0].events(|e| back.extend_from_slice(e));
        assert_eq!(back, events);
        // New records follow the old ones in the same segment.
        recovered.wal.append(Operation::CreateTransfers, 30, &events).unwrap();
        recovered.wal.sync_handle().unwrap().sync().unwrap();
        drop(recovered);
        assert_eq!(recover(dir.path(), 0).unwrap().records.len(), 3);
    }

    #[test]
    fn a_checksummed_body_that_does_not_decode_is_refused() {
        // Forged (or written by a bug): the checksum matches, the events do not decode,
        // or something follows them.
        let mut event = [0u8; RECORD_SIZE];
        event[0] = 1;
        for damage in
            [|b: &mut Vec<u8>| b[HEADER_SIZE] = 0x0F, |b: &mut Vec<u8>| b[HEADER_SIZE + 9] = 1]
        {
            let mut record = Vec::new();
            encode(Operation::CreateTransfers, 1, 10, &event, &mut record);
            damage(&mut record);
            let checksum = checksum(&record[..HEADER_SIZE], &record[HEADER_SIZE..]);
            record[32..HEADER_SIZE].copy_from_slice(&checksum);
            assert!(read_record(&mut &record[..]).is_err());
        }
    }

    #[test]
    fn records_come_back_in_order_with_their_bodies() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 5);
        let recovered = recover(dir.path(), 2).unwrap();
        let ops: Vec<u64> = recovered.records.iter().map(|r| r.op).collect();
        assert_eq!(ops, [3, 4, 5]);
        let mut events = Vec::new();
        recovered.records[0].events(|event| events.extend_from_slice(event));
        assert_eq!(events, body(1, 3));
        assert_eq!(recovered.records[0].timestamp, 30);
        assert_eq!(recovered.wal.next_op(), 6);
        assert_eq!(recovered.truncated_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_truncated_at_every_cut_point() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        let full = fs::read(&path).unwrap();
        let last_start = {
            let mut reader = &full[..];
            for _ in 0..2 {
                read_record(&mut reader).unwrap().unwrap();
            }
            full.len() - reader.len()
        };
        for cut in last_start..full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let recovered = recover(dir.path(), 0).unwrap();
            assert_eq!(recovered.records.len(), 2, "cut at {cut}");
            assert_eq!(recovered.truncated_bytes, (cut - last_start) as u64);
            assert_eq!(fs::metadata(&path).unwrap().len(), last_start as u64);
            // The log continues after the surviving records.
            assert_eq!(recovered.wal.next_op(), 3);
        }
    }

    #[test]
    fn a_corrupt_record_followed_by_valid_ones_is_refused_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 4);
        let mut bytes = fs::read(&path).unwrap();
        // Flip one byte inside the second record's body.
        let second = record_starts(&bytes)[1];
        bytes[second + HEADER_SIZE + 5] ^= 1;
        fs::write(&path, &bytes).unwrap();
        match recover(dir.path(), 0) {
            Err(WalError::CorruptMiddle { offset, .. }) => assert_eq!(offset, second as u64),
            other => panic!("expected CorruptMiddle, got {:?}", other.map(|r| r.records.len())),
        }
        assert_eq!(fs::read(&path).unwrap(), bytes, "refusal must not modify the log");
    }

    #[test]
    fn every_single_byte_flip_is_either_refused_or_cut_as_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        let clean = fs::read(&path).unwrap();
        for index in 0..clean.len() {
            let mut bytes = clean.clone();
            bytes[index] ^= 0x10;
            fs::write(&path, &bytes).unwrap();
            match recover(dir.path(), 0) {
                // A flip in the last record looks like a torn write: it is cut, and
                // only whole, verified records before it survive.
                Ok(recovered) => {
                    assert_eq!(recovered.records.len(), 2, "flip at {index}");
                    assert!(recovered.truncated_bytes > 0);
                }
                Err(WalError::CorruptMiddle { .. }) => {}
                Err(other) => panic!("flip at {index}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn a_gap_after_the_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        // A checkpoint inside the log: replay continues after it.
        assert_eq!(recover(dir.path(), 1).unwrap().records.len(), 2);
        // A checkpoint past the log's end: nothing to replay, a new segment continues it.
        let recovered = recover(dir.path(), 5).unwrap();
        assert!(recovered.records.is_empty());
        assert_eq!(recovered.wal.next_op(), 6);
        let dir2 = tempfile::tempdir().unwrap();
        let mut wal = Wal::create_segment(dir2.path(), 7).unwrap();
        wal.append(Operation::Pulse, 1, &[]).unwrap();
        assert!(matches!(
            recover(dir2.path(), 3),
            Err(WalError::Gap { expected: 4, found: 7, .. })
        ));
    }

    #[test]
    fn stray_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1);
        fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        assert!(matches!(recover(dir.path(), 0), Err(WalError::StrayFile { .. })));
    }

    #[test]
    fn segments_covered_by_the_checkpoint_are_dropped_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        // A later segment starting at op 6: ops 4..5 are only in a checkpoint at op 5.
        let mut later = Wal::create_segment(dir.path(), 6).unwrap();
        later.append(Operation::Pulse, 60, &[]).unwrap();
        // Damage the covered segment: it must not matter.
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER_SIZE + 7] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let recovered = recover(dir.path(), 5).unwrap();
        assert_eq!(recovered.records.iter().map(|r| r.op).collect::<Vec<_>>(), [6]);
        assert!(!path.exists(), "the covered segment is gone");
        drop(recovered);
        // And the directory stays startable.
        assert_eq!(recover(dir.path(), 5).unwrap().wal.next_op(), 7);
    }

    #[test]
    fn an_empty_last_segment_named_for_another_op_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        // A crash right after creating a segment named for op 9.
        drop(Wal::create_segment(dir.path(), 9).unwrap());
        let mut recovered = recover(dir.path(), 0).unwrap();
        assert_eq!(recovered.wal.next_op(), 4);
        recovered.wal.append(Operation::Pulse, 40, &[]).unwrap();
        recovered.wal.sync_handle().unwrap().sync().unwrap();
        drop(recovered);
        // Appending went to a segment named for op 4, so the log reads back whole.
        let again = recover(dir.path(), 0).unwrap();
        assert_eq!(again.records.iter().map(|r| r.op).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(!dir.path().join(segment_name(9)).exists());
    }
}
