//! [`Segmented`]: a growable array of fixed-size records for the tables that grow with
//! every transfer (the records, the id index, the per-account chains, the checksums).
//!
//! Why not a `Vec`: a `Vec` of hundreds of megabytes has two costs on the hot path.
//! Growing it copies everything it holds (so the node had to size it up front), and its
//! fresh memory is faulted in, page by page, by the thread that first writes it: on the
//! ledger bench page faults were a third of the time spent executing transfers (5.1 M/s
//! with them, 8.0 M/s with the memory faulted in beforehand), and on the node, where a
//! fault on this VM can take milliseconds, they made the batch latency tail.
//!
//! Here the records live in anonymous memory maps: segments that double from 64 KiB up
//! to [`SEGMENT_BYTES_MAX`], then stay at that size. Growth adds a segment and never
//! moves a record. Each large segment is prepared ahead, on a helper thread: while the
//! table fills one large segment, the helper maps the next and faults every page of it
//! in, so the owner's thread finds it ready. This costs at most one segment of memory
//! ahead per table.
//!
//! Segments are not advised for transparent huge pages. With the advice, the kernel
//! (THP `defrag=madvise`, the common default) compacts memory synchronously to find
//! each 2 MiB page: faulting in an 8 MiB segment took the helper 26-28 ms instead of
//! 5-7 ms, CPU taken from the node's other threads on a two-core machine, and the node
//! bench's batch latency p99 was 11-12 ms instead of 8-9; the ledger bench ran at the
//! same rate either way (6.2-6.3 against 6.1-6.5 M/s). The `settle` binary turns
//! transparent huge pages off for its whole process (`main.rs`).
//!
//! Records are stored in their little-endian encoding ([`Fixed`]), which keeps this
//! module free of `unsafe`: reading one decodes it, which for these plain fields
//! compiles to loads.

use std::marker::PhantomData;

use memmap2::MmapMut;

use crate::types::{Transfer, RECORD_SIZE};

/// A record of a fixed encoded size.
pub(super) trait Fixed: Copy {
    /// Encoded bytes per record; a power of two (so segments hold a power of two).
    const SIZE: usize;
    fn write(&self, out: &mut [u8]);
    fn read(bytes: &[u8]) -> Self;
}

/// Bytes of the first segment; the second is as large, and each later one twice the
/// one before, up to [`SEGMENT_BYTES_MAX`]. Small, because tests and the simulator
/// create many small tables.
const FIRST_SEGMENT_BYTES: usize = 64 << 10;
/// The size of every segment from the one that reaches it on: the memory prepared
/// ahead of a table, and the granularity in which it grows. Small, so that the
/// helper's work comes in small, frequent pieces: with 8 MiB segments, the three
/// tables of a node crossed a segment boundary together every 2^20 transfers and the
/// helpers took the second core for 15-20 ms at once (the node bench's slowest batches
/// came every 128 batches, p99 8.9-10.3 ms); with 2 MiB, p99 6.5-7.7 ms.
const SEGMENT_BYTES_MAX: usize = 2 << 20;
/// Segments at least this large are prepared ahead.
const PREPARED_BYTES_MIN: usize = 2 << 20;
/// 2^40 bytes of records at most: a limit far above any table, that bounds the number
/// of segments.
const SEGMENTS_MAX: usize = (1 << 40) / SEGMENT_BYTES_MAX;
/// The page size the helper touches at (the smallest the kernel maps).
const PAGE_BYTES: usize = 4096;

pub(super) struct Segmented<T: Fixed> {
    segments: Vec<MmapMut>,
    len: usize,
    /// The next segment, being prepared on a helper thread (large segments only).
    next: Option<std::thread::JoinHandle<MmapMut>>,
    _records: PhantomData<T>,
}

impl<T: Fixed> Default for Segmented<T> {
    fn default() -> Self {
        assert!(T::SIZE.is_power_of_two() && T::SIZE <= FIRST_SEGMENT_BYTES);
        Segmented { segments: Vec::new(), len: 0, next: None, _records: PhantomData }
    }
}

impl<T: Fixed> Segmented<T> {
    /// Records in the first segment, and in the largest (powers of two).
    const FIRST: usize = FIRST_SEGMENT_BYTES / T::SIZE;
    const LARGEST: usize = SEGMENT_BYTES_MAX / T::SIZE;
    /// The first segment of the largest size: its records start at `LARGEST`.
    const FIRST_LARGEST: usize = (Self::LARGEST / Self::FIRST).trailing_zeros() as usize + 1;

    pub fn len(&self) -> usize {
        self.len
    }

