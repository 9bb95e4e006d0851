//! A shard's replicated state: the ledger plus the protocol records that must survive a
//! crash or a change of leader. `apply` is deterministic: every replica of the shard
//! applies the same entries in the same order and ends in the same state.

use std::collections::BTreeMap;

use settle_ledger::store::{ReservationState, Store};
use settle_ledger::{
    BatchError, CreateTransferResult as R, Ledger, Side, SideError, SideVote, Transfer,
};

use crate::message::{ClientRef, Entry, Record, ThreePhaseState};
use crate::read::ReadError;
use crate::shard_map::ShardMap;
use crate::txn::{decide, Commit, Outcome, ShardId, SideEntry, Txn, TxnId, Vote};

/// Sides whose rows are touched together before they are prepared or carried out (see
/// `Ledger::touch_sides`): enough for their cache misses to overlap, few enough that
/// the rows are still cached when their turn comes.
const TOUCH_AHEAD_SIDES: usize = 16;

/// What this shard, as a participant, knows of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantRecord {
    pub txn: Txn,
    pub vote: Vote,
    /// 3PC: PreCommit received, with the commit to carry out.
    pub precommitted: Option<Commit>,
    /// Set once this shard's sides are committed or aborted.
    pub outcome: Option<Outcome>,
}

impl ParticipantRecord {
    pub fn three_phase_state(&self) -> ThreePhaseState {
        match &self.outcome {
            Some(outcome) if outcome.committed() => ThreePhaseState::Committed,
            Some(_) => ThreePhaseState::Aborted,
            None if self.precommitted.is_some() => ThreePhaseState::PreCommitted,
            None if self.vote.prepared_any() => ThreePhaseState::Uncertain,
            None => ThreePhaseState::Unprepared,
        }
    }
}

/// What this shard, as coordinator (2PC, 3PC), wrote down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorRecord {
    /// 3PC: every vote was yes and PreCommit went out.
    PreCommitted {
        txn: Txn,
        commit: Commit,
    },
    Decided {
        txn: Txn,
        outcome: Outcome,
    },
}

/// What applying an entry did, for the core to react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Local {
        client: ClientRef,
        results: Vec<R>,
    },
    /// A participant record changed (prepared, precommitted or resolved).
    Participant(TxnId),
    /// A coordinator record changed.
    Coordinator(TxnId),
    /// The last agent (`Record::DecideLast`): the decision is written and carried out
    /// on this shard's own sides with it; it goes to the other participants.
    DecidedHere(TxnId),
    /// Housekeeping (decisions forgotten, pending transfers expired): nothing for the
    /// protocols to act on.
    Maintenance,
    /// A snapshot read's point (see `read.rs`): the clock is at the read's timestamp,
    /// or the read cannot be served here.
    ReadPoint {
        client: ClientRef,
        incarnation: u32,
        result: Result<(), ReadError>,
    },
    /// The entry contradicted the state (a protocol bug or a hostile peer); nothing
    /// changed. The shell reports it; the simulator counts it as a violation.
    Refused(String),
}

/// The replicated state of one shard.
pub struct ShardState {
    pub shard: ShardId,
    pub ledger: Ledger,
    pub participants: BTreeMap<TxnId, ParticipantRecord>,
    pub coordinated: BTreeMap<TxnId, CoordinatorRecord>,
    /// The cluster's shard map, in the metadata shard's state (`shard_map.rs`); `None`
    /// elsewhere, and there until its leader writes the first.
    pub shard_map: Option<ShardMap>,
}

impl ShardState {
    pub fn new(shard: ShardId, ledger: Ledger) -> ShardState {
        ShardState {
            shard,
            ledger,
            participants: BTreeMap::new(),
            coordinated: BTreeMap::new(),
            shard_map: None,
        }
    }

    /// A state from a snapshot: the ledger and the protocol records kept beside it
    /// (`snapshot_records`), or an error when those do not decode.
    pub fn from_snapshot(
        shard: ShardId,
        ledger: Ledger,
        records: &[u8],
    ) -> Result<ShardState, crate::codec::DecodeError> {
        let (participants, coordinated, shard_map) = crate::codec::decode_records(records)?;
        Ok(ShardState { shard, ledger, participants, coordinated, shard_map })
    }

