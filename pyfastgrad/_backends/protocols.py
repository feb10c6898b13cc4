"""The kernel contract, typed: what every backend module provides, one Protocol per family.

``_backends/numpy.py`` is the executable specification of each name (semantics in its docstrings);
``_backends/numba.py`` and ``_backends/cpp.py`` must agree with it (float64 to 1e-10 normwise,
float32 to 1e-4). Names, codes and hyper slots come from :mod:`pyfastgrad.spec`.
Arrays are C-contiguous, aligned, of the net's dtype; the public layer validates.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence, Tuple

import numpy as np


class MlpKernels(Protocol):
    """A fully connected net on a flat parameter vector (layout: :func:`pyfastgrad.spec.layer_slices`)."""

    sizes: list
    n_params: int
    # dtypes predict/loss/loss_grad read x in (the net's first; optional, that alone when absent)
    input_dtypes: tuple

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray: ...
    def loss(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float) -> float: ...
    def loss_grad(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                  grad: np.ndarray) -> float: ...
    def numerical_gradient(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                           h: float, grad: np.ndarray) -> None: ...
    def kink_counts(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, h: float,
                    plus: np.ndarray, minus: np.ndarray) -> None: ...
    def train_steps(self, theta: np.ndarray, X, T: np.ndarray, idx: np.ndarray, weight_decay: float,
                    opt: str, hyper: np.ndarray, state1: np.ndarray, state2: np.ndarray, step0: int,
                    lrs: Optional[np.ndarray] = None) -> np.ndarray: ...


class MlpFactory(Protocol):
    def Mlp(self, sizes: Sequence[int], activation: str, loss: str, dtype) -> MlpKernels: ...


class NumericalGradient(Protocol):
    def numerical_gradient(self, f: Callable[[np.ndarray], float], x: np.ndarray, h: float,
                           scheme: str = "central") -> np.ndarray: ...


class OptimizerUpdate(Protocol):
    def opt_update(self, opt: str, theta: np.ndarray, grad: np.ndarray, state1: np.ndarray,
                   state2: np.ndarray, hyper: np.ndarray, step: int) -> None: ...


class Elementwise(Protocol):
    def softmax(self, x: np.ndarray) -> np.ndarray: ...
    def cross_entropy_error(self, y: np.ndarray, t: np.ndarray) -> float: ...
    def mean_squared_error(self, y: np.ndarray, t: np.ndarray) -> float: ...


class Scans(Protocol):
    """Validation and sparse-input helpers: any strides/dtype in, the backend's own code runs."""

    def all_finite(self, a: np.ndarray) -> bool: ...
    def dense_to_csr(self, X: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class LayerPrograms(Protocol):
    """Whole-batch kernels of the composed nets (pyfastgrad.sequential); activation codes: spec.ACT_CODE."""

    def matmul(self, a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False) -> np.ndarray: ...
    def act_forward(self, code: int, alpha: float, z: np.ndarray) -> np.ndarray: ...
    def act_backward(self, code: int, alpha: float, dout: np.ndarray, z: np.ndarray,
                     a: np.ndarray) -> np.ndarray: ...
    def bn_forward_train(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> tuple: ...
    def bn_forward_eval(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                        running_var: np.ndarray, eps: float) -> np.ndarray: ...
    def bn_backward(self, dout: np.ndarray, xn: np.ndarray, std: np.ndarray, gamma: np.ndarray) -> tuple: ...
    def mul_mask(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


class Kernels(MlpFactory, NumericalGradient, OptimizerUpdate, Elementwise, Scans, LayerPrograms, Protocol):
    """A whole backend module (threads: ``pyfastgrad._threads`` asks the cpp backend directly)."""

    NAME: str
