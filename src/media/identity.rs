//! The disc fingerprint: tells whether the media in the drive is the one a cache was made from.
//!
//! The identity read ([`read_head`]) reads the first `min(64 KiB, size)` bytes once, in one read;
//! if that fails with a medium error, each of its sectors once more on its own, so that it is
//! known which head sectors read ([`Head`]); sectors the disc's cache already marks bad are not
//! read again. Its bytes and failures are not thrown away: `add`
//! lands them in the cache (`serve::start`) and `fill` reuses them (`rescue::Source`).
//!
//! [`Identity`] (the "head identity") is FNV-1a 64 (the `fnv` crate; a fixed, documented
//! function, so it is stable across runs, builds and machines) over the sector size as 4
//! little-endian bytes and the head's bytes. It does not hash the size: drives report a few
//! sectors more or less for one disc (see `cache::size`), and the same disc must find its cache
//! in any drive. Caches made before hashed the size first ([`size_identity`], kept so that they
//! are still found); media whose head could not be read got [`size_only_identity`].
//!
//! Never writes to the media.

use std::fmt;
use std::hash::Hasher;
use std::io;
use std::path::Path;

use fnv::FnvHasher;

use super::{is_medium_error, AlignedBuf, Media, MediaError};

/// How much of the start of the media is the head.
pub const HEAD_BYTES: usize = 64 * 1024;

/// Where the ISO9660 primary volume descriptor (and UDF's volume recognition sequence) starts:
/// the one place every data disc differs, required among the sectors a damaged head is matched by.
pub const VOLUME_DESCRIPTOR: u64 = 32768;

/// A media fingerprint; shown and stored as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The FNV-1a 64 hash described in the module doc.
    pub hash: u64,
    /// Whether the head was read whole and hashed (false: size and sector size only).
    pub head_read: bool,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.hash)
    }
}

/// One read the identity read made: `[pos, pos + len)`, and its error if it failed.
#[derive(Debug)]
pub struct HeadRead {
    /// Media offset (sector-aligned).
    pub pos: u64,
    /// Bytes asked for.
    pub len: u64,
    /// Why it failed (a medium error); `None`: its bytes are in the head.
    pub error: Option<io::Error>,
}

/// The result of the identity read: which head sectors read, and their bytes.
#[derive(Debug)]
pub struct Head {
    size: u64,
    sector: u32,
    /// Head length: `min(64 KiB, size)`.
    len: u64,
    /// The bytes of every read that succeeded, at their offsets (zeros elsewhere).
    bytes: AlignedBuf,
    /// The reads, in the order they were made.
    reads: Vec<HeadRead>,
}

impl Head {
    /// An empty head of media of `size` bytes in sectors of `sector` bytes, for reads to be
    /// recorded into ([`record`](Head::record)).
    pub fn new(size: u64, sector: u32) -> Head {
        let len = size.min(HEAD_BYTES as u64);
        let io_len = len.div_ceil(u64::from(sector)) * u64::from(sector);
        Head {
            size,
            sector,
            len,
            bytes: AlignedBuf::new(io_len as usize),
            reads: Vec::new(),
        }
    }

    /// Records a read made at `pos` (within the head): the bytes it returned, or its error.
    pub fn record(&mut self, pos: u64, len: u64, result: Result<&[u8], io::Error>) {
        let error = match result {
            Ok(data) => {
                let end = (pos as usize + data.len()).min(self.bytes.len());
                if (pos as usize) < end {
                    self.bytes[pos as usize..end].copy_from_slice(&data[..end - pos as usize]);
                }
                None
            }
            Err(e) => Some(e),
        };
        self.reads.push(HeadRead { pos, len, error });
    }

    /// Media size when read.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Sector size.
    pub fn sector_size(&self) -> u32 {
        self.sector
    }
    /// Head length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the media is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The reads made, in order.
    pub fn reads(&self) -> &[HeadRead] {
        &self.reads
    }
    /// The head's bytes (valid in the sectors that read; the last one may be partial).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    /// The bytes a read of `[pos, pos + len)` returned, whole sectors (for landing).
    pub fn read_bytes(&self, pos: u64, len: u64) -> &[u8] {
        let end = (pos + len).min(self.bytes.len() as u64);
        &self.bytes[pos as usize..end as usize]
    }

    /// Number of sectors in the head.
    pub fn sectors(&self) -> u64 {
        self.len.div_ceil(u64::from(self.sector))
    }