    /// The protocol records, encoded for a snapshot.
    pub fn snapshot_records(&self) -> Vec<u8> {
        crate::codec::encode_records(&self.participants, &self.coordinated, self.shard_map.as_ref())
    }

    /// The next timestamp for a one-event ledger operation at or after `timestamp`.
    fn tick(&self, timestamp: u64) -> u64 {
        self.ledger.next_batch_timestamp(timestamp, 1)
    }

    pub fn apply(&mut self, entry: &Entry) -> Applied {
        match &entry.record {
            Record::Local { client, transfers } => {
                let timestamp = self.ledger.next_batch_timestamp(entry.timestamp, transfers.len());
                let results = self
                    .ledger
                    .create_transfers(timestamp, transfers)
                    .expect("a local batch is bounded and its timestamp is the ledger's next");
                Applied::Local { client: *client, results }
            }
            Record::Prepare { txn } => self.prepare(entry.timestamp, txn),
            Record::PreCommit { txn, commit } => match self.participants.get_mut(txn) {
                Some(record)
                    if record.outcome.is_none()
                        && commit.fits(&record.txn)
                        && record.vote.allows(&record.txn, self.shard, commit) =>
                {
                    record.precommitted = Some(commit.clone());
                    Applied::Participant(*txn)
                }
                _ => Applied::Participant(*txn),
            },
            Record::CoordinatorPreCommit { txn, commit } => {
                self.coordinated.entry(txn.id()).or_insert_with(|| {
                    CoordinatorRecord::PreCommitted { txn: txn.clone(), commit: commit.clone() }
                });
                Applied::Coordinator(txn.id())
            }
            Record::Decide { txn, outcome } => {
                let id = txn.id();
                match self.coordinated.get(&id) {
                    Some(CoordinatorRecord::Decided { .. }) => {}
                    Some(CoordinatorRecord::PreCommitted { .. }) | None => {
                        let record = CoordinatorRecord::Decided {
                            txn: txn.clone(),
                            outcome: outcome.clone(),
                        };
                        self.coordinated.insert(id, record);
                    }
                }
                Applied::Coordinator(id)
            }
            Record::DecideLast { txn, votes } => self.decide_last(entry.timestamp, txn, votes),
            Record::Resolve { txn, outcome } => self.resolve(entry.timestamp, txn, outcome),
            Record::DecidePrepared { txn: id, digest, outcome } => match self.named(*id, *digest) {
                Some(txn) => {
                    let record = Record::Decide { txn, outcome: outcome.clone() };
                    self.apply(&Entry { timestamp: entry.timestamp, record })
                }
                None => Applied::Coordinator(*id),
            },
            Record::ResolvePrepared { txn: id, digest, outcome } => {
                match self.named(*id, *digest) {
                    Some(txn) => self.resolve(entry.timestamp, &txn, outcome),
                    None => Applied::Participant(*id),
                }
            }
            Record::Pulse => {
                let at = self.ledger.next_batch_timestamp(entry.timestamp, 1);
                self.ledger.expire_pending_transfers(at).expect("the ledger's next timestamp");
                Applied::Maintenance
            }
            Record::ReadPoint { client, at, incarnation } => {
                let result = match self.ledger.expire_pending_transfers(*at) {
                    Ok(_) => Ok(()),
                    Err(BatchError::TimestampRegressed { commit_timestamp, .. }) => {
                        Err(ReadError::TooOld { clock: commit_timestamp })
                    }
                    Err(_) => Err(ReadError::OutOfRange),
                };
                Applied::ReadPoint { client: *client, incarnation: *incarnation, result }
            }
            Record::ShardMap(map) => {
                if self.shard_map.as_ref().is_none_or(|held| map.version > held.version) {
                    self.shard_map = Some(map.clone());
                }
                Applied::Maintenance
            }
            Record::Forget { txns } => {
                for id in txns {
                    if matches!(self.coordinated.get(id), Some(CoordinatorRecord::Decided { .. })) {
                        self.coordinated.remove(id);
                    }
                }
                Applied::Maintenance
            }
        }
    }

