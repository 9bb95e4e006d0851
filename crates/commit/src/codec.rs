//! The byte encoding of what the commit cores write to a shard's log (`Entry`), put in
//! a snapshot (`ShardState`'s protocol records) and send between nodes (`Message`).
//!
//! Little-endian, length-prefixed, versioned by a leading tag byte. Decoding never
//! panics and never trusts a length: a corrupt or hostile buffer yields `DecodeError`.
//! Every list is bounded (`TXN_TRANSFERS_MAX` transfers; participants by transfers).

use std::collections::BTreeMap;

use settle_ledger::{CreateTransferResult as R, Side, SideVote, Transfer, RECORD_SIZE};

use crate::message::{Accepted, Body, ClientRef, Entry, Message, Record, ThreePhaseState};
use crate::shard_map::{ShardMap, ShardReplicas};
use crate::state::{CoordinatorRecord, ParticipantRecord};
use crate::txn::{
    Commit, Outcome, Protocol, SideEntry, Txn, TxnId, UnitAbort, Vote, TXN_TRANSFERS_MAX,
    UNIT_TRANSFERS_MAX,
};

/// The first byte of an encoded entry: distinct from every ledger `Write` operation
/// byte, so one log can carry both.
pub const ENTRY_TAG: u8 = 0xC7;
/// The first byte of several entries written as one log entry (`encode_entries`).
pub const ENTRIES_TAG: u8 = 0xC6;
/// Most entries in one `encode_entries` batch.
pub const ENTRIES_MAX: usize = 1 << 16;
/// Most decisions one `Record::Forget` drops.
pub const FORGET_MAX: usize = 1 << 16;
const MESSAGE_TAG: u8 = 0xC8;
const STATE_TAG: u8 = 0xC9;
const ACCEPTOR_TAG: u8 = 0xCA;
/// Set on a transaction's protocol byte when its unit ends follow (a transaction of
/// several units); earlier encodings, without it, are one unit.
const UNITS_FLAG: u8 = 0x80;
/// Set on a transaction's protocol byte when its transfers are compact records
/// (`settle_ledger::compact`: a prepare, a decision and a resolution each carry the
/// transaction, so its size is most of what the protocol writes); earlier encodings,
/// without it, carry whole records.
const COMPACT_FLAG: u8 = 0x40;
/// Set on a commit's amount count when its aborted units follow; earlier encodings,
/// without it, abort none.
const ABORTED_FLAG: u32 = 1 << 31;
/// Set on a commit's amount count when its amounts are LEB128 varints (most amounts are
/// small); earlier encodings, without it, carry 16 bytes each.
const VARINT_FLAG: u32 = 1 << 30;

/// Most protocol records a snapshot section may hold (far above what is in flight).
pub const STATE_RECORDS_MAX: u64 = 1 << 24;

