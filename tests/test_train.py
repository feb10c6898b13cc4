"""Optimizers, the fused training loop, MNIST accuracy, the CLI."""
import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref

from _helpers import BACKENDS, DTYPES, FAST_BACKENDS, TOL, normwise

OPTS = [("sgd", {}), ("momentum", {"momentum": 0.9}), ("nesterov", {"momentum": 0.8}), ("adagrad", {}),
        ("rmsprop", {"decay_rate": 0.9}), ("adam", {"beta1": 0.8, "beta2": 0.99})]
REF_OPTS = {"sgd": ref.SGD, "momentum": ref.Momentum, "nesterov": ref.Nesterov, "adagrad": ref.AdaGrad,
            "rmsprop": ref.RMSprop, "adam": ref.Adam}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, kw", OPTS)
def test_optimizer_update_matches_reference(backend, dtype, name, kw):
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((4, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)}
    rparams = {k: v.astype(np.float64) for k, v in params.items()}
    opt = pfg.make_optimizer(name, lr=0.05, backend=backend, **kw)
    ropt = REF_OPTS[name](lr=0.05, **kw)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        opt.update(params, grads)
        ropt.update(rparams, {k: g.astype(np.float64) for k, g in grads.items()})
    for k in params:
        assert params[k].dtype == dtype
        assert normwise(params[k], rparams[k]) < TOL[dtype] * 10


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("name, kw", OPTS)
def test_fused_steps_match_reference(backend, name, kw, mnist_batch):
    """Same seed -> same numbers: 20 fused steps on cpp/numba vs the numpy backend (float64, 1e-9)."""
    x, t = mnist_batch
    runs = {}
    for b in ("numpy", backend):
        net = pfg.TwoLayerNet(784, 30, 10, seed=0, backend=b, weight_decay=0.01)
        hist = pfg.fit(net, x, t, optimizer=pfg.make_optimizer(name, lr=0.05, **kw), epochs=2, batch_size=10,
                       sampling="random", seed=42, progress=False)
        runs[b] = (net.theta.copy(), np.array(hist.loss))
        assert len(hist.loss) == 20
    assert normwise(runs[backend][0], runs["numpy"][0]) < 1e-9
    assert normwise(runs[backend][1], runs["numpy"][1]) < 1e-9


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_python_step_equals_fused_loop(backend):
    rng = np.random.default_rng(1)
    x, t = rng.random((50, 8)), rng.integers(0, 3, 50)
    a = pfg.MultiLayerNet(8, [6], 3, seed=0, backend=backend)
    b = a.copy()
    opt_a, opt_b = pfg.Adam(lr=0.01), pfg.Adam(lr=0.01)
    idx = np.random.default_rng(5).integers(0, 50, size=(7, 10))
    for rows in idx:
        a.train_step(x[rows], t[rows], opt_a)
    st = opt_b.state(pfg.optimizers.net_layout(b), b.dtype, b.theta.size)
    b._mlp().train_steps(b.theta, np.ascontiguousarray(x), np.eye(3)[t], idx, 0.0, "adam", opt_b.hyper, st[0], st[1], 0)
    assert normwise(a.theta, b.theta) < 1e-12


def test_mnist_accuracy(mnist):
    """TwoLayerNet(784, 100, 10) reaches >= 97% test accuracy on MNIST (a CI-sized run)."""
    (x_train, t_train), (x_test, t_test) = mnist
    net = pfg.TwoLayerNet(784, 100, 10, weight_init_std=0.05, dtype=np.float32, seed=0)
    hist = pfg.fit(net, x_train, t_train, x_test, t_test, optimizer="momentum", lr=0.05, epochs=4,
                   batch_size=100, seed=0, progress=False)
    assert hist.stopped is None
    assert hist.test_acc[-1] >= 0.97, hist
    assert hist.loss[-1] < hist.loss[0]
    assert len(hist.loss) == 4 * 600 and hist.epoch == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_optimizer_state_saved_with_net(tmp_path, name):
    """Resuming from a saved net + optimizer gives exactly the uninterrupted run."""
    rng = np.random.default_rng(0)
    x, t = rng.random((60, 5)), rng.integers(0, 3, 60)
    a = pfg.TwoLayerNet(5, 4, 3, seed=0)
    opt = pfg.make_optimizer(name, lr=0.01)
    pfg.fit(a, x, t, optimizer=opt, epochs=1, batch_size=20, seed=1, progress=False)
    a.save(tmp_path / "ck.npz", optimizer=opt)
    b, opt_b = pfg.load_net(tmp_path / "ck.npz", with_optimizer=True)
    assert type(opt_b) is type(opt) and opt_b.iter == 3 and opt_b.lr == 0.01
    pfg.fit(a, x, t, optimizer=opt, epochs=1, batch_size=20, seed=2, progress=False)
    pfg.fit(b, x, t, optimizer=opt_b, epochs=1, batch_size=20, seed=2, progress=False)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert pfg.load_net(tmp_path / "ck.npz", with_optimizer=True)[1] is not None
    a.save(tmp_path / "plain.npz")
    assert pfg.load_net(tmp_path / "plain.npz", with_optimizer=True)[1] is None


