//! One test per `CreateTransferResult` of single-phase and pending transfers (named after
//! the code; the post/void codes are in `two_phase.rs`), precedence between codes,
//! balancing transfers and failed ids. See SEMANTICS.md, "create_transfers".

mod common;
use common::*;

/// Accounts 1, 2 and 4 on ledger 1; account 3 on ledger 2.
fn setup() -> Harness {
    Harness::with_accounts(&[account(1, 1), account(2, 1), account(3, 2), account(4, 1)])
}

/// `setup()` plus account 5 (`debits_must_not_exceed_credits`) and account 6
/// (`credits_must_not_exceed_debits`), both on ledger 1.
fn setup_limits() -> Harness {
    let mut h = setup();
    h.ok_accounts(&[
        account_flags(5, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        account_flags(6, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ]);
    h
}

/// `setup()` plus accounts 7 and 8 on ledger 1, created closed.
fn setup_closed() -> Harness {
    let mut h = setup();
    h.ok_accounts(&[
        account_flags(7, AccountFlags::CLOSED),
        account_flags(8, AccountFlags::CLOSED),
    ]);
    h
}

/// A fresh ledger with imported accounts 1 (timestamp 100), 2 (200) and 3 (300), all on
/// ledger 1. Later batches run at the harness clock (far above these timestamps).
fn setup_imported() -> Harness {
    let mut h = Harness::new();
    let r = h.accounts_at(
        1_000,
        &[imported_account(1, 100), imported_account(2, 200), imported_account(3, 300)],
    );
    assert_eq!(r, vec![AR::Ok; 3]);
    h
}

fn with_flags(t: Transfer, flags: TransferFlags) -> Transfer {
    Transfer { flags: t.flags | flags, ..t }
}

const HALF: u128 = 1 << 127;

// ---------------------------------------------------------------------------------------
// One test per result code.
// ---------------------------------------------------------------------------------------

#[test]
fn ok() {
    let mut h = setup();
    let t = Transfer {
        user_data_128: 1,
        user_data_64: 2,
        user_data_32: 3,
        code: 5,
        ..transfer(10, 1, 2, 100)
    };
    h.expect_transfer(t, TR::Ok);
    assert_eq!(h.xfer(10), Some(Transfer { timestamp: h.last_batch, ..t }));
    assert_eq!(h.balances(1), (0, 100, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 100));
    assert_eq!(h.state(10), None, "a single-phase transfer has no pending state");
    // A zero amount is valid and changes no balance.
    h.expect_transfer(transfer(11, 1, 2, 0), TR::Ok);
    assert_eq!(h.xfer(11).unwrap().amount, 0);
    assert_eq!(h.balances(1), (0, 100, 0, 0));
    h.assert_balanced(&[1, 2, 4]);
}

#[test]
fn linked_event_failed() {
    let mut h = setup();
    let first = linked(transfer(10, 1, 2, 5));
    let before = h.snapshot();
    let results = h.transfers(&[first, transfer(11, 1, 1, 5)]);
    assert_eq!(results, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    h.assert_unchanged(&before);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    // Fixed.
    assert_eq!(h.transfers(&[first, transfer(11, 1, 4, 5)]), vec![TR::Ok, TR::Ok]);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
}

#[test]
fn linked_event_chain_open() {
    let mut h = setup();
    h.expect_transfer(linked(transfer(10, 1, 2, 5)), TR::LinkedEventChainOpen);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn imported_event_expected() {
    let mut h = setup();
    let t = h.next_timestamp(2);
    let results =
        h.transfers_at(t, &[imported_transfer(10, 1, 2, 5, t - 10), transfer(11, 1, 2, 5)]);
    assert_eq!(results, vec![TR::Ok, TR::ImportedEventExpected]);
    assert!(h.xfer(11).is_none());
    assert_eq!(h.xfer(10).unwrap().timestamp, t - 10);
    assert_eq!(h.balances(1), (0, 5, 0, 0));
    // Fixed.
    let t = h.next_timestamp(1);
    assert_eq!(h.transfers_at(t, &[imported_transfer(11, 1, 2, 5, t - 1)]), vec![TR::Ok]);
}

#[test]
fn imported_event_not_expected() {
    let mut h = setup();
    let t = h.next_timestamp(2);
    let results =
        h.transfers_at(t, &[transfer(10, 1, 2, 5), imported_transfer(11, 1, 2, 5, t - 10)]);
    assert_eq!(results, vec![TR::Ok, TR::ImportedEventNotExpected]);
    assert!(h.xfer(11).is_none());
    assert_eq!(h.balances(1), (0, 5, 0, 0));
    h.expect_transfer(transfer(11, 1, 2, 5), TR::Ok);
}

#[test]
fn timestamp_must_be_zero() {
    let mut h = setup();
    h.expect_transfer(Transfer { timestamp: 1, ..transfer(10, 1, 2, 5) }, TR::TimestampMustBeZero);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
    assert_eq!(h.xfer(10).unwrap().timestamp, h.last_batch);
}

#[test]
fn imported_event_timestamp_out_of_range() {
    let mut h = setup();
    h.expect_transfer(imported_transfer(10, 1, 2, 5, 0), TR::ImportedEventTimestampOutOfRange);
    h.expect_transfer(
        imported_transfer(10, 1, 2, 5, TIMESTAMP_MAX + 1),
        TR::ImportedEventTimestampOutOfRange,
    );
    let t = h.next_timestamp(1);
    assert_eq!(h.transfers_at(t, &[imported_transfer(10, 1, 2, 5, t - 1)]), vec![TR::Ok]);
}

#[test]
fn imported_event_timestamp_must_not_advance() {
    let mut h = setup();
    let t = h.next_timestamp(1);
    let r = h.transfers_at(t, &[imported_transfer(10, 1, 2, 5, t)]);
    assert_eq!(r, vec![TR::ImportedEventTimestampMustNotAdvance]);
    let t = h.next_timestamp(1);
    let r = h.transfers_at(t, &[imported_transfer(10, 1, 2, 5, t + 1)]);
    assert_eq!(r, vec![TR::ImportedEventTimestampMustNotAdvance]);
    assert!(h.xfer(10).is_none());
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    let t = h.next_timestamp(1);
    assert_eq!(h.transfers_at(t, &[imported_transfer(10, 1, 2, 5, t - 1)]), vec![TR::Ok]);
    assert_eq!(h.xfer(10).unwrap().timestamp, t - 1);
}

#[test]
fn reserved_flag() {
    let mut h = setup();
    for bit in 9..16 {
        let t = transfer_flags(10, 1, 2, 5, TransferFlags::from_bits_retain(1 << bit));
        h.expect_transfer(t, TR::ReservedFlag);
    }
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn id_must_not_be_zero() {
    let mut h = setup();
    h.expect_transfer(transfer(0, 1, 2, 5), TR::IdMustNotBeZero);
    h.expect_transfer(transfer(1, 1, 2, 5), TR::Ok);
}

#[test]
fn id_must_not_be_int_max() {
    let mut h = setup();
    h.expect_transfer(transfer(u128::MAX, 1, 2, 5), TR::IdMustNotBeIntMax);
    h.expect_transfer(transfer(u128::MAX - 1, 1, 2, 5), TR::Ok);
}

fn existing() -> (Harness, Transfer) {
    let mut h = setup();
    let t = Transfer {
        user_data_128: 128,
        user_data_64: 64,
        user_data_32: 32,
        ..transfer(10, 1, 2, 100)
    };
    h.ok_transfers(&[t]);
    (h, t)
}

#[test]
fn exists_with_different_flags() {
    let (mut h, t) = existing();
    h.expect_transfer(with_flags(t, TransferFlags::PENDING), TR::ExistsWithDifferentFlags);
    h.expect_transfer(with_flags(t, TransferFlags::BALANCING_DEBIT), TR::ExistsWithDifferentFlags);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_pending_id() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { pending_id: 7, ..t }, TR::ExistsWithDifferentPendingId);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_timeout() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { timeout: 1, ..t }, TR::ExistsWithDifferentTimeout);
    // And for a pending transfer with a timeout.
    let p = pending_timeout(11, 1, 2, 5, 60);
    h.ok_transfers(&[p]);
    h.expect_transfer(Transfer { timeout: 61, ..p }, TR::ExistsWithDifferentTimeout);
    h.expect_transfer(Transfer { timeout: 0, ..p }, TR::ExistsWithDifferentTimeout);
    h.expect_transfer(p, TR::Exists);
}

#[test]
fn exists_with_different_debit_account_id() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { debit_account_id: 4, ..t }, TR::ExistsWithDifferentDebitAccountId);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_credit_account_id() {
    let (mut h, t) = existing();
    h.expect_transfer(
        Transfer { credit_account_id: 4, ..t },
        TR::ExistsWithDifferentCreditAccountId,
    );
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_amount() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { amount: 99, ..t }, TR::ExistsWithDifferentAmount);
    h.expect_transfer(Transfer { amount: 101, ..t }, TR::ExistsWithDifferentAmount);
    h.expect_transfer(Transfer { amount: AMOUNT_MAX, ..t }, TR::ExistsWithDifferentAmount);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_user_data_128() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { user_data_128: 0, ..t }, TR::ExistsWithDifferentUserData128);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_user_data_64() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { user_data_64: 0, ..t }, TR::ExistsWithDifferentUserData64);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_user_data_32() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { user_data_32: 31, ..t }, TR::ExistsWithDifferentUserData32);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_ledger() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { ledger: 2, ..t }, TR::ExistsWithDifferentLedger);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists_with_different_code() {
    let (mut h, t) = existing();
    h.expect_transfer(Transfer { code: 2, ..t }, TR::ExistsWithDifferentCode);
    h.expect_transfer(t, TR::Exists);
}

