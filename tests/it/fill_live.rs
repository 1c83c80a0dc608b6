//! A fill sharing its engine with readers (what a serving daemon's `add --fill` does): readers
//! get the source's bytes, the fill gives way to them, ends with the map a fill alone ends
//! with, and no sector is read successfully twice.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blkcache::engine::{Engine, EngineConfig};
use blkcache::image::Image;
use blkcache::map::{FileMap, Mapfile, Meta, Status};
use blkcache::media::{FileMedia, Media, MediaOptions, TestMedia};
use blkcache::rescue::{self, FillOptions, Outcome, Pacer, Source};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SIZE: u64 = 4 << 20;

fn damage() -> FileMap {
    let mut d = FileMap::new(SIZE);
    d.set(0, SIZE, Status::Finished);
    for (pos, len) in [
        (300_000, 20_000),
        (1_000_000, 512),
        (2_500_000, 150_000),
        (3_900_000, 3000),
    ] {
        d.set(pos, len, Status::BadSector);
    }
    d
}

fn engine(dir: &Path, name: &str, latency: Duration) -> (Arc<Engine>, Arc<TestMedia>) {
    let media = Arc::new(TestMedia::from_parts(
        FileMedia::open(&dir.join("source"), MediaOptions::default()).unwrap(),
        damage(),
        latency,
    ));
    let image = Image::create(&dir.join(format!("{name}.img")), SIZE).unwrap();
    let dynmedia: Arc<dyn Media> = media.clone();
    let e = Engine::new(
        dynmedia,
        image,
        Mapfile::new(SIZE, Meta::default()),
        dir.join(format!("{name}.map")),
        EngineConfig::default(),
    )
    .unwrap();
    (Arc::new(e), media)
}

#[test]
fn a_fill_shared_with_readers_gives_them_the_source_and_reads_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; SIZE as usize];
    StdRng::seed_from_u64(1).fill(&mut data[..]);
    std::fs::write(dir.path().join("source"), &data).unwrap();

    // The reference: a fill alone.
    let (alone, _) = engine(dir.path(), "alone", Duration::ZERO);
    let mut src = Source::new(alone.media().clone());
    let stop = AtomicBool::new(false);
    let out = rescue::fill(
        &alone,
        &mut src,
        &FillOptions::default(),
        &stop,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out, Outcome::Finished);

    let (shared, media) = engine(dir.path(), "shared", Duration::from_millis(1));
    let done = Arc::new(AtomicBool::new(false));
    let data = Arc::new(data);
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let (engine, done, data) = (shared.clone(), done.clone(), data.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + t);
                let mut served = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let len = rng.gen_range(1..=128u64) * 512;
                    let pos = rng.gen_range(0..(SIZE - len) / 512) * 512;
                    let mut buf = vec![0u8; len as usize];
                    match engine.read(pos, &mut buf) {
                        Ok(()) => {
                            let (a, b) = (pos as usize, (pos + len) as usize);
                            assert!(buf == data[a..b], "reader got wrong bytes at {pos:#x}");
                            served += 1;
                        }
                        Err(e) => assert!(e.is_bad_sector(), "{e}"),
                    }
                    std::thread::sleep(Duration::from_millis(rng.gen_range(0..5)));
                }
                served
            })
        })
        .collect();
    let mut src = Source::new(shared.media().clone());
    let mut pacer = Pacer::new(Duration::from_millis(2));
    let out = rescue::fill(
        &shared,
        &mut src,
        &FillOptions::default(),
        &stop,
        &mut |_| pacer.pace(&shared),
    )
    .unwrap();
    done.store(true, Ordering::Relaxed);
    let served: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert_eq!(out, Outcome::Finished);
    assert!(served > 20, "the readers hardly read ({served})");
    assert_eq!(shared.mapfile_snapshot().map, alone.mapfile_snapshot().map);
    let twice: Vec<_> = media
        .read_counts()
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 1)
        .map(|(s, _)| s)
        .collect();
    assert!(twice.is_empty(), "sectors read twice: {twice:?}");
    let img = std::fs::read(dir.path().join("shared.img")).unwrap();
    for r in shared.mapfile_snapshot().map.iter() {
        if r.status == Status::Finished {
            let (a, b) = (r.pos as usize, r.end() as usize);
            assert!(img[a..b] == data[a..b], "image differs in {a:#x}..{b:#x}");
        }
    }
}
