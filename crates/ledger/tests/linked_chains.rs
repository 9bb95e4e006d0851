//! Linked chains: results, rollback of every effect, failed ids and timestamps.
//! See SEMANTICS.md, "Linked chains" and "Failed ids".

mod common;
use common::*;

/// Accounts 1, 2 and 4 on ledger 1 (1 with history); account 3 on ledger 2; account 5
/// with `debits_must_not_exceed_credits`.
fn setup() -> Harness {
    Harness::with_accounts(&[
        account_flags(1, AccountFlags::HISTORY),
        account(2, 1),
        account(3, 2),
        account(4, 1),
        account_flags(5, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    ])
}

#[test]
fn failure_rolls_back_earlier_events_and_fails_later_ones() {
    let mut h = setup();
    let events = [
        linked(transfer(10, 1, 2, 5)),
        linked(transfer(11, 2, 4, 3)),
        linked(transfer(12, 99, 2, 1)),
        transfer(13, 1, 2, 7),
        transfer(14, 4, 2, 1),
    ];
    let r = h.transfers(&events);
    assert_eq!(
        r,
        vec![
            TR::LinkedEventFailed,
            TR::LinkedEventFailed,
            TR::DebitAccountNotFound,
            TR::LinkedEventFailed,
            TR::Ok
        ]
    );
    // Only event 14 happened.
    assert!(
        h.xfer(10).is_none()
            && h.xfer(11).is_none()
            && h.xfer(12).is_none()
            && h.xfer(13).is_none()
    );
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    assert_eq!(h.balances(2), (0, 0, 0, 1));
    assert_eq!(h.balances(4), (0, 1, 0, 0));
    assert_eq!(h.xfer(14).unwrap().timestamp, h.last_batch);
}

#[test]
fn later_events_of_a_broken_chain_are_not_evaluated() {
    let mut h = setup();
    // Event 11 would fail with a transient error, event 12 would succeed: neither is
    // evaluated, so neither records a failed id nor applies.
    let r = h.transfers(&[
        linked(transfer(10, 1, 1, 5)),
        linked(transfer(11, 98, 2, 1)),
        transfer(12, 1, 2, 1),
    ]);
    assert_eq!(r, vec![TR::AccountsMustBeDifferent, TR::LinkedEventFailed, TR::LinkedEventFailed]);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    h.ok_accounts(&[account(98, 1)]);
    h.ok_transfers(&[transfer(11, 98, 2, 1), transfer(12, 1, 2, 1)]);
}

#[test]
fn chain_open_at_batch_end() {
    let mut h = setup();
    let r = h.transfers(&[
        transfer(10, 1, 2, 1),
        linked(transfer(11, 1, 2, 2)),
        linked(transfer(12, 1, 2, 3)),
    ]);
    assert_eq!(r, vec![TR::Ok, TR::LinkedEventFailed, TR::LinkedEventChainOpen]);
    assert!(h.xfer(10).is_some());
    assert!(h.xfer(11).is_none() && h.xfer(12).is_none());
    assert_eq!(h.balances(1), (0, 1, 0, 0));
    // Nothing was recorded as failed.
    h.ok_transfers(&[transfer(11, 1, 2, 2), transfer(12, 1, 2, 3)]);
}

#[test]
fn chain_open_overrides_a_transient_failure_of_the_last_event() {
    let mut h = setup();
    let r = h.transfers(&[linked(transfer(10, 1, 2, 1)), linked(transfer(11, 98, 2, 1))]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::LinkedEventChainOpen]);
    // The chain-open event records no failed id.
    h.ok_accounts(&[account(98, 1)]);
    h.ok_transfers(&[transfer(10, 1, 2, 1), transfer(11, 98, 2, 1)]);
}

#[test]
fn chain_open_with_an_earlier_failure_in_the_chain() {
    let mut h = setup();
    let r = h.transfers(&[linked(transfer(10, 1, 1, 1)), linked(transfer(11, 1, 2, 1))]);
    assert_eq!(r, vec![TR::AccountsMustBeDifferent, TR::LinkedEventChainOpen]);
}

