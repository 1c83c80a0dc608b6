//! `blkcache serve` with real NBD clients from libnbd (nbdinfo, nbdcopy, nbdsh, nbdfuse; Debian
//! `libnbd-bin`, `python3-libnbd`, `fuse3`) and QEMU (`qemu-img`, `qemu-utils`): sizes and block sizes, exact copies, bad sectors as
//! EIO and never read twice, two clients at once reading the media once, a FUSE file (and, as
//! root, a loop device over it whose ISO 9660 files check out), and hostile clients that must not hurt the server or
//! the cache. No kernel NBD driver needed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use blkcache::nbd::proto;

use crate::util::Loop;

/// A `blkcache serve` process on a unix socket in `dir`, stopped with SIGTERM (also used by
/// `control.rs`).
pub(crate) struct Served {
    pub(crate) child: Option<Child>,
    pub(crate) uri: String,
    socket: PathBuf,
    pub(crate) log: PathBuf,
}

impl Served {
    pub(crate) fn start(dir: &Path, source: &Path, extra: &[&str]) -> Served {
        let socket = dir.join("nbd.sock");
        let log = dir.join(format!("serve-{}.log", std::process::id()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_blkcache"))
            .arg("serve")
            .arg(source)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .env("BLKCACHE_STATE_DIR", dir.join("state"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("cannot run blkcache serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line.trim().to_string());
        });
        let uri = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let mut s = Served {
            child: Some(child),
            uri,
            socket,
            log,
        };
        if !s.uri.starts_with("nbd+unix://") {
            let log = s.stop();
            panic!(
                "blkcache serve printed no URI ({:?}); its log:\n{log}",
                s.uri
            );
        }
        s
    }

    /// Stops the server (SIGTERM: it saves the map) and returns its log.
    pub(crate) fn stop(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        assert!(status.success(), "blkcache serve exited {status}");
                        break;
                    }
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "blkcache serve did not stop within 30 s of SIGTERM; log:\n{}",
                            std::fs::read_to_string(&self.log).unwrap_or_default()
                        );
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?} (scripts/install-deps.sh installs it): {e}")
    });
    out
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A counter from the server's final `served counters=Counters { ... }` log line.
fn counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("served counters="))
        .unwrap_or_else(|| panic!("no counters in the log:\n{log}"));
    let at = line
        .find(&format!("{name}: "))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + name.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad {name} in {line}"))
}

/// A file of `len` bytes that no two sectors share.
pub(crate) fn source(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut data = vec![0u8; len];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// A ddrescue-style damage map: `bad` sectors (of `ss` bytes) are `-`, the rest `+`.
pub(crate) fn damage_map(dir: &Path, size: u64, ss: u64, bad: &[u64]) -> PathBuf {
    let mut text = String::from("# damage map\n0x00000000     +               1\n");
    let mut pos = 0;
    for &s in bad {
        if s * ss > pos {
            text += &format!("{pos:#x} {:#x} +\n", s * ss - pos);
        }
        text += &format!("{:#x} {ss:#x} -\n", s * ss);
        pos = (s + 1) * ss;
    }
    if pos < size {
        text += &format!("{pos:#x} {:#x} +\n", size - pos);
    }
    let p = dir.join("damage.map");
    std::fs::write(&p, text).unwrap();
    p
}

/// The mapfile's runs of `status`, as (pos, len).
fn runs_of(mapfile: &Path, status: char) -> Vec<(u64, u64)> {
    let m = blkcache::map::load(mapfile).unwrap();
    m.map
        .iter()
        .filter(|r| r.status.as_char() == status)
        .map(|r| (r.pos, r.len))
        .collect()
}

/// Every `+` byte of the cache's image equals the source.
fn expect_cache_matches(cache: &Path, src: &[u8]) {
    let img = std::fs::read(cache.join("image")).unwrap();
    for (pos, len) in runs_of(&cache.join("mapfile"), '+') {
        let (a, b) = (pos as usize, (pos + len) as usize);
        assert!(
            img[a..b] == src[a..b],
            "cached bytes {a}..{b} differ from the source"
        );
    }
}

#[test]
fn nbdinfo_sees_the_size_block_size_and_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "disc.iso", 300 * 2048);
    let cache = tmp.path().join("cache");
    let mut s = Served::start(
        tmp.path(),
        &src,
        &["--sector-size", "2048", "--cache", cache.to_str().unwrap()],
    );
    let out = run(Command::new("nbdinfo").arg("--json").arg(&s.uri));
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], 300 * 2048, "{v}");
    assert_eq!(e["block_size_minimum"], 2048, "{v}");
    assert_eq!(e["block_size_preferred"], 2048, "{v}");
    assert_eq!(e["block_size_maximum"], 32 << 20, "{v}");
    assert_eq!(e["is_read_only"], true, "{v}");
    assert_eq!(e["can_multi_conn"], true, "{v}");
    let mode = std::fs::metadata(&s.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    s.stop();
    assert!(!s.socket.exists(), "the socket is removed on stop");
}

