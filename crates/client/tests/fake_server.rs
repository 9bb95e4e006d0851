//! The client against an in-process fake `settle.v1.Ledger` server, over real gRPC:
//! batch splitting, result concatenation, retries, refusals and protocol checks, with
//! fault injection the real node does not offer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use settle_client::{Client, ClientError, ClientOptions};
use settle_ledger::{
    Account, AccountFilter, CreateAccountResult, CreateTransferResult, QueryFilter, Transfer,
    TransferFlags, BATCH_EVENTS_MAX,
};
use settle_proto::convert;
use settle_proto::pb;
use settle_proto::pb::ledger_server::{Ledger, LedgerServer};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// What the fake does with the next requests.
#[derive(Default)]
struct Faults {
    /// Answer this many requests with UNAVAILABLE first.
    unavailable: AtomicU32,
    /// Answer every create with one result too few.
    short_replies: AtomicBool,
    /// Never answer this many requests.
    hang: AtomicU32,
    /// Answer every request with INVALID_ARGUMENT.
    invalid: AtomicBool,
}

#[derive(Default)]
struct State {
    accounts: HashMap<u128, Account>,
    transfers: HashMap<u128, Transfer>,
    /// Every create batch received: (packed?, size).
    batches: Vec<(bool, usize)>,
    /// Every request that reached the handler, faults included.
    requests: usize,
}

#[derive(Clone, Default)]
struct Fake {
    state: Arc<Mutex<State>>,
    faults: Arc<Faults>,
}

impl Fake {
    async fn inject(&self) -> Result<(), Status> {
        self.state.lock().unwrap().requests += 1;
        if self
            .faults
            .hang
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            std::future::pending::<()>().await;
        }
        if self
            .faults
            .unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("fake: not now"));
        }
        if self.faults.invalid.load(Ordering::SeqCst) {
            return Err(Status::invalid_argument("fake: refused"));
        }
        Ok(())
    }

    fn check_batch(&self, packed: bool, len: usize) -> Result<(), Status> {
        if len > BATCH_EVENTS_MAX {
            return Err(Status::invalid_argument(format!("batch of {len} events")));
        }
        self.state.lock().unwrap().batches.push((packed, len));
        Ok(())
    }

    fn short(&self, mut results: Vec<i32>) -> Vec<i32> {
        if self.faults.short_replies.load(Ordering::SeqCst) {
            results.pop();
        }
        results
    }
}

