//! A kernel block device without ublk: the kernel's `nbd` driver attached to this process's
//! server over a socketpair, as `qemu-nbd -c` does (the ioctl interface: `NBD_SET_SOCK`, sizes,
//! flags, then `NBD_DO_IT` on a thread of its own until the device is disconnected). No
//! handshake: the kernel is told the size, block size and flags directly.
//!
//! Each attached device has a record, `/run/blkcache/nbdN.json` (what it serves, the daemon's
//! pid), for `list`, `del` and `blkcache udev-env`, and the cache health beside it
//! (`nbdN.health.json`, `crate::service`). Stopping sends `NBD_DISCONNECT` (the kernel then sends
//! `NBD_CMD_DISC`), so it never waits for a mounted filesystem. The kernel announces a connected
//! and a disconnected device with a change uevent (`/sys/block/nbdN/pid` exists while connected),
//! which is when udev names it after its drive; a device left connected by a killed daemon (a
//! mount holds it) is announced again by the next daemon, so that udev drops its name.
//!
//! Must never touch an nbd device another process has set up (`NBD_SET_SOCK` answers EBUSY and
//! the next one is tried), and never leave a caller waiting when the device does not start.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use crate::service::{notify, Ended, Keeper, Watch};
use crate::ublk::{daemon_alive, DeviceConfig};

use super::export::{EngineExport, Export};
use super::handshake::TRANSMISSION_FLAGS;
use super::transmission::serve_requests;
use super::{NbdError, Socket};

/// Where device records live.
pub const RUN_DIR: &str = "/run/blkcache";

type IoctlNum = nix::sys::ioctl::ioctl_num_type;

// <linux/nbd.h>: #define NBD_SET_SOCK _IO( 0xab, 0 ) ... each takes an unsigned long by value.
const NBD_SET_SOCK: IoctlNum = nix::request_code_none!(0xab, 0);
const NBD_SET_BLKSIZE: IoctlNum = nix::request_code_none!(0xab, 1);
const NBD_DO_IT: IoctlNum = nix::request_code_none!(0xab, 3);
const NBD_CLEAR_SOCK: IoctlNum = nix::request_code_none!(0xab, 4);
const NBD_CLEAR_QUE: IoctlNum = nix::request_code_none!(0xab, 5);
const NBD_SET_SIZE_BLOCKS: IoctlNum = nix::request_code_none!(0xab, 7);
const NBD_DISCONNECT: IoctlNum = nix::request_code_none!(0xab, 8);
const NBD_SET_FLAGS: IoctlNum = nix::request_code_none!(0xab, 10);

