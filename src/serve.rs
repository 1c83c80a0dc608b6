//! One serve configuration, and what it takes to start serving it.
//!
//! [`ServeConfig`] is every setting of `blkcache add`: parsed once by the CLI (it is a
//! `clap::Args`), handed to the daemon as JSON, and kept in the device's libublk json
//! ([`DeviceConfig`] flattens it) so that `recover` serves the same thing again. A new setting is
//! one field here; older JSON without it gets the CLI's default.
//!
//! [`prepare`] opens the media and identifies it (the one read of its first 64 KiB per start),
//! then finds or creates its cache (`cache::locate`); [`start`] takes the image's lock, grows
//! the cache if this drive reads the disc larger (`cache::size`), records the drive, builds the
//! engine, lands the identity read's bytes and failures in the cache through it (as any read:
//! image, then map), and makes the device configuration.
//! Must never create a cache for media that cannot be served, nor identify media twice, nor
//! read the head again for the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::{self, Cache, CacheError, DriveRecord, FoundBy, OfflineMedia};
use crate::engine::{Engine, EngineConfig, EngineError, Exact, OnBadSector};
use crate::image::{Image, ImageError};
use crate::map::{FileMap, Status};
use crate::media::{self, DriveInfo, FileMedia, Head, Media, MediaError, MediaOptions, TestMedia};
use crate::ublk::{self, DeviceConfig, ServeError};

/// What to serve and how. Field docs are `blkcache add --help`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct ServeConfig {
    /// The source (absolute); `None` serves the cache offline.
    #[arg(skip)]
    pub source: Option<PathBuf>,
    /// Cache directory (default: one per media under /var/lib/blkcache for root, else
    /// $XDG_STATE_HOME/blkcache or ~/.local/state/blkcache).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Sector size in bytes (default: the device's logical sector size; 512 for files).
    #[arg(long, value_name = "BYTES")]
    #[serde(rename = "sector_size_override")]
    pub sector_size: Option<u32>,
    /// Number of ublk queues (default: one per CPU, at most 8).
    #[arg(long, default_value_t = crate::ublk::default_queues(), value_parser = clap::value_parser!(u16).range(1..=32))]
    pub queues: u16,
    /// Depth of each queue (requests in flight).
    #[arg(long, default_value_t = crate::ublk::DEFAULT_DEPTH, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub depth: u16,
    /// Bytes read from the source per miss (e.g. 65536, 64k, 1M; a multiple of the sector size).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub read_size: Option<u32>,
    /// How many more times a sector already marked bad (`-`) is read when a program asks for it
    /// again. 0 (the default) never touches a known bad sector again.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub bad_retries: u32,
    /// The most bytes read ahead of a program reading sequentially (e.g. 4M; `off`: none).
    /// Default 4 MiB; only untried bytes are read ahead, never known-bad areas.
    #[arg(long, value_name = "off|BYTES", value_parser = parse_read_ahead)]
    pub read_ahead: Option<u64>,
    /// While serving, read the rest of the disc into the cache with GNU ddrescue's strategy (as
    /// `blkcache fill` does), giving way whenever programs read the device.
    #[arg(long)]
    pub fill: bool,
    /// What programs reading the device get for a bad sector: an I/O error (eio, as from the
    /// drive) or zeros (zero: a copy of a damaged disc gets past it). The map is the same.
    #[arg(long, value_enum, default_value_t = OnBadSector::Eio)]
    pub on_bad_sector: OnBadSector,
    /// Test mode: read SOURCE as if damaged where MAPFILE is not `+` (GNU ddrescue's -H).
    #[arg(long, value_name = "MAPFILE")]
    pub test_mode: Option<PathBuf>,
    /// Latency added to every read of the source, in milliseconds (with or without --test-mode).
    #[arg(long = "test-latency", value_name = "MS", default_value_t = 0)]
    pub test_latency_ms: u64,
    /// The kernel frontend: ublk (/dev/ublkbN) or the nbd driver (/dev/nbdN, for kernels without
    /// ublk). Default: ublk when /dev/ublk-control exists, else nbd.
    #[arg(long, value_enum)]
    pub frontend: Option<Frontend>,
}

/// Which kernel driver makes the block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Frontend {
    /// Linux ublk: /dev/ublkbN.
    Ublk,
    /// The kernel's nbd driver over a socketpair: /dev/nbdN.
    Nbd,
}

