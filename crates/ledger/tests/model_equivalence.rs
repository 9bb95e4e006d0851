//! Differential test: random batch sequences run through the engine (`Ledger`) and the
//! reference model (`tests/model/`), which was written from `SEMANTICS.md` alone.
//!
//! After every batch the results must be equal event by event, every record must be
//! equal field by field, pending states must agree, and the ledger invariants must
//! hold. A coverage report counts every result code produced, and the test fails if
//! important codes were never hit (so that generators cannot silently stop exercising
//! features).
//!
//! Reproducible: `SETTLE_SEED=<u64>` picks the seed (default [`DEFAULT_SEED`]),
//! `PROPTEST_CASES=<n>` the number of cases. Failures print the seed and the concrete
//! batches that led to the mismatch. No files are written.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use settle_ledger::store::PendingState;
use settle_ledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Ledger, MemStore, Transfer,
    TransferFlags, AMOUNT_MAX, BATCH_EVENTS_MAX, TIMESTAMP_MAX,
};
use settle_model::{Model, ModelBatchError, PendingStatus};

const DEFAULT_SEED: u64 = 0x5e77_1e00_0000_0001;
const DEFAULT_CASES: u32 = 256;
const DEFAULT_DIGEST_CASES: u32 = 32;

/// The first batch's timestamp. Far in the future (~2128) so that a pending transfer
/// with `timeout = u32::MAX` seconds overflows `TIMESTAMP_MAX` (`overflows_timeout`).
const BASE_TIMESTAMP: u64 = 5_000_000_000_000_000_000;
const SECOND: u64 = 1_000_000_000;

/// Transfers name accounts 1..=ACCOUNT_IDS when they do not pick an existing one (some
/// are never created: `*_not_found`).
const ACCOUNT_IDS: u128 = 8;
/// New accounts get ids up to ACCOUNT_ID_MAX, mostly colliding ones (<= ACCOUNT_IDS).
const ACCOUNT_ID_MAX: u128 = 40;
/// Transfer ids named directly are 1..=TRANSFER_IDS, so that ids collide. Fresh ids
/// (the lowest unused one) can go above it, up to TRANSFER_ID_MAX.
const TRANSFER_IDS: u128 = 40;
const TRANSFER_ID_MAX: u128 = 400;

// ======================================================================================
// Seeds and configuration
// ======================================================================================

fn seed() -> u64 {
    match std::env::var("SETTLE_SEED") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("SETTLE_SEED={s:?} is not a u64")),
        Err(_) => DEFAULT_SEED,
    }
}

fn cases(default: u32) -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(s) => s.trim().parse().unwrap_or_else(|_| panic!("PROPTEST_CASES={s:?} is not a u32")),
        Err(_) => default,
    }
}

fn runner(seed: u64, cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    })
}

// ======================================================================================
// Batch specifications (what proptest generates and shrinks)
// ======================================================================================
//
// A spec does not hold final records: some fields are resolved against the model's
// state when the batch is built ("post the 3rd pending transfer with its exact amount",
// "reuse a failed id", "the next imported timestamp"). The model is deterministic, so
// the same spec always gives the same concrete batch, which both sides then receive.

#[derive(Clone, Debug)]
struct Case {
    setup: Vec<AccountSpec>,
    batches: Vec<BatchSpec>,
}

#[derive(Clone, Debug)]
struct BatchSpec {
    timing: Timing,
    imported: bool,
    op: Op,
}

/// How the batch timestamp advances past the previous one.
#[derive(Clone, Debug)]
enum Timing {
    /// `T - n == commit_timestamp`.
    Minimal,
    Nanos(u64),
    Seconds(u64, u64),
    /// `T - n < commit_timestamp`: the whole batch is refused.
    Regressed(u64),
    /// `T > TIMESTAMP_MAX`: the whole batch is refused.
    OutOfRange(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Accounts(Vec<AccountSpec>),
    Transfers(Vec<TransferSpec>),
    /// `expire_pending_transfers` without a batch.
    Pulse,
}

/// An imported event's timestamp, resolved against the existing records.
#[derive(Clone, Copy, Debug)]
enum ImportTs {
    /// One past the newest record (plus a gap): valid.
    Next(u64),
    /// Some way below the newest record: usually regresses.
    Regress(u64),
    /// Equal to the newest record of the other kind.
    EqualOther,
    /// One past the newest record of the same kind (may not postdate a newer account).
    AboveSameKind,
    Zero,
    TooBig(u64),
    /// At or after the batch timestamp.
    Advance(u64),
}

#[derive(Clone, Debug)]
struct AccountSpec {
    kind: AccountKind,
    linked: bool,
    ts: ImportTs,
    fault: Option<AccountFault>,
}

#[derive(Clone, Debug)]
enum AccountKind {
    New {
        id: u128,
        ledger: u32,
        code: u16,
        user_data: (u128, u64, u32),
        debits_must_not_exceed_credits: bool,
        credits_must_not_exceed_debits: bool,
        history: bool,
        closed: bool,
    },
    /// Resend an existing account (by index among existing ones), maybe with one change.
    Retry { index: usize, change: Option<u8> },
}

#[derive(Clone, Copy, Debug)]
enum AccountFault {
    ReservedField,
    ReservedFlag(u8),
    IdZero,
    IdMax,
    BothLimits,
    Balance(u8),
    LedgerZero,
    CodeZero,
    TimestampNonZero,
    ImportMismatch,
}

#[derive(Clone, Debug)]
struct TransferSpec {
    id: IdPick,
    kind: TransferKind,
    linked: bool,
    user_data: (u128, u64, u32),
    ts: ImportTs,
    fault: Option<TransferFault>,
}

#[derive(Clone, Copy, Debug)]
enum IdPick {
    /// The lowest id not used yet (by a transfer, a failed id, or this batch).
    Fresh,
    Raw(u128),
    /// An id the model recorded as failed (by index), if any.
    Failed(usize),
}

/// A transfer's debit account.
#[derive(Clone, Copy, Debug)]
enum DebitPick {
    /// The n-th existing account.
    Existing(usize),
    Raw(u128),
}

/// A transfer's credit account.
#[derive(Clone, Copy, Debug)]
enum CreditPick {
    /// The n-th other existing account on the debit account's ledger.
    SameLedger(usize),
    Raw(u128),
}

#[derive(Clone, Copy, Debug)]
enum LedgerPick {
    /// The debit account's ledger (1 if it does not exist).
    FromDebitAccount,
    Raw(u32),
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// The n-th known pending transfer (existing, or earlier in this batch).
    Pending(usize),
    Raw(u128),
}

#[derive(Clone, Copy, Debug)]
enum PostAmount {
    Exact,
    Less(u128),
    Max,
    Above(u128),
    Raw(u128),
}

#[derive(Clone, Copy, Debug)]
enum VoidAmount {
    Zero,
    Exact,
    Raw(u128),
}

/// How a post/void fills `debit_account_id`/`credit_account_id` (or `ledger`/`code`).
#[derive(Clone, Copy, Debug)]
enum FieldPick {
    Zero,
    FromPending,
    Random(u8),
}

#[derive(Clone, Debug)]
enum TransferKind {
    Single {
        dr: DebitPick,
        cr: CreditPick,
        amount: u128,
        ledger: LedgerPick,
        code: u16,
        balancing_debit: bool,
        balancing_credit: bool,
    },
    Pending {
        dr: DebitPick,
        cr: CreditPick,
        amount: u128,
        ledger: LedgerPick,
        code: u16,
        timeout: u32,
        closing_debit: bool,
        closing_credit: bool,
        balancing_debit: bool,
        balancing_credit: bool,
    },
    Post {
        target: Target,
        amount: PostAmount,
        accounts: FieldPick,
        ledger_code: FieldPick,
    },
    Void {
        target: Target,
        amount: VoidAmount,
        accounts: FieldPick,
        ledger_code: FieldPick,
    },
    /// Resend an existing transfer (by index), maybe with one change.
    Retry {
        index: usize,
        change: Option<u8>,
    },
}

#[derive(Clone, Copy, Debug)]
enum TransferFault {
    ReservedFlag(u8),
    IdZero,
    IdMax,
    DebitZero,
    DebitMax,
    CreditZero,
    CreditMax,
    SameAccounts,
    PendingIdSet(u128),
    PendingIdZero,
    PendingIdMax,
    PendingIdSelf,
    Timeout,
    Closing,
    LedgerZero,
    CodeZero,
    Exclusive(u8),
    TimestampNonZero,
    ImportMismatch,
}

// ======================================================================================
// Strategies
// ======================================================================================

/// Usually small, sometimes near `u128::MAX` (overflow codes), sometimes half of it.
fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        14 => 0u128..=20,
        4 => 0u128..=1000,
        2 => (0u128..=40).prop_map(|x| u128::MAX - x),
        2 => (0u128..=40).prop_map(|x| u128::MAX / 2 + x),
    ]
}

