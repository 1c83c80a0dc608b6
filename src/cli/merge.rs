//! `blkcache merge A B ... -o C`: caches of one disc read in different drives, combined into a
//! new cache C. The work is in `blkcache::rescue::merge`; this file checks the inputs belong to
//! one disc, creates C, saves its map and prints.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::Serialize;

use blkcache::cache::{size, Cache, SourceInfo, META_FILE};
use blkcache::image::Image;
use blkcache::map::{self, Mapfile, Phase, Status};
use blkcache::rescue::merge::{self, Conflict, Input};

/// Combine caches of the same disc read in different drives into a new cache
///
/// A sector is rescued in OUTPUT if it is rescued in any input (its bytes taken from there);
/// the others keep the first input's status, as `ddrescuelog --or-mapfile` does. Sectors two
/// inputs hold with different bytes are conflicts: listed, left non-tried in OUTPUT (a later
/// `fill` reads them again), and the exit status is 2. The inputs must be caches of the same
/// media (identity and sector size; sizes within the tolerance of drives that read one disc a
/// few sectors apart, OUTPUT then having the largest); they are only read.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The caches to merge (two or more).
    #[arg(required = true, num_args = 2..)]
    pub inputs: Vec<PathBuf>,
    /// The new cache directory to create.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Printed {
    output: PathBuf,
    size: u64,
    rescued: u64,
    taken: Vec<(PathBuf, u64)>,
    conflicts: Vec<Conflict>,
}

pub fn run(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let mut caches = Vec::new();
    for dir in &args.inputs {
        let cache = Cache::open(dir)?;
        let m = cache.load_mapfile()?;
        caches.push((cache, m));
    }
    let (first, _) = &caches[0];
    let want = first.meta().clone();
    for (c, _) in &caches[1..] {
        let m = c.meta();
        if (m.disc_identity(), m.sector_size) != (want.disc_identity(), want.sector_size) {
            bail!(
                "{} and {} are caches of different media (identity {} vs {}, sector size {} vs {}); only caches of the same disc can be merged",
                first.dir().display(),
                c.dir().display(),
                want.disc_identity(),
                m.disc_identity(),
                want.sector_size,
                m.sector_size
            );
        }
    }
    // Drives read one disc a few sectors apart: the largest size, if all are within the
    // tolerance (`cache::size`), as `add` does.
    let by_size = |c: &&(Cache, _)| c.0.meta().size;
    let (small, large) = (
        caches.iter().min_by_key(by_size).map(|c| &c.0),
        caches.iter().max_by_key(by_size).map(|c| &c.0),
    );
    let (Some(small), Some(large)) = (small, large) else {
        bail!("nothing to merge");
    };
    let Some(size) = size::reconcile(small.meta().size, large.meta().size, want.sector_size) else {
        bail!(
            "{} holds {} bytes and {} holds {} bytes, more than {} sectors apart, so they are not the same disc; only caches of the same disc can be merged",
            small.dir().display(),
            small.meta().size,
            large.dir().display(),
            large.meta().size,
            size::TOLERANCE_SECTORS
        );
    };
    if args.output.join(META_FILE).exists() {
        bail!(
            "{} is already a cache; merge writes a new one",
            args.output.display()
        );
    }
    let info = SourceInfo {
        path: want.source.clone(),
        size,
        sector_size: want.sector_size,
        identity: want.disc_identity().to_string(),
    };
    let (out, _) = Cache::open_or_create(&args.output, &info)?;
    let image = Image::open(&out.image_path())?;
    let images: Vec<PathBuf> = caches.iter().map(|(c, _)| c.image_path()).collect();
    let inputs: Vec<Input> = caches
        .iter()
        .zip(&images)
        .map(|((_, m), image)| Input { image, map: &m.map })
        .collect();
    let merged = merge::merge(&inputs, &image, u64::from(want.sector_size))?;
    let mut mapfile = out.load_mapfile()?;
    mapfile.map = merged.map.clone();
    if merged.map.stats().get(Status::Finished).bytes == size {
        mapfile.current_status = Phase::Finished;
    }
    // The image was synced by merge: now the map may claim its bytes.
    map::save(&out.mapfile_path(), &mapfile)
        .with_context(|| format!("cannot save {}", out.mapfile_path().display()))?;
    print(&args, &merged, &mapfile)?;
    Ok(if merged.conflicts.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn print(args: &MergeArgs, merged: &merge::Merged, m: &Mapfile) -> anyhow::Result<()> {
    let printed = Printed {
        output: args.output.clone(),
        size: m.map.size(),
        rescued: m.map.stats().get(Status::Finished).bytes,
        taken: args
            .inputs
            .iter()
            .cloned()
            .zip(merged.taken.iter().copied())
            .collect(),
        conflicts: merged.conflicts.clone(),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&printed)?)?;
    } else {
        writeln!(
            out,
            "{}: {} of {} bytes rescued",
            printed.output.display(),
            printed.rescued,
            printed.size
        )?;
        for (p, n) in &printed.taken {
            writeln!(out, "  {n} bytes from {}", p.display())?;
        }
    }
    out.flush()?;
    for c in &merged.conflicts {
        eprintln!(
            "blkcache: conflict: bytes {:#x}..{:#x} differ between {} and {}; left non-tried in {}",
            c.pos,
            c.pos + c.len,
            args.inputs[c.inputs.0].display(),
            args.inputs[c.inputs.1].display(),
            args.output.display()
        );
    }
    Ok(())
}