impl Default for ServeConfig {
    /// The CLI's defaults (so JSON missing a field means what `add` without the flag means).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ServeConfig,
        }
        // Constant arguments: cannot fail (a unit test parses them).
        <Defaults as clap::Parser>::try_parse_from(["blkcache"])
            .map(|d| d.config)
            .unwrap_or_else(|e| unreachable!("ServeConfig defaults: {e}"))
    }
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The source path does not resolve.
    #[error("cannot find source {}", path.display())]
    Source {
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A path given could not be made absolute.
    #[error("bad {what} path {}", path.display())]
    Path {
        /// Which argument.
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Offline serving names no cache.
    #[error("--offline needs a cache directory")]
    OfflineNeedsCache,
    /// Opening or identifying the media failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// Opening or creating the cache failed (or it is another media's).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Opening the image failed (it is in use, ...).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The engine refused the cache.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The device cannot be served (geometry, no driver, ublk refused).
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl ServeConfig {
    /// Makes the paths absolute (the daemon runs in `/`): the source canonical, the cache and the
    /// test-mode map absolute.
    pub fn resolve(&mut self) -> Result<(), StartError> {
        if let Some(s) = &self.source {
            let canon = std::fs::canonicalize(s).map_err(|source| StartError::Source {
                path: s.clone(),
                source,
            })?;
            self.source = Some(canon);
        }
        for (what, p) in [
            ("cache", &mut self.cache),
            ("test-mode mapfile", &mut self.test_mode),
        ] {
            if let Some(path) = p {
                *path = std::path::absolute(&*path).map_err(|source| StartError::Path {
                    what,
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// The opened media (or the offline stand-in) and its checked, maybe new, cache.
pub struct Prepared {
    /// What is read.
    pub media: Arc<dyn Media>,
    /// Where it is cached.
    pub cache: Cache,
    /// What the identity read found, and what `start` records (none offline).
    pub read: Option<HeadRead>,
}

/// The identity read of a source and what it decided.
pub struct HeadRead {
    /// The head's bytes and failures, landed in the cache by `start`.
    pub head: Head,
    /// The rule that found the cache.
    pub found_by: FoundBy,
    /// The size the cache must have (`cache::size`).
    pub size: u64,
    /// What to record in the cache: the drive, and the head identity of an older cache.
    pub note: Note,
}

/// What a cache records about the source that reads it (`cache::DriveRecord`).
#[derive(Debug, Clone)]
pub struct Note {
    /// The drive (or file) reading it now.
    pub drive: DriveRecord,
    /// The head identity, recorded in a cache found by its older identity.
    pub head_identity: Option<String>,
}

impl Prepared {
    /// What to tell the user about how the cache was found (`None`: nothing unusual).
    pub fn found(&self) -> Option<String> {
        let read = self.read.as_ref()?;
        cache::found_message(
            self.cache.dir(),
            &read.found_by,
            self.cache.meta().size,
            self.media.size(),
        )
    }
}

/// The record of the drive (or file, or test-mode source) `source` that `media` reads.
pub fn drive_record(cfg: &ServeConfig, source: &Path, media: &dyn Media) -> DriveRecord {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(source).ok();
    let block = meta
        .as_ref()
        .is_some_and(|m| m.file_type().is_block_device());
    let info = match &meta {
        Some(m) if block => DriveInfo::of_device(m.rdev()),
        _ => DriveInfo::default(),
    };
    let kind = match (&cfg.test_mode, block) {
        (Some(_), _) => "test-mode",
        (None, true) => "drive",
        (None, false) => "file",
    };
    let now = cache::now();
    DriveRecord {
        kind: kind.to_string(),
        path: source.display().to_string(),
        vendor: info.vendor,
        model: info.model,
        rev: info.rev,
        serial: info.serial,
        size: media.size(),
        first_seen: now,
        last_seen: now,
        uses: 1,
    }
}

/// Opens and identifies the media, then opens or creates its cache. Nothing is created for
/// media that cannot be served.
pub fn prepare(cfg: &ServeConfig) -> Result<Prepared, StartError> {
    let Some(source) = &cfg.source else {
        let dir = cfg.cache.as_deref().ok_or(StartError::OfflineNeedsCache)?;
        let cache = Cache::open(dir)?;
        return Ok(Prepared {
            media: Arc::new(OfflineMedia::new(&cache)),
            cache,
            read: None,
        });
    };
    let media = open_media(cfg, source)?;
    ublk::check_geometry(media.size(), media.sector_size())?;
    let known_bad = cache::known_bad_head(cfg.cache.as_deref(), media.size(), media.sector_size());
    let head = media::read_head(media.as_ref(), source, &known_bad)?;
    let found = cache::locate(cfg.cache.as_deref(), &source.display().to_string(), &head)?;
    ublk::check_geometry(found.size, media.sector_size())?;
    if found.by == FoundBy::New {
        tracing::info!(cache = %found.cache.dir().display(), source = %source.display(), "new cache");
    }
    let note = Note {
        drive: drive_record(cfg, source, media.as_ref()),
        head_identity: found.head_identity.clone(),
    };
    Ok(Prepared {
        media,
        cache: found.cache,
        read: Some(HeadRead {
            head,
            found_by: found.by,
            size: found.size,
            note,
        }),
    })
}

/// Opens `cache`'s image (taking its lock) and builds the engine over it and `media`: first
/// grows the cache to `size` (a drive that reads the disc larger; `cache::size`) and records
/// `note` (the drive, an older cache's head identity) in its metadata. `blkcache fill` too.
pub fn open_engine(
    cache: &mut Cache,
    media: Arc<dyn Media>,
    grown: Option<(u64, &Note)>,
    ecfg: EngineConfig,
) -> Result<Engine, StartError> {
    let mut image = Image::open(&cache.image_path())?;
    // Loaded (and so checked) before anything of the cache is written.
    let mut mapfile = cache.load_mapfile()?;
    if let Some((size, note)) = grown {
        (image, mapfile) = cache.grow(image, mapfile, size)?;
        cache.update_meta(|m| {
            if let Some(id) = &note.head_identity {
                if m.identity != *id && m.head_identity.is_none() {
                    m.head_identity = Some(id.clone());
                }
            }
            cache::note_drive(&mut m.drives, note.drive.clone());
        })?;
    }
    Ok(Engine::new(
        media,
        image,
        mapfile,
        cache.mapfile_path(),
        ecfg,
    )?)
}

/// Lands the identity read in the cache through the engine, as any media read lands (bytes
/// written, then marked `+`; a failed read marks `*` for more than a sector, else `-`): the
/// head is not read again, and what it cost is not thrown away. Bytes already `+` are kept.
pub fn land_head(engine: &Engine, head: &Head) -> Result<(), EngineError> {
    let end = head.len().min(engine.size());
    for r in head.reads() {
        if r.pos >= end {
            continue;
        }
        let len = r.len.min(end - r.pos);
        let ranges: Vec<(u64, u64)> = match &r.error {
            // Every part of a read that succeeded that is not cached yet.
            None => engine.with_map(|m| {
                m.map
                    .runs(r.pos, len)
                    .filter(|run| run.status != Status::Finished)
                    .map(|run| (run.pos, run.len))
                    .collect()
            }),
            // A failure marks only a range of one status (else it is not ddrescue's rule).
            Some(_) => vec![(r.pos, len)],
        };
        for (pos, len) in ranges {
            let Exact::Fetch(mut fetch) = engine.claim_exact(pos, len)? else {
                continue;
            };
            engine.read_done(&mut fetch);
            let data = match &r.error {
                None => Ok(head.read_bytes(fetch.offset, fetch.len as u64)),
                Some(e) => Err(std::io::Error::from_raw_os_error(
                    e.raw_os_error().unwrap_or(libc::EIO),
                )),
            };
            engine.complete(fetch, data)?;
        }
    }
    Ok(())
}

/// Opens `source` read-only as `cfg` says: plain, or as test-mode media (a damage map and/or a
/// latency). Also what `blkcache fill` reads through.
pub fn open_media(cfg: &ServeConfig, source: &Path) -> Result<Arc<dyn Media>, MediaError> {
    let mopts = MediaOptions {
        sector_size: cfg.sector_size,
        ..MediaOptions::default()
    };
    let latency = Duration::from_millis(cfg.test_latency_ms);
    Ok(match &cfg.test_mode {
        Some(damage) => Arc::new(TestMedia::open(source, damage, mopts, latency)?),
        None if !latency.is_zero() => {
            let inner = FileMedia::open(source, mopts)?;
            let mut undamaged = FileMap::new(inner.size());
            undamaged.set(0, inner.size(), Status::Finished);
            Arc::new(TestMedia::from_parts(inner, undamaged, latency))
        }
        None => Arc::new(FileMedia::open(source, mopts)?),
    })
}

/// Builds the engine over a prepared cache, and the configuration the device is served (and
/// later recovered) with: `cfg` with the cache directory filled in.
pub fn start(
    cfg: &ServeConfig,
    prepared: &Prepared,
) -> Result<(Arc<Engine>, DeviceConfig), StartError> {
    let mut cache = prepared.cache.clone();
    let media = prepared.media.clone();
    let mut ecfg = EngineConfig::default();
    if let Some(rs) = cfg.read_size {
        ecfg.read_size = rs as usize;
    }
    ecfg.bad_retries = cfg.bad_retries;
    if let Some(ra) = cfg.read_ahead {
        ecfg.read_ahead = ra;
    }
    ecfg.on_bad_sector = cfg.on_bad_sector;
    let read = prepared.read.as_ref();
    let engine = open_engine(
        &mut cache,
        media.clone(),
        read.map(|r| (r.size, &r.note)),
        ecfg,
    )?;
    if let Some(r) = read {
        land_head(&engine, &r.head)?;
        // Kept even if serving fails to start (image synced, then the map saved); a failed save
        // is the engine's to handle (logged, retried by the periodic saves, never fatal here).
        if engine.is_dirty() {
            if let Err(e) = engine.save() {
                tracing::warn!(error = %e, "cannot save the identity read's sectors yet");
            }
        }
    }
    let device = DeviceConfig {
        serve: ServeConfig {
            cache: Some(cache.dir().to_path_buf()),
            ..cfg.clone()
        },
        size: engine.size(),
        sector_size: media.sector_size(),
        io_buf_bytes: ublk::IO_BUF_BYTES,
        pid: std::process::id() as i32,
        log: cache.log_path(),
    };
    Ok((Arc::new(engine), device))
}

/// Parses `--read-ahead`: `off` (0) or a byte count with an optional k/M/G suffix.
pub fn parse_read_ahead(s: &str) -> Result<u64, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        Ok(0)
    } else {
        parse_bytes(s)
    }
}

/// Parses a byte count with an optional k/M suffix (powers of 1024) that fits in a u32.
pub fn parse_size(s: &str) -> Result<u32, String> {
    parse_bytes(s).and_then(|b| u32::try_from(b).map_err(|_| format!("'{s}' is out of range")))
}

/// Parses a positive byte count with an optional k/M/G suffix (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix("k"))
    {
        (n, 1024u64)
    } else if let Some(n) = lower
        .strip_suffix("mib")
        .or_else(|| lower.strip_suffix("m"))
    {
        (n, 1024 * 1024)
    } else if let Some(n) = lower
        .strip_suffix("gib")
        .or_else(|| lower.strip_suffix("g"))
    {
        (n, 1024 * 1024 * 1024)
    } else {
        (lower.as_str(), 1)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count (e.g. 65536, 64k, 1M)"))?;
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("'{s}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("8192M").is_err());
        assert_eq!(parse_read_ahead("off"), Ok(0));
        assert_eq!(parse_read_ahead("8M"), Ok(8 << 20));
        assert!(parse_read_ahead("fast").is_err());
    }

    #[test]
    fn defaults_are_the_clis() {
        let d = ServeConfig::default();
        let queues = crate::ublk::default_queues();
        assert_eq!((d.queues, d.depth, d.bad_retries), (queues, 64, 0));
        assert_eq!((d.source, d.cache, d.read_size), (None, None, None));
        // JSON missing fields (an older daemon's) means the same.
        let back: ServeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(back, ServeConfig::default());
    }

    #[test]
    fn round_trips_through_json() {
        let cfg = ServeConfig {
            source: Some("/dev/sr0".into()),
            cache: Some("/c".into()),
            sector_size: Some(2048),
            queues: 2,
            depth: 16,
            read_size: Some(131072),
            bad_retries: 3,
            read_ahead: Some(0),
            on_bad_sector: OnBadSector::Zero,
            fill: true,
            test_mode: Some("/d.map".into()),
            test_latency_ms: 20,
            frontend: Some(Frontend::Nbd),
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains("\"sector_size_override\":2048"), "{json}");
        assert_eq!(serde_json::from_str::<ServeConfig>(&json).unwrap(), cfg);
    }
}
