"""The generic path of composed nets: a layer stack run on one backend's whole-batch layer kernels.

A :class:`Program` has the interface of the backends' ``Mlp`` (``predict``, ``loss``, ``loss_grad``,
``numerical_gradient``, ``kink_counts``, ``train_steps`` on the flat ``theta``), so ``fit``,
``train_step``, ``gradient_check`` and the optimizers work on any :class:`~pyfastgrad.Sequential`
net unchanged. Affine layers are BLAS products (``numpy.dot``); activations, Batch Normalization and
Dropout call the backend's kernels (csrc/kernels/layers.hpp, ``_backends/numba.py``, ``_backends/numpy.py``); the
loss head is a few numpy array operations. Dropout masks are drawn in numpy from the net's
generator, so every backend sees the same masks.

``loss``/``loss_grad``/``numerical_gradient`` are the training-mode function (batch statistics,
dropout masks); ``predict`` and ``eval_loss`` the evaluation mode (running statistics, dropout as a
scale). Only ``loss_grad`` (the training step) updates the running statistics.

The numerical gradient is net-aware: a weight ``W[i, j]`` of an Affine layer changes only column
``j`` of its output, and Batch Normalization, activations and Dropout act column by column, so the
column is followed alone up to the next Affine layer (every ``W[:, j]``, ``b[j]`` and the
following ``gamma[j]``/``beta[j]`` at once, as a stack of variants) and enters it as a rank-1
change; only the layers after that are recomputed in full, for all variants in one batched pass.
It runs in float64 (from the parameters as stored) and also counts, per parameter, the rows whose
ReLU states a step of +-h changes (``kink_counts``, for ``gradient_check``).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from . import reference as _ref
from . import spec
from ._backends import kernels
from ._sparse import CsrRows
from .spec import full_hyper as _full_hyper

_RELU, _SIGMOID, _TANH, _LEAKY, _IDENTITY = (spec.ACT_CODE[k] for k in
                                             ("relu", "sigmoid", "tanh", "leaky_relu", "identity"))

BN_EPS = _ref.BN_EPS
_CHUNK = 1 << 21  # elements of a batched variant pass (bounds its memory to ~16 MB per array)


class Op:
    """One layer of a compiled stack: ``kind`` and where its parameters live in ``theta``."""

    __slots__ = ("kind", "layer", "ws", "wshape", "bs", "code", "alpha", "ratio", "index")

    def __init__(self, kind: str, layer, ws=None, wshape=None, bs=None, code: int = -1, alpha: float = 0.0,
                 ratio: float = 0.0, index: int = 0) -> None:
        self.kind, self.layer, self.ws, self.wshape, self.bs = kind, layer, ws, wshape, bs
        self.code, self.alpha, self.ratio, self.index = code, alpha, ratio, index


def _param(theta: np.ndarray, sl: slice, shape) -> np.ndarray:
    return theta[sl].reshape(shape)


# ------------------------------------------------------------------ loss heads (numpy, any backend)
def head_loss(kind: str, z: np.ndarray, t: np.ndarray) -> float:
    """Mean loss over the rows of the head ``kind`` at logits ``z`` (N, C), dense targets ``t``."""
    if kind == "softmax":
        return float(_ref.softmax_cross_entropy(z, t))
    if kind == "mse":
        return float(_ref.mean_squared_error(z, t))
    if kind == "bce":
        return float(_ref.sigmoid_cross_entropy(z, t))
    if kind == "hinge":
        return float(_ref.hinge_loss(z, t.argmax(axis=1)))
    raise ValueError(f"unknown loss {kind!r}")


def head_grad(kind: str, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """d loss / d z of :func:`head_loss`, in z's dtype."""
    n = z.shape[0]
    if kind == "softmax":
        return (_ref.softmax(z) - t) / z.dtype.type(n)
    if kind == "mse":
        return (z - t) / z.dtype.type(n)
    if kind == "bce":
        return (_ref.sigmoid(z) - t) / z.dtype.type(n)
    layer = _ref.HingeLoss()
    layer.forward(z, t.argmax(axis=1))
    return layer.backward(1).astype(z.dtype)


