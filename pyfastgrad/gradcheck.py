"""Gradient checks: a gradient (backprop or the user's own) against finite differences.

The verdict is per entry, as ``numpy.allclose`` / ``torch.autograd.gradcheck``::

    |g - n| <= atol + rtol * |n| + noise

with ``g`` the gradient under test, ``n`` the numerical one and ``noise = 4 * eps * |f(x)| / h``
the rounding of ``f`` in the difference (negligible for float64 losses of order 1).
Defaults per dtype: float64 ``atol=1e-9, rtol=1e-7`` (backprop of the built-in nets agrees
with the central difference at h=1e-4 to ~1e-10 absolute; a single entry off by 1e-6 of
its value fails); float32 ``atol=1e-5, rtol=1e-3`` (float32 arithmetic).

Kinks (``gradient_check`` of a built-in net): a ReLU is not differentiable at 0 and the
hinge loss at a zero margin. When moving a parameter by +-h changes the state (``z > 0``) of
a pre-activation or a margin in some row, the central difference averages two slopes and
disagrees with backprop by O(1) of that row's share, although backprop is right. The
net-aware kernel (``Mlp.kink_counts`` on every backend) counts such rows for each parameter
and side. Rule (``kinks='one-sided'``, the default): an entry whose kinks all lie on one
side is judged by the one-sided difference on the other side (Richardson from steps h
and h/2, error O(h^2), evaluated in float64), which measures the slope backprop uses
(ReLU'(0) = 0: the side that keeps the state); an entry with kinks on both sides is left
out of the verdict. Either way such entries are listed (``result.kinks``) and counted in
the table. ``kinks='exclude'`` leaves every kink entry out; ``kinks='central'`` judges the
plain central difference (the tutorials' check, false alarms included).
"""
from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["gradient_check", "check_gradient", "GradientCheckResult", "GradientEntry", "ParamReport",
           "default_tolerances"]

_TOL = {np.dtype(np.float64): (1e-9, 1e-7), np.dtype(np.float32): (1e-5, 1e-3)}
# rule codes per entry
CENTRAL, PLUS, MINUS, EXCLUDED = 0, 1, 2, 3
_RULE_NAMES = {CENTRAL: "central", PLUS: "one-sided +h", MINUS: "one-sided -h", EXCLUDED: "excluded"}


def default_tolerances(dtype) -> Tuple[float, float]:
    """(atol, rtol) used when not given: float64 (1e-9, 1e-7), float32 (1e-5, 1e-3)."""
    dt = np.dtype(dtype)
    if dt not in _TOL:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return _TOL[dt]


@dataclass(frozen=True)
class GradientEntry:
    """One compared entry: ``param[index]``, the gradient under test, the numerical value,
    ``error = |backprop - numerical|``, the entry's tolerance and how it was judged."""

    param: str
    index: Tuple[int, ...]
    backprop: float
    numerical: float
    error: float
    tol: float
    rule: str

    @property
    def ratio(self) -> float:
        """error / tolerance: > 1 fails."""
        return self.error / self.tol if self.tol > 0 else np.inf

    def __str__(self) -> str:
        idx = ",".join(str(i) for i in self.index)
        return (f"{self.param}[{idx}]: backprop {self.backprop:.10g}, numerical {self.numerical:.10g}, "
                f"error {self.error:.3e} (tol {self.tol:.3e}, {self.rule})")


@dataclass
class ParamReport:
    """Summary of one parameter: ``rel`` is the normwise ``max|g - n| / max(|g|, |n|)`` over the
    judged entries; ``n_kinks`` entries had a kink within +-h, of which ``n_one_sided`` were
    judged one-sided and ``n_excluded`` left out."""

    size: int
    max_abs: float
    mean_abs: float
    rel: float
    n_failed: int
    n_kinks: int = 0
    n_one_sided: int = 0
    n_excluded: int = 0


@dataclass
class KinkEntries:
    """Where the kinks are in one parameter: flat indices, rows crossing a kink at +h / -h,
    and the rule each entry was judged by (``'one-sided +h'``, ``'one-sided -h'``, ``'excluded'``,
    ``'central'``)."""

    shape: Tuple[int, ...]
    flat_index: np.ndarray
    rows_plus: np.ndarray
    rows_minus: np.ndarray
    rules: List[str]

    def indices(self) -> List[Tuple[int, ...]]:
        """The kink entries' multi-indices into the parameter (``np.unravel_index`` of ``flat_index``)."""
        return [tuple(int(i) for i in np.unravel_index(k, self.shape)) for k in self.flat_index]


