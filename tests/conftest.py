"""Shared fixtures: the backends present, and real MNIST from ../shared/datasets/mnist."""
import os
from pathlib import Path

import numpy as np
import pytest

import pyfastgrad

import warnings

with warnings.catch_warnings():  # a missing extension warns once; the tests check that separately
    warnings.simplefilter("ignore", RuntimeWarning)
    pyfastgrad.get_backend()

BACKENDS = pyfastgrad.available_backends()
FAST_BACKENDS = [b for b in BACKENDS if b != "numpy"]
DTYPES = [np.float64, np.float32]


def mnist_dir():
    env = os.environ.get("PYFASTGRAD_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    p = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def mnist():
    d = mnist_dir()
    if d is None:
        pytest.skip("MNIST not found: set PYFASTGRAD_DATA or place it in ../shared/datasets/mnist")
    from pyfastgrad.datasets import load_mnist
    return load_mnist(d, normalize=True, flatten=True, one_hot_label=False)


@pytest.fixture(scope="session")
def mnist_batch(mnist):
    """100 training images (float64) and labels: the tutorials' gradient-check batch."""
    (x, t), _ = mnist
    return x[:100].astype(np.float64), t[:100]


def normwise(a, ref):
    """max |a - ref| / max |ref| (the project's agreement measure)."""
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


TOL = {np.float64: 1e-10, np.float32: 1e-4}
