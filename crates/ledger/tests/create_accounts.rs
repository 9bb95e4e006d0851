//! One test per `CreateAccountResult` (named after the code), precedence between codes,
//! and the behaviour of `create_accounts`. See SEMANTICS.md, "create_accounts".

mod common;
use common::*;

// ---------------------------------------------------------------------------------------
// One test per result code.
// ---------------------------------------------------------------------------------------

#[test]
fn ok() {
    let mut h = Harness::new();
    let a = Account {
        user_data_128: 5,
        user_data_64: 6,
        user_data_32: 7,
        code: 9,
        flags: AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..account(1, 3)
    };
    assert_eq!(h.accounts(&[a]), vec![AR::Ok]);
    assert_eq!(h.acct(1), Account { timestamp: h.last_batch, ..a });
}

#[test]
fn linked_event_failed() {
    let mut h = Harness::new();
    let first = linked_account(account(1, 1));
    let before = h.snapshot();
    assert_eq!(
        h.accounts(&[first, account(2, 0)]),
        vec![AR::LinkedEventFailed, AR::LedgerMustNotBeZero]
    );
    h.assert_unchanged(&before);
    assert!(!h.account_exists(1));
    // Fixed: the chain succeeds as a whole.
    assert_eq!(h.accounts(&[first, account(2, 1)]), vec![AR::Ok, AR::Ok]);
    assert!(h.account_exists(1) && h.account_exists(2));
}

#[test]
fn linked_event_chain_open() {
    let mut h = Harness::new();
    let before = h.snapshot();
    assert_eq!(h.accounts(&[linked_account(account(1, 1))]), vec![AR::LinkedEventChainOpen]);
    h.assert_unchanged(&before);
    assert_eq!(h.accounts(&[account(1, 1)]), vec![AR::Ok]);
}

#[test]
fn imported_event_expected() {
    let mut h = Harness::new();
    let results = h.accounts(&[imported_account(1, 10), account(2, 1)]);
    assert_eq!(results, vec![AR::Ok, AR::ImportedEventExpected]);
    assert!(h.account_exists(1));
    assert!(!h.account_exists(2));
    // Fixed: the second event imported too.
    let results = h.accounts(&[imported_account(3, START + 10), imported_account(2, START + 11)]);
    assert_eq!(results, vec![AR::Ok, AR::Ok]);
}

#[test]
fn imported_event_not_expected() {
    let mut h = Harness::new();
    let results = h.accounts(&[account(1, 1), imported_account(2, 10)]);
    assert_eq!(results, vec![AR::Ok, AR::ImportedEventNotExpected]);
    assert!(!h.account_exists(2));
    assert_eq!(h.accounts(&[account(2, 1)]), vec![AR::Ok]);
}

#[test]
fn timestamp_must_be_zero() {
    let mut h = Harness::new();
    h.expect_account(Account { timestamp: 5, ..account(1, 1) }, AR::TimestampMustBeZero);
    h.expect_account(account(1, 1), AR::Ok);
    assert_eq!(h.acct(1).timestamp, h.last_batch);
}

#[test]
fn imported_event_timestamp_out_of_range() {
    let mut h = Harness::new();
    h.expect_account(imported_account(1, 0), AR::ImportedEventTimestampOutOfRange);
    h.expect_account(imported_account(1, TIMESTAMP_MAX + 1), AR::ImportedEventTimestampOutOfRange);
    h.expect_account(imported_account(1, u64::MAX), AR::ImportedEventTimestampOutOfRange);
    h.expect_account(imported_account(1, 1), AR::Ok);
    assert_eq!(h.acct(1).timestamp, 1);
}