class GradientCheckResult:
    """Outcome of :func:`gradient_check` / :func:`check_gradient`.

    ``passed`` (also ``bool(result)``) when every judged entry is within its tolerance.
    An entry passes when ``|g - n| <= atol + rtol * |n| + noise`` (``noise = 4 eps |f(x)| / h``,
    the rounding of f). ``params``: a :class:`ParamReport` per parameter; ``worst``: the entries with the largest
    error/tolerance ratio (:class:`GradientEntry`); ``kinks``: per parameter, the entries
    with a kink within +-h (:class:`KinkEntries`). ``print(result)`` shows the table.
    """

    def __init__(self, params: Dict[str, ParamReport], worst: List[GradientEntry],
                 kinks: Dict[str, KinkEntries], atol: float, rtol: float, h: float, method: str,
                 note: str = "", noise: float = 0.0) -> None:
        self.params = params
        self.worst = worst
        self.kinks = kinks
        self.atol, self.rtol, self.h = atol, rtol, h
        self.noise = noise  # 4 eps |f(x)| / h, added to every entry's tolerance
        self.method = method
        self.note = note

    @property
    def passed(self) -> bool:
        """True when no judged entry exceeds ``atol + rtol * |n| + noise``."""
        return all(p.n_failed == 0 for p in self.params.values())

    def __bool__(self) -> bool:
        return self.passed

    @property
    def n_failed(self) -> int:
        """Number of entries outside their tolerance, over all parameters."""
        return sum(p.n_failed for p in self.params.values())

    @property
    def n_kinks(self) -> int:
        """Number of entries with a ReLU/hinge kink within +-h, over all parameters."""
        return sum(p.n_kinks for p in self.params.values())

    @property
    def n_excluded(self) -> int:
        """Number of kink entries left out of the verdict (kinks on both sides)."""
        return sum(p.n_excluded for p in self.params.values())

    @property
    def max_abs(self) -> Dict[str, float]:
        """Per parameter, the largest ``|g - n|`` over the judged entries."""
        return {k: p.max_abs for k, p in self.params.items()}

    @property
    def mean_abs(self) -> Dict[str, float]:
        """Per parameter, the mean ``|g - n|`` over the judged entries (the tutorials' table)."""
        return {k: p.mean_abs for k, p in self.params.items()}

    @property
    def rel(self) -> Dict[str, float]:
        """Per parameter, the normwise relative error ``max|g - n| / max(|g|, |n|)``."""
        return {k: p.rel for k, p in self.params.items()}

    @property
    def max_rel(self) -> float:
        """The largest normwise relative error over the parameters (judged entries)."""
        return max(self.rel.values()) if self.params else 0.0

    def __str__(self) -> str:
        lines = [f"{'param':<8}{'size':>8}{'max abs err':>13}{'rel err':>11}{'failed':>8}{'kinks':>7}"
                 f"{'one-sided':>11}{'excluded':>10}"]
        for k, p in self.params.items():
            lines.append(f"{k:<8}{p.size:>8}{p.max_abs:>13.3e}{p.rel:>11.3e}{p.n_failed:>8}{p.n_kinks:>7}"
                         f"{p.n_one_sided:>11}{p.n_excluded:>10}")
        if self.worst:
            lines.append("worst entries (error / tolerance):")
            lines += [f"  {e.ratio:9.3g}  {e}" for e in self.worst]
        if self.n_kinks:
            lines.append(f"{self.n_kinks} entries have a ReLU/hinge kink within +-h (result.kinks): "
                         f"{sum(p.n_one_sided for p in self.params.values())} judged one-sided, "
                         f"{self.n_excluded} left out of the verdict")
        if self.note:
            lines.append(self.note)
        verdict = "PASS" if self.passed else f"FAIL ({self.n_failed} entries)"
        lines.append(f"{verdict}  |g - n| <= atol + rtol*|n|: atol {self.atol:g}, rtol {self.rtol:g}; "
                     f"{self.method}, h {self.h:g}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"GradientCheckResult(passed={self.passed}, n_failed={self.n_failed}, max_rel={self.max_rel:.3e}, "
                f"n_kinks={self.n_kinks}, atol={self.atol:g}, rtol={self.rtol:g})")


# ------------------------------------------------------------------ judging
class _Judge:
    """Collects per-parameter reports and the worst entries."""

    def __init__(self, atol: float, rtol: float, noise: float, n_worst: int) -> None:
        self.atol, self.rtol, self.noise, self.n_worst = atol, rtol, noise, n_worst
        self.params: Dict[str, ParamReport] = {}
        self.kinks: Dict[str, KinkEntries] = {}
        self.cand: List[GradientEntry] = []

    def add(self, name: str, shape: Tuple[int, ...], g: np.ndarray, n: np.ndarray,
            rules: Optional[np.ndarray] = None, kp: Optional[np.ndarray] = None,
            km: Optional[np.ndarray] = None, rule_name: Optional[str] = None) -> None:
        g = np.asarray(g, dtype=np.float64).ravel()
        n = np.asarray(n, dtype=np.float64).ravel()
        rules = np.zeros(g.size, np.int8) if rules is None else rules
        judged = rules != EXCLUDED
        err = np.abs(g - n)
        tol = self.atol + self.rtol * np.abs(n) + self.noise
        bad = judged & ~(err <= tol)  # NaN counts as a failure
        ej = err[judged]
        scale = max(float(np.max(np.abs(g[judged]), initial=0.0)), float(np.max(np.abs(n[judged]), initial=0.0)))
        rep = ParamReport(size=g.size, max_abs=float(np.max(ej, initial=0.0)),
                          mean_abs=float(ej.mean()) if ej.size else 0.0,
                          rel=float(np.max(ej, initial=0.0) / scale) if scale > 0 else float(np.max(ej, initial=0.0)),
                          n_failed=int(bad.sum()))
        if kp is not None:
            kink = (kp + km) > 0
            rep.n_kinks = int(kink.sum())
            rep.n_one_sided = int(np.isin(rules[kink], (PLUS, MINUS)).sum())
            rep.n_excluded = int((rules[kink] == EXCLUDED).sum())
            if rep.n_kinks:
                where = np.flatnonzero(kink)
                self.kinks[name] = KinkEntries(shape, where, kp[where].copy(), km[where].copy(),
                                               [_RULE_NAMES[int(r)] for r in rules[where]])
        self.params[name] = rep
        ratio = np.where(judged, np.where(np.isnan(err), np.inf, err / tol), -1.0)
        top = np.argsort(-ratio, kind="stable")[:self.n_worst]
        for k in top:
            if ratio[k] < 0:
                break
            self.cand.append(GradientEntry(name, tuple(int(i) for i in np.unravel_index(k, shape)), float(g[k]),
                                           float(n[k]), float(err[k]), float(tol[k]),
                                           rule_name or _RULE_NAMES[int(rules[k])]))

    def result(self, h: float, method: str, note: str = "") -> GradientCheckResult:
        worst = sorted(self.cand, key=lambda e: -(e.ratio if np.isfinite(e.ratio) else 1e300))[:self.n_worst]
        return GradientCheckResult(self.params, worst, self.kinks, self.atol, self.rtol, h, method, note,
                                   self.noise)


def _tolerances(dtype, atol: Optional[float], rtol: Optional[float]) -> Tuple[float, float]:
    a0, r0 = default_tolerances(dtype)
    atol = a0 if atol is None else float(atol)
    rtol = r0 if rtol is None else float(rtol)
    if not (atol >= 0 and rtol >= 0) or not np.isfinite(atol + rtol):
        raise ValueError(f"atol and rtol must be finite and >= 0, got atol={atol}, rtol={rtol}")
    return atol, rtol


# ------------------------------------------------------------------ built-in nets
def gradient_check(net, x, t, atol: Optional[float] = None, rtol: Optional[float] = None,
                   h: Optional[float] = None, kinks: str = "one-sided", n_worst: int = 10,
                   verbose: bool = False) -> GradientCheckResult:
    """Compare ``net.gradient`` (backprop) with central differences of ``net.loss``.

    Parameters
    ----------
    net : a pyfastgrad net (``Net``, ``TwoLayerNet``, ...), or any object with the tutorials'
        ``gradient(x, t)`` and ``numerical_gradient(x, t)`` returning dicts of arrays (then
        without kink detection).
    x, t : the batch (as ``net.loss``).
    atol, rtol : per-entry tolerance ``atol + rtol * |numerical|``; None: the defaults of
        the net's dtype (:func:`default_tolerances`).
    h : the step, default 1e-4. The numerical side is always computed in float64 (for a float32
        net, at its float32 parameters cast to float64: the float64 loss's derivative there is
        what float32 backprop approximates; the float32 tolerances then cover backprop's rounding).
    kinks : 'one-sided' (default), 'exclude' or 'central': the rule for entries with a
        ReLU/hinge kink within +-h (see the module docstring).
    n_worst : how many of the worst entries to list.

    Returns
    -------
    GradientCheckResult (``print`` it for the table; ``bool`` is the verdict).
    """
    from .nets import Net

    if kinks not in ("one-sided", "exclude", "central"):
        raise ValueError(f"kinks must be 'one-sided', 'exclude' or 'central', got {kinks!r}")
    n_worst = int(n_worst)
    if n_worst < 0:
        raise ValueError(f"n_worst must be >= 0, got {n_worst}")
    if not isinstance(net, Net):
        return _generic_net_check(net, x, t, atol, rtol, h, n_worst, verbose)
    context = getattr(net, "_gradcheck_context", None)  # composed nets: Dropout masks fixed, statistics kept
    if context is not None:
        with context():
            return _net_check(net, x, t, atol, rtol, h, kinks, n_worst, verbose)
    return _net_check(net, x, t, atol, rtol, h, kinks, n_worst, verbose)


def _net_check(net, x, t, atol, rtol, h, kinks, n_worst, verbose) -> GradientCheckResult:
    from ._validate import positive

    h = 1e-4 if h is None else positive(h, "h")
    atol, rtol = _tolerances(net.dtype, atol, rtol)
    g_bp = _flat(net.gradient(x, t), net)
    twin = net if net.dtype == np.float64 else _float64_twin(net)
    xb, tb = twin._xt(x, t)
    theta = twin.theta
    mlp = twin._mlp()
    g_num = np.empty_like(theta)
    mlp.numerical_gradient(theta, xb, tb, twin.weight_decay, h, g_num)
    kp = np.zeros(theta.size, np.int64)
    km = np.zeros(theta.size, np.int64)
    mlp.kink_counts(theta, xb, tb, h, kp, km)
    rules = np.zeros(theta.size, np.int8)
    kink = (kp + km) > 0
    if kinks == "exclude":
        rules[kink] = EXCLUDED
    elif kinks == "one-sided":
        rules[kink & (kp == 0)] = PLUS  # the kinks are all on the -h side
        rules[kink & (km == 0)] = MINUS
        rules[(kp > 0) & (km > 0)] = EXCLUDED
        one = np.flatnonzero((rules == PLUS) | (rules == MINUS))
        if one.size:
            g_num[one] = _one_sided(mlp, theta, xb, tb, twin.weight_decay, one,
                                    np.where(rules[one] == PLUS, h, -h))
    f0 = float(mlp.loss(theta, xb, tb, twin.weight_decay))
    judge = _Judge(atol, rtol, 4 * np.finfo(np.float64).eps * abs(f0) / h, n_worst)
    for name, (sl, shape) in net._layout.items():
        judge.add(name, shape, g_bp[sl], g_num[sl], rules[sl], kp[sl], km[sl])
    res = judge.result(h, "central differences (float64)")
    if verbose:
        print(res)
    return res


def _float64_twin(net):
    twin = net.copy()
    twin.dtype = np.dtype(np.float64)
    twin.theta = net.theta.astype(np.float64)
    twin._grad = np.zeros_like(twin.theta)
    twin._mlps = {}
    return twin


def _flat(grads: Dict[str, np.ndarray], net) -> np.ndarray:
    flat = np.zeros(net.theta.size, dtype=np.float64)
    for name, (sl, shape) in net._layout.items():
        if name not in grads:
            raise ValueError(f"net.gradient() returned no {name!r}")
        g = np.asarray(grads[name], dtype=np.float64)
        if g.shape != tuple(shape):
            raise ValueError(f"net.gradient()[{name!r}] has shape {g.shape}, the parameter has {tuple(shape)}")
        flat[sl] = g.ravel()
    return flat


def _one_sided(mlp, theta: np.ndarray, x: np.ndarray, t: np.ndarray, wd: float, idx: np.ndarray,
               step: np.ndarray) -> np.ndarray:
    """Richardson one-sided differences at steps s and s/2: (a D(b) - b D(a)) / (a - b) with
    D(s) = (f(theta + s e_p) - f(theta)) / s, the steps as stored (error O(a b))."""
    th = theta.copy()
    f0 = float(mlp.loss(th, x, t, wd))
    out = np.empty(idx.size)
    for k, (p, s) in enumerate(zip(idx, step)):
        v = th[p]
        a, b = (v + s) - v, (v + s / 2) - v  # the shifts actually stored
        th[p] = v + a
        fa = float(mlp.loss(th, x, t, wd))
        th[p] = v + b
        fb = float(mlp.loss(th, x, t, wd))
        th[p] = v
        out[k] = (a * (fb - f0) / b - b * (fa - f0) / a) / (a - b)
    return out


def _generic_net_check(net, x, t, atol, rtol, h, n_worst, verbose) -> GradientCheckResult:
    """The tutorials' own nets: dicts from ``gradient`` and ``numerical_gradient``."""
    for m in ("gradient", "numerical_gradient"):
        if not callable(getattr(net, m, None)):
            raise TypeError(f"net must be a pyfastgrad net or have a {m}(x, t) method; "
                            f"got {type(net).__name__}")
    if h is not None:
        raise ValueError("h can only be set for pyfastgrad nets (other nets use their own step)")
    g_num = net.numerical_gradient(x, t)
    g_bp = net.gradient(x, t)
    dtype = np.result_type(*[np.asarray(v).dtype for v in g_bp.values()])
    atol, rtol = _tolerances(np.float32 if dtype == np.float32 else np.float64, atol, rtol)
    judge = _Judge(atol, rtol, 0.0, n_worst)
    for name in g_num:
        if name not in g_bp:
            raise ValueError(f"gradient() has no {name!r} (numerical_gradient() has)")
        a, b = np.asarray(g_bp[name]), np.asarray(g_num[name])
        if a.shape != b.shape:
            raise ValueError(f"{name}: gradient has shape {a.shape}, numerical_gradient {b.shape}")
        judge.add(name, b.shape, a, b)
    res = judge.result(float("nan"), "the net's numerical_gradient",
                       note="kinks not detected: not a pyfastgrad net")
    if verbose:
        print(res)
    return res


# ------------------------------------------------------------------ any function
def _scalar(v, what: str = "f") -> float:
    a = np.asarray(v)
    if a.dtype.kind == "c":
        raise TypeError(f"{what} returned a complex number; it must return a real scalar")
    if a.size != 1 or a.dtype.kind not in "fiub":
        raise ValueError(f"{what} must return a real scalar, got {type(v).__name__} of shape {a.shape}")
    return float(a.reshape(()))


def _as_point(x) -> np.ndarray:
    """The array to perturb: a writeable float ndarray itself (restored exactly), else a float copy."""
    if isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64) and x.flags.writeable:
        a = x
    else:
        a = np.asarray(x)
        if a.dtype.kind != "f":
            raise TypeError(f"x must hold floating-point numbers, got dtype {a.dtype}"
                            + ("" if a.dtype.kind == "O" else "; use np.asarray(x, dtype=np.float64)"))
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"x has dtype {a.dtype}; use float32 or float64")
        a = np.array(a, copy=True)
    if a.size == 0:
        raise ValueError("x is empty: there is nothing to check")
    if not np.isfinite(a).all():
        raise ValueError("x contains NaN or Inf")
    return a