#[test]
fn nbdcopy_of_the_export_equals_the_source_and_fills_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "disc.iso", 5 << 20);
    let cache = tmp.path().join("cache");
    let mut s = Served::start(tmp.path(), &src, &["--cache", cache.to_str().unwrap()]);
    let copy = tmp.path().join("copy");
    let out = run(Command::new("nbdcopy").arg(&s.uri).arg(&copy));
    assert!(out.status.success(), "{}", text(&out));
    let data = std::fs::read(&src).unwrap();
    assert!(std::fs::read(&copy).unwrap() == data, "the copy differs");
    // QEMU's own NBD client too.
    let qcopy = tmp.path().join("qcopy");
    let out = run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(&s.uri)
        .arg(&qcopy));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        std::fs::read(&qcopy).unwrap() == data,
        "qemu-img's copy differs"
    );
    let log = s.stop();
    assert_eq!(counter(&log, "media_bytes"), 5 << 20, "{log}");
    assert_eq!(runs_of(&cache.join("mapfile"), '+'), [(0, 5 << 20)]);
    expect_cache_matches(&cache, &data);
}

/// `serve --read-ahead`: a client reading sequentially, one request at a time, is read ahead of
/// by default, and not at all with `off` (every media read is then one of its requests).
#[test]
fn serve_reads_ahead_of_a_sequential_client_unless_told_off() {
    let tmp = tempfile::tempdir().unwrap();
    let src = source(tmp.path(), "disc.iso", 4 << 20);
    let data = std::fs::read(&src).unwrap();
    for (ahead, extra) in [(true, None), (false, Some("off"))] {
        let dir = tmp.path().join(format!("ahead-{ahead}"));
        std::fs::create_dir(&dir).unwrap();
        let cache = dir.join("cache");
        let mut args = vec!["--cache", cache.to_str().unwrap(), "--test-latency", "5"];
        if let Some(v) = extra {
            args.extend(["--read-ahead", v]);
        }
        let mut s = Served::start(&dir, &src, &args);
        let copy = dir.join("copy");
        let out = run(Command::new("nbdcopy")
            .args(["--connections=1", "--requests=1", "--request-size=65536"])
            .arg(&s.uri)
            .arg(&copy));
        assert!(out.status.success(), "{}", text(&out));
        assert!(std::fs::read(&copy).unwrap() == data, "the copy differs");
        let log = s.stop();
        assert_eq!(counter(&log, "media_bytes"), 4 << 20, "read once: {log}");
        let reads = counter(&log, "ahead_reads");
        if ahead {
            assert!(reads > 0, "no read-ahead by default: {log}");
        } else {
            assert_eq!(reads, 0, "read ahead with --read-ahead off: {log}");
            assert_eq!(
                counter(&log, "media_reads"),
                64,
                "one media read per request: {log}"
            );
        }
    }
}

/// nbdsh script: reads every sector alone; writes what it got to OUT (zeros where it failed)
/// and prints `sector:ERRNO` (the errno's name) for each failure.
fn read_each_sector(uri: &str, sectors: u64, ss: u64, out: &Path) -> Vec<(u64, String)> {
    let script = format!(
        "import nbd\nbad=[]\nf=open({out:?},'wb')\nfor i in range({sectors}):\n    try:\n        d=h.pread({ss}, i*{ss})\n    except nbd.Error as e:\n        bad.append('%d:%s' % (i, e.errno)); d=bytes({ss})\n    f.write(d)\nf.close()\nprint(' '.join(bad))\n",
        out = out.to_str().unwrap()
    );
    // nbdsh is `python3 -m nbd`; Debian's python3-libnbd is the system python's module.
    let o = run(Command::new("/usr/bin/python3").args(["-m", "nbd", "-u", uri, "-c", &script]));
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(|t| {
            let (s, e) = t.split_once(':').unwrap();
            (s.parse().unwrap(), e.to_string())
        })
        .collect()
}

