"""numba's first layer on the nonzeros (issue 17): ``Mlp.train_steps`` from ``CsrRows`` or from mostly-zero
dense batches, ``Mlp.loss_grad`` on mostly-zero x, and the fused SGD update of W_0, against the numpy
reference; the IEEE answers that skipping zeros must not hide; ``fit`` handing numba rows of nonzeros."""
from __future__ import annotations

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad._backends import kernels
from pyfastgrad._sparse import CsrRows
from pyfastgrad.optimizers import make_optimizer

from _helpers import BACKENDS, DTYPES, TOL, normwise

pytestmark = pytest.mark.skipif("numba" not in BACKENDS, reason="numba not installed")

# (opt, hyper, weight decay): plain SGD takes the fused W_0 update; the others the gradient buffer
CASES = [("sgd", [0.1, 0, 0], 0.0), ("sgd", [0.1, 0, 0], 0.01), ("sgd", [0.1, 0, 0, 1e-8, 0, 0, 0.05], 0.0),
         ("momentum", [0.05, 0.9, 0], 0.0), ("adam", [0.002, 0.9, 0.999], 0.01),
         ("adamw", [0.002, 0.9, 0.999, 1e-8, 0.1, 1, 0.5], 0.0)]


def _theta(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(1, len(sizes)):
        parts.append(rng.standard_normal(sizes[i - 1] * sizes[i]) * np.sqrt(2.0 / sizes[i - 1]))
        parts.append(0.1 * rng.standard_normal(sizes[i]))
    return np.concatenate(parts).astype(dtype)


def _steps(backend, sizes, X, T, idx, opt, hyper, wd, dtype, theta=None, lrs=None, act="relu", loss="softmax"):
    m = kernels(backend).Mlp(sizes, act, loss, dtype)
    theta = _theta(sizes, dtype) if theta is None else theta.copy()
    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
    losses = m.train_steps(theta, X, T, idx, wd, opt, np.array(hyper, dtype=np.float64), s1, s2, 0, lrs)
    return theta, losses


@pytest.fixture(scope="module")
def rows(mnist):
    (x, t), _ = mnist
    return x[:1500], t[:1500]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt, hyper, wd", CASES)
@pytest.mark.parametrize("sizes", [[784, 100, 10], [784, 10], [784, 24, 17, 10]])
def test_train_steps_on_nonzeros_equal_numpy(rows, sizes, opt, hyper, wd, dtype):
    x, t = rows
    X = np.ascontiguousarray(x, dtype=dtype)
    T = np.eye(10, dtype=dtype)[t]
    idx = np.random.default_rng(2).integers(-1500, 1500, size=(12, 100))  # negative rows count from the end
    lrs = np.linspace(0.1, 0.02, 12) if opt == "sgd" and wd == 0 else None
    tn, ln = _steps("numpy", sizes, X, T, idx, opt, hyper, wd, dtype, lrs=lrs)
    tol = 1e-3 if dtype == np.float32 and opt.startswith("adam") else TOL[dtype]  # as test_sparse.py
    for data in (X, CsrRows.from_dense(X)):  # a dense mostly-zero batch takes the same path
        tb, lb = _steps("numba", sizes, data, T, idx, opt, hyper, wd, dtype, lrs=lrs)
        assert np.isfinite(lb).all()
        assert normwise(lb, ln) <= tol and normwise(tb, tn) <= tol, type(data).__name__


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_loss_grad_on_mostly_zero_x_equals_numpy(rows, dtype, wd):
    x, t = rows
    xb = np.ascontiguousarray(x[:100], dtype=dtype)
    tb = np.eye(10, dtype=dtype)[t[:100]]
    keep = xb.copy()
    for sizes, act, loss in (([784, 100, 10], "relu", "softmax"), ([784, 37, 20, 10], "sigmoid", "mse"),
                             ([784, 10], "relu", "hinge")):
        theta = _theta(sizes, dtype)
        out = []
        for b in ("numpy", "numba"):
            g = np.full_like(theta, np.nan)
            out.append((kernels(b).Mlp(sizes, act, loss, dtype).loss_grad(theta, xb, tb, wd, g), g))
        (ln, gn), (lb, gb) = out
        assert abs(lb - ln) <= TOL[dtype] * abs(ln) and normwise(gb, gn) <= TOL[dtype], sizes
    assert np.array_equal(xb, keep)


@pytest.mark.parametrize("dtype", DTYPES)
def test_skipped_zeros_keep_ieee_answers(dtype):
    """An inf in W_0 that only zeros multiply, a NaN input, an overflowing loss: loss_grad gives what the
    reference gives (finite or not), and train_steps (dense and CSR input) stops where the reference does."""
    rng = np.random.default_rng(3)
    sizes = [64, 16, 4]
    x = rng.standard_normal((20, 64))
    x[rng.random((20, 64)) >= 0.2] = 0.0
    x[:, 0] = 0.0
    x = x.astype(dtype)
    t = np.eye(4, dtype=dtype)[rng.integers(0, 4, 20)]
    bad_w = _theta(sizes, dtype)
    bad_w[5] = np.inf  # W_0[0, 5]: column 0 of x is all zeros
    nan_x = x.copy()
    nan_x[3, 7] = np.nan
    for theta, xx in ((bad_w, x), (_theta(sizes, dtype), nan_x), (_theta(sizes, dtype), x * dtype(1e30))):
        out = []
        for b in ("numpy", "numba"):
            g = np.zeros_like(theta)
            out.append((kernels(b).Mlp(sizes, "relu", "softmax", dtype).loss_grad(theta, xx, t, 0.0, g), g))
        (ln, gn), (lb, gb) = out
        assert np.isfinite(lb) == np.isfinite(ln)
        assert np.array_equal(np.isfinite(gb), np.isfinite(gn))
        idx = np.arange(40).reshape(4, 10) % 20
        tn, lsn = _steps("numpy", sizes, xx, t, idx, "sgd", [0.1, 0, 0], 0.0, dtype, theta=theta)
        for data in (xx, CsrRows.from_dense(xx)):
            tb, lsb = _steps("numba", sizes, data, t, idx, "sgd", [0.1, 0, 0], 0.0, dtype, theta=theta)
            assert np.array_equal(np.isfinite(lsb), np.isfinite(lsn))
            assert np.array_equal(tb, tn, equal_nan=True) or normwise(tb, tn) <= TOL[dtype]


def test_csr_rows_out_of_range_raise():
    X = np.zeros((5, 4))
    X[1, 2] = 1.0
    T = np.eye(2)[[0, 1, 0, 1, 0]]
    m = kernels("numba").Mlp([4, 3, 2], "relu", "softmax", np.float64)
    theta = _theta([4, 3, 2], np.float64)
    for bad in (5, -6):
        with pytest.raises(IndexError):
            m.train_steps(theta, CsrRows.from_dense(X), T, np.array([[0, bad]]), 0.0, "sgd",
                          np.array([0.1, 0, 0]), None, None, 0)
    with pytest.raises(IndexError):  # T shorter than the rows used
        m.train_steps(theta, CsrRows.from_dense(X), T[:2], np.array([[4]]), 0.0, "sgd", np.array([0.1, 0, 0]),
                      None, None, 0)
    with pytest.raises(ValueError, match="columns"):
        kernels("numba").Mlp([5, 3, 2], "relu", "softmax", np.float64).train_steps(
            _theta([5, 3, 2], np.float64), CsrRows.from_dense(X), T, np.array([[0]]), 0.0, "sgd",
            np.array([0.1, 0, 0]), None, None, 0)


def test_fit_hands_numba_rows_of_nonzeros_and_matches_numpy(rows, monkeypatch):
    x, t = rows
    seen, out = [], {}
    for backend in ("numpy", "numba"):
        net = pfg.TwoLayerNet(784, 50, 10, seed=0, dtype=np.float64, backend=backend)
        mlp = net._mlp()
        orig = mlp.train_steps

        def spy(theta, X, *args, orig=orig, backend=backend):
            seen.append((backend, type(X).__name__))
            return orig(theta, X, *args)

        monkeypatch.setattr(mlp, "train_steps", spy)
        out[backend] = (pfg.fit(net, x, t, optimizer="sgd", lr=0.1, epochs=2, batch_size=100, iters_per_epoch=8,
                                progress=False, seed=1), net.theta.copy())
    assert ("numba", "CsrRows") in seen and ("numpy", "ndarray") in seen
    (hn, thn), (hb, thb) = out["numpy"], out["numba"]
    assert len(hb.loss) == len(hn.loss) == 16
    assert np.max(np.abs(np.array(hb.loss) - np.array(hn.loss))) <= 1e-10
    assert normwise(thb, thn) <= 1e-10


def test_column_grouped_xt_dz_equals_dense_product():
    # dW_0 = x^T dz from the batch regrouped by column: columns with 0..9 nonzeros (the four-at-a-time
    # loop and every remainder), a row used twice, rows of X the batch skips
    from pyfastgrad._backends import numba as nbk
    rng = np.random.default_rng(3)
    n_rows, n0, n1 = 12, 10, 7
    X = np.zeros((n_rows, n0))
    for i in range(n0):  # column i: nonzero in i of the rows
        X[rng.permutation(n_rows)[:i], i] = rng.standard_normal(i)
    indptr = np.concatenate([[0], np.cumsum((X != 0).sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(X)[1].astype(np.int32)
    data = X[X != 0]
    rows = np.array([5, 0, 11, 5, 2, 7, 9, 1, 3], dtype=np.int64)
    dz = rng.standard_normal((rows.size, n1))
    nnz = int(sum(indptr[r + 1] - indptr[r] for r in rows))
    cptr, crow, cval = np.empty(n0 + 1, np.int64), np.empty(nnz, np.int32), np.empty(nnz)
    nbk._csc_of_rows(indptr, indices, data, rows, cptr, crow, cval)
    assert cptr[-1] == nnz and np.all(np.diff(cptr) == (X[rows] != 0).sum(axis=0))
    gW = np.full((n0, n1), np.nan)  # every entry written, untouched rows as 0
    nbk._csc_xt_dz(cptr, crow, cval, dz, gW)
    ref = X[rows].T @ dz
    assert np.all(gW[~(X[rows] != 0).any(axis=0)] == 0)
    assert normwise(gW, ref) <= 1e-14


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_thread_bands_give_one_thread_bits(rows, dtype, monkeypatch):
    """The first layer's two bands on two threads (x W_0, W_0's fused update, its gradient) give the bits of
    the same bands on one thread: train_steps from dense and CSR input, loss_grad, train_step."""
    import numba

    from pyfastgrad._backends import numba as nbk
    if numba.get_num_threads() < 2:
        pytest.skip("one numba thread")
    monkeypatch.setattr(nbk._FREE_CORES, "free", lambda want: want)  # a busy CI machine: bands on 2 threads
    x, t = rows
    X = np.ascontiguousarray(x, dtype=dtype)
    T = np.eye(10, dtype=dtype)[t]
    idx = np.random.default_rng(4).integers(0, 1500, size=(6, 100))
    sizes = [784, 100, 10]
    m = nbk.Mlp(sizes, "relu", "softmax", dtype)
    assert m._two_threads(100)
    out = {}
    for work in (0, 1 << 60):  # bands on two threads / on one
        monkeypatch.setattr(nbk, "_TWO_THREADS_WORK", work)
        res = []
        for opt, hyper, wd in CASES[:2] + CASES[4:5]:
            for data in (X, CsrRows.from_dense(X)):
                res += list(_steps("numba", sizes, data, T, idx, opt, hyper, wd, dtype))
            g = np.empty_like(_theta(sizes, dtype))
            res += [m.loss_grad(_theta(sizes, dtype), X[:100], T[:100], wd, g), g]
            net = pfg.TwoLayerNet(784, 100, 10, seed=1, dtype=dtype, backend="numba")
            o = make_optimizer(opt, lr=hyper[0])
            res += [net.train_step(X[:100], T[:100], o), net.theta.copy()]
        out[work] = res
    for a, b in zip(out[0], out[1 << 60]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("opt, kwargs", [("adam", {"lr": 0.01}), ("sgd", {"lr": 0.1})])
def test_numba_train_step_is_gradient_then_update_in_one_call(rows, opt, kwargs):
    """numba's net.train_step (one jitted call) takes the step loss_grad + optimizer.step take: the same bits
    for Adam (the same gradient, the same update), the same up to rounding for plain SGD (W_0 updated inside
    the backward)."""
    x, t = rows
    xb, tb = x[:100], t[:100]
    a = pfg.TwoLayerNet(784, 50, 10, seed=3, backend="numba")
    b = pfg.TwoLayerNet(784, 50, 10, seed=3, backend="numba")
    oa, ob = make_optimizer(opt, **kwargs), make_optimizer(opt, **kwargs)
    for _ in range(3):
        la = a.train_step(xb, tb, oa)
        lb = b._mlp().loss_grad(b.theta, *b._xt(xb, tb), b.weight_decay, b._grad)
        ob.step(b, b._grad)
        assert oa.iter == ob.iter
        if opt == "adam":
            assert la == lb and np.array_equal(a.theta, b.theta)
        else:
            assert abs(la - lb) <= 1e-12 * abs(lb) and normwise(a.theta, b.theta) <= 1e-13


def test_unchecked_csr_rows_are_checked_before_the_steps():
    """CsrRows built by hand (not from_dense): a row the steps read with column indices out of order, repeated
    or out of range, or an indptr that decreases, raises a ValueError naming it before anything changes; a
    well-formed one trains as from_dense's."""
    rng = np.random.default_rng(5)
    X = (rng.random((8, 12)) < 0.3) * rng.standard_normal((8, 12))
    X[:, 0] = 1.0
    T = np.eye(3)[rng.integers(0, 3, 8)]
    m = kernels("numba").Mlp([12, 5, 3], "relu", "softmax", np.float64)
    good = CsrRows.from_dense(X)
    idx = np.array([[0, 3, 5], [7, 1, 2]])

    def run(csr):
        theta = _theta([12, 5, 3], np.float64)
        return theta, m.train_steps(theta, csr, T, idx, 0.0, "sgd", np.array([0.1, 0, 0]), None, None, 0)

    ta, la = run(good)
    tb, lb = run(CsrRows(good.indptr, good.indices, good.data, 12))
    assert np.array_equal(ta, tb) and np.array_equal(la, lb)
    p0, p1 = good.indptr[3], good.indptr[4]
    for change, what in (("swap", "row 3"), ("repeat", "row 3"), ("range", "row 3"), ("indptr", "indptr")):
        ind, ptr = good.indices.copy(), good.indptr.copy()
        if change == "swap":
            ind[p0], ind[p0 + 1] = ind[p0 + 1], ind[p0]
        elif change == "repeat":
            ind[p0 + 1] = ind[p0]
        elif change == "range":
            ind[p1 - 1] = 12
        else:
            ptr[2] = ptr[3] + 1
        theta = _theta([12, 5, 3], np.float64)
        keep = theta.copy()
        with pytest.raises(ValueError, match=what):
            m.train_steps(theta, CsrRows(ptr, ind, good.data, 12), T, idx, 0.0, "sgd", np.array([0.1, 0, 0]),
                          None, None, 0)
        assert np.array_equal(theta, keep)
