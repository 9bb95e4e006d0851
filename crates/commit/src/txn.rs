//! A cross-shard transaction: what it holds, where its sides live, the votes its
//! participants give and the outcome the coordinator derives from them.
//!
//! A transaction is one or more *units* (a single transfer, or a linked chain), each
//! atomic on its own, that share one protocol round: one prepare record per
//! participant, one vote, one decision. Batching units is what makes the per-round
//! costs (records, messages, protocol state) per batch rather than per transfer; the
//! outcome still commits or aborts each unit whole (`Commit::aborted`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use settle_ledger::{combine_votes, CreateTransferResult as R, Decision, Side, SideVote, Transfer};

/// A shard's id.
pub type ShardId = u32;

/// A transaction's id. For a transaction of one unit, the id of its first transfer
/// (ids are unique forever, so this names the transaction forever too, and a retry of
/// the unit is the same transaction). For one of several units, a hash of its transfer
/// ids and unit boundaries: the same batch sent again is the same transaction, and a
/// batch grouped differently (a retry of some of its units, with others) is another,
/// never mistaken for the first (`Txn::batch`). Records do not carry the id: it is
/// derived again when they are read, so the hash is part of the record format.
pub type TxnId = u128;

/// Most transfers in one transaction (its units together). Bounded so that one message
/// and one record stay small (about 140 KiB at most); a batch holds at most 8189 events.
pub const TXN_TRANSFERS_MAX: usize = 1024;

/// Most transfers in one unit (a linked chain).
pub const UNIT_TRANSFERS_MAX: usize = 64;

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

/// Units whose sides span shards (each a single transfer or a linked chain), committed
/// in one protocol round, each atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn {
    pub protocol: Protocol,
    /// Unit after unit, each in chain order. The `linked` flag is cleared: the units say
    /// where chains end. Shared: a transaction travels in many messages and records,
    /// cloned cheaply.
    pub transfers: Arc<[Transfer]>,
    /// For each transfer, the shards of its debit and its credit account.
    pub placement: Arc<[[ShardId; 2]]>,
    /// Where each unit ends (exclusive), ascending; the last is `transfers.len()`.
    pub unit_ends: Arc<[u16]>,
    /// See [`TxnId`].
    id: TxnId,
    /// See [`Txn::participants`]; derived once (the protocols ask at every step).
    participants: Arc<[ShardId]>,
    /// The transaction as records carry it, written once (the fields above are not
    /// changed after construction: the id and this are derived from them).
    encoded: Encoded,
}

/// A transaction's encoding (`codec.rs`), made the first time it is written: one
/// transaction goes into many records and messages (the prepare at each participant,
/// the decision, each resolution), and writing its thousand transfers again each time
/// was a tenth of the cross-shard engine thread. Shared by the clones; not part of
/// the transaction's value (every instance compares equal).
/// Its digest is made once too (see [`Txn::digest`]).
#[derive(Clone, Default)]
pub(crate) struct Encoded(Arc<EncodedOnce>);

#[derive(Default)]
pub(crate) struct EncodedOnce {
    bytes: OnceLock<Box<[u8]>>,
    digest: OnceLock<u128>,
}

impl Encoded {
    /// The encoding, made by `write` the first time.
    pub(crate) fn get_or_init(&self, write: impl FnOnce() -> Vec<u8>) -> &[u8] {
        self.0.bytes.get_or_init(|| write().into_boxed_slice())
    }
}

impl PartialEq for Encoded {
    fn eq(&self, _: &Encoded) -> bool {
        true
    }
}

impl Eq for Encoded {}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Encoded")
    }
}

/// Whether two of `transfers` have the same id (each side of a transfer is reserved
/// under its id, so a transaction names each once).
fn an_id_repeats(transfers: &[Transfer]) -> bool {
    if transfers.len() < 2 {
        return false;
    }
    let mut ids: Vec<u128> = transfers.iter().map(|t| t.id).collect();
    ids.sort_unstable();
    ids.windows(2).any(|pair| pair[0] == pair[1])
}

