"""The numba backend against the spec, ``_backends/numpy.py``, function by function.

JIT compilation dominates the runtime (about 20 s per dtype on a cold cache, well
under a second once numba's on-disk cache is warm).
"""
import subprocess
import sys

import numba
import numpy as np
import pytest

from pyfastgrad import spec
from pyfastgrad._backends import numba as nbk
from pyfastgrad._backends import numpy as npk

from _helpers import TOL, normwise

NUMGRAD_TOL = {np.float64: 1e-8, np.float32: 2e-3}
NUMGRAD_H = {np.float64: 1e-4, np.float32: 1e-2}  # float32 differences at h=1e-4 are mostly noise
SIZES = {1: [6, 5, 4], 2: [5, 6, 4, 3], 3: [4, 5, 3, 4, 3]}  # by number of hidden layers


def _problem(sizes, dtype, n, seed):
    rng = np.random.default_rng(seed)
    theta = (0.6 * rng.standard_normal(npk.n_params(sizes))).astype(dtype)
    x = rng.standard_normal((n, sizes[0]))
    x[rng.random(x.shape) < 0.3] = 0  # sparse inputs exercise the skipped rows
    t = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    return theta, x.astype(dtype), t.astype(dtype)


def _nets(sizes, act, loss, dtype):
    return nbk.Mlp(sizes, act, loss, dtype), npk.Mlp(sizes, act, loss, dtype)


def test_names_match_the_spec():
    public = {k for k in vars(npk) if not k.startswith("_") and callable(getattr(npk, k))} - {"layer_slices"}
    assert public <= set(vars(nbk)), public - set(vars(nbk))
    assert nbk.NAME == "numba"
    assert nbk.Mlp([3, 4, 2], "relu", "mse", np.float32).n_params == npk.n_params([3, 4, 2])
    with pytest.raises(ValueError):
        nbk.Mlp([3, 2], "gelu", "mse", np.float64)
    with pytest.raises(ValueError):
        nbk.Mlp([3, 2], "relu", "l1", np.float64)


