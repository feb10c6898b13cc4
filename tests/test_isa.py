"""Every instruction-set clone of the C++ kernels (csrc/core/simd.hpp), forced one level at a time, gives the
numpy backend's results: optimizer updates, output layer and activations, the sparse first layer and its
scans, the numerical gradient's rank-1 rows."""
import numpy as np
import pytest

import pyfastgrad as pfg

cpp = pytest.importorskip("pyfastgrad._backends.cpp")
core = cpp._core
BEST = core._set_isa(-1)
LEVELS = [lv for lv in (0, 1, 2) if lv <= BEST]


@pytest.fixture
def isa(request):
    used = core._set_isa(request.param)
    assert used == request.param and core._isa() == used
    yield used
    core._set_isa(-1)


def _normwise(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _data(dtype, sparse):
    rng = np.random.default_rng(3)
    x = rng.random((64, 40)).astype(dtype)
    if sparse:
        x[x < 0.8] = 0
    return x, rng.integers(0, 5, 64)


@pytest.mark.parametrize("isa", LEVELS, indirect=True)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("sparse", [False, True])
def test_net_kernels_at_every_level(isa, activation, sparse):
    x, t = _data(np.float64, sparse)
    out = {}
    for backend in ("numpy", "cpp"):
        net = pfg.MultiLayerNet(40, [32, 16], 5, activation=activation, seed=2, backend=backend)
        loss, g = net.loss_and_gradient(x, t)
        out[backend] = (loss, g, net.predict(x), net.numerical_gradient(x[:8], t[:8]))
    a, b = out["cpp"], out["numpy"]
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    for k in b[1]:
        assert _normwise(a[1][k], b[1][k]) <= 1e-10
        assert _normwise(a[3][k], b[3][k]) <= 1e-8
    assert _normwise(a[2], b[2]) <= 1e-12


@pytest.mark.parametrize("isa", LEVELS, indirect=True)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adagrad", "rmsprop", "adam"])
def test_optimizer_updates_at_every_level(isa, dtype, tol, opt):
    rng = np.random.default_rng(5)
    theta0 = rng.standard_normal(1001).astype(dtype)  # odd length: the vector loops' tails too
    grads = [rng.standard_normal(1001).astype(dtype) for _ in range(4)]
    out = {}
    for backend in ("numpy", "cpp"):
        o = {"sgd": pfg.SGD, "momentum": pfg.Momentum, "adagrad": pfg.AdaGrad, "rmsprop": pfg.RMSprop,
             "adam": pfg.Adam}[opt](lr=0.01, backend=backend)
        params = {"w": theta0.copy()}
        for g in grads:
            o.update(params, {"w": g})
        out[backend] = params["w"]
    assert _normwise(out["cpp"], out["numpy"]) <= tol


@pytest.mark.parametrize("isa", LEVELS, indirect=True)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_fit_and_scans_at_every_level(isa, dtype):
    x, t = _data(dtype, True)
    nets = {}
    for backend in ("numpy", "cpp"):
        net = pfg.TwoLayerNet(40, 16, 5, seed=1, dtype=dtype, backend=backend)
        pfg.fit(net, x, t, epochs=2, batch_size=16, optimizer=pfg.SGD(lr=0.1), seed=0, progress=False)
        nets[backend] = net
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert _normwise(nets["cpp"].theta, nets["numpy"].theta) <= tol
    bad = x.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        nets["cpp"].gradient(bad, t)
    assert core.all_finite(x) and not core.all_finite(bad)


@pytest.mark.parametrize("isa", LEVELS, indirect=True)
@pytest.mark.parametrize("sizes", [[40, 5], [40, 7, 5], [37, 70, 5], [40, 130, 9, 5]])
@pytest.mark.parametrize("xdtype", [np.float64, np.float32])
def test_sparse_rows_first_layer_at_every_level(isa, sizes, xdtype):
    """predict/loss (and loss_grad on one thread) run the first layer on each row's nonzeros
    (csrc/mlp/rows.hpp); a float64 net reads float32 x as it is. Odd widths exercise the masked tails."""
    rng = np.random.default_rng(8)
    x = rng.random((50, sizes[0]))
    x[x < 0.8] = 0
    x[3] = 0  # a blank row
    x = x.astype(xdtype)
    t = rng.integers(0, sizes[-1], 50)
    out = {}
    for backend in ("numpy", "cpp"):
        net = pfg.Net(sizes, seed=4, backend=backend)
        loss, g = net.loss_and_gradient(x, t)
        out[backend] = (net.loss(x, t), loss, g, net.predict(x), net.accuracy(x, t))
    a, b = out["cpp"], out["numpy"]
    assert a[0] == pytest.approx(b[0], rel=1e-13)
    assert a[1] == pytest.approx(b[1], rel=1e-13)
    for k in b[2]:
        assert _normwise(a[2][k], b[2][k]) <= 1e-12
    assert _normwise(a[3], b[3]) <= 1e-13
    assert a[4] == b[4]


@pytest.mark.parametrize("xdtype", [np.float64, np.float32])
def test_sparse_rows_keep_ieee_answers(xdtype):
    """A weight of W1 that is Inf, met only by zero inputs, makes the dense product NaN (0 * Inf): the
    sparse-row paths must not skip it into a finite answer."""
    x = np.zeros((4, 40), xdtype)
    x[:, 5] = 1
    net = pfg.TwoLayerNet(40, 8, 3, seed=0, backend="cpp")
    ref = pfg.TwoLayerNet(40, 8, 3, seed=0, backend="numpy")
    for n in (net, ref):
        n.params["W1"][7, 2] = np.inf  # row 7: an input that is zero everywhere
    with np.errstate(all="ignore"):
        want = ref.predict(x.astype(np.float64))
    got = net.predict(x)
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    with np.errstate(all="ignore"):
        want_loss = ref.loss(x.astype(np.float64), [0, 1, 2, 0])
    assert np.isnan(want_loss) and np.isnan(net.loss(x, [0, 1, 2, 0]))


def test_float32_input_is_not_copied_to_float64():
    """A float64 net on cpp reads float32 batches in place: the kernels widen each value (no float64 copy
    of the batch per call), with results equal to those of the widened batch."""
    rng = np.random.default_rng(1)
    x = rng.random((30, 50)).astype(np.float32)
    x[x < 0.7] = 0
    t = rng.integers(0, 4, 30)
    net = pfg.TwoLayerNet(50, 20, 4, seed=3, backend="cpp")
    assert np.float32 in net._mlp().input_dtypes
    x64 = x.astype(np.float64)
    assert net.loss(x, t) == pytest.approx(net.loss(x64, t), rel=1e-14)
    np.testing.assert_allclose(net.predict(x), net.predict(x64), rtol=1e-13, atol=1e-15)
    g32, g64 = net.gradient(x, t), net.gradient(x64, t)
    for k in g64:
        assert _normwise(g32[k], g64[k]) <= 1e-13


@pytest.mark.parametrize("isa", LEVELS, indirect=True)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("n1", [1, 17, 100, 300])
def test_first_layer_product_at_every_level(isa, dtype, tol, n1):
    """A layer stack's first affine product (Sequential / MultiLayerNetExtend on cpp): over the rows'
    nonzeros when x is mostly zeros, by gemm otherwise; always x @ W, and NaN where 0 * Inf would be."""
    rng = np.random.default_rng(n1)
    W = rng.standard_normal((70, n1)).astype(dtype)
    for density in (0.15, 0.9):
        x = rng.random((40, 70))
        x[x > density] = 0
        x = x.astype(dtype)
        out = np.empty((40, n1), dtype)
        used = core.first_layer_product(x, W, out)
        assert used == (density < 0.4)
        assert _normwise(out, x.astype(np.float64) @ W.astype(np.float64)) <= tol
    x = rng.random((40, 70))
    x[x > 0.15] = 0
    x[:, 5] = 0
    x = x.astype(dtype)
    W[5, 0] = np.inf  # met only by zeros
    assert not core.first_layer_product(x, W, out)  # not finite: the gemm's IEEE answer
    assert np.isnan(out[:, 0]).all()


@pytest.mark.parametrize("isa", LEVELS, indirect=True)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("n1", [1, 17, 100, 300])
def test_first_layer_grad_and_matmul_at_every_level(isa, dtype, tol, n1):
    """A layer stack's first weight gradient x.T @ dout: over the rows' nonzeros when x is mostly zeros,
    by gemm otherwise, and NaN where a skipped 0 * Inf would be; matmul is op(a) @ op(b) for every op."""
    rng = np.random.default_rng(n1 + 1)
    D = rng.standard_normal((40, n1)).astype(dtype)
    ref = lambda a, b: a.astype(np.float64) @ b.astype(np.float64)  # noqa: E731
    for density in (0.15, 0.9):
        x = rng.random((40, 70))
        x[x > density] = 0
        x[3] = 0  # a blank row
        x = x.astype(dtype)
        out = np.full((70, n1), np.nan, dtype)
        assert core.first_layer_grad(x, D, out) == (density < 0.4)
        assert _normwise(out, ref(x.T, D)) <= tol
    D[3, 0] = np.inf  # met only by row 3's zeros
    assert not core.first_layer_grad(x, D, out)
    assert np.isnan(out[:, 0]).all()
    A, B = rng.standard_normal((40, 70)).astype(dtype), rng.standard_normal((70, n1)).astype(dtype)
    for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
        a, b = (np.ascontiguousarray(A.T) if ta else A), (np.ascontiguousarray(B.T) if tb else B)
        out = np.empty((40, n1), dtype)
        core.matmul(a, b, ta, tb, out)
        assert _normwise(out, ref(A, B)) <= tol
    with pytest.raises(ValueError, match="op\\(a\\) is 40 x 70"):
        core.matmul(A, B[:69], False, False, np.empty((40, n1), dtype))


@pytest.mark.parametrize("sizes", [[60, 7], [60, 50, 40, 30, 5]])
def test_sparse_rows_team_splits_rows_through_every_layer(sizes):
    """With a thread team (forced here by a zero work threshold) predict/loss/predict_rows split the
    rows and each thread runs every layer on its own: the results equal the numpy backend's."""
    from pyfastgrad._sparse import CsrRows
    rng = np.random.default_rng(12)
    x = rng.random((2500, sizes[0]))
    x[x < 0.8] = 0
    t = rng.integers(0, sizes[-1], 2500)
    old = core.get_call_work()
    try:
        core.set_call_work(old[0], 0.0, rows=0.0)
        a, b = (pfg.Net(sizes, seed=5, backend=be) for be in ("cpp", "numpy"))
        assert _normwise(a.predict(x), b.predict(x)) <= 1e-13
        assert a.loss(x, t) == pytest.approx(b.loss(x, t), rel=1e-13)
        assert a.accuracy(x, t) == b.accuracy(x, t)
        rows = np.arange(0, 2500, 3, dtype=np.int64)
        got = a._mlp().predict_rows(a.theta, CsrRows.from_dense(x), rows)
        assert _normwise(got, b.predict(x[rows])) <= 1e-13
    finally:
        core.set_call_work(*old)
