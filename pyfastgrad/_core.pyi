"""Type stub of the C++ extension ``pyfastgrad._core`` (pybind11, OpenBLAS, OpenMP).

Import ``scipy_openblas32`` first (it preloads the OpenBLAS this module links to).
Array arguments are never converted or copied: they must already be C-contiguous numpy arrays
of the exact dtype (float64 or float32, the same for all float arrays of one call; int64 for
``idx``; float64 for ``hyper`` and ``losses``), else the call raises TypeError. Shape mismatches
raise ValueError before any memory is touched. Semantics: ``pyfastgrad._backends.numpy``.
"""
from typing import Callable, Generic, List, Optional, Sequence, Tuple, TypeVar, overload

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
_A = TypeVar("_A", F64, F32)

# ------------------------------------------------------------------------------------- BLAS
def blas_config() -> str:
    """OpenBLAS build configuration string."""

def blas_num_threads() -> int:
    """Threads OpenBLAS uses."""

def blas_set_num_threads(n: int) -> None:
    """Set the number of OpenBLAS threads."""

def set_call_work(blas: float, sparse: float, split: Optional[float] = ..., rows: Optional[float] = ...) -> None:
    """Multiply-adds below which one kernel call runs on the calling thread (benchmarks): OpenBLAS's
    team (blas), the sparse first layer's bands (sparse), loss_grad's split of the rows into parts
    (split), predict/loss's rows on a team (rows); None keeps the current value."""

def set_adaptive_threads(on: bool) -> None:
    """Whether teams shrink to the cores other processes leave free (csrc/core/parallel.hpp)."""

def free_threads(want: int) -> int:
    """Of `want` threads, how many the cores other processes leave free allow now."""

def get_call_work() -> Tuple[float, float, float, float]:
    """(blas, sparse, split, rows) thresholds of set_call_work."""

def openmp_max_threads() -> int:
    """OpenMP threads available to the kernels (1 when built without OpenMP)."""

def openmp_set_num_threads(n: int) -> None:
    """Set the OpenMP threads of the kernels."""

def _set_isa(level: int) -> int:
    """Testing hook: the instruction set of every kernel with clones (csrc/core/simd.hpp: 2 AVX-512, 1 AVX2,
    0 baseline, -1 the best available; capped at what the CPU has). Returns the level in use."""

def _isa() -> int:
    """The instruction-set level the kernels use now."""

# ------------------------------------------------------------------------------------- nets
class _Mlp(Generic[_A]):
    """Fully connected net on a flat parameter vector: W1 (n0 x n1, row-major), b1, W2, b2, ...

    Hidden layers use ``activation`` ('relu' | 'sigmoid' | 'tanh'); the last layer is affine and
    feeds ``loss`` ('softmax' | 'mse' | 'hinge'). Targets are dense (N, n_out). Calls on one object
    from several threads are serialised (it owns reusable scratch buffers); the GIL is released.
    """

    def __init__(self, sizes: Sequence[int], activation: str, loss: str) -> None: ...
    @property
    def n_params(self) -> int: ...
    @property
    def sizes(self) -> List[int]: ...
    @property
    def activation(self) -> str: ...
    @property
    def loss_name(self) -> str: ...
    def predict(self, theta: _A, x: _A, out: _A) -> None:
        """out (N, n_out) = logits of x (N, n_in)."""
    def loss(self, theta: _A, x: _A, t: _A, weight_decay: float) -> float:
        """Mean loss over the N >= 1 rows plus 0.5 * weight_decay * sum W^2."""
    def loss_grad(self, theta: _A, x: _A, t: _A, weight_decay: float, grad: _A,
                  sparse: Optional[bool] = ...) -> float:
        """Loss as ``loss``; writes its gradient (backprop) into grad (n_params).

        sparse: None picks the first layer's kernels from x's density (sparse when at most 40% of x
        is nonzero), True / False force the sparse / dense (gemm) ones; same result up to rounding."""
    def train_step(self, theta: _A, x: _A, t: _A, weight_decay: float, opt: str, hyper: F64, state1: _A,
                   state2: _A, step: int, grad: _A) -> float:
        """loss_grad into grad, then (finite loss only) the clipped gradient's ``opt_update`` of theta and
        the state at update ``step``. Returns the loss."""
    def train_step_any(self, theta: _A, x: object, t: object, weight_decay: float, opt: str, hyper: F64,
                       state1: _A, state2: _A, step: int, grad: _A) -> Optional[float]:
        """``train_step`` on x and t as given, or None (nothing done) unless x is an exact C-contiguous
        finite (n >= 1, n_in) array of the net's dtype (or float32 for a float64 net) and t a finite
        (n, n_out) array of the net's dtype or, with n_out > 1, n int64/int32 labels in [0, n_out)."""
    def train_steps(self, theta: _A, X: _A, T: _A, idx: I64, weight_decay: float, opt: str, hyper: F64,
                    state1: _A, state2: _A, step0: int, losses: F64, lrs: Optional[F64] = ...) -> int:
        """Mini-batch steps: step s uses rows idx[s] (idx (n_steps, B), every index checked first)
        of X/T, computes loss and gradient, clips it (hyper's max_norm > 0) and applies
        ``opt_update(opt, .., step0 + s + 1)`` in place with the learning rate lrs[s] (lrs: None, or
        float64 (n_steps,); None: hyper[0] throughout). losses[s] = loss of step s, NaN for steps
        not done; stops at the first non-finite loss without applying that step. Returns the number
        of steps done. state1/state2 need n_params entries when the optimizer uses them (sgd: none;
        adam, adamw: both; others: state1). hyper as ``opt_update``.
        """
    def train_steps_csr(self, theta: _A, indptr: I64, indices: I32, data: _A, n_cols: int, T: _A, idx: I64,
                        weight_decay: float, opt: str, hyper: F64, state1: _A, state2: _A, step0: int,
                        losses: F64, lrs: Optional[F64] = ...) -> int:
        """``train_steps`` with X in CSR form: row r's nonzeros are data[indptr[r]:indptr[r+1]] in the
        columns indices[...] (strictly increasing); n_cols must be the net's inputs. indptr and the
        rows idx names are checked before anything is touched. The first layer uses the nonzeros
        only; results equal the dense call's up to the order of the sums.
        """

