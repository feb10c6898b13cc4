"""Hyper-parameter search: the space, the split, reproducible trials on a local pool, a thread pool and a
Dask LocalCluster, worker deaths and timeouts, outputs and the command line."""
import concurrent.futures as cf
import io
import json
import logging
import math
import os
import socket
import time
import warnings

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import search as S
from pyfastgrad.search import Choice, LogUniform, Uniform, hyperparameter_search, split_validation

from _helpers import mnist_dir

SPACE = {"lr": LogUniform(0.02, 0.5), "weight_decay": LogUniform(1e-8, 1e-3), "hidden": [(16,), (24,)],
         "batch_size": [32, 64]}
KW = dict(epochs=2, seed=3, progress=False, trial_timeout=120)


@pytest.fixture(scope="module")
def small():
    """1,200 training images (MNIST when present, else the embedded digits): a few ms per trial."""
    d = mnist_dir()
    if d is not None:
        from pyfastgrad.datasets import load_mnist
        (x, t), _ = load_mnist(d, normalize=True)
    else:
        (x, t), _ = pfg.datasets.load_digits_embedded(n_train=1200, n_test=10)
    return x[:1200].copy(), t[:1200].copy()


@pytest.fixture(scope="module")
def tpool():
    """A thread pool for the searches that must fail before any trial runs."""
    with cf.ThreadPoolExecutor(1) as ex:
        yield ex


# --------------------------------------------------------------------------- trial functions the workers run
# (module level, so that spawned pool workers and Dask workers import them from this file)
KILL_ALWAYS = 1  # trial number that kills its worker process every time it runs
KILL_ONCE = 4  # trial number that kills its worker the first time only (a marker file remembers)


def killer_trial(data, trial):
    marker = os.path.join(os.environ["PFG_TEST_MARKERS"], f"killed-{trial.number}")
    if trial.number == KILL_ALWAYS or (trial.number == KILL_ONCE and not os.path.exists(marker)):
        open(marker, "w").close()
        os._exit(3)  # the worker process dies mid-trial, without a Python exception
    return S.train_trial(data, trial)


def slow_trial(data, trial):
    if trial.number == 2:
        time.sleep(600)  # stopped by the search's trial_timeout long before this
    r = S.train_trial(data, trial)
    r.message = json.dumps(pfg.get_num_threads())  # what this trial's worker process ran with
    return r


def failing_trial(data, trial):
    if trial.number == 0:
        raise ArithmeticError("bad trial")
    return S.train_trial(data, trial)


