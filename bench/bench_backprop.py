"""Benchmarks of the backprop gradient vs torch and jax: ``python bench/bench_backprop.py [--quick] [--out DIR]``.

Runs ``pyfastgrad.bench`` with ``--only backprop`` (unless ``--only`` is given).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for run.py when started from elsewhere
from run import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(only=["backprop"], prog="bench/bench_backprop.py"))
