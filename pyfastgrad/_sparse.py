"""Row-compressed (CSR) inputs for training on mostly-zero data (MNIST is ~81% zeros).

``CsrRows.from_dense(X)`` is built once per ``fit``; the kernels' ``Mlp.train_steps``
accept it in place of the dense ``X`` (the cpp and numba backends then do the first layer on
the nonzeros only, numpy densifies the rows it needs).
"""
from __future__ import annotations

import numpy as np

from ._backends import kernels

__all__ = ["CsrRows", "SPARSE_DENSITY_MAX"]

# fit() trains from a CsrRows when the data has fewer nonzeros than this share (cpp and numba backends):
# below ~0.5 the sparse first layer beats dense gemm (it does ~density of the multiply-adds, at a
# lower rate per multiply-add than a blocked gemm).
SPARSE_DENSITY_MAX = 0.5

class CsrRows:
    """A 2-D array by rows: row ``r`` has values ``data[indptr[r]:indptr[r+1]]`` in columns
    ``indices[indptr[r]:indptr[r+1]]`` (ascending); every other entry is 0.

    ``indptr`` int64 (n_rows + 1,), ``indices`` int32 (nnz,), ``data`` (nnz,) of the array's dtype.
    """

    __slots__ = ("indptr", "indices", "data", "n_rows", "n_cols", "checked")

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_cols: int) -> None:
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int32)
        self.data = np.ascontiguousarray(data)
        if self.indptr.ndim != 1 or self.indptr.size < 1:
            raise ValueError("indptr must be 1-D with n_rows + 1 entries")
        if self.indices.ndim != 1 or self.data.shape != self.indices.shape:
            raise ValueError("indices and data must be 1-D of the same length")
        self.n_rows = self.indptr.size - 1
        self.n_cols = int(n_cols)
        # True only for arrays from_dense built and froze: the kernels then skip re-checking each row's
        # column indices at every call (a cache miss per row; they always check indptr and the row numbers)
        self.checked = False

    @classmethod
    def from_dense(cls, X, backend=None) -> "CsrRows":
        """The nonzeros of the 2-D array ``X`` (any strides; ``X`` is not modified). NaN counts as nonzero.

        Built by ``backend``'s ``dense_to_csr`` (None: the current backend)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        indptr, indices, data = kernels(backend).dense_to_csr(X)
        csr = cls(indptr, indices, data, X.shape[1])
        for a in (csr.indptr, csr.indices, csr.data):
            a.flags.writeable = False  # well formed by construction, and kept so
        csr.checked = True
        return csr

    @property
    def shape(self):
        return (self.n_rows, self.n_cols)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @property
    def density(self) -> float:
        """Share of the entries that are stored (nonzero)."""
        total = self.n_rows * self.n_cols
        return self.nnz / total if total else 0.0

    def rows_dense(self, rows) -> np.ndarray:
        """Dense (len(rows), n_cols) array of the given rows (vectorised gather)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.zeros((rows.size, self.n_cols), dtype=self.data.dtype)
        if rows.size == 0:
            return out
        if rows.min() < -self.n_rows or rows.max() >= self.n_rows:
            raise IndexError(f"row index out of range for {self.n_rows} rows")
        rows = np.where(rows < 0, rows + self.n_rows, rows)
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        total = int(lens.sum())
        if total:
            seg = np.repeat(np.arange(rows.size), lens)  # output row of each entry
            first = np.cumsum(lens) - lens  # where each row's entries start in the gathered list
            pos = np.arange(total) - np.repeat(first, lens) + np.repeat(starts, lens)
            out[seg, self.indices[pos]] = self.data[pos]
        return out

    def to_dense(self) -> np.ndarray:
        return self.rows_dense(np.arange(self.n_rows))

    def astype(self, dtype) -> "CsrRows":
        dtype = np.dtype(dtype)
        if dtype == self.data.dtype:
            return self
        out = CsrRows(self.indptr, self.indices, self.data.astype(dtype), self.n_cols)
        if self.checked:  # the same frozen indices
            out.data.flags.writeable = False
            out.checked = True
        return out

    def dense_batches(self, idx: np.ndarray, T: np.ndarray):
        """(X_sub, T_sub, idx_sub): the distinct rows ``idx`` names, densified, their targets, and
        ``idx`` renumbered into them, so that ``X_sub[idx_sub[s]]`` equals the dense ``X[idx[s]]`` and
        ``T_sub[idx_sub[s]]`` equals ``T[idx[s]]``."""
        idx = np.asarray(idx, dtype=np.int64)
        flat = idx.reshape(-1)
        if flat.size and (flat.min() < -self.n_rows or flat.max() >= self.n_rows):
            raise IndexError(f"row index out of range for {self.n_rows} rows")
        flat = np.where(flat < 0, flat + self.n_rows, flat)
        uniq, inv = np.unique(flat, return_inverse=True)
        return self.rows_dense(uniq), T[uniq], inv.reshape(idx.shape).astype(np.int64)

    def __repr__(self) -> str:
        return (f"CsrRows(shape={self.shape}, nnz={self.nnz}, density={self.density:.3f}, "
                f"dtype={self.data.dtype})")
