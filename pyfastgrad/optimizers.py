"""Optimizers with the tutorials' ``update(params, grads)`` API and fused kernels.

``update`` works on any dict of arrays, as in the tutorials. When ``params`` is a
net's ``ParamDict`` (one flat buffer) the update is one fused kernel call over
all parameters. State is created lazily and can be saved (``state_dict``).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from ._backend import get_backend, kernels
from ._validate import positive

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "make_optimizer"]


class Optimizer:
    """Base class. Subclasses set ``kind`` and the hyper-parameters ``[lr, a, b]``."""

    kind = "sgd"
    needs = 0  # number of state arrays

    def __init__(self, lr: float, a: float = 0.0, b: float = 0.0, backend: Optional[str] = None) -> None:
        self.lr = positive(lr, "lr")
        self._a, self._b = float(a), float(b)
        self.backend = backend
        self.iter = 0
        self._flat_state: Optional[list] = None
        self._dict_state: Dict[str, list] = {}

    @property
    def hyper(self) -> np.ndarray:
        """``[lr, a, b]`` as the kernels take them (rebuilt only when ``lr`` changes)."""
        h = self.__dict__.get("_hyper")
        if h is None or h[0] != self.lr:
            h = self._hyper = np.array([self.lr, self._a, self._b], dtype=np.float64)
        return h

    def _state_for(self, like: np.ndarray) -> list:
        n = max(self.needs, 1)
        return [np.zeros_like(like) for _ in range(n)] + [np.zeros_like(like)] * (2 - n)

    def flat_state(self, theta: np.ndarray) -> list:
        """The two state vectors for a flat parameter buffer (created on first use)."""
        st = self._flat_state
        if st is None or st[0].shape != theta.shape or st[0].dtype != theta.dtype:
            st = self._flat_state = self._state_for(theta)
        return st

    def step(self, net, grad: np.ndarray) -> None:
        """Update ``net.theta`` in place from the flat gradient ``grad`` (one kernel call)."""
        s1, s2 = self.flat_state(net.theta)
        self.iter += 1
        kernels(self.backend or net.backend or get_backend()).opt_update(
            self.kind, net.theta, grad, s1, s2, self.hyper, self.iter)

    def update(self, params, grads) -> None:
        """The tutorials' API: update every ``params[key]`` in place from ``grads[key]``."""
        k = kernels(self.backend)
        self.iter += 1
        for key in params:
            p, g = params[key], np.asarray(grads[key])
            if g.shape != p.shape:
                raise ValueError(f"grads[{key!r}] has shape {g.shape}, params[{key!r}] has {p.shape}")
            if not np.isfinite(g).all():
                raise FloatingPointError(f"grads[{key!r}] contains NaN or Inf; parameters not updated")
            contiguous = p.flags.c_contiguous and p.flags.writeable
            target = p if contiguous else np.ascontiguousarray(p)
            st = self._dict_state.get(key)
            if st is None:
                st = self._dict_state[key] = self._state_for(target)
            k.opt_update(self.kind, target.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1),
                         st[0].reshape(-1), st[1].reshape(-1), self.hyper, self.iter)
            if not contiguous:
                params[key] = target

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Step count, ``[lr, a, b]`` and the flat state vectors (after a net's first step)."""
        out = {"iter": np.array(self.iter), "hyper": self.hyper.copy()}
        if self._flat_state is not None:
            out["state1"], out["state2"] = self._flat_state
        return out

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        self.iter = int(state["iter"])
        if "hyper" in state:
            self.lr, self._a, self._b = (float(v) for v in state["hyper"])
        if "state1" in state:
            self._flat_state = [np.array(state["state1"]), np.array(state["state2"])]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr:g})"


class SGD(Optimizer):
    """x <- x - lr * g"""

    kind = "sgd"

    def __init__(self, lr: float = 0.01, backend: Optional[str] = None) -> None:
        super().__init__(lr, backend=backend)


class Momentum(Optimizer):
    """v <- momentum * v - lr * g;  x <- x + v"""

    kind, needs = "momentum", 1

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, backend: Optional[str] = None) -> None:
        super().__init__(lr, momentum, backend=backend)
        self.momentum = momentum

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr:g}, momentum={self.momentum:g})"


class Nesterov(Momentum):
    """Nesterov's accelerated gradient (the tutorials' formulation)."""

    kind = "nesterov"


class AdaGrad(Optimizer):
    """h <- h + g*g;  x <- x - lr * g / (sqrt(h) + 1e-7)"""

    kind, needs = "adagrad", 1

    def __init__(self, lr: float = 0.01, backend: Optional[str] = None) -> None:
        super().__init__(lr, backend=backend)


class RMSprop(Optimizer):
    """h <- decay*h + (1-decay)*g*g;  x <- x - lr * g / (sqrt(h) + 1e-7)"""

    kind, needs = "rmsprop", 1

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, backend: Optional[str] = None) -> None:
        super().__init__(lr, decay_rate, backend=backend)
        self.decay_rate = decay_rate


class Adam(Optimizer):
    """Adam with the tutorials' bias correction folded into the learning rate."""

    kind, needs = "adam", 2

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 backend: Optional[str] = None) -> None:
        super().__init__(lr, beta1, beta2, backend=backend)
        self.beta1, self.beta2 = beta1, beta2

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr:g}, beta1={self.beta1:g}, beta2={self.beta2:g})"


_BY_NAME = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad,
            "rmsprop": RMSprop, "adam": Adam}


def make_optimizer(name: str, **kw) -> Optimizer:
    """Optimizer by name: sgd, momentum, nesterov, adagrad, rmsprop, adam."""
    try:
        return _BY_NAME[name.lower()](**kw)
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(_BY_NAME)}") from None
