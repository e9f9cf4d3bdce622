//! The reduction protocol of a sharded trainer (`docs/mpi.md`): each rank
//! holds a range of the net's neurons (a `KronState` of its own) and every
//! step exchanges one message of int64 words, summed element-wise over the
//! ranks (MPI_Allreduce with MPI_SUM): each batch
//! point's exact output sum, the fired counts, and status words that let
//! every rank reach the same end when one of them fails or is asked to stop.
//!
//! The step itself (`step.rs`) knows nothing of the message: this module
//! encodes a `Pending` half-step into words and decodes the summed words
//! into the `Reduced` totals `KronState::finish_step` takes.

use crate::coef::Coefficients;
use crate::control::Control;
use crate::elem::Elem;
use crate::error::{invalid, KronError, Result};
use crate::exact_sum::{read_all, write_all, WORDS};
use crate::model::{check_factors, step_rates, Model, Rates, StepStats};
use crate::step::{norms_of, KronState, Pending, Reduced};

// The message's encoding belongs to this protocol, so the method that
// writes a step's half of it is defined here, on step.rs's type, through
// its accessors.
impl Pending {
    /// What this rank contributes to the step's message: the S × C exact
    /// sums (`WORDS` each), this state's Σ a² and Σ b² (`WORDS` each), then
    /// |R| and Σ|A_i| of its neurons; summed element-wise over the ranks,
    /// the whole net's (`reduced_from_words`).
    pub fn words(&self) -> Vec<i64> {
        let (fire, sums) = (self.fire_sets(), self.sums());
        let k = sums.len() + HEAD_SUMS;
        let mut words = vec![0i64; k * WORDS + 2];
        write_all(sums, &mut words[..sums.len() * WORDS]);
        write_all(self.head_squares(), &mut words[sums.len() * WORDS..k * WORDS]);
        let mut union: Vec<u32> = fire.iter().flatten().copied().collect();
        union.sort_unstable();
        union.dedup();
        words[k * WORDS] = union.len() as i64;
        words[k * WORDS + 1] = fire.iter().map(|a| a.len() as i64).sum();
        words
    }
}

/// Exact sums a step's message carries besides the outputs': the ranks'
/// Σ a² and Σ b².
const HEAD_SUMS: usize = 2;

/// Words a step on S points of a C-output net exchanges.
pub fn exchange_len(s: usize, outputs: usize) -> usize {
    (s * outputs + HEAD_SUMS) * WORDS + 2
}

/// The whole net's figures for a step on S points of a C-output net from
/// the element-wise sum over the ranks of their `Pending::words`
/// (`exchange_len(s, outputs)` words).
pub fn reduced_from_words(s: usize, outputs: usize, words: &[i64]) -> Result<Reduced> {
    let len = exchange_len(s, outputs);
    if words.len() != len {
        return invalid("reduced", format!("has {} words, the step exchanges {len}", words.len()));
    }
    let k = s * outputs * WORDS;
    let head = read_all(&words[k..len - 2]);
    let head = [head[0].clone(), head[1].clone()];
    Ok(Reduced {
        sums: read_all(&words[..k]),
        fired_union: words[len - 2] as usize,
        fired_total: words[len - 1] as usize,
        head_norms: norms_of(&head),
    })
}

/// `finish_step` with the totals of the summed message `words`.
fn finish_reduced<T: Elem>(
    state: &mut KronState<T>,
    coef: &mut Coefficients,
    model: &mut Model,
    pending: Pending,
    words: &[i64],
) -> Result<StepStats> {
    let reduced = reduced_from_words(pending.batch().len(), model.outputs(), words)?;
    state.finish_step(coef, model, pending, Some(reduced))
}

/// f of each point (q × C) from its exact sums' words (`WORDS` per sum,
/// C sums per point) and, with a linear term, the points' unscaled linear
/// parts (q × C).
pub fn outputs_from_words(model: &Model, words: &[i64], linear: Option<&[f64]>) -> Result<Vec<f64>> {
    let per = WORDS * model.outputs();
    if words.len() % per != 0 {
        return invalid("words", format!("has {} words, not a multiple of {per}", words.len()));
    }
    if let Some(l) = linear {
        if l.len() != words.len() / WORDS {
            return invalid("linear", format!("has {} values for {} outputs", l.len(), words.len() / WORDS));
        }
    }
    Ok(model.outputs_of(&read_all(words), linear))
}

