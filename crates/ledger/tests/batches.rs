//! Batch-level behaviour: `BatchError`s change nothing, batch timestamps, the commit
//! timestamp, `next_batch_timestamp`, and the digest. See SEMANTICS.md, "Batches and
//! timestamps" and "Invariants".

mod common;
use common::*;

fn accounts(n: usize, first_id: u128) -> Vec<Account> {
    (0..n).map(|i| account(first_id + i as u128, 1)).collect()
}

/// A ledger with accounts 1, 2 and a pending transfer 10 (timeout 1 s); returns the
/// harness and the pending transfer's expiry timestamp.
fn setup() -> (Harness, u64) {
    let mut h = Harness::with_accounts(&[account(1, 1), account(2, 1)]);
    h.ok_transfers(&[pending_timeout(10, 1, 2, 10, 1)]);
    let expires_at = h.xfer(10).unwrap().timestamp + NS;
    (h, expires_at)
}

#[test]
fn too_many_events_changes_nothing() {
    let (mut h, expires_at) = setup();
    let before = h.snapshot();
    let digest = h.ledger.digest();
    let commit = h.ledger.commit_timestamp();
    let t = expires_at + 100 * NS;

    let events = accounts(BATCH_EVENTS_MAX + 1, 100);
    let r = h.try_accounts_at(t, &events);
    assert_eq!(r, Err(BatchError::TooManyEvents { count: BATCH_EVENTS_MAX + 1 }));
    let transfers: Vec<Transfer> =
        (0..BATCH_EVENTS_MAX as u128 + 1).map(|i| transfer(100 + i, 1, 2, 1)).collect();
    let r = h.try_transfers_at(t, &transfers);
    assert_eq!(r, Err(BatchError::TooManyEvents { count: BATCH_EVENTS_MAX + 1 }));

    h.assert_unchanged(&before);
    assert_eq!(h.ledger.digest(), digest);
    assert_eq!(h.ledger.commit_timestamp(), commit);
    // The rejected batch did not run expiry either.
    assert_eq!(h.state(10), Some(PendingState::Pending));
    assert_eq!(h.balances(1), (10, 0, 0, 0));
}

#[test]
fn batch_of_batch_events_max_is_accepted() {
    let mut h = Harness::new();
    let events = accounts(BATCH_EVENTS_MAX, 1);
    let r = h.accounts(&events);
    assert_eq!(r.len(), BATCH_EVENTS_MAX);
    assert!(r.iter().all(|&r| r == AR::Ok));
    assert_eq!(h.acct(1).timestamp, h.last_batch - BATCH_EVENTS_MAX as u64 + 1);
    assert_eq!(h.acct(BATCH_EVENTS_MAX as u128).timestamp, h.last_batch);
}

#[test]
fn timestamp_regressed_changes_nothing() {
    let (mut h, expires_at) = setup();
    h.set_clock(expires_at - 1_000);
    h.ok_accounts(&[account(3, 1)]);
    let commit = h.ledger.commit_timestamp();
    assert_eq!(commit, expires_at - 1_000);
    let before = h.snapshot();
    let digest = h.ledger.digest();

    // T - n must be >= commit_timestamp.
    for (t, n) in [(commit, 1), (commit - 1, 1), (commit + 1, 2), (commit + 2, 3), (0, 1)] {
        let r = h.try_accounts_at(t, &accounts(n, 100));
        assert!(matches!(r, Err(BatchError::TimestampRegressed { .. })), "T={t} n={n}: {r:?}");
        let transfers: Vec<Transfer> = (0..n as u128).map(|i| transfer(100 + i, 1, 2, 1)).collect();
        let r = h.try_transfers_at(t, &transfers);
        assert!(matches!(r, Err(BatchError::TimestampRegressed { .. })), "T={t} n={n}: {r:?}");
    }
    h.assert_unchanged(&before);
    assert_eq!(h.ledger.digest(), digest);
    assert_eq!(h.ledger.commit_timestamp(), commit);

    // The smallest valid T: events get commit + 1 ..= T.
    let r = h.transfers_at(commit + 2, &[transfer(100, 1, 2, 1), transfer(101, 1, 2, 1)]);
    assert_eq!(r, vec![TR::Ok, TR::Ok]);
    assert_eq!(h.xfer(100).unwrap().timestamp, commit + 1);
    assert_eq!(h.xfer(101).unwrap().timestamp, commit + 2);
}

#[test]
fn first_batch_on_a_fresh_ledger() {
    let mut h = Harness::new();
    assert_eq!(h.ledger.commit_timestamp(), 0);
    let r = h.try_accounts_at(0, &[account(1, 1)]);
    assert!(matches!(r, Err(BatchError::TimestampRegressed { .. })), "{r:?}");
    let r = h.try_accounts_at(1, &[account(1, 1), account(2, 1)]);
    assert!(matches!(r, Err(BatchError::TimestampRegressed { .. })), "{r:?}");
    assert_eq!(h.accounts_at(1, &[account(1, 1)]), vec![AR::Ok]);
    assert_eq!(h.acct(1).timestamp, 1);
    assert_eq!(h.ledger.commit_timestamp(), 1);
}

