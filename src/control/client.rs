//! The client's end: `blkcache fill` and `blkcache status` talking to a daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    peer_uid, socket_path, with_socket_path, ControlError, LiveStatus, Message, Reply, Request,
    MAX_LINE, VERSION,
};

/// A connection to the daemon serving a cache.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Connects to the daemon serving the cache in `cache`; `None` when none does (no socket, or a
/// dead daemon's: connection refused).
pub fn connect(cache: &Path) -> Result<Option<Client>, ControlError> {
    let path = socket_path(cache);
    let stream = match with_socket_path(&path, |p| UnixStream::connect(p)) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR)
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(ControlError::Io {
                op: "connect to",
                path,
                source,
            })
        }
    };
    let euid = nix::unistd::geteuid().as_raw();
    let uid = peer_uid(&stream).map_err(|source| ControlError::Io {
        op: "check the owner of",
        path: path.clone(),
        source,
    })?;
    if uid != euid {
        return Err(ControlError::Foreign { path, uid, euid });
    }
    let reader = stream.try_clone().map_err(|source| ControlError::Io {
        op: "use",
        path: path.clone(),
        source,
    })?;
    Ok(Some(Client {
        path,
        reader: BufReader::new(reader),
        writer: stream,
    }))
}

fn send(path: &Path, mut w: &UnixStream, request: &Request) -> Result<(), ControlError> {
    let mut line = serde_json::to_string(&Message {
        v: VERSION,
        body: request,
    })
    .map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push('\n');
    w.write_all(line.as_bytes())
        .map_err(|source| ControlError::Io {
            op: "write to",
            path: path.to_owned(),
            source,
        })
}

impl Client {
    /// Sends one request.
    pub fn send(&mut self, request: &Request) -> Result<(), ControlError> {
        send(&self.path, &self.writer, request)
    }

    /// Waits for the next reply (at most `timeout`; `None`: as long as it takes). An `error`
    /// reply is returned as [`ControlError::Refused`].
    pub fn reply(&mut self, timeout: Option<Duration>) -> Result<Reply, ControlError> {
        let io = |op| {
            let path = self.path.clone();
            move |source| ControlError::Io { op, path, source }
        };
        self.writer.set_read_timeout(timeout).map_err(io("use"))?;
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(io("read from"))?;
        if n == 0 || !line.ends_with('\n') {
            return Err(ControlError::Gone);
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| ControlError::Protocol(e.to_string()))?;
        match v.get("v").and_then(serde_json::Value::as_u64) {
            Some(found) if found == u64::from(VERSION) => {}
            found => {
                return Err(ControlError::Version {
                    found: found.unwrap_or(0) as u32,
                })
            }
        }
        let m: Message<Reply> =
            serde_json::from_value(v).map_err(|e| ControlError::Protocol(e.to_string()))?;
        match m.body {
            Reply::Error { message } => Err(ControlError::Refused(message)),
            r => Ok(r),
        }
    }

    /// The daemon's live state (waits at most `timeout`).
    pub fn status(&mut self, timeout: Duration) -> Result<LiveStatus, ControlError> {
        self.send(&Request::Status)?;
        match self.reply(Some(timeout))? {
            Reply::Status(s) => Ok(*s),
            other => Err(ControlError::Protocol(format!(
                "expected a status reply, got {other:?}"
            ))),
        }
    }

    /// A handle that sends `stop` on this connection from another thread (Ctrl-C).
    pub fn stopper(&self) -> Result<Stopper, ControlError> {
        let stream = self.writer.try_clone().map_err(|source| ControlError::Io {
            op: "use",
            path: self.path.clone(),
            source,
        })?;
        Ok(Stopper {
            path: self.path.clone(),
            stream,
        })
    }
}

/// Sends `stop` on a followed fill's connection.
#[derive(Debug)]
pub struct Stopper {
    path: PathBuf,
    stream: UnixStream,
}

impl Stopper {
    /// Asks the daemon to stop the fill after its read in progress.
    pub fn stop(&self) -> Result<(), ControlError> {
        send(&self.path, &self.stream, &Request::Stop)
    }
}
