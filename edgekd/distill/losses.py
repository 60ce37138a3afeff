"""Knowledge-distillation losses. Each is a small ``nn.Module`` usable in any training loop.

Every loss returns ``{"loss": scalar, "parts": {term: detached scalar}}`` so each term can be logged
(the trainer adds ``"logits"``). Losses are registered by name in :data:`edgekd.distill.LOSSES` (``kd``, ``dkd``,
``fitnet``, ``at``, ``multi``) and built from a recipe's ``distill`` section by :func:`create_loss`.

Logit losses take ``(student_logits, teacher_logits, labels)``; the multi-teacher loss takes the teachers'
logits stacked as ``(B, K, C)``. Feature losses (``uses_features = True``) also take the student's and the
teacher's layer outputs; they need the teacher online (features cannot come from a logit cache).

Example:
    >>> loss_fn = KDLoss(temperature=4.0, alpha=0.9)                     # doctest: +SKIP
    >>> out = loss_fn(student_logits, teacher_logits, labels)
    >>> out["loss"].backward(); out["parts"]   # {"ce": ..., "kd": ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekd.deploy.errors import UsageError
from edgekd.distill import LOSSES


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T^τ ‖ p_S^τ) · τ², averaged over the batch (Hinton et al., 2015)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def _ce(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class KDLoss(nn.Module):
    """Vanilla KD (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

    ``loss = alpha · τ² · KL(softmax(z_t/τ) ‖ softmax(z_s/τ)) + (1 − alpha) · CE(z_s, y)``
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0):
        super().__init__()
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    @classmethod
    def from_config(cls, cfg, label_smoothing: float = 0.0, **_) -> KDLoss:
        return cls(cfg.temperature, cfg.alpha, label_smoothing)

    def forward(self, student_logits, teacher_logits, labels) -> dict:
        ce = _ce(student_logits, labels, self.label_smoothing)
        kd = kd_term(student_logits, teacher_logits, self.temperature)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        return {"loss": loss, "parts": {"ce": ce.detach(), "kd": kd.detach()}}