/// Why bytes do not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("bad tag {0:#x}")]
    BadTag(u8),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(n as u32);
    }
    fn shard_map(&mut self, map: &ShardMap) {
        self.u64(map.version);
        self.len(map.shards.len());
        for entry in &map.shards {
            self.u64(entry.shard);
            self.len(entry.replicas.len());
            for &node in &entry.replicas {
                self.u64(node);
            }
        }
    }

    /// LEB128: seven bits a byte, low first, the top bit set on all but the last.
    fn varint(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.u8(v as u8 | 0x80);
            v >>= 7;
        }
        self.u8(v as u8);
    }

    /// Writes `txn` as it was written the first time (`Txn::encoded`).
    fn txn(&mut self, txn: &Txn) {
        self.0.extend_from_slice(encoded_txn(txn));
    }

    fn txn_fields(&mut self, txn: &Txn) {
        let units = txn.unit_count() > 1;
        self.u8(txn.protocol.code() | COMPACT_FLAG | if units { UNITS_FLAG } else { 0 });
        self.len(txn.transfers.len());
        for (transfer, [debit, credit]) in txn.transfers.iter().zip(txn.placement.iter()) {
            settle_ledger::compact::encode(&transfer.to_bytes(), &mut self.0);
            self.u32(*debit);
            self.u32(*credit);
        }
        if units {
            self.len(txn.unit_count());
            for &end in txn.unit_ends.iter() {
                self.u16(end);
            }
        }
    }

    fn side_vote(&mut self, vote: &SideVote) {
        match vote {
            SideVote::Prepared { amount, account_ledger } => {
                self.u8(0);
                self.u128(*amount);
                self.u32(*account_ledger);
            }
            SideVote::Rejected { result, account_ledger } => {
                self.u8(1);
                self.u32(result.code());
                match account_ledger {
                    Some(ledger) => {
                        self.u8(1);
                        self.u32(*ledger);
                    }
                    None => self.u8(0),
                }
            }
            SideVote::Busy => self.u8(2),
            SideVote::Aborted => self.u8(3),
        }
    }

    fn vote(&mut self, vote: &Vote) {
        match vote {
            Vote::Sides(entries) => {
                self.u8(0);
                self.len(entries.len());
                for entry in entries {
                    self.u16(entry.transfer);
                    self.u8(entry.side.code());
                    self.side_vote(&entry.vote);
                    self.u64(entry.at);
                }
            }
            Vote::Aborted => self.u8(1),
        }
    }

    /// The votes a last agent's decision carries (`Record::DecideLast`), compactly: a
    /// prepared side's amount and ledger as varints, and its prepare timestamp as a
    /// varint past the earliest of its participant's (a participant prepares its sides
    /// at consecutive timestamps), about 9 bytes a side instead of 32.
    fn compact_votes(&mut self, votes: &[(crate::txn::ShardId, Vote)]) {
        self.len(votes.len());
        for (shard, vote) in votes {
            self.u32(*shard);
            let Vote::Sides(entries) = vote else {
                self.u8(1);
                continue;
            };
            self.u8(0);
            self.len(entries.len());
            let base = entries.iter().map(|entry| entry.at).min().unwrap_or(0);
            self.u64(base);
            for entry in entries {
                self.u16(entry.transfer);
                self.u8(entry.side.code());
                match entry.vote {
                    SideVote::Prepared { amount, account_ledger } => {
                        self.u8(0xFF);
                        self.varint(amount);
                        self.varint(u128::from(account_ledger));
                    }
                    other => self.side_vote(&other),
                }
                self.varint(u128::from(entry.at - base));
            }
        }
    }

    fn outcome(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Commit(commit) => {
                self.u8(0);
                self.commit(commit);
            }
            Outcome::Abort { results, record_failed } => {
                self.u8(1);
                self.len(results.len());
                for result in results {
                    self.u32(result.code());
                }
                self.u8(u8::from(*record_failed));
            }
        }
    }

    fn commit(&mut self, commit: &Commit) {
        let flag = if commit.aborted.is_empty() { 0 } else { ABORTED_FLAG };
        self.u32(commit.amounts.len() as u32 | flag | VARINT_FLAG);
        for amount in &commit.amounts {
            self.varint(*amount);
        }
        self.u64(commit.at);
        if !commit.aborted.is_empty() {
            self.len(commit.aborted.len());
            for abort in &commit.aborted {
                self.u16(abort.unit);
                self.u8(u8::from(abort.record_failed));
                self.len(abort.results.len());
                for result in &abort.results {
                    self.u32(result.code());
                }
            }
        }
    }

    fn option_outcome(&mut self, outcome: &Option<Outcome>) {
        match outcome {
            Some(outcome) => {
                self.u8(1);
                self.outcome(outcome);
            }
            None => self.u8(0),
        }
    }

    fn option_commit(&mut self, commit: &Option<Commit>) {
        match commit {
            Some(commit) => {
                self.u8(1);
                self.commit(commit);
            }
            None => self.u8(0),
        }
    }

    fn accepted(&mut self, accepted: &Accepted) {
        self.u32(accepted.instance);
        self.u64(accepted.ballot);
        self.vote(&accepted.vote);
    }

    fn accepted_list(&mut self, list: &[Accepted]) {
        self.len(list.len());
        for accepted in list {
            self.accepted(accepted);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated(self.at))?;
        let slice = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated(self.at))?;
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn u128(&mut self) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }
    fn shard_map(&mut self) -> Result<ShardMap, DecodeError> {
        let version = self.u64()?;
        let n = self.len(crate::shard_map::SHARDS_MAX)?;
        let mut shards = Vec::with_capacity(n);
        for _ in 0..n {
            let shard = self.u64()?;
            let count = self.len(crate::shard_map::REPLICAS_MAX)?;
            let replicas = (0..count).map(|_| self.u64()).collect::<Result<_, _>>()?;
            shards.push(ShardReplicas { shard, replicas });
        }
        let map = ShardMap::new(version, shards.clone()).ok_or(DecodeError::Invalid("map"))?;
        // One encoding per map: shards and replicas in order, none twice.
        if map.shards != shards {
            return Err(DecodeError::Invalid("map order"));
        }
        Ok(map)
    }

    /// LEB128 (see `Writer::varint`), refusing more than 128 bits and a needless last
    /// zero byte (one encoding per value).
    fn varint(&mut self) -> Result<u128, DecodeError> {
        let mut value = 0u128;
        for shift in (0..128).step_by(7) {
            let byte = self.u8()?;
            let bits = u128::from(byte & 0x7F);
            if shift == 126 && bits > 0b11 {
                return Err(DecodeError::Invalid("varint"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::Invalid("varint"));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid("varint"))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("boolean")),
        }
    }
    /// A list length, at most `max`.
    fn len(&mut self, max: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::Invalid("list length"));
        }
        Ok(n)
    }
    fn end(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    fn result(&mut self) -> Result<R, DecodeError> {
        R::from_code(self.u32()?).ok_or(DecodeError::Invalid("result code"))
    }

    fn txn(&mut self) -> Result<Txn, DecodeError> {
        let code = self.u8()?;
        let protocol = match code & !(UNITS_FLAG | COMPACT_FLAG) {
            0 => Protocol::TwoPhase,
            1 => Protocol::ThreePhase,
            2 => Protocol::PaxosCommit,
            _ => return Err(DecodeError::Invalid("protocol")),
        };
        let n = self.len(TXN_TRANSFERS_MAX)?;
        let mut transfers = Vec::with_capacity(n);
        let mut placement = Vec::with_capacity(n);
        for _ in 0..n {
            if code & COMPACT_FLAG != 0 {
                let rest = &self.bytes[self.at..];
                let (record, used) = settle_ledger::compact::decode(rest)
                    .map_err(|_| DecodeError::Invalid("compact transfer"))?;
                self.at += used;
                transfers.push(Transfer::from_bytes(&record));
            } else {
                let bytes: &[u8; RECORD_SIZE] =
                    self.take(RECORD_SIZE)?.try_into().expect("a record's size");
                transfers.push(Transfer::from_bytes(bytes));
            }
            placement.push([self.u32()?, self.u32()?]);
        }
        let unit_ends = if code & UNITS_FLAG != 0 {
            let units = self.len(TXN_TRANSFERS_MAX)?;
            (0..units).map(|_| self.u16()).collect::<Result<_, _>>()?
        } else {
            vec![n as u16]
        };
        Txn::batch(protocol, transfers, placement, unit_ends).ok_or(DecodeError::Invalid("txn"))
    }

    fn side_vote(&mut self) -> Result<SideVote, DecodeError> {
        Ok(match self.u8()? {
            0 => SideVote::Prepared { amount: self.u128()?, account_ledger: self.u32()? },
            1 => {
                let result = self.result()?;
                let account_ledger = if self.bool()? { Some(self.u32()?) } else { None };
                SideVote::Rejected { result, account_ledger }
            }
            2 => SideVote::Busy,
            3 => SideVote::Aborted,
            _ => return Err(DecodeError::Invalid("side vote")),
        })
    }

    fn side(&mut self) -> Result<Side, DecodeError> {
        match self.u8()? {
            0 => Ok(Side::Debit),
            1 => Ok(Side::Credit),
            _ => Err(DecodeError::Invalid("side")),
        }
    }

    fn vote(&mut self) -> Result<Vote, DecodeError> {
        match self.u8()? {
            0 => {
                let n = self.len(2 * TXN_TRANSFERS_MAX)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let transfer = self.u16()?;
                    let side = self.side()?;
                    let vote = self.side_vote()?;
                    entries.push(SideEntry { transfer, side, vote, at: self.u64()? });
                }
                Ok(Vote::Sides(entries))
            }
            1 => Ok(Vote::Aborted),
            _ => Err(DecodeError::Invalid("vote")),
        }
    }

    fn compact_votes(&mut self) -> Result<Vec<(crate::txn::ShardId, Vote)>, DecodeError> {
        // A transaction's participants are at most two a transfer.
        let n = self.len(2 * TXN_TRANSFERS_MAX)?;
        let mut votes = Vec::with_capacity(n);
        for _ in 0..n {
            let shard = self.u32()?;
            let vote = match self.u8()? {
                0 => {
                    let count = self.len(2 * TXN_TRANSFERS_MAX)?;
                    let base = self.u64()?;
                    let mut entries = Vec::with_capacity(count);
                    for _ in 0..count {
                        let transfer = self.u16()?;
                        let side = self.side()?;
                        let vote = if self.bytes.get(self.at) == Some(&0xFF) {
                            self.at += 1;
                            let amount = self.varint()?;
                            let account_ledger = u32::try_from(self.varint()?)
                                .map_err(|_| DecodeError::Invalid("ledger"))?;
                            SideVote::Prepared { amount, account_ledger }
                        } else {
                            self.side_vote()?
                        };
                        let at = u64::try_from(self.varint()?)
                            .ok()
                            .and_then(|delta| base.checked_add(delta))
                            .ok_or(DecodeError::Invalid("timestamp"))?;
                        entries.push(SideEntry { transfer, side, vote, at });
                    }
                    Vote::Sides(entries)
                }
                1 => Vote::Aborted,
                _ => return Err(DecodeError::Invalid("vote")),
            };
            votes.push((shard, vote));
        }
        Ok(votes)
    }

    fn commit(&mut self) -> Result<Commit, DecodeError> {
        let count = self.u32()?;
        let n = (count & !(ABORTED_FLAG | VARINT_FLAG)) as usize;
        if n > TXN_TRANSFERS_MAX {
            return Err(DecodeError::Invalid("length"));
        }
        let amounts = if count & VARINT_FLAG != 0 {
            (0..n).map(|_| self.varint()).collect::<Result<_, _>>()?
        } else {
            (0..n).map(|_| self.u128()).collect::<Result<_, _>>()?
        };
        let at = self.u64()?;
        let mut aborted = Vec::new();
        if count & ABORTED_FLAG != 0 {
            let units = self.len(TXN_TRANSFERS_MAX)?;
            for _ in 0..units {
                let unit = self.u16()?;
                let record_failed = self.bool()?;
                let len = self.len(UNIT_TRANSFERS_MAX)?;
                let results = (0..len).map(|_| self.result()).collect::<Result<_, _>>()?;
                aborted.push(UnitAbort { unit, results, record_failed });
            }
        }
        Ok(Commit { amounts, at, aborted })
    }

    fn outcome(&mut self) -> Result<Outcome, DecodeError> {
        match self.u8()? {
            0 => Ok(Outcome::Commit(self.commit()?)),
            1 => {
                let n = self.len(TXN_TRANSFERS_MAX)?;
                let results = (0..n).map(|_| self.result()).collect::<Result<_, _>>()?;
                Ok(Outcome::Abort { results, record_failed: self.bool()? })
            }
            _ => Err(DecodeError::Invalid("outcome")),
        }
    }

    fn option_outcome(&mut self) -> Result<Option<Outcome>, DecodeError> {
        Ok(if self.bool()? { Some(self.outcome()?) } else { None })
    }

    fn option_commit(&mut self) -> Result<Option<Commit>, DecodeError> {
        Ok(if self.bool()? { Some(self.commit()?) } else { None })
    }

    fn accepted(&mut self) -> Result<Accepted, DecodeError> {
        Ok(Accepted { instance: self.u32()?, ballot: self.u64()?, vote: self.vote()? })
    }

    fn accepted_list(&mut self) -> Result<Vec<Accepted>, DecodeError> {
        let n = self.len(2 * TXN_TRANSFERS_MAX)?;
        (0..n).map(|_| self.accepted()).collect()
    }
}

