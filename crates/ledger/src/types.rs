//! The ledger's records: [`Account`], [`Transfer`], [`AccountBalance`], the two query
//! filters, and their flag sets.
//!
//! Every record has a stable 128-byte little-endian encoding (`to_bytes` / `from_bytes`),
//! because records go into the write-ahead log and onto the wire. Field order and offsets
//! never change; new fields can only take bytes that are reserved today. Decoding keeps
//! unknown flag bits and reserved bytes as they are, so that validation can reject them
//! with a precise result code instead of silently dropping them.
//!
//! This module does no validation: what a valid record is lives in `ledger/`.

use bitflags::bitflags;

/// The encoded size of every record in this module.
pub const RECORD_SIZE: usize = 128;

/// Most events in one request (and most results of one query). Chosen so that a batch
/// of 128-byte events plus headers fits in 1 MiB, as in TigerBeetle.
pub const BATCH_EVENTS_MAX: usize = 8189;

/// Largest timestamp the cluster assigns or accepts: timestamps are nanoseconds and must
/// fit in an i64 so that every client language can hold them.
pub const TIMESTAMP_MAX: u64 = i64::MAX as u64;

/// `Transfer.amount` value that means "the whole pending amount" on a post, and "as much
/// as the balance limit allows" on a balancing transfer.
pub const AMOUNT_MAX: u128 = u128::MAX;

bitflags! {
    /// Flags of an [`Account`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct AccountFlags: u16 {
        /// This event and the next one in the batch succeed or fail together.
        const LINKED = 1 << 0;
        /// `debits_pending + debits_posted` may never exceed `credits_posted`.
        const DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1;
        /// `credits_pending + credits_posted` may never exceed `debits_posted`.
        const CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2;
        /// Keep a balance snapshot after every transfer, for `get_account_balances`.
        const HISTORY = 1 << 3;
        /// The event carries its own timestamp (migrating data from another system).
        const IMPORTED = 1 << 4;
        /// No transfer may change this account's balances, except voiding/expiring
        /// pending transfers. Set by a `closing_*` pending transfer, cleared when that
        /// transfer is voided or expires.
        const CLOSED = 1 << 5;
    }
}

bitflags! {
    /// Flags of a [`Transfer`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct TransferFlags: u16 {
        /// This event and the next one in the batch succeed or fail together.
        const LINKED = 1 << 0;
        /// Reserve the amount (debits_pending/credits_pending) until posted, voided or
        /// expired.
        const PENDING = 1 << 1;
        /// Post (fully or partly) the pending transfer named by `pending_id`.
        const POST_PENDING_TRANSFER = 1 << 2;
        /// Void the pending transfer named by `pending_id`, releasing its reservation.
        const VOID_PENDING_TRANSFER = 1 << 3;
        /// Clamp the amount so that the debit account's debits do not exceed its credits.
        const BALANCING_DEBIT = 1 << 4;
        /// Clamp the amount so that the credit account's credits do not exceed its debits.
        const BALANCING_CREDIT = 1 << 5;
        /// Close the debit account (must be pending; voiding reopens it).
        const CLOSING_DEBIT = 1 << 6;
        /// Close the credit account (must be pending; voiding reopens it).
        const CLOSING_CREDIT = 1 << 7;
        /// The event carries its own timestamp (migrating data from another system).
        const IMPORTED = 1 << 8;
    }
}

bitflags! {
    /// Flags of an [`AccountFilter`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AccountFilterFlags: u32 {
        /// Include transfers where the account is the debit account.
        const DEBITS = 1 << 0;
        /// Include transfers where the account is the credit account.
        const CREDITS = 1 << 1;
        /// Newest first.
        const REVERSED = 1 << 2;
    }
}

bitflags! {
    /// Flags of a [`QueryFilter`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct QueryFilterFlags: u32 {
        /// Newest first.
        const REVERSED = 1 << 0;
    }
}

/// A double-entry account. Immutable once created, except its four balances and the
/// `closed` flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Account {
    pub id: u128,
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// Must be zero.
    pub reserved: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: AccountFlags,
    /// Assigned by the cluster (nanoseconds), unless `flags.imported`.
    pub timestamp: u64,
}

/// A movement of `amount` from the debit account to the credit account. Immutable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Transfer {
    pub id: u128,
    pub debit_account_id: u128,
    pub credit_account_id: u128,
    pub amount: u128,
    /// For post/void: the id of the pending transfer. Otherwise zero.
    pub pending_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    /// For pending transfers: seconds until expiry (0 = never). Otherwise zero.
    pub timeout: u32,
    pub ledger: u32,
    pub code: u16,
    pub flags: TransferFlags,
    /// Assigned by the cluster (nanoseconds), unless `flags.imported`.
    pub timestamp: u64,
}

