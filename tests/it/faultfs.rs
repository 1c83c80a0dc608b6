//! A real filesystem that fails on command: a FUSE mount (crate `fuser`, mounted by this process;
//! needs root and /dev/fuse) holding one file, `image`, whose disk is in memory and records what
//! is durable. The kernel's real FUSE client sits between the engine and it, so `pwrite` and
//! `fdatasync` are the real system calls with the real error paths.
//!
//! It behaves as a dying disk does under Linux: a failed `fdatasync` reports EIO once and loses
//! the bytes written since the last good sync (they stay readable, as pages in the page cache
//! do, but never become durable), and the next `fdatasync` returns 0. A save that retried the
//! sync would then claim bytes the disk does not have: `durable()` shows it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request,
};

const ROOT: u64 = 1;
const IMAGE: u64 = 2;
/// Attributes are never cached by the kernel: `reset` changes the size.
const TTL: Duration = Duration::ZERO;

/// The in-memory disk behind the mount.
#[derive(Debug, Default)]
pub struct Disk {
    /// What reads return.
    current: Vec<u8>,
    /// What a crash now would leave.
    durable: Vec<u8>,
    /// Ranges written since the last good sync.
    dirty: Vec<(usize, usize)>,
    /// How many of the next syncs fail with EIO.
    pub fail_syncs: u32,
    /// Every write fails with this errno while set.
    pub fail_writes: Option<i32>,
    /// Writes and syncs answered so far (failed or not).
    pub writes: u64,
    pub syncs: u64,
}

impl Disk {
    /// Bytes that reached the disk durably.
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }
}

struct Fs(Arc<Mutex<Disk>>);

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

fn attr(ino: u64, size: u64) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: if ino == ROOT {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if ino == ROOT { 0o700 } else { 0o600 },
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == "image" {
            let size = lock(&self.0).current.len() as u64;
            reply.entry(&TTL, &attr(IMAGE, size), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match ino {
            ROOT => reply.attr(&TTL, &attr(ROOT, 0)),
            IMAGE => reply.attr(&TTL, &attr(IMAGE, lock(&self.0).current.len() as u64)),
            _ => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        if ino == IMAGE {
            reply.opened(0, 0);
        } else {
            reply.error(libc::EISDIR);
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let disk = lock(&self.0);
        let start = (offset as usize).min(disk.current.len());
        let end = (start + size as usize).min(disk.current.len());
        reply.data(&disk.current[start..end]);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut disk = lock(&self.0);
        disk.writes += 1;
        if let Some(errno) = disk.fail_writes {
            return reply.error(errno);
        }
        let start = offset as usize;
        let end = start + data.len();
        if end > disk.current.len() {
            return reply.error(libc::EFBIG);
        }
        disk.current[start..end].copy_from_slice(data);
        disk.dirty.push((start, end));
        reply.written(data.len() as u32);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // A roomy disk: only armed faults make it fail.
        reply.statfs(1 << 24, 1 << 24, 1 << 24, 16, 14, 4096, 255, 4096);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        let mut disk = lock(&self.0);
        disk.syncs += 1;
        let dirty = std::mem::take(&mut disk.dirty);
        if disk.fail_syncs > 0 {
            disk.fail_syncs -= 1;
            // Reported once; the bytes never reach the disk.
            return reply.error(libc::EIO);
        }
        for (start, end) in dirty {
            let Disk {
                current, durable, ..
            } = &mut *disk;
            durable[start..end].copy_from_slice(&current[start..end]);
        }
        reply.ok();
    }
}

/// The mounted filesystem; unmounted on drop.
pub struct FaultFs {
    disk: Arc<Mutex<Disk>>,
    // Dropped before `dir`: unmounts first.
    _session: fuser::BackgroundSession,
    dir: tempfile::TempDir,
}

impl FaultFs {
    /// Mounts an empty filesystem in a new temporary directory. Fails saying what is missing.
    pub fn mount() -> FaultFs {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(Mutex::new(Disk::default()));
        let session = fuser::spawn_mount2(
            Fs(disk.clone()),
            dir.path(),
            &[MountOption::FSName("blkcache-faultfs".into())],
        )
        .unwrap_or_else(|e| {
            panic!(
                "cannot mount the fault-injecting FUSE filesystem (needs root and /dev/fuse): {e}"
            )
        });
        let fs = FaultFs {
            disk,
            _session: session,
            dir,
        };
        // The mount is live once the kernel answers through it.
        for _ in 0..200 {
            if is_fuse(fs.dir.path()) {
                return fs;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the FUSE filesystem did not come up at {}",
            fs.dir.path().display()
        );
    }

    /// A fresh `image` of `size` zero bytes, all durable; no faults armed.
    pub fn reset(&self, size: usize) {
        let mut disk = self.disk();
        *disk = Disk {
            current: vec![0; size],
            durable: vec![0; size],
            ..Disk::default()
        };
    }

    /// The disk's state (to arm faults and read what is durable).
    pub fn disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }

    /// Path of the image file in the mount.
    pub fn image_path(&self) -> PathBuf {
        self.dir.path().join("image")
    }
}

/// Whether `dir` is a FUSE mount (statfs magic FUSE_SUPER_MAGIC).
fn is_fuse(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
}
