"""The ``numba`` backend: the kernel interface of ``_backends/numpy.py`` in nopython code.

Same names, semantics and flat parameter layout as ``_backends/numpy.py`` (the spec; codes from
:mod:`pyfastgrad.spec`).
The net is handed to the jitted code as the flat ``theta``, an int64 ``sizes``
array and integer codes for activation / loss / optimizer. All functions are
compiled lazily (first call per dtype) and cached on disk.

Mostly-zero inputs (``CsrRows``, or a dense batch at most ``_SPARSE_DENSITY`` nonzero, e.g. MNIST): the
first layer works on the nonzeros only (see "the first layer on the nonzeros" below); same results
up to the order of the sums. In two bands of W_0's rows, on two threads for large enough steps (see "the
first layer on two threads"): the same bits on one thread or two.

Precision notes:
* The math runs in the net's dtype (float32 stays float32: constants are cast).
  The softmax loss is the reference's log-softmax form (no 1e-7 guard).
  Scalar loss sums are accumulated in float64 (returned as float64 anyway).
* ``Mlp.numerical_gradient`` evaluates the per-row loss tails in float64 from
  the dtype base pass, so in float32 it is *less* noisy than the reference.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numba
import numpy as np
from numba import prange

from .. import spec
from .._sparse import CsrRows
from .._threads import FreeCores
from ..spec import n_params  # noqa: F401  (the kernel interface's name)
from . import numpy as _npk

NAME = "numba"

# integer codes the jitted code branches on (globals: compile-time constants); an unknown code raises
_RELU, _SIGMOID, _TANH, _LEAKY, _IDENTITY = (spec.ACT_CODE[k] for k in
                                             ("relu", "sigmoid", "tanh", "leaky_relu", "identity"))
_SLOPE = spec.LEAKY_SLOPE
_SOFTMAX, _MSE, _HINGE = (spec.LOSS_CODE[k] for k in ("softmax", "mse", "hinge"))
_SGD, _MOMENTUM, _NESTEROV, _ADAGRAD, _RMSPROP, _ADAM, _ADAMW, _ADAMAX = (
    spec.OPT_CODE[k] for k in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "adamax"))
_DECOUPLED = tuple(o.decoupled_decay for o in spec.OPTIMIZERS)  # by code

_DELTA = 1e-7  # inside the log of cross_entropy_error (reference.DELTA)
# The first layer runs on x's nonzeros when at most this share of the batch is nonzero (MNIST: 0.19), as
# cpp's kSparseDensity: 784-100-10, batch 100, float32, uniform random x, about as fast as the dense
# products at 0.4 here (the BLAS products' time varies most on a busy machine).
_SPARSE_DENSITY = 0.4

# error_model="numpy": x/0 gives inf/nan like numpy instead of raising, and drops the
# zero-division branches that otherwise block SIMD vectorisation of the loops.
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_pjit = numba.njit(cache=True, nogil=True, parallel=True, error_model="numpy")
# The sparse first layer's row updates: a * b + c as one FMA (one rounding instead of two; no reordering).
# Fewer instructions per nonzero: 784-100-10 MNIST epoch, forward ~10% faster here.
_jit_fma = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


# Fork safety. numba's threading layer here is GNU OpenMP, whose thread pool does not survive fork():
# numba then terminates a forked child at its first parallel call. A child forked after the parent
# started that pool therefore runs serial twins of the parallel kernels (compiled in the child on
# first use, not cached: a cached entry could be the parallel build). Same results, one core.
_SERIAL: dict = {}
_SERIAL_ONLY = False


def _after_fork_in_child() -> None:
    global _SERIAL_ONLY
    try:
        from numba.np.ufunc import parallel as npar
        if getattr(npar, "_is_initialized", False) and getattr(npar, "_threading_layer", "") == "omp":
            _SERIAL_ONLY = True
    except Exception:  # a numba without these internals: leave the parallel kernels in place
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _parallel(fn):
    """``fn`` (a parallel kernel), or its serial twin in a child forked after the pool started."""
    if not _SERIAL_ONLY:
        return fn
    twin = _SERIAL.get(fn)
    if twin is None:
        twin = _SERIAL[fn] = numba.njit(nogil=True, error_model="numpy")(fn.py_func)
    return twin


# ------------------------------------------------------------------ layout helpers
@_jit
def _offsets(sizes):
    """Start of W_l and b_l in theta for each layer l = 0..L-1."""
    L = sizes.shape[0] - 1
    woff = np.empty(L, np.int64)
    boff = np.empty(L, np.int64)
    off = 0
    for l in range(L):
        woff[l] = off
        off += sizes[l] * sizes[l + 1]
        boff[l] = off
        off += sizes[l + 1]
    return woff, boff


@_jit
def _act_offsets(sizes, N):
    """Start of layer l's (N, n_{l+1}) block in the flat activation buffers."""
    L = sizes.shape[0] - 1
    zoff = np.empty(L + 1, np.int64)
    off = 0
    for l in range(L):
        zoff[l] = off
        off += N * sizes[l + 1]
    zoff[L] = off  # total size
    return zoff


# ------------------------------------------------------------------ activations (dtype)
@_jit
def _activate(act, z, a):
    one = z.dtype.type(1.0)
    zero = z.dtype.type(0.0)
    N, M = z.shape
    for n in range(N):
        for k in range(M):
            v = z[n, k]
            if act == _RELU:
                # reference masks z <= 0, so NaN passes through
                a[n, k] = zero if v <= zero else v
            elif act == _SIGMOID:
                a[n, k] = one / (one + np.exp(-v))
            elif act == _TANH:
                a[n, k] = np.tanh(v)
            elif act == _LEAKY:  # reference: x <= 0 -> slope * x, so NaN passes through
                a[n, k] = _SLOPE * v if v <= zero else v
            else:
                raise ValueError("unknown activation code")


@_jit
def _act_backward(act, d, z, a):
    """d *= activation'(z) in place, with the reference's operation order."""
    one = d.dtype.type(1.0)
    zero = d.dtype.type(0.0)
    N, M = d.shape
    for n in range(N):
        for k in range(M):
            if act == _RELU:
                if z[n, k] <= zero:
                    d[n, k] = zero
            elif act == _SIGMOID:
                o = a[n, k]
                d[n, k] = d[n, k] * (one - o) * o
            elif act == _TANH:
                o = a[n, k]
                d[n, k] = d[n, k] * (one - o * o)
            elif act == _LEAKY:
                if z[n, k] <= zero:
                    d[n, k] = _SLOPE * d[n, k]
            else:
                raise ValueError("unknown activation code")


@_jit
def _act64(act, v):
    if act == _RELU:
        return 0.0 if v <= 0.0 else v
    elif act == _SIGMOID:
        return 1.0 / (1.0 + np.exp(-v))
    elif act == _TANH:
        return np.tanh(v)
    elif act == _LEAKY:
        return spec.LEAKY_SLOPE * v if v <= 0.0 else v
    raise ValueError("unknown activation code")


@_jit
def _argmax_row(t, n):
    c = 0
    best = t[n, 0]
    for k in range(1, t.shape[1]):
        if t[n, k] > best:
            best = t[n, k]
            c = k
    return c


# ------------------------------------------------------------------ forward / backward
@_jit
def _forward(theta, sizes, act, x, Z, A):
    """Pre-activations of every layer into Z, hidden activations into A (flat buffers)."""
    _forward_from(theta, sizes, act, x, Z, A, x.shape[0], False)


@_jit
def _forward_from(theta, sizes, act, x, Z, A, N, have0):
    """_forward; with ``have0`` Z's first block already holds x W_0 (the sparse first layer's product)."""
    L = sizes.shape[0] - 1
    woff, boff = _offsets(sizes)
    zoff = _act_offsets(sizes, N)
    inp = x
    for l in range(L):
        nin = sizes[l]
        nout = sizes[l + 1]
        W = theta[woff[l]:woff[l] + nin * nout].reshape((nin, nout))
        b = theta[boff[l]:boff[l] + nout]
        z = Z[zoff[l]:zoff[l] + N * nout].reshape((N, nout))
        if l > 0 or not have0:
            np.dot(inp, W, z)
        for n in range(N):
            for k in range(nout):
                z[n, k] += b[k]
        if l < L - 1:
            a = A[zoff[l]:zoff[l] + N * nout].reshape((N, nout))
            _activate(act, z, a)
            inp = a


# ------------------------------------------------------------------ the first layer on the nonzeros
# Rows of a CSR X (indptr, indices, data; the batch is X's rows ``rows``). MNIST is ~81% zeros: the
# first layer's two products (x W_0 and x^T dz_0, nearly all of a 784-100-10 step) shrink 5x. Each
# nonzero x[r, i] works on a whole row of W_0 / dW_0 (contiguous, SIMD) and the row of z_0 / dz_0.
# Only used while W_0 is finite (skipping 0 * inf would hide the NaN the dense product gives).
@_jit
def _csc_of_rows(indptr, indices, data, rows, cptr, crow, cval):
    """The batch's nonzeros grouped by column (a counting sort): column i's are crow/cval[cptr[i]:cptr[i + 1]],
    rows ascending. cptr (n0 + 1,), crow/cval at least the batch's nonzeros long."""
    _csc_of_band(indptr, indices, data, rows, 0, -1, cptr, crow, cval)