/// `txn` as records and messages carry it, encoded the first time it is asked for.
pub(crate) fn encoded_txn(txn: &Txn) -> &[u8] {
    txn.encoded().get_or_init(|| {
        // About the bench's compact transfers and their placement: a guess, so that the
        // buffer seldom grows (it is copied at each doubling).
        let mut w = Writer(Vec::with_capacity(16 + 40 * txn.transfers.len()));
        w.txn_fields(txn);
        w.0
    })
}

/// About what `write_entry` writes for `entry` (exactly, for its transaction, whose
/// encoding this makes now), so that a round's buffer is allocated once: grown by
/// doubling, the buffer of a round of prepares (hundreds of KiB) was copied and
/// faulted in again at each step, the largest kernel cost of the engine thread.
fn entry_len_hint(entry: &Entry) -> usize {
    let commit = |commit: &Commit| {
        let aborted: usize = commit.aborted.iter().map(|a| 16 + 4 * a.results.len()).sum();
        // Varint amounts: three bytes hold amounts below 2^21.
        16 + 3 * commit.amounts.len() + aborted
    };
    let outcome = |outcome: &Outcome| match outcome {
        Outcome::Commit(c) => commit(c),
        Outcome::Abort { results, .. } => 8 + 4 * results.len(),
    };
    let record = match &entry.record {
        Record::Local { transfers, .. } => RECORD_SIZE * transfers.len(),
        Record::Prepare { txn } => encoded_txn(txn).len(),
        Record::PreCommit { commit: c, .. } => commit(c),
        Record::CoordinatorPreCommit { txn, commit: c } => encoded_txn(txn).len() + commit(c),
        Record::Decide { txn, outcome: o } | Record::Resolve { txn, outcome: o } => {
            encoded_txn(txn).len() + outcome(o)
        }
        Record::DecidePrepared { outcome: o, .. } | Record::ResolvePrepared { outcome: o, .. } => {
            outcome(o)
        }
        Record::DecideLast { txn, votes } => {
            let sides: usize = votes
                .iter()
                .map(|(_, vote)| match vote {
                    Vote::Sides(entries) => entries.len(),
                    Vote::Aborted => 0,
                })
                .sum();
            // A side: index, side, tag, amount and ledger (below 2^21 and 2^14 as
            // varints), timestamp's distance (below 2^14); a rejection's 10 bytes.
            encoded_txn(txn).len() + 16 * votes.len() + 12 * sides
        }
        Record::Forget { txns } => 16 * txns.len(),
        Record::ShardMap(map) => map.shards.iter().map(|s| 12 + 8 * s.replicas.len()).sum(),
        Record::Pulse | Record::ReadPoint { .. } => 0,
    };
    // Tag, timestamp, kind, and the fixed fields of any record.
    64 + record
}

