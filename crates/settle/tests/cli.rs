//! End-to-end tests of the `settle` binary: a real node process, the real CLI.
//!
//! Every node runs on 127.0.0.1:0 in its own temporary directory; a test waits for it by
//! reading its `listening on ADDR` line (no sleeps), and a Drop guard kills it, so no
//! test leaves a process behind even when it fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use serde_json::Value;

const SETTLE: &str = env!("CARGO_BIN_EXE_settle");

/// A `settle start` (or `settle dev`) child process, killed on drop.
struct NodeProcess {
    child: Child,
    address: String,
    /// Everything the node printed on stdout, `listening on` line included.
    printed: Vec<String>,
    /// Kept open so that the node never writes to a closed pipe.
    _stdout: Option<BufReader<ChildStdout>>,
}

impl NodeProcess {
    fn start(data_dir: &Path) -> NodeProcess {
        let mut command = Command::new(SETTLE);
        command.arg("start").arg("--data-dir").arg(data_dir).args(["--listen", "127.0.0.1:0"]);
        NodeProcess::spawn(command.stderr(Stdio::inherit()), 0)
    }

    /// Spawns `command` and reads its stdout up to the `listening on` line and then
    /// `extra_lines` more lines.
    /// The caller chooses where stderr goes.
    fn spawn(command: &mut Command, extra_lines: usize) -> NodeProcess {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn settle");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        // The guard exists before the first read, so a failed wait still kills the node.
        let mut guard =
            NodeProcess { child, address: String::new(), printed: Vec::new(), _stdout: None };
        let mut line = String::new();
        while guard.address.is_empty() {
            line.clear();
            let read = stdout.read_line(&mut line).expect("read the node's stdout");
            assert!(read > 0, "the node exited before listening; printed {:?}", guard.printed);
            guard.printed.push(line.trim_end().to_string());
            if let Some(address) = line.trim_end().strip_prefix("listening on ") {
                guard.address = address.to_string();
            }
        }
        for _ in 0..extra_lines {
            line.clear();
            if stdout.read_line(&mut line).expect("read the node's stdout") == 0 {
                break;
            }
            guard.printed.push(line.trim_end().to_string());
        }
        guard._stdout = Some(stdout);
        guard
    }

