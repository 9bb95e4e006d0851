//! Every result code has a test that produces it. The lists below map each code to the
//! test that covers it; the tests here check that the lists name every variant of
//! `CreateAccountResult::ALL` / `CreateTransferResult::ALL` (so a new code without a test
//! fails) and that every named test exists in the named file (so the lists cannot rot).

mod common;
use common::*;

const SOURCES: &[(&str, &str)] = &[
    ("create_accounts.rs", include_str!("create_accounts.rs")),
    ("create_transfers.rs", include_str!("create_transfers.rs")),
    ("two_phase.rs", include_str!("two_phase.rs")),
    ("linked_chains.rs", include_str!("linked_chains.rs")),
];

const ACCOUNT_TESTS: &[(CreateAccountResult, &str, &str)] = &[
    (AR::Ok, "create_accounts.rs", "ok"),
    (AR::LinkedEventFailed, "create_accounts.rs", "linked_event_failed"),
    (AR::LinkedEventChainOpen, "create_accounts.rs", "linked_event_chain_open"),
    (AR::ImportedEventExpected, "create_accounts.rs", "imported_event_expected"),
    (AR::ImportedEventNotExpected, "create_accounts.rs", "imported_event_not_expected"),
    (AR::TimestampMustBeZero, "create_accounts.rs", "timestamp_must_be_zero"),
    (
        AR::ImportedEventTimestampOutOfRange,
        "create_accounts.rs",
        "imported_event_timestamp_out_of_range",
    ),
    (
        AR::ImportedEventTimestampMustNotAdvance,
        "create_accounts.rs",
        "imported_event_timestamp_must_not_advance",
    ),
    (AR::ReservedField, "create_accounts.rs", "reserved_field"),
    (AR::ReservedFlag, "create_accounts.rs", "reserved_flag"),
    (AR::IdMustNotBeZero, "create_accounts.rs", "id_must_not_be_zero"),
    (AR::IdMustNotBeIntMax, "create_accounts.rs", "id_must_not_be_int_max"),
    (AR::ExistsWithDifferentFlags, "create_accounts.rs", "exists_with_different_flags"),
    (
        AR::ExistsWithDifferentUserData128,
        "create_accounts.rs",
        "exists_with_different_user_data_128",
    ),
    (AR::ExistsWithDifferentUserData64, "create_accounts.rs", "exists_with_different_user_data_64"),
    (AR::ExistsWithDifferentUserData32, "create_accounts.rs", "exists_with_different_user_data_32"),
    (AR::ExistsWithDifferentLedger, "create_accounts.rs", "exists_with_different_ledger"),
    (AR::ExistsWithDifferentCode, "create_accounts.rs", "exists_with_different_code"),
    (AR::Exists, "create_accounts.rs", "exists"),
    (AR::FlagsAreMutuallyExclusive, "create_accounts.rs", "flags_are_mutually_exclusive"),
    (AR::DebitsPendingMustBeZero, "create_accounts.rs", "debits_pending_must_be_zero"),
    (AR::DebitsPostedMustBeZero, "create_accounts.rs", "debits_posted_must_be_zero"),
    (AR::CreditsPendingMustBeZero, "create_accounts.rs", "credits_pending_must_be_zero"),
    (AR::CreditsPostedMustBeZero, "create_accounts.rs", "credits_posted_must_be_zero"),
    (AR::LedgerMustNotBeZero, "create_accounts.rs", "ledger_must_not_be_zero"),
    (AR::CodeMustNotBeZero, "create_accounts.rs", "code_must_not_be_zero"),
    (
        AR::ImportedEventTimestampMustNotRegress,
        "create_accounts.rs",
        "imported_event_timestamp_must_not_regress",
    ),
];

