//! What a fill reads from: the media, plus the two things GNU ddrescue's options and blkcache's
//! identity read ask of it. Every read it makes is counted: the summary's `media_reads` and
//! `read_errors` are the wear a fill put on the media, the identity read included.
//!
//! - The identity read (the first 64 KiB, read before the cache can be chosen) is kept and
//!   reused: its bytes answer later reads inside them, and its failure answers, once, the first
//!   read that covers all of it (a larger read over failed sectors fails too), so the fill makes
//!   no read that the identity read already made.
//! - `--reopen-on-error`: after a read error the source is opened again (ddrescue's `-O`; some
//!   kernels slow a drive down after an error until it is reopened).

use std::io;
use std::sync::Arc;

use crate::media::{AlignedBuf, Media, MediaError};

/// Opens the source again (for `--reopen-on-error`).
pub type Reopen = Box<dyn Fn() -> Result<Arc<dyn Media>, MediaError> + Send>;

/// The identity read: the media's start, read in the fill's own first reads.
#[derive(Debug)]
pub struct Head {
    /// The bytes read from offset 0 (up to the first failed read, or the end).
    good: AlignedBuf,
    /// The read that failed after them: `[pos, pos + len)` and its error.
    failed: Option<(u64, u64, io::Error)>,
}

impl Head {
    /// The identity read as the cache lookup takes it (`media::Head`): the bytes read, then the
    /// failed read, of media of `size` bytes in sectors of `sector` bytes.
    pub fn media_head(&self, size: u64, sector: u32) -> crate::media::Head {
        let mut head = crate::media::Head::new(size, sector);
        if !self.good.is_empty() {
            head.record(0, self.good.len() as u64, Ok(&self.good));
        }
        if let Some((pos, len, e)) = &self.failed {
            let copy = io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO));
            head.record(*pos, *len, Err(copy));
        }
        head
    }
}

/// Reads and what they cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wear {
    /// Reads sent to the media.
    pub reads: u64,
    /// Bytes they returned.
    pub bytes: u64,
    /// Reads that failed.
    pub errors: u64,
}

/// The media a fill reads, with the identity read's result and the reopen hook.
pub struct Source {
    media: Arc<dyn Media>,
    reopen: Option<Reopen>,
    head: Option<Head>,
    wear: Wear,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("media", &self.media.describe())
            .field("wear", &self.wear)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Reads from `media`.
    pub fn new(media: Arc<dyn Media>) -> Source {
        Source {
            media,
            reopen: None,
            head: None,
            wear: Wear::default(),
        }
    }

    /// Reads the first 64 KiB (or the whole media if smaller) once, counted as wear, in reads
    /// of `piece` bytes (the fill's read size, so the fill's first reads are these very reads),
    /// stopping at the first failure. Keeps the result for the fill; returns it for the identity.
    pub fn read_head(&mut self, piece: u64) -> &Head {
        let sector = u64::from(self.media.sector_size());
        let size = self.media.size();
        let want = size.min(crate::media::identity::HEAD_BYTES as u64);
        let piece = piece.max(sector);
        let total = want.max(piece).min(size).div_ceil(sector) * sector;
        let mut good = AlignedBuf::new(total as usize);
        let mut pos = 0;
        let mut failed = None;
        while pos < want {
            let len = piece.min(total - pos);
            match self.counted(pos, &mut good[pos as usize..(pos + len) as usize]) {
                Ok(n) => {
                    pos += n as u64;
                    if (n as u64) < len {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some((pos, len, e));
                    break;
                }
            }
        }
        let good = if pos as usize == good.len() {
            good
        } else {
            let mut short = AlignedBuf::new(pos as usize);
            short.copy_from_slice(&good[..pos as usize]);
            short
        };
        self.head.insert(Head { good, failed })
    }

    /// Gives the source a way to reopen it.
    pub fn with_reopen(mut self, reopen: Reopen) -> Source {
        self.reopen = Some(reopen);
        self
    }

    /// The media read from.
    pub fn media(&self) -> &Arc<dyn Media> {
        &self.media
    }

    /// The reads so far.
    pub fn wear(&self) -> Wear {
        self.wear
    }

    /// Opens the source again, if it can be; `false` if it has no reopen hook.
    pub fn reopen(&mut self) -> Result<bool, MediaError> {
        let Some(reopen) = &self.reopen else {
            return Ok(false);
        };
        self.media = reopen()?;
        Ok(true)
    }

    /// Reads `buf.len()` bytes at `offset` (sector-aligned), answering from the identity read
    /// where it can. Returns the bytes read (fewer only at the media end).
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = offset + buf.len() as u64;
        let Some(head) = &self.head else {
            return self.counted(offset, buf);
        };
        let good = head.good.len() as u64;
        if offset < good {
            let from_head = (good.min(end) - offset) as usize;
            buf[..from_head].copy_from_slice(&head.good[offset as usize..][..from_head]);
            if end <= good {
                return Ok(from_head);
            }
            let n = self.read(good, &mut buf[from_head..])?;
            return Ok(from_head + n);
        }
        // A read over all of the failed one fails too (once: that read is this one).
        if let Some((pos, len, _)) = head.failed {
            if offset <= pos && end >= pos + len {
                if let Some((_, _, e)) = self.head.as_mut().and_then(|h| h.failed.take()) {
                    return Err(e);
                }
            }
        }
        self.counted(offset, buf)
    }

    fn counted(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.wear.reads += 1;
        // O_DIRECT media need aligned buffers: a slice of one may not be.
        let result = if crate::media::is_aligned(buf) {
            self.media.read_at(offset, buf)
        } else {
            let mut aligned = AlignedBuf::new(buf.len());
            let r = self.media.read_at(offset, &mut aligned);
            if let Ok(n) = r {
                buf[..n].copy_from_slice(&aligned[..n]);
            }
            r
        };
        match &result {
            Ok(n) => self.wear.bytes += *n as u64,
            Err(_) => self.wear.errors += 1,
        }
        result
    }
}
