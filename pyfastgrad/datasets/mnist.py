"""MNIST: the IDX reader, where the files are looked for, and the subset shipped in the package.

:func:`load_mnist` has the tutorials' return shape, ``(x_train, t_train), (x_test, t_test)``.
It reads the four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each gzip-compressed (``.gz``) or raw,
from **one** directory:

1. the ``path`` argument, when given (only there: a directory without the files is an error);
2. else ``$PYFASTGRAD_DATA``, when set (likewise only there);
3. else the per-user cache, :func:`default_cache_dir` (where :func:`download_mnist` puts
   them); with ``download=True`` missing or corrupt files there are downloaded first.

The IDX parser is written here (no third-party reader) and validates every file: magic
number, payload length against the header, labels in 0..9 and matching image/label counts.
A bad file raises :class:`ValueError` naming it.

:func:`load_mnist_subset` reads the real MNIST subset shipped inside the package (every fifth
image of the official files: 12,000 training and 2,000 test images; attribution and licence
in ``pyfastgrad/datasets/data/mnist-subset/README.md``). :func:`load_data` is what
``python -m pyfastgrad train`` uses: MNIST, downloading it when it is missing, and the shipped
subset (saying so) only when it cannot be had.

Decoded files are cached in-process as read-only ``uint8`` arrays, keyed by the resolved file
paths (and their size and mtime, so a replaced file is read again). Every call returns
**fresh, writable arrays** built from that cache, so callers may modify what they get.
"""
from __future__ import annotations

import gzip
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ._download import MNIST_SHA256, DownloadError, default_cache_dir, download_mnist, sha256_of
from ._io import BoundedFile

__all__ = [
    "MNIST_FILES", "SUBSET_DIR", "DatasetFallbackWarning", "DataSource", "load_mnist",
    "load_mnist_subset", "load_data", "mnist_available", "find_mnist_dir", "read_idx", "clear_cache",
]

PathLike = Union[str, "os.PathLike[str]"]
Dataset = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]

ENV_DATA = "PYFASTGRAD_DATA"
ENV_OFFLINE = "PYFASTGRAD_OFFLINE"

# Role -> base file name (without .gz), in the order the loader needs them.
MNIST_FILES: Dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# The real MNIST subset in the package: every SUBSET_STEP-th image of the official files.
SUBSET_DIR = Path(__file__).resolve().parent / "data" / "mnist-subset"
SUBSET_STEP = 5
SUBSET_SHA256: Dict[str, str] = {}  # filled in below the subset writer (checked by the tests)

IDX_MAGIC_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
IDX_MAGIC_LABELS = 0x00000801  # unsigned byte, 1 dimension
N_CLASSES = 10


class DatasetFallbackWarning(UserWarning):
    """Issued by :func:`load_data` when it falls back to the shipped MNIST subset."""


# --------------------------------------------------------------------------- locating files
def _find_files(directory: Path) -> Optional[Dict[str, Path]]:
    """Map each role to its file in ``directory``, or None if any is missing.

    A raw file wins over its ``.gz`` twin: it is what a user who decompressed
    the archives meant, and it is faster to read.
    """
    if not directory.is_dir():
        return None
    found: Dict[str, Path] = {}
    for role, name in MNIST_FILES.items():
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            return None
    return found


def _missing(directory: Path) -> List[str]:
    return [name for name in MNIST_FILES.values()
            if not (directory / name).is_file() and not (directory / (name + ".gz")).is_file()]


def _search_dir(path: Optional[PathLike]) -> Tuple[Path, str]:
    """The one directory :func:`load_mnist` reads, and where that choice came from."""
    if path is not None:
        return Path(path).expanduser(), "the directory given"
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser(), f"${ENV_DATA}"
    return default_cache_dir(), "user cache"


def find_mnist_dir(path: Optional[PathLike] = None) -> Optional[Path]:
    """The directory :func:`load_mnist` would read (``path``, else ``$PYFASTGRAD_DATA``, else the
    user cache), resolved, or None when it does not hold all four files."""
    directory, _ = _search_dir(path)
    return directory.resolve() if _find_files(directory) is not None else None


