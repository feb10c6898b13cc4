"""The one door to the backends: ``cpp`` (default when the extension imports), ``numba``, ``numpy``.

Every backend module (``_backends/numpy.py``, the specification; ``_backends/numba.py``;
``_backends/cpp.py``) exposes the same kernel names, typed in ``_backends/protocols.py``.
Public modules reach them only through :func:`kernels`; the choice is total: with ``numpy``
selected no compiled code runs (the NaN scans and the CSR build included).
The choice comes from, in order: ``set_backend`` / ``use_backend``, the
``PYFASTGRAD_BACKEND`` environment variable, else the fastest that imports.
A backend that fails to import is reported by ``backends()`` with the reason;
the package never fails to import because of it.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings
from types import ModuleType
from typing import Dict, Iterator, Optional

from .protocols import Kernels

__all__ = ["backends", "available_backends", "get_backend", "set_backend", "use_backend", "kernels", "Kernels"]

ORDER = ("cpp", "numba", "numpy")
_MODULES = {"cpp": ".cpp", "numba": ".numba", "numpy": ".numpy"}

_loaded: Dict[str, ModuleType] = {}
_errors: Dict[str, str] = {}
_state = threading.local()
_global: Dict[str, Optional[str]] = {"name": None}
_warned = False


def _try_load(name: str) -> Optional[ModuleType]:
    if name in _loaded:
        return _loaded[name]
    if name in _errors:
        return None
    try:
        mod = importlib.import_module(_MODULES[name], __package__)
    except Exception as exc:  # an extension that fails to build or load must not break the package
        _errors[name] = f"{type(exc).__name__}: {exc}"
        return None
    _loaded[name] = mod
    return mod


def backends() -> Dict[str, str]:
    """Which backends are available, and why one is not.

    Returns
    -------
    dict
        ``{name: "available" | "unavailable: <reason>"}`` in preference order.
    """
    out = {}
    for name in ORDER:
        mod = _try_load(name)
        out[name] = "available" if mod is not None else f"unavailable: {_errors[name]}"
    return out


def available_backends() -> list:
    """Names of the backends that import, fastest first."""
    return [n for n in ORDER if _try_load(n) is not None]


def _check_name(name: str) -> str:
    name = str(name).lower()
    if name not in ORDER:
        raise ValueError(f"unknown backend {name!r}; choose one of {list(ORDER)}")
    if _try_load(name) is None:
        raise RuntimeError(f"backend {name!r} is unavailable: {_errors[name]}")
    return name


def _default() -> str:
    global _warned
    env = os.environ.get("PYFASTGRAD_BACKEND")
    if env:
        return _check_name(env)
    for name in ORDER:
        if _try_load(name) is not None:
            if name != "cpp" and not _warned:
                _warned = True
                warnings.warn(f"pyfastgrad: C++ extension unavailable ({_errors.get('cpp')}); "
                              f"falling back to the {name!r} backend", RuntimeWarning, stacklevel=3)
            return name
    raise RuntimeError("no pyfastgrad backend could be loaded")  # numpy always loads


def get_backend() -> str:
    """Name of the backend in use in this thread."""
    local = getattr(_state, "stack", None)
    if local:
        return local[-1]
    if _global["name"] is None:
        _global["name"] = _default()
    return _global["name"]


def set_backend(name: str) -> None:
    """Select the backend globally: ``'cpp'``, ``'numba'`` or ``'numpy'``."""
    _global["name"] = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Context manager selecting a backend for the enclosed block (this thread only)."""
    name = _check_name(name)
    stack = getattr(_state, "stack", None)
    if stack is None:
        stack = _state.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


def kernels(name: Optional[str] = None) -> Kernels:
    """The kernel module of backend ``name`` (default: the current backend)."""
    name = get_backend() if name is None else _check_name(name)
    return _loaded[name]  # type: ignore[return-value]  (a module that meets the Protocol)
