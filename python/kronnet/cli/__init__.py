"""The `kronnet` command: `kronnet demo` trains a network on generated
Kronecker data and compares it with dense training; `kronnet bench SWEEP`
runs one of the measurements (`kronnet bench --help` lists them).

Each sweep of `kronnet bench` is one entry of ``SWEEPS``: its name, a line of
help, the function that runs it and the options it reads (by flag, from
``BENCH_OPTIONS``); its sub-command is built from that entry alone."""

from __future__ import annotations

import argparse
import functools
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from . import real, sweeps

#: Every option a sweep can take, by flag: its argparse keywords. A sweep's
#: SWEEPS entry names those it reads; ``%(default)s`` shows its own default.
BENCH_OPTIONS: Dict[str, Dict[str, Any]] = {
    "--n": dict(type=int, default=512, help="training points (default %(default)s)"),
    "--width": dict(type=int, default=2048, help="hidden neurons m (default %(default)s)"),
    "--batch-size": dict(type=int, default=8, help="points per SGD step, S (default %(default)s)"),
    "--steps": dict(type=int, default=128, help="timed Kronecker steps per shape (default %(default)s)"),
    "--dense-max-d": dict(
        type=int, default=2**16, help="largest d of the dense baselines and of init (default %(default)s)"
    ),
    "--max-d": dict(type=int, default=2**20, help="largest input dimension d of the sweep (default %(default)s)"),
    "--max-width": dict(type=int, default=2**18, help="largest m of the sweep (default %(default)s)"),
    "--init-width": dict(type=int, default=64, help="neurons of the init comparison (default %(default)s)"),
    "--init-rank": dict(type=int, default=8, help="R of the Kronecker-factored init (default %(default)s)"),
    "--e2e-steps": dict(type=int, default=3000, help="training steps per run (default %(default)s)"),
    "--gaussian-max-seconds": dict(
        type=float,
        default=60.0,
        help="Gaussian init stops after the first d slower than this, or before a d its last"
        " run projects past 4x this (default %(default)s)",
    ),
    "--rounds": dict(type=int, default=3, help="alternating rounds of each job (default %(default)s)"),
    "--no-torch": dict(action="store_true", help="skip PyTorch even if installed"),
    "--movielens": dict(
        default="ml-100k",
        help="GroupLens's ml-100k folder (https://files.grouplens.org/datasets/movielens/ml-100k.zip; "
        "default %(default)s); skipped when absent",
    ),
    # Shared by most sweeps (SHARED_OPTIONS).
    "--quick": dict(action="store_true", help="fewer shapes, shorter runs"),
    "--out": dict(default="bench_results", help="folder for the JSON and plots (default %(default)s)"),
    "--no-progress": dict(action="store_true", help="no progress bar"),
}

#: Options every sweep accepts, so one command line can be reused across
#: sweeps; a sweep that does not read one accepts it silently (unlisted in
#: its help). `--threads` every sweep uses: the run is re-started pinned to it.
SHARED_OPTIONS = ("--quick", "--out", "--no-progress")


