"""Result rows and their text/markdown tables (the format README quotes)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["BUSY_FLAG", "Row", "mlp_flops", "text_table", "markdown_table"]


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


