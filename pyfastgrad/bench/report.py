"""Output of a run: JSON-safe values, the markdown report and the PNG charts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from .rows import Row, _fmt_ratio, markdown_table


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


