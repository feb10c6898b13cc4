"""The tutorials' chapter 4-6 scripts, timed with pyfastgrad's classes and with the numpy reference's.

``python bench/bench_tutorials.py [--quick] [--scale F]``

Each script is written once, the tutorials' way, against a namespace ``nn`` holding ``TwoLayerNet``,
``MultiLayerNet``, ``MultiLayerNetExtend``, the optimizers and ``Trainer``; it runs once with
``nn = pyfastgrad`` and once with the numpy implementation of the tutorials' classes
(``pyfastgrad.reference``, whose nets are the tutorials' layer-by-layer numpy code, with the tutorials'
Trainer loop), in this one run. Prints the wall time of each script and the totals (issue 19: pyfastgrad's
total <= 1/3 of numpy's).
"""
from __future__ import annotations

import argparse
import sys
import time
import types

import numpy as np

import pyfastgrad as pfg
from pyfastgrad import reference as ref


def _namespaces():
    fast = types.SimpleNamespace(TwoLayerNet=pfg.TwoLayerNet, MultiLayerNet=pfg.MultiLayerNet,
                                 MultiLayerNetExtend=pfg.MultiLayerNetExtend, SGD=pfg.SGD, Momentum=pfg.Momentum,
                                 AdaGrad=pfg.AdaGrad, Adam=pfg.Adam, RMSprop=pfg.RMSprop, Trainer=pfg.Trainer)
    slow = types.SimpleNamespace(TwoLayerNet=ref.TwoLayerNet, MultiLayerNet=ref.MultiLayerNet,
                                 MultiLayerNetExtend=ref.MultiLayerNetExtend, SGD=ref.SGD, Momentum=ref.Momentum,
                                 AdaGrad=ref.AdaGrad, Adam=ref.Adam, RMSprop=ref.RMSprop, Trainer=_NumpyTrainer)
    return {"pyfastgrad": fast, "numpy": slow}


class _NumpyTrainer(pfg.Trainer):
    """The tutorials' Trainer loop (pfg.Trainer runs it for nets that are not pyfastgrad's), with the
    reference optimizers."""

    def __init__(self, network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                 optimizer="SGD", optimizer_param=None, evaluate_sample_num_per_epoch=None, verbose=True):
        super().__init__(network, x_train, t_train, x_test, t_test, epochs=epochs, mini_batch_size=mini_batch_size,
                         optimizer=optimizer, optimizer_param=optimizer_param,
                         evaluate_sample_num_per_epoch=evaluate_sample_num_per_epoch, verbose=verbose)
        names = {"sgd": ref.SGD, "momentum": ref.Momentum, "adagrad": ref.AdaGrad, "adam": ref.Adam,
                 "rmsprop": ref.RMSprop}
        self.optimizer = names[optimizer.lower()](**(optimizer_param or {"lr": 0.01}))


def ch4_train(nn, x, t, xt, tt, it):
    net = nn.TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    for i in range(it):
        m = np.random.choice(x.shape[0], 100)
        grad = net.gradient(x[m], t[m])
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.1 * grad[key]
        net.loss(x[m], t[m])
        if i % 600 == 0:
            net.accuracy(x, t), net.accuracy(xt, tt)


