"""Benchmarks of cost against hidden size, batch size and depth.

``python bench/bench_scaling.py [--quick] [--out DIR]``

Runs ``pyfastgrad.bench`` with ``--only scaling`` (unless ``--only`` is given): train steps of 784-H-10
(H = 100 ... 4096, batch 100) and 784-100-10 (batch 1 ... 1000), float32 and float64, on every backend and
torch eager, printed as one table per axis (time per step, GFLOP/s, % of the run's 1024^3 gemm rate of the
row's dtype, x numpy, x torch) after the machine, thread and gemm lines; ``scaling.png`` in ``--out``.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for run.py when started from elsewhere
from run import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(only=["scaling"], prog="bench/bench_scaling.py"))
