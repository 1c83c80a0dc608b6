//! `FileMedia`: a regular file or a block device (disk, USB stick, optical drive) opened read-only.
//!
//! Opens with `O_RDONLY | O_DIRECT` where the file system or device takes it (checked by a probe
//! read) and falls back to buffered reads otherwise (tmpfs refuses O_DIRECT at open). Never opens
//! the source for writing.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::change::ChangeWatch;
use super::plan::pread_full;
use super::{ioctl, valid_sector_size, AlignedBuf, Media, MediaError, ReadPlan};

/// How to open media.
#[derive(Debug, Clone, Copy)]
pub struct MediaOptions {
    /// Overrides the sector size (default: the device's logical sector size, 512 for files).
    /// On a block device it must be a multiple of the device's logical sector size.
    pub sector_size: Option<u32>,
    /// Try O_DIRECT (default true); buffered reads are used when this is false or O_DIRECT fails.
    pub direct: bool,
}

impl Default for MediaOptions {
    fn default() -> Self {
        MediaOptions {
            sector_size: None,
            direct: true,
        }
    }
}

/// A regular file or block device, read-only.
#[derive(Debug)]
pub struct FileMedia {
    file: File,
    path: PathBuf,
    size: u64,
    sector_size: u32,
    direct: bool,
    block_device: bool,
    removable: Option<bool>,
    physical_block_size: Option<u32>,
    /// Media-change detection (block devices only: a regular file's bytes stay its own).
    watch: Option<ChangeWatch>,
}

