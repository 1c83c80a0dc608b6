//! Identity that survives real drives and damage, through the real binary and real files: a
//! "drive" that reports the disc 2 sectors smaller or larger (the ISO truncated or extended)
//! resumes its cache and never cuts it; one 33 sectors off is another disc; a head with bad
//! sectors (a `--test-mode` damage map) finds its cache by the sectors that read and the volume
//! descriptor, or is refused when two caches match or none does; the drives that read a cache
//! are recorded; the identity read's bytes land in the cache, each head sector read once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blkcache::cache::{self, Cache};
use blkcache::engine::{EngineConfig, EngineError};
use blkcache::map::{self, Mapfile, Meta, Status};
use blkcache::media::{read_head, MediaOptions, TestMedia};
use blkcache::serve::{self, Note};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

const BLKCACHE: &str = env!("CARGO_BIN_EXE_blkcache");
const SECTOR: u64 = 2048;
/// Sectors of the test disc.
const SECTORS: u64 = 300;

/// A disc image: random bytes with an ISO9660 primary volume descriptor labelled `label`.
fn disc(seed: u64, label: &str) -> Vec<u8> {
    let mut data = vec![0u8; (SECTORS * SECTOR) as usize];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let vd = &mut data[32768..32768 + 2048];
    vd[0] = 1;
    vd[1..6].copy_from_slice(b"CD001");
    vd[40..72].copy_from_slice(format!("{label:<32}").as_bytes());
    data
}

struct Disc {
    dir: tempfile::TempDir,
    data: Vec<u8>,
}

