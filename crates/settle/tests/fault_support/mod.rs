//! What the fault tests (`crash.rs`, `corruption.rs`) share: a seeded RNG, a `settle
//! start` child process that is killed on drop, the workload (accounts without limits,
//! batches of random transfers) and the model the node's state is checked against.
//!
//! Processes are watched without sleeps: a node is ready when it prints `listening on`,
//! and its stdout and stderr are drained by threads, so a chatty or silent node can
//! never block the test. (A node expected to exit on its own is polled for, with a
//! deadline: [`NodeProcess::wait_exit`].)

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use settle_client::{Client, ClientOptions};
use settle_ledger::{Account, CreateAccountResult, CreateTransferResult, Transfer};

pub const SETTLE: &str = env!("CARGO_BIN_EXE_settle");

/// Longest a node may take to either serve or exit. Only a hung node hits this.
const START_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Seeds.

/// The seed from `SETTLE_SEED` (decimal or 0x-hex), else `default`.
/// The runtime the fault tests drive their clients on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub fn seed_from_env(default: u64) -> u64 {
    match std::env::var("SETTLE_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("SETTLE_SEED={text:?} is not a u64"))
        }
        Err(_) => default,
    }
}

/// Prints how to reproduce the run if the test panics while this is alive.
pub struct SeedReport {
    pub test: &'static str,
    pub seed: u64,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "\n{} failed with seed {:#x}; reproduce with SETTLE_SEED={:#x} cargo test -p \
                 settle --test {}\n",
                self.test, self.seed, self.seed, self.test
            );
        }
    }
}

/// splitmix64: small, seedable, good enough to pick test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.next_u64() % (high - low + 1)
    }

    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0);
        (self.next_u64() % len as u64) as usize
    }

    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.next_u64() % denominator < numerator
    }
}

// ---------------------------------------------------------------------------------------
// The node process.

/// Output collected by a drain thread; shared so it can be read while the node runs.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A serving `settle start` child. Dropping it SIGKILLs and reaps the process.
pub struct NodeProcess {
    child: Child,
    pub address: String,
    pub stderr: Captured,
    stderr_thread: Option<thread::JoinHandle<()>>,
}

/// How a start attempt ended.
pub enum Started {
    Serving(NodeProcess),
    /// The process exited before printing `listening on`.
    Exited {
        status: ExitStatus,
        stdout: Vec<String>,
        stderr: String,
    },
}

impl Started {
    pub fn serving(self) -> NodeProcess {
        match self {
            Started::Serving(node) => node,
            Started::Exited { status, stdout, stderr } => panic!(
                "the node exited ({status}) instead of serving\nstdout: {stdout:?}\nstderr:\n{stderr}"
            ),
        }
    }
}

/// Starts `settle start --data-dir <data_dir> --listen 127.0.0.1:0 <extra_args>` and
/// waits until it either prints `listening on ADDR` or exits.
pub fn start(data_dir: &Path, extra_args: &[String]) -> Started {
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    args.extend_from_slice(extra_args);
    start_with(data_dir, &args)
}

/// Starts node `node` of the cluster described by `config` (`settle start --config
/// --node`) and waits until it serves or exits.
pub fn start_cluster_node(config: &Path, node: u64, data_dir: &Path, extra: &[String]) -> Started {
    let mut args = vec!["--config".to_string(), config.display().to_string()];
    args.extend(["--node".to_string(), node.to_string()]);
    args.extend_from_slice(extra);
    start_with(data_dir, &args)
}

fn start_with(data_dir: &Path, extra_args: &[String]) -> Started {
    let mut child = Command::new(SETTLE)
        .arg("start")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn settle");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr = Captured::default();
    let stderr_thread = {
        let stderr = stderr.clone();
        thread::spawn(move || {
            let mut pipe = stderr_pipe;
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => stderr.0.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        })
    };
    // The guard exists before the first read, so any failure below still kills the node.
    let mut node =
        NodeProcess { child, address: String::new(), stderr, stderr_thread: Some(stderr_thread) };
    // Stdout lines come over a channel so that waiting for them is bounded; the thread
    // keeps draining stdout after the `listening on` line until the process ends.
    let (lines, received) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                // Nobody listens any more; keep reading so the node never blocks.
                continue;
            }
        }
    });
    let mut printed = Vec::new();
    loop {
        match received.recv_timeout(START_TIMEOUT) {
            Ok(line) => {
                if let Some(address) = line.strip_prefix("listening on ") {
                    node.address = address.trim().to_string();
                    return Started::Serving(node);
                }
                printed.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = node.child.wait().expect("wait for settle");
                let stderr = node.finish_stderr();
                return Started::Exited { status, stdout: printed, stderr };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "settle neither served nor exited within {START_TIMEOUT:?}\nstdout: \
                 {printed:?}\nstderr:\n{}",
                node.stderr.text()
            ),
        }
    }
}

