//! Pending transfers: post, void, expiry, closing accounts, and the post/void result codes
//! (one test per code, named after it). See SEMANTICS.md, "Post and void" and "Expiry".

mod common;
use common::*;

/// Accounts 1, 2 and 4 on ledger 1; account 3 on ledger 2.
fn setup() -> Harness {
    Harness::with_accounts(&[account(1, 1), account(2, 1), account(3, 2), account(4, 1)])
}

/// The pending transfer most tests post or void: 10 from account 1 to account 2, with
/// user data 7/8/9 and code 3.
fn the_pending() -> Transfer {
    Transfer {
        user_data_128: 7,
        user_data_64: 8,
        user_data_32: 9,
        code: 3,
        ..pending(10, 1, 2, 10)
    }
}

/// `setup()` with `the_pending()` created.
fn setup_pending() -> Harness {
    let mut h = setup();
    h.ok_transfers(&[the_pending()]);
    assert_eq!(h.balances(1), (10, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 10, 0));
    h
}

fn closing(id: u128, dr: u128, cr: u128, amount: u128, flags: TransferFlags) -> Transfer {
    transfer_flags(id, dr, cr, amount, TransferFlags::PENDING | flags)
}

// ---------------------------------------------------------------------------------------
// One test per result code.
// ---------------------------------------------------------------------------------------

#[test]
fn pending_transfer_not_found() {
    let mut h = setup_pending();
    let t = post(11, 99, AMOUNT_MAX);
    h.expect_transfer(t, TR::PendingTransferNotFound);
    h.assert_id_failed(t);
    h.expect_transfer(void(12, 99), TR::PendingTransferNotFound);
    h.expect_transfer(post(13, 10, AMOUNT_MAX), TR::Ok);
}

#[test]
fn pending_transfer_not_pending() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 1, 2, 10)]);
    h.expect_transfer(post(11, 10, AMOUNT_MAX), TR::PendingTransferNotPending);
    h.expect_transfer(void(11, 10), TR::PendingTransferNotPending);
    // Not transient: the id can be used for a valid post.
    h.ok_transfers(&[pending(12, 1, 2, 10)]);
    h.expect_transfer(post(11, 12, AMOUNT_MAX), TR::Ok);
}

#[test]
fn pending_transfer_has_different_debit_account_id() {
    let mut h = setup_pending();
    h.expect_transfer(
        Transfer { debit_account_id: 4, ..post(11, 10, 5) },
        TR::PendingTransferHasDifferentDebitAccountId,
    );
    h.expect_transfer(
        Transfer { debit_account_id: 2, ..void(11, 10) },
        TR::PendingTransferHasDifferentDebitAccountId,
    );
    h.expect_transfer(Transfer { debit_account_id: 1, ..post(11, 10, 5) }, TR::Ok);
}

#[test]
fn pending_transfer_has_different_credit_account_id() {
    let mut h = setup_pending();
    h.expect_transfer(
        Transfer { credit_account_id: 4, ..post(11, 10, 5) },
        TR::PendingTransferHasDifferentCreditAccountId,
    );
    h.expect_transfer(Transfer { credit_account_id: 2, ..post(11, 10, 5) }, TR::Ok);
}

#[test]
fn pending_transfer_has_different_ledger() {
    let mut h = setup_pending();
    h.expect_transfer(
        Transfer { ledger: 2, ..post(11, 10, 5) },
        TR::PendingTransferHasDifferentLedger,
    );
    h.expect_transfer(Transfer { ledger: 1, ..void(11, 10) }, TR::Ok);
}

#[test]
fn pending_transfer_has_different_code() {
    let mut h = setup_pending();
    h.expect_transfer(Transfer { code: 1, ..post(11, 10, 5) }, TR::PendingTransferHasDifferentCode);
    h.expect_transfer(Transfer { code: 3, ..post(11, 10, 5) }, TR::Ok);
}

#[test]
fn exceeds_pending_transfer_amount() {
    let mut h = setup_pending();
    h.expect_transfer(post(11, 10, 11), TR::ExceedsPendingTransferAmount);
    h.expect_transfer(post(11, 10, AMOUNT_MAX - 1), TR::ExceedsPendingTransferAmount);
    h.expect_transfer(post(11, 10, 10), TR::Ok);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
}

#[test]
fn pending_transfer_has_different_amount() {
    let mut h = setup_pending();
    h.expect_transfer(
        Transfer { amount: 5, ..void(11, 10) },
        TR::PendingTransferHasDifferentAmount,
    );
    h.expect_transfer(
        Transfer { amount: 11, ..void(11, 10) },
        TR::PendingTransferHasDifferentAmount,
    );
    h.expect_transfer(
        Transfer { amount: AMOUNT_MAX, ..void(11, 10) },
        TR::PendingTransferHasDifferentAmount,
    );
    h.expect_transfer(Transfer { amount: 10, ..void(11, 10) }, TR::Ok);
    assert_eq!(h.state(10), Some(PendingState::Voided));
}

