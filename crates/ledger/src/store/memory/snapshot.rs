//! Snapshots of a [`MemStore`]: the whole state as one checksummed byte stream, for
//! checkpoints (recovery without replaying the whole log) and, later, for catching up
//! a lagging replica.
//!
//! Layout (little-endian): magic `SETLSNAP`, version u32, commit timestamp u64, then
//! sections, each a u64 count followed by its items: accounts (128-byte records, in
//! timestamp order), transfers (likewise), pending states (id u128, state u8; by id),
//! expiry entries (expires_at u64, id u128), failed ids (u128, ascending), history
//! (account id u128, count u64, 128-byte balances), reservations (128-byte transfer,
//! side u8, state u8), and (version 2) an extension: opaque bytes of the layer above the
//! ledger (the commit protocols' records), as a count and the bytes; last, the BLAKE3
//! hash of everything before it (32 bytes). From version 3, the account and transfer
//! records are compact (`crate::compact`: a snapshot of the bench's ten million
//! transfers is a fifth of the size to write, hash, send and read). From version 4, the
//! header's commit timestamp is followed by a *transfers file tag* (u64; `u64::MAX` for
//! none). With a tag, the snapshot refers to the node's own transfers file instead of
//! holding its records (a checkpoint then writes what changed, not the whole history):
//! the transfers section is the count, then the number of chunks `C`, their end
//! offsets (u64 each; the first starts at 0), their checksums (16 bytes each; see
//! `table.rs`), then the records after them, compact. Such a snapshot reads only into a
//! store over that file (`MemStore::with_existing_transfer_file`); one sent to another
//! replica is first made whole ([`expand_snapshot`]). Versions 1 (no extension), 2
//! (records whole) and 3 (no tag) still read.
//!
//! Reading verifies the hash over the whole stream *before* interpreting any of it, and
//! then validates every structural rule (orders, uniqueness, references), so a corrupt
//! or hostile snapshot yields an error, never a panic or a wrong state.

use std::io::{self, Read, Write};

use super::table::{checksum, FileChunks, CHUNK_RECORDS};
use super::MemStore;
use crate::ledger::Side;
use crate::store::{PendingState, Reservation, ReservationState, Store};
use crate::types::{Account, AccountBalance, Transfer, RECORD_SIZE};

const MAGIC: &[u8; 8] = b"SETLSNAP";
const VERSION: u32 = 4;
const HASH_SIZE: usize = 32;
/// The header: magic, version, commit timestamp, and (version 4) the file tag.
const HEADER_SIZE: usize = 8 + 4 + 8 + 8;
/// The file tag of a snapshot that holds its records.
const NO_FILE: u64 = u64::MAX;

/// Why a snapshot could not be read.
#[derive(Debug)]
pub enum SnapshotError {
    Io(io::Error),
    /// The stream is shorter than its header says, or than a snapshot can be.
    Truncated,
    /// The checksum over the stream does not match: the bytes are corrupt.
    ChecksumMismatch,
    /// Structurally invalid despite a valid checksum (a bug, or a forged file).
    Invalid(&'static str),
    UnsupportedVersion(u32),
    /// The transfers file the snapshot refers to is missing, short or corrupt (the
    /// message names the file and the chunk).
    TransfersFile(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Io(error) => write!(f, "snapshot I/O error: {error}"),
            SnapshotError::Truncated => write!(f, "snapshot is truncated"),
            SnapshotError::ChecksumMismatch => write!(f, "snapshot checksum mismatch (corrupt)"),
            SnapshotError::Invalid(why) => write!(f, "snapshot is invalid: {why}"),
            SnapshotError::UnsupportedVersion(v) => write!(f, "snapshot version {v} unsupported"),
            SnapshotError::TransfersFile(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<io::Error> for SnapshotError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            SnapshotError::Truncated
        } else {
            SnapshotError::Io(error)
        }
    }
}

/// Hashes everything written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)
    }
}

/// Everything a snapshot holds, captured at one instant ([`MemStore::snapshot_source`]):
/// it can be written later, on another thread, while the store moves on. That is how a
/// node checkpoints without stopping: capture between two batches (cheap: the small
/// tables are copied, transfer records already on disk are not), write in the
/// background.
pub struct SnapshotSource {
    commit_timestamp: u64,
    accounts: Vec<Account>,
    transfers: super::table::TransfersView,
    pending: Vec<(u128, PendingState)>,
    expiry: Vec<(u64, u128)>,
    failed: Vec<u128>,
    history: Vec<(u128, Vec<AccountBalance>)>,
    reservations: Vec<Reservation>,
    extension: Vec<u8>,
    /// Refer to the transfers file under this tag instead of copying its chunks.
    file_tag: Option<u64>,
}

