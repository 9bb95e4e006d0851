//! Queries: lookups, get_account_transfers, get_account_balances (history),
//! query_accounts and query_transfers. See SEMANTICS.md, "Queries" and "History".

mod common;
use common::*;

fn acc(id: u128, ledger: u32, code: u16, ud: (u128, u64, u32), flags: AccountFlags) -> Account {
    Account {
        user_data_128: ud.0,
        user_data_64: ud.1,
        user_data_32: ud.2,
        code,
        flags,
        ..account(id, ledger)
    }
}

fn xfer(id: u128, dr: u128, cr: u128, amount: u128, code: u16, ud: (u128, u64, u32)) -> Transfer {
    Transfer {
        user_data_128: ud.0,
        user_data_64: ud.1,
        user_data_32: ud.2,
        code,
        ..transfer(id, dr, cr, amount)
    }
}

/// Accounts (created one per batch, in id order):
/// - 1: ledger 1, code 10, user data (100, 1000, 7), history
/// - 2: ledger 1, code 20, user data (100, 2000, 7)
/// - 3: ledger 2, code 10, user data (200, 1000, 8), history
/// - 4: ledger 1, code 10, user data (0, 0, 0)
/// - 5: ledger 2, code 30, user data (200, 0, 0)
///
/// Transfers (one per batch, in id order):
/// - 10: 1 -> 2, 1, code 1, (5, 50, 500)
/// - 11: 2 -> 1, 2, code 2, (5, 60, 500)
/// - 12: 1 -> 4, 3, code 1, (6, 50, 600)
/// - 13: 4 -> 2, 4, code 2, (6, 60, 600)
/// - 14: 4 -> 1, 5, code 1, (5, 50, 600)
/// - 15: 3 -> 5, 6, code 1, (5, 0, 0), ledger 2
fn setup() -> Harness {
    let mut h = Harness::new();
    for a in [
        acc(1, 1, 10, (100, 1000, 7), AccountFlags::HISTORY),
        acc(2, 1, 20, (100, 2000, 7), AccountFlags::empty()),
        acc(3, 2, 10, (200, 1000, 8), AccountFlags::HISTORY),
        acc(4, 1, 10, (0, 0, 0), AccountFlags::empty()),
        acc(5, 2, 30, (200, 0, 0), AccountFlags::empty()),
    ] {
        h.ok_accounts(&[a]);
    }
    for t in [
        xfer(10, 1, 2, 1, 1, (5, 50, 500)),
        xfer(11, 2, 1, 2, 2, (5, 60, 500)),
        xfer(12, 1, 4, 3, 1, (6, 50, 600)),
        xfer(13, 4, 2, 4, 2, (6, 60, 600)),
        xfer(14, 4, 1, 5, 1, (5, 50, 600)),
        Transfer { ledger: 2, ..xfer(15, 3, 5, 6, 1, (5, 0, 0)) },
    ] {
        h.ok_transfers(&[t]);
    }
    // Failed transfers add nothing anywhere.
    assert_eq!(h.transfers(&[transfer(16, 1, 3, 1), transfer(17, 1, 99, 1)]).len(), 2);
    h
}

fn ids_t(transfers: &[Transfer]) -> Vec<u128> {
    transfers.iter().map(|t| t.id).collect()
}

fn ids_a(accounts: &[Account]) -> Vec<u128> {
    accounts.iter().map(|a| a.id).collect()
}

fn ts(h: &Harness, id: u128) -> u64 {
    h.xfer(id).unwrap().timestamp
}

fn af(account_id: u128) -> AccountFilter {
    AccountFilter { account_id, ..Default::default() }
}

fn transfers_of(h: &Harness, filter: AccountFilter) -> Vec<u128> {
    ids_t(&h.ledger.get_account_transfers(&filter))
}

const DEBITS: AccountFilterFlags = AccountFilterFlags::DEBITS;
const CREDITS: AccountFilterFlags = AccountFilterFlags::CREDITS;
const REVERSED: AccountFilterFlags = AccountFilterFlags::REVERSED;