def _split_target(log_p: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary log-probabilities ``[log p_gt, log(1 − p_gt)]`` (B, 2) and the non-target logits' mask."""
    gt = F.one_hot(labels, log_p.shape[1]).bool()
    log_gt = log_p.gather(1, labels[:, None])
    log_rest = torch.logsumexp(log_p.masked_fill(gt, float("-inf")), dim=1, keepdim=True)
    return torch.cat([log_gt, log_rest], dim=1), ~gt


class DKDLoss(nn.Module):
    """Decoupled KD (Zhao, Cui, Song, Qiu, Liang, CVPR 2022, "Decoupled Knowledge Distillation").

    With ``b = [p_gt, 1 − p_gt]`` from ``p = softmax(z/τ)`` and ``p̂ = softmax`` of the non-target logits
    ``/τ`` (target class removed):

    ``TCKD = τ² · KL(b_t ‖ b_s)``, ``NCKD = τ² · KL(p̂_t ‖ p̂_s)`` (batch means),
    ``loss = ce_weight · CE(z_s, y) + alpha · TCKD + beta · NCKD``.

    In a recipe ``distill.alpha`` is the TCKD weight and ``distill.beta`` the NCKD weight (the paper uses
    alpha 1, beta 8 on CIFAR-100, with τ 4); CE keeps weight 1 as in the paper.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0,
                 ce_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__()
        self.temperature, self.alpha, self.beta = temperature, alpha, beta
        self.ce_weight, self.label_smoothing = ce_weight, label_smoothing

    @classmethod
    def from_config(cls, cfg, label_smoothing: float = 0.0, **_) -> DKDLoss:
        return cls(cfg.temperature, cfg.alpha, cfg.beta, label_smoothing=label_smoothing)

    def forward(self, student_logits, teacher_logits, labels) -> dict:
        t = self.temperature
        zs, zt = student_logits.float() / t, teacher_logits.float() / t
        b_s, other = _split_target(F.log_softmax(zs, dim=1), labels)
        b_t, _ = _split_target(F.log_softmax(zt, dim=1), labels)
        tckd = F.kl_div(b_s, b_t, reduction="batchmean", log_target=True) * t * t
        n, c = zs.shape
        nt_s = F.log_softmax(zs[other].view(n, c - 1), dim=1)
        nt_t = F.log_softmax(zt[other].view(n, c - 1), dim=1)
        nckd = F.kl_div(nt_s, nt_t, reduction="batchmean", log_target=True) * t * t
        ce = _ce(student_logits, labels, self.label_smoothing)
        loss = self.ce_weight * ce + self.alpha * tckd + self.beta * nckd
        return {"loss": loss, "parts": {"ce": ce.detach(), "tckd": tckd.detach(), "nckd": nckd.detach()}}


def mixture_log_probs(teacher_logits: torch.Tensor, temperature: float,
                      weights: Sequence[float] | None = None) -> torch.Tensor:
    """``log Σ_k w_k softmax(z_k/τ)`` for logits stacked as (B, K, C); uniform weights by default."""
    k = teacher_logits.shape[1]
    w = torch.as_tensor(weights if weights is not None else [1.0 / k] * k, dtype=torch.float32,
                        device=teacher_logits.device)
    w = w / w.sum()
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=2)
    return torch.logsumexp(log_p + w.log()[None, :, None], dim=1)


class MultiTeacherKDLoss(nn.Module):
    """Multi-teacher KD: the soft target is the (weighted) average of the teachers' softened probabilities
    (Hinton et al. 2015 §2 on ensembles; You et al., KDD 2017, "Learning from Multiple Teacher Networks").

    ``p_T = Σ_k w_k softmax(z_k/τ)`` (weights normalised to sum 1),
    ``loss = alpha · τ² · KL(p_T ‖ softmax(z_s/τ)) + (1 − alpha) · CE(z_s, y)``.

    ``teacher_logits`` is (B, K, C) (what edgekd's teacher sources return for K > 1 teachers) or a
    sequence of K (B, C) tensors. Weights come from ``teacher.weights_mix`` in a recipe.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, weights: Sequence[float] | None = None,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing
        self.weights = list(weights) if weights is not None else None

    @classmethod
    def from_config(cls, cfg, weights: Sequence[float] | None = None, label_smoothing: float = 0.0,
                    **_) -> MultiTeacherKDLoss:
        return cls(cfg.temperature, cfg.alpha, weights, label_smoothing)

    def forward(self, student_logits, teacher_logits, labels) -> dict:
        if not isinstance(teacher_logits, torch.Tensor):
            teacher_logits = torch.stack(list(teacher_logits), dim=1)
        if teacher_logits.dim() == 2:
            teacher_logits = teacher_logits[:, None]
        t = self.temperature
        log_p_t = mixture_log_probs(teacher_logits, t, self.weights)
        log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
        kd = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)
        ce = _ce(student_logits, labels, self.label_smoothing)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        return {"loss": loss, "parts": {"ce": ce.detach(), "kd": kd.detach()}}


class FeatureKDLoss(KDLoss):
    """Vanilla KD plus ``feature_weight`` × a feature term summed over paired layers (base class)."""

    uses_features = True

    def __init__(self, student_layers: Sequence[str], teacher_layers: Sequence[str], temperature: float = 4.0,
                 alpha: float = 0.9, feature_weight: float = 1.0, label_smoothing: float = 0.0):
        super().__init__(temperature, alpha, label_smoothing)
        if not student_layers or len(student_layers) != len(teacher_layers):
            raise UsageError(f"{type(self).__name__} needs student and teacher layers in pairs, got "
                             f"{list(student_layers)} and {list(teacher_layers)}",
                             hint="set distill.student_layers and distill.teacher_layers (equal length)")
        self.student_layers, self.teacher_layers = list(student_layers), list(teacher_layers)
        self.feature_weight = feature_weight

    def feature_term(self, i: int, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, student_logits, teacher_logits, labels, student_feats, teacher_feats) -> dict:
        out = super().forward(student_logits, teacher_logits, labels)
        feat = sum(self.feature_term(i, s.float(), t.float())
                   for i, (s, t) in enumerate(zip(student_feats, teacher_feats, strict=True)))
        out["loss"] = out["loss"] + self.feature_weight * feat
        out["parts"]["feat"] = feat.detach()
        return out


def _resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def make_projection(student_shape: Sequence[int], teacher_shape: Sequence[int], name: str) -> nn.Module:
    """A 1×1 conv (4-D features) or a linear layer (2-D/3-D) from the student to the teacher width."""
    if len(student_shape) == 4 and len(teacher_shape) == 4:
        return nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1)
    if len(student_shape) == len(teacher_shape) in (2, 3) and student_shape[1:-1] == teacher_shape[1:-1]:
        return nn.Linear(student_shape[-1], teacher_shape[-1])
    raise UsageError(f"FitNets pair {name}: cannot project student features {tuple(student_shape[1:])} onto "
                     f"teacher features {tuple(teacher_shape[1:])}",
                     hint="pair layers of the same kind: conv maps (C, H, W) or vectors (D)")


