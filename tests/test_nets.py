"""Nets on every backend against the reference nets; gradient checks; persistence; bad input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyfastgrad as pfg
from pyfastgrad import reference as ref

from _helpers import BACKENDS, DTYPES, FAST_BACKENDS, TOL, normwise

W_SIMPLE = np.array([[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]])


def ref_twin(net):
    """The reference MultiLayerNet with the same parameters (float64 copies)."""
    r = ref.MultiLayerNet(net.sizes[0], net.sizes[1:-1], net.sizes[-1], activation=net.activation,
                          loss=net.loss_name, weight_decay_lambda=net.weight_decay)
    for k in r.params:
        r.params[k][...] = net.params[k]
    return r


def flat(d):
    return np.concatenate([np.ravel(d[k]) for k in sorted(d)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_simple_net_published(backend):
    net = pfg.SimpleNet(W_SIMPLE, backend=backend)
    x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    np.testing.assert_allclose(net.predict(x), [[1.05414809, 0.63071653, 1.1328074]], rtol=1e-7)
    assert net.loss(x, t) == pytest.approx(0.92806853663411326, rel=1e-6)
    dW = net.numerical_gradient(x, t)["W"]
    np.testing.assert_allclose(dW, [[0.21924763, 0.14356247, -0.36281009], [0.32887144, 0.2153437, -0.54421514]],
                               atol=2e-7)
    assert list(net.params) == ["W"]
    np.testing.assert_array_equal(net.W, W_SIMPLE)
    # the tutorials' generic idiom on the net's own weight
    dW2 = pfg.numerical_gradient(lambda W: net.loss(x, t), net.W)
    np.testing.assert_allclose(dW2, dW, atol=1e-9)
    assert pfg.gradient_check(net, x, t).passed


CASES = [  # sizes, activation, loss, weight decay
    ([6, 5, 4], "relu", "softmax", 0.0),
    ([6, 5, 4], "sigmoid", "mse", 0.1),
    ([6, 7, 5, 3], "tanh", "softmax", 0.01),
    ([6, 4, 4, 4, 3], "relu", "hinge", 0.0),
    ([6, 3], "sigmoid", "softmax", 0.05),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, act, loss, wd", CASES)
def test_net_matches_reference(backend, dtype, sizes, act, loss, wd):
    rng = np.random.default_rng(7)
    net = pfg.Net(sizes, activation=act, loss=loss, weight_decay=wd, weight_init="auto", dtype=dtype,
                  seed=1, backend=backend)
    for i in range(1, len(sizes)):  # non-zero biases: keep pre-activations off ReLU's kink at exactly 0
        net.params[f"b{i}"] = rng.standard_normal(sizes[i]) * 0.1
    r = ref_twin(net)
    x = rng.standard_normal((9, sizes[0])).astype(dtype)
    t = rng.integers(0, sizes[-1], 9)
    x64 = x.astype(np.float64)
    assert normwise(net.predict(x), r.predict(x64)) < TOL[dtype]
    assert net.loss(x, t) == pytest.approx(r.loss(x64, t), rel=TOL[dtype])
    assert normwise(flat(net.gradient(x, t)), flat(r.gradient(x64, t))) < TOL[dtype]
    assert net.accuracy(x, t) == r.accuracy(x64, t)
    if dtype == np.float64:
        theta0 = net.theta.copy()
        gn = net.numerical_gradient(x, t)
        np.testing.assert_array_equal(net.theta, theta0)  # bit-identical after the call
        assert normwise(flat(gn), flat(r.numerical_gradient(x64, t))) < 1e-8
        res = pfg.gradient_check(net, x, t)
        assert res.passed, str(res)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_two_layer_net_mnist_numerical_gradient(backend, mnist_batch):
    """C++/numba numerical gradient of a real MNIST net equals the reference's loop (1e-8)."""
    x, t = mnist_batch
    x, t = x[:20], t[:20]
    net = pfg.TwoLayerNet(784, 10, 10, seed=0, backend=backend)
    net.params["W1"] = net.params["W1"] * 30  # a livelier net than 0.01*randn
    r = ref_twin(net)
    g = net.numerical_gradient(x, t)
    assert normwise(flat(g), flat(r.numerical_gradient(x, t))) < 1e-8
    assert pfg.gradient_check(net, x, t).max_rel < 1e-6


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gradient_check_mnist(backend, mnist_batch):
    x, t = mnist_batch
    # ReLU has a kink at 0: with 100 images some pre-activations lie within h*x of it and the
    # central difference straddles the kink (~1e-3 error there). The tutorials check on 3 images.
    cases = [(pfg.TwoLayerNet(784, 50, 10, seed=0, backend=backend), 10),
             (pfg.TwoLayerNet(784, 50, 10, activation="sigmoid", seed=0, backend=backend), 100),
             (pfg.MultiLayerNet(784, [40, 30, 20], 10, activation="tanh", weight_decay=0.1, seed=0,
                                backend=backend), 100)]
    for net, n in cases:
        res = pfg.gradient_check(net, x[:n], t[:n])
        assert res.passed and res.max_rel < 1e-6, str(res)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_on_mnist(backend, dtype, mnist_batch):
    x, t = mnist_batch
    net = pfg.MultiLayerNet(784, [100, 50], 10, activation="relu", weight_decay=0.01, seed=3, dtype=dtype,
                            backend=backend)
    r = ref_twin(net)
    assert net.loss(x, t) == pytest.approx(r.loss(x, t), rel=TOL[dtype])
    assert normwise(flat(net.gradient(x, t)), flat(r.gradient(x, t))) < TOL[dtype]


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3), n_out=st.integers(2, 6), n=st.integers(1, 17),
       act=st.sampled_from(["relu", "sigmoid", "tanh"]), loss=st.sampled_from(["softmax", "mse", "hinge"]),
       seed=st.integers(0, 2 ** 16))