// ---------------------------------------------------------------------------------------
// Lookups.
// ---------------------------------------------------------------------------------------

#[test]
fn lookup_accounts_in_request_order_skipping_missing() {
    let h = setup();
    assert_eq!(ids_a(&h.ledger.lookup_accounts(&[3, 99, 1, 0, u128::MAX, 5])), vec![3, 1, 5]);
    assert!(h.ledger.lookup_accounts(&[]).is_empty());
    assert!(h.ledger.lookup_accounts(&[98, 99]).is_empty());
    let a = h.ledger.lookup_accounts(&[2])[0];
    assert_eq!(
        a,
        Account {
            timestamp: a.timestamp,
            debits_posted: 2,
            credits_posted: 5,
            ..acc(2, 1, 20, (100, 2000, 7), AccountFlags::empty())
        }
    );
}

#[test]
fn lookup_transfers_in_request_order_skipping_missing() {
    let h = setup();
    assert_eq!(ids_t(&h.ledger.lookup_transfers(&[12, 16, 17, 10, 0, 15])), vec![12, 10, 15]);
    assert!(h.ledger.lookup_transfers(&[]).is_empty());
    let t = h.ledger.lookup_transfers(&[13])[0];
    assert_eq!(t, Transfer { timestamp: t.timestamp, ..xfer(13, 4, 2, 4, 2, (6, 60, 600)) });
}

#[test]
fn records_are_ordered_by_creation() {
    let h = setup();
    let a: Vec<u64> =
        h.ledger.lookup_accounts(&[1, 2, 3, 4, 5]).iter().map(|a| a.timestamp).collect();
    assert!(a.windows(2).all(|w| w[0] < w[1]));
    let t: Vec<u64> =
        h.ledger.lookup_transfers(&[10, 11, 12, 13, 14, 15]).iter().map(|t| t.timestamp).collect();
    assert!(t.windows(2).all(|w| w[0] < w[1]));
    assert!(a[4] < t[0]);
}

// ---------------------------------------------------------------------------------------
// get_account_transfers.
// ---------------------------------------------------------------------------------------

#[test]
fn account_transfers_debits_credits_both() {
    let h = setup();
    assert_eq!(transfers_of(&h, af(1)), vec![10, 11, 12, 14]);
    assert_eq!(transfers_of(&h, AccountFilter { flags: DEBITS, ..af(1) }), vec![10, 12]);
    assert_eq!(transfers_of(&h, AccountFilter { flags: CREDITS, ..af(1) }), vec![11, 14]);
    assert_eq!(transfers_of(&h, af(2)), vec![10, 11, 13]);
    assert_eq!(transfers_of(&h, AccountFilter { flags: DEBITS, ..af(3) }), vec![15]);
    assert_eq!(transfers_of(&h, AccountFilter { flags: CREDITS, ..af(3) }), Vec::<u128>::new());
    // Whole records, equal to lookups.
    assert_eq!(h.ledger.get_account_transfers(&af(4)), h.ledger.lookup_transfers(&[12, 13, 14]));
}

#[test]
fn account_transfers_reversed_and_limit() {
    let h = setup();
    assert_eq!(
        transfers_of(&h, AccountFilter { flags: DEBITS | CREDITS | REVERSED, ..af(1) }),
        vec![14, 12, 11, 10]
    );
    assert_eq!(transfers_of(&h, AccountFilter { limit: 2, ..af(1) }), vec![10, 11]);
    assert_eq!(
        transfers_of(&h, AccountFilter { limit: 2, flags: DEBITS | CREDITS | REVERSED, ..af(1) }),
        vec![14, 12]
    );
    assert_eq!(
        transfers_of(&h, AccountFilter { limit: 1, flags: CREDITS | REVERSED, ..af(1) }),
        vec![14]
    );
    assert_eq!(transfers_of(&h, AccountFilter { limit: 100, ..af(1) }), vec![10, 11, 12, 14]);
    assert_eq!(transfers_of(&h, AccountFilter { limit: u32::MAX, ..af(1) }), vec![10, 11, 12, 14]);
}

