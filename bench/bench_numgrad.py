"""Benchmarks of numerical gradients of a function and of a net.

``python bench/bench_numgrad.py [--quick] [--out DIR]``

Runs ``pyfastgrad.bench`` with ``--only numgrad_func numgrad_net`` (unless ``--only`` is given).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for run.py when started from elsewhere
from run import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(only=["numgrad_func", "numgrad_net"], prog="bench/bench_numgrad.py"))
