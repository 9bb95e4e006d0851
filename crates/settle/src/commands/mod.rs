//! The command groups, and what the client commands share: the `--addresses` and
//! `--json` options, connecting to a node, and the error type every command returns.

pub mod account;
pub mod bench;
pub mod dev;
pub mod lab;
pub mod shard;
pub mod sim;
pub mod start;
pub mod status;
pub mod transfer;

use std::future::Future;
use std::time::Duration;

use settle_client::{Client, ClientError, ClientOptions};

/// How the one-shot CLI commands retry: a few attempts of 10 s each, so that a node
/// that went away gives an error within about half a minute. (Retrying a create is safe:
/// an event that an unacknowledged attempt applied comes back as `exists`.)
pub fn cli_options() -> ClientOptions {
    ClientOptions {
        max_attempts: 3,
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// A command that could not do its job. `main` prints it as `error: ...` and exits 1.
/// (A request that was carried out but gave a non-success result is not an error: the
/// command prints the result and returns exit code 1 itself.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `reasons` names each address with why it failed.
    #[error("cannot reach a settle node at {addresses} ({reasons})")]
    Unreachable { addresses: String, reasons: String },
    #[error("cannot connect to a settle node at {addresses}: {source}")]
    Connect { addresses: String, source: ClientError },
    #[error("request to the settle node at {addresses} failed: {source}")]
    Request { addresses: String, source: ClientError },
    #[error("node: {0}")]
    Node(#[from] settle_node::NodeError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Options of every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Node addresses, comma-separated.
    #[arg(
        long,
        env = "SETTLE_ADDRESSES",
        value_delimiter = ',',
        default_value = "127.0.0.1:3000",
        value_name = "A[,B]"
    )]
    pub addresses: Vec<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// A connected client that names its node in every error.
pub struct Session {
    client: Client,
    addresses: String,
}

impl Session {
    pub async fn connect(addresses: &[String], options: ClientOptions) -> Result<Session, Error> {
        let joined = addresses.join(",");
        match Client::connect_with(addresses, options).await {
            Ok(client) => Ok(Session { client, addresses: joined }),
            Err(ClientError::Connect { reasons, .. }) => {
                Err(Error::Unreachable { addresses: joined, reasons })
            }
            Err(source) => Err(Error::Connect { addresses: joined, source }),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Awaits one request, naming the node in any error.
    pub async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, Error> {
        request.await.map_err(|source| self.request_error(source))
    }

    pub fn request_error(&self, source: ClientError) -> Error {
        Error::Request { addresses: self.addresses.clone(), source }
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment this is created: install it
/// before announcing readiness, so that a signal sent right after cannot kill the
/// process without a clean shutdown.
///
/// It also catches SIGXFSZ (a write past the file-size limit), whose default is to kill
/// the process: the write then fails with an error the node reports and stops on,
/// cleanly, like any other failed write.
pub struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    _file_size: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> Result<ShutdownSignals, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let file_size = SignalKind::from_raw(rustix::process::Signal::XFSZ.as_raw());
        Ok(ShutdownSignals {
            _file_size: signal(file_size).map_err(Error::io("cannot listen for SIGXFSZ"))?,
            interrupt: signal(SignalKind::interrupt())
                .map_err(Error::io("cannot listen for SIGINT"))?,
            terminate: signal(SignalKind::terminate())
                .map_err(Error::io("cannot listen for SIGTERM"))?,
        })
    }

    /// Waits for the next signal and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Parses an atomic-commit protocol name for clap.
pub fn parse_protocol(name: &str) -> Result<settle_sim::xshard::Protocol, String> {
    settle_sim::xshard::Protocol::from_name(name)
        .ok_or_else(|| format!("unknown protocol {name:?}: expected 2pc, 3pc or paxos-commit"))
}
