//! [`Client`]: connecting, and one method per RPC of `settle.v1.Ledger`.

use std::sync::Arc;

use settle_ledger::{
    Account, AccountBalance, AccountFilter, AccountFlags, CreateAccountResult,
    CreateTransferResult, QueryFilter, Transfer, TransferFlags, BATCH_EVENTS_MAX,
};
use settle_proto::convert::{self, ConvertError};
use settle_proto::pb;
use settle_proto::pb::ledger_client::LedgerClient;
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 flow-control window per stream and per connection: several full batches.
const HTTP2_WINDOW_BYTES: u32 = 16 << 20;

use crate::batch::{plan_batches, run_batches};
use crate::error::error_chain;
use crate::retry::with_retries;
use crate::{ClientError, ClientOptions};

/// Largest reply the client accepts. A full batch of looked-up accounts is about
/// 1.4 MB on the wire; this leaves room without being unbounded.
const MAX_DECODING_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// An async client of one settle node (later: a cluster).
///
/// Cheap to clone: every clone shares one HTTP/2 connection (a tonic `Channel`, which
/// multiplexes concurrent requests and reconnects by itself after a failure).
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
    grpc: LedgerClient<Channel>,
    addresses: Arc<[String]>,
    connected: usize,
    options: ClientOptions,
}

/// `"127.0.0.1:3000"` → `"http://127.0.0.1:3000"`; an address with a scheme is kept.
fn endpoint_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

impl Client {
    /// Connects with [`ClientOptions::default`]; see [`Client::connect_with`].
    pub async fn connect(addresses: &[String]) -> Result<Client, ClientError> {
        Client::connect_with(addresses, ClientOptions::default()).await
    }

    /// Connects to the first reachable address, trying them in order, each within
    /// `options.request_timeout`. An address is `host:port` or a URI
    /// (`http://host:port`). The whole list is kept for failover to other nodes (not
    /// implemented yet: today the client talks to one node).
    pub async fn connect_with(
        addresses: &[String],
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let mut reasons = Vec::new();
        for (index, address) in addresses.iter().enumerate() {
            let endpoint = match Endpoint::from_shared(endpoint_uri(address)) {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    reasons.push(format!("{address}: invalid address: {}", error_chain(&e)));
                    continue;
                }
            };
            // A full batch is about 1 MiB: with HTTP/2's default 64 KiB windows it would
            // crawl through many window-update round trips, so open the windows wide.
            let endpoint = endpoint
                .connect_timeout(options.request_timeout)
                .tcp_nodelay(true)
                .initial_stream_window_size(HTTP2_WINDOW_BYTES)
                .initial_connection_window_size(HTTP2_WINDOW_BYTES);
            match endpoint.connect().await {
                Ok(channel) => {
                    tracing::debug!(address = %address, "connected");
                    return Ok(Client {
                        grpc: LedgerClient::new(channel)
                            .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
                        addresses: addresses.into(),
                        connected: index,
                        options,
                    });
                }
                Err(e) => reasons.push(format!("{address}: {}", error_chain(&e))),
            }
        }
        if reasons.is_empty() {
            reasons.push("no address given".to_string());
        }
        Err(ClientError::Connect { addresses: addresses.to_vec(), reasons: reasons.join("; ") })
    }

    /// Every address given to `connect`, in order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The address this client is connected to.
    pub fn connected_address(&self) -> &str {
        &self.addresses[self.connected]
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
            let reply = with_retries(OP, &self.options, || {
                let mut grpc = self.grpc.clone();
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
    /// If a batch fails, the error is returned and earlier batches stay applied; calling
    /// again with the same transfers is safe (see the retry note on [`Client`]).
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
            let request = if packed {
                convert::transfers_request_packed(batch)
            } else {
                convert::transfers_request(batch)
            };
            let reply = with_retries(OP, &self.options, || {
                let mut grpc = self.grpc.clone();
                let request = request.clone();
                async move { grpc.create_transfers(request).await }
            })
            .await?;
            convert::transfer_results_from_pb(&reply.results).map_err(|e| invalid(OP, e))
        })
        .await
    }

    /// The accounts with these ids that exist, in the order of `ids` (missing ids are
    /// skipped). Any number of ids: they are sent in batches of [`BATCH_EVENTS_MAX`].
    pub async fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>, ClientError> {
        const OP: &str = "lookup_accounts";
        let mut accounts = Vec::new();
        for chunk in ids.chunks(BATCH_EVENTS_MAX) {
            let request = pb::LookupRequest { ids: convert::ids_to_pb(chunk) };
            let reply = with_retries(OP, &self.options, || {
                let mut grpc = self.grpc.clone();
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

    /// The transfers with these ids that exist, in the order of `ids` (missing ids are
    /// skipped). Any number of ids: they are sent in batches of [`BATCH_EVENTS_MAX`].
    pub async fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>, ClientError> {
        const OP: &str = "lookup_transfers";
        let mut transfers = Vec::new();
        for chunk in ids.chunks(BATCH_EVENTS_MAX) {
            let request = pb::LookupRequest { ids: convert::ids_to_pb(chunk) };
            let reply = with_retries(OP, &self.options, || {
                let mut grpc = self.grpc.clone();
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
        let reply = with_retries(OP, &self.options, || {
            let mut grpc = self.grpc.clone();
            async move { grpc.get_account_transfers(request).await }
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
        let reply = with_retries(OP, &self.options, || {
            let mut grpc = self.grpc.clone();
            async move { grpc.get_account_balances(request).await }
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
        let reply = with_retries(OP, &self.options, || {
            let mut grpc = self.grpc.clone();
            async move { grpc.query_accounts(request).await }
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
        let reply = with_retries(OP, &self.options, || {
            let mut grpc = self.grpc.clone();
            async move { grpc.query_transfers(request).await }
        })
        .await?;
        check_count(OP, reply.transfers.len(), query_cap(filter.limit))?;
        transfers_from_pb(OP, &reply.transfers)
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

    #[test]
    fn addresses_without_scheme_get_http() {
        assert_eq!(endpoint_uri("127.0.0.1:3000"), "http://127.0.0.1:3000");
        assert_eq!(endpoint_uri("http://node-1:3000"), "http://node-1:3000");
        assert_eq!(endpoint_uri("https://node-1:3000"), "https://node-1:3000");
    }

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