/// Like [`amount`], with more halves of `u128::MAX`: two of them on one account's
/// pending balance overflow it (`overflows_debits_pending`/`overflows_credits_pending`).
fn pending_amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        14 => 0u128..=20,
        4 => 0u128..=1000,
        2 => (0u128..=40).prop_map(|x| u128::MAX - x),
        5 => (0u128..=40).prop_map(|x| u128::MAX / 2 + x),
    ]
}

fn account_id() -> impl Strategy<Value = u128> {
    prop_oneof![1 => 1..=ACCOUNT_IDS, 1 => ACCOUNT_IDS + 1..=ACCOUNT_ID_MAX]
}

fn debit_pick() -> impl Strategy<Value = DebitPick> {
    prop_oneof![
        6 => any::<usize>().prop_map(DebitPick::Existing),
        1 => (1..=ACCOUNT_IDS).prop_map(DebitPick::Raw),
    ]
}

fn credit_pick() -> impl Strategy<Value = CreditPick> {
    prop_oneof![
        6 => any::<usize>().prop_map(CreditPick::SameLedger),
        1 => (1..=ACCOUNT_IDS).prop_map(CreditPick::Raw),
    ]
}

fn transfer_id() -> impl Strategy<Value = u128> {
    1..=TRANSFER_IDS
}

fn user_data() -> impl Strategy<Value = (u128, u64, u32)> {
    prop_oneof![
        3 => Just((0, 0, 0)),
        2 => (0u128..=2, 0u64..=2, 0u32..=2),
    ]
}

fn import_ts() -> impl Strategy<Value = ImportTs> {
    prop_oneof![
        30 => (0u64..=3).prop_map(ImportTs::Next),
        5 => (0u64..=6).prop_map(ImportTs::Regress),
        3 => Just(ImportTs::EqualOther),
        3 => Just(ImportTs::AboveSameKind),
        1 => Just(ImportTs::Zero),
        1 => (1u64..=3).prop_map(ImportTs::TooBig),
        1 => (0u64..=2).prop_map(ImportTs::Advance),
    ]
}

fn timing() -> impl Strategy<Value = Timing> {
    prop_oneof![
        4 => Just(Timing::Minimal),
        8 => (1u64..=5000).prop_map(Timing::Nanos),
        6 => (1u64..=4, 0u64..SECOND).prop_map(|(s, ns)| Timing::Seconds(s, ns)),
        1 => (1u64..=3).prop_map(Timing::Regressed),
        1 => (0u64..=3).prop_map(Timing::OutOfRange),
    ]
}

fn account_fault() -> impl Strategy<Value = AccountFault> {
    prop_oneof![
        Just(AccountFault::ReservedField),
        (0u8..10).prop_map(AccountFault::ReservedFlag),
        Just(AccountFault::IdZero),
        Just(AccountFault::IdMax),
        Just(AccountFault::BothLimits),
        (0u8..4).prop_map(AccountFault::Balance),
        Just(AccountFault::LedgerZero),
        Just(AccountFault::CodeZero),
        Just(AccountFault::TimestampNonZero),
        Just(AccountFault::ImportMismatch),
    ]
}

fn account_kind() -> impl Strategy<Value = AccountKind> {
    let new = (
        account_id(),
        prop_oneof![10 => 1u32..=2, 1 => 3u32..=3],
        1u16..=2,
        user_data(),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.06),
    )
        .prop_map(|(id, ledger, code, user_data, dmnec, cmned, history, closed)| {
            AccountKind::New {
                id,
                ledger,
                code,
                user_data,
                debits_must_not_exceed_credits: dmnec,
                credits_must_not_exceed_debits: cmned && !dmnec,
                history,
                closed,
            }
        });
    let retry = (any::<usize>(), prop::option::weighted(0.7, 0u8..8))
        .prop_map(|(index, change)| AccountKind::Retry { index, change });
    prop_oneof![3 => new, 1 => retry]
}

fn account_spec() -> impl Strategy<Value = AccountSpec> {
    (
        account_kind(),
        prop::bool::weighted(0.2),
        import_ts(),
        prop::option::weighted(0.15, account_fault()),
    )
        .prop_map(|(kind, linked, ts, fault)| AccountSpec { kind, linked, ts, fault })
}

