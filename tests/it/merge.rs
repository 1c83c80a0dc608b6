//! `blkcache merge`: two partial caches of one disc, read through different damage maps (two
//! drives), merge to the source wherever either had it; differing bytes are a reported conflict.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use blkcache::map::{self, Mapfile, Meta, Phase, Status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const BLKCACHE: &str = env!("CARGO_BIN_EXE_blkcache");

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

struct Drives {
    dir: tempfile::TempDir,
    data: Vec<u8>,
    source: PathBuf,
}

impl Drives {
    fn new() -> Drives {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 2 << 20];
        StdRng::seed_from_u64(9).fill(&mut data[..]);
        let source = dir.path().join("source");
        std::fs::write(&source, &data).unwrap();
        Drives { dir, data, source }
    }

    /// Fills cache `name` through a damage map with `bad` areas (the first 64 KiB stay good:
    /// the identity is the same through both drives).
    fn read_in(&self, name: &str, bad: &[(u64, u64)]) -> PathBuf {
        let size = self.data.len() as u64;
        let mut dmg = Mapfile::new(size, Meta::default());
        dmg.map.set(0, size, Status::Finished);
        dmg.current_status = Phase::Finished;
        for &(p, l) in bad {
            dmg.map.set(p, l, Status::BadSector);
        }
        let damage = self.dir.path().join(format!("{name}.damage"));
        map::save(&damage, &dmg).unwrap();
        let cache = self.dir.path().join(name);
        let o = run(Command::new(BLKCACHE)
            .arg("fill")
            .arg(&self.source)
            .arg("--test-mode")
            .arg(&damage)
            .arg("--cache")
            .arg(&cache));
        assert!(o.status.success(), "{o:?}");
        cache
    }

    fn merge(&self, inputs: &[&Path], out: &str) -> (Output, PathBuf) {
        let out = self.dir.path().join(out);
        let o = run(Command::new(BLKCACHE)
            .arg("merge")
            .args(inputs)
            .arg("-o")
            .arg(&out)
            .arg("--json"));
        (o, out)
    }
}

#[test]
fn two_partial_caches_merge_to_the_source_where_either_had_it() {
    let d = Drives::new();
    let a = d.read_in(
        "a",
        &[(100_000, 40_000), (900_000, 5_000), (1_500_000, 9_000)],
    );
    let b = d.read_in(
        "b",
        &[(300_000, 20_000), (900_000, 2_000), (1_800_000, 70_000)],
    );
    let (o, c) = d.merge(&[&a, &b], "c");
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ma = map::load(&a.join("mapfile")).unwrap().map;
    let mb = map::load(&b.join("mapfile")).unwrap().map;
    let mc = map::load(&c.join("mapfile")).unwrap().map;
    let img = std::fs::read(c.join("image")).unwrap();
    let size = d.data.len() as u64;
    for pos in (0..size).step_by(512) {
        let either = ma.status_at(pos) == Some(Status::Finished)
            || mb.status_at(pos) == Some(Status::Finished);
        let st = mc.status_at(pos).unwrap();
        if either {
            assert_eq!(st, Status::Finished, "sector at {pos:#x}");
            let p = pos as usize;
            assert_eq!(img[p..p + 512], d.data[p..p + 512], "bytes at {pos:#x}");
        } else {
            // Bad in both: the first input's status.
            assert_eq!(Some(st), ma.status_at(pos), "sector at {pos:#x}");
        }
    }
    assert!(mc.stats().get(Status::BadSector).bytes > 0);
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 0);
    assert_eq!(v["rescued"], mc.stats().get(Status::Finished).bytes);
    // ddrescuelog agrees: C is A OR B.
    let or = run(Command::new("ddrescuelog")
        .arg("--or-mapfile")
        .arg(b.join("mapfile"))
        .arg(a.join("mapfile")));
    assert!(or.status.success(), "{or:?}");
    let ddmap = map::parse(&String::from_utf8_lossy(&or.stdout), Path::new("or")).unwrap();
    let finished = |m: &blkcache::map::FileMap| -> Vec<(u64, u64)> {
        m.iter()
            .filter(|r| r.status == Status::Finished)
            .map(|r| (r.pos, r.len))
            .collect()
    };
    assert_eq!(finished(&mc), finished(&ddmap.map));
}

#[test]
fn differing_bytes_are_a_reported_conflict_never_chosen() {
    let d = Drives::new();
    let a = d.read_in("a", &[(100_000, 40_000)]);
    let b = d.read_in("b", &[(300_000, 20_000)]);
    // Drive B returned other bytes for one sector both rescued.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(b.join("image"))
        .unwrap();
    f.write_all_at(b"not the same", 1_000_000).unwrap();
    drop(f);
    let (o, c) = d.merge(&[&a, &b], "c");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("conflict: bytes 0xf4200..0xf4400 differ between"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["conflicts"][0]["pos"], 0xf4200);
    let mc = map::load(&c.join("mapfile")).unwrap().map;
    assert_eq!(mc.status_at(0xf4200), Some(Status::NonTried));
    assert_eq!(mc.status_at(0xf4400), Some(Status::Finished));
    assert_eq!(mc.status_at(0xf41ff), Some(Status::Finished));
    // Caches of another disc are refused.
    let other = d.dir.path().join("other");
    std::fs::write(&other, vec![1u8; 2 << 20]).unwrap();
    let o = run(Command::new(BLKCACHE)
        .arg("fill")
        .arg(&other)
        .arg("--cache")
        .arg(d.dir.path().join("x")));
    assert!(o.status.success(), "{o:?}");
    let (o, _) = d.merge(&[&a, &d.dir.path().join("x")], "d");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("are caches of different media"));
}

/// Caches of one disc read by drives that report it 2 sectors apart merge into a cache of the
/// larger size (the shorter input's map ends at its own size); 33 sectors apart they are
/// refused, naming both sizes.
#[test]
fn caches_of_sizes_a_few_sectors_apart_merge_at_the_larger_size() {
    let d = Drives::new();
    let a = d.read_in("a", &[(100_000, 40_000)]);
    let size = d.data.len() as u64;
    // Drive B reads the disc 2 sectors (of 512 bytes) shorter.
    let short = d.dir.path().join("short");
    std::fs::write(&short, &d.data[..(size - 1024) as usize]).unwrap();
    let b = d.dir.path().join("b");
    let o = run(Command::new(BLKCACHE)
        .arg("fill")
        .arg(&short)
        .arg("--cache")
        .arg(&b));
    assert!(o.status.success(), "{o:?}");
    let (o, c) = d.merge(&[&b, &a], "c");
    assert!(o.status.success(), "{o:?}");
    let mc = map::load(&c.join("mapfile")).unwrap().map;
    assert_eq!(mc.size(), size);
    assert_eq!(mc.stats().get(Status::Finished).bytes, size);
    assert_eq!(std::fs::read(c.join("image")).unwrap(), d.data);

    let far = d.dir.path().join("far");
    std::fs::write(&far, &d.data[..(size - 33 * 512) as usize]).unwrap();
    let x = d.dir.path().join("x");
    let o = run(Command::new(BLKCACHE)
        .arg("fill")
        .arg(&far)
        .arg("--cache")
        .arg(&x));
    assert!(o.status.success(), "{o:?}");
    let (o, _) = d.merge(&[&a, &x], "d");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "blkcache: error: {} holds {} bytes and {} holds {size} bytes, more than 32 sectors \
             apart, so they are not the same disc; only caches of the same disc can be merged\n",
            x.display(),
            size - 33 * 512,
            a.display()
        )
    );
}
