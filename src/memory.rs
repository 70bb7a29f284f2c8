//! Keeping the allocator's freed pages out of the idle footprint after load and warmup.
//!
//! The `wick` binary allocates through mimalloc, which keeps freed pages for reuse and returns
//! them to the system only after a delay, checked when a thread next allocates. Loading and
//! warmup's passes over every batch and length bucket free tens of megabytes, on threads that
//! then sit idle: those pages stayed in the idle RSS. So the start runs with the delay at
//! zero, and the serving after it with mimalloc's default, which spares a busy server from
//! faulting its activation buffers back in on every pass.
#![allow(unsafe_code)]

use libmimalloc_sys::{mi_collect, mi_option_set};

/// mimalloc's `mi_option_purge_delay` (mimalloc.h), which the bindings do not name.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its default, in milliseconds.
const DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Freed pages go back to the system at once, as during load and warmup.
pub fn return_freed_pages_at_once() {
    // SAFETY: setting an option takes no pointers and may happen on any thread at any time.
    unsafe { mi_option_set(PURGE_DELAY, 0) };
}

/// Freed pages are kept a while for reuse, as while serving; what is free now goes back.
pub fn keep_freed_pages_for_reuse() {
    // SAFETY: as above; `mi_collect` takes no pointers either.
    unsafe {
        mi_collect(true);
        mi_option_set(PURGE_DELAY, DEFAULT_PURGE_DELAY_MS);
    }
}
