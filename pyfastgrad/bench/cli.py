"""The command line: ``python -m pyfastgrad bench [--quick] [--out DIR] [--only NAME...] [--no-plot]``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Union

from .cases import BENCHMARKS, DESCRIPTIONS, Cases
from .harness import Config
from .machine import loadavg, machine_info, numba_cache_stats
from .report import _first_calls, _jsonable, _markdown, _plot_results, _plot_scaling, _targets
from .rows import BUSY_FLAG, _busy, _fmt_time
from .runner import Runner

__all__ = ["build_parser", "main", "cli"]

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


def main(args: Union[argparse.Namespace, Sequence[str], None] = None, *,
         targets: Optional[Mapping[str, str]] = None,
         checks: Optional[Mapping[str, Callable[[Runner], None]]] = None) -> int:
    """Run the benchmarks; returns 0, 1 if a measurement failed, 2 on bad arguments.

    Parameters
    ----------
    args : argparse.Namespace, list of str or None
        Parsed options (``quick``, ``out``, ``only``, ``no_plot``), or command-line words.
    targets : mapping of str to str, optional
        Benchmark name -> the target in words, stored in ``results.json`` (``targets_spec``).
    checks : mapping of str to callable, optional
        Benchmark name -> ``check(runner)``, called once that benchmark's rows are in; it records
        targets on rows with ``runner.set_target``. The repository's ``bench/targets.py`` holds the
        project's (``bench/run.py`` passes them); the library itself checks none.
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
    load_start = loadavg()
    cfg = Config.for_mode(quick)
    runner = Cases(cfg, out, plot, checks)
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
    info["numba_cache"] = numba_cache_stats()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": quick, "selected": selected,
            "total_s": total, "busy_flag": BUSY_FLAG, "busy_rows": sum(_busy(r) for r in runner.rows),
            "loadavg_start": load_start, "loadavg_end": loadavg(), "config": asdict(cfg), "machine": info,
            "data": runner._images[2] if runner._images else None, "torch": runner.torch_status,
            "jax": runner.jax_status, "argv": sys.argv}
    results = {"meta": meta, "gemm_gflops": runner.gemm, "descriptions": DESCRIPTIONS,
               "targets_spec": dict(targets or {}), "targets": _targets(runner.rows),
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
        print("  (none evaluated in this selection)" if checks else
              "  (none: the project's targets are checked by the repository's bench/run.py)")
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
        prog: str = "python -m pyfastgrad bench", *, targets: Optional[Mapping[str, str]] = None,
        checks: Optional[Mapping[str, Callable[[Runner], None]]] = None) -> int:
    """Parse ``argv`` and run; ``only`` is the default selection (for the per-topic scripts);
    ``targets``/``checks`` as in :func:`main`."""
    args = build_parser(prog).parse_args(None if argv is None else list(argv))
    if only is not None and not args.only:
        args.only = list(only)
    return main(args, targets=targets, checks=checks)

