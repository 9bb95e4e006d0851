//! Kill at random moments: a real `settle start` process is SIGKILLed right after it
//! was handed one more batch, again and again on the same data directory, and after
//! every restart the state must be exactly what was acknowledged (plus, possibly, the
//! batch that raced the kill, entirely or not at all; entirely if its reply arrived).
//! Resending that batch must then give `exists` for all of it or `ok` for all of it:
//! never a second application.
//!
//! Seeded: `SETTLE_SEED=<u64>` picks the accounts, the batches and the kill moments:
//! the number of acknowledged batches before the kill, and whether the kill follows
//! the racing batch at once (it is then almost never executed yet) or once a
//! one-transfer marker batch sent after it is acknowledged (it is then usually
//! executed, sometimes answered, sometimes not). No sleeps time anything. The seed is
//! printed when the test fails.
//!
//! Rounds alternate between a node that checkpoints every 64 KiB of log (so
//! checkpoints are written and covered log segments deleted while it runs, and a kill
//! can land in the middle of one) and a node with the default (no checkpoint before
//! 1 GiB). Depends on `settle start --checkpoint-bytes N`.

mod fault_support;

use std::collections::HashMap;

use settle_client::Client;
use settle_ledger::{Account, CreateTransferResult, Transfer};

use fault_support::{
    accounts, check_balances, checkpoint_every, create_accounts, lookup_transfers, patient_options,
    recovery_reports, replay, runtime, same_transfer, seed_from_env, send_acknowledged,
    single_attempt, start, tail, transfer_batch, Ids, Rng, SeedReport,
};

const DEFAULT_SEED: u64 = 0x5e77_1e00_c4a5_0001;
/// Kill-and-restart rounds; the state is checked after each.
const ROUNDS: usize = 10;
const ACCOUNTS: usize = 50;
const BATCH_SIZE_MAX: u64 = 500;
/// Acknowledged batches per round, before the one that races the kill.
const BATCHES_PER_ROUND_MAX: u64 = 20;
const SMALL_CHECKPOINT_BYTES: u64 = 64 << 10;

/// The batch that was sent without waiting, just before the SIGKILL.
struct InFlight {
    batch: Vec<Transfer>,
    /// Whether its reply arrived before the node died (then it must have survived).
    acknowledged: bool,
    /// How many acknowledged batches preceded it: it commits after those, and before or
    /// after the marker batch that may follow it.
    sent_after: usize,
}

#[derive(Default, Debug)]
struct Figures {
    acknowledged_batches: usize,
    acknowledged_transfers: usize,
    /// Results that came back `exists` on first send (the client retried internally).
    retried_exists: usize,
    in_flight_present: usize,
    in_flight_absent: usize,
    in_flight_acknowledged: usize,
    /// Rounds killed after a marker batch rather than at once.
    marker_kills: usize,
    checkpoints_written: usize,
    /// Restarts that loaded a checkpoint, records replayed after it, torn tails cut.
    restarts_from_checkpoint: usize,
    records_replayed: u64,
    torn_tails_truncated: usize,
}

