"""Benchmark harness: every hot path, every backend, one process, one run.

``python -m pyfastgrad bench [--quick] [--out DIR] [--only NAME...] [--no-plot]``
(or ``python bench/run.py``) times, in this order:

``numgrad_func``
    ``numerical_gradient(f, x)`` of a 1000-element array, Python ``f`` and a
    numba-jitted ``f``; plus ``scipy.optimize.approx_fprime`` and numdifftools.
``numgrad_net``
    ``TwoLayerNet(784, 50, 10).numerical_gradient`` on 100 MNIST images
    (float64). The numpy reference runs on a stated subset of the parameters
    and is scaled linearly (its cost per parameter is constant).
``backprop``
    forward + backward of 784-100-10 on a batch of 100, float32 and float64:
    the kernel (``Mlp.loss_grad``) and the API (``net.gradient``), vs torch
    eager and ``jax.jit(jax.grad)``; GFLOP/s against gemm measured in the run.
``optimizer``
    SGD and Adam on a flat vector of 79,510 parameters, vs ``torch.optim``.
``train_step``
    forward + backward + SGD update, 784-100-10 batch 100 and 64-32-10 batch 32
    (float32): per step inside the fused loop and per Python call; for MNIST also
    the cpp fused loop on the images as rows of nonzeros (``CsrRows``), counted in
    dense-equivalent flops.
``epoch``
    one MNIST epoch (600 steps of 100, 784-100-10, float32, SGD lr 0.1), the cpp
    kernel also on ``CsrRows`` input.
``scaling``
    (full mode only, unless named in ``--only``) train-step cost against
    hidden size, batch size and depth; numerical-gradient cost against hidden size.

Every ratio is computed from timings of this run: ``x ref`` is the numpy
reference's median time divided by the row's median time. Nothing is hard-coded.
Writes ``results.json`` (all raw figures and machine information),
``results.md`` (a markdown table), ``results.png`` and, with ``scaling``,
``scaling.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import spec as _layout
from . import reference as ref
from ._backends import available_backends, backends, kernels

__all__ = ["BENCHMARKS", "Config", "Timing", "Row", "measure", "mlp_flops", "machine_info",
           "build_parser", "main", "cli"]

BENCHMARKS: Tuple[str, ...] = ("numgrad_func", "numgrad_net", "backprop", "optimizer", "train_step",
                               "epoch", "scaling")

DESCRIPTIONS: Dict[str, str] = {
    "gemm": "machine gemm rate: numpy matmul of the backprop shapes (N=100, 784-100-10) and 1024^3",
    "numgrad_func": "numerical gradient of f(x) = sum(x**2), x of 1000 float64 (2000 f evaluations)",
    "numgrad_net": "numerical gradient of TwoLayerNet(784, 50, 10), 100 images, float64, all 39,760 params",
    "backprop": "backprop gradient (forward + backward), 784-100-10, batch 100",
    "optimizer": "one optimizer update of 79,510 parameters (the 784-100-10 net)",
    "train_step": "train step: forward + backward + SGD update, float32",
    "epoch": "one epoch: 600 steps of 100 images, 784-100-10, float32, SGD lr 0.1",
    "scaling": "train-step and numerical-gradient cost against net and batch size",
}

TARGETS: Dict[str, str] = {
    "numgrad_net": "cpp >= 1000x the reference",
    "train_step": "best cpp fused loop 784-100-10 (dense or CSR input) >= 80% of the 1024^3 sgemm rate in "
                  "dense-equivalent flops; cpp fused 64-32-10 <= 10 us/step",
    "epoch": "best cpp kernel <= 0.5 s/epoch and >= 2x torch",
}

_H = 1e-4  # the tutorials' step for central differences
# OpenBLAS worker threads (numpy's own library included) busy-wait up to 2^28 cycles (~0.1 s) after a
# call; the rows whose OpenMP threads must not share the cores with them idle this long first.
BLAS_SPIN_S = 0.12
GEMM_SHAPES_CASE = "5 gemms of 784-100-10 backprop, N=100"


# ---------------------------------------------------------------------------------------- timing
@dataclass
class Config:
    """How long and how often to measure.

    Each measurement: one warm-up call (timed as ``first_call_s``), then the inner
    loop count is calibrated so one repeat lasts at least ``min_repeat_time``, and
    as many repeats as fit in ``budget`` seconds are taken, clamped to
    ``[min_repeats, max_repeats]`` (``min_repeats_slow`` when even that exceeds
    ``slow_limit`` seconds). The repeats of the rows compared with each other are
    taken in ``rounds`` interleaved rounds, so a slow drift of the machine (another
    process, the host) affects them alike instead of one row.
    """

    quick: bool = False
    budget: float = 1.0
    min_repeat_time: float = 0.02
    min_repeats: int = 5
    max_repeats: int = 100
    min_repeats_slow: int = 3
    slow_limit: float = 8.0
    pause: float = 0.15  # idle seconds before a different backend's repeats (see ``run_jobs``)
    # ... and after numpy's: its own OpenBLAS threads busy-wait 0.1-0.2 s after the reference's last gemm
    pause_after_numpy: float = 0.25
    rounds: int = 5

    @classmethod
    def for_mode(cls, quick: bool) -> "Config":
        if quick:
            return cls(quick=True, budget=0.12, min_repeat_time=0.004, min_repeats=3, max_repeats=15,
                       min_repeats_slow=1, slow_limit=0.6, pause=0.05, rounds=2)
        return cls()


@dataclass
class Timing:
    """Per-call seconds of every repeat (already divided by ``per`` and multiplied by ``scale``)."""

    times: List[float]
    number: int  # calls per repeat
    first_call_s: float  # the warm-up call (JIT compile, cache load, first touch)
    per: int = 1  # work units per call (steps of a fused loop)
    scale: float = 1.0  # extrapolation factor (subset of the work, scaled linearly)
    busy_other: Optional[float] = None  # share of the CPUs other processes used while timing

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    def stats(self) -> Dict[str, float]:
        t = np.asarray(self.times, dtype=np.float64)
        q1, q3 = np.percentile(t, [25, 75])
        return {"median_s": float(np.median(t)), "min_s": float(t.min()), "max_s": float(t.max()),
                "q1_s": float(q1), "q3_s": float(q3), "mean_s": float(t.mean())}



def _central_diff_prefix(loss: Callable[[], float], p: np.ndarray, n: int, out: Optional[np.ndarray] = None) -> None:
    """The reference's per-element central difference over the first ``n`` entries of the flat view
    ``p`` (perturbed in place and restored), into ``out[:n]`` when given: the timed reference loop."""
    for i in range(n):
        tmp = p[i]
        p[i] = tmp + _H
        f1 = loss()
        p[i] = tmp - _H
        f2 = loss()
        p[i] = tmp  # restore
        if out is not None:
            out[i] = (f1 - f2) / (2 * _H)

def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot() -> Optional[Tuple[float, float, float]]:
    """(busy seconds of all CPUs, total seconds of all CPUs, CPU seconds of this process), Linux only."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    busy = sum(v[:8]) - idle  # user nice system irq softirq steal (guest is inside user)
    t = os.times()
    return busy / _HZ, (busy + idle) / _HZ, t.user + t.system


