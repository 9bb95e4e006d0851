//! The router: a cluster node's client-facing `settle.v1.Ledger` service (the payment
//! gateway role). Every node accepts every request, splits it by placement, runs each
//! part at the shard that owns it, and puts the answers back in request order.
//!
//! Placement: account `id` lives on shard `shards[shard_of(id, S)]` (the shard ids in
//! ascending order; `settle_commit::placement`). A transfer's *home* is its debit
//! account's shard; a linked chain's home is its first transfer's. A batch is split
//! into units (a single event or a linked chain) and grouped by home:
//! - a unit whose accounts all live at its home is a local write there (one Raft round,
//!   the fast path); the local units of one home go together, in order;
//! - any other unit is a cross-shard transaction coordinated by its home's leader
//!   (2PC by default; 3PC when the config allows it; Paxos Commit; see `settle-commit`).
//!
//! A home this node leads runs here (through the engine); any other is forwarded to its
//! leader as the same request with the `settle-shard` metadata naming the home, which
//! the receiving node runs without forwarding again. Reads go to the account's shard,
//! or to every shard (lookups by transfer id, queries), and are merged.
//!
//! Post and void name their pending transfer; when they leave the account ids zero,
//! the router looks the pending transfer up (on every shard) to place them. A
//! cross-shard pending transfer is acknowledged once its decision is durable, and its
//! participants store it when the decision reaches them, a moment later: so until the
//! pending transfer is stored at each shard holding one of its accounts, the lookup is
//! repeated (backing off, for at most [`PENDING_SETTLE_WAIT`]), and a post or void sent
//! right after its pending transfer's acknowledgement finds it.
//!
//! Touches: the engine's request channel, gRPC clients to the other nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures_util::future::join_all;
use rustc_hash::FxHashSet;
use settle_commit::placement::shard_of;
use settle_commit::{Protocol, ShardMap, Txn};
use settle_ledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Read, Reply, Transfer,
    TransferFlags, Write,
};
use settle_proto::convert;
use settle_proto::pb;
use settle_proto::pb::ledger_client::LedgerClient;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request as GrpcRequest, Response, Status};

use super::config::ClusterConfig;
use super::TIMELINE;
use crate::executor::{Command, Request};
use crate::server::{check_count, invalid, status_of};
use crate::NodeError;

/// Metadata naming the shard a forwarded request is for: run it there, do not forward.
pub const SHARD_KEY: &str = "settle-shard";
/// Metadata on every write reply: the version of the shard map this node knows (a client
/// holding an older one fetches it again).
pub const MAP_VERSION_KEY: &str = "settle-map-version";
/// Metadata choosing the atomic-commit protocol for this request (`2pc`, `3pc`,
/// `paxos-commit`), over the cluster's default.
pub const PROTOCOL_KEY: &str = "settle-protocol";
/// Hops a forwarded request may take following leader hints.
const FORWARD_HOPS_MAX: usize = 3;
/// A snapshot read the cluster times goes this far ahead of this node's clock (the
/// read points' trip through each shard's log), doubling on each attempt a shard's
/// clock had already passed, for at most `SNAPSHOT_ATTEMPTS_MAX` attempts.
const SNAPSHOT_LEAD_NS: u64 = 20_000_000;
/// Longest a post or void that left its accounts zero waits for its pending transfer
/// to be stored at every shard holding one of its accounts (see the module docs). A
/// pending id that does not exist fails after this wait.
pub const PENDING_SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
const SNAPSHOT_ATTEMPTS_MAX: u32 = 4;
/// How far ahead of this node's clock a client may ask to read: every shard's clock
/// moves there (and pending transfers due by then expire), so not far.
const SNAPSHOT_AHEAD_MAX_NS: u64 = 1_000_000_000;

/// Which node leads each shard this node holds (`None`: no leader known), kept by the
/// engine.
pub type Leaders = Arc<RwLock<BTreeMap<u64, Option<u64>>>>;

/// The newest shard map this node knows: its replica of the metadata shard's (kept by
/// the engine), or one fetched from a node that holds that shard.
pub type SharedMap = Arc<RwLock<Option<ShardMap>>>;

pub struct Router {
    pub node_id: u64,
    pub requests: mpsc::Sender<Request>,
    pub cluster: ClusterConfig,
    pub leaders: Leaders,
    shard_map: SharedMap,
    /// Shard ids, ascending: placement indexes into this.
    shards: Vec<u64>,
    /// Leaders of shards this node does not hold, as hints taught them.
    remote_leaders: Mutex<HashMap<u64, u64>>,
    peers: Mutex<HashMap<u64, LedgerClient<Channel>>>,
}

/// A cross-shard unit: its range in the request, and the shards of each transfer's
/// debit and credit account.
type PlacedUnit = (std::ops::Range<usize>, Vec<[u32; 2]>);