/// Status words at the end of every message of a sharded run (`run_sharded`):
/// ranks that failed before this message, ranks that failed after the
/// previous one (their state may differ from the others'), ranks asked to
/// stop. Summed over the ranks like the rest.
pub const STATUS_WORDS: usize = 3;

/// How a sharded run of steps ended; every rank reaches the same end, since
/// each is decided from summed words or from figures all ranks share.
#[derive(Debug)]
pub enum RunEnd {
    /// Every batch ran and the closing message reported no failure.
    Done,
    /// A rank asked to stop: every rank stopped before the same step.
    Stopped,
    /// Every rank refused the same step; every state is as before it.
    Diverged(KronError),
    /// Some rank failed. `local` is this rank's own error, if it failed;
    /// `changed` says a rank failed after the others had moved on, so the
    /// ranks' states may differ.
    Failed { local: Option<KronError>, changed: bool },
    /// The exchange itself failed (the caller holds its error).
    Exchange,
}

/// Steps on the batches `indices[offsets[t]..offsets[t + 1]]` for one rank
/// of a sharded trainer: per step `begin_step`, `exchange` (which must sum
/// the words over the ranks in place, e.g. MPI_Allreduce, and may raise the
/// stop word; it returns false if it failed), `finish_step`. A failure that
/// is this rank's alone is reported to the others by the next message, and
/// a closing status message ends the run, so no rank is left waiting.
#[allow(clippy::too_many_arguments)]
pub fn run_sharded<T: Elem>(
    state: &mut KronState<T>,
    coef: &mut Coefficients,
    model: &mut Model,
    indices: &[usize],
    offsets: &[usize],
    rates: &Rates,
    factors: Option<&[f64]>,
    ctl: &Control,
    exchange: &mut dyn FnMut(&mut [i64]) -> bool,
) -> (Vec<StepStats>, RunEnd) {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut after: Option<KronError> = check_factors(factors, offsets.len().saturating_sub(1)).err();
    for (t, w) in offsets.windows(2).enumerate() {
        let batch = &indices[w[0]..w[1]];
        let len = exchange_len(batch.len(), model.outputs());
        let mut words = vec![0i64; len + STATUS_WORDS];
        let (mut pending, mut before) = (None, None);
        if after.is_none() {
            match state.begin_step(coef, model, batch, &step_rates(rates, factors, t)) {
                Ok(p) => {
                    words[..len].copy_from_slice(&p.words());
                    pending = Some(p);
                }
                Err(e) => before = Some(e),
            }
        }
        set_status(&mut words[len..], before.is_some(), after.is_some(), ctl);
        if !exchange(&mut words) {
            return (out, RunEnd::Exchange);
        }
        if let Some(end) = status_end(&words[len..], before.or(after.take())) {
            return (out, end);
        }
        let Some(pending) = pending else {
            unreachable!("every rank began the step: the status words say so");
        };
        match finish_reduced(state, coef, model, pending, &words[..len]) {
            Ok(s) => out.push(s),
            Err(e @ KronError::Diverged(_)) => return (out, RunEnd::Diverged(e)),
            Err(e) => after = Some(e),
        }
    }
    let mut words = [0; STATUS_WORDS];
    set_status(&mut words, false, after.is_some(), ctl);
    if !exchange(&mut words) {
        return (out, RunEnd::Exchange);
    }
    (out, status_end(&words, after).unwrap_or(RunEnd::Done))
}

/// This rank's status words (`STATUS_WORDS`): failed before the message,
/// failed after the previous one, asked to stop.
fn set_status(status: &mut [i64], before: bool, after: bool, ctl: &Control) {
    status.copy_from_slice(&[before as i64, after as i64, ctl.check().is_err() as i64]);
}

