//! A three-replica cluster of real `settle` processes: transfers stream through a
//! client that follows the leader; the leader is SIGKILLed mid-workload and restarted.
//! No acknowledged transfer may be lost, balances must equal a replay of what was
//! acknowledged, service must resume without the old leader, and the restarted node
//! must catch up (it then answers lookups from its own state).
//!
//! Prints the unavailability window: from the SIGKILL to the first acknowledged batch
//! after it. Seeded with `SETTLE_SEED` (printed on failure).

mod fault_support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use settle_client::{Client, ClientOptions};
use settle_ledger::{Account, Transfer};

use fault_support::{
    accounts, check_balances, create_accounts, lookup_transfers, replay, runtime, same_transfer,
    seed_from_env, send_acknowledged, start_cluster_node, transfer_batch, Ids, NodeProcess, Rng,
    SeedReport,
};

const DEFAULT_SEED: u64 = 0x5e77_1e00_c1a5_7e03;
const REPLICAS: u64 = 3;
const ACCOUNTS: usize = 40;
const BATCH_SIZE_MAX: u64 = 300;
const BATCHES_BEFORE_KILL: usize = 15;
const BATCHES_WITHOUT_LEADER: usize = 10;
const BATCHES_AFTER_RESTART: usize = 10;

/// Rides out an election: many quick attempts, each with a bounded wait.
fn failover_options() -> ClientOptions {
    ClientOptions {
        max_attempts: 100,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(5),
    }
}

fn free_addresses(count: u64) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("bound")).collect()
}

/// A cluster of `REPLICAS` node processes on free loopback ports: a temporary directory
/// holding the cluster file and one data directory per node.
struct LocalCluster {
    dir: tempfile::TempDir,
    addresses: Vec<SocketAddr>,
    /// Extra `settle start` arguments for every node.
    extra: Vec<String>,
}

impl LocalCluster {
    fn new(
        config: impl FnOnce(&[SocketAddr]) -> settle_node::cluster::ClusterConfig,
        extra: &[&str],
    ) -> LocalCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addresses = free_addresses(REPLICAS);
        std::fs::write(dir.path().join("cluster.toml"), config(&addresses).to_toml())
            .expect("write cluster.toml");
        let extra = extra.iter().map(|s| s.to_string()).collect();
        LocalCluster { dir, addresses, extra }
    }

    /// Starts node `id` (again, after a kill: on the same data directory).
    fn start(&self, id: u64) -> NodeProcess {
        let config_path = self.dir.path().join("cluster.toml");
        let data_dir = self.dir.path().join(format!("node-{id}"));
        start_cluster_node(&config_path, id, &data_dir, &self.extra).serving()
    }

    fn start_all(&self) -> Vec<Option<NodeProcess>> {
        (1..=REPLICAS).map(|id| Some(self.start(id))).collect()
    }

    /// Every node's address, for a client.
    fn all(&self) -> Vec<String> {
        self.addresses.iter().map(|a| a.to_string()).collect()
    }
}

