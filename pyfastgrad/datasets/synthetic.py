"""Procedurally drawn digits: a test and demo utility, never used in place of MNIST.

:func:`make_synthetic_digits` draws a small MNIST-like set (28x28, 0..255,
digits 0-9) from stroke skeletons with random affine and smooth warps, stroke
widths and noise. It needs no files and is deterministic for a seed, which
makes it handy for tests and offline demos. It is *not* MNIST and no default
path of pyfastgrad trains on it: ``python -m pyfastgrad train`` and
:func:`pyfastgrad.datasets.load_data` use real MNIST, or the real MNIST
subset shipped in the package.

``load_digits_embedded`` is the old name of :func:`make_synthetic_digits`.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .mnist import N_CLASSES, Dataset, _check_dtype, _format

__all__ = ["make_synthetic_digits", "load_digits_embedded"]


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 8) -> np.ndarray:
    """Polyline of an elliptic arc; angles in degrees, y pointing down (90 = bottom)."""
    a = np.deg2rad(np.linspace(a0, a1, n + 1))
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def _poly(*points: Tuple[float, float]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _skeletons() -> List[List[np.ndarray]]:
    """Per digit, a list of variants; a variant is an ``(S, 4)`` array of segments.

    Units: the glyph spans y in [-1, 1] (top to bottom) and x in about
    [-0.6, 0.6]; variants mimic common ways people write each digit.
    """
    def segs(*polylines: np.ndarray) -> np.ndarray:
        return np.concatenate([np.hstack([p[:-1], p[1:]]) for p in polylines], axis=0)

    loop = lambda cx, cy, rx, ry, n=12: _arc(cx, cy, rx, ry, -90, 270, n)  # noqa: E731
    d: List[List[np.ndarray]] = [[] for _ in range(N_CLASSES)]
    d[0] = [segs(loop(0, 0, 0.55, 0.95, 14)),
            segs(_arc(0, 0, 0.5, 0.95, -70, 300, 14))]  # not quite closed at the top
    d[1] = [segs(_poly((0.05, -1), (-0.05, 1))),
            segs(_poly((-0.3, -0.65), (0.1, -1), (0.0, 1))),
            segs(_poly((-0.3, -0.65), (0.1, -1), (0.0, 1)), _poly((-0.3, 1), (0.3, 1)))]
    d[2] = [segs(np.vstack([_arc(0, -0.45, 0.5, 0.52, 180, 390, 8), _poly((-0.55, 1), (0.6, 1))])),
            # the "2" with a small loop at the bottom-left
            segs(np.vstack([_arc(0, -0.45, 0.5, 0.52, 190, 400, 8),
                            _poly((-0.5, 0.95), (-0.3, 0.72), (-0.15, 0.88), (0.05, 1.0), (0.6, 0.95))]))]
    d[3] = [segs(np.vstack([_arc(0, -0.5, 0.45, 0.5, 200, 450, 8), _arc(0, 0.5, 0.5, 0.5, 270, 520, 8)[1:]])),
            segs(_poly((-0.45, -1), (0.45, -1), (-0.05, -0.1)), _arc(0, 0.45, 0.5, 0.55, 270, 520, 9))]
    d[4] = [segs(_poly((0.2, -1), (-0.55, 0.35), (0.6, 0.35)), _poly((0.3, -0.4), (0.3, 1))),
            segs(_poly((-0.45, -1), (-0.5, 0.3), (0.6, 0.3)), _poly((0.3, -1), (0.3, 1)))]
    d[5] = [segs(np.vstack([_poly((0.5, -1), (-0.35, -1), (-0.45, -0.1)), _arc(0, 0.4, 0.5, 0.55, 220, 500, 9)])),
            segs(_poly((0.5, -1), (-0.35, -1)),
                 np.vstack([_poly((-0.35, -1), (-0.45, -0.05)), _arc(0, 0.42, 0.52, 0.52, 230, 490, 9)]))]
    d[6] = [segs(np.vstack([_poly((0.4, -1), (0.0, -0.72), (-0.35, -0.2)), _arc(0, 0.45, 0.48, 0.52, 180, 540, 12)])),
            segs(np.vstack([_arc(0.55, 0.2, 1.0, 1.2, 245, 180, 6), _arc(0.02, 0.5, 0.43, 0.47, 180, 530, 12)]))]
    d[7] = [segs(_poly((-0.55, -1), (0.55, -1), (-0.1, 1))),
            segs(_poly((-0.55, -1), (0.55, -1), (-0.1, 1)), _poly((-0.25, 0.0), (0.4, 0.0))),
            segs(_poly((-0.55, -0.8), (-0.5, -1), (0.55, -1), (0.05, 1)))]
    d[8] = [segs(loop(0, -0.5, 0.4, 0.48), loop(0, 0.48, 0.5, 0.52)),
            segs(np.vstack([_arc(0, -0.5, 0.42, 0.48, 0, -270, 10), _arc(0, 0.5, 0.5, 0.5, -90, 270, 12)[::-1]]))]
    d[9] = [segs(loop(0, -0.45, 0.48, 0.52), _poly((0.48, -0.45), (0.4, 0.3), (0.2, 1))),
            segs(loop(0, -0.45, 0.48, 0.52), _poly((0.48, -0.5), (0.45, 1)))]
    return d


_SKELETONS = _skeletons()
_SIZE = 28


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one ``uint8`` 28x28 image per label; fully vectorised per variant group."""
    n = labels.shape[0]
    out = np.zeros((n, _SIZE * _SIZE), dtype=np.float32)
    # Per-image random draws, made up front in a fixed order so the result
    # depends only on (labels, rng state), not on how images are grouped.
    variant_u = rng.random(n)
    angle = np.deg2rad(np.clip(rng.normal(0.0, 7.0, n), -18, 18))
    shear = rng.uniform(-0.3, 0.3, n)
    height = rng.uniform(8.0, 10.0, n)  # half-height in pixels
    aspect = rng.uniform(0.75, 1.25, n)
    shift = rng.uniform(-2.0, 2.0, (n, 2))
    # Smooth warp: two low-frequency sine displacements per axis.
    w_amp = rng.uniform(0.0, 0.12, (n, 2))
    w_freq = rng.uniform(1.0, 2.5, (n, 2, 2))
    w_phase = rng.uniform(0, 2 * np.pi, (n, 2))
    half_width = rng.uniform(0.9, 1.9, n)
    peak = rng.uniform(0.8, 1.0, n)

    # Combined linear map (pixels per unit): rotation @ shear @ scale.
    c, s = np.cos(angle), np.sin(angle)
    sx, sy = height * aspect, height
    # rows of [[a, b], [d, e]] so that x' = a*x + b*y, y' = d*x + e*y
    a = c * sx
    b = c * shear * sy - s * sy
    dd = s * sx
    e = s * shear * sy + c * sy
    centre = (_SIZE - 1) / 2.0 + shift

    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE]
    px = xx.ravel().astype(np.float32)
    py = yy.ravel().astype(np.float32)

    for digit in range(N_CLASSES):
        variants = _SKELETONS[digit]
        choice = np.minimum((variant_u * len(variants)).astype(int), len(variants) - 1)
        for v, seg in enumerate(variants):
            idx = np.nonzero((labels == digit) & (choice == v))[0]
            if idx.size == 0:
                continue
            # endpoints (m, S, 2) in glyph units, then warp and map to pixels
            pts = np.stack([seg[:, 0:2], seg[:, 2:4]], axis=1).reshape(-1, 2)  # (2S, 2)
            gx, gy = pts[None, :, 0], pts[None, :, 1]
            wx = w_amp[idx, 0:1] * np.sin(w_freq[idx, 0, 0:1] * gy + w_freq[idx, 0, 1:2] * gx + w_phase[idx, 0:1])
            wy = w_amp[idx, 1:2] * np.sin(w_freq[idx, 1, 0:1] * gx + w_freq[idx, 1, 1:2] * gy + w_phase[idx, 1:2])
            gx, gy = gx + wx, gy + wy
            X = (a[idx, None] * gx + b[idx, None] * gy + centre[idx, 0:1]).astype(np.float32)
            Y = (dd[idx, None] * gx + e[idx, None] * gy + centre[idx, 1:2]).astype(np.float32)
            X = X.reshape(idx.size, -1, 2)  # [..., 0] start, [..., 1] end
            Y = Y.reshape(idx.size, -1, 2)
            best = np.full((idx.size, px.size), np.inf, dtype=np.float32)
            for k in range(seg.shape[0]):
                ax, ay = X[:, k, 0:1], Y[:, k, 0:1]
                dx, dy = X[:, k, 1:2] - ax, Y[:, k, 1:2] - ay
                len2 = np.maximum(dx * dx + dy * dy, np.float32(1e-6))
                rx, ry = px - ax, py - ay  # (m, 784)
                t = np.clip((rx * dx + ry * dy) / len2, 0.0, 1.0)
                rx -= t * dx
                ry -= t * dy
                np.minimum(best, rx * rx + ry * ry, out=best)
            # Soft-edged stroke: full inside half_width, a ~1 px linear ramp outside.
            ink = np.clip(half_width[idx, None] + 0.5 - np.sqrt(best), 0.0, 1.0)
            out[idx] = ink * peak[idx, None]

    # Light noise: uneven ink on the strokes and a few faint specks elsewhere.
    out *= 1.0 - 0.2 * rng.random(out.shape, dtype=np.float32) * (out > 0)
    specks = rng.random(out.shape, dtype=np.float32) < 0.004
    out[specks] = np.maximum(out[specks], rng.uniform(0.05, 0.4, int(specks.sum())).astype(np.float32))
    return np.rint(out * 255).astype(np.uint8).reshape(n, _SIZE, _SIZE)


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels with every class count within one of the others, shuffled."""
    return rng.permutation(np.arange(n) % N_CLASSES).astype(np.uint8)


def make_synthetic_digits(n_train: int = 2000, n_test: int = 500, seed: int = 0,
                          normalize: bool = True, flatten: bool = True,
                          one_hot_label: bool = False, dtype=np.float32) -> Dataset:
    """Draw a small MNIST-like digit set procedurally (no files needed; not MNIST).

    Each digit 0-9 is drawn from one of a few stroke skeletons (polylines and
    arcs) with a random rotation (sd 7 deg, at most 18), shear, scale and aspect,
    a smooth random warp, a shift of up to +-2 px, a random stroke width,
    uneven ink and sparse background specks. Values are 0..255 on a mostly
    zero background, like MNIST. A small two-layer net reaches about 95%
    test accuracy after a few epochs; it is not perfectly separable.

    Parameters
    ----------
    n_train, n_test : int
        Number of training / test images; classes are balanced (counts
        differ by at most one).
    seed : int, default 0
        The same seed always gives the same arrays. Train and test come from
        independent streams, so ``n_train`` does not change the test set.
    normalize, flatten, one_hot_label, dtype
        As in :func:`load_mnist`.

    Returns
    -------
    ((x_train, t_train), (x_test, t_test)) : tuple of numpy.ndarray
        Same format as :func:`load_mnist`.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train}, {n_test}")
    scalar = _check_dtype(dtype, normalize)
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    result = []
    for count, seq in ((n_train, train_seq), (n_test, test_seq)):
        rng = np.random.default_rng(seq)
        labels = _balanced_labels(count, rng)
        images = _render(labels, rng)
        result.append(_format(images, labels, normalize, flatten, one_hot_label, scalar))
    return result[0], result[1]


# The old name (pyfastgrad <= 0.1): same function, no longer on any default path.
load_digits_embedded = make_synthetic_digits
