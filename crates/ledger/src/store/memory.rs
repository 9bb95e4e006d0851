//! [`MemStore`]: the tables in memory.
//!
//! Accounts and transfers live in vectors in timestamp order (the ledger only ever
//! appends newer timestamps), with hash indexes by id. Each account row keeps the
//! positions of its transfers and its balance history, both in timestamp order, so
//! per-account queries are binary searches. Linked chains are undone with an undo log
//! that exists only while a scope is open.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::{PendingState, Range, Reservation, ReservationState, Store, TransferId};
use crate::ledger::Side;
use crate::types::{Account, AccountBalance, Transfer};

#[derive(Default)]
pub struct MemStore {
    accounts: Vec<AccountRow>,
    account_index: FxHashMap<u128, u32>,
    transfers: Vec<Transfer>,
    transfer_index: FxHashMap<u128, u32>,
    failed_ids: FxHashSet<u128>,
    pending: FxHashMap<u128, PendingState>,
    /// (expires_at, pending transfer id), in expiry order.
    expiry: BTreeSet<(u64, u128)>,
    reservations: FxHashMap<(u128, Side), Reservation>,
    /// pending id -> id of the prepared post/void holding it (derived from reservations).
    pending_locks: FxHashMap<u128, u128>,
    /// Present while a scope is open.
    undo: Option<Vec<Undo>>,
}

struct AccountRow {
    account: Account,
    /// Positions in `MemStore::transfers`, ascending (so in timestamp order).
    transfers: Vec<u32>,
    /// Balance snapshots, in timestamp order (accounts with `flags.history` only).
    history: Vec<AccountBalance>,
}

/// One change to undo when a scope is discarded.
enum Undo {
    AccountInserted,
    AccountUpdated { position: u32, old: Account },
    TransferInserted,
    PendingSet { id: u128, old: Option<PendingState> },
    ExpiryInserted { expires_at: u64, id: u128 },
    ExpiryRemoved { expires_at: u64, id: u128 },
    BalanceAppended { position: u32 },
    ReservationSet { id: u128, side: Side, old: Option<Reservation> },
}

impl MemStore {
    /// A prepared post/void holds its pending transfer until it commits or aborts.
    fn lock(&mut self, reservation: &Reservation) {
        if reservation.state == ReservationState::Prepared && reservation.transfer.pending_id != 0 {
            let previous =
                self.pending_locks.insert(reservation.transfer.pending_id, reservation.transfer.id);
            assert!(previous.is_none_or(|id| id == reservation.transfer.id));
        }
    }

    fn unlock(&mut self, reservation: &Reservation) {
        if reservation.state == ReservationState::Prepared && reservation.transfer.pending_id != 0 {
            self.pending_locks.remove(&reservation.transfer.pending_id);
        }
    }

    fn log(&mut self, undo: Undo) {
        if let Some(log) = &mut self.undo {
            log.push(undo);
        }
    }

    fn row(&self, account_id: u128) -> Option<&AccountRow> {
        let position = *self.account_index.get(&account_id)?;
        Some(&self.accounts[position as usize])
    }

    fn row_position(&self, account_id: u128) -> usize {
        *self.account_index.get(&account_id).expect("account exists") as usize
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::AccountInserted => {
                let row = self.accounts.pop().expect("inserted account");
                assert!(row.transfers.is_empty() && row.history.is_empty());
                self.account_index.remove(&row.account.id);
            }
            Undo::AccountUpdated { position, old } => {
                self.accounts[position as usize].account = old;
            }
            Undo::TransferInserted => {
                let transfer = self.transfers.pop().expect("inserted transfer");
                let position = self.transfers.len() as u32;
                self.transfer_index.remove(&transfer.id);
                for account_id in [transfer.debit_account_id, transfer.credit_account_id] {
                    if let Some(&row) = self.account_index.get(&account_id) {
                        assert_eq!(self.accounts[row as usize].transfers.pop(), Some(position));
                    }
                }
            }
            Undo::ReservationSet { id, side, old } => {
                let current = self.reservations.remove(&(id, side)).expect("set reservation");
                self.unlock(&current);
                if let Some(old) = old {
                    self.lock(&old);
                    self.reservations.insert((id, side), old);
                }
            }
            Undo::PendingSet { id, old } => match old {
                Some(state) => {
                    self.pending.insert(id, state);
                }
                None => {
                    self.pending.remove(&id);
                }
            },
            Undo::ExpiryInserted { expires_at, id } => {
                assert!(self.expiry.remove(&(expires_at, id)));
            }
            Undo::ExpiryRemoved { expires_at, id } => {
                assert!(self.expiry.insert((expires_at, id)));
            }
            Undo::BalanceAppended { position } => {
                assert!(self.accounts[position as usize].history.pop().is_some());
            }
        }
    }
}

