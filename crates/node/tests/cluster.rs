//! Three cluster nodes in one process over real loopback sockets: they elect a leader,
//! followers forward writes to it (and, asked for a shard by name, refuse with the
//! leader's address in `settle-leader`), reads are linearizable on every node,
//! transfers and chains across shards commit atomically, a stopped node's data
//! survives its restart, and bad cluster configurations are refused.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::Ordering;

use settle_ledger::{Account, CreateTransferResult, Transfer};
use settle_node::cluster::{ClusterConfig, ClusterNode, ClusterOptions};
use settle_node::NodeError;
use settle_proto::convert;
use settle_proto::pb::{self, ledger_client::LedgerClient};
use tonic::transport::Channel;

fn addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn options(cluster: &ClusterConfig, node_id: u64, dir: &Path) -> ClusterOptions {
    ClusterOptions {
        cluster: cluster.clone(),
        node_id,
        data_dir: dir.join(format!("node-{node_id}")),
        fsync: true,
        tuning: Default::default(),
    }
}

async fn client(address: SocketAddr) -> LedgerClient<Channel> {
    LedgerClient::connect(format!("http://{address}")).await.unwrap()
}

/// The address after `current`, for when `current` does not answer.
fn next(addresses: &[SocketAddr], current: SocketAddr) -> SocketAddr {
    let index = addresses.iter().position(|&a| a == current).unwrap_or(0);
    addresses[(index + 1) % addresses.len()]
}

/// Sends `transfers` to whichever node answers, following redirects; returns the
/// results and the leader's address. Bounded: a cluster that never elects fails here.
async fn create_transfers_anywhere(
    addresses: &[SocketAddr],
    transfers: &[Transfer],
) -> (Vec<CreateTransferResult>, SocketAddr) {
    let mut target = addresses[0];
    for _ in 0..500 {
        let Ok(mut grpc) = LedgerClient::connect(format!("http://{target}")).await else {
            target = next(addresses, target);
            continue;
        };
        match grpc.create_transfers(convert::transfers_request(transfers)).await {
            Ok(reply) => {
                let results = convert::transfer_results_from_pb(&reply.get_ref().results).unwrap();
                return (results, target);
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                match status.metadata().get("settle-leader") {
                    Some(leader) => target = leader.to_str().unwrap().parse().unwrap(),
                    // No leader known yet: poll again shortly (an election takes a few
                    // hundred ms), bounded by the attempt count.
                    None => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }
    panic!("no leader accepted the write");
}

async fn create_accounts_anywhere(addresses: &[SocketAddr], ids: &[u128]) {
    let accounts: Vec<Account> =
        ids.iter().map(|&id| Account { id, ledger: 1, code: 1, ..Default::default() }).collect();
    let request = pb::CreateAccountsRequest {
        accounts: accounts.iter().map(pb::Account::from).collect(),
        ..Default::default()
    };
    let mut target = addresses[0];
    for _ in 0..500 {
        let Ok(mut grpc) = LedgerClient::connect(format!("http://{target}")).await else {
            target = next(addresses, target);
            continue;
        };
        match grpc.create_accounts(request.clone()).await {
            Ok(_) => return,
            Err(status) => match status.metadata().get("settle-leader") {
                Some(leader) => target = leader.to_str().unwrap().parse().unwrap(),
                None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            },
        }
    }
    panic!("no leader accepted the accounts");
}

/// Looks up at `address` itself; retried while that node knows no leader yet (just
/// after it started), bounded.
async fn lookup_accounts(address: SocketAddr, ids: &[u128]) -> Vec<Account> {
    let request = pb::LookupRequest { ids: convert::ids_to_pb(ids) };
    let mut last = None;
    for _ in 0..500 {
        match client(address).await.lookup_accounts(request.clone()).await {
            Ok(reply) => {
                return reply
                    .get_ref()
                    .accounts
                    .iter()
                    .map(|a| Account::try_from(a).unwrap())
                    .collect()
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                last = Some(status);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(status) => panic!("lookup at {address}: {status:?}"),
        }
    }
    panic!("{address} never answered the lookup; last: {last:?}");
}

fn transfer(id: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 10,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_replicates_redirects_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(3);
    let cluster = ClusterConfig::single_shard(&addresses);
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(ClusterNode::start(options(&cluster, id, dir.path())).await.unwrap()));
    }
    create_accounts_anywhere(&addresses, &[1, 2]).await;
    let (results, _) = create_transfers_anywhere(&addresses, &[transfer(10)]).await;
    assert_eq!(results, vec![CreateTransferResult::Ok]);

    // Asked for the shard itself (`settle-shard`, as routers forward), only the leader
    // takes a write; the followers refuse it and name the leader.
    let (mut leader, mut hints) = (None, Vec::new());
    for &address in &addresses {
        let mut request = tonic::Request::new(convert::transfers_request(&[transfer(11)]));
        request.metadata_mut().insert("settle-shard", "1".parse().unwrap());
        match client(address).await.create_transfers(request).await {
            Ok(_) => leader = Some(address),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                let hint = status.metadata().get("settle-leader").expect("a leader hint");
                hints.push(hint.to_str().unwrap().to_string());
            }
        }
    }
    let leader = leader.expect("the leader took the write");
    assert_eq!(hints, vec![leader.to_string(); 2]);
    // Asked plainly, a follower's router forwards to the leader (which has it already),
    // and its reply names the leader, for the client's next requests; the leader's own
    // reply names nobody.
    let follower = *addresses.iter().find(|&&a| a != leader).unwrap();
    let reply = client(follower)
        .await
        .create_transfers(convert::transfers_request(&[transfer(11)]))
        .await
        .unwrap();
    let results = convert::transfer_results_from_pb(&reply.get_ref().results).unwrap();
    assert_eq!(results, vec![CreateTransferResult::Exists]);
    let hint = reply.metadata().get("settle-leader").map(|h| h.to_str().unwrap().to_string());
    assert_eq!(hint, Some(leader.to_string()));
    let reply = client(leader)
        .await
        .create_transfers(convert::transfers_request(&[transfer(11)]))
        .await
        .unwrap();
    assert!(reply.metadata().get("settle-leader").is_none());

    // Every node reads the acknowledged writes (ReadIndex, also on followers).
    for &address in &addresses {
        let accounts = lookup_accounts(address, &[1, 2]).await;
        assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (20, 20), "{address}");
    }

    // A follower stops cleanly; the other two keep committing; it restarts and catches up.
    let index = addresses.iter().position(|&a| a == follower).unwrap();
    nodes[index].take().unwrap().shutdown().await.unwrap();
    let (results, _) = create_transfers_anywhere(&addresses, &[transfer(12)]).await;
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    let id = index as u64 + 1;
    nodes[index] = Some(ClusterNode::start(options(&cluster, id, dir.path())).await.unwrap());
    let accounts = lookup_accounts(follower, &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (30, 30));

    // Resending an applied transfer answers `exists`: nothing is applied twice.
    let (results, _) = create_transfers_anywhere(&addresses, &[transfer(12)]).await;
    assert_eq!(results, vec![CreateTransferResult::Exists]);

    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_node_missing_from_the_config_or_with_a_foreign_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(1);
    let cluster = ClusterConfig::single_shard(&addresses);
    let error = ClusterNode::start(options(&cluster, 9, dir.path())).await.err().unwrap();
    assert!(matches!(&error, NodeError::Config(m) if m.contains("node 9")), "{error}");

    // A log holding shard 1 under a config that gives this node shard 2 only.
    let node = ClusterNode::start(options(&cluster, 1, dir.path())).await.unwrap();
    create_accounts_anywhere(&addresses, &[1]).await;
    node.shutdown().await.unwrap();
    let mut other = cluster.clone();
    other.shards[0].id = 2;
    let error = ClusterNode::start(options(&other, 1, dir.path())).await.err().unwrap();
    assert!(matches!(&error, NodeError::Config(m) if m.contains("shard 1")), "{error}");
}

