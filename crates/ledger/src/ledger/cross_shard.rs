//! One-sided prepare / commit / abort, for transfers whose two accounts live on
//! different shards. The commit protocols (2PC, 3PC, Paxos Commit) are built on these.
//!
//! Each shard holds one side: the debit account's shard the debit side, the credit
//! account's shard the credit side.
//!
//! - [`Ledger::prepare_side`] validates the transfer exactly as a single-shard
//!   `create_transfers` would (the same event checks and the same per-side checks, see
//!   `create_transfer.rs`) as far as this side can see, and *reserves*: a single-phase or
//!   pending transfer adds its amount to this side's `debits_pending`/`credits_pending`
//!   (so balance limits hold while the decision is pending, also against concurrent
//!   transfers); a post/void locks its pending transfer so nothing else resolves it.
//! - [`Ledger::commit_side`] applies the reservation: it posts the amount (or leaves it
//!   pending for a pending transfer, or posts/voids the pending one), and stores this
//!   side's copy of the transfer. [`Ledger::abort_side`] releases it.
//!
//! What stays of a side: a prepared one keeps its reservation until it is decided; an
//! aborted one keeps it for good (marked aborted: it refuses a late prepare, and burns
//! the id); a committed pending transfer keeps it too (marked committed, with the
//! agreed timestamp its deadline counts from), as does a transfer whose two accounts
//! both live here. A committed single-phase transfer, post or void drops it: the
//! stored transfer, whose other account lives elsewhere, now says it committed
//! ([`Ledger::side_state`]), so what the reservations hold follows what is in flight,
//! not every cross-shard transfer ever made (keeping them all cost a checkpoint a copy
//! of millions, and the map its growth).
//! - [`combine_votes`] turns the two sides' votes into the decision, and into the same
//!   result a single shard holding both accounts would have returned.
//!
//! Every hook is idempotent and exactly-once: a second prepare returns the first vote, a
//! second commit or abort returns how the side ended and changes nothing. An abort that
//! arrives before its prepare is remembered, and the late prepare is refused. So an id
//! whose cross-shard transfer aborted cannot be used again (`id_already_failed`), even
//! when the failure was not transient: unlike a single shard, a participant cannot tell
//! a retry from a late duplicate of the aborted attempt.
//!
//! Each hook runs as a one-event batch at this shard's own `timestamp` (expiry runs
//! first, the commit timestamp advances), so shards keep their own timestamp order;
//! this side's copy of the transfer carries the commit's timestamp.
//!
//! Besides its local timestamp, a committed side carries the transaction's *agreed*
//! commit timestamp (a hybrid-logical-clock value every participant commits with, kept
//! by the coordinator's decision): a cross-shard pending transfer's deadline is the
//! agreed timestamp plus its timeout, the same at both sides (kept in its reservation),
//! and a snapshot read at `T` includes a transaction exactly when its agreed timestamp
//! is at or before `T` ([`Ledger::snapshot_side`]).
//!
//! Limits, documented for the cross-shard issue: `flags.linked` must be clear (chains
//! across shards are the coordinator's job; a linked event gets `linked_event_chain_open`);
//! a cross-shard pending transfer with a timeout expires at each side at that side's
//! deadline (its commit timestamp plus the timeout), except while a cross-shard post or
//! void holds it: a post prepared at both sides before either deadline commits, and one
//! that reaches a side after its deadline is refused there (`pending_transfer_expired`)
//! and aborts, after which the other side expires it too; with
//! `balancing_*`, each side clamps by its own account and the coordinator commits the
//! smaller amount, but limit checks ran against each side's own clamped amount.

use super::create_transfer::{
    balanced_amount, expiry_of, pending_mismatch, post_side_error, resolve_post_or_void, side_error,
};
use super::Ledger;
use crate::results::CreateTransferResult as R;
use crate::store::{PendingState, Reservation, ReservationState, Store};
use crate::types::{Account, AccountFlags, Transfer, TransferFlags};

use super::BatchError;

