//! The control socket of a serving daemon: how `blkcache fill` asks the daemon that serves a
//! cache to fill it, and how `blkcache status` gets the map as the engine holds it now.
//!
//! One socket per served cache, `CACHE/control.sock`, made by whichever daemon serves the cache
//! (ublk, kernel nbd, `blkcache serve`: all through [`ControlSocket`]). The cache directory is
//! the caller's alone (checked when the cache is opened), the socket is mode 0600 and both ends
//! check that the other runs as the same user (`SO_PEERCRED`). The daemon holds the image's
//! exclusive lock, so a socket file found at start is a dead daemon's and is replaced; a client
//! that finds the file but no listener (`ECONNREFUSED`) knows no daemon serves the cache. Paths
//! too long for `sun_path` (108 bytes) are reached through `/proc/self/fd/N/control.sock`.
//!
//! Protocol, version [`VERSION`]: one JSON object per line each way, each with `"v"`. Requests
//! ([`Request`], tag `"op"`): `status`; `fill` (options, `detach`); `stop`. Replies ([`Reply`],
//! tag `"reply"`): `status`, `started`, `progress`, `done`, `stopping`, `error`. A `fill` not
//! detached is followed on its connection (a `progress` line every [`PROGRESS_EVERY`], then
//! `done` once the map is saved) and stopped when that connection closes; a `stop` line on it
//! stops it too.

mod client;
mod server;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::{CacheHealth, Counters, OnBadSector};
use crate::rescue::{FillOptions, Live, Summary};

pub use client::{connect, Client, Stopper};
pub use server::ControlSocket;

/// The protocol version both ends speak.
pub const VERSION: u32 = 1;

/// The socket's name in the cache directory.
pub const SOCKET_FILE: &str = "control.sock";

/// How often a followed fill reports.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The longest line either end accepts (a status line carries the whole map).
pub const MAX_LINE: u64 = 256 << 20;

/// The control socket of the cache in `cache`.
pub fn socket_path(cache: &Path) -> PathBuf {
    cache.join(SOCKET_FILE)
}

/// One line on the socket: the protocol version and a request or reply.
#[derive(Debug, Serialize, Deserialize)]
pub struct Message<T> {
    /// [`VERSION`].
    pub v: u32,
    /// The request or reply.
    #[serde(flatten)]
    pub body: T,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The live map and figures: replied with `status`.
    Status,
    /// Start a fill (`started`, or `error` if one runs); unless `detach`, follow it here.
    Fill {
        /// GNU ddrescue's options.
        options: FillOptions,
        /// Leave it running when this connection closes.
        detach: bool,
        /// Who asks, for `status` ("blkcache fill (pid N)").
        origin: String,
    },
    /// Stop the running fill after its read in progress: replied with `stopping` (then `done`
    /// where it is followed).
    Stop,
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The live state.
    Status(Box<LiveStatus>),
    /// The fill started.
    Started {
        /// Its number in this daemon.
        id: u64,
    },
    /// A followed fill's figures.
    Progress(Box<Live>),
    /// A followed fill ended; the map is saved.
    Done(Box<Summary>),
    /// The fill will stop after its read in progress.
    Stopping,
    /// The request failed.
    Error {
        /// Why, in one line.
        message: String,
    },
}

/// The daemon's state, live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    /// The daemon's process.
    pub pid: u32,
    /// What it serves the cache as: a device path or an NBD URI (`None` while it starts).
    pub serving: Option<String>,
    /// The cache directory.
    pub cache: PathBuf,
    /// The map as the engine holds it now, in GNU ddrescue's mapfile format.
    pub mapfile: String,
    /// The engine's counters since the daemon started.
    pub counters: Counters,
    /// Whether the cache's disk takes writes.
    pub health: CacheHealth,
    /// What a reader of a bad sector gets (EIO, or zeros: `add --on-bad-sector`).
    #[serde(default)]
    pub on_bad_sector: OnBadSector,
    /// Whether it has a source to fill from (not served offline).
    pub can_fill: bool,
    /// The running fill, or the last one.
    pub fill: Option<FillStatus>,
}

/// A daemon's fill, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FillStatus {
    /// Who started it.
    pub origin: String,
    /// Whether it still runs.
    pub running: bool,
    /// Its figures as of its last read.
    pub live: Option<Live>,
    /// Its summary, once it ended.
    pub summary: Option<Summary>,
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A system call on the socket failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The other end runs as another user.
    #[error("{} belongs to a process of uid {uid}, not to uid {euid}", path.display())]
    Foreign {
        /// The socket.
        path: PathBuf,
        /// The other end's uid.
        uid: u32,
        /// Ours.
        euid: u32,
    },
    /// The daemon speaks another version (started by another blkcache).
    #[error("the daemon speaks control protocol version {found}, this blkcache speaks {VERSION}: it was started by another version of blkcache (stop and start it again)")]
    Version {
        /// Its version.
        found: u32,
    },
    /// A line that is not the protocol.
    #[error("bad line on the control socket: {0}")]
    Protocol(String),
    /// The daemon closed the connection.
    #[error("the daemon closed the control connection (did the device stop?)")]
    Gone,
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Runs `f` on `path`, or, when `path` is too long for a socket address (108 bytes with its
/// NUL), on `/proc/self/fd/N/NAME` with N an `O_PATH` descriptor of its directory.
fn with_socket_path<R>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<R>,
) -> std::io::Result<R> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().len() < 108 {
        return f(path);
    }
    let dir = crate::files::parent_dir(path);
    let name = path.file_name().unwrap_or_default();
    let fd = nix::fcntl::open(
        &dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it; the OwnedFd closes it.
    let dir_fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let short = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&dir_fd).to_string())
        .join(name);
    let r = f(&short);
    drop(dir_fd);
    r
}

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &std::os::unix::net::UnixStream) -> std::io::Result<u32> {
    let cred = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(cred.uid())
}
