//! # settle-client
//!
//! An async Rust client for a settle node, over the gRPC API of `proto/settle.proto`.
//!
//! ```no_run
//! # async fn example() -> Result<(), settle_client::ClientError> {
//! use settle_client::Client;
//! use settle_ledger::{Account, Transfer};
//!
//! let client = Client::connect(&["127.0.0.1:3000".to_string()]).await?;
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
//! - `batch.rs`: splitting a call's events into batches of at most
//!   [`settle_ledger::BATCH_EVENTS_MAX`] (8189) without splitting a linked chain, and
//!   concatenating the per-batch results (checking one result per event).
//! - [`ClientOptions`] (`retry.rs`): the retry loop every request goes through.
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
//! ## Retries and idempotency
//!
//! A request that fails with a transport error (connection refused or reset, broken
//! stream), gRPC `UNAVAILABLE`, or no reply within `request_timeout`, is retried with
//! capped exponential backoff, at most `max_attempts` times ([`ClientOptions`]); after
//! that the call fails with [`ClientError::TimedOut`]. Any other status (e.g.
//! `INVALID_ARGUMENT`) is [`ClientError::Refused`] at once, never retried.
//!
//! Retrying `create_*` is safe because ids are idempotent: the ledger never applies an
//! id twice. If an attempt was applied but its reply was lost, the retry returns
//! `exists` for those events instead of applying them again, so **callers should treat
//! `exists` as `ok` when a call may have been retried** (a retried linked chain that
//! had been applied reports `exists` for its first event and `linked_event_failed` for
//! the others; a transfer whose lost attempt failed transiently reports
//! `id_already_failed`). Whole calls are safe to repeat for the same reason.

mod batch;
mod client;
mod error;
mod retry;

pub use client::Client;
pub use error::ClientError;
pub use retry::ClientOptions;
