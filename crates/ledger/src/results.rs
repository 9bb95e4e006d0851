//! Result codes of `create_accounts` and `create_transfers`.
//!
//! One result per event. Each enum is declared **in order of precedence**: when several
//! errors apply to one event, the one declared first is returned (`Ord` follows
//! declaration order, so `a < b` means "a wins"). Numeric codes are stable: they go on
//! the wire and into logs, and are never reused.
//!
//! This module has no logic beyond naming and classifying codes; the checks that return
//! them live in `ledger/`.

macro_rules! result_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $code:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name {
            $( $(#[doc = $doc])* $variant = $code, )*
        }

        impl $name {
            /// Every variant, in order of precedence (`ok` first).
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stable numeric code.
            pub fn code(self) -> u32 {
                self as u32
            }

            /// The variant with this numeric code, if any.
            pub fn from_code(code: u32) -> Option<Self> {
                match code {
                    $( $code => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// The snake_case name used in docs, the CLI and JSON.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                }
            }

            /// The variant with this snake_case name, if any.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some($name::$variant), )*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

result_enum! {
    /// The result of creating one account. Declared in order of precedence.
    pub enum CreateAccountResult {
        /// The account was created.
        Ok = 0 => "ok",
        /// Not created: another event of its linked chain failed, so the whole chain failed.
        LinkedEventFailed = 1 => "linked_event_failed",
        /// Not created: `flags.linked` is set on the last event of the batch, so the chain
        /// never closes. The whole chain fails.
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        /// Not created: the first event of the batch is imported but this one is not.
        /// A batch is either all imported or all not imported.
        ImportedEventExpected = 3 => "imported_event_expected",
        /// Not created: this event is imported but the first event of the batch is not.
        ImportedEventNotExpected = 4 => "imported_event_not_expected",
        /// Not created: `timestamp` is not zero. The cluster assigns timestamps unless
        /// `flags.imported` is set.
        TimestampMustBeZero = 5 => "timestamp_must_be_zero",
        /// Not created (imported only): `timestamp` is 0 or above 2^63 - 1.
        ImportedEventTimestampOutOfRange = 6 => "imported_event_timestamp_out_of_range",
        /// Not created (imported only): `timestamp` is not in the past; it must be below
        /// the timestamp the cluster assigned to this batch.
        ImportedEventTimestampMustNotAdvance = 7 => "imported_event_timestamp_must_not_advance",
        /// Not created: `reserved` is not zero.
        ReservedField = 8 => "reserved_field",
        /// Not created: an undefined flag bit is set.
        ReservedFlag = 9 => "reserved_flag",
        /// Not created: `id` is 0, a reserved value.
        IdMustNotBeZero = 10 => "id_must_not_be_zero",
        /// Not created: `id` is 2^128 - 1, a reserved value.
        IdMustNotBeIntMax = 11 => "id_must_not_be_int_max",
        /// An account with this id exists with different flags (`closed` is state, not
        /// identity, and is ignored in this comparison).
        ExistsWithDifferentFlags = 12 => "exists_with_different_flags",
        /// An account with this id exists with a different `user_data_128`.
        ExistsWithDifferentUserData128 = 13 => "exists_with_different_user_data_128",
        /// An account with this id exists with a different `user_data_64`.
        ExistsWithDifferentUserData64 = 14 => "exists_with_different_user_data_64",
        /// An account with this id exists with a different `user_data_32`.
        ExistsWithDifferentUserData32 = 15 => "exists_with_different_user_data_32",
        /// An account with this id exists with a different `ledger`.
        ExistsWithDifferentLedger = 16 => "exists_with_different_ledger",
        /// An account with this id exists with a different `code`.
        ExistsWithDifferentCode = 17 => "exists_with_different_code",
        /// An identical account exists already; nothing changed. Safe to treat as `ok`
        /// when retrying.
        Exists = 18 => "exists",
        /// Not created: `debits_must_not_exceed_credits` and
        /// `credits_must_not_exceed_debits` are both set.
        FlagsAreMutuallyExclusive = 19 => "flags_are_mutually_exclusive",
        /// Not created: `debits_pending` must be zero on creation.
        DebitsPendingMustBeZero = 20 => "debits_pending_must_be_zero",
        /// Not created: `debits_posted` must be zero on creation.
        DebitsPostedMustBeZero = 21 => "debits_posted_must_be_zero",
        /// Not created: `credits_pending` must be zero on creation.
        CreditsPendingMustBeZero = 22 => "credits_pending_must_be_zero",
        /// Not created: `credits_posted` must be zero on creation.
        CreditsPostedMustBeZero = 23 => "credits_posted_must_be_zero",
        /// Not created: `ledger` is 0.
        LedgerMustNotBeZero = 24 => "ledger_must_not_be_zero",
        /// Not created: `code` is 0.
        CodeMustNotBeZero = 25 => "code_must_not_be_zero",
        /// Not created (imported only): `timestamp` is not after the newest account's
        /// timestamp, or equals the timestamp of an existing transfer.
        ImportedEventTimestampMustNotRegress = 26 => "imported_event_timestamp_must_not_regress",
    }
}

result_enum! {
    /// The result of creating one transfer. Declared in order of precedence.
    pub enum CreateTransferResult {
        /// The transfer was created (for post/void: the pending transfer was posted/voided).
        Ok = 0 => "ok",
        /// Not created: another event of its linked chain failed, so the whole chain failed.
        LinkedEventFailed = 1 => "linked_event_failed",
        /// Not created: `flags.linked` is set on the last event of the batch.
        LinkedEventChainOpen = 2 => "linked_event_chain_open",
        /// Not created: the first event of the batch is imported but this one is not.
        ImportedEventExpected = 3 => "imported_event_expected",
        /// Not created: this event is imported but the first event of the batch is not.
        ImportedEventNotExpected = 4 => "imported_event_not_expected",
        /// Not created: `timestamp` is not zero (only imported events carry one).
        TimestampMustBeZero = 5 => "timestamp_must_be_zero",
        /// Not created (imported only): `timestamp` is 0 or above 2^63 - 1.
        ImportedEventTimestampOutOfRange = 6 => "imported_event_timestamp_out_of_range",
        /// Not created (imported only): `timestamp` is not below the batch's timestamp.
        ImportedEventTimestampMustNotAdvance = 7 => "imported_event_timestamp_must_not_advance",
        /// Not created: an undefined flag bit is set.
        ReservedFlag = 8 => "reserved_flag",
        /// Not created: `id` is 0.
        IdMustNotBeZero = 9 => "id_must_not_be_zero",
        /// Not created: `id` is 2^128 - 1.
        IdMustNotBeIntMax = 10 => "id_must_not_be_int_max",
        /// A transfer with this id exists with different flags.
        ExistsWithDifferentFlags = 11 => "exists_with_different_flags",
        /// A transfer with this id exists with a different `pending_id`.
        ExistsWithDifferentPendingId = 12 => "exists_with_different_pending_id",
        /// A transfer with this id exists with a different `timeout`.
        ExistsWithDifferentTimeout = 13 => "exists_with_different_timeout",
        /// A transfer with this id exists with a different `debit_account_id` (for
        /// post/void, 0 stands for the pending transfer's value).
        ExistsWithDifferentDebitAccountId = 14 => "exists_with_different_debit_account_id",
        /// A transfer with this id exists with a different `credit_account_id` (for
        /// post/void, 0 stands for the pending transfer's value).
        ExistsWithDifferentCreditAccountId = 15 => "exists_with_different_credit_account_id",
        /// A transfer with this id exists with a different `amount`. For balancing
        /// transfers: the stored (clamped) amount exceeds the requested amount.
        ExistsWithDifferentAmount = 16 => "exists_with_different_amount",
        /// A transfer with this id exists with a different `user_data_128`.
        ExistsWithDifferentUserData128 = 17 => "exists_with_different_user_data_128",
        /// A transfer with this id exists with a different `user_data_64`.
        ExistsWithDifferentUserData64 = 18 => "exists_with_different_user_data_64",
        /// A transfer with this id exists with a different `user_data_32`.
        ExistsWithDifferentUserData32 = 19 => "exists_with_different_user_data_32",
        /// A transfer with this id exists with a different `ledger`.
        ExistsWithDifferentLedger = 20 => "exists_with_different_ledger",
        /// A transfer with this id exists with a different `code`.
        ExistsWithDifferentCode = 21 => "exists_with_different_code",
        /// An identical transfer exists already; nothing changed. Safe to treat as `ok`
        /// when retrying.
        Exists = 22 => "exists",
        /// Not created: an earlier transfer with this id failed with a transient error
        /// (see [`CreateTransferResult::is_transient`]). Ids are unique forever, so the id
        /// cannot succeed later: retry with a new id. settle: also while the id is held
        /// by a cross-shard transfer in flight at its shard (until that commits, when the
        /// id exists, or aborts), and for a post or void of a pending transfer that a
        /// cross-shard post or void in flight holds (that id is burned).
        IdAlreadyFailed = 23 => "id_already_failed",
        /// Not created: incompatible flags: `pending` with post/void; post with void;
        /// post/void with `balancing_*` or `closing_*`.
        FlagsAreMutuallyExclusive = 24 => "flags_are_mutually_exclusive",
        /// Not created: `debit_account_id` is 0 (not post/void).
        DebitAccountIdMustNotBeZero = 25 => "debit_account_id_must_not_be_zero",
        /// Not created: `debit_account_id` is 2^128 - 1.
        DebitAccountIdMustNotBeIntMax = 26 => "debit_account_id_must_not_be_int_max",
        /// Not created: `credit_account_id` is 0 (not post/void).
        CreditAccountIdMustNotBeZero = 27 => "credit_account_id_must_not_be_zero",
        /// Not created: `credit_account_id` is 2^128 - 1.
        CreditAccountIdMustNotBeIntMax = 28 => "credit_account_id_must_not_be_int_max",
        /// Not created: debit and credit account are the same account.
        AccountsMustBeDifferent = 29 => "accounts_must_be_different",
        /// Not created: `pending_id` is set but this is not a post/void.
        PendingIdMustBeZero = 30 => "pending_id_must_be_zero",
        /// Not created: post/void without a `pending_id`.
        PendingIdMustNotBeZero = 31 => "pending_id_must_not_be_zero",
        /// Not created: `pending_id` is 2^128 - 1.
        PendingIdMustNotBeIntMax = 32 => "pending_id_must_not_be_int_max",
        /// Not created: `pending_id` equals `id`.
        PendingIdMustBeDifferent = 33 => "pending_id_must_be_different",
        /// Not created: `timeout` is not zero but the transfer is not pending.
        TimeoutReservedForPendingTransfer = 34 => "timeout_reserved_for_pending_transfer",
        /// Not created: `closing_debit`/`closing_credit` without `pending`.
        ClosingTransferMustBePending = 35 => "closing_transfer_must_be_pending",
        /// Not created: `ledger` is 0 (not post/void, where 0 means "as pending").
        LedgerMustNotBeZero = 36 => "ledger_must_not_be_zero",
        /// Not created: `code` is 0 (not post/void, where 0 means "as pending").
        CodeMustNotBeZero = 37 => "code_must_not_be_zero",
        /// Not created: no account has `debit_account_id`. Transient.
        DebitAccountNotFound = 38 => "debit_account_not_found",
        /// Not created: no account has `credit_account_id`. Transient.
        CreditAccountNotFound = 39 => "credit_account_not_found",
        /// Not created: the two accounts are on different ledgers.
        AccountsMustHaveTheSameLedger = 40 => "accounts_must_have_the_same_ledger",
        /// Not created: the accounts share a ledger but the transfer names another.
        TransferMustHaveTheSameLedgerAsAccounts = 41 => "transfer_must_have_the_same_ledger_as_accounts",
        /// Not created: no transfer has `pending_id`. Transient.
        PendingTransferNotFound = 42 => "pending_transfer_not_found",
        /// Not created: the transfer named by `pending_id` is not a pending transfer.
        PendingTransferNotPending = 43 => "pending_transfer_not_pending",
        /// Not created: `debit_account_id` is neither 0 nor the pending transfer's.
        PendingTransferHasDifferentDebitAccountId = 44 => "pending_transfer_has_different_debit_account_id",
        /// Not created: `credit_account_id` is neither 0 nor the pending transfer's.
        PendingTransferHasDifferentCreditAccountId = 45 => "pending_transfer_has_different_credit_account_id",
        /// Not created: `ledger` is neither 0 nor the pending transfer's.
        PendingTransferHasDifferentLedger = 46 => "pending_transfer_has_different_ledger",
        /// Not created: `code` is neither 0 nor the pending transfer's.
        PendingTransferHasDifferentCode = 47 => "pending_transfer_has_different_code",
        /// Not created: a post's `amount` exceeds the pending amount (and is not
        /// [`crate::AMOUNT_MAX`], which means "all of it").
        ExceedsPendingTransferAmount = 48 => "exceeds_pending_transfer_amount",
        /// Not created: a void's `amount` is neither 0 nor exactly the pending amount.
        PendingTransferHasDifferentAmount = 49 => "pending_transfer_has_different_amount",
        /// Not created: the pending transfer was already posted.
        PendingTransferAlreadyPosted = 50 => "pending_transfer_already_posted",
        /// Not created: the pending transfer was already voided.
        PendingTransferAlreadyVoided = 51 => "pending_transfer_already_voided",
        /// Not created: the pending transfer expired (its timeout passed) and was released.
        PendingTransferExpired = 52 => "pending_transfer_expired",
        /// Not created (imported only): `timestamp` is not after the newest transfer's
        /// timestamp, or equals the timestamp of an existing account.
        ImportedEventTimestampMustNotRegress = 53 => "imported_event_timestamp_must_not_regress",
        /// Not created (imported only): `timestamp` is not after the debit account's.
        ImportedEventTimestampMustPostdateDebitAccount = 54 => "imported_event_timestamp_must_postdate_debit_account",
        /// Not created (imported only): `timestamp` is not after the credit account's.
        ImportedEventTimestampMustPostdateCreditAccount = 55 => "imported_event_timestamp_must_postdate_credit_account",
        /// Not created (imported only): imported pending transfers cannot expire, so
        /// `timeout` must be 0.
        ImportedEventTimeoutMustBeZero = 56 => "imported_event_timeout_must_be_zero",
        /// Not created: the debit account is closed. Transient.
        DebitAccountAlreadyClosed = 57 => "debit_account_already_closed",
        /// Not created: the credit account is closed. Transient.
        CreditAccountAlreadyClosed = 58 => "credit_account_already_closed",
        /// Not created: `debits_pending + amount` overflows u128. Transient.
        OverflowsDebitsPending = 59 => "overflows_debits_pending",
        /// Not created: `credits_pending + amount` overflows u128. Transient.
        OverflowsCreditsPending = 60 => "overflows_credits_pending",
        /// Not created: `debits_posted + amount` overflows u128. Transient.
        OverflowsDebitsPosted = 61 => "overflows_debits_posted",
        /// Not created: `credits_posted + amount` overflows u128. Transient.
        OverflowsCreditsPosted = 62 => "overflows_credits_posted",
        /// Not created: `debits_pending + debits_posted + amount` overflows u128. Transient.
        OverflowsDebits = 63 => "overflows_debits",
        /// Not created: `credits_pending + credits_posted + amount` overflows u128. Transient.
        OverflowsCredits = 64 => "overflows_credits",
        /// Not created: `timestamp + timeout * 10^9` exceeds 2^63 - 1. Transient.
        OverflowsTimeout = 65 => "overflows_timeout",
        /// Not created: the debit account has `debits_must_not_exceed_credits` and
        /// `debits_pending + debits_posted + amount > credits_posted`. Transient.
        ExceedsCredits = 66 => "exceeds_credits",
        /// Not created: the credit account has `credits_must_not_exceed_debits` and
        /// `credits_pending + credits_posted + amount > debits_posted`. Transient.
        ExceedsDebits = 67 => "exceeds_debits",
    }
}

impl CreateAccountResult {
    /// `ok` or `exists`: the account is there as requested.
    pub fn is_success(self) -> bool {
        matches!(self, CreateAccountResult::Ok | CreateAccountResult::Exists)
    }
}

impl CreateTransferResult {
    /// `ok` or `exists`: the transfer is there as requested.
    pub fn is_success(self) -> bool {
        matches!(self, CreateTransferResult::Ok | CreateTransferResult::Exists)
    }

    /// A transient error depends on the ledger's state at that moment (an account or
    /// pending transfer not there yet, a balance, an account closed), so the same request
    /// could succeed later. Because ids are unique forever, the id of a transfer that
    /// failed this way is recorded, and reusing it returns `id_already_failed`: a retry
    /// can never apply a transfer that the client was told had failed.
    pub fn is_transient(self) -> bool {
        use CreateTransferResult as R;
        matches!(
            self,
            R::DebitAccountNotFound
                | R::CreditAccountNotFound
                | R::PendingTransferNotFound
                | R::DebitAccountAlreadyClosed
                | R::CreditAccountAlreadyClosed
                | R::OverflowsDebitsPending
                | R::OverflowsCreditsPending
                | R::OverflowsDebitsPosted
                | R::OverflowsCreditsPosted
                | R::OverflowsDebits
                | R::OverflowsCredits
                | R::OverflowsTimeout
                | R::ExceedsCredits
                | R::ExceedsDebits
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for (i, r) in CreateAccountResult::ALL.iter().enumerate() {
            assert_eq!(CreateAccountResult::from_code(r.code()), Some(*r));
            assert_eq!(CreateAccountResult::from_name(r.name()), Some(*r));
            assert_eq!(r.code() as usize, i, "account codes follow precedence order");
        }
        for (i, r) in CreateTransferResult::ALL.iter().enumerate() {
            assert_eq!(CreateTransferResult::from_code(r.code()), Some(*r));
            assert_eq!(CreateTransferResult::from_name(r.name()), Some(*r));
            assert_eq!(r.code() as usize, i, "transfer codes follow precedence order");
        }
        assert_eq!(CreateAccountResult::ALL.len(), 27);
        assert_eq!(CreateTransferResult::ALL.len(), 68);
        assert_eq!(CreateTransferResult::from_code(68), None);
    }

    #[test]
    fn precedence_is_declaration_order() {
        assert!(CreateTransferResult::LinkedEventFailed < CreateTransferResult::Exists);
        assert!(CreateTransferResult::Exists < CreateTransferResult::IdAlreadyFailed);
        assert!(CreateTransferResult::ExceedsCredits < CreateTransferResult::ExceedsDebits);
    }
}
