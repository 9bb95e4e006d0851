//! [`MemStore`]: the tables in memory.
//!
//! Accounts and transfers live in vectors in timestamp order (the ledger only ever
//! appends newer timestamps), with hash indexes by id. Layout is chosen for the hot
//! path, which is memory-bound: an account row is exactly its 128-byte record; an
//! account's transfers form a chain, newest first, threaded through `transfer_links`
//! (each transfer records the previous transfer of its debit and of its credit
//! account), so indexing a new transfer writes only memory the transfer already touched
//! instead of one of 10,000 scattered per-account vectors. Per-account scans walk the
//! chain. Linked chains are undone with an undo log that exists only while a scope is
//! open.

mod account_index;
mod segmented;
mod snapshot;
mod table;

pub use snapshot::{expand_snapshot, transfers_file_tag, SnapshotError, SnapshotSource};

use std::cell::Cell;
use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::{PendingState, Range, Reservation, ReservationState, Store, TransferId};
use crate::ledger::Side;
use crate::types::{Account, AccountBalance, Transfer};

#[derive(Default)]
pub struct MemStore {
    accounts: Vec<Account>,
    account_index: account_index::AccountIndex,
    /// Per account (same position as `accounts`): its newest transfer, or `NONE`.
    account_heads: Vec<u32>,
    /// Balance snapshots by account position, in timestamp order (`flags.history`).
    history: FxHashMap<u32, Vec<AccountBalance>>,
    /// The transfer records, in timestamp order, and their id index.
    transfers: table::TransferTable,
    /// Per transfer (same position as `transfers`): the previous transfer of its debit
    /// account and of its credit account, or `NONE`.
    transfer_links: segmented::Segmented<[u32; 2]>,
    failed_ids: FxHashSet<u128>,
    pending: FxHashMap<u128, PendingState>,
    /// (expires_at, pending transfer id), in expiry order.
    expiry: BTreeSet<(u64, u128)>,
    /// Cross-shard reservations by (transfer id, side): their state, and the position
    /// of the transfer as reserved in `reservation_transfers`. The map holds 48 bytes an
    /// entry instead of a whole record: each time it doubles it moves (and faults in)
    /// everything it holds. It holds the sides in flight, the aborted ones and the
    /// committed pending transfers (the ledger drops a committed plain side), so its
    /// size follows what is in flight, and removed entries' positions are reused.
    reservations: FxHashMap<(u128, Side), (u32, ReservationState)>,
    reservation_transfers: segmented::Segmented<Transfer>,
    /// Positions in `reservation_transfers` that no reservation uses.
    reservation_free: Vec<u32>,
    /// pending id -> id of the prepared post/void holding it (derived from reservations).
    pending_locks: FxHashMap<u128, u128>,
    /// Present while a scope is open.
    undo: Option<Vec<Undo>>,
    /// The (id, position) of the last two accounts read: a transfer reads both of its
    /// accounts, then updates them and indexes itself under them, so this saves four
    /// of six index lookups on the hot path. Cleared when positions can change.
    recent_accounts: Cell<[(u128, u32); 2]>,
}

/// "No transfer" in the account chains.
const NONE: u32 = u32::MAX;

/// One change to undo when a scope is discarded.
enum Undo {
    AccountInserted,
    AccountUpdated {
        position: u32,
        old: Account,
    },
    TransferInserted,
    PendingSet {
        id: u128,
        old: Option<PendingState>,
    },
    ExpiryInserted {
        expires_at: u64,
        id: u128,
    },
    ExpiryRemoved {
        expires_at: u64,
        id: u128,
    },
    BalanceAppended {
        position: u32,
    },
    /// The reservation of (id, side) was set or removed; `old` is what it was.
    ReservationSet {
        id: u128,
        side: Side,
        old: Option<Reservation>,
    },
}