class FitNetLoss(FeatureKDLoss):
    """FitNets hints (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets") on top of vanilla KD.

    For each layer pair l a learned regressor ``r_l`` (1×1 conv for feature maps, linear for vectors; the
    map is then pooled/interpolated to the teacher's H×W) maps the student feature onto the teacher's:

    ``loss = KD(alpha, τ) + feature_weight · Σ_l mean((r_l(F_s^l) − F_t^l)²)``

    The regressors' parameters are trained with the student (``parameters()`` of this module). Build it
    with :meth:`from_config` (it probes both models for the feature shapes), or pass the shapes.
    """

    def __init__(self, student_layers, teacher_layers, student_shapes, teacher_shapes,
                 temperature: float = 4.0, alpha: float = 0.9, feature_weight: float = 1.0,
                 label_smoothing: float = 0.0):
        super().__init__(student_layers, teacher_layers, temperature, alpha, feature_weight, label_smoothing)
        self.projections = nn.ModuleList(
            make_projection(s, t, f"{a} -> {b}") for s, t, a, b in
            zip(student_shapes, teacher_shapes, self.student_layers, self.teacher_layers, strict=True))

    @classmethod
    def from_config(cls, cfg, student: nn.Module = None, teacher: nn.Module = None, input_shape=None,
                    label_smoothing: float = 0.0, example=None, **_) -> FitNetLoss:
        """Probe ``student``/``teacher`` with a zero batch of ``input_shape`` (C, H, W) — or with ``example``,
        real model arguments (token ids and mask) — for feature shapes."""
        from edgekd.distill.features import feature_shapes

        if student is None or teacher is None or (input_shape is None and example is None):
            raise UsageError(f"the {cls.name} loss needs student=, teacher= and input_shape= (or example=) to "
                             "size its projections")
        s_layers, t_layers = cls.layers(cfg)
        s = feature_shapes(student, s_layers, input_shape, "student", example)
        t = feature_shapes(teacher, t_layers, input_shape, "teacher", example)
        device = next(student.parameters()).device
        return cls(s_layers, t_layers, s, t, cfg.temperature, cfg.alpha, cfg.feature_weight,
                   label_smoothing).to(device)

    name = "fitnet"

    @staticmethod
    def layers(cfg) -> tuple[list[str], list[str]]:
        return list(cfg.student_layers), list(cfg.teacher_layers)

    def feature_term(self, i, student_feat, teacher_feat):
        proj = self.projections[i](student_feat)
        if proj.dim() == 4:
            proj = _resize_to(proj, teacher_feat.shape[-2:])
        return F.mse_loss(proj, teacher_feat)


class HiddenKDLoss(FitNetLoss):
    """Hidden-state distillation for text (FitNets' hint on the pooled hidden state, as in Sun et al., EMNLP
    2019, "Patient Knowledge Distillation for BERT Model Compression", with MSE instead of their normalised
    distance) on top of vanilla KD.

    ``h = Σ_t m_t H_t / Σ_t m_t`` is the masked mean of a model's last hidden states over its real tokens
    (``m`` the attention mask) — what the zoo's text models and ``hf:`` models pass through their ``pooled``
    submodule. A learned linear map ``W`` takes the student's width to the teacher's:

    ``loss = KD(alpha, τ) + feature_weight · mean((W h_s + b − h_t)²)``

    Layers default to ``pooled`` on both sides (``distill.student_layers`` / ``teacher_layers`` override).
    """

    name = "hidden"

    @staticmethod
    def layers(cfg) -> tuple[list[str], list[str]]:
        return list(cfg.student_layers) or ["pooled"], list(cfg.teacher_layers) or ["pooled"]


def attention_map(feat: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """``normalize(mean_c F_c²)`` flattened to (B, H·W); optionally pooled to ``size`` first."""
    a = feat.float().pow(2).mean(1, keepdim=True)
    if size is not None:
        a = _resize_to(a, size)
    return F.normalize(a.flatten(1), dim=1)


class ATLoss(FeatureKDLoss):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

    ``Q = vec(mean_c F_c²) / ‖vec(mean_c F_c²)‖₂`` per sample (the larger map is pooled to the smaller
    H×W first), ``AT_l = mean((Q_s^l − Q_t^l)²)`` over batch and positions (the authors' code), and
    ``loss = KD(alpha, τ) + feature_weight · Σ_l AT_l``. The paper's β = 1000 with its β/2 factor is
    ``feature_weight: 500``. Channel counts may differ; no parameters are learned.
    """

    @classmethod
    def from_config(cls, cfg, label_smoothing: float = 0.0, **_) -> ATLoss:
        return cls(cfg.student_layers, cfg.teacher_layers, cfg.temperature, cfg.alpha, cfg.feature_weight,
                   label_smoothing)

    def feature_term(self, i, student_feat, teacher_feat):
        if student_feat.dim() != 4 or teacher_feat.dim() != 4:
            raise UsageError(f"attention transfer needs feature maps (B, C, H, W); layer pair "
                             f"{self.student_layers[i]} -> {self.teacher_layers[i]} gave "
                             f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")
        size = [min(a, b) for a, b in zip(student_feat.shape[-2:], teacher_feat.shape[-2:], strict=True)]
        return (attention_map(student_feat, size) - attention_map(teacher_feat, size)).pow(2).mean()


def create_loss(method: str, cfg, **extra) -> nn.Module:
    """Build the loss a recipe's ``distill`` section names.

    ``extra`` may always hold ``label_smoothing``, ``weights`` (teacher mix), ``student``, ``teacher``
    and ``input_shape``; each loss takes what it needs and ignores the rest.

    Example:
        >>> loss_fn = create_loss("dkd", recipe.distill, label_smoothing=0.0)  # doctest: +SKIP
    """
    return LOSSES.get(method).from_config(cfg, **extra)
