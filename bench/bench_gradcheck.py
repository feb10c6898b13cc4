"""Gradient checks side by side: time and verdict of pyfastgrad against torch.autograd.gradcheck
(full and fast mode), jax.test_util.check_grads and scipy.optimize.check_grad, on the README's
TwoLayerNet and on a user function, with a correct gradient and with injected bugs; plus the speed
of ``numerical_gradient(..., vectorized=True)`` and ``executor=`` on user functions.

``python bench/bench_gradcheck.py [--quick] [--out DIR]``

Libraries that are not installed are skipped (the row says so). The gradient under test is the
same for every library: pyfastgrad's backprop (or the user function's gradient), optionally with
a bug, handed to torch through an ``autograd.Function`` and to jax through ``custom_vjp``.
Verdicts: pyfastgrad's and torch's own; jax: no AssertionError (its check_grads steps along a random
direction of all 39,760 parameters, so it crosses ReLU kinks: on this net it also fails jax's own
autodiff gradient); scipy.check_grad returns a number,
judged here as ``|err| / |grad| < 1e-4`` (forward differences at sqrt(eps) cannot resolve less).
Results: a markdown table on stdout and ``gradcheck.json`` in ``--out`` (default bench/results).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

import pyfastgrad as pfg

BUGS = ("none", "one entry 1e-6 off", "db/N twice", "transposed dW1")


# ------------------------------------------------------------------ gradients under test
def apply_bug(g: dict, bug: str, n: int) -> dict:
    g = {k: np.array(v, dtype=np.float64) for k, v in g.items()}
    if bug == "one entry 1e-6 off":
        a = g["W1"]
        a.flat[np.argmax(np.abs(a))] *= 1 + 1e-6
    elif bug == "db/N twice":
        g["b1"], g["b2"] = g["b1"] / n, g["b2"] / n
    elif bug == "transposed dW1":
        g["W1"] = np.ascontiguousarray(g["W1"].T).reshape(g["W1"].shape)
    return g


class BuggyNet(pfg.TwoLayerNet):
    bug = "none"

    def gradient(self, x, t):
        return apply_bug(super().gradient(x, t), self.bug, np.asarray(x).shape[0])


def timed(fn):
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # a library's failure is a result, not a crash of the bench
        out = f"error: {type(e).__name__}: {str(e)[:80]}"
    return out, time.perf_counter() - t0


# ------------------------------------------------------------------ the TwoLayerNet rows
def net_rows(x, t, quick: bool) -> list:
    rows = []
    keys = ["W1", "b1", "W2", "b2"]
    for bug in BUGS:
        net = BuggyNet(784, 50, 10, seed=0)
        net.bug = bug
        for backend in [b for b in ("cpp", "numba") if b in pfg.available_backends()]:
            net.backend = backend
            res, dt = timed(lambda net=net: pfg.gradient_check(net, x, t))
            rows.append(("TwoLayerNet", bug, f"pyfastgrad.gradient_check ({backend})", dt,
                         res if isinstance(res, str) else ("PASS" if res else "FAIL")
                         + f" ({res.n_kinks} kink entries)"))
        net.backend = None
        rows += torch_net_rows(net, x, t, bug, keys, quick)
        rows += jax_net_rows(net, x, t, bug)
        rows += scipy_net_rows(net, x, t, bug, quick)
    return rows


def torch_net_rows(net, x, t, bug, keys, quick) -> list:
    try:
        import torch
    except ImportError:
        return [("TwoLayerNet", bug, "torch.autograd.gradcheck", float("nan"), "torch not installed")]
    X = torch.from_numpy(x)
    T = torch.from_numpy(np.asarray(t, dtype=np.int64))

    class Loss(torch.autograd.Function):  # forward in torch, backward = the gradient under test
        @staticmethod
        def forward(ctx, W1, b1, W2, b2):
            ctx.save_for_backward(W1, b1, W2, b2)
            z = torch.relu(X @ W1 + b1) @ W2 + b2
            return torch.nn.functional.cross_entropy(z, T)

        @staticmethod
        def backward(ctx, gout):
            for k, v in zip(keys, ctx.saved_tensors):
                net.params[k] = v.detach().numpy()
            g = net.gradient(x, t)
            return tuple(gout * torch.from_numpy(np.ascontiguousarray(g[k])) for k in keys)

    params = tuple(torch.tensor(net.params[k], dtype=torch.float64, requires_grad=True) for k in keys)
    rows = []
    for fast in (False, True):
        name = f"torch.autograd.gradcheck ({'fast' if fast else 'full'})"
        if quick and (not fast or bug != "none"):  # a failing fast check reruns the full one for its message
            rows.append(("TwoLayerNet", bug, name, float("nan"), "skipped in --quick (39,760 x 2 forwards)"))
            continue
        ok, dt = timed(lambda fast=fast: torch.autograd.gradcheck(Loss.apply, params, fast_mode=fast,
                                                                  raise_exception=False))
        rows.append(("TwoLayerNet", bug, name, dt, ok if isinstance(ok, str) else ("PASS" if ok else "FAIL")))
    return rows


def jax_net_rows(net, x, t, bug) -> list:
    try:
        import jax
        import jax.numpy as jnp
        from jax.test_util import check_grads
    except ImportError:
        return [("TwoLayerNet", bug, "jax.test_util.check_grads", float("nan"), "jax not installed")]
    jax.config.update("jax_enable_x64", True)
    X, Y = jnp.asarray(x), jax.nn.one_hot(jnp.asarray(t), 10, dtype=jnp.float64)
    n = x.shape[0]

    def loss(W1, b1, W2, b2):
        z = jax.nn.relu(X @ W1 + b1) @ W2 + b2
        return -jnp.sum(Y * jax.nn.log_softmax(z)) / n

    f = jax.custom_vjp(loss)

    def fwd(W1, b1, W2, b2):
        return loss(W1, b1, W2, b2), (W1, b1, W2, b2)

    def bwd(res, gout):  # backprop by hand, with the same bug
        W1, b1, W2, b2 = res
        a = X @ W1 + b1
        h = jax.nn.relu(a)
        dz = (jax.nn.softmax(h @ W2 + b2) - Y) / n
        dW2, db2 = h.T @ dz, dz.sum(0)
        da = (dz @ W2.T) * (a > 0)
        dW1, db1 = X.T @ da, da.sum(0)
        if bug == "one entry 1e-6 off":
            k = jnp.argmax(jnp.abs(dW1))
            dW1 = dW1.reshape(-1).at[k].multiply(1 + 1e-6).reshape(dW1.shape)
        elif bug == "db/N twice":
            db1, db2 = db1 / n, db2 / n
        elif bug == "transposed dW1":
            dW1 = dW1.T.reshape(dW1.shape)
        return tuple(gout * g for g in (dW1, db1, dW2, db2))

    f.defvjp(fwd, bwd)
    args = tuple(jnp.asarray(net.params[k]) for k in ("W1", "b1", "W2", "b2"))

    def run():
        try:
            check_grads(f, args, order=1, modes=("rev",))
            return "PASS"
        except AssertionError:
            return "FAIL"
    verdict, dt = timed(run)
    return [("TwoLayerNet", bug, "jax.test_util.check_grads (rev)", dt, verdict)]


def scipy_net_rows(net, x, t, bug, quick) -> list:
    from scipy.optimize import check_grad
    name = "scipy.optimize.check_grad"
    if quick:
        return [("TwoLayerNet", bug, name, float("nan"), "skipped in --quick (39,760 loss evaluations)")]
    theta0 = net.theta.copy()

    def f(th):
        net.theta[:] = th
        return net.loss(x, t)

    def g(th):
        net.theta[:] = th
        gd = net.gradient(x, t)
        return np.concatenate([gd[k].ravel() for k in ("W1", "b1", "W2", "b2")])

    def run():
        err = check_grad(f, g, theta0.copy())
        rel = err / np.linalg.norm(g(theta0))
        net.theta[:] = theta0
        return f"{'PASS' if rel < 1e-4 else 'FAIL'} (|err|/|g| = {rel:.1e})"
    verdict, dt = timed(run)
    return [("TwoLayerNet", bug, name, dt, verdict)]


# ------------------------------------------------------------------ a user function
A_USER = np.random.default_rng(0).standard_normal((50, 200)) / 10


def user_f(x):
    """softplus regression-like loss, 200 inputs: sum(log1p(exp(A x))) + |x|^2 / 2."""
    return float(np.sum(np.logaddexp(0.0, A_USER @ x)) + 0.5 * x @ x)


def user_f_complex(x):
    """user_f for the complex step (logaddexp has no complex loop; log(1 + exp) is analytic)."""
    return np.sum(np.log(1 + np.exp(A_USER @ x))) + 0.5 * x @ x


def user_f_batch(X):
    return np.sum(np.logaddexp(0.0, X @ A_USER.T), axis=1) + 0.5 * np.sum(X * X, axis=1)


def user_grad(x, bug="none"):
    g = A_USER.T @ (1.0 / (1.0 + np.exp(-(A_USER @ x)))) + x
    if bug == "one entry 1e-6 off":
        g[np.argmax(np.abs(g))] *= 1 + 1e-6
    elif bug == "db/N twice":  # the analogue: one block scaled wrongly
        g[:10] /= 100
    elif bug == "transposed dW1":
        g = g.reshape(10, 20).T.reshape(-1)
    return g


def user_rows(quick: bool) -> list:
    rows = []
    x0 = np.random.default_rng(1).standard_normal(200) * 0.5
    for bug in BUGS:
        gf = lambda x, _b=bug: user_grad(np.real(x), _b)  # noqa: E731
        for label, kw in (("check_gradient (full)", {}), ("check_gradient (vectorized)", {"vectorized": True}),
                          ("check_gradient (random, 8 dirs)", {"mode": "random"}),
                          ("check_gradient (complex step)", {"method": "complex"})):
            f = {"vectorized": user_f_batch, "method": user_f_complex}.get(next(iter(kw), ""), user_f)
            res, dt = timed(lambda f=f, kw=kw, gf=gf: pfg.check_gradient(f, gf, x0.copy(), **kw))
            rows.append(("user f (200 inputs)", bug, f"pyfastgrad.{label}", dt,
                         res if isinstance(res, str) else ("PASS" if res else "FAIL")))
        rows += torch_user_rows(x0, bug)
        from scipy.optimize import check_grad
        err, dt = timed(lambda bug=bug: check_grad(user_f, lambda x: user_grad(x, bug), x0.copy()))
        rel = err / np.linalg.norm(user_grad(x0)) if not isinstance(err, str) else float("nan")
        rows.append(("user f (200 inputs)", bug, "scipy.optimize.check_grad", dt,
                     f"{'PASS' if rel < 1e-4 else 'FAIL'} (|err|/|g| = {rel:.1e})"))
    return rows


def torch_user_rows(x0, bug) -> list:
    try:
        import torch
    except ImportError:
        return [("user f (200 inputs)", bug, "torch.autograd.gradcheck", float("nan"), "torch not installed")]
    A = torch.from_numpy(A_USER)

    class F(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.sum(torch.nn.functional.softplus(A @ x)) + 0.5 * x @ x

        @staticmethod
        def backward(ctx, gout):
            (x,) = ctx.saved_tensors
            return gout * torch.from_numpy(user_grad(x.detach().numpy(), bug))

    xt = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    rows = []
    for fast in (False, True):
        ok, dt = timed(lambda fast=fast: torch.autograd.gradcheck(F.apply, (xt,), fast_mode=fast,
                                                                  raise_exception=False))
        rows.append(("user f (200 inputs)", bug, f"torch.autograd.gradcheck ({'fast' if fast else 'full'})", dt,
                     ok if isinstance(ok, str) else ("PASS" if ok else "FAIL")))
    return rows


# ------------------------------------------------------------------ speed for user functions
def square_f(X):
    """The tutorials' function_2, sum(x**2): one point (n,) or a batch (m, n)."""
    X = np.asarray(X)
    return float(np.sum(X ** 2)) if X.ndim == 1 else np.sum(X ** 2, axis=1)