    /// Sends `signal` and waits for the process; returns whether it exited 0.
    fn stop_with(mut self, signal: rustix::process::Signal) -> bool {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal the node");
        self.child.wait().expect("wait for the node").success()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // After a clean stop the process is already reaped and this is a no-op.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the CLI (never picking up SETTLE_ADDRESSES from the test's environment).
fn settle(args: &[&str]) -> Output {
    Command::new(SETTLE)
        .args(args)
        .env_remove("SETTLE_ADDRESSES")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run settle")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the CLI against `node` and asserts exit code `code`; returns stdout.
fn run_at(node: &NodeProcess, args: &[&str], code: i32) -> String {
    let mut all = args.to_vec();
    all.extend(["--addresses", &node.address]);
    let output = settle(&all);
    assert_eq!(
        output.status.code(),
        Some(code),
        "settle {all:?}\nstdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn json_at(node: &NodeProcess, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = run_at(node, &all, 0);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON: {stdout}"))
}

/// A loopback address nothing listens on.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[test]
fn accounts_transfers_and_two_phase_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));

    let out = run_at(
        &node,
        &[
            "account", "create", "--id", "1", "--ledger", "700", "--code", "10", "--flags",
            "history",
        ],
        0,
    );
    assert_eq!(out.trim(), "account 1: ok");
    // Hex ids are accepted; ids are printed in decimal.
    let created =
        json_at(&node, &["account", "create", "--id", "0x2", "--ledger", "700", "--code", "10"]);
    assert_eq!(created, serde_json::json!({"id": "2", "result": "ok"}));
    // Creating it again is `exists`, a success.
    let out =
        run_at(&node, &["account", "create", "--id", "2", "--ledger", "700", "--code", "10"], 0);
    assert_eq!(out.trim(), "account 2: exists");
    // The same id with other fields is a failure, named, with exit code 1.
    let out =
        run_at(&node, &["account", "create", "--id", "2", "--ledger", "701", "--code", "10"], 1);
    assert_eq!(out.trim(), "account 2: exists_with_different_ledger");

    let out = run_at(
        &node,
        &[
            "transfer", "create", "--id", "10", "--debit", "1", "--credit", "2", "--amount", "100",
            "--ledger", "700", "--code", "1",
        ],
        0,
    );
    assert_eq!(out.trim(), "transfer 10: ok");
    let out = run_at(
        &node,
        &[
            "transfer",
            "create",
            "--id",
            "11",
            "--debit",
            "1",
            "--credit",
            "2",
            "--amount",
            "40",
            "--ledger",
            "700",
            "--code",
            "1",
            "--pending",
            "--timeout",
            "3600",
        ],
        0,
    );
    assert_eq!(out.trim(), "transfer 11: ok");
    let accounts = json_at(&node, &["account", "lookup", "1"]);
    assert_eq!(accounts[0]["debits_pending"], "40");
    assert_eq!(accounts[0]["debits_posted"], "100");

    // Post the whole pending amount (the default), then voiding it is refused.
    let out = run_at(&node, &["transfer", "post", "--id", "12", "--pending-id", "11"], 0);
    assert_eq!(out.trim(), "transfer 12: ok");
    let out = run_at(&node, &["transfer", "void", "--id", "13", "--pending-id", "11"], 1);
    assert_eq!(out.trim(), "transfer 13: pending_transfer_already_posted");
    // A partial post and a void of another pending transfer.
    run_at(
        &node,
        &[
            "transfer",
            "create",
            "--id",
            "20",
            "--debit",
            "2",
            "--credit",
            "1",
            "--amount",
            "30",
            "--ledger",
            "700",
            "--code",
            "1",
            "--pending",
        ],
        0,
    );
    run_at(&node, &["transfer", "post", "--id", "21", "--pending-id", "20", "--amount", "5"], 0);
    run_at(
        &node,
        &[
            "transfer",
            "create",
            "--id",
            "22",
            "--debit",
            "2",
            "--credit",
            "1",
            "--amount",
            "7",
            "--ledger",
            "700",
            "--code",
            "1",
            "--pending",
        ],
        0,
    );
    run_at(&node, &["transfer", "void", "--id", "23", "--pending-id", "22"], 0);

    let accounts = json_at(&node, &["account", "lookup", "1", "2"]);
    let accounts = accounts.as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0]["id"], "1");
    assert_eq!(accounts[0]["debits_posted"], "140");
    assert_eq!(accounts[0]["credits_posted"], "5");
    assert_eq!(accounts[0]["debits_pending"], "0");
    assert_eq!(accounts[0]["flags"], serde_json::json!(["history"]));
    assert_eq!(accounts[1]["credits_posted"], "140");
    assert_eq!(accounts[1]["debits_posted"], "5");
    assert_eq!(accounts[1]["debits_pending"], "0");
    assert_eq!(accounts[1]["ledger"], 700);

    // A snapshot read: on one node, its latest state, with its timestamp.
    let snapshot = json_at(&node, &["account", "snapshot", "1", "2"]);
    assert_eq!(snapshot["accounts"], serde_json::json!(accounts), "{snapshot}");
    let at: u64 = snapshot["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(at > 0, "{snapshot}");
    let at = at.to_string();
    let output = settle(&["account", "snapshot", "1", "--at", &at, "--addresses", &node.address]);
    assert_eq!(output.status.code(), Some(1), "a standalone node reads at its latest state");
    assert!(text(&output.stderr).contains("FailedPrecondition"), "{}", text(&output.stderr));

    // Text lookup: a table with a header and one row per account.
    let table = run_at(&node, &["account", "lookup", "1", "2"], 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].contains("debits_posted") && lines[0].contains("credits_posted"));
    assert!(lines[1].trim_start().starts_with("1 ") && lines[1].contains("140"));
    // A missing id: the others are printed, the missing one named, exit 1.
    let output = settle(&["account", "lookup", "1", "99", "--addresses", &node.address]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("account 99: not found"));

    let transfers = json_at(&node, &["transfer", "lookup", "10", "11", "12"]);
    let transfers = transfers.as_array().unwrap();
    assert_eq!(transfers.len(), 3);
    assert_eq!(transfers[1]["flags"], serde_json::json!(["pending"]));
    assert_eq!(transfers[1]["timeout"], 3600);
    assert_eq!(transfers[2]["pending_id"], "11");
    assert_eq!(transfers[2]["amount"], "40");
    assert_eq!(transfers[2]["debit_account_id"], "1");

    // Account 1's transfers: 10, 11, 12, 20, 21, 22, 23 (post/void name it too).
    let ids = |value: Value| -> Vec<String> {
        value.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect()
    };
    let all = ids(json_at(&node, &["account", "transfers", "1"]));
    assert_eq!(all, ["10", "11", "12", "20", "21", "22", "23"]);
    let newest = ids(json_at(&node, &["account", "transfers", "1", "--reversed", "--limit", "2"]));
    assert_eq!(newest, ["23", "22"]);
    let debits = ids(json_at(&node, &["account", "transfers", "1", "--debits"]));
    assert_eq!(debits, ["10", "11", "12"]);
    let credits = ids(json_at(&node, &["account", "transfers", "1", "--credits"]));
    assert_eq!(credits, ["20", "21", "22", "23"]);
    let table = run_at(&node, &["account", "transfers", "1"], 0);
    assert_eq!(table.lines().count(), 8, "{table}");

    // Balance history: kept for account 1 (history flag), one entry per transfer.
    let balances = json_at(&node, &["account", "balances", "1"]);
    let balances = balances.as_array().unwrap();
    assert_eq!(balances.len(), 7);
    assert_eq!(balances[0]["debits_posted"], "100");
    assert_eq!(balances[6]["credits_posted"], "5");
    let none = json_at(&node, &["account", "balances", "2"]);
    assert_eq!(none, serde_json::json!([]));

    // SETTLE_ADDRESSES stands in for --addresses.
    let output = Command::new(SETTLE)
        .args(["account", "lookup", "2", "--json"])
        .env("SETTLE_ADDRESSES", &node.address)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let via_env: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(via_env[0]["id"], "2");
}

