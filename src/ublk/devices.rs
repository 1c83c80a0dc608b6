//! The blkcache devices that exist now: found through `/sys/class/ublk-char` and libublk's
//! per-device json, their kernel state, their daemon; and removing one.
//!
//! Must never touch devices of other ublk targets, and never block on a mounted device (removal
//! is SIGTERM to the daemon, then `del_dev_async`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libublk::ctrl::UblkCtrl;
use libublk::sys;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use super::config::{from_device_json, json_path, DeviceConfig};

const UBLK_CHAR_CLASS: &str = "/sys/class/ublk-char";

/// The kernel's state of a ublk device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    /// Served by a live daemon.
    Live,
    /// The daemon died; I/O is held until `blkcache recover` (or fails after `del`).
    Quiesced,
    /// Stopped.
    Dead,
    /// The daemon died and I/O fails (UBLK_F_USER_RECOVERY_FAIL_IO).
    FailIo,
    /// Could not be read.
    Unknown,
}

impl DeviceState {
    fn from_kernel(state: u16) -> DeviceState {
        match u32::from(state) {
            sys::UBLK_S_DEV_LIVE => DeviceState::Live,
            sys::UBLK_S_DEV_QUIESCED => DeviceState::Quiesced,
            sys::UBLK_S_DEV_DEAD => DeviceState::Dead,
            sys::UBLK_S_DEV_FAIL_IO => DeviceState::FailIo,
            _ => DeviceState::Unknown,
        }
    }

    /// Lower-case name, as `list` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Live => "live",
            DeviceState::Quiesced => "quiesced",
            DeviceState::Dead => "dead",
            DeviceState::FailIo => "fail_io",
            DeviceState::Unknown => "unknown",
        }
    }
}

/// One blkcache device.
#[derive(Debug, Clone)]
pub struct Device {
    /// ublk device id (N of /dev/ublkbN).
    pub id: u32,
    /// What it serves.
    pub config: DeviceConfig,
    /// The kernel's state.
    pub state: DeviceState,
    /// The daemon's pid: the kernel's (`ublksrv_pid`, updated by recovery), else the config's.
    pub pid: i32,
    /// Whether that daemon is running.
    pub daemon_alive: bool,
}

impl Device {
    /// The block device path.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/ublkb{}", self.id))
    }

    /// Whether it needs `blkcache recover`: its daemon is gone but the device is still there.
    pub fn needs_recovery(&self) -> bool {
        !self.daemon_alive && matches!(self.state, DeviceState::Quiesced | DeviceState::Live)
    }
}

/// Ids of every ublk device, of any target, in order.
fn device_ids() -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(UBLK_CHAR_CLASS)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("ublkc"))
                        .and_then(|n| n.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Whether `pid` is a running blkcache process (not just any process that got the pid again).
pub fn daemon_alive(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z after the command name) is dead for our purposes.
    let zombie = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    !zombie
        && cmdline
            .split(|&b| b == 0)
            .next()
            .is_some_and(|arg0| String::from_utf8_lossy(arg0).contains("blkcache"))
}

/// The blkcache devices that exist now.
pub fn list() -> Vec<Device> {
    device_ids().into_iter().filter_map(device).collect()
}

/// Device `id`, if it exists and is blkcache's.
pub fn device(id: u32) -> Option<Device> {
    let text = std::fs::read_to_string(json_path(id)).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let config = from_device_json(&json)?;
    let (state, kernel_pid) = match UblkCtrl::new_simple(i32::try_from(id).ok()?) {
        Ok(c) => {
            let info = c.dev_info();
            (DeviceState::from_kernel(info.state), info.ublksrv_pid)
        }
        Err(_) => (DeviceState::Unknown, -1),
    };
    // The json's pid is the first daemon's: libublk keeps target data as it was on recovery.
    let pid = if kernel_pid > 0 {
        kernel_pid
    } else {
        config.pid
    };
    Some(Device {
        id,
        pid,
        daemon_alive: daemon_alive(pid),
        config,
        state,
    })
}

/// The device `spec` names: `/dev/ublkbN`, `ublkbN`, `N`, its source or its cache directory.
pub fn resolve<'a>(devices: &'a [Device], spec: &str) -> Option<&'a Device> {
    let name = spec.strip_prefix("/dev/").unwrap_or(spec);
    let number = name.strip_prefix("ublkb").unwrap_or(name);
    if let Ok(id) = number.parse::<u32>() {
        if let Some(d) = devices.iter().find(|d| d.id == id) {
            return Some(d);
        }
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let want = canon(Path::new(spec));
    devices.iter().find(|d| {
        d.config.source().map(canon).as_deref() == Some(want.as_path())
            || canon(d.config.cache()) == want
    })
}

