//! Value parsers for clap and the names of flags on the command line.
//!
//! Numbers (ids, amounts, ledgers, codes, user data) are accepted in decimal or as
//! `0x`-prefixed hex, with optional `_` separators. A parse error becomes a clap usage
//! error (exit code 2) that names the bad value.

use clap::ValueEnum;
use settle_ledger::{AccountFlags, TransferFlags};

/// Parses a `u128` in decimal or `0x` hex.
pub fn u128_value(text: &str) -> Result<u128, String> {
    let cleaned: String = text.trim().chars().filter(|&c| c != '_').collect();
    let parsed = match cleaned.strip_prefix("0x").or_else(|| cleaned.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => u128::from_str_radix(hex, 16),
        Some(_) => return Err("expected hex digits after 0x".to_string()),
        None => cleaned.parse::<u128>(),
    };
    parsed.map_err(|error| {
        use std::num::IntErrorKind;
        match error.kind() {
            IntErrorKind::PosOverflow => "too large: the maximum is 2^128 - 1".to_string(),
            IntErrorKind::Empty => "expected a number".to_string(),
            _ => "expected a non-negative integer in decimal or 0x-prefixed hex".to_string(),
        }
    })
}

/// Parses a `u64`, `u32` or `u16` in decimal or `0x` hex.
pub fn uint_value<T: TryFrom<u128>>(text: &str) -> Result<T, String> {
    let value = u128_value(text)?;
    T::try_from(value).map_err(|_| {
        let bits = std::mem::size_of::<T>() * 8;
        format!("too large: the maximum is 2^{bits} - 1")
    })
}

pub fn u64_value(text: &str) -> Result<u64, String> {
    uint_value(text)
}

pub fn u32_value(text: &str) -> Result<u32, String> {
    uint_value(text)
}

pub fn u16_value(text: &str) -> Result<u16, String> {
    uint_value(text)
}

/// An account flag as written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccountFlag {
    Linked,
    DebitsMustNotExceedCredits,
    CreditsMustNotExceedDebits,
    History,
    Closed,
}

impl AccountFlag {
    pub fn bits(self) -> AccountFlags {
        match self {
            AccountFlag::Linked => AccountFlags::LINKED,
            AccountFlag::DebitsMustNotExceedCredits => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            AccountFlag::CreditsMustNotExceedDebits => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            AccountFlag::History => AccountFlags::HISTORY,
            AccountFlag::Closed => AccountFlags::CLOSED,
        }
    }

    pub fn union(flags: &[AccountFlag]) -> AccountFlags {
        flags.iter().fold(AccountFlags::empty(), |all, flag| all | flag.bits())
    }
}

/// A transfer flag as written on the command line (`pending` is `--pending`, and
/// `post` and `void` have their own subcommands, so they are not listed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransferFlag {
    Linked,
    BalancingDebit,
    BalancingCredit,
    ClosingDebit,
    ClosingCredit,
}

impl TransferFlag {
    pub fn bits(self) -> TransferFlags {
        match self {
            TransferFlag::Linked => TransferFlags::LINKED,
            TransferFlag::BalancingDebit => TransferFlags::BALANCING_DEBIT,
            TransferFlag::BalancingCredit => TransferFlags::BALANCING_CREDIT,
            TransferFlag::ClosingDebit => TransferFlags::CLOSING_DEBIT,
            TransferFlag::ClosingCredit => TransferFlags::CLOSING_CREDIT,
        }
    }

    pub fn union(flags: &[TransferFlag]) -> TransferFlags {
        flags.iter().fold(TransferFlags::empty(), |all, flag| all | flag.bits())
    }
}

/// The kebab-case names of the set bits, for output (unknown bits as `0x..`).
pub fn account_flag_names(flags: AccountFlags) -> Vec<String> {
    flag_names(
        flags.bits().into(),
        &[
            (AccountFlags::LINKED.bits().into(), "linked"),
            (
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS.bits().into(),
                "debits-must-not-exceed-credits",
            ),
            (
                AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS.bits().into(),
                "credits-must-not-exceed-debits",
            ),
            (AccountFlags::HISTORY.bits().into(), "history"),
            (AccountFlags::IMPORTED.bits().into(), "imported"),
            (AccountFlags::CLOSED.bits().into(), "closed"),
        ],
    )
}

/// The kebab-case names of the set bits, for output (unknown bits as `0x..`).
pub fn transfer_flag_names(flags: TransferFlags) -> Vec<String> {
    flag_names(
        flags.bits().into(),
        &[
            (TransferFlags::LINKED.bits().into(), "linked"),
            (TransferFlags::PENDING.bits().into(), "pending"),
            (TransferFlags::POST_PENDING_TRANSFER.bits().into(), "post-pending-transfer"),
            (TransferFlags::VOID_PENDING_TRANSFER.bits().into(), "void-pending-transfer"),
            (TransferFlags::BALANCING_DEBIT.bits().into(), "balancing-debit"),
            (TransferFlags::BALANCING_CREDIT.bits().into(), "balancing-credit"),
            (TransferFlags::CLOSING_DEBIT.bits().into(), "closing-debit"),
            (TransferFlags::CLOSING_CREDIT.bits().into(), "closing-credit"),
            (TransferFlags::IMPORTED.bits().into(), "imported"),
        ],
    )
}

fn flag_names(bits: u32, known: &[(u32, &str)]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = bits;
    for &(bit, name) in known {
        if bits & bit != 0 {
            names.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_in_decimal_and_hex() {
        assert_eq!(u128_value("42"), Ok(42));
        assert_eq!(u128_value("0x2a"), Ok(42));
        assert_eq!(u128_value("0X2A"), Ok(42));
        assert_eq!(u128_value("1_000"), Ok(1000));
        assert_eq!(u128_value(&u128::MAX.to_string()), Ok(u128::MAX));
        assert_eq!(u128_value("0xffffffffffffffffffffffffffffffff"), Ok(u128::MAX));
        assert!(u128_value("abc").is_err());
        assert!(u128_value("-1").is_err());
        assert!(u128_value("0x").is_err());
        assert!(u128_value("").is_err());
        assert!(u128_value("340282366920938463463374607431768211456")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(u16_value("65535"), Ok(65535));
        assert!(u16_value("65536").unwrap_err().contains("2^16"));
        assert_eq!(u32_value("0xffffffff"), Ok(u32::MAX));
    }

    #[test]
    fn flag_names_round_trip() {
        let flags = AccountFlag::union(&[AccountFlag::History, AccountFlag::Linked]);
        assert_eq!(account_flag_names(flags), ["linked", "history"]);
        let flags = TransferFlags::PENDING | TransferFlags::from_bits_retain(1 << 12);
        assert_eq!(transfer_flag_names(flags), ["pending", "0x1000"]);
    }
}