@_jit
def _csc_of_band(indptr, indices, data, rows, split, band, cptr, crow, cval):
    """_csc_of_rows for the columns of ``band`` only (see _band_run; -1: all); the others' are empty."""
    n0 = cptr.shape[0] - 1
    for i in range(n0 + 1):
        cptr[i] = 0
    for r in range(rows.shape[0]):
        a, b = indptr[rows[r]], indptr[rows[r] + 1]
        if band >= 0:
            a, b = _band_run(indices, a, b, split, band == 1)
        for q in range(a, b):
            cptr[indices[q] + 1] += 1
    for i in range(n0):
        cptr[i + 1] += cptr[i]
    for r in range(rows.shape[0]):  # cptr[i] walks column i's slots, then holds the next column's start
        a, b = indptr[rows[r]], indptr[rows[r] + 1]
        if band >= 0:
            a, b = _band_run(indices, a, b, split, band == 1)
        for q in range(a, b):
            i = indices[q]
            c = cptr[i]
            crow[c] = r
            cval[c] = data[q]
            cptr[i] = c + 1
    for i in range(n0, 0, -1):
        cptr[i] = cptr[i - 1]
    cptr[0] = 0


# The backward's dW_0 = x^T dz_0 by column of x: one row of dW_0 / W_0 (n1 wide, in L1) takes all of its
# column's nonzeros, four dz rows per pass, and is written once. Row by row through the batch (the scatter
# before) every nonzero loaded and stored a row of dW_0 from L2: 784-100-10 MNIST float32 batch of 100,
# 218 us -> 53 (regrouping) + 122 here.
@_jit_fma
def _csc_xt_dz(cptr, crow, cval, dz, gW):
    """gW (n0, n1) = X[rows]^T dz from the batch grouped by column (_csc_of_rows); untouched rows are 0."""
    _csc_xt_dz_rows(cptr, crow, cval, dz, gW, 0, gW.shape[0])


@_jit_fma
def _csc_xt_dz_rows(cptr, crow, cval, dz, gW, i0, i1):
    """_csc_xt_dz for gW's rows [i0, i1) only."""
    zero = gW.dtype.type(0.0)
    n1 = gW.shape[1]
    for i in range(i0, i1):
        g = gW[i]
        for k in range(n1):
            g[k] = zero
        p = cptr[i]
        p1 = cptr[i + 1]
        while p + 4 <= p1:
            d0, d1, d2, d3 = dz[crow[p]], dz[crow[p + 1]], dz[crow[p + 2]], dz[crow[p + 3]]
            v0, v1, v2, v3 = cval[p], cval[p + 1], cval[p + 2], cval[p + 3]
            for k in range(n1):
                g[k] += v0 * d0[k] + v1 * d1[k] + v2 * d2[k] + v3 * d3[k]
            p += 4
        while p < p1:
            d = dz[crow[p]]
            v = cval[p]
            for k in range(n1):
                g[k] += v * d[k]
            p += 1


# The first layer on two threads: x's columns (W_0's rows) in two bands split at n0 // 2 (MNIST: the
# image's top and bottom halves, about equal nonzeros), thread t the band t part of x W_0 and of W_0's update,
# so each thread reads and writes its own rows of W_0 only (step to step, no W_0 line moves between the
# cores, as cpp's bands). x W_0 is the sum of the two bands' products, on one thread or two: the result does
# not depend on the thread count. One parallel launch each (~2 us with the pool awake). Each row's band is
# one run of its ascending column indices (the CSR arrays here are built sorted: _dense_to_batch_csr,
# CsrRows.from_dense).
@_jit
def _band_run(indices, q0, q1, split, upper):
    """The run [a, b) of the ascending indices[q0:q1] in the band: >= split (upper) or < split."""
    lo, hi = q0, q1
    while lo < hi:  # first position with an index >= split
        mid = (lo + hi) >> 1
        if indices[mid] < split:
            lo = mid + 1
        else:
            hi = mid
    return (lo, q1) if upper else (q0, lo)


@_jit_fma
def _x_w0_band(theta, n1, indptr, indices, data, rows, split, upper, z):
    """z (N, n1) = the band's part of X[rows] W_0 (see _band_run)."""
    zero = z.dtype.type(0.0)
    for r in range(rows.shape[0]):
        zr = z[r]
        for k in range(n1):
            zr[k] = zero
        q, q1 = _band_run(indices, indptr[rows[r]], indptr[rows[r] + 1], split, upper)
        while q + 4 <= q1:  # four rows of W_0 per pass over z's row: a quarter of its loads and stores
            w0 = theta[indices[q] * n1:indices[q] * n1 + n1]
            w1 = theta[indices[q + 1] * n1:indices[q + 1] * n1 + n1]
            w2 = theta[indices[q + 2] * n1:indices[q + 2] * n1 + n1]
            w3 = theta[indices[q + 3] * n1:indices[q + 3] * n1 + n1]
            v0, v1, v2, v3 = data[q], data[q + 1], data[q + 2], data[q + 3]
            for k in range(n1):
                zr[k] += v0 * w0[k] + v1 * w1[k] + v2 * w2[k] + v3 * w3[k]
            q += 4
        while q < q1:
            v = data[q]
            w = theta[indices[q] * n1:indices[q] * n1 + n1]
            for k in range(n1):
                zr[k] += v * w[k]
            q += 1


@_jit
def _add_into(z, zp):
    """z += zp (two (N, n) arrays)."""
    for r in range(z.shape[0]):
        for k in range(z.shape[1]):
            z[r, k] += zp[r, k]


@_jit_fma
def _sgd_w0_band(indptr, indices, data, rows, split, upper, dz, W, lr):
    """W (n0, n1) -= lr * X[rows]^T dz on the rows of W in the band (_band_run), one batch row at a time in
    batch order (plain SGD without weight decay: rows of W no nonzero touches keep their value, as W - lr * 0;
    no gradient buffer). Every row of W gets the same updates in the same order from either band or both,
    so the split changes no bit. Four nonzeros of a row per pass over its dz row (their rows of W differ:
    the indices increase): 784-100-10 MNIST float32 batch of 100, ~15% faster than one at a time."""
    n1 = W.shape[1]
    for r in range(rows.shape[0]):
        d = dz[r]
        q, q1 = _band_run(indices, indptr[rows[r]], indptr[rows[r] + 1], split, upper)
        while q + 4 <= q1:
            c0, c1, c2, c3 = lr * data[q], lr * data[q + 1], lr * data[q + 2], lr * data[q + 3]
            w0, w1, w2, w3 = W[indices[q]], W[indices[q + 1]], W[indices[q + 2]], W[indices[q + 3]]
            for k in range(n1):
                dk = d[k]
                w0[k] = w0[k] - c0 * dk
                w1[k] = w1[k] - c1 * dk
                w2[k] = w2[k] - c2 * dk
                w3[k] = w3[k] - c3 * dk
            q += 4
        while q < q1:
            c = lr * data[q]
            w = W[indices[q]]
            for k in range(n1):
                w[k] = w[k] - c * d[k]
            q += 1


@_jit
def _csr_rows_dense(indptr, indices, data, rows, x):
    """x (N, n0) = the dense rows X[rows]."""
    zero = x.dtype.type(0.0)
    for r in range(rows.shape[0]):
        xr = x[r]
        for i in range(xr.shape[0]):
            xr[i] = zero
        for q in range(indptr[rows[r]], indptr[rows[r] + 1]):
            xr[indices[q]] = data[q]


@_jit
def _bad_csr_row(indptr, indices, rows, n0):
    """-2 if indptr is not non-decreasing inside [0, nnz], else the first of ``rows`` whose column indices are
    not strictly increasing inside [0, n0) (the first layer's bands find each row's run by binary search, and
    every index picks a row of W_0), else -1."""
    nnz = indices.shape[0]
    if indptr[0] < 0 or indptr[indptr.shape[0] - 1] > nnz:
        return -2
    for r in range(indptr.shape[0] - 1):
        if indptr[r + 1] < indptr[r]:
            return -2
    for k in range(rows.shape[0]):
        r = rows[k]
        p0, p1 = indptr[r], indptr[r + 1]
        if p1 == p0:
            continue
        if indices[p0] < 0 or indices[p1 - 1] >= n0:
            return r
        for p in range(p0 + 1, p1):
            if indices[p] <= indices[p - 1]:
                return r
    return -1


@_jit
def _all_finite(a):
    ok = True
    for p in range(a.shape[0]):
        ok &= (a[p] - a[p]) == 0  # False for inf and NaN; no early exit: the loop vectorises
    return ok


@_jit
def _dense_to_batch_csr(x, indptr, indices, data):
    """The nonzeros (NaN included) of x (N, n0) into indptr (N + 1,) and indices/data (at least as long as
    x's nonzeros). Returns the count. (Image rows have runs of zeros and of ink: the branch predicts well;
    a branch-free store of every entry measured 1.6x slower.)"""
    N, n0 = x.shape
    nnz = 0
    indptr[0] = 0
    for r in range(N):
        xr = x[r]
        for i in range(n0):
            v = xr[i]
            if v != 0:
                indices[nnz] = i
                data[nnz] = v
                nnz += 1
        indptr[r + 1] = nnz
    return nnz


@_jit
def _count_nonzero(x):
    c = 0
    for v in x.ravel():
        c += v != 0
    return c


