"""Tests for pyfastgrad.datasets: MNIST IDX loading, where files are looked for, the shipped subset,
load_data (what `train` uses). Downloads: test_download.py; drawn digits: test_synthetic.py."""
from __future__ import annotations

import gzip
import hashlib
import os
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
    monkeypatch.delenv("PYFASTGRAD_OFFLINE", raising=False)
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
    (x1, t1), _ = ds.load_mnist(mnist_dir, normalize=False)
    x1[:] = 0  # callers may scribble on what they got ...
    t1[:] = 3
    (x2, t2), _ = ds.load_mnist(mnist_dir, normalize=False)
    assert x2.flags.writeable and x2.max() == 255 and t2[0] == 5  # ... without harming the cache
    assert not np.shares_memory(x1, x2)


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
    assert source.name == "mnist" and data[0][0].shape == (60000, 784)
    assert str(source).startswith("MNIST (60,000 train / 10,000 test images") and source.note is None


# --------------------------------------------------------------------------- the shipped subset
def test_subset_is_real_mnist_every_fifth_image(mnist_dir):
    (x, t), (xt, tt) = ds.load_mnist_subset(normalize=False)
    (fx, ft), (fxt, ftt) = ds.load_mnist(mnist_dir, normalize=False)
    np.testing.assert_array_equal(x, fx[::5])
    np.testing.assert_array_equal(t, ft[::5])
    np.testing.assert_array_equal(xt, fxt[::5])
    np.testing.assert_array_equal(tt, ftt[::5])


def test_subset_regenerates_byte_for_byte(mnist_dir, tmp_path):
    from pyfastgrad.datasets.mnist import SUBSET_SHA256, _write_subset
    assert _write_subset(mnist_dir, tmp_path) == SUBSET_SHA256


def test_subset_files_licence_and_size():
    from pyfastgrad.datasets.mnist import SUBSET_SHA256
    files = sorted(p.name for p in ds.SUBSET_DIR.iterdir())
    assert files == sorted(list(SUBSET_SHA256) + ["README.md"])
    assert {n: ds.sha256_of(ds.SUBSET_DIR / n) for n in SUBSET_SHA256} == SUBSET_SHA256
    assert sum((ds.SUBSET_DIR / n).stat().st_size for n in SUBSET_SHA256) <= 3_000_000
    notice = (ds.SUBSET_DIR / "README.md").read_text()
    for needle in ("Yann LeCun", "Corinna Cortes", "Burges", "CC BY-SA 3.0",
                   "https://creativecommons.org/licenses/by-sa/3.0/"):
        assert needle in notice, needle


def test_subset_format():
    (x, t), (xt, tt) = ds.load_mnist_subset()
    assert x.shape == (12000, 784) and xt.shape == (2000, 784) and x.dtype == np.float32
    assert t.dtype == np.int64 and set(np.unique(t)) == set(range(10)) and set(np.unique(tt)) == set(range(10))
    assert x.min() == 0.0 and x.max() == 1.0
    (x4, t1), _ = ds.load_mnist_subset(flatten=False, one_hot_label=True, dtype=np.float64)
    assert x4.shape == (12000, 1, 28, 28) and t1.shape == (12000, 10) and t1.dtype == np.float64


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
    for needle in (str(isolated / "partial"), "missing t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte[.gz]"):
        assert needle in msg, needle
    assert "\n" not in msg
    assert not ds.mnist_available(isolated / "partial")
    assert ds.find_mnist_dir(isolated / "partial") is None
    with pytest.raises(FileNotFoundError) as info:  # the user cache: say how to fill it
        ds.load_mnist()
    msg = str(info.value)
    for needle in ("PYFASTGRAD_DATA", "download_mnist()", "download=True", "does not exist",
                   str(isolated / "xdg-cache" / "pyfastgrad" / "mnist")):
        assert needle in msg, needle


def test_one_directory_no_silent_fallback(isolated, monkeypatch):
    """path, else $PYFASTGRAD_DATA, else the user cache: only that one, never the next."""
    write_set(isolated / "arg", n_train=2)
    write_set(isolated / "env", n_train=3)
    write_set(ds.default_cache_dir(), n_train=4)
    n = lambda path=None: ds.load_mnist(path)[0][0].shape[0]  # noqa: E731
    assert n() == 4
    monkeypatch.setenv("PYFASTGRAD_DATA", str(isolated / "env"))
    assert n(isolated / "arg") == 2
    assert n() == 3
    with pytest.raises(FileNotFoundError, match="empty"):  # a path without the files is an error
        n(isolated / "empty")
    monkeypatch.setenv("PYFASTGRAD_DATA", str(isolated / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere \(\$PYFASTGRAD_DATA\) does not exist"):
        n()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ds.load_data()  # no download, no subset: the user pointed somewhere on purpose
    assert ds.default_cache_dir() == isolated / "xdg-cache" / "pyfastgrad" / "mnist"


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


# --------------------------------------------------------------------------- load_data
def test_load_data_uses_the_subset_offline_and_says_so(isolated, monkeypatch):
    monkeypatch.setenv("PYFASTGRAD_OFFLINE", "1")
    with pytest.warns(ds.DatasetFallbackWarning, match="subset shipped with pyfastgrad"):
        ((x, t), (xt, tt)), source = ds.load_data(one_hot_label=True)
    assert source.name == "mnist-subset" and x.shape == (12000, 784) and tt.shape == (2000, 10)
    assert source.directory == ds.SUBSET_DIR and "\n" not in source.note
    assert "downloads are off" in source.note and str(ds.default_cache_dir()) in source.note
    _, source = ds.load_data(warn=False)  # no warning: it would be an error here
    assert source.name == "mnist-subset"
    monkeypatch.delenv("PYFASTGRAD_OFFLINE")
    _, source = ds.load_data(download=False, warn=False)
    assert source.name == "mnist-subset"
    with pytest.raises(TypeError, match="bogus"):
        ds.load_data(bogus=1)


def test_load_data_prefers_mnist_and_keeps_corruption_loud(isolated):
    write_set(isolated / "d", n_train=4)
    ((x, _), _), source = ds.load_data(isolated / "d", flatten=False)
    assert source.name == "mnist" and x.shape == (4, 1, 28, 28) and source.n_train == 4
    write_set(isolated / "bad", override={"train_labels": idx_labels(np.zeros(2))})
    with pytest.raises(ValueError):
        ds.load_data(isolated / "bad")
    write_set(ds.default_cache_dir(), override={"train_labels": idx_labels(np.zeros(2))})
    with pytest.raises(ValueError):  # a corrupt cache is reported, not replaced by the subset
        ds.load_data(download=False)