/// Encodes an entry for a shard's log.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(entry_len_hint(entry)));
    write_entry(&mut w, entry);
    w.0
}

fn write_entry(w: &mut Writer, entry: &Entry) {
    w.u8(ENTRY_TAG);
    w.u64(entry.timestamp);
    match &entry.record {
        Record::Local { client, transfers } => {
            w.u8(0);
            w.u64(*client);
            w.len(transfers.len());
            for transfer in transfers {
                w.0.extend_from_slice(&transfer.to_bytes());
            }
        }
        Record::Prepare { txn } => {
            w.u8(1);
            w.txn(txn);
        }
        Record::PreCommit { txn, commit } => {
            w.u8(2);
            w.u128(*txn);
            w.commit(commit);
        }
        Record::CoordinatorPreCommit { txn, commit } => {
            w.u8(3);
            w.txn(txn);
            w.commit(commit);
        }
        Record::Decide { txn, outcome } => {
            w.u8(4);
            w.txn(txn);
            w.outcome(outcome);
        }
        Record::Resolve { txn, outcome } => {
            w.u8(5);
            w.txn(txn);
            w.outcome(outcome);
        }
        Record::DecidePrepared { txn, digest, outcome } => {
            w.u8(11);
            w.u128(*txn);
            w.u128(*digest);
            w.outcome(outcome);
        }
        Record::ResolvePrepared { txn, digest, outcome } => {
            w.u8(10);
            w.u128(*txn);
            w.u128(*digest);
            w.outcome(outcome);
        }
        Record::DecideLast { txn, votes } => {
            w.u8(12);
            w.txn(txn);
            w.compact_votes(votes);
        }
        Record::Pulse => w.u8(7),
        Record::ReadPoint { client, at, incarnation } => {
            w.u8(8);
            w.u64(*client);
            w.u64(*at);
            w.u32(*incarnation);
        }
        Record::Forget { txns } => {
            w.u8(6);
            w.len(txns.len());
            for id in txns {
                w.u128(*id);
            }
        }
        Record::ShardMap(map) => {
            w.u8(9);
            w.shard_map(map);
        }
    }
}

