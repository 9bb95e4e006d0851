//! [`ClientOptions`] and the retry loop every request goes through, which also follows
//! the cluster's leader.
//!
//! Each attempt goes to the node the client is using ([`Nodes::current`]). When it
//! fails transiently, [`Nodes::after_failure`] moves the client: to the leader named by
//! the node's `settle-leader` metadata if there is one, else to the next known node.
//! Then the attempt is retried after a backoff: the initial one when following a
//! leader hint (a redirect is not a sign of overload, and the leader is likely ready),
//! the growing one otherwise. Redirects count as attempts, so a cluster that keeps
//! redirecting (no leader yet, or nodes that disagree) still ends in
//! [`ClientError::TimedOut`].

use std::future::Future;
use std::time::{Duration, Instant};

use settle_proto::pb::ledger_client::LedgerClient;
use tonic::transport::Channel;

use crate::error::error_chain;
use crate::nodes::{leader_hint, metadata_hint, Node, Nodes};
use crate::ClientError;

/// How a [`Client`](crate::Client) retries and times out.
///
/// A request is attempted at most `max_attempts` times. An attempt that gets no reply
/// within `request_timeout`, fails with a transport error, or gets gRPC `UNAVAILABLE` is
/// retried, on the leader if the node named it (see [`Client`](crate::Client)) and
/// else on the next node given, after a backoff: `initial_backoff` after a redirect to
/// the leader, otherwise a backoff that starts at `initial_backoff` and doubles up to
/// `max_backoff`. Any other gRPC status is returned at once. So one request (one batch)
/// takes at most about `max_attempts * request_timeout` plus the sum of the backoffs;
/// with the defaults, under 2 minutes when no node ever answers, and about 9 seconds
/// when they all refuse connections (e.g. while they restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// Attempts per request, including the first (at least 1), redirects included.
    /// Default 10.
    pub max_attempts: u32,
    /// Wait before the first retry, and before every retry that follows a leader hint.
    /// Default 50 ms.
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
    status.code() == tonic::Code::Unavailable || from_transport(status)
}

