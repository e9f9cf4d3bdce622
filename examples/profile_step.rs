//! Times the Kronecker step in pure Rust, for profiling without Python:
//! `cargo run --release --example profile_step -- [m] [index: scan|tree|bits] [n]`,
//! e.g. under `perf record`.
use kronnet::coef::Coefficients;
use kronnet::control::Control;
use kronnet::factors::{views, Factors};
use kronnet::index::{ActivationIndex, AsyncTree, FiredBits, LinearScan};
use kronnet::init::init_preacts_t;
use kronnet::model::{Model, Rates};
use kronnet::rng::{initial_weights, output_signs};
use kronnet::step::{GramMode, KronState, Setup};
use ndarray::Array2;
use std::time::Instant;

fn unit_rows(n: usize, d: usize, salt: u64) -> Array2<f64> {
    let mut z = vec![0.0; n * d];
    initial_weights(salt, 9, &mut z);
    let mut u = Array2::from_shape_vec((n, d), z).unwrap();
    for mut row in u.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / norm);
    }
    u
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let m: usize = args.get(1).map_or(2048, |a| a.parse().expect("m"));
    let kind = args.get(2).cloned().unwrap_or_else(|| "scan".into());
    let n: usize = args.get(3).map_or(512, |a| a.parse().expect("n"));
    let s = 8;
    let mats = vec![unit_rows(n, 16, 1), unit_rows(n, 16, 2)];
    let f = Factors::new(views(&mats)).unwrap();
    let b = (0.4 * (m as f64).ln()).sqrt();
    let mut model = Model::shared(output_signs(0, m), b).unwrap();
    let p0 = init_preacts_t(&f, 0, m, &Control::new()).unwrap();
    let mut alpha = Coefficients::zeros(n, m, 1).unwrap();
    let y: Vec<f64> = (0..n).map(|i| (i % 3) as f64 - 1.0).collect();
    let index = |v: ndarray::ArrayView2<'_, f64>, t: &[f64]| -> Box<dyn ActivationIndex> {
        match kind.as_str() {
            "tree" => Box::new(AsyncTree::with_offsets(v, t)),
            "bits" => Box::new(FiredBits::new(v, t)),
            _ => Box::new(LinearScan::default()),
        }
    };
    let mut st = KronState::new(mats.clone(), Setup::squared(y), &model, p0, GramMode::Precomputed, index).unwrap();
    let rates = Rates::w_only(99.0);
    let steps = 2000;
    let t = Instant::now();
    for k in 0..steps {
        let batch: Vec<usize> = (0..s).map(|j| (k * 8 + j * 61) % n).collect();
        st.step(&mut alpha, &mut model, &batch, &rates).unwrap();
    }
    let (upd_s, upd_f) = st.update_work();
    println!(
        "m {m} index {kind}: per step {:.3} ms, in the index {:.3} ms, step GEMM {:.3} ms ({:.1} GFLOP/s nominal)",
        t.elapsed().as_secs_f64() * 1e3 / steps as f64,
        st.index_seconds() * 1e3 / steps as f64,
        upd_s * 1e3 / steps as f64,
        upd_f / upd_s / 1e9
    );
}
