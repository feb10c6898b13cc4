"""pyfastgrad.numerical_gradient / gradient_descent on every backend; bad input."""
import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref

from _helpers import BACKENDS, DTYPES


def function_2(x):
    return np.sum(x ** 2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x0, g", [((3.0, 4.0), (6, 8)), ((0.0, 2.0), (0, 4)), ((3.0, 0.0), (6, 0))])
def test_published_gradients(backend, x0, g):
    x = np.array(x0)
    with pfg.use_backend(backend):
        np.testing.assert_allclose(pfg.numerical_gradient(function_2, x), g, atol=1e-7)
    assert x.tolist() == list(x0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lr, expected, rtol", [
    (0.1, [-6.11110793e-10, 8.14814391e-10], 1e-6),
    (10.0, [-2.58983747e13, -1.29524862e12], 1e-6),
    (1e-10, [-2.99999994, 3.99999992], 1e-8),
])
def test_gradient_descent_published(backend, lr, expected, rtol):
    init = np.array([-3.0, 4.0])
    x = pfg.gradient_descent(function_2, init, lr=lr, step_num=100, backend=backend)
    np.testing.assert_allclose(x, expected, rtol=rtol)
    assert init.tolist() == [-3.0, 4.0]  # the caller's array is not modified


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_any_shape_matches_reference(backend, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    x0 = x.copy()
    f = lambda w: float(np.sum(np.sin(w) * w))  # noqa: E731
    with pfg.use_backend(backend):
        g = pfg.numerical_gradient(f, x, h=1e-4)  # the reference's step (float32's default is larger)
    assert g.shape == x.shape and g.dtype == dtype
    np.testing.assert_array_equal(x, x0)  # restored bit for bit
    expect = ref.numerical_gradient(f, x0.copy())
    np.testing.assert_allclose(g, expect, rtol=1e-12 if dtype == np.float64 else 1e-6, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_closure_over_noncontiguous_view(backend):
    """The tutorials' idiom: f ignores its argument and reads the array through a closure."""
    base = np.arange(24, dtype=np.float64).reshape(4, 6) / 10
    view = base[:, ::2]
    before = base.copy()
    with pfg.use_backend(backend):
        g = pfg.numerical_gradient(lambda _: np.sum(view ** 3), view)
    np.testing.assert_allclose(g, 3 * view ** 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(base, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_schemes_and_richardson(backend):
    x = np.array([0.5, 1.0, 2.0])
    f = lambda w: float(np.sum(np.exp(w)))  # noqa: E731
    with pfg.use_backend(backend):
        central = pfg.numerical_gradient(f, x)
        forward = pfg.numerical_gradient(f, x, scheme="forward")
        rich = pfg.numerical_gradient(f, x, richardson=True)
        big_h = pfg.numerical_gradient(f, x, h=1e-2)
        big_h_rich = pfg.numerical_gradient(f, x, h=1e-2, richardson=True)
    exact = np.exp(x)
    assert np.max(np.abs(central - exact) / exact) < 1e-8
    assert 1e-6 < np.max(np.abs(forward - exact) / exact) < 1e-3  # O(h)
    assert np.max(np.abs(rich - exact) / exact) < 1e-9
    # Richardson turns the O(h^2) error of a large step into O(h^4)
    assert np.max(np.abs(big_h_rich - exact) / exact) < 1e-9 < np.max(np.abs(big_h - exact) / exact)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    with pfg.use_backend(backend):
        xi = np.array([3, 4])
        with pytest.raises(TypeError, match="floating-point"):
            pfg.numerical_gradient(function_2, xi)  # would silently give zeros
        assert xi.tolist() == [3, 4]
        with pytest.raises(ValueError, match="empty"):
            pfg.numerical_gradient(function_2, np.zeros(0))
        with pytest.raises(ValueError, match="NaN"):
            pfg.numerical_gradient(function_2, np.array([1.0, np.nan]))
        with pytest.raises(ValueError, match="h must be"):
            pfg.numerical_gradient(function_2, np.ones(2), h=0)
        with pytest.raises(ValueError, match="scheme"):
            pfg.numerical_gradient(function_2, np.ones(2), scheme="backward")
        with pytest.raises(TypeError, match="numpy array"):
            pfg.numerical_gradient(function_2, [1.0, 2.0])
        ro = np.ones(3)
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            pfg.numerical_gradient(function_2, ro)
        x = np.array([1.0, 2.0])

        def boom(w):
            raise RuntimeError("inside f")
        with pytest.raises(RuntimeError, match="inside f"):
            pfg.numerical_gradient(boom, x)
        assert x.tolist() == [1.0, 2.0]
        with pytest.raises(TypeError, match="real number"):
            pfg.numerical_gradient(lambda w: w * 2, np.ones(2))
        with pytest.raises(ValueError, match="NaN or inf"):
            pfg.numerical_gradient(lambda w: np.nan, np.ones(2))
        x_log = np.array([1.0, 1e-5])
        with pytest.raises(ValueError, match=r"x\[1\]"), np.errstate(invalid="ignore"):
            pfg.numerical_gradient(lambda w: float(np.sum(np.log(w))), x_log)  # log of a negative
        assert x_log.tolist() == [1.0, 1e-5]
        with pytest.raises(ValueError, match="lr"):
            pfg.gradient_descent(function_2, np.ones(2), lr=-1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_default_step_is_accurate(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    f = lambda w: float(np.sum(np.sin(w) * w))  # noqa: E731
    exact = np.sin(x.astype(np.float64)) + x * np.cos(x.astype(np.float64))
    with pfg.use_backend(backend):
        err_default = np.max(np.abs(pfg.numerical_gradient(f, x) - exact))
        err_tutorial = np.max(np.abs(pfg.numerical_gradient(f, x, h=1e-4) - exact))
    assert err_default < 2e-4 < 1e-3 < err_tutorial  # 1e-4 loses ~3 digits to float32 rounding