#[tonic::async_trait]
impl Ledger for Fake {
    async fn create_accounts(
        &self,
        request: Request<pb::CreateAccountsRequest>,
    ) -> Result<Response<pb::CreateAccountsReply>, Status> {
        self.inject().await?;
        let request = request.into_inner();
        let accounts = convert::request_accounts(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check_batch(!request.packed.is_empty(), accounts.len())?;
        let mut state = self.state.lock().unwrap();
        let results: Vec<CreateAccountResult> = accounts
            .iter()
            .map(|a| {
                if a.reserved != 0 {
                    CreateAccountResult::ReservedField
                } else if state.accounts.insert(a.id, *a).is_some() {
                    CreateAccountResult::Exists
                } else {
                    CreateAccountResult::Ok
                }
            })
            .collect();
        let results = self.short(convert::account_results_to_pb(&results));
        Ok(Response::new(pb::CreateAccountsReply { results }))
    }

    async fn create_transfers(
        &self,
        request: Request<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersReply>, Status> {
        self.inject().await?;
        let request = request.into_inner();
        let transfers = convert::request_transfers(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check_batch(!request.packed.is_empty(), transfers.len())?;
        let mut state = self.state.lock().unwrap();
        let results: Vec<CreateTransferResult> = transfers
            .iter()
            .map(|t| {
                if state.transfers.insert(t.id, *t).is_some() {
                    CreateTransferResult::Exists
                } else {
                    CreateTransferResult::Ok
                }
            })
            .collect();
        let results = self.short(convert::transfer_results_to_pb(&results));
        Ok(Response::new(pb::CreateTransfersReply { results }))
    }

    async fn lookup_accounts(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        self.inject().await?;
        let ids = convert::ids_from_pb(&request.into_inner().ids);
        self.check_batch(false, ids.len())?;
        let state = self.state.lock().unwrap();
        let accounts = ids.iter().filter_map(|id| state.accounts.get(id)).map(Into::into).collect();
        Ok(Response::new(pb::AccountsReply { accounts }))
    }

    async fn read_snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        Err(Status::unimplemented("the fake serves no snapshots"))
    }

    async fn get_shard_map(
        &self,
        _request: Request<pb::ShardMapRequest>,
    ) -> Result<Response<pb::ShardMapReply>, Status> {
        Err(Status::unimplemented("the fake is one node, with no shard map"))
    }

    async fn lookup_transfers(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        self.inject().await?;
        let ids = convert::ids_from_pb(&request.into_inner().ids);
        self.check_batch(false, ids.len())?;
        let state = self.state.lock().unwrap();
        let transfers =
            ids.iter().filter_map(|id| state.transfers.get(id)).map(Into::into).collect();
        Ok(Response::new(pb::TransfersReply { transfers }))
    }

    async fn get_account_transfers(
        &self,
        request: Request<pb::AccountFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        self.inject().await?;
        let filter = AccountFilter::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let state = self.state.lock().unwrap();
        let mut transfers: Vec<Transfer> = state
            .transfers
            .values()
            .filter(|t| {
                t.debit_account_id == filter.account_id || t.credit_account_id == filter.account_id
            })
            .copied()
            .collect();
        transfers.sort_by_key(|t| t.id);
        transfers.truncate(filter.limit as usize);
        Ok(Response::new(pb::TransfersReply {
            transfers: transfers.iter().map(Into::into).collect(),
        }))
    }

    async fn get_account_balances(
        &self,
        _request: Request<pb::AccountFilter>,
    ) -> Result<Response<pb::AccountBalancesReply>, Status> {
        self.inject().await?;
        let balance = pb::AccountBalance { timestamp: 7, ..Default::default() };
        Ok(Response::new(pb::AccountBalancesReply { balances: vec![balance] }))
    }

    async fn query_accounts(
        &self,
        request: Request<pb::QueryFilter>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        self.inject().await?;
        let filter = QueryFilter::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let state = self.state.lock().unwrap();
        let mut accounts: Vec<Account> = state
            .accounts
            .values()
            .filter(|a| filter.ledger == 0 || a.ledger == filter.ledger)
            .copied()
            .collect();
        accounts.sort_by_key(|a| a.id);
        Ok(Response::new(pb::AccountsReply { accounts: accounts.iter().map(Into::into).collect() }))
    }

    async fn query_transfers(
        &self,
        _request: Request<pb::QueryFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        self.inject().await?;
        Err(Status::failed_precondition("fake: query_transfers is not implemented"))
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(fake: Fake, addr: SocketAddr) -> Server {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(LedgerServer::new(fake))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Server { addr, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
    }
}

async fn setup() -> (Fake, Server, Client) {
    let fake = Fake::default();
    let server = Server::start(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let client =
        Client::connect_with(&[server.addr.to_string()], fast_options()).await.expect("connect");
    (fake, server, client)
}

fn transfer(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: id,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn twenty_thousand_transfers_are_split_and_all_results_come_back() {
    let (fake, server, client) = setup().await;
    let transfers: Vec<Transfer> = (1..=20_000).map(transfer).collect();

    let results = client.create_transfers(&transfers).await.unwrap();
    assert_eq!(results.len(), 20_000);
    assert!(results.iter().all(|r| *r == CreateTransferResult::Ok));
    assert_eq!(
        fake.state.lock().unwrap().batches,
        vec![(false, 8189), (false, 8189), (false, 3622)]
    );

    // Packed, with a few new ids mixed in: results are in event order.
    let mut again = transfers.clone();
    again.extend((20_001..=20_010).map(transfer));
    let results = client.create_transfers_packed(&again).await.unwrap();
    assert_eq!(results.len(), 20_010);
    assert!(results[..20_000].iter().all(|r| *r == CreateTransferResult::Exists));
    assert!(results[20_000..].iter().all(|r| *r == CreateTransferResult::Ok));
    assert_eq!(fake.state.lock().unwrap().batches[3..], [(true, 8189), (true, 8189), (true, 3632)]);

    // Lookups split too, and come back in the order asked.
    let ids: Vec<u128> = (1..=20_010).rev().collect();
    let found = client.lookup_transfers(&ids).await.unwrap();
    assert_eq!(found.len(), 20_010);
    assert!(found.iter().zip(&ids).all(|(t, id)| t.id == *id && t.amount == *id));
    assert_eq!(
        fake.state.lock().unwrap().batches[6..],
        [(false, 8189), (false, 8189), (false, 3632)]
    );
    server.stop().await;
}

#[tokio::test]
async fn linked_chains_are_never_split_across_batches() {
    let (fake, server, client) = setup().await;
    // 8188 singles, then a chain of 4 straddling the limit, then 5 singles.
    let mut transfers: Vec<Transfer> = (1..=8188).map(transfer).collect();
    for id in 8189..=8192 {
        let linked = if id < 8192 { TransferFlags::LINKED } else { TransferFlags::empty() };
        transfers.push(Transfer { flags: linked, ..transfer(id) });
    }
    transfers.extend((8193..=8197).map(transfer));
    let results = client.create_transfers(&transfers).await.unwrap();
    assert_eq!(results.len(), transfers.len());
    assert_eq!(fake.state.lock().unwrap().batches, vec![(false, 8188), (false, 9)]);

    // A chain longer than a batch is refused before anything is sent.
    let requests_before = fake.state.lock().unwrap().requests;
    let chain: Vec<Transfer> = (100_000..100_000 + BATCH_EVENTS_MAX as u128 + 1)
        .map(|id| Transfer { flags: TransferFlags::LINKED, ..transfer(id) })
        .collect();
    let err = client.create_transfers(&chain).await.unwrap_err();
    assert!(matches!(err, ClientError::ChainTooLong { start: 0, len: 8190, max: 8189 }), "{err:?}");
    assert_eq!(fake.state.lock().unwrap().requests, requests_before);
    server.stop().await;
}

#[tokio::test]
async fn accounts_round_trip_and_reserved_reaches_the_server() {
    let (fake, server, client) = setup().await;
    let accounts: Vec<Account> = (1..=3)
        .map(|id| Account { id: id << 64 | id, ledger: 7, code: 9, ..Default::default() })
        .collect();
    let results = client.create_accounts(&accounts).await.unwrap();
    assert_eq!(results, vec![CreateAccountResult::Ok; 3]);

    let found = client.lookup_accounts(&[accounts[2].id, 12345, accounts[0].id]).await.unwrap();
    assert_eq!(found, vec![accounts[2], accounts[0]]);
    let queried = client.query_accounts(&QueryFilter { ledger: 7, ..Default::default() }).await;
    assert_eq!(queried.unwrap(), accounts);

    // `reserved` travels in the repeated form too, so the server can refuse it.
    let bad = Account { id: 99, reserved: 1, ledger: 7, code: 9, ..Default::default() };
    let results = client.create_accounts(&[bad]).await.unwrap();
    assert_eq!(results, vec![CreateAccountResult::ReservedField]);
    assert_eq!(fake.state.lock().unwrap().batches.last(), Some(&(false, 1)));
    server.stop().await;
}

#[tokio::test]
async fn queries_convert_filters_and_replies() {
    let (_fake, server, client) = setup().await;
    let transfers: Vec<Transfer> = (1..=10).map(transfer).collect();
    client.create_transfers(&transfers).await.unwrap();
    let filter = AccountFilter { account_id: 1, limit: 4, ..Default::default() };
    let got = client.get_account_transfers(&filter).await.unwrap();
    assert_eq!(got, transfers[..4].to_vec());
    let balances = client.get_account_balances(&filter).await.unwrap();
    assert_eq!(balances.len(), 1);
    assert_eq!(balances[0].timestamp, 7);
    let err = client.query_transfers(&QueryFilter::default()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { code: tonic::Code::FailedPrecondition, .. }),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn unavailable_is_retried_and_invalid_argument_is_not() {
    let (fake, server, client) = setup().await;
    fake.faults.unavailable.store(3, Ordering::SeqCst);
    let before = fake.state.lock().unwrap().requests;
    let results = client.create_transfers(&[transfer(1)]).await.unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    assert_eq!(fake.state.lock().unwrap().requests - before, 4, "3 refusals + 1 success");

    // Too many attempts in a row: TimedOut, naming the attempts.
    fake.faults.unavailable.store(100, Ordering::SeqCst);
    let err = client.create_transfers(&[transfer(2)]).await.unwrap_err();
    match &err {
        ClientError::TimedOut {
            operation: "create_transfers", attempts: 5, last_error, ..
        } => {
            assert!(last_error.contains("fake: not now"), "{last_error}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().starts_with("create_transfers timed out after 5 attempts"), "{err}");
    fake.faults.unavailable.store(0, Ordering::SeqCst);

    // INVALID_ARGUMENT is returned at once, never retried.
    fake.faults.invalid.store(true, Ordering::SeqCst);
    let before = fake.state.lock().unwrap().requests;
    let err = client.create_transfers(&[transfer(3)]).await.unwrap_err();
    assert_eq!(fake.state.lock().unwrap().requests - before, 1);
    assert_eq!(
        err.to_string(),
        "create_transfers: request refused by the server (InvalidArgument): fake: refused"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_result_count_mismatch_is_an_invalid_response() {
    let (fake, server, client) = setup().await;
    fake.faults.short_replies.store(true, Ordering::SeqCst);
    let err = client.create_transfers(&[transfer(1), transfer(2)]).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidResponse { operation: "create_transfers", .. }));
    assert!(err.to_string().contains("1 results for a batch of 2 events"), "{err}");
    let err = client.create_accounts(&[Account { id: 5, ..Default::default() }]).await;
    assert!(matches!(err, Err(ClientError::InvalidResponse { .. })));
    server.stop().await;
}

#[tokio::test]
async fn a_hung_request_times_out_and_is_retried() {
    let fake = Fake::default();
    let server = Server::start(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let options = ClientOptions { request_timeout: Duration::from_millis(200), ..fast_options() };
    let client = Client::connect_with(&[server.addr.to_string()], options).await.unwrap();
    fake.faults.hang.store(1, Ordering::SeqCst);
    let results = client.create_transfers(&[transfer(1)]).await.unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    assert_eq!(fake.state.lock().unwrap().requests, 2);
    // Not stopping gracefully: the hung handler would hold the shutdown.
    server.task.abort();
}

#[tokio::test]
async fn the_client_rides_out_a_server_restart() {
    let fake = Fake::default();
    let server = Server::start(fake.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.addr;
    let options = ClientOptions {
        max_attempts: 30,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
    };
    let client = Client::connect_with(&[addr.to_string()], options).await.unwrap();
    assert_eq!(client.create_transfers(&[transfer(1)]).await.unwrap(), [CreateTransferResult::Ok]);
    server.stop().await;

    // The server comes back on the same address while the client is retrying.
    let restarted = {
        let fake = fake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Server::start(fake, addr).await
        })
    };
    let results = client.create_transfers(&[transfer(1), transfer(2)]).await.unwrap();
    assert_eq!(results, [CreateTransferResult::Exists, CreateTransferResult::Ok]);
    restarted.await.unwrap().stop().await;
}

#[tokio::test]
async fn connect_uses_the_first_reachable_address() {
    let (_fake, server, _client) = setup().await;
    let addresses = vec![
        "127.0.0.1:1".to_string(),
        format!("http://{}", server.addr),
        "127.0.0.1:2".to_string(),
    ];
    let client = Client::connect_with(&addresses, fast_options()).await.unwrap();
    assert_eq!(client.connected_address(), addresses[1]);
    assert_eq!(client.addresses(), &addresses[..]);
    server.stop().await;
}
