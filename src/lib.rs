//! kronnet core: exact SGD for two-layer ReLU-threshold networks whose inputs
//! are Kronecker products of small factors, at a per-step cost independent of
//! the input dimension d (Song & Ye, arXiv 2305.08001).
//!
//! Data flows one way: factors ([`factors`]) → Gram and initial inner products
//! ([`gram`], [`init`], or [`kron_init`] for Kronecker-factored initial
//! weights) → steps ([`step`], with an [`index`] to find fired neurons: a
//! scan, the asynchronous tree [`index::tree`], or the crossing bits
//! [`index::bits`]; a net sharded over ranks runs the same steps through
//! [`sharded`]'s reduction protocol) → predictions ([`predict`]: regenerated
//! init of the new points plus α times their cross-Gram with the training
//! points). The learned coefficients α ([`coef`]) belong to the model and are
//! lent to each step; [`elem`] is the type the trainer keeps P in (float64,
//! or float32 for half the traffic); [`control`] lets a caller stop long work at a step
//! boundary. [`dense`] is the textbook reference trainer of the same model;
//! [`model`] holds the arithmetic both backends share. [`memory`] works out
//! a trainer's bytes before it is built; [`roofline`] measures the machine's
//! ceilings that the benchmarks read achieved rates against; [`pages`] asks
//! for huge pages on the large buffers every stage allocates.

pub mod coef;
pub mod control;
pub mod dense;
pub mod elem;
pub mod error;
pub mod exact_sum;
pub mod factors;
pub mod fold;
pub mod gram;
pub mod index;
pub mod init;
pub mod kron_init;
pub mod limits;
pub mod loss;
pub mod matmul;
pub mod memory;
pub mod model;
pub mod packed;
pub mod pages;
pub mod predict;
pub mod rng;
pub mod roofline;
pub mod sharded;
pub mod step;

#[cfg(feature = "python")]
mod bindings;

pub use error::{KronError, Result};
