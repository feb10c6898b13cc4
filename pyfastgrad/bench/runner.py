"""The runner's plumbing: queue rows, time them interleaved, compute ratios, run the selection."""
from __future__ import annotations

import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import pyfastgrad as pfg

from .data import load_images
from .harness import Config, Job, Timing, run_jobs
from .peers import import_jax, import_torch
from .rows import Row, _busy, text_table

__all__ = ["Runner"]

class Runner:
    """Queues rows, times them together, keeps rows, notes and errors; the cases live in :mod:`.cases`.

    ``checks`` maps a benchmark name to a function called with the runner once that benchmark's rows
    are in; it may record targets on rows with :meth:`set_target` (the repository's ``bench/targets.py``
    holds the project's; the library holds none).
    """

    DESCRIPTIONS: Dict[str, str] = {}  # benchmark name -> one line (the cases' subclass fills it)

    def __init__(self, cfg: Config, out: Path, plot: bool,
                 checks: Optional[Mapping[str, Callable[["Runner"], None]]] = None) -> None:
        self.checks = dict(checks or {})
        self.cfg = cfg
        self.out = out
        self.plot = plot
        self.rows: List[Row] = []
        self.notes: Dict[str, List[str]] = {}
        self.errors: List[Dict[str, str]] = []
        self.gemm: Dict[str, Dict[str, float]] = {}
        self.scaling: List[Dict[str, Any]] = []
        self.backends = pfg.available_backends()
        self.order = ["numpy"] + [b for b in self.backends if b != "numpy"]  # reference first
        self.fast = [b for b in self.backends if b != "numpy"]
        self.torch, self.torch_status = import_torch()
        self.jax, self.jax_status = import_jax()
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

    # -- run ---------------------------------------------------------------------------------
    def run(self, selected: Sequence[str]) -> None:
        self.bench_gemm()
        print(self._section("gemm"), flush=True)
        for name in selected:
            t0 = time.perf_counter()
            print(f"\n== {name}: {self.DESCRIPTIONS[name]}", flush=True)
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
            self.check(name)
            print(self._section(name), flush=True)
            print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)

    def check(self, name: str) -> None:
        """Run the target check given for ``name`` (if any); a failing check is recorded, not raised."""
        fn = self.checks.get(name)
        if fn is None:
            return
        try:
            fn(self)
        except Exception as exc:
            self.errors.append({"bench": name, "what": "target check", "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=6)})
            print(f"  ! {name} target check failed: {type(exc).__name__}: {exc}", flush=True)

    def _section(self, name: str) -> str:
        rows = [r for r in self.rows if r.bench == name]
        text = text_table(rows) if rows else "  (no rows)"
        for n in self.notes.get(name, []):
            text += f"\n  note: {n}"
        return text


