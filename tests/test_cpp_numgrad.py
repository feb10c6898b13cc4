"""The C++ numerical-gradient kernels (csrc/numgrad/numgrad.hpp) against the numpy spec.

_core.mlp_numerical_gradient must equal _backends.numpy.Mlp.numerical_gradient (which perturbs theta
and recomputes the whole loss per parameter); _core.numerical_gradient_callback must walk any-strided
arrays in place and restore them bit for bit.
"""
from __future__ import annotations

import gzip
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyfastgrad._backends.cpp", reason="C++ extension not built")
import scipy_openblas32  # noqa: E402,F401  (preloads the OpenBLAS _core links to)

from pyfastgrad import _core  # noqa: E402
from pyfastgrad._backends import numpy as NK  # noqa: E402

from _helpers import mnist_dir, nerr  # noqa: E402

MNIST = mnist_dir() or Path("/nonexistent")  # $PYFASTGRAD_DATA first, like the other tests


def seed(*key) -> int:
    return zlib.crc32(repr(key).encode())


def make_problem(rng, sizes, loss, dtype, n=7, scale=1.0, zeros=0.5, targets="onehot"):
    """theta (weights ~ scale * randn / sqrt(fan_in), biases small), sparse x, dense targets."""
    parts = []
    for i in range(1, len(sizes)):
        parts.append(scale * rng.standard_normal(sizes[i - 1] * sizes[i]) / np.sqrt(sizes[i - 1]))
        parts.append(0.1 * rng.standard_normal(sizes[i]))
    theta = np.concatenate(parts).astype(dtype)
    x = rng.standard_normal((n, sizes[0]))
    x[rng.random(x.shape) < zeros] = 0.0  # exact zeros: rows a weight does not touch
    c = sizes[-1]
    if targets == "onehot":
        t = np.eye(c)[rng.integers(0, c, n)]
    elif targets == "soft":
        t = rng.random((n, c))
        t /= t.sum(axis=1, keepdims=True)
    else:  # real-valued (mse) / all-zero rows
        t = rng.standard_normal((n, c)) if loss == "mse" else np.zeros((n, c))
    return theta, x.astype(dtype), t.astype(dtype)


def cpp_grad(sizes, act, loss, theta, x, t, wd, h):
    grad = np.full_like(theta, np.nan)
    _core.mlp_numerical_gradient(list(sizes), act, loss, theta, x, t, wd, h, grad)
    return grad


def ref_grad(sizes, act, loss, theta, x, t, wd, h):
    grad = np.empty_like(theta)
    NK.Mlp(sizes, act, loss, theta.dtype).numerical_gradient(theta.copy(), x, t, wd, h, grad)
    return grad


