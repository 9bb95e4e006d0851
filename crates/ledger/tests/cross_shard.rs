//! The cross-shard hooks give the same results and the same state as one shard.
//!
//! One ledger holds every account ("single"); two ledgers hold half each (odd ids on
//! shard 0, even ids on shard 1). Every random transfer runs on the single ledger and,
//! split, either on the one shard holding both accounts or through prepare_side /
//! combine_votes / commit_side / abort_side on both (every other transfer with its
//! debit side as the last agent: prepared and, when the credit side's vote lets it,
//! committed in one pass, `prepare_and_commit_side`). After every transfer: the same
//! result, the same balances and flags, the same stored transfers (but for their
//! timestamps) and pending states; while both sides are prepared, no balance limit is
//! violated on either shard.
//!
//! Deliberately outside the generator (documented differences, see
//! `ledger/cross_shard.rs`): balancing transfers, reuse of an id whose cross-shard
//! transfer aborted, expiring timeouts, linked chains and imported events.
//!
//! Seed: `SETTLE_SEED` (default fixed); the seed is printed on failure.

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use settle_ledger::store::{PendingState, ReservationState, Store};
use settle_ledger::*;

const ACCOUNTS: u128 = 8;

#[derive(Clone, Debug)]
enum Op {
    /// A new transfer between two account ids (ids above ACCOUNTS do not exist).
    Transfer { dr: u128, cr: u128, amount: u128, pending: bool, closing: u8, ledger: u32 },
    /// Post or void an earlier transfer (by index among the transfers created so far).
    Resolve { target: usize, post: bool, amount: u128, user_data_64: u64 },
    /// Resubmit an earlier transfer unchanged.
    Retry { target: usize },
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![6 => 0u128..40, 1 => Just(AMOUNT_MAX), 1 => (u128::MAX - 50)..u128::MAX]
}

fn op() -> impl Strategy<Value = Op> {
    let account = 1..=ACCOUNTS + 1;
    prop_oneof![
        5 => (account.clone(), account, amount(), any::<bool>(), 0u8..6, prop_oneof![9 => Just(1u32), 1 => Just(2u32)])
            .prop_map(|(dr, cr, amount, pending, closing, ledger)| Op::Transfer { dr, cr, amount, pending, closing, ledger }),
        3 => (any::<usize>(), any::<bool>(), amount(), 0u64..2)
            .prop_map(|(target, post, amount, user_data_64)| Op::Resolve { target, post, amount, user_data_64 }),
        1 => any::<usize>().prop_map(|target| Op::Retry { target }),
    ]
}

