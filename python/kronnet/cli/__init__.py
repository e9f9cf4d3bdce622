"""The `kronnet` command: `kronnet demo` trains on generated Kronecker data
and compares the Kronecker backend's per-step time with the dense one."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kronnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="train on generated Kronecker data and compare with dense training")
    p.add_argument("--n", type=int, default=256, help="training points (default 256)")
    p.add_argument("--dims", type=int, nargs="+", default=[128, 128], help="factor dimensions (default 128 128)")
    p.add_argument("--width", type=int, default=2048, help="hidden neurons m (default 2048)")
    p.add_argument("--batch-size", type=int, default=8, help="S (default 8)")
    p.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: kronnet.suggest_lr)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-steps", type=int, default=5, help="steps timed on each backend (default 5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=demo_command)

    b = sub.add_parser(
        "bench",
        help="measure: per-step time vs d against dense baselines, the full model's step against the paper's, "
        "the step against its roofline (and batch size, prediction), "
        "the activation indexes, "
        "memory churn, PairData init, Gaussian init against BLAS, the d-free pipeline end to end, "
        "or sharded training on MPI",
    )
    b.add_argument(
        "sweep",
        nargs="?",
        choices=["scaling", "model", "roofline", "large", "index", "churn", "pairs", "init", "endtoend", "mpi"],
        default="scaling",
    )
    b.add_argument("--n", type=int, default=512, help="training points (default 512)")
    b.add_argument("--width", type=int, default=2048, help="hidden neurons m for the scaling sweep (default 2048)")
    b.add_argument("--batch-size", type=int, default=8, help="S (default 8)")
    b.add_argument("--steps", type=int, default=128, help="timed Kronecker steps per shape (default 128)")
    b.add_argument("--threads", type=int, default=2, help="threads for rayon, BLAS and PyTorch alike (default 2)")
    b.add_argument(
        "--dense-max-d", type=int, default=2**16, help="largest d of the dense baselines and of init (default 2^16)"
    )
    b.add_argument("--max-d", type=int, default=2**20, help="largest d of the scaling sweep (default 2^20)")
    b.add_argument("--max-width", type=int, default=2**18, help="largest m of the index sweep (default 2^18)")
    b.add_argument("--init-width", type=int, default=64, help="neurons of the pairs init comparison (default 64)")
    b.add_argument("--init-rank", type=int, default=8, help="R of the Kronecker init in endtoend (default 8)")
    b.add_argument("--e2e-steps", type=int, default=3000, help="training steps per endtoend run (default 3000)")
    b.add_argument(
        "--gaussian-max-seconds",
        type=float,
        default=60.0,
        help="endtoend: Gaussian init stops after the first d slower than this, or before a d its last"
        " run projects past 4x this (default 60)",
    )
    b.add_argument("--rounds", type=int, default=3, help="mpi: alternating rounds of each job (default 3)")
    b.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    b.add_argument("--quick", action="store_true", help="fewer shapes, no peak-memory run")
    b.add_argument("--out", default="bench_results", help="folder for the JSON and PNG (default bench_results)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=bench_command)
    return parser


def bench_command(args: argparse.Namespace) -> int:
    """Dispatches `kronnet bench SWEEP` to its sweep in ``kronnet.cli.sweeps``."""
    from . import sweeps

    run = {
        "scaling": sweeps.scaling,
        "model": sweeps.model,
        "roofline": sweeps.roofline,
        "large": sweeps.large,
        "index": sweeps.index,
        "churn": sweeps.churn,
        "pairs": sweeps.pairs,
        "init": sweeps.init,
        "endtoend": sweeps.endtoend,
        "mpi": sweeps.mpi,
    }[args.sweep]
    return run(args)


def demo_command(args: argparse.Namespace) -> int:
    """Runs `kronnet demo` (demo.py)."""
    from . import demo

    return demo.run(args)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from . import sweeps

        code = sweeps.pinned(args, argv)
        if code is not None:
            return code
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
