"""The kernel contract in one place: activations, losses, optimizers and the parameter layout.

Every other module takes names, integer codes, state counts and hyper-parameter slots from here;
the C++ enums (``csrc/kernels/activations.hpp`` ``Act``/``LAct``, ``csrc/core/common.hpp`` ``Loss``,
``csrc/kernels/optim.hpp`` ``Opt``) must match the codes, which ``tests/test_spec.py`` checks against the
extension's exported tables. A kernel that meets a code it does not know raises; no branch stands for "the
last kind".

Adding an activation or an optimizer: see docs/DEV.md ("Adding an activation", "Adding an optimizer").
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

__all__ = ["Activation", "Loss", "OptimizerSpec", "Hyper", "ACTIVATIONS", "LOSSES", "OPTIMIZERS",
           "MLP_ACTIVATIONS", "MLP_LOSSES", "LAYER_ACTIVATIONS", "LAYER_LOSSES", "OPTIMIZER_NAMES",
           "ACT_CODE", "LOSS_CODE", "OPT_CODE", "N_STATES", "HYPER_SLOTS", "HYPER_LEN", "LEAKY_SLOPE", "full_hyper",
           "activation", "loss", "optimizer", "n_params", "layer_slices"]


# ------------------------------------------------------------------ activations
class Activation(NamedTuple):
    name: str
    code: int  # Act (fused MLP kernels) and LAct (layer kernels) in csrc share it
    mlp: bool  # the fused MLP kernels (nets, gradient checks) take it as the hidden activation
    kinked: bool  # piecewise linear with a kink at z = 0 (gradient checks count crossings)


# leaky ReLU's slope for z <= 0 (PyTorch's default negative_slope)
LEAKY_SLOPE = 0.01

ACTIVATIONS: Tuple[Activation, ...] = (
    Activation("relu", 0, mlp=True, kinked=True),
    Activation("sigmoid", 1, mlp=True, kinked=False),
    Activation("tanh", 2, mlp=True, kinked=False),
    Activation("leaky_relu", 3, mlp=True, kinked=True),
    Activation("identity", 4, mlp=False, kinked=False),
)


# ------------------------------------------------------------------ losses
class Loss(NamedTuple):
    name: str
    code: int  # csrc/core/common.hpp Loss
    mlp: bool  # the fused MLP kernels take it


LOSSES: Tuple[Loss, ...] = (
    Loss("softmax", 0, mlp=True),  # softmax + cross-entropy
    Loss("mse", 1, mlp=True),  # identity output + 0.5 * sum((y - t)^2) / N
    Loss("hinge", 2, mlp=True),  # multiclass hinge, margin 1
    Loss("bce", 3, mlp=False),  # one sigmoid output + binary cross-entropy (composed nets only)
)


# ------------------------------------------------------------------ optimizers
# The float64 hyper vector every optimizer kernel takes; a short [lr, a, b] means eps 1e-7 and
# zeros after it. a, b are named per optimizer (Hyper.slot below).
HYPER_SLOTS = ("lr", "a", "b", "eps", "weight_decay", "style", "max_norm")
HYPER_LEN = len(HYPER_SLOTS)


def full_hyper(hyper) -> np.ndarray:
    """The (HYPER_LEN,) float64 hyper vector; a short ``[lr, a, b]`` gets the tutorials' eps 1e-7
    and nothing else (no weight decay, tutorial style, no clipping)."""
    hv = np.asarray(hyper, dtype=np.float64).ravel()
    if hv.size not in (3, HYPER_LEN):
        raise ValueError(f"hyper must have 3 or {HYPER_LEN} entries, got {hv.size}")
    h = np.array([0.0, 0.0, 0.0, 1e-7, 0.0, 0.0, 0.0])
    h[:hv.size] = hv
    return h


class Hyper(NamedTuple):
    """A hyper-parameter of an optimizer class: its attribute name, the hyper slot it fills, its
    check ('unit' [0, 1), 'positive', 'non_negative') and its default (None: by style, see eps)."""
    name: str
    slot: str
    check: str
    default: object


class OptimizerSpec(NamedTuple):
    name: str
    code: int  # csrc/kernels/optim.hpp Opt
    n_states: int  # state vectors (state1, state2) the kernel reads and writes
    cls: str  # class name in pyfastgrad.optimizers
    lr: float  # default learning rate
    hyper: Tuple[Hyper, ...]  # beyond lr, in the order of the class's arguments
    eps: Tuple[float, float]  # default eps for style 'tutorial', 'torch' (when eps is a hyper)
    decoupled_decay: bool  # slot weight_decay is theta *= 1 - lr wd before the step (else the
    #                        optimizer uses it itself, e.g. as L2 added to the gradient)
    bias_corrected: bool  # divides by 1 - beta^step: needs step >= 1
    doc: str = ""  # docstring of a class made from this entry (see optimizers._from_spec)


_EPS = Hyper("eps", "eps", "positive", None)
_BETAS = (Hyper("beta1", "a", "unit", 0.9), Hyper("beta2", "b", "unit", 0.999))

OPTIMIZERS: Tuple[OptimizerSpec, ...] = (
    OptimizerSpec("sgd", 0, 0, "SGD", 0.01, (), (1e-7, 1e-8), True, False),
    OptimizerSpec("momentum", 1, 1, "Momentum", 0.01, (Hyper("momentum", "a", "unit", 0.9),), (1e-7, 1e-8), True,
                  False),
    OptimizerSpec("nesterov", 2, 1, "Nesterov", 0.01, (Hyper("momentum", "a", "unit", 0.9),), (1e-7, 1e-8), True,
                  False),
    OptimizerSpec("adagrad", 3, 1, "AdaGrad", 0.01, (_EPS,), (1e-7, 1e-10), True, False),
    OptimizerSpec("rmsprop", 4, 1, "RMSprop", 0.01, (Hyper("decay_rate", "a", "unit", 0.99), _EPS), (1e-7, 1e-8),
                  True, False),
    OptimizerSpec("adam", 5, 2, "Adam", 0.001, _BETAS + (_EPS,), (1e-7, 1e-8), True, True),
    OptimizerSpec("adamw", 6, 2, "AdamW", 0.001,
                  _BETAS + (_EPS, Hyper("weight_decay", "weight_decay", "non_negative", 0.01)), (1e-7, 1e-8), True,
                  True),
    OptimizerSpec("adamax", 7, 2, "Adamax", 2e-3,
                  _BETAS + (_EPS, Hyper("weight_decay", "weight_decay", "non_negative", 0.0)), (1e-8, 1e-8), False,
                  True, doc="""Adamax (``torch.optim.Adamax``; Kingma & Ba, section 7.1), the same equations in both
    styles: ``g <- g + wd theta`` (L2, as torch), ``m <- m + (1 - b1)(g - m)``,
    ``u <- max(b2 u, |g| + eps)``, ``theta <- theta - lr / (1 - b1^t) * m / u`` at update ``t``.

    Parameters: ``lr`` (default 2e-3), ``beta1`` 0.9, ``beta2`` 0.999, ``eps`` 1e-8, ``weight_decay`` 0;
    ``style``, ``clip``, ``schedule``, ``backend`` as :class:`SGD`.
    """),
)


# ------------------------------------------------------------------ lookups
def _index(items) -> Dict[str, object]:
    return {it.name: it for it in items}


_ACT, _LOSS, _OPT = _index(ACTIVATIONS), _index(LOSSES), _index(OPTIMIZERS)

MLP_ACTIVATIONS = tuple(a.name for a in ACTIVATIONS if a.mlp)
LAYER_ACTIVATIONS = tuple(a.name for a in ACTIVATIONS)
MLP_LOSSES = tuple(x.name for x in LOSSES if x.mlp)
LAYER_LOSSES = tuple(x.name for x in LOSSES)
OPTIMIZER_NAMES = tuple(o.name for o in OPTIMIZERS)
ACT_CODE = {a.name: a.code for a in ACTIVATIONS}
LOSS_CODE = {x.name: x.code for x in LOSSES}
OPT_CODE = {o.name: o.code for o in OPTIMIZERS}
N_STATES = {o.name: o.n_states for o in OPTIMIZERS}


def _lookup(table: Dict[str, object], name, what: str, allowed: Sequence[str]):
    entry = table.get(name) if isinstance(name, str) else None
    if entry is None or entry.name not in allowed:
        raise ValueError(f"unknown {what} {name!r}; expected one of {tuple(allowed)}")
    return entry


def activation(name: str, mlp: bool = False) -> Activation:
    """The entry of activation ``name`` (ValueError if unknown, or not taken by the MLP kernels when ``mlp``)."""
    return _lookup(_ACT, name, "activation", MLP_ACTIVATIONS if mlp else LAYER_ACTIVATIONS)


def loss(name: str, mlp: bool = False) -> Loss:
    return _lookup(_LOSS, name, "loss", MLP_LOSSES if mlp else LAYER_LOSSES)


def optimizer(name: str) -> OptimizerSpec:
    return _lookup(_OPT, name, "optimizer", OPTIMIZER_NAMES)


# ------------------------------------------------------------------ the flat parameter layout
# For layers l = 1..L with sizes = [n0, n1, ..., nL] the vector theta holds W_l (n_{l-1} x n_l,
# row-major) followed by b_l (n_l), layer after layer (csrc: count_params, the kernels' offsets).
def n_params(sizes: Sequence[int]) -> int:
    return sum(int(sizes[i - 1]) * int(sizes[i]) + int(sizes[i]) for i in range(1, len(sizes)))


def layer_slices(sizes: Sequence[int]) -> List[tuple]:
    """[(W slice, W shape, b slice), ...] into the flat parameter vector."""
    out, off = [], 0
    for i in range(1, len(sizes)):
        nin, nout = int(sizes[i - 1]), int(sizes[i])
        nw = nin * nout
        out.append((slice(off, off + nw), (nin, nout), slice(off + nw, off + nw + nout)))
        off += nw + nout
    return out
