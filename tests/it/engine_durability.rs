//! Durability order of `Engine::save`, seen in the system calls: the image is fdatasynced before
//! the mapfile that claims its bytes is renamed into place (and the new mapfile is fsynced before
//! that rename). Runs a child copy of this test binary under `strace -y`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use blkcache::engine::{Engine, EngineConfig};
use blkcache::image::Image;
use blkcache::map::{Mapfile, Meta};
use blkcache::media::{FileMedia, Media, MediaOptions};

const DIR_VAR: &str = "BLKCACHE_DURABILITY_DIR";

/// The traced child: reads through an engine, then saves. Does nothing unless run by the parent.
#[test]
#[ignore = "run by save_syncs_the_image_before_the_mapfile_lands under strace"]
fn durability_child() {
    let dir = std::env::var(DIR_VAR).expect("run by the parent test with BLKCACHE_DURABILITY_DIR");
    let dir = Path::new(&dir);
    let source = dir.join("source");
    std::fs::write(&source, vec![0x42u8; 256 * 1024]).unwrap();
    let media: Arc<dyn Media> =
        Arc::new(FileMedia::open(&source, MediaOptions::default()).unwrap());
    let image = Image::create(&dir.join("image"), media.size()).unwrap();
    let engine = Engine::new(
        media.clone(),
        image,
        Mapfile::new(media.size(), Meta::default()),
        dir.join("mapfile"),
        EngineConfig::default(),
    )
    .unwrap();
    engine.read(0, &mut vec![0u8; 128 * 1024]).unwrap();
    engine.save().unwrap();
}

#[test]
fn save_syncs_the_image_before_the_mapfile_lands() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-e",
            "trace=fdatasync,fsync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(&exe)
        .args([
            "engine_durability::durability_child",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir.path())
        .output()
        .expect("strace is needed for this test (Debian package strace)");
    assert!(
        out.status.success(),
        "traced child failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let find = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
    let image_sync = find(&|l| l.contains("fdatasync(") && l.contains("/image>"));
    let map_rename = find(&|l| l.contains("rename") && l.contains("/mapfile\""));
    let tmp_sync = find(&|l| l.contains("fsync(") && l.contains(".mapfile.tmp"));
    let (Some(image_sync), Some(map_rename), Some(tmp_sync)) = (image_sync, map_rename, tmp_sync)
    else {
        panic!("expected fdatasync(image), fsync(tmp map) and rename(mapfile) in:\n{text}");
    };
    assert!(
        image_sync < map_rename,
        "image synced after the mapfile landed:\n{text}"
    );
    assert!(
        tmp_sync < map_rename,
        "mapfile renamed before fsync:\n{text}"
    );
}
