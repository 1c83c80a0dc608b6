//! Golden tests of the mapfile format and `blkcache status` against real GNU ddrescue 1.27:
//! ddrescue rescues test images in test mode (`-H DAMAGEMAP`) with varied and interrupted runs,
//! and blkcache's reading of every mapfile it writes must agree with `ddrescuelog -t`; a mapfile
//! loaded and saved by blkcache must be the same map to `ddrescuelog -p` and to ddrescue itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use blkcache::map::{self, FileMap, Mapfile, Meta, Phase, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const BLKCACHE: &str = env!("CARGO_BIN_EXE_blkcache");

/// Runs a tool, failing the test with a clear message if it is not installed.
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ddrescuelog_t(map: &Path) -> String {
    let o = run(Command::new("ddrescuelog").arg("-t").arg(map));
    assert!(
        o.status.success(),
        "ddrescuelog -t {}: {o:?}",
        map.display()
    );
    stdout(&o)
}

fn blkcache_status(map: &Path, json: bool) -> Output {
    let mut c = Command::new(BLKCACHE);
    c.arg("status").arg(map);
    if json {
        c.arg("--json");
    }
    run(&mut c)
}

/// blkcache's text report: ddrescuelog's lines, then the pass line.
fn status_text(map: &Path) -> (String, String) {
    let o = blkcache_status(map, false);
    assert!(
        o.status.success(),
        "blkcache status {}: {o:?}",
        map.display()
    );
    let text = stdout(&o);
    let (body, pass) = text
        .rsplit_once("  current pass: ")
        .unwrap_or_else(|| panic!("no pass line in:\n{text}"));
    (body.to_string(), pass.trim().to_string())
}

/// Reads the figures back out of `ddrescuelog -t` text: (label, bytes if exact, areas).
/// Sizes above 999,999 bytes are printed rounded with an SI prefix ("4194 kB"): `None`.
fn figures_from_ddrescuelog(text: &str) -> Vec<(String, Option<u64>, u64)> {
    text.lines()
        .filter_map(|l| {
            let (label, rest) = l.split_once(':')?;
            let (size, areas) = rest.split_once(",  in ")?;
            let exact = size.trim().strip_suffix(" B").and_then(|n| n.parse().ok());
            let areas = areas.split_whitespace().next()?.parse().ok()?;
            Some((label.trim().to_string(), exact, areas))
        })
        .collect()
}

/// Checks blkcache against ddrescuelog for one mapfile: text identical, JSON exact.
fn check_against_ddrescuelog(map_path: &Path) {
    let want = ddrescuelog_t(map_path);
    let (body, pass) = status_text(map_path);
    assert_eq!(
        body,
        want,
        "blkcache status vs ddrescuelog -t for {}",
        map_path.display()
    );

    let m = map::load(map_path).unwrap();
    let expected_pass = m.current_pass.map_or("none".to_string(), |p| p.to_string());
    assert_eq!(pass, expected_pass);

    let o = blkcache_status(map_path, true);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "bad_sector",
            "current_pass",
            "current_pos",
            "current_status",
            "non_scraped",
            "non_tried",
            "non_trimmed",
            "rescued",
            "size"
        ]
    );
    // Status line, as in the file.
    let text = std::fs::read_to_string(map_path).unwrap();
    let status_line = text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    let toks: Vec<&str> = status_line.split_whitespace().collect();
    let pos = u64::from_str_radix(toks[0].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(v["current_pos"], pos);
    assert_eq!(v["current_status"], toks[1]);
    match toks.get(2) {
        Some(p) => assert_eq!(v["current_pass"], p.parse::<u64>().unwrap()),
        None => assert!(v["current_pass"].is_null()),
    }
    // Exact figures, from ddrescuelog's own text (exact for sizes below 1,000,000 bytes).
    let figs = figures_from_ddrescuelog(&want);
    let key = |label: &str| match label {
        "mapfile extent" => "size",
        "non-tried" => "non_tried",
        "rescued" => "rescued",
        "non-trimmed" => "non_trimmed",
        "non-scraped" => "non_scraped",
        "bad-sector" => "bad_sector",
        other => panic!("unexpected ddrescuelog line {other}"),
    };
    assert_eq!(figs.len(), 6, "{want}");
    for (label, bytes, areas) in figs {
        let k = key(&label);
        if let Some(bytes) = bytes {
            assert_eq!(
                v[k]["bytes"].as_u64().or(v[k].as_u64()),
                Some(bytes),
                "{label}"
            );
        }
        match k {
            "size" => {
                let total: u64 = [
                    "non_tried",
                    "rescued",
                    "non_trimmed",
                    "non_scraped",
                    "bad_sector",
                ]
                .iter()
                .map(|k| v[*k]["areas"].as_u64().unwrap())
                .sum();
                assert_eq!(total, areas, "{label} areas");
            }
            _ => assert_eq!(v[k]["areas"], areas, "{label} areas"),
        }
    }
}

