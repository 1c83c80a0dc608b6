//! `blkcache fill` against real GNU ddrescue 1.27 on the same damage maps (`-H`, blkcache's
//! `--test-mode`): the same `+`/`-` areas at the end, the image equal to the source wherever
//! `+`, no more failed reads than ddrescue (`--log-reads`), and each tool finishing what the
//! other started. ddrescue's `-H` ends the input at the damage map's last `+` block, blkcache
//! keeps the source's size: the damage maps here end with a good sector unless a test says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use blkcache::map::{self, FileMap, Mapfile, Meta, Phase, Run, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const BLKCACHE: &str = env!("CARGO_BIN_EXE_blkcache");

fn run(cmd: &mut Command) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "required tool '{name}' is missing: install GNU ddrescue (Debian/Ubuntu: apt-get install gddrescue)"
        ),
        Err(e) => panic!("cannot run {name}: {e}"),
    }
}

/// A source file and a damage map over it.
struct Disc {
    dir: tempfile::TempDir,
    source: PathBuf,
    damage: PathBuf,
    data: Vec<u8>,
}

impl Disc {
    /// `size` random bytes with `areas` bad areas of up to `max_len` bytes (not always
    /// sector-aligned); the last `sector` bytes stay good when `good_end`.
    fn new(size: u64, areas: usize, max_len: u64, seed: u64, good_end: bool) -> Disc {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = vec![0u8; size as usize];
        rng.fill(&mut data[..]);
        let source = dir.path().join("source");
        std::fs::write(&source, &data).unwrap();
        let mut dmg = Mapfile::new(size, Meta::default());
        dmg.map.set(0, size, Status::Finished);
        dmg.current_status = Phase::Finished;
        for _ in 0..areas {
            let pos = rng.gen_range(0..size);
            let len = rng.gen_range(1..=max_len);
            dmg.map.set(pos, len, Status::BadSector);
        }
        if good_end {
            dmg.map.set(size - 2048, 2048, Status::Finished);
        }
        let damage = dir.path().join("damage.map");
        map::save(&damage, &dmg).unwrap();
        Disc {
            dir,
            source,
            damage,
            data,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `ddrescue -q -H damage ARGS source NAME.img NAME.map --log-reads NAME.log`: the map and
    /// the number of (all, failed) reads.
    fn ddrescue(&self, name: &str, args: &[&str]) -> (Mapfile, u64, u64) {
        let log = self.path(&format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let o = run(Command::new("ddrescue")
            .arg("-q")
            .arg("-H")
            .arg(&self.damage)
            .args(args)
            .arg(format!("--log-reads={}", log.display()))
            .arg(&self.source)
            .arg(self.path(&format!("{name}.img")))
            .arg(self.path(&format!("{name}.map"))));
        assert!(o.status.success(), "ddrescue {args:?}: {o:?}");
        let (reads, failed) = read_log(&log);
        (
            map::load(&self.path(&format!("{name}.map"))).unwrap(),
            reads,
            failed,
        )
    }

    /// `blkcache fill --json --test-mode damage source --cache NAME ARGS`.
    fn fill(&self, name: &str, args: &[&str]) -> (Output, Option<Value>) {
        let o = run(Command::new(BLKCACHE)
            .arg("fill")
            .arg(&self.source)
            .arg("--json")
            .arg("--test-mode")
            .arg(&self.damage)
            .arg("--cache")
            .arg(self.path(name))
            .args(args));
        let v = serde_json::from_slice(&o.stdout).ok();
        (o, v)
    }

    /// Checks that the image holds the source's bytes wherever the map says `+`.
    fn check_image(&self, image: &Path, m: &FileMap) {
        let img = std::fs::read(image).unwrap();
        for r in m.iter().filter(|r| r.status == Status::Finished) {
            let (a, b) = (r.pos as usize, r.end() as usize);
            assert!(
                img.len() >= b && img[a..b] == self.data[a..b],
                "image differs from the source in the `+` area {a:#x}..{b:#x}"
            );
        }
    }
}

/// (reads, failed reads) in a ddrescue `--log-reads` file: after `#` lines, one line per read,
/// `pos size copied error_size`; a failed read has a non-zero error size.
fn read_log(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut reads = 0;
    let mut failed = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with('#') || f.len() != 4 {
            continue;
        }
        reads += 1;
        if f[3] != "0" {
            failed += 1;
        }
    }
    (reads, failed)
}

/// The runs of `m` inside `[0, size)`.
fn runs_within(m: &FileMap, size: u64) -> Vec<Run> {
    m.runs(0, size).collect()
}

fn json_u64(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

#[test]
fn fill_ends_with_the_areas_ddrescue_ends_with_and_no_more_failed_reads() {
    // (name, size, bad areas, largest bad area, seed, ddrescue args, blkcache args)
    type Scenario = (
        &'static str,
        u64,
        usize,
        u64,
        u64,
        &'static [&'static str],
        &'static [&'static str],
    );
    let scenarios: &[Scenario] = &[
        ("plain", 1 << 20, 12, 20_000, 1, &[], &[]),
        (
            "sector2048",
            2 << 20,
            10,
            40_000,
            2,
            &["-b", "2048"],
            &["--sector-size", "2048"],
        ),
        ("reverse", 1 << 20, 12, 20_000, 3, &["-R"], &["--reverse"]),
        (
            "cluster16",
            1 << 20,
            12,
            20_000,
            4,
            &["-c", "16"],
            &["--cluster-size", "16"],
        ),
        // Large enough for the skip to grow (1% of 24 MiB is above 64 KiB) past wide bad areas.
        ("skip_growth", 24 << 20, 6, 3 << 20, 5, &[], &[]),
        (
            "retries",
            1 << 20,
            12,
            20_000,
            6,
            &["-r", "2"],
            &["--retries", "2"],
        ),
        (
            "no_scrape",
            1 << 20,
            12,
            20_000,
            7,
            &["-n"],
            &["--no-scrape"],
        ),
        ("no_trim", 1 << 20, 12, 20_000, 8, &["-N"], &["--no-trim"]),
        (
            "skip_size",
            4 << 20,
            8,
            200_000,
            9,
            &["-K", "128Ki,512Ki"],
            &["--skip-size", "128k,512k"],
        ),
    ];
    for &(name, size, areas, max_len, seed, dd_args, our_args) in scenarios {
        let disc = Disc::new(size, areas, max_len, seed, true);
        let (theirs, dd_reads, dd_failed) = disc.ddrescue(name, dd_args);
        let (o, v) = disc.fill(name, our_args);
        assert!(o.status.success(), "{name}: fill failed: {o:?}");
        let v = v.unwrap_or_else(|| panic!("{name}: no JSON: {o:?}"));
        let ours = map::load(&disc.path(name).join("mapfile")).unwrap();
        assert_eq!(
            runs_within(&ours.map, size),
            runs_within(&theirs.map, size),
            "{name}: blkcache's map differs from ddrescue's\nours:\n{}\ntheirs:\n{}",
            map::format(&ours),
            map::format(&theirs)
        );
        assert_eq!(ours.map.size(), theirs.map.size(), "{name}");
        disc.check_image(&disc.path(name).join("image"), &ours.map);
        let (reads, failed) = (json_u64(&v, "media_reads"), json_u64(&v, "read_errors"));
        eprintln!("{name}: ddrescue {dd_reads} reads, {dd_failed} failed; blkcache {reads} reads, {failed} failed");
        assert!(
            failed <= dd_failed,
            "{name}: {failed} failed reads, ddrescue made {dd_failed}"
        );
        assert!(
            reads <= dd_reads,
            "{name}: {reads} reads, ddrescue made {dd_reads}"
        );
        // The summary's figures are the map's.
        let st = ours.map.stats();
        assert_eq!(json_u64(&v, "size"), size);
        assert_eq!(json_u64(&v, "rescued"), st.get(Status::Finished).bytes);
        assert_eq!(json_u64(&v, "bad_sector"), st.get(Status::BadSector).bytes);
        assert_eq!(json_u64(&v, "non_tried"), 0, "{name}");
        assert_eq!(
            json_u64(&v, "non_trimmed"),
            st.get(Status::NonTrimmed).bytes
        );
        assert_eq!(
            json_u64(&v, "non_scraped"),
            st.get(Status::NonScraped).bytes
        );
        assert!(v["seconds"].as_f64().is_some());
        assert_eq!(ours.current_status, Phase::Finished, "{name}");
        if !dd_args.contains(&"-n") && !dd_args.contains(&"-N") {
            assert_eq!(
                (ours.current_pos, ours.current_pass),
                (theirs.current_pos, theirs.current_pass),
                "{name}: status line"
            );
        }
    }
}

#[test]
fn a_damage_map_ending_in_bad_sectors_is_kept_at_the_source_size() {
    // ddrescue stops its input at the damage map's last `+` block; blkcache reads the whole
    // source, and what lies past ddrescue's end can only be bad.
    let size = 1 << 20;
    let disc = Disc::new(size, 8, 20_000, 11, false);
    let mut dmg = map::load(&disc.damage).unwrap();
    dmg.map.set(size - 30_000, 30_000, Status::BadSector);
    map::save(&disc.damage, &dmg).unwrap();
    let (theirs, _, dd_failed) = disc.ddrescue("end", &[]);
    let (o, v) = disc.fill("end", &[]);
    assert!(o.status.success(), "{o:?}");
    let ours = map::load(&disc.path("end").join("mapfile")).unwrap();
    // ddrescue's input ends inside a sector (the end of the last `+` block): it reads that
    // sector's good part, blkcache the whole sector, which holds bad bytes.
    let dd_size = theirs.map.size();
    let whole = dd_size - dd_size % 512;
    assert!(dd_size < size);
    assert_eq!(
        runs_within(&ours.map, whole),
        runs_within(&theirs.map, whole)
    );
    assert!(ours
        .map
        .runs(whole, size - whole)
        .all(|r| r.status == Status::BadSector));
    eprintln!(
        "ddrescue {dd_failed} failed reads, blkcache {}",
        v.unwrap()["read_errors"]
    );
}

#[test]
fn ddrescue_finishes_a_half_filled_blkcache_map() {
    let size = 2 << 20;
    let disc = Disc::new(size, 14, 30_000, 21, true);
    let (full, _, _) = disc.ddrescue("full", &[]);
    // Stopped by a limit in the middle of the copying phase.
    let (o, v) = disc.fill("half", &["--max-read-errors", "3"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v = v.unwrap();
    assert_eq!(v["outcome"], "stopped: too many read errors");
    let cache = disc.path("half");
    let half = map::load(&cache.join("mapfile")).unwrap();
    assert!(
        half.map.stats().get(Status::NonTried).bytes > 0,
        "not half-filled"
    );
    let o = run(Command::new("ddrescue")
        .arg("-q")
        .arg("-H")
        .arg(&disc.damage)
        .arg(&disc.source)
        .arg(cache.join("image"))
        .arg(cache.join("mapfile")));
    assert!(o.status.success(), "{o:?}");
    let done = map::load(&cache.join("mapfile")).unwrap();
    assert_eq!(done.current_status, Phase::Finished);
    assert_eq!(runs_within(&done.map, size), runs_within(&full.map, size));
    disc.check_image(&cache.join("image"), &done.map);
}

#[test]
fn fill_finishes_a_half_finished_ddrescue_map_and_adopts_its_directory() {
    let size = 2 << 20;
    let disc = Disc::new(size, 14, 30_000, 31, true);
    let (full, _, _) = disc.ddrescue("full", &[]);
    // A ddrescue rescue stopped early, in a directory with only `image` and `mapfile`.
    let dir = disc.path("theirs");
    std::fs::create_dir(&dir).unwrap();
    let o = run(Command::new("ddrescue")
        .arg("-q")
        .arg("-H")
        .arg(&disc.damage)
        .args(["-X", "4"])
        .arg(&disc.source)
        .arg(dir.join("image"))
        .arg(dir.join("mapfile")));
    assert!(dir.join("mapfile").exists(), "{o:?}");
    let before = map::load(&dir.join("mapfile")).unwrap();
    assert!(before.map.stats().get(Status::NonTried).bytes > 0);
    assert!(std::fs::metadata(dir.join("image")).unwrap().len() < size);
    let (o, v) = disc.fill("theirs", &[]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(v.unwrap()["outcome"], "finished");
    assert!(dir.join("blkcache.json").exists());
    assert_eq!(std::fs::metadata(dir.join("image")).unwrap().len(), size);
    let done = map::load(&dir.join("mapfile")).unwrap();
    assert_eq!(runs_within(&done.map, size), runs_within(&full.map, size));
    disc.check_image(&dir.join("image"), &done.map);
    // ddrescue finds nothing left to do in blkcache's finished map.
    let log = disc.path("after.log");
    let o = run(Command::new("ddrescue")
        .arg("-q")
        .arg("-H")
        .arg(&disc.damage)
        .arg(format!("--log-reads={}", log.display()))
        .arg(&disc.source)
        .arg(dir.join("image"))
        .arg(dir.join("mapfile")));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        read_log(&log),
        (0, 0),
        "ddrescue read again after blkcache finished"
    );
}

#[test]
fn a_fill_killed_at_random_moments_ends_with_the_same_map_and_image() {
    let size = 4 << 20;
    let disc = Disc::new(size, 16, 60_000, 41, true);
    let (o, _) = disc.fill("whole", &[]);
    assert!(o.status.success(), "{o:?}");
    let whole = map::load(&disc.path("whole").join("mapfile")).unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let cache = disc.path("killed");
    let mut kills = 0;
    for round in 0..200 {
        let mut child = Command::new(BLKCACHE)
            .arg("fill")
            .arg(&disc.source)
            .arg("--test-mode")
            .arg(&disc.damage)
            .arg("--test-latency")
            .arg("5")
            .arg("--mapfile-interval")
            .arg("0")
            .arg("--cache")
            .arg(&cache)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut interrupted = false;
        if kills < 20 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(10..150)));
            if child.try_wait().unwrap().is_none() {
                interrupted = round % 5 == 4;
                if interrupted {
                    // Past start-up: a Ctrl-C before blkcache set up its signal handling ends it
                    // as any program (nothing read yet, nothing to save).
                    std::thread::sleep(Duration::from_millis(300));
                }
                // Mostly kill -9; every fifth time Ctrl-C, which saves first.
                let sig = if round % 5 == 4 {
                    nix::sys::signal::Signal::SIGINT
                } else {
                    nix::sys::signal::Signal::SIGKILL
                };
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, sig);
                kills += 1;
            }
        }
        let status = child.wait().unwrap();
        if interrupted {
            // Ctrl-C: saved, then exit 130 (or it had just finished).
            assert!(
                status.code() == Some(130) || status.success(),
                "Ctrl-C: {status}"
            );
        }
        if let Ok(m) = map::load(&cache.join("mapfile")) {
            // Whatever was saved claims only bytes that are in the image.
            disc.check_image(&cache.join("image"), &m.map);
        }
        if kills >= 20 && status.success() {
            break;
        }
    }
    assert!(kills >= 20, "only {kills} kills landed");
    let done = map::load(&cache.join("mapfile")).unwrap();
    assert_eq!(done.current_status, Phase::Finished);
    assert_eq!(done.map, whole.map);
    disc.check_image(&cache.join("image"), &done.map);
    let img = |p: &Path| std::fs::read(p.join("image")).unwrap();
    assert_eq!(img(&cache), img(&disc.path("whole")));
}

