"""Fetching MNIST into the per-user cache: pooch (requests) + platformdirs.

:func:`download_mnist` fetches the four official ``.gz`` files from a list of
mirrors into :func:`default_cache_dir` (or a directory you give). Every file
is streamed to a temporary file in the target directory, checked against its
known SHA256 and only then renamed to its final name (pooch does this), so an
interrupted or corrupt download never leaves a file that looks complete. A
file already present with the right checksum is kept; one with the wrong
checksum (a corrupt or truncated cache) is downloaded again.

Time limits: connecting to a mirror gives up after ``timeout[0]`` seconds
(default 5) and a stalled transfer after ``timeout[1]`` seconds without data
(default 20). A mirror that cannot be reached or stalls is not tried again in
the same call, so a machine without a working network gives up after at most
one connect timeout per mirror. Other failures (a checksum mismatch, a
connection dropped mid-file, a server error) are retried ``retries`` times
with a short back-off.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

__all__ = ["MNIST_SHA256", "MNIST_MIRRORS", "DownloadError", "default_cache_dir", "download_mnist",
           "sha256_of", "DEFAULT_TIMEOUT"]

PathLike = Union[str, "os.PathLike[str]"]

ENV_MIRRORS = "PYFASTGRAD_MNIST_MIRRORS"

# SHA256 of the gzip-compressed files (the official files' well-known checksums).
MNIST_SHA256: Dict[str, str] = {
    "train-images-idx3-ubyte.gz": "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
    "train-labels-idx1-ubyte.gz": "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
    "t10k-images-idx3-ubyte.gz": "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
    "t10k-labels-idx1-ubyte.gz": "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
}

# Tried in order; each is a base URL the four .gz names are appended to. Override per call
# (``mirrors=``), by assigning this list, or with $PYFASTGRAD_MNIST_MIRRORS (comma-separated).
# (yann.lecun.com, the original host, refuses plain downloads nowadays.)
MNIST_MIRRORS: List[str] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

# (connect, read) seconds: a dead network costs one connect timeout per mirror.
DEFAULT_TIMEOUT: Tuple[float, float] = (5.0, 20.0)


class DownloadError(OSError):
    """Raised when :func:`download_mnist` cannot fetch or verify a file; ``reason`` is the first
    mirror's answer in a few words (e.g. "cannot resolve the host name (no network?)")."""

    reason: str = ""


def default_cache_dir() -> Path:
    """The per-user cache directory for MNIST (it may not exist yet).

    ``platformdirs.user_cache_dir("pyfastgrad") / "mnist"``: on Linux
    ``$XDG_CACHE_HOME/pyfastgrad/mnist`` or ``~/.cache/pyfastgrad/mnist``, on
    macOS ``~/Library/Caches/pyfastgrad/mnist``, on Windows
    ``%LOCALAPPDATA%\\pyfastgrad\\Cache\\mnist``.
    """
    try:
        import platformdirs
    except ImportError:  # a dependency; the XDG rule is the Linux answer
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "pyfastgrad" / "mnist"
    return Path(platformdirs.user_cache_dir("pyfastgrad", appauthor=False)) / "mnist"


def sha256_of(file: PathLike) -> str:
    """Hex SHA256 of a file's bytes."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mirror_list(mirrors: Optional[Sequence[str]]) -> List[str]:
    if mirrors is not None:
        urls = [mirrors] if isinstance(mirrors, str) else list(mirrors)
    else:
        env = os.environ.get(ENV_MIRRORS)
        urls = [m.strip() for m in env.split(",") if m.strip()] if env else list(MNIST_MIRRORS)
    return [u if u.endswith("/") else u + "/" for u in urls]


def _timeouts(timeout) -> Tuple[float, float]:
    if isinstance(timeout, (int, float)):
        return float(timeout), float(timeout)
    connect, read = timeout
    return float(connect), float(read)


def _kind(exc: BaseException) -> str:
    """'dead' (cannot connect, or stalled: do not try this mirror again), 'refused' (HTTP 4xx: next
    mirror) or 'retry' (checksum mismatch, dropped connection, server error)."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):  # ConnectTimeout and ReadTimeout
        return "dead"
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        try:
            from urllib3.exceptions import NewConnectionError  # NameResolutionError is one too
        except ImportError:  # pragma: no cover
            NewConnectionError = ()  # type: ignore[assignment]
        if NewConnectionError and isinstance(reason, NewConnectionError):
            return "dead"
        return "retry"
    if isinstance(exc, requests.exceptions.HTTPError):
        status = getattr(exc.response, "status_code", 0) or 0
        return "refused" if 400 <= status < 500 else "retry"
    return "retry"


