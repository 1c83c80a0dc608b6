//! What a cache on disk may be: private to its owner (0700 directories, 0600 files, whatever the
//! umask), in a directory no one else owns or can write, with no file reached through a link; and
//! never half-made. Through the real binary, as a user runs it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `blkcache ARGS` run by `sh` with umask 022 (a root shell's usual one).
fn blkcache_umask022(args: &[&str], state: &Path) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_blkcache"))
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn source(dir: &Path, name: &str, sectors: usize, seed: u8) -> PathBuf {
    let data: Vec<u8> = (0..sectors * 512)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// The permission bits of `p` (not followed), in octal as `stat -c %a` prints them.
fn mode(p: &Path) -> String {
    let m = std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode();
    format!("{:o}", m & 0o7777)
}

/// The only directory under `state`: the default cache of the one media added.
fn only_cache(state: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn caches_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 64, 1);
    let state = tmp.path().join("state");
    // Fails to serve without a ublk driver, after making the cache and its log.
    let out = blkcache_umask022(&["add", src.to_str().unwrap()], &state);
    let cache = only_cache(&state);
    assert_eq!(mode(&state), "700", "state dir; {}", text(&out));
    assert_eq!(mode(&cache), "700", "cache dir; {}", text(&out));
    for f in ["image", "mapfile", "blkcache.json", "daemon.log"] {
        assert_eq!(mode(&cache.join(f)), "600", "{f}; {}", text(&out));
    }
    // A map saved again (as the daemon does) stays private.
    let explicit = tmp.path().join("explicit/cache");
    let out = blkcache_umask022(
        &[
            "add",
            src.to_str().unwrap(),
            "--cache",
            explicit.to_str().unwrap(),
        ],
        &state,
    );
    assert_eq!(mode(&explicit), "700", "{}", text(&out));
    assert_eq!(mode(&tmp.path().join("explicit")), "700", "{}", text(&out));
    for f in ["image", "mapfile", "blkcache.json", "daemon.log"] {
        assert_eq!(mode(&explicit.join(f)), "600", "{f}; {}", text(&out));
    }
}

#[test]
fn a_dir_others_can_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 64, 1);
    let cache = tmp.path().join("shared");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = blkcache_umask022(
        &[
            "add",
            src.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "blkcache: error: refusing cache directory {}: other users can write it (mode 1777; chmod go-w)\n",
            cache.display()
        )
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "files were made"
    );

    // The state directory too.
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = blkcache_umask022(&["add", src.to_str().unwrap()], &state);
    assert_eq!(
        stderr(&out),
        format!(
            "blkcache: error: refusing state directory {}: other users can write it (mode 777; chmod go-w)\n",
            state.display()
        )
    );
}

/// Needs root (as CI runs): the directory is given to uid 65534 (nobody).
#[test]
fn a_dir_of_another_user_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 64, 1);
    let cache = tmp.path().join("theirs");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534))
        .expect("this test chowns a directory to uid 65534: run it as root");
    let me = nix::unistd::geteuid().as_raw();
    let out = blkcache_umask022(
        &[
            "add",
            src.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(
        stderr(&out),
        format!(
            "blkcache: error: refusing cache directory {}: it belongs to uid 65534, not to the caller (uid {me})\n",
            cache.display()
        )
    );
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        0,
        "files were made"
    );
}

/// A cache whose image or mapfile is a link to somewhere else is refused, and the link's target
/// is neither read as the cache nor written.
#[test]
fn linked_files_in_a_cache_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 64, 1);
    let cache = tmp.path().join("cache");
    let cache_s = cache.to_str().unwrap();
    blkcache_umask022(
        &["add", src.to_str().unwrap(), "--cache", cache_s],
        tmp.path(),
    );
    for f in ["image", "mapfile"] {
        let elsewhere = tmp.path().join(format!("elsewhere-{f}"));
        std::fs::rename(cache.join(f), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, cache.join(f)).unwrap();
        let before = std::fs::read(&elsewhere).unwrap();
        for args in [
            vec!["add", src.to_str().unwrap(), "--cache", cache_s],
            vec!["add", "--offline", cache_s],
        ] {
            let out = blkcache_umask022(&args, tmp.path());
            assert_eq!(
                stderr(&out),
                format!(
                    "blkcache: error: refusing {}: it is a symbolic link or not a regular file\n",
                    cache.join(f).display()
                ),
                "{args:?}"
            );
        }
        assert_eq!(std::fs::read(&elsewhere).unwrap(), before);
        std::fs::remove_file(cache.join(f)).unwrap();
        std::fs::rename(&elsewhere, cache.join(f)).unwrap();
    }
}

/// A planted `blkcache.json.tmp` (the old fixed temp name) or any other link never makes a
/// cache's creation write through it.
#[test]
fn a_planted_temp_link_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 64, 1);
    let target = tmp.path().join("target");
    std::fs::write(&target, b"precious").unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    for name in ["blkcache.json.tmp", ".mapfile.tmp", "daemon.log"] {
        std::os::unix::fs::symlink(&target, cache.join(name)).unwrap();
    }
    let out = blkcache_umask022(
        &[
            "add",
            src.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"precious",
        "{}",
        text(&out)
    );
}

/// Killing `add` at any moment of a first-time cache creation (Ctrl-C, a crash) never leaves a
/// half-made cache that later `add`s refuse: the cache directory appears complete or not at all,
/// and the next `add` makes or reuses it.
#[test]
fn an_interrupted_creation_leaves_no_half_made_cache() {
    use std::time::Instant;
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 2048, 5);
    let caches = tmp.path().join("caches");
    std::fs::create_dir(&caches).unwrap();
    let add = |cache: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blkcache"));
        c.args(["add", "--foreground", "--cache"])
            .arg(cache)
            .arg(&src)
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    // How long a whole creation takes here: kills are spread over it.
    let t0 = Instant::now();
    let out = add(&caches.join("timing")).output().unwrap();
    let whole = t0.elapsed();
    let no_driver = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(no_driver.contains("no ublk driver"), "{no_driver}");

    let runs = 40u32;
    let mut mid_creation = 0;
    for i in 0..runs {
        let cache = caches.join(format!("c{i}"));
        let mut child = add(&cache).spawn().unwrap();
        std::thread::sleep(whole * i / runs);
        let _ = child.kill();
        let _ = child.wait();
        if let Ok(rd) = std::fs::read_dir(&cache) {
            // An atomic rewrite (the metadata's drive record, the map) killed midway may leave
            // its temporary file: the cache itself is whole.
            let mut names: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !(n.starts_with('.') && n.contains(".tmp")))
                .collect();
            names.sort();
            assert_eq!(names, ["blkcache.json", "image", "mapfile"], "kill {i}");
        }
        let prefix = format!(".c{i}.new-");
        mid_creation += std::fs::read_dir(&caches)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(&prefix)
            })
            .count();
        // The next add gets past the cache (and stops at the missing driver).
        let out = add(&cache).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            no_driver,
            "add after kill {i}"
        );
    }
    eprintln!("{mid_creation} of {runs} kills landed during a creation (creation takes {whole:?})");

    // What such a kill leaves, made by hand: a staging directory beside the cache holding a
    // partial cache. It is no obstacle.
    let cache = caches.join("planted");
    let staging = caches.join(".planted.new-XXXXXX");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("image"), b"partial").unwrap();
    let out = add(&cache).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), no_driver);
    assert!(cache.join("blkcache.json").exists());
}
