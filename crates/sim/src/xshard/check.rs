//! The cross-shard checkers, and what the lab measures.
//!
//! After the faults heal and the run drains:
//! - **atomicity**: every side of every transaction ended the same way, read from the
//!   ledgers' reservations (participants forget their records once carried out), and
//!   every committed transfer is stored at both of its accounts' shards with the same
//!   amount;
//! - **resolution**: nothing is left in doubt (prepared, unresolved);
//! - **decisions forgotten** (2PC): coordinators forget each decision once every
//!   participant carried it out, so memory does not grow with every transaction;
//! - **conservation**: per ledger, over all shards, debits equal credits, posted and
//!   pending;
//! - **balance limits**: no account's limit is exceeded, checked every 250 simulated
//!   ms during the run as well;
//! - **acknowledged**: every result a client got matches the final state;
//! - **protocol**: no participant was told to do what contradicts its state.

use std::collections::BTreeMap;
use std::fmt;

use settle_commit::{Kind, ShardState, TxnId};
use settle_ledger::{Account, AccountFlags, CreateTransferResult as R, Side, Store};

use super::world::{Op, World};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Checker {
    Atomicity,
    Resolution,
    Forgotten,
    Conservation,
    BalanceLimits,
    Acknowledged,
    Protocol,
    NoPanic,
    SnapshotConservation,
    SnapshotMonotone,
    Balances,
}

impl Checker {
    pub const ALL: [Checker; 11] = [
        Checker::Atomicity,
        Checker::Resolution,
        Checker::Forgotten,
        Checker::Conservation,
        Checker::BalanceLimits,
        Checker::Acknowledged,
        Checker::Protocol,
        Checker::NoPanic,
        Checker::SnapshotConservation,
        Checker::SnapshotMonotone,
        Checker::Balances,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Checker::Atomicity => "atomicity",
            Checker::Resolution => "every in-doubt transaction resolves",
            Checker::Forgotten => "2pc decisions forgotten once carried out",
            Checker::Conservation => "conservation per ledger",
            Checker::BalanceLimits => "balance limits",
            Checker::Acknowledged => "acknowledged results match the state",
            Checker::Protocol => "participants never contradicted",
            Checker::NoPanic => "no panics",
            Checker::SnapshotConservation => "conservation in snapshot reads",
            Checker::SnapshotMonotone => "posted balances never shrink between snapshots",
            Checker::Balances => "balances add up to the stored transfers",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub checker: Checker,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker.name(), self.detail)
    }
}

/// What a run measured (the lab's table).
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Cross-shard transactions, by final state.
    pub committed: u64,
    pub aborted: u64,
    pub in_doubt: u64,
    /// Fast-path (one shard) batches written.
    pub local_batches: u64,
    /// Cross-shard pending transfers that expired (at both of their shards).
    pub expired: u64,
    /// Simulated ms the workload ran.
    pub workload_ms: u64,
    /// Client-observed latency of cross-shard requests, ms, sorted.
    pub latencies_ms: Vec<u64>,
    /// Protocol messages by kind.
    pub messages: [u64; Kind::COUNT],
    /// Forced writes before the outcome is known (prepares, 3PC precommits, decisions).
    pub forced_commit_path: u64,
    /// Writes that carry an outcome out at a participant.
    pub forced_resolution: u64,
    /// Paxos Commit acceptor writes.
    pub acceptor_writes: u64,
    /// Message delays until the coordinator's first decision message, per transaction.
    pub decision_depths: Vec<u32>,
    pub longest_in_doubt_ms: u64,
    pub replicas: u8,
    /// Participants of each cross-shard transaction asked for.
    pub txn_sizes: Vec<usize>,
    /// Units submitted in transactions of more than one unit.
    pub batched_units: u64,
    /// Snapshot reads across every shard checked during the run, and how many of them
    /// started while a cross-shard transaction was in doubt.
    pub snapshots_checked: u64,
    pub snapshots_amid_doubt: u64,
    /// How long each checked snapshot read took (its last attempt, read point to the
    /// last part), ms, sorted: reads wait for what is in doubt at their timestamp.
    pub snapshot_latencies_ms: Vec<u64>,
}

