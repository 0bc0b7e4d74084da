//! The launcher's heap. A start allocates and frees a few hundred small
//! blocks, and musl's allocator gives freed pages back to the kernel at
//! once: traced, a warm start made ~55 munmaps (and as many mmaps and page
//! faults to get the pages back), ~5% of its CPU. So the first [`ARENA`]
//! bytes come from a static region by a bump pointer and are never given
//! back; beyond it, the system allocator serves as before. A block freed
//! in the region is lost unless it is the last one (then the next block
//! reuses its bytes, and a `realloc` of the last one grows in place), so
//! whatever a process does, the waste is at most [`ARENA`]; the region's
//! pages cost nothing until touched.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Enough for a start's planning and set-up; `list` and `stats` of many
/// subhosts go on in the system allocator.
pub const ARENA: usize = 512 * 1024;

#[repr(C, align(4096))]
struct Region(UnsafeCell<[u8; ARENA]>);

pub struct Heap {
    region: Region,
    /// Offset of the region's first free byte.
    next: AtomicUsize,
}

// SAFETY: the region is handed out in disjoint blocks, each claimed by a
// compare-and-swap of `next`; no two callers get overlapping bytes.
unsafe impl Sync for Heap {}

impl Heap {
    pub const fn new() -> Heap {
        Heap {
            region: Region(UnsafeCell::new([0; ARENA])),
            next: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.region.0.get() as usize
    }

    /// The offset in the region of `p`, if the region holds it.
    fn offset(&self, p: *mut u8) -> Option<usize> {
        let off = (p as usize).checked_sub(self.base())?;
        (off < ARENA).then_some(off)
    }

    /// A block of the region for `layout`, or null when it is full.
    fn claim(&self, layout: Layout) -> *mut u8 {
        let base = self.base();
        let mut cur = self.next.load(Ordering::Acquire);
        loop {
            let Some(start) = (base + cur)
                .checked_next_multiple_of(layout.align())
                .map(|a| a - base)
            else {
                return std::ptr::null_mut();
            };
            let end = match start.checked_add(layout.size()) {
                Some(end) if end <= ARENA => end,
                _ => return std::ptr::null_mut(),
            };
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (base + start) as *mut u8,
                Err(now) => cur = now,
            }
        }
    }
}

impl Default for Heap {
    fn default() -> Heap {
        Heap::new()
    }
}

// SAFETY: every block returned is either a disjoint, suitably aligned
// piece of the static region (see `claim`) or the system allocator's; each
// pointer goes back to the allocator that made it (`offset` tells them
// apart), and a region block is reused only after it was freed.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = self.claim(layout);
        if !p.is_null() {
            return p;
        }
        // SAFETY: the caller's contract for `layout` is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = self.claim(layout);
        if !p.is_null() {
            // SAFETY: the block is ours, `layout.size()` bytes long; freed
            // bytes reused are not zero.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match self.offset(p) {
            // Only the last block's bytes come back: the next claim reuses them.
            Some(off) => {
                let _ = self.next.compare_exchange(
                    off + layout.size(),
                    off,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            // SAFETY: System made `p` with `layout` (not in the region).
            None => unsafe { System.dealloc(p, layout) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(off) = self.offset(p) else {
            // SAFETY: System made `p` with `layout`; the caller's contract
            // for `new_size` is System's.
            return unsafe { System.realloc(p, layout, new_size) };
        };
        // The last block grows (or shrinks) where it is.
        if let Some(end) = off.checked_add(new_size).filter(|&e| e <= ARENA) {
            if self
                .next
                .compare_exchange(
                    off + layout.size(),
                    end,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return p;
            }
        }
        // SAFETY: `new_size` with `layout`'s alignment is a valid layout by
        // the caller's contract.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as in `alloc`.
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe { std::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size)) };
            // SAFETY: `p` was allocated here with `layout`.
            unsafe { self.dealloc(p, layout) };
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_disjoint_and_the_last_one_is_reused() {
        // Static, as the launcher's: a region on a test thread's stack
        // would overflow it.
        static HEAP: Heap = Heap::new();
        let heap = &HEAP;
        let a = Layout::from_size_align(24, 8).unwrap();
        let b = Layout::from_size_align(100, 64).unwrap();
        // SAFETY: every block is freed with the layout it was made with.
        unsafe {
            let p = heap.alloc(a);
            let q = heap.alloc(b);
            assert_eq!(q as usize % 64, 0);
            assert!(q as usize >= p as usize + 24);
            heap.dealloc(q, b);
            assert_eq!(heap.alloc(b), q, "the last block's bytes are reused");
            // Grows in place, as the last block.
            assert_eq!(heap.realloc(q, b, 4000), q);
            // Not the last one: moved, its bytes copied.
            p.write_bytes(7, 24);
            let r = heap.realloc(p, a, 48);
            assert_ne!(r, p);
            assert_eq!(*r.add(23), 7);
            let z = heap.alloc_zeroed(a);
            assert!((0..24).all(|i| *z.add(i) == 0));
        }
    }

    #[test]
    fn a_full_region_falls_back_to_the_system() {
        static HEAP: Heap = Heap::new();
        let heap = &HEAP;
        let big = Layout::from_size_align(ARENA - 16, 8).unwrap();
        let small = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: as above.
        unsafe {
            let p = heap.alloc(big);
            assert!(heap.offset(p).is_some());
            let q = heap.alloc(small);
            assert!(!q.is_null());
            assert!(heap.offset(q).is_none(), "beyond the region: the system's");
            q.write_bytes(1, 64);
            let q2 = heap.realloc(q, small, 4096);
            assert_eq!(*q2.add(63), 1);
            heap.dealloc(q2, Layout::from_size_align(4096, 8).unwrap());
            heap.dealloc(p, big);
        }
    }
}
