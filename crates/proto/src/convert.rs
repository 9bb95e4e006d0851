//! Conversions between [`pb`] messages and `settle_ledger` types.
//!
//! Direction and failure:
//! - ledger → pb is infallible (`From`). `Account::reserved` travels (so that the
//!   ledger can answer `reserved_field`); the `reserved` bytes of [`AccountBalance`],
//!   [`AccountFilter`] and [`QueryFilter`] are not in the schema and are dropped (they
//!   must be zero anyway).
//! - pb → ledger is `TryFrom` where the schema's field is wider than the ledger's:
//!   `code` and `flags` are `uint32` on the wire and `u16` in the ledger, and a larger
//!   value is refused with [`ConvertError::OutOfRange`] naming the record, the field and
//!   the value. Fields the schema lacks come out as zero. Unknown flag bits that fit are
//!   kept, so that the ledger can reject them with `reserved_flag`.
//! - `U128 { lo, hi }` ↔ `u128`: `value = hi * 2^64 + lo`; an absent field is 0, and 0
//!   is encoded as an absent field.
//! - Result codes: the pb enums carry the ledger's codes unchanged (a test keeps the two
//!   lists equal), so a result goes on the wire as `code() as i32`; an unknown value
//!   coming back is [`ConvertError::UnknownResultCode`].
//! - Packed batches: consecutive 128-byte records in the ledger's stable little-endian
//!   encoding ([`settle_ledger::RECORD_SIZE`]); a length that is not a multiple of 128
//!   is [`ConvertError::PackedLength`].

use settle_ledger::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult,
    CreateTransferResult, QueryFilter, QueryFilterFlags, Transfer, TransferFlags, RECORD_SIZE,
};

use crate::pb;

/// Why a pb message (or a packed batch) could not become a ledger value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A field holds a value the ledger's type cannot represent.
    #[error("{record}.{field} = {value} is out of range (at most {max})")]
    OutOfRange {
        /// The message, e.g. `"Transfer"`.
        record: &'static str,
        /// The field, e.g. `"code"`.
        field: &'static str,
        /// The value received.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A packed batch whose length is not a whole number of records.
    #[error(
        "packed {record}s: length {len} bytes is not a multiple of the \
         {RECORD_SIZE}-byte record size"
    )]
    PackedLength {
        /// `"Account"` or `"Transfer"`.
        record: &'static str,
        /// The length received, in bytes.
        len: usize,
    },
    /// A result value that is not a known code of this result enum.
    #[error("unknown {kind} code {code}")]
    UnknownResultCode {
        /// `"CreateAccountResult"` or `"CreateTransferResult"`.
        kind: &'static str,
        /// The value received.
        code: i32,
    },
    /// A create request that carries events both in its repeated field and in `packed`.
    #[error(
        "request uses both `{field}` ({count} events) and `packed` ({packed_len} bytes); \
         a request must use exactly one form"
    )]
    BothForms {
        /// `"accounts"` or `"transfers"`.
        field: &'static str,
        /// Events in the repeated field.
        count: usize,
        /// Bytes in `packed`.
        packed_len: usize,
    },
    /// An event of a batch failed to convert.
    #[error("event {index}: {source}")]
    Event {
        /// The event's position in the batch (0-based).
        index: usize,
        /// What was wrong with it.
        source: Box<ConvertError>,
    },
}

// ---------------------------------------------------------------------------------------
// 128-bit integers

impl From<u128> for pb::U128 {
    fn from(value: u128) -> Self {
        pb::U128 { lo: value as u64, hi: (value >> 64) as u64 }
    }
}

impl From<pb::U128> for u128 {
    fn from(value: pb::U128) -> Self {
        (u128::from(value.hi) << 64) | u128::from(value.lo)
    }
}

/// A `u128` as an optional `U128` field: 0 is encoded as absent.
pub fn u128_to_pb(value: u128) -> Option<pb::U128> {
    (value != 0).then(|| pb::U128::from(value))
}