#[test]
fn exists() {
    let (mut h, t) = existing();
    let stored = h.xfer(10).unwrap();
    h.expect_transfer(t, TR::Exists);
    assert_eq!(h.xfer(10), Some(stored));
    assert_eq!(h.balances(1), (0, 100, 0, 0), "applied once");
    // Within one batch.
    let u = transfer(11, 1, 2, 1);
    assert_eq!(h.transfers(&[u, u]), vec![TR::Ok, TR::Exists]);
    assert_eq!(h.balances(1), (0, 101, 0, 0));
}

#[test]
fn id_already_failed() {
    let mut h = setup();
    let t = transfer(10, 1, 99, 5);
    h.expect_transfer(t, TR::CreditAccountNotFound);
    h.ok_accounts(&[account(99, 1)]);
    // The same request would succeed now, but the id is burnt.
    h.expect_transfer(t, TR::IdAlreadyFailed);
    // Even with different contents.
    h.expect_transfer(transfer(10, 1, 2, 1), TR::IdAlreadyFailed);
    h.expect_transfer(transfer(10, 0, 0, 0), TR::IdAlreadyFailed);
    // A new id succeeds.
    h.expect_transfer(transfer(11, 1, 99, 5), TR::Ok);
}

#[test]
fn flags_are_mutually_exclusive() {
    let mut h = setup();
    let f = |a: TransferFlags, b: TransferFlags| transfer_flags(10, 1, 2, 5, a | b);
    use TransferFlags as F;
    for flags in [
        F::PENDING | F::POST_PENDING_TRANSFER,
        F::PENDING | F::VOID_PENDING_TRANSFER,
        F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER,
        F::POST_PENDING_TRANSFER | F::BALANCING_DEBIT,
        F::POST_PENDING_TRANSFER | F::BALANCING_CREDIT,
        F::VOID_PENDING_TRANSFER | F::BALANCING_DEBIT,
        F::POST_PENDING_TRANSFER | F::CLOSING_DEBIT,
        F::VOID_PENDING_TRANSFER | F::CLOSING_CREDIT,
    ] {
        let t = Transfer { pending_id: 9, ..f(flags, F::empty()) };
        h.expect_transfer(t, TR::FlagsAreMutuallyExclusive);
    }
    // Pending combines with balancing and closing.
    h.expect_transfer(f(F::PENDING, F::BALANCING_DEBIT | F::BALANCING_CREDIT), TR::Ok);
    h.expect_transfer(
        Transfer { id: 11, ..f(F::PENDING, F::CLOSING_DEBIT | F::CLOSING_CREDIT) },
        TR::Ok,
    );
}

