"""weight_init / weight_init_std: 'he'/'relu', 'xavier'/'sigmoid', 'std', 'auto' or a positive float."""
import numpy as np
import pytest

import pyfastgrad as pfg


def _std(net, key):
    return float(np.std(net.params[key]))


@pytest.mark.parametrize("name, scale", [("he", 2.0), ("relu", 2.0), ("xavier", 1.0), ("sigmoid", 1.0)])
def test_named_inits_scale_with_fan_in(name, scale):
    net = pfg.TwoLayerNet(784, 400, 10, weight_init_std=name, seed=0)
    assert _std(net, "W1") == pytest.approx(np.sqrt(scale / 784), rel=0.02)
    assert _std(net, "W2") == pytest.approx(np.sqrt(scale / 400), rel=0.1)
    assert not net.params["b1"].any() and not net.params["b2"].any()
    same = pfg.MultiLayerNet(784, [400], 10, weight_init=name.upper(), seed=0)  # case-insensitive
    np.testing.assert_array_equal(same.theta, net.theta)


def test_float_std_and_defaults_unchanged():
    net = pfg.TwoLayerNet(784, 400, 10, seed=0)  # the tutorials' 0.01
    assert _std(net, "W1") == pytest.approx(0.01, rel=0.02)
    net = pfg.TwoLayerNet(784, 400, 10, weight_init_std=np.float32(0.05), seed=0)
    assert _std(net, "W1") == pytest.approx(0.05, rel=0.02)
    relu = pfg.MultiLayerNet(784, [400], 10, seed=0)  # 'auto': He for ReLU ...
    he = pfg.MultiLayerNet(784, [400], 10, weight_init="he", seed=0)
    np.testing.assert_array_equal(relu.theta, he.theta)
    sig = pfg.MultiLayerNet(784, [400], 10, activation="sigmoid", seed=0)  # ... Xavier otherwise
    xav = pfg.MultiLayerNet(784, [400], 10, activation="sigmoid", weight_init="xavier", seed=0)
    np.testing.assert_array_equal(sig.theta, xav.theta)


@pytest.mark.parametrize("bad, err", [("kaiming", ValueError), (0.0, ValueError), (-0.1, ValueError),
                                      (float("nan"), ValueError), (True, TypeError), (None, TypeError)])
def test_bad_inits(bad, err):
    with pytest.raises(err, match="weight_init"):
        pfg.TwoLayerNet(4, 3, 2, weight_init_std=bad)