/// An optional `U128` field as a `u128`: absent is 0.
pub fn u128_from_pb(value: Option<pb::U128>) -> u128 {
    value.map_or(0, u128::from)
}

/// Ids as `U128`s (every id present, including 0), e.g. for a `LookupRequest`.
pub fn ids_to_pb(ids: &[u128]) -> Vec<pb::U128> {
    ids.iter().map(|&id| pb::U128::from(id)).collect()
}

/// `U128`s as ids.
pub fn ids_from_pb(ids: &[pb::U128]) -> Vec<u128> {
    ids.iter().map(|&id| u128::from(id)).collect()
}

fn narrow_u16(record: &'static str, field: &'static str, value: u32) -> Result<u16, ConvertError> {
    u16::try_from(value).map_err(|_| ConvertError::OutOfRange {
        record,
        field,
        value: u64::from(value),
        max: u64::from(u16::MAX),
    })
}

// ---------------------------------------------------------------------------------------
// Accounts

impl From<&Account> for pb::Account {
    fn from(a: &Account) -> Self {
        pb::Account {
            id: u128_to_pb(a.id),
            debits_pending: u128_to_pb(a.debits_pending),
            debits_posted: u128_to_pb(a.debits_posted),
            credits_pending: u128_to_pb(a.credits_pending),
            credits_posted: u128_to_pb(a.credits_posted),
            user_data_128: u128_to_pb(a.user_data_128),
            user_data_64: a.user_data_64,
            user_data_32: a.user_data_32,
            ledger: a.ledger,
            code: u32::from(a.code),
            flags: u32::from(a.flags.bits()),
            timestamp: a.timestamp,
            reserved: a.reserved,
        }
    }
}

impl From<Account> for pb::Account {
    fn from(a: Account) -> Self {
        pb::Account::from(&a)
    }
}

impl TryFrom<&pb::Account> for Account {
    type Error = ConvertError;

    /// Refuses `code` or `flags` above `u16::MAX`.
    fn try_from(a: &pb::Account) -> Result<Self, ConvertError> {
        Ok(Account {
            id: u128_from_pb(a.id),
            debits_pending: u128_from_pb(a.debits_pending),
            debits_posted: u128_from_pb(a.debits_posted),
            credits_pending: u128_from_pb(a.credits_pending),
            credits_posted: u128_from_pb(a.credits_posted),
            user_data_128: u128_from_pb(a.user_data_128),
            user_data_64: a.user_data_64,
            user_data_32: a.user_data_32,
            reserved: a.reserved,
            ledger: a.ledger,
            code: narrow_u16("Account", "code", a.code)?,
            flags: AccountFlags::from_bits_retain(narrow_u16("Account", "flags", a.flags)?),
            timestamp: a.timestamp,
        })
    }
}

impl TryFrom<pb::Account> for Account {
    type Error = ConvertError;

    fn try_from(a: pb::Account) -> Result<Self, ConvertError> {
        Account::try_from(&a)
    }
}

// ---------------------------------------------------------------------------------------
// Transfers

impl From<&Transfer> for pb::Transfer {
    fn from(t: &Transfer) -> Self {
        pb::Transfer {
            id: u128_to_pb(t.id),
            debit_account_id: u128_to_pb(t.debit_account_id),
            credit_account_id: u128_to_pb(t.credit_account_id),
            amount: u128_to_pb(t.amount),
            pending_id: u128_to_pb(t.pending_id),
            user_data_128: u128_to_pb(t.user_data_128),
            user_data_64: t.user_data_64,
            user_data_32: t.user_data_32,
            timeout: t.timeout,
            ledger: t.ledger,
            code: u32::from(t.code),
            flags: u32::from(t.flags.bits()),
            timestamp: t.timestamp,
        }
    }
}

impl From<Transfer> for pb::Transfer {
    fn from(t: Transfer) -> Self {
        pb::Transfer::from(&t)
    }
}

impl TryFrom<&pb::Transfer> for Transfer {
    type Error = ConvertError;

