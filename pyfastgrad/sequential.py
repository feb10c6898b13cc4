"""Nets composed from layer objects, the tutorials' way, on the fast path.

``Sequential([Affine(784, 100), Relu(), Affine(100, 10)], loss=SoftmaxWithLoss())`` (or an
``OrderedDict`` of named layers, ending in its loss layer) is a :class:`~pyfastgrad.Net`: the same
``params['W1']``, ``predict``, ``loss``, ``gradient``, ``numerical_gradient``, ``train_step`` and
``fit``. How it runs (``net.path``):

* ``'fused'``: Affine layers with one activation (ReLU, sigmoid or tanh) between them and a
  softmax, MSE or hinge head compile to the built-in MLP kernel, the one ``TwoLayerNet`` runs
  (a whole step in one C++/numba call; identical results).
* ``'layers'``: any other stack of the kernel layers (per-layer activations, leaky ReLU, identity,
  Batch Normalization, Dropout, a sigmoid + binary cross-entropy head) runs layer by layer on the
  backend's whole-batch kernels (:mod:`pyfastgrad._layer_program`).
* ``'reference'``: a stack with a layer that has no kernel (any object with ``forward``/``backward``)
  runs on the layers' own numpy code, on the numpy backend only (a fast backend is an error).
"""
from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import layers as L
from . import spec
from ._backends import get_backend, kernels
from ._layer_program import Op, Program
from ._validate import as_batch, as_targets, check_finite
from .nets import _KINKED, WEIGHT_INITS, Net, ParamDict, _init_scale, _restore_optimizer, _seed_or_global  # noqa: F401

__all__ = ["Sequential", "MultiLayerNetExtend"]

_FUSED_ACTS = spec.MLP_ACTIVATIONS
_FUSED_LOSSES = spec.MLP_LOSSES
_NAMES = {"affine": "Affine", "relu": "Relu", "leaky_relu": "LeakyRelu", "sigmoid": "Sigmoid", "tanh": "Tanh",
          "identity": "Identity", "batchnorm": "BatchNorm", "dropout": "Dropout"}


def _kind(layer) -> str:
    k = getattr(type(layer), "kind", None)
    if isinstance(k, str) and isinstance(layer, (L.Affine, L.Relu, L.LeakyRelu, L.Sigmoid, L.Tanh, L.Identity,
                                                 L.BatchNormalization, L.Dropout, L.SoftmaxWithLoss, L.MSELoss,
                                                 L.SigmoidWithLoss, L.HingeLoss)):
        return k
    if callable(getattr(layer, "forward", None)) and callable(getattr(layer, "backward", None)):
        return "custom"
    raise TypeError(f"{layer!r} is not a layer: a layer has forward(x) and backward(dout) "
                    "(see pyfastgrad.layers)")


