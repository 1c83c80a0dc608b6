//! FileMap lookup and mark, and mapfile save/load, with 1,000,000 extents.
//! Kept short (small samples) so a whole `cargo bench` stays within minutes.

use std::hint::black_box;
use std::time::Duration;

use blkcache::map::{self, FileMap, Mapfile, Meta, Status};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};

const EXTENTS: u64 = 1_000_000;
const SECTOR: u64 = 512;

/// Alternating finished / non-tried sectors: exactly `EXTENTS` extents.
fn million() -> FileMap {
    let mut m = FileMap::new(EXTENTS * SECTOR);
    for i in (0..EXTENTS).step_by(2) {
        m.set(i * SECTOR, SECTOR, Status::Finished);
    }
    assert_eq!(m.extent_count(), EXTENTS as usize);
    m
}

fn bench_filemap(c: &mut Criterion) {
    let mut g = c.benchmark_group("filemap_1M_extents");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut m = million();
    let size = m.size();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);

    g.bench_function("status_at", |b| {
        b.iter(|| black_box(m.status_at(rng.gen_range(0..size))))
    });
    g.bench_function("runs_64KiB", |b| {
        b.iter(|| {
            let pos = rng.gen_range(0..size);
            black_box(m.runs(pos, 65536).count())
        })
    });
    // Mark a non-tried sector finished (merges 3 extents into 1), then put it back (splits):
    // the map keeps its million extents across iterations.
    g.bench_function("set_merge_then_split", |b| {
        b.iter(|| {
            let s = (rng.gen_range(0..EXTENTS / 2) * 2 + 1) * SECTOR;
            m.set(s, SECTOR, Status::Finished);
            m.set(s, SECTOR, Status::NonTried);
        })
    });
    // Mark part of a sector bad: a split into three, then undo.
    g.bench_function("set_split_inside", |b| {
        b.iter(|| {
            let s = rng.gen_range(0..EXTENTS) * SECTOR;
            let old = m.status_at(s).unwrap();
            m.set(s + 100, 200, Status::BadSector);
            m.set(s + 100, 200, old);
        })
    });
    assert_eq!(m.extent_count(), EXTENTS as usize);
    g.finish();
}

fn bench_persist(c: &mut Criterion) {
    let mut g = c.benchmark_group("mapfile_1M_extents");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.map");
    let mut mf = Mapfile::new(0, Meta::default());
    mf.map = million();
    // What a saver pays to snapshot the map under its lock.
    g.bench_function("clone", |b| {
        b.iter(|| black_box(mf.clone().map.extent_count()))
    });
    g.bench_function("format", |b| b.iter(|| black_box(map::format(&mf).len())));
    g.bench_function("save_fsync", |b| b.iter(|| map::save(&path, &mf).unwrap()));
    map::save(&path, &mf).unwrap();
    g.bench_function("load", |b| {
        b.iter(|| black_box(map::load(&path).unwrap().map.extent_count()))
    });
    g.finish();
}

criterion_group!(benches, bench_filemap, bench_persist);
criterion_main!(benches);
