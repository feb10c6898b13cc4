"""CIFAR-10 from the official *binary* batches (never pickles).

The binary version (``cifar-10-binary.tar.gz``, 162 MB, from the dataset authors' page) unpacks to
``cifar-10-batches-bin/`` with ``data_batch_1.bin`` ... ``data_batch_5.bin`` (10,000 images each)
and ``test_batch.bin``. Every record is 3073 bytes: one label byte (0..9), then the 32x32 image
as 1024 red, 1024 green and 1024 blue bytes, each plane row by row. :func:`load_cifar10` reads
these files from a directory or straight from the tarball; nothing is unpickled and nothing is
extracted to disk.

Every file is checked before anything is allocated for it: its size (declared by the file system
or the tar header) must be a whole number of records and at most :data:`MAX_RECORDS` records, the
bytes actually read must equal that size, and every label must be 0..9. A bad file raises
:class:`ValueError` naming it.

CIFAR-10 is by Alex Krizhevsky, Vinod Nair and Geoffrey Hinton ("Learning Multiple Layers of
Features from Tiny Images", 2009): https://www.cs.toronto.edu/~kriz/cifar.html
"""
from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._download import DEFAULT_TIMEOUT, DownloadError, _kind, _short, default_cache_dir

__all__ = ["CIFAR10_CLASSES", "CIFAR10_TRAIN_FILES", "CIFAR10_TEST_FILE", "CIFAR10_URL", "CIFAR10_MD5",
           "RECORD_BYTES", "MAX_RECORDS", "load_cifar10", "read_cifar10_batch", "download_cifar10",
           "find_cifar10", "cifar10_cache_dir"]

PathLike = Union[str, "os.PathLike[str]"]

CIFAR10_CLASSES: Tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                    "ship", "truck")
CIFAR10_TRAIN_FILES: Tuple[str, ...] = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_DIRNAME = "cifar-10-batches-bin"  # what the tarball unpacks to
CIFAR10_TARBALL = "cifar-10-binary.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the dataset's page
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # label byte + 3072 pixel bytes
MAX_RECORDS = 60000  # per file: the official ones hold 10,000; more is not a CIFAR-10 batch
ENV_CIFAR = "PYFASTGRAD_CIFAR10"

Dataset = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def cifar10_cache_dir() -> Path:
    """The per-user cache directory for CIFAR-10: ``cifar10`` beside the MNIST cache
    (``~/.cache/pyfastgrad/cifar10`` on Linux)."""
    return default_cache_dir().parent / "cifar10"


def _check_size(size: int, name: str) -> int:
    """Number of records in ``size`` bytes, or a ValueError naming the file."""
    if size == 0 or size % RECORD_BYTES:
        raise ValueError(f"{name}: {size} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 "
                         "records (1 label byte + 3072 pixel bytes); truncated, or not a binary-version batch?")
    n = size // RECORD_BYTES
    if n > MAX_RECORDS:
        raise ValueError(f"{name}: {n} records is more than a CIFAR-10 batch holds (at most {MAX_RECORDS})")
    return n


