"""Mini-batch SGD training: the epoch loop runs inside the backend kernel.

``fit`` draws the batch indices in Python (numpy ``default_rng(seed)``, so every
backend sees the same batches), converts the data once, and hands whole chunks
of steps to ``Mlp.train_steps``: no return to Python per step. With the cpp or
numba backend and mostly-zero inputs (density below ``_sparse.SPARSE_DENSITY_MAX``,
e.g. MNIST) the data is converted once to rows of nonzeros (``CsrRows``) and the
kernel's first layer works on those only.
"""
from __future__ import annotations

import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import numpy as np

from ._backends import get_backend
from ._sparse import SPARSE_DENSITY_MAX, CsrRows
from ._validate import all_finite, as_batch, as_targets, check_finite, class_labels
from .nets import Net
from .optimizers import Optimizer, make_optimizer, net_layout
from .schedules import Schedule, make_schedule

__all__ = ["History", "fit", "Trainer"]


@dataclass
class History:
    """What happened during training.

    Classification fills ``train_acc``/``test_acc``; regression (``task == 'regression'``: a
    one-output MSE net, or real targets for an MSE net) fills ``train_mse``/``test_mse`` (mean of
    (y - t)^2) and ``train_r2``/``test_r2`` instead. All per epoch. The training metrics are of
    ``train_eval`` samples (all of them, or the fixed random subset ``fit(train_eval=...)`` chose).
    """

    loss: List[float] = field(default_factory=list)  # per iteration
    epoch: List[int] = field(default_factory=list)
    train_acc: List[float] = field(default_factory=list)  # per epoch
    test_acc: List[float] = field(default_factory=list)
    epoch_time: List[float] = field(default_factory=list)  # seconds in the training kernel
    stopped: Optional[str] = None  # reason for an early stop
    task: str = "classification"
    train_mse: List[float] = field(default_factory=list)
    test_mse: List[float] = field(default_factory=list)
    train_r2: List[float] = field(default_factory=list)
    test_r2: List[float] = field(default_factory=list)
    train_eval: Optional[int] = None  # training samples the train metrics are computed on

    def metrics(self) -> Dict[str, List[float]]:
        """The per-epoch metrics of the task, by name (e.g. ``{'train_acc': [...], 'test_acc': [...]}``)."""
        names = ("train_mse", "test_mse", "train_r2", "test_r2") if self.task == "regression" \
            else ("train_acc", "test_acc")
        return {n: getattr(self, n) for n in names if getattr(self, n)}

    def __repr__(self) -> str:
        last = "".join(f", {k}={v[-1]:.4f}" for k, v in self.metrics().items())
        task = ", task='regression'" if self.task == "regression" else ""
        stop = f", stopped={self.stopped!r}" if self.stopped else ""
        return f"History(iterations={len(self.loss)}, epochs={len(self.epoch)}{task}{last}{stop})"

    def plot(self, path=None):
        """Loss per iteration and accuracy per epoch (needs matplotlib: ``pip install pyfastgrad[plot]``)."""
        try:
            import matplotlib
            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("plotting needs matplotlib: pip install 'pyfastgrad[plot]'") from exc
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        ax1.plot(self.loss, lw=0.6)
        ax1.set(xlabel="iteration", ylabel="loss", title="training loss", yscale="log")
        if self.task == "regression":
            for name, style in (("train_mse", "o-"), ("test_mse", "s--")):
                if getattr(self, name):
                    ax2.plot(self.epoch, getattr(self, name), style, label=name[:-4])
            ax2.set(xlabel="epoch", ylabel="MSE", title="mean squared error", yscale="log")
        else:
            if self.train_acc:
                ax2.plot(self.epoch, self.train_acc, "o-", label="train")
            if self.test_acc:
                ax2.plot(self.epoch, self.test_acc, "s--", label="test")
            accs = [a for a in self.train_acc + self.test_acc if a == a]  # drop NaN
            low = max(0.0, min(accs) - 0.02) if accs else 0.0  # zoom in: the interesting part is near 1
            ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(low, 1))
        ax2.grid(alpha=0.3)
        ax2.legend(loc="lower right")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
            plt.close(fig)
        return fig


