//! Flip and truncate bytes: damage a real node's data directory and start the `settle`
//! binary on it. It must either refuse to start with a clear error (corruption,
//! checksum, gap), or serve a state that is exactly a prefix of the acknowledged
//! batches: never a state with wrong data.
//!
//! Two pristine data directories are written by a node that is then SIGKILLed (a clean
//! stop would checkpoint and drop the log): one with the whole history in the log, one
//! with a node checkpointing every 64 KiB so that a checkpoint exists and the log holds
//! only what followed it. Each corruption is made on a fresh copy of one of them: one
//! byte flipped in a log segment, a segment truncated, or (second directory) the
//! checkpoint flipped or truncated. When the node serves, the test also writes the next
//! batch and restarts once more, so that a recovery that "succeeds" but leaves the log
//! unusable for the next restart is caught too.
//!
//! A second test builds one specific damaged state through the binary: a checkpoint
//! that reaches past the end of the log, whose last (stale) segment has a torn tail.
//!
//! Seeded: `SETTLE_SEED=<u64>` picks the data and the damage; the seed is printed when
//! the test fails. Checkpoints are written in the background, so the second
//! directory's exact layout (which segments survive, a left-over `checkpoint.tmp`)
//! depends on timing as well: a failure message names the layout it saw. Depends on
//! `settle start --checkpoint-bytes N`.

mod fault_support;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::iter::repeat_n;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use settle_client::Client;
use settle_ledger::{Account, Transfer};

use fault_support::{
    accounts, check_balances, checkpoint_every, copy_dir, create_accounts, lookup_transfers,
    patient_options, recovery_reports, replay, runtime, same_transfer, seed_from_env,
    send_acknowledged, start, tail, transfer_batch, Ids, NodeProcess, Rng, SeedReport, Started,
};

const DEFAULT_SEED: u64 = 0xc0de_0bad_f11e_0002;
const ACCOUNTS: usize = 20;
/// Corruptions per pristine directory.
const CORRUPTIONS_EACH: usize = 15;
const SMALL_CHECKPOINT_BYTES: u64 = 64 << 10;

/// A data directory as the killed node left it, and what it had acknowledged.
struct Pristine {
    name: &'static str,
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// Acknowledged transfer batches, in order (the accounts batch came first).
    batches: Vec<Vec<Transfer>>,
    /// Each transfer's timestamp as served by the undamaged directory.
    timestamps: HashMap<u128, u64>,
}

/// How much of the history a node serves: the accounts batch, then `batches` of the
/// transfer batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Prefix {
    accounts: bool,
    batches: usize,
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipWal { segment: usize, offset: u64, mask: u8 },
    TruncateWal { segment: usize, len: u64 },
    FlipCheckpoint { offset: u64, mask: u8 },
    TruncateCheckpoint { len: u64 },
}

#[derive(Default)]
struct Figures {
    refused: usize,
    recovered_to_prefix: usize,
    /// Outcomes by kind of damage: (refused, prefix).
    by_kind: BTreeMap<&'static str, (usize, usize)>,
    /// The prefixes served (transfer batches / all of them), by pristine directory.
    prefixes: BTreeMap<&'static str, Vec<String>>,
    /// The distinct refusal reasons (error line with paths and numbers dropped).
    reasons: BTreeMap<String, usize>,
}