#[test]
fn imported_event_timestamp_must_not_advance() {
    let mut h = Harness::new();
    let t = 10_000;
    let r = h.accounts_at(t, &[imported_account(1, t)]);
    assert_eq!(r, vec![AR::ImportedEventTimestampMustNotAdvance]);
    let r = h.accounts_at(t + 2, &[imported_account(1, t + 3)]);
    assert_eq!(r, vec![AR::ImportedEventTimestampMustNotAdvance]);
    assert!(!h.account_exists(1));
    // Below the batch timestamp is fine.
    let r = h.accounts_at(t + 4, &[imported_account(1, t + 3)]);
    assert_eq!(r, vec![AR::Ok]);
    assert_eq!(h.acct(1).timestamp, t + 3);
}

#[test]
fn reserved_field() {
    let mut h = Harness::new();
    h.expect_account(Account { reserved: 1, ..account(1, 1) }, AR::ReservedField);
    h.expect_account(Account { reserved: u32::MAX, ..account(1, 1) }, AR::ReservedField);
    h.expect_account(account(1, 1), AR::Ok);
}

#[test]
fn reserved_flag() {
    let mut h = Harness::new();
    for bit in 6..16 {
        let flags = AccountFlags::from_bits_retain(1 << bit);
        h.expect_account(account_flags(1, flags), AR::ReservedFlag);
    }
    // Defined flags are accepted.
    let flags =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY | AccountFlags::CLOSED;
    h.expect_account(account_flags(1, flags), AR::Ok);
}

#[test]
fn id_must_not_be_zero() {
    let mut h = Harness::new();
    h.expect_account(account(0, 1), AR::IdMustNotBeZero);
    h.expect_account(account(1, 1), AR::Ok);
}

#[test]
fn id_must_not_be_int_max() {
    let mut h = Harness::new();
    h.expect_account(account(u128::MAX, 1), AR::IdMustNotBeIntMax);
    h.expect_account(account(u128::MAX - 1, 1), AR::Ok);
}

fn existing() -> (Harness, Account) {
    let a = Account {
        user_data_128: 128,
        user_data_64: 64,
        user_data_32: 32,
        code: 7,
        flags: AccountFlags::HISTORY,
        ..account(1, 1)
    };
    let h = Harness::with_accounts(&[a]);
    (h, a)
}

#[test]
fn exists_with_different_flags() {
    let (mut h, a) = existing();
    h.expect_account(Account { flags: AccountFlags::empty(), ..a }, AR::ExistsWithDifferentFlags);
    let flags = AccountFlags::HISTORY | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    h.expect_account(Account { flags, ..a }, AR::ExistsWithDifferentFlags);
    h.expect_account(a, AR::Exists);
}

#[test]
fn exists_with_different_user_data_128() {
    let (mut h, a) = existing();
    h.expect_account(Account { user_data_128: 0, ..a }, AR::ExistsWithDifferentUserData128);
    h.expect_account(a, AR::Exists);
}

#[test]
fn exists_with_different_user_data_64() {
    let (mut h, a) = existing();
    h.expect_account(Account { user_data_64: 65, ..a }, AR::ExistsWithDifferentUserData64);
    h.expect_account(a, AR::Exists);
}

#[test]
fn exists_with_different_user_data_32() {
    let (mut h, a) = existing();
    h.expect_account(Account { user_data_32: 33, ..a }, AR::ExistsWithDifferentUserData32);
    h.expect_account(a, AR::Exists);
}

#[test]
fn exists_with_different_ledger() {
    let (mut h, a) = existing();
    h.expect_account(Account { ledger: 2, ..a }, AR::ExistsWithDifferentLedger);
    h.expect_account(a, AR::Exists);
}

#[test]
fn exists_with_different_code() {
    let (mut h, a) = existing();
    h.expect_account(Account { code: 8, ..a }, AR::ExistsWithDifferentCode);
    h.expect_account(a, AR::Exists);
}

#[test]
fn exists() {
    let (mut h, a) = existing();
    let stored = h.acct(1);
    h.expect_account(a, AR::Exists);
    // Nothing changed, in particular not the timestamp.
    assert_eq!(h.acct(1), stored);
    // Within one batch, the second of two identical events gets `exists`.
    assert_eq!(h.accounts(&[account(2, 1), account(2, 1)]), vec![AR::Ok, AR::Exists]);
    assert_eq!(h.acct(2).timestamp, h.event_timestamp(0));
}

