//! The process's allocator: mimalloc (v2), entered the way its own aligned path would end up
//! entering it.
//!
//! The `mimalloc` crate sends every Rust allocation through `mi_malloc_aligned`, whose fast
//! path serves only a block of at most 1 KiB that happens to sit at the asked alignment.
//! Anything else (a request's boxed future, hyper's buffers, a small block at an odd place)
//! takes the generic aligned path, several calls deep, which then finds that a plain
//! `mi_malloc` block is aligned enough and allocates one. mimalloc places every block at a
//! multiple of 16 bytes when its size is at least its alignment and the alignment is at
//! most 16 (`mi_malloc_is_naturally_aligned` in its `alloc-aligned.c`), which is nearly every
//! Rust layout: those go to `mi_malloc` directly, as `std`'s system allocator does with
//! `malloc`, and only the others through the aligned entry points.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least that size has (mimalloc's
/// `MI_MAX_ALIGN_SIZE`, `sizeof(max_align_t)` on the platforms it supports). Not so with
/// mimalloc's guarded blocks (`MI_GUARDED`, which libmimalloc-sys's `debug` feature turns on
/// and `MIMALLOC_GUARDED_PRECISE` makes place blocks at any offset): that feature must stay
/// off, and debug builds check every plain block's alignment.
const NATURAL_ALIGN: usize = 16;

pub struct MiMalloc;

/// Whether a plain block of `size` bytes is aligned to `align`.
#[inline]
fn natural(size: usize, align: usize) -> bool {
    align <= NATURAL_ALIGN && align <= size
}

/// A plain block, checked in debug builds to be as aligned as [`natural`] promises.
#[inline]
fn aligned(block: *mut u8, align: usize) -> *mut u8 {
    debug_assert!(
        block as usize % align == 0,
        "mimalloc block not {align}-aligned"
    );
    block
}

// SAFETY: every pointer comes from mimalloc, aligned as asked (by `natural`, or by the
// aligned entry points), and goes back to it; mimalloc is thread-safe.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if natural(layout.size(), layout.align()) {
            aligned(mi::mi_malloc(layout.size()).cast(), layout.align())
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if natural(layout.size(), layout.align()) {
            aligned(mi::mi_zalloc(layout.size()).cast(), layout.align())
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The block kept in place is aligned already; a new one is a plain block when that
        // is aligned enough for its size.
        if natural(new_size, layout.align()) {
            aligned(
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast(),
                layout.align(),
            )
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_of(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("a power of two, a small size")
    }

    /// Every size up to 3 KiB (through mimalloc's small and medium bins) at every alignment
    /// up to 64, allocated, grown, shrunk and zeroed: each block is aligned as asked and
    /// keeps its bytes.
    #[test]
    fn blocks_are_aligned_as_asked_and_keep_their_bytes() {
        let alloc = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64] {
            for size in (1..3072).step_by(7) {
                let layout = layout_of(size, align);
                unsafe {
                    let p = alloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size} at {align}");
                    p.write_bytes(0xA5, size);
                    let grown = alloc.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "grown {size} at {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xA5));
                    let grown_layout = layout_of(size * 3, align);
                    let half = size.div_ceil(2);
                    let shrunk = alloc.realloc(grown, grown_layout, half);
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} at {align}");
                    assert!((0..half).all(|i| *shrunk.add(i) == 0xA5));
                    alloc.dealloc(shrunk, layout_of(half, align));

                    let z = alloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} at {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    alloc.dealloc(z, layout);
                }
            }
        }
    }

    /// Many live blocks of one odd size at alignment 16 (so that a bin's blocks do not all
    /// start at a multiple of 16 unless mimalloc places them so).
    #[test]
    fn live_blocks_of_a_size_are_all_aligned() {
        let alloc = MiMalloc;
        for size in [16, 48, 80, 112, 176, 208, 1040, 4416] {
            let layout = layout_of(size, 16);
            let blocks: Vec<*mut u8> = (0..500).map(|_| unsafe { alloc.alloc(layout) }).collect();
            for &p in &blocks {
                assert_eq!(p as usize % 16, 0, "size {size}");
            }
            for p in blocks {
                unsafe { alloc.dealloc(p, layout) };
            }
        }
    }
}
