//! The engine against real files: a test-mode media with a random damage map, a real sparse image,
//! real mapfiles (checked with GNU ddrescuelog).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blkcache::engine::{Counters, Engine, EngineConfig, EngineError, Step};
use blkcache::image::Image;
use blkcache::map::{FileMap, Mapfile, Meta, Status};
use blkcache::media::{FileMedia, Media, MediaOptions, TestMedia};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// A source file of random bytes in a temporary directory, with the paths of its cache.
pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) source: PathBuf,
    pub(crate) data: Vec<u8>,
}

impl Setup {
    pub(crate) fn new(size: usize, seed: u64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let mut data = vec![0u8; size];
        StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        std::fs::write(&source, &data).unwrap();
        Setup { dir, source, data }
    }

    pub(crate) fn image_path(&self) -> PathBuf {
        self.dir.path().join("image")
    }

    pub(crate) fn map_path(&self) -> PathBuf {
        self.dir.path().join("mapfile")
    }

    pub(crate) fn test_media(
        &self,
        damage: FileMap,
        sector_size: u32,
        latency: Duration,
    ) -> Arc<TestMedia> {
        let opts = MediaOptions {
            sector_size: Some(sector_size),
            ..MediaOptions::default()
        };
        let file = FileMedia::open(&self.source, opts).unwrap();
        Arc::new(TestMedia::from_parts(file, damage, latency))
    }

    /// A fresh engine: new image, new map.
    pub(crate) fn engine(&self, media: Arc<dyn Media>, cfg: EngineConfig) -> Engine {
        let image = Image::create(&self.image_path(), media.size()).unwrap();
        let mapfile = Mapfile::new(media.size(), meta(&media));
        Engine::new(media, image, mapfile, self.map_path(), cfg).unwrap()
    }

    /// An engine over the saved image and map.
    pub(crate) fn reopen(&self, media: Arc<dyn Media>) -> Result<Engine, EngineError> {
        let image = Image::open(&self.image_path()).unwrap();
        let mapfile = blkcache::map::load(&self.map_path()).unwrap();
        Engine::new(
            media,
            image,
            mapfile,
            self.map_path(),
            EngineConfig::default(),
        )
    }
}

pub(crate) fn meta(media: &Arc<dyn Media>) -> Meta {
    Meta {
        size: Some(media.size()),
        sector_size: Some(media.sector_size()),
        ..Meta::default()
    }
}

pub(crate) fn all_finished(size: u64) -> FileMap {
    let mut map = FileMap::new(size);
    map.set(0, size, Status::Finished);
    map
}

/// A damage map: mostly `+`, with random single bad sectors and random unreadable areas of every
/// other status, all sector-aligned.
fn random_damage(size: u64, sector: u64, rng: &mut StdRng) -> FileMap {
    let mut map = all_finished(size);
    let sectors = size.div_ceil(sector);
    for _ in 0..rng.gen_range(0..12) {
        let s = rng.gen_range(0..sectors);
        let len = if rng.gen_bool(0.6) {
            1
        } else {
            rng.gen_range(1..40)
        };
        let status = [
            Status::BadSector,
            Status::NonTried,
            Status::NonTrimmed,
            Status::NonScraped,
        ][rng.gen_range(0..4)];
        map.set(s * sector, len * sector, status);
    }
    map
}

fn touches_damage(damage: &FileMap, offset: u64, len: u64) -> bool {
    damage
        .runs(offset, len)
        .any(|r| r.status != Status::Finished)
}

