"""Each KD loss against an independent computation of its paper's formula (numpy, per-sample loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgekd.deploy.errors import UsageError
from edgekd.distill.features import FeatureTaps, feature_shapes
from edgekd.distill.losses import ATLoss, DKDLoss, FitNetLoss, KDLoss, MultiTeacherKDLoss, create_loss
from edgekd.recipe import DistillConfig


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


def ce(z: np.ndarray, y: int) -> float:
    return float(-np.log(softmax(z)[y]))


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    t = torch.randn(5, 7, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 6, 2, 3])
    return s, t, y


def test_kd_hand_computed_value():
    # p_t = [0.75, 0.25], p_s = [0.5, 0.5] at T = 1: KL = 0.75 ln 1.5 + 0.25 ln 0.5; CE = ln 2.
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    out = KDLoss(temperature=1.0, alpha=0.5)(s, t, torch.tensor([0]))
    want_kd = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert out["parts"]["kd"].item() == pytest.approx(want_kd, rel=1e-6)
    assert out["loss"].item() == pytest.approx(0.5 * want_kd + 0.5 * math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("temperature,alpha", [(4.0, 0.9), (1.0, 0.3), (2.5, 1.0)])
def test_kd_matches_numpy(batch, temperature, alpha):
    s, t, y = batch
    sn, tn = s.numpy(), t.numpy()
    kd = np.mean([kl(softmax(tn[i] / temperature), softmax(sn[i] / temperature)) for i in range(5)])
    kd *= temperature ** 2
    c = np.mean([ce(sn[i], y[i]) for i in range(5)])
    out = KDLoss(temperature, alpha)(s, t, y)
    assert out["parts"]["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(alpha * kd + (1 - alpha) * c, rel=1e-5)


def test_kd_label_smoothing_matches_formula(batch):
    s, t, y = batch
    eps, n = 0.1, 7
    want = np.mean([-(1 - eps) * np.log(softmax(s[i].numpy())[y[i]])
                    - eps / n * np.log(softmax(s[i].numpy())).sum() for i in range(5)])
    out = KDLoss(4.0, 0.0, label_smoothing=eps)(s, t, y)
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)


def numpy_dkd(s, t, y, temperature, alpha, beta):
    tckd, nckd, c = [], [], []
    for i in range(len(y)):
        ps, pt = softmax(s[i] / temperature), softmax(t[i] / temperature)
        g = int(y[i])
        bs, bt = np.array([ps[g], 1 - ps[g]]), np.array([pt[g], 1 - pt[g]])
        tckd.append(kl(bt, bs))
        rest = [j for j in range(len(ps)) if j != g]
        nckd.append(kl(softmax(t[i][rest] / temperature), softmax(s[i][rest] / temperature)))
        c.append(ce(s[i], g))
    tckd_v, nckd_v = np.mean(tckd) * temperature ** 2, np.mean(nckd) * temperature ** 2
    return np.mean(c) + alpha * tckd_v + beta * nckd_v, tckd_v, nckd_v


@pytest.mark.parametrize("temperature,alpha,beta", [(4.0, 1.0, 8.0), (1.0, 0.5, 2.0)])
def test_dkd_matches_numpy(batch, temperature, alpha, beta):
    s, t, y = batch
    want, tckd, nckd = numpy_dkd(s.numpy(), t.numpy(), y.numpy(), temperature, alpha, beta)
    out = DKDLoss(temperature, alpha, beta)(s, t, y)
    assert out["parts"]["tckd"].item() == pytest.approx(tckd, rel=1e-5)
    assert out["parts"]["nckd"].item() == pytest.approx(nckd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)


def test_dkd_is_finite_for_confident_logits():
    s = torch.tensor([[80.0, -80.0, 0.0]], requires_grad=True)
    t = torch.tensor([[90.0, -90.0, 1.0]])
    out = DKDLoss(1.0, 1.0, 8.0)(s, t, torch.tensor([0]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(s.grad).all()


def test_multi_teacher_averages_softened_probabilities(batch):
    s, t1, y = batch
    t2 = torch.flip(t1, dims=[1]) * 0.5
    temperature, alpha, w = 3.0, 0.7, [0.25, 0.75]
    sn, a, b = s.numpy(), t1.numpy(), t2.numpy()
    kd = np.mean([kl(w[0] * softmax(a[i] / temperature) + w[1] * softmax(b[i] / temperature),
                     softmax(sn[i] / temperature)) for i in range(5)]) * temperature ** 2
    c = np.mean([ce(sn[i], y[i]) for i in range(5)])
    loss_fn = MultiTeacherKDLoss(temperature, alpha, weights=[1.0, 3.0])  # normalised to 0.25 / 0.75
    stacked = loss_fn(s, torch.stack([t1, t2], dim=1), y)
    listed = loss_fn(s, [t1, t2], y)
    assert stacked["parts"]["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert stacked["loss"].item() == pytest.approx(alpha * kd + (1 - alpha) * c, rel=1e-5)
    assert listed["loss"].item() == pytest.approx(stacked["loss"].item(), rel=1e-7)


def test_multi_teacher_with_one_teacher_is_vanilla_kd(batch):
    s, t, y = batch
    assert MultiTeacherKDLoss(4.0, 0.9)(s, t, y)["loss"].item() == pytest.approx(
        KDLoss(4.0, 0.9)(s, t, y)["loss"].item(), rel=1e-7)


def numpy_conv1x1(x, w, b):
    return np.einsum("oc,bchw->bohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def test_fitnet_matches_numpy():
    g = torch.Generator().manual_seed(1)
    fs = torch.randn(2, 3, 8, 8, generator=g)          # student feature: 3 channels, 8x8
    ft = torch.randn(2, 5, 4, 4, generator=g)          # teacher feature: 5 channels, 4x4
    s, t, y = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g), torch.tensor([1, 2])
    loss_fn = FitNetLoss(["a"], ["b"], [fs.shape], [ft.shape], temperature=2.0, alpha=0.5, feature_weight=3.0)
    conv = loss_fn.projections[0]
    proj = numpy_conv1x1(fs.numpy(), conv.weight.detach().numpy(), conv.bias.detach().numpy())
    pooled = proj.reshape(2, 5, 4, 2, 4, 2).mean(axis=(3, 5))  # 8x8 -> 4x4 average pooling
    hint = np.mean((pooled - ft.numpy()) ** 2)
    kd_part = KDLoss(2.0, 0.5)(s, t, y)["loss"].item()
    out = loss_fn(s, t, y, [fs], [ft])
    assert out["parts"]["feat"].item() == pytest.approx(hint, rel=1e-5)
    assert out["loss"].item() == pytest.approx(kd_part + 3.0 * hint, rel=1e-5)


def test_fitnet_linear_projection_for_vectors():
    loss_fn = FitNetLoss(["a"], ["b"], [torch.Size([2, 6])], [torch.Size([2, 4])])
    assert isinstance(loss_fn.projections[0], torch.nn.Linear)
    with pytest.raises(UsageError, match="cannot project"):
        FitNetLoss(["a"], ["b"], [torch.Size([2, 6])], [torch.Size([2, 4, 3, 3])])


def numpy_attention(f, size):
    a = (f ** 2).mean(axis=1)
    h, w = a.shape[1:]
    a = a.reshape(len(f), size[0], h // size[0], size[1], w // size[1]).mean(axis=(2, 4))
    a = a.reshape(len(f), -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_attention_transfer_matches_numpy():
    g = torch.Generator().manual_seed(2)
    f1s, f1t = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 16, 4, 4, generator=g)
    f2s, f2t = torch.randn(3, 8, 4, 4, generator=g), torch.randn(3, 32, 4, 4, generator=g)
    s, t, y = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g), torch.tensor([0, 1, 4])
    want = sum(np.mean((numpy_attention(a.numpy(), (4, 4)) - numpy_attention(b.numpy(), (4, 4))) ** 2)
               for a, b in ((f1s, f1t), (f2s, f2t)))
    loss_fn = ATLoss(["l1", "l2"], ["m1", "m2"], temperature=4.0, alpha=0.9, feature_weight=500.0)
    out = loss_fn(s, t, y, [f1s, f2s], [f1t, f2t])
    assert out["parts"]["feat"].item() == pytest.approx(want, rel=1e-5)
    assert out["loss"].item() == pytest.approx(KDLoss(4.0, 0.9)(s, t, y)["loss"].item() + 500.0 * want,
                                               rel=1e-5)


def _tiny(channels):
    from edgekd.models import create_model

    return create_model("edgekd:cnn", num_classes=4, in_channels=1, input_size=8, channels=channels, hidden=8)


def test_create_loss_builds_every_method_from_a_recipe_section():
    student, teacher = _tiny([4, 8]), _tiny([8, 16])
    layers = {"student_layers": ["features.0", "features.1"], "teacher_layers": ["features.0", "features.1"]}
    extra = {"student": student, "teacher": teacher, "input_shape": (1, 8, 8), "weights": [1.0, 2.0]}
    assert isinstance(create_loss("kd", DistillConfig(), **extra), KDLoss)
    dkd = create_loss("dkd", DistillConfig(alpha=1.0, beta=8.0), **extra)
    assert (dkd.alpha, dkd.beta) == (1.0, 8.0)
    assert create_loss("multi", DistillConfig(), **extra).weights == [1.0, 2.0]
    fit = create_loss("fitnet", DistillConfig(method="fitnet", **layers), **extra)
    assert [p.weight.shape[:2] for p in fit.projections] == [(8, 4), (16, 8)]
    assert isinstance(create_loss("at", DistillConfig(method="at", **layers), **extra), ATLoss)
    with pytest.raises(UsageError, match="unknown distill.method"):
        create_loss("nope", DistillConfig())
    with pytest.raises(UsageError, match="needs student"):
        create_loss("fitnet", DistillConfig(method="fitnet", **layers))
    with pytest.raises(UsageError, match="in pairs"):
        create_loss("at", DistillConfig(method="at"))


def test_feature_taps_use_hooks_and_leave_nothing_behind():
    model = _tiny([4, 8])
    with FeatureTaps(model, ["features.1"]) as taps:
        model(torch.zeros(2, 1, 8, 8))
    assert taps.outputs()[0].shape == (2, 8, 4, 4)
    assert all(not m._forward_hooks for m in model.modules())
    assert feature_shapes(model, ["features.0"], (1, 8, 8)) == [torch.Size([2, 4, 8, 8])]
    with pytest.raises(UsageError, match="did you mean"):
        FeatureTaps(model, ["feature.1"], "student")


def test_feature_methods_match_the_losses_that_read_features():
    """Recipe validation refuses a logit cache for methods that read teacher features without importing torch;
    its list must be exactly the losses that say they use features."""
    from edgekd.distill import FEATURE_METHODS, LOSSES

    assert set(FEATURE_METHODS) == {m for m in LOSSES.names() if getattr(LOSSES.get(m), "uses_features", False)}
