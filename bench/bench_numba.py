"""The numba fallback against cpp: ``python bench/bench_numba.py [--repeats R] [--quick]``.

Issue 17: users without a compiler get the numba backend; it should stay within 2x of cpp on an MNIST
epoch and on a train step. Three cases, 784-100-10, float32, SGD lr 0.1, real MNIST images:

* ``epoch``: the kernel of one ``fit`` epoch, ``Mlp.train_steps`` over 600 shuffled batches of 100 with the
  input ``fit`` hands that backend (rows of nonzeros, ``CsrRows``, on MNIST);
* ``train_step``: one ``net.train_step(x, t, optimizer)`` call on a batch of 100;
* ``fused dense``: ``Mlp.train_steps`` on the dense images, 200 random batches per call, per step.

cpp and numba alternate in one process (``--repeats`` rounds, each timing both once per case, after an
untimed warm-up that also compiles numba); prints each backend's median, its spread (min..max), the ratio
numba / cpp of the medians and the target from ``bench/targets.py`` (met / NOT met).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import pyfastgrad as pfg
from pyfastgrad.bench._door import kernel_mlp
from pyfastgrad.bench.data import load_images, one_hot

sys.path.insert(0, str(Path(__file__).resolve().parent))  # targets.py when started from elsewhere
from targets import NUMBA_RATIO_MAX  # noqa: E402

BACKENDS = ("cpp", "numba")


def _training_input(X: np.ndarray, backend: str):
    """What ``fit`` trains ``backend`` from (X, or its nonzeros by row)."""
    from pyfastgrad.train import _training_input  # private: fit's own choice, not a copy of its rule
    return _training_input(X, backend)


def _cases(X: np.ndarray, labels: np.ndarray, quick: bool):
    """(name, unit, per, {backend: (setup, fn)}) for each case."""
    T = one_hot(labels, 10, np.float32)
    steps, bs = (150 if quick else 600), 100
    n = X.shape[0]
    if n < steps * bs:
        reps = -(-steps * bs // n)
        X, T = np.tile(X, (reps, 1)), np.tile(T, (reps, 1))
    perm = np.random.default_rng(0).permutation(steps * bs).astype(np.int64).reshape(steps, bs)
    rand = np.random.default_rng(1).integers(0, X.shape[0], size=(50 if quick else 200, bs)).astype(np.int64)
    theta0 = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=np.float32, backend="numpy").theta.copy()
    hyper = np.array([0.1, 0.0, 0.0])
    xb, tb = X[rand[0]], T[rand[0]]
    epoch, step, fused = {}, {}, {}
    for b in BACKENDS:
        net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=np.float32, backend=b)
        mlp = kernel_mlp(net)
        s = np.zeros_like(net.theta)
        Xin = _training_input(X, b)

        def reset(net=net):
            net.theta[:] = theta0

        def run_epoch(mlp=mlp, net=net, s=s, Xin=Xin):
            mlp.train_steps(net.theta, Xin, T, perm, 0.0, "sgd", hyper, s, s, 0)

        def run_fused(mlp=mlp, net=net, s=s):
            mlp.train_steps(net.theta, X, T, rand, 0.0, "sgd", hyper, s, s, 0)

        opt = pfg.SGD(lr=0.1)
        epoch[b] = (reset, run_epoch, type(Xin).__name__)
        fused[b] = (reset, run_fused, "dense")
        step[b] = (reset, lambda net=net, opt=opt: net.train_step(xb, tb, opt), "dense")
    return [(f"epoch kernel ({steps} steps x {bs}, fit's input)", "ms/epoch", 1, epoch),
            ("train_step (one net.train_step call)", "us/step", 1, step),
            (f"fused dense loop ({rand.shape[0]} steps/call)", "us/step", rand.shape[0], fused)]


def _time(setup, fn, inner: int) -> float:
    setup()
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_numba.py", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="alternating rounds (default 15)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the epoch, 5 rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 5)
    have = pfg.backends()
    missing = [b for b in BACKENDS if not have.get(b)]
    if missing:
        print(f"needs the backends {', '.join(missing)} (available: {have})")
        return 1
    X, labels, src = load_images()
    print(f"pyfastgrad {pfg.__version__}; data: {src}; threads {pfg.get_num_threads()}; 784-100-10 float32 SGD")
    verdicts = []
    for name, unit, per, fns in _cases(X, labels, args.quick):
        scale = 1e3 if unit.startswith("ms") else 1e6
        inner = {}
        for b, (setup, fn, _) in fns.items():  # warm-up (numba compiles or loads its cache), calibrate
            setup()
            fn()
            t = _time(setup, fn, 1)
            inner[b] = max(1, int(0.05 / max(t, 1e-9)))
        times = {b: [] for b in fns}
        gc_was = __import__("gc").isenabled()
        __import__("gc").disable()
        try:
            for _ in range(args.repeats):
                for b, (setup, fn, _) in fns.items():
                    time.sleep(0.05)  # idle BLAS/OpenMP threads of the other backend stop spinning
                    times[b].append(_time(setup, fn, inner[b]) / per)
        finally:
            if gc_was:
                __import__("gc").enable()
        print(f"\n{name}:")
        med = {}
        for b, v in times.items():
            med[b] = statistics.median(v)
            print(f"  {b:<6} {med[b] * scale:9.2f} {unit}  (min {min(v) * scale:.2f}, max {max(v) * scale:.2f}; "
                  f"{len(v)} rounds x {inner[b]}; input {fns[b][2]})")
        ratio = med["numba"] / med["cpp"]
        ok = ratio <= NUMBA_RATIO_MAX
        spread = [n / c for n, c in zip(times["numba"], times["cpp"])]
        print(f"  numba / cpp = {ratio:.2f}x (per round {min(spread):.2f}..{max(spread):.2f})  "
              f"target <= {NUMBA_RATIO_MAX:g}x: {'met' if ok else 'NOT met'}")
        verdicts.append(ok)
    print(f"\n{sum(verdicts)} of {len(verdicts)} targets met (issue 17: {TARGET_TEXT})")
    return 0


TARGET_TEXT = f"numba within {NUMBA_RATIO_MAX:g}x of cpp on the epoch kernel and the train step"

if __name__ == "__main__":
    sys.exit(main())
