//! `AlignedBuf`: a zeroed heap buffer aligned to 4096 bytes, as O_DIRECT reads need.
//!
//! Owns its allocation; never hands out a reference that outlives it.

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every `AlignedBuf`: a page, enough for any logical sector size up to 4096.
pub const ALIGN: usize = 4096;

/// A zero-initialised byte buffer whose start is `ALIGN`-aligned.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf uniquely owns its heap allocation (like Vec<u8>); moving it to another
// thread moves that ownership.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through `&[u8]` (Deref); writes need `&mut self`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (the allocation is at least one byte, so `len` may be 0).
    ///
    /// Aborts via `handle_alloc_error` if memory is exhausted, like `Vec`.
    pub fn new(len: usize) -> AlignedBuf {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (at least 1) and a power-of-two alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        // ALIGN is a power of two; a size this large cannot be allocated anyway.
        match Layout::from_size_align(len.max(1), ALIGN) {
            Ok(layout) => layout,
            Err(_) => alloc::handle_alloc_error(Layout::new::<u8>()),
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to an allocation of at least `len` initialised (zeroed or written)
        // bytes owned by self; the borrow of self bounds the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with exactly this layout and is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .finish()
    }
}

/// Whether `buf` starts at an `ALIGN` boundary.
pub fn is_aligned(buf: &[u8]) -> bool {
    (buf.as_ptr() as usize) % ALIGN == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_writable() {
        for len in [0, 1, 511, 4096, 65536 + 3] {
            let mut buf = AlignedBuf::new(len);
            assert_eq!(buf.len(), len);
            assert!(is_aligned(&buf));
            assert!(buf.iter().all(|&b| b == 0));
            buf.fill(7);
            assert!(buf.iter().all(|&b| b == 7));
        }
    }
}