#[test]
fn pending_transfer_already_posted() {
    let mut h = setup_pending();
    h.ok_transfers(&[post(11, 10, AMOUNT_MAX)]);
    h.expect_transfer(post(12, 10, AMOUNT_MAX), TR::PendingTransferAlreadyPosted);
    h.expect_transfer(post(12, 10, 1), TR::PendingTransferAlreadyPosted);
    h.expect_transfer(void(12, 10), TR::PendingTransferAlreadyPosted);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
    // Not transient: id 12 is still usable.
    h.ok_transfers(&[pending(20, 1, 2, 1)]);
    h.expect_transfer(post(12, 20, AMOUNT_MAX), TR::Ok);
}

#[test]
fn pending_transfer_already_voided() {
    let mut h = setup_pending();
    h.ok_transfers(&[void(11, 10)]);
    h.expect_transfer(post(12, 10, AMOUNT_MAX), TR::PendingTransferAlreadyVoided);
    h.expect_transfer(void(12, 10), TR::PendingTransferAlreadyVoided);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
}

#[test]
fn pending_transfer_expired() {
    let mut h = setup();
    h.ok_transfers(&[pending_timeout(10, 1, 2, 10, 1)]);
    let expires_at = h.xfer(10).unwrap().timestamp + NS;
    h.set_clock(expires_at);
    let results = h.transfers(&[post(11, 10, AMOUNT_MAX)]);
    assert_eq!(h.last_batch, expires_at);
    assert_eq!(results, vec![TR::PendingTransferExpired]);
    assert!(h.xfer(11).is_none());
    h.expect_transfer(void(11, 10), TR::PendingTransferExpired);
    assert_eq!(h.state(10), Some(PendingState::Expired));
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    // Not transient.
    h.ok_transfers(&[pending(20, 1, 2, 1)]);
    h.expect_transfer(void(11, 20), TR::Ok);
}

// ---------------------------------------------------------------------------------------
// Precedence among post/void checks.
// ---------------------------------------------------------------------------------------

#[test]
fn precedence_timeout_reserved_beats_pending_transfer_not_found() {
    let mut h = setup();
    h.expect_transfer(
        Transfer { timeout: 5, ..post(11, 99, 5) },
        TR::TimeoutReservedForPendingTransfer,
    );
    // And the id was not recorded as failed (timeout_reserved is not transient).
    h.expect_transfer(post(11, 99, 5), TR::PendingTransferNotFound);
}

#[test]
fn precedence_pending_id_checks_beat_pending_transfer_not_found() {
    let mut h = setup();
    h.expect_transfer(post(11, 11, 5), TR::PendingIdMustBeDifferent);
    h.expect_transfer(void(11, u128::MAX), TR::PendingIdMustNotBeIntMax);
}

#[test]
fn precedence_not_pending_beats_different_fields() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 1, 2, 10)]);
    let t = Transfer { debit_account_id: 4, ledger: 2, ..post(11, 10, 50) };
    h.expect_transfer(t, TR::PendingTransferNotPending);
}

#[test]
fn precedence_different_fields_in_order() {
    let mut h = setup_pending();
    let mut t = Transfer {
        debit_account_id: 4,
        credit_account_id: 4,
        ledger: 2,
        code: 9,
        ..post(11, 10, 50)
    };
    h.expect_transfer(t, TR::PendingTransferHasDifferentDebitAccountId);
    t.debit_account_id = 0;
    h.expect_transfer(t, TR::PendingTransferHasDifferentCreditAccountId);
    t.credit_account_id = 0;
    h.expect_transfer(t, TR::PendingTransferHasDifferentLedger);
    t.ledger = 0;
    h.expect_transfer(t, TR::PendingTransferHasDifferentCode);
    t.code = 0;
    h.expect_transfer(t, TR::ExceedsPendingTransferAmount);
    t.amount = 10;
    h.expect_transfer(t, TR::Ok);
}

#[test]
fn precedence_amount_checks_beat_already_resolved() {
    let mut h = setup_pending();
    h.ok_transfers(&[post(11, 10, 3)]);
    h.expect_transfer(post(12, 10, 11), TR::ExceedsPendingTransferAmount);
    h.expect_transfer(
        Transfer { amount: 3, ..void(12, 10) },
        TR::PendingTransferHasDifferentAmount,
    );
    h.expect_transfer(post(12, 10, 10), TR::PendingTransferAlreadyPosted);

    let mut h = setup_pending();
    h.ok_transfers(&[void(11, 10)]);
    h.expect_transfer(post(12, 10, 11), TR::ExceedsPendingTransferAmount);
    h.expect_transfer(
        Transfer { amount: 1, ..void(12, 10) },
        TR::PendingTransferHasDifferentAmount,
    );
}

