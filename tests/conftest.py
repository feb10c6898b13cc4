"""Shared fixtures: real MNIST from $PYFASTGRAD_DATA or ../shared/datasets/mnist.

Shared helpers (BACKENDS, TOL, normwise, ...) live in _helpers.py: test modules import them from there.
"""
import numpy as np
import pytest

from _helpers import mnist_dir


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
