"""Tests for pyfastgrad.datasets: MNIST IDX loading, download, embedded digits."""
from __future__ import annotations

import gzip
import hashlib
import os
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyfastgrad import datasets as ds

# --------------------------------------------------------------------------- helpers
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# MD5 of the uncompressed files (shared/datasets/mnist/README.md).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _real_mnist_dir() -> Path:
    env = os.environ.get("PYFASTGRAD_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    d = _real_mnist_dir()
    if not d.is_dir():
        pytest.skip(f"real MNIST directory {d} is missing (set PYFASTGRAD_DATA to run these tests)")
    return d


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> Path:
    """No PYFASTGRAD_DATA and an empty user cache, so only explicit paths count."""
    monkeypatch.delenv("PYFASTGRAD_DATA", raising=False)
    monkeypatch.delenv("PYFASTGRAD_MNIST_MIRRORS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    ds.clear_cache()
    yield tmp_path
    ds.clear_cache()


def idx_images(images: np.ndarray, magic: int = 0x803, count: Optional[int] = None) -> bytes:
    n, r, c = images.shape
    head = magic.to_bytes(4, "big") + (n if count is None else count).to_bytes(4, "big")
    return head + r.to_bytes(4, "big") + c.to_bytes(4, "big") + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray, magic: int = 0x801, count: Optional[int] = None) -> bytes:
    n = labels.shape[0]
    head = magic.to_bytes(4, "big") + (n if count is None else count).to_bytes(4, "big")
    return head + labels.astype(np.uint8).tobytes()


def write_set(directory: Path, n_train: int = 7, n_test: int = 3, gz: bool = False,
              seed: int = 0, override: Optional[Dict[str, bytes]] = None) -> Dict[str, np.ndarray]:
    """Write four small valid IDX files (``override`` replaces some contents)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for role, name in ds.MNIST_FILES.items():
        a = arrays[role]
        data = idx_images(a) if a.ndim == 3 else idx_labels(a)
        if override and role in override:
            data = override[role]
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


# --------------------------------------------------------------------------- real MNIST
def test_mnist_shapes_dtypes_and_labels(mnist_dir):
    (x, t), (xt, tt) = ds.load_mnist(mnist_dir)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert t.shape == (60000,) and tt.shape == (10000,) and t.dtype == np.int64
    assert t[0] == 5 and list(t[:5]) == [5, 0, 4, 1, 9] and list(tt[:5]) == [7, 2, 1, 0, 4]
    assert np.bincount(t, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(tt, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.12 < float(x.mean()) < 0.14  # MNIST's well-known mean pixel 0.1307


def test_mnist_raw_uint8_matches_normalized(mnist_dir):
    (x8, t8), (xt8, _) = ds.load_mnist(mnist_dir, normalize=False, dtype=np.float64)
    assert x8.dtype == np.uint8 and x8.max() == 255 and x8.shape == (60000, 784)
    assert int(x8.sum(dtype=np.int64)) == 1567298545 and int(xt8.sum(dtype=np.int64)) == 264923200
    (x, t), _ = ds.load_mnist(mnist_dir, dtype=np.float64)
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x[::97], x8[::97] / 255.0)  # a strided sample keeps this cheap
    np.testing.assert_array_equal(t, t8)


def test_mnist_one_hot_and_unflattened(mnist_dir):
    (x, t), (xt, tt) = ds.load_mnist(mnist_dir, flatten=False, one_hot_label=True)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert t.shape == (60000, 10) and tt.shape == (10000, 10) and t.dtype == np.float32
    assert np.all(t.sum(axis=1) == 1) and set(np.unique(t)) == {0.0, 1.0}
    (_, labels), _ = ds.load_mnist(mnist_dir)
    np.testing.assert_array_equal(t.argmax(axis=1), labels)


def test_mnist_cache_returns_fresh_writable_arrays(mnist_dir):
    ds.clear_cache()
    t0 = time.perf_counter()
    (x1, t1), _ = ds.load_mnist(mnist_dir, normalize=False)
    first = time.perf_counter() - t0
    x1[:] = 0  # callers may scribble on what they got ...
    t1[:] = 3
    t0 = time.perf_counter()
    (x2, t2), _ = ds.load_mnist(mnist_dir, normalize=False)
    cached = time.perf_counter() - t0
    assert x2.flags.writeable and x2.max() == 255 and t2[0] == 5  # ... without harming the cache
    assert cached < first


def test_mnist_uncompressed_md5_and_gz_sha256(mnist_dir):
    for name, md5 in MNIST_MD5.items():
        gz = mnist_dir / (name + ".gz")
        data = gzip.decompress(gz.read_bytes()) if gz.is_file() else (mnist_dir / name).read_bytes()
        assert hashlib.md5(data).hexdigest() == md5, name
    sums = mnist_dir / "SHA256SUMS"
    if sums.is_file():  # the module's constants must agree with the known-good list
        listed = {line.split()[1]: line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
        assert listed == ds.MNIST_SHA256
    for name, sha in ds.MNIST_SHA256.items():
        if (mnist_dir / name).is_file():
            assert hashlib.sha256((mnist_dir / name).read_bytes()).hexdigest() == sha


def test_mnist_found_through_env_var(mnist_dir, isolated, monkeypatch):
    assert not ds.mnist_available()
    monkeypatch.setenv("PYFASTGRAD_DATA", str(mnist_dir))
    assert ds.mnist_available()
    assert ds.find_mnist_dir() == mnist_dir.resolve()
    (x, t), _ = ds.load_mnist()
    assert x.shape == (60000, 784) and t[0] == 5
    data, source = ds.load_data()
    assert source == "mnist" and data[0][0].shape == (60000, 784)


def test_download_from_file_mirror(mnist_dir, isolated, monkeypatch):
    if not all((mnist_dir / n).is_file() for n in ds.MNIST_SHA256):
        pytest.skip("the .gz files are not in the MNIST directory")
    mirror = mnist_dir.resolve().as_uri() + "/"
    dest = ds.download_mnist(isolated / "dl", mirrors=["file:///nonexistent/mirror/", mirror], quiet=True)
    assert dest == (isolated / "dl").resolve()
    assert sorted(p.name for p in dest.iterdir()) == sorted(ds.MNIST_SHA256)
    # Present and verified: a second call fetches nothing (a dead mirror is fine).
    ds.download_mnist(dest, mirrors=["file:///nonexistent/mirror/"], quiet=True)
    (x, t), _ = ds.load_mnist(dest)
    assert t[0] == 5
    # load_mnist(download=True) fills the cache dir from the mirror in the env var.
    monkeypatch.setenv("PYFASTGRAD_MNIST_MIRRORS", mirror)
    with pytest.raises(FileNotFoundError):
        ds.load_mnist()
    (x, t), _ = ds.load_mnist(download=True)
    assert x.shape == (60000, 784)
    assert ds.find_mnist_dir() == ds.default_cache_dir().resolve()
    assert ds.default_cache_dir() == isolated / "xdg-cache" / "pyfastgrad" / "mnist"


# --------------------------------------------------------------------------- IDX files on tmp_path
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_small_files_roundtrip(isolated, gz):
    arrays = write_set(isolated / "d", gz=gz)
    (x, t), (xt, tt) = ds.load_mnist(isolated / "d", normalize=False, flatten=False)
    np.testing.assert_array_equal(x[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(t, arrays["train_labels"])
    np.testing.assert_array_equal(xt[:, 0], arrays["test_images"])
    np.testing.assert_array_equal(tt, arrays["test_labels"])
    assert ds.mnist_available(isolated / "d") and ds.find_mnist_dir(isolated / "d") == (isolated / "d").resolve()


def test_mixed_raw_and_gzip_files(isolated):
    arrays = write_set(isolated / "d", gz=True)
    raw = isolated / "d" / "t10k-images-idx3-ubyte"
    raw.write_bytes(gzip.decompress((isolated / "d" / "t10k-images-idx3-ubyte.gz").read_bytes()))
    (raw.parent / "t10k-images-idx3-ubyte.gz").unlink()
    _, (xt, _) = ds.load_mnist(isolated / "d", normalize=False)
    np.testing.assert_array_equal(xt.reshape(-1, 28, 28), arrays["test_images"])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 6), rows=st.integers(1, 9), cols=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       gz=st.booleans())
def test_read_idx_roundtrip_property(tmp_path_factory, n, rows, cols, seed, gz):
    a = np.random.default_rng(seed).integers(0, 256, (n, rows, cols), dtype=np.uint8)
    f = tmp_path_factory.mktemp("idx") / "f"
    data = idx_images(a)
    f.write_bytes(gzip.compress(data) if gz else data)
    b = ds.read_idx(f)
    np.testing.assert_array_equal(b, a)
    assert b.shape == a.shape and not b.flags.writeable


def test_wrong_magic(isolated):
    bad = idx_images(np.zeros((7, 28, 28)), magic=0x0803_0000)
    write_set(isolated / "d", override={"train_images": bad})
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic"):
        ds.load_mnist(isolated / "d")


def test_label_file_in_image_slot(isolated):
    write_set(isolated / "d", override={"train_images": idx_labels(np.zeros(7))})
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        ds.load_mnist(isolated / "d")


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_truncated_payload(isolated, gz):
    full = idx_images(np.ones((3, 28, 28)))
    write_set(isolated / "d", gz=gz, override={"test_images": full[:-100]})
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated"):
        ds.load_mnist(isolated / "d")


def test_trailing_data(isolated):
    write_set(isolated / "d", override={"test_labels": idx_labels(np.zeros(3)) + b"\0"})
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*trailing"):
        ds.load_mnist(isolated / "d")


def test_truncated_gzip_stream(isolated):
    write_set(isolated / "d", gz=True)
    f = isolated / "d" / "train-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz.*gzip"):
        ds.load_mnist(isolated / "d")


def test_header_too_short(isolated):
    write_set(isolated / "d", override={"train_labels": b"\x00\x00\x08"})
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*too short"):
        ds.load_mnist(isolated / "d")


def test_count_mismatch(isolated):
    write_set(isolated / "d", override={"train_labels": idx_labels(np.zeros(6))})
    with pytest.raises(ValueError, match=r"count mismatch.*7 images.*6 labels"):
        ds.load_mnist(isolated / "d")


def test_header_count_disagrees_with_payload(isolated):
    write_set(isolated / "d", override={"train_labels": idx_labels(np.zeros(7), count=8)})
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*truncated"):
        ds.load_mnist(isolated / "d")


def test_label_out_of_range(isolated):
    write_set(isolated / "d", override={"test_labels": idx_labels(np.array([1, 10, 2]))})
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.*label 10"):
        ds.load_mnist(isolated / "d")


def test_missing_files_message(isolated):
    write_set(isolated / "partial")
    (isolated / "partial" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as info:
        ds.load_mnist(isolated / "partial")
    msg = str(info.value)
    for needle in ("PYFASTGRAD_DATA", "path=", "pyfastgrad.datasets.download_mnist()",
                   str(isolated / "partial"), "missing t10k-labels-idx1-ubyte",
                   str(isolated / "xdg-cache" / "pyfastgrad" / "mnist")):
        assert needle in msg, needle
    assert not ds.mnist_available(isolated / "partial")
    assert ds.find_mnist_dir(isolated / "partial") is None


def test_search_order(isolated, monkeypatch):
    write_set(isolated / "arg", n_train=2)
    write_set(isolated / "env", n_train=3)
    write_set(ds.default_cache_dir(), n_train=4)
    monkeypatch.setenv("PYFASTGRAD_DATA", str(isolated / "env"))
    n = lambda path: ds.load_mnist(path)[0][0].shape[0]  # noqa: E731
    assert n(isolated / "arg") == 2
    assert n(None) == 3
    assert n(isolated / "empty") == 3  # a path without the files falls through
    monkeypatch.delenv("PYFASTGRAD_DATA")
    assert n(None) == 4


def test_cache_sees_replaced_files(isolated):
    write_set(isolated / "d", n_train=5)
    assert ds.load_mnist(isolated / "d")[0][0].shape[0] == 5
    write_set(isolated / "d", n_train=9)
    assert ds.load_mnist(isolated / "d")[0][0].shape[0] == 9


def test_normalize_needs_float_dtype(isolated):
    write_set(isolated / "d")
    with pytest.raises(ValueError, match="floating"):
        ds.load_mnist(isolated / "d", dtype=np.int32)
    (x, _), _ = ds.load_mnist(isolated / "d", normalize=False, dtype=np.int32)
    assert x.dtype == np.uint8


def test_download_errors(isolated):
    with pytest.raises(ds.DownloadError, match=r"(?s)train-images-idx3-ubyte\.gz.*No such file.*PYFASTGRAD_DATA"):
        ds.download_mnist(isolated / "dl", mirrors=["file:///nonexistent/mirror"], quiet=True)
    fake = isolated / "fake-mirror"
    fake.mkdir()
    for name in ds.MNIST_SHA256:
        (fake / name).write_bytes(b"not mnist")
    with pytest.raises(ds.DownloadError, match="SHA256 mismatch"):
        ds.download_mnist(isolated / "dl", mirrors=[fake.as_uri()], quiet=True)
    assert list((isolated / "dl").iterdir()) == []  # no partial or unverified files left


# --------------------------------------------------------------------------- load_data
def test_load_data_falls_back(isolated):
    with pytest.warns(ds.DatasetFallbackWarning, match="PYFASTGRAD_DATA"):
        ((x, t), (xt, tt)), source = ds.load_data(n_train=100, n_test=20, one_hot_label=True)
    assert source == "embedded-digits" and x.shape == (100, 784) and tt.shape == (20, 10)
    with pytest.raises(FileNotFoundError, match="PYFASTGRAD_DATA"):
        ds.load_data(allow_fallback=False)
    _, source = ds.load_data(warn=False, n_train=10, n_test=10)  # no warning: it would be an error here
    assert source == "embedded-digits"
    with pytest.raises(TypeError, match="bogus"):
        ds.load_data(bogus=1)


def test_load_data_prefers_mnist_and_keeps_corruption_loud(isolated):
    write_set(isolated / "d", n_train=4)
    ((x, _), _), source = ds.load_data(isolated / "d", seed=3, flatten=False)
    assert source == "mnist" and x.shape == (4, 1, 28, 28)
    write_set(isolated / "bad", override={"train_labels": idx_labels(np.zeros(2))})
    with pytest.raises(ValueError):
        ds.load_data(isolated / "bad")


# --------------------------------------------------------------------------- embedded digits
def test_embedded_format():
    (x, t), (xt, tt) = ds.load_digits_embedded()
    assert x.shape == (2000, 784) and xt.shape == (500, 784) and x.dtype == np.float32
    assert t.shape == (2000,) and t.dtype == np.int64 and tt.shape == (500,)
    assert x.min() == 0.0 and 0.7 < x.max() <= 1.0
    assert (x == 0).mean() > 0.6  # mostly empty background, like MNIST
    assert np.all(x.max(axis=1) > 0.5)  # no blank images
    (x4, t1), _ = ds.load_digits_embedded(n_train=30, n_test=5, flatten=False, one_hot_label=True,
                                          dtype=np.float64)
    assert x4.shape == (30, 1, 28, 28) and x4.dtype == np.float64
    assert t1.shape == (30, 10) and t1.dtype == np.float64 and np.all(t1.sum(axis=1) == 1)
    (x8, _), _ = ds.load_digits_embedded(n_train=50, n_test=5, normalize=False)
    assert x8.dtype == np.uint8 and x8.max() > 200
    (x0, t0), (xt0, _) = ds.load_digits_embedded(n_train=0, n_test=0)
    assert x0.shape == (0, 784) and t0.shape == (0,) and xt0.shape == (0, 784)


def test_embedded_matches_normalized_uint8():
    (x8, t8), _ = ds.load_digits_embedded(n_train=200, n_test=10, normalize=False, seed=5)
    (x, t), _ = ds.load_digits_embedded(n_train=200, n_test=10, seed=5)
    np.testing.assert_array_equal(x, x8.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(t, t8)


def test_embedded_deterministic_per_seed():
    a = ds.load_digits_embedded(n_train=300, n_test=100, seed=1)
    b = ds.load_digits_embedded(n_train=300, n_test=100, seed=1)
    c = ds.load_digits_embedded(n_train=300, n_test=100, seed=2)
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0][0], c[0][0]) and not np.array_equal(a[1][0], c[1][0])
    # the test set depends on the seed only, not on n_train
    d = ds.load_digits_embedded(n_train=50, n_test=100, seed=1)
    np.testing.assert_array_equal(d[1][0], a[1][0])


def test_embedded_class_balance():
    (_, t), (_, tt) = ds.load_digits_embedded()
    assert np.bincount(t, minlength=10).tolist() == [200] * 10
    assert np.bincount(tt, minlength=10).tolist() == [50] * 10
    (_, t), _ = ds.load_digits_embedded(n_train=1003, n_test=0, seed=9)
    counts = np.bincount(t, minlength=10)
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1
    assert not np.array_equal(t[:20], np.arange(20) % 10)  # shuffled, not in class order


def test_embedded_generation_is_fast():
    ds.load_digits_embedded(n_train=20, n_test=0)  # warm up
    t0 = time.perf_counter()
    ds.load_digits_embedded(n_train=2000, n_test=500)
    assert time.perf_counter() - t0 < 2.0  # < 1 s on a dev machine; slack for loaded CI


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _train_two_layer(x, t, epochs, hidden=100, lr=0.1, batch=20, seed=0):
    """Plain mini-batch SGD on Affine-ReLU-Affine-Softmax (He init); returns a predictor."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((x.shape[1], hidden)) * np.sqrt(2.0 / x.shape[1])).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = (rng.standard_normal((hidden, 10)) * np.sqrt(2.0 / hidden)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            j = order[i:i + batch]
            h = np.maximum(x[j] @ w1 + b1, 0)
            dy = _softmax(h @ w2 + b2)
            dy[np.arange(len(j)), t[j]] -= 1
            dy /= len(j)
            dh = (dy @ w2.T) * (h > 0)
            w2 -= lr * (h.T @ dy)
            b2 -= lr * dy.sum(axis=0)
            w1 -= lr * (x[j].T @ dh)
            b1 -= lr * dh.sum(axis=0)
    return lambda z: (np.maximum(z @ w1 + b1, 0) @ w2 + b2).argmax(axis=1)


def test_embedded_learnable_but_not_trivial():
    (x, t), (xt, tt) = ds.load_digits_embedded(seed=0)
    predict = _train_two_layer(x, t, epochs=5)
    acc = float((predict(xt) == tt).mean())
    assert acc >= 0.90, acc
    # Not trivial: a nearest-class-mean template matcher does clearly worse.
    means = np.stack([x[t == c].mean(axis=0) for c in range(10)])
    ncm = float((((xt[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1) == tt).mean())
    assert ncm < 0.85, ncm
    assert acc - ncm > 0.1