impl SnapshotSource {
    /// Write a snapshot that refers to the store's transfers file, which the reader
    /// finds by `tag` ([`transfers_file_tag`]), instead of copying the records already
    /// in it. Only for the node's own checkpoints, and only for a store over a file.
    pub fn refer_to_transfers_file(&mut self, tag: u64) {
        assert!(tag != NO_FILE && matches!(self.transfers, super::table::TransfersView::File(_)));
        self.file_tag = Some(tag);
    }

    /// Bytes of the layer above the ledger to keep with this snapshot; they come back
    /// from `Ledger::read_snapshot_with_extension`, covered by the same checksum.
    pub fn set_extension(&mut self, bytes: Vec<u8>) {
        self.extension = bytes;
    }
}

impl MemStore {
    /// Captures the whole store, with `commit_timestamp`, for [`SnapshotSource::write`].
    pub fn snapshot_source(&self, commit_timestamp: u64) -> io::Result<SnapshotSource> {
        assert!(self.undo.is_none(), "no snapshot while a chain is open");
        let mut pending: Vec<(u128, PendingState)> =
            self.pending.iter().map(|(id, state)| (*id, *state)).collect();
        pending.sort_unstable_by_key(|(id, _)| *id);
        let mut history: Vec<(u32, Vec<AccountBalance>)> =
            self.history.iter().map(|(position, b)| (*position, b.clone())).collect();
        history.sort_unstable_by_key(|(position, _)| *position);
        Ok(SnapshotSource {
            commit_timestamp,
            accounts: self.accounts.clone(),
            transfers: self.transfers.view()?,
            pending,
            expiry: self.expiry.iter().copied().collect(),
            failed: self.failed_ids(),
            history: history
                .into_iter()
                .map(|(position, balances)| (self.accounts[position as usize].id, balances))
                .collect(),
            reservations: self.reservations(),
            extension: Vec::new(),
            file_tag: None,
        })
    }

    /// Writes the whole store, with `commit_timestamp`, as one snapshot.
    pub fn write_snapshot<W: Write>(&self, commit_timestamp: u64, out: W) -> io::Result<()> {
        self.snapshot_source(commit_timestamp)?.write(out)
    }
}

impl SnapshotSource {
    /// Writes the captured state as one snapshot (format in the module docs).
    pub fn write<W: Write>(&self, out: W) -> io::Result<()> {
        self.write_version(out, VERSION)
    }

    /// Writes in format `version` (2 or the current one: tests show that snapshots of
    /// earlier builds still read).
    fn write_version<W: Write>(&self, out: W, version: u32) -> io::Result<()> {
        assert!(version == 2 || version == VERSION);
        assert!(self.file_tag.is_none() || version >= 4);
        let event = |record: &[u8; RECORD_SIZE], out: &mut Vec<u8>| {
            if version >= 3 {
                crate::compact::encode(record, out);
            } else {
                out.extend_from_slice(record);
            }
        };
        let mut w = HashingWriter { inner: out, hasher: blake3::Hasher::new() };
        w.put(MAGIC)?;
        w.put(&version.to_le_bytes())?;
        w.put(&self.commit_timestamp.to_le_bytes())?;
        if version >= 4 {
            w.put(&self.file_tag.unwrap_or(NO_FILE).to_le_bytes())?;
        }

        // Records go out a megabyte at a time: BLAKE3 (and the writer) are many times
        // faster on large inputs than on one record per call. Same bytes.
        const CHUNK_BYTES: usize = 8192 * crate::types::RECORD_SIZE;
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + crate::compact::COMPACT_SIZE_MAX);
        w.put(&(self.accounts.len() as u64).to_le_bytes())?;
        for account in &self.accounts {
            event(&account.to_bytes(), &mut chunk);
        }
        w.put(&chunk)?;
        chunk.clear();
        w.put(&(self.transfers.len() as u64).to_le_bytes())?;
        if self.file_tag.is_some() {
            // The records in the file are durable before a snapshot refers to them.
            let (chunks, tail) = self.transfers.durable_chunks().expect("a view of a file")?;
            chunk.extend_from_slice(&(chunks.count() as u64).to_le_bytes());
            chunks.offsets[1..].iter().for_each(|o| chunk.extend_from_slice(&o.to_le_bytes()));
            chunks.checksums.iter().for_each(|c| chunk.extend_from_slice(c));
            tail.iter().for_each(|transfer| event(&transfer.to_bytes(), &mut chunk));
        } else {
            let mut written = Ok(());
            self.transfers.for_each(|transfer| {
                event(&transfer.to_bytes(), &mut chunk);
                if chunk.len() >= CHUNK_BYTES && written.is_ok() {
                    written = w.put(&chunk);
                    chunk.clear();
                }
            });
            written?;
        }
        w.put(&chunk)?;
        w.put(&(self.pending.len() as u64).to_le_bytes())?;
        for (id, state) in &self.pending {
            w.put(&id.to_le_bytes())?;
            w.put(&[state.code()])?;
        }
        w.put(&(self.expiry.len() as u64).to_le_bytes())?;
        for (expires_at, id) in &self.expiry {
            w.put(&expires_at.to_le_bytes())?;
            w.put(&id.to_le_bytes())?;
        }
        w.put(&(self.failed.len() as u64).to_le_bytes())?;
        for id in &self.failed {
            w.put(&id.to_le_bytes())?;
        }
        w.put(&(self.history.len() as u64).to_le_bytes())?;
        for (account_id, balances) in &self.history {
            w.put(&account_id.to_le_bytes())?;
            w.put(&(balances.len() as u64).to_le_bytes())?;
            for balance in balances {
                w.put(&balance.to_bytes())?;
            }
        }
        w.put(&(self.reservations.len() as u64).to_le_bytes())?;
        for r in &self.reservations {
            w.put(&r.transfer.to_bytes())?;
            w.put(&[r.side.code(), r.state.code()])?;
        }
        w.put(&(self.extension.len() as u64).to_le_bytes())?;
        w.put(&self.extension)?;
        let hash = w.hasher.finalize();
        w.inner.write_all(hash.as_bytes())?;
        w.inner.flush()
    }
}