/// Loads with blkcache, saves with blkcache, and checks ddrescuelog sees the same map.
fn check_round_trip(map_path: &Path, dir: &Path) -> PathBuf {
    let m = map::load(map_path).unwrap();
    let saved = dir.join(format!(
        "{}.blkcache",
        map_path.file_name().unwrap().to_string_lossy()
    ));
    map::save(&saved, &m).unwrap();
    let o = run(Command::new("ddrescuelog")
        .arg("-p")
        .arg(map_path)
        .arg(&saved));
    assert!(
        o.status.success(),
        "ddrescuelog -p {} {}: {o:?}",
        map_path.display(),
        saved.display()
    );
    assert_eq!(ddrescuelog_t(&saved), ddrescuelog_t(map_path));
    let back = map::load(&saved).unwrap();
    assert_eq!(back.map, m.map);
    assert_eq!(
        (back.current_pos, back.current_status, back.current_pass),
        (m.current_pos, m.current_status, m.current_pass)
    );
    saved
}

/// A test image and a damage map (ddrescue-format map of good `+` and bad `-` areas).
struct Setup {
    dir: tempfile::TempDir,
    image: PathBuf,
    damage: PathBuf,
}

fn setup(size: u64, bad_areas: usize, seed: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size as usize];
    rng.fill(&mut data[..]);
    let image = dir.path().join("image");
    std::fs::write(&image, &data).unwrap();
    let mut dmg = Mapfile::new(size, Meta::default());
    dmg.map.set(0, size, Status::Finished);
    dmg.current_status = Phase::Finished;
    for _ in 0..bad_areas {
        // Bad areas of 1 to 64 sectors, not always sector-aligned, to exercise trimming.
        let pos = rng.gen_range(0..size);
        let len = rng.gen_range(1..=64) * 512 + if rng.gen_bool(0.2) { 100 } else { 0 };
        dmg.map.set(pos, len, Status::BadSector);
    }
    let damage = dir.path().join("damage.map");
    map::save(&damage, &dmg).unwrap();
    Setup { dir, image, damage }
}

/// Runs `ddrescue -q -H damage ARGS image out mapfile`; returns the mapfile (which must exist).
fn ddrescue(s: &Setup, name: &str, args: &[&str]) -> PathBuf {
    let out = s.dir.path().join(format!("{name}.img"));
    let mapfile = s.dir.path().join(format!("{name}.map"));
    let o = run(Command::new("ddrescue")
        .arg("-q")
        .arg("-H")
        .arg(&s.damage)
        .args(args)
        .arg(&s.image)
        .arg(&out)
        .arg(&mapfile));
    // Interrupted runs (-X, -e) exit non-zero on purpose; the mapfile must exist either way.
    assert!(
        mapfile.exists(),
        "ddrescue {args:?} wrote no mapfile: {o:?}"
    );
    mapfile
}

#[test]
fn ddrescue_runs_read_the_same_in_blkcache_and_ddrescuelog() {
    let scenarios: &[(&str, &[&str])] = &[
        ("full", &[]),
        ("no_scrape", &["-n"]),
        ("no_trim", &["-N"]),
        ("copy_only", &["-n", "-N"]),
        ("reverse", &["-R"]),
        ("sector2048", &["-b", "2048", "-c", "16"]),
        ("domain", &["-i", "0x10000", "-s", "0x20000"]),
        ("max_errors_1", &["-X", "1", "-c", "8"]),
        ("max_errors_3_reverse", &["-X", "3", "-R"]),
        ("max_bad_areas", &["-e", "2", "-n"]),
        ("retry_passes", &["-r", "2"]),
        ("copy_pass_1", &["--cpass=1", "-n", "-N"]),
        ("unidirectional", &["-u", "-K", "64Ki,256Ki"]),
    ];
    let s = setup(768 * 1024, 24, 1);
    let mut seen_phases = std::collections::BTreeSet::new();
    for (name, args) in scenarios {
        let mapfile = ddrescue(&s, name, args);
        check_against_ddrescuelog(&mapfile);
        check_round_trip(&mapfile, s.dir.path());
        seen_phases.insert(map::load(&mapfile).unwrap().current_status.as_char());
    }
    // The runs really were varied: interrupted in several phases and finished in others.
    assert!(seen_phases.len() >= 3, "phases seen: {seen_phases:?}");
}

