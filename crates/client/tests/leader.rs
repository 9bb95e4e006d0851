//! Leader following, against in-process fake `settle.v1.Ledger` servers over real gRPC:
//! each fake either answers (a leader) or refuses with `UNAVAILABLE`, naming the leader
//! in its `settle-leader` metadata when it "knows" one (a follower), as the nodes of a
//! replicated cluster do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use settle_client::{Client, ClientError, ClientOptions};
use settle_ledger::{Account, CreateAccountResult, CreateTransferResult, Transfer};
use settle_proto::convert;
use settle_proto::pb;
use settle_proto::pb::ledger_server::{Ledger, LedgerServer};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// What a fake node does with requests.
#[derive(Clone, Debug)]
enum Role {
    /// Answers them.
    Leader,
    /// Refuses them with `UNAVAILABLE`, naming this leader (if any).
    Follower(Option<String>),
}

#[derive(Clone)]
struct Fake {
    /// Tells this fake's answers apart: the `code` of every account it returns.
    tag: u16,
    role: Arc<Mutex<Role>>,
    /// Requests received, refused ones included.
    requests: Arc<AtomicUsize>,
}

impl Fake {
    fn new(tag: u16, role: Role) -> Fake {
        Fake { tag, role: Arc::new(Mutex::new(role)), requests: Arc::default() }
    }

