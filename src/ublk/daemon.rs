//! The daemon side of one device: adds (or recovers) the ublk device, serves its queues from an
//! engine, saves the map on a timer and on stop, and stops cleanly on SIGINT/SIGTERM/SIGHUP.
//!
//! Threads: the caller's (libublk's `run_target`: control commands, then joins the queues), one
//! per queue (see `queue.rs`), a signal thread (sigwait; saves, then stops the device: it must
//! first set up its own libublk control ring, or libublk panics), the keeper thread
//! (`crate::service::keeper`: saves, cache health, STATUS, and with `end_on_media_change` ends the
//! device when the disc was swapped or ejected), and the engine's media-change watcher for block
//! devices (the only thread that sends the drive anything but reads). Queues: one per CPU up to
//! [`MAX_DEFAULT_QUEUES`], [`DEFAULT_DEPTH`] deep, unless `add --queues/--depth` say otherwise.
//!
//! Must never leave a caller waiting: `ready` is called once the device is live, and any failure
//! before that is returned. Never uses `del_dev` (it blocks while the device is mounted).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::UblkDev;
use libublk::{sys, UblkError, UblkFlags};
use nix::sys::signal::{SigSet, Signal};

use crate::engine::Engine;
use crate::service::{notify, Ended, Keeper, Watch};

use super::config::{health_path, to_target_data, DeviceConfig, TARGET_NAME};
use super::queue::run_queue;

/// The ublk control device; missing when the ublk_drv module is not loaded.
const CONTROL: &str = "/dev/ublk-control";

/// Most queues `add` chooses by itself: one per CPU up to this many. Each queue is a thread with
/// its own io_uring serving the CPUs mapped to it; past 8, a device whose misses all go to one
/// drive gains nothing, and hits already run at the page-copy speed of each queue's CPU.
/// `add --queues` overrides it (up to 32).
pub const MAX_DEFAULT_QUEUES: u16 = 8;

/// Requests in flight per queue that `add` chooses by itself (`add --depth` overrides it): 64,
/// enough to keep a queue busy with readahead and parallel readers (the block layer splits
/// larger I/O into requests of at most the io buffer size) without pinning much memory (a tag
/// buffer is allocated on its first request that is not a whole-request hit).
pub const DEFAULT_DEPTH: u16 = 64;

/// The number of queues `add` chooses: one per CPU this process may run on, at most
/// [`MAX_DEFAULT_QUEUES`].
pub fn default_queues() -> u16 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    u16::try_from(cpus).map_or(MAX_DEFAULT_QUEUES, |n| n.min(MAX_DEFAULT_QUEUES))
}

