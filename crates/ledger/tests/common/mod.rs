//! Shared builders and a test harness for the black-box ledger tests.
//!
//! Every test file does `mod common;` and uses only what it needs, hence the
//! `dead_code` allowance below.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeMap, BTreeSet};

pub use settle_ledger::store::PendingState;
pub use settle_ledger::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, BatchError,
    CreateAccountResult, CreateTransferResult, Ledger, MemStore, QueryFilter, QueryFilterFlags,
    Transfer, TransferFlags, AMOUNT_MAX, BATCH_EVENTS_MAX, TIMESTAMP_MAX,
};

/// Short names for the result enums.
pub use settle_ledger::CreateAccountResult as AR;
pub use settle_ledger::CreateTransferResult as TR;

/// One second in nanoseconds (`timeout` is in seconds, timestamps in nanoseconds).
pub const NS: u64 = 1_000_000_000;
/// The harness clock starts here, so tests have room for imported timestamps below it.
pub const START: u64 = 1_000 * NS;
/// The default ledger and code of the builders.
pub const LEDGER: u32 = 1;
pub const CODE: u16 = 1;

/// An account on `ledger` with code 1 and no flags.
pub fn account(id: u128, ledger: u32) -> Account {
    Account { id, ledger, code: CODE, ..Default::default() }
}

/// An account on ledger 1 with `flags`.
pub fn account_flags(id: u128, flags: AccountFlags) -> Account {
    Account { flags, ..account(id, LEDGER) }
}

/// An imported account on ledger 1 with its own `timestamp`.
pub fn imported_account(id: u128, timestamp: u64) -> Account {
    Account { flags: AccountFlags::IMPORTED, timestamp, ..account(id, LEDGER) }
}

/// A single-phase transfer on ledger 1, code 1.
pub fn transfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount,
        ledger: LEDGER,
        code: CODE,
        ..Default::default()
    }
}

/// A transfer with `flags` set.
pub fn transfer_flags(
    id: u128,
    dr: u128,
    cr: u128,
    amount: u128,
    flags: TransferFlags,
) -> Transfer {
    Transfer { flags, ..transfer(id, dr, cr, amount) }
}

/// A pending transfer without timeout.
pub fn pending(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    transfer_flags(id, dr, cr, amount, TransferFlags::PENDING)
}

/// A pending transfer that expires after `timeout` seconds.
pub fn pending_timeout(id: u128, dr: u128, cr: u128, amount: u128, timeout: u32) -> Transfer {
    Transfer { timeout, ..pending(id, dr, cr, amount) }
}

/// An imported single-phase transfer with its own `timestamp`.
pub fn imported_transfer(id: u128, dr: u128, cr: u128, amount: u128, timestamp: u64) -> Transfer {
    Transfer { timestamp, ..transfer_flags(id, dr, cr, amount, TransferFlags::IMPORTED) }
}

/// A post of `pending_id` with every other field zero (inherit from the pending transfer).
pub fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        amount,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Default::default()
    }
}

/// A void of `pending_id` with every other field zero.
pub fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer { id, pending_id, flags: TransferFlags::VOID_PENDING_TRANSFER, ..Default::default() }
}

/// `event` with `flags.linked` added.
pub fn linked(mut event: Transfer) -> Transfer {
    event.flags |= TransferFlags::LINKED;
    event
}

/// `event` with `flags.linked` added.
pub fn linked_account(mut event: Account) -> Account {
    event.flags |= AccountFlags::LINKED;
    event
}

/// The four balances of an account, in declaration order:
/// `(debits_pending, debits_posted, credits_pending, credits_posted)`.
pub type Balances = (u128, u128, u128, u128);

pub fn balances_of(a: &Account) -> Balances {
    (a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted)
}

pub fn balance_tuple(b: &AccountBalance) -> (Balances, u64) {
    ((b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted), b.timestamp)
}

/// The observable state of every id the harness has ever submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub accounts: BTreeMap<u128, Option<Account>>,
    pub transfers: BTreeMap<u128, Option<Transfer>>,
    pub pending: BTreeMap<u128, Option<PendingState>>,
}

