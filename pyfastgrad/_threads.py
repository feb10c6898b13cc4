"""One knob for the threads pyfastgrad's kernels use: OpenBLAS, OpenMP (cpp) and numba.

On a busy or shared machine ``set_num_threads(1)`` keeps every kernel pool to one core, so several
processes (a process pool, a sweep) do not oversubscribe it.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional, Tuple


def _core():
    # The extension is optional; importing it goes through the backend loader (it preloads OpenBLAS).
    from ._backends import _try_load
    mod = _try_load("cpp")
    return None if mod is None else mod._core


def get_num_threads() -> Dict[str, Optional[int]]:
    """Threads each pool uses now: ``{'blas': n, 'openmp': n, 'numba': n}`` (None where absent)."""
    core = _core()
    out: Dict[str, Optional[int]] = {"blas": None, "openmp": None, "numba": None}
    if core is not None:
        out["blas"] = int(core.blas_num_threads())
        out["openmp"] = int(core.openmp_max_threads())
    try:
        import numba
        out["numba"] = int(numba.get_num_threads())
    except ImportError:  # numba is a fallback, not required for this
        pass
    return out


def set_num_threads(n: Optional[int] = None) -> Dict[str, Optional[int]]:
    """Limit OpenBLAS, OpenMP and numba to ``n`` threads each (None: all cores). Returns the new counts.

    Process-wide and immediate for the next kernel call. numpy's own BLAS is not touched (use
    ``threadpoolctl`` for that). In a process forked (``os.fork``, multiprocessing's 'fork') from one
    that imported pyfastgrad, OpenMP stays at one thread (see docs/DEV.md, "Fork safety").
    """
    if n is None:
        n = os.cpu_count() or 1
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    # numba first: starting its threading layer (an OpenMP runtime of its own) resets the process's
    # OpenMP thread count, so the extension's setting must come after it.
    try:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    core = _core()
    if core is not None:
        core.blas_set_num_threads(n)
        from ._backends.cpp import FORKED_CHILD
        # a forked child's OpenMP stays at one thread: more would wait on the parent's lost pool
        core.openmp_set_num_threads(1 if FORKED_CHILD else n)
    return get_num_threads()


def cpu_snapshot() -> Optional[Tuple[float, float, float]]:
    """(busy seconds of all CPUs, total seconds of all CPUs, CPU seconds of this process), Linux only."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    busy = sum(v) - idle  # user nice system irq softirq steal (guest is inside user)
    t = os.times()
    return busy / hz, (busy + idle) / hz, t.user + t.system


class FreeCores:
    """Cores other processes leave free: /proc/stat's busy time minus this process's CPU time over windows of
    at least 0.1 s (cpp's FreeCores in csrc/core/parallel.hpp, in Python for the numba backend, which users
    without a compiler get). Elsewhere than Linux every core counts as free."""

    WINDOW_S = 0.1

    def __init__(self) -> None:
        self._last = None  # (wall, busy, total, self) at the window's start
        self._busy = 0.0  # the others' share of the machine in the last window

    def free(self, want: int) -> int:
        """Free cores among ``want`` (>= 1)."""
        now = time.monotonic()
        if self._last is None or now - self._last[0] >= self.WINDOW_S:
            snap = cpu_snapshot()
            if snap is None:
                return want
            if self._last is not None and snap[1] > self._last[2]:
                others = max(0.0, (snap[0] - self._last[1]) - (snap[2] - self._last[3]))
                self._busy = min(1.0, others / (snap[1] - self._last[2]))
            self._last = (now,) + snap
        return max(1, min(want, int(want * (1.0 - self._busy) + 0.5)))