#[test]
fn account_transfers_user_data_and_code_filters() {
    let h = setup();
    assert_eq!(transfers_of(&h, AccountFilter { code: 1, ..af(1) }), vec![10, 12, 14]);
    assert_eq!(transfers_of(&h, AccountFilter { code: 2, ..af(1) }), vec![11]);
    assert_eq!(transfers_of(&h, AccountFilter { code: 3, ..af(1) }), Vec::<u128>::new());
    assert_eq!(transfers_of(&h, AccountFilter { user_data_128: 5, ..af(1) }), vec![10, 11, 14]);
    assert_eq!(transfers_of(&h, AccountFilter { user_data_64: 50, ..af(1) }), vec![10, 12, 14]);
    assert_eq!(transfers_of(&h, AccountFilter { user_data_32: 600, ..af(1) }), vec![12, 14]);
    assert_eq!(
        transfers_of(&h, AccountFilter { user_data_128: 5, user_data_32: 600, ..af(1) }),
        vec![14]
    );
    assert_eq!(transfers_of(&h, AccountFilter { code: 1, flags: DEBITS, ..af(1) }), vec![10, 12]);
    assert_eq!(
        transfers_of(&h, AccountFilter { code: 1, user_data_64: 60, ..af(1) }),
        Vec::<u128>::new()
    );
    assert_eq!(
        transfers_of(&h, AccountFilter { code: 2, flags: CREDITS | REVERSED, ..af(2) }),
        vec![13]
    );
}

#[test]
fn account_transfers_timestamp_range_is_inclusive() {
    let h = setup();
    let (t11, t12) = (ts(&h, 11), ts(&h, 12));
    let range = |min, max| {
        transfers_of(&h, AccountFilter { timestamp_min: min, timestamp_max: max, ..af(1) })
    };
    assert_eq!(range(t11, t12), vec![11, 12]);
    assert_eq!(range(t11 + 1, t12), vec![12]);
    assert_eq!(range(t11, t12 - 1), vec![11]);
    assert_eq!(range(t12, 0), vec![12, 14]);
    assert_eq!(range(0, t11), vec![10, 11]);
    assert_eq!(range(t12, t12), vec![12]);
    assert_eq!(range(t11 + 1, t12 - 1), Vec::<u128>::new());
    let reversed =
        AccountFilter { timestamp_min: t11, flags: DEBITS | CREDITS | REVERSED, limit: 2, ..af(1) };
    assert_eq!(transfers_of(&h, reversed), vec![14, 12]);
}

#[test]
fn account_transfers_invalid_filters_return_nothing() {
    let h = setup();
    let t11 = ts(&h, 11);
    let invalid = [
        af(0),
        af(u128::MAX),
        AccountFilter { timestamp_min: u64::MAX, ..af(1) },
        AccountFilter { timestamp_max: u64::MAX, ..af(1) },
        AccountFilter { timestamp_min: t11 + 1, timestamp_max: t11, ..af(1) },
        AccountFilter { limit: 0, ..af(1) },
        AccountFilter { flags: AccountFilterFlags::empty(), ..af(1) },
        AccountFilter { flags: REVERSED, ..af(1) },
        AccountFilter { flags: DEBITS | AccountFilterFlags::from_bits_retain(1 << 3), ..af(1) },
        AccountFilter { flags: DEBITS | AccountFilterFlags::from_bits_retain(1 << 31), ..af(1) },
        AccountFilter { reserved: [1; 58], ..af(1) },
        AccountFilter {
            reserved: {
                let mut r = [0; 58];
                r[57] = 1;
                r
            },
            ..af(1)
        },
    ];
    for filter in invalid {
        assert!(h.ledger.get_account_transfers(&filter).is_empty(), "{filter:?}");
        assert!(h.ledger.get_account_balances(&filter).is_empty(), "{filter:?}");
    }
    // min > max only matters when both are set.
    assert_eq!(
        transfers_of(&h, AccountFilter { timestamp_min: t11, timestamp_max: 0, ..af(1) }),
        vec![11, 12, 14]
    );
}

