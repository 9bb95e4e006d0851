//! 2PC's coordinator as the last agent, driven by hand: shard 0 holds account 1 and
//! coordinates transfers from it to account 2 on shard 1, whose messages the tests
//! write. It asks shard 1 alone, then prepares, decides and carries out its own side in
//! one write, after the other's prepare in time, and tells shard 1 alone.

use settle_commit::message::{Body, Message, Record};
use settle_commit::state::CoordinatorRecord;
use settle_commit::txn::SideEntry;
use settle_commit::{Address, Applied, Command, Config, Entry, Outcome, Protocol, ShardCore};
use settle_commit::{ShardState, Txn, Vote};
use settle_ledger::store::{ReservationState, Store};
use settle_ledger::TransferFlags;
use settle_ledger::{Account, CreateTransferResult as R, Ledger, Side, SideVote, Transfer};

const NOW_MS: u64 = 1_000_000;
/// Shard 1's clock runs this far ahead of shard 0's (within the skew allowed).
const AHEAD_NS: u64 = 30_000_000;

/// Shard 0's core, holding account 1 with 100 credited (so debits fit under a limit).
fn coordinator() -> ShardCore {
    let mut ledger = Ledger::new(Default::default());
    let account = Account { id: 1, ledger: 1, code: 1, ..Default::default() };
    ledger.create_accounts(NOW_MS * 1_000_000 - 1, &[account]).unwrap();
    ShardCore::new(Config::new(1), ShardState::new(0, ledger), 1, NOW_MS)
}

/// Transfer `id` of 5 from account 1 (shard 0) to account 2 (shard 1).
fn one_to_two(id: u128, flags: TransferFlags) -> Txn {
    let transfer = Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 5,
        ledger: 1,
        code: 1,
        flags,
        ..Default::default()
    };
    Txn::new(Protocol::TwoPhase, vec![transfer], vec![[0, 1]]).unwrap()
}

/// Shard 1's vote on transfer 0's credit side, given at `at`.
fn vote(vote: SideVote, at: u64) -> Message {
    let entry = SideEntry { transfer: 0, side: Side::Credit, vote, at };
    Message { txn: 7, depth: 2, body: Body::Vote { vote: Vote::Sides(vec![entry]) } }
}

fn persisted(commands: &[Command]) -> Vec<Entry> {
    let entries = commands.iter().filter_map(|command| match command {
        Command::Persist(entry) => Some(entry.clone()),
        _ => None,
    });
    entries.collect()
}

fn sent_to(commands: &[Command], shard: u32) -> Vec<Body> {
    let sent = commands.iter().filter_map(|command| match command {
        Command::Send { to: Address::Shard(to), message } if *to == shard => {
            Some(message.body.clone())
        }
        _ => None,
    });
    sent.collect()
}

fn account_one(core: &ShardCore) -> Account {
    core.state().ledger.store().account(1).expect("account 1")
}

/// Submits `txn` (id 7) and answers for shard 1 with `other`, at shard 1's clock:
/// returns what applying the coordinator's one write did, and the commands after it.
fn run(core: &mut ShardCore, txn: &Txn, other: SideVote) -> (Applied, Vec<Command>) {
    core.submit(NOW_MS, 1, txn.clone()).unwrap();
    let commands = core.take_commands();
    assert!(persisted(&commands).is_empty(), "nothing written before the others vote");
    assert!(sent_to(&commands, 0).is_empty(), "no message to its own participant role");
    assert!(matches!(sent_to(&commands, 1)[..], [Body::Prepare { .. }]), "{commands:?}");

    core.receive(NOW_MS + 3, Address::Shard(1), vote(other, NOW_MS * 1_000_000 + AHEAD_NS));
    let entries = persisted(&core.take_commands());
    assert!(matches!(entries[..], [Entry { record: Record::DecideLast { .. }, .. }]));
    let applied = core.persisted(NOW_MS + 4, &entries[0]);
    (applied, core.take_commands())
}