/// Which account of a transfer a shard holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    /// The transfer flag that closes this side's account.
    pub fn closing_flag(self) -> TransferFlags {
        match self {
            Side::Debit => TransferFlags::CLOSING_DEBIT,
            Side::Credit => TransferFlags::CLOSING_CREDIT,
        }
    }

    /// The transfer's other side.
    pub fn other(self) -> Side {
        match self {
            Side::Debit => Side::Credit,
            Side::Credit => Side::Debit,
        }
    }

    /// Stable byte for snapshots and the digest.
    pub fn code(self) -> u8 {
        match self {
            Side::Debit => 0,
            Side::Credit => 1,
        }
    }
}

/// A side's answer to a prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideVote {
    /// Validated and reserved. `amount`: what this side reserved (after its own
    /// balancing clamp; for post/void, the resolved amount).
    Prepared { amount: u128, account_ledger: u32 },
    /// Refused with this side's first error. `account_ledger` is known when this side's
    /// account exists (the coordinator needs both to report
    /// `accounts_must_have_the_same_ledger`).
    Rejected { result: R, account_ledger: Option<u32> },
    /// The pending transfer is held by another prepared post/void: retry later.
    Busy,
    /// This side was already aborted (possibly before the prepare arrived).
    Aborted,
}

/// How a side ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideResolution {
    Committed,
    Aborted,
}

/// How a side that a snapshot read found prepared ended (see [`Ledger::snapshot_side`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideFate {
    /// Committed with the transaction's agreed timestamp and this side's amount.
    Committed { agreed_at: u64, amount: u128 },
    /// Aborted: its reservation was released.
    Released,
}

/// A commit or abort the ledger cannot carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideError {
    /// Commit of a side that was never prepared.
    NotPrepared,
    /// Commit of a side that was aborted, or abort of one that was committed: the
    /// coordinator contradicts itself.
    Conflict {
        state: ReservationState,
    },
    /// Commit with more than the prepared amount.
    AmountAboveReservation {
        reserved: u128,
        requested: u128,
    },
    Batch(BatchError),
}

impl From<BatchError> for SideError {
    fn from(error: BatchError) -> Self {
        SideError::Batch(error)
    }
}

/// The coordinator's decision from both votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Commit both sides with this amount.
    Commit { amount: u128 },
    /// Abort both sides; the client's result is `result`.
    Abort { result: R },
    /// Abort and try again later: a side was busy.
    Retry,
}

/// The decision for two votes, with the result a single shard would have returned.
///
/// On `Commit`, commit both sides with the amount. On `Abort`, send `abort_side` to every
/// side that voted `Prepared` (or did not answer: presumed abort), and, when the result
/// is transient, to every side with `record_failed` so the id is burned everywhere. A
/// side that voted `Rejected` with an `exists*` result holds the earlier committed
/// transfer and answers an abort with `SideError::Conflict`.
pub fn combine_votes(debit: SideVote, credit: SideVote) -> Decision {
    let ledger_of = |vote: SideVote| match vote {
        SideVote::Prepared { account_ledger, .. } => Some(account_ledger),
        SideVote::Rejected { account_ledger, .. } => account_ledger,
        SideVote::Busy | SideVote::Aborted => None,
    };
    let mut failure = [debit, credit]
        .into_iter()
        .filter_map(|vote| match vote {
            SideVote::Rejected { result, .. } => Some(result),
            _ => None,
        })
        .min();
    if let (Some(dr_ledger), Some(cr_ledger)) = (ledger_of(debit), ledger_of(credit)) {
        if dr_ledger != cr_ledger {
            let mismatch = R::AccountsMustHaveTheSameLedger;
            failure = Some(failure.map_or(mismatch, |result| result.min(mismatch)));
        }
    }
    if let Some(result) = failure {
        return Decision::Abort { result };
    }
    match (debit, credit) {
        // An aborted id stays aborted, so that a late duplicate prepare can never
        // reserve funds nobody will release: like a transient failure, it burns the id.
        (SideVote::Aborted, _) | (_, SideVote::Aborted) => {
            Decision::Abort { result: R::IdAlreadyFailed }
        }
        (SideVote::Busy, _) | (_, SideVote::Busy) => Decision::Retry,
        (SideVote::Prepared { amount: a, .. }, SideVote::Prepared { amount: b, .. }) => {
            Decision::Commit { amount: a.min(b) }
        }
        _ => unreachable!("rejections were handled above"),
    }
}

