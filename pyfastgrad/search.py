"""Hyper-parameter search: the tutorials' random (or grid) search, on any ``concurrent.futures`` executor.

The tutorials tune the learning rate and weight decay by random search with log-uniform ranges, a
validation split taken from the training set, a short training per trial, and keep the best.
:func:`hyperparameter_search` does that over learning rate, weight decay, hidden sizes, optimizer,
batch size (and activation, weight init), with

* a seed per trial: a trial's result depends only on its parameters and its seed, wherever it runs;
* trials on a local process pool (default, ``spawn`` start method), a thread pool, any other
  ``concurrent.futures.Executor``, or a Dask ``distributed`` cluster (``executor=client`` or
  ``client.get_executor()``, or ``scheduler='tcp://host:port'``);
* one thread per trial by default (``threads_per_trial``), so parallel trials never oversubscribe cores;
* the training data sent once per worker, not once per trial: the local pool's initializer carries it,
  Dask gets it scattered to every worker (``broadcast=True``), other process executors load it from
  ``.npy`` files (memory-mapped) written once;
* a worker that dies mid-trial costs that trial only: on the local pool the trials that were running are
  rerun one at a time, and the one that kills its worker again is reported failed; on Dask the scheduler
  reruns it elsewhere and reports it failed after ``distributed.scheduler.allowed-failures`` deaths;
* results best first as a table, JSON, CSV, and the tutorials' plot (each trial's validation and
  training accuracy curves, best first).

``method='optuna'`` asks Optuna's sampler (TPE by default) for each next trial (ask-and-tell) instead of
drawing at random; the trials still run on the executor.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import itertools
import json
import math
import multiprocessing
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import spec
from ._backends import get_backend
from ._threads import get_num_threads, set_num_threads
from .nets import MultiLayerNet
from .optimizers import _BY_NAME as _OPTIMIZERS
from .train import fit

__all__ = [
    "LogUniform", "Uniform", "Choice", "Trial", "TrialResult", "SearchResult", "hyperparameter_search",
    "split_validation", "train_trial", "SPACE_KEYS", "DEFAULTS", "DEFAULT_SPACE", "TUTORIAL_SPACE",
]


# --------------------------------------------------------------------------- the search space
@dataclass(frozen=True)
class LogUniform:
    """Float drawn as ``exp(uniform(log low, log high))``: the tutorials' ``10 ** uniform(-6, -2)``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_range(self, positive=True)

    def sample(self, rng: np.random.Generator) -> float:
        """One value ``exp(u)``, ``u ~ uniform(log low, log high)``."""
        return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))

    def grid(self, n: int) -> List[float]:
        """``n`` values evenly spaced in log scale from ``low`` to ``high`` (``np.geomspace``)."""
        return [float(v) for v in np.geomspace(self.low, self.high, n)]

    def __repr__(self) -> str:
        return f"LogUniform({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class Uniform:
    """Float drawn uniformly from ``[low, high)``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_range(self, positive=False)

    def sample(self, rng: np.random.Generator) -> float:
        """One value ``~ uniform(low, high)``."""
        return float(rng.uniform(self.low, self.high))

    def grid(self, n: int) -> List[float]:
        """``n`` values evenly spaced from ``low`` to ``high`` (``np.linspace``)."""
        return [float(v) for v in np.linspace(self.low, self.high, n)]

    def __repr__(self) -> str:
        return f"Uniform({self.low:g}, {self.high:g})"


class Choice:
    """One of a list of values, each equally likely (every one of them in a grid search)."""

    def __init__(self, options: Sequence[Any]) -> None:
        if isinstance(options, (str, bytes)) or not hasattr(options, "__iter__"):
            raise TypeError(f"Choice needs a list of options, got {options!r}")
        self.options = tuple(options)
        if not self.options:
            raise ValueError("Choice([]) is an empty set of options")
        if len(set(map(repr, self.options))) < len(self.options):
            raise ValueError(f"Choice({list(self.options)!r}) lists an option twice (for one net with "
                             f"several hidden layers write a tuple: 'hidden': (100, 100))")

    def sample(self, rng: np.random.Generator) -> Any:
        """One of the options, each with probability ``1 / len(options)``."""
        return self.options[int(rng.integers(len(self.options)))]

    def grid(self, n: int) -> List[Any]:
        """All the options (``n`` is ignored)."""
        return list(self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and other.options == self.options

    def __hash__(self) -> int:
        return hash(self.options)

    def __repr__(self) -> str:
        return f"Choice({list(self.options)!r})"


Dimension = Union[LogUniform, Uniform, Choice]


def _check_range(dim: Union[LogUniform, Uniform], positive: bool) -> None:
    name = type(dim).__name__
    for v in (dim.low, dim.high):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} bounds must be numbers, got {v!r}")
        if not math.isfinite(v):
            raise ValueError(f"{name}({dim.low!r}, {dim.high!r}): bounds must be finite")
    if dim.low == dim.high:
        raise ValueError(f"{name}({dim.low:g}, {dim.high:g}) is an empty range (low == high); "
                         f"for a fixed value give the value itself")
    if dim.low > dim.high:
        raise ValueError(f"{name}({dim.low:g}, {dim.high:g}) is inverted (low > high)")
    if positive and dim.low <= 0:
        raise ValueError(f"{name}({dim.low:g}, {dim.high:g}): a log-uniform range needs low > 0")


# What a trial uses for a key the space leaves out.
DEFAULTS: Dict[str, Any] = {"lr": None, "weight_decay": 0.0, "hidden": (100,), "optimizer": "sgd",
                            "batch_size": 100, "activation": "relu", "weight_init": "auto"}
SPACE_KEYS = tuple(DEFAULTS)

# Ranges that train MNIST well in a few epochs (the tutorials' own ranges are TUTORIAL_SPACE).
DEFAULT_SPACE: Dict[str, Any] = {"lr": LogUniform(1e-3, 0.5), "weight_decay": LogUniform(1e-8, 1e-3)}
# The tutorials' chapter 6: a 6-layer net of 100, SGD, 500 training images, lr 10**U(-6,-2), wd 10**U(-8,-4).
TUTORIAL_SPACE: Dict[str, Any] = {"lr": LogUniform(1e-6, 1e-2), "weight_decay": LogUniform(1e-8, 1e-4),
                                  "hidden": (100, 100, 100, 100, 100), "optimizer": "sgd"}


def _check_value(key: str, v: Any) -> Any:
    """One fixed value of ``key``, normalized (hidden -> tuple of ints), or a clear error."""
    def number(v, what):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                or not math.isfinite(v):
            raise ValueError(f"space[{key!r}]: {what}, got {v!r}")
        return v
    if key == "lr":
        if v is None:
            return None  # the optimizer's default
        if number(v, "the learning rate must be a positive number") <= 0:
            raise ValueError(f"space['lr']: the learning rate must be > 0, got {v!r}")
        return float(v)
    if key == "weight_decay":
        if number(v, "weight decay must be a number >= 0") < 0:
            raise ValueError(f"space['weight_decay']: weight decay must be >= 0, got {v!r}")
        return float(v)
    if key == "hidden":
        sizes = (v,) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise ValueError(f"space['hidden']: hidden sizes must be an int or a list of ints, got {v!r}") \
                from None
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ValueError(f"space['hidden']: hidden sizes must be positive ints, got {v!r}")
        return tuple(int(s) for s in sizes)
    if key == "optimizer":
        if not isinstance(v, str) or v.lower() not in _OPTIMIZERS:
            raise ValueError(f"space['optimizer']: unknown optimizer {v!r}; choose from {list(_OPTIMIZERS)}")
        return v.lower()
    if key == "batch_size":
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"space['batch_size']: batch sizes must be positive ints, got {v!r}")
        return int(v)
    if key == "activation":
        if v not in spec.MLP_ACTIVATIONS:
            raise ValueError(f"space['activation']: must be one of {spec.MLP_ACTIVATIONS}, got {v!r}")
        return v
    if key == "weight_init":
        if isinstance(v, str):
            if v not in ("std", "he", "xavier", "auto"):
                raise ValueError(f"space['weight_init']: 'std', 'he', 'xavier', 'auto' or a float, got {v!r}")
            return v
        if number(v, "weight_init must be a name or a positive float") <= 0:
            raise ValueError(f"space['weight_init']: a float std must be > 0, got {v!r}")
        return float(v)
    raise AssertionError(key)


def _normalize_space(space: Optional[Dict[str, Any]]) -> Dict[str, Dimension]:
    """Every key of the space as a Dimension (a list -> Choice, a single value -> a one-option Choice)."""
    if space is None:
        space = DEFAULT_SPACE
    if not isinstance(space, dict):
        raise TypeError(f"space must be a dict of parameter -> range/list/value, got {type(space).__name__}")
    unknown = [k for k in space if k not in SPACE_KEYS]
    if unknown:
        raise ValueError(f"unknown search-space key(s) {unknown}; known: {list(SPACE_KEYS)}")
    out: Dict[str, Dimension] = {}
    for key, dim in space.items():
        if isinstance(dim, (LogUniform, Uniform)):
            if key not in ("lr", "weight_decay"):
                raise ValueError(f"space[{key!r}]: a continuous range fits only 'lr' and 'weight_decay'; "
                                 f"give a list of values (Choice) for {key!r}")
            if key == "lr" and dim.low <= 0:
                raise ValueError(f"space['lr']: {dim!r} includes learning rates <= 0")
            if key == "weight_decay" and dim.low < 0:
                raise ValueError(f"space['weight_decay']: {dim!r} includes negative weight decay")
            out[key] = dim
        elif isinstance(dim, Choice):
            out[key] = Choice([_check_value(key, v) for v in dim.options])
        elif isinstance(dim, list) or (key != "hidden" and isinstance(dim, tuple)):
            out[key] = Choice([_check_value(key, v) for v in dim])
        else:
            out[key] = Choice([_check_value(key, dim)])
    return out


# --------------------------------------------------------------------------- trials and their results
@dataclass(frozen=True)
class Trial:
    """What one trial trains: its parameters (every key of :data:`SPACE_KEYS`) and its seed."""

    number: int
    seed: int
    params: Dict[str, Any]
    epochs: int
    dtype: str = "float32"
    backend: Optional[str] = None
    threads: int = 1


@dataclass
class TrialResult:
    """Outcome of one trial.

    ``status`` is 'ok', 'diverged' (a non-finite loss stopped training; the curves hold the epochs before)
    or 'failed' (``message`` says why: an exception, a worker that died, a timeout). ``val_acc`` is the
    validation accuracy after the last epoch (NaN when there is none). ``worker`` is ``host:pid``;
    ``data_loads`` counts how many searches' training data that worker process had received when the
    trial ran (1: this search's data reached that worker once; a copy Dask moves between its workers of
    the same data is not counted again).
    """

    number: int
    seed: int
    params: Dict[str, Any]
    status: str = "ok"
    val_acc: float = float("nan")
    train_acc: float = float("nan")
    val_curve: List[float] = field(default_factory=list)
    train_curve: List[float] = field(default_factory=list)
    final_loss: float = float("nan")
    seconds: float = 0.0
    worker: str = ""
    data_loads: int = 0
    attempts: int = 1
    message: str = ""

    def same_outcome(self, other: "TrialResult") -> bool:
        """True when ``other`` trained the same trial to the same numbers (timing and worker aside)."""
        return (self.number, self.seed, self.params, self.status, self.val_curve, self.train_curve) == \
            (other.number, other.seed, other.params, other.status, other.val_curve, other.train_curve) \
            and _same_float(self.final_loss, other.final_loss)

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        msg = f", message={self.message!r}" if self.message else ""
        return f"TrialResult(#{self.number}, {self.status}, val_acc={self.val_acc:.4f}, {ps}{msg})"


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, tuple):
        return "-".join(str(s) for s in v)
    return str(v)


def _sort_key(r: TrialResult) -> Tuple[int, float, int]:
    acc = r.val_acc if r.status != "failed" and not math.isnan(r.val_acc) else -1.0
    return (r.status == "failed", -acc, r.number)


# --------------------------------------------------------------------------- the data, on the worker side
class _TrainingData:
    """The fit and validation arrays of one search, with a token naming them."""

    def __init__(self, x: np.ndarray, t: np.ndarray, x_val: np.ndarray, t_val: np.ndarray,
                 n_classes: int) -> None:
        self.x, self.t, self.x_val, self.t_val, self.n_classes = x, t, x_val, t_val, n_classes
        self.token = uuid.uuid4().hex

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x, self.t, self.x_val, self.t_val))


@dataclass(frozen=True)
class _DataRef:
    """Names data a worker already holds (the local pool's initializer installed it)."""

    token: str


@dataclass(frozen=True)
class _DataFiles:
    """Names ``.npy`` files a worker on this machine memory-maps (executors we cannot hand data to once)."""

    directory: str
    token: str
    n_classes: int


_WORKER_LOCK = threading.Lock()
_WORKER: Dict[str, Any] = {"data": None, "loads": 0}


def _install(data: _TrainingData) -> None:
    with _WORKER_LOCK:
        _WORKER["data"] = data
        _WORKER["loads"] += 1


def _worker_data(handle: Any) -> Tuple[_TrainingData, int]:
    """The data ``handle`` names, and how many times this process has received data."""
    with _WORKER_LOCK:
        held = _WORKER["data"]
        if isinstance(handle, _TrainingData):  # Dask hands the scattered object itself
            if held is None or held.token != handle.token:  # a new search's data (Dask may move a copy)
                _WORKER["loads"] += 1
            _WORKER["data"], held = handle, handle
        elif isinstance(handle, _DataRef):
            if held is None or held.token != handle.token:
                raise RuntimeError("this worker process holds no data for this search "
                                   "(its pool was not started by hyperparameter_search)")
        elif isinstance(handle, _DataFiles):
            if held is None or held.token != handle.token:
                arrays = [np.load(os.path.join(handle.directory, f"{n}.npy"), mmap_mode="r")
                          for n in ("x", "t", "x_val", "t_val")]
                held = _TrainingData(*arrays, n_classes=handle.n_classes)
                held.token = handle.token
                _WORKER["data"] = held
                _WORKER["loads"] += 1
        else:
            raise TypeError(f"unexpected data handle {type(handle).__name__}")
        return held, _WORKER["loads"]


def _limit_threads(n: int) -> None:
    # numba's first use starts its threading layer, which resets the extension's OpenMP threads to all
    # cores: start it first (get_num_threads does), so that the limit below holds from the first trial on
    get_num_threads()
    set_num_threads(n)


def _init_worker(data: _TrainingData, threads: int) -> None:
    """Local pool initializer: runs once per worker process, with the data pickled once for it."""
    _limit_threads(threads)
    _install(data)


def _ping() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def train_trial(data: Any, trial: Trial) -> TrialResult:
    """Run one trial where it lands: build the net, ``fit`` it, measure validation accuracy per epoch.

    ``data`` is the search's training data or a handle to it held by this worker. Sets this process's
    kernel threads to ``trial.threads`` first. Exceptions propagate (the search records them).
    """
    t0 = time.perf_counter()
    d, loads = _worker_data(data)
    _limit_threads(trial.threads)
    p = trial.params
    net = MultiLayerNet(d.x.shape[1], list(p["hidden"]), d.n_classes, activation=p["activation"],
                        weight_init=p["weight_init"], weight_decay=p["weight_decay"], dtype=trial.dtype,
                        seed=trial.seed, backend=trial.backend)
    def train():
        return fit(net, d.x, d.t, d.x_val, d.t_val, optimizer=p["optimizer"], lr=p["lr"], epochs=trial.epochs,
                   batch_size=p["batch_size"], seed=trial.seed, progress=False)

    if threading.current_thread() is threading.main_thread():  # a pool process: no other trial beside us
        with warnings.catch_warnings():  # (process-wide state, so not in a thread pool's threads)
            warnings.simplefilter("ignore", RuntimeWarning)  # a divergence is recorded in hist.stopped
            hist = train()
    else:
        hist = train()
    finite = [v for v in hist.loss if math.isfinite(v)]
    return TrialResult(
        number=trial.number, seed=trial.seed, params=dict(p), status="diverged" if hist.stopped else "ok",
        val_acc=hist.test_acc[-1] if hist.test_acc else float("nan"),
        train_acc=hist.train_acc[-1] if hist.train_acc else float("nan"),
        val_curve=list(hist.test_acc), train_curve=list(hist.train_acc),
        final_loss=float(finite[-1]) if finite else float("nan"), seconds=time.perf_counter() - t0,
        worker=_ping(), data_loads=loads, message=hist.stopped or "")


# --------------------------------------------------------------------------- where trials run
class _Runner:
    """Submits trials to an executor; knows how the data gets there and what to do when workers die."""

    capacity = 1
    can_restart = False
    description = ""

    def __init__(self, fn: Callable[[Any, Trial], TrialResult]) -> None:
        self.fn = fn  # what each worker runs: fn(handle, trial)
        self.handle: Any = None  # the data, or what names it on the workers
        self.executor: Any = None

    def submit(self, trial: Trial) -> cf.Future:
        return self.executor.submit(self.fn, self.handle, trial)

    def restart(self) -> None:
        raise NotImplementedError

    def worker_died(self, exc: BaseException) -> bool:
        """True when ``exc`` says the trial's worker died (not that the trial itself raised)."""
        return False

    def abandon(self, future: cf.Future) -> bool:
        """Give up on a running trial; True when that also stopped the other running trials."""
        future.cancel()  # a running task keeps its worker busy until it ends; nothing better exists here
        return False

    def close(self) -> None:
        pass


class _LocalPool(_Runner):
    """A ProcessPoolExecutor of our own: spawn-started workers (a forked child of a process that ran OpenMP
    hangs), each receiving the data once through its initializer."""

    can_restart = True

    def __init__(self, fn: Callable, n_workers: int, data: _TrainingData, threads: int,
                 startup_timeout: float) -> None:
        super().__init__(fn)
        self.capacity, self.data, self.threads, self.startup_timeout = n_workers, data, threads, startup_timeout
        self.handle = _DataRef(data.token)
        self.description = f"local process pool, {n_workers} workers (spawn)"
        self.restart()

    def restart(self) -> None:
        if self.executor is not None:
            self._kill()
        self.executor = cf.ProcessPoolExecutor(self.capacity, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_init_worker, initargs=(self.data, self.threads))
        # start every worker now, so that a start-up failure is an error here and not a failed trial
        pings = [self.executor.submit(_ping) for _ in range(self.capacity)]
        deadline = time.monotonic() + self.startup_timeout
        while True:
            done, _ = cf.wait(pings, timeout=0.2)
            errs = [repr(f.exception()) for f in done if f.exception()]
            # a child that dies while starting can leave the pool waiting: look at the processes too
            dead = [p.exitcode for p in getattr(self.executor, "_processes", {}).values()
                    if p.exitcode is not None]
            if errs or dead:
                self._kill()
                raise RuntimeError(
                    "a local worker process died while starting (exit code "
                    f"{dead[0] if dead else '?'}{'; ' + errs[0] if errs else ''}). Worker processes are "
                    "spawned, so they import the main script: a script that starts a search needs "
                    "`if __name__ == '__main__':` around it.")
            if len(done) == len(pings):
                return
            if time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(f"the local worker processes did not start within "
                                   f"{self.startup_timeout:g} s")

    def abandon(self, future: cf.Future) -> bool:
        self.restart()  # a pool task cannot be stopped; its process can (restart kills them)
        return True

    def _kill(self) -> None:
        pool, self.executor = self.executor, None
        procs = list(getattr(pool, "_processes", {}).values())  # no public handle on them before 3.14
        for p in procs:
            if p.is_alive():
                p.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


class _DaskRunner(_Runner):
    """A Dask ``distributed`` client: the data is scattered to every worker once, each task gets its key."""

    def __init__(self, fn: Callable, client: Any, data: _TrainingData, owns_client: bool,
                 timeout: float) -> None:
        super().__init__(fn)
        self.client, self.owns_client = client, owns_client
        try:
            client.wait_for_workers(1, timeout=timeout)
        except Exception as exc:
            raise TimeoutError(f"the Dask cluster at {client.scheduler.address} has no worker "
                               f"after {timeout:g} s") from exc
        info = client.scheduler_info(n_workers=-1) if _accepts_n_workers(client) else client.scheduler_info()
        workers = info.get("workers", {})
        self.capacity = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        self.data = data
        self.handle = client.scatter(data, broadcast=True, hash=False)
        client.run(_ping)  # every worker imports pyfastgrad now, not during its first trial
        self.executor = client.get_executor(pure=False)  # pure=False: a rerun is a new task, not a cache hit
        self.description = f"Dask cluster {client.scheduler.address}, {len(workers)} workers, " \
                           f"{self.capacity} threads"

    def submit(self, trial: Trial) -> cf.Future:
        # scattered data has no lineage: once every worker holding it died it is gone, so send it again
        if self.handle.status != "finished":
            self.handle = self.client.scatter(self.data, broadcast=True, hash=False)
        return super().submit(trial)

    def worker_died(self, exc: BaseException) -> bool:
        # KilledWorker: it ran (or was queued) on a worker that died; a cancelled task lost its data with one
        return type(exc).__name__ in ("KilledWorker", "CancelledError", "FutureCancelledError")

    def close(self) -> None:
        self.client.cancel([self.handle])
        if self.owns_client:
            self.client.close()


def _accepts_n_workers(client: Any) -> bool:
    import inspect
    return "n_workers" in inspect.signature(client.scheduler_info).parameters


class _ExecutorRunner(_Runner):
    """Any other Executor: a thread pool shares the arrays in memory; a process executor memory-maps them
    from ``.npy`` files written once (on this machine's disk, so its workers must see it)."""

    def __init__(self, fn: Callable, executor: cf.Executor, data: _TrainingData,
                 max_in_flight: Optional[int]) -> None:
        super().__init__(fn)
        self.executor = executor
        self.capacity = max_in_flight or int(getattr(executor, "_max_workers", 0) or os.cpu_count() or 1)
        self.tmpdir: Optional[str] = None
        if isinstance(executor, cf.ThreadPoolExecutor):
            self.handle = data
            self.description = f"thread pool, {self.capacity} threads"
        else:
            self.tmpdir = tempfile.mkdtemp(prefix="pyfastgrad-search-")
            for name in ("x", "t", "x_val", "t_val"):
                np.save(os.path.join(self.tmpdir, f"{name}.npy"), getattr(data, name))
            self.handle = _DataFiles(self.tmpdir, data.token, data.n_classes)
            self.description = f"{type(executor).__name__}, {self.capacity} in flight, data from {self.tmpdir}"

    def close(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _dask_client_of(executor: Any) -> Any:
    """The ``distributed.Client`` behind ``executor`` (a Client or its ``get_executor()``), else None."""
    mod = type(executor).__module__ or ""
    if not mod.startswith("distributed"):
        return None
    if hasattr(executor, "scatter") and hasattr(executor, "get_executor"):
        return executor
    return getattr(executor, "_client", None)


def _connect(address: str, timeout: float) -> Any:
    """A Client for the scheduler at ``address``, or a ConnectionError within ``timeout`` seconds."""
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"scheduler must be an address such as 'tcp://10.0.0.5:8786', got {address!r}")
    try:
        from distributed import Client
        from distributed.comm import parse_address, parse_host_port
        from distributed.comm.registry import get_backend
    except ImportError as exc:
        raise ImportError("a Dask scheduler needs dask.distributed: pip install 'pyfastgrad[dask]'") from exc
    # checked before a Client exists: one that fails to connect lingers and stalls the interpreter's exit
    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        host, port = parse_host_port(location) if scheme == "tcp" else (None, None)
    except ValueError as exc:
        raise ValueError(f"scheduler address {address!r} is not valid: {exc}") from None
    refused = f"no Dask scheduler answered at {address!r} within {timeout:g} s (is `dask scheduler` running " \
              f"there and reachable?)"
    if host is not None:  # a plain TCP probe
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise ConnectionError(f"{refused}: {exc}") from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"{refused}: {exc}") from None
    except Exception as exc:  # something answered, but not the Dask protocol (a proxy, another service)
        raise ConnectionError(f"{address!r} answered but no Dask scheduler handshake succeeded within "
                              f"{timeout:g} s: {type(exc).__name__}: {exc}") from None


