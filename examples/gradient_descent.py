"""Partial derivatives, the gradient and gradient descent on f(x0, x1) = x0^2 + x1^2 (chapter 4).

Prints the tutorials' numbers: the partial derivatives at (3, 4), the gradient at three points,
and where gradient descent from (-3, 4) ends after 100 steps with learning rates 0.1, 10 and
1e-10. Draws the gradient field as arrows (``gradient_field.png``) and the descent paths on the
contour lines with the distance to the minimum per step (``gradient_descent.png``).

    python examples/gradient_descent.py --out docs
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyfastgrad as pfg  # noqa: E402


def function_2(x):
    """f(x0, x1) = x0^2 + x1^2 (its gradient is (2 x0, 2 x1))."""
    return np.sum(x ** 2)


def partial(f, x: float) -> float:
    """Derivative of a one-variable function at ``x`` (central differences, h = 1e-4)."""
    return float(pfg.numerical_gradient(lambda v: f(v[0]), np.array([x], dtype=np.float64))[0])


LRS = (0.1, 10.0, 1e-10)


def main(argv: Optional[List[str]] = None) -> dict:
    """Print the derivatives and descent results; draw the two figures unless ``--no-plots``."""
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="gradient descent steps")
    args = p.parse_args(argv)
    out = {}
    d0 = partial(lambda x0: x0 * x0 + 4.0 ** 2.0, 3.0)  # the tutorials' function_tmp1
    d1 = partial(lambda x1: 3.0 ** 2.0 + x1 * x1, 4.0)  # function_tmp2
    print(f"df/dx0 at (3, 4) = {d0!r}")
    print(f"df/dx1 at (3, 4) = {d1!r}")
    out["partials"] = (d0, d1)
    for point in ((3.0, 4.0), (0.0, 2.0), (3.0, 0.0)):
        g = pfg.numerical_gradient(function_2, np.array(point))
        print(f"gradient at {point} = {g}")
        out[point] = g
    paths = {}
    for lr in LRS:
        x, path = pfg.gradient_descent(function_2, np.array([-3.0, 4.0]), lr=lr, step_num=args.steps,
                                       history=True)
        paths[lr] = path
        print(f"gradient descent from (-3, 4), lr {lr:g}, {args.steps} steps: x = {x}")
        out[lr] = x
    if not args.no_plots:
        plt = _common.pyplot()
        # the gradient field: arrows of -grad f, pointing downhill to the minimum
        g = np.arange(-2.0, 2.5, 0.25)
        X0, X1 = np.meshgrid(g, g)
        pts = np.stack([X0.ravel(), X1.ravel()], axis=1)
        grad = np.array([pfg.numerical_gradient(function_2, q.copy()) for q in pts])
        fig, ax = plt.subplots(figsize=(5.6, 5.2))
        fine = np.linspace(-2.2, 2.2, 200)
        F0, F1 = np.meshgrid(fine, fine)
        cs = ax.contour(F0, F1, F0 ** 2 + F1 ** 2, levels=[0.25, 1, 2, 3, 4, 6], colors="0.75",
                        linewidths=0.8)
        ax.clabel(cs, fmt="f=%g", fontsize=8)
        ax.quiver(pts[:, 0], pts[:, 1], -grad[:, 0], -grad[:, 1], angles="xy", color="tab:blue",
                  label="−∇f (numerical)")
        ax.set(title="Gradient field of f = x0² + x1² (arrows: −∇f)", xlabel="x0 (dimensionless)",
               ylabel="x1 (dimensionless)", xlim=(-2.2, 2.2), ylim=(-2.2, 2.2), aspect="equal")
        ax.legend(loc="upper right", framealpha=0.9)
        fig.tight_layout()
        _common.save(fig, args.out, "gradient_field.png")

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
        fine = np.linspace(-4.5, 4.5, 200)
        F0, F1 = np.meshgrid(fine, fine)
        ax1.contour(F0, F1, F0 ** 2 + F1 ** 2, levels=[0.5, 2, 5, 10, 15, 20], colors="0.75", linewidths=0.8)
        styles = {0.1: "tab:blue", 10.0: "tab:red", 1e-10: "tab:green"}
        path = paths[0.1]
        ax1.plot(path[:, 0], path[:, 1], "o-", color=styles[0.1], ms=4, lw=1, label="lr 0.1: converges to (0, 0)")
        ax1.plot(path[-1:, 0], path[-1:, 1], "*", color="k", ms=12, zorder=5)  # the start is drawn below
        ax1.plot([-3], [4], "*", color="gold", mec="k", ms=16, zorder=6, label="start (−3, 4)")
        fin10, fin_small = paths[10.0][-1], paths[1e-10][-1]
        ax1.text(0.03, 0.03, f"lr 10: diverges, x = ({fin10[0]:.2e}, {fin10[1]:.2e})\n"
                 f"lr 1e-10: stays, x = ({fin_small[0]:.8f}, {fin_small[1]:.8f})",
                 transform=ax1.transAxes, fontsize=9, va="bottom",
                 bbox=dict(boxstyle="round", fc="white", ec="0.7"))
        ax1.axhline(0, color="0.5", ls="--", lw=0.8)
        ax1.axvline(0, color="0.5", ls="--", lw=0.8)
        ax1.set(title=f"Gradient descent from (−3, 4), {args.steps} steps", xlabel="x0 (dimensionless)",
                ylabel="x1 (dimensionless)", xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), aspect="equal")
        ax1.legend(loc="upper right", fontsize=9, framealpha=0.9)
        for lr in LRS:
            dist = np.linalg.norm(paths[lr], axis=1)
            ax2.semilogy(np.arange(dist.size), dist, "-", color=styles[lr], lw=2, label=f"lr {lr:g}")
        ax2.set(title="Distance to the minimum per step", xlabel="step",
                ylabel="‖x‖ (dimensionless, log scale)")
        ax2.legend(loc="center right", title="learning rate")
        fig.tight_layout()
        _common.save(fig, args.out, "gradient_descent.png")
    return out


if __name__ == "__main__":
    main()