@_jit
def _data_loss(lossc, z, t, D, want):
    """Mean data loss of logits z (N, C); with ``want`` also dLoss/dz into D (dtype)."""
    N, C = z.shape
    one = z.dtype.type(1.0)
    zero = z.dtype.type(0.0)
    half = z.dtype.type(0.5)
    nN = z.dtype.type(N)
    total = 0.0  # float64 accumulator
    for n in range(N):
        if lossc == _SOFTMAX:  # softmax cross entropy from the logits: -sum t * log_softmax(z)
            m = z[n, 0]
            for k in range(1, C):
                if z[n, k] > m:
                    m = z[n, k]
            s = zero
            for k in range(C):
                e = np.exp(z[n, k] - m)
                D[n, k] = e
                s += e
            lse = np.log(s)
            r = zero
            for k in range(C):
                r += t[n, k] * (z[n, k] - m - lse)
            total += -r
            if want:  # (softmax(z) - t) / N
                for k in range(C):
                    D[n, k] = (D[n, k] / s - t[n, k]) / nN
        elif lossc == _MSE:  # mse on the identity output
            s = zero
            for k in range(C):
                d = z[n, k] - t[n, k]
                s += d * d
                if want:
                    D[n, k] = d / nN
            total += half * s
        elif lossc == _HINGE:  # multiclass hinge, margin 1
            c = _argmax_row(t, n)
            st = z[n, c]
            s = zero
            cnt = zero
            for k in range(C):
                if k == c:
                    continue
                v = z[n, k] - st + one
                if v > zero:
                    s += v
                    cnt += one
                    D[n, k] = one / nN
                else:
                    D[n, k] = zero
            D[n, c] = -cnt / nN
            total += s
        else:
            raise ValueError("unknown loss code")
    return total / N


@_jit
def _wd_loss(theta, sizes, wd):
    if wd == 0.0:  # as cpp's decay_term: no pass over every weight per step (a non-finite W makes the loss NaN anyway)
        return 0.0
    woff, boff = _offsets(sizes)
    out = 0.0
    for l in range(sizes.shape[0] - 1):
        s = 0.0
        for p in range(woff[l], boff[l]):
            v = theta[p]
            s += v * v
        out += 0.5 * wd * s
    return out


@_jit
def _workspace(theta, sizes, N):
    L = sizes.shape[0] - 1
    tot = 0
    maxw = 0
    for l in range(L + 1):
        maxw = max(maxw, sizes[l])
        if l > 0:
            tot += sizes[l]
    dt = theta.dtype
    Z = np.empty(N * tot, dt)
    A = np.empty(N * tot, dt)
    D1 = np.empty(N * maxw, dt)
    D2 = np.empty(N * maxw, dt)
    return Z, A, D1, D2


@_jit
def _loss_grad_any(theta, sizes, act, lossc, x, sparse0, t, wd, grad, Z, A, D1, D2, want, fuse):
    """Loss (float64) of the batch; with ``want`` the gradient into grad, but for W_0's part: the caller's
    (_w0_mode, _w0_band), from dz_0 (_dz0). From the dense batch x, or with ``sparse0`` from Z's first block
    holding x W_0 already (the first layer's product on the nonzeros, _x_w0_band; the caller checked W_0
    finite; x is then scratch or the dense batch). ``fuse`` (plain SGD, no weight decay, no clipping, the
    first layer on the nonzeros): a non-finite loss stops before the backward."""
    N = t.shape[0]
    L = sizes.shape[0] - 1
    _forward_from(theta, sizes, act, x, Z, A, N, sparse0)
    woff, boff = _offsets(sizes)
    zoff = _act_offsets(sizes, N)
    C = sizes[L]
    zL = Z[zoff[L - 1]:zoff[L - 1] + N * C].reshape((N, C))
    dz = D1[:N * C].reshape((N, C))
    loss = _data_loss(lossc, zL, t, dz, want) + _wd_loss(theta, sizes, wd)
    if not want or (fuse and not np.isfinite(loss)):  # a fused step stops before its update
        return loss
    wdt = theta.dtype.type(wd)
    cur = 0  # which of D1/D2 holds dz
    for l in range(L - 1, -1, -1):
        nin = sizes[l]
        nout = sizes[l + 1]
        if cur == 0:
            dz = D1[:N * nout].reshape((N, nout))
        else:
            dz = D2[:N * nout].reshape((N, nout))
        if l == 0:
            inp = x
        else:
            inp = A[zoff[l - 1]:zoff[l - 1] + N * nin].reshape((N, nin))
        W = theta[woff[l]:woff[l] + nin * nout].reshape((nin, nout))
        if l > 0:
            gW = grad[woff[l]:woff[l] + nin * nout].reshape((nin, nout))
            np.dot(inp.T, dz, gW)
            for i in range(nin):
                for k in range(nout):
                    gW[i, k] = gW[i, k] + wdt * W[i, k]
        gb = grad[boff[l]:boff[l] + nout]
        for k in range(nout):
            gb[k] = 0
        for n in range(N):  # row by row, like numpy's sum(axis=0)
            for k in range(nout):
                gb[k] += dz[n, k]
        if l > 0:
            if cur == 0:
                dprev = D2[:N * nin].reshape((N, nin))
            else:
                dprev = D1[:N * nin].reshape((N, nin))
            np.dot(dz, W.T, dprev)
            zp = Z[zoff[l - 1]:zoff[l - 1] + N * nin].reshape((N, nin))
            _act_backward(act, dprev, zp, inp)
            cur = 1 - cur
    return loss


@_jit
def _dz0(sizes, D1, D2, N):
    """dLoss/dz_0 (N, n1) where _loss_grad_any's backward left it (D1 and D2 alternate by layer)."""
    L = sizes.shape[0] - 1
    n1 = sizes[1]
    return (D1 if (L - 1) % 2 == 0 else D2)[:N * n1].reshape((N, n1))


@_jit
def _w0_mode(sparse0, dz0, fuse):
    """How W_0's part runs: 1 fused SGD on x's nonzeros, 2 the gradient on the nonzeros, 0 the dense product
    (not sparse, or dz_0 not finite: skipping 0 * inf would hide the NaN the dense product gives)."""
    if sparse0 and _all_finite(dz0.ravel()):
        return 1 if fuse else 2
    return 0


@_jit
def _w0_band(band, mode, theta, sizes, x, x_ready, indptr, indices, data, rows, dz, grad, wd, fuse, lr):
    """W_0's part of the step (see _w0_mode) for its rows in ``band`` (0: x's columns < n0 // 2, 1: the others,
    -1: all; mode 0 only with -1): fused W_0 -= lr x^T dz, or grad's W_0 = x^T dz + wd W_0 (then W_0 -= lr of
    it with ``fuse``: the dense fallback of a fused step). Each band's rows get the same operations in the same
    order as with -1: the results do not depend on the split."""
    n0 = sizes[0]
    n1 = sizes[1]
    split = n0 // 2
    W = theta[:n0 * n1].reshape((n0, n1))
    gW = grad[:n0 * n1].reshape((n0, n1))
    lrt = theta.dtype.type(lr)
    if mode == 1:
        for b in range(2):
            if band < 0 or band == b:
                _sgd_w0_band(indptr, indices, data, rows, split, b == 1, dz, W, lrt)
        return
    i0 = split if band == 1 else 0
    i1 = split if band == 0 else n0
    if mode == 2:  # the band's nonzeros regrouped by column (each thread its own), then its rows of gW
        nnz = 0
        for r in range(rows.shape[0]):
            nnz += indptr[rows[r] + 1] - indptr[rows[r]]
        cptr = np.empty(n0 + 1, np.int64)
        crow = np.empty(nnz, np.int32)
        cval = np.empty(nnz, data.dtype)
        _csc_of_band(indptr, indices, data, rows, split, band, cptr, crow, cval)
        _csc_xt_dz_rows(cptr, crow, cval, dz, gW, i0, i1)
    else:
        if not x_ready:
            _csr_rows_dense(indptr, indices, data, rows, x)
        np.dot(x.T, dz, gW)
    wdt = theta.dtype.type(wd)
    for i in range(i0, i1):
        for k in range(n1):
            gW[i, k] = gW[i, k] + wdt * W[i, k]
    if mode == 0 and fuse:  # (dz not finite) the update SGD would make
        for i in range(n0):
            for k in range(n1):
                W[i, k] = W[i, k] - lrt * gW[i, k]


@_jit
def _z0_views(sizes, Z, D2, N):
    """z_0 (Z's first block) and band 1's scratch (D2: free until the backward), both (N, n1)."""
    n1 = sizes[1]
    return Z[:N * n1].reshape((N, n1)), D2[:N * n1].reshape((N, n1))


@_jit
def _iota(n):
    out = np.empty(n, np.int64)
    for i in range(n):
        out[i] = i
    return out


@_jit
def _gather_rows(src, idx, dst, n_src):
    """dst[r] = src[idx[r]] (negative indices from the end, as numpy)."""
    for r in range(idx.shape[0]):
        i = idx[r]
        if i < 0:
            i += n_src
        for k in range(src.shape[1]):
            dst[r, k] = src[i, k]


# The step's outer functions below are parallel (_pjit) for their two prange blocks (the first layer's two
# bands, _x_w0_band / _w0_band, on two threads when ``par``); those blocks are written out in each of them
# because a cached serial function that calls a parallel one crashes when loaded from the cache (numba issue
# 8578). Python calls them through _parallel (fork safety); they hold no other array expression (numba
# would parallelise those too).


@_jit
def _predict(theta, sizes, act, x):
    N = x.shape[0]
    L = sizes.shape[0] - 1
    Z, A, D1, D2 = _workspace(theta, sizes, N)
    _forward(theta, sizes, act, x, Z, A)
    zoff = _act_offsets(sizes, N)
    C = sizes[L]
    return Z[zoff[L - 1]:zoff[L - 1] + N * C].reshape((N, C)).copy()


