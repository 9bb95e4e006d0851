//! Paxos Commit's acceptor: one per replica of a coordinator shard (acceptor `index`
//! lives on replica `index`), 2F+1 in all. For each transaction it keeps, durably, the
//! highest ballot it promised and the vote it accepted for each participant's instance.
//!
//! It answers only after the shell reports its write durable (`persisted`). Phase 2a
//! messages of ballot 0 (the participants' own votes) are bundled: the acceptor writes
//! and answers once it holds a vote for every participant, so the fault-free path costs
//! one forced write and one phase 2b message per acceptor (Gray & Lamport's count).

use std::collections::BTreeMap;

use crate::message::{Accepted, Address, Ballot, Body, Message};
use crate::txn::{ShardId, Txn, TxnId};

/// Most transactions an acceptor remembers. A leader that asks about a forgotten one
/// learns nothing from this acceptor, which is safe only once the transaction's outcome
/// was carried out everywhere; the bound is far above what is in flight.
pub const ACCEPTOR_TXNS_MAX: usize = 1 << 20;

/// One transaction at one acceptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptorTxn {
    pub txn: Txn,
    pub promised: Ballot,
    pub accepted: BTreeMap<ShardId, Accepted>,
}

/// What an acceptor forces to its disk: the whole state of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptorEntry {
    pub state: AcceptorTxn,
    /// Answer with phase 1b for this ballot (a promise) rather than phase 2b.
    pub promise: Option<Ballot>,
    pub depth: u32,
}

/// An acceptor: durable state plus what is waiting to be written.
#[derive(Debug)]
pub struct AcceptorCore {
    pub index: u8,
    /// Durable: what survived every write so far.
    durable: BTreeMap<TxnId, AcceptorTxn>,
    /// The newest state of each transaction: durable, or written but not yet durable,
    /// or a ballot-0 bundle still filling. Promises are kept against this view.
    latest: BTreeMap<TxnId, AcceptorTxn>,
    /// Bundles still filling (in `latest`, not yet handed to the disk).
    filling: std::collections::BTreeSet<TxnId>,
    commands: Vec<AcceptorCommand>,
    /// Message delays of the latest input per transaction (the lab's counts): a bundle
    /// answers with the deepest of the messages it waited for.
    depths: BTreeMap<TxnId, u32>,
}

/// What an acceptor asks its shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptorCommand {
    Send {
        to: Address,
        message: Message,
    },
    /// Force the entry to disk, then hand it back through `persisted`.
    Persist(AcceptorEntry),
}

impl AcceptorCore {
    /// An acceptor over what its disk holds.
    pub fn new(index: u8, durable: BTreeMap<TxnId, AcceptorTxn>) -> AcceptorCore {
        let latest = durable.clone();
        AcceptorCore {
            index,
            durable,
            latest,
            filling: Default::default(),
            commands: Vec::new(),
            depths: BTreeMap::new(),
        }
    }

    pub fn durable(&self) -> &BTreeMap<TxnId, AcceptorTxn> {
        &self.durable
    }

    pub fn take_commands(&mut self) -> Vec<AcceptorCommand> {
        std::mem::take(&mut self.commands)
    }

    fn current(&self, id: TxnId) -> Option<&AcceptorTxn> {
        self.latest.get(&id)
    }

    fn write(&mut self, state: AcceptorTxn, promise: Option<Ballot>, depth: u32) {
        let id = state.txn.id();
        self.filling.remove(&id);
        self.latest.insert(id, state.clone());
        self.commands.push(AcceptorCommand::Persist(AcceptorEntry { state, promise, depth }));
    }

    pub fn receive(&mut self, message: Message) {
        let depth = self.depths.entry(message.txn).or_insert(0);
        *depth = (*depth).max(message.depth);
        let depth = *depth;
        let message = Message { depth, ..message };
        match message.body {
            Body::Phase2a { txn, accepted } => self.phase2a(txn, accepted, message.depth),
            Body::Phase1a { txn, ballot } => self.phase1a(txn, ballot, message.depth),
            // Nothing else is addressed to an acceptor; a stray message changes nothing.
            _ => {}
        }
    }

    fn phase2a(&mut self, txn: Txn, accepted: Accepted, depth: u32) {
        let id = txn.id();
        let participants = txn.participants();
        if !participants.contains(&accepted.instance) {
            return;
        }
        let mut state = self.current(id).cloned().unwrap_or(AcceptorTxn {
            txn,
            promised: 0,
            accepted: BTreeMap::new(),
        });
        if accepted.ballot < state.promised {
            return;
        }
        if let Some(durable) = self.durable.get(&id) {
            if durable.accepted.get(&accepted.instance) == Some(&accepted)
                && durable == state_ref(&self.latest, id)
            {
                // A resent 2a for what is already on disk: answer again, write nothing.
                let answer = self.phase2b(durable, depth);
                self.commands.push(answer);
                return;
            }
        }
        state.promised = accepted.ballot;
        state.accepted.insert(accepted.instance, accepted.clone());
        let complete = participants.iter().all(|shard| state.accepted.contains_key(shard));
        if accepted.ballot == 0 && !complete {
            self.latest.insert(id, state);
            self.filling.insert(id);
            return;
        }
        self.write(state, None, depth);
    }

    fn phase1a(&mut self, txn: Txn, ballot: Ballot, depth: u32) {
        let id = txn.id();
        let mut state = self.current(id).cloned().unwrap_or(AcceptorTxn {
            txn: txn.clone(),
            promised: 0,
            accepted: BTreeMap::new(),
        });
        if ballot <= state.promised && state.promised != 0 {
            let message = Message {
                txn: id,
                depth: depth + 1,
                body: Body::Phase1b {
                    from: self.index,
                    ballot,
                    accepted: Vec::new(),
                    rejected: Some(state.promised),
                },
            };
            self.commands
                .push(AcceptorCommand::Send { to: Address::Shard(txn.coordinator()), message });
            return;
        }
        state.promised = ballot;
        self.write(state, Some(ballot), depth);
    }

    fn phase2b(&self, state: &AcceptorTxn, depth: u32) -> AcceptorCommand {
        let message = Message {
            txn: state.txn.id(),
            depth: depth + 1,
            body: Body::Phase2b {
                from: self.index,
                accepted: state.accepted.values().cloned().collect(),
            },
        };
        AcceptorCommand::Send { to: Address::Shard(state.txn.coordinator()), message }
    }

    /// The shell made `entry` durable: keep it and answer.
    pub fn persisted(&mut self, entry: AcceptorEntry) {
        let id = entry.state.txn.id();
        if self.durable.len() >= ACCEPTOR_TXNS_MAX && !self.durable.contains_key(&id) {
            let oldest = *self.durable.keys().next().expect("not empty");
            self.durable.remove(&oldest);
            self.latest.remove(&oldest);
        }
        self.durable.insert(id, entry.state.clone());
        self.depths.remove(&id);
        let answer = match entry.promise {
            Some(ballot) => AcceptorCommand::Send {
                to: Address::Shard(entry.state.txn.coordinator()),
                message: Message {
                    txn: id,
                    depth: entry.depth + 1,
                    body: Body::Phase1b {
                        from: self.index,
                        ballot,
                        accepted: entry.state.accepted.values().cloned().collect(),
                        rejected: None,
                    },
                },
            },
            None => self.phase2b(&entry.state, entry.depth),
        };
        self.commands.push(answer);
    }
}

fn state_ref(latest: &BTreeMap<TxnId, AcceptorTxn>, id: TxnId) -> &AcceptorTxn {
    latest.get(&id).expect("a durable transaction is in the latest view")
}