/// Errors of serving a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The kernel has no ublk driver.
    #[error("{CONTROL} is missing: the kernel has no ublk driver (modprobe ublk_drv; Linux 6.0+ with CONFIG_BLK_DEV_UBLK)")]
    NoDriver,
    /// The device cannot have this geometry.
    #[error("cannot serve {size} bytes with {sector_size}-byte sectors: {why}")]
    Geometry {
        /// Device size.
        size: u64,
        /// Logical block size.
        sector_size: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A libublk call failed. libublk's own text ("io_uring IO failure") says little, so the
    /// message spells out its errno instead of chaining it.
    #[error("ublk {op} failed: {}", errno_text(.error))]
    Ublk {
        /// What was being done.
        op: &'static str,
        /// libublk's error.
        error: UblkError,
    },
    /// The caller may not add or open ublk devices (the driver wants CAP_SYS_ADMIN).
    #[error("ublk {op} failed: {}; serving a device needs root", errno_text(.error))]
    NotPermitted {
        /// What was being done.
        op: &'static str,
        /// libublk's error.
        error: UblkError,
    },
    /// Signal handling could not be set up.
    #[error("cannot set up signal handling")]
    Signals(#[source] nix::errno::Errno),
    /// A thread could not be started.
    #[error("cannot start the {what} thread")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// libublk's errors often carry only a negative errno: spell it out.
pub(super) fn errno_text(e: &UblkError) -> String {
    match e {
        UblkError::UringIOError(n) | UblkError::OtherError(n) => {
            std::io::Error::from_raw_os_error(n.saturating_abs()).to_string()
        }
        UblkError::IOError(e) => e.to_string(),
        other => other.to_string(),
    }
}

fn ublk_err(op: &'static str) -> impl FnOnce(UblkError) -> ServeError {
    move |error| {
        let errno = match &error {
            UblkError::UringIOError(n) | UblkError::OtherError(n) => n.saturating_abs(),
            UblkError::IOError(e) => e.raw_os_error().unwrap_or(0),
            _ => 0,
        };
        if errno == libc::EPERM || errno == libc::EACCES {
            ServeError::NotPermitted { op, error }
        } else {
            ServeError::Ublk { op, error }
        }
    }
}

/// What to serve, and whether to add a new device or re-attach to a crashed daemon's one.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// The device's configuration (stored in libublk's json for list/del/recover).
    pub config: DeviceConfig,
    /// Re-attach to this existing device (user recovery) instead of adding one.
    pub recover: Option<u32>,
    /// End serving (map saved, device removed) as soon as the disc is seen swapped or ejected,
    /// instead of going on serving only its cached sectors: for a service manager that then
    /// serves the disc now in the drive.
    pub end_on_media_change: bool,
}

/// Refuses geometries the block layer cannot take.
pub fn check_geometry(size: u64, sector_size: u32) -> Result<(), ServeError> {
    let bad = |why| ServeError::Geometry {
        size,
        sector_size,
        why,
    };
    if !sector_size.is_power_of_two() || !(512..=4096).contains(&sector_size) {
        return Err(bad(
            "the block layer takes logical block sizes of 512 to 4096 (a power of two)",
        ));
    }
    if size == 0 {
        return Err(bad("the source is empty"));
    }
    if size % u64::from(sector_size) != 0 {
        return Err(bad("the size is not a whole number of sectors"));
    }
    Ok(())
}

/// Moves this process into its own mount namespace with private propagation, so that it never
/// holds a mount of its own device (the libublk-rs README's trap: a daemon exiting with such a
/// mount in its namespace deadlocks flushing it). Must be called before any thread is started.
pub fn isolate_mount_namespace() -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    Ok(())
}

/// Serves `engine` as a ublk device until it is stopped (a signal, `blkcache del`, or the device
/// being removed, or with `end_on_media_change` a disc swap). `ready` gets the block device path
/// once the device is live. Saves the map periodically and once more at the end, then removes
/// the device.
pub fn serve<R>(engine: Arc<Engine>, spec: DeviceSpec, ready: R) -> Result<Ended, ServeError>
where
    R: FnOnce(&str) + Send + Sync + 'static,
{
    let cfg = spec.config.clone();
    check_geometry(cfg.size, cfg.sector_size)?;
    if !Path::new(CONTROL).exists() {
        return Err(ServeError::NoDriver);
    }
    // Blocked before any thread starts, so every thread inherits the mask and only the signal
    // thread ever sees these.
    let signals = stop_signals();
    signals.thread_block().map_err(ServeError::Signals)?;

    let ctrl = Arc::new(build_ctrl(&spec)?);
    if spec.recover.is_some() {
        ctrl.start_user_recover()
            .map_err(ublk_err("start user recovery"))?;
    }
    tracing::info!(
        id = ctrl.dev_info().dev_id,
        recover = spec.recover.is_some(),
        media = %engine.media().describe(),
        "ublk device set up"
    );

    let stopping = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let sig_thread = spawn_signal_thread(
        signals,
        ctrl.clone(),
        engine.clone(),
        stopping.clone(),
        finished.clone(),
    )?;
    let dev_id = ctrl.dev_info().dev_id;
    let device = Arc::new(OnceLock::new());
    let kill_ctrl = ctrl.clone();
    let keeper = Keeper::spawn(
        engine.clone(),
        health_path(dev_id),
        Watch {
            device: device.clone(),
            end_on_media_change: spec.end_on_media_change,
            stopping: stopping.clone(),
            end_device: Box::new(move || stop_device(&kill_ctrl)),
        },
    )
    .map_err(|source| ServeError::Thread {
        what: "keeper",
        source,
    })?;

    let q_engine = engine.clone();
    let ready_engine = engine.clone();
    let stop_after_start = stopping.clone();
    let result = ctrl.run_target(
        move |dev: &mut UblkDev| init_target(dev, &cfg),
        move |qid, dev: &UblkDev| run_queue(qid, dev, q_engine.clone()),
        move |ctrl: &UblkCtrl| {
            let path = ctrl.get_bdev_path();
            tracing::info!(device = %path, "device is live");
            ready(&path);
            notify::ready(&ready_engine, &path);
            let _ = device.set(path);
            // A stop requested while the device was starting could not stop it yet.
            if stop_after_start.load(Ordering::SeqCst) {
                if let Err(e) = ctrl.kill_dev() {
                    tracing::warn!(error = %e, "cannot stop the device");
                }
            }
        },
    );

    finished.store(true, Ordering::SeqCst);
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGUSR1);
    let _ = sig_thread.join();
    let media_ended = keeper.stop();
    match engine.save() {
        Ok(()) => tracing::info!("map saved"),
        Err(e) => {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                "final map save failed; the map claims only bytes synced before"
            )
        }
    }
    let counters = engine.counters();
    tracing::info!(?counters, "served");
    result.map_err(ublk_err("run"))?;
    // Queues are down: remove the device without waiting for its openers (a mounted file system
    // keeps it open; del_dev would block until it is unmounted).
    match ctrl.del_dev_async() {
        Ok(_) => tracing::info!("device removed"),
        Err(e) => tracing::debug!(error = %e, "device removal (it may be gone already)"),
    }
    Ok(if media_ended {
        Ended::MediaChanged
    } else {
        Ended::Stopped
    })
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        set.add(s);
    }
    set
}

