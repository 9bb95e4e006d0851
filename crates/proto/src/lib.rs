//! # settle-proto
//!
//! settle's network schema and its bridge to the ledger's types.
//!
//! - [`pb`]: the code generated from `proto/settle.proto` (package `settle.v1`) at build
//!   time by `build.rs`: the messages, the `CreateAccountResult` / `CreateTransferResult`
//!   enums, the client (`pb::ledger_client::LedgerClient`) and the server
//!   (`pb::ledger_server::{Ledger, LedgerServer}`). protoc comes from the
//!   `protoc-bin-vendored` crate, so building needs nothing installed.
//! - [`convert`]: conversions between `pb` messages and `settle_ledger` types.
//!   Ledger → pb never fails; pb → ledger fails (with a [`convert::ConvertError`] naming
//!   the field and the value) when a value cannot be represented, e.g. a `code` or
//!   `flags` above `u16::MAX`. Also: result codes ↔ the pb enum values, and the
//!   `packed` fast path (consecutive 128-byte records in the ledger's stable encoding).
//!
//! The schema's encoding of 128-bit integers is `U128 { lo, hi }` with
//! `value = hi * 2^64 + lo`; an absent `U128` field means 0, and this crate encodes 0 as
//! an absent field.

/// The generated gRPC code for package `settle.v1` (see `proto/settle.proto`).
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("settle.v1");
}

pub mod convert;
