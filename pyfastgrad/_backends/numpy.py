"""The ``numpy`` backend: the kernel interface, implemented with the reference.

Every backend module (``_backends/numpy.py``, ``_backends/numba.py``, ``_backends/cpp.py``)
exposes the same names (typed in ``_backends/protocols.py``); this one is the executable
specification of them. Names, codes, state counts, hyper slots and the flat parameter layout
come from :mod:`pyfastgrad.spec`.

Targets ``t`` are always dense (N, C) arrays of the net's dtype (one-hot for
labels; the Python layer converts). Losses:

* ``softmax``: -sum_n sum_k t_nk * log_softmax(z)_nk / N, with the stable
  log_softmax(z)_k = z_k - max(z) - log(sum_j exp(z_j - max(z))) (NO 1e-7 guard:
  see reference.py; backprop (y - t)/N is then the exact derivative)
* ``mse``:     0.5 * sum((z - t)**2) / N   (identity output)
* ``hinge``:   sum_n sum_{k != c_n} max(0, z_nk - z_nc + 1) / N,  c_n = argmax t_n

plus ``0.5 * weight_decay * sum_l sum(W_l**2)``.

``Mlp.train_steps`` takes the training inputs ``X`` either as a dense (N, n0) array
or as a ``_sparse.CsrRows`` (the nonzeros of each row, of the net's dtype): the
results are the same up to the order of floating-point sums. The cpp backend then
computes the first layer from the nonzeros only; the numpy and numba backends
densify the rows the steps use.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from .. import reference as ref
from .. import spec
from .._sparse import CsrRows
from ..spec import layer_slices, n_params

NAME = "numpy"
_CHUNK_ROWS = 4096  # dense_to_csr converts this many rows at a time: bounds the temporary masks


class Mlp:
    """Fully connected net on a flat parameter vector (see the module docstring)."""

    def __init__(self, sizes: Sequence[int], activation: str, loss: str, dtype) -> None:
        self.sizes = [int(s) for s in sizes]
        self.activation = spec.activation(activation, mlp=True).name
        self.loss_name = spec.loss(loss, mlp=True).name
        self.dtype = np.dtype(dtype)
        self.n_params = n_params(self.sizes)
        self._slices = layer_slices(self.sizes)

    def _net(self, theta: np.ndarray, weight_decay: float) -> ref.MultiLayerNet:
        net = ref.MultiLayerNet.__new__(ref.MultiLayerNet)
        net.sizes, net.activation, net.loss_name = self.sizes, self.activation, self.loss_name
        net.weight_decay_lambda = weight_decay
        net.params = {}
        for i, (ws, wshape, bs) in enumerate(self._slices, start=1):
            net.params[f"W{i}"] = theta[ws].reshape(wshape)  # views: perturbations are seen
            net.params[f"b{i}"] = theta[bs]
        net._build()
        return net

    def predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self._net(theta, 0.0).predict(x)

    def loss(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float) -> float:
        return float(self._net(theta, weight_decay).loss(x, t))

    def loss_grad(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                  grad: np.ndarray) -> float:
        net = self._net(theta, weight_decay)
        with np.errstate(all="ignore"):  # like the compiled backends: callers check the loss
            loss = float(net.loss(x, t))
            grads = net.gradient(x, t)
        for i, (ws, _, bs) in enumerate(self._slices, start=1):
            grad[ws] = grads[f"W{i}"].ravel()
            grad[bs] = grads[f"b{i}"]
        return loss

    def numerical_gradient(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, weight_decay: float,
                           h: float, grad: np.ndarray) -> None:
        net = self._net(theta, weight_decay)
        grad[:] = ref.numerical_gradient(lambda _: net.loss(x, t), theta, h)

    def kink_counts(self, theta: np.ndarray, x: np.ndarray, t: np.ndarray, h: float,
                    plus: np.ndarray, minus: np.ndarray) -> None:
        """Rows whose loss is not smooth between theta and theta +- h e_p, for every parameter p.

        ``plus[p]`` (``minus[p]``) counts the rows n in which moving parameter p to the
        stored value ``theta_p + h`` (``theta_p - h``) changes the state of a ReLU
        pre-activation (``z > 0``) or of a hinge margin, anywhere downstream of p. A
        central difference across such a kink measures the average of two slopes, not
        backprop's one. Exact for ReLU nets (piecewise linear: until the first state
        change every pre-activation of the row moves linearly with the shift, so the
        distance to the first kink is min |z| / |dz/ds|); first order for sigmoid/tanh
        nets with the hinge loss. ``plus``/``minus`` are int64 arrays of length n_params.
        """
        _kink_counts_reference(self.sizes, self.activation, self.loss_name, theta, x, t, h, plus, minus)

    def train_steps(self, theta: np.ndarray, X: np.ndarray, T: np.ndarray, idx: np.ndarray,
                    weight_decay: float, opt: str, hyper: np.ndarray, state1: np.ndarray,
                    state2: np.ndarray, step0: int, lrs: Optional[np.ndarray] = None) -> np.ndarray:
        """Mini-batch steps: for each row of ``idx`` (n_steps, B) take X[idx[s]], T[idx[s]]
        (``X`` dense or a ``CsrRows``), compute loss and gradient, and apply
        ``opt_update(opt, .., hyper, step0 + s + 1)`` to ``theta`` (and the optimizer state) in
        place, with ``hyper[0] = lrs[s]`` when the per-step learning rates ``lrs`` (float64
        (n_steps,)) are given.

        Returns the loss of every step (float64). Stops at the first non-finite loss,
        leaving the remaining entries NaN and ``theta`` as it was before that step.
        """
        if isinstance(X, CsrRows):
            X, T, idx = X.dense_batches(idx, T)
        losses = np.full(idx.shape[0], np.nan)
        grad = np.empty_like(theta)
        h = _full_hyper(hyper)
        for s in range(idx.shape[0]):
            rows = idx[s]
            loss = self.loss_grad(theta, X[rows], T[rows], weight_decay, grad)
            if not np.isfinite(loss):
                break
            losses[s] = loss
            if lrs is not None:
                h[0] = lrs[s]
            opt_update(opt, theta, grad, state1, state2, h, step0 + s + 1)
        return losses


_full_hyper = spec.full_hyper


def _clip_factor(grad: np.ndarray, max_norm: float) -> float:
    """max_norm / (||grad|| + 1e-6) when the global norm ||grad|| exceeds max_norm > 0, else 1
    (torch.nn.utils.clip_grad_norm_'s rule; the sum of squares in float64)."""
    if not max_norm > 0:
        return 1.0
    g = grad.astype(np.float64, copy=False)
    norm = float(np.sqrt(np.dot(g, g)))
    return max_norm / (norm + 1e-6) if norm > max_norm else 1.0


# ------------------------------------------------------------------ kinks of the net's loss
def _kink_side(z: np.ndarray, d: np.ndarray, tp: np.ndarray, tm: np.ndarray) -> None:
    """Lower tp/tm (distances in s to the first state change on each side) by the variables
    z + s*d, state z > 0. They change state at |s| = |z|/|d|, on the + side when
    (z > 0) == (d < 0). Shapes broadcast to tp's; tp, tm updated in place."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(d != 0, np.abs(z) / np.abs(d), np.inf)
    side_p = (z > 0) == (d < 0)
    np.minimum(tp, np.where(side_p, r, np.inf).min(axis=-1), out=tp)
    np.minimum(tm, np.where(side_p, np.inf, r).min(axis=-1), out=tm)


def _act_slope(activation: str, z: np.ndarray) -> np.ndarray:
    """act'(z): the reference layer's backward of ones (ReLU: 1 for z > 0, as backprop)."""
    layer = ref._ACTIVATIONS[spec.activation(activation, mlp=True).name]()
    layer.forward(z)
    return layer.backward(np.ones_like(z))


def _kink_counts_reference(sizes: Sequence[int], activation: str, loss: str, theta: np.ndarray,
                          x: np.ndarray, t: np.ndarray, h: float, plus: np.ndarray,
                          minus: np.ndarray) -> None:
    """The specification of ``Mlp.kink_counts`` (see there), in float64 numpy."""
    sizes = [int(s) for s in sizes]
    L = len(sizes) - 1
    relu, hinge = spec.activation(activation).kinked, loss == "hinge"
    th = theta.astype(np.float64)
    sl = layer_slices(sizes)
    W = [th[ws].reshape(shape) for ws, shape, _ in sl]
    b = [th[bs] for _, _, bs in sl]
    A = [x.astype(np.float64)]  # input of each layer
    Z = []
    for l in range(L):
        Z.append(A[l] @ W[l] + b[l])
        if l < L - 1:
            A.append(ref._ACTIVATIONS[activation]().forward(Z[l]))
    N = x.shape[0]
    rows = np.arange(N)
    cls = t.argmax(axis=1)
    q = Z[L - 1] - Z[L - 1][rows, cls][:, None] + 1.0  # hinge margins
    q[rows, cls] = -np.inf  # the true class has no margin: never a kink
    plus[:] = 0
    minus[:] = 0
    if not relu and not hinge:
        return  # smooth everywhere
    hd = theta.dtype.type(h)
    for l in range(L):
        nout = sizes[l + 1]
        # tp/tm[n, j]: distance in s (a shift of z_l[n, j]) to the first kink on each side
        tp = np.full((N, nout), np.inf)
        tm = np.full((N, nout), np.inf)
        if l == L - 1:  # a logit moves: margin k moves by [k == j] - [c == j]
            if hinge:
                d = np.eye(nout)[None, :, :] - (cls[:, None] == np.arange(nout))[:, :, None]
                _kink_side(q[:, None, :], d, tp, tm)
        else:
            if relu:  # the unit itself: z + s
                _kink_side(Z[l][:, :, None], np.ones((1, 1, 1)), tp, tm)
            # downstream, one block of rows at a time: D[n, j, :] = d z_m[n, :] / ds
            slope = _act_slope(activation, Z[l])
            for n0 in range(0, N, 16):
                r = slice(n0, n0 + 16)
                D = slope[r][:, :, None] * W[l + 1][None]
                for m in range(l + 1, L):
                    if m < L - 1:
                        if relu:
                            _kink_side(Z[m][r][:, None, :], D, tp[r], tm[r])
                        D = (D * _act_slope(activation, Z[m][r])[:, None, :]) @ W[m + 1]
                    elif hinge:
                        c = cls[r]
                        Dq = D - D[np.arange(D.shape[0]), :, c][:, :, None]
                        _kink_side(q[r][:, None, :], Dq, tp[r], tm[r])
        # parameter shifts: the stored values theta +- h, minus theta, times the layer input
        ws, (nin, _), bs = sl[l]
        wv = theta[ws].reshape(nin, nout)
        dp = (wv + hd).astype(np.float64) - wv
        dm = (wv - hd).astype(np.float64) - wv
        for n0 in range(0, N, 16):
            r = slice(n0, n0 + 16)
            a = A[l][r][:, :, None]
            for dd, cnt in ((dp, plus), (dm, minus)):
                s = dd[None] * a
                hit = ((s > 0) & (s >= tp[r][:, None, :])) | ((s < 0) & (-s >= tm[r][:, None, :]))
                cnt[ws] += hit.sum(axis=0).ravel()
        bv = theta[bs]
        for dd, cnt in (((bv + hd).astype(np.float64) - bv, plus), ((bv - hd).astype(np.float64) - bv, minus)):
            s = dd[None, :]
            hit = ((s > 0) & (s >= tp)) | ((s < 0) & (-s >= tm))
            cnt[bs] += hit.sum(axis=0)


def opt_update(opt: str, theta: np.ndarray, grad: np.ndarray, state1: np.ndarray, state2: np.ndarray,
               hyper: np.ndarray, step: int) -> None:
    """One optimizer update of ``theta`` in place (elementwise; the reference's formulas by default).

    ``hyper = [lr, a, b, eps, weight_decay, style, max_norm]`` (float64; a short ``[lr, a, b]``
    means eps 1e-7 and zeros after it): a = momentum (momentum, nesterov), decay rate (rmsprop) or
    beta1 (adam, adamw); b = beta2. ``state1``/``state2``: v (momentum, nesterov), h (adagrad,
    rmsprop), m and v (adam, adamw). ``step`` is 1 for the first update (Adam's bias correction).

    In order: g <- g * _clip_factor(g, max_norm) (a copy; ``grad`` is not modified);
    theta <- theta * (1 - lr * weight_decay) when weight_decay != 0 (decoupled decay);
    then, with style 0 (the tutorials') or 1 (torch.optim's):

    * sgd:       theta -= lr g
    * momentum:  0: v = mu v - lr g; theta += v.   1: v = mu v + g; theta -= lr v
    * nesterov:  0: v = mu v - lr g; theta += mu^2 v - (1 + mu) lr g.
                 1: v = mu v + g; theta -= lr (g + mu v)
    * adagrad:   h += g^2; theta -= lr g / (sqrt(h) + eps)
    * rmsprop:   h = rho h + (1 - rho) g^2; theta -= lr g / (sqrt(h) + eps)
    * adam(w):   m += (1 - b1)(g - m); v += (1 - b2)(g^2 - v); bc_i = 1 - b_i^step;
                 0: theta -= lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps)
                 1: theta -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
    * adamax:    (both styles, torch.optim.Adamax) g += wd theta (L2: weight_decay is not decoupled here);
                 m += (1 - b1)(g - m); u = max(b2 u, |g| + eps); theta -= lr / (1 - b1^step) * (m / u)
    """
    h = _full_hyper(hyper)
    lr, eps, wd, torch, max_norm = float(h[0]), h[3], float(h[4]), h[5] != 0, float(h[6])
    dt = theta.dtype.type
    entry = spec.optimizer(opt)
    if entry.bias_corrected and step < 1:
        raise ValueError(f"{opt} needs step >= 1, got {step}")
    f = _clip_factor(grad, max_norm)
    if f != 1.0:
        grad = grad * dt(f)
    if wd != 0.0 and entry.decoupled_decay:  # decoupled weight decay (AdamW), before the step
        theta *= dt(1.0 - lr * wd)
    eps = dt(eps)
    if opt == "sgd":
        theta -= dt(lr) * grad
    elif opt == "momentum":
        mu = dt(h[1])
        if torch:
            state1 *= mu
            state1 += grad
            theta -= dt(lr) * state1
        else:
            state1[:] = mu * state1 - dt(lr) * grad
            theta += state1
    elif opt == "nesterov":
        mu = dt(h[1])
        if torch:
            state1 *= mu
            state1 += grad
            theta -= dt(lr) * (grad + mu * state1)
        else:
            state1 *= mu
            state1 -= dt(lr) * grad
            theta += mu * mu * state1
            theta -= (1 + mu) * dt(lr) * grad
    elif opt == "adagrad":
        state1 += grad * grad
        theta -= dt(lr) * grad / (np.sqrt(state1) + eps)
    elif opt == "rmsprop":
        rho = dt(h[1])
        state1 *= rho
        state1 += (1 - rho) * grad * grad
        theta -= dt(lr) * grad / (np.sqrt(state1) + eps)
    elif opt in ("adam", "adamw"):
        b1, b2 = float(h[1]), float(h[2])
        bc1, bc2 = 1.0 - b1 ** step, 1.0 - b2 ** step
        state1 += (1 - dt(b1)) * (grad - state1)
        state2 += (1 - dt(b2)) * (grad ** 2 - state2)
        if torch:
            theta -= dt(lr / bc1) * state1 / (np.sqrt(state2) / dt(np.sqrt(bc2)) + eps)
        else:
            lr_t = dt(lr * np.sqrt(bc2) / bc1)
            theta -= lr_t * state1 / (np.sqrt(state2) + eps)
    elif opt == "adamax":  # torch.optim.Adamax: L2 decay in the gradient, an infinity-norm second moment
        b1, b2 = dt(h[1]), dt(h[2])
        if wd != 0.0:
            grad = grad + dt(wd) * theta
        state1 += (1 - b1) * (grad - state1)
        np.maximum(state2 * b2, np.abs(grad) + eps, out=state2)
        theta -= dt(lr / (1.0 - float(h[1]) ** step)) * (state1 / state2)
    else:  # in the registry but not written here
        raise ValueError(f"optimizer {opt!r} has no numpy kernel")


# ------------------------------------------------------------------ element-wise kernels
def softmax(x: np.ndarray) -> np.ndarray:
    return ref.softmax(x)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    """Dense (N, C) y and t: -sum(t * log(y + 1e-7)) / N."""
    return float(-np.sum(t * np.log(y + ref.DELTA)) / y.shape[0])


def mean_squared_error(y: np.ndarray, t: np.ndarray) -> float:
    """Dense (N, C) y and t: 0.5 * sum((y - t)**2) / N."""
    return float(0.5 * np.sum((y - t) ** 2) / y.shape[0])


def _real(v) -> float:
    """f's value as a float; the C++ loop's TypeError for anything else (arrays, strings)."""
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "fiub":
        raise TypeError(f"f must return a real number (float, numpy scalar or 0-d array), got {type(v)}")
    return float(a.reshape(()))


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float,
                       scheme: str = "central") -> np.ndarray:
    """Per-element differences of ``f`` at ``x`` (perturbed in place, restored exactly).

    scheme 'central': (f(x+h) - f(x-h)) / 2h; 'forward': (f(x+h) - f(x)) / h.
    """
    grad = np.zeros(x.shape, dtype=x.dtype)
    f0 = _real(f(x)) if scheme == "forward" else 0.0
    it = np.nditer(x, flags=["multi_index"])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]
        try:
            x[idx] = tmp_val + h
            fxh1 = _real(f(x))
            if scheme == "central":
                x[idx] = tmp_val - h
                fxh2 = _real(f(x))
                grad[idx] = (fxh1 - fxh2) / (2 * h)
            else:
                grad[idx] = (fxh1 - f0) / h
        finally:
            x[idx] = tmp_val  # restore, also when f raises
        it.iternext()
    return grad


# ------------------------------------------------------------------ composed nets' layers
# Whole-batch kernels of pyfastgrad.sequential's generic path (every backend has these names; the
# cpp ones are csrc/kernels/layers.hpp). Arrays are C-contiguous (N, D) of one float dtype; results are new
# arrays, inputs are only read.
_RELU, _LEAKY, _SIGMOID, _TANH, _IDENTITY = (spec.ACT_CODE[k] for k in
                                             ("relu", "leaky_relu", "sigmoid", "tanh", "identity"))


def matmul(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """``op(a) @ op(b)`` (op: ``.T`` when trans_a / trans_b): the affine layers' products."""
    return np.dot(a.T if trans_a else a, b.T if trans_b else b)


def act_forward(code: int, alpha: float, z: np.ndarray) -> np.ndarray:
    """a = f(z): relu, leaky relu (slope ``alpha`` for z <= 0), sigmoid, tanh, identity."""
    if code == _RELU:
        return np.where(z > 0, z, z.dtype.type(0))
    if code == _LEAKY:
        return np.where(z > 0, z, z.dtype.type(alpha) * z)
    if code == _SIGMOID:
        return ref.sigmoid(z)
    if code == _TANH:
        return np.tanh(z)
    if code == _IDENTITY:
        return z.copy()
    raise ValueError(f"unknown activation code {code}")


def act_backward(code: int, alpha: float, dout: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """dz = dout * f'(z), from z (the ReLUs) or a = f(z) (sigmoid, tanh)."""
    if code == _RELU:
        return np.where(z > 0, dout, dout.dtype.type(0))
    if code == _LEAKY:
        return np.where(z > 0, dout, dout.dtype.type(alpha) * dout)
    if code == _SIGMOID:
        return dout * (1 - a) * a
    if code == _TANH:
        return dout * (1 - a * a)
    if code == _IDENTITY:
        return dout.copy()
    raise ValueError(f"unknown activation code {code}")


def bn_forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float):
    """Batch Normalization over the rows (training mode): ``(out, xn, mean, var, std)``."""
    dt = x.dtype.type
    mean = x.mean(axis=0)
    xc = x - mean
    var = (xc * xc).mean(axis=0)
    std = np.sqrt(var + dt(eps))
    xn = xc / std
    return gamma * xn + beta, xn, mean, var, std


def bn_forward_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                    running_var: np.ndarray, eps: float) -> np.ndarray:
    """Batch Normalization with the running statistics (evaluation mode)."""
    return gamma * ((x - running_mean) / np.sqrt(running_var + x.dtype.type(eps))) + beta


def bn_backward(dout: np.ndarray, xn: np.ndarray, std: np.ndarray, gamma: np.ndarray):
    """Backward of :func:`bn_forward_train`: ``(dx, dgamma, dbeta)`` with
    dx = (gamma dout - mean(gamma dout) - xn mean(gamma dout xn)) / std."""
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xn).sum(axis=0)
    dx = (gamma * dout - gamma * dbeta / n - xn * (gamma * dgamma / n)) / std
    return dx, dgamma, dbeta