/// The participants of a transaction placed so (not empty): the coordinator (the first
/// transfer's debit shard) first, then the others ascending.
fn participants_of(placement: &[[ShardId; 2]]) -> Vec<ShardId> {
    let coordinator = placement[0][0];
    let mut others: Vec<ShardId> =
        placement.iter().flatten().copied().filter(|&shard| shard != coordinator).collect();
    others.sort_unstable();
    others.dedup();
    std::iter::once(coordinator).chain(others).collect()
}

impl Txn {
    /// A transaction of one unit; `None` when it is empty, too long, badly placed, or
    /// names one transfer id twice (each side of a transfer is reserved under its id).
    pub fn new(
        protocol: Protocol,
        transfers: Vec<Transfer>,
        placement: Vec<[ShardId; 2]>,
    ) -> Option<Txn> {
        if transfers.len() > UNIT_TRANSFERS_MAX {
            return None;
        }
        let end = transfers.len() as u16;
        Txn::batch(protocol, transfers, placement, vec![end])
    }

    /// The participants a transaction of this one unit would have (coordinator first,
    /// then ascending), without making it: `None` exactly when [`Txn::new`] would
    /// refuse the unit. (A router sorts a request's units by participants before it
    /// batches them into transactions: a transaction made per unit was most of its
    /// work.)
    pub fn unit_participants(
        transfers: &[Transfer],
        placement: &[[ShardId; 2]],
    ) -> Option<Vec<ShardId>> {
        if transfers.is_empty()
            || transfers.len() > UNIT_TRANSFERS_MAX
            || transfers.len() != placement.len()
        {
            return None;
        }
        if an_id_repeats(transfers) {
            return None;
        }
        Some(participants_of(placement))
    }

    /// A transaction of several units (`unit_ends` as in [`Txn::unit_ends`]); `None`
    /// when `new` would refuse it, a unit is empty or too long, or a unit's first debit
    /// account is not on the coordinator's shard (so the coordinator holds a side of
    /// every unit and can answer for each from its own ledger).
    pub fn batch(
        protocol: Protocol,
        transfers: Vec<Transfer>,
        placement: Vec<[ShardId; 2]>,
        unit_ends: Vec<u16>,
    ) -> Option<Txn> {
        if transfers.is_empty()
            || transfers.len() > TXN_TRANSFERS_MAX
            || transfers.len() != placement.len()
            || unit_ends.last().map(|&end| end as usize) != Some(transfers.len())
        {
            return None;
        }
        let mut start = 0usize;
        for &end in &unit_ends {
            let end = end as usize;
            if end <= start
                || end > transfers.len()
                || end - start > UNIT_TRANSFERS_MAX
                || placement[start][0] != placement[0][0]
            {
                return None;
            }
            start = end;
        }
        if an_id_repeats(&transfers) {
            return None;
        }
        let transfers: Arc<[Transfer]> = transfers
            .into_iter()
            .map(|t| Transfer { flags: t.flags - settle_ledger::TransferFlags::LINKED, ..t })
            .collect();
        let id = if unit_ends.len() == 1 {
            transfers[0].id
        } else {
            // Hashed in one piece (BLAKE3 hashes whole chunks in parallel lanes; fed 16
            // bytes at a time it cannot, and this runs at every decode).
            let mut named = Vec::with_capacity(32 + 16 * transfers.len() + 2 * unit_ends.len());
            named.extend_from_slice(b"settle txn of units");
            transfers.iter().for_each(|t| named.extend_from_slice(&t.id.to_le_bytes()));
            unit_ends.iter().for_each(|end| named.extend_from_slice(&end.to_le_bytes()));
            let hash = blake3::hash(&named);
            u128::from_le_bytes(hash.as_bytes()[..16].try_into().expect("16 bytes"))
        };
        let participants = participants_of(&placement).into();
        let placement = placement.into();
        let unit_ends = unit_ends.into();
        let encoded = Encoded::default();
        Some(Txn { protocol, transfers, placement, unit_ends, id, participants, encoded })
    }

