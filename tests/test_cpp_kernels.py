"""The cpp backend (pyfastgrad._core via _backends/cpp.py) against the numpy spec (backends/numpy.py)."""
from __future__ import annotations

import threading
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

C = pytest.importorskip("pyfastgrad._backends.cpp", reason="C++ extension not built")
from pyfastgrad import _core, spec  # noqa: E402
from pyfastgrad._backends import numpy as N  # noqa: E402

from _helpers import DTYPES, TOL, nerr  # noqa: E402


def make_net(rng, sizes, loss, dtype, n, soft=False):
    """theta (He-scaled weights, small random biases), x (n, n0), dense targets t (n, nL)."""
    parts = []
    for i in range(1, len(sizes)):
        parts.append(rng.standard_normal(sizes[i - 1] * sizes[i]) * np.sqrt(2.0 / sizes[i - 1]))
        parts.append(0.1 * rng.standard_normal(sizes[i]))
    theta = np.concatenate(parts).astype(dtype)
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    c = sizes[-1]
    if loss == "mse":
        t = rng.standard_normal((n, c)).astype(dtype)
    elif soft and loss == "softmax":
        p = rng.random((n, c))
        t = (p / p.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        t = np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
    return theta, x, t


def compare_net(sizes, act, loss, dtype, wd, n, seed, soft=False):
    rng = np.random.default_rng(seed)
    mc, mn = C.Mlp(sizes, act, loss, dtype), N.Mlp(sizes, act, loss, dtype)
    assert mc.n_params == mn.n_params
    theta, x, t = make_net(rng, sizes, loss, dtype, n, soft)
    tol = TOL[dtype]

    y = mc.predict(theta, x)
    assert y.dtype == dtype and y.shape == (n, sizes[-1])
    assert nerr(y, mn.predict(theta, x)) <= tol

    lc, ln = mc.loss(theta, x, t, wd), mn.loss(theta, x, t, wd)
    assert isinstance(lc, float)
    assert abs(lc - ln) <= tol * max(abs(ln), 1e-30)

    gc, gn = np.full_like(theta, np.nan), np.empty_like(theta)
    lgc, lgn = mc.loss_grad(theta, x, t, wd, gc), mn.loss_grad(theta, x, t, wd, gn)
    assert abs(lgc - lgn) <= tol * max(abs(lgn), 1e-30)
    assert abs(lgc - lc) <= tol * max(abs(lc), 1e-30)
    assert nerr(gc, gn) <= tol


# ------------------------------------------------------------------------------------------ nets
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", spec.MLP_ACTIVATIONS)
@pytest.mark.parametrize("loss", spec.MLP_LOSSES)
@pytest.mark.parametrize("hidden", [[7], [9, 5], [6, 8, 4]])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_mlp_matches_numpy(dtype, act, loss, hidden, wd):
    seed = zlib.crc32(repr((np.dtype(dtype).name, act, loss, len(hidden), wd)).encode())  # stable across runs
    rng = np.random.default_rng(seed)
    for n in (1, int(rng.integers(2, 40))):
        compare_net([11] + hidden + [int(rng.integers(2, 7))], act, loss, dtype, wd, n, seed + n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_soft_targets(dtype):
    # dense (non one-hot) targets: -sum t * log_softmax / N, gradient (y - t) / N
    compare_net([5, 6, 4], "tanh", "softmax", dtype, 0.01, 13, 3, soft=True)


def test_no_hidden_layer():
    for loss in spec.MLP_LOSSES:
        compare_net([6, 3], "relu", loss, np.float64, 0.01, 8, 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_batch_chunks(dtype):
    # more rows than predict/loss process per chunk (1024), and a grown loss_grad buffer after
    compare_net([10, 16, 5], "sigmoid", "softmax", dtype, 0.01, 2500, 5)
    compare_net([10, 16, 5], "relu", "mse", dtype, 0.0, 1500, 6)


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(0, 3), widths=st.lists(st.integers(1, 12), min_size=5, max_size=5),
       n=st.integers(1, 20), act=st.sampled_from(spec.MLP_ACTIVATIONS), loss=st.sampled_from(spec.MLP_LOSSES),
       wd=st.sampled_from([0.0, 0.01]), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31))
def test_mlp_random_shapes(depth, widths, n, act, loss, wd, dtype, seed):
    sizes = widths[:depth + 1] + [max(widths[4], 2)]
    compare_net(sizes, act, loss, dtype, wd, n, seed)


def test_reuse_across_batch_sizes():
    # scratch buffers grow and are reused: results must not depend on earlier calls
    rng = np.random.default_rng(7)
    sizes = [8, 10, 6, 3]
    mc, mn = C.Mlp(sizes, "tanh", "hinge", np.float64), N.Mlp(sizes, "tanh", "hinge", np.float64)
    for n in (5, 40, 1, 17, 40, 2):
        theta, x, t = make_net(rng, sizes, "hinge", np.float64, n)
        gc, gn = np.empty_like(theta), np.empty_like(theta)
        assert abs(mc.loss_grad(theta, x, t, 0.01, gc) - mn.loss_grad(theta, x, t, 0.01, gn)) <= 1e-10
        assert nerr(gc, gn) <= 1e-10
        assert nerr(mc.predict(theta, x), mn.predict(theta, x)) <= 1e-10


def test_properties():
    m = _core.Mlp64([4, 5, 3], "relu", "softmax")
    assert m.n_params == 4 * 5 + 5 + 5 * 3 + 3 == N.n_params([4, 5, 3])
    assert m.sizes == [4, 5, 3]
    assert (m.activation, m.loss_name) == ("relu", "softmax")
    assert _core.Mlp32((4, 3), "tanh", "mse").n_params == 15
    assert C.Mlp([4, 3], "relu", "mse", np.float32).n_params == 15


# ------------------------------------------------------------------------------------ training
def run_train(mod, sizes, act, loss, dtype, opt, hyper, wd, steps, batch, seed, lr_theta=None):
    rng = np.random.default_rng(seed)
    theta, X, T = make_net(rng, sizes, loss, dtype, 60)
    idx = rng.integers(0, 60, (steps, batch)).astype(np.int64)
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    m = mod.Mlp(sizes, act, loss, dtype)
    with np.errstate(all="ignore"):
        losses = m.train_steps(theta, X, T, idx, wd, opt, np.asarray(hyper, dtype=np.float64), s1, s2, 3)
    return theta, s1, s2, losses


HYPER = {"sgd": [0.1, 0, 0], "momentum": [0.05, 0.9, 0], "nesterov": [0.05, 0.9, 0],
         "adagrad": [0.05, 0, 0], "rmsprop": [0.01, 0.99, 0], "adam": [0.01, 0.9, 0.999],
         "adamw": [0.01, 0.9, 0.999, 1e-8, 0.1, 1, 0.5],  # torch style, decoupled decay, clipping
         "adamax": [0.01, 0.9, 0.999, 1e-8, 0.05, 1, 0.0]}  # L2 decay in the gradient


@pytest.mark.parametrize("opt", spec.OPTIMIZER_NAMES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
def test_train_steps_matches_numpy(opt, dtype, tol):
    for act, loss, wd, batch in (("relu", "softmax", 0.0, 8), ("tanh", "mse", 0.01, 1), ("sigmoid", "hinge", 0.01, 5)):
        args = ([7, 9, 4], act, loss, dtype, opt, HYPER[opt], wd, 20, batch, 11)
        tc, s1c, s2c, lc = run_train(C, *args)
        tn, s1n, s2n, ln = run_train(N, *args)
        assert lc.dtype == np.float64 and lc.shape == (20,)
        assert np.all(np.isfinite(lc))
        assert nerr(lc, ln) <= tol
        assert nerr(tc, tn) <= tol
        assert nerr(s1c, s1n) <= tol and nerr(s2c, s2n) <= tol


@pytest.mark.parametrize("dtype,lr", [(np.float64, 1e200), (np.float32, 1e30)])
def test_train_steps_stops_at_non_finite_loss(dtype, lr):
    args = ([5, 6, 3], "relu", "mse", dtype, "sgd", [lr, 0, 0], 0.0, 10, 4, 2)
    tc, _, _, lc = run_train(C, *args)
    tn, _, _, ln = run_train(N, *args)
    done = int(np.sum(np.isfinite(ln)))
    assert 1 <= done < 10
    assert np.all(np.isfinite(lc[:done])) and np.all(np.isnan(lc[done:]))
    assert nerr(lc[:done], ln[:done]) <= TOL[dtype]
    assert nerr(tc, tn) <= TOL[dtype]  # the failing step left theta alone


def test_train_steps_non_finite_from_the_start():
    m = C.Mlp([3, 2], "relu", "softmax", np.float64)
    theta = np.full(m.n_params, np.nan)
    X, T = np.ones((4, 3)), np.eye(2)[[0, 1, 0, 1]]
    idx = np.zeros((3, 2), dtype=np.int64)
    s = np.zeros(m.n_params)
    losses = m.train_steps(theta, X, T, idx, 0.0, "momentum", np.array([0.1, 0.9, 0]), s, s.copy(), 0)
    assert np.all(np.isnan(losses)) and np.all(np.isnan(theta)) and np.all(s == 0)
    assert m._impl.train_steps(theta, X, T, idx, 0.0, "sgd", np.zeros(3), s, s, 0, np.empty(3)) == 0


def test_train_steps_count_and_zero_steps():
    m = C.Mlp([3, 2], "relu", "softmax", np.float32)
    rng = np.random.default_rng(0)
    theta, X, T = make_net(rng, [3, 2], "softmax", np.float32, 5)
    e = np.empty(0, np.float32)
    out = np.empty(4)
    idx = rng.integers(0, 5, (4, 2))
    assert m._impl.train_steps(theta, X, T, idx, 0.0, "sgd", np.array([0.1, 0, 0]), e, e, 0, out) == 4
    assert np.all(np.isfinite(out))
    losses = m.train_steps(theta, X, T, np.empty((0, 2), np.int64), 0.0, "sgd", np.array([0.1, 0, 0]), e, e, 0)
    assert losses.shape == (0,)


# ---------------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("opt", spec.OPTIMIZER_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_opt_update_matches_numpy(opt, dtype):
    rng = np.random.default_rng(1)
    n = 1003  # not a multiple of any vector width
    a = [rng.standard_normal(n).astype(dtype), np.abs(rng.standard_normal(n)).astype(dtype),
         np.abs(rng.standard_normal(n)).astype(dtype)]
    b = [v.copy() for v in a]
    hyper = np.array(HYPER[opt], dtype=np.float64)
    for step in range(1, 8):
        g = rng.standard_normal(n).astype(dtype)
        assert C.opt_update(opt, a[0], g, a[1], a[2], hyper, step) is None
        N.opt_update(opt, b[0], g, b[1], b[2], hyper, step)
    tol = 1e-14 if dtype == np.float64 else 1e-6  # same operations in the same order
    for u, v in zip(a, b):
        assert nerr(u, v) <= tol


def test_opt_update_sgd_needs_no_state():
    theta, g = np.ones(5), np.full(5, 2.0)
    C.opt_update("sgd", theta, g, np.empty(0), np.empty(0), np.array([0.5, 0, 0]), 1)
    np.testing.assert_array_equal(theta, np.zeros(5))


def test_opt_update_errors():
    th, g, s = np.zeros(4), np.zeros(4), np.zeros(4)
    h = np.array([0.1, 0.9, 0.999])
    with pytest.raises(ValueError, match="optimizer"):
        C.opt_update("lbfgs", th, g, s, s, h, 1)
    with pytest.raises(ValueError, match="grad"):
        C.opt_update("sgd", th, np.zeros(3), s, s, h, 1)
    with pytest.raises(ValueError, match="state1"):
        C.opt_update("momentum", th, g, np.zeros(3), s, h, 1)
    with pytest.raises(ValueError, match="state2"):
        C.opt_update("adam", th, g, s, np.zeros(0), h, 1)
    with pytest.raises(ValueError, match="hyper"):
        C.opt_update("sgd", th, g, s, s, np.array([0.1, 0.9]), 1)
    with pytest.raises(ValueError, match="step"):
        C.opt_update("adam", th, g, s, s.copy(), h, 0)
    with pytest.raises(TypeError):
        C.opt_update("sgd", th, g.astype(np.float32), s, s, h, 1)  # mixed dtypes: no overload
    with pytest.raises(TypeError):
        C.opt_update("sgd", th, g, s, s, h.astype(np.float32), 1)
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        C.opt_update("sgd", ro, g, s, s, h, 1)


# ------------------------------------------------------------------------- element-wise kernels
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_match_numpy(dtype):
    rng = np.random.default_rng(2)
    tol = TOL[dtype]
    for n, c in ((1, 1), (1, 5), (17, 10), (64, 3)):
        z = (3 * rng.standard_normal((n, c))).astype(dtype)
        y = C.softmax(z)
        assert y.dtype == dtype and nerr(y, N.softmax(z)) <= tol
        t = np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
        ce, cn = C.cross_entropy_error(y, t), N.cross_entropy_error(y, t)
        assert abs(ce - cn) <= tol * abs(cn)
        p = rng.random((n, c)).astype(dtype)  # dense targets: every term counts
        assert abs(C.cross_entropy_error(y, p) - N.cross_entropy_error(y, p)) <= tol * abs(N.cross_entropy_error(y, p))
        me, mn = C.mean_squared_error(z, p), N.mean_squared_error(z, p)
        assert abs(me - mn) <= tol * abs(mn)
    big = np.array([[1000.0, 0.0, -1000.0]], dtype=dtype)  # overflow guard
    assert nerr(C.softmax(big), N.softmax(big)) == 0.0
    inplace = z.copy()
    _core.softmax(inplace, inplace)
    assert nerr(inplace, N.softmax(z)) <= tol


def test_elementwise_errors():
    a, b = np.zeros((3, 4)), np.zeros((3, 5))
    with pytest.raises(ValueError):
        _core.softmax(a, b)
    with pytest.raises(ValueError):
        _core.cross_entropy_error(a, b)
    with pytest.raises(ValueError):
        _core.mean_squared_error(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError):
        _core.softmax(np.zeros(4), np.zeros(4))
    with pytest.raises(TypeError):
        _core.mean_squared_error(a, a.astype(np.float32))


# ------------------------------------------------------------------------------ checks, errors
def test_shape_errors_raise_value_error():
    m = C.Mlp([4, 5, 3], "relu", "softmax", np.float64)
    raw = m._impl
    rng = np.random.default_rng(0)
    theta, x, t = make_net(rng, [4, 5, 3], "softmax", np.float64, 6)
    g = np.zeros_like(theta)
    with pytest.raises(ValueError, match="theta"):
        raw.loss(theta[:-1].copy(), x, t, 0.0)
    with pytest.raises(ValueError, match="x"):
        raw.loss(theta, x[:, :3].copy(), t, 0.0)
    with pytest.raises(ValueError, match="t"):
        raw.loss(theta, x, t[:5].copy(), 0.0)
    with pytest.raises(ValueError, match="grad"):
        raw.loss_grad(theta, x, t, 0.0, g[:-1].copy())
    with pytest.raises(ValueError, match="out"):
        raw.predict(theta, x, np.zeros((6, 2)))
    with pytest.raises(ValueError):
        raw.loss(theta, x[:0], t[:0], 0.0)  # empty batch
    with pytest.raises(ValueError):
        raw.loss(theta, x.ravel(), t, 0.0)  # 1-D x

    X, T = x, t
    s = np.zeros_like(theta)
    hyper = np.array([0.1, 0.9, 0.999])
    keep = theta.copy()

    def ts(idx=None, losses=None, s1=s, s2=s, hyper=hyper, opt="adam", T=T):
        idx = np.zeros((2, 3), np.int64) if idx is None else idx
        losses = np.empty(idx.shape[0]) if losses is None else losses
        return raw.train_steps(theta, X, T, idx, 0.0, opt, hyper, s1, s2, 0, losses)

    for bad in (-1, 6):
        idx = np.zeros((3, 2), np.int64)
        idx[2, 1] = bad  # checked before the first step
        with pytest.raises(ValueError, match="idx"):
            ts(idx=idx)
        np.testing.assert_array_equal(theta, keep)
    with pytest.raises(ValueError, match="losses"):
        ts(losses=np.empty(3))
    with pytest.raises(ValueError, match="state1"):
        ts(s1=np.zeros(3))
    with pytest.raises(ValueError, match="state2"):
        ts(s2=np.zeros(0))
    with pytest.raises(ValueError, match="hyper"):
        ts(hyper=np.zeros(2))
    with pytest.raises(ValueError, match="T"):
        ts(T=T[:4].copy())
    with pytest.raises(ValueError, match="optimizer"):
        ts(opt="sgdd")
    with pytest.raises(ValueError, match="idx"):
        ts(idx=np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        ts(idx=np.zeros((2, 0), np.int64))
    np.testing.assert_array_equal(theta, keep)

    for args in (([4], "relu", "softmax"), ([4, 0, 3], "relu", "softmax"), ([4, 3], "gelu", "softmax"),
                 ([4, 3], "relu", "nll")):
        with pytest.raises(ValueError):
            _core.Mlp64(*args)


def test_type_errors():
    m64, m32 = C.Mlp([4, 3], "relu", "mse", np.float64), C.Mlp([4, 3], "relu", "mse", np.float32)
    theta64, x64, t64 = np.zeros(m64.n_params), np.zeros((2, 4)), np.zeros((2, 3))
    g = np.zeros(m64.n_params)
    with pytest.raises(TypeError):
        m64.loss_grad(theta64.astype(np.float32), x64, t64, 0.0, g)
    with pytest.raises(TypeError):
        m64._impl.loss(theta64, x64.astype(np.float16), t64, 0.0)
    with pytest.raises(TypeError):  # only a float64 net reads float32 x (the tutorials' images)
        m32._impl.loss(theta64.astype(np.float32), x64, t64.astype(np.float32), 0.0)
    assert m64._impl.loss(theta64, x64.astype(np.float32), t64, 0.0) == m64._impl.loss(theta64, x64, t64, 0.0)
    with pytest.raises(TypeError):
        m32.predict(theta64, x64)
    with pytest.raises(TypeError):
        m64.loss(theta64, np.zeros((4, 2)).T, t64, 0.0)  # not C-contiguous: never copied
    with pytest.raises(TypeError):
        m64.loss(theta64, x64.astype(">f8"), t64, 0.0)  # byte-swapped
    with pytest.raises(TypeError):
        m64.loss(theta64, x64.tolist(), t64, 0.0)  # no conversion from lists
    with pytest.raises(TypeError):
        m64.train_steps(theta64, x64, t64, np.zeros((1, 2), np.int32), 0.0, "sgd",
                        np.zeros(3), theta64, theta64, 0)
    ro = np.zeros(m64.n_params)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        m64.loss_grad(theta64, x64, t64, 0.0, ro)
    with pytest.raises(TypeError):
        C.Mlp([4, 3], "relu", "mse", np.int32)


def test_concurrent_calls_on_one_net():
    # the GIL is released inside; the per-object lock keeps the shared scratch consistent
    rng = np.random.default_rng(3)
    sizes = [30, 40, 5]
    m = C.Mlp(sizes, "tanh", "softmax", np.float64)
    theta, x, t = make_net(rng, sizes, "softmax", np.float64, 200)
    g0 = np.empty_like(theta)
    l0 = m.loss_grad(theta, x, t, 0.01, g0)
    bad = []

    def work(k):
        xs, ts = (x, t) if k % 2 else (x[:50].copy(), t[:50].copy())
        ref = m.loss(theta, xs, ts, 0.01)
        for _ in range(30):
            g = np.empty_like(theta)
            if k % 2:
                if m.loss_grad(theta, x, t, 0.01, g) != l0 or not np.array_equal(g, g0):
                    bad.append(k)
            elif m.loss(theta, xs, ts, 0.01) != ref:
                bad.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not bad


def test_concurrent_sparse_calls_on_separate_nets_keep_blas_threads():
    """The sparse first-layer paths run BLAS single-threaded inside their own threads; concurrent calls
    on different nets must give the single-call answers and leave OpenBLAS's thread count as it was."""
    rng = np.random.default_rng(4)
    sizes = [300, 64, 10]
    before = _core.blas_num_threads()
    x = rng.standard_normal((200, 300))
    x[rng.random(x.shape) < 0.8] = 0.0
    t = np.eye(10)[rng.integers(0, 10, 200)]
    theta = make_net(rng, sizes, "softmax", np.float64, 1)[0]
    ref = np.empty_like(theta)
    lref = C.Mlp(sizes, "relu", "softmax", np.float64).loss_grad(theta, x, t, 0.01, ref, sparse=True)
    bad = []

    def work(k):
        m = C.Mlp(sizes, "relu", "softmax", np.float64)
        for _ in range(40):
            g = np.empty_like(theta)
            lk = m.loss_grad(theta, x, t, 0.01, g, sparse=True)
            if abs(lk - lref) > 1e-12 * abs(lref) or np.max(np.abs(g - ref)) > 1e-12 * np.max(np.abs(ref)):
                bad.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not bad
    assert _core.blas_num_threads() == before


# -------------------------------------------------------------------------- module interface
def test_module_interface():
    public = {k for k in vars(N) if not k.startswith("_") and k not in ("annotations", "np", "ref", "Callable",
                                                                         "Sequence", "Tuple", "layer_slices",
                                                                         "n_params", "spec", "Optional")}
    assert public <= set(vars(C)), public - set(vars(C))
    assert C.NAME == "cpp"
    info = C.blas_info()
    assert set(info) == {"config", "threads", "openmp_threads"}
    assert "OpenBLAS" in info["config"] and info["threads"] >= 1 and info["openmp_threads"] >= 1


needs_numgrad = pytest.mark.skipif(not hasattr(_core, "mlp_numerical_gradient"),
                                   reason="_core.mlp_numerical_gradient not built yet")


@needs_numgrad
@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_numerical_gradient_matches_numpy(dtype):
    rng = np.random.default_rng(4)
    sizes = [4, 5, 3]
    mc, mn = C.Mlp(sizes, "tanh", "softmax", dtype), N.Mlp(sizes, "tanh", "softmax", dtype)
    theta, x, t = make_net(rng, sizes, "softmax", dtype, 6)
    h = 1e-4 if dtype == np.float64 else 1e-2
    gc, gn = np.empty_like(theta), np.empty_like(theta)
    mc.numerical_gradient(theta, x, t, 0.01, h, gc)
    mn.numerical_gradient(theta, x, t, 0.01, h, gn)
    assert nerr(gc, gn) <= (1e-7 if dtype == np.float64 else 2e-2)  # differences of rounded losses


@pytest.mark.skipif(not hasattr(_core, "numerical_gradient_callback"),
                    reason="_core.numerical_gradient_callback not built yet")
@pytest.mark.parametrize("scheme", ["central", "forward"])
def test_numerical_gradient_callback(scheme):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4))
    x0 = x.copy()

    def f(v):
        return float(np.sum(v ** 3) + np.sum(np.sin(v)))

    gc = C.numerical_gradient(f, x, 1e-4, scheme)
    np.testing.assert_array_equal(x, x0)
    gn = N.numerical_gradient(f, x, 1e-4, scheme)
    assert gc.shape == x.shape and nerr(gc, gn) <= 1e-9
    with pytest.raises(ValueError):
        C.numerical_gradient(f, x, 1e-4, "backward")