#[test]
fn precedence_already_posted_beats_closed() {
    let mut h = setup_pending();
    h.ok_transfers(&[post(11, 10, AMOUNT_MAX)]);
    h.ok_transfers(&[closing(12, 1, 4, 0, TransferFlags::CLOSING_DEBIT)]);
    h.expect_transfer(post(13, 10, AMOUNT_MAX), TR::PendingTransferAlreadyPosted);
}

#[test]
fn precedence_debit_closed_beats_credit_closed_on_post() {
    let mut h = setup_pending();
    h.ok_transfers(&[closing(
        11,
        1,
        2,
        0,
        TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT,
    )]);
    h.expect_transfer(post(12, 10, AMOUNT_MAX), TR::DebitAccountAlreadyClosed);
}

// ---------------------------------------------------------------------------------------
// Post and void.
// ---------------------------------------------------------------------------------------

#[test]
fn pending_reserves_the_amount() {
    let mut h = setup();
    let p = pending(10, 1, 2, 10);
    h.expect_transfer(p, TR::Ok);
    assert_eq!(h.xfer(10), Some(Transfer { timestamp: h.last_batch, ..p }));
    assert_eq!(h.balances(1), (10, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 10, 0));
    assert_eq!(h.state(10), Some(PendingState::Pending));
    assert_eq!(h.state(99), None);
}

#[test]
fn post_full_amount_with_amount_max() {
    let mut h = setup_pending();
    h.expect_transfer(post(11, 10, AMOUNT_MAX), TR::Ok);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 10));
    assert_eq!(h.state(10), Some(PendingState::Posted));
    let p = the_pending();
    let expected = Transfer {
        id: 11,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 10,
        pending_id: 10,
        user_data_128: p.user_data_128,
        user_data_64: p.user_data_64,
        user_data_32: p.user_data_32,
        timeout: 0,
        ledger: p.ledger,
        code: p.code,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        timestamp: h.last_batch,
    };
    assert_eq!(h.xfer(11), Some(expected));
    // The pending transfer itself is unchanged.
    assert_eq!(h.xfer(10).unwrap().amount, 10);
    assert_eq!(h.xfer(10).unwrap().flags, TransferFlags::PENDING);
}

#[test]
fn post_full_amount_explicitly() {
    let mut h = setup_pending();
    h.expect_transfer(post(11, 10, 10), TR::Ok);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
    assert_eq!(h.xfer(11).unwrap().amount, 10);
}

#[test]
fn post_amount_max_of_an_amount_max_pending() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, AMOUNT_MAX)]);
    h.expect_transfer(post(11, 10, AMOUNT_MAX), TR::Ok);
    assert_eq!(h.balances(1), (0, u128::MAX, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, u128::MAX));
    assert_eq!(h.xfer(11).unwrap().amount, AMOUNT_MAX);
}

#[test]
fn post_partial_releases_the_rest() {
    let mut h = setup_pending();
    h.expect_transfer(post(11, 10, 4), TR::Ok);
    assert_eq!(h.balances(1), (0, 4, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 4));
    assert_eq!(h.xfer(11).unwrap().amount, 4);
    assert_eq!(h.state(10), Some(PendingState::Posted));
    // The rest cannot be posted later.
    h.expect_transfer(post(12, 10, 6), TR::PendingTransferAlreadyPosted);
}

#[test]
fn post_zero_posts_nothing_and_resolves() {
    let mut h = setup_pending();
    h.expect_transfer(post(11, 10, 0), TR::Ok);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 0));
    assert_eq!(h.xfer(11).unwrap().amount, 0);
    assert_eq!(h.state(10), Some(PendingState::Posted));
}

#[test]
fn void_releases() {
    let mut h = setup_pending();
    h.expect_transfer(void(11, 10), TR::Ok);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 0));
    assert_eq!(h.state(10), Some(PendingState::Voided));
    let v = h.xfer(11).unwrap();
    assert_eq!(v.amount, 10, "a void is stored with the pending amount");
    assert_eq!((v.debit_account_id, v.credit_account_id, v.ledger, v.code), (1, 2, 1, 3));
    assert_eq!((v.user_data_128, v.user_data_64, v.user_data_32), (7, 8, 9));
    assert_eq!(v.flags, TransferFlags::VOID_PENDING_TRANSFER);
    assert_eq!(v.timestamp, h.last_batch);
}

#[test]
fn void_with_the_pending_amount() {
    let mut h = setup_pending();
    h.expect_transfer(Transfer { amount: 10, ..void(11, 10) }, TR::Ok);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert_eq!(h.xfer(11).unwrap().amount, 10);
}

#[test]
fn post_with_explicit_fields_equal_to_the_pendings() {
    let mut h = setup_pending();
    let t = Transfer {
        debit_account_id: 1,
        credit_account_id: 2,
        ledger: 1,
        code: 3,
        ..post(11, 10, 10)
    };
    h.expect_transfer(t, TR::Ok);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
}

