"""Training from rows of nonzeros (CsrRows): the same results as from the dense inputs, on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad._backends import kernels
from pyfastgrad._backends import numpy as N
from pyfastgrad._sparse import SPARSE_DENSITY_MAX, CsrRows

from _helpers import BACKENDS, DTYPES, TOL, normwise

OPTS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
ADAPTIVE = ("adagrad", "rmsprop", "adam")
HYPER = {"sgd": [0.1, 0, 0], "momentum": [0.05, 0.9, 0], "nesterov": [0.05, 0.9, 0], "adagrad": [0.05, 0, 0],
         "rmsprop": [0.005, 0.9, 0], "adam": [0.002, 0.9, 0.999],
         "adamw": [0.002, 0.9, 0.999, 1e-8, 0.1, 1, 0.5]}  # torch style, decoupled decay, clipping

HAS_CPP = "cpp" in BACKENDS
if HAS_CPP:
    from pyfastgrad._backends.cpp import _core


def sparse_data(rng, n, d, density, dtype, empty_rows=()):
    x = rng.standard_normal((n, d))
    x[rng.random((n, d)) >= density] = 0.0
    x[list(empty_rows)] = 0.0
    return x.astype(dtype)


def theta_for(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(1, len(sizes)):
        parts.append(rng.standard_normal(sizes[i - 1] * sizes[i]) * np.sqrt(2.0 / sizes[i - 1]))
        parts.append(0.1 * rng.standard_normal(sizes[i]))
    return np.concatenate(parts).astype(dtype)


def run_steps(backend, sizes, X, T, idx, opt, wd, dtype, act="relu", loss="softmax"):
    m = kernels(backend).Mlp(sizes, act, loss, dtype)
    theta = theta_for(sizes, dtype)
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    losses = m.train_steps(theta, X, T, idx, wd, opt, np.array(HYPER[opt], dtype=np.float64), s1, s2, 0)
    return theta, losses, s1, s2


# ---------------------------------------------------------------------------------------- CsrRows
@pytest.mark.parametrize("dtype", DTYPES)
def test_from_dense_round_trip(dtype):
    rng = np.random.default_rng(0)
    x = sparse_data(rng, 40, 23, 0.3, dtype, empty_rows=(0, 7, 39))
    x[5, 3] = np.nan  # NaN is a nonzero
    x[6, 4] = -0.0  # a zero
    keep = x.copy()
    c = CsrRows.from_dense(x)
    assert np.array_equal(x, keep, equal_nan=True)  # never mutated
    assert c.indptr.dtype == np.int64 and c.indptr.shape == (41,)
    assert c.indices.dtype == np.int32 and c.data.dtype == dtype
    assert c.shape == (40, 23) and c.n_rows == 40 and c.n_cols == 23
    assert c.nnz == np.count_nonzero(x) and c.density == pytest.approx(c.nnz / x.size)
    assert c.indptr[1] == 0 and c.indptr[8] == c.indptr[7] and c.indptr[-1] == c.indptr[-2]
    for r in range(40):  # columns ascending within each row
        seg = c.indices[c.indptr[r]:c.indptr[r + 1]]
        assert np.all(np.diff(seg) > 0)
    assert np.array_equal(c.to_dense(), x, equal_nan=True)
    rows = np.array([3, 0, 3, 39, -1])
    assert np.array_equal(c.rows_dense(rows), x[rows], equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_dense_layouts_and_edge_cases(dtype):
    rng = np.random.default_rng(1)
    x = sparse_data(rng, 30, 17, 0.4, dtype)
    for a in (np.asfortranarray(x), x[::2], x[:, ::3], x[::-1], x.T):
        c = CsrRows.from_dense(a)
        assert np.array_equal(c.to_dense(), a)
    z = CsrRows.from_dense(np.zeros((6, 5), dtype))
    assert z.nnz == 0 and z.density == 0.0 and np.array_equal(z.indptr, np.zeros(7))
    assert np.array_equal(z.to_dense(), np.zeros((6, 5)))
    e = CsrRows.from_dense(np.zeros((0, 5), dtype))
    assert e.shape == (0, 5) and e.nnz == 0 and e.to_dense().shape == (0, 5)
    d = CsrRows.from_dense(np.ones((3, 4), dtype))
    assert d.density == 1.0
    with pytest.raises(ValueError):
        CsrRows.from_dense(np.zeros(5))
    assert CsrRows.from_dense(x).astype(np.float32).data.dtype == np.float32
    assert "CsrRows(shape=(30, 17)" in repr(CsrRows.from_dense(x))


def test_dense_batches_matches_fancy_indexing():
    rng = np.random.default_rng(2)
    x = sparse_data(rng, 25, 9, 0.3, np.float64, empty_rows=(4,))
    t = rng.standard_normal((25, 3))
    c = CsrRows.from_dense(x)
    idx = rng.integers(-25, 25, size=(4, 6))
    xs, ts, ids = c.dense_batches(idx, t)
    assert ids.shape == idx.shape and ids.dtype == np.int64
    assert np.array_equal(xs[ids], x[idx]) and np.array_equal(ts[ids], t[idx])
    with pytest.raises(IndexError):
        c.dense_batches(np.array([[25]]), t)


# ----------------------------------------------------------------------- train_steps: CSR == dense
def _compare(backend, sizes, X, T, idx, opt, wd, dtype, act="relu", loss="softmax"):
    td, ld, s1d, s2d = run_steps(backend, sizes, X, T, idx, opt, wd, dtype, act, loss)
    ts, ls, s1s, s2s = run_steps(backend, sizes, CsrRows.from_dense(X), T, idx, opt, wd, dtype, act, loss)
    tol = TOL[dtype]
    if dtype == np.float32 and opt in ADAPTIVE:
        # g / sqrt(h) moves a parameter by ~lr whatever the size of g: a float32 gradient within rounding
        # of 0 can change sign with the order of the sums (dense cpp, numba and numpy differ as much).
        tol = 1e-3
    assert np.isfinite(ld).all()
    assert normwise(ts, td) <= tol
    assert normwise(ls, ld) <= tol
    if opt != "sgd":
        assert normwise(s1s, s1d) <= tol
    if opt == "adam":
        assert normwise(s2s, s2d) <= tol


@pytest.mark.parametrize("dtype, opt", [(np.float64, o) for o in OPTS] +
                         [(np.float32, o) for o in ("sgd", "nesterov", "rmsprop", "adam")])
@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("backend", BACKENDS)  # outermost: one backend's cases run together
def test_csr_equals_dense_on_mnist_rows(mnist, backend, dtype, opt, wd):
    (x, t), _ = mnist
    X = np.ascontiguousarray(x[:2000], dtype=dtype)
    T = np.eye(10, dtype=dtype)[t[:2000]]
    idx = np.random.default_rng(3).integers(0, 2000, size=(20, 100))  # the training shape: 784-100-10, B=100
    _compare(backend, [784, 100, 10], X, T, idx, opt, wd, dtype)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "nesterov", "adamw"])
def test_cpp_csr_steps_on_three_threads_equal_dense(mnist, opt):
    """Three bands of W_0's 784 rows (not a multiple of the optimizer's 16-row chunks): each thread's
    part of z0, its regrouped update and (without clipping) its chunked optimizer step, and its 33 or 34
    rows of the dense layers (their gradients added in thread order); adamw clips, which takes the
    whole-theta update; sgd folds -lr into the update of W_0. Equal to the dense steps and to the same
    steps on two threads."""
    (x, t), _ = mnist
    X = np.ascontiguousarray(x[:1000], dtype=np.float64)
    T = np.eye(10)[t[:1000]]
    idx = np.random.default_rng(5).integers(0, 1000, size=(8, 100))
    threads = _core.openmp_max_threads()
    try:
        _core.openmp_set_num_threads(3)
        three = run_steps("cpp", [784, 100, 10], CsrRows.from_dense(X), T, idx, opt, 0.01, np.float64)
        _core.openmp_set_num_threads(2)
        two = run_steps("cpp", [784, 100, 10], CsrRows.from_dense(X), T, idx, opt, 0.01, np.float64)
    finally:
        _core.openmp_set_num_threads(threads)
    dense = run_steps("cpp", [784, 100, 10], X, T, idx, opt, 0.01, np.float64)
    for a, b, c in zip(three, two, dense):
        assert normwise(a, c) <= 1e-10 and normwise(b, c) <= 1e-10


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("opt", ["sgd", "momentum"])
def test_cpp_csr_steps_on_three_threads_stop_at_non_finite_loss(mnist, opt):
    """Diverging steps with the dense part split over three threads: every thread stops at the same
    step, before any update from it, as the dense steps do."""
    (x, t), _ = mnist
    X = np.ascontiguousarray(x[:1000], dtype=np.float64) * 50
    T = np.eye(10)[t[:1000]]
    idx = np.random.default_rng(6).integers(0, 1000, size=(80, 100))
    hyper = np.array([5e3, 0.9, 0])
    m = kernels("cpp").Mlp([784, 100, 10], "relu", "mse", np.float64)
    out = []
    threads = _core.openmp_max_threads()
    try:
        _core.openmp_set_num_threads(3)
        for data in (X, CsrRows.from_dense(X)):
            theta = theta_for([784, 100, 10], np.float64)
            s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
            out.append((theta, m.train_steps(theta, data, T, idx, 0.0, opt, hyper, s1, s2, 0)))
    finally:
        _core.openmp_set_num_threads(threads)
    (td, ld), (ts, ls) = out
    done = int(np.isfinite(ld).sum())
    assert done < len(ld) and np.isnan(ld[done:]).all()  # it diverged
    assert np.array_equal(np.isfinite(ls), np.isfinite(ld))
    assert np.isfinite(ts).all() and normwise(ts, td) <= 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, act, loss, density, batch", [
    ([37, 5, 4], "tanh", "softmax", 0.2, 7),        # one vector per row, small batch (no threads)
    ([61, 150, 9, 3], "sigmoid", "mse", 0.1, 40),   # more than one register tile, two hidden layers
    ([50, 33, 6], "relu", "hinge", 0.05, 64),       # masked tails, very sparse
    ([45, 8], "relu", "softmax", 0.3, 30),          # no hidden layer: the sparse layer is the output
    # enough work per step for the threaded kernel; tanh: with float32 ReLU a pre-activation within
    # rounding of 0 may switch with the order of the sums, and the runs part (any two backends may)
    ([300, 130, 10], "tanh", "softmax", 0.25, 80),
])
@pytest.mark.parametrize("opt, wd", [("sgd", 0.0), ("sgd", 0.01), ("adam", 0.01), ("nesterov", 0.0)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_csr_equals_dense_on_random_sparse_data(backend, dtype, sizes, act, loss, density, batch, opt, wd):
    rng = np.random.default_rng(4)
    n = 120
    X = sparse_data(rng, n, sizes[0], density, dtype, empty_rows=(0, 5, 17))
    T = (rng.standard_normal((n, sizes[-1])) if loss == "mse" else np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)])
    T = T.astype(dtype)
    idx = rng.integers(0, n, size=(20, batch))
    idx[0, :3] = 0  # an empty row, and a row twice in one batch
    _compare(backend, sizes, X, T, idx, opt, wd, dtype, act, loss)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_kernel_version(mnist, level, dtype):
    """The portable, AVX2 and AVX-512 versions of the sparse kernels (those the CPU has)."""
    (x, t), _ = mnist
    X = np.ascontiguousarray(x[:1000], dtype=dtype)
    T = np.eye(10, dtype=dtype)[t[:1000]]
    idx = np.random.default_rng(5).integers(0, 1000, size=(10, 100))
    used = _core._set_isa(level)
    try:
        assert used <= level
        for opt, wd in (("sgd", 0.0), ("sgd", 0.01), ("rmsprop", 0.01)):
            _compare("cpp", [784, 100, 10], X, T, idx, opt, wd, dtype)
            _compare("cpp", [784, 37, 10], X, T, idx, opt, wd, dtype)
    finally:
        _core._set_isa(-1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_stops_at_non_finite_loss_like_dense(backend, dtype):
    rng = np.random.default_rng(6)
    X = sparse_data(rng, 60, 40, 0.3, dtype) * 50
    T = np.eye(5, dtype=dtype)[rng.integers(0, 5, 60)]
    idx = rng.integers(0, 60, size=(30, 20))
    m = kernels(backend).Mlp([40, 64, 5], "relu", "mse", dtype)
    out = []
    for data in (X, CsrRows.from_dense(X)):
        theta = theta_for([40, 64, 5], dtype)
        losses = m.train_steps(theta, data, T, idx, 0.0, "sgd", np.array([5.0, 0, 0]), theta[:0], theta[:0], 0)
        out.append((theta, losses))
    (td, ld), (ts, ls) = out
    done = int(np.isfinite(ld).sum())
    assert done < len(ld) and np.isnan(ld[done:]).all()  # it diverged
    assert np.array_equal(np.isfinite(ls), np.isfinite(ld))
    assert np.isfinite(ts).all() and normwise(ts, td) <= 100 * TOL[dtype]


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_steps_and_all_zero_inputs(backend):
    X = np.zeros((10, 12))
    T = np.eye(3)[np.arange(10) % 3]
    _compare(backend, [12, 6, 3], X, T, np.arange(40).reshape(4, 10) % 10, "momentum", 0.01, np.float64)
    m = kernels(backend).Mlp([12, 6, 3], "relu", "softmax", np.float64)
    theta = theta_for([12, 6, 3], np.float64)
    losses = m.train_steps(theta, CsrRows.from_dense(X), T, np.empty((0, 5), np.int64), 0.0, "sgd",
                           np.array([0.1, 0, 0]), theta[:0], theta[:0], 0)
    assert losses.shape == (0,)


# ------------------------------------------------------------------------------ bad CSR input (cpp)
def _bad(c: CsrRows, **kw) -> CsrRows:
    out = CsrRows(c.indptr.copy(), c.indices.copy(), c.data.copy(), c.n_cols)
    for k, v in kw.items():
        setattr(out, k, v)
    return out


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_bad_csr_input_raises_before_touching_anything(opt):
    from pyfastgrad._backends import cpp as C
    rng = np.random.default_rng(7)
    X = sparse_data(rng, 30, 20, 0.3, np.float64, empty_rows=(2,))
    T = np.eye(4)[rng.integers(0, 4, 30)]
    good = CsrRows.from_dense(X)
    m = C.Mlp([20, 16, 4], "relu", "softmax", np.float64)
    idx = np.arange(30).reshape(3, 10)
    r = int(np.argmax(np.diff(good.indptr) >= 2))  # a row with at least two nonzeros
    p = good.indptr[r]

    def with_index(pos, value):
        ind = good.indices.copy()
        ind[pos] = value
        return _bad(good, indices=ind)

    def with_ptr(pos, value):
        ptr = good.indptr.copy()
        ptr[pos] = value
        return _bad(good, indptr=ptr)

    cases = [
        with_index(p, 20),                      # column index == n_cols
        with_index(p, -1),                      # negative column index
        with_index(p + 1, good.indices[p]),     # repeated column within a row
        with_index(slice(p, p + 2), good.indices[p:p + 2][::-1].copy()),  # columns not ascending
        with_ptr(5, good.indptr[4] - 1),        # indptr decreases
        with_ptr(-1, good.nnz + 1),             # indptr ends past the nonzeros
        with_ptr(0, -1),                        # indptr starts below 0
    ]
    for bad in cases:
        theta = theta_for([20, 16, 4], np.float64)
        keep = theta.copy()
        s1, s2 = np.ones_like(theta), np.ones_like(theta)
        with pytest.raises(ValueError):
            m.train_steps(theta, bad, T, idx, 0.0, opt, np.array(HYPER[opt]), s1, s2, 0)
        assert np.array_equal(theta, keep) and (s1 == 1).all() and (s2 == 1).all()
    theta = theta_for([20, 16, 4], np.float64)
    keep = theta.copy()
    with pytest.raises(ValueError, match="out of range"):
        m.train_steps(theta, good, T, np.array([[0, 30]]), 0.0, "sgd", np.array([0.1, 0, 0]), theta, theta, 0)
    with pytest.raises(ValueError, match="columns"):  # a CsrRows of another width
        m.train_steps(theta, _bad(good, n_cols=21), T, idx, 0.0, "sgd", np.array([0.1, 0, 0]), theta, theta, 0)
    with pytest.raises(ValueError):
        m.train_steps(theta, _bad(good, data=good.data[:-1]), T, idx, 0.0, "sgd", np.array([0.1, 0, 0]),
                      theta, theta, 0)
    with pytest.raises(ValueError):  # T must have a row per CSR row
        m.train_steps(theta, good, T[:-1], idx, 0.0, "sgd", np.array([0.1, 0, 0]), theta, theta, 0)
    with pytest.raises(TypeError):  # data of another dtype is never cast
        m.train_steps(theta, good.astype(np.float32), T, idx, 0.0, "sgd", np.array([0.1, 0, 0]), theta, theta, 0)
    assert np.array_equal(theta, keep)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
def test_only_the_rows_used_are_checked():
    """A malformed row that no batch names is never read (validation is O(nnz of the batches))."""
    rng = np.random.default_rng(8)
    X = sparse_data(rng, 10, 8, 0.5, np.float64)
    X[9] = 1.0
    T = np.eye(2)[rng.integers(0, 2, 10)]
    c = CsrRows.from_dense(X)
    ind = c.indices.copy()
    ind[c.indptr[9]] = 99
    bad = _bad(c, indices=ind)
    _, ld, _, _ = run_steps("cpp", [8, 4, 2], X, T, np.arange(9).reshape(3, 3), "sgd", 0.0, np.float64)
    _, ls, _, _ = run_steps("cpp", [8, 4, 2], bad, T, np.arange(9).reshape(3, 3), "sgd", 0.0, np.float64)
    assert normwise(ls, ld) <= 1e-12


# ---------------------------------------------------------------------------------------------- fit
@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
def test_fit_uses_csr_on_mnist_and_matches_numpy(mnist, monkeypatch):
    (x, t), _ = mnist
    xs, ts = x[:3000], t[:3000]
    seen = []
    histories = {}
    for backend in ("numpy", "cpp"):
        net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=np.float64, backend=backend)
        mlp = net._mlp()
        orig = mlp.train_steps

        def spy(theta, X, *args, orig=orig, backend=backend):
            seen.append((backend, type(X).__name__))
            return orig(theta, X, *args)

        monkeypatch.setattr(mlp, "train_steps", spy)
        histories[backend] = (pfg.fit(net, xs, ts, optimizer="sgd", lr=0.1, epochs=2, batch_size=100,
                                      iters_per_epoch=15, progress=False, seed=1), net.theta.copy())
    assert ("cpp", "CsrRows") in seen and ("numpy", "ndarray") in seen
    (hn, thn), (hc, thc) = histories["numpy"], histories["cpp"]
    assert len(hc.loss) == len(hn.loss) == 30
    assert np.max(np.abs(np.array(hc.loss) - np.array(hn.loss))) <= 1e-9
    assert normwise(thc, thn) <= 1e-9
    assert hc.train_acc == pytest.approx(hn.train_acc, abs=1e-9)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
def test_fit_keeps_dense_inputs_dense(monkeypatch):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((200, 12))  # no zeros
    t = rng.integers(0, 3, 200)
    net = pfg.TwoLayerNet(12, 8, 3, seed=0, backend="cpp")
    mlp = net._mlp()
    orig = mlp.train_steps
    seen = []
    monkeypatch.setattr(mlp, "train_steps", lambda theta, X, *a: (seen.append(type(X)), orig(theta, X, *a))[1])
    pfg.fit(net, x, t, epochs=1, batch_size=20, progress=False)
    assert seen and all(s is np.ndarray for s in seen)
    assert 0 < SPARSE_DENSITY_MAX < 1


def test_numpy_kernel_docstring_mentions_csr():
    assert "CsrRows" in N.__doc__


# ------------------------------------------------------------- loss_grad on mostly-zero dense input
def _loss_grad(m, theta, x, t, wd, **kw):
    g = np.full_like(theta, np.nan)
    return m.loss_grad(theta, x, t, wd, g, **kw), g


def _ref_loss_grad(sizes, act, loss, dtype, theta, x, t, wd):
    return _loss_grad(N.Mlp(sizes, act, loss, dtype), theta, x, t, wd)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_loss_grad_sparse_path_on_mnist(mnist, level, dtype, wd):
    """cpp's loss_grad packs mostly-zero x into CSR (auto or forced) and agrees with the reference
    and with its own dense (gemm) path, in every kernel version the CPU has."""
    (x, t), _ = mnist
    xb = np.ascontiguousarray(x[:100], dtype=dtype)
    tb = np.eye(10, dtype=dtype)[t[:100]]
    keep = xb.copy()
    used = _core._set_isa(level)
    try:
        assert used <= level
        for sizes, act, loss in (([784, 100, 10], "relu", "softmax"), ([784, 37, 20, 10], "sigmoid", "mse"),
                                 ([784, 10], "relu", "hinge")):
            theta = theta_for(sizes, dtype)
            lr, gr = _ref_loss_grad(sizes, act, loss, dtype, theta, xb, tb, wd)
            m = kernels("cpp").Mlp(sizes, act, loss, dtype)
            for mode in (None, True, False):
                lc, gc = _loss_grad(m, theta, xb, tb, wd, sparse=mode)
                assert abs(lc - lr) <= TOL[dtype] * abs(lr), (sizes, mode)
                assert normwise(gc, gr) <= TOL[dtype], (sizes, mode)
        assert np.array_equal(xb, keep)
    finally:
        _core._set_isa(-1)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.9])
@pytest.mark.parametrize("shape", [(1, 33, 5, 3), (7, 40, 17, 4), (130, 257, 64, 10)])
def test_loss_grad_sparse_path_random(dtype, density, shape):
    n, d, h, c = shape
    rng = np.random.default_rng(int(density * 100) + n)
    x = sparse_data(rng, n, d, density, dtype, empty_rows=(0,))
    t = np.eye(c, dtype=dtype)[rng.integers(0, c, n)]
    sizes = [d, h, c]
    theta = theta_for(sizes, dtype)
    lr, gr = _ref_loss_grad(sizes, "tanh", "softmax", dtype, theta, x, t, 0.02)
    m = kernels("cpp").Mlp(sizes, "tanh", "softmax", dtype)
    for mode in (None, True, False):
        lc, gc = _loss_grad(m, theta, x, t, 0.02, sparse=mode)
        assert abs(lc - lr) <= TOL[dtype] * abs(lr) and normwise(gc, gr) <= TOL[dtype], mode


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_grad_sparse_path_keeps_ieee_answers(dtype):
    """Skipping zeros must not hide 0 * inf: a non-finite W1, input or loss gives what the dense path
    (and the reference) gives."""
    rng = np.random.default_rng(3)
    sizes = [64, 16, 4]
    x = sparse_data(rng, 20, 64, 0.2, dtype)
    t = np.eye(4, dtype=dtype)[rng.integers(0, 4, 20)]
    m = kernels("cpp").Mlp(sizes, "relu", "softmax", dtype)
    cases = []
    theta = theta_for(sizes, dtype)
    theta[5] = np.inf  # W1[0, 5]: x[:, 0] has zeros, so every logit of those rows is NaN
    cases.append((theta, x))
    theta2 = theta_for(sizes, dtype)
    x2 = x.copy()
    x2[3, 7] = np.nan
    cases.append((theta2, x2))
    cases.append((theta2, x * dtype(1e30)))  # overflow in the loss
    for th, xx in cases:
        lr, gr = _ref_loss_grad(sizes, "relu", "softmax", dtype, th, xx, t, 0.0)
        for mode in (None, True):
            lc, gc = _loss_grad(m, th, xx, t, 0.0, sparse=mode)
            assert np.isfinite(lc) == np.isfinite(lr)
            assert np.array_equal(np.isfinite(gc), np.isfinite(gr)), mode


# ------------------------------------------------------------------------- fast dense -> CSR
def _numpy_csr(x):
    mask = x != 0
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
    cols = np.broadcast_to(np.arange(x.shape[1], dtype=np.int32), x.shape)
    return indptr, cols[mask], x[mask]


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("level", [0, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (50, 33), (700, 800)])  # the last one runs threaded
def test_dense_to_csr_equals_numpy_bit_for_bit(level, dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = sparse_data(rng, *shape, 0.2, dtype, empty_rows=(0,))
    x.flat[1::97] = np.nan
    x.flat[2::89] = -0.0
    x[-1] = rng.standard_normal(shape[1])  # a full row
    keep = x.copy()
    used = _core._set_isa(level)
    try:
        got = _core.dense_to_csr(x)
    finally:
        _core._set_isa(-1)
    assert used <= level
    want = _numpy_csr(x)
    assert [a.dtype for a in got] == [np.dtype(np.int64), np.dtype(np.int32), np.dtype(dtype)]
    for g, w in zip(got, want):
        assert np.array_equal(g, w, equal_nan=True)
    assert np.array_equal(x, keep, equal_nan=True)
    c = CsrRows.from_dense(x)  # takes this path for C-contiguous float input
    assert np.array_equal(c.data, want[2], equal_nan=True) and np.array_equal(c.indptr, want[0])


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (700, 800)])
def test_numba_dense_to_csr_equals_numpy_bit_for_bit(dtype, shape):
    nb = kernels("numba")
    rng = np.random.default_rng(sum(shape) + 1)
    x = sparse_data(rng, *shape, 0.2, dtype, empty_rows=(0,))
    x.flat[1::97] = np.nan
    x.flat[2::89] = -0.0
    x[-1] = rng.standard_normal(shape[1])
    keep = x.copy()
    got = nb.dense_to_csr(x)
    want = _numpy_csr(x)
    assert [a.dtype for a in got] == [np.dtype(np.int64), np.dtype(np.int32), np.dtype(dtype)]
    for g, w in zip(got, want):
        assert np.array_equal(g, w, equal_nan=True)
    assert np.array_equal(x, keep, equal_nan=True)
    strided = nb.dense_to_csr(x[:, ::2])  # not C-contiguous: numpy's path, same arrays
    for g, w in zip(strided, _numpy_csr(x[:, ::2])):
        assert np.array_equal(g, w, equal_nan=True)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
def test_dense_to_csr_rejects_what_it_cannot_read():
    with pytest.raises(TypeError):
        _core.dense_to_csr(np.zeros((3, 4), dtype=np.int32))
    with pytest.raises(TypeError):
        _core.dense_to_csr(np.zeros((4, 3))[:, ::2])  # not C-contiguous: never copied silently
    with pytest.raises(ValueError, match="x"):
        _core.dense_to_csr(np.zeros(4))
    # CsrRows.from_dense still takes anything 2-D (numpy path)
    x = np.arange(12.0).reshape(4, 3)[:, ::2]
    c = CsrRows.from_dense(x)
    assert np.array_equal(c.indptr, [0, 1, 3, 5, 7]) and np.array_equal(c.data, x[x != 0])


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
def test_loss_grad_auto_picks_by_density(mnist):
    """sparse=None takes the sparse path on MNIST (19% nonzero) and the gemms on dense data: the
    auto result is bit-identical to the forced path's (and the two paths differ in rounding)."""
    (x, t), _ = mnist
    sizes = [784, 64, 10]
    theta = theta_for(sizes, np.float64)
    m = kernels("cpp").Mlp(sizes, "relu", "softmax", np.float64)
    xs = np.ascontiguousarray(x[:100], dtype=np.float64)
    xd = xs + 0.5  # no zeros at all
    ts = np.eye(10)[t[:100]]
    for data, path in ((xs, True), (xd, False)):
        auto = _loss_grad(m, theta, data, ts, 0.0)[1]
        forced = _loss_grad(m, theta, data, ts, 0.0, sparse=path)[1]
        other = _loss_grad(m, theta, data, ts, 0.0, sparse=not path)[1]
        assert np.array_equal(auto, forced)
        assert not np.array_equal(auto, other) and normwise(auto, other) <= 1e-12


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite_every_kernel_version(level, dtype):
    """The finiteness scan (input checks, W0 before skipping zeros) finds one inf or NaN anywhere,
    in every vector width and tail length."""
    rng = np.random.default_rng(level)
    used = _core._set_isa(level)
    try:
        assert used <= level
        for size in (1, 7, 16, 31, 32, 33, 100, 1000):
            assert _core.all_finite(rng.random(size).astype(dtype))
            for bad in (np.nan, np.inf, -np.inf):
                for pos in {0, size // 2, size - 1}:
                    a = rng.random(size).astype(dtype)
                    a[pos] = bad
                    assert not _core.all_finite(a), (size, bad, pos)
        assert _core.all_finite(np.full((3, 4), np.finfo(dtype).max, dtype=dtype))
        assert _core.all_finite(np.zeros((0, 5), dtype=dtype))
    finally:
        _core._set_isa(-1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_steps_stop_at_non_finite_w1_like_dense(backend, dtype):
    """An inf in W1 where every input is 0: the dense step's loss is NaN (0 * inf), so training stops
    before the first update; the CSR path, which never multiplies those zeros, must stop too."""
    rng = np.random.default_rng(8)
    X = sparse_data(rng, 60, 40, 0.3, dtype)
    X[:, 5] = 0.0
    T = np.eye(5, dtype=dtype)[rng.integers(0, 5, 60)]
    idx = rng.integers(0, 60, size=(4, 20))
    m = kernels(backend).Mlp([40, 64, 5], "relu", "softmax", dtype)
    for data in (X, CsrRows.from_dense(X)):
        for opt in ("sgd", "adam"):
            theta = theta_for([40, 64, 5], dtype)
            theta[5 * 64 + 3] = np.inf  # W1[5, 3]
            keep = theta.copy()
            s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
            losses = m.train_steps(theta, data, T, idx, 0.0, opt, np.array(HYPER[opt]), s1, s2, 0)
            assert np.isnan(losses).all(), (type(data).__name__, opt)
            assert np.array_equal(theta, keep)


def test_from_dense_is_frozen_and_trusted_others_are_checked():
    """The kernels skip re-scanning the column indices only for a CSR that from_dense built (its arrays
    are read-only); any CsrRows made from arrays is checked at every call."""
    rng = np.random.default_rng(9)
    X = sparse_data(rng, 12, 10, 0.4, np.float64)
    c = CsrRows.from_dense(X)
    assert c.checked
    for a in (c.indptr, c.indices, c.data):
        assert not a.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        c.indices[0] = 99
    other = CsrRows(c.indptr, c.indices.copy(), c.data, c.n_cols)
    assert not other.checked
    if HAS_CPP:
        from pyfastgrad._backends import cpp as C
        m = C.Mlp([10, 4, 2], "relu", "softmax", np.float64)
        T = np.eye(2)[rng.integers(0, 2, 12)]
        other.indices[other.indptr[1]] = 10  # a column index == n_cols
        theta = theta_for([10, 4, 2], np.float64)
        with pytest.raises(ValueError, match="strictly increasing"):
            m.train_steps(theta, other, T, np.arange(12).reshape(3, 4), 0.0, "sgd", np.array([0.1, 0, 0]),
                          theta, theta, 0)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
def test_fit_train_eval_subset_from_the_csr():
    """On cpp with a CSR training set, fit's training accuracy on its subset reads the subset's nonzeros
    straight from the CSR (predict_rows): the same accuracy as the dense rows give."""
    rng = np.random.default_rng(11)
    X = sparse_data(rng, 900, 60, 0.15, np.float32)
    t = (X[:, :30].sum(axis=1) > X[:, 30:].sum(axis=1)).astype(int)
    net = pfg.TwoLayerNet(60, 20, 2, seed=2, dtype=np.float32, backend="cpp")
    h = pfg.fit(net, X, t, epochs=2, batch_size=30, seed=4, progress=False, train_eval=300)
    keep = np.sort(np.random.default_rng(4).choice(900, 300, replace=False))
    assert h.train_eval == 300 and h.train_acc[-1] == net.accuracy(X[keep], t[keep])
    from pyfastgrad._backends import cpp as C
    m = C.Mlp([60, 20, 2], "relu", "softmax", np.float32)
    c = CsrRows.from_dense(X)
    np.testing.assert_allclose(m.predict_rows(net.theta, c, keep), m.predict(net.theta, X[keep]), rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        m.predict_rows(net.theta, c, np.array([0, 900]))


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "adamw"])
@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_dense_train_steps_on_sparse_rows_equal_numpy(opt, wd, dtype, tol):
    """cpp's train_steps on a dense X that is mostly zeros runs each step's first layer on the batch's
    nonzeros (as loss_grad): the same steps as the numpy backend's, to rounding."""
    rng = np.random.default_rng(13)
    X = sparse_data(rng, 200, 48, 0.2, dtype)
    T = np.eye(5, dtype=dtype)[rng.integers(0, 5, 200)]
    idx = rng.integers(0, 200, (12, 20)).astype(np.int64)
    tc, lc, _, _ = run_steps("cpp", [48, 24, 5], X, T, idx, opt, wd, dtype)
    tn, ln, _, _ = run_steps("numpy", [48, 24, 5], X, T, idx, opt, wd, dtype)
    assert normwise(lc, ln) <= tol / 100 and normwise(tc, tn) <= tol


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite_large_array_on_the_team(dtype):
    """Arrays of >= 2^22 entries are scanned by the OpenMP team in slices: a bad value in any slice, at
    either end of one or across the boundary, is found; one thread gives the same verdicts."""
    n = (1 << 22) + 5
    a = np.zeros(n, dtype=dtype)
    a[::1000] = 1.5
    before = _core.openmp_max_threads()
    for threads in (3, 2, 1):  # (3: uneven slices, on 2 cores too)
        _core.openmp_set_num_threads(threads)
        try:
            assert _core.all_finite(a)
            for pos in (0, n // 2 - 1, n // 2, n // 2 + 1, n - 1):
                for bad in (np.nan, np.inf):
                    b = a.copy()
                    b[pos] = bad
                    assert not _core.all_finite(b), (threads, pos, bad)
        finally:
            _core.openmp_set_num_threads(before)


@pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n1", [50, 64, 100])
def test_row_products_from_padded_w0_copy(dtype, n1):
    """predict, loss, loss_grad and predict_rows of calls of >= 32 rows read W0 from a copy whose rows
    start on 64-byte lines (unless theta's already do): the same numbers as the reference, below and
    above the 32-row threshold, with theta itself at an odd offset, and W0's later changes are seen."""
    rng = np.random.default_rng(n1)
    sizes = [96, n1, 7]
    mk = kernels("cpp").Mlp(sizes, "relu", "softmax", dtype)
    ref = N.Mlp(sizes, "relu", "softmax", dtype)
    store = np.zeros(theta_for(sizes, dtype).size + 1, dtype=dtype)
    for shift in (0, 1):  # theta[0] 64-byte aligned or not
        theta = store[shift:shift + store.size - 1]
        theta[:] = theta_for(sizes, dtype, seed=shift)
        for n in (31, 32, 200):
            x = sparse_data(rng, n, sizes[0], 0.2, dtype)
            t = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], n)]
            for _ in range(2):  # the second time after a change of W0: no stale copy
                assert normwise(mk.predict(theta, x), ref.predict(theta, x)) <= TOL[dtype]
                assert abs(mk.loss(theta, x, t, 0.0) - ref.loss(theta, x, t, 0.0)) <= TOL[dtype] * 10
                g, gr = np.empty_like(theta), np.empty_like(theta)
                mk.loss_grad(theta, x, t, 0.0, g)
                ref.loss_grad(theta, x, t, 0.0, gr)
                assert normwise(g, gr) <= TOL[dtype]
                X = CsrRows.from_dense(x, "cpp")
                rows = np.arange(n - 1, -1, -1, dtype=np.int64)
                assert normwise(mk.predict_rows(theta, X, rows), ref.predict(theta, x[::-1])) <= TOL[dtype]
                theta[: sizes[0] * n1] *= dtype(0.5)
