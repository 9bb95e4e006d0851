//! # settle-ledger
//!
//! settle's double-entry ledger: a pure, deterministic state machine. It does no IO,
//! reads no clock and draws no randomness: the caller hands in every batch with its
//! timestamp, and the same batches always produce the same results and the same state
//! digest. Everything else in settle (the durable node, Raft replication, cross-shard
//! commit, the simulator) drives this crate.
//!
//! Layout, top-down:
//! - [`types`]: the records (`Account`, `Transfer`, `AccountBalance`, the filters) and
//!   their stable 128-byte encodings.
//! - [`results`]: the result codes, declared in order of precedence.
//! - [`ledger`]: the state machine. `Ledger` executes batches (`create_accounts`,
//!   `create_transfers`), runs queries, expires pending transfers, and offers the
//!   one-sided reserve/post/release hooks that cross-shard commit builds on.
//! - [`request`]: every operation as one value (`Write`, `Read`, `Reply`), the one
//!   dispatch of it, and the byte encoding of writes that replicated logs carry.
//! - [`compact`]: records with their zero bytes left out, the form they take on disk
//!   and between replicas.
//! - [`store`]: the tables behind the `Store` trait, and `MemStore`, the in-memory one.
//!
//! The full contract (order of checks, what changes on success) is `SEMANTICS.md`
//! beside this crate's `Cargo.toml`.

pub mod compact;
pub mod ledger;
pub mod request;
pub mod results;
pub mod store;
pub mod types;

pub use ledger::{
    combine_votes, BatchError, Decision, Ledger, Side, SideError, SideFate, SideResolution,
    SideVote,
};
pub use request::{Read, Reply, Write};
pub use results::{CreateAccountResult, CreateTransferResult};
pub use store::{MemStore, Store};
pub use types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, QueryFilter,
    QueryFilterFlags, Transfer, TransferFlags, AMOUNT_MAX, BATCH_EVENTS_MAX, RECORD_SIZE,
    TIMESTAMP_MAX,
};
