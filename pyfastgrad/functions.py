"""Activations and losses, dispatched to the current backend.

Shapes follow the tutorials: a 1-D array is one sample, a 2-D array a batch
(rows). Targets are one-hot arrays or integer labels.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import reference as ref
from ._backends import kernels
from ._validate import as_c, as_targets, check_finite

__all__ = ["sigmoid", "relu", "tanh", "softmax", "mean_squared_error", "cross_entropy_error",
           "hinge_loss"]


def _as_float(x, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    return x


def sigmoid(x) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-x)), element-wise."""
    return ref.sigmoid(_as_float(x))


def relu(x) -> np.ndarray:
    """max(0, x), element-wise."""
    return ref.relu(_as_float(x))


def tanh(x) -> np.ndarray:
    """Hyperbolic tangent, element-wise."""
    return np.tanh(_as_float(x))


def _rows(y: np.ndarray) -> np.ndarray:
    return as_c(y.reshape(1, -1) if y.ndim == 1 else y)


def softmax(x, backend: Optional[str] = None) -> np.ndarray:
    """Row-wise softmax (overflow-safe). 1-D: one row; 2-D: each row; N-D: last axis."""
    x = _as_float(x)
    check_finite(x, "x")
    shape = x.shape
    out = kernels(backend).softmax(as_c(x.reshape(-1, shape[-1])))
    return out.reshape(shape)


def _loss_inputs(y, t, name: str, values: bool = False):
    y = _as_float(y, "y")
    check_finite(y, "y")
    y2 = _rows(y)
    if y.ndim > 2:
        raise ValueError(f"{name}: y must be 1-D (one sample) or 2-D (a batch), got shape {y.shape}")
    return y2, as_targets(t, y2.shape[0], y2.shape[1], y2.dtype, values=values)  # one-hot/dense or labels


def mean_squared_error(y, t, backend: Optional[str] = None) -> float:
    """E = 1/2 * sum((y - t)**2), averaged over the rows of a batch.

    The tutorials' one-hot example (y = [0.1, 0.05, 0.6, 0, 0.05, 0.1, 0, 0.1, 0, 0],
    t = class 2) gives 0.0975; a printed 0.195 forgot the 1/2.
    """
    y2, t2 = _loss_inputs(y, t, "mean_squared_error", values=True)  # one output: t holds values
    return kernels(backend).mean_squared_error(y2, t2)


def cross_entropy_error(y, t, backend: Optional[str] = None) -> float:
    """-sum(t * log(y + 1e-7)) averaged over rows; ``y`` are probabilities (softmax output).

    ``t``: integer labels, one-hot rows or soft targets (probabilities): the full sum over
    classes is taken. The reference (``pyfastgrad.reference.cross_entropy_error``, the tutorials'
    code) takes the argmax of a 2-D ``t`` instead, so soft targets differ there:
    ``([[.2, .3, .5]], [[.5, .5, 0]])`` gives 1.4067 here and -log(0.2) = 1.6094 in the reference.
    One-hot targets give the same value in both.
    """
    y2, t2 = _loss_inputs(y, t, "cross_entropy_error")
    return kernels(backend).cross_entropy_error(y2, t2)


def hinge_loss(s, t, margin: float = 1.0) -> float:
    """Multiclass SVM loss on scores ``s``: mean of sum_{k != t} max(0, s_k - s_t + margin)."""
    s2, t2 = _loss_inputs(s, t, "hinge_loss")
    return float(ref.hinge_loss(s2, t2.argmax(axis=1), margin))
