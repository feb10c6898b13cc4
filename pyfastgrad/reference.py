"""The pure-numpy reference: the tutorials' method, written to be read.

Every fast path in pyfastgrad (the C++ and numba backends) is tested against
the functions and classes in this module. It depends on numpy only and
mirrors the tutorials' code (chapters 3-6 of "Deep Learning from Scratch"),
with its quirks decided on purpose:

* ``mean_squared_error`` is ``1/2 * sum((y - t)**2)``, averaged over the
  batch for 2-D input. One tutorial prints 0.195 for its one-hot example; that
  value forgot the 1/2 (the correct value is 0.0975).
* ``cross_entropy_error`` adds ``delta = 1e-7`` inside the log and treats
  ``t`` as one-hot when ``t.size == y.size``, as integer labels otherwise.
  With *soft* targets (rows that are not one-hot) this argmax shortcut scores
  only the largest target's class: ``([[.2, .3, .5]], [[.5, .5, 0]])`` gives
  -log(0.2) = 1.6094, where the public ``pyfastgrad.cross_entropy_error``
  computes the full -sum(t * log(y)) = 1.4067. Both agree on one-hot targets.
* ``SoftmaxWithLoss`` (and so every net's softmax loss) computes the
  cross-entropy from the logits with a stable log-softmax,
  ``-sum(t * (z - logsumexp(z))) / N``, instead of ``cross_entropy_error(softmax(z))``.
  The 1e-7 guard is then unnecessary, and backprop's ``(y - t) / N`` is the
  exact derivative of the loss, so gradient checks agree to ~1e-9 instead of
  ~1e-6 (the guard's own effect). Loss values differ from the tutorials' by
  about 1e-7 / y_t relative: invisible at the printed precision.
* ``predict`` returns logits (the last affine output, chapter 5 style); the
  softmax is part of the loss.
* L2 weight decay adds ``0.5 * weight_decay * sum(W**2)`` for every weight
  matrix (not the biases); its gradient is ``weight_decay * W``.
* Adam applies ``eps`` to the bias-uncorrected ``sqrt(v)``, as the tutorials do.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence

import numpy as np

__all__ = [
    "identity", "sigmoid", "sigmoid_grad", "relu", "relu_grad", "tanh", "softmax",
    "mean_squared_error", "sum_squared_error", "cross_entropy_error", "softmax_cross_entropy",
    "hinge_loss", "numerical_gradient", "gradient_descent",
    "Affine", "Relu", "Sigmoid", "Tanh", "SoftmaxWithLoss", "MSELoss", "HingeLoss",
    "SimpleNet", "TwoLayerNet", "TwoLayerNetCh4", "MultiLayerNet",
    "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam",
]

DELTA = 1e-7  # guards log(0) in cross_entropy_error


# --------------------------------------------------------------------------- functions
def identity(x: np.ndarray) -> np.ndarray:
    """``y = x`` (the output activation of a regression net)."""
    return x


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-x))."""
    return 1.0 / (1.0 + np.exp(-x))


def sigmoid_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of the sigmoid, ``sigmoid(x) * (1 - sigmoid(x))``."""
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x: np.ndarray) -> np.ndarray:
    """``max(0, x)``, element-wise."""
    return np.maximum(0, x)


def relu_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of ReLU: 1 where ``x > 0``, else 0 (0 at the kink x = 0)."""
    return (x > 0).astype(x.dtype)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent, element-wise."""
    return np.tanh(x)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (row-wise for a batch)."""
    x = x - np.max(x, axis=-1, keepdims=True)  # overflow guard
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def mean_squared_error(y: np.ndarray, t: np.ndarray) -> float:
    """E = 1/2 * sum((y - t)**2); for a batch (2-D) the mean over rows.

    ``t`` may be one-hot (same shape as ``y``) or integer labels.
    """
    y = np.asarray(y)
    t = np.asarray(t)
    if t.size != y.size:  # labels -> one-hot
        t = np.eye(y.shape[-1], dtype=y.dtype)[t]
    t = t.reshape(y.shape)
    n = y.shape[0] if y.ndim == 2 else 1
    return 0.5 * np.sum((y - t) ** 2) / n