#[test]
fn post_user_data_inherited_only_where_zero() {
    let mut h = setup_pending();
    let t = Transfer { user_data_64: 80, ..post(11, 10, AMOUNT_MAX) };
    h.expect_transfer(t, TR::Ok);
    let stored = h.xfer(11).unwrap();
    assert_eq!((stored.user_data_128, stored.user_data_64, stored.user_data_32), (7, 80, 9));
}

#[test]
fn post_and_void_in_the_same_batch_as_the_pending() {
    let mut h = setup();
    let r = h.transfers(&[
        pending(10, 1, 2, 10),
        post(11, 10, 3),
        void(12, 10),
        pending(13, 1, 2, 5),
        void(14, 13),
    ]);
    assert_eq!(r, vec![TR::Ok, TR::Ok, TR::PendingTransferAlreadyPosted, TR::Ok, TR::Ok]);
    assert_eq!(h.balances(1), (0, 3, 0, 0));
}

#[test]
fn post_and_void_are_listed_under_the_pendings_accounts() {
    let mut h = setup_pending();
    h.ok_transfers(&[post(11, 10, 4)]);
    let ids: Vec<u128> = h.account_transfers(1).iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![10, 11]);
    let ids: Vec<u128> = h.account_transfers(2).iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![10, 11]);
}

#[test]
fn two_phase_keeps_the_ledger_balanced() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 10), pending(11, 2, 4, 7), pending(12, 4, 1, 3)]);
    h.assert_balanced(&[1, 2, 4]);
    h.ok_transfers(&[post(13, 10, 6), void(14, 11), post(15, 12, AMOUNT_MAX)]);
    h.assert_balanced(&[1, 2, 4]);
    assert_eq!(h.balances(1), (0, 6, 0, 3));
    assert_eq!(h.balances(2), (0, 0, 0, 6));
    assert_eq!(h.balances(4), (0, 3, 0, 0));
}

// ---------------------------------------------------------------------------------------
// Exists for post and void: zero fields resolve to the pending transfer's values.
// ---------------------------------------------------------------------------------------

#[test]
fn post_exists_resolves_zero_fields_from_the_pending() {
    let mut h = setup_pending();
    let t = post(11, 10, AMOUNT_MAX);
    h.ok_transfers(&[t]);
    h.expect_transfer(t, TR::Exists);
    h.expect_transfer(Transfer { amount: 10, ..t }, TR::Exists);
    h.expect_transfer(Transfer { debit_account_id: 1, credit_account_id: 2, ..t }, TR::Exists);
    h.expect_transfer(Transfer { ledger: 1, code: 3, ..t }, TR::Exists);
    h.expect_transfer(
        Transfer { user_data_128: 7, user_data_64: 8, user_data_32: 9, ..t },
        TR::Exists,
    );
    assert_eq!(h.balances(1), (0, 10, 0, 0));
}

/// A post that exists, and a resubmission of it with one field changed; every changed
/// field is reported, whether or not the pending transfer gave it.
fn post_exists_with(change: impl Fn(&mut Transfer), expected: CreateTransferResult) {
    let mut h = setup_pending();
    let t = post(11, 10, AMOUNT_MAX);
    h.ok_transfers(&[t]);
    let mut u = t;
    change(&mut u);
    h.expect_transfer(u, expected);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
}

#[test]
fn post_exists_with_different_flags() {
    post_exists_with(
        |t| t.flags = TransferFlags::VOID_PENDING_TRANSFER,
        TR::ExistsWithDifferentFlags,
    );
}

#[test]
fn post_exists_with_different_pending_id() {
    post_exists_with(|t| t.pending_id = 12, TR::ExistsWithDifferentPendingId);
}

#[test]
fn post_exists_with_different_timeout() {
    post_exists_with(|t| t.timeout = 1, TR::ExistsWithDifferentTimeout);
}

#[test]
fn post_exists_with_different_debit_account_id() {
    post_exists_with(|t| t.debit_account_id = 4, TR::ExistsWithDifferentDebitAccountId);
}

#[test]
fn post_exists_with_different_credit_account_id() {
    post_exists_with(|t| t.credit_account_id = 4, TR::ExistsWithDifferentCreditAccountId);
}

#[test]
fn post_exists_with_different_amount() {
    post_exists_with(|t| t.amount = 9, TR::ExistsWithDifferentAmount);
}

#[test]
fn post_exists_with_different_user_data() {
    post_exists_with(|t| t.user_data_128 = 70, TR::ExistsWithDifferentUserData128);
    post_exists_with(|t| t.user_data_64 = 80, TR::ExistsWithDifferentUserData64);
    post_exists_with(|t| t.user_data_32 = 90, TR::ExistsWithDifferentUserData32);
}