def mul_mask(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dropout (the tutorials' form): x * mask, mask of 0/1 in x's dtype."""
    return x * mask


# ------------------------------------------------------------------ validation and sparse-input scans
def all_finite(a: np.ndarray) -> bool:
    """True when ``a`` holds no NaN or Inf (any dtype, any strides)."""
    return bool(np.isfinite(a).all())


def dense_to_csr(X: np.ndarray):
    """(indptr int64, indices int32, data of X's dtype): the nonzeros of the 2-D ``X`` by row, columns
    ascending (NaN counts as nonzero); ``X`` (any strides) is not modified."""
    n, d = X.shape
    counts = np.zeros(n, dtype=np.int64)
    cols = np.arange(d, dtype=np.int32)
    ind_parts, dat_parts = [np.zeros(0, np.int32)], [np.zeros(0, X.dtype)]
    for r0 in range(0, n, _CHUNK_ROWS):
        block = X[r0:r0 + _CHUNK_ROWS]
        mask = block != 0  # NaN is kept (NaN != 0)
        counts[r0:r0 + block.shape[0]] = np.count_nonzero(mask, axis=1)
        ind_parts.append(np.broadcast_to(cols, block.shape)[mask])  # row-major: by row, columns ascending
        dat_parts.append(block[mask])
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.concatenate(ind_parts), np.concatenate(dat_parts)