#[test]
fn timestamp_out_of_range_changes_nothing() {
    let (mut h, _) = setup();
    let before = h.snapshot();
    let digest = h.ledger.digest();
    let commit = h.ledger.commit_timestamp();
    for t in [TIMESTAMP_MAX + 1, u64::MAX] {
        let r = h.try_accounts_at(t, &[account(3, 1)]);
        assert!(matches!(r, Err(BatchError::TimestampOutOfRange { .. })), "{r:?}");
        let r = h.try_transfers_at(t, &[transfer(11, 1, 2, 1)]);
        assert!(matches!(r, Err(BatchError::TimestampOutOfRange { .. })), "{r:?}");
    }
    h.assert_unchanged(&before);
    assert_eq!(h.ledger.digest(), digest);
    assert_eq!(h.ledger.commit_timestamp(), commit);
    // TIMESTAMP_MAX itself is allowed.
    assert_eq!(h.transfers_at(TIMESTAMP_MAX, &[transfer(11, 1, 2, 1)]), vec![TR::Ok]);
    assert_eq!(h.xfer(11).unwrap().timestamp, TIMESTAMP_MAX);
    assert_eq!(h.ledger.commit_timestamp(), TIMESTAMP_MAX);
    // The pending transfer expired at the start of that batch.
    assert_eq!(h.state(10), Some(PendingState::Expired));
}

#[test]
fn empty_batch_needs_no_timestamp_check_and_returns_no_results() {
    let (mut h, _) = setup();
    let commit = h.ledger.commit_timestamp();
    assert_eq!(h.ledger.create_accounts(0, &[]), Ok(vec![]));
    assert_eq!(h.ledger.create_transfers(0, &[]), Ok(vec![]));
    assert_eq!(h.ledger.create_transfers(commit, &[]), Ok(vec![]));
    assert_eq!(h.ledger.create_accounts(u64::MAX, &[]), Ok(vec![]));
}

#[test]
fn commit_timestamp_is_the_batch_timestamp_even_when_events_fail() {
    let (mut h, _) = setup();
    let t = h.next_timestamp(2) + 12_345;
    let r = h.transfers_at(t, &[transfer(0, 1, 2, 1), transfer(11, 1, 99, 1)]);
    assert_eq!(r, vec![TR::IdMustNotBeZero, TR::CreditAccountNotFound]);
    assert_eq!(h.ledger.commit_timestamp(), t);
    // And the next batch must leave room after it.
    assert!(matches!(
        h.try_accounts_at(t, &[account(3, 1)]),
        Err(BatchError::TimestampRegressed { .. })
    ));
}

#[test]
fn next_batch_timestamp_is_valid() {
    let (mut h, _) = setup();
    let commit = h.ledger.commit_timestamp();
    for n in [1usize, 2, 10] {
        // A clock behind the commit timestamp.
        let t = h.ledger.next_batch_timestamp(0, n);
        assert!(t - n as u64 >= commit && t <= TIMESTAMP_MAX, "n={n} t={t}");
        // A clock ahead of it: used as is.
        let t = h.ledger.next_batch_timestamp(commit + 1_000_000, n);
        assert_eq!(t, commit + 1_000_000);
    }
    let t = h.ledger.next_batch_timestamp(commit, 3);
    let r = h.accounts_at(t, &accounts(3, 100));
    assert_eq!(r, vec![AR::Ok; 3]);
    // Consecutive batches at the same wall clock still advance.
    let t2 = h.ledger.next_batch_timestamp(commit, 1);
    assert!(t2 > t);
    assert_eq!(h.accounts_at(t2, &[account(200, 1)]), vec![AR::Ok]);
}

fn scripted(h: &mut Harness) {
    h.ok_accounts(&[account(1, 1), account_flags(2, AccountFlags::HISTORY), account(3, 1)]);
    h.ok_transfers(&[transfer(10, 1, 2, 5), pending_timeout(11, 2, 3, 2, 1), pending(12, 3, 1, 1)]);
    let _ = h.transfers(&[
        transfer(13, 1, 99, 1),
        linked(transfer(14, 1, 2, 1)),
        transfer(15, 1, 1, 1),
    ]);
    h.ok_transfers(&[post(16, 12, AMOUNT_MAX)]);
    h.advance(2 * NS);
    h.ok_accounts(&[account(4, 1)]);
}

#[test]
fn digest_is_deterministic() {
    let mut a = Harness::new();
    let mut b = Harness::new();
    assert_eq!(a.ledger.digest(), b.ledger.digest());
    scripted(&mut a);
    scripted(&mut b);
    assert_eq!(a.ledger.digest(), b.ledger.digest());
    // Queries do not change it.
    let digest = a.ledger.digest();
    let _ = a.ledger.query_transfers(&QueryFilter::default());
    let _ = a.ledger.get_account_balances(&AccountFilter { account_id: 2, ..Default::default() });
    let _ = a.ledger.lookup_accounts(&[1, 2, 3]);
    let _ = a.ledger.pending_state(11);
    assert_eq!(a.ledger.digest(), digest);
    // A different history gives a different digest.
    b.ok_transfers(&[transfer(20, 1, 3, 1)]);
    assert_ne!(a.ledger.digest(), b.ledger.digest());
}

#[test]
fn digest_covers_balances() {
    let mut a = Harness::with_accounts(&[account(1, 1), account(2, 1)]);
    let mut b = Harness::with_accounts(&[account(1, 1), account(2, 1)]);
    let t = a.next_timestamp(1);
    assert_eq!(a.transfers_at(t, &[transfer(10, 1, 2, 1)]), vec![TR::Ok]);
    assert_eq!(b.transfers_at(t, &[transfer(10, 1, 2, 2)]), vec![TR::Ok]);
    assert_ne!(a.ledger.digest(), b.ledger.digest());
}

#[test]
fn invariants_hold_after_a_mixed_workload() {
    let mut h = Harness::new();
    scripted(&mut h);
    h.assert_balanced(&[1, 2, 3, 4]);
    assert_eq!(h.state(11), Some(PendingState::Expired));
    assert_eq!(h.state(12), Some(PendingState::Posted));
}
