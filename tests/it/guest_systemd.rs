//! The systemd + udev guest scenarios (`tests/guest/systemd/run.sh all`): Debian 12 with real systemd 252 and
//! udev on the 6.12 guest kernel (ublk) and on Debian 12's own 6.1 (nbd), the blkcache package built with `cargo deb` (installed first if missing) and
//! installed with `dpkg -i`, discs inserted, swapped and ejected through the QEMU monitor.
//!
//! Must never pass without the guest having printed PASS for every scenario: `run.sh` exits non-zero otherwise,
//! and a guest that cannot boot is a failure that says why.

use std::path::Path;
use std::process::Command;

#[test]
fn systemd_guest_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/guest/systemd/run.sh");
    assert!(script.exists(), "missing {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .arg("all")
        .env("BLKCACHE_CARGO_DEB", "1")
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "tests/guest/systemd/run.sh all failed ({}); output above:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("SUMMARY pass=") && stdout.contains(" fail=0 "),
        "run.sh succeeded but printed no clean SUMMARY line:\n{stdout}"
    );
}
