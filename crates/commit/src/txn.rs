//! A cross-shard transaction: what it holds, where its sides live, the votes its
//! participants give and the outcome the coordinator derives from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use settle_ledger::{combine_votes, CreateTransferResult as R, Decision, Side, SideVote, Transfer};

/// A shard's id.
pub type ShardId = u32;

/// A transaction's id: the id of its first transfer (ids are unique forever, so this
/// names the transaction forever too).
pub type TxnId = u128;

/// Most transfers in one transaction (a linked chain). Bounded so that one message and one
/// record stay small; a batch holds at most 8189 events anyway.
pub const TXN_TRANSFERS_MAX: usize = 64;

/// The atomic-commit protocol a transaction runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Two-phase commit: blocks while its coordinator is down.
    TwoPhase,
    /// Three-phase commit (Skeen) with the timeout-driven termination protocol: does not
    /// block on a coordinator crash, but is unsafe under network partitions. Runs only
    /// when explicitly enabled.
    ThreePhase,
    /// Paxos Commit (Gray & Lamport): each participant's vote is chosen by a Paxos
    /// instance of 2F+1 acceptors; does not block with up to F acceptor faults.
    PaxosCommit,
}

impl Protocol {
    pub const ALL: [Protocol; 3] =
        [Protocol::TwoPhase, Protocol::ThreePhase, Protocol::PaxosCommit];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TwoPhase => "2pc",
            Protocol::ThreePhase => "3pc",
            Protocol::PaxosCommit => "paxos-commit",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|protocol| protocol.name() == name)
    }

    /// Stable byte for records.
    pub fn code(self) -> u8 {
        match self {
            Protocol::TwoPhase => 0,
            Protocol::ThreePhase => 1,
            Protocol::PaxosCommit => 2,
        }
    }
}

/// One atomic unit whose sides span shards: a single transfer, or a linked chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub protocol: Protocol,
    /// In chain order. The `linked` flag is cleared: the chain is this transaction.
    /// Shared: a transaction travels in many messages and records, cloned cheaply.
    pub transfers: Arc<[Transfer]>,
    /// For each transfer, the shards of its debit and its credit account.
    pub placement: Arc<[[ShardId; 2]]>,
}

impl Txn {
    /// Builds a transaction; `None` when it is empty, too long, badly placed, or names
    /// one transfer id twice (each side of a transfer is reserved under its id).
    pub fn new(
        protocol: Protocol,
        transfers: Vec<Transfer>,
        placement: Vec<[ShardId; 2]>,
    ) -> Option<Txn> {
        if transfers.is_empty()
            || transfers.len() > TXN_TRANSFERS_MAX
            || transfers.len() != placement.len()
        {
            return None;
        }
        let mut ids: Vec<u128> = transfers.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) {
            return None;
        }
        let transfers = transfers
            .into_iter()
            .map(|t| Transfer { flags: t.flags - settle_ledger::TransferFlags::LINKED, ..t })
            .collect();
        Some(Txn { protocol, transfers, placement: placement.into() })
    }

    pub fn id(&self) -> TxnId {
        self.transfers[0].id
    }

    /// The coordinator: the shard of the first transfer's debit account.
    pub fn coordinator(&self) -> ShardId {
        self.placement[0][0]
    }

    /// The participant shards, coordinator first, then ascending.
    pub fn participants(&self) -> Vec<ShardId> {
        let mut shards: Vec<ShardId> = self.placement.iter().flatten().copied().collect();
        shards.sort_unstable();
        shards.dedup();
        let coordinator = self.coordinator();
        shards.retain(|&shard| shard != coordinator);
        shards.insert(0, coordinator);
        shards
    }

    /// The sides `shard` holds, in chain order.
    pub fn sides_of(&self, shard: ShardId) -> Vec<(usize, Side)> {
        let mut sides = Vec::new();
        for (index, [debit, credit]) in self.placement.iter().enumerate() {
            if *debit == shard {
                sides.push((index, Side::Debit));
            }
            if *credit == shard {
                sides.push((index, Side::Credit));
            }
        }
        sides
    }
}

/// One side's vote inside a participant's vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideEntry {
    pub transfer: u16,
    pub side: Side,
    pub vote: SideVote,
    /// The shard's ledger timestamp of the prepare: the agreed commit timestamp is the
    /// latest of these (a hybrid-logical-clock value, see [`Commit::at`]).
    pub at: u64,
}

/// A participant's vote: its sides' votes, or "aborted" when a recovery coordinator
/// chose abort for it without its vote (Paxos Commit) or it never prepared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    Sides(Vec<SideEntry>),
    Aborted,
}

