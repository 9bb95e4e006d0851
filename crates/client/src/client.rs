//! [`Client`]: connecting, and one method per RPC of `settle.v1.Ledger`.
//!
//! A client knows the nodes of a cluster (the addresses given, plus those learnt from
//! leader hints; see `nodes.rs`) and sends each request to the one it is using, moving
//! to the leader when a node names it (see `retry.rs`).

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use settle_commit::ShardMap;

use settle_ledger::{
    Account, AccountBalance, AccountFilter, AccountFlags, CreateAccountResult,
    CreateTransferResult, QueryFilter, Transfer, TransferFlags, BATCH_EVENTS_MAX,
};
use settle_proto::convert::{self, ConvertError};
use settle_proto::pb;

use crate::batch::{plan_batches, run_batches};
use crate::error::error_chain;
use crate::nodes::{endpoint, leader_hint, metadata_hint, Node, Nodes};
use crate::retry::{from_transport, with_retries, with_retries_via};
use crate::routes::{Routes, MAP_VERSION_KEY};
use crate::{ClientError, ClientOptions};

/// An async client of a settle cluster (or of a single node).
///
/// The client keeps one gRPC channel per node it knows (a tonic `Channel`: one HTTP/2
/// connection, made when first needed, which multiplexes concurrent requests and
/// reconnects by itself after a failure) and sends every request to one node, the
/// leader as far as it knows. Cheap to clone: every clone shares the channels and the
/// choice of node.
///
/// Only the leader of a cluster executes requests. A node that is not the leader answers
/// gRPC `UNAVAILABLE`, naming the leader's address in its `settle-leader` metadata when
/// it knows it: the client then moves to that address (learning it if it was not given,
/// up to 16 known addresses in all) and retries after just `initial_backoff`. After any
/// other transient failure (a crashed node's connection errors, an `UNAVAILABLE` naming
/// no leader, no reply in time) it moves to the next known address and retries after
/// the growing backoff. Every attempt, redirects included, counts toward
/// [`ClientOptions::max_attempts`].
///
/// Every method retries transient failures as described in [`ClientOptions`]. Creating
/// accounts and transfers is safe to retry because ids are idempotent: an event that an
/// earlier, unacknowledged attempt had applied comes back as `exists` instead of being
/// applied twice, so **after a retry, callers should treat `exists` as `ok`**. Likewise
/// a linked chain that had been applied comes back as `exists` for its first event and
/// `linked_event_failed` for the rest, and a transfer whose earlier attempt failed
/// transiently (e.g. `exceeds_credits`) comes back as `id_already_failed`.
#[derive(Clone, Debug)]
pub struct Client {
    nodes: Arc<Nodes>,
    addresses: Arc<[String]>,
    options: ClientOptions,
    /// The cluster's shard map and the leaders learnt by shard, if the cluster has one
    /// (see `routes.rs`); shared by clones.
    routes: Arc<RwLock<Option<Routes>>>,
    /// When the map was last asked for (bounds the asking while there is none).
    map_asked: Arc<Mutex<Option<Instant>>>,
}

/// How often a client without a shard map asks for one (see `fetch_map_if_missing`).
const MAP_RETRY_INTERVAL: Duration = Duration::from_secs(1);

impl Client {
    /// Connects with [`ClientOptions::default`]; see [`Client::connect_with`].
    pub async fn connect(addresses: &[String]) -> Result<Client, ClientError> {
        Client::connect_with(addresses, ClientOptions::default()).await
    }

