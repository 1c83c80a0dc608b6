//! The mapfile reader never panics: arbitrary bytes and mutations of a real ddrescue mapfile
//! either load or fail with an error naming the file (and the line, for bad text).

use blkcache::map::{self, MapError};
use proptest::prelude::*;

/// A mapfile as GNU ddrescue 1.27 wrote it (`ddrescue -X 2 -c 4 -H dmg img o2 o2.map`).
const DDRESCUE_MAP: &[u8] = b"# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue -q -X 2 -c 4 -H dmg img o2 o2.map
# Start time:   2026-11-22 01:11:19
# Current time: 2026-11-22 01:11:19
# Trimming failed blocks... (forwards)
# current_pos  current_status  current_pass
0x00004400     *               1
#      pos        size  status
0x00000000  0x00004000  +
0x00004000  0x00000400  -
0x00004400  0x0000BC00  +
";

/// The characters mapfiles are made of.
const ALPHABET: &[u8] = b"0x+-?*/# \n\t9Ff";

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.map");
    std::fs::write(&path, bytes).unwrap();
    match map::load(&path) {
        Ok(m) => {
            // Whatever loads, saves and loads back as the same map.
            map::save(&path, &m).unwrap();
            prop_assert_eq!(map::load(&path).unwrap().map, m.map);
        }
        Err(MapError::Parse {
            path: p,
            line,
            what,
        }) => {
            prop_assert_eq!(p, path);
            prop_assert!(line >= 1, "line {} for {}", line, what);
            prop_assert!(!what.contains('\n'));
        }
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check(&bytes)?;
    }

    #[test]
    fn mutated_ddrescue_maps_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..10),
    ) {
        let mut bytes = DDRESCUE_MAP.to_vec();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => { bytes.remove(i); }
                1 if i < bytes.len() => bytes[i] = byte,
                // Favour the characters the format is made of.
                2 => bytes.insert(i, ALPHABET[byte as usize % ALPHABET.len()]),
                _ => bytes.insert(i, byte),
            }
        }
        check(&bytes)?;
    }
}

#[test]
fn the_unmutated_ddrescue_map_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("real.map");
    std::fs::write(&path, DDRESCUE_MAP).unwrap();
    let m = map::load(&path).unwrap();
    assert_eq!(m.map.size(), 0x10000);
    assert_eq!(m.map.extent_count(), 3);
}
