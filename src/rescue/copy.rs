//! The copying phase (ddrescue's `copy_non_tried`, `fcopy_non_tried`, `rcopy_non_tried`): up to
//! five passes over the non-tried areas in cluster-sized reads. Pass 1 skips ahead after an
//! error (the skip doubling up to the largest skip) or a slow read; passes 2 to 4 skip the rest of
//! the area at their first error; passes 3 and 4 read only areas next to rescued ones (those
//! skipped for slowness); pass 5 sweeps. The direction turns after each pass. A pass that found
//! nothing to read ends the phase.
//!
//! A map whose status line says "copying, pass N at P" resumes at pass N from P, as ddrescue does.

use super::chunk::{find_chunk, rfind_chunk};
use super::rescuer::{Rescuer, Stop};
use crate::map::{Phase, Status};

/// Whether a pass read something (another pass follows) or found nothing (the phase is done).
enum PassEnd {
    Found,
    Nothing,
}

/// Runs the copying passes.
pub(super) fn copy_non_tried(r: &mut Rescuer) -> Result<(), Stop> {
    let (current_pos, status, current_pass) = r.status_line();
    let mut resume = status == Phase::NonTried;
    let first_pass = if !resume || current_pass > 5 {
        1
    } else {
        current_pass.max(1)
    };
    let mut forward = !r.opts.reverse;
    for pass in 1..=5 {
        if pass >= first_pass {
            if pass != first_pass {
                resume = false;
            }
            let from = resume.then_some(current_pos);
            let end = if forward {
                fcopy(r, pass, from)?
            } else {
                rcopy(r, pass, from)?
            };
            if let PassEnd::Nothing = end {
                return Ok(());
            }
        }
        if pass >= 2 {
            // The minimum rate applies to passes 1 and 2 only.
            r.min_read_rate = None;
        }
        forward = !forward;
    }
    Ok(())
}

/// The next skip after an error: the current one, which then doubles up to the largest.
fn grow(skip: &mut u64, max: u64) -> u64 {
    let now = *skip;
    *skip = if *skip <= max / 2 { *skip * 2 } else { max };
    now
}

/// The slow-read skip: starts at the current rate (at least the initial skip), doubles while
/// reads stay slow.
fn slow_skip(r: &Rescuer, sskip: &mut u64) -> u64 {
    if !r.prev_slow() {
        *sskip = r.skip.max(r.current_rate().min(r.max_skip));
    } else {
        grow(sskip, r.max_skip);
    }
    *sskip
}

fn fcopy(r: &mut Rescuer, pass: u32, resume_at: Option<u64>) -> Result<PassEnd, Stop> {
    let mut pos = 0;
    let mut eskip = r.skip;
    let mut sskip = 0;
    let after_finished = pass == 3 || pass == 4;
    let mut found_any = false;
    if let Some(at) = resume_at {
        let f = r
            .engine
            .with_map(|m| find_chunk(&m.map, at, 1, Status::NonTried, r.sector, false));
        if let Some(b) = f.block {
            pos = b.pos;
        }
    }
    loop {
        let cluster = r.cluster;
        let f = r.engine.with_map(|m| {
            find_chunk(
                &m.map,
                pos,
                cluster,
                Status::NonTried,
                cluster,
                after_finished,
            )
        });
        found_any |= f.seen;
        let Some(b) = f.block else { break };
        if pos != b.pos {
            eskip = r.skip;
            r.reset_slow();
        }
        pos = b.end();
        let got = r.read_block(b, Phase::NonTried, pass, true)?;
        let slow = r.update_rates();
        if got.failed > 0 || (slow && pass <= 2) {
            r.reopen()?;
            if r.skip > 0 && pass <= 4 {
                let len = if pass >= 2 {
                    u64::MAX - pos
                } else if got.failed > 0 {
                    grow(&mut eskip, r.max_skip)
                } else {
                    slow_skip(r, &mut sskip)
                };
                let sector = r.sector;
                let s = r
                    .engine
                    .with_map(|m| find_chunk(&m.map, pos, len, Status::NonTried, sector, false));
                if let Some(skipped) = s.block.filter(|s| s.pos == pos) {
                    pos = skipped.end();
                }
            }
        } else if got.copied > 0 {
            eskip = r.skip;
        }
    }
    Ok(if found_any {
        PassEnd::Found
    } else {
        PassEnd::Nothing
    })
}

fn rcopy(r: &mut Rescuer, pass: u32, resume_at: Option<u64>) -> Result<PassEnd, Stop> {
    let mut end = u64::MAX;
    let mut eskip = r.skip;
    let mut sskip = 0;
    let before_finished = pass == 3 || pass == 4;
    let mut found_any = false;
    if let Some(at) = resume_at.filter(|&at| at > 0) {
        let f = r
            .engine
            .with_map(|m| rfind_chunk(&m.map, at, 1, Status::NonTried, r.sector, false));
        if let Some(b) = f.block {
            end = b.end();
        }
    }
    while end > 0 {
        let cluster = r.cluster;
        let f = r.engine.with_map(|m| {
            rfind_chunk(
                &m.map,
                end,
                cluster,
                Status::NonTried,
                cluster,
                before_finished,
            )
        });
        found_any |= f.seen;
        let Some(b) = f.block else { break };
        if end != b.end() {
            eskip = r.skip;
            r.reset_slow();
        }
        end = b.pos;
        let got = r.read_block(b, Phase::NonTried, pass, false)?;
        let slow = r.update_rates();
        if (got.failed > 0 || (slow && pass <= 2)) && end > 0 {
            r.reopen()?;
            if r.skip > 0 && pass <= 4 {
                let len = if pass >= 2 {
                    end
                } else if got.failed > 0 {
                    grow(&mut eskip, r.max_skip)
                } else {
                    slow_skip(r, &mut sskip)
                };
                let sector = r.sector;
                let s = r
                    .engine
                    .with_map(|m| rfind_chunk(&m.map, end, len, Status::NonTried, sector, false));
                if let Some(skipped) = s.block.filter(|s| s.end() == end) {
                    end = skipped.pos;
                }
            }
        } else if got.failed == 0 && got.copied > 0 {
            eskip = r.skip;
        }
    }
    Ok(if found_any {
        PassEnd::Found
    } else {
        PassEnd::Nothing
    })
}

#[cfg(test)]
mod tests {
    use super::grow;

    #[test]
    fn the_error_skip_doubles_up_to_the_largest() {
        let mut s = 65536;
        let seen: Vec<u64> = (0..5).map(|_| grow(&mut s, 300_000)).collect();
        assert_eq!(seen, [65536, 131072, 262_144, 300_000, 300_000]);
    }
}
