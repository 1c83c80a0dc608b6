//! The cache directory of one media: where it lives and what it holds.
//!
//! Layout (one directory per media, under the state directory unless `--cache DIR` names it):
//! - `image`: the sparse image, exactly the source's size;
//! - `mapfile`: the GNU ddrescue mapfile saying which bytes of `image` are cached;
//! - `blkcache.json`: [`CacheMeta`] (source path, size, sector size, identity, creation time, the
//!   drives that read it), written last when a cache is made, so a directory without it was never
//!   used; rewritten atomically by the one process holding the image;
//! - `daemon.log`: the serving daemon's log.
//!
//! Two daemons never serve one cache: the image is flocked while open (see `image`). A cache is
//! private (`files`: 0700/0600, no links followed) and its directory must be the caller's alone.
//! A new cache is made in a temporary directory beside it and renamed into place when complete,
//! so an interrupted creation (Ctrl-C, a crash) leaves no half-made cache that later adds refuse.
//! Also holds [`OfflineMedia`], the stand-in source of a cache served with no source present.
//!
//! Which cache belongs to a source is `find.rs`; how sizes of one disc in different drives are
//! reconciled, `size.rs`.
//!
//! Must never reuse a cache whose sector size or identity differs from the source's, or whose
//! size differs by more than the tolerance (`size.rs`), nor overwrite any file of an existing
//! cache: a mismatch is an error naming both values. Never shrinks a cache.

mod drives;
mod find;
pub mod size;

pub use drives::{note as note_drive, DriveRecord};
pub use find::{found_message, known_bad_head, locate, Found, FoundBy};

use std::fs::{self, File, Permissions};
use std::hash::Hasher;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::files::{self, FileError};
use crate::image::{Image, ImageError};
use crate::map::{self, MapError, Mapfile, Meta};
use crate::media::{Media, ReadPlan};

/// File name of the image in a cache directory.
pub const IMAGE_FILE: &str = "image";
/// File name of the mapfile in a cache directory.
pub const MAPFILE_FILE: &str = "mapfile";
/// File name of the metadata in a cache directory.
pub const META_FILE: &str = "blkcache.json";
/// File name of the daemon's log in a cache directory.
pub const LOG_FILE: &str = "daemon.log";