# --------------------------------------------------------------------------- what to try next
class _ListSource:
    """Random or grid trials, all known before the first runs."""

    def __init__(self, trials: List[Trial]) -> None:
        self.trials: Iterator[Trial] = iter(trials)
        self.total = len(trials)

    def next(self) -> Optional[Trial]:
        return next(self.trials, None)

    def tell(self, result: TrialResult) -> None:
        pass


class _OptunaSource:
    """Optuna's ask-and-tell: the sampler proposes each trial from the results told so far."""

    def __init__(self, space: Dict[str, Dimension], n_trials: int, make: Callable[[int, Dict], Trial],
                 seed: int, sampler: Any) -> None:
        try:
            import optuna
        except ImportError as exc:
            raise ImportError("method='optuna' needs optuna: pip install 'pyfastgrad[optuna]'") from exc
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.space, self.make, self.total = optuna, space, make, n_trials
        self.study = optuna.create_study(direction="maximize",
                                         sampler=sampler or optuna.samplers.TPESampler(seed=seed))
        self.asked: Dict[int, Any] = {}

    def next(self) -> Optional[Trial]:
        if len(self.asked) >= self.total:
            return None
        ot = self.study.ask()
        params = {}
        for key, dim in self.space.items():
            if isinstance(dim, Choice):  # optuna's categories are plain values: choose by label
                labels = [_fmt(v) for v in dim.options]
                params[key] = dim.options[labels.index(ot.suggest_categorical(key, labels))]
            else:
                params[key] = ot.suggest_float(key, dim.low, dim.high, log=isinstance(dim, LogUniform))
        number = len(self.asked)
        self.asked[number] = ot
        return self.make(number, params)

    def tell(self, result: TrialResult) -> None:
        ot = self.asked[result.number]
        if result.status != "failed" and math.isfinite(result.val_acc):
            self.study.tell(ot, result.val_acc)
        else:
            self.study.tell(ot, state=self.optuna.trial.TrialState.FAIL)


