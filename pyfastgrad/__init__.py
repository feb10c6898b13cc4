"""pyfastgrad: neural networks from scratch, the tutorials' way, fast.

Numerical gradients, backpropagation and mini-batch SGD on MNIST with the
classic API (``TwoLayerNet``, ``numerical_gradient``, ``params['W1']``), backed by
C++ (pybind11 + OpenBLAS + OpenMP) or numba kernels, checked against the
pure-numpy reference in :mod:`pyfastgrad.reference`.
"""

__version__ = "0.1.0"  # first: the extension loader compares it with the installed copy

from . import (
    gradcheck,  # noqa: F401  (pyfastgrad.gradcheck, the submodule, is public)
    layers,
    reference,
    schedules,
)
from . import optimizers as _optimizers
from ._backends import available_backends, backends, get_backend, set_backend, use_backend
from ._threads import get_num_threads, set_num_threads
from .functions import cross_entropy_error, hinge_loss, mean_squared_error, relu, sigmoid, softmax, tanh
from .gradient import GradientCheckResult, check_gradient, gradient_check, gradient_descent, numerical_gradient
from .nets import MultiLayerNet, Net, SimpleNet, TwoLayerNet, load_net
from .optimizers import SGD, AdaGrad, Adam, AdamW, Momentum, Nesterov, RMSprop, make_optimizer
from .sequential import MultiLayerNetExtend, Sequential
from .train import History, Trainer, fit

__all__ = [
    "backends",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "reference",
    "sigmoid",
    "relu",
    "tanh",
    "softmax",
    "mean_squared_error",
    "cross_entropy_error",
    "hinge_loss",
    "numerical_gradient",
    "gradient_descent",
    "gradient_check",
    "check_gradient",
    "GradientCheckResult",
    "Net",
    "SimpleNet",
    "TwoLayerNet",
    "MultiLayerNet",
    "load_net",
    "Sequential",
    "MultiLayerNetExtend",
    "layers",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "make_optimizer",
    "schedules",
    "History",
    "Trainer",
    "fit",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]

# hyper-parameter search (the module stays importable as pyfastgrad.search)
from .search import Choice, LogUniform, SearchResult, Uniform, hyperparameter_search  # noqa: E402

__all__ += ["hyperparameter_search", "SearchResult", "LogUniform", "Uniform", "Choice"]

# optimizers made from registry entries (pyfastgrad.spec.OPTIMIZERS) without a hand-written class
for _name in _optimizers.__all__:
    if _name not in globals():
        globals()[_name] = getattr(_optimizers, _name)
        __all__.append(_name)
