//! The checkers: the guarantees a run is held to.
//!
//! Some run during the run (state machine safety: every replica applies the same entry
//! at the same index, checked as entries apply); the rest at its end, once the faults
//! healed and the replicas had time to catch up. Touches only what the world exposes.

use std::collections::BTreeMap;
use std::fmt;

use settle_ledger::store::Range;
use settle_ledger::{AccountFlags, Read, Reply, Store, Write};
use settle_model::Model;

use crate::workload::Op;
use crate::world::World;

/// One guarantee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Checker {
    /// Replicas apply the same entry (term, write, result) at every index.
    StateMachineSafety,
    /// Once quiet, every live replica has applied the same entries to the same state.
    Convergence,
    /// Per ledger, debits equal credits (posted and pending).
    Conservation,
    /// No account breaks its balance-limit flags.
    Limits,
    /// Executing the committed log serially on the reference model gives the same
    /// result for every entry and the same final records: nothing applied twice,
    /// nothing lost.
    Replay,
    /// Every acknowledged result is in the committed history (and every transfer a
    /// client was told exists is found by later lookups).
    Acknowledged,
    /// Replicas never halt (a committed entry or snapshot they cannot execute).
    NoHalts,
    /// The cluster serves again once the faults heal.
    Liveness,
}

impl Checker {
    pub const ALL: [Checker; 8] = [
        Checker::StateMachineSafety,
        Checker::Convergence,
        Checker::Conservation,
        Checker::Limits,
        Checker::Replay,
        Checker::Acknowledged,
        Checker::NoHalts,
        Checker::Liveness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Checker::StateMachineSafety => "state-machine-safety",
            Checker::Convergence => "convergence",
            Checker::Conservation => "conservation",
            Checker::Limits => "balance-limits",
            Checker::Replay => "replay-on-model",
            Checker::Acknowledged => "acknowledged-survive",
            Checker::NoHalts => "no-halts",
            Checker::Liveness => "liveness",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub checker: Checker,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker.name(), self.detail)
    }
}

/// Violations found, at most a few per checker (the first says enough).
#[derive(Default, Debug)]
pub struct Violations {
    pub found: Vec<Violation>,
}

impl Violations {
    const PER_CHECKER_MAX: usize = 3;

    pub fn add(&mut self, checker: Checker, detail: String) {
        if self.found.iter().filter(|v| v.checker == checker).count() < Self::PER_CHECKER_MAX {
            self.found.push(Violation { checker, detail });
        }
    }
}

/// The checks at the end of a run.
pub fn at_end(world: &mut World) {
    let mut found = Violations::default();
    for replica in world.replicas() {
        if let Some(halt) = replica.halted() {
            found.add(Checker::NoHalts, format!("replica {} halted: {halt}", replica.id()));
        }
    }
    convergence(world, &mut found);
    let Some(reference) =
        world.replicas().filter(|r| r.halted().is_none()).max_by_key(|r| r.applied())
    else {
        found.add(Checker::Liveness, "no replica is running at the end".into());
        world.violations.found.extend(found.found);
        return;
    };
    let ledger = reference.ledger();
    balances(ledger, &mut found);
    let model = replay(world, &mut found);
    final_state(ledger, &model, &mut found);
    acknowledged(world, &mut found);
    world.violations.found.extend(found.found);
}

fn convergence(world: &World, found: &mut Violations) {
    let before = found.found.len();
    // Replicas removed from the group stop receiving its log: only members must agree.
    let members = world.members();
    let states: Vec<(u64, u64, [u8; 32])> = world
        .replicas()
        .filter(|r| members.contains(&r.id()))
        .map(|r| (r.id(), r.applied(), r.ledger().digest()))
        .collect();
    for pair in states.windows(2) {
        let ((a, a_applied, a_digest), (b, b_applied, b_digest)) = (pair[0], pair[1]);
        if a_applied != b_applied {
            let detail =
                format!("replica {a} applied {a_applied} entries, replica {b} {b_applied}");
            found.add(Checker::Convergence, detail);
        } else if a_digest != b_digest {
            let detail = format!("replicas {a} and {b} differ in state after {a_applied} entries");
            found.add(Checker::Convergence, detail);
        }
    }
    if found.found.len() > before {
        let detail = format!("members {members:?}; {}", world.describe());
        found.add(Checker::Convergence, detail);
    }
}

