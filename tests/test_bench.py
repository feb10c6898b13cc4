"""Smoke test of the benchmark harness: structure and files, never speed."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pyfastgrad import bench
from pyfastgrad.__main__ import build_parser

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def repo_targets():
    """The repository's bench/targets.py (the project's speed targets; the library holds none)."""
    spec = importlib.util.spec_from_file_location("bench_targets_for_tests", BENCH_DIR / "targets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_measure_statistics():
    cfg = bench.Config.for_mode(quick=True)
    calls = []
    t = bench.measure(lambda: calls.append(1), cfg, per=2, scale=3.0)
    assert len(t.times) >= cfg.min_repeats
    assert t.number >= 1 and t.first_call_s >= 0
    st = t.stats()
    assert st["min_s"] <= st["q1_s"] <= st["median_s"] <= st["q3_s"] <= st["max_s"]
    assert len(calls) >= 2 + len(t.times) * t.number  # warm-up + estimate + the repeats


def test_measure_setup_runs_before_every_timed_call():
    cfg = bench.Config.for_mode(quick=True)
    log = []
    bench.measure(lambda: log.append("f"), cfg, setup=lambda: log.append("s"))
    assert log[0] == "s" and all(a == "s" for a, b in zip(log, log[1:]) if b == "f")


def test_mlp_flops():
    n = 100
    assert bench.mlp_flops([784, 100, 10], n) == 2 * n * 784 * 100 * 2 + 2 * n * 100 * 10 * 2 + 2 * n * 10 * 100


def test_unknown_benchmark_name(capsys):
    assert bench.main(["--quick", "--only", "no_such_bench", "--no-plot"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_quick_run_writes_results(tmp_path):
    out = tmp_path / "res"
    args = build_parser().parse_args(["bench", "--quick", "--only", "optimizer", "--out", str(out)])
    rc = bench.main(args)
    data = json.loads((out / "results.json").read_text())
    assert rc == 0, data["errors"]
    assert (out / "results.md").read_text().startswith("Benchmarks (quick run")
    try:
        import matplotlib  # noqa: F401
        assert (out / "results.png").stat().st_size > 0
    except ImportError:
        pass

    meta = data["meta"]
    assert meta["quick"] is True and meta["selected"] == ["optimizer"]
    for key in ("cpu_model", "logical_cpus", "versions", "threads", "backends"):
        assert key in meta["machine"]
    assert meta["machine"]["versions"]["numpy"] == np.__version__
    assert set(data["gemm_gflops"]) == {"float32", "float64"}

    rows = data["results"]
    opt_rows = [r for r in rows if r["bench"] == "optimizer"]
    backends = {r["backend"] for r in opt_rows}
    assert {"numpy"} <= backends
    required = {"bench", "case", "backend", "variant", "dtype", "median_s", "min_s", "max_s", "repeats",
                "times_s", "first_call_s", "ratio", "label"}
    for r in rows:
        assert required <= set(r)
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert len(r["times_s"]) == r["repeats"] >= 1
    # honesty: every ratio is the reference's median over the row's, from this run
    by_label = {r["label"]: r for r in rows}
    for r in opt_rows:
        assert r["ratio"] is not None
        base = by_label[r["ref_row"]]
        assert base["backend"] == "numpy"
        assert r["ratio"] == pytest.approx(base["median_s"] / r["median_s"])
    assert all(r["ratio"] == pytest.approx(1.0) for r in opt_rows if r["backend"] == "numpy")


def test_quick_backprop_rows_and_target(tmp_path):
    """The backprop benchmark times the cpp kernel on both of its first-layer paths and checks the
    issue's float32 target (against the 1024^3 sgemm rate; against torch too when it is installed)."""
    from pyfastgrad._backends import backends
    if backends().get("cpp") != "available":
        pytest.skip("C++ extension not built")
    out = tmp_path / "res"
    targets = repo_targets()
    rc = bench.main(["--quick", "--only", "backprop", "--no-plot", "--out", str(out)],
                    targets=targets.TARGETS, checks=targets.CHECKS)
    data = json.loads((out / "results.json").read_text())
    assert rc == 0, data["errors"]
    rows = [r for r in data["results"] if r["bench"] == "backprop" and r["backend"] == "cpp"]
    variants = {(r["variant"], r["dtype"]) for r in rows}
    for dt in ("float32", "float64"):
        assert ("kernel Mlp.loss_grad", dt) in variants and ("kernel Mlp.loss_grad(sparse=False)", dt) in variants
    (k32,) = [r for r in rows if r["variant"] == "kernel Mlp.loss_grad" and r["dtype"] == "float32"]
    assert ">=60% sgemm 1024^3" in k32["target"] and isinstance(k32["target_met"], bool)
    assert data["targets_spec"]["backprop"].startswith("cpp kernel float32")
    assert all(r["gflops"] > 0 for r in rows)