/// Errors of finding, creating and opening caches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// Not root, and neither `$XDG_STATE_HOME` nor `$HOME` is set.
    #[error("no state directory: set XDG_STATE_HOME or HOME, or pass --cache DIR")]
    NoStateDir,
    /// A file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `blkcache.json` is not valid metadata.
    #[error("{} is not valid blkcache metadata", path.display())]
    BadMeta {
        /// The metadata file.
        path: PathBuf,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
    /// The cache holds another size than the source.
    #[error("cache {} holds {cache} bytes but the source {source_path} has {source_size} bytes, more than {} sectors apart, so it is another disc; refusing to reuse it (remove it or pass another --cache)", dir.display(), size::TOLERANCE_SECTORS)]
    SizeMismatch {
        /// The cache directory.
        dir: PathBuf,
        /// Size recorded in the cache.
        cache: u64,
        /// The source's size.
        source_size: u64,
        /// The source.
        source_path: String,
    },
    /// The cache has another sector size than the source.
    #[error("cache {} has sector size {cache} but the source {source_path} has {source_sector}; refusing to reuse it (remove it or pass another --cache)", dir.display())]
    SectorSizeMismatch {
        /// The cache directory.
        dir: PathBuf,
        /// Sector size recorded in the cache.
        cache: u32,
        /// The source's sector size.
        source_sector: u32,
        /// The source.
        source_path: String,
    },
    /// The cache belongs to other media.
    #[error("cache {} belongs to media '{cache}' but the source {source_path} is '{source_identity}'; refusing to reuse it (remove it or pass another --cache)", dir.display())]
    IdentityMismatch {
        /// The cache directory.
        dir: PathBuf,
        /// Identity recorded in the cache.
        cache: String,
        /// The source's identity.
        source_identity: String,
        /// The source.
        source_path: String,
    },
    /// The head sectors that read now are not the cache's.
    #[error("cache {} does not hold the first 64 KiB of {source_path} as read now ({read} of {of} sectors read): {why}; refusing to reuse it (remove it or pass another --cache)", dir.display())]
    HeadMismatch {
        /// The cache directory.
        dir: PathBuf,
        /// The source.
        source_path: String,
        /// Head sectors that read, of all.
        read: u64,
        of: u64,
        /// What differs.
        why: String,
    },
    /// A head that did not read whole matches no cache.
    #[error("the first 64 KiB of {source_path} did not read whole ({read} of {of} sectors read), and no cache in {} holds those sectors and the volume descriptor at byte 32768, so blkcache cannot tell which disc this is; pass --cache DIR: this disc's cache if it has one, or a new directory", state.display())]
    Unidentified {
        /// The source.
        source_path: String,
        /// Head sectors that read, of all.
        read: u64,
        of: u64,
        /// Where caches were looked for.
        state: PathBuf,
    },
    /// A head that did not read whole matches more than one cache.
    #[error("the readable sectors of the first 64 KiB of {source_path} ({read} of {of}) match {} caches: {}; pass the right one with --cache DIR", caches.len(), caches.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        /// The source.
        source_path: String,
        /// Head sectors that read, of all.
        read: u64,
        of: u64,
        /// The caches that match.
        caches: Vec<PathBuf>,
    },
    /// The image file has the wrong size.
    #[error("image {} has {found} bytes, the cache says {expected}", path.display())]
    ImageSize {
        /// The image file.
        path: PathBuf,
        /// The cache's size.
        expected: u64,
        /// The image's length.
        found: u64,
    },
    /// The mapfile covers another size than the cache.
    #[error("mapfile {} covers {map} bytes, the cache says {expected}", path.display())]
    MapSize {
        /// The mapfile.
        path: PathBuf,
        /// The cache's size.
        expected: u64,
        /// The map's size.
        map: u64,
    },
    /// Loading or saving the mapfile failed.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The directory holds an image or mapfile but no metadata: not made by blkcache, or its
    /// creation was interrupted. Never overwritten.
    #[error("{} holds an image or mapfile but no {META_FILE}; refusing to overwrite it (remove it or pass another --cache)", dir.display())]
    Incomplete {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory is not a blkcache cache.
    #[error("{} is not a blkcache cache (no {META_FILE})", dir.display())]
    NotACache {
        /// The directory.
        dir: PathBuf,
    },
    /// A new cache goes only into a new or empty directory: files already there are not ours.
    #[error("{} is not empty and holds no blkcache cache; refusing to make a cache in it (pass a new or empty directory)", dir.display())]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// A directory another user owns or can write: they could plant links or swap the files.
    #[error("refusing {what} {}: {why}", path.display())]
    Foreign {
        /// "cache directory" or "state directory".
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Who owns it, or its mode.
        why: String,
    },
    /// A file of the cache is a symbolic link (or no regular file): never followed.
    #[error("refusing {}: it is a symbolic link or not a regular file", path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Creating the image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Writing a file of the cache failed.
    #[error(transparent)]
    File(#[from] FileError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What a cache is for: the source's facts, compared with the cache's on every open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The source path as given.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size.
    pub sector_size: u32,
    /// What identifies the media (`media::fingerprint`): caches are never shared across it.
    pub identity: String,
}

/// Contents of `blkcache.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// Source path when the cache was made.
    pub source: String,
    /// Size in bytes.
    pub size: u64,
    /// Logical sector size.
    pub sector_size: u32,
    /// Media identity.
    pub identity: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// blkcache version that made the cache.
    pub version: String,
    /// The head identity (`media::Head::identity`) of a cache made by older blkcache (whose `identity`
    /// hashed the size too), recorded once the same disc was found by its old identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_identity: Option<String>,
    /// Every drive that read the media, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<DriveRecord>,
}