# --------------------------------------------------------------------------- the search
def split_validation(x, t, val_fraction: float = 0.2, seed: Optional[int] = 0):
    """Shuffle the training set and hold out ``val_fraction`` of it for validation (never the test set).

    Returns ``(x_fit, t_fit), (x_val, t_val)``: new arrays; ``x`` and ``t`` are not modified.
    """
    x, t = np.asarray(x), np.asarray(t)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of samples (N, features...), got shape {x.shape}")
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"t has {t.shape[0]} labels for {x.shape[0]} samples")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or \
            not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    n = x.shape[0]
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"val_fraction={val_fraction:g} of {n} samples leaves "
                         f"{n_val} validation and {n - n_val} training samples; each needs at least one")
    perm = np.random.default_rng(seed).permutation(n)
    val, fit_ = perm[:n_val], perm[n_val:]
    return (x[fit_], t[fit_]), (x[val], t[val])


def _trial_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def _full_params(params: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: params.get(k, DEFAULTS[k]) for k in SPACE_KEYS}
    return out


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _positive_seconds(v: Any, name: str) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
        raise ValueError(f"{name} must be a positive number of seconds or None, got {v!r}")
    return float(v)


def hyperparameter_search(
        x_train, t_train, space: Optional[Dict[str, Any]] = None, *, method: str = "random",
        n_trials: int = 20, grid_points: int = 3, epochs: int = 5, val_fraction: float = 0.2,
        seed: int = 0, same_seed: bool = False, dtype=np.float32, backend: Optional[str] = None,
        executor: Any = None, scheduler: Optional[str] = None, n_workers: Optional[int] = None,
        threads_per_trial: int = 1, max_in_flight: Optional[int] = None, trial_timeout: Optional[float] = None,
        connect_timeout: float = 10.0, sampler: Any = None, progress: bool = True,
        trial_fn: Callable[[Any, Trial], TrialResult] = train_trial) -> "SearchResult":
    """Random, grid or Optuna search of the hyper-parameters of a ``MultiLayerNet`` on a validation split.

    Parameters
    ----------
    x_train, t_train : the training set ((N, features) images, labels or one-hot). A validation split of
        ``val_fraction`` is held out of it (shuffled with ``seed``); the test set is never used. Not modified.
    space : dict, keys from :data:`SPACE_KEYS` ('lr', 'weight_decay', 'hidden', 'optimizer', 'batch_size',
        'activation', 'weight_init'). Values: ``LogUniform(low, high)`` or ``Uniform(low, high)`` (lr and
        weight_decay), a list or ``Choice([...])`` of values, or one fixed value. For ``hidden`` a tuple of
        layer sizes is one net (``(100, 100)``), a list of them a Choice (``[(50,), (100, 100)]``).
        Left-out keys use :data:`DEFAULTS` (``lr`` None: the optimizer's default). Default: DEFAULT_SPACE.
    method : 'random' (``n_trials`` draws), 'grid' (every combination; ranges give ``grid_points`` values,
        log-spaced for LogUniform) or 'optuna' (Optuna's TPE sampler, or ``sampler``, ask-and-tell).
    epochs : epochs per trial (short training, as the tutorials).
    seed : seeds the split, the draws and every trial's seed (init and batch order); a trial's result
        depends only on its parameters and its seed. ``same_seed=True`` gives every trial the same seed
        (same initial weights and batches: a side-by-side comparison of optimizers or learning rates).
    dtype, backend : of the nets (default float32, the current backend).
    executor : where trials run. None: a local process pool of ``n_workers`` (default: the number of
        cores) spawn-started processes. A ``concurrent.futures.Executor`` (thread or process pool), a Dask
        ``distributed.Client`` or ``client.get_executor()``.
    scheduler : address of a Dask scheduler ('tcp://host:8786'): connect (``connect_timeout`` seconds at
        most, else ConnectionError) and run there.
    threads_per_trial : kernel threads (OpenBLAS, OpenMP, numba) each trial uses (default 1: one trial per
        core, none oversubscribed).
    max_in_flight : trials submitted at once (default: the executor's workers or Dask's threads).
    trial_timeout : seconds a trial may take from submission; a late trial is reported failed (on the local
        pool its workers are stopped and restarted). None: no limit.
    sampler : an Optuna sampler for method='optuna'.
    progress : a progress bar over trials.
    trial_fn : the function each worker runs, ``trial_fn(data, trial) -> TrialResult`` (default
        :func:`train_trial`; must be importable by the workers).

    Returns
    -------
    SearchResult
        Trials best first (highest final validation accuracy; failed trials last).
    """
    if method not in ("random", "grid", "optuna"):
        raise ValueError(f"method must be 'random', 'grid' or 'optuna', got {method!r}")
    dims = _normalize_space(space)
    n_trials = _positive_int(n_trials, "n_trials")
    grid_points = _positive_int(grid_points, "grid_points")
    epochs = _positive_int(epochs, "epochs")
    threads = _positive_int(threads_per_trial, "threads_per_trial")
    if max_in_flight is not None:
        max_in_flight = _positive_int(max_in_flight, "max_in_flight")
    trial_timeout = _positive_seconds(trial_timeout, "trial_timeout")
    if connect_timeout is None:
        raise ValueError("connect_timeout must be a positive number of seconds")
    connect_timeout = _positive_seconds(connect_timeout, "connect_timeout")
    if executor is not None and scheduler is not None:
        raise ValueError("give executor or scheduler, not both")
    if n_workers is not None:
        n_workers = _positive_int(n_workers, "n_workers")
        if executor is not None or scheduler is not None:
            raise ValueError("n_workers sizes the default local pool; size your own executor or cluster")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    backend = backend or get_backend()

    # the data: checked here once, so that bad data is an error now and not N failed trials
    x = np.asarray(x_train)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"x_train must be a numeric array, got dtype {x.dtype}")
    t = np.asarray(t_train)
    if t.ndim == 2 and t.shape[1] >= 2:
        t = t.argmax(axis=1)  # one-hot -> labels
    if t.ndim != 1 or t.dtype.kind not in "iu" or (t.size and t.min() < 0):
        raise ValueError("t_train must be integer labels >= 0 (or one-hot rows)")
    (xf, tf), (xv, tv) = split_validation(x, t, val_fraction, seed)
    xf = np.ascontiguousarray(xf.reshape(xf.shape[0], -1), dtype=dt)
    xv = np.ascontiguousarray(xv.reshape(xv.shape[0], -1), dtype=dt)
    if not (np.isfinite(xf).all() and np.isfinite(xv).all()):
        raise ValueError("x_train contains NaN or Inf")
    n_classes = int(t.max()) + 1
    too_big = [b for b in (dims["batch_size"].options if "batch_size" in dims else [DEFAULTS["batch_size"]])
               if b > xf.shape[0]]
    if too_big:
        raise ValueError(f"batch size(s) {too_big} exceed the {xf.shape[0]} training samples left after "
                         f"the validation split")
    data = _TrainingData(xf, np.ascontiguousarray(tf, dtype=np.int64), xv,
                         np.ascontiguousarray(tv, dtype=np.int64), n_classes)

    def make(number: int, params: Dict[str, Any]) -> Trial:
        return Trial(number=number, seed=seed if same_seed else _trial_seed(seed, number),
                     params=_full_params(params), epochs=epochs, dtype=dt.name, backend=backend,
                     threads=threads)

    if method == "optuna":
        source: Any = _OptunaSource(dims, n_trials, make, seed, sampler)
    elif method == "grid":
        keys = list(dims)
        combos = itertools.product(*(dims[k].grid(grid_points) for k in keys))
        source = _ListSource([make(i, dict(zip(keys, c))) for i, c in enumerate(combos)])
    else:
        draws = []
        for i in range(n_trials):
            rng = np.random.default_rng([seed, i])  # trial i's draw does not depend on n_trials
            draws.append(make(i, {k: d.sample(rng) for k, d in dims.items()}))
        source = _ListSource(draws)

    t0 = time.perf_counter()
    client = None
    if scheduler is not None:
        client = _connect(scheduler, connect_timeout)
    elif executor is not None:
        client = _dask_client_of(executor)
    if client is not None:
        try:
            runner: _Runner = _DaskRunner(trial_fn, client, data, owns_client=scheduler is not None,
                                          timeout=connect_timeout)
        except BaseException:
            if scheduler is not None:
                client.close()
            raise
        if max_in_flight:
            runner.capacity = max_in_flight
    elif executor is not None:
        if not isinstance(executor, cf.Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor or a Dask Client, "
                            f"got {type(executor).__name__}")
        runner = _ExecutorRunner(trial_fn, executor, data, max_in_flight)
    else:
        runner = _LocalPool(trial_fn, n_workers or os.cpu_count() or 1, data, threads, startup_timeout=120.0)
    startup = time.perf_counter() - t0  # workers started (local pool) or data scattered (Dask)
    try:
        results = _run(runner, source, trial_timeout, progress)
        running = time.perf_counter() - t0 - startup  # first submission to last result
    finally:
        runner.close()
    settings = {"method": method, "space": {k: repr(v) for k, v in dims.items()}, "n_trials": source.total,
                "epochs": epochs, "val_fraction": val_fraction, "n_fit": int(xf.shape[0]),
                "n_val": int(xv.shape[0]), "seed": seed, "same_seed": same_seed, "dtype": dt.name,
                "backend": backend, "threads_per_trial": threads, "executor": runner.description,
                "data_mb": round(data.nbytes / 1e6, 2), "startup_s": round(startup, 3),
                "trials_s": round(running, 3)}
    return SearchResult(sorted(results, key=_sort_key), settings, time.perf_counter() - t0)