/// The property: 8 threads of random reads over a damaged test-mode media get exactly the
/// source's bytes or an error, and an error exactly when the request touches damage; no sector
/// is read from the media successfully twice, or tried more than twice (a chunk, then alone).
fn check_random_reads(seed: u64, sector: u32, read_size: usize, size: usize) -> Counters {
    let setup = Setup::new(size, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let damage = random_damage(size as u64, u64::from(sector), &mut rng);
    let media = setup.test_media(damage.clone(), sector, Duration::ZERO);
    let cfg = EngineConfig {
        read_size,
        ..EngineConfig::default()
    };
    let engine = setup.engine(media.clone(), cfg);
    let data = &setup.data;
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let engine = &engine;
            let damage = &damage;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(t));
                let blocks = (size / 512) as u64;
                for _ in 0..150 {
                    let first = rng.gen_range(0..blocks);
                    let max_len = (blocks - first).min(if rng.gen_bool(0.2) { 600 } else { 24 });
                    let len = rng.gen_range(1..=max_len) * 512;
                    let offset = first * 512;
                    let mut buf = vec![0u8; len as usize];
                    let result = engine.read(offset, &mut buf);
                    let expect_err = touches_damage(damage, offset, len);
                    match result {
                        Ok(()) => {
                            assert!(
                                !expect_err,
                                "seed {seed}: read {offset}+{len} succeeded over damage"
                            );
                            let want = &data[offset as usize..(offset + len) as usize];
                            assert!(buf == want, "seed {seed}: wrong bytes at {offset}+{len}");
                        }
                        Err(err) => {
                            assert!(
                                expect_err,
                                "seed {seed}: read {offset}+{len} failed without damage: {err}"
                            );
                            assert!(err.is_bad_sector(), "seed {seed}: {err}");
                        }
                    }
                }
            });
        }
    });
    assert_eq!(engine.claims_in_flight(), 0);
    let reads = media.read_counts();
    let attempts = media.attempt_counts();
    for (s, (&r, &a)) in reads.iter().zip(&attempts).enumerate() {
        assert!(r <= 1, "seed {seed}: sector {s} read {r} times");
        assert!(a <= 2, "seed {seed}: sector {s} tried {a} times");
    }
    // The engine's map: `+` only where the media is readable, and those bytes are in the image.
    let map = engine.mapfile_snapshot().map;
    let image = engine.image();
    for run in map.iter() {
        match run.status {
            Status::Finished => {
                assert!(!touches_damage(&damage, run.pos, run.len), "seed {seed}");
                let mut buf = vec![0u8; run.len as usize];
                image.read_at(run.pos, &mut buf).unwrap();
                assert!(
                    buf == data[run.pos as usize..run.end() as usize],
                    "seed {seed}"
                );
            }
            Status::BadSector => {
                assert!(
                    damage
                        .runs(run.pos, run.len)
                        .all(|r| r.status != Status::Finished),
                    "seed {seed}: {run:?} marked bad but readable"
                );
            }
            _ => {}
        }
    }
    let sector = u64::from(sector);
    let expected_bytes: u64 = reads
        .iter()
        .enumerate()
        .map(|(s, &r)| u64::from(r) * sector.min(size as u64 - s as u64 * sector))
        .sum();
    let counters = engine.counters();
    assert_eq!(counters.media_bytes, expected_bytes, "seed {seed}");
    counters
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_reads_over_damaged_media_get_source_bytes_or_fail_exactly_on_damage(
        seed in any::<u64>(),
        big_sectors in any::<bool>(),
        read_kib in prop::sample::select(vec![4usize, 16, 64]),
        tail in 0usize..4,
    ) {
        let sector = if big_sectors { 2048 } else { 512 };
        // A size that is a multiple of 512 but not always of the sector size (a partial last sector).
        let size = (1 << 20) + tail * 512;
        check_random_reads(seed, sector, read_kib * 1024, size);
    }
}

/// A fixed case of the property above that certainly meets damage of every kind.
#[test]
fn random_reads_with_a_fixed_seed_meet_damage_and_still_hold() {
    for (seed, sector) in [(1, 512), (2, 2048), (3, 512)] {
        let c = check_random_reads(seed, sector, 64 * 1024, (1 << 20) + 512);
        assert!(
            c.errors > 0 && c.media_errors > 0 && c.hits > 0,
            "seed {seed}: {c:?}"
        );
    }
}

#[test]
fn concurrent_requests_for_the_same_missing_range_read_the_media_once() {
    let setup = Setup::new(256 * 1024, 1);
    // Latency widens the window in which the others must wait; the assertion holds regardless.
    let media = setup.test_media(all_finished(256 * 1024), 512, Duration::from_millis(30));
    let engine = setup.engine(media.clone(), EngineConfig::default());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut buf = vec![0u8; 4096];
                engine.read(8192, &mut buf).unwrap();
                assert!(buf == setup.data[8192..8192 + 4096]);
            });
        }
    });
    let c = engine.counters();
    assert_eq!(c.media_reads, 1, "{c:?}");
    assert_eq!(c.media_bytes, 64 * 1024);
    assert_eq!(c.hits + c.misses, 8);
    assert!(media.read_counts().iter().all(|&r| r <= 1));
}