#[test]
fn flags_are_mutually_exclusive() {
    let mut h = Harness::new();
    let both =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    h.expect_account(account_flags(1, both), AR::FlagsAreMutuallyExclusive);
    h.expect_account(account_flags(1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS), AR::Ok);
    h.expect_account(account_flags(2, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS), AR::Ok);
}

#[test]
fn debits_pending_must_be_zero() {
    let mut h = Harness::new();
    h.expect_account(Account { debits_pending: 1, ..account(1, 1) }, AR::DebitsPendingMustBeZero);
    h.expect_account(account(1, 1), AR::Ok);
}

#[test]
fn debits_posted_must_be_zero() {
    let mut h = Harness::new();
    h.expect_account(Account { debits_posted: 1, ..account(1, 1) }, AR::DebitsPostedMustBeZero);
    h.expect_account(account(1, 1), AR::Ok);
}

#[test]
fn credits_pending_must_be_zero() {
    let mut h = Harness::new();
    h.expect_account(
        Account { credits_pending: u128::MAX, ..account(1, 1) },
        AR::CreditsPendingMustBeZero,
    );
    h.expect_account(account(1, 1), AR::Ok);
}

#[test]
fn credits_posted_must_be_zero() {
    let mut h = Harness::new();
    h.expect_account(Account { credits_posted: 1, ..account(1, 1) }, AR::CreditsPostedMustBeZero);
    h.expect_account(account(1, 1), AR::Ok);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
}

#[test]
fn ledger_must_not_be_zero() {
    let mut h = Harness::new();
    h.expect_account(account(1, 0), AR::LedgerMustNotBeZero);
    h.expect_account(account(1, 1), AR::Ok);
}

#[test]
fn code_must_not_be_zero() {
    let mut h = Harness::new();
    h.expect_account(Account { code: 0, ..account(1, 1) }, AR::CodeMustNotBeZero);
    h.expect_account(Account { code: 1, ..account(1, 1) }, AR::Ok);
}

#[test]
fn imported_event_timestamp_must_not_regress() {
    let mut h = Harness::new();
    let t = 10_000;
    assert_eq!(h.accounts_at(t, &[imported_account(1, 100)]), vec![AR::Ok]);
    // Equal to, or below, the newest account's timestamp.
    let r = h.accounts_at(t + 1, &[imported_account(2, 100)]);
    assert_eq!(r, vec![AR::ImportedEventTimestampMustNotRegress]);
    let r = h.accounts_at(t + 2, &[imported_account(2, 99)]);
    assert_eq!(r, vec![AR::ImportedEventTimestampMustNotRegress]);
    assert!(!h.account_exists(2));
    // Within one batch, too: the second event must be after the first.
    let r = h.accounts_at(t + 4, &[imported_account(2, 200), imported_account(3, 200)]);
    assert_eq!(r, vec![AR::Ok, AR::ImportedEventTimestampMustNotRegress]);

    // Equal to an existing transfer's timestamp (though after every account's).
    let transfer = imported_transfer(1, 1, 2, 5, 300);
    assert_eq!(h.transfers_at(t + 5, &[transfer]), vec![TR::Ok]);
    let before = h.snapshot();
    let r = h.accounts_at(t + 6, &[imported_account(3, 300)]);
    assert_eq!(r, vec![AR::ImportedEventTimestampMustNotRegress]);
    h.assert_unchanged(&before);
    // Fixed.
    assert_eq!(h.accounts_at(t + 7, &[imported_account(3, 301)]), vec![AR::Ok]);
    assert_eq!(h.acct(3).timestamp, 301);

    // Below a non-imported account's timestamp.
    h.ok_accounts(&[account(4, 1)]);
    let ts4 = h.acct(4).timestamp;
    let t = h.next_timestamp(1) + 10;
    assert_eq!(
        h.accounts_at(t, &[imported_account(5, ts4)]),
        vec![AR::ImportedEventTimestampMustNotRegress]
    );
    assert_eq!(h.accounts_at(t + 1, &[imported_account(5, ts4 + 1)]), vec![AR::Ok]);
}