/// The ublk driver's features (GET_FEATURES, Linux 6.5+), if it tells.
fn driver_features() -> u64 {
    UblkCtrl::get_features().unwrap_or(0)
}

/// Device flags from the driver's features: re-attach after a crash (user recovery); requeue the
/// requests the dead daemon had (reads are idempotent) when the driver can; copy hits straight
/// into requests (USER_COPY, see `queue.rs`) when the driver can. A recovered device keeps the
/// flags it was added with (the queues read them from the device).
fn device_flags(features: u64) -> u64 {
    let mut flags = u64::from(sys::UBLK_F_USER_RECOVERY);
    for optional in [sys::UBLK_F_USER_RECOVERY_REISSUE, sys::UBLK_F_USER_COPY] {
        if features & u64::from(optional) != 0 {
            flags |= u64::from(optional);
        }
    }
    flags
}

fn build_ctrl(spec: &DeviceSpec) -> Result<UblkCtrl, ServeError> {
    let cfg = &spec.config;
    let builder = UblkCtrlBuilder::default()
        .name(TARGET_NAME)
        .nr_queues(cfg.serve.queues)
        .depth(cfg.serve.depth)
        .io_buf_bytes(cfg.io_buf_bytes);
    match spec.recover {
        None => builder
            .id(-1)
            .ctrl_flags(device_flags(driver_features()))
            .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV | UblkFlags::UBLK_DEV_F_DEL_DEV_ASYNC)
            .build()
            .map_err(ublk_err("add device")),
        Some(id) => builder
            .id(i32::try_from(id).unwrap_or(i32::MAX))
            .dev_flags(UblkFlags::UBLK_DEV_F_RECOVER_DEV)
            .build()
            .map_err(ublk_err("open device for recovery")),
    }
}

