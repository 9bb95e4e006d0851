//! How the client commands print records and results.
//!
//! Text output: aligned tables (numbers right-aligned, all numbers in decimal, flags
//! by name, user-data columns shown only when some row has user data), and one line
//! per create result: `account 1: ok`.
//!
//! JSON output (`--json`): one document on stdout. Records are objects with the field
//! names of `settle.proto`; 128-bit values and timestamps are decimal *strings* (they
//! do not fit the 53-bit integers most JSON readers use), 32- and 16-bit fields are
//! numbers, flags are arrays of names. A create result is
//! `{"id": "1", "result": "ok"}`.

use serde_json::{json, Value};
use settle_ledger::{Account, AccountBalance, Transfer};

use crate::parse::{account_flag_names, transfer_flag_names};

/// Prints a JSON document on stdout.
pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON values always serialize"));
}

/// The result line of one create event: `account 1: ok` / `{"id":..,"result":..}`.
pub fn print_result(kind: &str, id: u128, result: &str, json: bool) {
    if json {
        print_json(&json!({ "id": id.to_string(), "result": result }));
    } else {
        println!("{kind} {id}: {result}");
    }
}

pub fn account_json(account: &Account) -> Value {
    json!({
        "id": account.id.to_string(),
        "debits_pending": account.debits_pending.to_string(),
        "debits_posted": account.debits_posted.to_string(),
        "credits_pending": account.credits_pending.to_string(),
        "credits_posted": account.credits_posted.to_string(),
        "user_data_128": account.user_data_128.to_string(),
        "user_data_64": account.user_data_64.to_string(),
        "user_data_32": account.user_data_32,
        "ledger": account.ledger,
        "code": account.code,
        "flags": account_flag_names(account.flags),
        "timestamp": account.timestamp.to_string(),
    })
}

pub fn transfer_json(transfer: &Transfer) -> Value {
    json!({
        "id": transfer.id.to_string(),
        "debit_account_id": transfer.debit_account_id.to_string(),
        "credit_account_id": transfer.credit_account_id.to_string(),
        "amount": transfer.amount.to_string(),
        "pending_id": transfer.pending_id.to_string(),
        "user_data_128": transfer.user_data_128.to_string(),
        "user_data_64": transfer.user_data_64.to_string(),
        "user_data_32": transfer.user_data_32,
        "timeout": transfer.timeout,
        "ledger": transfer.ledger,
        "code": transfer.code,
        "flags": transfer_flag_names(transfer.flags),
        "timestamp": transfer.timestamp.to_string(),
    })
}

pub fn balance_json(balance: &AccountBalance) -> Value {
    json!({
        "debits_pending": balance.debits_pending.to_string(),
        "debits_posted": balance.debits_posted.to_string(),
        "credits_pending": balance.credits_pending.to_string(),
        "credits_posted": balance.credits_posted.to_string(),
        "timestamp": balance.timestamp.to_string(),
    })
}

/// Prints accounts as a table, or as a JSON array.
/// A snapshot read: its timestamp, then its accounts.
pub fn print_snapshot(timestamp: u64, accounts: &[Account], json: bool) {
    if json {
        let accounts: Vec<Value> = accounts.iter().map(account_json).collect();
        return print_json(&json!({ "timestamp": timestamp.to_string(), "accounts": accounts }));
    }
    println!("snapshot at timestamp {timestamp}");
    print_accounts(accounts, false);
}

pub fn print_accounts(accounts: &[Account], json: bool) {
    if json {
        return print_json(&Value::Array(accounts.iter().map(account_json).collect()));
    }
    let mut table = Table::new(&[
        Column::number("id"),
        Column::number("ledger"),
        Column::number("code"),
        Column::text("flags"),
        Column::number("debits_pending"),
        Column::number("debits_posted"),
        Column::number("credits_pending"),
        Column::number("credits_posted"),
        Column::number("user_data_128").optional(),
        Column::number("user_data_64").optional(),
        Column::number("user_data_32").optional(),
        Column::number("timestamp"),
    ]);
    for a in accounts {
        table.row(vec![
            a.id.to_string(),
            a.ledger.to_string(),
            a.code.to_string(),
            flags_cell(account_flag_names(a.flags)),
            a.debits_pending.to_string(),
            a.debits_posted.to_string(),
            a.credits_pending.to_string(),
            a.credits_posted.to_string(),
            a.user_data_128.to_string(),
            a.user_data_64.to_string(),
            a.user_data_32.to_string(),
            a.timestamp.to_string(),
        ]);
    }
    table.print();
}

