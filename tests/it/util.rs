//! Helpers shared by the integration tests: real parts only (loop devices, the real tools).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A read-only loop device over a file, detached on drop. Needs `losetup` (util-linux) and the
/// right to attach loop devices (root); fails saying so otherwise.
pub struct Loop(pub PathBuf);

impl Loop {
    pub fn attach(file: &Path, sector_size: u32) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--sector-size"])
            .arg(sector_size.to_string())
            .arg(file)
            .output()
            .expect("losetup (util-linux) is needed for the block-device tests");
        assert!(
            out.status.success(),
            "cannot attach a loop device (needs root and /dev/loop-control): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    /// Swaps the backing file (same size) like a disc change: `LOOP_CHANGE_FD`.
    pub fn change_disc(&self, file: &Path) {
        // <linux/loop.h>: #define LOOP_CHANGE_FD 0x4C06
        const LOOP_CHANGE_FD: libc::c_ulong = 0x4C06;
        let dev = File::open(&self.0).unwrap();
        let new = File::open(file).unwrap();
        // SAFETY: both descriptors are open for the call; LOOP_CHANGE_FD takes the new backing
        // file's descriptor by value and writes no memory of ours.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CHANGE_FD, new.as_raw_fd()) };
        assert_eq!(
            rc,
            0,
            "LOOP_CHANGE_FD on {}: {}",
            self.0.display(),
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A tmpfs of `size` bytes mounted on a new temporary directory, unmounted on drop: a small disk
/// that really fills up (ENOSPC). Needs root and `mount` (util-linux); fails saying so otherwise.
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    pub fn mount(size: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("blkcache-test")
            .arg(dir.path())
            .output()
            .expect("mount (util-linux) is needed for the full-disk tests");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}