/// The first batch of every case: accounts 1..=6, valid, not linked.
fn setup_accounts() -> impl Strategy<Value = Vec<AccountSpec>> {
    prop::collection::vec(account_kind(), 6).prop_map(|kinds| {
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let kind = match kind {
                    AccountKind::New {
                        ledger,
                        code,
                        user_data,
                        debits_must_not_exceed_credits,
                        credits_must_not_exceed_debits,
                        history,
                        closed,
                        ..
                    } => AccountKind::New {
                        id: i as u128 + 1,
                        ledger: if ledger == 3 { 1 } else { ledger },
                        code,
                        user_data,
                        debits_must_not_exceed_credits,
                        credits_must_not_exceed_debits,
                        history,
                        closed,
                    },
                    AccountKind::Retry { .. } => AccountKind::New {
                        id: i as u128 + 1,
                        ledger: 1,
                        code: 1,
                        user_data: (0, 0, 0),
                        debits_must_not_exceed_credits: false,
                        credits_must_not_exceed_debits: false,
                        history: false,
                        closed: false,
                    },
                };
                AccountSpec { kind, linked: false, ts: ImportTs::Next(0), fault: None }
            })
            .collect()
    })
}

fn transfer_fault() -> impl Strategy<Value = TransferFault> {
    prop_oneof![
        (0u8..7).prop_map(TransferFault::ReservedFlag),
        Just(TransferFault::IdZero),
        Just(TransferFault::IdMax),
        Just(TransferFault::DebitZero),
        Just(TransferFault::DebitMax),
        Just(TransferFault::CreditZero),
        Just(TransferFault::CreditMax),
        Just(TransferFault::SameAccounts),
        transfer_id().prop_map(TransferFault::PendingIdSet),
        Just(TransferFault::PendingIdZero),
        Just(TransferFault::PendingIdMax),
        Just(TransferFault::PendingIdSelf),
        Just(TransferFault::Timeout),
        Just(TransferFault::Closing),
        Just(TransferFault::LedgerZero),
        Just(TransferFault::CodeZero),
        (0u8..5).prop_map(TransferFault::Exclusive),
        Just(TransferFault::TimestampNonZero),
        Just(TransferFault::ImportMismatch),
    ]
}

fn ledger_pick() -> impl Strategy<Value = LedgerPick> {
    prop_oneof![12 => Just(LedgerPick::FromDebitAccount), 1 => (0u32..=3).prop_map(LedgerPick::Raw)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => any::<usize>().prop_map(Target::Pending),
        1 => transfer_id().prop_map(Target::Raw),
    ]
}

fn field_pick() -> impl Strategy<Value = FieldPick> {
    prop_oneof![
        12 => Just(FieldPick::Zero),
        4 => Just(FieldPick::FromPending),
        1 => any::<u8>().prop_map(FieldPick::Random),
    ]
}

fn timeout() -> impl Strategy<Value = u32> {
    prop_oneof![8 => Just(0u32), 8 => 1u32..=3, 1 => Just(u32::MAX)]
}

fn transfer_kind() -> impl Strategy<Value = TransferKind> {
    let single = (
        debit_pick(),
        credit_pick(),
        amount(),
        ledger_pick(),
        prop_oneof![8 => Just(1u16), 1 => Just(2u16)],
        prop::bool::weighted(0.12),
        prop::bool::weighted(0.12),
    )
        .prop_map(|(dr, cr, amount, ledger, code, balancing_debit, balancing_credit)| {
            TransferKind::Single { dr, cr, amount, ledger, code, balancing_debit, balancing_credit }
        });
    let pending = (
        (
            debit_pick(),
            credit_pick(),
            pending_amount(),
            ledger_pick(),
            prop_oneof![8 => Just(1u16), 1 => Just(2u16)],
        ),
        timeout(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.08),
        prop::bool::weighted(0.08),
    )
        .prop_map(
            |(
                (dr, cr, amount, ledger, code),
                timeout,
                closing_debit,
                closing_credit,
                balancing_debit,
                balancing_credit,
            )| TransferKind::Pending {
                dr,
                cr,
                amount,
                ledger,
                code,
                timeout,
                closing_debit,
                closing_credit,
                balancing_debit,
                balancing_credit,
            },
        );
    let post_amount = prop_oneof![
        4 => Just(PostAmount::Exact),
        3 => (1u128..=5).prop_map(PostAmount::Less),
        3 => Just(PostAmount::Max),
        1 => (1u128..=3).prop_map(PostAmount::Above),
        1 => amount().prop_map(PostAmount::Raw),
    ];
    let post = (target(), post_amount, field_pick(), field_pick()).prop_map(
        |(target, amount, accounts, ledger_code)| TransferKind::Post {
            target,
            amount,
            accounts,
            ledger_code,
        },
    );
    let void_amount = prop_oneof![
        4 => Just(VoidAmount::Zero),
        3 => Just(VoidAmount::Exact),
        1 => (0u128..=30).prop_map(VoidAmount::Raw),
    ];
    let void = (target(), void_amount, field_pick(), field_pick()).prop_map(
        |(target, amount, accounts, ledger_code)| TransferKind::Void {
            target,
            amount,
            accounts,
            ledger_code,
        },
    );
    let retry = (any::<usize>(), prop::option::weighted(0.6, 0u8..13))
        .prop_map(|(index, change)| TransferKind::Retry { index, change });
    prop_oneof![
        10 => single,
        7 => pending,
        5 => post,
        3 => void,
        2 => retry,
    ]
}

fn transfer_spec() -> impl Strategy<Value = TransferSpec> {
    (
        prop_oneof![
            10 => Just(IdPick::Fresh),
            5 => transfer_id().prop_map(IdPick::Raw),
            1 => any::<usize>().prop_map(IdPick::Failed),
        ],
        transfer_kind(),
        prop::bool::weighted(0.22),
        user_data(),
        import_ts(),
        prop::option::weighted(0.08, transfer_fault()),
    )
        .prop_map(|(id, kind, linked, user_data, ts, fault)| TransferSpec {
            id,
            kind,
            linked,
            user_data,
            ts,
            fault,
        })
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    let op = prop_oneof![
        3 => prop::collection::vec(account_spec(), 1..=4).prop_map(Op::Accounts),
        9 => prop::collection::vec(transfer_spec(), 1..=8).prop_map(Op::Transfers),
        1 => Just(Op::Pulse),
    ];
    (timing(), prop::bool::weighted(0.15), op).prop_map(|(timing, imported, op)| BatchSpec {
        timing,
        imported,
        op,
    })
}

fn case() -> impl Strategy<Value = Case> {
    (setup_accounts(), prop::collection::vec(batch_spec(), 1..=30))
        .prop_map(|(setup, batches)| Case { setup, batches })
}

// ======================================================================================
// Building concrete batches from specs
// ======================================================================================

/// A batch as both sides receive it.
#[derive(Clone, Debug)]
enum Batch {
    Accounts(u64, Vec<Account>),
    Transfers(u64, Vec<Transfer>),
    Pulse(u64),
}

/// Hands out imported timestamps, strictly increasing for `Next`.
struct ImportClock {
    newest: u64,
    newest_account: u64,
    newest_transfer: u64,
    batch_timestamp: u64,
}

