"""README's promises: the Quick start runs verbatim from any directory, and the command line's
default recipe reaches >= 97.5 % MNIST test accuracy in 4 epochs for seeds 0, 1 and 2."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyfastgrad as pfg

README = Path(__file__).resolve().parents[1] / "README.md"


def _quick_start() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start"):text.index("## Command line")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_quick_start_runs_verbatim_from_another_directory(mnist, tmp_path):
    pytest.importorskip("matplotlib")
    from _helpers import mnist_dir
    env = {**os.environ, "PYFASTGRAD_DATA": str(mnist_dir()), "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-c", _quick_start()], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rel err" in r.stdout  # the gradient-check table (its verdict is test_gradient's business)
    acc = float(r.stdout.strip().splitlines()[-1])
    assert acc >= 0.975, acc
    assert (tmp_path / "training.png").is_file()


def test_cli_defaults_are_the_documented_recipe():
    from pyfastgrad.__main__ import DEFAULT_HIDDEN, DEFAULT_LR, DEFAULT_OPTIMIZER, DEFAULT_SCHEDULE, build_parser
    args = build_parser("pyfastgrad").parse_args(["train"])
    assert (DEFAULT_HIDDEN, DEFAULT_OPTIMIZER, DEFAULT_LR[DEFAULT_OPTIMIZER]) == ([100], "momentum", 0.1)
    assert (args.epochs, args.batch_size, args.weight_init, args.sampling) == (4, 100, "auto", "epoch")
    assert args.schedule is None and DEFAULT_SCHEDULE == "cosine"  # (None: cosine for a new net)
    assert args.activation in (None, "relu") and args.dtype in (None, "float32")
    text = README.read_text()
    assert "Momentum (lr 0.1, μ 0.9) on a cosine schedule,\nbatch 100, 4 epochs, float32" in text


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_recipe_reaches_97_5_percent(mnist, seed):
    (x, t), (xt, tt) = mnist
    net = pfg.MultiLayerNet(784, [100], 10, weight_init="auto", dtype=np.float32, seed=seed)
    hist = pfg.fit(net, x, t, xt, tt, optimizer="momentum", lr=0.1, epochs=4, batch_size=100, seed=seed,
                   progress=False, schedule="cosine")
    assert hist.test_acc[-1] >= 0.975, hist.test_acc
