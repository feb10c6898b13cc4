"""Data sets: MNIST (read from IDX files, downloaded into the user cache, or the real subset
shipped in the package) and, for tests and demos only, procedurally drawn digits.

``load_mnist`` has the tutorials' return shape, ``(x_train, t_train), (x_test, t_test)``::

    from pyfastgrad.datasets import load_mnist
    (x_train, t_train), (x_test, t_test) = load_mnist(download=True)   # the user cache

* :func:`load_mnist` -- ``path`` (only there), else ``$PYFASTGRAD_DATA``, else the user cache
  (:func:`default_cache_dir`); ``download=True`` fetches missing or corrupt cache files.
* :func:`download_mnist` -- SHA256-checked download with retries and timeouts (pooch).
* :func:`load_mnist_subset` -- 12,000 train / 2,000 test real MNIST images inside the package.
* :func:`load_data` -- what ``python -m pyfastgrad train`` uses: MNIST, downloaded if needed,
  else the shipped subset (with a one-line note).
* :func:`make_synthetic_digits` (old name ``load_digits_embedded``) -- drawn digits, not MNIST;
  no default path uses them.
"""

from ._download import (
    DEFAULT_TIMEOUT,
    MNIST_MIRRORS,
    MNIST_SHA256,
    DownloadError,
    default_cache_dir,
    download_mnist,
    sha256_of,
)
from .mnist import (
    MNIST_FILES,
    SUBSET_DIR,
    DatasetFallbackWarning,
    DataSource,
    clear_cache,
    find_mnist_dir,
    load_data,
    load_mnist,
    load_mnist_subset,
    mnist_available,
    read_idx,
)
from .synthetic import load_digits_embedded, make_synthetic_digits

__all__ = [
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST_MIRRORS",
    "DEFAULT_TIMEOUT",
    "SUBSET_DIR",
    "DownloadError",
    "DatasetFallbackWarning",
    "DataSource",
    "load_mnist",
    "load_mnist_subset",
    "load_data",
    "download_mnist",
    "mnist_available",
    "find_mnist_dir",
    "default_cache_dir",
    "read_idx",
    "clear_cache",
    "sha256_of",
    "make_synthetic_digits",
    "load_digits_embedded",
]

# CIFAR-10 (binary version; never pickles)
from .cifar10 import CIFAR10_CLASSES, download_cifar10, find_cifar10, load_cifar10, read_cifar10_batch  # noqa: E402

__all__ += ["CIFAR10_CLASSES", "load_cifar10", "download_cifar10", "find_cifar10", "read_cifar10_batch"]