#[test]
fn post_exists_with_different_ledger() {
    post_exists_with(|t| t.ledger = 2, TR::ExistsWithDifferentLedger);
}

#[test]
fn post_exists_with_different_code() {
    post_exists_with(|t| t.code = 1, TR::ExistsWithDifferentCode);
}

#[test]
fn partial_post_exists_compares_the_posted_amount() {
    let mut h = setup_pending();
    let t = post(11, 10, 4);
    h.ok_transfers(&[t]);
    h.expect_transfer(t, TR::Exists);
    // AMOUNT_MAX resolves to the pending amount (10), not the posted 4.
    h.expect_transfer(Transfer { amount: AMOUNT_MAX, ..t }, TR::ExistsWithDifferentAmount);
    h.expect_transfer(Transfer { amount: 0, ..t }, TR::ExistsWithDifferentAmount);
    h.expect_transfer(Transfer { amount: 10, ..t }, TR::ExistsWithDifferentAmount);
}

#[test]
fn post_zero_exists() {
    let mut h = setup_pending();
    let t = post(11, 10, 0);
    h.ok_transfers(&[t]);
    h.expect_transfer(t, TR::Exists);
    h.expect_transfer(Transfer { amount: AMOUNT_MAX, ..t }, TR::ExistsWithDifferentAmount);
}

#[test]
fn void_exists_resolves_zero_amount() {
    let mut h = setup_pending();
    let t = void(11, 10);
    h.ok_transfers(&[t]);
    h.expect_transfer(t, TR::Exists);
    h.expect_transfer(Transfer { amount: 10, ..t }, TR::Exists);
    h.expect_transfer(Transfer { user_data_32: 9, debit_account_id: 1, ..t }, TR::Exists);
    h.expect_transfer(Transfer { user_data_32: 1, ..t }, TR::ExistsWithDifferentUserData32);
    h.expect_transfer(
        Transfer { flags: TransferFlags::POST_PENDING_TRANSFER, ..t },
        TR::ExistsWithDifferentFlags,
    );
}

#[test]
fn void_exists_with_different_amount() {
    let mut h = setup_pending();
    let t = void(11, 10);
    h.ok_transfers(&[t]);
    // Only 0 resolves to the pending amount; any other amount is compared as is.
    h.expect_transfer(Transfer { amount: 5, ..t }, TR::ExistsWithDifferentAmount);
    h.expect_transfer(Transfer { amount: AMOUNT_MAX, ..t }, TR::ExistsWithDifferentAmount);
}

#[test]
fn void_exists_with_different_accounts_ledger_code() {
    let mut h = setup_pending();
    let t = void(11, 10);
    h.ok_transfers(&[t]);
    h.expect_transfer(Transfer { debit_account_id: 4, ..t }, TR::ExistsWithDifferentDebitAccountId);
    h.expect_transfer(
        Transfer { credit_account_id: 4, ..t },
        TR::ExistsWithDifferentCreditAccountId,
    );
    h.expect_transfer(Transfer { ledger: 2, ..t }, TR::ExistsWithDifferentLedger);
    h.expect_transfer(Transfer { code: 1, ..t }, TR::ExistsWithDifferentCode);
}

// ---------------------------------------------------------------------------------------
// Expiry.
// ---------------------------------------------------------------------------------------

/// `setup()` with pending transfer 10 (1 -> 2, amount 10, timeout 1 s); returns the
/// harness and the expiry timestamp.
fn setup_expiring() -> (Harness, u64) {
    let mut h = setup();
    h.ok_transfers(&[pending_timeout(10, 1, 2, 10, 1)]);
    let expires_at = h.xfer(10).unwrap().timestamp + NS;
    (h, expires_at)
}

#[test]
fn expiry_by_a_later_batch() {
    let (mut h, expires_at) = setup_expiring();
    // One nanosecond before: still pending.
    h.set_clock(expires_at - 1);
    h.ok_transfers(&[transfer(20, 4, 2, 1)]);
    assert_eq!(h.last_batch, expires_at - 1);
    assert_eq!(h.state(10), Some(PendingState::Pending));
    assert_eq!(h.balances(1), (10, 0, 0, 0));
    // At the expiry timestamp: expired before the batch's events, amounts released.
    let transfers_before = h.ledger.query_transfers(&QueryFilter::default());
    h.set_clock(expires_at);
    h.ok_transfers(&[transfer(21, 4, 2, 1)]);
    assert_eq!(h.last_batch, expires_at);
    assert_eq!(h.state(10), Some(PendingState::Expired));
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 2));
    // Expiry creates no transfer.
    let transfers_after = h.ledger.query_transfers(&QueryFilter::default());
    assert_eq!(transfers_after.len(), transfers_before.len() + 1);
}

