//! Test-mode media (`--test-mode MAPFILE`, like GNU ddrescue's `-H`): a plain file read as if it
//! were a damaged disc, with the damage described by a ddrescue mapfile.
//!
//! A read that touches any byte whose status in the damage map is not `+` fails: with `ENODATA`
//! (what Linux returns for a medium error, `BLK_STS_MEDIUM`) if a touched byte is `-`, with `EIO`
//! otherwise (`?`, `*`, `/`, or past the end of a damage map shorter than the file). Each read
//! can be given a latency (spent before the read or its error, on every path: see `plan.rs`), and
//! every sector's reads are counted, so tests can check that no
//! sector is read from the media twice. Like every media, it never opens the file writable.
//!
//! Test-mode media made [`allow_removal`](TestMedia::allow_removal) can also be pulled out like a
//! card from a reader ([`TestMedia::remove`]): from then on every read fails with `EIO`, as a
//! card reader's do, and `media_changed` says so, as the kernel's media check does.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use super::{FileMedia, Media, MediaError, MediaOptions, ReadPlan};
use crate::map::{FileMap, Status};

/// A file plus a damage map, latency and per-sector read counts.
///
/// Counts take 8 bytes per sector (a 4.7 GB file in 2048-byte sectors: 18 MB).
#[derive(Debug)]
pub struct TestMedia {
    inner: FileMedia,
    damage: FileMap,
    latency: Duration,
    /// Per sector: reads that touched it, failed or not.
    attempts: Vec<AtomicU32>,
    /// Per sector: reads that touched it and succeeded.
    reads: Vec<AtomicU32>,
    /// Can be pulled out ([`TestMedia::remove`]): the engine then watches it for a change.
    removable: bool,
    /// Pulled out: every read fails with EIO and the medium counts as changed.
    removed: AtomicBool,
}

impl TestMedia {
    /// Opens `path` read-only with the damage map at `damage_map` (ddrescue format).
    pub fn open(
        path: &Path,
        damage_map: &Path,
        opts: MediaOptions,
        latency: Duration,
    ) -> Result<TestMedia, MediaError> {
        let inner = FileMedia::open(path, opts)?;
        let damage = crate::map::load(damage_map)
            .map_err(|source| MediaError::DamageMap {
                path: damage_map.to_owned(),
                source,
            })?
            .map;
        Ok(TestMedia::from_parts(inner, damage, latency))
    }

    /// A test-mode media from an opened file and a damage map already in memory.
    pub fn from_parts(inner: FileMedia, damage: FileMap, latency: Duration) -> TestMedia {
        let sectors = inner.size().div_ceil(u64::from(inner.sector_size())) as usize;
        let counters = || (0..sectors).map(|_| AtomicU32::new(0)).collect();
        TestMedia {
            inner,
            damage,
            latency,
            attempts: counters(),
            reads: counters(),
            removable: false,
            removed: AtomicBool::new(false),
        }
    }

    /// Makes the media removable ([`remove`](TestMedia::remove)), so that the engine runs its
    /// media-change watcher over it as over a card reader.
    pub fn allow_removal(mut self) -> TestMedia {
        self.removable = true;
        self
    }

    /// Pulls the medium out (media made with [`allow_removal`](TestMedia::allow_removal)
    /// only; otherwise does nothing): every later read fails with `EIO` without touching a
    /// sector, and `media_changed` is `true` from now on.
    pub fn remove(&self) {
        if self.removable {
            self.removed.store(true, Ordering::Release);
        }
    }

    /// The damage map.
    pub fn damage(&self) -> &FileMap {
        &self.damage
    }

    /// Number of sectors (the last one may be partial).
    pub fn sectors(&self) -> u64 {
        self.reads.len() as u64
    }

    /// Successful media reads that covered sector number `sector`.
    pub fn read_count(&self, sector: u64) -> u32 {
        count(&self.reads, sector)
    }

    /// Media reads, failed or not, that covered sector number `sector`.
    pub fn attempt_count(&self, sector: u64) -> u32 {
        count(&self.attempts, sector)
    }