/// Transactions of the units of each participant set, in request order, each of at
/// most `TXN_TRANSFERS_MAX` transfers and no transfer id twice (a side is reserved under
/// its transfer's id), with the request ranges of their units.
fn batch_units(
    protocol: Protocol,
    placed: &[Transfer],
    by_participants: BTreeMap<Vec<u32>, Vec<PlacedUnit>>,
) -> Vec<(Vec<std::ops::Range<usize>>, Txn)> {
    let mut txns = Vec::new();
    let mut close = |group: &mut Vec<PlacedUnit>| {
        if group.is_empty() {
            return;
        }
        let units = group.iter().map(|(range, placement)| (&placed[range.clone()], &placement[..]));
        let txn = Txn::of_units(protocol, units)
            .expect("units that each make a transaction, one home, no id twice");
        txns.push((group.drain(..).map(|(range, _)| range).collect(), txn));
    };
    for units in by_participants.into_values() {
        let mut group: Vec<PlacedUnit> = Vec::new();
        let (mut transfers, mut ids) = (0, FxHashSet::default());
        for unit in units {
            let range = unit.0.clone();
            let full = transfers + range.len() > settle_commit::TXN_TRANSFERS_MAX;
            if full || placed[range.clone()].iter().any(|t| ids.contains(&t.id)) {
                close(&mut group);
                (transfers, ids) = (0, FxHashSet::default());
            }
            transfers += range.len();
            ids.extend(placed[range].iter().map(|t| t.id));
            group.push(unit);
        }
        close(&mut group);
    }
    txns
}

fn unexpected(reply: Reply) -> Status {
    Status::internal(format!("the engine answered with the wrong kind of reply: {reply:?}"))
}

/// Where a part of a request runs.
enum Target {
    Here,
    Node(u64),
}