#[test]
fn expiry_happens_before_the_first_event_even_if_its_timestamp_is_earlier() {
    let (mut h, expires_at) = setup_expiring();
    h.set_clock(expires_at);
    // Event 0 gets expires_at - 1, but the batch timestamp is expires_at.
    let r = h.transfers(&[post(11, 10, AMOUNT_MAX), transfer(12, 4, 2, 1)]);
    assert_eq!(h.last_batch, expires_at);
    assert_eq!(r, vec![TR::PendingTransferExpired, TR::Ok]);
    assert_eq!(h.state(10), Some(PendingState::Expired));
}

#[test]
fn post_just_before_expiry_succeeds_and_stops_expiry() {
    let (mut h, expires_at) = setup_expiring();
    h.set_clock(expires_at - 1);
    h.expect_transfer(post(11, 10, AMOUNT_MAX), TR::Ok);
    assert_eq!(h.pulse(expires_at + 10 * NS), 0);
    assert_eq!(h.state(10), Some(PendingState::Posted));
    assert_eq!(h.balances(1), (0, 10, 0, 0));
}

#[test]
fn voided_transfer_does_not_expire() {
    let (mut h, expires_at) = setup_expiring();
    h.expect_transfer(void(11, 10), TR::Ok);
    assert_eq!(h.pulse(expires_at), 0);
    assert_eq!(h.state(10), Some(PendingState::Voided));
}

#[test]
fn expiry_by_pulse() {
    let (mut h, expires_at) = setup_expiring();
    let before = h.snapshot();
    assert_eq!(h.pulse(expires_at - 1), 0);
    h.assert_unchanged(&before);
    assert_eq!(h.pulse(expires_at), 1);
    assert_eq!(h.state(10), Some(PendingState::Expired));
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 0));
    assert_eq!(h.pulse(expires_at + NS), 0, "expires once");
    h.expect_transfer(post(11, 10, AMOUNT_MAX), TR::PendingTransferExpired);
    h.expect_transfer(void(11, 10), TR::PendingTransferExpired);
    // Expiry created no transfer.
    assert_eq!(h.account_transfers(1).len(), 1);
}

#[test]
fn pulse_with_regressed_or_out_of_range_timestamp_changes_nothing() {
    let (mut h, expires_at) = setup_expiring();
    h.set_clock(expires_at - 100);
    h.ok_transfers(&[transfer(20, 4, 2, 1)]);
    let commit = h.ledger.commit_timestamp();
    let before = h.snapshot();
    let digest = h.ledger.digest();
    assert!(matches!(
        h.ledger.expire_pending_transfers(commit - 1),
        Err(BatchError::TimestampRegressed { .. })
    ));
    assert!(matches!(
        h.ledger.expire_pending_transfers(TIMESTAMP_MAX + 1),
        Err(BatchError::TimestampOutOfRange { .. })
    ));
    h.assert_unchanged(&before);
    assert_eq!(h.ledger.digest(), digest);
    assert_eq!(h.ledger.commit_timestamp(), commit);
    // At the commit timestamp itself a pulse is allowed.
    assert_eq!(h.ledger.expire_pending_transfers(commit), Ok(0));
    assert_eq!(h.pulse(expires_at), 1);
}

#[test]
fn expiry_by_a_create_accounts_batch() {
    let (mut h, expires_at) = setup_expiring();
    h.set_clock(expires_at);
    h.ok_accounts(&[account(5, 1)]);
    assert_eq!(h.state(10), Some(PendingState::Expired));
    assert_eq!(h.balances(1), (0, 0, 0, 0));
}

#[test]
fn several_transfers_expire_in_one_pulse() {
    let mut h = setup();
    h.ok_transfers(&[
        pending_timeout(10, 1, 2, 1, 3),
        pending_timeout(11, 1, 2, 2, 1),
        pending_timeout(12, 1, 2, 4, 2),
        pending(13, 1, 2, 8),
    ]);
    let created = h.xfer(13).unwrap().timestamp;
    assert_eq!(h.pulse(created + NS), 1);
    assert_eq!(h.balances(1), (13, 0, 0, 0));
    assert_eq!(h.pulse(created + 3 * NS), 2);
    assert_eq!(h.balances(1), (8, 0, 0, 0));
    assert_eq!(h.state(11), Some(PendingState::Expired));
    assert_eq!(h.state(12), Some(PendingState::Expired));
    assert_eq!(h.state(10), Some(PendingState::Expired));
    assert_eq!(h.state(13), Some(PendingState::Pending));
    assert_eq!(h.pulse(TIMESTAMP_MAX), 0, "no timeout: never expires");
}

#[test]
fn expiry_adds_no_history() {
    let mut h = Harness::with_accounts(&[account_flags(1, AccountFlags::HISTORY), account(2, 1)]);
    h.ok_transfers(&[pending_timeout(10, 1, 2, 10, 1)]);
    let expires_at = h.xfer(10).unwrap().timestamp + NS;
    assert_eq!(h.history(1).len(), 1);
    assert_eq!(h.pulse(expires_at), 1);
    assert_eq!(h.history(1).len(), 1);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
}

