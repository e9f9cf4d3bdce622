//! The asynchronous tree (docs/design.md, "The asynchronous tree"): the activated-neuron index the
//! algorithm is named for.
//!
//! One max-tree per training point i over its m preactivations P[i, ·]. Each
//! internal node holds the max of its children, so `query(i, τ)` — every r
//! with P[i, r] > τ — descends only into subtrees whose max exceeds τ:
//! O(k · F · log_F m) work for k results instead of a scan's O(m). With
//! per-neuron thresholds b_r (a trainer's index) the leaves are P[i, r] − b_r
//! and the query is τ = 0: r fires iff P[i, r] > b_r, since the rounded
//! difference of two finite numbers is positive exactly when the first is
//! larger. A change of b_r is logged like a change of P[:, r].
//!
//! *Asynchronous* maintenance: the step writes P eagerly (the leaves are P
//! itself, never copied) and only appends the changed neurons to a shared log
//! (`mark_changed`, O(|R|), not O(n · |R|)). Tree i is brought up to date the
//! next time it is queried: the dirty leaves logged since its cursor are
//! deduplicated and each dirty ancestor is recomputed once, bottom-up, however
//! many steps touched it. Trees of points outside the batch lag and coalesce
//! many steps of changes into one sync; when a row has fallen so far behind
//! that an incremental sync would cost more than a rebuild (more than m/F
//! pending leaves, or its log prefix dropped), it is rebuilt in O(m).
//!
//! Fan-out F = 8: a node's children are one 64-byte cache line of f64, the
//! tree is shallow (log_8 m levels: 6 for m = 2^18), and the overhead is
//! ⌈m/8⌉ + ⌈m/64⌉ + … ≈ m/7 f64 per point, i.e. 8·n·m/7 bytes (about 14% of
//! P), plus the log (at most 2·⌈m/8⌉ + |R| u32) and one u64 cursor per point.
//! Syncs and queries of different points run in parallel (rayon, one tree per
//! task, disjoint memory, no locks).

use super::activation::{ActivationIndex, IndexStats};
use crate::elem::Elem;
use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;

/// Children per internal node.
pub const FANOUT: usize = 8;

/// Node counts per level, bottom (parents of leaves) to root, and where each
/// level starts inside one point's node block.
#[derive(Clone, Debug)]
struct Shape {
    m: usize,
    sizes: Vec<usize>,
    offsets: Vec<usize>,
    per_row: usize,
}

impl Shape {
    fn new(m: usize) -> Shape {
        let (mut sizes, mut offsets) = (Vec::new(), Vec::new());
        let (mut width, mut total) = (m.max(1), 0);
        loop {
            let nodes = width.div_ceil(FANOUT);
            offsets.push(total);
            sizes.push(nodes);
            total += nodes;
            if nodes == 1 {
                break;
            }
            width = nodes;
        }
        Shape { m, sizes, offsets, per_row: total }
    }

    fn root(&self) -> usize {
        self.offsets[self.sizes.len() - 1]
    }
}

/// Internal nodes of one point's tree over m leaves.
pub fn nodes_per_row(m: usize) -> usize {
    Shape::new(m).per_row
}

pub struct AsyncTree {
    n: usize,
    shape: Shape,
    /// n × per_row maxima, one contiguous block per point.
    nodes: Vec<f64>,
    /// Neurons changed by the steps, oldest first; `log[0]` has global
    /// position `log_base`.
    log: Vec<u32>,
    log_base: u64,
    /// Global log position each point's tree is synced up to.
    cursor: Vec<u64>,
    stats: IndexStats,
}

/// Leaf r of a row: its value, less its neuron's threshold when the tree
/// has them.
#[inline]
fn leaf<T: Elem>(row: &ArrayView1<'_, T>, offsets: Option<&[f64]>, r: usize) -> f64 {
    match offsets {
        Some(b) => row[r].to_f64() - b[r],
        None => row[r].to_f64(),
    }
}

/// Max of the leaves of level-0 node `j`: values r in [j·F, (j+1)·F) ∩ [0, m).
fn leaf_max<T: Elem>(row: &ArrayView1<'_, T>, offsets: Option<&[f64]>, j: usize, m: usize) -> f64 {
    let stop = ((j + 1) * FANOUT).min(m);
    (j * FANOUT..stop).map(|r| leaf(row, offsets, r)).fold(f64::NEG_INFINITY, f64::max)
}