def check_gradient(f: Callable, grad_f: Callable, x, atol: Optional[float] = None,
                   rtol: Optional[float] = None, h: Optional[float] = None, method: str = "richardson",
                   mode: str = "full", n_directions: int = 8, seed: Optional[int] = 0,
                   vectorized: bool = False, executor: Optional[concurrent.futures.Executor] = None,
                   n_worst: int = 10) -> GradientCheckResult:
    """Check a user's gradient ``grad_f`` of a scalar function ``f`` at ``x``.

    Parameters
    ----------
    f : callable, ``f(x) -> float``.
    grad_f : callable, ``grad_f(x) -> array of x's shape`` (for a dict ``x``: a dict of arrays).
    x : array-like of floats, or a dict ``{name: float ndarray}`` of parameters (a net built
        from :mod:`pyfastgrad.layers` whose layers hold these arrays: ``f`` and ``grad_f`` may
        ignore their argument and run the layers; the arrays are perturbed in place).
        A writeable float ndarray is perturbed in place, and restored exactly, also when
        ``f`` raises; anything else is copied.
    atol, rtol : the tolerance ``atol + rtol * |numerical|`` per entry; None: the dtype's defaults.
    h : step. None: :func:`pyfastgrad.gradient.default_step` (1e-4 for float64); 1e-20 for
        ``method='complex'``.
    method : 'richardson' (default: central differences at h and h/2 extrapolated, error
        O(h^4), 4 evaluations per entry: a user's f may have third derivatives of order 1,
        which the plain central difference turns into errors ~h^2 = 1e-8, above the float64
        atol), 'central' (O(h^2), 2 evaluations) or 'complex' (complex step
        ``Im f(x + i h e_k) / h``: exact to rounding for analytic ``f`` that accept complex input;
        ``f`` gets complex128 copies).
    mode : 'full' (every entry: 2 evaluations each) or 'random': ``n_directions`` random unit
        directions ``v`` (seeded), comparing ``grad_f(x) . v`` with the directional central
        difference (2 evaluations each, like torch's fast mode; a wrong entry shows up with
        weight ``v_k``, so small isolated errors can pass).
    vectorized, executor : as :func:`pyfastgrad.numerical_gradient` (full mode, array ``x``); with
        ``vectorized`` every call of ``f`` gets a batch ``(m, *x.shape)``, ``f(x)`` itself as ``m = 1``.

    Returns
    -------
    GradientCheckResult
    """
    from ._validate import positive
    from .gradient import default_step, numerical_gradient

    if not callable(f) or not callable(grad_f):
        raise TypeError("f and grad_f must be callable")
    if method not in ("central", "richardson", "complex"):
        raise ValueError(f"method must be 'central', 'richardson' or 'complex', got {method!r}")
    if mode not in ("full", "random"):
        raise ValueError(f"mode must be 'full' or 'random', got {mode!r}")
    if mode == "random" and (vectorized or executor is not None):
        raise ValueError("vectorized and executor apply to mode='full' (random mode makes 2 calls per direction)")
    n_worst = int(n_worst)
    if isinstance(x, dict):
        if vectorized or executor is not None or method == "complex":
            raise ValueError("a dict x (parameters perturbed in place) works with method 'central' or "
                             "'richardson', without vectorized/executor")
        names = list(x)
        arrays = [x[k] for k in names]
        for k, a in zip(names, arrays):
            if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
                raise TypeError(f"x[{k!r}] must be a float32/float64 ndarray (it is perturbed in place)")
            if not a.flags.writeable:
                raise ValueError(f"x[{k!r}] is read-only")
            if not np.isfinite(a).all():
                raise ValueError(f"x[{k!r}] contains NaN or Inf")
        point = x
    else:
        names = ["x"]
        arrays = [_as_point(x)]
        point = arrays[0]
    dtype = np.result_type(*arrays)
    atol, rtol = _tolerances(dtype, atol, rtol)
    if vectorized and mode == "full":  # f takes batches: x as a batch of one
        from .gradient import _as_values
        f0 = float(_as_values(f(point.reshape((1,) + point.shape)), 1)[0])
    else:
        f0 = _scalar(f(point), "f(x)")
    if not np.isfinite(f0):
        raise ValueError(f"f(x) is {f0}: the gradient is undefined there")
    g = grad_f(point)
    if isinstance(x, dict):
        if not isinstance(g, dict) or set(g) != set(names):
            raise ValueError(f"grad_f must return a dict with the keys {names}")
        grads = [np.asarray(g[k]) for k in names]
    else:
        grads = [np.asarray(g)]
    for k, a, ga in zip(names, arrays, grads):
        if ga.shape != a.shape:
            raise ValueError(f"grad_f(x){'' if k == 'x' else f'[{k!r}]'} has shape {ga.shape}, "
                             f"x{'' if k == 'x' else f'[{k!r}]'} has {a.shape}")
        if ga.dtype.kind not in "fiu":
            raise TypeError(f"grad_f returned dtype {ga.dtype}; expected real numbers")

    if method == "complex":
        h = 1e-20 if h is None else positive(h, "h")
    else:
        h = max(default_step(a) for a in arrays) if h is None else positive(h, "h")
    eps = np.finfo(dtype).eps if method != "complex" else 0.0
    judge = _Judge(atol, rtol, 4 * eps * abs(f0) / h, n_worst)

    def checked(fn):  # f's values: real scalars, finite
        def wrapped(z):
            v = _scalar(fn(z))
            if not np.isfinite(v):
                raise ValueError(f"f returned {v} at a perturbed point (h = {h:g}); "
                                 "use a smaller h or check f's domain")
            return v
        return wrapped

    if mode == "random":
        n_dir = int(n_directions)
        if n_dir < 1:
            raise ValueError(f"n_directions must be >= 1, got {n_directions}")
        rng = np.random.default_rng(seed)
        sizes = [a.size for a in arrays]
        gcat = np.concatenate([ga.astype(np.float64).ravel() for ga in grads])
        num = np.empty(n_dir)
        ana = np.empty(n_dir)
        for d in range(n_dir):
            v = rng.standard_normal(sum(sizes))
            v /= np.linalg.norm(v)
            num[d], ana[d] = _directional(f, arrays, point, v, h, method, gcat, checked)
        judge.add("direction", (n_dir,), ana, num, rule_name="directional")
        return judge.result(h, f"{n_dir} random directions, {method}")

    fw = checked(f)
    for k, a, ga in zip(names, arrays, grads):
        if method == "complex":
            num = _complex_step(f, a, h)
        else:
            # a dict's arrays are read by f through the layers: hand f the whole point
            fk = fw if not isinstance(x, dict) else (lambda _z, _fw=fw: _fw(point))
            if vectorized or executor is not None:
                fk = f  # values checked in the blocks; must stay picklable
            num = numerical_gradient(fk, a, h, richardson=method == "richardson",
                                     vectorized=vectorized, executor=executor)
            if not np.isfinite(num).all():
                bad = np.unravel_index(int(np.flatnonzero(~np.isfinite(num))[0]), a.shape)
                raise ValueError(f"f returned NaN or inf when x{list(bad)} was perturbed")
        judge.add(k, a.shape, ga, num)
    return judge.result(h, method)


