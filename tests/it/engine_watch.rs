//! The media-change probe runs on the engine's watcher thread, never on a thread that serves
//! reads, and still closes the swap window. The real part: a file served through a media whose
//! change probe takes as long as a busy drive's TEST UNIT READY (it sleeps), and whose disc can
//! be "swapped" at a chosen moment.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blkcache::engine::{Engine, EngineConfig, Step, Wake};
use blkcache::image::Image;
use blkcache::map::{Mapfile, Meta, Status};
use blkcache::media::{FileMedia, Media, MediaOptions, ReadPlan};

const SIZE: usize = 1 << 20;
const PROBE: Duration = Duration::from_millis(700);

/// A file whose change probe takes `PROBE` (a drive busy with another command) and reports
/// `swapped`.
#[derive(Debug)]
struct SlowDrive {
    file: FileMedia,
    swapped: AtomicBool,
    probes: AtomicUsize,
}

impl Media for SlowDrive {
    fn size(&self) -> u64 {
        self.file.size()
    }
    fn sector_size(&self) -> u32 {
        2048
    }
    fn plan(&self, offset: u64, len: usize) -> ReadPlan<'_> {
        self.file.plan(offset, len)
    }
    fn can_change(&self) -> bool {
        true
    }
    fn media_changed(&self) -> bool {
        std::thread::sleep(PROBE);
        self.probes.fetch_add(1, Ordering::SeqCst);
        self.swapped.load(Ordering::SeqCst)
    }
    fn describe(&self) -> String {
        "slow drive".into()
    }
}

fn setup(dir: &Path) -> (Arc<SlowDrive>, Engine, Vec<u8>) {
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let path = dir.join("disc.iso");
    std::fs::write(&path, &data).unwrap();
    let file = FileMedia::open(&path, MediaOptions::default()).unwrap();
    let media = Arc::new(SlowDrive {
        file,
        swapped: AtomicBool::new(false),
        probes: AtomicUsize::new(0),
    });
    let image = Image::create(&dir.join("image"), SIZE as u64).unwrap();
    let meta = Meta {
        size: Some(SIZE as u64),
        sector_size: Some(2048),
        ..Meta::default()
    };
    let engine = Engine::new(
        media.clone(),
        image,
        Mapfile::new(SIZE as u64, meta),
        dir.join("mapfile"),
        EngineConfig::default(),
    )
    .unwrap();
    (media, engine, data)
}

#[derive(Default)]
struct CountingWake(AtomicUsize);
impl Wake for CountingWake {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_miss_never_waits_for_the_drive_on_the_serving_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (media, engine, data) = setup(dir.path());
    let wake = Arc::new(CountingWake::default());
    let _registered = engine.add_waker(wake.clone());
    let mut buf = vec![0u8; 65536];
    let mut req = engine.begin(0, buf.len());

    // Handing out the fetch and noting the read's end ask nothing of the drive.
    let t0 = Instant::now();
    let Step::Fetch(mut fetch) = engine.step(&mut req, &mut buf).unwrap() else {
        panic!("a miss must be a fetch");
    };
    let mut bytes = vec![0u8; fetch.io_len()];
    let n = media.read_at(fetch.offset, &mut bytes).unwrap();
    engine.read_done(&mut fetch);
    assert!(
        !engine.probe_ready(&fetch),
        "the probe after the read cannot be done yet"
    );
    assert!(
        t0.elapsed() < PROBE / 2,
        "step/read_done waited for the drive: {:?}",
        t0.elapsed()
    );

    // The verdict comes from the watcher, and wakes the registered waker.
    while !engine.probe_ready(&fetch) {
        assert!(t0.elapsed() < 10 * PROBE, "the watcher never answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        wake.0.load(Ordering::SeqCst) >= 1,
        "no wake-up at the probe's end"
    );
    assert_eq!(media.probes.load(Ordering::SeqCst), 1);
    let woken = wake.0.load(Ordering::SeqCst);
    engine.complete(fetch, Ok(&bytes[..n])).unwrap();
    assert!(
        wake.0.load(Ordering::SeqCst) > woken,
        "no wake-up at the claim's release"
    );
    assert!(matches!(
        engine.step(&mut req, &mut buf).unwrap(),
        Step::Done
    ));
    assert_eq!(buf, data[..65536]);
    assert_eq!(engine.status_at(0), Some(Status::Finished));
}

#[test]
fn a_swap_seen_by_the_probe_after_the_read_lands_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (media, engine, _) = setup(dir.path());
    let mut buf = vec![0u8; 65536];
    let mut req = engine.begin(0, buf.len());
    let Step::Fetch(mut fetch) = engine.step(&mut req, &mut buf).unwrap() else {
        panic!("a miss must be a fetch");
    };
    let mut bytes = vec![0u8; fetch.io_len()];
    let n = media.read_at(fetch.offset, &mut bytes).unwrap();
    // The disc is swapped after the read started, before anyone asked the drive.
    media.swapped.store(true, Ordering::SeqCst);
    engine.read_done(&mut fetch);
    let err = engine.complete(fetch, Ok(&bytes[..n])).unwrap_err();
    assert!(err.is_media_changed(), "{err}");
    assert_eq!(engine.status_at(0), Some(Status::NonTried));
    assert_eq!(engine.claims_in_flight(), 0);
    // Latched: the next miss fails at once, without asking the drive again.
    let probes = media.probes.load(Ordering::SeqCst);
    let t0 = Instant::now();
    let err = engine.read(65536, &mut buf).unwrap_err();
    assert!(err.is_media_changed(), "{err}");
    assert!(t0.elapsed() < PROBE / 2);
    assert_eq!(media.probes.load(Ordering::SeqCst), probes);
}

#[test]
fn reads_finishing_together_share_one_probe() {
    let dir = tempfile::tempdir().unwrap();
    let (media, engine, data) = setup(dir.path());
    let engine = Arc::new(engine);
    let start = Arc::new(std::sync::Barrier::new(4));
    let readers: Vec<_> = (0..4u64)
        .map(|i| {
            let (engine, start) = (engine.clone(), start.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                start.wait();
                engine.read(i * 65536, &mut buf).unwrap();
                buf
            })
        })
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.join().unwrap(), data[i * 65536..(i + 1) * 65536]);
    }
    let probes = media.probes.load(Ordering::SeqCst);
    assert!((1..4).contains(&probes), "4 reads took {probes} probes");
}
