"""Layers with ``forward``/``backward`` side by side, the tutorials' way.

These are the reference implementations (numpy, whose ``np.dot`` is already a BLAS
call). For speed, the nets in :mod:`pyfastgrad.nets` run a whole forward+backward
of a batch in one C++/numba call instead of layer by layer.

L2 weight decay convention: loss ``+ 0.5 * lambda * sum(W**2)``, gradient ``lambda * W``.
"""
from .reference import Affine, HingeLoss, MSELoss, Relu, Sigmoid, SoftmaxWithLoss, Tanh

__all__ = ["Affine", "Relu", "Sigmoid", "Tanh", "SoftmaxWithLoss", "MSELoss", "HingeLoss"]
