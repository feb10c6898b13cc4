"""Gradient checks (issue 12): no false alarms at ReLU kinks, injected bugs still fail, kinks
reported; the tolerance model; check_gradient for any function; blocks and executors."""
import concurrent.futures
import multiprocessing

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad._backends import kernels
from pyfastgrad._backends import numpy as npk
from pyfastgrad.layers import Affine, Relu, SoftmaxWithLoss

from _helpers import BACKENDS, FAST_BACKENDS, normwise


# ------------------------------------------------------------------ the README example
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_readme_example_passes_every_seed(backend, mnist_batch):
    """Seeds 0-19 at default settings; kink entries are found and judged one-sided."""
    x, t = mnist_batch
    seeds = range(20) if backend == "cpp" else (0, 3, 8)
    total_kinks = 0
    for seed in seeds:
        res = pfg.gradient_check(pfg.TwoLayerNet(784, 50, 10, seed=seed, backend=backend), x, t)
        assert res.passed, f"seed {seed}\n{res}"
        assert res.max_rel < 1e-7
        total_kinks += res.n_kinks
    assert total_kinks > 100  # the example does straddle kinks: they are handled, not absent


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_kinks_reported_and_the_rule_matters(backend, mnist_batch):
    x, t = mnist_batch
    net = pfg.TwoLayerNet(784, 50, 10, seed=0, backend=backend)
    res = pfg.gradient_check(net, x, t)
    # seed 0: W1[i, j] +-1e-4 moves z1[n, j] by 1e-4 * x[n, i]; 421 weights and 5 biases reach 0
    z = x @ net.params["W1"]
    hit = ((np.abs(z)[:, None, :] <= 1e-4 * x[:, :, None]) & (x[:, :, None] > 0)).any(axis=0)
    assert res.params["W1"].n_kinks == hit.sum() == 421
    assert res.params["b1"].n_kinks == (np.abs(z) <= 1e-4).any(axis=0).sum() == 5
    assert res.params["W2"].n_kinks == res.params["b2"].n_kinks == 0
    assert sorted(res.kinks["W1"].indices()) == sorted(map(tuple, np.argwhere(hit).tolist()))
    assert res.n_kinks == res.params["W1"].n_one_sided + res.params["b1"].n_one_sided
    assert "426 entries have a ReLU/hinge kink" in str(res)
    # the tutorials' plain central difference is what failed; leaving kinks out also passes
    central = pfg.gradient_check(net, x, t, kinks="central")
    assert not central.passed and central.worst[0].param in ("W1", "b1")
    assert central.worst[0].error > 1e-6
    excl = pfg.gradient_check(net, x, t, kinks="exclude")
    assert excl.passed and excl.n_excluded == 426


_FAST = FAST_BACKENDS or BACKENDS


class _Buggy(pfg.TwoLayerNet):
    """A TwoLayerNet whose backprop has an injected bug."""
    bug = None

    def gradient(self, x, t):
        return type(self).bug(super().gradient(x, t))


def _off_by_1e6(key):
    def bug(g):
        a = g[key]
        a.flat[np.argmax(np.abs(a))] *= 1 + 1e-6  # the largest entry, 1e-6 relative
        return g
    return bug


def _db_over_n_twice(g):
    g["b1"], g["b2"] = g["b1"] / 100, g["b2"] / 100
    return g


def _transposed_dw1(g):
    g["W1"] = np.ascontiguousarray(g["W1"].T).reshape(g["W1"].shape)
    return g


@pytest.mark.parametrize("backend, bug", [(_FAST[0], b) for b in
                                          ("W1", "b1", "W2", "b2", "db/N twice", "transposed dW1")]
                         + [(_FAST[-1], "W1")])
