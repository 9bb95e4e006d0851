//! The commit codec: round trips, and garbage never panics.

use settle_commit::codec::{self, DecodeError};
use settle_commit::message::ThreePhaseState;
use settle_commit::txn::SideEntry;
use settle_commit::{
    Body, Commit, Entry, Message, Outcome, Protocol, Record, ShardMap, ShardReplicas, Txn,
    UnitAbort, Vote,
};
use settle_ledger::{CreateTransferResult as R, Side, SideVote, Transfer, TransferFlags};

fn transfer(id: u128) -> Transfer {
    let mut t = Transfer::from_bytes(&[0u8; 128]);
    t.id = id;
    t.debit_account_id = 1;
    t.credit_account_id = 2;
    t.amount = 5;
    t.ledger = 1;
    t.code = 1;
    t.flags = TransferFlags::PENDING;
    t
}

fn txn() -> Txn {
    Txn::new(Protocol::PaxosCommit, vec![transfer(10), transfer(11)], vec![[0, 1], [0, 2]])
        .expect("a txn")
}

/// Three units: a transfer, a chain of two, a transfer.
fn batch() -> Txn {
    let transfers = vec![transfer(20), transfer(21), transfer(22), transfer(23)];
    let placement = vec![[0, 1], [0, 2], [2, 1], [0, 1]];
    Txn::batch(Protocol::TwoPhase, transfers, placement, vec![1, 3, 4]).expect("a batch")
}

/// A commit of `batch()` whose chain aborts.
fn partial() -> Commit {
    let abort = UnitAbort {
        unit: 1,
        results: vec![R::LinkedEventFailed, R::ExceedsCredits],
        record_failed: false,
    };
    Commit { amounts: vec![5, 0, 0, 5], at: 12, aborted: vec![abort] }
}

fn shard_map() -> ShardMap {
    let entry = |shard, replicas: &[u64]| ShardReplicas { shard, replicas: replicas.to_vec() };
    ShardMap::new(3, vec![entry(1, &[1, 2, 3]), entry(2, &[2, 3, 4])]).expect("a map")
}

fn samples() -> (Vec<Entry>, Vec<Message>) {
    let vote = Vote::Sides(vec![
        SideEntry {
            transfer: 0,
            side: Side::Debit,
            vote: SideVote::Prepared { amount: 5, account_ledger: 1 },
            at: 1_000,
        },
        SideEntry {
            transfer: 1,
            side: Side::Debit,
            vote: SideVote::Rejected { result: R::ExceedsCredits, account_ledger: Some(1) },
            at: 1_001,
        },
        SideEntry { transfer: 1, side: Side::Credit, vote: SideVote::Busy, at: u64::MAX },
    ]);
    let commit =
        Outcome::Commit(Commit { amounts: vec![u128::MAX, 1 << 63], at: 7, aborted: vec![] });
    let abort = Outcome::Abort {
        results: vec![R::LinkedEventFailed, R::ExceedsCredits],
        record_failed: true,
    };
    let records = vec![
        Record::Local { client: 7, transfers: vec![transfer(1)] },
        Record::Prepare { txn: txn() },
        Record::PreCommit {
            txn: 10,
            commit: Commit { amounts: vec![5, 5], at: 8, aborted: vec![] },
        },
        Record::CoordinatorPreCommit {
            txn: txn(),
            commit: Commit { amounts: vec![5, 4], at: 9, aborted: vec![] },
        },
        Record::Decide { txn: txn(), outcome: commit.clone() },
        Record::Resolve { txn: txn(), outcome: abort.clone() },
        Record::ResolvePrepared {
            txn: 1 << 100,
            digest: u128::MAX - 3,
            outcome: Outcome::Commit(partial()),
        },
        Record::DecidePrepared { txn: 12, digest: 5, outcome: Outcome::Commit(partial()) },
        Record::ReadPoint { client: 3, at: 1 << 60, incarnation: 9 },
        Record::Prepare { txn: batch() },
        Record::Decide { txn: batch(), outcome: Outcome::Commit(partial()) },
        Record::ShardMap(shard_map()),
        // Votes of every kind, prepare timestamps as far apart as they can be.
        Record::DecideLast { txn: batch(), votes: vec![(1, vote.clone()), (2, Vote::Aborted)] },
    ];
    let entries = records.into_iter().map(|record| Entry { timestamp: 99, record }).collect();
    let accepted = settle_commit::message::Accepted { instance: 2, ballot: 7 << 32, vote };
    let bodies = vec![
        Body::Prepared { txn: txn(), vote: accepted.vote.clone() },
        Body::BeginCommit { txn: txn() },
        Body::Prepare { txn: txn() },
        Body::Vote { vote: Vote::Aborted },
        Body::PreCommit {
            txn: txn(),
            commit: Commit { amounts: vec![1, 2], at: 10, aborted: vec![] },
        },
        Body::PreCommitAck { aborted: true },
        Body::Decision { txn: txn(), outcome: abort },
        Body::Inquire { txn: txn() },
        Body::StateRequest { txn: txn() },
        Body::StateReply {
            state: ThreePhaseState::PreCommitted,
            outcome: Some(commit),
            commit: Some(Commit { amounts: vec![3], at: 11, aborted: vec![] }),
        },
        Body::Phase2a { txn: txn(), accepted: accepted.clone() },
        Body::Phase2b { from: 1, accepted: vec![accepted.clone()] },
        Body::Phase1a { txn: txn(), ballot: 3 },
        Body::Phase1b { from: 2, ballot: 3, accepted: vec![accepted], rejected: Some(9) },
        Body::Decision { txn: batch(), outcome: Outcome::Commit(partial()) },
        Body::PreCommit { txn: batch(), commit: partial() },
        Body::Replicas { shard: 2, replicas: vec![2, 3, 5] },
    ];
    let messages = bodies.into_iter().map(|body| Message { txn: 10, depth: 3, body }).collect();
    (entries, messages)
}

