//! `settle transfer ...`: move money between accounts, two-phase or at once.

use std::process::ExitCode;

use clap::Subcommand;
use settle_ledger::{Transfer, TransferFlags, AMOUNT_MAX};

use super::{account::report_missing, cli_options, ClientArgs, Error, Session};
use crate::output;
use crate::parse::{self, TransferFlag};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create one transfer (with --pending: reserve the amount until posted or voided).
    Create(CreateArgs),
    /// Post (complete) a pending transfer, fully or in part.
    Post(PostArgs),
    /// Void (cancel) a pending transfer, releasing its amount.
    Void(VoidArgs),
    /// Look up transfers by id (exit 1 if any is missing).
    Lookup(LookupArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Transfer id (decimal or 0x-hex; not 0, not 2^128 - 1).
    #[arg(long, value_parser = parse::u128_value)]
    pub id: u128,
    /// The account to debit.
    #[arg(long, value_parser = parse::u128_value, value_name = "ACCOUNT_ID")]
    pub debit: u128,
    /// The account to credit.
    #[arg(long, value_parser = parse::u128_value, value_name = "ACCOUNT_ID")]
    pub credit: u128,
    /// Amount, in the ledger's smallest unit.
    #[arg(long, value_parser = parse::u128_value)]
    pub amount: u128,
    /// Ledger of the transfer (both accounts must be on it).
    #[arg(long, value_parser = parse::u32_value)]
    pub ledger: u32,
    /// Transfer code (kind of transfer), chosen by the application.
    #[arg(long, value_parser = parse::u16_value)]
    pub code: u16,
    /// Reserve the amount (a pending transfer) until `transfer post` or `transfer void`.
    #[arg(long)]
    pub pending: bool,
    /// Seconds until the pending transfer expires (0: never).
    #[arg(
        long,
        requires = "pending",
        value_parser = parse::u32_value,
        default_value = "0",
        value_name = "SECONDS"
    )]
    pub timeout: u32,
    /// Flags, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FLAG[,FLAG]")]
    pub flags: Vec<TransferFlag>,
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
pub struct PostArgs {
    /// Id of this (posting) transfer.
    #[arg(long, value_parser = parse::u128_value)]
    pub id: u128,
    /// Id of the pending transfer to post.
    #[arg(long, value_parser = parse::u128_value)]
    pub pending_id: u128,
    /// Amount to post; by default the whole pending amount.
    #[arg(long, value_parser = parse::u128_value)]
    pub amount: Option<u128>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct VoidArgs {
    /// Id of this (voiding) transfer.
    #[arg(long, value_parser = parse::u128_value)]
    pub id: u128,
    /// Id of the pending transfer to void.
    #[arg(long, value_parser = parse::u128_value)]
    pub pending_id: u128,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args, Debug)]
pub struct LookupArgs {
    /// Transfer ids (decimal or 0x-hex).
    #[arg(required = true, value_parser = parse::u128_value, value_name = "ID")]
    pub ids: Vec<u128>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Create(args) => {
            let mut flags = TransferFlag::union(&args.flags);
            if args.pending {
                flags |= TransferFlags::PENDING;
            }
            let transfer = Transfer {
                id: args.id,
                debit_account_id: args.debit,
                credit_account_id: args.credit,
                amount: args.amount,
                ledger: args.ledger,
                code: args.code,
                timeout: args.timeout,
                flags,
                user_data_128: args.user_data_128,
                user_data_64: args.user_data_64,
                user_data_32: args.user_data_32,
                ..Default::default()
            };
            create(transfer, &args.client).await
        }
        Command::Post(args) => {
            // Accounts, ledger and code stay 0: the ledger takes them from the pending
            // transfer.
            let transfer = Transfer {
                id: args.id,
                pending_id: args.pending_id,
                amount: args.amount.unwrap_or(AMOUNT_MAX),
                flags: TransferFlags::POST_PENDING_TRANSFER,
                ..Default::default()
            };
            create(transfer, &args.client).await
        }
        Command::Void(args) => {
            let transfer = Transfer {
                id: args.id,
                pending_id: args.pending_id,
                amount: 0,
                flags: TransferFlags::VOID_PENDING_TRANSFER,
                ..Default::default()
            };
            create(transfer, &args.client).await
        }
        Command::Lookup(args) => {
            let session = Session::connect(&args.client.addresses, cli_options()).await?;
            let transfers = session.call(session.client().lookup_transfers(&args.ids)).await?;
            output::print_transfers(&transfers, args.client.json);
            Ok(report_missing("transfer", &args.ids, transfers.iter().map(|t| t.id)))
        }
    }
}

async fn create(transfer: Transfer, client: &ClientArgs) -> Result<ExitCode, Error> {
    let session = Session::connect(&client.addresses, cli_options()).await?;
    let results = session.call(session.client().create_transfers(&[transfer])).await?;
    let [result] = results[..] else {
        return Err(Error::Other(format!("{} results for one transfer", results.len())));
    };
    output::print_result("transfer", transfer.id, result.name(), client.json);
    Ok(if result.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
