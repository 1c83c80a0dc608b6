//! `blkcache del DEVICE|SOURCE...`: stop serving: the daemon saves the map, makes the image
//! durable and removes the device.
//!
//! Returns promptly even while the device is mounted: SIGTERM to the daemon, then
//! `del_dev_async` (ublk) or `NBD_DISCONNECT` (nbd) if the device is still there; never waits
//! for an unmount.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use blkcache::nbd::kernel::{self, KernelDevice};
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

/// The nbd device `spec` names: `/dev/nbdN`, `nbdN`, its source or its cache directory.
fn resolve_nbd<'a>(devices: &'a [KernelDevice], spec: &str) -> Option<&'a KernelDevice> {
    let name = spec.strip_prefix("/dev/").unwrap_or(spec);
    if let Some(n) = name.strip_prefix("nbd").and_then(|n| n.parse::<u32>().ok()) {
        return devices.iter().find(|d| d.index == n);
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let want = canon(Path::new(spec));
    devices.iter().find(|d| {
        d.config.source().map(canon).as_deref() == Some(want.as_path())
            || canon(d.config.cache()) == want
    })
}

pub fn run(args: DelArgs) -> anyhow::Result<ExitCode> {
    let devices = ublk::list();
    let nbds = kernel::list();
    let mut failed = 0;
    for spec in &args.devices {
        if let Some(dev) = resolve_nbd(&nbds, spec) {
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
