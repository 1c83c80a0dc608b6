//! `blkcache add SOURCE`: serve SOURCE (a drive, disk or file) through its cache as `/dev/ublkbN`;
//! `add --offline CACHE` serves a cache with no source.
//!
//! Without `--foreground` the command re-executes itself as a daemon (`--foreground --ready-fd
//! N`, in a new session, output appended to the cache's `daemon.log`) and waits on the pipe for
//! `ready {json}` or `error: ...`; end of file means the daemon died, and the tail of its log is
//! shown. Also holds what `recover` shares: serving in the foreground and spawning a daemon.
//!
//! Must never hang when the daemon fails to start (the wait ends on EOF, and has a time limit),
//! and never open the source writable (the media module opens it read-only).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use blkcache::cache::{self, Cache, OfflineMedia, SourceInfo};
use blkcache::engine::{Engine, EngineConfig};
use blkcache::image::Image;
use blkcache::map::{FileMap, Status};
use blkcache::media::{self, FileMedia, Media, MediaOptions, TestMedia};
use blkcache::ublk::{self, DeviceConfig, DeviceSpec};

/// Largest I/O the device takes (libublk's per-tag buffer).
const IO_BUF_BYTES: u32 = 512 * 1024;

/// How long `add` waits for the daemon to say it is ready. Generous: the kernel reads the
/// partition table through the new device before it counts as added, and a drive may need to
/// spin up for that.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Arguments of `blkcache add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The source: an optical drive, a disk or a file. With --offline: the cache directory
    /// (ignored if --cache is given).
    pub source: PathBuf,
    /// Cache directory (default: one per media under /var/lib/blkcache for root, else
    /// $XDG_STATE_HOME/blkcache or ~/.local/state/blkcache).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Sector size in bytes (default: the device's logical sector size; 512 for files).
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    /// Number of ublk queues.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub queues: u16,
    /// Depth of each queue (requests in flight).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub depth: u16,
    /// Bytes read from the source per miss (e.g. 65536, 64k, 1M; a multiple of the sector size).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub read_size: Option<u32>,
    /// How many more times a sector already marked bad (`-`) is read when a program asks for it
    /// again. 0 (the default) never touches a known bad sector again.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub bad_retries: u32,
    /// Serve in this process until stopped (SIGINT/SIGTERM), instead of starting a daemon.
    #[arg(long)]
    pub foreground: bool,
    /// Print a JSON object (device, source, cache, size, sector_size) instead of the device path.
    #[arg(long)]
    pub json: bool,
    /// Serve the cache without its source: sectors not in the cache fail with EIO.
    #[arg(long)]
    pub offline: bool,
    /// Test mode: read SOURCE as if damaged where MAPFILE is not `+` (GNU ddrescue's -H).
    #[arg(long, value_name = "MAPFILE", conflicts_with = "offline")]
    pub test_mode: Option<PathBuf>,
    /// Latency added to every read of the source, in milliseconds (with or without --test-mode).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 0,
        conflicts_with = "offline"
    )]
    pub test_latency: u64,
    /// Internal: report readiness on this descriptor (used when re-executing as a daemon).
    #[arg(long, hide = true, value_name = "FD")]
    pub ready_fd: Option<i32>,
}

/// Parses a byte count with an optional k/M suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix("k"))
    {
        (n, 1024u64)
    } else if let Some(n) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix("m"))
    {
        (n, 1024 * 1024)
    } else {
        (lower.as_str(), 1)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count (e.g. 65536, 64k, 1M)"))?;
    n.checked_mul(mult)
        .and_then(|b| u32::try_from(b).ok())
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("'{s}' is out of range"))
}

/// What a daemon serves: from `add`'s arguments or, for `recover`, from the device's json.
#[derive(Debug, Clone)]
pub(super) struct ServeOptions {
    /// The source (absolute); `None` offline.
    pub source: Option<PathBuf>,
    /// Cache directory (absolute), or `None` for the default one of the media.
    pub cache: Option<PathBuf>,
    pub sector_size: Option<u32>,
    pub queues: u16,
    pub depth: u16,
    pub read_size: Option<u32>,
    pub bad_retries: u32,
    pub test_mode: Option<PathBuf>,
    pub test_latency_ms: u64,
}