    /// A transaction of `units` (each its transfers in chain order, and their
    /// placement), in order; `None` when `batch` would refuse it.
    pub fn of_units<'a>(
        protocol: Protocol,
        units: impl IntoIterator<Item = (&'a [Transfer], &'a [[ShardId; 2]])>,
    ) -> Option<Txn> {
        let (mut transfers, mut placement, mut unit_ends) = (Vec::new(), Vec::new(), Vec::new());
        for (unit_transfers, unit_placement) in units {
            transfers.extend_from_slice(unit_transfers);
            placement.extend_from_slice(unit_placement);
            unit_ends.push(u16::try_from(transfers.len()).ok()?);
        }
        Txn::batch(protocol, transfers, placement, unit_ends)
    }

    /// The units, as ranges of transfer indexes.
    pub fn units(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let starts = std::iter::once(0).chain(self.unit_ends.iter().map(|&end| end as usize));
        starts.zip(self.unit_ends.iter()).map(|(start, &end)| start..end as usize)
    }

    pub fn unit_count(&self) -> usize {
        self.unit_ends.len()
    }

    /// The unit transfer `index` belongs to.
    pub fn unit_of(&self, index: usize) -> usize {
        debug_assert!(index < self.transfers.len());
        self.unit_ends.partition_point(|&end| end as usize <= index)
    }

    /// Whether transfer `index` is a unit of its own.
    pub fn alone(&self, index: usize) -> bool {
        let unit = self.unit_of(index);
        let start = if unit == 0 { 0 } else { self.unit_ends[unit - 1] as usize };
        self.unit_ends[unit] as usize == start + 1
    }

    pub fn id(&self) -> TxnId {
        self.id
    }

    pub(crate) fn encoded(&self) -> &Encoded {
        &self.encoded
    }

    /// What a record that names this transaction instead of carrying it
    /// (`Record::DecidePrepared`, `Record::ResolvePrepared`) says of its content: the
    /// first 128 bits of the BLAKE3 hash of its encoding. The id alone does not say it:
    /// a client may reuse a transfer's id for another transaction once the first is
    /// carried out, and a named record still in the log must not apply to that one.
    pub fn digest(&self) -> u128 {
        *self.encoded.0.digest.get_or_init(|| {
            let hash = blake3::hash(crate::codec::encoded_txn(self));
            u128::from_le_bytes(hash.as_bytes()[..16].try_into().expect("16 bytes"))
        })
    }

    /// The coordinator: the shard of the first transfer's debit account.
    pub fn coordinator(&self) -> ShardId {
        self.placement[0][0]
    }

    /// The participant shards, coordinator first, then ascending.
    pub fn participants(&self) -> Vec<ShardId> {
        self.participants.to_vec()
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
    /// Whether this participant prepared any side: it is in doubt until the outcome.
    pub fn prepared_any(&self) -> bool {
        match self {
            Vote::Sides(sides) => {
                sides.iter().any(|entry| matches!(entry.vote, SideVote::Prepared { .. }))
            }
            Vote::Aborted => false,
        }
    }

    /// Whether this vote, `shard`'s for `txn`, prepared every side `commit` commits
    /// there. An honest coordinator never sends a commit this refuses.
    pub fn allows(&self, txn: &Txn, shard: ShardId, commit: &Commit) -> bool {
        commit.prepared_on(txn, &self.own_sides(txn, shard))
    }

    /// `shard`'s sides of `txn` (as `Txn::sides_of`), each with its vote here if any.
    pub fn own_sides(&self, txn: &Txn, shard: ShardId) -> Vec<(usize, Side, Option<SideVote>)> {
        let entries: &[SideEntry] = match self {
            Vote::Sides(entries) => entries,
            Vote::Aborted => &[],
        };
        // A prepare writes its entries in `sides_of` order, so one walk finds them all;
        // a search covers any other order.
        let mut next = 0;
        let mut find = |index: usize, side: Side| {
            let matches =
                |entry: &SideEntry| entry.transfer as usize == index && entry.side == side;
            if entries.get(next).is_some_and(matches) {
                next += 1;
                return Some(entries[next - 1].vote);
            }
            entries.iter().find(|entry| matches(entry)).map(|entry| entry.vote)
        };
        txn.sides_of(shard)
            .into_iter()
            .map(|(index, side)| (index, side, find(index, side)))
            .collect()
    }
}