def test_injected_bugs_fail(backend, bug, mnist_batch):
    x, t = mnist_batch
    fn = {"db/N twice": _db_over_n_twice, "transposed dW1": _transposed_dw1}.get(bug) or _off_by_1e6(bug)
    cls = type("Bug", (_Buggy,), {"bug": staticmethod(fn)})
    for seed in (0,):  # seed 0 has 426 kink entries: the one-sided rule does not hide the bug
        res = pfg.gradient_check(cls(784, 50, 10, seed=seed, backend=backend), x, t)
        assert not res.passed, str(res)
        if bug in ("W1", "b1", "W2", "b2"):  # exactly the wrong entry, named in the report
            assert res.n_failed == 1 and res.worst[0].param == bug and res.worst[0].ratio > 1.5
            g = pfg.TwoLayerNet(784, 50, 10, seed=seed).gradient(x, t)[bug]
            assert res.worst[0].index == np.unravel_index(np.argmax(np.abs(g)), g.shape)
        else:
            assert res.n_failed > 10


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_transposed_square_dw_fails(backend, mnist_batch):
    x, t = mnist_batch

    class Bug(pfg.MultiLayerNet):
        def gradient(self, x, t):
            g = super().gradient(x, t)
            g["W2"] = g["W2"].T.copy()
            return g
    assert pfg.gradient_check(pfg.MultiLayerNet(784, [30, 30], 10, seed=1, backend=backend), x, t)
    res = pfg.gradient_check(Bug(784, [30, 30], 10, seed=1, backend=backend), x, t)
    assert not res.passed and res.worst[0].param == "W2"