#[test]
fn resumed_runs_read_the_same_at_every_step() {
    let s = setup(512 * 1024, 30, 2);
    // Each step resumes the previous mapfile; between steps blkcache rewrites it, and ddrescue
    // must carry on from blkcache's file exactly as from its own.
    let steps: &[&[&str]] = &[&["-X", "1"], &["-X", "2", "-N"], &["-X", "3"], &["-n"], &[]];
    let ours = s.dir.path().join("ours.map");
    let theirs = s.dir.path().join("theirs.map");
    for (i, args) in steps.iter().enumerate() {
        for (mapfile, out) in [(&ours, "ours.img"), (&theirs, "theirs.img")] {
            let o = run(Command::new("ddrescue")
                .arg("-q")
                .arg("-H")
                .arg(&s.damage)
                .args(*args)
                .arg(&s.image)
                .arg(s.dir.path().join(out))
                .arg(mapfile));
            assert!(mapfile.exists(), "step {i}: {o:?}");
        }
        check_against_ddrescuelog(&ours);
        let o = run(Command::new("ddrescuelog")
            .arg("-p")
            .arg(&ours)
            .arg(&theirs));
        assert!(o.status.success(), "step {i}: maps diverged: {o:?}");
        // blkcache rewrites the map ddrescue will resume from.
        let m = map::load(&ours).unwrap();
        map::save(&ours, &m).unwrap();
    }
    let done = map::load(&ours).unwrap();
    assert_eq!(done.current_status, Phase::Finished);
    assert_eq!(
        std::fs::read(s.dir.path().join("ours.img")).unwrap(),
        std::fs::read(s.dir.path().join("theirs.img")).unwrap()
    );
}

#[test]
fn interrupted_by_a_signal_reads_the_same() {
    let s = setup(4 * 1024 * 1024, 40, 3);
    let mapfile = s.dir.path().join("killed.map");
    // A slow rescue (max 1 MB/s) stopped with SIGINT: ddrescue writes its map and exits wherever
    // it was. Whatever state that is, blkcache must read it as ddrescuelog does.
    let mut child = Command::new("ddrescue")
        .arg("-q")
        .arg("-H")
        .arg(&s.damage)
        .args(["-Z", "1000000", "--mapfile-interval=1"])
        .arg(&s.image)
        .arg(s.dir.path().join("killed.img"))
        .arg(&mapfile)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("required tool 'ddrescue' is missing or broken: {e}"));
    // Wait for the first mapfile save, then interrupt.
    while !mapfile.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("ddrescue ended before writing a mapfile: {st}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    child.wait().unwrap();
    check_against_ddrescuelog(&mapfile);
    check_round_trip(&mapfile, s.dir.path());
}

#[test]
fn large_and_random_maps_report_like_ddrescuelog() {
    // Sizes past 1,000,000 bytes take ddrescue's SI prefixes and rounded percentages.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    for i in 0..40 {
        let size: u64 = match i % 4 {
            0 => rng.gen_range(1..1_000_000),
            1 => rng.gen_range(1..10_000_000_000),
            2 => rng.gen_range(1..(1u64 << 50)),
            _ => 1 << rng.gen_range(10..62),
        };
        let mut m = Mapfile::new(size, Meta::default());
        for _ in 0..rng.gen_range(0..60) {
            let pos = rng.gen_range(0..size);
            let len = rng.gen_range(1..=size / 4 + 1);
            let st = Status::ALL[rng.gen_range(0..5)];
            m.map.set(pos, len, st);
        }
        m.current_pos = rng.gen_range(0..size);
        m.current_status = [
            Phase::NonTried,
            Phase::NonTrimmed,
            Phase::NonScraped,
            Phase::BadSector,
            Phase::Filtered,
            Phase::Generating,
            Phase::Finished,
        ][rng.gen_range(0..7)];
        m.current_pass = if i % 5 == 0 {
            None
        } else {
            Some(rng.gen_range(1..6))
        };
        let path = dir.path().join(format!("random{i}.map"));
        map::save(&path, &m).unwrap();
        let (body, _) = status_text(&path);
        assert_eq!(body, ddrescuelog_t(&path), "map {i}:\n{}", map::format(&m));
        // JSON is exact even where the text rounds.
        let v: Value = serde_json::from_slice(&blkcache_status(&path, true).stdout).unwrap();
        assert_eq!(v["size"], size);
        let st = m.map.stats();
        assert_eq!(v["rescued"]["bytes"], st.get(Status::Finished).bytes);
        assert_eq!(v["bad_sector"]["areas"], st.get(Status::BadSector).areas);
    }
}