impl ServeOptions {
    fn from_args(args: &AddArgs) -> anyhow::Result<ServeOptions> {
        let abs = |p: &Path, what: &str| {
            std::path::absolute(p).with_context(|| format!("bad {what} path {}", p.display()))
        };
        let (source, cache) = if args.offline {
            let dir = args.cache.as_deref().unwrap_or(&args.source);
            (None, Some(abs(dir, "cache")?))
        } else {
            let source = std::fs::canonicalize(&args.source)
                .with_context(|| format!("cannot find source {}", args.source.display()))?;
            let cache = args.cache.as_deref().map(|c| abs(c, "cache")).transpose()?;
            (Some(source), cache)
        };
        let test_mode = args
            .test_mode
            .as_deref()
            .map(|m| abs(m, "test-mode mapfile"))
            .transpose()?;
        Ok(ServeOptions {
            source,
            cache,
            sector_size: args.sector_size,
            queues: args.queues,
            depth: args.depth,
            read_size: args.read_size,
            bad_retries: args.bad_retries,
            test_mode,
            test_latency_ms: args.test_latency,
        })
    }

    /// The options a recovering daemon serves a device with.
    pub fn from_config(cfg: &DeviceConfig) -> ServeOptions {
        ServeOptions {
            source: cfg.source.clone(),
            cache: Some(cfg.cache.clone()),
            sector_size: cfg.sector_size_override,
            queues: cfg.queues,
            depth: cfg.depth,
            read_size: cfg.read_size,
            bad_retries: cfg.bad_retries,
            test_mode: cfg.test_mode.clone(),
            test_latency_ms: cfg.test_latency_ms,
        }
    }
}

/// The media and its (checked, maybe new) cache.
struct Prepared {
    media: Arc<dyn Media>,
    cache: Cache,
}

/// Opens the media (or the offline stand-in) and opens or creates its cache.
fn prepare(opts: &ServeOptions) -> anyhow::Result<Prepared> {
    let Some(source) = &opts.source else {
        let dir = opts
            .cache
            .as_deref()
            .ok_or_else(|| anyhow!("--offline needs a cache directory"))?;
        let cache = Cache::open(dir)?;
        return Ok(Prepared {
            media: Arc::new(OfflineMedia::new(&cache)),
            cache,
        });
    };
    let mopts = MediaOptions {
        sector_size: opts.sector_size,
        ..MediaOptions::default()
    };
    let latency = Duration::from_millis(opts.test_latency_ms);
    let media: Arc<dyn Media> = match &opts.test_mode {
        Some(damage) => Arc::new(TestMedia::open(source, damage, mopts, latency)?),
        None if !latency.is_zero() => {
            let inner = FileMedia::open(source, mopts)?;
            let mut undamaged = FileMap::new(inner.size());
            undamaged.set(0, inner.size(), Status::Finished);
            Arc::new(TestMedia::from_parts(inner, undamaged, latency))
        }
        None => Arc::new(FileMedia::open(source, mopts)?),
    };
    // Before any cache is made for media that cannot be served.
    ublk::check_geometry(media.size(), media.sector_size())?;
    let identity = media::fingerprint(media.as_ref(), source)?;
    let info = SourceInfo {
        path: source.display().to_string(),
        size: media.size(),
        sector_size: media.sector_size(),
        identity: identity.to_string(),
    };
    let dir = match &opts.cache {
        Some(d) => d.clone(),
        // A size-only identity would let two damaged discs of one size share a cache.
        None if !identity.head_read => anyhow::bail!(
            "the first 64 KiB of {} cannot be read, so blkcache cannot tell this media from other \
             media of the same size; name its cache yourself with --cache DIR",
            source.display()
        ),
        None => cache::default_dir(&info.identity)?,
    };
    let (cache, created) = Cache::open_or_create(&dir, &info)?;
    if created {
        tracing::info!(cache = %dir.display(), source = %info.path, "new cache");
    }
    Ok(Prepared { media, cache })
}