    /// Whether this shard already carried an outcome out for `txn` (its record is
    /// forgotten, but how the ledger holds its sides is final, `Ledger::side_state`):
    /// per side it
    /// holds, in `sides_of` order, whether it committed; `None` when not (or not yet).
    ///
    /// A side whose id is reserved by another transfer (the id reused with other
    /// accounts: this transaction's side was refused) was never this transaction's; it
    /// counts as not committed, once at least one side is this transaction's.
    pub fn resolved_here(&self, txn: &Txn) -> Option<Vec<bool>> {
        let mut committed = Vec::new();
        let mut own = false;
        for (index, side) in txn.sides_of(self.shard) {
            let transfer = &txn.transfers[index];
            let (held, state) = self.ledger.side_state(transfer.id, side)?;
            let same = held.debit_account_id == transfer.debit_account_id
                && held.credit_account_id == transfer.credit_account_id;
            if !same {
                committed.push(false);
                continue;
            }
            own = true;
            match state {
                ReservationState::Prepared => return None,
                ReservationState::Aborted => committed.push(false),
                ReservationState::Committed => committed.push(true),
            }
        }
        own.then_some(committed)
    }

    /// A resubmitted `txn` carried out and forgotten here (at its coordinator, which
    /// holds every unit's first debit side): `exists` for each transfer of a committed
    /// unit, a transient failure for an aborted one; `None` when not carried out here.
    pub fn resolved_results(&self, txn: &Txn) -> Option<Vec<R>> {
        let committed = self.resolved_here(txn)?;
        let sides = txn.sides_of(self.shard);
        let mut results = Vec::with_capacity(txn.transfers.len());
        // Sides come in transfer order, debit first: one walk finds each unit's first.
        let mut first = 0;
        for unit in txn.units() {
            let wanted = (unit.start, settle_ledger::Side::Debit);
            while sides.get(first).is_some_and(|&side| side < wanted) {
                first += 1;
            }
            if sides.get(first) != Some(&wanted) {
                return None;
            }
            let unit_results = if committed[first] {
                vec![R::Exists; unit.len()]
            } else {
                (0..unit.len())
                    .map(|i| if i == 0 { R::IdAlreadyFailed } else { R::LinkedEventFailed })
                    .collect()
            };
            results.extend(unit_results);
        }
        Some(results)
    }

    fn prepare(&mut self, timestamp: u64, txn: &Txn) -> Applied {
        let id = txn.id();
        if self.participants.contains_key(&id) || self.resolved_here(txn).is_some() {
            return Applied::Participant(id);
        }
        let mut entries = Vec::new();
        let sides = txn.sides_of(self.shard);
        for (k, &(index, side)) in sides.iter().enumerate() {
            self.touch_ahead(txn, &sides, k, true, |&side| side);
            let at = self.tick(timestamp);
            let vote = self.prepare_one(at, &txn.transfers[index], side);
            entries.push(SideEntry { transfer: index as u16, side, vote, at });
        }
        let record = ParticipantRecord {
            txn: txn.clone(),
            vote: Vote::Sides(entries),
            precommitted: None,
            outcome: None,
        };
        self.participants.insert(id, record);
        Applied::Participant(id)
    }

    /// The cache hint (`Ledger::touch_sides`) for the next `TOUCH_AHEAD_SIDES` of
    /// `sides`, given at every `TOUCH_AHEAD_SIDES`-th position `k`; `side_of` says which
    /// transfer of `txn` and which side an item is.
    fn touch_ahead<T>(
        &self,
        txn: &Txn,
        sides: &[T],
        k: usize,
        prepare: bool,
        side_of: impl Fn(&T) -> (usize, Side),
    ) {
        if k.is_multiple_of(TOUCH_AHEAD_SIDES) {
            let ahead = &sides[k..sides.len().min(k + TOUCH_AHEAD_SIDES)];
            let ahead = ahead.iter().map(|item| {
                let (index, side) = side_of(item);
                (&txn.transfers[index], side)
            });
            self.ledger.touch_sides(ahead, prepare);
        }
    }