/// Prints transfers as a table, or as a JSON array.
pub fn print_transfers(transfers: &[Transfer], json: bool) {
    if json {
        return print_json(&Value::Array(transfers.iter().map(transfer_json).collect()));
    }
    let mut table = Table::new(&[
        Column::number("id"),
        Column::number("debit"),
        Column::number("credit"),
        Column::number("amount"),
        Column::number("pending_id").optional(),
        Column::number("ledger"),
        Column::number("code"),
        Column::text("flags"),
        Column::number("timeout").optional(),
        Column::number("user_data_128").optional(),
        Column::number("user_data_64").optional(),
        Column::number("user_data_32").optional(),
        Column::number("timestamp"),
    ]);
    for t in transfers {
        table.row(vec![
            t.id.to_string(),
            t.debit_account_id.to_string(),
            t.credit_account_id.to_string(),
            t.amount.to_string(),
            t.pending_id.to_string(),
            t.ledger.to_string(),
            t.code.to_string(),
            flags_cell(transfer_flag_names(t.flags)),
            t.timeout.to_string(),
            t.user_data_128.to_string(),
            t.user_data_64.to_string(),
            t.user_data_32.to_string(),
            t.timestamp.to_string(),
        ]);
    }
    table.print();
}

/// Prints balance snapshots as a table, or as a JSON array.
pub fn print_balances(balances: &[AccountBalance], json: bool) {
    if json {
        return print_json(&Value::Array(balances.iter().map(balance_json).collect()));
    }
    let mut table = Table::new(&[
        Column::number("timestamp"),
        Column::number("debits_pending"),
        Column::number("debits_posted"),
        Column::number("credits_pending"),
        Column::number("credits_posted"),
    ]);
    for b in balances {
        table.row(vec![
            b.timestamp.to_string(),
            b.debits_pending.to_string(),
            b.debits_posted.to_string(),
            b.credits_pending.to_string(),
            b.credits_posted.to_string(),
        ]);
    }
    table.print();
}

fn flags_cell(names: Vec<String>) -> String {
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(",")
    }
}

/// A column of a [`Table`].
#[derive(Clone, Copy, Debug)]
pub struct Column {
    header: &'static str,
    right_aligned: bool,
    /// Left out when every cell is `0`.
    optional: bool,
}

impl Column {
    pub fn number(header: &'static str) -> Column {
        Column { header, right_aligned: true, optional: false }
    }

    pub fn text(header: &'static str) -> Column {
        Column { header, right_aligned: false, optional: false }
    }

    pub fn optional(self) -> Column {
        Column { optional: true, ..self }
    }
}

/// A plain-text table with aligned columns.
pub struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[Column]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.columns.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header, each line ending in `\n`.
    pub fn render(&self) -> String {
        let shown: Vec<usize> = (0..self.columns.len())
            .filter(|&c| !self.columns[c].optional || self.rows.iter().any(|row| row[c] != "0"))
            .collect();
        let widths: Vec<usize> = shown
            .iter()
            .map(|&c| {
                let cells = self.rows.iter().map(|row| row[c].len());
                cells.chain([self.columns[c].header.len()]).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<&str> = shown.iter().map(|&c| self.columns[c].header).collect();
        self.line(&mut out, &shown, &widths, &header);
        for row in &self.rows {
            let cells: Vec<&str> = shown.iter().map(|&c| row[c].as_str()).collect();
            self.line(&mut out, &shown, &widths, &cells);
        }
        out
    }

    fn line(&self, out: &mut String, shown: &[usize], widths: &[usize], cells: &[&str]) {
        let mut line = String::new();
        for (i, (&c, cell)) in shown.iter().zip(cells).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths[i];
            if self.columns[c].right_aligned {
                line.push_str(&format!("{cell:>width$}"));
            } else {
                line.push_str(&format!("{cell:<width$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_drop_empty_optional_columns() {
        let mut table = Table::new(&[
            Column::number("id"),
            Column::text("flags"),
            Column::number("extra").optional(),
            Column::number("amount"),
        ]);
        table.row(vec!["1".into(), "history".into(), "0".into(), "100".into()]);
        table.row(vec!["1000".into(), "-".into(), "0".into(), "5".into()]);
        assert_eq!(
            table.render(),
            "  id  flags    amount\n   1  history     100\n1000  -             5\n"
        );
    }

    #[test]
    fn json_uses_strings_for_wide_numbers() {
        let account = Account { id: u128::MAX - 1, ledger: 7, code: 3, ..Default::default() };
        let value = account_json(&account);
        assert_eq!(value["id"], (u128::MAX - 1).to_string());
        assert_eq!(value["ledger"], 7);
        assert_eq!(value["flags"], json!([]));
    }
}