#[test]
fn percentage_rounding_edges_match_ddrescuelog() {
    // Exact halves round up; carries run through the decimal point and into a new digit.
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(u64, u64)] = &[
        (800, 1),         // 0.125%
        (20000, 19999),   // 99.995%
        (20000, 1),       // 0.005%
        (200000, 1),      // 0.0005%
        (3, 1),           // 33.333%
        (3, 2),           // 66.666%
        (1600, 1599),     // 99.9375%
        (400000, 399998), // 99.9995%
    ];
    for (i, &(size, bad)) in cases.iter().enumerate() {
        let mut m = Mapfile::new(size, Meta::default());
        m.map.set(0, bad, Status::BadSector);
        let path = dir.path().join(format!("edge{i}.map"));
        map::save(&path, &m).unwrap();
        let (body, _) = status_text(&path);
        assert_eq!(body, ddrescuelog_t(&path), "{size} {bad}");
    }
}

#[test]
fn pre_1_22_mapfile_without_pass_reads_like_ddrescuelog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.map");
    std::fs::write(
        &path,
        "# Rescue Logfile. Created by GNU ddrescue version 1.19\n\
         # current_pos  current_status\n\
         0x00020000     /\n\
         #      pos        size  status\n\
         0x00000000  0x00010000  +\n\
         0x00010000  0x00000200  -\n\
         0x00010200  0x00001E00  /\n\
         0x00012000  0x0000E000  ?\n",
    )
    .unwrap();
    check_against_ddrescuelog(&path);
    let saved = check_round_trip(&path, dir.path());
    // Still no pass when written back.
    assert!(map::load(&saved).unwrap().current_pass.is_none());
}

#[test]
fn malformed_mapfiles_give_one_line_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, usize, &str)] = &[
        (
            "0 ? 1\n0 0x100 +\n0x80 0x100 -\n",
            3,
            "overlaps the previous one",
        ),
        ("0 ? 1\n0 0x100 +\n0x200 0x100 -\n", 3, "gap before block"),
        ("# c\n0 ? 1\n0 0x100 Q\n", 3, "unknown block status 'Q'"),
        ("0 ? 1\n0 0x100 +\n0x100 0 -\n", 3, "block of size 0"),
        ("0 ? 1\n0 0x100 + trailing junk\n", 2, "bad block line"),
        ("0 ? 1\nhello world !\n", 2, "bad number 'hello'"),
        ("0 Z 1\n", 1, "unknown current_status 'Z'"),
        ("0 ? 1 2 3\n", 1, "bad status line"),
        ("\n\n", 3, "no status line"),
        (
            "0 ? 1\n0x1000 0x100 +\n",
            2,
            "first block starts at 0x1000, not at 0",
        ),
    ];
    for (i, (text, line, what)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.map"));
        std::fs::write(&path, text).unwrap();
        let o = blkcache_status(&path, false);
        assert!(!o.status.success(), "case {i} accepted");
        assert!(o.stdout.is_empty(), "case {i} printed {:?}", stdout(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let prefix = format!("blkcache: error: {}:{line}: ", path.display());
        assert!(
            err.starts_with(&prefix) && err.contains(what) && err.lines().count() == 1,
            "case {i}: {err:?} (want {prefix}...{what})"
        );
    }
    // Over-long data lines (ddrescue would silently truncate them).
    let path = dir.path().join("long.map");
    std::fs::write(&path, format!("0 ? 1\n0 {}1 +\n", "0".repeat(300))).unwrap();
    let o = blkcache_status(&path, true);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains(":2: line too long"));
    // A missing file names the path.
    let o = blkcache_status(&dir.path().join("nope.map"), false);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("blkcache: error: cannot read mapfile ") && err.contains("nope.map"));
}

#[test]
fn filemap_agrees_with_ddrescuelog_block_lists() {
    // -l+ / -l- list sector numbers per status; blkcache's map of a ddrescue run must list the same.
    let s = setup(256 * 1024, 12, 5);
    let mapfile = ddrescue(&s, "lists", &["-X", "4"]);
    let m: FileMap = map::load(&mapfile).unwrap().map;
    for st in Status::ALL {
        let o = run(Command::new("ddrescuelog")
            .arg(format!("-l{}", st.as_char()))
            .arg(&mapfile));
        assert!(o.status.success(), "{o:?}");
        let theirs: Vec<u64> = stdout(&o)
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let mut ours = Vec::new();
        for r in m.iter().filter(|r| r.status == st) {
            ours.extend(r.pos / 512..r.end().div_ceil(512));
        }
        ours.dedup();
        assert_eq!(ours, theirs, "status {}", st.as_char());
    }
}
