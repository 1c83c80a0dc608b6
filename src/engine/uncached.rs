//! Bytes read from the media that could not be cached (the image's disk is full or failed): kept
//! a little while so the request that fetched them, and every request that waited on its claim,
//! get them without reading the media again (on a dying disc that read was perhaps the sector's
//! last good one).
//!
//! Bounded: the oldest entries go first once `LIMIT_BYTES` is passed (the newest always stays). A
//! request whose entry went before it was served only fetches again. Entries hold media bytes,
//! so they are right whatever the map says later; `step` consults them only for bytes not `+`.
//! Emptied when a full disk has space again, so that those bytes are fetched and cached.

use std::collections::VecDeque;
use std::sync::Arc;

/// How many uncached bytes are kept at most (a few requests' worth on every queue).
const LIMIT_BYTES: usize = 32 << 20;

/// Recent uncached fetches, oldest first.
#[derive(Debug, Default)]
pub(super) struct Uncached {
    entries: VecDeque<(u64, Arc<[u8]>)>,
    bytes: usize,
}

impl Uncached {
    /// Keeps `data`, the media bytes at `pos`.
    pub(super) fn insert(&mut self, pos: u64, data: &[u8]) {
        self.bytes += data.len();
        self.entries.push_back((pos, Arc::from(data)));
        while self.bytes > LIMIT_BYTES && self.entries.len() > 1 {
            if let Some((_, old)) = self.entries.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The newest entry holding the byte at `pos`: its start and bytes.
    pub(super) fn find(&self, pos: u64) -> Option<(u64, Arc<[u8]>)> {
        self.entries
            .iter()
            .rev()
            .find(|(start, data)| *start <= pos && pos - start < data.len() as u64)
            .map(|(start, data)| (*start, Arc::clone(data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_newest_entry_and_forgets_the_oldest() {
        let mut u = Uncached::default();
        assert!(u.find(0).is_none());
        u.insert(100, &[1; 10]);
        u.insert(105, &[2; 10]);
        assert_eq!(u.find(104).map(|(s, d)| (s, d[0])), Some((100, 1)));
        assert_eq!(u.find(105).map(|(s, d)| (s, d[0])), Some((105, 2)));
        assert!(u.find(115).is_none() && u.find(99).is_none());
        u.insert(1 << 30, &vec![3; LIMIT_BYTES - 10]);
        assert!(u.find(100).is_none(), "the oldest went first");
        assert_eq!(u.find(105).map(|(s, d)| (s, d[0])), Some((105, 2)));
        assert_eq!(u.find(1 << 30).map(|(s, d)| (s, d[0])), Some((1 << 30, 3)));
        u.insert(1 << 40, &vec![4; LIMIT_BYTES + 1]);
        assert_eq!(u.entries.len(), 1, "the newest always stays");
    }
}
