"""Finding the compiled extension ``pyfastgrad._core``.

It normally sits next to these files (a wheel install, an editable or in-place build). When
pyfastgrad is imported from a source checkout that was not built in place -- typically
``python -m pyfastgrad ...`` run from the repository root after ``pip install .``, which puts the
checkout first on ``sys.path`` -- the checkout shadows the installed package and its directory
has no ``_core``. Then the ``_core`` of the installed distribution is loaded instead, provided
it is the same version and built for this interpreter; the Python modules still come from the
checkout. Otherwise the ImportError says, in one line, how to fix it (run from another
directory, or build in place with ``pip install -e .``).

``import scipy_openblas32`` must run before :func:`load_core` (``_backends/cpp.py`` does it): the
extension links to that OpenBLAS and has no rpath to it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Tuple

__all__ = ["load_core", "core_origin", "shadow_problem"]

_PKG = __name__.rpartition(".")[0]  # "pyfastgrad"
_NAME = _PKG + "._core"

_origin: Optional[str] = None  # where _core came from, when not from next to these files
_problem: Optional[str] = None  # the one-line fix, when an installed copy exists but cannot be used


def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def _is_source_tree(here: Path) -> bool:
    root = here.parent
    return (root / "pyproject.toml").is_file() and (root / "csrc").is_dir()


def _installed_cores(here: Path) -> Tuple[Optional[str], List[Path]]:
    """(installed version, its ``_core`` files for this interpreter) of the pyfastgrad
    distribution that is not this directory; (None, []) when there is none."""
    from importlib import metadata

    try:
        dist = metadata.distribution(_PKG)
    except metadata.PackageNotFoundError:
        return None, []
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    found = []
    for f in dist.files or []:
        parts = f.parts
        if len(parts) == 2 and parts[0] == _PKG and parts[1].startswith("_core.") \
                and parts[1][len("_core"):] in suffixes:
            path = Path(str(dist.locate_file(f))).resolve()
            if path.is_file() and path.parent != here:
                found.append(path)
    return dist.version, found


def load_core() -> ModuleType:
    """Import ``pyfastgrad._core``: from next to the package, else from the installed copy.

    Raises
    ------
    ImportError
        Neither is usable; the message ends with the one-line fix.
    """
    global _origin, _problem
    try:
        return importlib.import_module(_NAME)
    except ModuleNotFoundError as exc:
        if exc.name != _NAME:  # something the extension needs is missing: that is the real error
            raise
    here = _package_dir()
    pkg = sys.modules[_PKG]
    version = getattr(pkg, "__version__", None)
    installed_version, cores = _installed_cores(here)
    source = _is_source_tree(here)
    where = f"the source tree {here.parent}" if source else str(here)
    if cores and installed_version == version:
        spec = importlib.util.spec_from_file_location(_NAME, cores[0])
        if spec is not None and spec.loader is not None:
            mod = importlib.util.module_from_spec(spec)
            sys.modules[_NAME] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(_NAME, None)
                raise
            pkg._core = mod
            _origin = str(cores[0])
            return mod
    if cores:
        _problem = (f"pyfastgrad is imported from {where}, which has no compiled extension, and the "
                    f"installed pyfastgrad {installed_version} ({cores[0].parent}) is not the same version "
                    f"({version}); fix: run from another directory, or build in place with `pip install -e .`")
        raise ImportError(_problem, name=_NAME)
    if source:
        raise ImportError(f"the C++ extension is not built in {where} and no installed pyfastgrad has it; "
                          "fix: `pip install .` (then run from another directory) or `pip install -e .`",
                          name=_NAME)
    raise ImportError(f"pyfastgrad {version} at {here} was installed without its C++ extension (no C++ "
                      "compiler when it was built?); fix: install a C++17 compiler and reinstall pyfastgrad",
                      name=_NAME)


def core_origin() -> Optional[str]:
    """The file ``_core`` was loaded from when it came from the installed copy (the package was
    imported from a source tree); None when it sits next to the package (or is not loaded)."""
    return _origin


def shadow_problem() -> Optional[str]:
    """The one-line fix when a source tree shadows an installed copy whose extension cannot be used."""
    return _problem
