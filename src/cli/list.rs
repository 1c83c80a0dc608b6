//! `blkcache list [--json]`: the blkcache devices, their source, cache, share cached and state.
//!
//! The share cached comes from the saved mapfile, so it lags the daemon by up to one save
//! interval; the cache state (ok, full, failed) from what the daemon publishes, within a second;
//! the drives that read the disc from the cache's metadata (`cache::DriveRecord`).
//! Must never list devices of other ublk targets.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use blkcache::cache::{Cache, DriveRecord};
use blkcache::engine::CacheHealth;
use blkcache::map::Status;
use blkcache::nbd::kernel::{self, KernelDevice};
use blkcache::service::published_health;
use blkcache::ublk::{self, Device};

/// Arguments of `blkcache list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One device, as `list --json` prints it.
#[derive(Debug, Serialize)]
struct Row {
    device: String,
    id: u32,
    /// `null` when served offline.
    source: Option<String>,
    cache: String,
    size: u64,
    sector_size: u32,
    /// Kernel state: live, quiesced, dead, fail_io, unknown (nbd: live, dead, disconnected).
    state: &'static str,
    pid: i32,
    daemon_running: bool,
    /// The daemon is gone but the device is still there: `blkcache recover` re-attaches one.
    needs_recovery: bool,
    /// What readers get for a bad sector: "eio" or "zero".
    on_bad_sector: blkcache::engine::OnBadSector,
    /// Bytes marked `+` in the saved mapfile (`null` if it cannot be read).
    cached_bytes: Option<u64>,
    percent_cached: Option<f64>,
    /// ok, full (the cache's disk is full: reads go on uncached), failed (the cache's disk lost
    /// data: reads go on uncached until `del` and `add`); `null` without a daemon.
    cache_state: Option<&'static str>,
    /// Why the cache is full or failed.
    cache_error: Option<String>,
    log: String,
    /// The kernel driver: ublk or nbd.
    kind: &'static str,
    /// Every drive (or file) that read the disc, oldest first.
    drives: Vec<DriveRecord>,
}

/// Bytes cached as of the last map save, their share of `size`, and the drives that read it.
fn cached(cache: &std::path::Path, size: u64) -> (Option<u64>, Option<f64>, Vec<DriveRecord>) {
    let cache = Cache::open(cache).ok();
    let drives = cache
        .as_ref()
        .map(|c| c.meta().drives.clone())
        .unwrap_or_default();
    let cached = cache
        .and_then(|c| c.load_mapfile().ok())
        .map(|m| m.map.stats().get(Status::Finished).bytes);
    let percent = cached.map(|c| {
        if size == 0 {
            100.0
        } else {
            (c as f64 * 1000.0 / size as f64).round() / 10.0
        }
    });
    (cached, percent, drives)
}

fn row(d: &Device) -> Row {
    let (cached, percent, drives) = cached(d.config.cache(), d.config.size);
    let health = d
        .daemon_alive
        .then(|| published_health(&ublk::health_path(d.id), d.pid))
        .flatten();
    Row {
        device: d.path().display().to_string(),
        kind: "ublk",
        id: d.id,
        source: d.config.source().map(|s| s.display().to_string()),
        cache: d.config.cache().display().to_string(),
        size: d.config.size,
        sector_size: d.config.sector_size,
        state: d.state.as_str(),
        pid: d.pid,
        daemon_running: d.daemon_alive,
        needs_recovery: d.needs_recovery(),
        on_bad_sector: d.config.serve.on_bad_sector,
        cached_bytes: cached,
        percent_cached: percent,
        cache_state: health.as_ref().map(CacheHealth::as_str),
        cache_error: health.and_then(cache_error),
        log: d.config.log.display().to_string(),
        drives,
    }
}

/// Why the cache is full or failed.
fn cache_error(health: CacheHealth) -> Option<String> {
    match health {
        CacheHealth::Full { error } | CacheHealth::Failed { error } => Some(error),
        _ => None,
    }
}

fn nbd_row(d: &KernelDevice) -> Row {
    let (cached, percent, drives) = cached(d.config.cache(), d.config.size);
    let health = d
        .daemon_alive
        .then(|| published_health(&kernel::health_path(d.index), d.config.pid))
        .flatten();
    Row {
        device: d.path().display().to_string(),
        kind: "nbd",
        id: d.index,
        source: d.config.source().map(|s| s.display().to_string()),
        cache: d.config.cache().display().to_string(),
        size: d.config.size,
        sector_size: d.config.sector_size,
        state: match (d.connected, d.daemon_alive) {
            (true, true) => "live",
            // Its daemon was killed and something (a mount) holds it: reads fail; `del` it.
            (true, false) => "dead",
            (false, _) => "disconnected",
        },
        pid: d.config.pid,
        daemon_running: d.daemon_alive,
        needs_recovery: false,
        cached_bytes: cached,
        percent_cached: percent,
        on_bad_sector: d.config.serve.on_bad_sector,
        cache_state: health.as_ref().map(CacheHealth::as_str),
        cache_error: health.and_then(cache_error),
        log: d.config.log.display().to_string(),
        drives,
    }
}

/// Every blkcache device (ublk and nbd) with its source (`None` offline) and the cache it
/// serves: what `status DEVICE` and `fill DEVICE` look up.
pub(super) fn device_caches() -> Vec<(PathBuf, Option<PathBuf>, PathBuf)> {
    let ublk = ublk::list().into_iter().map(|d| {
        let source = d.config.source().map(Path::to_path_buf);
        (d.path(), source, d.config.cache().to_path_buf())
    });
    let nbd = kernel::list().into_iter().map(|d| {
        let source = d.config.source().map(Path::to_path_buf);
        (d.path(), source, d.config.cache().to_path_buf())
    });
    ublk.chain(nbd).collect()
}

pub fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut rows: Vec<Row> = ublk::list().iter().map(row).collect();
    rows.extend(kernel::list().iter().map(nbd_row));
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no blkcache devices")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<14} {:<5} {:<22} {:>7} {:>12} {:<30} CACHE",
        "DEVICE", "KIND", "STATE", "CACHED", "SIZE", "SOURCE"
    )?;
    for r in &rows {
        let mut state = match r.cache_state {
            _ if r.needs_recovery => format!("{} (no daemon)", r.state),
            Some(cache @ ("full" | "failed")) => format!("{} (cache {cache})", r.state),
            _ => r.state.to_string(),
        };
        if r.on_bad_sector == blkcache::engine::OnBadSector::Zero {
            state.push_str(", bad=zero");
        }
        let cached = r
            .percent_cached
            .map_or_else(|| "?".to_string(), |p| format!("{p:.1}%"));
        writeln!(
            out,
            "{:<14} {:<5} {:<22} {:>7} {:>12} {:<30} {}",
            r.device,
            r.kind,
            state,
            cached,
            r.size,
            r.source.as_deref().unwrap_or("(offline)"),
            r.cache
        )?;
        for d in &r.drives {
            writeln!(out, "{:<14} read by {}", "", d.describe())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
