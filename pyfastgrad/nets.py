"""The tutorials' nets (SimpleNet, TwoLayerNet, MultiLayerNet) on a fast backend.

All parameters of a net live in one flat, contiguous vector (``net.theta``);
``net.params['W1']`` etc. are views into it, so the tutorials' idioms work
unchanged (``params[key] -= lr * grads[key]``, ``params['W1'] = W``) while the
C++/numba kernels see one buffer: a whole forward+backward is one call.
"""
from __future__ import annotations

import math
import sys
from collections.abc import MutableMapping
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import spec
from ._backends import get_backend, kernels
from ._validate import as_batch, as_targets, check_finite, class_labels, float_dtype, non_negative, positive

__all__ = ["Net", "MultiLayerNet", "TwoLayerNet", "SimpleNet", "ParamDict", "load_net"]


# accuracy() casts a data set of another dtype this many rows at a time
_CAST_ROWS = 2048


class ParamDict(MutableMapping):
    """Dict of named views into a flat buffer. Assigning copies into the view (shape checked)."""

    def __init__(self, flat: np.ndarray, layout: Dict[str, tuple]) -> None:
        self._flat = flat
        self._views = {k: flat[s].reshape(shape) for k, (s, shape) in layout.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        return self._views[key]

    def __setitem__(self, key: str, value) -> None:
        if key not in self._views:
            raise KeyError(f"{key!r} is not a parameter of this net (have {list(self._views)})")
        view = self._views[key]
        if value is view:
            return  # `params[k] -= ...` already updated the buffer in place
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"params[{key!r}] must have shape {view.shape}, got {value.shape}")
        check_finite(value, f"params[{key!r}]")
        np.copyto(view, value, casting="same_kind")

    def __delitem__(self, key: str) -> None:
        raise TypeError("parameters cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.shape}" for k, v in self._views.items())
        return f"ParamDict({{{inner}}}, dtype={self._flat.dtype})"


class GradDict(dict):
    """What ``gradient()`` returns: a plain ``{'W1': dW1, 'b1': db1, ...}`` whose arrays are consecutive views
    of one flat buffer. The optimizers' ``update`` reads that buffer directly while every entry is still
    its original view (checking the layout of 22 arrays cost more than the update of a small net)."""

    __slots__ = ("flat", "_views", "layout")

    def __init__(self, flat: np.ndarray, items, layout=None) -> None:
        super().__init__(items)
        self.flat = flat
        self._views = tuple(self.values())
        self.layout = layout  # the net's layout object (the optimizers' check that it is the same net's)

    def intact(self, arrays) -> bool:
        """Whether ``arrays`` are this dict's original views, in order (then ``flat`` holds them)."""
        return len(arrays) == len(self._views) and all(a is b for a, b in zip(arrays, self._views))


WEIGHT_INITS = ("he", "relu", "xavier", "sigmoid", "std", "auto")
_KINKED = frozenset(a.name for a in spec.ACTIVATIONS if a.kinked)  # 'auto' gives these He's scale


def _seed_or_global(seed: Optional[int]) -> int:
    """``seed``, or (None) a draw from numpy's global generator: like the tutorials' nets, which call
    ``np.random.randn``, a script made reproducible with ``np.random.seed`` stays reproducible."""
    return int(np.random.randint(0, 2**31 - 1)) if seed is None else seed


def _init_scale(weight_init: Union[str, float], fan_in: int, activation: str) -> float:
    """Standard deviation of a layer's initial weights (the tutorials' ``weight_init_std``).

    'he' / 'relu': sqrt(2 / fan_in) (for ReLU); 'xavier' / 'sigmoid': sqrt(1 / fan_in) (for
    sigmoid and tanh); 'std': 0.01; 'auto': 'he' for ReLU nets, else 'xavier'; a positive float:
    that standard deviation.
    """
    if isinstance(weight_init, str):
        w = weight_init.strip().lower()
        if w == "auto":
            w = "he" if activation in _KINKED else "xavier"
        if w in ("he", "relu"):
            return float(np.sqrt(2.0 / fan_in))
        if w in ("xavier", "sigmoid"):
            return float(np.sqrt(1.0 / fan_in))
        if w == "std":
            return 0.01
        raise ValueError(f"weight_init must be 'he' (or 'relu'), 'xavier' (or 'sigmoid'), 'std', 'auto' "
                         f"or a positive float, got {weight_init!r}")
    if isinstance(weight_init, (bool, np.bool_)) or not isinstance(weight_init, (int, float, np.number)):
        raise TypeError(f"weight_init must be a name or a positive float, got {type(weight_init).__name__}")
    return positive(weight_init, "weight_init")