impl ImportClock {
    fn new(model: &Model, batch_timestamp: u64) -> Self {
        let newest_account = model.state.accounts.values().map(|a| a.timestamp).max().unwrap_or(0);
        let newest_transfer =
            model.state.transfers.values().map(|t| t.timestamp).max().unwrap_or(0);
        ImportClock {
            newest: newest_account.max(newest_transfer),
            newest_account,
            newest_transfer,
            batch_timestamp,
        }
    }

    fn pick(&mut self, ts: ImportTs, for_account: bool) -> u64 {
        match ts {
            ImportTs::Next(gap) => {
                self.newest += 1 + gap;
                self.newest
            }
            ImportTs::Regress(back) => self.newest.saturating_sub(back),
            ImportTs::EqualOther => {
                let other = if for_account { self.newest_transfer } else { self.newest_account };
                if other == 0 {
                    self.newest + 1
                } else {
                    other
                }
            }
            ImportTs::AboveSameKind => {
                let same = if for_account { self.newest_account } else { self.newest_transfer };
                same + 1
            }
            ImportTs::Zero => 0,
            ImportTs::TooBig(x) => TIMESTAMP_MAX + x,
            ImportTs::Advance(x) => self.batch_timestamp + x,
        }
    }
}

/// The batch timestamp for `n` events: `floor + n + advance`, or a refused one.
fn batch_timestamp(model: &Model, floor: u64, n: usize, timing: &Timing, imported: bool) -> u64 {
    let n = n as u64;
    let mut advance = match *timing {
        Timing::Minimal => 0,
        Timing::Nanos(x) => x,
        Timing::Seconds(s, ns) => s * SECOND + ns,
        Timing::Regressed(x) => return (model.commit_timestamp + n).saturating_sub(x),
        Timing::OutOfRange(x) => return TIMESTAMP_MAX + 1 + x,
    };
    if imported {
        // Room below T for the imported timestamps.
        advance = advance.max(4 * n + 8);
    }
    floor + n + advance
}

fn build_accounts(model: &Model, specs: &[AccountSpec], imported: bool, t: u64) -> Vec<Account> {
    let mut clock = ImportClock::new(model, t);
    let existing: Vec<Account> = model.state.accounts.values().copied().collect();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut a = match &spec.kind {
            AccountKind::New {
                id,
                ledger,
                code,
                user_data,
                debits_must_not_exceed_credits,
                credits_must_not_exceed_debits,
                history,
                closed,
            } => {
                let mut flags = AccountFlags::empty();
                flags.set(AccountFlags::LINKED, spec.linked);
                flags.set(
                    AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    *debits_must_not_exceed_credits,
                );
                flags.set(
                    AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                    *credits_must_not_exceed_debits,
                );
                flags.set(AccountFlags::HISTORY, *history);
                flags.set(AccountFlags::CLOSED, *closed);
                Account {
                    id: *id,
                    user_data_128: user_data.0,
                    user_data_64: user_data.1,
                    user_data_32: user_data.2,
                    ledger: *ledger,
                    code: *code,
                    flags,
                    ..Account::default()
                }
            }
            AccountKind::Retry { index, change } if !existing.is_empty() => {
                let e = existing[index % existing.len()];
                let mut a = Account {
                    debits_pending: 0,
                    debits_posted: 0,
                    credits_pending: 0,
                    credits_posted: 0,
                    timestamp: 0,
                    ..e
                };
                match change {
                    Some(0) => a.flags.toggle(AccountFlags::HISTORY),
                    Some(1) => a.user_data_128 += 1,
                    Some(2) => a.user_data_64 += 1,
                    Some(3) => a.user_data_32 += 1,
                    Some(4) => a.ledger = if a.ledger == 1 { 2 } else { 1 },
                    Some(5) => a.code += 1,
                    Some(6) => a.flags.toggle(AccountFlags::CLOSED),
                    Some(_) => a.flags.toggle(AccountFlags::LINKED),
                    None => {}
                }
                a
            }
            AccountKind::Retry { .. } => {
                Account { id: 1, ledger: 1, code: 1, ..Account::default() }
            }
        };
        a.flags.set(AccountFlags::IMPORTED, imported);
        if imported {
            a.timestamp = clock.pick(spec.ts, true);
        }
        match spec.fault {
            None => {}
            Some(AccountFault::ReservedField) => a.reserved = 1,
            Some(AccountFault::ReservedFlag(bit)) => {
                a.flags |= AccountFlags::from_bits_retain(1 << (6 + bit))
            }
            Some(AccountFault::IdZero) => a.id = 0,
            Some(AccountFault::IdMax) => a.id = u128::MAX,
            Some(AccountFault::BothLimits) => {
                a.flags |= AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS
            }
            Some(AccountFault::Balance(0)) => a.debits_pending = 1,
            Some(AccountFault::Balance(1)) => a.debits_posted = 1,
            Some(AccountFault::Balance(2)) => a.credits_pending = 1,
            Some(AccountFault::Balance(_)) => a.credits_posted = 1,
            Some(AccountFault::LedgerZero) => a.ledger = 0,
            Some(AccountFault::CodeZero) => a.code = 0,
            Some(AccountFault::TimestampNonZero) => a.timestamp += 1,
            Some(AccountFault::ImportMismatch) => a.flags.toggle(AccountFlags::IMPORTED),
        }
        out.push(a);
    }
    out
}

/// What a post/void needs to know about its pending transfer while the batch is built.
#[derive(Clone, Copy)]
struct KnownPending {
    id: u128,
    amount: u128,
    dr: u128,
    cr: u128,
    ledger: u32,
    code: u16,
}

