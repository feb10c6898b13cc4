"""The tutorials' chapter-5 training loop, unchanged, per iteration: ``python bench/bench_tutorial_loop.py``.

``[--iters N] [--repeats R] [--quick]``

Part 1 runs the book's ``train_neuralnet.py`` loop (random batch of 100, ``network.gradient``, the dict
update ``params[key] -= lr * grad[key]``, ``network.loss``, train and test ``accuracy`` once per epoch of
600 iterations) on float32 MNIST as the book loads it, once with pyfastgrad's ``TwoLayerNet`` and once
with the numpy implementation of the book's net (``pyfastgrad.reference.TwoLayerNet``: the book's layers,
float64 weights), alternating R times in this one process, at default settings (no environment
variables, every core). It prints microseconds per iteration (median and spread over the repeats)
and the ratio (issue 17 target: pyfastgrad >= 3x faster).

Part 2 times each call of that loop two ways: repeated on one fixed batch, and inside the loop's
sequence (random batch -> gradient -> update -> loss, with accuracy on 1,000 test images in between
as another call kind), and prints the ratio in-sequence / repeated per call (target: <= 1.5: no call
pays for what ran before it, e.g. thread pools left spinning).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import pyfastgrad as pfg
from pyfastgrad import reference as ref


def book_loop(net, x, t, xt, tt, iters: int, lr: float = 0.1, batch: int = 100):
    """The book's loop, as written there (ch05/train_neuralnet.py)."""
    iter_per_epoch = max(x.shape[0] // batch, 1)
    train_loss, train_acc, test_acc = [], [], []
    for i in range(iters):
        mask = np.random.choice(x.shape[0], batch)
        x_batch, t_batch = x[mask], t[mask]
        grad = net.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= lr * grad[key]
        train_loss.append(net.loss(x_batch, t_batch))
        if i % iter_per_epoch == 0:
            train_acc.append(net.accuracy(x, t))
            test_acc.append(net.accuracy(xt, tt))
    return train_loss, train_acc, test_acc


def part1(x, t, xt, tt, iters: int, repeats: int) -> float:
    per = {"pyfastgrad": [], "numpy": []}
    last = {}
    for r in range(repeats):
        for name, cls in (("pyfastgrad", pfg.TwoLayerNet), ("numpy", ref.TwoLayerNet)):
            np.random.seed(r)
            net = cls(input_size=784, hidden_size=50, output_size=10)
            t0 = time.perf_counter()
            last[name] = book_loop(net, x, t, xt, tt, iters)
            per[name].append((time.perf_counter() - t0) / iters * 1e6)
    print(f"Part 1: the book's loop, {iters} iterations (train+test accuracy every 600), {repeats} runs each")
    for name, v in per.items():
        print(f"  {name:<11} {statistics.median(v):8.0f} us/iteration  (runs {min(v):.0f}..{max(v):.0f}); "
              f"final test accuracy {last[name][2][-1]:.4f}, last loss {last[name][0][-1]:.4f}")
    ratios = [b / a for a, b in zip(per["pyfastgrad"], per["numpy"])]
    ratio = statistics.median(ratios)
    print(f"  pyfastgrad is {ratio:.2f}x faster per iteration (runs {min(ratios):.2f}..{max(ratios):.2f}); "
          f"target >= 3x: {'met' if ratio >= 3 else 'NOT met'}")
    return ratio


def part2(x, t, xt, tt, n: int) -> float:
    net = pfg.TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=0)
    xs, ts = xt[:1000], tt[:1000]
    m = np.random.choice(x.shape[0], 100)
    xb, tb = x[m], t[m]
    clock = time.perf_counter
    calls = {
        "gradient": lambda xb, tb: net.gradient(xb, tb),
        "loss": lambda xb, tb: net.loss(xb, tb),
        "accuracy(1000)": lambda xb, tb: net.accuracy(xs, ts),
    }
    repeated = {}
    for name, f in calls.items():
        f(xb, tb)
        ts_ = []
        for _ in range(n):
            a = clock()
            f(xb, tb)
            ts_.append(clock() - a)
        repeated[name] = statistics.median(ts_) * 1e6
    seq = {k: [] for k in calls}
    for i in range(n):
        m = np.random.choice(x.shape[0], 100)
        xb, tb = x[m], t[m]
        a = clock()
        grad = net.gradient(xb, tb)
        seq["gradient"].append(clock() - a)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.1 * grad[key]
        a = clock()
        net.loss(xb, tb)
        seq["loss"].append(clock() - a)
        if i % 10 == 0:
            a = clock()
            net.accuracy(xs, ts)
            seq["accuracy(1000)"].append(clock() - a)
    print(f"Part 2: each call repeated on one batch vs inside the loop's sequence (median of {n}), "
          f"float32 data into a float64 net")
    worst = 0.0
    for name in calls:
        s = statistics.median(seq[name]) * 1e6
        worst = max(worst, s / repeated[name])
        print(f"  {name:<15} repeated {repeated[name]:7.0f} us   in sequence {s:7.0f} us   "
              f"ratio {s / repeated[name]:5.2f}")
    print(f"  worst ratio {worst:.2f}; target <= 1.5: {'met' if worst <= 1.5 else 'NOT met'}")
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_tutorial_loop.py", description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=3000, help="iterations per run (default 3000: 5 epochs)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each net, alternating (default 3)")
    ap.add_argument("--quick", action="store_true", help="300 iterations, 1 run, 200 timed calls")
    args = ap.parse_args(argv)
    from pyfastgrad.datasets import load_mnist
    (x, t), (xt, tt) = load_mnist(normalize=True)  # float32, as the book's loader gives it
    threads = pfg.get_num_threads()
    print(f"pyfastgrad {pfg.__version__}, backend {pfg.get_backend()}, threads {threads}, x {x.dtype}")
    if args.quick:
        args.iters, args.repeats = 300, 1
    part1(x, t, xt, tt, args.iters, args.repeats)
    part2(x, t, xt, tt, 200 if args.quick else 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
