//! Requests and replies: every operation a client can ask of a ledger, as one value,
//! and the one place that dispatches it. The durable node, the Raft replica and the
//! simulator all execute requests through [`Ledger::execute_write`] and
//! [`Ledger::query`], so they cannot disagree on what an operation means.
//!
//! Writes also have a stable byte encoding ([`Write::encode`]): it is what a replicated
//! log carries, so every replica decodes and executes the very same bytes. Events
//! travel compact ([`crate::compact`]): every byte of an entry is hashed, written and
//! fsynced at each replica and sent to each follower.

use crate::ledger::{BatchError, Ledger};
use crate::results::{CreateAccountResult, CreateTransferResult};
use crate::store::Store;
use crate::types::{
    Account, AccountBalance, AccountFilter, QueryFilter, Transfer, BATCH_EVENTS_MAX, RECORD_SIZE,
};

/// A request that changes state (and so goes through the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    CreateAccounts(Vec<Account>),
    CreateTransfers(Vec<Transfer>),
    /// Expire the pending transfers whose deadline has passed.
    Pulse,
}

/// A request that only reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    LookupAccounts(Vec<u128>),
    LookupTransfers(Vec<u128>),
    GetAccountTransfers(AccountFilter),
    GetAccountBalances(AccountFilter),
    QueryAccounts(QueryFilter),
    QueryTransfers(QueryFilter),
    /// The accounts as of the latest committed state, with its timestamp.
    Snapshot(Vec<u128>),
}

/// The answer to a [`Write`] or a [`Read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    AccountResults(Vec<CreateAccountResult>),
    TransferResults(Vec<CreateTransferResult>),
    Accounts(Vec<Account>),
    Transfers(Vec<Transfer>),
    Balances(Vec<AccountBalance>),
    Pulsed {
        expired: usize,
    },
    /// A snapshot's accounts, and the timestamp it is at.
    Snapshot {
        timestamp: u64,
        accounts: Vec<Account>,
    },
}

/// Why bytes are not an encoded [`Write`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("an encoded write is at least {HEADER_SIZE} bytes, got {0}")]
    Short(usize),
    #[error("unknown write operation {0}")]
    UnknownOperation(u8),
    #[error("a write's body must be whole {RECORD_SIZE}-byte records of at most {BATCH_EVENTS_MAX} events, got {0} bytes")]
    BadBody(usize),
    #[error("a write's compact events do not decode: {0}")]
    BadCompact(crate::compact::CompactError),
    #[error("a write holds at most {BATCH_EVENTS_MAX} events, got {0}")]
    TooManyEvents(usize),
    #[error("a pulse carries no events, got {0} bytes")]
    PulseWithBody(usize),
}

/// Operation byte, then the proposer's clock reading (`u64` LE, ns).
pub const HEADER_SIZE: usize = 9;

const OP_CREATE_ACCOUNTS: u8 = 1;
const OP_CREATE_TRANSFERS: u8 = 2;
const OP_PULSE: u8 = 3;
/// Set in the operation byte when the events are compact: a u32 (LE) count, then the
/// compact events. Without it (entries written by earlier builds) the body is whole
/// 128-byte records.
const COMPACT: u8 = 0x80;

impl Write {
    /// How many events the batch holds (0 for a pulse).
    pub fn event_count(&self) -> usize {
        match self {
            Write::CreateAccounts(accounts) => accounts.len(),
            Write::CreateTransfers(transfers) => transfers.len(),
            Write::Pulse => 0,
        }
    }