impl CacheMeta {
    /// The metadata of a cache made now for `source` by blkcache `version`.
    pub fn new(source: &SourceInfo, version: String) -> CacheMeta {
        CacheMeta {
            source: source.path.clone(),
            size: source.size,
            sector_size: source.sector_size,
            identity: source.identity.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            version,
            head_identity: None,
            drives: Vec::new(),
        }
    }
}

impl CacheMeta {
    /// What names the disc whatever drive read it: the head identity (recorded in a cache
    /// made by older blkcache once found by it), else the identity.
    pub fn disc_identity(&self) -> &str {
        self.head_identity.as_deref().unwrap_or(&self.identity)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The state directory for a user: `/var/lib/blkcache` for root, else
/// `$XDG_STATE_HOME/blkcache`, else `$HOME/.local/state/blkcache` (relative values count as
/// unset, as the XDG spec says).
pub fn state_dir_for(
    euid: u32,
    xdg_state_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if euid == 0 {
        return Some(PathBuf::from("/var/lib/blkcache"));
    }
    if let Some(x) = xdg_state_home.filter(|p| p.is_absolute()) {
        return Some(x.join("blkcache"));
    }
    home.filter(|p| p.is_absolute())
        .map(|h| h.join(".local/state/blkcache"))
}

/// Environment variable that overrides the state directory (tests, unusual layouts).
pub const STATE_DIR_ENV: &str = "BLKCACHE_STATE_DIR";

/// The state directory: `$BLKCACHE_STATE_DIR` if set, else the calling user's (see
/// [`state_dir_for`]).
pub fn state_dir() -> Result<PathBuf, CacheError> {
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let xdg = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    state_dir_for(euid(), xdg.as_deref(), home.as_deref()).ok_or(CacheError::NoStateDir)
}

/// The directory name for media of this identity: the identity itself when it is a safe file
/// name (the media fingerprint is 16 hex digits), else its readable part plus a hash of the
/// whole, so identities that differ only in characters not allowed in names get distinct dirs.
pub fn dir_name(identity: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if !identity.is_empty()
        && identity.len() <= 80
        && !identity.starts_with('.')
        && identity.chars().all(safe)
    {
        return identity.to_string();
    }
    let mut readable: String = identity
        .chars()
        .map(|c| if safe(c) { c } else { '_' })
        .take(80)
        .collect();
    readable = readable.trim_start_matches(['.', '_']).to_string();
    if readable.is_empty() {
        readable = "media".to_string();
    }
    // FNV-1a 64: stable across versions and platforms (std's hasher is not).
    let mut h = fnv::FnvHasher::default();
    h.write(identity.as_bytes());
    format!("{readable}-{:016x}", h.finish())
}

/// The default cache directory of media with this identity; makes the state directory (0700)
/// if missing and refuses one that is not the caller's alone.
pub fn default_dir(identity: &str) -> Result<PathBuf, CacheError> {
    let state = state_dir()?;
    files::create_private_dir(&state).map_err(io_err("create directory", &state))?;
    check_dir(&state, "state directory")?;
    Ok(state.join(dir_name(identity)))
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Refuses a directory that someone other than the caller owns or can write.
fn check_dir(dir: &Path, what: &'static str) -> Result<(), CacheError> {
    let meta = fs::metadata(dir).map_err(io_err("stat", dir))?;
    match files::foreign_dir_problem(&meta, euid()) {
        None => Ok(()),
        Some(why) => Err(CacheError::Foreign {
            what,
            path: dir.to_path_buf(),
            why,
        }),
    }
}

/// Refuses a symbolic link (or anything but a regular file) where a file of the cache belongs.
fn check_file(path: &Path) -> Result<fs::Metadata, CacheError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    if !meta.file_type().is_file() {
        return Err(CacheError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(meta)
}

/// Reads a file of the cache, never through a symbolic link.
fn read_file(path: &Path) -> Result<Vec<u8>, CacheError> {
    files::read_nofollow(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            CacheError::NotAFile {
                path: path.to_path_buf(),
            }
        } else {
            io_err("read", path)(e)
        }
    })
}

/// An opened (checked) cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    meta: CacheMeta,
}

impl Cache {
    /// Opens the cache in `dir` for `source`, creating it (sparse image, all-`?` mapfile, metadata)
    /// when `dir` is missing or empty. Returns the cache and whether it was created.
    pub fn open_or_create(dir: &Path, source: &SourceInfo) -> Result<(Cache, bool), CacheError> {
        let (cache, created) = Cache::open_or_create_unchecked(dir, source)?;
        if !created {
            cache.check_source(source)?;
        }
        Ok((cache, created))
    }

