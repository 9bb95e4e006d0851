//! # settle-model
//!
//! A reference model of the ledger, written from `crates/ledger/SEMANTICS.md` alone. The
//! ledger's property tests and the simulator's checkers compare settle against it.
//!
//! It is meant to be read side by side with that page: every check is one `if`, in the
//! order the page lists them, and the step numbers in comments are the page's. It uses
//! plain maps and clones the whole state at the start of each linked chain, so that a
//! rollback is "put the clone back". Speed does not matter here; being obviously right
//! does. History (`AccountBalance`) is not modelled.

use std::collections::{BTreeMap, BTreeSet};

use settle_ledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Transfer, TransferFlags,
    AMOUNT_MAX, BATCH_EVENTS_MAX, TIMESTAMP_MAX,
};

/// The state of a transfer created with `flags.pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

/// Why a whole batch was refused (nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelBatchError {
    TooManyEvents,
    TimestampRegressed,
    TimestampOutOfRange,
}

/// A pending transfer's state and, if it has a timeout, when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingInfo {
    pub status: PendingStatus,
    pub expires_at: Option<u64>,
}

/// Everything a linked chain's rollback must restore.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub accounts: BTreeMap<u128, Account>,
    pub transfers: BTreeMap<u128, Transfer>,
    /// Only transfers created with `flags.pending` have an entry.
    pub pending: BTreeMap<u128, PendingInfo>,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub state: State,
    /// Ids of transfers that failed with a transient result. Never rolled back.
    pub failed_ids: BTreeSet<u128>,
    pub commit_timestamp: u64,
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The defined account flag bits (0..=5); anything else is reserved.
fn account_flags_defined() -> u16 {
    AccountFlags::all().bits()
}

/// The defined transfer flag bits (0..=8); anything else is reserved.
fn transfer_flags_defined() -> u16 {
    TransferFlags::all().bits()
}

/// What the batch-level checks need to know about one event.
trait Event {
    fn is_linked(&self) -> bool;
}

impl Event for Account {
    fn is_linked(&self) -> bool {
        self.flags.contains(AccountFlags::LINKED)
    }
}

impl Event for Transfer {
    fn is_linked(&self) -> bool {
        self.flags.contains(TransferFlags::LINKED)
    }
}

/// The three results the chain logic produces itself.
struct ChainResults<R> {
    ok: R,
    linked_event_failed: R,
    linked_event_chain_open: R,
}

