//! `FileMap`: the in-memory map of which bytes of the source are in which GNU ddrescue state.
//!
//! Holds sorted, contiguous extents covering `[0, size)` exactly, neighbours of equal status
//! always merged, keyed by start in a `BTreeMap` so lookup and marking are O(log n) even with
//! millions of extents. Per-status byte and area counts are kept up to date on every change, so
//! `stats()` is O(1). It must never leave a gap, an overlap, an empty extent or two equal
//! neighbours behind: every public method keeps those invariants (checked by the property tests).

use std::collections::BTreeMap;
use std::ops::Bound;

use super::stats::Stats;

/// The state of a byte, as GNU ddrescue records it in the block lines of a mapfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// `?`: never read.
    NonTried,
    /// `*`: a read of a larger block failed; not yet narrowed down.
    NonTrimmed,
    /// `/`: trimmed edges; the middle still needs sector-by-sector reading.
    NonScraped,
    /// `-`: a sector that failed to read on its own.
    BadSector,
    /// `+`: read and held in the image.
    Finished,
}

impl Status {
    /// Every status, in declaration order (not the order `ddrescuelog -t` prints them in).
    pub const ALL: [Status; 5] = [
        Status::NonTried,
        Status::NonTrimmed,
        Status::NonScraped,
        Status::BadSector,
        Status::Finished,
    ];

    /// The mapfile character for this status.
    pub fn as_char(self) -> char {
        match self {
            Status::NonTried => '?',
            Status::NonTrimmed => '*',
            Status::NonScraped => '/',
            Status::BadSector => '-',
            Status::Finished => '+',
        }
    }

    /// The status a mapfile character stands for, if any.
    pub fn from_char(c: char) -> Option<Status> {
        match c {
            '?' => Some(Status::NonTried),
            '*' => Some(Status::NonTrimmed),
            '/' => Some(Status::NonScraped),
            '-' => Some(Status::BadSector),
            '+' => Some(Status::Finished),
            _ => None,
        }
    }

    /// Dense index, for per-status tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One extent: `len` bytes from `pos`, all in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First byte.
    pub pos: u64,
    /// Length in bytes (never 0 when it comes from a `FileMap`).
    pub len: u64,
    /// State of every byte in the run.
    pub status: Status,
}

impl Run {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.pos + self.len
    }
}

/// Sorted, contiguous, merged extents over `[0, size)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMap {
    size: u64,
    /// start -> (len, status). Covers `[0, size)` without gaps or overlaps.
    extents: BTreeMap<u64, (u64, Status)>,
    /// Kept in step with `extents` so `stats()` costs nothing.
    stats: Stats,
}

impl Default for FileMap {
    fn default() -> Self {
        FileMap::new(0)
    }
}

impl FileMap {
    /// One `NonTried` run over `[0, size)`; no run at all when `size` is 0.
    pub fn new(size: u64) -> FileMap {
        let mut m = FileMap {
            size,
            extents: BTreeMap::new(),
            stats: Stats::default(),
        };
        if size > 0 {
            m.insert_raw(0, size, Status::NonTried);
        }
        m
    }

    /// Builds a map from runs that are already sorted, contiguous from 0 and non-empty (as a
    /// parser has checked them); equal neighbours are merged. Returns `None` if they are not.
    pub fn from_runs<I: IntoIterator<Item = Run>>(runs: I) -> Option<FileMap> {
        let mut merged: Vec<(u64, (u64, Status))> = Vec::new();
        let mut size = 0u64;
        let mut stats = Stats::default();
        for r in runs {
            if r.len == 0 || r.pos != size {
                return None;
            }
            size = r.pos.checked_add(r.len)?;
            match merged.last_mut() {
                Some((_, (l, s))) if *s == r.status => {
                    *l += r.len;
                    stats.grow(r.status, r.len);
                }
                _ => {
                    merged.push((r.pos, (r.len, r.status)));
                    stats.add(r.status, r.len);
                }
            }
        }
        // Sorted input: the BTreeMap is bulk-built, not inserted into key by key.
        Some(FileMap {
            size,
            extents: merged.into_iter().collect(),
            stats,
        })
    }

