//! Loading and atomically saving mapfiles.
//!
//! A save never leaves a torn or half-written mapfile behind (`files::write_atomic`: temp file,
//! fsync, rename, fsync of the directory; GNU ddrescue rewrites in place, and a crash there loses
//! the map). It must never be called with a map claiming bytes that are not yet durable in the
//! image: ordering that is the engine's job.

use std::fs;
use std::path::Path;

use crate::files;

use super::format::{format_stamped, parse, MapError, Mapfile};

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MapError + 'a {
    move |source| MapError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and parses a mapfile; errors name the path (and the line, for bad text).
pub fn load(path: &Path) -> Result<Mapfile, MapError> {
    let bytes = fs::read(path).map_err(io_err("read mapfile", path))?;
    parse_bytes(&bytes, path)
}

/// Parses a mapfile's bytes read from `path`.
pub fn parse_bytes(bytes: &[u8], path: &Path) -> Result<Mapfile, MapError> {
    // ddrescue copies its command line, file names included, into a comment byte for byte; such
    // bytes need not be UTF-8 and only ever matter in comments.
    let text = String::from_utf8_lossy(bytes);
    parse(&text, path)
}

/// Writes `m` to `path` atomically and durably (0600; see [`files::write_atomic`]), stamping
/// the current local time in the header.
pub fn save(path: &Path, m: &Mapfile) -> Result<(), MapError> {
    let mut text = String::with_capacity(400 + m.map.extent_count() * 32);
    format_stamped(m, Some(&local_time_string()), &mut text);
    files::write_atomic(path, text.as_bytes()).map_err(|e| MapError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

/// Local time as ddrescue writes it in mapfile headers: `YYYY-MM-DD HH:MM:SS`.
pub fn local_time_string() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let t = libc::time_t::try_from(now).unwrap_or(0);
    // SAFETY: `tm` is plain old data for which all-zero bytes are a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // thread-safe variant and writes only into `tm`.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return String::from("1970-01-01 00:00:00");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Meta, Status};

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.map");
        let mut m = Mapfile::new(1 << 20, Meta::default());
        m.map.set(4096, 8192, Status::Finished);
        save(&path, &m).unwrap();
        // Saving again replaces the file.
        m.map.set(0, 512, Status::BadSector);
        save(&path, &m).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.map, m.map);
        assert!(back.meta.current_time.is_some());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cache.map")]);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.map");
        let e = load(&missing).unwrap_err();
        assert!(matches!(e, MapError::Io { .. }));
        assert_eq!(
            e.to_string(),
            format!("cannot read mapfile {}", missing.display())
        );

        let bad = dir.path().join("bad.map");
        fs::write(&bad, "0 ? 1\n0 10 +\n5 10 -\n").unwrap();
        assert_eq!(
            load(&bad).unwrap_err().to_string(),
            format!(
                "{}:3: block at 0x5 overlaps the previous one (which ends at 0xa)",
                bad.display()
            )
        );

        let nodir = dir.path().join("no/such/dir/x.map");
        let e = save(&nodir, &Mapfile::new(1, Meta::default())).unwrap_err();
        assert!(e.to_string().contains("create a temporary file in"), "{e}");
    }

    #[test]
    fn non_utf8_comments_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.map");
        fs::write(
            &path,
            b"# Command line: ddrescue /dev/sr0 \xff\xfe.img\n0 + 1\n0 0x200 +\n",
        )
        .unwrap();
        assert_eq!(load(&path).unwrap().map.size(), 0x200);
    }

    #[test]
    fn local_time_has_ddrescue_shape() {
        let t = local_time_string();
        assert_eq!(t.len(), 19, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
    }
}