impl Router {
    pub fn new(
        node_id: u64,
        requests: mpsc::Sender<Request>,
        cluster: ClusterConfig,
        leaders: Leaders,
        shard_map: SharedMap,
    ) -> Router {
        let mut shards: Vec<u64> = cluster.shards.iter().map(|s| s.id).collect();
        shards.sort_unstable();
        Router {
            node_id,
            requests,
            cluster,
            leaders,
            shard_map,
            shards,
            remote_leaders: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The shard account `id` lives on.
    pub fn shard_of(&self, id: u128) -> u64 {
        self.shards[shard_of(id, self.shards.len() as u32) as usize]
    }

    fn protocol(&self, metadata: &MetadataMap) -> Result<Protocol, Status> {
        let named = match metadata.get(PROTOCOL_KEY) {
            Some(value) => {
                let name = value.to_str().unwrap_or("");
                Protocol::from_name(name).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown protocol {name:?}: expected 2pc, 3pc or paxos-commit"
                    ))
                })?
            }
            None => self.cluster.protocol().map_err(Status::failed_precondition)?,
        };
        match named {
            Protocol::TwoPhase => Ok(named),
            Protocol::ThreePhase if self.cluster.allow_3pc.unwrap_or(false) => Ok(named),
            Protocol::ThreePhase => Err(Status::failed_precondition(
                "3pc is unsafe under network partitions; a cluster runs it only with \
                 allow_3pc = true in its config",
            )),
            // Participants address the coordinator's acceptors by count: every shard
            // must have as many.
            Protocol::PaxosCommit if self.uniform_replicas() => Ok(named),
            Protocol::PaxosCommit => Err(Status::failed_precondition(
                "paxos-commit needs every shard to have the same number of replicas (its \
                 acceptors are a coordinator shard's replicas)",
            )),
        }
    }

    fn uniform_replicas(&self) -> bool {
        let first = self.cluster.shards[0].replicas.len();
        self.cluster.shards.iter().all(|s| s.replicas.len() == first)
    }

    /// Where requests for `shard` go: here when this node leads it (or holds it and
    /// `read`), else to its leader as far as known.
    fn target(&self, shard: u64, read: bool) -> Target {
        let hosted =
            self.leaders.read().unwrap_or_else(PoisonError::into_inner).get(&shard).copied();
        match hosted {
            Some(Some(leader)) if leader == self.node_id => Target::Here,
            Some(_) if read => Target::Here,
            Some(Some(leader)) => Target::Node(leader),
            // Held here with no leader known: the engine says so.
            Some(None) => Target::Here,
            None => {
                let learnt = self
                    .remote_leaders
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&shard)
                    .copied();
                // The replicated map knows where the shard's replicas are now; the
                // config, where they were at the start.
                let mapped = self.known_map().and_then(|map| map.replicas(shard).map(|r| r[0]));
                let first =
                    self.cluster.shards.iter().find(|s| s.id == shard).map(|s| s.replicas[0]);
                Target::Node(learnt.or(mapped).or(first).unwrap_or(self.node_id))
            }
        }
    }

    fn peer(&self, node: u64) -> Result<LedgerClient<Channel>, Status> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = peers.get(&node) {
            return Ok(client.clone());
        }
        let entry = self.cluster.node(node).ok_or_else(|| {
            Status::unavailable(format!("node {node} is not in the cluster config"))
        })?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", entry.address))
            .map_err(|e| Status::internal(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(1))
            .tcp_nodelay(true)
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(16 << 20);
        let client = LedgerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        peers.insert(node, client.clone());
        Ok(client)
    }

    /// Learns the leader a refusal names (`host:port`), for the next forward.
    fn learn(&self, shard: u64, status: &Status) -> Option<u64> {
        let hint = status.metadata().get(crate::server::LEADER_METADATA_KEY)?.to_str().ok()?;
        let node = self.cluster.nodes.iter().find(|n| n.address.to_string() == hint)?.id;
        self.remote_leaders.lock().unwrap_or_else(PoisonError::into_inner).insert(shard, node);
        Some(node)
    }

    /// Sends `make()` to `shard`'s leader, following leader hints a few hops.
    async fn forward<T, F, Fut>(&self, shard: u64, first: u64, call: F) -> Result<T, Status>
    where
        F: FnMut(LedgerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        Ok(self.forward_via(shard, first, call).await?.0)
    }

    /// [`Router::forward`], with the node that answered.
    async fn forward_via<T, F, Fut>(
        &self,
        shard: u64,
        first: u64,
        mut call: F,
    ) -> Result<(T, u64), Status>
    where
        F: FnMut(LedgerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        let mut node = first;
        let mut last = Status::unavailable(format!("no node reachable for shard {shard}"));
        for _ in 0..FORWARD_HOPS_MAX {
            if node == self.node_id {
                break;
            }
            match call(self.peer(node)?).await {
                Ok(response) => return Ok((response.into_inner(), node)),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    let hint = self.learn(shard, &status);
                    last = status;
                    match hint {
                        Some(next) if next != node => node = next,
                        _ => break,
                    }
                }
                // The hop itself failed (the node went away mid-request, or took too
                // long): what it did is unknown, and the client's retry is safe.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                    ) =>
                {
                    let message = format!("forwarding to node {node} failed: {}", status.message());
                    return Err(Status::unavailable(message));
                }
                Err(status) => return Err(status),
            }
        }
        Err(last)
    }

    async fn engine(&self, shard: u64, command: Command) -> Result<Reply, Status> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { command, shard: Some(shard), reply })
            .await
            .map_err(|_| Status::unavailable("the node is shutting down"))?;
        match answer.await.map_err(|_| Status::unavailable("the node stopped"))? {
            Ok(reply) => Ok(reply),
            Err(NodeError::NoReplica { shard }) => {
                Err(Status::unavailable(format!("this node holds no replica of shard {shard}")))
            }
            Err(error) => Err(status_of(error)),
        }
    }

    fn request<T>(message: T, shard: u64, protocol: Protocol) -> GrpcRequest<T> {
        let mut request = GrpcRequest::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(SHARD_KEY, shard.to_string().parse().expect("digits"));
        metadata.insert(PROTOCOL_KEY, protocol.name().parse().expect("ascii"));
        request
    }

    /// An account filter's request: the shard it names (if forwarded), the account's
    /// shard, the message and the filter.
    fn account_filter(
        &self,
        request: GrpcRequest<pb::AccountFilter>,
    ) -> Result<(Option<u64>, u64, pb::AccountFilter, settle_ledger::AccountFilter), Status> {
        let only = named_shard(request.metadata())?;
        let message = request.into_inner();
        let filter: settle_ledger::AccountFilter = (&message).try_into().map_err(invalid)?;
        let shard = only.unwrap_or_else(|| self.shard_of(filter.account_id));
        Ok((only, shard, message, filter))
    }

    /// A query's request: the shard it names (if forwarded), the shards to ask, the
    /// message and the filter.
    fn query_filter(
        &self,
        request: GrpcRequest<pb::QueryFilter>,
    ) -> Result<(Option<u64>, Vec<u64>, pb::QueryFilter, settle_ledger::QueryFilter), Status> {
        let only = named_shard(request.metadata())?;
        let message = request.into_inner();
        let filter: settle_ledger::QueryFilter = (&message).try_into().map_err(invalid)?;
        let shards = only.map_or_else(|| self.shards.clone(), |s| vec![s]);
        Ok((only, shards, message, filter))
    }

    // ---- transfers ----

    /// Fills in the accounts of a post/void that left them zero, from its pending
    /// transfer (looked up on every shard).
    async fn place_pending(&self, transfers: &mut [Transfer]) -> Result<(), Status> {
        let missing: Vec<u128> = transfers
            .iter()
            .filter(|t| {
                t.flags.intersects(
                    TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
                ) && (t.debit_account_id == 0 || t.credit_account_id == 0)
            })
            .map(|t| t.pending_id)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + PENDING_SETTLE_WAIT;
        let mut backoff = std::time::Duration::from_millis(2);
        let found = loop {
            // Each pending transfer found, and the shards that store it.
            let mut found: HashMap<u128, (Transfer, Vec<u64>)> = HashMap::new();
            for (shard, transfers) in self.lookup_transfers_by_shard(&missing).await? {
                for transfer in transfers {
                    found.entry(transfer.id).or_insert((transfer, Vec::new())).1.push(shard);
                }
            }
            let settled = missing.iter().all(|id| {
                found.get(id).is_some_and(|(p, holders)| {
                    [p.debit_account_id, p.credit_account_id]
                        .iter()
                        .all(|&account| holders.contains(&self.shard_of(account)))
                })
            });
            if settled || tokio::time::Instant::now() + backoff > deadline {
                break found;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_millis(50));
        };
        for t in transfers.iter_mut() {
            if let Some((p, _)) = found.get(&t.pending_id) {
                if t.flags.intersects(
                    TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
                ) {
                    if t.debit_account_id == 0 {
                        t.debit_account_id = p.debit_account_id;
                    }
                    if t.credit_account_id == 0 {
                        t.credit_account_id = p.credit_account_id;
                    }
                }
            }
        }
        Ok(())
    }

    /// The results of `transfers` (a whole request, or the part of one whose home is
    /// `only`), and the node that answered it if it was forwarded whole (`leader_hint`).
    async fn create_transfers(
        &self,
        transfers: Vec<Transfer>,
        protocol: Protocol,
        only: Option<u64>,
    ) -> Result<(Vec<CreateTransferResult>, Option<u64>), Status> {
        let mut placed = transfers.clone();
        self.place_pending(&mut placed).await?;
        let units = settle_commit::units_of(&transfers);
        let home =
            |unit: &std::ops::Range<usize>| self.shard_of(placed[unit.start].debit_account_id);
        let mut by_home: BTreeMap<u64, Vec<std::ops::Range<usize>>> = BTreeMap::new();
        for unit in units {
            by_home.entry(only.unwrap_or_else(|| home(&unit))).or_default().push(unit);
        }
        let mut results = vec![CreateTransferResult::Ok; transfers.len()];
        let (placed, transfers) = (&placed, &transfers);
        let parts = by_home.into_iter().map(|(shard, units)| async move {
            match (only, self.target(shard, false)) {
                (Some(_), _) | (None, Target::Here) => {
                    Ok((self.run_home(shard, &units, placed, protocol).await?, None))
                }
                (None, Target::Node(node)) => {
                    let events: Vec<usize> = units.iter().flat_map(|unit| unit.clone()).collect();
                    let original: Vec<Transfer> = events.iter().map(|&i| transfers[i]).collect();
                    let request = convert::transfers_request_packed(&original);
                    let (reply, answered) = self
                        .forward_via(shard, node, |mut client| {
                            let request = Self::request(request.clone(), shard, protocol);
                            async move { client.create_transfers(request).await }
                        })
                        .await?;
                    let results =
                        convert::transfer_results_from_pb(&reply.results).map_err(invalid)?;
                    Ok((events.iter().copied().zip(results).collect(), Some(answered)))
                }
            }
        });
        let parts: Vec<WritePart<CreateTransferResult>> =
            join_all(parts).await.into_iter().collect::<Result<_, Status>>()?;
        let answered = leader_hint(&parts);
        for (part, _) in parts {
            for (index, result) in part {
                results[index] = result;
            }
        }
        Ok((results, answered))
    }

    /// Runs at this node the units whose home is `shard`: the local ones as one write,
    /// the cross-shard ones as transactions of many units each (those with the same
    /// participants, so that no unit waits on a shard it does not touch). Returns
    /// (request index, result) pairs.
    async fn run_home(
        &self,
        shard: u64,
        units: &[std::ops::Range<usize>],
        placed: &[Transfer],
        protocol: Protocol,
    ) -> Result<Vec<(usize, CreateTransferResult)>, Status> {
        let mut local: Vec<usize> = Vec::new();
        // Cross-shard units by participant set (the coordinator first).
        let mut by_participants: BTreeMap<Vec<u32>, Vec<PlacedUnit>> = BTreeMap::new();
        for unit in units {
            let open_chain = placed[unit.end - 1].flags.contains(TransferFlags::LINKED);
            let here = |id: u128| self.shard_of(id) == shard;
            let local_unit = placed[unit.clone()]
                .iter()
                .all(|t| here(t.debit_account_id) && here(t.credit_account_id));
            if open_chain || local_unit {
                local.extend(unit.clone());
                continue;
            }
            let placement: Vec<[u32; 2]> = placed[unit.clone()]
                .iter()
                .map(|t| {
                    [
                        self.shard_of(t.debit_account_id) as u32,
                        self.shard_of(t.credit_account_id) as u32,
                    ]
                })
                .collect();
            // A unit no transaction can hold (a chain too long, an id twice) goes to the
            // home's ledger, which reports why.
            match Txn::unit_participants(&placed[unit.clone()], &placement) {
                Some(participants) => {
                    by_participants.entry(participants).or_default().push((unit.clone(), placement))
                }
                None => local.extend(unit.clone()),
            }
        }
        let txns = batch_units(protocol, placed, by_participants);
        let local_part = async {
            if local.is_empty() {
                return Ok(Vec::new());
            }
            let events: Vec<Transfer> = local.iter().map(|&i| placed[i]).collect();
            match self.engine(shard, Command::Write(Write::CreateTransfers(events))).await? {
                Reply::TransferResults(results) => Ok(local.iter().copied().zip(results).collect()),
                other => Err(unexpected(other)),
            }
        };
        let txn_part = async {
            if txns.is_empty() {
                return Ok(Vec::new());
            }
            let (units, txns): (Vec<Vec<std::ops::Range<usize>>>, Vec<Txn>) =
                txns.into_iter().unzip();
            tracing::trace!(target: TIMELINE, shard, txns = txns.len(), "transactions sent");
            match self.engine(shard, Command::Txns(txns)).await? {
                // The transactions' results one after the other, as their units.
                Reply::TransferResults(results) => {
                    Ok(units.into_iter().flatten().flatten().zip(results).collect::<Vec<_>>())
                }
                other => Err(unexpected(other)),
            }
        };
        let (local_results, txn_results) = tokio::join!(local_part, txn_part);
        let mut all = local_results?;
        all.extend(txn_results?);
        Ok(all)
    }

    // ---- accounts ----

    /// The results of `accounts`, and the node that answered them if they were
    /// forwarded whole (`leader_hint`).
    async fn create_accounts(
        &self,
        accounts: Vec<Account>,
        only: Option<u64>,
    ) -> Result<(Vec<CreateAccountResult>, Option<u64>), Status> {
        let mut by_shard: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        let mut chain_shard: Option<u64> = None;
        for (i, account) in accounts.iter().enumerate() {
            let shard = only.unwrap_or_else(|| self.shard_of(account.id));
            if let Some(first) = chain_shard {
                if first != shard {
                    return Err(Status::failed_precondition(format!(
                        "a linked chain of accounts spans shards {first} and {shard}: chains of \
                         accounts are atomic only within one shard"
                    )));
                }
            }
            chain_shard = account.flags.contains(AccountFlags::LINKED).then_some(shard);
            by_shard.entry(shard).or_default().push(i);
        }
        let mut results = vec![CreateAccountResult::Ok; accounts.len()];
        let parts = by_shard.into_iter().map(|(shard, indexes)| {
            let part: Vec<Account> = indexes.iter().map(|&i| accounts[i]).collect();
            async move {
                let (results, answered) = match (only, self.target(shard, false)) {
                    (Some(_), _) | (None, Target::Here) => {
                        match self
                            .engine(shard, Command::Write(Write::CreateAccounts(part)))
                            .await?
                        {
                            Reply::AccountResults(results) => (results, None),
                            other => return Err(unexpected(other)),
                        }
                    }
                    (None, Target::Node(node)) => {
                        let request = convert::accounts_request_packed(&part);
                        let (reply, answered) = self
                            .forward_via(shard, node, |mut client| {
                                let request =
                                    Self::request(request.clone(), shard, Protocol::TwoPhase);
                                async move { client.create_accounts(request).await }
                            })
                            .await?;
                        let results =
                            convert::account_results_from_pb(&reply.results).map_err(invalid)?;
                        (results, Some(answered))
                    }
                };
                Ok((indexes.into_iter().zip(results).collect::<Vec<_>>(), answered))
            }
        });
        let parts: Vec<WritePart<CreateAccountResult>> =
            join_all(parts).await.into_iter().collect::<Result<_, Status>>()?;
        let answered = leader_hint(&parts);
        for (part, _) in parts {
            for (index, result) in part {
                results[index] = result;
            }
        }
        Ok((results, answered))
    }

    // ---- reads ----

    /// `read` at `shard` (here if held, else forwarded as `forward`).
    async fn read_at<T, F, Fut>(
        &self,
        shard: u64,
        read: Read,
        only: Option<u64>,
        forward: F,
    ) -> Result<Result<Reply, T>, Status>
    where
        F: FnMut(LedgerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        match (only, self.target(shard, true)) {
            (Some(_), _) | (None, Target::Here) => {
                Ok(Ok(self.engine(shard, Command::Read(read)).await?))
            }
            (None, Target::Node(node)) => Ok(Err(self.forward(shard, node, forward).await?)),
        }
    }

    /// One shard's part of a snapshot read at `at`: its accounts among `ids`, or the
    /// shard's clock when that is already past `at`.
    async fn snapshot_part(
        &self,
        shard: u64,
        at: u64,
        ids: Vec<u128>,
        only: Option<u64>,
    ) -> Result<Result<Vec<Account>, u64>, Status> {
        let answer = match (only, self.target(shard, false)) {
            (Some(_), _) | (None, Target::Here) => {
                self.engine(shard, Command::ReadAt { at, ids }).await
            }
            (None, Target::Node(node)) => {
                let request = pb::SnapshotRequest { ids: convert::ids_to_pb(&ids), timestamp: at };
                let reply = self
                    .forward(shard, node, |mut client| {
                        let request = Self::request(request.clone(), shard, Protocol::TwoPhase);
                        async move { client.read_snapshot(request).await }
                    })
                    .await;
                reply.and_then(|reply| {
                    let accounts =
                        reply.accounts.iter().map(|a| Account::try_from(a).map_err(invalid));
                    Ok(Reply::Snapshot {
                        timestamp: reply.timestamp,
                        accounts: accounts.collect::<Result<_, _>>()?,
                    })
                })
            }
        };
        match answer {
            Ok(Reply::Snapshot { timestamp, accounts }) if timestamp == at => Ok(Ok(accounts)),
            Ok(other) => Err(unexpected(other)),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                let clock = status.metadata().get(crate::server::CLOCK_METADATA_KEY);
                match clock.and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
                    Some(clock) => Ok(Err(clock)),
                    None => Err(status),
                }
            }
            Err(status) => Err(status),
        }
    }

    /// A snapshot read of `ids` across their shards at `requested` (0: a timestamp this
    /// node picks, tried again later when a shard's clock had passed it).
    async fn read_snapshot(
        &self,
        ids: Vec<u128>,
        requested: u64,
        only: Option<u64>,
    ) -> Result<(u64, Vec<Account>), Status> {
        let now = super::engine::now_ns();
        // (A forwarded part was checked where the read began, against that clock.)
        if only.is_none() && requested > now.saturating_add(SNAPSHOT_AHEAD_MAX_NS) {
            return Err(Status::invalid_argument(format!(
                "snapshot timestamp {requested} is more than {} s ahead of this node's clock ({now})",
                SNAPSHOT_AHEAD_MAX_NS / 1_000_000_000
            )));
        }
        let mut by_shard: BTreeMap<u64, Vec<u128>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for &id in ids.iter().filter(|&&id| seen.insert(id)) {
            by_shard.entry(only.unwrap_or_else(|| self.shard_of(id))).or_default().push(id);
        }
        // Every shard takes part, also one no id lives on: the timestamp is the
        // cluster's, and reading nothing at a shard costs one small write.
        if only.is_none() {
            for &shard in &self.shards {
                by_shard.entry(shard).or_default();
            }
        }
        let mut floor = now;
        for attempt in 0..SNAPSHOT_ATTEMPTS_MAX {
            let at = match requested {
                0 => floor + (SNAPSHOT_LEAD_NS << attempt),
                at => at,
            };
            let parts = by_shard
                .iter()
                .map(|(&shard, ids)| self.snapshot_part(shard, at, ids.clone(), only));
            let mut found: HashMap<u128, Account> = HashMap::new();
            let mut too_old: Option<u64> = None;
            for part in join_all(parts).await {
                match part? {
                    Ok(accounts) => found.extend(accounts.into_iter().map(|a| (a.id, a))),
                    Err(clock) => too_old = Some(too_old.unwrap_or(0).max(clock)),
                }
            }
            let Some(clock) = too_old else {
                return Ok((at, ids.iter().filter_map(|id| found.get(id).copied()).collect()));
            };
            if requested != 0 {
                let message = format!(
                    "snapshot timestamp {at} is behind a shard's clock ({clock}): a snapshot \
                     cannot go back in time; read at {clock} or later, or leave the timestamp 0"
                );
                let mut status = Status::failed_precondition(message);
                status.metadata_mut().insert(
                    crate::server::CLOCK_METADATA_KEY,
                    clock.to_string().parse().expect("digits"),
                );
                return Err(status);
            }
            floor = floor.max(clock);
        }
        Err(Status::unavailable(format!(
            "shards' clocks kept passing the snapshot's timestamp over {SNAPSHOT_ATTEMPTS_MAX} \
             attempts; retry"
        )))
    }

    async fn lookup_transfers_everywhere(&self, ids: &[u128]) -> Result<Vec<Transfer>, Status> {
        let mut found: HashMap<u128, Transfer> = HashMap::new();
        for (_, transfers) in self.lookup_transfers_by_shard(ids).await? {
            for transfer in transfers {
                found.entry(transfer.id).or_insert(transfer);
            }
        }
        Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
    }

    /// What each shard stores of the transfers `ids`.
    async fn lookup_transfers_by_shard(
        &self,
        ids: &[u128],
    ) -> Result<Vec<(u64, Vec<Transfer>)>, Status> {
        let parts = self.shards.iter().map(|&shard| {
            let ids = ids.to_vec();
            async move {
                let request = pb::LookupRequest { ids: convert::ids_to_pb(&ids) };
                let answer = self
                    .read_at(shard, Read::LookupTransfers(ids), None, |mut client| {
                        let request = Self::request(request.clone(), shard, Protocol::TwoPhase);
                        async move { client.lookup_transfers(request).await }
                    })
                    .await?;
                Ok((shard, transfers_of(answer)?))
            }
        });
        join_all(parts).await.into_iter().collect()
    }
}