#[test]
fn results_other_than_ok_or_exists_exit_1_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"));
    run_at(
        &node,
        &[
            "account",
            "create",
            "--id",
            "1",
            "--ledger",
            "1",
            "--code",
            "1",
            "--flags",
            "debits-must-not-exceed-credits",
        ],
        0,
    );
    run_at(&node, &["account", "create", "--id", "2", "--ledger", "1", "--code", "1"], 0);
    let out = run_at(&node, &["account", "create", "--id", "3", "--ledger", "0", "--code", "1"], 1);
    assert_eq!(out.trim(), "account 3: ledger_must_not_be_zero");
    let out = run_at(
        &node,
        &[
            "transfer", "create", "--id", "5", "--debit", "1", "--credit", "2", "--amount", "1",
            "--ledger", "1", "--code", "1",
        ],
        1,
    );
    assert_eq!(out.trim(), "transfer 5: exceeds_credits");
    let result = {
        let mut args = vec![
            "transfer", "create", "--id", "6", "--debit", "1", "--credit", "9", "--amount", "1",
        ];
        args.extend(["--ledger", "1", "--code", "1", "--json", "--addresses", &node.address]);
        settle(&args)
    };
    assert_eq!(result.status.code(), Some(1));
    let value: Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(value, serde_json::json!({"id": "6", "result": "credit_account_not_found"}));
    let out = run_at(&node, &["transfer", "post", "--id", "7", "--pending-id", "999"], 1);
    assert_eq!(out.trim(), "transfer 7: pending_transfer_not_found");
}

