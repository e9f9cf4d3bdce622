import os
import sys

# scikit-learn's estimator checks include an array-API one (array API
# dispatch with NumPy inputs), which they skip unless this is set; SciPy
# reads it once, when first imported, so it is set before any test module
# imports scipy or sklearn.
os.environ["SCIPY_ARRAY_API"] = "1"

sys.path.insert(0, os.path.dirname(__file__))

# tests/mpi runs under mpiexec, one pytest per rank (tests/test_mpi.py starts
# it with KRONNET_MPI_TESTS set); a plain pytest run leaves it alone.
collect_ignore = [] if os.environ.get("KRONNET_MPI_TESTS") else ["mpi"]
