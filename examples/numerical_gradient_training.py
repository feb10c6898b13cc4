"""Training by the numerical gradient alone: the run the tutorials call far too slow (chapter 4).

The tutorials' ``train_neuralnet.py`` with ``network.numerical_gradient`` in place of backprop:
a 784-50-10 net, 10,000 iterations of batches of 100, SGD lr 0.1. Each iteration differentiates
the loss by central differences in all 39,760 weights (79,520 forward passes of the batch). With
the tutorials' numpy loop that is days of computing; ``net.numerical_gradient`` runs it in one
C++ call per iteration. The script times its run, times the pure-numpy reference loop on a
sample of the weights and extrapolates that to the full run, and draws ``numerical_training.png``.

    python examples/numerical_gradient_training.py --threads 1 --out docs   # the full run (about a minute)
    python examples/numerical_gradient_training.py --iters 20 --no-plots   # a taste
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyfastgrad as pfg  # noqa: E402
from pyfastgrad import reference  # noqa: E402

FULL = "python examples/numerical_gradient_training.py --threads 1 --out docs"


def reference_seconds_per_iteration(x_batch, t_batch, n_sample: int = 400, seed: int = 0) -> float:
    """Seconds the reference's loop (``reference.TwoLayerNet.numerical_gradient``) needs for one
    iteration, from timing its central difference on ``n_sample`` of the 39,760 weights."""
    net = reference.TwoLayerNet(784, 50, 10, seed=seed)
    x_batch = np.asarray(x_batch, dtype=np.float64)
    W1 = net.params["W1"]
    idx = np.random.default_rng(seed).choice(W1.size, size=min(n_sample, W1.size), replace=False)
    flat = W1.reshape(-1)
    h = 1e-4
    t0 = time.perf_counter()
    for i in idx:  # the loop body of reference.numerical_gradient
        tmp = flat[i]
        flat[i] = tmp + h
        f1 = net.loss(x_batch, t_batch)
        flat[i] = tmp - h
        f2 = net.loss(x_batch, t_batch)
        _ = (f1 - f2) / (2 * h)
        flat[i] = tmp
    per_weight = (time.perf_counter() - t0) / idx.size
    n_params = sum(v.size for v in net.params.values())
    return per_weight * n_params


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def main(argv: Optional[List[str]] = None) -> dict:
    """The run (``--iters``, ``--train-size`` make it small), the reference's estimate, the figure."""
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    p.add_argument("--subset", action="store_true", help="the MNIST subset shipped in the package")
    p.add_argument("--ref-sample", type=int, default=400, help="weights timed in the reference's loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for pyfastgrad's kernels and (with threadpoolctl) numpy's BLAS; 1 on a busy machine")
    args = p.parse_args(argv)
    if args.threads is None:
        return _run(args)
    pfg.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy's BLAS keeps its threads: the reference's time may suffer on a busy machine
        print("note: without threadpoolctl numpy's BLAS threads are not limited")
        return _run(args)
    with threadpool_limits(args.threads):
        return _run(args)


def _run(args) -> dict:
    ((x_train, t_train), (x_test, t_test)), what = _common.mnist(args.train_size, subset=args.subset)
    print(f"data: {what}; backend {pfg.get_backend()}, threads {pfg.get_num_threads()}")
    if args.iters < 10000:
        print(f"(a short run; the full one is: {FULL})")
    rng = np.random.default_rng(args.seed)
    network = pfg.TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=args.seed)
    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size // args.batch_size, 1)
    train_loss_list, train_acc_list, test_acc_list = [], [], []
    t0 = time.perf_counter()
    for i in range(args.iters):  # the tutorials' loop, unchanged but for the gradient's name
        batch_mask = rng.choice(train_size, args.batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        grad = network.numerical_gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= args.lr * grad[key]
        train_loss_list.append(network.loss(x_batch, t_batch))
        if (i + 1) % iter_per_epoch == 0:
            train_acc_list.append(network.accuracy(x_train, t_train))
            test_acc_list.append(network.accuracy(x_test, t_test))
            print(f"epoch {len(test_acc_list):2d}  train acc, test acc | {train_acc_list[-1]:.4f}, "
                  f"{test_acc_list[-1]:.4f}   ({time.perf_counter() - t0:.1f} s)")
    ours = time.perf_counter() - t0
    test_acc = network.accuracy(x_test, t_test)
    per_iter = ours / max(args.iters, 1)
    print(f"{args.iters} iterations by the numerical gradient in {ours:.1f} s ({1000 * per_iter:.1f} ms per "
          f"iteration); test accuracy {100 * test_acc:.1f} %")
    xb = x_train[:args.batch_size]
    ref_iter = reference_seconds_per_iteration(xb, t_train[:args.batch_size], args.ref_sample, args.seed)
    ref_total = ref_iter * args.iters
    print(f"the reference's numpy loop: {ref_iter:.1f} s per iteration (timed on {args.ref_sample} of "
          f"{network.n_params:,} weights), so {args.iters} iterations would take about {_human(ref_total)} "
          f"({ref_total / max(ours, 1e-12):,.0f}x longer)")
    tb = time.perf_counter()
    reps = 20
    for _ in range(reps):
        network.gradient(xb, t_train[:args.batch_size])
    bp_iter = (time.perf_counter() - tb) / reps
    print(f"for scale, backprop (net.gradient): {1000 * bp_iter:.2f} ms per iteration")
    out = {"seconds": ours, "per_iter": per_iter, "test_acc": test_acc, "ref_per_iter": ref_iter,
           "ref_total": ref_total, "bp_per_iter": bp_iter, "train_acc_list": train_acc_list,
           "test_acc_list": test_acc_list, "loss": train_loss_list}
    if not args.no_plots:
        plt = _common.pyplot()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.1, 1]})
        labels = ["reference numpy loop\n(extrapolated)", "net.numerical_gradient\n(measured)",
                  "backprop, net.gradient\n(measured per iteration)"]
        vals = [ref_total, ours, bp_iter * args.iters]
        bars = ax1.barh(labels, vals, color=["tab:red", "tab:blue", "tab:green"])
        ax1.set_xscale("log")
        for b, v in zip(bars, vals):
            ax1.text(v * 1.15, b.get_y() + b.get_height() / 2, _human(v), va="center")
        ax1.set_xlim(min(vals) / 3, max(vals) * 40)
        ax1.invert_yaxis()
        ax1.set(title=f"Time for {args.iters:,} iterations, 784-50-10 net, batch {args.batch_size}",
                xlabel="wall-clock time (s, log scale)")
        ax1.grid(axis="y", visible=False)
        if test_acc_list:
            ep = np.arange(1, len(test_acc_list) + 1)
            ax2.plot(ep, 100 * np.array(train_acc_list), "o-", label="train")
            ax2.plot(ep, 100 * np.array(test_acc_list), "s--", label="test")
            from matplotlib.ticker import MaxNLocator
            ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax2.set_ylim(max(0, 100 * min(train_acc_list + test_acc_list) - 2), 100)
            ax2.legend(loc="lower right")
        ax2.set(title="Trained by the numerical gradient alone", xlabel="epoch", ylabel="accuracy (%)")
        fig.tight_layout()
        _common.save(fig, args.out, "numerical_training.png")
    return out


if __name__ == "__main__":
    main()