#[test]
fn status_draws_a_half_filled_cache_in_80_columns_and_as_svg() {
    let disc = Disc::new(2 << 20, 14, 30_000, 51, true);
    let (o, _) = disc.fill("half", &["--max-read-errors", "3"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let svg = disc.path("map.svg");
    let o = run(Command::new(BLKCACHE)
        .arg("status")
        .arg(disc.path("half"))
        .args(["--picture", "--plain", "--svg"])
        .arg(&svg));
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let rows: Vec<&str> = text.lines().skip(1).take(16).collect();
    let cells: String = rows.iter().map(|r| &r[r.len() - 64..]).collect();
    assert_eq!(cells.len(), 1024, "{text}");
    for c in ['+', '?', '*'] {
        assert!(cells.contains(c), "no {c} cell in\n{text}");
    }
    assert!(text.contains("current status: copying"), "{text}");
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<rect").count() > 1024);
    // Piped without --picture: exactly ddrescuelog's figures, no picture.
    let o = run(Command::new(BLKCACHE).arg("status").arg(disc.path("half")));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("\n   current pos:"));
}

#[test]
fn timeout_stops_a_fill_that_reads_nothing_for_too_long() {
    // Good first 1 MiB, then nothing readable: with 20 ms per read, no read succeeds for more
    // than a second, and ddrescue's -T stops it.
    let size = 8u64 << 20;
    let disc = Disc::new(size, 0, 1, 61, true);
    let mut dmg = map::load(&disc.damage).unwrap();
    dmg.map
        .set(1 << 20, size - (1 << 20) - 2048, Status::BadSector);
    map::save(&disc.damage, &dmg).unwrap();
    let (o, v) = disc.fill(
        "slow",
        &["--timeout", "1", "--test-latency", "20", "--skip-size", "0"],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let v = v.unwrap();
    assert_eq!(v["outcome"], "stopped: timeout expired");
    let left: u64 = ["non_tried", "non_trimmed", "non_scraped"]
        .iter()
        .map(|k| json_u64(&v, k))
        .sum();
    assert!(left > 0, "nothing left to do: {v}");
    let m = map::load(&disc.path("slow").join("mapfile")).unwrap();
    assert_ne!(
        m.current_status,
        Phase::Finished,
        "the map says where to continue"
    );
}