def sum_squared_error(y: np.ndarray, t: np.ndarray) -> float:
    """The tutorials' code name: 1/2 * sum((y - t)**2), no division by the batch size."""
    y = np.asarray(y)
    t = np.asarray(t)
    if t.size != y.size:
        t = np.eye(y.shape[-1], dtype=y.dtype)[t]
    return 0.5 * np.sum((y - t.reshape(y.shape)) ** 2)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    """-sum(t * log(y + 1e-7)) / N, with ``t`` one-hot (t.size == y.size) or labels.

    The tutorials' code: one-hot ``t`` is turned into labels by argmax, so soft targets
    (probabilities in ``t``) score only their largest class: ``([[.2, .3, .5]], [[.5, .5, 0]])``
    gives -log(0.2) = 1.6094, not the full -sum(t log y) = 1.4067 of
    ``pyfastgrad.cross_entropy_error``.
    """
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:  # one-hot -> labels (the tutorials' shortcut)
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + DELTA)) / batch_size


def softmax_cross_entropy(z: np.ndarray, t: np.ndarray) -> float:
    """Cross-entropy of softmax(z) against ``t`` (one-hot or labels), from the logits (log-softmax)."""
    if z.ndim == 1:
        z = z.reshape(1, -1)
        t = np.asarray(t).reshape(1, -1) if np.size(t) == z.size else np.asarray(t).reshape(1)
    m = np.max(z, axis=1, keepdims=True)
    log_y = z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))  # log softmax
    n = z.shape[0]
    if np.size(t) == z.size:
        return -np.sum(np.asarray(t).reshape(z.shape) * log_y) / n
    return -np.sum(log_y[np.arange(n), t]) / n


def hinge_loss(s: np.ndarray, t: np.ndarray, margin: float = 1.0) -> float:
    """Multiclass SVM loss: mean over rows of sum_{k != t} max(0, s_k - s_t + margin)."""
    if s.ndim == 1:
        s = s.reshape(1, -1)
        t = np.asarray(t).reshape(1, -1) if np.size(t) == s.size else np.asarray(t).reshape(1)
    if np.size(t) == s.size:
        t = np.asarray(t).reshape(s.shape).argmax(axis=1)
    n = s.shape[0]
    st = s[np.arange(n), t][:, None]
    m = np.maximum(0, s - st + margin)
    m[np.arange(n), t] = 0
    return np.sum(m) / n


# --------------------------------------------------------------------------- gradients
def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Central differences (f(x+h) - f(x-h)) / 2h for every element of ``x`` (any shape).

    ``x`` is perturbed in place one element at a time and restored exactly.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]
        x[idx] = tmp_val + h
        fxh1 = f(x)  # f(x+h)
        x[idx] = tmp_val - h
        fxh2 = f(x)  # f(x-h)
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        x[idx] = tmp_val  # restore
        it.iternext()
    return grad


def gradient_descent(f: Callable[[np.ndarray], float], init_x: np.ndarray, lr: float = 0.01,
                     step_num: int = 100, history: bool = False):
    """x <- x - lr * grad f(x), ``step_num`` times, starting from ``init_x`` (updated in place).

    With ``history=True`` returns ``(x, path)``: ``path`` has shape ``(step_num + 1, *x.shape)``,
    the starting point and then ``x`` after every step (the tutorials' ``x_history`` holds the
    points before each step, i.e. ``path[:-1]``).
    """
    x = init_x
    path = [x.copy()]
    for _ in range(step_num):
        grad = numerical_gradient(f, x)
        x -= lr * grad
        if history:
            path.append(x.copy())
    return (x, np.array(path)) if history else x


# --------------------------------------------------------------------------- layers
class Relu:
    """ReLU layer: ``out = max(0, x)``; backward passes ``dout`` where ``x > 0`` and 0 elsewhere."""

    def __init__(self) -> None:
        self.mask: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``max(0, x)``; remembers where ``x <= 0``."""
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dx = dout`` where ``x > 0``, else 0."""
        dout = dout.copy()
        dout[self.mask] = 0
        return dout