def vector_f(X):
    """A numpy-vectorisable user function, the Rosenbrock function of n inputs (elementwise numpy,
    no BLAS): one point (n,) or a batch (m, n)."""
    X = np.atleast_2d(X)
    a, b = X[:, :-1], X[:, 1:]
    v = np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2, axis=1)
    return v if v.size > 1 else float(v[0])


SLOW_N = int(os.environ.get("PFG_BENCH_SLOW_N", "300000"))


def slow_f(x):
    """A >= 20 ms user function in plain Python (a simulation-style loop: no BLAS and no numpy
    kernels, whose speed differs between the main process and freshly spawned workers); module
    level, so process pools can pickle it."""
    xs = [float(v) for v in np.ravel(x)]
    n = len(xs)
    acc = 0.0
    for i in range(SLOW_N):
        acc += math.sin(1e-6 * i * xs[i % n])
    return acc * 1e-6 + sum(v * v for v in xs)


def speed_rows(quick: bool) -> list:
    rows = []
    # numpy-vectorisable functions: the tutorials' sum of squares, the elementwise Rosenbrock function
    # and the user loss above (a block of perturbed points becomes one gemm). The gain is largest
    # where numpy's per-call overhead dominates f (few inputs); blocks grow as n^2 with n inputs.
    for label, fn, fn_batch, x in (
            ("tutorials' sum(x**2), 100 inputs", square_f, square_f, np.random.default_rng(3).standard_normal(100)),
            ("Rosenbrock, 50 inputs", vector_f, vector_f, np.random.default_rng(3).standard_normal(50)),
            ("user loss sum(softplus(A x)) + x.x/2, 200 inputs", user_f, user_f_batch,
             np.random.default_rng(3).standard_normal(200) / 10)):
        loop = _best(lambda fn=fn, x=x: pfg.numerical_gradient(fn, x.copy(), backend="numpy"), 3)
        vec = _best(lambda fn_batch=fn_batch, x=x: pfg.numerical_gradient(fn_batch, x.copy(), vectorized=True), 5)
        rows.append(("speed", label, "numerical_gradient loop (numpy backend)", loop, "1x"))
        rows.append(("speed", label, "numerical_gradient(vectorized=True)", vec,
                     f"{loop / vec:.1f}x the loop (target >= 20x)"))
    xs = np.random.default_rng(4).standard_normal(4 if quick else 16)
    t_f = _best(lambda: slow_f(xs), 3)
    serial = _best(lambda: pfg.numerical_gradient(slow_f, xs.copy(), backend="numpy"), 1)
    # spawn: forking a process that runs BLAS/OpenMP (or torch/JAX) threads can deadlock the child.
    # 2 workers are compared with 1 worker of the same kind: the same function runs at different
    # speeds in the main process and in a fresh worker, which would skew a ratio against serial.
    ctx = multiprocessing.get_context("spawn")
    per = {}
    for workers in (1, 2):
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            for _ in range(workers):  # start the workers
                pfg.numerical_gradient(slow_f, xs[:1].copy(), executor=ex)
            per[workers] = _best(lambda: pfg.numerical_gradient(slow_f, xs.copy(), executor=ex,
                                                                chunk_size=max(1, xs.size // 8)), 3)
    label = f"f of {t_f * 1e3:.0f} ms, {xs.size} inputs"
    rows.append(("speed", label, "numerical_gradient serial (main process)", serial, "-"))
    rows.append(("speed", label, "numerical_gradient(executor=ProcessPoolExecutor(1))", per[1], "1x"))
    rows.append(("speed", label, "numerical_gradient(executor=ProcessPoolExecutor(2))", per[2],
                 f"{per[1] / per[2]:.2f}x one worker (target >= 1.8x on 2 idle cores)"))
    return rows


def _best(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ------------------------------------------------------------------ main
def load_batch():
    from pyfastgrad.datasets import load_mnist
    for d in (os.environ.get("PYFASTGRAD_DATA"), Path(__file__).resolve().parents[2] / "shared/datasets/mnist"):
        if d and Path(d).is_dir():
            (x, t), _ = load_mnist(d, normalize=True, flatten=True, one_hot_label=False)
            return x[:100].astype(np.float64), t[:100], "MNIST"
    from pyfastgrad.datasets import load_digits_embedded
    (x, t), _ = load_digits_embedded(normalize=True, flatten=True, one_hot_label=False)
    return x[:100].astype(np.float64), t[:100], "embedded digits"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/bench_gradcheck.py", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the slowest rows, smaller speed runs")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--only", nargs="*", choices=("net", "user", "speed"), default=("net", "user", "speed"))
    args = ap.parse_args(argv)
    x, t, source = load_batch()
    rows = []
    if "net" in args.only:
        rows += net_rows(x, t, args.quick)
    if "user" in args.only:
        rows += user_rows(args.quick)
    if "speed" in args.only:
        rows += speed_rows(args.quick)
    print(f"Gradient checks ({source}, TwoLayerNet(784, 50, 10, seed=0), 100 images, float64; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n")
    print("| case | gradient | checker | time | verdict |\n|---|---|---|---:|---|")
    for case, bug, who, dt, verdict in rows:
        tt = ("–" if not np.isfinite(dt) else
              f"{dt * 1e6:.0f} µs" if dt < 1e-3 else f"{dt * 1e3:.1f} ms" if dt < 1 else f"{dt:.2f} s")
        print(f"| {case} | {bug} | {who} | {tt} | {verdict} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradcheck.json").write_text(json.dumps(
        [dict(case=c, gradient=b, checker=w, seconds=d, verdict=v) for c, b, w, d, v in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
