//! The simulated clients: what they ask for, and what they were told.
//!
//! Each client has at most one request outstanding and retries it, unchanged, until it
//! gets a result: on a timeout, a lost reply, `Unknown` or `Busy`, and at the hinted
//! leader on `NotLeader`. Retrying a write is safe because every event carries its own
//! id; the checkers hold settle to that. Touches only the seeded RNG it is handed.

use rand::rngs::StdRng;
use rand::Rng;
use settle_ledger::{Account, AccountFlags, Read, Reply, Transfer, TransferFlags, Write};

/// Accounts every client works on: 1..=ACCOUNTS on ledger 1, plus two on ledger 2.
pub const ACCOUNTS: u128 = 10;
const LEDGER_TWO: [u128; 2] = [11, 12];
/// Most events in one generated batch.
const BATCH_EVENTS: usize = 6;

/// One client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Write(Write),
    Read(Read),
}

/// A request the client got a result for.
#[derive(Clone, Debug)]
pub struct Ack {
    pub client: usize,
    pub op: Op,
    pub reply: Reply,
    /// Simulated time the request was first sent and answered.
    pub sent_ns: u64,
    pub acked_ns: u64,
}

pub struct Client {
    pub index: usize,
    next_id: u64,
    /// Pending transfers this client created (to post or void later).
    pendings: Vec<u128>,
    /// Transfers this client was told were created `ok` (to look up later).
    created: Vec<u128>,
    pub outstanding: Option<Outstanding>,
    /// Index of the replica the client believes leads.
    pub leader_guess: usize,
    /// The replica the last attempt failed at (timeout or refusal without a hint).
    pub failed: Option<usize>,
    pub acks: u64,
    pub acks_after_heal: u64,
}

pub struct Outstanding {
    pub op: Op,
    /// Every send of this request gets a fresh attempt number; replies to older
    /// attempts are ignored.
    pub attempt: u64,
    pub attempts: u64,
    pub first_sent_ns: u64,
}

impl Client {
    pub fn new(index: usize, replicas: usize) -> Client {
        Client {
            index,
            next_id: 0,
            pendings: Vec::new(),
            created: Vec::new(),
            outstanding: None,
            leader_guess: index % replicas,
            failed: None,
            acks: 0,
            acks_after_heal: 0,
        }
    }

    /// The next request: the first client starts by creating the accounts.
    pub fn next_op(&mut self, rng: &mut StdRng) -> Op {
        if self.index == 0 && self.acks == 0 {
            return Op::Write(Write::CreateAccounts(accounts()));
        }
        match rng.gen_range(0..10) {
            0 if !self.created.is_empty() => {
                let ids = (0..rng.gen_range(1..=4))
                    .map(|_| self.created[rng.gen_range(0..self.created.len())])
                    .collect();
                Op::Read(Read::LookupTransfers(ids))
            }
            1 => Op::Read(Read::LookupAccounts((1..=ACCOUNTS + 2).collect())),
            _ => {
                let events = rng.gen_range(1..=BATCH_EVENTS);
                Op::Write(Write::CreateTransfers((0..events).map(|_| self.transfer(rng)).collect()))
            }
        }
    }

    /// Remembers what an acknowledged write created.
    pub fn learn(&mut self, op: &Op, reply: &Reply) {
        if let (Op::Write(Write::CreateTransfers(transfers)), Reply::TransferResults(results)) =
            (op, reply)
        {
            for (transfer, result) in transfers.iter().zip(results) {
                if result.is_success() {
                    self.created.push(transfer.id);
                }
            }
        }
    }

    fn transfer(&mut self, rng: &mut StdRng) -> Transfer {
        self.next_id += 1;
        let id = ((self.index as u128 + 1) << 64) | u128::from(self.next_id);
        let (debit, credit) = two_accounts(rng);
        let mut t = Transfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount: rng.gen_range(1..=50),
            ledger: if LEDGER_TWO.contains(&debit) { 2 } else { 1 },
            code: 1,
            ..Default::default()
        };
        match rng.gen_range(0..20) {
            0..=9 => {}
            10..=13 => {
                t.flags.insert(TransferFlags::PENDING);
                // Seconds: some expire within the run, some never.
                t.timeout = [0, 1, 2, 3][rng.gen_range(0..4)];
                self.pendings.push(id);
            }
            14..=16 if !self.pendings.is_empty() => {
                let pending = self.pendings[rng.gen_range(0..self.pendings.len())];
                let post = rng.gen_bool(0.6);
                t = Transfer {
                    id,
                    pending_id: pending,
                    // Zero posts the full amount; otherwise a partial post (or too much).
                    amount: if post && rng.gen_bool(0.5) { rng.gen_range(1..=60) } else { 0 },
                    flags: if post {
                        TransferFlags::POST_PENDING_TRANSFER
                    } else {
                        TransferFlags::VOID_PENDING_TRANSFER
                    },
                    ..Default::default()
                };
            }
            17 => t.flags.insert(TransferFlags::BALANCING_DEBIT),
            18 => t.flags.insert(TransferFlags::BALANCING_CREDIT),
            _ => t.ledger = 2, // mismatched ledger: an error result, still a valid event
        }
        if rng.gen_bool(0.2) {
            t.flags.insert(TransferFlags::LINKED);
        }
        t
    }
}

/// Accounts 1..=10 on ledger 1 (1-3 may not go into debit, 4-5 not into credit, 6 keeps
/// history) and 11-12 on ledger 2.
pub fn accounts() -> Vec<Account> {
    (1..=ACCOUNTS + 2)
        .map(|id| {
            let flags = match id {
                1..=3 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                4..=5 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                6 => AccountFlags::HISTORY,
                _ => AccountFlags::empty(),
            };
            let ledger = if LEDGER_TWO.contains(&id) { 2 } else { 1 };
            Account { id, ledger, code: 1, flags, ..Default::default() }
        })
        .collect()
}

fn two_accounts(rng: &mut StdRng) -> (u128, u128) {
    if rng.gen_bool(0.1) {
        return (LEDGER_TWO[0], LEDGER_TWO[1]);
    }
    let debit = rng.gen_range(1..=ACCOUNTS);
    let mut credit = rng.gen_range(1..=ACCOUNTS);
    while credit == debit {
        credit = rng.gen_range(1..=ACCOUNTS);
    }
    (debit, credit)
}
