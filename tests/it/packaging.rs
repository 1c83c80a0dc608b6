//! `make install` (PREFIX, DESTDIR) installs what the Debian package installs: the binary under PREFIX, the unit
//! and the udev rules where systemd and udev read them, each naming the installed binary; `make uninstall`
//! removes them. (The package itself is tested in the systemd guest: `tests/guest/systemd/`.)

use std::path::Path;
use std::process::Command;

fn make(root: &Path, args: &[String]) {
    let out = Command::new("make")
        .arg("-s")
        .args(args)
        .current_dir(root)
        .output()
        .expect("cannot run make");
    assert!(
        out.status.success(),
        "make {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn make_install_uses_prefix_and_destdir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("blkcache-built");
    std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
    let dest = tmp.path().join("stage");
    let args = |target: &str| {
        vec![
            target.to_string(),
            format!("DESTDIR={}", dest.display()),
            "PREFIX=/opt/blkcache".to_string(),
            format!("BIN={}", bin.display()),
        ]
    };
    make(root, &args("install"));

    let installed = dest.join("opt/blkcache/bin/blkcache");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&installed.metadata().unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755, "{}", installed.display());
    let unit = std::fs::read_to_string(dest.join("lib/systemd/system/blkcache@.service")).unwrap();
    assert!(
        unit.contains("\nExecStart=/opt/blkcache/bin/blkcache add --foreground "),
        "the unit does not run the installed binary:\n{unit}"
    );
    let rules = std::fs::read_to_string(dest.join("lib/udev/rules.d/61-blkcache.rules")).unwrap();
    assert!(
        rules.contains("IMPORT{program}=\"/opt/blkcache/bin/blkcache udev-env %k\""),
        "the rules do not run the installed binary:\n{rules}"
    );
    assert!(
        !unit.contains("/usr/bin/blkcache") && !rules.contains("/usr/bin/blkcache"),
        "a path of the Debian package's binary is left"
    );

    make(root, &args("uninstall"));
    for f in [
        "opt/blkcache/bin/blkcache",
        "lib/systemd/system/blkcache@.service",
        "lib/udev/rules.d/61-blkcache.rules",
    ] {
        assert!(!dest.join(f).exists(), "make uninstall left {f}");
    }
}
