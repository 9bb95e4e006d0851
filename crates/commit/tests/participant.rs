//! A participant core on its own, driven by hand: it carries out only a commit an
//! honest coordinator could have sent (one amount per transfer, an agreed timestamp at
//! or after its own prepare and not beyond the clocks' skew), so a broken or hostile
//! peer cannot push its clock into the future.

use settle_commit::message::{Body, Message, Record};
use settle_commit::{Address, Command, Commit, Config, Outcome, Protocol, ShardCore, ShardState};
use settle_commit::{Txn, Vote};
use settle_ledger::{Account, Ledger, Transfer};

const NOW_MS: u64 = 1_000_000;

/// A core for shard 1, holding account 2.
fn core_with_account_two() -> ShardCore {
    let mut ledger = Ledger::new(Default::default());
    let account = Account { id: 2, ledger: 1, code: 1, ..Default::default() };
    ledger.create_accounts(NOW_MS * 1_000_000 - 1, &[account]).unwrap();
    ShardCore::new(Config::new(1), ShardState::new(1, ledger), 1, NOW_MS)
}

/// Transfer `id` of 5 from account 1 (on shard 0) to account 2.
fn one_to_two(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 5,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

/// A core for shard 1, holding account 2, with `txn` (1 → 2, debit on shard 0)
/// prepared here; returns the core, the transaction and the prepare's timestamp.
fn prepared() -> (ShardCore, Txn, u64) {
    let mut core = core_with_account_two();
    let transfer = one_to_two(7);
    let txn = Txn::new(Protocol::TwoPhase, vec![transfer], vec![[0, 1]]).unwrap();
    let prepare = Message { txn: 7, depth: 1, body: Body::Prepare { txn: txn.clone() } };
    core.receive(NOW_MS, Address::Shard(0), prepare);
    let entry = persisted_entry(&mut core).expect("the prepare is written");
    assert!(matches!(entry.record, Record::Prepare { .. }));
    core.persisted(NOW_MS + 1, &entry);
    let at = prepared_at(&core, 7);
    core.take_commands();
    (core, txn, at)
}

/// When transaction `id`'s first side here was prepared.
fn prepared_at(core: &ShardCore, id: u128) -> u64 {
    match &core.state().participants[&id].vote {
        Vote::Sides(sides) => sides[0].at,
        Vote::Aborted => panic!("prepared"),
    }
}

/// Transaction 7 (one transfer of 5, prepared here) is committed: its decision arrives.
fn commit_seven(core: &mut ShardCore, txn: Txn) {
    let at = prepared_at(core, 7);
    let outcome = Outcome::Commit(Commit { amounts: vec![5], at, aborted: vec![] });
    let body = Body::Decision { txn, outcome };
    core.receive(NOW_MS + 3, Address::Shard(0), Message { txn: 7, depth: 3, body });
}

fn persisted_entry(core: &mut ShardCore) -> Option<settle_commit::Entry> {
    core.take_commands().into_iter().find_map(|command| match command {
        Command::Persist(entry) => Some(entry),
        _ => None,
    })
}

/// The answers to snapshot reads among the core's commands.
fn read_replies(
    core: &mut ShardCore,
) -> Vec<(u64, Result<settle_commit::read::SnapshotPart, settle_commit::read::ReadError>)> {
    core.take_commands()
        .into_iter()
        .filter_map(|command| match command {
            Command::ReadReply { client, read } => Some((client, read)),
            _ => None,
        })
        .collect()
}

fn decide(core: &mut ShardCore, txn: &Txn, amounts: Vec<u128>, at: u64) -> bool {
    let outcome = Outcome::Commit(Commit { amounts, at, aborted: vec![] });
    let body = Body::Decision { txn: txn.clone(), outcome };
    core.receive(NOW_MS + 2, Address::Shard(0), Message { txn: 7, depth: 3, body });
    persisted_entry(core).is_some()
}

#[test]
fn a_commit_no_honest_coordinator_sends_is_ignored() {
    let (mut core, txn, at) = prepared();
    let skew_ns = Config::new(1).clock_skew_max_ms * 1_000_000;
    assert!(!decide(&mut core, &txn, vec![5], at - 1), "agreed before this shard's prepare");
    assert!(!decide(&mut core, &txn, vec![5, 5], at), "an amount per transfer");
    let far = (NOW_MS + 2) * 1_000_000 + skew_ns + 1; // the clock: the decision's arrival
    assert!(!decide(&mut core, &txn, vec![5], far), "beyond the clocks' skew");
    assert!(!decide(&mut core, &txn, vec![5], u64::MAX));
    // The honest one is carried out, its timestamp within the skew.
    assert!(decide(&mut core, &txn, vec![5], at + skew_ns / 2));
}

/// A read point is answered only by the leader that wrote it: another leader's point
/// under the same token (the shell's tokens restart with every process) is not its own.
#[test]
fn a_read_point_of_another_leader_is_not_answered() {
    use settle_commit::read::ReadError;
    let (mut core, _, _) = prepared();
    let at = core.state().ledger.commit_timestamp() + 1_000;
    core.read(NOW_MS + 3, 42, at, vec![2]);
    let ours = persisted_entry(&mut core).expect("the read point is written");
    let Record::ReadPoint { incarnation, .. } = ours.record else { panic!("{ours:?}") };
    // The same token from another incarnation, applied first: no answer, no panic.
    let foreign = settle_commit::Entry {
        timestamp: ours.timestamp,
        record: Record::ReadPoint { client: 42, at: at - 1, incarnation: incarnation + 1 },
    };
    core.persisted(NOW_MS + 4, &foreign);
    assert!(core.take_commands().is_empty());
    // Its own point: the read waits for transaction 7, in doubt on account 2.
    core.persisted(NOW_MS + 5, &ours);
    assert!(core.take_commands().is_empty(), "waits for the transaction in doubt");
    assert_eq!(core.reading(), 1);
    // A change of leader ends it: the client hears so and retries.
    core.reset(incarnation + 2, NOW_MS + 6);
    let answers = read_replies(&mut core);
    assert_eq!(answers, vec![(42, Err(ReadError::Interrupted))]);
}

/// A post sent as soon as its cross-shard pending transfer was acknowledged can reach
/// a participant before that transfer's decision does: its prepare waits for the
/// decision instead of refusing the post with `pending_transfer_not_found`.
#[test]
fn a_post_of_a_pending_transfer_in_doubt_waits_for_its_outcome() {
    use settle_ledger::{SideVote, TransferFlags};
    let mut core = core_with_account_two();
    let base = one_to_two(0);
    let pending = Transfer { id: 7, flags: TransferFlags::PENDING, ..base };
    let pending_txn = Txn::new(Protocol::TwoPhase, vec![pending], vec![[0, 1]]).unwrap();
    let prepare = Message { txn: 7, depth: 1, body: Body::Prepare { txn: pending_txn.clone() } };
    core.receive(NOW_MS, Address::Shard(0), prepare);
    let entry = persisted_entry(&mut core).expect("the pending transfer's prepare");
    core.persisted(NOW_MS + 1, &entry);
    core.take_commands();

    // The post arrives first (twice: a resend), and waits.
    let post =
        Transfer { id: 8, pending_id: 7, flags: TransferFlags::POST_PENDING_TRANSFER, ..base };
    let post_txn = Txn::new(Protocol::TwoPhase, vec![post], vec![[0, 1]]).unwrap();
    for _ in 0..2 {
        let prepare = Message { txn: 8, depth: 1, body: Body::Prepare { txn: post_txn.clone() } };
        core.receive(NOW_MS + 2, Address::Shard(0), prepare);
        assert!(persisted_entry(&mut core).is_none(), "the post's prepare waits");
    }

    // The pending transfer commits here: the post is prepared, once, and can commit.
    commit_seven(&mut core, pending_txn);
    let resolve = persisted_entry(&mut core).expect("the pending transfer's resolution");
    core.persisted(NOW_MS + 4, &resolve);
    let prepares: Vec<_> = core
        .take_commands()
        .into_iter()
        .filter_map(|command| match command {
            Command::Persist(entry) => Some(entry),
            _ => None,
        })
        .collect();
    assert_eq!(prepares.len(), 1, "{prepares:?}");
    assert!(matches!(&prepares[0].record, Record::Prepare { txn } if txn.id() == 8));
    core.persisted(NOW_MS + 5, &prepares[0]);
    let Vote::Sides(sides) = &core.state().participants[&8].vote else { panic!("voted") };
    assert!(matches!(sides[0].vote, SideVote::Prepared { amount: 5, .. }), "{sides:?}");
}

/// A resolution that commits more than a side reserved is refused before anything
/// changes, and a snapshot read waiting for that transaction goes on waiting; the
/// honest resolution then answers it with the side as committed.
#[test]
fn a_resolution_above_the_reservation_changes_nothing_and_a_read_waits_through_it() {
    use settle_commit::read::SnapshotPart;
    use settle_ledger::store::{ReservationState, Store};
    let (mut core, txn, at) = prepared();
    let read_at = core.state().ledger.commit_timestamp() + 1_000;
    core.read(NOW_MS + 2, 42, read_at, vec![2]);
    let point = persisted_entry(&mut core).expect("the read point is written");
    core.persisted(NOW_MS + 3, &point);
    assert!(core.take_commands().is_empty(), "waits for transaction 7");

    let resolve = |amount| settle_commit::Entry {
        timestamp: read_at + 10,
        record: Record::Resolve {
            txn: txn.clone(),
            outcome: Outcome::Commit(Commit { amounts: vec![amount], at, aborted: vec![] }),
        },
    };
    let applied = core.persisted(NOW_MS + 4, &resolve(6));
    assert!(matches!(applied, settle_commit::Applied::Refused(_)), "{applied:?}");
    let store = core.state().ledger.store();
    assert_eq!(store.reservation(7, settle_ledger::Side::Credit).unwrap().state, {
        ReservationState::Prepared
    });
    assert_eq!(store.account(2).unwrap().credits_pending, 5);
    assert!(store.transfer(7).is_none());
    assert!(core.take_commands().is_empty(), "the read still waits");

    core.persisted(NOW_MS + 5, &resolve(5));
    let answers = read_replies(&mut core);
    let [(42, Ok(SnapshotPart { accounts, .. }))] = answers.as_slice() else {
        panic!("{answers:?}")
    };
    // Committed with an agreed timestamp before the read's: included.
    assert_eq!((accounts[0].credits_posted, accounts[0].credits_pending), (5, 0));
    assert!(core.state().ledger.store().reservation(7, settle_ledger::Side::Credit).is_none());
}

/// A single-shard transfer under an id a cross-shard transaction names is not that
/// transaction's side: the coordinator does not take the transaction as carried out.
#[test]
fn a_single_shard_transfer_is_not_taken_for_a_side_of_a_transaction() {
    let mut ledger = Ledger::new(Default::default());
    let accounts = [1, 3].map(|id| Account { id, ledger: 1, code: 1, ..Default::default() });
    ledger.create_accounts(NOW_MS * 1_000_000 - 1, &accounts).unwrap();
    let base = Transfer { amount: 5, ledger: 1, code: 1, ..Default::default() };
    let local = Transfer { id: 5, debit_account_id: 1, credit_account_id: 3, ..base };
    let results = ledger.create_transfers(NOW_MS * 1_000_000, &[local]).unwrap();
    assert_eq!(results, vec![settle_ledger::CreateTransferResult::Ok]);
    let state = ShardState::new(0, ledger);
    // A chain: [5: 1 -> 3], both on shard 0, then [6: 2 -> 4] on shard 1.
    let other = Transfer { id: 6, debit_account_id: 2, credit_account_id: 4, ..base };
    let chain = Txn::new(Protocol::TwoPhase, vec![local, other], vec![[0, 0], [1, 1]]).unwrap();
    assert_eq!(state.resolved_here(&chain), None);
    assert_eq!(state.resolved_results(&chain), None);
}

/// Once a participant carried a commit out, its record and the side's reservation are
/// gone: late copies of the prepare and of the decision, and an abort that contradicts
/// it, change nothing, and the transaction still reads as committed here.
#[test]
fn late_messages_after_a_side_committed_and_dropped_its_reservation_change_nothing() {
    use settle_ledger::store::Store;
    use settle_ledger::Side;
    let (mut core, txn, at) = prepared();
    assert!(decide(&mut core, &txn, vec![5], at));
    let resolve = settle_commit::Entry {
        timestamp: at + 10,
        record: Record::Resolve {
            txn: txn.clone(),
            outcome: Outcome::Commit(Commit { amounts: vec![5], at, aborted: vec![] }),
        },
    };
    core.persisted(NOW_MS + 3, &resolve);
    core.take_commands();
    let settled = |core: &ShardCore| {
        let store = core.state().ledger.store();
        let account = store.account(2).unwrap();
        assert_eq!((account.credits_posted, account.credits_pending), (5, 0));
        assert_eq!(store.reservation(7, Side::Credit), None, "dropped");
        assert!(!core.state().participants.contains_key(&7), "forgotten");
        assert_eq!(core.state().resolved_here(&txn), Some(vec![true]));
    };
    settled(&core);

    // A late prepare, the decision again, and an abort: whatever they lead the core
    // to write is applied, and nothing changes.
    let abort = Outcome::Abort {
        results: vec![settle_ledger::CreateTransferResult::ExceedsCredits],
        record_failed: false,
    };
    let bodies = [
        Body::Prepare { txn: txn.clone() },
        Body::Decision {
            txn: txn.clone(),
            outcome: Outcome::Commit(Commit { amounts: vec![5], at, aborted: vec![] }),
        },
        Body::Decision { txn: txn.clone(), outcome: abort.clone() },
    ];
    for (k, body) in bodies.into_iter().enumerate() {
        let now = NOW_MS + 10 + k as u64;
        core.receive(now, Address::Shard(0), Message { txn: 7, depth: 5, body });
        if let Some(entry) = persisted_entry(&mut core) {
            let applied = core.persisted(now, &entry);
            assert!(!matches!(applied, settle_commit::Applied::Refused(_)), "{applied:?}");
        }
        settled(&core);
    }
    // Even a resolution that aborts it, written by a confused leader, is refused.
    let contradiction = settle_commit::Entry {
        timestamp: at + 100,
        record: Record::Resolve { txn: txn.clone(), outcome: abort },
    };
    core.persisted(NOW_MS + 20, &contradiction);
    settled(&core);
}

/// A coordinator asks the other participants while its own shard prepares, except
/// when that prepare waits for a transaction in doubt here (a post of its pending
/// transfer): then the others are asked once it voted, so that they hold nothing, and
/// the vote timeout does not run, while it waits. (2PC's classic form: the last agent
/// prepares with its decision, but a prepare that waits runs the classic form too.)
#[test]
fn a_coordinator_whose_prepare_waits_asks_the_others_once_it_voted() {
    use settle_ledger::TransferFlags;
    let mut ledger = Ledger::new(Default::default());
    let account = Account { id: 1, ledger: 1, code: 1, ..Default::default() };
    ledger.create_accounts(NOW_MS * 1_000_000 - 1, &[account]).unwrap();
    let config = Config { last_agent: false, ..Config::new(1) };
    let mut core = ShardCore::new(config, ShardState::new(0, ledger), 1, NOW_MS);
    let prepares_to_shard_one = |commands: &[Command], id: u128| {
        commands.iter().any(|command| {
            matches!(command, Command::Send { to: Address::Shard(1), message }
                if message.txn == id && matches!(message.body, Body::Prepare { .. }))
        })
    };
    let persists = |commands: Vec<Command>| -> Vec<settle_commit::Entry> {
        commands
            .into_iter()
            .filter_map(|command| match command {
                Command::Persist(entry) => Some(entry),
                _ => None,
            })
            .collect()
    };

    // Pending transfer 7 (1 → 2): shard 1 is asked at once, beside this shard's prepare.
    let base = one_to_two(0);
    let pending = Transfer { id: 7, flags: TransferFlags::PENDING, ..base };
    let pending_txn = Txn::new(Protocol::TwoPhase, vec![pending], vec![[0, 1]]).unwrap();
    core.submit(NOW_MS, 1, pending_txn.clone()).unwrap();
    let commands = core.take_commands();
    assert!(prepares_to_shard_one(&commands, 7), "asked while this shard prepares");
    let entries = persists(commands);
    assert_eq!(entries.len(), 1);
    core.persisted(NOW_MS + 1, &entries[0]);
    core.take_commands(); // The own vote, to this shard's coordinator role.

    // Its post, submitted while 7 is in doubt here: this shard's prepare waits, and
    // shard 1 is not asked.
    let post =
        Transfer { id: 8, pending_id: 7, flags: TransferFlags::POST_PENDING_TRANSFER, ..base };
    let post_txn = Txn::new(Protocol::TwoPhase, vec![post], vec![[0, 1]]).unwrap();
    core.submit(NOW_MS + 2, 2, post_txn).unwrap();
    let commands = core.take_commands();
    assert!(!prepares_to_shard_one(&commands, 8), "not asked while the prepare waits");
    assert!(persists(commands).is_empty(), "the prepare waits");

    // 7 commits here: the post prepares, votes, and then shard 1 is asked.
    commit_seven(&mut core, pending_txn);
    let resolve = persists(core.take_commands());
    core.persisted(NOW_MS + 4, &resolve[0]);
    let prepare = persists(core.take_commands());
    assert!(
        matches!(&prepare[..], [entry] if matches!(&entry.record, Record::Prepare { txn } if txn.id() == 8))
    );
    core.persisted(NOW_MS + 5, &prepare[0]);
    let vote = core.take_commands();
    let Some(Command::Send { message, .. }) =
        vote.into_iter().find(|c| matches!(c, Command::Send { message, .. } if message.txn == 8))
    else {
        panic!("the post's vote goes to the coordinator role");
    };
    core.receive(NOW_MS + 6, Address::Shard(0), message);
    assert!(prepares_to_shard_one(&core.take_commands(), 8), "asked once this shard voted");
}
