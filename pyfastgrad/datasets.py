"""Data sets: MNIST from IDX files, and a small procedurally drawn digit set.

MNIST
-----
:func:`load_mnist` has the tutorials' signature and return shape,
``(x_train, t_train), (x_test, t_test)``. It reads the four IDX files
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each gzip-compressed
(``.gz``) or raw, from the first directory that holds all four of them:

1. the ``path`` argument,
2. the environment variable ``PYFASTGRAD_DATA``,
3. the user cache directory, ``$XDG_CACHE_HOME/pyfastgrad/mnist`` or
   ``~/.cache/pyfastgrad/mnist`` (where :func:`download_mnist` puts them).

The IDX parser is written here (no third-party reader) and validates every
file: magic number, payload length against the header, labels in 0..9 and
matching image/label counts. A bad file raises :class:`ValueError` naming it.

Decoded files are cached in-process as read-only ``uint8`` arrays, keyed by
the resolved file paths (and their size and mtime, so a replaced file is read
again). Every call returns **fresh, writable arrays** built from that cache,
so callers may modify what they get without corrupting later calls.

Embedded digits
---------------
:func:`load_digits_embedded` draws a small MNIST-like set (28x28, 0..255,
digits 0-9) procedurally from stroke skeletons with random affine and smooth
warps, stroke widths and noise. It needs no files, is deterministic for a
seed and is the fallback of :func:`load_data` when MNIST is not available.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "MNIST_FILES", "MNIST_SHA256", "MNIST_MIRRORS", "DownloadError", "DatasetFallbackWarning",
    "load_mnist", "download_mnist", "mnist_available", "find_mnist_dir", "default_cache_dir",
    "read_idx", "clear_cache", "load_digits_embedded", "load_data",
]

PathLike = Union[str, "os.PathLike[str]"]
Dataset = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]

ENV_DATA = "PYFASTGRAD_DATA"
ENV_MIRRORS = "PYFASTGRAD_MNIST_MIRRORS"

# Role -> base file name (without .gz), in the order the loader needs them.
MNIST_FILES: Dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA256 of the gzip-compressed files (the known-good copies' SHA256SUMS).
MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}

# Tried in order; each is a base URL the four .gz names are appended to.
# Override per call (``mirrors=``), by assigning this list, or with the
# environment variable PYFASTGRAD_MNIST_MIRRORS (comma-separated URLs).
MNIST_MIRRORS: List[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

IDX_MAGIC_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
IDX_MAGIC_LABELS = 0x00000801  # unsigned byte, 1 dimension
N_CLASSES = 10


class DownloadError(OSError):
    """Raised when :func:`download_mnist` cannot fetch or verify a file."""


class DatasetFallbackWarning(UserWarning):
    """Issued by :func:`load_data` when it falls back to the embedded digits."""


# --------------------------------------------------------------------------- locating files
def default_cache_dir() -> Path:
    """Return the user cache directory for MNIST.

    Returns
    -------
    Path
        ``$XDG_CACHE_HOME/pyfastgrad/mnist`` when ``XDG_CACHE_HOME`` is set
        and non-empty, else ``~/.cache/pyfastgrad/mnist``. It may not exist.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyfastgrad" / "mnist"


def _candidate_dirs(path: Optional[PathLike]) -> List[Tuple[Path, str]]:
    """Directories to search, in order, each with where it came from."""
    dirs: List[Tuple[Path, str]] = []
    if path is not None:
        dirs.append((Path(path).expanduser(), "path argument"))
    env = os.environ.get(ENV_DATA)
    if env:
        dirs.append((Path(env).expanduser(), ENV_DATA))
    dirs.append((default_cache_dir(), "user cache"))
    return dirs


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


def find_mnist_dir(path: Optional[PathLike] = None) -> Optional[Path]:
    """Return the first directory holding all four MNIST IDX files.

    Parameters
    ----------
    path : str or PathLike, optional
        Searched first; then ``$PYFASTGRAD_DATA``, then :func:`default_cache_dir`.

    Returns
    -------
    Path or None
        The resolved directory, or None when none of them has all four files
        (each as ``name`` or ``name.gz``).
    """
    for directory, _ in _candidate_dirs(path):
        if _find_files(directory) is not None:
            return directory.resolve()
    return None


