//! Test-mode media against GNU ddrescue's own test mode (`-H`): the same damage map must leave
//! ddrescue and blkcache with the same good and bad sectors and the same bytes.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use blkcache::engine::{Engine, EngineConfig};
use blkcache::image::Image;
use blkcache::map::{FileMap, Mapfile, Meta, Status};
use blkcache::media::{Media, MediaOptions, TestMedia};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

#[test]
fn test_mode_agrees_with_gnu_ddrescue_test_mode() {
    const SIZE: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let mut data = vec![0u8; SIZE as usize];
    let mut rng = StdRng::seed_from_u64(7);
    rng.fill_bytes(&mut data);
    std::fs::write(&source, &data).unwrap();

    let mut damage = FileMap::new(SIZE);
    damage.set(0, SIZE, Status::Finished);
    for _ in 0..10 {
        let sector = rng.gen_range(0..SIZE / 512);
        let len = rng.gen_range(1..20);
        let status = [Status::BadSector, Status::NonTried, Status::NonTrimmed][rng.gen_range(0..3)];
        damage.set(sector * 512, len * 512, status);
    }
    let damage_path = dir.path().join("damage.map");
    let mut damage_file = Mapfile::new(SIZE, Meta::default());
    damage_file.map = damage.clone();
    blkcache::map::save(&damage_path, &damage_file).unwrap();

    // GNU ddrescue, test mode, all passes.
    let rescued = dir.path().join("rescued.img");
    let rescued_map = dir.path().join("rescued.map");
    let out = Command::new("ddrescue")
        .arg("-H")
        .arg(&damage_path)
        .args(["-b", "512", "-q"])
        .arg(&source)
        .arg(&rescued)
        .arg(&rescued_map)
        .output()
        .expect("GNU ddrescue (Debian package gddrescue) is needed for this test");
    assert!(
        out.status.success(),
        "ddrescue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ddrescue_map = blkcache::map::load(&rescued_map).unwrap().map;

    // blkcache over the same damage: read everything in 4 KiB requests.
    let media = Arc::new(
        TestMedia::open(
            &source,
            &damage_path,
            MediaOptions::default(),
            Duration::ZERO,
        )
        .unwrap(),
    );
    let image = Image::create(&dir.path().join("image"), SIZE).unwrap();
    let engine = Engine::new(
        media.clone() as Arc<dyn Media>,
        image,
        Mapfile::new(SIZE, Meta::default()),
        dir.path().join("map"),
        EngineConfig::default(),
    )
    .unwrap();
    let mut failed = 0;
    for off in (0..SIZE).step_by(4096) {
        if engine.read(off, &mut [0u8; 4096]).is_err() {
            failed += 1;
        }
    }
    assert!(failed > 0, "the damage map must hit some requests");
    let ours = engine.mapfile_snapshot().map;

    let rescued_bytes = std::fs::read(&rescued).unwrap();
    for sector in 0..SIZE / 512 {
        let pos = sector * 512;
        let theirs = ddrescue_map.status_at(pos).unwrap();
        let mine = ours.status_at(pos).unwrap();
        assert_eq!(mine, theirs, "sector {sector}");
        let expected = if damage.status_at(pos) == Some(Status::Finished) {
            Status::Finished
        } else {
            Status::BadSector
        };
        assert_eq!(mine, expected, "sector {sector}");
        if mine == Status::Finished {
            let mut buf = [0u8; 512];
            engine.image().read_at(pos, &mut buf).unwrap();
            let range = pos as usize..pos as usize + 512;
            assert!(buf[..] == data[range.clone()], "sector {sector}");
            assert!(buf[..] == rescued_bytes[range], "sector {sector}");
        }
    }
    assert!(media.read_counts().iter().all(|&r| r <= 1));
}
