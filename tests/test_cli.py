"""The `kronnet` command and `python -m kronnet`."""

import ast
import inspect
import re
import subprocess
import sys
import textwrap

import kronnet
import pytest
from kronnet import cli
from kronnet.cli import demo

ARGS = [
    "demo",
    "--n",
    "64",
    "--dims",
    "8",
    "8",
    "--width",
    "256",
    "--steps",
    "400",
    "--compare-steps",
    "2",
    "--no-progress",
]

NUMBER = r"(-?[0-9][0-9,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)"


def number(pattern, out):
    m = re.search(pattern.replace("NUM", NUMBER), out)
    assert m, f"{pattern!r} not in the output:\n{out}"
    return float(m.group(1).replace(",", ""))


def check_demo_output(out):
    assert number(r"the loss fell NUM×", out) > 100
    assert "Kronecker backend" in out and "dense training" in out
    assert "the same loss on every step" in out
    assert number(r"largest relative difference NUM", out) < 1e-9
    assert re.search(r"[0-9.]+× (faster|slower) per step", out)
    assert number(r"NUM steps/s", out) > 0
    # What was trained, in plain words, with d computed from the factors.
    assert "n = 64 points" in out and "m = 256 hidden neurons" in out
    assert "sizes 8 and 8, so it has d = 8 × 8 = 64 features" in out
    # No internal terms, no unexplained ratios.
    for internal in ("P(0)", "GEMM", "moved per step", "n × ", "of the variance", "index="):
        assert internal not in out, internal
    # The held-out R² agrees with the error and variance printed beside it,
    # and with the last held-out loss (half the mean squared error).
    r2 = number(r"held-out R² = NUM \(1 = perfect, 0 = no better than predicting the mean\)", out)
    mse = number(r"mean squared error NUM on held-out targets", out)
    var = number(r"held-out targets of variance NUM", out)
    assert r2 == pytest.approx(1 - mse / var, abs=0.006)
    last_val = float(re.findall(r"^\s+400\s+\S+\s+(\S+)$", out, re.M)[-1])
    assert mse == pytest.approx(2 * last_val, rel=1e-2)


def test_console_script_demo():
    out = subprocess.run(["kronnet", *ARGS], capture_output=True, text=True, check=True).stdout
    check_demo_output(out)


def test_python_m_demo():
    out = subprocess.run([sys.executable, "-m", "kronnet", *ARGS], capture_output=True, text=True, check=True).stdout
    check_demo_output(out)


def test_r_squared_is_one_minus_the_residual_over_the_total_sum_of_squares():
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    pred = y + 0.3 * rng.normal(size=50)
    textbook = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert demo.r_squared(float(np.mean((y - pred) ** 2)), float(np.var(y))) == pytest.approx(textbook, rel=1e-12)
    assert demo.r_squared(float(np.var(y)), float(np.var(y))) == 0.0  # predicting the mean


