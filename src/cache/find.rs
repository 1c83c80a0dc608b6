//! Which cache belongs to a source: the rules, in order, and what `add` shows of them.
//!
//! - The head read whole: the cache named by its head identity (`media::Head::identity`: the
//!   sector size and the first 64 KiB, not the size); else a cache made by older blkcache, named by the
//!   old identity (size, sector size, first 64 KiB) for any size within the tolerance
//!   (`size.rs`); else a new cache named by the head identity.
//! - The head did not read whole (a disc whose start degraded): the one cache of the same sector
//!   size, a size within the tolerance, whose image holds as `+` the same bytes for every head
//!   sector that read, the volume descriptor's sectors (byte 32768) among them. None: refused,
//!   saying to pass `--cache`; more than one: refused, naming them.
//! - `--cache DIR` names the cache: it is checked by the same rules (sector size, size within
//!   the tolerance, head identity, old identity or readable sectors); for a head that did not
//!   read whole, a named cache is also accepted if no head sector that read differs from it and
//!   at least one is in it (none needed if the cache was made by hand for a head that did not
//!   read then: a size-only identity).
//!
//! Reads caches only; the caller updates the one it serves (under the image's lock).

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{default_dir, dir_name, size, state_dir, Cache, CacheError, SourceInfo};
use crate::map::Status;
use crate::media::identity::{size_only_identity, Head};

/// How a source's cache was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundBy {
    /// Made now.
    New,
    /// By its head identity.
    Head,
    /// By the identity of caches made by older blkcache (size, sector size, first 64 KiB).
    SizeIdentity,
    /// Named with `--cache`, the head not read whole: the head sectors it holds and that read
    /// now are the same.
    Named {
        /// Head sectors compared.
        compared: u64,
        /// Head sectors that read, of all.
        read: u64,
        of: u64,
    },
    /// By the readable sectors of the head, the volume descriptor among them.
    ReadableSectors {
        /// Head sectors that read, of all.
        read: u64,
        of: u64,
        /// The volume's label (ISO9660) or "UDF", if the descriptor says.
        label: Option<String>,
    },
}

impl FoundBy {
    /// What to tell the user; `None` when the cache was made now or found by the whole head.
    pub fn describe(&self) -> Option<String> {
        match self {
            FoundBy::New | FoundBy::Head => None,
            FoundBy::SizeIdentity => {
                Some("cache found by its older identity (size and first 64 KiB)".into())
            }
            FoundBy::Named { compared, read, of } => Some(format!(
                "cache named with --cache; {compared} of the {read} head sectors that read ({of} in all) are in it and the same"
            )),
            FoundBy::ReadableSectors { read, of, label } => Some(format!(
                "cache found by the readable sectors of the head ({read} of {of}) and the volume descriptor{}",
                label.as_ref().map(|l| format!(" '{l}'")).unwrap_or_default()
            )),
        }
    }
}

/// What to tell the user about how the cache in `dir` (of `cache` bytes) was found for media of
/// `media` bytes; `None` when there is nothing unusual (made now, or found by the whole head,
/// the same size).
pub fn found_message(dir: &Path, by: &FoundBy, cache: u64, media: u64) -> Option<String> {
    let mut parts: Vec<String> = by.describe().into_iter().collect();
    parts.extend(size::describe(cache, media));
    (!parts.is_empty()).then(|| format!("{}: {}", dir.display(), parts.join("; ")))
}

/// A source's cache, how it was found, and the size it must have to serve the source.
#[derive(Debug)]
pub struct Found {
    /// The cache.
    pub cache: Cache,
    /// The rule that found it.
    pub by: FoundBy,
    /// `size::reconcile` of the cache's and the source's sizes.
    pub size: u64,
    /// The head identity to record in a cache found by its old identity.
    pub head_identity: Option<String>,
}

impl SourceInfo {
    /// The facts of the source `path` whose identity read gave `head`: its head identity, or
    /// (a head that did not read whole) the size-only identity of a cache named by hand.
    pub fn of_head(path: &str, head: &Head) -> SourceInfo {
        SourceInfo {
            path: path.to_string(),
            size: head.size(),
            sector_size: head.sector_size(),
            identity: head
                .identity()
                .unwrap_or_else(|| size_only_identity(head.size(), head.sector_size()))
                .to_string(),
        }
    }
}

