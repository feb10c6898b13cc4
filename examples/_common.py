"""Helpers shared by the example scripts: the output folder, figures, smoothing.

Not part of the library; each example adds its own folder to ``sys.path`` when run as a script.
"""
from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every example has: ``--out DIR`` and ``--no-plots``."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=".", help="folder for the pictures (docs/ holds the committed ones)")
    p.add_argument("--no-plots", action="store_true", help="print the numbers only, draw nothing")
    return p


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no window), or a clear ImportError."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover (the test extra has matplotlib)
        raise ImportError("the pictures need matplotlib: pip install 'pyfastgrad[plot]' "
                          "(or pass --no-plots)") from exc
    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def save(fig, out: str, name: str) -> Path:
    """Save ``fig`` as ``out/name`` at 100 dpi, close it, print and return the path.

    The PNG is stored with a 256-colour palette (Pillow, which matplotlib requires): the same
    picture to the eye at a third of the size, so the committed pictures stay small."""
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    import matplotlib.pyplot as plt
    plt.close(fig)
    from PIL import Image
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"saved {path}")
    return path


def smooth(y: Sequence[float], window: int) -> np.ndarray:
    """Moving average over ``window`` points (shorter at the start): same length as ``y``."""
    y = np.asarray(y, dtype=np.float64)
    if window <= 1 or y.size == 0:
        return y.copy()
    c = np.cumsum(np.insert(y, 0, 0.0))
    i = np.arange(1, y.size + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def mnist(n_train: Optional[int] = None, n_test: Optional[int] = None, subset: bool = False):
    """MNIST for the examples: ``$PYFASTGRAD_DATA`` / the user cache when there (never downloads
    here), else the real subset shipped in the package; ``(data, description)``."""
    from pyfastgrad.datasets import load_mnist, load_mnist_subset, mnist_available

    if not subset and (os.environ.get("PYFASTGRAD_DATA") or mnist_available()):
        (x, t), (xt, tt) = load_mnist()
        what = "MNIST"
    else:
        (x, t), (xt, tt) = load_mnist_subset()
        what = "the MNIST subset shipped with pyfastgrad"
    if n_train:
        x, t = x[:n_train], t[:n_train]
    if n_test:
        xt, tt = xt[:n_test], tt[:n_test]
    return ((x, t), (xt, tt)), f"{what} ({len(t):,} train / {len(tt):,} test images)"