# --------------------------------------------------------------------------- space and split
def test_loguniform_draws_are_log_uniform():
    rng = np.random.default_rng(0)
    d = LogUniform(1e-6, 1e-2)
    v = np.array([d.sample(rng) for _ in range(4000)])
    assert v.min() >= 1e-6 and v.max() <= 1e-2
    # half the draws below the geometric mean 1e-4, a quarter per decade
    assert abs(np.mean(v < 1e-4) - 0.5) < 0.03
    assert abs(np.mean(v < 1e-5) - 0.25) < 0.03
    assert d.grid(3) == pytest.approx([1e-6, 1e-4, 1e-2])
    assert Uniform(0.0, 1.0).grid(3) == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("make, match", [
    (lambda: LogUniform(1e-3, 1e-3), "empty range"),
    (lambda: LogUniform(1e-1, 1e-3), "inverted"),
    (lambda: Uniform(2.0, 1.0), "inverted"),
    (lambda: LogUniform(0.0, 1.0), "low > 0"),
    (lambda: LogUniform(1e-3, float("inf")), "finite"),
    (lambda: Choice([]), "empty"),
    (lambda: Choice([100, 100]), "twice"),
])
def test_bad_dimensions(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("space, match", [
    ({"optimizer": ["sgd", "lion"]}, "unknown optimizer 'lion'"),
    ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ({"learning_rate": LogUniform(1e-3, 1e-1)}, "unknown search-space key"),
    ({"hidden": LogUniform(10, 100)}, "only 'lr' and 'weight_decay'"),
    ({"hidden": [(100, 0)]}, "positive ints"),
    ({"batch_size": [0, 32]}, "positive ints"),
    ({"lr": Uniform(-0.1, 0.1)}, "learning rates <= 0"),
    ({"lr": -0.1}, "> 0"),
    ({"weight_decay": Uniform(-1.0, 1.0)}, "negative weight decay"),
    ({"batch_size": [64, 5000]}, r"batch size\(s\) \[5000\] exceed"),
])
def test_bad_space_is_an_error_before_any_trial(small, tpool, space, match):
    x, t = small
    with pytest.raises(ValueError, match=match):
        hyperparameter_search(x, t, space, n_trials=2, executor=tpool, **KW)


def test_bad_arguments(small, tpool):
    x, t = small
    with pytest.raises(ValueError, match="method"):
        hyperparameter_search(x, t, method="bayes", **KW)
    with pytest.raises(ValueError, match="n_trials"):
        hyperparameter_search(x, t, n_trials=0, **KW)
    with pytest.raises(ValueError, match="val_fraction"):
        hyperparameter_search(x, t, val_fraction=1.0, executor=tpool, **KW)
    with pytest.raises(ValueError, match="labels"):
        hyperparameter_search(x, t * 0.5, executor=tpool, **KW)
    with pytest.raises(ValueError, match="labels"):
        hyperparameter_search(x, t[:, None], executor=tpool, **KW)
    xn = x.copy()
    xn[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hyperparameter_search(xn, t, executor=tpool, **KW)
    with pytest.raises(TypeError, match="Executor"):
        hyperparameter_search(x, t, executor=object(), **KW)
    with pytest.raises(ValueError, match="not both"):
        hyperparameter_search(x, t, executor=tpool, scheduler="tcp://127.0.0.1:1", **KW)


def test_split_validation_holds_out_a_shuffled_part_and_keeps_the_input():
    x = np.arange(50, dtype=np.float64).reshape(25, 2)
    t = np.arange(25)
    x0, t0 = x.copy(), t.copy()
    (xf, tf), (xv, tv) = split_validation(x, t, 0.2, seed=1)
    assert len(tv) == 5 and len(tf) == 20
    assert sorted(np.concatenate([tf, tv]).tolist()) == list(range(25))  # a partition
    assert np.array_equal(xv[:, 0], 2 * tv) and np.array_equal(xf[:, 0], 2 * tf)  # rows stay paired
    assert not np.array_equal(tv, np.arange(5))  # shuffled, not the first rows
    (_, _), (_, tv2) = split_validation(x, t, 0.2, seed=1)
    assert np.array_equal(tv, tv2)
    assert np.array_equal(x, x0) and np.array_equal(t, t0)
    with pytest.raises(ValueError, match="labels for"):
        split_validation(x, t[:3])
    with pytest.raises(ValueError, match="leaves"):
        split_validation(x[:2], t[:2], 0.1)


# --------------------------------------------------------------------------- trials
def test_random_trials_are_drawn_per_seed_and_equal_a_direct_fit(small):
    x, t = small
    x0 = x.copy()
    with cf.ThreadPoolExecutor(2) as ex:
        res = hyperparameter_search(x, t, SPACE, n_trials=5, executor=ex, **KW)
    assert np.array_equal(x, x0)  # the caller's data is not modified
    assert len(res.trials) == 5 and all(r.status == "ok" for r in res.trials)
    accs = [r.val_acc for r in res.trials]
    assert accs == sorted(accs, reverse=True)  # best first
    assert res.best is res.trials[0]
    by = res.by_number
    assert len({r.seed for r in by}) == 5
    for r in by:
        assert 0.02 <= r.params["lr"] <= 0.5 and 1e-8 <= r.params["weight_decay"] <= 1e-3
        assert r.params["hidden"] in ((16,), (24,)) and r.params["batch_size"] in (32, 64)
        assert r.params["optimizer"] == "sgd" and len(r.val_curve) == 2 and r.data_loads == 1
    assert res.settings["n_fit"] == 960 and res.settings["n_val"] == 240

    # one trial by hand: the same split, net and fit give exactly the search's numbers
    (xf, tf), (xv, tv) = split_validation(x, t, 0.2, seed=3)
    r = by[2]
    p = r.params
    net = pfg.MultiLayerNet(784, list(p["hidden"]), 10, weight_decay=p["weight_decay"], dtype=np.float32,
                            seed=r.seed)
    hist = pfg.fit(net, xf.astype(np.float32), tf, xv.astype(np.float32), tv, optimizer="sgd", lr=p["lr"],
                   epochs=2, batch_size=p["batch_size"], seed=r.seed, progress=False)
    assert hist.test_acc == r.val_curve and hist.train_acc == r.train_curve
    assert res.best.val_acc > 0.6  # the best trial trained (chance is 0.1)

    # the same seed draws the same trials; trial i does not depend on n_trials
    with cf.ThreadPoolExecutor(1) as ex:
        again = hyperparameter_search(x, t, SPACE, n_trials=3, executor=ex, **KW)
    for a, b in zip(again.by_number, by[:3]):
        assert a.same_outcome(b)


def test_grid_search_compares_optimizers_side_by_side(small):
    x, t = small
    space = {"lr": LogUniform(0.01, 0.1), "optimizer": ["sgd", "momentum"], "hidden": (16,)}
    with cf.ThreadPoolExecutor(2) as ex:
        res = hyperparameter_search(x, t, space, method="grid", grid_points=2, same_seed=True, executor=ex,
                                    **KW)
    combos = sorted((r.params["optimizer"], round(r.params["lr"], 6)) for r in res.trials)
    assert combos == [("momentum", 0.01), ("momentum", 0.1), ("sgd", 0.01), ("sgd", 0.1)]
    assert {r.seed for r in res.trials} == {3}  # same init and batches for every combination
    acc = {(r.params["optimizer"], round(r.params["lr"], 6)): r.val_acc for r in res.trials}
    assert acc[("sgd", 0.1)] > acc[("sgd", 0.01)]  # 2 epochs: the larger rate gets further


def test_optuna_sampler_ask_and_tell(small):
    pytest.importorskip("optuna")
    x, t = small
    with cf.ThreadPoolExecutor(2) as ex:
        res = hyperparameter_search(x, t, SPACE, method="optuna", n_trials=6, executor=ex, **KW)
    assert sorted(r.number for r in res.trials) == list(range(6))
    assert all(r.status == "ok" and 0.02 <= r.params["lr"] <= 0.5 for r in res.trials)
    assert all(r.params["hidden"] in ((16,), (24,)) for r in res.trials)
    assert res.best.val_acc == max(r.val_acc for r in res.trials)


def test_an_exception_in_a_trial_fails_that_trial_only(small):
    x, t = small
    with cf.ThreadPoolExecutor(2) as ex:
        res = hyperparameter_search(x, t, SPACE, n_trials=3, executor=ex, trial_fn=failing_trial, **KW)
    bad = [r for r in res.trials if r.status == "failed"]
    assert [r.number for r in bad] == [0] and "ArithmeticError: bad trial" in bad[0].message
    assert res.trials[-1] is bad[0]  # failed last
    assert sum(r.status == "ok" for r in res.trials) == 2


def test_diverging_trial_is_reported(small):
    x, t = small
    res = hyperparameter_search(x, t, {"lr": [1e20], "hidden": (16,)}, n_trials=1, n_workers=1, **KW)
    r = res.trials[0]
    assert r.status == "diverged" and "non-finite loss at iteration 2" in r.message
    assert math.isnan(r.val_acc) and r.val_curve == [] and res.trials[0] is r


# --------------------------------------------------------------------------- outputs
def test_table_json_csv_and_plot(small, tmp_path):
    x, t = small
    with cf.ThreadPoolExecutor(2) as ex:
        res = hyperparameter_search(x, t, SPACE, n_trials=4, executor=ex, **KW)
    lines = res.table().splitlines()
    assert lines[0].split()[:4] == ["rank", "trial", "val_acc", "train_acc"]
    assert [float(ln.split()[2]) for ln in lines[1:]] == [round(r.val_acc, 4) for r in res.trials]
    assert repr(res).startswith("SearchResult(4 trials: 4 ok, 0 failed, best val_acc=")

    res.to_json(tmp_path / "s.json")
    d = json.loads((tmp_path / "s.json").read_text())
    assert [tr["number"] for tr in d["trials"]] == [r.number for r in res.trials]
    assert d["trials"][0]["val_curve"] == res.trials[0].val_curve
    assert d["settings"]["method"] == "random" and d["settings"]["n_val"] == 240

    res.to_csv(tmp_path / "s.csv")
    import csv
    rows = list(csv.DictReader(io.StringIO((tmp_path / "s.csv").read_text())))
    assert [int(r["number"]) for r in rows] == [r.number for r in res.trials]
    assert float(rows[0]["val_acc"]) == res.trials[0].val_acc

    pytest.importorskip("matplotlib")
    fig = res.plot(top=3)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 3
    for ax, r in zip(axes, res.trials):
        assert list(ax.lines[0].get_ydata()) == r.val_curve  # validation, then training accuracy
        assert list(ax.lines[1].get_ydata()) == r.train_curve
        assert f"{r.val_acc:.3f}" in ax.get_title()
    import matplotlib.pyplot as plt
    plt.close(fig)
    res.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- the local process pool
def test_local_pool_worker_killed_mid_trial(small, tmp_path, monkeypatch):
    """One trial kills its worker every time: it fails with a message; one kills it once: it is rerun;
    every other trial completes with the numbers of an undisturbed run."""
    x, t = small
    monkeypatch.setenv("PFG_TEST_MARKERS", str(tmp_path))  # spawned workers inherit the environment
    res = hyperparameter_search(x, t, SPACE, n_trials=6, n_workers=2, trial_fn=killer_trial, **KW)
    by = res.by_number
    assert len(by) == 6
    assert by[KILL_ALWAYS].status == "failed" and "worker process died" in by[KILL_ALWAYS].message
    assert res.trials[-1].number == KILL_ALWAYS
    assert by[KILL_ONCE].status == "ok" and by[KILL_ONCE].attempts == 2 and "rerun" in by[KILL_ONCE].message
    with cf.ThreadPoolExecutor(2) as ex:
        clean = hyperparameter_search(x, t, SPACE, n_trials=6, executor=ex, **KW).by_number
    for r, c in zip(by, clean):
        if r.number != KILL_ALWAYS:
            assert r.status == "ok" and r.same_outcome(c)


def test_local_pool_timeout_and_one_thread_per_trial(small):
    x, t = small
    res = hyperparameter_search(x, t, SPACE, n_trials=4, n_workers=2, trial_fn=slow_trial,
                                **{**KW, "trial_timeout": 5})
    by = res.by_number
    assert by[2].status == "failed" and "timed out after 5 s" in by[2].message
    ok = [r for r in by if r.number != 2]
    assert all(r.status == "ok" for r in ok)
    for r in ok:
        threads = json.loads(r.message)
        assert threads["blas"] in (1, None) and threads["openmp"] in (1, None) and threads["numba"] == 1
        assert r.data_loads == 1  # the initializer's copy: the data reached this worker once
    assert len({r.worker for r in by if r.worker}) <= 3  # 2 workers, and a third after the restart


def test_any_process_executor_loads_the_data_once_per_worker(small):
    """A process pool the search did not start: the data goes by .npy files, memory-mapped once per worker."""
    import multiprocessing
    x, t = small
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        res = hyperparameter_search(x, t, SPACE, n_trials=3, executor=ex, **KW)
    with cf.ThreadPoolExecutor(1) as ex:
        ref = hyperparameter_search(x, t, SPACE, n_trials=3, executor=ex, **KW)
    assert "ProcessPoolExecutor" in res.settings["executor"]
    assert [r.data_loads for r in res.by_number] == [1, 1, 1] and len({r.worker for r in res.trials}) == 1
    assert all(a.status == "ok" and a.same_outcome(b) for a, b in zip(res.by_number, ref.by_number))


# --------------------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A 2-process LocalCluster on loopback; a worker death fails its task at once (allowed-failures 0)."""
    distributed = pytest.importorskip("distributed")
    import dask
    marker_dir = tmp_path_factory.mktemp("markers")
    os.environ["PFG_TEST_MARKERS"] = str(marker_dir)  # the worker processes inherit it
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # tornado/bokeh imports on some versions
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=":0",
                                               silence_logs=logging.CRITICAL)
            client = distributed.Client(cluster, timeout=60, set_as_default=False)
            client.wait_for_workers(2, timeout=120)
        yield client
        client.close()
        cluster.close(timeout=30)
    finally:
        os.environ.pop("PFG_TEST_MARKERS", None)


def test_dask_cluster_gives_the_local_pools_results(small, dask_cluster):
    x, t = small
    local = hyperparameter_search(x, t, SPACE, n_trials=6, n_workers=2, **KW)
    remote = hyperparameter_search(x, t, SPACE, n_trials=6, executor=dask_cluster.get_executor(), **KW)
    assert "Dask cluster tcp://127.0.0.1" in remote.settings["executor"]
    for a, b in zip(local.by_number, remote.by_number):
        assert a.status == "ok" and a.same_outcome(b)
    # by address, as for a cluster elsewhere
    by_address = hyperparameter_search(x, t, SPACE, n_trials=2, scheduler=dask_cluster.scheduler.address, **KW)
    assert all(a.same_outcome(b) for a, b in zip(by_address.by_number, local.by_number[:2]))
    # each worker received the scattered data once and kept it for all its trials
    per_worker = {}
    for r in remote.trials:
        per_worker.setdefault(r.worker, []).append(r.data_loads)
    assert max(len(v) for v in per_worker.values()) >= 2
    assert all(loads == [1] * len(loads) for loads in per_worker.values())


def test_dask_worker_killed_mid_trial(small, dask_cluster):
    x, t = small
    res = hyperparameter_search(x, t, SPACE, n_trials=4, executor=dask_cluster, trial_fn=killer_trial,
                                **KW)
    by = res.by_number
    assert by[KILL_ALWAYS].status == "failed" and "Dask worker died" in by[KILL_ALWAYS].message
    assert all(r.status == "ok" for r in by if r.number != KILL_ALWAYS)
    dask_cluster.wait_for_workers(2, timeout=60)  # the nanny restarts the dead worker


def test_scheduler_that_does_not_answer(small):
    pytest.importorskip("distributed")
    x, t = small
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Dask scheduler answered at 'tcp://127.0.0.1:{port}' "
                                              f"within 2 s"):
        hyperparameter_search(x, t, SPACE, n_trials=2, scheduler=f"tcp://127.0.0.1:{port}",
                              connect_timeout=2, **KW)
    assert time.monotonic() - t0 < 60  # an error, not a hang (the bound only guards against one)
    for bad, match in [("", "scheduler must be an address"), ("garbage", "missing port"),
                       ("http://127.0.0.1:8786", "unknown address scheme 'http'")]:
        with pytest.raises(ValueError, match=match):
            hyperparameter_search(x, t, SPACE, scheduler=bad, **KW)