#[test]
fn timeout_is_in_seconds() {
    let mut h = setup();
    h.ok_transfers(&[pending_timeout(10, 1, 2, 10, 60)]);
    let created = h.xfer(10).unwrap().timestamp;
    assert_eq!(h.pulse(created + 59 * NS), 0);
    assert_eq!(h.pulse(created + 60 * NS - 1), 0);
    assert_eq!(h.pulse(created + 60 * NS), 1);
}

// ---------------------------------------------------------------------------------------
// Closing accounts.
// ---------------------------------------------------------------------------------------

#[test]
fn closing_debit_closes_the_debit_account() {
    let mut h = setup();
    h.expect_transfer(closing(10, 1, 2, 0, TransferFlags::CLOSING_DEBIT), TR::Ok);
    assert!(h.is_closed(1));
    assert!(!h.is_closed(2));
    h.expect_transfer(transfer(11, 1, 4, 1), TR::DebitAccountAlreadyClosed);
    h.expect_transfer(transfer(12, 4, 1, 1), TR::CreditAccountAlreadyClosed);
    h.expect_transfer(pending(13, 1, 4, 0), TR::DebitAccountAlreadyClosed);
    // Closing an already closed account fails too.
    h.expect_transfer(
        closing(14, 1, 2, 0, TransferFlags::CLOSING_DEBIT),
        TR::DebitAccountAlreadyClosed,
    );
    // The other account is unaffected.
    h.expect_transfer(transfer(15, 4, 2, 1), TR::Ok);
}

#[test]
fn closing_credit_closes_the_credit_account() {
    let mut h = setup();
    h.expect_transfer(closing(10, 1, 2, 0, TransferFlags::CLOSING_CREDIT), TR::Ok);
    assert!(!h.is_closed(1));
    assert!(h.is_closed(2));
    h.expect_transfer(transfer(11, 4, 2, 1), TR::CreditAccountAlreadyClosed);
    h.expect_transfer(transfer(12, 2, 4, 1), TR::DebitAccountAlreadyClosed);
    h.expect_transfer(transfer(13, 1, 4, 1), TR::Ok);
}

#[test]
fn closing_both_accounts() {
    let mut h = setup();
    h.expect_transfer(
        closing(10, 1, 2, 5, TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT),
        TR::Ok,
    );
    assert!(h.is_closed(1) && h.is_closed(2));
    assert_eq!(h.balances(1), (5, 0, 0, 0));
}

#[test]
fn voiding_a_closing_transfer_reopens() {
    let mut h = setup();
    h.ok_transfers(&[closing(
        10,
        1,
        2,
        5,
        TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT,
    )]);
    h.expect_transfer(void(11, 10), TR::Ok);
    assert!(!h.is_closed(1) && !h.is_closed(2));
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    h.expect_transfer(transfer(12, 1, 2, 1), TR::Ok);
}

#[test]
fn posting_a_closing_transfer_keeps_the_account_closed() {
    let mut h = setup();
    h.ok_transfers(&[closing(10, 1, 2, 5, TransferFlags::CLOSING_DEBIT)]);
    h.expect_transfer(post(11, 10, AMOUNT_MAX), TR::Ok);
    assert!(h.is_closed(1));
    assert_eq!(h.balances(1), (0, 5, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 5));
    h.expect_transfer(void(12, 10), TR::PendingTransferAlreadyPosted);
    assert!(h.is_closed(1));
    h.expect_transfer(transfer(13, 1, 2, 1), TR::DebitAccountAlreadyClosed);
}

#[test]
fn expiry_of_a_closing_transfer_reopens() {
    let mut h = setup();
    h.ok_transfers(&[Transfer {
        timeout: 1,
        ..closing(10, 1, 2, 0, TransferFlags::CLOSING_DEBIT)
    }]);
    let expires_at = h.xfer(10).unwrap().timestamp + NS;
    assert!(h.is_closed(1));
    h.set_clock(expires_at);
    // Expiry runs before the events, so the first event already sees the account open.
    h.expect_transfer(transfer(11, 1, 2, 1), TR::Ok);
    assert!(!h.is_closed(1));
    assert_eq!(h.state(10), Some(PendingState::Expired));
}

#[test]
fn expiry_pulse_of_a_closing_transfer_reopens() {
    let mut h = setup();
    h.ok_transfers(&[Transfer {
        timeout: 2,
        ..closing(10, 1, 2, 3, TransferFlags::CLOSING_CREDIT)
    }]);
    let expires_at = h.xfer(10).unwrap().timestamp + 2 * NS;
    assert!(h.is_closed(2));
    assert_eq!(h.pulse(expires_at), 1);
    assert!(!h.is_closed(2));
    assert_eq!(h.balances(2), (0, 0, 0, 0));
}