class Sigmoid:
    """Sigmoid layer: ``out = 1 / (1 + exp(-x))``; backward ``dx = dout * out * (1 - out)``."""

    def __init__(self) -> None:
        self.out: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``out = sigmoid(x)`` (kept for backward)."""
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dx = dout * (1 - out) * out``."""
        return dout * (1.0 - self.out) * self.out


class Tanh:
    """Tanh layer: ``out = tanh(x)``; backward ``dx = dout * (1 - out**2)``."""

    def __init__(self) -> None:
        self.out: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``out = tanh(x)`` (kept for backward)."""
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dx = dout * (1 - out**2)``."""
        return dout * (1.0 - self.out ** 2)


class Affine:
    """y = x . W + b; any-shape input is flattened to (N, -1)."""

    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W = W
        self.b = b
        self.x: Optional[np.ndarray] = None
        self.original_x_shape: Optional[tuple] = None
        self.dW: Optional[np.ndarray] = None
        self.db: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``out = x . W + b`` with ``x`` reshaped to (N, -1); remembers ``x``."""
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        return np.dot(x, self.W) + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dx = dout . W^T`` (in x's original shape); sets ``dW = x^T . dout`` and ``db = sum_rows(dout)``."""
        dx = np.dot(dout, self.W.T)  # dX = dY . W^T
        self.dW = np.dot(self.x.T, dout)  # dW = X^T . dY
        self.db = np.sum(dout, axis=0)  # db = sum dY
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax output with cross-entropy loss: ``L = -sum(t * log softmax(x)) / N``; backward ``(y - t) / N``."""

    def __init__(self) -> None:
        self.loss: Optional[float] = None
        self.y: Optional[np.ndarray] = None
        self.t: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        """The mean cross-entropy of ``softmax(x)`` against ``t`` (one-hot or labels), from the logits."""
        self.t = t
        self.y = softmax(x)
        self.loss = softmax_cross_entropy(x, self.t)
        return self.loss

    def backward(self, dout: float = 1) -> np.ndarray:
        """``dx = (softmax(x) - t) / N * dout``."""
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            dx = (self.y - self.t) / batch_size
        else:
            dx = self.y.copy()
            dx[np.arange(batch_size), self.t] -= 1
            dx = dx / batch_size
        return dx * dout


class MSELoss:
    """Identity output with E = 1/(2N) * sum((y - t)**2)."""

    def __init__(self) -> None:
        self.y: Optional[np.ndarray] = None
        self.t: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        """``E = 1/(2N) * sum((x - t)**2)``; ``t`` real targets, one-hot rows or labels."""
        if t.size != x.size:
            t = np.eye(x.shape[-1], dtype=x.dtype)[t]
        self.y, self.t = x, t.reshape(x.shape)
        return mean_squared_error(self.y, self.t)

    def backward(self, dout: float = 1) -> np.ndarray:
        """``dx = (x - t) / N * dout``."""
        return (self.y - self.t) / self.y.shape[0] * dout


class HingeLoss:
    """Multiclass SVM (hinge) loss with margin 1; subgradient 1 where the margin is violated."""

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = margin
        self.s: Optional[np.ndarray] = None
        self.t: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        """Mean over rows of ``sum_{k != t} max(0, x_k - x_t + margin)``."""
        if t.size == x.size:
            t = t.reshape(x.shape).argmax(axis=1)
        self.s, self.t = x, t
        return hinge_loss(x, t, self.margin)

    def backward(self, dout: float = 1) -> np.ndarray:
        """Subgradient / N: 1 for each violated margin, minus their count at the true class."""
        n = self.s.shape[0]
        rows = np.arange(n)
        st = self.s[rows, self.t][:, None]
        active = (self.s - st + self.margin > 0).astype(self.s.dtype)
        active[rows, self.t] = 0
        active[rows, self.t] = -active.sum(axis=1)
        return active / n * dout


_ACTIVATIONS = {"relu": Relu, "sigmoid": Sigmoid, "tanh": Tanh}
_LOSSES = {"softmax": SoftmaxWithLoss, "mse": MSELoss, "hinge": HingeLoss}


# --------------------------------------------------------------------------- nets
class SimpleNet:
    """The tutorials' simpleNet: one 2x3 weight, softmax + cross-entropy."""

    def __init__(self, W: Optional[np.ndarray] = None) -> None:
        self.W = np.random.randn(2, 3) if W is None else W

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores ``x . W`` (no bias)."""
        return np.dot(x, self.W)

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        """Cross-entropy of ``softmax(x . W)`` against ``t``, from the logits."""
        z = self.predict(x)
        return softmax_cross_entropy(z, t)  # = cross_entropy_error(softmax(z), t) up to the 1e-7 guard

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """``dL/dW`` by central differences (h = 1e-4), shape (2, 3)."""
        return numerical_gradient(lambda W: self.loss(x, t), self.W)


def _init_std(weight_init_std, fan_in: int) -> float:
    """The tutorials' weight scale: 'relu'/'he' -> sqrt(2/fan_in), 'sigmoid'/'xavier' -> sqrt(1/fan_in),
    else the number given."""
    if str(weight_init_std).lower() in ("relu", "he"):
        return float(np.sqrt(2.0 / fan_in))
    if str(weight_init_std).lower() in ("sigmoid", "xavier"):
        return float(np.sqrt(1.0 / fan_in))
    return float(weight_init_std)


class MultiLayerNet:
    """Fully connected net: (Affine -> activation) * len(hidden) -> Affine -> loss layer.

    Parameters are ``W1, b1, ..., WL, bL`` in ``self.params``.
    ``weight_init`` is a float std, or 'he' (sqrt(2/n)) / 'xavier' (sqrt(1/n)) with n the fan-in.
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int,
                 activation: str = "relu", weight_init_std="relu", weight_decay_lambda: float = 0.0,
                 loss: str = "softmax", seed: Optional[int] = None, dtype=np.float64) -> None:
        self.sizes = [int(input_size)] + [int(h) for h in hidden_size_list] + [int(output_size)]
        self.activation = activation
        self.weight_decay_lambda = weight_decay_lambda
        self.loss_name = loss
        rng = np.random.default_rng(seed)
        self.params: Dict[str, np.ndarray] = {}
        for i in range(1, len(self.sizes)):
            fan_in = self.sizes[i - 1]
            scale = _init_std(weight_init_std, fan_in)
            self.params[f"W{i}"] = (scale * rng.standard_normal((fan_in, self.sizes[i]))).astype(dtype)
            self.params[f"b{i}"] = np.zeros(self.sizes[i], dtype=dtype)
        self._build()

    def _build(self) -> None:
        self.layers: "OrderedDict[str, object]" = OrderedDict()
        n = len(self.sizes) - 1
        for i in range(1, n + 1):
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i < n:
                self.layers[f"Activation_function{i}"] = _ACTIVATIONS[self.activation]()
        self.last_layer = _LOSSES[self.loss_name]()

    @property
    def n_layers(self) -> int:
        """Number of affine layers, ``len(sizes) - 1``."""
        return len(self.sizes) - 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores: the last affine output (before the loss layer), shape (N, output)."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        """Mean loss of the batch plus ``0.5 * weight_decay_lambda * sum(W**2)`` over the weights."""
        y = self.predict(x)
        weight_decay = 0.0
        for i in range(1, self.n_layers + 1):
            W = self.params[f"W{i}"]
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(W ** 2)
        return self.last_layer.forward(y, t) + weight_decay

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        """Fraction of rows whose arg-max score is the label (``t``: labels or one-hot)."""
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return float(np.sum(y == t)) / float(x.shape[0])

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray) -> Dict[str, np.ndarray]:
        """Central-difference gradient of :meth:`loss` for every parameter, ``{'W1': ..., 'b1': ...}``."""
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 (the tutorials' idiom)
        grads = {}
        for key in self.params:
            grads[key] = numerical_gradient(loss_W, self.params[key])
        return grads

    def gradient(self, x: np.ndarray, t: np.ndarray) -> Dict[str, np.ndarray]:
        """Backprop gradient of :meth:`loss` (weights get ``+ weight_decay_lambda * W``)."""
        self.loss(x, t)  # forward
        dout = self.last_layer.backward(1)  # backward
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for i in range(1, self.n_layers + 1):
            aff = self.layers[f"Affine{i}"]
            grads[f"W{i}"] = aff.dW + self.weight_decay_lambda * aff.W
            grads[f"b{i}"] = aff.db
        return grads


class TwoLayerNet(MultiLayerNet):
    """The tutorials' TwoLayerNet: Affine -> ReLU -> Affine -> SoftmaxWithLoss.

    Weights are ``weight_init_std * randn`` (default 0.01), biases zero.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int,
                 weight_init_std: float = 0.01, activation: str = "relu", seed: Optional[int] = None,
                 dtype=np.float64) -> None:
        super().__init__(input_size, [hidden_size], output_size, activation=activation,
                         weight_init_std=weight_init_std, seed=seed, dtype=dtype)


