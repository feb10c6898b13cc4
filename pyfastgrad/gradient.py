"""Numerical gradients, gradient descent and gradient checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from ._backend import kernels
from ._validate import positive

__all__ = ["numerical_gradient", "gradient_descent", "gradient_check", "GradientCheckResult"]


def _check_x(x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array (it is perturbed in place), got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(
            f"numerical_gradient needs a floating-point array, got dtype {x.dtype}: "
            "x + h would round back to x and every derivative would be 0; use x.astype(np.float64)")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype {x.dtype} is not supported; use float32 or float64")
    if x.size == 0:
        raise ValueError("x is empty: there is nothing to differentiate")
    if not x.flags.writeable:
        raise ValueError("x is read-only; numerical_gradient perturbs it in place (pass a copy)")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or Inf")


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4,
                       scheme: str = "central", richardson: bool = False,
                       backend: Optional[str] = None) -> np.ndarray:
    """Gradient of ``f`` at ``x`` by finite differences, one element at a time.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``. It may ignore its argument and read ``x`` through a
        closure (the tutorials' ``lambda W: net.loss(x, t)`` idiom): ``x`` is
        perturbed in place. A numba-jitted ``f`` runs the whole loop in
        nopython mode on the numba backend.
    x : ndarray, float32 or float64, any shape (views and non-contiguous arrays included)
        Restored exactly (bit for bit) before returning.
    h : float
        Step, default 1e-4.
    scheme : {'central', 'forward'}
        ``(f(x+h) - f(x-h)) / 2h`` (error O(h^2)) or ``(f(x+h) - f(x)) / h`` (O(h)).
    richardson : bool
        Richardson extrapolation from steps h and h/2: error O(h^4) for central,
        O(h^2) for forward, at twice the cost.

    Returns
    -------
    ndarray of x's shape and dtype.
    """
    _check_x(x)
    h = positive(h, "h")
    if scheme not in ("central", "forward"):
        raise ValueError(f"scheme must be 'central' or 'forward', got {scheme!r}")
    if not callable(f):
        raise TypeError("f must be callable")
    k = kernels(backend)
    g = k.numerical_gradient(f, x, h, scheme)
    if richardson:
        g2 = k.numerical_gradient(f, x, h / 2, scheme)
        p = 2 if scheme == "central" else 1  # leading error term h^p
        g = (2 ** p * g2 - g) / (2 ** p - 1)
    return g


def gradient_descent(f: Callable[[np.ndarray], float], init_x, lr: float = 0.01, step_num: int = 100,
                     backend: Optional[str] = None) -> np.ndarray:
    """Plain gradient descent ``x <- x - lr * grad f(x)`` with the numerical gradient.

    Works on a float64 copy of ``init_x`` (the caller's array is not modified) and
    returns the final ``x``.
    """
    lr = positive(lr, "lr")
    if int(step_num) < 0:
        raise ValueError(f"step_num must be >= 0, got {step_num}")
    x = np.array(init_x, dtype=np.float64 if np.asarray(init_x).dtype.kind != "f" else None, copy=True)
    for _ in range(int(step_num)):
        x -= lr * numerical_gradient(f, x, backend=backend)
    return x


@dataclass
class GradientCheckResult:
    """Per-parameter comparison of backprop with the numerical gradient.

    ``max_abs[key]`` is max |g_backprop - g_numerical|; ``rel[key]`` that divided by
    max(|g_numerical|) (normwise, so tiny entries do not blow up). ``passed`` when
    every ``rel`` is below ``threshold``.
    """

    max_abs: Dict[str, float] = field(default_factory=dict)
    mean_abs: Dict[str, float] = field(default_factory=dict)
    rel: Dict[str, float] = field(default_factory=dict)
    threshold: float = 1e-6

    @property
    def passed(self) -> bool:
        return all(v < self.threshold for v in self.rel.values())

    @property
    def max_rel(self) -> float:
        return max(self.rel.values()) if self.rel else 0.0

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [f"{'param':<8}{'max abs err':>14}{'mean abs err':>14}{'rel err':>12}"]
        for key in self.max_abs:
            lines.append(f"{key:<8}{self.max_abs[key]:>14.3e}{self.mean_abs[key]:>14.3e}{self.rel[key]:>12.3e}")
        lines.append(f"{'PASS' if self.passed else 'FAIL'} (threshold {self.threshold:g} relative)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"GradientCheckResult(passed={self.passed}, max_rel={self.max_rel:.3e}, "
                f"threshold={self.threshold:g})")


def gradient_check(net, x, t, threshold: float = 1e-6, h: float = 1e-4, verbose: bool = False
                   ) -> GradientCheckResult:
    """Compare ``net.gradient`` (backprop) with ``net.numerical_gradient`` (central differences).

    Returns a :class:`GradientCheckResult`; ``print(result)`` shows the tutorials' table.
    Run it in float64: in float32 the numerical gradient itself is only good to ~1e-2.
    """
    g_num = net.numerical_gradient(x, t, h=h) if _accepts_h(net) else net.numerical_gradient(x, t)
    g_bp = net.gradient(x, t)
    res = GradientCheckResult(threshold=threshold)
    for key in g_num:
        a, b = np.asarray(g_bp[key], dtype=np.float64), np.asarray(g_num[key], dtype=np.float64)
        diff = np.abs(a - b)
        res.max_abs[key] = float(diff.max())
        res.mean_abs[key] = float(diff.mean())
        res.rel[key] = float(diff.max() / max(np.abs(b).max(), np.abs(a).max(), 1e-300))
    if verbose:
        print(res)
    return res


def _accepts_h(net) -> bool:
    import inspect
    try:
        return "h" in inspect.signature(net.numerical_gradient).parameters
    except (TypeError, ValueError):
        return False