def mnist_available(path: Optional[PathLike] = None) -> bool:
    """True when :func:`find_mnist_dir` finds the four MNIST files."""
    return find_mnist_dir(path) is not None


def _not_found_message(directory: Path, origin: str) -> str:
    names = ", ".join(f"{n}[.gz]" for n in MNIST_FILES.values())
    state = ("does not exist" if not directory.is_dir()
             else "is missing " + ", ".join(_missing(directory)))
    fixes = (f"pass the directory that holds them (--data DIR / load_mnist(path)), set {ENV_DATA}=DIR, "
             f"or download them into the user cache {default_cache_dir()} with "
             "pyfastgrad.datasets.download_mnist() (or load_mnist(download=True))")
    if origin != "user cache":
        fixes = (f"give the directory that holds them (or leave out --data / unset {ENV_DATA} to use the user "
                 "cache, where MNIST is downloaded when missing)")
    return (f"MNIST not found: {directory} ({origin}) {state}. Needed in one directory: {names}. "
            f"To fix: {fixes}.")


# --------------------------------------------------------------------------- IDX parsing
def _read_idx_bounded(file: Path) -> np.ndarray:
    """Decode an IDX file (unsigned-byte images or labels) into a read-only array. The payload size
    the header declares is checked against the file (and a cap) before it is read (``_io``)."""
    with BoundedFile(file) as f:
        try:
            head = f.read_exact(8, "the IDX header")
        except ValueError as exc:
            if "gzip data" in str(exc):  # corrupt compressed data, not a short file
                raise
            raise ValueError(f"{file}: too short for an IDX header "
                             f"({os.path.getsize(file)} bytes{', gzip' if f.gzip else ''})") from None
        magic = int.from_bytes(head[0:4], "big")
        if magic == IDX_MAGIC_IMAGES:
            try:
                head += f.read_exact(8, "the IDX image header")
            except ValueError:
                raise ValueError(f"{file}: too short for an IDX image header") from None
            shape: Tuple[int, ...] = tuple(int.from_bytes(head[i:i + 4], "big") for i in (4, 8, 12))
        elif magic == IDX_MAGIC_LABELS:
            shape = (int.from_bytes(head[4:8], "big"),)
        else:
            raise ValueError(
                f"{file}: bad IDX magic number 0x{magic:08x} (expected 0x{IDX_MAGIC_IMAGES:08x} "
                f"for images or 0x{IDX_MAGIC_LABELS:08x} for labels); not an MNIST IDX file?")
        expected = 1
        for d in shape:  # Python ints: no overflow from three 32-bit dimensions
            expected *= d
        try:
            data = f.read_exact(expected, f"payload of header {shape}")
            f.expect_end()
        except ValueError as exc:
            raise ValueError(f"{exc} (payload truncated or corrupt: header {shape} needs {expected} bytes)") \
                from None
    # frombuffer on immutable bytes is zero-copy and read-only: safe to cache.
    return np.frombuffer(data, dtype=np.uint8, count=expected).reshape(shape)


def read_idx(file: PathLike) -> np.ndarray:
    """Read one unsigned-byte IDX file (raw or gzip-compressed).

    Parameters
    ----------
    file : str or PathLike
        An IDX file with magic 0x00000803 (images) or 0x00000801 (labels).

    Returns
    -------
    numpy.ndarray
        Read-only ``uint8`` array, ``(n, rows, cols)`` for images, ``(n,)``
        for labels.

    Raises
    ------
    ValueError
        On a bad magic number, corrupt gzip data or a payload whose length
        does not match the header; the message names the file.
    """
    file = Path(file)
    return _read_idx_bounded(file)


