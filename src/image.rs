//! The sparse image: a file of the source's size holding the bytes read so far.
//!
//! Created with `set_len`, so unread areas are holes that take no disk space; it must never be
//! filled with zeros for areas nothing was read from. Fetched data goes in with `pwrite`. Hits
//! come out with `pread` ([`Image::read_at`]), or are copied by the kernel from a shared
//! read-only mapping of the same file ([`Image::mapped`], for ublk `USER_COPY`; Linux keeps the
//! page cache and `MAP_SHARED` mappings coherent, so bytes written by `pwrite` are visible there).
//!
//! This process never reads the mapping itself: a mapped page whose file was truncated under it
//! (`truncate -s 0` by anyone) or whose disk fails to read raises SIGBUS, which kills the daemon
//! (and, with user recovery, every `recover` after it on the same page). `pread` turns both into
//! an error for the one request (a short read past a truncated end is `Truncated`, never
//! zeros), and a copy by the kernel into EFAULT.
//!
//! # Concurrency protocol
//! This type never hands out `&[u8]`/`&mut [u8]` over the mapping. The engine guarantees that no
//! read meets a write of the same bytes: a range is written only while the writer holds an
//! in-flight claim on it (and its status is not `+`), and it is read only after it is marked
//! finished (`+`), which happens after the write returned; finished ranges are never written
//! again.
//!
//! An exclusive `flock` on the image keeps a second blkcache (or a second `Image` in the same
//! process) from writing the same image at once.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{Flock, FlockArg};

use crate::files;