def test_unknown_command_fails_cleanly():
    res = subprocess.run([sys.executable, "-m", "kronnet", "nope"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "invalid choice" in res.stderr


def test_version_prints_the_package_version():
    res = subprocess.run([sys.executable, "-m", "kronnet", "--version"], capture_output=True, text=True)
    assert res.returncode == 0
    assert res.stdout == f"kronnet {kronnet.__version__}\n"


def test_bare_kronnet_prints_the_help_and_succeeds():
    res = subprocess.run([sys.executable, "-m", "kronnet"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: kronnet")
    assert "demo" in res.stdout and "bench" in res.stdout and "--version" in res.stdout
    assert res.stderr == ""


def test_bare_bench_lists_the_sweeps_one_line_each(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["bench"]) == 0  # runs no sweep
    out = capsys.readouterr().out
    assert out.startswith("usage: kronnet bench")
    for sweep in cli.SWEEPS:
        assert re.search(rf"^ +{sweep.name} +{re.escape(sweep.help)}$", out, re.M), sweep.name
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == out


def sweep_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["bench", name, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def shown_flags(help_text):
    """The flags in a help's usage lines."""
    usage = help_text.split("\n\n")[0]
    return set(re.findall(r"\[(--[a-z0-9-]+)", usage))


def read_options(fn):
    """The `--flags` of the args.<name> a sweep function reads."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    names = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "args"
    }
    return {"--" + name.replace("_", "-") for name in names}


@pytest.mark.parametrize("sweep", cli.SWEEPS, ids=lambda s: s.name)
def test_each_sweep_shows_exactly_the_options_it_reads(sweep, capsys):
    out = sweep_help(sweep.name, capsys)
    assert out.startswith(f"usage: kronnet bench {sweep.name}")
    assert inspect.getdoc(sweep.run).split()[0] in out  # its own description
    reads = read_options(sweep.run)
    assert shown_flags(out) == reads | {"--threads"}
    assert set(sweep.options) | {"--threads"} == reads | {"--threads"}


def test_roofline_help_leaves_out_the_other_sweeps_options(capsys):
    out = sweep_help("roofline", capsys)
    for flag in ("--quick", "--out", "--threads", "--no-progress"):
        assert flag in out
    for flag in ("--max-width", "--max-d", "--e2e-steps", "--rounds", "--n ", "--width"):
        assert flag not in out
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["bench", "roofline", "--max-width", "1024"])
    assert exc.value.code == 2


#: The options of the single `kronnet bench` parser before each sweep had its own.
OLD_DEFAULTS = dict(
    n=512, width=2048, batch_size=8, steps=128, threads=2, dense_max_d=2**16, max_d=2**20, max_width=2**18,
    init_width=64, init_rank=8, e2e_steps=3000, gaussian_max_seconds=60.0, rounds=3, no_torch=False, quick=False,
    out="bench_results", no_progress=False, movielens="ml-100k",
)  # fmt: skip


@pytest.mark.parametrize("sweep", cli.SWEEPS, ids=lambda s: s.name)
def test_a_bare_sweep_reads_the_old_defaults(sweep):
    args = vars(cli.build_parser().parse_args(["bench", sweep.name]))
    assert args["command"] == "bench" and args["sweep"] == sweep.name
    for flag in read_options(sweep.run):
        name = flag[2:].replace("-", "_")
        if sweep.name == "large" and name in ("n", "width"):
            continue  # the old parser's 512 and 2048 stood for 10^6 and 1024 (below)
        if sweep.name == "churn" and name in ("n", "width"):
            continue  # read as max(n, 1024) and max(width, 4096) (below)
        assert args[name] == OLD_DEFAULTS[name], (sweep.name, name)
    large = cli.build_parser().parse_args(["bench", "large"])
    assert (large.n, large.width) == (1_000_000, 1024)
    churn = cli.build_parser().parse_args(["bench", "churn"])
    assert (max(churn.n, 1024), max(churn.width, 4096)) == (1024, 4096)


@pytest.mark.parametrize(
    "argv,expected",
    [
        (
            "scaling --quick --max-d 4096 --n 64 --width 256 --steps 8 --no-torch --out o --no-progress --threads 1",
            dict(quick=True, max_d=4096, n=64, width=256, steps=8, no_torch=True, out="o", no_progress=True, threads=1),
        ),
        ("index --quick --max-width 1024 --n 64 --batch-size 4", dict(quick=True, max_width=1024, n=64, batch_size=4)),
        ("init --quick --dense-max-d 4096 --n 64 --width 256", dict(quick=True, dense_max_d=4096, n=64, width=256)),
        ("pairs --quick --init-width 2", dict(quick=True, init_width=2)),
        (
            "endtoend --gaussian-max-seconds 10 --init-rank 4 --e2e-steps 30 --quick",
            dict(gaussian_max_seconds=10.0, init_rank=4, e2e_steps=30, quick=True),
        ),
        ("mpi --rounds 1 --steps 16 --batch-size 4", dict(rounds=1, steps=16, batch_size=4)),
        ("model --max-d 4096 --steps 8", dict(max_d=4096, steps=8)),
        ("large --n 2000 --width 64 --quick", dict(n=2000, width=64, quick=True)),
        ("churn --n 2048 --threads 1", dict(n=2048, threads=1)),
        ("roofline --quick --out docs", dict(quick=True, out="docs")),
        # Options every sweep took before, kept for scripts that pass them to all.
        ("churn --quick --out o --no-progress", dict(n=1024)),
        ("large --no-progress", dict(n=1_000_000)),
    ],
)
def test_old_invocations_still_parse_to_the_same_args(argv, expected):
    args = cli.build_parser().parse_args(["bench", *argv.split()])
    assert args.sweep == argv.split()[0]
    for name, value in expected.items():
        assert getattr(args, name) == value, name


def test_a_sweep_is_one_table_entry(monkeypatch, capsys):
    ran = []

    def toy(args):
        """A toy sweep."""
        ran.append((args.n, args.quick, args.threads))
        return 0

    monkeypatch.setattr(cli, "SWEEPS", cli.SWEEPS + (cli.Sweep("toy", "a toy sweep", toy, ("--n", "--quick")),))
    monkeypatch.setenv("KRONNET_BENCH_THREADS", "3")  # already pinned: run in this process
    assert cli.main(["bench", "toy", "--n", "5", "--threads", "3"]) == 0
    assert ran == [(5, False, 3)]
    assert "A toy sweep." in sweep_help("toy", capsys)
    monkeypatch.setattr(cli, "SWEEPS", (cli.Sweep("bad", "no such option", toy, ("--nope",)),))
    with pytest.raises(ValueError, match="--nope"):
        cli.build_parser()
