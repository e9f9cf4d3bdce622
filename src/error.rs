//! Errors of the core. Every fallible entry point returns [`KronError`]; the
//! binding layer maps each variant to a Python exception class.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum KronError {
    /// An argument has the wrong shape, size or value. `arg` names it.
    #[error("{arg}: {msg}")]
    Invalid { arg: String, msg: String },

    /// An allocation would not fit; raised before allocating.
    #[error("{what} needs {bytes} bytes ({gib:.2} GiB), which cannot be allocated")]
    OutOfMemory { what: String, bytes: u128, gib: f64 },

    /// A step would make the loss or the state non-finite; the state is unchanged.
    #[error("{0}")]
    Diverged(String),

    /// The caller asked the work to stop (`Control::request_stop`, e.g. on
    /// Ctrl-C); the state is at a consistent boundary (between two steps).
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, KronError>;

pub fn invalid<T>(arg: &str, msg: impl Into<String>) -> Result<T> {
    Err(KronError::Invalid { arg: arg.to_string(), msg: msg.into() })
}

/// The error for `bytes` that cannot be allocated for `what`.
pub fn out_of_memory(what: &str, bytes: u128) -> KronError {
    KronError::OutOfMemory { what: what.to_string(), bytes, gib: bytes as f64 / (1u128 << 30) as f64 }
}

/// Allocates a zeroed `Vec<f64>` of `len` elements, turning an impossible size
/// into an error instead of an abort so that it reaches Python as MemoryError.
pub fn try_zeros(len: usize, what: &str) -> Result<Vec<f64>> {
    try_zeros_of(len, what)
}

/// `try_zeros` for any plain number type (float32 P).
pub fn try_zeros_of<T: Copy + Default>(len: usize, what: &str) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    let bytes = (len as u128) * size as u128;
    let oom = || out_of_memory(what, bytes);
    if bytes > isize::MAX as u128 {
        return Err(oom());
    }
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| oom())?;
    // Before the first touch, which is what maps the pages.
    crate::pages::advise_huge(v.as_mut_ptr() as *mut u8, len * size);
    v.resize(len, T::default());
    Ok(v)
}

/// `try_array2` whose zeros are the allocator's: a fresh mapping is left
/// untouched until written, where `try_zeros` writes every value. For
/// coefficient blocks: a block of 80,000 × 1024 took 0.5-1.8 s to make on
/// this VM (three quarters of it the kernel clearing pages), and an
/// estimator whose exact start wins never steps its refitted block at all
/// (a trainer maps its block's pages when it starts, `Coefficients::touch`).
pub fn try_array2_untouched(rows: usize, cols: usize, what: &str) -> Result<ndarray::Array2<f64>> {
    let len = checked_len(rows, cols, what)?;
    let oom = || out_of_memory(what, len as u128 * 8);
    let data = if len == 0 {
        Vec::new()
    } else {
        let layout = std::alloc::Layout::array::<f64>(len).map_err(|_| oom())?;
        // SAFETY: the layout's size is nonzero (len > 0).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f64;
        if ptr.is_null() {
            return Err(oom());
        }
        crate::pages::advise_huge(ptr as *mut u8, len * 8);
        // SAFETY: `ptr` comes from the global allocator with the layout of
        // `len` f64 values (capacity = len), and all `len` are initialized:
        // all-zero bits are 0.0.
        unsafe { Vec::from_raw_parts(ptr, len, len) }
    };
    ndarray::Array2::from_shape_vec((rows, cols), data)
        .map_err(|e| KronError::Invalid { arg: what.to_string(), msg: e.to_string() })
}

/// `a * b` in element counts, as an error instead of an overflow.
pub fn checked_len(a: usize, b: usize, what: &str) -> Result<usize> {
    a.checked_mul(b).ok_or_else(|| out_of_memory(what, (a as u128) * (b as u128) * 8))
}

/// `a` in row-major layout, taken over as is when it already is: ndarray's
/// `as_standard_layout().into_owned()` copies even then, and these arrays
/// (P, W, X, α) are the largest a run allocates.
pub fn into_standard<T: Clone>(a: ndarray::Array2<T>) -> ndarray::Array2<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// A zeroed `rows × cols` matrix, refused with `OutOfMemory` (naming `what`)
/// when it cannot be allocated.
pub fn try_array2(rows: usize, cols: usize, what: &str) -> Result<ndarray::Array2<f64>> {
    try_array2_of(rows, cols, what)
}

/// `try_array2` for any plain number type.
pub fn try_array2_of<T: Copy + Default>(rows: usize, cols: usize, what: &str) -> Result<ndarray::Array2<T>> {
    let data = try_zeros_of(checked_len(rows, cols, what)?, what)?;
    ndarray::Array2::from_shape_vec((rows, cols), data)
        .map_err(|e| KronError::Invalid { arg: what.to_string(), msg: e.to_string() })
}