#[test]
fn account_transfers_of_unknown_or_idle_accounts_are_empty() {
    let mut h = setup();
    assert!(h.ledger.get_account_transfers(&af(99)).is_empty());
    h.ok_accounts(&[account(6, 1)]);
    assert!(h.ledger.get_account_transfers(&af(6)).is_empty());
}

#[test]
fn account_transfers_capped_at_batch_events_max() {
    let mut h = Harness::with_accounts(&[account(1, 1), account(2, 1)]);
    let batch = |first: u128, n: usize| {
        (0..n as u128).map(|i| transfer(first + i, 1, 2, 1)).collect::<Vec<_>>()
    };
    h.ok_transfers(&batch(1_000_000, BATCH_EVENTS_MAX));
    h.ok_transfers(&batch(2_000_000, 2));
    let all = h.ledger.get_account_transfers(&AccountFilter { limit: u32::MAX, ..af(1) });
    assert_eq!(all.len(), BATCH_EVENTS_MAX);
    assert_eq!(all[0].id, 1_000_000);
    let newest =
        h.ledger.get_account_transfers(&AccountFilter { flags: DEBITS | REVERSED, ..af(1) });
    assert_eq!(newest.len(), BATCH_EVENTS_MAX);
    assert_eq!(newest[0].id, 2_000_001);
    let filter = QueryFilter { limit: u32::MAX, ..Default::default() };
    assert_eq!(h.ledger.query_transfers(&filter).len(), BATCH_EVENTS_MAX);
}

// ---------------------------------------------------------------------------------------
// get_account_balances and history.
// ---------------------------------------------------------------------------------------

#[test]
fn account_balances_after_each_transfer() {
    let h = setup();
    let expected = vec![
        ((0, 1, 0, 0), ts(&h, 10)),
        ((0, 1, 0, 2), ts(&h, 11)),
        ((0, 4, 0, 2), ts(&h, 12)),
        ((0, 4, 0, 7), ts(&h, 14)),
    ];
    assert_eq!(h.history(1), expected);
    assert_eq!(h.history(3), vec![((0, 6, 0, 0), ts(&h, 15))]);
    // Reserved bytes are zero.
    assert!(h.ledger.get_account_balances(&af(1)).iter().all(|b| b.reserved == [0; 56]));
}

#[test]
fn account_balances_use_the_same_selection_as_account_transfers() {
    let h = setup();
    let select = |filter: AccountFilter| -> Vec<u64> {
        h.ledger.get_account_balances(&filter).iter().map(|b| b.timestamp).collect()
    };
    assert_eq!(select(AccountFilter { flags: DEBITS, ..af(1) }), vec![ts(&h, 10), ts(&h, 12)]);
    assert_eq!(
        select(AccountFilter { flags: CREDITS | REVERSED, ..af(1) }),
        vec![ts(&h, 14), ts(&h, 11)]
    );
    assert_eq!(
        select(AccountFilter { code: 1, ..af(1) }),
        vec![ts(&h, 10), ts(&h, 12), ts(&h, 14)]
    );
    assert_eq!(select(AccountFilter { user_data_32: 500, ..af(1) }), vec![ts(&h, 10), ts(&h, 11)]);
    assert_eq!(
        select(AccountFilter { limit: 1, flags: DEBITS | CREDITS | REVERSED, ..af(1) }),
        vec![ts(&h, 14)]
    );
    let (t11, t12) = (ts(&h, 11), ts(&h, 12));
    assert_eq!(
        select(AccountFilter { timestamp_min: t11, timestamp_max: t12, ..af(1) }),
        vec![t11, t12]
    );
}

