//! `settle status`: what every node given knows of the shards it holds: role, term,
//! leader, applied index, voters. A node that does not answer is listed with why.
//! Exits 1 if any node does not answer.

use std::process::ExitCode;

use super::{cli_options, ClientArgs, Error, Session};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
    let session = Session::connect(&args.client.addresses, cli_options()).await?;
    let statuses = session.client().status().await;
    let all_answered = statuses.iter().all(|(_, status)| status.is_ok());
    if args.client.json {
        let nodes: Vec<serde_json::Value> = statuses
            .iter()
            .map(|(address, status)| match status {
                Ok(status) => serde_json::json!({
                    "address": address,
                    "node": status.node,
                    "shards": status.shards.iter().map(|s| serde_json::json!({
                        "shard": s.shard,
                        "role": s.role,
                        "term": s.term,
                        "leader": s.leader,
                        "applied": s.applied,
                        "voters": s.voters,
                    })).collect::<Vec<_>>(),
                }),
                Err(error) => serde_json::json!({ "address": address, "error": error.to_string() }),
            })
            .collect();
        println!("{}", serde_json::Value::Array(nodes));
    } else {
        println!(
            "{:<5} {:<22} {:>5}  {:<13} {:>5} {:>6} {:>9}  voters",
            "node", "address", "shard", "role", "term", "leader", "applied"
        );
        for (address, status) in &statuses {
            match status {
                Ok(status) => {
                    for s in &status.shards {
                        let leader = s.leader.map_or("-".to_string(), |id| id.to_string());
                        let voters: Vec<String> = s.voters.iter().map(u64::to_string).collect();
                        println!(
                            "{:<5} {:<22} {:>5}  {:<13} {:>5} {:>6} {:>9}  {}",
                            status.node,
                            address,
                            s.shard,
                            s.role,
                            s.term,
                            leader,
                            s.applied,
                            voters.join(",")
                        );
                    }
                }
                Err(error) => println!("{:<5} {:<22} not answering: {error}", "?", address),
            }
        }
    }
    Ok(if all_answered { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
