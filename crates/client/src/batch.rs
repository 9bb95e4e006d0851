//! Splitting events into batches without breaking linked chains, and putting the
//! per-batch results back together.

use std::future::Future;
use std::ops::Range;

use crate::ClientError;

/// Splits `len` events into consecutive ranges of at most `max` events each, never
/// splitting a linked chain. `linked(i)` says whether event `i` has `flags.linked`, i.e.
/// whether event `i + 1` belongs to the same chain. A chain still open at the last event
/// ends there (the server answers `linked_event_chain_open`). A chain longer than `max`
/// is [`ClientError::ChainTooLong`].
///
/// Batches are filled greedily: a chain that does not fit in the current batch starts
/// the next one.
pub(crate) fn plan_batches(
    len: usize,
    max: usize,
    linked: impl Fn(usize) -> bool,
) -> Result<Vec<Range<usize>>, ClientError> {
    assert!(max > 0, "batch limit must be positive");
    let mut batches = Vec::new();
    let mut batch_start = 0;
    let mut chain_start = 0;
    while chain_start < len {
        // The chain runs up to and including the first event without `linked`.
        let mut chain_end = chain_start;
        while chain_end + 1 < len && linked(chain_end) {
            chain_end += 1;
        }
        let chain_end = chain_end + 1; // exclusive
        let chain_len = chain_end - chain_start;
        if chain_len > max {
            return Err(ClientError::ChainTooLong { start: chain_start, len: chain_len, max });
        }
        if chain_end - batch_start > max {
            batches.push(batch_start..chain_start);
            batch_start = chain_start;
        }
        chain_start = chain_end;
    }
    if batch_start < len {
        batches.push(batch_start..len);
    }
    Ok(batches)
}