    /// [`open_or_create`](Cache::open_or_create) without comparing an existing cache with the
    /// source (`find.rs` does, by its rules).
    pub(crate) fn open_or_create_unchecked(
        dir: &Path,
        source: &SourceInfo,
    ) -> Result<(Cache, bool), CacheError> {
        match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("stat", dir)(e)),
            Ok(_) => {
                check_dir(dir, "cache directory")?;
                if fs::symlink_metadata(dir.join(META_FILE)).is_ok() {
                    return Ok((Cache::open(dir)?, false));
                }
                if fs::symlink_metadata(dir.join(IMAGE_FILE)).is_ok()
                    || fs::symlink_metadata(dir.join(MAPFILE_FILE)).is_ok()
                {
                    return Err(CacheError::Incomplete {
                        dir: dir.to_path_buf(),
                    });
                }
                let mut entries = fs::read_dir(dir).map_err(io_err("list", dir))?;
                if entries.next().is_some() {
                    return Err(CacheError::NotEmpty {
                        dir: dir.to_path_buf(),
                    });
                }
            }
        }
        Cache::create(dir, source)
    }

    /// Opens an existing cache (no source needed: offline serving, `list`), checking that its
    /// directory is the caller's alone, its files are no links, and its image has the size its
    /// metadata says.
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(CacheError::NotACache {
                    dir: dir.to_path_buf(),
                })
            }
            _ => check_dir(dir, "cache directory")?,
        }
        let meta_path = dir.join(META_FILE);
        let bytes = match read_file(&meta_path) {
            Err(CacheError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(CacheError::NotACache {
                    dir: dir.to_path_buf(),
                })
            }
            other => other?,
        };
        let meta: CacheMeta =
            serde_json::from_slice(&bytes).map_err(|source| CacheError::BadMeta {
                path: meta_path.clone(),
                source,
            })?;
        let cache = Cache {
            dir: dir.to_path_buf(),
            meta,
        };
        check_file(&cache.mapfile_path())?;
        let image = cache.image_path();
        let found = check_file(&image)?.len();
        let mut cache = cache;
        if found != cache.meta.size {
            // A grow interrupted after the image was extended (see `grow`): the image's size.
            if found < cache.meta.size
                || size::reconcile(cache.meta.size, found, cache.meta.sector_size).is_none()
            {
                return Err(CacheError::ImageSize {
                    path: image,
                    expected: cache.meta.size,
                    found,
                });
            }
            cache.meta.size = found;
        }
        Ok(cache)
    }

    /// Rewrites `blkcache.json` with `change` applied (atomically). Only for the process that
    /// holds the image (`Image::open` locks it): two writers would lose each other's changes.
    pub fn update_meta(&mut self, change: impl FnOnce(&mut CacheMeta)) -> Result<(), CacheError> {
        let mut meta = self.meta.clone();
        change(&mut meta);
        let json = serde_json::to_string_pretty(&meta).map_err(|source| CacheError::BadMeta {
            path: self.meta_path(),
            source,
        })?;
        files::write_atomic(&self.meta_path(), format!("{json}\n").as_bytes())?;
        self.meta = meta;
        Ok(())
    }

    /// Grows the cache to `size` bytes (`size.rs`: a drive reports the disc larger), under the
    /// image's lock, given its loaded map: the image is extended sparsely and synced, then the
    /// map saved with the new bytes non-tried, then the metadata. A crash in between leaves a
    /// cache that opens at the image's size (see `open`, `load_mapfile`). Returns the grown
    /// image and map (as they were if there is nothing to grow).
    pub fn grow(
        &mut self,
        image: Image,
        mut mapfile: Mapfile,
        size: u64,
    ) -> Result<(Image, Mapfile), CacheError> {
        // What is on disk, not what `open` made of an interrupted grow.
        let path = self.meta_path();
        let on_disk: CacheMeta = serde_json::from_slice(&read_file(&path)?)
            .map_err(|source| CacheError::BadMeta { path, source })?;
        if size <= on_disk.size && image.size() >= size && mapfile.map.size() >= size {
            return Ok((image, mapfile));
        }
        let image = image.grow(size)?;
        mapfile.map = mapfile.map.extended(size);
        mapfile.meta.size = Some(size);
        map::save(&self.mapfile_path(), &mapfile)?;
        self.update_meta(|meta| meta.size = size)?;
        Ok((image, mapfile))
    }

    /// Makes the cache in a temporary directory beside `dir`, then renames it into place (over
    /// `dir` if that is an empty directory): `dir` never holds a half-made cache.
    fn create(dir: &Path, source: &SourceInfo) -> Result<(Cache, bool), CacheError> {
        let parent = files::parent_dir(dir);
        files::create_private_dir(&parent).map_err(io_err("create directory", &parent))?;
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(dir.file_name().unwrap_or(dir.as_os_str()));
        prefix.push(".new-");
        let staging = tempfile::Builder::new()
            .prefix(&prefix)
            .permissions(Permissions::from_mode(files::DIR_MODE))
            .tempdir_in(&parent)
            .map_err(io_err("create a temporary directory in", &parent))?;
        let meta = CacheMeta::new(source, env!("CARGO_PKG_VERSION").to_string());
        let staged = Cache {
            dir: staging.path().to_path_buf(),
            meta,
        };
        Image::create(&staged.image_path(), source.size)?.sync()?;
        let mapfile = Mapfile::new(
            source.size,
            Meta {
                source: Some(source.path.clone()),
                size: Some(source.size),
                sector_size: Some(source.sector_size),
                identity: Some(source.identity.clone()),
                version: Some(staged.meta.version.clone()),
                ..Meta::default()
            },
        );
        map::save(&staged.mapfile_path(), &mapfile)?;
        let json =
            serde_json::to_string_pretty(&staged.meta).map_err(|source| CacheError::BadMeta {
                path: staged.meta_path(),
                source,
            })?;
        files::write_atomic(&staged.meta_path(), format!("{json}\n").as_bytes())?;
        if let Err(e) = fs::rename(staging.path(), dir) {
            // Another `add` of the same media may have won the race: use its cache.
            if fs::symlink_metadata(dir.join(META_FILE)).is_ok() {
                let cache = Cache::open(dir)?;
                cache.check_source(source)?;
                return Ok((cache, false));
            }
            return Err(io_err("move the new cache into place at", dir)(e));
        }
        // Renamed away: nothing is left to clean up.
        let _ = staging.keep();
        files::sync_dir(&parent)?;
        Ok((
            Cache {
                dir: dir.to_path_buf(),
                meta: staged.meta,
            },
            true,
        ))
    }

    /// Refuses a source whose sector size or identity is not the cache's, or whose size is
    /// not within the tolerance of the cache's (`size.rs`).
    pub fn check_source(&self, source: &SourceInfo) -> Result<(), CacheError> {
        if size::reconcile(self.meta.size, source.size, self.meta.sector_size).is_none() {
            return Err(CacheError::SizeMismatch {
                dir: self.dir.clone(),
                cache: self.meta.size,
                source_size: source.size,
                source_path: source.path.clone(),
            });
        }
        if self.meta.sector_size != source.sector_size {
            return Err(CacheError::SectorSizeMismatch {
                dir: self.dir.clone(),
                cache: self.meta.sector_size,
                source_sector: source.sector_size,
                source_path: source.path.clone(),
            });
        }
        if self.meta.identity != source.identity {
            return Err(CacheError::IdentityMismatch {
                dir: self.dir.clone(),
                cache: self.meta.identity.clone(),
                source_identity: source.identity.clone(),
                source_path: source.path.clone(),
            });
        }
        Ok(())
    }

    /// Loads the saved mapfile, refusing one that covers another size (a map shorter by an
    /// interrupted grow is extended with non-tried bytes, in memory).
    pub fn load_mapfile(&self) -> Result<Mapfile, CacheError> {
        let size = self.meta.size;
        let path = self.mapfile_path();
        let bytes = read_file(&path)?;
        let mut m = map::parse_bytes(&bytes, &path)?;
        let found = m.map.size();
        if found < size && size::reconcile(found, size, self.meta.sector_size).is_some() {
            m.map = m.map.extended(size);
            m.meta.size = Some(size);
        }
        if m.map.size() != size {
            return Err(CacheError::MapSize {
                path,
                expected: size,
                map: m.map.size(),
            });
        }
        Ok(m)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The metadata.
    pub fn meta(&self) -> &CacheMeta {
        &self.meta
    }
    /// Path of the image.
    pub fn image_path(&self) -> PathBuf {
        self.dir.join(IMAGE_FILE)
    }
    /// Path of the mapfile.
    pub fn mapfile_path(&self) -> PathBuf {
        self.dir.join(MAPFILE_FILE)
    }
    /// Path of the metadata.
    pub fn meta_path(&self) -> PathBuf {
        self.dir.join(META_FILE)
    }
    /// Path of the daemon's log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Opens the daemon's log for appending (made 0600; never through a link). Returns it and
    /// its length before this run's lines.
    pub fn open_log(&self) -> Result<(File, u64), CacheError> {
        let path = self.log_path();
        let file = files::private_options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => CacheError::NotAFile { path: path.clone() },
                _ => io_err("open log", &path)(e),
            })?;
        let start = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((file, start))
    }
}

