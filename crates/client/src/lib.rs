//! # settle-client
//!
//! An async Rust client for a settle cluster (or a single settle node), over the gRPC
//! API of `proto/settle.proto`. Give it the addresses of the cluster's nodes: it sends
//! requests to the leader, finding it and following it as leadership moves (see
//! [Leader following](#leader-following)).
//!
//! ```no_run
//! # async fn example() -> Result<(), settle_client::ClientError> {
//! use settle_client::Client;
//! use settle_ledger::{Account, Transfer};
//!
//! let nodes = ["127.0.0.1:3000", "127.0.0.1:3001", "127.0.0.1:3002"].map(String::from);
//! let client = Client::connect(&nodes).await?;
//! let accounts = [
//!     Account { id: 1, ledger: 1, code: 1, ..Default::default() },
//!     Account { id: 2, ledger: 1, code: 1, ..Default::default() },
//! ];
//! let results = client.create_accounts(&accounts).await?;
//! assert!(results.iter().all(|r| r.is_success()));
//! let transfer = Transfer {
//!     id: 9,
//!     debit_account_id: 1,
//!     credit_account_id: 2,
//!     amount: 10,
//!     ledger: 1,
//!     code: 1,
//!     ..Default::default()
//! };
//! let results = client.create_transfers(&[transfer]).await?;
//! assert!(results.iter().all(|r| r.is_success()));
//! let balances = client.lookup_accounts(&[1, 2]).await?;
//! # let _ = balances;
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//!
//! - [`Client`] (`client.rs`): connecting, and one method per RPC. It takes and returns
//!   the ledger's own types (`settle_ledger::{Account, Transfer, ...}`); the conversions
//!   to and from the wire are `settle_proto::convert`.
//! - `nodes.rs`: one gRPC channel per known node, which node is in use, and moving to
//!   the leader named by a hint or to the next node.
//! - `batch.rs`: splitting a call's events into batches of at most
//!   [`settle_ledger::BATCH_EVENTS_MAX`] (8189) without splitting a linked chain, and
//!   concatenating the per-batch results (checking one result per event).
//! - [`ClientOptions`] (`retry.rs`): the retry loop every request goes through, which
//!   moves the client to another node after a transient failure.
//! - `routes.rs`: the cluster's shard map, by which write batches are split and each
//!   part sent to a node holding its home shard (see [Routing](#routing)).
//! - [`ClientError`] (`error.rs`): what a call can fail with.
//!
//! ## Batches
//!
//! `create_*` accept any number of events and send them as consecutive batches, one at
//! a time and in order, so later events see the effects of earlier ones exactly as in
//! one big batch, except that linked chains are atomic only within a batch: the client
//! therefore never splits a chain (an event with `flags.linked` and its successors up
//! to the first unlinked event), and a chain longer than one batch is refused with
//! [`ClientError::ChainTooLong`] before anything is sent. Lookups split their ids the
//! same way. Results come back concatenated, in the order of the events.
//!
//! ## Leader following
//!
//! In a replicated cluster only the leader executes requests. The client keeps one
//! channel per node (each connects when first used; the client starts on the first
//! address that accepts a connection) and sends every request to the node it is using,
//! which all clones of a [`Client`] share ([`Client::connected_address`]).
//!
//! A node that is not the leader answers gRPC `UNAVAILABLE` with the leader's client
//! address (`host:port`) in its `settle-leader` response metadata, if it knows the
//! leader. The client then moves to that node, adding its address if it was not among
//! those given (at most 16 known addresses in all), and retries after only
//! `initial_backoff`. After any other transient failure (connection refused or reset by
//! a crashed node, `UNAVAILABLE` without a leader, e.g. during an election, or no reply
//! in time) it moves to the next known address, round robin, and retries after the
//! growing backoff. So a client given every node of a cluster finds the leader, and
//! finds the new one after a failover, while the address it first connected to is
//! down.
//!
//! ## Routing
//!
//! A cluster places accounts on shards; its shard map (`GetShardMap`, fetched at
//! connect and whenever a reply names a newer version in `settle-map-version`) says
//! which shard holds an account and which nodes hold each shard. The client splits
//! each batch of transfers by home shard (a unit's first debit account's; linked
//! chains are never split) and sends the parts at once, each to its shard's leader as
//! replies named it, or to a node holding the shard. Any node accepts any request and
//! forwards what it does not hold, so a stale map costs a hop, not an error; a part
//! whose node fails goes through the retry loop below like any request. A standalone
//! node has no map: everything goes to it.
//!
//! ## Retries and idempotency
//!
//! A request that fails with a transport error (connection refused or reset, broken
//! stream), gRPC `UNAVAILABLE`, or no reply within `request_timeout`, is retried (on the
//! leader, or on the next node, as above) with capped exponential backoff, at most
//! `max_attempts` times ([`ClientOptions`]), redirects included: nodes that keep
//! redirecting, e.g. to each other, end like any other failure. After that the call
//! fails with [`ClientError::TimedOut`]. Any other status (e.g. `INVALID_ARGUMENT`) is
//! [`ClientError::Refused`] at once, never retried.
//!
//! Retrying `create_*` is safe because ids are idempotent: the ledger never applies an
//! id twice. If an attempt was applied but its reply was lost, the retry returns
//! `exists` for those events instead of applying them again (on whichever node the
//! retry reaches: the nodes of a cluster replicate one ledger), so **callers should treat
//! `exists` as `ok` when a call may have been retried** (a retried linked chain that
//! had been applied reports `exists` for its first event and `linked_event_failed` for
//! the others; a transfer whose lost attempt failed transiently reports
//! `id_already_failed`). Whole calls are safe to repeat for the same reason.

mod batch;
mod client;
mod error;
mod nodes;
mod retry;
mod routes;

pub use client::{Client, NodeStatus, ShardStatus};
pub use error::ClientError;
pub use retry::ClientOptions;
