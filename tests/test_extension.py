"""A source checkout must not shadow the installed C++ extension.

``pip install . && python -m pyfastgrad train`` run from the repository root imports the checkout
(``-m`` puts the current directory first on sys.path), whose ``pyfastgrad/`` has no ``_core``.
The package then loads the installed distribution's ``_core`` of the same version, or fails with a
one-line fix. Simulated here without building anything: a copy of the package's Python files as the
"checkout", and a fake installed distribution (dist-info + this build's ``_core``) on PYTHONPATH;
``python -S`` keeps editable-install hooks of the test environment out of the way.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

import pyfastgrad
from pyfastgrad import _extension

needs_cpp = pytest.mark.skipif(pyfastgrad.backends()["cpp"] != "available", reason="C++ extension not built")


def _layout(tmp: Path, installed_version: str):
    from pyfastgrad._backends import cpp as _cpp_kernels
    core = Path(_cpp_kernels._core.__file__)
    src = tmp / "checkout"
    shutil.copytree(Path(pyfastgrad.__file__).parent, src / "pyfastgrad",
                    ignore=shutil.ignore_patterns("_core.*.so", "_core.*.pyd", "__pycache__"))
    (src / "pyproject.toml").write_text("[project]\nname = 'pyfastgrad'\n")
    (src / "csrc").mkdir()
    site_dir = tmp / "site"
    (site_dir / "pyfastgrad").mkdir(parents=True)
    shutil.copy2(core, site_dir / "pyfastgrad" / core.name)
    libs = core.parent.parent / "pyfastgrad.libs"  # what auditwheel bundles (libgomp), found via its rpath
    if libs.is_dir():
        shutil.copytree(libs, site_dir / libs.name)
    info = site_dir / f"pyfastgrad-{installed_version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pyfastgrad\nVersion: {installed_version}\n")
    (info / "RECORD").write_text(f"pyfastgrad/{core.name},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYFASTGRAD_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site_dir), *site.getsitepackages()])
    env["PYTHONWARNINGS"] = "ignore"
    env["XDG_CACHE_HOME"] = str(tmp / "xdg")
    env["PYFASTGRAD_OFFLINE"] = "1"
    return src, site_dir, env


def _run(args, cwd, env):
    return subprocess.run([sys.executable, "-S", "-m", "pyfastgrad", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@needs_cpp
def test_checkout_uses_the_installed_extension(tmp_path):
    src, site_dir, env = _layout(tmp_path, pyfastgrad.__version__)
    r = _run(["info"], src, env)
    assert r.returncode == 0, r.stderr
    assert f"pyfastgrad {pyfastgrad.__version__} ({src / 'pyfastgrad'})" in r.stdout  # the checkout's code ...
    assert "cpp    available" in r.stdout
    assert f"the installed copy's: {site_dir / 'pyfastgrad'}" in r.stdout  # ... with the installed extension
    r = _run(["train", "--epochs", "1", "--train-size", "1000", "--no-progress"], src, env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"pyfastgrad {pyfastgrad.__version__}: backend cpp, ")


@needs_cpp
def test_checkout_with_a_different_installed_version_fails_with_the_fix(tmp_path):
    src, _, env = _layout(tmp_path, "0.0.1")
    r = _run(["train", "--epochs", "1", "--no-progress"], src, env)
    assert r.returncode == 1 and r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in r.stderr
    assert "installed pyfastgrad 0.0.1" in err[0] and "run from another directory" in err[0]
    assert "pip install -e ." in err[0]
    r = _run(["train", "--backend", "numpy", "--epochs", "1", "--train-size", "500", "--no-progress"], src, env)
    assert r.returncode == 0 and "backend numpy" in r.stdout  # another backend asked for explicitly: fine


def test_messages_when_no_usable_extension(monkeypatch, tmp_path):
    """The ImportError's one-line fix, for a checkout and for an install without a compiler."""
    import importlib

    def missing(name, *a, **k):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(importlib, "import_module", missing)
    monkeypatch.setattr(_extension, "_problem", None)
    monkeypatch.setattr(_extension, "_installed_cores", lambda here: (None, []))
    monkeypatch.setattr(_extension, "_is_source_tree", lambda here: True)
    with pytest.raises(ImportError, match=r"not built in the source tree .*fix: `pip install \.`"):
        _extension.load_core()
    monkeypatch.setattr(_extension, "_is_source_tree", lambda here: False)
    with pytest.raises(ImportError, match="installed without its C\\+\\+ extension .*C\\+\\+17 compiler"):
        _extension.load_core()
    assert _extension.shadow_problem() is None
    monkeypatch.setattr(_extension, "_installed_cores", lambda here: ("0.0.1", [tmp_path / "_core.so"]))
    with pytest.raises(ImportError, match="not the same version"):
        _extension.load_core()
    assert "pip install -e ." in _extension.shadow_problem()


def test_a_missing_dependency_of_the_extension_is_not_hidden(monkeypatch):
    import importlib

    def broken(name, *a, **k):
        raise ModuleNotFoundError("No module named 'scipy_openblas32'", name="scipy_openblas32")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="scipy_openblas32"):
        _extension.load_core()