/// Encodes several entries as one log entry: a shard's leader writes what its core
/// asked for in one round as one Raft entry, not one each. Applied in order.
pub fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    assert!(entries.len() <= ENTRIES_MAX, "a bounded batch of entries");
    let capacity = 5 + entries.iter().map(|entry| 4 + entry_len_hint(entry)).sum::<usize>();
    let mut w = Writer(Vec::with_capacity(capacity));
    w.u8(ENTRIES_TAG);
    w.len(entries.len());
    for entry in entries {
        // Each entry written in place after its length, which is filled in after.
        let at = w.0.len();
        w.len(0);
        write_entry(&mut w, entry);
        let len = (w.0.len() - at - 4) as u32;
        w.0[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    w.0
}

/// Decodes what [`encode_entries`] wrote.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    match r.u8()? {
        ENTRIES_TAG => {}
        tag => return Err(DecodeError::BadTag(tag)),
    }
    let n = r.len(ENTRIES_MAX)?;
    let mut entries = Vec::with_capacity(n.min(bytes.len() / 8));
    for _ in 0..n {
        let len = r.len(bytes.len())?;
        entries.push(decode_entry(r.take(len)?)?);
    }
    r.end()?;
    Ok(entries)
}

/// Decodes an entry encoded by [`encode_entry`].
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    match r.u8()? {
        ENTRY_TAG => {}
        tag => return Err(DecodeError::BadTag(tag)),
    }
    let timestamp = r.u64()?;
    let record = match r.u8()? {
        0 => {
            let client: ClientRef = r.u64()?;
            let n = r.len(settle_ledger::BATCH_EVENTS_MAX)?;
            let mut transfers = Vec::with_capacity(n);
            for _ in 0..n {
                let bytes: &[u8; RECORD_SIZE] =
                    r.take(RECORD_SIZE)?.try_into().expect("a record's size");
                transfers.push(Transfer::from_bytes(bytes));
            }
            Record::Local { client, transfers }
        }
        1 => Record::Prepare { txn: r.txn()? },
        2 => Record::PreCommit { txn: r.u128()?, commit: r.commit()? },
        3 => Record::CoordinatorPreCommit { txn: r.txn()?, commit: r.commit()? },
        4 => Record::Decide { txn: r.txn()?, outcome: r.outcome()? },
        5 => Record::Resolve { txn: r.txn()?, outcome: r.outcome()? },
        6 => {
            let n = r.len(FORGET_MAX)?;
            Record::Forget { txns: (0..n).map(|_| r.u128()).collect::<Result<_, _>>()? }
        }
        7 => Record::Pulse,
        8 => Record::ReadPoint { client: r.u64()?, at: r.u64()?, incarnation: r.u32()? },
        9 => Record::ShardMap(r.shard_map()?),
        10 => Record::ResolvePrepared { txn: r.u128()?, digest: r.u128()?, outcome: r.outcome()? },
        11 => Record::DecidePrepared { txn: r.u128()?, digest: r.u128()?, outcome: r.outcome()? },
        12 => Record::DecideLast { txn: r.txn()?, votes: r.compact_votes()? },
        _ => return Err(DecodeError::Invalid("record kind")),
    };
    r.end()?;
    Ok(Entry { timestamp, record })
}