impl Measured {
    pub fn decided(&self) -> u64 {
        self.committed + self.aborted
    }

    pub fn normal_path_messages(&self) -> u64 {
        (0..Kind::COUNT).filter(|&i| KINDS[i].normal_path()).map(|i| self.messages[i]).sum()
    }

    /// 2PC participants' acknowledgements that let coordinators forget decisions.
    pub fn acknowledgements(&self) -> u64 {
        self.messages[Kind::Resolved.index()]
    }

    /// Inquiries, 3PC termination and Paxos phase 1: what faults cost.
    pub fn recovery_messages(&self) -> u64 {
        self.messages.iter().sum::<u64>() - self.normal_path_messages() - self.acknowledgements()
    }

    /// Gray & Lamport's (messages, forced writes) per transaction, averaged over the
    /// transactions asked for (`None` for 3PC).
    pub fn paper_cost(&self, protocol: settle_commit::Protocol) -> Option<(f64, f64)> {
        if self.txn_sizes.is_empty() {
            return None;
        }
        let f = u64::from(self.replicas / 2);
        let (mut messages, mut writes) = (0, 0);
        for &n in &self.txn_sizes {
            let (m, w) = settle_commit::paper_cost(protocol, n as u64, f)?;
            messages += m;
            writes += w;
        }
        let count = self.txn_sizes.len() as f64;
        Some((messages as f64 / count, writes as f64 / count))
    }

    pub fn latency_ms(&self, quantile: f64) -> u64 {
        quantile_of(&self.latencies_ms, quantile)
    }

    pub fn snapshot_latency_ms(&self, quantile: f64) -> u64 {
        quantile_of(&self.snapshot_latencies_ms, quantile)
    }
}

/// The `quantile` of sorted `values` (0 when there are none).
fn quantile_of(sorted: &[u64], quantile: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * quantile).round() as usize]
}

/// Every kind, indexed as `Kind::index`.
pub const KINDS: [Kind; Kind::COUNT] = [
    Kind::Prepared,
    Kind::BeginCommit,
    Kind::Prepare,
    Kind::Vote,
    Kind::PreCommit,
    Kind::PreCommitAck,
    Kind::Decision,
    Kind::Inquire,
    Kind::StateRequest,
    Kind::StateReply,
    Kind::Phase2a,
    Kind::Phase2b,
    Kind::Phase1a,
    Kind::Phase1b,
    Kind::Resolved,
    Kind::Replicas,
];

