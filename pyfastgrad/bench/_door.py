"""The benchmark's only door to private internals (everything else uses the public API).

The benchmark times the kernels alone (a fused ``train_steps`` loop, one ``opt_update``, the C++
loop on ``CsrRows`` input), which no public name exposes. Every private import of the harness is
here, so that when the kernels move behind a ``pyfastgrad.backends`` package this is the one file
to change.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["kernel_mlp", "kernel_module", "csr_rows", "cpp_blas_info", "numba_kernel_module", "cpu_snapshot"]


def kernel_module(backend: str) -> ModuleType:
    """The kernel module of ``backend`` (``opt_update``, ``Mlp``, ...), as the public layer calls it."""
    from .._backends import kernels  # private: the backend door
    return kernels(backend)


def kernel_mlp(net: Any) -> Any:
    """The kernel ``Mlp`` object behind a public ``Net`` on its own backend (``loss_grad``, ``train_steps``)."""
    return net._mlp()  # private: the kernel object the public methods call


def csr_rows(x: np.ndarray) -> Any:
    """``x`` as rows of nonzeros, the input ``fit`` hands the cpp kernel for sparse data such as MNIST."""
    from .._sparse import CsrRows  # private: the backend-neutral sparse input type
    return CsrRows.from_dense(x)


def cpp_blas_info() -> Any:
    """The cpp backend's BLAS configuration and thread counts."""
    return kernel_module("cpp").blas_info()


def numba_kernel_module() -> Optional[ModuleType]:
    """The numba kernel module (for its on-disk cache statistics), or None when numba is unavailable."""
    try:
        return kernel_module("numba")
    except Exception:
        return None


def cpu_snapshot() -> Optional[Tuple[float, float, float]]:
    """(busy seconds of all CPUs, total seconds of all CPUs, CPU seconds of this process), Linux only: the
    harness's measure of other processes' load, from the probe the numba backend sizes its threads by."""
    from .._threads import cpu_snapshot as snap  # private: one reader of /proc/stat
    return snap()