// ---------------------------------------------------------------------------------------
// Precedence: when several checks fail, the one listed first in SEMANTICS.md wins.
// ---------------------------------------------------------------------------------------

#[test]
fn precedence_chain_open_beats_own_error() {
    let mut h = Harness::new();
    assert_eq!(h.accounts(&[linked_account(account(0, 0))]), vec![AR::LinkedEventChainOpen]);
}

#[test]
fn precedence_linked_event_failed_beats_own_error() {
    let mut h = Harness::new();
    let results =
        h.accounts(&[linked_account(account(1, 0)), Account { code: 0, ..account(2, 1) }]);
    assert_eq!(results, vec![AR::LedgerMustNotBeZero, AR::LinkedEventFailed]);
}

#[test]
fn precedence_imported_checks_before_own_checks() {
    let mut h = Harness::new();
    // Not imported with a timestamp, and every own check failing too.
    let bad = Account { timestamp: 1, reserved: 1, ..account(0, 0) };
    h.expect_account(bad, AR::TimestampMustBeZero);
    // Imported, timestamp 0, plus a reserved field.
    let bad = Account { reserved: 1, ..imported_account(0, 0) };
    h.expect_account(bad, AR::ImportedEventTimestampOutOfRange);
    // Imported batch, a non-imported event with a timestamp: expected wins.
    let results = h.accounts(&[
        imported_account(1, 10),
        Account { timestamp: 11, reserved: 1, ..account(2, 1) },
    ]);
    assert_eq!(results, vec![AR::Ok, AR::ImportedEventExpected]);
    // Must-not-advance beats reserved_field.
    let t = h.next_timestamp(1);
    let r = h.accounts_at(t, &[Account { reserved: 1, ..imported_account(3, t) }]);
    assert_eq!(r, vec![AR::ImportedEventTimestampMustNotAdvance]);
}

#[test]
fn precedence_reserved_field_beats_reserved_flag() {
    let mut h = Harness::new();
    let a = Account { reserved: 1, flags: AccountFlags::from_bits_retain(1 << 6), ..account(0, 1) };
    h.expect_account(a, AR::ReservedField);
}

#[test]
fn precedence_reserved_flag_beats_id_must_not_be_zero() {
    let mut h = Harness::new();
    h.expect_account(account_flags(0, AccountFlags::from_bits_retain(1 << 7)), AR::ReservedFlag);
    h.expect_account(
        account_flags(u128::MAX, AccountFlags::from_bits_retain(1 << 15)),
        AR::ReservedFlag,
    );
}

#[test]
fn precedence_id_beats_later_checks() {
    let mut h = Harness::new();
    let both =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    h.expect_account(Account { debits_posted: 1, ..account_flags(0, both) }, AR::IdMustNotBeZero);
    h.expect_account(Account { ledger: 0, ..account(u128::MAX, 0) }, AR::IdMustNotBeIntMax);
}

#[test]
fn precedence_exists_with_different_flags_beats_flags_are_mutually_exclusive() {
    let mut h =
        Harness::with_accounts(&[account_flags(1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)]);
    let both =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    h.expect_account(account_flags(1, both), AR::ExistsWithDifferentFlags);
}

