//! Serving a [`ServeConfig`]: in this process (`--foreground`), or in a daemon started for it.
//!
//! `add` and `recover` start `blkcache daemon --config JSON [--recover ID] --ready-fd N` (hidden)
//! in a new session and wait on the pipe for its lines: `log START PATH` once the cache (and so
//! its log) is known, then `ready {json}` or `error: MESSAGE`; end of file means it died, and the
//! tail of its log is shown. The daemon opens and identifies the media itself, once: the caller
//! reads nothing from the source. Until it has the cache's log, the daemon's stderr is the
//! caller's (warnings show there); then its output goes to `daemon.log`.
//!
//! Must never hang when the daemon fails to start (end of file ends the wait, which also has a
//! time limit), and print each error once: the daemon reports it on the pipe, the caller prints it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use blkcache::control::ControlSocket;
use blkcache::nbd;
use blkcache::rescue::background::BackgroundFill;
use blkcache::rescue::FillOptions;
use blkcache::serve::{self, Frontend, ServeConfig};
use blkcache::ublk::{self, DeviceConfig, DeviceSpec};

/// How long the caller waits for the daemon to say it is ready. Generous: the kernel reads the
/// partition table through the new device before it counts as added, and a drive may need to
/// spin up for that.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Arguments of the hidden `blkcache daemon`.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// What to serve: a ServeConfig as JSON.
    #[arg(long, value_name = "JSON", value_parser = parse_config)]
    pub config: ServeConfig,
    /// Re-attach to this device (user recovery) instead of adding one.
    #[arg(long, value_name = "ID")]
    pub recover: Option<u32>,
    /// Report `log`, `ready` and `error:` lines on this descriptor.
    #[arg(long, value_name = "FD")]
    pub ready_fd: i32,
}

fn parse_config(s: &str) -> Result<ServeConfig, String> {
    serde_json::from_str(s).map_err(|e| format!("bad serve configuration: {e}"))
}

/// What `add` prints (`--json`), and what the daemon reports on its ready line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Added {
    pub device: String,
    pub source: Option<PathBuf>,
    pub cache: PathBuf,
    pub size: u64,
    pub sector_size: u32,
    /// How the cache was found, when it is worth saying (`Prepared::found`): a damaged head, an
    /// older cache, a drive that reads the disc smaller or larger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

impl Added {
    fn new(device: &str, cfg: &DeviceConfig, found: Option<String>) -> Added {
        Added {
            device: device.to_string(),
            source: cfg.source().map(Path::to_path_buf),
            cache: cfg.cache().to_path_buf(),
            size: cfg.size,
            sector_size: cfg.sector_size,
            found,
        }
    }

    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if let (Some(found), false) = (&self.found, json) {
            eprintln!("blkcache: {found}");
        }
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string(self)?)?;
        } else {
            writeln!(out, "{}", self.device)?;
        }
        Ok(())
    }
}

/// Before any thread exists (unshare refuses threaded processes).
fn isolate() {
    if let Err(e) = ublk::isolate_mount_namespace() {
        tracing::warn!(error = %e, "cannot move to a private mount namespace; never mount the device in the daemon's namespace");
    }
}

/// Exit status of `add --foreground --end-on-media-change` when the disc was swapped or ejected
/// (map saved): the unit starts again for the disc now in the drive (`RestartForceExitStatus=`).
const EXIT_MEDIA_CHANGED: u8 = 3;

/// Exit status of `add --foreground --end-on-media-change` when the drive holds no disc.
const EXIT_NO_MEDIUM: u8 = 4;

/// Serves in this process until the device stops (with `end_on_media_change`, also when the
/// disc is swapped or ejected); prints the device once it is live.
pub(super) fn serve_here(
    cfg: &ServeConfig,
    recover: Option<u32>,
    json: bool,
    end_on_media_change: bool,
) -> anyhow::Result<ublk::Ended> {
    isolate();
    let prepared = serve::prepare(cfg)?;
    let (engine, config) = serve::start(cfg, &prepared)?;
    tracing::info!(media = %prepared.media.describe(), cache = %prepared.cache.dir().display(), "serving");
    let shown = config.clone();
    let found = prepared.found();
    let spec = DeviceSpec {
        config,
        recover,
        end_on_media_change,
    };
    let ended = serve_filling(cfg, engine, spec, move |device| {
        if let Err(e) = Added::new(device, &shown, found).print(json) {
            tracing::warn!(error = %e, "cannot print the device");
        }
    })?;
    Ok(ended)
}