class TwoLayerNetCh4:
    """Chapter 4's two-layer net, before layers exist: sigmoid hidden layer, softmax output, and a
    hand-written ``gradient`` next to ``numerical_gradient``.

    ``params``: ``W1`` (input x hidden), ``b1``, ``W2`` (hidden x output), ``b2``; weights are
    ``weight_init_std * randn``, biases zero. ``t`` is one-hot (N, output). ``predict`` returns the
    softmax probabilities (chapter 4's form; chapter 5's nets return logits). The loss is taken from
    the logits (this module's stable form, see the module docstring), so ``gradient``'s
    ``(y - t) / N`` is its exact derivative and equals the layered :class:`TwoLayerNet` with
    ``activation='sigmoid'`` for the same weights.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, weight_init_std: float = 0.01,
                 seed: Optional[int] = None, dtype=np.float64) -> None:
        rng = np.random.default_rng(seed)
        self.params: Dict[str, np.ndarray] = {
            "W1": (weight_init_std * rng.standard_normal((input_size, hidden_size))).astype(dtype),
            "b1": np.zeros(hidden_size, dtype=dtype),
            "W2": (weight_init_std * rng.standard_normal((hidden_size, output_size))).astype(dtype),
            "b2": np.zeros(output_size, dtype=dtype),
        }

    def _logits(self, x: np.ndarray) -> np.ndarray:
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        z1 = sigmoid(np.dot(x, W1) + b1)
        return np.dot(z1, W2) + b2

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``softmax(sigmoid(x W1 + b1) W2 + b2)``, shape (N, output)."""
        return softmax(self._logits(x))

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        """Mean cross-entropy of :meth:`predict` against the one-hot ``t`` (from the logits)."""
        return softmax_cross_entropy(self._logits(x), t)

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        """Fraction of rows whose most probable class is the label (``t``: one-hot or labels)."""
        y = np.argmax(self.predict(x), axis=1)
        labels = np.argmax(t, axis=1) if t.ndim != 1 else t
        return float(np.sum(y == labels)) / float(x.shape[0])

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray) -> Dict[str, np.ndarray]:
        """Central differences (h = 1e-4) of :meth:`loss` for each parameter."""
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 (the tutorials' idiom)
        return {key: numerical_gradient(loss_W, self.params[key]) for key in ("W1", "b1", "W2", "b2")}

    def gradient(self, x: np.ndarray, t: np.ndarray) -> Dict[str, np.ndarray]:
        """The same gradient by hand (backprop written out, chapter 4's ``gradient``)."""
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        n = x.shape[0]
        a1 = np.dot(x, W1) + b1  # forward
        z1 = sigmoid(a1)
        y = softmax(np.dot(z1, W2) + b2)
        dy = (y - t) / n  # backward: softmax + cross-entropy
        grads = {"W2": np.dot(z1.T, dy), "b2": np.sum(dy, axis=0)}
        dz1 = sigmoid_grad(a1) * np.dot(dy, W2.T)  # through the sigmoid
        grads["W1"] = np.dot(x.T, dz1)
        grads["b1"] = np.sum(dz1, axis=0)
        return {k: grads[k] for k in ("W1", "b1", "W2", "b2")}


# --------------------------------------------------------------------------- optimizers
class SGD:
    """Stochastic gradient descent: ``W <- W - lr * dW``."""

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr

    def update(self, params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray]) -> None:
        """One step on every array in ``params``, in place."""
        for key in params:
            params[key] -= self.lr * grads[key]


