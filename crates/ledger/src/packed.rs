//! Packed records: the 128-byte records with their zero bytes left out, for everything
//! settle writes to disk or sends between replicas (log records, Raft entries,
//! snapshots).
//!
//! Why: most fields of a real record are small or zero (ids that count up, amounts far
//! below 2^128, unused user data), and the bytes a node writes per transfer bound its
//! throughput: every byte of the log is hashed, copied into the page cache, fsynced and
//! (in a cluster) sent to every follower. The bench's transfers pack into about a sixth
//! of their size; a record of random 128-bit ids and full user data, about its size.
//!
//! Format of one record: a u64 (little-endian) of sixteen 4-bit lengths, one per 8-byte
//! word of the record in order (lowest nibble first), then each word's low `length`
//! bytes (little-endian), where `length` is the smallest that holds the word (0 for a
//! zero word). So a record takes 8 to 136 bytes. Decoding refuses a length above 8, a
//! length that is not the smallest (a zero top byte), and a record cut short: there is
//! exactly one encoding of each record, and no bytes decode to two different ones.
//!
//! Pure: no IO.

use crate::types::RECORD_SIZE;

const WORDS: usize = RECORD_SIZE / 8;
/// The lengths word.
const LENGTHS_SIZE: usize = 8;
/// The largest a packed record can be (every word full).
pub const PACKED_SIZE_MAX: usize = LENGTHS_SIZE + RECORD_SIZE;

/// Why bytes are not packed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PackedError {
    #[error("a packed record is cut short")]
    Truncated,
    #[error("a packed record has a word length of {0} bytes (at most 8)")]
    BadLength(u8),
    #[error("a packed record is not in its one canonical form (a word has a zero top byte)")]
    NotCanonical,
    #[error("packed records hold {found} records where {expected} were expected")]
    WrongCount { expected: usize, found: usize },
}

/// Appends `record`, packed, to `out`.
pub fn pack(record: &[u8; RECORD_SIZE], out: &mut Vec<u8>) {
    // Each word is stored whole into a scratch buffer and the cursor moves by its
    // length: one unconditional 8-byte store per word, one copy out per record.
    let mut packed = [0u8; PACKED_SIZE_MAX + 8];
    let mut lengths = 0u64;
    let mut at = LENGTHS_SIZE;
    for (i, word) in record.chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let length = 8 - word.leading_zeros() as usize / 8;
        lengths |= (length as u64) << (4 * i);
        packed[at..at + 8].copy_from_slice(&word.to_le_bytes());
        at += length;
    }
    packed[..LENGTHS_SIZE].copy_from_slice(&lengths.to_le_bytes());
    out.extend_from_slice(&packed[..at]);
}

/// Appends every record of `records` (whole 128-byte records), packed, to `out`.
pub fn pack_all(records: &[u8], out: &mut Vec<u8>) {
    assert!(records.len().is_multiple_of(RECORD_SIZE));
    for record in records.chunks_exact(RECORD_SIZE) {
        pack(record.try_into().expect("128 bytes"), out);
    }
}

/// The first packed record of `bytes`, and how many bytes it took.
pub fn unpack(bytes: &[u8]) -> Result<([u8; RECORD_SIZE], usize), PackedError> {
    let lengths = u64::from_le_bytes(
        bytes.get(..LENGTHS_SIZE).ok_or(PackedError::Truncated)?.try_into().expect("8 bytes"),
    );
    let mut record = [0u8; RECORD_SIZE];
    let mut at = LENGTHS_SIZE;
    for i in 0..WORDS {
        let length = ((lengths >> (4 * i)) & 0xF) as usize;
        if length > 8 {
            return Err(PackedError::BadLength(length as u8));
        }
        let word = bytes.get(at..at + length).ok_or(PackedError::Truncated)?;
        if word.last() == Some(&0) {
            return Err(PackedError::NotCanonical);
        }
        record[i * 8..i * 8 + length].copy_from_slice(word);
        at += length;
    }
    Ok((record, at))
}