/// Finds (or, if none, creates) the cache of the media `head` was read from, in `dir` if given,
/// else under the state directory. `source` names the source in metadata and errors.
pub fn locate(dir: Option<&Path>, source: &str, head: &Head) -> Result<Found, CacheError> {
    let media_size = head.size();
    let sector = head.sector_size();
    let identity = head.identity();
    let info = SourceInfo::of_head(source, head);
    let head_identity = identity.map(|i| i.to_string());
    let found = |cache: Cache, by: FoundBy| -> Result<Found, CacheError> {
        let size = reconciled(&cache, &info)?;
        Ok(Found {
            cache,
            by,
            size,
            head_identity: head_identity.clone(),
        })
    };
    if let Some(dir) = dir {
        let (cache, created) = Cache::open_or_create_unchecked(dir, &info)?;
        if created {
            return found(cache, FoundBy::New);
        }
        check_sector(&cache, &info)?;
        reconciled(&cache, &info)?;
        let by = match matches(&cache, head, true)? {
            Some(by) => by,
            None if identity.is_some() => {
                return Err(CacheError::IdentityMismatch {
                    dir: dir.to_path_buf(),
                    cache: cache.meta().identity.clone(),
                    source_identity: info.identity,
                    source_path: info.path,
                })
            }
            None => {
                return Err(CacheError::HeadMismatch {
                    dir: dir.to_path_buf(),
                    source_path: info.path,
                    read: head.sectors_read(),
                    of: head.sectors(),
                    why: mismatch_reason(&cache, head),
                })
            }
        };
        return found(cache, by);
    }
    if let Some(id) = identity {
        let dir = default_dir(&id.to_string())?;
        if dir.join(super::META_FILE).exists() {
            let cache = Cache::open(&dir)?;
            check_sector(&cache, &info)?;
            return found(cache, FoundBy::Head);
        }
        // Caches made by older blkcache: named by size, sector size and head, for any size this disc
        // may have had in another drive.
        let state = state_dir()?;
        let step = u64::from(sector);
        let lo = media_size.saturating_sub(size::TOLERANCE_SECTORS * step);
        let mut s = lo;
        while s <= media_size + size::TOLERANCE_SECTORS * step {
            if let Some(old) = head.size_identity(s) {
                let old_dir = state.join(dir_name(&old.to_string()));
                if old_dir.join(super::META_FILE).exists() {
                    let cache = Cache::open(&old_dir)?;
                    if cache.meta().identity == old.to_string() {
                        check_sector(&cache, &info)?;
                        return found(cache, FoundBy::SizeIdentity);
                    }
                }
            }
            s += step;
        }
        let (cache, _) = Cache::open_or_create(&dir, &info)?;
        return found(cache, FoundBy::New);
    }
    // A head that did not read whole: the caches whose image holds what did read.
    let state = state_dir()?;
    let mut hits = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&state) {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .filter(|p| p.join(super::META_FILE).exists())
            .collect();
        dirs.sort();
        for d in dirs {
            let Ok(cache) = Cache::open(&d) else { continue };
            if cache.meta().sector_size != sector
                || size::reconcile(cache.meta().size, media_size, sector).is_none()
            {
                continue;
            }
            if let Some(by) = matches(&cache, head, false)? {
                hits.push((cache, by));
            }
        }
    }
    match hits.len() {
        0 => Err(CacheError::Unidentified {
            source_path: info.path,
            read: head.sectors_read(),
            of: head.sectors(),
            state,
        }),
        1 => {
            let (cache, by) = hits.remove(0);
            found(cache, by)
        }
        _ => Err(CacheError::Ambiguous {
            source_path: info.path,
            read: head.sectors_read(),
            of: head.sectors(),
            caches: hits
                .into_iter()
                .map(|(c, _)| c.dir().to_path_buf())
                .collect(),
        }),
    }
}

/// The head sectors (numbers) that the identity read of media of `size` bytes in sectors of
/// `sector` bytes must not read again: those marked bad (`-`) in the cache named with
/// `--cache` (`dir`), if it could be this disc's (same sector size, size within the tolerance).
/// Without a named cache, none: which cache is the disc's is not known before its head is read
/// (skipping another disc's bad sectors could leave the head unidentifiable).
pub fn known_bad_head(dir: Option<&Path>, size: u64, sector: u32) -> Vec<u64> {
    let head = size.min(crate::media::identity::HEAD_BYTES as u64);
    let s = u64::from(sector);
    let Some(cache) = dir.and_then(|d| Cache::open(d).ok()) else {
        return Vec::new();
    };
    let meta = cache.meta();
    if meta.sector_size != sector || size::reconcile(meta.size, size, sector).is_none() {
        return Vec::new();
    }
    let Ok(m) = cache.load_mapfile() else {
        return Vec::new();
    };
    (0..head.div_ceil(s))
        .filter(|i| m.map.status_at(i * s) == Some(Status::BadSector))
        .collect()
}

