//! [`AccountIndex`]: account id → row position, on the hot path of every transfer.
//!
//! An open-addressing table (linear probing) that holds only row positions, 4 bytes a
//! slot, at most half full, and confirms the id on the row itself, which the caller
//! reads next anyway. For 10,000 accounts it is 64 KiB and stays in the core's cache;
//! a hash map keyed by the full id has 32-byte buckets (half a megabyte), and its
//! bucket load was a cache miss on every lookup: measured, a third of the time spent
//! reading an account, itself the largest item of a transfer's execution.
//!
//! May touch: its slots, and the rows it is handed (read only).

use std::hash::Hasher;

use rustc_hash::FxHasher;

use crate::types::Account;

/// An empty slot.
const EMPTY: u32 = u32::MAX;
/// Slots of an empty index.
const SLOTS_MIN: usize = 16;

#[derive(Default)]
pub(super) struct AccountIndex {
    /// Row positions, or `EMPTY`; the length is a power of two (or zero).
    slots: Vec<u32>,
    len: usize,
}

impl AccountIndex {
    /// An index sized for `accounts` without growing.
    pub fn with_capacity(accounts: usize) -> Self {
        AccountIndex { slots: vec![EMPTY; slots_for(accounts)], len: 0 }
    }

    /// The row of account `id`, if indexed; `rows` are the account rows by position.
    pub fn get(&self, id: u128, rows: &[Account]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut slot = self.home(id);
        loop {
            let position = self.slots[slot];
            if position == EMPTY {
                return None;
            }
            if rows[position as usize].id == id {
                return Some(position);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Indexes `rows[position]`, whose id is not indexed yet.
    pub fn insert(&mut self, position: u32, rows: &[Account]) {
        assert_ne!(position, EMPTY);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow(rows);
        }
        let id = rows[position as usize].id;
        let slot = self.free_slot(id, rows);
        self.slots[slot] = position;
        self.len += 1;
    }

    /// Removes account `id` (indexed; its row still in `rows`), shifting back the
    /// entries probed past it so that every lookup still finds its entry.
    pub fn remove(&mut self, id: u128, rows: &[Account]) {
        let mask = self.slots.len() - 1;
        let mut hole = self.home(id);
        while rows[self.slots[hole] as usize].id != id {
            hole = (hole + 1) & mask;
        }
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let position = self.slots[next];
            if position == EMPTY {
                break;
            }
            let home = self.home(rows[position as usize].id);
            // The entry at `next` may fill the hole unless its home lies cyclically in
            // (hole, next]: then a lookup for it starts after the hole and still finds it.
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.slots[hole] = position;
                hole = next;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
    }

    fn home(&self, id: u128) -> usize {
        let mut hasher = FxHasher::default();
        hasher.write_u128(id);
        // FxHash ends with a multiply, so its top bits depend on every bit of the id.
        let bits = self.slots.len().trailing_zeros();
        (hasher.finish() >> (u64::BITS - bits)) as usize
    }

    /// The first empty slot on `id`'s probe sequence (the id is not indexed).
    fn free_slot(&self, id: u128, rows: &[Account]) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = self.home(id);
        while self.slots[slot] != EMPTY {
            assert_ne!(rows[self.slots[slot] as usize].id, id, "account ids are unique");
            slot = (slot + 1) & mask;
        }
        slot
    }

    fn grow(&mut self, rows: &[Account]) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots_for(self.len + 1)]);
        for position in old.into_iter().filter(|&p| p != EMPTY) {
            let slot = self.free_slot(rows[position as usize].id, rows);
            self.slots[slot] = position;
        }
    }
}

/// Slots for `accounts` entries at most half full.
fn slots_for(accounts: usize) -> usize {
    (accounts * 2).next_power_of_two().max(SLOTS_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[u128]) -> Vec<Account> {
        ids.iter().map(|&id| Account { id, ..Default::default() }).collect()
    }

    #[test]
    fn finds_every_id_through_growth_and_removal_of_the_newest() {
        // Ids that differ only in high bits, and small ones: both must spread.
        let ids: Vec<u128> =
            (1..=3000u128).map(|i| if i % 2 == 0 { i << 100 } else { i }).collect();
        let rows = rows(&ids);
        let mut index = AccountIndex::default();
        for position in 0..rows.len() {
            index.insert(position as u32, &rows);
        }
        for (position, &id) in ids.iter().enumerate() {
            assert_eq!(index.get(id, &rows), Some(position as u32));
        }
        assert_eq!(index.get(0, &rows), None);
        assert_eq!(index.get(3 << 100, &rows), None);
        // Undo removes the newest first; the rest stays findable after each removal.
        for removed in (2000..ids.len()).rev() {
            index.remove(ids[removed], &rows);
            assert_eq!(index.get(ids[removed], &rows), None);
        }
        for (position, &id) in ids.iter().enumerate().take(2000) {
            assert_eq!(index.get(id, &rows), Some(position as u32), "{id}");
        }
        assert_eq!(index.len, 2000);
    }

    #[test]
    fn removal_keeps_wrapped_probe_sequences_intact() {
        // The smallest index, half full, so that probe sequences collide and wrap
        // around its end; 500 removal orders, each checked against what remains.
        let ids: Vec<u128> = (1..=8u128).map(|i| i * 0x9e37_79b9_7f4a).collect();
        let rows = rows(&ids);
        let mut state = 0x2545_f491_u64;
        for _ in 0..500 {
            let mut index = AccountIndex::default();
            for position in 0..ids.len() as u32 {
                index.insert(position, &rows);
            }
            assert_eq!(index.slots.len(), SLOTS_MIN);
            let mut left: Vec<usize> = (0..ids.len()).collect();
            while !left.is_empty() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let removed = left.remove(state as usize % left.len());
                index.remove(ids[removed], &rows);
                assert_eq!(index.get(ids[removed], &rows), None);
                for &kept in &left {
                    assert_eq!(index.get(ids[kept], &rows), Some(kept as u32));
                }
            }
        }
    }
}
