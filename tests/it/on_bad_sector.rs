//! `on_bad_sector`: with `Zero`, a read over a bad sector succeeds with zeros there and the
//! source's bytes elsewhere; the map is the same as with `Eio` (the default, which fails it).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blkcache::engine::{Engine, EngineConfig, OnBadSector};
use blkcache::image::Image;
use blkcache::map::{FileMap, Mapfile, Meta, Status};
use blkcache::media::{FileMedia, Media, MediaOptions, TestMedia};

fn engine(dir: &Path, name: &str, data: &[u8], mode: OnBadSector) -> Engine {
    let source = dir.join("source");
    std::fs::write(&source, data).unwrap();
    let size = data.len() as u64;
    let mut damage = FileMap::new(size);
    damage.set(0, size, Status::Finished);
    damage.set(3 * 512, 2 * 512, Status::BadSector);
    let media: Arc<dyn Media> = Arc::new(TestMedia::from_parts(
        FileMedia::open(&source, MediaOptions::default()).unwrap(),
        damage,
        Duration::ZERO,
    ));
    let image = Image::create(&dir.join(format!("{name}.img")), size).unwrap();
    let cfg = EngineConfig {
        on_bad_sector: mode,
        ..EngineConfig::default()
    };
    let map = Mapfile::new(size, Meta::default());
    Engine::new(media, image, map, dir.join(format!("{name}.map")), cfg).unwrap()
}

#[test]
fn zero_mode_reads_zeros_for_bad_sectors_and_keeps_the_same_map() {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8 + 1).collect();
    let eio = engine(dir.path(), "eio", &data, OnBadSector::Eio);
    let zero = engine(dir.path(), "zero", &data, OnBadSector::Zero);
    let mut buf = vec![0xffu8; 8 * 512];
    assert!(eio.read(0, &mut buf).unwrap_err().is_bad_sector());
    let mut buf = vec![0xffu8; 8 * 512];
    zero.read(0, &mut buf).unwrap();
    assert_eq!(buf[..3 * 512], data[..3 * 512]);
    assert!(buf[3 * 512..5 * 512].iter().all(|&b| b == 0));
    assert_eq!(buf[5 * 512..], data[5 * 512..8 * 512]);
    // Again, from the map: still zeros, no error.
    let mut again = vec![0xffu8; 4 * 512];
    zero.read(2 * 512, &mut again).unwrap();
    assert!(again[512..3 * 512].iter().all(|&b| b == 0));
    assert_eq!(
        eio.mapfile_snapshot().map,
        zero.mapfile_snapshot().map,
        "the map does not depend on the mode"
    );
    assert_eq!(zero.status_at(3 * 512), Some(Status::BadSector));
}
