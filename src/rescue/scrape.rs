//! The scraping phase (ddrescue's `scrape_errors`): every non-scraped block is read forwards, one
//! sector at a time; a sector that fails becomes bad. One pass, in block order (blocks taken
//! backwards with `--reverse`, each still read forwards).

use super::rescuer::{Rescuer, Stop};
use super::trim::{leading, next_run};
use crate::map::{Phase, Status};

pub(super) fn scrape_errors(r: &mut Rescuer) -> Result<(), Stop> {
    let reverse = r.opts.reverse;
    let sector = r.sector;
    let mut cursor = if reverse { u64::MAX } else { 0 };
    while let Some(run) = r
        .engine
        .with_map(|m| next_run(&m.map, cursor, Status::NonScraped, reverse))
    {
        cursor = if reverse { run.pos } else { run.end() };
        let mut pos = run.pos;
        while pos < run.end() {
            let b = leading(pos, run.end(), sector);
            pos = b.end();
            r.read_block(b, Phase::NonScraped, 1, true)?;
            r.update_rates();
        }
    }
    Ok(())
}