    /// Refuses `code` or `flags` above `u16::MAX`.
    fn try_from(t: &pb::Transfer) -> Result<Self, ConvertError> {
        Ok(Transfer {
            id: u128_from_pb(t.id),
            debit_account_id: u128_from_pb(t.debit_account_id),
            credit_account_id: u128_from_pb(t.credit_account_id),
            amount: u128_from_pb(t.amount),
            pending_id: u128_from_pb(t.pending_id),
            user_data_128: u128_from_pb(t.user_data_128),
            user_data_64: t.user_data_64,
            user_data_32: t.user_data_32,
            timeout: t.timeout,
            ledger: t.ledger,
            code: narrow_u16("Transfer", "code", t.code)?,
            flags: TransferFlags::from_bits_retain(narrow_u16("Transfer", "flags", t.flags)?),
            timestamp: t.timestamp,
        })
    }
}

impl TryFrom<pb::Transfer> for Transfer {
    type Error = ConvertError;

    fn try_from(t: pb::Transfer) -> Result<Self, ConvertError> {
        Transfer::try_from(&t)
    }
}

// ---------------------------------------------------------------------------------------
// Balances

impl From<&AccountBalance> for pb::AccountBalance {
    /// Drops `reserved`.
    fn from(b: &AccountBalance) -> Self {
        pb::AccountBalance {
            debits_pending: u128_to_pb(b.debits_pending),
            debits_posted: u128_to_pb(b.debits_posted),
            credits_pending: u128_to_pb(b.credits_pending),
            credits_posted: u128_to_pb(b.credits_posted),
            timestamp: b.timestamp,
        }
    }
}

impl From<AccountBalance> for pb::AccountBalance {
    fn from(b: AccountBalance) -> Self {
        pb::AccountBalance::from(&b)
    }
}

impl From<&pb::AccountBalance> for AccountBalance {
    /// `reserved` comes out as zeros.
    fn from(b: &pb::AccountBalance) -> Self {
        AccountBalance {
            debits_pending: u128_from_pb(b.debits_pending),
            debits_posted: u128_from_pb(b.debits_posted),
            credits_pending: u128_from_pb(b.credits_pending),
            credits_posted: u128_from_pb(b.credits_posted),
            timestamp: b.timestamp,
            reserved: [0; 56],
        }
    }
}

impl From<pb::AccountBalance> for AccountBalance {
    fn from(b: pb::AccountBalance) -> Self {
        AccountBalance::from(&b)
    }
}

// ---------------------------------------------------------------------------------------
// Filters

impl From<&AccountFilter> for pb::AccountFilter {
    /// Drops `reserved`.
    fn from(f: &AccountFilter) -> Self {
        pb::AccountFilter {
            account_id: u128_to_pb(f.account_id),
            user_data_128: u128_to_pb(f.user_data_128),
            user_data_64: f.user_data_64,
            user_data_32: f.user_data_32,
            code: u32::from(f.code),
            timestamp_min: f.timestamp_min,
            timestamp_max: f.timestamp_max,
            limit: f.limit,
            flags: f.flags.bits(),
        }
    }
}

impl From<AccountFilter> for pb::AccountFilter {
    fn from(f: AccountFilter) -> Self {
        pb::AccountFilter::from(&f)
    }
}

impl TryFrom<&pb::AccountFilter> for AccountFilter {
    type Error = ConvertError;

    /// Refuses `code` above `u16::MAX`; `reserved` comes out as zeros.
    fn try_from(f: &pb::AccountFilter) -> Result<Self, ConvertError> {
        Ok(AccountFilter {
            account_id: u128_from_pb(f.account_id),
            user_data_128: u128_from_pb(f.user_data_128),
            user_data_64: f.user_data_64,
            user_data_32: f.user_data_32,
            code: narrow_u16("AccountFilter", "code", f.code)?,
            reserved: [0; 58],
            timestamp_min: f.timestamp_min,
            timestamp_max: f.timestamp_max,
            limit: f.limit,
            flags: AccountFilterFlags::from_bits_retain(f.flags),
        })
    }
}

impl TryFrom<pb::AccountFilter> for AccountFilter {
    type Error = ConvertError;