/// An `_IO(0xab, n)` nbd ioctl with its value argument.
fn nbd_ioctl(fd: RawFd, request: IoctlNum, arg: u64) -> io::Result<()> {
    // SAFETY: every nbd ioctl used here takes its argument by value (an integer, or the
    // descriptor of a socket we own), so the kernel reads no memory of ours; `fd` is open for
    // the duration of the call.
    let rc = unsafe { libc::ioctl(fd, request, arg as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The block device node of nbd index `n`.
pub fn device_path(n: u32) -> PathBuf {
    PathBuf::from(format!("/dev/nbd{n}"))
}

fn record_path(n: u32) -> PathBuf {
    Path::new(RUN_DIR).join(format!("nbd{n}.json"))
}

/// Where the daemon of nbd `n` publishes its cache health (`crate::service`).
pub fn health_path(n: u32) -> PathBuf {
    Path::new(RUN_DIR).join(format!("nbd{n}.health.json"))
}

/// Whether nbd `n` has a server attached (the driver makes `pid` while it is connected).
pub fn connected(n: u32) -> bool {
    Path::new(&format!("/sys/block/nbd{n}/pid")).exists()
}

/// Loads the `nbd` module if the driver is missing; errors when there is still no /dev/nbd0.
fn ensure_driver() -> Result<(), NbdError> {
    let loaded = || Path::new("/dev/nbd0").exists();
    // modprobe only where this kernel has modules at all (no child process for nothing).
    let modules = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .is_ok_and(|r| Path::new("/lib/modules").join(r.trim()).is_dir());
    if !loaded()
        && modules
        && std::process::Command::new("modprobe")
            .arg("nbd")
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new("/dev/nbd0").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if loaded() {
        Ok(())
    } else {
        Err(NbdError::NoDriver)
    }
}

/// Gives the first free nbd device the kernel's end of the socketpair; returns its index and an
/// open descriptor.
fn claim_device(kernel_end: &UnixStream) -> Result<(u32, File), NbdError> {
    for n in 0.. {
        let path = device_path(n);
        if !path.exists() {
            break;
        }
        if connected(n) {
            continue;
        }
        let Ok(dev) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        match nbd_ioctl(dev.as_raw_fd(), NBD_SET_SOCK, kernel_end.as_raw_fd() as u64) {
            Ok(()) => return Ok((n, dev)),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => {
                return Err(NbdError::Listen {
                    op: "attach a socket to",
                    what: path.display().to_string(),
                    source: e,
                })
            }
        }
    }
    Err(NbdError::Setup(
        "every nbd device is in use (modprobe nbd nbds_max=N for more)".into(),
    ))
}

/// Serves `export` as `/dev/nbdN` until stopped (SIGINT, SIGTERM, SIGHUP, `blkcache del`) or
/// disconnected, or with `end_on_media_change` until the disc is swapped or ejected; `ready`
/// gets the device path once it exists (a service manager gets READY then). `config` is recorded
/// for `list`, `del` and udev. The keeper thread (`crate::service`) saves the map on the engine's
/// schedule, publishes the cache health and STATUS; the map is saved again at the end. Call it
/// before the process starts other threads (signals are blocked here, and inherited).
pub fn serve_kernel<R: FnOnce(&str) + Send>(
    export: &EngineExport,
    mut config: DeviceConfig,
    workers: usize,
    end_on_media_change: bool,
    ready: R,
) -> Result<Ended, NbdError> {
    ensure_driver()?;
    announce_abandoned();
    let info = export.info().clone();
    let (ours, kernel_end) = UnixStream::pair()?;
    let (n, dev) = claim_device(&kernel_end)?;
    let path = device_path(n);
    let fd = dev.as_raw_fd();
    let setup = |request, arg, what: &'static str| {
        nbd_ioctl(fd, request, arg).map_err(|source| NbdError::Listen {
            op: what,
            what: path.display().to_string(),
            source,
        })
    };
    let bs = u64::from(info.block_size);
    let undo = |e| {
        let _ = nbd_ioctl(fd, NBD_CLEAR_SOCK, 0);
        e
    };
    setup(NBD_SET_BLKSIZE, bs, "set the block size of").map_err(undo)?;
    setup(NBD_SET_SIZE_BLOCKS, info.size / bs, "set the size of").map_err(undo)?;
    setup(
        NBD_SET_FLAGS,
        u64::from(TRANSMISSION_FLAGS),
        "set the flags of",
    )
    .map_err(undo)?;

    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| NbdError::Setup(format!("cannot block signals: {e}")))?;

    config.pid = std::process::id() as i32;
    let record = record_path(n);
    write_record(&record, &config)?;
    let done = Arc::new(AtomicBool::new(false));
    let stopping = Arc::new(AtomicBool::new(false));
    let device = Arc::new(OnceLock::new());
    let engine = export.engine().clone();
    let keeper_sock = ours.try_clone()?;
    let keeper = Keeper::spawn(
        engine.clone(),
        health_path(n),
        Watch {
            device: device.clone(),
            end_on_media_change,
            stopping: stopping.clone(),
            end_device: Box::new(move || disconnect(fd, keeper_sock)),
        },
    )
    .map_err(|e| NbdError::Setup(format!("cannot start the keeper thread: {e}")))?;
    let live = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        // The driver's side: NBD_DO_IT returns once the device is disconnected.
        let do_it = s.spawn(move || {
            let r = nbd_ioctl(fd, NBD_DO_IT, 0);
            let _ = nbd_ioctl(fd, NBD_CLEAR_QUE, 0);
            let _ = nbd_ioctl(fd, NBD_CLEAR_SOCK, 0);
            drop(kernel_end);
            r
        });
        // Stop requests: disconnect, which ends both sides.
        let stopper = ours.try_clone()?;
        let done2 = done.clone();
        let stopping2 = stopping.clone();
        std::thread::Builder::new()
            .name("blkcache-signals".into())
            .spawn(move || {
                if let Ok(sig) = signals.wait() {
                    if done2.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::info!(signal = %sig, "stopping: disconnecting the nbd device");
                    notify::stopping("stopping: saving the map, then disconnecting the device");
                    // A media change the keeper is ending the device for stays one.
                    if !stopping2.swap(true, Ordering::SeqCst) {
                        disconnect(fd, stopper);
                    }
                }
            })
            .map_err(|e| NbdError::Setup(format!("cannot start the signal thread: {e}")))?;
        let waiter = {
            let sock = ours.try_clone()?;
            let live = &live;
            let engine = &engine;
            let device = &device;
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                while !connected(n) && Instant::now() < deadline && !do_it.is_finished() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if connected(n) {
                    let path = device_path(n).display().to_string();
                    tracing::info!(device = %path, "device is live");
                    live.store(true, Ordering::SeqCst);
                    ready(&path);
                    notify::ready(engine, &path);
                    let _ = device.set(path);
                } else {
                    Socket::shutdown(&sock);
                }
                do_it.join().unwrap_or(Ok(()))
            })
        };
        let served = serve_requests(ours.try_clone()?, export, false, workers);
        Socket::shutdown(&ours);
        done.store(true, Ordering::SeqCst);
        let driver = waiter.join().unwrap_or(Ok(()));
        if !live.load(Ordering::SeqCst) {
            return Err(NbdError::Listen {
                op: "start",
                what: path.display().to_string(),
                source: driver.err().unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the device did not come up within 30 s",
                    )
                }),
            });
        }
        served
    });
    // The signal thread may still wait: wake it (it sees `done` and ends).
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGHUP);
    let media_ended = keeper.stop();
    let _ = std::fs::remove_file(&record);
    announce(n);
    match engine.save() {
        Ok(()) => tracing::info!("map saved"),
        Err(e) => {
            tracing::error!(error = %e, "final map save failed; the image keeps every cached byte, the map may miss the last ones")
        }
    }
    tracing::info!(counters = ?engine.counters(), "served");
    result?;
    Ok(if media_ended {
        Ended::MediaChanged
    } else {
        Ended::Stopped
    })
}

