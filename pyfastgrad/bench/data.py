"""The benchmark's data: real MNIST images, or the real MNIST subset shipped in the package.

Never random numbers: random pixels are dense, so they would send the kernels down another path
(MNIST is 81 % zeros) and the figures would change meaning.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

__all__ = ["BenchDataError", "load_images", "one_hot"]

N_IMAGES = 60000  # an MNIST training set's worth: the epoch benchmark runs 600 steps of 100


class BenchDataError(RuntimeError):
    """No images to benchmark on (neither MNIST nor the subset shipped in the package could be read)."""


def one_hot(labels: np.ndarray, classes: int, dtype) -> np.ndarray:
    out = np.zeros((labels.shape[0], classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def _checkout_mnist() -> Optional[Path]:
    """``shared/datasets/mnist`` beside a source checkout (the developers' layout), when present."""
    from pyfastgrad.datasets import mnist_available
    here = Path(__file__).resolve()
    for up in (here.parents[2], here.parents[3]):
        p = up / "shared" / "datasets" / "mnist"
        if p.is_dir() and mnist_available(p):
            return p
    return None


def load_images() -> Tuple[np.ndarray, np.ndarray, str]:
    """60,000 training images (float32, (N, 784), in [0, 1]), int labels, and where they came from.

    The data ``python -m pyfastgrad train`` uses without downloading (:func:`pyfastgrad.datasets.load_data`:
    ``$PYFASTGRAD_DATA``, else a source checkout's ``shared/datasets/mnist``, else the user cache), else the
    real MNIST subset shipped in the package (12,000 images, tiled to 60,000: same shapes, same sparsity,
    so the same cost). Raises :class:`BenchDataError` naming the fix when neither can be read.
    """
    from pyfastgrad.datasets import load_data
    path = None if os.environ.get("PYFASTGRAD_DATA") else _checkout_mnist()
    try:
        ((x, t), _), source = load_data(path, download=False, warn=False, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise BenchDataError(
            f"no benchmark data: {type(exc).__name__}: {exc}. Set PYFASTGRAD_DATA to a directory holding "
            "the four MNIST files, or run pyfastgrad.datasets.download_mnist() once; the MNIST subset shipped "
            "with pyfastgrad is the fallback, so if it is missing, reinstall pyfastgrad") from exc
    x, t = np.ascontiguousarray(x, np.float32), np.asarray(t, np.int64)
    if source.name == "mnist":
        return x, t, f"MNIST ({source.directory})"
    reps = -(-N_IMAGES // x.shape[0])
    return (np.ascontiguousarray(np.tile(x, (reps, 1))[:N_IMAGES], np.float32), np.tile(t, reps)[:N_IMAGES],
            f"the MNIST subset shipped with pyfastgrad (MNIST not found; {x.shape[0]:,} images tiled to "
            f"{N_IMAGES:,})")