@_pjit
def _loss_grad(theta, sizes, act, lossc, x, t, wd, grad, want, par):
    # one entry point for loss and loss_grad: one compilation per dtype
    N = x.shape[0]
    Z, A, D1, D2 = _workspace(theta, sizes, N)
    indptr = np.empty(N + 1, np.int64)
    sparse0 = False
    if want and sizes.shape[0] > 1 and _all_finite(theta[:sizes[0] * sizes[1]]):
        # a batch-sized x: room for every entry, no counting pass; a large one is counted first
        small = x.size <= 1 << 20
        nnz = -1 if small else _count_nonzero(x)
        if nnz <= _SPARSE_DENSITY * x.size:
            indices = np.empty(x.size if small else nnz, np.int32)
            data = np.empty(x.size if small else nnz, x.dtype)
            sparse0 = _dense_to_batch_csr(x, indptr, indices, data) <= _SPARSE_DENSITY * x.size
    if not sparse0:
        indices = np.empty(0, np.int32)
        data = np.empty(0, x.dtype)
    rows = _iota(N)
    if sparse0:
        z0, zp = _z0_views(sizes, Z, D2, N)
        if par:
            for b in prange(2):
                _x_w0_band(theta, sizes[1], indptr, indices, data, rows, sizes[0] // 2, b == 1, z0 if b == 0 else zp)
        else:
            for b in range(2):
                _x_w0_band(theta, sizes[1], indptr, indices, data, rows, sizes[0] // 2, b == 1, z0 if b == 0 else zp)
        _add_into(z0, zp)
    # one call site: each inlined copy of the kernel costs compile time
    loss = _loss_grad_any(theta, sizes, act, lossc, x, sparse0, t, wd, grad, Z, A, D1, D2, want, False)
    if want:
        dz0 = _dz0(sizes, D1, D2, N)
        mode = _w0_mode(sparse0, dz0, False)
        if par and mode != 0:
            for b in prange(2):
                _w0_band(b, mode, theta, sizes, x, True, indptr, indices, data, rows, dz0, grad, wd, False, 0.0)
        else:
            _w0_band(-1, mode, theta, sizes, x, True, indptr, indices, data, rows, dz0, grad, wd, False, 0.0)
    return loss


# ------------------------------------------------------------------ optimizers
_TINY32 = float(np.finfo(np.float32).tiny)
_TINY64 = float(np.finfo(np.float64).tiny)


@_jit
def _ftz(v, tiny, zero):
    """v, or zero where |v| is below the normal range: decaying optimizer state (the velocity of W_0's rows
    that batches rarely touch) would otherwise sink into subnormals, ~100 cycles per operation on Intel
    cores (as cpp's flush_tiny, kernels/optim.hpp)."""
    return zero if abs(v) < tiny else v


@_jit
def _opt_update(opt, theta, grad, s1, s2, hyper, step):
    """The numpy backend's formulas elementwise, same operation order and rounding (no clipping:
    the callers clip the whole gradient first). hyper: [lr, a, b, eps, weight_decay, style, max_norm]."""
    dt = theta.dtype.type
    one = dt(1.0)
    zero = dt(0.0)
    tiny = dt(_TINY32) if theta.itemsize == 4 else dt(_TINY64)
    lr = dt(hyper[0])
    eps = dt(hyper[3])
    torch = hyper[5] != 0.0
    P = theta.shape[0]
    if hyper[4] != 0.0 and _DECOUPLED[opt]:  # decoupled weight decay (AdamW), before the step
        decay = dt(1.0 - hyper[0] * hyper[4])
        for p in range(P):
            theta[p] = theta[p] * decay
    if opt == _SGD:
        for p in range(P):
            theta[p] = theta[p] - lr * grad[p]
    elif opt == _MOMENTUM:
        mu = dt(hyper[1])
        if torch:
            for p in range(P):
                s1[p] = _ftz(s1[p] * mu + grad[p], tiny, zero)
                theta[p] = theta[p] - lr * s1[p]
        else:
            for p in range(P):
                s1[p] = _ftz(mu * s1[p] - lr * grad[p], tiny, zero)
                theta[p] = theta[p] + s1[p]
    elif opt == _NESTEROV:
        mu = dt(hyper[1])
        if torch:
            for p in range(P):
                v = _ftz(s1[p] * mu + grad[p], tiny, zero)
                s1[p] = v
                theta[p] = theta[p] - lr * (grad[p] + mu * v)
        else:
            mu2 = mu * mu
            c = (one + mu) * lr
            for p in range(P):
                v = s1[p] * mu
                v = _ftz(v - lr * grad[p], tiny, zero)
                s1[p] = v
                theta[p] = theta[p] + mu2 * v
                theta[p] = theta[p] - c * grad[p]
    elif opt == _ADAGRAD:
        for p in range(P):
            g = grad[p]
            s1[p] = s1[p] + g * g
            theta[p] = theta[p] - lr * g / (np.sqrt(s1[p]) + eps)
    elif opt == _RMSPROP:
        rho = dt(hyper[1])
        c = one - rho
        for p in range(P):
            g = grad[p]
            s1[p] = s1[p] * rho
            s1[p] = _ftz(s1[p] + c * g * g, tiny, zero)
            theta[p] = theta[p] - lr * g / (np.sqrt(s1[p]) + eps)
    elif opt == _ADAM or opt == _ADAMW:  # bias corrections in float64 as the reference, then cast
        b1 = hyper[1]
        b2 = hyper[2]
        fs = np.float64(step)
        bc1 = 1.0 - b1 ** fs
        bc2 = 1.0 - b2 ** fs
        c1 = one - dt(b1)
        c2 = one - dt(b2)
        if torch:
            step_size = dt(hyper[0] / bc1)
            bc2_sqrt = dt(np.sqrt(bc2))
            for p in range(P):
                g = grad[p]
                s1[p] = _ftz(s1[p] + c1 * (g - s1[p]), tiny, zero)
                s2[p] = _ftz(s2[p] + c2 * (g * g - s2[p]), tiny, zero)
                theta[p] = theta[p] - step_size * s1[p] / (np.sqrt(s2[p]) / bc2_sqrt + eps)
        else:
            lr_t = dt(hyper[0] * np.sqrt(bc2) / bc1)
            for p in range(P):
                g = grad[p]
                s1[p] = _ftz(s1[p] + c1 * (g - s1[p]), tiny, zero)
                s2[p] = _ftz(s2[p] + c2 * (g * g - s2[p]), tiny, zero)
                theta[p] = theta[p] - lr_t * s1[p] / (np.sqrt(s2[p]) + eps)
    elif opt == _ADAMAX:  # torch.optim.Adamax: L2 decay in the gradient, infinity-norm second moment
        b1 = dt(hyper[1])
        b2 = dt(hyper[2])
        wd = dt(hyper[4])
        l2 = hyper[4] != 0.0
        c1 = one - b1
        clr = dt(hyper[0] / (1.0 - hyper[1] ** np.float64(step)))
        for p in range(P):
            g = grad[p]
            if l2:
                g = g + wd * theta[p]
            m = _ftz(s1[p] + c1 * (g - s1[p]), tiny, zero)
            s1[p] = m
            u = _ftz(s2[p] * b2, tiny, zero)
            ag = np.abs(g) + eps
            u = u if u >= ag else ag  # np.maximum (no NaN here: the callers stop at non-finite losses)
            s2[p] = u
            theta[p] = theta[p] - clr * (m / u)
    else:
        raise ValueError("unknown optimizer code")


@_jit
def _clip_factor(grad, max_norm):
    """max_norm / (||grad|| + 1e-6) when ||grad|| > max_norm > 0, else 1 (sum of squares in float64)."""
    if not max_norm > 0.0:
        return 1.0
    s = 0.0
    for p in range(grad.shape[0]):
        gp = np.float64(grad[p])
        s += gp * gp
    norm = np.sqrt(s)
    return max_norm / (norm + 1e-6) if norm > max_norm else 1.0


@_jit
def _clip(grad, max_norm):
    f = _clip_factor(grad, max_norm)
    if f != 1.0:
        c = grad.dtype.type(f)
        for p in range(grad.shape[0]):
            grad[p] = grad[p] * c


@_jit
def _fuses_sgd(opt, wd, hyper):
    """Whether a sparse first layer's step may update W_0 inside the backward pass (_sgd_w0_band): plain SGD
    (the update is W - lr g, elementwise), no weight decay, no clipping (it needs the whole gradient)."""
    return opt == _SGD and wd == 0.0 and hyper[4] == 0.0 and not hyper[6] > 0.0


@_jit
def _update(opt, theta, grad, s1, s2, h, step, fused, nw0):
    """Clip and update; after a fused step (W_0 done) the rest of theta only."""
    p0 = nw0 if fused else 0
    if not fused:
        _clip(grad, h[6])
    _opt_update(opt, theta[p0:], grad[p0:], s1, s2, h, step)  # one call site: one inlined copy to compile


@_pjit
def _train_steps(theta, sizes, act, lossc, X, T, idx, wd, opt, hyper, s1, s2, step0, losses, lrs, grad, par):
    """All steps in one call: gather, forward, backward, clip, update; stop at a non-finite loss.
    A mostly-zero batch (MNIST) runs the first layer on its nonzeros, as ``_train_steps_csr``. ``grad``: a
    buffer of theta's shape (the last step's gradient; W_0's part unset after a fused SGD step)."""
    S, B = idx.shape
    NX = X.shape[0]
    D = X.shape[1]
    C = T.shape[1]
    xb = np.empty((B, D), X.dtype)
    tb = np.empty((B, C), T.dtype)
    h = np.empty(hyper.shape[0])
    for i in range(hyper.shape[0]):
        h[i] = hyper[i]
    Z, A, D1, D2 = _workspace(theta, sizes, B)
    indptr = np.empty(B + 1, np.int64)
    indices = np.empty(B * D, np.int32)
    data = np.empty(B * D, X.dtype)
    rows = _iota(B)
    nw0 = sizes[0] * sizes[1]
    fused = _fuses_sgd(opt, wd, hyper)
    direct = S == 1 and NX == B  # one step on all of X in order (Mlp.train_step): X itself is the batch
    for r in range(B):
        direct = direct and idx[0, r] == r
    for s in range(S):
        if direct:
            xb = X
            tb = T
        else:
            _gather_rows(X, idx[s], xb, NX)
            _gather_rows(T, idx[s], tb, NX)
        sparse0 = False
        if sizes.shape[0] > 1:
            nnz = _dense_to_batch_csr(xb, indptr, indices, data)
            sparse0 = nnz <= _SPARSE_DENSITY * (B * D) and _all_finite(theta[:nw0])
        if sparse0:
            z0, zp = _z0_views(sizes, Z, D2, B)
            if par:
                for b in prange(2):
                    _x_w0_band(theta, sizes[1], indptr, indices, data, rows, sizes[0] // 2, b == 1,
                               z0 if b == 0 else zp)
            else:
                for b in range(2):
                    _x_w0_band(theta, sizes[1], indptr, indices, data, rows, sizes[0] // 2, b == 1,
                               z0 if b == 0 else zp)
            _add_into(z0, zp)
        fuse = sparse0 and fused
        loss = _loss_grad_any(theta, sizes, act, lossc, xb, sparse0, tb, wd, grad, Z, A, D1, D2, True, fuse)
        if not np.isfinite(loss):
            break
        dz0 = _dz0(sizes, D1, D2, B)
        mode = _w0_mode(sparse0, dz0, fuse)
        if par and mode != 0:
            for b in prange(2):
                _w0_band(b, mode, theta, sizes, xb, True, indptr, indices, data, rows, dz0, grad, wd, fuse, lrs[s])
        else:
            _w0_band(-1, mode, theta, sizes, xb, True, indptr, indices, data, rows, dz0, grad, wd, fuse, lrs[s])
        losses[s] = loss
        h[0] = lrs[s]
        _update(opt, theta, grad, s1, s2, h, step0 + s + 1, fuse, nw0)
    return losses


@_pjit
def _train_steps_csr(theta, sizes, act, lossc, indptr, indices, data, T, idx, wd, opt, hyper, s1, s2, step0, losses,
                     lrs, par):
    """_train_steps with X as rows of nonzeros (``idx`` already in [0, n_rows)): the first layer on the
    nonzeros while W_0 is finite, else on the batch densified."""
    S, B = idx.shape
    C = T.shape[1]
    xb = np.empty((B, sizes[0]), data.dtype)
    tb = np.empty((B, C), T.dtype)
    grad = np.empty_like(theta)
    h = np.empty(hyper.shape[0])
    for i in range(hyper.shape[0]):
        h[i] = hyper[i]
    Z, A, D1, D2 = _workspace(theta, sizes, B)
    nw0 = sizes[0] * sizes[1]
    fused = _fuses_sgd(opt, wd, hyper)
    for s in range(S):
        rows = idx[s]
        _gather_rows(T, rows, tb, T.shape[0])
        sparse0 = _all_finite(theta[:nw0])
        if sparse0:
            z0, zp = _z0_views(sizes, Z, D2, B)
            if par:
                for b in prange(2):
                    _x_w0_band(theta, sizes[1], indptr, indices, data, rows, sizes[0] // 2, b == 1,
                               z0 if b == 0 else zp)
            else:
                for b in range(2):
                    _x_w0_band(theta, sizes[1], indptr, indices, data, rows, sizes[0] // 2, b == 1,
                               z0 if b == 0 else zp)
            _add_into(z0, zp)
        else:
            _csr_rows_dense(indptr, indices, data, rows, xb)
        fuse = sparse0 and fused
        loss = _loss_grad_any(theta, sizes, act, lossc, xb, sparse0, tb, wd, grad, Z, A, D1, D2, True, fuse)
        if not np.isfinite(loss):
            break
        dz0 = _dz0(sizes, D1, D2, B)
        mode = _w0_mode(sparse0, dz0, fuse)
        if par and mode != 0:
            for b in prange(2):
                _w0_band(b, mode, theta, sizes, xb, not sparse0, indptr, indices, data, rows, dz0, grad, wd, fuse,
                         lrs[s])
        else:
            _w0_band(-1, mode, theta, sizes, xb, not sparse0, indptr, indices, data, rows, dz0, grad, wd, fuse,
                     lrs[s])
        losses[s] = loss
        h[0] = lrs[s]
        _update(opt, theta, grad, s1, s2, h, step0 + s + 1, fuse, nw0)
    return losses


# ------------------------------------------------------------------ numerical gradient of the net
@_jit
def _row_loss64(lossc, z, t, n, c):
    """Loss of one row of logits z (float64), same formula as _data_loss."""
    C = z.shape[0]
    if lossc == _SOFTMAX:
        m = z[0]
        for k in range(1, C):
            if z[k] > m:
                m = z[k]
        s = 0.0
        for k in range(C):
            s += np.exp(z[k] - m)
        lse = np.log(s)
        r = 0.0
        for k in range(C):
            r += t[n, k] * (z[k] - m - lse)
        return -r
    elif lossc == _MSE:
        s = 0.0
        for k in range(C):
            d = z[k] - t[n, k]
            s += d * d
        return 0.5 * s
    elif lossc == _HINGE:
        st = z[c]
        s = 0.0
        for k in range(C):
            if k != c:
                v = z[k] - st + 1.0
                if v > 0.0:
                    s += v
        return s
    raise ValueError("unknown loss code")


@_jit
def _tail_loss(theta, sizes, woff, boff, act, lossc, Z64, zoff, l, j, n, v, t, c, b1, b2):
    """Loss of row n after a change of unit j of layer l.

    Output layer: v is the new logit. Hidden layer: v is the change of the unit's
    activation, so the next pre-activation row moves by v * W_{l+1}[j, :] (rank 1);
    the layers after that are recomputed for this row only.
    """
    L = sizes.shape[0] - 1
    if l == L - 1:
        C = sizes[L]
        z = b1[:C]
        base = zoff[l] + n * C
        for k in range(C):
            z[k] = Z64[base + k]
        z[j] = v
        return _row_loss64(lossc, z, t, n, c)
    nn = sizes[l + 2]
    z = b1[:nn]
    wrow = woff[l + 1] + j * nn
    base = zoff[l + 1] + n * nn
    for k in range(nn):
        z[k] = Z64[base + k] + v * theta[wrow + k]
    use1 = True
    for m in range(l + 1, L - 1):  # forward the rest of this row
        nin = sizes[m + 1]
        nout = sizes[m + 2]
        zn = b2[:nout] if use1 else b1[:nout]
        for k in range(nout):
            zn[k] = 0.0
        wo = woff[m + 1]
        for i in range(nin):
            ai = _act64(act, z[i])
            if ai != 0.0:
                for k in range(nout):
                    zn[k] += ai * theta[wo + i * nout + k]
        bo = boff[m + 1]
        for k in range(nout):
            zn[k] += theta[bo + k]
        z = zn
        use1 = not use1
    return _row_loss64(lossc, z, t, n, c)


@_jit
def _unit_grad(theta, sizes, woff, boff, act, lossc, Z64, A64, zoff, N, l, j, n, sp, sm, t, c, b1, b2):
    """l_n(+) - l_n(-) for pre-activation shifts sp / sm of unit j (0 when the row can't change)."""
    L = sizes.shape[0] - 1
    nl = sizes[l + 1]
    zb = Z64[zoff[l] + n * nl + j]
    if l == L - 1:
        return (_tail_loss(theta, sizes, woff, boff, act, lossc, Z64, zoff, l, j, n, zb + sp, t, c, b1, b2)
                - _tail_loss(theta, sizes, woff, boff, act, lossc, Z64, zoff, l, j, n, zb + sm, t, c, b1, b2))
    ab = A64[zoff[l] + n * nl + j]
    dap = _act64(act, zb + sp) - ab
    dam = _act64(act, zb + sm) - ab
    if dap == 0.0 and dam == 0.0:  # e.g. a dead ReLU stays dead
        return 0.0
    return (_tail_loss(theta, sizes, woff, boff, act, lossc, Z64, zoff, l, j, n, dap, t, c, b1, b2)
            - _tail_loss(theta, sizes, woff, boff, act, lossc, Z64, zoff, l, j, n, dam, t, c, b1, b2))


@_pjit
def _net_numgrad(theta, sizes, act, lossc, x, t, wd, h, grad):
    """Central differences of the batch loss w.r.t. every parameter, without full re-forwards.

    W_l[i, j] +- h only moves z_l[n, j] by (w+-h - w) * a_{l-1}[n, i]; rows with
    a_{l-1}[n, i] == 0 are unaffected and skipped. Units j run in parallel.
    """
    N = x.shape[0]
    L = sizes.shape[0] - 1
    dt = theta.dtype.type
    hh = dt(h)
    woff, boff = _offsets(sizes)
    zoff = _act_offsets(sizes, N)
    Z, A, D1, D2 = _workspace(theta, sizes, N)
    _forward(theta, sizes, act, x, Z, A)
    tot = zoff[L]
    Z64 = np.empty(tot, np.float64)
    A64 = np.empty(tot, np.float64)
    for p in range(tot):
        Z64[p] = Z[p]
        A64[p] = _act64(act, Z64[p])  # float64 base, consistent with the tails
    cls = np.zeros(N, np.int64)  # hinge's class per row
    if lossc == _HINGE:
        for n in range(N):
            cls[n] = _argmax_row(t, n)
    maxw = 0
    for l in range(L + 1):
        maxw = max(maxw, sizes[l])
    den = 2.0 * h * N
    den_wd = 2.0 * h
    for l in range(L):
        nin = sizes[l]
        nout = sizes[l + 1]
        if l == 0:
            inp = x
        else:
            inp = A[zoff[l - 1]:zoff[l - 1] + N * nin].reshape((N, nin))
        # rows with a nonzero input per input unit i (CSC of inp)
        ptr = np.zeros(nin + 1, np.int64)
        for n in range(N):
            for i in range(nin):
                if inp[n, i] != 0:
                    ptr[i + 1] += 1
        for i in range(nin):
            ptr[i + 1] += ptr[i]
        rows = np.empty(ptr[nin], np.int64)
        fill = ptr[:nin].copy()
        for n in range(N):
            for i in range(nin):
                if inp[n, i] != 0:
                    rows[fill[i]] = n
                    fill[i] += 1
        buf1 = np.empty((nout, maxw), np.float64)  # one scratch row per unit: no sharing
        buf2 = np.empty((nout, maxw), np.float64)
        wo = woff[l]
        bo = boff[l]
        for j in prange(nout):
            b1 = buf1[j]
            b2 = buf2[j]
            for i in range(nin):
                w = theta[wo + i * nout + j]
                wp = w + hh  # the values the reference writes into theta
                wm = w - hh
                dp = np.float64(wp) - np.float64(w)
                dm = np.float64(wm) - np.float64(w)
                acc = 0.0
                for q in range(ptr[i], ptr[i + 1]):
                    n = rows[q]
                    a = np.float64(inp[n, i])
                    acc += _unit_grad(theta, sizes, woff, boff, act, lossc, Z64, A64, zoff, N,
                                      l, j, n, dp * a, dm * a, t, cls[n], b1, b2)
                g = acc / den
                wp64 = np.float64(wp)
                wm64 = np.float64(wm)
                g += 0.5 * wd * (wp64 * wp64 - wm64 * wm64) / den_wd
                grad[wo + i * nout + j] = g
            b = theta[bo + j]
            sp = np.float64(b + hh) - np.float64(b)
            sm = np.float64(b - hh) - np.float64(b)
            acc = 0.0
            for n in range(N):
                acc += _unit_grad(theta, sizes, woff, boff, act, lossc, Z64, A64, zoff, N,
                                  l, j, n, sp, sm, t, cls[n], b1, b2)
            grad[bo + j] = acc / den


# ------------------------------------------------------------------ kinks of the net's loss
@_jit
def _slope64(act, z):
    """act'(z) in float64 (ReLU: 1 for z > 0, as backprop)."""
    if act == _RELU:
        return 1.0 if z > 0.0 else 0.0
    if act == _SIGMOID:
        a = 1.0 / (1.0 + np.exp(-z))
        return a * (1.0 - a)
    if act == _TANH:
        a = np.tanh(z)
        return 1.0 - a * a
    if act == _LEAKY:
        return 1.0 if z > 0.0 else spec.LEAKY_SLOPE
    raise ValueError("unknown activation code")


@_jit
def _kink_row(theta, sizes, woff, act, hinge, Z, zoff, n, c, l, j, cur, nxt):
    """(t+, t-): how far z_l[n, j] can move up / down before some ReLU pre-activation or hinge
    margin of row n changes state. Forward mode: the derivative of every later variable with
    respect to the shift is pushed through the layers (exact for ReLU: linear until a switch)."""
    L = sizes.shape[0] - 1
    relu = act == _RELU or act == _LEAKY  # kinked (spec.Activation.kinked)
    tp = np.inf
    tm = np.inf
    nl = sizes[l + 1]
    if l == L - 1:  # a logit moves; margin k by [k == j] - [c == j]
        if hinge:
            zc = Z[zoff[l] + n * nl + c]
            for k in range(nl):
                if k == c:
                    continue
                d = (1.0 if k == j else 0.0) - (1.0 if c == j else 0.0)
                if d != 0.0:
                    q = Z[zoff[l] + n * nl + k] - zc + 1.0
                    r = abs(q) / abs(d)
                    if (q > 0.0) == (d < 0.0):
                        tp = min(tp, r)
                    else:
                        tm = min(tm, r)
        return tp, tm
    zj = Z[zoff[l] + n * nl + j]
    if relu:  # the unit itself: state change at distance |z|, upward when z <= 0
        if zj > 0.0:
            tm = zj
        else:
            tp = -zj
    s = _slope64(act, zj)
    if s == 0.0:
        return tp, tm  # nothing downstream moves before the unit switches
    nm = sizes[l + 2]
    wo = woff[l + 1] + j * nm
    for k in range(nm):
        cur[k] = s * theta[wo + k]
    for m in range(l + 1, L):
        nm = sizes[m + 1]
        base = zoff[m] + n * nm
        if m == L - 1:
            if hinge:
                zc = Z[base + c]
                for k in range(nm):
                    d = cur[k] - cur[c]
                    if k == c or d == 0.0:
                        continue
                    q = Z[base + k] - zc + 1.0
                    r = abs(q) / abs(d)
                    if (q > 0.0) == (d < 0.0):
                        tp = min(tp, r)
                    else:
                        tm = min(tm, r)
            break
        if relu:
            for k in range(nm):
                d = cur[k]
                if d != 0.0:
                    z = Z[base + k]
                    r = abs(z) / abs(d)
                    if (z > 0.0) == (d < 0.0):
                        tp = min(tp, r)
                    else:
                        tm = min(tm, r)
        nn = sizes[m + 2]
        for q in range(nn):
            nxt[q] = 0.0
        wo = woff[m + 1]
        for k in range(nm):
            g = cur[k] * _slope64(act, Z[base + k])
            if g != 0.0:
                for q in range(nn):
                    nxt[q] += g * theta[wo + k * nn + q]
        for q in range(nn):
            cur[q] = nxt[q]
    return tp, tm


@_pjit
def _kink_counts(theta, sizes, act, lossc, x, t, h, plus, minus):
    """Rows crossing a kink per parameter and side (see ``_backends.numpy.Mlp.kink_counts``)."""
    N = x.shape[0]
    L = sizes.shape[0] - 1
    hinge = lossc == _HINGE
    woff, boff = _offsets(sizes)
    zoff = _act_offsets(sizes, N)
    maxw = 0
    for l in range(L + 1):
        maxw = max(maxw, sizes[l])
    Z = np.empty(zoff[L], np.float64)  # float64 forward, row by row
    A = np.empty(zoff[L], np.float64)
    for n in prange(N):
        for l in range(L):
            nin = sizes[l]
            nout = sizes[l + 1]
            for j in range(nout):
                s = np.float64(theta[boff[l] + j])
                for i in range(nin):
                    a = np.float64(x[n, i]) if l == 0 else A[zoff[l - 1] + n * nin + i]
                    s += a * np.float64(theta[woff[l] + i * nout + j])
                Z[zoff[l] + n * nout + j] = s
                A[zoff[l] + n * nout + j] = _act64(act, s)
    for p in range(plus.shape[0]):
        plus[p] = 0
        minus[p] = 0
    if act != _RELU and act != _LEAKY and not hinge:
        return  # smooth everywhere
    cls = np.zeros(N, np.int64)
    for n in range(N):
        cls[n] = _argmax_row(t, n)
    TP = np.full(zoff[L], np.inf)
    TM = np.full(zoff[L], np.inf)
    for n in prange(N):
        cur = np.empty(maxw, np.float64)
        nxt = np.empty(maxw, np.float64)
        for l in range(L):
            nout = sizes[l + 1]
            for j in range(nout):
                tp, tm = _kink_row(theta, sizes, woff, act, hinge, Z, zoff, n, cls[n], l, j, cur, nxt)
                TP[zoff[l] + n * nout + j] = tp
                TM[zoff[l] + n * nout + j] = tm
    hh = theta.dtype.type(h)
    for l in range(L):
        nin = sizes[l]
        nout = sizes[l + 1]
        for j in prange(nout):
            for i in range(nin + 1):  # the bias last, with input 1
                e = woff[l] + i * nout + j if i < nin else boff[l] + j
                w = theta[e]
                dp = np.float64(w + hh) - np.float64(w)  # the shifts the reference stores
                dm = np.float64(w - hh) - np.float64(w)
                cp = 0
                cm = 0
                for n in range(N):
                    if i < nin:
                        a = np.float64(x[n, i]) if l == 0 else A[zoff[l - 1] + n * nin + i]
                    else:
                        a = 1.0
                    tp = TP[zoff[l] + n * nout + j]
                    tm = TM[zoff[l] + n * nout + j]
                    s = dp * a
                    if (s > 0.0 and s >= tp) or (s < 0.0 and -s >= tm):
                        cp += 1
                    s = dm * a
                    if (s > 0.0 and s >= tp) or (s < 0.0 and -s >= tm):
                        cm += 1
                plus[e] = cp
                minus[e] = cm


# ------------------------------------------------------------------ element-wise kernels
@_jit
def _softmax2d(x, out):
    N, C = x.shape
    for n in range(N):
        m = x[n, 0]
        for k in range(1, C):
            if x[n, k] > m:
                m = x[n, k]
        s = x.dtype.type(0.0)
        for k in range(C):
            e = np.exp(x[n, k] - m)
            out[n, k] = e
            s += e
        for k in range(C):
            out[n, k] = out[n, k] / s


@_jit
def _cee(y, t, N):
    delta = y.dtype.type(_DELTA)
    s = 0.0
    for p in range(y.shape[0]):
        s += t[p] * np.log(y[p] + delta)
    return -s / N


@_jit
def _mse(y, t, N):
    s = 0.0
    for p in range(y.shape[0]):
        d = y[p] - t[p]
        s += d * d
    return 0.5 * s / N


# Not cached: a function taking a dispatcher is specialised on that object, so each
# process would add a new, never reused cache entry.
@numba.njit(nogil=True, error_model="numpy")
def _numgrad_dispatch(f, x, flat, h, forward, cur, saved):
    """``cur``/``saved`` record the element under perturbation, so that the caller can
    restore it if f raises (nopython code has no try/finally)."""
    hh = flat.dtype.type(h)
    grad = np.zeros(flat.shape[0], flat.dtype)
    f0 = f(x) if forward else 0.0
    for i in range(flat.shape[0]):
        tmp = flat[i]
        saved[0] = tmp
        cur[0] = i
        flat[i] = tmp + hh
        f1 = f(x)
        if forward:
            grad[i] = (f1 - f0) / h
        else:
            flat[i] = tmp - hh
            f2 = f(x)
            grad[i] = (f1 - f2) / (2 * h)
        flat[i] = tmp  # restore exactly
        cur[0] = -1
    return grad


# ------------------------------------------------------------------ Python-facing API
# A training step's sparse first layer on two threads (_x_w0_band, _w0_band) from this much dense-equivalent work
# (batch rows x n0 x n1): 784-100-10 batch 100 is 7.8M (epoch on the nonzeros ~1.7x faster).
_TWO_THREADS_WORK = 1 << 21


_FREE_CORES = FreeCores()  # (read by Mlp._two_threads)
_STEP_ROWS: dict = {}  # batch size -> the one step's rows 0..B-1 (Mlp.train_step)


class Mlp:
    """Fully connected net on a flat parameter vector (see ``_backends/numpy.py``)."""

    def __init__(self, sizes: Sequence[int], activation: str, loss: str, dtype) -> None:
        self.sizes = [int(s) for s in sizes]
        if len(self.sizes) < 2:
            raise ValueError("sizes needs at least an input and an output size")
        self.activation = activation
        self.loss_name = loss
        self.dtype = np.dtype(dtype)
        self.n_params = n_params(self.sizes)
        self._act = spec.activation(activation, mlp=True).code
        self._loss = spec.loss(loss, mlp=True).code
        self._sizes = np.asarray(self.sizes, dtype=np.int64)

    def _x(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return _writable(np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=self.dtype))

    def _t(self, t: np.ndarray) -> np.ndarray:
        return _writable(np.ascontiguousarray(t, dtype=self.dtype))

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return _predict(theta, self._sizes, self._act, self._x(x))

    def loss(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float) -> float:
        # theta stands in for the grad buffer: not written when want=False
        x = self._x(x)
        return float(_parallel(_loss_grad)(theta, self._sizes, self._act, self._loss, x, self._t(t),
                                           float(weight_decay), theta, False, False))

    def loss_grad(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                  grad: np.ndarray) -> float:
        x = self._x(x)
        return float(_parallel(_loss_grad)(theta, self._sizes, self._act, self._loss, x, self._t(t),
                                           float(weight_decay), grad, True, self._two_threads(x.shape[0])))

    def numerical_gradient(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                           h: float, grad: np.ndarray) -> None:
        _parallel(_net_numgrad)(theta, self._sizes, self._act, self._loss, self._x(x), self._t(t),
                     float(weight_decay), float(h), grad)

    def kink_counts(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, h: float,
                    plus: np.ndarray, minus: np.ndarray) -> None:
        """See ``_backends/numpy.py`` ``Mlp.kink_counts`` (same counts, own row-by-row forward-mode loops)."""
        _parallel(_kink_counts)(theta, self._sizes, self._act, self._loss, self._x(x), self._t(t), float(h),
                                plus, minus)

    def train_steps(self, theta: np.ndarray, X: np.ndarray, T: np.ndarray, idx: np.ndarray,
                    weight_decay: float, opt: str, hyper: np.ndarray, state1: np.ndarray,
                    state2: np.ndarray, step0: int, lrs: Optional[np.ndarray] = None) -> np.ndarray:
        """See ``_backends/numpy.py`` ``Mlp.train_steps`` (``X`` dense or a ``CsrRows``, whose nonzeros the first
        layer uses directly); the whole loop runs in one jitted call."""
        code = spec.optimizer(opt).code
        s1, s2 = _states(code, theta, state1, state2)
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        if idx.ndim == 1:
            idx = idx.reshape(1, -1)
        losses = np.full(idx.shape[0], np.nan)
        if idx.shape[0] == 0:
            return losses
        h = _hyper(hyper)
        lrs = np.full(idx.shape[0], h[0]) if lrs is None else np.ascontiguousarray(lrs, dtype=np.float64)
        if lrs.shape != (idx.shape[0],):
            raise ValueError(f"lrs must have shape ({idx.shape[0]},), got {lrs.shape}")
        if isinstance(X, CsrRows):  # the first layer on the nonzeros
            if idx.size and (idx.min() < -X.n_rows or idx.max() >= X.n_rows):
                raise IndexError(f"row index out of range for {X.n_rows} rows")
            if X.n_cols != self.sizes[0]:
                raise ValueError(f"X has {X.n_cols} columns, the net takes {self.sizes[0]} inputs")
            idx = np.where(idx < 0, idx + X.n_rows, idx)
            if idx.size and idx.max() >= T.shape[0]:
                raise IndexError(f"row index out of range for T's {T.shape[0]} rows")
            if not X.checked:  # (from_dense's arrays are well formed and frozen) the rows the steps read
                bad = _bad_csr_row(X.indptr, X.indices, idx.ravel(), self.sizes[0])
                if bad == -2:
                    raise ValueError(f"train_steps: CSR indptr must be non-decreasing inside [0, nnz "
                                     f"({X.indices.size})]")
                if bad >= 0:
                    raise ValueError(f"train_steps: CSR row {bad} has column indices that are not strictly "
                                     f"increasing inside [0, {self.sizes[0]})")
            data = _writable(np.ascontiguousarray(X.data, dtype=self.dtype))
            return _parallel(_train_steps_csr)(theta, self._sizes, self._act, self._loss, X.indptr, X.indices, data,
                                    self._t(T), idx, float(weight_decay), code, h, s1, s2, int(step0), losses, lrs,
                                    self._two_threads(idx.shape[1]))
        return _parallel(_train_steps)(theta, self._sizes, self._act, self._loss, self._x(X), self._t(T), idx,
                                       float(weight_decay), code, h, s1, s2, int(step0), losses, lrs,
                                       np.empty_like(theta), self._two_threads(idx.shape[1]))

    def train_step(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float, opt: str,
                   hyper: np.ndarray, state1: np.ndarray, state2: np.ndarray, step: int, grad: np.ndarray) -> float:
        """One step on the batch (x, t of the net's dtype, checked; t one-hot) in one jitted call: loss_grad into
        ``grad`` and, when the loss is finite, the update (clipping by hyper's max_norm; plain SGD on a
        mostly-zero batch updates W_0 inside the backward, leaving grad's W_0 part unset). Returns the loss
        (net.train_step; the same as loss_grad then opt_update, without their two calls and Python between)."""
        code = spec.optimizer(opt).code
        s1, s2 = _states(code, theta, state1, state2)
        x, t = self._x(x), self._t(t)
        h = _hyper(hyper)
        idx = _STEP_ROWS.get(x.shape[0])
        if idx is None:
            idx = _STEP_ROWS[x.shape[0]] = np.arange(x.shape[0], dtype=np.int64).reshape(1, -1)
        losses = np.full(1, np.nan)
        _parallel(_train_steps)(theta, self._sizes, self._act, self._loss, x, t, idx, float(weight_decay), code, h,
                                s1, s2, int(step) - 1, losses, np.full(1, h[0]), grad,
                                self._two_threads(x.shape[0]))
        return float(losses[0])

    def _two_threads(self, rows: int) -> bool:
        """Whether a training step's sparse first layer on ``rows`` rows runs its two bands on two threads:
        enough work (the launch costs ~2 us), two numba threads configured, free cores for both (the bands'
        join would wait for a thread the scheduler parked), and not in a child forked after the pool."""
        if _SERIAL_ONLY or len(self.sizes) < 3 or rows * self.sizes[0] * self.sizes[1] < _TWO_THREADS_WORK:
            return False
        return numba.get_num_threads() >= 2 and _FREE_CORES.free(2) >= 2


def _writable(a: np.ndarray) -> np.ndarray:
    # numba types read-only arrays differently; a copy keeps one compiled signature
    return a if a.flags.writeable else a.copy()


_hyper = _npk._full_hyper  # (7,) float64, also from the tutorials' short [lr, a, b]
_N_STATES = tuple(o.n_states for o in spec.OPTIMIZERS)  # state arrays each optimizer uses, by code


def _states(code: int, theta: np.ndarray, state1, state2):
    """The state arrays, checked: the jitted update indexes them without bounds checks."""
    out = []
    for k, s in enumerate((state1, state2)):
        if k < _N_STATES[code]:
            if s is None or s.shape != theta.shape or s.dtype != theta.dtype:
                raise ValueError(f"{spec.OPTIMIZERS[code].name} needs state{k + 1} shaped and typed like theta")
            out.append(s)
        else:  # unused by this optimizer
            out.append(np.empty(0, dtype=theta.dtype) if s is None else s)
    return out


def opt_update(opt: str, theta: np.ndarray, grad: np.ndarray, state1: np.ndarray, state2: np.ndarray,
               hyper: np.ndarray, step: int) -> None:
    """One optimizer update of ``theta`` in place (``_backends/numpy.py`` ``opt_update``'s contract)."""
    code = spec.optimizer(opt).code
    s1, s2 = _states(code, theta, state1, state2)
    h = _hyper(hyper)
    if spec.OPTIMIZERS[code].bias_corrected and int(step) < 1:
        raise ValueError(f"{opt} needs step >= 1, got {step}")
    f = _clip_factor(grad, h[6])
    if f != 1.0:  # a clipped copy: grad itself is not modified
        grad = grad * grad.dtype.type(f)
    _opt_update(code, theta, grad, s1, s2, h, int(step))


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x)
    out = np.empty_like(x2)
    _softmax2d(x2, out)
    return out.reshape(x.shape)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    """Dense (N, C) y and t: -sum(t * log(y + 1e-7)) / N."""
    y = np.asarray(y)
    t = np.asarray(t, dtype=y.dtype)
    return float(_cee(np.ascontiguousarray(y).ravel(), np.ascontiguousarray(t).ravel(), y.shape[0]))


def mean_squared_error(y: np.ndarray, t: np.ndarray) -> float:
    """Dense (N, C) y and t: 0.5 * sum((y - t)**2) / N."""
    y = np.asarray(y)
    t = np.asarray(t, dtype=y.dtype)
    return float(_mse(np.ascontiguousarray(y).ravel(), np.ascontiguousarray(t).ravel(), y.shape[0]))


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float,
                       scheme: str = "central") -> np.ndarray:
    """Per-element differences of ``f`` at ``x`` (see ``_backends.numpy.numerical_gradient``).

    A numba-jitted ``f`` is called from a jitted loop: in place on ``x`` when it is
    C-contiguous (restored exactly), else on a C copy (``x`` itself is never touched).
    Any other callable goes through the plain Python loop.
    """
    if scheme not in ("central", "forward"):
        raise ValueError(f"unknown scheme {scheme!r}; expected 'central' or 'forward'")
    if not (isinstance(f, numba.core.registry.CPUDispatcher) and isinstance(x, np.ndarray)
            and x.dtype.kind == "f"):
        return _npk.numerical_gradient(f, x, h, scheme)
    work = x if x.flags.c_contiguous else x.copy(order="C")
    flat = work.reshape(-1)  # a view for a C-contiguous array
    cur = np.full(1, -1, dtype=np.int64)
    saved = np.zeros(1, dtype=flat.dtype)
    try:
        grad = _numgrad_dispatch(f, work, flat, float(h), scheme == "forward", cur, saved)
    finally:
        if cur[0] >= 0:  # f raised mid-perturbation: put the element back
            flat[cur[0]] = saved[0]
    return grad.reshape(x.shape)


