"""Function fitting with sigmoid "towers": why one hidden layer of sigmoids can fit any surface.

A steep sigmoid ``sigmoid(w (x - s))`` is a step at ``s``; two of them make a bump, 1 on
``[s1, s2]`` and 0 elsewhere. One bump per axis, added and thresholded by one more sigmoid,
make a *tower*: 1 over a rectangle, 0 around it. Towers on a grid, each as tall as a target
surface at its centre, add up to that surface; more, narrower towers fit it better. Then a
net learns such a fit by itself: a 2-50-1 net with sigmoid hidden units and a linear output,
trained under mean squared error. Draws ``sigmoid_towers.png`` and ``surface_fit.png``.

    python examples/sigmoid_towers.py --out docs
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyfastgrad as pfg  # noqa: E402

STEEP = 700.0  # weight of the steep sigmoids: a step over ~1/150 of the unit interval (< 709: no overflow)
THRESH = 40.0  # weight of the tower's output sigmoid


def step(x, s: float, w: Optional[float] = None):
    """A steep sigmoid ``sigmoid(w (x - s))`` (w: default :data:`STEEP`): about 0 left of ``s``, 1 right."""
    return pfg.sigmoid((STEEP if w is None else w) * (np.asarray(x, dtype=np.float64) - s))


def bump(x, s1: float, s2: float, w: Optional[float] = None):
    """Two steep sigmoids, ``step(s1) - step(s2)``: 1 on [s1, s2], 0 outside."""
    return step(x, s1, w) - step(x, s2, w)


def tower(x, y, x1: float, x2: float, y1: float, y2: float, height: float = 1.0):
    """``height`` over the rectangle [x1, x2] x [y1, y2], 0 elsewhere: one bump per axis, added,
    then thresholded at 1.5 by a last sigmoid (only where both bumps are on does the sum pass it)."""
    return height * pfg.sigmoid(THRESH * (bump(x, x1, x2) + bump(y, y1, y2) - 1.5))


def target(x, y):
    """The surface to fit: two Gaussian hills of heights 0.8 and 0.5 on the unit square."""
    return (0.8 * np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.03)
            + 0.5 * np.exp(-((x - 0.7) ** 2 + (y - 0.3) ** 2) / 0.05))


def towers_sum(x, y, n: int):
    """n x n towers on the unit square, each as tall as the target at its centre, summed."""
    edges = np.linspace(0.0, 1.0, n + 1)
    c = (edges[:-1] + edges[1:]) / 2
    out = np.zeros(np.broadcast(x, y).shape)
    for i in range(n):
        for j in range(n):
            out += tower(x, y, edges[i], edges[i + 1], edges[j], edges[j + 1], target(c[i], c[j]))
    return out


def main(argv: Optional[List[str]] = None) -> dict:
    """Towers, their sums and the trained fit; ``--epochs``/``--grid`` make it small."""
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--grid", type=int, default=41, help="training points per axis")
    p.add_argument("--hidden", type=int, default=50, help="sigmoid hidden units")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--lr", type=float, default=0.03, help="Adam's learning rate (cosine decay to 0)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--eval-grid", type=int, default=200,
                   help="test points per axis (cell centres of the unit square: never on a tower's edge)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = {}
    g = (np.arange(args.eval_grid) + 0.5) / args.eval_grid  # cell centres
    X, Y = np.meshgrid(g, g, indexing="ij")
    one = tower(X, Y, 0.4, 0.6, 0.3, 0.7)
    vals = [float(tower(px, py, 0.4, 0.6, 0.3, 0.7)) for px, py in ((0.5, 0.5), (0.1, 0.5), (0.5, 0.1), (0.4, 0.5))]
    print(f"one tower over [0.4, 0.6] x [0.3, 0.7]: {vals[0]:.3f} at (0.5, 0.5), {vals[1]:.3f} at (0.1, 0.5), "
          f"{vals[2]:.3f} at (0.5, 0.1), {vals[3]:.3f} on its edge at (0.4, 0.5)")
    out["tower"] = vals
    T = target(X, Y)
    for n in (5, 10, 20, 40):
        err = np.sqrt(np.mean((towers_sum(X, Y, n) - T) ** 2))
        print(f"{n:2d} x {n:2d} towers summed: RMS error against the target {err:.4f} ({len(g)} x {len(g)} points)")
        out[f"towers{n}"] = err

    gt = np.linspace(0, 1, args.grid)
    A, B = np.meshgrid(gt, gt, indexing="ij")
    x_train = np.stack([A.ravel(), B.ravel()], axis=1)
    t_train = target(A, B).reshape(-1, 1)
    x_test = np.stack([X.ravel(), Y.ravel()], axis=1)
    t_test = T.reshape(-1, 1)
    net = pfg.Net([2, args.hidden, 1], activation="sigmoid", loss="mse", weight_init=4.0, seed=args.seed)
    hist = pfg.fit(net, 2 * x_train - 1, t_train, 2 * x_test - 1, t_test, optimizer="adam", lr=args.lr,
                   epochs=args.epochs, batch_size=min(args.batch_size, len(t_train)), seed=args.seed, progress=False,
                   schedule="cosine")
    print(f"2-{args.hidden}-1 net (sigmoid hidden, linear output, MSE), Adam lr {args.lr:g} cosine, {args.epochs} "
          f"epochs on {len(t_train)} points: test MSE {hist.test_mse[-1]:.2e}, R2 {hist.test_r2[-1]:.4f}")
    out.update(hist=hist, r2=hist.test_r2[-1], mse=hist.test_mse[-1])
    if not args.no_plots:
        plt = _common.pyplot()
        sub = max(1, len(g) // 40)  # about 40 x 40 surface points (keeps the PNGs small)
        fig = plt.figure(figsize=(12, 3.6))
        ax = fig.add_subplot(1, 4, 1)
        ax.plot(g, step(g, 0.4), label="step at 0.4")
        ax.plot(g, step(g, 0.6), "--", label="step at 0.6")
        ax.fill_between(g, 0, bump(g, 0.4, 0.6), color="tab:green", alpha=0.3, label="difference: a bump")
        ax.set(title=f"Steep sigmoids (w = {STEEP:g})", xlabel="x (dimensionless)", ylabel="output",
               ylim=(-0.1, 1.25))
        ax.legend(loc="upper left", fontsize=8)
        panels = ((one, "One tower"), (towers_sum(X, Y, 10), "10 x 10 towers summed"), (T, "Target surface"))
        for k, (Z, title) in enumerate(panels, start=2):
            ax = fig.add_subplot(1, 4, k, projection="3d")
            ax.plot_surface(X[::sub, ::sub], Y[::sub, ::sub], Z[::sub, ::sub], cmap="viridis", linewidth=0,
                            rcount=41, ccount=41)
            ax.set(title=title, xlabel="x", ylabel="y", zlabel="height")
            ax.view_init(30, -60)
        fig.tight_layout()
        _common.save(fig, args.out, "sigmoid_towers.png")

        fit = net.predict(2 * x_test - 1).reshape(X.shape)
        fig = plt.figure(figsize=(13, 4.2))
        for k, (Z, title) in enumerate(((T, "Target surface"),
                                        (fit, f"Net's fit (2-{args.hidden}-1, R² {hist.test_r2[-1]:.4f})")),
                                       start=1):
            ax = fig.add_subplot(1, 3, k, projection="3d")
            ax.plot_surface(X[::sub, ::sub], Y[::sub, ::sub], Z[::sub, ::sub], cmap="viridis", linewidth=0,
                            vmin=0, vmax=0.85)
            ax.set(title=title, xlabel="x", ylabel="y", zlabel="height", zlim=(-0.05, 0.9))
            ax.view_init(30, -60)
        ax = fig.add_subplot(1, 3, 3)
        ax.set_box_aspect(0.8)
        ax.semilogy(hist.epoch, hist.train_mse, label=f"train ({args.grid}x{args.grid} grid)")
        ax.semilogy(hist.epoch, hist.test_mse, "--", label=f"test ({len(g)}x{len(g)} grid)")
        ax.set(title="Mean squared error per epoch", xlabel="epoch", ylabel="MSE (log scale)")
        ax.legend(loc="upper right")
        fig.subplots_adjust(left=0.0, right=0.98, bottom=0.12, top=0.9, wspace=0.3)
        _common.save(fig, args.out, "surface_fit.png")
    return out


if __name__ == "__main__":
    main()