def mnist_available(path: Optional[PathLike] = None) -> bool:
    """Return True when :func:`find_mnist_dir` finds the MNIST files."""
    return find_mnist_dir(path) is not None


def _not_found_message(path: Optional[PathLike]) -> str:
    searched = []
    for directory, origin in _candidate_dirs(path):
        if not directory.is_dir():
            state = "does not exist"
        else:
            missing = [name for name in MNIST_FILES.values()
                       if not (directory / name).is_file() and not (directory / (name + ".gz")).is_file()]
            state = "missing " + ", ".join(missing)
        searched.append(f"  - {directory} ({origin}): {state}")
    if os.environ.get(ENV_DATA) is None:
        searched.append(f"  ({ENV_DATA} is not set)")
    names = ", ".join(f"{n}[.gz]" for n in MNIST_FILES.values())
    return (
        "MNIST IDX files not found. Needed in one directory: " + names + ".\n"
        "Searched:\n" + "\n".join(searched) + "\n"
        "To fix, do one of:\n"
        "  - pass path='/dir/with/idx/files' to load_mnist() / load_data();\n"
        f"  - set {ENV_DATA}=/dir/with/idx/files;\n"
        "  - call pyfastgrad.datasets.download_mnist() (or load_mnist(download=True)) "
        f"to fetch them into {default_cache_dir()}."
    )


# --------------------------------------------------------------------------- IDX parsing
def _read_bytes(file: Path) -> bytes:
    """Read a file, gunzipping it when it is gzip data (by magic, not name)."""
    raw = file.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{file}: corrupt or truncated gzip data ({exc}); "
                         "delete it and download it again") from exc


def _parse_idx(data: bytes, file: Path) -> np.ndarray:
    """Decode IDX ``data`` (unsigned-byte images or labels) into a read-only array."""
    if len(data) < 8:
        raise ValueError(f"{file}: too short for an IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[0:4], "big")
    if magic == IDX_MAGIC_IMAGES:
        if len(data) < 16:
            raise ValueError(f"{file}: too short for an IDX image header ({len(data)} bytes)")
        n, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
        shape: Tuple[int, ...] = (n, rows, cols)
        offset = 16
    elif magic == IDX_MAGIC_LABELS:
        shape = (int.from_bytes(data[4:8], "big"),)
        offset = 8
    else:
        raise ValueError(
            f"{file}: bad IDX magic number 0x{magic:08x} (expected 0x{IDX_MAGIC_IMAGES:08x} "
            f"for images or 0x{IDX_MAGIC_LABELS:08x} for labels); not an MNIST IDX file?")
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(data) - offset
    if payload != expected:
        what = "truncated" if payload < expected else "has trailing data"
        raise ValueError(f"{file}: payload {what}: header {shape} needs {expected} bytes, "
                         f"file has {payload}")
    # frombuffer on immutable bytes is zero-copy and read-only: safe to cache.
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=offset).reshape(shape)


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
    return _parse_idx(_read_bytes(file), file)


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
def load_mnist(path: Optional[PathLike] = None, normalize: bool = True, flatten: bool = True,
               one_hot_label: bool = False, dtype=np.float32, download: bool = False) -> Dataset:
    """Load MNIST, the tutorials' way.

    Parameters
    ----------
    path : str or PathLike, optional
        Directory with the four IDX files (raw or ``.gz``). Searched first,
        then ``$PYFASTGRAD_DATA``, then :func:`default_cache_dir`.
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
        When no directory has the files, fetch them with
        :func:`download_mnist` into ``path`` (if given) or the cache dir.

    Returns
    -------
    ((x_train, t_train), (x_test, t_test)) : tuple of numpy.ndarray
        60000 training and 10000 test examples. The arrays are new and
        writable on every call; the decoded files are cached in-process.

    Raises
    ------
    FileNotFoundError
        No directory has the files and ``download`` is False; the message
        lists the directories searched and the three ways to fix it.
    ValueError
        A file is corrupt (bad magic, wrong length, bad labels, counts that
        disagree); the message names it.
    DownloadError
        ``download=True`` and fetching failed.
    """
    scalar = _check_dtype(dtype, normalize)
    directory = find_mnist_dir(path)
    if directory is None:
        if not download:
            raise FileNotFoundError(_not_found_message(path))
        directory = download_mnist(path)
    files = _find_files(directory)
    if files is None:  # removed between the search and now
        raise FileNotFoundError(_not_found_message(path))
    xtr, ttr, xte, tte = _load_raw(files)
    return (_format(xtr, ttr, normalize, flatten, one_hot_label, scalar),
            _format(xte, tte, normalize, flatten, one_hot_label, scalar))


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mirror_list(mirrors: Optional[Sequence[str]]) -> List[str]:
    if mirrors is not None:
        return list(mirrors)
    env = os.environ.get(ENV_MIRRORS)
    if env:
        return [m.strip() for m in env.split(",") if m.strip()]
    return list(MNIST_MIRRORS)