impl MemStore {
    /// The account tables preallocated for this many accounts, so that the hot path
    /// never stops to grow them (a hint, not a limit). The tables that grow with every
    /// transfer are `Segmented`, which never copies, and the transfer id index grows
    /// in small parts (`table.rs`).
    pub fn with_capacity(accounts: usize) -> Self {
        MemStore {
            accounts: Vec::with_capacity(accounts),
            account_index: account_index::AccountIndex::with_capacity(accounts),
            account_heads: Vec::with_capacity(accounts),
            ..MemStore::default()
        }
    }

    /// A store whose transfer records live in the file at `path` (created, or emptied);
    /// everything else stays in memory. See `table.rs`, and
    /// [`MemStore::with_existing_transfer_file`] for a file a checkpoint refers to.
    pub fn with_transfer_file(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(MemStore { transfers: table::TransferTable::in_file(path)?, ..MemStore::default() })
    }

    /// An empty store over the existing transfers file `path`, for a snapshot that refers
    /// to it (`SnapshotSource::refer_to_transfers_file`); the file is left as it is until
    /// the snapshot is read.
    pub fn with_existing_transfer_file(path: &std::path::Path) -> std::io::Result<Self> {
        let transfers = table::TransferTable::in_existing_file(path)?;
        Ok(MemStore { transfers, ..MemStore::default() })
    }

