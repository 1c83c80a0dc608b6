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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use blkcache::nbd;
use blkcache::rescue::background::BackgroundFill;
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
    match serve_here(cfg, None, json, true) {
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

/// Whether `e` says the drive holds no disc.
fn is_no_medium(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref(),
            Some(blkcache::media::MediaError::NoMedium { .. })
        )
    })
}

/// `serve_device`, with `add --fill`'s background fill started once the device is live (from the
/// thread that reports it: its stop signals are blocked) and stopped after the device, the map
/// then saved once more.
fn serve_filling<R>(
    cfg: &ServeConfig,
    engine: Arc<blkcache::engine::Engine>,
    spec: DeviceSpec,
    ready: R,
) -> anyhow::Result<ublk::Ended>
where
    R: FnOnce(&str) + Send + Sync + 'static,
{
    let fill = Arc::new(BackgroundFill::default());
    let starter = (cfg.fill && cfg.source.is_some()).then(|| (fill.clone(), engine.clone()));
    let served = serve_device(engine.clone(), spec, move |device| {
        if let Some((fill, engine)) = starter {
            fill.start(engine);
        }
        ready(device);
    });
    if fill.stop() {
        if let Err(e) = engine.save() {
            tracing::error!(error = %e, "map save after the fill stopped failed");
        }
    }
    served
}

/// Serves `engine` as a kernel block device until it stops: through ublk, or (chosen, or
/// without /dev/ublk-control) the kernel's nbd driver. Recovery is ublk's only.
fn serve_device<R: FnOnce(&str) + Send + Sync + 'static>(
    engine: Arc<blkcache::engine::Engine>,
    spec: DeviceSpec,
    ready: R,
) -> anyhow::Result<ublk::Ended> {
    let ublk_present = Path::new("/dev/ublk-control").exists();
    let use_nbd = spec.recover.is_none()
        && match spec.config.serve.frontend {
            Some(f) => f == Frontend::Nbd,
            None => !ublk_present,
        };
    if !use_nbd {
        return Ok(ublk::serve(engine, spec, ready)?);
    }
    let export = nbd::EngineExport::new(engine, "blkcache");
    let workers = nbd::ServerConfig::default().workers;
    let chosen = spec.config.serve.frontend.is_some();
    match nbd::kernel::serve_kernel(&export, spec.config, workers, ready) {
        Err(nbd::NbdError::NoDriver) if !chosen => bail!(
            "the kernel has no ublk driver (/dev/ublk-control; modprobe ublk_drv, Linux 6.0+ with \
             CONFIG_BLK_DEV_UBLK) and no nbd driver (/dev/nbd0; modprobe nbd); `blkcache serve` needs neither"
        ),
        r => r?,
    }
    Ok(ublk::Ended::Stopped)
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