/// Sends a membership change to shard 1's leader, following redirects.
/// The shard map `address` serves once it knows version `version` or a later one
/// (leaders report their replicas every second; bounded: a map that never reaches the
/// version fails here). Returns (version, shard → replicas).
async fn shard_map_at(address: SocketAddr, version: u64) -> (u64, Vec<(u64, Vec<u64>)>) {
    let mut last = None;
    for _ in 0..300 {
        match client(address).await.get_shard_map(pb::ShardMapRequest {}).await {
            Ok(reply) if reply.get_ref().version >= version => {
                let reply = reply.into_inner();
                let shards = reply.shards.into_iter().map(|s| (s.shard, s.replicas)).collect();
                return (reply.version, shards);
            }
            Ok(reply) => last = Some(format!("version {}", reply.get_ref().version)),
            Err(status) => last = Some(format!("{status:?}")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{address} never served shard map version {version}: {last:?}");
}

async fn change_replicas(addresses: &[SocketAddr], node: u64, remove: bool) -> Vec<u64> {
    change_replicas_request(addresses, pb::ChangeReplicasRequest { shard: 1, node, remove }).await
}

/// Sends `request` to whichever node leads its shard, following redirects.
async fn change_replicas_request(
    addresses: &[SocketAddr],
    request: pb::ChangeReplicasRequest,
) -> Vec<u64> {
    use settle_proto::pb::admin_client::AdminClient;
    let mut target = addresses[0];
    for _ in 0..500 {
        let Ok(mut admin) = AdminClient::connect(format!("http://{target}")).await else {
            target = next(addresses, target);
            continue;
        };
        match admin.change_replicas(request).await {
            Ok(reply) => return reply.into_inner().voters,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                match status.metadata().get("settle-leader") {
                    Some(leader) => target = leader.to_str().unwrap().parse().unwrap(),
                    // No leader known there (or no replica of the shard): try the next
                    // node after a moment.
                    None => {
                        target = next(addresses, target);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }
    panic!("the membership change {request:?} never went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_added_and_another_removed_through_joint_consensus() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(4);
    // Four nodes; the shard starts on the first three.
    let mut cluster = ClusterConfig::single_shard(&addresses);
    cluster.shards[0].replicas = vec![1, 2, 3];
    let mut nodes = Vec::new();
    for id in 1..=4 {
        nodes.push(ClusterNode::start(options(&cluster, id, dir.path())).await.unwrap());
    }
    let first_three = &addresses[..3];
    create_accounts_anywhere(first_three, &[1, 2]).await;
    let (results, _) = create_transfers_anywhere(first_three, &[transfer(10)]).await;
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    // The shard map, written by the metadata shard's leader from the config, is served
    // by every node (node 4 holds no replica: it asks one that does).
    for &address in &addresses {
        assert_eq!(shard_map_at(address, 1).await, (1, vec![(1, vec![1, 2, 3])]));
    }

    assert_eq!(change_replicas(first_three, 4, false).await, vec![1, 2, 3, 4]);
    // The change reaches the replicated map as its next version, everywhere.
    for &address in &addresses {
        assert_eq!(shard_map_at(address, 2).await, (2, vec![(1, vec![1, 2, 3, 4])]));
    }
    // Node 4 caught up: it answers a linearizable read from its own state.
    let accounts = lookup_accounts(addresses[3], &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (10, 10));

    assert_eq!(change_replicas(&addresses, 1, true).await, vec![2, 3, 4]);
    // The shard keeps committing without node 1, even once node 1 is gone.
    let node_one = nodes.remove(0);
    node_one.shutdown().await.unwrap();
    let (results, _) = create_transfers_anywhere(&addresses[1..], &[transfer(11)]).await;
    assert_eq!(results, vec![CreateTransferResult::Ok]);
    let accounts = lookup_accounts(addresses[3], &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (20, 20));
    assert_eq!(shard_map_at(addresses[3], 3).await, (3, vec![(1, vec![2, 3, 4])]));

    // Node 4 restarts with a file that does not list it for the shard: its log does.
    let node_four = nodes.pop().unwrap();
    node_four.shutdown().await.unwrap();
    nodes.push(ClusterNode::start(options(&cluster, 4, dir.path())).await.unwrap());
    let accounts = lookup_accounts(addresses[3], &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (20, 20));
    // ...and so does the map: the config's version 1 does not come back.
    assert_eq!(shard_map_at(addresses[3], 1).await, (3, vec![(1, vec![2, 3, 4])]));
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_log_rewrites_keep_everything_across_restarts() {
    use settle_node::cluster::Tuning;
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(3);
    let cluster = ClusterConfig::single_shard(&addresses);
    // Checkpoint every 4 entries or 2 KiB of them (a few transfers); rewrite the log
    // from 16 KiB on.
    let tuning =
        Tuning { checkpoint_entries: 4, checkpoint_bytes: 2 << 10, log_rewrite_bytes: 16 << 10 };
    let start = |id: u64| {
        ClusterNode::start(ClusterOptions { tuning, ..options(&cluster, id, dir.path()) })
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Some(start(id).await.unwrap()));
    }
    create_accounts_anywhere(&addresses, &[1, 2]).await;
    // A follower is down while the others checkpoint and compact past it: it comes
    // back through a snapshot.
    let (_, leader) = create_transfers_anywhere(&addresses, &[transfer(1)]).await;
    let follower = addresses.iter().position(|&a| a != leader).unwrap();
    nodes[follower].take().unwrap().shutdown().await.unwrap();
    // Small batches, then large ones: past 8192 transfers the transfers files hold
    // chunks, which checkpoints refer to instead of copying, and which the snapshot
    // sent to the follower must carry.
    let sizes: Vec<u128> = [vec![20; 60], vec![3000; 3]].concat();
    let mut next = 1_000;
    for &size in &sizes {
        let transfers: Vec<Transfer> = (next..next + size).map(transfer).collect();
        next += size;
        let (results, _) = create_transfers_anywhere(&addresses, &transfers).await;
        assert!(results.iter().all(|r| *r == CreateTransferResult::Ok), "{results:?}");
    }
    let total = 10 * (1 + sizes.iter().sum::<u128>());
    nodes[follower] = Some(start(follower as u64 + 1).await.unwrap());
    let accounts = lookup_accounts(addresses[follower], &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (total, total));
    // It installed the snapshot into a new generation of its transfers file, and goes
    // on checkpointing there; the old generation's file goes once the install's record
    // is durable (the restart below starts from a checkpoint of a later generation).
    for _ in 0..8 {
        let transfers = [transfer(next)];
        next += 1;
        let (results, _) = create_transfers_anywhere(&addresses, &transfers).await;
        assert!(results.iter().all(|r| *r == CreateTransferResult::Ok), "{results:?}");
    }
    let total = total + 10 * 8;
    let accounts = lookup_accounts(addresses[follower], &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (total, total));
    let follower_dir = dir.path().join(format!("node-{}", follower + 1));
    let generations: Vec<u64> = std::fs::read_dir(&follower_dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap().file_name().to_str()?.strip_prefix("shard-1.records.")?.parse().ok()
        })
        .collect();
    // (With a checkpoint every 4 entries and 1 kept, it may install a few snapshots; the
    // file of the one before the latest stays until that one's record is durable.)
    assert!(!generations.contains(&0) && (1..=2).contains(&generations.len()), "{generations:?}");

    // The nodes that stayed up rewrote their logs from memory.
    let mut latest = Vec::new();
    for (id, node) in nodes.iter().enumerate().filter(|(i, _)| *i != follower) {
        let rewrites = node.as_ref().unwrap().stats().log_rewrites.load(Ordering::Relaxed);
        assert!(rewrites > 0, "node {} never rewrote its log", id + 1);
        // Snapshots live in their own files; older ones are deleted once a newer
        // checkpoint is durable (one more may be in flight).
        let mut files: Vec<(u64, u64)> =
            std::fs::read_dir(dir.path().join(format!("node-{}/snapshots", id + 1)))
                .unwrap()
                .map(|entry| entry.unwrap())
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().unwrap();
                    let index = name.strip_prefix("1-")?.strip_suffix(".snap")?.parse().ok()?;
                    Some((index, entry.metadata().unwrap().len()))
                })
                .collect();
        assert!((1..=2).contains(&files.len()), "node {}: {files:?} snapshot files", id + 1);
        files.sort_unstable();
        latest.push(files[files.len() - 1]);
    }
    // A checkpoint refers to the 8,192 transfers already in the file (24 bytes per
    // chunk of 64) and copies the 2,009 after them (the tail in memory): about half of
    // what copying all 10,201 takes (about 20 bytes each). At least the leader's latest
    // is one (a follower that fell behind on a busy machine may hold a snapshot it
    // installed, which is whole).
    assert!(latest.iter().any(|&(_, bytes)| bytes < 100_000), "{latest:?} (index, bytes)");
    // Every node restarts from its checkpoint and rewritten log with everything.
    for node in nodes.iter_mut() {
        node.take().unwrap().shutdown().await.unwrap();
    }
    for id in 1..=3 {
        nodes[id as usize - 1] = Some(start(id).await.unwrap());
    }
    for &address in &addresses {
        let accounts = lookup_accounts(address, &[1, 2]).await;
        assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (total, total));
    }
    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
}

/// A checkpoint refers to the chunks already in the transfers file: a start adopts them
/// after verifying each. A damaged chunk refuses the start, naming the file and the
/// chunk, and changes nothing; bytes after the referred chunks (written after the
/// checkpoint) are cut, and what they held comes back from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_verifies_the_transfers_file_a_checkpoint_refers_to() {
    use settle_node::cluster::Tuning;
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(1);
    let cluster = ClusterConfig::single_shard(&addresses);
    let tuning =
        Tuning { checkpoint_entries: 2, checkpoint_bytes: 1 << 20, log_rewrite_bytes: 1 << 30 };
    let start =
        || ClusterNode::start(ClusterOptions { tuning, ..options(&cluster, 1, dir.path()) });
    let node = start().await.unwrap();
    create_accounts_anywhere(&addresses, &[1, 2]).await;
    // 9,000 transfers: 8,192 of them go to the file (128 chunks), then checkpoints.
    let mut next = 1;
    for size in [3000, 3000, 3000, 1, 1, 1, 1] {
        let transfers: Vec<Transfer> = (next..next + size).map(transfer).collect();
        next += size;
        let (results, _) = create_transfers_anywhere(&addresses, &transfers).await;
        assert!(results.iter().all(|r| *r == CreateTransferResult::Ok), "{results:?}");
    }
    let total = 10 * (next - 1);
    node.shutdown().await.unwrap();
    let file = dir.path().join("node-1/shard-1.records.0");
    let good = std::fs::read(&file).unwrap();
    assert!(good.len() > 100_000, "{} bytes in the transfers file", good.len());
    // The checkpoints left (the one the log names, maybe one older) refer to that file.
    for entry in std::fs::read_dir(dir.path().join("node-1/snapshots")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert_eq!(settle_ledger::store::transfers_file_tag(&bytes).unwrap(), Some(0));
    }

    // A flipped byte in the first chunk: refused, and the file is left as it was.
    let mut damaged = good.clone();
    damaged[10] ^= 0x20;
    std::fs::write(&file, &damaged).unwrap();
    let error = start().await.err().expect("a damaged chunk refuses the start").to_string();
    assert!(error.contains("shard-1.records.0") && error.contains("chunk 0"), "{error}");
    assert_eq!(std::fs::read(&file).unwrap(), damaged);

    // Garbage after the chunks is what a crash leaves of writes after the checkpoint:
    // the start leaves it, and new records overwrite it.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0xab; 5000]);
    std::fs::write(&file, &longer).unwrap();
    // A file an older build left (its checkpoints held every record) goes at start.
    let legacy = dir.path().join("node-1/shard-1.transfers.0");
    std::fs::write(&legacy, b"left by an older build").unwrap();
    let node = start().await.unwrap();
    assert!(!legacy.exists());
    let accounts = lookup_accounts(addresses[0], &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (total, total));
    for batch in 0..3 {
        let transfers: Vec<Transfer> =
            (next + batch * 3000..next + (batch + 1) * 3000).map(transfer).collect();
        let (results, _) = create_transfers_anywhere(&addresses, &transfers).await;
        assert!(results.iter().all(|r| *r == CreateTransferResult::Ok), "{results:?}");
    }
    node.shutdown().await.unwrap();
    let node = start().await.unwrap();
    let accounts = lookup_accounts(addresses[0], &[1, 2]).await;
    let total = total + 10 * 9000;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (total, total));
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_process_holds_replicas_of_several_shards() {
    use settle_node::cluster::config::ShardEntry;
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(3);
    let mut cluster = ClusterConfig::single_shard(&addresses);
    // Shard 2 on the same three nodes, shard 3 on two of them: every node holds two or
    // three groups, all writing to its one log.
    cluster.shards.push(ShardEntry { id: 2, replicas: vec![1, 2, 3] });
    cluster.shards.push(ShardEntry { id: 3, replicas: vec![2, 3] });
    let start = |id: u64| ClusterNode::start(options(&cluster, id, dir.path()));
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id).await.unwrap());
    }
    create_accounts_anywhere(&addresses, &[1, 2]).await;
    // Each group elects a leader and commits: a membership request is a Raft entry.
    let voters = |shard: u64, expected: Vec<u64>| {
        let addresses = addresses.clone();
        async move {
            let request = pb::ChangeReplicasRequest { shard, node: expected[0], remove: false };
            assert_eq!(change_replicas_request(&addresses, request).await, expected);
        }
    };
    voters(2, vec![1, 2, 3]).await;
    voters(3, vec![2, 3]).await;
    // After a restart of every node, every group is back, from the one shared log.
    for node in nodes.drain(..) {
        node.shutdown().await.unwrap();
    }
    for id in 1..=3 {
        nodes.push(start(id).await.unwrap());
    }
    voters(3, vec![2, 3]).await;
    let accounts = lookup_accounts(addresses[0], &[1, 2]).await;
    assert_eq!(accounts.len(), 2);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_is_cut_and_a_corrupt_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(1);
    let cluster = ClusterConfig::single_shard(&addresses);
    let node = ClusterNode::start(options(&cluster, 1, dir.path())).await.unwrap();
    create_accounts_anywhere(&addresses, &[1, 2]).await;
    for id in 0..20 {
        create_transfers_anywhere(&addresses, &[transfer(100 + id)]).await;
    }
    node.shutdown().await.unwrap();
    let log = dir.path().join("node-1/raft.log");
    let bytes = std::fs::read(&log).unwrap();

    // A torn last write: the start cuts it and serves what was acknowledged.
    std::fs::write(&log, [&bytes[..], &[0xAB; 37][..]].concat()).unwrap();
    let node = ClusterNode::start(options(&cluster, 1, dir.path())).await.unwrap();
    let accounts = lookup_accounts(addresses[0], &[1, 2]).await;
    assert_eq!((accounts[0].debits_posted, accounts[1].credits_posted), (200, 200));
    node.shutdown().await.unwrap();
    // The torn tail was cut (and the node's later records written in its place).
    let after = std::fs::read(&log).unwrap();
    assert_eq!(&after[..bytes.len()], &bytes[..]);
    assert!(!after[bytes.len()..].starts_with(&[0xAB; 37]), "the torn tail is still there");

    // A flipped byte in the middle: the start is refused, naming the file.
    let mut damaged = bytes.clone();
    damaged[bytes.len() / 2] ^= 0x10;
    std::fs::write(&log, &damaged).unwrap();
    let error = ClusterNode::start(options(&cluster, 1, dir.path())).await.err().unwrap();
    assert!(matches!(&error, NodeError::CorruptLog { .. }), "{error}");
    assert!(error.to_string().contains("raft.log"), "{error}");
    assert_eq!(std::fs::read(&log).unwrap(), damaged, "a refused start changes nothing");
}

