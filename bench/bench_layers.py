"""Composed nets (pyfastgrad.Sequential): ``python bench/bench_layers.py [--quick] [--repeats N]``.

Prints three tables, every ratio from timings of this one run (interleaved repeats, min and median):

1. a composed 784-100-10 ReLU net against ``TwoLayerNet(784, 100, 10)``: one ``train_step`` and one
   ``fit`` epoch (60,000 images, or the package's 12,000-image subset), float32 (issue 13: within 10 %);
2. Batch Normalization / Dropout nets (784-256-256-10, BN, Dropout 0.2, Adam, batch 100, float32):
   one training step on each backend against PyTorch eager (``nn.Sequential`` of Linear, BatchNorm1d,
   ReLU, Dropout; ``torch.optim.Adam``), when torch is installed;
3. the numerical gradient of a 784-50-10 net (100 images, float64) plain and with BatchNorm, against
   the reference's per-parameter loop (timed on a slice of the parameters and scaled up).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import pyfastgrad as pfg
from pyfastgrad import reference as ref
from pyfastgrad.layers import Affine, BatchNorm, Relu, SoftmaxWithLoss


def _load(n: int):
    """MNIST when it is found (PYFASTGRAD_DATA or the cache), else the package's MNIST subset."""
    try:
        from pyfastgrad.datasets import load_mnist
        (x, t), _ = load_mnist(normalize=True, flatten=True)
        src = "MNIST"
    except Exception:  # not found: the real subset shipped in the package
        from pyfastgrad.datasets import load_mnist_subset
        (x, t), _ = load_mnist_subset()
        src = "the MNIST subset in the package"
    return np.ascontiguousarray(x[:n], dtype=np.float32), np.asarray(t[:n]), src


def _times(fns: dict, repeats: int) -> dict:
    """Interleaved repeats of every fn: {name: (min, median)} seconds."""
    out = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            out[k].append(time.perf_counter() - t0)
    return {k: (min(v), float(np.median(v))) for k, v in out.items()}


def _row(name: str, tm, base=None) -> str:
    r = f"  {base[0] / tm[0]:6.2f}x" if base else ""
    return f"{name:<44} {tm[0] * 1e3:10.3f} {tm[1] * 1e3:10.3f}{r}"