impl<S: Store> Ledger<S> {
    /// A hint for the cache, as `Ledger::execute` gives for its events: touches what
    /// preparing (`prepare`) or carrying out `sides` will read (reservation, account
    /// row, and for a prepare the id index), so that their misses go out to memory
    /// together. Call it for a few sides ahead.
    pub fn touch_sides<'a>(
        &self,
        sides: impl IntoIterator<Item = (&'a Transfer, Side)>,
        prepare: bool,
    ) {
        let touched = sides.into_iter().fold(0, |sum, (transfer, side)| {
            let account = side_account(transfer, side);
            let side = self.store.touch_side(transfer.id, side, prepare);
            sum ^ side ^ self.store.touch_accounts([account, 0])
        });
        std::hint::black_box(touched);
    }

    /// Validates `transfer` for this shard's `side` and reserves. See the module docs.
    pub fn prepare_side(
        &mut self,
        timestamp: u64,
        transfer: &Transfer,
        side: Side,
    ) -> Result<SideVote, BatchError> {
        if let Some(existing) = self.store.reservation(transfer.id, side) {
            if !same_request(&existing.transfer, transfer) {
                // The id is held by another transaction's side (a client reused it while
                // that one is in flight, or it was aborted): this one cannot have it.
                if existing.state != ReservationState::Committed {
                    let result = R::IdAlreadyFailed;
                    return Ok(SideVote::Rejected { result, account_ledger: None });
                }
            } else if let Some(vote) = self.replay_vote(&existing) {
                return Ok(vote);
            }
        }
        let mut vote = SideVote::Aborted;
        self.execute(timestamp, std::slice::from_ref(transfer), |ledger, t| {
            vote = ledger.prepare_event(t, side);
            match vote {
                SideVote::Rejected { result, .. } => result,
                _ => R::Ok,
            }
        })
        .map(|results| match results[0] {
            // The batch driver refused the event before it reached this side's checks.
            result if result != R::Ok && !matches!(vote, SideVote::Rejected { .. }) => {
                SideVote::Rejected { result, account_ledger: None }
            }
            _ => vote,
        })
    }

    /// The vote an earlier prepare gave, if this side already holds one.
    fn replay_vote(&self, existing: &Reservation) -> Option<SideVote> {
        match existing.state {
            ReservationState::Aborted => Some(SideVote::Aborted),
            // Committed: the transfer exists, so a fresh prepare reports `exists`.
            ReservationState::Committed => None,
            ReservationState::Prepared => {
                let account_id = side_account(&existing.transfer, existing.side);
                let account = self.store.account(account_id).expect("reserved account exists");
                Some(SideVote::Prepared {
                    amount: existing.transfer.amount,
                    account_ledger: account.ledger,
                })
            }
        }
    }