/// The source of a cache served offline (`add --offline`): the cache's size and sector size,
/// and every read fails with ENOMEDIUM, which is not a medium error, so no sector is ever marked
/// bad for it; the device returns EIO for sectors not in the cache.
#[derive(Debug, Clone)]
pub struct OfflineMedia {
    size: u64,
    sector_size: u32,
    dir: PathBuf,
}

impl OfflineMedia {
    /// The offline stand-in for `cache`'s source.
    pub fn new(cache: &Cache) -> OfflineMedia {
        OfflineMedia {
            size: cache.meta.size,
            sector_size: cache.meta.sector_size,
            dir: cache.dir.clone(),
        }
    }

    fn error(&self) -> io::Error {
        io::Error::from_raw_os_error(libc::ENOMEDIUM)
    }
}

impl Media for OfflineMedia {
    fn size(&self) -> u64 {
        self.size
    }
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    /// No descriptor: every read fails at once.
    fn plan(&self, _offset: u64, _len: usize) -> ReadPlan<'_> {
        ReadPlan::fail(self.error(), Duration::ZERO)
    }
    fn describe(&self) -> String {
        format!(
            "offline (no source; only cached sectors of {} are readable), sector size {}",
            self.dir.display(),
            self.sector_size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(size: u64, identity: &str) -> SourceInfo {
        SourceInfo {
            path: "/dev/sr0".into(),
            size,
            sector_size: 2048,
            identity: identity.into(),
        }
    }

    #[test]
    fn state_dir_root_xdg_home() {
        let x = Path::new("/x/state");
        let h = Path::new("/home/u");
        assert_eq!(
            state_dir_for(0, Some(x), Some(h)).unwrap(),
            PathBuf::from("/var/lib/blkcache")
        );
        assert_eq!(
            state_dir_for(1000, Some(x), Some(h)).unwrap(),
            PathBuf::from("/x/state/blkcache")
        );
        assert_eq!(
            state_dir_for(1000, None, Some(h)).unwrap(),
            PathBuf::from("/home/u/.local/state/blkcache")
        );
        assert_eq!(
            state_dir_for(1000, Some(Path::new("rel")), Some(h)).unwrap(),
            PathBuf::from("/home/u/.local/state/blkcache")
        );
        assert_eq!(state_dir_for(1000, None, None), None);
    }

    #[test]
    fn dir_name_is_safe_stable_and_distinct() {
        assert_eq!(dir_name("0123456789abcdef"), "0123456789abcdef");
        let a = dir_name("HL-DT-ST DVDRAM/serial 123:MYDISC");
        assert!(a.starts_with("HL-DT-ST_DVDRAM_serial_123_MYDISC-"), "{a}");
        assert!(!a.contains('/'));
        assert_eq!(a, dir_name("HL-DT-ST DVDRAM/serial 123:MYDISC"));
        assert_ne!(dir_name("a/b"), dir_name("a:b"));
        // FNV-1a 64 of "a/b": names of existing caches never change.
        assert_eq!(dir_name("a/b"), "a_b-e620c3190468cf61");
        assert!(dir_name("..").starts_with("media-"));
        assert!(dir_name("").starts_with("media-"));
        assert!(dir_name(&"x/".repeat(500)).len() < 100);
    }

    #[test]
    fn create_then_reuse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let src = source(8 * 2048, "disc-1");
        let (cache, created) = Cache::open_or_create(&dir, &src).unwrap();
        assert!(created);
        assert_eq!(fs::metadata(cache.image_path()).unwrap().len(), 8 * 2048);
        let m = cache.load_mapfile().unwrap();
        assert_eq!(m.map.size(), 8 * 2048);
        assert_eq!(m.map.first_unfinished(), Some(0));
        assert_eq!(m.meta.identity.as_deref(), Some("disc-1"));
        let text = fs::read_to_string(cache.mapfile_path()).unwrap();
        let block = ["0x00000000", "0x00004000", "?"];
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().eq(block.iter().copied())),
            "{text}"
        );

        let (again, created) = Cache::open_or_create(&dir, &src).unwrap();
        assert!(!created);
        assert_eq!(again.meta(), cache.meta());
    }

    #[test]
    fn new_mapfile_is_read_by_gnu_ddrescuelog() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open_or_create(tmp.path(), &source(8 * 2048, "d")).unwrap();
        let out = std::process::Command::new("ddrescuelog")
            .arg("-t")
            .arg(cache.mapfile_path())
            .output()
            .expect("ddrescuelog (Debian package gddrescue) is needed by this test");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("16384 B"), "{text}");
    }

    #[test]
    fn image_is_sparse() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open_or_create(tmp.path(), &source(1 << 30, "big")).unwrap();
        let md = fs::metadata(cache.image_path()).unwrap();
        assert_eq!(md.len(), 1 << 30);
        assert!(md.blocks() * 512 < 1 << 20, "{} blocks", md.blocks());
    }

    #[test]
    fn mismatches_are_refused_naming_both_values() {
        let tmp = tempfile::tempdir().unwrap();
        Cache::open_or_create(tmp.path(), &source(4096, "disc-1")).unwrap();
        let before = fs::read(tmp.path().join(MAPFILE_FILE)).unwrap();

        // Within the tolerance (`size.rs`): the same disc read by another drive.
        Cache::open_or_create(tmp.path(), &source(8192, "disc-1")).unwrap();
        let far = 4096 + (size::TOLERANCE_SECTORS + 1) * 2048;
        let e = Cache::open_or_create(tmp.path(), &source(far, "disc-1")).unwrap_err();
        assert!(matches!(e, CacheError::SizeMismatch { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("4096") && msg.contains(&far.to_string()),
            "{msg}"
        );

        let e = Cache::open_or_create(tmp.path(), &source(4096, "disc-2")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("disc-1") && msg.contains("disc-2"), "{msg}");

        let mut s = source(4096, "disc-1");
        s.sector_size = 512;
        let e = Cache::open_or_create(tmp.path(), &s).unwrap_err();
        assert!(matches!(e, CacheError::SectorSizeMismatch { .. }), "{e}");

        assert_eq!(fs::read(tmp.path().join(MAPFILE_FILE)).unwrap(), before);
    }

    #[test]
    fn foreign_files_are_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(IMAGE_FILE), b"precious").unwrap();
        let e = Cache::open_or_create(tmp.path(), &source(4096, "d")).unwrap_err();
        assert!(matches!(e, CacheError::Incomplete { .. }), "{e}");
        assert_eq!(fs::read(tmp.path().join(IMAGE_FILE)).unwrap(), b"precious");

        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("notes.txt"), b"mine").unwrap();
        let e = Cache::open_or_create(other.path(), &source(4096, "d")).unwrap_err();
        assert!(matches!(e, CacheError::NotEmpty { .. }), "{e}");
        let names: Vec<_> = fs::read_dir(other.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn open_checks_image_size_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Cache::open(tmp.path()).unwrap_err();
        assert!(matches!(e, CacheError::NotACache { .. }), "{e}");

        let (cache, _) = Cache::open_or_create(tmp.path(), &source(4096, "d")).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(cache.image_path())
            .unwrap()
            .set_len(2048)
            .unwrap();
        let e = Cache::open(tmp.path()).unwrap_err();
        assert!(
            matches!(e, CacheError::ImageSize { found: 2048, .. }),
            "{e}"
        );

        fs::write(cache.meta_path(), "{ not json").unwrap();
        let e = Cache::open(tmp.path()).unwrap_err();
        assert!(matches!(e, CacheError::BadMeta { .. }), "{e}");
    }

    #[test]
    fn mapfile_of_other_size_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open_or_create(tmp.path(), &source(1 << 20, "d")).unwrap();
        map::save(&cache.mapfile_path(), &Mapfile::new(2048, Meta::default())).unwrap();
        let e = cache.load_mapfile().unwrap_err();
        assert!(matches!(e, CacheError::MapSize { map: 2048, .. }), "{e}");
        // Larger than the cache: never cut.
        map::save(
            &cache.mapfile_path(),
            &Mapfile::new(2 << 20, Meta::default()),
        )
        .unwrap();
        let e = cache.load_mapfile().unwrap_err();
        assert!(matches!(e, CacheError::MapSize { .. }), "{e}");
    }

    /// A grow stopped after the image was extended, or after the map was saved: the cache
    /// opens at the image's size, the map's new bytes non-tried; growing again finishes it.
    #[test]
    fn an_interrupted_grow_opens_at_the_image_size() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open_or_create(tmp.path(), &source(8 * 2048, "d")).unwrap();
        let image = Image::open(&cache.image_path()).unwrap();
        let image = image.grow(10 * 2048).unwrap();
        drop(image);
        let mut reopened = Cache::open(tmp.path()).unwrap();
        assert_eq!(reopened.meta().size, 10 * 2048);
        let m = reopened.load_mapfile().unwrap();
        assert_eq!(m.map.size(), 10 * 2048);
        assert_eq!(m.map.status_at(9 * 2048), Some(map::Status::NonTried));
        let image = Image::open(&reopened.image_path()).unwrap();
        let m = reopened.load_mapfile().unwrap();
        let (image, _) = reopened.grow(image, m, 10 * 2048).unwrap();
        assert_eq!(image.size(), 10 * 2048);
        drop(image);
        let on_disk: CacheMeta =
            serde_json::from_slice(&fs::read(reopened.meta_path()).unwrap()).unwrap();
        assert_eq!(on_disk.size, 10 * 2048);
        assert_eq!(
            map::load(&reopened.mapfile_path()).unwrap().map.size(),
            10 * 2048
        );
    }

    #[test]
    fn offline_media_fails_every_read_without_a_medium_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open_or_create(tmp.path(), &source(4096, "d")).unwrap();
        let m = OfflineMedia::new(&cache);
        assert_eq!((m.size(), m.sector_size()), (4096, 2048));
        let err = m.plan(0, 2048).source.unwrap_err();
        assert!(!crate::media::is_medium_error(&err));
        assert_eq!(err.raw_os_error(), Some(libc::ENOMEDIUM));
        assert!(m.read_at(0, &mut [0u8; 2048]).is_err());
    }
}