impl World {
    pub fn measured(&self) -> Measured {
        let mut committed = 0;
        let mut aborted = 0;
        let mut in_doubt = 0;
        for ends in transaction_ends(self).values() {
            if ends.contains(&End::Committed) {
                committed += 1;
            } else if ends.contains(&End::InDoubt) {
                in_doubt += 1;
            } else {
                aborted += 1;
            }
        }
        let mut latencies_ms: Vec<u64> = self
            .acks
            .iter()
            .filter(|ack| matches!(ack.op, Op::Txn(_)))
            .map(|ack| ack.latency_ms)
            .collect();
        latencies_ms.sort_unstable();
        let expired = self
            .submitted
            .values()
            .flat_map(|txn| txn.transfers.iter())
            .filter(|t| t.timeout > 0)
            .filter(|t| {
                self.states().any(|s| {
                    s.ledger.pending_state(t.id)
                        == Some(settle_ledger::store::PendingState::Expired)
                })
            })
            .count() as u64;
        Measured {
            expired,
            committed,
            aborted,
            in_doubt,
            local_batches: self.local_batches,
            workload_ms: self.workload_end_ms,
            latencies_ms,
            messages: self.messages,
            forced_commit_path: self.forced_commit_path,
            forced_resolution: self.forced_resolution,
            acceptor_writes: self.acceptor_writes,
            decision_depths: self.decision_depth.values().copied().collect(),
            longest_in_doubt_ms: self.longest_in_doubt_ms,
            replicas: self.options.replicas,
            txn_sizes: self.txn_participants.values().copied().collect(),
            batched_units: self
                .submitted
                .values()
                .map(|txn| txn.unit_count() as u64)
                .filter(|&units| units > 1)
                .sum(),
            snapshots_checked: self.snapshots_checked,
            snapshots_amid_doubt: self.snapshots_amid_doubt,
            snapshot_latencies_ms: {
                let mut sorted = self.snapshot_latencies_ms.clone();
                sorted.sort_unstable();
                sorted
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Committed,
    Aborted,
    InDoubt,
}

/// How each side of each unit of each cross-shard transaction ended (units are atomic,
/// each on its own), read from its shard's ledger (`Ledger::side_state`): committed,
/// still prepared (in doubt), or aborted (released, refused, or never prepared).
fn transaction_ends(world: &World) -> BTreeMap<(TxnId, usize), Vec<End>> {
    use settle_ledger::store::ReservationState;
    let states: BTreeMap<u32, &ShardState> = world.states().map(|s| (s.shard, s)).collect();
    let mut ends: BTreeMap<(TxnId, usize), Vec<End>> = BTreeMap::new();
    for (id, txn) in &world.submitted {
        for (index, transfer) in txn.transfers.iter().enumerate() {
            let sides = ends.entry((*id, txn.unit_of(index))).or_default();
            for side in [Side::Debit, Side::Credit] {
                let shard = txn.placement[index][side.code() as usize];
                // Another transfer under the same id is not this one's side (a post or
                // void may leave its accounts to its pending transfer).
                let named = |requested: u128, held: u128| requested == 0 || requested == held;
                let held = states[&shard].ledger.side_state(transfer.id, side).filter(|(t, _)| {
                    named(transfer.debit_account_id, t.debit_account_id)
                        && named(transfer.credit_account_id, t.credit_account_id)
                });
                sides.push(match held.map(|(_, state)| state) {
                    Some(ReservationState::Committed) => End::Committed,
                    Some(ReservationState::Prepared) => End::InDoubt,
                    Some(ReservationState::Aborted) | None => End::Aborted,
                });
            }
        }
    }
    ends
}

pub fn limits(world: &mut World) {
    let mut found = Vec::new();
    for state in world.states() {
        for &(id, shard) in &world.accounts {
            if shard != state.shard {
                continue;
            }
            let account = state.ledger.store().account(id).expect("created at start");
            let debits = account.debits_posted + account.debits_pending;
            let credits = account.credits_posted + account.credits_pending;
            if account.flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                && debits > account.credits_posted
            {
                found.push(format!(
                    "at {} ms account {id} on shard {shard}: debits {debits} > credits {}",
                    world.now_ms, account.credits_posted
                ));
            }
            if account.flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                && credits > account.debits_posted
            {
                found.push(format!(
                    "at {} ms account {id} on shard {shard}: credits {credits} > debits {}",
                    world.now_ms, account.debits_posted
                ));
            }
        }
    }
    if let Some(detail) = found.into_iter().next() {
        if !world.violations.iter().any(|v| v.checker == Checker::BalanceLimits) {
            world.violations.push(Violation { checker: Checker::BalanceLimits, detail });
        }
    }
}

/// A snapshot read across every shard at `at` came back: it must conserve money (one
/// ledger: debits equal credits, posted and pending), as every consistent snapshot does.
pub fn snapshot(world: &mut World, at: u64, parts: &BTreeMap<u32, Vec<Account>>) {
    let accounts: Vec<&Account> = parts.values().flatten().collect();
    assert_eq!(accounts.len(), world.accounts.len(), "every account is read");
    let sum = |f: fn(&Account) -> u128| accounts.iter().map(|a| f(a)).sum::<u128>();
    let posted = (sum(|a| a.debits_posted), sum(|a| a.credits_posted));
    let pending = (sum(|a| a.debits_pending), sum(|a| a.credits_pending));
    let mut found = Vec::new();
    if posted.0 != posted.1 || pending.0 != pending.1 {
        let detail = format!(
            "snapshot at {at} (read at {} ms): debits/credits posted {}/{}, pending {}/{}",
            world.now_ms, posted.0, posted.1, pending.0, pending.1
        );
        found.push(Violation { checker: Checker::SnapshotConservation, detail });
    }
    // Per account: what is posted stays posted, so a later snapshot holds at least as
    // much on every account as an earlier one (a transfer seen at one timestamp and not
    // at a later one is caught here, even when the totals balance).
    let now: BTreeMap<u128, [u128; 2]> =
        accounts.iter().map(|a| (a.id, [a.debits_posted, a.credits_posted])).collect();
    if let Some((before_at, before)) = &world.last_snapshot {
        if *before_at < at {
            for (id, [debits, credits]) in &now {
                let [was_debits, was_credits] = before[id];
                if *debits < was_debits || *credits < was_credits {
                    let detail = format!(
                        "account {id}: posted debits/credits {was_debits}/{was_credits} at \
                         {before_at}, {debits}/{credits} at {at}"
                    );
                    found.push(Violation { checker: Checker::SnapshotMonotone, detail });
                    break;
                }
            }
        }
    }
    world.last_snapshot = Some((at, now));
    for violation in found {
        let same = world.violations.iter().filter(|v| v.checker == violation.checker);
        if same.count() < 3 {
            world.violations.push(violation);
        }
    }
}

/// For each of `accounts` held by `state`'s shard: its balances (debits posted,
/// credits posted, debits pending, credits pending), and what the stored transfers and
/// prepared reservations there add up to.
fn balances_from_transfers(
    state: &ShardState,
    accounts: &[(u128, u32)],
) -> Vec<(u128, [u128; 4], [u128; 4])> {
    use settle_ledger::store::{PendingState, Range, ReservationState};
    use settle_ledger::TransferFlags;
    let store = state.ledger.store();
    let mut sums: BTreeMap<u128, [u128; 4]> = BTreeMap::new();
    let mut add = |account: u128, slot: usize, amount: u128| {
        sums.entry(account).or_default()[slot] += amount;
    };
    let all = Range { min: 0, max: u64::MAX, reversed: false };
    for t in store.transfers(all) {
        let slots = if t.flags.contains(TransferFlags::PENDING) {
            // Pending until posted, voided or expired (a post is stored on its own).
            (store.pending_state(t.id) == Some(PendingState::Pending)).then_some([2, 3])
        } else if t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER) {
            None
        } else {
            Some([0, 1])
        };
        if let Some([debit, credit]) = slots {
            add(t.debit_account_id, debit, t.amount);
            add(t.credit_account_id, credit, t.amount);
        }
    }
    for r in store.reservations() {
        let pv = r.transfer.pending_id != 0;
        if r.state == ReservationState::Prepared && !pv {
            let (account, slot) = match r.side {
                Side::Debit => (r.transfer.debit_account_id, 2),
                Side::Credit => (r.transfer.credit_account_id, 3),
            };
            add(account, slot, r.transfer.amount);
        }
    }
    accounts
        .iter()
        .filter(|&&(_, shard)| shard == state.shard)
        .map(|&(id, _)| {
            let a = store.account(id).expect("created at start");
            let held = [a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending];
            (id, held, sums.get(&id).copied().unwrap_or_default())
        })
        .collect()
}

pub fn at_end(world: &mut World) {
    let mut found: Vec<Violation> = Vec::new();
    let mut push = |checker, detail: String| {
        if found.iter().filter(|v: &&Violation| v.checker == checker).count() < 3 {
            found.push(Violation { checker, detail });
        }
    };
    let states: Vec<&ShardState> = world.states().collect();

    // Atomicity and resolution.
    for ((id, unit), ends) in transaction_ends(world) {
        let committed = ends.contains(&End::Committed);
        if committed && ends.contains(&End::Aborted) {
            push(
                Checker::Atomicity,
                format!("txn {id} unit {unit}: some sides committed, others not ({ends:?})"),
            );
        }
        if ends.contains(&End::InDoubt) {
            push(
                Checker::Resolution,
                format!(
                    "txn {id} unit {unit} is still in doubt after the faults healed ({ends:?})"
                ),
            );
        }
    }
    // Committed sides: each committed transfer stored at both shards, same amount.
    for (id, txn) in &world.submitted {
        for transfer in txn.transfers.iter() {
            let stored: Vec<Option<u128>> = [Side::Debit, Side::Credit]
                .iter()
                .map(|&side| {
                    let index = txn.transfers.iter().position(|t| t.id == transfer.id).expect("in");
                    let shard = txn.placement[index][side.code() as usize];
                    let holder = states.iter().find(|s| s.shard == shard).expect("a shard");
                    holder.ledger.store().transfer(transfer.id).map(|t| t.amount)
                })
                .collect();
            if stored[0] != stored[1] {
                push(
                    Checker::Atomicity,
                    format!(
                        "txn {id}: transfer {} stored as {stored:?} at its two shards",
                        transfer.id
                    ),
                );
            }
        }
    }

    // 2PC: a coordinator forgets each decision once every participant carried it out.
    if world.options.protocol == settle_commit::Protocol::TwoPhase {
        for state in &states {
            if let Some(id) = state.coordinated.keys().next() {
                let left = state.coordinated.len();
                push(
                    Checker::Forgotten,
                    format!("shard {} still holds {left} decisions (txn {id})", state.shard),
                );
            }
        }
    }

    // Conservation per ledger over every shard.
    let mut sums: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for state in &states {
        for &(id, shard) in &world.accounts {
            if shard != state.shard {
                continue;
            }
            let a = state.ledger.store().account(id).expect("created at start");
            let sum = sums.entry(a.ledger).or_default();
            sum[0] += a.debits_posted;
            sum[1] += a.credits_posted;
            sum[2] += a.debits_pending;
            sum[3] += a.credits_pending;
        }
    }
    for (ledger, [dp, cp, dpe, cpe]) in sums {
        if dp != cp || dpe != cpe {
            push(
                Checker::Conservation,
                format!("ledger {ledger}: debits posted {dp} / credits posted {cp}, pending {dpe} / {cpe}"),
            );
        }
    }

    // Each account's balances are what the transfers stored at its shard add up to (and
    // the reservations still held): a transfer carried out twice, or a pending transfer
    // released twice, shows here, where conservation sees a balanced excess.
    for state in &states {
        for (id, held, expected) in balances_from_transfers(state, &world.accounts) {
            if held != expected {
                push(
                    Checker::Balances,
                    format!(
                        "shard {}: account {id} holds [debits posted, credits posted, debits pending, credits pending] {held:?}, its transfers add up to {expected:?}",
                        state.shard
                    ),
                );
            }
        }
    }

    // Acknowledged results. A chain's member may also have been sent on its own (a
    // retry grouped otherwise, racing the chain): when that one was acknowledged ok,
    // the transfer exists although the chain's unit failed; or `exists`, when an
    // attempt whose answer was lost created it. (Had the chain's unit created it
    // instead, the unit committed, and its other members, which are never sent on
    // their own, would exist although the chain was acknowledged failed.)
    let created_alone: std::collections::BTreeSet<u128> = world
        .acks
        .iter()
        .filter_map(|ack| match &ack.op {
            Op::Local { transfers, .. } => Some(transfers.iter().zip(&ack.results)),
            Op::Txn(_) => None,
        })
        .flatten()
        .filter(|(_, result)| matches!(result, R::Ok | R::Exists))
        .map(|(transfer, _)| transfer.id)
        .collect();
    for ack in &world.acks {
        match &ack.op {
            Op::Txn(txn) => {
                // Per unit: a retry after the decision answers `exists` for a committed one.
                for (index, transfer) in txn.transfers.iter().enumerate() {
                    let unit = &ack.results[txn.units().nth(txn.unit_of(index)).expect("a unit")];
                    let ok = unit.iter().all(|r| matches!(r, R::Ok | R::Exists));
                    let exists_result = unit.iter().any(|r| matches!(r, R::Exists));
                    for shard in txn.placement[index] {
                        let holder = states.iter().find(|s| s.shard == shard).expect("a shard");
                        let stored = holder.ledger.store().transfer(transfer.id);
                        if ok && stored.is_none() {
                            push(Checker::Acknowledged, format!("txn {} acknowledged ok, but transfer {} is missing on shard {shard}", txn.id(), transfer.id));
                        }
                        if !ok
                            && !exists_result
                            && stored.is_some()
                            && !created_alone.contains(&transfer.id)
                        {
                            push(Checker::Acknowledged, format!("txn {} acknowledged {:?}, but transfer {} exists on shard {shard}", txn.id(), ack.results, transfer.id));
                        }
                    }
                }
            }
            Op::Local { shard, transfers } => {
                let holder = states.iter().find(|s| s.shard == *shard).expect("a shard");
                for (transfer, result) in transfers.iter().zip(&ack.results) {
                    let stored = holder.ledger.store().transfer(transfer.id);
                    if *result == R::Ok && stored.is_none() {
                        push(
                            Checker::Acknowledged,
                            format!("local transfer {} acknowledged ok but missing", transfer.id),
                        );
                    }
                }
            }
        }
    }
    drop(states);
    limits(world);
    world.violations.extend(found);
}

#[cfg(test)]
mod tests {
    use settle_commit::ShardState;
    use settle_ledger::{
        Account, Ledger, MemStore, Side, SideVote, Store, Transfer, TransferFlags,
    };

    use super::balances_from_transfers;

    fn account(id: u128) -> Account {
        Account { id, ledger: 1, code: 1, ..Default::default() }
    }

    fn transfer(id: u128, amount: u128, flags: TransferFlags) -> Transfer {
        let t = Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount,
            flags,
            ..Default::default()
        };
        Transfer { ledger: 1, code: 1, ..t }
    }

    /// Posted and pending transfers, a post, a void and a side prepared across shards
    /// add up to the balances; a balance that moved without a transfer (as one carried
    /// out twice moves it) does not.
    #[test]
    fn balances_add_up_to_the_stored_transfers_and_reservations() {
        let mut ledger = Ledger::new(MemStore::default());
        ledger.create_accounts(10, &[account(1), account(2)]).unwrap();
        let batch = [
            transfer(7, 5, TransferFlags::empty()),
            transfer(8, 3, TransferFlags::PENDING),
            transfer(9, 4, TransferFlags::PENDING),
        ];
        ledger.create_transfers(20, &batch).unwrap();
        let post = Transfer {
            id: 10,
            pending_id: 8,
            amount: 2,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        };
        let void = Transfer {
            id: 11,
            pending_id: 9,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Default::default()
        };
        ledger.create_transfers(30, &[post, void]).unwrap();
        // Account 1's side of a transfer to account 3, held on another shard.
        let across = Transfer { credit_account_id: 3, ..transfer(12, 6, TransferFlags::empty()) };
        let vote = ledger.prepare_side(40, &across, Side::Debit).unwrap();
        assert!(matches!(vote, SideVote::Prepared { .. }));
        let state = ShardState::new(0, ledger);
        let found = balances_from_transfers(&state, &[(1, 0), (2, 0), (3, 1)]);
        assert_eq!(found.len(), 2, "only the accounts this shard holds");
        for (id, held, expected) in found {
            assert_eq!(held, expected, "account {id}");
        }
        let a = state.ledger.store().account(1).unwrap();
        assert_eq!((a.debits_posted, a.debits_pending), (7, 6));

        let mut store = MemStore::default();
        store.insert_account(Account { debits_posted: 5, timestamp: 1, ..account(1) });
        let state = ShardState::new(0, Ledger::new(store));
        let found = balances_from_transfers(&state, &[(1, 0)]);
        assert_eq!(found, vec![(1, [5, 0, 0, 0], [0, 0, 0, 0])]);
    }
}
