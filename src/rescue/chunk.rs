//! Which block to read next: GNU ddrescue's `find_chunk` and `rfind_chunk` (mapfile.cc) over a
//! [`FileMap`], pure functions. Reading the same blocks in the same order as ddrescue is what
//! makes a blkcache fill wear a disc no more than ddrescue does, and lets either tool continue
//! the other's map.
//!
//! A block `[pos, pos + len)` asks "the next `len` bytes from `pos`": it is moved to the first
//! run of the wanted status at or after `pos` (keeping its length), cut to that run, and, unless
//! it ends where the run ends, its end is aligned down to `align` (forwards; backwards its start
//! is aligned up), so that large reads stay on cluster boundaries.

use crate::map::{FileMap, Run, Status};

/// A block to read: `len` bytes from `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// First byte.
    pub pos: u64,
    /// Length in bytes (never 0 when returned).
    pub len: u64,
}

impl Block {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.pos + self.len
    }
}

/// What a search found: the block (if one qualified) and whether any run of the wanted status
/// was seen at all (ddrescue's `block_found`: a later pass may still have work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The block to read.
    pub block: Option<Block>,
    /// Whether a run of the status was passed over or chosen.
    pub seen: bool,
}

/// Forwards: the block of `len` bytes from `pos` in the first run of `status` at or after
/// `pos`; with `after_finished`, only a run that follows a `+` run (or starts the map).
pub fn find_chunk(
    map: &FileMap,
    pos: u64,
    len: u64,
    status: Status,
    align: u64,
    after_finished: bool,
) -> Found {
    let none = |seen| Found { block: None, seen };
    if len == 0 {
        return none(false);
    }
    let Some(mut run) = map.extent_at(pos) else {
        return none(false);
    };
    let mut seen = false;
    loop {
        if run.status == status {
            seen = true;
            if !after_finished || run.pos == 0 || prev_status(map, run) == Some(Status::Finished) {
                break;
            }
        }
        match map.extent_at(run.end()) {
            Some(next) => run = next,
            None => return none(seen),
        }
    }
    let start = pos.max(run.pos);
    let mut end = start.saturating_add(len).min(run.end());
    if end != run.end() {
        let rest = end % align.max(1);
        if end - start > rest {
            end -= rest;
        }
    }
    Found {
        block: Some(Block {
            pos: start,
            len: end - start,
        }),
        seen,
    }
}

/// Backwards: the block of `len` bytes ending at `end` in the last run of `status` ending at or
/// before `end`; with `before_finished`, only a run followed by a `+` run (or ending the map).
pub fn rfind_chunk(
    map: &FileMap,
    end: u64,
    len: u64,
    status: Status,
    align: u64,
    before_finished: bool,
) -> Found {
    let none = |seen| Found { block: None, seen };
    let end = end.min(map.size());
    if len == 0 || end == 0 {
        return none(false);
    }
    let size = len.min(end);
    let Some(mut run) = map.extent_at(end - 1) else {
        return none(false);
    };
    let mut seen = false;
    loop {
        if run.status == status {
            seen = true;
            if !before_finished
                || run.end() == map.size()
                || map.status_at(run.end()) == Some(Status::Finished)
            {
                break;
            }
        }
        if run.pos == 0 {
            return none(seen);
        }
        match map.extent_at(run.pos - 1) {
            Some(prev) => run = prev,
            None => return none(seen),
        }
    }
    let stop = end.min(run.end());
    let mut start = stop.saturating_sub(size).max(run.pos);
    if start != run.pos {
        let align = align.max(1);
        let disp = align - start % align;
        if disp < align && disp < stop - start {
            start += disp;
        }
    }
    Found {
        block: Some(Block {
            pos: start,
            len: stop - start,
        }),
        seen,
    }
}

fn prev_status(map: &FileMap, run: Run) -> Option<Status> {
    run.pos.checked_sub(1).and_then(|p| map.status_at(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(runs: &[(u64, Status)]) -> FileMap {
        let mut pos = 0;
        FileMap::from_runs(runs.iter().map(|&(len, status)| {
            let r = Run { pos, len, status };
            pos += len;
            r
        }))
        .unwrap()
    }

    use Status::{BadSector as B, Finished as F, NonTried as Q, NonTrimmed as T};

    #[test]
    fn forwards_moves_to_the_next_run_and_aligns_its_end() {
        let m = map(&[(1000, F), (5000, Q), (2000, T), (4096, Q)]);
        let b = |pos, len, align| find_chunk(&m, pos, len, Q, align, false);
        // Moved to the run's start keeping its length, end aligned down to 1024.
        assert_eq!(
            b(0, 2048, 1024).block,
            Some(Block {
                pos: 1000,
                len: 1048
            })
        );
        // Ends where the run ends: not aligned.
        assert_eq!(
            b(5000, 2048, 1024).block,
            Some(Block {
                pos: 5000,
                len: 1000
            })
        );
        // Past the `*` run to the last run; the end aligned down to 8192.
        assert_eq!(
            b(6000, 512, 512).block,
            Some(Block {
                pos: 8000,
                len: 192
            })
        );
        assert_eq!(
            b(12096, 512, 512),
            Found {
                block: None,
                seen: false
            }
        );
        // Alignment never empties a block.
        assert_eq!(b(1000, 100, 1024).block, Some(Block { pos: 1000, len: 24 }));
        assert_eq!(b(1000, 20, 1024).block, Some(Block { pos: 1000, len: 20 }));
    }

    #[test]
    fn after_finished_skips_runs_behind_failures() {
        let m = map(&[(100, Q), (100, T), (100, Q), (100, F), (100, Q)]);
        let f = find_chunk(&m, 0, 50, Q, 1, true);
        assert_eq!(
            f.block,
            Some(Block { pos: 0, len: 50 }),
            "the map's first run qualifies"
        );
        let f = find_chunk(&m, 150, 50, Q, 1, true);
        assert_eq!(f.block, Some(Block { pos: 400, len: 50 }));
        assert!(f.seen);
        let m = map(&[(100, T), (100, Q), (100, B)]);
        assert_eq!(
            find_chunk(&m, 0, 50, Q, 1, true),
            Found {
                block: None,
                seen: true
            }
        );
    }

    #[test]
    fn backwards_mirrors_forwards() {
        let m = map(&[(4096, Q), (2000, T), (5000, Q), (1000, F)]);
        let b = |end, len, align| rfind_chunk(&m, end, len, Q, align, false);
        // From the map's end: moved down to the `?` run, start aligned up to 1024.
        assert_eq!(
            b(u64::MAX, 2048, 1024).block,
            Some(Block {
                pos: 9216,
                len: 1880
            })
        );
        // Starts where the run starts: not aligned.
        assert_eq!(
            b(7000, 2048, 1024).block,
            Some(Block {
                pos: 6096,
                len: 904
            })
        );
        assert_eq!(
            b(6096, 512, 512).block,
            Some(Block {
                pos: 3584,
                len: 512
            })
        );
        // Near 0 the block is cut at 0.
        assert_eq!(b(300, 512, 512).block, Some(Block { pos: 0, len: 300 }));
        assert_eq!(
            b(0, 512, 512),
            Found {
                block: None,
                seen: false
            }
        );
        let m = map(&[(100, Q), (100, F), (100, Q), (100, T)]);
        let f = rfind_chunk(&m, 400, 50, Q, 1, true);
        assert_eq!(f.block, Some(Block { pos: 50, len: 50 }));
    }
}
