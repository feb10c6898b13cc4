"""Fused optimizer-update throughput: ``python bench/bench_optimizers.py [--quick] [--dtype float32|float64]``.

One update of all 79,510 parameters of 784-100-10 (float32 by default) per optimizer and style:

* pyfastgrad's kernel (``opt_update`` of each backend on the flat vector: what ``fit``,
  ``net.train_step`` and ``Optimizer.update`` call once per step), and the public
  ``opt.update(net.params, grads)`` (the tutorials' loop: checks, the schedule, one kernel call);
* ``torch.optim`` on the net's four tensors (W1, b1, W2, b2): the default (single-tensor loop on
  CPU), ``foreach=True`` and ``fused=True`` where this torch version has them.

Prints microseconds per update (min and median of the repeats), GB/s of the vectors each update
reads and writes, and each row's speed relative to the fastest torch variant of that optimizer
(> 1: faster than torch). Timings on a shared or busy machine swing by 2x; run on an idle one.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

SIZES = [784, 100, 10]
# (label, pyfastgrad constructor kwargs, torch class name, torch kwargs, vectors moved per update)
CASES = [
    ("sgd", "sgd", {"lr": 0.01}, "SGD", {"lr": 0.01}, 3),
    ("momentum", "momentum", {"lr": 0.01, "momentum": 0.9, "style": "torch"}, "SGD",
     {"lr": 0.01, "momentum": 0.9}, 5),
    ("nesterov", "nesterov", {"lr": 0.01, "momentum": 0.9, "style": "torch"}, "SGD",
     {"lr": 0.01, "momentum": 0.9, "nesterov": True}, 5),
    ("adagrad", "adagrad", {"lr": 0.01, "style": "torch"}, "Adagrad", {"lr": 0.01}, 5),
    ("rmsprop", "rmsprop", {"lr": 0.001, "style": "torch"}, "RMSprop", {"lr": 0.001}, 5),
    ("adam", "adam", {"lr": 0.001, "style": "torch"}, "Adam", {"lr": 0.001}, 7),
    ("adamw", "adamw", {"lr": 0.001, "style": "torch"}, "AdamW", {"lr": 0.001}, 7),
    ("adam (tutorial)", "adam", {"lr": 0.001}, None, None, 7),
]


def _time(fn: Callable[[], None], repeats: int, inner: int) -> List[float]:
    """Seconds per call, one entry per repeat of ``inner`` calls (after one warm-up call)."""
    time.sleep(0.05)  # let the previous row's spinning BLAS/OpenMP threads go to sleep first
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        out.append((time.perf_counter() - t0) / inner)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="bench/bench_optimizers.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few repeats (a smoke run, seconds)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--only", nargs="*", help="optimizer labels to run (default: all)")
    args = p.parse_args(argv)

    import pyfastgrad as pfg
    from pyfastgrad._backends import kernels

    dtype = np.dtype(args.dtype)
    repeats, inner = (3, 5) if args.quick else (15, 50)
    try:
        import torch
        torch.set_num_threads(pfg.get_num_threads()["openmp"])  # the same cores as our kernels
    except ImportError:
        torch = None
    net = pfg.TwoLayerNet(*SIZES, dtype=dtype, seed=0)
    n = net.n_params
    rng = np.random.default_rng(0)
    grad_flat = (rng.standard_normal(n) * 1e-3).astype(dtype)
    print(f"pyfastgrad {pfg.__version__}, {n:,} params, {dtype}, backends {pfg.available_backends()}, "
          f"torch {torch.__version__ if torch else 'not installed'}, {'quick' if args.quick else 'full'} mode")
    print(f"{'optimizer':17s} {'implementation':34s} {'us/update':>10s} {'median':>9s} {'GB/s':>7s} {'vs torch':>9s}")
    results: Dict[str, Dict[str, float]] = {}
    for label, kind, kw, tname, tkw, words in CASES:
        if args.only and label not in args.only:
            continue
        rows: Dict[str, List[float]] = {}
        if torch is not None and tname is not None:
            cls = getattr(torch.optim, tname)
            for variant, extra in (("default", {}), ("foreach=True", {"foreach": True}),
                                   ("fused=True", {"fused": True})):
                params = [torch.nn.Parameter(torch.from_numpy(net.params[key].copy()))
                          for key in ("W1", "b1", "W2", "b2")]
                for prm, key in zip(params, ("W1", "b1", "W2", "b2")):
                    prm.grad = torch.from_numpy(net._grads_dict(grad_flat)[key].copy())
                try:
                    o = cls(params, **tkw, **extra)
                    o.step()
                except (RuntimeError, TypeError, ValueError) as exc:  # not available in this version / on CPU
                    print(f"{label:17s} {'torch.optim ' + variant:34s} skipped: {str(exc).splitlines()[0][:60]}")
                    continue
                with torch.no_grad():
                    rows[f"torch.optim {variant}"] = _time(o.step, repeats, inner)
        for b in pfg.available_backends():
            opt = pfg.make_optimizer(kind, **kw)
            theta = net.theta.copy()
            st = np.zeros((max(opt.n_states, 1), n), dtype=dtype)
            h = opt.hyper
            k = kernels(b)
            rows[f"pyfastgrad {b} kernel"] = _time(
                lambda k=k, kind=kind, theta=theta, st=st, h=h:
                k.opt_update(kind, theta, grad_flat, st[0], st[-1], h, 10),
                repeats, inner)
            opt_api = pfg.make_optimizer(kind, backend=b, **kw)
            net_b = net.copy()
            grads = net_b._grads_dict(grad_flat)
            rows[f"pyfastgrad {b} opt.update(params)"] = _time(
                lambda opt_api=opt_api, net_b=net_b, grads=grads: opt_api.update(net_b.params, grads), repeats, inner)
        torch_best = min((min(v) for k_, v in rows.items() if k_.startswith("torch")), default=None)
        nbytes = words * n * dtype.itemsize
        results[label] = {}
        for name, ts in rows.items():
            best, med = min(ts), float(np.median(ts))
            ratio = f"{torch_best / best:8.2f}x" if torch_best else "       -"
            print(f"{label:17s} {name:34s} {best * 1e6:10.1f} {med * 1e6:9.1f} {nbytes / best / 1e9:7.1f} {ratio}")
            results[label][name] = best
    return 0


if __name__ == "__main__":
    sys.exit(main())
