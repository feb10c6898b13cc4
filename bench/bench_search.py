"""Hyper-parameter search throughput: ``python bench/bench_search.py [--quick] [--out DIR] [--scheduler ADDR]``.

1. Trials per minute on the local process pool with 1 and 2 worker processes (one thread per trial), the
   same trials each time: the speedup with 2 workers (target >= 1.8x on a 2-core machine).
2. The overhead of the Dask path against the local pool for short trials: the same many tiny trials on a
   ``distributed.LocalCluster`` (2 processes x 1 thread, loopback) or on ``--scheduler ADDR``, and on a
   2-worker local pool; the difference per trial.

Worker start-up (and Dask's scatter) and shut-down are timed apart and left out of the rates
(``settings['trials_s']``: first submission to last result). Every run
checks that the trials' results are identical across executors. Results go to stdout and
``DIR/search.json``. Run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import pyfastgrad as pfg
from pyfastgrad.datasets import load_data
from pyfastgrad.search import LogUniform, hyperparameter_search


def _rate(res) -> float:
    return len(res.trials) * 60.0 / res.settings["trials_s"]


def _same(a, b) -> bool:
    return all(x.same_outcome(y) for x, y in zip(a.by_number, b.by_number))


def throughput(x, t, n_trials: int, epochs: int, hidden: int) -> dict:
    space = {"lr": LogUniform(0.01, 0.3), "weight_decay": LogUniform(1e-8, 1e-4), "hidden": (hidden,),
             "batch_size": 100}
    out = {}
    runs = {}
    for workers in (1, 2):
        res = hyperparameter_search(x, t, space, n_trials=n_trials, epochs=epochs, n_workers=workers, seed=0,
                                    progress=False)
        runs[workers] = res
        out[f"local_{workers}"] = {"trials_per_min": _rate(res), "wall_s": res.seconds,
                                   "startup_s": res.settings["startup_s"],
                                   "median_trial_s": float(np.median([r.seconds for r in res.trials]))}
        print(f"  local pool, {workers} worker(s): {out[f'local_{workers}']['trials_per_min']:8.1f} trials/min"
              f"  (median trial {out[f'local_{workers}']['median_trial_s']:.3f} s, start-up "
              f"{res.settings['startup_s']:.2f} s)")
    out["speedup_2_vs_1"] = out["local_2"]["trials_per_min"] / out["local_1"]["trials_per_min"]
    out["identical_results"] = _same(runs[1], runs[2])
    print(f"  speedup 2 vs 1 workers: {out['speedup_2_vs_1']:.2f}x (target >= 1.8x); identical results: "
          f"{out['identical_results']}")
    return out


def dask_overhead(x, t, n_trials: int, scheduler) -> dict:
    try:
        import distributed
    except ImportError:
        print("  dask.distributed not installed (pip install 'pyfastgrad[dask]'): skipped")
        return {}
    space = {"lr": LogUniform(0.01, 0.3), "hidden": (16,), "batch_size": 50}
    kw = dict(n_trials=n_trials, epochs=1, seed=0, progress=False)
    local = hyperparameter_search(x, t, space, n_workers=2, **kw)
    cluster = None
    if scheduler:
        client = distributed.Client(scheduler, timeout=10, set_as_default=False)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None,
                                               silence_logs=logging.ERROR)
        client = distributed.Client(cluster, set_as_default=False)
    try:
        remote = hyperparameter_search(x, t, space, executor=client, **kw)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    per_trial = lambda r: r.settings["trials_s"] / len(r.trials)  # noqa: E731
    out = {"n_trials": n_trials, "median_trial_s": float(np.median([r.seconds for r in local.trials])),
           "local_per_trial_ms": 1e3 * per_trial(local), "dask_per_trial_ms": 1e3 * per_trial(remote),
           "local_startup_s": local.settings["startup_s"], "dask_startup_s": remote.settings["startup_s"],
           "executor": remote.settings["executor"], "identical_results": _same(local, remote)}
    out["dask_overhead_per_trial_ms"] = out["dask_per_trial_ms"] - out["local_per_trial_ms"]
    print(f"  {n_trials} short trials (median {out['median_trial_s'] * 1e3:.1f} ms of training each), "
          f"2 workers:")
    print(f"    local pool {out['local_per_trial_ms']:7.2f} ms/trial, "
          f"Dask {out['dask_per_trial_ms']:7.2f} ms/trial"
          f" -> Dask overhead {out['dask_overhead_per_trial_ms']:+.2f} ms per trial")
    print(f"    start-up: local pool {out['local_startup_s']:.2f} s, Dask (connect + scatter) "
          f"{out['dask_startup_s']:.2f} s; identical results: {out['identical_results']}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/bench_search.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds (smoke run)")
    p.add_argument("--out", default="bench/results")
    p.add_argument("--scheduler", help="a Dask scheduler to compare against (default: a LocalCluster)")
    args = p.parse_args(argv)
    data, source = load_data(warn=False)
    (x, t), _ = data
    if os.getloadavg()[0] > (os.cpu_count() or 1) / 2:
        print(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: rates will be low "
              "and the speedup understated", file=sys.stderr)
    q = args.quick
    print(f"pyfastgrad {pfg.__version__}, backend {pfg.get_backend()}, {os.cpu_count()} cores, data {source}")
    result = {"source": str(source), "cores": os.cpu_count(), "quick": q, "date": time.strftime("%Y-%m-%d %H:%M")}
    n = 3000 if q else 20000
    print(f"throughput: {n} training images (20 % held out), hidden 100, "
          f"{1 if q else 2} epoch(s) per trial")
    result["throughput"] = throughput(x[:n], t[:n], n_trials=6 if q else 40, epochs=1 if q else 2, hidden=100)
    print("Dask overhead:")
    result["dask"] = dask_overhead(x[:1000], t[:1000], n_trials=20 if q else 200, scheduler=args.scheduler)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "search.json").write_text(json.dumps(result, indent=1))
    print(f"saved {Path(args.out) / 'search.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
