//! Transactions of several units: one protocol round, each unit atomic on its own. The
//! outcome commits the units every side voted for and aborts the others whole, and a
//! participant carries out exactly that.

use std::collections::BTreeMap;

use settle_commit::message::{Body, Message, Record};
use settle_commit::txn::SideEntry;
use settle_commit::{
    decide, Address, Command, Commit, Config, Outcome, Protocol, ShardCore, ShardState, Txn,
    UnitAbort, Vote,
};
use settle_ledger::store::{ReservationState, Store};
use settle_ledger::{Account, CreateTransferResult as R, Ledger, Side, SideVote, Transfer};

const NOW_MS: u64 = 1_000_000;

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

/// Units: [7: 1 → 2], [8: 1 → 3, 9: 1 → 2] (a chain), [10: 1 → 3]; debits on shard 0,
/// credits on shard 1.
fn batch() -> Txn {
    let transfers = vec![
        transfer(7, 1, 2, 5),
        transfer(8, 1, 3, 6),
        transfer(9, 1, 2, 7),
        transfer(10, 1, 3, 8),
    ];
    Txn::batch(Protocol::TwoPhase, transfers, vec![[0, 1]; 4], vec![1, 3, 4]).expect("a batch")
}

fn prepared(amount: u128) -> SideVote {
    SideVote::Prepared { amount, account_ledger: 1 }
}

fn side(transfer: u16, side: Side, vote: SideVote) -> SideEntry {
    SideEntry { transfer, side, vote, at: 100 + u64::from(transfer) }
}

#[test]
fn a_unit_whose_side_is_refused_aborts_alone() {
    let txn = batch();
    let refused = SideVote::Rejected {
        result: R::TransferMustHaveTheSameLedgerAsAccounts,
        account_ledger: Some(1),
    };
    let votes = BTreeMap::from([
        (
            0,
            Vote::Sides(vec![
                side(0, Side::Debit, prepared(5)),
                side(1, Side::Debit, refused),
                side(2, Side::Debit, prepared(7)),
                side(3, Side::Debit, prepared(8)),
            ]),
        ),
        (
            1,
            Vote::Sides(
                [5, 6, 7, 8]
                    .into_iter()
                    .enumerate()
                    .map(|(i, amount)| side(i as u16, Side::Credit, prepared(amount)))
                    .collect(),
            ),
        ),
    ]);
    let Outcome::Commit(commit) = decide(&txn, &votes) else { panic!("units 0 and 2 commit") };
    assert_eq!(commit.amounts, vec![5, 0, 0, 8]);
    assert_eq!(commit.at, 103, "the latest prepare of any side");
    let abort = UnitAbort {
        unit: 1,
        results: vec![R::TransferMustHaveTheSameLedgerAsAccounts, R::LinkedEventFailed],
        record_failed: false,
    };
    assert_eq!(commit.aborted, vec![abort]);
    let outcome = Outcome::Commit(commit);
    assert_eq!(
        outcome.results(&txn),
        vec![R::Ok, R::TransferMustHaveTheSameLedgerAsAccounts, R::LinkedEventFailed, R::Ok]
    );

    // A participant whose vote is lost aborts every unit with a side there: all of them,
    // each its own way (units 0 and 2 burn their ids, unit 1's failure is permanent).
    let lost = BTreeMap::from([(0, votes[&0].clone()), (1, Vote::Aborted)]);
    let Outcome::Commit(commit) = decide(&txn, &lost) else { panic!("units fail differently") };
    assert!(commit.commits_none(&txn));
    let burned: Vec<bool> = commit.aborted.iter().map(|abort| abort.record_failed).collect();
    assert_eq!(burned, vec![true, false, true]);
    let results = Outcome::Commit(commit).results(&txn);
    assert!(!results.contains(&R::Ok), "{results:?}");

    // Every unit aborting the same way is a plain abort.
    let votes = BTreeMap::from([(0, Vote::Aborted), (1, Vote::Aborted)]);
    assert!(matches!(decide(&txn, &votes), Outcome::Abort { record_failed: true, .. }));
}

