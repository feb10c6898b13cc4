"""Loss functions and numerical differentiation (the tutorials' chapter 4, first half).

Prints the tutorials' numbers: mean squared error and cross-entropy of the one-hot example,
and the numerical derivative of f(x) = 0.01 x^2 + 0.1 x at x = 5 and x = 10; draws f with its
tangent lines (``numerical_diff.png``).

    python examples/losses.py --out docs
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyfastgrad as pfg  # noqa: E402

# the tutorials' one-hot example: the true class is 2
T = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], dtype=np.float64)
Y_GOOD = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])  # argmax 2: right
Y_BAD = np.array([0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0])   # argmax 7: wrong


def function_1(x):
    """The tutorials' f(x) = 0.01 x^2 + 0.1 x (exact derivative 0.02 x + 0.1)."""
    return 0.01 * x ** 2 + 0.1 * x


def numerical_diff(f, x: float) -> float:
    """df/dx at the scalar ``x`` through :func:`pyfastgrad.numerical_gradient` (central, h = 1e-4)."""
    return float(pfg.numerical_gradient(lambda v: f(v[0]), np.array([x], dtype=np.float64))[0])


def main(argv: Optional[List[str]] = None) -> dict:
    """Print the losses and derivatives; draw the tangent lines unless ``--no-plots``."""
    args = _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    out = {}
    print("one-hot example, t = class 2")
    for name, y in (("y = 0.6 on class 2 (right)", Y_GOOD), ("y = 0.6 on class 7 (wrong)", Y_BAD)):
        mse = pfg.mean_squared_error(y, T)
        cee = pfg.cross_entropy_error(y, T)
        print(f"  {name}: mean squared error {mse:.4f}   cross-entropy {cee!r}")
        out[name] = (mse, cee)
    sse = float(np.sum((Y_GOOD - T) ** 2))
    print(f"  mean_squared_error is 1/2 * sum((y - t)**2): a commonly printed {sse:.3f} for the first y "
          "omits the 1/2")
    out["sum_sq"] = sse

    print("numerical differentiation of f(x) = 0.01 x^2 + 0.1 x (central differences, h = 1e-4)")
    for x in (5.0, 10.0):
        d = numerical_diff(function_1, x)
        print(f"  f'({x:g}) = {d!r}   (exact {0.02 * x + 0.1:g})")
        out[f"diff{x:g}"] = d

    if not args.no_plots:
        plt = _common.pyplot()
        xs = np.arange(0.0, 20.0, 0.1)
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        ax.plot(xs, function_1(xs), color="black", lw=2, label="f(x) = 0.01x² + 0.1x")
        for x0, color in ((5.0, "tab:blue"), (10.0, "tab:orange")):
            d = out[f"diff{x0:g}"]
            ax.plot(xs, d * (xs - x0) + function_1(x0), "--", color=color,
                    label=f"tangent at x = {x0:g}: slope {d:.4f}")
            ax.plot([x0], [function_1(x0)], "o", color=color)
        ax.set(title="Numerical derivative: f and its tangent lines", xlabel="x (dimensionless)",
               ylabel="f(x) (dimensionless)", xlim=(0, 20), ylim=(-1, 6))
        ax.legend(loc="upper left")
        fig.tight_layout()
        _common.save(fig, args.out, "numerical_diff.png")
    return out


if __name__ == "__main__":
    main()