/// The nodes' view of `ids`, through any node (the router finds each account's shard).
async fn balances(addresses: &[SocketAddr], ids: &[u128]) -> Vec<Account> {
    lookup_accounts(addresses[1 % addresses.len()], ids).await
}

/// `ids` once no reservation is open on them. A reply means the outcome is decided and
/// durable; each participant carries it out a moment later, and a plain read in
/// between sees the reservation (bounded wait).
async fn settled_balances(addresses: &[SocketAddr], ids: &[u128]) -> Vec<Account> {
    for _ in 0..400 {
        let accounts = balances(addresses, ids).await;
        if accounts.iter().all(|a| a.debits_pending == 0 && a.credits_pending == 0) {
            return accounts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("reservations on {ids:?} stayed open");
}

async fn create_transfers_with(
    address: SocketAddr,
    transfers: &[Transfer],
    protocol: Option<&str>,
) -> Result<Vec<CreateTransferResult>, tonic::Status> {
    let mut request = tonic::Request::new(convert::transfers_request(transfers));
    if let Some(protocol) = protocol {
        request.metadata_mut().insert("settle-protocol", protocol.parse().unwrap());
    }
    let reply = client(address).await.create_transfers(request).await?;
    Ok(convert::transfer_results_from_pb(&reply.get_ref().results).unwrap())
}

async fn read_snapshot(
    address: SocketAddr,
    ids: &[u128],
    timestamp: u64,
) -> Result<(u64, Vec<Account>), tonic::Status> {
    let request = pb::SnapshotRequest { ids: convert::ids_to_pb(ids), timestamp };
    let reply = client(address).await.read_snapshot(request).await?.into_inner();
    let accounts = reply.accounts.iter().map(|a| Account::try_from(a).unwrap()).collect();
    Ok((reply.timestamp, accounts))
}

/// Snapshot reads through every node: they see the settled balances, conserve money
/// across shards, move forward in time, and refuse to go back in time.
async fn snapshot_reads_across_shards(addresses: &[SocketAddr], ids: &[u128]) {
    let settled = settled_balances(addresses, ids).await;
    let mut last = 0;
    for &address in addresses {
        let (at, accounts) = read_snapshot(address, ids, 0).await.unwrap();
        assert!(at > last, "snapshots move forward: {at} after {last}");
        last = at;
        assert_eq!(accounts, settled, "a snapshot of settled accounts is what they hold");
    }
    // At a chosen timestamp: ahead of every clock, fine; behind one, refused with it.
    let (at, accounts) = read_snapshot(addresses[0], ids, last + 1_000_000).await.unwrap();
    assert_eq!((at, accounts), (last + 1_000_000, settled));
    let refused = read_snapshot(addresses[1], ids, last).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let clock: u64 =
        refused.metadata().get("settle-clock").unwrap().to_str().unwrap().parse().unwrap();
    assert!(clock >= last + 1_000_000, "the refusal names the clock: {clock}");
    let ahead = last + 2_000_000_000;
    let far = read_snapshot(addresses[2 % addresses.len()], ids, ahead).await.unwrap_err();
    assert_eq!(far.code(), tonic::Code::InvalidArgument, "{far:?}");
}

/// Retries while the cluster elects its leaders (bounded).
async fn create_transfers_retrying(
    addresses: &[SocketAddr],
    transfers: &[Transfer],
) -> Vec<CreateTransferResult> {
    for attempt in 0..500 {
        match create_transfers_with(addresses[attempt % addresses.len()], transfers, None).await {
            Ok(results) => return results,
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    panic!("the cluster never took the transfers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_and_chains_across_shards_commit_atomically() {
    use settle_commit::placement::shard_of;
    use settle_ledger::{AccountFlags, TransferFlags};
    use CreateTransferResult as R;
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(3);
    let cluster = ClusterConfig::sharded(&addresses, 2);
    let start = |id: u64| ClusterNode::start(options(&cluster, id, dir.path()));
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(id).await.unwrap());
    }
    // Accounts on both shards; `limited` may not go below zero.
    let on = |shard: u32| (1..100u128).filter(move |&id| shard_of(id, 2) == shard);
    let (a, c) = (on(0).next().unwrap(), on(0).nth(1).unwrap());
    let (b, limited) = (on(1).next().unwrap(), on(1).nth(1).unwrap());
    let mut accounts: Vec<Account> = [a, b, c]
        .iter()
        .map(|&id| Account { id, ledger: 1, code: 1, ..Default::default() })
        .collect();
    accounts.push(Account {
        id: limited,
        ledger: 1,
        code: 1,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        ..Default::default()
    });
    let request = convert::accounts_request(&accounts);
    for attempt in 0..500 {
        match client(addresses[attempt % 3]).await.create_accounts(request.clone()).await {
            Ok(reply) => {
                // An attempt that reached one shard before the other had a leader
                // created part of the batch: the retry finds those.
                use settle_ledger::CreateAccountResult as A;
                let results = convert::account_results_from_pb(&reply.get_ref().results).unwrap();
                assert!(results.iter().all(|r| matches!(r, A::Ok | A::Exists)), "{results:?}");
                break;
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let t = |id: u128, debit: u128, credit: u128, amount: u128, flags: TransferFlags| Transfer {
        id,
        debit_account_id: debit,
        credit_account_id: credit,
        amount,
        ledger: 1,
        code: 1,
        flags,
        ..Default::default()
    };
    let none = TransferFlags::empty();
    // One batch: a cross-shard transfer, a local one, and a chain across both shards
    // whose second transfer fails (the limited account has no credits): the chain
    // leaves no trace; then a pending transfer across shards.
    let batch = [
        t(100, a, b, 10, none),
        t(101, a, c, 5, none),
        t(102, b, c, 7, TransferFlags::LINKED),
        t(103, limited, a, 1, none),
        t(104, b, a, 20, TransferFlags::PENDING),
    ];
    let results = create_transfers_retrying(&addresses, &batch).await;
    assert_eq!(results, vec![R::Ok, R::Ok, R::LinkedEventFailed, R::ExceedsCredits, R::Ok]);
    // Post part of the pending transfer, naming only it: the router finds its accounts.
    let post =
        Transfer { pending_id: 104, ..t(105, 0, 0, 15, TransferFlags::POST_PENDING_TRANSFER) };
    assert_eq!(create_transfers_retrying(&addresses, &[post]).await, vec![R::Ok]);
    // A chain across shards that succeeds: both transfers land. (Within a cross-shard
    // chain a transfer cannot spend what an earlier one of the chain credits: both are
    // only reserved until the decision.)
    let chain = [t(106, c, limited, 3, TransferFlags::LINKED), t(107, b, a, 3, none)];
    assert_eq!(create_transfers_retrying(&addresses, &chain).await, vec![R::Ok, R::Ok]);
    // Resubmitting is idempotent.
    assert_eq!(create_transfers_retrying(&addresses, &batch[..1]).await, vec![R::Exists]);

    // Paxos Commit, chosen per request: its acceptors are the coordinator shard's
    // replicas, their state in each node's log.
    let paxos =
        [t(111, a, b, 2, none), t(112, b, c, 2, TransferFlags::LINKED), t(113, c, a, 2, none)];
    let mut paxos_results = None;
    for attempt in 0..500 {
        match create_transfers_with(addresses[attempt % 3], &paxos, Some("paxos-commit")).await {
            Ok(results) => {
                paxos_results = Some(results);
                break;
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
    let paxos_results = paxos_results.expect("paxos-commit took the transfers");
    assert!(paxos_results.iter().all(|r| matches!(r, R::Ok | R::Exists)), "{paxos_results:?}");

    let check = |accounts: Vec<Account>| {
        let by_id = |id: u128| *accounts.iter().find(|x| x.id == id).unwrap();
        let (a, b, c, l) = (by_id(a), by_id(b), by_id(c), by_id(limited));
        assert_eq!((a.debits_posted, a.credits_posted), (17, 20), "{a:?}");
        assert_eq!((b.debits_posted, b.credits_posted), (20, 12), "{b:?}");
        assert_eq!((c.debits_posted, c.credits_posted), (5, 7), "{c:?}");
        assert_eq!((l.debits_posted, l.credits_posted), (0, 3), "{l:?}");
        assert!(accounts.iter().all(|x| x.debits_pending == 0 && x.credits_pending == 0));
        let debits: u128 = accounts.iter().map(|x| x.debits_posted).sum();
        let credits: u128 = accounts.iter().map(|x| x.credits_posted).sum();
        assert_eq!(debits, credits, "conservation across shards");
    };
    check(settled_balances(&addresses, &[a, b, c, limited]).await);
    snapshot_reads_across_shards(&addresses, &[a, b, c, limited]).await;
    // The transfers are found through any node, at both of their shards.
    let request = pb::LookupRequest { ids: convert::ids_to_pb(&[100, 102, 105, 107]) };
    let found = client(addresses[2]).await.lookup_transfers(request).await.unwrap();
    let ids: Vec<u128> =
        found.get_ref().transfers.iter().map(|x| Transfer::try_from(x).unwrap().id).collect();
    assert_eq!(ids, vec![100, 105, 107]);

    // A pending transfer across shards with a 1 s timeout expires at both shards.
    let expiring = Transfer { timeout: 1, ..t(109, a, b, 4, TransferFlags::PENDING) };
    assert_eq!(create_transfers_retrying(&addresses, &[expiring]).await, vec![R::Ok]);
    let mut released = false;
    for _ in 0..200 {
        let now = balances(&addresses, &[a, b]).await;
        if now.iter().all(|x| x.debits_pending == 0 && x.credits_pending == 0) {
            released = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(released, "the expired reservation was released at both shards");
    let late =
        Transfer { pending_id: 109, ..t(110, a, b, 4, TransferFlags::POST_PENDING_TRANSFER) };
    assert_eq!(
        create_transfers_retrying(&addresses, &[late]).await,
        vec![R::PendingTransferExpired]
    );

    // Protocols a cluster does not run are refused before anything happens.
    let refused = create_transfers_with(addresses[0], &[t(108, a, b, 1, none)], Some("3pc")).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::FailedPrecondition);

    // Everything survives a restart of every node (records and ledgers from the logs).
    for node in nodes.drain(..) {
        node.shutdown().await.unwrap();
    }
    for id in 1..=3 {
        nodes.push(start(id).await.unwrap());
    }
    check(settled_balances(&addresses, &[a, b, c, limited]).await);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// A hostile or broken peer: undecodable messages are refused, and well-formed protocol
/// messages that contradict the state (decisions for transactions never prepared, a
/// commit of more than was reserved, votes from acceptors that do not exist, messages
/// for shards that do not exist) change nothing. The node keeps serving, and its
/// balances stay what the honest requests made them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_messages_change_nothing() {
    use settle_commit::message::{Accepted, Body, Message};
    use settle_commit::placement::shard_of;
    use settle_commit::{codec, Commit, Outcome, Protocol, Txn, Vote};
    use settle_proto::pb::peer_client::PeerClient;
    use CreateTransferResult as R;
    let dir = tempfile::tempdir().unwrap();
    let addresses = addresses(1);
    let cluster = ClusterConfig::sharded(&addresses, 2);
    let node = ClusterNode::start(options(&cluster, 1, dir.path())).await.unwrap();
    let on = |shard: u32| (1..100u128).find(|&id| shard_of(id, 2) == shard).unwrap();
    let (a, b) = (on(0), on(1));
    create_accounts_anywhere(&addresses, &[a, b]).await;
    let transfer = |id: u128, amount: u128| Transfer {
        id,
        debit_account_id: a,
        credit_account_id: b,
        amount,
        ledger: 1,
        code: 1,
        ..Default::default()
    };
    assert_eq!(create_transfers_retrying(&addresses, &[transfer(100, 5)]).await, vec![R::Ok]);

    let mut peer = PeerClient::connect(format!("http://{}", addresses[0])).await.unwrap();
    let deliver = |shard: u64, from_shard: u64, commit: Vec<u8>, acceptor: u32| pb::PeerMessages {
        from_node: 9,
        messages: vec![pb::PeerMessage { shard, raft: Vec::new(), commit, from_shard, acceptor }],
    };
    // Undecodable: refused, with the reason.
    for bytes in [
        vec![0xC8],
        vec![0xFF; 64],
        codec::encode_message(&Message { txn: 1, depth: 0, body: Body::Resolved })[..5].to_vec(),
    ] {
        let refused = peer.deliver(deliver(1, 2, bytes, 0)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    }
    // Well-formed and hostile: accepted by the transport, ignored or refused by the
    // protocol cores.
    let txn = |id: u128, amount: u128| {
        Txn::new(Protocol::TwoPhase, vec![transfer(id, amount)], vec![[0, 1]]).unwrap()
    };
    let huge = Outcome::Commit(Commit { amounts: vec![1 << 100], at: u64::MAX, aborted: vec![] });
    let vote = Vote::Aborted;
    let bodies = vec![
        // A commit of a transaction never prepared, and of one already carried out with
        // another amount.
        (Body::Decision { txn: txn(555, 1_000), outcome: huge.clone() }, 0),
        (Body::Decision { txn: txn(100, 5), outcome: huge.clone() }, 0),
        (
            Body::PreCommit {
                txn: txn(556, 7),
                commit: Commit { amounts: vec![7], at: 1, aborted: vec![] },
            },
            0,
        ),
        (Body::Vote { vote: vote.clone() }, 0),
        (Body::Resolved, 0),
        (Body::Inquire { txn: txn(557, 1) }, 0),
        (Body::StateRequest { txn: txn(558, 1) }, 0),
        // Votes from acceptors that do not exist, for a leader that never began.
        (
            Body::Phase2b {
                from: 250,
                accepted: vec![Accepted { instance: 9, ballot: u64::MAX, vote: vote.clone() }],
            },
            0,
        ),
        (Body::Phase1b { from: 7, ballot: 3, accepted: Vec::new(), rejected: Some(u64::MAX) }, 0),
        // For an acceptor index the node does not hold.
        (Body::Phase1a { txn: txn(559, 1), ballot: u64::MAX }, 9),
    ];
    for (body, acceptor) in bodies {
        for (shard, from_shard) in [(1, 2), (2, 1), (1, u64::MAX), (77, 1)] {
            let message = Message { txn: 555, depth: u32::MAX, body: body.clone() };
            let bytes = codec::encode_message(&message);
            peer.deliver(deliver(shard, from_shard, bytes, acceptor)).await.unwrap();
        }
    }
    // Still serving, with the balances the honest requests made.
    assert_eq!(create_transfers_retrying(&addresses, &[transfer(101, 2)]).await, vec![R::Ok]);
    let settled = settled_balances(&addresses, &[a, b]).await;
    assert_eq!((settled[0].debits_posted, settled[1].credits_posted), (7, 7), "{settled:?}");
    assert_eq!(settled[0].credits_posted + settled[1].debits_posted, 0, "{settled:?}");
    let (_, snapshot) = read_snapshot(addresses[0], &[a, b], 0).await.unwrap();
    assert_eq!(snapshot, settled);
    node.shutdown().await.unwrap();
}