    fn prepare_event(&mut self, t: &Transfer, side: Side) -> SideVote {
        if let Some(result) = self.event_error(t, true) {
            return SideVote::Rejected { result, account_ledger: None };
        }
        let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        if post || t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
            return self.prepare_post_or_void(t, side, post);
        }
        let (mut account, amount) = match self.check_side(t, side) {
            Ok(checked) => checked,
            Err(vote) => return vote,
        };
        *pending_balance(&mut account, side) += amount;
        self.store.update_account(&account);
        self.store.set_reservation(Reservation {
            transfer: Transfer { amount, ..*t },
            side,
            state: ReservationState::Prepared,
        });
        SideVote::Prepared { amount, account_ledger: account.ledger }
    }

    /// This side's checks of a single-phase or pending transfer (not a post/void), past
    /// the event's own (`event_error`): its account and the amount this side allows
    /// (after its balancing clamp), or the vote that refuses it. Reads only.
    fn check_side(&self, t: &Transfer, side: Side) -> Result<(Account, u128), SideVote> {
        let Some(account) = self.store.account(side_account(t, side)) else {
            let result = match side {
                Side::Debit => R::DebitAccountNotFound,
                Side::Credit => R::CreditAccountNotFound,
            };
            return Err(SideVote::Rejected { result, account_ledger: None });
        };
        let account_ledger = Some(account.ledger);
        if account.ledger != t.ledger {
            let result = R::TransferMustHaveTheSameLedgerAsAccounts;
            return Err(SideVote::Rejected { result, account_ledger });
        }
        let amount = match side {
            Side::Debit => balanced_amount(t, Some(&account), None),
            Side::Credit => balanced_amount(t, None, Some(&account)),
        };
        let failure = [self.transfer_global_error(t), side_error(t, side, &account, amount)];
        if let Some(result) = failure.into_iter().flatten().min() {
            return Err(SideVote::Rejected { result, account_ledger });
        }
        Ok((account, amount))
    }

    /// The last agent's side (2PC's coordinator, which prepares its own sides only once
    /// every other participant voted): validates side `side` of `transfer` exactly as
    /// [`Ledger::prepare_side`] does, and when `other`, the vote of the transfer's
    /// other side (held by another shard), lets the transfer commit
    /// ([`combine_votes`]), posts it at once with the amount both sides allow, as
    /// [`Ledger::commit_side`] would after the prepare: one pass over the side's
    /// account instead of a reservation made and then carried out. Nothing changes
    /// when the transfer does not commit (the caller releases the side with
    /// [`Ledger::abort_side`], which records the abort).
    ///
    /// Returns this side's vote, or `None` when the side is not for one pass (the
    /// caller prepares it): the transfer is pending, a post or void, closing or
    /// imported (their commit does more than post an amount), its other account lives
    /// here, or a reservation of its id is here.
    pub fn prepare_and_commit_side(
        &mut self,
        timestamp: u64,
        transfer: &Transfer,
        side: Side,
        other_vote: SideVote,
    ) -> Result<Option<SideVote>, BatchError> {
        let more_than_posting = TransferFlags::PENDING
            | TransferFlags::POST_PENDING_TRANSFER
            | TransferFlags::VOID_PENDING_TRANSFER
            | TransferFlags::CLOSING_DEBIT
            | TransferFlags::CLOSING_CREDIT
            | TransferFlags::IMPORTED;
        let one_pass = !transfer.flags.intersects(more_than_posting)
            && self.store.reservation(transfer.id, side).is_none()
            && self.store.account(side_account(transfer, side.other())).is_none();
        if !one_pass {
            return Ok(None);
        }
        let mut vote = SideVote::Aborted;
        let results = self.execute(timestamp, std::slice::from_ref(transfer), |ledger, t| {
            vote = ledger.prepare_and_commit_event(t, side, other_vote);
            match vote {
                SideVote::Rejected { result, .. } => result,
                _ => R::Ok,
            }
        })?;
        Ok(Some(match results[0] {
            // The batch driver refused the event before it reached this side's checks.
            result if result != R::Ok && !matches!(vote, SideVote::Rejected { .. }) => {
                SideVote::Rejected { result, account_ledger: None }
            }
            _ => vote,
        }))
    }

    fn prepare_and_commit_event(
        &mut self,
        t: &Transfer,
        side: Side,
        other_vote: SideVote,
    ) -> SideVote {
        if let Some(result) = self.event_error(t, true) {
            return SideVote::Rejected { result, account_ledger: None };
        }
        let (mut account, amount) = match self.check_side(t, side) {
            Ok(checked) => checked,
            Err(vote) => return vote,
        };
        let vote = SideVote::Prepared { amount, account_ledger: account.ledger };
        let [debit, credit] = match side {
            Side::Debit => [vote, other_vote],
            Side::Credit => [other_vote, vote],
        };
        if let Decision::Commit { amount: committed } = combine_votes(debit, credit) {
            assert!(committed <= amount, "a side commits at most what it allows");
            *posted_balance_mut(&mut account, side) += committed;
            self.store.update_account(&account);
            // Stored as a committed side whose other account lives elsewhere: its
            // reservation would be dropped now (`committed_and_dropped` says it
            // committed).
            self.store.insert_transfer(&Transfer { amount: committed, ..*t });
            self.record_history(&account, t.timestamp);
        }
        vote
    }

    fn prepare_post_or_void(&mut self, t: &Transfer, side: Side, post: bool) -> SideVote {
        let reject = |result| SideVote::Rejected { result, account_ledger: None };
        let Some(p) = self.store.transfer(t.pending_id) else {
            return reject(R::PendingTransferNotFound);
        };
        if let Some(result) = pending_mismatch(t, &p, post) {
            return reject(result);
        }
        match self.store.pending_state(p.id).expect("a pending transfer has a state") {
            PendingState::Pending => {}
            PendingState::Posted => return reject(R::PendingTransferAlreadyPosted),
            PendingState::Voided => return reject(R::PendingTransferAlreadyVoided),
            PendingState::Expired => return reject(R::PendingTransferExpired),
        }
        let Some(account) = self.store.account(side_account(&p, side)) else {
            // This shard holds a pending transfer but not this side's account: the
            // coordinator sent the side to the wrong shard.
            return reject(match side {
                Side::Debit => R::DebitAccountNotFound,
                Side::Credit => R::CreditAccountNotFound,
            });
        };
        if self.store.pending_locked_by(p.id).is_some_and(|holder| holder != t.id) {
            return SideVote::Busy;
        }
        let resolved = resolve_post_or_void(t, &p, post);
        let failure = [
            self.transfer_global_error(t),
            post_side_error(t, &p, side, &account, resolved.amount),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(result) = failure {
            return SideVote::Rejected { result, account_ledger: Some(account.ledger) };
        }
        self.store.set_reservation(Reservation {
            transfer: resolved,
            side,
            state: ReservationState::Prepared,
        });
        SideVote::Prepared { amount: resolved.amount, account_ledger: account.ledger }
    }

    /// Applies a prepared side with the decided `amount` (at most the reserved amount;
    /// the rest of the reservation is released). `agreed_at`: the transaction's agreed
    /// commit timestamp, at or before `timestamp` (see the module docs).
    pub fn commit_side(
        &mut self,
        timestamp: u64,
        id: u128,
        side: Side,
        amount: u128,
        agreed_at: u64,
    ) -> Result<SideResolution, SideError> {
        let Some(reservation) = self.side_to_commit(id, side, amount)? else {
            return Ok(SideResolution::Committed);
        };
        let reserved = reservation.transfer.amount;
        assert!(agreed_at <= timestamp, "a side commits at or after its agreed timestamp");
        self.check_batch(timestamp, 1)?;
        self.expire(timestamp);

        let t = Transfer { amount, timestamp, ..reservation.transfer };
        let pv = t.flags.intersects(
            TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
        );
        let mut account =
            self.store.account(side_account(&t, side)).expect("a prepared side's account exists");
        if pv {
            let p = self.store.transfer(t.pending_id).expect("a locked pending transfer exists");
            if let Some(at) = self.deadline_of(&p) {
                if self.store.has_expiry(at, p.id) {
                    self.store.remove_expiry(at, p.id);
                }
            }
            *pending_balance(&mut account, side) -= p.amount;
            if t.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
                *posted_balance_mut(&mut account, side) += amount;
                self.store.set_pending_state(p.id, PendingState::Posted);
            } else {
                if p.flags.contains(side.closing_flag()) {
                    account.flags.remove(AccountFlags::CLOSED);
                }
                self.store.set_pending_state(p.id, PendingState::Voided);
            }
        } else if t.flags.contains(TransferFlags::PENDING) {
            // The reservation becomes the pending transfer's reservation.
            *pending_balance(&mut account, side) -= reserved - amount;
            if t.flags.contains(side.closing_flag()) {
                account.flags.insert(AccountFlags::CLOSED);
            }
            self.store.set_pending_state(t.id, PendingState::Pending);
            // When this shard holds both sides (a chain's transfer inside one shard), the
            // deadline starts counting once both are committed: expiry between the two
            // would release the side not yet committed.
            let other_prepared = self
                .store
                .reservation(t.id, side.other())
                .is_some_and(|r| r.state == ReservationState::Prepared);
            if let Some(at) = expiry_of(agreed_at, t.timeout).filter(|_| t.timeout != 0) {
                if !other_prepared {
                    self.store.insert_expiry(at, t.id);
                }
            }
        } else {
            *pending_balance(&mut account, side) -= reserved;
            *posted_balance_mut(&mut account, side) += amount;
        }
        self.store.update_account(&account);
        // A transfer of a chain whose two accounts both live here has two sides here:
        // the first one committed stores it (the id cannot name another transfer: its
        // prepare would have been refused with `exists`). Otherwise no lookup is needed.
        let both_here = self.store.account(side_account(&t, side.other())).is_some();
        if !both_here || self.store.transfer(t.id).is_none() {
            self.store.insert_transfer(&t);
        }
        self.record_history(&account, timestamp);
        if t.flags.contains(TransferFlags::PENDING) || both_here {
            // A pending transfer's deadline counts from the agreed timestamp, kept here
            // (`deadline_of`); a transfer with both accounts here keeps its sides'
            // reservations (a stored transfer of two accounts here may be a single-shard
            // one, so it cannot say that a side committed, `committed_and_dropped`).
            let agreed = Transfer { timestamp: agreed_at, ..reservation.transfer };
            self.store.set_reservation(Reservation {
                transfer: agreed,
                state: ReservationState::Committed,
                ..reservation
            });
        } else {
            self.store.remove_reservation(id, side);
        }
        self.commit_timestamp = timestamp;
        Ok(SideResolution::Committed)
    }

    /// What `commit_side` checks before it changes anything: the side's reservation
    /// when it is prepared and `amount` fits in it; `None` when the side already
    /// committed.
    fn side_to_commit(
        &self,
        id: u128,
        side: Side,
        amount: u128,
    ) -> Result<Option<Reservation>, SideError> {
        let Some(reservation) = self.store.reservation(id, side) else {
            return match self.committed_and_dropped(id, side) {
                Some(_) => Ok(None),
                None => Err(SideError::NotPrepared),
            };
        };
        match reservation.state {
            ReservationState::Prepared => {}
            ReservationState::Committed => return Ok(None),
            state @ ReservationState::Aborted => return Err(SideError::Conflict { state }),
        }
        let reserved = reservation.transfer.amount;
        if amount > reserved {
            return Err(SideError::AmountAboveReservation { reserved, requested: amount });
        }
        Ok(Some(reservation))
    }

    /// Releases a side. `record_failed`: the coordinator's result was transient, so the
    /// id is burned here as it would be on a single shard. Aborting a side that was
    /// never prepared records the abort, so that a late prepare is refused.
    pub fn abort_side(
        &mut self,
        timestamp: u64,
        transfer: &Transfer,
        side: Side,
        record_failed: bool,
    ) -> Result<SideResolution, SideError> {
        let existing = self.store.reservation(transfer.id, side);
        if existing.is_none() && self.committed_and_dropped(transfer.id, side).is_some() {
            return Err(SideError::Conflict { state: ReservationState::Committed });
        }
        if let Some(reservation) = existing.filter(|r| !same_request(&r.transfer, transfer)) {
            // Another transaction's side under the same id: nothing of this one is
            // here, and the other's must not be touched.
            return match reservation.state {
                ReservationState::Committed => {
                    Err(SideError::Conflict { state: reservation.state })
                }
                _ => Ok(SideResolution::Aborted),
            };
        }
        if let Some(reservation) = existing {
            match reservation.state {
                ReservationState::Prepared => {}
                ReservationState::Aborted => return Ok(SideResolution::Aborted),
                state @ ReservationState::Committed => return Err(SideError::Conflict { state }),
            }
        }
        self.check_batch(timestamp, 1)?;
        self.expire(timestamp);
        let reservation = match existing {
            Some(reservation) => {
                let pv = reservation.transfer.pending_id != 0;
                if !pv {
                    let account_id = side_account(&reservation.transfer, side);
                    let mut account = self.store.account(account_id).expect("reserved account");
                    *pending_balance(&mut account, side) -= reservation.transfer.amount;
                    self.store.update_account(&account);
                }
                reservation
            }
            None => Reservation { transfer: *transfer, side, state: ReservationState::Aborted },
        };
        self.store.set_reservation(Reservation { state: ReservationState::Aborted, ..reservation });
        // A post or void that held a pending transfer past its deadline lets go of it:
        // it expires now (the expiry that skipped it while held).
        if reservation.transfer.pending_id != 0 {
            self.expire_released(timestamp, reservation.transfer.pending_id);
        }
        if record_failed
            && matches!(self.store.transfer_id(transfer.id), crate::store::TransferId::Free)
        {
            self.store.record_failed_id(transfer.id);
        }
        self.commit_timestamp = timestamp;
        Ok(SideResolution::Aborted)
    }
}

