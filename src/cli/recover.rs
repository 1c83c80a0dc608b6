//! `blkcache recover [DEVICE]`: re-attach a daemon to a device whose daemon died (kill -9, a
//! crash), so that a mounted file system keeps working (ublk user recovery).
//!
//! The new daemon serves the same `ServeConfig` again, as kept in the device's libublk json and re-opens the device with START_USER_RECOVERY. Must never touch a device whose daemon
//! is alive.

use std::process::ExitCode;

use anyhow::{anyhow, bail};

use blkcache::ublk::{self, Device};

use super::daemon::{serve_here, spawn};

/// Arguments of `blkcache recover`.
#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// The device (/dev/ublkbN, ublkbN, N, its source or cache); default: every device whose
    /// daemon is gone.
    #[arg(value_name = "DEVICE")]
    pub device: Option<String>,
    /// Serve in this process instead of starting a daemon.
    #[arg(long)]
    pub foreground: bool,
}

pub fn run(args: RecoverArgs, verbose: u8) -> anyhow::Result<ExitCode> {
    let devices = ublk::list();
    let targets: Vec<&Device> = match &args.device {
        Some(spec) => {
            let dev = ublk::resolve(&devices, spec)
                .ok_or_else(|| anyhow!("no blkcache device for {spec} (see blkcache list)"))?;
            if dev.daemon_alive {
                bail!(
                    "{} is served by daemon {}: nothing to recover",
                    dev.path().display(),
                    dev.pid
                );
            }
            if !dev.needs_recovery() {
                bail!(
                    "{} is {}: it cannot be recovered",
                    dev.path().display(),
                    dev.state.as_str()
                );
            }
            vec![dev]
        }
        None => devices.iter().filter(|d| d.needs_recovery()).collect(),
    };
    if args.foreground {
        let [dev] = targets.as_slice() else {
            bail!("recover --foreground needs one DEVICE");
        };
        return serve_here(&dev.config.serve, Some(dev.id), false, false)
            .map(|_| ExitCode::SUCCESS);
    }
    if targets.is_empty() {
        println!("no blkcache device needs recovery");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for dev in targets {
        match spawn(&dev.config.serve, Some(dev.id), verbose) {
            Ok(added) => println!("recovered {}", added.device),
            Err(e) => {
                eprintln!(
                    "blkcache: error: cannot recover {}: {e:#}",
                    dev.path().display()
                );
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} devices not recovered");
    }
    Ok(ExitCode::SUCCESS)
}
