//! `blkcache recover [DEVICE]`: re-attach a daemon to a device whose daemon died (kill -9, a
//! crash), so that a mounted file system keeps working (ublk user recovery).
//!
//! The new daemon rebuilds the same engine from the configuration kept in the device's libublk
//! json and re-opens the device with START_USER_RECOVERY. Must never touch a device whose daemon
//! is alive.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{anyhow, bail};

use blkcache::ublk::{self, Device};

use super::add::{serve_foreground, spawn_daemon, ServeOptions};

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
    /// Internal: report readiness on this descriptor.
    #[arg(long, hide = true, value_name = "FD")]
    pub ready_fd: Option<i32>,
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
        return serve_foreground(
            &ServeOptions::from_config(&dev.config),
            Some(dev.id),
            args.ready_fd,
            false,
        );
    }
    if targets.is_empty() {
        println!("no blkcache device needs recovery");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for dev in targets {
        let mut child: Vec<OsString> = vec!["recover".into()];
        for _ in 0..verbose {
            child.push("-v".into());
        }
        child.push(dev.id.to_string().into());
        match spawn_daemon(child, &dev.config.log) {
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