#[test]
fn account_balances_only_for_history_accounts() {
    let h = setup();
    assert!(!h.account_transfers(2).is_empty());
    assert!(h.history(2).is_empty());
    assert!(h.history(4).is_empty());
    assert!(h.history(99).is_empty());
}

#[test]
fn history_records_pending_post_and_void() {
    let mut h = Harness::with_accounts(&[account_flags(1, AccountFlags::HISTORY), account(2, 1)]);
    h.ok_transfers(&[pending(10, 1, 2, 10)]);
    h.ok_transfers(&[post(11, 10, 4)]);
    h.ok_transfers(&[pending(12, 2, 1, 5)]);
    h.ok_transfers(&[void(13, 12)]);
    // Failures add nothing.
    assert_eq!(h.transfer1(post(14, 10, 1)), TR::PendingTransferAlreadyPosted);
    assert_eq!(h.transfer1(transfer(15, 1, 99, 1)), TR::CreditAccountNotFound);
    let expected = vec![
        ((10, 0, 0, 0), ts(&h, 10)),
        ((0, 4, 0, 0), ts(&h, 11)),
        ((0, 4, 5, 0), ts(&h, 12)),
        ((0, 4, 0, 0), ts(&h, 13)),
    ];
    assert_eq!(h.history(1), expected);
    assert_eq!(h.account_transfers(1).len(), 4);
}

#[test]
fn history_on_both_sides_of_a_transfer() {
    let mut h = Harness::with_accounts(&[
        account_flags(1, AccountFlags::HISTORY),
        account_flags(2, AccountFlags::HISTORY),
    ]);
    h.ok_transfers(&[transfer(10, 1, 2, 3), transfer(11, 1, 2, 4)]);
    assert_eq!(h.history(1), vec![((0, 3, 0, 0), ts(&h, 10)), ((0, 7, 0, 0), ts(&h, 11))]);
    assert_eq!(h.history(2), vec![((0, 0, 0, 3), ts(&h, 10)), ((0, 0, 0, 7), ts(&h, 11))]);
}

#[test]
fn history_of_imported_transfers_uses_their_timestamps() {
    let mut h = Harness::new();
    let a = Account {
        flags: AccountFlags::IMPORTED | AccountFlags::HISTORY,
        ..imported_account(1, 100)
    };
    assert_eq!(h.accounts_at(1_000, &[a, imported_account(2, 200)]), vec![AR::Ok, AR::Ok]);
    h.ok_transfers(&[imported_transfer(10, 1, 2, 3, 300), imported_transfer(11, 2, 1, 1, 400)]);
    assert_eq!(h.history(1), vec![((0, 3, 0, 0), 300), ((0, 3, 0, 1), 400)]);
}

// ---------------------------------------------------------------------------------------
// query_accounts / query_transfers.
// ---------------------------------------------------------------------------------------

fn qa(h: &Harness, filter: QueryFilter) -> Vec<u128> {
    ids_a(&h.ledger.query_accounts(&filter))
}

fn qt(h: &Harness, filter: QueryFilter) -> Vec<u128> {
    ids_t(&h.ledger.query_transfers(&filter))
}

fn q() -> QueryFilter {
    QueryFilter::default()
}