#[test]
fn every_entry_and_message_round_trips() {
    let (entries, messages) = samples();
    for entry in entries {
        assert_eq!(codec::decode_entry(&codec::encode_entry(&entry)), Ok(entry));
    }
    for message in messages {
        assert_eq!(codec::decode_message(&codec::encode_message(&message)), Ok(message));
    }
}

#[test]
fn truncated_extended_and_flipped_bytes_are_errors_not_panics() {
    let (entries, messages) = samples();
    let encoded: Vec<(Vec<u8>, bool)> = entries
        .iter()
        .map(|e| (codec::encode_entry(e), true))
        .chain(messages.iter().map(|m| (codec::encode_message(m), false)))
        .collect();
    let decode = |bytes: &[u8], entry: bool| -> Result<(), DecodeError> {
        if entry {
            codec::decode_entry(bytes).map(|_| ())
        } else {
            codec::decode_message(bytes).map(|_| ())
        }
    };
    for (bytes, entry) in encoded {
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], entry).is_err(), "a prefix of {cut} bytes decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer, entry), Err(DecodeError::Trailing(1)));
        // Any single flipped byte decodes to something or fails; it never panics.
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0xA5;
            let _ = decode(&flipped, entry);
        }
    }
    assert_eq!(codec::decode_entry(&[0x01, 2, 3]), Err(DecodeError::BadTag(1)));
}

#[test]
fn protocol_records_round_trip_for_snapshots() {
    use settle_commit::state::{CoordinatorRecord, ParticipantRecord};
    use std::collections::BTreeMap;
    let participant = ParticipantRecord {
        txn: txn(),
        vote: Vote::Aborted,
        precommitted: Some(Commit { amounts: vec![5, 5], at: 12, aborted: vec![] }),
        outcome: Some(Outcome::Commit(Commit { amounts: vec![5, 5], at: 12, aborted: vec![] })),
    };
    let participants = BTreeMap::from([(10, participant)]);
    let coordinated = BTreeMap::from([(
        10,
        CoordinatorRecord::Decided {
            txn: txn(),
            outcome: Outcome::Commit(Commit { amounts: vec![5, 5], at: 13, aborted: vec![] }),
        },
    )]);
    // Without a shard map (every shard but the metadata shard; snapshots of earlier
    // builds), and with one.
    let bytes = codec::encode_records(&participants, &coordinated, None);
    let expected = (participants.clone(), coordinated.clone(), None);
    assert_eq!(codec::decode_records(&bytes), Ok(expected));
    assert_eq!(codec::decode_records(&[]), Ok((BTreeMap::new(), BTreeMap::new(), None)));
    assert!(codec::decode_records(&bytes[..bytes.len() - 1]).is_err());
    let map = shard_map();
    let with_map = codec::encode_records(&participants, &coordinated, Some(&map));
    assert_eq!(codec::decode_records(&with_map), Ok((participants, coordinated, Some(map))));
    assert!(codec::decode_records(&with_map[..with_map.len() - 1]).is_err());
}

/// Entries written before transactions had units, compact transfers and varint amounts
/// (whole 128-byte records, 16-byte amounts, no flags) still decode, as one unit.
#[test]
fn entries_of_the_earlier_encoding_decode() {
    let transfer = transfer(10);
    let mut old = vec![codec::ENTRY_TAG];
    old.extend_from_slice(&99u64.to_le_bytes());
    old.push(4); // Decide
    old.push(0); // 2PC, no flags
    old.extend_from_slice(&1u32.to_le_bytes());
    old.extend_from_slice(&transfer.to_bytes());
    old.extend_from_slice(&0u32.to_le_bytes());
    old.extend_from_slice(&1u32.to_le_bytes());
    old.push(0); // commit
    old.extend_from_slice(&1u32.to_le_bytes());
    old.extend_from_slice(&5u128.to_le_bytes());
    old.extend_from_slice(&7u64.to_le_bytes());
    let txn = Txn::new(Protocol::TwoPhase, vec![transfer], vec![[0, 1]]).expect("a txn");
    let outcome = Outcome::Commit(Commit { amounts: vec![5], at: 7, aborted: vec![] });
    let expected = Entry { timestamp: 99, record: Record::Decide { txn, outcome } };
    assert_eq!(codec::decode_entry(&old), Ok(expected.clone()));
    // Today's encoding of the same entry is smaller and decodes the same.
    let new = codec::encode_entry(&expected);
    assert!(new.len() < old.len() - 100, "{} bytes against {}", new.len(), old.len());
    assert_eq!(codec::decode_entry(&new), Ok(expected));
}
