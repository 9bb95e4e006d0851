//! A node whose disk refuses a write stops on its own, exits non-zero naming the write
//! that failed, and loses nothing: a restart serves every acknowledged transfer.
//!
//! The refusal is a file-size limit set on the running process (`prlimit`), which
//! fails the next log append with `EFBIG` the way a full disk fails it with `ENOSPC`
//! (the node catches `SIGXFSZ`, whose default would kill it). Seeded: `SETTLE_SEED`.

mod fault_support;

use std::path::Path;
use std::time::Duration;

use fault_support::{
    accounts, check_balances, create_accounts, lookup_transfers, patient_options, replay, runtime,
    same_transfer, seed_from_env, send_acknowledged, single_attempt, start, start_cluster_node,
    transfer_batch, Ids, Rng, SeedReport,
};

const DEFAULT_SEED: u64 = 0x5707_a6e0_f011_0001;

/// Rides out a cluster node's first election: many quick attempts, each bounded.
fn election_options() -> settle_client::ClientOptions {
    settle_client::ClientOptions { max_attempts: 100, ..patient_options() }
}

/// The size of the largest file under `dir`.
fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        largest = largest.max(if metadata.is_dir() {
            largest_file(&entry.path())
        } else {
            metadata.len()
        });
    }
    largest
}

#[test]
fn a_refused_write_stops_the_node_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    refused_write(
        "a_refused_write_stops_the_node_and_loses_nothing",
        || start(dir.path(), &[]).serving(),
        dir.path(),
        "writing or syncing the log failed",
    );
}

#[test]
fn a_refused_write_stops_a_cluster_node_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = dir.path().join("cluster.toml");
    let cluster = settle_node::cluster::ClusterConfig::single_shard(&[address]);
    std::fs::write(&config, cluster.to_toml()).unwrap();
    let data_dir = dir.path().join("node-1");
    refused_write(
        "a_refused_write_stops_a_cluster_node_and_loses_nothing",
        || start_cluster_node(&config, 1, &data_dir, &[]).serving(),
        &data_dir,
        "the engine stopped",
    );
}

/// Acknowledged batches, then a file-size limit on the node (`data_dir` is its data
/// directory), then one more batch: refused; the node must exit non-zero with
/// `message` and `File too large` on stderr, and serve everything acknowledged after a
/// restart.
fn refused_write(
    test: &'static str,
    start: impl Fn() -> fault_support::NodeProcess,
    data_dir: &Path,
    message: &str,
) {
    let seed = seed_from_env(DEFAULT_SEED);
    let _report = SeedReport { test, seed };
    let mut rng = Rng::new(seed);
    let mut ids = Ids::new();
    let accounts = accounts(&mut rng, 8);
    let node = start();
    let acknowledged = runtime().block_on(async {
        let client = node.connect(election_options()).await;
        create_accounts(&client, &accounts).await;
        let mut acknowledged = Vec::new();
        for _ in 0..4 {
            let batch = transfer_batch(&mut rng, &mut ids, &accounts, 20..=60);
            send_acknowledged(&client, &batch).await;
            acknowledged.push(batch);
        }
        // From now on no file of the node may grow: the next log append fails.
        let limit = largest_file(data_dir);
        let pid = rustix::process::Pid::from_raw(node.pid() as i32).unwrap();
        let unlimited = rustix::process::Rlimit { current: Some(limit), maximum: None };
        rustix::process::prlimit(Some(pid), rustix::process::Resource::Fsize, unlimited)
            .expect("set the node's file-size limit");
        let refused = transfer_batch(&mut rng, &mut ids, &accounts, 20..=60);
        let client = node.connect(single_attempt()).await;
        let answer = client.create_transfers(&refused).await;
        assert!(answer.is_err(), "a batch the log could not hold was acknowledged: {answer:?}");
        acknowledged
    });

    let (status, stderr) = node.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "the node exited 0 after a failed write\n{stderr}");
    assert!(
        stderr.contains(message) && stderr.contains("File too large"),
        "the failed write is not named\n{stderr}"
    );

    let node = start();
    runtime().block_on(async {
        let client = node.connect(election_options()).await;
        let sent: Vec<_> = acknowledged.iter().flatten().collect();
        let ids: Vec<u128> = sent.iter().map(|t| t.id).collect();
        let stored = lookup_transfers(&client, &ids).await;
        for transfer in sent {
            let found = stored.get(&transfer.id);
            assert!(
                found.is_some_and(|s| same_transfer(s, transfer)),
                "acknowledged transfer {:#x} is missing or changed: {found:?}",
                transfer.id
            );
        }
        check_balances(&client, &accounts, &replay(&accounts, &acknowledged)).await.unwrap();
    });
}