impl NodeProcess {
    /// SIGKILL (std's `Child::kill`), then reap.
    pub fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
        self.finish_stderr()
    }

    /// SIGTERM, the designed way down (drain, final checkpoint), then reap. Returns
    /// whether the process exited 0, and its stderr.
    pub fn stop(mut self) -> (bool, String) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let status = self.child.wait().expect("reap the node");
        (status.success(), self.finish_stderr())
    }

    /// Waits for the node to exit on its own (at most `limit`), then returns its exit
    /// status and stderr; panics, killing it, if it is still running by then.
    pub fn wait_exit(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the node") {
                return (status, self.finish_stderr());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node still runs after {limit:?}\nstderr:\n{}",
                self.stderr.text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Joins the stderr thread (the process must have exited) and returns its output.
    fn finish_stderr(&mut self) -> String {
        if let Some(thread) = self.stderr_thread.take() {
            let _ = thread.join();
        }
        self.stderr.text()
    }

    pub async fn connect(&self, options: ClientOptions) -> Client {
        Client::connect_with(std::slice::from_ref(&self.address), options)
            .await
            .unwrap_or_else(|e| panic!("connect to the node at {}: {e}", self.address))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // A no-op when the process was already killed and reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client options for a node on localhost that is expected to be up: a request that
/// gets no answer is a failure, not something to wait out for minutes.
pub fn patient_options() -> ClientOptions {
    ClientOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(30),
    }
}

/// One attempt only: for the request that races the SIGKILL (a retry could otherwise
/// outlive the node and reach whatever listens on its port next).
pub fn single_attempt() -> ClientOptions {
    ClientOptions { max_attempts: 1, ..patient_options() }
}

/// The extra arguments that make a node checkpoint every `bytes` of log.
pub fn checkpoint_every(bytes: u64) -> Vec<String> {
    vec!["--checkpoint-bytes".to_string(), bytes.to_string()]
}

// ---------------------------------------------------------------------------------------
// Workload and model.

pub const LEDGER: u32 = 7;
pub const ACCOUNT_CODE: u16 = 10;
pub const TRANSFER_CODE: u16 = 20;

/// `count` accounts without balance limits (so every transfer between two distinct
/// ones is valid) and with random 128-bit ids.
pub fn accounts(rng: &mut Rng, count: usize) -> Vec<Account> {
    (0..count)
        .map(|i| Account {
            id: (u128::from(rng.next_u64()) << 64) | (i as u128 + 1),
            user_data_64: rng.next_u64(),
            ledger: LEDGER,
            code: ACCOUNT_CODE,
            ..Default::default()
        })
        .collect()
}

/// Hands out transfer ids that are unique across the whole test.
pub struct Ids {
    next: u64,
}

impl Ids {
    pub fn new() -> Ids {
        Ids { next: 1 }
    }

    /// Random high bits over a counter: unique, and wide enough to exercise 128 bits.
    pub fn next(&mut self, rng: &mut Rng) -> u128 {
        self.next += 1;
        (u128::from(rng.next_u64() | 1) << 64) | u128::from(self.next)
    }
}

/// A batch of random transfers (amounts 1..=100) between distinct accounts, its size
/// drawn from `sizes`.
pub fn transfer_batch(
    rng: &mut Rng,
    ids: &mut Ids,
    accounts: &[Account],
    sizes: RangeInclusive<u64>,
) -> Vec<Transfer> {
    let size = rng.range(*sizes.start(), *sizes.end());
    (0..size)
        .map(|_| {
            let debit = rng.index(accounts.len());
            let mut credit = rng.index(accounts.len() - 1);
            if credit >= debit {
                credit += 1;
            }
            Transfer {
                id: ids.next(rng),
                debit_account_id: accounts[debit].id,
                credit_account_id: accounts[credit].id,
                amount: u128::from(rng.range(1, 100)),
                user_data_128: u128::from(rng.next_u64()),
                user_data_32: rng.next_u64() as u32,
                ledger: LEDGER,
                code: TRANSFER_CODE,
                ..Default::default()
            }
        })
        .collect()
}

/// Posted balances per account id: (debits_posted, credits_posted).
pub type Balances = HashMap<u128, (u128, u128)>;

/// The balances after applying `batches` (in any order: they are plain sums).
pub fn replay<'a>(
    accounts: &[Account],
    batches: impl IntoIterator<Item = &'a Vec<Transfer>>,
) -> Balances {
    let mut balances: Balances = accounts.iter().map(|a| (a.id, (0, 0))).collect();
    for transfer in batches.into_iter().flatten() {
        balances.get_mut(&transfer.debit_account_id).expect("known debit account").0 +=
            transfer.amount;
        balances.get_mut(&transfer.credit_account_id).expect("known credit account").1 +=
            transfer.amount;
    }
    balances
}

