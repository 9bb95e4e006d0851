//! `settle dev`: a node with first-run defaults, and a hint of what to try.
//!
//! Data goes to `./settle-dev-data` (created if missing) unless `--data-dir` says
//! otherwise; the node listens on 127.0.0.1:3000, the CLI's default address, or on a
//! free loopback port when 3000 is taken. Storage is durable (fsync on), as in
//! production. Runs until Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;

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
}

pub async fn run(args: Args) -> Result<ExitCode, Error> {
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
