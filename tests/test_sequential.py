"""Composed nets (pyfastgrad.Sequential, MultiLayerNetExtend): fast paths, layers, gradients, bad input."""
from collections import OrderedDict

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref
from pyfastgrad.layers import (
    Affine,
    BatchNorm,
    BatchNormalization,
    Dropout,
    Identity,
    LeakyRelu,
    MSELoss,
    Relu,
    Sigmoid,
    SigmoidWithLoss,
    SoftmaxWithLoss,
    Tanh,
)

from _helpers import BACKENDS, DTYPES, FAST_BACKENDS, TOL, normwise


def data(n=20, d=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, c, n)


def flat(d):
    return np.concatenate([np.ravel(d[k]) for k in sorted(d)])


def mixed_net(dtype=np.float64, backend=None, seed=3, dropout=0.3):
    """Every kernel layer in one stack: per-layer activations, BN, Dropout."""
    return pfg.Sequential([Affine(6, 7), BatchNorm(7), LeakyRelu(0.1), Dropout(dropout), Affine(7, 5), Tanh(),
                           Affine(5, 5), Sigmoid(), BatchNorm(5), Affine(5, 4), Identity()],
                          loss=SoftmaxWithLoss(), weight_init="xavier", weight_decay=0.01, dtype=dtype,
                          seed=seed, backend=backend)


# ------------------------------------------------------------------ item 1: composition, fused path
@pytest.mark.parametrize("backend", BACKENDS)
def test_composed_two_layer_net_is_the_fused_kernel(backend):
    x, t = data(30, 12, 5)
    net = pfg.Sequential([Affine(12, 9), Relu(), Affine(9, 5), SoftmaxWithLoss()], weight_init=0.01, seed=4,
                         backend=backend)
    twin = pfg.TwoLayerNet(12, 9, 5, seed=4, backend=backend)
    assert net.path == "fused" and list(net.params) == ["W1", "b1", "W2", "b2"]
    np.testing.assert_array_equal(net.theta, twin.theta)
    assert type(net._mlp()) is type(twin._mlp())  # the very same kernel class
    assert net.loss(x, t) == twin.loss(x, t)
    np.testing.assert_array_equal(flat(net.gradient(x, t)), flat(twin.gradient(x, t)))
    np.testing.assert_array_equal(flat(net.numerical_gradient(x, t)), flat(twin.numerical_gradient(x, t)))
    h1 = pfg.fit(net, x, t, optimizer="momentum", lr=0.1, epochs=2, batch_size=10, progress=False)
    h2 = pfg.fit(twin, x, t, optimizer="momentum", lr=0.1, epochs=2, batch_size=10, progress=False)
    assert h1.loss == h2.loss
    np.testing.assert_array_equal(net.theta, twin.theta)
    # the layer objects share the net's parameters (the tutorials' layers still work on them)
    assert np.shares_memory(net.layers["Affine1"].W, net.theta)
    np.testing.assert_allclose(net.layers["Affine2"].forward(net.layers["Relu1"].forward(
        net.layers["Affine1"].forward(x))), net.predict(x), rtol=1e-12)


def test_ordered_dict_and_names():
    layers = OrderedDict([("fc1", Affine(4, 3)), ("act", Sigmoid()), ("fc2", Affine(3, 2)), ("loss", MSELoss())])
    net = pfg.Sequential(layers, seed=0)
    assert list(net.layers) == ["fc1", "act", "fc2"] and net.path == "fused"
    assert net.activation == "sigmoid" and net.loss_name == "mse"
    assert "path='fused'" in repr(net) and "Affine(4, 3)" in repr(net)


def test_given_arrays_are_copied_in():
    W = np.arange(6.0).reshape(2, 3)
    b = np.array([1.0, 2.0, 3.0])
    net = pfg.Sequential([Affine(W, b)], loss=SoftmaxWithLoss())
    np.testing.assert_array_equal(net.params["W1"], W)
    net.params["W1"] -= 1.0
    np.testing.assert_array_equal(W, np.arange(6.0).reshape(2, 3))  # the caller's array is untouched


