//! A ledger whose transfer records live in a file behaves exactly like one that keeps
//! them in memory: same results, same digest, same queries, across many flushes of the
//! file's tail and rollbacks of linked chains that reach back across a flush.
//! Seed: `SETTLE_SEED` (printed on failure).

use settle_ledger::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn file_backed_transfers_behave_like_in_memory_ones() {
    let seed: u64 = std::env::var("SETTLE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(11);
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut memory = Ledger::default();
    let mut file = Ledger::new(MemStore::with_transfer_file(&dir.path().join("t.dat")).unwrap());
    let accounts: Vec<Account> = (1..=20)
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            flags: if id % 5 == 0 {
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
            } else {
                AccountFlags::HISTORY
            },
            ..Default::default()
        })
        .collect();
    assert_eq!(memory.create_accounts(100, &accounts), file.create_accounts(100, &accounts));
    let mut timestamp = 100;
    let mut next_id = 1u128;
    for batch_index in 0..12 {
        let size = 1 + rng.below(4000) as usize;
        let batch: Vec<Transfer> = (0..size)
            .map(|i| {
                let dr = 1 + rng.below(20) as u128;
                let cr = 1 + (dr - 1 + 1 + u128::from(rng.below(19))) % 20;
                // Long linked chains that sometimes fail late (limited accounts).
                let linked = rng.below(10) < 7 && i + 1 < size;
                next_id += 1;
                Transfer {
                    id: if rng.below(50) == 0 { next_id / 2 } else { next_id },
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: 1 + u128::from(rng.below(100)),
                    ledger: 1,
                    code: 1,
                    flags: if linked { TransferFlags::LINKED } else { TransferFlags::empty() },
                    ..Default::default()
                }
            })
            .collect();
        timestamp += 10_000;
        let expected = memory.create_transfers(timestamp, &batch).unwrap();
        let actual = file.create_transfers(timestamp, &batch).unwrap();
        assert_eq!(expected, actual, "SETTLE_SEED={seed} batch {batch_index}");
        assert_eq!(memory.digest(), file.digest(), "SETTLE_SEED={seed} batch {batch_index}");
    }
    let filter = AccountFilter { account_id: 3, limit: 500, ..Default::default() };
    assert_eq!(memory.get_account_transfers(&filter), file.get_account_transfers(&filter));
    assert_eq!(memory.get_account_balances(&filter), file.get_account_balances(&filter));
    let query =
        QueryFilter { limit: 8189, flags: QueryFilterFlags::REVERSED, ..Default::default() };
    assert_eq!(memory.query_transfers(&query), file.query_transfers(&query));
    assert!(memory.query_transfers(&query).len() > 1000, "the workload must create transfers");
}

#[test]
fn a_captured_snapshot_is_the_state_at_capture_even_if_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::new(MemStore::with_transfer_file(&dir.path().join("t.dat")).unwrap());
    let accounts: Vec<Account> =
        (1..=4).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    ledger.create_accounts(10, &accounts).unwrap();
    let batch = |first: u128, n: u128, linked_failure: bool| -> Vec<Transfer> {
        (0..n)
            .map(|i| Transfer {
                id: first + i,
                debit_account_id: 1 + i % 4,
                credit_account_id: 1 + (i + 1) % 4,
                // The last event of a failing chain names a missing account.
                amount: 1,
                ledger: 1,
                code: 1,
                flags: if linked_failure && i + 1 < n {
                    TransferFlags::LINKED
                } else {
                    TransferFlags::empty()
                },
                ..Default::default()
            })
            .map(|t| {
                if linked_failure && t.id == first + n - 1 {
                    Transfer { credit_account_id: 99, ..t }
                } else {
                    t
                }
            })
            .collect()
    };
    ledger.create_transfers(20_000, &batch(1, 8000, false)).unwrap();
    let source = ledger.snapshot_source().unwrap();
    let digest_at_capture = ledger.digest();
    // Move on: more records (flushing the tail), and a long chain that rolls back across
    // a flush of the file.
    ledger.create_transfers(40_000, &batch(10_000, 5000, false)).unwrap();
    let results = ledger.create_transfers(60_000, &batch(20_000, 6000, true)).unwrap();
    assert_eq!(results.last(), Some(&CreateTransferResult::CreditAccountNotFound));
    assert_ne!(ledger.digest(), digest_at_capture);

    let mut bytes = Vec::new();
    source.write(&mut bytes).unwrap();
    let restored =
        Ledger::read_snapshot(MemStore::default(), bytes.len() as u64, || Ok(&bytes[..])).unwrap();
    assert_eq!(restored.digest(), digest_at_capture);
}
