//! The client against a real settle node (in-process, on 127.0.0.1:0, in a tempdir).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use settle_client::{Client, ClientError, ClientOptions};
use settle_ledger::{
    Account, AccountFilter, AccountFlags, CreateAccountResult, CreateTransferResult, QueryFilter,
    Transfer, TransferFlags, BATCH_EVENTS_MAX,
};
use settle_node::{Config, Node};

async fn start(data_dir: &Path, listen: SocketAddr) -> Node {
    Node::start(Config { data_dir: data_dir.to_path_buf(), listen, ..Default::default() })
        .await
        .expect("node starts")
}

fn account(id: u128) -> Account {
    Account { id, ledger: 1, code: 10, ..Default::default() }
}

fn transfer(id: u128, debit: u128, credit: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 20,
        ..Default::default()
    }
}

/// Compares a stored record with the event that created it (the cluster assigns the
/// timestamp).
fn same_transfer(stored: &Transfer, sent: &Transfer) -> bool {
    stored.timestamp != 0 && Transfer { timestamp: 0, ..*stored } == *sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_transfers_lookups_queries_and_large_batches() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::connect(&[node.local_addr().to_string()]).await.expect("connect");

    // Accounts, including a 128-bit id and one keeping balance history.
    let big = (u128::from(u64::MAX) << 64) | 5;
    let accounts = [
        account(1),
        account(2),
        Account { flags: AccountFlags::HISTORY, ..account(3) },
        account(big),
    ];
    let results = client.create_accounts(&accounts).await.unwrap();
    assert_eq!(results, vec![CreateAccountResult::Ok; 4]);
    // Idempotent: creating them again (as a retry would) says `exists`.
    let results = client.create_accounts(&accounts).await.unwrap();
    assert_eq!(results, vec![CreateAccountResult::Exists; 4]);

    // A few transfers, one of them failing inside the ledger: a result, not an error.
    let first = [
        transfer(1, 1, 2, 10),
        transfer(2, 1, 3, 7),
        transfer(3, 42, 2, 1),
        transfer(u128::MAX - 1, big, 1, u128::from(u64::MAX) + 1),
    ];
    let results = client.create_transfers(&first).await.unwrap();
    assert_eq!(
        results,
        vec![
            CreateTransferResult::Ok,
            CreateTransferResult::Ok,
            CreateTransferResult::DebitAccountNotFound,
            CreateTransferResult::Ok,
        ]
    );
    let found = client.lookup_transfers(&[first[0].id, first[2].id, 999, first[3].id]).await;
    let found = found.unwrap();
    assert_eq!(found.len(), 2, "missing ids are skipped: {found:?}");
    assert!(same_transfer(&found[0], &first[0]));
    assert!(same_transfer(&found[1], &first[3]));

    let balances = client.lookup_accounts(&[1, 2, 3, big]).await.unwrap();
    assert_eq!(balances.len(), 4);
    assert_eq!(balances[0].debits_posted, 17);
    assert_eq!(balances[0].credits_posted, u128::from(u64::MAX) + 1);
    assert_eq!(balances[1].credits_posted, 10);
    assert_eq!(balances[2].credits_posted, 7);
    assert_eq!(balances[3].debits_posted, u128::from(u64::MAX) + 1);

    // 20,000 transfers in one call: split into batches of at most 8189, all results back.
    let n = 20_000u128;
    let bulk: Vec<Transfer> = (0..n).map(|i| transfer(1_000_000 + i, 1, 2, 1)).collect();
    let results = client.create_transfers(&bulk).await.unwrap();
    assert_eq!(results.len(), bulk.len());
    assert!(results.iter().all(|r| *r == CreateTransferResult::Ok));
    // The packed fast path, the same way.
    let packed: Vec<Transfer> = (0..n).map(|i| transfer(2_000_000 + i, 2, 1, 1)).collect();
    let results = client.create_transfers_packed(&packed).await.unwrap();
    assert_eq!(results.len(), packed.len());
    assert!(results.iter().all(|r| *r == CreateTransferResult::Ok));
    // Sending them again is what a retry does: every one says `exists`, none applies twice.
    let results = client.create_transfers(&bulk).await.unwrap();
    assert_eq!(results.len(), bulk.len());
    assert!(results.iter().all(|r| *r == CreateTransferResult::Exists));

    // Lookups of 20,000 ids split too, and come back in the order asked.
    let ids: Vec<u128> = bulk.iter().rev().map(|t| t.id).collect();
    let found = client.lookup_transfers(&ids).await.unwrap();
    assert_eq!(found.len(), ids.len());
    assert!(found.iter().zip(&ids).all(|(t, id)| t.id == *id));

    let balances = client.lookup_accounts(&[1, 2]).await.unwrap();
    assert_eq!(balances[0].debits_posted, 17 + n);
    assert_eq!(balances[0].credits_posted, u128::from(u64::MAX) + 1 + n);
    assert_eq!(balances[1].debits_posted, n);
    assert_eq!(balances[1].credits_posted, 10 + n);

    // A linked chain straddling the batch limit is kept whole and applies.
    let mut chained: Vec<Transfer> =
        (0..BATCH_EVENTS_MAX as u128 - 1).map(|i| transfer(3_000_000 + i, 1, 2, 1)).collect();
    for i in 0..3u128 {
        let flags = if i < 2 { TransferFlags::LINKED } else { TransferFlags::empty() };
        chained.push(Transfer { flags, ..transfer(4_000_000 + i, 2, 1, 1) });
    }
    let results = client.create_transfers(&chained).await.unwrap();
    assert_eq!(results.len(), chained.len());
    assert!(results.iter().all(|r| *r == CreateTransferResult::Ok), "chain kept in one batch");

    // A chain longer than a batch is refused before anything is sent.
    let too_long: Vec<Transfer> = (0..BATCH_EVENTS_MAX as u128 + 1)
        .map(|i| Transfer { flags: TransferFlags::LINKED, ..transfer(5_000_000 + i, 1, 2, 1) })
        .collect();
    let err = client.create_transfers(&too_long).await.unwrap_err();
    assert!(matches!(err, ClientError::ChainTooLong { start: 0, .. }), "{err:?}");
    assert!(client.lookup_transfers(&[5_000_000]).await.unwrap().is_empty());

    // Queries.
    let filter = AccountFilter { account_id: 3, limit: 10, ..Default::default() };
    let transfers = client.get_account_transfers(&filter).await.unwrap();
    assert_eq!(transfers.len(), 1);
    assert!(same_transfer(&transfers[0], &first[1]));
    let history = client.get_account_balances(&filter).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].credits_posted, 7);
    assert_eq!(history[0].timestamp, transfers[0].timestamp);

    let filter = AccountFilter { account_id: 1, limit: 25, ..Default::default() };
    assert_eq!(client.get_account_transfers(&filter).await.unwrap().len(), 25);

    let query = QueryFilter { ledger: 1, ..Default::default() };
    let on_ledger_1 = client.query_accounts(&query).await.unwrap();
    assert_eq!(on_ledger_1.iter().map(|a| a.id).collect::<Vec<_>>(), vec![1, 2, 3, big]);
    let query = QueryFilter { code: 20, limit: 5, ..Default::default() };
    assert_eq!(client.query_transfers(&query).await.unwrap().len(), 5);

    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_rides_out_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = node.local_addr();
    let options = ClientOptions {
        max_attempts: 50,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
    };
    let client = Client::connect_with(&[addr.to_string()], options).await.unwrap();
    let results = client.create_accounts(&[account(1), account(2)]).await.unwrap();
    assert_eq!(results, vec![CreateAccountResult::Ok; 2]);
    node.shutdown().await.unwrap();

    // The node comes back on the same address and data while the client retries.
    let data_dir = dir.path().to_path_buf();
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        start(&data_dir, addr).await
    });
    let results = client.create_transfers(&[transfer(1, 1, 2, 5)]).await.unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    let node = restarted.await.unwrap();

    let balances = client.lookup_accounts(&[1, 2]).await.unwrap();
    assert_eq!(balances.len(), 2, "accounts survived the restart");
    assert_eq!(balances[0].debits_posted, 5);
    node.shutdown().await.unwrap();
}