/// A unit that aborts inside a transaction that commits its other units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitAbort {
    pub unit: u16,
    /// The client's result per transfer of the unit.
    pub results: Vec<R>,
    /// The failure was transient, so each side burns the id.
    pub record_failed: bool,
}

/// What a commit carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Transfer i's amount (0 for the transfers of an aborted unit).
    pub amounts: Vec<u128>,
    /// The agreed commit timestamp: the latest prepare timestamp of any side. Every
    /// participant advances its ledger clock to at least this before it commits, so a
    /// shard that has committed the transaction has a clock at or past `at`, and one
    /// that prepares after a snapshot read at `T` prepares (and so commits) after `T`.
    /// A snapshot read at `T` sees the transaction exactly when `at <= T`.
    pub at: u64,
    /// The units that abort nevertheless, ascending by unit; empty for a transaction
    /// whose units all commit (always so for a transaction of one unit).
    pub aborted: Vec<UnitAbort>,
}

impl Commit {
    /// How unit `unit` aborts, if it does.
    pub fn aborted_unit(&self, unit: usize) -> Option<&UnitAbort> {
        let found = self.aborted.binary_search_by_key(&unit, |abort| abort.unit as usize);
        found.ok().map(|i| &self.aborted[i])
    }

    /// Whether transfer `index` of `txn` commits.
    pub fn commits(&self, txn: &Txn, index: usize) -> bool {
        self.aborted.is_empty() || self.aborted_unit(txn.unit_of(index)).is_none()
    }

    /// Whether every side of `sides` (a shard's, as `Vote::own_sides` gives them) that
    /// this commit commits voted `Prepared` (`Vote::allows`).
    pub fn prepared_on(&self, txn: &Txn, sides: &[(usize, Side, Option<SideVote>)]) -> bool {
        sides.iter().all(|&(index, _, vote)| {
            !self.commits(txn, index) || matches!(vote, Some(SideVote::Prepared { .. }))
        })
    }

    /// Whether every unit aborts.
    pub fn commits_none(&self, txn: &Txn) -> bool {
        self.aborted.len() == txn.unit_count()
    }

    /// Whether this is a commit an honest coordinator could derive for `txn`: one
    /// amount per transfer, aborted units named once each, in order, each with one
    /// result per transfer.
    pub fn fits(&self, txn: &Txn) -> bool {
        self.amounts.len() == txn.transfers.len()
            && self.aborted.windows(2).all(|pair| pair[0].unit < pair[1].unit)
            && self.aborted.iter().all(|abort| {
                let unit = abort.unit as usize;
                unit < txn.unit_count() && {
                    let start = if unit == 0 { 0 } else { txn.unit_ends[unit - 1] as usize };
                    abort.results.len() == txn.unit_ends[unit] as usize - start
                }
            })
    }
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

    /// The client's results, one per transfer of `txn`.
    pub fn results(&self, txn: &Txn) -> Vec<R> {
        match self {
            Outcome::Commit(commit) => {
                let mut results = vec![R::Ok; txn.transfers.len()];
                let units: Vec<std::ops::Range<usize>> = txn.units().collect();
                for abort in &commit.aborted {
                    results[units[abort.unit as usize].clone()].copy_from_slice(&abort.results);
                }
                results
            }
            Outcome::Abort { results, .. } => results.clone(),
        }
    }