/// Asks the driver to disconnect nbd `fd` (it sends `NBD_CMD_DISC`, which ends serving); if it
/// has not said goodbye within 5 s, cuts `sock`, our end of its socketpair.
fn disconnect(fd: RawFd, sock: UnixStream) {
    let _ = nbd_ioctl(fd, NBD_DISCONNECT, 0);
    let _ = std::thread::Builder::new()
        .name("blkcache-cut".into())
        .spawn(move || {
            std::thread::sleep(Duration::from_secs(5));
            Socket::shutdown(&sock);
        });
}

/// Devices still connected whose daemon was killed (something, a mount, holds them open):
/// announced to udev, so that the drive's `/dev/blkcache` name is left to the device that serves
/// it now.
fn announce_abandoned() {
    for d in list().iter().filter(|d| !d.daemon_alive) {
        announce(d.index);
    }
}

/// A change uevent for nbd `n`, so that udev runs its rules for it again: the kernel sends one
/// when the device connects, but on disconnect only once its last opener closes it, and a
/// device without a live daemon must lose its `/dev/blkcache` name now (`blkcache udev-env`
/// prints nothing for it). udev of systemd 247 and later also notices the daemon closing its
/// descriptor (the `watch` option of 60-block.rules); older udev does not watch nbd devices.
fn announce(n: u32) {
    let uevent = format!("/sys/block/nbd{n}/uevent");
    if let Err(error) = std::fs::write(&uevent, "change") {
        tracing::warn!(%error, uevent, "cannot announce the nbd device to udev");
    }
}

