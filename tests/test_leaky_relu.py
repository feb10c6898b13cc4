"""Leaky ReLU (slope spec.LEAKY_SLOPE = 0.01 for z <= 0, PyTorch's default) as the hidden activation of
the fused MLP kernels, on every backend (issue 10: an activation added through the registry)."""
import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref
from pyfastgrad import spec

from _helpers import BACKENDS, normwise


def _data(n=30, d=8, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, c, n)


def test_registry_entry():
    a = spec.activation("leaky_relu", mlp=True)
    assert a.mlp and a.kinked and spec.LEAKY_SLOPE == 0.01
    assert "leaky_relu" in spec.MLP_ACTIVATIONS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", spec.MLP_LOSSES)
def test_gradient_check_of_a_leaky_relu_net(backend, loss):
    x, t = _data()
    net = pfg.MultiLayerNet(8, [10, 6], 4, activation="leaky_relu", loss=loss, seed=1, backend=backend,
                            weight_init_std=0.5)
    res = net.gradient_check(x, t)
    assert res.passed, res


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backends_agree_on_leaky_relu(backend, dtype):
    x, t = _data(seed=2)
    nets = {b: pfg.MultiLayerNet(8, [10, 6], 4, activation="leaky_relu", seed=3, backend=b, dtype=dtype,
                                 weight_init_std=0.5) for b in ("numpy", backend)}
    tol = 1e-10 if dtype == np.float64 else 1e-4
    a, b = nets["numpy"], nets[backend]
    assert normwise(b.predict(x), a.predict(x)) <= tol
    assert abs(b.loss(x, t) - a.loss(x, t)) <= tol * abs(a.loss(x, t))
    ga, gb = a.gradient(x, t), b.gradient(x, t)
    for k in ga:
        assert normwise(gb[k], ga[k]) <= tol, k
    na, nb = a.numerical_gradient(x[:6], t[:6]), b.numerical_gradient(x[:6], t[:6])
    for k in na:
        assert normwise(nb[k], na[k]) <= (1e-8 if dtype == np.float64 else 1e-2), k
    for net in (a, b):
        pfg.fit(net, x, t, optimizer="sgd", lr=0.1, epochs=2, batch_size=10, seed=4, progress=False)
    assert normwise(b.theta, a.theta) <= tol


def test_leaky_relu_matches_the_reference_layers():
    x, t = _data(seed=5)
    net = pfg.MultiLayerNet(8, [5], 4, activation="leaky_relu", seed=6, backend="numpy")
    W1, b1, W2, b2 = (net.params[k] for k in ("W1", "b1", "W2", "b2"))
    z = x @ W1 + b1
    a = ref.LeakyRelu(spec.LEAKY_SLOPE).forward(z)
    assert np.array_equal(a, np.where(z > 0, z, 0.01 * z))
    assert np.allclose(net.predict(x), a @ W2 + b2, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_composed_leaky_nets_fuse_only_with_the_registry_slope(backend):
    from pyfastgrad.layers import Affine, LeakyRelu, SoftmaxWithLoss
    x, t = _data(seed=7)
    fused = pfg.Sequential([Affine(8, 6), LeakyRelu(0.01), Affine(6, 4), SoftmaxWithLoss()], seed=0, backend=backend)
    other = pfg.Sequential([Affine(8, 6), LeakyRelu(0.2), Affine(6, 4), SoftmaxWithLoss()], seed=0, backend=backend)
    assert fused.path == "fused" and other.path == "layers"
    mlp = pfg.MultiLayerNet(8, [6], 4, activation="leaky_relu", backend=backend)
    for k in mlp.params:
        mlp.params[k][...] = fused.params[k]
    assert normwise(fused.predict(x), mlp.predict(x)) <= 1e-12
    assert normwise(other.predict(x), fused.predict(x)) > 1e-6  # the slope matters


def test_auto_weight_init_treats_leaky_relu_like_relu():
    """'auto' gives He's sqrt(2 / fan_in) to kinked activations, in MultiLayerNet as in Sequential."""
    a = pfg.MultiLayerNet(400, [300], 4, activation="leaky_relu", seed=0)
    b = pfg.MultiLayerNet(400, [300], 4, activation="relu", seed=0)
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    assert abs(a.params["W1"].std() - np.sqrt(2 / 400)) < 0.01 * np.sqrt(2 / 400)