#[test]
fn debit_account_id_must_not_be_zero() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 0, 2, 5), TR::DebitAccountIdMustNotBeZero);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn debit_account_id_must_not_be_int_max() {
    let mut h = setup();
    h.expect_transfer(transfer(10, u128::MAX, 2, 5), TR::DebitAccountIdMustNotBeIntMax);
    // Also for post/void (where 0 would mean "as pending").
    h.expect_transfer(
        Transfer { debit_account_id: u128::MAX, ..post(11, 99, 5) },
        TR::DebitAccountIdMustNotBeIntMax,
    );
    h.expect_transfer(
        Transfer { debit_account_id: u128::MAX, ..void(11, 99) },
        TR::DebitAccountIdMustNotBeIntMax,
    );
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn credit_account_id_must_not_be_zero() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 1, 0, 5), TR::CreditAccountIdMustNotBeZero);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn credit_account_id_must_not_be_int_max() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 1, u128::MAX, 5), TR::CreditAccountIdMustNotBeIntMax);
    h.expect_transfer(
        Transfer { credit_account_id: u128::MAX, ..post(11, 99, 5) },
        TR::CreditAccountIdMustNotBeIntMax,
    );
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn accounts_must_be_different() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 1, 1, 5), TR::AccountsMustBeDifferent);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn pending_id_must_be_zero() {
    let mut h = setup();
    h.expect_transfer(Transfer { pending_id: 5, ..transfer(10, 1, 2, 5) }, TR::PendingIdMustBeZero);
    h.expect_transfer(
        Transfer { pending_id: u128::MAX, ..transfer(10, 1, 2, 5) },
        TR::PendingIdMustBeZero,
    );
    h.expect_transfer(Transfer { pending_id: 5, ..pending(10, 1, 2, 5) }, TR::PendingIdMustBeZero);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn pending_id_must_not_be_zero() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 5)]);
    h.expect_transfer(post(11, 0, 5), TR::PendingIdMustNotBeZero);
    h.expect_transfer(void(11, 0), TR::PendingIdMustNotBeZero);
    h.expect_transfer(post(11, 10, 5), TR::Ok);
}

#[test]
fn pending_id_must_not_be_int_max() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 5)]);
    h.expect_transfer(post(11, u128::MAX, 5), TR::PendingIdMustNotBeIntMax);
    h.expect_transfer(void(11, u128::MAX), TR::PendingIdMustNotBeIntMax);
    h.expect_transfer(void(11, 10), TR::Ok);
}

#[test]
fn pending_id_must_be_different() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 5)]);
    h.expect_transfer(post(11, 11, 5), TR::PendingIdMustBeDifferent);
    h.expect_transfer(void(12, 12), TR::PendingIdMustBeDifferent);
    h.expect_transfer(post(11, 10, 5), TR::Ok);
}

#[test]
fn timeout_reserved_for_pending_transfer() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 5)]);
    h.expect_transfer(
        Transfer { timeout: 1, ..transfer(11, 1, 2, 5) },
        TR::TimeoutReservedForPendingTransfer,
    );
    h.expect_transfer(
        Transfer { timeout: 1, ..post(11, 10, 5) },
        TR::TimeoutReservedForPendingTransfer,
    );
    h.expect_transfer(
        Transfer { timeout: 1, ..void(11, 10) },
        TR::TimeoutReservedForPendingTransfer,
    );
    h.expect_transfer(pending_timeout(11, 1, 2, 5, 1), TR::Ok);
    assert_eq!(h.xfer(11).unwrap().timeout, 1);
}

#[test]
fn closing_transfer_must_be_pending() {
    let mut h = setup();
    h.expect_transfer(
        transfer_flags(10, 1, 2, 0, TransferFlags::CLOSING_DEBIT),
        TR::ClosingTransferMustBePending,
    );
    h.expect_transfer(
        transfer_flags(10, 1, 2, 0, TransferFlags::CLOSING_CREDIT),
        TR::ClosingTransferMustBePending,
    );
    assert!(!h.is_closed(1) && !h.is_closed(2));
    let t = transfer_flags(10, 1, 2, 0, TransferFlags::CLOSING_DEBIT | TransferFlags::PENDING);
    h.expect_transfer(t, TR::Ok);
    assert!(h.is_closed(1));
}

#[test]
fn ledger_must_not_be_zero() {
    let mut h = setup();
    h.expect_transfer(Transfer { ledger: 0, ..transfer(10, 1, 2, 5) }, TR::LedgerMustNotBeZero);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn code_must_not_be_zero() {
    let mut h = setup();
    h.expect_transfer(Transfer { code: 0, ..transfer(10, 1, 2, 5) }, TR::CodeMustNotBeZero);
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn debit_account_not_found() {
    let mut h = setup();
    let t = transfer(10, 99, 2, 5);
    h.expect_transfer(t, TR::DebitAccountNotFound);
    h.assert_id_failed(t);
    h.ok_accounts(&[account(99, 1)]);
    h.expect_transfer(transfer(11, 99, 2, 5), TR::Ok);
}

#[test]
fn credit_account_not_found() {
    let mut h = setup();
    let t = transfer(10, 1, 99, 5);
    h.expect_transfer(t, TR::CreditAccountNotFound);
    h.assert_id_failed(t);
    h.ok_accounts(&[account(99, 1)]);
    h.expect_transfer(transfer(11, 1, 99, 5), TR::Ok);
}

#[test]
fn accounts_must_have_the_same_ledger() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 1, 3, 5), TR::AccountsMustHaveTheSameLedger);
    h.expect_transfer(
        Transfer { ledger: 2, ..transfer(10, 1, 3, 5) },
        TR::AccountsMustHaveTheSameLedger,
    );
    // Not transient: the id may be reused.
    h.expect_transfer(transfer(10, 1, 4, 5), TR::Ok);
}