#[test]
fn bad_sectors_fail_with_eio_the_rest_reads_exactly_and_none_is_read_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let ss = 2048u64;
    let sectors = 128u64;
    let src = source(tmp.path(), "disc.iso", (sectors * ss) as usize);
    let bad = [10, 11, 12, 13, 100];
    let damage = damage_map(tmp.path(), sectors * ss, ss, &bad);
    let cache = tmp.path().join("cache");
    let args = [
        "--sector-size",
        "2048",
        "--cache",
        cache.to_str().unwrap(),
        "--test-mode",
        damage.to_str().unwrap(),
    ];
    let mut s = Served::start(tmp.path(), &src, &args);
    let got = tmp.path().join("got");
    let failed = read_each_sector(&s.uri, sectors, ss, &got);
    let want: Vec<(u64, String)> = bad.iter().map(|&b| (b, "EIO".to_string())).collect();
    assert_eq!(failed, want, "sectors that failed, with their errno");
    let data = std::fs::read(&src).unwrap();
    let read = std::fs::read(&got).unwrap();
    for i in (0..sectors).filter(|i| !bad.contains(i)) {
        let r = (i * ss) as usize..((i + 1) * ss) as usize;
        assert!(read[r.clone()] == data[r], "sector {i} differs");
    }
    // A copy of the whole export fails: nbdcopy must not paper over a bad sector.
    let out = run(Command::new("nbdcopy")
        .arg(&s.uri)
        .arg(tmp.path().join("copy")));
    assert!(!out.status.success(), "nbdcopy succeeded over bad sectors");
    s.stop();
    assert_eq!(
        runs_of(&cache.join("mapfile"), '-'),
        [(10 * ss, 4 * ss), (100 * ss, ss)]
    );
    expect_cache_matches(&cache, &data);

    // A second session: the bad sectors fail again without a media read.
    let mut s = Served::start(tmp.path(), &src, &args);
    let failed = read_each_sector(&s.uri, sectors, ss, &got);
    assert_eq!(failed, want);
    let log = s.stop();
    assert_eq!(counter(&log, "media_reads"), 0, "{log}");
}

#[test]
fn two_clients_at_once_read_every_sector_from_the_media_once() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 4u64 << 20;
    let src = source(tmp.path(), "disc.iso", size as usize);
    let cache = tmp.path().join("cache");
    // 5 ms per media read: the two copies overlap on misses.
    let mut s = Served::start(
        tmp.path(),
        &src,
        &["--cache", cache.to_str().unwrap(), "--test-latency", "5"],
    );
    let copies: Vec<PathBuf> = (0..2)
        .map(|i| tmp.path().join(format!("copy{i}")))
        .collect();
    let mut children: Vec<Child> = copies
        .iter()
        .map(|c| {
            Command::new("nbdcopy")
                .arg(&s.uri)
                .arg(c)
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot run nbdcopy (scripts/install-deps.sh installs libnbd-bin)")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for c in children.iter_mut() {
        let st = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("nbdcopy hung for 120 s; server log:\n{}", s.stop());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        let _ = c.stderr.take().unwrap().read_to_string(&mut err);
        assert!(st.success(), "nbdcopy: {st} {err}");
    }
    let data = std::fs::read(&src).unwrap();
    for c in &copies {
        assert!(std::fs::read(c).unwrap() == data, "{} differs", c.display());
    }
    let log = s.stop();
    assert_eq!(
        counter(&log, "media_bytes"),
        size,
        "each byte read once: {log}"
    );
    // At most one read per 64 KiB (the engine may read a whole request's untried bytes at once).
    assert!(counter(&log, "media_reads") <= size / 65536, "{log}");
    assert_eq!(runs_of(&cache.join("mapfile"), '+'), [(0, size)]);
}

/// Unmounts a FUSE mount on drop.
struct Fuse(PathBuf, Child);