#[test]
fn query_accounts_filters() {
    let h = setup();
    assert_eq!(qa(&h, q()), vec![1, 2, 3, 4, 5]);
    assert_eq!(qa(&h, QueryFilter { ledger: 1, ..q() }), vec![1, 2, 4]);
    assert_eq!(qa(&h, QueryFilter { ledger: 2, ..q() }), vec![3, 5]);
    assert_eq!(qa(&h, QueryFilter { code: 10, ..q() }), vec![1, 3, 4]);
    assert_eq!(qa(&h, QueryFilter { user_data_128: 100, ..q() }), vec![1, 2]);
    assert_eq!(qa(&h, QueryFilter { user_data_64: 1000, ..q() }), vec![1, 3]);
    assert_eq!(qa(&h, QueryFilter { user_data_32: 8, ..q() }), vec![3]);
    assert_eq!(qa(&h, QueryFilter { ledger: 1, code: 10, ..q() }), vec![1, 4]);
    assert_eq!(qa(&h, QueryFilter { user_data_128: 200, code: 30, ..q() }), vec![5]);
    assert_eq!(qa(&h, QueryFilter { ledger: 3, ..q() }), Vec::<u128>::new());
    assert_eq!(qa(&h, QueryFilter { ledger: 2, code: 20, ..q() }), Vec::<u128>::new());
    // Whole records.
    assert_eq!(
        h.ledger.query_accounts(&QueryFilter { ledger: 2, ..q() }),
        h.ledger.lookup_accounts(&[3, 5])
    );
}

#[test]
fn query_accounts_order_limit_and_range() {
    let h = setup();
    let t = |id| h.acct(id).timestamp;
    assert_eq!(
        qa(&h, QueryFilter { flags: QueryFilterFlags::REVERSED, ..q() }),
        vec![5, 4, 3, 2, 1]
    );
    assert_eq!(qa(&h, QueryFilter { limit: 2, ..q() }), vec![1, 2]);
    assert_eq!(
        qa(&h, QueryFilter { limit: 2, flags: QueryFilterFlags::REVERSED, ..q() }),
        vec![5, 4]
    );
    assert_eq!(
        qa(&h, QueryFilter { limit: 1, ledger: 2, flags: QueryFilterFlags::REVERSED, ..q() }),
        vec![5]
    );
    assert_eq!(
        qa(&h, QueryFilter { timestamp_min: t(2), timestamp_max: t(4), ..q() }),
        vec![2, 3, 4]
    );
    assert_eq!(qa(&h, QueryFilter { timestamp_min: t(4), ..q() }), vec![4, 5]);
    assert_eq!(qa(&h, QueryFilter { timestamp_max: t(2), ..q() }), vec![1, 2]);
    assert_eq!(
        qa(&h, QueryFilter { timestamp_min: t(2) + 1, timestamp_max: t(3) - 1, ..q() }),
        Vec::<u128>::new()
    );
    let filter =
        QueryFilter { timestamp_min: t(2), ledger: 1, flags: QueryFilterFlags::REVERSED, ..q() };
    assert_eq!(qa(&h, filter), vec![4, 2]);
}

#[test]
fn query_transfers_filters_order_limit_and_range() {
    let h = setup();
    assert_eq!(qt(&h, q()), vec![10, 11, 12, 13, 14, 15]);
    assert_eq!(qt(&h, QueryFilter { ledger: 1, ..q() }), vec![10, 11, 12, 13, 14]);
    assert_eq!(qt(&h, QueryFilter { ledger: 2, ..q() }), vec![15]);
    assert_eq!(qt(&h, QueryFilter { code: 1, ..q() }), vec![10, 12, 14, 15]);
    assert_eq!(qt(&h, QueryFilter { code: 2, ledger: 2, ..q() }), Vec::<u128>::new());
    assert_eq!(qt(&h, QueryFilter { user_data_128: 5, ..q() }), vec![10, 11, 14, 15]);
    assert_eq!(qt(&h, QueryFilter { user_data_64: 60, ..q() }), vec![11, 13]);
    assert_eq!(qt(&h, QueryFilter { user_data_32: 600, ..q() }), vec![12, 13, 14]);
    assert_eq!(qt(&h, QueryFilter { user_data_128: 6, user_data_64: 60, ..q() }), vec![13]);
    assert_eq!(
        qt(&h, QueryFilter { flags: QueryFilterFlags::REVERSED, ..q() }),
        vec![15, 14, 13, 12, 11, 10]
    );
    assert_eq!(
        qt(&h, QueryFilter { limit: 3, code: 1, flags: QueryFilterFlags::REVERSED, ..q() }),
        vec![15, 14, 12]
    );
    let (t11, t13) = (ts(&h, 11), ts(&h, 13));
    assert_eq!(
        qt(&h, QueryFilter { timestamp_min: t11, timestamp_max: t13, ..q() }),
        vec![11, 12, 13]
    );
    assert_eq!(qt(&h, QueryFilter { timestamp_min: t13, ..q() }), vec![13, 14, 15]);
    assert_eq!(qt(&h, QueryFilter { timestamp_max: t11, ..q() }), vec![10, 11]);
    assert_eq!(
        h.ledger.query_transfers(&QueryFilter { ledger: 2, ..q() }),
        h.ledger.lookup_transfers(&[15])
    );
}

