//! The client routes writes by the cluster's shard map, against a real cluster of four
//! nodes in this process: a map made stale by a membership change costs a forward,
//! and the reply that says so makes the client fetch the new map.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use settle_client::Client;
use settle_ledger::{Account, CreateAccountResult, CreateTransferResult, Transfer};
use settle_node::cluster::{ClusterConfig, ClusterNode, ClusterOptions};
use settle_proto::pb;

fn addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// The version of the map `address` serves once it holds `shard` on `replicas`
/// (bounded wait: the shard leaders report their replicas every second, so changes
/// made within one second may come as one version).
async fn wait_for_map(address: SocketAddr, shard: u64, replicas: &[u64]) -> u64 {
    use pb::ledger_client::LedgerClient;
    let mut last = None;
    for _ in 0..300 {
        if let Ok(mut grpc) = LedgerClient::connect(format!("http://{address}")).await {
            match grpc.get_shard_map(pb::ShardMapRequest {}).await {
                Ok(reply)
                    if reply
                        .get_ref()
                        .shards
                        .iter()
                        .any(|s| s.shard == shard && s.replicas == replicas) =>
                {
                    return reply.get_ref().version
                }
                Ok(reply) => last = Some(format!("{:?}", reply.into_inner())),
                Err(status) => last = Some(format!("{status:?}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{address} never served shard {shard} on {replicas:?}; last: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_shard_map_and_a_stale_map_is_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(4);
    // Shard 1 (the metadata shard) on nodes 1-3, shard 2 on nodes 2-4.
    let mut cluster = ClusterConfig::sharded(&addresses, 2);
    cluster.shards[0].replicas = vec![1, 2, 3];
    cluster.shards[1].replicas = vec![2, 3, 4];
    let mut nodes = Vec::new();
    for node_id in 1..=4 {
        let options = ClusterOptions {
            cluster: cluster.clone(),
            node_id,
            data_dir: dir.path().join(format!("node-{node_id}")),
            fsync: true,
            tuning: Default::default(),
        };
        nodes.push(ClusterNode::start(options).await.unwrap());
    }
    let given: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
    let client = Client::connect(&given).await.unwrap();
    // Connected at once, the client may have found no map yet (the shards are electing
    // their leaders): writes ask for it again until they have it.
    let probe = [Transfer {
        id: 1,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 1,
        ledger: 1,
        code: 1,
        ..Default::default()
    }];
    for _ in 0..100 {
        if client.known_shard_map().is_some() {
            break;
        }
        let _ = client.create_transfers(&probe).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client.known_shard_map().is_some(), "writes fetched the map");
    let map = client.shard_map().await.unwrap().expect("a cluster has a shard map");
    assert_eq!(map.version, 1);
    assert_eq!((map.replicas(1), map.replicas(2)), (Some(&[1, 2, 3][..]), Some(&[2, 3, 4][..])));

    // Accounts on both shards.
    let on = |shard: u64, nth: usize| {
        (1..1000u128).filter(|&id| map.shard_of(id) == shard).nth(nth).unwrap()
    };
    let (a, b, a2, b2) = (on(1, 0), on(2, 0), on(1, 1), on(2, 1));
    let accounts: Vec<Account> = [a, b, a2, b2]
        .iter()
        .map(|&id| Account { id, ledger: 1, code: 1, ..Default::default() })
        .collect();
    let results = client.create_accounts(&accounts).await.unwrap();
    assert!(results.iter().all(|r| *r == CreateAccountResult::Ok), "{results:?}");

    // Shard 2 moves from node 2 to node 1; node 2 stays up (it holds shard 1).
    assert_eq!(client.change_replicas(2, 1, false).await.unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(client.change_replicas(2, 2, true).await.unwrap(), vec![1, 3, 4]);
    // Every replica of the metadata shard (nodes 1-3) has the new map.
    let version = wait_for_map(addresses[1], 2, &[1, 3, 4]).await;
    assert!(version > 1, "a change is a new version");
    for &address in &addresses[..3] {
        wait_for_map(address, 2, &[1, 3, 4]).await;
    }
    assert_eq!(client.known_shard_map().unwrap().version, 1, "the client's map is stale");

    // A batch with a part on each shard: the part of shard 2 goes by the stale map to
    // node 2, which no longer holds it and forwards it.
    let t = |id: u128, debit: u128, credit: u128| Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount: 3,
        ledger: 1,
        code: 1,
        ..Default::default()
    };
    let transfers = [t(10, b, b2), t(11, a, a2), t(12, b, a), t(13, a2, b2)];
    let results = client.create_transfers(&transfers).await.unwrap();
    assert_eq!(results, vec![CreateTransferResult::Ok; 4]);
    // Fetched again: at least the version of the move (a leader's report on a busy
    // machine may have made a later one since).
    let map = client.known_shard_map().unwrap();
    assert!(map.version >= version, "{} < {version}", map.version);
    assert_eq!(map.replicas(2), Some(&[1, 3, 4][..]), "fetched again");

    // Every effect landed once. (A snapshot read: it waits for the cross-shard
    // transfers' resolutions at their participants, which follow the replies; a plain
    // lookup may come before them.)
    let (_, balances) = client.read_snapshot(&[a, b, a2, b2], None).await.unwrap();
    let net: Vec<i128> =
        balances.iter().map(|x| x.credits_posted as i128 - x.debits_posted as i128).collect();
    assert_eq!(net, vec![3 - 3, -3 - 3, 3 - 3, 3 + 3]);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