    fn try_from(f: pb::AccountFilter) -> Result<Self, ConvertError> {
        AccountFilter::try_from(&f)
    }
}

impl From<&QueryFilter> for pb::QueryFilter {
    /// Drops `reserved`.
    fn from(f: &QueryFilter) -> Self {
        pb::QueryFilter {
            user_data_128: u128_to_pb(f.user_data_128),
            user_data_64: f.user_data_64,
            user_data_32: f.user_data_32,
            ledger: f.ledger,
            code: u32::from(f.code),
            timestamp_min: f.timestamp_min,
            timestamp_max: f.timestamp_max,
            limit: f.limit,
            flags: f.flags.bits(),
        }
    }
}

impl From<QueryFilter> for pb::QueryFilter {
    fn from(f: QueryFilter) -> Self {
        pb::QueryFilter::from(&f)
    }
}

impl TryFrom<&pb::QueryFilter> for QueryFilter {
    type Error = ConvertError;

    /// Refuses `code` above `u16::MAX`; `reserved` comes out as zeros.
    fn try_from(f: &pb::QueryFilter) -> Result<Self, ConvertError> {
        Ok(QueryFilter {
            user_data_128: u128_from_pb(f.user_data_128),
            user_data_64: f.user_data_64,
            user_data_32: f.user_data_32,
            ledger: f.ledger,
            code: narrow_u16("QueryFilter", "code", f.code)?,
            reserved: [0; 70],
            timestamp_min: f.timestamp_min,
            timestamp_max: f.timestamp_max,
            limit: f.limit,
            flags: QueryFilterFlags::from_bits_retain(f.flags),
        })
    }
}

impl TryFrom<pb::QueryFilter> for QueryFilter {
    type Error = ConvertError;

    fn try_from(f: pb::QueryFilter) -> Result<Self, ConvertError> {
        QueryFilter::try_from(&f)
    }
}

// ---------------------------------------------------------------------------------------
// Result codes

/// Account results as the values of `CreateAccountsReply.results`.
pub fn account_results_to_pb(results: &[CreateAccountResult]) -> Vec<i32> {
    results.iter().map(|r| r.code() as i32).collect()
}

/// One pb `CreateAccountResult` value as the ledger's result.
pub fn account_result_from_pb(value: i32) -> Result<CreateAccountResult, ConvertError> {
    u32::try_from(value)
        .ok()
        .and_then(CreateAccountResult::from_code)
        .ok_or(ConvertError::UnknownResultCode { kind: "CreateAccountResult", code: value })
}

/// `CreateAccountsReply.results` as the ledger's results; refuses an unknown value.
pub fn account_results_from_pb(values: &[i32]) -> Result<Vec<CreateAccountResult>, ConvertError> {
    values.iter().map(|&v| account_result_from_pb(v)).collect()
}

/// Transfer results as the values of `CreateTransfersReply.results`.
pub fn transfer_results_to_pb(results: &[CreateTransferResult]) -> Vec<i32> {
    results.iter().map(|r| r.code() as i32).collect()
}

/// One pb `CreateTransferResult` value as the ledger's result.
pub fn transfer_result_from_pb(value: i32) -> Result<CreateTransferResult, ConvertError> {
    u32::try_from(value)
        .ok()
        .and_then(CreateTransferResult::from_code)
        .ok_or(ConvertError::UnknownResultCode { kind: "CreateTransferResult", code: value })
}

/// `CreateTransfersReply.results` as the ledger's results; refuses an unknown value.
pub fn transfer_results_from_pb(values: &[i32]) -> Result<Vec<CreateTransferResult>, ConvertError> {
    values.iter().map(|&v| transfer_result_from_pb(v)).collect()
}

// ---------------------------------------------------------------------------------------
// Packed batches

