"""Stage 1: MoNA's gradient against finite differences, the first-order variant against its own
definition, every method lowering its objective, and nothing but the embedder moving."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mona_tune.models.assemble import build_target_model
from mona_tune.models.source import SourceModel
from mona_tune.train.stage1 import emb_gradient, mona_gradient, orca_gradient


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_net():
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(img_size=8, patch_size=2, window_size=2, embed_dim=8, depths=(1, 1),
                           num_heads=(2, 2), num_classes=3, drop_path_rate=0.0)


def tiny_problem(dtype=torch.float64, seed=0):
    """A tiny Swin source, a dense target model on it, a target batch and a source batch."""
    torch.manual_seed(seed)
    src = SourceModel("tiny", _tiny_net(), (0.5,) * 3, (0.5,) * 3, _tiny_net)
    model = build_target_model(src, in_channels=2, in_shape=(10, 10), output="dense",
                               out_channels=1, out_shape=(10, 10)).to(dtype)
    src.net.to(dtype)
    x = torch.randn(3, 2, 10, 10, dtype=dtype)
    y = torch.randn(3, 1, 10, 10, dtype=dtype)
    with torch.no_grad():
        xs = src.patch_embed(torch.randn(6, 3, 8, 8, dtype=dtype))
    ys = torch.tensor([0, 0, 1, 1, 2, 2])
    return model, x, y, xs, ys


def mse(pred, y):
    return F.mse_loss(pred, y)


def outer_by_hand(feats, labels, t=2.0):
    """Alignment + uniformity written out pair by pair (independent of the library code)."""
    z = feats / feats.norm(dim=1, keepdim=True)
    pos, neg = [], []
    for i, j in itertools.combinations(range(len(labels)), 2):
        d2 = ((z[i] - z[j]) ** 2).sum()
        (pos if labels[i] == labels[j] else neg).append(d2)
    align = torch.stack(pos).mean()
    uniform = torch.log(torch.stack([torch.exp(-t * d) for d in neg]).mean())
    return align + uniform


def objective(model, x, y, xs, ys, alpha, lam):
    """Φ(φe) = L_inner(φe, θ) + λ L_outer(θf − α ∇θf L_inner(φe, θ)), evaluated without graphs."""
    theta = dict(model.encoder.named_parameters())
    with torch.enable_grad():
        inner = mse(model(x), y)
        g = torch.autograd.grad(inner, list(theta.values()))
    theta_p = {n: (p - alpha * gi).detach() for (n, p), gi in zip(theta.items(), g)}
    with torch.no_grad():
        feats = functional_call(model.encoder, theta_p, (xs,)).mean(dim=(1, 2))
        return (inner + lam * outer_by_hand(feats, ys)).item()


COORDS = [("proj.weight", (0, 0, 0, 0)), ("proj.weight", (5, 1, 1, 0)), ("proj.bias", (2,)),
          ("norm.weight", (3,)), ("norm.bias", (7,))]


@pytest.mark.drift
@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_second_order_gradient_matches_finite_differences(lam):
    model, x, y, xs, ys = tiny_problem()
    alpha = 0.5  # large, so the path through the inner step carries real weight
    grads, logs = mona_gradient(model, x, y, mse, xs, ys, inner_lr=alpha, lam=lam)
    named = dict(model.embedder.named_parameters())
    by_name = dict(zip(named, grads))
    h = 1e-5
    for name, idx in COORDS:
        p = named[name]
        with torch.no_grad():
            old = p[idx].item()
            p[idx] = old + h
            up = objective(model, x, y, xs, ys, alpha, lam)
            p[idx] = old - h
            down = objective(model, x, y, xs, ys, alpha, lam)
            p[idx] = old
        fd = (up - down) / (2 * h)
        assert by_name[name][idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), name
    # the logged objective is the same function
    assert logs["loss"].item() == pytest.approx(objective(model, x, y, xs, ys, alpha, lam),
                                                rel=1e-10)


def test_outer_term_matters():
    model, x, y, xs, ys = tiny_problem()
    g0, _ = mona_gradient(model, x, y, mse, xs, ys, inner_lr=0.5, lam=0.0)
    g1, _ = mona_gradient(model, x, y, mse, xs, ys, inner_lr=0.5, lam=1.0)
    e, _ = emb_gradient(model, x, y, mse)
    diff = sum((a - b).norm() ** 2 for a, b in zip(g0, g1)).sqrt()
    assert diff > 1e-3 * sum(a.norm() ** 2 for a in g0).sqrt()
    for a, b in zip(g0, e):  # λ = 0 is the embedder warm-up gradient
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def close(a, b, tol):
    """Largest deviation relative to the largest entry of ``b``."""
    return (a - b).abs().max().item() <= tol * b.abs().max().item()


def first_order_by_definition(model, x, y, xs, ys, alpha, lam):
    """−α [∇φe L_inner(θ + εv) − ∇φe L_inner(θ − εv)] / (2ε) λ + ∇φe L_inner(θ), written plainly."""
    phi = list(model.embedder.parameters())
    theta = dict(model.encoder.named_parameters())
    inner = mse(model(x), y)
    g_phi = torch.autograd.grad(inner, phi, retain_graph=True)
    g_theta = torch.autograd.grad(inner, list(theta.values()))
    theta_p = {n: (p - alpha * g).detach().requires_grad_() for (n, p), g in
               zip(theta.items(), g_theta)}
    feats = functional_call(model.encoder, theta_p, (xs,)).mean(dim=(1, 2))
    v = torch.autograd.grad(outer_by_hand(feats, ys), list(theta_p.values()))
    eps = 0.01 / torch.sqrt(sum((vi ** 2).sum() for vi in v))
    g_pm = []
    for sign in (1, -1):
        params = {f"encoder.{n}": (p + sign * eps * vi).detach()
                  for (n, p), vi in zip(theta.items(), v)}
        loss = mse(functional_call(model, params, (x,)), y)
        g_pm.append(torch.autograd.grad(loss, phi))
    return [gp - lam * alpha * (a - b) / (2 * eps) for gp, a, b in zip(g_phi, *g_pm)]


@pytest.mark.drift
def test_first_order_matches_its_definition_and_approximates_second_order():
    model, x, y, xs, ys = tiny_problem()
    alpha, lam = 0.5, 1.0
    got, logs = mona_gradient(model, x, y, mse, xs, ys, inner_lr=alpha, lam=lam,
                              first_order=True)
    want = first_order_by_definition(model, x, y, xs, ys, alpha, lam)
    for a, b in zip(got, want):  # the same formula; rounding is amplified by 1 / (2ε)
        assert close(a, b, 1e-8)
    exact, _ = mona_gradient(model, x, y, mse, xs, ys, inner_lr=alpha, lam=lam)
    for a, b in zip(got, exact):  # a central difference: close to the exact mixed derivative
        assert close(a, b, 1e-2)  # its O(ε²) error is 0.5 % here (the source-copied embedder)
    assert set(logs) == {"loss", "inner_loss", "outer_loss", "align_loss", "uniform_loss"}


@pytest.mark.drift
@pytest.mark.parametrize("method", ["mona", "mona-first-order", "emb", "orca", "orca-mmd"])
def test_each_method_lowers_its_objective_and_moves_only_the_embedder(method):
    model, x, y, xs, ys = tiny_problem(dtype=torch.float32, seed=1)
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.AdamW(model.embedder.parameters(), lr=1e-2)

    def step():
        if method.startswith("mona"):
            return mona_gradient(model, x, y, mse, xs, ys, inner_lr=0.1, lam=0.5,
                                 first_order=method.endswith("first-order"))
        if method == "emb":
            return emb_gradient(model, x, y, mse)
        if method == "orca-mmd":
            return orca_gradient(model, x, xs, distance="mmd")
        return orca_gradient(model, x, xs, target_labels=torch.tensor([0, 1, 0]),
                             source_labels=ys)

    losses = []
    for _ in range(25):
        grads, logs = step()
        for p, g in zip(model.embedder.parameters(), grads):
            p.grad = g
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(logs["loss"].item())
    assert losses[-1] < losses[0] - 1e-3 * abs(losses[0]), losses
    after = model.state_dict()
    for k, v in before.items():
        same = torch.equal(v, after[k])
        assert same != k.startswith("embedder."), k
    for p in itertools.chain(model.encoder.parameters(), model.predictor.parameters()):
        assert p.grad is None


def test_the_otdd_needs_both_label_sets():
    model, x, _, xs, ys = tiny_problem(dtype=torch.float32, seed=1)
    for labels in ({"source_labels": ys}, {"target_labels": torch.tensor([0, 1, 0])}):
        with pytest.raises(ValueError, match="^the OTDD needs target and source labels$"):
            orca_gradient(model, x, xs, **labels)
