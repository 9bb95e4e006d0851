//! Snapshot reads at a hybrid-logical-clock timestamp: one shard's part of a read that
//! sees, across every shard, exactly the transactions whose agreed commit timestamp is
//! at or before `T` (DESIGN.md, guarantee 6).
//!
//! How one shard serves its part of a read at `T`:
//! 1. **The read point.** The leader writes `Record::ReadPoint { at: T }` to its group.
//!    Applying it is a pulse at `T`: pending transfers due by `T` expire, and the
//!    shard's clock moves to `T`, so everything this shard does afterwards is stamped
//!    after `T`. When the clock is already past `T` the read is refused (`TooOld`, with
//!    the clock): the reader tries again later (it cannot see the past without
//!    versions, which the ledger does not keep).
//! 2. **Capture.** At that point in the log the leader copies the requested accounts,
//!    and notes every side of them that is prepared here and not yet resolved.
//! 3. **Wait.** Such a side's transaction may commit at or before `T` or after it; the
//!    read waits until this shard carries out each one's outcome, then corrects the
//!    copies from the side as captured and the outcome (`Ledger::snapshot_side`; the
//!    ledger keeps no record of a committed plain side): committed with an agreed
//!    timestamp at or before `T` means included, otherwise excluded.
//!
//! Why the parts agree (the agreed timestamp is the latest prepare timestamp, and a
//! participant moves its clock to it before committing, see `Commit::at`): a
//! transaction committed at a shard before its read point has `at <= clock <= T`; one
//! not yet prepared at a shard's read point prepares, and so commits, after `T`; the
//! rest are in doubt and resolved by the rule above. So every shard includes the same
//! transactions, and a snapshot conserves money across shards.
//!
//! Only the leader that wrote the read point serves it; a change of leader ends every
//! read in flight (`ReadError::Interrupted`) and the reader tries again. Every wait has
//! a limit: reads in flight (`READS_MAX`), accounts per read (`READ_ACCOUNTS_MAX`), and
//! how long a read may wait for transactions in doubt (`Config::read_wait_ms`).

use std::collections::{BTreeMap, BTreeSet};

use settle_ledger::store::{ReservationState, Store};
use settle_ledger::{Account, Side, SideFate, SideVote, Transfer};

use crate::message::ClientRef;
use crate::state::ShardState;
use crate::txn::{Outcome, Txn, TxnId};

/// Most reads one shard serves at once.
pub const READS_MAX: usize = 1_024;
/// Most accounts in one read (a request's batch limit).
pub const READ_ACCOUNTS_MAX: usize = settle_ledger::BATCH_EVENTS_MAX;

/// One shard's part of a snapshot read: the accounts it holds, as of `at`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPart {
    pub at: u64,
    /// The requested accounts this shard holds, in request order.
    pub accounts: Vec<Account>,
}

/// Why a shard could not serve its part of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The shard's clock is already past the read's timestamp: read at `clock` or later.
    TooOld { clock: u64 },
    /// The timestamp is beyond what the ledger accepts.
    OutOfRange,
    /// Too many reads in flight, or too many accounts in one: retry later or smaller.
    Overloaded,
    /// Transactions stayed in doubt longer than a read may wait.
    InDoubt,
    /// The shard changed leader while the read was in flight: retry.
    Interrupted,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooOld { clock } => write!(f, "the shard's clock is already at {clock}"),
            ReadError::OutOfRange => write!(f, "the timestamp is out of range"),
            ReadError::Overloaded => write!(f, "too many reads in flight"),
            ReadError::InDoubt => write!(f, "transactions stayed in doubt too long"),
            ReadError::Interrupted => write!(f, "the shard changed leader during the read"),
        }
    }
}

/// A read whose point is written or being written.
#[derive(Debug)]
struct Read {
    at: u64,
    started_ms: u64,
    /// Requested ids until the point is applied.
    requested: Vec<u128>,
    /// Once captured: the accounts as of the read point...
    accounts: Vec<Account>,
    /// ...and the sides still in doubt there.
    sides: Vec<InDoubt>,
    captured: bool,
}

/// A side a read waits for.
#[derive(Debug)]
struct InDoubt {
    txn: TxnId,
    /// The side's transfer's index in its transaction.
    index: usize,
    side: Side,
    /// The transfer as this side reserved it.
    reserved: Transfer,
    /// Index into the read's `accounts`.
    account: usize,
}

/// The reads a shard's core is serving (volatile: a new leader starts with none).
#[derive(Debug, Default)]
pub(crate) struct Reads {
    reads: BTreeMap<ClientRef, Read>,
    /// Which reads wait for each transaction in doubt (entries of reads that ended are
    /// dropped when the transaction resolves, or with the core).
    waiting: BTreeMap<TxnId, BTreeSet<ClientRef>>,
}

/// A finished read, to answer.
pub(crate) type Answer = (ClientRef, Result<SnapshotPart, ReadError>);