    /// Whether head sector `i` was covered by a read that succeeded.
    pub fn sector_read(&self, i: u64) -> bool {
        let s = u64::from(self.sector);
        let (lo, hi) = (i * s, (i + 1) * s);
        self.reads
            .iter()
            .any(|r| r.error.is_none() && r.pos <= lo && hi <= r.pos + r.len)
    }

    /// How many head sectors read.
    pub fn sectors_read(&self) -> u64 {
        (0..self.sectors()).filter(|&i| self.sector_read(i)).count() as u64
    }

    /// Whether every head sector read.
    pub fn is_whole(&self) -> bool {
        self.sectors_read() == self.sectors()
    }

    /// The head sectors that hold the volume descriptor (byte 32768, 2048 bytes), if the media
    /// is that large.
    pub fn volume_descriptor_sectors(&self) -> Option<std::ops::Range<u64>> {
        let s = u64::from(self.sector);
        let end = VOLUME_DESCRIPTOR + 2048;
        (end <= self.len).then(|| VOLUME_DESCRIPTOR / s..end.div_ceil(s))
    }

    /// What the volume descriptor says, if it read: an ISO9660 volume's label, or "UDF".
    pub fn volume_label(&self) -> Option<String> {
        let range = self.volume_descriptor_sectors()?;
        if !range.clone().all(|i| self.sector_read(i)) {
            return None;
        }
        let vd = &self.bytes[VOLUME_DESCRIPTOR as usize..VOLUME_DESCRIPTOR as usize + 2048];
        match &vd[1..6] {
            b"CD001" if vd[0] == 1 => Some(
                String::from_utf8_lossy(&vd[40..72])
                    .trim_end_matches([' ', '\0'])
                    .to_string(),
            ),
            b"BEA01" | b"NSR02" | b"NSR03" => Some("UDF".to_string()),
            _ => None,
        }
    }

    /// The identity of media whose head read whole ([`Identity`]); `None` otherwise.
    pub fn identity(&self) -> Option<Identity> {
        if !self.is_whole() {
            return None;
        }
        let mut hasher = FnvHasher::default();
        hasher.write(&self.sector.to_le_bytes());
        hasher.write(self.bytes());
        Some(Identity {
            hash: hasher.finish(),
            head_read: true,
        })
    }

    /// The identity caches made by older blkcache have, had the media been `size` bytes: the size,
    /// the sector size and the head, hashed in that order; `None` unless the head read whole.
    pub fn size_identity(&self, size: u64) -> Option<Identity> {
        if !self.is_whole() || size.min(HEAD_BYTES as u64) != self.len {
            return None;
        }
        Some(size_identity(size, self.sector, self.bytes()))
    }
}

/// The older identity: FNV-1a 64 of the size (8 little-endian bytes), the sector size (4) and
/// the head.
pub fn size_identity(size: u64, sector_size: u32, head: &[u8]) -> Identity {
    let mut hasher = FnvHasher::default();
    hasher.write(&size.to_le_bytes());
    hasher.write(&sector_size.to_le_bytes());
    hasher.write(head);
    Identity {
        hash: hasher.finish(),
        head_read: true,
    }
}

/// The weaker identity given to a cache named by hand (`--cache`) for media whose head did not
/// read whole: size and sector size only.
pub fn size_only_identity(size: u64, sector_size: u32) -> Identity {
    let mut hasher = FnvHasher::default();
    hasher.write(&size.to_le_bytes());
    hasher.write(&sector_size.to_le_bytes());
    Identity {
        hash: hasher.finish(),
        head_read: false,
    }
}

