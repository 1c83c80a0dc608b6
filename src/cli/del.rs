//! `blkcache del DEVICE|SOURCE...`: stop serving: the daemon saves the map, makes the image
//! durable and removes the device.
//!
//! Returns promptly even while the device is mounted: SIGTERM to the daemon, then
//! `del_dev_async` (ublk) or `NBD_DISCONNECT` (nbd) if the device is still there; never waits
//! for an unmount.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use blkcache::nbd::kernel;
use blkcache::ublk::{self, Removal};

/// How long the daemon gets to save and stop before the device is removed without it.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Arguments of `blkcache del`.
#[derive(Debug, clap::Args)]
pub struct DelArgs {
    /// /dev/ublkbN, ublkbN, N, /dev/nbdN, nbdN, the source, or the cache directory.
    #[arg(required = true, value_name = "DEVICE|SOURCE")]
    pub devices: Vec<String>,
}

pub fn run(args: DelArgs) -> anyhow::Result<ExitCode> {
    let devices = ublk::list();
    let nbds = kernel::list();
    let mut failed = 0;
    for spec in &args.devices {
        if let Some(dev) = kernel::resolve(&nbds, spec) {
            match kernel::remove(dev, STOP_WAIT) {
                Ok(true) => println!(
                    "removed {} (map saved in {})",
                    dev.path().display(),
                    dev.config.cache().display()
                ),
                Ok(false) => println!(
                    "removed {} (its daemon was not running or did not stop; the map in {} is as last saved)",
                    dev.path().display(),
                    dev.config.cache().display()
                ),
                Err(e) => {
                    eprintln!("blkcache: error: {e:#}");
                    failed += 1;
                }
            }
            continue;
        }
        let Some(dev) = ublk::resolve(&devices, spec) else {
            eprintln!("blkcache: error: no blkcache device for {spec} (see blkcache list)");
            failed += 1;
            continue;
        };
        match ublk::remove(dev, STOP_WAIT) {
            Ok(Removal::DaemonStopped) => println!(
                "removed {} (map saved in {})",
                dev.path().display(),
                dev.config.cache().display()
            ),
            Ok(Removal::Removed) => println!(
                "removed {} (its daemon was not running or did not stop; the map in {} is as last saved)",
                dev.path().display(),
                dev.config.cache().display()
            ),
            Err(e) => {
                eprintln!("blkcache: error: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} devices not removed", args.devices.len());
    }
    Ok(ExitCode::SUCCESS)
}