    /// Appends the encoding of this write, proposed at `clock_ns` on the proposer's
    /// clock, to `out`: operation byte, `clock_ns` (u64 LE), then (unless a pulse) the
    /// event count (u32 LE) and the events, compact.
    pub fn encode(&self, clock_ns: u64, out: &mut Vec<u8>) {
        let (op, records) = match self {
            Write::CreateAccounts(accounts) => (OP_CREATE_ACCOUNTS | COMPACT, accounts.len()),
            Write::CreateTransfers(transfers) => (OP_CREATE_TRANSFERS | COMPACT, transfers.len()),
            Write::Pulse => (OP_PULSE, 0),
        };
        assert!(records <= BATCH_EVENTS_MAX);
        // Most records take far less than 128 bytes compact: reserve for a third.
        out.reserve(HEADER_SIZE + 4 + records * RECORD_SIZE / 3);
        out.push(op);
        out.extend_from_slice(&clock_ns.to_le_bytes());
        if op & COMPACT != 0 {
            out.extend_from_slice(&(records as u32).to_le_bytes());
        }
        match self {
            Write::CreateAccounts(accounts) => {
                accounts.iter().for_each(|a| crate::compact::encode(&a.to_bytes(), out));
            }
            Write::CreateTransfers(transfers) => {
                transfers.iter().for_each(|t| crate::compact::encode(&t.to_bytes(), out));
            }
            Write::Pulse => {}
        }
    }

    /// The write and the proposer's clock reading encoded in `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<(Write, u64), DecodeError> {
        if bytes.len() < HEADER_SIZE {
            return Err(DecodeError::Short(bytes.len()));
        }
        let clock_ns = u64::from_le_bytes(bytes[1..HEADER_SIZE].try_into().expect("8 bytes"));
        let body = &bytes[HEADER_SIZE..];
        if matches!(bytes[0] & !COMPACT, OP_CREATE_ACCOUNTS | OP_CREATE_TRANSFERS)
            && bytes[0] & COMPACT != 0
        {
            return Self::decode_compact(bytes[0] & !COMPACT, body).map(|write| (write, clock_ns));
        }
        let whole =
            body.len().is_multiple_of(RECORD_SIZE) && body.len() / RECORD_SIZE <= BATCH_EVENTS_MAX;
        let records = || body.chunks_exact(RECORD_SIZE).map(|r| r.try_into().expect("128 bytes"));
        let write = match bytes[0] {
            OP_CREATE_ACCOUNTS if whole => {
                Write::CreateAccounts(records().map(Account::from_bytes).collect())
            }
            OP_CREATE_TRANSFERS if whole => {
                Write::CreateTransfers(records().map(Transfer::from_bytes).collect())
            }
            OP_CREATE_ACCOUNTS | OP_CREATE_TRANSFERS => {
                return Err(DecodeError::BadBody(body.len()))
            }
            OP_PULSE if body.is_empty() => Write::Pulse,
            OP_PULSE => return Err(DecodeError::PulseWithBody(body.len())),
            op => return Err(DecodeError::UnknownOperation(op)),
        };
        Ok((write, clock_ns))
    }

    /// The body of a compact create: a u32 count, then that many compact events.
    fn decode_compact(op: u8, body: &[u8]) -> Result<Write, DecodeError> {
        let count = body.get(..4).ok_or(DecodeError::BadBody(body.len()))?;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
        if count > BATCH_EVENTS_MAX {
            return Err(DecodeError::TooManyEvents(count));
        }
        let events = &body[4..];
        Ok(if op == OP_CREATE_ACCOUNTS {
            let mut accounts = Vec::with_capacity(count);
            crate::compact::decode_all(events, count, |r| accounts.push(Account::from_bytes(r)))
                .map_err(DecodeError::BadCompact)?;
            Write::CreateAccounts(accounts)
        } else {
            let mut transfers = Vec::with_capacity(count);
            crate::compact::decode_all(events, count, |r| transfers.push(Transfer::from_bytes(r)))
                .map_err(DecodeError::BadCompact)?;
            Write::CreateTransfers(transfers)
        })
    }
}

