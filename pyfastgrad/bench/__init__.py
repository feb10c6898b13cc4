"""Benchmark harness: every hot path, every backend, one process, one run.

``python -m pyfastgrad bench [--quick] [--out DIR] [--only NAME...] [--no-plot]``
(or ``python bench/run.py``) times, in this order:

``numgrad_func``
    ``numerical_gradient(f, x)`` of a 1000-element array, Python ``f`` and a
    numba-jitted ``f``; plus ``scipy.optimize.approx_fprime`` and numdifftools.
``numgrad_net``
    ``TwoLayerNet(784, 50, 10).numerical_gradient`` on 100 MNIST images
    (float64). The numpy reference runs on a stated subset of the parameters
    and is scaled linearly (its cost per parameter is constant).
``backprop``
    forward + backward of 784-100-10 on a batch of 100, float32 and float64:
    the kernel (``Mlp.loss_grad``) and the API (``net.gradient``), vs torch
    eager and ``jax.jit(jax.grad)``; GFLOP/s against gemm measured in the run.
``optimizer``
    SGD and Adam on a flat vector of 79,510 parameters, vs ``torch.optim``.
``train_step``
    forward + backward + SGD update, 784-100-10 batch 100 and 64-32-10 batch 32
    (float32): per step inside the fused loop and per Python call; for MNIST also
    the cpp fused loop on the images as rows of nonzeros (``CsrRows``), counted in
    dense-equivalent flops.
``epoch``
    one MNIST epoch (600 steps of 100, 784-100-10, float32, SGD lr 0.1), the cpp
    kernel also on ``CsrRows`` input.
``scaling``
    (full mode only, unless named in ``--only``) train-step cost of 784-H-10
    (H = 100 ... 4096) and of 784-100-10 at batch 1 ... 1000, float32 and float64,
    against the numpy reference and torch eager and as a fraction of the run's
    1024^3 gemm rate of the same dtype; depth; numerical-gradient cost against H.

Every ratio is computed from timings of this run: ``x ref`` is the numpy
reference's median time divided by the row's median time. Nothing is hard-coded.
Writes ``results.json`` (all raw figures and machine information),
``results.md`` (a markdown table), ``results.png`` and, with ``scaling``,
``scaling.png`` into ``--out``.

The package, one module per job: :mod:`.harness` (timing and spread), :mod:`.rows` (result rows and
tables), :mod:`.machine` (CPU/BLAS/thread probes), :mod:`.data` (MNIST or the shipped subset, never
random data), :mod:`.peers` (PyTorch/JAX adapters), :mod:`.runner` (queueing, ratios, the run),
:mod:`.cases` (what is measured), :mod:`.report` (JSON/markdown/PNG), :mod:`.cli`. It uses the public
API; the kernel-only rows go through :mod:`._door`, its one private accessor. The project's speed
targets live in the repository's ``bench/targets.py`` (``bench/run.py`` passes them to :func:`main`).
"""
from .cases import BENCHMARKS, DESCRIPTIONS, Cases
from .cli import build_parser, cli, main
from .data import BenchDataError, load_images
from .harness import Config, Job, Timing, measure, run_jobs
from .machine import machine_info
from .rows import Row, markdown_table, mlp_flops, text_table
from .runner import Runner

__all__ = ["BENCHMARKS", "DESCRIPTIONS", "Config", "Timing", "Job", "Row", "Runner", "Cases", "measure",
           "run_jobs", "mlp_flops", "machine_info", "load_images", "BenchDataError", "text_table",
           "markdown_table", "build_parser", "main", "cli"]
