"""Smoke test of the benchmark harness: structure and files, never speed."""
import json

import numpy as np
import pytest

from pyfastgrad import bench
from pyfastgrad.__main__ import build_parser


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
    rc = bench.main(["--quick", "--only", "backprop", "--no-plot", "--out", str(out)])
    data = json.loads((out / "results.json").read_text())
    assert rc == 0, data["errors"]
    rows = [r for r in data["results"] if r["bench"] == "backprop" and r["backend"] == "cpp"]
    variants = {(r["variant"], r["dtype"]) for r in rows}
    for dt in ("float32", "float64"):
        assert ("kernel Mlp.loss_grad", dt) in variants and ("kernel Mlp.loss_grad(sparse=False)", dt) in variants
    (k32,) = [r for r in rows if r["variant"] == "kernel Mlp.loss_grad" and r["dtype"] == "float32"]
    assert ">=60% sgemm 1024^3" in k32["target"] and isinstance(k32["target_met"], bool)
    assert all(r["gflops"] > 0 for r in rows)
