"""fit(callback=...): called after every epoch with (epoch, history); a truthy return stops."""
import numpy as np
import pytest

import pyfastgrad as pfg


def _data():
    rng = np.random.default_rng(0)
    return rng.random((60, 5)), rng.integers(0, 3, 60)


def test_callback_sees_every_epoch():
    x, t = _data()
    seen = []
    hist = pfg.fit(pfg.TwoLayerNet(5, 4, 3, seed=0), x, t, x, t, epochs=3, batch_size=20, progress=False,
                   callback=lambda ep, h: seen.append((ep, len(h.train_acc), len(h.test_acc))))
    assert seen == [(1, 1, 1), (2, 2, 2), (3, 3, 3)] and hist.stopped is None


@pytest.mark.parametrize("ret, reason", [(True, "stopped by the callback after epoch 2"), ("enough", "enough")])
def test_truthy_return_stops(ret, reason):
    x, t = _data()
    hist = pfg.fit(pfg.TwoLayerNet(5, 4, 3, seed=0), x, t, epochs=5, batch_size=20, progress=False,
                   callback=lambda ep, h: ret if ep == 2 else None)
    assert hist.epoch == [1, 2] and hist.stopped == reason
