//! `settle dev`: a node with first-run defaults, and a hint of what to try. With
//! `--replicas 3` (or 5), a local cluster instead: that many nodes in this process,
//! talking over real loopback sockets with the production network code, one shard
//! replicated on all of them. `--shards S` splits the accounts over S shards (each
//! replicated on every node); transfers between them commit with 2PC.
//!
//! Data goes to `./settle-dev-data` (created if missing) unless `--data-dir` says
//! otherwise; the node listens on 127.0.0.1:3000, the CLI's default address, or on a
//! free loopback port when 3000 is taken. Storage is durable (fsync on), as in
//! production. Runs until Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

use settle_node::cluster::{ClusterConfig, ClusterOptions};
use settle_node::Config;

use super::{start, Error};

/// The CLI's default node address.
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 3000);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of the node's data.
    #[arg(long, value_name = "DIR", default_value = "./settle-dev-data")]
    pub data_dir: PathBuf,
    /// Run a local cluster of this many replicas (1 runs a standalone node).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=7))]
    pub replicas: u64,
    /// Shards the accounts are placed on (more than 1 runs a cluster, even of one node).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub shards: u64,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    if args.replicas > 1 || args.shards > 1 {
        return run_cluster(args).await;
    }
    let listen = if port_is_free(DEFAULT_ADDRESS) {
        DEFAULT_ADDRESS
    } else {
        tracing::info!("{DEFAULT_ADDRESS} is taken; using a free loopback port");
        SocketAddr::new(DEFAULT_ADDRESS.ip(), 0)
    };
    let data_dir = args.data_dir;
    let config = Config { data_dir: data_dir.clone(), listen, fsync: true, ..Default::default() };
    start::serve(config, |address| {
        println!("listening on {address}");
        println!("data in {}", data_dir.display());
        println!();
        print!("{}", examples(address));
        println!();
        println!("Press Ctrl-C to stop.");
    })
    .await
}

/// A local cluster: ports 3000, 3001, ... when free (so the CLI's default address
/// reaches node 1), else free loopback ports; data in `DIR/node-N`, and the cluster
/// file in `DIR/cluster.toml` for reference.
async fn run_cluster(args: Args) -> Result<ExitCode, Error> {
    let count = args.replicas as usize;
    let defaults: Vec<SocketAddr> = (0..count)
        .map(|i| SocketAddr::new(DEFAULT_ADDRESS.ip(), DEFAULT_ADDRESS.port() + i as u16))
        .collect();
    let addresses = if defaults.iter().all(|&a| port_is_free(a)) {
        defaults
    } else {
        tracing::info!("ports 3000.. are taken; using free loopback ports");
        free_ports(count).map_err(Error::io("cannot find free loopback ports"))?
    };
    let cluster = ClusterConfig::sharded(&addresses, args.shards);
    std::fs::create_dir_all(&args.data_dir)
        .map_err(Error::io(format!("cannot create {}", args.data_dir.display())))?;
    let file = args.data_dir.join("cluster.toml");
    std::fs::write(&file, cluster.to_toml())
        .map_err(Error::io(format!("cannot write {}", file.display())))?;
    let nodes = cluster
        .nodes
        .iter()
        .map(|node| ClusterOptions {
            cluster: cluster.clone(),
            node_id: node.id,
            data_dir: args.data_dir.join(format!("node-{}", node.id)),
            fsync: true,
            tuning: Default::default(),
        })
        .collect();
    let data_dir = args.data_dir.clone();
    start::serve_cluster(nodes, |addresses| {
        for (i, address) in addresses.iter().enumerate() {
            println!("node {} listening on {address}", i + 1);
        }
        println!("data in {}, cluster config in {}", data_dir.display(), file.display());
        println!();
        let joined: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        print!("{}", cluster_examples(&joined.join(",")));
        println!();
        println!("Press Ctrl-C to stop.");
    })
    .await
}

/// `count` loopback ports that were free a moment ago.
fn free_ports(count: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<_, _>>()?;
    listeners.iter().map(|l| l.local_addr()).collect()
}

fn cluster_examples(addresses: &str) -> String {
    let target = format!(" --addresses {addresses}");
    format!(
        "Send a first payment from another terminal (the client finds the leader):\n\
         \x20 settle account create{target} --id 1 --ledger 1 --code 10\n\
         \x20 settle account create{target} --id 2 --ledger 1 --code 10\n\
         \x20 settle transfer create{target} --id 100 --debit 1 --credit 2 --amount 25 --ledger 1 --code 1\n\
         Then see both sides: settle account lookup{target} 1 2\n"
    )
}

/// Whether a listener could bind `address` right now. (The node binds it a moment
/// later; losing that race only makes the node's start fail with a clear error.)
fn port_is_free(address: SocketAddr) -> bool {
    TcpListener::bind(address).is_ok()
}

/// Three commands that make a first payment against the node at `address`.
fn examples(address: SocketAddr) -> String {
    let target =
        if address == DEFAULT_ADDRESS { String::new() } else { format!(" --addresses {address}") };
    format!(
        "Send a first payment from another terminal:\n\
         \x20 settle account create{target} --id 1 --ledger 1 --code 10\n\
         \x20 settle account create{target} --id 2 --ledger 1 --code 10\n\
         \x20 settle transfer create{target} --id 100 --debit 1 --credit 2 --amount 25 --ledger 1 --code 1\n\
         Then see both sides: settle account lookup{target} 1 2\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_name_a_non_default_address() {
        assert!(!examples(DEFAULT_ADDRESS).contains("--addresses"));
        let other: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let text = examples(other);
        assert_eq!(text.matches("--addresses 127.0.0.1:40000").count(), 4);
        assert_eq!(text.lines().filter(|l| l.starts_with("  settle ")).count(), 3);
    }
}