/// Shard 1 (credits) prepares all four sides, then carries out a commit of units 0 and 2.
#[test]
fn a_participant_commits_the_committed_units_and_releases_the_rest() {
    let mut ledger = Ledger::new(Default::default());
    let accounts = [2, 3].map(|id| Account { id, ledger: 1, code: 1, ..Default::default() });
    ledger.create_accounts(NOW_MS * 1_000_000 - 1, &accounts).unwrap();
    let mut core = ShardCore::new(Config::new(1), ShardState::new(1, ledger), 1, NOW_MS);
    let txn = batch();
    core.receive(NOW_MS, Address::Shard(0), message(Body::Prepare { txn: txn.clone() }));
    let entry = persisted_entry(&mut core).expect("one prepare for the whole batch");
    core.persisted(NOW_MS + 1, &entry);
    let Vote::Sides(entries) = &core.state().participants[&txn.id()].vote else { panic!("voted") };
    assert_eq!(entries.len(), 4);
    let at = entries.iter().map(|e| e.at).max().unwrap();
    core.take_commands();

    let abort = UnitAbort {
        unit: 1,
        results: vec![R::LinkedEventFailed, R::ExceedsCredits],
        record_failed: false,
    };
    let commit = Commit { amounts: vec![5, 0, 0, 8], at, aborted: vec![abort] };
    let body = Body::Decision { txn: txn.clone(), outcome: Outcome::Commit(commit) };
    core.receive(NOW_MS + 2, Address::Shard(0), message(body));
    let entry = persisted_entry(&mut core).expect("the resolution is written");
    // Prepared here: the record holds the transaction, so the resolution names it.
    let Record::ResolvePrepared { txn: id, digest, outcome } = entry.record.clone() else {
        panic!("a prepared transaction is named: {:?}", entry.record);
    };
    assert_eq!((id, digest), (txn.id(), txn.digest()));
    // One naming another transaction of this id (another digest) is not this one's.
    let digest_before = core.state().ledger.digest();
    let other = Record::ResolvePrepared { txn: id, digest: digest ^ 1, outcome };
    core.persisted(NOW_MS + 3, &settle_commit::Entry { timestamp: entry.timestamp, record: other });
    assert_eq!(core.state().ledger.digest(), digest_before);
    assert!(core.state().participants.contains_key(&id), "still in doubt");
    core.persisted(NOW_MS + 3, &entry);

    let store = core.state().ledger.store();
    for (id, committed) in [(7, true), (8, false), (9, false), (10, true)] {
        assert_eq!(store.transfer(id).is_some(), committed, "transfer {id}");
        let (_, state) = core.state().ledger.side_state(id, Side::Credit).expect("held");
        let expected =
            if committed { ReservationState::Committed } else { ReservationState::Aborted };
        assert_eq!(state, expected, "transfer {id}");
    }
    let [two, three] = [2, 3].map(|id| store.account(id).expect("created"));
    assert_eq!((two.credits_posted, two.credits_pending), (5, 0));
    assert_eq!((three.credits_posted, three.credits_pending), (8, 0));
    assert_eq!(core.state().resolved_here(&txn), Some(vec![true, false, false, true]));

    // Written again (a resend, a new leader), it finds no record: it changes nothing.
    let digest = core.state().ledger.digest();
    core.persisted(NOW_MS + 4, &entry);
    assert_eq!(core.state().ledger.digest(), digest);
    assert!(!core.state().participants.contains_key(&txn.id()));
}

/// A commit of a unit this shard refused is not from an honest coordinator.
#[test]
fn a_commit_of_a_refused_unit_is_ignored() {
    let mut ledger = Ledger::new(Default::default());
    // Account 3 is missing: the sides of transfers 8 and 10 are refused here.
    let account = Account { id: 2, ledger: 1, code: 1, ..Default::default() };
    ledger.create_accounts(NOW_MS * 1_000_000 - 1, &[account]).unwrap();
    let mut core = ShardCore::new(Config::new(1), ShardState::new(1, ledger), 1, NOW_MS);
    let txn = batch();
    core.receive(NOW_MS, Address::Shard(0), message(Body::Prepare { txn: txn.clone() }));
    let entry = persisted_entry(&mut core).expect("prepared");
    core.persisted(NOW_MS + 1, &entry);
    let at = NOW_MS * 1_000_000 + 1_000;
    let all = Commit { amounts: vec![5, 6, 7, 8], at, aborted: vec![] };
    core.take_commands();
    let body = Body::Decision { txn: txn.clone(), outcome: Outcome::Commit(all) };
    core.receive(NOW_MS + 2, Address::Shard(0), message(body));
    assert!(persisted_entry(&mut core).is_none(), "commits sides this shard refused");
}

/// A message about `batch()`.
fn message(body: Body) -> Message {
    Message { txn: batch().id(), depth: 1, body }
}

fn persisted_entry(core: &mut ShardCore) -> Option<settle_commit::Entry> {
    core.take_commands().into_iter().find_map(|command| match command {
        Command::Persist(entry) => Some(entry),
        _ => None,
    })
}

/// A batch's id is its own: not its first transfer's (a unit of one transfer has that
/// id), and not that of the same transfers grouped otherwise.
#[test]
fn a_batch_is_named_by_its_content() {
    let txn = batch();
    assert_ne!(txn.id(), 7);
    assert_eq!(batch().id(), txn.id(), "the same batch again");
    let transfers = txn.transfers.to_vec();
    let regrouped =
        Txn::batch(Protocol::TwoPhase, transfers.clone(), vec![[0, 1]; 4], vec![1, 2, 3, 4]);
    assert_ne!(regrouped.unwrap().id(), txn.id());
    let single = Txn::new(Protocol::TwoPhase, transfers[..1].to_vec(), vec![[0, 1]]).unwrap();
    assert_eq!(single.id(), 7);
    // Unit ends out of range or out of order are refused, not a panic.
    for ends in [vec![60, 100, 4], vec![3, 1, 4], vec![0, 4], vec![2, 2, 4]] {
        assert!(Txn::batch(Protocol::TwoPhase, transfers.clone(), vec![[0, 1]; 4], ends).is_none());
    }
}

