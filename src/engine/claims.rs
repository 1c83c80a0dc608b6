//! In-flight claims: byte ranges some request is fetching from the media right now.
//!
//! Kept under the engine's state mutex. Claims never overlap each other and never cover a
//! finished (`+`) byte; a claimed range is written to the image only by its holder, so no two
//! writers and no reader (readers copy only `+` ranges) ever meet on the same bytes.

use std::collections::BTreeMap;

/// Non-overlapping `[start, end)` ranges, keyed by start: O(log n) lookups.
#[derive(Debug, Default)]
pub(super) struct Claims {
    ranges: BTreeMap<u64, u64>,
}

impl Claims {
    /// Whether `pos` lies in a claim.
    pub(super) fn covers(&self, pos: u64) -> bool {
        self.ranges
            .range(..=pos)
            .next_back()
            .is_some_and(|(_, &end)| end > pos)
    }

    /// The unclaimed interval around an unclaimed `pos`: from the end of the claim before it (or
    /// 0) to the start of the claim after it (or `u64::MAX`).
    pub(super) fn free_around(&self, pos: u64) -> (u64, u64) {
        debug_assert!(!self.covers(pos));
        let lo = self
            .ranges
            .range(..=pos)
            .next_back()
            .map_or(0, |(_, &end)| end);
        let hi = self
            .ranges
            .range(pos + 1..)
            .next()
            .map_or(u64::MAX, |(&start, _)| start);
        (lo, hi)
    }

    /// Claims `[start, end)`, which must be free.
    pub(super) fn insert(&mut self, start: u64, end: u64) {
        debug_assert!(start < end);
        debug_assert!(!self.covers(start));
        debug_assert!(self.free_around(start).1 >= end);
        self.ranges.insert(start, end);
    }

    /// Releases the claim starting at `start`.
    pub(super) fn remove(&mut self, start: u64) {
        let removed = self.ranges.remove(&start);
        debug_assert!(removed.is_some(), "released a claim that was not held");
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
        c.insert(10, 20);
        c.insert(40, 50);
        assert!(c.covers(10) && c.covers(19) && !c.covers(20) && !c.covers(9));
        assert_eq!(c.free_around(5), (0, 10));
        assert_eq!(c.free_around(20), (20, 40));
        assert_eq!(c.free_around(39), (20, 40));
        assert_eq!(c.free_around(50), (50, u64::MAX));
        c.remove(10);
        assert_eq!(c.free_around(5), (0, 40));
        assert_eq!(c.len(), 1);
    }
}