fn transfers_of(answer: Result<Reply, pb::TransfersReply>) -> Result<Vec<Transfer>, Status> {
    match answer {
        Ok(Reply::Transfers(transfers)) => Ok(transfers),
        Ok(other) => Err(unexpected(other)),
        Err(reply) => {
            reply.transfers.iter().map(|t| Transfer::try_from(t).map_err(invalid)).collect()
        }
    }
}

fn accounts_of(answer: Result<Reply, pb::AccountsReply>) -> Result<Vec<Account>, Status> {
    match answer {
        Ok(Reply::Accounts(accounts)) => Ok(accounts),
        Ok(other) => Err(unexpected(other)),
        Err(reply) => {
            reply.accounts.iter().map(|a| Account::try_from(a).map_err(invalid)).collect()
        }
    }
}

/// The shard a forwarded request names, if any.
fn named_shard(metadata: &MetadataMap) -> Result<Option<u64>, Status> {
    match metadata.get(SHARD_KEY) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| Status::invalid_argument("settle-shard must be a shard id")),
    }
}

/// One shard's part of a write: (request index, result) pairs, and the node that
/// answered it when it was forwarded.
type WritePart<R> = (Vec<(usize, R)>, Option<u64>);

/// The leader to name in a write's reply: the node that answered it, when the whole
/// write went to one node by forward (one part, forwarded); `None` otherwise.
fn leader_hint<R>(parts: &[WritePart<R>]) -> Option<u64> {
    match parts {
        [(_, answered)] => *answered,
        _ => None,
    }
}

