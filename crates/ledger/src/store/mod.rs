//! The ledger's tables, behind the [`Store`] trait.
//!
//! The ledger's semantics (`ledger/`) only talk to this trait, so the durable node can
//! back the tables with memory plus a log today and a disk store later without touching
//! a single check. A store keeps records and indexes; it decides nothing.
//!
//! Contract every implementation keeps:
//! - accounts and transfers are kept in timestamp order (the ledger only inserts
//!   timestamps above every existing one of the same kind);
//! - between `scope_open` and `scope_close(false)` every change is undone exactly, in
//!   reverse order; failed-id records are the exception and survive (see SEMANTICS.md);
//! - iteration order is deterministic (it feeds the state digest).

mod memory;

pub use memory::{expand_snapshot, transfers_file_tag, MemStore, SnapshotError, SnapshotSource};

use crate::ledger::Side;
use crate::types::{Account, AccountBalance, Transfer};

/// Where a pending transfer stands. Stored per pending transfer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingState {
    Pending,
    Posted,
    Voided,
    Expired,
}

impl PendingState {
    /// Stable byte for snapshots and the digest (0 is "not a pending transfer").
    pub fn code(self) -> u8 {
        match self {
            PendingState::Pending => 1,
            PendingState::Posted => 2,
            PendingState::Voided => 3,
            PendingState::Expired => 4,
        }
    }
}

/// Where one side of a cross-shard transfer stands at this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservationState {
    /// Validated and reserved; waiting for the decision.
    Prepared,
    Committed,
    Aborted,
}

impl ReservationState {
    /// Stable byte for snapshots and the digest.
    pub fn code(self) -> u8 {
        match self {
            ReservationState::Prepared => 0,
            ReservationState::Committed => 1,
            ReservationState::Aborted => 2,
        }
    }
}

/// One side of a cross-shard transfer at this shard (see `ledger/cross_shard.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The transfer as prepared: its amount is what this side reserved; for post/void
    /// it is already resolved against the pending transfer.
    pub transfer: Transfer,
    pub side: Side,
    pub state: ReservationState,
}

/// What an id means among transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferId {
    /// A transfer with this id exists.
    Exists(Transfer),
    /// An earlier transfer with this id failed with a transient error.
    Failed,
    /// Never used.
    Free,
}

/// An inclusive timestamp range and a direction, for range scans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
    pub reversed: bool,
}

/// The tables the ledger reads and writes. See the module docs for the contract.
pub trait Store {
    // Accounts.
    fn account(&self, id: u128) -> Option<Account>;
    /// Reads whatever locates accounts `ids` (unknown ids are skipped) and returns a
    /// value that depends on it, so that the reads are not optimized away. A hint for
    /// the cache: the ledger calls it for a few events ahead, so that their reads go
    /// out to memory together instead of one after another (see `Ledger::execute`).
    fn touch_accounts(&self, _ids: [u128; 2]) -> u64 {
        0
    }
    /// As `touch_accounts`, for a cross-shard side about to be prepared or carried out:
    /// its reservation, the account row it names, and with `id_index` the transfer id's
    /// index entry (a prepare checks that the id is free; a commit stores the transfer
    /// without looking it up).
    fn touch_side(&self, _id: u128, _side: Side, _id_index: bool) -> u64 {
        0
    }
    /// Inserts a new account; its id is unused and its timestamp above every account's.
    fn insert_account(&mut self, account: Account);
    /// Overwrites an existing account's balances and flags.
    fn update_account(&mut self, account: &Account);
    fn account_timestamp_max(&self) -> u64;
    fn account_exists_at(&self, timestamp: u64) -> bool;

    // Transfers.
    fn transfer_id(&self, id: u128) -> TransferId;
    fn transfer(&self, id: u128) -> Option<Transfer> {
        match self.transfer_id(id) {
            TransferId::Exists(transfer) => Some(transfer),
            TransferId::Failed | TransferId::Free => None,
        }
    }
    /// Inserts a new transfer (timestamp above every transfer's) and indexes it under
    /// each of its accounts that this store holds (a cross-shard transfer has one here).
    fn insert_transfer(&mut self, transfer: &Transfer);
    /// Records that `id` failed with a transient error. Survives scope rollback.
    fn record_failed_id(&mut self, id: u128);
    fn transfer_timestamp_max(&self) -> u64;
    fn transfer_exists_at(&self, timestamp: u64) -> bool;

    // Pending transfers and their expiry.
    fn pending_state(&self, id: u128) -> Option<PendingState>;
    fn set_pending_state(&mut self, id: u128, state: PendingState);
    fn insert_expiry(&mut self, expires_at: u64, id: u128);
    fn remove_expiry(&mut self, expires_at: u64, id: u128);
    /// Whether `id` is due to expire at `expires_at`.
    fn has_expiry(&self, expires_at: u64, id: u128) -> bool;
    /// The pending transfer that expires first, if it expires at or before `timestamp`.
    fn first_expired(&self, timestamp: u64) -> Option<(u64, u128)>;

    // History (accounts with `flags.history`).
    fn append_balance(&mut self, account_id: u128, balance: AccountBalance);
    fn balance_at(&self, account_id: u128, timestamp: u64) -> Option<AccountBalance>;

    // Scans, in timestamp order.
    fn account_transfers(
        &self,
        account_id: u128,
        range: Range,
    ) -> Box<dyn Iterator<Item = Transfer> + '_>;
    fn accounts(&self, range: Range) -> Box<dyn Iterator<Item = Account> + '_>;
    fn transfers(&self, range: Range) -> Box<dyn Iterator<Item = Transfer> + '_>;
    /// Every failed id, ascending.
    fn failed_ids(&self) -> Vec<u128>;

    // Cross-shard reservations, by (transfer id, side).
    fn reservation(&self, id: u128, side: Side) -> Option<Reservation>;
    /// Inserts or overwrites the reservation of `(reservation.transfer.id, side)`.
    fn set_reservation(&mut self, reservation: Reservation);
    /// Forgets the reservation of `(id, side)`, if there is one.
    fn remove_reservation(&mut self, id: u128, side: Side);
    /// The id of the prepared post/void that holds the pending transfer `pending_id`.
    fn pending_locked_by(&self, pending_id: u128) -> Option<u128>;
    /// Every reservation, ordered by (id, side).
    fn reservations(&self) -> Vec<Reservation>;

    // Linked chains.
    fn scope_open(&mut self);
    /// Ends the scope, keeping (`persist`) or undoing its changes.
    fn scope_close(&mut self, persist: bool);
}