/// Sends each batch with `send` in order and concatenates the results, checking that
/// every batch got exactly one result per event. Stops at the first error.
pub(crate) async fn run_batches<'a, E, R, F, Fut>(
    operation: &'static str,
    events: &'a [E],
    batches: &[Range<usize>],
    mut send: F,
) -> Result<Vec<R>, ClientError>
where
    F: FnMut(&'a [E]) -> Fut,
    Fut: Future<Output = Result<Vec<R>, ClientError>>,
{
    let mut results = Vec::with_capacity(events.len());
    for range in batches {
        let batch = &events[range.clone()];
        let batch_results = send(batch).await?;
        if batch_results.len() != batch.len() {
            return Err(ClientError::InvalidResponse {
                operation,
                reason: format!(
                    "{} results for a batch of {} events (events {}..{})",
                    batch_results.len(),
                    batch.len(),
                    range.start,
                    range.end
                ),
            });
        }
        results.extend(batch_results);
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(linked: &[bool], max: usize) -> Result<Vec<Range<usize>>, ClientError> {
        plan_batches(linked.len(), max, |i| linked[i])
    }

    /// Every chain of `linked` lies inside one batch, and the batches tile 0..len.
    fn check_plan(linked: &[bool], max: usize, batches: &[Range<usize>]) {
        let mut next = 0;
        for b in batches {
            assert_eq!(b.start, next, "batches are consecutive");
            assert!(!b.is_empty() && b.len() <= max, "batch {b:?} size within 1..={max}");
            // The event before a batch boundary must not be linked (chain not split).
            if b.end < linked.len() {
                assert!(!linked[b.end - 1], "chain split at {}", b.end);
            }
            next = b.end;
        }
        assert_eq!(next, linked.len());
    }

    #[test]
    fn unlinked_events_fill_batches_to_the_limit() {
        let linked = vec![false; 20_000];
        let batches = plan(&linked, 8189).unwrap();
        assert_eq!(batches, vec![0..8189, 8189..16378, 16378..20_000]);
        check_plan(&linked, 8189, &batches);
        assert_eq!(plan(&[], 8189).unwrap(), vec![]);
        assert_eq!(plan(&[false; 8189], 8189).unwrap(), vec![0..8189]);
        assert_eq!(plan(&[false; 8190], 8189).unwrap(), vec![0..8189, 8189..8190]);
    }

    #[test]
    fn chains_are_kept_whole() {
        // max 4: [a b] [c-d-e linked chain] [f] -> the chain does not fit after a, b.
        let linked = [false, false, true, true, false, false];
        let batches = plan(&linked, 4).unwrap();
        assert_eq!(batches, vec![0..2, 2..6]);
        check_plan(&linked, 4, &batches);

        // A chain exactly the batch size.
        let linked = [false, true, true, true, false, false];
        let batches = plan(&linked, 4).unwrap();
        assert_eq!(batches, vec![0..1, 1..5, 5..6]);
        check_plan(&linked, 4, &batches);

        // Open chain at the end stays with its events.
        let linked = [false, false, false, true, true];
        let batches = plan(&linked, 3).unwrap();
        assert_eq!(batches, vec![0..3, 3..5]);
        check_plan(&linked, 3, &batches);
    }

    #[test]
    fn chains_straddling_the_limit_move_to_the_next_batch() {
        // 8188 singles, then a chain of 3, at the real limit.
        let mut linked = vec![false; 8188];
        linked.extend([true, true, false]);
        linked.extend(vec![false; 10]);
        let batches = plan(&linked, 8189).unwrap();
        assert_eq!(batches, vec![0..8188, 8188..8201]);
        check_plan(&linked, 8189, &batches);

        // Pseudo-random chains, checked structurally.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let linked: Vec<bool> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                !x.is_multiple_of(3)
            })
            .collect();
        let batches = plan(&linked, 100).unwrap();
        check_plan(&linked, 100, &batches);
    }

    #[test]
    fn oversized_chain_is_refused() {
        let mut linked = vec![false; 3];
        linked.extend(vec![true; 8189]);
        linked.push(false); // chain of 8190 starting at 3
        let err = plan(&linked, 8189).unwrap_err();
        assert!(
            matches!(err, ClientError::ChainTooLong { start: 3, len: 8190, max: 8189 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("starting at event 3 has 8190 events"));

        // Open chain at the end that is too long.
        let err = plan(&[true; 5], 4).unwrap_err();
        assert!(matches!(err, ClientError::ChainTooLong { start: 0, len: 5, max: 4 }));
    }

    #[tokio::test]
    async fn results_are_concatenated_in_order() {
        let events: Vec<u32> = (0..10).collect();
        let batches = vec![0..4, 4..8, 8..10];
        let mut calls = Vec::new();
        let results = run_batches("test", &events, &batches, |batch| {
            calls.push(batch.to_vec());
            let out: Vec<u32> = batch.iter().map(|e| e * 10).collect();
            async move { Ok(out) }
        })
        .await
        .unwrap();
        assert_eq!(results, (0..10).map(|e| e * 10).collect::<Vec<_>>());
        assert_eq!(calls, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    }

    #[tokio::test]
    async fn wrong_result_count_is_an_invalid_response() {
        let events: Vec<u32> = (0..6).collect();
        let batches = vec![0..3, 3..6];
        let err = run_batches("create_transfers", &events, &batches, |batch| {
            let out: Vec<u32> = batch.iter().skip(usize::from(batch[0] == 3)).copied().collect();
            async move { Ok(out) }
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "create_transfers: invalid response from the server: 2 results for a batch of 3 \
             events (events 3..6)"
        );
    }

    #[tokio::test]
    async fn the_first_failing_batch_stops_the_run() {
        let events: Vec<u32> = (0..6).collect();
        let batches = vec![0..2, 2..4, 4..6];
        let mut sent = 0;
        let err = run_batches("x", &events, &batches, |batch| {
            sent += 1;
            let fail = batch[0] == 2;
            let out = batch.to_vec();
            async move {
                if fail {
                    Err(ClientError::Refused {
                        operation: "x",
                        code: tonic::Code::InvalidArgument,
                        message: "no".into(),
                    })
                } else {
                    Ok(out)
                }
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ClientError::Refused { .. }));
        assert_eq!(sent, 2);
    }
}