# ------------------------------------------------------------------ the kink kernel
def _states(sizes, act, loss, theta, x, t):
    """Every ReLU pre-activation's and hinge margin's state (z > 0), per row."""
    out, a = [], x
    c = t.argmax(axis=1)
    for k, (ws, wshape, bs) in enumerate(npk.layer_slices(sizes)):
        z = a @ theta[ws].reshape(wshape) + theta[bs]
        if k < len(sizes) - 2:
            if act == "relu":
                out.append(z > 0)
            a = {"relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                 "tanh": np.tanh}[act](z)
        elif loss == "hinge":
            q = z - z[np.arange(len(z)), c][:, None] + 1
            q[np.arange(len(z)), c] = -1
            out.append(q > 0)
    return np.concatenate(out, axis=1) if out else np.zeros((len(x), 0), bool)


@pytest.mark.parametrize("act, loss", [("relu", "softmax"), ("relu", "hinge"), ("sigmoid", "hinge"),
                                       ("tanh", "softmax")])
def test_kink_counts_brute_force_and_backends(act, loss):
    """Rows whose states change anywhere along [theta, theta +- h e_p] (a fine walk), every backend."""
    sizes, h = [3, 4, 4, 3], 0.3
    rng = np.random.default_rng(1)
    net = pfg.Net(sizes, activation=act, loss=loss, weight_init=1.0, seed=2)
    x = rng.standard_normal((5, 3))
    t = np.eye(3)[rng.integers(0, 3, 5)]
    s0 = _states(sizes, act, loss, net.theta, x, t)
    expect = {1: np.zeros(net.n_params, int), -1: np.zeros(net.n_params, int)}
    for p in range(net.n_params):
        for sign in (1, -1):
            hit = np.zeros(5, bool)
            for f in np.linspace(0, 1, 201)[1:]:
                th = net.theta.copy()
                th[p] += sign * h * f
                hit |= (_states(sizes, act, loss, th, x, t) != s0).any(axis=1)
            expect[sign][p] = hit.sum()
    assert (expect[1].sum() > 0) == (act == "relu" or loss == "hinge")
    for backend in BACKENDS:
        kp, km = np.zeros(net.n_params, np.int64), np.zeros(net.n_params, np.int64)
        kernels(backend).Mlp(sizes, act, loss, np.float64).kink_counts(net.theta, x, t, h, kp, km)
        np.testing.assert_array_equal(kp, expect[1], err_msg=backend)
        np.testing.assert_array_equal(km, expect[-1], err_msg=backend)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kink_counts_backends_agree_deep(dtype, mnist_batch):
    x, t = mnist_batch
    x = x[:30].astype(dtype)
    T = np.eye(10, dtype=dtype)[t[:30]]
    for sizes, loss in (([784, 40, 30, 10], "hinge"), ([784, 30, 30, 10], "softmax")):
        net = pfg.Net(sizes, loss=loss, weight_init="he", seed=0, dtype=dtype)
        got = {}
        for backend in BACKENDS:
            kp, km = np.zeros(net.n_params, np.int64), np.zeros(net.n_params, np.int64)
            kernels(backend).Mlp(sizes, "relu", loss, dtype).kink_counts(net.theta, x, T, 3e-3, kp, km)
            got[backend] = (kp, km)
        assert got["numpy"][0].sum() + got["numpy"][1].sum() > 0
        for backend in BACKENDS:
            np.testing.assert_array_equal(got[backend][0], got["numpy"][0], err_msg=backend)
            np.testing.assert_array_equal(got[backend][1], got["numpy"][1], err_msg=backend)


def test_kink_counts_bad_shapes():
    if "cpp" not in BACKENDS:
        pytest.skip("no C++ extension")
    from pyfastgrad import _core
    th = np.zeros(15)
    with pytest.raises(ValueError, match="entries"):
        _core.mlp_kink_counts([3, 3], "relu", "softmax", th, np.zeros((2, 3)), np.zeros((2, 3)), 1e-4,
                              np.zeros(11, np.int64), np.zeros(12, np.int64))
    with pytest.raises(ValueError, match="minus"):
        _core.mlp_kink_counts([3, 3], "relu", "softmax", np.zeros(12), np.zeros((2, 3)), np.zeros((2, 3)),
                              1e-4, np.zeros(12, np.int64), np.zeros(11, np.int64))


# ------------------------------------------------------------------ tolerances
@pytest.mark.parametrize("backend", BACKENDS)
def test_small_net_random_inputs_pass(backend):
    """TwoLayerNet(4, 5, 3) on 3 samples: 30 random inputs, all pass (no relative-only threshold)."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        net = pfg.TwoLayerNet(4, 5, 3, seed=int(rng.integers(1 << 30)), backend=backend)
        res = pfg.gradient_check(net, rng.standard_normal((3, 4)), rng.integers(0, 3, 3))
        assert res.passed, str(res)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_nets_pass_at_default_tolerances(backend):
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((20, 12)), rng.integers(0, 4, 20)
    for act, loss in (("relu", "softmax"), ("tanh", "mse"), ("relu", "hinge")):
        net = pfg.Net([12, 16, 8, 4], activation=act, loss=loss, weight_init="auto", dtype=np.float32, seed=0,
                      backend=backend)
        res = pfg.gradient_check(net, x, t)
        assert res.passed and (res.atol, res.rtol) == (1e-5, 1e-3), str(res)


def test_tolerances_are_per_entry_and_reported(mnist_batch):
    x, t = mnist_batch
    net = pfg.TwoLayerNet(784, 50, 10, seed=1)
    res = pfg.gradient_check(net, x[:20], t[:20], n_worst=3)
    assert (res.atol, res.rtol) == (1e-9, 1e-7) == pfg.gradcheck.default_tolerances(np.float64)
    assert len(res.worst) == 3 and res.worst[0].ratio >= res.worst[1].ratio >= res.worst[2].ratio
    e = res.worst[0]
    g = net.gradient(x[:20], t[:20])[e.param][e.index]
    assert e.backprop == g and e.error == pytest.approx(abs(e.backprop - e.numerical))
    assert res.noise == pytest.approx(4 * np.finfo(float).eps * net.loss(x[:20], t[:20]) / 1e-4)
    assert e.tol == pytest.approx(1e-9 + 1e-7 * abs(e.numerical) + res.noise, rel=1e-12)
    assert f"{e.param}[{','.join(map(str, e.index))}]" in str(res)
    # a tolerance below the measured error fails exactly the entries above it
    tight = pfg.gradient_check(net, x[:20], t[:20], atol=0.0, rtol=0.0)
    assert not tight.passed and "FAIL" in str(tight)
    assert "passed=False" in repr(tight)
    with pytest.raises(ValueError, match="atol"):
        pfg.gradient_check(net, x[:20], t[:20], atol=-1)
    with pytest.raises(ValueError, match="kinks"):
        pfg.gradient_check(net, x[:20], t[:20], kinks="ignore")


def test_float32_default_step():
    x = np.array([3.0, 4.0], dtype=np.float32)
    f = lambda w: w[0] ** 2 + w[1] ** 2  # noqa: E731
    g = pfg.numerical_gradient(f, x)
    np.testing.assert_allclose(g, [6, 8], rtol=1e-4)  # the tutorials' h = 1e-4 gives [5.989, 8.001]
    assert abs(pfg.numerical_gradient(f, x, h=1e-4)[0] - 6) > 1e-3
    assert pfg.gradient.default_step(x) == 2.0 ** -6  # cbrt(eps32) * 4, a power of two
    assert pfg.gradient.default_step(np.ones(3)) == 1e-4  # float64 keeps the tutorials' step
    assert x.tolist() == [3.0, 4.0]


def test_generic_net_duck_typed():
    class Tutorial:  # the book's own net class: dicts from gradient / numerical_gradient
        def __init__(self):
            self.net = pfg.TwoLayerNet(4, 5, 3, activation="sigmoid", seed=0, backend="numpy")

        def gradient(self, x, t):
            return self.net.gradient(x, t)

        def numerical_gradient(self, x, t):
            return self.net.numerical_gradient(x, t)
    rng = np.random.default_rng(0)
    res = pfg.gradient_check(Tutorial(), rng.standard_normal((3, 4)), [0, 1, 2])
    assert res.passed and "kinks not detected" in str(res)
    with pytest.raises(TypeError, match="gradient"):
        pfg.gradient_check(object(), np.ones((1, 4)), [0])


# ------------------------------------------------------------------ agreement of net.numerical_gradient
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_net_numerical_gradient_agreement_float32(backend):
    """float32: the fast kernels equal the float64 loop over the same float32-stored steps to 1e-6
    (the float32 reference loop is off by ~eps32*|loss|/h itself)."""
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((10, 8)).astype(np.float32), rng.integers(0, 4, 10)
    net = pfg.Net([8, 6, 4], weight_init="auto", dtype=np.float32, seed=0, backend=backend)
    g = np.concatenate([v.ravel() for v in net.numerical_gradient(x, t).values()]).astype(np.float64)
    m = npk.Mlp([8, 6, 4], "relu", "softmax", np.float64)
    th = net.theta.astype(np.float64)
    X, T = x.astype(np.float64), np.eye(4)[t]
    ref = np.empty_like(th)
    for p in range(th.size):
        v = net.theta[p]
        th[p] = np.float32(v + np.float32(1e-4))
        fp = m.loss(th, X, T, 0.0)
        th[p] = np.float32(v - np.float32(1e-4))
        fm = m.loss(th, X, T, 0.0)
        th[p] = v
        ref[p] = (fp - fm) / 2e-4
    assert normwise(g, ref) < 1e-6


# ------------------------------------------------------------------ any function
def _quartic(w):
    return float(np.sum(w ** 4) + np.prod(np.cos(w)))


def _quartic_grad(w):
    p = np.prod(np.cos(w))
    return 4 * w ** 3 - p * np.tan(w)


def test_check_gradient_user_function():
    x = [0.3, -1.2, 0.7, 2.0]  # an array-like
    assert pfg.check_gradient(_quartic, _quartic_grad, x)
    wrong = lambda w: _quartic_grad(w) * np.array([1, 1, 1 + 1e-6, 1])  # noqa: E731
    res = pfg.check_gradient(_quartic, wrong, x)
    assert not res.passed and res.worst[0].index == (2,)
    for method in ("richardson", "complex"):
        assert pfg.check_gradient(lambda w: np.sum(w ** 4) + np.prod(np.cos(w)), _quartic_grad, x,
                                  method=method).passed
    cs = pfg.check_gradient(lambda w: np.sum(w ** 4) + np.prod(np.cos(w)), _quartic_grad, x, method="complex",
                            atol=0, rtol=1e-13)
    assert cs.passed and cs.max_rel < 1e-14  # exact to rounding
    assert not pfg.check_gradient(lambda w: np.sum(w ** 4) + np.prod(np.cos(w)), wrong, x,
                                  method="complex").passed


def test_check_gradient_random_directions():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(400)
    res = pfg.check_gradient(_quartic, _quartic_grad, x, mode="random", n_directions=5)
    assert res.passed and res.params["direction"].size == 5
    bad = lambda w: _quartic_grad(w) + 1e-3 * (np.arange(w.size) == 17)  # noqa: E731
    assert not pfg.check_gradient(_quartic, bad, x, mode="random", n_directions=5)
    f32 = x.astype(np.float32)
    assert pfg.check_gradient(lambda w: float(np.sum(w.astype(np.float64) ** 2)), lambda w: 2.0 * w, f32,
                              mode="random").passed


def test_check_gradient_layers_net():
    """A net built from pyfastgrad.layers, its params dict checked in place."""
    rng = np.random.default_rng(4)
    params = {"W1": rng.standard_normal((6, 5)) * 0.5, "b1": rng.standard_normal(5) * 0.1,
              "W2": rng.standard_normal((5, 3)) * 0.5, "b2": np.zeros(3)}
    layers = [Affine(params["W1"], params["b1"]), Relu(), Affine(params["W2"], params["b2"])]
    last = SoftmaxWithLoss()
    x, t = rng.standard_normal((4, 6)), np.eye(3)[[0, 2, 1, 0]]

    def loss(_):
        y = x
        for layer in layers:
            y = layer.forward(y)
        return last.forward(y, t)

    def grads(_):
        loss(None)
        d = last.backward(1)
        for layer in reversed(layers):
            d = layer.backward(d)
        return {"W1": layers[0].dW, "b1": layers[0].db, "W2": layers[2].dW, "b2": layers[2].db}
    before = {k: v.copy() for k, v in params.items()}
    res = pfg.check_gradient(loss, grads, params)
    assert res.passed and set(res.params) == set(params), str(res)
    assert pfg.check_gradient(loss, grads, params, mode="random").passed
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])

    def wrong(_):
        g = grads(None)
        g["b2"] = g["b2"] / len(x)
        return g
    assert not pfg.check_gradient(loss, wrong, params)


def test_check_gradient_bad_input():
    x = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="scalar"):
        pfg.check_gradient(lambda w: w * 2, lambda w: 2 * w, x)
    with pytest.raises(ValueError, match="nan"):
        pfg.check_gradient(lambda w: np.nan, lambda w: w, x)
    with pytest.raises(ValueError, match="inf"):
        pfg.check_gradient(lambda w: 1.0 / (w[0] - 1.0) ** 2 if w[0] != 1.0 else np.inf, lambda w: w, x)
    with pytest.raises(ValueError, match="perturbed"):  # finite at x, inf next to it
        pfg.check_gradient(lambda w: 0.0 if w[1] == 2.0 else np.inf, lambda w: np.zeros(2), x)
    with pytest.raises(TypeError, match="int64"):
        pfg.check_gradient(np.sum, lambda w: np.ones(2), [1, 2])
    with pytest.raises(TypeError, match="object"):
        pfg.check_gradient(np.sum, lambda w: np.ones(2), np.array([1.0, "a"], dtype=object))
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(2,\)"):
        pfg.check_gradient(np.sum, lambda w: np.ones(3), x)
    with pytest.raises(ValueError, match="NaN"):
        pfg.check_gradient(np.sum, lambda w: np.ones(2), [1.0, np.nan])
    with pytest.raises(TypeError, match="callable"):
        pfg.check_gradient(np.sum, None, x)
    with pytest.raises(ValueError, match="mode"):
        pfg.check_gradient(np.sum, lambda w: np.ones(2), x, mode="fast")
    with pytest.raises(ValueError, match="method"):
        pfg.check_gradient(np.sum, lambda w: np.ones(2), x, method="backward")
    with pytest.raises(ValueError, match="random"):
        pfg.check_gradient(np.sum, lambda w: np.ones(2), x, mode="random", vectorized=True)
    with pytest.raises(TypeError, match="complex"):
        pfg.check_gradient(lambda w: float(np.sum(w.real)), lambda w: np.ones(2), x, method="complex")


@pytest.mark.parametrize("mode", ["full", "random"])
def test_f_raising_restores_x_exactly(mode):
    x = np.array([0.1, 0.2, 0.3])
    bits = x.view(np.int64).copy()
    n = [0]

    def f(w):
        n[0] += 1
        if n[0] == 4:  # mid-check, with an entry perturbed
            raise RuntimeError("inside f")
        return float(np.sum(w ** 2))
    with pytest.raises(RuntimeError, match="inside f"):
        pfg.check_gradient(f, lambda w: 2 * w, x, mode=mode)
    np.testing.assert_array_equal(x.view(np.int64), bits)


# ------------------------------------------------------------------ blocks and executors
def _batch_f(X):
    """f for a batch of points (m, 3, 4) -> (m,)."""
    return np.sum(np.sin(X) * X ** 2, axis=(1, 2))


def _point_f(x):
    return float(np.sum(np.sin(x) * x ** 2))


def test_vectorized_equals_loop():
    x = np.random.default_rng(5).standard_normal((3, 4))
    x0 = x.copy()
    g = pfg.numerical_gradient(_point_f, x, backend="numpy")
    for chunk in (None, 5):
        gv = pfg.numerical_gradient(_batch_f, x, vectorized=True, chunk_size=chunk)
        np.testing.assert_allclose(gv, g, rtol=1e-9, atol=1e-12)
    gf = pfg.numerical_gradient(_batch_f, x, vectorized=True, scheme="forward", richardson=True)
    np.testing.assert_allclose(gf, np.sin(x) * 2 * x + x ** 2 * np.cos(x), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(x, x0)
    with pytest.raises(ValueError, match="vectorized"):
        pfg.numerical_gradient(_point_f, x, vectorized=True)  # returns one value for a whole batch
    grad = lambda w: np.sin(w) * 2 * w + w ** 2 * np.cos(w)  # noqa: E731
    assert pfg.check_gradient(_point_f, grad, x).passed
    assert pfg.check_gradient(_batch_f, grad, x, vectorized=True).passed
    assert not pfg.check_gradient(_batch_f, lambda w: grad(w) * (1 + 1e-6), x, vectorized=True).passed


def test_executors_equal_serial():
    x = np.random.default_rng(6).standard_normal((3, 4))
    g = pfg.numerical_gradient(_point_f, x, backend="numpy")
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        np.testing.assert_array_equal(pfg.numerical_gradient(_point_f, x, executor=ex, chunk_size=5), g)
    # spawn: forking a process that runs OpenMP/BLAS (or JAX) threads can deadlock the child
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        np.testing.assert_array_equal(pfg.numerical_gradient(_point_f, x, executor=ex), g)
        np.testing.assert_allclose(pfg.numerical_gradient(_batch_f, x, executor=ex, vectorized=True), g,
                                   rtol=1e-9, atol=1e-12)
    with pytest.raises(TypeError, match="Executor"):
        pfg.numerical_gradient(_point_f, x, executor=object())
    with pytest.raises(ValueError, match="chunk_size"):
        pfg.numerical_gradient(_point_f, x, vectorized=True, chunk_size=0)


def test_dask_local_cluster():
    distributed = pytest.importorskip("distributed")
    x = np.random.default_rng(7).standard_normal((3, 4))
    g = pfg.numerical_gradient(_point_f, x, backend="numpy")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=40) as cluster, \
            distributed.Client(cluster, timeout=60) as client:
        ex = client.get_executor()
        np.testing.assert_array_equal(pfg.numerical_gradient(_point_f, x, executor=ex, chunk_size=4), g)
        res = pfg.check_gradient(_point_f, lambda w: np.sin(w) * 2 * w + w ** 2 * np.cos(w), x, executor=ex)
        assert res.passed