def composed_vs_fused(x, t, repeats, steps):
    print("\n1. composed 784-100-10 vs TwoLayerNet (float32; ms, min / median; ratio = TwoLayerNet / composed)")
    two = pfg.TwoLayerNet(784, 100, 10, weight_init_std="he", dtype=np.float32, seed=0)
    seq = pfg.Sequential([Affine(784, 100), Relu(), Affine(100, 10), SoftmaxWithLoss()], weight_init="he",
                         dtype=np.float32, seed=0)
    assert seq.path == "fused"
    xb, tb = x[:100], t[:100]
    o1, o2 = pfg.SGD(lr=0.01), pfg.SGD(lr=0.01)
    tm = _times({"two": lambda: [two.train_step(xb, tb, o1) for _ in range(steps)],
                 "seq": lambda: [seq.train_step(xb, tb, o2) for _ in range(steps)]}, repeats)
    print(_row(f"train_step x{steps}: TwoLayerNet", tm["two"]))
    print(_row(f"train_step x{steps}: Sequential", tm["seq"], tm["two"]))
    tm = _times({"two": lambda: pfg.fit(two, x, t, optimizer="momentum", lr=0.01, epochs=1, progress=False),
                 "seq": lambda: pfg.fit(seq, x, t, optimizer="momentum", lr=0.01, epochs=1, progress=False)},
                max(2, repeats // 2))
    print(_row(f"fit epoch ({len(x)} images): TwoLayerNet", tm["two"]))
    print(_row(f"fit epoch ({len(x)} images): Sequential", tm["seq"], tm["two"]))


def _torch_step(sizes, bn, drop):
    import torch
    from torch import nn
    torch.manual_seed(0)
    layers = []
    for i in range(1, len(sizes)):
        layers.append(nn.Linear(sizes[i - 1], sizes[i]))
        if i < len(sizes) - 1:
            if bn:
                layers.append(nn.BatchNorm1d(sizes[i]))
            layers.append(nn.ReLU())
            if drop:
                layers.append(nn.Dropout(drop))
    model = nn.Sequential(*layers).train()
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    lossf = nn.CrossEntropyLoss()

    def step(xb, tb):
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(xb), tb)
        loss.backward()
        opt.step()
    return step


def bn_dropout_vs_torch(x, t, repeats, steps):
    print("\n2. BatchNorm / Dropout nets, one Adam step at batch 100 (float32; ms per step, min / median; "
          "ratio = torch / pyfastgrad)")
    configs = [("784-256-256-10 BN + Dropout 0.2", True, 0.2), ("784-256-256-10 BN", True, 0.0),
               ("784-256-256-10 Dropout 0.2", False, 0.2)]
    xb, tb = x[:100], t[:100]
    try:
        import torch  # its default threads (all cores), as OpenBLAS's
        txb, ttb = torch.from_numpy(xb), torch.from_numpy(tb.astype(np.int64))
    except ImportError:
        torch = None
        print("  (torch not installed: pyfastgrad rows only)")
    for name, bn, drop in configs:
        fns = {}
        for b in pfg.available_backends():
            net = pfg.MultiLayerNetExtend(784, [256, 256], 10, use_batchnorm=bn, use_dropout=drop > 0,
                                          dropout_ration=drop or 0.5, weight_init_std="he", dtype=np.float32, seed=0,
                                          backend=b)
            opt = pfg.Adam(lr=0.001)
            fns[b] = (lambda n=net, o=opt: [n.train_step(xb, tb, o) for _ in range(steps)])
        if torch is not None:
            st = _torch_step([784, 256, 256, 10], bn, drop)
            fns["torch eager"] = lambda st=st: [st(txb, ttb) for _ in range(steps)]
        tm = {k: (v[0] / steps, v[1] / steps) for k, v in _times(fns, repeats).items()}
        base = tm.get("torch eager")
        for k, v in tm.items():
            print(_row(f"{name}: {k}", v, base if k != "torch eager" else None))


def numgrad_speed(x, t, quick):
    print("\n3. numerical gradient, 784-50-10, 100 images, float64 (s; ratio = reference loop / pyfastgrad)")
    xb, tb = x[:100].astype(np.float64), t[:100]
    for name, layers in (("plain (fused kernel)", [Affine(784, 50), Relu(), Affine(50, 10)]),
                         ("BatchNorm (layer sweep)", [Affine(784, 50), BatchNorm(50), Relu(), Affine(50, 10)])):
        net = pfg.Sequential(layers, loss=SoftmaxWithLoss(), weight_init=0.01, seed=0)
        t0 = time.perf_counter()
        net.numerical_gradient(xb, tb)
        fast = time.perf_counter() - t0
        # the reference loop (the tutorials' method) on a slice of W1, scaled to every parameter
        rnet = ref.MultiLayerNetExtend(784, [50], 10, use_batchnorm="BatchNorm" in name, weight_init_std=0.01)
        k = 100 if quick else 400
        w = rnet.params["W1"].reshape(-1)
        t0 = time.perf_counter()
        for p in range(k):
            v = w[p]
            w[p] = v + 1e-4
            rnet.loss(xb, tb, train_flg=True)
            w[p] = v - 1e-4
            rnet.loss(xb, tb, train_flg=True)
            w[p] = v
        slow = (time.perf_counter() - t0) / k * net.n_params
        print(f"{name:<30} pyfastgrad {fast:8.3f} s   reference loop ~{slow:8.1f} s   {slow / fast:8.0f}x "
              f"({net.path} path, {net.n_params} parameters)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_layers.py", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (default: off)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per row (default: 7, --quick 2)")
    ap.add_argument("--only", nargs="*", default=None, choices=["fused", "bn", "numgrad"],
                    help="tables to run (default: all)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 7)
    x, t, src = _load(6000 if args.quick else 60000)
    print(f"pyfastgrad {pfg.__version__}, backends {pfg.available_backends()}, data {src} ({len(x)} images), "
          f"threads {pfg.get_num_threads()}")
    only = set(args.only or ["fused", "bn", "numgrad"])
    if "fused" in only:
        composed_vs_fused(x, t, repeats, 5 if args.quick else 50)
    if "bn" in only:
        bn_dropout_vs_torch(x, t, repeats, 3 if args.quick else 30)
    if "numgrad" in only:
        numgrad_speed(x, t, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