# ------------------------------------------------------------------ composed nets' layers
# Whole-batch kernels of pyfastgrad.sequential's generic path (see _backends/numpy.py, same names).


@_jit
def _act_fwd(code, alpha, z, a):
    al = z.dtype.type(alpha)
    for i in range(z.size):
        v = z[i]
        if code == _RELU:
            a[i] = v if v > 0 else 0
        elif code == _LEAKY:
            a[i] = v if v > 0 else al * v
        elif code == _SIGMOID:
            a[i] = 1 / (1 + np.exp(-v))
        elif code == _TANH:
            a[i] = np.tanh(v)
        elif code == _IDENTITY:
            a[i] = v
        else:
            raise ValueError("unknown activation code")


@_jit
def _act_bwd(code, alpha, dout, z, a, dz):
    al = z.dtype.type(alpha)
    for i in range(z.size):
        if code == _RELU:
            dz[i] = dout[i] if z[i] > 0 else 0
        elif code == _LEAKY:
            dz[i] = dout[i] if z[i] > 0 else al * dout[i]
        elif code == _SIGMOID:
            dz[i] = dout[i] * (1 - a[i]) * a[i]
        elif code == _TANH:
            dz[i] = dout[i] * (1 - a[i] * a[i])
        elif code == _IDENTITY:
            dz[i] = dout[i]
        else:
            raise ValueError("unknown activation code")


