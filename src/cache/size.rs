//! The one rule for a disc whose size differs between drives (ddrescue's "Rescued data in
//! mapfile goes past end of input file"): drives report a few sectors more or less for the same
//! disc (run-out blocks, the lead-out). Within [`TOLERANCE_SECTORS`], it is the same disc and its
//! cache keeps the larger size: a larger report grows the cache (image extended sparsely, map
//! extended with non-tried bytes, then the metadata); a smaller one leaves it as it is, and the
//! sectors past this drive's end are served if cached and fail if not, marking nothing. Nothing
//! rescued is ever cut off. Beyond the tolerance it is another disc. Used by `add`, `serve`,
//! `fill` and `merge`.

/// How many sectors two sizes of one disc may differ by.
pub const TOLERANCE_SECTORS: u64 = 32;

/// The size a cache of `cache` bytes must have to serve media of `media` bytes in sectors of
/// `sector` bytes: the larger of the two; `None` if they differ by more than the tolerance.
pub fn reconcile(cache: u64, media: u64, sector: u32) -> Option<u64> {
    (cache.abs_diff(media) <= TOLERANCE_SECTORS * u64::from(sector)).then(|| cache.max(media))
}

/// What the rule does for a cache of `cache` bytes and media of `media` bytes, for the user
/// (`None` when they are the same size).
pub fn describe(cache: u64, media: u64) -> Option<String> {
    if media < cache {
        Some(format!(
            "this drive reads the disc {} bytes smaller than its cache ({media} of {cache} bytes): \
             the cache keeps its size, and bytes past this drive's end are served only if cached",
            cache - media
        ))
    } else if media > cache {
        Some(format!(
            "this drive reads the disc {} bytes larger than its cache ({media}, was {cache} \
             bytes): the cache grows, the new bytes not yet read",
            media - cache
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_larger_size_within_the_tolerance() {
        assert_eq!(reconcile(100 * 2048, 100 * 2048, 2048), Some(100 * 2048));
        assert_eq!(reconcile(100 * 2048, 98 * 2048, 2048), Some(100 * 2048));
        assert_eq!(reconcile(98 * 2048, 100 * 2048, 2048), Some(100 * 2048));
        assert_eq!(reconcile(100 * 2048, 132 * 2048, 2048), Some(132 * 2048));
        assert_eq!(reconcile(100 * 2048, 133 * 2048, 2048), None);
        assert_eq!(reconcile(133 * 512, 100 * 512, 512), None);
    }
}
