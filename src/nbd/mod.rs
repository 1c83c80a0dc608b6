//! The NBD adapter: serves an [`Engine`](crate::engine::Engine) as a read-only export to any
//! NBD client (`nbdcopy`, `nbdinfo`, `nbdfuse`, `qemu-img`, the kernel's `nbd` driver).
//! Written from the protocol document (NetworkBlockDevice/nbd `doc/proto.md`); see
//! docs/ARCHITECTURE.md for why no crate.
//!
//! - `proto`: the wire format, pure bytes <-> messages (fuzzed);
//! - `handshake`: fixed newstyle option haggling;
//! - `transmission`: requests of one connection, reads on a few worker threads;
//! - `export`: what is served, and the one place engine errors become NBD errors;
//! - `server`: unix and TCP listeners, a thread per connection, stop and map saves;
//! - [`kernel`]: the kernel's `nbd` driver attached over a socketpair (`/dev/nbdN` without ublk).
//!
//! Must never contain read policy (the engine's), never accept a write, and never panic or
//! allocate without bound on anything a client sends.

mod export;
mod handshake;
pub mod kernel;
pub mod proto;
mod server;
mod transmission;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub use export::{read_error, EngineExport, Export, ExportInfo, ReadError};
pub use handshake::{negotiate, Outcome, MAX_OPTIONS, TRANSMISSION_FLAGS};
pub use server::{serve, serve_until_signalled, Conn, Listener, ServerConfig};
pub use transmission::{check_read, serve_requests};

/// Why a connection or the server ended in error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NbdError {
    /// The socket failed, or the client left mid-message.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The client sent something that is not NBD.
    #[error("protocol violation: {0}")]
    Protocol(#[source] proto::ProtoError),
    /// `NBD_OPT_EXPORT_NAME` for an export this server does not have.
    #[error("the client asked for export {0:?}, which this server does not serve")]
    UnknownExport(String),
    /// The client kept sending options without choosing an export.
    #[error("more than {MAX_OPTIONS} options without choosing an export")]
    TooManyOptions,
    /// The socket could not be set up.
    #[error("cannot {op} {what}")]
    Listen {
        /// What was being done.
        op: &'static str,
        /// The socket path or address.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel has no nbd driver (even after `modprobe nbd`).
    #[error(
        "/dev/nbd0 is missing: the kernel has no nbd driver (modprobe nbd; CONFIG_BLK_DEV_NBD)"
    )]
    NoDriver,
    /// Signal handling or a thread could not be set up.
    #[error("cannot set up the server: {0}")]
    Setup(String),
}

/// A connected stream the server can split between a reader and writers, and cut.
pub trait Socket: Read + Write + Send + Sized {
    /// Another handle to the same socket.
    fn try_clone(&self) -> io::Result<Self>;
    /// Shuts both directions down, waking anything blocked on it. Never fails.
    fn shutdown(&self);
    /// Bounds each read (`None`: wait forever).
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Socket for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn shutdown(&self) {
        let _ = UnixStream::shutdown(self, Shutdown::Both);
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
}

impl Socket for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn shutdown(&self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
}
