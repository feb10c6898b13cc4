"""Helpers the test modules share (imported as ``from _helpers import ...``; pytest puts tests/ on
``sys.path`` through ``pythonpath`` in pyproject.toml). Fixtures stay in conftest.py."""
import os
import warnings
from pathlib import Path

import numpy as np

import pyfastgrad

with warnings.catch_warnings():  # a missing extension warns once; the tests check that separately
    warnings.simplefilter("ignore", RuntimeWarning)
    pyfastgrad.get_backend()

BACKENDS = pyfastgrad.available_backends()
FAST_BACKENDS = [b for b in BACKENDS if b != "numpy"]
DTYPES = [np.float64, np.float32]

# the agreement the project requires of cpp and numba against the numpy reference (normwise)
TOL = {np.float64: 1e-10, np.float32: 1e-4}


def mnist_dir():
    """The real MNIST directory: $PYFASTGRAD_DATA, else ../shared/datasets/mnist; None when absent."""
    env = os.environ.get("PYFASTGRAD_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    p = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
    return p if p.is_dir() else None


def normwise(a, ref):
    """max |a - ref| / max |ref| (the project's agreement measure)."""
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


def nerr(a, b) -> float:
    """max|a - b| / max|b| (normwise); when b is all zero (or empty), max|a - b|: exact zeros compare as 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if b.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)