def _directional(f, arrays, point, v: np.ndarray, h: float, method: str, gcat: np.ndarray, checked):
    """(numerical, analytic) derivative along v; steps as stored, restored exactly."""
    fw = checked(f)
    saved = [a.copy() for a in arrays]
    if method == "complex":
        if len(arrays) != 1:
            raise ValueError("the complex step needs an array x")
        z = arrays[0].astype(np.complex128) + 1j * h * v.reshape(arrays[0].shape)
        val = f(z)
        if np.asarray(val).dtype.kind != "c":
            raise TypeError("method='complex' needs f to carry complex numbers through (it returned a real)")
        return float(np.imag(val)) / h, float(gcat @ v)

    def shifted(step: float) -> Tuple[float, np.ndarray]:
        off, disp = 0, []
        try:
            for a, s in zip(arrays, saved):
                vv = v[off:off + a.size].reshape(a.shape)
                off += a.size
                a[...] = s + a.dtype.type(step) * vv.astype(a.dtype)
                disp.append((a.astype(np.float64) - s).ravel())
            return fw(point), np.concatenate(disp)
        finally:
            for a, s in zip(arrays, saved):
                a[...] = s  # restore, also when f raises

    def diff(step: float) -> Tuple[float, float]:
        fp, dp = shifted(step)
        fm, dm = shifted(-step)
        # compare along the displacement actually taken (float32 rounds x + h v)
        return (fp - fm) / (2 * step), float(gcat @ (dp - dm)) / (2 * step)

    n1, a1 = diff(h)
    if method == "richardson":
        n2, a2 = diff(h / 2)
        return (4 * n2 - n1) / 3, (4 * a2 - a1) / 3
    return n1, a1


def _complex_step(f, a: np.ndarray, h: float) -> np.ndarray:
    z = a.astype(np.complex128)
    zf = z.reshape(-1)
    out = np.empty(a.size)
    for i in range(a.size):
        zf[i] = a.flat[i] + 1j * h
        val = f(z)
        zf[i] = a.flat[i]
        va = np.asarray(val)
        if va.size != 1:
            raise ValueError(f"f must return a scalar, got shape {va.shape}")
        if va.dtype.kind != "c":
            raise TypeError("method='complex' needs f to carry complex numbers through (it returned a real: "
                            "use np functions, not math, and no float() inside f)")
        im = float(np.imag(va.reshape(())))
        if not np.isfinite(im) or not np.isfinite(np.real(va.reshape(()))):
            raise ValueError(f"f returned {complex(va.reshape(()))} at the complex step of entry {i}")
        out[i] = im / h
    return out.reshape(a.shape)