fn account_flags() -> impl Strategy<Value = AccountFlags> {
    prop_oneof![
        3 => Just(AccountFlags::empty()),
        2 => Just(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        2 => Just(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        1 => Just(AccountFlags::HISTORY),
    ]
}

struct World {
    single: Ledger,
    shards: [Ledger; 2],
    /// Every transfer event submitted so far (for Resolve/Retry targets).
    submitted: Vec<Transfer>,
    next_id: u128,
    now: u64,
}

fn shard_of(account_id: u128) -> usize {
    account_id.is_multiple_of(2) as usize
}

impl World {
    fn new(flags: &[AccountFlags]) -> World {
        let accounts: Vec<Account> = (1..=ACCOUNTS)
            .map(|id| Account {
                id,
                ledger: if id == ACCOUNTS { 2 } else { 1 },
                code: 1,
                flags: flags[id as usize - 1],
                ..Default::default()
            })
            .collect();
        let mut world = World {
            single: Ledger::default(),
            shards: [Ledger::default(), Ledger::default()],
            submitted: Vec::new(),
            next_id: 1000,
            now: 1_000,
        };
        assert!(world
            .single
            .create_accounts(world.now, &accounts)
            .unwrap()
            .iter()
            .all(|r| r.is_success()));
        for (index, shard) in world.shards.iter_mut().enumerate() {
            let mine: Vec<Account> =
                accounts.iter().copied().filter(|a| shard_of(a.id) == index).collect();
            assert!(shard
                .create_accounts(world.now, &mine)
                .unwrap()
                .iter()
                .all(|r| r.is_success()));
        }
        // Fund every account both ways, so limited accounts have room.
        let mut funding = Vec::new();
        for id in 1..ACCOUNTS - 1 {
            for (dr, cr) in [(id, id + 1), (id + 1, id)] {
                funding.push(Transfer {
                    id: world.next_id,
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: 50,
                    ledger: 1,
                    code: 1,
                    ..Default::default()
                });
                world.next_id += 1;
            }
        }
        for transfer in funding {
            world.run(transfer);
        }
        world
    }

    fn event(&mut self, op: &Op) -> Transfer {
        let id = self.next_id;
        self.next_id += 1;
        match *op {
            Op::Transfer { dr, cr, amount, pending, closing, ledger } => {
                let mut flags = TransferFlags::empty();
                flags.set(TransferFlags::PENDING, pending);
                flags.set(TransferFlags::CLOSING_DEBIT, closing == 0);
                flags.set(TransferFlags::CLOSING_CREDIT, closing == 1);
                Transfer {
                    id,
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount,
                    ledger,
                    code: 1,
                    flags,
                    ..Default::default()
                }
            }
            Op::Resolve { target, post, amount, user_data_64 } => {
                let pending_id = match self.submitted.len() {
                    0 => 1,
                    n => self.submitted[target % n].id,
                };
                let flags = if post {
                    TransferFlags::POST_PENDING_TRANSFER
                } else {
                    TransferFlags::VOID_PENDING_TRANSFER
                };
                Transfer { id, pending_id, amount, user_data_64, flags, ..Default::default() }
            }
            Op::Retry { target } => match self.submitted.len() {
                0 => Transfer { id, ..Default::default() },
                n => {
                    self.next_id -= 1;
                    self.submitted[target % n]
                }
            },
        }
    }

    /// The two account ids a transfer touches: its own, or its pending transfer's.
    fn accounts_of(&self, t: &Transfer) -> (u128, u128) {
        let pv = t.flags.intersects(
            TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
        );
        if pv {
            if let Some(p) = self.single.lookup_transfers(&[t.pending_id]).first() {
                return (p.debit_account_id, p.credit_account_id);
            }
            return (1, 1); // no such pending transfer: any one shard answers the same
        }
        (t.debit_account_id, t.credit_account_id)
    }

    /// Runs `t` on the single ledger and split; returns both results.
    fn run(&mut self, t: Transfer) -> (CreateTransferResult, CreateTransferResult) {
        self.now += 10;
        let now = self.now;
        let single = self.single.create_transfers(now, &[t]).unwrap()[0];
        let (dr, cr) = self.accounts_of(&t);
        let (dr_shard, cr_shard) = (shard_of(dr), shard_of(cr));
        let split = if dr_shard == cr_shard {
            self.shards[dr_shard].create_transfers(now, &[t]).unwrap()[0]
        } else {
            // The last agent's debit side: after the credit side's vote, in one pass.
            let (debit, credit, last_agent) = if t.id.is_multiple_of(2) {
                let credit = self.shards[cr_shard].prepare_side(now - 6, &t, Side::Credit).unwrap();
                let one_pass = self.shards[dr_shard]
                    .prepare_and_commit_side(now - 5, &t, Side::Debit, credit)
                    .unwrap();
                match one_pass {
                    Some(debit) => (debit, credit, true),
                    None => {
                        let pv = TransferFlags::POST_PENDING_TRANSFER
                            | TransferFlags::VOID_PENDING_TRANSFER;
                        let more = TransferFlags::PENDING
                            | TransferFlags::CLOSING_DEBIT
                            | TransferFlags::CLOSING_CREDIT;
                        assert!(t.flags.intersects(pv | more), "one pass for {t:?}");
                        let debit = self.shards[dr_shard].prepare_side(now - 5, &t, Side::Debit);
                        (debit.unwrap(), credit, false)
                    }
                }
            } else {
                let debit = self.shards[dr_shard].prepare_side(now - 5, &t, Side::Debit).unwrap();
                let credit = self.shards[cr_shard].prepare_side(now - 5, &t, Side::Credit).unwrap();
                (debit, credit, false)
            };
            // Reservations count against limits while the decision is pending.
            self.check_limits();
            match combine_votes(debit, credit) {
                Decision::Commit { amount } => {
                    for (shard, side) in [(dr_shard, Side::Debit), (cr_shard, Side::Credit)] {
                        if last_agent && side == Side::Debit {
                            // Committed in the one pass: what is stored says so.
                            let state = self.shards[shard].side_state(t.id, side);
                            assert!(matches!(state, Some((held, ReservationState::Committed))
                                if held.amount == amount));
                            continue;
                        }
                        let resolution = self.shards[shard]
                            .commit_side(now, t.id, side, amount, now - 5)
                            .unwrap();
                        assert_eq!(resolution, SideResolution::Committed);
                        // Exactly once: a duplicate commit changes nothing.
                        let digest = self.shards[shard].digest();
                        let again =
                            self.shards[shard].commit_side(now + 1, t.id, side, amount, now - 5);
                        assert_eq!(again, Ok(SideResolution::Committed));
                        assert_eq!(self.shards[shard].digest(), digest);
                    }
                    CreateTransferResult::Ok
                }
                Decision::Abort { result } => {
                    let votes = [(dr_shard, Side::Debit, debit), (cr_shard, Side::Credit, credit)];
                    for (shard, side, vote) in votes {
                        let reserved = matches!(vote, SideVote::Prepared { .. });
                        // The last agent records the abort of its side in any case (but
                        // for a side refused because its id names a committed transfer,
                        // which the abort leaves alone, as `ShardState` expects).
                        let here = last_agent && side == Side::Debit;
                        if reserved || here || result.is_transient() {
                            let resolution =
                                self.shards[shard].abort_side(now, &t, side, result.is_transient());
                            let committed =
                                SideError::Conflict { state: ReservationState::Committed };
                            if !(here && !reserved && resolution == Err(committed)) {
                                assert_eq!(resolution, Ok(SideResolution::Aborted));
                            }
                        }
                    }
                    result
                }
                Decision::Retry => panic!("no side can be busy: transfers run one at a time"),
            }
        };
        if single == CreateTransferResult::Ok {
            self.submitted.push(t);
        }
        (single, split)
    }

    fn check_limits(&self) {
        for shard in &self.shards {
            for a in shard.lookup_accounts(&(1..=ACCOUNTS).collect::<Vec<_>>()) {
                let limited_debits = a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
                let limited_credits =
                    a.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS);
                assert!(!limited_debits || a.debits_pending + a.debits_posted <= a.credits_posted);
                assert!(
                    !limited_credits || a.credits_pending + a.credits_posted <= a.debits_posted
                );
            }
        }
    }

    fn check_same_state(&self) {
        let ids: Vec<u128> = (1..=ACCOUNTS).collect();
        for single in self.single.lookup_accounts(&ids) {
            let split = self.shards[shard_of(single.id)].lookup_accounts(&[single.id])[0];
            assert_eq!(Account { timestamp: 0, ..split }, Account { timestamp: 0, ..single });
        }
        for t in &self.submitted {
            let single = self.single.lookup_transfers(&[t.id])[0];
            let (dr, cr) = (single.debit_account_id, single.credit_account_id);
            for shard in [shard_of(dr), shard_of(cr)] {
                let split = self.shards[shard].lookup_transfers(&[t.id]);
                assert_eq!(split.len(), 1, "transfer {} on shard {shard}", t.id);
                assert_eq!(
                    Transfer { timestamp: 0, ..split[0] },
                    Transfer { timestamp: 0, ..single }
                );
                let state: Option<PendingState> = self.single.pending_state(t.id);
                assert_eq!(self.shards[shard].pending_state(t.id), state);
            }
        }
        // Conservation holds over the union of the shards.
        for ledger in [1, 2] {
            let all: Vec<Account> = self
                .shards
                .iter()
                .flat_map(|s| s.lookup_accounts(&ids))
                .filter(|a| a.ledger == ledger)
                .collect();
            let sum = |f: fn(&Account) -> u128| {
                all.iter().map(f).fold(0u128, |acc, x| acc.wrapping_add(x))
            };
            assert_eq!(sum(|a| a.debits_posted), sum(|a| a.credits_posted));
            assert_eq!(sum(|a| a.debits_pending), sum(|a| a.credits_pending));
        }
    }
}

#[test]
fn split_shards_behave_like_one_shard() {
    let seed: u64 = std::env::var("SETTLE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    let cases: u32 =
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        proptest::collection::vec(account_flags(), ACCOUNTS as usize),
        proptest::collection::vec(op(), 1..120),
    );
    let mut runner = TestRunner::new(config);
    let cross_shard_commits = std::cell::Cell::new(0usize);
    let result = runner.run(&strategy, |(flags, ops)| {
        let mut world = World::new(&flags);
        for (index, op) in ops.iter().enumerate() {
            let t = world.event(op);
            let (single, split) = world.run(t);
            prop_assert_eq!(single, split, "op {} {:?} -> {:?}", index, op, t);
            world.check_same_state();
            let (dr, cr) = world.accounts_of(&t);
            if single == CreateTransferResult::Ok && shard_of(dr) != shard_of(cr) {
                cross_shard_commits.set(cross_shard_commits.get() + 1);
            }
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("SETTLE_SEED={seed}: {error}");
    }
    let commits = cross_shard_commits.get();
    assert!(commits > 100, "the generator must commit across shards: {commits}");
}

#[test]
fn abort_before_prepare_refuses_the_late_prepare_and_prepare_is_idempotent() {
    let mut shard = Ledger::default();
    let account = Account { id: 1, ledger: 1, code: 1, ..Default::default() };
    shard.create_accounts(10, &[account]).unwrap();
    let t = Transfer {
        id: 7,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 5,
        ledger: 1,
        code: 1,
        ..Default::default()
    };
    // Presumed abort: the decision arrives first.
    assert_eq!(shard.abort_side(20, &t, Side::Debit, false), Ok(SideResolution::Aborted));
    assert_eq!(shard.prepare_side(30, &t, Side::Debit), Ok(SideVote::Aborted));
    assert_eq!(shard.lookup_accounts(&[1])[0].debits_pending, 0);

    let t = Transfer { id: 8, ..t };
    let vote = shard.prepare_side(40, &t, Side::Debit).unwrap();
    assert_eq!(vote, SideVote::Prepared { amount: 5, account_ledger: 1 });
    assert_eq!(shard.prepare_side(50, &t, Side::Debit), Ok(vote));
    assert_eq!(shard.lookup_accounts(&[1])[0].debits_pending, 5, "reserved once");
    assert_eq!(
        shard.commit_side(60, 8, Side::Debit, 6, 40),
        Err(SideError::AmountAboveReservation { reserved: 5, requested: 5 + 1 })
    );
    assert_eq!(shard.commit_side(60, 8, Side::Debit, 5, 40), Ok(SideResolution::Committed));
    assert_eq!(
        shard.abort_side(70, &t, Side::Debit, false),
        Err(SideError::Conflict { state: settle_ledger::store::ReservationState::Committed })
    );
    let account = shard.lookup_accounts(&[1])[0];
    assert_eq!((account.debits_pending, account.debits_posted), (0, 5));
    assert_eq!(shard.commit_side(80, 9, Side::Debit, 5, 40), Err(SideError::NotPrepared));
}

/// A cross-shard pending transfer with a timeout expires at each side at its deadline
/// (the agreed commit timestamp plus the timeout, the same at both sides however late
/// each side commits), except while a cross-shard post holds it; when that post aborts,
/// the side expires it at once.
#[test]
fn a_cross_shard_pending_transfer_expires_at_each_side_unless_a_post_holds_it() {
    const S: u64 = 1_000_000_000;
    let mut debit_shard = Ledger::default();
    let mut credit_shard = Ledger::default();
    let account = |id| Account { id, ledger: 1, code: 1, ..Default::default() };
    debit_shard.create_accounts(10, &[account(1)]).unwrap();
    credit_shard.create_accounts(10, &[account(2)]).unwrap();
    let pending = Transfer {
        id: 7,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 5,
        timeout: 10,
        ledger: 1,
        code: 1,
        flags: TransferFlags::PENDING,
        ..Default::default()
    };
    let sides = [(&mut debit_shard, Side::Debit, 2 * S), (&mut credit_shard, Side::Credit, 3 * S)];
    for (shard, side, commit_at) in sides {
        assert!(matches!(shard.prepare_side(S, &pending, side), Ok(SideVote::Prepared { .. })));
        assert_eq!(shard.commit_side(commit_at, 7, side, 5, 2 * S), Ok(SideResolution::Committed));
        assert_eq!(shard.next_expiry(), Some(12 * S), "the deadline: agreed commit + timeout");
    }
    // A post prepared at the debit side before the deadline holds it there...
    let post = Transfer {
        id: 8,
        pending_id: 7,
        amount: 5,
        timeout: 0,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..pending
    };
    assert!(matches!(
        debit_shard.prepare_side(11 * S, &post, Side::Debit),
        Ok(SideVote::Prepared { .. })
    ));
    // ...so the deadline passes without expiring it; the credit side expires it.
    assert_eq!(debit_shard.expire_pending_transfers(13 * S), Ok(0));
    assert_eq!(debit_shard.pending_state(7), Some(PendingState::Pending));
    assert_eq!(credit_shard.expire_pending_transfers(13 * S), Ok(1));
    assert_eq!(credit_shard.lookup_accounts(&[2])[0].credits_pending, 0);
    // The post reaches the credit side too late and is refused: the transaction aborts,
    // and the debit side, let go, expires the pending transfer at once.
    let vote = credit_shard.prepare_side(14 * S, &post, Side::Credit).unwrap();
    assert!(matches!(
        vote,
        SideVote::Rejected { result: CreateTransferResult::PendingTransferExpired, .. }
    ));
    assert_eq!(
        debit_shard.abort_side(15 * S, &post, Side::Debit, false),
        Ok(SideResolution::Aborted)
    );
    assert_eq!(debit_shard.pending_state(7), Some(PendingState::Expired));
    assert_eq!(debit_shard.lookup_accounts(&[1])[0].debits_pending, 0);
    assert_eq!(debit_shard.next_expiry(), None);
}

/// A snapshot read at `T` taken while transactions are in doubt sees exactly those that
/// commit with an agreed timestamp at or before `T`, at both sides.
#[test]
fn a_snapshot_read_sees_a_cross_shard_transfer_exactly_when_it_commits_at_or_before_its_timestamp()
{
    const S: u64 = 1_000_000_000;
    let mut shards = [Ledger::default(), Ledger::default()];
    shards[0].create_accounts(10, &[common::account(1, common::LEDGER)]).unwrap();
    shards[1].create_accounts(10, &[common::account(2, common::LEDGER)]).unwrap();
    let transfer = |id, amount, flags| Transfer {
        timeout: if flags == TransferFlags::PENDING { 1 } else { 0 },
        flags,
        ..common::transfer(id, 1, 2, amount)
    };
    // Committed before `T`, after `T`, aborted; and a pending one committed before `T`
    // whose deadline (agreed + 1 s) also falls before `T`.
    let early = transfer(10, 5, TransferFlags::empty());
    let late = transfer(11, 3, TransferFlags::empty());
    let aborted = transfer(12, 2, TransferFlags::empty());
    let pending = transfer(13, 7, TransferFlags::PENDING);
    let all = [early, late, aborted, pending];
    let sides = [(Side::Debit, 1), (Side::Credit, 2)];
    for (shard, (side, _)) in shards.iter_mut().zip(sides) {
        for (i, t) in all.iter().enumerate() {
            let vote = shard.prepare_side(S + i as u64, t, side).unwrap();
            assert!(matches!(vote, SideVote::Prepared { .. }));
        }
    }
    // The read point at `T` at both shards, with everything in doubt: the read copies
    // the accounts and the sides' reservations.
    let at = 3 * S;
    let mut seen = Vec::new();
    let mut reserved = Vec::new();
    for (shard, (side, id)) in shards.iter_mut().zip(sides) {
        shard.expire_pending_transfers(at).unwrap();
        seen.push(shard.lookup_accounts(&[id])[0]);
        let held = |t: &Transfer| shard.store().reservation(t.id, side).expect("prepared");
        reserved.push(all.map(|t| held(&t).transfer));
    }
    // The outcomes arrive after the read point; the read waits until then.
    for (shard, (side, _)) in shards.iter_mut().zip(sides) {
        shard.commit_side(at + 10, 10, side, 5, 2 * S).unwrap();
        shard.abort_side(at + 12, &aborted, side, false).unwrap();
        shard.commit_side(at + 13, 13, side, 7, 2 * S).unwrap();
        // A commit advances the shard's clock to its agreed timestamp.
        shard.commit_side(4 * S, 11, side, 3, 4 * S).unwrap();
        // A committed plain side keeps no reservation; the aborted and the pending
        // one keep theirs.
        let kept = |id| shard.store().reservation(id, side).map(|r| r.state);
        assert_eq!(kept(10), None);
        assert_eq!(kept(11), None);
        assert_eq!(kept(12), Some(ReservationState::Aborted));
        assert_eq!(kept(13), Some(ReservationState::Committed));
        assert_eq!(
            shard.side_state(10, side).map(|(_, state)| state),
            Some(ReservationState::Committed)
        );
    }
    let fates = [
        SideFate::Committed { agreed_at: 2 * S, amount: 5 },
        SideFate::Committed { agreed_at: 4 * S, amount: 3 },
        SideFate::Released,
        SideFate::Committed { agreed_at: 2 * S, amount: 7 },
    ];
    for (((shard, (side, _)), account), reserved) in
        shards.iter().zip(sides).zip(seen.iter_mut()).zip(&reserved)
    {
        for (t, fate) in reserved.iter().zip(fates) {
            shard.snapshot_side(account, t, side, at, fate);
        }
    }
    let [debit, credit] = [seen[0], seen[1]];
    assert_eq!((debit.debits_posted, debit.debits_pending), (5, 0), "early only; pending expired");
    assert_eq!((credit.credits_posted, credit.credits_pending), (5, 0));
}

/// A chain across shards may hold a transfer whose two accounts share a shard: that
/// shard commits both of its sides, one after the other, possibly after its deadline.
/// The transfer is stored once, and expires once, releasing both accounts.
#[test]
fn both_sides_of_a_pending_transfer_on_one_shard_commit_and_expire_once() {
    const S: u64 = 1_000_000_000;
    let mut shard = Ledger::default();
    let accounts = [common::account(1, common::LEDGER), common::account(2, common::LEDGER)];
    shard.create_accounts(10, &accounts).unwrap();
    let pending = common::pending_timeout(7, 1, 2, 5, 1);
    for (at, side) in [(S, Side::Debit), (S + 1, Side::Credit)] {
        assert!(matches!(shard.prepare_side(at, &pending, side), Ok(SideVote::Prepared { .. })));
    }
    // The decision arrives 3 s after the agreed timestamp, past the 1 s deadline.
    for (at, side) in [(4 * S, Side::Debit), (4 * S + 1, Side::Credit)] {
        assert_eq!(shard.commit_side(at, 7, side, 5, S + 1), Ok(SideResolution::Committed));
    }
    assert_eq!(shard.lookup_transfers(&[7]).len(), 1);
    assert_eq!(
        shard
            .get_account_transfers(&AccountFilter {
                account_id: 1,
                limit: 10,
                flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
                ..Default::default()
            })
            .len(),
        1,
        "stored once"
    );
    assert_eq!(shard.expire_pending_transfers(5 * S), Ok(1));
    assert_eq!(shard.pending_state(7), Some(PendingState::Expired));
    let accounts = shard.lookup_accounts(&[1, 2]);
    assert_eq!((accounts[0].debits_pending, accounts[1].credits_pending), (0, 0));
    assert_eq!(shard.expire_pending_transfers(6 * S), Ok(0), "once");
}

/// A transfer id names one reservation per side: a second transaction that reuses it
/// with another body, while the first is in flight, is refused there, and its abort
/// leaves the first one's reservation alone.
#[test]
fn a_reused_id_does_not_touch_the_reservation_of_the_transaction_holding_it() {
    let mut shard = Ledger::default();
    shard.create_accounts(10, &[common::account(1, common::LEDGER)]).unwrap();
    let first = common::transfer(7, 1, 2, 5);
    let reuse = Transfer { credit_account_id: 3, amount: 9, ..first };
    assert!(matches!(shard.prepare_side(20, &first, Side::Debit), Ok(SideVote::Prepared { .. })));
    assert_eq!(
        shard.prepare_side(30, &reuse, Side::Debit),
        Ok(SideVote::Rejected {
            result: CreateTransferResult::IdAlreadyFailed,
            account_ledger: None
        })
    );
    assert_eq!(shard.abort_side(40, &reuse, Side::Debit, true), Ok(SideResolution::Aborted));
    assert_eq!(shard.lookup_accounts(&[1])[0].debits_pending, 5, "the first one's reservation");
    // The first one's own retry still gets its vote, and it commits.
    assert!(matches!(shard.prepare_side(50, &first, Side::Debit), Ok(SideVote::Prepared { .. })));
    assert_eq!(shard.commit_side(60, 7, Side::Debit, 5, 20), Ok(SideResolution::Committed));
    let account = shard.lookup_accounts(&[1])[0];
    assert_eq!((account.debits_pending, account.debits_posted), (0, 5));
}

/// What a store's reservations hold follows what is in flight: a removed reservation's
/// slot is reused, a prepared post's lock on its pending transfer goes with it, and a
/// discarded scope puts back exactly what it changed.
#[test]
fn reservations_are_removed_reused_and_restored_by_a_discarded_scope() {
    use settle_ledger::store::Reservation;
    let mut store = MemStore::default();
    let reserve = |id, amount, state| Reservation {
        transfer: common::transfer(id, 1, 2, amount),
        side: Side::Debit,
        state,
    };
    let post = Reservation {
        transfer: Transfer {
            pending_id: 9,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..common::transfer(5, 1, 2, 3)
        },
        side: Side::Debit,
        state: ReservationState::Prepared,
    };
    store.set_reservation(reserve(1, 5, ReservationState::Prepared));
    store.set_reservation(reserve(2, 6, ReservationState::Prepared));
    store.set_reservation(post);
    assert_eq!(store.pending_locked_by(9), Some(5));
    store.remove_reservation(1, Side::Debit);
    store.remove_reservation(5, Side::Debit);
    assert_eq!(store.reservation(1, Side::Debit), None);
    assert_eq!(store.pending_locked_by(9), None, "the lock goes with the reservation");

    store.scope_open();
    // Into the slots the removed ones left.
    store.set_reservation(reserve(3, 7, ReservationState::Prepared));
    store.set_reservation(post);
    store.remove_reservation(2, Side::Debit);
    store.set_reservation(reserve(2, 8, ReservationState::Aborted));
    assert_eq!(store.pending_locked_by(9), Some(5));
    store.scope_close(false);
    assert_eq!(store.reservations(), vec![reserve(2, 6, ReservationState::Prepared)]);
    assert_eq!(store.pending_locked_by(9), None);

    store.set_reservation(reserve(3, 7, ReservationState::Prepared));
    store.set_reservation(reserve(4, 9, ReservationState::Committed));
    store.scope_open();
    store.remove_reservation(3, Side::Debit);
    store.scope_close(false);
    let held: Vec<(u128, u128)> =
        store.reservations().iter().map(|r| (r.transfer.id, r.transfer.amount)).collect();
    assert_eq!(held, vec![(2, 6), (3, 7), (4, 9)]);
}

/// An id held by a cross-shard side prepared here is not free for a single-shard
/// transfer; once the side commits (and drops its reservation) the id exists. A
/// single-shard transfer is never taken for a committed cross-shard side.
#[test]
fn a_prepared_side_holds_its_id_against_single_shard_transfers() {
    const S: u64 = 1_000_000_000;
    let mut shard = Ledger::default();
    let accounts = [common::account(1, common::LEDGER), common::account(3, common::LEDGER)];
    shard.create_accounts(10, &accounts).unwrap();
    // 7: 1 -> 2, account 2 on another shard.
    let cross = common::transfer(7, 1, 2, 5);
    assert!(matches!(shard.prepare_side(S, &cross, Side::Debit), Ok(SideVote::Prepared { .. })));
    let local = common::transfer(7, 1, 3, 5);
    let results = shard.create_transfers(S + 10, &[local]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::IdAlreadyFailed]);

    shard.commit_side(2 * S, 7, Side::Debit, 5, S).unwrap();
    assert_eq!(shard.store().reservation(7, Side::Debit), None, "dropped");
    assert_eq!(shard.side_state(7, Side::Debit).map(|(_, s)| s), Some(ReservationState::Committed));
    let results = shard.create_transfers(2 * S + 10, &[local]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::ExistsWithDifferentCreditAccountId]);
    // A repeated commit is answered from the stored transfer; an abort contradicts it.
    assert_eq!(shard.commit_side(3 * S, 7, Side::Debit, 5, S), Ok(SideResolution::Committed));
    assert_eq!(
        shard.abort_side(3 * S + 1, &cross, Side::Debit, false),
        Err(SideError::Conflict { state: ReservationState::Committed })
    );

    // 9: 1 -> 3 is a single-shard transfer: no side of it is held here.
    let results = shard.create_transfers(4 * S, &[common::transfer(9, 1, 3, 1)]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    assert_eq!(shard.side_state(9, Side::Debit), None);
    assert_eq!(shard.side_state(9, Side::Credit), None);
}

/// A chain across shards may hold a transfer whose two accounts both live here. While
/// its sides are prepared, the same transfer sent alone (a client's retry grouped
/// otherwise) is refused like another request under that id: the chain's commit
/// stores it, and created here too it would be posted twice.
#[test]
fn a_transfer_prepared_on_both_sides_here_is_not_created_again_by_its_retry() {
    const S: u64 = 1_000_000_000;
    let mut shard = Ledger::default();
    let accounts = [common::account(1, common::LEDGER), common::account(2, common::LEDGER)];
    shard.create_accounts(10, &accounts).unwrap();
    let chained = common::transfer(7, 1, 2, 5);
    for (at, side) in [(S, Side::Debit), (S + 1, Side::Credit)] {
        assert!(matches!(shard.prepare_side(at, &chained, side), Ok(SideVote::Prepared { .. })));
    }
    let results = shard.create_transfers(S + 10, &[chained]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::IdAlreadyFailed]);
    let before = shard.lookup_accounts(&[1, 2]);
    assert_eq!((before[0].debits_posted, before[1].credits_posted), (0, 0));

    for (at, side) in [(2 * S, Side::Debit), (2 * S + 1, Side::Credit)] {
        assert_eq!(shard.commit_side(at, 7, side, 5, S + 1), Ok(SideResolution::Committed));
    }
    let after = shard.lookup_accounts(&[1, 2]);
    assert_eq!((after[0].debits_posted, after[1].credits_posted), (5, 5), "posted once");
    assert_eq!((after[0].debits_pending, after[1].credits_pending), (0, 0));
    // Once committed, the retry finds it.
    let results = shard.create_transfers(3 * S, &[chained]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::Exists]);
}