    /// Connects to the first reachable address, trying them in order, each within
    /// `options.request_timeout`, and starts sending requests there. An address is
    /// `host:port` or a URI (`http://host:port`); give every node of a cluster (in any
    /// order), so the client can find the leader and move to another node when one
    /// fails. The other addresses are connected to when first used. Invalid addresses
    /// are skipped (and reported if no address is reachable).
    ///
    /// Fails with [`ClientError::Connect`] if no address is reachable.
    pub async fn connect_with(
        addresses: &[String],
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let mut reasons = Vec::new();
        let mut nodes = Vec::new();
        let mut current = None;
        for address in addresses {
            let endpoint = match endpoint(address, &options) {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    reasons.push(format!("{address}: invalid address: {}", error_chain(&e)));
                    continue;
                }
            };
            // Until one address is reachable, each is connected to now; the channel made
            // is kept. The rest (dead ones included: they may come back) connect lazily.
            let channel = if current.is_some() {
                endpoint.connect_lazy()
            } else {
                match endpoint.connect().await {
                    Ok(channel) => {
                        tracing::debug!(address = %address, "connected");
                        current = Some(nodes.len());
                        channel
                    }
                    Err(e) => {
                        reasons.push(format!("{address}: {}", error_chain(&e)));
                        endpoint.connect_lazy()
                    }
                }
            };
            nodes.push(Node::new(address, channel));
        }
        let Some(current) = current else {
            if reasons.is_empty() {
                reasons.push("no address given".to_string());
            }
            return Err(ClientError::Connect {
                addresses: addresses.to_vec(),
                reasons: reasons.join("; "),
            });
        };
        if !reasons.is_empty() {
            tracing::debug!(reasons = %reasons.join("; "), "some addresses are unreachable");
        }
        let client = Client {
            nodes: Arc::new(Nodes::new(nodes, current, options)),
            addresses: addresses.into(),
            options,
            routes: Arc::default(),
            map_asked: Arc::default(),
        };
        // One try: a standalone node has no map, and a cluster that is still electing
        // its leaders is asked again when a reply names a map version.
        if let Err(error) = client.fetch_map_once().await {
            tracing::debug!(%error, "no shard map yet");
        }
        Ok(client)
    }

    /// The cluster's shard map, fetched now (with retries) and used from now on to
    /// route writes; `None` from a standalone node, which has none.
    pub async fn shard_map(&self) -> Result<Option<ShardMap>, ClientError> {
        const OP: &str = "get_shard_map";
        let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| async move {
            grpc.get_shard_map(pb::ShardMapRequest {}).await
        })
        .await;
        match reply {
            Ok(reply) => self.keep_map(&reply).map(Some),
            Err(ClientError::Refused { code: tonic::Code::Unimplemented, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One attempt at the shard map, on the node in use.
    async fn fetch_map_once(&self) -> Result<(), String> {
        self.fetch_map_from(self.nodes.current().0).await
    }

    /// One attempt at the shard map, on node `index` (the one that said it knows a
    /// newer map than the client's: another might not yet).
    async fn fetch_map_from(&self, index: usize) -> Result<(), String> {
        *self.map_asked.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let mut grpc = self.nodes.node(index).grpc.clone();
        let call = grpc.get_shard_map(pb::ShardMapRequest {});
        match tokio::time::timeout(self.options.request_timeout, call).await {
            Ok(Ok(reply)) => self.keep_map(reply.get_ref()).map(|_| ()).map_err(|e| e.to_string()),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err("no reply in time".to_string()),
        }
    }

    /// Routes by `reply` from now on, unless the map held is as new.
    fn keep_map(&self, reply: &pb::ShardMapReply) -> Result<ShardMap, ClientError> {
        let routes = Routes::from_reply(reply).ok_or_else(|| ClientError::InvalidResponse {
            operation: "get_shard_map",
            reason: "the shard map is empty or names a shard twice".to_string(),
        })?;
        let map = routes.map.clone();
        let mut held = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if held.as_ref().is_none_or(|held| routes.map.version > held.map.version) {
            *held = Some(routes);
        }
        Ok(map)
    }

    /// The shard map this client routes by, as last fetched (no request is sent).
    pub fn known_shard_map(&self) -> Option<ShardMap> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|r| r.map.clone())
    }

    /// Without a map (the fetch at connect failed: the cluster was electing), asks again,
    /// at most once every `MAP_RETRY_INTERVAL`; a standalone node is asked once.
    async fn fetch_map_if_missing(&self) {
        if self.map_version().is_some() {
            return;
        }
        let due = self
            .map_asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|asked| asked.elapsed() >= MAP_RETRY_INTERVAL);
        if due {
            if let Err(error) = self.fetch_map_once().await {
                tracing::debug!(%error, "no shard map yet");
            }
        }
    }

    /// The version of the map held, if any.
    fn map_version(&self) -> Option<u64> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).as_ref().map(|r| r.map.version)
    }

    /// Every address given to `connect`, in order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The address this client sends requests to: the leader, as far as it knows. One
    /// of [`addresses`](Client::addresses), or an address learnt from a leader hint (as
    /// the hint spelled it). Changes as the client follows the leader or leaves a failed
    /// node; shared by every clone.
    pub fn connected_address(&self) -> &str {
        &self.nodes.current().1.address
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Creates accounts; one result per account, in order.
    ///
    /// Any number of accounts: they are sent in consecutive batches of at most
    /// [`BATCH_EVENTS_MAX`], one batch at a time, never splitting a linked chain (a chain
    /// longer than a batch is [`ClientError::ChainTooLong`], and then nothing is sent).
    /// If a batch fails, the error is returned and earlier batches stay applied; calling
    /// again with the same accounts is safe (see the retry note on [`Client`]).
    pub async fn create_accounts(
        &self,
        accounts: &[Account],
    ) -> Result<Vec<CreateAccountResult>, ClientError> {
        self.create_accounts_with(accounts, false).await
    }

    /// [`create_accounts`](Client::create_accounts) using the request's `packed` field:
    /// 128-byte records in the ledger's own encoding, cheaper to encode and decode.
    pub async fn create_accounts_packed(
        &self,
        accounts: &[Account],
    ) -> Result<Vec<CreateAccountResult>, ClientError> {
        self.create_accounts_with(accounts, true).await
    }

    async fn create_accounts_with(
        &self,
        accounts: &[Account],
        packed: bool,
    ) -> Result<Vec<CreateAccountResult>, ClientError> {
        const OP: &str = "create_accounts";
        let batches = plan_batches(accounts.len(), BATCH_EVENTS_MAX, |i| {
            accounts[i].flags.contains(AccountFlags::LINKED)
        })?;
        run_batches(OP, accounts, &batches, |batch| async move {
            let request = if packed {
                convert::accounts_request_packed(batch)
            } else {
                convert::accounts_request(batch)
            };
            let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| {
                let request = request.clone();
                async move { grpc.create_accounts(request).await }
            })
            .await?;
            convert::account_results_from_pb(&reply.results).map_err(|e| invalid(OP, e))
        })
        .await
    }

    /// Creates transfers; one result per transfer, in order.
    ///
    /// Any number of transfers: they are sent in consecutive batches of at most
    /// [`BATCH_EVENTS_MAX`], one batch at a time, never splitting a linked chain (a chain
    /// longer than a batch is [`ClientError::ChainTooLong`], and then nothing is sent).
    /// If a batch fails, the error is returned and earlier batches stay applied; so may
    /// parts of the failing batch (against a cluster a batch goes in parts, one per
    /// shard). Calling again with the same transfers is safe (see the retry note on
    /// [`Client`]): what was applied answers `exists`.
    pub async fn create_transfers(
        &self,
        transfers: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, ClientError> {
        self.create_transfers_with(transfers, false).await
    }

    /// [`create_transfers`](Client::create_transfers) using the request's `packed`
    /// field: 128-byte records in the ledger's own encoding (the fast path).
    pub async fn create_transfers_packed(
        &self,
        transfers: &[Transfer],
    ) -> Result<Vec<CreateTransferResult>, ClientError> {
        self.create_transfers_with(transfers, true).await
    }

    async fn create_transfers_with(
        &self,
        transfers: &[Transfer],
        packed: bool,
    ) -> Result<Vec<CreateTransferResult>, ClientError> {
        const OP: &str = "create_transfers";
        let batches = plan_batches(transfers.len(), BATCH_EVENTS_MAX, |i| {
            transfers[i].flags.contains(TransferFlags::LINKED)
        })?;
        run_batches(OP, transfers, &batches, |batch| async move {
            self.fetch_map_if_missing().await;
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner).clone();
            let Some(routes) = routes else {
                return self.send_transfers(batch, packed).await;
            };
            // Each home's part at once, to a node holding that shard.
            let parts = routes.split(batch);
            let sends = parts.iter().map(|(home, indexes)| {
                let part: Vec<Transfer> = indexes.iter().map(|&i| batch[i]).collect();
                let address = routes.address_of(*home).map(str::to_string);
                async move { self.send_part(*home, part, packed, address).await }
            });
            let mut results = vec![CreateTransferResult::Ok; batch.len()];
            let mut newer_map = None;
            for ((_, indexes), answer) in parts.iter().zip(join_all(sends).await) {
                let (part_results, newer) = answer?;
                if part_results.len() != indexes.len() {
                    let reason =
                        format!("{} results for {} events", part_results.len(), indexes.len());
                    return Err(ClientError::InvalidResponse { operation: OP, reason });
                }
                newer_map = newer_map.or(newer);
                for (&i, result) in indexes.iter().zip(part_results) {
                    results[i] = result;
                }
            }
            if let Some(index) = newer_map {
                if let Err(error) = self.fetch_map_from(index).await {
                    tracing::debug!(%error, "could not fetch the newer shard map");
                }
            }
            Ok(results)
        })
        .await
    }

    /// Sends one batch (or a part of one) through the retry loop, from the node in use.
    async fn send_transfers(
        &self,
        batch: &[Transfer],
        packed: bool,
    ) -> Result<Vec<CreateTransferResult>, ClientError> {
        const OP: &str = "create_transfers";
        let request = transfers_request(batch, packed);
        let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| {
            let request = request.clone();
            async move { grpc.create_transfers(request).await }
        })
        .await?;
        convert::transfer_results_from_pb(&reply.results).map_err(|e| invalid(OP, e))
    }

    /// Sends the part of a batch whose home is `home` to `address` (a node holding that
    /// shard) once; if that fails, through the retry loop like any request (and the
    /// shard's leader is learnt again: from the refusal's hint, or the map's replicas;
    /// a node that did not answer is skipped while suspect). Returns the results, and
    /// the node that answered if it knows a newer map than the client's.
    async fn send_part(
        &self,
        home: u64,
        part: Vec<Transfer>,
        packed: bool,
        address: Option<String>,
    ) -> Result<(Vec<CreateTransferResult>, Option<usize>), ClientError> {
        const OP: &str = "create_transfers";
        let target = address.as_deref().and_then(|a| self.nodes.find_or_learn(a));
        if let Some(index) = target.filter(|&index| !self.nodes.suspect(index)) {
            let request = transfers_request(&part, packed);
            let mut grpc = self.nodes.node(index).grpc.clone();
            let call = grpc.create_transfers(request);
            let answer = tokio::time::timeout(self.options.request_timeout, call).await;
            if let Ok(Ok(response)) = answer {
                let held = self.map_version().unwrap_or(0);
                let known = response
                    .metadata()
                    .get(MAP_VERSION_KEY)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if let Some(leader) = metadata_hint(response.metadata()) {
                    let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
                    if let Some(routes) = routes.as_mut() {
                        routes.learn_leader(home, leader);
                    }
                }
                let results = convert::transfer_results_from_pb(&response.get_ref().results)
                    .map_err(|e| invalid(OP, e))?;
                return Ok((results, known.filter(|&known| known > held).map(|_| index)));
            }
            // Failed or refused: forget the leader learnt (a refusal may name the new
            // one); the retry loop tries again, and reports what recurs.
            let (hint, unreachable) = match &answer {
                Ok(Err(status)) => {
                    (leader_hint(status).map(str::to_string), from_transport(status))
                }
                _ => (None, true),
            };
            if unreachable {
                self.nodes.mark_suspect(index);
            }
            let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(routes) = routes.as_mut() {
                match hint {
                    Some(leader) => routes.learn_leader(home, &leader),
                    None => routes.forget_leader(home),
                }
            }
        }
        Ok((self.send_transfers(&part, packed).await?, None))
    }

    /// The accounts with these ids that exist, in the order of `ids` (missing ids are
    /// skipped). Any number of ids: they are sent in batches of [`BATCH_EVENTS_MAX`].
    pub async fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>, ClientError> {
        const OP: &str = "lookup_accounts";
        let mut accounts = Vec::new();
        for chunk in ids.chunks(BATCH_EVENTS_MAX) {
            let request = pb::LookupRequest { ids: convert::ids_to_pb(chunk) };
            let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| {
                let request = request.clone();
                async move { grpc.lookup_accounts(request).await }
            })
            .await?;
            check_count(OP, reply.accounts.len(), chunk.len())?;
            for account in &reply.accounts {
                accounts.push(Account::try_from(account).map_err(|e| invalid(OP, e))?);
            }
        }
        Ok(accounts)
    }

    /// A snapshot read: the accounts with these ids that exist (in the order of `ids`),
    /// all as of one timestamp, consistent across shards (a transfer between shards is
    /// in it at both sides or at neither). `timestamp`: `None` lets the cluster choose;
    /// otherwise it must not be behind any shard's clock. Returns the timestamp and the
    /// accounts. At most [`BATCH_EVENTS_MAX`] ids: one snapshot is one request.
    pub async fn read_snapshot(
        &self,
        ids: &[u128],
        timestamp: Option<u64>,
    ) -> Result<(u64, Vec<Account>), ClientError> {
        const OP: &str = "read_snapshot";
        let request =
            pb::SnapshotRequest { ids: convert::ids_to_pb(ids), timestamp: timestamp.unwrap_or(0) };
        let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| {
            let request = request.clone();
            async move { grpc.read_snapshot(request).await }
        })
        .await?;
        check_count(OP, reply.accounts.len(), ids.len())?;
        let accounts =
            reply.accounts.iter().map(|a| Account::try_from(a).map_err(|e| invalid(OP, e)));
        Ok((reply.timestamp, accounts.collect::<Result<_, _>>()?))
    }

    /// The transfers with these ids that exist, in the order of `ids` (missing ids are
    /// skipped). Any number of ids: they are sent in batches of [`BATCH_EVENTS_MAX`].
    pub async fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>, ClientError> {
        const OP: &str = "lookup_transfers";
        let mut transfers = Vec::new();
        for chunk in ids.chunks(BATCH_EVENTS_MAX) {
            let request = pb::LookupRequest { ids: convert::ids_to_pb(chunk) };
            let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| {
                let request = request.clone();
                async move { grpc.lookup_transfers(request).await }
            })
            .await?;
            check_count(OP, reply.transfers.len(), chunk.len())?;
            transfers.extend(transfers_from_pb(OP, &reply.transfers)?);
        }
        Ok(transfers)
    }

    /// The transfers of one account that match `filter` (at most `filter.limit`, and at
    /// most [`BATCH_EVENTS_MAX`]). An invalid filter returns nothing.
    pub async fn get_account_transfers(
        &self,
        filter: &AccountFilter,
    ) -> Result<Vec<Transfer>, ClientError> {
        const OP: &str = "get_account_transfers";
        let request = pb::AccountFilter::from(filter);
        let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| async move {
            grpc.get_account_transfers(request).await
        })
        .await?;
        check_count(OP, reply.transfers.len(), query_cap(filter.limit))?;
        transfers_from_pb(OP, &reply.transfers)
    }

    /// The balance history of one account (kept only for accounts with
    /// `flags.history`), filtered like [`get_account_transfers`](Client::get_account_transfers).
    pub async fn get_account_balances(
        &self,
        filter: &AccountFilter,
    ) -> Result<Vec<AccountBalance>, ClientError> {
        const OP: &str = "get_account_balances";
        let request = pb::AccountFilter::from(filter);
        let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| async move {
            grpc.get_account_balances(request).await
        })
        .await?;
        check_count(OP, reply.balances.len(), query_cap(filter.limit))?;
        Ok(reply.balances.iter().map(AccountBalance::from).collect())
    }

    /// The accounts that match `filter` (at most `filter.limit`, and at most
    /// [`BATCH_EVENTS_MAX`]). An invalid filter returns nothing.
    pub async fn query_accounts(&self, filter: &QueryFilter) -> Result<Vec<Account>, ClientError> {
        const OP: &str = "query_accounts";
        let request = pb::QueryFilter::from(filter);
        let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| async move {
            grpc.query_accounts(request).await
        })
        .await?;
        check_count(OP, reply.accounts.len(), query_cap(filter.limit))?;
        reply.accounts.iter().map(|a| Account::try_from(a).map_err(|e| invalid(OP, e))).collect()
    }

    /// The transfers that match `filter` (at most `filter.limit`, and at most
    /// [`BATCH_EVENTS_MAX`]). An invalid filter returns nothing.
    pub async fn query_transfers(
        &self,
        filter: &QueryFilter,
    ) -> Result<Vec<Transfer>, ClientError> {
        const OP: &str = "query_transfers";
        let request = pb::QueryFilter::from(filter);
        let reply = with_retries(OP, &self.options, &self.nodes, |mut grpc| async move {
            grpc.query_transfers(request).await
        })
        .await?;
        check_count(OP, reply.transfers.len(), query_cap(filter.limit))?;
        transfers_from_pb(OP, &reply.transfers)
    }

    /// Adds (`remove` false) or removes node `node` as a replica of `shard` (a cluster
    /// operation, through joint consensus); returns the shard's voters afterwards. Sent
    /// to the shard's leader, followed like any request. Not idempotent in the way
    /// ledger requests are: adding a replica twice is answered with the same voters.
    pub async fn change_replicas(
        &self,
        shard: u64,
        node: u64,
        remove: bool,
    ) -> Result<Vec<u64>, ClientError> {
        const OP: &str = "change_replicas";
        let request = pb::ChangeReplicasRequest { shard, node, remove };
        let reply = with_retries_via(
            OP,
            &self.options,
            &self.nodes,
            |node| node.admin.clone(),
            |mut admin| async move { admin.change_replicas(request).await },
        )
        .await?;
        Ok(reply.voters)
    }
}