    /// Prepares side `side` of `transfer` at `at`: this shard's vote for it.
    fn prepare_one(&mut self, at: u64, transfer: &Transfer, side: Side) -> SideVote {
        // A side already prepared here is another transaction's (this one has no record
        // yet): a retry of some of a batch's units grouped with others, or a request
        // naming one id twice. It is that one's to commit or release; this one is busy,
        // so it aborts the unit (the ledger would replay the vote as if it were this
        // transaction's own).
        if self.prepared_here(transfer.id, side) {
            return SideVote::Busy;
        }
        self.ledger
            .prepare_side(at, transfer, side)
            .expect("a one-event prepare at the ledger's next timestamp")
    }

    /// The last agent (`Record::DecideLast`): every other participant voted (`others`),
    /// and this shard prepares its own sides, decides, and carries the decision out on
    /// them, in this one apply; no participant record is kept (nothing of `txn` is in
    /// doubt here). A transfer of a unit of its own whose other side is elsewhere (the
    /// common case: the coordinator holds each unit's first debit side) is validated
    /// and, when it commits, posted in one pass (`Ledger::prepare_and_commit_side`);
    /// any other side is prepared, and carried out once the decision is known.
    ///
    /// Timestamps: this shard's sides are prepared after the latest of the others'
    /// prepares, so the agreed commit timestamp (the latest prepare, `decide`) is the
    /// last of this apply's, and this shard's clock reaches it with this entry: a
    /// snapshot read here (a record of its own, before or after this one) sees all of
    /// the transaction's sides here or none, as the others do by the agreed timestamp.
    fn decide_last(&mut self, timestamp: u64, txn: &Txn, others: &[(ShardId, Vote)]) -> Applied {
        let id = txn.id();
        let shard = self.shard;
        if txn.protocol != crate::txn::Protocol::TwoPhase {
            return Applied::Refused(format!("last agent's decision of txn {id}, not 2PC"));
        }
        if self.coordinated.contains_key(&id) {
            // Decided already (another leader's decision was written first): that one
            // stands, and nothing of this shard's sides was prepared for this one.
            return Applied::Coordinator(id);
        }
        let mut votes: BTreeMap<ShardId, Vote> =
            others.iter().filter(|(from, _)| *from != shard).cloned().collect();
        if let Some(record) = self.participants.get(&id).filter(|record| record.txn == *txn) {
            votes.insert(shard, record.vote.clone());
            let outcome = decide(txn, &votes);
            self.coordinated.insert(id, CoordinatorRecord::Decided { txn: txn.clone(), outcome });
            return Applied::Coordinator(id);
        }
        // Whatever the ledger holds of these sides already (another transaction's
        // reservation of an id, a side aborted or committed before), each side's
        // prepare says so in its vote: this write always decides, so that the others,
        // who voted, learn the outcome. (It never ends without a decision: a
        // participant in doubt would ask a coordinator that has nothing to answer.)
        let side_votes = crate::txn::side_votes(txn, &votes);
        let start = timestamp.max(crate::txn::latest_prepare(votes.values()));
        let sides = txn.sides_of(shard);
        let mut entries = Vec::with_capacity(sides.len());
        // Per side: posted in the one pass (so not to carry out again).
        let mut posted = Vec::with_capacity(sides.len());
        for (k, &(index, side)) in sides.iter().enumerate() {
            self.touch_ahead(txn, &sides, k, true, |&side| side);
            let at = self.tick(start);
            let transfer = &txn.transfers[index];
            let other = side.other().code() as usize;
            let alone = txn.alone(index) && txn.placement[index][other] != shard;
            let one_pass = if alone && !self.prepared_here(transfer.id, side) {
                let other_vote = side_votes[index][other];
                self.ledger
                    .prepare_and_commit_side(at, transfer, side, other_vote)
                    .expect("a one-event prepare at the ledger's next timestamp")
            } else {
                None
            };
            posted.push(one_pass.is_some());
            let vote = match one_pass {
                Some(vote) => vote,
                None => self.prepare_one(at, transfer, side),
            };
            entries.push(SideEntry { transfer: index as u16, side, vote, at });
        }
        let own = Vote::Sides(entries);
        let own_votes = own.own_sides(txn, shard);
        votes.insert(shard, own);
        let outcome = decide(txn, &votes);
        // A side posted in the one pass is one whose unit (itself) commits: it is done.
        let done: Vec<bool> = own_votes
            .iter()
            .zip(&posted)
            .map(|(&(index, _, _), &posted)| {
                posted && matches!(&outcome, Outcome::Commit(commit) if commit.commits(txn, index))
            })
            .collect();
        debug_assert!(
            own_votes.iter().zip(&done).all(|(&(index, side, _), &done)| {
                !done
                    || matches!(&outcome, Outcome::Commit(commit)
                        if self.ledger.side_state(txn.transfers[index].id, side).is_some_and(
                            |(held, state)| state == ReservationState::Committed
                                && held.amount == commit.amounts[index]))
            }),
            "txn {id}: a side posted in one pass is not committed with the decided amount"
        );
        if let Err(why) = self.carry_out(start, txn, &outcome, &own_votes, &done) {
            return Applied::Refused(why);
        }
        self.coordinated.insert(id, CoordinatorRecord::Decided { txn: txn.clone(), outcome });
        Applied::DecidedHere(id)
    }