#[test]
fn a_failed_chunk_is_narrowed_inside_the_request_and_the_rest_stays_non_trimmed() {
    let setup = Setup::new(256 * 1024, 2);
    let mut damage = all_finished(256 * 1024);
    damage.set(10 * 512, 512, Status::BadSector);
    let media = setup.test_media(damage, 512, Duration::ZERO);
    let engine = setup.engine(media.clone(), EngineConfig::default());
    // The request covers sectors 8..16; the chunk is sectors 0..128.
    let mut buf = vec![0u8; 8 * 512];
    let err = engine.read(8 * 512, &mut buf).unwrap_err();
    assert!(
        matches!(err, EngineError::BadSector { offset } if offset == 10 * 512),
        "{err}"
    );
    assert_eq!(engine.status_at(10 * 512), Some(Status::BadSector));
    for s in (8..16).filter(|&s| s != 10) {
        assert_eq!(
            engine.status_at(s * 512),
            Some(Status::Finished),
            "sector {s}"
        );
    }
    assert_eq!(engine.status_at(0), Some(Status::NonTrimmed));
    assert_eq!(engine.status_at(16 * 512), Some(Status::NonTrimmed));
    assert_eq!(engine.status_at(64 * 1024), Some(Status::NonTried));
    // The readable sectors of the failed request were cached: reading them again is a hit.
    let before = engine.counters().media_reads;
    let mut small = vec![0u8; 2 * 512];
    engine.read(8 * 512, &mut small).unwrap();
    assert!(small == setup.data[8 * 512..10 * 512]);
    // The bad sector is not read again (bad_retries = 0).
    assert!(engine.read(10 * 512, &mut vec![0u8; 512]).is_err());
    assert_eq!(engine.counters().media_reads, before);
    assert_eq!(media.attempt_count(10), 2);
}

/// `--bad-retries N` as its help says: the N extra reads happen when a program asks for an
/// already-bad sector again, never inside the request that found it bad (a failing drive pays
/// seconds per read).
#[test]
fn bad_retries_reread_a_bad_sector_only_when_asked_again() {
    let setup = Setup::new(64 * 1024, 3);
    let mut damage = all_finished(64 * 1024);
    damage.set(512, 512, Status::BadSector);
    let media = setup.test_media(damage, 512, Duration::ZERO);
    let cfg = EngineConfig {
        bad_retries: 2,
        ..EngineConfig::default()
    };
    let engine = setup.engine(media.clone(), cfg);
    assert!(engine.read(512, &mut vec![0u8; 512]).is_err());
    // The chunk, then the sector alone; it became bad in this request: no retry here.
    assert_eq!(media.attempt_count(1), 2);
    assert_eq!(engine.status_at(512), Some(Status::BadSector));
    // Asked again: two retries, each time.
    assert!(engine.read(512, &mut vec![0u8; 512]).is_err());
    assert_eq!(media.attempt_count(1), 4);
    assert!(engine.read(0, &mut vec![0u8; 4096]).is_err());
    assert_eq!(media.attempt_count(1), 6);
}

