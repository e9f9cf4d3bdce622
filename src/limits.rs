//! The bounds that keep every number kronnet computes finite: what inputs
//! it accepts (`VALUE_BOUND`) and how far a step may move the state
//! (`SAFE_BOUND`, `OUTPUT_BOUND`). A step that could cross them is refused
//! before anything changes, so the model always has a finite loss.

use crate::error::{invalid, Result};

/// Largest |preactivation| a step may create. Beyond it the loss could
/// overflow (|f| ≤ √m · max|P|, loss ~ f²; with m < 2^32 and |P| ≤ 1e140,
/// f² < 1e300), so both backends refuse a step that could get there and the
/// model always has a finite loss.
pub const SAFE_BOUND: f64 = 1e140;

/// Largest |target|, |threshold| and ‖x‖ the model accepts. Larger values
/// leave SGD no room below `SAFE_BOUND` (the first steps would already be
/// refused as divergent) or overflow the Gram, so they are refused up front
/// with a message instead of failing every step.
pub const VALUE_BOUND: f64 = 1e100;

/// Checks targets: finite and |y| ≤ `VALUE_BOUND`.
pub fn check_targets(y: &[f64]) -> Result<()> {
    if let Some((i, v)) = y.iter().enumerate().find(|(_, v)| !(v.abs() <= VALUE_BOUND)) {
        return invalid("y", format!("target {i} is {v}; targets must be finite with |y| <= {VALUE_BOUND:e}"));
    }
    Ok(())
}

/// Largest |f| a step may make possible (f² and e^f-free forms of the
/// losses stay finite below it).
pub const OUTPUT_BOUND: f64 = 1e150;