fn balances(ledger: &settle_ledger::Ledger, found: &mut Violations) {
    let all = Range { min: 0, max: u64::MAX, reversed: false };
    // ledger -> (debits_posted, credits_posted, debits_pending, credits_pending)
    let mut sums: BTreeMap<u32, [u128; 4]> = BTreeMap::new();
    for account in ledger.store().accounts(all) {
        let sum = sums.entry(account.ledger).or_default();
        sum[0] += account.debits_posted;
        sum[1] += account.credits_posted;
        sum[2] += account.debits_pending;
        sum[3] += account.credits_pending;
        let f = account.flags;
        let debits = account.debits_posted + account.debits_pending;
        let credits = account.credits_posted + account.credits_pending;
        if f.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && debits > account.credits_posted
            || f.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                && credits > account.debits_posted
        {
            found.add(
                Checker::Limits,
                format!("account {} breaks its limit: {account:?}", account.id),
            );
        }
    }
    for (ledger, [dp, cp, dn, cn]) in sums {
        if dp != cp || dn != cn {
            let detail = format!(
                "ledger {ledger}: posted {dp} debits vs {cp} credits, pending {dn} vs {cn}"
            );
            found.add(Checker::Conservation, detail);
        }
    }
}

/// Executes the committed log on the reference model, comparing every result.
fn replay(world: &World, found: &mut Violations) -> Model {
    let mut model = Model::new();
    let mut expected_index = 1;
    for (&index, applied) in &world.log {
        if index != expected_index {
            found.add(Checker::Replay, format!("the applied log has a gap before index {index}"));
        }
        expected_index = index + 1;
        let (Some(write), Some(reply)) = (&applied.write, &applied.reply) else { continue };
        let ts = applied.timestamp;
        let model_reply = match write {
            Write::CreateAccounts(accounts) => {
                model.create_accounts(ts, accounts).map(Reply::AccountResults)
            }
            Write::CreateTransfers(transfers) => {
                model.create_transfers(ts, transfers).map(Reply::TransferResults)
            }
            Write::Pulse if ts == model.commit_timestamp => Ok(Reply::Pulsed { expired: 0 }),
            Write::Pulse => {
                model.expire_pending_transfers(ts).map(|expired| Reply::Pulsed { expired })
            }
        };
        match model_reply {
            Ok(model_reply) if model_reply == *reply => {}
            Ok(model_reply) => found.add(
                Checker::Replay,
                format!("entry {index}: settle answered {reply:?}, the model {model_reply:?}"),
            ),
            Err(error) => found.add(
                Checker::Replay,
                format!("entry {index}: the model refuses the batch at {ts}: {error:?}"),
            ),
        }
    }
    model
}

fn final_state(ledger: &settle_ledger::Ledger, model: &Model, found: &mut Violations) {
    let ids: Vec<u128> = model.state.accounts.keys().copied().collect();
    let accounts = ledger.lookup_accounts(&ids);
    let expected: Vec<_> = model.state.accounts.values().copied().collect();
    if accounts != expected {
        found.add(Checker::Replay, "the final accounts differ from the model's".into());
    }
    let ids: Vec<u128> = model.state.transfers.keys().copied().collect();
    let transfers = ledger.lookup_transfers(&ids);
    let expected: Vec<_> = model.state.transfers.values().copied().collect();
    if transfers != expected {
        found.add(Checker::Replay, "the final transfers differ from the model's".into());
    }
    let all = Range { min: 0, max: u64::MAX, reversed: false };
    let count = ledger.store().transfers(all).count();
    if count != expected.len() {
        let detail = format!("settle holds {count} transfers, the model {}", expected.len());
        found.add(Checker::Replay, detail);
    }
}

fn acknowledged(world: &World, found: &mut Violations) {
    for ack in &world.acks {
        match &ack.op {
            Op::Write(write) => {
                let committed = world.log.values().any(|a| {
                    a.write.as_ref() == Some(write) && a.reply.as_ref() == Some(&ack.reply)
                });
                if !committed {
                    let detail = format!(
                        "client {} was answered {:?} for a write no committed entry gave",
                        ack.client, ack.reply
                    );
                    found.add(Checker::Acknowledged, detail);
                }
            }
            Op::Read(Read::LookupTransfers(ids)) => {
                let Reply::Transfers(transfers) = &ack.reply else { continue };
                // Every id acknowledged as created before this read was sent must be seen.
                for id in ids {
                    let created_before = world
                        .acks
                        .iter()
                        .any(|earlier| earlier.acked_ns < ack.sent_ns && created_ok(earlier, *id));
                    if created_before && !transfers.iter().any(|t| t.id == *id) {
                        let detail = format!(
                            "transfer {id:#x} was acknowledged, then a later lookup missed it"
                        );
                        found.add(Checker::Acknowledged, detail);
                    }
                }
            }
            Op::Read(_) => {}
        }
    }
}

fn created_ok(ack: &crate::workload::Ack, id: u128) -> bool {
    let (Op::Write(Write::CreateTransfers(transfers)), Reply::TransferResults(results)) =
        (&ack.op, &ack.reply)
    else {
        return false;
    };
    transfers.iter().zip(results).any(|(t, r)| t.id == id && r.is_success())
}