class Net:
    """Fully connected net: (Affine -> activation) * hidden -> Affine -> loss.

    Parameters
    ----------
    sizes : sequence of int
        ``[input, hidden..., output]``.
    activation : one of ``pyfastgrad.spec.MLP_ACTIVATIONS`` ('relu', 'sigmoid', 'tanh', 'leaky_relu')
    loss : {'softmax', 'mse', 'hinge'}
        Softmax with cross-entropy, mean squared error on the identity output, or
        multiclass hinge (SVM, margin 1).
    weight_init : str or float, default 'std'
        Standard deviation of the initial weights: 'he' (or 'relu', sqrt(2/fan_in), for ReLU),
        'xavier' (or 'sigmoid', sqrt(1/fan_in), for sigmoid/tanh), 'std' (0.01, the tutorials'
        TwoLayerNet), 'auto' ('he' for ReLU, else 'xavier') or a positive float. Biases start at 0.
    weight_decay : float
        L2 penalty ``0.5 * weight_decay * sum(W**2)`` over weights (gradient ``weight_decay * W``).
    dtype : float64 (default) or float32.
    seed : int or None
        Seed of the weight initialisation (numpy default_rng).
    backend : None (the current global backend at each call), 'cpp', 'numba' or 'numpy'.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", loss: str = "softmax",
                 weight_init: Union[str, float] = "std", weight_decay: float = 0.0,
                 dtype=np.float64, seed: Optional[int] = None, backend: Optional[str] = None) -> None:
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must be at least [input, output] with positive entries, got {sizes}")
        if activation not in spec.MLP_ACTIVATIONS:
            raise ValueError(f"activation must be one of {spec.MLP_ACTIVATIONS}, got {activation!r}")
        if loss not in spec.MLP_LOSSES:
            raise ValueError(f"loss must be one of {spec.MLP_LOSSES}, got {loss!r}")
        self.sizes = sizes
        self.activation = activation
        self.loss_name = loss
        self.weight_decay = non_negative(weight_decay, "weight_decay")
        self.dtype = float_dtype(dtype)
        self.backend = backend
        self.weight_init = weight_init
        self._mlps: Dict[str, object] = {}
        self.theta = np.zeros(spec.n_params(sizes), dtype=self.dtype)
        self._grad = np.zeros_like(self.theta)
        layout = {}
        for i, (ws, wshape, bs) in enumerate(spec.layer_slices(sizes), start=1):
            layout[f"W{i}"] = (ws, wshape)
            layout[f"b{i}"] = (bs, (wshape[1],))
        self._layout = layout
        self.params = ParamDict(self.theta, layout)
        rng = np.random.default_rng(_seed_or_global(seed))
        for i in range(1, len(sizes)):
            scale = _init_scale(weight_init, sizes[i - 1], activation)
            self.params[f"W{i}"] = scale * rng.standard_normal((sizes[i - 1], sizes[i]))

    # ------------------------------------------------------------------ plumbing
    @property
    def params(self) -> ParamDict:
        """The parameters by name (``W1, b1, ...``): views into ``theta``."""
        return self.__dict__["_params"]

    @params.setter
    def params(self, value) -> None:
        # Rebinding must not detach the net from what it trains: a ParamDict over this net's theta (or
        # the first binding, in a constructor) is bound; any other mapping with the same keys is copied
        # into the views (shapes checked).
        cur = self.__dict__.get("_params")
        if cur is None or (isinstance(value, ParamDict) and value._flat is self.theta):
            self.__dict__["_params"] = value
            return
        if not hasattr(value, "keys") or set(value.keys()) != set(cur.keys()):
            have = list(value.keys()) if hasattr(value, "keys") else type(value).__name__
            raise ValueError(f"net.params = ... needs exactly the keys {list(cur)}, got {have}; "
                             "the values are copied into the net's parameters")
        new = {k: np.asarray(value[k]) for k in cur}  # checked before anything is copied
        for k, v in new.items():
            if v.shape != cur[k].shape:
                raise ValueError(f"params[{k!r}] must have shape {cur[k].shape}, got {v.shape}")
            check_finite(v, f"params[{k!r}]")
        for k, v in new.items():
            cur[k] = v

    @property
    def n_params(self) -> int:
        """Number of parameters, ``sum(fan_in * fan_out + fan_out)`` over the layers (``theta.size``)."""
        return self.theta.size

    @property
    def n_layers(self) -> int:
        """Number of affine layers, ``len(sizes) - 1``."""
        return len(self.sizes) - 1

    # the tutorials' MultiLayerNet attributes, read from sizes
    @property
    def input_size(self) -> int:
        """Inputs per sample, ``sizes[0]`` (the tutorials' attribute)."""
        return self.sizes[0]

    @property
    def output_size(self) -> int:
        """Outputs per sample, ``sizes[-1]`` (the tutorials' attribute)."""
        return self.sizes[-1]

    @property
    def hidden_size_list(self) -> List[int]:
        """Widths of the hidden layers, ``sizes[1:-1]`` (the tutorials' attribute)."""
        return list(self.sizes[1:-1])

    @property
    def hidden_layer_num(self) -> int:
        """Number of hidden layers (the tutorials' attribute)."""
        return len(self.sizes) - 2

    @property
    def weight_decay_lambda(self) -> float:
        """The tutorials' name of :attr:`weight_decay`."""
        return self.weight_decay

    @weight_decay_lambda.setter
    def weight_decay_lambda(self, value: float) -> None:
        self.weight_decay = non_negative(value, "weight_decay_lambda")

    def _mlp(self):
        name = self.backend or get_backend()
        mlp = self._mlps.get(name)
        if mlp is None:
            mlp = self._mlps[name] = kernels(name).Mlp(self.sizes, self.activation, self.loss_name, self.dtype)
        return mlp

    def _xt(self, x, t=None, kernel_dtypes: bool = False):
        """x and t checked, of the net's dtype; kernel_dtypes: x may stay in another dtype the kernels
        read (float32 images into a float64 net on cpp: no float64 copy per call)."""
        also = getattr(self._mlp(), "input_dtypes", ()) if kernel_dtypes else ()
        xb = as_batch(x, self.sizes[0], self.dtype, also=also)
        if t is None:
            return xb, None
        return xb, as_targets(t, xb.shape[0], self.sizes[-1], self.dtype, values=self.loss_name == "mse")

    def _grads_dict(self, flat: np.ndarray) -> Dict[str, np.ndarray]:
        return GradDict(flat, [(k, flat[s].reshape(shape)) for k, (s, shape) in self._layout.items()], self._layout)

    # ------------------------------------------------------------------ the tutorials' API
    def predict(self, x) -> np.ndarray:
        """Scores (the last affine output, before softmax), shape (N, output)."""
        xb, _ = self._xt(x, kernel_dtypes=True)
        return self._mlp().predict(self.theta, xb)

    def loss(self, x, t) -> float:
        """Loss of the batch (mean over samples) plus the L2 term. ``t``: labels or one-hot."""
        xb, tb = self._xt(x, t, kernel_dtypes=True)
        return self._mlp().loss(self.theta, xb, tb, self.weight_decay)

    @property
    def is_regression(self) -> bool:
        """True for one output with the MSE loss: a regression net, scored by :meth:`regression_metrics`
        (accuracy has no meaning there)."""
        return self.loss_name == "mse" and self.sizes[-1] == 1

    def is_regression_target(self, t) -> bool:
        """Whether ``t`` makes this net's task a regression: a regression net, or an MSE net given real
        targets that are not one-hot rows (labels and one-hot rows are classification)."""
        if self.is_regression:
            return True
        if self.loss_name != "mse":
            return False
        t = np.asarray(t)
        if t.dtype.kind in "iub" or t.ndim != 2:
            return False
        return not (np.isin(t, (0, 1)).all() and (t.sum(axis=1) == 1).all())

    def regression_metrics(self, x, t) -> Dict[str, float]:
        """``{'mse': mean((y - t)**2), 'r2': 1 - SS_res / SS_tot}`` of the outputs ``y`` against real
        targets ``t`` (N, outputs); R² averaged over the outputs (NaN for a constant target column).
        Note ``mse`` is the plain mean over samples and outputs, while the training loss is the
        tutorials' ``0.5 * sum((y - t)**2) / N``."""
        xb, tb = self._xt(x, np.asarray(t, dtype=self.dtype).reshape(-1, self.sizes[-1]))
        return self._regression_metrics_of(xb, tb)

    def _regression_metrics_of(self, xb: np.ndarray, tb: np.ndarray, batch_size: int = 10000) -> Dict[str, float]:
        mlp, n = self._mlp(), xb.shape[0]
        ss_res = np.zeros(tb.shape[1])
        for i in range(0, n, batch_size):  # bounded memory
            d = mlp.predict(self.theta, xb[i:i + batch_size]).astype(np.float64) - tb[i:i + batch_size]
            ss_res += np.einsum("ij,ij->j", d, d)
        t64 = tb.astype(np.float64)
        ss_tot = ((t64 - t64.mean(axis=0)) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
        return {"mse": float(ss_res.sum() / tb.size), "r2": float(r2.mean())}

    def accuracy(self, x, t, batch_size: int = 10000) -> float:
        """Fraction of samples whose arg-max score equals the label.

        Raises ValueError on a regression (a one-output MSE net, or real non-one-hot targets for an
        MSE net): use :meth:`regression_metrics` there.
        """
        if self.is_regression_target(t):
            raise ValueError(f"accuracy needs a classifier: this net ({self.sizes[-1]} output(s), loss "
                             f"{self.loss_name!r}) with these targets is a regression; use "
                             "net.regression_metrics(x, t) (MSE and R²)")
        x = np.asarray(x)
        if (x.ndim >= 2 and x.dtype != self.dtype and x.dtype.kind in "fiub" and x.shape[0] > _CAST_ROWS
                and x.dtype not in getattr(self._mlp(), "input_dtypes", ())):
            # cast a chunk at a time: 60,000 float32 MNIST images would be 376 MB as one float64 copy,
            # paid at every call (the tutorials call accuracy on the training set each epoch)
            n = x.shape[0]
            labels = class_labels(t, n, self.sizes[-1])
            right = 0
            for i in range(0, n, _CAST_ROWS):
                xb = as_batch(x[i:i + _CAST_ROWS], self.sizes[0], self.dtype)
                right += round(self._accuracy_of(xb, labels[i:i + _CAST_ROWS], batch_size) * xb.shape[0])
            return right / n
        xb = self._xt(x, kernel_dtypes=True)[0]
        return self._accuracy_of(xb, class_labels(t, xb.shape[0], self.sizes[-1]), batch_size)

    def _label_classes(self) -> int:
        """How many class labels the targets may hold (one per output here)."""
        return self.sizes[-1]

    def _accuracy_of(self, xb: np.ndarray, labels: np.ndarray, batch_size: int = 10000) -> float:
        """accuracy() of a batch already checked by as_batch (fit checks its data once, not per epoch)."""
        mlp, n, correct = self._mlp(), xb.shape[0], 0
        for i in range(0, n, batch_size):  # bounded memory on 60k samples
            scores = mlp.predict(self.theta, xb[i:i + batch_size])
            correct += int(np.count_nonzero(scores.argmax(axis=1) == labels[i:i + batch_size]))
        return correct / n

    def _grad_buffer(self) -> np.ndarray:
        """The buffer a new gradient dict views: one of two kept by the net when nothing else holds it (the
        dict and its arrays are gone), else a new one. A new buffer per call page-faulted its pages in
        again (784-100x4-10: 0.87 MB, ~0.3 ms of a 0.9 ms ``gradient``)."""
        pool = self.__dict__.setdefault("_grad_pool", [])
        for i in range(len(pool)):
            # referenced only by the pool, this frame's index expression and getrefcount's argument
            if sys.getrefcount(pool[i]) <= 2 and pool[i].shape == self.theta.shape and \
                    pool[i].dtype == self.theta.dtype:
                return pool[i]
        buf = np.empty_like(self.theta)
        if len(pool) < 2:
            pool.append(buf)
        else:
            pool[0] = buf
        return buf

    def gradient(self, x, t) -> Dict[str, np.ndarray]:
        """Backprop gradient of :meth:`loss`, as a new dict ``{'W1': dW1, 'b1': db1, ...}``."""
        xb, tb = self._xt(x, t, kernel_dtypes=True)
        grad = self._grad_buffer()
        self._mlp().loss_grad(self.theta, xb, tb, self.weight_decay, grad)
        return self._grads_dict(grad)

    def loss_and_gradient(self, x, t):
        """(loss, grads) from one forward+backward call."""
        xb, tb = self._xt(x, t, kernel_dtypes=True)
        grad = self._grad_buffer()
        loss = self._mlp().loss_grad(self.theta, xb, tb, self.weight_decay, grad)
        return loss, self._grads_dict(grad)

    def numerical_gradient(self, x, t, h: float = 1e-4) -> Dict[str, np.ndarray]:
        """Central-difference gradient of :meth:`loss` for every parameter (h = 1e-4).

        The reference's per-element loop, computed in one kernel call (C++/numba: only the
        part of the forward pass a weight touches is recomputed). Parameters are left
        bit-for-bit unchanged. Agreement (what the tests assert): float64, cpp and numba
        equal the reference loop to <= 1e-8 normwise (measured <= 5e-11 on MNIST nets;
        the loop's own rounding, ~eps*|loss|/h per entry, is most of it). float32: cpp and
        numba difference the loss in float64 from the float32 parameters and equal the
        float64 loop over the same float32-rounded steps to <= 1e-6 (measured <= 2.2e-7);
        the float32 reference loop is itself off by ~eps32*|loss|/h (measured 2.5e-3 to
        2.4e-2 normwise), so it is no yardstick there. For a verdict on backprop use
        :meth:`gradient_check`, which also handles ReLU kinks.
        """
        xb, tb = self._xt(x, t)
        h = positive(h, "h")
        check_finite(self.theta, "the net's parameters")
        grad = np.empty_like(self.theta)
        self._mlp().numerical_gradient(self.theta, xb, tb, self.weight_decay, h, grad)
        return self._grads_dict(grad)

    def gradient_check(self, x, t, **kwargs):
        """:func:`pyfastgrad.gradient_check` of this net (backprop against central differences,
        ReLU/hinge kinks detected and judged by the documented rule)."""
        from .gradcheck import gradient_check
        return gradient_check(self, x, t, **kwargs)

    def train_step(self, x, t, optimizer) -> float:
        """One fused step: forward, backward, optimizer update of the parameters. Returns the loss."""
        name = self.backend or get_backend()
        mlp = self._mlps.get(name) or self._mlp()
        if getattr(mlp, "train_step", None) is not None and optimizer.backend in (None, name):
            # gradient and update in one kernel call (cpp, numba); cpp's train_step_any also takes x and t as
            # given when they are already in the kernels' form, else None
            one_call = getattr(mlp, "train_step_any", None)
            loss = None if one_call is None else optimizer._step_in(self, one_call, x, t)
            if loss is None:  # checked (named errors), converted
                xb, tb = self._xt(x, t, kernel_dtypes=True)
                loss = optimizer._step_in(self, mlp.train_step, xb, tb)
        else:
            xb, tb = self._xt(x, t, kernel_dtypes=True)
            loss = mlp.loss_grad(self.theta, xb, tb, self.weight_decay, self._grad)
            if np.isfinite(loss):
                optimizer.step(self, self._grad)
        if not math.isfinite(loss):
            raise FloatingPointError(f"non-finite loss ({loss}); parameters not updated "
                                     "(lower the learning rate or check the inputs)")
        return loss

    # ------------------------------------------------------------------ persistence
    def save(self, path, optimizer=None) -> None:
        """Save parameters and configuration to ``.npz`` (bit-exact round trip).

        With ``optimizer``, its whole ``state_dict()`` (kind, hyper-parameters, schedule, update count
        and state vectors) is saved too, so training resumes exactly: ``load_net(path, optimizer=opt)``
        or ``load_net(path, with_optimizer=True)``.

        ``path`` gets ``.npz`` appended when it has another suffix (as ``np.savez``). The file is
        written atomically: to a temporary file in the same directory, flushed to disk (fsync), then
        renamed over ``path``; a full disk, Ctrl-C or a crash during the save leaves the previous
        file intact. A writable file object is written directly.
        """
        cfg = dict(sizes=np.array(self.sizes), activation=self.activation, loss=self.loss_name,
                   weight_decay=self.weight_decay, dtype=str(self.dtype), cls=type(self).__name__)
        extra = {}
        if optimizer is not None:
            from .optimizers import Optimizer
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be a pyfastgrad Optimizer, got {type(optimizer).__name__}")
            extra = {f"opt_{k}": v for k, v in optimizer.state_dict().items()}
        arrays = dict(theta=self.theta, **{f"cfg_{k}": v for k, v in cfg.items()}, **extra)
        if hasattr(path, "write"):
            np.savez(path, **arrays)
        else:
            _save_atomic(path, arrays)

    @classmethod
    def load(cls, path, backend: Optional[str] = None) -> "Net":
        """Load a net saved with :meth:`save`."""
        return load_net(path, backend=backend)

    def __getstate__(self) -> dict:
        # pickle / joblib: the kernel objects and scratch buffers stay behind (rebuilt on use), and the
        # parameter views are made again from theta on loading (a pickled view would be a separate array)
        return {k: v for k, v in self.__dict__.items() if k not in ("_mlps", "_grad_pool", "_params")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._mlps = {}
        self._grad_pool = []
        self.__dict__["_params"] = ParamDict(self.theta, self._layout)
        self._relink()

    def _relink(self) -> None:
        """Point whatever else holds views of ``theta`` (a layer stack's layers) at this net's ``theta``."""

    def copy(self) -> "Net":
        """An independent copy: same configuration, a new ``theta`` with the same values."""
        new = Net.__new__(type(self))
        state = self.__getstate__()  # (the same fresh kernel caches and views as unpickling)
        state["theta"] = self.theta.copy()
        state["_grad"] = np.zeros_like(state["theta"])
        new.__setstate__(state)
        return new

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(sizes={self.sizes}, activation={self.activation!r}, "
                f"loss={self.loss_name!r}, weight_decay={self.weight_decay:g}, dtype={self.dtype.name}, "
                f"n_params={self.n_params}, backend={self.backend or get_backend()!r})")


class MultiLayerNet(Net):
    """The tutorials' MultiLayerNet: any number of hidden layers.

    ``MultiLayerNet(784, [100, 100], 10, activation='relu', weight_init='he', weight_decay=0.1)``;
    the tutorials' keywords ``weight_init_std=`` and ``weight_decay_lambda=`` are accepted too.
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int,
                 activation: str = "relu", weight_init: Union[str, float] = "auto",
                 weight_decay: float = 0.0, loss: str = "softmax", dtype=np.float64,
                 seed: Optional[int] = None, backend: Optional[str] = None, *,
                 weight_init_std: Union[str, float, None] = None,
                 weight_decay_lambda: Optional[float] = None) -> None:
        if weight_init_std is not None:
            weight_init = weight_init_std
        if weight_decay_lambda is not None:
            weight_decay = weight_decay_lambda
        super().__init__([input_size, *hidden_size_list, output_size], activation=activation, loss=loss,
                         weight_init=weight_init, weight_decay=weight_decay, dtype=dtype, seed=seed,
                         backend=backend)


class TwoLayerNet(Net):
    """The tutorials' TwoLayerNet: Affine -> ReLU -> Affine -> SoftmaxWithLoss.

    Weights ``weight_init_std * randn`` (default 0.01), zero biases, params ``W1, b1, W2, b2``.
    ``weight_init_std`` may also be 'he' / 'relu' (sqrt(2/fan_in) per layer, for ReLU) or
    'xavier' / 'sigmoid' (sqrt(1/fan_in), for sigmoid/tanh), as in the tutorials' next chapter.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int,
                 weight_init_std: Union[str, float] = 0.01, activation: str = "relu", loss: str = "softmax",
                 weight_decay: float = 0.0, dtype=np.float64, seed: Optional[int] = None,
                 backend: Optional[str] = None) -> None:
        super().__init__([input_size, hidden_size, output_size], activation=activation, loss=loss,
                         weight_init=weight_init_std, weight_decay=weight_decay, dtype=dtype, seed=seed,
                         backend=backend)


class SimpleNet(Net):
    """The tutorials' simpleNet: one 2x3 weight ``W``, no bias, softmax + cross-entropy.

    ``params`` holds only ``'W'``; ``net.W`` is the same array.
    """

    def __init__(self, W=None, dtype=np.float64, seed: Optional[int] = None,
                 backend: Optional[str] = None) -> None:
        super().__init__([2, 3], weight_init=1.0, dtype=dtype, seed=seed, backend=backend)
        full = self.params
        self._layout = {"W": self._layout["W1"]}
        self._bias = full["b1"]  # stays zero: simpleNet has no bias
        self.params = ParamDict(self.theta, self._layout)
        if W is not None:
            self.params["W"] = W

    @property
    def W(self) -> np.ndarray:
        """The 2x3 weight matrix (a view into ``theta``; assigning copies into it)."""
        return self.params["W"]

    @W.setter
    def W(self, value) -> None:
        self.params["W"] = value

    def train_step(self, x, t, optimizer) -> float:
        """Not supported: simpleNet only demonstrates gradients (raises NotImplementedError)."""
        raise NotImplementedError("SimpleNet is a demonstration net; use gradient/numerical_gradient")

    def copy(self) -> "SimpleNet":
        """An independent SimpleNet with a copy of ``W``."""
        return SimpleNet(self.W.copy(), dtype=self.dtype, backend=self.backend)


def _save_atomic(path, arrays: Dict[str, np.ndarray]) -> None:
    """np.savez into a temporary file beside ``path``, fsync, rename over ``path`` (then fsync the
    directory, so the rename itself survives a power cut)."""
    import os
    import tempfile

    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"  # np.savez's rule, kept
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # some systems cannot open a directory; the data itself is synced
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# Largest net load_net builds: its parameters must also be in the file (checked first), so this only
# bounds what a crafted header could make it allocate.
MAX_LOAD_PARAMS = 1 << 31


def _npz_member(z, name: str, path):
    """Shape and dtype of array ``name`` of an open ``np.load`` archive, from its .npy header only,
    checked against the bytes the archive actually holds for it."""
    import zipfile

    info_name = name + ".npy"
    try:
        info = z.zip.getinfo(info_name)
    except KeyError:
        raise ValueError(f"{path}: not a saved net (no {name!r})") from None
    with z.zip.open(info) as f:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in reader:
            raise ValueError(f"{path}: {name!r} has an unsupported .npy version {version}")
        shape, fortran, dtype = reader[version](f)
        header = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: {name!r} holds Python objects; not a saved net")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if info.compress_type == zipfile.ZIP_STORED and info.file_size < header + need:
        raise ValueError(f"{path}: {name!r} declares shape {shape} ({need} bytes), the file holds "
                         f"{info.file_size - header}")
    if info.file_size < header + need:  # compressed: the declared uncompressed size must still fit
        raise ValueError(f"{path}: {name!r} declares shape {shape}, more than its stored size")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1100 * info.compress_size + (1 << 20):
        # deflate expands at most ~1032:1; a larger claim is a crafted archive (a "zip bomb")
        raise ValueError(f"{path}: {name!r} claims {info.file_size} bytes from {info.compress_size} compressed")
    return shape, dtype


def _saved_sizes(z, path) -> list:
    """The layer sizes of a saved net, checked (a small 1-D integer array of positive entries) and
    matched against the stored parameter count before any net is built."""
    shape, dtype = _npz_member(z, "cfg_sizes", path)
    if len(shape) != 1 or not 2 <= shape[0] <= 1000 or dtype.kind not in "iu":
        raise ValueError(f"{path}: cfg_sizes must be 2 to 1000 integers, got {dtype} {shape}")
    sizes = [int(s) for s in z["cfg_sizes"]]
    if min(sizes) < 1:
        raise ValueError(f"{path}: layer sizes must be >= 1, got {sizes}")
    n = sum(sizes[i - 1] * sizes[i] + sizes[i] for i in range(1, len(sizes)))  # Python ints: no overflow
    theta_shape, theta_dtype = _npz_member(z, "theta", path)
    if n > MAX_LOAD_PARAMS:
        raise ValueError(f"{path}: sizes {sizes} declare {n:,} parameters, more than load_net builds "
                         f"({MAX_LOAD_PARAMS:,})")
    if theta_shape != (n,):
        raise ValueError(f"{path}: sizes {sizes} need {n} parameters, theta has shape {theta_shape}")
    if theta_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{path}: theta must be float32 or float64, got {theta_dtype}")
    return sizes


def _restore_optimizer(path, state: dict, optimizer, with_optimizer: bool):
    """Load a saved optimizer state into ``optimizer`` and/or a new one (returned when
    ``with_optimizer``); a file without one is an error only where an optimizer was given."""
    from .optimizers import make_optimizer  # (optimizers imports this module)

    opt = None
    if state:
        if optimizer is not None:
            optimizer.load_state_dict(state)
        if with_optimizer:
            opt = make_optimizer(str(state["kind"]), **({"style": str(state["style"])} if "style" in state else {}))
            opt.load_state_dict(state)
    elif optimizer is not None:
        raise ValueError(f"{path} holds no optimizer state (save it with net.save(path, optimizer=opt))")
    return opt


def load_net(path, backend: Optional[str] = None, with_optimizer: bool = False, optimizer=None):
    """Load a net saved with ``Net.save`` (any of the net classes).

    ``optimizer``: an optimizer of the saved kind to receive the saved optimizer state
    (``load_state_dict``; ValueError when the file has none). ``with_optimizer=True``: return
    ``(net, optimizer)`` with a new optimizer built from the file (``None`` when none was saved).
    """
    from .optimizers import Optimizer
    from .sequential import _is_composed, load_composed

    if _is_composed(path):  # Sequential / MultiLayerNetExtend: the layer stack is in the file
        return load_composed(path, backend=backend, with_optimizer=with_optimizer, optimizer=optimizer)
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a pyfastgrad Optimizer, got {type(optimizer).__name__}")
    archive = np.load(path, allow_pickle=False)
    if not hasattr(archive, "zip"):
        raise ValueError(f"{path}: not a saved net (a single array, not an .npz archive)")
    with archive as z:
        for k in z.files:  # every member's declared size against the archive, before reading any
            _npz_member(z, k, path)
        sizes = _saved_sizes(z, path)  # before allocating a net of the declared size
        theta = z["theta"]
        cls = str(z["cfg_cls"])
        net = Net(sizes, activation=str(z["cfg_activation"]), loss=str(z["cfg_loss"]),
                  weight_decay=float(z["cfg_weight_decay"]), dtype=str(z["cfg_dtype"]), backend=backend)
        if theta.shape != net.theta.shape:
            raise ValueError(f"{path}: {theta.size} parameters stored, sizes {sizes} need {net.theta.size}")
        net.theta[:] = theta
        state = {k[4:]: z[k] for k in z.files if k.startswith("opt_")}
    opt = _restore_optimizer(path, state, optimizer, with_optimizer)
    if cls == "SimpleNet":
        net = SimpleNet(net.params["W1"].copy(), dtype=net.dtype, backend=backend)
    elif cls in ("TwoLayerNet", "MultiLayerNet"):
        net.__class__ = TwoLayerNet if cls == "TwoLayerNet" else MultiLayerNet
    return (net, opt) if with_optimizer else net
