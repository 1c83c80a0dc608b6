//! Adopting a directory GNU ddrescue made: `image` and `mapfile` and nothing else become a
//! blkcache cache, so `blkcache fill` (and `add`) can go on where ddrescue stopped.
//!
//! ddrescue's image stops at the last byte it wrote and its map at the end of what it was told
//! to read (`-s`, or the last `+` block of a `-H` test map): the image is extended with a hole
//! and the map with non-tried bytes up to the source's size. Order: image, then map (saved
//! atomically, with blkcache's metadata), then `blkcache.json` last, which marks the directory
//! as a cache. Never shrinks anything: an image or map larger than the source by a few sectors
//! (ddrescue run with a drive that reads the disc larger: `cache::size`) makes the cache that
//! size; larger still is refused.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use crate::cache::{size, CacheMeta, SourceInfo, IMAGE_FILE, MAPFILE_FILE, META_FILE};
use crate::map::{self, MapError, Meta};

/// Why a ddrescue directory cannot be adopted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptError {
    /// The directory lacks `image` or `mapfile`.
    #[error("{} has no {what}; a GNU ddrescue rescue to adopt needs both image and mapfile", dir.display())]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// The missing file's name.
        what: &'static str,
    },
    /// The map or image covers more than the source.
    #[error("{} is {found} bytes but the source {source_path} has {size} bytes; not the same media?", path.display())]
    Larger {
        /// The map or image.
        path: PathBuf,
        /// Its size.
        found: u64,
        /// The source's size.
        size: u64,
        /// The source.
        source_path: String,
    },
    /// The mapfile cannot be read or saved.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The metadata cannot be written.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// A file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether `dir` looks like a ddrescue rescue rather than a blkcache cache: an image or a
/// mapfile, no metadata.
pub fn is_ddrescue_dir(dir: &Path) -> bool {
    !dir.join(META_FILE).exists()
        && (dir.join(IMAGE_FILE).exists() || dir.join(MAPFILE_FILE).exists())
}

/// Makes `dir` (a ddrescue `image` + `mapfile`) a cache of `source`.
pub fn adopt(dir: &Path, source: &SourceInfo) -> Result<(), AdoptError> {
    let image = dir.join(IMAGE_FILE);
    let mapfile = dir.join(MAPFILE_FILE);
    for (path, what) in [(&image, IMAGE_FILE), (&mapfile, MAPFILE_FILE)] {
        if !path.exists() {
            return Err(AdoptError::Missing {
                dir: dir.to_owned(),
                what,
            });
        }
    }
    let larger = |path: &Path, found: u64| AdoptError::Larger {
        path: path.to_owned(),
        found,
        size: source.size,
        source_path: source.path.clone(),
    };
    let mut m = map::load(&mapfile)?;
    let within = |found: u64| size::reconcile(source.size, found, source.sector_size).is_some();
    if !within(m.map.size()) && m.map.size() > source.size {
        return Err(larger(&mapfile, m.map.size()));
    }
    let io_err = |op, path: &Path| {
        let path = path.to_owned();
        move |source| AdoptError::Io { op, path, source }
    };
    let file = OpenOptions::new()
        .write(true)
        .open(&image)
        .map_err(io_err("open image", &image))?;
    let len = file.metadata().map_err(io_err("stat image", &image))?.len();
    if !within(len) && len > source.size {
        return Err(larger(&image, len));
    }
    let size = source.size.max(len).max(m.map.size());
    let source = &SourceInfo {
        size,
        ..source.clone()
    };
    if len < size {
        // A hole: nothing is written, and the map claims none of it.
        file.set_len(size).map_err(io_err("extend image", &image))?;
        file.sync_all().map_err(io_err("fsync image", &image))?;
    }
    drop(file);
    m.map = m.map.extended(size);
    let version = env!("CARGO_PKG_VERSION").to_string();
    m.meta = Meta {
        source: Some(source.path.clone()),
        size: Some(source.size),
        sector_size: Some(source.sector_size),
        identity: Some(source.identity.clone()),
        version: Some(version.clone()),
        ..m.meta
    };
    map::save(&mapfile, &m)?;
    let meta = CacheMeta::new(source, version);
    let json = serde_json::to_string_pretty(&meta).map_err(|e| AdoptError::Io {
        op: "serialise metadata for",
        path: dir.join(META_FILE),
        source: io::Error::other(e),
    })?;
    crate::files::write_atomic(&dir.join(META_FILE), format!("{json}\n").as_bytes())?;
    Ok(())
}
