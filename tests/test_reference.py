"""The reference reproduces the numbers the tutorials print."""
import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref


def function_2(x):
    return x[0] ** 2 + x[1] ** 2


@pytest.mark.parametrize("lr, expected, rtol", [
    (0.1, [-6.11110793e-10, 8.14814391e-10], 1e-6),
    (10.0, [-2.58983747e13, -1.29524862e12], 1e-6),
    (1e-10, [-2.99999994, 3.99999992], 1e-8),
])
def test_gradient_descent_published(lr, expected, rtol):
    x = ref.gradient_descent(function_2, np.array([-3.0, 4.0]), lr=lr, step_num=100)
    np.testing.assert_allclose(x, expected, rtol=rtol)


@pytest.mark.parametrize("x0, g", [((3.0, 4.0), (6, 8)), ((0.0, 2.0), (0, 4)), ((3.0, 0.0), (6, 0))])
def test_numerical_gradient_published(x0, g):
    x = np.array(x0)
    np.testing.assert_allclose(ref.numerical_gradient(function_2, x), g, atol=1e-7)
    assert x.tolist() == list(x0)  # restored


def test_mse_one_hot_example():
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    t = np.eye(10)[2]
    assert ref.mean_squared_error(y, t) == pytest.approx(0.0975)  # not 0.195: that forgot the 1/2
    assert ref.mean_squared_error(y, 2) == pytest.approx(0.0975)
    assert ref.sum_squared_error(y, t) == pytest.approx(0.0975)


def test_cross_entropy_published():
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert ref.cross_entropy_error(y, np.eye(10)[2]) == pytest.approx(0.510825457099338)
    y7 = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])
    assert ref.cross_entropy_error(y7, np.eye(10)[2]) == pytest.approx(2.302584092994546)
    assert ref.cross_entropy_error(y, np.array(2)) == ref.cross_entropy_error(y, np.eye(10)[2])


def test_softmax_overflow_safe():
    a = np.array([1010.0, 1000.0, 990.0])
    y = ref.softmax(a)
    np.testing.assert_allclose(y, [9.99954600e-01, 4.53978686e-05, 2.06106005e-09], rtol=1e-7)
    np.testing.assert_allclose(ref.softmax(np.array([[0.3, 2.9, 4.0]])), [[0.01821127, 0.24519181, 0.73659691]],
                               rtol=5e-7)


W_SIMPLE = np.array([[0.47355232, 0.9977393, 0.84668094], [0.85557411, 0.03563661, 0.69422093]])


def test_simple_net_published():
    net = ref.SimpleNet(W_SIMPLE.copy())
    x, t = np.array([0.6, 0.9]), np.array([0, 0, 1])
    np.testing.assert_allclose(net.predict(x), [1.05414809, 0.63071653, 1.1328074], rtol=1e-7)
    assert net.loss(x, t) == pytest.approx(0.92806853663411326, rel=1e-6)
    dW = net.numerical_gradient(x, t)
    np.testing.assert_allclose(dW, [[0.21924763, 0.14356247, -0.36281009], [0.32887144, 0.2153437, -0.54421514]],
                               atol=2e-7)
    np.testing.assert_array_equal(net.W, W_SIMPLE)


def test_layers_backprop_matches_numerical():
    rng = np.random.default_rng(0)
    for act in ("relu", "sigmoid", "tanh"):
        for loss in ("softmax", "mse", "hinge"):
            net = ref.MultiLayerNet(5, [4, 3], 3, activation=act, loss=loss, weight_decay_lambda=0.1, seed=1)
            x, t = rng.standard_normal((7, 5)), rng.integers(0, 3, 7)
            gn, gb = net.numerical_gradient(x, t), net.gradient(x, t)
            scale = max(np.abs(g).max() for g in gn.values())
            for k in gn:
                assert np.abs(gn[k] - gb[k]).max() / scale < 1e-6, (act, loss, k)


# ---------------------------------------------------------------- chapter 4's two-layer net
def test_ch4_two_layer_net_gradient_by_hand_equals_numerical():
    net = ref.TwoLayerNetCh4(6, 5, 3, weight_init_std=0.5, seed=0)
    rng = np.random.default_rng(1)
    x = rng.random((9, 6))
    t = np.eye(3)[rng.integers(0, 3, 9)]
    g, ng = net.gradient(x, t), net.numerical_gradient(x, t)
    assert list(g) == ["W1", "b1", "W2", "b2"]
    for k in g:
        assert g[k].shape == net.params[k].shape
        rel = np.abs(g[k] - ng[k]).max() / np.abs(ng[k]).max()
        assert rel < 1e-7, (k, rel)
    assert np.allclose(net.predict(x).sum(axis=1), 1.0)  # chapter 4's predict: probabilities


def test_ch4_two_layer_net_loss_equals_pyfastgrads_sigmoid_net():
    ch4 = ref.TwoLayerNetCh4(6, 5, 3, weight_init_std=0.5, seed=2)
    net = pfg.TwoLayerNet(6, 5, 3, activation="sigmoid", backend="numpy")
    for k in ("W1", "b1", "W2", "b2"):
        net.params[k][...] = ch4.params[k]
    rng = np.random.default_rng(3)
    x = rng.random((8, 6))
    labels = rng.integers(0, 3, 8)
    t = np.eye(3)[labels]
    assert abs(ch4.loss(x, t) - net.loss(x, labels)) <= 1e-14 * abs(ch4.loss(x, t))
    g = net.gradient(x, labels)
    hand = ch4.gradient(x, t)
    for k in hand:
        assert np.abs(g[k] - hand[k]).max() <= 1e-12 * np.abs(hand[k]).max()
    assert ch4.accuracy(x, t) == net.accuracy(x, labels)