def _failed(trial: Trial, message: str, attempts: int = 1) -> TrialResult:
    return TrialResult(number=trial.number, seed=trial.seed, params=dict(trial.params), status="failed",
                       attempts=attempts, message=message)


def _is_broken_pool(exc: BaseException) -> bool:
    return isinstance(exc, cf.BrokenExecutor)  # BrokenProcessPool: a worker process died


def _run(runner: _Runner, source: Any, trial_timeout: Optional[float], progress: bool) -> List[TrialResult]:
    """Keep up to ``runner.capacity`` trials in flight until the source is exhausted; collect results.

    Worker deaths on a restartable pool: the trials in flight become suspects and rerun one at a time, so
    the one that kills its worker again is identified and failed while the others complete.
    """
    results: Dict[int, TrialResult] = {}
    in_flight: Dict[cf.Future, Tuple[Trial, float, int]] = {}  # future -> (trial, submitted at, attempt)
    retry: Deque[Tuple[Trial, int]] = deque()  # to resubmit, not suspected of anything
    suspects: Deque[Tuple[Trial, int]] = deque()  # were running when a worker died
    isolating = False
    source_done = False
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=source.total, unit="trial", desc="search", mininterval=0.5)

    def finish(result: TrialResult) -> None:
        results[result.number] = result
        source.tell(result)
        if bar is not None:
            bar.update(1)
            best = max((r.val_acc for r in results.values() if r.status != "failed" and
                        not math.isnan(r.val_acc)), default=float("nan"))
            bar.set_postfix_str(f"best val acc {best:.4f}")

    def completed(f: cf.Future, attempt: int) -> None:
        r = f.result()
        r.attempts = attempt
        if attempt > 1 and not r.message:
            r.message = f"rerun (attempt {attempt}): a worker process died while it was running or queued"
        finish(r)

    try:
        while True:
            # fill the free slots: suspects first, alone; then retries; then new trials
            while True:
                if suspects and not in_flight:
                    isolating = True
                    trial, attempt = suspects.popleft()
                elif isolating or suspects:
                    break
                elif len(in_flight) >= runner.capacity:
                    break
                elif retry:
                    trial, attempt = retry.popleft()
                elif not source_done:
                    nxt = source.next()
                    if nxt is None:
                        source_done = True
                        break
                    trial, attempt = nxt, 1
                else:
                    break
                in_flight[runner.submit(trial)] = (trial, time.monotonic(), attempt)
            if not in_flight:
                break
            wait_s = 1.0
            if trial_timeout is not None:
                first = min(s for _, s, _ in in_flight.values())
                wait_s = max(0.01, min(wait_s, first + trial_timeout - time.monotonic()))
            done, _ = cf.wait(list(in_flight), timeout=wait_s, return_when=cf.FIRST_COMPLETED)
            broken = False
            for f in done:
                trial, _, attempt = in_flight[f]
                exc = f.exception() if not f.cancelled() else cf.CancelledError()
                if exc is None:
                    del in_flight[f]
                    completed(f, attempt)
                elif _is_broken_pool(exc):
                    broken = True
                elif runner.worker_died(exc):  # Dask: only this task's worker died; the others run on
                    del in_flight[f]
                    if isolating:  # it ran alone and killed its worker again
                        finish(_failed(trial, f"its Dask worker died while running it, {attempt} times "
                                              f"(the last time running alone)", attempt))
                    else:
                        suspects.append((trial, attempt + 1))
                else:
                    del in_flight[f]
                    finish(_failed(trial, _describe(exc), attempt))
            if broken:
                crashed = []  # (trial, attempt) of those in flight that did not finish
                for f, (trial, _, attempt) in in_flight.items():
                    if f.done() and not f.cancelled() and f.exception() is None:
                        completed(f, attempt)  # finished just before the pool broke
                    else:
                        crashed.append((trial, attempt))
                in_flight.clear()
                if not runner.can_restart:
                    msg = "the executor broke (a worker process died) while this trial ran or waited"
                    for trial, attempt in crashed:
                        finish(_failed(trial, msg, attempt))
                    while True:  # nothing can run any more: report the rest, do not hang
                        nxt = retry.popleft()[0] if retry else source.next()
                        if nxt is None:
                            break
                        finish(_failed(nxt, msg + " (never started)"))
                    break
                runner.restart()
                if isolating:  # it ran alone: it is the one that kills its worker
                    for trial, attempt in crashed:
                        finish(_failed(trial, f"its worker process died while running it, {attempt} times "
                                              f"(the last time running alone)", attempt))
                    isolating = bool(suspects)
                else:
                    suspects.extend((trial, attempt + 1) for trial, attempt in crashed)
                continue
            if isolating and not in_flight and not suspects:
                isolating = False
            if trial_timeout is not None:
                now = time.monotonic()
                late = [f for f, (_, s, _) in in_flight.items() if now - s > trial_timeout]
                for f in late:
                    trial, _, attempt = in_flight.pop(f)
                    finish(_failed(trial, f"timed out after {trial_timeout:g} s", attempt))
                    if runner.abandon(f):  # the other running trials were stopped too: run them again
                        for other, _, a in in_flight.values():
                            (suspects if isolating else retry).append((other, a))
                        in_flight.clear()
                        break
                if isolating and not in_flight and not suspects:
                    isolating = False
    finally:
        if bar is not None:
            bar.close()
        for f in in_flight:
            f.cancel()
    return list(results.values())