class Mlp64(_Mlp[F64]):
    """float64 net."""

class Mlp32(_Mlp[F32]):
    """float32 net."""

# ------------------------------------------------------------------------------- optimizers
@overload
def opt_update(opt: str, theta: F64, grad: F64, state1: F64, state2: F64, hyper: F64, step: int) -> None: ...
@overload
def opt_update(opt: str, theta: F32, grad: F32, state1: F32, state2: F32, hyper: F64, step: int) -> None:
    """One optimizer update of theta in place. opt: 'sgd' | 'momentum' | 'nesterov' | 'adagrad' |
    'rmsprop' | 'adam' | 'adamw'; hyper = float64 [lr, a, b, eps, weight_decay, style, max_norm]
    (a = momentum / decay_rate / beta1, b = beta2; weight_decay decoupled; style 0 tutorial, 1 torch;
    max_norm > 0 clips a copy of grad by its norm first), or the short [lr, a, b] (eps 1e-7, rest 0);
    step = 1 for the first update (Adam's bias correction). Formulas: ``_backends.numpy.opt_update``."""

# ---------------------------------------------------------------------- element-wise kernels
def all_finite(a: _A) -> bool:
    """True when the C-contiguous array (any shape) has no inf or NaN."""
    ...
def dense_to_csr(x: _A) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], _A]:
    """The nonzeros of x (N, D) by row, NaN included: (indptr (N + 1,), indices (nnz,), data (nnz,))."""
    ...
def first_layer_product(x: _A, W: _A, out: _A) -> bool:
    """out = x @ W, over x's nonzeros when x is mostly zeros and W finite (returns True), else gemm."""
    ...
def first_layer_grad(x: _A, dout: _A, out: _A) -> bool:
    """out = x.T @ dout, over x's nonzeros when x is mostly zeros and dout finite (returns True), else gemm."""
    ...
@overload
def softmax(x: F64, out: F64) -> None: ...
@overload
def softmax(x: F32, out: F32) -> None:
    """out = row-wise softmax of x (N, C); out may be x."""

@overload
def cross_entropy_error(y: F64, t: F64) -> float: ...
@overload
def cross_entropy_error(y: F32, t: F32) -> float:
    """-sum(t * log(y + 1e-7)) / N for dense (N, C) y and t."""

@overload
def mean_squared_error(y: F64, t: F64) -> float: ...
@overload
def mean_squared_error(y: F32, t: F32) -> float:
    """0.5 * sum((y - t)**2) / N for dense (N, C) y and t."""

# ---------------------------------------------------------------------- numerical gradients
@overload
def mlp_numerical_gradient(sizes: Sequence[int], activation: str, loss: str, theta: F64, x: F64, t: F64,
                           weight_decay: float, h: float, grad: F64) -> None: ...
