//! The trimming phase (ddrescue's `trim_errors`): for each non-trimmed block (a large read that
//! failed), read forwards one sector at a time from its leading edge until a sector fails, then
//! backwards from its trailing edge until one fails; the middle becomes non-scraped without being
//! read. An edge already next to a bad sector counts as trimmed. One pass, in block order
//! (backwards with `--reverse`).

use super::chunk::Block;
use super::rescuer::{Rescuer, Stop};
use crate::map::{FileMap, Phase, Run, Status};

pub(super) fn trim_errors(r: &mut Rescuer) -> Result<(), Stop> {
    let reverse = r.opts.reverse;
    let mut cursor = if reverse { u64::MAX } else { 0 };
    while let Some(run) = r
        .engine
        .with_map(|m| next_run(&m.map, cursor, Status::NonTrimmed, reverse))
    {
        cursor = if reverse { run.pos } else { run.end() };
        trim_block(r, run)?;
    }
    Ok(())
}

fn trim_block(r: &mut Rescuer, run: Run) -> Result<(), Stop> {
    let sector = r.sector;
    let (lbad, rbad) = r.engine.with_map(|m| {
        let bad = |p: Option<u64>| p.and_then(|p| m.map.status_at(p)) == Some(Status::BadSector);
        (bad(run.pos.checked_sub(1)), bad(Some(run.end())))
    });
    if lbad && rbad {
        r.engine
            .remark(run.pos, run.len, Status::NonTrimmed, Status::NonScraped);
        return Ok(());
    }
    let (mut pos, mut end) = (run.pos, run.end());
    let mut error_found = lbad;
    while pos < end && !error_found {
        let b = leading(pos, end, sector);
        pos = b.end();
        error_found = r.read_block(b, Phase::NonTrimmed, 1, true)?.failed > 0;
        r.update_rates();
    }
    error_found = rbad;
    while pos < end && !error_found {
        let size = sector.min(end - pos);
        let mut b = Block {
            pos: end - size,
            len: size,
        };
        if b.pos != pos {
            let disp = sector - b.pos % sector;
            if disp < sector && disp < b.len {
                b = Block {
                    pos: b.pos + disp,
                    len: b.len - disp,
                };
            }
        }
        end = b.pos;
        error_found = r.read_block(b, Phase::NonTrimmed, 1, false)?.failed > 0;
        r.update_rates();
    }
    if pos < end {
        r.engine
            .remark(pos, end - pos, Status::NonTrimmed, Status::NonScraped);
    }
    Ok(())
}

/// One sector from `pos` (up to the next sector boundary, or `end`).
pub(super) fn leading(pos: u64, end: u64, sector: u64) -> Block {
    let mut len = sector.min(end - pos);
    if pos + len != end {
        let rest = (pos + len) % sector;
        if len > rest {
            len -= rest;
        }
    }
    Block { pos, len }
}

/// The first run of `status` starting at or after `from` (forwards), or the last one ending at
/// or before `from` (backwards).
pub(super) fn next_run(map: &FileMap, from: u64, status: Status, backwards: bool) -> Option<Run> {
    if backwards {
        let mut run = map.extent_at(from.min(map.size()).checked_sub(1)?)?;
        loop {
            if run.status == status && run.end() <= from {
                return Some(run);
            }
            run = map.extent_at(run.pos.checked_sub(1)?)?;
        }
    }
    let mut run = map.extent_at(from)?;
    loop {
        if run.status == status && run.pos >= from {
            return Some(run);
        }
        run = map.extent_at(run.end())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_in_both_directions() {
        let mut m = FileMap::new(1000);
        m.set(100, 100, Status::NonTrimmed);
        m.set(500, 100, Status::NonTrimmed);
        let at = |from, back| next_run(&m, from, Status::NonTrimmed, back).map(|r| r.pos);
        assert_eq!(at(0, false), Some(100));
        assert_eq!(at(150, false), Some(500));
        assert_eq!(at(600, false), None);
        assert_eq!(at(u64::MAX, true), Some(500));
        assert_eq!(at(550, true), Some(100));
        assert_eq!(at(100, true), None);
    }

    #[test]
    fn leading_reads_stop_at_sector_boundaries() {
        assert_eq!(leading(0, 4096, 512), Block { pos: 0, len: 512 });
        assert_eq!(leading(100, 4096, 512), Block { pos: 100, len: 412 });
        assert_eq!(leading(4000, 4096, 512), Block { pos: 4000, len: 96 });
    }
}