/// How a removal went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The daemon saved the map, stopped and removed the device.
    DaemonStopped,
    /// The daemon did not stop in time (or was not running): the device was removed directly;
    /// the map is as the daemon last saved it.
    Removed,
}

/// Removes `dev`: SIGTERM to its daemon (which saves the map and removes the device), then, if
/// the device is still there after `wait`, `del_dev_async`. Never blocks on a mounted device.
pub fn remove(dev: &Device, wait: Duration) -> Result<Removal, RemoveError> {
    let mut outcome = Removal::Removed;
    if dev.daemon_alive {
        kill(Pid::from_raw(dev.pid), Signal::SIGTERM).map_err(|source| RemoveError::Signal {
            pid: dev.pid,
            source,
        })?;
        let deadline = Instant::now() + wait;
        while daemon_alive(dev.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !daemon_alive(dev.pid) {
            outcome = Removal::DaemonStopped;
        }
    }
    if Path::new(UBLK_CHAR_CLASS)
        .join(format!("ublkc{}", dev.id))
        .exists()
    {
        let ctrl = UblkCtrl::new_simple(i32::try_from(dev.id).unwrap_or(i32::MAX))
            .map_err(|error| RemoveError::Ublk { id: dev.id, error })?;
        if let Err(error) = ctrl.del_dev_async() {
            // The daemon may have removed it in the meantime.
            if device_ids().contains(&dev.id) {
                return Err(RemoveError::Ublk { id: dev.id, error });
            }
        }
    }
    Ok(outcome)
}

/// Errors of removing a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoveError {
    /// The daemon could not be signalled.
    #[error("cannot signal daemon {pid}")]
    Signal {
        /// Its pid.
        pid: i32,
        /// The OS error.
        #[source]
        source: nix::errno::Errno,
    },
    /// The ublk driver refused (its errno spelled out: libublk's own text says little).
    #[error("cannot remove /dev/ublkb{id}: {}", super::daemon::errno_text(.error))]
    Ublk {
        /// Device id.
        id: u32,
        /// libublk's error.
        error: libublk::UblkError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: u32, source: &str, cache: &str) -> Device {
        Device {
            id,
            config: DeviceConfig {
                serve: crate::serve::ServeConfig {
                    source: Some(source.into()),
                    cache: Some(cache.into()),
                    depth: 8,
                    ..Default::default()
                },
                size: 4096,
                sector_size: 2048,
                io_buf_bytes: 1 << 19,
                pid: 0,
                log: "/nonexistent/log".into(),
            },
            state: DeviceState::Live,
            pid: 0,
            daemon_alive: false,
        }
    }

    #[test]
    fn resolve_by_path_name_id_source_or_cache() {
        let devs = [
            dev(0, "/nonexistent/sr0", "/nonexistent/c0"),
            dev(3, "/nonexistent/sr1", "/nonexistent/c3"),
        ];
        assert_eq!(resolve(&devs, "/dev/ublkb3").map(|d| d.id), Some(3));
        assert_eq!(resolve(&devs, "ublkb3").map(|d| d.id), Some(3));
        assert_eq!(resolve(&devs, "0").map(|d| d.id), Some(0));
        assert_eq!(resolve(&devs, "/nonexistent/sr1").map(|d| d.id), Some(3));
        assert_eq!(resolve(&devs, "/nonexistent/c0").map(|d| d.id), Some(0));
        assert!(resolve(&devs, "/dev/ublkb7").is_none());
        assert!(resolve(&devs, "/nonexistent/other").is_none());
    }

    #[test]
    fn needs_recovery_only_without_daemon() {
        let mut d = dev(0, "/s", "/c");
        d.state = DeviceState::Quiesced;
        assert!(d.needs_recovery());
        d.daemon_alive = true;
        assert!(!d.needs_recovery());
        d.daemon_alive = false;
        d.state = DeviceState::Dead;
        assert!(!d.needs_recovery());
    }

    #[test]
    fn daemon_alive_rejects_other_processes() {
        assert!(!daemon_alive(0));
        assert!(!daemon_alive(-5));
        // This test binary is `blkcache-<hash>`, so it counts as ours; pid 1 is not blkcache.
        assert!(daemon_alive(std::process::id() as i32));
        assert!(!daemon_alive(1));
    }
}
