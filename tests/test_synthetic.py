"""The procedurally drawn digits (a test/demo utility, not MNIST, on no default path)."""
import numpy as np

from pyfastgrad import datasets as ds
from pyfastgrad.datasets import make_synthetic_digits


def test_old_name_is_the_same_function():
    assert ds.load_digits_embedded is make_synthetic_digits
    from pyfastgrad.datasets.synthetic import load_digits_embedded
    assert load_digits_embedded is make_synthetic_digits


def test_synthetic_format():
    (x, t), (xt, tt) = make_synthetic_digits()
    assert x.shape == (2000, 784) and xt.shape == (500, 784) and x.dtype == np.float32
    assert t.shape == (2000,) and t.dtype == np.int64 and tt.shape == (500,)
    assert x.min() == 0.0 and 0.7 < x.max() <= 1.0
    assert (x == 0).mean() > 0.6  # mostly empty background, like MNIST
    assert np.all(x.max(axis=1) > 0.5)  # no blank images
    (x4, t1), _ = make_synthetic_digits(n_train=30, n_test=5, flatten=False, one_hot_label=True,
                                       dtype=np.float64)
    assert x4.shape == (30, 1, 28, 28) and x4.dtype == np.float64
    assert t1.shape == (30, 10) and t1.dtype == np.float64 and np.all(t1.sum(axis=1) == 1)
    (x8, _), _ = make_synthetic_digits(n_train=50, n_test=5, normalize=False)
    assert x8.dtype == np.uint8 and x8.max() > 200
    (x0, t0), (xt0, _) = make_synthetic_digits(n_train=0, n_test=0)
    assert x0.shape == (0, 784) and t0.shape == (0,) and xt0.shape == (0, 784)


def test_synthetic_matches_normalized_uint8():
    (x8, t8), _ = make_synthetic_digits(n_train=200, n_test=10, normalize=False, seed=5)
    (x, t), _ = make_synthetic_digits(n_train=200, n_test=10, seed=5)
    np.testing.assert_array_equal(x, x8.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(t, t8)


def test_synthetic_deterministic_per_seed():
    a = make_synthetic_digits(n_train=300, n_test=100, seed=1)
    b = make_synthetic_digits(n_train=300, n_test=100, seed=1)
    c = make_synthetic_digits(n_train=300, n_test=100, seed=2)
    for u, v in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0][0], c[0][0]) and not np.array_equal(a[1][0], c[1][0])
    # the test set depends on the seed only, not on n_train
    d = make_synthetic_digits(n_train=50, n_test=100, seed=1)
    np.testing.assert_array_equal(d[1][0], a[1][0])


def test_synthetic_class_balance():
    (_, t), (_, tt) = make_synthetic_digits()
    assert np.bincount(t, minlength=10).tolist() == [200] * 10
    assert np.bincount(tt, minlength=10).tolist() == [50] * 10
    (_, t), _ = make_synthetic_digits(n_train=1003, n_test=0, seed=9)
    counts = np.bincount(t, minlength=10)
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1
    assert not np.array_equal(t[:20], np.arange(20) % 10)  # shuffled, not in class order


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


def test_synthetic_learnable_but_not_trivial():
    (x, t), (xt, tt) = make_synthetic_digits(seed=0)
    predict = _train_two_layer(x, t, epochs=5)
    acc = float((predict(xt) == tt).mean())
    assert acc >= 0.90, acc
    # Not trivial: a nearest-class-mean template matcher does clearly worse.
    means = np.stack([x[t == c].mean(axis=0) for c in range(10)])
    ncm = float((((xt[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1) == tt).mean())
    assert ncm < 0.85, ncm
    assert acc - ncm > 0.1
