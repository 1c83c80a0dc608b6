//! How blkcache makes and rewrites its files: private to the caller, never through a link.
//!
//! A cache holds the contents of a disc that may be readable only by root, so directories are
//! made 0700 and files 0600 whatever the umask; a directory someone else owns or can write is
//! refused (they could plant links or swap files); files are opened with `O_NOFOLLOW`; rewrites go
//! through an exclusive temp file (`O_EXCL`, a random name), fsync, rename, fsync of the directory.
//!
//! Must never follow a symbolic link to a file it writes, nor create anything others can read.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory blkcache makes.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file blkcache makes.
pub const FILE_MODE: u32 = 0o600;

/// A file operation that failed, with what was being done and on which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}", path.display())]
pub struct FileError {
    /// What was being done ("fsync", "rename onto", ...).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

fn file_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes `path` and its missing parents, each 0700.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options for opening a file of a cache: never through a symbolic link (ELOOP instead), and
/// created 0600.
pub fn private_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW).mode(FILE_MODE);
    o
}

/// Reads a whole file without following a symbolic link.
pub fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = private_options().read(true).open(path)?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut f, &mut bytes)?;
    Ok(bytes)
}

/// Why a directory may not hold a cache, or `None` if the caller (`euid`) owns it and no one
/// else can write it. `meta` is the directory's (followed) metadata.
pub fn foreign_dir_problem(meta: &Metadata, euid: u32) -> Option<String> {
    if !meta.is_dir() {
        return Some("it is not a directory".to_string());
    }
    if meta.uid() != euid {
        return Some(format!(
            "it belongs to uid {}, not to the caller (uid {euid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "other users can write it (mode {:o}; chmod go-w)",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Writes `bytes` to `path` atomically and durably: an exclusive temp file (0600, random name, in
/// the same directory) is written, fsynced and renamed over `path` (replacing a symbolic link
/// there, never following it), then the directory is fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| FileError {
        op: "write (no file name in)",
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // `.NAME.tmp.RANDOM`: hidden, and named for the file it will replace.
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp.");
    // Removed again on every error path (drop).
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(&dir)
        .map_err(file_err("create a temporary file in", &dir))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(bytes).map_err(file_err("write", &tmp_path))?;
    tmp.as_file()
        .sync_all()
        .map_err(file_err("fsync", &tmp_path))?;
    tmp.persist(path)
        .map_err(|e| file_err("rename a temporary file onto", path)(e.error))?;
    sync_dir(&dir)
}

/// Makes the entries of `dir` (a rename, a new file) durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err("fsync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn write_atomic_replaces_a_planted_link_without_writing_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"precious").unwrap();
        let path = dir.path().join("file");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::symlink_metadata(&path).unwrap().mode() & 0o777,
            FILE_MODE
        );
    }

    #[test]
    fn read_nofollow_refuses_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_nofollow(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(read_nofollow(&target).unwrap(), b"x");
    }

    #[test]
    fn foreign_dirs_are_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let euid = nix::unistd::geteuid().as_raw();
        let meta = |p: &Path| fs::metadata(p).unwrap();
        assert_eq!(foreign_dir_problem(&meta(dir.path()), euid), None);
        let why = foreign_dir_problem(&meta(dir.path()), euid + 1).unwrap();
        assert!(why.contains(&format!("uid {euid}")), "{why}");
        fs::set_permissions(dir.path(), Permissions::from_mode(0o1777)).unwrap();
        let why = foreign_dir_problem(&meta(dir.path()), euid).unwrap();
        assert!(why.contains("mode 1777"), "{why}");
    }
}