def head_loss_batched(kind: str, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """:func:`head_loss` of every variant of z (V, N, C) at once: (V,) float64."""
    n = z.shape[1]
    if kind == "softmax":
        m = z.max(axis=2, keepdims=True)
        lse = np.log(np.exp(z - m).sum(axis=2, keepdims=True)) + m
        return -np.einsum("vnc,nc->v", z - lse, t) / n
    if kind == "mse":
        d = z - t
        return 0.5 * np.einsum("vnc,vnc->v", d, d) / n
    if kind == "bce":
        return (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).sum(axis=(1, 2)) / n
    raise ValueError(f"no batched loss for {kind!r}")


class Program:
    """A layer stack on one backend (see the module docstring). ``kern``: the backend module, or
    None for the reference path (the layers' own ``forward``/``backward``, for stacks with a layer
    that has no kernel)."""

    def __init__(self, ops: List[Op], head: str, dtype, n_in: int, n_out: int, kern, masks) -> None:
        self.ops, self.head, self.dtype = ops, head, np.dtype(dtype)
        self.n_in, self.n_out = n_in, n_out
        self.kern = kern
        self._masks = masks  # callable(shapes, dtype) -> list of 0/1 masks, one per Dropout op
        self.flags = {"richardson": False}  # the owning net's (shared dict): set by gradient_check
        self.n_params = sum(0 if op.ws is None else (op.ws.stop - op.ws.start) + (op.bs.stop - op.bs.start)
                            for op in ops)

    # ------------------------------------------------------------------ forward / backward
    def _draw_masks(self, x: np.ndarray, dtype) -> list:
        shapes, width = [], x.shape[1]
        for op in self.ops:
            if op.kind == "affine":
                width = op.wshape[1]
            elif op.kind == "dropout":
                shapes.append((x.shape[0], width))
        return self._masks(shapes, dtype, [op.ratio for op in self.ops if op.kind == "dropout"]) if shapes else []

    def forward(self, theta: np.ndarray, x: np.ndarray, train: bool, masks=None, cache: Optional[list] = None,
                update_stats: bool = False) -> np.ndarray:
        """Scores (N, n_out). ``cache``: a list that receives what backward needs."""
        if x.dtype != self.dtype:  # float32 images (input_dtypes: read in place by predict's Mlp only)
            x = x.astype(self.dtype)
        k, a, mi = self.kern, x, 0
        dot = k.matmul if k is not None else np.dot
        # the first layer's product over x's nonzeros where the backend has it (MNIST: ~19% nonzero)
        first = getattr(k, "first_layer_product", None) if a.flags.c_contiguous else None
        for op in self.ops:
            if op.kind == "affine":
                W, b = _param(theta, op.ws, op.wshape), theta[op.bs]
                if cache is not None:
                    cache.append(a)
                a = (first(a, W) if first is not None and a is x else dot(a, W)) + b
            elif op.kind == "act":
                z = a
                a = k.act_forward(op.code, op.alpha, z) if k is not None else op.layer.forward(z)
                if cache is not None:
                    cache.append((z, a))
            elif op.kind == "bn":
                g, bt = theta[op.ws], theta[op.bs]
                lay = op.layer
                if train:
                    if k is not None:
                        out, xn, mean, var, std = k.bn_forward_train(a, g, bt, BN_EPS)
                    else:
                        out, xn, mean, var, std = _numpy_bn(a, g, bt)
                    if cache is not None:
                        cache.append((xn, std))
                    if update_stats:
                        _update_running(lay, mean, var)
                    a = out
                else:
                    rm, rv = _running(lay, a.shape[1], a.dtype)
                    rm, rv = np.ascontiguousarray(rm, a.dtype), np.ascontiguousarray(rv, a.dtype)
                    a = (k.bn_forward_eval(a, g, bt, rm, rv, BN_EPS) if k is not None
                         else g * ((a - rm) / np.sqrt(rv + a.dtype.type(BN_EPS))) + bt)
            elif op.kind == "dropout":
                if train:
                    mask = masks[mi]
                    mi += 1
                    a = k.mul_mask(a, mask) if k is not None else a * mask
                else:
                    a = a * a.dtype.type(1.0 - op.ratio)
            else:  # a layer without a kernel: its own forward (reference path only)
                a = _call_forward(op.layer, a, train)
                a = np.ascontiguousarray(a)
        return a

    def _backward(self, theta: np.ndarray, dout: np.ndarray, cache: list, masks, wd: float,
                  grad: np.ndarray) -> None:
        k = self.kern
        mm = k.matmul if k is not None else _np_kernels().matmul
        first_grad = getattr(k, "first_layer_grad", None)
        mi = len(masks)
        ci = len(cache)
        for pos in range(len(self.ops) - 1, -1, -1):
            op = self.ops[pos]
            if op.kind == "affine":
                ci -= 1
                a_in = cache[ci]
                W = _param(theta, op.ws, op.wshape)
                # the data's own layer: x's nonzeros where the backend has it (x is cache[0])
                dW = first_grad(a_in, dout) if first_grad is not None and ci == 0 else mm(a_in, dout, True, False)
                if wd:
                    dW += W.dtype.type(wd) * W
                grad[op.ws] = dW.ravel()
                grad[op.bs] = dout.sum(axis=0)
                if pos > 0:
                    dout = mm(dout, W, False, True)
            elif op.kind == "act":
                ci -= 1
                z, a = cache[ci]
                dout = k.act_backward(op.code, op.alpha, np.ascontiguousarray(dout), z, a) if k is not None \
                    else op.layer.backward(dout)
            elif op.kind == "bn":
                ci -= 1
                xn, std = cache[ci]
                g = theta[op.ws]
                if k is not None:
                    dx, dg, db = k.bn_backward(np.ascontiguousarray(dout), xn, std, g)
                else:
                    dx, dg, db = _numpy_bn_backward(dout, xn, std, g)
                grad[op.ws], grad[op.bs] = dg, db
                dout = dx
            elif op.kind == "dropout":
                mi -= 1
                dout = k.mul_mask(np.ascontiguousarray(dout), masks[mi]) if k is not None else dout * masks[mi]
            else:
                dout = op.layer.backward(dout)

    def _wd_loss(self, theta: np.ndarray, wd: float) -> float:
        if not wd:
            return 0.0
        s = 0.0
        for op in self.ops:
            if op.kind == "affine":
                w = theta[op.ws].astype(np.float64)
                s += float(np.dot(w, w))
        return 0.5 * wd * s

    # ------------------------------------------------------------------ the Mlp interface
    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Scores in evaluation mode (running statistics, dropout as a scale)."""
        mlp = self._eval_mlp()
        if mlp is not None:
            return mlp.predict(self._fold(theta), x)
        return self.forward(theta, x, train=False)

    @property
    def input_dtypes(self) -> tuple:
        """Dtypes of x taken as they are: the evaluation Mlp's (float32 images into a float64 stack are
        read in place by predict; the training paths cast them)."""
        mlp = self._eval_mlp()
        return mlp.input_dtypes if mlp is not None else (self.dtype,)

    def _stack(self):
        """The backend's one-call training step of this stack (cpp ``Stack``: Affine, activation,
        BatchNorm and Dropout layers, softmax head), or None: then the per-layer calls."""
        st = self.__dict__.get("_stack_impl", False)
        if st is False:
            st = None
            make = getattr(self.kern, "layer_stack", None)
            if (make is not None and self.head == "softmax" and self.ops
                    and all(op.kind in ("affine", "act", "bn", "dropout") for op in self.ops)):
                st = make(self.ops, self.n_in, self.n_params, BN_EPS, self.dtype)
            self._stack_impl = st
        return st

    def _eval_mlp(self):
        """The backend's Mlp that computes this stack's evaluation mode, or None. In evaluation a
        Batch Normalization layer is a fixed per-column affine map and Dropout a fixed scale, so a
        stack of [Affine, (BatchNorm), activation, (Dropout)] * k + [Affine] with one activation the
        Mlp kernels take is a plain MLP on folded weights (:meth:`_fold`): its predict runs in one
        kernel call (the first layer on x's nonzeros, threads over the rows) instead of a numpy
        product and a temporary array per layer (the tutorials' over-fitting script spends most of
        its time in the per-epoch test accuracy of a Dropout net)."""
        plan = self.__dict__.get("_eval_plan", False)
        if plan is False:
            plan = self._eval_plan = self._make_eval_plan()
        return plan

    def _make_eval_plan(self):
        # cpp only: numpy is the reference's layer-by-layer path, numba would compile its Mlp for it
        if getattr(self.kern, "NAME", None) != "cpp" or not self.ops or self.ops[-1].kind != "affine":
            return None
        names = {code: name for name, code in spec.ACT_CODE.items()}
        sizes, acts, expect = [self.n_in], set(), "affine"
        for op in self.ops:
            if op.kind == "affine":
                if expect not in ("affine", "affine|dropout"):
                    return None
                sizes.append(op.wshape[1])
                expect = "bn|act"
            elif op.kind == "bn" and expect == "bn|act":
                expect = "act"
            elif op.kind == "act" and expect in ("bn|act", "act"):
                name = names.get(op.code)
                if name not in spec.MLP_ACTIVATIONS or (name == "leaky_relu" and op.alpha != spec.LEAKY_SLOPE):
                    return None
                acts.add(name)
                expect = "affine|dropout"
            elif op.kind == "dropout" and expect == "affine|dropout":
                expect = "affine"
            else:
                return None
        if expect != "bn|act" or len(acts) > 1 or sizes[-1] != self.n_out:
            return None
        return self.kern.Mlp(sizes, acts.pop() if acts else "relu", "softmax", self.dtype)

    def _fold(self, theta: np.ndarray) -> np.ndarray:
        """The Mlp parameters of this stack in evaluation mode: each Dropout's scale folded into the next
        W, each BatchNorm (g (z - mean) / sqrt(var + eps) + beta) into the W and b before it."""
        out, scale, last = [], None, None
        for op in self.ops:
            if op.kind == "affine":
                W = _param(theta, op.ws, op.wshape)
                last = [W if scale is None else W * W.dtype.type(scale), theta[op.bs]]
                out.append(last)
                scale = None
            elif op.kind == "bn":
                rm, rv = _running(op.layer, last[1].shape[0], theta.dtype)
                s = theta[op.ws] / np.sqrt(np.asarray(rv, theta.dtype) + theta.dtype.type(BN_EPS))
                last[0] = last[0] * s
                last[1] = (last[1] - np.asarray(rm, theta.dtype)) * s + theta[op.bs]
            elif op.kind == "dropout":
                scale = 1.0 - op.ratio
        return np.concatenate([a.ravel() for pair in out for a in pair])

    def eval_loss(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float) -> float:
        return head_loss(self.head, self.forward(theta, x, train=False), t) + self._wd_loss(theta, weight_decay)

    def train_loss(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                   masks=None) -> float:
        if masks is None:
            masks = self._draw_masks(x, theta.dtype)
        z = self.forward(theta, x, train=True, masks=masks)
        return head_loss(self.head, z, t) + self._wd_loss(theta, weight_decay)

    def loss(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float) -> float:
        """Training-mode loss (the function ``loss_grad`` differentiates); statistics unchanged."""
        return self.train_loss(theta, x, t, weight_decay)

    def loss_grad(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                  grad: np.ndarray, update_stats: bool = True) -> float:
        """Training-mode loss; its backprop gradient into ``grad``; updates the running statistics."""
        masks = self._draw_masks(x, theta.dtype)
        stack = self._stack()
        if (stack is not None and x.flags.c_contiguous and t.flags.c_contiguous and t.dtype == theta.dtype
                and x.dtype in (theta.dtype, np.dtype(np.float32))):
            bns = [op for op in self.ops if op.kind == "bn"]
            stats = [np.empty((2, op.ws.stop - op.ws.start), theta.dtype) for op in bns]
            loss = stack.loss_grad(theta.size, theta, x, t, weight_decay, grad, masks, [s[0] for s in stats],
                                   [s[1] for s in stats])
            if update_stats:
                for op, st in zip(bns, stats):
                    _update_running(op.layer, st[0], st[1])
            return loss
        cache: list = []
        z = self.forward(theta, x, train=True, masks=masks, cache=cache, update_stats=update_stats)
        loss = head_loss(self.head, z, t) + self._wd_loss(theta, weight_decay)
        self._backward(theta, head_grad(self.head, z, t), cache, masks, weight_decay, grad)
        return loss

    def train_steps(self, theta: np.ndarray, X, T: np.ndarray, idx: np.ndarray, weight_decay: float, opt: str,
                    hyper: np.ndarray, state1: np.ndarray, state2: np.ndarray, step0: int,
                    lrs: Optional[np.ndarray] = None) -> np.ndarray:
        """``_backends/numpy.py`` ``Mlp.train_steps``: one backend ``opt_update`` per step."""
        if isinstance(X, CsrRows):
            X, T, idx = X.dense_batches(idx, T)
        upd = (self.kern if self.kern is not None else _np_kernels()).opt_update
        losses = np.full(idx.shape[0], np.nan)
        grad = np.empty_like(theta)
        h = _full_hyper(hyper)
        for s in range(idx.shape[0]):
            rows = idx[s]
            saved = self._stats()
            loss = self.loss_grad(theta, X[rows], T[rows], weight_decay, grad)
            if not np.isfinite(loss):
                self._restore_stats(saved)
                break
            losses[s] = loss
            if lrs is not None:
                h[0] = lrs[s]
            upd(opt, theta, grad, state1, state2, h, step0 + s + 1)
        return losses

    def _stats(self):
        return [(op.layer.running_mean, op.layer.running_var) for op in self.ops if op.kind == "bn"]

    def _restore_stats(self, saved) -> None:
        for op, (m, v) in zip([op for op in self.ops if op.kind == "bn"], saved):
            op.layer.running_mean, op.layer.running_var = m, v

    # ------------------------------------------------------------------ numerical gradient
    def numerical_gradient(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float, h: float,
                           grad: np.ndarray) -> None:
        """Central differences of :meth:`loss` for every parameter into ``grad`` (see the module
        docstring; float64, dropout masks drawn once for the whole call)."""
        g, _, _ = self._sweep(theta, x, t, weight_decay, h, kinks=False)
        if self.flags.get("richardson"):  # gradient_check: (4 D(h/2) - D(h)) / 3 cancels the h^2 error
            g2, _, _ = self._sweep(theta, x, t, weight_decay, h / 2, kinks=False)
            g = (4 * g2 - g) / 3
        grad[:] = g

    def kink_counts(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, h: float, plus: np.ndarray,
                    minus: np.ndarray) -> None:
        """Per parameter, the rows whose ReLU states a step to theta_p + h (plus) / - h (minus) changes."""
        _, kp, km = self._sweep(theta, x, t, 0.0, h, kinks=True)
        plus[:], minus[:] = kp, km

    def _sweep(self, theta, x, t, wd, h, kinks):
        th = theta.astype(np.float64)
        x64, t64 = np.asarray(x, np.float64), np.asarray(t, np.float64)
        masks = [m.astype(np.float64) for m in self._draw_masks(x64, np.float64)]
        if any(op.kind == "custom" for op in self.ops) or self.head == "hinge":
            return self._loop(th, x64, t64, wd, h, masks, kinks)
        sweep = _Sweep(self, th, x64, t64, masks, h, kinks)
        g, kp, km = sweep.run()
        for op in self.ops:
            if op.kind == "affine" and wd:
                g[op.ws] += wd * th[op.ws]
        return g, kp, km

    def _loop(self, th, x, t, wd, h, masks, kinks):
        """Per-parameter loop (stacks with a layer without a kernel): the reference's method."""
        g = np.empty(th.size)
        saved = self._stats()
        prog = Program(self.ops, self.head, np.float64, self.n_in, self.n_out, None, self._masks)
        try:
            for p in range(th.size):
                v = th[p]
                th[p] = v + h
                fp = prog.train_loss(th, x, t, wd, masks)
                th[p] = v - h
                fm = prog.train_loss(th, x, t, wd, masks)
                th[p] = v
                g[p] = (fp - fm) / (2 * h)
        finally:
            self._restore_stats(saved)
        z = np.zeros(th.size, np.int64)
        return g, z, z.copy()


def _np_kernels():
    return kernels("numpy")


def _call_forward(layer, a, train):
    try:
        return layer.forward(a, train_flg=train)
    except TypeError:
        return layer.forward(a)


def _update_running(layer, mean, var) -> None:
    """The layer's running statistics after a training batch of these statistics (its momentum)."""
    m = layer.momentum
    rm, rv = _running(layer, mean.shape[0], mean.dtype)
    layer.running_mean = (m * rm + (1 - m) * mean).astype(rm.dtype)
    layer.running_var = (m * rv + (1 - m) * var).astype(rv.dtype)


def _running(layer, d: int, dtype):
    if layer.running_mean is None:
        layer.running_mean = np.zeros(d, dtype=dtype)
        layer.running_var = np.zeros(d, dtype=dtype)
    return layer.running_mean, layer.running_var


def _numpy_bn(a, g, bt):
    return kernels("numpy").bn_forward_train(a, g, bt, BN_EPS)


def _numpy_bn_backward(dout, xn, std, g):
    return kernels("numpy").bn_backward(dout, xn, std, g)


class _Sweep:
    """The column-by-column central differences of a kernel-only stack (float64)."""

    def __init__(self, prog: Program, th, x, t, masks, h, kinks) -> None:
        self.p, self.th, self.x, self.t, self.h, self.kinks = prog, th, x, t, h, kinks
        self.ops = prog.ops
        # base pass, every layer's output kept: acts[i + 1] = ops[i](acts[i])
        self.acts = [x]
        self.mask_of = {}
        mi = 0
        for i, op in enumerate(self.ops):
            if op.kind == "dropout":
                self.mask_of[i] = masks[mi]
                mi += 1
            self.acts.append(self._apply(i, self.acts[-1][None])[0])

    # one op on variants a (V, N, D); gamma/beta (V, D) overrides for a BN op
    def _apply(self, i, a, gam=None, bet=None):
        op, th = self.ops[i], self.th
        if op.kind == "affine":
            return np.matmul(a, _param(th, op.ws, op.wshape)) + th[op.bs]
        if op.kind == "act":
            if op.code == _RELU:
                return np.where(a > 0, a, 0.0)
            if op.code == _LEAKY:
                return np.where(a > 0, a, op.alpha * a)
            if op.code == _SIGMOID:
                return 1.0 / (1.0 + np.exp(-a))
            if op.code == _TANH:
                return np.tanh(a)
            if op.code == _IDENTITY:
                return a
            raise ValueError(f"unknown activation code {op.code}")
        if op.kind == "bn":
            mean = a.mean(axis=1, keepdims=True)
            xc = a - mean
            std = np.sqrt((xc * xc).mean(axis=1, keepdims=True) + BN_EPS)
            g = th[op.ws] if gam is None else gam[:, None, :]
            b = th[op.bs] if bet is None else bet[:, None, :]
            return g * (xc / std) + b
        if op.kind == "dropout":
            return a * self.mask_of[i]
        raise ValueError(f"no kernel for {op.kind}")

    def _is_relu(self, i):
        op = self.ops[i]
        return op.kind == "act" and spec.ACTIVATIONS[op.code].kinked

    def run(self):
        ops, acts = self.ops, self.acts
        n_p = self.p.n_params
        g = np.zeros(n_p)
        kp = np.zeros(n_p, np.int64)
        km = np.zeros(n_p, np.int64)
        aff = [i for i, op in enumerate(ops) if op.kind == "affine"]
        starts = [-1] + aff
        for s in starts:
            nxt = [i for i in aff if i > s]
            end = nxt[0] if nxt else len(ops)
            seg = list(range(s + 1, end))
            bns = [i for i in seg if ops[i].kind == "bn"]
            if s < 0 and not bns:
                continue
            width = acts[s + 1].shape[1]
            for j in range(width):
                self._column(s, end, seg, bns, j, g, kp, km)
        return g, kp, km

    def _column(self, s, end, seg, bns, j, g, kp, km):
        ops, acts, th, h = self.ops, self.acts, self.th, self.h
        base = acts[s + 1][:, j]
        n = base.shape[0]
        # variants: W[:, j] (one per input), b[j], then gamma[j], beta[j] of each BN op in the segment
        n_w = acts[s].shape[1] if s >= 0 else 0
        n_var = (n_w + 1 if s >= 0 else 0) + 2 * len(bns)
        sums = {}
        for sign in (1.0, -1.0):
            cols = np.repeat(base[None, :], n_var, axis=0)
            shifts = np.zeros(n_var)
            if s >= 0:
                op = ops[s]
                wcol = _param(th, op.ws, op.wshape)[:, j]
                dw = (wcol + sign * h) - wcol  # the shifts actually stored
                cols[:n_w] += dw[:, None] * acts[s].T
                bj = th[op.bs][j]
                db = (bj + sign * h) - bj
                cols[n_w] += db
                shifts[:n_w], shifts[n_w] = dw, db
            gam = {i: np.full(n_var, th[ops[i].ws][j]) for i in bns}
            bet = {i: np.full(n_var, th[ops[i].bs][j]) for i in bns}
            v0 = n_w + 1 if s >= 0 else 0
            for q, i in enumerate(bns):
                gj, bj = th[ops[i].ws][j], th[ops[i].bs][j]
                gam[i][v0 + 2 * q] = gj + sign * h
                bet[i][v0 + 2 * q + 1] = bj + sign * h
                shifts[v0 + 2 * q] = (gj + sign * h) - gj
                shifts[v0 + 2 * q + 1] = (bj + sign * h) - bj
            changed = np.zeros((n_var, n), bool) if self.kinks else None
            c = cols
            for i in seg:
                if self.kinks and self._is_relu(i):
                    changed |= (c > 0) != (acts[i][:, j] > 0)[None, :]
                op = ops[i]
                if op.kind == "bn":
                    mean = c.mean(axis=1, keepdims=True)
                    xc = c - mean
                    std = np.sqrt((xc * xc).mean(axis=1, keepdims=True) + BN_EPS)
                    c = gam[i][:, None] * (xc / std) + bet[i][:, None]
                elif op.kind == "dropout":
                    c = c * self.mask_of[i][:, j][None, :]
                else:
                    c = self._apply(i, c[:, :, None])[:, :, 0]
            losses = np.empty(n_var)
            if end < len(ops):
                W2 = _param(th, ops[end].ws, ops[end].wshape)
                delta = c - acts[end][:, j][None, :]
                width = max(a.shape[1] for a in acts[end + 1:])
                step = max(1, _CHUNK // max(1, n * width))
                for v in range(0, n_var, step):
                    z = acts[end + 1][None] + delta[v:v + step, :, None] * W2[j][None, None, :]
                    ch = changed[v:v + step].copy() if self.kinks else None
                    for i in range(end + 1, len(ops)):
                        if self.kinks and self._is_relu(i):
                            ch |= ((z > 0) != (acts[i] > 0)[None]).any(axis=2)
                        z = self._apply(i, z)
                    losses[v:v + step] = head_loss_batched(self.p.head, z, self.t)
                    if self.kinks:
                        changed[v:v + step] = ch
            else:
                z = np.repeat(acts[-1][None], n_var, axis=0)
                z[:, :, j] = c
                losses = head_loss_batched(self.p.head, z, self.t)
            sums[sign] = losses
            if self.kinks:
                cnt = changed.sum(axis=1)
                self._scatter(s, bns, j, n_w, cnt, kp if sign > 0 else km, add=False)
        gv = (sums[1.0] - sums[-1.0]) / (2 * h)
        self._scatter(s, bns, j, n_w, gv, g, add=False)

    def _scatter(self, s, bns, j, n_w, vals, out, add):
        ops = self.ops
        if s >= 0:
            op = ops[s]
            idx = op.ws.start + np.arange(n_w) * op.wshape[1] + j
            out[idx] = vals[:n_w]
            out[op.bs.start + j] = vals[n_w]
        v0 = n_w + 1 if s >= 0 else 0
        for q, i in enumerate(bns):
            out[ops[i].ws.start + j] = vals[v0 + 2 * q]
            out[ops[i].bs.start + j] = vals[v0 + 2 * q + 1]
