//! Every error a user can meet is one clear line on stderr, its cause printed once: the exact
//! output of the real binary for each (no such source, permission denied, no ublk driver, a
//! cache of other media, a cache directory someone else controls).

use std::path::Path;
use std::process::{Command, Output};

fn run(cmd: &mut Command, state: &Path) -> Output {
    cmd.env("BLKCACHE_STATE_DIR", state)
        .env("RUST_LOG", "off")
        .output()
        .expect("cannot run the blkcache binary")
}

fn blkcache(args: &[&str], state: &Path) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_blkcache")).args(args),
        state,
    )
}

/// Asserts that `out` failed with exactly `line` (and a newline) on stderr.
fn expect_error(out: &Output, line: &str) {
    assert!(!out.status.success(), "succeeded: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{line}\n"));
}

fn source(dir: &Path, name: &str, sectors: usize, seed: u8) -> std::path::PathBuf {
    let data: Vec<u8> = (0..sectors * 512)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Without ublk, add falls back to the kernel's nbd driver; this host has neither.
const NO_DRIVER: &str = "blkcache: error: the kernel has no ublk driver (/dev/ublk-control; \
                         modprobe ublk_drv, Linux 6.0+ with CONFIG_BLK_DEV_UBLK) and no nbd driver \
                         (/dev/nbd0; modprobe nbd); `blkcache serve` needs neither";

#[test]
fn no_such_source() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("sr9");
    let out = blkcache(&["add", missing.to_str().unwrap()], tmp.path());
    expect_error(
        &out,
        &format!(
            "blkcache: error: cannot find source {}: No such file or directory (os error 2)",
            missing.display()
        ),
    );
}

/// As root without capabilities (`setpriv`): root's DAC override would read anything.
#[test]
fn permission_denied_on_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "secret.img", 16, 1);
    std::fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    for args in [vec!["add"], vec!["add", "--foreground"]] {
        let out = run(
            Command::new("setpriv")
                .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
                .arg(env!("CARGO_BIN_EXE_blkcache"))
                .args(&args)
                .arg(&src),
            tmp.path(),
        );
        expect_error(
            &out,
            &format!(
                "blkcache: error: cannot open {} read-only: Permission denied (os error 13)",
                src.display()
            ),
        );
    }
}

#[test]
fn no_ublk_driver() {
    assert!(
        !Path::new("/dev/ublk-control").exists(),
        "this test checks the error without a ublk driver; this machine has one"
    );
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 16, 1);
    let cache = tmp.path().join("c");
    for fg in [false, true] {
        let mut args = vec![
            "add",
            src.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ];
        if fg {
            args.push("--foreground");
        }
        expect_error(&blkcache(&args, tmp.path()), NO_DRIVER);
    }
}

#[test]
fn cache_of_other_media() {
    use blkcache::media::{fingerprint, FileMedia, MediaOptions};
    let tmp = tempfile::tempdir().unwrap();
    let a = source(tmp.path(), "a.img", 64, 1);
    let b = source(tmp.path(), "b.img", 64, 2);
    let cache = tmp.path().join("c");
    let cache_s = cache.to_str().unwrap();
    blkcache(
        &["add", a.to_str().unwrap(), "--cache", cache_s],
        tmp.path(),
    );
    let id = |p: &Path| {
        let m = FileMedia::open(p, MediaOptions::default()).unwrap();
        fingerprint(&m, p).unwrap().to_string()
    };
    for fg in [false, true] {
        let mut args = vec!["add", b.to_str().unwrap(), "--cache", cache_s];
        if fg {
            args.push("--foreground");
        }
        expect_error(
            &blkcache(&args, tmp.path()),
            &format!(
                "blkcache: error: cache {} belongs to media '{}' but the source {} is '{}'; \
                 refusing to reuse it (remove it or pass another --cache)",
                cache.display(),
                id(&a),
                b.display(),
                id(&b)
            ),
        );
    }
}

#[test]
fn cache_dir_of_another_user() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "a.img", 16, 1);
    let cache = tmp.path().join("theirs");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), None)
        .expect("this test chowns a directory to uid 65534: run it as root");
    let me = nix::unistd::geteuid().as_raw();
    expect_error(
        &blkcache(
            &[
                "add",
                src.to_str().unwrap(),
                "--cache",
                cache.to_str().unwrap(),
            ],
            tmp.path(),
        ),
        &format!(
            "blkcache: error: refusing cache directory {}: it belongs to uid 65534, not to the \
             caller (uid {me})",
            cache.display()
        ),
    );
}
