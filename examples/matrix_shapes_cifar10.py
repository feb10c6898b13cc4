"""The matrix-shape walk-through of a two-layer net on 32x32x3 colour images, then CIFAR-10.

The net is the one of the tutorials' two-layer classifier: 3072 inputs, 20 hidden ReLU units,
10 class scores, softmax loss plus ``reg * sum(W**2)`` over both weight matrices. Part one does
forward and backward by hand in numpy and prints the shape of every array and every gradient,
then checks them against ``pfg.TwoLayerNet`` (whose L2 term is ``0.5 * weight_decay * sum(W**2)``,
so ``weight_decay = 2 * reg`` is the same loss). Part two trains the net on CIFAR-10 read by
:func:`pyfastgrad.datasets.load_cifar10` from the official binary batches; without them it says
so and stops after part one.

    python examples/matrix_shapes_cifar10.py --data ~/data/cifar-10-batches-bin
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyfastgrad as pfg  # noqa: E402
from pyfastgrad.datasets import CIFAR10_CLASSES, load_cifar10  # noqa: E402

D, H, C = 3072, 20, 10  # 32*32*3 inputs, hidden units, classes


def walk_through(N: int = 5, reg: float = 0.05, seed: int = 0) -> dict:
    """Forward and backward of the two-layer net by hand, printing every shape; returns the
    loss and gradients and the largest difference from ``pfg.TwoLayerNet``'s."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    y = rng.integers(0, C, N)
    net = pfg.TwoLayerNet(D, H, C, weight_init_std=1e-2, weight_decay=2 * reg, seed=seed)
    W1, b1, W2, b2 = (net.params[k].copy() for k in ("W1", "b1", "W2", "b2"))
    shapes = []

    def show(name: str, a: np.ndarray, how: str) -> None:
        shapes.append((name, a.shape))
        print(f"  {name:<7} {str(a.shape):<12} {how}")

    print(f"forward and backward for N = {N} images of 32x32x3 = {D} values, {H} hidden units, {C} classes:")
    show("X", X, "input, one image per row")
    show("W1", W1, "first-layer weights")
    show("b1", b1, "first-layer biases")
    z1 = X @ W1 + b1
    h = np.maximum(0, z1)
    show("h", h, "ReLU(X W1 + b1)")
    show("W2", W2, "second-layer weights")
    scores = h @ W2 + b2
    show("scores", scores, "h W2 + b2")
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(N), y])) + reg * (np.sum(W1 ** 2) + np.sum(W2 ** 2))
    print(f"  loss = data loss + reg * (sum W1^2 + sum W2^2) = {loss:.6f}   (reg = {reg:g})")
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores /= N
    show("dscores", dscores, "(softmax - onehot(y)) / N")
    dW2 = h.T @ dscores + 2 * reg * W2
    show("dW2", dW2, "h^T dscores + 2 reg W2   (same shape as W2)")
    db2 = dscores.sum(axis=0)
    show("db2", db2, "dscores summed over the batch")
    dh = dscores @ W2.T
    show("dh", dh, "dscores W2^T   (same shape as h)")
    dh[z1 <= 0] = 0
    dW1 = X.T @ dh + 2 * reg * W1
    show("dW1", dW1, "X^T dh + 2 reg W1   (same shape as W1)")
    db1 = dh.sum(axis=0)
    show("db1", db1, "dh summed over the batch")
    mine = {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}
    lib_loss, grads = net.loss_and_gradient(X, y)
    diff = max(float(np.max(np.abs(mine[k] - grads[k]))) for k in mine)
    print(f"pfg.TwoLayerNet({D}, {H}, {C}, weight_decay=2*reg): loss {lib_loss:.6f}, "
          f"max |gradient difference| {diff:.1e}")
    return {"shapes": shapes, "loss": loss, "lib_loss": lib_loss, "max_diff": diff}


def main(argv: Optional[List[str]] = None) -> dict:
    """Part one always; part two when CIFAR-10 is found (``--data`` or the defaults)."""
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="CIFAR-10 binary batches: a directory or the tarball "
                   "(default $PYFASTGRAD_CIFAR10, else the user cache)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-batches", type=int, default=5, help="how many of the 5 training files to read")
    p.add_argument("--reg", type=float, default=0.05, help="L2 strength: loss + reg * sum(W**2)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = walk_through(reg=args.reg, seed=args.seed)
    try:
        (x, t), (xt, tt) = load_cifar10(args.data, train_batches=args.train_batches)
    except FileNotFoundError as exc:
        print(f"CIFAR-10 is not on this machine, so no training: {exc}")
        out["trained"] = False
        return out
    print(f"CIFAR-10 from {args.data or 'the default place'}: {len(t):,} training / {len(tt):,} test images")
    mean = x.mean(axis=0)  # subtract the mean image, as the tutorials do
    x, xt = x - mean, xt - mean
    net = pfg.TwoLayerNet(D, H, C, weight_init_std="he", weight_decay=2 * args.reg, seed=args.seed,
                          dtype=np.float32)
    hist = pfg.fit(net, x, t, xt, tt, optimizer="adam", lr=args.lr, epochs=args.epochs,
                   batch_size=min(200, len(t)), seed=args.seed, progress=False)
    for ep, a, b in zip(hist.epoch, hist.train_acc, hist.test_acc):
        print(f"epoch {ep:2d}  train acc {a:.4f}  test acc {b:.4f}")
    pred = net.predict(xt).argmax(axis=1)
    per_class = [float(np.mean(pred[tt == c] == c)) if np.any(tt == c) else float("nan") for c in range(C)]
    print("test accuracy per class: " + ", ".join(f"{n} {a:.2f}" for n, a in zip(CIFAR10_CLASSES, per_class)))
    out.update(trained=True, hist=hist, per_class=per_class)
    if not args.no_plots:
        plt = _common.pyplot()
        from matplotlib.ticker import MaxNLocator
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        steps = np.arange(1, len(hist.loss) + 1)
        ax1.plot(steps, hist.loss, color="0.75", lw=0.6, label="per iteration")
        ax1.plot(steps, _common.smooth(hist.loss, 50), color="tab:blue", label="moving average (50)")
        ax1.set(title="CIFAR-10, 3072-20-10 net: training loss", xlabel="iteration",
                ylabel="loss (cross-entropy + L2, nats)")
        ax1.legend()
        ax2.plot(hist.epoch, 100 * np.array(hist.train_acc), "o-", label="train")
        ax2.plot(hist.epoch, 100 * np.array(hist.test_acc), "s--", label="test")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set(title="CIFAR-10 accuracy per epoch", xlabel="epoch", ylabel="accuracy (%)")
        ax2.legend(loc="lower right")
        fig.tight_layout()
        _common.save(fig, args.out, "cifar10_training.png")
    return out


if __name__ == "__main__":
    main()