#[test]
fn restart_serves_cached_sectors_from_the_image_even_if_the_source_changed() {
    let size = 512 * 1024;
    let setup = Setup::new(size, 4);
    let media: Arc<dyn Media> = setup.test_media(all_finished(size as u64), 512, Duration::ZERO);
    let engine = setup.engine(media, EngineConfig::default());
    let ranges = [
        (0u64, 4096usize),
        (100 * 1024, 70 * 1024),
        (500 * 1024, 12 * 1024),
    ];
    for &(off, len) in &ranges {
        engine.read(off, &mut vec![0u8; len]).unwrap();
    }
    engine.save().unwrap();
    assert!(!engine.is_dirty());
    let finished = engine
        .mapfile_snapshot()
        .map
        .stats()
        .get(Status::Finished)
        .bytes;
    drop(engine);

    // GNU ddrescuelog reads the saved map and agrees on the rescued size.
    let out = std::process::Command::new("ddrescuelog")
        .arg("-t")
        .arg(setup.map_path())
        .output()
        .expect("ddrescuelog (Debian package gddrescue) is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rescued"), "{text}");

    // Replace the source by zeros: cached sectors must still come back as they were read.
    std::fs::write(&setup.source, vec![0u8; size]).unwrap();
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let engine = setup.reopen(media).unwrap();
    assert_eq!(
        engine
            .mapfile_snapshot()
            .map
            .stats()
            .get(Status::Finished)
            .bytes,
        finished
    );
    for &(off, len) in &ranges {
        let mut buf = vec![0u8; len];
        engine.read(off, &mut buf).unwrap();
        assert!(buf == setup.data[off as usize..off as usize + len]);
    }
    let c = engine.counters();
    assert_eq!((c.hits, c.media_reads), (3, 0), "{c:?}");
    // Never-read bytes come from the (new) source.
    let mut buf = vec![1u8; 4096];
    engine.read(300 * 1024, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn mismatched_sizes_are_refused_and_nothing_is_overwritten() {
    let setup = Setup::new(64 * 1024, 5);
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let engine = setup.engine(media.clone(), EngineConfig::default());
    engine.read(0, &mut vec![0u8; 4096]).unwrap();
    engine.save().unwrap();
    drop(engine);
    let map_before = std::fs::read(setup.map_path()).unwrap();
    let image_before = std::fs::read(setup.image_path()).unwrap();

    // The source grew: both map and image are of another size.
    std::fs::write(&setup.source, vec![0u8; 128 * 1024]).unwrap();
    let bigger: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let err = setup.reopen(bigger.clone()).unwrap_err();
    assert!(
        matches!(err, EngineError::SizeMismatch { what: "mapfile", found, expected, .. } if found == 64 * 1024 && expected == 128 * 1024),
        "{err}"
    );
    assert!(err.to_string().contains("mapfile"), "{err}");

    // A right-sized map with a wrong-sized image.
    let image = Image::open(&setup.image_path()).unwrap();
    let err = Engine::new(
        bigger.clone(),
        image,
        Mapfile::new(128 * 1024, Meta::default()),
        setup.map_path(),
        EngineConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, EngineError::SizeMismatch { what: "image", .. }),
        "{err}"
    );

    // A map recording another sector size.
    std::fs::write(&setup.source, &setup.data).unwrap();
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let mut mapfile = blkcache::map::load(&setup.map_path()).unwrap();
    mapfile.meta.sector_size = Some(2048);
    let image = Image::open(&setup.image_path()).unwrap();
    let err = Engine::new(
        media,
        image,
        mapfile,
        setup.map_path(),
        EngineConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::SectorSizeMismatch {
                found: 2048,
                expected: 512,
                ..
            }
        ),
        "{err}"
    );

    // A bad read size.
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let image = Image::open(&setup.image_path()).unwrap();
    let mapfile = blkcache::map::load(&setup.map_path()).unwrap();
    let cfg = EngineConfig {
        read_size: 1000,
        ..EngineConfig::default()
    };
    assert!(matches!(
        Engine::new(media, image, mapfile, setup.map_path(), cfg),
        Err(EngineError::Config(_))
    ));

    assert_eq!(std::fs::read(setup.map_path()).unwrap(), map_before);
    assert_eq!(std::fs::read(setup.image_path()).unwrap(), image_before);
}

