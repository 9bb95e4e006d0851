//! # settle-commit
//!
//! Atomic commit across shards, as pure state machines: two-phase commit (2PC),
//! three-phase commit (3PC, Skeen, with the timeout-driven termination protocol) and
//! Paxos Commit (Gray & Lamport). They are built on the ledger's one-sided hooks
//! (`Ledger::prepare_side` / `commit_side` / `abort_side`): prepare = validate and
//! reserve, commit = post the reservation, abort = release it.
//!
//! The cores do no IO and read no clock. A shell carries out their commands: send a
//! message, persist an entry in the shard's group, answer a client. Two shells run them:
//! the cross-shard simulator (`settle-sim`'s `xshard`), and a cluster node, where each
//! shard's replica (`settle-replica`) applies the entries from its Raft log and its
//! leader acts. Layout, top-down:
//! - [`txn`]: a transaction (a transfer or a linked chain) and where its sides live; votes,
//!   outcomes, and `decide`, which turns votes into the outcome and the client's results.
//! - [`placement`]: the rule that maps accounts to shards.
//! - [`shard_map`]: the cluster's shard map (placement + replicas), replicated in the
//!   metadata shard's group.
//! - [`message`]: messages, records and commands.
//! - [`state`]: a shard's replicated state (ledger + protocol records) and `apply`.
//! - [`shard`]: `ShardCore`, a shard's participant and coordinator roles.
//! - [`acceptor`]: `AcceptorCore`, Paxos Commit's acceptor (one per replica of a shard).
//! - [`read`]: a shard's part of a snapshot read at a hybrid-logical-clock timestamp.
//! - [`codec`]: the checked byte encoding of entries, messages and snapshot records.

pub mod acceptor;
pub mod codec;
pub mod message;
pub mod placement;
pub mod read;
pub mod shard;
pub mod shard_map;
pub mod state;
pub mod txn;

pub use acceptor::{AcceptorCommand, AcceptorCore, AcceptorEntry, AcceptorTxn};
pub use message::{Address, Body, Command, Entry, Kind, Message, Record};
pub use shard::{Config, Refusal, ShardCore};
pub use shard_map::{ShardMap, ShardReplicas};
pub use state::{Applied, ShardState};
pub use txn::{
    decide, paper_cost, units_of, Commit, Outcome, Protocol, ShardId, Txn, TxnId, UnitAbort, Vote,
    TXN_TRANSFERS_MAX, UNIT_TRANSFERS_MAX,
};
