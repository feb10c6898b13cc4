"""Run the full benchmark set: ``python bench/run.py [--quick] [--out DIR] [--only NAME...] [--no-plot]``.

A thin wrapper over :mod:`pyfastgrad.bench` (also ``python -m pyfastgrad bench``) that adds the project's
speed targets (``targets.py``). Results go to ``bench/results`` unless ``--out`` says otherwise.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Sequence


def load_targets() -> ModuleType:
    """``targets.py`` beside this file (by path: the name ``targets`` is too common to import by)."""
    spec = importlib.util.spec_from_file_location("pyfastgrad_bench_targets", Path(__file__).resolve().parent
                                                  / "targets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(argv: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
        prog: str = "bench/run.py") -> int:
    """Parse ``argv`` (default: the command line) and run; ``only`` is the default selection."""
    from pyfastgrad.bench import cli
    targets = load_targets()

    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", str(Path(__file__).resolve().parent / "results")]  # independent of the cwd
    return cli(args, only=only, prog=prog, targets=targets.TARGETS, checks=targets.CHECKS)


if __name__ == "__main__":
    sys.exit(run())