#[test]
fn transfer_must_have_the_same_ledger_as_accounts() {
    let mut h = setup();
    h.expect_transfer(
        Transfer { ledger: 2, ..transfer(10, 1, 2, 5) },
        TR::TransferMustHaveTheSameLedgerAsAccounts,
    );
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn imported_event_timestamp_must_not_regress() {
    let mut h = setup_imported();
    // Equal to an account's timestamp (no transfers yet).
    h.expect_transfer(
        imported_transfer(10, 1, 2, 5, 300),
        TR::ImportedEventTimestampMustNotRegress,
    );
    h.expect_transfer(imported_transfer(10, 1, 2, 5, 500), TR::Ok);
    // Equal to or below the newest transfer's timestamp.
    h.expect_transfer(
        imported_transfer(11, 1, 2, 5, 500),
        TR::ImportedEventTimestampMustNotRegress,
    );
    h.expect_transfer(
        imported_transfer(11, 1, 2, 5, 499),
        TR::ImportedEventTimestampMustNotRegress,
    );
    // Not transient.
    h.expect_transfer(imported_transfer(11, 1, 2, 5, 501), TR::Ok);
    assert_eq!(h.xfer(11).unwrap().timestamp, 501);
    // Within one batch.
    let t = h.next_timestamp(2);
    let r = h.transfers_at(
        t,
        &[imported_transfer(12, 1, 2, 5, 600), imported_transfer(13, 1, 2, 5, 600)],
    );
    assert_eq!(r, vec![TR::Ok, TR::ImportedEventTimestampMustNotRegress]);
}

#[test]
fn imported_event_timestamp_must_postdate_debit_account() {
    let mut h = setup_imported();
    h.expect_transfer(
        imported_transfer(10, 2, 1, 5, 150),
        TR::ImportedEventTimestampMustPostdateDebitAccount,
    );
    h.expect_transfer(imported_transfer(10, 2, 1, 5, 201), TR::Ok);
}

#[test]
fn imported_event_timestamp_must_postdate_credit_account() {
    let mut h = setup_imported();
    h.expect_transfer(
        imported_transfer(10, 1, 2, 5, 150),
        TR::ImportedEventTimestampMustPostdateCreditAccount,
    );
    h.expect_transfer(imported_transfer(10, 1, 2, 5, 250), TR::Ok);
}

#[test]
fn imported_event_timeout_must_be_zero() {
    let mut h = setup_imported();
    let p = Transfer {
        timeout: 1,
        ..with_flags(imported_transfer(10, 1, 2, 5, 400), TransferFlags::PENDING)
    };
    h.expect_transfer(p, TR::ImportedEventTimeoutMustBeZero);
    h.expect_transfer(Transfer { timeout: 0, ..p }, TR::Ok);
    assert_eq!(h.state(10), Some(PendingState::Pending));
}

#[test]
fn debit_account_already_closed() {
    let mut h = setup_closed();
    let t = transfer(10, 7, 1, 5);
    h.expect_transfer(t, TR::DebitAccountAlreadyClosed);
    h.assert_id_failed(t);
    h.expect_transfer(pending(11, 7, 1, 0), TR::DebitAccountAlreadyClosed);
    h.expect_transfer(transfer(12, 4, 1, 5), TR::Ok);
}

#[test]
fn credit_account_already_closed() {
    let mut h = setup_closed();
    let t = transfer(10, 1, 7, 5);
    h.expect_transfer(t, TR::CreditAccountAlreadyClosed);
    h.assert_id_failed(t);
    h.expect_transfer(pending(11, 1, 7, 0), TR::CreditAccountAlreadyClosed);
    h.expect_transfer(transfer(12, 1, 4, 5), TR::Ok);
}

#[test]
fn overflows_debits_pending() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, AMOUNT_MAX)]);
    let t = pending(11, 1, 4, 1);
    h.expect_transfer(t, TR::OverflowsDebitsPending);
    h.assert_id_failed(t);
    h.expect_transfer(pending(12, 1, 4, 0), TR::Ok);
    assert_eq!(h.balances(1), (u128::MAX, 0, 0, 0));
}

#[test]
fn overflows_credits_pending() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, AMOUNT_MAX)]);
    let t = pending(11, 4, 2, 1);
    h.expect_transfer(t, TR::OverflowsCreditsPending);
    h.assert_id_failed(t);
    h.expect_transfer(pending(12, 4, 2, 0), TR::Ok);
}

#[test]
fn overflows_debits_posted() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 1, 2, AMOUNT_MAX)]);
    let t = transfer(11, 1, 4, 1);
    h.expect_transfer(t, TR::OverflowsDebitsPosted);
    h.assert_id_failed(t);
    h.expect_transfer(transfer(12, 1, 4, 0), TR::Ok);
    assert_eq!(h.balances(1), (0, u128::MAX, 0, 0));
}

#[test]
fn overflows_credits_posted() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 1, 2, AMOUNT_MAX)]);
    let t = transfer(11, 4, 2, 1);
    h.expect_transfer(t, TR::OverflowsCreditsPosted);
    h.assert_id_failed(t);
    h.expect_transfer(transfer(12, 4, 2, 0), TR::Ok);
}

#[test]
fn overflows_debits() {
    let mut h = setup();
    // debits_pending = 2^127, then debits_posted = 2^127 - 1: the sum is u128::MAX.
    h.ok_transfers(&[pending(10, 1, 2, HALF), transfer(11, 1, 2, HALF - 1)]);
    let t = transfer(12, 1, 4, 1);
    h.expect_transfer(t, TR::OverflowsDebits);
    h.assert_id_failed(t);
    h.expect_transfer(pending(13, 1, 4, 1), TR::OverflowsDebits);
    h.expect_transfer(transfer(14, 1, 4, 0), TR::Ok);
    assert_eq!(h.balances(1), (HALF, HALF - 1, 0, 0));
}

#[test]
fn overflows_credits() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, HALF), transfer(11, 1, 2, HALF - 1)]);
    let t = transfer(12, 4, 2, 1);
    h.expect_transfer(t, TR::OverflowsCredits);
    h.assert_id_failed(t);
    h.expect_transfer(transfer(13, 4, 2, 0), TR::Ok);
    assert_eq!(h.balances(2), (0, 0, HALF, HALF - 1));
}

#[test]
fn overflows_timeout() {
    let mut h = setup();
    // Event 0 gets TIMESTAMP_MAX - 1s: it expires exactly at TIMESTAMP_MAX, which is
    // allowed. Event 1 is one nanosecond later and would expire past it.
    let t = TIMESTAMP_MAX - NS + 1;
    let results =
        h.transfers_at(t, &[pending_timeout(10, 1, 2, 1, 1), pending_timeout(11, 1, 2, 1, 1)]);
    assert_eq!(results, vec![TR::Ok, TR::OverflowsTimeout]);
    assert!(h.xfer(11).is_none());
    assert_eq!(h.balances(1), (1, 0, 0, 0));
    h.assert_id_failed(pending_timeout(11, 1, 2, 1, 1));
    // Without a timeout it succeeds.
    h.expect_transfer(pending(12, 1, 2, 1), TR::Ok);
}