def download_mnist(dest: Optional[PathLike] = None, mirrors: Optional[Sequence[str]] = None,
                   timeout: float = 30.0, force: bool = False, quiet: bool = False) -> Path:
    """Fetch the four MNIST ``.gz`` files and verify their SHA256.

    Parameters
    ----------
    dest : str or PathLike, optional
        Target directory (created if needed); default :func:`default_cache_dir`.
    mirrors : sequence of str, optional
        Base URLs tried in order for each file (``base + name``; ``file://``
        works too). Default ``$PYFASTGRAD_MNIST_MIRRORS`` (comma-separated)
        or :data:`MNIST_MIRRORS`.
    timeout : float, default 30.0
        Socket timeout in seconds per request.
    force : bool, default False
        Download again even when a file with the right checksum is present.
    quiet : bool, default False
        Do not print one line per downloaded file.

    Returns
    -------
    Path
        The resolved directory holding the four verified files.

    Raises
    ------
    DownloadError
        A file could not be fetched from any mirror, or every copy had the
        wrong checksum; the message lists each mirror's error.
    """
    target = Path(dest).expanduser() if dest is not None else default_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    urls = _mirror_list(mirrors)
    if not urls:
        raise DownloadError("no MNIST mirrors configured")
    for name, sha in MNIST_SHA256.items():
        final = target / name
        if not force and final.is_file() and _sha256(final) == sha:
            continue
        errors = []
        for base in urls:
            url = base if base.endswith("/") else base + "/"
            url += name
            try:
                _fetch(url, final, sha, timeout)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                errors.append(f"  - {url}: {exc}")
                continue
            if not quiet:
                print(f"pyfastgrad: downloaded {url} -> {final}")
            break
        else:
            raise DownloadError(
                f"could not download {name} into {target}:\n" + "\n".join(errors) + "\n"
                "Check the network (or pass mirrors=[...] / set " + ENV_MIRRORS + "), or fetch the "
                f"four MNIST .gz files by hand and set {ENV_DATA}=/dir/with/idx/files.")
    return target.resolve()