@dataclass(frozen=True)
class Sweep:
    """One sweep of `kronnet bench`.

    name: the sub-command; help: its line in `kronnet bench --help`; run:
    the function that runs it (its docstring is the sub-command's
    description); options: the BENCH_OPTIONS flags it reads (besides
    `--threads`); defaults: its own defaults, by flag, where they differ
    from BENCH_OPTIONS'."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    options: Tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)


#: The sweeps, in the order `kronnet bench --help` lists them.
SWEEPS: Tuple[Sweep, ...] = (
    Sweep(
        "scaling",
        "per-step time against d, beside the dense baselines",
        sweeps.scaling,
        (
            "--n",
            "--width",
            "--batch-size",
            "--steps",
            "--max-d",
            "--dense-max-d",
            "--no-torch",
            "--quick",
            "--out",
            "--no-progress",
        ),
    ),
    Sweep(
        "model",
        "the full model's step against the paper's, across d",
        sweeps.model,
        ("--n", "--width", "--batch-size", "--steps", "--max-d", "--quick", "--out", "--no-progress"),
    ),
    Sweep(
        "roofline",
        "the step against its lower bound; batch size; prediction time",
        sweeps.roofline,
        ("--quick", "--out", "--no-progress"),
    ),
    Sweep(
        "large",
        "training on 10^6 pairs (one process, or MPI ranks under mpiexec)",
        sweeps.large,
        ("--n", "--width", "--quick", "--out"),
        {"--n": 1_000_000, "--width": 1024},
    ),
    Sweep(
        "real",
        "MovieLens-100k and scikit-learn's data sets against KronRLS, SVD, Ridge and MLP",
        real.real,
        ("--movielens", "--quick", "--out"),
    ),
    Sweep(
        "index",
        "the activation indexes against n, m and the firing fraction",
        sweeps.index,
        ("--n", "--batch-size", "--max-width", "--quick", "--out", "--no-progress"),
    ),
    Sweep(
        "churn",
        "memory and predict time after trainers are built and dropped",
        sweeps.churn,
        ("--n", "--width"),
        {"--n": 1024, "--width": 4096},
    ),
    Sweep(
        "pairs",
        "PairData init against KronData init of the same points",
        sweeps.pairs,
        ("--init-width", "--quick", "--out"),
    ),
    Sweep(
        "init",
        "Gaussian init against NumPy's BLAS (X W(0)^T)",
        sweeps.init,
        ("--n", "--width", "--dense-max-d", "--quick", "--out", "--no-progress"),
    ),
    Sweep(
        "endtoend",
        "the whole pipeline against d: data, init, training, prediction",
        sweeps.endtoend,
        (
            "--n",
            "--width",
            "--init-rank",
            "--e2e-steps",
            "--gaussian-max-seconds",
            "--quick",
            "--out",
            "--no-progress",
        ),
    ),
    Sweep(
        "mpi",
        "sharded training on MPI ranks against one process",
        sweeps.mpi,
        ("--batch-size", "--steps", "--rounds", "--quick", "--out"),
    ),
)


def add_sweep(sub: Any, sweep: Sweep) -> argparse.ArgumentParser:
    """`sweep`'s sub-command of `kronnet bench`, with exactly its options."""
    unknown = [flag for flag in sweep.options + tuple(sweep.defaults) if flag not in BENCH_OPTIONS]
    if unknown:
        raise ValueError(f"sweep {sweep.name!r}: no such option {unknown} in BENCH_OPTIONS")
    p: argparse.ArgumentParser = sub.add_parser(
        sweep.name,
        help=sweep.help,
        description=inspect.getdoc(sweep.run) or sweep.help,
    )
    p.add_argument(
        "--threads", type=int, default=2, help="threads for rayon, BLAS and PyTorch alike (default %(default)s)"
    )
    for flag in [f for f in BENCH_OPTIONS if f in sweep.options]:
        kwargs = dict(BENCH_OPTIONS[flag])
        if flag in sweep.defaults:
            kwargs["default"] = sweep.defaults[flag]
        p.add_argument(flag, **kwargs)
    for flag in SHARED_OPTIONS:
        if flag not in sweep.options:
            p.add_argument(flag, **{**BENCH_OPTIONS[flag], "help": argparse.SUPPRESS})
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `kronnet` command."""
    from kronnet import __version__

    parser = argparse.ArgumentParser(
        prog="kronnet",
        description="Exact SGD for two-layer networks on Kronecker-structured inputs. New here? Run `kronnet demo`.",
    )
    parser.add_argument("--version", action="version", version=f"kronnet {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    p = sub.add_parser(
        "demo",
        help="train a network on generated data and compare it with dense training",
        description="Trains a two-layer network on generated Kronecker data, times the same steps on the "
        "dense backend, then tests a network trained on structured data on points it never saw.",
    )
    p.add_argument("--n", type=int, default=256, help="training points (default %(default)s)")
    p.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=[128, 128],
        help="sizes of the Kronecker factors of each point; d is their product (default 128 128)",
    )
    p.add_argument("--width", type=int, default=2048, help="hidden neurons m (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="points per SGD step, S (default %(default)s)")
    p.add_argument("--steps", type=int, default=3000, help="training steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: kronnet.suggest_lr)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--compare-steps", type=int, default=5, help="steps timed on each backend (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=demo_command)

    b = sub.add_parser(
        "bench",
        help="run a benchmark sweep (`kronnet bench --help` lists them)",
        description="Measurements behind the figures in README.md and docs/: each sweep writes its raw "
        "figures as JSON and prints a Markdown table. `kronnet bench SWEEP --help` shows a sweep's options.",
    )
    bench_sub = b.add_subparsers(dest="sweep", title="sweeps", metavar="SWEEP")
    for sweep in SWEEPS:
        add_sweep(bench_sub, sweep)
    b.set_defaults(func=functools.partial(bench_command, b))
    return parser


def bench_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Runs `kronnet bench SWEEP`; without a sweep, prints the list of them."""
    if args.sweep is None:
        parser.print_help()
        return 0
    (sweep,) = [s for s in SWEEPS if s.name == args.sweep]
    return sweep.run(args)


def demo_command(args: argparse.Namespace) -> int:
    """Runs `kronnet demo` (demo.py)."""
    from . import demo

    return demo.run(args)


def main(argv: Optional[List[str]] = None) -> int:
    """The `kronnet` command on `argv` (default: this process's); its exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "bench" and args.sweep is not None:
        code = sweeps.pinned(args, argv)
        if code is not None:
            return code
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