/// The request for `batch`, in the `packed` field (whole records) or as messages.
fn transfers_request(batch: &[Transfer], packed: bool) -> pb::CreateTransfersRequest {
    if packed {
        convert::transfers_request_packed(batch)
    } else {
        convert::transfers_request(batch)
    }
}

/// What one node of a cluster knows of the shards it holds (see [`Client::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub node: u64,
    pub shards: Vec<ShardStatus>,
}

/// One replica's view of its shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard: u64,
    /// "leader", "follower", "candidate" or "pre-candidate".
    pub role: String,
    pub term: u64,
    /// The leader's node id, if known.
    pub leader: Option<u64>,
    /// Entries of the shard's log this replica has applied.
    pub applied: u64,
    pub voters: Vec<u64>,
}

impl Client {
    /// Asks every known node, one attempt each (within `request_timeout`), what it
    /// knows of its shards: (address, status or why not). For operators: which node
    /// leads, whether replicas keep up.
    pub async fn status(&self) -> Vec<(String, Result<NodeStatus, ClientError>)> {
        const OP: &str = "status";
        let mut statuses = Vec::new();
        for node in self.nodes.known() {
            let mut admin = node.admin.clone();
            let reply = tokio::time::timeout(
                self.options.request_timeout,
                admin.status(pb::StatusRequest {}),
            )
            .await;
            let status = match reply {
                Ok(Ok(reply)) => {
                    let reply = reply.into_inner();
                    let shards = reply
                        .shards
                        .into_iter()
                        .map(|s| ShardStatus {
                            shard: s.shard,
                            role: s.role,
                            term: s.term,
                            leader: Some(s.leader).filter(|&id| id != 0),
                            applied: s.applied,
                            voters: s.voters,
                        })
                        .collect();
                    Ok(NodeStatus { node: reply.node, shards })
                }
                Ok(Err(status)) => Err(ClientError::Refused {
                    operation: OP,
                    code: status.code(),
                    message: if status.code() == tonic::Code::Unimplemented {
                        "a standalone node (not part of a cluster) has no shard status".into()
                    } else {
                        status.message().to_string()
                    },
                }),
                Err(_) => Err(ClientError::TimedOut {
                    operation: OP,
                    attempts: 1,
                    elapsed: self.options.request_timeout,
                    last_error: format!("{}: no reply", node.address),
                }),
            };
            statuses.push((node.address.clone(), status));
        }
        statuses
    }
}

