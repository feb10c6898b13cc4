"""The house's layering: the public modules reach the backends only through the door
(pyfastgrad._backends), the backends never import a public module, nothing closes an import
cycle at run time, and backend 'numpy' runs no compiled code."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyfastgrad as pfg

PKG = Path(pfg.__file__).parent
PUBLIC = {"nets", "train", "gradient", "gradcheck", "functions", "optimizers", "sequential", "search", "bench",
          "__main__", "layers", "schedules", "__init__"}
BACKEND_MODULES = {"_backends.numpy", "_backends.numba", "_backends.cpp"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts]
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set:
    """pyfastgrad-relative names of the modules ``path`` imports (anywhere in the file)."""
    mod = _module_name(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("pyfastgrad"):
                target = node.module[len("pyfastgrad."):] if node.module != "pyfastgrad" else ""
            else:
                continue
            out.add(target)
            for alias in node.names:  # from . import nets / from ._backends import numpy
                out.add(f"{target}.{alias.name}" if target else alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pyfastgrad."):
                    out.add(alias.name[len("pyfastgrad."):])
    return out


def _graph() -> dict:
    return {_module_name(p): _imports(p) for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}


def test_public_modules_import_no_backend_module():
    g = _graph()
    for mod, imps in g.items():
        if mod in PUBLIC or mod.split(".")[0] in ("datasets",):
            bad = imps & BACKEND_MODULES
            assert not bad, f"{mod} imports {bad}: go through the door (pyfastgrad._backends.kernels)"


def test_backends_import_no_public_module():
    g = _graph()
    for mod, imps in g.items():
        if mod.startswith("_backends"):
            bad = {i for i in imps if i.split(".")[0] in PUBLIC}
            assert not bad, f"{mod} imports public modules {bad}"


def test_backends_do_not_import_each_other_except_the_spec():
    """numba and cpp may use numpy's code (the specification); nobody else imports a backend."""
    g = _graph()
    for mod, imps in g.items():
        users = imps & BACKEND_MODULES
        if mod in ("_backends.numba", "_backends.cpp"):
            assert users <= {"_backends.numpy"}, (mod, users)
        elif mod not in ("_backends", "_threads", "_backends.protocols"):
            assert not users, (mod, users)


def test_module_graph_has_no_cycle_at_import_time():
    """Top-level imports only (function-level ones run later): no cycle among pyfastgrad's modules."""
    top = {}
    for p in PKG.rglob("*.py"):
        if "__pycache__" in p.parts:
            continue
        tree = ast.parse(p.read_text())
        body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        mod = _module_name(p)
        only = ast.Module(body=body, type_ignores=[])
        tmp = _imports_of_tree(only, p)
        top[mod] = {i for i in tmp if i in {_module_name(q) for q in PKG.rglob("*.py")}}
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in seen:
            return
        stack.append(m)
        for d in top.get(m, ()):
            if d != m and not (m == "" or d == ""):
                visit(d)
        stack.pop()
        seen.add(m)

    for m in top:
        visit(m)


def _imports_of_tree(tree, path):
    mod = _module_name(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            target = ".".join(base + ([node.module] if node.module else []))
            out.add(target)
            for alias in node.names:
                out.add(f"{target}.{alias.name}" if target else alias.name)
    # a package's submodule imports its package's __init__ first: that edge is implicit, not a cycle
    return {o for o in out if not (mod.startswith(o + ".") or o == "")}


ORDERS = [
    ["pyfastgrad._backends.cpp", "pyfastgrad"],
    ["pyfastgrad._sparse", "pyfastgrad._validate", "pyfastgrad._backends.numba"],
    ["pyfastgrad._validate", "pyfastgrad.train"],
    ["pyfastgrad.optimizers", "pyfastgrad.nets", "pyfastgrad._backends.numpy"],
    ["pyfastgrad._layer_program", "pyfastgrad.sequential", "pyfastgrad.spec"],
    ["pyfastgrad.spec", "pyfastgrad._backends", "pyfastgrad._threads", "pyfastgrad.gradcheck"],
]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: o[0].rsplit(".", 1)[-1])
def test_every_module_imports_in_a_fresh_interpreter_in_several_orders(order):
    mods = sorted("pyfastgrad." + _module_name(p) if _module_name(p) != "__init__" else "pyfastgrad"
                  for p in PKG.rglob("*.py") if "__pycache__" not in p.parts and p.name != "__main__.py")
    mods = [m.replace("pyfastgrad.__init__", "pyfastgrad") for m in mods]
    code = ("import importlib, sys\n"
            f"for m in {order!r} + {mods!r}:\n"
            "    importlib.import_module(m)\n"
            "import pyfastgrad\n"
            "pyfastgrad.TwoLayerNet(3, 4, 2, seed=0).loss([[1.0, 2.0, 3.0]], [1])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


class _NoCpp:
    """Stands for the extension: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"backend 'numpy' called the C++ extension: _core.{name}")


def test_numpy_backend_runs_no_cpp(monkeypatch):
    if pfg.backends()["cpp"] != "available":
        pytest.skip("C++ extension not built")
    from pyfastgrad._backends import kernels
    monkeypatch.setattr(kernels("cpp"), "_core", _NoCpp())
    rng = np.random.default_rng(0)
    x = rng.random((120, 20))
    x[x < 0.8] = 0.0  # mostly zeros: fit would build CSR rows on cpp
    t = rng.integers(0, 3, 120)
    with pfg.use_backend("numpy"):
        net = pfg.MultiLayerNet(20, [8], 3, seed=1)
        h = pfg.fit(net, x, t, epochs=2, batch_size=30, lr=0.1, progress=False, x_test=x[:20], t_test=t[:20])
        assert np.isfinite(h.loss).all()
        g = net.gradient(x[:10], t[:10])
        assert np.isfinite(g["W1"]).all()
        assert net.gradient_check(x[:5], t[:5]).passed
        ng = pfg.numerical_gradient(lambda w: float(np.sum(w ** 2)), np.array([1.0, -2.0]))
        assert np.allclose(ng, [2.0, -4.0])
        opt = pfg.Adam()
        opt.update(net.params, net.gradient(x[:10], t[:10]))
        assert pfg.softmax(np.array([[1.0, 2.0]])).shape == (1, 2)
        seq = pfg.MultiLayerNetExtend(20, [6], 3, use_batchnorm=True, seed=0)
        seq.loss(x[:10], t[:10])