fn node_max(block: &[f64], child_off: usize, child_count: usize, j: usize) -> f64 {
    let stop = ((j + 1) * FANOUT).min(child_count);
    block[child_off + j * FANOUT..child_off + stop].iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Rebuilds one point's tree from its leaves.
fn rebuild<T: Elem>(
    shape: &Shape,
    block: &mut [f64],
    row: &ArrayView1<'_, T>,
    offsets: Option<&[f64]>,
    st: &mut IndexStats,
) {
    for (j, node) in block[..shape.sizes[0]].iter_mut().enumerate() {
        *node = leaf_max(row, offsets, j, shape.m);
    }
    for lvl in 1..shape.sizes.len() {
        let (child_off, child_count) = (shape.offsets[lvl - 1], shape.sizes[lvl - 1]);
        for j in 0..shape.sizes[lvl] {
            block[shape.offsets[lvl] + j] = node_max(block, child_off, child_count, j);
        }
    }
    st.full_rebuilds += 1;
    st.values_read += shape.m as u64;
    st.nodes_recomputed += shape.per_row as u64;
}

/// Recomputes the ancestors of the dirty leaves, each once, bottom-up.
fn sync_dirty<T: Elem>(
    shape: &Shape,
    block: &mut [f64],
    row: &ArrayView1<'_, T>,
    offsets: Option<&[f64]>,
    dirty: &[u32],
    st: &mut IndexStats,
) {
    let mut ids: Vec<usize> = dirty.iter().map(|&r| r as usize / FANOUT).collect();
    ids.sort_unstable();
    ids.dedup();
    for &j in &ids {
        block[j] = leaf_max(row, offsets, j, shape.m);
    }
    st.values_read += (ids.len() * FANOUT) as u64;
    st.nodes_recomputed += ids.len() as u64;
    for lvl in 1..shape.sizes.len() {
        // Sorted input stays sorted under j / F, so dedup suffices.
        for id in ids.iter_mut() {
            *id /= FANOUT;
        }
        ids.dedup();
        let (child_off, child_count) = (shape.offsets[lvl - 1], shape.sizes[lvl - 1]);
        for &j in &ids {
            block[shape.offsets[lvl] + j] = node_max(block, child_off, child_count, j);
        }
        st.nodes_recomputed += ids.len() as u64;
    }
}

/// Every r whose leaf exceeds tau, ascending, from an up-to-date tree.
fn collect_above<T: Elem>(
    shape: &Shape,
    block: &[f64],
    row: &ArrayView1<'_, T>,
    offsets: Option<&[f64]>,
    tau: f64,
    out: &mut Vec<u32>,
) {
    let top = shape.sizes.len() - 1;
    if !(block[shape.root()] > tau) {
        return;
    }
    // Depth-first, children in order, so results come out sorted.
    let mut stack: Vec<(usize, usize)> = vec![(top, 0)];
    while let Some((lvl, j)) = stack.pop() {
        if lvl == 0 {
            let stop = ((j + 1) * FANOUT).min(shape.m);
            for r in j * FANOUT..stop {
                if leaf(row, offsets, r) > tau {
                    out.push(r as u32);
                }
            }
            continue;
        }
        let (child_off, child_count) = (shape.offsets[lvl - 1], shape.sizes[lvl - 1]);
        let stop = ((j + 1) * FANOUT).min(child_count);
        for c in (j * FANOUT..stop).rev() {
            if block[child_off + c] > tau {
                stack.push((lvl - 1, c));
            }
        }
    }
}

impl AsyncTree {
    /// Its name, as accepted by `Trainer(index=...)` (`IndexKind::NAMES`).
    pub const NAME: &'static str = "tree";

    /// Builds the trees of all rows of `values` (n × m), in parallel, for
    /// queries at any τ (`query`, `query_many`).
    pub fn new<T: Elem>(values: ArrayView2<'_, T>) -> AsyncTree {
        Self::build(values, None)
    }

    /// Builds the trees over the leaves P[i, r] − thresholds[r], for a
    /// trainer's fire sets (`ActivationIndex::fire_sets` with the same
    /// thresholds, or newer ones whose changes were logged).
    pub fn with_offsets<T: Elem>(values: ArrayView2<'_, T>, thresholds: &[f64]) -> AsyncTree {
        Self::build(values, Some(thresholds))
    }

    fn build<T: Elem>(values: ArrayView2<'_, T>, offsets: Option<&[f64]>) -> AsyncTree {
        let (n, m) = values.dim();
        let shape = Shape::new(m);
        let mut nodes = vec![f64::NEG_INFINITY; n * shape.per_row];
        if m > 0 {
            nodes.par_chunks_mut(shape.per_row).enumerate().for_each(|(i, block)| {
                rebuild(&shape, block, &values.row(i), offsets, &mut IndexStats::default());
            });
        }
        AsyncTree { n, shape, nodes, log: Vec::new(), log_base: 0, cursor: vec![0; n], stats: IndexStats::default() }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn m(&self) -> usize {
        self.shape.m
    }

    pub fn fanout(&self) -> usize {
        FANOUT
    }

    /// Brings tree i up to date with `values` (which must hold every change
    /// reported through `mark_changed`).
    pub fn sync_row<T: Elem>(&mut self, values: ArrayView2<'_, T>, i: usize) {
        let per_row = self.shape.per_row;
        let block = &mut self.nodes[i * per_row..(i + 1) * per_row];
        let st = sync_one(&self.shape, block, &values.row(i), None, &mut self.cursor[i], &self.log, self.log_base);
        self.stats.add(&st);
    }

    /// Every r with values[i, r] > tau, ascending. Tree i must be synced
    /// (`sync_row`) since the last `mark_changed`, or the answer may be stale.
    pub fn query_row<T: Elem>(&self, values: ArrayView2<'_, T>, i: usize, tau: f64) -> Vec<u32> {
        let per_row = self.shape.per_row;
        let mut out = Vec::new();
        if self.shape.m > 0 {
            collect_above(
                &self.shape,
                &self.nodes[i * per_row..(i + 1) * per_row],
                &values.row(i),
                None,
                tau,
                &mut out,
            );
        }
        out
    }

    /// Sync, then query: always exact.
    pub fn query<T: Elem>(&mut self, values: ArrayView2<'_, T>, i: usize, tau: f64) -> Vec<u32> {
        self.sync_row(values, i);
        self.query_row(values, i, tau)
    }
}

/// Syncs one point's tree from the log; returns the work done.
fn sync_one<T: Elem>(
    shape: &Shape,
    block: &mut [f64],
    row: &ArrayView1<'_, T>,
    offsets: Option<&[f64]>,
    cursor: &mut u64,
    log: &[u32],
    log_base: u64,
) -> IndexStats {
    let mut st = IndexStats::default();
    let end = log_base + log.len() as u64;
    if *cursor == end || shape.m == 0 {
        *cursor = end;
        return st;
    }
    st.rows_synced = 1;
    // A rebuild reads m leaves; an incremental sync about F per dirty leaf.
    if *cursor < log_base || (end - *cursor) as usize > shape.m / FANOUT {
        rebuild(shape, block, row, offsets, &mut st);
    } else {
        sync_dirty(shape, block, row, offsets, &log[(*cursor - log_base) as usize..], &mut st);
    }
    *cursor = end;
    st
}

impl AsyncTree {
    /// Fire sets of `rows` (synced and queried in parallel, each distinct
    /// row once): leaves above `tau`, the leaves shifted by `offsets` when
    /// given (a trainer's thresholds; the tree must have been built with
    /// offsets then, and without them otherwise).
    pub fn query_many<T: Elem>(
        &mut self,
        values: ArrayView2<'_, T>,
        rows: &[usize],
        offsets: Option<&[f64]>,
        tau: f64,
    ) -> Vec<Vec<u32>> {
        // Distinct rows, each synced and queried once, one task per tree.
        let mut distinct: Vec<usize> = rows.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut slot = vec![usize::MAX; self.n];
        for (k, &i) in distinct.iter().enumerate() {
            slot[i] = k;
        }
        let (shape, log, log_base) = (&self.shape, &self.log, self.log_base);
        let found: Vec<(usize, Vec<u32>, IndexStats)> = self
            .nodes
            .par_chunks_mut(shape.per_row.max(1))
            .zip(self.cursor.par_iter_mut())
            .enumerate()
            .filter(|(i, _)| slot[*i] != usize::MAX)
            .map(|(i, (block, cursor))| {
                let row = values.row(i);
                let st = sync_one(shape, block, &row, offsets, cursor, log, log_base);
                let mut out = Vec::new();
                if shape.m > 0 {
                    collect_above(shape, block, &row, offsets, tau, &mut out);
                }
                (slot[i], out, st)
            })
            .collect();
        self.stats.queries += distinct.len() as u64;
        let mut by_slot: Vec<Vec<u32>> = vec![Vec::new(); distinct.len()];
        for (k, out, st) in found {
            self.stats.add(&st);
            by_slot[k] = out;
        }
        rows.iter().map(|&i| by_slot[slot[i]].clone()).collect()
    }

    /// Neurons `cols` (sorted, distinct) changed in every row.
    pub fn log_changed(&mut self, cols: &[u32]) {
        if cols.is_empty() {
            return;
        }
        self.log.extend_from_slice(cols);
        // Rows further behind than m/F entries rebuild anyway, so older
        // entries are never read: keep the log O(m).
        let keep = (self.shape.m / FANOUT).max(1);
        if self.log.len() > 2 * keep + cols.len() {
            let drop = self.log.len() - keep;
            self.log.drain(..drop);
            self.log_base += drop as u64;
        }
    }

    /// Work done so far.
    pub fn work(&self) -> IndexStats {
        self.stats
    }

    /// Bytes of the tree's own structure (internal nodes, log, cursors).
    pub fn bytes(&self) -> usize {
        self.nodes.len() * 8 + self.log.capacity() * 4 + self.cursor.len() * 8
    }
}

impl<T: Elem> ActivationIndex<T> for AsyncTree {
    fn fire_sets(&mut self, values: ArrayView2<'_, T>, rows: &[usize], thresholds: &[f64]) -> Vec<Vec<u32>> {
        self.query_many(values, rows, Some(thresholds), 0.0)
    }

    fn mark_changed(&mut self, cols: &[u32]) {
        self.log_changed(cols);
    }

    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn memory_bytes(&self) -> usize {
        self.bytes()
    }

    fn stats(&self) -> IndexStats {
        self.work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::activation::LinearScan;
    use ndarray::Array2;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// New values for these columns in every row.
        Update(Vec<usize>, Vec<f64>),
        /// Query these rows (may repeat) at this threshold.
        Query(Vec<usize>, f64),
    }

    /// Values from a small set so that ties (and ties at τ) are frequent.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![(-3i32..4).prop_map(|k| k as f64 * 0.5), -5.0..5.0f64]
    }

    fn threshold() -> impl Strategy<Value = f64> {
        prop_oneof![Just(f64::INFINITY), Just(f64::NEG_INFINITY), value()]
    }

    fn case() -> impl Strategy<Value = (usize, usize, Vec<f64>, Vec<Op>)> {
        (1usize..6, prop_oneof![Just(1usize), Just(8), Just(9), 1usize..300]).prop_flat_map(|(n, m)| {
            let op = prop_oneof![
                (prop::collection::vec(0..m, 0..m.min(40) + 1), prop::collection::vec(value(), n * 40)).prop_map(
                    |(mut cols, vals)| {
                        cols.sort_unstable();
                        cols.dedup();
                        Op::Update(cols, vals)
                    }
                ),
                (prop::collection::vec(0..n, 1..5), threshold()).prop_map(|(rows, t)| Op::Query(rows, t)),
            ];
            (Just(n), Just(m), prop::collection::vec(value(), n * m), prop::collection::vec(op, 1..60))
        })
    }

    fn apply(values: &mut Array2<f64>, cols: &[usize], vals: &[f64], tree: &mut AsyncTree) {
        let n = values.nrows();
        for (k, &c) in cols.iter().enumerate() {
            for i in 0..n {
                values[[i, c]] = vals[(k * n + i) % vals.len()];
            }
        }
        let cols: Vec<u32> = cols.iter().map(|&c| c as u32).collect();
        tree.log_changed(&cols);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn tree_matches_linear_scan((n, m, init, ops) in case()) {
            let mut values = Array2::from_shape_vec((n, m), init).unwrap();
            let mut tree = AsyncTree::new(values.view());
            for op in &ops {
                match op {
                    Op::Update(cols, vals) => apply(&mut values, cols, vals, &mut tree),
                    Op::Query(rows, tau) => {
                        let got = tree.query_many(values.view(), rows, None, *tau);
                        let want = LinearScan::default().fire_sets(values.view(), rows, &vec![*tau; m]);
                        prop_assert_eq!(got, want);
                    }
                }
            }
            // Every row, however long it lagged, answers exactly at the end.
            for i in 0..n {
                for tau in [f64::NEG_INFINITY, -0.5, 0.0, 0.5, f64::INFINITY] {
                    prop_assert_eq!(tree.query(values.view(), i, tau), LinearScan::default().fire_sets(values.view(), &[i], &vec![tau; m]).remove(0));
                }
            }
        }
    }

    #[test]
    fn strided_and_transposed_values_work() {
        // The trainer hands the index a transposed (neuron-major) view.
        let (n, m) = (5, 77);
        let pt = Array2::from_shape_fn((m, n), |(r, i)| ((r * 31 + i * 17) % 23) as f64 - 11.0);
        let p = pt.t();
        let mut tree = AsyncTree::new(p);
        for tau in [-3.0, 0.0, 5.0] {
            for i in 0..n {
                assert_eq!(tree.query(p, i, tau), LinearScan::default().fire_sets(p, &[i], &[tau; 77]).remove(0));
            }
        }
    }

    #[test]
    fn lagging_rows_coalesce_then_rebuild() {
        let (n, m) = (3, 4096);
        let mut values = Array2::from_shape_fn((n, m), |(i, r)| ((r * 7 + i) % 13) as f64);
        let mut tree = AsyncTree::new(values.view());
        // A few small steps: row 0 syncs incrementally, once, coalesced.
        for step in 0..5u32 {
            let cols = [step * 100, step * 100 + 1];
            for &c in &cols {
                values[[0, c as usize]] = 100.0 + step as f64;
            }
            tree.log_changed(&cols);
        }
        assert_eq!(
            tree.query_many(values.view(), &[0], None, 99.0),
            vec![vec![0, 1, 100, 101, 200, 201, 300, 301, 400, 401]]
        );
        let st = tree.work();
        assert_eq!((st.rows_synced, st.full_rebuilds), (1, 0));
        // Ten leaves in five distinct level-0 nodes: 5 + their ancestors, not m/7.
        assert!(st.nodes_recomputed < 30, "{st:?}");
        // Row 2 lags far behind: more than m/F changes -> one full rebuild.
        for step in 0..200u32 {
            let cols: Vec<u32> = (0..8).map(|k| (step * 8 + k) % m as u32).collect();
            for &c in &cols {
                values[[2, c as usize]] = -1.0;
            }
            tree.log_changed(&cols);
        }
        assert!(tree.log.len() <= 2 * (m / FANOUT) + 8, "log is bounded: {}", tree.log.len());
        let want = LinearScan::default().fire_sets(values.view(), &[2], &vec![11.5; m]);
        assert!(want[0].len() > 100 && want[0][0] >= 1600);
        assert_eq!(tree.query_many(values.view(), &[2], None, 11.5), want);
        assert_eq!(tree.work().full_rebuilds, 1);
        assert_eq!(
            tree.query(values.view(), 2, 11.0),
            LinearScan::default().fire_sets(values.view(), &[2], &vec![11.0; m]).remove(0)
        );
    }

    #[test]
    fn same_results_on_one_and_two_threads() {
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let (n, m) = (40, 1000);
                let mut values = Array2::from_shape_fn((n, m), |(i, r)| (((i * 131 + r * 71) % 97) as f64) / 10.0);
                let mut tree = AsyncTree::new(values.view());
                let mut out = Vec::new();
                for step in 0..50usize {
                    let cols: Vec<u32> = (0..30).map(|k| ((step * 37 + k * 11) % m) as u32).collect();
                    let mut cols = cols;
                    cols.sort_unstable();
                    cols.dedup();
                    for &c in &cols {
                        for i in 0..n {
                            values[[i, c as usize]] = ((step * 7 + i * 3 + c as usize) % 101) as f64 / 10.0;
                        }
                    }
                    tree.log_changed(&cols);
                    let rows: Vec<usize> = (0..8).map(|k| (step * 5 + k * 3) % n).collect();
                    out.push(tree.query_many(values.view(), &rows, None, 8.5));
                }
                out
            })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn memory_overhead_is_about_one_seventh_of_p() {
        let (n, m) = (4, 1 << 12);
        let values = Array2::<f64>::zeros((n, m));
        let tree = AsyncTree::new(values.view());
        let p_bytes = n * m * 8;
        let ratio = tree.bytes() as f64 / p_bytes as f64;
        assert!(ratio > 0.14 && ratio < 0.15, "overhead ratio {ratio}");
    }
}
