"""`kronnet bench` and the measurement helpers, on tiny shapes (smoke tests:
no timing is asserted, only that every figure is produced and sane)."""

import json
import subprocess
import sys

import kronnet as kn
import numpy as np
import pytest
from kronnet.cli import bench
from reference import ReferenceSGD, kron_rows


def test_numpy_dense_step_is_the_reference_step():
    data = kn.make_kronecker_data(20, dims=(4, 4), seed=0)
    net = kn.TwoLayerNet(data.dims, 64, seed=0)
    sgd = bench.NumpyDenseSGD(net, data, lr=30.0)
    ref = ReferenceSGD(net.initial_weights(), kron_rows(data.factors), data.y, net.a, net.threshold, 30.0)
    for b in bench.batches(20, 4, 10):
        assert sgd.step(b) == pytest.approx(ref.step(b), rel=1e-12)
    np.testing.assert_allclose(sgd.W, ref.W, rtol=1e-12, atol=1e-14)


def test_threshold_for_fraction_and_square_dims():
    assert bench.threshold_for_fraction(0.5) == pytest.approx(0.0, abs=1e-12)
    assert bench.threshold_for_fraction(0.001) == pytest.approx(3.0902, abs=1e-4)
    assert bench.square_dims(2**9) == (16, 32)
    with pytest.raises(ValueError, match="d:"):
        bench.square_dims(100)