/// Errors of the image file; each names the image path and, for I/O, the offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image could not be created, opened or sized.
    #[error("cannot open image {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `create` found a file already there (it never overwrites one).
    #[error("image {path} already exists")]
    Exists { path: PathBuf },
    /// Another process (or another `Image` in this one) holds the image.
    #[error("image {path} is in use by another blkcache (see `blkcache list`)")]
    Locked { path: PathBuf },
    /// The image could not be mapped.
    #[error("cannot map image {}", path.display())]
    Map {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading cached bytes back failed (an I/O error of the image's disk).
    #[error("cannot read image {} at offset {offset}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// The image file is shorter than it was opened with: someone truncated it.
    #[error("image {path} was truncated to {len} bytes while in use (reading offset {offset})")]
    Truncated {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// The disk holding the image is full: nothing more can be cached there.
    #[error("no space left for image {path} writing {len} bytes at offset {offset}")]
    NoSpace {
        path: PathBuf,
        offset: u64,
        len: usize,
    },
    /// A write into the image failed for another reason.
    #[error("cannot write image {} at offset {offset}", path.display())]
    Write {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// `fdatasync` of the image failed: written bytes may not be durable.
    #[error("cannot sync image {}", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A read or write went past the end of the image.
    #[error("range {offset}+{len} is outside image {path} of {size} bytes")]
    OutOfRange {
        path: PathBuf,
        offset: u64,
        len: usize,
        size: u64,
    },
}

/// The cache file. `Send + Sync`: all methods take `&self`.
#[derive(Debug)]
pub struct Image {
    /// Locked for as long as the image is open (the lock goes with the descriptor).
    file: Flock<File>,
    path: PathBuf,
    size: u64,
    /// `None` for an empty image (a zero-length mapping is not allowed).
    map: Option<MmapRaw>,
}

impl Image {
    /// Creates a new sparse image of `size` bytes (0600); fails if `path` exists, even as a
    /// link. The one place images are made.
    pub fn create(path: &Path, size: u64) -> Result<Image, ImageError> {
        let file = files::private_options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => ImageError::Exists {
                    path: path.to_owned(),
                },
                _ => ImageError::Open {
                    path: path.to_owned(),
                    source,
                },
            })?;
        let file = lock(file, path)?;
        // A hole of `size` bytes: no data block is written.
        file.set_len(size).map_err(|source| ImageError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::finish(file, path, size)
    }

    /// Opens an existing image, never through a symbolic link; its size is the file's.
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        let open_err = |source| ImageError::Open {
            path: path.to_owned(),
            source,
        };
        let file = files::private_options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let file = lock(file, path)?;
        let size = file.metadata().map_err(open_err)?.len();
        Self::finish(file, path, size)
    }

    /// Extends the image to `size` bytes with a hole (nothing written) and syncs it, keeping
    /// its lock; never shrinks it. For a drive that reports the disc a few sectors larger
    /// (`cache::size`).
    pub fn grow(self, size: u64) -> Result<Image, ImageError> {
        if size <= self.size {
            return Ok(self);
        }
        let Image {
            file, path, map, ..
        } = self;
        drop(map);
        let err = |source| ImageError::Open {
            path: path.clone(),
            source,
        };
        file.set_len(size).map_err(err)?;
        file.sync_all().map_err(err)?;
        Self::finish(file, &path, size)
    }

    fn finish(file: Flock<File>, path: &Path, size: u64) -> Result<Image, ImageError> {
        let map = if size == 0 {
            None
        } else {
            let len = usize::try_from(size).map_err(|_| ImageError::Map {
                path: path.to_owned(),
                source: io::Error::new(io::ErrorKind::Unsupported, "image larger than memory"),
            })?;
            let map = MmapOptions::new()
                .len(len)
                .map_raw_read_only(&*file)
                .map_err(|source| ImageError::Map {
                    path: path.to_owned(),
                    source,
                })?;
            Some(map)
        };
        Ok(Image {
            file,
            path: path.to_owned(),
            size,
            map,
        })
    }

    /// The image's size in bytes (the source's size).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the image lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), ImageError> {
        let end = offset.checked_add(len as u64);
        if end.map_or(true, |end| end > self.size) {
            return Err(ImageError::OutOfRange {
                path: self.path.clone(),
                offset,
                len,
                size: self.size,
            });
        }
        Ok(())
    }

    /// Writes fetched bytes at `offset` (the caller holds the in-flight claim on the range);
    /// refuses an image shorter than it was opened with (`Truncated`).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), ImageError> {
        self.check(offset, data.len())?;
        // Never write into an image someone truncated: the write would extend the file, and the
        // cached ranges it lost would read back as holes, zeros, through the mapping.
        let meta = self.file.metadata().map_err(|source| ImageError::Write {
            path: self.path.clone(),
            offset,
            source,
        })?;
        let len = meta.len();
        if meta.is_file() && len < self.size {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                offset,
                len,
            });
        }
        self.file.write_all_at(data, offset).map_err(|source| {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                ImageError::NoSpace {
                    path: self.path.clone(),
                    offset,
                    len: data.len(),
                }
            } else {
                ImageError::Write {
                    path: self.path.clone(),
                    offset,
                    source,
                }
            }
        })
    }

    /// Reads `buf.len()` bytes at `offset` (the caller saw the range finished): all of them, or
    /// an error (`Truncated` if the file ends early; its disk's I/O error as `Read`).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageError> {
        self.check(offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| match source.kind() {
                io::ErrorKind::UnexpectedEof => ImageError::Truncated {
                    path: self.path.clone(),
                    offset,
                    len: self.file.metadata().map_or(0, |m| m.len()),
                },
                _ => ImageError::Read {
                    path: self.path.clone(),
                    offset,
                    source,
                },
            })
    }

    /// The mapping's address of the `len` bytes at `offset`, to hand to the kernel (a `pwrite`
    /// from it copies the cached bytes once, straight into a ublk request). Never read through
    /// it in Rust: a page the kernel cannot provide (the image truncated, a cache-disk I/O
    /// error) makes a copy by the kernel fail with EFAULT, but raises SIGBUS in this process.
    pub fn mapped(&self, offset: u64, len: usize) -> Result<Mapped<'_>, ImageError> {
        self.check(offset, len)?;
        let ptr = match &self.map {
            // `check` bounded offset + len by the size, the mapping's length, which fits usize.
            // SAFETY: `offset <= map.len()`, so the result stays inside (or one past) the mapping.
            Some(map) => unsafe { map.as_ptr().add(offset as usize) },
            // Only an empty image has no mapping; then only empty ranges pass `check`.
            None => std::ptr::NonNull::<u8>::dangling().as_ptr().cast_const(),
        };
        Ok(Mapped {
            ptr,
            len,
            _image: std::marker::PhantomData,
        })
    }

    /// Makes every byte written so far durable (`fdatasync`).
    pub fn sync(&self) -> Result<(), ImageError> {
        self.file.sync_data().map_err(|source| ImageError::Sync {
            path: self.path.clone(),
            source,
        })
    }

    /// Bytes free for an unprivileged writer on the image's filesystem (`fstatvfs`).
    pub fn free_bytes(&self) -> Result<u64, ImageError> {
        let st = nix::sys::statvfs::fstatvfs(&*self.file).map_err(|e| ImageError::Write {
            path: self.path.clone(),
            offset: 0,
            source: e.into(),
        })?;
        Ok(st.blocks_available().saturating_mul(st.fragment_size()))
    }

    /// Bytes of disk the image really uses (holes take none); for status output and tests.
    pub fn allocated_bytes(&self) -> Result<u64, ImageError> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(|source| ImageError::Open {
            path: self.path.clone(),
            source,
        })?;
        Ok(meta.blocks() * 512)
    }
}