#[test]
fn overflows_timeout_with_largest_timeout() {
    let mut h = setup();
    h.set_clock(5_000_000_000 * NS);
    h.expect_transfer(pending_timeout(10, 1, 2, 1, u32::MAX), TR::OverflowsTimeout);
    h.expect_transfer(pending_timeout(11, 1, 2, 1, u32::MAX / 2), TR::Ok);
}

#[test]
fn exceeds_credits() {
    let mut h = setup_limits();
    h.ok_transfers(&[transfer(10, 2, 5, 10)]);
    let t = transfer(11, 5, 1, 11);
    h.expect_transfer(t, TR::ExceedsCredits);
    h.assert_id_failed(t);
    h.expect_transfer(transfer(12, 5, 1, 10), TR::Ok);
    h.expect_transfer(pending(13, 5, 1, 1), TR::ExceedsCredits);
    h.expect_transfer(transfer(14, 5, 1, 0), TR::Ok);
    assert_eq!(h.balances(5), (0, 10, 0, 10));
}

#[test]
fn exceeds_credits_counts_pending_debits() {
    let mut h = setup_limits();
    h.ok_transfers(&[transfer(10, 2, 5, 10), pending(11, 5, 1, 6)]);
    h.expect_transfer(transfer(12, 5, 1, 5), TR::ExceedsCredits);
    h.expect_transfer(transfer(13, 5, 1, 4), TR::Ok);
    assert_eq!(h.balances(5), (6, 4, 0, 10));
}

#[test]
fn exceeds_debits() {
    let mut h = setup_limits();
    h.ok_transfers(&[transfer(10, 6, 1, 10)]);
    let t = transfer(11, 2, 6, 11);
    h.expect_transfer(t, TR::ExceedsDebits);
    h.assert_id_failed(t);
    h.ok_transfers(&[pending(12, 2, 6, 4)]);
    h.expect_transfer(transfer(13, 2, 6, 7), TR::ExceedsDebits);
    h.expect_transfer(transfer(14, 2, 6, 6), TR::Ok);
    assert_eq!(h.balances(6), (0, 10, 4, 6));
}

// ---------------------------------------------------------------------------------------
// Precedence.
// ---------------------------------------------------------------------------------------

#[test]
fn precedence_chain_checks_and_imported_checks_first() {
    let mut h = setup();
    // Chain open beats an invalid event.
    h.expect_transfer(linked(transfer(0, 0, 0, 0)), TR::LinkedEventChainOpen);
    // linked_event_failed beats an invalid event.
    let r = h.transfers(&[linked(transfer(10, 1, 1, 5)), transfer(0, 0, 0, 0)]);
    assert_eq!(r, vec![TR::AccountsMustBeDifferent, TR::LinkedEventFailed]);
    // timestamp_must_be_zero beats reserved_flag and id_must_not_be_zero.
    let t = Transfer {
        timestamp: 1,
        ..transfer_flags(0, 1, 2, 5, TransferFlags::from_bits_retain(1 << 12))
    };
    h.expect_transfer(t, TR::TimestampMustBeZero);
}

#[test]
fn precedence_reserved_flag_beats_id_must_not_be_zero() {
    let mut h = setup();
    h.expect_transfer(
        transfer_flags(0, 1, 2, 5, TransferFlags::from_bits_retain(1 << 9)),
        TR::ReservedFlag,
    );
}

#[test]
fn precedence_reserved_flag_beats_exists() {
    let (mut h, t) = existing();
    h.expect_transfer(with_flags(t, TransferFlags::from_bits_retain(1 << 10)), TR::ReservedFlag);
}

#[test]
fn precedence_exists_with_different_flags_beats_flags_are_mutually_exclusive() {
    let (mut h, t) = existing();
    let flags = TransferFlags::PENDING | TransferFlags::POST_PENDING_TRANSFER;
    h.expect_transfer(Transfer { flags, ..t }, TR::ExistsWithDifferentFlags);
}

#[test]
fn precedence_exists_fields_in_order() {
    let (mut h, t) = existing();
    let mut u = Transfer {
        flags: TransferFlags::PENDING,
        pending_id: 1,
        timeout: 1,
        debit_account_id: 4,
        credit_account_id: 3,
        amount: 1,
        user_data_128: 1,
        user_data_64: 1,
        user_data_32: 1,
        ledger: 9,
        code: 9,
        ..t
    };
    h.expect_transfer(u, TR::ExistsWithDifferentFlags);
    u.flags = t.flags;
    h.expect_transfer(u, TR::ExistsWithDifferentPendingId);
    u.pending_id = t.pending_id;
    h.expect_transfer(u, TR::ExistsWithDifferentTimeout);
    u.timeout = t.timeout;
    h.expect_transfer(u, TR::ExistsWithDifferentDebitAccountId);
    u.debit_account_id = t.debit_account_id;
    h.expect_transfer(u, TR::ExistsWithDifferentCreditAccountId);
    u.credit_account_id = t.credit_account_id;
    h.expect_transfer(u, TR::ExistsWithDifferentAmount);
    u.amount = t.amount;
    h.expect_transfer(u, TR::ExistsWithDifferentUserData128);
    u.user_data_128 = t.user_data_128;
    h.expect_transfer(u, TR::ExistsWithDifferentUserData64);
    u.user_data_64 = t.user_data_64;
    h.expect_transfer(u, TR::ExistsWithDifferentUserData32);
    u.user_data_32 = t.user_data_32;
    h.expect_transfer(u, TR::ExistsWithDifferentLedger);
    u.ledger = t.ledger;
    h.expect_transfer(u, TR::ExistsWithDifferentCode);
    u.code = t.code;
    h.expect_transfer(u, TR::Exists);
}

#[test]
fn precedence_exists_beats_field_validation() {
    let (mut h, t) = existing();
    // Invalid values in compared fields are reported as differences.
    h.expect_transfer(
        Transfer { debit_account_id: u128::MAX, ..t },
        TR::ExistsWithDifferentDebitAccountId,
    );
    h.expect_transfer(
        Transfer { credit_account_id: 0, ..t },
        TR::ExistsWithDifferentCreditAccountId,
    );
    h.expect_transfer(
        Transfer { credit_account_id: 1, ..t },
        TR::ExistsWithDifferentCreditAccountId,
    );
    h.expect_transfer(Transfer { ledger: 0, ..t }, TR::ExistsWithDifferentLedger);
    h.expect_transfer(Transfer { code: 0, ..t }, TR::ExistsWithDifferentCode);
    h.expect_transfer(Transfer { timeout: 5, ..t }, TR::ExistsWithDifferentTimeout);
    // Missing accounts are not looked at.
    h.expect_transfer(
        Transfer { debit_account_id: 99, ..t },
        TR::ExistsWithDifferentDebitAccountId,
    );
}

