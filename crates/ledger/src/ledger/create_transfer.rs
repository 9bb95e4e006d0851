//! `create_transfers`: the checks for one transfer, in the order of SEMANTICS.md
//! ("create_transfers — checks in order", "Post and void", "Exists"), and its effects.
//!
//! Every function here checks first and mutates only after the last check passed, so a
//! failing event leaves no trace (except a failed-id record for transient errors, and
//! for a post or void refused because a cross-shard one holds its pending transfer).

use super::cross_shard::same_request;
use super::{Ledger, Side};
use crate::results::CreateTransferResult as R;
use crate::store::{PendingState, ReservationState, Store, TransferId};
use crate::types::{Account, AccountFlags, Transfer, TransferFlags, AMOUNT_MAX, TIMESTAMP_MAX};

const NS_PER_S: u64 = 1_000_000_000;

impl<S: Store> Ledger<S> {
    pub(super) fn create_transfer(&mut self, t: &Transfer) -> R {
        assert!(t.timestamp != 0);
        let result = self.create_transfer_checked(t);
        if result.is_transient() {
            // Ids are unique forever: a retry must not succeed where the client was told
            // it failed.
            self.store.record_failed_id(t.id);
        }
        result
    }

    fn create_transfer_checked(&mut self, t: &Transfer) -> R {
        if let Some(result) = self.event_error(t, false) {
            return result;
        }
        let pending = t.flags.contains(TransferFlags::PENDING);
        let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        if post || t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
            return self.post_or_void(t, post);
        }

        let Some(mut dr) = self.store.account(t.debit_account_id) else {
            return R::DebitAccountNotFound;
        };
        let Some(mut cr) = self.store.account(t.credit_account_id) else {
            return R::CreditAccountNotFound;
        };
        if dr.ledger != cr.ledger {
            return R::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return R::TransferMustHaveTheSameLedgerAsAccounts;
        }
        let amount = balanced_amount(t, Some(&dr), Some(&cr));
        // Every remaining check is a pure predicate, so the first failing one in the
        // documented order is the one of highest precedence among all failing ones.
        let failure = [
            self.transfer_global_error(t),
            side_error(t, Side::Debit, &dr, amount),
            side_error(t, Side::Credit, &cr, amount),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(result) = failure {
            return result;
        }
        let expires_at = (pending && t.timeout != 0)
            .then(|| expiry_of(t.timestamp, t.timeout).expect("checked: overflows_timeout"));

        // Every check passed: apply.
        if pending {
            dr.debits_pending += amount;
            cr.credits_pending += amount;
            if t.flags.contains(TransferFlags::CLOSING_DEBIT) {
                dr.flags.insert(AccountFlags::CLOSED);
            }
            if t.flags.contains(TransferFlags::CLOSING_CREDIT) {
                cr.flags.insert(AccountFlags::CLOSED);
            }
            self.store.set_pending_state(t.id, PendingState::Pending);
            if let Some(expires_at) = expires_at {
                self.store.insert_expiry(expires_at, t.id);
            }
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        }
        self.store.update_account(&dr);
        self.store.update_account(&cr);
        self.store.insert_transfer(&Transfer { amount, ..*t });
        self.record_history(&dr, t.timestamp);
        self.record_history(&cr, t.timestamp);
        R::Ok
    }

