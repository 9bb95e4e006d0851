//! The state digest: a BLAKE3 hash over the whole ledger state in a canonical order.
//! Two ledgers that executed the same batches have byte-identical digests; replicas
//! compare digests to prove they converged.

use super::Ledger;
use crate::store::{PendingState, Range, Store};
use crate::types::AccountFlags;

const EVERYTHING: Range = Range { min: 0, max: u64::MAX, reversed: false };

impl<S: Store> Ledger<S> {
    /// Hash of: commit timestamp; every account (with balances and flags) in timestamp
    /// order and, for history accounts, its balance snapshots; every transfer in
    /// timestamp order with its pending state; every failed id, ascending; every
    /// cross-shard reservation by (id, side).
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"settle-ledger-digest-v1");
        hasher.update(&self.commit_timestamp.to_le_bytes());
        for account in self.store.accounts(EVERYTHING) {
            hasher.update(&account.to_bytes());
            if account.flags.contains(AccountFlags::HISTORY) {
                for transfer in self.store.account_transfers(account.id, EVERYTHING) {
                    let balance =
                        self.store.balance_at(account.id, transfer.timestamp).expect("history");
                    hasher.update(&balance.to_bytes());
                }
            }
        }
        for transfer in self.store.transfers(EVERYTHING) {
            hasher.update(&transfer.to_bytes());
            let state = self.store.pending_state(transfer.id).map_or(0, PendingState::code);
            hasher.update(&[state]);
        }
        for id in self.store.failed_ids() {
            hasher.update(&id.to_le_bytes());
        }
        for reservation in self.store.reservations() {
            hasher.update(&reservation.transfer.to_bytes());
            hasher.update(&[reservation.side.code(), reservation.state.code()]);
        }
        *hasher.finalize().as_bytes()
    }
}