    /// Whether nothing was stored yet.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.transfers.len() == 0 && self.failed_ids.is_empty()
    }

    /// Makes the reservation of `(id, side)` be `new` (stored, replaced or removed),
    /// keeps the pending locks in step, and returns the one it replaced.
    fn write_reservation(
        &mut self,
        id: u128,
        side: Side,
        new: Option<Reservation>,
    ) -> Option<Reservation> {
        debug_assert!(new.is_none_or(|r| (r.transfer.id, r.side) == (id, side)));
        let key = (id, side);
        let old = self.reservations.get(&key).map(|&(position, state)| Reservation {
            transfer: self.reservation_transfers.get(position as usize),
            side,
            state,
        });
        if let Some(old) = &old {
            self.unlock(old);
        }
        match (new, self.reservations.get_mut(&key)) {
            (Some(new), Some((position, state))) => {
                *state = new.state;
                self.reservation_transfers.set(*position as usize, new.transfer);
            }
            (Some(new), None) => {
                let position = match self.reservation_free.pop() {
                    Some(position) => {
                        self.reservation_transfers.set(position as usize, new.transfer);
                        position
                    }
                    None => {
                        let position = u32::try_from(self.reservation_transfers.len())
                            .expect("fewer than 2^32 reservations");
                        self.reservation_transfers.push(new.transfer);
                        position
                    }
                };
                self.reservations.insert(key, (position, new.state));
            }
            (None, Some(_)) => {
                let (position, _) = self.reservations.remove(&key).expect("present");
                self.reservation_free.push(position);
            }
            (None, None) => {}
        }
        if let Some(new) = &new {
            self.lock(new);
        }
        old
    }

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

    /// The position of an account's row, if this store holds it.
    fn position(&self, account_id: u128) -> Option<usize> {
        let recent = self.recent_accounts.get();
        // Id 0 is never an account, so the empty cache entries never match.
        if let Some(&(_, position)) = recent.iter().find(|(id, _)| *id == account_id && *id != 0) {
            debug_assert_eq!(self.accounts[position as usize].id, account_id);
            return Some(position as usize);
        }
        let position = self.account_index.get(account_id, &self.accounts)?;
        self.recent_accounts.set([recent[1], (account_id, position)]);
        Some(position as usize)
    }

    /// Positions of `account_id`'s transfers in `range`, in the range's direction.
    fn chain(&self, account_id: u128, range: Range) -> Vec<u32> {
        let Some(row) = self.position(account_id) else {
            return Vec::new();
        };
        let mut positions = Vec::new();
        let mut next = self.account_heads[row];
        while next != NONE {
            let transfer = self.transfers.get(next);
            if transfer.timestamp < range.min {
                break;
            }
            if transfer.timestamp <= range.max {
                positions.push(next);
            }
            next = self.transfer_links.get(next as usize)[self.link_side(next, account_id)];
        }
        if !range.reversed {
            positions.reverse();
        }
        positions
    }

    /// Which of a transfer's two links continues `account_id`'s chain.
    fn link_side(&self, position: u32, account_id: u128) -> usize {
        let transfer = self.transfers.get(position);
        if transfer.debit_account_id == account_id {
            0
        } else {
            assert_eq!(transfer.credit_account_id, account_id);
            1
        }
    }

    fn row_position(&self, account_id: u128) -> usize {
        self.position(account_id).expect("account exists")
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::AccountInserted => {
                self.recent_accounts.set([(0, 0); 2]);
                let account = *self.accounts.last().expect("inserted account");
                self.account_index.remove(account.id, &self.accounts);
                self.accounts.pop();
                assert_eq!(self.account_heads.pop(), Some(NONE), "no transfers yet");
                assert!(!self.history.contains_key(&(self.accounts.len() as u32)));
            }
            Undo::AccountUpdated { position, old } => {
                self.accounts[position as usize] = old;
            }
            Undo::TransferInserted => {
                let transfer = self.transfers.pop();
                let links = self.transfer_links.pop().expect("links of inserted transfer");
                let position = self.transfers.len() as u32;
                let accounts = [transfer.debit_account_id, transfer.credit_account_id];
                for (account_id, previous) in accounts.into_iter().zip(links) {
                    if let Some(row) = self.position(account_id) {
                        assert_eq!(self.account_heads[row], position);
                        self.account_heads[row] = previous;
                    }
                }
            }
            Undo::ReservationSet { id, side, old } => {
                self.write_reservation(id, side, old);
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
                let history = self.history.get_mut(&position).expect("appended history");
                assert!(history.pop().is_some());
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
        Some(self.accounts[self.position(id)?])
    }

    fn touch_accounts(&self, ids: [u128; 2]) -> u64 {
        let mut touched = 0;
        for id in ids {
            if let Some(position) = self.account_index.get(id, &self.accounts) {
                // The index confirmed the id on the row's first cache line; the
                // balances run into its second.
                touched ^= self.accounts[position as usize].credits_posted as u64;
            }
        }
        touched
    }

    fn touch_side(&self, id: u128, side: Side, id_index: bool) -> u64 {
        let mut touched = u64::from(id_index && self.transfers.find(id).is_some());
        if let Some(&(position, _)) = self.reservations.get(&(id, side)) {
            let transfer = self.reservation_transfers.get(position as usize);
            let account = match side {
                Side::Debit => transfer.debit_account_id,
                Side::Credit => transfer.credit_account_id,
            };
            touched ^= self.touch_accounts([account, 0]);
        }
        touched
    }

    fn insert_account(&mut self, account: Account) {
        assert!(account.timestamp > self.account_timestamp_max());
        let position = u32::try_from(self.accounts.len()).expect("fewer than 2^32 accounts");
        // (`insert` asserts that the id is new.)
        self.accounts.push(account);
        self.account_index.insert(position, &self.accounts);
        self.account_heads.push(NONE);
        self.log(Undo::AccountInserted);
    }

    fn update_account(&mut self, account: &Account) {
        let position = self.row_position(account.id);
        let old = std::mem::replace(&mut self.accounts[position], *account);
        assert_eq!(old.timestamp, account.timestamp, "only balances and flags change");
        self.log(Undo::AccountUpdated { position: position as u32, old });
    }

    fn account_timestamp_max(&self) -> u64 {
        self.accounts.last().map_or(0, |account| account.timestamp)
    }

    fn account_exists_at(&self, timestamp: u64) -> bool {
        let (start, end) = bounds(
            self.accounts.len(),
            |i| self.accounts[i].timestamp,
            Range { min: timestamp, max: timestamp, reversed: false },
        );
        start < end
    }

    fn transfer_id(&self, id: u128) -> TransferId {
        match self.transfers.find(id) {
            Some((_, transfer)) => TransferId::Exists(transfer),
            None if self.failed_ids.contains(&id) => TransferId::Failed,
            None => TransferId::Free,
        }
    }

    fn insert_transfer(&mut self, transfer: &Transfer) {
        assert!(transfer.timestamp > self.transfer_timestamp_max());
        debug_assert!(!self.failed_ids.contains(&transfer.id));
        let position = self.transfers.push(transfer);
        let mut links = [NONE; 2];
        for (link, account_id) in
            [transfer.debit_account_id, transfer.credit_account_id].iter().enumerate()
        {
            if let Some(row) = self.position(*account_id) {
                links[link] = std::mem::replace(&mut self.account_heads[row], position);
            }
        }
        self.transfer_links.push(links);
        self.log(Undo::TransferInserted);
    }

    fn record_failed_id(&mut self, id: u128) {
        debug_assert!(self.transfers.find(id).is_none());
        self.failed_ids.insert(id);
    }

    fn transfer_timestamp_max(&self) -> u64 {
        self.transfers.last_timestamp()
    }

    fn transfer_exists_at(&self, timestamp: u64) -> bool {
        let (start, end) = bounds(
            self.transfers.len(),
            |i| self.transfers.get(i as u32).timestamp,
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

    fn has_expiry(&self, expires_at: u64, id: u128) -> bool {
        self.expiry.contains(&(expires_at, id))
    }

    fn first_expired(&self, timestamp: u64) -> Option<(u64, u128)> {
        self.expiry.first().copied().filter(|&(expires_at, _)| expires_at <= timestamp)
    }

    fn append_balance(&mut self, account_id: u128, balance: AccountBalance) {
        let position = self.row_position(account_id);
        let history = self.history.entry(position as u32).or_default();
        // A transfer touches an account once, so snapshots have distinct timestamps.
        assert!(history.last().is_none_or(|last| last.timestamp < balance.timestamp));
        history.push(balance);
        self.log(Undo::BalanceAppended { position: position as u32 });
    }

    fn balance_at(&self, account_id: u128, timestamp: u64) -> Option<AccountBalance> {
        let history = self.history.get(&(self.position(account_id)? as u32))?;
        let index = history.binary_search_by_key(&timestamp, |b| b.timestamp).ok()?;
        Some(history[index])
    }

    fn account_transfers(
        &self,
        account_id: u128,
        range: Range,
    ) -> Box<dyn Iterator<Item = Transfer> + '_> {
        Box::new(self.chain(account_id, range).into_iter().map(|p| self.transfers.get(p)))
    }

    fn accounts(&self, range: Range) -> Box<dyn Iterator<Item = Account> + '_> {
        let (start, end) = bounds(self.accounts.len(), |i| self.accounts[i].timestamp, range);
        directed(self.accounts[start..end].iter().copied(), range.reversed)
    }

    fn transfers(&self, range: Range) -> Box<dyn Iterator<Item = Transfer> + '_> {
        let (start, end) =
            bounds(self.transfers.len(), |i| self.transfers.get(i as u32).timestamp, range);
        directed(self.transfers.range(start..end), range.reversed)
    }

    fn failed_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self.failed_ids.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn reservation(&self, id: u128, side: Side) -> Option<Reservation> {
        let &(position, state) = self.reservations.get(&(id, side))?;
        let transfer = self.reservation_transfers.get(position as usize);
        Some(Reservation { transfer, side, state })
    }

    fn set_reservation(&mut self, reservation: Reservation) {
        let (id, side) = (reservation.transfer.id, reservation.side);
        let old = self.write_reservation(id, side, Some(reservation));
        self.log(Undo::ReservationSet { id, side, old });
    }

    fn remove_reservation(&mut self, id: u128, side: Side) {
        let old = self.write_reservation(id, side, None);
        self.log(Undo::ReservationSet { id, side, old });
    }

    fn pending_locked_by(&self, pending_id: u128) -> Option<u128> {
        self.pending_locks.get(&pending_id).copied()
    }

    fn reservations(&self) -> Vec<Reservation> {
        let mut all: Vec<Reservation> = self
            .reservations
            .keys()
            .map(|&(id, side)| self.reservation(id, side).expect("a key of the map"))
            .collect();
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
