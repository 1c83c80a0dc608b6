//! The mapfile parser never panics, and whatever it accepts formats and parses back to the same map.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(m) = blkcache::map::parse(&text, Path::new("fuzz.map")) {
        let again = blkcache::map::parse(&blkcache::map::format(&m), Path::new("fuzz.map"))
            .expect("formatted map must parse");
        assert_eq!(again.map, m.map);
        assert_eq!(again.current_pos, m.current_pos);
    }
});