class Sequential(Net):
    """A net composed from :mod:`pyfastgrad.layers` objects.

    Parameters
    ----------
    layers : sequence of layers, or a mapping ``name -> layer`` (an ``OrderedDict`` as in the
        tutorials). The last one may be the loss layer (``SoftmaxWithLoss()``, ``MSELoss()``,
        ``SigmoidWithLoss()``, ``HingeLoss()``); no loss layer may come before another layer.
    loss : the loss layer, when ``layers`` does not end with one.
    weight_init : 'he', 'xavier', a float standard deviation, or 'auto' (default: 'he' before a
        ReLU, else 'xavier'), for Affine layers given by their sizes; an ``Affine(W, b)`` keeps its
        arrays (copied into the net).
    weight_decay, dtype, seed, backend : as :class:`~pyfastgrad.Net`. ``seed`` also seeds the
        Dropout masks (numpy ``default_rng``: the same masks on every backend).

    Parameters are ``W1, b1, W2, ...`` (Affine layers in order) and ``gamma1, beta1, ...``
    (BatchNormalization layers in order) in ``params``; the layer objects' ``W``, ``b``, ``gamma``,
    ``beta`` become views of them. ``net.layers`` is the ordered dict of the layers,
    ``net.last_layer`` the loss layer.
    """

    def __init__(self, layers: Union[Sequence, Mapping], loss=None, weight_init: Union[str, float] = "auto",
                 weight_decay: float = 0.0, dtype=np.float64, seed: Optional[int] = None,
                 backend: Optional[str] = None) -> None:
        from ._validate import float_dtype, non_negative
        if isinstance(layers, Mapping):
            items = [(str(k), v) for k, v in layers.items()]
        elif isinstance(layers, (list, tuple)):
            items = [(None, v) for v in layers]
        else:
            raise TypeError(f"layers must be a list of layers or a mapping name -> layer, got {type(layers).__name__}")
        if not items:
            raise ValueError("layers is empty")
        kinds = [_kind(v) for _, v in items]
        for pos, kd in enumerate(kinds[:-1]):
            if kd == "loss":
                raise ValueError(f"the loss layer {items[pos][1]!r} is at position {pos}; a loss layer must be last")
        if kinds[-1] == "loss":
            if loss is not None:
                raise ValueError(f"two loss layers: {items[-1][1]!r} ends the layers and loss={loss!r}")
            loss = items.pop()[1]
            kinds.pop()
        if loss is None:
            raise ValueError("no loss layer: end the layers with one (e.g. SoftmaxWithLoss()) or pass loss=")
        if _kind(loss) != "loss":
            raise TypeError(f"loss must be a loss layer (SoftmaxWithLoss, MSELoss, SigmoidWithLoss, HingeLoss), "
                            f"got {loss!r}")
        if not items:
            raise ValueError("a net needs at least one Affine layer before its loss")
        self.weight_decay = non_negative(weight_decay, "weight_decay")
        self.dtype = float_dtype(dtype)
        self.backend = backend
        self.weight_init = weight_init
        self.loss_name = loss.loss_kind
        self.last_layer = loss
        self.seed = seed

        # names as the tutorials': Affine1, Relu1, BatchNorm1, ...
        counts: Dict[str, int] = {}
        named = OrderedDict()
        for (name, layer), kd in zip(items, kinds):
            base = _NAMES.get(kd, type(layer).__name__)
            counts[base] = counts.get(base, 0) + 1
            name = name if name is not None else f"{base}{counts[base]}"
            if name in named:
                raise ValueError(f"two layers named {name!r}")
            named[name] = layer
        self.layers = named

        # chain the sizes and lay out theta
        width: Optional[int] = None
        layout, specs, n, n_aff, n_bn = {}, [], 0, 0, 0
        sizes: List[int] = []
        for (name, layer), kd in zip(named.items(), kinds):
            if kd == "affine":
                if width is None:
                    width = layer.n_in
                    sizes.append(width)
                elif layer.n_in != width:
                    raise ValueError(f"layer {name!r} ({layer!r}) takes {layer.n_in} inputs but the layers "
                                     f"before it give {width}")
                n_aff += 1
                ws = slice(n, n + layer.n_in * layer.n_out)
                bs = slice(ws.stop, ws.stop + layer.n_out)
                n = bs.stop
                layout[f"W{n_aff}"] = (ws, (layer.n_in, layer.n_out))
                layout[f"b{n_aff}"] = (bs, (layer.n_out,))
                specs.append(("affine", name, layer, ws, bs))
                width = layer.n_out
                sizes.append(width)
            elif kd == "batchnorm":
                if width is None:
                    width = layer.size
                    sizes.append(width)
                elif layer.size != width:
                    raise ValueError(f"layer {name!r} ({layer!r}) normalises {layer.size} features but the layers "
                                     f"before it give {width}")
                n_bn += 1
                gs = slice(n, n + width)
                bs = slice(gs.stop, gs.stop + width)
                n = bs.stop
                layout[f"gamma{n_bn}"] = (gs, (width,))
                layout[f"beta{n_bn}"] = (bs, (width,))
                specs.append(("bn", name, layer, gs, bs))
            else:
                if width is None and kd != "custom":
                    raise ValueError(f"layer {name!r} ({layer!r}) comes before any layer that fixes the input "
                                     "size (an Affine or BatchNormalization)")
                specs.append((kd, name, layer, None, None))
        if n_aff == 0:
            raise ValueError("a net needs at least one Affine layer")
        self._sizes_chain = sizes
        self.sizes = [sizes[0], *[s[2].n_out for s in specs if s[0] == "affine"]]
        self.theta = np.zeros(n, dtype=self.dtype)
        self._grad = np.zeros_like(self.theta)
        self._layout = layout
        self.params = ParamDict(self.theta, layout)
        self._mlps = {}

        # initial values: the Net's rule (same draws as Net/TwoLayerNet for the same seed)
        seed_used = _seed_or_global(seed)
        rng = np.random.default_rng(seed_used)
        self._mask_rng = np.random.default_rng([int(seed_used), 1])
        self._frozen_seed: Optional[int] = None
        self._flags = {"richardson": False}
        aff_i = bn_i = 0
        for pos, (kd, name, layer, _s1, _s2) in enumerate(specs):
            if kd == "affine":
                aff_i += 1
                if layer._given:
                    self.params[f"W{aff_i}"] = layer.W
                    self.params[f"b{aff_i}"] = layer.b
                else:
                    nxt = next((k for k, *_ in specs[pos + 1:] if k not in ("bn", "dropout")), None)
                    rule = layer.weight_init if layer.weight_init is not None else weight_init
                    act = "relu" if nxt in _KINKED else "sigmoid"
                    scale = _init_scale(rule, layer.n_in, act)
                    self.params[f"W{aff_i}"] = scale * rng.standard_normal((layer.n_in, layer.n_out))
                layer.W, layer.b = self.params[f"W{aff_i}"], self.params[f"b{aff_i}"]
            elif kd == "bn":
                bn_i += 1
                self.params[f"gamma{bn_i}"] = layer.gamma
                self.params[f"beta{bn_i}"] = layer.beta
                layer.gamma, layer.beta = self.params[f"gamma{bn_i}"], self.params[f"beta{bn_i}"]
                for attr in ("running_mean", "running_var"):
                    v = getattr(layer, attr)
                    if v is not None:
                        v = np.asarray(v, dtype=self.dtype)
                        if v.shape != (layer.size,):
                            raise ValueError(f"layer {name!r}: {attr} must have shape ({layer.size},), got {v.shape}")
                        setattr(layer, attr, v.copy())
        self._specs = specs
        self._ops = self._make_ops()
        self._fused = self._fusable()
        self.activation = self._fused[0] if self._fused else "mixed"
        if self.path == "reference":
            if backend is not None and backend != "numpy":
                raise ValueError(self._reference_reason() + f"; it cannot run on the {backend!r} backend "
                                 "(use backend='numpy', or build it from pyfastgrad.layers)")
            warnings.warn(self._reference_reason() + " (numpy speed)", UserWarning, stacklevel=2)

    # ------------------------------------------------------------------ compilation
    def _make_ops(self) -> List[Op]:
        ops = []
        codes = spec.ACT_CODE
        for kd, _name, layer, s1, s2 in self._specs:
            if kd == "affine":
                ops.append(Op("affine", layer, s1, (layer.n_in, layer.n_out), s2))
            elif kd == "bn":
                ops.append(Op("bn", layer, s1, None, s2))
            elif kd in codes:
                ops.append(Op("act", layer, code=codes[kd], alpha=float(getattr(layer, "alpha", 0.0))))
            elif kd == "dropout":
                ops.append(Op("dropout", layer, ratio=layer.dropout_ratio))
            else:
                ops.append(Op("custom", layer))
        return ops

    def _fusable(self):
        """(activation,) when the stack is the built-in MLP (Affine (act Affine)*, one activation kind)."""
        if self.loss_name not in _FUSED_LOSSES:
            return None
        kinds = [s[0] for s in self._specs]
        if kinds[0] != "affine" or kinds[-1] != "affine":
            return None
        acts = kinds[1::2]
        if kinds[0::2] != ["affine"] * len(kinds[0::2]) or len(set(acts)) > 1:
            return None
        act = acts[0] if acts else "relu"
        if act == "leaky_relu" and any(float(s[2].alpha) != spec.LEAKY_SLOPE for s in self._specs[1::2]):
            return None  # the fused kernels' slope is fixed
        return (act,) if act in _FUSED_ACTS else None

    @property
    def path(self) -> str:
        """How the net runs: 'fused' (the built-in MLP kernel), 'layers' (the backend's layer
        kernels) or 'reference' (numpy, a layer without a kernel)."""
        if self._fused:
            return "fused"
        return "reference" if any(op.kind == "custom" for op in self._ops) else "layers"

    def _reference_reason(self) -> str:
        names = [s[1] for s in self._specs if s[0] == "custom"]
        return f"layer(s) {names} have no kernel: this net runs on the numpy reference"

    def _mlp(self):
        if self._fused:
            return super()._mlp()
        name = self.backend or get_backend()
        prog = self._mlps.get(name)
        if prog is None:
            if self.path == "reference":
                if name != "numpy" and self.backend is not None:
                    raise ValueError(self._reference_reason())
                kern = None
            else:
                kern = kernels(name)
            prog = self._mlps[name] = Program(self._ops, self.loss_name, self.dtype, self.sizes[0], self.sizes[-1],
                                              kern, self._draw_masks)
            prog.flags = self._flags
        return prog

    def _draw_masks(self, shapes, dtype, ratios) -> list:
        """Dropout masks (1 keeps a unit): from the net's generator, or, inside
        :meth:`fixed_dropout_masks`, the same masks at every call."""
        rng = self._mask_rng if self._frozen_seed is None else np.random.default_rng(self._frozen_seed)
        return [(rng.random(s) > r).astype(dtype) for s, r in zip(shapes, ratios)]

    @contextlib.contextmanager
    def fixed_dropout_masks(self, seed: int = 0) -> Iterator["Sequential"]:
        """Within the block every training-mode pass draws the same Dropout masks (and the running
        statistics of Batch Normalization are restored at the end): the loss is then one function
        of the parameters, and ``gradient`` and ``numerical_gradient`` can be compared
        (``gradient_check`` does this)."""
        old = self._frozen_seed
        saved = [(op.layer.running_mean, op.layer.running_var) for op in self._ops if op.kind == "bn"]
        self._frozen_seed = int(seed)
        try:
            yield self
        finally:
            self._frozen_seed = old
            for op, (m, v) in zip([op for op in self._ops if op.kind == "bn"], saved):
                op.layer.running_mean, op.layer.running_var = m, v

    @contextlib.contextmanager
    def _gradcheck_context(self) -> Iterator["Sequential"]:
        """gradient_check's setting: fixed Dropout masks, statistics kept, and (layer path) the
        numerical side extrapolated from h and h/2, so that Batch Normalization's curvature (an h^2
        error of ~1e-8 relative at h = 1e-4 on small batches) does not fail a correct backprop."""
        old = self._flags["richardson"]
        self._flags["richardson"] = True
        try:
            with self.fixed_dropout_masks():
                yield self
        finally:
            self._flags["richardson"] = old

    # ------------------------------------------------------------------ the tutorials' API
    def _xt(self, x, t=None, kernel_dtypes: bool = False):
        also = getattr(self._mlp(), "input_dtypes", ()) if kernel_dtypes else ()  # see Net._xt
        xb = as_batch(x, self.sizes[0], self.dtype, also=also)
        if t is None:
            return xb, None
        if self.loss_name == "bce":  # binary targets in [0, 1], one column per output
            ta = np.asarray(t)
            if ta.dtype.kind not in "fiub" or ta.size != xb.shape[0] * self.sizes[-1]:
                raise ValueError(f"t must hold {xb.shape[0]} x {self.sizes[-1]} targets in [0, 1] for the sigmoid "
                                 f"output, got shape {ta.shape}")
            tb = np.ascontiguousarray(ta.reshape(xb.shape[0], self.sizes[-1]), dtype=self.dtype)
            check_finite(tb, "t")
            if tb.min() < 0 or tb.max() > 1:
                raise ValueError("binary cross-entropy targets must be in [0, 1]")
            return xb, tb
        return xb, as_targets(t, xb.shape[0], self.sizes[-1], self.dtype)

    def predict(self, x, train_flg: bool = False) -> np.ndarray:
        """Scores (the last layer's output before the loss's own sigmoid/softmax), (N, output).
        ``train_flg=True``: training mode (batch statistics, fresh Dropout masks)."""
        xb, _ = self._xt(x)
        mlp = self._mlp()
        if train_flg and not self._fused:
            return mlp.forward(self.theta, xb, train=True, masks=mlp._draw_masks(xb, self.dtype))
        return mlp.predict(self.theta, xb)

    def loss(self, x, t, train_flg: bool = False) -> float:
        """Loss of the batch (mean over samples) plus the L2 term, in evaluation mode (running
        statistics, Dropout as a scale) unless ``train_flg``."""
        xb, tb = self._xt(x, t)
        mlp = self._mlp()
        if self._fused or train_flg:
            return mlp.loss(self.theta, xb, tb, self.weight_decay)
        return mlp.eval_loss(self.theta, xb, tb, self.weight_decay)

    def _label_classes(self) -> int:
        """A one-output sigmoid + binary cross-entropy net takes the labels 0 and 1."""
        return 2 if self.loss_name == "bce" and self.sizes[-1] == 1 else self.sizes[-1]

    def _accuracy_of(self, xb: np.ndarray, labels: np.ndarray, batch_size: int = 10000) -> float:
        if self.loss_name != "bce" or self.sizes[-1] != 1:
            return super()._accuracy_of(xb, labels, batch_size)
        mlp, n, correct = self._mlp(), xb.shape[0], 0
        for i in range(0, n, batch_size):
            s = mlp.predict(self.theta, xb[i:i + batch_size])[:, 0]
            correct += int(np.count_nonzero((s > 0) == (labels[i:i + batch_size] > 0.5)))
        return correct / n

    def accuracy(self, x, t, batch_size: int = 10000) -> float:
        """Fraction of samples classified right (arg-max score; a one-output sigmoid net: score > 0)."""
        if self.loss_name == "bce" and self.sizes[-1] == 1:
            lab = np.asarray(t).reshape(-1)
            xb = self._xt(x)[0]
            if lab.shape[0] != xb.shape[0]:
                raise ValueError(f"t has {lab.shape[0]} labels for {xb.shape[0]} samples")
            return self._accuracy_of(xb, lab, batch_size)
        return super().accuracy(x, t, batch_size)

    def gradient_check(self, x, t, **kwargs):
        """:func:`pyfastgrad.gradient_check` with the Dropout masks fixed (see :meth:`fixed_dropout_masks`)."""
        from .gradcheck import gradient_check
        return gradient_check(self, x, t, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path, optimizer=None) -> None:
        """Save the layer stack, parameters, running statistics (and ``optimizer``'s state) to ``.npz``;
        :func:`pyfastgrad.load_net` rebuilds the net. Written to a temporary file, then renamed."""
        import json
        import os
        import tempfile
        spec = []
        for kd, name, layer, _, _ in self._specs:
            d = {"name": name, "kind": kd}
            if kd == "affine":
                d.update(n_in=layer.n_in, n_out=layer.n_out)
            elif kd == "bn":
                d.update(size=layer.size, momentum=layer.momentum)
            elif kd == "dropout":
                d.update(ratio=layer.dropout_ratio)
            elif kd == "leaky_relu":
                d.update(alpha=layer.alpha)
            elif kd == "custom":
                raise TypeError(f"layer {name!r} ({type(layer).__name__}) has no kernel and cannot be saved")
            spec.append(d)
        arrays = {"theta": self.theta, "cfg_layers": json.dumps(spec), "cfg_loss": self.loss_name,
                  "cfg_weight_decay": self.weight_decay, "cfg_dtype": str(self.dtype), "cfg_cls": type(self).__name__,
                  "cfg_sizes": np.array(self.sizes)}
        for i, op in enumerate(o for o in self._ops if o.kind == "bn"):
            if op.layer.running_mean is not None:
                arrays[f"bn{i}_mean"], arrays[f"bn{i}_var"] = op.layer.running_mean, op.layer.running_var
        if optimizer is not None:
            from .optimizers import Optimizer
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be a pyfastgrad Optimizer, got {type(optimizer).__name__}")
            arrays.update({f"opt_{k}": v for k, v in optimizer.state_dict().items()})
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"  # as numpy.savez
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def copy(self) -> "Sequential":
        import copy as _copy
        new = _copy.deepcopy(self)
        new._mlps = {}
        return new

    def __deepcopy__(self, memo):
        import copy as _copy
        new = Sequential.__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k in ("_mlps", "params", "_grad_pool"):
                continue
            setattr(new, k, _copy.deepcopy(v, memo))
        new._mlps = {}
        new.params = ParamDict(new.theta, new._layout)
        new._relink()
        return new

    def _relink(self) -> None:
        # the layers' parameter arrays are views of this net's theta again (after a copy or unpickling)
        for op in self._ops:
            if op.kind == "affine":
                op.layer.W, op.layer.b = self.theta[op.ws].reshape(op.wshape), self.theta[op.bs]
            elif op.kind == "bn":
                op.layer.gamma, op.layer.beta = self.theta[op.ws], self.theta[op.bs]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.layers.items())
        return (f"{type(self).__name__}([{inner}], loss={self.last_layer!r}, weight_decay={self.weight_decay:g}, "
                f"dtype={self.dtype.name}, n_params={self.n_params}, path={self.path!r}, "
                f"backend={self.backend or get_backend()!r})")