#[test]
fn flip_and_truncate_bytes() {
    let seed = seed_from_env(DEFAULT_SEED);
    let _report = SeedReport { test: "corruption", seed };
    let started = std::time::Instant::now();
    let mut rng = Rng::new(seed);
    let runtime = runtime();
    let accounts = accounts(&mut rng, ACCOUNTS);
    let mut ids = Ids::new();

    // The whole history in one log segment.
    let log_only = write_pristine(
        &runtime,
        &mut rng,
        &mut ids,
        &accounts,
        "log",
        Vec::new(),
        &[const { 1..=300 }; 12],
    );
    // A checkpoint, and a log holding (usually) a few small records after it.
    let checkpointed = write_pristine(
        &runtime,
        &mut rng,
        &mut ids,
        &accounts,
        "checkpoint",
        checkpoint_every(SMALL_CHECKPOINT_BYTES),
        &repeat_n(300..=500, 6).chain(repeat_n(1..=20, 3)).collect::<Vec<_>>(),
    );
    assert!(
        checkpointed.dir.path().join("checkpoint").exists(),
        "no checkpoint was written: is --checkpoint-bytes honoured?"
    );

    let work = tempfile::tempdir().expect("tempdir");
    let mut figures = Figures::default();
    for (case, pristine) in [&log_only, &checkpointed]
        .into_iter()
        .flat_map(|p| repeat_n(p, CORRUPTIONS_EACH))
        .enumerate()
    {
        let dir = work.path().join(format!("case-{case}"));
        copy_dir(pristine.dir.path(), &dir);
        let damage = damage(&mut rng, &dir);
        apply(&dir, damage);
        let context = format!(
            "case {case} ({} directory: {}): {damage:?}",
            pristine.name,
            layout(pristine.dir.path())
        );
        let kind = kind(damage);
        match start(&dir, &pristine.args) {
            Started::Exited { status, stdout, stderr } => {
                let lower = stderr.to_lowercase();
                assert!(
                    !status.success()
                        && ["corrupt", "checksum", "gap"].iter().any(|w| lower.contains(w)),
                    "{context}: the node exited ({status}) without a clear corruption error\n\
                     stdout: {stdout:?}\nstderr:\n{stderr}"
                );
                figures.refused += 1;
                figures.by_kind.entry(kind).or_default().0 += 1;
                *figures.reasons.entry(reason(&stderr)).or_default() += 1;
            }
            Started::Serving(node) => {
                let prefix = runtime
                    .block_on(check_prefix_and_continue(node, &dir, pristine, &accounts, &context));
                figures.recovered_to_prefix += 1;
                figures.prefixes.entry(pristine.name).or_default().push(match prefix.accounts {
                    true => format!("{}/{}", prefix.batches, pristine.batches.len()),
                    false => "empty".to_string(),
                });
                figures.by_kind.entry(kind).or_default().1 += 1;
            }
        }
        fs::remove_dir_all(&dir).expect("remove the case's copy");
    }

    eprintln!(
        "corruption: seed {seed:#x}, {:?} elapsed: {} corruptions, {} refused, {} recovered \
         to a prefix",
        started.elapsed(),
        figures.refused + figures.recovered_to_prefix,
        figures.refused,
        figures.recovered_to_prefix,
    );
    for (kind, (refused, prefix)) in &figures.by_kind {
        eprintln!("  {kind:<20} refused {refused:>2}  prefix {prefix:>2}");
    }
    for (name, prefixes) in &figures.prefixes {
        eprintln!("  prefixes served from the {name} directory: {}", prefixes.join(" "));
    }
    for (reason, count) in &figures.reasons {
        eprintln!("  refusal x{count}: {reason}");
    }
}

/// Starts a node on a fresh directory with `args`, creates the accounts and one batch
/// of transfers per entry of `sizes` (its size drawn from it), SIGKILLs the node, and
/// checks that an undamaged copy serves everything.
fn write_pristine(
    runtime: &tokio::runtime::Runtime,
    rng: &mut Rng,
    ids: &mut Ids,
    accounts: &[Account],
    name: &'static str,
    args: Vec<String>,
    sizes: &[RangeInclusive<u64>],
) -> Pristine {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), &args).serving();
    let batches = runtime.block_on(async {
        let client = node.connect(patient_options()).await;
        create_accounts(&client, accounts).await;
        let mut batches = Vec::new();
        for size in sizes {
            let batch = transfer_batch(rng, ids, accounts, size.clone());
            send_acknowledged(&client, &batch).await;
            batches.push(batch);
        }
        batches
    });
    node.kill();

    let mut pristine = Pristine { name, dir, args, batches, timestamps: HashMap::new() };
    // The undamaged directory (on a copy: recovery may write) serves every batch; its
    // timestamps are the reference for every damaged copy.
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(pristine.dir.path(), copy.path());
    let node = start(copy.path(), &pristine.args).serving();
    let timestamps = runtime.block_on(async {
        let client = node.connect(patient_options()).await;
        let ids: Vec<u128> = pristine.batches.iter().flatten().map(|t| t.id).collect();
        let stored = lookup_transfers(&client, &ids).await;
        assert_eq!(stored.len(), ids.len(), "{name}: the undamaged directory lost transfers");
        check_balances(&client, accounts, &replay(accounts, &pristine.batches))
            .await
            .unwrap_or_else(|problem| panic!("{name}: the undamaged directory: {problem}"));
        stored.into_iter().map(|(id, t)| (id, t.timestamp)).collect()
    });
    node.kill();
    pristine.timestamps = timestamps;
    eprintln!("{name} directory: {}", layout(pristine.dir.path()));
    pristine
}

