"""Issue 15's cases: fork safety, no silent wrong answers, nothing lost on save or Ctrl-C, bounded
loads, clear errors for unaligned arrays. Each case failed (hung, crashed or answered wrongly) before
the fix. Process tests have timeouts, so a hang fails instead of blocking CI."""
from __future__ import annotations

import concurrent.futures
import gzip
import json
import multiprocessing
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad.datasets import read_idx

from _helpers import BACKENDS, FAST_BACKENDS

CPP = "cpp" in BACKENDS
TIMEOUT = 120  # seconds for a child process; a hang fails the test instead of blocking CI
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ 1. fork safety
def _sparse_data(seed=0, n=200, d=256):
    """MNIST-like inputs (80 % zeros): the sparse, OpenMP-threaded kernel paths run on them."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)) * (rng.random((n, d)) < 0.2)
    return x, rng.integers(0, 10, n)


def _entry_points(backend: str) -> dict:
    """Every kernel family once, sized so the C++ kernels open OpenMP regions: backprop on sparse
    input, the net-aware numerical gradient, gradient_check (kink counts), fit (CSR training loop),
    softmax, the callback numerical gradient. Returns the results (float64 arrays)."""
    x, t = _sparse_data()
    with pfg.use_backend(backend):
        net = pfg.Net([256, 64, 10], weight_init="he", seed=1)
        out = {"gradient": net.gradient(x[:100], t[:100])["W1"],
               "numgrad": pfg.Net([64, 32, 10], weight_init="he", seed=2)
               .numerical_gradient(x[:64, :64], t[:64])["W1"],
               "softmax": pfg.softmax(x[:50]),
               "callback": pfg.numerical_gradient(lambda v: float(np.sum(v ** 3)), x[0, :20].copy())}
        check = pfg.gradient_check(pfg.Net([64, 32, 10], weight_init="he", seed=2), x[:64, :64], t[:64])
        out["gradient_check"] = np.array([check.passed, sum(k.flat_index.size for k in check.kinks.values())], float)
        pfg.fit(net, x, t, optimizer="adam", epochs=1, batch_size=20, progress=False)
        out["fit"] = net.theta.copy()
    return out


def _entry_points_list(backend: str) -> dict:
    return {k: v.tolist() for k, v in _entry_points(backend).items()}


def _child_main(backend, queue):
    try:
        queue.put(("ok", _entry_points_list(backend)))
    except BaseException as exc:  # report, do not hang the parent
        queue.put(("error", repr(exc)))


def _check_same(parent: dict, child: dict) -> None:
    for k, v in parent.items():
        c = np.asarray(child[k])
        # the child may run on fewer threads: the same numbers up to summation order
        assert np.allclose(c, v, rtol=1e-9, atol=1e-12), k


@pytest.fixture(scope="module")
def parent_results():
    """The parent runs every entry point first, so its OpenMP (and numba) thread pools exist when
    it forks: the situation that hung (cpp) or killed (numba) the child."""
    return {b: _entry_points(b) for b in FAST_BACKENDS}


FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_child_process_runs_every_entry_point(parent_results, method, backend):
    if method != "fork" and backend == "numba":
        pytest.skip("fresh interpreters: the cpp case covers the start method; numba's is the fork case")
    ctx = multiprocessing.get_context(method)
    queue = ctx.Queue()
    p = ctx.Process(target=_child_main, args=(backend, queue))
    p.start()
    try:
        status, result = queue.get(timeout=TIMEOUT)
    except Exception:
        p.kill()
        pytest.fail(f"child ({method}, {backend}) hung or died: exit code {p.exitcode}")
    finally:
        p.join(TIMEOUT)
    assert status == "ok", result
    assert p.exitcode == 0
    _check_same(parent_results[backend], result)


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.skipif(not CPP, reason="needs the C++ extension")
def test_pool_and_executor_with_fork(parent_results):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(_entry_points_list, ("cpp",)) for _ in range(2)]
        for r in results:
            _check_same(parent_results["cpp"], r.get(timeout=TIMEOUT))
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        for fu in [ex.submit(_entry_points_list, "cpp") for _ in range(2)]:
            _check_same(parent_results["cpp"], fu.result(timeout=TIMEOUT))


def _threads_in_child(queue):
    queue.put((pfg.set_num_threads(2), pfg.get_num_threads()))


@pytest.mark.filterwarnings(FORK_WARNING)
@pytest.mark.skipif(not CPP, reason="needs the C++ extension")
def test_forked_child_keeps_openmp_at_one_thread(parent_results):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=_threads_in_child, args=(queue,))
    p.start()
    set_result, got = queue.get(timeout=TIMEOUT)
    p.join(TIMEOUT)
    assert got["openmp"] == 1 and set_result["openmp"] == 1  # more would wait on the parent's lost pool
    assert got["blas"] == 2  # OpenBLAS re-creates its threads after fork


# ------------------------------------------------------------------------------ 2. no silent garbage
@pytest.mark.parametrize("backend", BACKENDS)
def test_numgrad_large_step_times_activation_is_finite(backend):
    # p_j = 1 to the last bit: the series form divided by 1 - p_j = 0 and gave inf
    net = pfg.Net([1, 2], weight_init=0.5, seed=0, backend=backend)
    g = net.numerical_gradient([[3743.1]], [1], h=0.01)["W1"]
    assert np.allclose(g, [[3743.1, -3743.1]], rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_numgrad_large_shifts_hidden_layers_match_reference(backend):
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(5, 4)) * 500.0, rng.integers(0, 3, 5)
    for act in ("relu", "sigmoid", "tanh"):
        net = pfg.Net([4, 6, 5, 3], activation=act, weight_init=1.0, seed=4, backend=backend)
        with np.errstate(over="ignore"):  # (the numpy backend is the reference)
            g = np.concatenate([v.ravel() for v in net.numerical_gradient(x, t, h=0.01).values()])
        with pfg.use_backend("numpy"), np.errstate(over="ignore"):  # the reference's exp(-z) overflows
            ref_net = pfg.Net([4, 6, 5, 3], activation=act, weight_init=1.0, seed=4)
            ref = np.concatenate([v.ravel() for v in ref_net.numerical_gradient(x, t, h=0.01).values()])
            size = np.abs(ref_net.predict(x)).max()
        assert np.isfinite(g).all(), act
        # the reference loop rounds each loss to ~eps * |logits| before dividing by 2h
        assert np.abs(g - ref).max() <= 1e-9 * np.abs(ref).max() + 64 * 2.2e-16 * size / 0.01, act


@pytest.mark.parametrize("backend", BACKENDS)
def test_accuracy_reads_a_label_column_as_labels(backend):
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(40, 5)), rng.integers(0, 3, 40)
    net = pfg.Net([5, 8, 3], seed=0, backend=backend)
    expect = float(np.mean(net.predict(x).argmax(axis=1) == t))
    assert 0 < expect < 1
    assert net.accuracy(x, t.reshape(-1, 1)) == expect  # was the accuracy of "every label is 0"
    assert net.accuracy(x, np.eye(3)[t]) == expect
    with pytest.raises(ValueError, match=r"labels outside \[0, 2\]"):
        net.accuracy(x, np.where(t == 2, 7, t))
    with pytest.raises(ValueError, match="labels outside"):
        net.accuracy(x, -np.ones(40, dtype=int))
    with pytest.raises(ValueError, match="non-integer"):
        net.accuracy(x, t + 0.5)


def test_fit_train_acc_with_a_label_column():
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    a, b = (pfg.Net([5, 8, 3], seed=0) for _ in range(2))
    h1 = pfg.fit(a, x, t, x, t, epochs=2, batch_size=10, progress=False)
    h2 = pfg.fit(b, x, t.reshape(-1, 1), x, t.reshape(-1, 1), epochs=2, batch_size=10, progress=False)
    assert h1.train_acc == h2.train_acc and h1.test_acc == h2.test_acc
    with pytest.raises(ValueError, match="t_test has labels outside"):
        pfg.fit(a, x, t, x, t + 5, epochs=1, batch_size=10, progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_output_integer_targets_are_values(backend):
    assert pfg.mean_squared_error([[0.0]], [0], backend=backend) == 0.0  # was 0.5 (class 0 -> [1])
    assert pfg.mean_squared_error([[2.0], [1.0]], [3, 1], backend=backend) == pytest.approx(0.25)
    net = pfg.Net([2, 1], loss="mse", seed=0, backend=backend)
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    assert net.loss(x, [2, 5]) == pytest.approx(net.loss(x, [[2.0], [5.0]]), rel=1e-12)
    y = net.predict(x)[:, 0]
    assert net.loss(x, [2, 5]) == pytest.approx(0.5 * np.sum((y - [2, 5]) ** 2) / 2, rel=1e-12)


@pytest.mark.parametrize("make", [lambda: pfg.Adam(beta1=1), lambda: pfg.Adam(beta2=1.5),
                                  lambda: pfg.Momentum(momentum=float("nan")), lambda: pfg.SGD(lr=0),
                                  lambda: pfg.RMSprop(decay_rate=-0.1), lambda: pfg.AdaGrad(eps=0)],
                         ids=["adam-beta1", "adam-beta2", "momentum-nan", "sgd-lr0", "rmsprop", "adagrad-eps"])
def test_bad_hyper_parameters_raise_at_construction(make):
    with pytest.raises(ValueError):
        make()


def test_bad_hyper_parameters_raise_on_load_state_dict():
    opt = pfg.Adam(lr=0.01)
    state = opt.state_dict()
    state["beta1"] = np.array(1.0)
    with pytest.raises(ValueError, match="beta1"):
        opt.load_state_dict(state)
    assert opt.beta1 == 0.9  # unchanged


@pytest.mark.parametrize("backend", BACKENDS)
def test_diverging_fit_keeps_the_last_finite_parameters(backend):
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(100, 4)) * 10, rng.integers(0, 3, 100)
    net = pfg.Net([4, 16, 3], weight_init="he", seed=0, backend=backend)
    opt = pfg.SGD(lr=1e155)  # the first updates overflow the weights while the losses are still finite
    with pytest.warns(RuntimeWarning, match="non-finite"), np.errstate(all="ignore"):  # (numpy's overflows)
        hist = pfg.fit(net, x, t, optimizer=opt, epochs=3, batch_size=10, progress=False)
    assert hist.stopped and "last finite step" in hist.stopped
    assert np.isfinite(net.theta).all()  # was inf/NaN while the message said "kept"
    assert opt.iter == len(hist.loss) and np.isfinite(hist.loss).all()
    assert 0 < len(hist.loss) < 10  # stopped inside the first epoch
    # those are the parameters after exactly len(hist.loss) steps: replay them
    net2 = pfg.Net([4, 16, 3], weight_init="he", seed=0, backend=backend)
    with np.errstate(all="ignore"):
        pfg.fit(net2, x, t, optimizer=pfg.SGD(lr=1e155), epochs=1, batch_size=10, progress=False,
                iters_per_epoch=len(hist.loss))
    assert np.array_equal(net.theta, net2.theta)


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed"])
def test_plain_dict_update_changes_the_callers_arrays(layout):
    base = np.arange(1.0, 13.0).reshape(3, 4)
    W = {"fortran": np.asfortranarray(base.copy()), "strided": np.zeros((6, 8))[::2, ::2],
         "reversed": base.copy()[::-1]}[layout]
    W[...] = base
    params = {"W": W, "b": np.ones(4)}
    g = {"W": np.full((3, 4), 2.0), "b": np.full(4, 1.0)}
    opt = pfg.SGD(lr=0.5)
    opt.update(params, g)
    opt.update(params, g)
    assert params["W"] is W  # the same array, updated in place twice
    assert np.array_equal(W, base - 2.0) and np.array_equal(params["b"], np.zeros(4))


def test_plain_dict_update_refuses_read_only_arrays():
    W = np.ones((2, 2))
    W.flags.writeable = False
    b = np.ones(2)
    params = {"W": W, "b": b}
    with pytest.raises(ValueError, match=r"params\['W'\] is read-only"):
        pfg.SGD(lr=0.1).update(params, {"W": np.ones((2, 2)), "b": np.ones(2)})
    assert params["W"] is W and np.array_equal(b, np.ones(2))  # nothing replaced, nothing updated


def test_rebinding_params_keeps_the_net_attached():
    net = pfg.TwoLayerNet(3, 4, 2, seed=0)
    new = {k: np.full(v.shape, 0.5) for k, v in net.params.items()}
    net.params = new
    assert np.all(net.theta == 0.5)  # the net trains what params shows
    net.params["W1"] -= 0.25
    assert np.all(net.params["W1"] == 0.25) and np.all(net.theta[:12] == 0.25)
    with pytest.raises(ValueError, match="keys"):
        net.params = {"W1": new["W1"]}
    with pytest.raises(ValueError, match=r"params\['b1'\] must have shape"):
        net.params = {**new, "b1": np.zeros(5)}
    assert np.all(net.params["b1"] == 0.5)  # a refused rebinding changes nothing


@pytest.mark.skipif(not CPP, reason="the C++ binding's own check")
def test_out_may_sit_right_after_a_reversed_x():
    from pyfastgrad._backends.cpp import _core
    buf = np.zeros(30)
    x = buf[10:20][::-1]  # data pointer at buf[19], elements buf[10..19]
    x[...] = np.arange(10.0)
    out = buf[20:30]  # just past x: no overlap, but x.data + nbytes reaches into it
    _core.numerical_gradient_callback(lambda v: float(np.sum(v ** 2)), x, 1e-4, False, out)
    assert np.allclose(out, 2 * np.arange(10.0))
    with pytest.raises(ValueError, match="share memory"):
        _core.numerical_gradient_callback(lambda v: 0.0, x, 1e-4, False, buf[5:15])


@pytest.mark.parametrize("kwargs, match", [
    (dict(chunk=-1), "chunk must be >= 1"), (dict(chunk=0), "chunk must be >= 1"),
    (dict(iters_per_epoch=0), "iters_per_epoch must be >= 1"), (dict(epochs=2.5), "epochs must be an integer"),
    (dict(x_test=np.zeros((2, 3))), "give both x_test and t_test"),
    (dict(t_test=np.zeros(2, dtype=int)), "give both x_test and t_test")])
def test_fit_arguments_are_not_silently_ignored(kwargs, match):
    x, t = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 2
    with pytest.raises((ValueError, TypeError), match=match):
        pfg.fit(pfg.Net([3, 2]), x, t, batch_size=5, progress=False, **kwargs)


def _unaligned(a: np.ndarray) -> np.ndarray:
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    out = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_unaligned_arrays_give_the_same_answers(backend):
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(6, 4)), rng.integers(0, 3, 6)
    xu = _unaligned(x)
    net = pfg.Net([4, 5, 3], seed=0, backend=backend)
    assert np.array_equal(net.gradient(xu, t)["W1"], net.gradient(x, t)["W1"])
    assert np.array_equal(net.numerical_gradient(xu, t)["W1"], net.numerical_gradient(x, t)["W1"])
    assert np.array_equal(pfg.softmax(xu, backend=backend), pfg.softmax(x, backend=backend))
    with pfg.use_backend(backend):
        f = lambda v: float(np.sum(v ** 2))  # noqa: E731
        assert np.allclose(pfg.numerical_gradient(f, xu), 2 * x)
    assert np.array_equal(xu, x)  # input untouched


@pytest.mark.skipif(not CPP, reason="the C++ binding's own check")
def test_unaligned_arrays_are_a_clear_error_in_the_extension():
    from pyfastgrad._backends.cpp import _core
    sizes = [4, 3]
    theta, x, t = np.zeros(15), _unaligned(np.ones((2, 4))), np.eye(3)[:2].copy()
    with pytest.raises(ValueError, match="x is not aligned"):
        _core.mlp_numerical_gradient(sizes, "relu", "softmax", theta, x, t, 0.0, 1e-4, np.zeros(15))
    with pytest.raises(ValueError, match="x is not aligned"):
        _core.mlp_kink_counts(sizes, "relu", "softmax", theta, x, t, 1e-4, np.zeros(15, np.int64),
                              np.zeros(15, np.int64))


def test_softmax_extremes_match_the_reference():  # exp_fast's shift is defined (UBSan) at any input
    x = np.array([[-1e4, -800.0, -100.0, 0.0, 100.0, 700.0, 800.0, 1e4]])
    for backend in BACKENDS:
        assert np.allclose(pfg.softmax(x, backend=backend), pfg.reference.softmax(x), atol=1e-300)
        net = pfg.Net([8, 8], activation="sigmoid", weight_init=1.0, seed=0, backend=backend)
        net.theta[:64] = np.eye(8).ravel()  # W1 = I: the logits are x
        assert np.allclose(net.predict(x), x) and np.isfinite(net.loss(x, [3])), backend


# ------------------------------------------------------------------------------ 3. nothing lost
@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "ctrl-c"])
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "net.npz"
    good = pfg.Net([50, 40, 10], seed=0)
    good.save(path)
    real = np.lib.format.write_array

    def half_then_fail(fp, array, *a, **kw):
        fp.write(b"\0" * 1000)  # part of the data is on disk when it fails
        raise failure

    monkeypatch.setattr(np.lib.format, "write_array", half_then_fail)
    with pytest.raises(type(failure)):
        pfg.Net([50, 40, 10], seed=1).save(path)
    monkeypatch.setattr(np.lib.format, "write_array", real)
    assert np.array_equal(pfg.load_net(path).theta, good.theta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]  # no temporary file left


def test_sigkill_during_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "net.npz"
    good = pfg.Net([50, 40, 10], seed=0)
    good.save(path)
    code = textwrap.dedent(f"""
        import sys, time, numpy as np, pyfastgrad as pfg
        def stall(fp, array, *a, **kw):
            fp.write(b"\\0" * 1000)
            fp.flush()
            print("writing", flush=True)
            time.sleep(600)
        np.lib.format.write_array = stall
        pfg.Net([50, 40, 10], seed=1).save({str(path)!r})
    """)
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout.readline().strip() == "writing"
        finally:
            p.kill()
            p.wait(TIMEOUT)
    assert np.array_equal(pfg.load_net(path).theta, good.theta)


def test_save_appends_npz_and_round_trips(tmp_path):
    net = pfg.Net([3, 4, 2], seed=0)
    opt = pfg.Adam()
    net.train_step(np.ones((2, 3)), [0, 1], opt)
    net.save(tmp_path / "ck", optimizer=opt)
    back, opt2 = pfg.load_net(tmp_path / "ck.npz", with_optimizer=True)
    assert np.array_equal(back.theta, net.theta) and opt2.iter == 1


def test_cli_checks_the_save_directory_before_training(tmp_path, capsys):
    from pyfastgrad.__main__ import main
    rc = main(["train", "--save", str(tmp_path / "missing" / "x.npz"), "--epochs", "1", "--no-progress"],
              prog="pyfastgrad")
    err = capsys.readouterr().err
    assert rc == 1 and "does not exist" in err and "epoch" not in err


class _InterruptingSGD(pfg.SGD):
    """Sends itself Ctrl-C when fit asks for the learning rates of its third kernel call."""

    calls = 0

    def lrs(self, n):
        type(self).calls += 1
        if type(self).calls == 3:
            signal.raise_signal(signal.SIGINT)
        return super().lrs(n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_in_fit_leaves_a_consistent_net_and_the_history(backend):
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(500, 6)), rng.integers(0, 3, 500)
    net = pfg.Net([6, 8, 3], seed=0, backend=backend)
    _InterruptingSGD.calls = 0
    opt = _InterruptingSGD(lr=0.1)
    with pytest.raises(KeyboardInterrupt) as info:
        pfg.fit(net, x, t, optimizer=opt, epochs=5, batch_size=10, chunk=10, progress=False)
    hist = info.value.history
    assert "interrupted" in hist.stopped
    assert opt.iter == len(hist.loss) == 30  # the interrupted call was finished and counted
    ref = pfg.Net([6, 8, 3], seed=0, backend=backend)
    pfg.fit(ref, x, t, optimizer=pfg.SGD(lr=0.1), epochs=1, batch_size=10, chunk=10, iters_per_epoch=30,
            progress=False)
    assert np.array_equal(net.theta, ref.theta)  # the weights are those of exactly opt.iter steps
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_ctrl_c_in_trainer_keeps_the_steps_in_its_history():
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(500, 6)), rng.integers(0, 3, 500)
    _InterruptingSGD.calls = 0
    trainer = pfg.Trainer(pfg.Net([6, 8, 3], seed=0), optimizer=_InterruptingSGD(lr=0.1), batch_size=10,
                          progress=False)
    trainer.fit(x, t, epochs=1)  # one kernel call of 50 steps per epoch
    with pytest.raises(KeyboardInterrupt) as info:
        trainer.fit(x, t, epochs=3)  # Ctrl-C in the third call: raised once that epoch is done
    assert info.value.history is trainer.history
    assert len(trainer.history.loss) == trainer.optimizer.iter == 150
    assert trainer.history.epoch == [1, 2, 3] and len(trainer.history.train_acc) == 3


def _run_and_interrupt(code: str, after: float = 1.0) -> dict:
    """Run ``code`` in a child whose ``arm()`` sends it SIGINT ``after`` s later; it prints one JSON line."""
    prelude = textwrap.dedent(f"""
        import json, os, signal, threading, numpy as np, pyfastgrad as pfg
        def arm():
            threading.Timer({after}, os.kill, (os.getpid(), signal.SIGINT)).start()
    """)
    r = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=TIMEOUT, cwd=ROOT / "tests")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not CPP, reason="the C++ kernel's signal check")
def test_ctrl_c_stops_a_long_cpp_numerical_gradient():
    # minutes of work uninterrupted (the process timeout fails the test); the kernel stops within ~50 ms
    # of Ctrl-C and raises from inside, leaving its output untouched (it used to finish first)
    out = _run_and_interrupt("""
        rng = np.random.default_rng(0)
        N = 4000
        x = rng.random((N, 784)) * (rng.random((N, 784)) < 0.2)
        t = np.eye(10)[rng.integers(0, 10, N)]
        net = pfg.Net([784, 300, 100, 10], activation="sigmoid", seed=0, backend="cpp")
        grad = np.full(net.n_params, np.nan)
        arm()
        try:
            net._mlp().numerical_gradient(net.theta, x, t, 0.0, 1e-4, grad)
            print(json.dumps({"interrupted": False}))
        except KeyboardInterrupt:
            print(json.dumps({"interrupted": True, "untouched": bool(np.isnan(grad).all())}))
    """)
    assert out == {"interrupted": True, "untouched": True}


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_real_ctrl_c_in_fit_with_adam(backend):
    # numba raised SystemError ("returned a result with an exception set") here
    out = _run_and_interrupt(f"""
        rng = np.random.default_rng(0)
        x, t = rng.normal(size=(2000, 20)), rng.integers(0, 5, 2000)
        net = pfg.Net([20, 64, 5], seed=0, backend={backend!r})
        opt = pfg.Adam()
        arm()
        try:
            pfg.fit(net, x, t, optimizer=opt, epochs=100000, batch_size=20, progress=False)
            print(json.dumps({{"raised": None}}))
        except KeyboardInterrupt as exc:
            h = exc.history
            print(json.dumps({{"raised": "KeyboardInterrupt", "iter": opt.iter, "n": len(h.loss),
                              "finite": bool(np.isfinite(net.theta).all())}}))
    """, after=1.5)
    assert out["raised"] == "KeyboardInterrupt" and out["iter"] == out["n"] > 0 and out["finite"]


# ------------------------------------------------------------------------------ 4. bounded loads
def _peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2 ** 20


def test_load_net_checks_sizes_before_building(tmp_path):
    cfg = dict(cfg_activation="relu", cfg_loss="softmax", cfg_weight_decay=0.0, cfg_dtype="float64",
               cfg_cls="Net")
    bad = tmp_path / "bad.npz"
    np.savez(bad, theta=np.zeros(10), cfg_sizes=np.array([4000, 4000, 10]), **cfg)
    assert bad.stat().st_size < 5000

    def load():
        with pytest.raises(ValueError, match=r"need 16,?04\d,?\d+ parameters, theta has shape \(10,\)"):
            pfg.load_net(bad)

    assert _peak_mib(load) < 8  # was a 128 MB net built first
    np.savez(bad, theta=np.zeros(10), cfg_sizes=np.array([20000, 20000, 10]), **cfg)
    with pytest.raises(ValueError, match="parameters"):
        pfg.load_net(bad)
    np.savez(bad, theta=np.zeros(10), cfg_sizes=np.array([2 ** 40, 2]), **cfg)
    with pytest.raises(ValueError, match="more than load_net builds"):
        pfg.load_net(bad)
    np.savez(bad, theta=np.zeros(10), cfg_sizes=np.array([3.0, 2.0]), **cfg)
    with pytest.raises(ValueError, match="cfg_sizes must be"):
        pfg.load_net(bad)


def test_load_net_checks_the_declared_array_against_the_archive(tmp_path):
    good = tmp_path / "net.npz"
    pfg.Net([300, 400, 10], seed=0).save(good)  # 124,410 parameters
    raw = bytearray(good.read_bytes())
    # rewrite theta's .npy header (in place, same length) to declare 8 times the data the archive holds
    i = raw.index(b"'shape': (124410,)")
    raw[i:i + 18] = b"'shape': (999999,)"
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="theta"):
        pfg.load_net(bad)


def _idx(dims, payload: bytes) -> bytes:
    magic = 0x803 if len(dims) == 3 else 0x801
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def test_gzip_idx_declaring_more_than_it_can_hold(tmp_path):
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(_idx((100000, 28, 28), bytes(20 * 2 ** 20))))  # 20 MiB of zeros in ~20 KB
    assert f.stat().st_size < 100_000

    def read():
        with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*cannot hold"):
            read_idx(f)

    assert _peak_mib(read) < 4  # was the whole 20 MiB decompressed before the length check


def test_raw_idx_truncated_and_capped(tmp_path):
    f = tmp_path / "t10k-labels-idx1-ubyte"
    f.write_bytes(_idx((60000,), bytes(10)))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: truncated"):
        read_idx(f)
    f.write_bytes(_idx((2 ** 31, 2 ** 31, 2 ** 31), b""))  # 2^93 bytes declared
    with pytest.raises(ValueError, match="may hold"):
        read_idx(f)


def test_bounded_reader_helper(tmp_path):
    from pyfastgrad.datasets._io import BoundedFile, read_bounded
    f = tmp_path / "x.bin.gz"
    f.write_bytes(gzip.compress(b"abcdef"))
    assert read_bounded(f, 6) == b"abcdef"
    with pytest.raises(ValueError, match="trailing"):
        read_bounded(f, 5)
    with pytest.raises(ValueError, match="truncated"):
        read_bounded(f, 7)
    with BoundedFile(f, cap=4) as b:
        with pytest.raises(ValueError, match="may hold"):
            b.read_exact(6, "payload")

