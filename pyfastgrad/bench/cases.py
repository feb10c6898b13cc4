"""What is measured: the gemm baseline and the seven benchmarks, one method each.

Every case uses the public API (``pyfastgrad`` top-level names, :mod:`pyfastgrad.reference`); the rows that
time a kernel alone (a fused ``train_steps`` loop, one ``opt_update``, the cpp loop on rows of nonzeros)
reach it through :mod:`._door`, the harness's one private accessor. Targets are not the library's business:
the repository's ``bench/targets.py`` checks them on the rows (see :class:`.runner.Runner`).
"""
from __future__ import annotations

import os
from dataclasses import replace
from functools import partial
from typing import Dict, List, Optional, Tuple

import numpy as np

import pyfastgrad as pfg
from pyfastgrad import reference as ref

from ._door import cpp_blas_info, csr_rows, kernel_mlp, kernel_module
from .data import one_hot
from .harness import BLAS_SPIN_S
from .peers import jax_mlp, torch_mlp
from .report import scaling_table
from .rows import Row, mlp_flops
from .runner import Runner

__all__ = ["BENCHMARKS", "DESCRIPTIONS", "GEMM_SHAPES_CASE", "Cases"]

BENCHMARKS: Tuple[str, ...] = ("numgrad_func", "numgrad_net", "backprop", "optimizer", "train_step",
                               "epoch", "scaling")

DESCRIPTIONS: Dict[str, str] = {
    "gemm": "machine gemm rate: numpy matmul of the backprop shapes (N=100, 784-100-10) and 1024^3",
    "numgrad_func": "numerical gradient of f(x) = sum(x**2), x of 1000 float64 (2000 f evaluations)",
    "numgrad_net": "numerical gradient of TwoLayerNet(784, 50, 10), 100 images, float64, all 39,760 params",
    "backprop": "backprop gradient (forward + backward), 784-100-10, batch 100",
    "optimizer": "one optimizer update of 79,510 parameters (the 784-100-10 net)",
    "train_step": "train step: forward + backward + SGD update, float32",
    "epoch": "one epoch: 600 steps of 100 images, 784-100-10, float32, SGD lr 0.1",
    "scaling": "train-step cost against hidden size and batch size (float32 and float64, vs numpy and torch, "
               "as a fraction of the gemm rate), against depth; numerical-gradient cost against hidden size",
}

_H = 1e-4  # the tutorials' step for central differences (scipy's and numdifftools' rows)
GEMM_SHAPES_CASE = "5 gemms of 784-100-10 backprop, N=100"
SCALING_HIDDEN = (100, 256, 512, 1024, 2048, 4096)  # 784-H-10, batch 100
SCALING_BATCH = (1, 10, 100, 1000)  # 784-100-10
_NG_SUB = 100  # numerical gradient: W1 elements the reference is timed on (its cost per element is constant)


def _pfg_threads() -> int:
    """pyfastgrad's thread count: the cpp backend's OpenMP threads, else the usable CPUs."""
    try:
        return int(cpp_blas_info()["openmp_threads"])
    except Exception:  # no cpp backend: numba and numpy use every usable CPU
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _line_name(r: Row) -> str:
    """The plot's line (and the table's row name) of a scaling row."""
    if r.backend == "torch":
        return "torch eager"
    if r.variant.startswith("net."):
        return f"{r.backend} {r.variant.split(' (')[0]}"
    if r.variant.startswith("reference"):
        return f"{r.backend} reference"
    return f"{r.backend} fused" if "fused" in r.variant else r.backend


