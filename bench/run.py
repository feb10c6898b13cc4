"""Run the full benchmark set: ``python bench/run.py [--quick] [--out DIR] [--only NAME...] [--no-plot]``.

A thin wrapper over :mod:`pyfastgrad.bench` (also ``python -m pyfastgrad bench``).
Results go to ``bench/results`` unless ``--out`` says otherwise.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence


def run(argv: Optional[Sequence[str]] = None, only: Optional[Sequence[str]] = None,
        prog: str = "bench/run.py") -> int:
    """Parse ``argv`` (default: the command line) and run; ``only`` is the default selection."""
    from pyfastgrad.bench import cli

    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in args and not any(a.startswith("--out=") for a in args):
        args += ["--out", str(Path(__file__).resolve().parent / "results")]  # independent of the cwd
    return cli(args, only=only, prog=prog)


if __name__ == "__main__":
    sys.exit(run())
