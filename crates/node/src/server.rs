//! The gRPC service: converts and checks each request, hands it to the executor, and
//! converts the answer. Bad input is refused here with INVALID_ARGUMENT and never
//! reaches the ledger or the log.

use settle_commit::read::ReadError;
use settle_ledger::BATCH_EVENTS_MAX;
use settle_proto::convert::{self, ConvertError};
use settle_proto::pb;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request as GrpcRequest, Response, Status};

use crate::executor::{Command, Request};
use crate::NodeError;
use settle_ledger::{Read, Reply, Write};

/// The metadata key of a redirect: the leader's client address (`host:port`).
pub const LEADER_METADATA_KEY: &str = "settle-leader";
/// Metadata of a snapshot read refused as too old: the shard's clock (ns).
pub const CLOCK_METADATA_KEY: &str = "settle-clock";

pub struct Service {
    pub requests: mpsc::Sender<Request>,
}

pub(crate) fn invalid(error: ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

pub(crate) fn check_count(what: &str, count: usize) -> Result<(), Status> {
    if count > BATCH_EVENTS_MAX {
        return Err(Status::invalid_argument(format!(
            "{count} {what} in one request; at most {BATCH_EVENTS_MAX} are allowed"
        )));
    }
    Ok(())
}

impl Service {
    async fn call(&self, command: Command) -> Result<Reply, Status> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { command, shard: None, reply })
            .await
            .map_err(|_| Status::unavailable("the node is shutting down"))?;
        answer.await.map_err(|_| Status::unavailable("the node stopped"))?.map_err(status_of)
    }
}

/// The gRPC status for a node error: what the client may do about it.
pub fn status_of(error: NodeError) -> Status {
    match error {
        // The ledger refused this request's batch: retrying it cannot help.
        NodeError::Batch(error) => Status::invalid_argument(error.to_string()),
        NodeError::Config(message) => Status::failed_precondition(message),
        // A snapshot read behind a shard's clock: say the clock, for a later attempt.
        NodeError::Snapshot(ReadError::TooOld { clock }) => {
            let mut status = Status::failed_precondition(error.to_string());
            status
                .metadata_mut()
                .insert(CLOCK_METADATA_KEY, clock.to_string().parse().expect("digits"));
            status
        }
        NodeError::Snapshot(ReadError::OutOfRange) => Status::invalid_argument(error.to_string()),
        // Not the leader: say where it is, for the client to follow.
        NodeError::NotLeader { leader: Some(ref leader) } => {
            let mut status = Status::unavailable(error.to_string());
            if let Ok(value) = leader.parse() {
                status.metadata_mut().insert(LEADER_METADATA_KEY, value);
            }
            status
        }
        // Anything else stops the node or passes; another attempt (later, or
        // elsewhere) may work.
        other => Status::unavailable(other.to_string()),
    }
}

fn unexpected(reply: Reply) -> Status {
    Status::internal(format!("executor answered with the wrong kind of reply: {reply:?}"))
}