class Job:
    """One thing to time (see :func:`measure` for the parameters) and what it has measured so far."""

    def __init__(self, fn: Callable[[], Any], *, setup: Optional[Callable[[], Any]] = None,
                 warmup: Optional[Callable[[], Any]] = None, per: int = 1, scale: float = 1.0,
                 budget: Optional[float] = None, group: str = "", pause: Optional[float] = None) -> None:
        self.fn, self.setup, self.warmup = fn, setup, warmup
        self.per, self.scale, self.budget, self.group = per, scale, budget, group
        self.pause = pause  # idle seconds before its repeats (default cfg.pause), see run_jobs
        self.first = 0.0
        self.number = 1
        self.repeats = 0
        self.samples: List[float] = []
        self.other = 0.0  # CPU seconds used by other processes while this job was timed
        self.capacity = 0.0  # CPU seconds available meanwhile
        self.error: Optional[BaseException] = None

    def prepare(self, cfg: Config) -> None:
        """Warm up, estimate, calibrate the loop count and the number of repeats."""
        budget = cfg.budget if self.budget is None else self.budget
        if self.setup is not None:
            self.setup()
        self.first = _timed(self.warmup if self.warmup is not None else self.fn)
        if self.setup is not None:
            self.setup()
        est = _timed(self.fn)  # steady-state estimate (JIT compiled, caches warm)
        if est >= cfg.min_repeat_time or self.setup is not None:
            self.number = 1
            self.samples.append(est)  # a valid steady-state repeat: keep it
        else:
            n = 1  # timeit-style autorange: grow the loop until it is long enough to time
            while True:
                t0 = time.perf_counter()
                for _ in range(n):
                    self.fn()
                dt = time.perf_counter() - t0
                if dt >= 0.2 * cfg.min_repeat_time or n >= 1 << 22:
                    break
                n *= 4
            self.number = max(1, int(math.ceil(n * cfg.min_repeat_time / max(dt, 1e-9))))
        per_repeat = max(est, 1e-9) * self.number
        if per_repeat * cfg.min_repeats > max(budget, cfg.slow_limit):
            self.repeats = cfg.min_repeats_slow
        else:
            self.repeats = int(min(cfg.max_repeats, max(cfg.min_repeats, budget // per_repeat)))

    def sample(self, k: int) -> None:
        """Take ``k`` more repeats, and account for the CPU use of other processes meanwhile."""
        s0 = _cpu_snapshot()
        w0 = time.perf_counter()
        for _ in range(k):
            if self.setup is not None:
                self.setup()
            t0 = time.perf_counter()
            for _ in range(self.number):
                self.fn()
            self.samples.append((time.perf_counter() - t0) / self.number)
        s1 = _cpu_snapshot()
        if s0 is not None and s1 is not None:
            wall = time.perf_counter() - w0
            busy, total = s1[0] - s0[0], s1[1] - s0[1]
            self.other += max(0.0, busy - (s1[2] - s0[2]))
            self.capacity += max(total, wall)

    def timing(self) -> Timing:
        factor = self.scale / self.per
        busy = min(1.0, self.other / self.capacity) if self.capacity >= 0.05 else None
        return Timing([s * factor for s in self.samples], self.number, self.first, self.per, self.scale, busy)


def run_jobs(jobs: Sequence[Job], cfg: Config, rounds: Optional[int] = None) -> None:
    """Time ``jobs`` (rows compared with each other) in interleaved rounds, garbage collector off.

    Every job is warmed up and calibrated first; then its repeats are spread over
    ``rounds`` rounds that visit the jobs in turn. Before a job whose ``group``
    (the library) differs from the previous one the process idles ``cfg.pause``
    seconds (``cfg.pause_after_numpy`` after numpy's jobs): BLAS/OpenMP worker threads
    busy-wait for a while after their last call and would steal a core from the next
    library's threads. A job that raises keeps
    its exception in ``job.error`` and is dropped; the others go on.
    """
    rounds = cfg.rounds if rounds is None else rounds
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection inside a timed loop is noise, not cost
    try:
        for job in jobs:
            time.sleep(cfg.pause if job.pause is None else job.pause)
            try:
                job.prepare(cfg)
            except Exception as exc:
                job.error = exc
        prev = None
        for r in range(max(1, rounds)):
            for job in jobs:
                if job.error is not None:
                    continue
                k = -(-(job.repeats - len(job.samples)) // (max(1, rounds) - r))  # ceil: spread evenly
                if k <= 0:
                    continue
                if job.group != prev:
                    wait = cfg.pause if job.pause is None else job.pause
                    time.sleep(max(wait, cfg.pause_after_numpy) if prev == "numpy" else wait)
                prev = job.group
                try:
                    job.sample(k)
                except Exception as exc:
                    job.error = exc
    finally:
        if was_enabled:
            gc.enable()


def measure(fn: Callable[[], Any], cfg: Config, *, setup: Optional[Callable[[], Any]] = None,
            warmup: Optional[Callable[[], Any]] = None, per: int = 1, scale: float = 1.0,
            budget: Optional[float] = None) -> Timing:
    """Time ``fn`` adaptively (see :class:`Config`); raises what ``fn`` raises.

    Parameters
    ----------
    fn : callable
        The work, called without arguments.
    cfg : Config
    setup : callable, optional
        Run untimed before every timed call (e.g. reset the parameters); forces one call per repeat.
    warmup : callable, optional
        Cheaper stand-in for the first call (default: ``fn`` itself). Its time is ``first_call_s``.
    per : int
        Work units per call; reported times are per unit (e.g. per step of a fused loop).
    scale : float
        Multiplies the reported times (a subset of the work, extrapolated linearly).
    budget : float, optional
        Seconds for all repeats (default ``cfg.budget``).

    Returns
    -------
    Timing
    """
    job = Job(fn, setup=setup, warmup=warmup, per=per, scale=scale, budget=budget)
    run_jobs([job], cfg, rounds=1)
    if job.error is not None:
        raise job.error
    return job.timing()


# ---------------------------------------------------------------------------------------- results
@dataclass
class Row:
    """One measured configuration. Times are seconds per call (per step for fused loops)."""

    bench: str
    case: str
    backend: str
    variant: str
    dtype: str
    median_s: float
    min_s: float
    max_s: float
    q1_s: float
    q3_s: float
    mean_s: float
    repeats: int
    number: int
    first_call_s: float
    per: int = 1
    scale: float = 1.0
    busy_other: Optional[float] = None  # share of the CPUs used by other processes while timed
    times_s: List[float] = field(default_factory=list)
    is_ref: bool = False
    ratio: Optional[float] = None  # reference median / this median
    ref_row: Optional[str] = None
    flops: Optional[float] = None  # per call (per step)
    gflops: Optional[float] = None
    gemm_basis: Optional[str] = None
    pct_gemm: Optional[float] = None  # gflops / gemm rate of the basis
    pct_gemm_large: Optional[float] = None  # gflops / 1024^3 gemm rate
    nbytes: Optional[float] = None
    gbps: Optional[float] = None
    target: Optional[str] = None
    target_met: Optional[bool] = None
    target_reliable: Optional[bool] = None  # False when this row or its basis was timed on a busy machine
    note: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.bench} | {self.case} | {self.backend} {self.variant} | {self.dtype}"


def mlp_flops(sizes: Sequence[int], n: int) -> float:
    """Flops of the gemms of one forward + backward pass of a fully connected net.

    Forward ``2 N n_{l-1} n_l`` per layer, the same again for every ``dW``, and
    ``2 N n_l n_{l-1}`` for ``dX`` of every layer but the first (the input needs
    no gradient). For 784-100-10: ``4 N (784*100 + 100*10) + 2 N 10*100``.
    """
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2.0 * n * a * b for a, b in pairs)
    dx = sum(2.0 * n * a * b for a, b in pairs[1:])
    return 2 * fwd + dx


def _fmt_time(s: Optional[float]) -> str:
    if s is None or not np.isfinite(s):
        return "-"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= f:
            v = s / f
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    return f"{s / 1e-9:.2g} ns"


def _fmt_ratio(r: Optional[float]) -> str:
    if r is None:
        return "-"
    if r >= 100:
        return f"{r:,.0f}x"
    return f"{r:.3g}x"


BUSY_FLAG = 0.15  # rows timed while other processes used more of the CPUs than this are flagged


def _spread(r: Row) -> str:
    if r.repeats < 2 or r.median_s <= 0:
        s = f"n={r.repeats}"
    else:
        lo = (r.min_s / r.median_s - 1) * 100
        hi = (r.max_s / r.median_s - 1) * 100
        s = f"{lo:+.0f}/{hi:+.0f}% n={r.repeats}"
    if r.busy_other is not None and r.busy_other >= BUSY_FLAG:
        s += f" busy{100 * r.busy_other:.0f}%"
    return s


def _throughput(r: Row) -> str:
    if r.gflops is not None:
        s = f"{r.gflops:.1f} GFLOP/s"
        if r.pct_gemm is not None:
            s += f" ({100 * r.pct_gemm:.0f}% {r.gemm_basis})"
        return s
    if r.gbps is not None:
        return f"{r.gbps:.1f} GB/s"
    return "-"


def _busy(r: Optional[Row]) -> bool:
    return r is not None and r.busy_other is not None and r.busy_other >= BUSY_FLAG


def _target_cell(r: Row) -> str:
    if r.target is None:
        return ""
    flag = "" if r.target_reliable is not False else " (busy machine: unreliable)"
    return f"{'met' if r.target_met else 'MISSED'}{flag}: {r.target}"


_COLUMNS = ("case", "backend", "dtype", "median", "spread", "x ref", "throughput", "target")


def _cells(r: Row) -> List[str]:
    backend = f"{r.backend} ({r.variant})" if r.variant else r.backend
    return [r.case, backend, r.dtype, _fmt_time(r.median_s), _spread(r), _fmt_ratio(r.ratio),
            _throughput(r), _target_cell(r)]


def text_table(rows: Sequence[Row]) -> str:
    """Fixed-width table of ``rows`` for the terminal."""
    data = [list(_COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in data) for i in range(len(_COLUMNS))]
    out = []
    for k, line in enumerate(data):
        out.append("  ".join(c.ljust(w) if i < 3 or i == 7 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: Sequence[Row]) -> str:
    """The same table as GitHub markdown, with a benchmark column."""
    head = ["benchmark", *_COLUMNS]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 4 + ["---:"] * 4 + ["---"]) + "|"]
    for r in rows:
        cells = [r.bench] + [c.replace("|", "/") for c in _cells(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- machine
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


def _loadavg() -> Optional[List[float]]:
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
    from . import __version__
    info: Dict[str, Any] = {
        "python": sys.version.split()[0], "implementation": platform.python_implementation(),
        "platform": platform.platform(), **_cpuinfo(), "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _mem_gib(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                           "NUMBA_NUM_THREADS", "PYFASTGRAD_BACKEND", "PYFASTGRAD_DATA",
                                           "JAX_PLATFORMS", "XLA_FLAGS") if k in os.environ},
        "versions": {"pyfastgrad": __version__, "numpy": np.__version__,
                     **{m: _version(m) for m in ("numba", "scipy", "scipy-openblas32", "torch", "jax",
                                                 "jaxlib", "numdifftools", "threadpoolctl", "matplotlib")}},
        "backends": backends(),
    }
    threads: Dict[str, Any] = {}
    if "cpp" in available_backends():
        try:
            threads["cpp_blas"] = kernels("cpp").blas_info()
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


def _numba_cache_stats() -> Optional[Dict[str, int]]:
    """On-disk cache hits/misses of the numba backend's kernels in this process."""
    try:
        mod = kernels("numba")
    except Exception:
        return None
    hits = misses = 0
    for obj in vars(mod).values():
        st = getattr(obj, "stats", None)
        if st is not None and hasattr(st, "cache_hits"):
            hits += sum(st.cache_hits.values())
            misses += sum(st.cache_misses.values())
    return {"cache_hits": hits, "cache_misses": misses}


# ---------------------------------------------------------------------------------------- helpers
def _one_hot(labels: np.ndarray, classes: int, dtype) -> np.ndarray:
    out = np.zeros((labels.shape[0], classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def _mnist_candidates() -> List[Optional[Path]]:
    here = Path(__file__).resolve()
    cands: List[Optional[Path]] = [None]  # load_mnist's own search: $PYFASTGRAD_DATA, the cache dir
    for up in (here.parents[1], here.parents[2]):  # a source checkout next to shared/datasets/mnist
        p = up / "shared" / "datasets" / "mnist"
        if p.is_dir():
            cands.append(p)
    return cands


def load_images() -> Tuple[np.ndarray, np.ndarray, str]:
    """60,000 training images (float32, (N, 784), in [0, 1]), int labels, and where they came from.

    MNIST when found; else the real MNIST subset shipped in the package (12,000 images, tiled
    to 60,000: same shapes, so the same cost); else random data.
    """
    try:
        from .datasets import load_mnist
        for path in _mnist_candidates():
            try:
                (x, t), _ = load_mnist(path, dtype=np.float32)
                return np.ascontiguousarray(x, np.float32), np.asarray(t, np.int64), \
                    f"MNIST ({path if path is not None else 'default search'})"
            except FileNotFoundError:
                continue
        from .datasets import load_mnist_subset
        (x, t), _ = load_mnist_subset(dtype=np.float32)
        reps = -(-60000 // x.shape[0])
        return (np.ascontiguousarray(np.tile(x, (reps, 1))[:60000], np.float32),
                np.tile(np.asarray(t, np.int64), reps)[:60000],
                f"the MNIST subset shipped with pyfastgrad (MNIST not found; {x.shape[0]:,} images tiled to 60,000)")
    except Exception as exc:  # the datasets module is optional for timing purposes
        rng = np.random.default_rng(0)
        return (rng.random((60000, 784), dtype=np.float32), rng.integers(0, 10, 60000),
                f"random data (datasets unavailable: {type(exc).__name__}: {exc})")


def _import_torch() -> Tuple[Any, str]:
    try:
        import torch
        return torch, torch.__version__
    except Exception as exc:
        return None, f"unavailable: {type(exc).__name__}: {exc}"


def _import_jax() -> Tuple[Any, str]:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU benchmark: do not probe accelerators
    try:
        import jax
        jax.config.update("jax_enable_x64", True)  # float64 rows; float32 arrays stay float32
        return jax, jax.__version__
    except Exception as exc:
        return None, f"unavailable: {type(exc).__name__}: {exc}"


def _torch_mlp(torch: Any, sizes: Sequence[int], theta: np.ndarray):
    """Leaf tensors (W, b) per layer holding a copy of ``theta``, and the forward function."""
    params = []
    for ws, wshape, bs in _layout.layer_slices(sizes):
        W = torch.tensor(theta[ws].reshape(wshape), requires_grad=True)
        b = torch.tensor(theta[bs], requires_grad=True)
        params.append((W, b))
    n = len(params)

    def forward(x):
        h = x
        for i, (W, b) in enumerate(params):
            h = torch.addmm(b, h, W)  # b + h @ W in one BLAS call
            if i < n - 1:
                h = torch.relu(h)
        return h

    def reset(theta_new: np.ndarray) -> None:
        with torch.no_grad():
            for (W, b), (ws, wshape, bs) in zip(params, _layout.layer_slices(sizes)):
                W.copy_(torch.from_numpy(theta_new[ws].reshape(wshape)))
                b.copy_(torch.from_numpy(theta_new[bs]))

    flat = [p for pair in params for p in pair]
    return flat, forward, reset


def _jax_mlp(jax: Any, sizes: Sequence[int], theta: np.ndarray):
    """Parameters as a tuple of jax arrays and the loss (mean softmax cross-entropy, one-hot t)."""
    jnp = jax.numpy
    params = tuple(jnp.asarray(a) for ws, wshape, bs in _layout.layer_slices(sizes)
                   for a in (theta[ws].reshape(wshape), theta[bs]))
    n = len(sizes) - 1

    def loss(p, x, t):
        h = x
        for i in range(n):
            h = h @ p[2 * i] + p[2 * i + 1]
            if i < n - 1:
                h = jnp.maximum(h, 0)
        return -jnp.sum(t * jax.nn.log_softmax(h, axis=1)) / x.shape[0]

    return params, loss


# ---------------------------------------------------------------------------------------- runner
class _Runner:
    def __init__(self, cfg: Config, out: Path, plot: bool) -> None:
        self.cfg = cfg
        self.out = out
        self.plot = plot
        self.rows: List[Row] = []
        self.notes: Dict[str, List[str]] = {}
        self.errors: List[Dict[str, str]] = []
        self.gemm: Dict[str, Dict[str, float]] = {}
        self.scaling: List[Dict[str, Any]] = []
        self.backends = available_backends()
        self.order = ["numpy"] + [b for b in self.backends if b != "numpy"]  # reference first
        self.fast = [b for b in self.backends if b != "numpy"]
        self.torch, self.torch_status = _import_torch()
        self.jax, self.jax_status = _import_jax()
        self._images: Optional[Tuple[np.ndarray, np.ndarray, str]] = None
        self._pending: List[Tuple[Job, Dict[str, Any]]] = []

    # -- plumbing ---------------------------------------------------------------------------
    def images(self) -> Tuple[np.ndarray, np.ndarray]:
        if self._images is None:
            self._images = load_images()
            print(f"data: {self._images[2]}", flush=True)
        return self._images[0], self._images[1]

    def note(self, bench: str, text: str) -> None:
        lst = self.notes.setdefault(bench, [])
        if text not in lst:
            lst.append(text)

    def job(self, bench: str, case: str, backend: str, variant: str, dtype, fn: Callable[[], Any], *,
            setup: Optional[Callable[[], Any]] = None, warmup: Optional[Callable[[], Any]] = None,
            per: int = 1, scale: float = 1.0, budget: Optional[float] = None, flops: Optional[float] = None,
            nbytes: Optional[float] = None, gemm_basis: str = "shapes", is_ref: bool = False,
            extra_fn: Optional[Callable[[], Dict[str, Any]]] = None, group: Optional[str] = None,
            pause: Optional[float] = None, **extra: Any) -> None:
        """Queue one row; :meth:`flush` times the queued rows together (interleaved). ``group``: rows of
        another group (default: the backend) are preceded by an idle ``pause`` (default ``cfg.pause``,
        see :func:`run_jobs`)."""
        j = Job(fn, setup=setup, warmup=warmup, per=per, scale=scale, budget=budget,
                group=backend if group is None else group, pause=pause)
        row = dict(bench=bench, case=case, backend=backend, variant=variant, dtype=dtype, flops=flops,
                   nbytes=nbytes, gemm_basis=gemm_basis, is_ref=is_ref, extra_fn=extra_fn, extra=extra)
        self._pending.append((j, row))

    def flush(self) -> List[Row]:
        """Time the queued rows in interleaved rounds and add them; failures are recorded, not raised."""
        pending, self._pending = self._pending, []
        run_jobs([j for j, _ in pending], self.cfg)
        out = []
        for j, kw in pending:
            what = f"{kw['case']} / {kw['backend']} ({kw['variant']}) {np.dtype(kw['dtype']).name}"
            if j.error is not None:
                exc = j.error
                self.errors.append({"bench": kw["bench"], "what": what, "error": f"{type(exc).__name__}: {exc}",
                                    "traceback": "".join(traceback.format_exception(
                                        type(exc), exc, exc.__traceback__, limit=6))})
                print(f"  ! {kw['bench']} / {what}: {type(exc).__name__}: {exc}", flush=True)
                continue
            extra = dict(kw.pop("extra"))
            extra_fn = kw.pop("extra_fn")
            if extra_fn is not None:
                try:
                    extra.update(extra_fn())
                except Exception as exc:  # a failed sanity check is reported, the timing kept
                    extra["extra_error"] = f"{type(exc).__name__}: {exc}"
            out.append(self.add(timing=j.timing(), **kw, **extra))
        return out

    def add(self, bench: str, case: str, backend: str, variant: str, dtype, timing: Timing,
            flops: Optional[float] = None, nbytes: Optional[float] = None, gemm_basis: str = "shapes",
            is_ref: bool = False, **extra: Any) -> Row:
        st = timing.stats()
        r = Row(bench=bench, case=case, backend=backend, variant=variant, dtype=np.dtype(dtype).name,
                repeats=len(timing.times), number=timing.number, first_call_s=timing.first_call_s,
                per=timing.per, scale=timing.scale, busy_other=timing.busy_other,
                times_s=list(map(float, timing.times)), is_ref=is_ref, extra=extra, **st)
        if flops is not None:
            r.flops = float(flops)
            r.gflops = flops / r.median_s / 1e9
            rates = self.gemm.get(r.dtype, {})
            base = rates.get(gemm_basis)
            if base:
                r.gemm_basis = ("s" if r.dtype == "float32" else "d") + \
                    ("gemm same shapes" if gemm_basis == "shapes" else "gemm 1024^3")
                r.pct_gemm = r.gflops / base
            if rates.get("large"):
                r.pct_gemm_large = r.gflops / rates["large"]
        if nbytes is not None:
            r.nbytes = float(nbytes)
            r.gbps = nbytes / r.median_s / 1e9
        self.rows.append(r)
        return r

    def finish(self, bench: str) -> None:
        """Ratios against the numpy reference of the same case and dtype (this run's timings)."""
        rows = [r for r in self.rows if r.bench == bench]
        for r in rows:
            refs = [q for q in rows if q.backend == "numpy" and q.case == r.case and q.dtype == r.dtype]
            same = [q for q in refs if q.variant == r.variant]
            base = same[0] if same else next((q for q in refs if q.is_ref), None)
            if base is not None and r.median_s > 0:
                r.ratio = base.median_s / r.median_s
                r.ref_row = base.label

    def set_target(self, row: Row, text: str, met: bool, basis: Sequence[Optional[Row]] = ()) -> None:
        """Record a target check on ``row``; unreliable when it or a row it is compared with was busy."""
        row.target, row.target_met = text, bool(met)
        row.target_reliable = not any(_busy(r) for r in (row, *basis))

    def find(self, bench: str, backend: str, case: Optional[str] = None, variant: Optional[str] = None,
             dtype: Optional[str] = None) -> Optional[Row]:
        for r in self.rows:
            if (r.bench == bench and r.backend == backend and (case is None or r.case == case)
                    and (variant is None or r.variant.startswith(variant))
                    and (dtype is None or r.dtype == dtype)):
                return r
        return None

    # -- gemm baseline ----------------------------------------------------------------------
    def bench_gemm(self) -> None:
        rng = np.random.default_rng(0)
        m, n, sizes = 1024, 100, [784, 100, 10]
        for dtype in (np.float32, np.float64):
            # the five gemms of 784-100-10 backprop at N = 100, with the same transposes
            x = rng.random((n, 784)).astype(dtype)
            W1, W2 = rng.standard_normal((784, 100)).astype(dtype), rng.standard_normal((100, 10)).astype(dtype)
            a1, z2 = np.empty((n, 100), dtype), np.empty((n, 10), dtype)
            d2, d1 = rng.standard_normal((n, 10)).astype(dtype), np.empty((n, 100), dtype)
            dW1, dW2 = np.empty_like(W1), np.empty_like(W2)

            def shapes(x=x, W1=W1, W2=W2, a1=a1, z2=z2, d2=d2, d1=d1, dW1=dW1, dW2=dW2):
                np.matmul(x, W1, out=a1)
                np.matmul(a1, W2, out=z2)
                np.matmul(a1.T, d2, out=dW2)
                np.matmul(d2, W2.T, out=d1)
                np.matmul(x.T, d1, out=dW1)

            A, Bm = rng.standard_normal((m, m)).astype(dtype), rng.standard_normal((m, m)).astype(dtype)
            C = np.empty((m, m), dtype)
            self.job("gemm", GEMM_SHAPES_CASE, "numpy", "matmul", dtype, shapes,
                     flops=mlp_flops(sizes, n))
            self.job("gemm", "1024x1024 @ 1024x1024", "numpy", "matmul", dtype,
                     lambda A=A, Bm=Bm, C=C: np.matmul(A, Bm, out=C), flops=2.0 * m ** 3)
        for r in self.flush():
            key = "large" if r.case.startswith("1024") else "shapes"
            # the best repeat: the machine's capability, robust to a busy moment
            self.gemm.setdefault(r.dtype, {})[key] = r.flops / r.min_s / 1e9
            self.gemm[r.dtype][key + "_median"] = r.gflops
        for r in self.rows:  # the rows above were added before the rates existed
            if r.bench == "gemm" and r.gflops is not None:
                big = self.gemm.get(r.dtype, {}).get("large")
                r.pct_gemm_large = r.gflops / big if big else None
                r.pct_gemm = r.pct_gemm_large
                r.gemm_basis = ("s" if r.dtype == "float32" else "d") + "gemm 1024^3"
        self.note("gemm", "numpy matmul (numpy's own OpenBLAS) with preallocated outputs; the rate of the best "
                          "repeat on the same shapes is the basis of the backprop/train-step/epoch percentages, "
                          "the 1024^3 one of the scaling percentages")
        for name, rates in self.gemm.items():
            self.note("gemm", f"{name}: best {rates.get('shapes', float('nan')):.1f} GFLOP/s on the backprop "
                              f"shapes, {rates.get('large', float('nan')):.1f} GFLOP/s on 1024^3")

    # -- 1. numerical gradient of a function -------------------------------------------------
    def bench_numgrad_func(self) -> None:
        import pyfastgrad as pfg
        B = "numgrad_func"
        x0 = np.random.default_rng(0).standard_normal(1000)
        exact = 2 * x0

        def f(x):  # the tutorials' function_2
            return np.sum(x ** 2)

        def err_of(grad_fn):
            return lambda: {"max_abs_err": float(np.abs(grad_fn() - exact).max())}

        case = "sum(x**2), n=1000, Python f"
        for b in self.order:
            x = x0.copy()
            g = (lambda x=x, b=b: pfg.numerical_gradient(f, x, backend=b))
            self.job(B, case, b, "numerical_gradient", np.float64, g, is_ref=(b == "numpy"), extra_fn=err_of(g))
        if "numba" in self.backends:
            self.note(B, "the numba backend runs a Python f through the plain Python loop (like numpy); "
                         "only a numba-jitted f gets the nopython loop")
        try:
            from scipy.optimize import approx_fprime
            x = x0.copy()
            g = (lambda x=x: approx_fprime(x, f, _H))
            self.job(B, case, "scipy", "approx_fprime (forward: n+1 evals)", np.float64, g, extra_fn=err_of(g))
        except ImportError:
            self.note(B, "scipy not installed: approx_fprime skipped")
        try:
            import numdifftools as nd
            G = nd.Gradient(f, step=_H, method="central", order=2)
            x = x0.copy()
            g = (lambda x=x: G(x))
            self.job(B, case, "numdifftools", "Gradient(step=1e-4, central)", np.float64, g, extra_fn=err_of(g))
        except ImportError:
            self.note(B, "numdifftools not installed: skipped")
        self.flush()
        try:
            import numba
        except ImportError:
            self.note(B, "numba not installed: jitted-f case skipped")
            return

        @numba.njit(cache=False)
        def f_jit(x):
            s = 0.0
            for i in range(x.shape[0]):
                s += x[i] * x[i]
            return s

        case = "sum(x**2), n=1000, numba-jitted f"
        for b in self.order:
            x = x0.copy()
            g = (lambda x=x, b=b: pfg.numerical_gradient(f_jit, x, backend=b))
            self.job(B, case, b, "numerical_gradient", np.float64, g, is_ref=(b == "numpy"), extra_fn=err_of(g))
        self.flush()
        self.note(B, "first_call_s of the jitted-f rows includes numba compiling f (numpy row) and the "
                     "nopython loop specialised on f (numba row); both are excluded from the medians")

    # -- 2. numerical gradient of a net ------------------------------------------------------
    def bench_numgrad_net(self) -> None:
        import pyfastgrad as pfg
        B = "numgrad_net"
        X, labels = self.images()
        x = X[:100].astype(np.float64)
        t = _one_hot(labels[:100], 10, np.float64)
        proto = pfg.TwoLayerNet(784, 50, 10, seed=0, backend="numpy")
        n_total = proto.n_params
        K = 100 if self.cfg.quick else 1000
        n_w2 = proto.params["W2"].size
        n_sub = K + n_w2
        scale = n_total / n_sub
        case = f"TwoLayerNet(784,50,10), N=100, all {n_total:,} params"

        rnet = ref.TwoLayerNet(784, 50, 10, seed=0)
        for key in rnet.params:  # in place: the reference's layers hold these very arrays
            rnet.params[key][...] = proto.params[key]
        subset = (("W1", K), ("W2", n_w2))
        g_ref = {key: np.zeros(n) for key, n in subset}

        def ref_subset() -> None:
            # the reference's per-element central difference, over the stated subset only
            for key, n in subset:
                _central_diff_prefix(lambda: rnet.loss(x, t), rnet.params[key].reshape(-1), n, g_ref[key])

        self.job(B, case, "numpy", f"reference loop on {n_sub:,} params, x{scale:.1f}", np.float64, ref_subset,
                 warmup=lambda: rnet.loss(x, t), scale=scale, is_ref=True,
                 subset=f"first {K} of W1 + all {n_w2} of W2", subset_params=n_sub)
        self.note(B, f"reference: pyfastgrad.reference's central difference timed on {n_sub:,} of the "
                     f"{n_total:,} parameters (first {K} of W1, all of W2) and scaled by {scale:.2f}: its cost "
                     "per parameter is constant (a full forward pass per evaluation)")
        try:
            from scipy.optimize import approx_fprime
            W1f, W2f = rnet.params["W1"].reshape(-1), rnet.params["W2"].reshape(-1)
            v0 = np.concatenate([W1f[:K], W2f])

            def f_sub(v):
                W1f[:K] = v[:K]
                W2f[:] = v[K:]
                return rnet.loss(x, t)

            def scipy_run():
                approx_fprime(v0, f_sub, _H)
                f_sub(v0)  # restore the parameters

            self.job(B, case, "scipy", f"approx_fprime (forward) on {n_sub:,} params, x{scale:.1f}", np.float64,
                     scipy_run, warmup=lambda: f_sub(v0), scale=scale)
        except ImportError:
            pass
        for b in self.fast:
            net = pfg.TwoLayerNet(784, 50, 10, seed=0, backend=b)
            net.theta[:] = proto.theta

            def check(net=net):
                g = net.numerical_gradient(x, t)
                return {"max_abs_diff_vs_reference": float(max(
                    np.abs(g["W1"].reshape(-1)[:K] - g_ref["W1"]).max(),
                    np.abs(g["W2"].reshape(-1) - g_ref["W2"]).max()))}

            self.job(B, case, b, "net.numerical_gradient", np.float64,
                     lambda net=net: net.numerical_gradient(x, t), extra_fn=check)
        self.flush()
        self.finish(B)
        r = self.find(B, "cpp")
        if r is not None and r.ratio is not None:
            self.set_target(r, f">=1000x ref ({r.ratio:,.0f}x)", r.ratio >= 1000, [self.find(B, "numpy")])

    # -- 3. backprop -------------------------------------------------------------------------
    def bench_backprop(self) -> None:
        import pyfastgrad as pfg
        B = "backprop"
        X, labels = self.images()
        sizes, n = [784, 100, 10], 100
        flops = mlp_flops(sizes, n)
        case = "784-100-10, N=100"
        for dtype in (np.float32, np.float64):
            x = np.ascontiguousarray(X[:n], dtype=dtype)
            t = _one_hot(labels[:n], 10, dtype)
            proto = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend="numpy")
            theta0 = proto.theta.copy()
            for b in self.order:
                net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
                mlp = net._mlp()
                grad = np.empty_like(net.theta)
                self.job(B, case, b, "kernel Mlp.loss_grad", dtype,
                         lambda mlp=mlp, net=net, grad=grad: mlp.loss_grad(net.theta, x, t, 0.0, grad),
                         flops=flops, is_ref=(b == "numpy"))
                if b == "cpp":  # the same call kept on the gemms (what it does for dense inputs)
                    self.job(B, case, b, "kernel Mlp.loss_grad(sparse=False)", dtype,
                             lambda mlp=mlp, net=net, grad=grad: mlp.loss_grad(net.theta, x, t, 0.0, grad,
                                                                               sparse=False),
                             flops=flops)
                self.job(B, case, b, "net.gradient()", dtype, lambda net=net: net.gradient(x, t), flops=flops)
            if self.torch is not None:
                torch = self.torch
                params, forward, _ = _torch_mlp(torch, sizes, theta0)
                xt, yt = torch.from_numpy(x), torch.from_numpy(labels[:n].astype(np.int64))
                ce = torch.nn.functional.cross_entropy

                def torch_grad(params=params, forward=forward, xt=xt, yt=yt):
                    for p in params:
                        p.grad = None
                    ce(forward(xt), yt).backward()

                self.job(B, case, "torch", "eager fwd+bwd", dtype, torch_grad, flops=flops)
            if self.jax is not None:
                jax = self.jax
                jparams, loss = _jax_mlp(jax, sizes, theta0)
                g = jax.jit(jax.grad(loss))
                xj, tj = jax.numpy.asarray(x), jax.numpy.asarray(t)
                self.job(B, case, "jax", "jit(grad)", dtype,
                         lambda g=g, p=jparams, xj=xj, tj=tj: jax.block_until_ready(g(p, xj, tj)), flops=flops)
            self.flush()
        self.note(B, "flops: forward 2N(784*100 + 100*10), dW the same, dX of layer 2 only 2N*10*100 "
                     f"= {flops / 1e6:.2f} MFLOP per call; % is of the numpy gemm rate on the same shapes")
        self.note(B, "the numpy reference's loss_grad runs the forward pass twice (loss, then gradient), as "
                     "the tutorials' loss + gradient calls do")
        self.note(B, "cpp's loss_grad runs the first layer on the nonzeros of x when at most 40% of it is "
                     "nonzero (MNIST: 19%): GFLOP/s and % are dense-equivalent there; sparse=False keeps the gemms")
        self.finish(B)
        # Issue target (float32, against sgemm): >= 2x torch eager and >= 60% of the 1024^3 sgemm rate.
        for dtype in ("float32", "float64"):
            cpp = self.find(B, "cpp", variant="kernel Mlp.loss_grad", dtype=dtype)
            tr = self.find(B, "torch", dtype=dtype)
            if cpp is None or cpp.variant != "kernel Mlp.loss_grad":
                continue
            if tr is not None:
                cpp.extra["speedup_vs_torch"] = tr.median_s / cpp.median_s
            if dtype != "float32":
                if tr is not None:
                    self.note(B, f"float64: cpp is {cpp.extra['speedup_vs_torch']:.2f}x torch eager")
                continue
            parts, met = [], True
            if tr is not None:
                parts.append(f">=2x torch ({cpp.extra['speedup_vs_torch']:.2f}x)")
                met = cpp.extra["speedup_vs_torch"] >= 2
            if cpp.pct_gemm_large is not None:
                parts.append(f">=60% sgemm 1024^3 ({100 * cpp.pct_gemm_large:.0f}%, dense-equivalent)")
                met = met and cpp.pct_gemm_large >= 0.6
            if parts:
                self.set_target(cpp, "; ".join(parts), met,
                                [tr, self.find("gemm", "numpy", dtype=dtype, case="1024x1024 @ 1024x1024")])

    # -- 4. optimizer ------------------------------------------------------------------------
    def bench_optimizer(self) -> None:
        B = "optimizer"
        n = _layout.n_params([784, 100, 10])
        rng = np.random.default_rng(0)
        theta_src = rng.standard_normal(n) * 0.01
        grad_src = rng.standard_normal(n) * 1e-3
        dtypes = (np.float32,) if self.cfg.quick else (np.float32, np.float64)
        for opt, lr, words in (("sgd", 0.01, 3), ("adam", 0.001, 7)):
            case = f"{'SGD' if opt == 'sgd' else 'Adam'}, {n:,} params"
            hyper = np.array([lr, 0.9, 0.999])
            for dtype in dtypes:
                nbytes = words * n * np.dtype(dtype).itemsize  # read/write traffic of one update
                for b in self.order:
                    k = kernels(b)
                    theta, grad = theta_src.astype(dtype), grad_src.astype(dtype)
                    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
                    self.job(B, case, b, "kernel opt_update", dtype,
                             lambda k=k, th=theta, g=grad, s1=s1, s2=s2:
                             k.opt_update(opt, th, g, s1, s2, hyper, 10),
                             nbytes=nbytes, is_ref=(b == "numpy"))
                if self.torch is not None:
                    torch = self.torch
                    cls = torch.optim.SGD if opt == "sgd" else torch.optim.Adam
                    for variant, kw in (("torch.optim", {}), ("torch.optim fused=True", {"fused": True})):
                        p = torch.nn.Parameter(torch.from_numpy(theta_src.astype(dtype)))
                        p.grad = torch.from_numpy(grad_src.astype(dtype))
                        try:
                            o = cls([p], lr=lr, **kw)
                        except Exception as exc:  # fused needs a recent torch
                            self.note(B, f"{variant} unavailable: {exc}")
                            continue
                        self.job(B, case, "torch", variant, dtype, o.step, nbytes=nbytes)
                self.flush()
        self.note(B, "GB/s: 3 (SGD) or 7 (Adam) vectors of the parameter count read or written per update")
        self.finish(B)

    # -- 5. train step -----------------------------------------------------------------------
    def bench_train_step(self) -> None:
        import pyfastgrad as pfg
        B = "train_step"
        q = self.cfg.quick
        X, labels = self.images()
        rng = np.random.default_rng(1)
        Xs = rng.standard_normal((8192, 64)).astype(np.float32)
        ls = rng.integers(0, 10, 8192)
        cases = (([784, 100, 10], 100, X, labels, 50 if q else 200, 5 if q else 20, "MNIST"),
                 ([64, 32, 10], 32, Xs, ls, 500 if q else 5000, 50 if q else 500, "synthetic N(0,1) data"))
        dtype = np.float32
        for sizes, bs, Xd, ld, S, S_ref, src in cases:
            case = f"{'-'.join(map(str, sizes))}, batch {bs}"
            flops = mlp_flops(sizes, bs)
            T = _one_hot(ld, sizes[-1], dtype)
            idx = rng.integers(0, Xd.shape[0], size=(S, bs)).astype(np.int64)
            xb, tb, yb = Xd[idx[0]], T[idx[0]], ld[idx[0]]
            theta0 = pfg.TwoLayerNet(*sizes, seed=0, dtype=dtype, backend="numpy").theta.copy()
            hyper = np.array([0.1, 0.0, 0.0])
            for b in self.order:
                net = pfg.TwoLayerNet(*sizes, seed=0, dtype=dtype, backend=b)
                mlp = net._mlp()
                s1, s2 = np.zeros_like(net.theta), np.zeros_like(net.theta)
                steps = S_ref if b == "numpy" else S
                part = np.ascontiguousarray(idx[:steps])
                losses: List[np.ndarray] = []

                def fused(mlp=mlp, net=net, s1=s1, s2=s2, part=part, losses=losses):
                    losses.append(mlp.train_steps(net.theta, Xd, T, part, 0.0, "sgd", hyper, s1, s2, 0))
                    del losses[:-1]

                self.job(B, case, b, f"fused loop, {steps} steps/call", dtype, fused, per=steps,
                         warmup=lambda mlp=mlp, net=net, s1=s1, s2=s2, part=part:
                         mlp.train_steps(net.theta, Xd, T, part[:2], 0.0, "sgd", hyper, s1, s2, 0),
                         flops=flops, is_ref=(b == "numpy"), steps_per_call=steps,
                         extra_fn=lambda losses=losses: {"losses_finite": bool(np.isfinite(losses[-1]).all())})
                if b == "cpp" and src == "MNIST":
                    self._csr_train_step_job(B, case, sizes, Xd, T, part, hyper, flops, steps)
                opt = pfg.SGD(lr=0.1)
                self.job(B, case, b, "per Python call net.train_step", dtype,
                         lambda net=net, opt=opt: net.train_step(xb, tb, opt), flops=flops)
            if self.torch is not None:
                torch = self.torch
                params, forward, _ = _torch_mlp(torch, sizes, theta0)
                o = torch.optim.SGD(params, lr=0.1)
                xt, yt = torch.from_numpy(xb), torch.from_numpy(yb.astype(np.int64))
                ce = torch.nn.functional.cross_entropy

                def torch_step(o=o, forward=forward, xt=xt, yt=yt):
                    o.zero_grad(set_to_none=True)
                    ce(forward(xt), yt).backward()
                    o.step()

                self.job(B, case, "torch", "eager step per call", dtype, torch_step, flops=flops)
            if self.jax is not None:
                jax = self.jax
                jparams, loss = _jax_mlp(jax, sizes, theta0)

                def _step(p, x, t, loss=loss):
                    g = jax.grad(loss)(p, x, t)
                    return tuple(a - 0.1 * d for a, d in zip(p, g))

                jstep = jax.jit(_step)
                xj, tj = jax.numpy.asarray(xb), jax.numpy.asarray(tb)
                state = [jparams]

                def jax_step(jstep=jstep, state=state, xj=xj, tj=tj):
                    state[0] = jstep(state[0], xj, tj)
                    jax.block_until_ready(state[0])

                self.job(B, case, "jax", "jit step per call", dtype, jax_step, flops=flops)
            self.flush()
            self.note(B, f"{case}: data {src}; fused rows gather a random batch per step inside the kernel; "
                         "per-call rows (pyfastgrad, torch, jax) reuse one pre-gathered batch")
        self.note(B, "fused: Mlp.train_steps over many steps in one call, time divided by the steps")
        self.finish(B)
        fused = [r for r in self.rows if r.bench == B and r.backend == "cpp" and r.case == "784-100-10, batch 100"
                 and r.variant.startswith("fused")]
        big = min(fused, key=lambda r: r.median_s) if fused else None
        if big is not None and big.pct_gemm_large is not None:
            csr = "CSR" in big.variant
            txt = (f">=80% sgemm 1024^3 ({100 * big.pct_gemm_large:.0f}%"
                   + (f"; {100 * big.pct_gemm:.0f}% of same-shape sgemm" if big.pct_gemm is not None else "")
                   + ("; dense-equivalent flops, exploits input sparsity" if csr else "") + ")")
            self.set_target(big, txt, big.pct_gemm_large >= 0.8,
                            [self.find("gemm", "numpy", dtype="float32", case=GEMM_SHAPES_CASE),
                             self.find("gemm", "numpy", dtype="float32", case="1024x1024 @ 1024x1024")])
        tiny = self.find(B, "cpp", case="64-32-10, batch 32", variant="fused")
        if tiny is not None:
            self.set_target(tiny, f"<=10 us/step ({tiny.median_s * 1e6:.2f} us)", tiny.median_s <= 10e-6)

    def _csr_train_step_job(self, B: str, case: str, sizes, Xd: np.ndarray, T: np.ndarray, part: np.ndarray,
                            hyper: np.ndarray, flops: float, steps: int) -> None:
        """The cpp fused loop on the inputs as rows of nonzeros (built once, outside the timing)."""
        import pyfastgrad as pfg
        from ._sparse import CsrRows
        csr = CsrRows.from_dense(Xd)
        net = pfg.TwoLayerNet(*sizes, seed=0, dtype=Xd.dtype, backend="cpp")
        mlp = net._mlp()
        s1 = np.zeros_like(net.theta)
        losses: List[np.ndarray] = []

        def fused_csr():
            losses.append(mlp.train_steps(net.theta, csr, T, part, 0.0, "sgd", hyper, s1, s1, 0))
            del losses[:-1]

        # its own group, after a long enough idle pause: BLAS threads still spinning after other rows
        # would take a core from its OpenMP threads
        self.job(B, case, "cpp", f"fused loop, CSR input, {steps} steps/call", Xd.dtype, fused_csr, per=steps,
                 warmup=lambda: mlp.train_steps(net.theta, csr, T, part[:2], 0.0, "sgd", hyper, s1, s1, 0),
                 flops=flops, steps_per_call=steps, group="cpp-csr", pause=max(self.cfg.pause, BLAS_SPIN_S),
                 input_density=csr.density,
                 extra_fn=lambda: {"losses_finite": bool(np.isfinite(losses[-1]).all())})
        self.note(B, f"{case}: the 'CSR input' row trains from the nonzeros of each image (density "
                     f"{csr.density:.2f}, CsrRows built once, untimed); its GFLOP/s count the dense-equivalent "
                     "flops, so it can exceed the gemm rate")

    # -- 6. epoch ----------------------------------------------------------------------------
    def bench_epoch(self) -> None:
        import pyfastgrad as pfg
        B = "epoch"
        q = self.cfg.quick
        X, labels = self.images()
        dtype, sizes, bs, steps, lr = np.float32, [784, 100, 10], 100, 600, 0.1
        n = X.shape[0]
        if n < steps * bs:
            reps = -(-steps * bs // n)
            X, labels = np.tile(X, (reps, 1)), np.tile(labels, reps)
        idx = np.random.default_rng(0).permutation(steps * bs).astype(np.int64).reshape(steps, bs)
        T = _one_hot(labels, 10, dtype)
        case = f"784-100-10, {steps} steps x {bs}"
        flops = mlp_flops(sizes, bs) * steps
        theta0 = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend="numpy").theta.copy()
        hyper = np.array([lr, 0.0, 0.0])
        k_all = 150 if q else steps  # quick: a stated subset of the steps, scaled to the epoch

        def how(k: int) -> str:
            return f" ({k} of {steps} steps, x{steps / k:g})" if k != steps else ""

        for b in self.order:
            net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
            mlp = net._mlp()
            s1, s2 = np.zeros_like(net.theta), np.zeros_like(net.theta)
            n_steps = 60 if (b == "numpy" and q) else k_all
            part = np.ascontiguousarray(idx[:n_steps])
            out: List[np.ndarray] = []

            def run(mlp=mlp, net=net, s1=s1, s2=s2, part=part, out=out):
                out.append(mlp.train_steps(net.theta, X, T, part, 0.0, "sgd", hyper, s1, s2, 0))
                del out[:-1]

            self.job(B, case, b, "kernel Mlp.train_steps" + how(n_steps), dtype, run,
                     setup=lambda net=net: net.theta.__setitem__(slice(None), theta0),
                     warmup=lambda mlp=mlp, net=net, s1=s1, s2=s2, part=part:
                     mlp.train_steps(net.theta, X, T, part[:2], 0.0, "sgd", hyper, s1, s2, 0),
                     scale=steps / n_steps, flops=flops, is_ref=(b == "numpy"),
                     extra_fn=lambda out=out: {"last_loss": float(out[-1][-1])})
            if b == "cpp":
                from ._sparse import CsrRows
                csr = CsrRows.from_dense(X)
                net_c = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
                mlp_c = net_c._mlp()
                out_c: List[np.ndarray] = []

                def run_csr(mlp=mlp_c, net=net_c, part=part, out=out_c, csr=csr):
                    out.append(mlp.train_steps(net.theta, csr, T, part, 0.0, "sgd", hyper, s1, s2, 0))
                    del out[:-1]

                self.job(B, case, b, "kernel Mlp.train_steps, CSR input" + how(n_steps), dtype, run_csr,
                         setup=lambda net=net_c: net.theta.__setitem__(slice(None), theta0),
                         warmup=lambda mlp=mlp_c, net=net_c, part=part, csr=csr:
                         mlp.train_steps(net.theta, csr, T, part[:2], 0.0, "sgd", hyper, s1, s2, 0),
                         scale=steps / n_steps, flops=flops, group="cpp-csr",
                         pause=max(self.cfg.pause, BLAS_SPIN_S), input_density=csr.density,
                         extra_fn=lambda out=out_c: {"last_loss": float(out[-1][-1])})
                self.note(B, "'CSR input': the images as rows of nonzeros (CsrRows, built once, untimed), as "
                             "pfg.fit does with the cpp backend; GFLOP/s count the dense-equivalent flops")
        for b in ([] if q else self.fast):  # fit always runs the whole epoch: full mode only
            net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
            kernel_s: List[float] = []

            def run_fit(net=net, kernel_s=kernel_s):
                h = pfg.fit(net, X, labels, optimizer="sgd", lr=lr, epochs=1, batch_size=bs, progress=False,
                            seed=0)
                kernel_s.append(h.epoch_time[0])

            self.job(B, case, b, "pfg.fit(epochs=1), wall", dtype, run_fit,
                     setup=lambda net=net: net.theta.__setitem__(slice(None), theta0),
                     warmup=lambda net=net: pfg.fit(net, X[:1000], labels[:1000], lr=lr, epochs=1,
                                                    batch_size=bs, progress=False),
                     flops=flops, extra_fn=lambda kernel_s=kernel_s: {"fit_epoch_time_s": list(kernel_s)})
        if not q:
            self.note(B, "fit rows: wall time of pfg.fit(..., epochs=1), which also validates the inputs and "
                         "computes the training accuracy over all images; its own epoch_time is in the JSON")
        else:
            self.note(B, "quick mode: the numpy reference runs 60 of the 600 steps (scaled x10), the others "
                         f"{k_all} (scaled x{steps / k_all:g}); no fit rows")
        if self.torch is not None:
            torch = self.torch
            params, forward, treset = _torch_mlp(torch, sizes, theta0)
            o = torch.optim.SGD(params, lr=lr)
            Xt, yt, it = torch.from_numpy(X), torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(idx)
            ce = torch.nn.functional.cross_entropy
            last: List[float] = []

            def torch_epoch(k: int = k_all):
                for s in range(k):
                    rows = it[s]
                    o.zero_grad(set_to_none=True)
                    loss = ce(forward(Xt.index_select(0, rows)), yt.index_select(0, rows))
                    loss.backward()
                    o.step()
                last.append(float(loss.detach()))

            self.job(B, case, "torch", "eager loop" + how(k_all), dtype, torch_epoch,
                     setup=lambda: treset(theta0), warmup=lambda: torch_epoch(2), scale=steps / k_all,
                     flops=flops, extra_fn=lambda: {"last_loss": last[-1]})
        if self.jax is not None:
            jax = self.jax
            jnp = jax.numpy
            params0, loss = _jax_mlp(jax, sizes, theta0)
            Xj, Tj, ij = jnp.asarray(X), jnp.asarray(T), jnp.asarray(idx[:k_all])

            def sgd(p, rows, Xa, Ta):
                lval, g = jax.value_and_grad(loss)(p, Xa[rows], Ta[rows])
                return tuple(a - lr * d for a, d in zip(p, g)), lval

            jstep = jax.jit(sgd)

            @jax.jit
            def jepoch(p, Xa, Ta, ia):
                return jax.lax.scan(lambda c, rows: sgd(c, rows, Xa, Ta), p, ia)

            last_j: List[float] = []

            def jax_loop(k: int = k_all):
                p = params0
                for s in range(k):
                    p, lval = jstep(p, ij[s], Xj, Tj)
                last_j.append(float(lval))

            last_s: List[float] = []

            def jax_scan():
                _, ls = jepoch(params0, Xj, Tj, ij)
                last_s.append(float(ls[-1]))

            self.job(B, case, "jax", "jit step, Python loop" + how(k_all), dtype, jax_loop,
                     warmup=lambda: jax_loop(2), scale=steps / k_all, flops=flops,
                     extra_fn=lambda: {"last_loss": last_j[-1]})
            self.job(B, case, "jax", "jit(lax.scan) over the steps" + how(k_all), dtype, jax_scan,
                     scale=steps / k_all, flops=flops, extra_fn=lambda: {"last_loss": last_s[-1]})
            self.note(B, "jax rows: first_call_s includes XLA compilation")
        self.flush()
        self.finish(B)
        kernels_cpp = [r for r in self.rows if r.bench == B and r.backend == "cpp" and r.variant.startswith("kernel")]
        cpp = min(kernels_cpp, key=lambda r: r.median_s) if kernels_cpp else None  # the best cpp kernel
        tr = self.find(B, "torch")
        if cpp is not None:
            txt = f"<=0.5 s ({cpp.median_s:.3f} s)"
            met = cpp.median_s <= 0.5
            if tr is not None:
                sp = tr.median_s / cpp.median_s
                cpp.extra["speedup_vs_torch"] = sp
                txt += f"; >=2x torch ({sp:.2f}x)"
                met = met and sp >= 2
            self.set_target(cpp, txt, met, [tr])

    # -- 7. scaling --------------------------------------------------------------------------
    def bench_scaling(self) -> None:
        import pyfastgrad as pfg
        B = "scaling"
        q = self.cfg.quick
        X, labels = self.images()
        dtype = np.float32
        T = _one_hot(labels, 10, dtype)
        rng = np.random.default_rng(2)
        budget = 0.1 if q else 0.5
        hidden = (50, 200) if q else (50, 100, 200, 500, 1000)
        batches = (1, 100) if q else (1, 10, 100, 1000)
        depths = (1, 2) if q else (1, 2, 3, 4)
        grid = ([("hidden", h, [784, h, 10], 100) for h in hidden]
                + [("batch", bs, [784, 100, 10], bs) for bs in batches]
                + [("depth", d, [784] + [100] * d + [10], 100) for d in depths])
        for axis, value, sizes, bs in grid:
            flops = mlp_flops(sizes, bs)
            # roughly 20 ms of cpp work per call: fewer steps for bigger problems
            steps = int(min(2000, max(5, 4e8 / flops)))
            idx = rng.integers(0, X.shape[0], size=(steps, bs)).astype(np.int64)
            case = f"{axis}={value}: {'-'.join(map(str, sizes))}, batch {bs}"
            for b in self.order:
                if b == "numpy" and flops * steps > 2e10:
                    continue  # the reference would take too long here
                net = pfg.Net(sizes, weight_init="he", seed=0, dtype=dtype, backend=b)
                mlp = net._mlp()
                s1, s2 = np.zeros_like(net.theta), np.zeros_like(net.theta)
                hyper = np.array([0.01, 0.0, 0.0])
                k = max(2, steps // 10) if b == "numpy" else steps
                part = np.ascontiguousarray(idx[:k])
                self.job(B, case, b, "train step (fused)", dtype,
                         lambda mlp=mlp, net=net, s1=s1, s2=s2, part=part:
                         mlp.train_steps(net.theta, X, T, part, 0.0, "sgd", hyper, s1, s2, 0),
                         per=k, budget=budget,
                         warmup=lambda mlp=mlp, net=net, s1=s1, s2=s2, part=part:
                         mlp.train_steps(net.theta, X, T, part[:1], 0.0, "sgd", hyper, s1, s2, 0),
                         flops=flops, gemm_basis="large", is_ref=(b == "numpy"), axis=axis, value=value)
            for r in self.flush():
                self.scaling.append({"kind": "train_step", "axis": axis, "value": value, "backend": r.backend,
                                     "seconds": r.median_s, "gflops": r.gflops, "pct_sgemm": r.pct_gemm})
        # numerical gradient vs hidden size (float64, 100 images)
        x = X[:100].astype(np.float64)
        t = _one_hot(labels[:100], 10, np.float64)
        n_sub = 100 if q else 250
        for h in ((10, 50) if q else (10, 25, 50, 100, 200)):
            proto = pfg.TwoLayerNet(784, h, 10, seed=0, backend="numpy")
            case = f"numgrad hidden={h}: {proto.n_params:,} params, N=100"
            rnet = ref.TwoLayerNet(784, h, 10, seed=0)
            for key in rnet.params:
                rnet.params[key][...] = proto.params[key]
            pw1 = rnet.params["W1"].reshape(-1)

            def ref_sub(rnet=rnet, pw1=pw1):
                _central_diff_prefix(lambda: rnet.loss(x, t), pw1, n_sub)

            self.job(B, case, "numpy", f"reference, {n_sub} params scaled", np.float64, ref_sub,
                     scale=proto.n_params / n_sub, budget=budget, warmup=lambda rnet=rnet: rnet.loss(x, t),
                     is_ref=True, axis="numgrad_hidden", value=h)
            for b in self.fast:
                net = pfg.TwoLayerNet(784, h, 10, seed=0, backend=b)
                net.theta[:] = proto.theta
                self.job(B, case, b, "net.numerical_gradient", np.float64,
                         lambda net=net: net.numerical_gradient(x, t), budget=budget, axis="numgrad_hidden",
                         value=h)
            for r in self.flush():
                self.scaling.append({"kind": "numgrad", "axis": "hidden", "value": h, "backend": r.backend,
                                     "seconds": r.median_s})
        self.note(B, "GFLOP/s % of scaling rows are of the 1024^3 sgemm rate; the numpy reference is skipped "
                     "where one call would exceed ~20 GFLOP, and its numerical gradient is timed on "
                     f"{n_sub} elements of W1 and scaled")
        self.finish(B)

    # -- run ---------------------------------------------------------------------------------
    def run(self, selected: Sequence[str]) -> None:
        self.bench_gemm()
        print(self._section("gemm"), flush=True)
        for name in selected:
            t0 = time.perf_counter()
            print(f"\n== {name}: {DESCRIPTIONS[name]}", flush=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    getattr(self, f"bench_{name}")()
                except Exception as exc:
                    self._pending = []
                    self.errors.append({"bench": name, "what": "benchmark",
                                        "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc(limit=6)})
                    print(f"  ! {name} failed: {type(exc).__name__}: {exc}", flush=True)
            for w in caught:
                self.note(name, f"warning: {w.category.__name__}: {str(w.message).splitlines()[0][:200]}")
            self.finish(name)
            print(self._section(name), flush=True)
            print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)

    def _section(self, name: str) -> str:
        rows = [r for r in self.rows if r.bench == name]
        text = text_table(rows) if rows else "  (no rows)"
        for n in self.notes.get(name, []):
            text += f"\n  note: {n}"
        return text


# ---------------------------------------------------------------------------------------- output
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def _targets(rows: Sequence[Row]) -> List[Dict[str, Any]]:
    return [{"row": r.label, "target": r.target, "met": r.target_met, "reliable": r.target_reliable,
             "median_s": r.median_s, "busy_other": r.busy_other,
             "ratio": r.ratio, "gflops": r.gflops, "pct_gemm": r.pct_gemm}
            for r in rows if r.target is not None]


def _first_calls(rows: Sequence[Row]) -> List[Dict[str, Any]]:
    """JIT compile / first-call overhead: the warm-up call minus the steady per-call time."""
    out = []
    for r in rows:
        if r.backend in ("numba", "jax") or r.first_call_s > 0.05:
            steady = r.median_s * r.per / r.scale
            out.append({"row": r.label, "first_call_s": r.first_call_s,
                        "steady_call_s": steady, "overhead_s": max(0.0, r.first_call_s - steady)})
    return out


def _markdown(meta: Dict[str, Any], rows: Sequence[Row], notes: Dict[str, List[str]]) -> str:
    cpu = meta["machine"]
    th = cpu.get("threads", {})
    blas = th.get("cpp_blas")
    lines = [f"Benchmarks ({'quick' if meta['quick'] else 'full'} run, {meta['date']}, "
             f"{meta['total_s']:.0f} s): {cpu.get('cpu_model')}, {cpu.get('usable_cpus')} CPUs, "
             f"Python {cpu.get('python')}, numpy {np.__version__}"
             + (f", torch {cpu['versions'].get('torch')}" if cpu["versions"].get("torch") else "")
             + (f", jax {cpu['versions'].get('jax')}" if cpu["versions"].get("jax") else "") + ".",
             ""]
    if isinstance(blas, dict):
        lines.append(f"cpp backend: {blas.get('config')}, {blas.get('threads')} BLAS threads, "
                     f"{blas.get('openmp_threads')} OpenMP threads; torch threads: "
                     f"{th.get('torch', {}).get('num_threads', '-')}. Data: {meta.get('data')}.")
        lines.append("")
    lines.append("`x ref`: the numpy reference's median time over this row's (same run, same case and dtype); "
                 "spread: min/max around the median over n repeats; `busyNN%`: other processes used NN% of "
                 "the CPUs while the row was timed (the row is less reliable).")
    lines.append("")
    lines.append(markdown_table(rows))
    all_notes = [f"- {b}: {n}" for b, ns in notes.items() for n in ns]
    if all_notes:
        lines += ["", "Notes:", ""] + all_notes
    return "\n".join(lines) + "\n"


_COLORS = {"numpy": "#7f7f7f", "cpp": "#d62728", "numba": "#1f77b4", "torch": "#ff7f0e", "jax": "#2ca02c",
           "scipy": "#9467bd", "numdifftools": "#8c564b"}


def _plot_results(rows: Sequence[Row], path: Path) -> bool:
    """Bar chart of the speedups; False when there is nothing to plot."""
    from matplotlib.figure import Figure
    rs = [r for r in rows if r.ratio is not None and not (r.backend == "numpy") and r.bench != "scaling"]
    if not rs:
        return False
    fig = Figure(figsize=(13, 0.26 * len(rs) + 1.6), layout="constrained")  # room for the long labels
    ax = fig.subplots()
    ypos = np.arange(len(rs))[::-1]
    ax.barh(ypos, [r.ratio for r in rs], color=[_COLORS.get(r.backend, "#17becf") for r in rs])
    ax.set_yticks(ypos)
    ax.set_yticklabels([f"{r.bench}: {r.case} [{r.dtype}] {r.backend} ({r.variant})"[:110] for r in rs],
                       fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    for y, r in zip(ypos, rs):
        ax.text(r.ratio, y, f" {_fmt_ratio(r.ratio)}", va="center", fontsize=6)
    ax.set_xlabel("speedup vs the numpy reference (same run; log scale)")
    ax.set_title("pyfastgrad benchmarks: speedup over the numpy reference")
    fig.savefig(path, dpi=110)
    return True


def _plot_scaling(points: Sequence[Dict[str, Any]], gemm: Dict[str, Dict[str, float]], path: Path) -> None:
    from matplotlib.figure import Figure
    if not points:
        return
    fig = Figure(figsize=(14, 8))
    axes = fig.subplots(2, 3)
    panels = [("train_step", "hidden", "seconds", "hidden size (784-h-10, batch 100)", "time / step [s]"),
              ("train_step", "batch", "seconds", "batch size (784-100-10)", "time / step [s]"),
              ("train_step", "depth", "seconds", "hidden layers of 100 (batch 100)", "time / step [s]"),
              ("numgrad", "hidden", "seconds", "hidden size (784-h-10, N=100, float64)",
               "numerical gradient [s]"),
              ("train_step", "hidden", "gflops", "hidden size (784-h-10, batch 100)", "GFLOP/s"),
              ("train_step", "batch", "gflops", "batch size (784-100-10)", "GFLOP/s")]
    for ax, (kind, axis, key, xlabel, ylabel) in zip(axes.ravel(), panels):
        for b in ("numpy", "numba", "cpp"):
            pts = sorted((p["value"], p[key]) for p in points
                         if p["kind"] == kind and p["axis"] == axis and p["backend"] == b and p.get(key))
            if pts:
                ax.plot(*zip(*pts), "o-", color=_COLORS[b], label=b)
        if key == "gflops" and gemm.get("float32", {}).get("large"):
            ax.axhline(gemm["float32"]["large"], color="k", ls="--", lw=0.8, label="sgemm 1024^3")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if axis != "depth":
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("pyfastgrad scaling (float32 train steps, fused loop; float64 numerical gradient)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# ---------------------------------------------------------------------------------------- CLI
def build_parser(prog: str = "python -m pyfastgrad bench") -> argparse.ArgumentParser:
    """The options of ``python -m pyfastgrad bench`` (shared with ``bench/run.py``)."""
    p = argparse.ArgumentParser(prog=prog, description="Benchmark every hot path on every backend.")
    p.add_argument("--quick", action="store_true", help="small repeat counts and sizes, < 60 s (CI smoke run)")
    p.add_argument("--out", default="bench/results", help="directory for results.json/.md/.png")
    p.add_argument("--only", nargs="*", help=f"benchmarks to run (names or prefixes): {', '.join(BENCHMARKS)}")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG charts")
    return p


def _select(only: Optional[Sequence[str]], quick: bool) -> List[str]:
    if not only:
        return [b for b in BENCHMARKS if not (quick and b == "scaling")]
    chosen = []
    for sel in only:
        hits = [b for b in BENCHMARKS if b == sel or b.startswith(sel)]
        if not hits:
            raise ValueError(f"unknown benchmark {sel!r}; choose from {', '.join(BENCHMARKS)}")
        chosen += [h for h in hits if h not in chosen]
    return [b for b in BENCHMARKS if b in chosen]  # canonical order


def main(args: Union[argparse.Namespace, Sequence[str], None] = None) -> int:
    """Run the benchmarks; returns 0, 1 if a measurement failed, 2 on bad arguments.

    Parameters
    ----------
    args : argparse.Namespace, list of str or None
        Parsed options (``quick``, ``out``, ``only``, ``no_plot``), or command-line words.
    """
    if args is None or not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(None if args is None else list(args))
    quick = bool(getattr(args, "quick", False))
    out = Path(getattr(args, "out", None) or "bench/results")
    try:
        selected = _select(getattr(args, "only", None), quick)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plot = not getattr(args, "no_plot", False)
    t_start = time.perf_counter()
    load_start = _loadavg()
    cfg = Config.for_mode(quick)
    runner = _Runner(cfg, out, plot)
    info = machine_info(runner.torch, runner.jax)
    th = info["threads"]
    print(f"pyfastgrad bench ({'quick' if quick else 'full'}): {', '.join(selected)}")
    print(f"machine: {info['cpu_model']}, {info['usable_cpus']} usable CPUs "
          f"({info.get('physical_cores')} physical cores), {info['memory_gib']} GiB, flags {info['cpu_flags']}")
    print(f"backends: {info['backends']}")
    print(f"threads: cpp {th.get('cpp_blas')}, numba {th.get('numba_num_threads')}, "
          f"torch {th.get('torch', runner.torch_status)}, jax {runner.jax_status}")
    if load_start and load_start[0] > 0.5 * (info["usable_cpus"] or 1):
        print(f"WARNING: the machine is busy (load average {load_start[0]:.1f} on {info['usable_cpus']} CPUs): "
              "other processes compete for the cores and multithreaded BLAS slows down badly; "
              "timings will be noisy")
    print(f"timing: median of adaptive repeats (budget {cfg.budget} s per measurement), warm-up call "
          "excluded and reported as first_call_s", flush=True)

    runner.run(selected)

    total = time.perf_counter() - t_start
    info = machine_info(runner.torch, runner.jax)  # again: every BLAS/OpenMP runtime is loaded by now
    info["numba_cache"] = _numba_cache_stats()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick, "selected": selected,
            "total_s": total, "busy_flag": BUSY_FLAG, "busy_rows": sum(_busy(r) for r in runner.rows),
            "loadavg_start": load_start, "loadavg_end": _loadavg(), "config": asdict(cfg), "machine": info,
            "data": runner._images[2] if runner._images else None, "torch": runner.torch_status,
            "jax": runner.jax_status, "argv": sys.argv}
    results = {"meta": meta, "gemm_gflops": runner.gemm, "descriptions": DESCRIPTIONS,
               "targets_spec": TARGETS, "targets": _targets(runner.rows),
               "first_calls": _first_calls(runner.rows), "notes": runner.notes, "errors": runner.errors,
               "scaling": runner.scaling, "results": [asdict(r) | {"label": r.label} for r in runner.rows]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=1))
    md = _markdown(meta, runner.rows, runner.notes)
    (out / "results.md").write_text(md)
    written = ["results.json", "results.md"]
    if plot:
        try:
            import matplotlib  # noqa: F401
            if _plot_results(runner.rows, out / "results.png"):
                written.append("results.png")
            if runner.scaling:
                _plot_scaling(runner.scaling, runner.gemm, out / "scaling.png")
                written.append("scaling.png")
        except ImportError:
            print("matplotlib not installed: no PNG charts")
        except Exception as exc:  # a plotting failure must not lose the measurements
            print(f"plotting failed: {type(exc).__name__}: {exc}")
    print("\n== JIT compile / first-call overhead (warm-up call minus steady time)")
    for fc in results["first_calls"]:
        if fc["overhead_s"] >= 0.01:
            print(f"  {fc['row']}: first call {_fmt_time(fc['first_call_s'])}, "
                  f"overhead {_fmt_time(fc['overhead_s'])}")
    if info.get("numba_cache"):
        print(f"  numba on-disk cache: {info['numba_cache']} (a hit loads instead of compiling)")
    print("\n== targets")
    for tg in results["targets"]:
        flag = "" if tg["reliable"] is not False else " (busy machine: unreliable)"
        print(f"  [{'met' if tg['met'] else 'MISSED'}]{flag} {tg['row']}: {tg['target']}")
    if not results["targets"]:
        print("  (none evaluated in this selection)")
    busy = [r for r in runner.rows if _busy(r)]
    if busy:
        print(f"\nWARNING: {len(busy)} of {len(runner.rows)} rows were timed while other processes used "
              f">= {100 * BUSY_FLAG:.0f}% of the CPUs (marked busyNN%); rerun on an idle machine for "
              "reliable figures")
    if runner.errors:
        print(f"\n{len(runner.errors)} measurement(s) failed:")
        for e in runner.errors:
            print(f"  {e['bench']} / {e['what']}: {e['error']}")
    print(f"\nwrote {', '.join(str(out / w) for w in written)}; total {total:.1f} s")
    return 1 if runner.errors else 0


def cli(argv: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
        prog: str = "python -m pyfastgrad bench") -> int:
    """Parse ``argv`` and run; ``only`` is the default selection (for the per-topic scripts)."""
    args = build_parser(prog).parse_args(None if argv is None else list(argv))
    if only is not None and not args.only:
        args.only = list(only)
    return main(args)


if __name__ == "__main__":
    sys.exit(cli())