    /// Steps 1-14 of SEMANTICS.md: everything decided by the event itself and the ids in
    /// use, before any account or pending transfer is read. `preparing`: for a
    /// cross-shard side's prepare (`prepare_side`), not a single-shard create.
    pub(super) fn event_error(&self, t: &Transfer, preparing: bool) -> Option<R> {
        if t.flags.bits() & !TransferFlags::all().bits() != 0 {
            return Some(R::ReservedFlag);
        }
        if t.id == 0 {
            return Some(R::IdMustNotBeZero);
        }
        if t.id == u128::MAX {
            return Some(R::IdMustNotBeIntMax);
        }
        match self.store.transfer_id(t.id) {
            TransferId::Exists(e) => return Some(self.transfer_exists(t, &e)),
            TransferId::Failed => return Some(R::IdAlreadyFailed),
            TransferId::Free => {}
        }
        // The id is held by a cross-shard side prepared here: that one has it until it
        // commits (then it exists) or aborts. Also when the request is the same: a
        // single-shard create of it would be posted again when the side commits. Only
        // the prepare of the same request's other side (`preparing`: a transfer whose
        // two accounts live here, in a chain across shards) goes on.
        let held = [Side::Debit, Side::Credit].into_iter().any(|side| {
            self.store.reservation(t.id, side).is_some_and(|r| {
                r.state == ReservationState::Prepared
                    && !(preparing && same_request(&r.transfer, t))
            })
        });
        if held {
            return Some(R::IdAlreadyFailed);
        }

        let f = t.flags;
        let post = f.contains(TransferFlags::POST_PENDING_TRANSFER);
        let void = f.contains(TransferFlags::VOID_PENDING_TRANSFER);
        let pending = f.contains(TransferFlags::PENDING);
        let pv = post || void;
        let balancing =
            f.intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
        let closing = f.intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT);
        if (pending && pv) || (post && void) || (pv && balancing) || (pv && closing) {
            return Some(R::FlagsAreMutuallyExclusive);
        }
        if !pv && t.debit_account_id == 0 {
            return Some(R::DebitAccountIdMustNotBeZero);
        }
        if t.debit_account_id == u128::MAX {
            return Some(R::DebitAccountIdMustNotBeIntMax);
        }
        if !pv && t.credit_account_id == 0 {
            return Some(R::CreditAccountIdMustNotBeZero);
        }
        if t.credit_account_id == u128::MAX {
            return Some(R::CreditAccountIdMustNotBeIntMax);
        }
        if !pv && t.debit_account_id == t.credit_account_id {
            return Some(R::AccountsMustBeDifferent);
        }
        if pv {
            if t.pending_id == 0 {
                return Some(R::PendingIdMustNotBeZero);
            }
            if t.pending_id == u128::MAX {
                return Some(R::PendingIdMustNotBeIntMax);
            }
            if t.pending_id == t.id {
                return Some(R::PendingIdMustBeDifferent);
            }
        } else if t.pending_id != 0 {
            return Some(R::PendingIdMustBeZero);
        }
        if !pending && t.timeout != 0 {
            return Some(R::TimeoutReservedForPendingTransfer);
        }
        if closing && !pending {
            return Some(R::ClosingTransferMustBePending);
        }
        if !pv && t.ledger == 0 {
            return Some(R::LedgerMustNotBeZero);
        }
        if !pv && t.code == 0 {
            return Some(R::CodeMustNotBeZero);
        }
        None
    }

    /// "Post and void": steps after the shared field checks.
    fn post_or_void(&mut self, t: &Transfer, post: bool) -> R {
        let Some(p) = self.store.transfer(t.pending_id) else {
            return R::PendingTransferNotFound;
        };
        if let Some(result) = pending_mismatch(t, &p, post) {
            return result;
        }
        match self.store.pending_state(p.id).expect("a pending transfer has a state") {
            PendingState::Pending => {}
            PendingState::Posted => return R::PendingTransferAlreadyPosted,
            PendingState::Voided => return R::PendingTransferAlreadyVoided,
            PendingState::Expired => return R::PendingTransferExpired,
        }
        // A pending transfer whose other account lives on another shard is resolved
        // through cross-shard commit only; here it is as good as absent.
        let (Some(mut dr), Some(mut cr)) =
            (self.store.account(p.debit_account_id), self.store.account(p.credit_account_id))
        else {
            return R::PendingTransferNotFound;
        };
        // A cross-shard post or void prepared here (in a chain across shards) holds it:
        // that one decides it. As a busy side's unit does across shards
        // (`combine_votes`, `txn::decide`), this one fails and burns its id (free and
        // unheld: `event_error` said so), so that it cannot succeed later either.
        if self.store.pending_locked_by(p.id).is_some() {
            self.store.record_failed_id(t.id);
            return R::IdAlreadyFailed;
        }
        let resolved = resolve_post_or_void(t, &p, post);
        // As in `create_transfer_checked`: pure predicates, so the highest precedence wins.
        let failure = [
            self.transfer_global_error(t),
            post_side_error(t, &p, Side::Debit, &dr, resolved.amount),
            post_side_error(t, &p, Side::Credit, &cr, resolved.amount),
        ];
        if let Some(result) = failure.into_iter().flatten().min() {
            return result;
        }

        // Every check passed: apply.
        if let Some(expires_at) = self.deadline_of(&p) {
            self.store.remove_expiry(expires_at, p.id);
        }
        if post {
            dr.debits_pending -= p.amount;
            cr.credits_pending -= p.amount;
            dr.debits_posted += resolved.amount;
            cr.credits_posted += resolved.amount;
            self.store.update_account(&dr);
            self.store.update_account(&cr);
            self.store.set_pending_state(p.id, PendingState::Posted);
            self.record_history(&dr, t.timestamp);
            self.record_history(&cr, t.timestamp);
        } else {
            self.release_pending(&p, PendingState::Voided, Some(t.timestamp));
        }
        self.store.insert_transfer(&resolved);
        R::Ok
    }

    /// The checks that concern neither account: imported timestamp order, imported
    /// timeouts, and the expiry overflow of a pending transfer.
    pub(super) fn transfer_global_error(&self, t: &Transfer) -> Option<R> {
        let pending = t.flags.contains(TransferFlags::PENDING);
        if t.flags.contains(TransferFlags::IMPORTED) {
            if t.timestamp <= self.store.transfer_timestamp_max()
                || self.store.account_exists_at(t.timestamp)
            {
                return Some(R::ImportedEventTimestampMustNotRegress);
            }
            if t.timeout != 0 {
                return Some(R::ImportedEventTimeoutMustBeZero);
            }
        }
        if pending && t.timeout != 0 && expiry_of(t.timestamp, t.timeout).is_none() {
            return Some(R::OverflowsTimeout);
        }
        None
    }

    /// "Exists": compare a request with the stored transfer of the same id.
    fn transfer_exists(&self, t: &Transfer, e: &Transfer) -> R {
        assert_eq!(t.id, e.id);
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
        let t = if post || void {
            let p = self
                .store
                .transfer(e.pending_id)
                .expect("a posted/voided transfer's pending exists");
            resolve_post_or_void(t, &p, post)
        } else {
            *t
        };
        if t.debit_account_id != e.debit_account_id {
            return R::ExistsWithDifferentDebitAccountId;
        }
        if t.credit_account_id != e.credit_account_id {
            return R::ExistsWithDifferentCreditAccountId;
        }
        let balancing =
            t.flags.intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
        if (balancing && t.amount < e.amount) || (!balancing && t.amount != e.amount) {
            return R::ExistsWithDifferentAmount;
        }
        if t.user_data_128 != e.user_data_128 {
            return R::ExistsWithDifferentUserData128;
        }
        if t.user_data_64 != e.user_data_64 {
            return R::ExistsWithDifferentUserData64;
        }
        if t.user_data_32 != e.user_data_32 {
            return R::ExistsWithDifferentUserData32;
        }
        if t.ledger != e.ledger {
            return R::ExistsWithDifferentLedger;
        }
        if t.code != e.code {
            return R::ExistsWithDifferentCode;
        }
        R::Exists
    }
}