_CACHE: Dict[tuple, Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget the MNIST arrays cached by :func:`load_mnist`."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _load_raw(files: Dict[str, Path]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode and validate the four files, through the in-process cache."""
    resolved = {role: f.resolve() for role, f in files.items()}
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in resolved.values())
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    arrays = {role: read_idx(f) for role, f in resolved.items()}
    for split in ("train", "test"):
        img_file, lab_file = resolved[split + "_images"], resolved[split + "_labels"]
        images, labels = arrays[split + "_images"], arrays[split + "_labels"]
        if images.ndim != 3:
            raise ValueError(f"{img_file}: expected an IDX image file (magic 0x{IDX_MAGIC_IMAGES:08x}), "
                             f"got a {images.ndim}-d array")
        if labels.ndim != 1:
            raise ValueError(f"{lab_file}: expected an IDX label file (magic 0x{IDX_MAGIC_LABELS:08x}), "
                             f"got a {labels.ndim}-d array")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"count mismatch: {img_file} has {images.shape[0]} images but "
                             f"{lab_file} has {labels.shape[0]} labels")
        if labels.size and int(labels.max()) >= N_CLASSES:
            raise ValueError(f"{lab_file}: label {int(labels.max())} out of range 0..{N_CLASSES - 1}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(f"image size mismatch: {resolved['train_images']} is "
                         f"{arrays['train_images'].shape[1:]}, {resolved['test_images']} is "
                         f"{arrays['test_images'].shape[1:]}")
    out = (arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"])
    with _CACHE_LOCK:
        _CACHE[key] = out
    return out


# --------------------------------------------------------------------------- formatting
def _format(images: np.ndarray, labels: np.ndarray, normalize: bool, flatten: bool,
            one_hot_label: bool, dtype) -> Tuple[np.ndarray, np.ndarray]:
    """Turn ``uint8`` images ``(n, rows, cols)`` and labels into new, writable arrays."""
    n, rows, cols = images.shape
    if normalize:
        x = images.astype(dtype)  # a new array, so the cache stays untouched
        x /= dtype(255)
    else:
        x = images.copy()
    x = x.reshape(n, rows * cols) if flatten else x.reshape(n, 1, rows, cols)
    if one_hot_label:
        t = np.zeros((n, N_CLASSES), dtype=dtype)
        t[np.arange(n), labels] = 1
    else:
        t = labels.astype(np.int64)
    return x, t


def _check_dtype(dtype, normalize: bool):
    dtype = np.dtype(dtype)
    if normalize and not np.issubdtype(dtype, np.floating):
        raise ValueError(f"normalize=True needs a floating dtype, got {dtype}")
    return dtype.type



# --------------------------------------------------------------------------- MNIST
_VERIFIED: Dict[tuple, bool] = {}


def _check_cache_files(files: Dict[str, Path]) -> List[Path]:
    """The cache's ``.gz`` files whose SHA256 is not the official one (memoised per size/mtime)."""
    bad = []
    for f in files.values():
        sha = MNIST_SHA256.get(f.name)
        if sha is None:  # a raw file someone unpacked there: the IDX checks still apply
            continue
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:
            _VERIFIED[key] = sha256_of(f) == sha
        if not _VERIFIED[key]:
            bad.append(f)
    return bad


def load_mnist(path: Optional[PathLike] = None, normalize: bool = True, flatten: bool = True,
               one_hot_label: bool = False, dtype=np.float32, download: bool = False) -> Dataset:
    """Load MNIST, the tutorials' way.

    Parameters
    ----------
    path : str or PathLike, optional
        Directory with the four IDX files (raw or ``.gz``); only this one is read. Default:
        ``$PYFASTGRAD_DATA`` when set, else :func:`default_cache_dir`.
    normalize : bool, default True
        Scale pixels to ``[0, 1]`` (``x / 255``) as ``dtype``; when False the
        ``uint8`` values 0..255 are kept and ``dtype`` is not applied to them.
    flatten : bool, default True
        Images as ``(N, 784)``; else ``(N, 1, 28, 28)``.
    one_hot_label : bool, default False
        Labels as one-hot ``(N, 10)`` of ``dtype``; else ``int64`` ``(N,)``.
    dtype : numpy dtype, default numpy.float32
        Floating type of normalized images and of one-hot labels.
    download : bool, default False
        Fetch missing files with :func:`download_mnist` into the directory read (``path``,
        ``$PYFASTGRAD_DATA`` or the user cache); corrupt user-cache files (wrong SHA256) are
        fetched again.

    Returns
    -------
    ((x_train, t_train), (x_test, t_test)) : tuple of numpy.ndarray
        60000 training and 10000 test examples. The arrays are new and
        writable on every call; the decoded files are cached in-process.

    Raises
    ------
    FileNotFoundError
        The directory does not hold the four files and ``download`` is False; the message
        names the directory, the missing files and how to fix it.
    ValueError
        A file is corrupt (bad magic, wrong length, bad labels, counts that disagree, or a cache
        file with the wrong SHA256); the message names it.
    DownloadError
        ``download=True`` and fetching failed.
    """
    scalar = _check_dtype(dtype, normalize)
    directory, origin = _search_dir(path)
    files = _find_files(directory)
    if files is not None and origin == "user cache":
        bad = _check_cache_files(files)
        if bad and not download:
            raise ValueError(f"{bad[0]} is corrupt (its SHA256 is not MNIST's); delete it, or call "
                             "load_mnist(download=True) / pyfastgrad.datasets.download_mnist() to fetch it again")
        if bad:
            files = None
    if files is None:
        if not download:
            raise FileNotFoundError(_not_found_message(directory, origin))
        download_mnist(directory)
        files = _find_files(directory)
        if files is None:  # removed between the download and now
            raise FileNotFoundError(_not_found_message(directory, origin))
    xtr, ttr, xte, tte = _load_raw(files)
    return (_format(xtr, ttr, normalize, flatten, one_hot_label, scalar),
            _format(xte, tte, normalize, flatten, one_hot_label, scalar))


# --------------------------------------------------------------------------- the shipped subset
def load_mnist_subset(normalize: bool = True, flatten: bool = True, one_hot_label: bool = False,
                      dtype=np.float32) -> Dataset:
    """The real MNIST subset shipped in the package: 12,000 training and 2,000 test images.

    Every fifth image (indices 0, 5, 10, ...) of the official training and test files, so both
    halves of the test set are represented. Needs no files and no network. Same arguments and
    return format as :func:`load_mnist`. MNIST is by Yann LeCun, Corinna Cortes and Christopher
    J.C. Burges; see ``pyfastgrad/datasets/data/mnist-subset/README.md`` for the licence.
    """
    scalar = _check_dtype(dtype, normalize)
    files = _find_files(SUBSET_DIR)
    if files is None:
        raise FileNotFoundError(f"the MNIST subset shipped with pyfastgrad is missing from {SUBSET_DIR} "
                                f"({', '.join(_missing(SUBSET_DIR))}); reinstall pyfastgrad")
    xtr, ttr, xte, tte = _load_raw(files)
    return (_format(xtr, ttr, normalize, flatten, one_hot_label, scalar),
            _format(xte, tte, normalize, flatten, one_hot_label, scalar))


def _write_subset(src: PathLike, dst: PathLike = SUBSET_DIR, step: int = SUBSET_STEP) -> Dict[str, str]:
    """Write every ``step``-th image and label of the official files in ``src`` to ``dst`` as IDX
    gzip (deterministic bytes: gzip level 9, mtime 0). Returns the SHA256 of each written file.

    This is how the shipped subset was made:
    ``python -c "from pyfastgrad.datasets.mnist import _write_subset; _write_subset('/dir/of/mnist')"``.
    """
    files = _find_files(Path(src))
    if files is None:
        raise FileNotFoundError(_not_found_message(Path(src), "the directory given"))
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    out = {}
    for role, f in files.items():
        a = read_idx(f)[::step]
        head = (IDX_MAGIC_IMAGES if a.ndim == 3 else IDX_MAGIC_LABELS).to_bytes(4, "big")
        head += b"".join(int(d).to_bytes(4, "big") for d in a.shape)
        data = gzip.compress(head + np.ascontiguousarray(a).tobytes(), compresslevel=9, mtime=0)
        name = MNIST_FILES[role] + ".gz"
        tmp = dst / (name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dst / name)
        out[name] = sha256_of(dst / name)
    return out


SUBSET_SHA256.update({
    "train-images-idx3-ubyte.gz": "56a7d21970e660bc995f9032d5524cd614f083489f318fad34f67043e09eb35b",
    "train-labels-idx1-ubyte.gz": "d90c6045aa8edf06566887e50517ce1d14b33dcd10cf0007ee1e9092f15baa52",
    "t10k-images-idx3-ubyte.gz": "21975b872a7f02dcad2075e764a44f64c147020929d92cd0fb8da555a730017a",
    "t10k-labels-idx1-ubyte.gz": "6fb827417518d943611b31c7b601f2180323466786e2fc4cc87d2705a9af3fa7",
})


# --------------------------------------------------------------------------- what `train` uses
@dataclass(frozen=True)
class DataSource:
    """Where :func:`load_data` got its data: ``name`` is ``'mnist'`` or ``'mnist-subset'``."""

    name: str
    directory: Path
    n_train: int
    n_test: int
    note: Optional[str] = None  # one line: why the subset, when it is the subset

    def __str__(self) -> str:
        what = "MNIST" if self.name == "mnist" else "MNIST subset shipped with pyfastgrad"
        return f"{what} ({self.n_train:,} train / {self.n_test:,} test images, {self.directory})"


def _offline_env() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def load_data(path: Optional[PathLike] = None, *, download: bool = True, warn: bool = True,
              normalize: bool = True, flatten: bool = True, one_hot_label: bool = False,
              dtype=np.float32) -> Tuple[Dataset, DataSource]:
    """MNIST if it can be had, else the real MNIST subset shipped in the package (and say so).

    Parameters
    ----------
    path : str or PathLike, optional
        Read MNIST from this directory only; a directory without the files is an error
        (:class:`FileNotFoundError`), never a fallback. Same for ``$PYFASTGRAD_DATA`` when set.
    download : bool, default True
        With neither set: download MNIST into the user cache when it is not there (ignored
        when ``$PYFASTGRAD_OFFLINE`` is set to 1). When that fails, or with ``download=False``
        and no cached copy, the shipped subset is used.
    warn : bool, default True
        Issue a one-line :class:`DatasetFallbackWarning` on fallback (the returned
        ``source.note`` holds the same line for callers that print it themselves).
    normalize, flatten, one_hot_label, dtype
        As in :func:`load_mnist`.

    Returns
    -------
    data : tuple
        ``((x_train, t_train), (x_test, t_test))``.
    source : DataSource
        ``source.name`` is ``'mnist'`` or ``'mnist-subset'``; ``str(source)`` describes it.

    Notes
    -----
    Corrupt files are never silently replaced by the subset: they raise :class:`ValueError`
    (corrupt cache files are downloaded again when downloading is allowed).
    """
    fmt = dict(normalize=normalize, flatten=flatten, one_hot_label=one_hot_label, dtype=dtype)
    explicit = path is not None or bool(os.environ.get(ENV_DATA))
    directory, origin = _search_dir(path)
    allow = download and not explicit and not _offline_env()
    try:
        data = load_mnist(path, download=allow, **fmt)
        return data, DataSource("mnist", directory.resolve(), len(data[0][1]), len(data[1][1]))
    except FileNotFoundError:
        if explicit:
            raise
        why = f"MNIST is not in {directory} and downloads are off (--offline / ${ENV_OFFLINE})"
    except DownloadError as exc:
        why = f"MNIST is not on this machine and could not be downloaded: {exc.reason or exc}"
    data = load_mnist_subset(**fmt)
    src = DataSource("mnist-subset", SUBSET_DIR, len(data[0][1]), len(data[1][1]))
    note = (f"{why}; using the real MNIST subset shipped with pyfastgrad ({src.n_train:,} train / "
            f"{src.n_test:,} test images). Full MNIST: a network, --data DIR or {ENV_DATA}=DIR.")
    if warn:
        warnings.warn(note, DatasetFallbackWarning, stacklevel=2)
    return data, DataSource(src.name, src.directory, src.n_train, src.n_test, note)
