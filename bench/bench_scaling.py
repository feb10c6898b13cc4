"""Benchmarks of cost against hidden size, batch size and depth.

``python bench/bench_scaling.py [--quick] [--out DIR]``

Runs ``pyfastgrad.bench`` with ``--only scaling`` (unless ``--only`` is given).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for run.py when started from elsewhere
from run import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(only=["scaling"], prog="bench/bench_scaling.py"))
