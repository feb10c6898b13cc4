"""Backprop checked against the numerical gradient, and a bug the check catches (chapter 5).

The tutorials' ``gradient_check.py``: a 784-50-10 ``TwoLayerNet``, the first three training
images, backprop's gradient against central differences, printed as the mean absolute
difference per parameter; then ``pfg.gradient_check``'s table and verdict. Then the same for a
net whose backprop divides the bias gradients by the batch size N a second time (a classic
bug: ``db = sum(dout) / N`` after ``dout`` was already divided by N): the check fails on b1 and
b2 and nowhere else. Draws ``gradient_check.png``.

    python examples/gradient_check.py --out docs
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyfastgrad as pfg  # noqa: E402


class BuggyTwoLayerNet(pfg.TwoLayerNet):
    """A TwoLayerNet whose backprop divides db by N twice (the deliberate bug)."""

    def gradient(self, x, t):
        """Backprop with the bug: ``db1``, ``db2`` divided by the batch size once more."""
        grads = super().gradient(x, t)
        n = np.asarray(x).shape[0]
        for key in ("b1", "b2"):
            grads[key] = grads[key] / n
        return grads


def main(argv: Optional[List[str]] = None) -> dict:
    """Check the correct and the buggy net; print both tables; draw the errors."""
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=3, help="images in the checked batch")
    p.add_argument("--subset", action="store_true", help="the MNIST subset shipped in the package")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ((x_train, t_train), _), what = _common.mnist(subset=args.subset)
    x_batch = x_train[:args.batch].astype(np.float64)
    t_batch = t_train[:args.batch]
    print(f"data: first {args.batch} training images of {what}")
    out = {}
    for name, cls in (("correct backprop", pfg.TwoLayerNet), ("buggy backprop (db / N twice)", BuggyTwoLayerNet)):
        net = cls(784, 50, 10, seed=args.seed)
        grad_numerical = net.numerical_gradient(x_batch, t_batch)
        grad_backprop = net.gradient(x_batch, t_batch)
        print(f"--- {name}: mean |backprop - numerical| per parameter (the tutorials' table)")
        diffs = {}
        for key in grad_numerical:
            diffs[key] = float(np.average(np.abs(grad_backprop[key] - grad_numerical[key])))
            print(f"{key}:{diffs[key]:.2e}")
        res = pfg.gradient_check(net, x_batch, t_batch)
        print(res)
        out[name] = (diffs, res)
    if not args.no_plots:
        plt = _common.pyplot()
        fig, ax = plt.subplots(figsize=(6.8, 4.2))
        keys = list(out["correct backprop"][1].params)
        pos = np.arange(len(keys))
        for k, (name, color) in enumerate((("correct backprop", "tab:blue"),
                                           ("buggy backprop (db / N twice)", "tab:red"))):
            res = out[name][1]
            vals = [max(res.params[key].rel, 1e-17) for key in keys]
            ax.bar(pos + (k - 0.5) * 0.38, vals, width=0.38, color=color,
                   label=f"{name}: {'PASS' if res.passed else 'FAIL'}")
        ax.axhline(out["correct backprop"][1].rtol, color="k", ls="--", lw=1, label="rtol (float64)")
        ax.set_yscale("log")
        ax.set_xticks(pos)
        ax.set_xticklabels(keys)
        ax.set(title=f"Gradient check, 784-50-10 net, batch of {args.batch}", xlabel="parameter",
               ylabel="relative error (log scale)")
        ax.legend(loc="center left", fontsize=9)
        fig.tight_layout()
        _common.save(fig, args.out, "gradient_check.png")
    return out


if __name__ == "__main__":
    main()