@_jit
def _bn_fwd_train(x, gamma, beta, eps, out, xn, mean, var, std):
    n, d = x.shape
    s = np.zeros(d)
    for r in range(n):
        for j in range(d):
            s[j] += x[r, j]
    for j in range(d):
        mean[j] = s[j] / n
        s[j] = 0.0
    for r in range(n):
        for j in range(d):
            c = x[r, j] - mean[j]
            xn[r, j] = c
            s[j] += np.float64(c) * np.float64(c)
    for j in range(d):
        var[j] = s[j] / n
        std[j] = np.sqrt(var[j] + x.dtype.type(eps))
    for r in range(n):
        for j in range(d):
            v = xn[r, j] / std[j]
            xn[r, j] = v
            out[r, j] = gamma[j] * v + beta[j]


@_jit
def _bn_fwd_eval(x, gamma, beta, rmean, rvar, eps, out):
    n, d = x.shape
    sd = np.sqrt(rvar + x.dtype.type(eps))
    for r in range(n):
        for j in range(d):
            out[r, j] = gamma[j] * ((x[r, j] - rmean[j]) / sd[j]) + beta[j]


@_jit
def _bn_bwd(dout, xn, std, gamma, dx, dgamma, dbeta):
    n, d = dout.shape
    sg = np.zeros(d)
    sb = np.zeros(d)
    for r in range(n):
        for j in range(d):
            sb[j] += dout[r, j]
            sg[j] += np.float64(dout[r, j]) * np.float64(xn[r, j])
    m1 = np.empty(d, dout.dtype)
    m2 = np.empty(d, dout.dtype)
    for j in range(d):
        dbeta[j] = sb[j]
        dgamma[j] = sg[j]
        m1[j] = gamma[j] * sb[j] / n
        m2[j] = gamma[j] * sg[j] / n
    for r in range(n):
        for j in range(d):
            dx[r, j] = (gamma[j] * dout[r, j] - m1[j] - xn[r, j] * m2[j]) / std[j]


