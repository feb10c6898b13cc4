"""The ``cpp`` backend: the kernel interface of ``_backends/numpy.py`` on the C++ extension.

Thin adapters over ``pyfastgrad._core`` (pybind11, OpenBLAS, OpenMP). Inputs are assumed
validated by the public layer (C-contiguous, the net's dtype, right shapes); the extension
still checks shapes (ValueError) and dtypes (TypeError) and never casts or copies.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

# OpenBLAS worker threads busy-wait 2^28 cycles (~0.1 s) after every call before they sleep; with few
# cores they then take the cores from the OpenMP threads of the sparse-input kernels (2-5x slower for
# that long, e.g. after every accuracy evaluation in fit). 2^22 cycles (~2 ms) still keeps them awake
# between the gemms of consecutive training steps. Read once, when the library loads; the user's
# setting wins, and the process environment is left as it was.
_SET_TIMEOUT = "OPENBLAS_THREAD_TIMEOUT" not in os.environ
if _SET_TIMEOUT:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "22"
try:
    import scipy_openblas32  # noqa: F401  (preloads the OpenBLAS that _core links to)
finally:
    if _SET_TIMEOUT:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]

from .._extension import load_core  # noqa: E402  (after scipy_openblas32: it preloads the library)

_core = load_core()  # next to the package, or the installed copy when a source tree shadows it
from .. import spec  # noqa: E402
from .._sparse import CsrRows  # noqa: E402
from . import numpy as _npk  # noqa: E402  (the scans' fallback for arrays the extension cannot read)

NAME = "cpp"

_MLP_CLASSES = {np.dtype(np.float64): _core.Mlp64, np.dtype(np.float32): _core.Mlp32}

# Fork safety. GNU OpenMP's thread pool does not survive fork(): once the parent has run a parallel
# region, a parallel region in a forked child waits forever for threads that were not copied. The
# child (os.fork, multiprocessing's 'fork' start method) therefore runs the kernels' OpenMP loops on
# one thread; set_num_threads keeps it there (pyfastgrad._threads). OpenBLAS re-creates its own
# threads after a fork (its pthread_atfork handler), so BLAS keeps its thread count. 'spawn' and
# 'forkserver' children start fresh and get every core.
FORKED_CHILD = False


def _after_fork_in_child() -> None:
    global FORKED_CHILD
    FORKED_CHILD = True
    _core.openmp_set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def blas_info() -> dict:
    """OpenBLAS build string, its thread count, and the OpenMP threads of the kernels."""
    return {"config": _core.blas_config(), "threads": _core.blas_num_threads(),
            "openmp_threads": _core.openmp_max_threads()}


class Mlp:
    """Fully connected net on a flat parameter vector (see ``_backends/numpy.py`` ``Mlp``)."""

    def __init__(self, sizes: Sequence[int], activation: str, loss: str, dtype) -> None:
        self.sizes = [int(s) for s in sizes]
        self.activation = spec.activation(activation, mlp=True).name
        self.loss_name = spec.loss(loss, mlp=True).name
        self.dtype = np.dtype(dtype)
        cls = _MLP_CLASSES.get(self.dtype)
        if cls is None:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self._impl = cls(self.sizes, activation, loss)
        # a float64 net reads float32 x as it is (widened in the kernels; no float64 copy of the batch)
        self.input_dtypes = (self.dtype, np.dtype(np.float32)) if self.dtype == np.float64 else (self.dtype,)
        self.n_params = self._impl.n_params
        # The hot methods go straight to the extension: no Python frame per call.
        self.loss = self._impl.loss
        self.loss_grad = self._impl.loss_grad
        self.train_step = self._impl.train_step
        self.train_step_any = self._impl.train_step_any

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.sizes[-1]), dtype=self.dtype)
        self._impl.predict(theta, x, out)
        return out

    def loss(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float) -> float:
        return self._impl.loss(theta, x, t, weight_decay)  # (shadowed per instance, see __init__)

    def loss_grad(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                  grad: np.ndarray) -> float:
        return self._impl.loss_grad(theta, x, t, weight_decay, grad)  # (shadowed per instance)

    def numerical_gradient(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                           h: float, grad: np.ndarray) -> None:
        _core.mlp_numerical_gradient(self.sizes, self.activation, self.loss_name, theta, x, t,
                                     weight_decay, h, grad)

    def kink_counts(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, h: float,
                    plus: np.ndarray, minus: np.ndarray) -> None:
        """See ``_backends/numpy.py`` ``Mlp.kink_counts`` (csrc/numgrad/numgrad.hpp ``mlp_kink_counts``)."""
        _core.mlp_kink_counts(self.sizes, self.activation, self.loss_name, theta, x, t, h, plus, minus)

    def train_step(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float, opt: str,
                   hyper: np.ndarray, state1: np.ndarray, state2: np.ndarray, step: int, grad: np.ndarray) -> float:
        """loss_grad into ``grad`` and, when the loss is finite, ``opt_update`` (clipping by hyper's max_norm),
        in one call (net.train_step). Returns the loss."""
        return self._impl.train_step(theta, x, t, weight_decay, opt, hyper, state1, state2, step, grad)

    def train_step_any(self, theta: np.ndarray, x, t, weight_decay: float, opt: str, hyper: np.ndarray,
                       state1: np.ndarray, state2: np.ndarray, step: int, grad: np.ndarray) -> Optional[float]:
        """train_step on x and t as the user gave them, or None (nothing done) when they are not already in
        the kernels' form (then the caller checks and converts them and calls train_step)."""
        return self._impl.train_step_any(theta, x, t, weight_decay, opt, hyper, state1, state2, step, grad)

    def predict_rows(self, theta: np.ndarray, X: CsrRows, rows: np.ndarray) -> np.ndarray:
        """Logits of the rows ``rows`` (int64) of the CSR ``X``: the first layer on their nonzeros (no dense
        copy of the rows; fit's evaluation subset of a CSR training set)."""
        out = np.empty((rows.shape[0], self.sizes[-1]), dtype=self.dtype)
        self._impl.predict_csr(theta, X.indptr, X.indices, X.data, X.n_cols, rows, out, X.checked)
        return out

    def train_steps(self, theta: np.ndarray, X: np.ndarray, T: np.ndarray, idx: np.ndarray,
                    weight_decay: float, opt: str, hyper: np.ndarray, state1: np.ndarray,
                    state2: np.ndarray, step0: int, lrs: Optional[np.ndarray] = None) -> np.ndarray:
        """See ``_backends/numpy.py`` ``Mlp.train_steps``; returns the float64 losses (NaN for steps not done).

        ``X`` may be a ``CsrRows`` (of the net's dtype): then the first layer's products use only its
        nonzeros (``train_steps_csr``)."""
        losses = np.empty(idx.shape[0] if idx.ndim else 0, dtype=np.float64)
        if isinstance(X, CsrRows):  # the first layer on the nonzeros only
            self._impl.train_steps_csr(theta, X.indptr, X.indices, X.data, X.n_cols, T, idx, weight_decay, opt,
                                       hyper, state1, state2, step0, losses, lrs, X.checked)
        else:
            self._impl.train_steps(theta, X, T, idx, weight_decay, opt, hyper, state1, state2, step0, losses, lrs)
        return losses


opt_update = _core.opt_update

_STACK_KINDS = {"affine": 0, "act": 1, "bn": 2, "dropout": 3}


def layer_stack(ops, n_in: int, n_params: int, bn_eps: float, dtype):
    """A composed net's training step in one call (csrc/mlp/stack.hpp) for the Program's ops (affine,
    act, bn, dropout; _layer_program.Op)."""
    cls = {np.dtype(np.float64): _core.Stack64, np.dtype(np.float32): _core.Stack32}[np.dtype(dtype)]
    kinds, ws, bs, k, m, acts, alphas = [], [], [], [], [], [], []
    for op in ops:
        kinds.append(_STACK_KINDS[op.kind])
        has = op.kind in ("affine", "bn")
        ws.append(op.ws.start if has else 0)
        bs.append(op.bs.start if has else 0)
        k.append(op.wshape[0] if op.kind == "affine" else 0)
        m.append(op.wshape[1] if op.kind == "affine" else 0)
        acts.append(op.code if op.kind == "act" else 0)
        alphas.append(float(op.alpha) if op.kind == "act" else 0.0)
    return cls(kinds, ws, bs, k, m, acts, alphas, int(n_in), int(n_params), float(bn_eps))


def softmax(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _core.softmax(x, out)
    return out


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    """Dense (N, C) y and t: -sum(t * log(y + 1e-7)) / N."""
    return _core.cross_entropy_error(y, t)


def mean_squared_error(y: np.ndarray, t: np.ndarray) -> float:
    """Dense (N, C) y and t: 0.5 * sum((y - t)**2) / N."""
    return _core.mean_squared_error(y, t)


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float,
                       scheme: str = "central") -> np.ndarray:
    """Per-element differences of ``f`` at ``x`` (perturbed in place, restored exactly).

    scheme 'central': (f(x+h) - f(x-h)) / 2h; 'forward': (f(x+h) - f(x)) / h.
    """
    if scheme not in ("central", "forward"):
        raise ValueError(f"unknown scheme {scheme!r}; expected 'central' or 'forward'")
    out = np.zeros(x.shape, dtype=x.dtype)
    _core.numerical_gradient_callback(f, x, h, scheme == "forward", out)
    return out


# ------------------------------------------------------------------ composed nets' layers
# Whole-batch kernels of pyfastgrad.sequential's generic path (csrc/kernels/layers.hpp; see _backends/numpy.py).


def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """``op(a) @ op(b)`` (op: ``.T`` when trans_a / trans_b) on the extension's OpenBLAS: the layer stacks'
    products. numpy's own BLAS pool, woken by ``np.dot``, spins ~0.1 s after each call against the
    kernels' threads (the tutorials' Dropout net: its epochs took twice as long)."""
    if a.dtype != b.dtype or not (_readable(a) and _readable(b)) or a.ndim != 2 or b.ndim != 2:
        return _npk.matmul(a, b, trans_a, trans_b)
    out = np.empty((a.shape[1] if trans_a else a.shape[0], b.shape[0] if trans_b else b.shape[1]), a.dtype)
    _core.matmul(a, b, bool(trans_a), bool(trans_b), out)
    return out


def act_forward(code: int, alpha: float, z: np.ndarray) -> np.ndarray:
    a = np.empty_like(z)
    _core.layer_act_forward(int(code), float(alpha), z, a)
    return a


def act_backward(code: int, alpha: float, dout: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    dz = np.empty_like(dout)
    _core.layer_act_backward(int(code), float(alpha), dout, z, a, dz)
    return dz


def bn_forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float):
    d = x.shape[1]
    out, xn = np.empty_like(x), np.empty_like(x)
    mean, var, std = (np.empty(d, x.dtype) for _ in range(3))
    _core.bn_forward_train(x, gamma, beta, float(eps), out, xn, mean, var, std)
    return out, xn, mean, var, std


def bn_forward_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                    running_var: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty_like(x)
    _core.bn_forward_eval(x, gamma, beta, running_mean, running_var, float(eps), out)
    return out


def bn_backward(dout: np.ndarray, xn: np.ndarray, std: np.ndarray, gamma: np.ndarray):
    dx = np.empty_like(dout)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(gamma)
    _core.bn_backward(dout, xn, std, gamma, dx, dgamma, dbeta)
    return dx, dgamma, dbeta


def mul_mask(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _core.mul_mask(x, mask, out)
    return out


# ------------------------------------------------------------------ validation and sparse-input scans
def _readable(a: np.ndarray) -> bool:
    """The extension reads ``a`` in place: float32/float64, C-contiguous, aligned, native byte order."""
    return a.dtype in (np.float32, np.float64) and a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative


def all_finite(a: np.ndarray) -> bool:
    # the extension's scan is ~5x faster than np.isfinite(a).all() on an MNIST batch (no temporary)
    return bool(_core.all_finite(a)) if _readable(a) else _npk.all_finite(a)


def first_layer_product(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``x @ W`` for a layer stack's first affine layer: over x's nonzeros when x is mostly zeros
    (csrc/mlp/rows.hpp), else gemm. x and W C-contiguous, of one dtype."""
    out = np.empty((x.shape[0], W.shape[1]), dtype=W.dtype)
    _core.first_layer_product(x, W, out)
    return out


def first_layer_grad(x: np.ndarray, dout: np.ndarray) -> np.ndarray:
    """``x.T @ dout`` for a layer stack's first affine layer (its weight gradient): over x's nonzeros when x
    is mostly zeros and dout finite (csrc/mlp/rows.hpp), else gemm. x and dout of one dtype."""
    if x.dtype != dout.dtype or not (_readable(x) and _readable(dout)):
        return matmul(x, dout, True, False)
    out = np.empty((x.shape[1], dout.shape[1]), dtype=x.dtype)
    _core.first_layer_grad(x, dout, out)
    return out


def dense_to_csr(X: np.ndarray):
    if _readable(X):
        return _core.dense_to_csr(X)  # the same arrays as numpy's, ~7x faster (MNIST: 28 ms, not 209)
    return _npk.dense_to_csr(X)
