"""The registry (pyfastgrad.spec) is the one list of kinds: the compiled enums match it, every
backend takes its codes from it, and an unknown kind raises everywhere (no branch stands for "the
last kind")."""
import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import spec
from pyfastgrad._backends import kernels
from pyfastgrad._backends import numba as nbk
from pyfastgrad._backends import numpy as npk


def test_registry_is_consistent():
    for table in (spec.ACTIVATIONS, spec.LOSSES, spec.OPTIMIZERS):
        assert [e.code for e in table] == list(range(len(table)))  # codes index the C++ name tables
        assert len({e.name for e in table}) == len(table)
    assert spec.HYPER_SLOTS == ("lr", "a", "b", "eps", "weight_decay", "style", "max_norm")
    for o in spec.OPTIMIZERS:
        assert o.n_states in (0, 1, 2)
        assert {h.slot for h in o.hyper} <= set(spec.HYPER_SLOTS)
        assert len({h.slot for h in o.hyper}) == len(o.hyper)
    assert spec.n_params([4, 5, 3]) == 4 * 5 + 5 + 5 * 3 + 3
    sl = spec.layer_slices([4, 5, 3])
    assert sl[1] == (slice(25, 40), (5, 3), slice(40, 43))


def test_cpp_enums_match_the_registry():
    if pfg.backends()["cpp"] != "available":
        pytest.skip("C++ extension not built")
    c = kernels("cpp")._core._spec()
    assert c["act"] == {a.name: a.code for a in spec.ACTIVATIONS if a.mlp}
    assert c["loss"] == {x.name: x.code for x in spec.LOSSES if x.mlp}
    assert c["layer_act"] == spec.ACT_CODE
    assert c["opt"] == spec.OPT_CODE
    assert c["opt_states"] == spec.N_STATES
    assert c["opt_bias_corrected"] == {o.name: o.bias_corrected for o in spec.OPTIMIZERS}
    assert c["opt_decoupled_decay"] == {o.name: o.decoupled_decay for o in spec.OPTIMIZERS}
    assert c["hyper_len"] == spec.HYPER_LEN


def test_public_lists_come_from_the_registry():
    assert pfg.layers.ACTIVATION_KINDS == spec.LAYER_ACTIVATIONS
    assert pfg.layers.LOSS_KINDS == spec.LAYER_LOSSES
    from pyfastgrad.optimizers import _BY_NAME
    assert tuple(_BY_NAME) == spec.OPTIMIZER_NAMES
    for o in spec.OPTIMIZERS:
        cls = getattr(pfg, o.cls)
        assert cls.kind == o.name and cls.n_states == o.n_states
        assert cls().lr == o.lr


@pytest.mark.parametrize("backend", pfg.available_backends())
def test_unknown_kinds_raise(backend):
    k = kernels(backend)
    with pytest.raises(ValueError, match="activation"):
        k.Mlp([3, 2, 2], "gelu", "softmax", np.float64)
    with pytest.raises(ValueError, match="loss"):
        k.Mlp([3, 2, 2], "relu", "l1", np.float64)
    theta, g = np.zeros(4), np.ones(4)
    with pytest.raises(ValueError, match="optimizer"):
        k.opt_update("lion", theta, g, theta.copy(), theta.copy(), np.array([0.1, 0.9, 0.99]), 1)
    with pytest.raises(ValueError, match="activation code"):
        k.act_forward(99, 0.0, np.zeros((2, 2)))


def test_jitted_and_numpy_kernels_raise_on_unknown_codes():
    """Below the name checks: a code that is in no branch raises, it is not taken for the last kind."""
    z = np.zeros((2, 3))
    with pytest.raises(ValueError):
        nbk._activate(7, z, z.copy())
    with pytest.raises(ValueError):
        nbk._act64(7, 0.5)
    with pytest.raises(ValueError):
        nbk._opt_update(len(spec.OPTIMIZERS), np.zeros(3), np.ones(3), np.zeros(3), np.zeros(3),
                        spec.full_hyper([0.1, 0.9, 0.99]), 1)
    with pytest.raises(ValueError):
        nbk._data_loss(7, z, z, z.copy(), False)
    with pytest.raises(ValueError):
        npk._act_slope("gelu", z)
