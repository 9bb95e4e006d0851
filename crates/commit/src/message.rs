//! What the protocol cores say to each other, ask their shell to do, and write down.

use settle_ledger::{CreateTransferResult as R, Transfer};

use crate::txn::{Commit, Outcome, ShardId, Txn, TxnId, Vote};

/// Where a protocol message goes: a shard (its leader hosts the participant and the
/// coordinator role), or one acceptor of a shard (Paxos Commit: acceptor `index` lives
/// on replica `index` of the coordinator's shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Shard(ShardId),
    Acceptor { shard: ShardId, index: u8 },
}

/// A Paxos ballot. Ballot 0 belongs to the participant itself (its own vote, the fast
/// path); recovery ballots are `round << 32 | incarnation` of the coordinator's leader,
/// unique because incarnations are.
pub type Ballot = u64;

/// One Paxos instance's accepted value at an acceptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub instance: ShardId,
    pub ballot: Ballot,
    pub vote: Vote,
}

/// A protocol message, always about one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub txn: TxnId,
    /// Message delays since the client's request, along the chain that caused this one
    /// (for the lab's "message delays per transaction").
    pub depth: u32,
    pub body: Body,
}

/// The protocol messages, by the roles they go between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// 2PC and 3PC, initiating participant → coordinator: "I am prepared, here is the
    /// transaction" (Gray & Lamport's first 2PC message).
    Prepared { txn: Txn, vote: Vote },
    /// Paxos Commit, initiating participant → leader.
    BeginCommit { txn: Txn },
    /// Coordinator → participant: prepare your sides (3PC's CanCommit).
    Prepare { txn: Txn },
    /// Participant → coordinator (2PC, 3PC).
    Vote { vote: Vote },
    /// 3PC coordinator → participant.
    PreCommit { txn: Txn, commit: Commit },
    /// 3PC participant → coordinator. `aborted`: this participant already aborted (the
    /// termination protocol ran), so the coordinator must abort too.
    PreCommitAck { aborted: bool },
    /// Coordinator (or 3PC termination) → participant: the outcome.
    Decision { txn: Txn, outcome: Outcome },
    /// In-doubt participant → coordinator: what was decided?
    Inquire { txn: Txn },
    /// 2PC participant → coordinator: the outcome is carried out here (once every
    /// participant said so, the coordinator forgets its decision).
    Resolved,
    /// 3PC termination: the backup coordinator asks a participant's state.
    StateRequest { txn: Txn },
    /// 3PC termination: a participant's state, with the outcome once it has one and the
    /// commit it was precommitted with.
    StateReply { state: ThreePhaseState, outcome: Option<Outcome>, commit: Option<Commit> },
    /// Paxos Commit phase 2a: participant (ballot 0) or leader → acceptor.
    Phase2a { txn: Txn, accepted: Accepted },
    /// Paxos Commit phase 2b, bundled: acceptor → leader, every instance it accepted.
    Phase2b { from: u8, accepted: Vec<Accepted> },
    /// Paxos Commit phase 1a: recovering leader → acceptor.
    Phase1a { txn: Txn, ballot: Ballot },
    /// Paxos Commit phase 1b: acceptor → leader. `rejected`: it promised a higher ballot.
    Phase1b { from: u8, ballot: Ballot, accepted: Vec<Accepted>, rejected: Option<Ballot> },
    /// A shard's leader → the metadata shard: the nodes holding this shard's replicas
    /// now (its group's voters), for the shard map. Sent now and then, not per
    /// transaction (`Message::txn` is 0).
    Replicas { shard: u64, replicas: Vec<u64> },
}

impl Body {
    /// The message's kind, for the counts in reports.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Prepared { .. } => Kind::Prepared,
            Body::BeginCommit { .. } => Kind::BeginCommit,
            Body::Prepare { .. } => Kind::Prepare,
            Body::Vote { .. } => Kind::Vote,
            Body::PreCommit { .. } => Kind::PreCommit,
            Body::PreCommitAck { .. } => Kind::PreCommitAck,
            Body::Decision { .. } => Kind::Decision,
            Body::Inquire { .. } => Kind::Inquire,
            Body::Resolved => Kind::Resolved,
            Body::StateRequest { .. } => Kind::StateRequest,
            Body::StateReply { .. } => Kind::StateReply,
            Body::Phase2a { .. } => Kind::Phase2a,
            Body::Phase2b { .. } => Kind::Phase2b,
            Body::Phase1a { .. } => Kind::Phase1a,
            Body::Phase1b { .. } => Kind::Phase1b,
            Body::Replicas { .. } => Kind::Replicas,
        }
    }
}

/// Message kinds, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Prepared,
    BeginCommit,
    Prepare,
    Vote,
    PreCommit,
    PreCommitAck,
    Decision,
    Inquire,
    StateRequest,
    StateReply,
    Phase2a,
    Phase2b,
    Phase1a,
    Phase1b,
    Resolved,
    Replicas,
}

