"""Property tests (hypothesis) with the pure-numpy reference as the oracle: shapes, dtypes, memory
layouts (C, Fortran, reversed, strided, unaligned), magnitudes and steps h, on every backend.

Bounded for CI: a fixed number of examples each, derandomized (the same examples every run, so a
failure reproduces), no deadline (the first call of a numba kernel compiles it)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyfastgrad as pfg
from pyfastgrad import reference as ref

from _helpers import BACKENDS

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)
LAYOUTS = ("c", "fortran", "reversed", "strided", "unaligned")


def _layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``a`` in another memory layout (a fresh array; ``a`` is not touched)."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "reversed":  # negative strides along the first axis
        out = np.empty_like(a)[::-1]
        out[...] = a
        return out
    if layout == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape), dtype=a.dtype)
        out = big[tuple(slice(None, None, 2) for _ in a.shape)]
        out[...] = a
        return out
    if layout == "unaligned":
        raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
        out = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        out[...] = a
        return out
    return a.copy()


@st.composite
def batches(draw, max_rows=6, max_cols=7, min_cols=1):
    n = draw(st.integers(1, max_rows))
    d = draw(st.integers(min_cols, max_cols))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e3]))
    seed = draw(st.integers(0, 2 ** 16))
    x = np.random.default_rng(seed).normal(size=(n, d)) * scale
    return x, seed


@SETTINGS
@given(batches(), st.sampled_from(LAYOUTS), st.sampled_from([np.float64, np.float32]))
def test_softmax_any_layout_matches_reference(xs, layout, dtype):
    x, _ = xs
    x = x.astype(dtype)
    xl = _layout(x, layout)
    before = xl.copy()
    want = ref.softmax(x.astype(np.float64))
    for backend in BACKENDS:
        got = pfg.softmax(xl, backend=backend)
        assert got.dtype == dtype and got.shape == x.shape
        assert np.allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-7), backend
    assert np.array_equal(xl, before)  # the input is never modified


@SETTINGS
@given(batches(max_cols=5, min_cols=2), st.sampled_from(LAYOUTS), st.booleans())
def test_losses_with_labels_or_one_hot_match_reference(xs, layout, one_hot):
    x, seed = xs
    y = ref.softmax(x)
    t = np.random.default_rng(seed + 1).integers(0, x.shape[1], x.shape[0])
    tt = np.eye(x.shape[1], dtype=np.int64)[t] if one_hot else t
    yl = _layout(y, layout)
    for backend in BACKENDS:
        assert pfg.cross_entropy_error(yl, tt, backend=backend) == pytest.approx(
            ref.cross_entropy_error(y, t), rel=1e-9), backend
        assert pfg.mean_squared_error(yl, np.eye(x.shape[1])[t], backend=backend) == pytest.approx(
            ref.mean_squared_error(y, np.eye(x.shape[1])[t]), rel=1e-9), backend


@st.composite
def nets(draw):
    sizes = [draw(st.integers(1, 5)) for _ in range(draw(st.integers(2, 4)))]
    sizes[-1] = max(sizes[-1], 2)
    return dict(sizes=sizes, activation=draw(st.sampled_from(["relu", "sigmoid", "tanh"])),
                loss=draw(st.sampled_from(["softmax", "mse", "hinge"])),
                weight_init=draw(st.sampled_from([0.01, 1.0, 5.0])), seed=draw(st.integers(0, 1000)))


def _inputs(cfg, n, scale, seed, layout):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, cfg["sizes"][0])) * scale
    t = rng.integers(0, cfg["sizes"][-1], n)
    return _layout(x, layout), t


@SETTINGS
@given(nets(), st.integers(1, 5), st.sampled_from([1e-2, 1.0, 1e2]), st.integers(0, 999),
       st.sampled_from(LAYOUTS))
def test_loss_and_backprop_match_reference(cfg, n, scale, seed, layout):
    x, t = _inputs(cfg, n, scale, seed, layout)
    before = x.copy()
    with pfg.use_backend("numpy"), np.errstate(over="ignore"):  # the reference's sigmoid: exp(-z) overflows
        net = pfg.Net(**cfg)
        want_loss, want = net.loss(x, t), net.gradient(x, t)
    for backend in BACKENDS:
        got_net = pfg.Net(**cfg, backend=backend)
        assert got_net.loss(x, t) == pytest.approx(want_loss, rel=1e-9, abs=1e-12), backend
        got = got_net.gradient(x, t)
        for k in want:
            scale_k = max(np.abs(want[k]).max(), 1e-12)
            assert np.abs(got[k] - want[k]).max() <= 1e-9 * scale_k, (backend, k)
    assert np.array_equal(x, before)


@SETTINGS
@given(nets(), st.integers(1, 4), st.sampled_from([1e-2, 1.0, 1e2, 3e3]), st.integers(0, 999),
       st.sampled_from([1e-6, 1e-4, 1e-2]), st.sampled_from(LAYOUTS))
def test_net_numerical_gradient_matches_reference(cfg, n, scale, seed, h, layout):
    x, t = _inputs(cfg, n, scale, seed, layout)
    with pfg.use_backend("numpy"), np.errstate(over="ignore"):
        net = pfg.Net(**cfg)
        size = abs(net.loss(x, t)) + np.abs(net.predict(x)).max() + 1.0
        want = net.numerical_gradient(x, t, h=h)
    # the reference loop's own rounding: its loss is rounded to ~eps times the logits' size, and each
    # entry divides a difference of two such losses by 2h
    noise = 256 * np.finfo(np.float64).eps * size / h
    for backend in BACKENDS:
        got = pfg.Net(**cfg, backend=backend).numerical_gradient(x, t, h=h)
        for k in want:
            assert np.isfinite(got[k]).all(), (backend, k)
            tol = noise + 1e-7 * np.abs(want[k]).max()
            assert np.abs(got[k] - want[k]).max() <= tol, (backend, k, np.abs(got[k] - want[k]).max(), tol)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from(LAYOUTS), st.sampled_from([1e-5, 1e-4, 1e-3]),
       st.sampled_from([0.1, 1.0, 10.0]), st.integers(0, 999))
def test_function_numerical_gradient_any_layout(n, d, layout, h, scale, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)) * scale
    xl = _layout(x, layout)
    before = xl.copy()

    def f(v):
        return float(np.sum(np.sin(v) * v))

    want = ref.numerical_gradient(f, x.copy(), h=h)
    for backend in BACKENDS:
        with pfg.use_backend(backend):
            got = pfg.numerical_gradient(f, xl, h=h)
        assert got.shape == x.shape
        assert np.allclose(got, want, rtol=1e-6, atol=1e-9 * scale / h), backend
        assert np.array_equal(xl, before), backend  # restored exactly