    fn set_role(&self, role: Role) {
        *self.role.lock().unwrap() = role;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// `Ok` if this fake is the leader; the redirect a follower sends otherwise.
    fn lead(&self) -> Result<(), Status> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        match &*self.role.lock().unwrap() {
            Role::Leader => Ok(()),
            Role::Follower(leader) => {
                let mut status = Status::unavailable("fake: not the leader");
                if let Some(leader) = leader {
                    status.metadata_mut().insert("settle-leader", leader.parse().unwrap());
                }
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Ledger for Fake {
    async fn create_accounts(
        &self,
        request: Request<pb::CreateAccountsRequest>,
    ) -> Result<Response<pb::CreateAccountsReply>, Status> {
        self.lead()?;
        let accounts = convert::request_accounts(&request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let results =
            convert::account_results_to_pb(&vec![CreateAccountResult::Ok; accounts.len()]);
        Ok(Response::new(pb::CreateAccountsReply { results }))
    }

    async fn create_transfers(
        &self,
        request: Request<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersReply>, Status> {
        self.lead()?;
        let transfers = convert::request_transfers(&request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let results =
            convert::transfer_results_to_pb(&vec![CreateTransferResult::Ok; transfers.len()]);
        Ok(Response::new(pb::CreateTransfersReply { results }))
    }

    /// Every id exists, as an account whose `code` is this fake's tag.
    async fn lookup_accounts(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        self.lead()?;
        let ids = convert::ids_from_pb(&request.into_inner().ids);
        let accounts = ids
            .iter()
            .map(|&id| {
                pb::Account::from(&Account { id, ledger: 1, code: self.tag, ..Default::default() })
            })
            .collect();
        Ok(Response::new(pb::AccountsReply { accounts }))
    }

    async fn read_snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        Err(Status::unimplemented("this fake serves no snapshots"))
    }

    async fn get_shard_map(
        &self,
        _request: Request<pb::ShardMapRequest>,
    ) -> Result<Response<pb::ShardMapReply>, Status> {
        Err(Status::unimplemented("this fake is one node, with no shard map"))
    }

    async fn lookup_transfers(
        &self,
        _request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        self.lead()?;
        Ok(Response::new(pb::TransfersReply::default()))
    }

    async fn get_account_transfers(
        &self,
        _request: Request<pb::AccountFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        self.lead()?;
        Ok(Response::new(pb::TransfersReply::default()))
    }

    async fn get_account_balances(
        &self,
        _request: Request<pb::AccountFilter>,
    ) -> Result<Response<pb::AccountBalancesReply>, Status> {
        self.lead()?;
        Ok(Response::new(pb::AccountBalancesReply::default()))
    }

    async fn query_accounts(
        &self,
        _request: Request<pb::QueryFilter>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        self.lead()?;
        Ok(Response::new(pb::AccountsReply::default()))
    }

    async fn query_transfers(
        &self,
        _request: Request<pb::QueryFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        self.lead()?;
        Ok(Response::new(pb::TransfersReply::default()))
    }
}

struct Server {
    fake: Fake,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(fake: Fake) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = LedgerServer::new(fake.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        Server { fake, addr, stop: Some(stop), task }
    }

    async fn leader(tag: u16) -> Server {
        Server::start(Fake::new(tag, Role::Leader)).await
    }

    async fn follower(tag: u16, leader: Option<&Server>) -> Server {
        Server::start(Fake::new(tag, Role::Follower(leader.map(Server::address)))).await
    }

    /// As a node would name itself in a leader hint: `host:port`.
    fn address(&self) -> String {
        self.addr.to_string()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn options() -> ClientOptions {
    ClientOptions {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
    }
}

/// Which fake answered: the tag of the account it returns.
async fn answered_by(client: &Client) -> u16 {
    let accounts = client.lookup_accounts(&[1]).await.unwrap();
    assert_eq!(accounts.len(), 1);
    accounts[0].code
}

fn transfer(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 1,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_follower_redirects_the_client_to_the_leader() {
    let leader = Server::leader(1).await;
    let follower = Server::follower(2, Some(&leader)).await;
    // Given only the follower, in URI form: the leader's address is learnt from the hint.
    let client =
        Client::connect_with(&[format!("http://{}", follower.addr)], options()).await.unwrap();
    let clone = client.clone();
    assert_eq!(client.connected_address(), format!("http://{}", follower.addr));

    let results = client.create_transfers(&[transfer(1), transfer(2)]).await.unwrap();
    assert_eq!(results, [CreateTransferResult::Ok, CreateTransferResult::Ok]);
    assert_eq!(follower.fake.requests(), 1, "one redirect");
    assert_eq!(leader.fake.requests(), 1);
    assert_eq!(client.connected_address(), leader.address());
    assert_eq!(clone.connected_address(), leader.address(), "clones share the node in use");
    assert_eq!(client.addresses(), [format!("http://{}", follower.addr)], "as given");

    // Later requests, from any clone, go straight to the leader.
    assert_eq!(answered_by(&clone).await, 1);
    assert_eq!(follower.fake.requests(), 1);
    assert_eq!(leader.fake.requests(), 2);

    follower.stop().await;
    leader.stop().await;
}

#[tokio::test]
async fn the_client_skips_a_dead_node_and_follows_a_new_leader() {
    let b = Server::leader(2).await;
    let c = Server::leader(3).await;
    // Port 1 on localhost: nothing listens there, so connections are refused.
    let addresses = vec!["127.0.0.1:1".to_string(), b.address()];
    let client = Client::connect_with(&addresses, options()).await.unwrap();
    assert_eq!(client.connected_address(), b.address());
    assert_eq!(answered_by(&client).await, 2);

    // Leadership moves to c, a node the client was not given.
    b.fake.set_role(Role::Follower(Some(c.address())));
    c.fake.set_role(Role::Leader);
    assert_eq!(answered_by(&client).await, 3);
    assert_eq!(client.connected_address(), c.address());

    // And back to b: c now knows it.
    c.fake.set_role(Role::Follower(Some(b.address())));
    b.fake.set_role(Role::Leader);
    assert_eq!(answered_by(&client).await, 2);
    assert_eq!(client.connected_address(), b.address());

    c.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_a_hint_or_after_a_crash_the_client_tries_the_next_node() {
    // A follower that does not know the leader (an election is under way): next node.
    let a = Server::follower(1, None).await;
    let b = Server::leader(2).await;
    let addresses = vec![a.address(), b.address()];
    let client = Client::connect_with(&addresses, options()).await.unwrap();
    assert_eq!(client.connected_address(), a.address());
    assert_eq!(answered_by(&client).await, 2);
    assert_eq!(client.connected_address(), b.address());
    assert_eq!(a.fake.requests(), 1);

    // The node in use crashes (its connections are refused from now on): the client
    // goes round to a, which has become the leader meanwhile.
    a.fake.set_role(Role::Leader);
    b.stop().await;
    assert_eq!(answered_by(&client).await, 1);
    assert_eq!(client.connected_address(), a.address());

    a.stop().await;
}

#[tokio::test]
async fn a_redirect_loop_ends_after_max_attempts() {
    let a = Server::follower(1, None).await;
    let b = Server::follower(2, Some(&a)).await;
    a.fake.set_role(Role::Follower(Some(b.address())));
    let client = Client::connect_with(&[a.address()], options()).await.unwrap();

    let err = client.create_transfers(&[transfer(1)]).await.unwrap_err();
    match &err {
        ClientError::TimedOut {
            operation: "create_transfers", attempts: 5, last_error, ..
        } => {
            assert!(last_error.contains("fake: not the leader"), "{last_error}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(a.fake.requests() + b.fake.requests(), 5);
    assert_eq!(a.fake.requests(), 3, "a, b, a, b, a");

    // Once the cluster settles on a leader, the same client gets through.
    b.fake.set_role(Role::Leader);
    assert_eq!(answered_by(&client).await, 2);

    b.stop().await;
    a.stop().await;
}