/// Whether the failure came from the connection, not from the server: a status that
/// the server sent has no source; one made on this side from a failure of the
/// connection carries that failure as its source.
pub(crate) fn from_transport(status: &tonic::Status) -> bool {
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

/// The wait before the next attempt, after a transient failure that followed a leader
/// hint to another node (`redirected`) or not; `backoff` is the growing backoff, which
/// only grows on failures that are not redirects.
fn pause(redirected: bool, backoff: &mut Duration, options: &ClientOptions) -> Duration {
    if redirected {
        return options.initial_backoff;
    }
    let pause = *backoff;
    *backoff = backoff.saturating_mul(2).min(options.max_backoff);
    pause
}

/// Runs `attempt` on the node in use until it succeeds, fails with a non-transient
/// status, or `options.max_attempts` attempts have failed transiently; after each
/// transient failure, moves to the leader or the next node (see the module docs).
/// `attempt` gets the gRPC client of the node to send to.
pub(crate) async fn with_retries<T, F, Fut>(
    operation: &'static str,
    options: &ClientOptions,
    nodes: &Nodes,
    attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut(LedgerClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    with_retries_via(operation, options, nodes, |node| node.grpc.clone(), attempt).await
}

/// [`with_retries`] for any of a node's gRPC services: `pick` takes the service client
/// from the node in use.
pub(crate) async fn with_retries_via<C, T, F, Fut>(
    operation: &'static str,
    options: &ClientOptions,
    nodes: &Nodes,
    pick: impl Fn(&Node) -> C,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let max_attempts = options.max_attempts.max(1);
    let started = Instant::now();
    let mut backoff = options.initial_backoff;
    let mut number = 1;
    loop {
        let (used, node) = nodes.current();
        let reply = tokio::time::timeout(options.request_timeout, attempt(pick(node))).await;
        let (error, redirected) = match reply {
            Ok(Ok(response)) => {
                // The node forwarded the request to the leader and says so: go there.
                if let Some(hint) = metadata_hint(response.metadata()) {
                    nodes.after_forward(used, hint);
                }
                return Ok(response.into_inner());
            }
            Ok(Err(status)) if is_transient(&status) => {
                let unreachable =
                    status.code() != tonic::Code::Unavailable || from_transport(&status);
                (describe(&status), nodes.after_failure(used, leader_hint(&status), unreachable))
            }
            Ok(Err(status)) => {
                return Err(ClientError::Refused {
                    operation,
                    code: status.code(),
                    message: status.message().to_string(),
                })
            }
            Err(_) => (
                format!("no reply within {:?}", options.request_timeout),
                nodes.after_failure(used, None, true),
            ),
        };
        let last_error = format!("{}: {error}", node.address);
        if number >= max_attempts {
            return Err(ClientError::TimedOut {
                operation,
                attempts: number,
                elapsed: started.elapsed(),
                last_error,
            });
        }
        let pause = pause(redirected, &mut backoff, options);
        tracing::debug!(
            operation,
            attempt = number,
            ?pause,
            redirected,
            next = %nodes.current().1.address,
            error = %last_error,
            "transient failure, retrying"
        );
        tokio::time::sleep(pause).await;
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

    /// One node that is never connected to: the attempts below do not use it.
    fn one_node() -> Nodes {
        Nodes::lazy(&["127.0.0.1:1"], fast())
    }

    fn redirect(leader: &str) -> tonic::Status {
        let mut status = tonic::Status::unavailable("not the leader");
        status.metadata_mut().insert(crate::nodes::LEADER_KEY, leader.parse().unwrap());
        status
    }

    #[tokio::test]
    async fn unavailable_is_retried_until_success() {
        let calls = AtomicU32::new(0);
        let reply = with_retries("op", &fast(), &one_node(), |_| {
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
        let err = with_retries("create_transfers", &fast(), &one_node(), |_| {
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
        let err = with_retries("lookup_accounts", &fast(), &one_node(), |_| {
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
                assert_eq!(last_error, "127.0.0.1:1: Unavailable: down");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let calls = AtomicU32::new(0);
        let options = ClientOptions { request_timeout: Duration::from_millis(20), ..fast() };
        let reply = with_retries("op", &options, &one_node(), |_| {
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

    #[tokio::test]
    async fn a_forwarded_reply_moves_later_requests_to_the_leader_it_names() {
        let nodes = Nodes::lazy(&["127.0.0.1:1", "127.0.0.1:2"], fast());
        let forwarded = |hint: &str| {
            let mut response = tonic::Response::new("done");
            response.metadata_mut().insert(crate::nodes::LEADER_KEY, hint.parse().unwrap());
            response
        };
        // Answered through node 1, naming node 2 as the leader: one attempt, and the
        // next request goes to node 2.
        let calls = AtomicU32::new(0);
        let reply = with_retries("op", &fast(), &nodes, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            let hint = forwarded("127.0.0.1:2");
            async move { Ok(hint) }
        })
        .await
        .unwrap();
        assert_eq!((reply, calls.load(Ordering::SeqCst)), ("done", 1));
        assert_eq!(nodes.current().1.address, "127.0.0.1:2");
        // A hint naming the node in use, or a node that just did not answer, moves
        // nothing.
        with_retries("op", &fast(), &nodes, |_| async { Ok(forwarded("127.0.0.1:2")) })
            .await
            .unwrap();
        assert_eq!(nodes.current().1.address, "127.0.0.1:2");
        assert!(!nodes.after_failure(1, None, true));
        assert_eq!(nodes.current().1.address, "127.0.0.1:1");
        with_retries("op", &fast(), &nodes, |_| async { Ok(forwarded("127.0.0.1:2")) })
            .await
            .unwrap();
        assert_eq!(nodes.current().1.address, "127.0.0.1:1");
    }

    #[tokio::test]
    async fn hints_are_followed_and_count_as_attempts() {
        let nodes = Nodes::lazy(&["127.0.0.1:1", "127.0.0.1:2"], fast());
        let used = std::sync::Mutex::new(Vec::new());
        let reply = with_retries("op", &fast(), &nodes, |_| {
            let address = nodes.current().1.address.clone();
            used.lock().unwrap().push(address.clone());
            async move {
                match address.as_str() {
                    "127.0.0.1:1" => Err(redirect("127.0.0.1:3")),
                    "127.0.0.1:3" => Ok(tonic::Response::new("leader")),
                    other => panic!("sent to {other}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(reply, "leader");
        assert_eq!(*used.lock().unwrap(), ["127.0.0.1:1", "127.0.0.1:3"]);
        assert_eq!(nodes.current().1.address, "127.0.0.1:3");

        // Nodes that redirect to each other: bounded by max_attempts like any failure.
        let calls = AtomicU32::new(0);
        let err = with_retries("op", &fast(), &nodes, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            let next = match nodes.current().1.address.as_str() {
                "127.0.0.1:3" => "127.0.0.1:2",
                _ => "127.0.0.1:3",
            };
            async move { Err::<tonic::Response<()>, _>(redirect(next)) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(matches!(err, ClientError::TimedOut { attempts: 4, .. }), "{err:?}");
    }

    #[tokio::test]
    async fn failures_without_a_hint_rotate_through_the_nodes() {
        let nodes = Nodes::lazy(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], fast());
        let used = std::sync::Mutex::new(Vec::new());
        let options = ClientOptions { max_attempts: 5, ..fast() };
        let err = with_retries("op", &options, &nodes, |_| {
            used.lock().unwrap().push(nodes.current().0);
            async { Err::<tonic::Response<()>, _>(tonic::Status::unavailable("no leader")) }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ClientError::TimedOut { attempts: 5, .. }), "{err:?}");
        assert_eq!(*used.lock().unwrap(), [0, 1, 2, 0, 1]);
    }

    #[test]
    fn redirects_pause_briefly_and_do_not_grow_the_backoff() {
        let options = ClientOptions {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..ClientOptions::default()
        };
        let mut backoff = options.initial_backoff;
        let pauses: Vec<u64> = [false, false, true, false, true, false, false]
            .into_iter()
            .map(|redirected| pause(redirected, &mut backoff, &options).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 10, 40, 10, 50, 50]);
    }
}