/// Read-only, logical = physical block size = the source's sector size, the source's size. The
/// optimal I/O size is the largest request: the kernel reads ahead twice that for buffered
/// readers (1 MiB instead of 128 KiB), so a sequential reader crosses to the daemon for fewer,
/// larger requests (measured by `make bench-guest`).
fn init_target(dev: &mut UblkDev, cfg: &DeviceConfig) -> Result<(), UblkError> {
    let shift = cfg.sector_size.trailing_zeros() as u8;
    let max_io = dev.dev_info.max_io_buf_bytes;
    let opt_shift = max_io.max(1).ilog2() as u8;
    // One uring_cmd per tag is always in flight, plus at most one media read or timeout per tag,
    // plus the queue's wake-up eventfd read.
    let ring = dev.dev_info.queue_depth.saturating_mul(2).saturating_add(1);
    dev.tgt.sq_depth = ring;
    dev.tgt.cq_depth = ring;
    dev.tgt.dev_size = cfg.size;
    dev.tgt.params = sys::ublk_params {
        types: sys::UBLK_PARAM_TYPE_BASIC,
        basic: sys::ublk_param_basic {
            attrs: sys::UBLK_ATTR_READ_ONLY,
            logical_bs_shift: shift,
            physical_bs_shift: shift,
            io_opt_shift: opt_shift.max(shift),
            io_min_shift: shift,
            max_sectors: max_io >> 9,
            dev_sectors: cfg.size >> 9,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut cfg = cfg.clone();
    cfg.pid = nix::unistd::getpid().as_raw();
    dev.set_target_json(to_target_data(&cfg));
    Ok(())
}

/// Waits for a stop signal; then saves, and stops the device (its queues end, `run_target`
/// returns). SIGUSR1 with `finished` set ends the thread.
fn spawn_signal_thread(
    signals: SigSet,
    ctrl: Arc<UblkCtrl>,
    engine: Arc<Engine>,
    stopping: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, ServeError> {
    std::thread::Builder::new()
        .name("blkcache-signals".into())
        .spawn(move || loop {
            let sig = match signals.wait() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "sigwait failed; signals no longer stop the device");
                    return;
                }
            };
            if finished.load(Ordering::SeqCst) {
                return;
            }
            if sig == Signal::SIGUSR1 {
                continue;
            }
            tracing::info!(signal = %sig, "stopping: saving the map, then removing the device");
            notify::stopping("stopping: saving the map, then removing the device");
            stopping.store(true, Ordering::SeqCst);
            if let Err(e) = engine.save() {
                tracing::error!(error = &e as &dyn std::error::Error, "map save on stop failed");
            }
            stop_device(&ctrl);
        })
        .map_err(|source| ServeError::Thread {
            what: "signal",
            source,
        })
}

/// libublk's control commands use a per-thread ring; threads it did not set up need one.
fn init_ctrl_ring() -> Result<(), UblkError> {
    libublk::ctrl::ublk_init_ctrl_task_ring(|ring| {
        if ring.is_none() {
            *ring = Some(
                io_uring::IoUring::<io_uring::squeue::Entry128>::builder()
                    .build(16)
                    .map_err(UblkError::IOError)?,
            );
        }
        Ok(())
    })
}

/// Stops the device from a thread of ours (its queues end, `run_target` returns, readers still
/// holding the device get I/O errors).
fn stop_device(ctrl: &UblkCtrl) {
    if let Err(e) = init_ctrl_ring() {
        tracing::error!(error = %e, "cannot set up a control ring to stop the device");
        return;
    }
    if let Err(e) = ctrl.kill_dev() {
        tracing::warn!(error = %e, "cannot stop the device");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_checks() {
        assert!(check_geometry(4096 * 2048, 2048).is_ok());
        assert!(check_geometry(512, 512).is_ok());
        assert!(check_geometry(0, 2048).is_err());
        assert!(check_geometry(3000, 2048).is_err());
        assert!(check_geometry(8192, 1000).is_err());
        let e = check_geometry(8192, 8192).unwrap_err().to_string();
        assert!(e.contains("512 to 4096"), "{e}");
    }

    #[test]
    fn default_queues_follow_the_cpus_up_to_the_limit() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        let q = usize::from(default_queues());
        assert_eq!(q, cpus.min(usize::from(MAX_DEFAULT_QUEUES)));
        assert!(q >= 1);
    }

    #[test]
    fn device_flags_follow_the_driver() {
        let base = u64::from(sys::UBLK_F_USER_RECOVERY);
        let reissue = u64::from(sys::UBLK_F_USER_RECOVERY_REISSUE);
        let copy = u64::from(sys::UBLK_F_USER_COPY);
        assert_eq!(device_flags(0), base);
        assert_eq!(device_flags(base | reissue), base | reissue);
        assert_eq!(device_flags(base | copy), base | copy);
        assert_eq!(device_flags(!0), base | reissue | copy);
    }
}