class MultiLayerNetExtend(Sequential):
    """The tutorials' MultiLayerNetExtend: MultiLayerNet with optional Batch Normalization (after each
    hidden Affine: ``gamma{i}``, ``beta{i}``) and Dropout (after each hidden activation).

    ``MultiLayerNetExtend(784, [256, 256], 10, weight_init_std='he', use_batchnorm=True,
    use_dropout=True, dropout_ration=0.2)``. ``weight_init``/``weight_decay`` are accepted for
    ``weight_init_std``/``weight_decay_lambda``. ``predict(x, train_flg=False)``,
    ``loss(x, t, train_flg=False)``; ``gradient`` and ``numerical_gradient`` use the training mode.
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int,
                 activation: str = "relu", weight_init_std: Union[str, float] = "relu",
                 weight_decay_lambda: float = 0.0, use_dropout: bool = False, dropout_ration: float = 0.5,
                 use_batchnorm: bool = False, *, weight_init: Union[str, float, None] = None,
                 weight_decay: Optional[float] = None, loss: str = "softmax", dtype=np.float64,
                 seed: Optional[int] = None, backend: Optional[str] = None) -> None:
        acts = {"relu": L.Relu, "sigmoid": L.Sigmoid, "tanh": L.Tanh, "leaky_relu": L.LeakyRelu,
                "identity": L.Identity}
        if activation not in acts:
            raise ValueError(f"activation must be one of {tuple(acts)}, got {activation!r}")
        heads = {"softmax": L.SoftmaxWithLoss, "mse": L.MSELoss, "bce": L.SigmoidWithLoss, "hinge": L.HingeLoss}
        if loss not in heads:
            raise ValueError(f"loss must be one of {tuple(heads)}, got {loss!r}")
        sizes = [int(input_size), *[int(h) for h in hidden_size_list], int(output_size)]
        if min(sizes) < 1:
            raise ValueError(f"sizes must be positive, got {sizes}")
        layers = OrderedDict()
        for i in range(1, len(sizes)):
            layers[f"Affine{i}"] = L.Affine(sizes[i - 1], sizes[i])
            if i == len(sizes) - 1:
                break
            if use_batchnorm:
                layers[f"BatchNorm{i}"] = L.BatchNormalization(sizes[i])
            layers[f"Activation_function{i}"] = acts[activation]()
            if use_dropout:
                layers[f"Dropout{i}"] = L.Dropout(dropout_ration)
        self.use_dropout, self.use_batchnorm = bool(use_dropout), bool(use_batchnorm)
        self.dropout_ration = float(dropout_ration)
        rule = weight_init if weight_init is not None else weight_init_std
        wd = weight_decay if weight_decay is not None else weight_decay_lambda
        super().__init__(layers, loss=heads[loss](), weight_init=rule, weight_decay=wd, dtype=dtype, seed=seed,
                         backend=backend)


def _is_composed(path) -> bool:
    """Whether ``path`` holds a net saved by :meth:`Sequential.save` (False when it is no such file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "cfg_layers" in z.files
    except Exception:
        return False  # load_net reports the problem


def load_composed(path, backend: Optional[str] = None, with_optimizer: bool = False, optimizer=None):
    """:func:`pyfastgrad.load_net` for composed nets."""
    import json

    from .optimizers import Optimizer
    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a pyfastgrad Optimizer, got {type(optimizer).__name__}")
    make = {"affine": lambda d: L.Affine(int(d["n_in"]), int(d["n_out"])),
            "bn": lambda d: L.BatchNormalization(int(d["size"]), momentum=float(d["momentum"])),
            "dropout": lambda d: L.Dropout(float(d["ratio"])), "relu": lambda d: L.Relu(),
            "leaky_relu": lambda d: L.LeakyRelu(float(d["alpha"])), "sigmoid": lambda d: L.Sigmoid(),
            "tanh": lambda d: L.Tanh(), "identity": lambda d: L.Identity()}
    heads = {"softmax": L.SoftmaxWithLoss, "mse": L.MSELoss, "bce": L.SigmoidWithLoss, "hinge": L.HingeLoss}
    with np.load(path, allow_pickle=False) as z:
        try:
            spec = json.loads(str(z["cfg_layers"]))
            layers = OrderedDict((str(d["name"]), make[d["kind"]](d)) for d in spec)
            head = heads[str(z["cfg_loss"])]()
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a valid composed-net file ({exc})") from None
        net = Sequential(layers, loss=head, weight_decay=float(z["cfg_weight_decay"]), dtype=str(z["cfg_dtype"]),
                         backend=backend)
        theta = z["theta"]
        if theta.shape != net.theta.shape:
            raise ValueError(f"{path}: {theta.size} parameters stored, the layers need {net.theta.size}")
        net.theta[:] = theta
        for i, op in enumerate(o for o in net._ops if o.kind == "bn"):
            if f"bn{i}_mean" in z.files:
                op.layer.running_mean = z[f"bn{i}_mean"].astype(net.dtype)
                op.layer.running_var = z[f"bn{i}_var"].astype(net.dtype)
        cls = str(z["cfg_cls"])
        state = {k[4:]: z[k] for k in z.files if k.startswith("opt_")}
    if cls == "MultiLayerNetExtend":
        net.__class__ = MultiLayerNetExtend
        kinds = [d["kind"] for d in spec]
        net.use_batchnorm, net.use_dropout = "bn" in kinds, "dropout" in kinds
        net.dropout_ration = next((float(d["ratio"]) for d in spec if d["kind"] == "dropout"), 0.5)
    opt = _restore_optimizer(path, state, optimizer, with_optimizer)
    return (net, opt) if with_optimizer else net
