"""Every public function, class, method and property of the documented modules has a docstring
(the API reference in docs/api is generated from them)."""
import importlib
import inspect

import pytest

MODULES = ["pyfastgrad.functions", "pyfastgrad.gradient", "pyfastgrad.gradcheck", "pyfastgrad.nets",
           "pyfastgrad.optimizers", "pyfastgrad.schedules", "pyfastgrad.train", "pyfastgrad.search",
           "pyfastgrad.reference", "pyfastgrad.datasets.mnist", "pyfastgrad.datasets.cifar10",
           "pyfastgrad.datasets.synthetic", "pyfastgrad._backends", "pyfastgrad._threads"]


def _undocumented(modname):
    mod = importlib.import_module(modname)
    missing = [] if (mod.__doc__ or "").strip() else [modname]
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != modname:
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(f"{modname}.{name}")
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    member = member.fget
                if (inspect.isfunction(member)) and not (member.__doc__ or "").strip():
                    missing.append(f"{modname}.{name}.{attr}")
    return missing


@pytest.mark.parametrize("modname", MODULES)
def test_every_public_object_has_a_docstring(modname):
    assert _undocumented(modname) == []


def test_the_check_sees_a_missing_docstring(monkeypatch):
    import pyfastgrad.schedules as s
    monkeypatch.setattr(s.Cosine.factor, "__doc__", None)
    assert _undocumented("pyfastgrad.schedules") == ["pyfastgrad.schedules.Cosine.factor"]


def test_every_top_level_name_has_a_docstring():
    import pyfastgrad
    missing = [n for n in pyfastgrad.__all__ if callable(getattr(pyfastgrad, n))
               and not (getattr(pyfastgrad, n).__doc__ or "").strip()]
    assert missing == []
