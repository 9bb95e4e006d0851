//! Read-only queries (SEMANTICS.md, "Queries"). None changes state. Invalid filters
//! return nothing, as documented on `AccountFilter` and `QueryFilter`.

use super::Ledger;
use crate::store::{Range, Store};
use crate::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, QueryFilter,
    QueryFilterFlags, Transfer, BATCH_EVENTS_MAX,
};

impl<S: Store> Ledger<S> {
    /// The accounts with these ids, in request order; missing ids are skipped.
    pub fn lookup_accounts(&self, ids: &[u128]) -> Vec<Account> {
        ids.iter().take(BATCH_EVENTS_MAX).filter_map(|&id| self.store.account(id)).collect()
    }

    /// The transfers with these ids, in request order; missing ids are skipped.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        ids.iter().take(BATCH_EVENTS_MAX).filter_map(|&id| self.store.transfer(id)).collect()
    }

    /// The account's transfers selected by `filter`, in timestamp order.
    pub fn get_account_transfers(&self, filter: &AccountFilter) -> Vec<Transfer> {
        self.account_transfers(filter).collect()
    }

    /// The account's balance after each transfer selected by `filter`. Empty unless the
    /// account has `flags.history`.
    pub fn get_account_balances(&self, filter: &AccountFilter) -> Vec<AccountBalance> {
        let history = self
            .store
            .account(filter.account_id)
            .is_some_and(|account| account.flags.contains(AccountFlags::HISTORY));
        if !history {
            return Vec::new();
        }
        self.account_transfers(filter)
            .map(|transfer| {
                self.store
                    .balance_at(filter.account_id, transfer.timestamp)
                    .expect("a history account has a balance for each of its transfers")
            })
            .collect()
    }

    /// Accounts matching `filter`, in timestamp order.
    pub fn query_accounts(&self, filter: &QueryFilter) -> Vec<Account> {
        let Some((range, limit)) = query_range(filter) else {
            return Vec::new();
        };
        self.store
            .accounts(range)
            .filter(|a| {
                matches(filter.user_data_128, a.user_data_128)
                    && matches(filter.user_data_64, a.user_data_64)
                    && matches(filter.user_data_32, a.user_data_32)
                    && matches(filter.ledger, a.ledger)
                    && matches(filter.code, a.code)
            })
            .take(limit)
            .collect()
    }

    /// Transfers matching `filter`, in timestamp order.
    pub fn query_transfers(&self, filter: &QueryFilter) -> Vec<Transfer> {
        let Some((range, limit)) = query_range(filter) else {
            return Vec::new();
        };
        self.store
            .transfers(range)
            .filter(|t| {
                matches(filter.user_data_128, t.user_data_128)
                    && matches(filter.user_data_64, t.user_data_64)
                    && matches(filter.user_data_32, t.user_data_32)
                    && matches(filter.ledger, t.ledger)
                    && matches(filter.code, t.code)
            })
            .take(limit)
            .collect()
    }

    fn account_transfers<'a>(
        &'a self,
        filter: &'a AccountFilter,
    ) -> Box<dyn Iterator<Item = Transfer> + 'a> {
        let valid = filter.account_id != 0
            && filter.account_id != u128::MAX
            && filter.flags.bits() & !AccountFilterFlags::all().bits() == 0
            && filter.flags.intersects(AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS)
            && filter.reserved.iter().all(|&b| b == 0);
        let Some((range, limit)) = valid
            .then(|| timestamp_range(filter.timestamp_min, filter.timestamp_max, filter.limit))
            .flatten()
        else {
            return Box::new(std::iter::empty());
        };
        let range =
            Range { reversed: filter.flags.contains(AccountFilterFlags::REVERSED), ..range };
        let debits = filter.flags.contains(AccountFilterFlags::DEBITS);
        let credits = filter.flags.contains(AccountFilterFlags::CREDITS);
        let id = filter.account_id;
        Box::new(
            self.store
                .account_transfers(id, range)
                .filter(move |t| {
                    ((debits && t.debit_account_id == id) || (credits && t.credit_account_id == id))
                        && matches(filter.user_data_128, t.user_data_128)
                        && matches(filter.user_data_64, t.user_data_64)
                        && matches(filter.user_data_32, t.user_data_32)
                        && matches(filter.code, t.code)
                })
                .take(limit),
        )
    }
}

/// Zero in a filter field matches anything.
fn matches<T: Default + PartialEq>(wanted: T, actual: T) -> bool {
    wanted == T::default() || wanted == actual
}

fn query_range(filter: &QueryFilter) -> Option<(Range, usize)> {
    let valid = filter.flags.bits() & !QueryFilterFlags::all().bits() == 0
        && filter.reserved.iter().all(|&b| b == 0);
    let (range, limit) = valid
        .then(|| timestamp_range(filter.timestamp_min, filter.timestamp_max, filter.limit))??;
    Some((Range { reversed: filter.flags.contains(QueryFilterFlags::REVERSED), ..range }, limit))
}

/// The scan range and result cap of a filter, or None if its bounds are invalid.
fn timestamp_range(min: u64, max: u64, limit: u32) -> Option<(Range, usize)> {
    if min == u64::MAX || max == u64::MAX || limit == 0 || (max != 0 && min > max) {
        return None;
    }
    let max = if max == 0 { u64::MAX } else { max };
    Some((Range { min, max, reversed: false }, (limit as usize).min(BATCH_EVENTS_MAX)))
}
