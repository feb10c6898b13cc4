"""Timing harness: adaptive repeats, interleaved rounds, and the share of the CPUs others used."""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ._door import cpu_snapshot as _cpu_snapshot

__all__ = ["BLAS_SPIN_S", "Config", "Timing", "Job", "run_jobs", "measure"]

# OpenBLAS worker threads (numpy's own library included) busy-wait up to 2^28 cycles (~0.1 s) after a
# call; the rows whose OpenMP threads must not share the cores with them idle this long first.
BLAS_SPIN_S = 0.12


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


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


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


