"""Knowledge-distillation losses. Each is a small ``nn.Module`` usable in any training loop.

Example:
    >>> loss_fn = KDLoss(temperature=4.0, alpha=0.9)                     # doctest: +SKIP
    >>> out = loss_fn(student_logits, teacher_logits, labels)
    >>> out["loss"].backward(); out["parts"]   # {"ce": ..., "kd": ...}
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSSES: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        LOSSES[name] = cls
        return cls
    return deco


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T^τ ‖ p_S^τ) · τ², averaged over the batch (Hinton et al., 2015)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


@register("kd")
class KDLoss(nn.Module):
    """Vanilla KD (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").

    ``loss = alpha · τ² · KL(softmax(z_t/τ) ‖ softmax(z_s/τ)) + (1 − alpha) · CE(z_s, y)``
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0):
        super().__init__()
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing

    def forward(self, student_logits, teacher_logits, labels) -> dict:
        ce = F.cross_entropy(student_logits.float(), labels, label_smoothing=self.label_smoothing)
        kd = kd_term(student_logits, teacher_logits, self.temperature)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        return {"loss": loss, "parts": {"ce": ce.detach(), "kd": kd.detach()}}


def create_loss(method: str, cfg, **extra) -> nn.Module:
    """Build the loss a recipe's ``distill`` section names."""
    cls = LOSSES.get(method)
    if cls is None:
        raise ValueError(f"unknown distillation method '{method}'; registered: {sorted(LOSSES)}")
    return cls.from_config(cfg, **extra) if hasattr(cls, "from_config") else cls(cfg.temperature, cfg.alpha)