#[test]
fn a_commit_is_written_carried_out_and_sent_on_in_one_step() {
    let mut core = coordinator();
    let txn = one_to_two(7, TransferFlags::empty());
    let prepared = SideVote::Prepared { amount: 5, account_ledger: 1 };
    let (applied, commands) = run(&mut core, &txn, prepared);
    assert_eq!(applied, Applied::DecidedHere(7));

    // The client has its answer; shard 1 has the decision; this shard needs neither.
    assert!(commands.iter().any(|c| matches!(c, Command::Reply { results, .. }
        if results == &[R::Ok])));
    assert!(matches!(sent_to(&commands, 1)[..], [Body::Decision { .. }]));
    assert!(sent_to(&commands, 0).is_empty());
    assert!(persisted(&commands).is_empty(), "no resolution to write here");

    // Posted, nothing reserved, nothing in doubt.
    let account = account_one(&core);
    assert_eq!((account.debits_posted, account.debits_pending), (5, 0));
    let state = core.state();
    assert!(state.ledger.store().reservation(7, Side::Debit).is_none());
    assert!(state.participants.is_empty());
    assert_eq!(state.resolved_here(&txn), Some(vec![true]));

    // The agreed timestamp is this shard's last prepare, at or after shard 1's, and this
    // shard's clock is there: a snapshot read here sees all of it or nothing.
    let Some(CoordinatorRecord::Decided { outcome: Outcome::Commit(commit), .. }) =
        state.coordinated.get(&7)
    else {
        panic!("a commit: {:?}", state.coordinated)
    };
    assert_eq!(commit.amounts, vec![5]);
    assert!(commit.at >= NOW_MS * 1_000_000 + AHEAD_NS, "at or after the other's prepare");
    assert_eq!(commit.at, state.ledger.commit_timestamp());

    // Shard 1 carried it out: the decision is forgotten at the next tick.
    core.receive(NOW_MS + 5, Address::Shard(1), Message { txn: 7, depth: 4, body: Body::Resolved });
    core.tick(NOW_MS + 6);
    let forget = persisted(&core.take_commands());
    assert!(matches!(&forget[..], [Entry { record: Record::Forget { txns }, .. }] if txns == &[7]));
}

#[test]
fn the_smaller_amount_of_the_two_sides_is_posted() {
    let mut core = coordinator();
    let txn = one_to_two(7, TransferFlags::BALANCING_CREDIT);
    let (applied, _) = run(&mut core, &txn, SideVote::Prepared { amount: 3, account_ledger: 1 });
    assert_eq!(applied, Applied::DecidedHere(7));
    assert_eq!(account_one(&core).debits_posted, 3);
    let stored = core.state().ledger.store().transfer(7).expect("stored");
    assert_eq!(stored.amount, 3);
}

#[test]
fn a_refusal_elsewhere_leaves_the_account_alone_and_burns_the_id_here() {
    let mut core = coordinator();
    let txn = one_to_two(7, TransferFlags::empty());
    let refused = SideVote::Rejected { result: R::ExceedsDebits, account_ledger: Some(1) };
    let (applied, commands) = run(&mut core, &txn, refused);
    assert_eq!(applied, Applied::DecidedHere(7));
    assert!(commands.iter().any(|c| matches!(c, Command::Reply { results, .. }
        if results == &[R::ExceedsDebits])));
    let account = account_one(&core);
    assert_eq!((account.debits_posted, account.debits_pending), (0, 0));
    let side = core.state().ledger.side_state(7, Side::Debit);
    assert!(matches!(side, Some((_, ReservationState::Aborted))), "{side:?}");

    // A prepare of it written later (a new leader that resumed it in the classic form)
    // finds it carried out, and reserves nothing.
    let resumed = Entry { timestamp: (NOW_MS + 9) * 1_000_000, record: Record::Prepare { txn } };
    core.persisted(NOW_MS + 9, &resumed);
    assert_eq!(account_one(&core).debits_pending, 0);
    assert!(core.state().participants.is_empty());
}

#[test]
fn a_decision_written_first_stands() {
    let mut core = coordinator();
    let txn = one_to_two(7, TransferFlags::empty());
    core.submit(NOW_MS, 1, txn.clone()).unwrap();
    core.take_commands();
    // An earlier leader's abort, first in the log.
    let results = vec![R::IdAlreadyFailed];
    let abort = Outcome::Abort { results, record_failed: true };
    let decide = Record::Decide { txn: txn.clone(), outcome: abort.clone() };
    core.persisted(NOW_MS + 1, &Entry { timestamp: (NOW_MS + 1) * 1_000_000, record: decide });
    let votes = vec![(
        1,
        Vote::Sides(vec![SideEntry {
            transfer: 0,
            side: Side::Credit,
            vote: SideVote::Prepared { amount: 5, account_ledger: 1 },
            at: NOW_MS * 1_000_000,
        }]),
    )];
    let last = Record::DecideLast { txn, votes };
    let applied =
        core.persisted(NOW_MS + 2, &Entry { timestamp: (NOW_MS + 2) * 1_000_000, record: last });
    assert_eq!(applied, Applied::Coordinator(7));
    assert_eq!(account_one(&core).debits_posted, 0, "its sides were not touched");
    assert!(matches!(core.state().coordinated.get(&7),
        Some(CoordinatorRecord::Decided { outcome, .. }) if *outcome == abort));
}

