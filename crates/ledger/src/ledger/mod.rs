//! The ledger state machine: executes batches of events against a [`Store`].
//!
//! - `mod.rs` (this file): [`Ledger`], batch validation and timestamps, linked chains,
//!   the imported-event checks shared by both create operations, and expiry.
//! - `create_account.rs`, `create_transfer.rs`: the per-event checks, in the order of
//!   `SEMANTICS.md`.
//! - `queries.rs`: read-only queries.
//! - `cross_shard.rs`: one-sided reserve / post / release, for cross-shard commit.
//! - `digest.rs`: the deterministic state digest.
//!
//! May touch: the store through the [`Store`] trait, nothing else. No IO, no clock, no
//! randomness: every input comes in through the arguments.

mod create_account;
mod create_transfer;
mod cross_shard;
mod digest;
mod queries;

pub use cross_shard::{
    combine_votes, Decision, Side, SideError, SideFate, SideResolution, SideVote,
};
use cross_shard::{pending_balance, side_account};

use crate::store::{MemStore, PendingState, Store};
use crate::types::{AccountFlags, Transfer, TransferFlags, BATCH_EVENTS_MAX, TIMESTAMP_MAX};

/// A batch the ledger refuses as a whole, before executing any event. Nothing changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// More than [`BATCH_EVENTS_MAX`] events.
    TooManyEvents { count: usize },
    /// The batch timestamp would give an event a timestamp at or before
    /// `commit_timestamp`.
    TimestampRegressed { timestamp: u64, commit_timestamp: u64 },
    /// The batch timestamp is above [`TIMESTAMP_MAX`].
    TimestampOutOfRange { timestamp: u64 },
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::TooManyEvents { count } => {
                write!(f, "batch has {count} events; at most {BATCH_EVENTS_MAX} are allowed")
            }
            BatchError::TimestampRegressed { timestamp, commit_timestamp } => write!(
                f,
                "batch timestamp {timestamp} does not leave room after commit timestamp \
                 {commit_timestamp}"
            ),
            BatchError::TimestampOutOfRange { timestamp } => {
                write!(f, "batch timestamp {timestamp} is above {TIMESTAMP_MAX}")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// Events whose accounts are touched together, before they execute. Executing an
/// event reads its two account rows, each a likely cache miss (10,000 rows do not
/// stay in a core's cache while a batch's records stream through it), and one event's
/// reads wait for each other. Touching a group's rows in one tight loop of independent
/// reads lets the CPU have them all in flight at once; the group is small enough that
/// its rows are still in cache when the events execute.
const TOUCH_AHEAD_EVENTS: usize = 32;

/// The ledger: a deterministic state machine over a [`Store`].
pub struct Ledger<S: Store = MemStore> {
    store: S,
    /// The last timestamp assigned to a batch. Every later event's timestamp is above it.
    commit_timestamp: u64,
}

impl Default for Ledger<MemStore> {
    fn default() -> Self {
        Ledger::new(MemStore::default())
    }
}

/// What the batch driver needs to know of an event, for both create operations.
trait Event: Copy {
    fn linked(&self) -> bool;
    fn imported(&self) -> bool;
    fn timestamp(&self) -> u64;
    fn set_timestamp(&mut self, timestamp: u64);
    /// The accounts the event will read, to touch ahead (zero: none).
    fn accounts(&self) -> [u128; 2];
}

impl Event for crate::types::Account {
    fn linked(&self) -> bool {
        self.flags.contains(AccountFlags::LINKED)
    }
    fn imported(&self) -> bool {
        self.flags.contains(AccountFlags::IMPORTED)
    }
    fn timestamp(&self) -> u64 {
        self.timestamp
    }
    fn set_timestamp(&mut self, timestamp: u64) {
        self.timestamp = timestamp;
    }
    fn accounts(&self) -> [u128; 2] {
        [0; 2]
    }
}

impl Event for Transfer {
    fn linked(&self) -> bool {
        self.flags.contains(TransferFlags::LINKED)
    }
    fn imported(&self) -> bool {
        self.flags.contains(TransferFlags::IMPORTED)
    }
    fn timestamp(&self) -> u64 {
        self.timestamp
    }
    fn set_timestamp(&mut self, timestamp: u64) {
        self.timestamp = timestamp;
    }
    fn accounts(&self) -> [u128; 2] {
        [self.debit_account_id, self.credit_account_id]
    }
}

/// The results the batch driver itself produces, for both create operations.
trait BatchResult: Copy + Eq {
    const OK: Self;
    const LINKED_EVENT_FAILED: Self;
    const LINKED_EVENT_CHAIN_OPEN: Self;
    const IMPORTED_EVENT_EXPECTED: Self;
    const IMPORTED_EVENT_NOT_EXPECTED: Self;
    const TIMESTAMP_MUST_BE_ZERO: Self;
    const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Self;
    const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Self;
}

macro_rules! batch_result {
    ($t:ty) => {
        impl BatchResult for $t {
            const OK: Self = <$t>::Ok;
            const LINKED_EVENT_FAILED: Self = <$t>::LinkedEventFailed;
            const LINKED_EVENT_CHAIN_OPEN: Self = <$t>::LinkedEventChainOpen;
            const IMPORTED_EVENT_EXPECTED: Self = <$t>::ImportedEventExpected;
            const IMPORTED_EVENT_NOT_EXPECTED: Self = <$t>::ImportedEventNotExpected;
            const TIMESTAMP_MUST_BE_ZERO: Self = <$t>::TimestampMustBeZero;
            const IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE: Self =
                <$t>::ImportedEventTimestampOutOfRange;
            const IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE: Self =
                <$t>::ImportedEventTimestampMustNotAdvance;
        }
    };
}
batch_result!(crate::results::CreateAccountResult);
batch_result!(crate::results::CreateTransferResult);

impl Ledger<MemStore> {
    /// Captures the whole state for writing later, possibly on another thread.
    pub fn snapshot_source(&self) -> std::io::Result<crate::store::SnapshotSource> {
        self.store.snapshot_source(self.commit_timestamp)
    }

    /// Writes the whole state as a checksummed snapshot (see `MemStore::write_snapshot`).
    pub fn write_snapshot<W: std::io::Write>(&self, out: W) -> std::io::Result<()> {
        self.store.write_snapshot(self.commit_timestamp, out)
    }

    /// The ledger a snapshot of `len` bytes holds, read into `store` (empty); `open` is
    /// called once per pass.
    pub fn read_snapshot<R: std::io::Read>(
        store: MemStore,
        len: u64,
        open: impl FnMut() -> std::io::Result<R>,
    ) -> Result<Self, crate::store::SnapshotError> {
        Ok(Self::read_snapshot_with_extension(store, len, open)?.0)
    }

    /// As [`Ledger::read_snapshot`], with the extension bytes the snapshot carries
    /// (`SnapshotSource::set_extension`; empty if none).
    pub fn read_snapshot_with_extension<R: std::io::Read>(
        store: MemStore,
        len: u64,
        open: impl FnMut() -> std::io::Result<R>,
    ) -> Result<(Self, Vec<u8>), crate::store::SnapshotError> {
        let (store, commit_timestamp, extension) = MemStore::read_snapshot(store, len, open)?;
        let mut ledger = Ledger::new(store);
        ledger.observe_timestamp(commit_timestamp);
        Ok((ledger, extension))
    }
}

impl<S: Store> Ledger<S> {
    /// The earliest deadline of a pending transfer, if any: when a pulse
    /// (`expire_pending_transfers`) will have something to do.
    pub fn next_expiry(&self) -> Option<u64> {
        self.store.first_expired(u64::MAX).map(|(expires_at, _)| expires_at)
    }

    /// A ledger over `store`. The store must be empty or hold state this ledger kind
    /// wrote; `commit_timestamp` is recovered as the newest record's timestamp.
    pub fn new(store: S) -> Self {
        let commit_timestamp = store.account_timestamp_max().max(store.transfer_timestamp_max());
        Ledger { store, commit_timestamp }
    }

    /// The last timestamp assigned to a batch.
    pub fn commit_timestamp(&self) -> u64 {
        self.commit_timestamp
    }

    /// Raises the commit timestamp to at least `timestamp` (used on recovery, when the
    /// newest batch may have left no record behind).
    pub fn observe_timestamp(&mut self, timestamp: u64) {
        self.commit_timestamp = self.commit_timestamp.max(timestamp);
    }

    /// A valid timestamp for a batch of `event_count` events, as close to `now_ns` as
    /// allowed: the wall clock may go backwards, timestamps never do.
    pub fn next_batch_timestamp(&self, now_ns: u64, event_count: usize) -> u64 {
        let floor = self.commit_timestamp + event_count.max(1) as u64;
        now_ns.max(floor)
    }

    /// The tables, read-only.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Where the pending transfer `id` stands, if it is one.
    pub fn pending_state(&self, id: u128) -> Option<PendingState> {
        self.store.pending_state(id)
    }

    /// Creates accounts. One result per event; see SEMANTICS.md.
    pub fn create_accounts(
        &mut self,
        timestamp: u64,
        accounts: &[crate::types::Account],
    ) -> Result<Vec<crate::results::CreateAccountResult>, BatchError> {
        self.execute(timestamp, accounts, |ledger, account| ledger.create_account(account))
    }

    /// Creates transfers (including post and void of pending transfers). One result per
    /// event; see SEMANTICS.md.
    pub fn create_transfers(
        &mut self,
        timestamp: u64,
        transfers: &[Transfer],
    ) -> Result<Vec<crate::results::CreateTransferResult>, BatchError> {
        self.execute(timestamp, transfers, |ledger, transfer| {
            let result = ledger.create_transfer(transfer);
            debug_assert!(result != crate::results::CreateTransferResult::LinkedEventFailed);
            result
        })
    }

    /// Expires every pending transfer whose deadline is at or before `timestamp`, as at
    /// the start of a batch (a "pulse"). Returns how many expired.
    pub fn expire_pending_transfers(&mut self, timestamp: u64) -> Result<usize, BatchError> {
        if timestamp > TIMESTAMP_MAX {
            return Err(BatchError::TimestampOutOfRange { timestamp });
        }
        if timestamp < self.commit_timestamp {
            return Err(BatchError::TimestampRegressed {
                timestamp,
                commit_timestamp: self.commit_timestamp,
            });
        }
        let expired = self.expire(timestamp);
        self.commit_timestamp = timestamp;
        Ok(expired)
    }

    fn check_batch(&self, timestamp: u64, count: usize) -> Result<(), BatchError> {
        if count > BATCH_EVENTS_MAX {
            return Err(BatchError::TooManyEvents { count });
        }
        if timestamp > TIMESTAMP_MAX {
            return Err(BatchError::TimestampOutOfRange { timestamp });
        }
        if timestamp < self.commit_timestamp + count as u64 {
            return Err(BatchError::TimestampRegressed {
                timestamp,
                commit_timestamp: self.commit_timestamp,
            });
        }
        Ok(())
    }

    /// Runs one create batch: timestamps, expiry, imported checks and linked chains
    /// around `apply`, which checks and applies one event.
    fn execute<E: Event, R: BatchResult>(
        &mut self,
        timestamp: u64,
        events: &[E],
        mut apply: impl FnMut(&mut Self, &E) -> R,
    ) -> Result<Vec<R>, BatchError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.check_batch(timestamp, events.len())?;
        self.expire(timestamp);

        let batch_imported = events[0].imported();
        let first_timestamp = timestamp - events.len() as u64 + 1;
        let mut results: Vec<R> = Vec::with_capacity(events.len());
        // Index of the first event of the open chain, and whether it already failed.
        let mut chain: Option<usize> = None;
        let mut chain_broken = false;

        for (index, event) in events.iter().enumerate() {
            if index % TOUCH_AHEAD_EVENTS == 0 {
                let ahead = &events[index..events.len().min(index + TOUCH_AHEAD_EVENTS)];
                let touched =
                    ahead.iter().fold(0, |sum, e| sum ^ self.store.touch_accounts(e.accounts()));
                std::hint::black_box(touched);
            }
            let mut event = *event;
            let last = index == events.len() - 1;
            if event.linked() && chain.is_none() {
                chain = Some(index);
                self.store.scope_open();
            }
            let result = if event.linked() && last {
                R::LINKED_EVENT_CHAIN_OPEN
            } else if chain_broken {
                R::LINKED_EVENT_FAILED
            } else if batch_imported != event.imported() {
                if event.imported() {
                    R::IMPORTED_EVENT_NOT_EXPECTED
                } else {
                    R::IMPORTED_EVENT_EXPECTED
                }
            } else if event.imported() {
                if event.timestamp() == 0 || event.timestamp() > TIMESTAMP_MAX {
                    R::IMPORTED_EVENT_TIMESTAMP_OUT_OF_RANGE
                } else if event.timestamp() >= timestamp {
                    R::IMPORTED_EVENT_TIMESTAMP_MUST_NOT_ADVANCE
                } else {
                    apply(self, &event)
                }
            } else if event.timestamp() != 0 {
                R::TIMESTAMP_MUST_BE_ZERO
            } else {
                event.set_timestamp(first_timestamp + index as u64);
                apply(self, &event)
            };

            if result != R::OK {
                if let Some(start) = chain {
                    if !chain_broken {
                        chain_broken = true;
                        self.store.scope_close(false);
                        for earlier in &mut results[start..index] {
                            *earlier = R::LINKED_EVENT_FAILED;
                        }
                    }
                }
            }
            results.push(result);

            // The chain ends at its first unlinked event, or at the batch's end.
            if chain.is_some() && (!event.linked() || last) {
                if !chain_broken {
                    self.store.scope_close(true);
                }
                chain = None;
                chain_broken = false;
            }
        }
        assert!(chain.is_none(), "every chain closes by the end of the batch");
        assert_eq!(results.len(), events.len());
        self.commit_timestamp = timestamp;
        Ok(results)
    }

    /// Expires pending transfers whose deadline is at or before `timestamp`, oldest
    /// deadline first. Returns how many expired.
    fn expire(&mut self, timestamp: u64) -> usize {
        let mut expired = 0;
        while let Some((expires_at, id)) = self.store.first_expired(timestamp) {
            assert!(expires_at <= timestamp);
            let pending = self.store.transfer(id).expect("an expiring transfer exists");
            assert_eq!(self.store.pending_state(id), Some(PendingState::Pending));
            self.store.remove_expiry(expires_at, id);
            if self.store.pending_locked_by(id).is_some() {
                // A cross-shard post or void holds it: if that aborts, the abort expires
                // it (`abort_side`); if it commits, it was posted or voided in time.
                continue;
            }
            self.release_pending(&pending, PendingState::Expired, None);
            expired += 1;
        }
        expired
    }

    /// Releases a pending transfer's reservation on both accounts, reopens the accounts
    /// it closed, and marks it `state` (voided or expired). `history_timestamp`: record
    /// history entries at this timestamp (voids do, expiry does not).
    fn release_pending(
        &mut self,
        pending: &Transfer,
        state: PendingState,
        history_timestamp: Option<u64>,
    ) {
        assert!(pending.flags.contains(TransferFlags::PENDING));
        assert!(matches!(state, PendingState::Voided | PendingState::Expired));
        // Both accounts live here, except for a cross-shard pending transfer, whose
        // other side its other shard releases.
        let mut local = 0;
        for side in [Side::Debit, Side::Credit] {
            let Some(mut account) = self.store.account(side_account(pending, side)) else {
                continue;
            };
            local += 1;
            let balance = pending_balance(&mut account, side);
            *balance = balance.checked_sub(pending.amount).expect("reserved");
            if pending.flags.contains(side.closing_flag()) {
                account.flags.remove(AccountFlags::CLOSED);
            }
            self.store.update_account(&account);
            if let Some(timestamp) = history_timestamp {
                self.record_history(&account, timestamp);
            }
        }
        assert!(local > 0, "a pending transfer has a local account");
        self.store.set_pending_state(pending.id, state);
    }

    /// Appends a balance snapshot for an account with `flags.history`.
    fn record_history(&mut self, account: &crate::types::Account, timestamp: u64) {
        if account.flags.contains(AccountFlags::HISTORY) {
            self.store.append_balance(
                account.id,
                crate::types::AccountBalance {
                    debits_pending: account.debits_pending,
                    debits_posted: account.debits_posted,
                    credits_pending: account.credits_pending,
                    credits_posted: account.credits_posted,
                    timestamp,
                    reserved: [0; 56],
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{CreateAccountResult, CreateTransferResult as R};
    use crate::types::{Account, AccountFilter};

    fn account(id: u128, flags: AccountFlags) -> Account {
        Account { id, ledger: 1, code: 1, flags, ..Default::default() }
    }

    fn transfer(id: u128, dr: u128, cr: u128, amount: u128, flags: TransferFlags) -> Transfer {
        Transfer {
            id,
            debit_account_id: dr,
            credit_account_id: cr,
            amount,
            ledger: 1,
            code: 1,
            flags,
            ..Default::default()
        }
    }

    fn ledger_with_accounts() -> Ledger {
        let mut ledger = Ledger::default();
        let accounts = [
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            account(3, AccountFlags::HISTORY),
        ];
        let results = ledger.create_accounts(10, &accounts).unwrap();
        assert!(results.iter().all(|r| *r == CreateAccountResult::Ok));
        ledger
    }

    #[test]
    fn failed_link_rolls_back_the_whole_chain_and_leaves_later_events_alone() {
        let mut ledger = ledger_with_accounts();
        let before = ledger.lookup_accounts(&[1, 2, 3]);
        let batch = [
            transfer(10, 1, 3, 5, TransferFlags::LINKED),
            transfer(11, 3, 1, 2, TransferFlags::LINKED),
            transfer(12, 2, 1, 1, TransferFlags::empty()), // exceeds_credits: breaks chain
            transfer(13, 1, 3, 7, TransferFlags::empty()),
        ];
        let results = ledger.create_transfers(100, &batch).unwrap();
        assert_eq!(results, [R::LinkedEventFailed, R::LinkedEventFailed, R::ExceedsCredits, R::Ok]);
        assert!(ledger.lookup_transfers(&[10, 11, 12]).is_empty());
        let after = ledger.lookup_accounts(&[1, 2, 3]);
        assert_eq!(after[0].debits_posted, before[0].debits_posted + 7);
        assert_eq!(after[2].credits_posted, 7);
        assert_eq!(after[2].debits_posted, 0);
        // Only the transfer that survived left a history entry.
        let history =
            ledger.get_account_balances(&AccountFilter { account_id: 3, ..Default::default() });
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].timestamp, 100);
        // The failing event's transient error recorded its id; the rolled-back ones did not.
        let retry = ledger.create_transfers(200, &[transfer(12, 1, 3, 1, TransferFlags::empty())]);
        assert_eq!(retry.unwrap(), [R::IdAlreadyFailed]);
        let retry = ledger.create_transfers(300, &[transfer(10, 1, 3, 5, TransferFlags::empty())]);
        assert_eq!(retry.unwrap(), [R::Ok]);
    }

    #[test]
    fn open_chain_at_batch_end_fails_every_event_of_the_chain() {
        let mut ledger = ledger_with_accounts();
        let batch = [
            transfer(10, 1, 3, 5, TransferFlags::empty()),
            transfer(11, 1, 3, 5, TransferFlags::LINKED),
            transfer(12, 1, 3, 5, TransferFlags::LINKED),
        ];
        let results = ledger.create_transfers(100, &batch).unwrap();
        assert_eq!(results, [R::Ok, R::LinkedEventFailed, R::LinkedEventChainOpen]);
        assert_eq!(ledger.lookup_accounts(&[1])[0].debits_posted, 5);
    }

    #[test]
    fn pending_transfers_expire_exactly_once_at_their_deadline() {
        let mut ledger = ledger_with_accounts();
        let pending = Transfer { timeout: 1, ..transfer(10, 1, 3, 5, TransferFlags::PENDING) };
        assert_eq!(ledger.create_transfers(1_000, &[pending]).unwrap(), [R::Ok]);
        assert_eq!(ledger.lookup_accounts(&[1])[0].debits_pending, 5);
        // One nanosecond before the deadline nothing expires; at the deadline it does.
        assert_eq!(ledger.expire_pending_transfers(1_000 + 999_999_999).unwrap(), 0);
        assert_eq!(ledger.expire_pending_transfers(1_000 + 1_000_000_000).unwrap(), 1);
        assert_eq!(ledger.expire_pending_transfers(5_000_000_000).unwrap(), 0);
        assert_eq!(ledger.pending_state(10), Some(PendingState::Expired));
        assert_eq!(ledger.lookup_accounts(&[1])[0].debits_pending, 0);
        let post = Transfer {
            pending_id: 10,
            amount: crate::types::AMOUNT_MAX,
            ..transfer(11, 0, 0, 0, TransferFlags::POST_PENDING_TRANSFER)
        };
        let post = Transfer { ledger: 0, code: 0, ..post };
        assert_eq!(
            ledger.create_transfers(6_000_000_000, &[post]).unwrap(),
            [R::PendingTransferExpired]
        );
    }

    #[test]
    fn refused_batches_change_nothing() {
        let mut ledger = ledger_with_accounts();
        let digest = ledger.digest();
        let batch = vec![transfer(10, 1, 3, 5, TransferFlags::empty()); BATCH_EVENTS_MAX + 1];
        assert!(matches!(
            ledger.create_transfers(1_000_000, &batch),
            Err(BatchError::TooManyEvents { .. })
        ));
        let two = [transfer(10, 1, 3, 5, TransferFlags::empty()); 2];
        assert!(matches!(
            ledger.create_transfers(11, &two),
            Err(BatchError::TimestampRegressed { .. })
        ));
        assert!(matches!(
            ledger.create_transfers(TIMESTAMP_MAX + 1, &two),
            Err(BatchError::TimestampOutOfRange { .. })
        ));
        assert_eq!(ledger.digest(), digest);
        assert_eq!(ledger.commit_timestamp(), 10);
    }
}
