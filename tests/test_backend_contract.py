"""The backend contract, one suite: every backend present x float64/float32 against the numpy reference.

What each backend's kernels must meet, through the public API: softmax and the losses, every activation
and loss of a net (loss and gradient), predict/accuracy, numerical gradients of a function and of a net,
every optimizer (one step and five), train_step and a short fit, and the same exception types on bad
input. float64 agrees with numpy to <= 1e-10 normwise; float32 to <= 1e-4 (``TOL``).
"""
import numpy as np
import pytest

import pyfastgrad as pfg

# the registry's names (pyfastgrad.spec once the registry lands): the suite follows a new entry by itself
from pyfastgrad.spec import MLP_ACTIVATIONS as ACTIVATIONS
from pyfastgrad.spec import MLP_LOSSES as LOSSES
from pyfastgrad.spec import OPTIMIZER_NAMES as OPTIMIZERS

from _helpers import TOL, normwise

_AVAILABLE = pfg.available_backends()
BACKEND = [pytest.param(b, marks=pytest.mark.skipif(b not in _AVAILABLE, reason=f"{b} backend unavailable: "
                                                    f"{pfg.backends().get(b)}"))
           for b in ("numpy", "numba", "cpp")]
DTYPE = [pytest.param(np.float64, id="float64"), pytest.param(np.float32, id="float32")]

pytestmark = [pytest.mark.parametrize("dtype", DTYPE), pytest.mark.parametrize("backend", BACKEND)]

SIZES = [12, 9, 7, 4]  # two hidden layers: the contract covers the middle layers too