#[test]
fn precedence_id_already_failed_beats_flags_are_mutually_exclusive() {
    let mut h = setup();
    let t = transfer(10, 99, 2, 5);
    h.expect_transfer(t, TR::DebitAccountNotFound);
    let flags = TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
    h.expect_transfer(Transfer { flags, ..transfer(10, 0, 0, 0) }, TR::IdAlreadyFailed);
}

#[test]
fn precedence_flags_are_mutually_exclusive_beats_account_ids() {
    let mut h = setup();
    let flags = TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
    let t = Transfer { flags, ..transfer(10, u128::MAX, u128::MAX, 5) };
    h.expect_transfer(t, TR::FlagsAreMutuallyExclusive);
}

#[test]
fn precedence_account_id_checks_in_order() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 0, 0, 5), TR::DebitAccountIdMustNotBeZero);
    h.expect_transfer(transfer(10, 0, u128::MAX, 5), TR::DebitAccountIdMustNotBeZero);
    h.expect_transfer(transfer(10, u128::MAX, 0, 5), TR::DebitAccountIdMustNotBeIntMax);
    h.expect_transfer(transfer(10, u128::MAX, u128::MAX, 5), TR::DebitAccountIdMustNotBeIntMax);
    h.expect_transfer(
        Transfer { pending_id: 3, ..transfer(10, 1, 0, 5) },
        TR::CreditAccountIdMustNotBeZero,
    );
    h.expect_transfer(
        Transfer { pending_id: 3, ..transfer(10, 1, 1, 5) },
        TR::AccountsMustBeDifferent,
    );
}

#[test]
fn precedence_pending_id_and_timeout_and_closing() {
    let mut h = setup();
    let t = Transfer { pending_id: 3, timeout: 1, ..transfer(10, 1, 2, 5) };
    h.expect_transfer(t, TR::PendingIdMustBeZero);
    // post: pending_id == 0 beats timeout.
    h.expect_transfer(Transfer { timeout: 1, ..post(10, 0, 5) }, TR::PendingIdMustNotBeZero);
    // timeout_reserved beats closing_transfer_must_be_pending and ledger_must_not_be_zero.
    let t = Transfer {
        timeout: 1,
        ledger: 0,
        ..transfer_flags(10, 1, 2, 5, TransferFlags::CLOSING_DEBIT)
    };
    h.expect_transfer(t, TR::TimeoutReservedForPendingTransfer);
    // closing_transfer_must_be_pending beats ledger_must_not_be_zero.
    let t = Transfer { ledger: 0, ..transfer_flags(10, 1, 2, 5, TransferFlags::CLOSING_CREDIT) };
    h.expect_transfer(t, TR::ClosingTransferMustBePending);
    // ledger beats code.
    h.expect_transfer(
        Transfer { ledger: 0, code: 0, ..transfer(10, 1, 2, 5) },
        TR::LedgerMustNotBeZero,
    );
    // code beats account lookups.
    h.expect_transfer(Transfer { code: 0, ..transfer(10, 98, 99, 5) }, TR::CodeMustNotBeZero);
}

#[test]
fn precedence_debit_account_not_found_beats_credit_account_not_found() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 98, 99, 5), TR::DebitAccountNotFound);
    h.expect_transfer(transfer(11, 98, 3, 5), TR::DebitAccountNotFound);
    h.expect_transfer(transfer(12, 3, 99, 5), TR::CreditAccountNotFound);
}

#[test]
fn precedence_ledger_checks() {
    let mut h = setup_closed();
    // Different account ledgers beat a different transfer ledger.
    h.expect_transfer(
        Transfer { ledger: 5, ..transfer(10, 1, 3, 5) },
        TR::AccountsMustHaveTheSameLedger,
    );
    // Ledger checks beat closed accounts.
    h.expect_transfer(transfer(10, 7, 3, 5), TR::AccountsMustHaveTheSameLedger);
    h.expect_transfer(
        Transfer { ledger: 2, ..transfer(10, 7, 8, 5) },
        TR::TransferMustHaveTheSameLedgerAsAccounts,
    );
}

#[test]
fn precedence_imported_checks() {
    let mut h = setup_imported();
    // Equal to an account's timestamp beats postdate (both about account 2).
    h.expect_transfer(
        imported_transfer(10, 2, 1, 5, 200),
        TR::ImportedEventTimestampMustNotRegress,
    );
    h.expect_transfer(
        imported_transfer(10, 1, 2, 5, 200),
        TR::ImportedEventTimestampMustNotRegress,
    );
    h.expect_transfer(imported_transfer(10, 1, 2, 5, 500), TR::Ok);
    // Regress beats postdate (both apply at 150).
    h.expect_transfer(
        imported_transfer(11, 1, 2, 5, 150),
        TR::ImportedEventTimestampMustNotRegress,
    );
    let mut h = setup_imported();
    // Postdate debit beats postdate credit.
    h.expect_transfer(
        imported_transfer(11, 1, 2, 5, 50),
        TR::ImportedEventTimestampMustPostdateDebitAccount,
    );
    // Postdate beats timeout_must_be_zero.
    let p = Transfer {
        timeout: 1,
        ..with_flags(imported_transfer(11, 1, 2, 5, 150), TransferFlags::PENDING)
    };
    h.expect_transfer(p, TR::ImportedEventTimestampMustPostdateCreditAccount);
    // timeout_reserved_for_pending_transfer (not pending) comes long before.
    h.expect_transfer(
        Transfer { timeout: 1, ..imported_transfer(11, 1, 2, 5, 50) },
        TR::TimeoutReservedForPendingTransfer,
    );
}