const TRANSFER_TESTS: &[(CreateTransferResult, &str, &str)] = &[
    (TR::Ok, "create_transfers.rs", "ok"),
    (TR::LinkedEventFailed, "create_transfers.rs", "linked_event_failed"),
    (TR::LinkedEventChainOpen, "create_transfers.rs", "linked_event_chain_open"),
    (TR::ImportedEventExpected, "create_transfers.rs", "imported_event_expected"),
    (TR::ImportedEventNotExpected, "create_transfers.rs", "imported_event_not_expected"),
    (TR::TimestampMustBeZero, "create_transfers.rs", "timestamp_must_be_zero"),
    (
        TR::ImportedEventTimestampOutOfRange,
        "create_transfers.rs",
        "imported_event_timestamp_out_of_range",
    ),
    (
        TR::ImportedEventTimestampMustNotAdvance,
        "create_transfers.rs",
        "imported_event_timestamp_must_not_advance",
    ),
    (TR::ReservedFlag, "create_transfers.rs", "reserved_flag"),
    (TR::IdMustNotBeZero, "create_transfers.rs", "id_must_not_be_zero"),
    (TR::IdMustNotBeIntMax, "create_transfers.rs", "id_must_not_be_int_max"),
    (TR::ExistsWithDifferentFlags, "create_transfers.rs", "exists_with_different_flags"),
    (TR::ExistsWithDifferentPendingId, "create_transfers.rs", "exists_with_different_pending_id"),
    (TR::ExistsWithDifferentTimeout, "create_transfers.rs", "exists_with_different_timeout"),
    (
        TR::ExistsWithDifferentDebitAccountId,
        "create_transfers.rs",
        "exists_with_different_debit_account_id",
    ),
    (
        TR::ExistsWithDifferentCreditAccountId,
        "create_transfers.rs",
        "exists_with_different_credit_account_id",
    ),
    (TR::ExistsWithDifferentAmount, "create_transfers.rs", "exists_with_different_amount"),
    (
        TR::ExistsWithDifferentUserData128,
        "create_transfers.rs",
        "exists_with_different_user_data_128",
    ),
    (
        TR::ExistsWithDifferentUserData64,
        "create_transfers.rs",
        "exists_with_different_user_data_64",
    ),
    (
        TR::ExistsWithDifferentUserData32,
        "create_transfers.rs",
        "exists_with_different_user_data_32",
    ),
    (TR::ExistsWithDifferentLedger, "create_transfers.rs", "exists_with_different_ledger"),
    (TR::ExistsWithDifferentCode, "create_transfers.rs", "exists_with_different_code"),
    (TR::Exists, "create_transfers.rs", "exists"),
    (TR::IdAlreadyFailed, "create_transfers.rs", "id_already_failed"),
    (TR::FlagsAreMutuallyExclusive, "create_transfers.rs", "flags_are_mutually_exclusive"),
    (TR::DebitAccountIdMustNotBeZero, "create_transfers.rs", "debit_account_id_must_not_be_zero"),
    (
        TR::DebitAccountIdMustNotBeIntMax,
        "create_transfers.rs",
        "debit_account_id_must_not_be_int_max",
    ),
    (TR::CreditAccountIdMustNotBeZero, "create_transfers.rs", "credit_account_id_must_not_be_zero"),
    (
        TR::CreditAccountIdMustNotBeIntMax,
        "create_transfers.rs",
        "credit_account_id_must_not_be_int_max",
    ),
    (TR::AccountsMustBeDifferent, "create_transfers.rs", "accounts_must_be_different"),
    (TR::PendingIdMustBeZero, "create_transfers.rs", "pending_id_must_be_zero"),
    (TR::PendingIdMustNotBeZero, "create_transfers.rs", "pending_id_must_not_be_zero"),
    (TR::PendingIdMustNotBeIntMax, "create_transfers.rs", "pending_id_must_not_be_int_max"),
    (TR::PendingIdMustBeDifferent, "create_transfers.rs", "pending_id_must_be_different"),
    (
        TR::TimeoutReservedForPendingTransfer,
        "create_transfers.rs",
        "timeout_reserved_for_pending_transfer",
    ),
    (TR::ClosingTransferMustBePending, "create_transfers.rs", "closing_transfer_must_be_pending"),
    (TR::LedgerMustNotBeZero, "create_transfers.rs", "ledger_must_not_be_zero"),
    (TR::CodeMustNotBeZero, "create_transfers.rs", "code_must_not_be_zero"),
    (TR::DebitAccountNotFound, "create_transfers.rs", "debit_account_not_found"),
    (TR::CreditAccountNotFound, "create_transfers.rs", "credit_account_not_found"),
    (
        TR::AccountsMustHaveTheSameLedger,
        "create_transfers.rs",
        "accounts_must_have_the_same_ledger",
    ),
    (
        TR::TransferMustHaveTheSameLedgerAsAccounts,
        "create_transfers.rs",
        "transfer_must_have_the_same_ledger_as_accounts",
    ),
    (TR::PendingTransferNotFound, "two_phase.rs", "pending_transfer_not_found"),
    (TR::PendingTransferNotPending, "two_phase.rs", "pending_transfer_not_pending"),
    (
        TR::PendingTransferHasDifferentDebitAccountId,
        "two_phase.rs",
        "pending_transfer_has_different_debit_account_id",
    ),
    (
        TR::PendingTransferHasDifferentCreditAccountId,
        "two_phase.rs",
        "pending_transfer_has_different_credit_account_id",
    ),
    (
        TR::PendingTransferHasDifferentLedger,
        "two_phase.rs",
        "pending_transfer_has_different_ledger",
    ),
    (TR::PendingTransferHasDifferentCode, "two_phase.rs", "pending_transfer_has_different_code"),
    (TR::ExceedsPendingTransferAmount, "two_phase.rs", "exceeds_pending_transfer_amount"),
    (
        TR::PendingTransferHasDifferentAmount,
        "two_phase.rs",
        "pending_transfer_has_different_amount",
    ),
    (TR::PendingTransferAlreadyPosted, "two_phase.rs", "pending_transfer_already_posted"),
    (TR::PendingTransferAlreadyVoided, "two_phase.rs", "pending_transfer_already_voided"),
    (TR::PendingTransferExpired, "two_phase.rs", "pending_transfer_expired"),
    (
        TR::ImportedEventTimestampMustNotRegress,
        "create_transfers.rs",
        "imported_event_timestamp_must_not_regress",
    ),
    (
        TR::ImportedEventTimestampMustPostdateDebitAccount,
        "create_transfers.rs",
        "imported_event_timestamp_must_postdate_debit_account",
    ),
    (
        TR::ImportedEventTimestampMustPostdateCreditAccount,
        "create_transfers.rs",
        "imported_event_timestamp_must_postdate_credit_account",
    ),
    (
        TR::ImportedEventTimeoutMustBeZero,
        "create_transfers.rs",
        "imported_event_timeout_must_be_zero",
    ),
    (TR::DebitAccountAlreadyClosed, "create_transfers.rs", "debit_account_already_closed"),
    (TR::CreditAccountAlreadyClosed, "create_transfers.rs", "credit_account_already_closed"),
    (TR::OverflowsDebitsPending, "create_transfers.rs", "overflows_debits_pending"),
    (TR::OverflowsCreditsPending, "create_transfers.rs", "overflows_credits_pending"),
    (TR::OverflowsDebitsPosted, "create_transfers.rs", "overflows_debits_posted"),
    (TR::OverflowsCreditsPosted, "create_transfers.rs", "overflows_credits_posted"),
    (TR::OverflowsDebits, "create_transfers.rs", "overflows_debits"),
    (TR::OverflowsCredits, "create_transfers.rs", "overflows_credits"),
    (TR::OverflowsTimeout, "create_transfers.rs", "overflows_timeout"),
    (TR::ExceedsCredits, "create_transfers.rs", "exceeds_credits"),
    (TR::ExceedsDebits, "create_transfers.rs", "exceeds_debits"),
];