fn build_transfers(model: &Model, specs: &[TransferSpec], imported: bool, t: u64) -> Vec<Transfer> {
    let mut clock = ImportClock::new(model, t);
    let existing: Vec<Transfer> = model.state.transfers.values().copied().collect();
    let failed: Vec<u128> = model.failed_ids.iter().copied().collect();
    // Known pending transfers: existing ones, then those built earlier in this batch.
    let mut known: Vec<KnownPending> = existing
        .iter()
        .filter(|p| p.flags.contains(TransferFlags::PENDING))
        .map(|p| KnownPending {
            id: p.id,
            amount: p.amount,
            dr: p.debit_account_id,
            cr: p.credit_account_id,
            ledger: p.ledger,
            code: p.code,
        })
        .collect();
    let ledger_of = |id: u128, pick: LedgerPick| match pick {
        LedgerPick::FromDebitAccount => model.state.accounts.get(&id).map_or(1, |a| a.ledger),
        LedgerPick::Raw(l) => l,
    };
    let accounts: Vec<Account> = model.state.accounts.values().copied().collect();
    let pick_accounts = |dr: DebitPick, cr: CreditPick| -> (u128, u128) {
        let dr = match dr {
            DebitPick::Existing(i) if !accounts.is_empty() => accounts[i % accounts.len()].id,
            DebitPick::Existing(i) => (i as u128 % ACCOUNT_IDS) + 1,
            DebitPick::Raw(id) => id,
        };
        let ledger = model.state.accounts.get(&dr).map_or(1, |a| a.ledger);
        let peers: Vec<u128> =
            accounts.iter().filter(|a| a.ledger == ledger && a.id != dr).map(|a| a.id).collect();
        let cr = match cr {
            CreditPick::SameLedger(i) if !peers.is_empty() => peers[i % peers.len()],
            CreditPick::SameLedger(i) => (i as u128 % ACCOUNT_IDS) + 1,
            CreditPick::Raw(id) => id,
        };
        (dr, cr)
    };
    // Ids used so far, for `IdPick::Fresh`.
    let mut used: BTreeSet<u128> = model.state.transfers.keys().copied().collect();
    used.extend(model.failed_ids.iter().copied());
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let id = match spec.id {
            IdPick::Fresh => (1..=TRANSFER_ID_MAX).find(|id| !used.contains(id)).unwrap_or(1),
            IdPick::Failed(i) if !failed.is_empty() => failed[i % failed.len()],
            IdPick::Failed(i) => (i as u128 % TRANSFER_IDS) + 1,
            IdPick::Raw(id) => id,
        };
        used.insert(id);
        let base = Transfer {
            id,
            user_data_128: spec.user_data.0,
            user_data_64: spec.user_data.1,
            user_data_32: spec.user_data.2,
            ..Transfer::default()
        };
        let mut x = match &spec.kind {
            TransferKind::Single {
                dr,
                cr,
                amount,
                ledger,
                code,
                balancing_debit,
                balancing_credit,
            } => {
                let mut flags = TransferFlags::empty();
                flags.set(TransferFlags::BALANCING_DEBIT, *balancing_debit);
                flags.set(TransferFlags::BALANCING_CREDIT, *balancing_credit);
                let (dr, cr) = pick_accounts(*dr, *cr);
                Transfer {
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: *amount,
                    ledger: ledger_of(dr, *ledger),
                    code: *code,
                    flags,
                    ..base
                }
            }
            TransferKind::Pending {
                dr,
                cr,
                amount,
                ledger,
                code,
                timeout,
                closing_debit,
                closing_credit,
                balancing_debit,
                balancing_credit,
            } => {
                let mut flags = TransferFlags::PENDING;
                flags.set(TransferFlags::CLOSING_DEBIT, *closing_debit);
                flags.set(TransferFlags::CLOSING_CREDIT, *closing_credit);
                flags.set(TransferFlags::BALANCING_DEBIT, *balancing_debit);
                flags.set(TransferFlags::BALANCING_CREDIT, *balancing_credit);
                let (dr, cr) = pick_accounts(*dr, *cr);
                // Imported pending transfers must not time out: keep only the rare
                // `u32::MAX` (imported_event_timeout_must_be_zero).
                let timeout = if imported && *timeout != u32::MAX { 0 } else { *timeout };
                let x = Transfer {
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount: *amount,
                    ledger: ledger_of(dr, *ledger),
                    code: *code,
                    timeout,
                    flags,
                    ..base
                };
                known.push(KnownPending {
                    id,
                    amount: *amount,
                    dr,
                    cr,
                    ledger: x.ledger,
                    code: x.code,
                });
                x
            }
            TransferKind::Post { target, accounts, ledger_code, .. }
            | TransferKind::Void { target, accounts, ledger_code, .. } => {
                let p = match *target {
                    Target::Pending(i) if !known.is_empty() => known[i % known.len()],
                    Target::Pending(i) => KnownPending {
                        id: (i as u128 % TRANSFER_IDS) + 1,
                        amount: 0,
                        dr: 0,
                        cr: 0,
                        ledger: 0,
                        code: 0,
                    },
                    Target::Raw(id) => {
                        known.iter().copied().find(|p| p.id == id).unwrap_or(KnownPending {
                            id,
                            amount: 0,
                            dr: 0,
                            cr: 0,
                            ledger: 0,
                            code: 0,
                        })
                    }
                };
                let (dr, cr) = match *accounts {
                    FieldPick::Zero => (0, 0),
                    FieldPick::FromPending => (p.dr, p.cr),
                    FieldPick::Random(r) => {
                        (u128::from(r) % ACCOUNT_IDS + 1, u128::from(r / 16) % ACCOUNT_IDS + 1)
                    }
                };
                let (ledger, code) = match *ledger_code {
                    FieldPick::Zero => (0, 0),
                    FieldPick::FromPending => (p.ledger, p.code),
                    FieldPick::Random(r) => (u32::from(r % 3), u16::from(r / 4 % 3)),
                };
                let (flags, amount) = match &spec.kind {
                    TransferKind::Post { amount, .. } => (
                        TransferFlags::POST_PENDING_TRANSFER,
                        match *amount {
                            PostAmount::Exact => p.amount,
                            PostAmount::Less(d) => p.amount.saturating_sub(d),
                            PostAmount::Max => AMOUNT_MAX,
                            PostAmount::Above(d) => p.amount.saturating_add(d),
                            PostAmount::Raw(a) => a,
                        },
                    ),
                    TransferKind::Void { amount, .. } => (
                        TransferFlags::VOID_PENDING_TRANSFER,
                        match *amount {
                            VoidAmount::Zero => 0,
                            VoidAmount::Exact => p.amount,
                            VoidAmount::Raw(a) => a,
                        },
                    ),
                    _ => unreachable!(),
                };
                Transfer {
                    debit_account_id: dr,
                    credit_account_id: cr,
                    amount,
                    pending_id: p.id,
                    ledger,
                    code,
                    flags,
                    ..base
                }
            }
            TransferKind::Retry { index, change } if !existing.is_empty() => {
                let e = existing[index % existing.len()];
                let post_or_void = e.flags.contains(TransferFlags::POST_PENDING_TRANSFER)
                    || e.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
                let balancing = e.flags.contains(TransferFlags::BALANCING_DEBIT)
                    || e.flags.contains(TransferFlags::BALANCING_CREDIT);
                let mut x = Transfer { timestamp: 0, ..e };
                match change {
                    Some(0) => x.flags.toggle(TransferFlags::BALANCING_DEBIT),
                    Some(1) => x.pending_id += 1,
                    Some(2) => x.timeout += 1,
                    Some(3) => x.debit_account_id = x.debit_account_id % ACCOUNT_IDS + 1,
                    Some(4) => x.credit_account_id = x.credit_account_id % ACCOUNT_IDS + 1,
                    Some(5) if balancing => x.amount = x.amount.saturating_sub(1),
                    Some(5) => x.amount = x.amount.wrapping_add(1),
                    Some(6) => x.user_data_128 += 1,
                    Some(7) => x.user_data_64 += 1,
                    Some(8) => x.user_data_32 += 1,
                    Some(9) => x.ledger += 1,
                    Some(10) => x.code += 1,
                    Some(11) if post_or_void => {
                        // Zero fields stand for the pending transfer's: still `exists`.
                        x.debit_account_id = 0;
                        x.credit_account_id = 0;
                        x.ledger = 0;
                        x.code = 0;
                        x.user_data_128 = 0;
                        x.user_data_64 = 0;
                        x.user_data_32 = 0;
                    }
                    Some(_) if post_or_void => {
                        x.amount = if e.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
                            AMOUNT_MAX
                        } else {
                            0
                        };
                    }
                    Some(_) if balancing => x.amount = x.amount.saturating_add(7),
                    Some(_) | None => {}
                }
                x
            }
            TransferKind::Retry { .. } => Transfer {
                debit_account_id: 1,
                credit_account_id: 2,
                amount: 1,
                ledger: 1,
                code: 1,
                ..base
            },
        };
        if !matches!(spec.kind, TransferKind::Retry { .. }) {
            x.flags.set(TransferFlags::LINKED, spec.linked);
        }
        x.flags.set(TransferFlags::IMPORTED, imported);
        if imported {
            x.timestamp = clock.pick(spec.ts, false);
        }
        match spec.fault {
            None => {}
            Some(TransferFault::ReservedFlag(bit)) => {
                x.flags |= TransferFlags::from_bits_retain(1 << (9 + bit))
            }
            Some(TransferFault::IdZero) => x.id = 0,
            Some(TransferFault::IdMax) => x.id = u128::MAX,
            Some(TransferFault::DebitZero) => x.debit_account_id = 0,
            Some(TransferFault::DebitMax) => x.debit_account_id = u128::MAX,
            Some(TransferFault::CreditZero) => x.credit_account_id = 0,
            Some(TransferFault::CreditMax) => x.credit_account_id = u128::MAX,
            Some(TransferFault::SameAccounts) => x.credit_account_id = x.debit_account_id,
            Some(TransferFault::PendingIdSet(id)) => x.pending_id = id,
            Some(TransferFault::PendingIdZero) => x.pending_id = 0,
            Some(TransferFault::PendingIdMax) => x.pending_id = u128::MAX,
            Some(TransferFault::PendingIdSelf) => x.pending_id = x.id,
            Some(TransferFault::Timeout) => x.timeout = 2,
            Some(TransferFault::Closing) => x.flags |= TransferFlags::CLOSING_DEBIT,
            Some(TransferFault::LedgerZero) => x.ledger = 0,
            Some(TransferFault::CodeZero) => x.code = 0,
            Some(TransferFault::Exclusive(k)) => {
                x.flags |= match k {
                    0 => TransferFlags::PENDING | TransferFlags::POST_PENDING_TRANSFER,
                    1 => {
                        TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER
                    }
                    2 => TransferFlags::POST_PENDING_TRANSFER | TransferFlags::BALANCING_DEBIT,
                    3 => TransferFlags::VOID_PENDING_TRANSFER | TransferFlags::CLOSING_CREDIT,
                    _ => TransferFlags::PENDING | TransferFlags::VOID_PENDING_TRANSFER,
                }
            }
            Some(TransferFault::TimestampNonZero) => x.timestamp += 1,
            Some(TransferFault::ImportMismatch) => x.flags.toggle(TransferFlags::IMPORTED),
        }
        out.push(x);
    }
    out
}