def act_forward(code: int, alpha: float, z: np.ndarray) -> np.ndarray:
    a = np.empty_like(z)
    _act_fwd(int(code), float(alpha), z.reshape(-1), a.reshape(-1))
    return a


def act_backward(code: int, alpha: float, dout: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    dz = np.empty_like(dout)
    _act_bwd(int(code), float(alpha), dout.reshape(-1), z.reshape(-1), a.reshape(-1), dz.reshape(-1))
    return dz


def bn_forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float):
    d = x.shape[1]
    out, xn = np.empty_like(x), np.empty_like(x)
    mean, var, std = (np.empty(d, x.dtype) for _ in range(3))
    _bn_fwd_train(x, gamma, beta, float(eps), out, xn, mean, var, std)
    return out, xn, mean, var, std


def bn_forward_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                    running_var: np.ndarray, eps: float) -> np.ndarray:
    out = np.empty_like(x)
    _bn_fwd_eval(x, gamma, beta, running_mean, running_var, float(eps), out)
    return out


def bn_backward(dout: np.ndarray, xn: np.ndarray, std: np.ndarray, gamma: np.ndarray):
    dx = np.empty_like(dout)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(gamma)
    _bn_bwd(dout, xn, std, gamma, dx, dgamma, dbeta)
    return dx, dgamma, dbeta


