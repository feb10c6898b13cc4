"""Output of a run: JSON-safe values, the markdown report and the PNG charts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from .rows import BUSY_FLAG, Row, _fmt_ratio, _fmt_time, markdown_table


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


_AXES = (("hidden", "784-H-10, batch 100", "hidden size H"), ("batch", "784-100-10", "batch size"),
         ("depth", "hidden layers of 100, batch 100", "hidden layers"))
_LINE_STYLE = {"net.train_step": "s--", "net.numerical_gradient": "o-"}


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _x(v: Any) -> str:
    return "-" if v is None else _fmt_ratio(v)


def _point_spread(p: Dict[str, Any]) -> str:
    s = _spread_of(p["seconds"], p["min_s"], p["max_s"], p["repeats"])
    if p.get("busy_other") is not None and p["busy_other"] >= BUSY_FLAG:
        s += f" busy{100 * p['busy_other']:.0f}%"
    return s


def _spread_of(med: float, lo: float, hi: float, n: int) -> str:
    if n < 2 or med <= 0:
        return f"n={n}"
    return f"{(lo / med - 1) * 100:+.0f}/{(hi / med - 1) * 100:+.0f}% n={n}"


def _fixed(lines: List[List[str]], right: Sequence[int]) -> List[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return ["  " + line for line in out]


def scaling_table(points: Sequence[Dict[str, Any]], gemm: Dict[str, Dict[str, float]]) -> str:
    """The scaling rows as fixed-width tables, one per axis: time per step, spread, GFLOP/s, the fraction
    of the run's 1024^3 gemm rate of the row's dtype and the ratios to numpy and torch."""
    rates = "; ".join(f"{'s' if d == 'float32' else 'd'}gemm 1024^3 {r['large']:.1f} GFLOP/s best repeat "
                      f"({r.get('large_median', float('nan')):.1f} median)" for d, r in gemm.items() if r.get("large"))
    out = [f"gemm ceiling (numpy matmul, this run): {rates or 'not measured'}"]
    for axis, net, label in _AXES:
        pts = [p for p in points if p["kind"] == "train_step" and p["axis"] == axis]
        if not pts:
            continue
        out.append(f"\ntrain step against {label} ({net}); time per step, spread = min/max around the median")
        head = [label, "dtype", "row", "time/step", "spread", "GFLOP/s", "% gemm", "x numpy", "x torch"]
        lines = [head]
        for p in sorted(pts, key=lambda p: (p["value"], p["dtype"])):
            lines.append([str(p["value"]), p["dtype"], p["line"], _fmt_time(p["seconds"]), _point_spread(p),
                          "-" if p["gflops"] is None else f"{p['gflops']:.1f}", _pct(p["pct_gemm"]),
                          _x(p["x_numpy"]), _x(p["x_torch"])])
        out += _fixed(lines, right=(0, 3, 4, 5, 6, 7, 8))
    pts = [p for p in points if p["kind"] == "numgrad"]
    if pts:
        out.append("\nnumerical gradient against hidden size (784-H-10, N=100, float64)")
        lines = [["hidden", "row", "time", "spread", "x numpy"]]
        for p in sorted(pts, key=lambda p: p["value"]):
            lines.append([str(p["value"]), p["line"], _fmt_time(p["seconds"]), _point_spread(p), _x(p["x_numpy"])])
        out += _fixed(lines, right=(0, 2, 3, 4))
    return "\n".join(out)


def _lines(points: Sequence[Dict[str, Any]]) -> List[str]:
    """Line names in a stable order: numpy, numba, cpp, torch, then the rest."""
    order = {"numpy": 0, "numba": 1, "cpp": 2, "torch": 3}
    names = {p["line"]: p["backend"] for p in points}
    return sorted(names, key=lambda n: (order.get(names[n], 9), n))


def _draw(ax, points: Sequence[Dict[str, Any]], key: str) -> None:
    for name in _lines(points):
        pts = sorted((p["value"], p[key]) for p in points if p["line"] == name and p.get(key))
        if not pts:
            continue
        backend = pts and next(p["backend"] for p in points if p["line"] == name)
        style = next((v for k, v in _LINE_STYLE.items() if name.endswith(k)), "o-")
        ax.plot(*zip(*pts), style, color=_COLORS.get(backend, "#17becf"), label=name, ms=4)


def _plot_scaling(points: Sequence[Dict[str, Any]], gemm: Dict[str, Dict[str, float]], path: Path) -> None:
    """Time per step and GFLOP/s against hidden and batch size, float32 and float64 rows of panels, the
    gemm ceiling of the dtype as a dashed line; depth and the numerical gradient in a third row."""
    from matplotlib.figure import Figure
    if not points:
        return
    fig = Figure(figsize=(18, 12))
    axes = fig.subplots(3, 4)
    for row, dtype in enumerate(("float32", "float64")):
        ceiling = gemm.get(dtype, {}).get("large")
        for col, (axis, key) in enumerate((("hidden", "seconds"), ("batch", "seconds"),
                                           ("hidden", "gflops"), ("batch", "gflops"))):
            ax = axes[row, col]
            pts = [p for p in points if p["kind"] == "train_step" and p["axis"] == axis and p["dtype"] == dtype]
            _draw(ax, pts, key)
            if key == "gflops" and ceiling:
                ax.axhline(ceiling, color="k", ls="--", lw=0.9,
                           label=f"{'s' if dtype == 'float32' else 'd'}gemm 1024^3: {ceiling:.0f}")
            net = dict((a, n) for a, n, _ in _AXES)[axis]
            ax.set_title(f"{dtype}: {net}", fontsize=10)
            ax.set_xlabel(dict((a, lb) for a, _, lb in _AXES)[axis])
            ax.set_ylabel("time / step [s]" if key == "seconds" else "GFLOP/s")
    for ax, (kind, axis, dtype, title, ylabel) in zip(
            axes[2], (("train_step", "depth", "float32", "float32: hidden layers of 100, batch 100",
                       "time / step [s]"),
                      ("train_step", "depth", "float32", "float32: hidden layers of 100, batch 100", "GFLOP/s"),
                      ("numgrad", "hidden", "float64", "numerical gradient, 784-H-10, N=100, float64",
                       "time / gradient [s]"))):
        key = "gflops" if ylabel == "GFLOP/s" else "seconds"
        _draw(ax, [p for p in points if p["kind"] == kind and p["axis"] == axis and p["dtype"] == dtype], key)
        if key == "gflops" and gemm.get(dtype, {}).get("large"):
            ax.axhline(gemm[dtype]["large"], color="k", ls="--", lw=0.9, label="sgemm 1024^3")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("hidden layers" if axis == "depth" else "hidden size H")
        if axis == "depth":
            ax.set_xticks(sorted({p["value"] for p in points if p["axis"] == "depth"}))
        ax.set_ylabel(ylabel)
    axes[2, 3].axis("off")
    for ax in axes.ravel()[:11]:
        if ax.get_xlabel() != "hidden layers":
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("pyfastgrad scaling: train step (fused loop, one net.train_step call, torch eager step) against "
                 "hidden and batch size; dashed black: the run's 1024^3 gemm rate")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
