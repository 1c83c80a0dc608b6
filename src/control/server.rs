//! The daemon's end: a listener thread, one thread per connection (at most
//! [`MAX_CONNECTIONS`]), the fills in [`BackgroundFill`].

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};

use super::{
    peer_uid, socket_path, with_socket_path, ControlError, FillStatus, LiveStatus, Message, Reply,
    Request, MAX_LINE, PROGRESS_EVERY, VERSION,
};
use crate::engine::Engine;
use crate::rescue::background::{BackgroundFill, Run};

/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 16;

/// A connection silent this long (between requests) is closed.
const IDLE: Duration = Duration::from_secs(600);

/// A daemon's control socket, listening until dropped (which removes it).
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: Arc<UnixListener>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    engine: Arc<Engine>,
    fills: Arc<BackgroundFill>,
    cache: PathBuf,
    can_fill: bool,
    serving: Mutex<Option<String>>,
    euid: u32,
    connections: AtomicUsize,
}

impl ControlSocket {
    /// Listens on `CACHE/control.sock` for the daemon serving `engine` from the cache in
    /// `cache` (whose image lock it holds: a socket file there is a dead daemon's and is
    /// replaced). `can_fill`: it has a source (not served offline). Its threads start with
    /// every signal blocked, whatever the caller's mask.
    pub fn start(
        engine: Arc<Engine>,
        fills: Arc<BackgroundFill>,
        cache: &Path,
        can_fill: bool,
    ) -> Result<ControlSocket, ControlError> {
        let path = socket_path(cache);
        let err = |op| {
            let path = path.clone();
            move |source| ControlError::Io { op, path, source }
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(&path).map_err(err("remove the stale socket"))?;
            }
            Ok(_) => {
                return Err(ControlError::Io {
                    op: "make a socket (something else is in the way):",
                    path,
                    source: std::io::ErrorKind::AlreadyExists.into(),
                })
            }
            Err(_) => {}
        }
        let listener =
            with_socket_path(&path, |p| UnixListener::bind(p)).map_err(err("listen on"))?;
        std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(crate::files::FILE_MODE),
        )
        .map_err(err("set the mode of"))?;
        let listener = Arc::new(listener);
        let shared = Arc::new(Shared {
            engine,
            fills,
            cache: cache.to_owned(),
            can_fill,
            serving: Mutex::new(None),
            euid: nix::unistd::geteuid().as_raw(),
            connections: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (listener, stop, shared) = (listener.clone(), stop.clone(), shared.clone());
            spawn_masked("blkcache-control", move || {
                accept(&listener, &stop, &shared)
            })
            .map_err(err("start the listener thread for"))?
        };
        tracing::debug!(socket = %path.display(), "control socket listening");
        Ok(ControlSocket {
            path,
            listener,
            stop,
            thread: Some(thread),
            shared,
        })
    }

    /// Says what the cache is served as (the device, or an NBD URI), for `status`.
    pub fn set_serving(&self, what: &str) {
        *self
            .shared
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(what.to_string());
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept (EINVAL on a listener shut down).
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&*self.listener),
            nix::sys::socket::Shutdown::Both,
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        // A followed fill that just ended reports `done` within a progress interval: give its
        // connection that long (the process may exit next).
        let deadline = std::time::Instant::now() + 4 * PROGRESS_EVERY;
        while self.shared.connections.load(Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns a thread with every signal blocked (the daemon's signal thread takes them; a stop
/// signal delivered here would end the process unsaved). Its own threads inherit the mask.
fn spawn_masked<F>(name: &str, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old))?;
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    spawned
}