class Cases(Runner):
    """The runner with its benchmarks: ``bench_<name>`` for every name of :data:`BENCHMARKS`."""

    DESCRIPTIONS = DESCRIPTIONS

    def bench_gemm(self) -> None:
        rng = np.random.default_rng(0)
        m, n, sizes = 1024, 100, [784, 100, 10]
        for dtype in (np.float32, np.float64):
            # the five gemms of 784-100-10 backprop at N = 100, with the same transposes
            x = rng.random((n, 784)).astype(dtype)
            W1, W2 = rng.standard_normal((784, 100)).astype(dtype), rng.standard_normal((100, 10)).astype(dtype)
            a1, z2 = np.empty((n, 100), dtype), np.empty((n, 10), dtype)
            d2, d1 = rng.standard_normal((n, 10)).astype(dtype), np.empty((n, 100), dtype)
            dW1, dW2 = np.empty_like(W1), np.empty_like(W2)

            def shapes(x=x, W1=W1, W2=W2, a1=a1, z2=z2, d2=d2, d1=d1, dW1=dW1, dW2=dW2):
                np.matmul(x, W1, out=a1)
                np.matmul(a1, W2, out=z2)
                np.matmul(a1.T, d2, out=dW2)
                np.matmul(d2, W2.T, out=d1)
                np.matmul(x.T, d1, out=dW1)

            A, Bm = rng.standard_normal((m, m)).astype(dtype), rng.standard_normal((m, m)).astype(dtype)
            C = np.empty((m, m), dtype)
            self.job("gemm", GEMM_SHAPES_CASE, "numpy", "matmul", dtype, shapes,
                     flops=mlp_flops(sizes, n))
            self.job("gemm", "1024x1024 @ 1024x1024", "numpy", "matmul", dtype,
                     lambda A=A, Bm=Bm, C=C: np.matmul(A, Bm, out=C), flops=2.0 * m ** 3)
        for r in self.flush():
            key = "large" if r.case.startswith("1024") else "shapes"
            # the best repeat: the machine's capability, robust to a busy moment
            self.gemm.setdefault(r.dtype, {})[key] = r.flops / r.min_s / 1e9
            self.gemm[r.dtype][key + "_median"] = r.gflops
        for r in self.rows:  # the rows above were added before the rates existed
            if r.bench == "gemm" and r.gflops is not None:
                big = self.gemm.get(r.dtype, {}).get("large")
                r.pct_gemm_large = r.gflops / big if big else None
                r.pct_gemm = r.pct_gemm_large
                r.gemm_basis = ("s" if r.dtype == "float32" else "d") + "gemm 1024^3"
        self.note("gemm", "numpy matmul (numpy's own OpenBLAS) with preallocated outputs; the rate of the best "
                          "repeat on the same shapes is the basis of the backprop/train-step/epoch percentages, "
                          "the 1024^3 one of the scaling percentages")
        for name, rates in self.gemm.items():
            self.note("gemm", f"{name}: best {rates.get('shapes', float('nan')):.1f} GFLOP/s on the backprop "
                              f"shapes, {rates.get('large', float('nan')):.1f} GFLOP/s on 1024^3")

    # -- 1. numerical gradient of a function -------------------------------------------------
    def bench_numgrad_func(self) -> None:
        B = "numgrad_func"
        x0 = np.random.default_rng(0).standard_normal(1000)
        exact = 2 * x0

        def f(x):  # the tutorials' function_2
            return np.sum(x ** 2)

        def err_of(grad_fn):
            return lambda: {"max_abs_err": float(np.abs(grad_fn() - exact).max())}

        case = "sum(x**2), n=1000, Python f"
        for b in self.order:
            x = x0.copy()
            g = partial(pfg.numerical_gradient, f, x, backend=b)
            self.job(B, case, b, "numerical_gradient", np.float64, g, is_ref=(b == "numpy"), extra_fn=err_of(g))
        if "numba" in self.backends:
            self.note(B, "the numba backend runs a Python f through the plain Python loop (like numpy); "
                         "only a numba-jitted f gets the nopython loop")
        try:
            from scipy.optimize import approx_fprime
            x = x0.copy()
            g = partial(approx_fprime, x, f, _H)
            self.job(B, case, "scipy", "approx_fprime (forward: n+1 evals)", np.float64, g, extra_fn=err_of(g))
        except ImportError:
            self.note(B, "scipy not installed: approx_fprime skipped")
        try:
            import numdifftools as nd
            G = nd.Gradient(f, step=_H, method="central", order=2)
            x = x0.copy()
            g = partial(G, x)
            self.job(B, case, "numdifftools", "Gradient(step=1e-4, central)", np.float64, g, extra_fn=err_of(g))
        except ImportError:
            self.note(B, "numdifftools not installed: skipped")
        self.flush()
        try:
            import numba
        except ImportError:
            self.note(B, "numba not installed: jitted-f case skipped")
            return

        @numba.njit(cache=False)
        def f_jit(x):
            s = 0.0
            for i in range(x.shape[0]):
                s += x[i] * x[i]
            return s

        case = "sum(x**2), n=1000, numba-jitted f"
        for b in self.order:
            x = x0.copy()
            g = partial(pfg.numerical_gradient, f_jit, x, backend=b)
            self.job(B, case, b, "numerical_gradient", np.float64, g, is_ref=(b == "numpy"), extra_fn=err_of(g))
        self.flush()
        self.note(B, "first_call_s of the jitted-f rows includes numba compiling f (numpy row) and the "
                     "nopython loop specialised on f (numba row); both are excluded from the medians")

    # -- 2. numerical gradient of a net ------------------------------------------------------
    def bench_numgrad_net(self) -> None:
        B = "numgrad_net"
        X, labels = self.images()
        x = X[:100].astype(np.float64)
        t = one_hot(labels[:100], 10, np.float64)
        proto = pfg.TwoLayerNet(784, 50, 10, seed=0, backend="numpy")
        n_total = proto.n_params
        K = 100 if self.cfg.quick else 1000
        n_w2 = proto.params["W2"].size
        n_sub = K + n_w2
        scale = n_total / n_sub
        case = f"TwoLayerNet(784,50,10), N=100, all {n_total:,} params"

        rnet = ref.TwoLayerNet(784, 50, 10, seed=0)
        for key in rnet.params:  # in place: the reference's layers hold these very arrays
            rnet.params[key][...] = proto.params[key]
        subset = (("W1", K), ("W2", n_w2))
        g_ref = {key: np.zeros(n) for key, n in subset}

        def ref_subset() -> None:
            # the reference's central difference over the stated subset only: a prefix view of each
            # parameter, perturbed in place (the loss reads the net's own arrays)
            for key, n in subset:
                g_ref[key][:] = ref.numerical_gradient(lambda _: rnet.loss(x, t), rnet.params[key].reshape(-1)[:n])

        self.job(B, case, "numpy", f"reference loop on {n_sub:,} params, x{scale:.1f}", np.float64, ref_subset,
                 warmup=lambda: rnet.loss(x, t), scale=scale, is_ref=True,
                 subset=f"first {K} of W1 + all {n_w2} of W2", subset_params=n_sub)
        self.note(B, f"reference: pyfastgrad.reference's central difference timed on {n_sub:,} of the "
                     f"{n_total:,} parameters (first {K} of W1, all of W2) and scaled by {scale:.2f}: its cost "
                     "per parameter is constant (a full forward pass per evaluation)")
        try:
            from scipy.optimize import approx_fprime
            W1f, W2f = rnet.params["W1"].reshape(-1), rnet.params["W2"].reshape(-1)
            v0 = np.concatenate([W1f[:K], W2f])

            def f_sub(v):
                W1f[:K] = v[:K]
                W2f[:] = v[K:]
                return rnet.loss(x, t)

            def scipy_run():
                approx_fprime(v0, f_sub, _H)
                f_sub(v0)  # restore the parameters

            self.job(B, case, "scipy", f"approx_fprime (forward) on {n_sub:,} params, x{scale:.1f}", np.float64,
                     scipy_run, warmup=lambda: f_sub(v0), scale=scale)
        except ImportError:
            pass
        for b in self.fast:
            net = pfg.TwoLayerNet(784, 50, 10, seed=0, backend=b)
            net.theta[:] = proto.theta

            def check(net=net):
                g = net.numerical_gradient(x, t)
                return {"max_abs_diff_vs_reference": float(max(
                    np.abs(g["W1"].reshape(-1)[:K] - g_ref["W1"]).max(),
                    np.abs(g["W2"].reshape(-1) - g_ref["W2"]).max()))}

            self.job(B, case, b, "net.numerical_gradient", np.float64,
                     lambda net=net: net.numerical_gradient(x, t), extra_fn=check)
        self.flush()
        self.finish(B)

    # -- 3. backprop -------------------------------------------------------------------------
    def bench_backprop(self) -> None:
        B = "backprop"
        X, labels = self.images()
        sizes, n = [784, 100, 10], 100
        flops = mlp_flops(sizes, n)
        case = "784-100-10, N=100"
        for dtype in (np.float32, np.float64):
            x = np.ascontiguousarray(X[:n], dtype=dtype)
            t = one_hot(labels[:n], 10, dtype)
            proto = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend="numpy")
            theta0 = proto.theta.copy()
            for b in self.order:
                net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
                mlp = kernel_mlp(net)
                grad = np.empty_like(net.theta)
                self.job(B, case, b, "kernel Mlp.loss_grad", dtype,
                         lambda mlp=mlp, net=net, grad=grad, x=x, t=t: mlp.loss_grad(net.theta, x, t, 0.0, grad),
                         flops=flops, is_ref=(b == "numpy"))
                if b == "cpp":  # the same call kept on the gemms (what it does for dense inputs)
                    self.job(B, case, b, "kernel Mlp.loss_grad(sparse=False)", dtype,
                             lambda mlp=mlp, net=net, grad=grad, x=x, t=t: mlp.loss_grad(net.theta, x, t, 0.0, grad,
                                                                                         sparse=False),
                             flops=flops)
                self.job(B, case, b, "net.gradient()", dtype, lambda net=net, x=x, t=t: net.gradient(x, t), flops=flops)
            if self.torch is not None:
                torch = self.torch
                params, forward, _ = torch_mlp(torch, sizes, theta0)
                xt, yt = torch.from_numpy(x), torch.from_numpy(labels[:n].astype(np.int64))
                ce = torch.nn.functional.cross_entropy

                def torch_grad(params=params, forward=forward, xt=xt, yt=yt, ce=ce):
                    for p in params:
                        p.grad = None
                    ce(forward(xt), yt).backward()

                self.job(B, case, "torch", "eager fwd+bwd", dtype, torch_grad, flops=flops)
            if self.jax is not None:
                jax = self.jax
                jparams, loss = jax_mlp(jax, sizes, theta0)
                g = jax.jit(jax.grad(loss))
                xj, tj = jax.numpy.asarray(x), jax.numpy.asarray(t)
                self.job(B, case, "jax", "jit(grad)", dtype,
                         lambda g=g, p=jparams, xj=xj, tj=tj, jax=jax: jax.block_until_ready(g(p, xj, tj)),
                         flops=flops)
            self.flush()
        self.note(B, "flops: forward 2N(784*100 + 100*10), dW the same, dX of layer 2 only 2N*10*100 "
                     f"= {flops / 1e6:.2f} MFLOP per call; % is of the numpy gemm rate on the same shapes")
        self.note(B, "the numpy reference's loss_grad runs the forward pass twice (loss, then gradient), as "
                     "the tutorials' loss + gradient calls do")
        self.note(B, "cpp's loss_grad runs the first layer on the nonzeros of x when at most 40% of it is "
                     "nonzero (MNIST: 19%): GFLOP/s and % are dense-equivalent there; sparse=False keeps the gemms")
        self.finish(B)
        for dtype in ("float32", "float64"):
            cpp = self.find(B, "cpp", variant="kernel Mlp.loss_grad", dtype=dtype)
            tr = self.find(B, "torch", dtype=dtype)
            if cpp is None or cpp.variant != "kernel Mlp.loss_grad" or tr is None:
                continue
            cpp.extra["speedup_vs_torch"] = tr.median_s / cpp.median_s
            if dtype != "float32":
                self.note(B, f"float64: cpp is {cpp.extra['speedup_vs_torch']:.2f}x torch eager")

    # -- 4. optimizer ------------------------------------------------------------------------
    def bench_optimizer(self) -> None:
        B = "optimizer"
        n = pfg.Net([784, 100, 10], backend="numpy").n_params
        rng = np.random.default_rng(0)
        theta_src = rng.standard_normal(n) * 0.01
        grad_src = rng.standard_normal(n) * 1e-3
        dtypes = (np.float32,) if self.cfg.quick else (np.float32, np.float64)
        for opt, lr, words in (("sgd", 0.01, 3), ("adam", 0.001, 7)):
            case = f"{'SGD' if opt == 'sgd' else 'Adam'}, {n:,} params"
            hyper = np.array([lr, 0.9, 0.999])
            for dtype in dtypes:
                nbytes = words * n * np.dtype(dtype).itemsize  # read/write traffic of one update
                for b in self.order:
                    k = kernel_module(b)
                    theta, grad = theta_src.astype(dtype), grad_src.astype(dtype)
                    s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
                    self.job(B, case, b, "kernel opt_update", dtype,
                             lambda k=k, th=theta, g=grad, s1=s1, s2=s2, opt=opt, hyper=hyper:
                             k.opt_update(opt, th, g, s1, s2, hyper, 10),
                             nbytes=nbytes, is_ref=(b == "numpy"))
                if self.torch is not None:
                    torch = self.torch
                    cls = torch.optim.SGD if opt == "sgd" else torch.optim.Adam
                    for variant, kw in (("torch.optim", {}), ("torch.optim fused=True", {"fused": True})):
                        p = torch.nn.Parameter(torch.from_numpy(theta_src.astype(dtype)))
                        p.grad = torch.from_numpy(grad_src.astype(dtype))
                        try:
                            o = cls([p], lr=lr, **kw)
                        except Exception as exc:  # fused needs a recent torch
                            self.note(B, f"{variant} unavailable: {exc}")
                            continue
                        self.job(B, case, "torch", variant, dtype, o.step, nbytes=nbytes)
                self.flush()
        self.note(B, "GB/s: 3 (SGD) or 7 (Adam) vectors of the parameter count read or written per update")
        self.finish(B)

    # -- 5. train step -----------------------------------------------------------------------
    def bench_train_step(self) -> None:
        B = "train_step"
        q = self.cfg.quick
        X, labels = self.images()
        rng = np.random.default_rng(1)
        Xs = rng.standard_normal((8192, 64)).astype(np.float32)
        ls = rng.integers(0, 10, 8192)
        cases = (([784, 100, 10], 100, X, labels, 50 if q else 200, 5 if q else 20, "MNIST"),
                 ([64, 32, 10], 32, Xs, ls, 500 if q else 5000, 50 if q else 500, "synthetic N(0,1) data"))
        dtype = np.float32
        for sizes, bs, Xd, ld, S, S_ref, src in cases:
            case = f"{'-'.join(map(str, sizes))}, batch {bs}"
            flops = mlp_flops(sizes, bs)
            T = one_hot(ld, sizes[-1], dtype)
            idx = rng.integers(0, Xd.shape[0], size=(S, bs)).astype(np.int64)
            xb, tb, yb = Xd[idx[0]], T[idx[0]], ld[idx[0]]
            theta0 = pfg.TwoLayerNet(*sizes, seed=0, dtype=dtype, backend="numpy").theta.copy()
            hyper = np.array([0.1, 0.0, 0.0])
            for b in self.order:
                net = pfg.TwoLayerNet(*sizes, seed=0, dtype=dtype, backend=b)
                mlp = kernel_mlp(net)
                s1, s2 = np.zeros_like(net.theta), np.zeros_like(net.theta)
                steps = S_ref if b == "numpy" else S
                part = np.ascontiguousarray(idx[:steps])
                losses: List[np.ndarray] = []

                def fused(mlp=mlp, net=net, s1=s1, s2=s2, part=part, losses=losses, Xd=Xd, T=T, hyper=hyper):
                    losses.append(mlp.train_steps(net.theta, Xd, T, part, 0.0, "sgd", hyper, s1, s2, 0))
                    del losses[:-1]

                self.job(B, case, b, f"fused loop, {steps} steps/call", dtype, fused, per=steps,
                         warmup=lambda mlp=mlp, net=net, s1=s1, s2=s2, part=part, Xd=Xd, T=T, hyper=hyper:
                         mlp.train_steps(net.theta, Xd, T, part[:2], 0.0, "sgd", hyper, s1, s2, 0),
                         flops=flops, is_ref=(b == "numpy"), steps_per_call=steps,
                         extra_fn=lambda losses=losses: {"losses_finite": bool(np.isfinite(losses[-1]).all())})
                if b == "cpp" and src == "MNIST":
                    self._csr_train_step_job(B, case, sizes, Xd, T, part, hyper, flops, steps)
                opt = pfg.SGD(lr=0.1)
                self.job(B, case, b, "per Python call net.train_step", dtype,
                         lambda net=net, opt=opt, xb=xb, tb=tb: net.train_step(xb, tb, opt), flops=flops)
            if self.torch is not None:
                torch = self.torch
                params, forward, _ = torch_mlp(torch, sizes, theta0)
                o = torch.optim.SGD(params, lr=0.1)
                xt, yt = torch.from_numpy(xb), torch.from_numpy(yb.astype(np.int64))
                ce = torch.nn.functional.cross_entropy

                def torch_step(o=o, forward=forward, xt=xt, yt=yt, ce=ce):
                    o.zero_grad(set_to_none=True)
                    ce(forward(xt), yt).backward()
                    o.step()

                self.job(B, case, "torch", "eager step per call", dtype, torch_step, flops=flops)
            if self.jax is not None:
                jax = self.jax
                jparams, loss = jax_mlp(jax, sizes, theta0)

                def _step(p, x, t, loss=loss, jax=jax):
                    g = jax.grad(loss)(p, x, t)
                    return tuple(a - 0.1 * d for a, d in zip(p, g))

                jstep = jax.jit(_step)
                xj, tj = jax.numpy.asarray(xb), jax.numpy.asarray(tb)
                state = [jparams]

                def jax_step(jstep=jstep, state=state, xj=xj, tj=tj, jax=jax):
                    state[0] = jstep(state[0], xj, tj)
                    jax.block_until_ready(state[0])

                self.job(B, case, "jax", "jit step per call", dtype, jax_step, flops=flops)
            self.flush()
            self.note(B, f"{case}: data {src}; fused rows gather a random batch per step inside the kernel; "
                         "per-call rows (pyfastgrad, torch, jax) reuse one pre-gathered batch")
        self.note(B, "fused: Mlp.train_steps over many steps in one call, time divided by the steps")
        self.finish(B)

    def _csr_train_step_job(self, B: str, case: str, sizes, Xd: np.ndarray, T: np.ndarray, part: np.ndarray,
                            hyper: np.ndarray, flops: float, steps: int) -> None:
        """The cpp fused loop on the inputs as rows of nonzeros (built once, outside the timing)."""
        csr = csr_rows(Xd)
        net = pfg.TwoLayerNet(*sizes, seed=0, dtype=Xd.dtype, backend="cpp")
        mlp = kernel_mlp(net)
        s1 = np.zeros_like(net.theta)
        losses: List[np.ndarray] = []

        def fused_csr():
            losses.append(mlp.train_steps(net.theta, csr, T, part, 0.0, "sgd", hyper, s1, s1, 0))
            del losses[:-1]

        # its own group, after a long enough idle pause: BLAS threads still spinning after other rows
        # would take a core from its OpenMP threads
        self.job(B, case, "cpp", f"fused loop, CSR input, {steps} steps/call", Xd.dtype, fused_csr, per=steps,
                 warmup=lambda: mlp.train_steps(net.theta, csr, T, part[:2], 0.0, "sgd", hyper, s1, s1, 0),
                 flops=flops, steps_per_call=steps, group="cpp-csr", pause=max(self.cfg.pause, BLAS_SPIN_S),
                 input_density=csr.density,
                 extra_fn=lambda: {"losses_finite": bool(np.isfinite(losses[-1]).all())})
        self.note(B, f"{case}: the 'CSR input' row trains from the nonzeros of each image (density "
                     f"{csr.density:.2f}, CsrRows built once, untimed); its GFLOP/s count the dense-equivalent "
                     "flops, so it can exceed the gemm rate")

    # -- 6. epoch ----------------------------------------------------------------------------
    def bench_epoch(self) -> None:
        B = "epoch"
        q = self.cfg.quick
        X, labels = self.images()
        dtype, sizes, bs, steps, lr = np.float32, [784, 100, 10], 100, 600, 0.1
        n = X.shape[0]
        if n < steps * bs:
            reps = -(-steps * bs // n)
            X, labels = np.tile(X, (reps, 1)), np.tile(labels, reps)
        idx = np.random.default_rng(0).permutation(steps * bs).astype(np.int64).reshape(steps, bs)
        T = one_hot(labels, 10, dtype)
        case = f"784-100-10, {steps} steps x {bs}"
        flops = mlp_flops(sizes, bs) * steps
        theta0 = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend="numpy").theta.copy()
        hyper = np.array([lr, 0.0, 0.0])
        k_all = 150 if q else steps  # quick: a stated subset of the steps, scaled to the epoch

        def how(k: int) -> str:
            return f" ({k} of {steps} steps, x{steps / k:g})" if k != steps else ""

        for b in self.order:
            net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
            mlp = kernel_mlp(net)
            s1, s2 = np.zeros_like(net.theta), np.zeros_like(net.theta)
            n_steps = 60 if (b == "numpy" and q) else k_all
            part = np.ascontiguousarray(idx[:n_steps])
            out: List[np.ndarray] = []

            def run(mlp=mlp, net=net, s1=s1, s2=s2, part=part, out=out):
                out.append(mlp.train_steps(net.theta, X, T, part, 0.0, "sgd", hyper, s1, s2, 0))
                del out[:-1]

            self.job(B, case, b, "kernel Mlp.train_steps" + how(n_steps), dtype, run,
                     setup=lambda net=net: net.theta.__setitem__(slice(None), theta0),
                     warmup=lambda mlp=mlp, net=net, s1=s1, s2=s2, part=part:
                     mlp.train_steps(net.theta, X, T, part[:2], 0.0, "sgd", hyper, s1, s2, 0),
                     scale=steps / n_steps, flops=flops, is_ref=(b == "numpy"),
                     extra_fn=lambda out=out: {"last_loss": float(out[-1][-1])})
            if b in ("cpp", "numba"):  # the input fit hands these backends on MNIST
                csr = csr_rows(X)
                net_c = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
                mlp_c = kernel_mlp(net_c)
                s1_c, s2_c = np.zeros_like(net_c.theta), np.zeros_like(net_c.theta)  # its own optimizer state
                out_c: List[np.ndarray] = []

                def run_csr(mlp=mlp_c, net=net_c, part=part, out=out_c, csr=csr, s1=s1_c, s2=s2_c):
                    out.append(mlp.train_steps(net.theta, csr, T, part, 0.0, "sgd", hyper, s1, s2, 0))
                    del out[:-1]

                self.job(B, case, b, "kernel Mlp.train_steps, CSR input" + how(n_steps), dtype, run_csr,
                         setup=lambda net=net_c: net.theta.__setitem__(slice(None), theta0),
                         warmup=lambda mlp=mlp_c, net=net_c, part=part, csr=csr, s1=s1_c, s2=s2_c:
                         mlp.train_steps(net.theta, csr, T, part[:2], 0.0, "sgd", hyper, s1, s2, 0),
                         scale=steps / n_steps, flops=flops, group=f"{b}-csr",
                         pause=max(self.cfg.pause, BLAS_SPIN_S), input_density=csr.density,
                         extra_fn=lambda out=out_c: {"last_loss": float(out[-1][-1])})
                self.note(B, "'CSR input': the images as rows of nonzeros (CsrRows, built once, untimed), as "
                             "pfg.fit does with the cpp and numba backends; GFLOP/s count the dense-equivalent flops")
        for b in ([] if q else self.fast):  # fit always runs the whole epoch: full mode only
            net = pfg.TwoLayerNet(784, 100, 10, seed=0, dtype=dtype, backend=b)
            kernel_s: List[float] = []

            def run_fit(net=net, kernel_s=kernel_s):
                h = pfg.fit(net, X, labels, optimizer="sgd", lr=lr, epochs=1, batch_size=bs, progress=False,
                            seed=0)
                kernel_s.append(h.epoch_time[0])

            self.job(B, case, b, "pfg.fit(epochs=1), wall", dtype, run_fit,
                     setup=lambda net=net: net.theta.__setitem__(slice(None), theta0),
                     warmup=lambda net=net: pfg.fit(net, X[:1000], labels[:1000], lr=lr, epochs=1,
                                                    batch_size=bs, progress=False),
                     flops=flops, extra_fn=lambda kernel_s=kernel_s: {"fit_epoch_time_s": list(kernel_s)})
        if not q:
            self.note(B, "fit rows: wall time of pfg.fit(..., epochs=1), which also validates the inputs, builds "
                         "the CSR copy and measures the accuracy on 10,000 training images (train_eval); its own "
                         "epoch_time is in the JSON")
        else:
            self.note(B, "quick mode: the numpy reference runs 60 of the 600 steps (scaled x10), the others "
                         f"{k_all} (scaled x{steps / k_all:g}); no fit rows")
        if self.torch is not None:
            torch = self.torch
            params, forward, treset = torch_mlp(torch, sizes, theta0)
            o = torch.optim.SGD(params, lr=lr)
            Xt, yt, it = torch.from_numpy(X), torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(idx)
            ce = torch.nn.functional.cross_entropy
            last: List[float] = []

            def torch_epoch(k: int = k_all):
                for s in range(k):
                    rows = it[s]
                    o.zero_grad(set_to_none=True)
                    loss = ce(forward(Xt.index_select(0, rows)), yt.index_select(0, rows))
                    loss.backward()
                    o.step()
                last.append(float(loss.detach()))

            self.job(B, case, "torch", "eager loop" + how(k_all), dtype, torch_epoch,
                     setup=lambda: treset(theta0), warmup=lambda: torch_epoch(2), scale=steps / k_all,
                     flops=flops, extra_fn=lambda: {"last_loss": last[-1]})
        if self.jax is not None:
            jax = self.jax
            jnp = jax.numpy
            params0, loss = jax_mlp(jax, sizes, theta0)
            Xj, Tj, ij = jnp.asarray(X), jnp.asarray(T), jnp.asarray(idx[:k_all])

            def sgd(p, rows, Xa, Ta):
                lval, g = jax.value_and_grad(loss)(p, Xa[rows], Ta[rows])
                return tuple(a - lr * d for a, d in zip(p, g)), lval

            jstep = jax.jit(sgd)

            @jax.jit
            def jepoch(p, Xa, Ta, ia):
                return jax.lax.scan(lambda c, rows: sgd(c, rows, Xa, Ta), p, ia)

            last_j: List[float] = []

            def jax_loop(k: int = k_all):
                p = params0
                for s in range(k):
                    p, lval = jstep(p, ij[s], Xj, Tj)
                last_j.append(float(lval))

            last_s: List[float] = []

            def jax_scan():
                _, ls = jepoch(params0, Xj, Tj, ij)
                last_s.append(float(ls[-1]))

            self.job(B, case, "jax", "jit step, Python loop" + how(k_all), dtype, jax_loop,
                     warmup=lambda: jax_loop(2), scale=steps / k_all, flops=flops,
                     extra_fn=lambda: {"last_loss": last_j[-1]})
            self.job(B, case, "jax", "jit(lax.scan) over the steps" + how(k_all), dtype, jax_scan,
                     scale=steps / k_all, flops=flops, extra_fn=lambda: {"last_loss": last_s[-1]})
            self.note(B, "jax rows: first_call_s includes XLA compilation")
        self.flush()
        self.finish(B)
        cpp = self.best_cpp_kernel(B)
        tr = self.find(B, "torch")
        if cpp is not None and tr is not None:
            cpp.extra["speedup_vs_torch"] = tr.median_s / cpp.median_s

    def best_cpp_kernel(self, bench: str, case: Optional[str] = None, prefix: str = "kernel") -> Optional[Row]:
        """The fastest cpp row of ``bench`` (and ``case``) whose variant starts with ``prefix``."""
        rows = [r for r in self.rows if r.bench == bench and r.backend == "cpp" and r.variant.startswith(prefix)
                and (case is None or r.case == case)]
        return min(rows, key=lambda r: r.median_s) if rows else None

    # -- 7. scaling --------------------------------------------------------------------------
    def bench_scaling(self) -> None:
        """Train-step cost of 784-H-10 against H and of 784-100-10 against the batch, float32 and float64;
        depth (float32) and the numerical gradient against H."""
        B = "scaling"
        q = self.cfg.quick
        X32, labels = self.images()
        threads = _pfg_threads()
        saved_cfg, torch_threads = self.cfg, None
        if not q:  # ~100 rows in 24 groups: each group's rounds idle 0.15 s per library switch (see run_jobs),
            # so two rounds and a smaller budget keep the section near two minutes on an idle machine
            self.cfg = replace(self.cfg, budget=0.3, rounds=2)
        if self.torch is not None:
            torch_threads = self.torch.get_num_threads()
            self.torch.set_num_threads(threads)  # the same count as pyfastgrad's OpenMP/BLAS threads
        try:
            skipped = self._scaling_train_steps(B, X32, labels, q)
            self._scaling_numgrad(B, X32, labels, q)
        finally:
            self.cfg = saved_cfg
            if torch_threads is not None:
                self.torch.set_num_threads(torch_threads)
        self.finish(B)
        self._scaling_points(B)
        rates = ", ".join(f"{'s' if d == 'float32' else 'd'}gemm {r['large']:.1f} GFLOP/s"
                          for d, r in self.gemm.items() if r.get("large"))
        self.note(B, f"% gemm: of this run's 1024^3 gemm rate of the row's dtype (best repeat: {rates}); "
                     "GFLOP/s count the gemm flops of the dense computation")
        self.note(B, f"threads: pyfastgrad {threads} (OpenMP and BLAS), torch set to {threads} for these rows "
                     "(torch.set_num_threads, restored after)")
        self.note(B, "rows: the fused loop (Mlp.train_steps, random batch gathered per step inside the kernel) on "
                     "every backend; cpp also one net.train_step call per step; torch eager: zero_grad, addmm/relu "
                     "forward, cross_entropy, backward, SGD step per call; per-call rows reuse one batch")
        self.note(B, "cpp's net.train_step takes the dense x as given; its loss_grad runs the first layer on the "
                     "nonzeros of MNIST rows (<= 40% nonzero), so its GFLOP/s are dense-equivalent")
        self.note(B, "x numpy: the numpy reference's fused loop over the row; x torch: torch eager over the row")
        if skipped:
            self.note(B, "numpy reference skipped (a call would exceed ~20 GFLOP): " + "; ".join(skipped))
        else:
            self.note(B, "numpy reference measured at every point")
        self.note(B, f"numerical gradient: the reference is timed on {_NG_SUB} elements of W1 and scaled")

    def _scaling_grid(self, q: bool) -> List[Tuple[Tuple[int, ...], int, List[Tuple[str, int]], Tuple]]:
        """(sizes, batch, [(axis, value)...], dtypes) per point; a point on several axes is timed once."""
        hidden = (100, 512) if q else SCALING_HIDDEN
        batches = (1, 100) if q else SCALING_BATCH
        depths = (1, 2) if q else (1, 2, 3, 4)
        both = (np.float32, np.float64)
        grid: Dict[Tuple[Tuple[int, ...], int], List] = {}
        for h in hidden:
            grid.setdefault(((784, h, 10), 100), [[], both])[0].append(("hidden", h))
        for bs in batches:
            grid.setdefault(((784, 100, 10), bs), [[], both])[0].append(("batch", bs))
        for d in depths:  # float32 only: the fused loop's cost per layer
            grid.setdefault((tuple([784] + [100] * d + [10]), 100), [[], (np.float32,)])[0].append(("depth", d))
        return [(sizes, bs, axes, dtypes) for (sizes, bs), (axes, dtypes) in grid.items()]

    def _scaling_train_steps(self, B: str, X32: np.ndarray, labels: np.ndarray, q: bool) -> List[str]:
        rng = np.random.default_rng(2)
        X64: Optional[np.ndarray] = None
        skipped: List[str] = []
        hyper = np.array([0.01, 0.0, 0.0])
        for sizes, bs, axes, dtypes in self._scaling_grid(q):
            flops = mlp_flops(sizes, bs)
            # a few ms of cpp work per call: fewer steps for bigger problems
            steps = int(min(200 if q else 2000, max(5, 4e8 / flops)))
            idx = rng.integers(0, X32.shape[0], size=(steps, bs)).astype(np.int64)
            net_name = "-".join(map(str, sizes))
            case = f"{net_name}, batch {bs}"
            peers = len(sizes) == 3  # per-call and torch rows on the hidden and batch axes
            for dtype in dtypes:
                if dtype == np.float64 and X64 is None:
                    X64 = X32.astype(np.float64)
                X = X32 if dtype == np.float32 else X64
                T = one_hot(labels, 10, dtype)
                xb, tb, yb = X[idx[0]], T[idx[0]], labels[idx[0]]
                theta0 = pfg.Net(list(sizes), weight_init="he", seed=0, dtype=dtype, backend="numpy").theta.copy()
                tag = dict(axes=axes, sizes=list(sizes), batch=bs, steps_per_call=steps)
                for b in self.order:
                    k = max(1, steps // 10) if b == "numpy" else steps
                    if b == "numpy" and flops * k > 2e10:
                        skipped.append(f"{case} {np.dtype(dtype).name}")
                        continue
                    net = pfg.Net(list(sizes), weight_init="he", seed=0, dtype=dtype, backend=b)
                    mlp = kernel_mlp(net)
                    s1 = np.zeros_like(net.theta)
                    part = np.ascontiguousarray(idx[:k])
                    self.job(B, case, b, "train step (fused)", dtype,
                             lambda mlp=mlp, net=net, s1=s1, part=part, X=X, T=T:
                             mlp.train_steps(net.theta, X, T, part, 0.0, "sgd", hyper, s1, s1, 0),
                             per=k, warmup=lambda mlp=mlp, net=net, s1=s1, part=part, X=X, T=T:
                             mlp.train_steps(net.theta, X, T, part[:1], 0.0, "sgd", hyper, s1, s1, 0),
                             flops=flops, gemm_basis="large", is_ref=(b == "numpy"), **tag)
                    if b == "cpp" and peers:
                        net_c = pfg.Net(list(sizes), weight_init="he", seed=0, dtype=dtype, backend=b)
                        opt = pfg.SGD(lr=0.01)
                        self.job(B, case, b, "net.train_step (one call)", dtype,
                                 lambda net=net_c, opt=opt, xb=xb, tb=tb: net.train_step(xb, tb, opt),
                                 flops=flops, gemm_basis="large", **tag)
                if self.torch is not None and peers:
                    torch = self.torch
                    params, forward, _ = torch_mlp(torch, sizes, theta0)
                    o = torch.optim.SGD(params, lr=0.01)
                    xt, yt = torch.from_numpy(xb), torch.from_numpy(yb.astype(np.int64))

                    def torch_step(o=o, forward=forward, xt=xt, yt=yt, ce=torch.nn.functional.cross_entropy):
                        o.zero_grad(set_to_none=True)
                        ce(forward(xt), yt).backward()
                        o.step()

                    self.job(B, case, "torch", "eager step per call", dtype, torch_step, flops=flops,
                             gemm_basis="large", **tag)
                self.flush()
        return skipped

    def _scaling_numgrad(self, B: str, X: np.ndarray, labels: np.ndarray, q: bool) -> None:
        """Numerical gradient against hidden size (float64, 100 images)."""
        x = X[:100].astype(np.float64)
        t = one_hot(labels[:100], 10, np.float64)
        n_sub = _NG_SUB
        for h in ((10, 50) if q else (10, 50, 200)):
            proto = pfg.TwoLayerNet(784, h, 10, seed=0, backend="numpy")
            case = f"numgrad hidden={h}: {proto.n_params:,} params, N=100"
            rnet = ref.TwoLayerNet(784, h, 10, seed=0)
            for key in rnet.params:
                rnet.params[key][...] = proto.params[key]
            pw1 = rnet.params["W1"].reshape(-1)

            def ref_sub(rnet=rnet, pw1=pw1):
                ref.numerical_gradient(lambda _, rnet=rnet: rnet.loss(x, t), pw1[:n_sub])

            self.job(B, case, "numpy", f"reference, {n_sub} params scaled", np.float64, ref_sub,
                     scale=proto.n_params / n_sub, warmup=lambda rnet=rnet: rnet.loss(x, t),
                     is_ref=True, axes=[("numgrad_hidden", h)])
            for b in self.fast:
                net = pfg.TwoLayerNet(784, h, 10, seed=0, backend=b)
                net.theta[:] = proto.theta
                self.job(B, case, b, "net.numerical_gradient", np.float64,
                         lambda net=net: net.numerical_gradient(x, t), axes=[("numgrad_hidden", h)])
            self.flush()

    def _scaling_points(self, B: str) -> None:
        """The plot's and the table's points (``self.scaling``), with the ratios to numpy and torch."""
        rows = [r for r in self.rows if r.bench == B and "axes" in r.extra]
        torch_of = {(r.case, r.dtype): r for r in rows if r.backend == "torch"}
        for r in rows:
            tr = torch_of.get((r.case, r.dtype))
            if tr is not None:
                r.extra["x_torch"] = tr.median_s / r.median_s
            for axis, value in r.extra["axes"]:
                if axis == "depth" and (r.dtype != "float32" or "fused" not in r.variant):
                    continue  # the depth sweep is float32 fused loops (its depth-1 point is shared)
                kind = "numgrad" if axis == "numgrad_hidden" else "train_step"
                self.scaling.append({
                    "kind": kind, "axis": "hidden" if kind == "numgrad" else axis, "value": value,
                    "case": r.case, "backend": r.backend, "variant": r.variant, "line": _line_name(r),
                    "dtype": r.dtype, "seconds": r.median_s, "min_s": r.min_s, "max_s": r.max_s,
                    "repeats": r.repeats, "busy_other": r.busy_other, "gflops": r.gflops,
                    "pct_gemm": r.pct_gemm, "gemm_basis": r.gemm_basis, "x_numpy": r.ratio,
                    "x_torch": r.extra.get("x_torch")})

    def _section(self, name: str) -> str:
        if name != "scaling" or not self.scaling:
            return super()._section(name)
        text = scaling_table(self.scaling, self.gemm)
        for n in self.notes.get(name, []):
            text += f"\n  note: {n}"
        return text

    # -- run ---------------------------------------------------------------------------------