class Square:
    """A layer without a kernel: x**2."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dout):
        return 2 * self.x * dout


def test_layer_without_kernel_runs_on_reference_and_says_so():
    x, t = data(10, 6, 4)
    with pytest.warns(UserWarning, match="no kernel"):
        net = pfg.Sequential([Affine(6, 5), Square(), Affine(5, 4), SoftmaxWithLoss()], seed=1)
    assert net.path == "reference"
    gc = pfg.gradient_check(net, x, t)
    assert gc.passed, gc
    # same values as a hand-written reference forward
    W1, b1, W2, b2 = (net.params[k] for k in ("W1", "b1", "W2", "b2"))
    z = ((x @ W1 + b1) ** 2) @ W2 + b2
    assert net.loss(x, t) == pytest.approx(ref.softmax_cross_entropy(z, np.eye(4)[t]), rel=1e-12)


# ------------------------------------------------------------------ item 2: layers on every backend
@pytest.mark.parametrize("dtype", DTYPES)
def test_backends_agree_on_every_layer(dtype):
    x, t = data(24, 6, 4)
    x = x.astype(dtype)
    out = {}
    for b in BACKENDS:
        net = mixed_net(dtype, backend=b)
        assert net.path == "layers"
        loss, g = net.loss_and_gradient(x, t)
        out[b] = (loss, flat(g), net.predict(x), net.layers["BatchNorm1"].running_mean.copy(),
                  net.loss(x, t, train_flg=False))
    for b in BACKENDS:
        assert abs(out[b][0] - out["numpy"][0]) <= TOL[dtype] * abs(out["numpy"][0])
        for i in (1, 2, 3):
            assert normwise(out[b][i], out["numpy"][i]) <= TOL[dtype], (b, i)
        assert out[b][4] == pytest.approx(out["numpy"][4], rel=TOL[dtype])


def test_matches_reference_multilayer_net_extend():
    """Same parameters, no Dropout: the tutorials' numpy net and ours agree (loss, gradient, statistics)."""
    x, t = data(32, 8, 3)
    for b in BACKENDS:
        net = pfg.MultiLayerNetExtend(8, [6, 5], 3, use_batchnorm=True, weight_decay_lambda=0.05, seed=0,
                                      backend=b)
        r = ref.MultiLayerNetExtend(8, [6, 5], 3, use_batchnorm=True, weight_decay_lambda=0.05)
        assert set(r.params) == set(net.params) and "gamma1" in net.params
        for k in r.params:
            r.params[k][...] = net.params[k] + 0.1 * (k.startswith("gamma") or k.startswith("beta"))
            net.params[k] = r.params[k]
        assert normwise(flat(net.gradient(x, t)), flat(r.gradient(x, t))) <= 1e-10
        bn, rbn = net.layers["BatchNorm2"], r.layers["BatchNorm2"]
        np.testing.assert_allclose(bn.running_var, rbn.running_var, rtol=1e-12)
        assert net.loss(x, t) == pytest.approx(r.loss(x, t), rel=1e-12)  # eval mode, running statistics
        np.testing.assert_allclose(net.predict(x), r.predict(x), rtol=1e-10, atol=1e-12)
        assert net.loss(x, t, train_flg=True) == pytest.approx(r.loss(x, t, train_flg=True), rel=1e-12)


def test_dropout_masks_seeded_and_shared_by_backends():
    x, t = data(16, 6, 4)
    grads = [flat(mixed_net(backend=b, seed=7).gradient(x, t)) for b in BACKENDS]
    for g in grads:
        assert normwise(g, grads[0]) <= 1e-10
    net = mixed_net(seed=7)
    g1, g2 = flat(net.gradient(x, t)), flat(net.gradient(x, t))
    assert normwise(g1, g2) > 1e-6  # fresh masks at every training pass
    # evaluation: dropout is the scale (1 - ratio) and deterministic
    np.testing.assert_array_equal(net.predict(x), net.predict(x))
    d = Dropout(0.25)
    np.testing.assert_allclose(d.forward(np.ones((2, 3)), train_flg=False), 0.75)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_running_statistics(backend):
    rng = np.random.default_rng(0)
    x = 3.0 + 2.0 * rng.standard_normal((400, 5))
    t = rng.integers(0, 2, 400)
    net = pfg.Sequential([BatchNorm(5), Affine(5, 2), SoftmaxWithLoss()], seed=0, backend=backend)
    opt = pfg.SGD(lr=1e-9)
    for _ in range(60):
        net.train_step(x, t, opt)
    bn = net.layers["BatchNorm1"]
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=0), rtol=0.01)  # 0.9 ** 60 of the start remains
    np.testing.assert_allclose(bn.running_var, x.var(axis=0), rtol=0.01)
    # evaluation uses them: the normalised input is then ~ (x - mean) / std
    ev = net.predict(x[:3])
    W, b, g, be = (net.params[k] for k in ("W1", "b1", "gamma1", "beta1"))
    expect = (g * ((x[:3] - bn.running_mean) / np.sqrt(bn.running_var + 1e-6)) + be) @ W + b
    np.testing.assert_allclose(ev, expect, rtol=1e-9)