/// `add --foreground --end-on-media-change` (blkcache@.service): exit status 3 when the disc was
/// swapped or ejected, 4 when the drive holds no disc; a failure's reason goes to the unit's
/// STATUS as well.
pub(super) fn serve_for_service_manager(cfg: &ServeConfig, json: bool) -> anyhow::Result<ExitCode> {
    match serve_here_or_recover(cfg, json) {
        Ok(ublk::Ended::MediaChanged) => Ok(ExitCode::from(EXIT_MEDIA_CHANGED)),
        Ok(ublk::Ended::Stopped) => Ok(ExitCode::SUCCESS),
        Err(e) if is_no_medium(&e) => {
            eprintln!("blkcache: {e:#}");
            Ok(ExitCode::from(EXIT_NO_MEDIUM))
        }
        Err(e) => {
            ublk::notify::failed(&format!("{e:#}").replace('\n', " "));
            Err(e)
        }
    }
}

/// Serves `cfg` under a service manager. A ublk device of the same source whose daemon was killed
/// (the unit is restarted then: `Restart=on-abnormal`) is re-attached to, so that mounts on it
/// keep working; if that fails (another disc is in the drive now), the device is removed and the
/// source served afresh. An nbd device has no recovery: its successor is a new device.
fn serve_here_or_recover(cfg: &ServeConfig, json: bool) -> anyhow::Result<ublk::Ended> {
    let abandoned = (!uses_nbd(cfg.frontend))
        .then(ublk::list)
        .and_then(|devices| {
            devices
                .into_iter()
                .find(|d| d.needs_recovery() && d.config.source() == cfg.source.as_deref())
        });
    let Some(dev) = abandoned else {
        return serve_here(cfg, None, json, true);
    };
    tracing::info!(device = %dev.path().display(), "re-attaching to the device of a killed daemon");
    match serve_here(&dev.config.serve, Some(dev.id), json, true) {
        Err(e) if !is_no_medium(&e) => {
            tracing::warn!(device = %dev.path().display(), error = %format!("{e:#}"), "cannot re-attach; removing the device and serving afresh");
            ublk::remove(&dev, Duration::ZERO)?;
            serve_here(cfg, None, json, true)
        }
        r => r,
    }
}

/// Whether a device for `frontend` (`None`: the default) is the kernel's nbd driver's: chosen,
/// or without /dev/ublk-control.
fn uses_nbd(frontend: Option<Frontend>) -> bool {
    match frontend {
        Some(f) => f == Frontend::Nbd,
        None => !Path::new("/dev/ublk-control").exists(),
    }
}

/// Whether `e` says the drive holds no disc.
fn is_no_medium(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref(),
            Some(blkcache::media::MediaError::NoMedium { .. })
        )
    })
}

/// `serve_device`, with the cache's control socket (fills asked for by `blkcache fill`, live
/// `status`) and `add --fill`'s background fill, both started once the device is live (from the
/// thread that reports it: its stop signals are blocked; a daemon that never serves leaves no
/// socket). Fills are stopped after the device, the map then saved once more, and the socket
/// removed last.
fn serve_filling<R>(
    cfg: &ServeConfig,
    engine: Arc<blkcache::engine::Engine>,
    spec: DeviceSpec,
    ready: R,
) -> anyhow::Result<ublk::Ended>
where
    R: FnOnce(&str) + Send + Sync + 'static,
{
    let cache = spec.config.cache().to_path_buf();
    let fills = Arc::new(background_fill(cfg, &engine, &cache));
    let control = Arc::new(Mutex::new(None));
    let can_fill = cfg.source.is_some();
    let add_fill = cfg.fill && can_fill;
    let (slot, live_engine, live_fills) = (control.clone(), engine.clone(), fills.clone());
    let served = serve_device(engine.clone(), spec, move |device| {
        if let Some(c) = control_socket(&live_engine, &live_fills, &cache, can_fill) {
            c.set_serving(device);
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(c);
        }
        if add_fill {
            if let Err(e) = live_fills.start(FillOptions::default(), "add --fill".into()) {
                tracing::error!(error = %e, "cannot start the fill");
            }
        }
        ready(device);
    });
    let control = control
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    stop_control(&engine, &fills, control);
    served
}