    /// This map grown to `size` bytes, the new bytes non-tried (a larger map is returned as
    /// it is: a map is never cut).
    pub fn extended(&self, size: u64) -> FileMap {
        if size <= self.size {
            return self.clone();
        }
        let tail = Run {
            pos: self.size,
            len: size - self.size,
            status: Status::NonTried,
        };
        // Runs of a valid map plus a contiguous tail: always valid (an empty map: the tail).
        FileMap::from_runs(self.iter().chain([tail])).unwrap_or_else(|| FileMap::new(size))
    }

    /// Size of the domain in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Status of the byte at `pos`; `None` at or past the end.
    pub fn status_at(&self, pos: u64) -> Option<Status> {
        self.extent_at(pos).map(|r| r.status)
    }

    /// The whole (merged) run holding `pos`; `None` at or past the end.
    pub fn extent_at(&self, pos: u64) -> Option<Run> {
        if pos >= self.size {
            return None;
        }
        let (&start, &(len, status)) = self.extents.range(..=pos).next_back()?;
        Some(Run {
            pos: start,
            len,
            status,
        })
    }

    /// Whether every byte of `[pos, pos+len)` is `status` (false past the end): one lookup when
    /// one extent holds the range, as merged extents always do for a uniform range.
    pub fn all(&self, pos: u64, len: u64, status: Status) -> bool {
        let Some(end) = pos.checked_add(len).filter(|&e| e <= self.size) else {
            return false;
        };
        if len == 0 {
            return true;
        }
        match self.extent_at(pos) {
            Some(r) if r.status == status && r.pos + r.len >= end => true,
            Some(r) if r.status != status => false,
            _ => self.runs(pos, len).all(|run| run.status == status),
        }
    }

    /// Sets `[pos, pos+len)` (clipped to the domain) to `status`, splitting the extents at its
    /// edges and merging equal neighbours. O(log n + extents replaced).
    pub fn set(&mut self, pos: u64, len: u64, status: Status) {
        if pos >= self.size || len == 0 {
            return;
        }
        let end = pos.saturating_add(len).min(self.size);
        // Fast path: the range lies inside one extent that already has the status.
        let Some(first) = self.extent_at(pos) else {
            return;
        };
        if first.status == status && first.end() >= end {
            return;
        }
        self.split_at(pos);
        self.split_at(end);
        // Remove every extent inside [pos, end); the splits made them end at `end` at the latest.
        while let Some(s) = self
            .extents
            .range((Bound::Included(pos), Bound::Excluded(end)))
            .next()
            .map(|(&s, _)| s)
        {
            self.remove_raw(s);
        }
        self.insert_merged(pos, end, status);
    }

    /// Makes an extent boundary at `at` (no-op at 0, the end, or an existing boundary).
    fn split_at(&mut self, at: u64) {
        if at >= self.size {
            return;
        }
        // Shorten the extent holding `at` in place, then add its tail: two tree operations.
        let Some((&start, ext)) = self.extents.range_mut(..=at).next_back() else {
            return;
        };
        if start == at {
            return;
        }
        let (len, status) = *ext;
        ext.0 = at - start;
        self.extents.insert(at, (start + len - at, status));
        // Same bytes, one more area.
        self.stats.split(status);
    }

    /// Inserts `[start, end)` as `status` into a hole, merging with equal neighbours.
    fn insert_merged(&mut self, start: u64, mut end: u64, status: Status) {
        if let Some(&(nl, nst)) = self.extents.get(&end) {
            if nst == status {
                self.remove_raw(end);
                end += nl;
            }
        }
        // Grow an equal left neighbour in place rather than replacing it.
        if let Some((&ps, ext)) = self.extents.range_mut(..start).next_back() {
            if ext.1 == status && ps + ext.0 == start {
                ext.0 += end - start;
                self.stats.grow(status, end - start);
                return;
            }
        }
        self.insert_raw(start, end - start, status);
    }

