"""simpleNet: prediction, loss and numerical gradient dW for the tutorials' weights (chapter 4).

The tutorials draw W at random and print one draw; this script sets that W and prints
the same p, argmax, loss and dW. The tutorials' loss is ``cross_entropy_error(softmax(z), t)``
with 1e-7 inside the log; ``SimpleNet.loss`` computes it from the logits (log-softmax, no
guard), which is larger by about 1e-7 / y_t (2.5e-7 here). Both are printed.

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
    """Print p, argmax(p), the loss (both forms) and dW (both forms)."""
    _common.parser(__doc__.splitlines()[0]).parse_args(argv)
    net = pfg.SimpleNet(W)
    p = net.predict(X)[0]
    np.set_printoptions(precision=8, suppress=True)
    print(f"W = {net.W}")
    print(f"p = {p}")
    print(f"np.argmax(p) = {int(np.argmax(p))}")

    def tutorial_loss(w):  # the tutorials' simpleNet.loss: softmax, then cross-entropy with 1e-7
        return pfg.cross_entropy_error(pfg.softmax(X @ w), T)

    loss_tut = tutorial_loss(net.W)
    loss_net = net.loss(X, T)
    print(f"loss (the tutorials' cross_entropy_error(softmax(z), t)) = {loss_tut!r}")
    print(f"loss (SimpleNet.loss, log-softmax without the 1e-7)      = {loss_net!r}")
    dW_tut = pfg.numerical_gradient(tutorial_loss, net.W.copy())
    dW_net = net.numerical_gradient(X, T)["W"]
    print(f"dW (numerical_gradient of the tutorials' loss) =\n{dW_tut}")
    print(f"dW (net.numerical_gradient) =\n{dW_net}")
    print(f"max |difference| between the two dW: {np.max(np.abs(dW_tut - dW_net)):.1e}")
    np.set_printoptions()
    return {"p": p, "loss_tut": loss_tut, "loss_net": loss_net, "dW_tut": dW_tut, "dW_net": dW_net}


if __name__ == "__main__":
    main()
