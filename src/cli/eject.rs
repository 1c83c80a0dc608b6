//! `blkcache eject sr0|/dev/sr0|/dev/ublkbN|/dev/nbdN`: stop serving the drive (the daemon saves
//! the map and removes or disconnects the device; readers still holding it get I/O errors), then
//! eject its disc.
//!
//! Under systemd the daemon is blkcache@srN.service's: it ends as a success on the SIGTERM.
//! Must never eject while the daemon still holds the drive (the kernel would refuse anyway).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use blkcache::media;
use blkcache::nbd::kernel;
use blkcache::ublk::{self, Removal};

/// How long the daemon gets to save and stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// How long the drive may stay busy after the daemon stopped (its last close, udev's probes).
const BUSY_WAIT: Duration = Duration::from_secs(10);

/// Arguments of `blkcache eject`.
#[derive(Debug, clap::Args)]
pub struct EjectArgs {
    /// The drive (sr0, /dev/sr0) or the blkcache device serving it (/dev/ublkbN, /dev/nbdN).
    #[arg(value_name = "DRIVE|DEVICE")]
    pub target: String,
}

pub fn run(args: EjectArgs) -> anyhow::Result<ExitCode> {
    let spec = bare_drive(&args.target).unwrap_or_else(|| args.target.clone());
    let devices = ublk::list();
    let nbds = kernel::list();
    let drive = if let Some(dev) = ublk::resolve(&devices, &spec) {
        let source = served_drive(&dev.path(), dev.config.source(), dev.config.cache())?;
        let stopped = ublk::remove(dev, STOP_WAIT)? == Removal::DaemonStopped;
        stopped_serving(&source, &dev.path(), dev.config.cache(), stopped);
        source
    } else if let Some(dev) = kernel::resolve(&nbds, &spec) {
        let source = served_drive(&dev.path(), dev.config.source(), dev.config.cache())?;
        let stopped = kernel::remove(dev, STOP_WAIT)?;
        stopped_serving(&source, &dev.path(), dev.config.cache(), stopped);
        source
    } else if spec.starts_with("/dev/ublkb") || spec.starts_with("/dev/nbd") {
        bail!("no blkcache device {spec} (see blkcache list)")
    } else {
        PathBuf::from(&spec)
    };
    eject_when_free(&drive)?;
    println!("ejected {}", drive.display());
    Ok(ExitCode::SUCCESS)
}

/// The drive `device` serves; an error when it serves a cache offline (no drive).
fn served_drive(device: &Path, source: Option<&Path>, cache: &Path) -> anyhow::Result<PathBuf> {
    source.map(Path::to_path_buf).with_context(|| {
        format!(
            "{} serves the cache {} offline: there is no drive to eject",
            device.display(),
            cache.display()
        )
    })
}

/// What stopping `device`, which served `source`, did; `stopped`: its daemon saved the map.
fn stopped_serving(source: &Path, device: &Path, cache: &Path, stopped: bool) {
    if stopped {
        println!(
            "stopped serving {} as {} (map saved in {})",
            source.display(),
            device.display(),
            cache.display()
        );
    } else {
        println!(
            "removed {} (its daemon was not running or did not stop; the map in {} is as last saved)",
            device.display(),
            cache.display()
        );
    }
}

/// `/dev/sr0` for `sr0`, when such a device exists.
fn bare_drive(name: &str) -> Option<String> {
    if name.contains('/') || name.starts_with("ublkb") || name.starts_with("nbd") {
        return None;
    }
    let path = format!("/dev/{name}");
    Path::new(&path).exists().then_some(path)
}

/// Ejects, retrying while the drive is still busy (EBUSY) for up to `BUSY_WAIT`.
fn eject_when_free(drive: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        match media::eject(drive) {
            Ok(()) => return Ok(()),
            Err(media::MediaError::Ioctl {
                source: nix::errno::Errno::EBUSY,
                ..
            }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot eject {} (another program may hold it open)",
                        drive.display()
                    )
                })
            }
        }
    }
}