    /// The segment holding record `index`, and the record's offset in it. Segment 0
    /// holds records `0..F`, segment k ≥ 1 holds `F·2^(k-1)..F·2^k` until that reaches
    /// the largest size L (which starts at record L), then each holds the next L.
    fn locate(index: usize) -> (usize, usize) {
        if index >= Self::LARGEST {
            let beyond = index - Self::LARGEST;
            return (Self::FIRST_LARGEST + beyond / Self::LARGEST, beyond % Self::LARGEST);
        }
        let quotient = index / Self::FIRST;
        let segment = (usize::BITS - quotient.leading_zeros()) as usize;
        let start = if segment == 0 { 0 } else { Self::FIRST << (segment - 1) };
        (segment, index - start)
    }

    /// The size of segment `segment`, in bytes.
    fn segment_bytes(segment: usize) -> usize {
        (FIRST_SEGMENT_BYTES << segment.saturating_sub(1).min(Self::FIRST_LARGEST - 1))
            .min(SEGMENT_BYTES_MAX)
    }

    fn slot(&self, index: usize) -> &[u8] {
        assert!(index < self.len, "index {index} of {}", self.len);
        let (segment, offset) = Self::locate(index);
        &self.segments[segment][offset * T::SIZE..(offset + 1) * T::SIZE]
    }

    pub fn get(&self, index: usize) -> T {
        T::read(self.slot(index))
    }

    pub fn last(&self) -> Option<T> {
        self.len.checked_sub(1).map(|index| self.get(index))
    }

    pub fn set(&mut self, index: usize, record: T) {
        assert!(index < self.len, "index {index} of {}", self.len);
        let (segment, offset) = Self::locate(index);
        record.write(&mut self.segments[segment][offset * T::SIZE..(offset + 1) * T::SIZE]);
    }

    pub fn push(&mut self, record: T) {
        let (segment, _) = Self::locate(self.len);
        if segment == self.segments.len() {
            self.grow();
        }
        self.len += 1;
        self.set(self.len - 1, record);
    }

    pub fn pop(&mut self) -> Option<T> {
        let record = self.last()?;
        // The segment stays mapped: the next push reuses it.
        self.len -= 1;
        Some(record)
    }