/// The post/void checks against the pending transfer that do not depend on its state.
pub(super) fn pending_mismatch(t: &Transfer, p: &Transfer, post: bool) -> Option<R> {
    if !p.flags.contains(TransferFlags::PENDING) {
        return Some(R::PendingTransferNotPending);
    }
    if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
        return Some(R::PendingTransferHasDifferentDebitAccountId);
    }
    if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
        return Some(R::PendingTransferHasDifferentCreditAccountId);
    }
    if t.ledger != 0 && t.ledger != p.ledger {
        return Some(R::PendingTransferHasDifferentLedger);
    }
    if t.code != 0 && t.code != p.code {
        return Some(R::PendingTransferHasDifferentCode);
    }
    if post && t.amount != AMOUNT_MAX && t.amount > p.amount {
        return Some(R::ExceedsPendingTransferAmount);
    }
    if !post && t.amount != 0 && t.amount != p.amount {
        return Some(R::PendingTransferHasDifferentAmount);
    }
    None
}

/// A post/void with its zero fields taken from the pending transfer: the form in which
/// it is stored, and in which a resubmission is compared with the stored one. Amount
/// `AMOUNT_MAX` on a post and 0 on a void stand for the pending amount. (Once
/// `pending_mismatch` passed, every non-zero field already equals the pending's.)
pub(super) fn resolve_post_or_void(t: &Transfer, p: &Transfer, post: bool) -> Transfer {
    let amount = match (post, t.amount) {
        (true, AMOUNT_MAX) | (false, 0) => p.amount,
        (_, amount) => amount,
    };
    Transfer {
        id: t.id,
        debit_account_id: nonzero_or(t.debit_account_id, p.debit_account_id),
        credit_account_id: nonzero_or(t.credit_account_id, p.credit_account_id),
        amount,
        pending_id: t.pending_id,
        user_data_128: nonzero_or(t.user_data_128, p.user_data_128),
        user_data_64: nonzero_or(t.user_data_64, p.user_data_64),
        user_data_32: nonzero_or(t.user_data_32, p.user_data_32),
        timeout: 0,
        ledger: nonzero_or(t.ledger, p.ledger),
        code: nonzero_or(t.code, p.code),
        flags: t.flags,
        timestamp: t.timestamp,
    }
}

