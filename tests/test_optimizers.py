"""Optimizers: one state, live hyper-parameters, exact resume, torch.optim variants, AdamW,
schedules, clipping, regression metrics (issue 11)."""
import numpy as np
import pytest

import pyfastgrad as pfg
from pyfastgrad import reference as ref
from pyfastgrad._backends import numpy as npk
from pyfastgrad.schedules import Cosine, StepDecay, Warmup, make_schedule

from _helpers import BACKENDS, DTYPES, normwise

# one configuration per optimizer, covering both styles, clipping and a schedule
CONFIGS = {
    "sgd": lambda: pfg.SGD(0.1, clip=0.5, schedule=StepDecay(4, 0.5)),
    "momentum": lambda: pfg.Momentum(0.05, 0.9),
    "nesterov": lambda: pfg.Nesterov(0.05, 0.8, style="torch", schedule=Cosine(20, 0.1)),
    "adagrad": lambda: pfg.AdaGrad(0.05, clip=1.0),
    "rmsprop": lambda: pfg.RMSprop(0.01, 0.9, style="torch"),
    "adam": lambda: pfg.Adam(0.01, 0.8, 0.99, schedule=Warmup(3, Cosine(10))),
    "adamw": lambda: pfg.AdamW(0.01, weight_decay=0.1, style="torch", clip=2.0),
    "adamax": lambda: pfg.Adamax(0.01, 0.8, 0.99, weight_decay=0.01, clip=2.0),
}


def _data(n=48, d=12, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), rng.integers(0, c, n)


def _drive(net, opt, x, t, seed):
    """Every API on one optimizer: fit (fused kernel), update (tutorials' loop), train_step."""
    pfg.fit(net, x, t, optimizer=opt, epochs=1, batch_size=16, seed=seed, progress=False)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        rows = rng.integers(0, len(x), 8)
        opt.update(net.params, net.gradient(x[rows], t[rows]))
    rows = rng.integers(0, len(x), 8)
    net.train_step(x[rows], t[rows], opt)


# ----------------------------------------------------------------------------- item 1: one state, exact resume
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_from_file_is_bit_exact(tmp_path, name, backend, dtype):
    """k steps, save, load into fresh objects, m more == k + m uninterrupted, bit for bit."""
    x, t = _data()
    a = pfg.TwoLayerNet(12, 7, 3, seed=0, dtype=dtype, backend=backend, weight_decay=0.01)
    opt = CONFIGS[name]()
    _drive(a, opt, x, t, seed=1)
    assert opt.iter == 6 and "state" in opt.state_dict()
    a.save(tmp_path / "ck.npz", optimizer=opt)
    fresh = CONFIGS[name]()
    b = pfg.load_net(tmp_path / "ck.npz", backend=backend, optimizer=fresh)
    c, opt_c = pfg.load_net(tmp_path / "ck.npz", backend=backend, with_optimizer=True)
    assert repr(opt_c) == repr(opt) and opt_c.iter == opt.iter
    for net, o in ((a, opt), (b, fresh), (c, opt_c)):
        _drive(net, o, x, t, seed=2)
    np.testing.assert_array_equal(b.theta, a.theta)
    np.testing.assert_array_equal(c.theta, a.theta)
    for sd in (fresh.state_dict(), opt_c.state_dict()):
        want = opt.state_dict()
        assert sorted(sd) == sorted(want)
        for k in want:
            np.testing.assert_array_equal(sd[k], want[k])
    assert not np.array_equal(a.theta, pfg.load_net(tmp_path / "ck.npz").theta)  # (it did train on)


def test_state_dict_of_the_tutorial_loop_holds_the_state():
    """The issue's example: three opt.update(net.params, grads), then the velocity is in state_dict."""
    x, t = _data()
    net = pfg.TwoLayerNet(12, 5, 3, seed=0)
    opt = pfg.Momentum(0.05)
    for i in range(3):
        opt.update(net.params, net.gradient(x[i::3], t[i::3]))
    sd = opt.state_dict()
    assert {"state", "layout", "iter", "lr", "momentum", "kind", "style"} <= set(sd)
    assert sd["state"].shape == (1, net.n_params) and np.abs(sd["state"]).max() > 0
    assert sd["iter"] == 3 and list(sd["layout"]) == ["W1:12x5", "b1:5", "W2:5x3", "b2:3"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_all_apis_share_one_state(backend, name):
    """The same batches through fit (fused), train_step and update (tutorials' loop) give the same
    parameters: the three share one state and one update count (float64, 1e-10)."""
    x, t = _data(n=40)
    nets = [pfg.TwoLayerNet(12, 6, 3, seed=0, backend=backend) for _ in range(3)]
    opts = [CONFIGS[name]() for _ in range(3)]
    pfg.fit(nets[0], x, t, optimizer=opts[0], epochs=2, batch_size=8, sampling="random", seed=3, progress=False)
    rng = np.random.default_rng(3)  # fit's batches: rng.integers per epoch
    idx = np.concatenate([rng.integers(0, 40, size=(5, 8)) for _ in range(2)])
    for k, rows in enumerate(idx):  # alternate the two APIs on net 2
        nets[1].train_step(x[rows], t[rows], opts[1])
        if k % 2:
            nets[2].train_step(x[rows], t[rows], opts[2])
        else:
            opts[2].update(nets[2].params, nets[2].gradient(x[rows], t[rows]))
    assert opts[0].iter == opts[1].iter == opts[2].iter == 10
    assert normwise(nets[1].theta, nets[0].theta) < 1e-10
    assert normwise(nets[2].theta, nets[1].theta) < 1e-12


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_plain_dict_update_resumes_exactly(name):
    """The tutorials' own nets (plain dicts): one state vector, state_dict round trip, and the
    same numbers as the reference optimizers."""
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    rparams = {k: v.copy() for k, v in params.items()}
    W_array = params["W"]
    opt, ropt = pfg.make_optimizer(name, lr=0.05), {"momentum": ref.Momentum, "adam": ref.Adam}[name](lr=0.05)
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(6)]
    for g in grads[:3]:
        opt.update(params, g)
        ropt.update(rparams, g)
    copy = {k: v.copy() for k, v in params.items()}
    resumed = pfg.make_optimizer(name, lr=0.05)
    resumed.load_state_dict(opt.state_dict())
    for g in grads[3:]:
        opt.update(params, g)
        ropt.update(rparams, g)
        resumed.update(copy, g)
    assert params["W"] is W_array  # updated in place, as the tutorials' layers expect
    for k in params:
        np.testing.assert_array_equal(copy[k], params[k])
        assert normwise(params[k], rparams[k]) < 1e-12


