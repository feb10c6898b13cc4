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


def test_set_num_threads_holds_in_a_fresh_process_after_numba_starts():
    # numba's threading layer starts on first use and used to reset the extension's OpenMP count.
    import subprocess
    import sys
    code = ("import numpy as np, pyfastgrad as pfg\n"
            "pfg.set_num_threads(1)\n"
            "net = pfg.TwoLayerNet(30, 8, 3, seed=0, backend='numba')\n"
            "net.gradient(np.ones((4, 30)), np.arange(4) % 3)\n"
            "print(pfg.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    counts = eval(out.stdout.strip().splitlines()[-1])
    assert all(v in (None, 1) for v in counts.values()), counts


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_small_calls_on_one_thread_give_the_threaded_results(dtype, tol):
    """One call's work decides its threads (_core.set_call_work): the one-thread path and the threaded
    paths (OpenBLAS team, sparse first layer split in bands; loss_grad's rows split into parts, one thread
    each) agree, dense and MNIST-like sparse x."""
    core = pytest.importorskip("pyfastgrad._backends.cpp")._core
    rng = np.random.default_rng(0)
    x = rng.random((300, 784)).astype(dtype)
    x[x < 0.8] = 0  # mostly zeros: loss_grad takes the sparse first layer
    t = rng.integers(0, 10, 300)
    saved = core.get_call_work()
    out = {}
    try:
        for name, work in (("threads", (0.0, 0.0, float("inf"), 0.0)), ("split", (0.0, 0.0, 0.0, 0.0)),
                           ("one", (float("inf"),) * 4)):
            core.set_call_work(*work)
            net = pfg.MultiLayerNet(784, [64, 32], 10, seed=1, dtype=dtype, backend="cpp")
            out[name] = (net.loss(x, t), net.loss_and_gradient(x, t)[1], net.predict(x),
                         net.loss_and_gradient(x + 0.5, t)[1])
    finally:
        core.set_call_work(*saved)
    b = out["one"]
    for a in (out["threads"], out["split"]):
        assert a[0] == pytest.approx(b[0], rel=tol)
        for ga, gb in ((a[1], b[1]), (a[3], b[3])):
            for k in ga:
                assert np.max(np.abs(ga[k] - gb[k])) <= tol * max(np.max(np.abs(gb[k])), 1e-30)
        assert np.max(np.abs(a[2] - b[2])) <= tol * np.max(np.abs(b[2]))
    with pytest.raises(ValueError, match="work must be >= 0"):
        core.set_call_work(-1.0, 0.0)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_loss_grad_split_into_parts_matches_one_part(dtype, tol):
    """loss_grad's rows split into parts (one Mlp and thread each, forced by a zero threshold): the loss,
    the weight decay (added once), and the gradient equal the one-part call's; repeated calls give the same
    bits (the parts follow the thread setting, not the load); float32 images into a float64 net too."""
    core = pytest.importorskip("pyfastgrad._backends.cpp")._core
    rng = np.random.default_rng(4)
    x = rng.random((203, 784)).astype(np.float32)  # rows not divisible by the parts
    x[x < 0.8] = 0
    t = rng.integers(0, 10, 203)
    saved = core.get_call_work()
    out = {}
    try:
        for name, split in (("split", 0.0), ("one", float("inf"))):
            core.set_call_work(saved[0], saved[1], split, saved[3])
            net = pfg.MultiLayerNet(784, [40, 30, 20], 10, seed=2, dtype=dtype, backend="cpp", weight_decay=0.3)
            runs = [net.loss_and_gradient(x, t) for _ in range(2)]
            assert runs[0][0] == runs[1][0] and all(np.array_equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
            out[name] = runs[0]
    finally:
        core.set_call_work(*saved)
    (la, ga), (lb, gb) = out["split"], out["one"]
    assert la == pytest.approx(lb, rel=tol)
    for k in gb:
        assert np.max(np.abs(ga[k] - gb[k])) <= tol * np.max(np.abs(gb[k])), k


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"])
def test_big_opt_update_on_a_team_equals_one_thread(kind):
    """opt_update of more than 2^16 parameters runs on a team (each thread its slice): the same bits as on
    one thread, and the numpy reference's values."""
    kern = pytest.importorskip("pyfastgrad._backends.cpp")
    from pyfastgrad._backends import kernels
    rng = np.random.default_rng(1)
    n = 200_003
    theta0, g = rng.standard_normal(n), rng.standard_normal(n)
    s0 = np.abs(rng.standard_normal((2, n)))
    hyper = np.array([0.01, 0.9, 0.999, 1e-8, 0.01, 0.0, 0.0])
    before = pfg.get_num_threads()
    out = {}
    try:
        for threads in (2, 1):
            pfg.set_num_threads(threads)
            theta, s = theta0.copy(), s0.copy()
            kern.opt_update(kind, theta, g, s[0], s[1], hyper, 3)
            out[threads] = (theta, s)
    finally:
        pfg.set_num_threads(max(v for v in before.values() if v is not None) if any(before.values()) else None)
    assert np.array_equal(out[1][0], out[2][0]) and np.array_equal(out[1][1], out[2][1])
    theta, s = theta0.copy(), s0.copy()
    kernels("numpy").opt_update(kind, theta, g, s[0], s[1], hyper, 3)
    assert np.max(np.abs(theta - out[1][0])) <= 1e-12 * np.max(np.abs(theta))