impl Vote {
    /// Whether this participant is prepared to commit every side it holds.
    pub fn prepared(&self) -> bool {
        match self {
            Vote::Sides(sides) => {
                sides.iter().all(|entry| matches!(entry.vote, SideVote::Prepared { .. }))
            }
            Vote::Aborted => false,
        }
    }
}

/// What a commit carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Transfer i's amount.
    pub amounts: Vec<u128>,
    /// The agreed commit timestamp: the latest prepare timestamp of any side. Every
    /// participant advances its ledger clock to at least this before it commits, so a
    /// shard that has committed the transaction has a clock at or past `at`, and one
    /// that prepares after a snapshot read at `T` prepares (and so commits) after `T`.
    /// A snapshot read at `T` sees the transaction exactly when `at <= T`.
    pub at: u64,
}

/// How a transaction ended, decided from its participants' votes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Commit every side.
    Commit(Commit),
    /// Abort every side. `results`: the client's result per transfer. `record_failed`:
    /// the failure was transient, so each side burns the id.
    Abort { results: Vec<R>, record_failed: bool },
}

impl Outcome {
    pub fn committed(&self) -> bool {
        matches!(self, Outcome::Commit(_))
    }

    /// The client's results, one per transfer.
    pub fn results(&self, transfers: usize) -> Vec<R> {
        match self {
            Outcome::Commit(_) => vec![R::Ok; transfers],
            Outcome::Abort { results, .. } => results.clone(),
        }
    }

    /// An abort for a transaction the protocol gave up on (a participant did not answer
    /// in time): a transient failure, so the id is burned as on a single shard.
    pub fn gave_up(transfers: usize) -> Outcome {
        Outcome::Abort {
            results: chain_failure(transfers, 0, R::IdAlreadyFailed),
            record_failed: true,
        }
    }
}

/// The result list of a chain whose transfer `failed` failed with `result`.
fn chain_failure(transfers: usize, failed: usize, result: R) -> Vec<R> {
    (0..transfers).map(|i| if i == failed { result } else { R::LinkedEventFailed }).collect()
}

/// The outcome for a complete set of votes (one per participant), with the results a
/// single shard holding every account would have returned as far as the sides can tell.
///
/// A side that is busy (its pending transfer is held by another in-flight post/void)
/// aborts the transaction with `id_already_failed`: waiting could deadlock two chains
/// that each hold what the other needs, and a Paxos Commit vote cannot be changed once
/// chosen. The client retries with a new id.
pub fn decide(txn: &Txn, votes: &BTreeMap<ShardId, Vote>) -> Outcome {
    let count = txn.transfers.len();
    let side_vote = |index: usize, side: Side| -> SideVote {
        let shard = txn.placement[index][side.code() as usize];
        match votes.get(&shard) {
            Some(Vote::Sides(entries)) => entries
                .iter()
                .find(|entry| entry.transfer as usize == index && entry.side == side)
                .map_or(SideVote::Aborted, |entry| entry.vote),
            Some(Vote::Aborted) | None => SideVote::Aborted,
        }
    };
    let mut amounts = Vec::with_capacity(count);
    let at = votes
        .values()
        .filter_map(|vote| match vote {
            Vote::Sides(entries) => entries.iter().map(|entry| entry.at).max(),
            Vote::Aborted => None,
        })
        .max()
        .unwrap_or(0);
    for index in 0..count {
        match combine_votes(side_vote(index, Side::Debit), side_vote(index, Side::Credit)) {
            Decision::Commit { amount } => amounts.push(amount),
            Decision::Abort { result } => {
                return Outcome::Abort {
                    results: chain_failure(count, index, result),
                    record_failed: result.is_transient() || result == R::IdAlreadyFailed,
                }
            }
            Decision::Retry => {
                return Outcome::Abort {
                    results: chain_failure(count, index, R::IdAlreadyFailed),
                    record_failed: true,
                }
            }
        }
    }
    Outcome::Commit(Commit { amounts, at })
}

/// Gray & Lamport's fault-free cost of committing one transaction with `n` participants
/// and a coordinator that is not co-located (F = `f`): (messages, forced writes), or
/// `None` for 3PC, which their table leaves out.
///
/// - 2PC: 3N−1 messages, N+1 forced writes.
/// - Paxos Commit: (N+1)(F+3)−2 messages, N+F+1 forced writes.
pub fn paper_cost(protocol: Protocol, n: u64, f: u64) -> Option<(u64, u64)> {
    match protocol {
        Protocol::TwoPhase => Some((3 * n - 1, n + 1)),
        Protocol::PaxosCommit => Some(((n + 1) * (f + 3) - 2, n + f + 1)),
        Protocol::ThreePhase => None,
    }
}