class Momentum:
    """Momentum SGD: ``v <- momentum * v - lr * dW``; ``W <- W + v``."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads) -> None:
        """One step on every array in ``params``, in place (``v`` starts at 0)."""
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class Nesterov:
    """Nesterov momentum (the tutorials' form): ``v <- mu v - lr dW``; ``W <- W + mu^2 v - (1 + mu) lr dW``."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr, self.momentum, self.v = lr, momentum, None

    def update(self, params, grads) -> None:
        """One step on every array in ``params``, in place (``v`` starts at 0)."""
        if self.v is None:
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.v[key] *= self.momentum
            self.v[key] -= self.lr * grads[key]
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]


class AdaGrad:
    """AdaGrad: ``h <- h + dW**2``; ``W <- W - lr * dW / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr: float = 0.01) -> None:
        self.lr, self.h = lr, None

    def update(self, params, grads) -> None:
        """One step on every array in ``params``, in place (``h`` starts at 0)."""
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop:
    """RMSprop: ``h <- decay h + (1 - decay) dW**2``; ``W <- W - lr * dW / (sqrt(h) + 1e-7)``."""

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        self.lr, self.decay_rate, self.h = lr, decay_rate, None

    def update(self, params, grads) -> None:
        """One step on every array in ``params``, in place (``h`` starts at 0)."""
        if self.h is None:
            self.h = {k: np.zeros_like(v) for k, v in params.items()}
        for key in params:
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class Adam:
    """Adam (the tutorials' form): ``m += (1-b1)(dW - m)``, ``v += (1-b2)(dW**2 - v)``,
    ``W -= lr_t m / (sqrt(v) + 1e-7)`` with ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter, self.m, self.v = 0, None, None

    def update(self, params, grads) -> None:
        """One step on every array in ``params``, in place (``m``, ``v`` start at 0)."""
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


# =========================================================================== chapter 6
# The tutorials' next chapter (Dropout, Batch Normalization, MultiLayerNetExtend) in their form. The
# fast composed nets (pyfastgrad.sequential) are tested against these.
BN_EPS = 1e-6  # the tutorials' 10e-7 inside the square root


class BatchNormalization:
    """The tutorials' Batch Normalization of 2-D input (N, D), per column over the batch.

    Training (``train_flg=True``): batch statistics, and the running ones updated as
    ``running = momentum * running + (1 - momentum) * batch``; evaluation: the running ones.
    ``gamma``/``beta`` are the layer's parameters (shared with a net's ``params``), ``dgamma``/``dbeta``
    its gradients after ``backward``.
    """

    def __init__(self, gamma: np.ndarray, beta: np.ndarray, momentum: float = 0.9,
                 running_mean: Optional[np.ndarray] = None, running_var: Optional[np.ndarray] = None) -> None:
        self.gamma, self.beta, self.momentum = gamma, beta, momentum
        self.running_mean, self.running_var = running_mean, running_var
        self.batch_size = self.xc = self.xn = self.std = None
        self.dgamma = self.dbeta = None

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        """Training: normalise by the batch mean/variance and update the running statistics; eval
        (``train_flg=False``): by the running ones. ``gamma * xn + beta``."""
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1], dtype=x.dtype)
            self.running_var = np.zeros(x.shape[1], dtype=x.dtype)
        if train_flg:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc ** 2, axis=0)
            std = np.sqrt(var + BN_EPS)
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + BN_EPS)
        return self.gamma * xn + self.beta

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dx from dout through the batch normalisation (batch statistics of the last forward); sets
        ``dgamma``, ``dbeta``."""
        dbeta = dout.sum(axis=0)
        dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -np.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc += (2.0 / self.batch_size) * self.xc * dvar
        dmu = np.sum(dxc, axis=0)
        self.dgamma, self.dbeta = dgamma, dbeta
        return dxc - dmu / self.batch_size


class Dropout:
    """The tutorials' Dropout: training keeps each unit with probability ``1 - dropout_ratio``
    (``x * mask``), evaluation scales by ``1 - dropout_ratio``. ``rng``: a numpy Generator for the
    masks (default: ``np.random``'s global state, as the tutorials)."""

    def __init__(self, dropout_ratio: float = 0.5, rng: Optional[np.random.Generator] = None) -> None:
        self.dropout_ratio = dropout_ratio
        self.rng = rng
        self.mask: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        """Training: zero each unit with probability ``dropout_ratio`` (mask kept for backward); eval:
        ``x * (1 - dropout_ratio)`` (the tutorials' scaling)."""
        if train_flg:
            u = np.random.rand(*x.shape) if self.rng is None else self.rng.random(x.shape)
            self.mask = u > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout * mask``."""
        return dout * self.mask


class MultiLayerNetExtend:
    """The tutorials' MultiLayerNetExtend: MultiLayerNet with optional Batch Normalization after each
    hidden Affine (``gamma{i}``, ``beta{i}`` in ``params``) and Dropout after each hidden activation.

    ``predict(x, train_flg=False)``, ``loss(x, t, train_flg=False)``; ``gradient`` and
    ``numerical_gradient`` use the training mode (as the tutorials). ``seed`` seeds the weights and
    the dropout masks (``np.random`` when None).
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int,
                 activation: str = "relu", weight_init_std="relu", weight_decay_lambda: float = 0.0,
                 use_dropout: bool = False, dropout_ration: float = 0.5, use_batchnorm: bool = False,
                 seed: Optional[int] = None, dtype=np.float64) -> None:
        self.sizes = [int(input_size)] + [int(h) for h in hidden_size_list] + [int(output_size)]
        self.activation, self.weight_decay_lambda = activation, weight_decay_lambda
        self.use_dropout, self.use_batchnorm = use_dropout, use_batchnorm
        rng = np.random.default_rng(seed)
        drop_rng = None if seed is None else np.random.default_rng(seed + 1)
        self.params: Dict[str, np.ndarray] = {}
        n = len(self.sizes) - 1
        self.layers: "OrderedDict[str, object]" = OrderedDict()
        for i in range(1, n + 1):
            fan_in = self.sizes[i - 1]
            scale = _init_std(weight_init_std, fan_in)
            self.params[f"W{i}"] = (scale * rng.standard_normal((fan_in, self.sizes[i]))).astype(dtype)
            self.params[f"b{i}"] = np.zeros(self.sizes[i], dtype=dtype)
            self.layers[f"Affine{i}"] = Affine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i == n:
                break
            if use_batchnorm:
                self.params[f"gamma{i}"] = np.ones(self.sizes[i], dtype=dtype)
                self.params[f"beta{i}"] = np.zeros(self.sizes[i], dtype=dtype)
                self.layers[f"BatchNorm{i}"] = BatchNormalization(self.params[f"gamma{i}"], self.params[f"beta{i}"])
            self.layers[f"Activation_function{i}"] = _ACTIVATIONS[activation]()
            if use_dropout:
                self.layers[f"Dropout{i}"] = Dropout(dropout_ration, rng=drop_rng)
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x: np.ndarray, train_flg: bool = False) -> np.ndarray:
        """Forward pass to the scores (``train_flg`` selects Dropout/BatchNorm training behaviour)."""
        for layer in self.layers.values():
            x = layer.forward(x, train_flg) if isinstance(layer, (Dropout, BatchNormalization)) else layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray, train_flg: bool = False) -> float:
        """Data loss of the last layer plus ``0.5 * weight_decay_lambda * sum(W**2)`` over the weights."""
        y = self.predict(x, train_flg)
        wd = sum(0.5 * self.weight_decay_lambda * np.sum(self.params[f"W{i}"] ** 2)
                 for i in range(1, len(self.sizes)))
        return self.last_layer.forward(y, t) + wd

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> float:
        """Share of rows whose argmax score equals the label (eval mode)."""
        y = np.argmax(self.predict(x, train_flg=False), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return float(np.sum(y == t)) / float(x.shape[0])

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray) -> Dict[str, np.ndarray]:
        """Central differences of ``loss(x, t, train_flg=True)`` for every parameter (W, b, gamma, beta)."""
        loss_W = lambda W: self.loss(x, t, train_flg=True)  # noqa: E731
        return {key: numerical_gradient(loss_W, self.params[key]) for key in self.params}

    def gradient(self, x: np.ndarray, t: np.ndarray) -> Dict[str, np.ndarray]:
        """Backpropagation through every layer (weight decay added to dW); same keys as ``params``."""
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        grads = {}
        for i in range(1, len(self.sizes)):
            aff = self.layers[f"Affine{i}"]
            grads[f"W{i}"] = aff.dW + self.weight_decay_lambda * aff.W
            grads[f"b{i}"] = aff.db
            if self.use_batchnorm and i != len(self.sizes) - 1:
                grads[f"gamma{i}"] = self.layers[f"BatchNorm{i}"].dgamma
                grads[f"beta{i}"] = self.layers[f"BatchNorm{i}"].dbeta
        return grads