impl Disc {
    fn new() -> Disc {
        Disc {
            dir: tempfile::tempdir().unwrap(),
            data: disc(1, "MYDISC"),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn state(&self) -> PathBuf {
        self.path("state")
    }
    /// The disc as a drive reporting `delta` sectors more (zeros) or fewer would read it.
    fn drive(&self, name: &str, delta: i64) -> PathBuf {
        let len = (SECTORS as i64 + delta) as usize * SECTOR as usize;
        let mut bytes = self.data.clone();
        bytes.resize(len, 0);
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    /// A damage map over `sectors` sectors where the given sectors are bad.
    fn damage(&self, name: &str, sectors: u64, bad: &[u64]) -> PathBuf {
        let size = sectors * SECTOR;
        let mut m = Mapfile::new(size, Meta::default());
        m.map.set(0, size, Status::Finished);
        for &b in bad {
            m.map.set(b * SECTOR, SECTOR, Status::BadSector);
        }
        let p = self.path(name);
        map::save(&p, &m).unwrap();
        p
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BLKCACHE)
            .args(args)
            .env("BLKCACHE_STATE_DIR", self.state())
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
    /// The cache directories under the state directory.
    fn caches(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.state())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
        v.sort();
        v
    }
    fn only_cache(&self) -> PathBuf {
        let c = self.caches();
        assert_eq!(c.len(), 1, "{c:?}");
        c[0].clone()
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `blkcache serve SOURCE --socket` until stopped (SIGTERM: the map is saved); its stderr.
struct Served {
    child: Child,
    uri: String,
    err: PathBuf,
}

impl Served {
    fn start(d: &Disc, args: &[&str]) -> Result<Served, String> {
        let socket = d.path("nbd.sock");
        let _ = std::fs::remove_file(&socket);
        let err = d.path("serve.err");
        let mut child = Command::new(BLKCACHE)
            .arg("serve")
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .env("BLKCACHE_STATE_DIR", d.state())
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut uri = String::new();
        use std::io::Read;
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            uri.push(byte[0] as char);
        }
        if uri.is_empty() {
            let _ = child.wait();
            return Err(std::fs::read_to_string(&err).unwrap());
        }
        Ok(Served { child, uri, err })
    }

    fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(&self.err).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `[offset, offset + len)` of the export with nbdsh (libnbd's shell): the bytes, or the
/// error message.
fn nbd_read(uri: &str, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    // Debian's python3-libnbd is the system python's module.
    let out = Command::new("/usr/bin/python3")
        .args(["-c", "import nbd,sys\nh=nbd.NBD()\nh.connect_uri(sys.argv[1])\nsys.stdout.buffer.write(h.pread(int(sys.argv[3]),int(sys.argv[2])))"])
        .arg(uri)
        .arg(offset.to_string())
        .arg(len.to_string())
        .output()
        .expect("python3-libnbd is needed for this test");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn meta(cache: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(cache.join("blkcache.json")).unwrap()).unwrap()
}

/// The same disc in a drive reporting 2 sectors more, then one reporting 2 fewer: one cache,
/// grown to the larger size and never cut; the sectors past the smaller drive's end are served
/// from the cache. 33 sectors fewer is another disc: refused, naming both sizes.
#[test]
fn a_drive_reporting_a_few_sectors_more_or_fewer_resumes_the_cache() {
    let d = Disc::new();
    let exact = d.drive("exact.iso", 0);
    let larger = d.drive("larger.iso", 2);
    let smaller = d.drive("smaller.iso", -2);
    // Made by the exact drive (add fails later for want of a ublk driver: the cache is made).
    let o = d.run(&["add", exact.to_str().unwrap(), "--sector-size", "2048"]);
    assert!(stderr(&o).contains("no ublk driver"), "{}", text(&o));
    let cache = d.only_cache();
    assert_eq!(meta(&cache)["size"], SECTORS * SECTOR);

    // A larger drive: the cache grows, the new sectors non-tried, then read by the fill.
    let o = d.run(&["fill", larger.to_str().unwrap(), "--sector-size", "2048"]);
    assert!(o.status.success(), "{}", text(&o));
    // Then the fill's progress lines.
    assert!(
        stderr(&o).starts_with(&format!(
            "blkcache: {}: this drive reads the disc 4096 bytes larger than its cache (618496, was \
             614400 bytes): the cache grows, the new bytes not yet read\n",
            cache.display()
        )),
        "{}",
        text(&o)
    );
    assert_eq!(d.only_cache(), cache);
    let grown = (SECTORS + 2) * SECTOR;
    assert_eq!(meta(&cache)["size"], grown);
    assert_eq!(std::fs::metadata(cache.join("image")).unwrap().len(), grown);
    let m = map::load(&cache.join("mapfile")).unwrap().map;
    assert_eq!(m.size(), grown);
    assert_eq!(m.stats().get(Status::Finished).bytes, grown);

    // A smaller drive: the cache keeps its size; the 2 sectors past the drive's end are served
    // from the cache.
    let s = Served::start(&d, &[smaller.to_str().unwrap(), "--sector-size", "2048"]).unwrap();
    let tail = nbd_read(&s.uri, (SECTORS - 4) * SECTOR, 6 * SECTOR).unwrap();
    let mut want = d.data[((SECTORS - 4) * SECTOR) as usize..].to_vec();
    want.resize(6 * SECTOR as usize, 0);
    assert_eq!(tail, want);
    let err = s.stop();
    assert_eq!(
        err,
        format!(
            "blkcache: {}: this drive reads the disc 8192 bytes smaller than its cache (610304 of \
             618496 bytes): the cache keeps its size, and bytes past this drive's end are served \
             only if cached\n",
            cache.display()
        )
    );
    assert_eq!(meta(&cache)["size"], grown);
    assert_eq!(map::load(&cache.join("mapfile")).unwrap().map.size(), grown);

    // 33 sectors fewer than the cache: another disc.
    let far = d.drive("far.iso", -31);
    let o = d.run(&["add", far.to_str().unwrap(), "--sector-size", "2048"]);
    assert_eq!(
        stderr(&o),
        format!(
            "blkcache: error: cache {} holds 618496 bytes but the source {} has 550912 bytes, more \
             than 32 sectors apart, so it is another disc; refusing to reuse it (remove it or pass \
             another --cache)\n",
            cache.display(),
            far.display()
        )
    );

    // Every drive is recorded, and shown by status.
    let drives = meta(&cache)["drives"].as_array().unwrap().clone();
    let paths: Vec<&str> = drives.iter().map(|r| r["path"].as_str().unwrap()).collect();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    assert_eq!(paths, [p(&exact), p(&larger), p(&smaller)]);
    assert!(drives.iter().all(|r| r["kind"] == "file"));
    assert_eq!(drives[1]["size"], grown);
    let o = d.run(&["status", cache.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["drives"].as_array().unwrap().len(), 3, "{}", text(&o));
    let o = d.run(&["status", cache.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "read by: file at {}, 610304 bytes, 1 use(s)",
            smaller.display()
        )),
        "{out}"
    );
}

/// In a drive reporting the disc smaller than its cache, an uncached sector past the drive's
/// end fails and marks nothing; the bytes before the end of a request across it are cached.
#[test]
fn past_the_end_of_a_smaller_drive_uncached_bytes_fail_and_mark_nothing() {
    let d = Disc::new();
    let exact = d.drive("exact.iso", 0);
    let smaller = d.drive("smaller.iso", -2);
    let cache_dir = d.path("cache");
    let o = d.run(&[
        "add",
        exact.to_str().unwrap(),
        "--sector-size",
        "2048",
        "--cache",
        cache_dir.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("no ublk driver"), "{}", text(&o));
    let s = Served::start(
        &d,
        &[
            smaller.to_str().unwrap(),
            "--sector-size",
            "2048",
            "--cache",
            cache_dir.to_str().unwrap(),
        ],
    )
    .unwrap();
    let err = nbd_read(&s.uri, (SECTORS - 4) * SECTOR, 4 * SECTOR).unwrap_err();
    assert!(err.contains("Input/output error"), "{err}");
    let before_end = nbd_read(&s.uri, (SECTORS - 4) * SECTOR, 2 * SECTOR).unwrap();
    assert_eq!(
        before_end,
        d.data[((SECTORS - 4) * SECTOR) as usize..((SECTORS - 2) * SECTOR) as usize]
    );
    s.stop();
    let m = map::load(&cache_dir.join("mapfile")).unwrap().map;
    assert_eq!(m.size(), SECTORS * SECTOR);
    let tail: Vec<_> = m.runs((SECTORS - 4) * SECTOR, 4 * SECTOR).collect();
    assert_eq!(
        tail.iter()
            .map(|r| (r.pos / SECTOR, r.len / SECTOR, r.status))
            .collect::<Vec<_>>(),
        [
            (SECTORS - 4, 2, Status::Finished),
            (SECTORS - 2, 2, Status::NonTried)
        ]
    );

    // A fill in the smaller drive reads all it can and ends, the 2 sectors past its end left
    // non-tried for a drive that reads them.
    let o = d.run(&[
        "fill",
        smaller.to_str().unwrap(),
        "--sector-size",
        "2048",
        "--cache",
        cache_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let m = map::load(&cache_dir.join("mapfile")).unwrap().map;
    let runs: Vec<_> = m
        .iter()
        .map(|r| (r.pos / SECTOR, r.len / SECTOR, r.status))
        .collect();
    assert_eq!(
        runs,
        [
            (0, SECTORS - 2, Status::Finished),
            (SECTORS - 2, 2, Status::NonTried)
        ]
    );
}

/// A head whose sectors 3 and 5 no longer read finds its cache by the other 30 and the volume
/// descriptor, and says so; the failed sectors are marked bad in it.
#[test]
fn a_damaged_head_finds_its_cache_by_the_sectors_that_read() {
    let d = Disc::new();
    let iso = d.drive("disc.iso", 0);
    let o = d.run(&["add", iso.to_str().unwrap(), "--sector-size", "2048"]);
    assert!(stderr(&o).contains("no ublk driver"), "{}", text(&o));
    let cache = d.only_cache();
    let damage = d.damage("damage.map", SECTORS, &[3, 5]);
    let s = Served::start(
        &d,
        &[
            iso.to_str().unwrap(),
            "--sector-size",
            "2048",
            "--test-mode",
            damage.to_str().unwrap(),
        ],
    )
    .unwrap();
    let err = s.stop();
    assert_eq!(
        err,
        format!(
            "blkcache: {}: cache found by the readable sectors of the head (30 of 32) and the \
             volume descriptor 'MYDISC'\n",
            cache.display()
        )
    );
    assert_eq!(d.only_cache(), cache);
    // Read whole by the first add, the head stays `+`: what was rescued is kept.
    let m = map::load(&cache.join("mapfile")).unwrap().map;
    assert_eq!(m.status_at(3 * SECTOR), Some(Status::Finished));

    // Damaged over the volume descriptor: nothing to tell the disc by.
    let damage = d.damage("vd.map", SECTORS, &[16]);
    let e = Served::start(
        &d,
        &[
            iso.to_str().unwrap(),
            "--sector-size",
            "2048",
            "--test-mode",
            damage.to_str().unwrap(),
        ],
    )
    .err()
    .unwrap();
    assert_eq!(
        e,
        format!(
            "blkcache: error: the first 64 KiB of {} did not read whole (31 of 32 sectors read), \
             and no cache in {} holds those sectors and the volume descriptor at byte 32768, so \
             blkcache cannot tell which disc this is; pass --cache DIR: this disc's cache if it \
             has one, or a new directory\n",
            iso.display(),
            d.state().display()
        )
    );
}

/// Two caches that both hold the readable head sectors: refused, naming both.
#[test]
fn a_damaged_head_matching_two_caches_is_refused() {
    let d = Disc::new();
    let a = d.drive("a.iso", 0);
    // Another disc whose head differs only in sector 3.
    let b = d.path("b.iso");
    let mut other = d.data.clone();
    other[3 * SECTOR as usize] ^= 0xff;
    std::fs::write(&b, other).unwrap();
    for p in [&a, &b] {
        let o = d.run(&["add", p.to_str().unwrap(), "--sector-size", "2048"]);
        assert!(stderr(&o).contains("no ublk driver"), "{}", text(&o));
    }
    let caches = d.caches();
    assert_eq!(caches.len(), 2);
    let damage = d.damage("damage.map", SECTORS, &[3]);
    let o = d.run(&[
        "add",
        a.to_str().unwrap(),
        "--sector-size",
        "2048",
        "--test-mode",
        damage.to_str().unwrap(),
    ]);
    assert_eq!(
        stderr(&o),
        format!(
            "blkcache: error: the readable sectors of the first 64 KiB of {} (31 of 32) match 2 \
             caches: {}, {}; pass the right one with --cache DIR\n",
            a.display(),
            caches[0].display(),
            caches[1].display()
        )
    );
}

/// The identity read lands in the cache: each head sector read from the media once (a bad one:
/// the failed whole read, then alone, as ddrescue's copy and scrape), marked `+` or `-`, and
/// then served without another media read. The same calls `add` makes (`serve::prepare`,
/// `start`), over test-mode media that counts reads per sector.
#[test]
fn the_identity_read_lands_in_the_cache_and_is_not_read_again() {
    let d = Disc::new();
    let iso = d.drive("disc.iso", 0);
    let damage = d.damage("damage.map", SECTORS, &[7]);
    let media = Arc::new(
        TestMedia::open(
            &iso,
            &damage,
            MediaOptions {
                sector_size: Some(2048),
                ..MediaOptions::default()
            },
            Duration::ZERO,
        )
        .unwrap(),
    );
    let dir = d.path("cache");
    let head = read_head(media.as_ref(), &iso, &[]).unwrap();
    assert_eq!(head.sectors_read(), 31);
    let found = cache::locate(Some(&dir), "disc.iso", &head).unwrap();
    let mut cache: Cache = found.cache;
    let note = Note {
        drive: serve::drive_record(&Default::default(), &iso, media.as_ref()),
        head_identity: None,
    };
    let engine = serve::open_engine(
        &mut cache,
        media.clone(),
        Some((found.size, &note)),
        EngineConfig::default(),
    )
    .unwrap();
    serve::land_head(&engine, &head).unwrap();
    for s in 0..32 {
        let want = if s == 7 {
            Status::BadSector
        } else {
            Status::Finished
        };
        assert_eq!(engine.status_at(s * SECTOR), Some(want), "sector {s}");
    }
    // Reading the head through the engine touches the media no more.
    let mut buf = vec![0u8; 64 * 1024];
    let e = engine.read(0, &mut buf).unwrap_err();
    assert!(
        matches!(e, EngineError::BadSector { offset } if offset == 7 * SECTOR),
        "{e}"
    );
    engine
        .read(8 * SECTOR, &mut buf[..24 * SECTOR as usize])
        .unwrap();
    assert_eq!(
        buf[..24 * SECTOR as usize],
        d.data[8 * SECTOR as usize..32 * SECTOR as usize]
    );
    for s in 0..32 {
        assert_eq!(
            media.read_count(s),
            u32::from(s != 7),
            "reads of sector {s}"
        );
        assert_eq!(media.attempt_count(s), 2, "attempts on sector {s}");
    }
    assert_eq!(media.read_count(32), 0);
    // And it is in the saved cache once saved (add saves right after landing).
    engine.save().unwrap();
    let m = map::load(&dir.join("mapfile")).unwrap().map;
    assert_eq!(m.status_at(0), Some(Status::Finished));
    let img = std::fs::read(dir.join("image")).unwrap();
    assert_eq!(img[..7 * SECTOR as usize], d.data[..7 * SECTOR as usize]);
    let rec = &cache.meta().drives[0];
    assert_eq!((rec.kind.as_str(), rec.uses), ("file", 1));
    drop(engine);

    // The next identity read with this cache named skips the sector it marked bad: read in two
    // stretches around it, each good sector once more, the bad one never again.
    let known = cache::known_bad_head(Some(&dir), SECTORS * SECTOR, 2048);
    assert_eq!(known, [7]);
    let again = read_head(media.as_ref(), &iso, &known).unwrap();
    assert_eq!(again.sectors_read(), 31);
    assert_eq!(again.reads().len(), 2);
    for s in 0..32 {
        assert_eq!(
            media.attempt_count(s),
            if s == 7 { 2 } else { 3 },
            "sector {s}"
        );
    }
}

/// A cache made by older blkcache (named by size, sector size and head) is still found, also by a
/// drive reporting the disc 2 sectors larger; its head identity is then recorded.
#[test]
fn a_cache_named_by_the_older_identity_is_still_found() {
    let d = Disc::new();
    let iso = d.drive("disc.iso", 0);
    let old =
        blkcache::media::identity::size_identity(SECTORS * SECTOR, 2048, &d.data[..64 * 1024])
            .to_string();
    std::fs::create_dir_all(d.state()).unwrap();
    std::fs::set_permissions(
        d.state(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let old_dir = d.state().join(&old);
    let info = cache::SourceInfo {
        path: iso.display().to_string(),
        size: SECTORS * SECTOR,
        sector_size: 2048,
        identity: old.clone(),
    };
    Cache::open_or_create(&old_dir, &info).unwrap();
    let larger = d.drive("larger.iso", 2);
    let o = d.run(&[
        "fill",
        larger.to_str().unwrap(),
        "--sector-size",
        "2048",
        "-n",
        "-N",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).starts_with(&format!(
            "blkcache: {}: cache found by its older identity (size and first 64 KiB); this drive \
             reads the disc 4096 bytes larger",
            old_dir.display()
        )),
        "{}",
        text(&o)
    );
    assert_eq!(d.caches(), std::slice::from_ref(&old_dir));
    let m = meta(&old_dir);
    assert_eq!(m["identity"], old);
    assert!(
        m["head_identity"].as_str().is_some_and(|h| h.len() == 16),
        "{m}"
    );
}

/// A cache named with `--cache` for a head that does not read whole (here: the volume
/// descriptor's sector bad) is taken if every head sector that read is the cache's; another
/// disc's cache is refused, saying how many sectors differ.
#[test]
fn a_named_cache_is_checked_by_the_head_sectors_that_read() {
    let d = Disc::new();
    let iso = d.drive("disc.iso", 0);
    let c = d.path("cache");
    let c_s = c.to_str().unwrap();
    let o = d.run(&[
        "add",
        iso.to_str().unwrap(),
        "--sector-size",
        "2048",
        "--cache",
        c_s,
    ]);
    assert!(stderr(&o).contains("no ublk driver"), "{}", text(&o));
    let damage = d.damage("vd.map", SECTORS, &[16]);
    let args = |src: &Path| {
        vec![
            src.to_str().unwrap().to_string(),
            "--sector-size".into(),
            "2048".into(),
            "--cache".into(),
            c_s.into(),
            "--test-mode".into(),
            damage.to_str().unwrap().into(),
        ]
    };
    let a = args(&iso);
    let s = Served::start(&d, &a.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    assert_eq!(
        s.stop(),
        format!(
            "blkcache: {}: cache named with --cache; 31 of the 31 head sectors that read (32 in \
             all) are in it and the same\n",
            c.display()
        )
    );
    // Another disc, its head differing in sectors 2 and 9.
    let mut other = d.data.clone();
    other[2 * SECTOR as usize] ^= 1;
    other[9 * SECTOR as usize] ^= 1;
    let b = d.path("b.iso");
    std::fs::write(&b, other).unwrap();
    let a = args(&b);
    let e = Served::start(&d, &a.iter().map(String::as_str).collect::<Vec<_>>())
        .err()
        .unwrap();
    assert_eq!(
        e,
        format!(
            "blkcache: error: cache {} does not hold the first 64 KiB of {} as read now (31 of 32 \
             sectors read): 2 of them differ from the cache's; refusing to reuse it (remove it or \
             pass another --cache)\n",
            c.display(),
            b.display()
        )
    );
}

/// GNU ddrescue's "Rescued data in mapfile goes past end of input file": a rescue made by
/// ddrescue from a drive that read the disc 2 sectors larger is adopted and continued by
/// `fill` in a drive that reads it smaller, keeping every rescued byte (the cache keeps the
/// larger size); 33 sectors larger is refused.
#[test]
fn a_ddrescue_rescue_from_a_larger_drive_is_adopted_whole() {
    let d = Disc::new();
    let larger = d.drive("larger.iso", 2);
    let smaller = d.drive("smaller.iso", 0);
    let dir = d.path("rescue");
    std::fs::create_dir(&dir).unwrap();
    let o = Command::new("ddrescue")
        .args(["-q", "-b", "2048"])
        .arg(&larger)
        .arg(dir.join("image"))
        .arg(dir.join("mapfile"))
        .output()
        .expect("GNU ddrescue (Debian package gddrescue) is needed for this test");
    assert!(o.status.success(), "{}", text(&o));
    let o = d.run(&[
        "fill",
        smaller.to_str().unwrap(),
        "--sector-size",
        "2048",
        "--cache",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let size = (SECTORS + 2) * SECTOR;
    assert_eq!(meta(&dir)["size"], size);
    let m = map::load(&dir.join("mapfile")).unwrap().map;
    assert_eq!(m.size(), size);
    assert_eq!(m.stats().get(Status::Finished).bytes, size);

    let far = d.drive("far.iso", 35);
    let dir = d.path("far");
    std::fs::create_dir(&dir).unwrap();
    let o = Command::new("ddrescue")
        .args(["-q", "-b", "2048"])
        .arg(&far)
        .arg(dir.join("image"))
        .arg(dir.join("mapfile"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = d.run(&[
        "fill",
        smaller.to_str().unwrap(),
        "--sector-size",
        "2048",
        "--cache",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(
        stderr(&o),
        format!(
            "blkcache: error: cannot adopt the GNU ddrescue rescue in {}: {} is 686080 bytes but \
             the source {} has 614400 bytes; not the same media?\n",
            dir.display(),
            dir.join("mapfile").display(),
            smaller.display()
        )
    );
}