impl<S: Store> Ledger<S> {
    /// Expires pending transfer `id` if it is still pending, no longer held, and past its
    /// deadline at `timestamp`.
    fn expire_released(&mut self, timestamp: u64, id: u128) {
        let Some(p) = self.store.transfer(id) else { return };
        if p.timeout == 0
            || self.store.pending_state(id) != Some(PendingState::Pending)
            || self.store.pending_locked_by(id).is_some()
        {
            return;
        }
        let Some(at) = self.deadline_of(&p) else { return };
        if at > timestamp {
            return;
        }
        if self.store.has_expiry(at, id) {
            self.store.remove_expiry(at, id);
        }
        self.release_pending(&p, PendingState::Expired, None);
    }
}

impl<S: Store> Ledger<S> {
    /// When pending transfer `p` expires, if it has a timeout: for a cross-shard one, its
    /// agreed commit timestamp plus the timeout (the same at both sides), otherwise its
    /// own timestamp plus the timeout.
    pub(super) fn deadline_of(&self, p: &Transfer) -> Option<u64> {
        if p.timeout == 0 {
            return None;
        }
        let agreed = [Side::Debit, Side::Credit].into_iter().find_map(|side| {
            self.store
                .reservation(p.id, side)
                .filter(|r| r.state == ReservationState::Committed)
                .map(|r| r.transfer.timestamp)
        });
        expiry_of(agreed.unwrap_or(p.timestamp), p.timeout)
    }