fn decode_packed<T>(
    record: &'static str,
    bytes: &[u8],
    decode: impl Fn(&[u8; RECORD_SIZE]) -> T,
) -> Result<Vec<T>, ConvertError> {
    if !bytes.len().is_multiple_of(RECORD_SIZE) {
        return Err(ConvertError::PackedLength { record, len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(RECORD_SIZE)
        .map(|chunk| decode(chunk.try_into().expect("chunks_exact yields whole records")))
        .collect())
}

/// Decodes a `packed` field of transfers: consecutive 128-byte records.
pub fn decode_packed_transfers(bytes: &[u8]) -> Result<Vec<Transfer>, ConvertError> {
    decode_packed("Transfer", bytes, Transfer::from_bytes)
}

/// Encodes transfers for a `packed` field.
pub fn encode_packed_transfers(transfers: &[Transfer]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(transfers.len() * RECORD_SIZE);
    for t in transfers {
        bytes.extend_from_slice(&t.to_bytes());
    }
    bytes
}

/// Decodes a `packed` field of accounts: consecutive 128-byte records.
pub fn decode_packed_accounts(bytes: &[u8]) -> Result<Vec<Account>, ConvertError> {
    decode_packed("Account", bytes, Account::from_bytes)
}

/// Encodes accounts for a `packed` field (keeps `reserved`, unlike the repeated form).
pub fn encode_packed_accounts(accounts: &[Account]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(accounts.len() * RECORD_SIZE);
    for a in accounts {
        bytes.extend_from_slice(&a.to_bytes());
    }
    bytes
}

// ---------------------------------------------------------------------------------------
// Requests

/// The transfers of a request, from `transfers` or from `packed`; refuses a request that
/// uses both. A request with neither is an empty batch.
pub fn request_transfers(req: &pb::CreateTransfersRequest) -> Result<Vec<Transfer>, ConvertError> {
    match (req.transfers.is_empty(), req.packed.is_empty()) {
        (false, false) => Err(ConvertError::BothForms {
            field: "transfers",
            count: req.transfers.len(),
            packed_len: req.packed.len(),
        }),
        (true, _) => decode_packed_transfers(&req.packed),
        (false, true) => req
            .transfers
            .iter()
            .enumerate()
            .map(|(index, t)| {
                Transfer::try_from(t)
                    .map_err(|e| ConvertError::Event { index, source: Box::new(e) })
            })
            .collect(),
    }
}

/// The accounts of a request, from `accounts` or from `packed`; refuses a request that
/// uses both. A request with neither is an empty batch.
pub fn request_accounts(req: &pb::CreateAccountsRequest) -> Result<Vec<Account>, ConvertError> {
    match (req.accounts.is_empty(), req.packed.is_empty()) {
        (false, false) => Err(ConvertError::BothForms {
            field: "accounts",
            count: req.accounts.len(),
            packed_len: req.packed.len(),
        }),
        (true, _) => decode_packed_accounts(&req.packed),
        (false, true) => req
            .accounts
            .iter()
            .enumerate()
            .map(|(index, a)| {
                Account::try_from(a).map_err(|e| ConvertError::Event { index, source: Box::new(e) })
            })
            .collect(),
    }
}

/// A request carrying `transfers` in the repeated field.
pub fn transfers_request(transfers: &[Transfer]) -> pb::CreateTransfersRequest {
    pb::CreateTransfersRequest {
        transfers: transfers.iter().map(pb::Transfer::from).collect(),
        packed: Default::default(),
    }
}

/// A request carrying `transfers` in `packed` (the fast path).
pub fn transfers_request_packed(transfers: &[Transfer]) -> pb::CreateTransfersRequest {
    pb::CreateTransfersRequest {
        transfers: Vec::new(),
        packed: encode_packed_transfers(transfers).into(),
    }
}

/// A request carrying `accounts` in the repeated field.
pub fn accounts_request(accounts: &[Account]) -> pb::CreateAccountsRequest {
    pb::CreateAccountsRequest {
        accounts: accounts.iter().map(pb::Account::from).collect(),
        packed: Default::default(),
    }
}

/// A request carrying `accounts` in `packed`.
pub fn accounts_request_packed(accounts: &[Account]) -> pb::CreateAccountsRequest {
    pb::CreateAccountsRequest {
        accounts: Vec::new(),
        packed: encode_packed_accounts(accounts).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERESTING: [u128; 7] =
        [0, 1, u64::MAX as u128, 1u128 << 64, (7u128 << 64) | 9, u128::MAX - 1, u128::MAX];

    fn sample_account(v: u128) -> Account {
        Account {
            id: v,
            debits_pending: v.wrapping_add(1),
            debits_posted: v ^ 0xff,
            credits_pending: v.rotate_left(64),
            credits_posted: v >> 3,
            user_data_128: !v,
            user_data_64: u64::MAX,
            user_data_32: 32,
            reserved: 7,
            ledger: u32::MAX,
            code: u16::MAX,
            flags: AccountFlags::from_bits_retain(0xffff),
            timestamp: u64::MAX - 5,
        }
    }

    fn sample_transfer(v: u128) -> Transfer {
        Transfer {
            id: v,
            debit_account_id: v.wrapping_add(1),
            credit_account_id: v ^ 0xff,
            amount: v.rotate_left(64),
            pending_id: v >> 3,
            user_data_128: !v,
            user_data_64: 64,
            user_data_32: u32::MAX,
            timeout: 7,
            ledger: 1,
            code: u16::MAX,
            flags: TransferFlags::LINKED | TransferFlags::from_bits_retain(0x8000),
            timestamp: 12345,
        }
    }

    #[test]
    fn u128_round_trips_including_extremes_and_hi_only() {
        for v in INTERESTING {
            assert_eq!(u128::from(pb::U128::from(v)), v);
            assert_eq!(u128_from_pb(u128_to_pb(v)), v);
        }
        assert_eq!(pb::U128::from(u128::MAX), pb::U128 { lo: u64::MAX, hi: u64::MAX });
        assert_eq!(pb::U128::from(1u128 << 64), pb::U128 { lo: 0, hi: 1 });
        assert_eq!(u128::from(pb::U128 { lo: 0, hi: 3 }), 3u128 << 64);
        assert_eq!(u128_from_pb(None), 0);
        assert_eq!(u128_to_pb(0), None, "zero is encoded as an absent field");
        assert_eq!(u128_from_pb(Some(pb::U128 { lo: 0, hi: 0 })), 0);
        assert_eq!(ids_from_pb(&ids_to_pb(&INTERESTING)), INTERESTING.to_vec());
    }

    #[test]
    fn records_round_trip_through_pb() {
        for v in INTERESTING {
            let a = sample_account(v);
            assert_eq!(Account::try_from(pb::Account::from(&a)), Ok(a));
            let t = sample_transfer(v);
            assert_eq!(Transfer::try_from(pb::Transfer::from(&t)), Ok(t));
            let b = AccountBalance {
                debits_pending: v,
                debits_posted: !v,
                credits_pending: v >> 1,
                credits_posted: v.rotate_left(64),
                timestamp: 99,
                reserved: [0; 56],
            };
            assert_eq!(AccountBalance::from(pb::AccountBalance::from(&b)), b);
        }
        assert_eq!(Account::try_from(pb::Account::default()), Ok(Account::default()));
        assert_eq!(Transfer::try_from(pb::Transfer::default()), Ok(Transfer::default()));
    }

    #[test]
    fn filters_round_trip_with_reserved_zero() {
        for v in INTERESTING {
            let f = AccountFilter {
                account_id: v,
                user_data_128: !v,
                user_data_64: 3,
                user_data_32: 4,
                code: u16::MAX,
                timestamp_min: 6,
                timestamp_max: u64::MAX,
                limit: 8,
                flags: AccountFilterFlags::from_bits_retain(0xffff_ffff),
                ..AccountFilter::default()
            };
            assert_eq!(AccountFilter::try_from(pb::AccountFilter::from(&f)), Ok(f));
            let q = QueryFilter {
                user_data_128: v,
                user_data_64: 2,
                user_data_32: 3,
                ledger: 4,
                code: 5,
                timestamp_min: 6,
                timestamp_max: 7,
                limit: 8,
                flags: QueryFilterFlags::REVERSED,
                ..QueryFilter::default()
            };
            assert_eq!(QueryFilter::try_from(pb::QueryFilter::from(&q)), Ok(q));
        }
        let decoded = AccountFilter::try_from(pb::AccountFilter::default()).unwrap();
        assert_eq!(decoded.reserved, [0; 58]);
        let decoded = QueryFilter::try_from(pb::QueryFilter::default()).unwrap();
        assert_eq!(decoded.reserved, [0; 70]);
    }

    #[test]
    fn wide_code_and_flags_are_refused_with_field_and_value() {
        let t = pb::Transfer { code: 65_536, ..Default::default() };
        let err = Transfer::try_from(&t).unwrap_err();
        assert_eq!(
            err,
            ConvertError::OutOfRange {
                record: "Transfer",
                field: "code",
                value: 65_536,
                max: 65_535
            }
        );
        assert_eq!(err.to_string(), "Transfer.code = 65536 is out of range (at most 65535)");

        let t = pb::Transfer { flags: u32::MAX, ..Default::default() };
        assert!(matches!(
            Transfer::try_from(&t),
            Err(ConvertError::OutOfRange { field: "flags", value: 4_294_967_295, .. })
        ));

        let a = pb::Account { code: 70_000, ..Default::default() };
        assert_eq!(
            Account::try_from(&a).unwrap_err().to_string(),
            "Account.code = 70000 is out of range (at most 65535)"
        );
        let a = pb::Account { flags: 1 << 16, ..Default::default() };
        assert_eq!(
            Account::try_from(&a).unwrap_err().to_string(),
            "Account.flags = 65536 is out of range (at most 65535)"
        );

        let f = pb::AccountFilter { code: 1 << 20, ..Default::default() };
        assert!(matches!(
            AccountFilter::try_from(&f),
            Err(ConvertError::OutOfRange { record: "AccountFilter", field: "code", .. })
        ));
        let q = pb::QueryFilter { code: 1 << 20, ..Default::default() };
        assert!(matches!(
            QueryFilter::try_from(&q),
            Err(ConvertError::OutOfRange { record: "QueryFilter", field: "code", .. })
        ));

        // The largest value that fits is accepted.
        let t = pb::Transfer { code: 65_535, flags: 65_535, ..Default::default() };
        assert_eq!(Transfer::try_from(&t).unwrap().code, u16::MAX);
    }

    #[test]
    fn results_round_trip_and_unknown_codes_are_refused() {
        let transfers = CreateTransferResult::ALL.to_vec();
        assert_eq!(transfer_results_from_pb(&transfer_results_to_pb(&transfers)), Ok(transfers));
        let accounts = CreateAccountResult::ALL.to_vec();
        assert_eq!(account_results_from_pb(&account_results_to_pb(&accounts)), Ok(accounts));

        let unknown = CreateTransferResult::ALL.len() as i32;
        assert_eq!(
            transfer_result_from_pb(unknown),
            Err(ConvertError::UnknownResultCode { kind: "CreateTransferResult", code: unknown })
        );
        assert!(transfer_result_from_pb(-1).is_err());
        assert!(transfer_results_from_pb(&[0, 22, 1000]).is_err());
        assert_eq!(
            account_result_from_pb(-3).unwrap_err().to_string(),
            "unknown CreateAccountResult code -3"
        );
        assert!(account_result_from_pb(CreateAccountResult::ALL.len() as i32).is_err());
    }

    /// The proto enums must never drift from the ledger's: same codes, same names.
    #[test]
    fn proto_result_enums_match_the_ledger() {
        for r in CreateTransferResult::ALL {
            let p = pb::CreateTransferResult::try_from(r.code() as i32)
                .unwrap_or_else(|_| panic!("{} ({}) missing from settle.proto", r, r.code()));
            let name = p.as_str_name().strip_prefix("CREATE_TRANSFER_RESULT_").unwrap();
            assert_eq!(name.to_lowercase(), r.name(), "code {}", r.code());
            assert_eq!(p as i32, r.code() as i32);
        }
        for r in CreateAccountResult::ALL {
            let p = pb::CreateAccountResult::try_from(r.code() as i32)
                .unwrap_or_else(|_| panic!("{} ({}) missing from settle.proto", r, r.code()));
            let name = p.as_str_name().strip_prefix("CREATE_ACCOUNT_RESULT_").unwrap();
            assert_eq!(name.to_lowercase(), r.name(), "code {}", r.code());
            assert_eq!(p as i32, r.code() as i32);
        }
        // And the proto has nothing the ledger lacks.
        let proto_transfer_codes =
            (-1000..1000).filter(|&c| pb::CreateTransferResult::try_from(c).is_ok()).count();
        assert_eq!(proto_transfer_codes, CreateTransferResult::ALL.len());
        let proto_account_codes =
            (-1000..1000).filter(|&c| pb::CreateAccountResult::try_from(c).is_ok()).count();
        assert_eq!(proto_account_codes, CreateAccountResult::ALL.len());
    }

    #[test]
    fn packed_batches_round_trip_and_bad_lengths_are_refused() {
        let transfers: Vec<Transfer> = INTERESTING.iter().map(|&v| sample_transfer(v)).collect();
        let bytes = encode_packed_transfers(&transfers);
        assert_eq!(bytes.len(), transfers.len() * RECORD_SIZE);
        assert_eq!(decode_packed_transfers(&bytes), Ok(transfers));

        let accounts: Vec<Account> =
            INTERESTING.iter().map(|&v| Account { reserved: 77, ..sample_account(v) }).collect();
        let bytes = encode_packed_accounts(&accounts);
        assert_eq!(decode_packed_accounts(&bytes), Ok(accounts), "packed keeps reserved");

        assert_eq!(decode_packed_transfers(&[]), Ok(vec![]));
        let err = decode_packed_transfers(&[0; 129]).unwrap_err();
        assert_eq!(err, ConvertError::PackedLength { record: "Transfer", len: 129 });
        assert_eq!(
            err.to_string(),
            "packed Transfers: length 129 bytes is not a multiple of the 128-byte record size"
        );
        assert_eq!(
            decode_packed_accounts(&[0; 127]),
            Err(ConvertError::PackedLength { record: "Account", len: 127 })
        );
    }

    #[test]
    fn requests_take_one_form_and_refuse_both() {
        let transfers: Vec<Transfer> = INTERESTING.iter().map(|&v| sample_transfer(v)).collect();
        assert_eq!(request_transfers(&transfers_request(&transfers)), Ok(transfers.clone()));
        assert_eq!(request_transfers(&transfers_request_packed(&transfers)), Ok(transfers.clone()));
        assert_eq!(request_transfers(&pb::CreateTransfersRequest::default()), Ok(vec![]));

        let mut both = transfers_request(&transfers);
        both.packed = encode_packed_transfers(&transfers[..1]).into();
        assert_eq!(
            request_transfers(&both),
            Err(ConvertError::BothForms { field: "transfers", count: 7, packed_len: 128 })
        );

        let mut bad = transfers_request(&transfers);
        bad.transfers[3].code = 1 << 16;
        let err = request_transfers(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event 3: Transfer.code = 65536 is out of range (at most 65535)"
        );

        let accounts: Vec<Account> = INTERESTING.iter().map(|&v| sample_account(v)).collect();
        assert_eq!(request_accounts(&accounts_request(&accounts)), Ok(accounts.clone()));
        assert_eq!(request_accounts(&accounts_request_packed(&accounts)), Ok(accounts.clone()));
        let mut both = accounts_request(&accounts);
        both.packed = vec![0; 128].into();
        assert!(matches!(
            request_accounts(&both),
            Err(ConvertError::BothForms { field: "accounts", .. })
        ));
        let bad = pb::CreateAccountsRequest { accounts: vec![], packed: vec![0; 200].into() };
        assert_eq!(
            request_accounts(&bad),
            Err(ConvertError::PackedLength { record: "Account", len: 200 })
        );
    }
}