#[test]
fn precedence_exists_fields_in_order() {
    let (mut h, a) = existing();
    let mut b = Account {
        flags: AccountFlags::empty(),
        user_data_128: 1,
        user_data_64: 1,
        user_data_32: 1,
        ledger: 9,
        code: 9,
        ..a
    };
    h.expect_account(b, AR::ExistsWithDifferentFlags);
    b.flags = a.flags;
    h.expect_account(b, AR::ExistsWithDifferentUserData128);
    b.user_data_128 = a.user_data_128;
    h.expect_account(b, AR::ExistsWithDifferentUserData64);
    b.user_data_64 = a.user_data_64;
    h.expect_account(b, AR::ExistsWithDifferentUserData32);
    b.user_data_32 = a.user_data_32;
    h.expect_account(b, AR::ExistsWithDifferentLedger);
    b.ledger = a.ledger;
    h.expect_account(b, AR::ExistsWithDifferentCode);
    b.code = a.code;
    h.expect_account(b, AR::Exists);
}

#[test]
fn precedence_exists_beats_later_checks() {
    let (mut h, a) = existing();
    // Balances are not compared, and their checks come after `exists`.
    let with_balances =
        Account { debits_pending: 1, debits_posted: 2, credits_pending: 3, credits_posted: 4, ..a };
    h.expect_account(with_balances, AR::Exists);
    // A zero ledger/code is a difference, not ledger_must_not_be_zero.
    h.expect_account(Account { ledger: 0, ..a }, AR::ExistsWithDifferentLedger);
    h.expect_account(Account { code: 0, ..a }, AR::ExistsWithDifferentCode);
    // But reserved comes before exists.
    h.expect_account(Account { reserved: 1, ..a }, AR::ReservedField);
}

#[test]
fn precedence_flags_are_mutually_exclusive_beats_balances() {
    let mut h = Harness::new();
    let both =
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;
    let a = Account { debits_pending: 1, ledger: 0, ..account_flags(1, both) };
    h.expect_account(a, AR::FlagsAreMutuallyExclusive);
}

#[test]
fn precedence_balances_in_order() {
    let mut h = Harness::new();
    let mut a = Account {
        debits_pending: 1,
        debits_posted: 1,
        credits_pending: 1,
        credits_posted: 1,
        ..account(1, 0)
    };
    h.expect_account(a, AR::DebitsPendingMustBeZero);
    a.debits_pending = 0;
    h.expect_account(a, AR::DebitsPostedMustBeZero);
    a.debits_posted = 0;
    h.expect_account(a, AR::CreditsPendingMustBeZero);
    a.credits_pending = 0;
    h.expect_account(a, AR::CreditsPostedMustBeZero);
    a.credits_posted = 0;
    h.expect_account(a, AR::LedgerMustNotBeZero);
}

#[test]
fn precedence_ledger_beats_code() {
    let mut h = Harness::new();
    h.expect_account(Account { code: 0, ..account(1, 0) }, AR::LedgerMustNotBeZero);
}

#[test]
fn precedence_code_beats_imported_must_not_regress() {
    let mut h = Harness::new();
    assert_eq!(h.accounts_at(1_000, &[imported_account(1, 100)]), vec![AR::Ok]);
    let r = h.accounts_at(2_000, &[Account { code: 0, ..imported_account(2, 50) }]);
    assert_eq!(r, vec![AR::CodeMustNotBeZero]);
    let r = h.accounts_at(3_000, &[imported_account(2, 50)]);
    assert_eq!(r, vec![AR::ImportedEventTimestampMustNotRegress]);
}

// ---------------------------------------------------------------------------------------
// Behaviour.
// ---------------------------------------------------------------------------------------

#[test]
fn events_get_consecutive_timestamps_ending_at_the_batch_timestamp() {
    let mut h = Harness::new();
    let t = 50_000;
    let r = h.accounts_at(t, &[account(1, 1), account(2, 1), account(3, 1)]);
    assert_eq!(r, vec![AR::Ok; 3]);
    assert_eq!(h.acct(1).timestamp, t - 2);
    assert_eq!(h.acct(2).timestamp, t - 1);
    assert_eq!(h.acct(3).timestamp, t);
    assert_eq!(h.ledger.commit_timestamp(), t);
}

