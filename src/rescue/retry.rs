//! The retrying phase (ddrescue's `copy_errors`): `--retries N` passes (-1: until none is left)
//! reading each bad sector once per pass, the direction turning after each pass. A map saved
//! while retrying resumes at its pass and position; the pass's parity gives the direction.

use super::chunk::{find_chunk, rfind_chunk};
use super::rescuer::{Rescuer, Stop};
use crate::map::{Phase, Status};

pub(super) fn copy_errors(r: &mut Rescuer) -> Result<(), Stop> {
    let (current_pos, status, current_pass) = r.status_line();
    let mut resume = status == Phase::BadSector;
    let first_pass = if !resume || current_pass % 2 == 1 {
        1
    } else {
        2
    };
    let mut forward = !r.opts.reverse;
    if first_pass == 2 {
        forward = !forward;
    }
    let retries = r.opts.retries;
    let mut pass = first_pass;
    while retries < 0 || i64::from(pass - first_pass + 1) <= retries {
        let from = resume.then_some(current_pos);
        let found = if forward {
            fcopy_errors(r, pass, from)?
        } else {
            rcopy_errors(r, pass, from)?
        };
        if !found {
            return Ok(());
        }
        resume = false;
        forward = !forward;
        pass += 1;
    }
    Ok(())
}

fn fcopy_errors(r: &mut Rescuer, pass: u32, resume_at: Option<u64>) -> Result<bool, Stop> {
    let sector = r.sector;
    let mut pos = 0;
    if let Some(at) = resume_at {
        let f = r
            .engine
            .with_map(|m| find_chunk(&m.map, at, 1, Status::BadSector, sector, false));
        if let Some(b) = f.block {
            pos = b.pos;
        }
    }
    let mut found = false;
    loop {
        let f = r
            .engine
            .with_map(|m| find_chunk(&m.map, pos, sector, Status::BadSector, sector, false));
        let Some(b) = f.block else { break };
        pos = b.end();
        found = true;
        r.read_block(b, Phase::BadSector, pass, true)?;
        r.update_rates();
    }
    Ok(found)
}

fn rcopy_errors(r: &mut Rescuer, pass: u32, resume_at: Option<u64>) -> Result<bool, Stop> {
    let sector = r.sector;
    let mut end = u64::MAX;
    if let Some(at) = resume_at.filter(|&at| at > 0) {
        let f = r
            .engine
            .with_map(|m| rfind_chunk(&m.map, at, 1, Status::BadSector, sector, false));
        if let Some(b) = f.block {
            end = b.end();
        }
    }
    let mut found = false;
    while end > 0 {
        let f = r
            .engine
            .with_map(|m| rfind_chunk(&m.map, end, sector, Status::BadSector, sector, false));
        let Some(b) = f.block else { break };
        end = b.pos;
        found = true;
        r.read_block(b, Phase::BadSector, pass, false)?;
        r.update_rates();
    }
    Ok(found)
}