#[test]
fn a_vote_from_beyond_the_clocks_skew_is_not_taken() {
    let mut core = coordinator();
    let txn = one_to_two(7, TransferFlags::empty());
    core.submit(NOW_MS, 1, txn).unwrap();
    core.take_commands();
    let skew_ns = Config::new(1).clock_skew_max_ms * 1_000_000;
    let prepared = SideVote::Prepared { amount: 5, account_ledger: 1 };
    let far = vote(prepared, NOW_MS * 1_000_000 + 2 * skew_ns);
    core.receive(NOW_MS + 3, Address::Shard(1), far);
    assert!(persisted(&core.take_commands()).is_empty(), "no decision on that vote");
    assert_eq!(account_one(&core).debits_posted, 0);
}

/// The review's case: while the last agent waits for votes, another transaction of the
/// same transfer (a retry grouped otherwise) aborted its side here. The last agent's
/// write still decides (an abort, its side voting the abort it finds), and tells the
/// other shard, which would otherwise stay in doubt.
#[test]
fn a_side_aborted_meanwhile_still_gets_a_decision_to_the_others() {
    let mut core = coordinator();
    let txn = one_to_two(7, TransferFlags::empty());
    core.submit(NOW_MS, 1, txn.clone()).unwrap();
    core.take_commands();
    let at = core.state().ledger.commit_timestamp() + 1;
    core.ledger_mut().abort_side(at, &txn.transfers[0], Side::Debit, true).unwrap();

    let prepared = SideVote::Prepared { amount: 5, account_ledger: 1 };
    core.receive(NOW_MS + 3, Address::Shard(1), vote(prepared, NOW_MS * 1_000_000));
    let entries = persisted(&core.take_commands());
    assert!(matches!(entries[..], [Entry { record: Record::DecideLast { .. }, .. }]));
    assert_eq!(core.persisted(NOW_MS + 4, &entries[0]), Applied::DecidedHere(7));
    let commands = core.take_commands();
    let to_other = sent_to(&commands, 1);
    assert!(
        matches!(&to_other[..], [Body::Decision { outcome: Outcome::Abort { .. }, .. }]),
        "{to_other:?}"
    );
    assert_eq!(account_one(&core).debits_posted, 0);
}

/// A vote for another transaction of the same id (the same transfer grouped otherwise)
/// does not count for the one the last agent works on, and that one's prepare here
/// does not run beside it.
#[test]
fn another_transaction_of_the_id_does_not_join_the_last_agents() {
    let mut core = coordinator();
    let txn = one_to_two(7, TransferFlags::empty());
    core.submit(NOW_MS, 1, txn.clone()).unwrap();
    core.take_commands();
    // [7, 8]: the same first transfer, so the same id, and another transaction.
    let second = Transfer { id: 8, ..txn.transfers[0] };
    let other =
        Txn::new(Protocol::TwoPhase, vec![txn.transfers[0], second], vec![[0, 1], [0, 1]]).unwrap();
    assert_eq!(other.id(), txn.id());
    let entry = SideEntry {
        transfer: 0,
        side: Side::Debit,
        vote: SideVote::Prepared { amount: 5, account_ledger: 1 },
        at: NOW_MS * 1_000_000,
    };
    let prepared = Body::Prepared { txn: other.clone(), vote: Vote::Sides(vec![entry]) };
    core.receive(NOW_MS + 1, Address::Shard(0), Message { txn: 7, depth: 1, body: prepared });
    let prepare = Body::Prepare { txn: other };
    core.receive(NOW_MS + 1, Address::Shard(0), Message { txn: 7, depth: 1, body: prepare });
    assert!(persisted(&core.take_commands()).is_empty(), "neither decided nor prepared");

    let prepared = SideVote::Prepared { amount: 5, account_ledger: 1 };
    core.receive(NOW_MS + 3, Address::Shard(1), vote(prepared, NOW_MS * 1_000_000));
    let entries = persisted(&core.take_commands());
    assert!(
        matches!(&entries[..], [Entry { record: Record::DecideLast { txn: decided, .. }, .. }]
            if *decided == txn),
        "{entries:?}"
    );
    assert_eq!(core.persisted(NOW_MS + 4, &entries[0]), Applied::DecidedHere(7));
    assert_eq!(account_one(&core).debits_posted, 5);
}
