"""Input checks shared by the public API: clear exceptions before any kernel runs."""
from __future__ import annotations

import functools

import numpy as np

from ._backends import kernels

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def all_finite(a: np.ndarray, backend=None) -> bool:
    """No NaN or Inf in ``a``, scanned by ``backend``'s kernels (None: the current backend)."""
    return bool(kernels(backend).all_finite(a))


def as_c(a, dtype=None) -> np.ndarray:
    """``a`` as a C-contiguous, aligned, native-endian array of ``dtype`` (a copy only when needed).

    ``np.ascontiguousarray`` keeps an unaligned buffer (``np.frombuffer`` at an odd offset) as it
    is; the kernels read arrays as typed pointers, so alignment is required too."""
    return np.require(a, dtype=dtype, requirements=("C", "A"))


def check_finite(a: np.ndarray, name: str, backend=None) -> None:
    if not all_finite(a, backend):
        raise ValueError(f"{name} contains NaN or Inf")


def as_batch(x, n_features: int, dtype: np.dtype, name: str = "x", also=(), finite: bool = True) -> np.ndarray:
    """(N, n_features) C-contiguous array of ``dtype``; any-shape input is flattened per row.

    ``also``: other dtypes kept as they are (kernels that read them). Copies only when needed; the
    caller's array is never modified. ``finite=False``: the caller checks for NaN/Inf itself.
    """
    if (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == n_features and x.shape[0] > 0
            and (x.dtype == dtype or x.dtype in also) and x.flags.c_contiguous and x.flags.aligned
            and x.dtype.isnative):  # the common case, without np.require's cost (a few us a call)
        if finite:
            check_finite(x, name)
        return x
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x.reshape(1, -1)  # a single sample
    elif x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 samples)")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != n_features:
        raise ValueError(f"{name} has {x.shape[1]} features per sample, the net expects {n_features}")
    x = as_c(x, x.dtype if x.dtype in also else dtype)
    if finite:
        check_finite(x, name)
    return x


@functools.lru_cache(maxsize=16)
def _eye(n_classes: int, dtype: np.dtype) -> np.ndarray:
    e = np.eye(n_classes, dtype=dtype)
    e.flags.writeable = False  # shared: take() copies out of it
    return e


def as_targets(t, n: int, n_classes: int, dtype: np.dtype, name: str = "t", values: bool = False) -> np.ndarray:
    """Dense (n, n_classes) targets: integer labels become one-hot; one-hot/real targets are cast.

    ``values``: the targets are values to fit (mean squared error): with one output, integer
    targets are then those values (``[0]`` is 0, as in the reference), not the label of class 0."""
    t = np.asarray(t)
    # the tutorials' rule: t is one-hot/dense when it has as many entries as the output
    dense = t.size == n * n_classes and (n_classes > 1 or values or t.dtype.kind == "f")
    if not dense and t.dtype.kind in "iub" and t.ndim <= 2 and t.size == n:
        labels = t.reshape(-1)
        lo = labels.min()
        try:
            if lo < 0:
                raise IndexError
            return _eye(n_classes, dtype).take(labels, axis=0)  # one-hot rows; raises past the end
        except IndexError:
            raise ValueError(f"{name} has labels outside [0, {n_classes - 1}] "
                             f"(min {lo}, max {labels.max()})") from None
    if not dense and t.dtype.kind in "iub" and t.ndim == 1:
        raise ValueError(f"{name} has {t.size} labels for {n} samples")
    if t.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be integer labels or a numeric (N, C) array, got dtype {t.dtype}")
    if t.size == n * n_classes:
        t = t.reshape(n, n_classes)
    if t.ndim != 2 or t.shape != (n, n_classes):
        raise ValueError(f"{name} must be {n} integer labels or shape ({n}, {n_classes}), got shape {t.shape}")
    t = as_c(t, dtype)
    check_finite(t, name)
    return t


def positive(value: float, name: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def non_negative(value: float, name: str) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value}")
    return value


def labels_of(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t)
    return t.argmax(axis=1) if t.ndim == 2 else t.reshape(-1)


def class_labels(t, n: int, n_classes: int, name: str = "t", samples: str = "samples") -> np.ndarray:
    """Integer class labels (n,) of targets ``t`` for a net with ``n_classes`` outputs, checked.

    ``t`` is labels ((n,) or (n, 1), integers or integral floats, each in [0, n_classes)) or
    one-hot / score rows (n, n_classes), whose arg-max is taken. Anything else is a ValueError
    (a label column read as one-hot rows would make every label 0)."""
    t = np.asarray(t)
    if t.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be integer labels or one-hot rows, got dtype {t.dtype}")
    if t.ndim == 2 and t.shape[1] == n_classes and (n_classes > 1 or t.dtype.kind == "f"):
        check_finite(np.asarray(t, dtype=np.float64), name)
        labels = t.argmax(axis=1)
    elif t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1):
        labels = t.reshape(-1)
        if labels.dtype.kind == "f":
            if not (np.isfinite(labels).all() and (labels == np.round(labels)).all()):
                raise ValueError(f"{name} holds non-integer labels (e.g. {labels[labels != np.round(labels)][:1]})")
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(f"{name} has labels outside [0, {n_classes - 1}] "
                             f"(min {labels.min():g}, max {labels.max():g})")
        labels = labels.astype(np.int64)
    else:
        raise ValueError(f"{name} must be {n} labels or one-hot rows ({n}, {n_classes}), got shape {t.shape}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} labels for {n} {samples}")
    return labels