def _fetch(url: str, final: Path, sha: str, timeout: float) -> None:
    """Stream ``url`` to a temp file next to ``final``, check it, then rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=final.name + ".", suffix=".part", dir=final.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 16), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != sha:
            raise ValueError(f"SHA256 mismatch (got {h.hexdigest()}, expected {sha})")
        os.replace(tmp, final)  # atomic: a half-written file never has the final name
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------- embedded digits
def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 8) -> np.ndarray:
    """Polyline of an elliptic arc; angles in degrees, y pointing down (90 = bottom)."""
    a = np.deg2rad(np.linspace(a0, a1, n + 1))
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def _poly(*points: Tuple[float, float]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _skeletons() -> List[List[np.ndarray]]:
    """Per digit, a list of variants; a variant is an ``(S, 4)`` array of segments.

    Units: the glyph spans y in [-1, 1] (top to bottom) and x in about
    [-0.6, 0.6]; variants mimic common ways people write each digit.
    """
    def segs(*polylines: np.ndarray) -> np.ndarray:
        return np.concatenate([np.hstack([p[:-1], p[1:]]) for p in polylines], axis=0)

    loop = lambda cx, cy, rx, ry, n=12: _arc(cx, cy, rx, ry, -90, 270, n)  # noqa: E731
    d: List[List[np.ndarray]] = [[] for _ in range(N_CLASSES)]
    d[0] = [segs(loop(0, 0, 0.55, 0.95, 14)),
            segs(_arc(0, 0, 0.5, 0.95, -70, 300, 14))]  # not quite closed at the top
    d[1] = [segs(_poly((0.05, -1), (-0.05, 1))),
            segs(_poly((-0.3, -0.65), (0.1, -1), (0.0, 1))),
            segs(_poly((-0.3, -0.65), (0.1, -1), (0.0, 1)), _poly((-0.3, 1), (0.3, 1)))]
    d[2] = [segs(np.vstack([_arc(0, -0.45, 0.5, 0.52, 180, 390, 8), _poly((-0.55, 1), (0.6, 1))])),
            # the "2" with a small loop at the bottom-left
            segs(np.vstack([_arc(0, -0.45, 0.5, 0.52, 190, 400, 8),
                            _poly((-0.5, 0.95), (-0.3, 0.72), (-0.15, 0.88), (0.05, 1.0), (0.6, 0.95))]))]
    d[3] = [segs(np.vstack([_arc(0, -0.5, 0.45, 0.5, 200, 450, 8), _arc(0, 0.5, 0.5, 0.5, 270, 520, 8)[1:]])),
            segs(_poly((-0.45, -1), (0.45, -1), (-0.05, -0.1)), _arc(0, 0.45, 0.5, 0.55, 270, 520, 9))]
    d[4] = [segs(_poly((0.2, -1), (-0.55, 0.35), (0.6, 0.35)), _poly((0.3, -0.4), (0.3, 1))),
            segs(_poly((-0.45, -1), (-0.5, 0.3), (0.6, 0.3)), _poly((0.3, -1), (0.3, 1)))]
    d[5] = [segs(np.vstack([_poly((0.5, -1), (-0.35, -1), (-0.45, -0.1)), _arc(0, 0.4, 0.5, 0.55, 220, 500, 9)])),
            segs(_poly((0.5, -1), (-0.35, -1)),
                 np.vstack([_poly((-0.35, -1), (-0.45, -0.05)), _arc(0, 0.42, 0.52, 0.52, 230, 490, 9)]))]
    d[6] = [segs(np.vstack([_poly((0.4, -1), (0.0, -0.72), (-0.35, -0.2)), _arc(0, 0.45, 0.48, 0.52, 180, 540, 12)])),
            segs(np.vstack([_arc(0.55, 0.2, 1.0, 1.2, 245, 180, 6), _arc(0.02, 0.5, 0.43, 0.47, 180, 530, 12)]))]
    d[7] = [segs(_poly((-0.55, -1), (0.55, -1), (-0.1, 1))),
            segs(_poly((-0.55, -1), (0.55, -1), (-0.1, 1)), _poly((-0.25, 0.0), (0.4, 0.0))),
            segs(_poly((-0.55, -0.8), (-0.5, -1), (0.55, -1), (0.05, 1)))]
    d[8] = [segs(loop(0, -0.5, 0.4, 0.48), loop(0, 0.48, 0.5, 0.52)),
            segs(np.vstack([_arc(0, -0.5, 0.42, 0.48, 0, -270, 10), _arc(0, 0.5, 0.5, 0.5, -90, 270, 12)[::-1]]))]
    d[9] = [segs(loop(0, -0.45, 0.48, 0.52), _poly((0.48, -0.45), (0.4, 0.3), (0.2, 1))),
            segs(loop(0, -0.45, 0.48, 0.52), _poly((0.48, -0.5), (0.45, 1)))]
    return d


_SKELETONS = _skeletons()
_SIZE = 28


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one ``uint8`` 28x28 image per label; fully vectorised per variant group."""
    n = labels.shape[0]
    out = np.zeros((n, _SIZE * _SIZE), dtype=np.float32)
    # Per-image random draws, made up front in a fixed order so the result
    # depends only on (labels, rng state), not on how images are grouped.
    variant_u = rng.random(n)
    angle = np.deg2rad(np.clip(rng.normal(0.0, 7.0, n), -18, 18))
    shear = rng.uniform(-0.3, 0.3, n)
    height = rng.uniform(8.0, 10.0, n)  # half-height in pixels
    aspect = rng.uniform(0.75, 1.25, n)
    shift = rng.uniform(-2.0, 2.0, (n, 2))
    # Smooth warp: two low-frequency sine displacements per axis.
    w_amp = rng.uniform(0.0, 0.12, (n, 2))
    w_freq = rng.uniform(1.0, 2.5, (n, 2, 2))
    w_phase = rng.uniform(0, 2 * np.pi, (n, 2))
    half_width = rng.uniform(0.9, 1.9, n)
    peak = rng.uniform(0.8, 1.0, n)

    # Combined linear map (pixels per unit): rotation @ shear @ scale.
    c, s = np.cos(angle), np.sin(angle)
    sx, sy = height * aspect, height
    # rows of [[a, b], [d, e]] so that x' = a*x + b*y, y' = d*x + e*y
    a = c * sx
    b = c * shear * sy - s * sy
    dd = s * sx
    e = s * shear * sy + c * sy
    centre = (_SIZE - 1) / 2.0 + shift

    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE]
    px = xx.ravel().astype(np.float32)
    py = yy.ravel().astype(np.float32)

    for digit in range(N_CLASSES):
        variants = _SKELETONS[digit]
        choice = np.minimum((variant_u * len(variants)).astype(int), len(variants) - 1)
        for v, seg in enumerate(variants):
            idx = np.nonzero((labels == digit) & (choice == v))[0]
            if idx.size == 0:
                continue
            # endpoints (m, S, 2) in glyph units, then warp and map to pixels
            pts = np.stack([seg[:, 0:2], seg[:, 2:4]], axis=1).reshape(-1, 2)  # (2S, 2)
            gx, gy = pts[None, :, 0], pts[None, :, 1]
            wx = w_amp[idx, 0:1] * np.sin(w_freq[idx, 0, 0:1] * gy + w_freq[idx, 0, 1:2] * gx + w_phase[idx, 0:1])
            wy = w_amp[idx, 1:2] * np.sin(w_freq[idx, 1, 0:1] * gx + w_freq[idx, 1, 1:2] * gy + w_phase[idx, 1:2])
            gx, gy = gx + wx, gy + wy
            X = (a[idx, None] * gx + b[idx, None] * gy + centre[idx, 0:1]).astype(np.float32)
            Y = (dd[idx, None] * gx + e[idx, None] * gy + centre[idx, 1:2]).astype(np.float32)
            X = X.reshape(idx.size, -1, 2)  # [..., 0] start, [..., 1] end
            Y = Y.reshape(idx.size, -1, 2)
            best = np.full((idx.size, px.size), np.inf, dtype=np.float32)
            for k in range(seg.shape[0]):
                ax, ay = X[:, k, 0:1], Y[:, k, 0:1]
                dx, dy = X[:, k, 1:2] - ax, Y[:, k, 1:2] - ay
                len2 = np.maximum(dx * dx + dy * dy, np.float32(1e-6))
                rx, ry = px - ax, py - ay  # (m, 784)
                t = np.clip((rx * dx + ry * dy) / len2, 0.0, 1.0)
                rx -= t * dx
                ry -= t * dy
                np.minimum(best, rx * rx + ry * ry, out=best)
            # Soft-edged stroke: full inside half_width, a ~1 px linear ramp outside.
            ink = np.clip(half_width[idx, None] + 0.5 - np.sqrt(best), 0.0, 1.0)
            out[idx] = ink * peak[idx, None]

    # Light noise: uneven ink on the strokes and a few faint specks elsewhere.
    out *= 1.0 - 0.2 * rng.random(out.shape, dtype=np.float32) * (out > 0)
    specks = rng.random(out.shape, dtype=np.float32) < 0.004
    out[specks] = np.maximum(out[specks], rng.uniform(0.05, 0.4, int(specks.sum())).astype(np.float32))
    return np.rint(out * 255).astype(np.uint8).reshape(n, _SIZE, _SIZE)


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` labels with every class count within one of the others, shuffled."""
    return rng.permutation(np.arange(n) % N_CLASSES).astype(np.uint8)


def load_digits_embedded(n_train: int = 2000, n_test: int = 500, seed: int = 0,
                         normalize: bool = True, flatten: bool = True,
                         one_hot_label: bool = False, dtype=np.float32) -> Dataset:
    """Make a small MNIST-like digit set procedurally (no files needed).

    Each digit 0-9 is drawn from one of a few stroke skeletons (polylines and
    arcs) with a random rotation (sd 7 deg, at most 18), shear, scale and aspect,
    a smooth random warp, a shift of up to +-2 px, a random stroke width,
    uneven ink and sparse background specks. Values are 0..255 on a mostly
    zero background, like MNIST. A small two-layer net reaches about 95%
    test accuracy after a few epochs; it is not perfectly separable.

    Parameters
    ----------
    n_train, n_test : int
        Number of training / test images; classes are balanced (counts
        differ by at most one).
    seed : int, default 0
        The same seed always gives the same arrays. Train and test come from
        independent streams, so ``n_train`` does not change the test set.
    normalize, flatten, one_hot_label, dtype
        As in :func:`load_mnist`.

    Returns
    -------
    ((x_train, t_train), (x_test, t_test)) : tuple of numpy.ndarray
        Same format as :func:`load_mnist`.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train}, {n_test}")
    scalar = _check_dtype(dtype, normalize)
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    result = []
    for count, seq in ((n_train, train_seq), (n_test, test_seq)):
        rng = np.random.default_rng(seq)
        labels = _balanced_labels(count, rng)
        images = _render(labels, rng)
        result.append(_format(images, labels, normalize, flatten, one_hot_label, scalar))
    return result[0], result[1]


# --------------------------------------------------------------------------- either
_FORMAT_KEYS = {"normalize", "flatten", "one_hot_label", "dtype"}
_MNIST_KEYS = {"download"}
_EMBEDDED_KEYS = {"n_train", "n_test", "seed"}


def load_data(path: Optional[PathLike] = None, allow_fallback: bool = True, *,
              warn: bool = True, **kw) -> Tuple[Dataset, str]:
    """Load MNIST when it is available, else the embedded digits.

    Parameters
    ----------
    path : str or PathLike, optional
        Passed to :func:`load_mnist` (searched before ``$PYFASTGRAD_DATA``
        and the cache dir).
    allow_fallback : bool, default True
        When False, a missing MNIST raises :class:`FileNotFoundError`.
    warn : bool, default True
        Issue a one-line :class:`DatasetFallbackWarning` on fallback
        (turn it off when the caller prints ``source_name`` itself).
    **kw
        ``normalize``, ``flatten``, ``one_hot_label``, ``dtype`` go to either
        loader; ``download`` only to :func:`load_mnist`; ``n_train``,
        ``n_test``, ``seed`` only to :func:`load_digits_embedded`.

    Returns
    -------
    data : tuple
        ``((x_train, t_train), (x_test, t_test))``.
    source_name : str
        ``"mnist"`` or ``"embedded-digits"``.

    Notes
    -----
    Only missing files trigger the fallback; corrupt MNIST files still raise
    :class:`ValueError`, so a broken download is never silently replaced.
    """
    unknown = set(kw) - _FORMAT_KEYS - _MNIST_KEYS - _EMBEDDED_KEYS
    if unknown:
        raise TypeError(f"load_data() got unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    fmt = {k: v for k, v in kw.items() if k in _FORMAT_KEYS}
    mnist_kw = {k: v for k, v in kw.items() if k in _MNIST_KEYS}
    try:
        return load_mnist(path, **fmt, **mnist_kw), "mnist"
    except FileNotFoundError:
        if not allow_fallback:
            raise
    emb_kw = {k: v for k, v in kw.items() if k in _EMBEDDED_KEYS}
    if warn:
        warnings.warn(
            f"MNIST not found (pass path=, set {ENV_DATA}=/dir/with/idx/files, or call "
            "pyfastgrad.datasets.download_mnist()); using the embedded synthetic digits instead.",
            DatasetFallbackWarning, stacklevel=2)
    return load_digits_embedded(**emb_kw, **fmt), "embedded-digits"
