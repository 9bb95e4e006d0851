//! The ledger alone, in memory, on the workload of record's shape: 10,000 accounts,
//! batches of 8189 single-phase transfers of amount 1 between uniformly random distinct
//! accounts (DESIGN.md, "Performance"). One core, no IO.
//!
//! Each measured iteration executes `BATCHES_PER_ITERATION` batches into a ledger that
//! already holds the transfers of earlier iterations, so lookups see a growing table as
//! in a real run (up to `PRECOMPUTED_BATCHES` batches, about a million transfers; then a
//! fresh ledger, which bounds memory). Only execution is timed. Criterion reports
//! elements/s = transfers/s.
//!
//! Run: `cargo bench -p settle-ledger --bench create_transfers`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use settle_ledger::{Account, Ledger, MemStore, Transfer, BATCH_EVENTS_MAX};

const ACCOUNT_COUNT: u128 = 10_000;
const BATCHES_PER_ITERATION: usize = 8;
const PRECOMPUTED_BATCHES: usize = 128;

/// xorshift64*: a fixed, dependency-free stream of account picks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn account(&mut self) -> u128 {
        1 + u128::from(self.next()) % ACCOUNT_COUNT
    }
}

fn ledger_with_accounts() -> Ledger {
    let mut ledger = Ledger::new(MemStore::with_capacity(ACCOUNT_COUNT as usize));
    let accounts: Vec<Account> = (1..=ACCOUNT_COUNT)
        .map(|id| Account { id, ledger: 1, code: 1, ..Default::default() })
        .collect();
    let mut timestamp = 0;
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        timestamp += chunk.len() as u64;
        let results = ledger.create_accounts(timestamp, chunk).expect("valid batch");
        assert!(results.iter().all(|r| r.is_success()));
    }
    ledger
}

fn batches(rng: &mut Rng, first_id: u128) -> Vec<Vec<Transfer>> {
    let mut id = first_id;
    (0..PRECOMPUTED_BATCHES)
        .map(|_| {
            (0..BATCH_EVENTS_MAX)
                .map(|_| {
                    let dr = rng.account();
                    let mut cr = rng.account();
                    while cr == dr {
                        cr = rng.account();
                    }
                    id += 1;
                    Transfer {
                        id,
                        debit_account_id: dr,
                        credit_account_id: cr,
                        amount: 1,
                        ledger: 1,
                        code: 1,
                        ..Default::default()
                    }
                })
                .collect()
        })
        .collect()
}

fn create_transfers(c: &mut Criterion) {
    let mut rng = Rng(0x5e77_1e00);
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements((BATCHES_PER_ITERATION * BATCH_EVENTS_MAX) as u64));
    group.sample_size(20);
    // State carried across iterations: the ledger grows as in a real run, and is
    // replaced by a fresh one when its precomputed batches run out.
    let mut ledger = ledger_with_accounts();
    let mut work = batches(&mut rng, 1).into_iter();
    let mut next_id = 1 + (PRECOMPUTED_BATCHES * BATCH_EVENTS_MAX) as u128;
    group.bench_function("create_transfers/8189x8", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                // Untimed: fetch the next batches, starting over when they run out.
                let mut chunk: Vec<Vec<Transfer>> =
                    work.by_ref().take(BATCHES_PER_ITERATION).collect();
                if chunk.len() < BATCHES_PER_ITERATION {
                    ledger = ledger_with_accounts();
                    work = batches(&mut rng, next_id).into_iter();
                    next_id += (PRECOMPUTED_BATCHES * BATCH_EVENTS_MAX) as u128;
                    chunk = work.by_ref().take(BATCHES_PER_ITERATION).collect();
                }
                let start = Instant::now();
                for batch in &chunk {
                    let timestamp = ledger.commit_timestamp() + batch.len() as u64;
                    let results = ledger.create_transfers(timestamp, batch).expect("valid batch");
                    debug_assert!(results.iter().all(|r| r.is_success()));
                    black_box(results);
                }
                elapsed += start.elapsed();
            }
            elapsed
        });
    });
    group.finish();
}

criterion_group!(benches, create_transfers);
criterion_main!(benches);