def test_import_compiles_nothing():
    code = ("import numba, pyfastgrad._backends.numba as k\n"
            "d = [v for v in vars(k).values() if isinstance(v, numba.core.registry.CPUDispatcher)]\n"
            "assert d and not any(f.signatures for f in d), [f for f in d if f.signatures]\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("loss", spec.MLP_LOSSES)
@pytest.mark.parametrize("act", spec.MLP_ACTIVATIONS)
def test_mlp_matches_numpy(act, loss, depth, dtype):
    sizes = SIZES[depth]
    mine, spec = _nets(sizes, act, loss, dtype)
    for n, wd, seed in ((1, 0.0, 1), (7, 0.01, 2)):
        theta, x, t = _problem(sizes, dtype, n, seed)
        p = mine.predict(theta, x)
        assert p.dtype == dtype and p.shape == (n, sizes[-1])
        assert normwise(p, spec.predict(theta, x)) <= TOL[dtype]
        lv = mine.loss(theta, x, t, wd)
        assert isinstance(lv, float)
        assert abs(lv - spec.loss(theta, x, t, wd)) <= TOL[dtype] * abs(spec.loss(theta, x, t, wd))
        g, gs = np.full_like(theta, np.nan), np.empty_like(theta)
        lg = mine.loss_grad(theta, x, t, wd, g)
        ls = spec.loss_grad(theta, x, t, wd, gs)
        assert isinstance(lg, float) and abs(lg - ls) <= TOL[dtype] * abs(ls)
        assert normwise(g, gs) <= TOL[dtype]
        h = NUMGRAD_H[dtype]
        before = theta.tobytes()
        gn, gns = np.full_like(theta, np.nan), np.empty_like(theta)
        assert mine.numerical_gradient(theta, x, t, wd, h, gn) is None
        assert theta.tobytes() == before  # theta is never written
        spec.numerical_gradient(theta, x, t, wd, h, gns)
        assert normwise(gn, gns) <= NUMGRAD_TOL[dtype]


def test_numerical_gradient_float32_default_h():
    """At h=1e-4 the float32 reference is noisy: only loose agreement is meaningful."""
    sizes = SIZES[1]
    mine, spec = _nets(sizes, "tanh", "softmax", np.float32)
    theta, x, t = _problem(sizes, np.float32, 16, 3)
    g, gs = np.empty_like(theta), np.empty_like(theta)
    mine.numerical_gradient(theta, x, t, 0.01, 1e-4, g)
    spec.numerical_gradient(theta, x, t, 0.01, 1e-4, gs)
    assert normwise(g, gs) <= 2e-2
    gb = np.empty_like(theta)
    mine.loss_grad(theta, x, t, 0.01, gb)
    assert normwise(g, gb) <= 1e-3  # float64 tails: close to backprop


def test_numerical_gradient_sparse_two_layer_net():
    """TwoLayerNet-like: ReLU, many exact zeros in the input and hidden layer."""
    sizes = [60, 12, 5]
    rng = np.random.default_rng(4)
    x = rng.random((20, 60))
    x[rng.random(x.shape) < 0.8] = 0
    t = np.eye(5)[rng.integers(0, 5, 20)]
    theta = 0.1 * rng.standard_normal(npk.n_params(sizes))
    mine, spec = _nets(sizes, "relu", "softmax", np.float64)
    g, gs = np.empty_like(theta), np.empty_like(theta)
    mine.numerical_gradient(theta, x, t, 0.0, 1e-4, g)
    spec.numerical_gradient(theta, x, t, 0.0, 1e-4, gs)
    assert normwise(g, gs) <= 1e-8


def test_image_shaped_input_is_flattened():
    sizes = [6, 4, 3]
    mine, spec = _nets(sizes, "relu", "mse", np.float64)
    theta, x, t = _problem(sizes, np.float64, 5, 5)
    x4 = x.reshape(5, 1, 2, 3)
    assert normwise(mine.predict(theta, x4), spec.predict(theta, x4)) <= 1e-12


HYPER = {"sgd": [0.1, 0, 0], "momentum": [0.1, 0.9, 0], "nesterov": [0.1, 0.9, 0],
         "adagrad": [0.1, 0, 0], "rmsprop": [0.01, 0.99, 0], "adam": [0.01, 0.9, 0.999],
         "adamw": [0.01, 0.9, 0.999, 1e-8, 0.1, 1, 0.5],  # torch style, decoupled decay, clipping
         "adamax": [0.01, 0.9, 0.999, 1e-8, 0.05, 1, 0.5]}  # L2 decay in the gradient, clipping


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opt", spec.OPTIMIZER_NAMES)
def test_opt_update_matches_numpy(opt, dtype):
    rng = np.random.default_rng(6)
    hyper = np.array(HYPER[opt])
    a = [rng.standard_normal(50).astype(dtype) for _ in range(3)]
    a[1], a[2] = np.abs(a[1]), np.abs(a[2])  # adagrad/rmsprop h and adam v are non-negative
    b = [v.copy() for v in a]
    for step in range(1, 4):
        grad = rng.standard_normal(50).astype(dtype)
        nbk.opt_update(opt, a[0], grad, a[1], a[2], hyper, step)
        npk.opt_update(opt, b[0], grad, b[1], b[2], hyper, step)
    for u, v in zip(a, b):
        assert u.dtype == dtype
        assert normwise(u, v) <= TOL[dtype] / 10


def test_opt_update_checks_state():
    theta = np.zeros(4)
    with pytest.raises(ValueError):
        nbk.opt_update("momentum", theta, theta.copy(), np.zeros(3), np.zeros(4), np.array([0.1, 0.9, 0]), 1)
    with pytest.raises(ValueError):
        nbk.opt_update("lbfgs", theta, theta.copy(), np.zeros(4), np.zeros(4), np.array([0.1, 0.9, 0]), 1)
    nbk.opt_update("sgd", theta, np.ones(4), None, None, np.array([0.5, 0, 0]), 1)
    assert np.array_equal(theta, np.full(4, -0.5))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("opt", spec.OPTIMIZER_NAMES)
def test_train_steps_matches_numpy(opt, dtype):
    sizes = [6, 5, 4]
    rng = np.random.default_rng(7)
    theta, X, T = _problem(sizes, dtype, 40, 8)
    idx = rng.integers(0, 40, (20, 5))
    hyper = np.array(HYPER[opt])
    mine, spec = _nets(sizes, "tanh", "softmax", dtype)
    ta, tb = theta.copy(), theta.copy()
    sa = [np.zeros_like(theta), np.zeros_like(theta)]
    sb = [np.zeros_like(theta), np.zeros_like(theta)]
    la = mine.train_steps(ta, X, T, idx, 0.01, opt, hyper, sa[0], sa[1], 3)
    lb = spec.train_steps(tb, X, T, idx, 0.01, opt, hyper, sb[0], sb[1], 3)
    assert la.dtype == np.float64 and la.shape == (20,)
    tol = 1e-9 if dtype == np.float64 else 1e-4
    assert normwise(la, lb) <= tol
    assert normwise(ta, tb) <= tol
    for u, v in zip(sa, sb):
        assert normwise(u, v) <= tol or (not v.any() and not u.any())


def test_train_steps_stops_at_non_finite_loss():
    sizes = [6, 5, 4]
    rng = np.random.default_rng(9)
    theta, X, T = _problem(sizes, np.float64, 30, 10)
    X *= 1e3
    idx = rng.integers(0, 30, (40, 6))
    hyper = np.array([1e3, 0, 0])
    mine, spec = _nets(sizes, "relu", "mse", np.float64)
    ta, tb = theta.copy(), theta.copy()
    la = mine.train_steps(ta, X, T, idx, 0.0, "sgd", hyper, None, None, 0)
    with np.errstate(all="ignore"):  # the spec overflows on the way (warnings are errors here)
        lb = spec.train_steps(tb, X, T, idx, 0.0, "sgd", hyper, np.zeros_like(tb), np.zeros_like(tb), 0)
    done = np.isfinite(lb)
    assert 0 < done.sum() < 40  # the run does diverge
    assert np.array_equal(np.isfinite(la), done)
    assert normwise(la[done], lb[done]) <= 1e-9
    assert np.all(np.isfinite(ta)) and normwise(ta, tb) <= 1e-9
    # a non-finite first loss: nothing changes
    bad = ta.copy()
    bad[0] = np.nan
    before = bad.tobytes()
    assert np.isnan(mine.train_steps(bad, X, T, idx[:3], 0.0, "sgd", hyper, None, None, 0)).all()
    assert bad.tobytes() == before


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_elementwise_functions(dtype):
    rng = np.random.default_rng(11)
    z = (5 * rng.standard_normal((6, 4))).astype(dtype)
    z[0] += 800  # the max-subtraction guard
    for arr in (z, z[1], z.reshape(2, 3, 4)):
        s = nbk.softmax(arr)
        assert s.dtype == dtype and s.shape == arr.shape
        assert normwise(s, npk.softmax(arr)) <= TOL[dtype]
    y = npk.softmax(z)
    t = np.eye(4, dtype=dtype)[rng.integers(0, 4, 6)]
    for fn in ("cross_entropy_error", "mean_squared_error"):
        a, b = getattr(nbk, fn)(y, t), getattr(npk, fn)(y, t)
        assert isinstance(a, float) and abs(a - b) <= TOL[dtype] * abs(b)


@numba.njit
def _sumsq(w):
    return np.sum(w ** 2)


@numba.njit
def _explodes(w):
    if w[1, 1] > 100.0:
        raise ValueError("too big")
    return np.sum(w)


def test_numerical_gradient_of_a_jitted_function():
    x = np.random.default_rng(12).standard_normal((3, 4))
    before = x.copy()
    g = nbk.numerical_gradient(_sumsq, x, 1e-4)
    assert g.shape == x.shape and g.dtype == x.dtype
    assert np.allclose(g, 2 * x, rtol=0, atol=1e-8)
    assert x.tobytes() == before.tobytes()  # restored bit for bit
    assert _sumsq.signatures and nbk._numgrad_dispatch.signatures  # the jitted loop ran
    assert normwise(g, npk.numerical_gradient(_sumsq, x, 1e-4)) <= 1e-12
    gf = nbk.numerical_gradient(_sumsq, x, 1e-6, "forward")
    assert normwise(gf, npk.numerical_gradient(_sumsq, x, 1e-6, "forward")) <= 1e-12
    x32 = x.astype(np.float32)
    g32 = nbk.numerical_gradient(_sumsq, x32, 1e-2)
    assert g32.dtype == np.float32 and np.allclose(g32, 2 * x32, atol=1e-3)


def test_numerical_gradient_non_contiguous_and_fallback():
    base = np.random.default_rng(13).standard_normal((4, 6))
    for x in (base[:, ::2], base.T):
        keep = base.copy()
        g = nbk.numerical_gradient(_sumsq, x, 1e-4)
        assert g.shape == x.shape and np.allclose(g, 2 * x, atol=1e-8)
        assert base.tobytes() == keep.tobytes()
    x = base.copy()
    g = nbk.numerical_gradient(lambda w: float(np.sum(w ** 3)), x, 1e-4)  # plain Python f
    assert normwise(g, npk.numerical_gradient(lambda w: float(np.sum(w ** 3)), base.copy(), 1e-4)) <= 1e-12
    with pytest.raises(ValueError):
        nbk.numerical_gradient(_sumsq, x, 1e-4, "backward")


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.zeros((3, 3))
    x[1, 1] = 100.0 - 1e-5  # x + h trips the check
    before = x.tobytes()
    with pytest.raises(ValueError, match="too big"):
        nbk.numerical_gradient(_explodes, x, 1e-4)
    assert x.tobytes() == before