impl Router {
    /// `reply`, naming the leader a write was forwarded to (`leader_hint`) in the
    /// `settle-leader` metadata, as a refusal does: the client sends its next requests
    /// there, sparing every later one the extra hop (a second decode and encode of up
    /// to a megabyte, and a second network round).
    fn hint_leader<T>(&self, reply: T, forwarded: Option<u64>) -> Response<T> {
        let mut response = Response::new(reply);
        let address = forwarded.and_then(|node| self.cluster.node(node)).map(|n| n.address);
        if let Some(value) = address.and_then(|a| a.to_string().parse().ok()) {
            response.metadata_mut().insert(crate::server::LEADER_METADATA_KEY, value);
        }
        if let Some(version) = self.known_map().map(|map| map.version) {
            response.metadata_mut().insert(MAP_VERSION_KEY, version.into());
        }
        response
    }

    /// The newest shard map this node knows, if any.
    fn known_map(&self) -> Option<ShardMap> {
        self.shard_map.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Keeps `map` if it is newer than the one this node knows.
    fn learn_map(&self, map: ShardMap) {
        let mut known = self.shard_map.write().unwrap_or_else(PoisonError::into_inner);
        if known.as_ref().is_none_or(|held| map.version > held.version) {
            *known = Some(map);
        }
    }

    /// The shard map: this node's replica of the metadata shard's, or (a node without
    /// one) the one a node holding that shard answers, which it keeps.
    async fn shard_map(&self) -> Result<ShardMap, Status> {
        let metadata_shard = self.cluster.metadata_shard();
        let hosted = self
            .leaders
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&metadata_shard);
        if hosted {
            return self.known_map().ok_or_else(|| {
                Status::unavailable("the cluster's shard map is not written yet; retry")
            });
        }
        let Target::Node(node) = self.target(metadata_shard, true) else {
            return Err(Status::unavailable("no node holding the shard map is known"));
        };
        let (reply, _) = self
            .forward_via(metadata_shard, node, |mut client| async move {
                client.get_shard_map(pb::ShardMapRequest {}).await
            })
            .await?;
        let map = map_from_pb(&reply).ok_or_else(|| {
            Status::internal(format!("node {node} answered an invalid shard map"))
        })?;
        self.learn_map(map.clone());
        Ok(map)
    }
}