/// Asserts that `file` defines `#[test] fn name()` and that the test mentions `variant`.
fn assert_test_exists(file: &str, name: &str, variant: &str) {
    let source = SOURCES
        .iter()
        .find(|(f, _)| *f == file)
        .unwrap_or_else(|| panic!("{file} is not in SOURCES"))
        .1;
    let header = format!("#[test]\nfn {name}() {{\n");
    let start = source
        .find(&header)
        .unwrap_or_else(|| panic!("{file} has no `#[test] fn {name}()` (covering {variant})"));
    let body = &source[start + header.len()..];
    let body = &body[..body.find("\n}\n").expect("test body ends")];
    assert!(body.contains(variant), "{file}::{name} never mentions {variant}");
}

#[test]
fn every_create_account_result_has_a_test() {
    for &result in CreateAccountResult::ALL {
        let entry = ACCOUNT_TESTS
            .iter()
            .find(|(r, _, _)| *r == result)
            .unwrap_or_else(|| panic!("no test listed for CreateAccountResult::{result:?}"));
        assert_test_exists(entry.1, entry.2, &format!("AR::{result:?}"));
    }
    assert_eq!(ACCOUNT_TESTS.len(), CreateAccountResult::ALL.len(), "duplicate entries");
}

#[test]
fn every_create_transfer_result_has_a_test() {
    for &result in CreateTransferResult::ALL {
        let entry = TRANSFER_TESTS
            .iter()
            .find(|(r, _, _)| *r == result)
            .unwrap_or_else(|| panic!("no test listed for CreateTransferResult::{result:?}"));
        assert_test_exists(entry.1, entry.2, &format!("TR::{result:?}"));
    }
    assert_eq!(TRANSFER_TESTS.len(), CreateTransferResult::ALL.len(), "duplicate entries");
}

#[test]
fn transient_codes_are_the_documented_ones() {
    // SEMANTICS.md, "Failed ids": `*_not_found`, `*_already_closed`, `overflows_*`,
    // `exceeds_*` (but not `exceeds_pending_transfer_amount`, a request error).
    for &result in CreateTransferResult::ALL {
        let name = result.name();
        let expected = name.ends_with("_not_found")
            || name.ends_with("_already_closed")
            || name.starts_with("overflows_")
            || (name.starts_with("exceeds_") && result != TR::ExceedsPendingTransferAmount);
        assert_eq!(result.is_transient(), expected, "{name}");
    }
}