impl<S: Store> Ledger<S> {
    /// Executes a write proposed at `clock_ns`, at the timestamp closest to it that the
    /// ledger allows (timestamps never go backwards, whatever the clock did). Returns
    /// the reply and the timestamp used. Deterministic: the same writes with the same
    /// clock readings give the same timestamps on every replica.
    ///
    /// A pulse when nothing is due changes nothing (not even the commit timestamp).
    pub fn execute_write(
        &mut self,
        clock_ns: u64,
        write: &Write,
    ) -> Result<(Reply, u64), BatchError> {
        let timestamp = self.next_batch_timestamp(clock_ns, write.event_count());
        let reply = match write {
            Write::CreateAccounts(accounts) => {
                Reply::AccountResults(self.create_accounts(timestamp, accounts)?)
            }
            Write::CreateTransfers(transfers) => {
                Reply::TransferResults(self.create_transfers(timestamp, transfers)?)
            }
            Write::Pulse => {
                let due = self.next_expiry().is_some_and(|deadline| deadline <= timestamp);
                if !due {
                    return Ok((Reply::Pulsed { expired: 0 }, self.commit_timestamp()));
                }
                Reply::Pulsed { expired: self.expire_pending_transfers(timestamp)? }
            }
        };
        Ok((reply, timestamp))
    }

    /// Answers a read on the current state.
    pub fn query(&self, read: &Read) -> Reply {
        match read {
            Read::LookupAccounts(ids) => Reply::Accounts(self.lookup_accounts(ids)),
            Read::LookupTransfers(ids) => Reply::Transfers(self.lookup_transfers(ids)),
            Read::GetAccountTransfers(filter) => {
                Reply::Transfers(self.get_account_transfers(filter))
            }
            Read::GetAccountBalances(filter) => Reply::Balances(self.get_account_balances(filter)),
            Read::QueryAccounts(filter) => Reply::Accounts(self.query_accounts(filter)),
            Read::QueryTransfers(filter) => Reply::Transfers(self.query_transfers(filter)),
            Read::Snapshot(ids) => Reply::Snapshot {
                timestamp: self.commit_timestamp(),
                accounts: self.lookup_accounts(ids),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_round_trip_and_bad_bytes_are_refused() {
        let transfer = Transfer { id: 7, amount: 3, ledger: 1, code: 1, ..Default::default() };
        let account = Account { id: 9, ledger: 1, code: 2, ..Default::default() };
        for write in [
            Write::CreateTransfers(vec![transfer; 3]),
            Write::CreateAccounts(vec![account]),
            Write::Pulse,
        ] {
            let mut bytes = Vec::new();
            write.encode(42, &mut bytes);
            assert_eq!(Write::decode(&bytes), Ok((write.clone(), 42)));
            if write != Write::Pulse {
                assert!(matches!(
                    Write::decode(&bytes[..bytes.len() - 1]),
                    Err(DecodeError::BadCompact(_))
                ));
                let mut longer = bytes.clone();
                longer.push(0);
                assert!(matches!(Write::decode(&longer), Err(DecodeError::BadCompact(_))));
                // An entry of an earlier build: whole 128-byte records, no count.
                let mut old = vec![bytes[0] & !COMPACT];
                old.extend_from_slice(&42u64.to_le_bytes());
                match &write {
                    Write::CreateTransfers(ts) => ts.iter().for_each(|t| old.extend(t.to_bytes())),
                    Write::CreateAccounts(a) => a.iter().for_each(|a| old.extend(a.to_bytes())),
                    Write::Pulse => unreachable!(),
                }
                assert_eq!(Write::decode(&old), Ok((write.clone(), 42)));
                assert_eq!(
                    Write::decode(&old[..old.len() - 1]),
                    Err(DecodeError::BadBody(old.len() - 1 - HEADER_SIZE))
                );
            }
        }
        let mut huge = vec![OP_CREATE_TRANSFERS | COMPACT];
        huge.extend_from_slice(&[0; 8]);
        huge.extend_from_slice(&(BATCH_EVENTS_MAX as u32 + 1).to_le_bytes());
        assert_eq!(Write::decode(&huge), Err(DecodeError::TooManyEvents(BATCH_EVENTS_MAX + 1)));
        assert_eq!(Write::decode(&[2; 5]), Err(DecodeError::Short(5)));
        assert_eq!(Write::decode(&[9; 9]), Err(DecodeError::UnknownOperation(9)));
        assert_eq!(Write::decode(&[3; 10]), Err(DecodeError::PulseWithBody(1)));
    }
}
