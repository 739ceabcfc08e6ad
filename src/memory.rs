//! Giving the compile's scratch memory back to the system.
//!
//! A compile allocates far more than the list it leaves (the parse, sort
//! buffers, the filter's construction arrays). glibc keeps freed memory in
//! its heap for reuse, so without this the resolver's resident size after
//! loading the full list would be the compile's peak, not the list's.

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
