//! Export: a cache's image written out as a plain image file with its md5, sha1, sha256 and
//! crc32 (as redump and the Internet Archive list them), hashed in the same pass that writes it.
//!
//! Rescued (`+`) bytes are copied from the image with `copy_file_range` (a reflink on
//! filesystems that share extents) after being hashed; all-zero stretches and unread bytes
//! filled with zeros are left as holes (the output is as sparse as it can be). Unread bytes are
//! exported only when asked, as zeros or as a marker every sector that says it was not read (as
//! dvdisaster marks dead sectors), so an incomplete image is never mistaken for a good one.
//! The output is written under a temporary name, synced, then renamed: a partly written export
//! never has the final name. The cache is only read.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use crate::map::{FileMap, Status};

/// Bytes per read and hash step.
const CHUNK: u64 = 1 << 20;

/// What unread bytes become in an incomplete export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// Refuse an incomplete image.
    Refuse,
    /// Zeros (holes).
    Zero,
    /// [`marker`] in every unread sector.
    Marker,
}

/// The image's checksums, lowercase hex (crc32 as 8 digits).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checksums {
    /// MD5.
    pub md5: String,
    /// SHA-1.
    pub sha1: String,
    /// SHA-256.
    pub sha256: String,
    /// CRC-32 (IEEE, as zip, gzip and redump use).
    pub crc32: String,
}

/// What was exported.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Size in bytes.
    pub size: u64,
    /// Bytes not rescued, filled as asked.
    pub unread: u64,
    /// The checksums of the written image.
    pub sums: Checksums,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The image is not complete and unread bytes were not allowed.
    #[error("the image is incomplete: {unread} of {size} bytes are not rescued (see `blkcache status`); pass --allow-incomplete to export it with those bytes filled")]
    Incomplete {
        /// Bytes not rescued.
        unread: u64,
        /// Image size.
        size: u64,
    },
    /// The output exists.
    #[error("{} exists; refusing to overwrite it", path.display())]
    Exists {
        /// The output.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |source| ExportError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The marker written into an unread sector at `offset`: one 64-byte line, repeated, naming
/// the offset and the map status, so a reader of the image sees at once what is missing.
pub fn marker(offset: u64, status: Status, sector: usize) -> Vec<u8> {
    let mut line = format!(
        "BLKCACHE UNREAD SECTOR offset={offset:#014x} status={}",
        status.as_char()
    )
    .into_bytes();
    line.resize(63, b' ');
    line.push(b'\n');
    line.iter().copied().cycle().take(sector).collect()
}

/// Writes the image at `image` (whose map is `map`, sectors of `sector` bytes) to `out`,
/// returning its checksums. `progress` is told the bytes done after each piece.
pub fn export(
    image: &Path,
    map: &FileMap,
    sector: u64,
    out: &Path,
    unread: Unread,
    progress: &mut dyn FnMut(u64),
) -> Result<Exported, ExportError> {
    let size = map.size();
    let missing = size - map.stats().get(Status::Finished).bytes;
    if missing > 0 && unread == Unread::Refuse {
        return Err(ExportError::Incomplete {
            unread: missing,
            size,
        });
    }
    if out.exists() {
        return Err(ExportError::Exists {
            path: out.to_owned(),
        });
    }
    let src = File::open(image).map_err(io_err("open image", image))?;
    let part = part_path(out);
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .map_err(io_err("create", &part))?;
    let result = write_all(&src, &dst, &part, map, sector, unread, progress);
    let sums = match result.and_then(|sums| {
        dst.set_len(size).map_err(io_err("size", &part))?;
        dst.sync_all().map_err(io_err("fsync", &part))?;
        fs::rename(&part, out).map_err(io_err("rename into place", out))?;
        Ok(sums)
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
    };
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))?;
    Ok(Exported {
        size,
        unread: missing,
        sums,
    })
}

fn part_path(out: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out.file_name().unwrap_or_default());
    name.push(".part");
    out.with_file_name(name)
}

struct Hashers {
    md5: Md5,
    sha1: Sha1,
    sha256: Sha256,
    crc: crc32fast::Hasher,
}

