//! A medium swapped under a running engine never lands in its cache. The real part: a read-only
//! loop device whose backing file is swapped with `LOOP_CHANGE_FD` (the kernel's own "change the
//! disc" for read-only loop devices, which live CDs use; it bumps the disk sequence number like a
//! disc change) or resized with `losetup --set-capacity`. Optical drives are covered in the guest
//! (`tests/guest/scenarios/h_disc_swap.sh`).
//!
//! Needs `losetup` and the right to attach loop devices (root); fails saying so otherwise.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use blkcache::engine::{Engine, EngineConfig, EngineError};
use blkcache::image::Image;
use blkcache::map::{Mapfile, Meta, Status};
use blkcache::media::{AlignedBuf, FileMedia, Media, MediaOptions};
use rand::{RngCore, SeedableRng};

use crate::util::Loop;

const SIZE: usize = 4 << 20;
const SECTOR: u32 = 2048;

fn random_file(path: &Path, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; SIZE];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}

fn engine_over(media: Arc<dyn Media>, dir: &Path) -> Engine {
    let image = Image::create(&dir.join("image"), media.size()).unwrap();
    let meta = Meta {
        size: Some(media.size()),
        sector_size: Some(media.sector_size()),
        ..Meta::default()
    };
    let mapfile = Mapfile::new(media.size(), meta);
    Engine::new(
        media,
        image,
        mapfile,
        dir.join("mapfile"),
        EngineConfig::default(),
    )
    .unwrap()
}

/// The map's runs as (pos, len, status).
fn runs(engine: &Engine) -> Vec<(u64, u64, Status)> {
    let snapshot = engine.mapfile_snapshot();
    snapshot
        .map
        .iter()
        .map(|r| (r.pos, r.len, r.status))
        .collect()
}

#[test]
fn a_disc_swapped_under_the_engine_never_lands_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let first = random_file(&dir.path().join("first.iso"), 1);
    let second = random_file(&dir.path().join("second.iso"), 2);
    let dev = Loop::attach(&dir.path().join("first.iso"), SECTOR);
    let media = Arc::new(FileMedia::open(&dev.0, MediaOptions::default()).unwrap());
    assert!(!media.media_changed(), "nothing changed since open");
    let engine = engine_over(media.clone(), dir.path());

    let cached = 256 * 1024;
    let mut buf = vec![0u8; cached];
    engine.read(0, &mut buf).unwrap();
    assert_eq!(buf, first[..cached]);

    dev.change_disc(&dir.path().join("second.iso"));
    // The threat: the engine's descriptor now reads the other disc's bytes, without an error.
    let mut raw = AlignedBuf::new(65536);
    assert_eq!(media.read_at(1 << 20, &mut raw).unwrap(), 65536);
    assert_eq!(&raw[..], &second[1 << 20..(1 << 20) + 65536]);

    // Uncached bytes fail with MediaChanged, at once and every time after.
    let mut miss = vec![0u8; 65536];
    for _ in 0..2 {
        let err = engine.read(1 << 20, &mut miss).unwrap_err();
        assert!(
            matches!(err, EngineError::MediaChanged { offset } if offset == 1 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("blkcache del"), "{err}");
    }
    assert!(engine.media_changed());
    assert!(media.media_changed(), "latched");
    // A request that is half cached fails as a whole, and caches nothing.
    let mut half = vec![0u8; 2 * 65536];
    let err = engine.read(cached as u64 - 65536, &mut half).unwrap_err();
    assert!(err.is_media_changed(), "{err}");
    // Cached bytes are still served, and they are the first disc's.
    let mut hit = vec![0u8; cached];
    engine.read(0, &mut hit).unwrap();
    assert_eq!(hit, first[..cached]);

    // Nothing from the second disc reached the map or the image.
    assert_eq!(
        runs(&engine),
        vec![
            (0, cached as u64, Status::Finished),
            (cached as u64, (SIZE - cached) as u64, Status::NonTried),
        ]
    );
    assert_eq!(engine.claims_in_flight(), 0);
    engine.save().unwrap();
    let image = std::fs::read(dir.path().join("image")).unwrap();
    assert_eq!(image[..cached], first[..cached]);
    assert!(
        image[cached..].iter().all(|&b| b == 0),
        "image past the cached part"
    );
    let c = engine.counters();
    assert_eq!((c.hits, c.errors), (1, 3), "{c:?}");
}

