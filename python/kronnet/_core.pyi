"""Type stubs of the Rust extension `kronnet._core` (see src/bindings/)."""

from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt
from typing_extensions import final

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
# (matrices, terms per point, per factor None or an index into the matrix).
_Points = Tuple[Sequence[_F64], int, Sequence[Optional[_I64]]]
_Blocks = Sequence[Tuple[_Points, "Coefficients"]]
# (seed, "gaussian" or "kron", rank R of the Kronecker init).
_Init = Tuple[int, str, int]
_IndexName = Literal["scan", "tree", "bits"]
_GramName = Literal["precomputed", "columns"]
_BackendName = Literal["kron", "dense"]
_LossName = Literal["squared", "logistic", "cross_entropy"]
# (lr, lr_a, lr_b, lr_c, lr_v) and (ridge_a, ridge_b, ridge_c, ridge_v).
_Rates = Tuple[float, float, float, float, float]
_Ridge = Tuple[float, float, float, float]
_Bounds = Tuple[float, float, float, float]

__version__: str
EXACT_WORDS: int
NEURON_BLOCK: int
BACKENDS: tuple[str, ...]
INDEXES: tuple[str, ...]
GRAM_MODES: tuple[str, ...]
INITS: tuple[str, ...]
LOSSES: tuple[str, ...]
DTYPES: tuple[str, ...]
__all__ = [
    "AsyncTree",
    "Coefficients",
    "Model",
    "TrainerCore",
    "EXACT_WORDS",
    "NEURON_BLOCK",
    "BACKENDS",
    "INDEXES",
    "GRAM_MODES",
    "INITS",
    "LOSSES",
    "fold_weights",
    "predict_words_folded",
    "stream_gbytes",
    "DTYPES",
    "__version__",
    "cross_gram",
    "dense_linear",
    "dense_weights",
    "exact_sum",
    "mean_loss",
    "fma_peak_gflops",
    "index_memory_bytes",
    "init_scratch_bytes",
    "initial_weights",
    "kron_firing_fraction",
    "kron_init_factors",
    "kron_threshold",
    "normals_per_second",
    "output_signs",
    "outputs_from_words",
    "preacts",
    "predict",
    "predict_chunk_bytes",
    "predict_chunk_rows",
    "predict_words",
    "thread_count",
    "trainer_memory",
    "preacts_bytes",
    "dense_weights_bytes",
]

_Progress = Optional[Callable[[int, int], None]]

def preacts(points: _Points, init: _Init, width: int, blocks: _Blocks, progress: _Progress = None) -> _F64: ...
def predict(
    points: _Points,
    model: Model,
    init: _Init,
    blocks: _Blocks,
    chunk_rows: int,
    progress: _Progress = None,
) -> _F64: ...
def predict_words(
    points: _Points,
    model: Model,
    init: _Init,
    blocks: _Blocks,
    chunk_rows: int,
    progress: _Progress = None,
) -> Tuple[_I64, Optional[_F64]]: ...
def fold_weights(model: Model, init: _Init, dims: Sequence[int], blocks: _Blocks) -> Tuple[_F64, Optional[_F64]]: ...
def predict_words_folded(
    points: _Points,
    model: Model,
    weights: _F64,
    linear: Optional[_F64],
    chunk_rows: int,
    progress: _Progress = None,
) -> Tuple[_I64, Optional[_F64]]: ...
def outputs_from_words(model: Model, words: _I64, linear: Optional[_F64] = None) -> _F64: ...
def mean_loss(loss: str, f: _F64, y: _F64) -> float: ...
def exact_sum(values: _F64) -> float: ...
def dense_weights(init: _Init, width: int, dims: Sequence[int], blocks: _Blocks) -> _F64: ...
def dense_linear(dims: Sequence[int], outputs: int, blocks: _Blocks) -> _F64: ...
def cross_gram(a: _Points, b: _Points) -> _F64: ...
def initial_weights(init: _Init, width: int, dims: Sequence[int]) -> _F64: ...
def output_signs(seed: int, width: int) -> _F64: ...
def init_scratch_bytes(init: _Init, dims: Sequence[int], n: int, rank: int, table_rows: int, threads: int) -> int: ...
def stream_gbytes(bytes: int, seconds: float) -> Optional[float]: ...
def kron_threshold(gaussian_b: float, rank: int, p: int) -> float: ...
def kron_firing_fraction(b: float, rank: int, p: int) -> float: ...
def kron_init_factors(seed: int, width: int, dims: Sequence[int], rank: int) -> List[npt.NDArray[np.float64]]: ...
def index_memory_bytes(index: _IndexName, n: int, width: int) -> int: ...
def trainer_memory(
    backend: str,
    init: _Init,
    dims: Sequence[int],
    n: int,
    neurons: int,
    rank: int,
    table_rows: int,
    index: str,
    gram: str,
    shared_gram: bool,
    new_block: bool,
    trained_sizes: Sequence[int],
    points_bytes: int,
    threads: int,
    outputs: int = 1,
    linear: bool = False,
    dtype: str = "float64",
) -> dict[str, int]: ...
def preacts_bytes(
    init: _Init,
    dims: Sequence[int],
    q: int,
    width: int,
    block_sizes: Sequence[int],
    rank: int,
    table_rows: int,
    threads: int,
) -> int: ...
def dense_weights_bytes(dims: Sequence[int], width: int, block_sizes: Sequence[int]) -> int: ...
def predict_chunk_rows(width: int, block_sizes: Sequence[int], budget: int) -> int: ...
def predict_chunk_bytes(
    init: _Init,
    dims: Sequence[int],
    width: int,
    block_sizes: Sequence[int],
    rows: int,
    rank: int,
    table_rows: int,
    threads: int,
) -> int: ...
def thread_count() -> int: ...
def fma_peak_gflops(seconds: float) -> Optional[float]: ...
def normals_per_second(seconds: float) -> float: ...

