//! `blkcache export`: the image and its checksums, checked against coreutils' md5sum, sha1sum,
//! sha256sum and gzip's CRC-32 of the source, and the sidecars against `md5sum -c` & co.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use blkcache::map::{self, Mapfile, Meta, Phase, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const BLKCACHE: &str = env!("CARGO_BIN_EXE_blkcache");

fn run(cmd: &mut Command) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// The first field of `TOOL FILE`'s output (md5sum, sha1sum, sha256sum).
fn sum(tool: &str, file: &Path) -> String {
    let o = run(Command::new(tool).arg(file));
    assert!(o.status.success(), "{tool}: {o:?}");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// CRC-32 of a file as gzip computes it (its trailer's first 4 bytes, little-endian).
fn gzip_crc32(file: &Path) -> String {
    let o = run(Command::new("gzip").arg("-c").arg(file));
    assert!(o.status.success());
    let t = &o.stdout[o.stdout.len() - 8..o.stdout.len() - 4];
    format!("{:08x}", u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
}

/// A source with a 1 MiB zero stretch, filled into a cache through `damage` (all good if None).
fn filled(dir: &Path, bad: &[(u64, u64)]) -> (Vec<u8>, std::path::PathBuf) {
    let size = 3u64 << 20;
    let mut data = vec![0u8; size as usize];
    StdRng::seed_from_u64(7).fill(&mut data[..]);
    data[1 << 20..2 << 20].fill(0);
    let source = dir.join("source");
    std::fs::write(&source, &data).unwrap();
    let mut dmg = Mapfile::new(size, Meta::default());
    dmg.map.set(0, size, Status::Finished);
    dmg.current_status = Phase::Finished;
    for &(pos, len) in bad {
        dmg.map.set(pos, len, Status::BadSector);
    }
    map::save(&dir.join("damage.map"), &dmg).unwrap();
    let cache = dir.join("cache");
    let o = run(Command::new(BLKCACHE)
        .arg("fill")
        .arg(&source)
        .arg("--test-mode")
        .arg(dir.join("damage.map"))
        .arg("--cache")
        .arg(&cache));
    assert!(o.status.success(), "{o:?}");
    (data, cache)
}

fn export(cache: &Path, out: &Path, extra: &[&str]) -> Output {
    run(Command::new(BLKCACHE)
        .arg("export")
        .arg(cache)
        .arg("-o")
        .arg(out)
        .arg("--json")
        .args(extra))
}

#[test]
fn export_checksums_equal_coreutils_and_gzip_and_the_sidecars_check() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache) = filled(dir.path(), &[]);
    let source = dir.path().join("source");
    let out = dir.path().join("disc.iso");
    let o = export(&cache, &out, &[]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(v["md5"], sum("md5sum", &source));
    assert_eq!(v["sha1"], sum("sha1sum", &source));
    assert_eq!(v["sha256"], sum("sha256sum", &source));
    assert_eq!(v["crc32"], gzip_crc32(&source));
    assert_eq!(v["complete"], true);
    assert_eq!(v["size"], data.len() as u64);
    for tool in ["md5sum", "sha1sum", "sha256sum"] {
        let ext = tool.trim_end_matches("sum");
        let o = run(Command::new(tool)
            .arg("-c")
            .arg(format!("disc.iso.{ext}"))
            .current_dir(dir.path()));
        assert!(o.status.success(), "{tool} -c: {o:?}");
    }
    // The zero stretch stays a hole.
    let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated < data.len() as u64 - (1 << 19),
        "not sparse: {allocated} bytes allocated"
    );
    // Never overwritten.
    let o = export(&cache, &out, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists; refusing to overwrite it"));
}

#[test]
fn an_incomplete_image_is_refused_or_exported_with_markers_and_its_map() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cache) = filled(dir.path(), &[(100_000, 5000), (2_500_000, 70_000)]);
    let out = dir.path().join("partial.iso");
    let o = export(&cache, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the image is incomplete") && err.contains("--allow-incomplete"),
        "{err}"
    );
    assert!(!out.exists());
    let o = export(&cache, &out, &["--allow-incomplete", "--fill", "marker"]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["complete"], false);
    let m = map::load(&cache.join("mapfile")).unwrap();
    let beside = map::load(&dir.path().join("partial.iso.map")).unwrap();
    assert_eq!(beside.map, m.map);
    assert_eq!(v["unread"], m.map.stats().get(Status::BadSector).bytes);
    let img = std::fs::read(&out).unwrap();
    assert_eq!(img.len(), data.len());
    for r in m.map.iter() {
        let (a, b) = (r.pos as usize, r.end() as usize);
        if r.status == Status::Finished {
            assert_eq!(img[a..b], data[a..b]);
        } else {
            for s in (a..b).step_by(512) {
                let want = format!("BLKCACHE UNREAD SECTOR offset={:#014x} status=-", s);
                assert!(img[s..].starts_with(want.as_bytes()), "no marker at {s:#x}");
            }
        }
    }
    assert_eq!(v["md5"], sum("md5sum", &out));
    assert_eq!(v["crc32"], gzip_crc32(&out));
}