/// The amount a transfer moves: as requested, clamped by `balancing_*` to what keeps the
/// account within its balance. A side whose account is not given (it lives on another
/// shard) does not clamp.
pub(super) fn balanced_amount(t: &Transfer, dr: Option<&Account>, cr: Option<&Account>) -> u128 {
    let mut amount = t.amount;
    if let Some(dr) = dr.filter(|_| t.flags.contains(TransferFlags::BALANCING_DEBIT)) {
        let debits = dr.debits_pending.saturating_add(dr.debits_posted);
        amount = amount.min(dr.credits_posted.saturating_sub(debits));
    }
    if let Some(cr) = cr.filter(|_| t.flags.contains(TransferFlags::BALANCING_CREDIT)) {
        let credits = cr.credits_pending.saturating_add(cr.credits_posted);
        amount = amount.min(cr.debits_posted.saturating_sub(credits));
    }
    amount
}

fn imported_postdate_error(t: &Transfer, side: Side, account: &Account) -> Option<R> {
    let imported = t.flags.contains(TransferFlags::IMPORTED);
    (imported && t.timestamp <= account.timestamp).then_some(match side {
        Side::Debit => R::ImportedEventTimestampMustPostdateDebitAccount,
        Side::Credit => R::ImportedEventTimestampMustPostdateCreditAccount,
    })
}

/// The checks of one side of a post/void against that side's account (the pending
/// transfer's): imported order, and for a post, a closed account (unless the pending
/// transfer is what closed it) and the overflow of the posted balance. A void only
/// releases, so it is always allowed.
pub(super) fn post_side_error(
    t: &Transfer,
    p: &Transfer,
    side: Side,
    account: &Account,
    amount: u128,
) -> Option<R> {
    if let Some(result) = imported_postdate_error(t, side, account) {
        return Some(result);
    }
    if !t.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
        return None;
    }
    let (closed, overflows_posted, posted) = match side {
        Side::Debit => {
            (R::DebitAccountAlreadyClosed, R::OverflowsDebitsPosted, account.debits_posted)
        }
        Side::Credit => {
            (R::CreditAccountAlreadyClosed, R::OverflowsCreditsPosted, account.credits_posted)
        }
    };
    if account.flags.contains(AccountFlags::CLOSED) && !p.flags.contains(side.closing_flag()) {
        return Some(closed);
    }
    if posted.checked_add(amount).is_none() {
        return Some(overflows_posted);
    }
    None
}

/// The checks of one side of a transfer (not post/void) against that side's account,
/// which exists and is on the transfer's ledger: the side's first error, if any.
/// Single-shard transfers run both sides; a cross-shard participant runs its own.
pub(super) fn side_error(t: &Transfer, side: Side, account: &Account, amount: u128) -> Option<R> {
    if let Some(result) = imported_postdate_error(t, side, account) {
        return Some(result);
    }
    let pending = t.flags.contains(TransferFlags::PENDING);
    let (closed, overflows_pending, overflows_posted, overflows_total, exceeds) = match side {
        Side::Debit => (
            R::DebitAccountAlreadyClosed,
            R::OverflowsDebitsPending,
            R::OverflowsDebitsPosted,
            R::OverflowsDebits,
            R::ExceedsCredits,
        ),
        Side::Credit => (
            R::CreditAccountAlreadyClosed,
            R::OverflowsCreditsPending,
            R::OverflowsCreditsPosted,
            R::OverflowsCredits,
            R::ExceedsDebits,
        ),
    };
    // This side's own balances, and the opposite balance its limit is measured against.
    let (own_pending, own_posted, opposite_posted, limited) = match side {
        Side::Debit => (
            account.debits_pending,
            account.debits_posted,
            account.credits_posted,
            account.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        ),
        Side::Credit => (
            account.credits_pending,
            account.credits_posted,
            account.debits_posted,
            account.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        ),
    };
    if account.flags.contains(AccountFlags::CLOSED) {
        return Some(closed);
    }
    if pending && own_pending.checked_add(amount).is_none() {
        return Some(overflows_pending);
    }
    if own_posted.checked_add(amount).is_none() {
        return Some(overflows_posted);
    }
    let Some(total) = sum3(own_pending, own_posted, amount) else {
        return Some(overflows_total);
    };
    if limited && total > opposite_posted {
        return Some(exceeds);
    }
    None
}

fn nonzero_or<T: Default + PartialEq>(value: T, default: T) -> T {
    if value == T::default() {
        default
    } else {
        value
    }
}

fn sum3(a: u128, b: u128, c: u128) -> Option<u128> {
    a.checked_add(b)?.checked_add(c)
}

/// When a pending transfer created at `timestamp` with `timeout_s` expires, if that is a
/// valid timestamp.
pub(super) fn expiry_of(timestamp: u64, timeout_s: u32) -> Option<u64> {
    let expires_at = timestamp.checked_add(u64::from(timeout_s).checked_mul(NS_PER_S)?)?;
    (expires_at <= TIMESTAMP_MAX).then_some(expires_at)
}