#[test]
fn post_of_another_pending_fails_on_a_closed_account_but_void_works() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 5), closing(11, 1, 4, 0, TransferFlags::CLOSING_DEBIT)]);
    let t = post(12, 10, AMOUNT_MAX);
    h.expect_transfer(t, TR::DebitAccountAlreadyClosed);
    h.assert_id_failed(t);
    assert_eq!(h.state(10), Some(PendingState::Pending));
    h.expect_transfer(void(13, 10), TR::Ok);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert!(h.is_closed(1), "voiding a non-closing transfer does not reopen");
}

#[test]
fn post_of_another_pending_fails_on_a_closed_credit_account() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 5), closing(11, 4, 2, 0, TransferFlags::CLOSING_CREDIT)]);
    let t = post(12, 10, 5);
    h.expect_transfer(t, TR::CreditAccountAlreadyClosed);
    h.assert_id_failed(t);
    h.expect_transfer(void(13, 10), TR::Ok);
}

#[test]
fn expiry_of_a_pending_on_a_closed_account_releases() {
    let mut h = setup();
    h.ok_transfers(&[
        pending_timeout(10, 1, 2, 5, 1),
        closing(11, 1, 4, 0, TransferFlags::CLOSING_DEBIT),
    ]);
    let expires_at = h.xfer(10).unwrap().timestamp + NS;
    assert_eq!(h.pulse(expires_at), 1);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert!(h.is_closed(1));
}

#[test]
fn closed_account_resubmitted_is_exists() {
    let mut h = setup();
    h.ok_transfers(&[closing(10, 1, 2, 0, TransferFlags::CLOSING_DEBIT)]);
    h.expect_account(account(1, 1), AR::Exists);
    h.expect_account(account_flags(1, AccountFlags::CLOSED), AR::Exists);
    assert!(h.is_closed(1));
}

// ---------------------------------------------------------------------------------------
// Imported post and void.
// ---------------------------------------------------------------------------------------

#[test]
fn imported_post_and_void() {
    let mut h = Harness::new();
    let r = h.accounts_at(1_000, &[imported_account(1, 100), imported_account(2, 200)]);
    assert_eq!(r, vec![AR::Ok, AR::Ok]);
    let p = |id, ts| Transfer {
        timestamp: ts,
        flags: TransferFlags::PENDING | TransferFlags::IMPORTED,
        ..pending(id, 1, 2, 10)
    };
    let imported =
        |t: Transfer, ts| Transfer { timestamp: ts, flags: t.flags | TransferFlags::IMPORTED, ..t };
    h.expect_transfer(p(10, 300), TR::Ok);
    h.expect_transfer(p(11, 310), TR::Ok);
    // Must not regress: at or below the pending's timestamp.
    h.expect_transfer(imported(post(12, 10, 5), 300), TR::ImportedEventTimestampMustNotRegress);
    h.expect_transfer(imported(post(12, 10, 5), 250), TR::ImportedEventTimestampMustNotRegress);
    h.expect_transfer(imported(post(12, 10, 5), 200), TR::ImportedEventTimestampMustNotRegress);
    h.expect_transfer(imported(post(12, 10, 5), 400), TR::Ok);
    assert_eq!(h.xfer(12).unwrap().timestamp, 400);
    h.expect_transfer(imported(void(13, 11), 401), TR::Ok);
    assert_eq!(h.balances(1), (0, 5, 0, 0));
    // A non-imported post in an imported batch.
    let t = h.next_timestamp(2);
    let r = h.transfers_at(t, &[p(14, 500), post(15, 14, 1)]);
    assert_eq!(r, vec![TR::Ok, TR::ImportedEventExpected]);
}

#[test]
fn balancing_pending_releases_its_stored_amount() {
    let mut h = setup();
    h.ok_transfers(&[transfer(9, 2, 1, 10)]);
    let flags = TransferFlags::PENDING | TransferFlags::BALANCING_DEBIT;
    let p = |id, timeout| Transfer { timeout, ..transfer_flags(id, 1, 2, 100, flags) };
    // Void releases the clamped amount, not the requested one.
    h.ok_transfers(&[p(10, 0)]);
    assert_eq!(h.xfer(10).unwrap().amount, 10);
    assert_eq!(h.balances(1), (10, 0, 0, 10));
    h.expect_transfer(void(11, 10), TR::Ok);
    assert_eq!(h.balances(1), (0, 0, 0, 10));
    assert_eq!(h.xfer(11).unwrap().amount, 10);
    // So does expiry.
    h.ok_transfers(&[p(12, 1)]);
    assert_eq!(h.balances(1), (10, 0, 0, 10));
    let expires_at = h.xfer(12).unwrap().timestamp + NS;
    assert_eq!(h.pulse(expires_at), 1);
    assert_eq!(h.balances(1), (0, 0, 0, 10));
    assert_eq!(h.balances(2), (0, 10, 0, 0));
}
