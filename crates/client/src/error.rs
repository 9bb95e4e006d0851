//! [`ClientError`]: everything a [`Client`](crate::Client) call can fail with.

use std::time::Duration;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No address could be connected to (or none was given).
    #[error("cannot connect to any of {addresses:?}: {reasons}")]
    Connect {
        /// The addresses tried, as given.
        addresses: Vec<String>,
        /// Why each one failed.
        reasons: String,
    },

    /// The server answered with a non-transient gRPC status (e.g. `INVALID_ARGUMENT` for
    /// an oversized or malformed batch). Never retried: the same request would be
    /// refused again.
    #[error("{operation}: request refused by the server ({code:?}): {message}")]
    Refused {
        /// The client method, e.g. `"create_transfers"`.
        operation: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },

    /// Every attempt failed with a transient error (transport error, `UNAVAILABLE`, or
    /// no reply within `ClientOptions::request_timeout`).
    #[error(
        "{operation} timed out after {attempts} attempts ({elapsed:?}); last error: {last_error}"
    )]
    TimedOut {
        /// The client method, e.g. `"create_transfers"`.
        operation: &'static str,
        /// Attempts made (`ClientOptions::max_attempts`).
        attempts: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// What the last attempt failed with.
        last_error: String,
    },

    /// The server's reply breaks the protocol, e.g. a result count different from the
    /// event count, an unknown result code, or a record that does not convert.
    #[error("{operation}: invalid response from the server: {reason}")]
    InvalidResponse {
        /// The client method, e.g. `"create_transfers"`.
        operation: &'static str,
        /// What is wrong with the reply.
        reason: String,
    },

    /// A linked chain longer than one batch: chains are atomic and are never split
    /// across batches, so it cannot be sent. Nothing was sent.
    #[error(
        "linked chain starting at event {start} has {len} events; a chain must fit in one \
         batch of at most {max} events"
    )]
    ChainTooLong {
        /// Index of the chain's first event in the caller's slice.
        start: usize,
        /// Events in the chain.
        len: usize,
        /// The batch limit (`settle_ledger::BATCH_EVENTS_MAX`).
        max: usize,
    },
}

/// An error and its sources, joined: tonic's transport errors say little at the top
/// ("transport error") and the cause is further down the chain.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
