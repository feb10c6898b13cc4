"""The examples (examples/*.py) on small settings: each prints the tutorials' numbers, and these
tests assert them to the printed digits; pictures are written where asked. Also
``gradient_descent(history=True)`` and ``load_cifar10`` on small files in CIFAR-10's binary format."""
import gzip
import hashlib
import importlib.util
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref
from pyfastgrad.datasets import cifar10 as c10
from pyfastgrad.datasets import load_cifar10

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(name, argv, capsys):
    """Import examples/NAME.py under a private name, call main(argv); (result, stdout)."""
    spec = importlib.util.spec_from_file_location(f"pfg_example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main([str(a) for a in argv])
    return res, capsys.readouterr().out


def need_plots():
    pytest.importorskip("matplotlib")


# ------------------------------------------------------------------ gradient_descent(history=True)
def test_gradient_descent_history_is_the_path():
    f = lambda x: np.sum(x ** 2)  # noqa: E731
    x0 = np.array([-3.0, 4.0])
    x, path = pfg.gradient_descent(f, x0, lr=0.1, step_num=100, history=True)
    assert path.shape == (101, 2)
    assert np.array_equal(path[0], [-3.0, 4.0]) and np.array_equal(path[-1], x)
    assert np.array_equal(x0, [-3.0, 4.0])  # the caller's array is untouched
    # each step multiplies x by (1 - 2 lr) = 0.8 (up to the central difference's rounding)
    np.testing.assert_allclose(path[1:5], [[-3.0 * 0.8 ** k, 4.0 * 0.8 ** k] for k in range(1, 5)], rtol=1e-9)
    assert np.array_equal(x, pfg.gradient_descent(f, x0, lr=0.1, step_num=100))  # history changes nothing
    xr, path_r = ref.gradient_descent(f, x0.copy(), lr=0.1, step_num=100, history=True)
    np.testing.assert_allclose(path, path_r, rtol=1e-12, atol=1e-20)
    x2, path2 = pfg.gradient_descent(f, x0, lr=0.1, step_num=0, history=True)
    assert path2.shape == (1, 2) and np.array_equal(x2, x0)


def test_gradient_descent_callback_sees_each_step_and_can_stop():
    seen = []
    x, path = pfg.gradient_descent(lambda x: np.sum(x ** 2), np.array([-3.0, 4.0]), lr=0.1, step_num=100,
                                   history=True, callback=lambda i, x: seen.append((i, x)) or i == 3)
    assert [i for i, _ in seen] == [1, 2, 3] and path.shape == (4, 2)
    assert np.array_equal(seen[-1][1], x)
    with pytest.raises(TypeError):
        pfg.gradient_descent(lambda x: 0.0, np.zeros(2), callback=3)


# ------------------------------------------------------------------ losses
def test_losses_example_prints_the_tutorials_numbers(capsys, tmp_path):
    need_plots()
    res, out = run("losses", ["--out", tmp_path], capsys)
    assert "right): mean squared error 0.0975   cross-entropy 0.510825457099338" in out
    assert "wrong): mean squared error 0.5975   cross-entropy 2.302584092994546" in out
    assert "a commonly printed 0.195 for the first y omits the 1/2" in out
    assert "f'(5) = 0.1999999999990898" in out
    assert "f'(10) = 0.2999999999986347" in out
    assert (tmp_path / "numerical_diff.png").stat().st_size > 10_000


# ------------------------------------------------------------------ gradient and gradient descent
def test_gradient_descent_example_prints_the_tutorials_numbers(capsys, tmp_path):
    need_plots()
    res, out = run("gradient_descent", ["--out", tmp_path], capsys)
    assert "df/dx0 at (3, 4) = 6.00000000000378" in out
    assert "df/dx1 at (3, 4) = 7.999999999999119" in out
    assert "gradient at (3.0, 4.0) = [6. 8.]" in out
    assert "gradient at (0.0, 2.0) = [0. 4.]" in out
    assert "gradient at (3.0, 0.0) = [6. 0.]" in out
    # the tutorials print these final points to 9 significant digits
    for lr, want in ((0.1, ["-6.11110793e-10", "8.14814391e-10"]), (10.0, ["-2.58983747e+13", "-1.29524862e+12"]),
                     (1e-10, ["-2.99999994e+00", "3.99999992e+00"])):
        assert [f"{v:.8e}" for v in res[lr]] == want, lr
    assert "lr 1e-10, 100 steps: x = [-2.99999994  3.99999992]" in out
    for name in ("gradient_field.png", "gradient_descent.png"):
        assert (tmp_path / name).stat().st_size > 10_000


# ------------------------------------------------------------------ simpleNet
def test_simple_net_example_prints_the_tutorials_numbers(capsys):
    res, out = run("simple_net", [], capsys)
    assert "p = [1.05414809 0.63071653 1.1328074 ]" in out
    assert "np.argmax(p) = 2" in out
    assert "loss = 0.92806854" in out  # the tutorials: 0.92806853663411326 (W printed to 8 digits)
    want = np.array([[0.21924763, 0.14356247, -0.36281009], [0.32887144, 0.2153437, -0.54421514]])
    assert np.array_equal(np.round(res["dW"], 8), want)
    # with 1e-7 inside the log: smaller by 1e-7 / softmax(p)[2]
    assert res["loss"] - res["loss_guard"] == pytest.approx(1e-7 / pfg.softmax(res["p"])[2], rel=1e-3)
    assert "[[ 0.21924763  0.14356247 -0.36281009]\n [ 0.32887144  0.2153437  -0.54421514]]" in out


# ------------------------------------------------------------------ sigmoid towers
def test_sigmoid_towers_example(capsys, tmp_path):
    need_plots()
    res, out = run("sigmoid_towers", ["--epochs", 120, "--grid", 21, "--batch-size", 10, "--eval-grid", 80,
                                      "--out", tmp_path], capsys)
    assert ("one tower over [0.4, 0.6] x [0.3, 0.7]: 1.000 at (0.5, 0.5), 0.000 at (0.1, 0.5), 0.000 at (0.5, 0.1), "
            "0.500 on its edge at (0.4, 0.5)") in out
    # more, narrower towers fit better: the error halves with the width
    errs = [res[f"towers{n}"] for n in (5, 10, 20, 40)]
    assert [f"{e:.4f}" for e in errs] == ["0.0883", "0.0453", "0.0222", "0.0100"]  # (200 x 200: .0885 ... .0113)
    assert "40 x 40 towers summed: RMS error against the target 0.0100 (80 x 80 points)" in out
    m = re.search(r"test MSE (\S+), R2 (\S+)", out)
    assert float(m.group(2)) == pytest.approx(res["r2"], abs=5e-5) and res["r2"] > 0.9
    for name in ("sigmoid_towers.png", "surface_fit.png"):
        assert (tmp_path / name).stat().st_size > 10_000


# ------------------------------------------------------------------ gradient check, with the bug
def test_gradient_check_example_catches_db_divided_twice(capsys, tmp_path):
    need_plots()
    res, out = run("gradient_check", ["--subset", "--out", tmp_path], capsys)
    diffs, good = res["correct backprop"]
    bdiffs, bad = res["buggy backprop (db / N twice)"]
    assert good.passed and max(diffs.values()) < 1e-9
    assert not bad.passed
    assert {k for k, p in bad.params.items() if p.n_failed} == {"b1", "b2"}
    assert bdiffs["b2"] > 1e-3 and bdiffs["W1"] == diffs["W1"]
    assert out.count("PASS") == 1 and out.count("FAIL (") == 1
    for k, v in diffs.items():
        assert f"{k}:{v:.2e}" in out
    assert (tmp_path / "gradient_check.png").stat().st_size > 10_000


# ------------------------------------------------------------------ CIFAR-10 binary format
def write_cifar(directory, n_train=40, n_test=20, seed=0, learnable=True):
    """Six small batch files in CIFAR-10's binary format; returns the records written per file."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in c10.CIFAR10_TRAIN_FILES + (c10.CIFAR10_TEST_FILE,):
        n = n_test if name == c10.CIFAR10_TEST_FILE else n_train
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        if learnable:  # class c: a brighter band in plane c % 3 (a net can learn this)
            for i, c in enumerate(labels.tolist()):
                lo = (c % 3) * 1024 + (c // 3) * 256
                pixels[i, lo:lo + 256] = 255
        rec = np.concatenate([labels[:, None], pixels], axis=1)
        (directory / name).write_bytes(rec.tobytes())
        written[name] = (labels, pixels)
    return written


def test_load_cifar10_reads_the_binary_format(tmp_path):
    w = write_cifar(tmp_path / "cifar-10-batches-bin", n_train=7, n_test=5)
    (x, t), (xt, tt) = load_cifar10(tmp_path)  # finds the subdirectory
    assert x.shape == (35, 3072) and x.dtype == np.float32 and t.dtype == np.int64
    labels = np.concatenate([w[n][0] for n in c10.CIFAR10_TRAIN_FILES])
    pixels = np.concatenate([w[n][1] for n in c10.CIFAR10_TRAIN_FILES])
    assert np.array_equal(t, labels) and np.array_equal(x, pixels / np.float32(255))
    assert np.array_equal(tt, w["test_batch.bin"][0])
    (xr, _), _ = load_cifar10(tmp_path / "cifar-10-batches-bin", normalize=False, flatten=False,
                              one_hot_label=True, train_batches=2)
    assert xr.shape == (14, 3, 32, 32) and xr.dtype == np.uint8
    # record layout: byte 1 + c*1024 + r*32 + col is channel c (R, G, B), row r, column col
    assert xr[3, 2, 5, 7] == w["data_batch_1.bin"][1][3, 2 * 1024 + 5 * 32 + 7]
    img, lab = c10.read_cifar10_batch(tmp_path / "cifar-10-batches-bin" / "test_batch.bin")
    assert img.shape == (5, 3, 32, 32) and np.array_equal(lab, w["test_batch.bin"][0])


def test_load_cifar10_from_the_tarball_without_extracting(tmp_path):
    src = tmp_path / "src" / "cifar-10-batches-bin"
    w = write_cifar(src, n_train=3, n_test=2)
    tarball = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-bin")
    (x, t), (xt, tt) = load_cifar10(tarball)
    assert x.shape == (15, 3072) and np.array_equal(tt, w["test_batch.bin"][0])
    (x2, _), _ = load_cifar10(tmp_path)  # a directory holding the tarball
    assert np.array_equal(x, x2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-binary.tar.gz", "src"]  # nothing extracted


def test_load_cifar10_rejects_bad_files(tmp_path, monkeypatch):
    d = tmp_path / "d"
    write_cifar(d, n_train=2, n_test=2)
    good = (d / "data_batch_3.bin").read_bytes()
    (d / "data_batch_3.bin").write_bytes(good[:-1])  # truncated record
    with pytest.raises(ValueError, match=r"data_batch_3.bin: 6145 bytes is not a whole number of 3073-byte"):
        load_cifar10(d)
    bad = bytearray(good)
    bad[3073] = 10  # second record's label
    (d / "data_batch_3.bin").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="record 1 has label 10, outside 0..9"):
        load_cifar10(d)
    (d / "data_batch_3.bin").write_bytes(good)
    monkeypatch.setattr(c10, "MAX_RECORDS", 1)
    with pytest.raises(ValueError, match="2 records is more than a CIFAR-10 batch holds"):
        load_cifar10(d)
    monkeypatch.undo()
    # a tarball whose data ends early: an error naming it, not a short array
    tarball = tmp_path / "t.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-bin")
    raw = gzip.decompress(tarball.read_bytes())
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match="cut.tar"):
        load_cifar10(cut)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found in .*nowhere.*data_batch_1.bin"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="train_batches"):
        load_cifar10(d, train_batches=6)


def test_load_cifar10_downloads_the_tarball(tmp_path, monkeypatch):
    """download=True fetches the tarball (MD5-checked) into the default place; here from a local server."""
    import http.server
    import threading
    src = tmp_path / "src"
    write_cifar(src / "cifar-10-batches-bin", n_train=2, n_test=3)
    served = tmp_path / "www"
    served.mkdir()
    with tarfile.open(served / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(src / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    md5 = hashlib.md5((served / "cifar-10-binary.tar.gz").read_bytes()).hexdigest()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    monkeypatch.setattr(http.server.SimpleHTTPRequestHandler, "log_message", lambda *a: None)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-binary.tar.gz"
        monkeypatch.setenv("PYFASTGRAD_CIFAR10", str(tmp_path / "cache"))
        monkeypatch.setattr(c10, "CIFAR10_MD5", md5)
        real = c10.download_cifar10
        monkeypatch.setattr(c10, "download_cifar10", lambda dest: real(dest, url=url, progress=False))
        with pytest.raises(FileNotFoundError):
            load_cifar10()
        (x, t), (xt, tt) = load_cifar10(download=True)
        assert x.shape == (10, 3072) and tt.shape == (3,)
        assert (tmp_path / "cache" / "cifar-10-binary.tar.gz").is_file()
        monkeypatch.setattr(c10, "CIFAR10_MD5", "0" * 32)  # a corrupt download is refused
        with pytest.raises(pfg.datasets.DownloadError):
            real(tmp_path / "other", url=url, progress=False, retries=0)
        assert not (tmp_path / "other" / "cifar-10-binary.tar.gz").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_matrix_shapes_example_on_small_cifar_files(capsys, tmp_path):
    need_plots()
    write_cifar(tmp_path / "cifar", n_train=60, n_test=50)
    res, out = run("matrix_shapes_cifar10", ["--data", tmp_path / "cifar", "--epochs", 8, "--lr", 0.01,
                                             "--out", tmp_path], capsys)
    want = {"X": (5, 3072), "W1": (3072, 20), "b1": (20,), "h": (5, 20), "W2": (20, 10), "scores": (5, 10),
            "dscores": (5, 10), "dW2": (20, 10), "db2": (10,), "dh": (5, 20), "dW1": (3072, 20), "db1": (20,)}
    assert dict(res["shapes"]) == want
    for name, shape in want.items():
        assert re.search(rf"^  {name} +{re.escape(str(shape))} ", out, re.M), name
    assert res["max_diff"] < 1e-12 and res["lib_loss"] == pytest.approx(res["loss"], rel=1e-12)
    assert "300 training / 50 test images" in out
    assert res["trained"] and res["hist"].test_acc[-1] >= 0.6  # the bands are learnable
    assert (tmp_path / "cifar10_training.png").stat().st_size > 10_000


def test_matrix_shapes_example_says_when_cifar_is_absent(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PYFASTGRAD_CIFAR10", str(tmp_path / "none"))
    res, out = run("matrix_shapes_cifar10", ["--no-plots"], capsys)
    assert not res["trained"]
    assert "CIFAR-10 is not on this machine, so no training: CIFAR-10 not found in $PYFASTGRAD_CIFAR10" in out
    assert "dW1     (3072, 20)" in out


# ------------------------------------------------------------------ MNIST training, optimizers
def test_mnist_training_example_small(capsys, tmp_path):
    need_plots()
    res, out = run("mnist_training", ["--subset", "--iters", 240, "--train-size", 2400, "--compare-iters", 60,
                                      "--out", tmp_path], capsys)
    assert "data: the MNIST subset shipped with pyfastgrad (2,400 train / 2,000 test images)" in out
    assert len(res["test_acc"]) == 10 and len(res["losses"]) == 240  # 24 iterations per epoch
    for i, (a, b) in enumerate(zip(res["train_acc"], res["test_acc"]), start=1):
        assert f"epoch {i:2d}  train acc, test acc | {a:.4f}, {b:.4f}" in out
    assert res["test_acc"][-1] > 0.8 > res["test_acc"][0]
    assert np.mean(res["losses"][-24:]) < 0.5 * np.mean(res["losses"][:24])
    accs = {n: r[1] for n, r in res["compare"].items()}
    assert set(accs) == {"SGD", "Momentum", "AdaGrad", "Adam"}
    assert "test accuracy:    " + "  ".join(f"{n} {a:.4f}" for n, a in accs.items()) in out
    assert accs["SGD"] < min(accs["AdaGrad"], accs["Adam"])  # plain SGD at lr 0.01 is the slowest
    for name in ("mnist_training.png", "optimizer_comparison.png"):
        assert (tmp_path / name).stat().st_size > 10_000


# ------------------------------------------------------------------ training by the numerical gradient
def test_numerical_gradient_training_example_small(capsys):
    res, out = run("numerical_gradient_training", ["--subset", "--iters", 100, "--train-size", 1000,
                                                   "--ref-sample", 30, "--no-plots"], capsys)
    assert "python examples/numerical_gradient_training.py --threads 1 --out docs" in out  # the full run
    assert len(res["test_acc_list"]) == 10
    assert res["test_acc"] > 0.6 and res["loss"][-1] < 0.5 * res["loss"][0]  # chance is 0.1
    assert res["ref_total"] == pytest.approx(100 * res["ref_per_iter"])
    assert res["ref_per_iter"] > 10 * res["per_iter"]  # the reference's loop is far slower
    assert f"test accuracy {100 * res['test_acc']:.1f} %" in out


def test_numerical_gradient_training_follows_backprop_training():
    """The example's loop with net.numerical_gradient trains the same net as backprop does."""
    from pyfastgrad.datasets import load_mnist_subset
    (x, t), _ = load_mnist_subset()
    a = pfg.TwoLayerNet(784, 50, 10, seed=0)
    b = pfg.TwoLayerNet(784, 50, 10, seed=0)
    theta0 = b.theta.copy()
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.choice(1000, 100)
        ga, gb = a.numerical_gradient(x[m], t[m]), b.gradient(x[m], t[m])
        for k in ga:
            a.params[k] -= 0.1 * ga[k]
            b.params[k] -= 0.1 * gb[k]
    # the same training up to the central difference's error (ReLU kinks within +-h add a little,
    # which later steps spread): under 1 % of the distance the parameters moved
    moved = np.linalg.norm(b.theta - theta0)
    assert moved > 0.01 and np.linalg.norm(a.theta - b.theta) < 1e-2 * moved, np.linalg.norm(a.theta - b.theta) / moved