#[test]
fn query_invalid_filters_return_nothing() {
    let h = setup();
    let t11 = ts(&h, 11);
    let invalid = [
        QueryFilter { limit: 0, ..q() },
        QueryFilter { timestamp_min: u64::MAX, ..q() },
        QueryFilter { timestamp_max: u64::MAX, ..q() },
        QueryFilter { timestamp_min: t11 + 1, timestamp_max: t11, ..q() },
        QueryFilter { flags: QueryFilterFlags::from_bits_retain(1 << 1), ..q() },
        QueryFilter {
            flags: QueryFilterFlags::REVERSED | QueryFilterFlags::from_bits_retain(1 << 31),
            ..q()
        },
        QueryFilter { reserved: [1; 70], ..q() },
        QueryFilter {
            reserved: {
                let mut r = [0; 70];
                r[69] = 1;
                r
            },
            ..q()
        },
    ];
    for filter in invalid {
        assert!(h.ledger.query_accounts(&filter).is_empty(), "{filter:?}");
        assert!(h.ledger.query_transfers(&filter).is_empty(), "{filter:?}");
    }
    // min > max only matters when both are set.
    assert_eq!(
        qt(&h, QueryFilter { timestamp_min: t11, timestamp_max: 0, ..q() }),
        vec![11, 12, 13, 14, 15]
    );
}

#[test]
fn query_accounts_capped_at_batch_events_max() {
    let mut h = Harness::new();
    let batch =
        |first: u128, n: usize| (0..n as u128).map(|i| account(first + i, 1)).collect::<Vec<_>>();
    h.ok_accounts(&batch(1, BATCH_EVENTS_MAX));
    h.ok_accounts(&batch(100_000, 2));
    let all = h.ledger.query_accounts(&QueryFilter { limit: u32::MAX, ..q() });
    assert_eq!(all.len(), BATCH_EVENTS_MAX);
    assert_eq!(all[0].id, 1);
    assert_eq!(all[BATCH_EVENTS_MAX - 1].id, BATCH_EVENTS_MAX as u128);
    let reversed =
        h.ledger.query_accounts(&QueryFilter { flags: QueryFilterFlags::REVERSED, ..q() });
    assert_eq!(reversed.len(), BATCH_EVENTS_MAX);
    assert_eq!(reversed[0].id, 100_001);
    // The ledger has more than one batch of accounts.
    assert_eq!(h.ledger.lookup_accounts(&[100_000, 100_001]).len(), 2);
}

#[test]
fn queries_change_nothing() {
    let h = setup();
    let digest = h.ledger.digest();
    let before = h.snapshot();
    let _ = h.ledger.get_account_transfers(&af(1));
    let _ = h.ledger.get_account_balances(&af(1));
    let _ = h.ledger.query_accounts(&q());
    let _ = h.ledger.query_transfers(&q());
    let _ = h.ledger.lookup_accounts(&[1, 99]);
    let _ = h.ledger.lookup_transfers(&[10, 99]);
    assert_eq!(h.ledger.digest(), digest);
    h.assert_unchanged(&before);
}
