"""Sharded training on real MPI ranks: runs tests/mpi under ``mpiexec -n 2``
and ``-n 3`` (uneven shards) and fails when any rank fails or disagrees.

mpi4py and the MPICH runtime come with the test extra (``pip install
".[test]"``), so this runs wherever the README's test command does.
"""

import os
import shutil
import subprocess
import sys

import pytest

if os.environ.get("KRONNET_REQUIRE_MPI"):
    import mpi4py  # noqa: F401  (CI: missing MPI is a failure, not a skip)
else:
    pytest.importorskip("mpi4py")

HERE = os.path.dirname(os.path.abspath(__file__))


def mpiexec():
    # The mpich wheel puts mpiexec next to the interpreter.
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


@pytest.mark.parametrize("ranks", [2, 3])
def test_sharded_runs_agree_bitwise_with_one_process(ranks):
    exe = mpiexec()
    assert exe, "mpiexec not found: install the test extra (mpich)"
    env = dict(os.environ, KRONNET_MPI_TESTS="1", RAYON_NUM_THREADS="1")
    cmd = [
        exe,
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "pytest",
        os.path.join(HERE, "mpi"),
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    # A rank that fails alone can leave the others waiting in a collective:
    # the timeout turns that hang into a failure.
    done = subprocess.run(cmd, cwd=HERE, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"{' '.join(cmd)} exited {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    )
    assert done.stdout.count(" passed") == ranks, done.stdout[-3000:]