fn check_sector(cache: &Cache, info: &SourceInfo) -> Result<(), CacheError> {
    if cache.meta().sector_size != info.sector_size {
        return Err(CacheError::SectorSizeMismatch {
            dir: cache.dir().to_path_buf(),
            cache: cache.meta().sector_size,
            source_sector: info.sector_size,
            source_path: info.path.clone(),
        });
    }
    Ok(())
}

/// The size the cache must have to serve the source, or the size error naming both.
fn reconciled(cache: &Cache, info: &SourceInfo) -> Result<u64, CacheError> {
    size::reconcile(cache.meta().size, info.size, info.sector_size).ok_or_else(|| {
        CacheError::SizeMismatch {
            dir: cache.dir().to_path_buf(),
            cache: cache.meta().size,
            source_size: info.size,
            source_path: info.path.clone(),
        }
    })
}

/// Which rule, if any, makes `cache` the cache of the media `head` was read from (sector size
/// and size already checked). `named`: the user named the cache.
fn matches(cache: &Cache, head: &Head, named: bool) -> Result<Option<FoundBy>, CacheError> {
    let meta = cache.meta();
    if let Some(id) = head.identity().map(|i| i.to_string()) {
        if meta.identity == id || meta.head_identity.as_deref() == Some(id.as_str()) {
            return Ok(Some(FoundBy::Head));
        }
        if head
            .size_identity(meta.size)
            .is_some_and(|old| old.to_string() == meta.identity)
        {
            return Ok(Some(FoundBy::SizeIdentity));
        }
    } else {
        let held = compare(cache, head)?;
        if held.differing == 0 && held.missing == 0 && held.volume_descriptor {
            return Ok(Some(FoundBy::ReadableSectors {
                read: head.sectors_read(),
                of: head.sectors(),
                label: head.volume_label(),
            }));
        }
    }
    // Named by hand: no head sector that read may differ from the cache's, and at least one must
    // be in it (none needed for a cache made by hand for a head that did not read then).
    let weak = size_only_identity(meta.size, meta.sector_size).to_string();
    if named && (!head.is_whole() || meta.identity == weak) {
        let held = compare(cache, head)?;
        if held.differing == 0 && (held.same > 0 || meta.identity == weak) {
            return Ok(Some(FoundBy::Named {
                compared: held.same,
                read: head.sectors_read(),
                of: head.sectors(),
            }));
        }
    }
    Ok(None)
}

/// Why `cache` is not the head's (for the error).
fn mismatch_reason(cache: &Cache, head: &Head) -> String {
    match compare(cache, head) {
        Err(e) => e.to_string(),
        Ok(h) if h.differing > 0 => format!("{} of them differ from the cache's", h.differing),
        Ok(h) if h.missing > 0 => format!("{} of them are not in the cache", h.missing),
        Ok(_) => "the volume descriptor at byte 32768 did not read".to_string(),
    }
}

/// The head sectors that read, compared with the cache's.
#[derive(Debug, Default)]
struct Held {
    /// In the cache (`+`) with the same bytes.
    same: u64,
    /// In the cache with other bytes.
    differing: u64,
    /// Not in the cache.
    missing: u64,
    /// Whether the volume descriptor's sectors are all among `same`.
    volume_descriptor: bool,
}

fn compare(cache: &Cache, head: &Head) -> Result<Held, CacheError> {
    let map = cache.load_mapfile()?.map;
    let path = cache.image_path();
    let image = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(super::io_err("open", &path))?;
    let s = u64::from(head.sector_size());
    let mut held = Held::default();
    let mut same = Vec::new();
    let mut buf = vec![0u8; s as usize];
    for i in 0..head.sectors() {
        if !head.sector_read(i) {
            continue;
        }
        let lo = i * s;
        let hi = ((i + 1) * s).min(head.len());
        if map.runs(lo, hi - lo).any(|r| r.status != Status::Finished) {
            held.missing += 1;
            continue;
        }
        let theirs = &mut buf[..(hi - lo) as usize];
        image
            .read_exact_at(theirs, lo)
            .map_err(super::io_err("read", &path))?;
        if *theirs == head.bytes()[lo as usize..hi as usize] {
            held.same += 1;
            same.push(i);
        } else {
            held.differing += 1;
        }
    }
    held.volume_descriptor = head
        .volume_descriptor_sectors()
        .is_some_and(|mut r| r.all(|i| same.contains(&i)));
    Ok(held)
}