#[test]
fn failed_event_timestamp_is_not_reused() {
    let mut h = Harness::new();
    let t = 50_000;
    let r = h.accounts_at(t, &[account(1, 0), account(2, 1)]);
    assert_eq!(r, vec![AR::LedgerMustNotBeZero, AR::Ok]);
    assert_eq!(h.acct(2).timestamp, t);
    assert_eq!(h.accounts_at(t + 1, &[account(1, 1)]), vec![AR::Ok]);
    assert_eq!(h.acct(1).timestamp, t + 1);
}

#[test]
fn commit_timestamp_advances_even_if_every_event_fails() {
    let mut h = Harness::new();
    let t = 77_777;
    assert_eq!(h.accounts_at(t, &[account(0, 1)]), vec![AR::IdMustNotBeZero]);
    assert_eq!(h.ledger.commit_timestamp(), t);
}

#[test]
fn account_may_be_created_closed() {
    let mut h = Harness::new();
    let a = account_flags(1, AccountFlags::CLOSED);
    h.expect_account(a, AR::Ok);
    assert!(h.is_closed(1));
    assert_eq!(h.acct(1), Account { timestamp: h.last_batch, ..a });
}

#[test]
fn exists_ignores_closed_flag() {
    let mut h = Harness::with_accounts(&[account_flags(1, AccountFlags::CLOSED), account(2, 1)]);
    h.expect_account(account(1, 1), AR::Exists);
    h.expect_account(account_flags(2, AccountFlags::CLOSED), AR::Exists);
    assert!(h.is_closed(1));
    assert!(!h.is_closed(2));
}

#[test]
fn exists_is_still_compared_after_balances_change() {
    let mut h = Harness::with_accounts(&[account(1, 1), account(2, 1)]);
    h.ok_transfers(&[transfer(1, 1, 2, 10)]);
    h.expect_account(account(1, 1), AR::Exists);
    assert_eq!(h.balances(1), (0, 10, 0, 0));
}

#[test]
fn imported_accounts_keep_their_timestamps() {
    let mut h = Harness::new();
    let r = h.accounts_at(
        1_000,
        &[imported_account(1, 10), imported_account(2, 20), imported_account(3, 999)],
    );
    assert_eq!(r, vec![AR::Ok; 3]);
    assert_eq!(h.acct(1).timestamp, 10);
    assert_eq!(h.acct(2).timestamp, 20);
    assert_eq!(h.acct(3).timestamp, 999);
    assert_eq!(h.ledger.commit_timestamp(), 1_000);
    // Non-imported accounts afterwards get timestamps after the batch timestamp.
    h.ok_accounts(&[account(4, 1)]);
    assert!(h.acct(4).timestamp > 1_000);
}

#[test]
fn imported_batch_failure_of_first_event_still_makes_batch_imported() {
    // `batch_imported` depends only on the first event's flag, not on its result.
    let mut h = Harness::new();
    let results =
        h.accounts_at(1_000, &[imported_account(0, 10), account(2, 1), imported_account(3, 11)]);
    assert_eq!(results, vec![AR::IdMustNotBeZero, AR::ImportedEventExpected, AR::Ok]);
}

#[test]
fn events_in_a_batch_see_earlier_events() {
    let mut h = Harness::new();
    let r = h.accounts(&[account(1, 1), Account { code: 2, ..account(1, 1) }, account(1, 1)]);
    assert_eq!(r, vec![AR::Ok, AR::ExistsWithDifferentCode, AR::Exists]);
}

#[test]
fn imported_timestamp_may_be_below_the_commit_timestamp() {
    // Only must-not-advance (below T) and must-not-regress (after existing records) apply.
    let mut h = Harness::new();
    assert_eq!(h.accounts_at(10_000, &[imported_account(1, 100)]), vec![AR::Ok]);
    assert_eq!(h.ledger.commit_timestamp(), 10_000);
    assert_eq!(h.accounts_at(20_000, &[imported_account(2, 150)]), vec![AR::Ok]);
    assert_eq!(h.acct(2).timestamp, 150);
}
