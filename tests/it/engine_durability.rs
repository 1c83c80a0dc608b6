//! The durability invariant of saving, checked against a disk that fails on command (`faultfs`,
//! a real FUSE mount): after any sequence of reads (image writes), failed syncs and saves, every
//! `+` in the saved map was written before the last successful sync: its bytes are durable on the
//! disk and equal the source's. Reads return the source's bytes throughout.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blkcache::engine::{CacheHealth, Engine, EngineConfig, EngineError};
use blkcache::image::{Image, ImageError};
use blkcache::map::{Mapfile, Meta, Status};
use blkcache::media::{FileMedia, Media, MediaOptions};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::faultfs::FaultFs;

const SIZE: usize = 256 * 1024;

/// Every `+` of the saved map (if any) is durable and equal to the source.
fn assert_saved_map_is_durable(map_path: &Path, fs: &FaultFs, source: &[u8], what: &str) {
    let Ok(saved) = blkcache::map::load(map_path) else {
        return;
    };
    let disk = fs.disk();
    for run in saved.map.runs(0, SIZE as u64) {
        if run.status != Status::Finished {
            continue;
        }
        let (lo, hi) = (run.pos as usize, run.end() as usize);
        assert!(
            disk.durable()[lo..hi] == source[lo..hi],
            "{what}: the saved map claims {lo}..{hi}, which is not durable on the disk"
        );
    }
}

fn engine_on(fs: &FaultFs, source: &Path, map_path: &Path, read_size: usize) -> Engine {
    fs.reset(SIZE);
    let media: Arc<dyn Media> = Arc::new(FileMedia::open(source, MediaOptions::default()).unwrap());
    let image = Image::open(&fs.image_path()).unwrap();
    let meta = Meta {
        size: Some(media.size()),
        sector_size: Some(media.sector_size()),
        ..Meta::default()
    };
    let cfg = EngineConfig {
        read_size,
        save_interval: Duration::ZERO,
        keep_free: 0,
        ..EngineConfig::default()
    };
    let mapfile = Mapfile::new(media.size(), meta);
    Engine::new(media, image, mapfile, map_path.to_owned(), cfg).unwrap()
}

fn random_read(engine: &Engine, source: &[u8], rng: &mut StdRng) {
    let offset = rng.gen_range(0..SIZE / 512) * 512;
    let len = rng.gen_range(1..=64).min((SIZE - offset) / 512) * 512;
    let mut buf = vec![0u8; len];
    engine.read(offset as u64, &mut buf).unwrap();
    assert!(buf == source[offset..offset + len], "read {offset}+{len}");
}

/// Random sequences of reads, armed sync failures, forced and rate-limited saves, and saves
/// while other threads read (marks between the snapshot and the sync).
#[test]
fn every_plus_in_a_saved_map_was_written_before_the_last_successful_sync() {
    let fs = FaultFs::mount();
    let dir = tempfile::tempdir().unwrap();
    let source_path = dir.path().join("source");
    let mut source = vec![0u8; SIZE];
    let mut failed_sequences = 0;
    for seed in 0..24u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        rng.fill_bytes(&mut source);
        std::fs::write(&source_path, &source).unwrap();
        let map_path = dir.path().join(format!("mapfile{seed}"));
        let engine = engine_on(&fs, &source_path, &map_path, 4096 * rng.gen_range(1..=4));
        for op in 0..40u64 {
            let what = format!("seed {seed}, op {op}");
            match rng.gen_range(0..10) {
                0..=4 => random_read(&engine, &source, &mut rng),
                5 => fs.disk().fail_syncs += 1,
                6 => {
                    let _ = engine.save();
                }
                7 => {
                    engine.maybe_save();
                }
                _ => std::thread::scope(|s| {
                    for t in 0..3u64 {
                        let (engine, source) = (&engine, &source);
                        s.spawn(move || {
                            let mut rng = StdRng::seed_from_u64(seed << 8 | op << 2 | t);
                            for _ in 0..4 {
                                random_read(engine, source, &mut rng);
                            }
                        });
                    }
                    let _ = engine.save();
                }),
            }
            assert_saved_map_is_durable(&map_path, &fs, &source, &what);
        }
        let _ = engine.save();
        assert_saved_map_is_durable(&map_path, &fs, &source, &format!("seed {seed}, end"));
        if !engine.health().is_ok() {
            failed_sequences += 1;
        }
    }
    // The sequences did meet failed syncs (else the check above proved little).
    assert!(
        failed_sequences >= 5,
        "only {failed_sequences} sequences failed a sync"
    );
}