#[test]
fn bad_input_is_a_usage_error() {
    let unknown = settle(&[
        "account", "create", "--id", "1", "--ledger", "1", "--code", "1", "--colour", "red",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("--colour"), "{}", text(&unknown.stderr));

    let malformed = settle(&["account", "create", "--id", "12abc", "--ledger", "1", "--code", "1"]);
    assert_eq!(malformed.status.code(), Some(2));
    let stderr = text(&malformed.stderr);
    assert!(stderr.contains("'12abc'") && stderr.contains("--id"), "{stderr}");
    assert!(stderr.contains("decimal or 0x-prefixed hex"), "{stderr}");

    let lookup = settle(&["transfer", "lookup", "0xZZ"]);
    assert_eq!(lookup.status.code(), Some(2));
    assert!(text(&lookup.stderr).contains("0xZZ"));

    let too_big = settle(&["account", "create", "--id", "1", "--ledger", "1", "--code", "65536"]);
    assert_eq!(too_big.status.code(), Some(2));
    assert!(text(&too_big.stderr).contains("2^16 - 1"), "{}", text(&too_big.stderr));

    let bad_flag = settle(&[
        "account",
        "create",
        "--id",
        "1",
        "--ledger",
        "1",
        "--code",
        "1",
        "--flags",
        "history,shiny",
    ]);
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(text(&bad_flag.stderr).contains("shiny"));

    let timeout_without_pending = settle(&[
        "transfer",
        "create",
        "--id",
        "1",
        "--debit",
        "1",
        "--credit",
        "2",
        "--amount",
        "1",
        "--ledger",
        "1",
        "--code",
        "1",
        "--timeout",
        "5",
    ]);
    assert_eq!(timeout_without_pending.status.code(), Some(2));
    assert!(text(&timeout_without_pending.stderr).contains("--pending"));

    let missing = settle(&["transfer", "create", "--id", "1"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("--debit"));

    let bench = settle(&["bench", "--transfer-batch-size", "9000"]);
    assert_eq!(bench.status.code(), Some(2));
}

#[test]
fn an_unreachable_node_is_a_clear_error() {
    let address = dead_address();
    for args in [
        vec!["account", "lookup", "1"],
        vec!["account", "create", "--id", "1", "--ledger", "1", "--code", "1"],
        vec!["transfer", "post", "--id", "2", "--pending-id", "1"],
    ] {
        let mut args = args.clone();
        args.extend(["--addresses", &address]);
        let output = settle(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(&address), "the error names the address: {stderr}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn start_stops_cleanly_on_sigterm_and_recovers_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = NodeProcess::start(&data);
    run_at(&node, &["account", "create", "--id", "42", "--ledger", "3", "--code", "4"], 0);
    assert!(node.stop_with(rustix::process::Signal::TERM), "clean exit on SIGTERM");

    let node = NodeProcess::start(&data);
    let accounts = json_at(&node, &["account", "lookup", "42"]);
    assert_eq!(accounts[0]["ledger"], 3);
    assert!(node.stop_with(rustix::process::Signal::INT), "clean exit on SIGINT");
}

#[test]
fn no_fsync_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut command = Command::new(SETTLE);
    command.arg("start").arg("--data-dir").arg(dir.path().join("data"));
    command.args(["--listen", "127.0.0.1:0", "--no-fsync"]);
    command.stderr(std::fs::File::create(&log).unwrap());
    let node = NodeProcess::spawn(&mut command, 0);
    assert!(node.stop_with(rustix::process::Signal::TERM));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("WARNING: --no-fsync"), "{stderr}");
    assert!(stderr.contains("LOSE"), "{stderr}");
}

#[test]
fn dev_prints_its_address_and_example_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(SETTLE);
    command.arg("dev").arg("--data-dir").arg(dir.path().join("dev-data"));
    // After `listening on`: the data dir, a blank line, a heading, three commands, a
    // lookup hint.
    let node = NodeProcess::spawn(command.stderr(Stdio::inherit()), 6);
    assert!(node.address.starts_with("127.0.0.1:"), "{:?}", node.printed);
    let examples: Vec<&String> =
        node.printed.iter().filter(|l| l.starts_with("  settle ")).collect();
    assert_eq!(examples.len(), 3, "{:?}", node.printed);
    assert!(dir.path().join("dev-data").is_dir());
    // The printed commands work as printed (with the node's address).
    for example in &examples {
        let mut words: Vec<&str> = example.split_whitespace().skip(1).collect();
        if !words.contains(&"--addresses") {
            words.extend(["--addresses", &node.address]);
        }
        let output = settle(&words);
        assert!(output.status.success(), "{example}: {}", text(&output.stderr));
    }
    assert!(node.stop_with(rustix::process::Signal::INT));
}

#[test]
fn bench_reports_the_five_lines_of_record() {
    let output = settle(&["bench", "--account-count", "100", "--transfer-count", "20000"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", text(&output.stderr));
    let value = |prefix: &str, unit: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{stdout}"));
        let number = line[prefix.len()..].strip_suffix(unit).unwrap_or_else(|| panic!("{line}"));
        number.parse().unwrap_or_else(|_| panic!("not an integer: {line}"))
    };
    assert!(value("load accepted = ", " tx/s") > 0);
    let p50 = value("batch latency p50 = ", " ms");
    let p99 = value("batch latency p99 = ", " ms");
    let p100 = value("batch latency p100 = ", " ms");
    assert!(p50 <= p99 && p99 <= p100, "{stdout}");
    assert!(value("rss = ", " bytes") > 0, "the child node's peak memory is measured");
    assert!(stdout.contains("failures = 0"), "{stdout}");
    // The temporary node's directory is gone.
    let dir_line = stdout.lines().find(|l| l.starts_with("node: child process")).unwrap();
    let data_dir = dir_line.rsplit("data in ").next().unwrap();
    assert!(!Path::new(data_dir).exists(), "{data_dir} was removed");
}

#[test]
fn status_of_a_standalone_node_says_it_has_no_shards() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path());
    let stdout = run_at(&node, &["status"], 1);
    assert!(stdout.contains("a standalone node (not part of a cluster)"), "{stdout}");
}

#[test]
fn cross_shard_sim_and_lab_report_per_protocol() {
    let out = settle(&["sim", "--shards", "3", "--protocol", "paxos-commit", "--seeds", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("protocol = paxos-commit"), "{stdout}");
    assert!(stdout.contains("atomicity") && !stdout.contains("VIOLATED"), "{stdout}");

    let out = settle(&["sim", "--shards", "3", "--protocol", "3pc", "--seed", "1"]);
    assert!(text(&out.stderr).contains("unsafe under network partitions"), "3pc says so");

    let out = settle(&["sim", "--shards", "3", "--protocol", "4pc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("expected 2pc, 3pc or paxos-commit"));

    let out = settle(&["lab", "--fault-free", "--fault-ms", "2000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for protocol in ["== 2pc ==", "== 3pc ==", "== paxos-commit =="] {
        assert!(stdout.contains(protocol), "{stdout}");
    }
    assert!(stdout.contains("messages / txn") && stdout.contains("forced writes / txn"));
    assert!(stdout.contains("invariant violations         none"), "{stdout}");
}