/// Encodes a protocol message for the wire.
pub fn encode_message(message: &Message) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(MESSAGE_TAG);
    w.u128(message.txn);
    w.u32(message.depth);
    match &message.body {
        Body::Prepared { txn, vote } => {
            w.u8(0);
            w.txn(txn);
            w.vote(vote);
        }
        Body::BeginCommit { txn } => {
            w.u8(1);
            w.txn(txn);
        }
        Body::Prepare { txn } => {
            w.u8(2);
            w.txn(txn);
        }
        Body::Vote { vote } => {
            w.u8(3);
            w.vote(vote);
        }
        Body::PreCommit { txn, commit } => {
            w.u8(4);
            w.txn(txn);
            w.commit(commit);
        }
        Body::PreCommitAck { aborted } => {
            w.u8(5);
            w.u8(u8::from(*aborted));
        }
        Body::Decision { txn, outcome } => {
            w.u8(6);
            w.txn(txn);
            w.outcome(outcome);
        }
        Body::Inquire { txn } => {
            w.u8(7);
            w.txn(txn);
        }
        Body::StateRequest { txn } => {
            w.u8(8);
            w.txn(txn);
        }
        Body::StateReply { state, outcome, commit } => {
            w.u8(9);
            w.u8(*state as u8);
            w.option_outcome(outcome);
            w.option_commit(commit);
        }
        Body::Phase2a { txn, accepted } => {
            w.u8(10);
            w.txn(txn);
            w.accepted(accepted);
        }
        Body::Phase2b { from, accepted } => {
            w.u8(11);
            w.u8(*from);
            w.accepted_list(accepted);
        }
        Body::Phase1a { txn, ballot } => {
            w.u8(12);
            w.txn(txn);
            w.u64(*ballot);
        }
        Body::Resolved => w.u8(14),
        Body::Replicas { shard, replicas } => {
            w.u8(15);
            w.u64(*shard);
            w.len(replicas.len());
            for &node in replicas {
                w.u64(node);
            }
        }
        Body::Phase1b { from, ballot, accepted, rejected } => {
            w.u8(13);
            w.u8(*from);
            w.u64(*ballot);
            w.accepted_list(accepted);
            match rejected {
                Some(higher) => {
                    w.u8(1);
                    w.u64(*higher);
                }
                None => w.u8(0),
            }
        }
    }
    w.0
}