/// The replicated map's reply, or `None` when it is not a valid map.
pub fn map_from_pb(reply: &pb::ShardMapReply) -> Option<ShardMap> {
    let shards = reply
        .shards
        .iter()
        .map(|s| settle_commit::ShardReplicas { shard: s.shard, replicas: s.replicas.clone() })
        .collect();
    ShardMap::new(reply.version, shards)
}

#[tonic::async_trait]
impl pb::ledger_server::Ledger for Router {
    async fn get_shard_map(
        &self,
        _request: GrpcRequest<pb::ShardMapRequest>,
    ) -> Result<Response<pb::ShardMapReply>, Status> {
        let map = self.shard_map().await?;
        let shards = map
            .shards
            .iter()
            .map(|s| pb::ShardReplicas { shard: s.shard, replicas: s.replicas.clone() })
            .collect();
        let nodes = self
            .cluster
            .nodes
            .iter()
            .map(|n| pb::NodeAddress { id: n.id, address: n.address.to_string() })
            .collect();
        Ok(Response::new(pb::ShardMapReply { version: map.version, shards, nodes }))
    }

    async fn create_accounts(
        &self,
        request: GrpcRequest<pb::CreateAccountsRequest>,
    ) -> Result<Response<pb::CreateAccountsReply>, Status> {
        let only = named_shard(request.metadata())?;
        let accounts = convert::request_accounts(request.get_ref()).map_err(invalid)?;
        check_count("accounts", accounts.len())?;
        let (results, forwarded) = if accounts.is_empty() {
            (Vec::new(), None)
        } else {
            Router::create_accounts(self, accounts, only).await?
        };
        let reply = pb::CreateAccountsReply { results: convert::account_results_to_pb(&results) };
        Ok(self.hint_leader(reply, forwarded))
    }