def test_state_belongs_to_its_parameters():
    x, t = _data()
    opt = pfg.Adam()
    pfg.TwoLayerNet(12, 5, 3, seed=0).train_step(x, t, opt)
    with pytest.raises(ValueError, match="state of other parameters"):
        pfg.TwoLayerNet(12, 6, 3, seed=0).train_step(x, t, opt)
    with pytest.raises(TypeError, match="float64"):
        pfg.TwoLayerNet(12, 5, 3, seed=0, dtype=np.float32).train_step(x, t, opt)
    opt.reset()
    pfg.TwoLayerNet(12, 6, 3, seed=0).train_step(x, t, opt)
    assert opt.iter == 1


# ----------------------------------------------------------------------------- item 2: live hyper-parameters
@pytest.mark.parametrize("backend", BACKENDS)
def test_hyper_parameters_are_read_at_every_step(backend):
    """Change lr, momentum, betas, eps, weight_decay between steps: each update uses the values of
    that moment (checked against the numpy kernel fed the same numbers by hand)."""
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(30)
    changes = [{}, {"lr": 0.02}, {"beta1": 0.5}, {"beta2": 0.9, "eps": 1e-3}, {"weight_decay": 0.5}, {"lr": 0.3}]
    opt = pfg.AdamW(0.01, weight_decay=0.0, backend=backend)
    params = {"w": theta0.copy()}
    theta, m, v = theta0.copy(), np.zeros(30), np.zeros(30)
    for step, change in enumerate(changes, start=1):
        for k, val in change.items():
            setattr(opt, k, val)
        g = rng.standard_normal(30)
        opt.update(params, {"w": g})
        h = [opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay, 0, 0]
        npk.opt_update("adamw", theta, g, m, v, np.array(h), step)
        assert normwise(params["w"], theta) < 1e-14, change
    mom = pfg.Momentum(0.1, 0.9, backend=backend)
    p = {"w": theta0.copy()}
    for _ in range(2):
        mom.update(p, {"w": np.ones(30)})
    mom.momentum = 0  # the velocity no longer counts: a plain SGD step
    before = p["w"].copy()
    mom.update(p, {"w": np.ones(30)})
    np.testing.assert_allclose(p["w"], before - 0.1, rtol=0, atol=1e-15)


def test_fit_reads_changed_hyper_parameters():
    x, t = _data()
    a, b = (pfg.TwoLayerNet(12, 5, 3, seed=0) for _ in range(2))
    opt_a, opt_b = pfg.Momentum(0.05, 0.9), pfg.Momentum(0.05, 0.9)
    for net, opt in ((a, opt_a), (b, opt_b)):
        pfg.fit(net, x, t, optimizer=opt, epochs=1, batch_size=16, progress=False)
    opt_b.momentum, opt_b.lr = 0.0, 0.2
    for net, opt in ((a, opt_a), (b, opt_b)):
        pfg.fit(net, x, t, optimizer=opt, epochs=1, batch_size=16, progress=False)
    assert normwise(a.theta, b.theta) > 1e-3


@pytest.mark.parametrize("cls, name, bad", [
    (pfg.SGD, "lr", 0), (pfg.SGD, "lr", -1), (pfg.SGD, "lr", float("nan")), (pfg.SGD, "lr", float("inf")),
    (pfg.Momentum, "momentum", 1.0), (pfg.Momentum, "momentum", -0.1), (pfg.Adam, "beta1", 1.0),
    (pfg.Adam, "beta2", 1.5), (pfg.Adam, "eps", 0.0), (pfg.RMSprop, "decay_rate", 1.0),
    (pfg.AdaGrad, "eps", -1e-7), (pfg.AdamW, "weight_decay", -0.1), (pfg.SGD, "clip", -1.0),
    (pfg.SGD, "lr", "0.1"), (pfg.SGD, "lr", True)])