/// The fills of `engine` serving `cfg` from the cache in `cache`; they reopen the source as
/// `cfg` opened it (`--reopen-on-error`).
pub(super) fn background_fill(
    cfg: &ServeConfig,
    engine: &Arc<blkcache::engine::Engine>,
    cache: &Path,
) -> BackgroundFill {
    let fills = BackgroundFill::new(engine.clone(), cache.to_owned());
    match cfg.source.clone() {
        Some(source) => {
            let cfg = cfg.clone();
            fills.with_reopen(Arc::new(move || serve::open_media(&cfg, &source)))
        }
        None => fills,
    }
}

/// The control socket of `engine` serving the cache in `cache`, its fills in `fills`; serving
/// goes on without the socket if it cannot be made (said in the log).
pub(super) fn control_socket(
    engine: &Arc<blkcache::engine::Engine>,
    fills: &Arc<BackgroundFill>,
    cache: &Path,
    can_fill: bool,
) -> Option<ControlSocket> {
    ControlSocket::start(engine.clone(), fills.clone(), cache, can_fill)
        .inspect_err(|e| {
            tracing::warn!(
                error = e as &dyn std::error::Error,
                "no control socket: `blkcache fill` and a live `status` cannot reach this daemon"
            )
        })
        .ok()
}

/// Once serving ended: stops a fill (saving the map after it), then removes the socket.
pub(super) fn stop_control(
    engine: &blkcache::engine::Engine,
    fills: &BackgroundFill,
    control: Option<ControlSocket>,
) {
    if fills.close() {
        if let Err(e) = engine.save() {
            tracing::error!(error = %e, "map save after the fill stopped failed");
        }
    }
    drop(control);
}

/// Serves `engine` as a kernel block device until it stops: through ublk, or (chosen, or
/// without /dev/ublk-control) the kernel's nbd driver. Recovery is ublk's only.
fn serve_device<R: FnOnce(&str) + Send + Sync + 'static>(
    engine: Arc<blkcache::engine::Engine>,
    spec: DeviceSpec,
    ready: R,
) -> anyhow::Result<ublk::Ended> {
    let use_nbd = spec.recover.is_none() && uses_nbd(spec.config.serve.frontend);
    if !use_nbd {
        return Ok(ublk::serve(engine, spec, ready)?);
    }
    let export = nbd::EngineExport::new(engine, "blkcache");
    let workers = nbd::ServerConfig::default().workers;
    let chosen = spec.config.serve.frontend.is_some();
    match nbd::kernel::serve_kernel(
        &export,
        spec.config,
        workers,
        spec.end_on_media_change,
        ready,
    ) {
        Err(nbd::NbdError::NoDriver) if !chosen => bail!(
            "the kernel has no ublk driver (/dev/ublk-control; modprobe ublk_drv, Linux 6.0+ with \
             CONFIG_BLK_DEV_UBLK) and no nbd driver (/dev/nbd0; modprobe nbd); `blkcache serve` needs neither"
        ),
        r => Ok(r?),
    }
}

/// The daemon's end of the pipe; taken (closed) by the ready line or the error line.
type Pipe = Arc<Mutex<Option<File>>>;

/// Writes one line on the pipe; false if it is closed or the caller is gone.
fn send(pipe: &Pipe, line: &str, last: bool) -> bool {
    let Ok(mut guard) = pipe.lock() else {
        return false;
    };
    let ok = guard
        .as_mut()
        .is_some_and(|f| writeln!(f, "{line}").and_then(|()| f.flush()).is_ok());
    if last {
        guard.take();
    }
    ok
}