#[tonic::async_trait]
impl pb::ledger_server::Ledger for Service {
    async fn create_accounts(
        &self,
        request: GrpcRequest<pb::CreateAccountsRequest>,
    ) -> Result<Response<pb::CreateAccountsReply>, Status> {
        let accounts = convert::request_accounts(request.get_ref()).map_err(invalid)?;
        check_count("accounts", accounts.len())?;
        if accounts.is_empty() {
            return Ok(Response::new(pb::CreateAccountsReply { results: Vec::new() }));
        }
        match self.call(Command::Write(Write::CreateAccounts(accounts))).await? {
            Reply::AccountResults(results) => Ok(Response::new(pb::CreateAccountsReply {
                results: convert::account_results_to_pb(&results),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn create_transfers(
        &self,
        request: GrpcRequest<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersReply>, Status> {
        let transfers = convert::request_transfers(request.get_ref()).map_err(invalid)?;
        check_count("transfers", transfers.len())?;
        if transfers.is_empty() {
            return Ok(Response::new(pb::CreateTransfersReply { results: Vec::new() }));
        }
        match self.call(Command::Write(Write::CreateTransfers(transfers))).await? {
            Reply::TransferResults(results) => Ok(Response::new(pb::CreateTransfersReply {
                results: convert::transfer_results_to_pb(&results),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn lookup_accounts(
        &self,
        request: GrpcRequest<pb::LookupRequest>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        let ids = convert::ids_from_pb(&request.get_ref().ids);
        check_count("ids", ids.len())?;
        accounts_reply(self.call(Command::Read(Read::LookupAccounts(ids))).await?)
    }

    async fn lookup_transfers(
        &self,
        request: GrpcRequest<pb::LookupRequest>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        let ids = convert::ids_from_pb(&request.get_ref().ids);
        check_count("ids", ids.len())?;
        transfers_reply(self.call(Command::Read(Read::LookupTransfers(ids))).await?)
    }

    async fn get_shard_map(
        &self,
        _request: GrpcRequest<pb::ShardMapRequest>,
    ) -> Result<Response<pb::ShardMapReply>, Status> {
        Err(Status::unimplemented("a standalone node holds every account: it has no shard map"))
    }

    /// One node, one ledger: its latest state is a snapshot, at its latest timestamp.
    async fn read_snapshot(
        &self,
        request: GrpcRequest<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let message = request.into_inner();
        if message.timestamp != 0 {
            return Err(Status::failed_precondition(
                "a standalone node reads snapshots at its latest state only: leave the \
                 timestamp 0 (reads at a chosen timestamp are for clusters)",
            ));
        }
        let ids = convert::ids_from_pb(&message.ids);
        check_count("ids", ids.len())?;
        snapshot_reply(self.call(Command::Read(Read::Snapshot(ids))).await?)
    }

    async fn get_account_transfers(
        &self,
        request: GrpcRequest<pb::AccountFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        let filter = request.get_ref().try_into().map_err(invalid)?;
        transfers_reply(self.call(Command::Read(Read::GetAccountTransfers(filter))).await?)
    }

    async fn get_account_balances(
        &self,
        request: GrpcRequest<pb::AccountFilter>,
    ) -> Result<Response<pb::AccountBalancesReply>, Status> {
        let filter = request.get_ref().try_into().map_err(invalid)?;
        match self.call(Command::Read(Read::GetAccountBalances(filter))).await? {
            Reply::Balances(balances) => Ok(Response::new(pb::AccountBalancesReply {
                balances: balances.iter().map(pb::AccountBalance::from).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    async fn query_accounts(
        &self,
        request: GrpcRequest<pb::QueryFilter>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        let filter = request.get_ref().try_into().map_err(invalid)?;
        accounts_reply(self.call(Command::Read(Read::QueryAccounts(filter))).await?)
    }

    async fn query_transfers(
        &self,
        request: GrpcRequest<pb::QueryFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        let filter = request.get_ref().try_into().map_err(invalid)?;
        transfers_reply(self.call(Command::Read(Read::QueryTransfers(filter))).await?)
    }
}

fn accounts_reply(reply: Reply) -> Result<Response<pb::AccountsReply>, Status> {
    match reply {
        Reply::Accounts(accounts) => Ok(Response::new(pb::AccountsReply {
            accounts: accounts.iter().map(pb::Account::from).collect(),
        })),
        other => Err(unexpected(other)),
    }
}

fn snapshot_reply(reply: Reply) -> Result<Response<pb::SnapshotReply>, Status> {
    match reply {
        Reply::Snapshot { timestamp, accounts } => Ok(Response::new(pb::SnapshotReply {
            timestamp,
            accounts: accounts.iter().map(pb::Account::from).collect(),
        })),
        other => Err(unexpected(other)),
    }
}

fn transfers_reply(reply: Reply) -> Result<Response<pb::TransfersReply>, Status> {
    match reply {
        Reply::Transfers(transfers) => Ok(Response::new(pb::TransfersReply {
            transfers: transfers.iter().map(pb::Transfer::from).collect(),
        })),
        other => Err(unexpected(other)),
    }
}
