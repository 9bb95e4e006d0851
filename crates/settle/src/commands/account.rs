//! `settle account ...`: create accounts and read them back.

use std::process::ExitCode;

use clap::Subcommand;
use settle_ledger::{Account, AccountFilter, AccountFilterFlags, BATCH_EVENTS_MAX};

use super::{cli_options, ClientArgs, Error, Session};
use crate::output;
use crate::parse::{self, AccountFlag};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create one account. Prints `ok` or `exists` (exit 0), or the failure (exit 1).
    Create(CreateArgs),
    /// Look up accounts by id (exit 1 if any is missing).
    Lookup(LookupArgs),
    /// Read accounts as of one timestamp, consistent across shards: a transfer between
    /// shards is in the snapshot at both of its accounts or at neither (exit 1 if any
    /// is missing).
    Snapshot(SnapshotArgs),
    /// List the transfers of one account, oldest first.
    Transfers(FilterArgs),
    /// List the balance history of one account (kept only with the `history` flag).
    Balances(FilterArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Account id (decimal or 0x-hex; not 0, not 2^128 - 1).
    #[arg(long, value_parser = parse::u128_value)]
    pub id: u128,
    /// Ledger (currency or asset) the account belongs to.
    #[arg(long, value_parser = parse::u32_value)]
    pub ledger: u32,
    /// Account code (kind of account), chosen by the application.
    #[arg(long, value_parser = parse::u16_value)]
    pub code: u16,
    /// Flags, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FLAG[,FLAG]")]
    pub flags: Vec<AccountFlag>,
    /// Application data, e.g. a reference to an external entity.
    #[arg(long, value_parser = parse::u128_value, default_value = "0")]
    pub user_data_128: u128,
    /// Application data.
    #[arg(long, value_parser = parse::u64_value, default_value = "0")]
    pub user_data_64: u64,
    /// Application data.
    #[arg(long, value_parser = parse::u32_value, default_value = "0")]
    pub user_data_32: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct LookupArgs {
    /// Account ids (decimal or 0x-hex).
    #[arg(required = true, value_parser = parse::u128_value, value_name = "ID")]
    pub ids: Vec<u128>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// Account ids (decimal or 0x-hex), at most 8189.
    #[arg(required = true, value_parser = parse::u128_value, value_name = "ID")]
    pub ids: Vec<u128>,
    /// Read at this timestamp (ns since the Unix epoch; not behind any shard's clock,
    /// at most 1 s ahead). Default: the cluster picks one, about now.
    #[arg(long, value_parser = parse::u64_value)]
    pub at: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Options shared by `account transfers` and `account balances`.
#[derive(clap::Args, Debug)]
pub struct FilterArgs {
    /// Account id (decimal or 0x-hex).
    #[arg(value_parser = parse::u128_value, value_name = "ID")]
    pub id: u128,
    /// At most this many results.
    #[arg(
        long,
        default_value_t = BATCH_EVENTS_MAX as u32,
        value_parser = clap::value_parser!(u32).range(1..=BATCH_EVENTS_MAX as i64)
    )]
    pub limit: u32,
    /// Newest first.
    #[arg(long)]
    pub reversed: bool,
    /// Only transfers that debit the account.
    #[arg(long, conflicts_with = "credits")]
    pub debits: bool,
    /// Only transfers that credit the account.
    #[arg(long)]
    pub credits: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

impl FilterArgs {
    fn filter(&self) -> AccountFilter {
        let mut flags = match (self.debits, self.credits) {
            (true, false) => AccountFilterFlags::DEBITS,
            (false, true) => AccountFilterFlags::CREDITS,
            _ => AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        };
        if self.reversed {
            flags |= AccountFilterFlags::REVERSED;
        }
        AccountFilter { account_id: self.id, limit: self.limit, flags, ..Default::default() }
    }
}

pub async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Create(args) => create(args).await,
        Command::Lookup(args) => lookup(args).await,
        Command::Snapshot(args) => snapshot(args).await,
        Command::Transfers(args) => transfers(args).await,
        Command::Balances(args) => balances(args).await,
    }
}

async fn create(args: CreateArgs) -> Result<ExitCode, Error> {
    let account = Account {
        id: args.id,
        ledger: args.ledger,
        code: args.code,
        flags: AccountFlag::union(&args.flags),
        user_data_128: args.user_data_128,
        user_data_64: args.user_data_64,
        user_data_32: args.user_data_32,
        ..Default::default()
    };
    let session = Session::connect(&args.client.addresses, cli_options()).await?;
    let results = session.call(session.client().create_accounts(&[account])).await?;
    let [result] = results[..] else {
        return Err(Error::Other(format!("{} results for one account", results.len())));
    };
    output::print_result("account", args.id, result.name(), args.client.json);
    Ok(if result.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn lookup(args: LookupArgs) -> Result<ExitCode, Error> {
    let session = Session::connect(&args.client.addresses, cli_options()).await?;
    let accounts = session.call(session.client().lookup_accounts(&args.ids)).await?;
    output::print_accounts(&accounts, args.client.json);
    Ok(report_missing("account", &args.ids, accounts.iter().map(|a| a.id)))
}

async fn snapshot(args: SnapshotArgs) -> Result<ExitCode, Error> {
    if args.ids.len() > BATCH_EVENTS_MAX {
        return Err(Error::Other(format!(
            "{} ids: one snapshot reads at most {BATCH_EVENTS_MAX}",
            args.ids.len()
        )));
    }
    let session = Session::connect(&args.client.addresses, cli_options()).await?;
    let read = session.client().read_snapshot(&args.ids, args.at);
    let (timestamp, accounts) = session.call(read).await?;
    output::print_snapshot(timestamp, &accounts, args.client.json);
    Ok(report_missing("account", &args.ids, accounts.iter().map(|a| a.id)))
}

async fn transfers(args: FilterArgs) -> Result<ExitCode, Error> {
    let session = Session::connect(&args.client.addresses, cli_options()).await?;
    let transfers = session.call(session.client().get_account_transfers(&args.filter())).await?;
    output::print_transfers(&transfers, args.client.json);
    Ok(ExitCode::SUCCESS)
}

async fn balances(args: FilterArgs) -> Result<ExitCode, Error> {
    let session = Session::connect(&args.client.addresses, cli_options()).await?;
    let balances = session.call(session.client().get_account_balances(&args.filter())).await?;
    if balances.is_empty() && !args.client.json {
        eprintln!(
            "note: no balance history for account {}; only accounts created with \
             `--flags history` keep one",
            args.id
        );
    }
    output::print_balances(&balances, args.client.json);
    Ok(ExitCode::SUCCESS)
}

/// Names on stderr every requested id that was not found; exit 1 if there was one.
pub fn report_missing(
    kind: &str,
    requested: &[u128],
    found: impl Iterator<Item = u128>,
) -> ExitCode {
    let found: std::collections::HashSet<u128> = found.collect();
    let mut code = ExitCode::SUCCESS;
    for id in requested.iter().filter(|id| !found.contains(id)) {
        eprintln!("{kind} {id}: not found");
        code = ExitCode::FAILURE;
    }
    code
}
