//! Listening: a unix socket (mode 0600) or a TCP address; a thread per connection (handshake,
//! then transmission); stopping on a flag or a signal, with the engine's map saved on a timer
//! and at the end.
//!
//! Must never leave a unix socket others can connect to, never serve more than
//! `max_connections` clients at once, and never let a stalled handshake hold a thread forever.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};

use super::export::{EngineExport, Export};
use super::handshake::{negotiate, Outcome};
use super::transmission::serve_requests;
use super::{NbdError, Socket};

/// How the server treats its clients.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Reads served at once per connection.
    pub workers: usize,
    /// Clients served at once; more are closed at once.
    pub max_connections: usize,
    /// Time a client gets for each handshake message.
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 4,
            max_connections: 32,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A unix socket (removed when dropped).
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
    },
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds a unix socket at `path`, mode 0600 from the start (only its owner may connect).
    /// A stale socket there (nobody listening) is replaced; anything else is refused.
    pub fn unix(path: &Path) -> Result<Listener, NbdError> {
        let err = |op, source| NbdError::Listen {
            op,
            what: path.display().to_string(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            let stale = meta.file_type().is_socket()
                && matches!(
                    UnixStream::connect(path),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
                );
            if !stale {
                return Err(err(
                    "listen on",
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the path exists (and is not a stale socket)",
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| err("remove the stale socket", e))?;
        }
        // The mode comes from the umask at bind time; set it so the socket is never, even
        // briefly, open to others. The umask is per process: the server binds before it
        // starts threads.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| err("listen on", e))?;
        Ok(Listener::Unix {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Binds a TCP socket.
    pub fn tcp(addr: SocketAddr) -> Result<Listener, NbdError> {
        TcpListener::bind(addr)
            .map(Listener::Tcp)
            .map_err(|source| NbdError::Listen {
                op: "listen on",
                what: addr.to_string(),
                source,
            })
    }

    /// The NBD URI a client connects with (`nbdinfo URI`).
    pub fn uri(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("nbd+unix:///?socket={}", path.display()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(SocketAddr::V6(a)) => format!("nbd://[{}]:{}", a.ip(), a.port()),
                Ok(a) => format!("nbd://{a}"),
                Err(_) => "nbd://?".to_string(),
            },
        }
    }

    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix { listener, .. } => listener.accept().map(|(s, _)| Conn::Unix(s)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                // The protocol asks for it: replies are often larger than a packet.
                s.set_nodelay(true)?;
                Ok(Conn::Tcp(s))
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix { listener, .. } => listener.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An accepted connection.
#[derive(Debug)]
pub enum Conn {
    /// Over a unix socket (or a socketpair).
    Unix(UnixStream),
    /// Over TCP.
    Tcp(TcpStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

impl Socket for Conn {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        match self {
            Conn::Unix(s) => Socket::shutdown(s),
            Conn::Tcp(s) => Socket::shutdown(s),
        }
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }
}

/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Serves `export` on `listener` until `stop` is set: a thread per client. On stop, every
/// connection is cut and its thread joined before this returns.
pub fn serve(
    listener: &Listener,
    export: &dyn Export,
    stop: &AtomicBool,
    cfg: &ServerConfig,
) -> Result<(), NbdError> {
    let open: Mutex<HashMap<u64, Conn>> = Mutex::new(HashMap::new());
    let lock = || open.lock().unwrap_or_else(PoisonError::into_inner);
    std::thread::scope(|s| {
        let mut next_id = 0u64;
        let result = loop {
            if stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            let mut fds = [PollFd::new(listener.fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(STOP_POLL).unwrap_or(PollTimeout::NONE),
            ) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => break Err(NbdError::Io(e.into())),
            }
            let conn = match listener.accept() {
                Ok(c) => c,
                Err(e) => {
                    // A client that left before accept, or no descriptors for now: keep going.
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(STOP_POLL);
                    continue;
                }
            };
            if lock().len() >= cfg.max_connections {
                tracing::warn!(
                    max = cfg.max_connections,
                    "too many NBD clients; closing a new connection"
                );
                continue;
            }
            let Ok(handle) = conn.try_clone() else {
                continue;
            };
            let id = next_id;
            next_id += 1;
            lock().insert(id, handle);
            let open = &open;
            s.spawn(move || {
                tracing::info!(client = id, "NBD client connected");
                match handle_connection(conn, export, cfg) {
                    Ok(()) => tracing::info!(client = id, "NBD client left"),
                    Err(e) => tracing::info!(client = id, error = %e, "NBD client dropped"),
                }
                open.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        };
        for c in lock().values() {
            c.shutdown();
        }
        result
    })
}

/// One client: handshake (each message within the handshake timeout), then requests.
fn handle_connection(
    mut conn: Conn,
    export: &dyn Export,
    cfg: &ServerConfig,
) -> Result<(), NbdError> {
    conn.set_read_timeout(Some(cfg.handshake_timeout))?;
    match negotiate(&mut conn, export.info())? {
        Outcome::Aborted => Ok(()),
        Outcome::Transmission { structured } => {
            conn.set_read_timeout(None)?;
            serve_requests(conn, export, structured, cfg.workers)
        }
    }
}

/// How often the saver offers the engine a (rate-limited) map save.
const SAVE_TICK: Duration = Duration::from_secs(1);

/// Serves `export` until SIGINT, SIGTERM or SIGHUP: maps saved on the engine's schedule and
/// once more at the end. Must be called before the process starts other threads (signals are
/// blocked here, and inherited).
pub fn serve_until_signalled(
    listener: &Listener,
    export: &EngineExport,
    cfg: &ServerConfig,
) -> Result<(), NbdError> {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| NbdError::Setup(format!("cannot block signals: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("blkcache-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(signal = %sig, "stopping: closing connections, then saving the map");
            }
            flag.store(true, Ordering::SeqCst);
        })
        .map_err(|e| NbdError::Setup(format!("cannot start the signal thread: {e}")))?;
    let engine = export.engine().clone();
    let (saver_stop, ticks) = mpsc::channel::<()>();
    let saver = std::thread::Builder::new()
        .name("blkcache-saver".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = ticks.recv_timeout(SAVE_TICK) {
                engine.maybe_save();
            }
        })
        .map_err(|e| NbdError::Setup(format!("cannot start the saver thread: {e}")))?;
    let result = serve(listener, export, &stop, cfg);
    drop(saver_stop);
    let _ = saver.join();
    let engine = export.engine();
    match engine.save() {
        Ok(()) => tracing::info!("map saved"),
        Err(e) => {
            tracing::error!(error = %e, "final map save failed; the image keeps every cached byte, the map may miss the last ones")
        }
    }
    let counters = engine.counters();
    tracing::info!(?counters, "served");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn unix_socket_is_0600_and_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = Listener::unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Someone listens: refused.
        assert!(Listener::unix(&path).is_err());
        drop(l);
        // A socket nobody listens on any more (std leaves the file): replaced.
        let stale = dir.path().join("stale");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let again = Listener::unix(&stale).unwrap();
        assert!(UnixStream::connect(&stale).is_ok());
        drop(again);
        // Anything else at the path is refused and left alone.
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(Listener::unix(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
    }

    #[test]
    fn uris() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = Listener::unix(&path).unwrap();
        assert_eq!(l.uri(), format!("nbd+unix:///?socket={}", path.display()));
        drop(l);
        assert!(!path.exists(), "the socket is removed with its listener");
        let t = Listener::tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(t.uri().starts_with("nbd://127.0.0.1:"), "{}", t.uri());
    }
}