impl MemStore {
    /// Reads a snapshot of `len` bytes written by [`MemStore::write_snapshot`] into
    /// `store`, which must be empty (it decides where transfer records live).
    /// `open` is called twice: once to verify the checksum, once to parse.
    pub fn read_snapshot<R: Read>(
        store: MemStore,
        len: u64,
        mut open: impl FnMut() -> io::Result<R>,
    ) -> Result<(MemStore, u64, Vec<u8>), SnapshotError> {
        assert!(store.is_empty(), "a snapshot is read into an empty store");
        if len < (MAGIC.len() + 4 + 8 + HASH_SIZE) as u64 {
            return Err(SnapshotError::Truncated);
        }
        let body_len = len - HASH_SIZE as u64;
        // Pass 1: the checksum, before trusting a single byte.
        let mut reader = open()?;
        let mut hasher = blake3::Hasher::new();
        let copied = io::copy(&mut (&mut reader).take(body_len), &mut hasher)?;
        if copied != body_len {
            return Err(SnapshotError::Truncated);
        }
        let mut stored = [0u8; HASH_SIZE];
        reader.read_exact(&mut stored)?;
        if hasher.finalize().as_bytes() != &stored {
            return Err(SnapshotError::ChecksumMismatch);
        }
        // Pass 2: parse and validate.
        let mut parser = Parser { inner: open()?.take(body_len), remaining: body_len };
        let result = parser.parse(store)?;
        if parser.remaining != 0 {
            return Err(SnapshotError::Invalid("trailing bytes"));
        }
        Ok(result)
    }
}

struct Parser<R> {
    inner: io::Take<R>,
    remaining: u64,
}