    /// Where side `side` of transfer `id` stands here: its reservation's transfer (as
    /// reserved) and state; or, for a side that committed and dropped its reservation,
    /// the stored transfer as `Committed`. `None`: nothing of it. The reservation may
    /// be another request's under the same id: callers compare the accounts.
    pub fn side_state(&self, id: u128, side: Side) -> Option<(Transfer, ReservationState)> {
        match self.store.reservation(id, side) {
            Some(reservation) => Some((reservation.transfer, reservation.state)),
            None => self.committed_and_dropped(id, side).map(|t| (t, ReservationState::Committed)),
        }
    }

    /// The stored transfer of side `side` of `id`, if that side committed here and
    /// dropped its reservation: a transfer is stored under `id` and its other account
    /// lives elsewhere. (A single-shard transfer has both accounts here, and a
    /// cross-shard one with both accounts here keeps its sides' reservations.)
    fn committed_and_dropped(&self, id: u128, side: Side) -> Option<Transfer> {
        let t = self.store.transfer(id)?;
        self.store.account(side_account(&t, side.other())).is_none().then_some(t)
    }

    /// Corrects `account`, as it stood at a snapshot read's point (a
    /// `expire_pending_transfers(at)` at this shard), for side `side` of a transfer that
    /// was prepared there (`reserved`: its reservation's transfer then) and has since
    /// ended with `fate`.
    ///
    /// The read sees the transaction exactly when it committed with an agreed timestamp
    /// at or before `at`: then the side's commit is applied to the account as it would
    /// have been at `at` (including the expiry of a pending transfer whose deadline is
    /// at or before `at`); otherwise its reservation is taken out, and a pending
    /// transfer an aborted post/void held past its deadline counts as expired, as it
    /// is at every shard that did not hold it.
    pub fn snapshot_side(
        &self,
        account: &mut Account,
        reserved: &Transfer,
        side: Side,
        at: u64,
        fate: SideFate,
    ) {
        assert_eq!(side_account(reserved, side), account.id);
        let t = reserved;
        let (included, committed) = match fate {
            SideFate::Committed { agreed_at, amount } => {
                assert!(amount <= t.amount, "a side commits at most what it reserved");
                (agreed_at <= at, Some((agreed_at, amount)))
            }
            SideFate::Released => (false, None),
        };
        if t.pending_id != 0 {
            let p = self.store.transfer(t.pending_id).expect("a held pending transfer exists");
            let expired = self.deadline_of(&p).is_some_and(|deadline| deadline <= at);
            if let Some((_, amount)) = committed.filter(|_| included) {
                *pending_balance(account, side) -= p.amount;
                if t.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
                    *posted_balance_mut(account, side) += amount;
                }
            } else if committed.is_none() && expired {
                *pending_balance(account, side) -= p.amount;
            }
        } else if let Some((agreed_at, amount)) = committed.filter(|_| included) {
            *pending_balance(account, side) -= t.amount;
            if !t.flags.contains(TransferFlags::PENDING) {
                *posted_balance_mut(account, side) += amount;
            } else if !expiry_of(agreed_at, t.timeout)
                .is_some_and(|deadline| t.timeout != 0 && deadline <= at)
            {
                *pending_balance(account, side) += amount;
            }
        } else {
            *pending_balance(account, side) -= t.amount;
        }
    }
}

