"""Command line: ``pyfastgrad train|eval|info|bench`` (or ``python -m pyfastgrad ...``).

Exit status: 0 success; 1 a file, data or extension problem (the message says what to do);
2 bad arguments; 3 training diverged (non-finite loss, or accuracy at chance after an epoch).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from pyfastgrad import spec

# Learning rates that train 784-100-10 well in a few epochs of batch 100 (sgd 0.1 is the tutorials').
_TUNED_LR = {"sgd": 0.1, "momentum": 0.1, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 0.001,
             "adam": 0.001, "adamw": 0.001}
DEFAULT_LR = {o.name: _TUNED_LR.get(o.name, o.lr) for o in spec.OPTIMIZERS}  # others: the class's default
# The default recipe: 784-100-10 ReLU, He init, Momentum(lr 0.1, 0.9) on a cosine schedule, batch 100,
# 4 epochs, float32 -> 97.69 / 97.60 / 97.67 % MNIST test accuracy for seeds 0 / 1 / 2 (seeds 3-9:
# 97.62-97.87 %), >= 97.5 % after epoch 3 for 9 of the 10 (see README). The old constant-rate recipe
# (lr 0.05, 10 epochs) reached 97.7-97.9 % in 2.5x the time.
DEFAULT_OPTIMIZER = "momentum"
DEFAULT_HIDDEN = [100]
DEFAULT_EPOCHS = 4
DEFAULT_BATCH = 100
DEFAULT_SCHEDULE = "cosine"
OPTIMIZERS = list(DEFAULT_LR)

EXIT_FAIL, EXIT_USAGE, EXIT_DIVERGED = 1, 2, 3


class CliError(Exception):
    """A problem the user can fix; printed as one ``prog: error: ...`` line (exit status 1)."""


# ---------------------------------------------------------------------------------- argument types
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _hidden_size(text: str) -> int:
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"invalid hidden layer size {text!r}: give positive integers, e.g. --hidden 100 or "
            "--hidden 100 50 for two layers") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _weight_init(text: str):
    from pyfastgrad.nets import WEIGHT_INITS
    if text.strip().lower() in WEIGHT_INITS:
        return text.strip().lower()
    try:
        return _positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(WEIGHT_INITS)} or a positive number, got {text!r}") from None


# ---------------------------------------------------------------------------------- shared steps
def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def _set_up_backend(args: argparse.Namespace) -> str:
    """Select the backend; fail (CliError) where a source tree shadows an unusable installed copy."""
    import pyfastgrad as pfg
    from pyfastgrad import _extension

    if args.threads is not None:
        pfg.set_num_threads(args.threads)
    status = pfg.backends()
    if args.backend:
        if status[args.backend] != "available":
            raise CliError(f"backend {args.backend!r} is {status[args.backend]}")
        pfg.set_backend(args.backend)
        return args.backend
    if status["cpp"] != "available" and _extension.shadow_problem():
        raise CliError(_extension.shadow_problem())
    with warnings.catch_warnings():  # said below, in one line of our own
        warnings.simplefilter("ignore", RuntimeWarning)
        name = pfg.get_backend()
    if name != "cpp" and not os.environ.get("PYFASTGRAD_BACKEND"):
        _say(f"note: the C++ backend is {status['cpp']}; running on {name}")
    return name


def _threads_text(backend: str) -> str:
    import pyfastgrad as pfg
    n = pfg.get_num_threads()
    if backend == "cpp":
        return f"threads {n['blas']} OpenBLAS / {n['openmp']} OpenMP"
    if backend == "numba":
        return f"threads {n['numba']} numba"
    return "threads: numpy's BLAS"


def _load(args: argparse.Namespace, dtype):
    """(data, source) for --data / $PYFASTGRAD_DATA / the cache / a download / the shipped subset."""
    from pyfastgrad.datasets import DownloadError, load_data

    try:
        data, source = load_data(args.data, download=not args.offline, warn=False, dtype=dtype)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, DownloadError) as exc:  # a corrupt file: never replaced silently
        raise CliError(str(exc).splitlines()[0]) from None
    return data, source


def _check_output(path: Optional[str], what: str) -> None:
    if path is None:
        return
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise CliError(f"{what} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CliError(f"{what} {path}: directory {parent} is not writable")


def _load_net(path: str, with_optimizer: bool = False):
    import zipfile

    import pyfastgrad as pfg

    if not Path(path).is_file():
        raise CliError(f"no saved net at {path}")
    try:
        return pfg.load_net(path, with_optimizer=with_optimizer)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CliError(f"cannot read a saved net from {path}: {type(exc).__name__}: {exc}") from None


def _divergence_check(labels: np.ndarray, lr: float) -> Callable:
    """fit callback: stop when training accuracy is at chance after an epoch and the loss blew up
    on the way (a slow but sane start, loss creeping down from log(10), is not stopped)."""
    majority = float(np.bincount(np.asarray(labels, dtype=np.int64)).max()) / max(len(labels), 1)

    def check(epoch: int, hist) -> Optional[str]:
        if not hist.train_acc:
            return None
        acc = hist.train_acc[-1]
        if acc <= majority + 0.02 and hist.loss and max(hist.loss) > 1.5 * hist.loss[0]:
            return (f"diverged: training accuracy {acc:.4f} is at chance (the most common label is "
                    f"{majority:.4f} of the data) after epoch {epoch}, and the loss rose from "
                    f"{hist.loss[0]:.3g} to {max(hist.loss):.3g}. Try a smaller --lr (now {lr:g}).")
        return None

    return check


# ---------------------------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> int:
    import pyfastgrad as pfg

    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise CliError("--plot needs matplotlib: pip install 'pyfastgrad[plot]' (or leave out --plot)")
    _check_output(args.save, "--save")
    _check_output(args.plot, "--plot")
    opt = None
    if args.resume:
        net, opt = _load_net(args.resume, with_optimizer=True)
        _check_resume(args, net)
        dtype = net.dtype.type
    else:
        dtype = np.float32 if (args.dtype or "float32") == "float32" else np.float64
    backend = _set_up_backend(args)
    (x_train, t_train), (x_test, t_test), source = _data_for(args, dtype)
    print(f"pyfastgrad {pfg.__version__}: backend {backend}, data {source}, {_threads_text(backend)}",
          flush=True)
    if source.note:
        _say(f"note: {source.note}")
    if args.batch_size > len(x_train):
        raise CliError(f"--batch-size {args.batch_size} is larger than the training set ({len(x_train)} images)")
    if args.resume:
        if args.weight_decay is not None:
            net.weight_decay = args.weight_decay
        kind = args.optimizer or (opt.kind if opt is not None else DEFAULT_OPTIMIZER)
        if opt is None or kind != opt.kind or args.lr is not None:
            opt = pfg.make_optimizer(kind, lr=args.lr if args.lr is not None else DEFAULT_LR[kind],
                                     style=args.style, clip=args.clip)
            resumed = "optimizer state not restored: new optimizer"
        else:
            resumed = "optimizer state restored"
        print(f"resumed {args.resume}: {net}; {resumed}")
    else:
        hidden = args.hidden or DEFAULT_HIDDEN
        net = pfg.MultiLayerNet(x_train.shape[1], hidden, 10, activation=args.activation or "relu",
                                weight_init=args.weight_init, weight_decay=args.weight_decay or 0.0,
                                dtype=dtype, seed=args.seed)
        print(net)
        kind = args.optimizer or DEFAULT_OPTIMIZER
        opt = pfg.make_optimizer(kind, lr=args.lr if args.lr is not None else DEFAULT_LR[kind],
                                     style=args.style, clip=args.clip)
    schedule = args.schedule or (None if args.resume else DEFAULT_SCHEDULE)
    if schedule and schedule != "none":
        sched_text = f"{schedule} schedule"
    else:
        sched_text = "the saved schedule" if schedule is None and opt.schedule is not None else "constant lr"
    print(f"optimizer: {opt}, {sched_text}, batch size {args.batch_size}, {args.epochs} epochs", flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # fit warns on a non-finite loss; reported below, with the exit status
        warnings.simplefilter("ignore", RuntimeWarning)
        hist = pfg.fit(net, x_train, t_train, x_test, t_test, optimizer=opt, epochs=args.epochs,
                       batch_size=args.batch_size, sampling=args.sampling, seed=args.seed,
                       progress=not args.no_progress, verbose=True,
                       schedule=schedule,
                       callback=_divergence_check(t_train, opt.lr))
    total = time.perf_counter() - t0
    if hist.test_acc:
        print(f"final: test accuracy {hist.test_acc[-1]:.4f}, train accuracy {hist.train_acc[-1]:.4f} "
              f"({hist.train_eval:,} training images); "
              f"{total:.1f} s total, {np.mean(hist.epoch_time):.3f} s per epoch in the training loop")
    if hist.stopped:
        _say(f"error: training stopped: {hist.stopped}")
        return EXIT_DIVERGED
    if args.save:
        net.save(args.save, optimizer=opt)
        print(f"saved net to {args.save}")
    if args.plot:
        hist.plot(args.plot)
        print(f"saved plot to {args.plot}")
    return 0


def _check_resume(args: argparse.Namespace, net) -> None:
    """Options that describe a new net must agree with the resumed one (or be left out)."""
    if args.hidden is not None and list(args.hidden) != net.sizes[1:-1]:
        raise CliError(f"--hidden {' '.join(map(str, args.hidden))} does not match the net in "
                       f"{args.resume} (hidden sizes {net.sizes[1:-1]}); leave it out to resume")
    if args.activation is not None and args.activation != net.activation:
        raise CliError(f"--activation {args.activation} does not match the net in {args.resume} "
                       f"({net.activation}); leave it out to resume")
    if args.dtype is not None and args.dtype != net.dtype.name:
        raise CliError(f"--dtype {args.dtype} does not match the net in {args.resume} ({net.dtype.name})")
    if args.weight_init is not None and args.weight_init != "auto":
        raise CliError("--weight-init has no effect with --resume (the saved weights are used); leave it out")


def _data_for(args: argparse.Namespace, dtype):
    data, source = _load(args, dtype)
    (x_train, t_train), (x_test, t_test) = data
    if getattr(args, "train_size", None):
        x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]
    return (x_train, t_train), (x_test, t_test), source


def _eval(args: argparse.Namespace) -> int:
    import pyfastgrad as pfg

    net = _load_net(args.net)
    backend = _set_up_backend(args)
    data, source = _load(args, net.dtype.type)
    (x_train, t_train), (x_test, t_test) = data
    print(f"pyfastgrad {pfg.__version__}: backend {backend}, data {source}, {_threads_text(backend)}")
    if source.note:
        _say(f"note: {source.note}")
    if net.sizes[0] != x_test.shape[1] or net.sizes[-1] != 10:
        raise CliError(f"the net in {args.net} has sizes {net.sizes}; MNIST needs 784 inputs and 10 outputs")
    print(f"net: {net}")
    acc = net.accuracy(x_test, t_test)
    loss = float(np.mean([net.loss(x_test[i:i + 1000], t_test[i:i + 1000]) for i in range(0, len(x_test), 1000)]))
    print(f"test accuracy {acc:.4f} ({round(acc * len(x_test)):,} / {len(x_test):,}), test loss {loss:.4f}")
    if args.train:
        print(f"train accuracy {net.accuracy(x_train, t_train):.4f}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import pyfastgrad as pfg
    from pyfastgrad import _extension
    from pyfastgrad.datasets import default_cache_dir, find_mnist_dir

    if args.threads is not None:
        pfg.set_num_threads(args.threads)
    print(f"pyfastgrad {pfg.__version__} ({Path(pfg.__file__).parent})")
    status = pfg.backends()
    for name, state in status.items():
        print(f"  {name:6s} {state}")
    if _extension.core_origin():
        print(f"  (the C++ extension is the installed copy's: {_extension.core_origin()})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        print(f"  current: {pfg.get_backend()}")
    if status["cpp"] == "available":
        from pyfastgrad._backends import kernels
        print(f"  BLAS: {kernels('cpp').blas_info()['config']}")
    n = pfg.get_num_threads()
    pools = ", ".join(f"{n[k]} {label}" for k, label in (("blas", "OpenBLAS"), ("openmp", "OpenMP"), ("numba", "numba"))
                      if n[k] is not None)
    print(f"threads: {pools} ({os.cpu_count()} CPUs; limit with --threads N or pyfastgrad.set_num_threads(n))")
    found = find_mnist_dir()
    print(f"MNIST: {found if found else 'not found'} (user cache: {default_cache_dir()}"
          + (f"; PYFASTGRAD_DATA={os.environ['PYFASTGRAD_DATA']}" if os.environ.get("PYFASTGRAD_DATA") else "") + ")")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pyfastgrad import bench
    return bench.main(args)


# ---------------------------------------------------------------------------------- parser
def _default_prog() -> str:
    return "python -m pyfastgrad" if os.path.basename(sys.argv[0] or "") == "__main__.py" else "pyfastgrad"


def _schedule_text(text: str) -> str:
    from pyfastgrad.schedules import make_schedule
    try:
        make_schedule(text, total_steps=2)  # the syntax only; fit sets the length
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    from pyfastgrad import __version__

    prog = prog or _default_prog()
    p = argparse.ArgumentParser(
        prog=prog, description="pyfastgrad: neural networks from scratch, the tutorials' way, fast.",
        epilog="exit status: 0 ok, 1 file/data/extension problem, 2 bad arguments, 3 training diverged")
    p.add_argument("--version", action="version", version=f"pyfastgrad {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval,info,bench,search}")

    def common(q: argparse.ArgumentParser, data: bool = True) -> None:
        q.add_argument("--backend", choices=["cpp", "numba", "numpy"],
                       help="kernels to run on (default: cpp when the C++ extension loads, else numba)")
        q.add_argument("--threads", type=_positive_int, metavar="N",
                       help="limit OpenBLAS, OpenMP and numba to N threads each (default: all cores)")
        if data:
            q.add_argument("--data", metavar="DIR",
                           help="directory with the four MNIST IDX files, used as is: an error if they are "
                                "missing (default: $PYFASTGRAD_DATA, else the user cache, downloading MNIST "
                                "into it when missing)")
            q.add_argument("--offline", action="store_true",
                           help="never download; without MNIST on disk use the MNIST subset shipped with "
                                "pyfastgrad (default: download when missing; also $PYFASTGRAD_OFFLINE=1)")

    lr_defaults = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    t = sub.add_parser("train", help="train a net on MNIST with mini-batch SGD (default: 97.5%% in 3-4 epochs)",
                       description="Train an MLP on MNIST. The defaults (784-100-10 ReLU, He init, Momentum "
                                   "lr 0.1 on a cosine schedule, batch 100, 4 epochs, float32) reach about "
                                   "97.7% test accuracy.")
    t.add_argument("--hidden", nargs="+", type=_hidden_size, metavar="N",
                   help=f"hidden layer sizes, e.g. --hidden 100 50 (default: {' '.join(map(str, DEFAULT_HIDDEN))})")
    t.add_argument("--activation", choices=list(spec.MLP_ACTIVATIONS), help="(default: relu)")
    t.add_argument("--weight-init", type=_weight_init, default="auto", metavar="INIT",
                   help="weight std: he, xavier, std (0.01) or a number; auto is he for relu, xavier "
                        "for sigmoid/tanh (default: auto)")
    t.add_argument("--weight-decay", type=_non_negative_float, metavar="L",
                   help="L2 weight decay lambda (default: 0)")
    t.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS, help=f"(default: {DEFAULT_EPOCHS})")
    t.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH, help=f"(default: {DEFAULT_BATCH})")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default: {DEFAULT_OPTIMIZER})")
    t.add_argument("--lr", type=_positive_float, help=f"learning rate (default per optimizer: {lr_defaults})")
    t.add_argument("--style", default="tutorial", choices=["tutorial", "torch"],
                   help="the tutorials' optimizer formulas or torch.optim's (see the optimizer classes) "
                        "(default: tutorial)")
    t.add_argument("--schedule", default=None, type=_schedule_text,
                   help="learning-rate schedule over the updates: 'step:SIZE[:GAMMA]', 'cosine[:MIN]', "
                        "'warmup:STEPS[+cosine[:MIN]]', 'none' (constant) (default: cosine, from the "
                        "optimizer's lr to 0 at the last update; --resume keeps the saved optimizer's)")
    t.add_argument("--clip", type=_positive_float, default=None, metavar="NORM",
                   help="clip each gradient to this global norm (default: no clipping)")
    t.add_argument("--sampling", default="epoch", choices=["epoch", "random"],
                   help="shuffled epochs, or the tutorials' random draws with replacement (default: epoch)")
    t.add_argument("--dtype", choices=["float32", "float64"], help="(default: float32)")
    t.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch order (default: 0)")
    common(t)
    t.add_argument("--train-size", type=_positive_int, metavar="N",
                   help="use only the first N training images (default: all)")
    t.add_argument("--resume", metavar="NET.npz",
                   help="continue training a saved net (and its optimizer state, when saved) (default: a new net)")
    t.add_argument("--save", metavar="NET.npz", help="save the trained net and optimizer (default: not saved)")
    t.add_argument("--plot", metavar="PNG", help="save a loss/accuracy plot; needs matplotlib (default: no plot)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (default: a progress bar)")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="test accuracy of a saved net", description="Evaluate a net saved by "
                       "train --save on the MNIST test set.")
    e.add_argument("net", metavar="NET.npz", help="a net saved by train --save or Net.save")
    e.add_argument("--train", action="store_true", help="also report training accuracy (default: off)")
    common(e)
    e.set_defaults(func=_eval)

    i = sub.add_parser("info", help="version, backends, BLAS, threads and where MNIST is")
    i.add_argument("--threads", type=_positive_int, metavar="N",
                   help="show the counts after limiting every pool to N threads (default: all cores)")
    i.set_defaults(func=_info)

    b = sub.add_parser("bench", help="benchmark every hot path on every backend")
    b.add_argument("--quick", action="store_true", help="small sizes, < 60 s (CI smoke run) (default: off)")
    b.add_argument("--out", default="bench/results",
                   help="directory for results.json and the PNG chart (default: bench/results)")
    b.add_argument("--only", nargs="*", metavar="NAME", help="run only these benchmarks (default: all)")
    b.add_argument("--no-plot", action="store_true", help="do not write the PNG charts (default: write them)")
    b.set_defaults(func=_bench)

    from pyfastgrad.search import add_subcommand as add_search  # `search`, defined with the search
    add_search(sub)
    return p


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        return args.func(args)
    except CliError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `pyfastgrad info | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