/// Wraps a ledger, assigns valid batch timestamps, and remembers every id submitted so
/// that "nothing changed" can be checked after a failure.
pub struct Harness {
    pub ledger: Ledger<MemStore>,
    /// The wall clock the next batch timestamp is derived from (never below the floor
    /// the ledger requires).
    pub clock: u64,
    /// The timestamp `T` of the last batch the harness ran.
    pub last_batch: u64,
    /// The number of events in the last batch.
    pub last_count: usize,
    account_ids: BTreeSet<u128>,
    transfer_ids: BTreeSet<u128>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            ledger: Ledger::new(MemStore::default()),
            clock: START,
            last_batch: 0,
            last_count: 0,
            account_ids: BTreeSet::new(),
            transfer_ids: BTreeSet::new(),
        }
    }

    /// A harness whose ledger already holds `accounts` (all must succeed).
    pub fn with_accounts(accounts: &[Account]) -> Self {
        let mut h = Self::new();
        h.ok_accounts(accounts);
        h
    }

    /// The timestamp the next batch of `n` events gets: the clock, or the smallest valid
    /// one if the clock is behind.
    pub fn next_timestamp(&self, n: usize) -> u64 {
        self.clock.max(self.ledger.commit_timestamp() + n as u64)
    }

    /// Moves the clock forward by `ns`.
    pub fn advance(&mut self, ns: u64) {
        self.clock += ns;
    }

    /// Sets the clock (batches never go below the ledger's floor anyway).
    pub fn set_clock(&mut self, ns: u64) {
        self.clock = ns;
    }

    /// The timestamp event `i` of the last batch was assigned.
    pub fn event_timestamp(&self, i: usize) -> u64 {
        self.last_batch - self.last_count as u64 + 1 + i as u64
    }

    fn after_batch(&mut self, timestamp: u64, n: usize) {
        self.last_batch = timestamp;
        self.last_count = n;
        self.clock = self.clock.max(timestamp) + 1_000;
    }

    pub fn try_accounts_at(
        &mut self,
        timestamp: u64,
        events: &[Account],
    ) -> Result<Vec<CreateAccountResult>, BatchError> {
        self.account_ids.extend(events.iter().map(|a| a.id));
        let results = self.ledger.create_accounts(timestamp, events)?;
        assert_eq!(results.len(), events.len(), "one result per event");
        self.after_batch(timestamp, events.len());
        Ok(results)
    }

    pub fn try_transfers_at(
        &mut self,
        timestamp: u64,
        events: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, BatchError> {
        self.transfer_ids.extend(events.iter().map(|t| t.id));
        self.transfer_ids.extend(events.iter().map(|t| t.pending_id).filter(|&id| id != 0));
        let results = self.ledger.create_transfers(timestamp, events)?;
        assert_eq!(results.len(), events.len(), "one result per event");
        self.after_batch(timestamp, events.len());
        Ok(results)
    }

    pub fn accounts_at(&mut self, timestamp: u64, events: &[Account]) -> Vec<CreateAccountResult> {
        self.try_accounts_at(timestamp, events)
            .unwrap_or_else(|e| panic!("create_accounts batch rejected: {e:?}"))
    }

    pub fn transfers_at(
        &mut self,
        timestamp: u64,
        events: &[Transfer],
    ) -> Vec<CreateTransferResult> {
        self.try_transfers_at(timestamp, events)
            .unwrap_or_else(|e| panic!("create_transfers batch rejected: {e:?}"))
    }

    /// Runs a create_accounts batch at the next valid timestamp.
    pub fn accounts(&mut self, events: &[Account]) -> Vec<CreateAccountResult> {
        let t = self.next_timestamp(events.len());
        self.accounts_at(t, events)
    }

    /// Runs a create_transfers batch at the next valid timestamp.
    pub fn transfers(&mut self, events: &[Transfer]) -> Vec<CreateTransferResult> {
        let t = self.next_timestamp(events.len());
        self.transfers_at(t, events)
    }

    /// Runs a create_accounts batch and asserts every event succeeded.
    pub fn ok_accounts(&mut self, events: &[Account]) {
        let results = self.accounts(events);
        assert_eq!(results, vec![AR::Ok; events.len()], "setup accounts must succeed");
    }

    /// Runs a create_transfers batch and asserts every event succeeded.
    pub fn ok_transfers(&mut self, events: &[Transfer]) {
        let results = self.transfers(events);
        assert_eq!(results, vec![TR::Ok; events.len()], "setup transfers must succeed");
    }

    /// Runs one transfer event and returns its result.
    pub fn transfer1(&mut self, event: Transfer) -> CreateTransferResult {
        self.transfers(&[event])[0]
    }

    /// Runs one account event and returns its result.
    pub fn account1(&mut self, event: Account) -> CreateAccountResult {
        self.accounts(&[event])[0]
    }

    /// Runs one transfer event, asserts its result and that the observable state did not
    /// change (for every result but `ok`).
    pub fn expect_transfer(&mut self, event: Transfer, expected: CreateTransferResult) {
        let before = self.snapshot();
        let result = self.transfer1(event);
        assert_eq!(result, expected, "result of {event:?}");
        if expected != TR::Ok {
            // Covers "the failed transfer does not exist": its id was unknown before.
            self.assert_unchanged(&before);
        }
    }

    /// Runs one account event, asserts its result and that the observable state did not
    /// change (for every result but `ok`).
    pub fn expect_account(&mut self, event: Account, expected: CreateAccountResult) {
        let before = self.snapshot();
        let result = self.account1(event);
        assert_eq!(result, expected, "result of {event:?}");
        if expected != AR::Ok {
            self.assert_unchanged(&before);
        }
    }

    /// The account `id`; panics if it does not exist.
    pub fn acct(&self, id: u128) -> Account {
        let found = self.ledger.lookup_accounts(&[id]);
        assert_eq!(found.len(), 1, "account {id} must exist");
        found[0]
    }

    pub fn balances(&self, id: u128) -> Balances {
        balances_of(&self.acct(id))
    }

    pub fn is_closed(&self, id: u128) -> bool {
        self.acct(id).flags.contains(AccountFlags::CLOSED)
    }

    /// The transfer `id`, if it exists.
    pub fn xfer(&self, id: u128) -> Option<Transfer> {
        let found = self.ledger.lookup_transfers(&[id]);
        assert!(found.len() <= 1);
        found.first().copied()
    }

    pub fn account_exists(&self, id: u128) -> bool {
        !self.ledger.lookup_accounts(&[id]).is_empty()
    }

    pub fn state(&self, id: u128) -> Option<PendingState> {
        self.ledger.pending_state(id)
    }

    /// Every account and transfer id submitted so far, looked up.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            accounts: self
                .account_ids
                .iter()
                .map(|&id| (id, self.ledger.lookup_accounts(&[id]).first().copied()))
                .collect(),
            transfers: self
                .transfer_ids
                .iter()
                .map(|&id| (id, self.ledger.lookup_transfers(&[id]).first().copied()))
                .collect(),
            pending: self
                .transfer_ids
                .iter()
                .map(|&id| (id, self.ledger.pending_state(id)))
                .collect(),
        }
    }

    /// Asserts that every id known now looks exactly as in `before` (ids submitted after
    /// `before` was taken must not exist).
    pub fn assert_unchanged(&self, before: &Snapshot) {
        let after = self.snapshot();
        for (id, account) in &after.accounts {
            let was = before.accounts.get(id).copied().flatten();
            assert_eq!(*account, was, "account {id} changed");
        }
        for (id, transfer) in &after.transfers {
            let was = before.transfers.get(id).copied().flatten();
            assert_eq!(*transfer, was, "transfer {id} changed");
        }
        for (id, state) in &after.pending {
            let was = before.pending.get(id).copied().flatten();
            assert_eq!(*state, was, "pending state of {id} changed");
        }
    }

    /// Resubmits `event` (whose earlier result was transient) and asserts that its id was
    /// recorded as failed.
    pub fn assert_id_failed(&mut self, event: Transfer) {
        let mut retry = event;
        retry.flags.remove(TransferFlags::LINKED);
        self.expect_transfer(retry, TR::IdAlreadyFailed);
    }

    /// Every transfer of `account_id`, oldest first.
    pub fn account_transfers(&self, account_id: u128) -> Vec<Transfer> {
        self.ledger.get_account_transfers(&AccountFilter { account_id, ..Default::default() })
    }

    /// Every history entry of `account_id`, oldest first.
    pub fn history(&self, account_id: u128) -> Vec<(Balances, u64)> {
        self.ledger
            .get_account_balances(&AccountFilter { account_id, ..Default::default() })
            .iter()
            .map(balance_tuple)
            .collect()
    }

    /// Runs an expiry pulse at `timestamp`.
    pub fn pulse(&mut self, timestamp: u64) -> usize {
        let n = self
            .ledger
            .expire_pending_transfers(timestamp)
            .unwrap_or_else(|e| panic!("pulse rejected: {e:?}"));
        self.clock = self.clock.max(timestamp);
        n
    }

    /// Asserts the double-entry invariants over the given accounts (all on one ledger).
    pub fn assert_balanced(&self, ids: &[u128]) {
        let accounts = self.ledger.lookup_accounts(ids);
        let sum =
            |f: fn(&Account) -> u128| accounts.iter().fold(0u128, |s, a| s.wrapping_add(f(a)));
        assert_eq!(sum(|a| a.debits_posted), sum(|a| a.credits_posted), "posted unbalanced");
        assert_eq!(sum(|a| a.debits_pending), sum(|a| a.credits_pending), "pending unbalanced");
    }
}