    /// An abort for a transaction the protocol gave up on (a participant did not answer
    /// in time): a transient failure, so the id is burned as on a single shard.
    pub fn gave_up(txn: &Txn) -> Outcome {
        let results = txn.units().flat_map(|unit| chain_failure(unit.len(), 0, R::IdAlreadyFailed));
        Outcome::Abort { results: results.collect(), record_failed: true }
    }
}

/// The units of a request's `transfers`: single events and linked chains, as ranges, in
/// order (a chain left open at the end is a unit too; the ledger reports it).
pub fn units_of(transfers: &[Transfer]) -> Vec<std::ops::Range<usize>> {
    let mut units = Vec::new();
    let mut start = 0;
    for (i, t) in transfers.iter().enumerate() {
        if !t.flags.contains(settle_ledger::TransferFlags::LINKED) || i + 1 == transfers.len() {
            units.push(start..i + 1);
            start = i + 1;
        }
    }
    units
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
    let side_votes = side_votes(txn, votes);
    let mut amounts = vec![0; count];
    let mut aborted = Vec::new();
    let at = latest_prepare(votes.values());
    for (unit, range) in txn.units().enumerate() {
        for index in range.clone() {
            let [debit, credit] = side_votes[index];
            let result = match combine_votes(debit, credit) {
                Decision::Commit { amount } => {
                    amounts[index] = amount;
                    continue;
                }
                Decision::Abort { result } => result,
                Decision::Retry => R::IdAlreadyFailed,
            };
            range.clone().for_each(|i| amounts[i] = 0);
            aborted.push(UnitAbort {
                unit: unit as u16,
                results: chain_failure(range.len(), index - range.start, result),
                record_failed: result.is_transient() || result == R::IdAlreadyFailed,
            });
            break;
        }
    }
    // Every unit aborts, the same way: an abort (as every one-unit abort is).
    if aborted.len() == txn.unit_count()
        && aborted.iter().all(|abort| abort.record_failed == aborted[0].record_failed)
    {
        let record_failed = aborted[0].record_failed;
        let results = aborted.into_iter().flat_map(|abort| abort.results).collect();
        return Outcome::Abort { results, record_failed };
    }
    Outcome::Commit(Commit { amounts, at, aborted })
}

/// Each side's vote, per transfer of `txn` (debit, credit), from `votes` (by participant;
/// a vote from a shard that does not hold the side is not counted): `Aborted` where none
/// is given (presumed abort). Looked up once: a participant's entries are in transfer
/// order.
pub(crate) fn side_votes<'a>(
    txn: &Txn,
    votes: impl IntoIterator<Item = (&'a ShardId, &'a Vote)>,
) -> Vec<[SideVote; 2]> {
    let count = txn.transfers.len();
    let mut side_votes = vec![[SideVote::Aborted; 2]; count];
    for (shard, vote) in votes {
        let Vote::Sides(entries) = vote else { continue };
        for entry in entries {
            let index = entry.transfer as usize;
            let side = entry.side.code() as usize;
            if index < count && txn.placement[index][side] == *shard {
                side_votes[index][side] = entry.vote;
            }
        }
    }
    side_votes
}

/// The latest prepare timestamp among `votes` (0 for none): the agreed commit timestamp
/// of a transaction with these votes (see [`Commit::at`]).
pub(crate) fn latest_prepare<'a>(votes: impl IntoIterator<Item = &'a Vote>) -> u64 {
    votes
        .into_iter()
        .filter_map(|vote| match vote {
            Vote::Sides(entries) => entries.iter().map(|entry| entry.at).max(),
            Vote::Aborted => None,
        })
        .max()
        .unwrap_or(0)
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
