//! The transmission phase of one connection: this thread reads requests; reads go to a few
//! worker threads (a slow miss does not hold up hits behind it), whose replies share the socket
//! under a lock. Replies may come out of order: the protocol allows it, the cookie matches them.
//!
//! Reads of any alignment are served (widened to whole sectors, then cut); past the end,
//! longer than [`proto::MAX_PAYLOAD`] or with unknown flags they fail with `EINVAL`. Writes,
//! trims and write-zeroes fail with `EPERM` (a write's payload is read and dropped). Garbage
//! (a bad magic, an over-long write) ends the connection.
//!
//! Must never send a reply the client cannot frame (a short data payload), never let one
//! client hold more than `workers + 1` read buffers, and never panic on client input.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, PoisonError};

use super::export::{Export, ReadError};
use super::proto::{self, Request};
use super::{NbdError, Socket};

/// A read handed to a worker.
struct Job {
    cookie: u64,
    offset: u64,
    len: u32,
}

/// Serves requests on `conn` until the client disconnects (`NBD_CMD_DISC` or closing), sends
/// garbage, or the socket fails. `workers` reads run at once.
pub fn serve_requests<S: Socket>(
    conn: S,
    export: &dyn Export,
    structured: bool,
    workers: usize,
) -> Result<(), NbdError> {
    let writer = Mutex::new(conn.try_clone()?);
    let replies = Replies {
        writer: &writer,
        structured,
    };
    let (tx, rx) = mpsc::sync_channel::<Job>(workers.max(1));
    let rx = Mutex::new(rx);
    let result = std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            let (rx, replies) = (&rx, &replies);
            s.spawn(move || worker(rx, export, replies));
        }
        let mut conn = conn;
        let result = read_loop(&mut conn, export, &replies, &tx);
        drop(tx);
        if result.is_err() {
            // Wakes workers blocked on a socket that will never take their replies.
            conn.shutdown();
        }
        result
    });
    lock(&writer).shutdown();
    result
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_loop<S: Socket>(
    conn: &mut S,
    export: &dyn Export,
    replies: &Replies<'_, S>,
    tx: &mpsc::SyncSender<Job>,
) -> Result<(), NbdError> {
    let size = export.info().size;
    loop {
        let mut header = [0u8; proto::REQUEST_LEN];
        if !read_header(conn, &mut header)? {
            return Ok(());
        }
        let req = proto::parse_request(header)?;
        match req.command {
            proto::CMD_READ => match check_read(&req, size) {
                Ok(()) if req.len == 0 => replies.done(req.cookie)?,
                Ok(()) => tx
                    .send(Job {
                        cookie: req.cookie,
                        offset: req.offset,
                        len: req.len,
                    })
                    .map_err(|_| NbdError::Io(io::ErrorKind::BrokenPipe.into()))?,
                Err(e) => replies.read_failed(&req, &e)?,
            },
            proto::CMD_DISC => return Ok(()),
            proto::CMD_WRITE => {
                // Keep the stream in step: swallow the payload (bounded by parse_request).
                let n = io::copy(&mut (&mut *conn).take(u64::from(req.len)), &mut io::sink())?;
                if n != u64::from(req.len) {
                    return Err(NbdError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                replies.status(req.cookie, proto::EPERM)?;
            }
            proto::CMD_TRIM | proto::CMD_WRITE_ZEROES => {
                replies.status(req.cookie, proto::EPERM)?
            }
            // Nothing is ever written, so there is nothing to flush.
            proto::CMD_FLUSH => replies.status(req.cookie, 0)?,
            _ => replies.status(req.cookie, proto::EINVAL)?,
        }
    }
}

/// Reads a request header: `false` on a clean end of stream between requests.
fn read_header<S: Read>(conn: &mut S, buf: &mut [u8]) -> Result<bool, NbdError> {
    let mut got = 0;
    while got < buf.len() {
        match conn.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(NbdError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Why a read is refused before it reaches the export: unknown flags, longer than
/// [`proto::MAX_PAYLOAD`], or past the end of an export of `size` bytes (`EINVAL`).
pub fn check_read(req: &Request, size: u64) -> Result<(), ReadError> {
    let invalid = |message: String| ReadError {
        error: proto::EINVAL,
        offset: None,
        message,
    };
    if req.flags & !proto::CMD_FLAG_FUA != 0 {
        return Err(invalid(format!("unsupported read flags {:#x}", req.flags)));
    }
    if req.len > proto::MAX_PAYLOAD {
        return Err(invalid(format!(
            "read of {} bytes; at most {} at once",
            req.len,
            proto::MAX_PAYLOAD
        )));
    }
    let past_end = match req.offset.checked_add(u64::from(req.len)) {
        Some(end) => end > size,
        None => true,
    };
    if past_end {
        return Err(invalid(format!(
            "read {}+{} is past the end of the export ({size} bytes)",
            req.offset, req.len
        )));
    }
    Ok(())
}

fn worker<S: Socket>(rx: &Mutex<Receiver<Job>>, export: &dyn Export, replies: &Replies<'_, S>) {
    let block = u64::from(export.info().block_size.max(1));
    loop {
        let job = match lock(rx).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        // Whole sectors around the request (check_read bounded it: no overflow, in range).
        let start = job.offset - job.offset % block;
        let end = (job.offset + u64::from(job.len)).div_ceil(block) * block;
        let mut buf = vec![0u8; (end - start) as usize];
        let skip = (job.offset - start) as usize;
        let result = export.read(start, &mut buf).map_err(|mut e| {
            // An error offset must lie inside the client's request.
            e.offset = e
                .offset
                .map(|o| o.max(job.offset))
                .filter(|&o| o < job.offset + u64::from(job.len));
            e
        });
        let sent = match result {
            Ok(()) => replies.data(job.cookie, job.offset, &buf[skip..skip + job.len as usize]),
            Err(e) => replies.error(job.cookie, true, &e),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "cannot send a reply; closing the connection");
            lock(replies.writer).shutdown();
        }
    }
}

/// Writes replies; one whole reply per lock, so replies never interleave.
struct Replies<'a, S> {
    writer: &'a Mutex<S>,
    structured: bool,
}

impl<S: Socket> Replies<'_, S> {
    fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut w = lock(self.writer);
        for p in parts {
            w.write_all(p)?;
        }
        w.flush()
    }

    /// A reply with no data: success (`error` 0) or an error.
    fn status(&self, cookie: u64, error: u32) -> io::Result<()> {
        self.send(&[&proto::simple_reply(cookie, error)])
    }

    /// A successful read with no data.
    fn done(&self, cookie: u64) -> io::Result<()> {
        if self.structured {
            self.send(&[&proto::none_chunk(cookie)])
        } else {
            self.status(cookie, 0)
        }
    }

    /// A successful read of `data` (at most `MAX_PAYLOAD` bytes) at `offset`.
    fn data(&self, cookie: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.structured {
            let header = proto::data_chunk_header(cookie, offset, data.len() as u32);
            self.send(&[&header, data])
        } else {
            self.send(&[&proto::simple_reply(cookie, 0), data])
        }
    }

    /// A failed request; `read`: it was a read (structured replies then need an error chunk).
    fn error(&self, cookie: u64, read: bool, e: &ReadError) -> io::Result<()> {
        if self.structured && read {
            self.send(&[&proto::error_chunk(cookie, e.error, &e.message, e.offset)])
        } else {
            self.status(cookie, e.error)
        }
    }

    fn read_failed(&self, req: &Request, e: &ReadError) -> io::Result<()> {
        self.error(req.cookie, true, e)
    }
}