def test_sigmoid_tower_regression_fits():
    """The seed's regression: a sigmoid hidden layer of towers, a linear output, MSE, trained by fit."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (400, 1))
    y = np.sin(x)
    net = pfg.Sequential([Affine(1, 16), Sigmoid(), Affine(16, 1)], loss=MSELoss(), weight_init=1.0, seed=0)
    assert net.path == "fused"
    hist = pfg.fit(net, x, y, x, y, optimizer="adam", lr=0.02, epochs=40, batch_size=20, progress=False)
    assert hist.task == "regression" and hist.test_r2[-1] > 0.95


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_binary_cross_entropy_head(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 2))
    t = (x[:, 0] * x[:, 1] > 0).astype(np.float64)  # XOR-like
    net = pfg.Sequential([Affine(2, 16), Tanh(), Affine(16, 1), SigmoidWithLoss()], seed=0, backend=backend)
    assert net.path == "layers"
    z = net.predict(x[:5])
    assert net.loss(x[:5], t[:5]) == pytest.approx(
        np.mean(-t[:5] * np.log(1 / (1 + np.exp(-z[:, 0]))) - (1 - t[:5]) * np.log(1 - 1 / (1 + np.exp(-z[:, 0])))),
        rel=1e-10)
    hist = pfg.fit(net, x, t, optimizer="adam", lr=0.05, epochs=30, batch_size=20, progress=False)
    assert net.accuracy(x, t) > 0.9 and hist.loss[-1] < hist.loss[0]


@pytest.mark.parametrize("rule, std", [("he", np.sqrt(2 / 400)), ("xavier", np.sqrt(1 / 400)), (0.05, 0.05)])
def test_weight_init(rule, std):
    net = pfg.Sequential([Affine(400, 300), Relu(), Affine(300, 2), SoftmaxWithLoss()], weight_init=rule, seed=0)
    assert net.params["W1"].std() == pytest.approx(std, rel=0.01)
    assert not net.params["b1"].any()
    auto = pfg.Sequential([Affine(400, 300), BatchNorm(300), Relu(), Affine(300, 2), SoftmaxWithLoss()], seed=0)
    assert auto.params["W1"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.01)  # 'auto': He before a ReLU
    assert auto.params["W2"].std() == pytest.approx(np.sqrt(1 / 300), rel=0.05)  # Xavier before the loss


# ------------------------------------------------------------------ item 3/5: gradients of every layer
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_check_every_layer(backend, dtype):
    x, t = data(20, 6, 4, seed=2)
    net = mixed_net(dtype, backend=backend, seed=5)
    res = net.gradient_check(x, t)  # (the numerical side extrapolated: BatchNorm's curvature, see docs)
    assert res.passed, res
    assert set(res.max_abs) == set(net.params)
    if dtype == np.float64:  # (b1's true gradient is 0: BatchNorm removes a bias before it)
        assert max(v for k, v in res.rel.items() if k != "b1") < 1e-6
        assert res.max_abs["b1"] < 1e-15


@pytest.mark.parametrize("backend", BACKENDS)
def test_numerical_gradient_equals_plain_loop(backend):
    """The net-aware column sweep equals the reference's per-parameter loop (fixed Dropout masks)."""
    x, t = data(12, 6, 4, seed=3)
    net = mixed_net(backend=backend, seed=2)
    with net.fixed_dropout_masks(11):
        fast = flat(net.numerical_gradient(x, t))
        th = net.theta
        loop = np.empty_like(th)
        for p in range(th.size):
            v = th[p]
            th[p] = v + 1e-4
            fp = net.loss(x, t, train_flg=True)
            th[p] = v - 1e-4
            fm = net.loss(x, t, train_flg=True)
            th[p] = v
            loop[p] = (fp - fm) / 2e-4
    loop_d = {k: loop[net._layout[k][0]] for k in net.params}  # theta is in layer order, flat() sorts
    assert normwise(fast, flat(loop_d)) <= 1e-8