fn invalid(operation: &'static str, error: ConvertError) -> ClientError {
    ClientError::InvalidResponse { operation, reason: error.to_string() }
}

/// Most results a query with this `limit` may return.
fn query_cap(limit: u32) -> usize {
    (limit as usize).min(BATCH_EVENTS_MAX)
}

fn check_count(operation: &'static str, got: usize, at_most: usize) -> Result<(), ClientError> {
    if got > at_most {
        return Err(ClientError::InvalidResponse {
            operation,
            reason: format!("{got} records in the reply, at most {at_most} expected"),
        });
    }
    Ok(())
}

fn transfers_from_pb(
    operation: &'static str,
    transfers: &[pb::Transfer],
) -> Result<Vec<Transfer>, ClientError> {
    transfers.iter().map(|t| Transfer::try_from(t).map_err(|e| invalid(operation, e))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_reports_every_address_tried() {
        // Port 1 on localhost: nothing listens there, so the connection is refused.
        let addresses = vec!["127.0.0.1:1".to_string(), "not a uri\u{0}".to_string()];
        let err = Client::connect(&addresses).await.unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("cannot connect to any of [\"127.0.0.1:1\""), "{text}");
        assert!(text.contains("127.0.0.1:1: "), "{text}");
        assert!(text.contains("invalid address"), "{text}");

        let err = Client::connect(&[]).await.unwrap_err();
        assert_eq!(err.to_string(), "cannot connect to any of []: no address given");
    }
}