/// A range of the image's mapping, valid while the image is (see [`Image::mapped`]).
#[derive(Debug, Clone, Copy)]
pub struct Mapped<'a> {
    ptr: *const u8,
    len: usize,
    _image: std::marker::PhantomData<&'a Image>,
}

impl Mapped<'_> {
    /// The first byte's address: for system calls only, never to be read from in Rust.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The range's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Takes an exclusive, non-blocking `flock`, released when the file is closed.
fn lock(file: File, path: &Path) -> Result<Flock<File>, ImageError> {
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            ImageError::Locked {
                path: path.to_owned(),
            }
        } else {
            ImageError::Open {
                path: path.to_owned(),
                source: errno.into(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_is_sparse_and_reads_back_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let img = Image::create(&path, 64 << 20).unwrap();
        assert_eq!(img.size(), 64 << 20);
        // A 64 MiB hole takes (almost) no blocks.
        assert!(img.allocated_bytes().unwrap() < 1 << 20);
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        img.write_at(1 << 20, &data).unwrap();
        let mut back = vec![0u8; 8192];
        img.read_at(1 << 20, &mut back).unwrap();
        assert_eq!(back, data);
        // Unwritten areas read as zeros and stay holes.
        img.read_at(0, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        img.sync().unwrap();
        assert!(img.allocated_bytes().unwrap() < 1 << 20);
    }

    #[test]
    fn create_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            Image::create(&path, 4096),
            Err(ImageError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn second_open_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let first = Image::create(&path, 4096).unwrap();
        let err = Image::open(&path).unwrap_err();
        assert!(matches!(err, ImageError::Locked { .. }), "{err}");
        drop(first);
        let again = Image::open(&path).unwrap();
        assert_eq!(again.size(), 4096);
    }

    #[test]
    fn out_of_range_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let img = Image::create(&path, 4096).unwrap();
        let err = img.write_at(4000, &[0u8; 200]).unwrap_err();
        assert!(err.to_string().contains("img"), "{err}");
        assert!(matches!(err, ImageError::OutOfRange { offset: 4000, .. }));
        let mut buf = [0u8; 1];
        assert!(img.read_at(4096, &mut buf).is_err());
        assert!(img.read_at(u64::MAX, &mut buf).is_err());
    }

    #[test]
    fn empty_image_works() {
        let dir = tempfile::tempdir().unwrap();
        let img = Image::create(&dir.path().join("img"), 0).unwrap();
        img.read_at(0, &mut []).unwrap();
        img.write_at(0, &[]).unwrap();
        assert!(img.read_at(0, &mut [0u8]).is_err());
    }

    /// A full disk is reported as `NoSpace` with the path and offset (a tiny tmpfs would show it;
    /// /dev/full gives ENOSPC on every write and is present on every Linux).
    #[test]
    fn enospc_is_typed() {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let img = Image {
            file: lock(file, Path::new("/dev/full")).unwrap(),
            path: PathBuf::from("/dev/full"),
            size: 4096,
            map: None,
        };
        let err = img.write_at(512, &[1u8; 512]).unwrap_err();
        assert!(
            matches!(err, ImageError::NoSpace { offset: 512, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/dev/full"));
    }
}