def test_library_holds_no_targets(tmp_path, capsys):
    """Without the repository's checks a run records no target: they live in bench/targets.py."""
    out = tmp_path / "res"
    assert bench.main(["--quick", "--only", "optimizer", "--no-plot", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["targets_spec"] == {} and data["targets"] == []
    assert "bench/run.py" in capsys.readouterr().out
    import re
    src = "".join(p.read_text() for p in Path(bench.__file__).parent.glob("*.py"))
    assert not re.search(r"issue|[\"'][<>]=\d", src, re.I)  # no issue numbers, no target texts like ">=2x"


def test_only_the_door_imports_private_modules():
    """Every private import of the harness is in bench/_door.py (one place to change at a refactor)."""
    import re
    for p in Path(bench.__file__).parent.glob("*.py"):
        private = re.findall(r"from \.\.(_\w+)|import pyfastgrad\._|\._mlp\(", p.read_text())
        assert not private or p.name == "_door.py", (p.name, private)


def test_images_fall_back_to_the_shipped_subset(monkeypatch, tmp_path):
    """No MNIST anywhere: the real MNIST subset shipped in the package, tiled, and said so."""
    from pyfastgrad.bench import data
    from pyfastgrad.datasets import mnist
    monkeypatch.delenv("PYFASTGRAD_DATA", raising=False)
    monkeypatch.setattr(mnist, "default_cache_dir", lambda: tmp_path / "empty-cache")
    monkeypatch.setattr(data, "_checkout_mnist", lambda: None)
    x, t, src = data.load_images()
    assert x.shape == (60000, 784) and x.dtype == np.float32 and t.shape == (60000,)
    assert "subset" in src
    sub = mnist.load_mnist_subset(dtype=np.float32)[0][0]
    np.testing.assert_array_equal(x[:sub.shape[0]], sub)  # real images, not random ones
    assert 0.1 < np.count_nonzero(x[:1000]) / x[:1000].size < 0.3  # MNIST's sparsity


def test_images_never_random(monkeypatch, tmp_path):
    """Neither MNIST nor the shipped subset: a clear error naming the fix, never random data."""
    from pyfastgrad.bench import data
    from pyfastgrad.datasets import mnist
    monkeypatch.delenv("PYFASTGRAD_DATA", raising=False)
    monkeypatch.setattr(mnist, "default_cache_dir", lambda: tmp_path / "empty-cache")
    monkeypatch.setattr(mnist, "SUBSET_DIR", tmp_path / "no-subset")
    monkeypatch.setattr(data, "_checkout_mnist", lambda: None)
    with pytest.raises(bench.BenchDataError, match="PYFASTGRAD_DATA.*reinstall pyfastgrad"):
        data.load_images()


@pytest.fixture(scope="module")
def quick_scaling(tmp_path_factory):
    """One quick scaling run (a few points), shared by the scaling tests."""
    out = tmp_path_factory.mktemp("scaling")
    rc = bench.main(["--quick", "--only", "scaling", "--out", str(out)])
    return rc, json.loads((out / "results.json").read_text()), out


def test_quick_scaling_rows_for_both_dtypes(quick_scaling):
    """Train-step rows against hidden and batch size in float32 and float64; each percentage is of the
    same run's 1024^3 gemm rate of the row's own dtype, each ratio of the same run's numpy row."""
    from pyfastgrad._backends import backends
    from pyfastgrad.bench.report import scaling_table
    rc, data, out = quick_scaling
    assert rc == 0, data["errors"]
    assert data["meta"]["selected"] == ["scaling"]
    pts = [p for p in data["scaling"] if p["kind"] == "train_step"]
    want = {"numpy fused"} | ({"cpp fused", "cpp net.train_step"} if backends().get("cpp") == "available" else set())
    for axis in ("hidden", "batch"):
        for dtype in ("float32", "float64"):
            sub = [p for p in pts if p["axis"] == axis and p["dtype"] == dtype]
            assert len({p["value"] for p in sub}) >= 2
            assert want <= {p["line"] for p in sub}
    assert {p["dtype"] for p in pts if p["axis"] == "depth"} == {"float32"}
    numpy_s = {(p["case"], p["dtype"]): p["seconds"] for p in pts if p["line"] == "numpy fused"}
    for p in pts:
        big = data["gemm_gflops"][p["dtype"]]["large"]
        assert p["seconds"] > 0 and p["gflops"] > 0
        assert p["pct_gemm"] == pytest.approx(p["gflops"] / big)
        assert p["gemm_basis"] == ("sgemm" if p["dtype"] == "float32" else "dgemm") + " 1024^3"
        assert p["x_numpy"] == pytest.approx(numpy_s[(p["case"], p["dtype"])] / p["seconds"])
        assert p["min_s"] <= p["seconds"] <= p["max_s"]
    assert len({p["value"] for p in data["scaling"] if p["kind"] == "numgrad"}) >= 2
    table = scaling_table(data["scaling"], data["gemm_gflops"])
    for text in ("sgemm 1024^3", "dgemm 1024^3", "% gemm", "x numpy", "x torch", "numerical gradient"):
        assert text in table
    assert (out / "results.md").read_text().startswith("Benchmarks (quick run")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "scaling.png").stat().st_size > 0


def test_quick_scaling_torch_rows(quick_scaling):
    """With torch installed: a torch eager row at every hidden/batch point of both dtypes, run on
    pyfastgrad's thread count, and every row's ratio to it."""
    pytest.importorskip("torch")
    rc, data, _ = quick_scaling
    assert rc == 0, data["errors"]
    pts = [p for p in data["scaling"] if p["kind"] == "train_step" and p["axis"] in ("hidden", "batch")]
    torch_s = {(p["case"], p["dtype"]): p["seconds"] for p in pts if p["line"] == "torch eager"}
    assert {(p["case"], p["dtype"]) for p in pts} == set(torch_s)
    assert {dt for _, dt in torch_s} == {"float32", "float64"}
    for p in pts:
        assert p["x_torch"] == pytest.approx(torch_s[(p["case"], p["dtype"])] / p["seconds"])
    assert any("torch set to" in n for n in data["notes"]["scaling"])


def test_bench_tutorials_rounds_report_medians_and_spread(capsys):
    """bench/bench_tutorials.py --repeats: every script in every round on both namespaces, medians per
    script, the total's ratio and the spread of the rounds' ratios."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_tutorials.py"
    spec = importlib.util.spec_from_file_location("bench_tutorials", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    for script in mod.SCRIPTS:
        assert re.search(rf"{script.__name__} +pyfastgrad +[\d.]+ s +numpy +[\d.]+ s +[\d.]+x  \(medians\)", out)
    m = re.search(r"total +pyfastgrad +([\d.]+) s +numpy +([\d.]+) s +([\d.]+)x \(target >= 3x, rounds "
                  r"([\d.]+)-([\d.]+)x\)", out)
    assert m and float(m.group(4)) <= float(m.group(5))
    assert float(m.group(3)) == pytest.approx(float(m.group(2)) / float(m.group(1)), rel=0.02)