/// Whether a stored transfer is the event that was sent (the node assigns the timestamp).
pub fn same_transfer(stored: &Transfer, sent: &Transfer) -> bool {
    stored.timestamp != 0 && Transfer { timestamp: 0, ..*stored } == *sent
}

/// Whether a stored account is the one that was created, with these posted balances.
pub fn same_account(stored: &Account, sent: &Account, (debits, credits): (u128, u128)) -> bool {
    stored.timestamp != 0
        && Account { timestamp: 0, ..*stored }
            == Account { debits_posted: debits, credits_posted: credits, ..*sent }
}

/// The stored transfers among `ids`, by id.
pub async fn lookup_transfers(client: &Client, ids: &[u128]) -> HashMap<u128, Transfer> {
    let found = client.lookup_transfers(ids).await.expect("lookup_transfers");
    found.into_iter().map(|t| (t.id, t)).collect()
}

/// Checks that every account exists, unchanged but for its posted balances, which must
/// equal `expected`. Returns a description of the first difference.
pub async fn check_balances(
    client: &Client,
    accounts: &[Account],
    expected: &Balances,
) -> Result<(), String> {
    let ids: Vec<u128> = accounts.iter().map(|a| a.id).collect();
    let stored = client.lookup_accounts(&ids).await.expect("lookup_accounts");
    if stored.len() != accounts.len() {
        return Err(format!("{} of {} accounts found", stored.len(), accounts.len()));
    }
    for (stored, sent) in stored.iter().zip(accounts) {
        let want = expected[&sent.id];
        if !same_account(stored, sent, want) {
            return Err(format!(
                "account {:#x}: stored {stored:?}, expected debits_posted {} credits_posted {}",
                sent.id, want.0, want.1
            ));
        }
    }
    Ok(())
}

/// Creates the accounts on a fresh node.
pub async fn create_accounts(client: &Client, accounts: &[Account]) {
    let results = client.create_accounts(accounts).await.expect("create_accounts");
    assert!(
        results.iter().all(|r| matches!(r, CreateAccountResult::Ok | CreateAccountResult::Exists)),
        "create_accounts: {results:?}"
    );
}

/// Sends a batch that must be applied in full: every result `ok`, or `exists` if the
/// client retried an attempt that had been applied. Returns how many came back `exists`.
pub async fn send_acknowledged(client: &Client, batch: &[Transfer]) -> usize {
    let results = client.create_transfers(batch).await.expect("create_transfers");
    assert_eq!(results.len(), batch.len(), "one result per transfer");
    let bad: Vec<_> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| !matches!(r, CreateTransferResult::Ok | CreateTransferResult::Exists))
        .take(5)
        .collect();
    assert!(bad.is_empty(), "transfers refused in an always-valid batch: {bad:?}");
    results.iter().filter(|r| **r == CreateTransferResult::Exists).count()
}

/// The recovery reports a node logged: (checkpoint_op, replayed, truncated_bytes).
pub fn recovery_reports(stderr: &str) -> Vec<(u64, u64, u64)> {
    let field = |line: &str, name: &str| -> u64 {
        let at = line.find(name).unwrap_or_else(|| panic!("no {name} in {line}")) + name.len();
        let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("bad {name} in {line}"))
    };
    stderr
        .lines()
        .filter(|line| line.contains("RecoveryReport"))
        .map(|line| {
            (
                field(line, "checkpoint_op: "),
                field(line, "replayed: "),
                field(line, "truncated_bytes: "),
            )
        })
        .collect()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A copy of directory `from` (files and subdirectories) at `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