// ======================================================================================
// Running a case on both sides
// ======================================================================================

/// Result codes seen across the whole run.
#[derive(Default)]
struct Coverage {
    accounts: BTreeMap<CreateAccountResult, u64>,
    transfers: BTreeMap<CreateTransferResult, u64>,
    batches: u64,
    batch_errors: u64,
    pulses: u64,
    /// Pending transfers expired by pulses.
    expired_by_pulse: u64,
    /// Pending transfers in state `expired` at the end of each case.
    expired: u64,
}

type Engine = Ledger<MemStore>;

fn status_of(state: PendingState) -> PendingStatus {
    match state {
        PendingState::Pending => PendingStatus::Pending,
        PendingState::Posted => PendingStatus::Posted,
        PendingState::Voided => PendingStatus::Voided,
        PendingState::Expired => PendingStatus::Expired,
    }
}

fn batch_error_name(e: ModelBatchError) -> &'static str {
    match e {
        ModelBatchError::TooManyEvents => "TooManyEvents",
        ModelBatchError::TimestampRegressed => "TimestampRegressed",
        ModelBatchError::TimestampOutOfRange => "TimestampOutOfRange",
    }
}

/// Compares one side's batch outcome with the other's.
fn compare_results<R: std::fmt::Debug + PartialEq, E: std::fmt::Debug, X: std::fmt::Debug>(
    events: &[X],
    model: &Result<Vec<R>, ModelBatchError>,
    engine: &Result<Vec<R>, E>,
) -> Result<(), String> {
    match (model, engine) {
        (Ok(m), Ok(e)) => {
            if m.len() != e.len() {
                return Err(format!("result count: model {} vs engine {}", m.len(), e.len()));
            }
            for (i, (m, e)) in m.iter().zip(e).enumerate() {
                if m != e {
                    return Err(format!(
                        "event #{i}: model {m:?} vs engine {e:?}\n  event: {:?}\n  all model results: {model:?}\n  all engine results: {engine:?}",
                        events[i]
                    ));
                }
            }
            Ok(())
        }
        (Err(m), Err(e)) => {
            let name = batch_error_name(*m);
            if format!("{e:?}").starts_with(name) {
                Ok(())
            } else {
                Err(format!("batch error: model {m:?} vs engine {e:?}"))
            }
        }
        _ => Err(format!("batch outcome: model {model:?} vs engine {engine:?}")),
    }
}

