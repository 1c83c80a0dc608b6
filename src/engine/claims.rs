//! In-flight claims: byte ranges some request is fetching from the media right now.
//!
//! Kept under the engine's state mutex. Claims never overlap each other and never cover a
//! finished (`+`) byte; a claimed range is written to the image only by its holder, so no two
//! writers and no reader (readers copy only `+` ranges) ever meet on the same bytes.

use std::collections::BTreeMap;

/// Non-overlapping `[start, end)` ranges, keyed by start: O(log n) lookups.
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// start -> (end, whether a request needs it: not a read-ahead).
    ranges: BTreeMap<u64, (u64, bool)>,
    /// Claims held for requests (read-ahead starts no read while there is one).
    foreground: usize,
}

impl Claims {
    /// Whether `pos` lies in a claim.
    pub(super) fn covers(&self, pos: u64) -> bool {
        self.ranges
            .range(..=pos)
            .next_back()
            .is_some_and(|(_, &(end, _))| end > pos)
    }

    /// The unclaimed interval around an unclaimed `pos`: from the end of the claim before it (or
    /// 0) to the start of the claim after it (or `u64::MAX`).
    pub(super) fn free_around(&self, pos: u64) -> (u64, u64) {
        debug_assert!(!self.covers(pos));
        let lo = self
            .ranges
            .range(..=pos)
            .next_back()
            .map_or(0, |(_, &(end, _))| end);
        let hi = self
            .ranges
            .range(pos + 1..)
            .next()
            .map_or(u64::MAX, |(&start, _)| start);
        (lo, hi)
    }

    /// The end of the claim covering `pos`, if one does.
    pub(super) fn end_of(&self, pos: u64) -> Option<u64> {
        self.ranges
            .range(..=pos)
            .next_back()
            .map(|(_, &(end, _))| end)
            .filter(|&end| end > pos)
    }

    /// Claims `[start, end)`, which must be free; `foreground`: for a request (not read-ahead).
    pub(super) fn insert(&mut self, start: u64, end: u64, foreground: bool) {
        debug_assert!(start < end);
        debug_assert!(!self.covers(start));
        debug_assert!(self.free_around(start).1 >= end);
        self.ranges.insert(start, (end, foreground));
        self.foreground += usize::from(foreground);
    }

    /// Releases the claim starting at `start`.
    pub(super) fn remove(&mut self, start: u64) {
        let removed = self.ranges.remove(&start);
        debug_assert!(removed.is_some(), "released a claim that was not held");
        if let Some((_, true)) = removed {
            self.foreground -= 1;
        }
    }

    /// Number of claims held for requests (not read-ahead).
    pub(super) fn foreground(&self) -> usize {
        self.foreground
    }

    /// Number of claims (for tests and debugging).
    pub(super) fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_intervals_between_claims() {
        let mut c = Claims::default();
        assert_eq!(c.free_around(100), (0, u64::MAX));
        c.insert(10, 20, true);
        c.insert(40, 50, false);
        assert_eq!(c.foreground(), 1);
        assert_eq!(
            (c.end_of(15), c.end_of(20), c.end_of(45)),
            (Some(20), None, Some(50))
        );
        assert!(c.covers(10) && c.covers(19) && !c.covers(20) && !c.covers(9));
        assert_eq!(c.free_around(5), (0, 10));
        assert_eq!(c.free_around(20), (20, 40));
        assert_eq!(c.free_around(39), (20, 40));
        assert_eq!(c.free_around(50), (50, u64::MAX));
        c.remove(10);
        assert_eq!(c.foreground(), 0);
        assert_eq!(c.free_around(5), (0, 40));
        assert_eq!(c.len(), 1);
    }
}
