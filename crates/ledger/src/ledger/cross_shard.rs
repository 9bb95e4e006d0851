//! One-sided reserve / post / release, for transfers whose accounts live on different
//! shards. Filled in below.

/// Which account of a transfer a shard holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Debit,
    Credit,
}

/// A side's successful prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidePrepared {
    pub amount: u128,
}

/// How a prepared side ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideResolution {
    Committed,
    Aborted,
}