#[test]
fn killing_the_leader_loses_nothing_and_service_resumes() {
    let seed = seed_from_env(DEFAULT_SEED);
    let _report = SeedReport { test: "cluster", seed };
    let mut rng = Rng::new(seed);
    let cluster = LocalCluster::new(settle_node::cluster::ClusterConfig::single_shard, &[]);
    let mut nodes = cluster.start_all();
    let all = cluster.all();

    runtime().block_on(async {
        let client = Client::connect_with(&all, failover_options()).await.expect("connect");
        let accounts = accounts(&mut rng, ACCOUNTS);
        create_accounts(&client, &accounts).await;
        let mut ids = Ids::new();
        let mut acknowledged: Vec<Vec<Transfer>> = Vec::new();
        let send = |client: Client, batch: Vec<Transfer>| async move {
            send_acknowledged(&client, &batch).await;
            batch
        };
        for _ in 0..BATCHES_BEFORE_KILL {
            let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=BATCH_SIZE_MAX);
            acknowledged.push(send(client.clone(), batch).await);
        }

        // The client's current address is the leader's: it just got an answer there.
        let leader = client.connected_address().to_string();
        let index = all.iter().position(|a| *a == leader).expect("the leader is a node");
        let killed = nodes[index].take().expect("running").kill();
        let killed_at = Instant::now();
        let mut unavailable = None;
        for _ in 0..BATCHES_WITHOUT_LEADER {
            let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=BATCH_SIZE_MAX);
            acknowledged.push(send(client.clone(), batch).await);
            unavailable.get_or_insert(killed_at.elapsed());
        }
        let unavailable = unavailable.expect("batches were sent");
        assert_ne!(client.connected_address(), leader, "a new leader serves");
        println!(
            "leader {leader} SIGKILLed; unavailability window (kill to first acknowledged \
             batch) = {} ms",
            unavailable.as_millis()
        );

        let id = index as u64 + 1;
        nodes[index] = Some(cluster.start(id));
        for _ in 0..BATCHES_AFTER_RESTART {
            let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=BATCH_SIZE_MAX);
            acknowledged.push(send(client.clone(), batch).await);
        }

        // Through the cluster, and through the restarted node alone (a follower answers
        // a read once it has applied everything committed before it).
        let restarted = Client::connect_with(std::slice::from_ref(&leader), failover_options())
            .await
            .expect("connect to the restarted node");
        let expected = replay(&accounts, acknowledged.iter());
        let acknowledged: Vec<Transfer> = acknowledged.into_iter().flatten().collect();
        let ids: Vec<u128> = acknowledged.iter().map(|t| t.id).collect();
        for (name, reader) in [("cluster", &client), ("restarted node", &restarted)] {
            for chunk in ids.chunks(4000) {
                let stored = lookup_transfers(reader, chunk).await;
                for sent in acknowledged.iter().filter(|t| chunk.contains(&t.id)) {
                    let found = stored.get(&sent.id).unwrap_or_else(|| {
                        panic!("{name}: acknowledged transfer {:#x} is missing (killed node's log:\n{killed})", sent.id)
                    });
                    assert!(same_transfer(found, sent), "{name}: {found:?} != {sent:?}");
                }
            }
            check_balances(reader, &accounts, &expected)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    });
    // `settle status` shows every node, exactly one leader, all on the same term.
    let output = std::process::Command::new(fault_support::SETTLE)
        .args(["status", "--json", "--addresses", &all.join(",")])
        .output()
        .expect("run settle status");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let nodes_json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let shards: Vec<&serde_json::Value> =
        nodes_json.as_array().unwrap().iter().map(|n| &n["shards"][0]).collect();
    assert_eq!(shards.len(), 3, "{nodes_json}");
    assert_eq!(shards.iter().filter(|s| s["role"] == "leader").count(), 1, "{nodes_json}");
    assert!(shards.iter().all(|s| s["term"] == shards[0]["term"]), "{nodes_json}");
    // `settle shard map` shows the replicated map: the one shard on the three nodes.
    let output = std::process::Command::new(fault_support::SETTLE)
        .args(["shard", "map", "--json", "--addresses", &all.join(",")])
        .output()
        .expect("run settle shard map");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let map: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(map["shards"], serde_json::json!([{ "shard": 1, "replicas": [1, 2, 3] }]), "{map}");
    assert!(map["version"].as_u64().is_some_and(|v| v >= 1), "{map}");
    for node in nodes.into_iter().flatten() {
        let (clean, stderr) = node.stop();
        assert!(clean, "a node did not stop cleanly:\n{stderr}");
    }
}