def test_gradient_check_leaves_the_net_unchanged():
    x, t = data(20, 6, 4)
    net = mixed_net(seed=1)
    net.gradient(x, t)  # some running statistics
    th = net.theta.copy()
    rm = net.layers["BatchNorm1"].running_mean.copy()
    assert net.gradient_check(x, t).passed
    np.testing.assert_array_equal(net.theta, th)
    np.testing.assert_array_equal(net.layers["BatchNorm1"].running_mean, rm)


def test_relu_kinks_detected_in_layer_path():
    x, t = data(40, 6, 4, seed=9)
    net = pfg.Sequential([Affine(6, 8), BatchNorm(8), Relu(), Affine(8, 4), SoftmaxWithLoss()], seed=0)
    th = net.theta
    kp, km = np.zeros(th.size, np.int64), np.zeros(th.size, np.int64)
    xb, tb = net._xt(x, t)
    net._mlp().kink_counts(th, xb, tb, 0.5, kp, km)  # a big step: many ReLU states change
    assert kp.sum() > 0 and km.sum() > 0
    net._mlp().kink_counts(th, xb, tb, 1e-12, kp, km)
    assert kp.sum() == 0 and km.sum() == 0


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("backend", BACKENDS)
def test_fit_trains_a_batchnorm_dropout_net(backend):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((3, 10)) * 2
    t = rng.integers(0, 3, 600)
    x = centers[t] + rng.standard_normal((600, 10))
    net = pfg.MultiLayerNetExtend(10, [32, 32], 3, use_batchnorm=True, use_dropout=True, dropout_ration=0.2,
                                  weight_init_std="he", seed=0, backend=backend)
    hist = pfg.fit(net, x[:500], t[:500], x[500:], t[500:], optimizer="adam", lr=0.01, epochs=3, batch_size=50,
                   progress=False)
    assert hist.test_acc[-1] > 0.9 and np.mean(hist.loss[-10:]) < np.mean(hist.loss[:10])


def test_mnist_short_run_batchnorm_dropout(mnist):
    """CI's figure for the issue's recipe (784-256-256-10, BN, Dropout 0.2, He, Adam): 1 epoch on 20k images
    (measured 0.9278; the full recipe, 20 epochs on 60k, is run by hand: docs/LAYERS.md)."""
    (x, t), (xt, tt) = mnist
    net = pfg.MultiLayerNetExtend(784, [256, 256], 10, use_batchnorm=True, use_dropout=True, dropout_ration=0.2,
                                  weight_init_std="he", dtype=np.float32, seed=0)
    hist = pfg.fit(net, x[:20000], t[:20000], xt[:5000], tt[:5000], optimizer="adam", lr=0.001, epochs=1,
                   progress=False)
    assert hist.test_acc[-1] >= 0.92


# ------------------------------------------------------------------ bad input
def test_bad_stacks():
    with pytest.raises(ValueError, match="takes 5 inputs but the layers before it give 4"):
        pfg.Sequential([Affine(3, 4), Relu(), Affine(5, 2), SoftmaxWithLoss()])
    with pytest.raises(ValueError, match="normalises 3 features"):
        pfg.Sequential([Affine(3, 4), BatchNorm(3), Affine(4, 2), SoftmaxWithLoss()])
    with pytest.raises(ValueError, match="must be last"):
        pfg.Sequential([Affine(3, 4), SoftmaxWithLoss(), Affine(4, 2)])
    with pytest.raises(ValueError, match="no loss layer"):
        pfg.Sequential([Affine(3, 4)])
    with pytest.raises(ValueError, match="two loss layers"):
        pfg.Sequential([Affine(3, 4), SoftmaxWithLoss()], loss=MSELoss())
    with pytest.raises(TypeError, match="not a layer"):
        pfg.Sequential([Affine(3, 4), "relu", SoftmaxWithLoss()])
    with pytest.raises(ValueError, match="at least one Affine"):
        pfg.Sequential([BatchNorm(3), SoftmaxWithLoss()])
    with pytest.raises(ValueError, match="before any layer that fixes the input size"):
        pfg.Sequential([Relu(), Affine(3, 2), SoftmaxWithLoss()])
    for fast in FAST_BACKENDS:
        with pytest.raises(ValueError, match="no kernel.*cannot run on the"):
            pfg.Sequential([Affine(3, 4), Square(), Affine(4, 2), SoftmaxWithLoss()], backend=fast)
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="alpha"):
        LeakyRelu(-1)
    with pytest.raises(TypeError, match="n_out"):
        Affine(3, 2.5)
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(3, momentum=2)


