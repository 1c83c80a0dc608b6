//! The `add`/`list`/`del`/`recover` commands on the host, through the real binary: cache
//! creation and reuse, refusals naming both values, and a start that fails reporting instead of
//! hanging. Serving itself needs the kernel's ublk driver: that is the guest scenarios' job
//! (`guest.rs`); here, with no driver, `add` must fail saying so; with one, it must serve.

use std::path::Path;
use std::process::{Command, Output};

fn blkcache(args: &[&str], state: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blkcache"))
        .args(args)
        .env("BLKCACHE_STATE_DIR", state)
        .env("RUST_LOG", "warn")
        .output()
        .expect("cannot run the blkcache binary")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ublk_present() -> bool {
    Path::new("/dev/ublk-control").exists()
}

/// For tests of what happens without the driver (this project's hosts and CI have none).
fn expect_no_ublk_driver() {
    assert!(
        !ublk_present(),
        "this test checks behaviour without the ublk driver, but /dev/ublk-control exists; \
         serving is tested in the guest (tests/guest)"
    );
}

/// A file of `sectors` 512-byte sectors with varied bytes.
fn source(dir: &Path, name: &str, sectors: usize, seed: u8) -> std::path::PathBuf {
    let data: Vec<u8> = (0..sectors * 512)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn add_makes_the_cache_and_reports_a_failed_start() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 64, 1);
    let cache = tmp.path().join("cache");
    let out = blkcache(
        &[
            "add",
            src.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        tmp.path(),
    );
    for f in ["image", "mapfile", "blkcache.json"] {
        assert!(
            cache.join(f).exists(),
            "no {f} in the cache; {}",
            text(&out)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("blkcache.json")).unwrap()).unwrap();
    assert_eq!(meta["size"], 64 * 512);
    assert_eq!(meta["sector_size"], 512);
    assert_eq!(
        meta["source"],
        src.canonicalize().unwrap().to_str().unwrap()
    );
    // All 32 KiB are the head: the identity read's bytes are in the cache, saved.
    let map = std::fs::read_to_string(cache.join("mapfile")).unwrap();
    assert!(
        map.lines()
            .any(|l| l.split_whitespace().eq(["0x00000000", "0x00008000", "+"])),
        "{map}"
    );
    assert_eq!(
        std::fs::read(cache.join("image")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    if ublk_present() {
        assert!(out.status.success(), "{}", text(&out));
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let del = blkcache(&["del", &dev], tmp.path());
        assert!(del.status.success(), "{}", text(&del));
    } else {
        // The daemon reported its failure through the pipe; its log has it too.
        assert!(!out.status.success(), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("ublk driver"), "{}", text(&out));
        let log = std::fs::read_to_string(cache.join("daemon.log")).unwrap();
        assert!(log.contains("ublk driver"), "log: {log}");
    }
}

#[test]
fn foreground_without_driver_fails_at_once() {
    expect_no_ublk_driver();
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 8, 2);
    let cache = tmp.path().join("c");
    let out = blkcache(
        &[
            "add",
            src.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--foreground",
        ],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ublk driver"),
        "{}",
        text(&out)
    );
}

#[test]
fn cache_of_other_media_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let a = source(tmp.path(), "a.img", 64, 1);
    let b = source(tmp.path(), "b.img", 128, 1);
    let c = source(tmp.path(), "c.img", 64, 9);
    let cache = tmp.path().join("cache");
    let cache_s = cache.to_str().unwrap();
    let first = blkcache(
        &["add", a.to_str().unwrap(), "--cache", cache_s],
        tmp.path(),
    );
    if ublk_present() {
        let dev = String::from_utf8_lossy(&first.stdout).trim().to_string();
        blkcache(&["del", &dev], tmp.path());
    }
    let mapfile_before = std::fs::read(cache.join("mapfile")).unwrap();

    let out = blkcache(
        &["add", b.to_str().unwrap(), "--cache", cache_s],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("32768") && err.contains("65536") && err.contains("refusing"),
        "{}",
        text(&out)
    );

    let out = blkcache(
        &["add", c.to_str().unwrap(), "--cache", cache_s],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let identity = |p: &Path| {
        use blkcache::media::{fingerprint, FileMedia, MediaOptions};
        let m = FileMedia::open(p, MediaOptions::default()).unwrap();
        fingerprint(&m, p).unwrap().to_string()
    };
    let (id_a, id_c) = (identity(&a), identity(&c));
    assert_ne!(id_a, id_c);
    assert!(
        err.contains(&format!("belongs to media '{id_a}'"))
            && err.contains(&format!("{} is '{id_c}'", c.display()))
            && err.contains("refusing"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(cache.join("mapfile")).unwrap(),
        mapfile_before
    );
}

#[test]
fn default_cache_dir_is_per_media_under_the_state_dir() {
    expect_no_ublk_driver();
    let tmp = tempfile::tempdir().unwrap();
    let a = source(tmp.path(), "a.img", 16, 3);
    let b = source(tmp.path(), "b.img", 16, 4);
    let state = tmp.path().join("state");
    for s in [&a, &a, &b] {
        // Fails to serve (no driver), after choosing and creating the cache.
        blkcache(&["add", s.to_str().unwrap()], &state);
    }
    let root = state;
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("no state dir {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "one cache per media: {dirs:?}");
    for d in &dirs {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("blkcache.json")).unwrap()).unwrap();
        assert_eq!(
            d.file_name().unwrap().to_str().unwrap(),
            meta["identity"].as_str().unwrap()
        );
    }
}

#[test]
fn offline_needs_an_existing_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let out = blkcache(
        &[
            "add",
            "--offline",
            tmp.path().join("nope").to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a blkcache cache"),
        "{}",
        text(&out)
    );
}

#[test]
fn list_del_recover_without_devices() {
    expect_no_ublk_driver();
    let tmp = tempfile::tempdir().unwrap();
    let out = blkcache(&["list", "--json"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]));

    let out = blkcache(&["del", "/dev/ublkb7"], tmp.path());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no blkcache device for /dev/ublkb7"),
        "{}",
        text(&out)
    );

    let out = blkcache(&["recover"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    let out = blkcache(&["recover", "3"], tmp.path());
    assert!(!out.status.success(), "{}", text(&out));
}

/// Media whose first 64 KiB does not read whole, and matches no cache by the sectors that did
/// read (here there is none), must have its cache named by hand: the error says so.
#[test]
fn unreadable_start_needs_an_explicit_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 256, 3);
    let damage = tmp.path().join("damage.map");
    std::fs::write(
        &damage,
        "0x00000000     +               1\n0x00000000  0x00000200  -\n0x00000200  0x0001FE00  +\n",
    )
    .unwrap();
    let state = tmp.path().join("state");
    let out = blkcache(
        &[
            "add",
            src.to_str().unwrap(),
            "--test-mode",
            damage.to_str().unwrap(),
        ],
        &state,
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "blkcache: error: the first 64 KiB of {} did not read whole (127 of 128 sectors read), \
         and no cache in {} holds those sectors and the volume descriptor at byte 32768, so \
         blkcache cannot tell which disc this is; pass --cache DIR: this disc's cache if it has \
         one, or a new directory\n",
        src.canonicalize().unwrap().display(),
        state.display()
    );
    assert!(err.ends_with(&expected), "{}", text(&out));
    let made: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "a cache was made: {made:?}");
}

/// `add` identifies the source once: one read of its first 64 KiB in the whole process tree
/// (caller and daemon), seen in the system calls under `strace -f`.
#[test]
fn add_reads_the_source_head_once() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 256, 7);
    let trace = tmp.path().join("trace");
    let out = Command::new("strace")
        .args(["-f", "-y", "-e", "trace=pread64,read", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_blkcache"))
        .arg("add")
        .arg(&src)
        .arg("--cache")
        .arg(tmp.path().join("cache"))
        .env("BLKCACHE_STATE_DIR", tmp.path())
        .env("RUST_LOG", "off")
        .output()
        .expect("strace is needed for this test (Debian package strace)");
    let calls = std::fs::read_to_string(&trace).unwrap();
    let head_reads: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains("a.img>") && l.contains(", 65536, 0)"))
        .collect();
    assert_eq!(
        head_reads.len(),
        1,
        "{}\n{}",
        text(&out),
        head_reads.join("\n")
    );
}
