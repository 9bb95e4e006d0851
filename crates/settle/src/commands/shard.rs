//! `settle shard ...`: the cluster's shard map, and changing which nodes hold a replica
//! of a shard. A change is a Raft configuration change through joint consensus, sent
//! to the shard's leader (the client follows it from any node given). The node must be
//! in the cluster file's `[[nodes]]`; once added, it receives the shard's log (or a
//! snapshot) and catches up. The shard map shows it within a second or so (each
//! shard's leader reports its replicas to the metadata shard).

use std::process::ExitCode;

use clap::Subcommand;

use super::{cli_options, ClientArgs, Error, Session};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the cluster's shard map: its version, and each shard's replicas.
    Map(ClientArgs),
    /// Add a node as a replica of a shard. Prints the shard's replicas afterwards.
    AddReplica(ChangeArgs),
    /// Remove a node's replica of a shard. Prints the shard's replicas afterwards.
    RemoveReplica(ChangeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    /// The shard's id.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub shard: u64,
    /// The node's id (as in the cluster file).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub node: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(command: Command) -> Result<ExitCode, Error> {
    let (args, remove) = match command {
        Command::Map(args) => return map(args).await,
        Command::AddReplica(args) => (args, false),
        Command::RemoveReplica(args) => (args, true),
    };
    // Removing the leader's own replica hands leadership over first, and the request
    // follows it: allow a few more attempts than other commands.
    let options = settle_client::ClientOptions { max_attempts: 20, ..cli_options() };
    let session = Session::connect(&args.client.addresses, options).await?;
    let voters =
        session.call(session.client().change_replicas(args.shard, args.node, remove)).await?;
    if args.client.json {
        let value = serde_json::json!({ "shard": args.shard, "replicas": voters });
        println!("{value}");
    } else {
        let list: Vec<String> = voters.iter().map(u64::to_string).collect();
        println!("shard {}: replicas on nodes {}", args.shard, list.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

async fn map(args: ClientArgs) -> Result<ExitCode, Error> {
    let session = Session::connect(&args.addresses, cli_options()).await?;
    let Some(map) = session.call(session.client().shard_map()).await? else {
        return Err(Error::Other(
            "a standalone node has no shard map: it holds every account".into(),
        ));
    };
    if args.json {
        let shards: Vec<serde_json::Value> = map
            .shards
            .iter()
            .map(|s| serde_json::json!({ "shard": s.shard, "replicas": s.replicas }))
            .collect();
        println!("{}", serde_json::json!({ "version": map.version, "shards": shards }));
    } else {
        println!("shard map version {}", map.version);
        for s in &map.shards {
            let list: Vec<String> = s.replicas.iter().map(u64::to_string).collect();
            println!("shard {}: replicas on nodes {}", s.shard, list.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