#[test]
fn a_read_only_source_works_and_is_never_written() {
    let setup = Setup::new(256 * 1024, 6);
    let mut perms = std::fs::metadata(&setup.source).unwrap().permissions();
    perms.set_mode(0o444);
    std::fs::set_permissions(&setup.source, perms).unwrap();
    let mtime = std::fs::metadata(&setup.source)
        .unwrap()
        .modified()
        .unwrap();
    let file = FileMedia::open(&setup.source, MediaOptions::default()).unwrap();
    // Opened O_RDONLY whatever our privileges (root ignores 0444, so check the descriptor).
    let flags = nix::fcntl::fcntl(file.raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
    let media: Arc<dyn Media> = Arc::new(file);
    let engine = setup.engine(media, EngineConfig::default());
    let mut buf = vec![0u8; 256 * 1024];
    engine.read(0, &mut buf).unwrap();
    assert!(buf == setup.data);
    engine.save().unwrap();
    assert_eq!(std::fs::read(&setup.source).unwrap(), setup.data);
    assert_eq!(
        std::fs::metadata(&setup.source)
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
}

#[test]
fn a_source_that_shrank_fails_the_read_and_marks_nothing() {
    let setup = Setup::new(128 * 1024, 7);
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let engine = setup.engine(media, EngineConfig::default());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&setup.source)
        .unwrap()
        .set_len(32 * 1024)
        .unwrap();
    let err = engine.read(64 * 1024, &mut vec![0u8; 4096]).unwrap_err();
    assert!(matches!(err, EngineError::Media { .. }), "{err}");
    assert!(err.is_media_error() && !err.is_bad_sector());
    assert_eq!(engine.status_at(64 * 1024), Some(Status::NonTried));
    assert_eq!(engine.claims_in_flight(), 0);
}

#[test]
fn the_sans_io_api_shares_a_fetch_and_serves_waiters_from_the_image() {
    let setup = Setup::new(128 * 1024, 8);
    let media = setup.test_media(all_finished(128 * 1024), 512, Duration::ZERO);
    let engine = setup.engine(media.clone(), EngineConfig::default());
    let mut a_buf = vec![0u8; 4096];
    let mut b_buf = vec![0u8; 1024];
    let mut a = engine.begin(4096, 4096);
    let mut b = engine.begin(5120, 1024);
    let Step::Fetch(fetch) = engine.step(&mut a, &mut a_buf).unwrap() else {
        panic!("a miss must fetch")
    };
    assert_eq!(
        (fetch.offset, fetch.len, fetch.io_len()),
        (0, 64 * 1024, 64 * 1024)
    );
    assert!(matches!(
        engine.step(&mut b, &mut b_buf).unwrap(),
        Step::Wait
    ));
    // The driver reads the media itself, as the ublk adapter does on its io_uring.
    let mut data = blkcache::media::AlignedBuf::new(fetch.io_len());
    let n = media.read_at(fetch.offset, &mut data).unwrap();
    engine.complete(fetch, Ok(&data[..n])).unwrap();
    assert!(matches!(
        engine.step(&mut b, &mut b_buf).unwrap(),
        Step::Done
    ));
    assert!(matches!(
        engine.step(&mut a, &mut a_buf).unwrap(),
        Step::Done
    ));
    assert!(a_buf == setup.data[4096..8192]);
    assert!(b_buf == setup.data[5120..6144]);
    assert_eq!(engine.counters().media_reads, 1);
}

#[test]
fn a_dropped_fetch_releases_its_claim_and_marks_nothing() {
    let setup = Setup::new(128 * 1024, 9);
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let engine = setup.engine(media, EngineConfig::default());
    let mut buf = vec![0u8; 512];
    let mut req = engine.begin(0, 512);
    let step = engine.step(&mut req, &mut buf).unwrap();
    assert!(matches!(step, Step::Fetch(_)));
    assert_eq!(engine.claims_in_flight(), 1);
    drop(step);
    assert_eq!(engine.claims_in_flight(), 0);
    assert_eq!(engine.status_at(0), Some(Status::NonTried));
    // The engine still works for that range.
    engine.read(0, &mut buf).unwrap();
    assert!(buf == setup.data[..512]);
}

#[test]
fn requests_outside_the_media_or_with_a_wrong_buffer_are_errors() {
    let setup = Setup::new(64 * 1024, 10);
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let engine = setup.engine(media, EngineConfig::default());
    let err = engine.read(60 * 1024, &mut vec![0u8; 8192]).unwrap_err();
    assert!(matches!(err, EngineError::OutOfRange { .. }), "{err}");
    assert!(engine.read(u64::MAX - 10, &mut vec![0u8; 512]).is_err());
    let mut req = engine.begin(0, 512);
    let err = engine.step(&mut req, &mut [0u8; 100]).unwrap_err();
    assert!(matches!(
        err,
        EngineError::BufferSize {
            expected: 512,
            got: 100
        }
    ));
}

#[test]
fn maybe_save_is_rate_limited_and_save_is_forced() {
    let setup = Setup::new(64 * 1024, 11);
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let cfg = EngineConfig {
        save_interval: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let engine = setup.engine(media.clone(), cfg);
    engine.read(0, &mut vec![0u8; 512]).unwrap();
    assert!(engine.is_dirty());
    assert!(!engine.maybe_save(), "within the interval");
    assert!(!setup.map_path().exists());
    engine.save().unwrap();
    assert!(setup.map_path().exists());
    assert!(!engine.is_dirty());
    drop(engine);
    std::fs::remove_file(setup.image_path()).unwrap();

    let cfg = EngineConfig {
        save_interval: Duration::ZERO,
        ..EngineConfig::default()
    };
    let engine = setup.engine(media, cfg);
    assert!(!engine.maybe_save(), "nothing changed");
    engine.read(0, &mut vec![0u8; 512]).unwrap();
    assert!(engine.maybe_save());
    let saved = blkcache::map::load(&setup.map_path()).unwrap();
    assert_eq!(saved.map.status_at(0), Some(Status::Finished));
}

/// Issue 11.3, the map half (the image half, a failed sync, is never retried: see
/// `engine_durability`): a map that cannot be saved is kept and saved later, losing nothing.
#[test]
fn a_failed_map_save_is_retried_and_loses_nothing() {
    let setup = Setup::new(64 * 1024, 12);
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&setup.source, MediaOptions::default()).unwrap());
    let image = Image::create(&setup.image_path(), media.size()).unwrap();
    let mapfile = Mapfile::new(media.size(), meta(&media));
    // The mapfile's directory does not exist yet: saving fails.
    let map_path: PathBuf = setup.dir.path().join("later").join("mapfile");
    let cfg = EngineConfig {
        read_size: 4096,
        save_interval: Duration::ZERO,
        ..EngineConfig::default()
    };
    let engine = Engine::new(media, image, mapfile, map_path.clone(), cfg).unwrap();
    engine.read(0, &mut vec![0u8; 4096]).unwrap();
    let err = engine.save().unwrap_err();
    assert!(matches!(err, EngineError::Save { .. }), "{err}");
    assert!(!engine.maybe_save());
    assert!(engine.is_dirty());
    // Marked after the failed save, before the retry.
    engine.read(32 * 1024, &mut vec![0u8; 4096]).unwrap();
    std::fs::create_dir(map_path.parent().unwrap()).unwrap();
    assert!(engine.maybe_save());
    assert!(!engine.is_dirty());
    let saved = blkcache::map::load(&map_path).unwrap();
    assert_eq!(saved.map.status_at(0), Some(Status::Finished));
    assert_eq!(saved.map.status_at(32 * 1024), Some(Status::Finished));
    assert_eq!(engine.health(), blkcache::engine::CacheHealth::Ok);
}

