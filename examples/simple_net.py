"""simpleNet: prediction, loss and numerical gradient dW for the tutorials' weights (chapter 4).

The tutorials draw W at random and print one draw (to 8 digits); this script sets that W and
prints p, argmax(p), the loss and dW: they agree with the tutorials' printed values to the
digits W was printed with (loss 0.92806854, every digit of dW). The loss is computed from the
logits (log-softmax); ``cross_entropy_error(softmax(z), t)``, with 1e-7 inside the log, is
smaller by about 1e-7 / y_t (2.5e-7 here) and moves dW in the 7th digit: printed too, for
comparison.

    python examples/simple_net.py
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import pyfastgrad as pfg  # noqa: E402

W = np.array([[0.47355232, 0.9977393, 0.84668094],
              [0.85557411, 0.03563661, 0.69422093]])  # the tutorials' printed draw
X = np.array([0.6, 0.9])
T = np.array([0, 0, 1])


def main(argv: Optional[List[str]] = None) -> dict:
    """Print p, argmax(p), the loss and dW (and their 1e-7-guarded variants)."""
    _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    net = pfg.SimpleNet(W)
    p = net.predict(X)[0]
    np.set_printoptions(precision=8, suppress=True)
    print(f"W = {net.W}")
    print(f"p = {p}")
    print(f"np.argmax(p) = {int(np.argmax(p))}")

    loss = net.loss(X, T)
    print(f"loss = {loss:.8f}")
    dW = net.numerical_gradient(X, T)["W"]
    print(f"dW =\n{dW}")

    def guarded_loss(w):  # cross_entropy_error(softmax(z), t): 1e-7 inside the log
        return pfg.cross_entropy_error(pfg.softmax(X @ w), T)

    loss_guard = guarded_loss(net.W)
    dW_guard = pfg.numerical_gradient(guarded_loss, net.W.copy())
    print(f"with 1e-7 inside the log: loss {loss_guard:.8f} (smaller by {loss - loss_guard:.1e}), "
          f"dW differs by up to {np.max(np.abs(dW_guard - dW)):.1e}")
    np.set_printoptions()
    return {"p": p, "loss": loss, "dW": dW, "loss_guard": loss_guard, "dW_guard": dW_guard}


if __name__ == "__main__":
    main()