def test_bad_data_leaves_inputs_alone():
    net = mixed_net()
    x, t = data(10, 6, 4)
    x0 = x.copy()
    with pytest.raises(ValueError):
        net.gradient(x[:, :5], t)
    with pytest.raises(ValueError, match="labels outside"):
        net.loss(x, t + 10)
    net.gradient(x, t)
    np.testing.assert_array_equal(x, x0)
    bce = pfg.Sequential([Affine(6, 1), SigmoidWithLoss()])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bce.loss(x, np.full(10, 2.0))


@pytest.mark.skipif("cpp" not in BACKENDS, reason="needs the C++ extension")
def test_cpp_layer_kernels_check_shapes():
    from pyfastgrad._backends import cpp as k
    core = k._core
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="gamma must have shape"):
        k.bn_forward_train(x, np.ones(2), np.zeros(3), 1e-6)
    with pytest.raises(ValueError, match="same size"):
        core.mul_mask(x, np.ones(5), np.empty_like(x))
    with pytest.raises(ValueError, match="activation code"):
        k.act_forward(9, 0.0, x)
    with pytest.raises(TypeError):
        k.act_forward(0, 0.0, x.astype(np.float32).astype(np.int64))


@pytest.mark.parametrize("backend", BACKENDS[:1])
def test_save_load_round_trip(tmp_path, backend):
    x, t = data(20, 6, 4)
    net = mixed_net(backend=backend)
    opt = pfg.Adam(lr=0.01)
    for _ in range(3):
        net.train_step(x, t, opt)
    net.save(tmp_path / "m.npz", optimizer=opt)
    back, opt2 = pfg.load_net(tmp_path / "m.npz", with_optimizer=True)
    assert type(back) is pfg.Sequential and list(back.layers) == list(net.layers)
    np.testing.assert_array_equal(back.theta, net.theta)
    np.testing.assert_array_equal(back.predict(x), net.predict(x))  # running statistics too
    assert opt2.iter == 3
    ext = pfg.MultiLayerNetExtend(6, [5], 4, use_batchnorm=True, use_dropout=True, dropout_ration=0.2, seed=0)
    ext.save(tmp_path / "e.npz")
    e2 = pfg.load_net(tmp_path / "e.npz")
    assert type(e2) is pfg.MultiLayerNetExtend and e2.use_batchnorm and e2.dropout_ration == 0.2
    assert "gamma1" in e2.params


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", [SoftmaxWithLoss, MSELoss, SigmoidWithLoss])
def test_gradient_check_heads_and_relu_on_layer_path(head, backend, dtype):
    """The loss heads and ReLU (kinks detected) on the layer path: BatchNorm keeps it off the fused kernel."""
    x, _ = data(20, 6, 4, seed=4)
    rng = np.random.default_rng(5)
    t = rng.integers(0, 2, (20, 3)).astype(np.float64) if head is not SoftmaxWithLoss else rng.integers(0, 3, 20)
    net = pfg.Sequential([Affine(6, 8), Relu(), BatchNorm(8), Affine(8, 3), head()], dtype=dtype, seed=0,
                         backend=backend)
    assert net.path == "layers"
    res = net.gradient_check(x, t)
    assert res.passed, res