/// Records, pending states, commit timestamp and invariants after a batch.
fn compare_state(model: &Model, engine: &Engine) -> Result<(), String> {
    let account_ids: Vec<u128> = (0..=ACCOUNT_ID_MAX + 1).chain([u128::MAX]).collect();
    let expected: Vec<Account> =
        account_ids.iter().filter_map(|id| model.state.accounts.get(id).copied()).collect();
    let actual = engine.lookup_accounts(&account_ids);
    if expected != actual {
        for id in &account_ids {
            let m = model.state.accounts.get(id);
            let e = actual.iter().find(|a| a.id == *id);
            if m != e {
                return Err(format!("account {id}: model {m:?}\n  vs engine {e:?}"));
            }
        }
        return Err(format!("lookup_accounts: model {expected:?}\n  vs engine {actual:?}"));
    }

    let transfer_ids: Vec<u128> = (0..=TRANSFER_ID_MAX + 1).chain([u128::MAX]).collect();
    let expected: Vec<Transfer> =
        transfer_ids.iter().filter_map(|id| model.state.transfers.get(id).copied()).collect();
    let actual = engine.lookup_transfers(&transfer_ids);
    if expected != actual {
        for id in &transfer_ids {
            let m = model.state.transfers.get(id);
            let e = actual.iter().find(|t| t.id == *id);
            if m != e {
                return Err(format!("transfer {id}: model {m:?}\n  vs engine {e:?}"));
            }
        }
        return Err(format!("lookup_transfers: model {expected:?}\n  vs engine {actual:?}"));
    }

    for id in transfer_ids {
        let is_pending = model
            .state
            .transfers
            .get(&id)
            .is_some_and(|t| t.flags.contains(TransferFlags::PENDING));
        let exists = model.state.transfers.contains_key(&id);
        if is_pending || !exists {
            let m = model.pending_status(id);
            let e = engine.pending_state(id).map(status_of);
            if m != e {
                return Err(format!("pending_state({id}): model {m:?} vs engine {e:?}"));
            }
        }
    }

    if model.commit_timestamp != engine.commit_timestamp() {
        return Err(format!(
            "commit_timestamp: model {} vs engine {}",
            model.commit_timestamp,
            engine.commit_timestamp()
        ));
    }

    // Invariants, on the engine's records.
    let accounts = engine.lookup_accounts(&account_ids);
    let mut per_ledger: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for a in &accounts {
        let sums = per_ledger.entry(a.ledger).or_default();
        // Sums can exceed u128 (amounts near u128::MAX): equal sums have equal
        // wrapping sums.
        for (sum, x) in sums.iter_mut().zip([
            a.debits_posted,
            a.credits_posted,
            a.debits_pending,
            a.credits_pending,
        ]) {
            *sum = sum.wrapping_add(x);
        }
        let debits = a.debits_pending.checked_add(a.debits_posted);
        if a.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && debits.is_none_or(|d| d > a.credits_posted)
        {
            return Err(format!("invariant: debits exceed credits on {a:?}"));
        }
        let credits = a.credits_pending.checked_add(a.credits_posted);
        if a.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && credits.is_none_or(|c| c > a.debits_posted)
        {
            return Err(format!("invariant: credits exceed debits on {a:?}"));
        }
    }
    for (ledger, [dp, cp, dq, cq]) in per_ledger {
        // Every transfer adds the same amount to one debit and one credit balance of the
        // same ledger, so the (wrapping) sums match exactly.
        if dp != cp || dq != cq {
            return Err(format!(
                "invariant: ledger {ledger} posted {dp} vs {cp}, pending {dq} vs {cq}"
            ));
        }
    }
    Ok(())
}

/// Runs `f` on the engine; a panic becomes an error message.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("engine panicked in {what}: {msg}")
    })
}

/// Applies one concrete batch to both sides and compares everything.
///
/// Returns whether the batch was a create batch that ran.
fn apply(
    model: &mut Model,
    engine: &mut Engine,
    batch: &Batch,
    coverage: &mut Coverage,
) -> Result<bool, String> {
    coverage.batches += 1;
    match batch {
        Batch::Accounts(t, events) => {
            let m = model.create_accounts(*t, events);
            let e = guarded("create_accounts", || engine.create_accounts(*t, events))?;
            compare_results(events, &m, &e)?;
            match &m {
                Ok(results) => {
                    results.iter().for_each(|r| *coverage.accounts.entry(*r).or_default() += 1)
                }
                Err(_) => coverage.batch_errors += 1,
            }
            compare_state(model, engine)?;
            Ok(m.is_ok())
        }
        Batch::Transfers(t, events) => {
            let m = model.create_transfers(*t, events);
            let e = guarded("create_transfers", || engine.create_transfers(*t, events))?;
            compare_results(events, &m, &e)?;
            match &m {
                Ok(results) => {
                    results.iter().for_each(|r| *coverage.transfers.entry(*r).or_default() += 1)
                }
                Err(_) => coverage.batch_errors += 1,
            }
            compare_state(model, engine)?;
            Ok(m.is_ok())
        }
        Batch::Pulse(t) => {
            coverage.pulses += 1;
            let m = model.expire_pending_transfers(*t);
            let e = guarded("expire_pending_transfers", || engine.expire_pending_transfers(*t))?;
            match (&m, &e) {
                (Ok(m), Ok(e)) if m == e => coverage.expired_by_pulse += *m as u64,
                (Err(_), Err(_)) => {}
                _ => {
                    return Err(format!(
                        "expire_pending_transfers({t}): model {m:?} vs engine {e:?}"
                    ))
                }
            }
            compare_state(model, engine)?;
            Ok(false)
        }
    }
}

/// Builds the concrete batch for `spec`. `floor` is the lowest allowed base for the
/// next timestamp (the commit timestamp, or a later pulse's).
fn build_batch(model: &Model, floor: u64, spec: &BatchSpec) -> Batch {
    match &spec.op {
        Op::Accounts(specs) => {
            let t = batch_timestamp(model, floor, specs.len(), &spec.timing, spec.imported);
            Batch::Accounts(t, build_accounts(model, specs, spec.imported, t))
        }
        Op::Transfers(specs) => {
            let t = batch_timestamp(model, floor, specs.len(), &spec.timing, spec.imported);
            Batch::Transfers(t, build_transfers(model, specs, spec.imported, t))
        }
        Op::Pulse => Batch::Pulse(match spec.timing {
            Timing::Regressed(x) => model.commit_timestamp.saturating_sub(x),
            Timing::OutOfRange(_) => floor,
            _ => batch_timestamp(model, floor, 0, &spec.timing, false),
        }),
    }
}

/// Runs a whole case through a fresh model and engine. Returns the engine, the concrete
/// batches and the lowest base for a next batch timestamp (for the digest test).
fn run_case(case: &Case, coverage: &mut Coverage) -> Result<(Engine, Vec<Batch>, u64), String> {
    let mut model = Model::new();
    let mut engine = Ledger::new(MemStore::default());
    let mut log: Vec<Batch> = Vec::new();
    let mut floor = 0;

    let setup =
        Batch::Accounts(BASE_TIMESTAMP, build_accounts(&model, &case.setup, false, BASE_TIMESTAMP));
    let batches = std::iter::once(setup).map(Some).chain(case.batches.iter().map(|_| None));
    for (index, prebuilt) in batches.enumerate() {
        let batch = match prebuilt {
            Some(batch) => batch,
            None => build_batch(&model, floor, &case.batches[index - 1]),
        };
        log.push(batch.clone());
        let ran = apply(&mut model, &mut engine, &batch, coverage);
        if let Err(msg) = &ran {
            let mut repro = String::new();
            for (i, b) in log.iter().enumerate() {
                repro.push_str(&format!("  batch #{i}: {b:?}\n"));
            }
            return Err(format!(
                "mismatch at batch #{index}: {msg}\nbatches so far (#0 is the setup):\n{repro}"
            ));
        }
        floor = floor.max(model.commit_timestamp);
        if let Batch::Pulse(t) = batch {
            if t <= TIMESTAMP_MAX {
                floor = floor.max(t);
            }
        }
    }
    coverage.expired +=
        model.state.pending.values().filter(|p| p.status == PendingStatus::Expired).count() as u64;
    Ok((engine, log, floor))
}

