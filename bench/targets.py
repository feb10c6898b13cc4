"""The project's speed targets (issues 1-4), checked on the rows of a ``pyfastgrad.bench`` run.

The library measures; this file judges. ``bench/run.py`` (and the per-topic ``bench_*.py`` wrappers)
pass :data:`TARGETS` and :data:`CHECKS` to :func:`pyfastgrad.bench.cli`. Each check records its verdict on
one row with ``runner.set_target(row, text, met, basis)``: the row's ``target`` column, the JSON's
``targets`` and the ``== targets`` summary. ``basis``: the rows it is compared with (a target is flagged
unreliable when one of them was timed on a busy machine).
"""
from __future__ import annotations

from typing import Callable, Dict

TARGETS: Dict[str, str] = {
    "numgrad_net": "cpp >= 1000x the reference",
    "backprop": "cpp kernel float32 >= 2x torch eager and >= 60% of the 1024^3 sgemm rate (issue 4)",
    "train_step": "best cpp fused loop 784-100-10 (dense or CSR input) >= 80% of the 1024^3 sgemm rate in "
                  "dense-equivalent flops; cpp fused 64-32-10 <= 10 us/step, net.train_step <= 5 us above it",
    "epoch": "best cpp kernel <= 0.5 s/epoch and >= 2x torch",
}

# issue 17: the numba fallback (what users without a compiler get) within this factor of cpp on the epoch
# kernel (fit's input) and the train step (one call, and the fused dense loop); bench/bench_numba.py checks it
NUMBA_RATIO_MAX = 2.0

GEMM_SHAPES_CASE = "5 gemms of 784-100-10 backprop, N=100"
GEMM_LARGE_CASE = "1024x1024 @ 1024x1024"


def check_numgrad_net(run) -> None:
    r = run.find("numgrad_net", "cpp")
    if r is not None and r.ratio is not None:
        run.set_target(r, f">=1000x ref ({r.ratio:,.0f}x)", r.ratio >= 1000, [run.find("numgrad_net", "numpy")])


def check_backprop(run) -> None:
    """float32, against sgemm: >= 2x torch eager and >= 60% of the 1024^3 sgemm rate."""
    cpp = run.find("backprop", "cpp", variant="kernel Mlp.loss_grad", dtype="float32")
    if cpp is None or cpp.variant != "kernel Mlp.loss_grad":
        return
    tr = run.find("backprop", "torch", dtype="float32")
    parts, met = [], True
    if tr is not None:
        sp = tr.median_s / cpp.median_s
        parts.append(f">=2x torch ({sp:.2f}x)")
        met = sp >= 2
    if cpp.pct_gemm_large is not None:
        parts.append(f">=60% sgemm 1024^3 ({100 * cpp.pct_gemm_large:.0f}%, dense-equivalent)")
        met = met and cpp.pct_gemm_large >= 0.6
    if parts:
        run.set_target(cpp, "; ".join(parts), met,
                       [tr, run.find("gemm", "numpy", dtype="float32", case=GEMM_LARGE_CASE)])


def check_train_step(run) -> None:
    big = run.best_cpp_kernel("train_step", case="784-100-10, batch 100", prefix="fused")
    if big is not None and big.pct_gemm_large is not None:
        csr = "CSR" in big.variant
        txt = (f">=80% sgemm 1024^3 ({100 * big.pct_gemm_large:.0f}%"
               + (f"; {100 * big.pct_gemm:.0f}% of same-shape sgemm" if big.pct_gemm is not None else "")
               + ("; dense-equivalent flops, exploits input sparsity" if csr else "") + ")")
        run.set_target(big, txt, big.pct_gemm_large >= 0.8,
                       [run.find("gemm", "numpy", dtype="float32", case=GEMM_SHAPES_CASE),
                        run.find("gemm", "numpy", dtype="float32", case=GEMM_LARGE_CASE)])
    tiny = run.find("train_step", "cpp", case="64-32-10, batch 32", variant="fused")
    if tiny is not None:
        run.set_target(tiny, f"<=10 us/step ({tiny.median_s * 1e6:.2f} us)", tiny.median_s <= 10e-6)
        call = run.find("train_step", "cpp", case="64-32-10, batch 32", variant="per Python call")
        if call is not None:  # issue 17: net.train_step's per-call overhead above the fused loop
            over = call.median_s - tiny.median_s
            run.set_target(call, f"<=5 us above the fused loop ({over * 1e6:+.2f} us)", over <= 5e-6, [tiny])


def check_epoch(run) -> None:
    cpp = run.best_cpp_kernel("epoch")  # the best cpp kernel row (dense or CSR input)
    if cpp is None:
        return
    tr = run.find("epoch", "torch")
    txt = f"<=0.5 s ({cpp.median_s:.3f} s)"
    met = cpp.median_s <= 0.5
    if tr is not None:
        sp = tr.median_s / cpp.median_s
        txt += f"; >=2x torch ({sp:.2f}x)"
        met = met and sp >= 2
    run.set_target(cpp, txt, met, [tr])


CHECKS: Dict[str, Callable] = {"numgrad_net": check_numgrad_net, "backprop": check_backprop,
                               "train_step": check_train_step, "epoch": check_epoch}
