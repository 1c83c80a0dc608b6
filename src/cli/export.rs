//! `blkcache export CACHE|DEVICE -o IMAGE`: the cache's image as a plain file, with its md5, sha1,
//! sha256 and crc32 and the sidecar files `md5sum -c` and its siblings check. The work is in
//! `blkcache::rescue::export`; this file parses arguments and prints. A cache a daemon serves is
//! exported as the daemon's engine holds its map now (its `+` bytes are in the image and never
//! written again), not as the last save left it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use blkcache::cache::Cache;

use super::progress::BytesProgress;
use super::target;
use blkcache::control;
use blkcache::map::{self, Mapfile};
use blkcache::rescue::export::{self, Checksums, Unread};

/// Write a cache's image to a file with its md5, sha1, sha256 and crc32
///
/// Writes IMAGE and IMAGE.md5, IMAGE.sha1, IMAGE.sha256 (checked by `md5sum -c IMAGE.md5` and
/// so on) and prints the four checksums (crc32 as 8 hex digits). An incomplete image is refused
/// unless --allow-incomplete, which fills the bytes not rescued with zeros or with a marker in
/// every such sector (--fill) and writes the map beside the image (IMAGE.map).
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The cache directory, or a blkcache device (`/dev/ublkbN`, `/dev/nbdN`, `/dev/blkcache/srN`)
    /// serving one.
    pub cache: PathBuf,
    /// The image file to write (must not exist).
    #[arg(short, long, value_name = "IMAGE")]
    pub output: PathBuf,
    /// Export an incomplete image, unread bytes filled as --fill says.
    #[arg(long)]
    pub allow_incomplete: bool,
    /// What unread bytes become with --allow-incomplete.
    #[arg(long, value_enum, default_value_t = FillWith::Marker, requires = "allow_incomplete")]
    pub fill: FillWith,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--fill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FillWith {
    /// Zeros (holes in the file).
    Zero,
    /// A text marker in every unread sector naming its offset.
    Marker,
}

#[derive(Debug, Serialize)]
struct Printed {
    image: PathBuf,
    size: u64,
    complete: bool,
    unread: u64,
    #[serde(flatten)]
    sums: Checksums,
    map: Option<PathBuf>,
}

/// How long `export` waits for a serving daemon's map.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// The cache's map: the serving daemon's as it is now, else the saved one.
fn current_map(cache: &Cache) -> anyhow::Result<Mapfile> {
    let dir = cache.dir();
    match control::connect(dir)? {
        Some(mut daemon) => {
            let live = daemon
                .status(ASK_TIMEOUT)
                .with_context(|| format!("the daemon serving {} did not answer", dir.display()))?;
            Ok(map::parse(&live.mapfile, &cache.mapfile_path())?)
        }
        None => Ok(cache.load_mapfile()?),
    }
}

/// The cache directory `arg` names: itself, or the cache of the blkcache device it is.
fn cache_dir(arg: &Path) -> anyhow::Result<PathBuf> {
    if arg.is_dir() {
        return Ok(arg.to_owned());
    }
    match target::resolve(arg)?.cache {
        Some(dir) => Ok(dir),
        None => bail!(
            "{} is neither a cache directory nor a blkcache device (`blkcache list` shows them)",
            arg.display()
        ),
    }
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let cache = Cache::open(&cache_dir(&args.cache)?)?;
    let m = current_map(&cache)?;
    let unread = match (args.allow_incomplete, args.fill) {
        (false, _) => Unread::Refuse,
        (true, FillWith::Zero) => Unread::Zero,
        (true, FillWith::Marker) => Unread::Marker,
    };
    let mut shown = BytesProgress::new("export", m.map.size());
    let done = export::export(
        &cache.image_path(),
        &m.map,
        u64::from(cache.meta().sector_size),
        &args.output,
        unread,
        &mut |done| shown.set(done),
    );
    shown.finish();
    let done = done?;
    export::write_sidecars(&args.output, &done.sums)?;
    let map_path = if done.unread > 0 {
        let mut p = args.output.as_os_str().to_owned();
        p.push(".map");
        let p = PathBuf::from(p);
        map::save(&p, &m)
            .with_context(|| format!("cannot write the map beside {}", args.output.display()))?;
        Some(p)
    } else {
        None
    };
    let printed = Printed {
        image: args.output.clone(),
        size: done.size,
        complete: done.unread == 0,
        unread: done.unread,
        sums: done.sums,
        map: map_path,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&printed)?)?;
    } else {
        let s = &printed.sums;
        writeln!(
            out,
            "{} ({} bytes{})",
            printed.image.display(),
            printed.size,
            if printed.complete {
                String::new()
            } else {
                format!(", {} bytes NOT rescued, filled", printed.unread)
            }
        )?;
        writeln!(
            out,
            "  md5     {}\n  sha1    {}\n  sha256  {}\n  crc32   {}",
            s.md5, s.sha1, s.sha256, s.crc32
        )?;
        if let Some(p) = &printed.map {
            writeln!(out, "  map     {}", p.display())?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