@overload
def mlp_numerical_gradient(sizes: Sequence[int], activation: str, loss: str, theta: F32, x: F32, t: F32,
                           weight_decay: float, h: float, grad: F32) -> None:
    """Central-difference gradient of the full net loss (as ``_Mlp.loss``) for every parameter of
    the flat layout, written to grad; theta is only read."""

@overload
def mlp_kink_counts(sizes: Sequence[int], activation: str, loss: str, theta: F64, x: F64, t: F64, h: float,
                    plus: np.ndarray, minus: np.ndarray) -> None: ...
@overload
def mlp_kink_counts(sizes: Sequence[int], activation: str, loss: str, theta: F32, x: F32, t: F32, h: float,
                    plus: np.ndarray, minus: np.ndarray) -> None:
    """Rows per parameter (int64 plus/minus, length n_params, overwritten) in which a step to the
    stored theta_p + h / theta_p - h changes the state of a ReLU pre-activation or hinge margin."""

def numerical_gradient_callback(f: Callable[[np.ndarray], float], x: np.ndarray, h: float, forward: bool,
                                out: np.ndarray) -> None:
    """Per-element differences of f at x (float64/float32, any strides; perturbed in place and
    restored bit-exactly) into the C-contiguous out of x's shape and dtype:
    (f(x+h) - f(x-h)) / 2h, or (f(x+h) - f(x)) / h when forward."""

# ---------------------------------------------------------------------- composed nets' layers (layers.hpp)
# Each has a float64 and a float32 overload (all arrays of one dtype, C-contiguous).
def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool, out: np.ndarray) -> None:
    """out = op(a) @ op(b) (op: transposed when trans_a / trans_b) on this extension's OpenBLAS."""
class _Stack:
    """A layer stack (Affine, activation, BatchNorm, Dropout layers; softmax cross-entropy head): its
    training-mode loss and gradient in one call (csrc/mlp/stack.hpp; pyfastgrad._layer_program.Program).
    kinds: 0 affine, 1 activation, 2 BatchNorm, 3 Dropout per layer; ws/bs: where its W (k x m) and b,
    or gamma and beta, start in theta; acts/alphas: the activations' codes (spec.ACT_CODE) and slopes."""
    def __init__(self, kinds: List[int], ws: List[int], bs: List[int], k: List[int], m: List[int], acts: List[int],
                 alphas: List[float], n_in: int, n_params: int, bn_eps: float) -> None: ...
    def loss_grad(self, n_params: int, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                  grad: np.ndarray, masks: List[np.ndarray], means: List[np.ndarray],
                  vars: List[np.ndarray]) -> float:
        """Training-mode loss (mean over the rows + 0.5 weight_decay sum W^2) and its gradient into grad;
        t dense (N, n_out); one (N, width) 0/1 mask per Dropout layer; each BatchNorm layer's batch mean
        and var are written into means/vars. A float64 stack also takes float32 x."""

class Stack64(_Stack): ...
class Stack32(_Stack): ...

def layer_act_forward(code: int, alpha: float, z: np.ndarray, out: np.ndarray) -> None:
    """out = f(z): code 0 relu, 1 sigmoid, 2 tanh, 3 leaky relu (slope alpha), 4 identity (spec.ACT_CODE)."""
def layer_act_backward(code: int, alpha: float, dout: np.ndarray, z: np.ndarray, a: np.ndarray,
                       dz: np.ndarray) -> None:
    """dz = dout * f'(z) (from z for the ReLUs, from a = f(z) for sigmoid and tanh)."""
def bn_forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, out: np.ndarray,
                     xn: np.ndarray, mean: np.ndarray, var: np.ndarray, std: np.ndarray) -> None:
    """Batch Normalization over the rows of x (N, D), training mode."""
def bn_forward_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                    running_var: np.ndarray, eps: float, out: np.ndarray) -> None:
    """Batch Normalization with the running statistics."""
def bn_backward(dout: np.ndarray, xn: np.ndarray, std: np.ndarray, gamma: np.ndarray, dx: np.ndarray,
                dgamma: np.ndarray, dbeta: np.ndarray) -> None:
    """Backward of bn_forward_train."""
def mul_mask(x: np.ndarray, mask: np.ndarray, out: np.ndarray) -> None:
    """Dropout: out = x * mask."""

def _spec() -> dict:
    """Codes and names of the compiled enums (Act, Loss, LAct, Opt), the optimizers' state counts and
    flags, and the hyper vector's length (tests/test_spec.py compares them with pyfastgrad.spec)."""
    ...
