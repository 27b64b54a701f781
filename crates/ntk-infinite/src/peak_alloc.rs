//! Test-only: the global allocator of this crate's unit tests counts the bytes each thread
//! holds, so a test can measure the peak of a call ([`peak_of`]) against the byte counts
//! the code states before allocating.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator; the counters are plain thread-local cells
// (const-initialised, no destructor), touched without allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let _ = HELD.try_with(|h| {
                let now = h.get() + layout.size();
                h.set(now);
                let _ = PEAK.try_with(|m| m.set(m.get().max(now)));
            });
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        let _ = HELD.try_with(|h| h.set(h.get().saturating_sub(layout.size())));
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// `f()` and the most bytes this thread held during it beyond what it held before.
pub(crate) fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = HELD.with(Cell::get);
    PEAK.with(|m| m.set(base));
    let out = f();
    (out, PEAK.with(Cell::get) - base)
}