/// Whether a reservation's transfer (as this side reserved it: balancing clamped, a
/// post/void resolved against its pending transfer) is the one `requested` names: the
/// same fields, where the request names them (a post/void may leave accounts and
/// amount zero, a balancing transfer's amount is an upper bound).
pub(super) fn same_request(reserved: &Transfer, requested: &Transfer) -> bool {
    let pv = requested
        .flags
        .intersects(TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER);
    // A post/void's reservation fills in from its pending transfer what it left zero.
    let named = |requested: u128, reserved: u128| (pv && requested == 0) || requested == reserved;
    let balancing = requested
        .flags
        .intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
    reserved.id == requested.id
        && reserved.pending_id == requested.pending_id
        && reserved.flags == requested.flags - TransferFlags::LINKED
        && named(requested.user_data_128, reserved.user_data_128)
        && named(requested.user_data_64.into(), reserved.user_data_64.into())
        && named(requested.user_data_32.into(), reserved.user_data_32.into())
        && named(requested.debit_account_id, reserved.debit_account_id)
        && named(requested.credit_account_id, reserved.credit_account_id)
        && (pv || balancing || reserved.amount == requested.amount)
        && named(requested.ledger.into(), reserved.ledger.into())
        && named(requested.code.into(), reserved.code.into())
        && (pv || reserved.timeout == requested.timeout)
}

pub(super) fn side_account(t: &Transfer, side: Side) -> u128 {
    match side {
        Side::Debit => t.debit_account_id,
        Side::Credit => t.credit_account_id,
    }
}

pub(super) fn pending_balance(account: &mut Account, side: Side) -> &mut u128 {
    match side {
        Side::Debit => &mut account.debits_pending,
        Side::Credit => &mut account.credits_pending,
    }
}

fn posted_balance_mut(account: &mut Account, side: Side) -> &mut u128 {
    match side {
        Side::Debit => &mut account.debits_posted,
        Side::Credit => &mut account.credits_posted,
    }
}
