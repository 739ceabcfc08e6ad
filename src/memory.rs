//! Giving the compile's scratch memory back to the system.
//!
//! A compile allocates far more than the list it leaves (the parse, sort
//! buffers, the filter's construction arrays). An allocator keeps freed
//! memory for reuse (glibc in its heap, jemalloc until its decay time), so
//! without this the resolver's resident size just after loading the full
//! list would be the compile's peak, not the list's.

/// Hand what jemalloc holds freed back to the system now, rather than over
/// its decay time (a second): called when a compile is done, whose
/// scratch is tens of MiB. A failure only leaves it to the decay.
#[allow(unsafe_code)]
pub fn purge() {
    // Every arena: MALLCTL_ARENAS_ALL is 4096.
    let name = c"arena.4096.purge";
    // SAFETY: a NUL-terminated name and no value read or written, as
    // jemalloc documents for `arena.<i>.purge`.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!(
            rc,
            "jemalloc purge failed; memory returns over the decay time"
        );
    }
}

/// Serve large allocations from their own mappings, returned on free.
/// glibc otherwise raises this threshold after the first large free, and
/// later large buffers stay in the heap. Call before other threads exist.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_large_frees() {
    // SAFETY: mallopt only sets an allocator parameter.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    if ok != 1 {
        eprintln!(
            "portcullis: mallopt(M_MMAP_THRESHOLD) failed; memory after a compile may stay high"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_large_frees() {}
