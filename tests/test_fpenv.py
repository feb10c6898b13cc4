"""Subnormal optimizer state: the fast backends set decaying state below the normal range to zero (Intel
cores take ~100 cycles per operation on a subnormal) and agree with the reference everywhere else."""
from __future__ import annotations

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad._backends import kernels
from pyfastgrad._sparse import CsrRows

from _helpers import FAST_BACKENDS, TOL, normwise

# steps of zero gradient after one of ones until 0.9^k * lr sits below the normal range but above 0
DECAY_STEPS = {np.float32: 820, np.float64: 6720}


def subnormal(a):
    a = np.asarray(a)
    return (a != 0) & (np.abs(a) < np.finfo(a.dtype).tiny)


def decay_run(backend, dtype, opt_cls=pfg.Momentum, **kw):
    """One step of gradients from 1 to 1000, then DECAY_STEPS of gradient 0: the state decays by 0.9 a
    step, the smaller part of it through the subnormals."""
    params = {"W": np.zeros((4, 3), dtype), "b": np.zeros(3, dtype)}
    g = np.logspace(0, 3, 15).astype(dtype)
    ones = {"W": g[:12].reshape(4, 3), "b": g[12:]}
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    opt = opt_cls(backend=backend, **kw)
    opt.update(params, ones)
    for _ in range(DECAY_STEPS[dtype]):
        opt.update(params, zeros)
    return params, opt.state_dict()["state"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("opt_cls,kw", [(pfg.Momentum, {"lr": 0.01}), (pfg.Nesterov, {"lr": 0.01}),
                                        (pfg.Adam, {"lr": 0.001, "beta2": 0.9})])
def test_decaying_optimizer_state_flushes_to_zero(backend, dtype, opt_cls, kw):
    ref_p, ref_s = decay_run("numpy", dtype, opt_cls, **kw)
    p, s = decay_run(backend, dtype, opt_cls, **kw)
    assert subnormal(ref_s).any()  # the reference keeps IEEE subnormals ...
    assert not subnormal(s).any()  # ... the fast backends' state is zero there
    assert np.all(s[subnormal(ref_s)] == 0)
    normal = ~subnormal(ref_s)
    assert normwise(s[normal], ref_s[normal]) <= TOL[dtype]
    for k in ref_p:
        assert normwise(p[k], ref_p[k]) <= TOL[dtype]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_csr_steps_flush_the_first_layers_velocity(backend):
    """fit's CSR steps: input column 0 is nonzero in the first batch only, so W0's row 0 has
    velocity from step 1 and a zero gradient after; it flushes to zero instead of decaying through the
    subnormals (as it does in the reference's dense steps)."""
    rng = np.random.default_rng(0)
    n, d, steps = 64, 40, DECAY_STEPS[np.float32]
    X = (rng.random((n, d)) * (rng.random((n, d)) < 0.2)).astype(np.float32)
    X[:, 0] = 0.0
    X[0, 0] = 1.0
    T = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    idx = np.concatenate([np.arange(8)[None], 8 + rng.integers(0, n - 8, size=(steps, 8))]).astype(np.int64)
    hyper = np.array([0.05, 0.9, 0.0])
    out = {}
    for b, data in (("numpy", X), (backend, CsrRows.from_dense(X))):
        m = kernels(b).Mlp([d, 16, 3], "relu", "softmax", np.float32)
        theta = np.random.default_rng(1).standard_normal(d * 16 + 16 + 16 * 3 + 3).astype(np.float32) * 0.3
        s1, s2 = np.zeros_like(theta), np.zeros_like(theta)
        losses = m.train_steps(theta, data, T, idx, 0.0, "momentum", hyper, s1, s2, 0)
        assert np.isfinite(losses).all()
        out[b] = theta, s1
    (ref_t, ref_v), (t, v) = out["numpy"], out[backend]
    assert subnormal(ref_v[:16]).any() and not subnormal(v).any()
    assert np.all(v[:16][subnormal(ref_v[:16])] == 0)
    assert normwise(t, ref_t) <= 1e-4