/// Decodes a message encoded by [`encode_message`].
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    match r.u8()? {
        MESSAGE_TAG => {}
        tag => return Err(DecodeError::BadTag(tag)),
    }
    let txn = r.u128()?;
    let depth = r.u32()?;
    let body = match r.u8()? {
        0 => Body::Prepared { txn: r.txn()?, vote: r.vote()? },
        1 => Body::BeginCommit { txn: r.txn()? },
        2 => Body::Prepare { txn: r.txn()? },
        3 => Body::Vote { vote: r.vote()? },
        4 => Body::PreCommit { txn: r.txn()?, commit: r.commit()? },
        5 => Body::PreCommitAck { aborted: r.bool()? },
        6 => Body::Decision { txn: r.txn()?, outcome: r.outcome()? },
        7 => Body::Inquire { txn: r.txn()? },
        8 => Body::StateRequest { txn: r.txn()? },
        9 => {
            let state = match r.u8()? {
                0 => ThreePhaseState::Unprepared,
                1 => ThreePhaseState::Uncertain,
                2 => ThreePhaseState::PreCommitted,
                3 => ThreePhaseState::Committed,
                4 => ThreePhaseState::Aborted,
                _ => return Err(DecodeError::Invalid("3pc state")),
            };
            Body::StateReply { state, outcome: r.option_outcome()?, commit: r.option_commit()? }
        }
        10 => Body::Phase2a { txn: r.txn()?, accepted: r.accepted()? },
        11 => Body::Phase2b { from: r.u8()?, accepted: r.accepted_list()? },
        12 => Body::Phase1a { txn: r.txn()?, ballot: r.u64()? },
        13 => {
            let (from, ballot, accepted) = (r.u8()?, r.u64()?, r.accepted_list()?);
            let rejected = if r.bool()? { Some(r.u64()?) } else { None };
            Body::Phase1b { from, ballot, accepted, rejected }
        }
        14 => Body::Resolved,
        15 => {
            let shard = r.u64()?;
            let n = r.len(crate::shard_map::REPLICAS_MAX)?;
            let replicas = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
            Body::Replicas { shard, replicas }
        }
        _ => return Err(DecodeError::Invalid("message kind")),
    };
    r.end()?;
    Ok(Message { txn, depth, body })
}

/// Encodes an acceptor's state for one transaction (for its disk).
pub fn encode_acceptor(state: &crate::acceptor::AcceptorTxn) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.u8(ACCEPTOR_TAG);
    w.txn(&state.txn);
    w.u64(state.promised);
    let accepted: Vec<Accepted> = state.accepted.values().cloned().collect();
    w.accepted_list(&accepted);
    w.0
}

/// Decodes what [`encode_acceptor`] wrote.
pub fn decode_acceptor(bytes: &[u8]) -> Result<crate::acceptor::AcceptorTxn, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    match r.u8()? {
        ACCEPTOR_TAG => {}
        tag => return Err(DecodeError::BadTag(tag)),
    }
    let txn = r.txn()?;
    let promised = r.u64()?;
    let accepted = r.accepted_list()?.into_iter().map(|a| (a.instance, a)).collect();
    r.end()?;
    Ok(crate::acceptor::AcceptorTxn { txn, promised, accepted })
}

/// Encodes a shard's protocol records (for its snapshots).
pub fn encode_records(
    participants: &BTreeMap<TxnId, ParticipantRecord>,
    coordinated: &BTreeMap<TxnId, CoordinatorRecord>,
    map: Option<&ShardMap>,
) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    w.u8(STATE_TAG);
    w.u64(participants.len() as u64);
    for record in participants.values() {
        w.txn(&record.txn);
        w.vote(&record.vote);
        w.option_commit(&record.precommitted);
        w.option_outcome(&record.outcome);
    }
    w.u64(coordinated.len() as u64);
    for record in coordinated.values() {
        match record {
            CoordinatorRecord::PreCommitted { txn, commit } => {
                w.u8(0);
                w.txn(txn);
                w.commit(commit);
            }
            CoordinatorRecord::Decided { txn, outcome } => {
                w.u8(1);
                w.txn(txn);
                w.outcome(outcome);
            }
        }
    }
    if let Some(map) = map {
        w.u8(1);
        w.shard_map(map);
    }
    w.0
}

/// Protocol records, as a snapshot holds them.
pub type Records =
    (BTreeMap<TxnId, ParticipantRecord>, BTreeMap<TxnId, CoordinatorRecord>, Option<ShardMap>);