def _short(exc: BaseException) -> str:
    """One short line for an error (requests' messages nest three exceptions deep)."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out (no network?)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "the transfer stalled (read timed out)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        try:
            from urllib3.exceptions import NameResolutionError, NewConnectionError
        except ImportError:  # pragma: no cover (urllib3 < 2)
            NameResolutionError = NewConnectionError = ()  # type: ignore[assignment,misc]
        if NameResolutionError and isinstance(reason, NameResolutionError):
            return "cannot resolve the host name (no network?)"
        if NewConnectionError and isinstance(reason, NewConnectionError):
            return "cannot connect (" + str(reason).rpartition(": ")[2].rstrip(")") + ")"
        if reason is not None:
            return f"connection failed ({type(reason).__name__})"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code} {exc.response.reason}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def download_mnist(dest: Optional[PathLike] = None, mirrors: Optional[Sequence[str]] = None,
                   timeout: Union[float, Tuple[float, float]] = DEFAULT_TIMEOUT, retries: int = 2,
                   force: bool = False, progress: Optional[bool] = None, quiet: bool = False) -> Path:
    """Fetch the four MNIST ``.gz`` files, verified by SHA256, into the user cache.

    Parameters
    ----------
    dest : str or PathLike, optional
        Target directory (created if needed); default :func:`default_cache_dir`.
    mirrors : sequence of str, optional
        Base URLs tried in order for each file (``base + name``). Default
        ``$PYFASTGRAD_MNIST_MIRRORS`` (comma-separated) or :data:`MNIST_MIRRORS`.
    timeout : float or (float, float), default (5, 20)
        Seconds to connect, and seconds a transfer may stall.
    retries : int, default 2
        Extra attempts per mirror after a checksum mismatch, a dropped
        connection or a server error (not after a timeout or an HTTP 4xx).
    force : bool, default False
        Download again even when a file with the right checksum is present.
    progress : bool, optional
        Show a progress bar per file (default: when stderr is a terminal and
        not ``quiet``).
    quiet : bool, default False
        No messages and no progress bars.

    Returns
    -------
    Path
        The resolved directory holding the four verified files.

    Raises
    ------
    DownloadError
        A file could not be fetched from any mirror, or every copy had the
        wrong checksum; the message lists what each mirror answered.
    """
    try:
        import pooch
    except ImportError as exc:  # a dependency; say what to do if it went missing
        raise DownloadError(f"downloading MNIST needs pooch ({exc}): pip install pooch") from exc
    if int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    connect, read = _timeouts(timeout)
    target = (Path(dest).expanduser() if dest is not None else default_cache_dir())
    target.mkdir(parents=True, exist_ok=True)
    urls = _mirror_list(mirrors)
    if not urls:
        raise DownloadError("no MNIST mirrors configured")
    if progress is None:
        progress = not quiet and sys.stderr.isatty()
    dead: Dict[str, str] = {}  # mirror -> why it is not tried again
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # our own one line per file instead of pooch's
    try:
        for name, sha in MNIST_SHA256.items():
            final = target / name
            if final.is_file():
                if force:
                    final.unlink()
                elif sha256_of(final) == sha:
                    continue
                elif not quiet:
                    print(f"pyfastgrad: {final} is corrupt (SHA256 mismatch); downloading it again",
                          file=sys.stderr)
            errors: List[str] = []
            for base in urls:
                if base in dead:
                    errors.append(f"  - {base}{name}: skipped ({dead[base]})")
                    continue
                if _fetch_one(pooch, base + name, name, sha, target, (connect, read), int(retries),
                              bool(progress), quiet, errors, dead, base):
                    break
            else:
                err = DownloadError(
                    f"could not download {name} into {target}:\n" + "\n".join(errors) + "\n"
                    f"Check the network (or pass mirrors=[...] / set {ENV_MIRRORS}), or fetch the four "
                    "MNIST .gz files by hand and pass their directory (--data DIR, or PYFASTGRAD_DATA=DIR).")
                err.reason = errors[0].split(": ", 1)[-1] if errors else "no mirror answered"
                raise err
    finally:
        logger.setLevel(level)
    return target.resolve()


def _fetch_one(pooch, url: str, name: str, sha: str, target: Path, timeout: Tuple[float, float],
               retries: int, progress: bool, quiet: bool, errors: List[str], dead: Dict[str, str],
               base: str) -> bool:
    """Try one mirror for one file (with retries); True when the verified file is in place."""
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    for attempt in range(retries + 1):
        if not quiet:
            print(f"pyfastgrad: downloading {url} -> {target}", file=sys.stderr)
        try:
            # pooch: temp file in `target`, SHA256 check, then rename; a bad file is removed.
            pooch.retrieve(url, known_hash=f"sha256:{sha}", fname=name, path=target, downloader=downloader)
            return True
        except Exception as exc:  # requests' errors, pooch's ValueError on a checksum mismatch
            kind = _kind(exc)
            errors.append(f"  - {url}: {_short(exc)}")
            if kind == "dead":
                dead[base] = f"unreachable: {_short(exc)}"
                return False
            if kind == "refused" or attempt == retries:
                return False
            time.sleep(min(0.5 * 2 ** attempt, 4.0))
    return False
