"""Machine probes: CPU model and flags, memory, load, library versions, thread and BLAS settings."""
from __future__ import annotations

import os
import platform
import sys
from typing import Any, Dict, List, Optional

import numpy as np

import pyfastgrad as pfg

from ._door import cpp_blas_info, numba_kernel_module

__all__ = ["machine_info", "loadavg", "numba_cache_stats"]

def _cpuinfo() -> Dict[str, Any]:
    model, flags, phys = None, set(), set()
    try:
        cur: Dict[str, str] = {}
        with open("/proc/cpuinfo") as fh:
            for line in list(fh) + [""]:
                if not line.strip():
                    if cur:
                        phys.add((cur.get("physical id"), cur.get("core id")))
                    cur = {}
                    continue
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                cur[k] = v
                if k == "model name" and model is None:
                    model = v
                elif k == "flags" and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "physical_cores": len(phys) or None,
            "cpu_flags": [f for f in wanted if f in flags]}


def _mem_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def loadavg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def machine_info(torch: Any = None, jax: Any = None) -> Dict[str, Any]:
    """CPU, memory, library versions, thread counts and BLAS configuration."""
    info: Dict[str, Any] = {
        "python": sys.version.split()[0], "implementation": platform.python_implementation(),
        "platform": platform.platform(), **_cpuinfo(), "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _mem_gib(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "NUMBA_NUM_THREADS", "PYFASTGRAD_BACKEND", "PYFASTGRAD_DATA",
                                           "JAX_PLATFORMS", "XLA_FLAGS") if k in os.environ},
        "versions": {"pyfastgrad": pfg.__version__, "numpy": np.__version__,
                     **{m: _version(m) for m in ("numba", "scipy", "scipy-openblas32", "torch", "jax",
                                                 "jaxlib", "numdifftools", "threadpoolctl", "matplotlib")}},
        "backends": pfg.backends(),
    }
    threads: Dict[str, Any] = {}
    if "cpp" in pfg.available_backends():
        try:
            threads["cpp_blas"] = cpp_blas_info()
        except Exception as exc:  # an older extension without blas_info
            threads["cpp_blas"] = f"unavailable: {exc}"
    try:
        import numba
        threads["numba_num_threads"] = int(numba.config.NUMBA_NUM_THREADS)
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_info
        threads["threadpoolctl"] = [{k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                                          "num_threads", "threading_layer", "architecture",
                                                          "filepath")} for d in threadpool_info()]
    except ImportError:
        threads["threadpoolctl"] = "not installed"
    if torch is not None:
        threads["torch"] = {"num_threads": torch.get_num_threads(),
                            "num_interop_threads": torch.get_num_interop_threads()}
    if jax is not None:
        try:
            threads["jax_devices"] = [str(d) for d in jax.devices()]
        except Exception:
            pass
    info["threads"] = threads
    return info


def numba_cache_stats() -> Optional[Dict[str, int]]:
    """On-disk cache hits/misses of the numba backend's kernels in this process."""
    mod = numba_kernel_module()
    if mod is None:
        return None
    hits = misses = 0
    for obj in vars(mod).values():
        st = getattr(obj, "stats", None)
        if st is not None and hasattr(st, "cache_hits"):
            hits += sum(st.cache_hits.values())
            misses += sum(st.cache_misses.values())
    return {"cache_hits": hits, "cache_misses": misses}


