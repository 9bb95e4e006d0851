//! Compact records: the 128-byte records with their zero bytes left out, for everything
//! settle writes to disk or sends between replicas (log records, Raft entries,
//! snapshots).
//!
//! Why: most fields of a real record are small or zero (ids that count up, amounts far
//! below 2^128, unused user data), and the bytes a node writes per transfer bound its
//! throughput: every byte of the log is hashed, copied into the page cache, fsynced and
//! (in a cluster) sent to every follower. A bench transfer takes about a sixth
//! of its size; a record of random 128-bit ids and full user data, about all of it.
//!
//! (Not the gRPC API's `packed` fields: those carry whole 128-byte records.)
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
/// The largest a compact record can be (every word full).
pub const COMPACT_SIZE_MAX: usize = LENGTHS_SIZE + RECORD_SIZE;

/// Why bytes are not compact records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("a compact record is cut short")]
    Truncated,
    #[error("a compact record has a word length of {0} bytes (at most 8)")]
    BadLength(u8),
    #[error("a compact record is not in its one canonical form (a word has a zero top byte)")]
    NotCanonical,
    #[error("compact records hold {found} records where {expected} were expected")]
    WrongCount { expected: usize, found: usize },
}

/// Appends `record`, compact, to `out`.
pub fn encode(record: &[u8; RECORD_SIZE], out: &mut Vec<u8>) {
    // Each word is stored whole into a scratch buffer and the cursor moves by its
    // length: one unconditional 8-byte store per word, one copy out per record.
    let mut compact = [0u8; COMPACT_SIZE_MAX + 8];
    let mut lengths = 0u64;
    let mut at = LENGTHS_SIZE;
    for (i, word) in record.chunks_exact(8).enumerate() {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let length = 8 - word.leading_zeros() as usize / 8;
        lengths |= (length as u64) << (4 * i);
        compact[at..at + 8].copy_from_slice(&word.to_le_bytes());
        at += length;
    }
    compact[..LENGTHS_SIZE].copy_from_slice(&lengths.to_le_bytes());
    out.extend_from_slice(&compact[..at]);
}

/// Appends every record of `records` (whole 128-byte records), compact, to `out`.
pub fn encode_all(records: &[u8], out: &mut Vec<u8>) {
    assert!(records.len().is_multiple_of(RECORD_SIZE));
    for record in records.chunks_exact(RECORD_SIZE) {
        encode(record.try_into().expect("128 bytes"), out);
    }
}

/// The first compact record of `bytes`, and how many bytes it took.
pub fn decode(bytes: &[u8]) -> Result<([u8; RECORD_SIZE], usize), CompactError> {
    let lengths = u64::from_le_bytes(
        bytes.get(..LENGTHS_SIZE).ok_or(CompactError::Truncated)?.try_into().expect("8 bytes"),
    );
    let mut record = [0u8; RECORD_SIZE];
    let mut at = LENGTHS_SIZE;
    for i in 0..WORDS {
        let length = ((lengths >> (4 * i)) & 0xF) as usize;
        if length > 8 {
            return Err(CompactError::BadLength(length as u8));
        }
        let word = bytes.get(at..at + length).ok_or(CompactError::Truncated)?;
        if word.last() == Some(&0) {
            return Err(CompactError::NotCanonical);
        }
        record[i * 8..i * 8 + length].copy_from_slice(word);
        at += length;
    }
    Ok((record, at))
}

/// How many bytes a compact record takes, from its lengths word (its first 8 bytes)
/// alone: for readers that must know how much to read before decoding. Does not
/// validate: [`decode`] does.
pub fn encoded_len(lengths_word: &[u8; LENGTHS_SIZE]) -> usize {
    let lengths = u64::from_le_bytes(*lengths_word);
    LENGTHS_SIZE + (0..WORDS).map(|i| ((lengths >> (4 * i)) & 0xF) as usize).sum::<usize>()
}

/// Decodes exactly `count` compact records filling all of `bytes`, each through `visit`.
pub fn decode_all(
    bytes: &[u8],
    count: usize,
    mut visit: impl FnMut(&[u8; RECORD_SIZE]),
) -> Result<(), CompactError> {
    let mut at = 0;
    for found in 0..count {
        if at == bytes.len() {
            return Err(CompactError::WrongCount { expected: count, found });
        }
        let (record, used) = decode(&bytes[at..])?;
        visit(&record);
        at += used;
    }
    if at != bytes.len() {
        return Err(CompactError::WrongCount { expected: count, found: count + 1 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(record: [u8; RECORD_SIZE]) -> usize {
        let mut out = Vec::new();
        encode(&record, &mut out);
        assert_eq!(decode(&out), Ok((record, out.len())));
        assert_eq!(encoded_len(out[..8].try_into().unwrap()), out.len());
        out.len()
    }

    #[test]
    fn zero_words_take_nothing_and_full_words_take_eight_bytes() {
        assert_eq!(round_trip([0; RECORD_SIZE]), 8);
        assert_eq!(round_trip([0xFF; RECORD_SIZE]), COMPACT_SIZE_MAX);
        let mut record = [0u8; RECORD_SIZE];
        record[0] = 7; // a small id: one byte
        record[23] = 1; // a word whose top byte only is set: eight bytes
        assert_eq!(round_trip(record), 8 + 1 + 8);
    }

    #[test]
    fn every_damage_to_a_compact_record_is_refused_or_decodes_to_other_bytes() {
        let mut record = [0u8; RECORD_SIZE];
        record[0..3].copy_from_slice(&[1, 2, 3]);
        record[64] = 9;
        let mut bytes = Vec::new();
        encode(&record, &mut bytes);
        for len in 0..bytes.len() {
            assert_eq!(decode(&bytes[..len]), Err(CompactError::Truncated), "cut to {len}");
        }
        // A length nibble above 8, and a length that is not the smallest.
        let mut bad = bytes.clone();
        bad[0] = (bad[0] & 0xF0) | 9;
        assert_eq!(decode(&bad), Err(CompactError::BadLength(9)));
        let mut padded = Vec::new();
        padded.extend_from_slice(&(4u64 | 1 << 32).to_le_bytes());
        padded.extend_from_slice(&[1, 2, 3, 0, 9]);
        assert_eq!(decode(&padded), Err(CompactError::NotCanonical));
    }

    #[test]
    fn decode_all_wants_exactly_the_count() {
        let mut bytes = Vec::new();
        let records: Vec<u8> = (0..3 * RECORD_SIZE).map(|i| (i % 7) as u8).collect();
        encode_all(&records, &mut bytes);
        let mut back = Vec::new();
        decode_all(&bytes, 3, |r| back.extend_from_slice(r)).unwrap();
        assert_eq!(back, records);
        assert_eq!(
            decode_all(&bytes, 4, |_| {}),
            Err(CompactError::WrongCount { expected: 4, found: 3 })
        );
        assert!(matches!(decode_all(&bytes, 2, |_| {}), Err(CompactError::WrongCount { .. })));
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
