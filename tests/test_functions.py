"""Public functions on every backend, float32 and float64, against the reference."""
import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref

from _helpers import BACKENDS, DTYPES, TOL, normwise

Y_EX = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_and_softmax(backend, dtype):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((13, 10)) * 5).astype(dtype)
    t = rng.integers(0, 10, 13)
    with pfg.use_backend(backend):
        y = pfg.softmax(z)
        assert y.dtype == dtype and y.shape == z.shape
        assert normwise(y, ref.softmax(z.astype(np.float64))) < TOL[dtype]
        assert normwise(pfg.softmax(z[0]), ref.softmax(z[0].astype(np.float64))) < TOL[dtype]
        ce = pfg.cross_entropy_error(y, t)
        assert ce == pytest.approx(ref.cross_entropy_error(y.astype(np.float64), t), rel=TOL[dtype])
        assert pfg.cross_entropy_error(y, np.eye(10)[t]) == pytest.approx(ce, rel=TOL[dtype])
        mse = pfg.mean_squared_error(y, t)
        assert mse == pytest.approx(ref.mean_squared_error(y.astype(np.float64), t), rel=TOL[dtype])
        assert pfg.mean_squared_error(Y_EX.astype(dtype), 2) == pytest.approx(0.0975, rel=TOL[dtype])
        assert pfg.mean_squared_error(Y_EX.astype(dtype), np.eye(10)[2]) == pytest.approx(0.0975, rel=TOL[dtype])
        assert pfg.cross_entropy_error(Y_EX.astype(dtype), 2) == pytest.approx(0.510825457099338, rel=TOL[dtype])
        assert pfg.softmax(np.array([1010.0, 1000.0, 990.0], dtype=dtype))[0] == pytest.approx(0.9999546, rel=1e-6)
    assert pfg.hinge_loss(z, t) == pytest.approx(ref.hinge_loss(z.astype(np.float64), t), rel=TOL[dtype])


def test_activations():
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(pfg.sigmoid(x), [0.11920292, 0.5, 0.95257413], rtol=1e-7)
    np.testing.assert_array_equal(pfg.relu(x), [0, 0, 3])
    np.testing.assert_allclose(pfg.tanh(x), np.tanh(x))
    assert pfg.relu(np.array([1, -1])).tolist() == [1.0, 0.0]  # ints promoted, not truncated


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_bad_input(backend):
    with pfg.use_backend(backend):
        with pytest.raises(ValueError, match="NaN"):
            pfg.softmax(np.array([1.0, np.nan]))
        with pytest.raises(ValueError, match="empty"):
            pfg.softmax(np.zeros((0, 3)))
        with pytest.raises(ValueError, match="labels outside"):
            pfg.cross_entropy_error(Y_EX, 10)
        with pytest.raises(ValueError):
            pfg.mean_squared_error(np.ones((4, 3)), np.ones((4, 2)))
        with pytest.raises(TypeError):
            pfg.softmax(np.array(["a", "b"]))
        z = np.arange(12.0).reshape(3, 4)[:, ::2]  # non-contiguous view
        np.testing.assert_allclose(pfg.softmax(z), ref.softmax(z))