/// The identity read: the head in one read; if that fails with a medium error, each head sector
/// once more on its own. Sectors in `known_bad` (sector numbers that the disc's cache already
/// marks bad) are never read: the head is then read in one read per stretch between them. A
/// short read or an error that is not a medium error (no disc, ...) is an error naming `path`.
pub fn read_head(media: &dyn Media, path: &Path, known_bad: &[u64]) -> Result<Head, MediaError> {
    let mut head = Head::new(media.size(), media.sector_size());
    let sector = u64::from(media.sector_size());
    let sectors = head.bytes.len() as u64 / sector;
    let read = |head: &mut Head, pos: u64, len: u64| -> Result<bool, MediaError> {
        let mut buf = AlignedBuf::new(len as usize);
        let want = len.min(head.len - pos);
        match media.read_at(pos, &mut buf) {
            Ok(n) if n as u64 >= want => {
                head.record(pos, len, Ok(&buf[..n]));
                Ok(true)
            }
            Ok(n) => Err(MediaError::Read {
                path: path.to_owned(),
                offset: pos + n as u64,
                source: io::Error::from(io::ErrorKind::UnexpectedEof),
            }),
            Err(e) if is_medium_error(&e) => {
                head.record(pos, len, Err(e));
                Ok(false)
            }
            Err(e) => Err(MediaError::Read {
                path: path.to_owned(),
                offset: pos,
                source: e,
            }),
        }
    };
    let mut first = 0;
    while first < sectors {
        if known_bad.contains(&first) {
            first += 1;
            continue;
        }
        let mut end = first + 1;
        while end < sectors && !known_bad.contains(&end) {
            end += 1;
        }
        if !read(&mut head, first * sector, (end - first) * sector)? && end - first > 1 {
            tracing::info!(path = %path.display(), offset = first * sector,
                "the first 64 KiB did not read whole; reading its sectors one by one");
            for i in first..end {
                read(&mut head, i * sector, sector)?;
            }
        }
        first = end;
    }
    Ok(head)
}

/// The identity of `media` (one read of up to 64 KiB at offset 0; see [`read_head`]); media
/// whose head does not read whole gets [`size_only_identity`].
pub fn fingerprint(media: &dyn Media, path: &Path) -> Result<Identity, MediaError> {
    let head = read_head(media, path, &[])?;
    Ok(head
        .identity()
        .unwrap_or_else(|| size_only_identity(media.size(), media.sector_size())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{FileMedia, MediaOptions};

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // From the FNV reference test suite (fnv1a64 of "" and "a", "foobar"): identities of
        // existing caches stay what they were.
        let h = |s: &[u8]| {
            let mut f = FnvHasher::default();
            f.write(s);
            f.finish()
        };
        assert_eq!(h(b""), 0xcbf29ce484222325);
        assert_eq!(h(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(h(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn stable_distinguishing_and_size_independent() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let mut data = vec![0x5au8; 200 * 1024];
        std::fs::write(&a, &data).unwrap();
        data[65535] ^= 1; // last hashed byte differs
        std::fs::write(&b, &data).unwrap();
        let head = |p: &std::path::Path| {
            let m = FileMedia::open(p, MediaOptions::default()).unwrap();
            read_head(&m, p, &[]).unwrap()
        };
        let ia = head(&a).identity().unwrap();
        assert_eq!(ia, head(&a).identity().unwrap(), "stable across opens");
        assert_ne!(ia, head(&b).identity().unwrap(), "differs in the head");
        // Bytes past 64 KiB, and the size, are not part of the identity.
        data[65535] ^= 1;
        data.truncate(190 * 1024);
        std::fs::write(&b, &data).unwrap();
        assert_eq!(ia, head(&b).identity().unwrap());
        assert_eq!(ia.to_string().len(), 16);
        // The older identity, for caches made before: size, sector size, head.
        let mut f = FnvHasher::default();
        f.write(&(200u64 * 1024).to_le_bytes());
        f.write(&512u32.to_le_bytes());
        f.write(&[0x5a; 65536]);
        assert_eq!(head(&a).size_identity(200 * 1024).unwrap().hash, f.finish());
        // A small file: the whole file is the head, the tail sector read short.
        std::fs::write(&a, b"tiny").unwrap();
        let small = head(&a);
        assert!(small.is_whole());
        let mut f = FnvHasher::default();
        f.write(&512u32.to_le_bytes());
        f.write(b"tiny");
        assert_eq!(small.identity().unwrap().hash, f.finish());
    }

    #[test]
    fn iso_label_is_read_from_the_volume_descriptor() {
        let mut head = Head::new(1 << 20, 2048);
        let mut data = vec![0u8; HEAD_BYTES];
        data[32768] = 1;
        data[32769..32774].copy_from_slice(b"CD001");
        data[32768 + 40..32768 + 72].copy_from_slice(format!("{:<32}", "MYDISC").as_bytes());
        head.record(0, HEAD_BYTES as u64, Ok(&data));
        assert_eq!(head.volume_label().as_deref(), Some("MYDISC"));
        assert_eq!(head.volume_descriptor_sectors(), Some(16..17));
    }
}