SIZES = [(5, 3), (6, 4, 3), (7, 5, 4, 3), (6, 5, 4, 4, 3)]


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("loss", ["softmax", "mse", "hinge"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_float64_matches_reference(sizes, act, loss, wd):
    rng = np.random.default_rng(seed(sizes, act, loss, wd))
    theta, x, t = make_problem(rng, sizes, loss, np.float64)
    before = theta.copy()
    g = cpp_grad(sizes, act, loss, theta, x, t, wd, 1e-4)
    assert np.array_equal(theta.view(np.uint64), before.view(np.uint64))  # theta untouched, bit for bit
    assert nerr(g, ref_grad(sizes, act, loss, theta, x, t, wd, 1e-4)) <= 1e-8


@pytest.mark.parametrize("sizes", [(6, 4, 3), (7, 5, 4, 3), (5, 6, 5, 4, 4)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("loss", ["softmax", "mse", "hinge"])
@pytest.mark.parametrize("h, scale", [(1e-2, 1.0), (0.1, 3.0), (1e-4, 8.0)])
def test_float64_large_steps_and_weights(sizes, act, loss, h, scale):
    # big h or big weights leave the series' ranges and switch ReLUs and hinge margins:
    # the exact fallbacks must still agree
    rng = np.random.default_rng(seed(sizes, act, loss, h))
    theta, x, t = make_problem(rng, sizes, loss, np.float64, n=9, scale=scale)
    assert nerr(cpp_grad(sizes, act, loss, theta, x, t, 0.1, h),
                ref_grad(sizes, act, loss, theta, x, t, 0.1, h)) <= 1e-8


@pytest.mark.parametrize("targets", ["soft", "other"])
@pytest.mark.parametrize("loss", ["softmax", "mse", "hinge"])
def test_float64_dense_targets(targets, loss):
    # soft targets (softmax uses all of t), real targets (mse), all-zero rows (hinge ties: class 0)
    rng = np.random.default_rng(7)
    sizes = (6, 5, 4, 4)
    theta, x, t = make_problem(rng, sizes, loss, np.float64, targets=targets)
    for act in ("relu", "tanh"):
        g = cpp_grad(sizes, act, loss, theta, x, t, 0.0, 1e-4)
        assert nerr(g, ref_grad(sizes, act, loss, theta, x, t, 0.0, 1e-4)) <= 1e-8


@pytest.mark.parametrize("sizes", [(40, 12, 10), (40, 12, 8, 10)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_mnist_like_sparse_small_weights(sizes, act):
    # the benchmark's regime: nonnegative inputs mostly exactly zero, 0.01-scale weights, zero biases
    rng = np.random.default_rng(3)
    n = 12
    P = NK.n_params(sizes)
    theta = np.zeros(P)
    for ws, _, _ in NK.layer_slices(sizes):
        theta[ws] = 0.01 * rng.standard_normal(ws.stop - ws.start)
    x = rng.random((n, sizes[0]))
    x[rng.random(x.shape) < 0.8] = 0.0
    t = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    g = cpp_grad(sizes, act, "softmax", theta, x, t, 0.0, 1e-4)
    ref = ref_grad(sizes, act, "softmax", theta, x, t, 0.0, 1e-4)
    assert nerr(g, ref) <= 1e-8
    # The first layer's biases have tiny gradients (~1e-5): check them on their own, against the
    # reference's rounding noise, about eps * loss / 2h absolute.
    bs = NK.layer_slices(sizes)[0][2]
    loss = NK.Mlp(sizes, act, "softmax", np.float64).loss(theta, x, t, 0.0)
    noise = np.finfo(np.float64).eps * loss / 2e-4
    assert np.max(np.abs(g[bs] - ref[bs])) <= 20 * noise < 1e-2 * np.max(np.abs(ref[bs]))


def test_single_row_single_output():
    rng = np.random.default_rng(11)
    for loss in ("softmax", "mse", "hinge"):
        theta, x, t = make_problem(rng, (4, 3, 1), loss, np.float64, n=1, zeros=0.0)
        g = cpp_grad((4, 3, 1), "tanh", loss, theta, x, t, 0.1, 1e-4)
        assert nerr(g, ref_grad((4, 3, 1), "tanh", loss, theta, x, t, 0.1, 1e-4)) <= 1e-8


@pytest.mark.parametrize("loss", ["softmax", "mse", "hinge"])
@pytest.mark.parametrize("case", ["nan_theta", "inf_x", "nan_t", "huge_weight"])
def test_non_finite_like_reference(loss, case):
    # a non-finite loss stays non-finite under every perturbation: the reference gives NaN everywhere
    rng = np.random.default_rng(seed(loss, case))
    sizes = (5, 4, 3)
    theta, x, t = make_problem(rng, sizes, loss, np.float64, n=4, zeros=0.0)
    if case == "nan_theta":
        theta[3] = np.nan
    elif case == "inf_x":
        x[1, 2] = np.inf
    elif case == "nan_t":
        t[2, 1] = np.nan  # hinge: np.argmax picks the NaN's class, the loss stays finite
    else:
        theta[0] = 1e200  # the L2 term overflows
    g = cpp_grad(sizes, "relu", loss, theta, x, t, 0.1, 1e-4)
    with np.errstate(all="ignore"):
        ref = ref_grad(sizes, "relu", loss, theta, x, t, 0.1, 1e-4)
    assert np.array_equal(np.isnan(g), np.isnan(ref))
    ok = ~np.isnan(ref)
    if ok.any():
        assert nerr(g[ok], ref[ok]) <= 1e-8


def emulated_float32(sizes, act, loss, theta32, x32, t32, wd, h):
    """The exact central difference at the float32-rounded points theta_i +- h, evaluated in float64."""
    net = NK.Mlp(sizes, act, loss, np.float64)
    th = theta32.astype(np.float64)
    x, t = x32.astype(np.float64), t32.astype(np.float64)
    g = np.empty_like(th)
    for i in range(th.size):
        w = theta32[i]
        th[i] = np.float32(w + np.float32(h))
        fp = net.loss(th, x, t, wd)
        th[i] = np.float32(w - np.float32(h))
        fm = net.loss(th, x, t, wd)
        th[i] = w
        g[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("sizes", [(6, 4, 3), (7, 5, 4, 3)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("loss", ["softmax", "mse", "hinge"])
def test_float32(sizes, act, loss):
    rng = np.random.default_rng(seed(sizes, act, loss, 32))
    theta, x, t = make_problem(rng, sizes, loss, np.float32)
    before = theta.copy()
    g = cpp_grad(sizes, act, loss, theta, x, t, 0.1, 1e-4)
    assert g.dtype == np.float32
    assert np.array_equal(theta.view(np.uint32), before.view(np.uint32))
    # The float32 reference itself is noisy here: its loss differences (~1e-4 * gradient) are within
    # a few float32 ulps of a loss of size ~1, so only a loose agreement holds (measured <= 1.5e-2).
    assert nerr(g, ref_grad(sizes, act, loss, theta, x, t, 0.1, 1e-4)) <= 5e-2
    # The kernel works in double at the float32-rounded perturbed points: against that, it is exact
    # up to the float32 rounding of the result.
    assert nerr(g, emulated_float32(sizes, act, loss, theta, x, t, 0.1, 1e-4)) <= 1e-5


def test_threads_give_identical_results():
    rng = np.random.default_rng(5)
    sizes = (30, 16, 8, 5)
    theta, x, t = make_problem(rng, sizes, "softmax", np.float64, n=20)
    ref = cpp_grad(sizes, "relu", "softmax", theta, x, t, 0.1, 1e-4)
    out = [None] * 4

    def work(k):
        out[k] = cpp_grad(sizes, "relu", "softmax", theta, x, t, 0.1, 1e-4)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for g in out:
        assert np.array_equal(g, ref)


def test_mlp_bad_arguments():
    sizes = [4, 3, 2]
    P = NK.n_params(sizes)
    theta, x, t, g = np.zeros(P), np.zeros((5, 4)), np.zeros((5, 2)), np.zeros(P)
    f = _core.mlp_numerical_gradient
    f(sizes, "relu", "softmax", theta, x, t, 0.0, 1e-4, g)  # fine
    bad_value = [
        ([4, 3, 3], "relu", "softmax", theta, x, t, g),         # theta length
        (sizes, "relu", "softmax", np.zeros(P + 1), x, t, g),
        (sizes, "relu", "softmax", theta, np.zeros((5, 3)), t, g),  # x columns
        (sizes, "relu", "softmax", theta, x, np.zeros((4, 2)), g),  # t rows
        (sizes, "relu", "softmax", theta, x, np.zeros((5, 3)), g),  # t columns
        (sizes, "relu", "softmax", theta, np.zeros((0, 4)), np.zeros((0, 2)), g),  # N = 0
        (sizes, "relu", "softmax", theta, x, t, np.zeros(P - 1)),   # grad length
        ([4], "relu", "softmax", np.zeros(0), x, t, np.zeros(0)),  # one layer size
        ([4, 0, 2], "relu", "softmax", np.zeros(2), x, t, np.zeros(2)),
        (sizes, "relu", "softmax", theta, x.ravel(), t, g),         # x not 2-D
        (sizes, "softplus", "softmax", theta, x, t, g),             # unknown names
        (sizes, "relu", "xent", theta, x, t, g),
        (sizes, "relu", "softmax", theta, x, t, theta),             # grad aliases theta
    ]
    for args in bad_value:
        with pytest.raises(ValueError):
            f(*args[:6], 0.0, 1e-4, args[6])
    with pytest.raises(ValueError):
        f(sizes, "relu", "softmax", theta, x, t, 0.0, 0.0, g)  # h = 0
    ro = np.zeros(P)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        f(sizes, "relu", "softmax", theta, x, t, 0.0, 1e-4, ro)
    # dtypes and layouts are never converted: no overload matches
    with pytest.raises(TypeError):
        f(sizes, "relu", "softmax", theta.astype(np.float32), x, t, 0.0, 1e-4, g)
    with pytest.raises(TypeError):
        f(sizes, "relu", "softmax", theta, np.asfortranarray(x), t, 0.0, 1e-4, g)
    with pytest.raises(TypeError):
        f(sizes, "relu", "softmax", np.zeros(2 * P)[::2], x, t, 0.0, 1e-4, g)


# ---------------------------------------------------------------- generic callback version
def square_sum(w):
    return np.sum(w ** 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("forward", [False, True])
def test_callback_3d(dtype, forward):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    x[0, 0, 0] = -0.0
    bits = x.copy()
    out = np.empty_like(x)
    h = 1e-3 if dtype == np.float32 else 1e-5
    _core.numerical_gradient_callback(square_sum, x, h, forward, out)
    assert np.array_equal(x.view(np.uint8), bits.view(np.uint8))  # restored exactly (also -0.0)
    expect = 2 * x.astype(np.float64) + (h if forward else 0.0)
    tol = 2e-2 if dtype == np.float32 else 1e-8
    np.testing.assert_allclose(out, expect, atol=tol, rtol=tol)
    ref = NK.numerical_gradient(square_sum, x.copy(), h, "forward" if forward else "central")
    if dtype == np.float64:
        assert np.array_equal(out, ref)  # the same operations in the same order
    else:
        assert nerr(out, ref) <= 2e-2


@pytest.mark.parametrize("forward", [False, True])
def test_callback_non_contiguous_views(forward):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 6))
    keep = base.copy()
    seen = []
    for view in (base[:, ::2], base[::-1, 1::3], base.T):
        out = np.empty(view.shape)

        def f(w):
            seen.append(w)
            return square_sum(w)

        _core.numerical_gradient_callback(f, view, 1e-5, forward, out)
        assert all(s is view for s in seen)  # f gets the array itself, never a copy
        seen.clear()
        np.testing.assert_allclose(out, 2 * view + (1e-5 if forward else 0.0), atol=1e-6)
        ref = NK.numerical_gradient(square_sum, view, 1e-5, "forward" if forward else "central")
        assert np.array_equal(out, ref)
        assert np.array_equal(base, keep)


def test_callback_counts_and_order():
    x = np.zeros((2, 3))
    calls = []

    def f(w):
        calls.append(np.flatnonzero(w).tolist())
        return 0.0

    _core.numerical_gradient_callback(f, x, 0.5, False, np.empty((2, 3)))
    assert calls == [[i] for i in range(6) for _ in (0, 1)]  # C order, +h then -h per element
    calls.clear()
    _core.numerical_gradient_callback(f, x, 0.5, True, np.empty((2, 3)))
    assert calls == [[]] + [[i] for i in range(6)]  # f(x) once first, then one call per element


def test_callback_return_types():
    x = np.array([1.0, 2.0])
    out = np.empty(2)
    for ret, expect in ((lambda w: np.float32(w.sum()), 1.0), (lambda w: np.array(w.sum()), 1.0),
                        (lambda w: int(round(100 * w.sum())), 100.0)):
        _core.numerical_gradient_callback(ret, x, 0.5, False, out)
        np.testing.assert_allclose(out, [expect, expect], rtol=1e-6)
    for bad in (lambda w: "1.0", lambda w: None, lambda w: [1.0]):
        with pytest.raises(TypeError):
            _core.numerical_gradient_callback(bad, x, 0.5, False, out)
        assert x.tolist() == [1.0, 2.0]


def test_callback_exception_restores():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))[:, ::2]
    keep = x.copy()
    n = [0]

    class Boom(Exception):
        pass

    def f(w):
        n[0] += 1
        if n[0] == 4:
            raise Boom("stop")
        return float(np.sum(w))

    for forward in (False, True):
        n[0] = 0
        with pytest.raises(Boom):
            _core.numerical_gradient_callback(f, x, 0.25, forward, np.empty(x.shape))
        assert np.array_equal(x, keep)


def test_callback_bad_arguments():
    x = np.zeros((2, 2))
    out = np.empty((2, 2))
    cb = _core.numerical_gradient_callback
    with pytest.raises(TypeError):
        cb(square_sum, np.zeros((2, 2), dtype=np.int64), 1e-4, False, np.empty((2, 2), dtype=np.int64))
    with pytest.raises(TypeError):
        cb(square_sum, np.zeros(3, dtype=np.float16), 1e-4, False, np.empty(3, dtype=np.float16))
    with pytest.raises(TypeError):
        cb(square_sum, [0.0, 1.0], 1e-4, False, np.empty(2))  # not an array: never converted
    with pytest.raises(TypeError):
        cb(square_sum, x, 1e-4, False, np.empty((2, 2), dtype=np.float32))  # out dtype
    with pytest.raises(TypeError):
        cb(42, x, 1e-4, False, out)  # not callable
    ro = np.zeros((2, 2))
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        cb(square_sum, ro, 1e-4, False, out)
    with pytest.raises(ValueError):
        cb(square_sum, x, 1e-4, False, np.empty((4,)))  # out shape
    with pytest.raises(ValueError):
        cb(square_sum, x, 1e-4, False, np.empty((2, 4))[:, ::2])  # out not C-contiguous
    with pytest.raises(ValueError):
        cb(square_sum, x, 1e-4, False, x)  # out is x


# ---------------------------------------------------------------- real MNIST
def read_idx(path, header):
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header)


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(), reason="MNIST not found")
def test_mnist_20_images():
    images = read_idx(MNIST / "train-images-idx3-ubyte.gz", 16).reshape(-1, 784)
    labels = read_idx(MNIST / "train-labels-idx1-ubyte.gz", 8)
    x = images[:20].astype(np.float64) / 255.0
    t = np.eye(10)[labels[:20]]
    sizes = (784, 10, 10)
    rng = np.random.default_rng(0)
    theta = np.zeros(NK.n_params(sizes))
    for ws, _, _ in NK.layer_slices(sizes):
        theta[ws] = 0.01 * rng.standard_normal(ws.stop - ws.start)
    g = cpp_grad(sizes, "relu", "softmax", theta, x, t, 0.0, 1e-4)
    ref = ref_grad(sizes, "relu", "softmax", theta, x, t, 0.0, 1e-4)
    assert nerr(g, ref) <= 1e-8
    # pixels that are zero in all 20 images get exactly zero gradient
    dead = np.all(x == 0, axis=0)
    W1 = g[: 784 * 10].reshape(784, 10)
    assert np.all(W1[dead] == 0.0)