#[test]
fn precedence_imported_checks_beat_closed() {
    let mut h = Harness::new();
    let closed = Account {
        flags: AccountFlags::IMPORTED | AccountFlags::CLOSED,
        ..imported_account(2, 200)
    };
    assert_eq!(h.accounts_at(1_000, &[imported_account(1, 100), closed]), vec![AR::Ok, AR::Ok]);
    let p = Transfer {
        timeout: 1,
        ..with_flags(imported_transfer(10, 1, 2, 5, 300), TransferFlags::PENDING)
    };
    h.expect_transfer(p, TR::ImportedEventTimeoutMustBeZero);
    h.expect_transfer(
        imported_transfer(10, 1, 2, 5, 150),
        TR::ImportedEventTimestampMustPostdateCreditAccount,
    );
    h.expect_transfer(imported_transfer(10, 1, 2, 5, 300), TR::CreditAccountAlreadyClosed);
}

#[test]
fn precedence_debit_closed_beats_credit_closed() {
    let mut h = setup_closed();
    h.expect_transfer(transfer(10, 7, 8, 5), TR::DebitAccountAlreadyClosed);
}

#[test]
fn precedence_closed_beats_overflow() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, AMOUNT_MAX)]);
    h.ok_transfers(&[transfer_flags(
        11,
        1,
        4,
        0,
        TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
    )]);
    assert!(h.is_closed(1));
    h.expect_transfer(pending(12, 1, 4, 1), TR::DebitAccountAlreadyClosed);
}

#[test]
fn precedence_overflows_in_order() {
    // debits_pending beats credits_pending (and everything after).
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, AMOUNT_MAX), transfer(11, 4, 1, 0)]);
    h.expect_transfer(pending(12, 1, 2, 1), TR::OverflowsDebitsPending);

    // credits_pending beats debits_posted.
    let mut h = setup();
    h.ok_transfers(&[pending(10, 4, 2, AMOUNT_MAX), transfer(11, 1, 4, AMOUNT_MAX)]);
    h.expect_transfer(pending(12, 1, 2, 1), TR::OverflowsCreditsPending);

    // debits_posted beats credits_posted.
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 1, 2, AMOUNT_MAX)]);
    h.expect_transfer(transfer(11, 1, 2, 1), TR::OverflowsDebitsPosted);
    h.expect_transfer(pending(12, 1, 2, 1), TR::OverflowsDebitsPosted);

    // credits_posted beats debits.
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 4, 2, AMOUNT_MAX), pending(11, 1, 4, AMOUNT_MAX)]);
    h.expect_transfer(transfer(12, 1, 2, 1), TR::OverflowsCreditsPosted);

    // debits beats credits.
    let mut h = setup();
    h.ok_accounts(&[account(5, 1)]);
    h.ok_transfers(&[pending(10, 1, 4, AMOUNT_MAX), pending(11, 5, 2, AMOUNT_MAX)]);
    h.expect_transfer(transfer(12, 1, 2, 1), TR::OverflowsDebits);
    assert_eq!(h.balances(1), (u128::MAX, 0, 0, 0));
}

#[test]
fn precedence_overflow_beats_overflows_timeout_and_exceeds() {
    let mut h = setup_limits();
    h.set_clock(5_000_000_000 * NS);
    h.ok_transfers(&[pending(10, 1, 2, AMOUNT_MAX)]);
    h.expect_transfer(pending_timeout(11, 1, 4, 1, u32::MAX), TR::OverflowsDebitsPending);
    // overflows_timeout beats exceeds_credits (account 5 has no credits).
    h.expect_transfer(pending_timeout(12, 5, 4, 1, u32::MAX), TR::OverflowsTimeout);

    // An overflow beats exceeds_credits.
    let mut h = setup_limits();
    h.ok_transfers(&[transfer(10, 2, 5, AMOUNT_MAX), transfer(11, 5, 1, AMOUNT_MAX)]);
    h.expect_transfer(transfer(12, 5, 1, 1), TR::OverflowsDebitsPosted);
}

#[test]
fn precedence_exceeds_credits_beats_exceeds_debits() {
    let mut h = setup_limits();
    h.expect_transfer(transfer(10, 5, 6, 1), TR::ExceedsCredits);
    h.expect_transfer(transfer(11, 1, 6, 1), TR::ExceedsDebits);
    h.expect_transfer(transfer(12, 5, 1, 1), TR::ExceedsCredits);
    h.expect_transfer(transfer(13, 5, 6, 0), TR::Ok);
}

// ---------------------------------------------------------------------------------------
// Timestamps, balancing, failed ids.
// ---------------------------------------------------------------------------------------

#[test]
fn transfers_get_consecutive_timestamps() {
    let mut h = setup();
    let t = h.next_timestamp(3) + 100;
    let r =
        h.transfers_at(t, &[transfer(10, 1, 2, 1), transfer(11, 1, 1, 1), transfer(12, 1, 2, 1)]);
    assert_eq!(r, vec![TR::Ok, TR::AccountsMustBeDifferent, TR::Ok]);
    assert_eq!(h.xfer(10).unwrap().timestamp, t - 2);
    assert_eq!(h.xfer(12).unwrap().timestamp, t);
    assert_eq!(h.ledger.commit_timestamp(), t);
}

#[test]
fn events_see_earlier_events_of_the_batch() {
    let mut h = setup_limits();
    let r = h.transfers(&[transfer(10, 2, 5, 10), transfer(11, 5, 1, 10), transfer(12, 5, 1, 1)]);
    assert_eq!(r, vec![TR::Ok, TR::Ok, TR::ExceedsCredits]);
}

#[test]
fn balancing_debit_clamps_to_the_debit_accounts_credit_balance() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 2, 1, 10)]);
    let bd = |id, amount| transfer_flags(id, 1, 2, amount, TransferFlags::BALANCING_DEBIT);
    h.expect_transfer(bd(11, 4), TR::Ok);
    assert_eq!(h.xfer(11).unwrap().amount, 4, "below the limit: as requested");
    h.expect_transfer(bd(12, 100), TR::Ok);
    assert_eq!(h.xfer(12).unwrap().amount, 6, "clamped to the remaining credit");
    assert_eq!(h.balances(1), (0, 10, 0, 10));
    h.expect_transfer(bd(13, 100), TR::Ok);
    assert_eq!(h.xfer(13).unwrap().amount, 0, "nothing left: a zero amount is valid");
    assert_eq!(h.balances(1), (0, 10, 0, 10));
    assert_eq!(h.balances(2), (0, 10, 0, 10));
}