    /// `read_count` of every sector.
    pub fn read_counts(&self) -> Vec<u32> {
        self.reads
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// `attempt_count` of every sector.
    pub fn attempt_counts(&self) -> Vec<u32> {
        self.attempts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Sets every count to zero (e.g. after the identity read).
    pub fn reset_counts(&self) {
        for c in self.reads.iter().chain(&self.attempts) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a read of `len` bytes at `offset`; the error it meets in the damage map, if any.
    fn count_read(&self, offset: u64, len: u64) -> Option<io::Error> {
        let end = offset.saturating_add(len).min(self.size());
        if offset >= end {
            return None;
        }
        let sector = u64::from(self.sector_size());
        let err = self.damage_error(offset, end);
        let first = (offset / sector) as usize;
        let last = end.div_ceil(sector) as usize;
        for s in first..last.min(self.reads.len()) {
            self.attempts[s].fetch_add(1, Ordering::Relaxed);
            if err.is_none() {
                self.reads[s].fetch_add(1, Ordering::Relaxed);
            }
        }
        err
    }

    /// The error a read of `[offset, end)` meets in the damage map, if any.
    fn damage_error(&self, offset: u64, end: u64) -> Option<io::Error> {
        let mut errno = None;
        let mut covered = offset;
        for run in self.damage.runs(offset, end - offset) {
            covered = run.end();
            match run.status {
                Status::Finished => {}
                Status::BadSector => return Some(io::Error::from_raw_os_error(libc::ENODATA)),
                _ => errno = Some(libc::EIO),
            }
        }
        if covered < end {
            errno = Some(libc::EIO);
        }
        errno.map(io::Error::from_raw_os_error)
    }
}

fn count(counters: &[AtomicU32], sector: u64) -> u32 {
    usize::try_from(sector)
        .ok()
        .and_then(|s| counters.get(s))
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

impl Media for TestMedia {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    /// The latency, then the damage map's error or the file's bytes.
    fn plan(&self, offset: u64, len: usize) -> ReadPlan<'_> {
        if self.removed.load(Ordering::Acquire) {
            return ReadPlan::fail(io::Error::from_raw_os_error(libc::EIO), self.latency);
        }
        match self.count_read(offset, len as u64) {
            Some(err) => ReadPlan::fail(err, self.latency),
            None => ReadPlan {
                delay: self.latency,
                ..self.inner.plan(offset, len)
            },
        }
    }
    fn can_change(&self) -> bool {
        self.removable || self.inner.can_change()
    }
    fn media_changed(&self) -> bool {
        self.removed.load(Ordering::Acquire) || self.inner.media_changed()
    }
    fn describe(&self) -> String {
        format!("test-mode {}", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::AlignedBuf;

    fn media(damage: &[(u64, u64, Status)]) -> (tempfile::TempDir, TestMedia) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src");
        std::fs::write(&path, vec![0xabu8; 8 * 512]).unwrap();
        let mut map = FileMap::new(8 * 512);
        map.set(0, 8 * 512, Status::Finished);
        for &(pos, len, st) in damage {
            map.set(pos, len, st);
        }
        let inner = FileMedia::open(&path, MediaOptions::default()).unwrap();
        (dir, TestMedia::from_parts(inner, map, Duration::ZERO))
    }

    #[test]
    fn damage_fails_reads_and_counts() {
        let (_dir, m) = media(&[
            (1024, 512, Status::BadSector),
            (3072, 512, Status::NonTried),
        ]);
        let mut buf = AlignedBuf::new(1024);
        assert_eq!(m.read_at(0, &mut buf).unwrap(), 1024);
        assert!(buf.iter().all(|&b| b == 0xab));
        let err = m.read_at(1024, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
        let err = m.read_at(2560, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(m.read_count(0), 1);
        assert_eq!(m.read_count(2), 0);
        assert_eq!(m.attempt_count(2), 1);
        assert_eq!(m.attempt_count(5), 1);
        assert_eq!(m.attempt_count(7), 0);
        m.reset_counts();
        assert_eq!(m.attempt_counts(), vec![0; 8]);
        assert!(m.describe().starts_with("test-mode"));
    }

    #[test]
    fn a_removed_medium_fails_every_read_and_counts_as_changed() {
        let (_dir, m) = media(&[]);
        m.remove();
        assert!(
            !m.can_change() && !m.media_changed(),
            "not removable: remove does nothing"
        );
        let m = m.allow_removal();
        assert!(m.can_change() && !m.media_changed());
        let mut buf = AlignedBuf::new(512);
        assert!(m.read_at(0, &mut buf).is_ok());
        m.remove();
        assert!(m.media_changed());
        let err = m.read_at(512, &mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(
            m.attempt_count(1),
            0,
            "a read of no medium touches no sector"
        );
    }

    #[test]
    fn loads_a_ddrescue_mapfile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src");
        std::fs::write(&path, vec![1u8; 4096]).unwrap();
        let map = dir.path().join("damage.map");
        std::fs::write(
            &map,
            "# Rescue Logfile.\n0x0 + 1\n0x0 0x800 +\n0x800 0x200 -\n0xA00 0x600 +\n",
        )
        .unwrap();
        let m = TestMedia::open(&path, &map, MediaOptions::default(), Duration::ZERO).unwrap();
        let mut buf = AlignedBuf::new(512);
        assert!(m.read_at(0x600, &mut buf).is_ok());
        assert!(m.read_at(0x800, &mut buf).is_err());
        assert!(m.read_at(0xA00, &mut buf).is_ok());
        let err = TestMedia::open(
            &path,
            &dir.path().join("missing.map"),
            MediaOptions::default(),
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing.map"), "{err}");
    }
}
