"""An MNIST epoch with one core busy: ``python bench/bench_busy.py [--epochs N] [--repeats R]``.

Times one ``fit`` epoch of 784-100-10 (float32, batch 100, SGD, no per-epoch evaluation) and the book's
chapter-5 loop (600 iterations of gradient / update / loss) on an idle machine, then with a process the
benchmark starts that spins on one core (a busy-loop, like a browser tab or another job), with the
adaptive team size on (the default: teams and OpenBLAS shrink to the cores other processes leave free,
csrc/core/parallel.hpp) and off (``PYFASTGRAD_ADAPTIVE_THREADS=0``). Prints each median, the spread, and the
ratio busy / idle (issue 17 target: <= 2.5x). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time

import numpy as np

import pyfastgrad as pfg


def _spin(stop) -> None:  # a busy loop on one core
    while not stop.is_set():
        for _ in range(100000):
            pass


def _epoch(x, t) -> float:
    net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=np.float32)
    t0 = time.perf_counter()
    pfg.fit(net, x, t, optimizer=pfg.SGD(lr=0.1), epochs=1, batch_size=100, progress=False)
    return time.perf_counter() - t0


def _book(x, t) -> float:
    net = pfg.TwoLayerNet(784, 50, 10, seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(600):
        m = rng.integers(0, x.shape[0], 100)
        grad = net.gradient(x[m], t[m])
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.1 * grad[key]
        net.loss(x[m], t[m])
    return time.perf_counter() - t0


def _core():
    """The extension module: the adaptive switch is a kernel setting, not public API."""
    from pyfastgrad._backends import cpp
    return cpp._core


def _measure(fn, x, t, repeats: int):
    fn(x, t)  # warm-up (numba/BLAS start-up, caches)
    return [fn(x, t) for _ in range(repeats)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_busy.py", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    from pyfastgrad.datasets import load_mnist
    core = _core()
    (x, t), _ = load_mnist(normalize=True)
    print(f"pyfastgrad {pfg.__version__}, backend {pfg.get_backend()}, threads {pfg.get_num_threads()}")
    rows = {}
    for name, fn in (("fit epoch 784-100-10 f32", _epoch), ("book loop 600 it 784-50-10", _book)):
        idle = _measure(fn, x, t, args.repeats)
        res = {"idle": idle}
        for adaptive in (True, False):
            core.set_adaptive_threads(adaptive)
            stop = mp.get_context("spawn").Event()
            p = mp.get_context("spawn").Process(target=_spin, args=(stop,), daemon=True)
            p.start()
            time.sleep(0.5)  # the spinner runs, the load probe sees it
            try:
                res["busy, adaptive" if adaptive else "busy, fixed teams"] = _measure(fn, x, t, args.repeats)
            finally:
                stop.set()
                p.join(5)
                core.set_adaptive_threads(True)
            time.sleep(0.5)
        rows[name] = res
    for name, res in rows.items():
        base = statistics.median(res["idle"])
        print(f"{name}:")
        for k, v in res.items():
            med = statistics.median(v)
            print(f"  {k:<18} {med * 1e3:8.1f} ms  (runs {min(v) * 1e3:.1f}..{max(v) * 1e3:.1f})  "
                  f"x{med / base:5.2f} of idle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
