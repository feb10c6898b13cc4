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
