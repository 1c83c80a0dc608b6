//! The disc fingerprint: tells whether the media in the drive is the one a cache was made from.
//!
//! `Identity` is FNV-1a 64 (the `fnv` crate; offset basis 0xcbf29ce484222325, prime 0x100000001b3; a fixed,
//! documented function, so it is stable across runs, builds and machines) over, in order: the
//! size as 8 little-endian bytes, the sector size as 4 little-endian bytes, and the first
//! `min(64 KiB, size)` bytes of the media. Two discs of one size differ in their first 64 KiB
//! (file system labels, volume descriptors, timestamps) in practice.
//!
//! If the first 64 KiB cannot be read because of bad sectors, the hash covers size and sector
//! size only and `head_read` is false: a weaker identity, which callers should show. Other read
//! errors (no disc, ...) are errors. Never writes to the media.

use std::fmt;
use std::hash::Hasher;

use fnv::FnvHasher;

use super::{is_medium_error, AlignedBuf, Media, MediaError};

/// How much of the start of the media is hashed.
pub const HEAD_BYTES: usize = 64 * 1024;

/// A media fingerprint; shown and stored as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The FNV-1a 64 hash described in the module doc.
    pub hash: u64,
    /// Whether the first 64 KiB were read and hashed (false: size and sector size only).
    pub head_read: bool,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.hash)
    }
}

/// Computes the identity of `media` (one read of up to 64 KiB at offset 0).
pub fn fingerprint(media: &dyn Media, path: &std::path::Path) -> Result<Identity, MediaError> {
    let sector = u64::from(media.sector_size());
    let head = media.size().min(HEAD_BYTES as u64);
    // Read whole sectors (O_DIRECT); the tail beyond `head` is not hashed.
    let io_len = head.div_ceil(sector) * sector;
    let mut buf = AlignedBuf::new(io_len as usize);
    let read = media.read_at(0, &mut buf);
    let read = match &read {
        Ok(n) => Ok(&buf[..*n]),
        Err(e) => Err(e),
    };
    identity_from_head(media.size(), media.sector_size(), path, read)
}

/// The weaker identity of media whose first 64 KiB cannot be read: size and sector size only.
/// Equal to what [`fingerprint`] gives such media, so it can be compared without a read.
pub fn size_only_identity(size: u64, sector_size: u32) -> Identity {
    let mut hasher = FnvHasher::default();
    hasher.write(&size.to_le_bytes());
    hasher.write(&sector_size.to_le_bytes());
    Identity {
        hash: hasher.finish(),
        head_read: false,
    }
}

/// The identity from the result of reading the media's start at offset 0 (the bytes read, or
/// the error): shared by [`fingerprint`] and by a fill, which reads the start once for both
/// the identity and the image. A medium error gives the weaker size-only identity; a short
/// read or any other error is an error.
pub fn identity_from_head(
    size: u64,
    sector_size: u32,
    path: &std::path::Path,
    read: Result<&[u8], &std::io::Error>,
) -> Result<Identity, MediaError> {
    let head = size.min(HEAD_BYTES as u64);
    let mut hasher = FnvHasher::default();
    hasher.write(&size.to_le_bytes());
    hasher.write(&sector_size.to_le_bytes());
    let head_read = match read {
        Ok(bytes) if bytes.len() as u64 >= head => {
            hasher.write(&bytes[..head as usize]);
            true
        }
        Ok(bytes) => {
            return Err(MediaError::Read {
                path: path.to_owned(),
                offset: bytes.len() as u64,
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            })
        }
        Err(err) if is_medium_error(err) => {
            tracing::warn!(path = %path.display(), error = %err,
                "first 64 KiB unreadable; identity covers size and sector size only");
            false
        }
        Err(err) => {
            return Err(MediaError::Read {
                path: path.to_owned(),
                offset: 0,
                source: match err.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(err.kind(), err.to_string()),
                },
            })
        }
    };
    Ok(Identity {
        hash: hasher.finish(),
        head_read,
    })
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
    fn stable_and_distinguishing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let mut data = vec![0x5au8; 200 * 1024];
        std::fs::write(&a, &data).unwrap();
        data[65535] ^= 1; // last hashed byte differs
        std::fs::write(&b, &data).unwrap();
        let id = |p: &std::path::Path| {
            let m = FileMedia::open(p, MediaOptions::default()).unwrap();
            fingerprint(&m, p).unwrap()
        };
        let ia = id(&a);
        assert!(ia.head_read);
        assert_eq!(ia, id(&a), "stable across opens");
        assert_ne!(ia, id(&b), "differs in the first 64 KiB");
        // Bytes past 64 KiB are not part of the identity.
        data[65535] ^= 1;
        data[65536] ^= 1;
        std::fs::write(&b, &data).unwrap();
        assert_eq!(ia, id(&b));
        assert_eq!(ia.to_string().len(), 16);
        // A small file: the whole file is hashed, the tail sector read short.
        std::fs::write(&a, b"tiny").unwrap();
        let small = id(&a);
        assert!(small.head_read);
        let mut f = FnvHasher::default();
        f.write(&4u64.to_le_bytes());
        f.write(&512u32.to_le_bytes());
        f.write(b"tiny");
        assert_eq!(small.hash, f.finish());
    }
}