/// Decodes what [`encode_records`] wrote; empty bytes are no records.
pub fn decode_records(bytes: &[u8]) -> Result<Records, DecodeError> {
    let (mut participants, mut coordinated) = (BTreeMap::new(), BTreeMap::new());
    if bytes.is_empty() {
        return Ok((participants, coordinated, None));
    }
    let mut r = Reader { bytes, at: 0 };
    match r.u8()? {
        STATE_TAG => {}
        tag => return Err(DecodeError::BadTag(tag)),
    }
    let n = r.u64()?;
    if n > STATE_RECORDS_MAX {
        return Err(DecodeError::Invalid("participant record count"));
    }
    for _ in 0..n {
        let txn = r.txn()?;
        let vote = r.vote()?;
        let precommitted = r.option_commit()?;
        let outcome = r.option_outcome()?;
        let id = txn.id();
        let record = ParticipantRecord { txn, vote, precommitted, outcome };
        if participants.insert(id, record).is_some() {
            return Err(DecodeError::Invalid("duplicate participant record"));
        }
    }
    let n = r.u64()?;
    if n > STATE_RECORDS_MAX {
        return Err(DecodeError::Invalid("coordinator record count"));
    }
    for _ in 0..n {
        let record = match r.u8()? {
            0 => CoordinatorRecord::PreCommitted { txn: r.txn()?, commit: r.commit()? },
            1 => CoordinatorRecord::Decided { txn: r.txn()?, outcome: r.outcome()? },
            _ => return Err(DecodeError::Invalid("coordinator record")),
        };
        let id = match &record {
            CoordinatorRecord::PreCommitted { txn, .. }
            | CoordinatorRecord::Decided { txn, .. } => txn.id(),
        };
        if coordinated.insert(id, record).is_some() {
            return Err(DecodeError::Invalid("duplicate coordinator record"));
        }
    }
    // The shard map (the metadata shard's), after the records; snapshots written
    // before there was one end here.
    let map = if r.at < bytes.len() {
        match r.u8()? {
            1 => Some(r.shard_map()?),
            _ => return Err(DecodeError::Invalid("map section")),
        }
    } else {
        None
    };
    r.end()?;
    Ok((participants, coordinated, map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{Protocol, UnitAbort};

    /// The credit shard's vote for every transfer of `txn`: prepared, 2^20 each, at
    /// consecutive timestamps.
    fn prepared_votes(txn: &Txn) -> Vote {
        let entry = |i: usize| SideEntry {
            transfer: i as u16,
            side: Side::Credit,
            vote: SideVote::Prepared { amount: 1 << 20, account_ledger: 1 },
            at: 1_700_000_000_000_000_000 + i as u64,
        };
        Vote::Sides((0..txn.transfers.len()).map(entry).collect())
    }

    /// The hint holds what is written, so a round's buffer is not grown (and copied).
    #[test]
    fn an_entrys_length_hint_holds_it() {
        let transfer = |id: u128| Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 1 << 20,
            ledger: 1,
            code: 1,
            ..Default::default()
        };
        let transfers: Vec<Transfer> = (1..=1024).map(transfer).collect();
        let txn = Txn::new(Protocol::TwoPhase, transfers[..1].to_vec(), vec![[0, 1]])
            .expect("a transaction");
        let batch = Txn::batch(
            Protocol::TwoPhase,
            transfers.clone(),
            vec![[0, 1]; 1024],
            (1..=1024).collect(),
        )
        .expect("a batch");
        let abort = UnitAbort { unit: 3, results: vec![R::ExceedsCredits; 2], record_failed: true };
        let commit = Commit { amounts: vec![1 << 20; 1024], at: 7, aborted: vec![abort] };
        let records = vec![
            Record::Local { client: 1, transfers: transfers.clone() },
            Record::Prepare { txn: txn.clone() },
            Record::Prepare { txn: batch.clone() },
            Record::Decide { txn: batch.clone(), outcome: Outcome::Commit(commit.clone()) },
            Record::Resolve { txn: batch.clone(), outcome: Outcome::gave_up(&batch) },
            Record::DecidePrepared {
                txn: batch.id(),
                digest: batch.digest(),
                outcome: Outcome::Commit(commit.clone()),
            },
            Record::ResolvePrepared {
                txn: batch.id(),
                digest: 7,
                outcome: Outcome::Commit(commit),
            },
            Record::Forget { txns: (0..100).collect() },
            Record::Pulse,
            Record::DecideLast { txn: batch.clone(), votes: vec![(1, prepared_votes(&batch))] },
        ];
        for record in records {
            let entry = Entry { timestamp: 9, record };
            let written = encode_entry(&entry).len();
            assert!(entry_len_hint(&entry) >= written, "{written} bytes: {:?}", entry.record);
        }
    }
}