/// Kills a random node (leader or follower) in every round, keeps writing through the
/// other two, restarts it; replicas checkpoint every 8 entries, so kills land around
/// snapshot files, compaction and catch-up by snapshot. At the end every acknowledged
/// transfer is there, balances equal the replay, and every node alone answers so.
#[test]
fn killing_any_node_round_after_round_loses_nothing() {
    const ROUNDS: usize = 6;
    const BATCHES_PER_PHASE: usize = 6;
    let seed = seed_from_env(DEFAULT_SEED ^ 0x6b11);
    let _report = SeedReport { test: "cluster", seed };
    let mut rng = Rng::new(seed);
    let cluster = LocalCluster::new(
        settle_node::cluster::ClusterConfig::single_shard,
        &["--checkpoint-entries", "8"],
    );
    let start = |id: u64| cluster.start(id);
    let mut nodes = cluster.start_all();
    let all = cluster.all();

    runtime().block_on(async {
        let client = Client::connect_with(&all, failover_options()).await.expect("connect");
        let accounts = accounts(&mut rng, ACCOUNTS);
        create_accounts(&client, &accounts).await;
        let mut ids = Ids::new();
        let mut acknowledged: Vec<Vec<Transfer>> = Vec::new();
        for _ in 0..ROUNDS {
            for _ in 0..BATCHES_PER_PHASE {
                let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=BATCH_SIZE_MAX);
                send_acknowledged(&client, &batch).await;
                acknowledged.push(batch);
            }
            let victim = rng.index(nodes.len());
            let _stderr = nodes[victim].take().expect("running").kill();
            for _ in 0..BATCHES_PER_PHASE {
                let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=BATCH_SIZE_MAX);
                send_acknowledged(&client, &batch).await;
                acknowledged.push(batch);
            }
            nodes[victim] = Some(start(victim as u64 + 1));
        }
        let expected = replay(&accounts, acknowledged.iter());
        let acknowledged: Vec<Transfer> = acknowledged.into_iter().flatten().collect();
        let ids: Vec<u128> = acknowledged.iter().map(|t| t.id).collect();
        for address in &all {
            let reader = Client::connect_with(std::slice::from_ref(address), failover_options())
                .await
                .expect("connect to one node");
            let stored = lookup_transfers(&reader, &ids).await;
            for sent in &acknowledged {
                let found = stored.get(&sent.id).unwrap_or_else(|| {
                    panic!("{address}: acknowledged transfer {:#x} is missing", sent.id)
                });
                assert!(same_transfer(found, sent), "{address}: {found:?} != {sent:?}");
            }
            check_balances(&reader, &accounts, &expected)
                .await
                .unwrap_or_else(|e| panic!("{address}: {e}"));
        }
    });
    for node in nodes.into_iter().flatten() {
        let (clean, stderr) = node.stop();
        assert!(clean, "a node did not stop cleanly:\n{stderr}");
    }
}

/// Two shards on three real processes: about half the transfers cross shards (2PC,
/// coordinated by the debit account's shard). A random node is SIGKILLed every round
/// (coordinators and participants die mid-transaction) and restarted; replicas
/// checkpoint every 8 entries, so the protocol records travel through snapshots too.
/// Every transfer acknowledged `ok` must be at both of its shards, every one refused
/// must be at neither, nothing may stay reserved once the cluster is quiet, and
/// balances must equal a replay of what was acknowledged. A snapshot read across the
/// shards, taken while a node is down and transactions it took part in are in doubt,
/// conserves money.
///
/// Then the same with Paxos Commit (one after the other, not side by side: six node
/// processes on a small machine would mostly measure its scheduler): its acceptors are
/// the coordinator shard's replicas, their state in each node's log.
#[test]
fn killing_nodes_of_a_sharded_cluster_keeps_cross_shard_transfers_atomic() {
    kill_nodes_of_a_sharded_cluster("2pc");
    kill_nodes_of_a_sharded_cluster("paxos-commit");
}

/// A snapshot read of every account conserves money: per ledger, debits equal credits,
/// posted and pending.
async fn snapshot_conserves(client: &Client, accounts: &[Account]) {
    let ids: Vec<u128> = accounts.iter().map(|a| a.id).collect();
    let (at, seen) = client.read_snapshot(&ids, None).await.expect("read_snapshot");
    assert_eq!(seen.len(), ids.len(), "every account is in the snapshot at {at}");
    let mut sums: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for a in &seen {
        let sum = sums.entry(a.ledger).or_default();
        for (s, v) in sum.iter_mut().zip([
            a.debits_posted,
            a.credits_posted,
            a.debits_pending,
            a.credits_pending,
        ]) {
            *s += v;
        }
    }
    for (ledger, [dp, cp, dpend, cpend]) in sums {
        assert_eq!(
            (dp, dpend),
            (cp, cpend),
            "snapshot at {at}, ledger {ledger}: debits != credits"
        );
    }
}

