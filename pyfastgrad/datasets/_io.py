"""Bounded reads for the data-set readers (MNIST's IDX files; any other binary format).

A file's header declares how much data follows. A reader that trusts it allocates what a tiny
crafted file asks for. :class:`BoundedFile` checks every declared size before reading it:
against a cap, and against the bytes the file can actually hold -- for a raw file its size, for a
gzip file the compressed size times deflate's largest expansion -- and reads in pieces, so memory
only grows with data that is really there (a short file fails at its end, having allocated only
what it held)::

    with BoundedFile(path) as f:
        head = f.read_exact(16, "header")
        n = ...                          # the size the header declares
        f.check_size(n, "payload")       # ValueError naming the file when it cannot be there
        payload = f.read_exact(n, "payload")
        f.expect_end()                   # trailing data is an error too
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import BinaryIO, Optional, Union

__all__ = ["BoundedFile", "read_bounded", "MAX_DECODED_BYTES", "GZIP_MAX_RATIO"]

# The most a single data file may decode to: the largest real files (MNIST images 47 MB, a
# CIFAR-10 batch 31 MB) are far below it; a header that declares more is refused outright.
MAX_DECODED_BYTES = 1 << 31
# Deflate expands by at most ~1032:1 (plus a few bytes): a larger claim cannot be in the file.
GZIP_MAX_RATIO = 1032
_PIECE = 1 << 24  # read in 16 MiB pieces

PathLike = Union[str, "os.PathLike[str]"]


class BoundedFile:
    """A raw or gzip-compressed file (detected by its magic bytes), read with checked sizes.

    Parameters
    ----------
    file : path
    cap : int
        Most bytes the decoded file may hold (default :data:`MAX_DECODED_BYTES`).

    All errors are ``ValueError`` naming the file (corrupt gzip data included).
    """

    def __init__(self, file: PathLike, cap: int = MAX_DECODED_BYTES) -> None:
        self.file = Path(file)
        self.cap = int(cap)
        self.pos = 0  # decoded bytes consumed
        self._raw: Optional[BinaryIO] = None
        self._f: Optional[BinaryIO] = None
        self.gzip = False
        self.limit = 0  # most decoded bytes the file can hold (raw: exactly its size)

    def __enter__(self) -> "BoundedFile":
        raw = open(self.file, "rb")
        try:
            size = os.fstat(raw.fileno()).st_size
            self.gzip = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            if self.gzip:
                self.limit = GZIP_MAX_RATIO * size + 1024
                self._f = gzip.GzipFile(fileobj=raw, mode="rb")
            else:
                self.limit = size
                self._f = raw
        except BaseException:
            raw.close()
            raise
        self._raw = raw
        return self

    def __exit__(self, *exc) -> None:
        if self._f is not None and self._f is not self._raw:
            self._f.close()
        if self._raw is not None:
            self._raw.close()

    def _fail(self, message: str) -> ValueError:
        return ValueError(f"{self.file}: {message}")

    def check_size(self, n: int, what: str) -> None:
        """Raise unless ``n`` more decoded bytes can be in the file (and fit the cap)."""
        end = self.pos + int(n)
        if n < 0:
            raise self._fail(f"{what}: negative size {n}")
        if end > self.cap:
            raise self._fail(f"{what} declares {n:,} bytes; more than the {self.cap:,} bytes a data file "
                             "may hold here (corrupt header?)")
        if end > self.limit:
            if not self.gzip:
                raise self._fail(f"truncated: {what} needs {n:,} bytes, the file has "
                                 f"{self.limit - self.pos:,} left")
            raise self._fail(f"{what} declares {n:,} bytes, which a {os.path.getsize(self.file):,}-byte "
                             "gzip file cannot hold (corrupt header?)")

    def read_exact(self, n: int, what: str) -> bytes:
        """Exactly ``n`` decoded bytes (checked first, read in pieces)."""
        self.check_size(n, what)
        buf = bytearray()
        try:
            while len(buf) < n:
                piece = self._f.read(min(_PIECE, n - len(buf)))
                if not piece:
                    break
                buf += piece
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise self._fail(f"corrupt or truncated gzip data ({exc}); delete it and download it "
                             "again") from exc
        if len(buf) < n:
            raise self._fail(f"truncated: {what} needs {n:,} bytes, the file has {len(buf):,}")
        self.pos += n
        return bytes(buf)

    def expect_end(self, what: str = "payload") -> None:
        """Raise when data follows what was read (checked by reading at most one more byte)."""
        try:
            more = self._f.read(1)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._fail(f"corrupt or truncated gzip data ({exc}); delete it and download it "
                             "again") from exc
        if more:
            raise self._fail(f"{what} has trailing data after the {self.pos:,} bytes its header declares")


def read_bounded(file: PathLike, n: int, cap: int = MAX_DECODED_BYTES) -> bytes:
    """The whole decoded content of ``file`` when it is exactly ``n`` bytes, else ValueError."""
    with BoundedFile(file, cap) as f:
        data = f.read_exact(n, "content")
        f.expect_end("content")
    return data