/// A side already prepared by another transaction (the same transfer in a batch grouped
/// otherwise) is not this one's: this one's unit aborts, and releasing it leaves the
/// other's reservation alone.
#[test]
fn a_side_held_by_another_transaction_is_not_taken_over() {
    let mut ledger = Ledger::new(Default::default());
    let accounts = [2, 3].map(|id| Account { id, ledger: 1, code: 1, ..Default::default() });
    ledger.create_accounts(NOW_MS * 1_000_000 - 1, &accounts).unwrap();
    let mut core = ShardCore::new(Config::new(1), ShardState::new(1, ledger), 1, NOW_MS);
    let first = batch();
    let prepare =
        |txn: &Txn| Message { txn: txn.id(), depth: 1, body: Body::Prepare { txn: txn.clone() } };
    core.receive(NOW_MS, Address::Shard(0), prepare(&first));
    let entry = persisted_entry(&mut core).expect("prepared");
    core.persisted(NOW_MS + 1, &entry);
    // Transfer 7 again, with a new one: another transaction.
    let other = Txn::batch(
        Protocol::TwoPhase,
        vec![transfer(7, 1, 2, 5), transfer(11, 1, 3, 1)],
        vec![[0, 1]; 2],
        vec![1, 2],
    )
    .unwrap();
    core.receive(NOW_MS + 2, Address::Shard(0), prepare(&other));
    let entry = persisted_entry(&mut core).expect("prepared");
    core.persisted(NOW_MS + 3, &entry);
    let Vote::Sides(entries) = &core.state().participants[&other.id()].vote else { panic!() };
    assert_eq!(entries[0].vote, SideVote::Busy, "transfer 7 is the first's");
    assert!(matches!(entries[1].vote, SideVote::Prepared { .. }));
    // The other aborts its first unit and commits its second; the first keeps 7.
    let abort = UnitAbort { unit: 0, results: vec![R::IdAlreadyFailed], record_failed: true };
    let at = entries.iter().map(|e| e.at).max().unwrap();
    let commit = Commit { amounts: vec![0, 1], at, aborted: vec![abort] };
    let body = Body::Decision { txn: other.clone(), outcome: Outcome::Commit(commit) };
    core.receive(NOW_MS + 4, Address::Shard(0), Message { txn: other.id(), depth: 3, body });
    let entry = persisted_entry(&mut core).expect("resolved");
    assert!(matches!(core.persisted(NOW_MS + 5, &entry), settle_commit::Applied::Participant(_)));
    let store = core.state().ledger.store();
    let seven = store.reservation(7, Side::Credit).expect("reserved");
    assert_eq!(seven.state, ReservationState::Prepared, "still the first transaction's");
    assert!(store.transfer(11).is_some());
    assert_eq!(store.account(2).unwrap().credits_pending, 5 + 7);
}

/// A router sorts units by their participants without making a transaction of each:
/// `Txn::unit_participants` says what `Txn::new` would, for units it takes and ones it
/// refuses.
#[test]
fn unit_participants_agree_with_a_transaction_of_the_unit() {
    let chain = |n: u128| (1..=n).map(|id| transfer(id, 1, 2, 1)).collect::<Vec<_>>();
    let mut twice = chain(3);
    twice[2].id = 1;
    let cases: Vec<(Vec<Transfer>, Vec<[u32; 2]>)> = vec![
        (chain(1), vec![[0, 1]]),
        (chain(1), vec![[2, 2]]),
        (chain(3), vec![[3, 1], [0, 3], [2, 0]]),
        (chain(64), vec![[1, 0]; 64]),
        (chain(65), vec![[1, 0]; 65]),
        (twice, vec![[0, 1]; 3]),
        (Vec::new(), Vec::new()),
        (chain(2), vec![[0, 1]]),
    ];
    for (transfers, placement) in cases {
        let made = Txn::new(Protocol::TwoPhase, transfers.clone(), placement.clone());
        let expected = made.map(|txn| txn.participants());
        let what = format!("{} transfers placed {placement:?}", transfers.len());
        assert_eq!(Txn::unit_participants(&transfers, &placement), expected, "{what}");
    }
    let placement = [[3, 1], [0, 3], [2, 0]];
    assert_eq!(Txn::unit_participants(&chain(3), &placement), Some(vec![3, 0, 1, 2]));
}