    fn resolve(&mut self, timestamp: u64, txn: &Txn, outcome: &Outcome) -> Applied {
        let id = txn.id();
        if !self.participants.contains_key(&id) && self.resolved_here(txn).is_some() {
            return Applied::Participant(id);
        }
        if matches!(outcome, Outcome::Commit(commit) if !commit.fits(txn)) {
            return Applied::Refused(format!("commit of txn {id} does not fit it"));
        }
        let record = self.participants.entry(id).or_insert_with(|| ParticipantRecord {
            txn: txn.clone(),
            vote: Vote::Aborted,
            precommitted: None,
            outcome: None,
        });
        if record.outcome.is_some() {
            return Applied::Participant(id);
        }
        if record.txn != *txn {
            return Applied::Refused(format!("resolve of txn {id} names a different transaction"));
        }
        let own_votes = record.vote.own_sides(txn, self.shard);
        if let Outcome::Commit(commit) = outcome {
            if !commit.fits(txn) || !commit.prepared_on(txn, &own_votes) {
                return Applied::Refused(format!(
                    "commit of txn {id}, which this shard did not prepare"
                ));
            }
            // Every side it commits here must take its amount, checked before anything
            // changes: a refusal halfway would leave some sides carried out and the
            // transaction in doubt. The votes say what each side reserved: while this
            // record holds a side's `Prepared` vote, its reservation is that one,
            // prepared, with that amount (nothing else commits, releases or replaces
            // it: another transaction's prepare of the id votes busy, and its
            // resolution leaves the side alone), so the check reads no ledger rows.
            let fits = own_votes.iter().all(|&(i, _, vote)| match vote {
                Some(SideVote::Prepared { amount, .. }) if commit.commits(txn, i) => {
                    commit.amounts[i] <= amount
                }
                _ => true,
            });
            if !fits {
                return Applied::Refused(format!(
                    "commit of txn {id} above what this shard reserved"
                ));
            }
            // The invariant above, against the ledger's rows, where tests run (the
            // simulator's seeds among them): a break would carry some sides out and
            // refuse the rest.
            debug_assert!(
                own_votes.iter().all(|&(i, side, _)| {
                    !commit.commits(txn, i)
                        || self.ledger.side_state(txn.transfers[i].id, side).is_some_and(
                            |(held, state)| {
                                state == ReservationState::Prepared
                                    && held.amount >= commit.amounts[i]
                            },
                        )
                }),
                "txn {id}: a side this record holds prepared is not so in the ledger"
            );
        }
        if let Err(why) = self.carry_out(timestamp, txn, outcome, &own_votes, &[]) {
            return Applied::Refused(why);
        }
        let record = self.participants.get_mut(&id).expect("inserted above");
        record.outcome = Some(outcome.clone());
        // Carried out: the ledger's reservations now say how it ended (`resolved_here`),
        // so the record goes (3PC keeps it for the termination protocol's questions).
        if txn.protocol != crate::txn::Protocol::ThreePhase {
            self.participants.remove(&id);
        }
        Applied::Participant(id)
    }