/// A shard holding accounts 1 and 2 and pending transfer 7 (1 -> 2, amount 5), and
/// `hold`, a post or void of it in a chain across shards, prepared on both of its
/// sides here at `at` and `at + 1`.
fn pending_held_by(hold: Transfer, at: u64) -> Ledger {
    let mut shard = Ledger::default();
    let accounts = [common::account(1, common::LEDGER), common::account(2, common::LEDGER)];
    shard.create_accounts(10, &accounts).unwrap();
    let results = shard.create_transfers(at / 2, &[common::pending(7, 1, 2, 5)]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    for (at, side) in [(at, Side::Debit), (at + 1, Side::Credit)] {
        assert!(matches!(shard.prepare_side(at, &hold, side), Ok(SideVote::Prepared { .. })));
    }
    assert_eq!(shard.store().pending_locked_by(7), Some(hold.id));
    shard
}

/// A pending transfer whose two accounts live here, held by a cross-shard post
/// prepared here (its chain spans shards), is not posted or voided by a single-shard
/// request meanwhile: the held post decides it, as a busy side does across shards.
#[test]
fn a_pending_transfer_held_by_a_prepared_post_is_not_resolved_locally() {
    const S: u64 = 1_000_000_000;
    let held_post = common::post(8, 7, 5);
    let mut shard = pending_held_by(held_post, 2 * S);
    for (at, local) in [(3 * S, common::post(9, 7, 5)), (3 * S + 1, common::void(10, 7))] {
        let results = shard.create_transfers(at, &[local]).unwrap();
        assert_eq!(results, vec![CreateTransferResult::IdAlreadyFailed], "{local:?}");
    }
    assert_eq!(shard.pending_state(7), Some(PendingState::Pending));

    for (at, side) in [(4 * S, Side::Debit), (4 * S + 1, Side::Credit)] {
        assert_eq!(shard.commit_side(at, 8, side, 5, 2 * S + 1), Ok(SideResolution::Committed));
    }
    assert_eq!(shard.pending_state(7), Some(PendingState::Posted));
    let accounts = shard.lookup_accounts(&[1, 2]);
    assert_eq!((accounts[0].debits_pending, accounts[0].debits_posted), (0, 5), "posted once");
    assert_eq!((accounts[1].credits_pending, accounts[1].credits_posted), (0, 5));
    // Now the pending transfer is posted: a local void says so.
    let results = shard.create_transfers(5 * S, &[common::void(11, 7)]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::PendingTransferAlreadyPosted]);
}

