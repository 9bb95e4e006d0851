//! Placement: which shard holds an account.
//!
//! The rule: `shard_of(id) = mix(id) mod S`, where `mix` folds the 128-bit id to 64 bits
//! and scrambles it (SplitMix64's finalizer), so that sequential ids spread evenly. Every
//! node and client computes it from the shard count alone; the shard map (shard id →
//! replicas) says where each shard lives.

use crate::txn::ShardId;

/// The shard of account `id` among `shards` shards (numbered from 0).
pub fn shard_of(id: u128, shards: u32) -> ShardId {
    assert!(shards > 0, "at least one shard");
    let mut x = (id as u64) ^ ((id >> 64) as u64);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % u64::from(shards)) as ShardId
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn sequential_ids_spread_evenly() {
        let mut counts = [0u32; 4];
        for id in 1..=40_000u128 {
            counts[shard_of(id, 4) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..=11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn one_shard_holds_everything() {
        assert!((1..1000u128).all(|id| shard_of(id, 1) == 0));
    }
}
