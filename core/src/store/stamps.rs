//! Chunk timestamps in the store (`--chunk-timestamps`): each chunk may
//! carry the wall-clock time of the append that stored it, in Unix
//! nanoseconds. Replies that list chunks carry them as a vector parallel to
//! the deltas, `0` for a chunk stored without one, and empty when no chunk
//! of the list has one (so a store that never stamps answers exactly as
//! before).

/// The stamps of chunks `from..to` (indices into a log whose stamps are
/// `log`, which may be shorter than the log: missing ones are 0), or an
/// empty vector when none of them is stamped.
#[must_use]
pub fn slice(log: &[u64], from: usize, to: usize) -> Vec<u64> {
    let got = log
        .get(from.min(log.len())..to.min(log.len()))
        .unwrap_or(&[]);
    if got.iter().all(|&t| t == 0) {
        return Vec::new();
    }
    let mut out = got.to_vec();
    out.resize(to.saturating_sub(from), 0);
    out
}

/// Records the stamps of `n` chunks appended to a log of `len` chunks whose
/// stamps are `log` (kept empty until a chunk is stamped).
pub fn extend(log: &mut Vec<u64>, len: usize, n: usize, at_ns: Option<u64>) {
    match at_ns {
        Some(t) => {
            log.resize(len, 0);
            log.extend(std::iter::repeat_n(t, n));
        }
        None if !log.is_empty() => log.resize(len + n, 0),
        None => {}
    }
}

/// The stamp of the chunk at `idx` in a list of stamps (`None`: unstamped).
#[must_use]
pub fn at(stamps: &[u64], idx: usize) -> Option<u64> {
    stamps.get(idx).copied().filter(|&t| t != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstamped_logs_stay_empty_and_slices_of_them_are_empty() {
        let mut log = Vec::new();
        extend(&mut log, 0, 3, None);
        assert!(log.is_empty());
        assert!(slice(&log, 0, 3).is_empty());
    }

    #[test]
    fn a_stamped_append_after_unstamped_chunks_pads_them_with_zero() {
        let mut log = Vec::new();
        extend(&mut log, 0, 2, None);
        extend(&mut log, 2, 2, Some(7));
        extend(&mut log, 4, 1, None);
        assert_eq!(log, [0, 0, 7, 7, 0]);
        assert_eq!(slice(&log, 1, 4), [0, 7, 7]);
        assert!(slice(&log, 0, 2).is_empty());
        assert_eq!(at(&log, 2), Some(7));
        assert_eq!(at(&log, 0), None);
    }
}
