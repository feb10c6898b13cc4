"""Backend selection and graceful degradation."""
import os

import pytest

import pyfastgrad
from pyfastgrad import _backends as _backend


def test_backends_report():
    info = pyfastgrad.backends()
    assert list(info) == ["cpp", "numba", "numpy"]
    assert info["numpy"] == "available"
    for status in info.values():
        assert status == "available" or status.startswith("unavailable: ")


@pytest.mark.skipif(os.environ.get("PYFASTGRAD_REQUIRE_CPP") != "1", reason="only CI insists on the extension")
def test_cpp_extension_built():
    assert pyfastgrad.backends()["cpp"] == "available", pyfastgrad.backends()["cpp"]
    assert pyfastgrad.backends()["numba"] == "available", pyfastgrad.backends()["numba"]
    from pyfastgrad._backends import cpp as _cpp_kernels
    info = _cpp_kernels.blas_info()
    assert "OpenBLAS" in info["config"]


def test_set_and_use_backend():
    before = pyfastgrad.get_backend()
    try:
        pyfastgrad.set_backend("numpy")
        assert pyfastgrad.get_backend() == "numpy"
        for name in pyfastgrad.available_backends():
            with pyfastgrad.use_backend(name):
                assert pyfastgrad.get_backend() == name
            assert pyfastgrad.get_backend() == "numpy"
    finally:
        pyfastgrad.set_backend(before)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        pyfastgrad.set_backend("fortran")
    with pytest.raises(ValueError, match="unknown backend"):
        with pyfastgrad.use_backend("cuda"):
            pass


def test_default_prefers_fastest(monkeypatch):
    monkeypatch.delenv("PYFASTGRAD_BACKEND", raising=False)
    assert _backend._default() == pyfastgrad.available_backends()[0]


def test_env_variable(monkeypatch):
    monkeypatch.setenv("PYFASTGRAD_BACKEND", "numpy")
    assert _backend._default() == "numpy"
    monkeypatch.setenv("PYFASTGRAD_BACKEND", "nope")
    with pytest.raises(ValueError):
        _backend._default()


def test_missing_extension_falls_back_with_warning(monkeypatch):
    """If _core failed to import, the package still works on numba/numpy and says why."""
    monkeypatch.delenv("PYFASTGRAD_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "_loaded", {k: v for k, v in _backend._loaded.items() if k != "cpp"})
    monkeypatch.setattr(_backend, "_errors", {**_backend._errors, "cpp": "ImportError: simulated"})
    monkeypatch.setattr(_backend, "_warned", False)
    with pytest.warns(RuntimeWarning, match="simulated"):
        name = _backend._default()
    assert name in ("numba", "numpy")
    assert pyfastgrad.backends()["cpp"] == "unavailable: ImportError: simulated"
    with pytest.raises(RuntimeError, match="unavailable"):
        pyfastgrad.set_backend("cpp")