/// The slice bounds of the items whose timestamps fall in `range`, for a slice in
/// timestamp order.
fn bounds(len: usize, timestamp_at: impl Fn(usize) -> u64, range: Range) -> (usize, usize) {
    let partition = |bound: u64| {
        let (mut lo, mut hi) = (0, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if timestamp_at(mid) < bound {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let start = partition(range.min);
    let end = if range.max == u64::MAX { len } else { partition(range.max + 1) };
    (start, end.max(start))
}

fn directed<'a, T: 'a>(
    iter: impl DoubleEndedIterator<Item = T> + 'a,
    reversed: bool,
) -> Box<dyn Iterator<Item = T> + 'a> {
    if reversed {
        Box::new(iter.rev())
    } else {
        Box::new(iter)
    }
}

impl Store for MemStore {
    fn account(&self, id: u128) -> Option<Account> {
        self.row(id).map(|row| row.account)
    }

    fn insert_account(&mut self, account: Account) {
        assert!(account.timestamp > self.account_timestamp_max());
        let position = u32::try_from(self.accounts.len()).expect("fewer than 2^32 accounts");
        let previous = self.account_index.insert(account.id, position);
        assert!(previous.is_none(), "account ids are unique");
        self.accounts.push(AccountRow { account, transfers: Vec::new(), history: Vec::new() });
        self.log(Undo::AccountInserted);
    }

    fn update_account(&mut self, account: &Account) {
        let position = self.row_position(account.id);
        let row = &mut self.accounts[position];
        let old = row.account;
        assert_eq!(old.timestamp, account.timestamp, "only balances and flags change");
        row.account = *account;
        self.log(Undo::AccountUpdated { position: position as u32, old });
    }

    fn account_timestamp_max(&self) -> u64 {
        self.accounts.last().map_or(0, |row| row.account.timestamp)
    }

    fn account_exists_at(&self, timestamp: u64) -> bool {
        let (start, end) = bounds(
            self.accounts.len(),
            |i| self.accounts[i].account.timestamp,
            Range { min: timestamp, max: timestamp, reversed: false },
        );
        start < end
    }

    fn transfer_id(&self, id: u128) -> TransferId {
        match self.transfer_index.get(&id) {
            Some(&position) => TransferId::Exists(self.transfers[position as usize]),
            None if self.failed_ids.contains(&id) => TransferId::Failed,
            None => TransferId::Free,
        }
    }

    fn insert_transfer(&mut self, transfer: &Transfer) {
        assert!(transfer.timestamp > self.transfer_timestamp_max());
        assert!(!self.failed_ids.contains(&transfer.id));
        let position = u32::try_from(self.transfers.len()).expect("fewer than 2^32 transfers");
        let previous = self.transfer_index.insert(transfer.id, position);
        assert!(previous.is_none(), "transfer ids are unique");
        self.transfers.push(*transfer);
        for account_id in [transfer.debit_account_id, transfer.credit_account_id] {
            if let Some(&row) = self.account_index.get(&account_id) {
                self.accounts[row as usize].transfers.push(position);
            }
        }
        self.log(Undo::TransferInserted);
    }

    fn record_failed_id(&mut self, id: u128) {
        assert!(!self.transfer_index.contains_key(&id));
        self.failed_ids.insert(id);
    }

    fn transfer_timestamp_max(&self) -> u64 {
        self.transfers.last().map_or(0, |transfer| transfer.timestamp)
    }

    fn transfer_exists_at(&self, timestamp: u64) -> bool {
        let (start, end) = bounds(
            self.transfers.len(),
            |i| self.transfers[i].timestamp,
            Range { min: timestamp, max: timestamp, reversed: false },
        );
        start < end
    }

    fn pending_state(&self, id: u128) -> Option<PendingState> {
        self.pending.get(&id).copied()
    }

    fn set_pending_state(&mut self, id: u128, state: PendingState) {
        let old = self.pending.insert(id, state);
        self.log(Undo::PendingSet { id, old });
    }

    fn insert_expiry(&mut self, expires_at: u64, id: u128) {
        assert!(self.expiry.insert((expires_at, id)));
        self.log(Undo::ExpiryInserted { expires_at, id });
    }

    fn remove_expiry(&mut self, expires_at: u64, id: u128) {
        assert!(self.expiry.remove(&(expires_at, id)));
        self.log(Undo::ExpiryRemoved { expires_at, id });
    }

    fn first_expired(&self, timestamp: u64) -> Option<(u64, u128)> {
        self.expiry.first().copied().filter(|&(expires_at, _)| expires_at <= timestamp)
    }

    fn append_balance(&mut self, account_id: u128, balance: AccountBalance) {
        let position = self.row_position(account_id);
        let history = &mut self.accounts[position].history;
        // A transfer touches an account once, so snapshots have distinct timestamps.
        assert!(history.last().is_none_or(|last| last.timestamp < balance.timestamp));
        history.push(balance);
        self.log(Undo::BalanceAppended { position: position as u32 });
    }

    fn balance_at(&self, account_id: u128, timestamp: u64) -> Option<AccountBalance> {
        let history = &self.row(account_id)?.history;
        let index = history.binary_search_by_key(&timestamp, |b| b.timestamp).ok()?;
        Some(history[index])
    }

    fn account_transfers(
        &self,
        account_id: u128,
        range: Range,
    ) -> Box<dyn Iterator<Item = Transfer> + '_> {
        let Some(row) = self.row(account_id) else {
            return Box::new(std::iter::empty());
        };
        let positions = &row.transfers;
        let (start, end) =
            bounds(positions.len(), |i| self.transfers[positions[i] as usize].timestamp, range);
        directed(positions[start..end].iter().map(|&p| self.transfers[p as usize]), range.reversed)
    }

    fn accounts(&self, range: Range) -> Box<dyn Iterator<Item = Account> + '_> {
        let (start, end) =
            bounds(self.accounts.len(), |i| self.accounts[i].account.timestamp, range);
        directed(self.accounts[start..end].iter().map(|row| row.account), range.reversed)
    }

    fn transfers(&self, range: Range) -> Box<dyn Iterator<Item = Transfer> + '_> {
        let (start, end) = bounds(self.transfers.len(), |i| self.transfers[i].timestamp, range);
        directed(self.transfers[start..end].iter().copied(), range.reversed)
    }

    fn failed_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.failed_ids.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn reservation(&self, id: u128, side: Side) -> Option<Reservation> {
        self.reservations.get(&(id, side)).copied()
    }

    fn set_reservation(&mut self, reservation: Reservation) {
        let key = (reservation.transfer.id, reservation.side);
        let old = self.reservations.insert(key, reservation);
        if let Some(old) = &old {
            self.unlock(old);
        }
        self.lock(&reservation);
        self.log(Undo::ReservationSet { id: key.0, side: key.1, old });
    }

    fn pending_locked_by(&self, pending_id: u128) -> Option<u128> {
        self.pending_locks.get(&pending_id).copied()
    }

    fn reservations(&self) -> Vec<Reservation> {
        let mut all: Vec<Reservation> = self.reservations.values().copied().collect();
        all.sort_unstable_by_key(|r| (r.transfer.id, r.side == Side::Credit));
        all
    }

    fn scope_open(&mut self) {
        assert!(self.undo.is_none(), "scopes do not nest");
        self.undo = Some(Vec::new());
    }

    fn scope_close(&mut self, persist: bool) {
        let log = self.undo.take().expect("a scope is open");
        if !persist {
            for undo in log.into_iter().rev() {
                self.undo(undo);
            }
        }
    }
}