def _batches(rng: np.random.Generator, n: int, batch_size: int, steps: int, sampling: str) -> np.ndarray:
    if sampling == "random":  # the tutorials: np.random.choice(train_size, batch_size) each iteration
        return rng.integers(0, n, size=(steps, batch_size), dtype=np.int64)
    perm = rng.permutation(n).astype(np.int64)  # shuffled epoch, remainder dropped
    return perm[: steps * batch_size].reshape(steps, batch_size)


def _training_input(X: np.ndarray, backend: str):
    """What the training kernel gets: X itself, or (cpp and numba backends, mostly zeros) its nonzeros by
    row, which the kernel's first layer uses instead of dense products (same results up to rounding)."""
    if backend not in ("cpp", "numba") or X.size == 0:
        return X
    sample = X[:: max(1, X.shape[0] // 2000)]  # a few thousand rows tell the density well enough
    if np.count_nonzero(sample) >= SPARSE_DENSITY_MAX * sample.size:
        return X
    return CsrRows.from_dense(X, backend)


# Most multiply-adds one kernel call (a chunk of steps) may do: about a second of work at worst on a
# slow core, so Ctrl-C is honoured soon (checked between calls). Fixed, not timed, so the chunking --
# and the numbers -- do not depend on the machine's speed. MNIST's 784-100-10 at batch 100: 250 steps.
MAX_CHUNK_WORK = 2e9


def _csr_accuracy(mlp, net: Net, X: CsrRows, keep: np.ndarray, labels: np.ndarray):
    """Accuracy of the rows ``keep`` of the CSR training set, as ``net._accuracy_of`` of their dense copy."""
    rows = np.ascontiguousarray(keep, dtype=np.int64)

    def accuracy() -> float:
        right = 0
        for i in range(0, rows.size, 10000):  # bounded memory
            scores = mlp.predict_rows(net.theta, X, rows[i:i + 10000])
            right += int(np.count_nonzero(scores.argmax(axis=1) == labels[i:i + 10000]))
        return right / rows.size

    return accuracy


def _all_finite(a: np.ndarray, backend=None) -> bool:
    return all_finite(a, backend)  # the backend's scan (cpp: no temporary array)


def _int_arg(value, name: str, low: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)) \
            or not np.isfinite(value) or value != int(value):  # 3 and 3.0 are fine, 2.5 is not
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


class _DeferredInterrupt:
    """While active (main thread only), Ctrl-C sets ``hit`` instead of raising wherever the
    interpreter happens to be; ``fit`` checks it between kernel calls, where the net, the optimizer's
    state and its update count agree, and raises there."""

    def __init__(self) -> None:
        self.hit = False
        self._old = None

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def __enter__(self) -> "_DeferredInterrupt":
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _interrupted(hist: "History", optimizer: Optimizer) -> KeyboardInterrupt:
    hist.stopped = (f"interrupted (KeyboardInterrupt) after {len(hist.loss)} iterations; the net and the "
                    f"optimizer (iter {optimizer.iter}) are consistent")
    exc = KeyboardInterrupt(hist.stopped + "; the History so far is this exception's .history")
    exc.history = hist  # type: ignore[attr-defined]
    return exc


def fit(net: Net, x_train, t_train, x_test=None, t_test=None, optimizer: Union[str, Optimizer] = "sgd",
        lr: Optional[float] = None, epochs: int = 10, batch_size: int = 100, sampling: str = "epoch",
        iters_per_epoch: Optional[int] = None, seed: Optional[int] = 0, progress: bool = True,
        verbose: bool = False, chunk: int = 100, schedule: Union[str, Schedule, None] = None,
        clip: Optional[float] = None, callback=None, train_eval: Optional[int] = 10000) -> History:
    """Train ``net`` with mini-batch SGD (or another optimizer).

    Parameters
    ----------
    net : Net
    x_train, t_train : training data, labels or one-hot targets.
    x_test, t_test : optional test set, evaluated after every epoch.
    optimizer : name ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam') or an Optimizer.
    lr : learning rate (when ``optimizer`` is a name; default: the optimizer's own).
    epochs : number of epochs; an epoch is ``N // batch_size`` steps (or ``iters_per_epoch``).
    sampling : 'epoch' (shuffle, each sample once per epoch) or 'random' (the tutorials' draws
        with replacement).
    seed : seeds the batch order; same seed -> same batches on every backend.
    progress : show a tqdm progress bar.
    schedule : sets ``optimizer.schedule`` (None keeps the optimizer's own): a
        :mod:`pyfastgrad.schedules` object or a text, 'step:SIZE[:GAMMA]', 'cosine[:MIN]',
        'warmup:STEPS[+cosine[:MIN]]', 'none'; a text's cosine ends at this call's last update.
    clip : sets ``optimizer.clip``: clip each step's gradient to this global norm (None keeps it).

    The optimizer's state, update count, hyper-parameters, schedule and clipping are those of
    ``update``/``train_step``: the steps run inside the backend kernel, one learning rate per step.
    callback : optional ``callback(epoch, history)``, called after each epoch's accuracies; a truthy
        return stops training (``history.stopped`` is the returned string, or says the callback stopped it).
    chunk : steps per kernel call (>= 1); also capped so one call does at most ``MAX_CHUNK_WORK``
        multiply-adds.
    train_eval : training samples the per-epoch training accuracy (or MSE/R²) is measured on: a
        fixed random subset of this many (drawn once from ``seed``), or all of them for None or a
        number >= N; 0 skips them (``train_acc`` stays empty). The default 10,000 estimates MNIST's
        training accuracy to about ±0.2% and keeps the per-epoch evaluation a small part of the
        epoch (all 60,000 would cost ~40% of it); the
        tutorials' ``Trainer`` has the same option (``evaluate_sample_num_per_epoch``). The test set
        is always evaluated whole.

    Returns
    -------
    History
        Accuracy per epoch, or MSE and R² for a regression (``history.task``). Stops cleanly
        (``history.stopped`` says why, with a warning) on a non-finite loss, keeping the last
        parameters (and optimizer state) that were all finite.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C (main thread): raised between kernel calls, so ``net.theta``, the optimizer's
        state and ``optimizer.iter`` agree (training can go on from there); the History so far
        is the exception's ``history`` attribute.
    """
    if not isinstance(net, Net):
        raise TypeError(f"net must be a pyfastgrad Net, got {type(net).__name__}")
    if sampling not in ("epoch", "random"):
        raise ValueError(f"sampling must be 'epoch' or 'random', got {sampling!r}")
    epochs = _int_arg(epochs, "epochs")
    chunk = _int_arg(chunk, "chunk")
    if (x_test is None) != (t_test is None):
        raise ValueError("give both x_test and t_test (or neither); got only "
                         + ("x_test" if t_test is None else "t_test"))
    if isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, **({} if lr is None else {"lr": lr}))
    elif not isinstance(optimizer, Optimizer):
        raise TypeError("optimizer must be a name or a pyfastgrad Optimizer")
    X = as_batch(x_train, net.sizes[0], net.dtype, "x_train", finite=False)  # checked below, on the CSR copy
    T = as_targets(t_train, X.shape[0], net.sizes[-1], net.dtype, "t_train", values=net.loss_name == "mse")
    n = X.shape[0]
    batch_size = _int_arg(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n} samples)")
    steps = n // batch_size if iters_per_epoch is None else _int_arg(iters_per_epoch, "iters_per_epoch")
    if sampling == "epoch" and steps * batch_size > n:
        raise ValueError(f"{steps} steps of {batch_size} need {steps * batch_size} samples per epoch, have {n}")
    has_test = x_test is not None and t_test is not None
    Xt = lt = None
    if has_test:
        Xt = as_batch(x_test, net.sizes[0], net.dtype, "x_test")
    regression = net.is_regression_target(t_train)
    if has_test:
        if regression:
            lt = as_targets(t_test, Xt.shape[0], net.sizes[-1], net.dtype, "t_test", values=True)
        else:
            lt = class_labels(t_test, Xt.shape[0], net._label_classes(), "t_test", "test samples")
    lt_train = T if regression else class_labels(t_train, n, net._label_classes(), "t_train")
    if train_eval is not None:
        train_eval = _int_arg(train_eval, "train_eval", low=0)
    keep = None
    if train_eval is not None and train_eval < n:  # a fixed subset, the same on every backend
        keep = np.sort(np.random.default_rng(seed).choice(n, train_eval, replace=False))
    chunk = max(1, min(chunk, int(MAX_CHUNK_WORK // (batch_size * net.theta.size))))
    if schedule is not None:
        optimizer.schedule = make_schedule(schedule, optimizer.iter + epochs * steps)
    if clip is not None:
        optimizer.clip = clip

    rng = np.random.default_rng(seed)
    mlp = net._mlp()
    X_train = _training_input(X, net.backend or get_backend())
    # NaN and Inf are nonzeros: the CSR copy holds all of them, in a fifth of MNIST's bytes (-15 ms a fit)
    check_finite(X_train.data if isinstance(X_train, CsrRows) else X, "x_train", net.backend)
    X_eval, lt_eval = X, lt_train
    eval_train = None  # the training metric's own way, else net._accuracy_of(X_eval, lt_eval)
    if keep is not None:
        lt_eval = lt_train[keep]
        if (isinstance(X_train, CsrRows) and hasattr(mlp, "predict_rows") and not regression
                and type(net)._accuracy_of is Net._accuracy_of):
            X_eval = X_train  # the subset's nonzeros straight from the CSR: no dense copy of the rows
            eval_train = _csr_accuracy(mlp, net, X_train, keep, lt_eval)
        else:
            X_eval = X[keep]
    st = optimizer.state(net_layout(net), net.dtype, net.theta.size)
    empty = st[:0, :0].reshape(0)
    s1 = st[0] if optimizer.n_states >= 1 else empty
    s2 = st[1] if optimizer.n_states >= 2 else empty
    hist = History(task="regression" if regression else "classification",
                   train_eval=n if keep is None else keep.size)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs * steps, unit="step", desc=f"fit [{net.backend or get_backend()}]",
                   leave=True, mininterval=0.5)
    def run(part: np.ndarray) -> np.ndarray:
        # hyper-parameters read now: changes between fit calls (or epochs) take effect
        return mlp.train_steps(net.theta, X_train, T, part, net.weight_decay, optimizer.kind,
                               optimizer.hyper, s1, s2, optimizer.iter, optimizer.lrs(len(part)))

    def finite_state() -> bool:
        return _all_finite(net.theta, net.backend) and _all_finite(st, net.backend)

    intr = _DeferredInterrupt()
    try:
        with intr:
            for ep in range(1, epochs + 1):
                idx = _batches(rng, n, batch_size, steps, sampling)
                t0 = time.perf_counter()
                for start in range(0, steps, chunk):
                    if intr.hit:
                        raise _interrupted(hist, optimizer)
                    part = idx[start:start + chunk]
                    saved = (net.theta.copy(), st.copy(), optimizer.iter)  # the chunk's start, for a rollback
                    losses = run(part)
                    done = int(np.isfinite(losses).sum())
                    bad_update = False
                    if not finite_state():
                        # A finite loss can still come with an update that overflowed: redo the chunk
                        # one step at a time from its start and stop before the first such update.
                        net.theta[...], st[...], optimizer.iter = saved
                        done = 0
                        while done < len(part):
                            keep = (net.theta.copy(), st.copy())
                            one = run(part[done:done + 1])
                            if not (np.isfinite(one[0]) and finite_state()):
                                bad_update = bool(np.isfinite(one[0]))
                                net.theta[...], st[...] = keep
                                break
                            losses[done] = one[0]
                            optimizer.iter += 1
                            done += 1
                        optimizer.iter -= done  # counted once, below
                    optimizer.iter += done
                    hist.loss.extend(losses[:done].tolist())
                    if bar is not None:
                        bar.update(done)
                    if done < len(part):
                        what = "non-finite parameters after the update of" if bad_update else "non-finite loss at"
                        hist.stopped = (f"{what} iteration {len(hist.loss) + 1} (epoch {ep}); the parameters and "
                                        f"optimizer state are those after the last finite step "
                                        f"(iteration {len(hist.loss)}). Try a smaller learning rate "
                                        f"(now {optimizer.lr:g}).")
                        break
                hist.epoch_time.append(time.perf_counter() - t0)
                if hist.stopped:
                    warnings.warn(hist.stopped, RuntimeWarning, stacklevel=2)
                    break
                hist.epoch.append(ep)
                # (X, Xt checked once, above)
                parts = ((("train", X_eval, lt_eval),) if hist.train_eval else ()) + \
                    ((("test", Xt, lt),) if has_test else ())
                scores = []
                if regression:
                    for part_name, xs, ts in parts:
                        m = net._regression_metrics_of(xs, ts)
                        getattr(hist, f"{part_name}_mse").append(m["mse"])
                        getattr(hist, f"{part_name}_r2").append(m["r2"])
                        scores.append(f"{part_name} mse {m['mse']:.4g}  r2 {m['r2']:.4f}")
                    short = f" test mse {hist.test_mse[-1]:.4g}" if has_test else ""
                else:
                    for part_name, xs, ts in parts:
                        acc = eval_train() if part_name == "train" and eval_train else net._accuracy_of(xs, ts)
                        getattr(hist, f"{part_name}_acc").append(acc)
                        scores.append(f"{part_name} acc {acc:.4f}")
                    short = f" test {hist.test_acc[-1]:.4f}" if has_test else ""
                scores = "  ".join(scores)
                msg = (f"epoch {ep:3d}  loss {np.mean(hist.loss[-steps:]):.4f}  {scores}  "
                       f"({hist.epoch_time[-1]:.2f} s)")
                if bar is not None:
                    bar.set_postfix_str(f"loss {np.mean(hist.loss[-steps:]):.3f}" + short)
                if verbose:
                    (bar.write if bar is not None else print)(msg)
                if callback is not None:
                    stop = callback(ep, hist)
                    if stop:
                        hist.stopped = stop if isinstance(stop, str) else \
                            f"stopped by the callback after epoch {ep}"
                        break
                if intr.hit:
                    raise _interrupted(hist, optimizer)
    finally:
        if bar is not None:
            bar.close()
    return hist


class Trainer:
    """Object form of :func:`fit` (keeps the optimizer and history across calls).

    Also the tutorials' Trainer, recognised by its second argument being the training data:
    ``Trainer(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
    optimizer='SGD', optimizer_param={'lr': 0.01}, evaluate_sample_num_per_epoch=None, verbose=True)``,
    then ``train()``; ``train_loss_list`` (per iteration), ``train_acc_list`` and ``test_acc_list``
    (per epoch). A pyfastgrad net trains through :func:`fit` (batches drawn with replacement, as the
    tutorials; the loss recorded is the step's, before its update); any other net with the tutorials'
    ``gradient``/``loss``/``accuracy``/``params`` through the tutorials' own loop.
    """

    def __init__(self, net, *args, **kwargs) -> None:
        self.net = self.network = net
        if (args and not isinstance(args[0], (str, Optimizer))) or "x_train" in kwargs:
            self._tutorial_init(*args, **kwargs)
            return
        self._own_init(*args, **kwargs)

    def _own_init(self, optimizer: Union[str, Optimizer] = "sgd", lr: Optional[float] = None,
                  batch_size: int = 100, sampling: str = "epoch", seed: Optional[int] = 0,
                  progress: bool = True, verbose: bool = False) -> None:
        self.tutorial = False
        self.optimizer = make_optimizer(optimizer, **({} if lr is None else {"lr": lr})) \
            if isinstance(optimizer, str) else optimizer
        self.batch_size, self.sampling, self.seed = batch_size, sampling, seed
        self.progress, self.verbose = progress, verbose
        self.history = History()

    def _tutorial_init(self, x_train, t_train, x_test, t_test, epochs: int = 20, mini_batch_size: int = 100,
                       optimizer: Union[str, Optimizer] = "SGD", optimizer_param: Optional[dict] = None,
                       evaluate_sample_num_per_epoch: Optional[int] = None, verbose: bool = True,
                       seed: Optional[int] = None) -> None:
        self.tutorial = True
        self.x_train, self.t_train, self.x_test, self.t_test = x_train, t_train, x_test, t_test
        self.epochs, self.batch_size = int(epochs), int(mini_batch_size)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and mini_batch_size must be >= 1, got {epochs} and {mini_batch_size}")
        param = dict({"lr": 0.01} if optimizer_param is None else optimizer_param)
        if isinstance(optimizer, str):
            name = {"rmsprpo": "rmsprop"}.get(optimizer.lower(), optimizer.lower())  # the tutorials' typo
            self.optimizer = make_optimizer(name, **param)
        elif isinstance(optimizer, Optimizer):
            self.optimizer = optimizer
        else:
            raise TypeError("optimizer must be a name ('SGD', 'Momentum', ...) or a pyfastgrad Optimizer")
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose, self.seed = verbose, seed
        self.train_size = int(np.asarray(x_train).shape[0])
        self.iter_per_epoch = max(self.train_size // self.batch_size, 1)
        self.max_iter = self.epochs * self.iter_per_epoch
        self.current_iter = self.current_epoch = 0
        self.train_loss_list: List[float] = []
        self.train_acc_list: List[float] = []
        self.test_acc_list: List[float] = []

    def _evaluate(self) -> None:
        n = self.evaluate_sample_num_per_epoch
        xs, ts, xt, tt = self.x_train, self.t_train, self.x_test, self.t_test
        if n is not None:
            xs, ts, xt, tt = xs[:n], ts[:n], xt[:n], tt[:n]
        self.current_epoch += 1
        self.train_acc_list.append(float(self.network.accuracy(xs, ts)))
        self.test_acc_list.append(float(self.network.accuracy(xt, tt)))
        if self.verbose:
            print(f"=== epoch:{self.current_epoch}, train acc:{self.train_acc_list[-1]}, "
                  f"test acc:{self.test_acc_list[-1]} ===")

    def train(self) -> None:
        """The tutorials' ``train()``: ``epochs`` epochs of ``train_size // mini_batch_size`` steps,
        accuracies after each epoch, the final test accuracy printed when verbose."""
        if not getattr(self, "tutorial", False):
            raise TypeError("train() belongs to the tutorials' form Trainer(network, x_train, t_train, x_test, "
                            "t_test, ...); use fit(x_train, t_train, ...) here")
        if isinstance(self.network, Net):
            def cb(ep, hist):
                self._evaluate()
            h = fit(self.network, self.x_train, self.t_train, optimizer=self.optimizer, epochs=self.epochs,
                    batch_size=self.batch_size, sampling="random", iters_per_epoch=self.iter_per_epoch,
                    seed=self.seed, progress=False, callback=cb, train_eval=0)  # (cb evaluates, as the book)
            self.train_loss_list += h.loss
            self.current_iter += len(h.loss)
            if h.stopped:
                return
        else:  # the tutorials' loop, for nets that are not pyfastgrad's
            rng = np.random.default_rng(self.seed)
            for _ in range(self.max_iter):
                mask = rng.choice(self.train_size, self.batch_size)
                xb, tb = self.x_train[mask], self.t_train[mask]
                grads = self.network.gradient(xb, tb)
                self.optimizer.update(self.network.params, grads)
                self.train_loss_list.append(float(self.network.loss(xb, tb)))
                self.current_iter += 1
                if self.current_iter % self.iter_per_epoch == 0:
                    self._evaluate()
        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print(f"test acc:{self.network.accuracy(self.x_test, self.t_test)}")

    def fit(self, x_train, t_train, x_test=None, t_test=None, epochs: int = 10) -> History:
        """:func:`fit` for ``epochs`` more epochs; returns the whole history. On Ctrl-C the steps done
        are in ``self.history`` too (and the raised KeyboardInterrupt's ``history`` is it)."""
        try:
            h = fit(self.net, x_train, t_train, x_test, t_test, optimizer=self.optimizer, epochs=epochs,
                    batch_size=self.batch_size, sampling=self.sampling, seed=self.seed,
                    progress=self.progress, verbose=self.verbose)
        except KeyboardInterrupt as exc:
            if isinstance(getattr(exc, "history", None), History):
                exc.history = self._merge(exc.history)
            raise
        return self._merge(h)

    def _merge(self, h: History) -> History:
        offset = len(self.history.epoch)
        self.history.task = h.task
        self.history.loss += h.loss
        self.history.epoch += [e + offset for e in h.epoch]
        for name in ("train_acc", "test_acc", "train_mse", "test_mse", "train_r2", "test_r2"):
            mine, new = getattr(self.history, name), getattr(h, name)
            if new or mine:  # keep epochs aligned: NaN for epochs without this metric
                mine += [float("nan")] * (offset - len(mine))
                mine += new or [float("nan")] * len(h.epoch)
        self.history.epoch_time += h.epoch_time
        self.history.stopped = h.stopped
        return self.history

    def __repr__(self) -> str:
        extra = f", epochs={self.epochs}, tutorial=True" if getattr(self, "tutorial", False) else ""
        return f"Trainer(net={self.net!r}, optimizer={self.optimizer!r}, batch_size={self.batch_size}{extra})"