def test_random_shapes_agree(sizes, n_out, n, act, loss, seed):
    sizes = sizes + [n_out]  # >= 2 classes: with one output, labels and one-hot are ambiguous
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, sizes[0]))
    t = rng.integers(0, sizes[-1], n)
    for backend in FAST_BACKENDS:
        for dtype in DTYPES:
            net = pfg.Net(sizes, activation=act, loss=loss, weight_init="auto", weight_decay=0.01, seed=seed,
                          dtype=dtype, backend=backend)
            r = ref_twin(net)
            assert net.loss(x, t) == pytest.approx(r.loss(x, t), rel=TOL[dtype], abs=TOL[dtype])
            g, gr = flat(net.gradient(x, t)), flat(r.gradient(x, t))
            if np.abs(gr).max() > 0:
                assert normwise(g, gr) < TOL[dtype]


@pytest.mark.parametrize("cls_args", [
    (pfg.TwoLayerNet, (5, 4, 3)), (pfg.MultiLayerNet, (5, [4, 4], 3)), (pfg.SimpleNet, ())])
def test_save_load_round_trip(tmp_path, cls_args):
    cls, args = cls_args
    net = cls(*args, seed=3) if cls is not pfg.SimpleNet else cls(seed=3)
    path = tmp_path / "net.npz"
    net.save(path)
    back = pfg.load_net(path)
    assert type(back) is cls
    assert list(back.params) == list(net.params)
    for k in net.params:
        np.testing.assert_array_equal(back.params[k], net.params[k])
        assert back.params[k].tobytes() == net.params[k].tobytes()