/// The abort path of a held void: a single-shard post refused while the void held the
/// pending transfer burned its id; once the void aborts, the pending transfer is free
/// again, and a post under a new id posts it.
#[test]
fn a_pending_transfer_is_free_again_when_the_void_holding_it_aborts() {
    const S: u64 = 1_000_000_000;
    let held_void = common::void(8, 7);
    let mut shard = pending_held_by(held_void, 2 * S);
    let results = shard.create_transfers(3 * S, &[common::post(9, 7, 5)]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::IdAlreadyFailed]);
    for (at, side) in [(4 * S, Side::Debit), (4 * S + 1, Side::Credit)] {
        assert_eq!(shard.abort_side(at, &held_void, side, true), Ok(SideResolution::Aborted));
    }
    assert_eq!(shard.pending_state(7), Some(PendingState::Pending));
    let results = shard.create_transfers(5 * S, &[common::post(9, 7, 5)]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::IdAlreadyFailed], "burned");
    let results = shard.create_transfers(5 * S + 1, &[common::post(12, 7, 5)]).unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    let accounts = shard.lookup_accounts(&[1, 2]);
    assert_eq!((accounts[0].debits_pending, accounts[0].debits_posted), (0, 5));
    assert_eq!((accounts[1].credits_pending, accounts[1].credits_posted), (0, 5));
}