impl<R: Read> Parser<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut buffer = [0u8; N];
        self.inner.read_exact(&mut buffer)?;
        self.remaining -= N as u64;
        Ok(buffer)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn u128(&mut self) -> Result<u128, SnapshotError> {
        Ok(u128::from_le_bytes(self.bytes()?))
    }
    fn record(&mut self) -> Result<[u8; RECORD_SIZE], SnapshotError> {
        self.bytes()
    }
    /// An account or transfer record: compact from version 3, whole before.
    fn event(&mut self, compact: bool) -> Result<[u8; RECORD_SIZE], SnapshotError> {
        if !compact {
            return self.record();
        }
        let mut bytes = [0u8; crate::compact::COMPACT_SIZE_MAX];
        let lengths: [u8; 8] = self.bytes()?;
        bytes[..8].copy_from_slice(&lengths);
        let len = crate::compact::encoded_len(&lengths);
        if len > bytes.len() {
            return Err(SnapshotError::Invalid("a compact record's word length above 8"));
        }
        if (len - 8) as u64 > self.remaining {
            return Err(SnapshotError::Truncated);
        }
        self.inner.read_exact(&mut bytes[8..len])?;
        self.remaining -= (len - 8) as u64;
        match crate::compact::decode(&bytes[..len]) {
            Ok((record, used)) if used == len => Ok(record),
            _ => Err(SnapshotError::Invalid("a compact record that does not decode")),
        }
    }
    /// A section's item count, refused if its items cannot fit in what is left.
    fn count(&mut self, item_size: u64) -> Result<u64, SnapshotError> {
        let count = self.u64()?;
        if count.checked_mul(item_size).is_none_or(|size| size > self.remaining) {
            return Err(SnapshotError::Truncated);
        }
        Ok(count)
    }

    fn parse(&mut self, mut store: MemStore) -> Result<(MemStore, u64, Vec<u8>), SnapshotError> {
        use SnapshotError::Invalid;
        if &self.bytes::<8>()? != MAGIC {
            return Err(Invalid("bad magic"));
        }
        let version = u32::from_le_bytes(self.bytes()?);
        if !(1..=VERSION).contains(&version) {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let commit_timestamp = self.u64()?;
        let file_tag = if version >= 4 { self.u64()? } else { NO_FILE };
        let compact = version >= 3;
        // The least an account or transfer record takes.
        let event_size = if compact { 8 } else { RECORD_SIZE as u64 };

        for _ in 0..self.count(event_size)? {
            let account = Account::from_bytes(&self.event(compact)?);
            if account.timestamp <= store.account_timestamp_max()
                || account.id == 0
                || store.account(account.id).is_some()
            {
                return Err(Invalid("accounts out of order or duplicated"));
            }
            store.insert_account(account);
        }
        let inline = if file_tag == NO_FILE {
            self.count(event_size)?
        } else {
            let count = self.u64()?;
            let chunks = self.file_chunks(count)?;
            let adopted = chunks.count() as u64 * u64::from(CHUNK_RECORDS);
            store.transfers.adopt(chunks).map_err(SnapshotError::TransfersFile)?;
            let mut records = Vec::with_capacity(CHUNK_RECORDS as usize);
            for chunk in 0..(adopted / u64::from(CHUNK_RECORDS)) as u32 {
                store
                    .transfers
                    .read_adopted(chunk, &mut records)
                    .map_err(SnapshotError::TransfersFile)?;
                for transfer in records.drain(..) {
                    insert_checked_transfer(&mut store, transfer)?;
                }
            }
            store.transfers.adopted();
            let tail = count - adopted;
            if tail.checked_mul(event_size).is_none_or(|size| size > self.remaining) {
                return Err(SnapshotError::Truncated);
            }
            tail
        };
        for _ in 0..inline {
            let transfer = Transfer::from_bytes(&self.event(compact)?);
            insert_checked_transfer(&mut store, transfer)?;
        }
        for _ in 0..self.count(17)? {
            let id = self.u128()?;
            let state = match self.u8()? {
                1 => PendingState::Pending,
                2 => PendingState::Posted,
                3 => PendingState::Voided,
                4 => PendingState::Expired,
                _ => return Err(Invalid("unknown pending state")),
            };
            if store.transfer(id).is_none() || store.pending.insert(id, state).is_some() {
                return Err(Invalid("pending state of an unknown or repeated transfer"));
            }
        }
        for _ in 0..self.count(24)? {
            let expires_at = self.u64()?;
            let id = self.u128()?;
            if store.pending.get(&id) != Some(&PendingState::Pending)
                || !store.expiry.insert((expires_at, id))
            {
                return Err(Invalid("expiry of a transfer that is not pending"));
            }
        }
        for _ in 0..self.count(16)? {
            let id = self.u128()?;
            if store.transfer(id).is_some() || !store.failed_ids.insert(id) {
                return Err(Invalid("failed id that exists or repeats"));
            }
        }
        for _ in 0..self.count(24)? {
            let account_id = self.u128()?;
            let Some(position) = store.position(account_id) else {
                return Err(Invalid("history of an unknown account"));
            };
            let mut balances = Vec::new();
            for _ in 0..self.count(RECORD_SIZE as u64)? {
                let balance = AccountBalance::from_bytes(&self.record()?);
                if balances
                    .last()
                    .is_some_and(|b: &AccountBalance| b.timestamp >= balance.timestamp)
                {
                    return Err(Invalid("history out of order"));
                }
                balances.push(balance);
            }
            if store.history.insert(position as u32, balances).is_some() {
                return Err(Invalid("history repeated"));
            }
        }
        for _ in 0..self.count(RECORD_SIZE as u64 + 2)? {
            let transfer = Transfer::from_bytes(&self.record()?);
            let side = match self.u8()? {
                0 => Side::Debit,
                1 => Side::Credit,
                _ => return Err(Invalid("unknown reservation side")),
            };
            let state = match self.u8()? {
                0 => ReservationState::Prepared,
                1 => ReservationState::Committed,
                2 => ReservationState::Aborted,
                _ => return Err(Invalid("unknown reservation state")),
            };
            if store.reservation(transfer.id, side).is_some() {
                return Err(Invalid("reservation repeated"));
            }
            store.set_reservation(Reservation { transfer, side, state });
        }
        let mut extension = Vec::new();
        if version >= 2 {
            let len = self.count(1)?;
            extension = vec![0u8; len as usize];
            self.inner.read_exact(&mut extension)?;
            self.remaining -= len;
        }
        let newest = store.account_timestamp_max().max(store.transfer_timestamp_max());
        if commit_timestamp < newest {
            return Err(Invalid("commit timestamp below the newest record"));
        }
        Ok((store, commit_timestamp, extension))
    }

    /// A referring transfers section's chunks (after the count of `transfers`).
    fn file_chunks(&mut self, transfers: u64) -> Result<FileChunks, SnapshotError> {
        use SnapshotError::Invalid;
        let count = self.count(8 + 16)?;
        if count.checked_mul(u64::from(CHUNK_RECORDS)).is_none_or(|n| n > transfers) {
            return Err(Invalid("more chunks than transfers"));
        }
        let chunk_bytes_max = (CHUNK_RECORDS as usize * crate::compact::COMPACT_SIZE_MAX) as u64;
        let mut offsets = Vec::with_capacity(count as usize + 1);
        offsets.push(0);
        for _ in 0..count {
            let (start, end) = (offsets[offsets.len() - 1], self.u64()?);
            if end <= start || end - start > chunk_bytes_max {
                return Err(Invalid("chunk offsets out of order or apart"));
            }
            offsets.push(end);
        }
        let checksums = (0..count).map(|_| self.bytes::<16>()).collect::<Result<_, _>>()?;
        Ok(FileChunks { offsets, checksums })
    }
}