impl Drop for Fuse {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.0).status();
        let _ = self.1.wait();
    }
}

#[test]
fn nbdfuse_exposes_the_source_as_a_file_that_loop_and_xorriso_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let make = run(Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/make-data.sh"))
        .arg(&data_dir)
        .arg("2"));
    assert!(make.status.success(), "{}", text(&make));
    let iso = data_dir.join("test.iso");
    let mut s = Served::start(
        tmp.path(),
        &iso,
        &[
            "--sector-size",
            "2048",
            "--cache",
            tmp.path().join("cache").to_str().unwrap(),
        ],
    );
    let mnt = tmp.path().join("fuse");
    std::fs::create_dir(&mnt).unwrap();
    let child = Command::new("nbdfuse")
        .arg("-r")
        .arg(mnt.join("disc.iso"))
        .arg(&s.uri)
        .spawn()
        .expect("cannot run nbdfuse (scripts/install-deps.sh installs libnbd-bin, fuse3)");
    let fuse = Fuse(mnt.clone(), child);
    let file = mnt.join("disc.iso");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "nbdfuse did not show {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read(&file).unwrap() == std::fs::read(&iso).unwrap(),
        "the FUSE file differs from the source"
    );

    // As root: the FUSE file through a loop device reads as the ISO, and its files (read by
    // xorriso's ISO 9660 reader: this host's kernel has no iso9660 driver to mount it; the
    // guest scenarios mount through the kernel) have the checksums they were made with.
    let lo = Loop::attach(&file, 2048);
    assert!(
        std::fs::read(&lo.0).unwrap() == std::fs::read(&iso).unwrap(),
        "{} over the FUSE file differs from the source",
        lo.0.display()
    );
    let tree = tmp.path().join("tree");
    let x = run(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(format!("stdio:{}", lo.0.display()))
        .args(["-extract", "/"])
        .arg(&tree));
    assert!(x.status.success(), "{}", text(&x));
    let check = run(Command::new("sha256sum")
        .arg("--quiet")
        .arg("-c")
        .arg(data_dir.join("manifest.sha256"))
        .current_dir(&tree));
    assert!(check.status.success(), "checksums: {}", text(&check));
    drop(lo);
    drop(fuse);
    s.stop();
}

/// A client that speaks the handshake by hand, to send what real clients never do.
struct RawClient(UnixStream);

impl RawClient {
    fn connect(socket: &Path) -> RawClient {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        RawClient(s)
    }

    /// Greeting, flags, `NBD_OPT_GO` for the default export; returns the export size.
    fn handshake(socket: &Path) -> (RawClient, u64) {
        let mut c = RawClient::connect(socket);
        let mut greeting = [0u8; 18];
        c.0.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        c.0.write_all(&3u32.to_be_bytes()).unwrap();
        let mut opt = b"IHAVEOPT".to_vec();
        opt.extend_from_slice(&proto::OPT_GO.to_be_bytes());
        opt.extend_from_slice(&6u32.to_be_bytes());
        opt.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        c.0.write_all(&opt).unwrap();
        let mut size = None;
        loop {
            let mut h = [0u8; 20];
            c.0.read_exact(&mut h).unwrap();
            let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize;
            let mut d = vec![0u8; len];
            c.0.read_exact(&mut d).unwrap();
            if kind == proto::REP_INFO && d[..2] == [0, 0] {
                size = Some(u64::from_be_bytes(d[2..10].try_into().unwrap()));
            }
            if kind == proto::REP_ACK {
                break;
            }
            assert_eq!(kind, proto::REP_INFO, "unexpected option reply");
        }
        (c, size.unwrap())
    }

    fn request(&mut self, command: u16, cookie: u64, offset: u64, len: u32) {
        let r = [
            &0x2560_9513u32.to_be_bytes()[..],
            &0u16.to_be_bytes(),
            &command.to_be_bytes(),
            &cookie.to_be_bytes(),
            &offset.to_be_bytes(),
            &len.to_be_bytes(),
        ]
        .concat();
        self.0.write_all(&r).unwrap();
    }

    /// A simple reply's (error, cookie).
    fn reply(&mut self) -> (u32, u64) {
        let mut h = [0u8; 16];
        self.0.read_exact(&mut h).unwrap();
        assert_eq!(&h[..4], &0x6744_6698u32.to_be_bytes());
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }

