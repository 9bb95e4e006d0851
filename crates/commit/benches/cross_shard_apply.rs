//! One shard's state applying the records of cross-shard transactions, as a shard of
//! `settle bench --shards 2 --cross-shard-percent 100` does: transactions of 1024
//! single-transfer units, half coordinated here (this shard holds their debit sides)
//! and half by the other shard (this one holds their credit sides), 5,000 accounts
//! here. Each measured iteration applies a batch's worth of transactions: in 2PC's
//! classic form (`prepare_then_resolve`: every transaction prepared, then committed by
//! name, `ResolvePrepared`), or with the last agent (`last_agent`: those coordinated
//! here in one `DecideLast` each, after the others' votes), as the 2PC shell writes
//! them. One core, no IO; what it measures is the apply work per side that `settle
//! bench` spends on its engine and apply threads.
//!
//! Criterion reports elements/s = sides/s.
//!
//! Run: `cargo bench -p settle-commit --bench cross_shard_apply`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use settle_commit::txn::SideEntry;
use settle_commit::{Applied, Commit, Entry, Outcome, Protocol, Record, ShardState, Txn, Vote};
use settle_ledger::{Account, Ledger, MemStore, Side, SideVote, Transfer, BATCH_EVENTS_MAX};

/// Accounts on this shard (ids 1..=HERE); the other shard's are the next as many.
const HERE: u128 = 5_000;
const TXN_TRANSFERS: usize = 1024;
/// A batch of 8189 cross-shard transfers makes 8 transactions.
const TXNS_PER_ITERATION: usize = 8;
/// Iterations before the state starts over, which bounds memory.
const ITERATIONS_PER_STATE: usize = 128;

/// xorshift64*: a fixed, dependency-free stream of account picks.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn here(&mut self) -> u128 {
        1 + u128::from(self.next()) % HERE
    }
    fn there(&mut self) -> u128 {
        HERE + self.here()
    }
}