impl Hashers {
    fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.crc.update(bytes);
    }

    fn finish(self) -> Checksums {
        Checksums {
            md5: hex(&self.md5.finalize()),
            sha1: hex(&self.sha1.finalize()),
            sha256: hex(&self.sha256.finalize()),
            crc32: format!("{:08x}", self.crc.finalize()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_all(
    src: &File,
    dst: &File,
    part: &Path,
    map: &FileMap,
    sector: u64,
    unread: Unread,
    progress: &mut dyn FnMut(u64),
) -> Result<Checksums, ExportError> {
    let mut h = Hashers {
        md5: Md5::new(),
        sha1: Sha1::new(),
        sha256: Sha256::new(),
        crc: crc32fast::Hasher::new(),
    };
    let mut buf = vec![0u8; CHUNK as usize];
    let mut fast_copy = true;
    for run in map.iter() {
        let mut pos = run.pos;
        while pos < run.end() {
            let len = CHUNK.min(run.end() - pos);
            let bytes = &mut buf[..len as usize];
            if run.status == Status::Finished {
                src.read_exact_at(bytes, pos).map_err(|e| ExportError::Io {
                    op: "read image",
                    path: part.to_owned(),
                    source: e,
                })?;
                h.update(bytes);
                if bytes.iter().any(|&b| b != 0) {
                    if fast_copy {
                        fast_copy =
                            copy_range(src, dst, pos, len).map_err(io_err("write", part))?;
                    }
                    if !fast_copy {
                        dst.write_all_at(bytes, pos)
                            .map_err(io_err("write", part))?;
                    }
                }
            } else if unread == Unread::Marker {
                fill_markers(bytes, pos, run.status, sector);
                h.update(bytes);
                dst.write_all_at(bytes, pos)
                    .map_err(io_err("write", part))?;
            } else {
                bytes.fill(0);
                h.update(bytes);
            }
            pos += len;
            progress(pos);
        }
    }
    Ok(h.finish())
}

/// Markers for `[pos, pos + buf.len())`, each sector's from its own start.
fn fill_markers(buf: &mut [u8], pos: u64, status: Status, sector: u64) {
    let mut at = pos;
    let end = pos + buf.len() as u64;
    while at < end {
        let start = at - at % sector;
        let stop = (start + sector).min(end);
        let m = marker(start, status, sector as usize);
        let from = (at - start) as usize;
        let n = (stop - at) as usize;
        let o = (at - pos) as usize;
        buf[o..o + n].copy_from_slice(&m[from..from + n]);
        at = stop;
    }
}

/// `copy_file_range` of `[pos, pos + len)`; `Ok(false)` if the filesystems cannot (the caller
/// then writes the bytes it read).
fn copy_range(src: &File, dst: &File, pos: u64, len: u64) -> io::Result<bool> {
    let mut done = 0;
    while done < len {
        let mut off_in = (pos + done) as i64;
        let mut off_out = off_in;
        match nix::fcntl::copy_file_range(
            src,
            Some(&mut off_in),
            dst,
            Some(&mut off_out),
            (len - done) as usize,
        ) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n as u64,
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::EINVAL
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP,
            ) if done == 0 => return Ok(false),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(true)
}

/// Writes `OUT.md5`, `OUT.sha1` and `OUT.sha256` in the format `md5sum -c` and its siblings
/// check (`HASH  NAME`, the name relative to the sidecar's directory). Returns their paths.
pub fn write_sidecars(out: &Path, sums: &Checksums) -> Result<Vec<PathBuf>, ExportError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut written = Vec::new();
    for (ext, hash) in [
        ("md5", &sums.md5),
        ("sha1", &sums.sha1),
        ("sha256", &sums.sha256),
    ] {
        let mut p = out.as_os_str().to_owned();
        p.push(".");
        p.push(ext);
        let p = PathBuf::from(p);
        // The user's files, readable as they choose (umask), unlike the cache's own.
        std::fs::write(&p, format!("{hash}  {name}\n")).map_err(io_err("write", &p))?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_name_their_sector_and_repeat() {
        let m = marker(0x800, Status::BadSector, 512);
        assert_eq!(m.len(), 512);
        assert!(m.starts_with(b"BLKCACHE UNREAD SECTOR offset=0x000000000800 status=-"));
        assert_eq!(&m[..64], &m[64..128]);
        // Filling a range that starts inside a sector continues that sector's marker.
        let mut buf = vec![0u8; 1024];
        fill_markers(&mut buf, 256, Status::NonTried, 512);
        assert_eq!(&buf[..256], &marker(0, Status::NonTried, 512)[256..]);
        assert_eq!(&buf[256..768], &marker(512, Status::NonTried, 512)[..]);
    }
}