def _parse(data: bytes, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """Records -> (images uint8 (n, 3, 32, 32), labels uint8 (n,))."""
    n = len(data) // RECORD_BYTES
    rec = np.frombuffer(data, dtype=np.uint8).reshape(n, RECORD_BYTES)
    labels = rec[:, 0].copy()
    if labels.size and int(labels.max()) >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise ValueError(f"{name}: record {bad} has label {int(labels[bad])}, outside 0..9; "
                         "not a CIFAR-10 binary batch (CIFAR-100's records are 3074 bytes)")
    return rec[:, 1:].reshape((n,) + IMAGE_SHAPE).copy(), labels


def _read_exact(stream, size: int, name: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError(f"{name}: truncated: {size} bytes declared, {len(data)} present")
    return data


def read_cifar10_batch(file: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read one binary-version batch file (``data_batch_1.bin`` ... ``test_batch.bin``).

    Returns
    -------
    images : ndarray, uint8, shape (n, 3, 32, 32)
        Channels red, green, blue; each 32x32 plane row by row.
    labels : ndarray, uint8, shape (n,)
        Class indices 0..9 (names in :data:`CIFAR10_CLASSES`).

    Raises
    ------
    ValueError
        The size is not a whole number of 3073-byte records (or more than :data:`MAX_RECORDS`),
        fewer bytes could be read than the size, or a label is outside 0..9.
    """
    file = Path(file)
    n = _check_size(file.stat().st_size, str(file))
    with open(file, "rb") as f:
        return _parse(_read_exact(f, n * RECORD_BYTES, str(file)), str(file))


def _batch_dir(root: Path) -> Optional[Path]:
    """``root`` or ``root/cifar-10-batches-bin`` when it holds all six batch files."""
    for d in (root, root / CIFAR10_DIRNAME):
        if all((d / name).is_file() for name in CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)):
            return d
    return None


def find_cifar10(path: Optional[PathLike] = None) -> Optional[Path]:
    """Where :func:`load_cifar10` would read: a directory holding the six ``.bin`` files (or its
    ``cifar-10-batches-bin`` subdirectory) or a tarball, found at ``path``, else
    ``$PYFASTGRAD_CIFAR10``, else :func:`cifar10_cache_dir`. None when nothing is there."""
    env = os.environ.get(ENV_CIFAR)
    root = Path(path if path is not None else (env or cifar10_cache_dir())).expanduser()
    if root.is_file():
        return root
    d = _batch_dir(root)
    if d is not None:
        return d
    tarball = root / CIFAR10_TARBALL
    return tarball if tarball.is_file() else None


def _read_tarball(file: Path, names: Sequence[str]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The named batches from a (gzip) tarball, read member by member without extracting."""
    out: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(file, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()
                       if m.isfile() and Path(m.name).name in names}
            missing = [n for n in names if n not in members]
            if missing:
                raise FileNotFoundError(f"{file}: the tarball has no {', '.join(missing)}")
            for name in names:
                m = members[name]
                what = f"{file}:{m.name}"
                n = _check_size(m.size, what)  # the header's size, checked before reading
                stream = tar.extractfile(m)
                if stream is None:  # pragma: no cover (isfile() above)
                    raise ValueError(f"{what}: cannot be read")
                out[name] = _parse(_read_exact(stream, n * RECORD_BYTES, what), what)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{file}: corrupt or truncated tarball ({exc}); delete it and download it again") from exc
    return out


def _not_found(path: Optional[PathLike]) -> str:
    where = (f"{path}" if path is not None else
             f"${ENV_CIFAR} ({os.environ[ENV_CIFAR]})" if os.environ.get(ENV_CIFAR) else
             f"the user cache {cifar10_cache_dir()}")
    return (f"CIFAR-10 not found in {where}: it needs the binary version's six files "
            f"({', '.join(CIFAR10_TRAIN_FILES)}, {CIFAR10_TEST_FILE}) in one directory, or the tarball "
            f"{CIFAR10_TARBALL} ({CIFAR10_URL}). Pass load_cifar10(path), set {ENV_CIFAR}=DIR, or "
            "load_cifar10(download=True) / download_cifar10() where a network exists.")


def load_cifar10(path: Optional[PathLike] = None, normalize: bool = True, flatten: bool = True,
                 one_hot_label: bool = False, dtype=np.float32, download: bool = False,
                 train_batches: int = 5) -> Dataset:
    """Load CIFAR-10 from the official binary batches, the tutorials' return shape.

    Parameters
    ----------
    path : str or PathLike, optional
        A directory with ``data_batch_1.bin`` ... ``data_batch_5.bin`` and ``test_batch.bin``
        (or with ``cifar-10-batches-bin/`` holding them, or with the tarball), or the tarball
        ``cifar-10-binary.tar.gz`` itself. Default ``$PYFASTGRAD_CIFAR10``, else
        :func:`cifar10_cache_dir`.
    normalize : bool, default True
        Pixels as ``dtype`` in [0, 1] (``x / 255``); else the ``uint8`` values.
    flatten : bool, default True
        Images as ``(N, 3072)`` (red plane, green, blue); else ``(N, 3, 32, 32)``.
    one_hot_label : bool, default False
        Labels one-hot ``(N, 10)`` of ``dtype``; else ``int64`` ``(N,)``.
    dtype : numpy float dtype, default float32
    download : bool, default False
        When nothing is found at the default place, fetch the tarball there first
        (:func:`download_cifar10`; MD5-checked).
    train_batches : int, default 5
        How many of the five training batches to read (1..5).

    Returns
    -------
    ((x_train, t_train), (x_test, t_test))
        50,000 training and 10,000 test images for the real set (fewer for smaller files).

    Raises
    ------
    FileNotFoundError
        Nothing found (the message says what is needed and how to get it).
    ValueError
        A file that is not a valid binary-version batch, or a corrupt tarball.
    """
    if not 1 <= int(train_batches) <= 5:
        raise ValueError(f"train_batches must be 1..5, got {train_batches}")
    dtype = np.dtype(dtype)
    if normalize and dtype.kind != "f":
        raise ValueError(f"normalize=True needs a floating dtype, got {dtype}")
    src = find_cifar10(path)
    if src is None:
        if download and path is None:
            dest = Path(os.environ.get(ENV_CIFAR) or cifar10_cache_dir()).expanduser()
            src = download_cifar10(dest)
        else:
            raise FileNotFoundError(_not_found(path))
    names = list(CIFAR10_TRAIN_FILES[:int(train_batches)]) + [CIFAR10_TEST_FILE]
    if src.is_file():
        batches = _read_tarball(src, names)
    else:
        batches = {n: read_cifar10_batch(src / n) for n in names}

    def fmt(parts: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
        x = images.astype(dtype) / dtype.type(255) if normalize else images
        x = x.reshape(len(x), -1) if flatten else x
        if one_hot_label:
            t = np.zeros((len(labels), len(CIFAR10_CLASSES)), dtype=dtype if dtype.kind == "f" else np.float32)
            t[np.arange(len(labels)), labels] = 1
            return x, t
        return x, labels

    return fmt([batches[n] for n in names[:-1]]), fmt([batches[CIFAR10_TEST_FILE]])


def download_cifar10(dest: Optional[PathLike] = None, url: str = CIFAR10_URL,
                     timeout: Union[float, Tuple[float, float]] = DEFAULT_TIMEOUT, retries: int = 2,
                     progress: Optional[bool] = None) -> Path:
    """Fetch ``cifar-10-binary.tar.gz`` (162 MB) into ``dest`` (default :func:`cifar10_cache_dir`).

    The MNIST downloader's machinery (pooch: temporary file, MD5 check against the published
    :data:`CIFAR10_MD5`, then rename; connect and stall timeouts; retries on dropped
    connections and checksum mismatches, none after a timeout or an HTTP 4xx). Returns the
    tarball's path; :func:`load_cifar10` reads it without extracting. Raises
    :class:`~pyfastgrad.datasets.DownloadError` when it cannot be had.
    """
    import time

    try:
        import pooch
    except ImportError as exc:  # a dependency
        raise DownloadError(f"downloading CIFAR-10 needs pooch ({exc}): pip install pooch") from exc
    target = Path(dest).expanduser() if dest is not None else cifar10_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    timeout = (float(timeout), float(timeout)) if isinstance(timeout, (int, float)) else tuple(timeout)
    if progress is None:
        progress = sys.stderr.isatty()
    downloader = pooch.HTTPDownloader(progressbar=bool(progress), timeout=timeout)
    errors: List[str] = []
    for attempt in range(int(retries) + 1):
        print(f"pyfastgrad: downloading {url} -> {target}", file=sys.stderr)
        try:
            return Path(pooch.retrieve(url, known_hash=f"md5:{CIFAR10_MD5}", fname=CIFAR10_TARBALL, path=target,
                                       downloader=downloader))
        except Exception as exc:  # requests' errors, pooch's ValueError on a checksum mismatch
            errors.append(_short(exc))
            if _kind(exc) in ("dead", "refused") or attempt == int(retries):
                break
            time.sleep(min(0.5 * 2 ** attempt, 4.0))
    err = DownloadError(f"could not download {url} into {target}: {'; '.join(errors)}. Fetch the binary "
                        f"version by hand and pass its path (load_cifar10(path) or {ENV_CIFAR}=PATH).")
    err.reason = errors[0] if errors else "no answer"
    raise err