fn state_with_accounts() -> ShardState {
    let mut ledger = Ledger::new(MemStore::with_capacity(HERE as usize));
    let accounts: Vec<Account> =
        (1..=HERE).map(|id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    let mut timestamp = 0;
    for chunk in accounts.chunks(BATCH_EVENTS_MAX) {
        timestamp += chunk.len() as u64;
        let results = ledger.create_accounts(timestamp, chunk).expect("valid batch");
        assert!(results.iter().all(|r| r.is_success()));
    }
    ShardState::new(0, ledger)
}

/// A transaction of 1024 one-transfer units with ids from `first_id`: coordinated here
/// (debits here, credits on shard 1) or by shard 1.
fn txn(rng: &mut Rng, first_id: u128, coordinated_here: bool) -> Txn {
    let (transfers, placement) = (0..TXN_TRANSFERS)
        .map(|i| {
            let (debit, credit, placement) = if coordinated_here {
                (rng.here(), rng.there(), [0, 1])
            } else {
                (rng.there(), rng.here(), [1, 0])
            };
            let transfer = Transfer {
                id: first_id + i as u128,
                debit_account_id: debit,
                credit_account_id: credit,
                amount: 1,
                ledger: 1,
                code: 1,
                ..Default::default()
            };
            (transfer, placement)
        })
        .unzip();
    let unit_ends = (1..=TXN_TRANSFERS as u16).collect();
    Txn::batch(Protocol::TwoPhase, transfers, placement, unit_ends).expect("a valid transaction")
}

/// What one measured iteration works on: the shard's state, the next ids and clock.
struct Bench {
    rng: Rng,
    state: ShardState,
    iterations_left: usize,
    next_id: u128,
    clock: u64,
}

impl Bench {
    fn new() -> Bench {
        let state = state_with_accounts();
        let rng = Rng(0x5e77_1e01);
        Bench { rng, state, iterations_left: ITERATIONS_PER_STATE, next_id: 1, clock: 1 << 32 }
    }

    /// A batch's transactions (every other one coordinated here), their digests
    /// computed (the coordinator's shell names them in the resolutions; a shard on the
    /// same node shares them, as `Txn` clones do), and a fresh state now and then.
    /// Untimed.
    fn next_batch(&mut self) -> Vec<Txn> {
        if self.iterations_left == 0 {
            self.state = state_with_accounts();
            self.iterations_left = ITERATIONS_PER_STATE;
        }
        self.iterations_left -= 1;
        (0..TXNS_PER_ITERATION)
            .map(|k| {
                let txn = txn(&mut self.rng, self.next_id, k % 2 == 0);
                self.next_id += TXN_TRANSFERS as u128;
                black_box(txn.digest());
                txn
            })
            .collect()
    }

    fn prepare(&mut self, txn: &Txn) {
        self.clock += 1;
        let entry = Entry { timestamp: self.clock, record: Record::Prepare { txn: txn.clone() } };
        let applied = self.state.apply(&entry);
        debug_assert_eq!(applied, Applied::Participant(txn.id()));
        black_box(applied);
    }

    /// The last agent's write for `txn` (coordinated here), with the other shard's
    /// vote: every credit side prepared.
    fn decide_last(&mut self, txn: &Txn, votes: Vec<(u32, Vote)>) {
        self.clock += 1;
        let record = Record::DecideLast { txn: txn.clone(), votes };
        let applied = self.state.apply(&Entry { timestamp: self.clock, record });
        debug_assert_eq!(applied, Applied::DecidedHere(txn.id()));
        black_box(applied);
    }

    /// The commit, named as the 2PC shell writes it.
    fn resolve(&mut self, txn: &Txn) {
        self.clock += 1;
        let commit = Commit {
            amounts: vec![1; TXN_TRANSFERS],
            at: self.state.ledger.commit_timestamp(),
            aborted: Vec::new(),
        };
        let outcome = Outcome::Commit(commit);
        let record = Record::ResolvePrepared { txn: txn.id(), digest: txn.digest(), outcome };
        let applied = self.state.apply(&Entry { timestamp: self.clock, record });
        debug_assert_eq!(applied, Applied::Participant(txn.id()));
        black_box(applied);
    }
}

/// Shard 1's vote on a transaction coordinated here: each credit side prepared at `at`.
fn credits_prepared(at: u64) -> Vec<(u32, Vote)> {
    let entry = |i: usize| SideEntry {
        transfer: i as u16,
        side: Side::Credit,
        vote: SideVote::Prepared { amount: 1, account_ledger: 1 },
        at,
    };
    vec![(1, Vote::Sides((0..TXN_TRANSFERS).map(entry).collect()))]
}

fn cross_shard_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_shard_apply");
    group.throughput(Throughput::Elements((TXNS_PER_ITERATION * TXN_TRANSFERS) as u64));
    group.sample_size(20);
    let mut bench = Bench::new();
    let mut prepared_s = 0.0;
    let mut resolved_s = 0.0;
    let (mut decided_s, mut last_agent_s) = (0.0, 0.0);
    // As 2PC applies them today: the batch's prepares, then (after the votes and the
    // decision) its resolutions.
    group.bench_function("prepare_then_resolve/1024x8", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let txns = bench.next_batch();
                let start = Instant::now();
                txns.iter().for_each(|txn| bench.prepare(txn));
                let prepared = start.elapsed();
                let start = Instant::now();
                txns.iter().for_each(|txn| bench.resolve(txn));
                let resolved = start.elapsed();
                assert!(bench.state.participants.is_empty(), "every transaction resolved");
                prepared_s += prepared.as_secs_f64();
                resolved_s += resolved.as_secs_f64();
                elapsed += prepared + resolved;
            }
            elapsed
        });
    });
    // With the last agent: the other shard's transactions are prepared and resolved as
    // before; those coordinated here are one write each, after the others' votes.
    group.bench_function("last_agent/1024x8", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let txns = bench.next_batch();
                let (here, there): (Vec<&Txn>, Vec<&Txn>) =
                    txns.iter().partition(|txn| txn.coordinator() == 0);
                let at = bench.state.ledger.commit_timestamp();
                let votes: Vec<Vec<(u32, Vote)>> =
                    here.iter().map(|_| credits_prepared(at)).collect();
                let start = Instant::now();
                there.iter().for_each(|txn| bench.prepare(txn));
                let middle = Instant::now();
                here.iter().zip(votes).for_each(|(txn, votes)| bench.decide_last(txn, votes));
                let decided = middle.elapsed();
                there.iter().for_each(|txn| bench.resolve(txn));
                elapsed += start.elapsed();
                decided_s += decided.as_secs_f64();
                last_agent_s += start.elapsed().as_secs_f64();
                assert!(bench.state.participants.is_empty(), "every transaction resolved");
            }
            elapsed
        });
    });
    group.finish();
    let total = prepared_s + resolved_s;
    println!(
        "of prepare_then_resolve's time: prepares {:.0}%, resolutions {:.0}%",
        100.0 * prepared_s / total,
        100.0 * resolved_s / total
    );
    println!(
        "of last_agent's time: the last agent's writes (half the sides) {:.0}%",
        100.0 * decided_s / last_agent_s
    );
}

criterion_group!(benches, cross_shard_apply);
criterion_main!(benches);