def test_training_bad_input():
    rng = np.random.default_rng(0)
    x, t = rng.random((40, 5)), rng.integers(0, 3, 40)
    net = pfg.TwoLayerNet(5, 4, 3, seed=0)
    with pytest.raises(ValueError, match="lr"):
        pfg.fit(net, x, t, optimizer="sgd", lr=0, progress=False)
    with pytest.raises(ValueError, match="lr"):
        pfg.SGD(lr=-0.1)
    with pytest.raises(ValueError, match="larger than the training set"):
        pfg.fit(net, x, t, batch_size=41, progress=False)
    with pytest.raises(ValueError, match="outside"):
        pfg.fit(net, x, np.full(40, 3), progress=False)
    with pytest.raises(ValueError, match="unknown optimizer"):
        pfg.fit(net, x, t, optimizer="lbfgs", progress=False)
    with pytest.raises(ValueError, match="empty"):
        pfg.fit(net, x[:0], t[:0], progress=False)
    before = net.theta.copy()
    with pytest.raises(ValueError, match="t_test has 9 labels for 10 test samples"):
        pfg.fit(net, x, t, x[:10], t[:9], batch_size=10, progress=False)  # before any training
    assert np.array_equal(net.theta, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_loss_stops_cleanly(backend):
    rng = np.random.default_rng(0)
    x, t = rng.random((40, 5)) * 100, rng.integers(0, 3, 40)
    net = pfg.TwoLayerNet(5, 4, 3, seed=0, weight_init_std=1.0, backend=backend)
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        hist = pfg.fit(net, x, t, optimizer="sgd", lr=1e300, epochs=5, batch_size=10, progress=False)
    assert hist.stopped and "smaller learning rate" in hist.stopped
    assert np.isfinite(net.theta).all()  # the step that blew up was not applied
    with pytest.raises(FloatingPointError):
        net.params["W1"] = np.full((5, 4), 1e300)
        net.train_step(x[:10], t[:10], pfg.SGD(lr=1e300))


def test_history_and_trainer(tmp_path):
    rng = np.random.default_rng(0)
    x, t = rng.random((60, 5)), rng.integers(0, 3, 60)
    tr = pfg.Trainer(pfg.TwoLayerNet(5, 4, 3, seed=0), optimizer="adam", lr=0.01, batch_size=20, progress=False)
    h = tr.fit(x, t, x, t, epochs=2)
    h = tr.fit(x, t, epochs=1)
    assert h.epoch == [1, 2, 3] and len(h.loss) == 9 and len(h.train_acc) == 3
    assert "History(iterations=9" in repr(h)
    pytest.importorskip("matplotlib")
    h.plot(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_train_eval_subset_full_and_off():
    """fit's training accuracy is of a fixed random subset of train_eval samples (drawn once from the
    seed), of all samples for None or train_eval >= N, and not measured for 0; the test set is whole."""
    rng = np.random.default_rng(0)
    x = rng.random((600, 12))
    t = (x[:, :4].sum(axis=1) > x[:, 4:8].sum(axis=1)).astype(int)
    xt, tt = x[:100], t[:100]
    out = {}
    for te in (200, None, 600, 5000, 0):
        net = pfg.TwoLayerNet(12, 8, 2, seed=1)
        accs = []

        def record(ep, hist, net=net, accs=accs):
            accs.append((net.accuracy(x, t), net.accuracy(xt, tt)))

        h = pfg.fit(net, x, t, xt, tt, epochs=2, batch_size=20, seed=3, progress=False, train_eval=te,
                    callback=record)
        out[te] = (h, accs)
    h, accs = out[200]
    keep = np.sort(np.random.default_rng(3).choice(600, 200, replace=False))
    assert h.train_eval == 200 and len(h.train_acc) == 2
    net = pfg.TwoLayerNet(12, 8, 2, seed=1)
    pfg.fit(net, x, t, epochs=2, batch_size=20, seed=3, progress=False, train_eval=200)
    assert h.train_acc[-1] == net.accuracy(x[keep], t[keep])
    for te in (None, 600, 5000):
        h, accs = out[te]
        assert h.train_eval == 600 and h.train_acc == [a for a, _ in accs]
        assert h.test_acc == [b for _, b in accs]
    h, accs = out[0]
    assert h.train_eval == 0 and h.train_acc == [] and h.test_acc == [b for _, b in accs]
    with pytest.raises(ValueError, match="train_eval"):
        pfg.fit(pfg.TwoLayerNet(12, 8, 2), x, t, epochs=1, progress=False, train_eval=-1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("density", [0.15, 0.9])  # the CSR copy (checked there) and the dense input
def test_fit_refuses_non_finite_x_train(backend, bad, density):
    rng = np.random.default_rng(3)
    x = (rng.random((300, 20)) * (rng.random((300, 20)) < density)).astype(np.float32)
    x[217, 5] = bad
    t = rng.integers(0, 3, 300)
    net = pfg.Net([20, 8, 3], dtype=np.float32, seed=0, backend=backend)
    before = net.theta.copy()
    with pytest.raises(ValueError, match="x_train contains NaN or Inf"):
        pfg.fit(net, x, t, epochs=1, batch_size=50, progress=False)
    np.testing.assert_array_equal(net.theta, before)
