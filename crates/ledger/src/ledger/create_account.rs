//! `create_accounts`: the checks for one account, in the order of SEMANTICS.md
//! ("create_accounts — checks in order"). Batch-level checks (chains, imported flags,
//! timestamps) have already run in `mod.rs`.

use super::Ledger;
use crate::results::CreateAccountResult as R;
use crate::store::Store;
use crate::types::{Account, AccountFlags};

impl<S: Store> Ledger<S> {
    pub(super) fn create_account(&mut self, a: &Account) -> R {
        assert!(a.timestamp != 0);
        if a.reserved != 0 {
            return R::ReservedField;
        }
        if a.flags.bits() & !AccountFlags::all().bits() != 0 {
            return R::ReservedFlag;
        }
        if a.id == 0 {
            return R::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return R::IdMustNotBeIntMax;
        }
        if let Some(existing) = self.store.account(a.id) {
            return account_exists(a, &existing);
        }
        if a.flags.contains(
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        ) {
            return R::FlagsAreMutuallyExclusive;
        }
        if a.debits_pending != 0 {
            return R::DebitsPendingMustBeZero;
        }
        if a.debits_posted != 0 {
            return R::DebitsPostedMustBeZero;
        }
        if a.credits_pending != 0 {
            return R::CreditsPendingMustBeZero;
        }
        if a.credits_posted != 0 {
            return R::CreditsPostedMustBeZero;
        }
        if a.ledger == 0 {
            return R::LedgerMustNotBeZero;
        }
        if a.code == 0 {
            return R::CodeMustNotBeZero;
        }
        if a.flags.contains(AccountFlags::IMPORTED)
            && (a.timestamp <= self.store.account_timestamp_max()
                || self.store.transfer_exists_at(a.timestamp))
        {
            return R::ImportedEventTimestampMustNotRegress;
        }
        assert!(a.timestamp > self.store.account_timestamp_max());
        self.store.insert_account(*a);
        R::Ok
    }
}

/// `exists` or the first field that differs. `closed` is state, not identity.
fn account_exists(a: &Account, e: &Account) -> R {
    assert_eq!(a.id, e.id);
    let identity = |flags: AccountFlags| flags.difference(AccountFlags::CLOSED);
    if identity(a.flags) != identity(e.flags) {
        return R::ExistsWithDifferentFlags;
    }
    if a.user_data_128 != e.user_data_128 {
        return R::ExistsWithDifferentUserData128;
    }
    if a.user_data_64 != e.user_data_64 {
        return R::ExistsWithDifferentUserData64;
    }
    if a.user_data_32 != e.user_data_32 {
        return R::ExistsWithDifferentUserData32;
    }
    if a.ledger != e.ledger {
        return R::ExistsWithDifferentLedger;
    }
    if a.code != e.code {
        return R::ExistsWithDifferentCode;
    }
    R::Exists
}
