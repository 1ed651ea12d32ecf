//! The module's global allocator: the system allocator (so working memory
//! stays out of `maxmemory`), counting what it holds for `working_memory`.

use std::alloc::{GlobalAlloc, Layout, System};

use crate::working_memory;

pub struct CountingSystem;

// SAFETY: every call goes to the system allocator unchanged; the counting
// touches only atomics and never allocates.
unsafe impl GlobalAlloc for CountingSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            working_memory::allocated(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            working_memory::allocated(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        working_memory::freed(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            working_memory::freed(layout.size());
            working_memory::allocated(new_size as isize);
        }
        p
    }
}
