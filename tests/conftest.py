import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# tests/mpi runs under mpiexec, one pytest per rank (tests/test_mpi.py starts
# it with KRONNET_MPI_TESTS set); a plain pytest run leaves it alone.
collect_ignore = [] if os.environ.get("KRONNET_MPI_TESTS") else ["mpi"]