impl Kind {
    pub const COUNT: usize = 16;

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether this kind belongs to the fault-free commit path (what Gray & Lamport
    /// count), as opposed to recovery traffic (inquiries, termination, phase 1) and the
    /// acknowledgements that let a coordinator forget (after the outcome is known).
    pub fn normal_path(self) -> bool {
        !matches!(
            self,
            Kind::Inquire
                | Kind::StateRequest
                | Kind::StateReply
                | Kind::Phase1a
                | Kind::Phase1b
                | Kind::Resolved
                | Kind::Replicas
        )
    }
}

/// A 3PC participant's state, as the termination protocol sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreePhaseState {
    /// Never prepared (or prepared and refused).
    Unprepared,
    /// Prepared, waiting: uncertain.
    Uncertain,
    PreCommitted,
    Committed,
    Aborted,
}

/// Who is waiting for a reply.
pub type ClientRef = u64;

/// A write a shard forces to its group (one Raft round in production) before acting on
/// it. Applied by `ShardState::apply`, identically at every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The fast path: a batch whose accounts all live on this shard.
    Local { client: ClientRef, transfers: Vec<Transfer> },
    /// Participant: validate and reserve this shard's sides.
    Prepare { txn: Txn },
    /// 3PC participant: the coordinator said PreCommit, with this commit.
    PreCommit { txn: TxnId, commit: Commit },
    /// 3PC coordinator: every vote was yes; PreCommit goes out.
    CoordinatorPreCommit { txn: Txn, commit: Commit },
    /// 2PC and 3PC coordinator: the decision. The first one written wins.
    Decide { txn: Txn, outcome: Outcome },
    /// `Decide` of a transaction whose participant record this shard (the
    /// coordinator's, which holds every unit's first debit side) holds, naming it
    /// (its id and `Txn::digest`) instead of carrying it. Written only while the record
    /// holds that transaction; applied as that `Decide`, and as nothing when no record
    /// holds it any more (it was decided and carried out here already: a decision goes
    /// before its resolution, and a resolution is what removes the record) or when
    /// the record holds another transaction of that id (a client reused the id).
    DecidePrepared { txn: TxnId, digest: u128, outcome: Outcome },
    /// 2PC's coordinator as the last agent (Gray & Reuter's last-agent optimization):
    /// every other participant voted (`votes`, by shard), and this shard, which
    /// prepared nothing of `txn` yet, prepares its own sides, decides, and carries the
    /// decision out on them, all in this one write; the decision then goes to the
    /// others. Applied as a `Decide` (the first decision written wins) when a
    /// decision is written already, or this shard's participant record holds `txn`
    /// (it prepared as a classic participant: its vote counts, and its resolution
    /// follows the decision as usual).
    DecideLast { txn: Txn, votes: Vec<(ShardId, Vote)> },
    /// Participant: carry out the outcome on this shard's sides.
    Resolve { txn: Txn, outcome: Outcome },
    /// Participant: `Resolve` of a transaction whose participant record this shard
    /// holds, naming it (its id and `Txn::digest`) instead of carrying it (a
    /// resolution's bytes were mostly the transaction's transfers, which the prepare
    /// wrote already). Written only while the record holds that transaction; applied
    /// as that `Resolve`, and as nothing when no record holds it any more (an earlier
    /// resolution carried it out) or when it holds another transaction of that id.
    ResolvePrepared { txn: TxnId, digest: u128, outcome: Outcome },
    /// 2PC coordinator: every participant carried these decisions out; drop them.
    Forget { txns: Vec<TxnId> },
    /// Expire the pending transfers whose deadline passed (where the shell has no
    /// pulse of its own: the simulator; a replica proposes the ledger's `Write::Pulse`).
    Pulse,
    /// A snapshot read's point at this shard: a pulse at `at` (see `read.rs`).
    /// `client` names the read within the incarnation of the leader that wrote it.
    ReadPoint { client: ClientRef, at: u64, incarnation: u32 },
    /// The metadata shard: the cluster's shard map from now on (when newer).
    ShardMap(crate::shard_map::ShardMap),
}

impl Record {
    /// Whether this write is on the commit path before the outcome is known (what Gray
    /// & Lamport count as forced writes), as opposed to carrying the outcome out.
    pub fn commit_path(&self) -> bool {
        matches!(
            self,
            Record::Prepare { .. }
                | Record::PreCommit { .. }
                | Record::CoordinatorPreCommit { .. }
                | Record::Decide { .. }
                | Record::DecidePrepared { .. }
                | Record::DecideLast { .. }
        )
    }
}

/// A record with the timestamp its proposer assigned (the ledger's clock input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub timestamp: u64,
    pub record: Record,
}

/// What a core asks its shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Send {
        to: Address,
        message: Message,
    },
    /// Make the entry durable in this shard's group, then hand it back through
    /// `ShardCore::persisted` (in order).
    Persist(Entry),
    /// Answer a client: one result per transfer.
    Reply {
        client: ClientRef,
        txn: TxnId,
        results: Vec<R>,
    },
    /// Answer a snapshot read's part at this shard.
    ReadReply {
        client: ClientRef,
        read: Result<crate::read::SnapshotPart, crate::read::ReadError>,
    },
}
