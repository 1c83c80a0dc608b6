//! The guest scenarios: real kernels in QEMU (TCG) guests. Debian's 6.12 kernel runs every scenario of
//! tests/guest/scenarios through ublk (`run.sh all`); Debian 12's own 6.1 kernel, which has no ublk, runs
//! tests/guest/nbd through the kernel's nbd driver (`run.sh --kernel 6.1 tests/guest/nbd/*.sh`).
//!
//! This host's kernel has neither driver, so these tests boot a guest instead of skipping. They must never pass
//! without the guest having printed PASS for every scenario: `run.sh` exits non-zero otherwise, and a guest that
//! cannot boot is a failure that says why.

use std::path::Path;
use std::process::Command;

/// One guest at a time: two TCG guests on a small machine would slow each past its scenario time limits.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_guest(args: &[String]) {
    let _one = ONE_GUEST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/guest/run.sh");
    assert!(script.exists(), "missing {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "tests/guest/run.sh {args:?} failed ({}); guest output above:\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("SUMMARY pass=") && stdout.contains(" fail=0 "),
        "run.sh succeeded but printed no clean SUMMARY line:\n{stdout}"
    );
}

#[test]
fn guest_scenarios() {
    run_guest(&["all".to_string()]);
}

#[test]
fn guest_scenarios_nbd_on_debian_6_1() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/nbd");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios in {}", dir.display());
    let mut args = vec!["--kernel".to_string(), "6.1".to_string()];
    args.extend(files);
    run_guest(&args);
}