impl Model {
    pub fn new() -> Self {
        Model::default()
    }

    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.state.pending.get(&id).map(|p| p.status)
    }

    // ----------------------------------------------------------------------------------
    // Batches and timestamps, linked chains
    // ----------------------------------------------------------------------------------

    /// The batch-level checks of "Batches and timestamps". `Ok(true)` means "run it",
    /// `Ok(false)` means "empty batch: nothing to do".
    fn check_batch(&self, timestamp: u64, n: usize) -> Result<bool, ModelBatchError> {
        if n > BATCH_EVENTS_MAX {
            return Err(ModelBatchError::TooManyEvents);
        }
        if n == 0 {
            return Ok(false);
        }
        if timestamp < n as u64 || timestamp - (n as u64) < self.commit_timestamp {
            return Err(ModelBatchError::TimestampRegressed);
        }
        if timestamp > TIMESTAMP_MAX {
            return Err(ModelBatchError::TimestampOutOfRange);
        }
        Ok(true)
    }

    /// Runs one batch: expiry, then the events in order with linked-chain semantics.
    /// `execute` runs one event's imported checks and own checks and applies it.
    fn run_batch<E: Event + Copy, R: Copy + PartialEq>(
        &mut self,
        timestamp: u64,
        events: &[E],
        chain: ChainResults<R>,
        execute: impl Fn(&mut Model, &E, u64, bool, u64) -> R,
        is_imported: impl Fn(&E) -> bool,
    ) -> Result<Vec<R>, ModelBatchError> {
        if !self.check_batch(timestamp, events.len())? {
            return Ok(Vec::new());
        }
        let n = events.len();
        // Expiry runs before the first event, with respect to the batch timestamp.
        self.expire(timestamp);

        let batch_imported = is_imported(&events[0]);
        let mut results: Vec<R> = Vec::with_capacity(n);
        // The open chain, if any: the index of its first event and the state before it.
        let mut chain_start: Option<(usize, State)> = None;
        let mut chain_broken = false;

        for (i, event) in events.iter().enumerate() {
            let event_timestamp = timestamp - n as u64 + 1 + i as u64;
            if chain_start.is_none() && event.is_linked() {
                chain_start = Some((i, self.state.clone()));
                chain_broken = false;
            }

            let result = if i == n - 1 && event.is_linked() {
                chain.linked_event_chain_open
            } else if chain_broken {
                chain.linked_event_failed
            } else {
                execute(self, event, event_timestamp, batch_imported, timestamp)
            };
            results.push(result);

            // A failure inside a chain rolls back every earlier event of the chain.
            // Any result but `ok` is a failure here, `exists` included (as in
            // TigerBeetle). Failed-id records live outside `state`, so they stay.
            if result != chain.ok && !chain_broken {
                if let Some((start, saved)) = &chain_start {
                    self.state = saved.clone();
                    for earlier in results.iter_mut().take(i).skip(*start) {
                        *earlier = chain.linked_event_failed;
                    }
                    chain_broken = true;
                }
            }

            // The chain ends at the first event without `linked`.
            if !event.is_linked() {
                chain_start = None;
                chain_broken = false;
            }
        }

        self.commit_timestamp = timestamp;
        Ok(results)
    }

    pub fn create_accounts(
        &mut self,
        timestamp: u64,
        events: &[Account],
    ) -> Result<Vec<CreateAccountResult>, ModelBatchError> {
        let chain = ChainResults {
            ok: CreateAccountResult::Ok,
            linked_event_failed: CreateAccountResult::LinkedEventFailed,
            linked_event_chain_open: CreateAccountResult::LinkedEventChainOpen,
        };
        self.run_batch(timestamp, events, chain, Model::create_account, |a: &Account| {
            a.flags.contains(AccountFlags::IMPORTED)
        })
    }

    pub fn create_transfers(
        &mut self,
        timestamp: u64,
        events: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, ModelBatchError> {
        let chain = ChainResults {
            ok: CreateTransferResult::Ok,
            linked_event_failed: CreateTransferResult::LinkedEventFailed,
            linked_event_chain_open: CreateTransferResult::LinkedEventChainOpen,
        };
        self.run_batch(
            timestamp,
            events,
            chain,
            Model::create_transfer_and_record,
            |t: &Transfer| t.flags.contains(TransferFlags::IMPORTED),
        )
    }

    // ----------------------------------------------------------------------------------
    // Expiry
    // ----------------------------------------------------------------------------------

    /// Expires every pending transfer still `pending` whose expiry is `<= timestamp`:
    /// released exactly as by a void, closing accounts reopen. (The order does not
    /// change the resulting state, so the model does not sort.)
    pub fn expire(&mut self, timestamp: u64) {
        let due: Vec<u128> = self
            .state
            .pending
            .iter()
            .filter(|(_, info)| {
                info.status == PendingStatus::Pending
                    && matches!(info.expires_at, Some(at) if at <= timestamp)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let p = self.state.transfers[&id];
            self.release_pending(&p);
            self.state.pending.get_mut(&id).unwrap().status = PendingStatus::Expired;
        }
    }

    /// The pulse: expiry without a batch; afterwards `commit_timestamp = T`.
    pub fn expire_pending_transfers(&mut self, timestamp: u64) -> Result<usize, ModelBatchError> {
        if timestamp < self.commit_timestamp {
            return Err(ModelBatchError::TimestampRegressed);
        }
        let before = self.count_status(PendingStatus::Expired);
        self.expire(timestamp);
        self.commit_timestamp = timestamp;
        Ok(self.count_status(PendingStatus::Expired) - before)
    }

    fn count_status(&self, status: PendingStatus) -> usize {
        self.state.pending.values().filter(|p| p.status == status).count()
    }

    /// Undo a pending transfer's reservation and reopen the accounts it closed
    /// (shared by void and expiry).
    fn release_pending(&mut self, p: &Transfer) {
        let dr = self.state.accounts.get_mut(&p.debit_account_id).unwrap();
        dr.debits_pending -= p.amount;
        if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
            dr.flags.remove(AccountFlags::CLOSED);
        }
        let cr = self.state.accounts.get_mut(&p.credit_account_id).unwrap();
        cr.credits_pending -= p.amount;
        if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
            cr.flags.remove(AccountFlags::CLOSED);
        }
    }

    // ----------------------------------------------------------------------------------
    // Imported timestamps
    // ----------------------------------------------------------------------------------

    fn max_account_timestamp(&self) -> u64 {
        self.state.accounts.values().map(|a| a.timestamp).max().unwrap_or(0)
    }

    fn max_transfer_timestamp(&self) -> u64 {
        self.state.transfers.values().map(|t| t.timestamp).max().unwrap_or(0)
    }

    /// Imported account: greater than every account's timestamp, equal to no transfer's.
    fn imported_account_regresses(&self, timestamp: u64) -> bool {
        timestamp <= self.max_account_timestamp()
            || self.state.transfers.values().any(|t| t.timestamp == timestamp)
    }

    /// Imported transfer: greater than every transfer's timestamp, equal to no account's.
    fn imported_transfer_regresses(&self, timestamp: u64) -> bool {
        timestamp <= self.max_transfer_timestamp()
            || self.state.accounts.values().any(|a| a.timestamp == timestamp)
    }

    /// "Imported events" steps 1-3, shared by accounts and transfers. Returns the
    /// failing step's index (0: expected, 1: not expected, 2: must be zero, 3: out of
    /// range, 4: must not advance), or `None`.
    fn imported_checks(
        imported: bool,
        batch_imported: bool,
        event_timestamp_field: u64,
        batch_timestamp: u64,
    ) -> Option<usize> {
        if batch_imported && !imported {
            return Some(0);
        }
        if !batch_imported && imported {
            return Some(1);
        }
        if !imported {
            if event_timestamp_field != 0 {
                return Some(2);
            }
        } else {
            if event_timestamp_field == 0 || event_timestamp_field > TIMESTAMP_MAX {
                return Some(3);
            }
            if event_timestamp_field >= batch_timestamp {
                return Some(4);
            }
        }
        None
    }

    // ----------------------------------------------------------------------------------
    // create_accounts
    // ----------------------------------------------------------------------------------

    fn create_account(
        &mut self,
        a: &Account,
        assigned_timestamp: u64,
        batch_imported: bool,
        batch_timestamp: u64,
    ) -> CreateAccountResult {
        use CreateAccountResult as R;
        let imported = a.flags.contains(AccountFlags::IMPORTED);
        match Model::imported_checks(imported, batch_imported, a.timestamp, batch_timestamp) {
            Some(0) => return R::ImportedEventExpected,
            Some(1) => return R::ImportedEventNotExpected,
            Some(2) => return R::TimestampMustBeZero,
            Some(3) => return R::ImportedEventTimestampOutOfRange,
            Some(_) => return R::ImportedEventTimestampMustNotAdvance,
            None => {}
        }
        // 1.
        if a.reserved != 0 {
            return R::ReservedField;
        }
        // 2.
        if a.flags.bits() & !account_flags_defined() != 0 {
            return R::ReservedFlag;
        }
        // 3.
        if a.id == 0 {
            return R::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        // 4.
        if let Some(e) = self.state.accounts.get(&a.id) {
            let mut a_flags = a.flags;
            a_flags.remove(AccountFlags::CLOSED);
            let mut e_flags = e.flags;
            e_flags.remove(AccountFlags::CLOSED);
            if a_flags != e_flags {
                return R::ExistsWithDifferentFlags;
            }
            if a.user_data_128 != e.user_data_128 {
                return R::ExistsWithDifferentUserData128;
            }
            if a.user_data_64 != e.user_data_64 {
                return R::ExistsWithDifferentUserData64;
            }
            if a.user_data_32 != e.user_data_32 {
                return R::ExistsWithDifferentUserData32;
            }
            if a.ledger != e.ledger {
                return R::ExistsWithDifferentLedger;
            }
            if a.code != e.code {
                return R::ExistsWithDifferentCode;
            }
            return R::Exists;
        }
        // 5.
        if a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && a.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return R::FlagsAreMutuallyExclusive;
        }
        // 6.
        if a.debits_pending != 0 {
            return R::DebitsPendingMustBeZero;
        }
        if a.debits_posted != 0 {
            return R::DebitsPostedMustBeZero;
        }
        if a.credits_pending != 0 {
            return R::CreditsPendingMustBeZero;
        }
        if a.credits_posted != 0 {
            return R::CreditsPostedMustBeZero;
        }
        // 7.
        if a.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if a.code == 0 {
            return R::CodeMustNotBeZero;
        }
        // 8.
        if imported && self.imported_account_regresses(a.timestamp) {
            return R::ImportedEventTimestampMustNotRegress;
        }
        // 9.
        let mut stored = *a;
        if !imported {
            stored.timestamp = assigned_timestamp;
        }
        self.state.accounts.insert(stored.id, stored);
        R::Ok
    }

    // ----------------------------------------------------------------------------------
    // create_transfers
    // ----------------------------------------------------------------------------------

    /// One transfer event, plus the failed-id record ("Failed ids").
    fn create_transfer_and_record(
        &mut self,
        t: &Transfer,
        assigned_timestamp: u64,
        batch_imported: bool,
        batch_timestamp: u64,
    ) -> CreateTransferResult {
        let result = self.create_transfer(t, assigned_timestamp, batch_imported, batch_timestamp);
        if result.is_transient() {
            self.failed_ids.insert(t.id);
        }
        result
    }

    fn create_transfer(
        &mut self,
        t: &Transfer,
        assigned_timestamp: u64,
        batch_imported: bool,
        batch_timestamp: u64,
    ) -> CreateTransferResult {
        use CreateTransferResult as R;
        let f = t.flags;
        let imported = f.contains(TransferFlags::IMPORTED);
        match Model::imported_checks(imported, batch_imported, t.timestamp, batch_timestamp) {
            Some(0) => return R::ImportedEventExpected,
            Some(1) => return R::ImportedEventNotExpected,
            Some(2) => return R::TimestampMustBeZero,
            Some(3) => return R::ImportedEventTimestampOutOfRange,
            Some(_) => return R::ImportedEventTimestampMustNotAdvance,
            None => {}
        }
        let timestamp = if imported { t.timestamp } else { assigned_timestamp };

        let pending = f.contains(TransferFlags::PENDING);
        let post = f.contains(TransferFlags::POST_PENDING_TRANSFER);
        let void = f.contains(TransferFlags::VOID_PENDING_TRANSFER);
        let pv = post || void;
        let balancing_debit = f.contains(TransferFlags::BALANCING_DEBIT);
        let balancing_credit = f.contains(TransferFlags::BALANCING_CREDIT);
        let closing_debit = f.contains(TransferFlags::CLOSING_DEBIT);
        let closing_credit = f.contains(TransferFlags::CLOSING_CREDIT);

        // 1.
        if f.bits() & !transfer_flags_defined() != 0 {
            return R::ReservedFlag;
        }
        // 2.
        if t.id == 0 {
            return R::IdMustNotBeZero;
        }
        if t.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        // 3.
        if let Some(e) = self.state.transfers.get(&t.id) {
            return self.transfer_exists(t, e);
        }
        // 4.
        if self.failed_ids.contains(&t.id) {
            return R::IdAlreadyFailed;
        }
        // 5.
        if (pending && pv)
            || (post && void)
            || (pv && (balancing_debit || balancing_credit))
            || (pv && (closing_debit || closing_credit))
        {
            return R::FlagsAreMutuallyExclusive;
        }
        // 6.
        if !pv && t.debit_account_id == 0 {
            return R::DebitAccountIdMustNotBeZero;
        }
        // 7.
        if t.debit_account_id == u128::MAX {
            return R::DebitAccountIdMustNotBeIntMax;
        }
        // 8.
        if !pv && t.credit_account_id == 0 {
            return R::CreditAccountIdMustNotBeZero;
        }
        // 9.
        if t.credit_account_id == u128::MAX {
            return R::CreditAccountIdMustNotBeIntMax;
        }
        // 10.
        if !pv && t.debit_account_id == t.credit_account_id {
            return R::AccountsMustBeDifferent;
        }
        // 11.
        if !pv && t.pending_id != 0 {
            return R::PendingIdMustBeZero;
        }
        if pv && t.pending_id == 0 {
            return R::PendingIdMustNotBeZero;
        }
        if t.pending_id == u128::MAX {
            return R::PendingIdMustNotBeIntMax;
        }
        if t.pending_id == t.id {
            return R::PendingIdMustBeDifferent;
        }
        // 12.
        if !pending && t.timeout != 0 {
            return R::TimeoutReservedForPendingTransfer;
        }
        // 13.
        if (closing_debit || closing_credit) && !pending {
            return R::ClosingTransferMustBePending;
        }
        // 14.
        if !pv && t.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if !pv && t.code == 0 {
            return R::CodeMustNotBeZero;
        }
        // 15.
        if pv {
            return self.post_or_void(t, timestamp, imported);
        }
        // 16.
        let Some(dr) = self.state.accounts.get(&t.debit_account_id).copied() else {
            return R::DebitAccountNotFound;
        };
        let Some(cr) = self.state.accounts.get(&t.credit_account_id).copied() else {
            return R::CreditAccountNotFound;
        };
        // 17.
        if dr.ledger != cr.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        // 18.
        if imported {
            if self.imported_transfer_regresses(timestamp) {
                return R::ImportedEventTimestampMustNotRegress;
            }
            if timestamp <= dr.timestamp {
                return R::ImportedEventTimestampMustPostdateDebitAccount;
            }
            if timestamp <= cr.timestamp {
                return R::ImportedEventTimestampMustPostdateCreditAccount;
            }
            if t.timeout != 0 {
                return R::ImportedEventTimeoutMustBeZero;
            }
        }
        // 19.
        if dr.flags.contains(AccountFlags::CLOSED) {
            return R::DebitAccountAlreadyClosed;
        }
        if cr.flags.contains(AccountFlags::CLOSED) {
            return R::CreditAccountAlreadyClosed;
        }
        // 20.
        let mut a = t.amount;
        if balancing_debit {
            let room = dr
                .credits_posted
                .saturating_sub(dr.debits_pending.saturating_add(dr.debits_posted));
            a = a.min(room);
        }
        if balancing_credit {
            let room = cr
                .debits_posted
                .saturating_sub(cr.credits_pending.saturating_add(cr.credits_posted));
            a = a.min(room);
        }
        // 21.
        if pending {
            if dr.debits_pending.checked_add(a).is_none() {
                return R::OverflowsDebitsPending;
            }
            if cr.credits_pending.checked_add(a).is_none() {
                return R::OverflowsCreditsPending;
            }
        }
        if dr.debits_posted.checked_add(a).is_none() {
            return R::OverflowsDebitsPosted;
        }
        if cr.credits_posted.checked_add(a).is_none() {
            return R::OverflowsCreditsPosted;
        }
        let dr_debits =
            dr.debits_pending.checked_add(dr.debits_posted).and_then(|x| x.checked_add(a));
        let Some(dr_debits) = dr_debits else {
            return R::OverflowsDebits;
        };
        let cr_credits =
            cr.credits_pending.checked_add(cr.credits_posted).and_then(|x| x.checked_add(a));
        let Some(cr_credits) = cr_credits else {
            return R::OverflowsCredits;
        };
        // 22.
        let expires_at = u128::from(timestamp) + u128::from(t.timeout) * NANOS_PER_SECOND;
        if pending && t.timeout != 0 && expires_at > u128::from(TIMESTAMP_MAX) {
            return R::OverflowsTimeout;
        }
        // 23.
        if dr.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && dr_debits > dr.credits_posted
        {
            return R::ExceedsCredits;
        }
        if cr.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && cr_credits > cr.debits_posted
        {
            return R::ExceedsDebits;
        }
        // 24.
        let mut stored = *t;
        stored.amount = a;
        stored.timestamp = timestamp;
        self.state.transfers.insert(stored.id, stored);
        let dr = self.state.accounts.get_mut(&t.debit_account_id).unwrap();
        if pending {
            dr.debits_pending += a;
            if closing_debit {
                dr.flags.insert(AccountFlags::CLOSED);
            }
        } else {
            dr.debits_posted += a;
        }
        let cr = self.state.accounts.get_mut(&t.credit_account_id).unwrap();
        if pending {
            cr.credits_pending += a;
            if closing_credit {
                cr.flags.insert(AccountFlags::CLOSED);
            }
        } else {
            cr.credits_posted += a;
        }
        if pending {
            let expires_at = if t.timeout != 0 { Some(expires_at as u64) } else { None };
            let info = PendingInfo { status: PendingStatus::Pending, expires_at };
            self.state.pending.insert(t.id, info);
        }
        R::Ok
    }

    /// "Post and void", steps 1-8.
    fn post_or_void(
        &mut self,
        t: &Transfer,
        timestamp: u64,
        imported: bool,
    ) -> CreateTransferResult {
        use CreateTransferResult as R;
        let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        // 1.
        let Some(p) = self.state.transfers.get(&t.pending_id).copied() else {
            return R::PendingTransferNotFound;
        };
        if !p.flags.contains(TransferFlags::PENDING) {
            return R::PendingTransferNotPending;
        }
        // 2.
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return R::PendingTransferHasDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return R::PendingTransferHasDifferentCreditAccountId;
        }
        if t.ledger != 0 && t.ledger != p.ledger {
            return R::PendingTransferHasDifferentLedger;
        }
        if t.code != 0 && t.code != p.code {
            return R::PendingTransferHasDifferentCode;
        }
        // 3.
        if post && t.amount != AMOUNT_MAX && t.amount > p.amount {
            return R::ExceedsPendingTransferAmount;
        }
        if !post && t.amount != 0 && t.amount != p.amount {
            return R::PendingTransferHasDifferentAmount;
        }
        // 4.
        match self.state.pending[&p.id].status {
            PendingStatus::Pending => {}
            PendingStatus::Posted => return R::PendingTransferAlreadyPosted,
            PendingStatus::Voided => return R::PendingTransferAlreadyVoided,
            PendingStatus::Expired => return R::PendingTransferExpired,
        }
        let dr = self.state.accounts[&p.debit_account_id];
        let cr = self.state.accounts[&p.credit_account_id];
        // 5.
        if imported {
            if self.imported_transfer_regresses(timestamp) {
                return R::ImportedEventTimestampMustNotRegress;
            }
            if timestamp <= dr.timestamp {
                return R::ImportedEventTimestampMustPostdateDebitAccount;
            }
            if timestamp <= cr.timestamp {
                return R::ImportedEventTimestampMustPostdateCreditAccount;
            }
        }
        // 6.
        if post {
            if dr.flags.contains(AccountFlags::CLOSED)
                && !p.flags.contains(TransferFlags::CLOSING_DEBIT)
            {
                return R::DebitAccountAlreadyClosed;
            }
            if cr.flags.contains(AccountFlags::CLOSED)
                && !p.flags.contains(TransferFlags::CLOSING_CREDIT)
            {
                return R::CreditAccountAlreadyClosed;
            }
        }
        // 7.
        let a = if post {
            let a = if t.amount == AMOUNT_MAX { p.amount } else { t.amount };
            if dr.debits_posted.checked_add(a).is_none() {
                return R::OverflowsDebitsPosted;
            }
            if cr.credits_posted.checked_add(a).is_none() {
                return R::OverflowsCreditsPosted;
            }
            a
        } else {
            p.amount
        };
        // 8.
        if post {
            let dr = self.state.accounts.get_mut(&p.debit_account_id).unwrap();
            dr.debits_pending -= p.amount;
            dr.debits_posted += a;
            let cr = self.state.accounts.get_mut(&p.credit_account_id).unwrap();
            cr.credits_pending -= p.amount;
            cr.credits_posted += a;
            self.state.pending.get_mut(&p.id).unwrap().status = PendingStatus::Posted;
        } else {
            self.release_pending(&p);
            self.state.pending.get_mut(&p.id).unwrap().status = PendingStatus::Voided;
        }
        let stored = Transfer {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            ledger: p.ledger,
            code: p.code,
            user_data_128: if t.user_data_128 == 0 { p.user_data_128 } else { t.user_data_128 },
            user_data_64: if t.user_data_64 == 0 { p.user_data_64 } else { t.user_data_64 },
            user_data_32: if t.user_data_32 == 0 { p.user_data_32 } else { t.user_data_32 },
            amount: a,
            timeout: 0,
            timestamp,
            ..*t
        };
        self.state.transfers.insert(stored.id, stored);
        R::Ok
    }

    /// "Exists (step 3)": `e` is the stored transfer with `t.id`.
    fn transfer_exists(&self, t: &Transfer, e: &Transfer) -> CreateTransferResult {
        use CreateTransferResult as R;
        if t.flags != e.flags {
            return R::ExistsWithDifferentFlags;
        }
        if t.pending_id != e.pending_id {
            return R::ExistsWithDifferentPendingId;
        }
        if t.timeout != e.timeout {
            return R::ExistsWithDifferentTimeout;
        }
        let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
        // Resolve a post/void the way it would have been stored.
        let mut r = *t;
        if post || void {
            let p = self.state.transfers[&t.pending_id];
            if t.debit_account_id == 0 {
                r.debit_account_id = p.debit_account_id;
            }
            if t.credit_account_id == 0 {
                r.credit_account_id = p.credit_account_id;
            }
            if t.ledger == 0 {
                r.ledger = p.ledger;
            }
            if t.code == 0 {
                r.code = p.code;
            }
            if t.user_data_128 == 0 {
                r.user_data_128 = p.user_data_128;
            }
            if t.user_data_64 == 0 {
                r.user_data_64 = p.user_data_64;
            }
            if t.user_data_32 == 0 {
                r.user_data_32 = p.user_data_32;
            }
            if (post && t.amount == AMOUNT_MAX) || (void && t.amount == 0) {
                r.amount = p.amount;
            }
        }
        if r.debit_account_id != e.debit_account_id {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if r.credit_account_id != e.credit_account_id {
            return R::ExistsWithDifferentCreditAccountId;
        }
        let balancing = t.flags.contains(TransferFlags::BALANCING_DEBIT)
            || t.flags.contains(TransferFlags::BALANCING_CREDIT);
        let amount_differs = if balancing { r.amount < e.amount } else { r.amount != e.amount };
        if amount_differs {
            return R::ExistsWithDifferentAmount;
        }
        if r.user_data_128 != e.user_data_128 {
            return R::ExistsWithDifferentUserData128;
        }
        if r.user_data_64 != e.user_data_64 {
            return R::ExistsWithDifferentUserData64;
        }
        if r.user_data_32 != e.user_data_32 {
            return R::ExistsWithDifferentUserData32;
        }
        if r.ledger != e.ledger {
            return R::ExistsWithDifferentLedger;
        }
        if r.code != e.code {
            return R::ExistsWithDifferentCode;
        }
        R::Exists
    }
}