def _describe(exc: BaseException) -> str:
    # (a Dask worker's death is not described here: runner.worker_died reruns the trial alone first)
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- results
@dataclass
class SearchResult:
    """Trials best first, the search's settings and its wall time.

    ``table()`` prints them, ``to_json``/``to_csv`` save them, ``plot`` draws the tutorials' figure.
    """

    trials: List[TrialResult]
    settings: Dict[str, Any]
    seconds: float

    @property
    def best(self) -> TrialResult:
        """The trial with the highest final validation accuracy."""
        if not self.trials or self.trials[0].status == "failed":
            raise ValueError("no trial of this search completed")
        return self.trials[0]

    @property
    def by_number(self) -> List[TrialResult]:
        """The trials in the order they were defined."""
        return sorted(self.trials, key=lambda r: r.number)

    def table(self, top: Optional[int] = None) -> str:
        """A text table, best first: rank, trial, validation and training accuracy, parameters, status."""
        keys = [k for k in SPACE_KEYS if len({_fmt(r.params.get(k)) for r in self.trials}) > 1] or ["lr"]
        head = ["rank", "trial", "val_acc", "train_acc"] + keys + ["time_s", "status"]
        rows = []
        for i, r in enumerate(self.trials[:top] if top else self.trials, start=1):
            rows.append([str(i), str(r.number), f"{r.val_acc:.4f}", f"{r.train_acc:.4f}"] +
                        [_fmt(r.params.get(k)) for k in keys] + [f"{r.seconds:.2f}",
                                                                   r.status + (f": {r.message}" if
                                                                               r.status != "ok" else "")])
        widths = [max(len(h), *(len(row[j]) for row in rows)) if rows else len(h) for j, h in enumerate(head)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able dict of the search: its settings and every trial (what ``to_json`` writes)."""
        trials = []
        for r in self.trials:
            d = asdict(r)
            d["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in r.params.items()}
            trials.append(d)
        return {"settings": self.settings, "seconds": self.seconds, "trials": trials}

    def to_json(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """The settings and every trial (curves included) as JSON; written to ``path`` when given.

        NaN is written as ``null``.
        """
        text = json.dumps(_nan_to_none(self.to_dict()), indent=1)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def to_csv(self, path: Optional[Union[str, os.PathLike]] = None) -> str:
        """One row per trial, best first (no curves); written to ``path`` when given."""
        buf = io.StringIO()
        cols = ["rank", "number", "seed", "status", "val_acc", "train_acc", "final_loss", *SPACE_KEYS,
                "seconds", "worker", "attempts", "message"]
        w = csv.writer(buf)
        w.writerow(cols)
        for i, r in enumerate(self.trials, start=1):
            w.writerow([i, r.number, r.seed, r.status, r.val_acc, r.train_acc, r.final_loss,
                        *(_fmt(r.params.get(k)) if k == "hidden" else r.params.get(k) for k in SPACE_KEYS),
                        round(r.seconds, 4), r.worker, r.attempts, r.message])
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(buf.getvalue())
        return buf.getvalue()

    def plot(self, path: Optional[Union[str, os.PathLike]] = None, top: int = 20, cols: int = 5):
        """The tutorials' figure: one panel per trial, best first, validation accuracy per epoch (solid)
        and training accuracy (dashed), titled with its rank and validation accuracy. Needs matplotlib."""
        try:
            import matplotlib
            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.ticker import MaxNLocator
        except ImportError as exc:
            raise ImportError("plotting needs matplotlib: pip install 'pyfastgrad[plot]'") from exc
        shown = [r for r in self.trials if r.val_curve][:top]
        if not shown:
            raise ValueError("no trial has a validation curve to plot")
        rows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows), squeeze=False, sharey=True)
        for ax in axes.flat[len(shown):]:
            ax.set_axis_off()
        for i, (ax, r) in enumerate(zip(axes.flat, shown), start=1):
            ep = np.arange(1, len(r.val_curve) + 1)
            ax.plot(ep, r.val_curve, "-", label="val")
            ax.plot(ep, r.train_curve, "--", label="train")
            ax.set_ylim(0, 1)
            ax.set_title(f"Best-{i} (val acc {r.val_acc:.3f})", fontsize=9)
            lr, wd = r.params.get("lr"), r.params.get("weight_decay")
            ax.text(0.03, 0.04, f"lr {_fmt(lr)}  wd {_fmt(wd)}\n{r.params.get('optimizer')} "
                    f"{_fmt(r.params.get('hidden'))} b{r.params.get('batch_size')}",
                    transform=ax.transAxes, fontsize=7)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs
        axes.flat[0].legend(fontsize=7, loc="center right")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
            plt.close(fig)
        return fig

    def __repr__(self) -> str:
        n_ok = sum(r.status == "ok" for r in self.trials)
        n_failed = sum(r.status == "failed" for r in self.trials)
        best = ""
        if self.trials and self.trials[0].status != "failed":
            b = self.trials[0]
            best = f", best val_acc={b.val_acc:.4f} (#{b.number}: " + \
                ", ".join(f"{k}={_fmt(v)}" for k, v in b.params.items()) + ")"
        return (f"SearchResult({len(self.trials)} trials: {n_ok} ok, {n_failed} failed{best}, "
                f"{self.seconds:.1f} s)")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- command line
def _cli_values(key: str, words: Optional[List[str]]) -> Any:
    """``--lr 1e-4:1e-1`` -> LogUniform; ``--lr 0.01 0.1`` -> a Choice; one value -> fixed."""
    if not words:
        return None
    if len(words) == 1 and ":" in words[0]:
        if key not in ("lr", "weight_decay"):
            raise ValueError(f"--{key.replace('_', '-')}: a range low:high fits only --lr and --weight-decay")
        low, _, high = words[0].partition(":")
        return LogUniform(float(low), float(high))
    conv = {"lr": float, "weight_decay": float, "batch_size": int, "optimizer": str, "activation": str,
            "hidden": lambda w: tuple(int(s) for s in w.split(","))}[key]
    vals = [conv(w) for w in words]
    return vals[0] if len(vals) == 1 else vals


def add_subcommand(sub: Any) -> None:
    """Register ``python -m pyfastgrad search`` on an argparse subparsers object."""
    s = sub.add_parser("search", help="hyper-parameter search (random/grid/optuna) on a validation split",
                       description="Random, grid or Optuna search over learning rate, weight decay, hidden "
                                   "sizes, optimizer and batch size on a validation split of the MNIST "
                                   "training set (the test set is never used). Ranges low:high are "
                                   "log-uniform; several values are a choice; a value is fixed.")
    s.add_argument("--method", default="random", choices=["random", "grid", "optuna"],
                   help="random draws, a grid, or Optuna's sampler (default: random)")
    s.add_argument("--trials", type=int, default=20, help="random/optuna trials (default: 20)")
    s.add_argument("--grid-points", type=int, default=3, help="grid values per range (default: 3)")
    s.add_argument("--lr", nargs="+", help="LOW:HIGH (log-uniform) or values (default: 1e-3:0.5)")
    s.add_argument("--weight-decay", nargs="+", help="LOW:HIGH or values (default: 1e-8:1e-3)")
    s.add_argument("--hidden", nargs="+", help="layer sizes per choice, e.g. 100 50,50 (default: 100)")
    s.add_argument("--optimizer", nargs="+", help="sgd momentum nesterov adagrad rmsprop adam adamw (default: sgd)")
    s.add_argument("--batch-size", nargs="+", help="batch sizes (default: 100)")
    s.add_argument("--activation", nargs="+", help="relu sigmoid tanh (default: relu)")
    s.add_argument("--epochs", type=int, default=5, help="epochs per trial (default: 5)")
    s.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the training set held out for validation (default: 0.2)")
    s.add_argument("--data", help="directory with the MNIST IDX files (default: $PYFASTGRAD_DATA, cache)")
    s.add_argument("--train-size", type=int, help="use only the first N training images (default: all)")
    s.add_argument("--workers", type=int, help="local worker processes (default: all cores)")
    s.add_argument("--threads-per-trial", type=int, default=1, help="threads each trial may use (default: 1)")
    s.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (needs [dask]) "
                                       "(default: a local process pool)")
    s.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to reach the scheduler (default: 10)")
    s.add_argument("--trial-timeout", type=float, help="seconds a trial may take (default: no limit)")
    s.add_argument("--seed", type=int, default=0, help="seed of the search and the trials (default: 0)")
    s.add_argument("--same-seed", action="store_true", help="every trial the same init and batches (default: off)")
    s.add_argument("--backend", choices=["cpp", "numba", "numpy"], help="(default: the fastest available)")
    s.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default: float32)")
    s.add_argument("--top", type=int, default=20, help="rows of the table and panels of the plot (default: 20)")
    s.add_argument("--json", help="write every trial (with curves) to this JSON file (default: none)")
    s.add_argument("--csv", help="write one row per trial to this CSV file (default: none)")
    s.add_argument("--plot", help="save the tutorials' plot of the best trials (.png, needs matplotlib) "
                                  "(default: none)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar)")
    s.set_defaults(func=_cli, parser=s)


def _cli(args: Any) -> int:
    from .datasets import load_data
    try:
        space = {k: v for k in ("lr", "weight_decay", "hidden", "optimizer", "batch_size", "activation")
                 if (v := _cli_values(k, getattr(args, k))) is not None}
        if "lr" not in space:
            space["lr"] = DEFAULT_SPACE["lr"]
        if "weight_decay" not in space:
            space["weight_decay"] = DEFAULT_SPACE["weight_decay"]
        _normalize_space(space)  # bad ranges and names: a usage error before any data is read
    except (TypeError, ValueError) as exc:
        args.parser.error(str(exc))
    (data, source) = load_data(args.data, warn=False)
    (x, t), _ = data  # the test set stays unused
    if source != "mnist":
        print("MNIST not found (--data, $PYFASTGRAD_DATA, cache dir): searching on the embedded digit set.")
    if args.train_size:
        x, t = x[: args.train_size], t[: args.train_size]
    res = hyperparameter_search(
        x, t, space, method=args.method, n_trials=args.trials, grid_points=args.grid_points, epochs=args.epochs,
        val_fraction=args.val_fraction, seed=args.seed, same_seed=args.same_seed, dtype=args.dtype,
        backend=args.backend, scheduler=args.scheduler, n_workers=None if args.scheduler else args.workers,
        threads_per_trial=args.threads_per_trial, trial_timeout=args.trial_timeout,
        connect_timeout=args.connect_timeout, progress=not args.no_progress)
    s = res.settings
    print(f"{source}: {s['n_fit']} training / {s['n_val']} validation images; {s['executor']}")
    print(res.table(top=args.top))
    print(res)
    if args.json:
        res.to_json(args.json)
        print(f"saved {args.json}")
    if args.csv:
        res.to_csv(args.csv)
        print(f"saved {args.csv}")
    if args.plot:
        try:
            res.plot(args.plot, top=args.top)
            print(f"saved plot to {args.plot}")
        except (ImportError, ValueError) as exc:
            print(f"no plot: {exc}")
    return 0 if any(r.status != "failed" for r in res.trials) else 2