#[test]
fn two_chains_one_fails_one_succeeds() {
    let mut h = setup();
    let r = h.transfers(&[
        linked(transfer(10, 1, 2, 1)),
        transfer(11, 1, 3, 1),
        linked(transfer(12, 2, 4, 2)),
        transfer(13, 4, 1, 3),
    ]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustHaveTheSameLedger, TR::Ok, TR::Ok]);
    assert!(h.xfer(10).is_none());
    assert_eq!(h.balances(1), (0, 0, 0, 3));
    assert_eq!(h.balances(2), (0, 2, 0, 0));
    assert_eq!(h.balances(4), (0, 3, 0, 2));

    // And the other way round.
    let r = h.transfers(&[
        linked(transfer(20, 1, 2, 1)),
        transfer(21, 1, 2, 1),
        linked(transfer(22, 2, 4, 2)),
        transfer(23, 4, 4, 3),
    ]);
    assert_eq!(r, vec![TR::Ok, TR::Ok, TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    assert_eq!(h.balances(2), (0, 2, 0, 2));
}

#[test]
fn chain_of_one_unlinked_event_is_independent() {
    let mut h = setup();
    let r =
        h.transfers(&[transfer(10, 1, 1, 1), linked(transfer(11, 1, 2, 1)), transfer(12, 1, 2, 1)]);
    assert_eq!(r, vec![TR::AccountsMustBeDifferent, TR::Ok, TR::Ok]);
}

#[test]
fn events_of_a_chain_see_earlier_events_and_are_rolled_back_together() {
    let mut h = setup();
    // 10 funds account 5, 11 spends it: only possible because 11 sees 10.
    let r = h.transfers(&[linked(transfer(10, 2, 5, 10)), transfer(11, 5, 2, 10)]);
    assert_eq!(r, vec![TR::Ok, TR::Ok]);
    // Same again, but the chain fails at its end: account 5 must be as before.
    let r = h.transfers(&[
        linked(transfer(12, 2, 5, 10)),
        linked(transfer(13, 5, 2, 10)),
        transfer(14, 5, 2, 1),
    ]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::LinkedEventFailed, TR::ExceedsCredits]);
    assert_eq!(h.balances(5), (0, 10, 0, 10));
    assert_eq!(h.balances(2), (0, 10, 0, 10));
}

#[test]
fn rollback_of_accounts() {
    let mut h = Harness::new();
    let r = h.accounts(&[
        linked_account(account(1, 1)),
        linked_account(account(2, 1)),
        account(3, 0),
        account(4, 1),
    ]);
    assert_eq!(
        r,
        vec![AR::LinkedEventFailed, AR::LinkedEventFailed, AR::LedgerMustNotBeZero, AR::Ok]
    );
    assert!(!h.account_exists(1) && !h.account_exists(2) && !h.account_exists(3));
    assert!(h.account_exists(4));
    assert!(h.ledger.query_accounts(&QueryFilter::default()).iter().all(|a| a.id == 4));
}

#[test]
fn rolled_back_account_can_be_created_later_in_the_same_batch() {
    let mut h = Harness::new();
    let r = h.accounts(&[linked_account(account(1, 1)), account(2, 0), account(1, 1)]);
    assert_eq!(r, vec![AR::LinkedEventFailed, AR::LedgerMustNotBeZero, AR::Ok]);
    assert_eq!(h.acct(1).timestamp, h.last_batch, "its own timestamp, not the rolled-back one");
}

#[test]
fn rolled_back_transfer_can_be_created_later_in_the_same_batch() {
    let mut h = setup();
    let r =
        h.transfers(&[linked(transfer(10, 1, 2, 5)), transfer(11, 1, 1, 1), transfer(10, 1, 2, 5)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent, TR::Ok]);
    assert_eq!(h.xfer(10).unwrap().timestamp, h.last_batch);
    assert_eq!(h.balances(1), (0, 5, 0, 0));
    assert_eq!(h.account_transfers(1).len(), 1);
}

#[test]
fn account_chain_open() {
    let mut h = Harness::new();
    let r =
        h.accounts(&[account(1, 1), linked_account(account(2, 1)), linked_account(account(3, 1))]);
    assert_eq!(r, vec![AR::Ok, AR::LinkedEventFailed, AR::LinkedEventChainOpen]);
    assert!(h.account_exists(1) && !h.account_exists(2) && !h.account_exists(3));
}

