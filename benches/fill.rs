//! A hit while a fill runs (what `add --fill` does on a served device) next to a hit with no
//! fill, in the same run: 4 KiB hits in the cached half of a 64 MiB source while a fill reads
//! the other half (10 ms per media read). "paced" gives way to readers as `add --fill` does;
//! "unpaced" does not (the cost of the fill's map updates alone).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blkcache::engine::{Engine, EngineConfig};
use blkcache::image::Image;
use blkcache::map::{FileMap, Mapfile, Meta, Status};
use blkcache::media::{FileMedia, Media, MediaOptions, TestMedia};
use blkcache::rescue::{self, FillOptions, Pacer, Source};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, RngCore, SeedableRng};

const SIZE: usize = 64 << 20;
const CACHED: usize = SIZE / 2;
const LEN: usize = 4 << 10;

fn engine(dir: &tempfile::TempDir) -> Arc<Engine> {
    let source = dir.path().join("source");
    let mut data = vec![0u8; SIZE];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    std::fs::write(&source, &data).expect("write source");
    let mut good = FileMap::new(SIZE as u64);
    good.set(0, SIZE as u64, Status::Finished);
    let media: Arc<dyn Media> = Arc::new(TestMedia::from_parts(
        FileMedia::open(&source, MediaOptions::default()).expect("open source"),
        good,
        Duration::from_millis(10),
    ));
    let image = Image::create(&dir.path().join("image"), SIZE as u64).expect("create image");
    let engine = Engine::new(
        media,
        image,
        Mapfile::new(SIZE as u64, Meta::default()),
        dir.path().join("mapfile"),
        EngineConfig::default(),
    )
    .expect("engine");
    let mut buf = vec![0u8; 1 << 20];
    for off in (0..CACHED).step_by(1 << 20) {
        engine
            .read(off as u64, &mut buf)
            .expect("cache the first half");
    }
    // The fill starts in the uncached half.
    engine.set_progress(CACHED as u64, blkcache::map::Phase::NonTried, 1);
    Arc::new(engine)
}

/// Runs a fill on `engine` until the returned flag is set.
fn start_fill(engine: &Arc<Engine>, paced: bool) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (e, s) = (engine.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let mut source = Source::new(e.media().clone());
        let mut pacer = Pacer::new(Duration::from_millis(50));
        let _ = rescue::fill(&e, &mut source, &FillOptions::default(), &s, &mut |_| {
            if paced {
                pacer.pace(&e)
            }
        });
    });
    (stop, t)
}

fn bench_hit_during_fill(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(&dir);
    let mut g = c.benchmark_group("hit_4KiB_during_fill");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(LEN as u64));
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut buf = vec![0u8; LEN];
    let blocks = (CACHED / LEN) as u64;
    for mode in ["no_fill", "fill_paced", "fill_unpaced"] {
        let fill = match mode {
            "fill_paced" => Some(start_fill(&engine, true)),
            "fill_unpaced" => Some(start_fill(&engine, false)),
            _ => None,
        };
        g.bench_function(BenchmarkId::new("engine_read", mode), |b| {
            b.iter(|| {
                let off = rng.gen_range(0..blocks) * LEN as u64;
                engine.read(off, black_box(&mut buf)).expect("hit");
            })
        });
        if let Some((stop, t)) = fill {
            stop.store(true, Ordering::SeqCst);
            t.join().expect("fill thread");
        }
    }
    g.finish();
}

criterion_group!(benches, bench_hit_during_fill);
criterion_main!(benches);
