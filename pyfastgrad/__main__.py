"""Command line: ``python -m pyfastgrad train|bench|info``."""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import numpy as np


# Learning rates that train 784-100-10 well in 10 epochs of batch 100 (sgd 0.1 is the tutorials').
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 0.001,
              "adam": 0.001, "adamw": 0.001}


def _train(args: argparse.Namespace) -> int:
    import pyfastgrad as pfg
    from pyfastgrad.datasets import load_data

    if args.backend:
        pfg.set_backend(args.backend)
    dtype = np.float32 if args.dtype == "float32" else np.float64
    (x_train, t_train), (x_test, t_test), source = _data(load_data, args, dtype)
    print(f"data: {source}: {len(x_train)} train / {len(x_test)} test images")
    hidden = [int(h) for h in args.hidden]
    net = pfg.MultiLayerNet(x_train.shape[1], hidden, 10, activation=args.activation,
                            weight_init=args.weight_init, weight_decay=args.weight_decay, dtype=dtype,
                            seed=args.seed)
    print(net)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    opt = pfg.make_optimizer(args.optimizer, lr=lr, style=args.style, clip=args.clip)
    print(f"optimizer: {opt}, batch size {args.batch_size}, {args.epochs} epochs, backend {pfg.get_backend()}")
    t0 = time.perf_counter()
    hist = pfg.fit(net, x_train, t_train, x_test, t_test, optimizer=opt, epochs=args.epochs,
                   batch_size=args.batch_size, sampling=args.sampling, seed=args.seed,
                   progress=not args.no_progress, verbose=True, schedule=args.schedule)
    total = time.perf_counter() - t0
    if hist.stopped:
        print(f"stopped early: {hist.stopped}", file=sys.stderr)
    if hist.test_acc:
        print(f"final: test accuracy {hist.test_acc[-1]:.4f}, train accuracy {hist.train_acc[-1]:.4f}; "
              f"{total:.1f} s total, {np.mean(hist.epoch_time):.3f} s per epoch in the training loop")
    if args.save:
        net.save(args.save, optimizer=opt)
        print(f"saved net to {args.save}")
    if args.plot:
        try:
            hist.plot(args.plot)
            print(f"saved plot to {args.plot}")
        except ImportError as exc:
            print(f"no plot: {exc}", file=sys.stderr)
    return 0 if not hist.stopped else 2


def _data(load_data, args, dtype):
    (data, source) = load_data(args.data, dtype=dtype, warn=False)
    if source != "mnist":
        print("MNIST not found (searched --data, $PYFASTGRAD_DATA and the cache dir). Training on the small "
              "embedded digit set instead. To use MNIST: pass --data DIR with the four IDX files, set "
              "PYFASTGRAD_DATA=DIR, or run python -c 'import pyfastgrad.datasets as d; d.download_mnist()'.")
    (x_train, t_train), (x_test, t_test) = data
    if args.train_size:
        x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]
    return (x_train, t_train), (x_test, t_test), source


def _info(_: argparse.Namespace) -> int:
    import pyfastgrad as pfg
    print(f"pyfastgrad {pfg.__version__}")
    for name, status in pfg.backends().items():
        print(f"  {name:6s} {status}")
    print(f"  current: {pfg.get_backend()}")
    if pfg.backends()["cpp"] == "available":
        from pyfastgrad import _cpp_kernels
        print(f"  BLAS: {_cpp_kernels.blas_info()}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from pyfastgrad import bench
    return bench.main(args)


def _schedule_text(text: str) -> str:
    from pyfastgrad.schedules import make_schedule
    try:
        make_schedule(text, total_steps=2)  # the syntax only; fit sets the length
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pyfastgrad",
                                description="pyfastgrad: neural networks from scratch, fast.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a net on MNIST with mini-batch SGD")
    t.add_argument("--hidden", nargs="+", default=["100"], help="hidden layer sizes (default: 100)")
    t.add_argument("--activation", default="relu", choices=["relu", "sigmoid", "tanh"])
    t.add_argument("--weight-init", default="auto", help="'std', 'he', 'xavier', 'auto' or a float")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=100)
    t.add_argument("--lr", type=float, default=None,
                   help="learning rate (default per optimizer: " +
                        ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    t.add_argument("--optimizer", default="sgd", choices=list(DEFAULT_LR))
    t.add_argument("--style", default="tutorial", choices=["tutorial", "torch"],
                   help="the tutorials' optimizer formulas or torch.optim's (see the optimizer classes)")
    t.add_argument("--schedule", default=None, type=_schedule_text,
                   help="learning-rate schedule over the updates: 'step:SIZE[:GAMMA]', 'cosine[:MIN]', "
                        "'warmup:STEPS[+cosine[:MIN]]' (default: constant)")
    t.add_argument("--clip", type=float, default=None, help="clip each gradient to this global norm")
    t.add_argument("--sampling", default="epoch", choices=["epoch", "random"],
                   help="shuffled epochs, or the tutorials' random draws with replacement")
    t.add_argument("--backend", choices=["cpp", "numba", "numpy"])
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data", help="directory with the MNIST IDX files (default: $PYFASTGRAD_DATA, cache)")
    t.add_argument("--train-size", type=int, help="use only the first N training images")
    t.add_argument("--save", help="save the trained net (.npz)")
    t.add_argument("--plot", help="save a loss/accuracy plot (.png, needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    i = sub.add_parser("info", help="backends, BLAS and threads")
    i.set_defaults(func=_info)

    b = sub.add_parser("bench", help="benchmark every hot path on every backend")
    b.add_argument("--quick", action="store_true", help="small sizes, < 60 s (CI smoke run)")
    b.add_argument("--out", default="bench/results", help="directory for results.json and the PNG chart")
    b.add_argument("--only", nargs="*", help="run only these benchmarks (by name)")
    b.add_argument("--no-plot", action="store_true")
    b.set_defaults(func=_bench)

    from pyfastgrad.search import add_subcommand as add_search  # `search`, defined with the search
    add_search(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