#[test]
fn kill_at_random_moments() {
    let seed = seed_from_env(DEFAULT_SEED);
    let _report = SeedReport { test: "crash", seed };
    let started = std::time::Instant::now();
    let mut rng = Rng::new(seed);
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let accounts = accounts(&mut rng, ACCOUNTS);
    let mut ids = Ids::new();
    // Every batch the node acknowledged (or that was resent after the kill and then
    // acknowledged), in commit order.
    let mut acknowledged: Vec<Vec<Transfer>> = Vec::new();
    // The timestamp each transfer had when first looked up: replay must keep it.
    let mut timestamps: HashMap<u128, u64> = HashMap::new();
    let mut in_flight: Option<InFlight> = None;
    let mut previous_stderr = String::new();
    let mut figures = Figures::default();

    for round in 0..=ROUNDS {
        let small = round % 2 == 0;
        let args = if small { checkpoint_every(SMALL_CHECKPOINT_BYTES) } else { Vec::new() };
        let node = start(dir.path(), &args).serving();
        let last_round = round == ROUNDS;
        let stderr = runtime.block_on(async {
            let client = node.connect(patient_options()).await;
            if round == 0 {
                create_accounts(&client, &accounts).await;
            } else {
                let verified =
                    verify(&client, &accounts, &acknowledged, in_flight.as_ref(), &mut timestamps)
                        .await;
                let position = verified.unwrap_or_else(|problem| {
                    let restarted = node.stderr.text();
                    panic!(
                        "after restart {round}: {problem}\n--- stderr of the killed node (tail) \
                         ---\n{}\n--- stderr of the restarted node ---\n{restarted}",
                        tail(&previous_stderr, 40),
                    )
                });
                if let Some(in_flight) = in_flight.take() {
                    resend(&client, &in_flight, position.is_some()).await;
                    figures.in_flight_acknowledged += usize::from(in_flight.acknowledged);
                    // Kept in commit order, so that later rounds check timestamps in order.
                    match position {
                        Some(position) => {
                            figures.in_flight_present += 1;
                            acknowledged.insert(position, in_flight.batch);
                        }
                        None => {
                            figures.in_flight_absent += 1;
                            acknowledged.push(in_flight.batch);
                        }
                    }
                }
            }
            if last_round {
                return node.kill();
            }

            // A seeded number of acknowledged batches, then one more that races the kill.
            let batches = rng.range(1, BATCHES_PER_ROUND_MAX);
            for _ in 0..batches {
                let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=BATCH_SIZE_MAX);
                figures.retried_exists += send_acknowledged(&client, &batch).await;
                acknowledged.push(batch);
            }
            let batch = transfer_batch(&mut rng, &mut ids, &accounts, 1..=BATCH_SIZE_MAX);
            let sent_after = acknowledged.len();
            // Its own connection and a single attempt: nothing retries it after the kill.
            let racer = node.connect(single_attempt()).await;
            let request = tokio::spawn({
                let batch = batch.clone();
                async move { racer.create_transfers(&batch).await }
            });
            if rng.chance(1, 2) {
                // Kill once a one-transfer marker batch, sent after the racer, is
                // acknowledged: the racer is then often (not always) executed, and
                // sometimes even answered, before the kill. Killing at once instead
                // almost always finds it not yet executed.
                let marker = transfer_batch(&mut rng, &mut ids, &accounts, 1..=1);
                figures.retried_exists += send_acknowledged(&client, &marker).await;
                acknowledged.push(marker);
                figures.marker_kills += 1;
            }
            let stderr = node.kill();
            let answered = match request.await.expect("the in-flight task") {
                Ok(results) => {
                    assert_eq!(
                        results,
                        vec![CreateTransferResult::Ok; batch.len()],
                        "the in-flight batch was answered before the kill"
                    );
                    true
                }
                Err(_) => false,
            };
            in_flight = Some(InFlight { batch, acknowledged: answered, sent_after });
            stderr
        });
        figures.checkpoints_written += stderr.matches("checkpoint written").count();
        for (checkpoint_op, replayed, truncated_bytes) in recovery_reports(&stderr) {
            figures.restarts_from_checkpoint += usize::from(checkpoint_op > 0);
            figures.records_replayed += replayed;
            figures.torn_tails_truncated += usize::from(truncated_bytes > 0);
        }
        previous_stderr = stderr;
    }

    figures.acknowledged_batches = acknowledged.len();
    figures.acknowledged_transfers = acknowledged.iter().map(Vec::len).sum();
    eprintln!("crash: seed {seed:#x}, {:?} elapsed, {figures:#?}", started.elapsed());
    // Checkpoints are written in the background, so a kill may cut every one short in
    // a round; over all rounds, some must have completed.
    assert!(
        figures.checkpoints_written + figures.restarts_from_checkpoint > 0,
        "no checkpoint was ever written: is --checkpoint-bytes honoured?"
    );
}