/// Replays concrete batches into a fresh engine (results are not compared here).
fn replay(batches: &[Batch]) -> Engine {
    let mut engine = Ledger::new(MemStore::default());
    for batch in batches {
        match batch {
            Batch::Accounts(t, events) => {
                let _ = engine.create_accounts(*t, events);
            }
            Batch::Transfers(t, events) => {
                let _ = engine.create_transfers(*t, events);
            }
            Batch::Pulse(t) => {
                let _ = engine.expire_pending_transfers(*t);
            }
        }
    }
    engine
}

fn report_failure<T: std::fmt::Debug>(seed: u64, result: Result<(), TestError<T>>) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => panic!(
            "SETTLE_SEED={seed}: {reason}\nminimal generated case (specs): {minimal:?}\nrerun: SETTLE_SEED={seed} cargo test -p settle-ledger --test model_equivalence"
        ),
        Err(TestError::Abort(reason)) => panic!("SETTLE_SEED={seed}: aborted: {reason}"),
    }
}

// ======================================================================================
// Tests
// ======================================================================================

#[test]
fn engine_matches_model() {
    let seed = seed();
    let coverage = RefCell::new(Coverage::default());
    let started = std::time::Instant::now();
    let result = runner(seed, cases(DEFAULT_CASES)).run(&case(), |case| {
        run_case(&case, &mut coverage.borrow_mut()).map(|_| ()).map_err(TestCaseError::fail)
    });

    // The report comes first, so that it is there even when the run failed.
    let coverage = coverage.into_inner();
    eprintln!(
        "model_equivalence: SETTLE_SEED={seed}, {} batches ({} refused, {} pulses), {} pending transfers expired ({} by pulses), {:?}",
        coverage.batches,
        coverage.batch_errors,
        coverage.pulses,
        coverage.expired,
        coverage.expired_by_pulse,
        started.elapsed()
    );
    eprintln!("create_accounts results:");
    for r in CreateAccountResult::ALL {
        eprintln!("  {:>7}  {}", coverage.accounts.get(r).copied().unwrap_or(0), r.name());
    }
    eprintln!("create_transfers results:");
    for r in CreateTransferResult::ALL {
        eprintln!("  {:>7}  {}", coverage.transfers.get(r).copied().unwrap_or(0), r.name());
    }
    report_failure(seed, result);

    use CreateAccountResult as A;
    use CreateTransferResult as T;
    let required_accounts = [
        A::Ok,
        A::Exists,
        A::LinkedEventFailed,
        A::LinkedEventChainOpen,
        A::ExistsWithDifferentFlags,
        A::ExistsWithDifferentLedger,
        A::FlagsAreMutuallyExclusive,
        A::ReservedFlag,
        A::ImportedEventTimestampMustNotRegress,
    ];
    let required_transfers = [
        T::Ok,
        T::Exists,
        T::LinkedEventFailed,
        T::LinkedEventChainOpen,
        T::ExceedsCredits,
        T::ExceedsDebits,
        T::PendingTransferAlreadyPosted,
        T::PendingTransferAlreadyVoided,
        T::PendingTransferExpired,
        T::PendingTransferNotFound,
        T::ExceedsPendingTransferAmount,
        T::PendingTransferHasDifferentAmount,
        T::IdAlreadyFailed,
        T::OverflowsDebitsPosted,
        T::OverflowsCreditsPosted,
        T::OverflowsDebitsPending,
        T::OverflowsTimeout,
        T::DebitAccountAlreadyClosed,
        T::CreditAccountAlreadyClosed,
        T::DebitAccountNotFound,
        T::AccountsMustHaveTheSameLedger,
        T::ExistsWithDifferentFlags,
        T::ExistsWithDifferentAmount,
        T::ImportedEventTimestampMustNotRegress,
        T::FlagsAreMutuallyExclusive,
    ];
    let mut missing: Vec<&str> = Vec::new();
    missing.extend(
        required_accounts.iter().filter(|r| !coverage.accounts.contains_key(r)).map(|r| r.name()),
    );
    missing.extend(
        required_transfers.iter().filter(|r| !coverage.transfers.contains_key(r)).map(|r| r.name()),
    );
    assert!(
        missing.is_empty(),
        "SETTLE_SEED={seed}: the generators never produced these result codes: {missing:?}"
    );
    assert!(coverage.expired > 0, "SETTLE_SEED={seed}: no pending transfer ever expired");
}

#[test]
fn same_batches_give_the_same_digest() {
    let seed = seed();
    let result = runner(seed ^ 0xd16e57, cases(DEFAULT_DIGEST_CASES)).run(&case(), |case| {
        let (engine, batches, floor) =
            run_case(&case, &mut Coverage::default()).map_err(TestCaseError::fail)?;
        let again = replay(&batches);
        prop_assert_eq!(
            engine.digest(),
            again.digest(),
            "SETTLE_SEED={}: same batches, different digest",
            seed
        );

        // A different sequence: the same batches plus one more account.
        let mut more = batches.clone();
        let t = floor + 10;
        let extra = Account { id: ACCOUNT_ID_MAX + 100, ledger: 1, code: 1, ..Account::default() };
        more.push(Batch::Accounts(t, vec![extra]));
        let other = replay(&more);
        prop_assert_eq!(
            other.lookup_accounts(&[extra.id]).len(),
            1,
            "SETTLE_SEED={}: extra account not created",
            seed
        );
        prop_assert_ne!(
            engine.digest(),
            other.digest(),
            "SETTLE_SEED={}: different batches, same digest",
            seed
        );
        Ok(())
    });
    report_failure(seed, result);
}

#[test]
fn too_many_events_changes_nothing() {
    let mut model = Model::new();
    let mut engine = Ledger::new(MemStore::default());
    let events =
        vec![Account { id: 1, ledger: 1, code: 1, ..Account::default() }; BATCH_EVENTS_MAX + 1];
    let m = model.create_accounts(BASE_TIMESTAMP, &events);
    let e = engine.create_accounts(BASE_TIMESTAMP, &events);
    compare_results(&events, &m, &e).unwrap();
    compare_state(&model, &engine).unwrap();
}