/// The data directory's files and sizes, for the test's output.
fn layout(dir: &Path) -> String {
    let mut files: Vec<String> = [dir.to_path_buf(), dir.join("wal")]
        .iter()
        .flat_map(|d| fs::read_dir(d).expect("read_dir"))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.strip_prefix(dir).expect("inside").display().to_string();
            format!("{name} ({} B)", len(&path))
        })
        .collect();
    files.sort();
    files.join(", ")
}

/// The log's segment files, in name (= op) order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .expect("the wal directory")
        .map(|entry| entry.expect("a wal entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

/// Picks a damage for the data directory `dir`.
fn damage(rng: &mut Rng, dir: &Path) -> Damage {
    let segments = segments(dir);
    let damageable: Vec<usize> = (0..segments.len()).filter(|&i| len(&segments[i]) > 0).collect();
    let checkpoint = dir.join("checkpoint");
    let checkpoint_len = if checkpoint.exists() { len(&checkpoint) } else { 0 };
    let mask = rng.range(1, 255) as u8;
    assert!(!damageable.is_empty() || checkpoint_len > 0, "nothing to damage in {dir:?}");
    loop {
        match rng.range(0, 9) {
            0..=4 if !damageable.is_empty() => {
                let segment = damageable[rng.index(damageable.len())];
                let offset = rng.range(0, len(&segments[segment]) - 1);
                return Damage::FlipWal { segment, offset, mask };
            }
            5..=6 if !damageable.is_empty() => {
                let segment = damageable[rng.index(damageable.len())];
                let len = rng.range(0, len(&segments[segment]) - 1);
                return Damage::TruncateWal { segment, len };
            }
            7..=8 if checkpoint_len > 0 => {
                let offset = rng.range(0, checkpoint_len - 1);
                return Damage::FlipCheckpoint { offset, mask };
            }
            9 if checkpoint_len > 0 => {
                return Damage::TruncateCheckpoint { len: rng.range(0, checkpoint_len - 1) };
            }
            _ => {}
        }
    }
}

fn kind(damage: Damage) -> &'static str {
    match damage {
        Damage::FlipWal { .. } => "flip wal byte",
        Damage::TruncateWal { .. } => "truncate wal",
        Damage::FlipCheckpoint { .. } => "flip checkpoint byte",
        Damage::TruncateCheckpoint { .. } => "truncate checkpoint",
    }
}

fn apply(dir: &Path, damage: Damage) {
    let flip = |path: &Path, offset: u64, mask: u8| {
        let mut bytes = fs::read(path).expect("read");
        bytes[offset as usize] ^= mask;
        fs::write(path, bytes).expect("write");
    };
    let truncate = |path: &Path, len: u64| {
        OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(len)).expect("truncate");
    };
    match damage {
        Damage::FlipWal { segment, offset, mask } => flip(&segments(dir)[segment], offset, mask),
        Damage::TruncateWal { segment, len } => truncate(&segments(dir)[segment], len),
        Damage::FlipCheckpoint { offset, mask } => flip(&dir.join("checkpoint"), offset, mask),
        Damage::TruncateCheckpoint { len } => truncate(&dir.join("checkpoint"), len),
    }
}