def test_params_dict_semantics():
    net = pfg.TwoLayerNet(4, 3, 2, seed=0)
    W = np.ones((4, 3))
    net.params["W1"] = W
    np.testing.assert_array_equal(net.params["W1"], W)
    net.params["W1"] -= 0.5  # the tutorials' update idiom writes through
    assert net.theta[0] == 0.5
    with pytest.raises(ValueError, match="shape"):
        net.params["W1"] = np.ones((3, 4))
    with pytest.raises(KeyError):
        net.params["W9"] = W
    with pytest.raises(ValueError, match="NaN"):
        net.params["b1"] = np.array([np.nan, 0, 0])
    assert "TwoLayerNet(sizes=[4, 3, 2]" in repr(net)
    assert "W1: (4, 3)" in repr(net.params)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    net = pfg.TwoLayerNet(4, 3, 2, seed=0, backend=backend)
    x, t = np.ones((5, 4)), np.array([0, 1, 0, 1, 1])
    theta0 = net.theta.copy()
    with pytest.raises(ValueError, match="features"):
        net.loss(np.ones((5, 3)), t)
    with pytest.raises(ValueError, match="labels"):
        net.gradient(x, t[:4])
    with pytest.raises(ValueError, match="outside"):
        net.numerical_gradient(x, np.array([0, 1, 2, 0, 1]))
    with pytest.raises(ValueError, match="empty"):
        net.predict(np.ones((0, 4)))
    with pytest.raises(ValueError, match="NaN"):
        net.loss(np.full((5, 4), np.nan), t)
    with pytest.raises(TypeError):
        net.loss(np.array([["a"] * 4]), t[:1])
    net.theta[0] = np.nan  # NaN in the weights
    with pytest.raises(ValueError, match="NaN"):
        net.numerical_gradient(x, t)
    net.theta[0] = theta0[0]
    np.testing.assert_array_equal(net.theta, theta0)
    xs = np.ones((5, 8))[:, ::2]  # a non-contiguous view works
    assert np.isfinite(net.loss(xs, t))
    with pytest.raises(ValueError):
        pfg.Net([4, 0, 2])
    with pytest.raises(ValueError, match="activation"):
        pfg.Net([4, 2], activation="gelu")
    with pytest.raises(TypeError, match="float32 or float64"):
        pfg.Net([4, 2], dtype=np.int32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_dicts_are_never_overwritten_while_held(backend):
    """gradient() reuses a buffer only when nothing holds it or a view of it: a kept dict, one kept array
    and a copy of the net all keep their values through later calls."""
    rng = np.random.default_rng(0)
    x, t = rng.random((6, 5)), np.arange(6) % 3
    net = pfg.TwoLayerNet(5, 4, 3, seed=0, backend=backend)
    first = net.gradient(x, t)
    kept = {k: v.copy() for k, v in first.items()}
    w2 = net.gradient(x + 1, t)["W2"]  # the dict is dropped, one array kept
    w2_kept = w2.copy()
    for s in range(2, 6):
        other = net.copy().gradient(x + s, t)
        assert not any(np.shares_memory(other[k], first[k]) for k in other)
        net.gradient(x + s, t)
        net.loss_and_gradient(x - s, t)
    assert all(np.array_equal(first[k], kept[k]) for k in kept)
    assert np.array_equal(w2, w2_kept)
    del first, w2
    again = net.gradient(x, t)
    assert all(np.array_equal(again[k], kept[k]) for k in kept)


@pytest.mark.parametrize("make", ["mln", "ext", "simple"])
def test_nets_pickle_after_use(make):
    """pickle / joblib round trip of a net that has run its kernels: the same numbers after loading, and
    params are views of the loaded theta again (an update through them moves the net)."""
    import pickle
    rng = np.random.default_rng(0)
    x, t = rng.random((12, 8)), rng.integers(0, 3, 12)
    if make == "mln":
        net = pfg.MultiLayerNet(8, [6, 5], 3, seed=0, weight_decay_lambda=0.01)
    elif make == "ext":
        net = pfg.MultiLayerNetExtend(8, [6, 5], 3, use_batchnorm=True, use_dropout=True, seed=0)
    else:
        net = pfg.SimpleNet(seed=0)  # params cover part of theta (no bias)
        x = rng.random((12, 2))
    net.gradient(x, t)
    net.predict(x)
    new = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(new.theta, net.theta)
    np.testing.assert_array_equal(new.predict(x), net.predict(x))
    if make == "ext":
        with net.fixed_dropout_masks(3), new.fixed_dropout_masks(3):
            a, b = net.gradient(x, t), new.gradient(x, t)
    else:
        a, b = net.gradient(x, t), new.gradient(x, t)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    before = new.predict(x)
    pfg.SGD(lr=0.5).update(new.params, new.gradient(x, t))
    assert not np.array_equal(new.predict(x), before)
    w = new.params[next(iter(new.params))]  # W1 (SimpleNet: W), the first of theta
    np.testing.assert_array_equal(w.ravel(), new.theta[:w.size])