/// An account's balances right after the transfer with the same `timestamp`
/// (kept only for accounts with `flags.history`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountBalance {
    pub debits_pending: u128,
    pub debits_posted: u128,
    pub credits_pending: u128,
    pub credits_posted: u128,
    pub timestamp: u64,
    pub reserved: [u8; 56],
}

/// Selects the transfers (or balances) of one account.
///
/// Zero in `user_data_*`, `code`, `timestamp_min` and `timestamp_max` means "any".
/// A filter is invalid (and the query returns nothing) when: `account_id` is 0 or
/// `u128::MAX`; `timestamp_min` or `timestamp_max` is `u64::MAX`; both are set and
/// `timestamp_min > timestamp_max`; `limit` is 0; neither `debits` nor `credits` is set;
/// an unknown flag is set; or `reserved` is not zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountFilter {
    pub account_id: u128,
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub code: u16,
    pub reserved: [u8; 58],
    pub timestamp_min: u64,
    pub timestamp_max: u64,
    /// At most this many results (also capped at [`BATCH_EVENTS_MAX`]).
    pub limit: u32,
    pub flags: AccountFilterFlags,
}

/// Selects accounts or transfers by their user data, ledger, code and timestamp.
///
/// Zero in a field means "any". Invalid (returns nothing) when `limit` is 0,
/// a timestamp bound is `u64::MAX`, `timestamp_min > timestamp_max` (both set), an
/// unknown flag is set, or `reserved` is not zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueryFilter {
    pub user_data_128: u128,
    pub user_data_64: u64,
    pub user_data_32: u32,
    pub ledger: u32,
    pub code: u16,
    pub reserved: [u8; 70],
    pub timestamp_min: u64,
    pub timestamp_max: u64,
    pub limit: u32,
    pub flags: QueryFilterFlags,
}

impl Default for AccountBalance {
    fn default() -> Self {
        AccountBalance {
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            timestamp: 0,
            reserved: [0; 56],
        }
    }
}

impl Default for AccountFilter {
    fn default() -> Self {
        AccountFilter {
            account_id: 0,
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            code: 0,
            reserved: [0; 58],
            timestamp_min: 0,
            timestamp_max: 0,
            limit: BATCH_EVENTS_MAX as u32,
            flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        }
    }
}

impl Default for QueryFilter {
    fn default() -> Self {
        QueryFilter {
            user_data_128: 0,
            user_data_64: 0,
            user_data_32: 0,
            ledger: 0,
            code: 0,
            reserved: [0; 70],
            timestamp_min: 0,
            timestamp_max: 0,
            limit: BATCH_EVENTS_MAX as u32,
            flags: QueryFilterFlags::empty(),
        }
    }
}

/// Little-endian field writer over a fixed 128-byte record.
struct Writer {
    bytes: [u8; RECORD_SIZE],
    at: usize,
}

impl Writer {
    fn new() -> Self {
        Writer { bytes: [0; RECORD_SIZE], at: 0 }
    }
    fn put(&mut self, field: &[u8]) {
        self.bytes[self.at..self.at + field.len()].copy_from_slice(field);
        self.at += field.len();
    }
    fn finish(self) -> [u8; RECORD_SIZE] {
        assert_eq!(self.at, RECORD_SIZE, "record layout must fill 128 bytes exactly");
        self.bytes
    }
}

/// Little-endian field reader over a fixed 128-byte record.
struct Reader<'a> {
    bytes: &'a [u8; RECORD_SIZE],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8; RECORD_SIZE]) -> Self {
        Reader { bytes, at: 0 }
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let field: [u8; N] = self.bytes[self.at..self.at + N].try_into().expect("in bounds");
        self.at += N;
        field
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn done(self) {
        assert_eq!(self.at, RECORD_SIZE, "record layout must fill 128 bytes exactly");
    }
}

