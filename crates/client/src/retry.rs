//! [`ClientOptions`] and the retry loop every request goes through.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::error_chain;
use crate::ClientError;

/// How a [`Client`](crate::Client) retries and times out.
///
/// A request is attempted at most `max_attempts` times. An attempt that gets no reply
/// within `request_timeout`, fails with a transport error, or gets gRPC `UNAVAILABLE` is
/// retried after a backoff that starts at `initial_backoff` and doubles up to
/// `max_backoff`. Any other gRPC status is returned at once. So one request (one batch)
/// takes at most about `max_attempts * request_timeout` plus the sum of the backoffs;
/// with the defaults, under 2 minutes when the server never answers, and about 9 seconds
/// when it refuses connections (e.g. while it restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Attempts per request, including the first (at least 1). Default 10.
    pub max_attempts: u32,
    /// Wait before the first retry. Default 50 ms.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts. Default 2 s.
    pub max_backoff: Duration,
    /// How long one attempt may take, and how long connecting to one address may take.
    /// Default 10 s.
    pub request_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether a failed call may succeed if simply sent again: gRPC `UNAVAILABLE`, or an
/// error raised by the transport itself (connection refused or reset, broken HTTP/2
/// stream), as opposed to a status the server chose to send.
pub(crate) fn is_transient(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::Unavailable {
        return true;
    }
    // A status that the server sent has no source; one made on this side from a failure
    // of the connection carries that failure as its source.
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() || error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(" (");
        text.push_str(&error_chain(source));
        text.push(')');
    }
    text
}

/// Runs `attempt` until it succeeds, fails with a non-transient status, or
/// `options.max_attempts` attempts have failed transiently.
pub(crate) async fn with_retries<T, F, Fut>(
    operation: &'static str,
    options: &ClientOptions,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let max_attempts = options.max_attempts.max(1);
    let started = Instant::now();
    let mut backoff = options.initial_backoff;
    let mut number = 1;
    loop {
        let last_error = match tokio::time::timeout(options.request_timeout, attempt()).await {
            Ok(Ok(response)) => return Ok(response.into_inner()),
            Ok(Err(status)) if is_transient(&status) => describe(&status),
            Ok(Err(status)) => {
                return Err(ClientError::Refused {
                    operation,
                    code: status.code(),
                    message: status.message().to_string(),
                })
            }
            Err(_) => format!("no reply within {:?}", options.request_timeout),
        };
        if number >= max_attempts {
            return Err(ClientError::TimedOut {
                operation,
                attempts: number,
                elapsed: started.elapsed(),
                last_error,
            });
        }
        tracing::debug!(
            operation,
            attempt = number,
            ?backoff,
            error = %last_error,
            "transient failure, retrying"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(options.max_backoff);
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn fast() -> ClientOptions {
        ClientOptions {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            request_timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn unavailable_is_retried_until_success() {
        let calls = AtomicU32::new(0);
        let reply = with_retries("op", &fast(), || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(tonic::Status::unavailable("restarting"))
                } else {
                    Ok(tonic::Response::new(n))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(reply, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn invalid_argument_is_never_retried() {
        let calls = AtomicU32::new(0);
        let err = with_retries("create_transfers", &fast(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<tonic::Response<()>, _>(tonic::Status::invalid_argument("too many")) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(
            &err,
            ClientError::Refused { code: tonic::Code::InvalidArgument, message, .. }
                if message == "too many"
        ));
        assert_eq!(
            err.to_string(),
            "create_transfers: request refused by the server (InvalidArgument): too many"
        );
    }

    #[tokio::test]
    async fn attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let err = with_retries("lookup_accounts", &fast(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<tonic::Response<()>, _>(tonic::Status::unavailable("down")) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        match err {
            ClientError::TimedOut { operation, attempts, last_error, .. } => {
                assert_eq!(operation, "lookup_accounts");
                assert_eq!(attempts, 4);
                assert!(last_error.contains("down"), "{last_error}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let calls = AtomicU32::new(0);
        let options = ClientOptions { request_timeout: Duration::from_millis(20), ..fast() };
        let reply = with_retries("op", &options, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(tonic::Response::new(n))
            }
        })
        .await
        .unwrap();
        assert_eq!(reply, 1);
    }

    #[test]
    fn transport_failures_are_transient_server_statuses_are_not() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let local = tonic::Status::from_error(Box::new(io));
        assert!(is_transient(&local), "{local:?}");
        assert!(is_transient(&tonic::Status::unavailable("x")));
        assert!(!is_transient(&tonic::Status::internal("x")));
        assert!(!is_transient(&tonic::Status::invalid_argument("x")));
        assert!(!is_transient(&tonic::Status::deadline_exceeded("x")));
    }
}