    async fn create_transfers(
        &self,
        request: GrpcRequest<pb::CreateTransfersRequest>,
    ) -> Result<Response<pb::CreateTransfersReply>, Status> {
        tracing::trace!(target: TIMELINE, "transfers request in");
        let only = named_shard(request.metadata())?;
        let protocol = self.protocol(request.metadata())?;
        let transfers = convert::request_transfers(request.get_ref()).map_err(invalid)?;
        check_count("transfers", transfers.len())?;
        let (results, forwarded) = if transfers.is_empty() {
            (Vec::new(), None)
        } else {
            Router::create_transfers(self, transfers, protocol, only).await?
        };
        let reply = pb::CreateTransfersReply { results: convert::transfer_results_to_pb(&results) };
        tracing::trace!(target: TIMELINE, transfers = results.len(), "transfers request out");
        Ok(self.hint_leader(reply, forwarded))
    }

    async fn lookup_accounts(
        &self,
        request: GrpcRequest<pb::LookupRequest>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        let only = named_shard(request.metadata())?;
        let ids = convert::ids_from_pb(&request.get_ref().ids);
        check_count("ids", ids.len())?;
        let mut by_shard: BTreeMap<u64, Vec<u128>> = BTreeMap::new();
        for &id in &ids {
            by_shard.entry(only.unwrap_or_else(|| self.shard_of(id))).or_default().push(id);
        }
        let parts = by_shard.into_iter().map(|(shard, ids)| async move {
            let request = pb::LookupRequest { ids: convert::ids_to_pb(&ids) };
            let answer = self
                .read_at(shard, Read::LookupAccounts(ids), only, |mut client| {
                    let request = Router::request(request.clone(), shard, Protocol::TwoPhase);
                    async move { client.lookup_accounts(request).await }
                })
                .await?;
            accounts_of(answer)
        });
        let mut found: HashMap<u128, Account> = HashMap::new();
        for part in join_all(parts).await {
            found.extend(part?.into_iter().map(|a| (a.id, a)));
        }
        let accounts: Vec<pb::Account> =
            ids.iter().filter_map(|id| found.get(id)).map(pb::Account::from).collect();
        Ok(Response::new(pb::AccountsReply { accounts }))
    }

