"""The peers the kernels are compared with: PyTorch eager and JAX jit, on the same parameters."""
from __future__ import annotations

import os
from typing import Any, List, Sequence, Tuple

import numpy as np

__all__ = ["import_torch", "import_jax", "torch_mlp", "jax_mlp", "layers_of"]


def layers_of(sizes: Sequence[int], theta: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``[(W1, b1), (W2, b2), ...]`` of the flat parameter vector ``theta`` of a ``sizes`` net, read
    through the public ``Net.params`` (copies, so the peers own their parameters)."""
    import pyfastgrad as pfg
    net = pfg.Net(list(sizes), dtype=theta.dtype, backend="numpy")
    net.theta[:] = theta
    return [(net.params[f"W{i}"].copy(), net.params[f"b{i}"].copy()) for i in range(1, len(sizes))]

def import_torch() -> Tuple[Any, str]:
    try:
        import torch
        return torch, torch.__version__
    except Exception as exc:
        return None, f"unavailable: {type(exc).__name__}: {exc}"


def import_jax() -> Tuple[Any, str]:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU benchmark: do not probe accelerators
    try:
        import jax
        jax.config.update("jax_enable_x64", True)  # float64 rows; float32 arrays stay float32
        return jax, jax.__version__
    except Exception as exc:
        return None, f"unavailable: {type(exc).__name__}: {exc}"


def torch_mlp(torch: Any, sizes: Sequence[int], theta: np.ndarray):
    """Leaf tensors (W, b) per layer holding a copy of ``theta``, and the forward function."""
    params = []
    for W0, b0 in layers_of(sizes, theta):
        W = torch.tensor(W0, requires_grad=True)
        b = torch.tensor(b0, requires_grad=True)
        params.append((W, b))
    n = len(params)

    def forward(x):
        h = x
        for i, (W, b) in enumerate(params):
            h = torch.addmm(b, h, W)  # b + h @ W in one BLAS call
            if i < n - 1:
                h = torch.relu(h)
        return h

    def reset(theta_new: np.ndarray) -> None:
        with torch.no_grad():
            for (W, b), (W0, b0) in zip(params, layers_of(sizes, theta_new)):
                W.copy_(torch.from_numpy(W0))
                b.copy_(torch.from_numpy(b0))

    flat = [p for pair in params for p in pair]
    return flat, forward, reset


def jax_mlp(jax: Any, sizes: Sequence[int], theta: np.ndarray):
    """Parameters as a tuple of jax arrays and the loss (mean softmax cross-entropy, one-hot t)."""
    jnp = jax.numpy
    params = tuple(jnp.asarray(a) for layer in layers_of(sizes, theta) for a in layer)
    n = len(sizes) - 1

    def loss(p, x, t):
        h = x
        for i in range(n):
            h = h @ p[2 * i] + p[2 * i + 1]
            if i < n - 1:
                h = jnp.maximum(h, 0)
        return -jnp.sum(t * jax.nn.log_softmax(h, axis=1)) / x.shape[0]

    return params, loss


