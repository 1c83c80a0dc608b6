//! `blkcache udev-env ublkbN|nbdN` (hidden): what a blkcache device serves, as udev's
//! `IMPORT{program}` reads it, so that `61-blkcache.rules` names it after its drive
//! (`/dev/blkcache/sr0`).
//!
//! Prints nothing for devices that are not blkcache's (other ublk targets, nbd devices of other
//! programs or not connected, an nbd device whose daemon was killed), and always exits 0: a udev
//! rule must never fail an event.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use blkcache::nbd::kernel;
use blkcache::ublk::{self, DeviceConfig};

/// Arguments of `blkcache udev-env`.
#[derive(Debug, clap::Args)]
pub struct UdevEnvArgs {
    /// The kernel name of the device (ublkbN or nbdN), as udev's %k gives it.
    pub device: String,
}

/// The KEY=value lines for one device: its source, the source's kernel name when it is a block
/// device in /dev (the stable name's last part), and its cache directory.
fn env_lines(config: &DeviceConfig) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(source) = config.source() {
        lines.push(format!("BLKCACHE_SOURCE={}", source.display()));
        if let Some(name) = drive_name(source) {
            lines.push(format!("BLKCACHE_DRIVE={name}"));
        }
    }
    lines.push(format!("BLKCACHE_CACHE={}", config.cache().display()));
    lines
}

/// `sr0` for `/dev/sr0`: sources directly in /dev with a plain name.
fn drive_name(source: &Path) -> Option<&str> {
    let name = source.strip_prefix("/dev").ok()?.to_str()?;
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    plain.then_some(name)
}

/// What the device named `name` serves, if it is blkcache's and served now.
fn served(name: &str) -> Option<DeviceConfig> {
    let name = name.strip_prefix("/dev/").unwrap_or(name);
    if let Some(n) = name.strip_prefix("ublkb") {
        return ublk::device(n.parse().ok()?).map(|d| d.config);
    }
    let d = kernel::device(name.strip_prefix("nbd")?.parse().ok()?)?;
    (d.connected && d.daemon_alive).then_some(d.config)
}

pub fn run(args: UdevEnvArgs) -> anyhow::Result<ExitCode> {
    let Some(config) = served(&args.device) else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut out = std::io::stdout().lock();
    for line in env_lines(&config) {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_names() {
        assert_eq!(drive_name(Path::new("/dev/sr0")), Some("sr0"));
        assert_eq!(drive_name(Path::new("/dev/sdb")), Some("sdb"));
        assert_eq!(drive_name(Path::new("/dev/disk/by-id/x")), None);
        assert_eq!(drive_name(Path::new("/tmp/disc.iso")), None);
        assert_eq!(drive_name(Path::new("/dev/a b")), None);
    }
}
