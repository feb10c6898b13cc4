"""Optimizers with the tutorials' ``update(params, grads)`` API and fused kernels.

Each optimizer keeps **one** state: a ``(n_states, P)`` array aligned with the parameters
laid end to end in key order (for a net: exactly ``net.theta``), and the update count
``iter``. Every way of driving it uses that state — ``update(params, grads)`` (the
tutorials' loop), ``net.train_step(x, t, opt)`` and ``fit(net, ..., optimizer=opt)``, in
any mix — and ``state_dict()`` / ``load_state_dict()`` (or ``net.save(path, optimizer=opt)``
and ``load_net(path, optimizer=opt)``) carry it with every hyper-parameter, so training
resumed from a file continues bit for bit as if never interrupted.

Hyper-parameters (``lr``, ``momentum``, ``beta1``, ...) are plain attributes, checked when
set and read at every update; ``schedule`` scales ``lr`` per update and ``clip`` clips the
gradient by its global norm first. Each update is one fused kernel call over all parameters.

``style='tutorial'`` (default) uses the formulas of "Deep Learning from Scratch";
``style='torch'`` reproduces ``torch.optim`` (equations in each class).
"""
from __future__ import annotations

import copy
import json
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from . import spec
from ._backends import get_backend, kernels
from ._validate import all_finite
from .nets import GradDict, ParamDict
from .schedules import Schedule

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "AdamW",
           "make_optimizer", "STYLES"]

STYLES = ("tutorial", "torch")
Layout = Tuple[Tuple[str, Tuple[int, ...]], ...]