def problem(dtype, n=16, seed=0, sizes=SIZES):
    """MNIST-like inputs (nonnegative, half zeros) and int labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, sizes[0])) * (rng.random((n, sizes[0])) < 0.5)
    return x.astype(dtype), rng.integers(0, sizes[-1], n)


def net_pair(backend, dtype, **kw):
    """The same net (same parameters) on ``backend`` and on the numpy reference backend."""
    kw = {"sizes": SIZES, "weight_init": "he", "seed": 3, "dtype": dtype, **kw}
    return pfg.Net(backend=backend, **kw), pfg.Net(backend="numpy", **kw)


def test_softmax_and_losses(backend, dtype):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((8, 5)) * 4).astype(dtype)
    y = pfg.softmax(a, backend="numpy")
    t = np.eye(5, dtype=dtype)[rng.integers(0, 5, 8)]
    assert normwise(pfg.softmax(a, backend=backend), y) <= TOL[dtype]
    for fn in (pfg.cross_entropy_error, pfg.mean_squared_error):
        assert normwise(fn(y, t, backend=backend), fn(y, t, backend="numpy")) <= TOL[dtype], fn.__name__


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_net_loss_and_gradient(backend, dtype, activation, loss):
    net, ref = net_pair(backend, dtype, activation=activation, loss=loss, weight_decay=0.05)
    x, labels = problem(dtype)
    t = np.eye(SIZES[-1], dtype=dtype)[labels]
    assert normwise(net.loss(x, t), ref.loss(x, t)) <= TOL[dtype]
    g, g_ref = net.gradient(x, t), ref.gradient(x, t)
    assert list(g) == list(g_ref)
    for key in g_ref:
        assert g[key].dtype == dtype
        assert normwise(g[key], g_ref[key]) <= TOL[dtype], key


def test_predict_and_accuracy(backend, dtype):
    net, ref = net_pair(backend, dtype)
    x, labels = problem(dtype, n=40)
    assert normwise(net.predict(x), ref.predict(x)) <= TOL[dtype]
    # accuracy counts arg-maxes: equal unless two scores tie within rounding
    assert net.accuracy(x, labels) == ref.accuracy(x, labels)


def test_numerical_gradient_of_a_function(backend, dtype):
    x0 = np.random.default_rng(2).standard_normal(30).astype(dtype)

    def f(x):  # the tutorials' function_2
        return np.sum(x ** 2)

    g = pfg.numerical_gradient(f, x0.copy(), backend=backend)
    g_ref = pfg.numerical_gradient(f, x0.copy(), backend="numpy")
    assert g.dtype == dtype
    assert normwise(g, g_ref) <= TOL[dtype]


def test_numerical_gradient_of_a_net(backend, dtype):
    net, ref = net_pair(backend, dtype, activation="sigmoid")
    x, labels = problem(dtype, n=8)
    g, g_ref = net.numerical_gradient(x, labels), ref.numerical_gradient(x, labels)
    # float32: a central difference of float32 losses carries up to ~eps32 * loss / h of rounding
    # noise (the backends that difference in double carry less), so there each must be within that
    # of the analytic gradient, as the numpy reference is
    exact = ref.gradient(x, labels)
    noise = 4 * np.finfo(np.float32).eps * ref.loss(x, labels) / 1e-4
    assert all(g[key].dtype == dtype for key in g)
    for key in g_ref:
        if dtype == np.float64:
            assert normwise(g[key], g_ref[key]) <= 1e-8, key  # two float64 difference quotients
        else:
            assert np.max(np.abs(g[key] - exact[key])) <= noise, key
            assert np.max(np.abs(g_ref[key] - exact[key])) <= noise, key


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_updates(backend, dtype, name, steps):
    rng = np.random.default_rng(4)
    shapes = {"W1": (6, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [{k: (rng.standard_normal(s) * 0.1).astype(dtype) for k, s in shapes.items()} for _ in range(steps)]
    p, p_ref = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    opt = pfg.make_optimizer(name, lr=0.05, backend=backend)
    opt_ref = pfg.make_optimizer(name, lr=0.05, backend="numpy")
    for g in grads:
        opt.update(p, {k: v.copy() for k, v in g.items()})
        opt_ref.update(p_ref, {k: v.copy() for k, v in g.items()})
    assert opt.iter == opt_ref.iter == steps
    for key in params:
        assert p[key].dtype == dtype
        assert normwise(p[key] - params[key], p_ref[key] - params[key]) <= TOL[dtype], key


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_train_steps(backend, dtype, name):
    net, ref = net_pair(backend, dtype)
    x, labels = problem(dtype, n=24)
    opt, opt_ref = (pfg.make_optimizer(name, lr=0.05, backend=b) for b in (backend, "numpy"))
    for i in range(3):
        rows = slice(8 * i, 8 * i + 8)
        loss, loss_ref = net.train_step(x[rows], labels[rows], opt), ref.train_step(x[rows], labels[rows], opt_ref)
        assert normwise(loss, loss_ref) <= TOL[dtype]
    assert normwise(net.theta, ref.theta) <= TOL[dtype]


def test_fit_short_run(backend, dtype):
    net, ref = net_pair(backend, dtype)
    x, labels = problem(dtype, n=60)
    kw = dict(optimizer="adam", lr=0.01, epochs=2, batch_size=10, progress=False, seed=0)
    h, h_ref = pfg.fit(net, x, labels, **kw), pfg.fit(ref, x, labels, **kw)
    assert normwise(net.theta, ref.theta) <= 10 * TOL[dtype]  # 12 steps of rounding differences
    assert len(h.loss) == len(h_ref.loss) == 12 and normwise(h.loss, h_ref.loss) <= 10 * TOL[dtype]
    assert h.train_acc == h_ref.train_acc


def _raised(fn):
    try:
        fn()
    except Exception as exc:  # the type is the contract
        return type(exc)
    return None


@pytest.mark.parametrize("bad", ["wrong width", "wrong labels", "nan x", "inf x"])
def test_bad_input_raises_the_same(backend, dtype, bad):
    net, ref = net_pair(backend, dtype)
    x, labels = problem(dtype)
    if bad == "wrong width":
        x = x[:, :-1]
    elif bad == "wrong labels":
        labels = labels[:-1]
    else:
        x = x.copy()
        x[3, 2] = np.nan if bad == "nan x" else np.inf
    calls = {"loss": lambda n: n.loss(x, labels), "gradient": lambda n: n.gradient(x, labels),
             "train_step": lambda n: n.train_step(x, labels, pfg.SGD(lr=0.1, backend=n.backend))}
    if bad != "wrong labels":
        calls["predict"] = lambda n: n.predict(x)
    for what, call in calls.items():
        exc = _raised(lambda call=call: call(net))
        assert exc is not None and exc is _raised(lambda call=call: call(ref)), what
        assert issubclass(exc, ValueError), (what, exc)