@final
class Coefficients:
    def __new__(cls, n: int, width: int, outputs: int = 1) -> Coefficients: ...
    @staticmethod
    def from_alpha_t(alpha_t: _F64, beta: Optional[_F64] = None) -> Coefficients: ...
    def alpha_t(self) -> _F64: ...
    def beta(self) -> _F64: ...
    @property
    def outputs(self) -> int: ...
    @property
    def linear(self) -> bool: ...
    @property
    def n(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def trained(self) -> bool: ...
    @property
    def serial(self) -> int: ...
    @property
    def updates(self) -> int: ...

@final
class Model:
    def __new__(
        cls,
        a: _F64,
        thresholds: _F64,
        output_bias: _F64,
        b_init: float,
        v_scale: float = 1.0,
        first: int = 0,
        net_width: Optional[int] = None,
    ) -> Model: ...
    def shard(self, first: int, count: int) -> Model: ...
    def a(self) -> _F64: ...
    def thresholds(self) -> _F64: ...
    def output_bias(self) -> _F64: ...
    def set(self, a: _F64, thresholds: _F64, output_bias: _F64, v_scale: float) -> None: ...
    @property
    def outputs(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def first(self) -> int: ...
    @property
    def net_width(self) -> int: ...
    @property
    def b_init(self) -> float: ...
    @property
    def v_scale(self) -> float: ...
    @property
    def serial(self) -> int: ...
    @property
    def updates(self) -> int: ...

@final
class TrainerCore:
    def __new__(
        cls,
        backend: _BackendName,
        points: _Points,
        y: _F64,
        model: Model,
        init: _Init,
        coef: Coefficients,
        blocks: _Blocks,
        gram: _GramName,
        index: _IndexName,
        loss: _LossName = "squared",
        ridge: Optional[_Ridge] = None,
        state: Optional[_F64] = None,
        linear: Optional[_F64] = None,
        bounds: Optional[_Bounds] = None,
        progress: _Progress = None,
        gram_from: Optional[TrainerCore] = None,
        dtype: str = "float64",
    ) -> TrainerCore: ...
    def step(self, batch: _I64, rates_: _Rates) -> Tuple[float, int, int]: ...
    def run_sharded(
        self,
        indices_: _I64,
        offsets: _I64,
        rates_: _Rates,
        exchange: Callable[[_I64], None],
        factors_: Optional[_F64] = None,
    ) -> Tuple[_F64, _I64, _I64, str, Optional[BaseException], bool]: ...
    def output_words(self, start: int, stop: int) -> _I64: ...
    def outputs_from_words(self, start: int, words: _I64) -> _F64: ...
    def loss_of(self, f: _F64) -> float: ...
    @property
    def bounds(self) -> _Bounds: ...
    @bounds.setter
    def bounds(self, bounds: _Bounds) -> None: ...
    def run(
        self, indices_: _I64, offsets: _I64, rates_: _Rates, factors_: Optional[_F64] = None
    ) -> Tuple[_F64, _I64, _I64, Optional[BaseException]]: ...
    def full_loss(self) -> float: ...
    @property
    def steps_taken(self) -> int: ...
    def last_run(self) -> Tuple[_F64, _I64, _I64]: ...
    def export_state(self) -> Dict[str, object]: ...
    def preacts(self) -> _F64: ...
    @property
    def index_name(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def index_memory_bytes(self) -> int: ...
    @property
    def gram_mode(self) -> str: ...
    @property
    def index_stats(self) -> Dict[str, int]: ...
    @property
    def index_seconds(self) -> float: ...
    @property
    def update_work(self) -> Tuple[float, float]: ...

@final
class AsyncTree:
    def __new__(cls, values: _F64) -> AsyncTree: ...
    def update(self, cols: _I64, new_values: _F64) -> None: ...
    def query(self, i: int, tau: float) -> _I64: ...
    def query_many(self, rows: _I64, tau: float) -> List[_I64]: ...
    @property
    def values(self) -> _F64: ...
    @property
    def shape(self) -> Tuple[int, int]: ...
    @property
    def fanout(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def stats(self) -> Dict[str, int]: ...