def test_bad_hyper_parameters_are_refused_everywhere(cls, name, bad):
    with pytest.raises((ValueError, TypeError), match=name):
        cls(**{name: bad})
    opt = cls()
    before = opt.state_dict()
    with pytest.raises((ValueError, TypeError), match=name):
        setattr(opt, name, bad)
    sd = dict(before)
    sd[name] = np.array(bad)
    with pytest.raises((ValueError, TypeError)):
        opt.load_state_dict(sd)
    assert repr(opt) == repr(cls())  # nothing changed


def test_load_state_dict_sets_every_hyper_parameter():
    """No stale cache: loading betas with an unchanged lr takes the new betas."""
    src = pfg.Adam(0.01, 0.5, 0.9, eps=1e-4, style="torch", clip=3.0, schedule=Cosine(50))
    dst = pfg.Adam(0.01)
    dst.load_state_dict(src.state_dict())
    assert (dst.beta1, dst.beta2, dst.eps, dst.style, dst.clip, dst.schedule) == (0.5, 0.9, 1e-4, "torch", 3.0,
                                                                                 Cosine(50))
    np.testing.assert_array_equal(dst.hyper, src.hyper)
    with pytest.raises(ValueError, match="'momentum' optimizer"):
        dst.load_state_dict(pfg.Momentum().state_dict())
    with pytest.raises(AttributeError):
        dst.style = "tutorial"  # fixed: the state's meaning depends on it
    with pytest.raises(ValueError, match="style"):
        pfg.Adam(style="keras")


def test_old_checkpoint_format_still_loads(tmp_path):
    """Files written before issue 11 (opt_hyper, opt_state1/2) load with their state."""
    x, t = _data()
    net = pfg.TwoLayerNet(12, 5, 3, seed=0)
    opt = pfg.Momentum(0.05, 0.8)
    pfg.fit(net, x, t, optimizer=opt, epochs=1, batch_size=16, progress=False)
    st = opt.state_dict()["state"]
    np.savez(tmp_path / "old.npz", theta=net.theta, cfg_sizes=np.array(net.sizes), cfg_activation="relu",
             cfg_loss="softmax", cfg_weight_decay=0.0, cfg_dtype="float64", cfg_cls="TwoLayerNet",
             opt_iter=np.array(3), opt_hyper=np.array([0.05, 0.8, 0.0]), opt_state1=st[0], opt_state2=st[0],
             opt_kind=np.array("momentum"))
    b, opt_b = pfg.load_net(tmp_path / "old.npz", with_optimizer=True)
    assert (opt_b.lr, opt_b.momentum, opt_b.iter) == (0.05, 0.8, 3)
    pfg.fit(net, x, t, optimizer=opt, epochs=1, batch_size=16, seed=5, progress=False)
    pfg.fit(b, x, t, optimizer=opt_b, epochs=1, batch_size=16, seed=5, progress=False)
    np.testing.assert_array_equal(b.theta, net.theta)
    with pytest.raises(ValueError, match="no optimizer state"):
        net.save(tmp_path / "plain.npz")
        pfg.load_net(tmp_path / "plain.npz", optimizer=pfg.SGD())


# ----------------------------------------------------------------------------- item 3: equations, torch.optim
def test_first_steps_tutorial_vs_torch_style():
    """The issue's numbers: Nesterov's first step with g = 1, lr 0.1, mu 0.9."""
    for style, want in (("tutorial", -0.271), ("torch", -0.19)):
        p = {"w": np.zeros(1)}
        pfg.Nesterov(0.1, 0.9, style=style).update(p, {"w": np.ones(1)})
        assert p["w"][0] == pytest.approx(want, rel=1e-12)
    # Adam's eps: at gradient scale 1e-6 the tutorial's eps on the uncorrected sqrt(v) halves the step
    steps = {}
    for style in ("tutorial", "torch"):
        p = {"w": np.zeros(1)}
        pfg.Adam(0.1, eps=1e-7 if style == "tutorial" else 1e-8, style=style).update(p, {"w": np.full(1, 1e-6)})
        steps[style] = -p["w"][0]
    assert steps["torch"] == pytest.approx(0.1 * 1e-6 / (1e-6 + 1e-8), rel=1e-12)
    assert steps["tutorial"] == pytest.approx(0.1 * np.sqrt(0.001) / 0.1 * 1e-7 / (np.sqrt(1e-15) + 1e-7), rel=1e-9)
    assert pfg.Adam(style="torch").eps == 1e-8 and pfg.AdaGrad(style="torch").eps == 1e-10
    assert pfg.RMSprop(style="torch").eps == 1e-8 and pfg.Adam().eps == 1e-7


TORCH_CASES = [
    ("sgd", lambda: pfg.SGD(0.1, style="torch", clip=0.5), lambda p, torch: torch.optim.SGD(p, lr=0.1), 0.5),
    ("momentum", lambda: pfg.Momentum(0.05, 0.9, style="torch"),
     lambda p, torch: torch.optim.SGD(p, lr=0.05, momentum=0.9), None),
    ("nesterov", lambda: pfg.Nesterov(0.05, 0.9, style="torch"),
     lambda p, torch: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True), None),
    ("adagrad", lambda: pfg.AdaGrad(0.05, style="torch"), lambda p, torch: torch.optim.Adagrad(p, lr=0.05), None),
    ("rmsprop", lambda: pfg.RMSprop(0.002, 0.99, style="torch"),
     lambda p, torch: torch.optim.RMSprop(p, lr=0.002, alpha=0.99), None),
    ("adam", lambda: pfg.Adam(0.002, style="torch"), lambda p, torch: torch.optim.Adam(p, lr=0.002), None),
    ("adamw", lambda: pfg.AdamW(0.002, weight_decay=0.1, style="torch", clip=1.0),
     lambda p, torch: torch.optim.AdamW(p, lr=0.002, weight_decay=0.1), 1.0),
]


