//! Pages of large buffers: transparent huge pages when they are made, and
//! freed memory handed back between phases (`release_free_memory`).
//!
//! On Linux a fresh allocation's pages are mapped on first touch, one 4 KiB
//! fault each; on the virtual machine kronnet is developed on a fault costs
//! about 2 µs, so merely touching a new 16 MiB buffer took 10.5 ms, against
//! 1.6 ms to write it again and 3.1 ms with huge pages (2 MiB, 512 times
//! fewer faults). Init and prediction at small d spend a tenth of their time
//! there otherwise. NumPy advises huge pages for its large arrays in the same
//! way, so its products, which kronnet's benchmarks compare against, do not
//! pay it.

/// Buffers from this size on are worth advising: below it a buffer spans
/// no whole aligned huge page anyway.
pub const MIN_BYTES: usize = 4 << 20;

/// Asks the kernel to back the pages of `[ptr, ptr + bytes)` that are whole
/// 4 KiB pages with huge pages where it can. Advice only: nothing changes
/// in the buffer's contents, and a refusal (no THP support, "never" mode,
/// another OS) leaves ordinary pages.
pub fn advise_huge(ptr: *mut u8, bytes: usize) {
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = (ptr as usize).next_multiple_of(PAGE);
        let end = (ptr as usize + bytes) / PAGE * PAGE;
        if end > start {
            // SAFETY: [start, end) lies inside one live allocation of the
            // caller's; MADV_HUGEPAGE only changes how its pages are
            // backed, never their contents. The result is ignored on
            // purpose: the advice is optional.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = ptr;
}

/// Hands the free memory of every malloc arena back to the system, between
/// phases whose buffers would otherwise add up. glibc raises its mmap
/// threshold once a large block is freed, so later large blocks come from
/// the heap of the thread that asked and stay resident after they are
/// freed: init's per-thread scratch (about 2.5 MiB a worker at d = 2^14)
/// stayed resident while the trained block's cross-Gram and then the Gram
/// were built (RSS after building a trainer at n = 1024, m = 2048, 8
/// threads: 61.6-69.5 MiB, 48.0-56.5 with this). Other platforms'
/// allocators are left alone.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; live
    // allocations are untouched. Its result (whether anything was
    // released) does not matter.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The advice never changes a buffer's contents, for any alignment and
    /// size, including sizes below the threshold and empty ranges.
    #[test]
    fn advice_keeps_contents() {
        let len = (MIN_BYTES / 8) * 2 + 3;
        let mut v: Vec<f64> = (0..len).map(|i| i as f64).collect();
        for (offset, count) in [(0, len), (1, len - 2), (3, 5), (7, 0), (0, MIN_BYTES / 8 - 1)] {
            advise_huge(v[offset..].as_mut_ptr() as *mut u8, count * 8);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as f64));
        let z = crate::error::try_zeros(len, "test").unwrap();
        assert!(z.len() == len && z.iter().all(|&x| x == 0.0));
    }
}
