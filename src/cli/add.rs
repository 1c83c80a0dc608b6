//! `blkcache add SOURCE`: serve SOURCE (a drive, disk or file) through its cache as `/dev/ublkbN`;
//! `add --offline CACHE` serves a cache with no source.
//!
//! Parses the arguments into one [`ServeConfig`] and hands it to a daemon (or, with
//! `--foreground`, serves it here; see `daemon.rs`), then prints the device.

use std::path::PathBuf;
use std::process::ExitCode;

use blkcache::serve::ServeConfig;

use super::daemon;

/// Arguments of `blkcache add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The source: an optical drive, a disk or a file. With --offline: the cache directory
    /// (ignored if --cache is given).
    pub source: PathBuf,
    #[command(flatten)]
    pub serve: ServeConfig,
    /// Serve in this process until stopped (SIGINT/SIGTERM), instead of starting a daemon.
    #[arg(long)]
    pub foreground: bool,
    /// With --foreground: end (exit status 3, map saved) as soon as the disc is swapped or ejected,
    /// and exit with status 4 if the drive holds no disc (for systemd: blkcache@.service).
    #[arg(long, requires = "foreground")]
    pub end_on_media_change: bool,
    /// Print a JSON object (device, source, cache, size, sector_size) instead of the device path.
    #[arg(long)]
    pub json: bool,
    /// Serve the cache without its source: sectors not in the cache fail with EIO.
    #[arg(long, conflicts_with_all = ["test_mode", "test_latency_ms"])]
    pub offline: bool,
}

pub fn run(args: AddArgs, verbose: u8) -> anyhow::Result<ExitCode> {
    let mut cfg = args.serve;
    if args.offline {
        cfg.cache = Some(cfg.cache.unwrap_or(args.source));
        cfg.source = None;
    } else {
        cfg.source = Some(args.source);
    }
    cfg.resolve()?;
    if args.foreground {
        if args.end_on_media_change {
            return daemon::serve_for_service_manager(&cfg, args.json);
        }
        return daemon::serve_here(&cfg, None, args.json, false).map(|_| ExitCode::SUCCESS);
    }
    let added = daemon::spawn(&cfg, None, verbose)?;
    added.print(args.json)?;
    Ok(ExitCode::SUCCESS)
}
