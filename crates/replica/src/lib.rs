//! # settle-replica
//!
//! One replica of a shard: raft-rs's consensus and settle's ledger, as a pure state
//! machine that a shell drives. The production node (sockets, files, threads) and the
//! deterministic simulator (simulated network, disk and time, one thread) are two such
//! shells around the very same core, so what the simulator checks is what runs.
//!
//! Layout, top-down:
//! - [`replica`]: [`Replica`], its inputs (`tick`, `step`, `propose`, `read`,
//!   `persisted`) and its [`Output`] (messages, disk records, replies).
//! - [`durable`]: the records a replica writes, their checksummed framing, and recovery
//!   of the in-memory log from them after a restart.
//! - [`log_store`]: the in-memory Raft log (raft-rs's `Storage`).
//!
//! Invariants the replica keeps (asserted in the code):
//! - raft-rs is told an entry is durable only after the shell's fsync covered it, and
//!   votes and append acks leave only then;
//! - every committed entry is applied exactly once, in index order;
//! - a client gets a result only for the entry it proposed (same index *and* term);
//!   anything else is `Refusal::Unknown`, and retrying is safe because ids are idempotent.

pub mod durable;
pub mod log_store;
pub mod replica;

pub use durable::{CorruptLog, Record};
pub use log_store::{LogStore, SnapshotLoader};
pub use raft::eraftpb::{ConfState, Message, MessageType, Snapshot};
pub use replica::{
    generation_path, Applied, CheckpointJob, Config, Halt, Output, Refusal, Replica, Token,
};

/// A raft-rs message in its protobuf encoding (what travels between nodes).
pub fn encode_message(message: &Message) -> Vec<u8> {
    use protobuf::Message as _;
    message.write_to_bytes().expect("a raft message always encodes")
}

/// The raft-rs message encoded in `bytes`.
pub fn decode_message(bytes: &[u8]) -> Result<Message, String> {
    use protobuf::Message as _;
    Message::parse_from_bytes(bytes).map_err(|e| e.to_string())
}