fn accept(listener: &UnixListener, stop: &AtomicBool, shared: &Arc<Shared>) {
    loop {
        let conn = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match peer_uid(&stream) {
            Ok(uid) if uid == shared.euid => {}
            other => {
                tracing::warn!(peer = ?other, "control socket: refused a connection from another user");
                continue;
            }
        }
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("control socket: too many connections");
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("blkcache-control-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(&s, stream) {
                    tracing::debug!(error = %e, "control connection ended");
                }
                s.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One connection's line reader and writer.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// A line read, or why not.
enum Line {
    Request(Request),
    Bad(String),
    Closed,
}

impl Conn {
    fn send(&mut self, reply: Reply) -> std::io::Result<()> {
        let mut line = serde_json::to_string(&Message {
            v: VERSION,
            body: reply,
        })
        .map_err(std::io::Error::other)?;
        line.push('\n');
        self.writer.write_all(line.as_bytes())
    }

    fn read(&mut self) -> std::io::Result<Line> {
        let mut line = String::new();
        let n = (&mut self.reader).take(MAX_LINE).read_line(&mut line)?;
        if n == 0 {
            return Ok(Line::Closed);
        }
        if !line.ends_with('\n') {
            return Ok(if n as u64 >= MAX_LINE {
                Line::Bad("line too long".into())
            } else {
                Line::Closed
            });
        }
        Ok(match serde_json::from_str::<serde_json::Value>(&line) {
            Err(e) => Line::Bad(format!("not JSON: {e}")),
            Ok(v) => match v.get("v").and_then(serde_json::Value::as_u64) {
                Some(found) if found != u64::from(VERSION) => Line::Bad(format!(
                    "this daemon speaks control protocol version {VERSION}, not {found}"
                )),
                None => Line::Bad("no protocol version (\"v\")".into()),
                Some(_) => match serde_json::from_value::<Message<Request>>(v) {
                    Ok(m) => Line::Request(m.body),
                    Err(e) => Line::Bad(format!("bad request: {e}")),
                },
            },
        })
    }

    /// Whether a line can be read within `wait`.
    fn readable(&self, wait: Duration) -> bool {
        if !self.reader.buffer().is_empty() {
            return true;
        }
        let fd = self.reader.get_ref().as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        nix::poll::poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0)
    }
}

fn serve_connection(shared: &Shared, stream: UnixStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let mut conn = Conn {
        reader: BufReader::new(stream.try_clone()?),
        writer: stream,
    };
    loop {
        let request = match conn.read()? {
            Line::Closed => return Ok(()),
            Line::Bad(message) => {
                conn.send(Reply::Error { message })?;
                continue;
            }
            Line::Request(r) => r,
        };
        match request {
            Request::Status => conn.send(Reply::Status(Box::new(status(shared))))?,
            Request::Stop => match shared.fills.current() {
                Some(run) if run.summary().is_none() => {
                    run.stop();
                    tracing::info!("fill stop asked for over the control socket");
                    conn.send(Reply::Stopping)?;
                }
                _ => conn.send(Reply::Error {
                    message: "no fill is running".into(),
                })?,
            },
            Request::Fill {
                options,
                detach,
                origin,
            } => {
                if !shared.can_fill {
                    conn.send(Reply::Error {
                        message: "the cache is served offline: there is no source to fill from"
                            .into(),
                    })?;
                    continue;
                }
                match shared.fills.start(options, origin) {
                    Err(e) => conn.send(Reply::Error {
                        message: e.to_string(),
                    })?,
                    Ok(run) => {
                        conn.send(Reply::Started { id: run.id })?;
                        if !detach {
                            return follow(&mut conn, &run);
                        }
                    }
                }
            }
        }
    }
}

/// Reports `run` on `conn` until it ends; stops it when the client asks or goes away.
fn follow(conn: &mut Conn, run: &Run) -> std::io::Result<()> {
    loop {
        if let Some(summary) = run.summary() {
            return conn.send(Reply::Done(Box::new(summary)));
        }
        if conn.readable(PROGRESS_EVERY) {
            match conn.read() {
                Ok(Line::Request(Request::Stop)) => {
                    run.stop();
                    tracing::info!("fill stop asked for by its client");
                    conn.send(Reply::Stopping)?;
                }
                Ok(Line::Request(_)) => conn.send(Reply::Error {
                    message: "a fill is being followed on this connection: only stop".into(),
                })?,
                Ok(Line::Bad(message)) => conn.send(Reply::Error { message })?,
                Ok(Line::Closed) | Err(_) => {
                    run.stop();
                    tracing::info!("the fill's client went away: stopping the fill");
                    return Ok(());
                }
            }
            continue;
        }
        if let Some(live) = run.live() {
            if let Err(e) = conn.send(Reply::Progress(Box::new(live))) {
                run.stop();
                tracing::info!("the fill's client went away: stopping the fill");
                return Err(e);
            }
        }
    }
}

fn status(shared: &Shared) -> LiveStatus {
    let mapfile = crate::map::format(&shared.engine.mapfile_snapshot());
    LiveStatus {
        pid: std::process::id(),
        serving: shared
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        cache: shared.cache.clone(),
        mapfile,
        counters: shared.engine.counters(),
        health: shared.engine.health(),
        on_bad_sector: shared.engine.on_bad_sector(),
        can_fill: shared.can_fill,
        fill: shared.fills.current().map(|run| {
            let summary = run.summary();
            FillStatus {
                origin: run.origin.clone(),
                running: summary.is_none(),
                live: run.live(),
                summary,
            }
        }),
    }
}