impl Reads {
    /// Starts a read; the caller writes its read point.
    pub fn begin(
        &mut self,
        client: ClientRef,
        at: u64,
        accounts: Vec<u128>,
        now_ms: u64,
    ) -> Result<(), ReadError> {
        if self.reads.len() >= READS_MAX
            || accounts.len() > READ_ACCOUNTS_MAX
            || self.reads.contains_key(&client)
        {
            return Err(ReadError::Overloaded);
        }
        // Each account once (the caller puts the answer back in request order).
        let mut seen = std::collections::BTreeSet::new();
        let accounts: Vec<u128> = accounts.into_iter().filter(|id| seen.insert(*id)).collect();
        let read = Read {
            at,
            started_ms: now_ms,
            requested: accounts,
            accounts: Vec::new(),
            sides: Vec::new(),
            captured: false,
        };
        self.reads.insert(client, read);
        Ok(())
    }

    /// The read point of `client` (written by this leader) was applied to `state` with
    /// `result`: capture, and answer every read that has nothing in doubt.
    pub fn point(
        &mut self,
        client: ClientRef,
        result: Result<(), ReadError>,
        state: &ShardState,
    ) -> Vec<Answer> {
        let Some(read) = self.reads.get_mut(&client) else { return Vec::new() };
        // A point not at this read's timestamp, or a second one, is not this read's
        // (the shell reused a token): end the read rather than answer wrongly.
        let result = match result {
            Ok(()) if read.captured || state.ledger.commit_timestamp() != read.at => {
                Err(ReadError::Interrupted)
            }
            other => other,
        };
        if let Err(error) = result {
            self.reads.remove(&client);
            return vec![(client, Err(error))];
        }
        let store = state.ledger.store();
        read.accounts = read.requested.drain(..).filter_map(|id| store.account(id)).collect();
        let index: BTreeMap<u128, usize> =
            read.accounts.iter().enumerate().map(|(i, account)| (account.id, i)).collect();
        // The sides each transaction in doubt holds prepared here (its own: a side
        // another one holds is that one's), with their reservations as captured.
        for record in state.in_doubt() {
            for (i, side, vote) in record.vote.own_sides(&record.txn, state.shard) {
                if !matches!(vote, Some(SideVote::Prepared { .. })) {
                    continue;
                }
                let id = record.txn.transfers[i].id;
                // (A refused resolution may have left some sides carried out.)
                let Some(reservation) = store.reservation(id, side) else { continue };
                if reservation.state != ReservationState::Prepared {
                    continue;
                }
                // The reservation names the account (a post or void's is its pending
                // transfer's).
                let account_id = match side {
                    Side::Debit => reservation.transfer.debit_account_id,
                    Side::Credit => reservation.transfer.credit_account_id,
                };
                if let Some(&account) = index.get(&account_id) {
                    let txn = record.txn.id();
                    let reserved = reservation.transfer;
                    read.sides.push(InDoubt { txn, index: i, side, reserved, account });
                }
            }
        }
        read.captured = true;
        if read.sides.is_empty() {
            return self.answer(client).into_iter().collect();
        }
        for side in &read.sides {
            self.waiting.entry(side.txn).or_default().insert(client);
        }
        Vec::new()
    }

    /// This shard carried out `outcome` of `txn`: corrects the reads that wait for its
    /// sides, and answers those it was the last one in doubt for.
    pub fn resolved(&mut self, txn: &Txn, outcome: &Outcome, state: &ShardState) -> Vec<Answer> {
        let id = txn.id();
        let clients = self.waiting.remove(&id).unwrap_or_default();
        let mut answers = Vec::new();
        for client in clients {
            let Some(read) = self.reads.get_mut(&client) else { continue };
            let (at, accounts) = (read.at, &mut read.accounts);
            read.sides.retain(|side| {
                if side.txn != id {
                    return true;
                }
                let fate = match outcome {
                    Outcome::Commit(commit) if commit.commits(txn, side.index) => {
                        let amount = commit.amounts[side.index];
                        SideFate::Committed { agreed_at: commit.at, amount }
                    }
                    _ => SideFate::Released,
                };
                let account = &mut accounts[side.account];
                state.ledger.snapshot_side(account, &side.reserved, side.side, at, fate);
                false
            });
            if read.sides.is_empty() {
                answers.extend(self.answer(client));
            }
        }
        answers
    }

    /// The answer of a captured read with nothing left in doubt.
    fn answer(&mut self, client: ClientRef) -> Option<Answer> {
        let read = self.reads.remove(&client)?;
        debug_assert!(read.captured && read.sides.is_empty());
        Some((client, Ok(SnapshotPart { at: read.at, accounts: read.accounts })))
    }

    /// Gives up reads that waited longer than `wait_ms` for transactions in doubt.
    pub fn expire(&mut self, now_ms: u64, wait_ms: u64) -> Vec<Answer> {
        let late: Vec<ClientRef> = self
            .reads
            .iter()
            .filter(|(_, read)| now_ms.saturating_sub(read.started_ms) > wait_ms)
            .map(|(client, _)| *client)
            .collect();
        late.into_iter()
            .map(|client| {
                self.reads.remove(&client);
                (client, Err(ReadError::InDoubt))
            })
            .collect()
    }

    /// Ends every read in flight (a change of leader).
    pub fn interrupt(&mut self) -> Vec<Answer> {
        self.waiting.clear();
        std::mem::take(&mut self.reads)
            .into_keys()
            .map(|client| (client, Err(ReadError::Interrupted)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.reads.len()
    }
}