impl Account {
    /// Layout: id 0..16, debits_pending 16..32, debits_posted 32..48, credits_pending
    /// 48..64, credits_posted 64..80, user_data_128 80..96, user_data_64 96..104,
    /// user_data_32 104..108, reserved 108..112, ledger 112..116, code 116..118,
    /// flags 118..120, timestamp 120..128.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut w = Writer::new();
        w.put(&self.id.to_le_bytes());
        w.put(&self.debits_pending.to_le_bytes());
        w.put(&self.debits_posted.to_le_bytes());
        w.put(&self.credits_pending.to_le_bytes());
        w.put(&self.credits_posted.to_le_bytes());
        w.put(&self.user_data_128.to_le_bytes());
        w.put(&self.user_data_64.to_le_bytes());
        w.put(&self.user_data_32.to_le_bytes());
        w.put(&self.reserved.to_le_bytes());
        w.put(&self.ledger.to_le_bytes());
        w.put(&self.code.to_le_bytes());
        w.put(&self.flags.bits().to_le_bytes());
        w.put(&self.timestamp.to_le_bytes());
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8; RECORD_SIZE]) -> Self {
        let mut r = Reader::new(bytes);
        let account = Account {
            id: r.u128(),
            debits_pending: r.u128(),
            debits_posted: r.u128(),
            credits_pending: r.u128(),
            credits_posted: r.u128(),
            user_data_128: r.u128(),
            user_data_64: r.u64(),
            user_data_32: r.u32(),
            reserved: r.u32(),
            ledger: r.u32(),
            code: r.u16(),
            flags: AccountFlags::from_bits_retain(r.u16()),
            timestamp: r.u64(),
        };
        r.done();
        account
    }
}

impl Transfer {
    /// Layout: id 0..16, debit_account_id 16..32, credit_account_id 32..48, amount
    /// 48..64, pending_id 64..80, user_data_128 80..96, user_data_64 96..104,
    /// user_data_32 104..108, timeout 108..112, ledger 112..116, code 116..118,
    /// flags 118..120, timestamp 120..128.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut w = Writer::new();
        w.put(&self.id.to_le_bytes());
        w.put(&self.debit_account_id.to_le_bytes());
        w.put(&self.credit_account_id.to_le_bytes());
        w.put(&self.amount.to_le_bytes());
        w.put(&self.pending_id.to_le_bytes());
        w.put(&self.user_data_128.to_le_bytes());
        w.put(&self.user_data_64.to_le_bytes());
        w.put(&self.user_data_32.to_le_bytes());
        w.put(&self.timeout.to_le_bytes());
        w.put(&self.ledger.to_le_bytes());
        w.put(&self.code.to_le_bytes());
        w.put(&self.flags.bits().to_le_bytes());
        w.put(&self.timestamp.to_le_bytes());
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8; RECORD_SIZE]) -> Self {
        let mut r = Reader::new(bytes);
        let transfer = Transfer {
            id: r.u128(),
            debit_account_id: r.u128(),
            credit_account_id: r.u128(),
            amount: r.u128(),
            pending_id: r.u128(),
            user_data_128: r.u128(),
            user_data_64: r.u64(),
            user_data_32: r.u32(),
            timeout: r.u32(),
            ledger: r.u32(),
            code: r.u16(),
            flags: TransferFlags::from_bits_retain(r.u16()),
            timestamp: r.u64(),
        };
        r.done();
        transfer
    }
}

impl AccountBalance {
    /// Layout: debits_pending 0..16, debits_posted 16..32, credits_pending 32..48,
    /// credits_posted 48..64, timestamp 64..72, reserved 72..128.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut w = Writer::new();
        w.put(&self.debits_pending.to_le_bytes());
        w.put(&self.debits_posted.to_le_bytes());
        w.put(&self.credits_pending.to_le_bytes());
        w.put(&self.credits_posted.to_le_bytes());
        w.put(&self.timestamp.to_le_bytes());
        w.put(&self.reserved);
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8; RECORD_SIZE]) -> Self {
        let mut r = Reader::new(bytes);
        let balance = AccountBalance {
            debits_pending: r.u128(),
            debits_posted: r.u128(),
            credits_pending: r.u128(),
            credits_posted: r.u128(),
            timestamp: r.u64(),
            reserved: r.take(),
        };
        r.done();
        balance
    }
}

impl AccountFilter {
    /// Layout: account_id 0..16, user_data_128 16..32, user_data_64 32..40,
    /// user_data_32 40..44, code 44..46, reserved 46..104, timestamp_min 104..112,
    /// timestamp_max 112..120, limit 120..124, flags 124..128.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut w = Writer::new();
        w.put(&self.account_id.to_le_bytes());
        w.put(&self.user_data_128.to_le_bytes());
        w.put(&self.user_data_64.to_le_bytes());
        w.put(&self.user_data_32.to_le_bytes());
        w.put(&self.code.to_le_bytes());
        w.put(&self.reserved);
        w.put(&self.timestamp_min.to_le_bytes());
        w.put(&self.timestamp_max.to_le_bytes());
        w.put(&self.limit.to_le_bytes());
        w.put(&self.flags.bits().to_le_bytes());
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8; RECORD_SIZE]) -> Self {
        let mut r = Reader::new(bytes);
        let filter = AccountFilter {
            account_id: r.u128(),
            user_data_128: r.u128(),
            user_data_64: r.u64(),
            user_data_32: r.u32(),
            code: r.u16(),
            reserved: r.take(),
            timestamp_min: r.u64(),
            timestamp_max: r.u64(),
            limit: r.u32(),
            flags: AccountFilterFlags::from_bits_retain(r.u32()),
        };
        r.done();
        filter
    }
}