#[test]
fn balancing_debit_with_amount_max_and_pending_debits() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 2, 1, 10), pending(11, 1, 2, 3)]);
    let t = transfer_flags(12, 1, 2, AMOUNT_MAX, TransferFlags::BALANCING_DEBIT);
    h.expect_transfer(t, TR::Ok);
    assert_eq!(h.xfer(12).unwrap().amount, 7);
    assert_eq!(h.balances(1), (3, 7, 0, 10));
}

#[test]
fn balancing_debit_room_saturates_at_zero() {
    let mut h = setup();
    // Account 1 has debited more than it was credited (no limit flag).
    h.ok_transfers(&[transfer(10, 1, 2, 10), transfer(11, 2, 1, 4)]);
    h.expect_transfer(transfer_flags(12, 1, 2, 5, TransferFlags::BALANCING_DEBIT), TR::Ok);
    assert_eq!(h.xfer(12).unwrap().amount, 0);
    assert_eq!(h.balances(1), (0, 10, 0, 4));
}

#[test]
fn balancing_debit_avoids_exceeds_credits() {
    let mut h = setup_limits();
    h.ok_transfers(&[transfer(10, 2, 5, 10)]);
    h.expect_transfer(transfer(11, 5, 1, 11), TR::ExceedsCredits);
    h.expect_transfer(transfer_flags(12, 5, 1, 11, TransferFlags::BALANCING_DEBIT), TR::Ok);
    assert_eq!(h.xfer(12).unwrap().amount, 10);
    assert_eq!(h.balances(5), (0, 10, 0, 10));
}

#[test]
fn balancing_credit_clamps_to_the_credit_accounts_debit_balance() {
    let mut h = setup_limits();
    h.ok_transfers(&[transfer(10, 6, 1, 10), pending(11, 2, 6, 3)]);
    let bc = |id, amount| transfer_flags(id, 2, 6, amount, TransferFlags::BALANCING_CREDIT);
    h.expect_transfer(bc(12, 100), TR::Ok);
    assert_eq!(h.xfer(12).unwrap().amount, 7);
    assert_eq!(h.balances(6), (0, 10, 3, 7));
    h.expect_transfer(bc(13, AMOUNT_MAX), TR::Ok);
    assert_eq!(h.xfer(13).unwrap().amount, 0);
}

#[test]
fn balancing_debit_and_credit_take_the_smaller_room() {
    let mut h = setup();
    // Account 1: credits_posted 10. Account 4: debits_posted 6.
    h.ok_transfers(&[transfer(10, 2, 1, 10), transfer(11, 4, 2, 6)]);
    let both = TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT;
    h.expect_transfer(transfer_flags(12, 1, 4, 100, both), TR::Ok);
    assert_eq!(h.xfer(12).unwrap().amount, 6);
    assert_eq!(h.balances(1), (0, 6, 0, 10));
    assert_eq!(h.balances(4), (0, 6, 0, 6));
}

#[test]
fn balancing_pending_transfer_reserves_the_clamped_amount() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 2, 1, 10)]);
    let flags = TransferFlags::PENDING | TransferFlags::BALANCING_DEBIT;
    h.expect_transfer(transfer_flags(11, 1, 2, 100, flags), TR::Ok);
    assert_eq!(h.xfer(11).unwrap().amount, 10);
    assert_eq!(h.balances(1), (10, 0, 0, 10));
    // Posting the whole pending amount posts the clamped amount.
    h.expect_transfer(post(12, 11, AMOUNT_MAX), TR::Ok);
    assert_eq!(h.balances(1), (0, 10, 0, 10));
    assert_eq!(h.xfer(12).unwrap().amount, 10);
}

#[test]
fn balancing_exists_compares_against_the_stored_amount() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 2, 1, 10)]);
    let t = transfer_flags(11, 1, 2, 100, TransferFlags::BALANCING_DEBIT);
    h.expect_transfer(t, TR::Ok);
    assert_eq!(h.xfer(11).unwrap().amount, 10);
    // Requested >= stored: exists.
    h.expect_transfer(t, TR::Exists);
    h.expect_transfer(Transfer { amount: 10, ..t }, TR::Exists);
    h.expect_transfer(Transfer { amount: AMOUNT_MAX, ..t }, TR::Exists);
    // Requested < stored: different.
    h.expect_transfer(Transfer { amount: 9, ..t }, TR::ExistsWithDifferentAmount);
    h.expect_transfer(Transfer { amount: 0, ..t }, TR::ExistsWithDifferentAmount);
    // More room later changes nothing for the existing transfer.
    h.ok_transfers(&[transfer(12, 2, 1, 50)]);
    h.expect_transfer(t, TR::Exists);
    assert_eq!(h.balances(1), (0, 10, 0, 60));
}

#[test]
fn transient_failure_in_a_batch_burns_the_id_for_later_events_of_the_batch() {
    let mut h = setup_limits();
    let r = h.transfers(&[transfer(10, 5, 1, 1), transfer(10, 5, 1, 0), transfer(11, 5, 1, 0)]);
    assert_eq!(r, vec![TR::ExceedsCredits, TR::IdAlreadyFailed, TR::Ok]);
}

#[test]
fn non_transient_failures_do_not_burn_the_id() {
    let mut h = setup();
    for bad in [
        Transfer { ledger: 0, ..transfer(10, 1, 2, 5) },
        transfer(10, 1, 1, 5),
        transfer(10, 1, 3, 5),
        Transfer { ledger: 2, ..transfer(10, 1, 2, 5) },
        Transfer { timeout: 1, ..transfer(10, 1, 2, 5) },
        Transfer { timestamp: 1, ..transfer(10, 1, 2, 5) },
        transfer_flags(10, 1, 2, 5, TransferFlags::from_bits_retain(1 << 9)),
        post(10, 10, 5),
        linked(transfer(10, 1, 2, 5)),
    ] {
        let r = h.transfer1(bad);
        assert!(!r.is_transient() && r != TR::Ok, "{r:?}");
    }
    h.expect_transfer(transfer(10, 1, 2, 5), TR::Ok);
}

#[test]
fn id_already_failed_is_not_itself_recorded_and_stays() {
    let mut h = setup();
    h.expect_transfer(transfer(10, 1, 99, 5), TR::CreditAccountNotFound);
    for _ in 0..3 {
        h.expect_transfer(transfer(10, 1, 2, 5), TR::IdAlreadyFailed);
    }
}