/// Stores `transfer` read from a snapshot, after the checks every one passes: in
/// timestamp order, a new id, and an account of this store on one side.
fn insert_checked_transfer(store: &mut MemStore, transfer: Transfer) -> Result<(), SnapshotError> {
    use SnapshotError::Invalid;
    if transfer.timestamp <= store.transfer_timestamp_max()
        || transfer.id == 0
        || store.transfer(transfer.id).is_some()
    {
        return Err(Invalid("transfers out of order or duplicated"));
    }
    let local = [transfer.debit_account_id, transfer.credit_account_id]
        .iter()
        .filter(|id| store.account(**id).is_some())
        .count();
    if local == 0 {
        return Err(Invalid("transfer without a local account"));
    }
    store.insert_transfer(&transfer);
    Ok(())
}

/// The transfers file tag of a snapshot's bytes (see the module docs): which file of
/// the node a checkpoint refers to, or `None` when the snapshot holds its records.
/// The snapshot's checksum is verified first: a damaged header must not send a start
/// to the wrong file (or make it empty one that a checkpoint refers to).
pub fn transfers_file_tag(snapshot: &[u8]) -> Result<Option<u64>, SnapshotError> {
    let Some(body_len) = snapshot.len().checked_sub(HASH_SIZE) else {
        return Err(SnapshotError::Truncated);
    };
    let body = &snapshot[..body_len];
    if blake3::hash(body).as_bytes() != &snapshot[body_len..] {
        return Err(SnapshotError::ChecksumMismatch);
    }
    if body.get(..8) != Some(&MAGIC[..]) {
        return Err(SnapshotError::Invalid("bad magic"));
    }
    let Some(header) = body.get(..HEADER_SIZE) else { return Ok(None) };
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    let tag = u64::from_le_bytes(header[20..28].try_into().expect("8 bytes"));
    Ok((version >= 4 && tag != NO_FILE).then_some(tag))
}

