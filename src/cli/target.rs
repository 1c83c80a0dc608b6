//! What a `status`, `fill` or `export` argument names: a blkcache device (`/dev/ublkbN`,
//! `/dev/nbdN`, `/dev/blkcache/srN`), a cache directory, or a mapfile (in a cache directory or
//! not). Devices are found as `blkcache list` finds them.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use blkcache::cache::{MAPFILE_FILE, META_FILE};

/// A resolved argument.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The cache directory (one with blkcache's metadata), when the argument is one, is its
    /// mapfile, or is a device serving one.
    pub cache: Option<PathBuf>,
    /// The saved mapfile.
    pub mapfile: PathBuf,
}

/// Resolves `arg`; a block device that is no blkcache device is an error.
pub(super) fn resolve(arg: &Path) -> anyhow::Result<Target> {
    let abs = std::path::absolute(arg).with_context(|| format!("bad path {}", arg.display()))?;
    let Ok(meta) = std::fs::metadata(arg) else {
        // Loading it says what is wrong.
        return Ok(Target {
            cache: None,
            mapfile: abs,
        });
    };
    if meta.file_type().is_block_device() {
        let Some((cache, _)) = device_cache(arg, meta.rdev()) else {
            bail!(
                "{} is neither a blkcache device nor served by one (`blkcache list` shows them)",
                arg.display()
            );
        };
        return Ok(Target {
            mapfile: cache.join(MAPFILE_FILE),
            cache: Some(cache),
        });
    }
    if meta.is_dir() {
        // A directory holding only a ddrescue mapfile has no daemon.
        return Ok(Target {
            mapfile: abs.join(MAPFILE_FILE),
            cache: abs.join(META_FILE).exists().then_some(abs),
        });
    }
    let dir = abs.parent().map(Path::to_path_buf);
    let in_cache = abs.file_name() == Some(MAPFILE_FILE.as_ref())
        && dir.as_ref().is_some_and(|d| d.join(META_FILE).exists());
    Ok(Target {
        cache: dir.filter(|_| in_cache),
        mapfile: abs,
    })
}

/// The cache of the blkcache device `arg` (device number `rdev`), or of the one serving the
/// drive `arg` (`status /dev/sr0` for the device over /dev/sr0). The flag says which: true for
/// the blkcache device itself.
pub(super) fn device_cache(arg: &Path, rdev: u64) -> Option<(PathBuf, bool)> {
    let same = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
    };
    let devices = super::list::device_caches();
    let served = devices
        .iter()
        .find(|(dev, _, _)| dev == arg || same(dev))
        .map(|(_, _, cache)| (cache.clone(), true));
    let over = || {
        devices
            .iter()
            .find(|(_, src, _)| src.as_deref().is_some_and(same))
            .map(|(_, _, cache)| (cache.clone(), false))
    };
    served.or_else(over)
}