    /// The records, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = T> + '_ {
        (0..self.len).map(|index| self.get(index))
    }

    /// The number of leading records for which `before` holds (they must come first),
    /// as `slice::partition_point`. The search starts from the end, doubling its step
    /// back, then bisects what it bracketed: a point near the end (ids of recent
    /// transfers, what the ledger mostly asks about) costs the log of its distance from
    /// the end and reads only recent, cached records, where bisecting millions from the
    /// middle missed the cache at each of its first steps.
    pub fn partition_point(&self, before: impl Fn(T) -> bool) -> usize {
        // Every record at or after `high` is not `before`; every one before `low` is.
        let (mut low, mut high) = (0, self.len);
        let mut step = 1;
        while high > 0 {
            let probe = high.saturating_sub(step);
            if before(self.get(probe)) {
                low = probe + 1;
                break;
            }
            high = probe;
            step *= 2;
        }
        while low < high {
            let middle = low + (high - low) / 2;
            if before(self.get(middle)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    fn grow(&mut self) {
        let segment = self.segments.len();
        assert!(segment < SEGMENTS_MAX, "a table of more than 2^40 bytes");
        let bytes = Self::segment_bytes(segment);
        let prepared = self.next.take().and_then(|helper| helper.join().ok());
        let map = match prepared {
            Some(map) => map,
            None => map_segment(bytes),
        };
        assert_eq!(map.len(), bytes);
        self.segments.push(map);
        let next_bytes = Self::segment_bytes(segment + 1);
        if next_bytes >= PREPARED_BYTES_MIN {
            // If the thread cannot be started, the segment is mapped when needed.
            self.next = std::thread::Builder::new()
                .name("settle-table-prepare".into())
                .spawn(move || prepare_segment(next_bytes))
                .ok();
        }
    }
}

/// A fresh segment of `bytes`.
fn map_segment(bytes: usize) -> MmapMut {
    MmapMut::map_anon(bytes)
        .unwrap_or_else(|error| panic!("cannot map {bytes} bytes of memory for a table: {error}"))
}

/// A fresh segment with every page faulted in (by writing the zero it already holds),
/// so that its owner's first writes do not fault.
fn prepare_segment(bytes: usize) -> MmapMut {
    let mut map = map_segment(bytes);
    for offset in (0..bytes).step_by(PAGE_BYTES) {
        map[offset] = 0;
    }
    map
}

impl<T: Fixed> Clone for Segmented<T> {
    /// A copy of the records held (segments as large as the original's).
    fn clone(&self) -> Self {
        let mut copy = Segmented::default();
        let mut left = self.len * T::SIZE;
        for segment in &self.segments {
            if left == 0 {
                break;
            }
            let mut map = map_segment(segment.len());
            let used = left.min(segment.len());
            map[..used].copy_from_slice(&segment[..used]);
            copy.segments.push(map);
            left -= used;
        }
        copy.len = self.len;
        copy
    }
}

impl Fixed for u32 {
    const SIZE: usize = 4;
    fn write(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
}

impl Fixed for u128 {
    const SIZE: usize = 16;
    fn write(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        u128::from_le_bytes(bytes.try_into().expect("16 bytes"))
    }
}

impl Fixed for [u32; 2] {
    const SIZE: usize = 8;
    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self[0].to_le_bytes());
        out[4..].copy_from_slice(&self[1].to_le_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        [u32::read(&bytes[..4]), u32::read(&bytes[4..])]
    }
}

impl Fixed for Transfer {
    const SIZE: usize = RECORD_SIZE;
    fn write(&self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_bytes());
    }
    fn read(bytes: &[u8]) -> Self {
        Transfer::from_bytes(bytes.try_into().expect("128 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_walks_doubling_then_equal_segments_without_gaps() {
        type S = Segmented<u128>;
        let first = S::FIRST;
        assert_eq!(S::locate(0), (0, 0));
        assert_eq!(S::locate(first - 1), (0, first - 1));
        assert_eq!(S::locate(first), (1, 0));
        assert_eq!(S::locate(2 * first - 1), (1, first - 1));
        assert_eq!(S::locate(2 * first), (2, 0));
        assert_eq!(S::locate(4 * first - 1), (2, 2 * first - 1));
        assert_eq!(S::locate(4 * first), (3, 0));
        // Every index maps to the slot after its predecessor's, or to the start of the
        // next segment once the one before is full.
        let mut previous = S::locate(0);
        for index in 1..(3 * S::LARGEST + 5) {
            let here = S::locate(index);
            let full = previous.1 + 1 == S::segment_bytes(previous.0) / 16;
            let expected = if full { (previous.0 + 1, 0) } else { (previous.0, previous.1 + 1) };
            assert_eq!(here, expected, "{index}");
            previous = here;
        }
        assert_eq!(S::locate(S::LARGEST), (S::FIRST_LARGEST, 0));
        assert_eq!(S::segment_bytes(S::FIRST_LARGEST - 1), SEGMENT_BYTES_MAX / 2);
        assert_eq!(S::segment_bytes(S::FIRST_LARGEST + 7), SEGMENT_BYTES_MAX);
    }

    #[test]
    fn pushes_pops_and_sets_across_segments_agree_with_a_vec() {
        let mut table = Segmented::<[u32; 2]>::default();
        let mut model: Vec<[u32; 2]> = Vec::new();
        let count = 5 * Segmented::<[u32; 2]>::FIRST + 3;
        for i in 0..count as u32 {
            table.push([i, !i]);
            model.push([i, !i]);
        }
        for _ in 0..(Segmented::<[u32; 2]>::FIRST + 7) {
            assert_eq!(table.pop(), model.pop());
        }
        for i in 0..100u32 {
            table.push([i, i]);
            model.push([i, i]);
        }
        table.set(3, [7, 7]);
        model[3] = [7, 7];
        assert_eq!(table.len(), model.len());
        assert!(table.iter().eq(model.iter().copied()));
        assert!(table.clone().iter().eq(model.iter().copied()));
        assert_eq!(table.last(), model.last().copied());
        let sorted: Segmented<u128> = {
            let mut s = Segmented::default();
            (0..10_000u128).for_each(|i| s.push(i * 2));
            s
        };
        for (value, point) in [(5000, 2500), (5001, 2501), (0, 0), (1, 1), (19_998, 9_999)] {
            assert_eq!(sorted.partition_point(|x| x < value), point, "{value}");
        }
        for (value, point) in [(19_999, 10_000), (u128::MAX, 10_000), (19_997, 9_999)] {
            assert_eq!(sorted.partition_point(|x| x < value), point, "{value}");
        }
        assert_eq!(Segmented::<u128>::default().partition_point(|x| x < 5), 0);
        assert_eq!(Segmented::<u32>::default().pop(), None);
    }

    #[test]
    fn large_segments_come_prepared_and_keep_every_record() {
        type S = Segmented<u128>;
        let mut table = S::default();
        let count = 2 * S::LARGEST + S::LARGEST / 2;
        for i in 0..count {
            table.push(i as u128 * 3);
        }
        // Segments past the doubling ones all have the largest size, one is in
        // preparation, and nothing was lost across the boundaries.
        assert_eq!(table.segments.len(), S::FIRST_LARGEST + 2);
        assert!(table.segments[S::FIRST_LARGEST..].iter().all(|s| s.len() == SEGMENT_BYTES_MAX));
        assert!(table.next.is_some());
        for index in (0..count).step_by(997).chain([S::LARGEST - 1, S::LARGEST, count - 1]) {
            assert_eq!(table.get(index), index as u128 * 3, "{index}");
        }
        // Popping back over a boundary and pushing again reuses the mapped segments.
        for _ in 0..S::LARGEST {
            table.pop();
        }
        table.push(7);
        assert_eq!(table.get(count - S::LARGEST), 7);
        assert_eq!(table.segments.len(), S::FIRST_LARGEST + 2);
    }
}