def ch6_optimizers(nn, x, t, xt, tt, it):
    opts = {"SGD": nn.SGD(), "Momentum": nn.Momentum(), "AdaGrad": nn.AdaGrad(), "Adam": nn.Adam()}
    nets = {k: nn.MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100], output_size=10) for k in opts}
    for i in range(it // 2):
        m = np.random.choice(x.shape[0], 128)
        for k in opts:
            opts[k].update(nets[k].params, nets[k].gradient(x[m], t[m]))
            nets[k].loss(x[m], t[m])


def ch6_weight_init(nn, x, t, xt, tt, it):
    nets = {k: nn.MultiLayerNet(input_size=784, hidden_size_list=[100, 100, 100, 100], output_size=10,
                                weight_init_std=w) for k, w in (("std", 0.01), ("xavier", "sigmoid"), ("he", "relu"))}
    opt = nn.SGD(lr=0.01)
    for i in range(it // 2):
        m = np.random.choice(x.shape[0], 128)
        for net in nets.values():
            opt.update(net.params, net.gradient(x[m], t[m]))
            net.loss(x[m], t[m])


def ch6_overfit(nn, x, t, xt, tt, it):
    x, t = x[:300], t[:300]
    for wd, drop in ((0.1, False), (0.0, True)):
        net = nn.MultiLayerNetExtend(input_size=784, hidden_size_list=[100] * 6, output_size=10,
                                     weight_decay_lambda=wd, use_dropout=drop, dropout_ration=0.2)
        tr = nn.Trainer(net, x, t, xt, tt, epochs=max(1, it // 30), mini_batch_size=100, optimizer="sgd",
                        optimizer_param={"lr": 0.01}, verbose=False)
        tr.train()


def ch6_batchnorm(nn, x, t, xt, tt, it):
    x, t = x[:1000], t[:1000]
    for bn in (True, False):
        net = nn.MultiLayerNetExtend(input_size=784, hidden_size_list=[100] * 5, output_size=10,
                                     weight_init_std=0.05, use_batchnorm=bn)
        opt = nn.SGD(lr=0.01)
        for i in range(it // 2):
            m = np.random.choice(1000, 100)
            opt.update(net.params, net.gradient(x[m], t[m]))
            if i % 10 == 0:
                net.accuracy(x, t)


def ch6_hyperparameter(nn, x, t, xt, tt, it):
    x, t = x[:500], t[:500]
    for _ in range(max(1, it // 200)):
        wd, lr = 10 ** np.random.uniform(-8, -4), 10 ** np.random.uniform(-6, -2)
        net = nn.MultiLayerNet(input_size=784, hidden_size_list=[100] * 6, output_size=10, weight_decay_lambda=wd)
        nn.Trainer(net, x, t, xt[:500], tt[:500], epochs=10, mini_batch_size=100, optimizer="sgd",
                   optimizer_param={"lr": lr}, verbose=False).train()


SCRIPTS = [ch4_train, ch6_optimizers, ch6_weight_init, ch6_overfit, ch6_batchnorm, ch6_hyperparameter]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_tutorials.py", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 iterations per script (default: off, 2000)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds of every script on both (alternating which goes first); medians and the spread "
                         "of the per-round totals are printed (default 1)")
    args = ap.parse_args(argv)
    it = 100 if args.quick else 2000
    try:
        from pyfastgrad.datasets import load_mnist
        (x, t), (xt, tt) = load_mnist(normalize=True)
        src = "MNIST"
    except Exception:
        from pyfastgrad.datasets import load_mnist_subset
        (x, t), (xt, tt) = load_mnist_subset()
        src = "the package's MNIST subset"
    # (float32 images, as the tutorials' load_mnist(normalize=True) gives them; their nets' params are float64)
    x, xt = x.astype(np.float32), xt.astype(np.float32)
    print(f"pyfastgrad {pfg.__version__}, backend {pfg.get_backend()}, data {src}, {it} iterations per script, "
          f"{args.repeats} round(s)")
    names = list(_namespaces())
    times = {(s.__name__, n): [] for s in SCRIPTS for n in names}
    for r in range(args.repeats):
        for script in SCRIPTS:
            for name in (names if r % 2 == 0 else names[::-1]):  # a drifting machine favours neither
                nn = _namespaces()[name]
                np.random.seed(0)
                t0 = time.perf_counter()
                script(nn, x, t, xt, tt, it)
                times[(script.__name__, name)].append(time.perf_counter() - t0)
            if args.repeats == 1:
                f, n = (times[(script.__name__, k)][-1] for k in names)
                print(f"{script.__name__:<22} pyfastgrad {f:8.2f} s   numpy {n:8.2f} s   {n / f:6.2f}x")
    if args.repeats > 1:
        for script in SCRIPTS:
            f, n = (float(np.median(times[(script.__name__, k)])) for k in names)
            print(f"{script.__name__:<22} pyfastgrad {f:8.2f} s   numpy {n:8.2f} s   {n / f:6.2f}x  (medians)")
    tot = {k: float(sum(np.median(times[(s.__name__, k)]) for s in SCRIPTS)) for k in names}
    rounds = [sum(times[(s.__name__, "numpy")][r] for s in SCRIPTS) /
              sum(times[(s.__name__, "pyfastgrad")][r] for s in SCRIPTS) for r in range(args.repeats)]
    spread = f", rounds {min(rounds):.2f}-{max(rounds):.2f}x" if args.repeats > 1 else ""
    print(f"{'total':<22} pyfastgrad {tot['pyfastgrad']:8.2f} s   numpy {tot['numpy']:8.2f} s   "
          f"{tot['numpy'] / tot['pyfastgrad']:6.2f}x (target >= 3x{spread})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
