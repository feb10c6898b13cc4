"""Learning-rate schedules: the factor the optimizer's ``lr`` is multiplied by at each update.

A schedule is attached to an optimizer (``Adam(lr=1e-3, schedule=Cosine(6000))`` or
``opt.schedule = ...``, or ``fit(..., schedule='cosine')``). Update number ``t + 1`` (``t =
optimizer.iter`` updates done before it, counted over the optimizer's whole life, across
``fit`` calls and ``update``/``train_step``) uses the learning rate ``lr * schedule(t)``.
``fit`` hands the kernels one learning rate per step, so the schedule costs nothing per step
and the fused C++/numba loops never return to Python. Schedules count *updates*, not epochs
(an epoch is ``N // batch_size`` updates). They are saved with the optimizer's state.
"""
from __future__ import annotations

import json
import math
from typing import Optional, Union

import numpy as np

__all__ = ["Schedule", "Constant", "StepDecay", "Cosine", "Warmup", "make_schedule"]


def _count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _fraction(value, name: str, low_open: bool = False) -> float:
    v = float(value)
    if not (math.isfinite(v) and (v > 0 if low_open else v >= 0) and v <= 1):
        raise ValueError(f"{name} must be in {'(' if low_open else '['}0, 1], got {value!r}")
    return v


class Schedule:
    """Base class: ``schedule(t)`` is the factor for update ``t + 1`` (``t`` an int or int array)."""

    def factor(self, t: np.ndarray) -> np.ndarray:
        """The factor for updates ``t + 1`` (``t``: int64 array, >= 0); subclasses define it."""
        raise NotImplementedError

    def __call__(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        if t.size and t.min() < 0:
            raise ValueError("schedule steps count from 0")
        return np.asarray(self.factor(t), dtype=np.float64)

    def spec(self) -> dict:
        """A JSON-able description (``Schedule.from_spec`` rebuilds it)."""
        raise NotImplementedError

    @staticmethod
    def from_spec(spec: Union[dict, str]) -> "Schedule":
        """Rebuild a schedule from :meth:`spec`'s dict (or its JSON text)."""
        if isinstance(spec, str):
            spec = json.loads(spec)
        spec = dict(spec)
        kinds = {"constant": Constant, "step": StepDecay, "cosine": Cosine, "warmup": Warmup}
        kind = spec.pop("kind", None)
        if kind not in kinds:
            raise ValueError(f"unknown schedule kind {kind!r}; expected one of {list(kinds)}")
        if kind == "warmup" and spec.get("then") is not None:
            spec["then"] = Schedule.from_spec(spec["then"])
        return kinds[kind](**spec)

    def __eq__(self, other) -> bool:
        return isinstance(other, Schedule) and self.spec() == other.spec()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """factor 1 (the same as no schedule)."""

    def factor(self, t):
        """1 for every update."""
        return np.ones(t.shape)

    def spec(self) -> dict:
        """``{'kind': 'constant'}``."""
        return {"kind": "constant"}


class StepDecay(Schedule):
    """``gamma ** (t // step_size)``: the rate times gamma every ``step_size`` updates (torch's StepLR)."""

    def __init__(self, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _count(step_size, "step_size")
        self.gamma = _fraction(gamma, "gamma", low_open=True)

    def factor(self, t):
        """``gamma ** (t // step_size)``."""
        return self.gamma ** (t // self.step_size)

    def spec(self) -> dict:
        """``{'kind': 'step', 'step_size': ..., 'gamma': ...}``."""
        return {"kind": "step", "step_size": self.step_size, "gamma": self.gamma}


class Cosine(Schedule):
    """``m + (1 - m) (1 + cos(pi min(t, T) / T)) / 2`` with ``T = total_steps``, ``m = min_factor``:
    from 1 down to ``min_factor`` over ``total_steps`` updates, then flat (torch's CosineAnnealingLR
    with ``eta_min = min_factor * lr``)."""

    def __init__(self, total_steps: int, min_factor: float = 0.0) -> None:
        self.total_steps = _count(total_steps, "total_steps")
        self.min_factor = _fraction(min_factor, "min_factor")

    def factor(self, t):
        """``m + (1 - m) (1 + cos(pi min(t, T) / T)) / 2``."""
        c = np.minimum(t, self.total_steps) / self.total_steps
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + np.cos(np.pi * c))

    def spec(self) -> dict:
        """``{'kind': 'cosine', 'total_steps': ..., 'min_factor': ...}``."""
        return {"kind": "cosine", "total_steps": self.total_steps, "min_factor": self.min_factor}


class Warmup(Schedule):
    """Linear warm-up ``(t + 1) / steps`` for the first ``steps`` updates, then ``then(t - steps)``
    (1 without ``then``)."""

    def __init__(self, steps: int, then: Optional[Schedule] = None) -> None:
        self.steps = _count(steps, "steps")
        if then is not None and not isinstance(then, Schedule):
            raise TypeError(f"then must be a Schedule or None, got {type(then).__name__}")
        self.then = then

    def factor(self, t):
        """``(t + 1) / steps`` while ``t < steps``, then ``then(t - steps)`` (or 1)."""
        after = np.ones(t.shape) if self.then is None else self.then(np.maximum(t - self.steps, 0))
        return np.where(t < self.steps, (t + 1) / self.steps, after)

    def spec(self) -> dict:
        """``{'kind': 'warmup', 'steps': ..., 'then': then.spec() or None}``."""
        return {"kind": "warmup", "steps": self.steps, "then": None if self.then is None else self.then.spec()}


def make_schedule(text: Union[str, Schedule, None], total_steps: Optional[int] = None) -> Optional[Schedule]:
    """A schedule from a short text (the CLI's ``--schedule``), or ``text`` itself when it is one.

    ``'none'``; ``'step:SIZE[:GAMMA]'``; ``'cosine[:MIN_FACTOR]'`` over ``total_steps`` updates;
    ``'warmup:STEPS'`` and ``'warmup:STEPS+cosine[:MIN_FACTOR]'`` (cosine over the rest of
    ``total_steps``).
    """
    if text is None or isinstance(text, Schedule):
        return text
    if not isinstance(text, str):
        raise TypeError(f"schedule must be a Schedule, a text like 'cosine' or None, got {type(text).__name__}")
    head, _, rest = text.strip().lower().partition("+")
    name, *args = head.split(":")
    try:
        if name == "none" and not args and not rest:
            return None
        if name == "step" and 1 <= len(args) <= 2 and not rest:
            return StepDecay(int(args[0]), *(float(a) for a in args[1:]))
        if name == "cosine" and len(args) <= 1 and not rest:
            if total_steps is None:
                raise ValueError("'cosine' needs the number of steps (fit knows it)")
            return Cosine(total_steps, *(float(a) for a in args))
        if name == "warmup" and len(args) == 1:
            steps = int(args[0])
            then = None
            if rest:
                if total_steps is None:
                    raise ValueError("'warmup:N+cosine' needs the number of steps (fit knows it)")
                then = make_schedule(rest, max(total_steps - steps, 1))
            return Warmup(steps, then)
    except ValueError as exc:
        raise ValueError(f"bad schedule {text!r}: {exc}") from None
    raise ValueError(f"unknown schedule {text!r}; expected 'none', 'step:SIZE[:GAMMA]', 'cosine[:MIN]', "
                     "'warmup:STEPS' or 'warmup:STEPS+cosine[:MIN]'")