impl FileMedia {
    /// Opens `path` read-only and learns its size and sector size.
    pub fn open(path: &Path, opts: MediaOptions) -> Result<FileMedia, MediaError> {
        let meta = std::fs::metadata(path).map_err(|source| MediaError::Open {
            path: path.to_owned(),
            source,
        })?;
        let kind = meta.file_type();
        let block_device = kind.is_block_device();
        if !block_device && !kind.is_file() {
            return Err(MediaError::Unsupported {
                path: path.to_owned(),
            });
        }
        let (mut file, mut direct) = open_read_only(path, opts.direct)?;
        let (size, logical) = if block_device {
            let ioctl_err = |what| {
                move |source| MediaError::Ioctl {
                    path: path.to_owned(),
                    what,
                    source,
                }
            };
            let size = ioctl::size_bytes(file.as_fd()).map_err(ioctl_err("BLKGETSIZE64"))?;
            let sector =
                ioctl::logical_sector_size(file.as_fd()).map_err(ioctl_err("BLKSSZGET"))?;
            (size, sector)
        } else {
            let size = file
                .metadata()
                .map_err(|source| MediaError::Open {
                    path: path.to_owned(),
                    source,
                })?
                .len();
            (size, 512)
        };
        let sector_size = opts.sector_size.unwrap_or(logical);
        if !valid_sector_size(sector_size) {
            return Err(MediaError::SectorSize {
                path: path.to_owned(),
                size: sector_size,
                why: "must be a power of two from 512 to 65536",
            });
        }
        if block_device && sector_size % logical != 0 {
            return Err(MediaError::SectorSize {
                path: path.to_owned(),
                size: sector_size,
                why: "must be a multiple of the device's logical sector size",
            });
        }
        if direct && !direct_reads_work(&file, size, sector_size) {
            tracing::debug!(path = %path.display(), "O_DIRECT reads refused; using buffered reads");
            (file, direct) = open_read_only(path, false)?;
        }
        let (removable, physical_block_size) = if block_device {
            let physical = ioctl::physical_block_size(file.as_fd()).ok();
            (removable(meta.rdev()), physical)
        } else {
            (None, None)
        };
        // Armed on the descriptor that will serve, before the caller reads the identity.
        let watch =
            block_device.then(|| ChangeWatch::arm(file.as_fd(), size, removable.unwrap_or(false)));
        Ok(FileMedia {
            file,
            path: path.to_owned(),
            size,
            sector_size,
            direct,
            block_device,
            removable,
            physical_block_size,
            watch,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is a block device (else a regular file).
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// `/sys/block/X/removable` for block devices (a partition asks its disk); `None` if unknown.
    pub fn removable(&self) -> Option<bool> {
        self.removable
    }

    /// The device's physical block size (`BLKPBSZGET`), for block devices.
    pub fn physical_block_size(&self) -> Option<u32> {
        self.physical_block_size
    }

    /// Whether the descriptor is O_DIRECT.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// The read-only descriptor (for checks of its flags).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}

impl Media for FileMedia {
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn plan(&self, _offset: u64, _len: usize) -> ReadPlan<'_> {
        ReadPlan::read(self.file.as_fd(), self.direct)
    }
    fn can_change(&self) -> bool {
        self.watch.is_some()
    }
    fn media_changed(&self) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|w| w.check(self.file.as_fd()))
    }
    fn describe(&self) -> String {
        let kind = match (self.block_device, self.removable) {
            (false, _) => "file",
            (true, Some(true)) => "removable block device",
            (true, _) => "block device",
        };
        format!(
            "{kind} {} ({} bytes, {}-byte sectors, {})",
            self.path.display(),
            self.size,
            self.sector_size,
            if self.direct { "O_DIRECT" } else { "buffered" }
        )
    }
}

/// Opens read-only (never O_RDWR/O_WRONLY), with O_DIRECT if asked and accepted.
fn open_read_only(path: &Path, direct: bool) -> Result<(File, bool), MediaError> {
    let open = |flags: libc::c_int| OpenOptions::new().read(true).custom_flags(flags).open(path);
    let result = if direct {
        match open(libc::O_DIRECT) {
            Ok(file) => return Ok((file, true)),
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => open(0),
            Err(err) => Err(err),
        }
    } else {
        open(0)
    };
    match result {
        Ok(file) => Ok((file, false)),
        Err(err) if err.raw_os_error() == Some(libc::ENOMEDIUM) => Err(MediaError::NoMedium {
            path: path.to_owned(),
        }),
        Err(source) => Err(MediaError::Open {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Some file systems accept O_DIRECT at open but refuse the reads (EINVAL), or need a larger
/// alignment than our sector size; probe one sector past the first (or the first) to find out.
/// Any other error (a bad sector) says nothing against O_DIRECT.
fn direct_reads_work(file: &File, size: u64, sector_size: u32) -> bool {
    let sector = u64::from(sector_size);
    let offset = if size >= 2 * sector { sector } else { 0 };
    let mut buf = AlignedBuf::new(sector_size as usize);
    match pread_full(file.as_fd(), offset, &mut buf) {
        Err(err) => err.raw_os_error() != Some(libc::EINVAL),
        Ok(_) => true,
    }
}

/// Reads `/sys/dev/block/MAJ:MIN/removable`, or the parent disk's for a partition.
fn removable(rdev: u64) -> Option<bool> {
    let major = nix::sys::stat::major(rdev);
    let minor = nix::sys::stat::minor(rdev);
    let dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let text = std::fs::read_to_string(dir.join("removable"))
        .or_else(|_| std::fs::read_to_string(dir.join("../removable")))
        .ok()?;
    Some(text.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn source(len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        (dir, path, data)
    }

    #[test]
    fn opens_read_only_and_reads() {
        let (_dir, path, data) = source(10 * 4096 + 1000);
        let media = FileMedia::open(&path, MediaOptions::default()).unwrap();
        assert_eq!(media.size(), data.len() as u64);
        assert_eq!(media.sector_size(), 512);
        let flags = nix::fcntl::fcntl(media.raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        let mut buf = AlignedBuf::new(8192);
        assert_eq!(media.read_at(4096, &mut buf).unwrap(), 8192);
        assert_eq!(&buf[..], &data[4096..4096 + 8192]);
        // The tail: a short read at the end of the file.
        let mut tail = AlignedBuf::new(4096);
        assert_eq!(media.read_at(10 * 4096, &mut tail).unwrap(), 1000);
        assert_eq!(&tail[..1000], &data[10 * 4096..]);
        // An unaligned caller buffer still works (bounced when O_DIRECT).
        let mut plain = vec![0u8; 513];
        assert_eq!(media.read_at(512, &mut plain[1..]).unwrap(), 512);
        assert_eq!(&plain[1..], &data[512..1024]);
        assert!(media.describe().contains("512-byte sectors"));
    }

    #[test]
    fn buffered_when_asked() {
        let (_dir, path, data) = source(4096);
        let opts = MediaOptions {
            direct: false,
            sector_size: Some(2048),
        };
        let media = FileMedia::open(&path, opts).unwrap();
        assert!(!media.direct());
        assert_eq!(media.sector_size(), 2048);
        let flags = nix::fcntl::fcntl(media.raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_DIRECT, 0);
        let mut buf = vec![0u8; 2048];
        media.read_at(2048, &mut buf).unwrap();
        assert_eq!(buf, data[2048..]);
    }

    /// tmpfs refuses O_DIRECT at open on older kernels (and takes it since 6.6): either way the
    /// media opens, says which it got, and reads right.
    #[test]
    fn tmpfs_falls_back_to_buffered_when_o_direct_is_refused() {
        let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs) is needed");
        let path = dir.path().join("src");
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let kernel_takes_it = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .is_ok();
        let media = FileMedia::open(&path, MediaOptions::default()).unwrap();
        assert_eq!(media.direct(), kernel_takes_it);
        let mut buf = AlignedBuf::new(4096);
        assert_eq!(media.read_at(4096, &mut buf).unwrap(), 4096);
        assert_eq!(&buf[..], &data[4096..]);
    }

    #[test]
    fn bad_sector_size_and_kind_are_errors() {
        let (dir, path, _) = source(4096);
        let opts = MediaOptions {
            sector_size: Some(1000),
            ..MediaOptions::default()
        };
        assert!(matches!(
            FileMedia::open(&path, opts),
            Err(MediaError::SectorSize { size: 1000, .. })
        ));
        assert!(matches!(
            FileMedia::open(dir.path(), MediaOptions::default()),
            Err(MediaError::Unsupported { .. })
        ));
        let err = FileMedia::open(&dir.path().join("nope"), MediaOptions::default()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