impl QueryFilter {
    /// Layout: user_data_128 0..16, user_data_64 16..24, user_data_32 24..28,
    /// ledger 28..32, code 32..34, reserved 34..104, timestamp_min 104..112,
    /// timestamp_max 112..120, limit 120..124, flags 124..128.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut w = Writer::new();
        w.put(&self.user_data_128.to_le_bytes());
        w.put(&self.user_data_64.to_le_bytes());
        w.put(&self.user_data_32.to_le_bytes());
        w.put(&self.ledger.to_le_bytes());
        w.put(&self.code.to_le_bytes());
        w.put(&self.reserved);
        w.put(&self.timestamp_min.to_le_bytes());
        w.put(&self.timestamp_max.to_le_bytes());
        w.put(&self.limit.to_le_bytes());
        w.put(&self.flags.bits().to_le_bytes());
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8; RECORD_SIZE]) -> Self {
        let mut r = Reader::new(bytes);
        let filter = QueryFilter {
            user_data_128: r.u128(),
            user_data_64: r.u64(),
            user_data_32: r.u32(),
            ledger: r.u32(),
            code: r.u16(),
            reserved: r.take(),
            timestamp_min: r.u64(),
            timestamp_max: r.u64(),
            limit: r.u32(),
            flags: QueryFilterFlags::from_bits_retain(r.u32()),
        };
        r.done();
        filter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_encoding_round_trips_and_places_fields_at_documented_offsets() {
        let account = Account {
            id: 0x0102,
            debits_pending: 3,
            debits_posted: 4,
            credits_pending: 5,
            credits_posted: 6,
            user_data_128: 7,
            user_data_64: 8,
            user_data_32: 9,
            reserved: 10,
            ledger: 11,
            code: 12,
            flags: AccountFlags::from_bits_retain(0x8001),
            timestamp: 13,
        };
        let bytes = account.to_bytes();
        assert_eq!(&bytes[0..2], &[0x02, 0x01]);
        assert_eq!(bytes[112], 11);
        assert_eq!(bytes[116], 12);
        assert_eq!(&bytes[118..120], &[0x01, 0x80]);
        assert_eq!(bytes[120], 13);
        assert_eq!(Account::from_bytes(&bytes), account);
    }

    #[test]
    fn transfer_encoding_round_trips_and_keeps_unknown_flags() {
        let transfer = Transfer {
            id: u128::MAX - 1,
            debit_account_id: 2,
            credit_account_id: 3,
            amount: u128::MAX,
            pending_id: 5,
            user_data_128: 6,
            user_data_64: 7,
            user_data_32: 8,
            timeout: 9,
            ledger: 10,
            code: 11,
            flags: TransferFlags::from_bits_retain(0xfe00),
            timestamp: u64::MAX,
        };
        let bytes = transfer.to_bytes();
        assert_eq!(bytes[108], 9);
        assert_eq!(Transfer::from_bytes(&bytes), transfer);
    }

    #[test]
    fn balance_and_filters_round_trip() {
        let balance = AccountBalance {
            debits_pending: 1,
            debits_posted: 2,
            credits_pending: 3,
            credits_posted: 4,
            timestamp: 5,
            reserved: [6; 56],
        };
        assert_eq!(AccountBalance::from_bytes(&balance.to_bytes()), balance);

        let filter = AccountFilter {
            account_id: 1,
            user_data_128: 2,
            user_data_64: 3,
            user_data_32: 4,
            code: 5,
            reserved: [9; 58],
            timestamp_min: 6,
            timestamp_max: 7,
            limit: 8,
            flags: AccountFilterFlags::from_bits_retain(0xff),
        };
        let bytes = filter.to_bytes();
        assert_eq!(bytes[120], 8);
        assert_eq!(AccountFilter::from_bytes(&bytes), filter);

        let query = QueryFilter {
            user_data_128: 1,
            user_data_64: 2,
            user_data_32: 3,
            ledger: 4,
            code: 5,
            reserved: [1; 70],
            timestamp_min: 6,
            timestamp_max: 7,
            limit: 8,
            flags: QueryFilterFlags::REVERSED,
        };
        let bytes = query.to_bytes();
        assert_eq!(bytes[28], 4);
        assert_eq!(QueryFilter::from_bytes(&bytes), query);
    }
}