    async fn lookup_transfers(
        &self,
        request: GrpcRequest<pb::LookupRequest>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        let only = named_shard(request.metadata())?;
        let ids = convert::ids_from_pb(&request.get_ref().ids);
        check_count("ids", ids.len())?;
        let transfers = match only {
            Some(shard) => transfers_of(Ok(self
                .engine(shard, Command::Read(Read::LookupTransfers(ids)))
                .await?))?,
            None => self.lookup_transfers_everywhere(&ids).await?,
        };
        Ok(Response::new(pb::TransfersReply {
            transfers: transfers.iter().map(pb::Transfer::from).collect(),
        }))
    }

    async fn read_snapshot(
        &self,
        request: GrpcRequest<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotReply>, Status> {
        let only = named_shard(request.metadata())?;
        let message = request.into_inner();
        let ids = convert::ids_from_pb(&message.ids);
        check_count("ids", ids.len())?;
        if only.is_some() && message.timestamp == 0 {
            return Err(Status::invalid_argument(
                "a shard's part of a snapshot names its timestamp",
            ));
        }
        let (timestamp, accounts) =
            Router::read_snapshot(self, ids, message.timestamp, only).await?;
        Ok(Response::new(pb::SnapshotReply {
            timestamp,
            accounts: accounts.iter().map(pb::Account::from).collect(),
        }))
    }

    async fn get_account_transfers(
        &self,
        request: GrpcRequest<pb::AccountFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        let (only, shard, message, filter) = self.account_filter(request)?;
        let answer = self
            .read_at(shard, Read::GetAccountTransfers(filter), only, |mut client| {
                let request = Router::request(message, shard, Protocol::TwoPhase);
                async move { client.get_account_transfers(request).await }
            })
            .await?;
        let transfers = transfers_of(answer)?;
        Ok(Response::new(pb::TransfersReply {
            transfers: transfers.iter().map(pb::Transfer::from).collect(),
        }))
    }

    async fn get_account_balances(
        &self,
        request: GrpcRequest<pb::AccountFilter>,
    ) -> Result<Response<pb::AccountBalancesReply>, Status> {
        let (only, shard, message, filter) = self.account_filter(request)?;
        let answer = self
            .read_at(shard, Read::GetAccountBalances(filter), only, |mut client| {
                let request = Router::request(message, shard, Protocol::TwoPhase);
                async move { client.get_account_balances(request).await }
            })
            .await?;
        match answer {
            Ok(Reply::Balances(balances)) => Ok(Response::new(pb::AccountBalancesReply {
                balances: balances.iter().map(pb::AccountBalance::from).collect(),
            })),
            Ok(other) => Err(unexpected(other)),
            Err(reply) => Ok(Response::new(reply)),
        }
    }

    async fn query_accounts(
        &self,
        request: GrpcRequest<pb::QueryFilter>,
    ) -> Result<Response<pb::AccountsReply>, Status> {
        let (only, shards, message, filter) = self.query_filter(request)?;
        let parts = shards.into_iter().map(|shard| async move {
            let answer = self
                .read_at(shard, Read::QueryAccounts(filter), only, |mut client| {
                    let request = Router::request(message, shard, Protocol::TwoPhase);
                    async move { client.query_accounts(request).await }
                })
                .await?;
            accounts_of(answer)
        });
        let mut all = Vec::new();
        for part in join_all(parts).await {
            all.extend(part?);
        }
        let reversed = filter.flags.contains(settle_ledger::QueryFilterFlags::REVERSED);
        all.sort_by_key(|a| a.timestamp);
        if reversed {
            all.reverse();
        }
        all.truncate(filter.limit as usize);
        Ok(Response::new(pb::AccountsReply {
            accounts: all.iter().map(pb::Account::from).collect(),
        }))
    }

    async fn query_transfers(
        &self,
        request: GrpcRequest<pb::QueryFilter>,
    ) -> Result<Response<pb::TransfersReply>, Status> {
        let (only, shards, message, filter) = self.query_filter(request)?;
        let parts = shards.into_iter().map(|shard| async move {
            let answer = self
                .read_at(shard, Read::QueryTransfers(filter), only, |mut client| {
                    let request = Router::request(message, shard, Protocol::TwoPhase);
                    async move { client.query_transfers(request).await }
                })
                .await?;
            transfers_of(answer)
        });
        // A cross-shard transfer is stored at both of its shards: keep one copy.
        let mut all: BTreeMap<u128, Transfer> = BTreeMap::new();
        for part in join_all(parts).await {
            for transfer in part? {
                all.entry(transfer.id).or_insert(transfer);
            }
        }
        let mut all: Vec<Transfer> = all.into_values().collect();
        all.sort_by_key(|t| (t.timestamp, t.id));
        if filter.flags.contains(settle_ledger::QueryFilterFlags::REVERSED) {
            all.reverse();
        }
        all.truncate(filter.limit as usize);
        Ok(Response::new(pb::TransfersReply {
            transfers: all.iter().map(pb::Transfer::from).collect(),
        }))
    }
}