    fn insert_raw(&mut self, start: u64, len: u64, status: Status) {
        debug_assert!(len > 0);
        self.stats.add(status, len);
        self.extents.insert(start, (len, status));
    }

    fn remove_raw(&mut self, start: u64) {
        if let Some((len, status)) = self.extents.remove(&start) {
            self.stats.sub(status, len);
        }
    }

    /// The runs inside `[pos, pos+len)`, clipped to that range and to the domain.
    pub fn runs(&self, pos: u64, len: u64) -> impl Iterator<Item = Run> + '_ {
        let end = pos.saturating_add(len).min(self.size);
        let from = if pos < end {
            self.extent_at(pos).map(|r| r.pos).unwrap_or(end)
        } else {
            end
        };
        self.extents
            .range(from..end)
            .map(move |(&s, &(l, status))| {
                let a = s.max(pos);
                let b = (s + l).min(end);
                Run {
                    pos: a,
                    len: b - a,
                    status,
                }
            })
            .filter(|r| r.len > 0)
    }

    /// Every run, in order.
    pub fn iter(&self) -> impl Iterator<Item = Run> + '_ {
        self.extents
            .iter()
            .map(|(&pos, &(len, status))| Run { pos, len, status })
    }

    /// The first byte not `Finished`; `None` when everything is.
    pub fn first_unfinished(&self) -> Option<u64> {
        // Extents are merged, so the first or the second one is not Finished.
        self.extents
            .iter()
            .find(|(_, &(_, st))| st != Status::Finished)
            .map(|(&s, _)| s)
    }

    /// The first byte at or after `pos` that is not `Finished`.
    pub fn next_unfinished(&self, pos: u64) -> Option<u64> {
        let r = self.extent_at(pos)?;
        if r.status != Status::Finished {
            return Some(pos);
        }
        // Merged: the next extent, if any, is not Finished.
        self.extents.range(r.end()..).next().map(|(&s, _)| s)
    }

    /// Number of extents (areas) in the map.
    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// Bytes and areas per status.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Checks every invariant; for tests and debug assertions.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut expect = 0u64;
        let mut prev: Option<Status> = None;
        let mut stats = Stats::default();
        for r in self.iter() {
            if r.pos != expect {
                return Err(format!("gap or overlap at {}", r.pos));
            }
            if r.len == 0 {
                return Err(format!("empty extent at {}", r.pos));
            }
            if prev == Some(r.status) {
                return Err(format!("unmerged neighbours at {}", r.pos));
            }
            prev = Some(r.status);
            stats.add(r.status, r.len);
            expect = r.end();
        }
        if expect != self.size {
            return Err(format!("covers {expect} of {} bytes", self.size));
        }
        if stats != self.stats {
            return Err("stale stats".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive model: one status per byte.
    fn runs_of(model: &[Status], from: usize) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        for (i, &s) in model.iter().enumerate() {
            match out.last_mut() {
                Some(r) if r.status == s => r.len += 1,
                _ => out.push(Run {
                    pos: (from + i) as u64,
                    len: 1,
                    status: s,
                }),
            }
        }
        out
    }

    fn status() -> impl Strategy<Value = Status> {
        prop::sample::select(Status::ALL.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_per_byte_model(
            size in 0u64..96,
            ops in prop::collection::vec((0u64..110, 0u64..60, status()), 0..40),
            q in (0u64..110, 0u64..120),
        ) {
            let mut m = FileMap::new(size);
            let mut model = vec![Status::NonTried; size as usize];
            for (pos, len, st) in ops {
                m.set(pos, len, st);
                let end = (pos + len).min(size);
                for b in pos.min(size)..end {
                    model[b as usize] = st;
                }
                prop_assert_eq!(m.check_invariants(), Ok(()));
            }
            // Whole map, merged.
            let want = runs_of(&model, 0);
            prop_assert_eq!(m.iter().collect::<Vec<_>>(), want.clone());
            prop_assert_eq!(m.extent_count(), want.len());
            // Lookups.
            for b in 0..size + 3 {
                prop_assert_eq!(m.status_at(b), model.get(b as usize).copied());
                if b < size {
                    let r = m.extent_at(b).unwrap();
                    prop_assert!(r.pos <= b && b < r.end());
                }
            }
            // Clipped runs.
            let (qp, ql) = q;
            let qe = (qp + ql).min(size);
            let slice = if qp < qe { &model[qp as usize..qe as usize] } else { &[][..] };
            prop_assert_eq!(m.runs(qp, ql).collect::<Vec<_>>(), runs_of(slice, qp as usize));
            // Whole range of one status.
            for s in Status::ALL {
                let want = qp + ql <= size && model[qp.min(size) as usize..(qp + ql).min(size) as usize].iter().all(|&x| x == s);
                prop_assert_eq!(m.all(qp, ql, s), want);
            }
            // First unfinished, next unfinished.
            prop_assert_eq!(
                m.first_unfinished(),
                model.iter().position(|&s| s != Status::Finished).map(|p| p as u64)
            );
            prop_assert_eq!(
                m.next_unfinished(qp),
                model.iter().enumerate().skip(qp as usize)
                    .find(|(_, &s)| s != Status::Finished).map(|(p, _)| p as u64)
            );
            // Stats.
            let st = m.stats();
            for s in Status::ALL {
                let bytes = model.iter().filter(|&&x| x == s).count() as u64;
                let areas = want.iter().filter(|r| r.status == s).count() as u64;
                prop_assert_eq!(st.get(s), crate::map::stats::Count { bytes, areas });
            }
            prop_assert_eq!(st.total_bytes(), size);
        }
    }

    #[test]
    fn status_chars_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::from_char(s.as_char()), Some(s));
        }
        assert_eq!(Status::from_char('F'), None);
    }

    #[test]
    fn set_clips_to_the_domain_and_ignores_empty_ranges() {
        let mut m = FileMap::new(100);
        m.set(90, u64::MAX, Status::Finished);
        m.set(200, 10, Status::BadSector);
        m.set(10, 0, Status::BadSector);
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![
                Run {
                    pos: 0,
                    len: 90,
                    status: Status::NonTried
                },
                Run {
                    pos: 90,
                    len: 10,
                    status: Status::Finished
                },
            ]
        );
        m.check_invariants().unwrap();
    }

    #[test]
    fn empty_map_has_no_runs() {
        let m = FileMap::new(0);
        assert_eq!(m.iter().count(), 0);
        assert_eq!(m.status_at(0), None);
        assert_eq!(m.first_unfinished(), None);
        assert_eq!(m.runs(0, 10).count(), 0);
    }

    #[test]
    fn from_runs_merges_and_rejects_gaps() {
        let r = |pos, len, status| Run { pos, len, status };
        let m = FileMap::from_runs([
            r(0, 10, Status::Finished),
            r(10, 5, Status::Finished),
            r(15, 5, Status::BadSector),
        ])
        .unwrap();
        assert_eq!(m.extent_count(), 2);
        m.check_invariants().unwrap();
        assert!(
            FileMap::from_runs([r(0, 10, Status::Finished), r(11, 5, Status::NonTried)]).is_none()
        );
        assert!(FileMap::from_runs([r(5, 10, Status::Finished)]).is_none());
        assert!(FileMap::from_runs([r(0, 0, Status::Finished)]).is_none());
    }

    #[test]
    fn million_extents_stay_consistent() {
        // Alternating sectors: 1,000,000 extents; marks in the middle split and merge.
        let n = 1_000_000u64;
        let mut m = FileMap::new(n * 512);
        for i in (0..n).step_by(2) {
            m.set(i * 512, 512, Status::Finished);
        }
        assert_eq!(m.extent_count(), n as usize);
        m.set(1001 * 512, 512, Status::Finished);
        assert_eq!(m.extent_count(), n as usize - 2);
        assert_eq!(m.status_at(1001 * 512 + 7), Some(Status::Finished));
        m.set(1000 * 512 + 100, 10, Status::BadSector);
        assert_eq!(m.extent_count(), n as usize);
        assert_eq!(m.stats().get(Status::BadSector).bytes, 10);
    }
}
