//! The guest scenarios: real ublk in a QEMU (TCG) guest with Debian's 6.12 kernel (`tests/guest/run.sh all`).
//!
//! This host's kernel has no ublk driver, so this test boots a guest instead of skipping. It must never pass
//! without the guest having printed PASS for every scenario: `run.sh` exits non-zero otherwise, and a guest that
//! cannot boot is a failure that says why.

use std::path::Path;
use std::process::Command;

#[test]
fn guest_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/guest/run.sh");
    assert!(script.exists(), "missing {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .arg("all")
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "tests/guest/run.sh all failed ({}); guest output above:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("SUMMARY pass=") && stdout.contains(" fail=0 "),
        "run.sh succeeded but printed no clean SUMMARY line:\n{stdout}"
    );
}
