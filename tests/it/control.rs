//! The control socket of a serving daemon, over `blkcache serve` (the same daemon code as `add`
//! without a kernel driver): `fill CACHE` makes the daemon fill (ending with the map a
//! standalone fill ends with), `status` is live (a read through the NBD export shows before any
//! save), Ctrl-C stops the fill and keeps serving, a dead daemon's socket means "no daemon", and
//! the refusals are clear.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use blkcache::map::{self, Status};
use serde_json::Value;

use crate::nbd::{damage_map, source, Served};

const BLKCACHE: &str = env!("CARGO_BIN_EXE_blkcache");
const SS: u64 = 2048;
const SIZE: usize = 8 << 20;

fn blkcache(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(BLKCACHE);
    for a in args {
        c.arg(a);
    }
    c.stdin(Stdio::null())
        .output()
        .expect("cannot run blkcache")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("no JSON: {}", text(o)))
}

/// A source with bad sectors in places, its damage map, and a daemon serving it from `cache`.
struct Setup {
    dir: tempfile::TempDir,
    src: PathBuf,
    damage: PathBuf,
    cache: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), "src", SIZE);
        let sectors = SIZE as u64 / SS;
        let bad: Vec<u64> = [100, 101, 102, 900, 1500, 1501, sectors - 300]
            .into_iter()
            .collect();
        let damage = damage_map(dir.path(), SIZE as u64, SS, &bad);
        let cache = dir.path().join("cache");
        Setup {
            dir,
            src,
            damage,
            cache,
        }
    }

    fn serve(&self, extra: &[&str]) -> Served {
        let mut args = vec![
            "--cache",
            self.cache.to_str().unwrap(),
            "--sector-size",
            "2048",
            "--test-mode",
            self.damage.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Served::start(self.dir.path(), &self.src, &args)
    }

    fn socket(&self) -> PathBuf {
        self.cache.join("control.sock")
    }
}

/// The map's runs and status line, without blkcache's comment lines.
fn map_of(mapfile: &Path) -> (Vec<(u64, u64, Status)>, String) {
    let m = map::load(mapfile).unwrap();
    let runs = m.map.iter().map(|r| (r.pos, r.len, r.status)).collect();
    (
        runs,
        format!(
            "{:#x} {:?} {:?}",
            m.current_pos, m.current_status, m.current_pass
        ),
    )
}