/// The `error:` line of a refusing node, without paths and numbers (for the summary).
fn reason(stderr: &str) -> String {
    let line = stderr.lines().rev().find(|l| l.starts_with("error:")).unwrap_or("(no error line)");
    line.split_whitespace()
        .map(|word| {
            if word.contains('/') {
                "<path>"
            } else if word.trim_matches(|c: char| !c.is_alphanumeric()).parse::<u64>().is_ok() {
                "<n>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The node serves: its state must be a prefix of the history. Then the next batch is
/// written, the node killed and restarted, and the state must be the prefix one longer.
/// Returns the first prefix.
async fn check_prefix_and_continue(
    node: NodeProcess,
    dir: &Path,
    pristine: &Pristine,
    accounts: &[Account],
    context: &str,
) -> Prefix {
    let fail = |node: &NodeProcess, problem: String| -> ! {
        panic!(
            "{context}: the node serves a state that is not a prefix of the history: \
             {problem}\nstderr:\n{}",
            tail(&node.stderr.text(), 40)
        )
    };
    let client = node.connect(patient_options()).await;
    let prefix = match served_prefix(&client, pristine, accounts, None).await {
        Ok(prefix) => prefix,
        Err(problem) => fail(&node, problem),
    };

    // Continue the history by one step, durably, then restart.
    let next = if !prefix.accounts {
        create_accounts(&client, accounts).await;
        Prefix { accounts: true, batches: 0 }
    } else if let Some(batch) = pristine.batches.get(prefix.batches) {
        let exists = send_acknowledged(&client, batch).await;
        if exists > 0 {
            fail(&node, format!("{exists} transfers of batch {} already existed", prefix.batches));
        }
        Prefix { accounts: true, batches: prefix.batches + 1 }
    } else {
        prefix
    };
    drop(client);
    let stderr = node.kill();
    let first_reports = recovery_reports(&stderr);
    let node = match start(dir, &pristine.args) {
        Started::Serving(node) => node,
        Started::Exited { status, stderr, .. } => panic!(
            "{context}: recovered to {prefix:?} (recovery {first_reports:?}), wrote one more \
             step, and the next start failed ({status}):\n{stderr}"
        ),
    };
    let client = node.connect(patient_options()).await;
    match served_prefix(&client, pristine, accounts, Some(prefix.batches)).await {
        Ok(served) if served == next => {}
        Ok(served) => fail(
            &node,
            format!("after recovering to {prefix:?} and writing one more step: {served:?}"),
        ),
        Err(problem) => fail(&node, format!("after recovering to {prefix:?}: {problem}")),
    }
    node.kill();
    prefix
}

/// The prefix of the history the node serves, or what makes its state no prefix.
/// Timestamps must be the undamaged directory's, except for batches from index
/// `rewritten_from` on (written again after a recovery).
async fn served_prefix(
    client: &Client,
    pristine: &Pristine,
    accounts: &[Account],
    rewritten_from: Option<usize>,
) -> Result<Prefix, String> {
    let account_ids: Vec<u128> = accounts.iter().map(|a| a.id).collect();
    let found_accounts = client.lookup_accounts(&account_ids).await.expect("lookup_accounts");
    let ids: Vec<u128> = pristine.batches.iter().flatten().map(|t| t.id).collect();
    let stored = lookup_transfers(client, &ids).await;
    if found_accounts.is_empty() {
        return match stored.len() {
            0 => Ok(Prefix { accounts: false, batches: 0 }),
            n => Err(format!("no accounts, but {n} transfers")),
        };
    }

    // Each batch whole or absent, the present ones first.
    let mut present = 0;
    for (index, batch) in pristine.batches.iter().enumerate() {
        let found = batch.iter().filter(|t| stored.contains_key(&t.id)).count();
        match found {
            0 => {}
            n if n == batch.len() && present == index => present += 1,
            n if n == batch.len() => {
                return Err(format!("batch {index} is present but batch {present} is not"))
            }
            n => return Err(format!("batch {index} is partly present: {n} of {}", batch.len())),
        }
    }
    for (index, batch) in pristine.batches[..present].iter().enumerate() {
        let check_timestamp = rewritten_from.is_none_or(|from| index < from);
        for sent in batch {
            let found = &stored[&sent.id];
            if !same_transfer(found, sent) {
                return Err(format!("transfer {:#x}: stored {found:?}, sent {sent:?}", sent.id));
            }
            if check_timestamp && found.timestamp != pristine.timestamps[&sent.id] {
                return Err(format!(
                    "transfer {:#x}: timestamp {} instead of {}",
                    sent.id, found.timestamp, pristine.timestamps[&sent.id]
                ));
            }
        }
    }
    check_balances(client, accounts, &replay(accounts, &pristine.batches[..present])).await?;
    Ok(Prefix { accounts: true, batches: present })
}

/// A log segment that ends before the checkpoint, with a torn last record: what is left
/// when the segments after a checkpoint are lost and the stale segment it covers is
/// damaged (the state that the wal's "checkpoint reaches past the log's end" branch
/// exists for, plus a torn tail). Refusing is fine, and so is serving the checkpoint's
/// state, but whatever the node does on the first start it must do again on the next.
#[test]
fn a_torn_segment_behind_the_checkpoint_gives_the_same_answer_twice() {
    let seed = seed_from_env(DEFAULT_SEED);
    let _report = SeedReport { test: "corruption", seed };
    let mut rng = Rng::new(seed);
    let runtime = runtime();
    let accounts = accounts(&mut rng, ACCOUNTS);
    let mut ids = Ids::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut batches = Vec::new();

    // 1. The accounts and two batches, in segment 1, no checkpoint.
    let node = start(dir.path(), &[]).serving();
    runtime.block_on(async {
        let client = node.connect(patient_options()).await;
        create_accounts(&client, &accounts).await;
        for _ in 0..2 {
            let batch = transfer_batch(&mut rng, &mut ids, &accounts, 10..=50);
            send_acknowledged(&client, &batch).await;
            batches.push(batch);
        }
    });
    node.kill();
    let old_segments = segments(dir.path());
    assert_eq!(old_segments.len(), 1, "{}", layout(dir.path()));
    let stale = fs::read(&old_segments[0]).expect("read segment 1");

    // 2. Two more batches, then a clean stop: it writes a checkpoint of everything and
    // deletes the segments it covers, segment 1 included.
    let node = start(dir.path(), &[]).serving();
    let timestamps = runtime.block_on(async {
        let client = node.connect(patient_options()).await;
        for _ in 0..2 {
            let batch = transfer_batch(&mut rng, &mut ids, &accounts, 10..=50);
            send_acknowledged(&client, &batch).await;
            batches.push(batch);
        }
        let ids: Vec<u128> = batches.iter().flatten().map(|t| t.id).collect();
        let stored = lookup_transfers(&client, &ids).await;
        stored.into_iter().map(|(id, t)| (id, t.timestamp)).collect()
    });
    let (clean, stderr) = node.stop();
    assert!(clean, "the node did not stop cleanly on SIGTERM:\n{stderr}");
    assert!(dir.path().join("checkpoint").exists(), "{}", layout(dir.path()));
    assert!(!old_segments[0].exists(), "segment 1 survived: {}", layout(dir.path()));

    // 3. The newer segments are lost; the stale one is back, its last record torn.
    for segment in segments(dir.path()) {
        fs::remove_file(segment).expect("remove a segment");
    }
    fs::write(&old_segments[0], &stale[..stale.len() - 50]).expect("write the stale segment");
    let damaged = layout(dir.path());
    let pristine = Pristine { name: "stale", dir, args: Vec::new(), batches, timestamps };

    let mut first: Option<Prefix> = None;
    for attempt in ["first", "second"] {
        let outcome = match start(pristine.dir.path(), &pristine.args) {
            Started::Exited { status, stderr, .. } => {
                let lower = stderr.to_lowercase();
                assert!(
                    !status.success()
                        && ["corrupt", "checksum", "gap"].iter().any(|w| lower.contains(w)),
                    "{attempt} start on [{damaged}]: exited ({status}) without a clear \
                     corruption error:\n{stderr}"
                );
                Err(reason(&stderr))
            }
            Started::Serving(node) => {
                let served = runtime.block_on(async {
                    let client = node.connect(patient_options()).await;
                    served_prefix(&client, &pristine, &accounts, None).await
                });
                let stderr = node.kill();
                let prefix = served.unwrap_or_else(|problem| {
                    panic!("{attempt} start on [{damaged}]: not a prefix: {problem}")
                });
                Ok((prefix, recovery_reports(&stderr), layout(pristine.dir.path())))
            }
        };
        eprintln!("{attempt} start on [{damaged}]: {outcome:?}");
        match (attempt, outcome) {
            ("first", Ok((prefix, ..))) => first = Some(prefix),
            ("first", Err(_)) => return,
            (_, Ok((prefix, ..))) => assert_eq!(Some(prefix), first, "the second start differs"),
            (_, Err(reason)) => panic!(
                "the first start served {first:?} from [{damaged}] and left the data \
                 directory so that the second start refuses: {reason}"
            ),
        }
    }
}