/// How many bytes a packed record takes, from its lengths word (its first 8 bytes)
/// alone: for readers that must know how much to read before decoding. Does not
/// validate: [`unpack`] does.
pub fn packed_len(lengths_word: &[u8; LENGTHS_SIZE]) -> usize {
    let lengths = u64::from_le_bytes(*lengths_word);
    LENGTHS_SIZE + (0..WORDS).map(|i| ((lengths >> (4 * i)) & 0xF) as usize).sum::<usize>()
}

/// Decodes exactly `count` packed records filling all of `bytes`, each through `visit`.
pub fn unpack_all(
    bytes: &[u8],
    count: usize,
    mut visit: impl FnMut(&[u8; RECORD_SIZE]),
) -> Result<(), PackedError> {
    let mut at = 0;
    for found in 0..count {
        if at == bytes.len() {
            return Err(PackedError::WrongCount { expected: count, found });
        }
        let (record, used) = unpack(&bytes[at..])?;
        visit(&record);
        at += used;
    }
    if at != bytes.len() {
        return Err(PackedError::WrongCount { expected: count, found: count + 1 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(record: [u8; RECORD_SIZE]) -> usize {
        let mut out = Vec::new();
        pack(&record, &mut out);
        assert_eq!(unpack(&out), Ok((record, out.len())));
        assert_eq!(packed_len(out[..8].try_into().unwrap()), out.len());
        out.len()
    }

    #[test]
    fn zero_words_take_nothing_and_full_words_take_eight_bytes() {
        assert_eq!(round_trip([0; RECORD_SIZE]), 8);
        assert_eq!(round_trip([0xFF; RECORD_SIZE]), PACKED_SIZE_MAX);
        let mut record = [0u8; RECORD_SIZE];
        record[0] = 7; // a small id: one byte
        record[23] = 1; // a word whose top byte only is set: eight bytes
        assert_eq!(round_trip(record), 8 + 1 + 8);
    }

    #[test]
    fn every_damage_to_a_packed_record_is_refused_or_decodes_to_other_bytes() {
        let mut record = [0u8; RECORD_SIZE];
        record[0..3].copy_from_slice(&[1, 2, 3]);
        record[64] = 9;
        let mut packed = Vec::new();
        pack(&record, &mut packed);
        for len in 0..packed.len() {
            assert_eq!(unpack(&packed[..len]), Err(PackedError::Truncated), "cut to {len}");
        }
        // A length nibble above 8, and a length that is not the smallest.
        let mut bad = packed.clone();
        bad[0] = (bad[0] & 0xF0) | 9;
        assert_eq!(unpack(&bad), Err(PackedError::BadLength(9)));
        let mut padded = Vec::new();
        padded.extend_from_slice(&(4u64 | 1 << 32).to_le_bytes());
        padded.extend_from_slice(&[1, 2, 3, 0, 9]);
        assert_eq!(unpack(&padded), Err(PackedError::NotCanonical));
    }

    #[test]
    fn unpack_all_wants_exactly_the_count() {
        let mut packed = Vec::new();
        let records: Vec<u8> = (0..3 * RECORD_SIZE).map(|i| (i % 7) as u8).collect();
        pack_all(&records, &mut packed);
        let mut back = Vec::new();
        unpack_all(&packed, 3, |r| back.extend_from_slice(r)).unwrap();
        assert_eq!(back, records);
        assert_eq!(
            unpack_all(&packed, 4, |_| {}),
            Err(PackedError::WrongCount { expected: 4, found: 3 })
        );
        assert!(matches!(unpack_all(&packed, 2, |_| {}), Err(PackedError::WrongCount { .. })));
    }

    proptest! {
        #[test]
        fn any_record_round_trips(words in proptest::collection::vec(
            prop_oneof![Just(0u64), 0u64..256, 0u64..1 << 40, any::<u64>()], WORDS)) {
            let mut record = [0u8; RECORD_SIZE];
            for (i, word) in words.iter().enumerate() {
                record[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
            }
            round_trip(record);
        }
    }
}