    /// Carries `outcome` out on this shard's sides of `txn` (`own_votes`, as
    /// `Vote::own_sides` gives them), but those `done` marks (by position; a shorter
    /// `done` marks none). An error is a contradiction between the outcome and the
    /// ledger: the sides before it are carried out.
    fn carry_out(
        &mut self,
        timestamp: u64,
        txn: &Txn,
        outcome: &Outcome,
        own_votes: &[(usize, Side, Option<SideVote>)],
        done: &[bool],
    ) -> Result<(), String> {
        let id = txn.id();
        for (k, (index, side, vote)) in own_votes.iter().enumerate() {
            if done.get(k) == Some(&true) {
                continue;
            }
            self.touch_ahead(txn, own_votes, k, false, |&(i, side, _)| (i, side));
            let transfer: &Transfer = &txn.transfers[*index];
            // How this side ends: committed with an amount, or released.
            let fate = match outcome {
                Outcome::Commit(commit) if commit.commits(txn, *index) => Ok(commit),
                Outcome::Commit(commit) => {
                    let unit = txn.unit_of(*index);
                    Err(commit.aborted_unit(unit).expect("not committed").record_failed)
                }
                Outcome::Abort { record_failed, .. } => Err(*record_failed),
            };
            match fate {
                Ok(Commit { amounts, at: agreed_at, .. }) => {
                    // The clock moves to the agreed timestamp (see `Commit::at`).
                    let at = self.tick(timestamp.max(*agreed_at));
                    if let Err(error) =
                        self.ledger.commit_side(at, transfer.id, *side, amounts[*index], *agreed_at)
                    {
                        return Err(format!("commit of txn {id}: {error:?}"));
                    }
                }
                // Held prepared by another transaction (see `prepare`): not this one's.
                Err(_)
                    if !matches!(vote, Some(SideVote::Prepared { .. }))
                        && self.prepared_here(transfer.id, *side) => {}
                Err(record_failed) => {
                    let at = self.tick(timestamp);
                    match self.ledger.abort_side(at, transfer, *side, record_failed) {
                        Ok(_) => {}
                        // A side refused because its id already names a committed transfer
                        // (an earlier transaction): nothing of this one is here to release.
                        Err(SideError::Conflict { state: ReservationState::Committed })
                            if !matches!(vote, Some(SideVote::Prepared { .. })) => {}
                        Err(error) => return Err(format!("abort of txn {id}: {error:?}")),
                    }
                }
            }
        }
        Ok(())
    }

    /// The transaction a record naming it (`DecidePrepared`, `ResolvePrepared`) means:
    /// the one this shard's participant record holds under `id`, if its digest is
    /// `digest` (another transaction of that id is not it).
    pub(crate) fn named(&self, id: TxnId, digest: u128) -> Option<Txn> {
        let record = self.participants.get(&id)?;
        (record.txn.digest() == digest).then(|| record.txn.clone())
    }

    /// Whether side `side` of transfer `id` is reserved here and not yet resolved.
    fn prepared_here(&self, id: u128, side: settle_ledger::Side) -> bool {
        let reservation = self.ledger.store().reservation(id, side);
        reservation.is_some_and(|r| r.state == ReservationState::Prepared)
    }

    /// Transactions this shard prepared and has not resolved.
    pub fn in_doubt(&self) -> impl Iterator<Item = &ParticipantRecord> {
        self.participants.values().filter(|record| record.outcome.is_none())
    }
}
