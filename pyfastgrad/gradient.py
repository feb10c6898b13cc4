"""Numerical gradients and gradient descent (the tutorials' chapter 4), fast.

Gradient checks (backprop against these numbers) live in :mod:`pyfastgrad.gradcheck`;
``gradient_check`` and ``check_gradient`` are re-exported here for the tutorials' imports.
"""
from __future__ import annotations

import concurrent.futures
from typing import Callable, Optional

import numpy as np

from ._backends import kernels
from ._validate import positive

__all__ = ["numerical_gradient", "gradient_descent", "default_step", "gradient_check", "check_gradient",
           "GradientCheckResult"]

H64 = 1e-4  # the tutorials' step: float64 results stay those of the book's loop


def default_step(x: np.ndarray) -> float:
    """The step ``numerical_gradient`` uses when ``h=None``.

    float64: the tutorials' ``1e-4``. float32: ``eps**(1/3) * max(1, max|x|)`` rounded to a
    power of two (4.9e-3 -> 2**-8 for ``|x| <= 1``), the step that balances the central
    difference's truncation error O(h^2) against float32 rounding O(eps/h); a power of two so
    that ``x + h`` is exact for most x and the step taken is the step divided by.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        return H64
    scale = max(1.0, float(np.max(np.abs(x)))) if x.size else 1.0
    return float(2.0 ** np.round(np.log2(np.cbrt(np.finfo(np.float32).eps) * scale)))


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


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: Optional[float] = None,
                       scheme: str = "central", richardson: bool = False,
                       backend: Optional[str] = None, vectorized: bool = False,
                       executor: Optional[concurrent.futures.Executor] = None,
                       chunk_size: Optional[int] = None) -> np.ndarray:
    """Gradient of ``f`` at ``x`` by finite differences, one element at a time.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``. It may ignore its argument and read ``x`` through a
        closure (the tutorials' ``lambda W: net.loss(x, t)`` idiom): ``x`` is
        perturbed in place. A numba-jitted ``f`` runs the whole loop in
        nopython mode on the numba backend.
        With ``vectorized=True``: ``f(X) -> values`` for a batch ``X`` of shape
        ``(m, *x.shape)``, returning ``m`` values (it must use its argument).
    x : ndarray, float32 or float64, any shape (views and non-contiguous arrays included)
        Restored exactly (bit for bit) before returning, also when ``f`` raises.
    h : float or None
        Step. None: :func:`default_step` (1e-4 for float64, as the tutorials; a
        float32-sized step for float32, where 1e-4 loses 3 digits to rounding).
    scheme : {'central', 'forward'}
        ``(f(x+h) - f(x-h)) / 2h`` (error O(h^2)) or ``(f(x+h) - f(x)) / h`` (O(h)).
    richardson : bool
        Richardson extrapolation from steps h and h/2: error O(h^4) for central,
        O(h^2) for forward, at twice the cost.
    backend : None, 'cpp', 'numba' or 'numpy'
        The per-element loop (default: the global backend).
    vectorized : bool
        Evaluate whole blocks of perturbed points per call of ``f`` (``chunk_size`` points
        per block; default: blocks of about 2**22 numbers). ``x`` is then only read.
    executor : concurrent.futures.Executor or None
        Split the coordinates into chunks and evaluate them on this executor (a
        ``ProcessPoolExecutor``; a Dask ``distributed`` client's ``client.get_executor()``).
        ``f`` must be picklable (a module-level function, not a lambda, for process
        pools) and must use its argument: each chunk perturbs its own copy of ``x``.
        Create process pools with ``mp_context=multiprocessing.get_context("spawn")``
        (or "forkserver"): forking a process whose BLAS/OpenMP threads are running can
        deadlock the child.

    Returns
    -------
    ndarray of x's shape and dtype.

    Raises
    ------
    TypeError if f returns something other than a real number (ValueError for the wrong
    number of values with ``vectorized``); ValueError if a difference is NaN or inf.
    """
    _check_x(x)
    h = default_step(x) if h is None else positive(h, "h")
    if scheme not in ("central", "forward"):
        raise ValueError(f"scheme must be 'central' or 'forward', got {scheme!r}")
    if not callable(f):
        raise TypeError("f must be callable")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if executor is not None and not isinstance(executor, concurrent.futures.Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}")
    if vectorized or executor is not None:
        def diff(step: float) -> np.ndarray:
            return _blocked(f, x, step, scheme, vectorized, executor, chunk_size)
    else:
        k = kernels(backend)

        def diff(step: float) -> np.ndarray:
            return k.numerical_gradient(f, x, step, scheme)
    g = diff(h)
    if richardson:
        g2 = diff(h / 2)
        p = 2 if scheme == "central" else 1  # leading error term h^p
        g = (2 ** p * g2 - g) / (2 ** p - 1)
    if not np.isfinite(g).all():  # a NaN gradient would pass silently into gradient descent
        bad = np.unravel_index(int(np.flatnonzero(~np.isfinite(g))[0]), x.shape)
        raise ValueError(f"f returned NaN or inf when x{list(int(i) for i in bad)} was perturbed by +-{h:g} "
                         "(or the differences overflowed): the gradient is undefined there")
    return g


# ------------------------------------------------------------------ blocks and executors
def _as_values(v, m: int) -> np.ndarray:
    """f's output for m points as a float64 (m,) array, or a clear error."""
    a = np.asarray(v)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"f must return real numbers, got dtype {a.dtype}")
    if a.size != m or (m == 1 and a.ndim > 1):
        raise ValueError(f"f returned shape {a.shape} for {m} point(s); expected {m} scalar values"
                         + (" (with vectorized=True, f(X) gets a batch X of shape (m, *x.shape))"
                            if m > 1 else ""))
    return a.astype(np.float64).reshape(m)


def _chunk_diffs(f: Callable, x: np.ndarray, start: int, stop: int, h: float, forward: bool, f0: float,
                 vectorized: bool) -> np.ndarray:
    """Differences for the flat coordinates ``start:stop`` of ``x`` (a private copy is perturbed).

    Module-level so that process pools and Dask can pickle it."""
    hT = x.dtype.type(h)
    m = stop - start
    if vectorized:
        flat = x.reshape(-1)
        n = flat.size
        X = np.empty((m if forward else 2 * m, n), dtype=x.dtype)
        X[...] = flat
        # row r perturbs coordinate start + r: X's flat entries start + r*(n+1), a strided slice
        Xf = X.reshape(-1)
        Xf[start:start + m * (n + 1):n + 1] += hT
        if not forward:
            Xf[m * n + start:m * n + start + m * (n + 1):n + 1] -= hT
        v = _as_values(f(X.reshape((X.shape[0],) + x.shape)), X.shape[0])
        return (v[:m] - f0) / h if forward else (v[:m] - v[m:]) / (2 * h)
    xf = np.array(x, copy=True)  # perturbed one entry at a time; x itself is only read
    flat = xf.reshape(-1)
    out = np.empty(m, dtype=np.float64)
    for k, i in enumerate(range(start, stop)):
        tmp = flat[i]
        flat[i] = tmp + hT
        fp = float(_as_values(f(xf), 1)[0])
        if forward:
            out[k] = (fp - f0) / h
        else:
            flat[i] = tmp - hT
            out[k] = (fp - float(_as_values(f(xf), 1)[0])) / (2 * h)
        flat[i] = tmp
    return out


def _blocked(f: Callable, x: np.ndarray, h: float, scheme: str, vectorized: bool,
             executor: Optional[concurrent.futures.Executor], chunk_size: Optional[int]) -> np.ndarray:
    n = x.size
    forward = scheme == "forward"
    xc = np.ascontiguousarray(x)  # x itself is only read
    f0 = 0.0
    if forward:
        f0 = float(_as_values(f(xc.reshape((1,) + x.shape)) if vectorized else f(xc.copy()), 1)[0])
    if chunk_size is None:
        if vectorized:  # blocks of ~2**22 numbers: big enough for numpy, small enough for memory
            chunk_size = max(1, (1 << 22) // (n * (1 if forward else 2)))
        else:  # a few chunks per worker balance uneven f costs
            workers = getattr(executor, "_max_workers", None) or 2
            chunk_size = max(1, -(-n // (4 * workers)))
    bounds = [(i, min(n, i + int(chunk_size))) for i in range(0, n, int(chunk_size))]
    if executor is None:
        parts = [_chunk_diffs(f, xc, a, b, h, forward, f0, vectorized) for a, b in bounds]
    else:
        futures = [executor.submit(_chunk_diffs, f, xc, a, b, h, forward, f0, vectorized) for a, b in bounds]
        parts = [fu.result() for fu in futures]
    g = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return g.astype(x.dtype, copy=False).reshape(x.shape)


def gradient_descent(f: Callable[[np.ndarray], float], init_x, lr: float = 0.01, step_num: int = 100,
                     backend: Optional[str] = None, history: bool = False,
                     callback: Optional[Callable[[int, np.ndarray], object]] = None):
    """Plain gradient descent ``x <- x - lr * grad f(x)`` with the numerical gradient.

    Parameters
    ----------
    f : callable
        ``f(x) -> float``, as for :func:`numerical_gradient`.
    init_x : array_like
        Starting point; a float64 copy is taken (integers are converted), the caller's
        array is not modified.
    lr : float
        Learning rate (step size), > 0.
    step_num : int
        Number of steps, >= 0.
    backend : None, 'cpp', 'numba' or 'numpy'
        Backend of the numerical gradient.
    history : bool
        Also return the path: an array of shape ``(step_num + 1, *x.shape)`` holding the
        starting point and ``x`` after every step (the last row is the returned ``x``), for
        the tutorials' path-on-contours figure.
    callback : callable or None
        ``callback(i, x)`` after step ``i`` (1-based) with the current ``x`` (a copy); a truthy
        return stops the descent early (the history then ends at that step).

    Returns
    -------
    x : ndarray
        The final point; or ``(x, path)`` when ``history`` is True.
    """
    lr = positive(lr, "lr")
    if int(step_num) < 0:
        raise ValueError(f"step_num must be >= 0, got {step_num}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable")
    x = np.array(init_x, dtype=np.float64 if np.asarray(init_x).dtype.kind != "f" else None, copy=True)
    path = [x.copy()] if history else None
    for i in range(1, int(step_num) + 1):
        x -= lr * numerical_gradient(f, x, backend=backend)
        if path is not None:
            path.append(x.copy())
        if callback is not None and callback(i, x.copy()):
            break
    if path is not None:
        return x, np.stack(path)
    return x


from .gradcheck import GradientCheckResult, check_gradient, gradient_check  # noqa: E402  (re-export)