@pytest.mark.parametrize("bn, drop", [(True, False), (False, True), (True, True)])
def test_image_like_input_on_cpp_equals_numpy(bn, drop):
    """MNIST-like input (784 columns, ~80% zeros, float32 images into a float64 net): cpp's first layer runs
    on the nonzeros (forward and weight gradient) and its evaluation mode is one Mlp predict on folded
    weights (Dropout's scale, BatchNorm's running statistics); every result equals the numpy reference's."""
    if "cpp" not in BACKENDS:
        pytest.skip("C++ extension not built")
    rng = np.random.default_rng(9)
    x = rng.random((64, 784)).astype(np.float32)
    x[x < 0.8] = 0
    t = rng.integers(0, 10, 64)
    out = {}
    for b in ("cpp", "numpy"):
        net = pfg.MultiLayerNetExtend(784, [50, 40], 10, use_batchnorm=bn, use_dropout=drop, dropout_ration=0.3,
                                      weight_decay_lambda=0.01, seed=4, backend=b)
        opt = pfg.Momentum(lr=0.05)
        for _ in range(3):  # running statistics move, parameters change
            opt.update(net.params, net.gradient(x, t))
        out[b] = (flat(net.gradient(x, t)), net.predict(x), net.accuracy(x, t), net.loss(x, t))
        if b == "cpp":
            assert net._mlp()._eval_mlp() is not None  # the folded evaluation path
    for i in (0, 1):
        assert normwise(out["cpp"][i], out["numpy"][i]) <= 1e-10, i
    assert out["cpp"][2] == out["numpy"][2]
    assert out["cpp"][3] == pytest.approx(out["numpy"][3], rel=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", [0, 3])  # relu, leaky_relu: the selects of the layer kernels
def test_relu_layer_kernels_agree_on_every_backend(code, dtype):
    """The ReLUs' layer kernels give numpy's bits on cpp and numba: zeros, negatives, NaN (z > 0 keeps
    dout), and a backward written over its own dout."""
    from pyfastgrad._backends import kernels
    rng = np.random.default_rng(3)
    z = rng.standard_normal((37, 29)).astype(dtype)
    z[0, :5] = [0.0, -0.0, np.nan, np.inf, -np.inf]
    dout = rng.standard_normal(z.shape).astype(dtype)
    npk = kernels("numpy")
    a_ref = npk.act_forward(code, 0.01, z)
    dz_ref = npk.act_backward(code, 0.01, dout, z, a_ref)
    assert 300 < np.count_nonzero(~(z > 0)) < 800  # about half masked: both sides of the select are used
    for backend in FAST_BACKENDS:
        k = kernels(backend)
        np.testing.assert_array_equal(k.act_forward(code, 0.01, z), a_ref)
        np.testing.assert_array_equal(k.act_backward(code, 0.01, dout, z, a_ref), dz_ref)
    if "cpp" in FAST_BACKENDS:
        from pyfastgrad._backends.cpp import _core
        d = dout.copy()
        _core.layer_act_backward(code, 0.01, d, z, a_ref, d)  # dz may be dout
        np.testing.assert_array_equal(d, dz_ref)


# ------------------------------------------------------------------ the one-call training step (cpp Stack)
def _per_layer(net):
    """The cpp Program's per-layer path (its Stack switched off), as a context."""
    prog = net._mlp()

    class _Off:
        def __enter__(self):
            self.saved = prog._stack()
            prog._stack_impl = None

        def __exit__(self, *exc):
            prog._stack_impl = self.saved
    return _Off()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", ["mixed", "bn", "dropout_wd", "bn_dropout_sigmoid"])
def test_cpp_stack_step_equals_the_per_layer_calls(make, dtype):
    """cpp runs a layer stack's training step in one call (csrc/mlp/stack.hpp): the same loss, gradient and
    running statistics as its per-layer kernel calls, on float32 images into a float64 net too."""
    rng = np.random.default_rng(5)
    if make == "mixed":
        net = mixed_net(dtype, backend="cpp", seed=7)
        x, t = data(24, 6, 4)
    else:
        kw = {"bn": dict(use_batchnorm=True), "dropout_wd": dict(use_dropout=True, weight_decay_lambda=0.1),
              "bn_dropout_sigmoid": dict(use_batchnorm=True, use_dropout=True, dropout_ration=0.3,
                                         activation="sigmoid", weight_decay_lambda=0.01)}[make]
        net = pfg.MultiLayerNetExtend(40, [16, 12, 8], 5, weight_init_std=0.3, seed=1, dtype=dtype, backend="cpp",
                                      **kw)
        x = np.where(rng.random((30, 40)) < 0.8, 0.0, rng.random((30, 40)))  # mostly zeros: the sparse first layer
        t = rng.integers(0, 5, 30)
    x = x.astype(np.float32)  # float32 images (a float64 net reads them widened)
    assert net._mlp()._stack() is not None
    bns = [lay for lay in net.layers.values() if isinstance(lay, BatchNorm)]
    out = []
    for use_stack in (True, False):
        net2 = net.copy()
        with net2.fixed_dropout_masks(seed=4):  # (restores the statistics at its end: read them inside)
            if use_stack:
                loss, g = net2.loss_and_gradient(x, t)
            else:
                with _per_layer(net2):
                    loss, g = net2.loss_and_gradient(x, t)
            stats = [np.concatenate([lay.running_mean, lay.running_var])
                     for lay in net2.layers.values() if isinstance(lay, BatchNorm)]
        out.append((loss, flat(g), stats))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(out[0][0] - out[1][0]) <= tol * abs(out[1][0])
    assert normwise(out[0][1], out[1][1]) <= tol
    assert len(out[0][2]) == len(bns)
    for a, b in zip(out[0][2], out[1][2]):
        assert normwise(a, b) <= tol


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpp_stack_split_into_parts_equals_the_per_layer_calls(dtype):
    """A big stack step splits the rows into parts, one thread each, Batch Normalization adding up the parts'
    column sums (forced here by a zero threshold and three OpenMP threads: 3 parts of 70 rows, not divisible):
    the loss, gradient and running statistics equal the per-layer calls'; repeated calls give the same bits."""
    core = pytest.importorskip("pyfastgrad._backends.cpp")._core
    rng = np.random.default_rng(8)
    x = np.where(rng.random((70, 40)) < 0.8, 0.0, rng.random((70, 40))).astype(np.float32)
    t = rng.integers(0, 5, 70)
    net = pfg.MultiLayerNetExtend(40, [16, 12, 8], 5, weight_init_std=0.3, seed=1, dtype=dtype, backend="cpp",
                                  use_batchnorm=True, use_dropout=True, dropout_ration=0.3, weight_decay_lambda=0.05)
    saved, threads = core.get_call_work(), core.openmp_max_threads()
    out = []
    try:
        core.set_call_work(saved[0], saved[1], 0.0, saved[3])
        core.openmp_set_num_threads(3)
        for use_stack in (True, True, False):
            net2 = net.copy()
            with net2.fixed_dropout_masks(seed=4):
                if use_stack:
                    loss, g = net2.loss_and_gradient(x, t)
                else:
                    with _per_layer(net2):
                        loss, g = net2.loss_and_gradient(x, t)
                stats = np.concatenate([np.concatenate([lay.running_mean, lay.running_var])
                                        for lay in net2.layers.values() if isinstance(lay, BatchNorm)])
            out.append((loss, flat(g), stats))
    finally:
        core.set_call_work(*saved)
        core.openmp_set_num_threads(threads)
    assert out[0][0] == out[1][0] and np.array_equal(out[0][1], out[1][1]) and np.array_equal(out[0][2], out[1][2])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(out[0][0] - out[2][0]) <= tol * abs(out[2][0])
    assert normwise(out[0][1], out[2][1]) <= tol
    assert normwise(out[0][2], out[2][2]) <= tol


def test_cpp_stack_checks_its_arguments():
    net = pfg.MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, use_dropout=True, seed=0, backend="cpp")
    st = net._mlp()._stack()
    x, t = data(8, 6, 3)
    T = np.eye(3)[t]
    g = np.empty_like(net.theta)
    mask, mv = np.ones((8, 5)), [np.empty(5)]
    with pytest.raises(ValueError, match="dropout masks"):
        st.loss_grad(net.theta.size, net.theta, x, T, 0.0, g, [], mv, mv)
    with pytest.raises(ValueError, match="mask must have shape"):
        st.loss_grad(net.theta.size, net.theta, x, T, 0.0, g, [np.ones((7, 5))], mv, mv)
    with pytest.raises(ValueError, match="x must have shape"):
        st.loss_grad(net.theta.size, net.theta, np.ascontiguousarray(x[:, :5]), T, 0.0, g, [mask], mv, mv)
    with pytest.raises(ValueError, match="theta"):
        st.loss_grad(net.theta.size, net.theta[:-1], x, T, 0.0, g, [mask], mv, mv)
    with pytest.raises(ValueError, match="mean and var"):
        st.loss_grad(net.theta.size, net.theta, x, T, 0.0, g, [mask], [], [])
    loss = st.loss_grad(net.theta.size, net.theta, x, T, 0.0, g, [mask], mv, mv)
    assert np.isfinite(loss) and np.isfinite(g).all()