/// Checks the restarted node against the model. Returns `None` if the in-flight batch
/// (if any) was not applied, else its place in commit order among `acknowledged`.
async fn verify(
    client: &Client,
    accounts: &[Account],
    acknowledged: &[Vec<Transfer>],
    in_flight: Option<&InFlight>,
    timestamps: &mut HashMap<u128, u64>,
) -> Result<Option<usize>, String> {
    // Every acknowledged transfer, unchanged, in commit order.
    let ids: Vec<u128> = acknowledged.iter().flatten().map(|t| t.id).collect();
    let stored = lookup_transfers(client, &ids).await;
    let mut last_timestamp = 0;
    // The timestamp of the first transfer of each batch.
    let mut batch_starts = Vec::with_capacity(acknowledged.len());
    for (index, batch) in acknowledged.iter().enumerate() {
        for sent in batch {
            let Some(found) = stored.get(&sent.id) else {
                return Err(format!(
                    "acknowledged transfer {:#x} (batch {index} of {}) is missing",
                    sent.id,
                    acknowledged.len()
                ));
            };
            check_transfer(found, sent, &mut last_timestamp, timestamps)?;
        }
        batch_starts.push(stored[&batch[0].id].timestamp);
    }

    // The in-flight batch: all or nothing, and all if it had been acknowledged.
    let Some(in_flight) = in_flight else {
        check_balances(client, accounts, &replay(accounts, acknowledged)).await?;
        return Ok(None);
    };
    let ids: Vec<u128> = in_flight.batch.iter().map(|t| t.id).collect();
    let stored = lookup_transfers(client, &ids).await;
    if !stored.is_empty() && stored.len() != ids.len() {
        return Err(format!(
            "the in-flight batch is partly applied: {} of {} transfers exist",
            stored.len(),
            ids.len()
        ));
    }
    if stored.is_empty() {
        if in_flight.acknowledged {
            return Err("the in-flight batch was acknowledged but is missing".into());
        }
        check_balances(client, accounts, &replay(accounts, acknowledged)).await?;
        return Ok(None);
    }
    // Present: it committed after every batch acknowledged before it was sent, and its
    // timestamps fit between two batches (a batch is applied as one).
    let first = stored[&in_flight.batch[0].id].timestamp;
    let position = (in_flight.sent_after..acknowledged.len())
        .find(|&index| batch_starts[index] > first)
        .unwrap_or(acknowledged.len());
    let mut last_timestamp = match position {
        0 => 0,
        _ => stored_last(client, &acknowledged[position - 1]).await,
    };
    for sent in &in_flight.batch {
        check_transfer(&stored[&sent.id], sent, &mut last_timestamp, timestamps)?;
    }
    if position < acknowledged.len() && last_timestamp >= batch_starts[position] {
        return Err(format!(
            "the in-flight batch's timestamps interleave with acknowledged batch {position}"
        ));
    }
    let applied = acknowledged.iter().chain([&in_flight.batch]);
    check_balances(client, accounts, &replay(accounts, applied)).await?;
    Ok(Some(position))
}

/// The stored timestamp of a batch's last transfer.
async fn stored_last(client: &Client, batch: &[Transfer]) -> u64 {
    let last = batch.last().expect("batches are not empty").id;
    lookup_transfers(client, &[last]).await[&last].timestamp
}

/// A stored transfer must be the one sent, its timestamp must follow every earlier
/// transfer's, and it must not have changed since it was first seen.
fn check_transfer(
    found: &Transfer,
    sent: &Transfer,
    last_timestamp: &mut u64,
    timestamps: &mut HashMap<u128, u64>,
) -> Result<(), String> {
    if !same_transfer(found, sent) {
        return Err(format!("transfer {:#x}: stored {found:?}, sent {sent:?}", sent.id));
    }
    if found.timestamp <= *last_timestamp {
        return Err(format!(
            "transfer {:#x} has timestamp {} after an earlier transfer's {}",
            sent.id, found.timestamp, last_timestamp
        ));
    }
    *last_timestamp = found.timestamp;
    let first_seen = *timestamps.entry(sent.id).or_insert(found.timestamp);
    if first_seen != found.timestamp {
        return Err(format!(
            "transfer {:#x} changed timestamp across a restart: {first_seen} then {}",
            sent.id, found.timestamp
        ));
    }
    Ok(())
}

/// Sends the in-flight batch again: `exists` for all if it had been applied, `ok` for
/// all if not. Never a second application.
async fn resend(client: &Client, in_flight: &InFlight, present: bool) {
    let results = client.create_transfers(&in_flight.batch).await.expect("resend");
    let want = if present { CreateTransferResult::Exists } else { CreateTransferResult::Ok };
    assert!(
        results.iter().all(|r| *r == want),
        "resending the in-flight batch (present: {present}): expected all {want:?}, got {:?}",
        results.iter().filter(|r| **r != want).take(5).collect::<Vec<_>>()
    );
}