# --------------------------------------------------------------------------- command line
def test_cli_search(small, tmp_path, capsys):
    from pyfastgrad.__main__ import main
    d = mnist_dir()
    if d is None:
        pytest.skip("the command line reads MNIST")
    rc = main(["search", "--data", str(d), "--train-size", "1000", "--trials", "3", "--epochs", "1",
               "--lr", "0.05:0.5", "--hidden", "16", "24", "--optimizer", "sgd", "momentum",
               "--workers", "1", "--seed", "1", "--json", str(tmp_path / "r.json"),
               "--csv", str(tmp_path / "r.csv"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "rank  trial  val_acc" in out
    res = json.loads((tmp_path / "r.json").read_text())
    assert len(res["trials"]) == 3 and res["settings"]["n_fit"] == 800
    assert all(0.05 <= tr["params"]["lr"] <= 0.5 and tr["params"]["optimizer"] in ("sgd", "momentum")
               and tr["params"]["hidden"] in ([16], [24]) for tr in res["trials"])
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 4


@pytest.mark.parametrize("args, match", [
    (["--lr", "0.5:0.05"], "inverted"),
    (["--lr", "0.1:0.1"], "empty range"),
    (["--optimizer", "sgd", "lion"], "unknown optimizer 'lion'"),
])
def test_cli_bad_ranges(args, match, capsys):
    from pyfastgrad.__main__ import main
    with pytest.raises(SystemExit) as exc:
        main(["search", "--trials", "1", "--epochs", "1", "--no-progress", *args])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err