# ------------------------------------------------------------------ checked hyper-parameters
def _real(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if not (isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "if"):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _positive(value, name: str) -> float:
    v = _real(value, name)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def _non_negative(value, name: str) -> float:
    v = _real(value, name)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _unit(value, name: str) -> float:
    v = _real(value, name)
    if not 0 <= v < 1:
        raise ValueError(f"{name} must be in [0, 1), got {v}")
    return v


def _clip(value, name: str) -> Optional[float]:
    return None if value is None else _positive(value, name)


def _schedule(value, name: str) -> Optional[Schedule]:
    if value is not None and not isinstance(value, Schedule):
        raise TypeError(f"{name} must be a pyfastgrad.schedules.Schedule or None, got {type(value).__name__} "
                        "(texts like 'cosine' go through fit(..., schedule=) or make_schedule)")
    return value


class _Hyper:
    """A hyper-parameter attribute: checked on every assignment, read by every update."""

    def __init__(self, check) -> None:
        self.check = check

    def __set_name__(self, owner, name: str) -> None:
        self.name, self.slot = name, "_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else obj.__dict__[self.slot]

    def __set__(self, obj, value) -> None:
        d = obj.__dict__
        d[self.slot] = self.check(value, self.name)
        d["_hyper_vec"] = None  # the kernels' hyper vector is rebuilt at the next update


def _tiles(arrays: Sequence[np.ndarray]) -> Optional[np.ndarray]:
    """The 1-D buffer the arrays are consecutive C-contiguous views of, in order and covering it
    all (a net's ``params``/``gradient`` dicts), else None."""
    base = arrays[0].base
    if not (isinstance(base, np.ndarray) and base.ndim == 1 and base.flags.c_contiguous
            and base.size == sum(a.size for a in arrays)):
        return None
    addr, step = base.__array_interface__["data"][0], base.itemsize
    for a in arrays:
        if a.base is not base or a.dtype != base.dtype or not a.flags.c_contiguous or \
                a.__array_interface__["data"][0] != addr:
            return None
        addr += a.size * step
    return base


def _layout_text(layout: Layout) -> np.ndarray:
    return np.array([f"{k}:{'x'.join(map(str, shape))}" for k, shape in layout])


def _layout_parse(text: np.ndarray) -> Layout:
    out = []
    for item in np.asarray(text).ravel().tolist():
        key, _, dims = str(item).rpartition(":")
        out.append((key, tuple(int(d) for d in dims.split("x") if d)))
    return tuple(out)


def net_layout(net) -> Layout:
    """The (key, shape) layout of ``net.theta`` (the state of an optimizer training ``net``)."""
    params, size = net.params, net.theta.size
    # a ParamDict's keys and shapes are fixed: its layout is computed once (it was half of a small
    # net's train_step call)
    cached = getattr(params, "_layout_of_size", None) if isinstance(params, ParamDict) else None
    if cached is not None and cached[0] == size:
        return cached[1]
    layout = tuple((k, tuple(v.shape)) for k, v in params.items())
    if sum(math.prod(s) for _, s in layout) != size:  # SimpleNet: params cover part of theta
        layout = (("theta", (size,)),)
    if isinstance(params, ParamDict):
        params._layout_of_size = (size, layout)
    return layout


class Optimizer:
    """Base class: ``kind`` names the kernel, ``n_states`` its state vectors, ``_names`` the
    hyper-parameters saved by ``state_dict`` (in the kernels' order, see ``_slots``)."""

    kind = "sgd"
    n_states = 0
    _names: Tuple[str, ...] = ("lr",)
    _eps_default = {"tutorial": 1e-7, "torch": 1e-8}

    lr = _Hyper(_positive)
    clip = _Hyper(_clip)
    schedule = _Hyper(_schedule)

    def __init__(self, lr: float, *, style: str = "tutorial", clip: Optional[float] = None,
                 schedule: Optional[Schedule] = None, backend: Optional[str] = None) -> None:
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self._style = style
        self.lr = lr
        self.clip = clip
        self.schedule = schedule
        self.backend = backend
        self.iter = 0
        self._state: Optional[np.ndarray] = None  # (n_states, P), created at the first update
        self._layout: Optional[Layout] = None  # the parameters it belongs to
        self._tiles_of = None  # (a net's ParamDict, the flat buffer its views tile)

    @property
    def style(self) -> str:
        """'tutorial' or 'torch' (fixed at construction: the state's meaning depends on it)."""
        return self._style

    # ------------------------------------------------------------------ what the kernels get
    def _slots(self) -> Tuple[float, float, float, float]:
        """(a, b, eps, decoupled weight decay) of the kernels' hyper vector."""
        return 0.0, 0.0, 1e-7, 0.0

    def __getstate__(self) -> dict:
        # copies and pickles leave the caches behind (views of this object's state, the hyper vector)
        return {k: v for k, v in self.__dict__.items()
                if k not in ("_hyper_vec", "_state_views", "_fast_of", "_step_of")}

    @property
    def hyper(self) -> np.ndarray:
        """float64 ``[lr, a, b, eps, weight_decay, style, max_norm]`` as the kernels take them, built
        from the attributes now (``lr`` before the schedule)."""
        return self._hyper_vector().copy()

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        # a subclass whose _slots is written elsewhere may read plain attributes: its vector is checked
        # against the values at every update; ours read only _Hyper attributes, whose assignment drops it
        cls._pure_slots = cls._slots.__module__ == __name__

    _pure_slots = True

    def _hyper_vector(self) -> np.ndarray:
        """``hyper``, read-only, rebuilt only when the values it is made of change (small nets' train_step:
        building the array was a tenth of the call, comparing the values another tenth)."""
        d = self.__dict__
        h = d.get("_hyper_vec")
        key = None
        if self._pure_slots:
            if h is not None:
                return h
        else:
            key = (self.lr, *self._slots(), self._style, self.clip)
            if h is not None and d.get("_hyper_key") == key:
                return h
        a, b, eps, wd = self._slots()
        h = np.array([self.lr, a, b, eps, wd, float(self._style == "torch"), self.clip or 0.0])
        h.flags.writeable = False
        d["_hyper_vec"], d["_hyper_key"] = h, key
        return h

    def lrs(self, n: int) -> Optional[np.ndarray]:
        """Learning rates of the next ``n`` updates (float64), or None without a schedule (``lr``)."""
        if self.schedule is None:
            return None
        return self.lr * self.schedule(np.arange(self.iter, self.iter + n))

    def state(self, layout: Layout, dtype, size: int) -> np.ndarray:
        """The state for parameters of this layout (created, zero, at the first use)."""
        st = self._state
        if st is None:
            self._state = st = np.zeros((self.n_states, size), dtype=dtype)
            self._layout = layout
            return st
        if self._layout is None and st.shape[1] == size:  # loaded from a file without a layout
            self._layout = layout
        if self._layout != layout or st.shape[1] != size:
            raise ValueError(f"this {type(self).__name__} holds the state of other parameters "
                             f"({_describe(self._layout)}), got {_describe(layout)}; use a new optimizer "
                             "or call reset()")
        if st.dtype != np.dtype(dtype):
            raise TypeError(f"this {type(self).__name__}'s state is {st.dtype}, the parameters are "
                            f"{np.dtype(dtype)}; use a new optimizer or call reset()")
        return st

    def reset(self) -> None:
        """Forget the state and the update count (hyper-parameters stay)."""
        self.iter, self._state, self._layout, self._tiles_of = 0, None, None, None
        self._fast_of = {}

    def _next_update(self, st: np.ndarray):
        """(hyper with this update's learning rate, state1, state2, step) for the kernels' next update."""
        h = self._hyper_vector()
        if self.schedule is not None:
            h = h.copy()
            h[0] = self.lrs(1)[0]
        views = self.__dict__.get("_state_views")
        if views is None or views[0] is not st:  # st's rows as the kernels' state1 / state2, made once
            empty = st[:0, :0].reshape(0)
            views = (st, st[0] if self.n_states >= 1 else empty, st[1] if self.n_states >= 2 else empty)
            self.__dict__["_state_views"] = views
        return h, views[1], views[2], self.iter + 1

    def _apply(self, theta: np.ndarray, grad: np.ndarray, st: np.ndarray, backend: str) -> None:
        h, s1, s2, step = self._next_update(st)
        kernels(backend).opt_update(self.kind, theta, grad, s1, s2, h, step)
        self.iter = step

    def _step_in(self, net, kernel_step, x: np.ndarray, t: np.ndarray) -> float:
        """``net.train_step``'s one-call path: ``kernel_step`` (the Mlp kernel's ``train_step``) computes the
        gradient and applies this optimizer's update as :meth:`step` would; nothing changes when the
        loss is not finite. Returns the loss (None, with nothing changed, where ``kernel_step`` is
        ``train_step_any`` and declined the inputs)."""
        theta, st = net.theta, self._state
        bound = self.__dict__.get("_step_of")
        if bound is None or bound[0] is not theta or bound[1] is not st:
            # the layout checks once per (net, state): a net's theta is never resized, the state only
            # replaced (a small net's call was a tenth longer checking every time)
            st = self.state(net_layout(net), theta.dtype, theta.size)
            self.__dict__["_step_of"] = (theta, st)
        h, s1, s2, step = self._next_update(st)
        loss = kernel_step(theta, x, t, net.weight_decay, self.kind, h, s1, s2, step, net._grad)
        if loss is not None and math.isfinite(loss):
            self.iter = step
        return loss

    # ------------------------------------------------------------------ the three ways to drive it
    def step(self, net, grad: np.ndarray) -> None:
        """Update ``net.theta`` in place from the flat gradient ``grad`` (one kernel call)."""
        st = self.state(net_layout(net), net.theta.dtype, net.theta.size)
        self._apply(net.theta, grad, st, self.backend or net.backend or get_backend())

    def update(self, params, grads) -> None:
        """The tutorials' API: update every ``params[key]`` in place from ``grads[key]``.

        One kernel call over all parameters: a net's ``params`` and ``gradient`` are used in
        place (they are views of one buffer); other dicts are gathered into one vector and the
        results written back into the same arrays (any layout). Read-only arrays are a ValueError.
        """
        fast = (self.__dict__.get("_fast_of") or {}).get(id(params))
        if (fast is not None and fast[0] is params and type(grads) is GradDict and grads.layout is fast[1]
                and grads.intact(tuple(grads.values())) and fast[2].flags.writeable
                and all_finite(grads.flat, self.backend)):
            # a net's params and an untouched gradient() dict of its layout, as checked in full below the
            # first time: the tutorials' loops pay the checks once per net, not at every step (~20 us a call;
            # ~50 us where one optimizer updates several nets in turn, as the weight-init comparison's SGD)
            self._apply(fast[2], grads.flat, self.state(fast[3], fast[2].dtype, fast[2].size),
                        self.backend or get_backend())
            return
        keys = list(params)
        if not keys:
            raise ValueError("params is empty")
        missing = [k for k in keys if k not in grads]
        if missing:
            raise KeyError(f"grads has no entry for {missing}")
        ps = [params[k] for k in keys]
        for k, p in zip(keys, ps):
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"params[{k!r}] must be a float32 or float64 numpy array, got "
                                f"{getattr(p, 'dtype', type(p).__name__)}")
        ro = [k for k, p in zip(keys, ps) if not p.flags.writeable]
        if ro:  # updated in place or not at all: a replaced entry would leave the caller's array stale
            raise ValueError(f"params[{ro[0]!r}] is read-only; update() changes the arrays in place "
                             "(pass writable arrays, e.g. np.array(...))")
        dtype = ps[0].dtype
        if any(p.dtype != dtype for p in ps):
            raise TypeError(f"params mix dtypes {sorted({str(p.dtype) for p in ps})}; use one dtype")
        gs = [np.asarray(grads[k]) for k in keys]
        for k, p, g in zip(keys, ps, gs):
            if g.shape != p.shape:
                raise ValueError(f"grads[{k!r}] has shape {g.shape}, params[{k!r}] has {p.shape}")
        if (type(grads) is GradDict and grads.intact(gs) and grads.flat.dtype == dtype
                and grads.flat.size == sum(p.size for p in ps)):
            g = grads.flat  # a net's gradient() dict, untouched, its views the whole buffer: no layout check
        else:
            g = _tiles(gs) if all(x.dtype == dtype for x in gs) else None
        if g is None:
            g = np.concatenate([np.asarray(x, dtype=dtype).ravel() for x in gs])
        if not all_finite(g, self.backend):
            bad = next(k for k, x in zip(keys, gs) if not np.isfinite(x).all())
            raise FloatingPointError(f"grads[{bad!r}] contains NaN or Inf; parameters not updated")
        if isinstance(params, ParamDict):  # a net's params: fixed views, checked once
            if self._tiles_of is None or self._tiles_of[0] is not params:
                self._tiles_of = (params, _tiles(ps))
            theta = self._tiles_of[1]
        else:
            theta = _tiles(ps)
        packed = theta is None or not theta.flags.writeable
        if packed:
            theta = np.concatenate([p.ravel() for p in ps])
        layout = tuple((k, p.shape) for k, p in zip(keys, ps))
        st = self.state(layout, dtype, theta.size)
        self._apply(theta, g, st, self.backend or get_backend())
        fasts = self.__dict__.get("_fast_of") or {}
        fasts.pop(id(params), None)
        if (isinstance(params, ParamDict) and not packed and type(grads) is GradDict and g is grads.flat
                and grads.layout is not None and theta.size == g.size):
            if len(fasts) >= 8:  # (a few nets at a time; the entries hold their params alive)
                fasts.pop(next(iter(fasts)))
            fasts[id(params)] = (params, grads.layout, theta, layout)
        self._fast_of = fasts
        if packed:  # back into the caller's arrays (the layers hold them)
            off = 0
            for _k, p in zip(keys, ps):
                np.copyto(p, theta[off:off + p.size].reshape(p.shape))  # any layout: strided, Fortran
                off += p.size

    # ------------------------------------------------------------------ saving and loading
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Everything an exact resume needs, as numpy arrays (``np.savez``-able): ``kind``,
        ``style``, ``iter``, each hyper-parameter by name, ``clip`` (0 = off), ``schedule`` (JSON,
        '' = none) and, after the first update, ``state`` (n_states, P) and its ``layout``."""
        out = {"kind": np.array(self.kind), "style": np.array(self._style), "iter": np.array(self.iter, np.int64)}
        for name in self._names:
            out[name] = np.array(float(getattr(self, name)))
        out["clip"] = np.array(self.clip or 0.0)
        out["schedule"] = np.array(json.dumps(self.schedule.spec()) if self.schedule is not None else "")
        if self._state is not None:
            out["state"] = self._state.copy()
            if self._layout is not None:
                out["layout"] = _layout_text(self._layout)
        return out

    def load_state_dict(self, state: Dict[str, np.ndarray]) -> None:
        """Set hyper-parameters, update count and state from :meth:`state_dict`'s output (checked
        first: on error nothing changes). Also reads the older ``{'iter', 'hyper', 'state1',
        'state2'}`` form."""
        kind = str(state.get("kind", self.kind))
        if kind != self.kind:
            raise ValueError(f"state_dict is of a {kind!r} optimizer, this is {self.kind!r}")
        new = copy.copy(self)  # checked on a copy: a bad state_dict leaves self as it was
        if "hyper" in state:  # the older form: [lr, a, b] and state1/state2
            h = np.asarray(state["hyper"], dtype=np.float64).ravel()
            for name, v in zip(self._names, h[:1 + len(self._names)]):
                if name != "eps":
                    setattr(new, name, v)
            layout, st = None, None
            if "state1" in state:
                st = np.stack([np.asarray(state["state1"]), np.asarray(state["state2"])])[:self.n_states].copy()
        else:
            style = str(state.get("style", self._style))
            if style not in STYLES:
                raise ValueError(f"style must be one of {STYLES}, got {style!r}")
            new._style = style
            for name in self._names:
                if name not in state:
                    raise KeyError(f"state_dict has no {name!r}")
                setattr(new, name, np.asarray(state[name])[()])
            c = float(state.get("clip", 0.0))
            new.clip = None if c == 0 else c
            sched = str(state.get("schedule", ""))
            new.schedule = Schedule.from_spec(sched) if sched else None
            layout = _layout_parse(state["layout"]) if "layout" in state else None
            st = np.array(state["state"]) if "state" in state else None
        it = state["iter"]
        if np.ndim(it) != 0 or float(it) != int(it) or int(it) < 0:
            raise ValueError(f"iter must be an integer >= 0, got {it!r}")
        new.iter = int(it)
        if st is not None:
            if st.ndim != 2 or st.shape[0] != self.n_states or st.dtype not in (np.float32, np.float64):
                raise ValueError(f"state must be a float ({self.n_states}, P) array, got {st.dtype} {st.shape}")
            if layout is not None and sum(int(np.prod(s)) for _, s in layout) != st.shape[1]:
                raise ValueError(f"state has {st.shape[1]} entries per vector, its layout {layout} needs another")
            if not np.isfinite(st).all():
                raise ValueError("state contains NaN or Inf")
        new._state, new._layout = st, layout if st is not None else None
        self.__dict__.update(new.__dict__)
        self.__dict__["_hyper_vec"] = None  # (the style may have changed without a _Hyper assignment)

    def __repr__(self) -> str:
        args = [f"{n}={getattr(self, n):g}" for n in self._names]
        if self._style != "tutorial":
            args.append(f"style={self._style!r}")
        if self.clip is not None:
            args.append(f"clip={self.clip:g}")
        if self.schedule is not None:
            args.append(f"schedule={self.schedule!r}")
        return f"{type(self).__name__}({', '.join(args)})"


def _describe(layout: Optional[Layout]) -> str:
    if not layout:
        return "unknown"
    text = ", ".join(f"{k} {'x'.join(map(str, s))}" for k, s in layout[:6])
    return text + (", ..." if len(layout) > 6 else "")


class SGD(Optimizer):
    """Stochastic gradient descent: ``theta <- theta - lr * g`` (both styles).

    Parameters
    ----------
    lr : learning rate (> 0).
    style : 'tutorial' or 'torch' (the same formula).
    clip : clip the gradient to this global norm first (None: off).
    schedule : a :mod:`pyfastgrad.schedules` factor on ``lr`` per update.
    backend : kernels for ``update`` (None: the net's or the global backend).
    """

    kind = "sgd"

    def __init__(self, lr: float = 0.01, *, style: str = "tutorial", clip: Optional[float] = None,
                 schedule: Optional[Schedule] = None, backend: Optional[str] = None) -> None:
        super().__init__(lr, style=style, clip=clip, schedule=schedule, backend=backend)


class Momentum(Optimizer):
    """SGD with momentum ``mu`` (``momentum``, in [0, 1)).

    * tutorial: ``v <- mu v - lr g;  theta <- theta + v``
    * torch (``torch.optim.SGD(momentum=mu)``): ``v <- mu v + g;  theta <- theta - lr v``

    The two agree while ``lr`` is constant; with a schedule the tutorial's velocity keeps the old
    rates, torch's applies the new rate to the whole velocity. Other arguments as :class:`SGD`.
    """

    kind, n_states = "momentum", 1
    _names = ("lr", "momentum")
    momentum = _Hyper(_unit)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, *, style: str = "tutorial",
                 clip: Optional[float] = None, schedule: Optional[Schedule] = None,
                 backend: Optional[str] = None) -> None:
        super().__init__(lr, style=style, clip=clip, schedule=schedule, backend=backend)
        self.momentum = momentum

    def _slots(self):
        return self.momentum, 0.0, 1e-7, 0.0


class Nesterov(Momentum):
    """Nesterov's accelerated gradient, momentum ``mu``.

    * tutorial (the tutorials' code): ``v <- mu v - lr g;  theta <- theta + mu^2 v - (1 + mu) lr g``
      (first step with g = 1, lr 0.1, mu 0.9: -0.271)
    * torch (``torch.optim.SGD(momentum=mu, nesterov=True)``): ``v <- mu v + g;
      theta <- theta - lr (g + mu v)`` (the same first step: -0.19)
    """

    kind = "nesterov"


class AdaGrad(Optimizer):
    """AdaGrad: ``h <- h + g^2;  theta <- theta - lr g / (sqrt(h) + eps)``.

    Same formula in both styles (``torch.optim.Adagrad`` with lr_decay 0 and initial accumulator
    0); ``eps`` defaults to 1e-7 (tutorial) or 1e-10 (torch).
    """

    kind, n_states = "adagrad", 1
    _names = ("lr", "eps")
    _eps_default = {"tutorial": 1e-7, "torch": 1e-10}
    eps = _Hyper(_positive)

    def __init__(self, lr: float = 0.01, eps: Optional[float] = None, *, style: str = "tutorial",
                 clip: Optional[float] = None, schedule: Optional[Schedule] = None,
                 backend: Optional[str] = None) -> None:
        super().__init__(lr, style=style, clip=clip, schedule=schedule, backend=backend)
        self.eps = self._eps_default[style] if eps is None else eps

    def _slots(self):
        return 0.0, 0.0, self.eps, 0.0


class RMSprop(Optimizer):
    """RMSprop with decay ``rho`` (``decay_rate``, torch's ``alpha``):
    ``h <- rho h + (1 - rho) g^2;  theta <- theta - lr g / (sqrt(h) + eps)``.

    Same formula in both styles (``torch.optim.RMSprop``, no momentum, not centered); ``eps``
    defaults to 1e-7 (tutorial) or 1e-8 (torch).
    """

    kind, n_states = "rmsprop", 1
    _names = ("lr", "decay_rate", "eps")
    decay_rate = _Hyper(_unit)
    eps = _Hyper(_positive)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, eps: Optional[float] = None, *,
                 style: str = "tutorial", clip: Optional[float] = None, schedule: Optional[Schedule] = None,
                 backend: Optional[str] = None) -> None:
        super().__init__(lr, style=style, clip=clip, schedule=schedule, backend=backend)
        self.decay_rate = decay_rate
        self.eps = self._eps_default[style] if eps is None else eps

    def _slots(self):
        return self.decay_rate, 0.0, self.eps, 0.0


class Adam(Optimizer):
    """Adam: ``m <- m + (1 - b1)(g - m);  v <- v + (1 - b2)(g^2 - v)``, with ``bc_i = 1 - b_i^t``
    at update ``t`` (= ``iter``):

    * tutorial (the tutorials' code): ``theta <- theta - lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps)``,
      eps on the *uncorrected* sqrt(v), default 1e-7
    * torch (``torch.optim.Adam``): ``theta <- theta - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)``,
      default 1e-8

    The two differ by eps's weight (about 2.5e-6 relative at gradient scale 1, half the step at
    scale 1e-6). L2 regularisation belongs in the loss (``Net(weight_decay=...)``); see
    :class:`AdamW` for decoupled weight decay.
    """

    kind, n_states = "adam", 2
    _names = ("lr", "beta1", "beta2", "eps")
    beta1 = _Hyper(_unit)
    beta2 = _Hyper(_unit)
    eps = _Hyper(_positive)

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: Optional[float] = None,
                 *, style: str = "tutorial", clip: Optional[float] = None, schedule: Optional[Schedule] = None,
                 backend: Optional[str] = None) -> None:
        super().__init__(lr, style=style, clip=clip, schedule=schedule, backend=backend)
        self.beta1, self.beta2 = beta1, beta2
        self.eps = self._eps_default[style] if eps is None else eps

    def _slots(self):
        return self.beta1, self.beta2, self.eps, 0.0


class AdamW(Adam):
    """Adam with decoupled weight decay ``wd`` (Loshchilov & Hutter; ``torch.optim.AdamW``): first
    ``theta <- theta (1 - lr wd)``, then the :class:`Adam` step (of the chosen style).

    L2 in the loss (``Net(weight_decay=)``) adds ``wd W`` to the gradient, which Adam then divides by
    ``sqrt(v)``: weights with large gradients are barely regularised. AdamW shrinks every parameter
    (biases too, as torch) by the same factor, independent of the gradient. Default ``weight_decay``
    0.01 (torch's).
    """

    kind = "adamw"
    _names = ("lr", "beta1", "beta2", "eps", "weight_decay")
    weight_decay = _Hyper(_non_negative)

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: Optional[float] = None,
                 weight_decay: float = 0.01, *, style: str = "tutorial", clip: Optional[float] = None,
                 schedule: Optional[Schedule] = None, backend: Optional[str] = None) -> None:
        super().__init__(lr, beta1, beta2, eps, style=style, clip=clip, schedule=schedule, backend=backend)
        self.weight_decay = weight_decay

    def _slots(self):
        return self.beta1, self.beta2, self.eps, self.weight_decay


_CHECKS = {"unit": _unit, "positive": _positive, "non_negative": _non_negative}


def _from_spec(entry: "spec.OptimizerSpec") -> type:
    """An Optimizer class for a registry entry: its hyper-parameters (checked attributes, saved by
    ``state_dict``) fill the kernels' hyper slots by name; ``eps`` defaults by style."""
    hyper = entry.hyper
    names = ("lr",) + tuple(h.name for h in hyper)

    def __init__(self, lr: float = entry.lr, *args, style: str = "tutorial", clip: Optional[float] = None,
                 schedule: Optional[Schedule] = None, backend: Optional[str] = None, **kw) -> None:
        Optimizer.__init__(self, lr, style=style, clip=clip, schedule=schedule, backend=backend)
        if len(args) > len(hyper):
            raise TypeError(f"{entry.cls} takes at most {len(hyper) + 1} positional arguments")
        values = dict(zip((h.name for h in hyper), args))
        for k, v in kw.items():
            if k not in names[1:] or k in values:
                raise TypeError(f"{entry.cls} got an unexpected or repeated argument {k!r}")
            values[k] = v
        for h in hyper:
            v = values.get(h.name, h.default)
            setattr(self, h.name, self._eps_default[style] if v is None and h.name == "eps" else v)

    def _slots(self):
        slot = {"a": 0.0, "b": 0.0, "eps": 1e-7, "weight_decay": 0.0}
        for h in hyper:
            slot[h.slot] = getattr(self, h.name)
        return slot["a"], slot["b"], slot["eps"], slot["weight_decay"]

    ns = {"kind": entry.name, "n_states": entry.n_states, "_names": names, "__init__": __init__,
          "_slots": _slots, "__doc__": entry.doc, "__module__": __name__,
          "_eps_default": {"tutorial": entry.eps[0], "torch": entry.eps[1]}}
    ns.update({h.name: _Hyper(_CHECKS[h.check]) for h in hyper})
    return type(entry.cls, (Optimizer,), ns)  # type() calls each _Hyper's __set_name__


# Every registry entry without a hand-written class above gets one made from its entry.
for _entry in spec.OPTIMIZERS:
    if _entry.cls not in globals():
        globals()[_entry.cls] = _from_spec(_entry)
        __all__.append(_entry.cls)

_BY_NAME = {o.name: globals()[o.cls] for o in spec.OPTIMIZERS}


def make_optimizer(name: str, **kw) -> Optimizer:
    """Optimizer by name: one of ``pyfastgrad.spec.OPTIMIZER_NAMES`` (sgd, momentum, nesterov, adagrad,
    rmsprop, adam, adamw, ...)."""
    try:
        cls = _BY_NAME[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(_BY_NAME)}") from None
    return cls(**kw)