def run_cli(tmp_path, *args):
    out = subprocess.run(
        [sys.executable, "-m", "kronnet", "bench", *args, "--out", str(tmp_path), "--no-progress", "--threads", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_roofline_cell_reports_each_rounds_own_ratio_and_their_median():
    """Each round's bound is max(bytes / its bandwidth, flops / its peak)
    for the bytes a step must move by the documented formula; the cell's
    figures are the medians over the rounds and the ratio's range."""
    cell = bench.roofline_cell(300, 64, "float64", steps=6, rounds=3)
    assert cell is not None and len(cell["rounds"]) == 3
    for r in cell["rounds"]:
        p_bytes = 2.0 * 300 * r["fired_union"] * 8
        assert r["p_bytes"] == pytest.approx(p_bytes, rel=1e-12)
        assert r["flops"] == pytest.approx(2.0 * 300 * r["fired_total"], rel=1e-12)
        bound = max(r["bytes"] / (r["stream_gbytes"] * 1e9), r["flops"] / (r["fma_gflops"] * 1e9))
        assert r["bound_seconds"] == pytest.approx(bound, rel=1e-12)
        assert r["ratio"] == pytest.approx(r["step_seconds"] / bound, rel=1e-12)
        # The cached bound: bandwidth of a buffer the size of one step's
        # fired rows of P and its 8 rows of K.
        assert r["working_bytes"] == pytest.approx(r["fired_union"] * 300 * 8 + 8 * 300 * 8, abs=1.0)
        cached = max(r["bytes"] / (r["working_stream_gbytes"] * 1e9), r["flops"] / (r["fma_gflops"] * 1e9))
        assert r["bound_cached_seconds"] == pytest.approx(cached, rel=1e-12)
        assert r["ratio_cached"] == pytest.approx(r["step_seconds"] / cached, rel=1e-12)
        assert r["step_seconds"] > 0 and r["stream_gbytes"] > 0
    ratios = sorted(r["ratio"] for r in cell["rounds"])
    assert cell["ratio"] == ratios[1] and (cell["ratio_min"], cell["ratio_max"]) == (ratios[0], ratios[2])
    cached_ratios = sorted(r["ratio_cached"] for r in cell["rounds"])
    assert cell["ratio_cached"] == cached_ratios[1]
    assert (cell["ratio_cached_min"], cell["ratio_cached_max"]) == (cached_ratios[0], cached_ratios[2])
    assert cell["step_seconds"] == sorted(r["step_seconds"] for r in cell["rounds"])[1]
    assert cell["n"] == 300 and cell["width"] == 64 and cell["state_bytes"] == 300 * 64 * 8


def test_bench_scaling_cli_writes_results(tmp_path):
    out = run_cli(
        tmp_path, "scaling", "--quick", "--max-d", "4096", "--n", "64", "--width", "256", "--steps", "8", "--no-torch"
    )
    assert "| d | kron step |" in out
    payload = json.loads((tmp_path / "bench_scaling.json").read_text())
    assert payload["meta"]["threads"] == 1
    rows = payload["results"]
    assert [r["d"] for r in rows] == [2**8, 2**12]
    for r in rows:
        assert r["step_seconds"] > 0 and r["init_seconds"] > 0
        assert r["numpy_step_seconds"] > 0 and r["dense_step_seconds"] > 0
        assert r["gemm_gflops"] > 0 and r["numpy_step_gemm_gflops"] > 0


def test_bench_index_cli_reports_every_index(tmp_path):
    out = run_cli(tmp_path, "index", "--quick", "--max-width", "1024", "--n", "64")
    payload = json.loads((tmp_path / "bench_index.json").read_text())
    assert {r["index"] for r in payload["results"]} == {"scan", "tree", "bits"}
    assert len(payload["results"]) == 2 * 3 * 3  # n in {64, 32} x 3 thresholds x 3 indexes
    assert "| n | m | b |" in out


def test_pair_init_measures_both_inits_of_the_same_points():
    r = bench.pair_init(150, (10, 20), (8, 8), 16, repeats=2)
    assert len(r["pair_seconds"]) == len(r["kron_seconds"]) == len(r["ratio"]) == 2
    assert min(r["pair_seconds"]) > 0 and min(r["kron_seconds"]) > 0
    assert r["max_abs_diff"] <= 1e-12 * r["max_abs_p0"]
    assert r["pair_bytes"] < r["kron_bytes"]


def test_bench_init_cli_times_p0_against_numpy(tmp_path):
    out = run_cli(tmp_path, "init", "--quick", "--dense-max-d", "4096", "--n", "64", "--width", "256")
    assert "| d | kronnet P(0) ms | NumPy X W0^T ms (rate) | ratio (quartiles) | normals / NumPy time |" in out
    payload = json.loads((tmp_path / "bench_init.json").read_text())
    rows = payload["results"]
    assert [r["d"] for r in rows] == [2**8, 2**12]
    rate = payload["normals_per_second"]
    for r in rows:
        assert r["n"] == 64 and r["width"] == 256 and r["rounds"] == 3
        assert r["kronnet_seconds"] > 0 and r["numpy_seconds"] > 0
        assert r["ratio_q1"] <= r["ratio"] <= r["ratio_q3"]
        assert r["numpy_gflops"] == pytest.approx(2 * 64 * r["d"] * 256 / r["numpy_seconds"] / 1e9, rel=1e-12)
        assert r["normals_share"] == pytest.approx(256 * r["d"] / rate / r["numpy_seconds"], rel=1e-12)


def test_bench_pairs_cli_reports_the_ratio(tmp_path):
    out = run_cli(tmp_path, "pairs", "--quick", "--init-width", "2")
    assert "| pairs | entities | d |" in out
    (row,) = json.loads((tmp_path / "bench_pairs.json").read_text())["results"]
    assert row["n_pairs"] == 20000 and row["entities"] == [100, 200] and row["dims"] == [256, 256]


def test_mpi_bench_jobs_agree_and_count_their_messages():
    pytest.importorskip("mpi4py")
    from kronnet.cli import mpi_bench
    from kronnet.placement import EXACT_WORDS

    cfg = dict(n=64, width=256, dims=[4, 4], batch_size=4, index="auto", warmup=3, steps=20)
    one = mpi_bench.run(cfg, None, 1)
    two = mpi_bench.run(cfg, 2, 1)
    # The same training, bitwise, on one process and on two ranks.
    assert two["loss"] == one["loss"] and two["last_batch_loss"] == one["last_batch_loss"]
    assert [r["p_rows"] for r in two["per_rank"]] == [128, 128]
    # One Allreduce per step, S exact sums, the head's two maxima and 5
    # counters (int64), plus a 3-word status message closing the run.
    per_step = 8 * ((4 + 2) * EXACT_WORDS + 5) + 8 * 3 / cfg["steps"]
    assert all(r["bytes_per_step"] == pytest.approx(per_step, rel=1e-12) for r in two["per_rank"])
    assert one["per_rank"][0]["bytes_per_step"] == 0


def test_endtoend_table_reports_init_and_predict_rates():
    from kronnet.cli import sweeps

    row = dict(
        d=2**30, dims=[32768, 32768], init_kind="kron", init_rank=8, data=1.0, init=20.0, train=0.5,
        predict=5.0, predicted=100, total=26.5, peak_rss_bytes=600 * 2**20, loss_start=0.5, loss_end=1e-3,
        init_flops=1.0e12, predict_flops=2.0e11,
    )  # fmt: skip
    out = sweeps.endtoend_table([row])
    assert "20.00 (50 GF/s)" in out  # 1e12 flops in 20 s
    assert "5.00 (100 pts, 40 GF/s)" in out  # 2e11 flops in 5 s
    assert "| 2^30 | 32768 x 32768 | kron R=8 |" in out
    assert "| n/a |" in out  # no FMA peak measured


def test_contraction_floor_is_flops_at_peak_plus_two_passes_of_normals():
    run = dict(init_flops=1.0e12, predict_flops=2.0e11, fma_peak_gflops=100.0, normals_per_pass=1.0e9,
               normals_per_second=4.0e8)  # fmt: skip
    # 1.2e12 flops at 1e11 flop/s, and 2e9 normals at 4e8 per second.
    assert bench.contraction_floor(run) == pytest.approx(12.0 + 5.0, rel=1e-12)
    assert bench.contraction_floor({**run, "fma_peak_gflops": None}) is None
    # At 50 GF/s instead of the peak the flops take 24 s; the measured data
    # and training phases are added on top.
    run.update(data=1.5, new_data=0.25, train=0.75)
    assert bench.pipeline_at_rate(run, 50.0) == pytest.approx(1.5 + 0.25 + 0.75 + 24.0 + 5.0, rel=1e-12)


def test_end_to_end_reports_every_phase_and_the_machine_ceilings():
    r = bench.end_to_end((4, 4), 16, 32, "kron", 2, 5, 3, batch_size=4, roofline_seconds=0.02)
    for phase in ["data", "init", "train", "new_data", "predict"]:
        assert r[phase] > 0
    assert r["total"] >= r["init"] + r["predict"]
    assert r["normals_per_pass"] == 32 * 2 * (4 + 4)
    assert r["init_flops"] == 2.0 * 16 * r["normals_per_pass"]
    assert r["normals_per_second"] > 0
    if r["fma_peak_gflops"] is not None:
        assert r["floor"] == pytest.approx(bench.contraction_floor(r), rel=1e-12) and r["floor"] > 0
    from kronnet.cli import sweeps

    assert f"{r['total']:.2f}" in sweeps.endtoend_table([r])


@pytest.mark.parametrize("quick,ran", [(True, [2**12, 2**18]), (False, [2**12, 2**14, 2**16, 2**18, 2**20])])
def test_endtoend_sweep_stops_gaussian_init_past_the_limit_or_its_projection(monkeypatch, tmp_path, quick, ran):
    from kronnet import cli
    from kronnet.cli import sweeps

    calls = []

    def fake_run(dims, n, width, init, init_rank, steps, predicted, batch_size=8, roofline_seconds=1.0):
        d = int(np.prod(dims))
        calls.append((init, d))
        # Gaussian init's pipeline, linear in d: 0.05 s at 2^12, 12.8 s at 2^20.
        total = 0.05 * d / 2**12 if init == "gaussian" else 1.0
        return dict(d=d, dims=list(dims), total=total, init_kind=init, data=0.5, new_data=0.25, train=0.25,
                    init_flops=1.0e12, predict_flops=2.0e11, normals_per_pass=1.0e9, normals_per_second=4.0e8)  # fmt: skip

    monkeypatch.setattr(bench, "end_to_end", fake_run)
    monkeypatch.setattr(bench, "numpy_gemm_seconds", lambda *a, **k: 1.0)
    monkeypatch.setattr(sweeps, "endtoend_table", lambda results: "")
    monkeypatch.setattr(sweeps, "plot_endtoend", lambda results, path: None)
    args = cli.build_parser().parse_args(
        ["bench", "endtoend", "--out", str(tmp_path), "--no-progress", "--gaussian-max-seconds", "10"]
        + (["--quick"] if quick else [])
    )
    assert sweeps.endtoend(args) == 0
    # Full sweep (x4 in d): runs until the first total past 10 s (2^20:
    # 12.8 s). Quick sweep (x64): 2^18 takes 3.2 s, so 2^24 projects to
    # 205 s > 4 x 10 and is skipped although no run passed the limit.
    assert [d for init, d in calls if init == "gaussian"] == ran
    # The p = 2 runs at d = 2^30 get the pipeline at the BLAS rate: the
    # block GEMM's flops in the (faked) 1 s, then 1.2e12 flops at that rate
    # plus 5 s of normals plus the 1 s of measured phases.
    saved = json.loads((tmp_path / "bench_endtoend.json").read_text())
    blas = 2.0 * args.n * 32768 * 256 / 1e9
    assert saved["numpy_block_gemm_gflops"] == pytest.approx(blas, rel=1e-12)
    p2 = [r for r in saved["results"] if r["dims"] == [32768, 32768]]
    assert p2 and all(r["at_blas_rate"] == pytest.approx(1.0 + 1.2e12 / (blas * 1e9) + 5.0, rel=1e-12) for r in p2)
    assert all("at_blas_rate" not in r for r in saved["results"] if r["dims"] != [32768, 32768])