/// `snapshot` as one that holds its records: a checkpoint that refers to a transfers
/// file (`file_of` its tag) gets the referred chunks copied in, each verified, for a
/// replica that has no such file. Others come back as they are (verified too).
pub fn expand_snapshot(
    snapshot: Vec<u8>,
    file_of: impl FnOnce(u64) -> std::path::PathBuf,
) -> Result<Vec<u8>, SnapshotError> {
    let Some(tag) = transfers_file_tag(&snapshot)? else { return Ok(snapshot) };
    let transfers_file = &file_of(tag);
    // Verified above, and at least a header long.
    let body = &snapshot[..snapshot.len() - HASH_SIZE];
    // Walk to the chunks: the header, the accounts (compact records), the count.
    let mut parser = Parser {
        inner: (&body[HEADER_SIZE..]).take(body.len() as u64),
        remaining: (body.len() - HEADER_SIZE) as u64,
    };
    for _ in 0..parser.count(8)? {
        parser.event(true)?;
    }
    let transfers = parser.u64()?;
    let chunks_at = body.len() - parser.remaining as usize;
    let chunks = parser.file_chunks(transfers)?;
    let tail_at = body.len() - parser.remaining as usize;

    let mut out = Vec::with_capacity(snapshot.len() + chunks.bytes() as usize);
    out.extend_from_slice(&body[..20]);
    out.extend_from_slice(&NO_FILE.to_le_bytes());
    out.extend_from_slice(&body[HEADER_SIZE..chunks_at]);
    let describe = |what: String| {
        SnapshotError::TransfersFile(format!("transfers file {}: {what}", transfers_file.display()))
    };
    let file = std::fs::File::open(transfers_file).map_err(|e| describe(e.to_string()))?;
    let len = file.metadata().map_err(|e| describe(e.to_string()))?.len();
    if len < chunks.bytes() {
        return Err(describe(format!(
            "{len} bytes, shorter than the {} bytes of the {} chunks the checkpoint refers to",
            chunks.bytes(),
            chunks.count()
        )));
    }
    let start = out.len();
    out.resize(start + chunks.bytes() as usize, 0);
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut out[start..], 0)
        .map_err(|e| describe(format!("{} bytes of chunks: {e}", chunks.bytes())))?;
    for (chunk, expected) in chunks.checksums.iter().enumerate() {
        let (from, to) = (chunks.offsets[chunk] as usize, chunks.offsets[chunk + 1] as usize);
        if &checksum(&out[start + from..start + to]) != expected {
            return Err(describe(format!("chunk {chunk} at offset {from}: checksum mismatch")));
        }
    }
    out.extend_from_slice(&body[tail_at..]);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::types::{AccountFlags, TransferFlags};

    fn sample() -> Ledger {
        let mut ledger = Ledger::default();
        let accounts: Vec<Account> = (1..=4)
            .map(|id| Account {
                id,
                ledger: 1,
                code: 1,
                flags: if id == 1 { AccountFlags::HISTORY } else { AccountFlags::empty() },
                ..Default::default()
            })
            .collect();
        ledger.create_accounts(100, &accounts).unwrap();
        let t = |id, flags, timeout| Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 3,
            ledger: 1,
            code: 1,
            flags,
            timeout,
            ..Default::default()
        };
        let results = ledger
            .create_transfers(
                200,
                &[
                    t(10, TransferFlags::empty(), 0),
                    t(11, TransferFlags::PENDING, 60),
                    t(12, TransferFlags::PENDING, 0),
                    Transfer { debit_account_id: 9, ..t(13, TransferFlags::empty(), 0) },
                ],
            )
            .unwrap();
        assert!(results[..3].iter().all(|r| r.is_success()));
        ledger
    }

    fn round_trip(bytes: &[u8]) -> Result<(MemStore, u64, Vec<u8>), SnapshotError> {
        MemStore::read_snapshot(MemStore::default(), bytes.len() as u64, || Ok(bytes))
    }

    #[test]
    fn snapshot_round_trips_to_the_same_digest() {
        let ledger = sample();
        let mut bytes = Vec::new();
        ledger.store().write_snapshot(ledger.commit_timestamp(), &mut bytes).unwrap();
        let (store, commit_timestamp, extension) = round_trip(&bytes).unwrap();
        assert!(extension.is_empty());
        let restored = Ledger::new(store);
        let mut restored = restored;
        restored.observe_timestamp(commit_timestamp);
        assert_eq!(restored.digest(), ledger.digest());
    }

    #[test]
    fn records_are_compact_and_a_version_2_snapshot_still_reads() {
        let ledger = sample();
        let source = ledger.snapshot_source().unwrap();
        let (mut compact, mut whole) = (Vec::new(), Vec::new());
        source.write(&mut compact).unwrap();
        source.write_version(&mut whole, 2).unwrap();
        // Four accounts and three transfers of mostly zero bytes.
        assert!(compact.len() + 5 * RECORD_SIZE < whole.len(), "{} {}", compact.len(), whole.len());
        let (store, commit_timestamp, _) = round_trip(&whole).unwrap();
        let mut restored = Ledger::new(store);
        restored.observe_timestamp(commit_timestamp);
        assert_eq!(restored.digest(), ledger.digest());
    }

    #[test]
    fn the_extension_comes_back_under_the_checksum() {
        let ledger = sample();
        let mut source = ledger.snapshot_source().unwrap();
        source.set_extension(b"protocol records".to_vec());
        let mut bytes = Vec::new();
        source.write(&mut bytes).unwrap();
        let (_, _, extension) = round_trip(&bytes).unwrap();
        assert_eq!(extension, b"protocol records");
        let at = bytes.len() - HASH_SIZE - 3;
        bytes[at] ^= 1;
        assert!(matches!(round_trip(&bytes), Err(SnapshotError::ChecksumMismatch)));
    }

    /// A ledger over the transfers file `path`, with two accounts.
    fn file_ledger(path: &std::path::Path) -> Ledger {
        let mut ledger = Ledger::new(MemStore::with_transfer_file(path).unwrap());
        let accounts: Vec<Account> =
            (1..=2).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
        ledger.create_accounts(1000, &accounts).unwrap();
        ledger
    }

    fn add_transfers(ledger: &mut Ledger, ids: std::ops::Range<u128>) {
        let transfers: Vec<Transfer> = ids
            .map(|id| Transfer {
                id,
                debit_account_id: 1,
                credit_account_id: 2,
                amount: id % 7 + 1,
                ledger: 1,
                code: 1,
                ..Default::default()
            })
            .collect();
        for batch in transfers.chunks(crate::types::BATCH_EVENTS_MAX) {
            let now = ledger.commit_timestamp() + batch.len() as u64 + 1;
            let results = ledger.create_transfers(now, batch).unwrap();
            assert!(results.iter().all(|r| r.is_success()));
        }
    }

    /// A checkpoint of a store over a file, referring to the file: what it wrote, what
    /// a whole snapshot of the same state is, and the digest at that point.
    fn referring_checkpoint(ledger: &Ledger) -> (Vec<u8>, Vec<u8>, [u8; 32]) {
        let mut source = ledger.snapshot_source().unwrap();
        let mut whole = Vec::new();
        source.write(&mut whole).unwrap();
        source.refer_to_transfers_file(7);
        let mut bytes = Vec::new();
        source.write(&mut bytes).unwrap();
        (bytes, whole, ledger.digest())
    }

    /// A file ledger with `count` transfers, checkpointed, and dropped: the directory,
    /// the file, the checkpoint's bytes and the file's bytes.
    fn checkpointed_file(count: u128) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transfers.0");
        let mut ledger = file_ledger(&path);
        add_transfers(&mut ledger, 1..count + 1);
        let (bytes, _, _) = referring_checkpoint(&ledger);
        drop(ledger);
        let good = std::fs::read(&path).unwrap();
        (dir, path, bytes, good)
    }

    fn read_into(store: MemStore, bytes: &[u8]) -> Result<Ledger, SnapshotError> {
        let (store, commit_timestamp, _) =
            MemStore::read_snapshot(store, bytes.len() as u64, || Ok(bytes))?;
        let mut ledger = Ledger::new(store);
        ledger.observe_timestamp(commit_timestamp);
        Ok(ledger)
    }

    #[test]
    fn a_checkpoint_refers_to_the_transfers_file_and_a_start_adopts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transfers.0");
        let mut ledger = file_ledger(&path);
        // One flush of the tail (8192 records, 128 chunks) and some in memory.
        add_transfers(&mut ledger, 1..9001);
        let (bytes, written_whole, digest) = referring_checkpoint(&ledger);
        assert_eq!(transfers_file_tag(&bytes).unwrap(), Some(7));
        // Offsets and checksums of 128 chunks and 808 records: far less than 9000.
        assert!(bytes.len() < 4 * 128 * 24 + 808 * 60, "{} bytes", bytes.len());
        let referred = std::fs::metadata(&path).unwrap().len();
        // Written after the checkpoint: more chunks in the file, which a start leaves
        // (and the records that come back from the log overwrite).
        add_transfers(&mut ledger, 9001..20001);
        drop(ledger);
        let after = std::fs::read(&path).unwrap();
        assert!(after.len() as u64 > referred);

        let restored = read_into(MemStore::with_existing_transfer_file(&path).unwrap(), &bytes);
        let mut restored = restored.unwrap();
        assert_eq!(restored.digest(), digest);
        assert!(std::fs::read(&path).unwrap() == after, "reading changes nothing in the file");
        // The store goes on from there: new records (other timestamps) overwrite the
        // chunks after the adopted ones.
        add_transfers(&mut restored, 9001..20001);
        let found = restored.lookup_transfers(&[1, 9000, 9001, 20000]);
        assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 9000, 9001, 20000]);

        // Made whole for another replica: no tag, the same state, read into memory.
        let whole = expand_snapshot(bytes.clone(), |_| path.clone()).unwrap();
        assert_eq!(transfers_file_tag(&whole).unwrap(), None);
        assert!(whole == written_whole, "the same bytes as a whole snapshot written then");
        assert_eq!(read_into(MemStore::default(), &whole).unwrap().digest(), digest);
    }

    #[test]
    fn a_damaged_or_short_transfers_file_refuses_a_checkpoint_that_refers_to_it() {
        let (_dir, path, bytes, good) = checkpointed_file(9000);

        // A flipped byte about chunk 100 (of 128, of similar sizes): refused, naming the
        // file and the chunk, and the file is left as it was.
        let mut damaged = good.clone();
        let at = damaged.len() * 100 / 128 + 3;
        damaged[at] ^= 0x10;
        std::fs::write(&path, &damaged).unwrap();
        let error = read_into(MemStore::with_existing_transfer_file(&path).unwrap(), &bytes)
            .err()
            .expect("refused");
        let message = error.to_string();
        assert!(matches!(error, SnapshotError::TransfersFile(_)), "{message}");
        assert!(message.contains("transfers.0") && message.contains("chunk 10"), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
        let error = expand_snapshot(bytes.clone(), |_| path.clone()).expect_err("refused");
        assert!(error.to_string().contains("checksum mismatch"), "{error}");

        // Shorter than the chunks: refused, and nothing is cut.
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        let error = read_into(MemStore::with_existing_transfer_file(&path).unwrap(), &bytes)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("shorter"), "{error}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good.len() as u64 - 1);
        // A store without a file cannot take it either.
        let error = read_into(MemStore::default(), &bytes).err().expect("refused");
        assert!(error.to_string().contains("there is none"), "{error}");
    }

    /// A snapshot that holds its records (an older build's checkpoint) read into a store
    /// over an existing file: the records are written over what the file held, and a
    /// damaged snapshot leaves the file as it was.
    #[test]
    fn a_snapshot_that_holds_its_records_writes_over_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = file_ledger(&dir.path().join("old"));
        add_transfers(&mut ledger, 1..9001);
        let (mut whole, digest) = (Vec::new(), ledger.digest());
        ledger.snapshot_source().unwrap().write_version(&mut whole, 2).unwrap();
        let path = dir.path().join("transfers.0");
        let junk = vec![0x5a; 300_000];
        std::fs::write(&path, &junk).unwrap();

        let mut damaged = whole.clone();
        damaged[40] ^= 1;
        let store = MemStore::with_existing_transfer_file(&path).unwrap();
        assert!(read_into(store, &damaged).is_err());
        assert!(std::fs::read(&path).unwrap() == junk, "a refused read changes nothing");

        let store = MemStore::with_existing_transfer_file(&path).unwrap();
        let restored = read_into(store, &whole).unwrap();
        assert_eq!(restored.digest(), digest);
        let found = restored.lookup_transfers(&[1, 4096, 8192, 8193, 9000]);
        assert_eq!(found.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 4096, 8192, 8193, 9000]);
    }

    /// A snapshot forged with a valid checksum (a bug, or a hostile file) that refers to
    /// a transfers file is refused or read, never a panic, whether read or made whole;
    /// a damaged header is refused before any file is chosen.
    #[test]
    fn forged_referring_snapshots_are_refused_without_a_panic() {
        let (_dir, path, bytes, good) = checkpointed_file(8195);
        let body_len = bytes.len() - HASH_SIZE;
        // Every byte of the header, the accounts and the first chunks' offsets; then a
        // sample (reading all 128 chunks is slow in a debug build).
        let positions = (0..body_len).filter(|&i| i < 200 || i % 13 == 0);
        for position in positions {
            for value in [bytes[position] ^ 0x40, 0xff] {
                let mut forged = bytes[..body_len].to_vec();
                forged[position] = value;
                let hash = blake3::hash(&forged);
                forged.extend_from_slice(hash.as_bytes());
                let _ = transfers_file_tag(&forged);
                let _ = expand_snapshot(forged.clone(), |_| path.clone());
                let store = MemStore::with_existing_transfer_file(&path).unwrap();
                if read_into(store, &forged).is_ok() {
                    std::fs::write(&path, &good).unwrap();
                }
            }
        }
        // Unforged damage: refused by the checksum, before the tag is believed.
        for position in [0, 9, 20, 27, body_len - 1] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 1;
            assert!(matches!(transfers_file_tag(&damaged), Err(SnapshotError::ChecksumMismatch)));
        }
        for len in [0, 10, 31, 40] {
            assert!(transfers_file_tag(&bytes[..len]).is_err(), "{len} bytes");
            assert!(
                expand_snapshot(bytes[..len].to_vec(), |_| path.clone()).is_err(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let ledger = sample();
        let mut bytes = Vec::new();
        ledger.store().write_snapshot(ledger.commit_timestamp(), &mut bytes).unwrap();
        for index in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[index] ^= 0x40;
            assert!(round_trip(&corrupt).is_err(), "flip at {index} accepted");
        }
        for len in 0..bytes.len() {
            assert!(round_trip(&bytes[..len]).is_err(), "truncation to {len} accepted");
        }
    }
}