/// Issue 11.3, the image half: a failed sync is not retried into a save that lies. The ranges
/// go back to `?`, are read from the media again (never from the image), and the cache is
/// failed: nothing more is written to the image.
#[test]
fn a_failed_image_sync_is_not_retried_into_a_lying_save() {
    let fs = FaultFs::mount();
    let dir = tempfile::tempdir().unwrap();
    let source_path = dir.path().join("source");
    let mut source = vec![0u8; SIZE];
    StdRng::seed_from_u64(7).fill_bytes(&mut source);
    std::fs::write(&source_path, &source).unwrap();
    let map_path = dir.path().join("mapfile");
    let engine = engine_on(&fs, &source_path, &map_path, 64 * 1024);

    // A first range is cached and saved durably.
    engine.read(0, &mut vec![0u8; 4096]).unwrap();
    engine.save().unwrap();
    // A second one is written, then its sync fails.
    engine.read(128 * 1024, &mut vec![0u8; 4096]).unwrap();
    assert_eq!(engine.status_at(128 * 1024), Some(Status::Finished));
    fs.disk().fail_syncs = 1;
    let err = engine.save().unwrap_err();
    assert!(
        matches!(err, EngineError::Image(ImageError::Sync { .. })),
        "{err}"
    );
    assert_eq!(engine.status_at(128 * 1024), Some(Status::NonTried));
    assert_eq!(engine.status_at(0), Some(Status::Finished), "synced before");
    assert!(matches!(engine.health(), CacheHealth::Failed { .. }));
    // The un-marked map was saved at once (no sync needed: it claims only synced bytes).
    let saved = blkcache::map::load(&map_path).unwrap();
    assert_eq!(saved.map.status_at(128 * 1024), Some(Status::NonTried));
    assert_eq!(saved.map.status_at(0), Some(Status::Finished));
    assert!(!engine.is_dirty());

    // Saving again saves the un-marked map, without a sync the disk would answer with 0.
    let syncs = fs.disk().syncs;
    engine.save().unwrap();
    assert_eq!(fs.disk().syncs, syncs, "a failed sync was retried");
    let saved = blkcache::map::load(&map_path).unwrap();
    assert_eq!(saved.map.status_at(0), Some(Status::Finished));
    assert_eq!(saved.map.status_at(128 * 1024), Some(Status::NonTried));
    assert_saved_map_is_durable(&map_path, &fs, &source, "after the failed sync");

    // The lost range is read from the media again and served right, but not cached: nothing is
    // written to a disk that lost data.
    let writes = fs.disk().writes;
    let reads = engine.counters().media_reads;
    let mut buf = vec![0u8; 4096];
    engine.read(128 * 1024, &mut buf).unwrap();
    assert!(buf == source[128 * 1024..132 * 1024]);
    assert_eq!(engine.counters().media_reads, reads + 1);
    assert_eq!(fs.disk().writes, writes, "wrote into a failed cache");
    assert_eq!(engine.status_at(128 * 1024), Some(Status::NonTried));
    // The bytes cached before the failure are still served from the image.
    engine.read(0, &mut buf).unwrap();
    assert!(buf == source[..4096]);
    assert_eq!(engine.counters().media_reads, reads + 1);
}

/// A disc cached to its last byte is served without the engine's lock (`serve_hit`'s fast
/// path); a failed sync that un-marks its last range makes that range a miss again there too,
/// while the bytes synced before stay hits.
#[test]
fn a_failed_sync_ends_the_complete_fast_path() {
    let fs = FaultFs::mount();
    let dir = tempfile::tempdir().unwrap();
    let source_path = dir.path().join("source");
    let mut source = vec![0u8; SIZE];
    StdRng::seed_from_u64(9).fill_bytes(&mut source);
    std::fs::write(&source_path, &source).unwrap();
    let engine = engine_on(&fs, &source_path, &dir.path().join("mapfile"), 64 * 1024);
    let last = SIZE - 64 * 1024;
    engine.read(0, &mut vec![0u8; last]).unwrap();
    engine.save().unwrap();
    let copy_out = |offset: usize, len: usize| {
        let mut got = None;
        let hit = engine.serve_hit(offset as u64, len, |m| {
            // SAFETY: the image is the engine's, in a FUSE mount nothing truncates, and `m`
            // covers `len` written bytes of its mapping, kept alive by the engine for the call.
            let bytes = unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) };
            got = Some(bytes.to_vec());
            Ok::<(), ()>(())
        });
        hit.map(|r| r.map(|()| got.unwrap()))
    };
    assert_eq!(copy_out(last, 4096), None, "not cached yet");
    engine.read(last as u64, &mut vec![0u8; 64 * 1024]).unwrap();
    assert_eq!(
        copy_out(last, 4096),
        Some(Ok(source[last..last + 4096].to_vec()))
    );
    assert_eq!(
        copy_out(0, SIZE),
        Some(Ok(source.clone())),
        "the whole disc"
    );

    fs.disk().fail_syncs = 1;
    engine.save().unwrap_err();
    assert_eq!(engine.status_at(last as u64), Some(Status::NonTried));
    assert_eq!(copy_out(last, 4096), None, "un-marked by the failed sync");
    assert_eq!(
        copy_out(0, SIZE),
        None,
        "the whole disc is no longer cached"
    );
    assert_eq!(
        copy_out(0, 4096),
        Some(Ok(source[..4096].to_vec())),
        "synced before"
    );
}