__all__ += ["BatchNormalization", "Dropout", "LeakyRelu", "Identity", "SigmoidWithLoss",
            "sigmoid_cross_entropy", "MultiLayerNetExtend"]


# =========================================================================== Extensions beyond the tutorials
# Not the book's code: pyfastgrad's additions, written in the same style. Earlier in this file the
# additions are the tanh activation (Tanh), the multiclass hinge loss (hinge_loss, HingeLoss), the
# stable log-softmax loss from the logits (softmax_cross_entropy, used by SoftmaxWithLoss) and
# Nesterov's tutorial form; each says so in its docstring.
class LeakyRelu:
    """Not the book's: max(x, alpha * x) (slope ``alpha`` for x <= 0)."""

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = alpha
        self.mask: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` where ``x > 0``, else ``alpha * x``."""
        self.mask = x <= 0
        return np.where(self.mask, self.alpha * x, x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` where the input was ``> 0``, else ``alpha * dout``."""
        return np.where(self.mask, self.alpha * dout, dout)


class Identity:
    """Not the book's: the identity activation (a linear layer's output as is)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Returns ``x`` unchanged (a linear output)."""
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Returns ``dout`` unchanged."""
        return dout


def sigmoid_cross_entropy(z: np.ndarray, t: np.ndarray) -> float:
    """Binary cross-entropy of sigmoid(z) against t in [0, 1], from the logits z (stable form
    ``max(z, 0) - z t + log(1 + exp(-abs(z)))``), summed over outputs and averaged over the batch."""
    t = t.reshape(z.shape)
    return float(np.sum(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))) / z.shape[0])


class SigmoidWithLoss:
    """Not the book's: sigmoid output with binary cross-entropy (from the logits); backward
    (sigmoid(z) - t) / N."""

    def __init__(self) -> None:
        self.y: Optional[np.ndarray] = None
        self.t: Optional[np.ndarray] = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        """Binary cross-entropy of ``sigmoid(x)`` against 0/1 targets ``t``, averaged over the batch."""
        self.t = t.reshape(x.shape).astype(x.dtype)
        self.y = sigmoid(x)
        return sigmoid_cross_entropy(x, self.t)

    def backward(self, dout: float = 1) -> np.ndarray:
        """``(sigmoid(x) - t) / N * dout``."""
        return (self.y - self.t) / self.y.shape[0] * dout


_ACTIVATIONS["leaky_relu"] = LeakyRelu  # slope 0.01 (pyfastgrad.spec.LEAKY_SLOPE, PyTorch's default)
