"""One knob for the threads pyfastgrad's kernels use: OpenBLAS, OpenMP (cpp) and numba.

On a busy or shared machine ``set_num_threads(1)`` keeps every kernel pool to one core, so several
processes (a process pool, a sweep) do not oversubscribe it.
"""
from __future__ import annotations

import os
from typing import Dict, Optional


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