#[test]
fn fill_through_the_daemon_ends_with_the_map_and_reads_of_a_standalone_fill() {
    let s = Setup::new();
    let mut served = s.serve(&[]);
    // The options travel to the daemon; -O needs it to reopen its source.
    let o = blkcache(&[&"fill", &s.cache, &"--json", &"-O", &"-c", &"16"]);
    assert!(o.status.success(), "{}", text(&o));
    let daemon = json(&o);
    assert_eq!(daemon["outcome"], "finished", "{daemon}");
    // The daemon saved the map as the fill ended: the saved map is the final one.
    let alone = s.dir.path().join("alone");
    let o = blkcache(&[
        &"fill",
        &s.src,
        &"--cache",
        &alone,
        &"--test-mode",
        &s.damage,
        &"--sector-size",
        &"2048",
        &"--json",
        &"-O",
        &"-c",
        &"16",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let standalone = json(&o);
    assert_eq!(
        map_of(&s.cache.join("mapfile")),
        map_of(&alone.join("mapfile"))
    );
    for k in [
        "rescued",
        "bad_sector",
        "bad_areas",
        "non_tried",
        "read_errors",
    ] {
        assert_eq!(daemon[k], standalone[k], "{k}: {daemon} vs {standalone}");
    }
    // The daemon's identity read landed the head (64 KiB, readable here) in the cache before the
    // fill: its fill reads the rest, the standalone fill the head too (two 32 KiB clusters, -c 16).
    let head = 64 * 1024;
    assert_eq!(
        daemon["media_bytes"].as_u64().unwrap() + head,
        standalone["media_bytes"].as_u64().unwrap(),
        "{daemon} vs {standalone}"
    );
    assert_eq!(
        daemon["media_reads"].as_u64().unwrap() + head / (16 * 2048),
        standalone["media_reads"].as_u64().unwrap(),
        "{daemon} vs {standalone}"
    );
    let log = served.stop();
    assert!(log.contains("fill ended"), "{log}");
    let (a, b) = (
        std::fs::read(s.cache.join("image")).unwrap(),
        std::fs::read(alone.join("image")).unwrap(),
    );
    assert!(
        a == b,
        "the daemon's image differs from the standalone fill's"
    );
    assert!(!s.socket().exists(), "the socket outlived its daemon");
}

/// Reads `len` bytes at `offset` through the NBD export.
fn nbd_read(uri: &str, offset: u64, len: u64) {
    let script = format!("h.pread({len}, {offset})");
    let o = Command::new("/usr/bin/python3")
        .args(["-m", "nbd", "-u", uri, "-c", &script])
        .output()
        .expect("nbdsh (python3-libnbd) is required");
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn status_is_live_a_read_through_the_export_shows_before_any_save() {
    let s = Setup::new();
    let mut served = s.serve(&[]);
    // The identity read's head (64 KiB) is in the map the daemon saved when it started.
    let head = 64 << 10;
    let saved = || map::load(&s.cache.join("mapfile")).unwrap();
    assert_eq!(saved().map.stats().get(Status::Finished).bytes, head);
    nbd_read(&served.uri, 1 << 20, 256 << 10);
    // The daemon saves every 30 s: the saved map has only the head yet, the live one the read too.
    assert_eq!(saved().map.stats().get(Status::Finished).bytes, head);
    for arg in [s.cache.clone(), s.cache.join("mapfile")] {
        let o = blkcache(&[&"status", &arg, &"--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let v = json(&o);
        assert_eq!(v["live"], true, "{v}");
        assert_eq!(v["rescued"]["bytes"], head + (256 << 10), "{v}");
        assert_eq!(v["daemon"]["serving"], served.uri.as_str(), "{v}");
        assert!(v["daemon"]["counters"]["misses"].as_u64() > Some(0), "{v}");
    }
    let o = blkcache(&[&"status", &s.cache]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("live from the daemon"), "{t}");
    // Once the daemon is gone: the saved map, said to be one.
    served.stop();
    let o = blkcache(&[&"status", &s.cache]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("saved map: no daemon serves this cache"), "{t}");
    assert!(t.contains("rescued:   327680 B"), "{t}");
}

/// `export` of a served cache writes what the daemon's engine holds now (a read made after the
/// last save is in the image), and its map beside the image is the live one.
#[test]
fn export_of_a_served_cache_takes_the_daemons_map_not_the_saved_one() {
    let s = Setup::new();
    let mut served = s.serve(&[]);
    let head = 64 << 10;
    nbd_read(&served.uri, 1 << 20, 256 << 10);
    let saved = map::load(&s.cache.join("mapfile")).unwrap();
    assert_eq!(saved.map.stats().get(Status::Finished).bytes, head);
    let out = s.dir.path().join("export.iso");
    let o = blkcache(&[
        &"export",
        &s.cache,
        &"-o",
        &out,
        &"--allow-incomplete",
        &"--fill",
        &"zero",
        &"--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&o);
    let live = head + (256 << 10);
    assert_eq!(v["unread"], SIZE as u64 - live, "{v}");
    let image = std::fs::read(&out).unwrap();
    let source = std::fs::read(&s.src).unwrap();
    let read = (1 << 20)..(1 << 20) + (256 << 10);
    assert!(
        image[read.clone()] == source[read],
        "the read range differs"
    );
    let beside = map::load(&s.dir.path().join("export.iso.map")).unwrap();
    assert_eq!(beside.map.stats().get(Status::Finished).bytes, live);
    served.stop();
}

#[test]
fn ctrl_c_stops_the_daemons_fill_saves_the_map_and_the_export_stays_served() {
    let s = Setup::new();
    let mut served = s.serve(&["--test-latency", "20"]);
    let child = Command::new(BLKCACHE)
        .args(["fill", "--json"])
        .arg(&s.cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // A second fill while one runs is refused, saying how to follow or stop it.
    let o = blkcache(&[&"fill", &s.cache]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already running") && err.contains("--stop"),
        "{err}"
    );
    // Live status shows the running fill with a rate.
    let v = json(&blkcache(&[&"status", &s.cache, &"--json"]));
    assert_eq!(v["daemon"]["fill"]["running"], true, "{v}");
    assert!(
        v["daemon"]["fill"]["live"]["average_rate"].as_u64() > Some(0),
        "{v}"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let summary = json(&o);
    assert_eq!(summary["outcome"], "interrupted", "{summary}");
    let rescued = summary["rescued"].as_u64().unwrap();
    assert!(rescued > 0 && rescued < SIZE as u64, "{summary}");
    // Saved as it stopped (long before the 30 s save), and still served.
    let saved = map::load(&s.cache.join("mapfile")).unwrap();
    assert_eq!(saved.map.stats().get(Status::Finished).bytes, rescued);
    nbd_read(&served.uri, 0, 4096);
    let v = json(&blkcache(&[&"status", &s.cache, &"--json"]));
    assert_eq!(v["daemon"]["fill"]["running"], false, "{v}");
    let o = blkcache(&[&"fill", &s.cache.join("mapfile"), &"--stop"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no fill is running"),
        "{}",
        text(&o)
    );
    served.stop();
}

#[test]
fn a_killed_daemons_socket_means_no_daemon_and_the_next_daemon_replaces_it() {
    let s = Setup::new();
    let mut served = s.serve(&[]);
    let sock = std::fs::metadata(s.socket()).unwrap();
    assert_eq!(sock.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(&s.cache).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    let mut child = served.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(s.socket().exists(), "kill -9 leaves the socket file");
    let o = blkcache(&[&"status", &s.cache]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("saved map: no daemon serves this cache"),
        "{}",
        text(&o)
    );
    let o = blkcache(&[&"fill", &s.cache]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no daemon serves"),
        "{}",
        text(&o)
    );
    // A standalone fill of the same cache goes ahead: the stale socket holds nothing.
    let o = blkcache(&[
        &"fill",
        &s.src,
        &"--cache",
        &s.cache,
        &"--test-mode",
        &s.damage,
        &"--sector-size",
        &"2048",
        &"--max-read-errors",
        &"0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let mut again = s.serve(&[]);
    let v = json(&blkcache(&[&"status", &s.cache, &"--json"]));
    assert_eq!(v["live"], true, "{v}");
    again.stop();
}

/// One request line on the socket, one reply line back.
fn raw(socket: &Path, line: &str) -> Value {
    let mut c = UnixStream::connect(socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(&c).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|_| panic!("bad reply {reply:?}"))
}

#[test]
fn bad_requests_get_error_replies_and_offline_caches_are_not_filled() {
    let s = Setup::new();
    let mut served = s.serve(&[]);
    let sock = s.socket();
    let r = raw(&sock, "{\"v\":2,\"op\":\"status\"}\n");
    assert_eq!(r["reply"], "error", "{r}");
    assert!(r["message"].as_str().unwrap().contains("version 1"), "{r}");
    for bad in [
        "garbage\n",
        "{\"v\":1,\"op\":\"format_disk\"}\n",
        "{\"op\":\"status\"}\n",
    ] {
        let r = raw(&sock, bad);
        assert_eq!(
            (r["v"].as_u64(), r["reply"].as_str()),
            (Some(1), Some("error")),
            "{bad}: {r}"
        );
    }
    let r = raw(&sock, "{\"v\":1,\"op\":\"status\"}\n");
    assert_eq!(r["reply"], "status", "{r}");
    let o = blkcache(&[&"fill", &s.cache, &"--test-mode", &s.damage]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("its own media"),
        "{}",
        text(&o)
    );
    served.stop();

    // Served offline (cache only): nothing to fill from.
    let o = Served::start(s.dir.path(), &s.cache, &["--offline"]);
    let mut offline = o;
    let o = blkcache(&[&"fill", &s.cache]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("offline"),
        "{}",
        text(&o)
    );
    offline.stop();
}

#[test]
fn a_cache_path_longer_than_a_socket_address_still_has_a_control_socket() {
    let mut s = Setup::new();
    s.cache = s.dir.path().join("d".repeat(100)).join("cache");
    std::fs::create_dir_all(s.cache.parent().unwrap()).unwrap();
    assert!(s.socket().as_os_str().len() > 108);
    let mut served = s.serve(&[]);
    let o = blkcache(&[&"fill", &s.cache, &"--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(json(&o)["outcome"], "finished");
    served.stop();
}

#[test]
fn a_daemon_of_another_user_is_not_talked_to() {
    use std::os::unix::process::CommandExt;
    let mut s = Setup::new();
    // uid 65534 serves a cache it makes, in a directory of its own.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = s.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534))
        .expect("this test runs a daemon as uid 65534: run it as root");
    s.cache = theirs.join("cache");
    let socket = theirs.join("nbd.sock");
    // Stopped even when an assertion fails.
    struct Theirs(std::process::Child);
    impl Drop for Theirs {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(BLKCACHE)
        .arg("serve")
        .arg(&s.src)
        .arg("--socket")
        .arg(&socket)
        .arg("--cache")
        .arg(&s.cache)
        .args(["--sector-size", "2048"])
        .env("BLKCACHE_STATE_DIR", theirs.join("state"))
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _theirs = Theirs(child);
    let mut uri = String::new();
    BufReader::new(stdout).read_line(&mut uri).unwrap();
    assert!(uri.starts_with("nbd+unix://"), "{uri:?}");
    assert!(s.socket().exists());
    let o = blkcache(&[&"status", &s.cache]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("belongs to a process of uid 65534"),
        "{}",
        text(&o)
    );
    let o = blkcache(&[&"fill", &s.cache]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("uid 65534"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_fill_whose_client_is_killed_stops_and_the_stop_of_the_daemon_ends_a_followed_fill() {
    let s = Setup::new();
    let mut served = s.serve(&["--test-latency", "20"]);
    let spawn_fill = || {
        Command::new(BLKCACHE)
            .args(["fill", "--json"])
            .arg(&s.cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = spawn_fill();
    std::thread::sleep(Duration::from_millis(1000));
    child.kill().unwrap();
    child.wait().unwrap();
    let running = |s: &Setup| {
        json(&blkcache(&[&"status", &s.cache, &"--json"]))["daemon"]["fill"]["running"] == true
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!running(&s), "the fill runs on without its client");
    // The daemon stopping (SIGTERM) ends a followed fill: its client gets the summary.
    let child = spawn_fill();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(running(&s));
    served.stop();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert_eq!(json(&o)["outcome"], "interrupted");
}