fn write_record(path: &Path, config: &DeviceConfig) -> Result<(), NbdError> {
    let err = |source| NbdError::Listen {
        op: "write the device record",
        what: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(RUN_DIR).map_err(err)?;
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    std::fs::write(path, text).map_err(err)
}

/// A blkcache nbd device that exists now.
#[derive(Debug, Clone)]
pub struct KernelDevice {
    /// N of /dev/nbdN.
    pub index: u32,
    /// What it serves (its record).
    pub config: DeviceConfig,
    /// Whether its daemon runs.
    pub daemon_alive: bool,
    /// Whether the driver has a server attached.
    pub connected: bool,
}

impl KernelDevice {
    /// The block device path.
    pub fn path(&self) -> PathBuf {
        device_path(self.index)
    }
}

/// The blkcache nbd devices with a record; records whose daemon is gone and whose device is
/// disconnected are stale and removed.
pub fn list() -> Vec<KernelDevice> {
    let Ok(dir) = std::fs::read_dir(RUN_DIR) else {
        return Vec::new();
    };
    let mut out: Vec<KernelDevice> = dir
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("nbd"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
        })
        .filter_map(device)
        .collect();
    out.sort_by_key(|d| d.index);
    out
}

/// nbd `n`, if blkcache serves it or its daemon was killed while it stays connected (a stale
/// record is removed).
pub fn device(n: u32) -> Option<KernelDevice> {
    let config = std::fs::read_to_string(record_path(n))
        .ok()
        .and_then(|t| serde_json::from_str::<DeviceConfig>(&t).ok())?;
    let d = KernelDevice {
        index: n,
        daemon_alive: daemon_alive(config.pid),
        connected: connected(n),
        config,
    };
    if !d.daemon_alive && !d.connected {
        let _ = std::fs::remove_file(record_path(n));
        let _ = std::fs::remove_file(health_path(n));
        return None;
    }
    Some(d)
}

/// The device `spec` names: `/dev/nbdN`, `nbdN`, its source or its cache directory.
pub fn resolve<'a>(devices: &'a [KernelDevice], spec: &str) -> Option<&'a KernelDevice> {
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

/// Removes `dev`: SIGTERM to its daemon (which disconnects, saves the map and exits); if it is
/// still connected after `wait`, `NBD_DISCONNECT` directly. Never waits for an unmount.
/// Returns whether the daemon stopped by itself.
pub fn remove(dev: &KernelDevice, wait: Duration) -> Result<bool, NbdError> {
    use nix::unistd::Pid;
    let mut stopped = false;
    if dev.daemon_alive {
        nix::sys::signal::kill(Pid::from_raw(dev.config.pid), Signal::SIGTERM).map_err(|e| {
            NbdError::Setup(format!("cannot signal daemon {}: {e}", dev.config.pid))
        })?;
        let deadline = Instant::now() + wait;
        while daemon_alive(dev.config.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stopped = !daemon_alive(dev.config.pid);
    }
    if connected(dev.index) {
        let f = OpenOptions::new()
            .read(true)
            .open(dev.path())
            .map_err(|source| NbdError::Listen {
                op: "open",
                what: dev.path().display().to_string(),
                source,
            })?;
        let _ = nbd_ioctl(f.as_raw_fd(), NBD_DISCONNECT, 0);
        let _ = nbd_ioctl(f.as_raw_fd(), NBD_CLEAR_SOCK, 0);
    }
    let _ = std::fs::remove_file(record_path(dev.index));
    Ok(stopped)
}
