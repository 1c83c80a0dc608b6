//! The engine's hit paths over a fully cached 64 MiB image, next to a plain memcpy of the same
//! sizes in the same run (the floor the hit path is measured against): `engine.read` (a `pread`
//! from the image: `blkcache serve`, nbd, fill) and `serve_hit` (the ublk queues'). Small samples.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use blkcache::engine::{Engine, EngineConfig};
use blkcache::image::Image;
use blkcache::map::{Mapfile, Meta};
use blkcache::media::{FileMedia, Media, MediaOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, RngCore, SeedableRng};

const SIZE: usize = 64 << 20;

/// An engine whose image holds the whole 64 MiB source (read through it once).
fn cached_engine(dir: &tempfile::TempDir) -> (Engine, Vec<u8>) {
    let source = dir.path().join("source");
    let mut data = vec![0u8; SIZE];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    std::fs::write(&source, &data).expect("write source");
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&source, MediaOptions::default()).expect("open source"));
    let image = Image::create(&dir.path().join("image"), SIZE as u64).expect("create image");
    let mapfile = Mapfile::new(SIZE as u64, Meta::default());
    let engine = Engine::new(
        media,
        image,
        mapfile,
        dir.path().join("mapfile"),
        EngineConfig::default(),
    )
    .expect("engine");
    let mut buf = vec![0u8; 1 << 20];
    for off in (0..SIZE).step_by(1 << 20) {
        engine.read(off as u64, &mut buf).expect("fill");
    }
    // Dropped only with the engine: read-ahead is on (its stream check is part of every hit).
    while engine.claims_in_flight() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let c = engine.counters();
    // Every byte read once, in at most one media read per 1 MiB request (a miss reads all of
    // the request's chunks at once; read-ahead reads whole pieces ahead of it).
    assert_eq!(c.media_bytes, SIZE as u64);
    assert!(c.media_reads <= (SIZE / (1 << 20)) as u64, "{c:?}");
    (engine, data)
}

fn bench_hits(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, data) = cached_engine(&dir);
    let mut g = c.benchmark_group("hit_path_64MiB");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    for len in [4usize << 10, 1 << 20] {
        let blocks = (SIZE / len) as u64;
        let mut buf = vec![0u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("engine_read", len), &len, |b, &len| {
            b.iter(|| {
                let off = rng.gen_range(0..blocks) * len as u64;
                engine.read(off, black_box(&mut buf)).expect("hit");
            })
        });
        // The ublk queues' hit path: the lookup, then one copy from the image's mapping into the
        // request (done by the kernel's `pwrite` there; a plain copy here).
        g.bench_with_input(BenchmarkId::new("serve_hit", len), &len, |b, &len| {
            b.iter(|| {
                let off = rng.gen_range(0..blocks) * len as u64;
                let dst = black_box(&mut buf);
                let hit = engine.serve_hit(off, len, |m| {
                    // SAFETY: the image is a 64 MiB file in this run's temporary directory that
                    // nothing truncates, every byte written above; `m` covers `len` bytes of its
                    // mapping, kept alive by the engine, and `dst` holds `len` bytes.
                    unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), dst.as_mut_ptr(), len) };
                    Ok::<(), ()>(())
                });
                assert_eq!(hit, Some(Ok(())), "a hit");
            })
        });
        g.bench_with_input(BenchmarkId::new("memcpy", len), &len, |b, &len| {
            b.iter(|| {
                let off = rng.gen_range(0..blocks) as usize * len;
                black_box(&mut buf).copy_from_slice(&data[off..off + len]);
            })
        });
    }
    g.finish();
    assert_eq!(engine.counters().media_bytes, SIZE as u64);
}

criterion_group!(benches, bench_hits);
criterion_main!(benches);