/// What `add` prints (`--json`), and what the daemon reports on its ready line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Added {
    pub device: String,
    pub source: Option<PathBuf>,
    pub cache: PathBuf,
    pub size: u64,
    pub sector_size: u32,
}

impl Added {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string(self)?)?;
        } else {
            writeln!(out, "{}", self.device)?;
        }
        Ok(())
    }
}

pub fn run(args: AddArgs, verbose: u8) -> anyhow::Result<ExitCode> {
    let opts = ServeOptions::from_args(&args)?;
    if args.foreground {
        return serve_foreground(&opts, None, args.ready_fd, args.json);
    }
    // Resolve (and create) the cache here, so errors are reported directly and the daemon
    // gets the same directory and a place for its log.
    let prepared = prepare(&opts)?;
    let cache_dir = prepared.cache.dir().to_path_buf();
    let log = prepared.cache.log_path();
    drop(prepared);
    let mut child_args: Vec<OsString> = vec!["add".into()];
    for _ in 0..verbose {
        child_args.push("-v".into());
    }
    match &opts.source {
        Some(s) => child_args.push(s.into()),
        None => {
            child_args.push(cache_dir.clone().into());
            child_args.push("--offline".into());
        }
    }
    child_args.extend(["--cache".into(), cache_dir.into()]);
    child_args.extend(["--queues".into(), opts.queues.to_string().into()]);
    child_args.extend(["--depth".into(), opts.depth.to_string().into()]);
    if let Some(s) = opts.sector_size {
        child_args.extend(["--sector-size".into(), s.to_string().into()]);
    }
    if let Some(r) = opts.read_size {
        child_args.extend(["--read-size".into(), r.to_string().into()]);
    }
    if opts.bad_retries > 0 {
        child_args.extend(["--bad-retries".into(), opts.bad_retries.to_string().into()]);
    }
    if let Some(m) = &opts.test_mode {
        child_args.extend(["--test-mode".into(), m.into()]);
    }
    if opts.test_latency_ms > 0 {
        child_args.extend([
            "--test-latency".into(),
            opts.test_latency_ms.to_string().into(),
        ]);
    }
    let added = spawn_daemon(child_args, &log)?;
    added.print(args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The readiness pipe of a daemon started by `spawn_daemon`, shared by the ready callback and
/// the error path so exactly one line is written.
type ReadyPipe = Arc<Mutex<Option<File>>>;

/// Serves in this process until the device stops: a new device, or (`recover`) device `recover`
/// re-attached. With `ready_fd`, reports `ready {json}` or `error: ...` there.
pub(super) fn serve_foreground(
    opts: &ServeOptions,
    recover: Option<u32>,
    ready_fd: Option<i32>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pipe: ReadyPipe = Arc::new(Mutex::new(ready_fd.map(|fd| {
        // SAFETY: the fd was opened by our parent for us alone (spawn_daemon) and is not owned
        // by anything else in this process; the File takes ownership and closes it once.
        unsafe { File::from_raw_fd(fd) }
    })));
    let result = serve_inner(opts, recover, pipe.clone(), json, ready_fd.is_some());
    if let Err(e) = &result {
        let taken = pipe.lock().map(|mut p| p.take()).unwrap_or(None);
        if let Some(mut f) = taken {
            let line = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(f, "error: {line}");
        }
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn serve_inner(
    opts: &ServeOptions,
    recover: Option<u32>,
    pipe: ReadyPipe,
    json: bool,
    daemon: bool,
) -> anyhow::Result<()> {
    // Before any thread exists (unshare refuses threaded processes).
    if let Err(e) = ublk::isolate_mount_namespace() {
        tracing::warn!(error = %e, "cannot move to a private mount namespace; never mount the device in the daemon's namespace");
    }
    let prepared = prepare(opts)?;
    if daemon {
        // Hold no directory busy.
        let _ = std::env::set_current_dir("/");
    }
    let cache = &prepared.cache;
    let media = prepared.media.clone();
    let image = Image::open(&cache.image_path())?;
    let mapfile = cache.load_mapfile()?;
    let mut ecfg = EngineConfig::default();
    if let Some(rs) = opts.read_size {
        ecfg.read_size = rs as usize;
    }
    ecfg.bad_retries = opts.bad_retries;
    let engine = Arc::new(Engine::new(
        media.clone(),
        image,
        mapfile,
        cache.mapfile_path(),
        ecfg,
    )?);
    let config = DeviceConfig {
        source: opts.source.clone(),
        cache: cache.dir().to_path_buf(),
        size: media.size(),
        sector_size: media.sector_size(),
        sector_size_override: opts.sector_size,
        queues: opts.queues,
        depth: opts.depth,
        io_buf_bytes: IO_BUF_BYTES,
        read_size: opts.read_size,
        bad_retries: opts.bad_retries,
        test_mode: opts.test_mode.clone(),
        test_latency_ms: opts.test_latency_ms,
        pid: std::process::id() as i32,
        log: cache.log_path(),
    };
    let mut added = Added {
        device: String::new(),
        source: config.source.clone(),
        cache: config.cache.clone(),
        size: config.size,
        sector_size: config.sector_size,
    };
    tracing::info!(media = %media.describe(), cache = %cache.dir().display(), "serving");
    let ready = move |device: &str| {
        added.device = device.to_string();
        let taken = pipe.lock().map(|mut p| p.take()).unwrap_or(None);
        match taken {
            Some(mut f) => {
                let line = serde_json::to_string(&added).unwrap_or_default();
                if let Err(e) = writeln!(f, "ready {line}") {
                    tracing::warn!(error = %e, "cannot report readiness");
                }
            }
            None if !daemon => {
                if let Err(e) = added.print(json) {
                    tracing::warn!(error = %e, "cannot print the device");
                }
            }
            None => {}
        }
    };
    ublk::serve(engine, DeviceSpec { config, recover }, ready)?;
    Ok(())
}

/// Starts `blkcache ARGS --foreground --ready-fd N` in a new session with its output appended
/// to `log`, and waits for its ready line. Returns what it serves.
pub(super) fn spawn_daemon(mut args: Vec<OsString>, log: &Path) -> anyhow::Result<Added> {
    let exe = std::env::current_exe().context("cannot find the blkcache executable")?;
    let (read_end, write_end) = nix::unistd::pipe().context("cannot create a pipe")?;
    // Only the write end goes to the daemon.
    nix::fcntl::fcntl(
        read_end.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("cannot set up the pipe")?;
    args.extend([
        "--foreground".into(),
        "--ready-fd".into(),
        write_end.as_raw_fd().to_string().into(),
    ]);
    let logfile = blkcache::files::private_options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log {}", log.display()))?;
    let log_start = logfile.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(&exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().context("cannot set up the log")?)
        .stderr(logfile);
    // SAFETY: setsid is async-signal-safe and touches no memory; it only detaches the child
    // from our session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    drop(write_end);
    let line = read_ready_line(read_end);
    let show_log = || log_tail(log, log_start);
    match line {
        Ok(Some(l)) if l.starts_with("ready ") => {
            let added: Added = serde_json::from_str(l["ready ".len()..].trim())
                .with_context(|| format!("bad ready line from the daemon: {l}"))?;
            Ok(added)
        }
        Ok(Some(l)) if l.starts_with("error: ") => {
            let _ = child.wait();
            bail!("{}", l["error: ".len()..].trim_end())
        }
        Ok(Some(l)) => bail!("unexpected line from the daemon: {l}{}", show_log()),
        Ok(None) => {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            bail!(
                "the daemon died before the device was ready ({status}); log {}:{}",
                log.display(),
                show_log()
            )
        }
        Err(()) => bail!(
            "the daemon (pid {}) did not report within {} s; it may still be starting; see {}{}",
            child.id(),
            READY_TIMEOUT.as_secs(),
            log.display(),
            show_log()
        ),
    }
}

/// The first line on the pipe, `None` at EOF, `Err` on timeout. The read runs on a helper
/// thread so the wait can end.
fn read_ready_line(fd: OwnedFd) -> Result<Option<String>, ()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = BufReader::new(File::from(fd)).read_line(&mut line);
        let _ = tx.send(match got {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_string()),
        });
    });
    rx.recv_timeout(READY_TIMEOUT).map_err(|_| ())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("8192M").is_err());
    }
}
