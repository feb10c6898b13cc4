"""set_num_threads limits every kernel pool, and bad counts are errors."""
import numpy as np
import pytest

import pyfastgrad as pfg


def test_set_num_threads_limits_pools_and_restores():
    before = pfg.get_num_threads()
    try:
        got = pfg.set_num_threads(1)
        for pool in ("blas", "openmp", "numba"):
            if got[pool] is not None:
                assert got[pool] == 1, (pool, got)
        # kernels still give the same answer on one thread
        net = pfg.TwoLayerNet(20, 8, 3, seed=0)
        x = np.random.default_rng(0).normal(size=(16, 20))
        t = np.arange(16) % 3
        g1 = net.gradient(x, t)["W1"].copy()
        pfg.set_num_threads(2)
        np.testing.assert_allclose(net.gradient(x, t)["W1"], g1, rtol=1e-12, atol=1e-15)
    finally:
        pfg.set_num_threads(max(v for v in before.values() if v is not None) if any(before.values()) else None)


@pytest.mark.parametrize("bad", [0, -3])
def test_set_num_threads_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="n must be >= 1"):
        pfg.set_num_threads(bad)


def test_set_num_threads_rejects_non_integer():
    with pytest.raises(TypeError, match="integer"):
        pfg.set_num_threads(1.5)