#[test]
fn a_device_that_changes_size_counts_as_a_changed_disc() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disc.iso");
    let data = random_file(&backing, 3);
    let dev = Loop::attach(&backing, SECTOR);
    let media = Arc::new(FileMedia::open(&dev.0, MediaOptions::default()).unwrap());
    let engine = engine_over(media.clone(), dir.path());
    let mut buf = vec![0u8; 65536];
    engine.read(0, &mut buf).unwrap();
    assert_eq!(buf, data[..65536]);

    // Another, larger disc in the same "drive": the backing file grows, the device is resized.
    File::options()
        .append(true)
        .open(&backing)
        .unwrap()
        .set_len(2 * SIZE as u64)
        .unwrap();
    let out = Command::new("losetup")
        .arg("--set-capacity")
        .arg(&dev.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup --set-capacity: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = engine.read(65536, &mut buf).unwrap_err();
    assert!(err.is_media_changed(), "{err}");
    engine.read(0, &mut buf).unwrap();
    assert_eq!(buf, data[..65536]);
    assert_eq!(runs(&engine)[0], (0, 65536, Status::Finished));
    assert_eq!(runs(&engine).len(), 2);
}

#[test]
fn a_plain_file_never_counts_as_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disc.iso");
    random_file(&path, 4);
    let media = Arc::new(FileMedia::open(&path, MediaOptions::default()).unwrap());
    let engine = engine_over(media.clone(), dir.path());
    // Replacing the file's bytes in place is the user's business: the file is still the source.
    random_file(&path, 5);
    let mut buf = vec![0u8; 65536];
    engine.read(0, &mut buf).unwrap();
    assert!(!media.media_changed());
    assert!(!engine.media_changed());
}

/// A card pulled out of its reader while read: the read fails with EIO, which looks like a bad
/// sector, but the watcher's probe after it says the medium is gone, so nothing is marked; a
/// real bad sector read before the card was pulled is still marked `-`. Test-mode media with
/// removal (a real capability of it: reads fail with EIO, `media_changed` says so).
#[test]
fn a_card_pulled_out_while_read_marks_nothing() {
    use blkcache::engine::Step;
    use blkcache::map::FileMap;
    use blkcache::media::TestMedia;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.img");
    let data = random_file(&path, 4);
    let bad = 3 << 20;
    let mut damage = FileMap::new(SIZE as u64);
    damage.set(0, SIZE as u64, Status::Finished);
    damage.set(bad, u64::from(SECTOR), Status::BadSector);
    let opts = MediaOptions {
        sector_size: Some(SECTOR),
        ..MediaOptions::default()
    };
    let file = FileMedia::open(&path, opts).unwrap();
    let media =
        Arc::new(TestMedia::from_parts(file, damage, std::time::Duration::ZERO).allow_removal());
    let engine = engine_over(media.clone(), dir.path());

    let mut buf = vec![0u8; 65536];
    engine.read(0, &mut buf).unwrap();
    assert_eq!(buf, data[..65536]);
    let err = engine.read(bad, &mut buf).unwrap_err();
    assert!(err.is_bad_sector(), "{err}");
    assert_eq!(engine.status_at(bad), Some(Status::BadSector));

    // The card comes out while a request's media read is under way: the read fails with EIO.
    let pos = 1 << 20;
    let mut req = engine.begin(pos, 65536);
    let Step::Fetch(mut fetch) = engine.step(&mut req, &mut buf).unwrap() else {
        panic!("an uncached request must fetch");
    };
    media.remove();
    let mut raw = AlignedBuf::new(fetch.io_len());
    let read = media.read_at(fetch.offset, &mut raw);
    assert_eq!(read.as_ref().unwrap_err().raw_os_error(), Some(libc::EIO));
    engine.read_done(&mut fetch);
    let err = engine.complete(fetch, read.map(|n| &raw[..n])).unwrap_err();
    assert!(err.is_media_changed(), "{err}");
    // Later reads of the empty reader fail the same way, and mark nothing either.
    for off in [pos, 2 << 20, bad + 65536] {
        let err = engine.read(off, &mut buf).unwrap_err();
        assert!(err.is_media_changed(), "{err}");
    }

    // The map: what was read, the one real bad sector around its narrowing, nothing else.
    for (p, len, status) in runs(&engine) {
        match status {
            Status::Finished | Status::NonTried => {}
            Status::BadSector => assert_eq!((p, len), (bad, u64::from(SECTOR)), "bad run"),
            other => panic!("run {p}+{len} marked {other:?} after the card was pulled"),
        }
    }
    assert_eq!(engine.status_at(pos), Some(Status::NonTried));
    assert_eq!(engine.claims_in_flight(), 0);
}
