"""Layers with ``forward``/``backward`` side by side, the tutorials' way, that also compose into fast nets.

Each class is the reference layer (:mod:`pyfastgrad.reference`, numpy) and can be used on its own
exactly as in the tutorials (``Affine(W, b).forward(x)``). Handed to
:class:`pyfastgrad.Sequential` they describe a net instead: ``Affine(784, 100)`` gives the sizes,
the net owns the parameters (``net.params['W1']``; the layer's ``W``/``b`` become views of them)
and runs the whole stack on the C++/numba kernels.

L2 weight decay convention: loss ``+ 0.5 * lambda * sum(W**2)``, gradient ``lambda * W``.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from . import reference as _ref
from . import spec as _spec

__all__ = ["Affine", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Identity", "BatchNormalization", "BatchNorm",
           "Dropout", "SoftmaxWithLoss", "MSELoss", "IdentityWithLoss", "SigmoidWithLoss", "HingeLoss",
           "LOSS_KINDS", "ACTIVATION_KINDS"]

ACTIVATION_KINDS = _spec.LAYER_ACTIVATIONS
LOSS_KINDS = _spec.LAYER_LOSSES


def _int_size(v, name: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if int(v) < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


class Affine(_ref.Affine):
    """y = x . W + b.

    ``Affine(W, b)``: the tutorials' layer with these arrays. ``Affine(n_in, n_out)``: a layer of a
    :class:`~pyfastgrad.Sequential` net, initialised by the net (``weight_init`` overrides the net's
    rule for this layer: 'he', 'xavier' or a float standard deviation).
    """

    kind = "affine"

    def __init__(self, W: Union[np.ndarray, int], b: Union[np.ndarray, int, None] = None,
                 weight_init: Union[str, float, None] = None) -> None:
        if isinstance(W, (int, np.integer)) and not isinstance(W, (bool, np.bool_)):
            n_in = _int_size(W, "n_in")
            n_out = _int_size(b, "n_out") if b is not None else None
            if n_out is None:
                raise TypeError("Affine(n_in, n_out) needs both sizes")
            W, b = np.zeros((n_in, n_out)), np.zeros(n_out)
            self._given = False
        else:
            W, b = np.asarray(W), np.asarray(b) if b is not None else None
            if W.ndim != 2:
                raise ValueError(f"Affine: W must be 2-D (n_in, n_out), got shape {W.shape}")
            if b is None:
                b = np.zeros(W.shape[1], dtype=W.dtype)
            if b.shape != (W.shape[1],):
                raise ValueError(f"Affine: b must have shape ({W.shape[1]},), got {b.shape}")
            self._given = True
        super().__init__(W, b)
        self.weight_init = weight_init

    @property
    def n_in(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_out(self) -> int:
        return int(self.W.shape[1])

    def __repr__(self) -> str:
        return f"Affine({self.n_in}, {self.n_out})"


class Relu(_ref.Relu):
    kind = "relu"

    def __repr__(self) -> str:
        return "Relu()"


class LeakyRelu(_ref.LeakyRelu):
    """max(x, alpha * x); ``alpha`` in [0, 1)."""

    kind = "leaky_relu"

    def __init__(self, alpha: float = 0.01) -> None:
        alpha = float(alpha)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"LeakyRelu: alpha must be in [0, 1), got {alpha}")
        super().__init__(alpha)

    def __repr__(self) -> str:
        return f"LeakyRelu(alpha={self.alpha:g})"


class Sigmoid(_ref.Sigmoid):
    kind = "sigmoid"

    def __repr__(self) -> str:
        return "Sigmoid()"


class Tanh(_ref.Tanh):
    kind = "tanh"

    def __repr__(self) -> str:
        return "Tanh()"


class Identity(_ref.Identity):
    kind = "identity"

    def __repr__(self) -> str:
        return "Identity()"


class BatchNormalization(_ref.BatchNormalization):
    """The tutorials' Batch Normalization. ``BatchNormalization(gamma, beta, momentum=0.9)`` (arrays)
    or ``BatchNormalization(n)`` / ``BatchNorm(n)`` for ``n`` features (gamma 1, beta 0) in a
    :class:`~pyfastgrad.Sequential` net (which then owns ``gamma{i}``/``beta{i}`` and the running
    statistics ``running_mean``/``running_var``)."""

    kind = "batchnorm"

    def __init__(self, gamma: Union[np.ndarray, int], beta: Optional[np.ndarray] = None, momentum: float = 0.9,
                 running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None) -> None:
        if isinstance(gamma, (int, np.integer)) and not isinstance(gamma, (bool, np.bool_)):
            n = _int_size(gamma, "BatchNormalization size")
            gamma, beta = np.ones(n), np.zeros(n)
        else:
            gamma = np.asarray(gamma)
            beta = np.zeros_like(gamma) if beta is None else np.asarray(beta)
            if gamma.ndim != 1 or beta.shape != gamma.shape:
                raise ValueError(f"BatchNormalization: gamma and beta must be 1-D of one size, got {gamma.shape} "
                                 f"and {beta.shape}")
        momentum = float(momentum)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNormalization: momentum must be in [0, 1], got {momentum}")
        super().__init__(gamma, beta, momentum, running_mean, running_var)

    @property
    def size(self) -> int:
        return int(self.gamma.shape[0])

    def __repr__(self) -> str:
        return f"BatchNormalization({self.size}, momentum={self.momentum:g})"


BatchNorm = BatchNormalization


class Dropout(_ref.Dropout):
    """The tutorials' Dropout (``x * mask`` in training, ``x * (1 - ratio)`` in evaluation).

    In a :class:`~pyfastgrad.Sequential` net the masks come from the net's seeded generator (the
    same masks on every backend)."""

    kind = "dropout"

    def __init__(self, dropout_ratio: float = 0.5, rng: Optional[np.random.Generator] = None) -> None:
        r = float(dropout_ratio)
        if not 0.0 <= r < 1.0:
            raise ValueError(f"Dropout: dropout_ratio must be in [0, 1), got {dropout_ratio}")
        super().__init__(r, rng)

    def __repr__(self) -> str:
        return f"Dropout({self.dropout_ratio:g})"


class SoftmaxWithLoss(_ref.SoftmaxWithLoss):
    kind = "loss"
    loss_kind = "softmax"

    def __repr__(self) -> str:
        return "SoftmaxWithLoss()"


class MSELoss(_ref.MSELoss):
    """Identity output with E = 1/(2N) * sum((y - t)**2) (regression)."""

    kind = "loss"
    loss_kind = "mse"

    def __repr__(self) -> str:
        return "MSELoss()"


IdentityWithLoss = MSELoss


class SigmoidWithLoss(_ref.SigmoidWithLoss):
    """Sigmoid output with binary cross-entropy (targets in [0, 1], one column per output)."""

    kind = "loss"
    loss_kind = "bce"

    def __repr__(self) -> str:
        return "SigmoidWithLoss()"


class HingeLoss(_ref.HingeLoss):
    kind = "loss"
    loss_kind = "hinge"

    def __repr__(self) -> str:
        return "HingeLoss()"