/// The end the status words summed over the ranks call for, if any: a
/// failure anywhere (with this rank's own error, `local`, if it has one)
/// comes before a stop request.
fn status_end(status: &[i64], local: Option<KronError>) -> Option<RunEnd> {
    if status[0] > 0 || status[1] > 0 {
        return Some(RunEnd::Failed { local, changed: status[1] > 0 });
    }
    (status[2] > 0).then_some(RunEnd::Stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factors::{views, Factors};
    use crate::index::{ActivationIndex, LinearScan};
    use crate::init::init_preacts_t;
    use crate::rng::output_signs;
    use crate::step::tests::{batches, unit_rows};
    use crate::step::{GramMode, Setup};
    use ndarray::ArrayView2;

    /// A message of the wrong length is refused; one rank's own words
    /// decode to its own sums and counts.
    #[test]
    fn words_round_trip() {
        assert!(reduced_from_words(2, 1, &[0; 5]).is_err());
        let n = 12;
        let mats = vec![unit_rows(n, 3, 7), unit_rows(n, 4, 8)];
        let f = Factors::new(views(&mats)).unwrap();
        let m = 100;
        let p0 = init_preacts_t(&f, 2, m, &Control::new()).unwrap();
        let model = Model::shared(output_signs(2, m), 0.3).unwrap();
        let mut st = KronState::with_points(
            &f,
            Setup::squared(vec![0.25; n]),
            &model,
            p0,
            GramMode::Precomputed.into(),
            |_, _| Box::new(LinearScan::default()),
        )
        .unwrap();
        let coef = Coefficients::zeros(n, m, 1).unwrap();
        let pending = st.begin_step(&coef, &model, &[3, 5, 3], &Rates::w_only(1.0)).unwrap();
        let words = pending.words();
        assert_eq!(words.len(), exchange_len(3, 1));
        let back = reduced_from_words(3, 1, &words).unwrap();
        let values = |s: &[crate::exact_sum::ExactSum]| s.iter().map(|e| e.value().to_bits()).collect::<Vec<_>>();
        assert_eq!(values(&back.sums), values(pending.sums()));
        let fire = pending.fire_sets();
        assert_eq!(back.fired_total, fire.iter().map(|a| a.len()).sum::<usize>());
        assert!(back.fired_union > 0 && back.fired_union <= back.fired_total);
        // W alone trains: no head norms travel.
        assert_eq!(back.head_norms, (0.0, 0.0));
        let rates = Rates { a: 0.5, ..Rates::w_only(1.0) };
        let pending = st.begin_step(&coef, &model, &[3], &rates).unwrap();
        let back = reduced_from_words(1, 1, &pending.words()).unwrap();
        // a = ±1 and b = 0.3 on 100 neurons: ‖a‖₂ = 10, ‖b‖₂ = 3.
        let (a, b) = back.head_norms;
        assert!((a - 10.0).abs() < 1e-10 && (b - 3.0).abs() < 1e-10, "{a} {b}");
    }

    /// `run_sharded` on K in-process "ranks" (threads that sum their words
    /// through a barrier, as MPI_Allreduce would) against one state holding
    /// the whole net: bitwise the same losses and P, for shards of whole
    /// 64-neuron blocks; and a batch refused by one rank ends every rank's
    /// run with `Failed`, states untouched.
    #[test]
    fn sharded_runs_equal_the_whole_net_bit_for_bit() {
        use std::sync::{Arc, Barrier, Mutex};
        let (n, m, dims) = (40, 320, [4usize, 6]);
        let mats: Vec<_> = dims.iter().enumerate().map(|(k, &dk)| unit_rows(n, dk, 60 + k as u64)).collect();
        let f = Factors::new(views(&mats)).unwrap();
        let y: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64 / 3.0) - 1.0).collect();
        let model = Model::shared(output_signs(5, m), 0.9).unwrap();
        let p0 = init_preacts_t(&f, 5, m, &Control::new()).unwrap();
        let bs = batches(n, 60, 6);
        let idx: Vec<usize> = bs.concat();
        let off: Vec<usize> = (0..=bs.len()).map(|t| 6 * t).collect();
        let (rates, make_index) =
            (Rates::w_only(40.0), |_: ArrayView2<'_, f64>, _: &[f64]| -> Box<dyn ActivationIndex> {
                Box::new(LinearScan::default())
            });
        let mut whole_model = model.clone();
        let mut whole = KronState::with_points(
            &f,
            Setup::squared(y.clone()),
            &whole_model,
            p0.clone(),
            GramMode::Precomputed.into(),
            make_index,
        )
        .unwrap();
        let mut alpha = Coefficients::zeros(n, m, 1).unwrap();
        let ctl = Control::new();
        let (want, end) =
            run_sharded(&mut whole, &mut alpha, &mut whole_model, &idx, &off, &rates, None, &ctl, &mut |_| true);
        assert!(matches!(end, RunEnd::Done), "{end:?}");
        assert!(want[want.len() - 1].loss < 0.5 * want[0].loss, "it trains");
        for ranges in [vec![(0, 128), (128, 192)], vec![(0, 64), (64, 128), (192, 128)]] {
            let k = ranges.len();
            let barrier = Arc::new(Barrier::new(k));
            let total: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
            let results: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = ranges
                    .iter()
                    .enumerate()
                    .map(|(rank, &(first, count))| {
                        let (barrier, total, f, y, model, p0) = (barrier.clone(), total.clone(), &f, &y, &model, &p0);
                        let (idx, off) = (&idx, &off);
                        scope.spawn(move || {
                            let mut shard = model.clone().shard(first, count).unwrap();
                            let p = p0.slice(ndarray::s![first..first + count, ..]).to_owned();
                            let mut st = KronState::with_points(
                                f,
                                Setup::squared(y.clone()),
                                &shard,
                                p,
                                GramMode::Precomputed.into(),
                                make_index,
                            )
                            .unwrap();
                            let mut alpha = Coefficients::zeros(n, count, 1).unwrap();
                            let mut exchange = |words: &mut [i64]| {
                                {
                                    let mut t = total.lock().unwrap();
                                    if t.len() != words.len() {
                                        *t = vec![0; words.len()];
                                    }
                                    t.iter_mut().zip(words.iter()).for_each(|(a, b)| *a += b);
                                }
                                barrier.wait();
                                words.copy_from_slice(&total.lock().unwrap());
                                if barrier.wait().is_leader() {
                                    total.lock().unwrap().clear();
                                }
                                barrier.wait();
                                true
                            };
                            let ctl = Control::new();
                            let (stats, end) = run_sharded(
                                &mut st,
                                &mut alpha,
                                &mut shard,
                                idx,
                                off,
                                &rates,
                                None,
                                &ctl,
                                &mut exchange,
                            );
                            assert!(matches!(end, RunEnd::Done), "rank {rank}: {end:?}");
                            // Rank 0 alone is given an index out of range.
                            let bad = if rank == 0 { [0, n + 3] } else { [0, 1] };
                            let before = st.preacts_t().to_owned();
                            let (none, end) = run_sharded(
                                &mut st,
                                &mut alpha,
                                &mut shard,
                                &bad,
                                &[0, 2],
                                &rates,
                                None,
                                &ctl,
                                &mut exchange,
                            );
                            assert!(none.is_empty());
                            match end {
                                RunEnd::Failed { local, changed: false } => assert_eq!(local.is_some(), rank == 0),
                                other => panic!("rank {rank}: {other:?}"),
                            }
                            assert_eq!(st.preacts_t(), before.view());
                            (stats, st.preacts_t().to_owned())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for ((stats, p), &(first, count)) in results.iter().zip(&ranges) {
                let bits = |s: &[StepStats]| {
                    s.iter().map(|s| (s.loss.to_bits(), s.fired_union, s.fired_total)).collect::<Vec<_>>()
                };
                assert_eq!(bits(stats), bits(&want));
                assert_eq!(p.view(), whole.preacts_t().slice(ndarray::s![first..first + count, ..]));
            }
        }
    }
}