#[test]
fn engine_and_fetch_are_send_and_sync() {
    fn is<T: Send + Sync>() {}
    is::<Engine>();
    is::<blkcache::engine::Fetch>();
}

/// Issue 7.2: a miss reads all of the request's untried bytes in one media read (whole
/// `read_size` chunks), not one round trip to the drive per chunk.
#[test]
fn a_miss_reads_the_whole_request_in_one_media_read() {
    let setup = Setup::new(1 << 20, 13);
    let media = setup.test_media(all_finished(1 << 20), 512, Duration::ZERO);
    let cfg = EngineConfig {
        read_ahead: 0,
        ..EngineConfig::default()
    };
    let engine = setup.engine(media.clone(), cfg);
    let mut buf = vec![0u8; 512 * 1024];
    engine.read(0, &mut buf).unwrap();
    assert!(buf == setup.data[..512 * 1024]);
    let c = engine.counters();
    assert_eq!((c.media_reads, c.media_bytes), (1, 512 * 1024), "{c:?}");
    // Unaligned: the chunks around it (576..704 KiB), still one read.
    let mut buf = vec![0u8; 100 * 1024];
    engine.read(600 * 1024, &mut buf).unwrap();
    assert!(buf == setup.data[600 * 1024..700 * 1024]);
    let c = engine.counters();
    assert_eq!((c.media_reads, c.media_bytes), (2, 640 * 1024), "{c:?}");
    // Partly cached: only the untried gap (512..576 KiB) is read.
    let mut buf = vec![0u8; 256 * 1024];
    engine.read(384 * 1024, &mut buf).unwrap();
    assert!(buf == setup.data[384 * 1024..640 * 1024]);
    let c = engine.counters();
    assert_eq!((c.media_reads, c.media_bytes), (3, 704 * 1024), "{c:?}");
    assert!(media.read_counts().iter().all(|&r| r <= 1));
}