#[test]
fn rollback_of_pending_state_and_balances() {
    let mut h = setup();
    h.ok_transfers(&[pending(10, 1, 2, 10)]);
    let before = h.snapshot();
    let r = h.transfers(&[linked(post(11, 10, 4)), transfer(12, 1, 1, 1)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    h.assert_unchanged(&before);
    assert_eq!(h.state(10), Some(PendingState::Pending));
    assert_eq!(h.balances(1), (10, 0, 0, 0));
    // The pending transfer can still be voided.
    h.expect_transfer(void(13, 10), TR::Ok);
}

#[test]
fn rollback_of_a_created_pending_transfer_and_its_expiry() {
    let mut h = setup();
    let r = h.transfers(&[linked(pending_timeout(10, 1, 2, 10, 1)), transfer(11, 1, 1, 1)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    assert_eq!(h.state(10), None);
    let later = h.last_batch + 10 * NS;
    assert_eq!(h.pulse(later), 0, "a rolled-back pending transfer does not expire");
    assert_eq!(h.balances(1), (0, 0, 0, 0));
}

#[test]
fn rollback_of_closing() {
    let mut h = setup();
    let closing =
        transfer_flags(10, 1, 2, 0, TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT);
    let r = h.transfers(&[linked(closing), transfer(11, 1, 1, 1)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    assert!(!h.is_closed(1));
    h.expect_transfer(transfer(12, 1, 2, 1), TR::Ok);
}

#[test]
fn rollback_of_reopening() {
    let mut h = setup();
    h.ok_transfers(&[transfer_flags(
        10,
        1,
        2,
        0,
        TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
    )]);
    assert!(h.is_closed(1));
    let r = h.transfers(&[linked(void(11, 10)), transfer(12, 1, 1, 1)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    assert!(h.is_closed(1));
    assert_eq!(h.state(10), Some(PendingState::Pending));
}

#[test]
fn closing_in_a_chain_affects_later_events_of_the_chain() {
    let mut h = setup();
    let closing =
        transfer_flags(10, 1, 2, 0, TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT);
    let r = h.transfers(&[linked(closing), transfer(11, 1, 4, 1)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::DebitAccountAlreadyClosed]);
    assert!(!h.is_closed(1));
    // The failing event's id stays failed.
    h.assert_id_failed(transfer(11, 1, 4, 1));
}

#[test]
fn rollback_of_history() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 2, 1, 5)]);
    assert_eq!(h.history(1).len(), 1);
    let r = h.transfers(&[
        linked(transfer(11, 1, 2, 1)),
        linked(pending(12, 2, 1, 1)),
        transfer(13, 1, 1, 1),
    ]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    assert_eq!(h.history(1).len(), 1);
    h.ok_transfers(&[transfer(11, 1, 2, 1)]);
    let history = h.history(1);
    assert_eq!(history.len(), 2);
    assert_eq!(history[1], ((0, 1, 0, 5), h.last_batch));
}

#[test]
fn failed_id_of_the_failing_event_survives_rollback() {
    let mut h = setup();
    let r = h.transfers(&[
        linked(transfer(10, 1, 2, 1)),
        linked(transfer(11, 5, 2, 1)),
        transfer(12, 1, 2, 1),
    ]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::ExceedsCredits, TR::LinkedEventFailed]);
    // 11 failed transiently: burnt. 10 and 12 were only linked_event_failed: free.
    h.assert_id_failed(transfer(11, 2, 1, 1));
    h.expect_transfer(transfer(10, 1, 2, 1), TR::Ok);
    h.expect_transfer(transfer(12, 1, 2, 1), TR::Ok);
}

#[test]
fn non_transient_failure_in_a_chain_records_nothing() {
    let mut h = setup();
    let r = h.transfers(&[linked(transfer(10, 1, 2, 1)), transfer(11, 1, 3, 1)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustHaveTheSameLedger]);
    h.ok_transfers(&[transfer(10, 1, 2, 1), transfer(11, 1, 2, 1)]);
}

#[test]
fn timestamps_of_rolled_back_events_are_not_reused() {
    let mut h = setup();
    let t = h.next_timestamp(3) + 50;
    let r = h.transfers_at(
        t,
        &[linked(transfer(10, 1, 2, 1)), transfer(11, 1, 1, 1), transfer(12, 1, 2, 1)],
    );
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent, TR::Ok]);
    assert_eq!(h.xfer(12).unwrap().timestamp, t);
    h.ok_transfers(&[transfer(10, 1, 2, 1)]);
    assert!(h.xfer(10).unwrap().timestamp > t);
    assert_eq!(h.ledger.commit_timestamp(), h.last_batch);
}

#[test]
fn chain_spanning_post_of_a_pending_created_in_the_chain() {
    let mut h = setup();
    let r = h.transfers(&[
        linked(pending(10, 1, 2, 10)),
        linked(post(11, 10, 4)),
        transfer(12, 1, 1, 1),
    ]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    assert!(h.xfer(10).is_none() && h.xfer(11).is_none());
    assert_eq!(h.state(10), None);
    assert_eq!(h.balances(1), (0, 0, 0, 0));
    let r = h.transfers(&[linked(pending(10, 1, 2, 10)), post(11, 10, 4)]);
    assert_eq!(r, vec![TR::Ok, TR::Ok]);
    assert_eq!(h.balances(1), (0, 4, 0, 0));
}

#[test]
fn rollback_of_balancing_and_exists_in_a_later_chain() {
    let mut h = setup();
    h.ok_transfers(&[transfer(10, 2, 1, 10)]);
    let bd = transfer_flags(11, 1, 2, 100, TransferFlags::BALANCING_DEBIT);
    let r = h.transfers(&[linked(bd), transfer(12, 1, 1, 1)]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::AccountsMustBeDifferent]);
    assert_eq!(h.balances(1), (0, 0, 0, 10));
    h.expect_transfer(bd, TR::Ok);
    assert_eq!(h.xfer(11).unwrap().amount, 10);
}

#[test]
fn linked_imported_chain_rolls_back() {
    let mut h = Harness::new();
    let r = h.accounts_at(1_000, &[imported_account(1, 100), imported_account(2, 200)]);
    assert_eq!(r, vec![AR::Ok, AR::Ok]);
    let r = h.transfers(&[
        linked(imported_transfer(10, 1, 2, 5, 300)),
        imported_transfer(11, 1, 2, 5, 300),
    ]);
    assert_eq!(r, vec![TR::LinkedEventFailed, TR::ImportedEventTimestampMustNotRegress]);
    assert!(h.xfer(10).is_none());
    // The rolled-back transfer's timestamp is free again.
    h.expect_transfer(imported_transfer(10, 1, 2, 5, 300), TR::Ok);
}