@pytest.mark.parametrize("name, mine, theirs, clip", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_torch_style_matches_torch_optim(name, mine, theirs, clip, mnist_batch):
    """100 steps of TwoLayerNet(784, 30, 10) on MNIST, float64, the same batches: pyfastgrad's fused
    training loop (style='torch') and torch.optim (+ clip_grad_norm_) agree to 1e-6 normwise."""
    torch = pytest.importorskip("torch", reason="torch not installed: the torch.optim comparison needs it")
    x, t = mnist_batch
    net = pfg.TwoLayerNet(784, 30, 10, weight_init_std=0.1, seed=0)
    theta0 = net.theta.copy()
    params = [torch.tensor(net.params[k].copy(), requires_grad=True) for k in ("W1", "b1", "W2", "b2")]
    opt_t = theirs(params, torch)
    idx = np.random.default_rng(0).integers(0, 100, size=(100, 20))
    xt, tt = torch.tensor(x), torch.tensor(t, dtype=torch.int64)
    for rows in idx:
        r = torch.tensor(rows)
        z = torch.relu(xt[r] @ params[0] + params[1]) @ params[2] + params[3]
        loss = torch.nn.functional.cross_entropy(z, tt[r])
        opt_t.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt_t.step()
    opt = mine()
    pfg.fit(net, x, t, optimizer=opt, epochs=1, batch_size=20, iters_per_epoch=100, sampling="random", seed=0,
            progress=False)  # the same batches: default_rng(0).integers(0, 100, (100, 20))
    theirs_theta = np.concatenate([p.detach().numpy().ravel() for p in params])
    assert normwise(net.theta, theirs_theta) < 1e-6, name
    assert normwise(net.theta, theta0) > 1e-3  # (it did move)


# ----------------------------------------------------------------------------- item 4: AdamW, schedules, clipping
def test_schedules_values():
    t = np.arange(12)
    np.testing.assert_allclose(StepDecay(4, 0.5)(t), 0.5 ** (t // 4))
    np.testing.assert_allclose(Cosine(10, 0.1)(t), 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(t, 10) / 10)))
    np.testing.assert_allclose(Warmup(4)(t), np.minimum((t + 1) / 4, 1))
    w = Warmup(2, Cosine(8))
    np.testing.assert_allclose(w(t), np.where(t < 2, (t + 1) / 2, Cosine(8)(np.maximum(t - 2, 0))))
    assert make_schedule("cosine:0.1", 10) == Cosine(10, 0.1)
    assert make_schedule("warmup:2+cosine", 10) == Warmup(2, Cosine(8))
    assert make_schedule("step:100:0.5") == StepDecay(100, 0.5) and make_schedule("none") is None
    for bad in ("cosine:2", "step", "step:0", "linear", "warmup:x"):
        with pytest.raises(ValueError, match="schedule"):
            make_schedule(bad, 10)
    with pytest.raises(TypeError, match="schedule"):
        pfg.SGD(schedule="cosine")  # texts go through fit(schedule=) or make_schedule
    with pytest.raises(ValueError, match="gamma"):
        StepDecay(10, gamma=0.0)


def test_cosine_matches_torch_scheduler():
    torch = pytest.importorskip("torch", reason="torch not installed")
    p = [torch.zeros(1, requires_grad=True)]
    o = torch.optim.SGD(p, lr=0.2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.02)
    lrs = []
    for _ in range(11):  # up to T_max (torch's cosine then rises again; ours stays at the minimum)
        lrs.append(o.param_groups[0]["lr"])
        o.step()
        sched.step()
    mine = pfg.SGD(0.2, schedule=Cosine(10, 0.1))
    np.testing.assert_allclose(mine.lrs(11), lrs, rtol=1e-12)
    assert mine.lrs(13)[-1] == pytest.approx(0.02)


@pytest.mark.parametrize("backend", BACKENDS)
def test_schedule_and_clip_in_fused_fit_equal_python_steps(backend):
    """fit runs schedules and clipping inside the kernel: the same numbers as train_step's path."""
    x, t = _data(n=40)
    a, b = (pfg.TwoLayerNet(12, 6, 3, seed=0, backend=backend, weight_init_std=0.5) for _ in range(2))
    opt_a = pfg.AdamW(0.05, weight_decay=0.2)
    opt_b = pfg.AdamW(0.05, weight_decay=0.2, clip=0.3, schedule=Warmup(3, Cosine(7)))
    h = pfg.fit(a, x, t, optimizer=opt_a, epochs=2, batch_size=8, sampling="random", seed=3, progress=False,
                schedule="warmup:3+cosine", clip=0.3)
    assert opt_a.schedule == opt_b.schedule and opt_a.clip == 0.3 and len(h.loss) == 10
    rng = np.random.default_rng(3)
    for rows in np.concatenate([rng.integers(0, 40, size=(5, 8)) for _ in range(2)]):
        b.train_step(x[rows], t[rows], opt_b)
    assert normwise(a.theta, b.theta) < 1e-10


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_fused_schedule_clip_agree_with_numpy(backend, mnist_batch):
    """cpp (its sparse-input loop on MNIST) and numba equal the numpy spec with clipping, schedule,
    AdamW and SGD with clipping (unfused path)."""
    x, t = mnist_batch
    for make in (lambda: pfg.AdamW(0.01, weight_decay=0.1, clip=0.5, schedule=Cosine(20)),
                 lambda: pfg.SGD(0.2, clip=0.2, schedule=StepDecay(5, 0.5))):
        runs = []
        for b in ("numpy", backend):
            net = pfg.TwoLayerNet(784, 20, 10, seed=0, backend=b, weight_decay=0.01)
            pfg.fit(net, x, t, optimizer=make(), epochs=2, batch_size=10, sampling="random", seed=1, progress=False)
            runs.append(net.theta)
        assert normwise(runs[1], runs[0]) < 1e-9


def test_clipping_clips_by_global_norm():
    g = {"a": np.full(3, 3.0), "b": np.full(1, 4.0)}  # norm sqrt(27 + 16)
    p = {"a": np.zeros(3), "b": np.zeros(1)}
    pfg.SGD(1.0, clip=1.0).update(p, g)
    n = np.sqrt(43.0)
    np.testing.assert_allclose(p["a"], -3.0 / (n + 1e-6), rtol=1e-14)
    np.testing.assert_allclose(p["b"], -4.0 / (n + 1e-6), rtol=1e-14)
    assert (g["a"] == 3).all()  # the caller's gradient is not modified
    p2 = {"a": np.zeros(3), "b": np.zeros(1)}
    pfg.SGD(1.0, clip=100.0).update(p2, g)  # below the threshold: untouched
    np.testing.assert_array_equal(p2["a"], -3.0)


def test_adamw_is_decoupled_from_the_gradient():
    """Zero gradient: AdamW still shrinks by (1 - lr wd); Adam with L2 in the loss would not move."""
    p = {"w": np.full(4, 2.0)}
    pfg.AdamW(0.1, weight_decay=0.5).update(p, {"w": np.zeros(4)})
    np.testing.assert_allclose(p["w"], 2.0 * (1 - 0.05), rtol=1e-15)


# ----------------------------------------------------------------------------- item 5: regression metrics
def test_regression_nets_report_mse_and_r2(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((80, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3)[:, None]
    net = pfg.Net([3, 8, 1], activation="tanh", loss="mse", seed=0, weight_init="xavier")
    assert net.is_regression
    h = pfg.fit(net, x, y, x[:20], y[:20], optimizer="adam", lr=0.02, epochs=5, batch_size=16, progress=False)
    assert h.task == "regression" and h.train_acc == [] and h.test_acc == []
    pred = net.predict(x)
    mse = float(np.mean((pred - y) ** 2))
    r2 = 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert h.train_mse[-1] == pytest.approx(mse, rel=1e-12) and h.train_r2[-1] == pytest.approx(r2, rel=1e-12)
    assert h.train_mse[-1] < h.train_mse[0] and len(h.test_r2) == 5
    assert net.regression_metrics(x, y) == pytest.approx({"mse": mse, "r2": r2}, rel=1e-12)
    assert "train_mse" in repr(h) and "acc" not in repr(h)
    with pytest.raises(ValueError, match="regression"):
        net.accuracy(x, y)
    tr = pfg.Trainer(net, optimizer="adam", lr=0.01, batch_size=16, progress=False)
    tr.fit(x, y, epochs=1)
    tr.fit(x, y, x[:20], y[:20], epochs=1)
    assert tr.history.task == "regression" and len(tr.history.train_mse) == 2 and tr.history.train_acc == []
    assert np.isnan(tr.history.test_mse[0]) and tr.history.test_mse[1] > 0  # epochs stay aligned
    pytest.importorskip("matplotlib", reason="History.plot needs matplotlib")
    h.plot(tmp_path / "reg.png")
    assert (tmp_path / "reg.png").stat().st_size > 0
    # an MSE net on one-hot targets is still a classifier
    clf = pfg.Net([3, 4, 2], loss="mse", seed=0)
    assert 0 <= clf.accuracy(x, (y[:, 0] > 0.3).astype(int)) <= 1


# ----------------------------------------------------------------------------- item 6: soft-target cross-entropy
def test_soft_target_cross_entropy_difference_is_documented():
    """The public function computes -sum t log(y) for soft targets; the reference follows the
    tutorials' argmax shortcut (one-hot assumed)."""
    y, t = np.array([[0.2, 0.3, 0.5]]), np.array([[0.5, 0.5, 0.0]])
    assert pfg.cross_entropy_error(y, t) == pytest.approx(-(0.5 * np.log(0.2 + 1e-7) + 0.5 * np.log(0.3 + 1e-7)))
    assert pfg.cross_entropy_error(y, t) == pytest.approx(1.4067, abs=1e-4)
    assert ref.cross_entropy_error(y, t) == pytest.approx(-np.log(0.2 + 1e-7))  # argmax of t: class 0
    assert ref.cross_entropy_error(y, t) == pytest.approx(1.6094, abs=1e-4)
    onehot = np.array([[0.0, 0.0, 1.0]])  # both agree on one-hot targets
    assert pfg.cross_entropy_error(y, onehot) == pytest.approx(ref.cross_entropy_error(y, onehot), rel=1e-12)
    for doc in (pfg.cross_entropy_error.__doc__, ref.cross_entropy_error.__doc__):
        assert "soft" in doc and "argmax" in doc


def test_cli_schedule_clip_style(tmp_path, mnist, capsys):
    from pyfastgrad.__main__ import main

    from _helpers import mnist_dir
    path = tmp_path / "net.npz"
    rc = main(["train", "--data", str(mnist_dir()), "--train-size", "1000", "--epochs", "1", "--hidden", "16",
               "--optimizer", "adamw", "--style", "torch", "--schedule", "warmup:2+cosine", "--clip", "1.5",
               "--no-progress", "--save", str(path)])
    assert rc == 0
    _, opt = pfg.load_net(path, with_optimizer=True)
    assert isinstance(opt, pfg.AdamW) and opt.style == "torch" and opt.clip == 1.5
    assert opt.schedule == Warmup(2, Cosine(8)) and opt.iter == 10
    with pytest.raises(SystemExit):
        main(["train", "--schedule", "linear"])
    assert "unknown schedule" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Adamax (issue 10)
def _adamax_loop(theta, grads, lr, b1, b2, eps, wd):
    """torch.optim.Adamax's equations, written out: g += wd theta; m = b1 m + (1 - b1) g;
    u = max(b2 u, |g| + eps); theta -= lr / (1 - b1^t) * m / u."""
    theta = theta.copy()
    m = np.zeros_like(theta)
    u = np.zeros_like(theta)
    dt = theta.dtype.type
    for step, g in enumerate(grads, start=1):
        if wd:
            g = g + dt(wd) * theta
        m = m + (dt(1) - dt(b1)) * (g - m)  # torch's lerp
        u = np.maximum(u * dt(b2), np.abs(g) + dt(eps))
        theta = theta - dt(lr / (1 - b1 ** step)) * (m / u)
    return theta


def test_adamax_registry_defaults_are_torchs():
    opt = pfg.Adamax()
    assert (opt.lr, opt.beta1, opt.beta2, opt.eps, opt.weight_decay) == (2e-3, 0.9, 0.999, 1e-8, 0.0)
    assert opt.kind == "adamax" and opt.n_states == 2
    assert isinstance(pfg.make_optimizer("adamax"), pfg.Adamax)
    with pytest.raises(ValueError):
        pfg.Adamax(beta1=1.0)
    with pytest.raises(TypeError):
        pfg.Adamax(momentum=0.9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adamax_equals_its_equations_and_torch(backend, dtype, wd):
    rng = np.random.default_rng(7)
    theta0 = rng.standard_normal(40).astype(dtype)
    grads = [rng.standard_normal(40).astype(dtype) * (0.1 + s) for s in range(20)]
    lr, b1, b2, eps = 0.01, 0.85, 0.995, 1e-8
    expect = _adamax_loop(theta0, grads, lr, b1, b2, eps, wd)
    params = {"W": theta0.copy()}
    opt = pfg.Adamax(lr, b1, b2, eps, weight_decay=wd, backend=backend)
    for g in grads:
        opt.update(params, {"W": g})
    tol = 1e-13 if dtype == np.float64 else 1e-6
    assert normwise(params["W"], expect) <= tol
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.tensor(theta0))
    topt = torch.optim.Adamax([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for g in grads:
        p.grad = torch.tensor(g)
        topt.step()
    assert normwise(params["W"], p.detach().numpy()) <= (1e-13 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_adamax_fused_training_agrees_with_numpy(backend):
    x, t = _data()
    nets = {}
    for b in ("numpy", backend):
        net = pfg.TwoLayerNet(12, 7, 3, seed=0, backend=b)
        pfg.fit(net, x, t, optimizer=pfg.Adamax(0.01, weight_decay=0.01), epochs=3, batch_size=16, seed=3,
                progress=False)
        nets[b] = net
    assert normwise(nets[backend].theta, nets["numpy"].theta) <= 1e-10


@pytest.mark.skipif("cpp" not in BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam", "adamw"])
def test_train_step_in_one_call_equals_gradient_then_step(kind):
    """cpp's net.train_step runs gradient and update in one kernel call: bit for bit the two-call path
    (loss_grad, then optimizer.step), with clipping and a schedule; a non-finite loss updates nothing."""
    from pyfastgrad.schedules import make_schedule
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 12)).astype(np.float32)
    t = rng.integers(0, 4, 16)
    nets, opts = [], []
    for _ in range(2):
        nets.append(pfg.Net([12, 9, 4], seed=1, dtype=np.float32, backend="cpp"))
        o = pfg.make_optimizer(kind, lr=0.05, clip=0.5)
        o.schedule = make_schedule("cosine", 10)
        opts.append(o)
    for _ in range(6):
        nets[0].train_step(x, t, opts[0])
        g = np.empty_like(nets[1].theta)
        nets[1]._mlp().loss_grad(nets[1].theta, x, np.eye(4, dtype=np.float32)[t], 0.0, g)
        opts[1].step(nets[1], g)
    assert np.array_equal(nets[0].theta, nets[1].theta) and opts[0].iter == opts[1].iter == 6
    assert np.array_equal(opts[0].state_dict()["state"], opts[1].state_dict()["state"])
    nets[0].params["W1"][...] = 3e38  # finite weights whose products overflow
    before = nets[0].theta.copy()
    with pytest.raises(FloatingPointError):
        nets[0].train_step(x, t, opts[0])
    assert np.array_equal(nets[0].theta, before) and opts[0].iter == 6


class _Sub(np.ndarray):
    pass


@pytest.mark.skipif("cpp" not in BACKENDS, reason="C++ extension not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_step_takes_inputs_as_given_or_checks_them(dtype):
    """cpp's net.train_step hands x and t to the kernel as the user passed them when they are already in
    its form (labels int64/int32, one-hot of the net's dtype, float32 x into a float64 net) and converts
    everything else first: every form gives the same parameters bit for bit; bad inputs raise the named
    errors and change nothing."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20, 12)).astype(np.float32).astype(dtype)  # float32 values: "x other dtype"
    labels = rng.integers(0, 4, 20)
    onehot = np.eye(4, dtype=dtype)[labels]
    forms = {  # all are the same batch
        "labels int64": (x, labels), "labels int32": (x, labels.astype(np.int32)),
        "one-hot": (x, onehot), "labels list": (x, labels.tolist()), "labels uint8": (x, labels.astype(np.uint8)),
        "x Fortran": (np.asfortranarray(x), labels), "x strided": (np.repeat(x, 2, axis=0)[::2], labels),
        "x list": (x.tolist(), labels), "x (20, 3, 4)": (x.reshape(20, 3, 4), labels),
        "one-hot other dtype": (x, onehot.astype(np.float32 if dtype == np.float64 else np.float64)),
        "x subclass": (x.view(_Sub), labels),
        "x other dtype": (x.astype(np.float64 if dtype == np.float32 else np.float32), labels),
    }
    mlp = pfg.Net([12, 9, 4], seed=2, dtype=dtype, backend="cpp")._mlp()
    taken = {name for name, (xx, tt) in forms.items()
             if mlp.train_step_any(np.zeros(mlp.n_params, dtype), xx, tt, 0.0, "sgd", np.array([0.1, 0, 0]),
                                   np.zeros(0, dtype), np.zeros(0, dtype), 1, np.empty(mlp.n_params, dtype))
             is not None}
    assert taken == {"labels int64", "labels int32", "one-hot"} | ({"x other dtype"} if dtype == np.float64
                                                                    else set())
    thetas = {}
    for name, (xx, tt) in forms.items():
        net = pfg.Net([12, 9, 4], seed=2, dtype=dtype, backend="cpp")
        opt = pfg.Momentum(lr=0.05)
        xcopy = np.array(xx, copy=True)
        for _ in range(3):
            loss = net.train_step(xx, tt, opt)
        assert np.isfinite(loss) and opt.iter == 3
        assert np.array_equal(np.asarray(xx), xcopy)  # the caller's arrays are not changed
        thetas[name] = net.theta
    for name, th in thetas.items():
        assert np.array_equal(th, thetas["labels int64"]), name

    net = pfg.Net([12, 9, 4], seed=2, dtype=dtype, backend="cpp")
    opt = pfg.Adam(lr=0.01)
    before = net.theta.copy()
    bad_x = x.copy()
    bad_x[3, 4] = np.nan
    for xx, tt, err, match in [
            (bad_x, labels, ValueError, "x contains NaN"), (x, labels + 4, ValueError, "labels outside"),
            (x, -labels - 1, ValueError, "labels outside"), (x[:, :11], labels, ValueError, "features"),
            (x, labels[:19], ValueError, "labels for 20 samples"), (x[:0], labels[:0], ValueError, "empty"),
            (x, onehot[:, :3], ValueError, "shape"), (x, np.where(onehot > 0, np.inf, 0).astype(dtype), ValueError,
                                                       "t contains")]:
        with pytest.raises(err, match=match):
            net.train_step(xx, tt, opt)
    assert np.array_equal(net.theta, before) and opt.iter == 0


@pytest.mark.skipif("cpp" not in BACKENDS, reason="C++ extension not built")
def test_train_step_sees_hyper_parameter_changes_and_copies_own_their_state():
    """The kernels' hyper vector and state views are kept between steps: a hyper-parameter set between
    steps still takes effect (as in the two-call path), and a deep copy or pickle of the optimizer steps
    its own state, not the original's."""
    import copy
    import pickle
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 12))
    t = rng.integers(0, 4, 16)
    nets = [pfg.Net([12, 9, 4], seed=1, backend="cpp") for _ in range(2)]
    opts = [pfg.Adam(lr=0.01), pfg.Adam(lr=0.01)]
    for s in range(6):
        if s == 3:
            for o in opts:
                o.lr, o.beta1 = 0.002, 0.5
        nets[0].train_step(x, t, opts[0])
        g = np.empty_like(nets[1].theta)
        nets[1]._mlp().loss_grad(nets[1].theta, x, np.eye(4)[t], 0.0, g)
        opts[1].step(nets[1], g)
    assert np.array_equal(nets[0].theta, nets[1].theta)
    assert opts[0].hyper[:3].tolist() == [0.002, 0.5, 0.999]
    opts[0].hyper[0] = 1.0  # a copy: the optimizer's vector is not the caller's to change
    assert opts[0].lr == 0.002 and opts[0].hyper[0] == 0.002

    for clone in (copy.deepcopy(opts[0]), pickle.loads(pickle.dumps(opts[0]))):
        state0 = opts[0].state_dict()["state"].copy()
        net = nets[0].copy()
        net.train_step(x, t, clone)
        assert np.array_equal(opts[0].state_dict()["state"], state0)  # the original's state is untouched
        assert not np.array_equal(clone.state_dict()["state"], state0) and clone.iter == 7

    class Scaled(pfg.Momentum):  # a user's subclass whose _slots reads a plain attribute: never cached
        boost = 1.0

        def _slots(self):
            return min(0.99, self.momentum * self.boost), 0.0, 1e-7, 0.0
    o = Scaled(lr=0.1, momentum=0.5)
    assert o.hyper[1] == 0.5
    o.boost = 1.5
    assert o.hyper[1] == 0.75


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_reads_gradient_buffer_only_while_the_dict_is_intact(backend):
    """update() reads a gradient() dict's flat buffer directly, but an entry replaced by another array (or
    a dict rebuilt from it) is read from its own array: the same parameters as the reference's loop."""
    rng = np.random.default_rng(2)
    x, t = rng.random((10, 6)), np.arange(10) % 3
    nets = [pfg.TwoLayerNet(6, 5, 3, seed=1, backend=backend) for _ in range(4)]
    opt = [pfg.SGD(lr=0.5) for _ in nets]
    g = nets[0].gradient(x, t)
    assert isinstance(g, dict) and g.intact(list(g.values()))
    expect = {k: nets[0].params[k] - 0.5 * (0 * v if k == "W1" else v) for k, v in g.items()}
    g["W1"] = g["W1"] * 0  # replaced: not the buffer's view any more
    opt[0].update(nets[0].params, g)
    opt[1].update(nets[1].params, {k: v.copy() for k, v in nets[1].gradient(x, t).items()})
    opt[2].update(nets[2].params, nets[2].gradient(x, t))
    for k in expect:
        np.testing.assert_allclose(nets[0].params[k], expect[k], rtol=1e-15)
        assert np.array_equal(nets[1].params[k], nets[2].params[k])


# ------------------------------------------------------------------ update()'s checks, paid once per net
@pytest.mark.parametrize("name", ["SGD", "Momentum", "AdaGrad", "Adam"])
def test_update_from_a_nets_gradient_takes_the_checked_path_once(name):
    """After one fully checked update with a net's params and an untouched gradient() dict, update() skips
    the per-key checks for that pair: the same bits as the full path every time, and a tampered dict or a
    NaN still get the full path's answer."""
    rng = np.random.default_rng(0)
    x, t = rng.random((12, 6)), rng.integers(0, 3, 12)
    a = pfg.MultiLayerNet(6, [5, 4], 3, seed=1)
    b = pfg.MultiLayerNet(6, [5, 4], 3, seed=1)
    oa, ob = getattr(pfg, name)(lr=0.05), getattr(pfg, name)(lr=0.05)
    for _ in range(4):
        oa.update(a.params, a.gradient(x, t))
        ob._fast_of = {}  # the full path every time
        ob.update(b.params, b.gradient(x, t))
        np.testing.assert_array_equal(a.theta, b.theta)
    assert oa._fast_of[id(a.params)][0] is a.params
    g = a.gradient(x, t)
    g["W1"] = g["W1"] * 0.0  # an entry replaced: not the buffer any more, the full path reads the dict
    before = a.params["W1"].copy()
    oa.update(a.params, g)
    if name == "SGD":
        np.testing.assert_array_equal(a.params["W1"], before)
    g = a.gradient(x, t)
    g["b2"][0] = np.nan  # in place: the buffer itself
    theta = a.theta.copy()
    with pytest.raises(FloatingPointError, match="b2"):
        oa.update(a.params, g)
    np.testing.assert_array_equal(a.theta, theta)


def test_one_optimizer_over_several_nets_keeps_each_nets_fast_path():
    """The weight-init comparison's loop: one SGD updates three nets in turn. Each net's params keep their own
    checked entry (not only the last net's), with the same bits as the full path."""
    rng = np.random.default_rng(1)
    x, t = rng.random((12, 6)), rng.integers(0, 3, 12)
    nets = [pfg.MultiLayerNet(6, [5, 4], 3, seed=s) for s in range(3)]
    twins = [pfg.MultiLayerNet(6, [5, 4], 3, seed=s) for s in range(3)]
    shared, full = pfg.SGD(lr=0.1), pfg.SGD(lr=0.1)
    for _ in range(3):
        for a, b in zip(nets, twins):
            shared.update(a.params, a.gradient(x, t))
            full._fast_of = {}
            full.update(b.params, b.gradient(x, t))
    for a, b in zip(nets, twins):
        np.testing.assert_array_equal(a.theta, b.theta)
        assert shared._fast_of[id(a.params)][0] is a.params
    assert len(shared._fast_of) == 3