/// `blkcache daemon`: serves, reporting on the pipe; errors go there (and to the log once there
/// is one), never to the caller's stderr, which the caller prints them on.
pub fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    // SAFETY: the descriptor was opened by our parent for us alone (`spawn`) and nothing else in
    // this process owns it; the File takes ownership and closes it once.
    let pipe: Pipe = Arc::new(Mutex::new(Some(unsafe {
        File::from_raw_fd(args.ready_fd)
    })));
    let mut logging = false;
    if let Err(e) = daemon(&args, &pipe, &mut logging) {
        if logging {
            tracing::error!(error = &*e as &dyn std::error::Error, "cannot serve");
        }
        let line = format!("{e:#}").replace('\n', " ");
        send(&pipe, &format!("error: {line}"), true);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn daemon(args: &DaemonArgs, pipe: &Pipe, logging: &mut bool) -> anyhow::Result<()> {
    isolate();
    let prepared = serve::prepare(&args.config)?;
    let (log, start) = prepared.cache.open_log()?;
    for fd in [1, 2] {
        nix::unistd::dup2(log.as_raw_fd(), fd).context("cannot send output to the log")?;
    }
    *logging = true;
    let log_path = prepared.cache.log_path();
    send(pipe, &format!("log {start} {}", log_path.display()), false);
    // Hold no directory busy.
    let _ = std::env::set_current_dir("/");
    let (engine, config) = serve::start(&args.config, &prepared)?;
    tracing::info!(media = %prepared.media.describe(), cache = %prepared.cache.dir().display(), "serving");
    let shown = config.clone();
    let found = prepared.found();
    if let Some(how) = &found {
        // For the log; the caller prints it from the ready line.
        tracing::info!("{how}");
    }
    let ready_pipe = pipe.clone();
    // A new device nobody waits for (the caller got Ctrl-C) is stopped again; a recovered one
    // may hold a mounted file system and keeps serving.
    let fresh = args.recover.is_none();
    let spec = DeviceSpec {
        config,
        recover: args.recover,
        end_on_media_change: false,
    };
    serve_filling(&args.config, engine, spec, move |device| {
        let line = serde_json::to_string(&Added::new(device, &shown, found)).unwrap_or_default();
        if !send(&ready_pipe, &format!("ready {line}"), true) && fresh {
            tracing::warn!(device, "the caller of add is gone (Ctrl-C?): stopping");
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
        }
    })?;
    Ok(())
}

/// Starts a daemon serving `cfg` (re-attaching to device `recover`) in a new session, and waits
/// for its ready line. Returns what it serves.
pub(super) fn spawn(cfg: &ServeConfig, recover: Option<u32>, verbose: u8) -> anyhow::Result<Added> {
    let exe = std::env::current_exe().context("cannot find the blkcache executable")?;
    let (read_end, write_end) = nix::unistd::pipe().context("cannot create a pipe")?;
    // Only the write end goes to the daemon.
    nix::fcntl::fcntl(
        read_end.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("cannot set up the pipe")?;
    let mut cmd = Command::new(&exe);
    cmd.arg("daemon");
    for _ in 0..verbose {
        cmd.arg("-v");
    }
    cmd.arg("--config").arg(serde_json::to_string(cfg)?);
    if let Some(id) = recover {
        cmd.arg("--recover").arg(id.to_string());
    }
    cmd.arg("--ready-fd")
        .arg(write_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: the closure only calls setsid, which is async-signal-safe and touches no memory;
    // it detaches the child from our session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    drop(write_end);
    wait_ready(read_end, &mut child)
}

/// Reads the daemon's lines until `ready` (its device), `error:`, end of file or the time limit.
fn wait_ready(fd: OwnedFd, child: &mut Child) -> anyhow::Result<Added> {
    let (tx, rx) = mpsc::channel();
    // A helper thread reads, so that the wait can end.
    std::thread::spawn(move || {
        for line in BufReader::new(File::from(fd)).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut log: Option<(PathBuf, u64)> = None;
    let tail = |log: &Option<(PathBuf, u64)>| match log {
        Some((path, start)) => format!("; log {}:{}", path.display(), log_tail(path, *start)),
        None => String::new(),
    };
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                bail!(
                    "the daemon died before the device was ready ({status}){}",
                    tail(&log)
                )
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "the daemon (pid {}) did not report within {} s; it may still be starting{}",
                child.id(),
                READY_TIMEOUT.as_secs(),
                tail(&log)
            ),
        };
        if let Some(rest) = line.strip_prefix("log ") {
            if let Some((start, path)) = rest.split_once(' ') {
                log = Some((PathBuf::from(path), start.parse().unwrap_or(0)));
            }
        } else if let Some(json) = line.strip_prefix("ready ") {
            return serde_json::from_str(json.trim())
                .with_context(|| format!("bad ready line from the daemon: {line}"));
        } else if let Some(msg) = line.strip_prefix("error: ") {
            let _ = child.wait();
            bail!("{}", msg.trim_end())
        } else {
            bail!("unexpected line from the daemon: {line}{}", tail(&log))
        }
    }
}

/// The last lines the daemon wrote to its log since `start`, indented, for error messages.
fn log_tail(log: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.seek(SeekFrom::Start(start));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        return " (the log is empty)".to_string();
    }
    format!("\n  {}", tail.join("\n  "))
}
