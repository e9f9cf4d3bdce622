//! Activated-neuron indexes: given the preactivations P (n × m, row-major,
//! P[i, r] = <w_r, x_i>), find each batch point's fire set {r : P[i, r] > τ}.
//!
//! [`activation`] holds the contract every index meets and the scan;
//! [`tree`] the asynchronous tree, [`bits`] the crossing bits; [`kind`] picks
//! one by name and builds it. Imports run one way inside this folder
//! (activation ← tree, bits ← kind), each file naming the sibling it uses;
//! the re-exports below are for code outside it.

pub mod activation;
pub mod bits;
pub mod kind;
pub mod tree;

pub use activation::{scan_row, ActivationIndex, IndexStats, LinearScan};
pub use bits::FiredBits;
pub use kind::IndexKind;
pub use tree::AsyncTree;