    /// Whether the server closed the connection (EOF or reset within the timeout).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn hostile_clients_get_errors_or_are_dropped_and_the_server_and_cache_stay_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 1u64 << 20;
    let src = source(tmp.path(), "disc.iso", size as usize);
    let cache = tmp.path().join("cache");
    let mut s = Served::start(tmp.path(), &src, &["--cache", cache.to_str().unwrap()]);
    let data = std::fs::read(&src).unwrap();

    // Garbage instead of client flags and options: dropped.
    let mut c = RawClient::connect(&s.socket);
    let mut greeting = [0u8; 18];
    c.0.read_exact(&mut greeting).unwrap();
    c.0.write_all(b"\xff\xff\xff\xffGET / HTTP/1.0\r\n\r\n")
        .unwrap();
    assert!(c.closed(), "unknown client flags must drop the connection");
    let mut c = RawClient::connect(&s.socket);
    c.0.read_exact(&mut greeting).unwrap();
    c.0.write_all(&[0, 0, 0, 1]).unwrap();
    c.0.write_all(b"NOTAMAGIC-and-more-garbage").unwrap();
    assert!(
        c.closed(),
        "an option with a bad magic must drop the connection"
    );

    // In transmission: errors for what can be answered, in step with the stream.
    let (mut c, export_size) = RawClient::handshake(&s.socket);
    assert_eq!(export_size, size);
    c.request(proto::CMD_READ, 1, 0, u32::MAX);
    assert_eq!(c.reply(), (proto::EINVAL, 1), "a huge read is refused");
    c.request(proto::CMD_READ, 2, size - 512, 1024);
    assert_eq!(
        c.reply(),
        (proto::EINVAL, 2),
        "a read past the end is refused"
    );
    c.request(proto::CMD_READ, 3, u64::MAX - 100, 512);
    assert_eq!(
        c.reply(),
        (proto::EINVAL, 3),
        "an offset that overflows is refused"
    );
    c.request(proto::CMD_WRITE, 4, 0, 4096);
    c.0.write_all(&[0xAA; 4096]).unwrap();
    assert_eq!(c.reply(), (proto::EPERM, 4), "writes are refused");
    c.request(proto::CMD_TRIM, 5, 0, 4096);
    assert_eq!(c.reply(), (proto::EPERM, 5), "trims are refused");
    c.request(0x77, 6, 0, 0);
    assert_eq!(
        c.reply(),
        (proto::EINVAL, 6),
        "unknown commands are refused"
    );
    // Still in step: an unaligned read returns exactly the source bytes.
    c.request(proto::CMD_READ, 7, 1000, 3000);
    assert_eq!(c.reply(), (0, 7));
    let mut got = vec![0u8; 3000];
    c.0.read_exact(&mut got).unwrap();
    assert!(got == data[1000..4000], "unaligned read");
    // A write payload too large to swallow: dropped.
    c.request(proto::CMD_WRITE, 8, 0, 64 << 20);
    assert!(c.closed(), "a 64 MiB write must drop the connection");

    // Gone mid-request: half a header, then half a write payload.
    let (mut c, _) = RawClient::handshake(&s.socket);
    c.0.write_all(&[0x25, 0x60, 0x95, 0x13, 0, 0]).unwrap();
    drop(c);
    let (mut c, _) = RawClient::handshake(&s.socket);
    c.request(proto::CMD_WRITE, 9, 0, 8192);
    c.0.write_all(&[1; 100]).unwrap();
    drop(c);
    // Gone before reading the reply to a read that reaches the media.
    let (mut c, _) = RawClient::handshake(&s.socket);
    c.request(proto::CMD_READ, 10, 512 << 10, 256 << 10);
    drop(c);

    // The server still serves everyone else, exactly.
    let copy = tmp.path().join("copy");
    let out = run(Command::new("nbdcopy").arg(&s.uri).arg(&copy));
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::read(&copy).unwrap() == data, "the copy differs");
    let log = s.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(runs_of(&cache.join("mapfile"), '+'), [(0, size)]);
    expect_cache_matches(&cache, &data);
    assert!(
        std::fs::read(&src).unwrap() == data,
        "the source was changed"
    );
}