fn kill_nodes_of_a_sharded_cluster(protocol: &str) {
    use settle_ledger::CreateTransferResult as R;
    const ROUNDS: usize = 4;
    const BATCHES_PER_PHASE: usize = 4;
    let seed = seed_from_env(DEFAULT_SEED ^ 0x5a4d);
    let _report = SeedReport { test: "cluster", seed };
    let mut rng = Rng::new(seed);
    let sharded = |addresses: &[SocketAddr]| {
        let mut config = settle_node::cluster::ClusterConfig::sharded(addresses, 2);
        config.protocol = Some(protocol.to_string());
        config
    };
    let cluster = LocalCluster::new(sharded, &["--checkpoint-entries", "8"]);
    let start = |id: u64| cluster.start(id);
    let mut nodes = cluster.start_all();
    let all = cluster.all();

    runtime().block_on(async {
        let client = Client::connect_with(&all, failover_options()).await.expect("connect");
        let accounts = accounts(&mut rng, ACCOUNTS);
        create_accounts(&client, &accounts).await;
        let mut ids = Ids::new();
        let (mut applied, mut refused) = (Vec::new(), Vec::new());
        let send = |batch: Vec<Transfer>, client: Client| async move {
            let results = client.create_transfers(&batch).await.expect("create_transfers");
            (batch, results)
        };
        for _ in 0..ROUNDS {
            let mut phase = Vec::new();
            for _ in 0..BATCHES_PER_PHASE {
                let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=50);
                phase.push(send(batch, client.clone()).await);
            }
            let victim = rng.index(nodes.len());
            let _stderr = nodes[victim].take().expect("running").kill();
            for _ in 0..BATCHES_PER_PHASE {
                let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=50);
                phase.push(send(batch, client.clone()).await);
            }
            snapshot_conserves(&client, &accounts).await;
            nodes[victim] = Some(start(victim as u64 + 1));
            for (batch, results) in phase {
                assert_eq!(results.len(), batch.len());
                for (transfer, result) in batch.into_iter().zip(results) {
                    match result {
                        R::Ok | R::Exists => applied.push(transfer),
                        // A transaction whose participant stayed unreachable past the
                        // vote timeout aborts, burning its id.
                        R::IdAlreadyFailed => refused.push(transfer),
                        other => panic!("transfer {:#x}: {other}", transfer.id),
                    }
                }
            }
        }
        // Quiet: every reservation is resolved (bounded wait for in-doubt ones).
        let account_ids: Vec<u128> = accounts.iter().map(|a| a.id).collect();
        let mut settled = false;
        for _ in 0..200 {
            let stored = client.lookup_accounts(&account_ids).await.expect("lookup_accounts");
            if stored.iter().all(|a| a.debits_pending == 0 && a.credits_pending == 0) {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(settled, "reservations still open after the cluster went quiet");
        println!("{protocol}: {} transfers applied, {} refused", applied.len(), refused.len());
        let expected = replay(&accounts, std::iter::once(&applied));
        let all_ids: Vec<u128> = applied.iter().chain(&refused).map(|t| t.id).collect();
        let stored = lookup_transfers(&client, &all_ids).await;
        for sent in &applied {
            let found = stored
                .get(&sent.id)
                .unwrap_or_else(|| panic!("acknowledged transfer {:#x} is missing", sent.id));
            assert!(same_transfer(found, sent), "{found:?} != {sent:?}");
        }
        for sent in &refused {
            assert!(!stored.contains_key(&sent.id), "refused transfer {:#x} exists", sent.id);
        }
        check_balances(&client, &accounts, &expected).await.unwrap_or_else(|e| panic!("{e}"));
    });
    for node in nodes.into_iter().flatten() {
        let (clean, stderr) = node.stop();
        assert!(clean, "a node did not stop cleanly:\n{stderr}");
    }
}
