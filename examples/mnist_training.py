"""MNIST with mini-batch SGD, the tutorials' loop, and an optimizer comparison (chapters 5-6).

Part one is the tutorials' ``train_neuralnet.py`` unchanged in substance: a 784-50-10
``TwoLayerNet``, 10,000 iterations of batches of 100 drawn with replacement, SGD with lr 0.1,
the loss recorded every iteration and train/test accuracy every epoch (600 iterations).
Part two trains one 784-100-100-100-100-10 ReLU net (He initialisation) from the same start with
SGD, Momentum, AdaGrad and Adam (the tutorials' learning rates, batches of 128) and compares
their losses. Draws ``mnist_training.png`` and ``optimizer_comparison.png``.

    python examples/mnist_training.py --out docs          # full MNIST from $PYFASTGRAD_DATA
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

# the tutorials' optimizer comparison: name -> (optimizer, learning rate)
OPTIMIZERS = {"SGD": ("sgd", 0.01), "Momentum": ("momentum", 0.01), "AdaGrad": ("adagrad", 0.01),
              "Adam": ("adam", 0.001)}


def tutorial_loop(x_train, t_train, x_test, t_test, iters_num: int = 10000, batch_size: int = 100,
                  learning_rate: float = 0.1, seed: int = 0):
    """The tutorials' training loop; returns (net, loss per iteration, train acc, test acc per epoch)."""
    rng = np.random.default_rng(seed)
    network = pfg.TwoLayerNet(input_size=784, hidden_size=50, output_size=10, seed=seed)
    train_size = x_train.shape[0]
    train_loss_list, train_acc_list, test_acc_list = [], [], []
    iter_per_epoch = max(train_size // batch_size, 1)
    for i in range(iters_num):
        batch_mask = rng.choice(train_size, batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        loss, grad = network.loss_and_gradient(x_batch, t_batch)  # = gradient(), and the loss with it
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= learning_rate * grad[key]
        train_loss_list.append(loss)
        if (i + 1) % iter_per_epoch == 0:
            train_acc = network.accuracy(x_train, t_train)
            test_acc = network.accuracy(x_test, t_test)
            train_acc_list.append(train_acc)
            test_acc_list.append(test_acc)
            print(f"epoch {len(test_acc_list):2d}  train acc, test acc | {train_acc:.4f}, {test_acc:.4f}")
    return network, train_loss_list, train_acc_list, test_acc_list


def compare_optimizers(x_train, t_train, x_test, t_test, iters: int = 2000, batch_size: int = 128,
                       seed: int = 0, report_every: int = 500):
    """Train the same 4-hidden-layer net (same start, same batches) with each optimizer."""
    results = {}
    for name, (kind, lr) in OPTIMIZERS.items():
        net = pfg.MultiLayerNet(784, [100, 100, 100, 100], 10, weight_init="he", seed=seed)
        hist = pfg.fit(net, x_train, t_train, optimizer=kind, lr=lr, epochs=1, batch_size=batch_size,
                       sampling="random", iters_per_epoch=iters, seed=seed, progress=False)
        results[name] = (np.array(hist.loss), net.accuracy(x_test, t_test))
    for i in list(range(0, iters, report_every)) + [iters - 1]:
        print(f"iteration {i + 1:5d}: " + "  ".join(f"{n} {r[0][i]:.4f}" for n, r in results.items()))
    print("test accuracy:    " + "  ".join(f"{n} {r[1]:.4f}" for n, r in results.items()))
    return results


def main(argv: Optional[List[str]] = None) -> dict:
    """Run both parts and draw their figures (``--iters``/``--compare-iters`` make them small)."""
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=10000, help="iterations of the tutorials' loop")
    p.add_argument("--compare-iters", type=int, default=2000, help="iterations per optimizer")
    p.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    p.add_argument("--subset", action="store_true", help="the MNIST subset shipped in the package")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ((x, t), (xt, tt)), what = _common.mnist(args.train_size, subset=args.subset)
    print(f"data: {what}")
    t0 = time.perf_counter()
    net, losses, train_acc, test_acc = tutorial_loop(x, t, xt, tt, iters_num=args.iters, seed=args.seed)
    print(f"{args.iters} iterations in {time.perf_counter() - t0:.1f} s; final loss (mean of the last 100) "
          f"{np.mean(losses[-100:]):.4f}")
    results = compare_optimizers(x, t, xt, tt, iters=args.compare_iters, seed=args.seed,
                                 report_every=max(1, args.compare_iters // 4))
    if not args.no_plots:
        plt = _common.pyplot()
        from matplotlib.ticker import MaxNLocator
        window = max(1, min(100, len(losses) // 20))
        iters_per_epoch = max(len(t) // 100, 1)
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        it = np.arange(1, len(losses) + 1)
        ax1.plot(it, losses, color="0.78", lw=0.5, label="per iteration (batch of 100)")
        ax1.plot(it, _common.smooth(losses, window), color="tab:blue", lw=1.8,
                 label=f"moving average ({window} iterations)")
        ax1.set(title="Training loss, 784-50-10 net, SGD lr 0.1", xlabel="iteration",
                ylabel="loss (cross-entropy, nats)", ylim=(0, min(2.5, max(losses) * 1.05)))
        ax1.legend(loc="upper right")
        ep = np.arange(1, len(test_acc) + 1)
        ax2.plot(ep, 100 * np.array(train_acc), "o-", label="train")
        ax2.plot(ep, 100 * np.array(test_acc), "s--", label="test")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set(title=f"Accuracy per epoch ({iters_per_epoch} iterations each)", xlabel="epoch",
                ylabel="accuracy (%)")
        if len(test_acc):
            ax2.set_ylim(max(0, 100 * min(train_acc + test_acc) - 2), 100)
        ax2.legend(loc="lower right")
        fig.tight_layout()
        _common.save(fig, args.out, "mnist_training.png")

        fig, ax = plt.subplots(figsize=(6.8, 4.4))
        markers = {"SGD": "o", "Momentum": "x", "AdaGrad": "s", "Adam": "D"}
        w = max(1, min(50, args.compare_iters // 20))
        for name, (loss, acc) in results.items():
            x_it = np.arange(1, loss.size + 1)
            ax.plot(x_it, _common.smooth(loss, w), marker=markers[name], markevery=max(1, loss.size // 10),
                    ms=5, label=f"{name} (lr {OPTIMIZERS[name][1]:g}): test {100 * acc:.1f} %")
        ax.set(title="Optimizers on MNIST, 784-100x4-10 ReLU net", xlabel="iteration (batch of 128)",
               ylabel=f"loss (nats, moving average of {w})", ylim=(0, 1.0))
        ax.legend(loc="upper right")
        fig.tight_layout()
        _common.save(fig, args.out, "optimizer_comparison.png")
    return {"losses": losses, "train_acc": train_acc, "test_acc": test_acc, "compare": results}


if __name__ == "__main__":
    main()
