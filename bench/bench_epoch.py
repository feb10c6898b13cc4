"""Benchmarks of one MNIST epoch: ``python bench/bench_epoch.py [--quick] [--out DIR]``.

Runs ``pyfastgrad.bench`` with ``--only epoch`` (unless ``--only`` is given).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for run.py when started from elsewhere
from run import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(only=["epoch"], prog="bench/bench_epoch.py"))
