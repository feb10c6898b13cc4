"""The command line: program names, --version, help defaults, argument errors, data resolution,
the first line, divergence, eval and --resume, --threads, info."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad.__main__ import build_parser, main

from _helpers import mnist_dir


@pytest.fixture
def no_mnist(monkeypatch, tmp_path):
    """No MNIST anywhere and no network (a refused local port as the only mirror)."""
    monkeypatch.delenv("PYFASTGRAD_DATA", raising=False)
    monkeypatch.delenv("PYFASTGRAD_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setenv("PYFASTGRAD_MNIST_MIRRORS", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return tmp_path


@pytest.fixture
def threads_restored():
    before = pfg.get_num_threads()
    yield
    pfg.set_num_threads(max(v for v in before.values() if v is not None))


def _run(argv, capsys):
    rc = main(argv, prog="pyfastgrad")
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------ the parser
def test_every_option_shows_its_default():
    parser = build_parser("pyfastgrad")
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help and "default" in action.help, (name, action.option_strings)


def test_version_and_program_names(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyfastgrad {pfg.__version__}"
    assert build_parser("pyfastgrad").prog == "pyfastgrad"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "pyfastgrad", "--help"], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).parent)
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m pyfastgrad ")
    exe = shutil.which("pyfastgrad", path=str(Path(sys.executable).parent))
    if exe:  # the console script of this environment
        out = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, env=env)
        assert out.returncode == 0 and out.stdout.startswith("usage: pyfastgrad train ")


@pytest.mark.parametrize("argv, needle", [
    (["--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["--epochs", "ten"], "argument --epochs"),
    (["--hidden", "100x50"], "invalid hidden layer size '100x50'"),
    (["--hidden", "0"], "invalid hidden layer size '0'"),
    (["--lr", "-0.1"], "argument --lr: expected a positive number, got '-0.1'"),
    (["--lr", "inf"], "argument --lr"),
    (["--batch-size", "-5"], "argument --batch-size"),
    (["--weight-decay", "-1"], "argument --weight-decay"),
    (["--weight-init", "kaiming"], "argument --weight-init"),
    (["--threads", "0"], "argument --threads"),
    (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice"),
])
def test_bad_arguments_are_usage_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *argv], prog="pyfastgrad")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("pyfastgrad train: error:")


def test_weight_init_argument_values():
    p = build_parser("pyfastgrad")
    assert p.parse_args(["train", "--weight-init", "He"]).weight_init == "he"
    assert p.parse_args(["train", "--weight-init", "0.05"]).weight_init == 0.05
    assert p.parse_args(["train"]).weight_init == "auto"


# ------------------------------------------------------------------------------ failing early
def test_plot_without_matplotlib_fails_before_training(no_mnist, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    rc, out, err = _run(["train", "--plot", str(no_mnist / "p.png")], capsys)
    assert rc == 1 and out == ""  # nothing loaded, nothing trained
    assert "--plot needs matplotlib" in err and "pip install 'pyfastgrad[plot]'" in err


def test_unwritable_outputs_fail_before_training(no_mnist, capsys):
    rc, out, err = _run(["train", "--save", str(no_mnist / "missing" / "n.npz")], capsys)
    assert rc == 1 and out == "" and "does not exist" in err


def test_data_dir_without_the_files_is_an_error(no_mnist, capsys):
    d = no_mnist / "partial"
    d.mkdir()
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"")
    rc, out, err = _run(["train", "--data", str(d)], capsys)
    assert rc == 1 and out == ""
    assert f"MNIST not found: {d}" in err
    assert "missing train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" in err
    rc, _, err = _run(["train", "--data", str(no_mnist / "nowhere")], capsys)
    assert rc == 1 and "does not exist" in err


# ------------------------------------------------------------------------------ training
def test_no_data_no_network_trains_on_the_shipped_subset(no_mnist, capsys):
    rc, out, err = _run(["train", "--epochs", "1", "--train-size", "2000", "--no-progress"], capsys)
    assert rc == 0
    first = out.splitlines()[0]
    assert first.startswith(f"pyfastgrad {pfg.__version__}: backend {pfg.get_backend()}, data MNIST subset "
                            "shipped with pyfastgrad (12,000 train / 2,000 test images")
    assert "threads" in first
    notes = [ln for ln in err.splitlines() if ln.startswith("note: MNIST")]
    assert len(notes) == 1 and "could not be downloaded" in notes[0] and "subset" in notes[0]
    assert "test accuracy" in out


def test_offline_flag_never_downloads(no_mnist, capsys):
    rc, out, err = _run(["train", "--offline", "--epochs", "1", "--train-size", "1000", "--no-progress"], capsys)
    assert rc == 0 and "downloads are off" in err and "downloading" not in err


def test_divergence_stops_with_a_message_and_status_3(no_mnist, capsys):
    rc, out, err = _run(["train", "--offline", "--optimizer", "sgd", "--lr", "5", "--epochs", "4",
                         "--no-progress"], capsys)
    assert rc == 3
    assert "training stopped: diverged" in err and "at chance" in err and "smaller --lr" in err


def test_non_finite_loss_stops_with_status_3(no_mnist, capsys):
    rc, out, err = _run(["train", "--offline", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "2",
                         "--train-size", "1000", "--no-progress"], capsys)
    assert rc == 3 and "non-finite loss" in err


def test_slow_start_is_not_called_divergence():
    """The tutorials' slow recipe (sigmoid, std 0.01, sgd 0.01) sits near chance after one epoch
    with a slowly falling loss: that is not a divergence."""
    from pyfastgrad.__main__ import _divergence_check
    from pyfastgrad.train import History
    labels = np.arange(1000) % 10
    check = _divergence_check(labels, 0.01)
    h = History(loss=list(np.linspace(2.31, 2.26, 600)), epoch=[1], train_acc=[0.11])
    assert check(1, h) is None
    h = History(loss=[2.4, 50.0, 2.31], epoch=[1], train_acc=[0.1])
    assert "diverged" in check(1, h)


def test_save_eval_resume(no_mnist, capsys, threads_restored):
    net_file = no_mnist / "net.npz"
    rc, out, _ = _run(["train", "--offline", "--epochs", "1", "--hidden", "30", "--train-size", "3000",
                       "--no-progress", "--threads", "1", "--save", str(net_file)], capsys)
    assert rc == 0 and net_file.is_file()
    if pfg.get_backend() == "cpp":
        assert "threads 1 OpenBLAS / 1 OpenMP" in out.splitlines()[0]
    acc = float(out.split("final: test accuracy ")[1].split(",")[0])
    rc, out, _ = _run(["eval", str(net_file), "--offline"], capsys)
    assert rc == 0 and f"test accuracy {acc:.4f} (" in out and out.startswith("pyfastgrad ")
    rc, out, err = _run(["train", "--offline", "--resume", str(net_file), "--epochs", "1", "--train-size", "3000",
                         "--no-progress", "--save", str(net_file)], capsys)
    assert rc == 0 and "optimizer state restored" in out
    assert pfg.load_net(net_file).sizes == [784, 30, 10]
    rc, _, err = _run(["train", "--offline", "--resume", str(net_file), "--hidden", "50"], capsys)
    assert rc == 1 and "--hidden 50 does not match" in err
    rc, _, err = _run(["eval", str(no_mnist / "none.npz")], capsys)
    assert rc == 1 and "no saved net at" in err
    (no_mnist / "bad.npz").write_bytes(b"not a net")
    rc, _, err = _run(["eval", str(no_mnist / "bad.npz")], capsys)
    assert rc == 1 and "cannot read a saved net" in err


def test_cli_train_on_mnist(tmp_path, capsys, mnist):
    rc, out, _ = _run(["train", "--hidden", "20", "--epochs", "1", "--train-size", "2000", "--no-progress",
                       "--data", str(mnist_dir())], capsys)
    assert rc == 0
    assert "data MNIST (60,000 train / 10,000 test images" in out.splitlines()[0]


def test_info_shows_backends_and_threads(capsys, threads_restored):
    rc, out, _ = _run(["info", "--threads", "1"], capsys)
    assert rc == 0 and out.startswith(f"pyfastgrad {pfg.__version__}")
    assert "threads: " in out and "limit with --threads N" in out
    if pfg.backends()["cpp"] == "available":
        assert "1 OpenBLAS, 1 OpenMP" in out