def mul_mask(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return x * mask  # one numpy pass: no faster jitted


# ------------------------------------------------------------------ validation and sparse-input scans
matmul = _npk.matmul  # numpy's BLAS (numba's np.dot would call the same through scipy)
all_finite = _npk.all_finite  # numpy's scan (a jitted one gained little here and costs a compilation)


@_pjit
def _row_counts(X, counts):
    n, d = X.shape
    for r in prange(n):
        c = 0
        for k in range(d):
            c += X[r, k] != 0  # NaN != 0: kept, as numpy's
        counts[r] = c


@_pjit
def _fill_csr(X, indptr, indices, data):
    n, d = X.shape
    for r in prange(n):
        p = indptr[r]
        for k in range(d):
            v = X[r, k]
            if v != 0:
                indices[p] = k
                data[p] = v
                p += 1


def dense_to_csr(X: np.ndarray):
    """numpy's dense_to_csr (the same arrays) in two jitted passes over the rows, on the cores: fit
    converts MNIST's training set once per call (numpy's masks: ~130 ms; these: a few tens)."""
    if X.ndim != 2 or X.dtype not in (np.float32, np.float64) or not X.flags.c_contiguous:
        return _npk.dense_to_csr(X)
    n = X.shape[0]
    counts = np.empty(n, np.int64)
    _parallel(_row_counts)(X, counts)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int32)
    data = np.empty(int(indptr[-1]), X.dtype)
    _parallel(_fill_csr)(X, indptr, indices, data)
    return indptr, indices, data
