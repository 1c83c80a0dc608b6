//! Merge: caches of one disc read in different drives, combined into a new cache. A byte is
//! rescued (`+`) in the result if it is in any input, its bytes taken from there; the other
//! bytes keep the first input's status (ddrescuelog's `--or-mapfile`). Two inputs that both
//! hold a sector with different bytes are a conflict: reported, never silently chosen; the
//! sector is left non-tried (`?`) in the result, so a later fill reads it again.
//!
//! Same identity and sector size are required; the caller reconciles the sizes (`cache::size`:
//! the result has the largest, and an input's map ends where its drive's disc ended, the rest
//! non-tried). The result's bytes are written and synced before its map is saved (as
//! everywhere: a map never claims bytes not durable in the image).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::image::{Image, ImageError};
use crate::map::{FileMap, Status};

/// Bytes compared or copied per step.
const CHUNK: u64 = 1 << 20;

/// One input: its image and map.
#[derive(Debug)]
pub struct Input<'a> {
    /// The image file (only read).
    pub image: &'a Path,
    /// Its map.
    pub map: &'a FileMap,
}

/// Two inputs holding different bytes for the same rescued sectors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conflict {
    /// First byte.
    pub pos: u64,
    /// Length (whole sectors).
    pub len: u64,
    /// The input whose bytes were there first, and the one that differs (indexes).
    pub inputs: (usize, usize),
}

/// What a merge did.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The result's map.
    pub map: FileMap,
    /// Bytes taken from each input.
    pub taken: Vec<u64>,
    /// Conflicting ranges (left non-tried in the result).
    pub conflicts: Vec<Conflict>,
}

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// Reading an input failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The input image.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing or syncing the result failed.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// Merges `inputs` (sectors of `sector` bytes; none larger than `out`) into `out`, whose map
/// is returned (the caller saves it; `out` is synced before this returns).
pub fn merge(inputs: &[Input], out: &Image, sector: u64) -> Result<Merged, MergeError> {
    let size = out.size();
    // The first input's statuses, its rescued bytes still to be copied.
    let mut map = inputs
        .first()
        .map_or_else(|| FileMap::new(size), |i| i.map.extended(size));
    let rescued: Vec<_> = map
        .iter()
        .filter(|r| r.status == Status::Finished)
        .collect();
    for r in rescued {
        map.set(r.pos, r.len, Status::NonTried);
    }
    // Which input each rescued range came from: start -> (len, input).
    let mut owner: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    let mut poisoned = FileMap::new(size);
    let mut taken = vec![0u64; inputs.len()];
    let mut conflicts: Vec<Conflict> = Vec::new();
    let mut a = vec![0u8; CHUNK as usize];
    let mut b = vec![0u8; CHUNK as usize];
    for (i, input) in inputs.iter().enumerate() {
        let file = File::open(input.image).map_err(|source| MergeError::Read {
            path: input.image.to_owned(),
            source,
        })?;
        let ranges: Vec<_> = input
            .map
            .iter()
            .filter(|r| r.status == Status::Finished)
            .collect();
        for r in ranges {
            let mut pos = r.pos;
            while pos < r.end() {
                let len = CHUNK.min(r.end() - pos);
                let bytes = &mut a[..len as usize];
                file.read_exact_at(bytes, pos)
                    .map_err(|source| MergeError::Read {
                        path: input.image.to_owned(),
                        source,
                    })?;
                let parts: Vec<_> = map.runs(pos, len).collect();
                for part in parts {
                    let from = (part.pos - pos) as usize;
                    let here = &bytes[from..from + part.len as usize];
                    if part.status == Status::Finished {
                        let theirs = &mut b[..part.len as usize];
                        out.read_at(part.pos, theirs)?;
                        let first = owner_of(&owner, part.pos);
                        for (cpos, clen) in differing(here, theirs, part.pos, sector) {
                            conflicts.push(Conflict {
                                pos: cpos,
                                len: clen,
                                inputs: (first, i),
                            });
                            poisoned.set(cpos, clen, Status::BadSector);
                            map.set(cpos, clen, Status::NonTried);
                        }
                        continue;
                    }
                    // Bytes no earlier input had, unless they are in a conflict.
                    for free in poisoned.runs(part.pos, part.len).collect::<Vec<_>>() {
                        if free.status == Status::BadSector {
                            continue;
                        }
                        let f = (free.pos - pos) as usize;
                        out.write_at(free.pos, &bytes[f..f + free.len as usize])?;
                        map.set(free.pos, free.len, Status::Finished);
                        owner.insert(free.pos, (free.len, i));
                        taken[i] += free.len;
                    }
                }
                pos += len;
            }
        }
    }
    out.sync()?;
    conflicts.sort_by_key(|c| c.pos);
    Ok(Merged {
        map,
        taken,
        conflicts,
    })
}

/// The input that filled the byte at `pos`.
fn owner_of(owner: &BTreeMap<u64, (u64, usize)>, pos: u64) -> usize {
    owner
        .range(..=pos)
        .next_back()
        .filter(|(p, (l, _))| pos < *p + l)
        .map_or(0, |(_, (_, i))| *i)
}

/// Ranges of whole sectors (aligned at `base` modulo `sector`) where `x` and `y` differ.
fn differing(x: &[u8], y: &[u8], base: u64, sector: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let end = base + x.len() as u64;
    let mut s = base - base % sector;
    while s < end {
        let lo = s.max(base);
        let hi = (s + sector).min(end);
        let (a, b) = ((lo - base) as usize, (hi - base) as usize);
        if x[a..b] != y[a..b] {
            match out.last_mut() {
                Some((p, l)) if *p + *l == lo => *l += hi - lo,
                _ => out.push((lo, hi - lo)),
            }
        }
        s += sector;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::differing;

    #[test]
    fn differences_are_whole_sectors_merged() {
        let x = vec![0u8; 4096];
        let mut y = x.clone();
        y[600] = 1;
        y[1100] = 1;
        y[3000] = 1;
        assert_eq!(differing(&x, &y, 0, 512), vec![(512, 1024), (2560, 512)]);
        assert!(differing(&x, &x, 0, 512).is_empty());
    }
}
